//! `mgen compile FILE --emit weights -o DIR`: the generated models as
//! safetensors with Hugging Face names, to inspect or fine-tune elsewhere
//! and to read back with `weights = "DIR/...";`.
//!
//! Layout of `DIR`:
//! - `MODEL.safetensors` per base model: its pre-trained tensors (what the
//!   store materialises, e.g. synthetic ones) — the trunk that tasks sharing
//!   the base use, written once;
//! - `TASK.safetensors` per task: every tensor the generated task model
//!   computes with that is not the base's (its own layers, a
//!   representative task's trunk, its head). Absent tensors are the base's,
//!   which is how a task checkpoint reads in mgen (docs/language.md), so
//!   `model M { weights = "DIR/M.safetensors"; }` and
//!   `task T { weights = "DIR/T.safetensors"; }` give back the generated
//!   task models;
//! - `weights.json`: per file the tensors, per task which tensors it shares
//!   with which tasks, and the `.mgen` lines to paste.
//!
//! Invariants: in area mode a matrix computed as base + delta is written
//! as that sum (the effective weight), under its own name; the zero biases
//! of the delta MVMs are not written. Files are written atomically.

use crate::diag::{Code, Diagnostic, Diags};
use crate::ir::{Module, Op};
use crate::weights::{Store, layout};
use ndarray::ArrayD;
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

fn bug(e: String) -> Diags {
    Diagnostic::internal(e).into()
}

fn io_err(what: String) -> Diags {
    Diagnostic::error(Code::E105, what).into()
}

/// Each task's tensors as the generated model computes with them: name →
/// (digests that make it up, summed). Workload order.
fn task_tensors(m: &Module) -> Vec<BTreeMap<String, Vec<String>>> {
    let n = m.spec.workload.tasks.len();
    let mut out: Vec<BTreeMap<String, Vec<String>>> = vec![BTreeMap::new(); n];
    for node in m.graph.node_weights() {
        for (k, p) in node.params.iter().enumerate() {
            let param = &m.params[p];
            // Area mode: the zero bias of a delta MVM is no tensor of the model.
            if matches!(node.op, Op::Linear)
                && k == 1
                && node
                    .params
                    .first()
                    .is_some_and(|w| m.params[w].bits.is_some())
            {
                continue;
            }
            let name = param
                .name
                .strip_suffix(".delta")
                .filter(|_| param.bits.is_some())
                .unwrap_or(&param.name)
                .to_string();
            for t in node.tasks.iter() {
                let e = out[t].entry(name.clone()).or_default();
                if !e.contains(&param.digest) {
                    e.push(param.digest.clone());
                }
            }
        }
    }
    for per in &mut out {
        for v in per.values_mut() {
            // The base's part first, then the delta: a fixed summation order.
            v.sort_by_key(|d| {
                m.params
                    .iter()
                    .find(|p| &p.digest == d)
                    .and_then(|p| p.bits)
            });
        }
    }
    out
}

fn materialise(store: &Store, parts: &[String]) -> Result<Arc<ArrayD<f32>>, Diags> {
    let mut it = parts.iter();
    let first = it
        .next()
        .ok_or_else(|| bug("a tensor with no parts".into()))?;
    let mut t = store.tensor(first).map_err(bug)?;
    for d in it {
        let more = store.tensor(d).map_err(bug)?;
        if more.shape() != t.shape() {
            return Err(bug(format!(
                "the parts of a tensor differ in shape: {:?} and {:?}",
                t.shape(),
                more.shape()
            )));
        }
        t = Arc::new(&*t + &*more);
    }
    Ok(t)
}

/// Writes named f32 tensors as one safetensors file, atomically.
pub fn write_file(path: &Path, tensors: &BTreeMap<String, Arc<ArrayD<f32>>>) -> Result<(), Diags> {
    let owned: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                t.shape().to_vec(),
                t.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, s, b)| TensorView::new(Dtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<Result<_, _>>()
        .map_err(|e| io_err(format!("cannot encode `{}`: {e}", path.display())))?;
    let bytes = safetensors::tensor::serialize(views, None)
        .map_err(|e| io_err(format!("cannot encode `{}`: {e}", path.display())))?;
    mgen_util::fs::write_atomic(path, &bytes)
}

