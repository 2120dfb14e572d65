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
//!
//! # Parts
//!
//! [`share`] runs the steps above in order, each a part of its own:
//! - `inputs`: what one run reads and never changes (the spec, the
//!   weights, the distinct calibration and training batches) and the tensor
//!   getter of a source;
//! - `redundancy`: step 1 (own outputs, distances, candidate sources);
//! - `evaluate`: the `Evaluator`, which measures one candidate (task,
//!   source, depth, regeneration level) and owns every cache of the run
//!   (trunk activations, verdicts, refitted heads, retrained branches);
//! - `regenerate`: head refits ([`ridge_head`]) and branch retraining for
//!   the evaluator;
//! - [`ShareCache`] (`cache`): retrained branches kept across runs by the
//!   caller (the pass takes it from [`super::Context::share_cache`]);
//! - `search`: steps 2 to 4 (reach, the tree, the final measurements);
//! - `rewrite`: the module rewritten to the chosen tree, regenerated
//!   tensors installed, unused params dropped;
//! - `energy`: the counting simulator's energy per request, and the
//!   tree's figures (with area mode applied when the workload asks);
//! - `report`: the report types and the report of a run; `render`: it as
//!   text ([`text`]) and SVG ([`tree_svg`]);
//! - `measure`: budgets measured on outputs ([`measure()`]).
//!
//! Every cache of a run is keyed by everything that determines its value,
//! so a hit returns exactly what a recomputation would: the generator's
//! outputs do not depend on which caches are warm (only the reported
//! regeneration seconds do).

mod cache;
mod energy;
mod evaluate;
mod inputs;
mod joint;
mod measure;
mod redundancy;
mod regenerate;
mod render;
mod report;
mod rewrite;
mod search;

pub use cache::Hit;
pub use cache::ShareCache;
pub use energy::{Energies, EnergyOracle};
pub use measure::{Measured, agree, argmax, measure, pearson, worst};
pub use regenerate::ridge_head;
pub use render::{text, tree_svg};
pub use report::{
    BranchReport, JointBudgets, JointChosen, JointReport, JointTrial, PairAnalysis, Sharing,
    TaskAnalysis, TaskShare, tree_of,
};
pub use rewrite::{already_shared, gc_params};

use super::{Context, Pass};
use crate::diag::{Diagnostic, Diags};
use crate::ir::{Layer, Module};
use ndarray::ArrayD;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

pub struct Share;

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
        arts.sharing = share(m, cx)?;
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

/// How far a candidate is regenerated before it is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Level {
    None,
    Head,
    Branch,
    /// Trained jointly with its group's trunk (`joint`).
    Joint,
}

/// A task model's tensors by name.
type Getter<'a> = dyn Fn(&str) -> Result<Arc<ArrayD<f32>>, String> + Sync + 'a;
/// A refitted head: (classifier weight `[n, h]`, bias `[n]`).
type HeadPair = (ArrayD<f32>, ArrayD<f32>);
/// Regenerated tensors by Hugging Face name.
type Tensors = HashMap<String, Arc<ArrayD<f32>>>;

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

/// Runs the model generator on `m` (see the module docs) with what `cx`
/// holds: the weights, each task's calibration and training inputs, the
/// depth caps, the retrained branches of its [`ShareCache`] (reused and
/// added to) and the energy oracle that prices a candidate tree. Returns
/// the report, or `None` when `m` was generated by `share` already.
pub fn share(m: &mut Module, cx: &Context) -> Result<Option<Sharing>, Diags> {
    let missing = |what: &str| {
        Diags::from(Diagnostic::internal(format!(
            "the `share` pass needs {what}, and the pass context has none"
        )))
    };
    let store = cx.store.ok_or_else(|| missing("the weights"))?;
    let energy = cx.energy.ok_or_else(|| missing("an energy oracle"))?;
    let (calibration, training) = (&cx.calibration, &cx.training);
    let started = Instant::now();
    let n = m.spec.workload.tasks.len();
    if calibration.len() != n {
        return Err(bug(format!(
            "the `share` pass got calibration inputs for {} tasks, the workload has {n}",
            calibration.len()
        )));
    }
    // A module read from a `.mir` written after `share` already computes
    // some task with weights that are not its own: its tree is kept as it
    // is (the search measures paths from each task's own weights, which
    // such a module no longer has).
    if already_shared(m, store) {
        return Ok(None);
    }
    let w = inputs::Inputs::new(m, store, calibration, training);
    // The search's length is not known in advance: a count (candidate
    // evaluations and training steps), no ETA.
    let steps = evaluate::Steps::new(cx.progress);
    let analysis = redundancy::analyse(&w, &steps, &cx.share_cache)?;
    let alone = regenerate::alone(m, n);
    let mut ev = evaluate::Evaluator::new(&w, &analysis.own, alone, &cx.share_cache, steps);
    let mut choice = search::search(&mut ev, &w, &analysis.candidates, &cx.depth_caps)?;
    let joint = joint::improve(&mut ev, &w, &mut choice, &cx.depth_caps)?;
    let (found, evaluations) = ev.finish();
    rewrite::rewrite(m, store, &choice.source, &choice.depth)?;
    rewrite::install_regenerated(m, &w, &choice, &found, &joint)?;
    super::merge::merge(m);
    gc_params(m);
    let figures = energy::of_tree(m, &w, &analysis.own, energy)?;
    let run = report::Run {
        analysis,
        choice,
        found,
        joint,
        figures,
        evaluations,
        started,
    };
    Ok(Some(run.sharing(m, &w, calibration)))
}
