//! `share`: the model generator — cross-task sharing under accuracy budgets.
//!
//! Tasks fine-tuned from one base model compute the same function on the
//! same input wherever they use the same weights; on a weight-stationary
//! chip the only way to save MVM energy is to compute such blocks once. The
//! pass chooses, for every task, a **source** (the pre-trained base model,
//! or a representative task) and a **depth** `d`: the task's first `d`
//! blocks (block 0 = embeddings, block `l + 1` = encoder layer `l`) use the
//! source's weights, its remaining blocks and its head its own. Tasks with
//! the same source share those blocks: after the rewrite, [`super::merge`]
//! hash-conses them into one trunk whose nodes carry the task sets that use
//! them, so the module becomes a tree.
//!
//! Search (per group of tasks with the same base model):
//! 1. **Analysis**: per task and block, the relative distance
//!    ‖W_task − W_base‖/‖W_task‖ over the block's tensors and the relative
//!    change of the block's output when that block alone is swapped for the
//!    base's (on the task's own activations); per pair of tasks, the same
//!    distance. A task `r` becomes a candidate source for `t` only when it is
//!    closer to `t` than the base is.
//! 2. **Reach**: for every task and candidate source, the deepest `d` whose
//!    outputs keep every budget of the task, by bisection over `d` (a
//!    candidate's requests run in chunks, and it stops as soon as a budget
//!    can no longer hold). The
//!    source's trunk activations at every block boundary are computed once
//!    per calibration batch and cached, so a candidate costs only the task's
//!    own blocks above `d` (see [`crate::forward`], which is bit-identical to
//!    the reference executor).
//! 3. **Tree**: each task picks a source (or none); the energy of the tree is
//!    the per-block energy of the ReRAM cost model summed over the distinct
//!    computations; the assignment minimising it is found exhaustively when
//!    there are few combinations, greedily otherwise. A task never shares a
//!    block that no other task uses (it would cost accuracy and save
//!    nothing): its depth is clipped to the next deepest follower's.
//! 4. Every chosen (task, source, depth) is measured (the bisection may
//!    have measured a deeper one); a depth that fails is lowered until it
//!    holds, down to 0 (the task's own model, which always holds).
//!
//! Requires: a verified module whose tasks each have their own nodes (as
//! lowered; `merge` may have run), a weight store and calibration inputs in
//! the [`super::Context`]. Ensures: every task's outputs on its calibration
//! inputs keep every budget against its own unshared model (measured, not
//! assumed); the module is verified; unused params are dropped;
//! [`super::Artifacts::sharing`] holds the report.

use super::{Context, Pass};
use crate::data::{Batch, Label};
use crate::diag::{Diagnostic, Diags};
use crate::forward::{self, Req};
use crate::ir::{Layer, Module, NodeId, Param, ParamId, TaskSet};
use crate::spec::{Budget, Head, Metric, Spec};
use crate::weights::{Store, layout};
use ndarray::{Array2, ArrayD};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

pub struct Share;

/// A task model's tensors by name.
type Getter<'a> = dyn Fn(&str) -> Result<Arc<ArrayD<f32>>, String> + Sync + 'a;
/// One request's own output and per-block swap changes.
type OwnRow = (Vec<f32>, Vec<f64>);

/// The analysis' per-block swap change is measured on this many of a
/// task's calibration requests (it is shown, not used to decide).
pub const SWAP_REQUESTS: usize = 4;

impl Pass for Share {
    fn name(&self) -> &'static str {
        "share"
    }
    fn description(&self) -> &'static str {
        "model generator: share blocks across tasks (a trunk from the base or a representative task) as deep as every task's accuracy budget allows, measured on calibration inputs"
    }
    fn contract(&self) -> &'static str {
        "requires a verified module, weights and calibration inputs; ensures every task keeps its budgets against its own unshared model on its calibration inputs"
    }
    fn provides(&self) -> &'static [super::Artifact] {
        &[super::Artifact::Sharing]
    }
    fn invalidates(&self) -> &'static [super::Artifact] {
        &[super::Artifact::Placement, super::Artifact::Schedule]
    }
    fn run(&self, m: &mut Module, arts: &mut super::Artifacts, cx: &Context) -> Result<(), Diags> {
        let store = cx.store.ok_or_else(|| {
            Diags::from(Diagnostic::internal(
                "the `share` pass needs the weights, and the pass context has none",
            ))
        })?;
        arts.sharing = share(
            m,
            store,
            &cx.calibration,
            &cx.training,
            &cx.depth_caps,
            cx.progress,
        )?;
        Ok(())
    }
}

/// Where a task's shared blocks come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// The task's own weights: nothing shared.
    Own,
    /// The pre-trained base model's weights.
    Base,
    /// Another task's own weights (workload task index).
    Task(usize),
}

/// A budget as measured on calibration inputs.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// As written, e.g. `keep agreement >= 99%;`.
    pub budget: String,
    pub metric: &'static str,
    /// The metric reached.
    pub value: f64,
    /// The bound it must reach (for `reference - D` budgets, the unshared
    /// model's value minus D).
    pub bound: f64,
    pub holds: bool,
}

/// What the generator chose for one task.
#[derive(Debug, Clone, Serialize)]
pub struct TaskShare {
    pub name: String,
    /// The model it was fine-tuned from.
    pub model: String,
    /// Blocks of its model (embeddings + layers).
    pub blocks: usize,
    /// Blocks it computes together with other tasks (read off the final
    /// IR: exact merges count too).
    pub shared_blocks: usize,
    /// Blocks (from the bottom) that use `source`'s weights.
    pub depth: usize,
    /// Whose weights its shared blocks use when they are not its own: the
    /// base model's name, a task's name, or `own`.
    pub source: String,
    /// Other tasks that compute its first block together with it.
    pub shared_with: Vec<String>,
    pub measured: Vec<Measured>,
    /// The regeneration used (`head`: its classifier was refitted on the
    /// shared features), and the budgets measured at the same choice
    /// without it.
    pub regenerate: &'static str,
    pub before_regeneration: Vec<Measured>,
    /// Seconds spent regenerating candidates of this task (head refits and
    /// branch retrainings).
    pub regeneration_seconds: f64,
    /// For `branch`: what the retraining did.
    pub branch: Option<BranchReport>,
    /// Estimated energy per request this task no longer spends (its share
    /// of the blocks it computes together with others), in pJ.
    pub saved_pj: f64,
    /// The deepest depth each candidate source allows (before the tree
    /// choice): source name → blocks.
    pub reach: BTreeMap<String, usize>,
}

/// Redundancy analysis of one task against its base.
#[derive(Debug, Clone, Serialize)]
pub struct TaskAnalysis {
    pub name: String,
    pub base: String,
    /// Per block: ‖W_task − W_base‖ / ‖W_task‖ over the block's tensors.
    pub distance: Vec<f64>,
    /// Per block: cosine between the task's and the base's weights.
    pub cosine: Vec<f64>,
    /// Per block: ‖y_swapped − y‖ / ‖y‖ of the block's output when that block
    /// alone uses the base's weights (on the task's own activations; mean
    /// over the first [`SWAP_REQUESTS`] calibration requests).
    pub swap_change: Vec<f64>,
}

/// The same distance between two tasks.
#[derive(Debug, Clone, Serialize)]
pub struct PairAnalysis {
    pub a: String,
    pub b: String,
    pub distance: Vec<f64>,
}

/// The report the pass leaves on the module.
#[derive(Debug, Clone, Serialize)]
pub struct Sharing {
    pub tasks: Vec<TaskShare>,
    pub analysis: Vec<TaskAnalysis>,
    pub pairs: Vec<PairAnalysis>,
    /// Per block name (`emb`, `0`, `1`, ...): groups of tasks that compute
    /// that block together (one group per distinct computation).
    pub tree: Vec<(String, Vec<Vec<String>>)>,
    /// Estimated energy per request (counting simulator, programming
    /// excluded) of every task running its own model, and of the tree.
    pub unshared_pj: f64,
    pub shared_pj: f64,
    /// Candidate models evaluated (each over a task's calibration inputs).
    pub evaluations: usize,
    /// Calibration requests per task.
    pub calibration_requests: Vec<usize>,
    pub seconds: f64,
    /// Area mode (`area = delta(bits = N)`), when the workload asks for it.
    pub area: Option<super::area::AreaReport>,
}

/// A refitted head: (classifier weight `[n, h]`, bias `[n]`).
type HeadPair = (ArrayD<f32>, ArrayD<f32>);
/// Regenerated tensors by Hugging Face name.
type Tensors = HashMap<String, Arc<ArrayD<f32>>>;

