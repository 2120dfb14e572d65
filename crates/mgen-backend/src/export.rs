//! `mgen compile FILE --emit weights -o DIR`: the generated models as
//! safetensors with Hugging Face names, to inspect or fine-tune elsewhere
//! and to read back with `weights = "DIR/...";`.
//!
//! Layout of `DIR`:
//! - `MODEL.safetensors` per base model: its pre-trained tensors (what the
//!   store materialises, e.g. synthetic ones) — the trunk that tasks sharing
//!   the base use, written once;
//! - `shared-K.safetensors` per set of tasks that compute with the same
//!   tensors that are not the base's (a jointly trained trunk, a task's
//!   layers other tasks share): those tensors, written once;
//! - `TASK.safetensors` per task: the tensors the generated task model
//!   computes with that are its alone (its own layers, its head), and in
//!   its header's `__metadata__` under `mgen.shared` the shared files it
//!   reads, in order. A task checkpoint reads in mgen as its own tensors,
//!   then its linked files', then the base's (docs/language.md), so
//!   `model M { weights = "DIR/M.safetensors"; }` and
//!   `task T { weights = "DIR/T.safetensors"; }` give back the generated
//!   task models;
//! - `weights.json`: per file the tensors, per shared file its tasks, per
//!   task its links and which tensors it shares with which tasks, and the
//!   `.mgen` lines to paste.
//!
//! Invariants: every tensor a task computes with is in exactly one of its
//! base's file, its own file or one file it links; in area mode a matrix computed as base + delta is written
//! as that sum (the effective weight), under its own name; the zero biases
//! of the delta MVMs are not written. Files are written atomically.

use crate::diag::{Code, Diagnostic, Diags};
use crate::ir::{Module, Op};
use crate::weights::checkpoint::SHARED_KEY;
use crate::weights::{Store, layout};
use ndarray::ArrayD;
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    write_file_with(path, tensors, None)
}

/// [`write_file`] with the header's `__metadata__`.
pub fn write_file_with(
    path: &Path,
    tensors: &BTreeMap<String, Arc<ArrayD<f32>>>,
    metadata: Option<HashMap<String, String>>,
) -> Result<(), Diags> {
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
    let bytes = safetensors::tensor::serialize(views, metadata)
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
    /// Per file of tensors that several tasks compute with and that are
    /// not their base's (a jointly trained trunk, a task's layers shared
    /// by others): the tasks and the tensors, written once.
    pub shared: BTreeMap<String, SharedFile>,
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

/// A file of tensors shared by a set of tasks of one base model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SharedFile {
    pub base: String,
    pub tasks: Vec<String>,
    pub tensors: Vec<String>,
}

/// A task's file: the tensors that are its alone, the shared files it
/// links (read in order for the tensors it does not hold), how many
/// tensors it reads from the base, and which tensors other tasks compute
/// with too.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskFile {
    pub base: String,
    pub file: String,
    pub from_base: usize,
    pub links: Vec<String>,
    pub shared_with: BTreeMap<String, Vec<String>>,
    pub tensors: Vec<String>,
}

impl WeightsSummary {
    /// Every file written: models, shared files, tasks.
    pub fn files(&self) -> Vec<&str> {
        let models = self.models.values().map(|f| f.file.as_str());
        models
            .chain(self.shared.keys().map(String::as_str))
            .chain(self.tasks.values().map(|f| f.file.as_str()))
            .collect()
    }
}

/// Each base model used by the workload, with every base tensor some task
/// reads.
fn base_tensors(m: &Module, store: &Store) -> BTreeMap<usize, BTreeSet<String>> {
    let spec = &m.spec;
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
    models
}

/// Writes each base model's file.
fn write_models(
    m: &Module,
    store: &Store,
    dir: &Path,
    models: &BTreeMap<usize, BTreeSet<String>>,
) -> Result<BTreeMap<String, ModelFile>, Diags> {
    let mut files = BTreeMap::new();
    for (&mi, tensor_names) in models {
        let mut ts = BTreeMap::new();
        for n in tensor_names {
            if let Some(d) = store.base_digest(mi, n) {
                ts.insert(n.clone(), store.tensor(d).map_err(bug)?);
            }
        }
        let name = &m.spec.models[mi].name;
        let file = format!("{name}.safetensors");
        write_file(&dir.join(&file), &ts)?;
        let tensors = ts.keys().cloned().collect();
        files.insert(name.clone(), ModelFile { file, tensors });
    }
    Ok(files)
}

/// Tensors by name, each as the digests that make it up (summed).
type Parts = BTreeMap<String, Vec<String>>;

/// Where each task's tensors go: per task, its own (name → parts) and the
/// shared groups it reads; per shared group (workload tasks, in order of
/// first appearance), its tensors.
struct Placement {
    own: Vec<Parts>,
    links: Vec<Vec<usize>>,
    groups: Vec<(Vec<usize>, Parts)>,
    from_base: Vec<usize>,
}

