//! The weights door under mutation: a small valid safetensors checkpoint
//! and its `config.json`, mutated (the header's bytes and numbers, the
//! data's bytes, NaN and infinity bit patterns, the config's numbers), then
//! `mgen check` and `mgen run --reference` in-process. Every case must end
//! with a result or a coded diagnostic: no panic, abort or hang.
//! `MGEN_FUZZ_CASES` / `MGEN_FUZZ_SEED` (tests/fuzzkit) run more or replay.

mod common;
mod fuzzkit;

use mgen::spec::{Head, Model, Pool, WeightSource};
use safetensors::Dtype;
use safetensors::tensor::TensorView;

const SPEC: &str = r#"
model m { layers = 1; hidden = 16; heads = 2; ffn = 32; vocab = 100; max_seq = 8; weights = "model.safetensors"; }
task t { base = m; head = classify(2); weights = finetuned(seed = 2, drift = 0.01); }
workload w { requests = 2; seq = 8; inputs = synthetic(seed = 3); tasks = [t]; }
"#;

fn model() -> Model {
    Model {
        name: "m".into(),
        layers: 1,
        hidden: 16,
        heads: 2,
        ffn: 32,
        vocab: 100,
        max_seq: 8,
        type_vocab: 2,
        layer_norm_eps: 1e-12,
        weights: WeightSource::Synthetic { seed: 1 },
    }
}

/// The tiny model's checkpoint (body and pooler, no classifier).
fn checkpoint() -> Vec<u8> {
    let ts: Vec<(String, Vec<usize>, Vec<u8>)> = mgen::weights::layout(
        &model(),
        &Head::Classify {
            classes: 2,
            pool: Pool::Cls,
        },
    )
    .into_iter()
    .filter(|t| !t.name.starts_with("classifier"))
    .map(|t| {
        let a = mgen::weights::synthetic(42, &t.name, &t.shape);
        let bytes = a.iter().flat_map(|x| x.to_le_bytes()).collect();
        (t.name, t.shape.iter().map(|&d| d as usize).collect(), bytes)
    })
    .collect();
    serialize(&ts, None)
}

/// Named f32 tensors (name, shape, bytes) as a safetensors file.
fn serialize(
    ts: &[(String, Vec<usize>, Vec<u8>)],
    meta: Option<std::collections::HashMap<String, String>>,
) -> Vec<u8> {
    let views: Vec<(String, TensorView)> = ts
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::tensor::serialize(views, meta).unwrap()
}

const CONFIG: &str = r#"{"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32, "vocab_size": 100, "max_position_embeddings": 8, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu"}"#;

/// Bit patterns of non-finite (and edge) values, as f32 and as f16/bf16 halves.
const PATTERNS: &[&[u8]] = &[
    &[0x00, 0x00, 0xc0, 0x7f], // f32 NaN
    &[0x00, 0x00, 0x80, 0x7f], // f32 +inf
    &[0x00, 0x00, 0x80, 0xff], // f32 -inf
    &[0x01, 0x00, 0x80, 0x7f], // f32 signalling NaN
    &[0xff, 0xff, 0x7f, 0x7f], // f32 max
    &[0x00, 0x7c],             // f16 +inf (the second half of an f32)
];

