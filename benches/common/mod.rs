//! The model both benchmarks time: one BERT-base task, one request, seq 128.

use mgen::diag::Sources;

pub const BERT_BASE: &str = "model bert_base { layers = 12; hidden = 768; heads = 12; ffn = 3072; vocab = 30522; max_seq = 128; weights = synthetic(seed = 7); }
task t { base = bert_base; head = classify(2); weights = finetuned(seed = 1, drift = 0); }
workload w { requests = 1; seq = 128; inputs = synthetic(seed = 3); tasks = [t]; }";

/// The placed module, its placement and schedule, its weights and its one request.
pub fn bert_base() -> (
    mgen::ir::Module,
    mgen::passes::Artifacts,
    mgen::weights::Store,
    mgen::data::Batch,
) {
    mgen::alloc::tune();
    let mut sources = Sources::new();
    let f = mgen::driver::front_bytes(&mut sources, "bench.mgen", BERT_BASE.as_bytes(), ".", false)
        .unwrap();
    let (mut m, store) = mgen::driver::module_and_store(f, &sources).unwrap();
    let mut arts = mgen::passes::Artifacts::default();
    mgen::passes::run_pipeline(
        &mut m,
        &mut arts,
        &mgen::passes::resolve("exact").unwrap(),
        &mgen::passes::Context::default(),
        |_, _| {},
    )
    .unwrap();
    let batch = mgen::data::load(&m.spec, &mut sources).unwrap();
    (m, arts, store, batch)
}

/// The median of timings.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}
