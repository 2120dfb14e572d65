//! Safetensors checkpoints: the fixtures under tests/golden/data (generated
//! here; `BLESS=1` rewrites them), f16/bf16/prefix handling, task files that
//! hold only their differences, and every malformed case (the golden cases
//! E201–E210 show their diagnostics).

use mgen::diag::Sources;
use mgen::spec::{Head, Model, Pool, WeightSource};
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use std::path::Path;

const DATA: &str = "tests/golden/data";

fn tiny() -> Model {
    Model {
        name: "tiny".into(),
        layers: 1,
        hidden: 8,
        heads: 2,
        ffn: 16,
        vocab: 20,
        max_seq: 8,
        type_vocab: 2,
        layer_norm_eps: 1e-12,
        weights: WeightSource::Synthetic { seed: 1 },
    }
}

struct T {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The tiny model's tensors (with a pooler, without a classifier).
fn base_tensors() -> Vec<T> {
    let m = tiny();
    mgen::weights::layout(&m, &Head::Regress { pool: Pool::Cls })
        .into_iter()
        .filter(|t| !t.name.starts_with("classifier"))
        .map(|t| {
            let a = mgen::weights::synthetic(42, &t.name, &t.shape);
            T {
                name: t.name.clone(),
                dtype: Dtype::F32,
                shape: t.shape.iter().map(|&d| d as usize).collect(),
                bytes: f32_bytes(a.as_slice().unwrap()),
            }
        })
        .collect()
}

fn serialize(ts: &[T]) -> Vec<u8> {
    let views: Vec<(String, TensorView)> = ts
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                TensorView::new(t.dtype, t.shape.clone(), &t.bytes).unwrap(),
            )
        })
        .collect();
    safetensors::tensor::serialize(views, None).unwrap()
}

fn config(hidden: u64) -> Vec<u8> {
    serde_json::to_vec_pretty(&serde_json::json!({
        "hidden_size": hidden, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
        "vocab_size": 20, "max_position_embeddings": 8, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu"
    }))
    .unwrap()
}

fn to_half(ts: &[T], bf: bool, prefix: &str) -> Vec<T> {
    ts.iter()
        .map(|t| {
            let v: Vec<f32> = t
                .bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let bytes: Vec<u8> = if bf {
                v.iter()
                    .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                    .collect()
            } else {
                v.iter()
                    .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                    .collect()
            };
            T {
                name: format!("{prefix}{}", t.name),
                dtype: if bf { Dtype::BF16 } else { Dtype::F16 },
                shape: t.shape.clone(),
                bytes,
            }
        })
        .collect()
}

