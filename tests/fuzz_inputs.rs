//! The inputs door under mutation: a small valid JSON Lines file, mutated
//! (numbers replaced by edge values — ids of 2^32 + 5, labels out of range —
//! bytes flipped, lines cut), used as the workload's `inputs` and as a
//! task's `calibrate` file under an `accuracy` budget; then `mgen check`
//! and `mgen run --reference` in-process. Every case must end with a
//! result or a coded diagnostic: no panic, abort or hang.

mod common;
mod fuzzkit;

const SPEC: &str = r#"
model m { layers = 1; hidden = 16; heads = 2; ffn = 32; vocab = 100; max_seq = 8; weights = synthetic(seed = 1); }
task t { base = m; head = classify(2); weights = finetuned(seed = 2, drift = 0.01); }
task c { base = m; head = classify(3); weights = finetuned(seed = 4, drift = 0.01); keep accuracy >= reference - 10%; calibrate = "in.jsonl"; }
workload w { requests = 2; seq = 8; inputs = "in.jsonl"; tasks = [t, c]; }
"#;

const INPUTS: &str = r#"{"ids": [1, 17, 42, 2], "label": 0}
{"ids": [1, 5, 99, 63, 2], "label": 2, "text": "x"}

{"ids": [1, 8, 2], "label": 1}
{"ids": [1, 3, 4, 5, 6, 7, 8, 2], "label": 0}
"#;

#[test]
fn fuzz_inputs_door() {
    fuzzkit::cap_memory(8);
    let (cases, seed) = (fuzzkit::cases(fuzzkit::DEFAULT_CASES), fuzzkit::seed());
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("f.mgen");
    std::fs::write(&spec, SPEC).unwrap();
    let spec = spec.to_str().unwrap().to_string();
    let mut rng = fuzzkit::Rng::new(seed);
    let start = std::time::Instant::now();
    let mut failures = 0;
    for i in 0..cases {
        let input = if rng.below(2) == 0 {
            fuzzkit::replace_number(INPUTS.as_bytes(), &mut rng)
        } else {
            fuzzkit::mutate(INPUTS.as_bytes(), &mut rng)
        };
        std::fs::write(dir.path().join("in.jsonl"), &input).unwrap();
        fuzzkit::run_case("inputs", i, seed, &input, |_| {
            let runs = [vec!["check", &spec], vec!["run", &spec, "--reference"]];
            failures += fuzzkit::rejected("inputs", &runs, |a| common::mgen(a)) as usize;
        });
    }
    eprintln!(
        "inputs door: {cases} cases ({failures} rejected) in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}