/// One mutated (checkpoint, config) pair.
fn mutated(st: &[u8], rng: &mut fuzzkit::Rng) -> (Vec<u8>, Vec<u8>) {
    let n = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    let (header, data) = (&st[8..8 + n], &st[8 + n..]);
    let mut config = CONFIG.as_bytes().to_vec();
    let file = match rng.below(6) {
        // The header's bytes, length prefix included.
        0 => [fuzzkit::mutate(&st[..8 + n], rng), data.to_vec()].concat(),
        // A number of the header (offsets, shape), with the length fixed up.
        1 => {
            let h = fuzzkit::replace_number(header, rng);
            [(h.len() as u64).to_le_bytes().to_vec(), h, data.to_vec()].concat()
        }
        // A non-finite value written into the data.
        2 => {
            let mut v = st.to_vec();
            let p = PATTERNS[rng.below(PATTERNS.len())];
            let at = 8 + n + 2 * rng.below((data.len() - 4) / 2);
            v[at..at + p.len()].copy_from_slice(p);
            v
        }
        3 => [st[..8 + n].to_vec(), fuzzkit::mutate(data, rng)].concat(),
        4 => {
            config = if rng.below(2) == 0 {
                fuzzkit::replace_number(&config, rng)
            } else {
                fuzzkit::mutate(&config, rng)
            };
            st.to_vec()
        }
        _ => fuzzkit::mutate(st, rng),
    };
    (file, config)
}

#[test]
fn fuzz_weights_door() {
    fuzzkit::cap_memory(8);
    let (cases, seed) = (fuzzkit::cases(fuzzkit::DEFAULT_CASES), fuzzkit::seed());
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("f.mgen");
    std::fs::write(&spec, SPEC).unwrap();
    let spec = spec.to_str().unwrap().to_string();
    let st = checkpoint();
    let mut rng = fuzzkit::Rng::new(seed);
    let start = std::time::Instant::now();
    let mut failures = 0;
    for i in 0..cases {
        let (file, config) = mutated(&st, &mut rng);
        std::fs::write(dir.path().join("model.safetensors"), &file).unwrap();
        std::fs::write(dir.path().join("config.json"), &config).unwrap();
        fuzzkit::run_case("weights", i, seed, &file, |_| {
            let runs = [vec!["check", &spec], vec!["run", &spec, "--reference"]];
            failures += fuzzkit::rejected("weights", &runs, |a| common::mgen(a)) as usize;
        });
    }
    eprintln!(
        "weights door: {cases} cases ({failures} rejected) in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

/// A task checkpoint's `mgen.shared` links under mutation (folders, `..`,
/// empty names, bytes that are not names, files that are not there): the
/// task file holds its head and links the model's file, and `mgen check`
/// must end with a result or a coded diagnostic.
#[test]
fn fuzz_task_file_links() {
    let (cases, seed) = (fuzzkit::cases(200), fuzzkit::seed());
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("f.mgen");
    let task_spec = SPEC.replace("finetuned(seed = 2, drift = 0.01)", "\"task.safetensors\"");
    std::fs::write(&spec, task_spec).unwrap();
    let spec = spec.to_str().unwrap().to_string();
    std::fs::write(dir.path().join("model.safetensors"), checkpoint()).unwrap();
    std::fs::write(dir.path().join("config.json"), CONFIG).unwrap();
    let head: Vec<(String, Vec<usize>, Vec<u8>)> = [
        ("classifier.weight", vec![2, 16]),
        ("classifier.bias", vec![2]),
    ]
    .into_iter()
    .map(|(n, s): (&str, Vec<usize>)| {
        (
            n.to_string(),
            s.clone(),
            vec![0u8; 4 * s.iter().product::<usize>()],
        )
    })
    .collect();
    let mut rng = fuzzkit::Rng::new(seed);
    let mut failures = 0;
    for i in 0..cases {
        let link = fuzzkit::mutate(b"model.safetensors,model.safetensors", &mut rng);
        let link = String::from_utf8_lossy(&link).into_owned();
        let meta = std::collections::HashMap::from([("mgen.shared".to_string(), link.clone())]);
        let file = serialize(&head, Some(meta));
        std::fs::write(dir.path().join("task.safetensors"), &file).unwrap();
        fuzzkit::run_case("task links", i, seed, link.as_bytes(), |_| {
            let runs = [vec!["check", &spec]];
            failures += fuzzkit::rejected("task links", &runs, |a| common::mgen(a)) as usize;
        });
    }
    eprintln!("task links: {cases} cases ({failures} rejected)");
}