/// Every fixture file, by path under tests/golden/data.
fn fixtures() -> Vec<(String, Vec<u8>)> {
    let base = base_tensors();
    let good = serialize(&base);
    let mut v = vec![
        ("tiny/model.safetensors".to_string(), good.clone()),
        ("tiny/config.json".into(), config(8)),
        (
            "f16/model.safetensors".into(),
            serialize(&to_half(&base, false, "bert.")),
        ),
        (
            "bf16/model.safetensors".into(),
            serialize(&to_half(&base, true, "")),
        ),
        ("badconfig/model.safetensors".into(), good.clone()),
        ("badconfig/config.json".into(), config(16)),
        ("confignum/model.safetensors".into(), good.clone()),
        (
            "confignum/config.json".into(),
            br#"{"hidden_size": 8.5, "num_hidden_layers": 1, "layer_norm_eps": -1}"#.to_vec(),
        ),
        (
            "truncated/model.safetensors".into(),
            good[..good.len() / 2].to_vec(),
        ),
    ];
    let mut lying = good.clone();
    let n = u64::from_le_bytes(lying[..8].try_into().unwrap());
    lying[..8].copy_from_slice(&(n + 1_000_000).to_le_bytes());
    v.push(("lying/model.safetensors".into(), lying));
    let q = "encoder.layer.0.attention.self.query.weight";
    let missing: Vec<T> = base
        .iter()
        .filter(|t| t.name != "encoder.layer.0.output.dense.weight")
        .map(|t| T {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
            bytes: t.bytes.clone(),
        })
        .collect();
    v.push(("missing/model.safetensors".into(), serialize(&missing)));
    let shape: Vec<T> = base
        .iter()
        .map(|t| {
            if t.name == q {
                T {
                    name: t.name.clone(),
                    dtype: Dtype::F32,
                    shape: vec![8, 7],
                    bytes: t.bytes[..8 * 7 * 4].to_vec(),
                }
            } else {
                T {
                    name: t.name.clone(),
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    bytes: t.bytes.clone(),
                }
            }
        })
        .collect();
    v.push(("shape/model.safetensors".into(), serialize(&shape)));
    let dtype: Vec<T> = base
        .iter()
        .map(|t| T {
            name: t.name.clone(),
            dtype: if t.name == q { Dtype::I32 } else { t.dtype },
            shape: t.shape.clone(),
            bytes: t.bytes.clone(),
        })
        .collect();
    v.push(("dtype/model.safetensors".into(), serialize(&dtype)));
    // A task file with only what fine-tuning changed: one matrix and the head.
    let changed: Vec<f32> = base
        .iter()
        .find(|t| t.name == q)
        .unwrap()
        .bytes
        .chunks_exact(4)
        .map(|c| 1.01 * f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let head_w: Vec<f32> = (0..16).map(|i| (i as f32 - 7.5) / 10.0).collect();
    let delta = vec![
        T {
            name: q.into(),
            dtype: Dtype::F32,
            shape: vec![8, 8],
            bytes: f32_bytes(&changed),
        },
        T {
            name: "classifier.weight".into(),
            dtype: Dtype::F32,
            shape: vec![2, 8],
            bytes: f32_bytes(&head_w),
        },
        T {
            name: "classifier.bias".into(),
            dtype: Dtype::F32,
            shape: vec![2],
            bytes: f32_bytes(&[0.1, -0.1]),
        },
    ];
    v.push(("taskdelta/model.safetensors".into(), serialize(&delta)));
    // An embedding table with one NaN (and a position table with an infinity).
    let nonfinite: Vec<T> = base
        .iter()
        .map(|t| {
            let mut bytes = t.bytes.clone();
            if t.name == "embeddings.word_embeddings.weight" {
                bytes[12..16].copy_from_slice(&f32::NAN.to_le_bytes());
            }
            if t.name == "embeddings.position_embeddings.weight" {
                bytes[..4].copy_from_slice(&f32::INFINITY.to_le_bytes());
            }
            T {
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
                bytes,
            }
        })
        .collect();
    v.push(("nonfinite/model.safetensors".into(), serialize(&nonfinite)));
    v
}

#[test]
fn fixtures_are_current() {
    let bless = std::env::var_os("BLESS").is_some();
    for (rel, bytes) in fixtures() {
        let p = Path::new(DATA).join(&rel);
        if bless {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, &bytes).unwrap();
        } else {
            let on_disk = std::fs::read(&p)
                .unwrap_or_else(|_| panic!("{} missing: run with BLESS=1", p.display()));
            assert!(
                on_disk == bytes,
                "{} is stale: run with BLESS=1",
                p.display()
            );
        }
    }
}

const SPEC: &str = r#"
model m { layers = 1; hidden = 8; heads = 2; ffn = 16; vocab = 20; max_seq = 8; weights = "BASE"; }
task t { base = m; head = classify(2); weights = TASK; }
workload w { requests = 3; seq = 8; inputs = synthetic(seed = 5); tasks = [t]; }
"#;

fn run(
    base: &str,
    task: &str,
) -> (
    mgen::ir::Module,
    Vec<mgen::reference::TaskOutput>,
    Vec<String>,
) {
    let src = SPEC.replace("BASE", base).replace("TASK", task);
    let mut sources = Sources::new();
    let f = mgen::driver::front_bytes(&mut sources, "c.mgen", src.as_bytes(), DATA, false)
        .unwrap_or_else(|d| panic!("{}", d.render(&sources, false)));
    let (m, store) = mgen::driver::module_and_store(f, &sources)
        .unwrap_or_else(|d| panic!("{}", d.render(&sources, false)));
    let batch = mgen::data::load(&m.spec, &mut sources).unwrap();
    let out = mgen::reference::run(&m, &store, &batch).unwrap();
    (m, out, store.notes.clone())
}

