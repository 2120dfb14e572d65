//! The program-directory door (`mgen sim DIR`): every bad directory is a
//! coded diagnostic (E302, E303, E304) with exit 1, found before anything
//! is sized from it — one test per reproduced bug.

mod common;
mod fuzzkit;

use common::mgen;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TINY: &str = "\
hardware hw { crossbar = 16 x 16; chips = 1; tiles = 2; cores_per_tile = 2; crossbars_per_core = 8; }
model m { layers = 1; hidden = 16; heads = 2; ffn = 32; vocab = 100; max_seq = 8; weights = synthetic(seed = 1); }
task a { base = m; head = classify(2); weights = finetuned(seed = 2, drift = 0.02); keep agreement >= 50%; }
task b { base = m; head = embed(mean); weights = finetuned(seed = 3, drift = 0.02); keep cosine >= 0.5; }
workload w { requests = 2; seq = 8; inputs = synthetic(seed = 4); tasks = [a, b]; }
";

/// A freshly compiled tiny program directory under `tmp`.
fn fresh(tmp: &Path) -> PathBuf {
    common::compile_program(TINY, tmp)
}

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Edits the assembly and the manifest, then makes every SHA-256 in the
/// manifest match again (a hand edit that re-hashes).
fn edit(d: &Path, masm: impl Fn(String) -> String, man: impl Fn(&mut Value)) {
    let text = masm(std::fs::read_to_string(d.join("program.masm")).unwrap());
    std::fs::write(d.join("program.masm"), &text).unwrap();
    let st = std::fs::read(d.join("crossbars.safetensors")).unwrap();
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("manifest.json")).unwrap()).unwrap();
    man(&mut v);
    v["sha256"]["program.masm"] = sha(text.as_bytes()).into();
    v["sha256"]["crossbars.safetensors"] = sha(&st).into();
    v["sha256"]["manifest"] = mgen::backend::manifest::digest(&v).into();
    std::fs::write(d.join("manifest.json"), v.to_string()).unwrap();
}

/// Runs `mgen sim` on `d` in both modes: exit 1 with `code`, and every
/// `needle` in the message.
fn refused(d: &Path, code: &str, needles: &[&str]) {
    for mode in [None, Some("--counts-only")] {
        let mut args = vec!["sim", d.to_str().unwrap()];
        args.extend(mode);
        let t = Instant::now();
        let (exit, _, err) = mgen(&args);
        assert!(t.elapsed() < Duration::from_secs(5), "{mode:?}: slow");
        assert_eq!(exit, 1, "{mode:?}: {err}");
        assert!(err.contains(&format!("error[{code}]")), "{mode:?}: {err}");
        for n in needles {
            assert!(err.contains(n), "{mode:?}: no `{n}` in\n{err}");
        }
    }
}

#[test]
fn manifest_sizes_are_bounded_before_allocating() {
    fuzzkit::cap_memory(8);
    let tmp = tempfile::tempdir().unwrap();
    let d = fresh(tmp.path());
    let pristine = std::fs::read_to_string(d.join("manifest.json")).unwrap();
    let restore = || std::fs::write(d.join("manifest.json"), &pristine).unwrap();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/seq", json!(9007199254740993u64), "`seq`"),
        ("/seq", json!(1u64 << 61), "`seq`"),
        ("/seq", json!(0), "`seq`"),
        ("/seq", json!(65537), "`seq`"),
        ("/requests", json!([]), "0 requests"),
        (
            "/requests/0/ids",
            json!([1, 2, 3, 4, 5, 6, 7, 8, 9]),
            "9 tokens for seq 8",
        ),
        ("/requests/0/ids", json!([1, 2.5]), "`requests[0]`"),
        ("/requests/0/ids", json!([1, "2"]), "`requests[0]`"),
        ("/requests/1/text", json!(7), "`requests[1]`"),
        ("/tasks/0/width", json!(1u64 << 40), "`tasks[0]`"),
        ("/hardware/chips", json!(1u64 << 40), "out of range"),
        ("/hardware/tiles", json!(0), "out of range"),
        ("/hardware/endurance", json!(-1.0), "out of range"),
        ("/hardware/rows", json!(3), "out of range"),
        ("/functional", json!("yes"), "`functional`"),
    ];
    for (path, value, needle) in cases {
        restore();
        edit(&d, |s| s, |v| *v.pointer_mut(path).unwrap() = value.clone());
        refused(&d, "E303", &[needle]);
    }
}

