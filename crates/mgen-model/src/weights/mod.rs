//! Weights: the tensor layout of a BERT task model, deterministic synthetic
//! weights, safetensors checkpoints, and content digests.
//!
//! The layout ([`layout`]) is the block description's tensors
//! ([`crate::ir::bert`]), in its stage, step and param order, so the store
//! registers exactly the tensors lowering asks for.
//!
//! A [`Store`] is built from a checked spec before lowering. It knows, for
//! every tensor of every task of the workload, its digest (equal digests ⇔
//! equal contents) and a [`Recipe`] to materialise it; tensors are
//! generated or read lazily, once per digest, and cached.
//!
//! Synthetic weights (`synthetic(seed = S)`): every tensor has its own
//! random stream keyed by (S, tensor name) — see [`rng::Rng::keyed`] — so
//! the same seed gives bit-identical weights on every machine. Matrices and
//! embeddings ~ 0.04·z, LayerNorm gains 1 + 0.05·z, biases and LayerNorm
//! shifts 0.02·z (z approximately standard normal).
//!
//! Fine-tuned weights (`finetuned(seed = S, drift = D)`): base + δ where δ
//! is sparse (a quarter of the entries, chosen by the stream) and scaled so
//! that ‖δ‖/‖W‖ ≈ D·p, with a depth profile p that grows with the layer:
//! p = 0.25 for the embeddings, 0.25 + 1.5·l/(L−1) for encoder layer l of L
//! (the mean over layers is 1), 1.75 for the pooler. Task heads
//! (`classifier.*`) absent from a checkpoint are drawn from the task's seed
//! (weight ~ (3/√h)·z), then centred and scaled on probe inputs run through
//! the task's own model so that their outputs vary with the input (see
//! [`Store::head_pair`]); their digest covers the body's digests.

pub mod checkpoint;
pub use mgen_util::rng;

use crate::diag::{Code, Diagnostic, Diags};
use crate::ir::bert::{self, Stage};
use crate::spec::{Head, Model, Pool, Spec, WeightSource};
use checkpoint::Checkpoint;
use ndarray::{ArrayD, IxDyn};
use rng::Rng;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Which part of the model a tensor belongs to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Part {
    Embedding,
    Layer(u64),
    Pooler,
    Classifier,
}

/// One tensor of a task model.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<u64>,
    pub part: Part,
}

/// Every tensor a task model with this base and head needs, with Hugging
/// Face names: the tensors of the block description
/// ([`crate::ir::bert::model`]) in stage, step and param order.
pub fn layout(m: &Model, head: &Head) -> Vec<TensorSpec> {
    let mut v = Vec::new();
    for b in bert::model(m, head) {
        let part = Part::of(b.stage);
        for t in b.steps.into_iter().flat_map(|s| s.params) {
            v.push(TensorSpec {
                name: t.name,
                shape: t.shape,
                part,
            });
        }
    }
    v
}

impl Part {
    /// The part a stage's tensors belong to.
    pub fn of(stage: Stage) -> Part {
        match stage {
            Stage::Embeddings => Part::Embedding,
            Stage::Encoder(l) => Part::Layer(l),
            Stage::Pool => Part::Pooler,
            Stage::Head => Part::Classifier,
        }
    }
}

/// Depth profile of fine-tuning drift (see the module docs).
pub fn drift_profile(part: Part, layers: u64) -> f64 {
    match part {
        Part::Embedding => 0.25,
        Part::Layer(l) if layers > 1 => 0.25 + 1.5 * l as f64 / (layers - 1) as f64,
        Part::Layer(_) => 1.0,
        Part::Pooler | Part::Classifier => 1.75,
    }
}

/// Probe requests a synthesised head is centred on.
pub const PROBE_REQUESTS: usize = 16;
/// Tokens per probe request (at most the model's `max_seq`).
pub const PROBE_SEQ: usize = 16;
/// Standard deviation of a centred head's outputs over the probes.
pub const HEAD_SPREAD: f64 = 2.0;
/// Keys the probes' stream apart from the workload's synthetic inputs.
const PROBE_KEY: u64 = 0x5052_4f42_4553_0001;

/// The fraction of entries a fine-tuning delta touches.
pub const DELTA_DENSITY: f64 = 0.25;