#[test]
fn half_precision_and_prefixed_names_load() {
    let (_, f32_out, _) = run("tiny/model.safetensors", "finetuned(seed = 1, drift = 0)");
    for other in ["f16/model.safetensors", "bf16/model.safetensors"] {
        let (_, out, _) = run(other, "finetuned(seed = 1, drift = 0)");
        let diff = (&out[0].values - &f32_out[0].values)
            .mapv(f32::abs)
            .fold(0.0f32, |a, &b| a.max(b));
        assert!(diff > 0.0 && diff < 0.05, "{other}: {diff}");
    }
}

#[test]
fn a_task_file_with_only_its_differences_shares_the_rest_with_its_base() {
    let (m, _, notes) = run("tiny/model.safetensors", "\"taskdelta/model.safetensors\"");
    let from_task: Vec<&str> = m
        .params
        .iter()
        .filter(|p| p.source == "t")
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(
        from_task,
        vec![
            "encoder.layer.0.attention.self.query.weight",
            "classifier.weight",
            "classifier.bias"
        ]
    );
    assert!(notes.is_empty(), "{notes:?}");
    // Without a classifier in the task file, the head is synthesised and the report says so.
    let (_, _, notes) = run("tiny/model.safetensors", "\"tiny/model.safetensors\"");
    assert!(notes.iter().any(|n| n.contains("synthesised")), "{notes:?}");
}

#[test]
fn identical_files_give_identical_digests() {
    let (m, _, _) = run("tiny/model.safetensors", "\"badconfig/model.safetensors\"");
    // badconfig/model.safetensors has the same bytes as tiny/: only the head is the task's.
    assert!(
        m.params
            .iter()
            .filter(|p| p.source == "t")
            .all(|p| p.name.starts_with("classifier"))
    );
}

#[test]
fn synthetic_weights_are_bit_identical_across_runs_and_follow_the_drift_profile() {
    let a = mgen::weights::synthetic(7, "encoder.layer.3.attention.self.query.weight", &[64, 64]);
    let b = mgen::weights::synthetic(7, "encoder.layer.3.attention.self.query.weight", &[64, 64]);
    assert_eq!(
        a.as_slice()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect::<Vec<_>>(),
        b.as_slice()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect::<Vec<_>>()
    );
    // Relative delta per layer, measured on a finetuned 6-layer model.
    let src = "model m { layers = 6; hidden = 64; heads = 4; ffn = 128; vocab = 50; max_seq = 8; weights = synthetic(seed = 7); }
task t { base = m; head = regress; weights = finetuned(seed = 9, drift = 0.05); }
workload w { requests = 1; seq = 8; inputs = synthetic(seed = 1); tasks = [t]; }";
    let mut sources = Sources::new();
    let f = mgen::driver::front_bytes(&mut sources, "d.mgen", src.as_bytes(), ".", false).unwrap();
    let (m, store) = mgen::driver::module_and_store(f, &sources).unwrap();
    let mut rel = Vec::new();
    for l in 0..6 {
        let name = format!("encoder.layer.{l}.intermediate.dense.weight");
        let t = m
            .params
            .iter()
            .find(|p| p.name == name && p.source == "t")
            .unwrap();
        let base = mgen::weights::synthetic(7, &name, &[128, 64]);
        let tuned = store.tensor(&t.digest).unwrap();
        let d = (&*tuned - &base).mapv(|x| x * x).sum().sqrt() / base.mapv(|x| x * x).sum().sqrt();
        let changed = tuned
            .iter()
            .zip(base.iter())
            .filter(|(a, b)| a != b)
            .count() as f64
            / base.len() as f64;
        assert!(
            (changed - mgen::weights::DELTA_DENSITY).abs() < 0.05,
            "layer {l}: {changed} of the entries changed"
        );
        let expected = 0.05 * mgen::weights::drift_profile(mgen::weights::Part::Layer(l), 6);
        assert!(
            (d as f64 / expected - 1.0).abs() < 0.15,
            "layer {l}: relative delta {d}, expected about {expected}"
        );
        rel.push(d);
    }
    assert!(
        rel.windows(2).all(|w| w[1] > w[0]),
        "the delta grows with depth: {rel:?}"
    );
}