#[test]
fn every_instruction_has_its_operand_shapes_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let d = fresh(tmp.path());
    let pristine = std::fs::read_to_string(d.join("program.masm")).unwrap();
    for (from, to, mnemonic) in [
        // gamma of another width; a 2-D gamma (both panicked in ndarray).
        (
            "LAYERNORM   b3, b2, c3,",
            "LAYERNORM   b3, b2, c11,",
            "`LAYERNORM`",
        ),
        (
            "LAYERNORM   b3, b2, c3,",
            "LAYERNORM   b3, b2, c0,",
            "`LAYERNORM`",
        ),
        ("c4, eps=1e-12", "c4, eps=NaN", "`LAYERNORM`"),
        // A 2-D mask for `cls` pooling (exited 0).
        (
            "POOL        b20, b19, b1, cls",
            "POOL        b20, b19, b2, cls",
            "`POOL`",
        ),
        (
            "POOL        b20, b19, b1, cls",
            "POOL        b20, b7, b1, cls",
            "`POOL`",
        ),
        (
            "MVM         b4, b3, i0, c5",
            "MVM         b4, b3, i0, c11",
            "`MVM`",
        ),
        (
            "MVM         b4, b3, i0, c5",
            "MVM         b4, b7, i0, c5",
            "`MVM`",
        ),
        ("qk, heads=2", "qk, heads=3", "`DMM`"),
        ("qk, heads=2", "qk, heads=0", "`DMM`"),
        ("av, heads=2", "av, heads=1", "`DMM`"),
        (
            "VEC         b13, add, b12, b3",
            "VEC         b13, add, b12, b7",
            "`VEC`",
        ),
        (
            "VEC         b9, mask, b8, b1",
            "VEC         b9, mask, b8, b2",
            "`VEC`",
        ),
        (
            "VEC         b10, softmax, b9",
            "VEC         b10, softmax, b3",
            "`VEC`",
        ),
        (
            "EMBED       b2, b0, c0, c1, c2",
            "EMBED       b2, b0, c0, c3, c2",
            "`EMBED`",
        ),
        (
            "EMBED       b2, b0, c0, c1, c2",
            "EMBED       b2, b3, c0, c1, c2",
            "`EMBED`",
        ),
        ("LOAD        b0, ids", "LOAD        b2, ids", "`LOAD`"),
        ("STORE       a, b23", "STORE       a, b21", "`STORE`"),
    ] {
        assert!(pristine.contains(from), "{from}");
        edit(&d, |_| pristine.replacen(from, to, 1), |_| {});
        refused(&d, "E304", &[mnemonic]);
    }
}

#[test]
fn a_huge_crossbar_range_is_refused_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let d = fresh(tmp.path());
    let pristine = std::fs::read_to_string(d.join("program.masm")).unwrap();
    for range in ["xb=0..18446744073709551615", "xb=4..18446744073709551615"] {
        edit(&d, |_| pristine.replacen("xb=0..4", range, 1), |_| {});
        refused(&d, "E304", &["outside the machine"]);
    }
    // A range inside the machine but not the image's closed form.
    edit(&d, |_| pristine.replacen("xb=0..4", "xb=0..5", 1), |_| {});
    refused(&d, "E304", &["needs 4 crossbars"]);
}

#[test]
fn token_ids_are_exact_integers_in_range() {
    let tmp = tempfile::tempdir().unwrap();
    let d = fresh(tmp.path());
    let pristine = std::fs::read_to_string(d.join("manifest.json")).unwrap();
    for (id, shown, why) in [
        (json!((1u64 << 32) + 5), "4294967301", "not a token id"),
        (json!(1u64 << 31), "2147483648", "not a token id"),
        (json!(-1), "-1", "not a token id"),
        (json!(150), "150", "vocabulary of 100"),
    ] {
        std::fs::write(d.join("manifest.json"), &pristine).unwrap();
        edit(&d, |s| s, |v| v["requests"][1]["ids"][2] = id.clone());
        refused(&d, "E303", &["`requests[1]`", "token 2", shown, why]);
    }
}

/// An edit of the manifest's JSON.
type Edit = dyn Fn(&mut Value);

