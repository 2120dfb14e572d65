//! Benchmark: the simulator's time for one BERT-base request at seq 128 as
//! a ratio to the float32 reference executor on the same request, measured
//! in the same run, with full bit-sliced ADC modelling and with
//! `--ideal-adc`. Includes preparing the crossbar images (slicing). Prints
//! medians. Then the same request on a noisy chip (`typical_reram`, the
//! exact per-conversion model of docs/simulator.md §9), timed once.
//! `cargo bench --bench simulator`.

mod common;
use common::median;
use std::time::Instant;

fn main() {
    let (m, arts, store, batch) = common::bert_base();
    let pkg = mgen::backend::program::package(&m, &arts, &store, &batch, false).unwrap();
    let plan = mgen::reference::Plan::new(&m, &store).unwrap();
    // Preparing (slicing) the images is the simulator's "programming" step:
    // timed on its own, once per program, then excluded from the per-request ratio.
    let t = Instant::now();
    let sliced = mgen::sim::prepare_images(&pkg, false, 0);
    let prep = t.elapsed().as_secs_f64();
    let ideal = mgen::sim::prepare_images(&pkg, true, 0);
    let (mut tr, mut ts, mut ti, mut tw) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        let t = Instant::now();
        std::hint::black_box(plan.run(&batch));
        tr.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        std::hint::black_box(
            mgen::sim::simulate_prepared(&pkg, &sliced, false, 0, mgen::progress::Mode::Off)
                .unwrap(),
        );
        ts.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        std::hint::black_box(
            mgen::sim::simulate_prepared(&pkg, &ideal, true, 0, mgen::progress::Mode::Off).unwrap(),
        );
        ti.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        std::hint::black_box(mgen::sim::simulate(&pkg, false, mgen::progress::Mode::Off).unwrap());
        tw.push(t.elapsed().as_secs_f64());
    }
    let (r, s, i, w) = (median(tr), median(ts), median(ti), median(tw));
    println!(
        "reference executor, BERT-base, 1 request, seq 128: {:.1} ms",
        r * 1e3
    );
    println!(
        "preparing (slicing) the crossbar images, once:     {:.1} ms",
        prep * 1e3
    );
    println!(
        "simulator per request, bit-sliced ADC model:       {:.1} ms  ratio {:.2}x (goal <= 4x)",
        s * 1e3,
        s / r
    );
    println!(
        "simulator per request, --ideal-adc:                {:.1} ms  ratio {:.2}x (goal <= 1.5x)",
        i * 1e3,
        i / r
    );
    println!(
        "whole simulate() of one request, with preparation: {:.1} ms  ratio {:.2}x",
        w * 1e3,
        w / r
    );
    // A noisy chip: every slice is converted one by one, with a read-noise
    // draw per conversion; one run (it is tens of times the noise-free one).
    let mut pkg = pkg;
    pkg.hw.noise = mgen::hw::noise::preset("typical_reram").expect("a preset");
    let t = Instant::now();
    let noisy = mgen::sim::prepare_images(&pkg, false, 0);
    let nprep = t.elapsed().as_secs_f64();
    let t = Instant::now();
    std::hint::black_box(
        mgen::sim::simulate_prepared(&pkg, &noisy, false, 0, mgen::progress::Mode::Off).unwrap(),
    );
    let n = t.elapsed().as_secs_f64();
    println!(
        "preparing a typical_reram chip's images, once:     {:.1} ms",
        nprep * 1e3
    );
    println!(
        "simulator per request on it (one run):             {:.1} ms  ratio {:.2}x reference, {:.1}x noise-free",
        n * 1e3,
        n / r,
        n / s
    );
}
