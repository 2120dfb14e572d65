//! The textual IR round-trips for every example and every pipeline:
//! print → read → print is the identical text, and reading it back gives a
//! module the verifier accepts.

mod common;

use mgen::diag::Sources;
use mgen::driver;
use mgen::ir::print;
use mgen::passes;
use std::path::Path;

/// Every example; `minilm.mgen` needs the checkpoint (fetched here), the
/// real multi-task example's two files need `scripts/fetch-tasks.sh`'s
/// output (about 6 minutes of fine-tuning, so not run by the tests: they
/// are skipped, saying so, until it has run).
fn examples() -> Vec<std::path::PathBuf> {
    common::ensure_weights();
    let built = Path::new("weights/minilm-tasks/polarity.safetensors").exists();
    let mut v: Vec<_> = std::fs::read_dir("examples")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mgen"))
        .filter(|p| {
            let needs_tasks = p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("minilm-tasks"));
            if needs_tasks && !built {
                eprintln!(
                    "skipping {}: run scripts/fetch-tasks.sh to build its weights",
                    p.display()
                );
            }
            !needs_tasks || built
        })
        .collect();
    v.sort();
    assert!(v.len() >= 2);
    v
}

fn ir_text(path: &Path, pipeline: &str) -> String {
    let mut sources = Sources::new();
    let f = driver::front(&mut sources, path)
        .unwrap_or_else(|d| panic!("{}", d.render(&sources, false)));
    let mut m =
        driver::module(f, &sources).unwrap_or_else(|d| panic!("{}", d.render(&sources, false)));
    passes::run_pipeline(
        &mut m,
        &mut Default::default(),
        &passes::resolve(pipeline).unwrap(),
        &passes::Context::default(),
        |_, _| {},
    )
    .unwrap();
    print::print(&m)
}

fn reread(text: &str, pipeline: &str) -> String {
    let mut sources = Sources::new();
    let f = driver::front_bytes(&mut sources, "roundtrip.mir", text.as_bytes(), ".", true)
        .unwrap_or_else(|d| panic!("{}", d.render(&sources, false)));
    let mut m = driver::module(f, &sources).unwrap();
    passes::run_pipeline(
        &mut m,
        &mut Default::default(),
        &passes::resolve(pipeline).unwrap(),
        &passes::Context::default(),
        |_, _| {},
    )
    .unwrap();
    print::print(&m)
}

#[test]
fn every_example_round_trips_through_mir() {
    for ex in examples() {
        for pipeline in ["none", "exact"] {
            let a = ir_text(&ex, pipeline);
            let b = reread(&a, "none");
            assert!(
                a == b,
                "{} ({pipeline}): print → read → print differs",
                ex.display()
            );
            // Passes are idempotent on their own output.
            let c = reread(&a, pipeline);
            assert!(
                a == c,
                "{} ({pipeline}): re-running the pipeline changed the IR",
                ex.display()
            );
        }
    }
}

#[test]
fn canonical_spec_text_checks_to_the_same_spec() {
    for ex in examples() {
        let mut s1 = Sources::new();
        let f = driver::front(&mut s1, &ex).unwrap();
        let text = f.spec.to_mgen();
        let mut s2 = Sources::new();
        let g = driver::front_bytes(&mut s2, "canon.mgen", text.as_bytes(), &f.spec.root, false)
            .unwrap_or_else(|d| panic!("{}\n{text}", d.render(&s2, false)));
        assert_eq!(g.spec.to_mgen(), text);
        assert_eq!(
            serde_json::to_value(&g.spec).unwrap(),
            serde_json::to_value(&f.spec).unwrap()
        );
    }
}

#[test]
fn glue8_lowers_eight_full_bert_base_models() {
    let mut sources = Sources::new();
    let f = driver::front(&mut sources, Path::new("examples/glue8.mgen")).unwrap();
    let m = driver::module(f, &sources).unwrap();
    let ops = m.count_ops();
    // Per task: 6 static MVMs a layer x 12 layers + pooler + classifier.
    assert_eq!(ops["linear"], 8 * (12 * 6 + 2));
    assert_eq!(ops["qk"], 8 * 12);
    assert_eq!(ops["av"], 8 * 12);
    assert_eq!(ops["output"], 8);
    assert_eq!(ops["input"], 2);
    // Every task has its own weights: nothing to merge exactly but the inputs.
    let mut m2 = m.clone();
    assert_eq!(mgen::passes::merge::merge(&mut m2), 0);
}