/// A spec over the tiny model with its checkpoint at `weights`.
fn spec_at(weights: &Path) -> String {
    SPEC.replace("BASE", &weights.display().to_string())
        .replace("TASK", "finetuned(seed = 1, drift = 0.01)")
}

fn check_in(dir: &Path, spec: &str) -> (i32, String) {
    let p = dir.join("c.mgen");
    std::fs::write(&p, spec).unwrap();
    let (code, _, err) = common::mgen(&["check", p.to_str().unwrap()]);
    (code, err)
}

mod common;

#[test]
fn a_sparse_multi_gigabyte_file_is_rejected_from_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.safetensors");
    let good = serialize(&base_tensors());
    std::fs::write(&p, &good).unwrap();
    // 6 GiB, all but the first few KB a hole: the header declares far less.
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(6 << 30).unwrap();
    drop(f);
    let (code, err) = check_in(dir.path(), &spec_at(&p));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("error[E202]") && err.contains("bytes of data"),
        "{err}"
    );
}

#[test]
fn a_header_that_lies_about_offsets_is_e202() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.safetensors");
    let good = serialize(&base_tensors());
    let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(good[8..8 + n].to_vec()).unwrap();
    // Move the first tensor's end offset by 4 bytes: offsets no longer tile the data.
    let lie = header.replacen("\"data_offsets\":[0,", "\"data_offsets\":[4,", 1);
    assert_ne!(lie, header);
    let mut bytes = (lie.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(lie.as_bytes());
    bytes.extend_from_slice(&good[8 + n..]);
    std::fs::write(&p, &bytes).unwrap();
    let (code, err) = check_in(dir.path(), &spec_at(&p));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("error[E202]"), "{err}");
}

#[test]
fn an_infinite_half_precision_weight_is_e211_and_a_bad_file_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.safetensors");
    let mut ts = to_half(&base_tensors(), false, "");
    let t = ts
        .iter_mut()
        .find(|t| t.name.ends_with("query.weight"))
        .unwrap();
    t.bytes[2..4].copy_from_slice(&half::f16::INFINITY.to_le_bytes());
    std::fs::write(&p, serialize(&ts)).unwrap();
    let spec = spec_at(&p)
        .replace("workload w {", "task u { base = m; head = classify(3); weights = finetuned(seed = 3, drift = 0.01); }\nworkload w {")
        .replace("tasks = [t]", "tasks = [t, u]");
    let (code, err) = check_in(dir.path(), &spec);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.matches("error[E211]").count(), 1, "{err}");
    assert!(
        err.contains("encoder.layer.0.attention.self.query.weight") && err.contains("inf"),
        "{err}"
    );
}

