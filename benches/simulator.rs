//! Benchmark: the simulator's time for one BERT-base request at seq 128 as
//! a ratio to the float32 reference executor on the same request, measured
//! in the same run, with full bit-sliced ADC modelling and with
//! `--ideal-adc`. Includes preparing the crossbar images (slicing). Prints
//! medians. `cargo bench --bench simulator`.

use mgen::diag::Sources;
use std::time::Instant;

const SPEC: &str = "model bert_base { layers = 12; hidden = 768; heads = 12; ffn = 3072; vocab = 30522; max_seq = 128; weights = synthetic(seed = 7); }
task t { base = bert_base; head = classify(2); weights = finetuned(seed = 1, drift = 0); }
workload w { requests = 1; seq = 128; inputs = synthetic(seed = 3); tasks = [t]; }";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let mut sources = Sources::new();
    let f =
        mgen::driver::front_bytes(&mut sources, "bench.mgen", SPEC.as_bytes(), ".", false).unwrap();
    let (mut m, store) = mgen::driver::module_and_store(f, &sources).unwrap();
    mgen::passes::run_pipeline(
        &mut m,
        &mgen::passes::resolve("default").unwrap(),
        |_, _| {},
    )
    .unwrap();
    let batch = mgen::data::load(&m.spec, &mut sources).unwrap();
    let pkg = mgen::backend::program::package(&m, &store, &batch, false).unwrap();
    let plan = mgen::reference::Plan::new(&m, &store).unwrap();
    let (mut tr, mut ts, mut ti) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        let t = Instant::now();
        std::hint::black_box(plan.run(&batch));
        tr.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        std::hint::black_box(mgen::sim::simulate(&pkg, false, false).unwrap());
        ts.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        std::hint::black_box(mgen::sim::simulate(&pkg, true, false).unwrap());
        ti.push(t.elapsed().as_secs_f64());
    }
    let (r, s, i) = (median(tr), median(ts), median(ti));
    println!(
        "reference executor, BERT-base, 1 request, seq 128: {:.1} ms",
        r * 1e3
    );
    println!(
        "simulator, bit-sliced ADC model:                   {:.1} ms  ratio {:.2}x (goal <= 4x)",
        s * 1e3,
        s / r
    );
    println!(
        "simulator, --ideal-adc:                            {:.1} ms  ratio {:.2}x (goal <= 1.5x)",
        i * 1e3,
        i / r
    );
}