/// How far a candidate is regenerated before it is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Level {
    None,
    Head,
    Branch,
}

/// A retrained branch.
#[derive(Clone)]
struct Trained {
    tensors: Arc<Tensors>,
    log: crate::train::TrainLog,
    parameters: usize,
}

/// Retrained branches of this process, by a digest of everything that
/// determines them (the task's and the source's weights, the depth, the
/// settings, the training inputs, the seed). Training is deterministic, so
/// this is a memo: `mgen compare`'s chip rounds rerun the search and would
/// otherwise retrain every branch. At most [`MEMO_VALUES`] values are kept.
static MEMO: std::sync::Mutex<Option<HashMap<String, Trained>>> = std::sync::Mutex::new(None);
/// The memo's capacity in f32 values (1 GB).
const MEMO_VALUES: usize = 1 << 28;

fn memo_get(key: &str) -> Option<Trained> {
    let g = MEMO.lock().ok()?;
    g.as_ref()?.get(key).cloned()
}

fn memo_put(key: String, t: &Trained) {
    if let Ok(mut g) = MEMO.lock() {
        let map = g.get_or_insert_with(HashMap::new);
        let held: usize = map.values().map(|x| x.parameters).sum();
        if held + t.parameters <= MEMO_VALUES {
            map.insert(key, t.clone());
        }
    }
}

/// What branch retraining did for a task (the retraining its final choice
/// uses).
#[derive(Debug, Clone, Serialize)]
pub struct BranchReport {
    /// Values retrained (its layers above the shared depth and its head).
    pub parameters: usize,
    /// Optimiser steps, and the mean training loss over the first and the
    /// last epoch.
    pub steps: usize,
    pub first_loss: f64,
    pub last_loss: f64,
    /// Retrainings the search ran for this task (each a candidate depth).
    pub retrainings: usize,
}

fn rows_to_array(rows: &[Vec<f32>]) -> Array2<f32> {
    let width = rows.first().map(|r| r.len()).unwrap_or(0);
    let mut o = Array2::<f32>::zeros((rows.len(), width));
    for (i, r) in rows.iter().enumerate() {
        o.row_mut(i).assign(&ndarray::ArrayView1::from(r));
    }
    o
}

/// Ridge regression of targets `y` (`[N, n]`) on features `f` (`[N, h]`)
/// with a bias: `min ‖[f 1]·Θ − y‖² + λ‖W‖²`, `λ = 1e-3 · tr(fᵀf) / h`
/// (the bias is not penalised), solved in f64 by Cholesky on the normal
/// equations. Returns the classifier `(W [n, h], b [n])` in f32.
pub fn ridge_head(f: &Array2<f32>, y: &Array2<f32>) -> HeadPair {
    let (rows, h) = f.dim();
    let n = y.ncols();
    let mut x = ndarray::Array2::<f64>::ones((rows, h + 1));
    x.slice_mut(ndarray::s![.., ..h])
        .assign(&f.mapv(|v| v as f64));
    let yd = y.mapv(|v| v as f64);
    let mut a = x.t().dot(&x);
    let trace: f64 = (0..h).map(|i| a[[i, i]]).sum();
    let lambda = 1e-3 * trace / h.max(1) as f64 + 1e-12;
    for i in 0..h {
        a[[i, i]] += lambda;
    }
    // A tiny ridge on the bias too keeps the system definite when a
    // feature is constant.
    a[[h, h]] += 1e-9 * (1.0 + a[[h, h]]);
    let bm = x.t().dot(&yd);
    // Cholesky: a = L Lᵀ.
    let k = h + 1;
    let mut l = ndarray::Array2::<f64>::zeros((k, k));
    for i in 0..k {
        for j in 0..=i {
            let mut s = a[[i, j]];
            for p in 0..j {
                s -= l[[i, p]] * l[[j, p]];
            }
            if i == j {
                l[[i, i]] = s.max(1e-300).sqrt();
            } else {
                l[[i, j]] = s / l[[j, j]];
            }
        }
    }
    let mut theta = ndarray::Array2::<f64>::zeros((k, n));
    for c in 0..n {
        // Forward then back substitution.
        let mut z = vec![0.0f64; k];
        for i in 0..k {
            let mut s = bm[[i, c]];
            for p in 0..i {
                s -= l[[i, p]] * z[p];
            }
            z[i] = s / l[[i, i]];
        }
        for i in (0..k).rev() {
            let mut s = z[i];
            for p in i + 1..k {
                s -= l[[p, i]] * theta[[p, c]];
            }
            theta[[i, c]] = s / l[[i, i]];
        }
    }
    let w = theta
        .slice(ndarray::s![..h, ..])
        .t()
        .mapv(|v| v as f32)
        .into_dyn();
    let b = theta.row(h).mapv(|v| v as f32).into_dyn();
    (w, b)
}

fn bug(msg: String) -> Diags {
    Diagnostic::internal(msg)
        .note("or a weights file changed while mgen was reading it")
        .into()
}

/// The block a node belongs to (`None` for inputs and heads).
pub fn block_of(layer: Layer) -> Option<usize> {
    match layer {
        Layer::Embed => Some(0),
        Layer::Encoder(l) => Some(l as usize + 1),
        _ => None,
    }
}

/// The block of a tensor name.
fn block_of_name(name: &str) -> Option<usize> {
    if name.starts_with("embeddings.") {
        return Some(0);
    }
    let rest = name.strip_prefix("encoder.layer.")?;
    let l: usize = rest.split('.').next()?.parse().ok()?;
    Some(l + 1)
}

use mgen_util::stats::cosine;
pub use mgen_util::stats::{agree, argmax, pearson, worst};

fn col(a: &Array2<f32>) -> Vec<f64> {
    a.iter().map(|&x| x as f64).collect()
}

/// Measures one budget: `out` against the task's own model's `own`.
///
/// - agreement: the share of rows whose argmax equals `own`'s;
/// - cosine: for embeddings, the worst row's cosine to `own`'s; for
///   classifiers and regressors, the cosine between the flattened outputs
///   over all rows (a single value has no direction of its own);
/// - accuracy / pearson: against the labels, bounded by `own`'s value
///   minus D for `reference - D` budgets.
///
/// A metric that is not finite (NaN or infinite outputs, a correlation
/// without variance, no rows) never holds.
pub fn measure(
    b: &Budget,
    head: &Head,
    out: &Array2<f32>,
    own: &Array2<f32>,
    labels: &[Option<Label>],
) -> Measured {
    let n = out.nrows().max(1) as f64;
    let (value, reference) = match b.metric {
        Metric::Agreement => {
            let agree = out
                .rows()
                .into_iter()
                .zip(own.rows())
                .filter(|(a, b)| agree(*a, *b))
                .count() as f64;
            (agree / n, 1.0)
        }
        Metric::Cosine => match head {
            Head::Embed { .. } => {
                let w = worst(out.rows().into_iter().zip(own.rows()).map(|(a, b)| {
                    let a: Vec<f64> = a.iter().map(|&x| x as f64).collect();
                    let b: Vec<f64> = b.iter().map(|&x| x as f64).collect();
                    cosine(&a, &b)
                }));
                (w, 1.0)
            }
            _ => (cosine(&col(out), &col(own)), 1.0),
        },
        Metric::Accuracy => {
            let acc = |a: &Array2<f32>| {
                a.rows()
                    .into_iter()
                    .zip(labels)
                    .filter(|(r, l)| matches!(l, Some(Label::Class(c)) if *c >= 0 && r.iter().all(|x| x.is_finite()) && argmax(*r) == *c as usize))
                    .count() as f64
                    / n
            };
            (acc(out), acc(own))
        }
        Metric::Pearson => {
            let ys: Vec<f64> = labels
                .iter()
                .map(|l| match l {
                    Some(Label::Value(v)) => *v,
                    Some(Label::Class(c)) => *c as f64,
                    None => 0.0,
                })
                .collect();
            // A regressor's value is its first column (none: undefined).
            let p = |a: &Array2<f32>| match a.ncols() {
                0 => f64::NAN,
                _ => pearson(
                    &a.column(0).iter().map(|&x| x as f64).collect::<Vec<_>>(),
                    &ys,
                ),
            };
            (p(out), p(own))
        }
    };
    let bound = if b.relative {
        reference - b.amount()
    } else {
        b.amount()
    };
    let finite = |a: &Array2<f32>| a.iter().all(|x| x.is_finite());
    // Non-finite outputs make any metric meaningless, whatever it reads.
    let value = if finite(out) && finite(own) && out.nrows() > 0 {
        value
    } else {
        f64::NAN
    };
    Measured {
        budget: b.to_mgen(),
        metric: b.metric.name(),
        value,
        bound,
        // A hair of tolerance for the float rounding of the bound itself;
        // NaN compares false, so a non-finite value or bound never holds.
        holds: value.is_finite() && bound.is_finite() && value >= bound - 1e-12,
    }
}