#[test]
fn a_huge_inputs_file_is_read_only_as_far_as_the_workload_needs() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("in.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
    use std::io::Write;
    for _ in 0..4 {
        writeln!(f, "{{\"ids\": [1, 2, 3]}}").unwrap();
    }
    f.flush().unwrap();
    drop(f);
    // Then 3 GiB of a hole: NUL bytes that are no JSON, never read.
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(3 << 30).unwrap();
    drop(f);
    let spec = SPEC
        .replace("\"BASE\"", "synthetic(seed = 1)")
        .replace("TASK", "finetuned(seed = 1, drift = 0.01)")
        .replace("requests = 3;", "requests = 4;")
        .replace("synthetic(seed = 5)", "\"in.jsonl\"");
    let (code, err) = check_in(dir.path(), &spec);
    assert_eq!(code, 0, "{err}");
    // Five requests are more than the file's good lines: the sixth line is junk.
    let (code, err) = check_in(dir.path(), &spec.replace("requests = 4;", "requests = 5;"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("error[E207]"), "{err}");
}

/// `ts` as a safetensors file whose `__metadata__` links `links` under
/// `mgen.shared`.
fn serialize_linking(ts: &[T], links: &str) -> Vec<u8> {
    let views: Vec<(String, TensorView)> = ts
        .iter()
        .map(|t| {
            let v = TensorView::new(t.dtype, t.shape.clone(), &t.bytes).unwrap();
            (t.name.clone(), v)
        })
        .collect();
    let meta = std::collections::HashMap::from([("mgen.shared".to_string(), links.to_string())]);
    safetensors::tensor::serialize(views, Some(meta)).unwrap()
}

/// A task's query weight and head, the query weight moved off the base's.
fn task_own_tensors() -> (T, Vec<T>) {
    let mut q = base_tensors()
        .into_iter()
        .find(|t| t.name == "encoder.layer.0.attention.self.query.weight")
        .unwrap();
    let moved: Vec<f32> = q
        .bytes
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()) * 1.5)
        .collect();
    q.bytes = f32_bytes(&moved);
    let head = [
        ("classifier.weight", vec![2u64, 8]),
        ("classifier.bias", vec![2]),
    ]
    .map(|(name, shape)| T {
        name: name.into(),
        dtype: Dtype::F32,
        shape: shape.iter().map(|&d| d as usize).collect(),
        bytes: f32_bytes(
            mgen::weights::synthetic(3, name, &shape)
                .as_slice()
                .unwrap(),
        ),
    });
    (q, head.into_iter().collect())
}

/// A task file that holds its head and links a file with its query weight
/// (`--emit weights` writes a shared trunk so) computes exactly what one
/// file holding both computes: the same digests, the same outputs.
#[test]
fn a_task_file_reads_the_tensors_it_shares_from_the_files_it_links() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (q, head) = task_own_tensors();
    let (whole, linked) = (d.join("whole.safetensors"), d.join("linked.safetensors"));
    let mut both = head;
    std::fs::write(
        d.join("trunk.safetensors"),
        serialize(std::slice::from_ref(&q)),
    )
    .unwrap();
    std::fs::write(&linked, serialize_linking(&both, "trunk.safetensors")).unwrap();
    both.push(q);
    std::fs::write(&whole, serialize(&both)).unwrap();
    let base = format!(
        "{}/tiny/model.safetensors",
        std::env::current_dir().unwrap().join(DATA).display()
    );
    let (m1, out1, _) = run(&base, &format!("\"{}\"", whole.display()));
    let (m2, out2, _) = run(&base, &format!("\"{}\"", linked.display()));
    let digests = |m: &mgen::ir::Module| -> Vec<(String, String, String)> {
        m.params
            .iter()
            .map(|p| (p.name.clone(), p.digest.clone(), p.source.clone()))
            .collect()
    };
    assert_eq!(digests(&m1), digests(&m2));
    assert!(
        m2.params
            .iter()
            .any(|p| p.source == "t" && p.name.ends_with("query.weight"))
    );
    assert_eq!(out1[0].values, out2[0].values);
}

/// A link that is not a plain file name beside the checkpoint is E202; a
/// linked file that is missing is E201 with a note naming the task file.
#[test]
fn bad_links_are_diagnostics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, head) = task_own_tensors();
    let base = std::env::current_dir()
        .unwrap()
        .join(DATA)
        .join("tiny/model.safetensors");
    for (links, code, says) in [
        ("../trunk.safetensors", "E202", "plain file name"),
        ("sub/trunk.safetensors", "E202", "plain file name"),
        ("", "E202", "plain file name"),
        (
            "absent.safetensors",
            "E201",
            "links it for the tensors it shares",
        ),
    ] {
        let task = d.join("task.safetensors");
        std::fs::write(&task, serialize_linking(&head, links)).unwrap();
        let spec = SPEC
            .replace("BASE", &base.display().to_string())
            .replace("TASK", &format!("\"{}\"", task.display()));
        let (code_got, err) = check_in(d, &spec);
        assert_eq!(code_got, 1, "{links}: {err}");
        assert!(
            err.contains(&format!("error[{code}]")) && err.contains(says),
            "{links}: {err}"
        );
    }
}
