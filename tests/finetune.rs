//! `mgen finetune`: one task trained on the labels of its `train` file,
//! written as a checkpoint that a `.mgen` file reads back.

mod common;

use common::{json_of, mgen};
use std::fmt::Write;

const FILE: &str = "\
model m { layers = 2; hidden = 32; heads = 2; ffn = 64; vocab = 50; max_seq = 16; weights = synthetic(seed = 5); }
task t { base = m; head = classify(2, pool = mean); weights = finetuned(seed = 6, drift = 0.02); train = \"train.jsonl\"; calibrate = \"dev.jsonl\"; }
workload w { requests = 4; seq = 8; inputs = synthetic(seed = 5); tasks = [t]; }
";

/// Labelled requests: class 1 when the first token is below 25.
fn data(n: usize, offset: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        let first = (i * 7 + offset) % 49 + 1;
        let ids = [first, (i * 3 + 11) % 49 + 1, (i * 5 + 2) % 49 + 1];
        let label = usize::from(first < 25);
        let _ = writeln!(s, "{{\"ids\": {ids:?}, \"label\": {label}}}");
    }
    s
}

#[test]
fn finetuning_learns_the_labels_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.mgen");
    std::fs::write(&p, FILE).unwrap();
    std::fs::write(dir.path().join("train.jsonl"), data(96, 0)).unwrap();
    std::fs::write(dir.path().join("dev.jsonl"), data(32, 3)).unwrap();
    let out = dir.path().join("t.safetensors");
    let args = [
        "finetune",
        p.to_str().unwrap(),
        "--task",
        "t",
        "-o",
        out.to_str().unwrap(),
        "--epochs",
        "15",
        "--lr",
        "3e-3",
        "--batch",
        "8",
        "--json",
    ];
    let v = json_of(&args);
    let (before, after) = (
        v["train_before"].as_f64().unwrap(),
        v["train_after"].as_f64().unwrap(),
    );
    assert!(after > before && after >= 0.9, "{v}");
    assert!(v["last_epoch_loss"].as_f64() < v["first_epoch_loss"].as_f64());
    assert_eq!(v["held_out_requests"], 32);
    // Deterministic: the same run writes the same bytes.
    let bytes = std::fs::read(&out).unwrap();
    json_of(&args);
    assert!(bytes == std::fs::read(&out).unwrap());
    // The checkpoint is a task's weights; its embeddings are the ones it
    // started from (frozen), its layers moved.
    let q = dir.path().join("q.mgen");
    std::fs::write(
        &q,
        FILE.replace(
            "weights = finetuned(seed = 6, drift = 0.02)",
            "weights = \"t.safetensors\"",
        ),
    )
    .unwrap();
    let j = json_of(&[
        "compile",
        q.to_str().unwrap(),
        "--emit",
        "sharing",
        "--json",
    ]);
    let j0 = json_of(&[
        "compile",
        p.to_str().unwrap(),
        "--emit",
        "sharing",
        "--json",
    ]);
    let (d, d0) = (
        &j["analysis"][0]["distance"],
        &j0["analysis"][0]["distance"],
    );
    assert_eq!(d[0], d0[0], "{j}");
    assert!(d[1] != d0[1] && d[2] != d0[2], "{j}");
}

#[test]
fn finetune_errors_are_diagnostics() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.mgen");
    std::fs::write(&p, FILE).unwrap();
    std::fs::write(dir.path().join("dev.jsonl"), data(4, 0)).unwrap();
    let out = dir.path().join("o.safetensors");
    let run = |task: &str| {
        mgen(&[
            "finetune",
            p.to_str().unwrap(),
            "--task",
            task,
            "-o",
            out.to_str().unwrap(),
        ])
    };
    // No such task.
    let (code, _, err) = run("nope");
    assert_eq!(code, 1);
    assert!(
        err.contains("error[E011]") && err.contains("its tasks: t"),
        "{err}"
    );
    // The train file is missing.
    let (code, _, err) = run("t");
    assert_eq!(code, 1);
    assert!(
        err.contains("error[E207]") && err.contains("train.jsonl"),
        "{err}"
    );
    // No labels in it.
    std::fs::write(dir.path().join("train.jsonl"), "{\"ids\": [1, 2]}\n").unwrap();
    let (code, _, err) = run("t");
    assert_eq!(code, 1);
    assert!(
        err.contains("error[E207]") && err.contains("no labels"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written on failure");
    // An embedding task has nothing to fine-tune against.
    std::fs::write(&p, FILE.replace("classify(2, pool = mean)", "embed(mean)")).unwrap();
    let (code, _, err) = run("t");
    assert_eq!(code, 1);
    assert!(err.contains("error[E016]"), "{err}");
    // Settings out of range are usage errors.
    let (code, _, _) = mgen(&[
        "finetune",
        p.to_str().unwrap(),
        "--task",
        "t",
        "-o",
        out.to_str().unwrap(),
        "--lr",
        "0",
    ]);
    assert_eq!(code, 2);
}