/// Whether a budget already fails on the first rows of a candidate's
/// outputs whatever the remaining rows are (agreement: too many
/// disagreements; cosine of embeddings: a row below the bound).
fn hopeless(b: &Budget, head: &Head, rows: &[Vec<f32>], own: &Array2<f32>, total: usize) -> bool {
    match (b.metric, head) {
        (Metric::Agreement, _) => {
            let wrong = rows
                .iter()
                .zip(own.rows())
                .filter(|(r, o)| !agree(ndarray::ArrayView1::from(r.as_slice()), *o))
                .count();
            // Even if every remaining row agreed:
            ((total - wrong) as f64 / total.max(1) as f64) < b.amount() - 1e-12
        }
        (Metric::Cosine, Head::Embed { .. }) => rows.iter().zip(own.rows()).any(|(r, o)| {
            let a: Vec<f64> = r.iter().map(|&x| x as f64).collect();
            let c: Vec<f64> = o.iter().map(|&x| x as f64).collect();
            let cos = cosine(&a, &c);
            cos.is_nan() || cos < b.amount() - 1e-12
        }),
        _ => false,
    }
}

/// Per-block relative distance and cosine of two tasks' weights, from
/// their tensor digests (equal digests cost nothing).
fn distances(
    store: &Store,
    names: &[String],
    blocks: usize,
    a: &dyn Fn(&str) -> Option<String>,
    b: &dyn Fn(&str) -> Option<String>,
) -> Result<(Vec<f64>, Vec<f64>), String> {
    let mut diff = vec![0.0f64; blocks];
    let mut na = vec![0.0f64; blocks];
    let mut nb = vec![0.0f64; blocks];
    let mut dot = vec![0.0f64; blocks];
    for name in names {
        let Some(k) = block_of_name(name) else {
            continue;
        };
        let (Some(da), Some(db)) = (a(name), b(name)) else {
            continue;
        };
        let ta = store.tensor(&da)?;
        if da == db {
            let s: f64 = ta.iter().map(|&x| x as f64 * x as f64).sum();
            na[k] += s;
            nb[k] += s;
            dot[k] += s;
            continue;
        }
        let tb = store.tensor(&db)?;
        for (&x, &y) in ta.iter().zip(tb.iter()) {
            let (x, y) = (x as f64, y as f64);
            diff[k] += (x - y) * (x - y);
            na[k] += x * x;
            nb[k] += y * y;
            dot[k] += x * y;
        }
    }
    let dist = (0..blocks)
        .map(|k| (diff[k] / na[k].max(1e-300)).sqrt())
        .collect();
    let cos = (0..blocks)
        .map(|k| dot[k] / (na[k] * nb[k]).sqrt().max(1e-300))
        .collect();
    Ok((dist, cos))
}