/// 16 hex digits of SHA-256 over length-prefixed parts.
pub fn digest_of(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    let d = h.finalize();
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// How to materialise a tensor.
#[derive(Debug, Clone)]
pub enum Recipe {
    Synthetic {
        seed: u64,
        name: String,
        shape: Vec<u64>,
    },
    Finetuned {
        base: String,
        seed: u64,
        drift: f64,
        factor: f64,
        name: String,
    },
    /// A synthesised task head, centred on probe inputs (see [`Store::head_pair`]).
    Head {
        seed: u64,
        name: String,
        shape: Vec<u64>,
        /// Spec task index (its body tensors are looked up by name).
        task: usize,
        model: Box<Model>,
        head: Head,
    },
    File {
        path: PathBuf,
        name: String,
    },
    /// Area mode's delta of a task matrix from its base: `task − base`
    /// quantised per output row to `bits` ([`quantize_delta`]) and
    /// dequantised, so the crossbars hold it exactly at that width.
    Delta {
        task: String,
        base: String,
        bits: u32,
    },
    /// A zero vector (the bias of area mode's delta MVMs).
    Zeros {
        len: u64,
    },
}

/// Quantises a delta per output row to `bits` and back: the row's scale
/// is `r · max|Δ_row| / (2^(bits−1) − 1)` with one clipping ratio `r` per
/// matrix (from 1 down to 0.1 in 19 steps), the one with the smallest
/// squared error over every 8th row. Fine-tuning deltas have long tails,
/// so clipping keeps far more of them than the max-abs scale (which, at 2
/// bits, rounds almost every entry to zero). Re-quantising the result per
/// row with a max-abs scale gives back the same integers, since the
/// clipped entries sit at `±(2^(bits−1) − 1)`.
pub fn quantize_delta(d: ndarray::ArrayView2<f32>, bits: u32) -> ndarray::Array2<f32> {
    let qmax = ((1i32 << (bits - 1)) - 1).max(1) as f32;
    let maxes: Vec<f32> = d
        .rows()
        .into_iter()
        .map(|r| r.fold(0.0f32, |a, &b| a.max(b.abs())))
        .collect();
    let q = |x: f32, s: f32| (x / s).round().clamp(-qmax, qmax) * s;
    let error = |ratio: f32| -> f64 {
        d.rows()
            .into_iter()
            .zip(&maxes)
            .step_by(8)
            .filter(|(_, m)| **m > 0.0)
            .map(|(r, m)| {
                let s = ratio * m / qmax;
                r.iter()
                    .map(|&x| ((q(x, s) - x) as f64).powi(2))
                    .sum::<f64>()
            })
            .sum()
    };
    let mut best = (error(1.0), 1.0f32);
    for k in 1..19 {
        let ratio = 1.0 - k as f32 * 0.05;
        let e = error(ratio);
        if e < best.0 {
            best = (e, ratio);
        }
    }
    let mut out = d.to_owned();
    for (mut r, m) in out.rows_mut().into_iter().zip(&maxes) {
        if *m > 0.0 {
            let s = best.1 * m / qmax;
            r.mapv_inplace(|x| q(x, s));
        }
    }
    out
}

/// Whether a tensor name is a static-weight matrix of an encoder layer or
/// the pooler (what area mode stores as base + delta).
pub fn is_block_matrix(name: &str) -> bool {
    (name.starts_with("encoder.layer.") && name.ends_with(".weight") && !name.contains("LayerNorm"))
        || name == "pooler.dense.weight"
}

/// A centred head: (classifier weight, classifier bias).
type HeadPair = (Arc<ArrayD<f32>>, Arc<ArrayD<f32>>);

/// Digests, recipes and the tensor cache of one spec.
pub struct Store {
    recipes: HashMap<String, Recipe>,
    files: HashMap<PathBuf, Arc<Checkpoint>>,
    cache: Mutex<HashMap<String, Arc<ArrayD<f32>>>>,
    /// (spec task index, tensor name) → (digest, source model or task).
    by_task: HashMap<(usize, String), (String, String)>,
    /// (spec model index, tensor name) → digest of the pre-trained tensor.
    by_model: HashMap<(usize, String), String>,
    /// Centred heads, per spec task: (weight, bias).
    heads: Mutex<HashMap<usize, HeadPair>>,
    /// Area mode: task matrix digest → (base digest, delta digest).
    deltas: HashMap<String, (String, String)>,
    /// Area mode: length → digest of a zero vector.
    zeros: HashMap<u64, String>,
    /// Digests of tensors the generator registered ([`Store::register`]).
    generated: Mutex<std::collections::HashSet<String>>,
    /// Things the report should say (e.g. a head synthesised from a seed).
    pub notes: Vec<String>,
}

/// The diagnostic code of a checkpoint error.
fn code_of(e: &checkpoint::Error) -> Code {
    match e {
        checkpoint::Error::Io(_) => Code::E201,
        checkpoint::Error::Config(_) => Code::E206,
        checkpoint::Error::NonFinite(..) => Code::E211,
        checkpoint::Error::TooLarge(_) | checkpoint::Error::Format(_) => Code::E202,
    }
}

pub fn seed_of_name(name: &str) -> u64 {
    let d = Sha256::digest(name.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b) >> 11
}

impl Store {
    /// Resolves every tensor of every workload task. File checkpoints are
    /// read and checked here (names, shapes, dtypes, `config.json`), with
    /// diagnostics at the `weights = ...` line.
    pub fn for_spec(spec: &Spec) -> Result<Store, Diags> {
        let mut s = Store {
            recipes: HashMap::new(),
            files: HashMap::new(),
            cache: Mutex::new(HashMap::new()),
            by_task: HashMap::new(),
            by_model: HashMap::new(),
            heads: Mutex::new(HashMap::new()),
            deltas: HashMap::new(),
            zeros: HashMap::new(),
            generated: Mutex::new(Default::default()),
            notes: Vec::new(),
        };
        let mut diags = Diags::default();
        let root = PathBuf::from(&spec.root);
        for &t in &spec.workload.tasks {
            if let Err(d) = s.register_task(spec, &root, t) {
                diags.extend(d);
            }
        }
        if let Some(area) = spec.workload.area {
            let mut keys: Vec<&(usize, String)> = s.by_task.keys().collect();
            keys.sort();
            let mut new = Vec::new();
            for key in keys {
                let (t, name) = key;
                let (digest, _) = &s.by_task[key];
                if !is_block_matrix(name) {
                    continue;
                }
                let task = &spec.tasks[*t];
                let Some(rows) = layout(&spec.models[task.base], &task.head)
                    .into_iter()
                    .find(|ts| &ts.name == name)
                    .map(|ts| ts.shape[0])
                else {
                    continue;
                };
                let Some(base) = s.by_model.get(&(spec.tasks[*t].base, name.clone())) else {
                    continue;
                };
                if base == digest || s.deltas.contains_key(digest) {
                    continue;
                }
                let bits = area.delta_bits;
                let d = digest_of(&["delta-clipped-v1", digest, base, &bits.to_string()]);
                if let std::collections::hash_map::Entry::Vacant(e) = s.zeros.entry(rows) {
                    let z = digest_of(&["zeros-v1", &rows.to_string()]);
                    e.insert(z.clone());
                    new.push((z, Recipe::Zeros { len: rows }));
                }
                s.deltas.insert(digest.clone(), (base.clone(), d.clone()));
                new.push((
                    d,
                    Recipe::Delta {
                        task: digest.clone(),
                        base: base.clone(),
                        bits,
                    },
                ));
            }
            s.recipes.extend(new);
        }
        diags.dedup();
        if diags.is_empty() { Ok(s) } else { Err(diags) }
    }

    fn at(spec: &Spec, key: &str, d: Diagnostic, label: &str) -> Diagnostic {
        match spec.loc(key) {
            Some(l) => d.at(l.file, l.span.clone(), label),
            None => d,
        }
    }

    fn file(
        &mut self,
        spec: &Spec,
        root: &Path,
        path: &str,
        key: &str,
    ) -> Result<Arc<Checkpoint>, Diags> {
        let full = root.join(path);
        if let Some(c) = self.files.get(&full) {
            return Ok(c.clone());
        }
        let c = Checkpoint::open(&full).map_err(|e| {
            let code = code_of(&e);
            let mut d = Self::at(spec, key, Diagnostic::error(code, format!("checkpoint `{}`: {e}", full.display())), "these weights");
            if code == Code::E201 {
                d = d.help("`scripts/fetch-weights.sh` fetches the bundled examples' checkpoints; paths are relative to the .mgen file");
            }
            Diags::from(d)
        })?;
        let c = Arc::new(c);
        self.files.insert(full, c.clone());
        Ok(c)
    }

    /// The files a task checkpoint links for the tensors it shares with
    /// other tasks ([`checkpoint::SHARED_KEY`]), opened.
    fn linked(
        &mut self,
        spec: &Spec,
        c: &Checkpoint,
        key: &str,
    ) -> Result<Vec<Arc<Checkpoint>>, Diags> {
        let paths = c.links().map_err(|e| {
            let d = Diagnostic::error(
                code_of(&e),
                format!("checkpoint `{}`: {e}", c.path.display()),
            );
            Diags::from(Self::at(spec, key, d, "these weights"))
        })?;
        let mut out = Vec::with_capacity(paths.len());
        for p in paths {
            if let Some(f) = self.files.get(&p) {
                out.push(f.clone());
                continue;
            }
            let f = Checkpoint::open(&p).map_err(|e| {
                let msg = format!("checkpoint `{}`: {e}", p.display());
                let d = Self::at(spec, key, Diagnostic::error(code_of(&e), msg), "these weights")
                    .note(format!(
                        "`{}` links it for the tensors it shares with other tasks (`--emit weights` writes such files side by side)",
                        c.path.display()
                    ));
                Diags::from(d)
            })?;
            let f = Arc::new(f);
            self.files.insert(p, f.clone());
            out.push(f);
        }
        Ok(out)
    }

    fn check_config(spec: &Spec, m: &Model, c: &Checkpoint) -> Result<(), Diags> {
        let Some(cfg) = &c.config else { return Ok(()) };
        let mut diags = Diags::default();
        let key = format!("model {}", m.name);
        for (json, attr, declared) in [
            ("hidden_size", "hidden", m.hidden),
            ("num_hidden_layers", "layers", m.layers),
            ("num_attention_heads", "heads", m.heads),
            ("intermediate_size", "ffn", m.ffn),
            ("vocab_size", "vocab", m.vocab),
            ("max_position_embeddings", "max_seq", m.max_seq),
            ("type_vocab_size", "type_vocab", m.type_vocab),
        ] {
            let Some(value) = cfg.get(json) else { continue };
            let Some(v) = value.as_u64() else {
                diags.push(Self::config_number(spec, m, c, json, value));
                continue;
            };
            if v != declared {
                let loc_key = if spec.loc(&format!("{key}.{attr}")).is_some() {
                    format!("{key}.{attr}")
                } else {
                    format!("{key}.weights")
                };
                diags.push(
                    Self::at(
                        spec,
                        &loc_key,
                        Diagnostic::error(Code::E206, format!("model `{}` declares {attr} = {declared}, but its config.json says {json} = {v}", m.name)),
                        "disagrees with config.json",
                    )
                    .note(format!("config: {}", c.path.with_file_name("config.json").display())),
                );
            }
        }
        if let Some(value) = cfg.get("layer_norm_eps")
            && !value.as_f64().is_some_and(|e| e.is_finite() && e > 0.0)
        {
            diags.push(Self::config_number(spec, m, c, "layer_norm_eps", value));
        }
        if let Some(act) = cfg.get("hidden_act").and_then(|v| v.as_str())
            && act != "gelu"
        {
            diags.push(Self::at(
                spec,
                &format!("{key}.weights"),
                Diagnostic::error(Code::E206, format!("config.json says hidden_act = \"{act}\"; mgen's BERT uses the erf GELU (\"gelu\")")),
                "unsupported activation",
            ));
        }
        if diags.is_empty() { Ok(()) } else { Err(diags) }
    }

    /// A config.json number of the wrong form (the seven sizes must be
    /// whole non-negative numbers, `layer_norm_eps` a positive number).
    fn config_number(
        spec: &Spec,
        m: &Model,
        c: &Checkpoint,
        json: &str,
        value: &serde_json::Value,
    ) -> Diagnostic {
        let want = if json == "layer_norm_eps" {
            "a finite positive number"
        } else {
            "a whole non-negative number"
        };
        let mut shown = value.to_string();
        if shown.len() > 40 {
            shown = format!("{}...", shown.chars().take(40).collect::<String>());
        }
        Self::at(
            spec,
            &format!("model {}.weights", m.name),
            Diagnostic::error(
                Code::E206,
                format!("config.json says {json} = {shown}; it must be {want}"),
            ),
            "these weights",
        )
        .note(format!(
            "config: {}",
            c.path.with_file_name("config.json").display()
        ))
    }

    fn check_entry(
        spec: &Spec,
        key: &str,
        c: &Checkpoint,
        ts: &TensorSpec,
    ) -> Result<Option<String>, Diags> {
        let Some(e) = c.entries.get(&ts.name) else {
            return Ok(None);
        };
        if e.shape != ts.shape {
            return Err(Self::at(
                spec,
                key,
                Diagnostic::error(
                    Code::E204,
                    format!(
                        "tensor `{}` in `{}` has shape {:?}; the declaration needs {:?}",
                        e.stored,
                        c.path.display(),
                        e.shape,
                        ts.shape
                    ),
                ),
                "these weights",
            )
            .into());
        }
        if !Checkpoint::readable(e.dtype) {
            return Err(Self::at(
                spec,
                key,
                Diagnostic::error(
                    Code::E205,
                    format!(
                        "tensor `{}` in `{}` has dtype {:?}",
                        e.stored,
                        c.path.display(),
                        e.dtype
                    ),
                ),
                "these weights",
            )
            .help("mgen reads F32, F16 and BF16 tensors")
            .into());
        }
        let digest = c.digest(&ts.name).map_err(|err| {
            let d = Diagnostic::error(
                code_of(&err),
                format!("checkpoint `{}`: {err}", c.path.display()),
            );
            Diags::from(Self::at(spec, key, d, "these weights"))
        })?;
        Ok(Some(digest))
    }

    fn register_task(&mut self, spec: &Spec, root: &Path, t: usize) -> Result<(), Diags> {
        let task = spec.tasks[t].clone();
        let model = spec.models[task.base].clone();
        let mkey = format!("model {}.weights", model.name);
        let tkey = format!("task {}.weights", task.name);
        let base_file = match &model.weights {
            WeightSource::File { path } => {
                let c = self.file(spec, root, path, &mkey)?;
                Self::check_config(spec, &model, &c)?;
                Some(c)
            }
            _ => None,
        };
        let task_file = match &task.weights {
            WeightSource::File { path } => Some(self.file(spec, root, path, &tkey)?),
            _ => None,
        };
        let linked = match &task_file {
            Some(c) => self.linked(spec, c, &tkey)?,
            None => Vec::new(),
        };
        let task_seed = match task.weights {
            WeightSource::Finetuned { seed, .. } | WeightSource::Synthetic { seed } => seed,
            WeightSource::File { .. } => seed_of_name(&task.name),
        };
        let mut synthesized_head = false;
        let mut synthesized_pooler = false;
        let mut pending_heads: Vec<TensorSpec> = Vec::new();
        for ts in layout(&model, &task.head) {
            let mut in_task_file = None;
            for c in task_file.iter().chain(&linked) {
                in_task_file = self.file_tensor(spec, &tkey, c, &ts)?;
                if in_task_file.is_some() {
                    break;
                }
            }
            let (digest, source) = if ts.part == Part::Classifier {
                match in_task_file {
                    Some(d) => (d, task.name.clone()),
                    None => {
                        // Registered below, once the body's digests are known.
                        synthesized_head |= task_file.is_some();
                        pending_heads.push(ts.clone());
                        continue;
                    }
                }
            } else {
                // The base's tensor: from its checkpoint, or synthetic (a
                // model file without a pooler gets a synthetic one).
                let from_base_file = match &base_file {
                    Some(c) => self.file_tensor(spec, &mkey, c, &ts)?,
                    None => None,
                };
                let base = match (from_base_file, &base_file) {
                    (Some(d), _) => d,
                    (None, Some(c)) if ts.part != Part::Pooler => {
                        return Err(Self::at(
                            spec,
                            &mkey,
                            Diagnostic::error(
                                Code::E203,
                                format!(
                                    "`{}` has no tensor `{}` (nor `bert.{}`)",
                                    c.path.display(),
                                    ts.name,
                                    ts.name
                                ),
                            ),
                            "these weights",
                        )
                        .note(format!(
                            "a {}-layer BERT needs {} tensors; see docs/language.md, \"Weights\"",
                            model.layers,
                            layout(&model, &Head::Embed { pool: Pool::Mean }).len()
                        ))
                        .into());
                    }
                    (None, file) => {
                        synthesized_pooler |= file.is_some();
                        // The checker allows only `synthetic(...)` or a path for a model.
                        let seed = match model.weights {
                            WeightSource::Synthetic { seed }
                            | WeightSource::Finetuned { seed, .. } => seed,
                            WeightSource::File { .. } => seed_of_name(&model.name),
                        };
                        self.recipe(
                            &[
                                "synthetic",
                                &seed.to_string(),
                                &ts.name,
                                &format!("{:?}", ts.shape),
                            ],
                            Recipe::Synthetic {
                                seed,
                                name: ts.name.clone(),
                                shape: ts.shape.clone(),
                            },
                        )
                    }
                };
                self.by_model
                    .insert((task.base, ts.name.clone()), base.clone());
                match (&task.weights, in_task_file) {
                    (WeightSource::Finetuned { seed, drift }, _) if *drift != 0.0 => {
                        let d = digest_of(&[
                            "finetuned",
                            &base,
                            &seed.to_string(),
                            &drift.to_bits().to_string(),
                            &ts.name,
                        ]);
                        self.recipes.insert(
                            d.clone(),
                            Recipe::Finetuned {
                                base,
                                seed: *seed,
                                drift: *drift,
                                factor: drift_profile(ts.part, model.layers),
                                name: ts.name.clone(),
                            },
                        );
                        (d, task.name.clone())
                    }
                    (_, Some(d)) if d != base => (d, task.name.clone()),
                    _ => (base, model.name.clone()),
                }
            };
            self.by_task.insert((t, ts.name.clone()), (digest, source));
        }
        // A synthesised head depends on the body it is centred on: its
        // digest covers every body tensor's digest.
        let body: Vec<String> = layout(&model, &task.head)
            .iter()
            .filter(|ts| ts.part != Part::Classifier)
            .filter_map(|ts| self.by_task.get(&(t, ts.name.clone())).map(|d| d.0.clone()))
            .collect();
        let body_refs: Vec<&str> = body.iter().map(String::as_str).collect();
        let body_digest = digest_of(&body_refs);
        for ts in pending_heads {
            let d = self.recipe(
                &[
                    "head-centred-v1",
                    &task_seed.to_string(),
                    &ts.name,
                    &format!("{:?}", ts.shape),
                    &format!("{:?}", task.head),
                    &body_digest,
                ],
                Recipe::Head {
                    seed: task_seed,
                    name: ts.name.clone(),
                    shape: ts.shape.clone(),
                    task: t,
                    model: Box::new(model.clone()),
                    head: task.head,
                },
            );
            self.by_task
                .insert((t, ts.name.clone()), (d, task.name.clone()));
        }
        if synthesized_head {
            self.notes.push(format!("task `{}`: no classifier in its checkpoint; the head was synthesised from seed {task_seed}", task.name));
        }
        if synthesized_pooler {
            self.notes.push(format!(
                "model `{}`: no pooler in its checkpoint; `pooler.dense` was synthesised",
                model.name
            ));
        }
        Ok(())
    }

    /// Registers a generated tensor under the digest of `parts`.
    fn recipe(&mut self, parts: &[&str], r: Recipe) -> String {
        let d = digest_of(parts);
        self.recipes.insert(d.clone(), r);
        d
    }

    /// A tensor of a checkpoint, checked and registered, if the file has it.
    fn file_tensor(
        &mut self,
        spec: &Spec,
        key: &str,
        c: &Checkpoint,
        ts: &TensorSpec,
    ) -> Result<Option<String>, Diags> {
        let d = Self::check_entry(spec, key, c, ts)?;
        if let Some(d) = &d {
            self.recipes.insert(
                d.clone(),
                Recipe::File {
                    path: c.path.clone(),
                    name: ts.name.clone(),
                },
            );
        }
        Ok(d)
    }

    /// The digest and source of a task's tensor (spec task index).
    pub fn lookup(&self, task: usize, name: &str) -> Option<&(String, String)> {
        self.by_task.get(&(task, name.to_string()))
    }

    /// The digest of the pre-trained (base model) tensor `name` of spec
    /// model `model`, if the workload uses it.
    pub fn base_digest(&self, model: usize, name: &str) -> Option<&String> {
        self.by_model.get(&(model, name.to_string()))
    }

    /// Area mode: the (base digest, delta digest) of a task matrix, when
    /// the workload asks for area mode and the matrix differs from its base.
    pub fn delta_of(&self, task_digest: &str) -> Option<&(String, String)> {
        self.deltas.get(task_digest)
    }

    /// Area mode: the digest of a zero vector of `len` (a delta's bias).
    pub fn zeros_of(&self, len: u64) -> Option<&String> {
        self.zeros.get(&len)
    }

    /// A task's tensor by name (spec task index), materialised.
    pub fn task_tensor(&self, task: usize, name: &str) -> Result<Arc<ArrayD<f32>>, String> {
        let (d, _) = self
            .lookup(task, name)
            .ok_or_else(|| format!("task has no tensor `{name}`"))?;
        self.tensor(d)
    }

    /// A synthesised head, centred and scaled on probe inputs: the
    /// classifier is first drawn from the task's seed (weight ~ (3/√h)·z),
    /// then the task's own model is run on [`PROBE_REQUESTS`] synthetic
    /// probe requests of [`PROBE_SEQ`] tokens; the weight rows are
    /// projected onto the span of the probes' centred features (so the
    /// head reads what varies with the input, as a trained head does, not
    /// the large constant part of random features); the bias is set so that
    /// every output's mean over the probes is 0 and the weight and bias are
    /// scaled so the outputs' standard deviation over the probes is
    /// [`HEAD_SPREAD`]. Without this, a random head on random features
    /// predicts the same class for every input, and an agreement budget
    /// would measure nothing.
    fn head_pair(
        &self,
        seed: u64,
        task: usize,
        model: &Model,
        head: &Head,
        shape: &[u64],
    ) -> Result<HeadPair, String> {
        if let Some(p) = self
            .heads
            .lock()
            .map_err(|_| "head cache poisoned".to_string())?
            .get(&task)
        {
            return Ok(p.clone());
        }
        use rayon::prelude::*;
        let h = *shape.last().unwrap_or(&1) as usize;
        let n = shape.first().copied().unwrap_or(1) as usize;
        let mut rng = Rng::keyed(seed, "head:classifier.weight");
        let std = 3.0 / (h as f64).sqrt();
        let w0 = fill(&[n as u64, h as u64], || (std * rng.normal()) as f32);
        let seq = (PROBE_SEQ as u64).min(model.max_seq) as usize;
        let probes = crate::data::synthetic(seed ^ PROBE_KEY, PROBE_REQUESTS, seq, model.vocab);
        let get = |name: &str| self.task_tensor(task, name);
        let feats: Result<Vec<Vec<f32>>, String> = probes
            .par_iter()
            .map(|r| {
                let mask = r.mask();
                let req = crate::forward::Req {
                    ids: &r.ids,
                    mask: &mask,
                };
                let mut x = None;
                for b in 0..crate::forward::blocks(model) {
                    x = Some(crate::forward::block(model, b, &get, x.as_ref(), &req)?);
                }
                let f = crate::forward::features(head, &get, x.as_ref().ok_or("no blocks")?, &req)?;
                Ok(f.iter().copied().collect())
            })
            .collect();
        let feats = feats?;
        // Read the input-dependent part of the features, as a trained head
        // would: project the random rows onto the span of the probes'
        // centred features (Gram-Schmidt in f64, probe order).
        let p_n = feats.len();
        let fmean: Vec<f64> = (0..h)
            .map(|k| feats.iter().map(|f| f[k] as f64).sum::<f64>() / p_n.max(1) as f64)
            .collect();
        let mut basis: Vec<Vec<f64>> = Vec::new();
        for f in &feats {
            let mut v: Vec<f64> = (0..h).map(|k| f[k] as f64 - fmean[k]).collect();
            for _ in 0..2 {
                for b in &basis {
                    let d: f64 = v.iter().zip(b).map(|(x, y)| x * y).sum();
                    v.iter_mut().zip(b).for_each(|(x, y)| *x -= d * y);
                }
            }
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm > 1e-9 {
                basis.push(v.into_iter().map(|x| x / norm).collect());
            }
        }
        // Keep the directions the probes vary most along: the top principal
        // components (as many as the head has outputs) within that span.
        // Quantisation noise spreads over every direction; the input signal
        // concentrates on these, so the head's margins are as robust as
        // the features allow.
        if basis.len() > n {
            let r = basis.len();
            let coords: Vec<Vec<f64>> = feats
                .iter()
                .map(|f| {
                    basis
                        .iter()
                        .map(|b| (0..h).map(|k| (f[k] as f64 - fmean[k]) * b[k]).sum())
                        .collect()
                })
                .collect();
            let mut cov = vec![vec![0.0f64; r]; r];
            for c in &coords {
                for i in 0..r {
                    for j in 0..r {
                        cov[i][j] += c[i] * c[j];
                    }
                }
            }
            let (vals, vecs) = jacobi_eigen(cov);
            let mut idx: Vec<usize> = (0..r).collect();
            idx.sort_by(|&a, &b| vals[b].total_cmp(&vals[a]).then(a.cmp(&b)));
            basis = idx[..n]
                .iter()
                .map(|&e| {
                    let mut v = vec![0.0f64; h];
                    for (i, b) in basis.iter().enumerate() {
                        let w = vecs[i][e];
                        v.iter_mut().zip(b).for_each(|(x, y)| *x += w * y);
                    }
                    v
                })
                .collect();
        }
        let mut w0 = w0;
        if !basis.is_empty() {
            for c in 0..n {
                let row: Vec<f64> = (0..h).map(|k| w0[[c, k]] as f64).collect();
                let mut proj = vec![0.0f64; h];
                for b in &basis {
                    let d: f64 = row.iter().zip(b).map(|(x, y)| x * y).sum();
                    proj.iter_mut().zip(b).for_each(|(x, y)| *x += d * y);
                }
                for k in 0..h {
                    w0[[c, k]] = proj[k] as f32;
                }
            }
        }
        // Outputs on the probes, in f64.
        let outs: Vec<Vec<f64>> = feats
            .iter()
            .map(|f| {
                (0..n)
                    .map(|c| (0..h).map(|k| w0[[c, k]] as f64 * f[k] as f64).sum::<f64>())
                    .collect()
            })
            .collect();
        let p = outs.len().max(1) as f64;
        let mean: Vec<f64> = (0..n)
            .map(|c| outs.iter().map(|o| o[c]).sum::<f64>() / p)
            .collect();
        let var = outs
            .iter()
            .flat_map(|o| o.iter().zip(&mean).map(|(v, m)| (v - m) * (v - m)))
            .sum::<f64>()
            / (p * n as f64);
        let k = if var > 1e-24 {
            HEAD_SPREAD / var.sqrt()
        } else {
            1.0
        };
        let w = w0.mapv(|v| (v as f64 * k) as f32);
        let b = ArrayD::from_shape_vec(IxDyn(&[n]), mean.iter().map(|m| (-m * k) as f32).collect())
            .map_err(|e| e.to_string())?;
        let pair = (Arc::new(w), Arc::new(b));
        self.heads
            .lock()
            .map_err(|_| "head cache poisoned".to_string())?
            .insert(task, pair.clone());
        Ok(pair)
    }

    /// Whether a digest is known.
    pub fn knows(&self, digest: &str) -> bool {
        self.recipes.contains_key(digest)
            || self
                .generated
                .lock()
                .map(|g| g.contains(digest))
                .unwrap_or(false)
    }

    /// Registers a tensor the model generator made (a refitted head): it
    /// has no recipe, so it lives in this store only (`--emit weights`
    /// writes it out).
    pub fn register(&self, digest: &str, t: ArrayD<f32>) -> Result<(), String> {
        self.generated
            .lock()
            .map_err(|_| "weight cache poisoned".to_string())?
            .insert(digest.to_string());
        self.cache
            .lock()
            .map_err(|_| "weight cache poisoned".to_string())?
            .insert(digest.to_string(), Arc::new(t));
        Ok(())
    }

    /// Materialises a tensor (cached).
    pub fn tensor(&self, digest: &str) -> Result<Arc<ArrayD<f32>>, String> {
        if let Some(t) = self
            .cache
            .lock()
            .map_err(|_| "weight cache poisoned".to_string())?
            .get(digest)
        {
            return Ok(t.clone());
        }
        let recipe = self
            .recipes
            .get(digest)
            .ok_or_else(|| format!("no weights with digest {digest}"))?;
        let t = Arc::new(self.make(recipe)?);
        self.cache
            .lock()
            .map_err(|_| "weight cache poisoned".to_string())?
            .insert(digest.to_string(), t.clone());
        Ok(t)
    }

    fn make(&self, r: &Recipe) -> Result<ArrayD<f32>, String> {
        match r {
            Recipe::Synthetic { seed, name, shape } => Ok(synthetic(*seed, name, shape)),
            Recipe::Head {
                seed,
                name,
                shape,
                task,
                model,
                head,
            } => {
                let wshape = if name.ends_with(".bias") {
                    vec![shape[0], model.hidden]
                } else {
                    shape.clone()
                };
                let (w, b) = self.head_pair(*seed, *task, model, head, &wshape)?;
                Ok(if name.ends_with(".bias") {
                    (*b).clone()
                } else {
                    (*w).clone()
                })
            }
            Recipe::File { path, name } => {
                let c = self
                    .files
                    .get(path)
                    .ok_or_else(|| format!("checkpoint `{}` not loaded", path.display()))?;
                c.tensor(name)
            }
            Recipe::Finetuned {
                base,
                seed,
                drift,
                factor,
                name,
            } => {
                let b = self.tensor(base)?;
                let n = b.len().max(1) as f64;
                let rms = (b.iter().map(|&x| x as f64 * x as f64).sum::<f64>() / n).sqrt();
                let sigma = drift * factor * rms / DELTA_DENSITY.sqrt();
                let mut rng = Rng::keyed(*seed, &format!("delta:{name}"));
                let mut out = (*b).clone();
                for x in out.iter_mut() {
                    let r = rng.next_u64();
                    // One draw decides both whether the entry moves and by how much.
                    if (r >> 62) == 0 {
                        let mut g = Rng::new(r);
                        *x += (sigma * g.normal()) as f32;
                    }
                }
                Ok(out)
            }
            Recipe::Delta { task, base, bits } => {
                let t = self.tensor(task)?;
                let b = self.tensor(base)?;
                if t.shape() != b.shape() || t.ndim() != 2 {
                    return Err(format!(
                        "a delta needs two matrices of one shape, found {:?} and {:?}",
                        t.shape(),
                        b.shape()
                    ));
                }
                let d = (&*t - &*b)
                    .into_dimensionality::<ndarray::Ix2>()
                    .map_err(|e| e.to_string())?;
                Ok(quantize_delta(d.view(), *bits).into_dyn())
            }
            Recipe::Zeros { len } => Ok(ArrayD::zeros(IxDyn(&[*len as usize]))),
        }
    }
}

/// Eigenvalues and eigenvectors (columns) of a small symmetric matrix, by
/// cyclic Jacobi rotations (deterministic: fixed sweep order).
fn jacobi_eigen(mut a: Vec<Vec<f64>>) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = a.len();
    let mut v: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
        .collect();
    for _ in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        if off < 1e-30 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in a.iter_mut() {
                    let (akp, akq) = (row[p], row[q]);
                    row[p] = c * akp - s * akq;
                    row[q] = s * akp + c * akq;
                }
                let (rp, rq) = (a[p].clone(), a[q].clone());
                for k in 0..n {
                    a[p][k] = c * rp[k] - s * rq[k];
                    a[q][k] = s * rp[k] + c * rq[k];
                }
                for row in v.iter_mut() {
                    let (vkp, vkq) = (row[p], row[q]);
                    row[p] = c * vkp - s * vkq;
                    row[q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i][i]).collect(), v)
}

fn fill(shape: &[u64], mut f: impl FnMut() -> f32) -> ArrayD<f32> {
    let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| f()).collect();
    ArrayD::from_shape_vec(IxDyn(&dims), v).unwrap_or_else(|_| ArrayD::zeros(IxDyn(&dims)))
}

/// A synthetic pre-trained tensor (see the module docs for the scales).
pub fn synthetic(seed: u64, name: &str, shape: &[u64]) -> ArrayD<f32> {
    let mut rng = Rng::keyed(seed, name);
    let (mean, std) = if name.ends_with("LayerNorm.weight") {
        (1.0, 0.05)
    } else if name.ends_with(".bias") {
        (0.0, 0.02)
    } else {
        (0.0, 0.04)
    };
    fill(shape, || (mean + std * rng.normal()) as f32)
}

impl crate::ir::lower::TensorIndex for Store {
    fn lookup(&self, task: usize, name: &str) -> Option<&(String, String)> {
        Store::lookup(self, task, name)
    }
}