#[test]
fn an_edited_manifest_is_detected_and_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let d = fresh(tmp.path());
    let pristine = std::fs::read_to_string(d.join("manifest.json")).unwrap();
    // Edited without re-hashing: the manifest's own digest.
    std::fs::write(
        d.join("manifest.json"),
        pristine.replacen("classify", "embed", 1),
    )
    .unwrap();
    refused(&d, "E303", &["its own SHA-256"]);
    // Edited and re-hashed: the content checks.
    let cases: Vec<(&Edit, &str)> = vec![
        (
            &|v| v["tasks"][0]["kind"] = "regress".into(),
            "cannot have width 2",
        ),
        (
            &|v| v["tasks"][0]["kind"] = "ranking".into(),
            "is not classify",
        ),
        (
            &|v| v["tasks"][1]["name"] = "a".into(),
            "not a new task name",
        ),
        (
            &|v| v["tasks"][1]["name"] = "b c".into(),
            "not a new task name",
        ),
        (&|v| v["outputs"] = json!(["a.npy"]), "`outputs`"),
        (&|v| v["outputs"] = json!(["a.npy", "x.npy"]), "`outputs`"),
        (&|v| v["version"] = 1.into(), "version 1"),
        (&|v| v["extra"] = 1.into(), "unknown field `extra`"),
        (&|v| v["sha256"]["x"] = "0".into(), "`sha256`"),
        // One request fewer: the reference outputs no longer fit the file.
        (
            &|v| _ = v["requests"].as_array_mut().unwrap().pop(),
            "need at most",
        ),
    ];
    for (change, needle) in cases {
        std::fs::write(d.join("manifest.json"), &pristine).unwrap();
        edit(&d, |s| s, change);
        let (code, _, err) = mgen(&["sim", d.to_str().unwrap()]);
        assert_eq!(code, 1, "{needle}: {err}");
        assert!(
            err.contains("error[E303]") && err.contains(needle),
            "{needle}: {err}"
        );
    }
    // A task renamed consistently in both files still runs.
    std::fs::write(d.join("manifest.json"), &pristine).unwrap();
    let masm = std::fs::read_to_string(d.join("program.masm")).unwrap();
    edit(
        &d,
        |_| masm.replace("STORE       b, ", "STORE       bb, "),
        |v| {
            v["tasks"][1]["name"] = "bb".into();
            v["outputs"][1] = "bb.npy".into();
        },
    );
    let (code, _, err) = mgen(&["sim", d.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("reference outputs for 1 of 2 tasks"), "{err}");
}

/// Writes a safetensors file whose header declares `tensors` (name, dtype,
/// shape, bytes) and whose length is `len` (sparse: nothing is written).
fn fake_safetensors(path: &Path, tensors: &[(&str, &str, Vec<u64>, u64)], len: Option<u64>) {
    let mut header = serde_json::Map::new();
    let mut at = 0u64;
    for (name, dtype, shape, bytes) in tensors {
        header.insert(
            name.to_string(),
            json!({ "dtype": dtype, "shape": shape, "data_offsets": [at, at + bytes] }),
        );
        at += bytes;
    }
    let h = Value::Object(header).to_string();
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend(h.as_bytes());
    let f = std::fs::File::create(path).unwrap();
    use std::io::Write;
    (&f).write_all(&bytes).unwrap();
    f.set_len(len.unwrap_or(bytes.len() as u64 + at)).unwrap();
}

#[test]
fn an_oversized_safetensors_file_is_not_read() {
    fuzzkit::cap_memory(4);
    let tmp = tempfile::tempdir().unwrap();
    let d = fresh(tmp.path());
    let st = d.join("crossbars.safetensors");
    let small = std::fs::metadata(&st).unwrap().len();
    // The real header, then 6 GiB (sparse) where it declares ~16 KB.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&st)
        .unwrap()
        .set_len(6 << 30)
        .unwrap();
    refused(
        &d,
        "E303",
        &["crossbars.safetensors", "its header declares"],
    );
    // A header declaring 4 GiB of tensors the program cannot need.
    fake_safetensors(&st, &[("huge", "F32", vec![1 << 30], 4 << 30)], None);
    refused(&d, "E303", &["need at most"]);
    // A header length beyond the file.
    std::fs::write(&st, u64::MAX.to_le_bytes()).unwrap();
    refused(&d, "E303", &["a header of"]);
    assert!(small < 1 << 20);
}