/// Runs the model generator on `m` (see the module docs); returns its
/// report, or `None` when `m` was generated by `share` already.
pub fn share(
    m: &mut Module,
    store: &Store,
    calibration: &[Batch],
    training: &[Option<Batch>],
    caps: &[Option<usize>],
    progress: crate::progress::Mode,
) -> Result<Option<Sharing>, Diags> {
    let t0 = Instant::now();
    let spec = m.spec.clone();
    let n = spec.workload.tasks.len();
    if calibration.len() != n {
        return Err(bug(format!(
            "the `share` pass got calibration inputs for {} tasks, the workload has {n}",
            calibration.len()
        )));
    }
    let names: Vec<String> = m.task_names().iter().map(|s| s.to_string()).collect();
    let spec_task = |t: usize| spec.workload.tasks[t];
    // A module read from a `.mir` written after `share` already computes
    // some task with weights that are not its own: its tree is kept as it
    // is (the search measures paths from each task's own weights, which
    // such a module no longer has).
    if already_shared(m, store) {
        return Ok(None);
    }
    // Distinct calibration batches (tasks without `calibrate` share the workload's).
    let mut batch_of = vec![0usize; n];
    let mut batches: Vec<&Batch> = Vec::new();
    for t in 0..n {
        let b = &calibration[t];
        batch_of[t] = match batches
            .iter()
            .position(|x| x.seq == b.seq && x.requests == b.requests)
        {
            Some(i) => i,
            None => {
                batches.push(b);
                batches.len() - 1
            }
        };
    }
    // The search's length is not known in advance: a count (candidate
    // evaluations and training steps), no ETA.
    let bar = crate::progress::Progress::new(progress, None, "share", "steps");
    let evaluations = std::sync::atomic::AtomicUsize::new(0);
    let tick = |k: usize| {
        evaluations.fetch_add(k, std::sync::atomic::Ordering::Relaxed);
        bar.inc(k as u64);
    };

    // The tensor getter of a source for a task.
    let getter = |t: usize, s: Source| -> Box<Getter<'_>> {
        let st = spec_task(t);
        let model = spec.tasks[st].base;
        match s {
            Source::Own => Box::new(move |name: &str| store.task_tensor(st, name)),
            Source::Base => Box::new(move |name: &str| match store.base_digest(model, name) {
                Some(d) if block_of_name(name).is_some() => store.tensor(d),
                _ => store.task_tensor(st, name),
            }),
            Source::Task(r) => {
                let sr = spec_task(r);
                Box::new(move |name: &str| {
                    if block_of_name(name).is_some() {
                        store.task_tensor(sr, name)
                    } else {
                        store.task_tensor(st, name)
                    }
                })
            }
        }
    };

    // Own outputs per task, with the analysis' swap changes.
    let mut own: Vec<Array2<f32>> = Vec::with_capacity(n);
    let mut analysis: Vec<TaskAnalysis> = Vec::with_capacity(n);
    for t in 0..n {
        let st = spec_task(t);
        let model = &spec.models[spec.tasks[st].base];
        let head = spec.tasks[st].head;
        let nb = forward::blocks(model);
        let get_own = getter(t, Source::Own);
        let get_base = getter(t, Source::Base);
        let batch = batches[batch_of[t]];
        let rows: Result<Vec<OwnRow>, String> = batch
            .requests
            .par_iter()
            .enumerate()
            .map(|(i, r)| {
                let mask = r.mask();
                let req = Req {
                    ids: &r.ids,
                    mask: &mask,
                };
                let mut x: Option<ArrayD<f32>> = None;
                let mut change = vec![0.0; nb];
                for (b, ch) in change.iter_mut().enumerate() {
                    let y = forward::block(model, b, &*get_own, x.as_ref(), &req)?;
                    if i >= SWAP_REQUESTS {
                        x = Some(y);
                        continue;
                    }
                    let ys = forward::block(model, b, &*get_base, x.as_ref(), &req)?;
                    let num: f64 = y
                        .iter()
                        .zip(ys.iter())
                        .map(|(a, b)| ((a - b) as f64).powi(2))
                        .sum();
                    let den: f64 = y.iter().map(|a| (*a as f64).powi(2)).sum();
                    *ch = (num / den.max(1e-300)).sqrt();
                    x = Some(y);
                }
                let out = forward::head(&head, &*get_own, x.as_ref().ok_or("no blocks")?, &req)?;
                Ok((out, change))
            })
            .collect();
        let rows = rows.map_err(|e| bug(format!("evaluating task `{}`: {e}", names[t])))?;
        tick(1);
        let width = rows.first().map(|r| r.0.len()).unwrap_or(0);
        let mut o = Array2::<f32>::zeros((rows.len(), width));
        let mut swap = vec![0.0; nb];
        let sampled = rows.len().clamp(1, SWAP_REQUESTS) as f64;
        for (i, (r, c)) in rows.iter().enumerate() {
            o.row_mut(i).assign(&ndarray::ArrayView1::from(r));
            if i < SWAP_REQUESTS {
                for b in 0..nb {
                    swap[b] += c[b] / sampled;
                }
            }
        }
        own.push(o);
        let tnames: Vec<String> = layout(model, &head).into_iter().map(|ts| ts.name).collect();
        let mi = spec.tasks[st].base;
        let (distance, cos) = distances(
            store,
            &tnames,
            nb,
            &|name| store.lookup(st, name).map(|d| d.0.clone()),
            &|name| store.base_digest(mi, name).cloned(),
        )
        .map_err(|e| bug(format!("analysing task `{}`: {e}", names[t])))?;
        analysis.push(TaskAnalysis {
            name: names[t].clone(),
            base: spec.models[mi].name.clone(),
            distance,
            cosine: cos,
            swap_change: swap,
        });
    }

    // Pairwise distances within groups of one base model.
    let group_of = |t: usize| spec.tasks[spec_task(t)].base;
    let mut pairs = Vec::new();
    let mut pair_dist: HashMap<(usize, usize), Vec<f64>> = HashMap::new();
    for a in 0..n {
        for b in a + 1..n {
            if group_of(a) != group_of(b) {
                continue;
            }
            let (sa, sb) = (spec_task(a), spec_task(b));
            let model = &spec.models[group_of(a)];
            let tnames: Vec<String> = layout(
                model,
                &Head::Embed {
                    pool: crate::spec::Pool::Mean,
                },
            )
            .into_iter()
            .map(|ts| ts.name)
            .collect();
            let (d, _) = distances(
                store,
                &tnames,
                forward::blocks(model),
                &|name| store.lookup(sa, name).map(|d| d.0.clone()),
                &|name| store.lookup(sb, name).map(|d| d.0.clone()),
            )
            .map_err(|e| {
                bug(format!(
                    "analysing tasks `{}` and `{}`: {e}",
                    names[a], names[b]
                ))
            })?;
            pair_dist.insert((a, b), d.clone());
            pair_dist.insert((b, a), d.clone());
            pairs.push(PairAnalysis {
                a: names[a].clone(),
                b: names[b].clone(),
                distance: d,
            });
        }
    }

    // Candidate sources per task: the base, and tasks closer than the base.
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let mut candidates: Vec<Vec<Source>> = vec![Vec::new(); n];
    for t in 0..n {
        let group: Vec<usize> = (0..n)
            .filter(|&u| u != t && group_of(u) == group_of(t))
            .collect();
        if group.is_empty() {
            continue;
        }
        candidates[t].push(Source::Base);
        for &r in &group {
            if mean(&pair_dist[&(t, r)]) < mean(&analysis[t].distance) {
                candidates[t].push(Source::Task(r));
            }
        }
    }

    // Trunk activations of a source, per batch, at every block boundary:
    // trunk[i][b] = the activation after block b of request i.
    type Trunk = Vec<Vec<ArrayD<f32>>>;
    let mut trunks: HashMap<(Source, usize, usize), Arc<Trunk>> = HashMap::new();
    let training: Vec<Option<&Batch>> = (0..n)
        .map(|t| training.get(t).and_then(|b| b.as_ref()))
        .collect();
    // Tasks with the same training inputs share their trunk activations:
    // the first task with an equal batch.
    let train_of: Vec<usize> = (0..n)
        .map(|t| {
            (0..t)
                .find(|&u| match (training[u], training[t]) {
                    (Some(a), Some(b)) => a.seq == b.seq && a.requests == b.requests,
                    _ => false,
                })
                .unwrap_or(t)
        })
        .collect();
    // `train`: on task t's training inputs instead of its calibration inputs.
    let mut trunk = |s: Source, t: usize, train: bool| -> Result<Arc<Trunk>, Diags> {
        let g = group_of(t);
        let key = (
            s,
            g,
            if train {
                usize::MAX - train_of[t]
            } else {
                batch_of[t]
            },
        );
        if let Some(tr) = trunks.get(&key) {
            return Ok(tr.clone());
        }
        let model = &spec.models[g];
        let get = match s {
            Source::Task(r) => getter(r, Source::Own),
            _ => getter(t, s),
        };
        let batch = match (train, training[t]) {
            (true, Some(b)) => b,
            (true, None) => return Err(bug(format!("task `{}` has no training inputs", names[t]))),
            (false, _) => batches[batch_of[t]],
        };
        let tr: Result<Trunk, String> = batch
            .requests
            .par_iter()
            .map(|r| {
                let mask = r.mask();
                let req = Req {
                    ids: &r.ids,
                    mask: &mask,
                };
                let mut acts: Vec<ArrayD<f32>> = Vec::with_capacity(forward::blocks(model));
                for b in 0..forward::blocks(model) {
                    let y = forward::block(model, b, &*get, acts.last(), &req)?;
                    acts.push(y);
                }
                Ok(acts)
            })
            .collect();
        let tr = Arc::new(tr.map_err(|e| bug(format!("evaluating a trunk: {e}")))?);
        tick(1);
        trunks.insert(key, tr.clone());
        Ok(tr)
    };

    // Whether regeneration may replace task t's own tensors: its encoder
    // layers and head are its alone (`merge` found no exact twin).
    let alone: Vec<bool> = (0..n)
        .map(|t| {
            m.graph.node_weights().all(|nd| {
                !TaskSet::single(t).is_subset(nd.tasks)
                    || nd.tasks.len() == 1
                    || matches!(nd.layer, Layer::Input | Layer::Embed)
            })
        })
        .collect();
    // Evaluates task t with `depth` blocks from source s at a regeneration
    // level: `Head` refits its head on its training inputs to its own
    // model's outputs there (`regenerate = head` or `branch`), `Branch`
    // retrains its unshared layers and head the same way
    // (`regenerate = branch`, see [`crate::train`]).
    // (budgets hold, measured, the level actually used)
    type Cached = (bool, Vec<Measured>, Level);
    let mut cache: HashMap<(usize, Source, usize, Level, bool), Cached> = HashMap::new();
    // Retrainings left per task (the search's deterministic budget).
    let trials: Vec<std::cell::Cell<u32>> = (0..n)
        .map(|t| {
            let task = &spec.tasks[spec_task(t)];
            std::cell::Cell::new(match task.regenerate.branch() {
                Some(o) if alone[t] => o.trials,
                _ => 0,
            })
        })
        .collect();
    let mut retrainings = vec![0usize; n];
    let mut heads: HashMap<(usize, Source, usize), HeadPair> = HashMap::new();
    let mut branches: HashMap<(usize, Source, usize), Trained> = HashMap::new();
    let mut own_train: HashMap<usize, Array2<f32>> = HashMap::new();
    let mut regen_seconds = vec![0.0f64; n];
    let mut evaluate = |t: usize,
                        s: Source,
                        depth: usize,
                        level: Level,
                        exhaustive: bool|
     -> Result<Cached, Diags> {
        let st = spec_task(t);
        let task = &spec.tasks[st];
        let shared = depth > 0 && s != Source::Own;
        let level = match level {
            Level::Head
                if shared
                    && task.regenerate.refits_head()
                    && !matches!(task.head, Head::Embed { .. }) =>
            {
                Level::Head
            }
            Level::Branch
                if shared
                    && task.regenerate.branch().is_some()
                    && alone[t]
                    && (branches.contains_key(&(t, s, depth)) || trials[t].get() > 0) =>
            {
                Level::Branch
            }
            _ => Level::None,
        };
        if let Some(r) = cache.get(&(t, s, depth, level, exhaustive)) {
            return Ok(r.clone());
        }
        let regen_started = Instant::now();
        let model = &spec.models[task.base];
        let batch = batches[batch_of[t]];
        let labels: Vec<Option<Label>> = batch.requests.iter().map(|r| r.label).collect();
        if level != Level::None {
            let tb = training[t]
                .ok_or_else(|| bug(format!("task `{}` has no training inputs", names[t])))?;
            let get = getter(t, Source::Own);
            if let std::collections::hash_map::Entry::Vacant(slot) = own_train.entry(t) {
                let rows: Result<Vec<Vec<f32>>, String> = tb
                    .requests
                    .par_iter()
                    .map(|r| {
                        let mask = r.mask();
                        let req = Req {
                            ids: &r.ids,
                            mask: &mask,
                        };
                        forward::rest(model, &task.head, &*get, 0, None, &req)
                    })
                    .collect();
                let rows = rows.map_err(|e| bug(format!("evaluating task `{}`: {e}", names[t])))?;
                slot.insert(rows_to_array(&rows));
            }
        }
        let refit = if level == Level::Head {
            let tb = training[t]
                .ok_or_else(|| bug(format!("task `{}` has no training inputs", names[t])))?;
            let get = getter(t, Source::Own);
            let tr = trunk(s, t, true)?;
            let feats: Result<Vec<Vec<f32>>, String> = tb
                .requests
                .par_iter()
                .zip(tr.par_iter())
                .map(|(r, acts)| {
                    let mask = r.mask();
                    let req = Req {
                        ids: &r.ids,
                        mask: &mask,
                    };
                    forward::rest_features(
                        model,
                        &task.head,
                        &*get,
                        depth,
                        Some(&acts[depth - 1]),
                        &req,
                    )
                    .map(|f| f.iter().copied().collect())
                })
                .collect();
            let feats = feats.map_err(|e| bug(format!("evaluating task `{}`: {e}", names[t])))?;
            tick(1);
            let pair = ridge_head(&rows_to_array(&feats), &own_train[&t]);
            heads.insert((t, s, depth), pair.clone());
            Some(pair)
        } else {
            None
        };
        let trained: Option<Arc<Tensors>> = if level == Level::Branch {
            let key = (t, s, depth);
            if let std::collections::hash_map::Entry::Vacant(slot) = branches.entry(key) {
                trials[t].set(trials[t].get() - 1);
                retrainings[t] += 1;
                let tb = training[t]
                    .ok_or_else(|| bug(format!("task `{}` has no training inputs", names[t])))?;
                let opts = task.regenerate.branch().unwrap_or_default();
                let seed =
                    crate::weights::seed_of_name(&format!("branch:{}:{:?}:{depth}", names[t], s));
                // Everything the retraining depends on.
                let mut parts: Vec<String> = vec![
                    "branch-memo-v1".into(),
                    format!("{depth}:{seed}:{opts:?}:{:?}", task.head),
                ];
                let src_task = match s {
                    Source::Task(r) => spec_task(r),
                    _ => st,
                };
                for ts in layout(model, &task.head) {
                    parts.push(
                        store
                            .lookup(st, &ts.name)
                            .map(|d| d.0.clone())
                            .unwrap_or_default(),
                    );
                    let sd = match s {
                        Source::Base => store.base_digest(task.base, &ts.name).cloned(),
                        _ => store.lookup(src_task, &ts.name).map(|d| d.0.clone()),
                    };
                    parts.push(sd.unwrap_or_default());
                }
                for r in &tb.requests {
                    parts.push(format!("{:?}/{}/{:?}", r.ids, r.len, r.label));
                }
                let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
                let memo_key = crate::weights::digest_of(&refs);
                let trained = match memo_get(&memo_key) {
                    Some(hit) => hit,
                    None => {
                        let get = getter(t, Source::Own);
                        let mut br = crate::train::Branch::new(model, &task.head, &*get, depth)
                            .map_err(|e| bug(format!("task `{}`: {e}", names[t])))?;
                        let tr = trunk(s, t, true)?;
                        let masks: Vec<Vec<f32>> = tb.requests.iter().map(|r| r.mask()).collect();
                        let targets = &own_train[&t];
                        let items: Result<Vec<crate::train::Item>, Diags> = tb
                            .requests
                            .iter()
                            .enumerate()
                            .map(|(i, r)| {
                                let x = tr[i][depth - 1]
                                    .view()
                                    .into_dimensionality::<ndarray::Ix2>()
                                    .map_err(|e| bug(format!("a trunk activation: {e}")))?;
                                Ok(crate::train::Item {
                                    x,
                                    mask: &masks[i],
                                    target: targets.row(i),
                                    label: r.label,
                                })
                            })
                            .collect();
                        let items = items?;
                        let log = br.train(&items, &opts, seed, &|| bar.inc(1));
                        let fresh = Trained {
                            tensors: Arc::new(br.tensors()),
                            log,
                            parameters: br.parameters(),
                        };
                        memo_put(memo_key, &fresh);
                        fresh
                    }
                };
                slot.insert(trained);
            }
            Some(branches[&key].tensors.clone())
        } else {
            None
        };
        if level != Level::None {
            regen_seconds[t] += regen_started.elapsed().as_secs_f64();
        }
        let out = if depth == 0 || s == Source::Own {
            own[t].clone()
        } else {
            let tr = trunk(s, t, false)?;
            let own_get = getter(t, Source::Own);
            let get: Box<Getter<'_>> = match &trained {
                Some(tt) => {
                    let tt = tt.clone();
                    Box::new(move |name: &str| match tt.get(name) {
                        Some(x) => Ok(x.clone()),
                        None => own_get(name),
                    })
                }
                None => own_get,
            };
            // Requests in chunks; stop as soon as a budget can no longer
            // hold (a failed candidate need not be finished).
            let chunk = 2 * rayon::current_num_threads().max(1);
            let mut rows: Vec<Vec<f32>> = Vec::with_capacity(batch.requests.len());
            let mut failed = false;
            for (reqs, acts) in batch.requests.chunks(chunk).zip(tr.chunks(chunk)) {
                let part: Result<Vec<Vec<f32>>, String> = reqs
                    .par_iter()
                    .zip(acts.par_iter())
                    .map(|(r, acts)| {
                        let mask = r.mask();
                        let req = Req {
                            ids: &r.ids,
                            mask: &mask,
                        };
                        match &refit {
                            None => forward::rest(
                                model,
                                &task.head,
                                &*get,
                                depth,
                                Some(&acts[depth - 1]),
                                &req,
                            ),
                            Some((w, b)) => forward::rest_features(
                                model,
                                &task.head,
                                &*get,
                                depth,
                                Some(&acts[depth - 1]),
                                &req,
                            )
                            .map(|f| forward::classifier(&f, w, b, &req)),
                        }
                    })
                    .collect();
                rows.extend(part.map_err(|e| bug(format!("evaluating task `{}`: {e}", names[t])))?);
                if !exhaustive
                    && rows.len() < batch.requests.len()
                    && task
                        .budgets
                        .iter()
                        .any(|b| hopeless(b, &task.head, &rows, &own[t], batch.requests.len()))
                {
                    failed = true;
                    break;
                }
            }
            tick(1);
            if failed {
                let ms: Vec<Measured> = task
                    .budgets
                    .iter()
                    .map(|b| Measured {
                        budget: b.to_mgen(),
                        metric: b.metric.name(),
                        value: f64::NAN,
                        bound: f64::NAN,
                        holds: false,
                    })
                    .collect();
                cache.insert((t, s, depth, level, exhaustive), (false, ms.clone(), level));
                return Ok((false, ms, level));
            }
            let width = own[t].ncols();
            let mut o = Array2::<f32>::zeros((rows.len(), width));
            for (i, r) in rows.iter().enumerate() {
                o.row_mut(i).assign(&ndarray::ArrayView1::from(r));
            }
            o
        };
        let ms: Vec<Measured> = task
            .budgets
            .iter()
            .map(|b| measure(b, &task.head, &out, &own[t], &labels))
            .collect();
        let ok = ms.iter().all(|m| m.holds);
        cache.insert((t, s, depth, level, exhaustive), (ok, ms.clone(), level));
        Ok((ok, ms, level))
    };

    // Reach: the deepest depth each candidate source allows (bisection).
    let mut reach: Vec<BTreeMap<Source, usize>> = vec![BTreeMap::new(); n];

    for t in 0..n {
        let nb = forward::blocks(&spec.models[group_of(t)]);
        for &s in &candidates[t] {
            let cap = caps.get(t).copied().flatten().unwrap_or(nb).min(nb);
            let (mut lo, mut hi) = (0usize, cap + 1);
            while hi - lo > 1 {
                let mid = (lo + hi) / 2;
                // The task's own head first; a refitted one only where
                // that fails (regeneration never does worse than none).
                if evaluate(t, s, mid, Level::None, false)?.0
                    || evaluate(t, s, mid, Level::Head, false)?.0
                {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            // Retraining the branch: deeper than that, one block at a time
            // (on real checkpoints retraining gains a block or two, so a
            // bisection would spend its first retraining far too deep),
            // while it holds and the task's retraining budget lasts.
            while lo < cap && trials[t].get() > 0 {
                if evaluate(t, s, lo + 1, Level::Branch, false)?.0 {
                    lo += 1;
                } else {
                    break;
                }
            }
            reach[t].insert(s, lo);
        }
    }

    // Energy of one block per request, from the cost model: crossbar MVMs
    // dominate, so a block's weight is its static-MVM count (crossbar
    // reads); the embeddings (a digital lookup) weigh a small epsilon.
    let block_weight = |g: usize, b: usize| -> f64 {
        if b == 0 {
            return 1e-3;
        }
        let model = &spec.models[g];
        let xb = |o: u64, i: u64| {
            let (r, c) = (spec.hardware.rows.max(1), spec.hardware.cols.max(1));
            (o.div_ceil(c) * i.div_ceil(r)) as f64
        };
        let h = model.hidden;
        4.0 * xb(h, h) + xb(model.ffn, h) + xb(h, model.ffn)
    };

    // The tree: a source per task; depth = reach, clipped so no block is
    // computed for a single follower of the base.
    let depths_for = |assign: &[Source]| -> Vec<usize> {
        let mut d: Vec<usize> = (0..n)
            .map(|t| match assign[t] {
                Source::Own => 0,
                s => reach[t].get(&s).copied().unwrap_or(0),
            })
            .collect();
        // A task followed by others keeps its own model.
        for t in 0..n {
            if let Source::Task(r) = assign[t]
                && assign[r] != Source::Own
            {
                d[t] = 0;
            }
        }
        for g in 0..spec.models.len() {
            let followers: Vec<usize> = (0..n)
                .filter(|&t| group_of(t) == g && assign[t] == Source::Base && d[t] > 0)
                .collect();
            let mut ds: Vec<usize> = followers.iter().map(|&t| d[t]).collect();
            ds.sort_unstable_by(|a, b| b.cmp(a));
            let second = ds.get(1).copied().unwrap_or(0);
            for &t in &followers {
                d[t] = d[t].min(second);
            }
        }
        d
    };
    let energy = |assign: &[Source], d: &[usize]| -> f64 {
        let mut e = 0.0;
        for (t, &dt) in d.iter().enumerate() {
            let g = group_of(t);
            let nb = forward::blocks(&spec.models[g]);
            for b in dt..nb {
                e += block_weight(g, b);
            }
        }
        for g in 0..spec.models.len() {
            let deepest = (0..n)
                .filter(|&t| group_of(t) == g && assign[t] == Source::Base)
                .map(|t| d[t])
                .max()
                .unwrap_or(0);
            for b in 0..deepest {
                e += block_weight(g, b);
            }
        }
        e
    };
    let options: Vec<Vec<Source>> = (0..n)
        .map(|t| {
            let mut o = vec![Source::Own];
            o.extend(candidates[t].iter().copied());
            o
        })
        .collect();
    let combos: f64 = options.iter().map(|o| o.len() as f64).product();
    let mut best: Vec<Source> = vec![Source::Own; n];
    let mut best_e = energy(&best, &depths_for(&best));
    if combos <= 50_000.0 {
        let mut idx = vec![0usize; n];
        loop {
            let a: Vec<Source> = (0..n).map(|t| options[t][idx[t]]).collect();
            let e = energy(&a, &depths_for(&a));
            if e < best_e - 1e-9 {
                best_e = e;
                best = a;
            }
            let mut k = 0;
            while k < n {
                idx[k] += 1;
                if idx[k] < options[k].len() {
                    break;
                }
                idx[k] = 0;
                k += 1;
            }
            if k == n {
                break;
            }
        }
    } else {
        // Greedy: everyone on the base, then single-task moves while they help.
        let start: Vec<Source> = (0..n)
            .map(|t| {
                if candidates[t].is_empty() {
                    Source::Own
                } else {
                    Source::Base
                }
            })
            .collect();
        let e0 = energy(&start, &depths_for(&start));
        if e0 < best_e {
            best = start;
            best_e = e0;
        }
        let mut improved = true;
        while improved {
            improved = false;
            for t in 0..n {
                for &o in &options[t] {
                    let mut a = best.clone();
                    a[t] = o;
                    let e = energy(&a, &depths_for(&a));
                    if e < best_e - 1e-9 {
                        best = a;
                        best_e = e;
                        improved = true;
                    }
                }
            }
        }
    }
    let mut depth = depths_for(&best);
    // Measure every choice; lower a depth that fails until it holds.
    let mut measured: Vec<Vec<Measured>> = Vec::with_capacity(n);
    let mut level = vec![Level::None; n];
    for t in 0..n {
        loop {
            let (ok, ms, _) = evaluate(t, best[t], depth[t], Level::None, false)?;
            if ok || depth[t] == 0 {
                measured.push(ms);
                break;
            }
            let (ok, ms, lv) = evaluate(t, best[t], depth[t], Level::Head, false)?;
            if ok {
                level[t] = lv;
                measured.push(ms);
                break;
            }
            // A branch retrained at this depth already, or one more
            // retraining if the budget allows.
            let (ok, ms, lv) = evaluate(t, best[t], depth[t], Level::Branch, false)?;
            if ok && lv == Level::Branch {
                level[t] = Level::Branch;
                measured.push(ms);
                break;
            }
            depth[t] -= 1;
        }
        if depth[t] == 0 {
            best[t] = Source::Own;
        }
    }
    // Regenerated tasks: the same choice without regeneration, for the report.
    for t in 0..n {
        if depth[t] == 0 || best[t] == Source::Own {
            level[t] = Level::None;
        }
    }
    let mut before: Vec<Vec<Measured>> = vec![Vec::new(); n];
    for t in 0..n {
        if level[t] != Level::None {
            before[t] = evaluate(t, best[t], depth[t], Level::None, true)?.1;
        }
    }
    bar.finish();

    // Rewrite: the first `depth` blocks of each task read the source's weights.
    rewrite(m, store, &best, &depth)?;
    // Regenerated tensors replace the tasks' own: a refitted classifier, or
    // a retrained branch (layers above the shared depth, pooler,
    // classifier).
    for t in 0..n {
        let key = (t, best[t], depth[t]);
        let task = &spec.tasks[spec_task(t)];
        let (tensors, tag): (Tensors, String) = match level[t] {
            Level::None => continue,
            Level::Head => {
                let (w, b) = heads
                    .get(&key)
                    .cloned()
                    .ok_or_else(|| bug(format!("no refitted head for task `{}`", names[t])))?;
                let map = [("classifier.weight", w), ("classifier.bias", b)]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), Arc::new(v)))
                    .collect();
                (map, "refit-head-v1".to_string())
            }
            Level::Branch => {
                let tr = branches
                    .get(&key)
                    .ok_or_else(|| bug(format!("no retrained branch for task `{}`", names[t])))?;
                (
                    (*tr.tensors).clone(),
                    format!("branch-v1:{:?}", task.regenerate),
                )
            }
        };
        let mut replaced = std::collections::BTreeSet::new();
        let ids: Vec<NodeId> = m.graph.node_indices().map(NodeId).collect();
        for id in ids {
            let node = m.node(id).clone();
            if node.tasks != TaskSet::single(t) {
                continue;
            }
            if !node
                .params
                .iter()
                .any(|p| tensors.contains_key(&m.params[p.0 as usize].name))
            {
                continue;
            }
            let mut new = Vec::with_capacity(node.params.len());
            for &p in &node.params {
                let old = m.params[p.0 as usize].clone();
                let Some(tensor) = tensors.get(&old.name) else {
                    new.push(p);
                    continue;
                };
                let digest = crate::weights::digest_of(&[
                    &tag,
                    &names[t],
                    &format!("{:?}", best[t]),
                    &depth[t].to_string(),
                    &old.digest,
                    &format!("{:?}", task.train),
                ]);
                store.register(&digest, (**tensor).clone()).map_err(bug)?;
                replaced.insert(old.name.clone());
                new.push(m.intern_param(Param {
                    source: names[t].clone(),
                    name: old.name.clone(),
                    shape: old.shape.clone(),
                    digest,
                    bits: None,
                }));
            }
            m.graph[id.0].params = new;
        }
        if let Some(missing) = tensors.keys().find(|k| !replaced.contains(*k)) {
            return Err(bug(format!(
                "regenerated tensor `{missing}` of task `{}` has no node of its own",
                names[t]
            )));
        }
    }
    super::merge::merge(m);
    gc_params(m);
    let before_area = m.clone();
    let area = match spec.workload.area {
        Some(mode) => {
            let cal: Vec<&Batch> = (0..n).map(|t| batches[batch_of[t]]).collect();
            let energy = |m: &Module| per_request_energy(m, store, batches[0]).map(|e| e.0);
            Some(super::area::apply(m, store, mode, &cal, &own, &energy)?)
        }
        None => None,
    };
    // The unshared figure is every task running its own model, whatever
    // area mode adds (computed before it).
    let unshared_pj = match &area {
        Some(_) => per_request_energy(&before_area, store, batches[0])?.1,
        None => 0.0,
    };
    let (shared_pj, unshared_after, per_task_layer) = per_request_energy(m, store, batches[0])?;
    let unshared_pj = if area.is_some() {
        unshared_pj
    } else {
        unshared_after
    };

    let source_name = |t: usize, s: Source| match s {
        Source::Own => "own".to_string(),
        Source::Base => spec.models[group_of(t)].name.clone(),
        Source::Task(r) => names[r].clone(),
    };
    let tree = tree_of(m);
    // Per task, from the tree: blocks computed with others, and the
    // energy it no longer spends (its share of each such block).
    let together = |t: usize| -> Vec<(String, usize)> {
        tree.iter()
            .filter_map(|(label, groups)| {
                let k = groups.iter().find(|g| g.contains(&names[t]))?.len();
                (k > 1).then(|| (label.clone(), k))
            })
            .collect()
    };
    let saved = |t: usize| -> f64 {
        together(t)
            .into_iter()
            .map(|(label, k)| {
                per_task_layer
                    .get(&(names[t].clone(), label))
                    .copied()
                    .unwrap_or(0.0)
                    * (1.0 - 1.0 / k as f64)
            })
            .fold(0.0, |a, e| a + e)
    };
    let tasks: Vec<TaskShare> = (0..n)
        .map(|t| {
            let first = tree
                .first()
                .and_then(|(_, groups)| groups.iter().find(|g| g.contains(&names[t])))
                .map(|g| g.iter().filter(|x| **x != names[t]).cloned().collect())
                .unwrap_or_default();
            TaskShare {
                name: names[t].clone(),
                model: spec.models[group_of(t)].name.clone(),
                blocks: forward::blocks(&spec.models[group_of(t)]),
                shared_blocks: together(t).len(),
                depth: depth[t],
                source: source_name(t, best[t]),
                shared_with: first,
                measured: measured[t].clone(),
                regenerate: match level[t] {
                    Level::None => "none",
                    Level::Head => "head",
                    Level::Branch => "branch",
                },
                before_regeneration: before[t].clone(),
                regeneration_seconds: regen_seconds[t],
                branch: (level[t] == Level::Branch)
                    .then(|| branches.get(&(t, best[t], depth[t])))
                    .flatten()
                    .map(|tr| BranchReport {
                        parameters: tr.parameters,
                        steps: tr.log.steps,
                        first_loss: tr.log.first_loss,
                        last_loss: tr.log.last_loss,
                        retrainings: retrainings[t],
                    }),
                saved_pj: saved(t),
                reach: reach[t]
                    .iter()
                    .map(|(s, d)| (source_name(t, *s), *d))
                    .collect(),
            }
        })
        .collect();
    Ok(Some(Sharing {
        tasks,
        analysis,
        pairs,
        tree,
        unshared_pj,
        shared_pj,
        evaluations: evaluations.load(std::sync::atomic::Ordering::Relaxed),
        calibration_requests: (0..n).map(|t| calibration[t].requests.len()).collect(),
        seconds: t0.elapsed().as_secs_f64(),
        area,
    }))
}