/// Splits every task's tensors into the base's, its own, and those that
/// two or more tasks compute with identically (same parts) and that are not
/// the base's: those go into one group per set of tasks.
fn place(m: &Module, store: &Store, per_task: &[BTreeMap<String, Vec<String>>]) -> Placement {
    let n = per_task.len();
    let mut p = Placement {
        own: vec![BTreeMap::new(); n],
        links: vec![Vec::new(); n],
        groups: Vec::new(),
        from_base: vec![0; n],
    };
    for (t, tensors) in per_task.iter().enumerate() {
        let mi = m.spec.tasks[m.spec.workload.tasks[t]].base;
        for (name, parts) in tensors {
            if parts.len() == 1 && store.base_digest(mi, name) == Some(&parts[0]) {
                p.from_base[t] += 1;
                continue;
            }
            let users: Vec<usize> = (0..n)
                .filter(|&u| per_task[u].get(name) == Some(parts))
                .collect();
            if users.len() < 2 {
                p.own[t].insert(name.clone(), parts.clone());
                continue;
            }
            let g = match p.groups.iter().position(|(u, _)| *u == users) {
                Some(g) => g,
                None => {
                    p.groups.push((users, BTreeMap::new()));
                    p.groups.len() - 1
                }
            };
            p.groups[g].1.insert(name.clone(), parts.clone());
            if !p.links[t].contains(&g) {
                p.links[t].push(g);
            }
        }
    }
    for l in &mut p.links {
        l.sort();
    }
    p
}

fn shared_file_name(g: usize) -> String {
    format!("shared-{}.safetensors", g + 1)
}

/// Materialises and writes one file of tensors (name → parts).
fn write_parts(
    store: &Store,
    path: &Path,
    tensors: &BTreeMap<String, Vec<String>>,
    metadata: Option<HashMap<String, String>>,
) -> Result<(), Diags> {
    let mut out = BTreeMap::new();
    for (name, parts) in tensors {
        out.insert(name.clone(), materialise(store, parts)?);
    }
    write_file_with(path, &out, metadata)
}

/// Writes the shared groups' files.
fn write_shared(
    m: &Module,
    store: &Store,
    dir: &Path,
    p: &Placement,
) -> Result<BTreeMap<String, SharedFile>, Diags> {
    let names = m.task_names();
    let mut out = BTreeMap::new();
    for (g, (users, tensors)) in p.groups.iter().enumerate() {
        let file = shared_file_name(g);
        write_parts(store, &dir.join(&file), tensors, None)?;
        let mi = m.spec.tasks[m.spec.workload.tasks[users[0]]].base;
        let entry = SharedFile {
            base: m.spec.models[mi].name.clone(),
            tasks: users.iter().map(|&u| names[u].to_string()).collect(),
            tensors: tensors.keys().cloned().collect(),
        };
        out.insert(file, entry);
    }
    Ok(out)
}

/// Writes each task's file (its own tensors, linking its shared files)
/// and returns the summaries and the `.mgen` lines.
fn write_tasks(
    m: &Module,
    store: &Store,
    dir: &Path,
    per_task: &[BTreeMap<String, Vec<String>>],
    p: &Placement,
) -> Result<(BTreeMap<String, TaskFile>, String), Diags> {
    let names = m.task_names();
    let mut tasks = BTreeMap::new();
    let mut snippet = String::new();
    for (t, tensors) in per_task.iter().enumerate() {
        let mi = m.spec.tasks[m.spec.workload.tasks[t]].base;
        let links: Vec<String> = p.links[t].iter().map(|&g| shared_file_name(g)).collect();
        let metadata =
            (!links.is_empty()).then(|| HashMap::from([(SHARED_KEY.to_string(), links.join(","))]));
        let file = format!("{}.safetensors", names[t]);
        write_parts(store, &dir.join(&file), &p.own[t], metadata)?;
        let mut shared_with: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, parts) in tensors {
            let others: Vec<String> = (0..per_task.len())
                .filter(|&u| u != t && per_task[u].get(name) == Some(parts))
                .map(|u| names[u].to_string())
                .collect();
            if !others.is_empty() {
                shared_with.insert(name.clone(), others);
            }
        }
        snippet += &format!(
            "task {} {{ weights = \"{}\"; }}   // base = {}\n",
            names[t],
            dir.join(&file).display(),
            m.spec.models[mi].name
        );
        let entry = TaskFile {
            base: m.spec.models[mi].name.clone(),
            file,
            from_base: p.from_base[t],
            links,
            shared_with,
            tensors: p.own[t].keys().cloned().collect(),
        };
        tasks.insert(names[t].to_string(), entry);
    }
    Ok((tasks, snippet))
}

/// Writes the generated models into `dir` (see the module docs); returns
/// the `weights.json` summary.
pub fn write_weights(m: &Module, store: &Store, dir: &Path) -> Result<WeightsSummary, Diags> {
    std::fs::create_dir_all(dir)
        .map_err(|e| io_err(format!("cannot create `{}`: {e}", dir.display())))?;
    let per_task = task_tensors(m);
    let models = base_tensors(m, store);
    let files = write_models(m, store, dir, &models)?;
    let placement = place(m, store, &per_task);
    let shared = write_shared(m, store, dir, &placement)?;
    let (tasks, mut snippet) = write_tasks(m, store, dir, &per_task, &placement)?;
    for mi in models.keys() {
        let name = &m.spec.models[*mi].name;
        let path = dir.join(format!("{name}.safetensors"));
        snippet = format!("model {name} {{ weights = \"{}\"; }}\n", path.display()) + &snippet;
    }
    let summary = WeightsSummary {
        format: "mgen-weights",
        mgen: snippet,
        models: files,
        shared,
        tasks,
        version: 2,
    };
    mgen_util::fs::write_atomic(
        &dir.join("weights.json"),
        (serde_json::to_string_pretty(&summary).unwrap_or_default() + "\n").as_bytes(),
    )?;
    Ok(summary)
}
