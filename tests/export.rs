//! `--emit weights`: the generated models as safetensors that read back
//! into the same task models.

mod common;

use common::mgen;
use ndarray::ArrayD;
use ndarray_npy::read_npy;
use std::path::Path;

/// Points the quickstart's model and tasks at the files in `w`.
fn read_back(w: &Path, from: &str, area: bool) -> String {
    let mut s = std::fs::read_to_string(from).unwrap();
    let d = w.display();
    for (old, new) in [
        (
            "synthetic(seed = 7)",
            format!("\"{d}/mini_bert.safetensors\""),
        ),
        (
            "finetuned(seed = 11, drift = 0.02)",
            format!("\"{d}/sentiment.safetensors\""),
        ),
        (
            "finetuned(seed = 12, drift = 0.03)",
            format!("\"{d}/topic.safetensors\""),
        ),
        (
            "finetuned(seed = 13, drift = 0.02)",
            format!("\"{d}/similarity.safetensors\""),
        ),
    ] {
        assert!(s.contains(old), "{old}");
        s = s.replace(old, &new);
    }
    if area {
        s = s.replace("area = delta(bits = 2);", "");
    }
    s
}

fn outputs(dir: &Path) -> Vec<ArrayD<f32>> {
    ["sentiment", "topic", "similarity"]
        .iter()
        .map(|t| read_npy(dir.join(format!("{t}.npy"))).unwrap())
        .collect()
}

fn reference(file: &Path, baseline: bool, out: &Path) -> Vec<ArrayD<f32>> {
    let f = file.to_str().unwrap();
    let o = out.to_str().unwrap();
    let mut args = vec!["run", f, "--reference", "--dump-outputs", o];
    if baseline {
        args.push("--baseline");
    }
    let (code, _, err) = mgen(&args);
    assert_eq!(code, 0, "{err}");
    outputs(out)
}

/// The generated quickstart, written out and read back as each task's own
/// checkpoint over the written base model: every task's float outputs are
/// bit-identical to the generated model's; the shared trunk is written
/// once (in the base's file), and each task file holds only its own.
#[test]
fn written_weights_read_back_into_the_generated_models() {
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path().join("w");
    let (code, out, err) = mgen(&[
        "compile",
        "examples/quickstart.mgen",
        "--emit",
        "weights",
        "-o",
        w.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("task sentiment { weights = "), "{out}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.join("weights.json")).unwrap()).unwrap();
    for t in ["sentiment", "topic", "similarity"] {
        let own = summary["tasks"][t]["tensors"].as_array().unwrap();
        // Shared blocks come from the base's file, not the task's.
        assert!(
            !own.iter()
                .any(|n| n == "encoder.layer.0.attention.self.query.weight"),
            "{t}: {own:?}"
        );
        assert!(
            own.iter()
                .any(|n| n == "encoder.layer.3.output.dense.weight"),
            "{t}: its own top layer"
        );
        assert!(summary["tasks"][t]["from_base"].as_u64().unwrap() > 0);
    }
    let back = tmp.path().join("back.mgen");
    std::fs::write(&back, read_back(&w, "examples/quickstart.mgen", false)).unwrap();
    let a = reference(
        Path::new("examples/quickstart.mgen"),
        false,
        &tmp.path().join("a"),
    );
    let b = reference(&back, true, &tmp.path().join("b"));
    assert_eq!(a, b);
}

/// In area mode the written matrix is base + delta, so the read-back
/// models compute what the generated ones do up to float summation order.
#[test]
fn area_mode_weights_are_written_as_their_sum() {
    let tmp = tempfile::tempdir().unwrap();
    let src = std::fs::read_to_string("examples/quickstart.mgen")
        .unwrap()
        .replace(
            "tasks  = [sentiment, topic, similarity];",
            "tasks  = [sentiment, topic, similarity];\n    area = delta(bits = 2);",
        );
    let qa = tmp.path().join("qa.mgen");
    std::fs::write(&qa, &src).unwrap();
    let w = tmp.path().join("w");
    let (code, _, err) = mgen(&[
        "compile",
        qa.to_str().unwrap(),
        "--emit",
        "weights",
        "-o",
        w.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let summary = std::fs::read_to_string(w.join("weights.json")).unwrap();
    assert!(!summary.contains(".delta") && !summary.contains("\"zeros\""));
    let back = tmp.path().join("back.mgen");
    std::fs::write(&back, read_back(&w, qa.to_str().unwrap(), true)).unwrap();
    let a = reference(&qa, false, &tmp.path().join("a"));
    let b = reference(&back, true, &tmp.path().join("b"));
    for (x, y) in a.iter().zip(&b) {
        let scale = x.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
        let diff = x
            .iter()
            .zip(y.iter())
            .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(diff <= 1e-4 * scale, "{diff} of {scale}");
    }
}

/// `--emit weights` without `-o` is a usage error.
#[test]
fn weights_need_a_directory() {
    let (code, _, err) = mgen(&["compile", "examples/quickstart.mgen", "--emit", "weights"]);
    assert_eq!(code, 2);
    assert!(err.contains("-o DIR"), "{err}");
}