/// Energy per request of a module's program (the counting simulator's
/// per-request work, so programming is excluded); the same work if every
/// task ran its own copy of every node (the unshared model: each node
/// costs the same for each task it serves; the request inputs are loaded
/// once either way); and each task's own energy per (task, layer).
pub type Energies = (f64, f64, HashMap<(String, String), f64>);

/// See [`Energies`]. `m` must not be scheduled yet (`share` runs before
/// `schedule`): request groups would repeat each phase's lines.
pub fn per_request_energy(m: &Module, store: &Store, batch: &Batch) -> Result<Energies, Diags> {
    let pkg =
        crate::backend::program::package(m, &super::Artifacts::default(), store, batch, true)?;
    let mut by = HashMap::new();
    let (mut shared, mut unshared) = (0.0, 0.0);
    let mut in_loop = false;
    for line in &pkg.prog.code {
        match line.inst {
            crate::backend::isa::Inst::ForRequests => in_loop = true,
            crate::backend::isa::Inst::End => in_loop = false,
            _ => {}
        }
        if !in_loop {
            continue;
        }
        let c = crate::sim::cost::cost(&line.inst, &pkg.prog, &pkg.hw).total();
        shared += c;
        if line.layer == "input" || line.tasks.is_empty() {
            unshared += c;
            continue;
        }
        unshared += c * line.tasks.len() as f64;
        for t in &line.tasks {
            *by.entry((t.clone(), line.layer.clone())).or_insert(0.0) += c;
        }
    }
    Ok((shared, unshared, by))
}