/// `weights.json`: what `--emit weights` wrote. Fields are declared in the
/// order they are written (sorted, as the file has always had them).
#[derive(Debug, Clone, serde::Serialize)]
pub struct WeightsSummary {
    /// Always `mgen-weights`.
    pub format: &'static str,
    /// `.mgen` lines that read the files back.
    pub mgen: String,
    /// Per base model: its file.
    pub models: BTreeMap<String, ModelFile>,
    /// Per task: its file of own tensors.
    pub tasks: BTreeMap<String, TaskFile>,
    pub version: u32,
}

/// A base model's file and the tensors in it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelFile {
    pub file: String,
    pub tensors: Vec<String>,
}

/// A task's file: the tensors that are not its base's, how many it reads
/// from the base, and which tensors other tasks compute with too.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskFile {
    pub base: String,
    pub file: String,
    pub from_base: usize,
    pub shared_with: BTreeMap<String, Vec<String>>,
    pub tensors: Vec<String>,
}

impl WeightsSummary {
    /// Every file written, models first.
    pub fn files(&self) -> Vec<&str> {
        let models = self.models.values().map(|f| f.file.as_str());
        models
            .chain(self.tasks.values().map(|f| f.file.as_str()))
            .collect()
    }
}

/// Writes the generated models into `dir` (see the module docs); returns
/// the `weights.json` summary.
pub fn write_weights(m: &Module, store: &Store, dir: &Path) -> Result<WeightsSummary, Diags> {
    std::fs::create_dir_all(dir)
        .map_err(|e| io_err(format!("cannot create `{}`: {e}", dir.display())))?;
    let spec = &m.spec;
    let per_task = task_tensors(m);
    let names = m.task_names();
    // Base models used by the workload, with every base tensor some task reads.
    let mut models: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for &st in &spec.workload.tasks {
        let task = &spec.tasks[st];
        let e = models.entry(task.base).or_default();
        for ts in layout(&spec.models[task.base], &task.head) {
            if store.base_digest(task.base, &ts.name).is_some() {
                e.insert(ts.name);
            }
        }
    }
    let mut files = BTreeMap::new();
    for (&mi, tensor_names) in &models {
        let mut ts = BTreeMap::new();
        for n in tensor_names {
            if let Some(d) = store.base_digest(mi, n) {
                ts.insert(n.clone(), store.tensor(d).map_err(bug)?);
            }
        }
        let file = format!("{}.safetensors", spec.models[mi].name);
        write_file(&dir.join(&file), &ts)?;
        let tensors = ts.keys().cloned().collect();
        files.insert(spec.models[mi].name.clone(), ModelFile { file, tensors });
    }
    let mut tasks = BTreeMap::new();
    let mut snippet = String::new();
    for (t, tensors) in per_task.iter().enumerate() {
        let st = spec.workload.tasks[t];
        let mi = spec.tasks[st].base;
        let mut own = BTreeMap::new();
        let mut shared_with: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, parts) in tensors {
            let is_base = parts.len() == 1 && store.base_digest(mi, name) == Some(&parts[0]);
            if !is_base {
                own.insert(name.clone(), materialise(store, parts)?);
            }
            let others: Vec<String> = (0..per_task.len())
                .filter(|&u| u != t && per_task[u].get(name) == Some(parts))
                .map(|u| names[u].to_string())
                .collect();
            if !others.is_empty() {
                shared_with.insert(name.clone(), others);
            }
        }
        let file = format!("{}.safetensors", names[t]);
        write_file(&dir.join(&file), &own)?;
        snippet += &format!(
            "task {} {{ weights = \"{}\"; }}   // base = {}\n",
            names[t],
            dir.join(&file).display(),
            spec.models[mi].name
        );
        let entry = TaskFile {
            base: spec.models[mi].name.clone(),
            file,
            from_base: tensors.len() - own.len(),
            shared_with,
            tensors: own.keys().cloned().collect(),
        };
        tasks.insert(names[t].to_string(), entry);
    }
    for mi in models.keys() {
        snippet = format!(
            "model {} {{ weights = \"{}\"; }}\n",
            spec.models[*mi].name,
            dir.join(format!("{}.safetensors", spec.models[*mi].name))
                .display()
        ) + &snippet;
    }
    let summary = WeightsSummary {
        format: "mgen-weights",
        mgen: snippet,
        models: files,
        tasks,
        version: 1,
    };
    mgen_util::fs::write_atomic(
        &dir.join("weights.json"),
        (serde_json::to_string_pretty(&summary).unwrap_or_default() + "\n").as_bytes(),
    )?;
    Ok(summary)
}