/// Whether some node computes a task with weights other than the task's
/// own (the module was generated by `share` already).
pub fn already_shared(m: &Module, store: &Store) -> bool {
    m.graph.node_weights().any(|n| {
        n.params.iter().any(|p| {
            let param = &m.params[p.0 as usize];
            n.tasks.iter().any(|t| {
                let st = m.spec.workload.tasks[t];
                store
                    .lookup(st, &param.name)
                    .is_some_and(|(d, _)| *d != param.digest)
            })
        })
    })
}

/// Points the params of every task's first `depth[t]` blocks at its source.
fn rewrite(m: &mut Module, store: &Store, src: &[Source], depth: &[usize]) -> Result<(), Diags> {
    let spec: Spec = m.spec.clone();
    let ids: Vec<NodeId> = m.graph.node_indices().map(NodeId).collect();
    for id in ids {
        let node = m.node(id).clone();
        if node.tasks.len() != 1 {
            continue;
        }
        let Some(t) = node.tasks.iter().next() else {
            continue;
        };
        let Some(b) = block_of(node.layer) else {
            continue;
        };
        if b >= depth[t] || src[t] == Source::Own {
            continue;
        }
        let st = spec.workload.tasks[t];
        let model = spec.tasks[st].base;
        let mut new_params = Vec::with_capacity(node.params.len());
        for &p in &node.params {
            let old = m.params[p.0 as usize].clone();
            let (digest, source) = match src[t] {
                Source::Base => (
                    store.base_digest(model, &old.name).cloned(),
                    spec.models[model].name.clone(),
                ),
                Source::Task(r) => {
                    let sr = spec.workload.tasks[r];
                    (
                        store.lookup(sr, &old.name).map(|d| d.0.clone()),
                        store
                            .lookup(sr, &old.name)
                            .map(|d| d.1.clone())
                            .unwrap_or_default(),
                    )
                }
                Source::Own => (Some(old.digest.clone()), old.source.clone()),
            };
            let digest =
                digest.ok_or_else(|| bug(format!("no source weights for `{}`", old.name)))?;
            new_params.push(m.intern_param(Param {
                source,
                name: old.name.clone(),
                shape: old.shape.clone(),
                digest,
                bits: None,
            }));
        }
        m.graph[id.0].params = new_params;
    }
    Ok(())
}

/// Drops params no node uses and renumbers the rest in first-use order of
/// their old ids (so the numbering stays stable).
pub fn gc_params(m: &mut Module) {
    let mut used = vec![false; m.params.len()];
    for n in m.graph.node_weights() {
        for p in &n.params {
            used[p.0 as usize] = true;
        }
    }
    let mut map = vec![u32::MAX; m.params.len()];
    let mut kept = Vec::new();
    for (i, p) in m.params.iter().enumerate() {
        if used[i] {
            map[i] = kept.len() as u32;
            kept.push(p.clone());
        }
    }
    m.params = kept;
    for n in m.graph.node_weights_mut() {
        for p in n.params.iter_mut() {
            *p = ParamId(map[p.0 as usize]);
        }
    }
}

/// Per block, the groups of tasks computing it together, read off the
/// module: the block's last node (its output LayerNorm) per task.
pub fn tree_of(m: &Module) -> Vec<(String, Vec<Vec<String>>)> {
    let names = m.task_names();
    let mut per_block: BTreeMap<usize, BTreeMap<TaskSet, ()>> = BTreeMap::new();
    for n in m.graph.node_weights() {
        if let (Some(b), crate::ir::Op::LayerNorm { .. }) = (block_of(n.layer), &n.op) {
            per_block.entry(b).or_default().insert(n.tasks, ());
        }
    }
    per_block
        .into_iter()
        .map(|(b, sets)| {
            // A block has two LayerNorms per task set in encoder layers;
            // keep the maximal sets (the block's output is computed by the
            // same set as its attention LayerNorm).
            let mut groups: Vec<Vec<String>> = sets
                .keys()
                .map(|s| s.iter().map(|t| names[t].to_string()).collect())
                .collect();
            groups.sort_by_key(|g: &Vec<String>| {
                let first = g.first().cloned().unwrap_or_default();
                names.iter().position(|n| *n == first).unwrap_or(0)
            });
            groups.dedup();
            let label = if b == 0 {
                "emb".to_string()
            } else {
                format!("{}", b - 1)
            };
            (label, groups)
        })
        .collect()
}

/// The per-task table of [`text`]: what each task shares, and its budgets
/// (one row each; with the value before regeneration beneath when a
/// regeneration was used), then each branch retraining's figures.
fn task_table(s: &Sharing) -> String {
    use crate::table::{Align, Table};
    use std::fmt::Write;
    let (l, r) = (Align::Left, Align::Right);
    let mut tb = Table::new(&[
        ("task", l),
        ("layers", r),
        ("source", l),
        ("shared with", l),
        ("saved uJ", r),
        ("budget", l),
        ("measured", r),
        ("bound", r),
        ("", l),
    ])
    .gap(2);
    for t in &s.tasks {
        for (i, mz) in t.measured.iter().enumerate() {
            let mut row = if i == 0 {
                vec![
                    t.name.clone(),
                    // One convention with `mgen compare`: encoder layers
                    // computed with other tasks, of the model's layers (the
                    // embeddings below a shared layer are shared too).
                    format!(
                        "{}/{}",
                        t.shared_blocks.saturating_sub(1),
                        t.blocks.saturating_sub(1)
                    ),
                    t.source.clone(),
                    if t.shared_with.is_empty() {
                        "-".to_string()
                    } else {
                        t.shared_with.join(", ")
                    },
                    format!("{:.3}", t.saved_pj * 1e-6),
                ]
            } else {
                vec![String::new(); 5]
            };
            row.extend([
                mz.budget.clone(),
                format!("{:.4}", mz.value),
                format!("{:.4}", mz.bound),
                if mz.holds { "" } else { "FAILS" }.to_string(),
            ]);
            tb.row(row);
            if let Some(b) = t.before_regeneration.get(i) {
                let what = match t.regenerate {
                    "branch" => "(branch retrained; without:",
                    _ => "(head refitted; without it:",
                };
                let mut row = vec![String::new(); 5];
                row.extend([what.to_string(), format!("{:.4})", b.value)]);
                tb.row(row);
            }
        }
    }
    let mut o = tb.render();
    for t in &s.tasks {
        if let Some(b) = &t.branch {
            let _ = writeln!(
                o,
                "{}: branch retraining: {} values, {} steps, loss {:.4} -> {:.4}; {} retraining(s), {:.1} s",
                t.name,
                b.parameters,
                b.steps,
                b.first_loss,
                b.last_loss,
                b.retrainings,
                t.regeneration_seconds
            );
        }
    }
    o
}

/// The sharing report as text: the tree, then one row per task.
pub fn text(s: &Sharing) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "sharing tree (per block, the groups of tasks that compute it once):"
    );
    for (b, groups) in &s.tree {
        let g: Vec<String> = groups
            .iter()
            .map(|g| format!("{{{}}}", g.join(", ")))
            .collect();
        let label = if b == "emb" {
            "emb".to_string()
        } else {
            format!("layer {b}")
        };
        let _ = writeln!(o, "  {label:<9} {}", g.join(" "));
    }
    let _ = writeln!(o);
    o.push_str(&task_table(s));
    let _ = writeln!(o);
    let _ = writeln!(o, "redundancy analysis (per block; emb, then layers):");
    for a in &s.analysis {
        let d: Vec<String> = a.distance.iter().map(|x| format!("{x:.4}")).collect();
        let c: Vec<String> = a.swap_change.iter().map(|x| format!("{x:.4}")).collect();
        let _ = writeln!(
            o,
            "  {:<14} vs {:<12} weight distance  {}",
            a.name,
            a.base,
            d.join(" ")
        );
        let _ = writeln!(
            o,
            "  {:<14}    {:<12} output change    {}",
            "",
            "",
            c.join(" ")
        );
    }
    for p in &s.pairs {
        let d: Vec<String> = p.distance.iter().map(|x| format!("{x:.4}")).collect();
        let _ = writeln!(
            o,
            "  {:<14} vs {:<12} weight distance  {}",
            p.a,
            p.b,
            d.join(" ")
        );
    }
    let reqs = s.calibration_requests.iter().copied().max().unwrap_or(0);
    let _ = writeln!(
        o,
        "\nestimated energy per request: {:.3} uJ unshared, {:.3} uJ shared ({:.3}x)",
        s.unshared_pj * 1e-6,
        s.shared_pj * 1e-6,
        s.unshared_pj / s.shared_pj.max(1e-30)
    );
    if let Some(a) = &s.area {
        let _ = writeln!(
            o,
            "\narea mode: each task's own matrices as the base's (programmed once, reused) plus a {}-bit delta",
            a.delta_bits
        );
        let _ = writeln!(
            o,
            "  crossbars {} -> {} ({:.3}x fewer), area {:.2} -> {:.2} mm2; energy per request {:.3} -> {:.3} uJ ({:.3}x more)",
            a.crossbars_without,
            a.crossbars_with,
            a.crossbars_without as f64 / (a.crossbars_with.max(1)) as f64,
            a.area_without_mm2,
            a.area_with_mm2,
            a.energy_without_pj * 1e-6,
            a.energy_with_pj * 1e-6,
            a.energy_with_pj / a.energy_without_pj.max(1e-30)
        );
        let _ = writeln!(
            o,
            "  {:<14} {:>7} {:>7} {:<14} {:<30} {:>9} {:>9}",
            "task", "deltas", "zeros", "applied", "budget", "measured", "bound"
        );
        for t in &a.tasks {
            for (i, mz) in t.measured.iter().enumerate() {
                let (name, deltas, zeros, applied) = if i == 0 {
                    (
                        t.name.clone(),
                        t.delta_matrices.to_string(),
                        format!("{:.1}%", 100.0 * t.zero_fraction),
                        match t.kept_whole {
                            None => "yes".to_string(),
                            Some(why) => format!("no: {why}"),
                        },
                    )
                } else {
                    Default::default()
                };
                let _ = writeln!(
                    o,
                    "  {:<14} {:>7} {:>7} {:<14} {:<30} {:>9.4} {:>9.4}",
                    name, deltas, zeros, applied, mz.budget, mz.value, mz.bound
                );
            }
        }
    }
    let _ = writeln!(
        o,
        "search: {} evaluations on up to {} calibration requests per task (`-v` or --json for its time)",
        s.evaluations, reqs
    );
    o
}

/// The tree as an SVG: one column per task, one row per block; cells of
/// tasks that compute a block together share a colour (grey: computed
/// alone).
pub fn tree_svg(s: &Sharing) -> String {
    use std::fmt::Write;
    let names: Vec<&str> = s.tasks.iter().map(|t| t.name.as_str()).collect();
    let (left, top, cw, rh) = (80.0, 60.0, 84.0, 20.0);
    let w = (left + cw * names.len() as f64 + 20.0).max(480.0);
    let h = top + rh * s.tree.len() as f64 + 30.0;
    let palette = [
        "#4a78b5", "#e07b39", "#5aa05a", "#b5524a", "#8a6bb8", "#8c6d5a", "#d17fb4", "#7f7f3f",
    ];
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        o,
        r#"<text x="10" y="20" font-size="15" font-weight="bold">Sharing tree: same colour = computed once for those tasks</text>"#
    );
    for (j, n) in names.iter().enumerate() {
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            left + cw * j as f64 + cw / 2.0,
            top - 8.0,
            n.replace('&', "&amp;").replace('<', "&lt;")
        );
    }
    for (i, (block, groups)) in s.tree.iter().enumerate() {
        let y = top + rh * i as f64;
        let label = if block == "emb" {
            "emb".to_string()
        } else {
            format!("layer {block}")
        };
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{}" text-anchor="end">{label}</text>"#,
            left - 6.0,
            y + 14.0
        );
        let mut colour = 0usize;
        for g in groups {
            let fill = if g.len() > 1 {
                colour += 1;
                palette[(colour - 1) % palette.len()]
            } else {
                "#d8d8d8"
            };
            for t in g {
                if let Some(j) = names.iter().position(|n| n == t) {
                    let _ = writeln!(
                        o,
                        r#"<rect x="{:.1}" y="{y}" width="{}" height="{}" fill="{fill}" stroke="white"/>"#,
                        left + cw * j as f64,
                        cw,
                        rh
                    );
                }
            }
        }
    }
    let _ = writeln!(o, "</svg>");
    o
}
