//! The report the pass leaves in [`crate::Artifacts::sharing`]:
//! its types ([`Sharing`] and its parts), the tree read off a module
//! ([`tree_of`]), and the report of one run (`Run::sharing`).
//!
//! Invariants: `Sharing::tasks` and `Sharing::analysis` have one entry per
//! workload task, in workload order; the tree and every task's
//! `shared_blocks` and `shared_with` are read off the final module (exact
//! merges count too), not off the search's choice.

use super::energy::Figures;
use super::evaluate::Regenerated;
use super::inputs::Inputs;
use super::measure::Measured;
use super::redundancy::Analysis;
use super::search::Choice;
use super::{Level, Source, block_of};
use crate::data::Batch;
use crate::forward;
use crate::ir::{Module, TaskSet};
use serde::Serialize;
use std::collections::BTreeMap;

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
    /// base model's name, a task's name, `joint` (a trunk trained for its
    /// group, over the base's embeddings), or `own`.
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
    /// over the first [`super::SWAP_REQUESTS`] calibration requests).
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
    /// Tasks whose own outputs (step 1) an earlier run in this process
    /// had computed on the same weights and inputs: `compare`'s later chip
    /// rounds and levels reuse them all.
    pub own_reused: usize,
    /// Calibration requests per task.
    pub calibration_requests: Vec<usize>,
    pub seconds: f64,
    /// Area mode (`area = delta(bits = N)`), when the workload asks for it.
    pub area: Option<crate::area::AreaReport>,
    /// Joint regeneration: one entry per group searched (adopted or not).
    pub joint: Vec<JointReport>,
}

/// What joint regeneration did for one group of tasks (`regenerate =
/// joint`): every training the depth search ran, and the one it chose.
#[derive(Debug, Clone, Serialize)]
pub struct JointReport {
    /// The base model of the group.
    pub model: String,
    /// The workload's tasks of that model that asked for `joint`.
    pub tasks: Vec<String>,
    /// Whether the tree uses the chosen training (its energy model's
    /// weight is below the frozen tree's).
    pub adopted: bool,
    /// The cheapest training whose budgets all held, if one did.
    pub chosen: Option<JointChosen>,
    /// Every training the search ran, in order.
    pub trials: Vec<JointTrial>,
    /// The search's block energy model: the frozen tree's weight and the
    /// chosen joint tree's (crossbar reads per request, relative).
    pub frozen_weight: f64,
    pub joint_weight: f64,
    /// The same model's weight with every task computing its own model
    /// (the baseline): `unshared_weight / weight` estimates a tree's
    /// energy ratio.
    pub unshared_weight: f64,
}

/// The training a [`JointReport`]'s search chose.
#[derive(Debug, Clone, Serialize)]
pub struct JointChosen {
    /// The tasks trained together (those that kept their budgets).
    pub tasks: Vec<String>,
    /// Blocks shared: the base's embeddings and `depth - 1` trained
    /// encoder layers.
    pub depth: usize,
    /// `trained` in this run, or found in the cache (`memory`, `disk`).
    pub cache: super::cache::Hit,
    /// The cache key (the digest of everything the training depends on).
    pub key: String,
    /// Values trained: the trunk once, plus every branch.
    pub parameters: usize,
    /// Epochs completed, optimiser steps, and the training loss (summed
    /// over the tasks) at the initial and at the final weights.
    pub epochs: u32,
    pub steps: usize,
    pub loss_before: f64,
    pub loss_after: f64,
    /// Mean training loss of each epoch.
    pub epoch_losses: Vec<f64>,
    /// Seconds the training took (from the cache: when it first ran), and
    /// whether `max_minutes` stopped it.
    pub train_seconds: f64,
    pub stopped_by_time: bool,
    /// Per task: its budgets at `depth` without joint training (the frozen
    /// base trunk under its own layers, its classifier refitted) and with
    /// it.
    pub budgets: Vec<JointBudgets>,
}

/// A task's budgets in a [`JointChosen`] or a [`JointTrial`].
#[derive(Debug, Clone, Serialize)]
pub struct JointBudgets {
    pub task: String,
    pub before: Vec<Measured>,
    pub after: Vec<Measured>,
}

/// One training of the depth search.
#[derive(Debug, Clone, Serialize)]
pub struct JointTrial {
    pub depth: usize,
    pub tasks: Vec<String>,
    /// Tasks whose budgets failed with the trained weights.
    pub failed: Vec<String>,
    /// Per task: the budgets with the trained weights.
    pub after: Vec<(String, Vec<Measured>)>,
    pub cache: super::cache::Hit,
    pub seconds: f64,
    /// The block energy model's weight of the tree with this training
    /// (compare [`JointReport::unshared_weight`]).
    pub weight: f64,
    /// The training loss (summed over the tasks) at the initial and the
    /// final weights, and the same per task.
    pub loss_before: f64,
    pub loss_after: f64,
    pub task_loss_before: Vec<f64>,
    pub task_loss_after: Vec<f64>,
}

impl JointReport {
    fn of(g: &super::joint::Group, w: &Inputs) -> JointReport {
        let names =
            |ts: &[usize]| -> Vec<String> { ts.iter().map(|&t| w.names[t].clone()).collect() };
        let mut tasks: Vec<usize> = g.trials.iter().flat_map(|t| t.tasks.clone()).collect();
        tasks.sort_unstable();
        tasks.dedup();
        JointReport {
            model: w.spec.models[g.model].name.clone(),
            tasks: names(&tasks),
            adopted: g.adopted,
            chosen: g.chosen.as_ref().map(|c| JointChosen::of(c, w)),
            trials: g
                .trials
                .iter()
                .map(|tr| JointTrial {
                    depth: tr.depth,
                    tasks: names(&tr.tasks),
                    failed: names(&tr.failed),
                    after: tr
                        .tasks
                        .iter()
                        .zip(&tr.after)
                        .map(|(&t, ms)| (w.names[t].clone(), ms.clone()))
                        .collect(),
                    cache: tr.hit,
                    seconds: tr.seconds,
                    weight: tr.weight,
                    loss_before: tr.log.loss_before,
                    loss_after: tr.log.loss_after,
                    task_loss_before: tr.log.task_loss_before.clone(),
                    task_loss_after: tr.log.task_loss_after.clone(),
                })
                .collect(),
            frozen_weight: g.weights.0,
            joint_weight: g.weights.1,
            unshared_weight: super::joint::unshared_weight(w),
        }
    }
}

impl JointChosen {
    fn of(c: &super::joint::Chosen, w: &Inputs) -> JointChosen {
        let values = |t: &super::Tensors| t.values().map(|a| a.len()).sum::<usize>();
        let log = &c.trained.log;
        JointChosen {
            tasks: c.tasks.iter().map(|&t| w.names[t].clone()).collect(),
            depth: c.depth,
            cache: c.hit,
            key: c.key.clone(),
            parameters: values(&c.trained.trunk)
                + c.trained.branches.iter().map(|b| values(b)).sum::<usize>(),
            epochs: log.epochs,
            steps: log.steps,
            loss_before: log.loss_before,
            loss_after: log.loss_after,
            epoch_losses: log.epoch_losses.clone(),
            train_seconds: log.seconds,
            stopped_by_time: log.stopped_by_time,
            budgets: c
                .tasks
                .iter()
                .enumerate()
                .map(|(i, &t)| JointBudgets {
                    task: w.names[t].clone(),
                    before: c.before[i].clone(),
                    after: c.after[i].clone(),
                })
                .collect(),
        }
    }
}

/// What branch retraining did for a task (the retraining its final choice
/// uses).
#[derive(Debug, Clone, Serialize)]
pub struct BranchReport {
    /// Values retrained (its layers above the shared depth and its head).
    pub parameters: usize,
    /// Optimiser steps, and the mean training loss at the initial and at
    /// the final weights.
    pub steps: usize,
    pub first_loss: f64,
    pub last_loss: f64,
    /// Retrainings the search ran for this task (each a candidate depth).
    pub retrainings: usize,
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

/// Everything one run found, to be reported.
pub(super) struct Run {
    pub analysis: Analysis,
    pub choice: Choice,
    pub found: Regenerated,
    pub joint: Vec<super::joint::Group>,
    pub figures: Figures,
    pub evaluations: usize,
    pub started: std::time::Instant,
}

impl Run {
    /// The report of the run, with the tree of the final module `m`.
    pub fn sharing(self, m: &Module, w: &Inputs, calibration: &[Batch]) -> Sharing {
        let tree = tree_of(m);
        let tasks: Vec<TaskShare> = (0..w.n()).map(|t| self.task(w, &tree, t)).collect();
        Sharing {
            tasks,
            analysis: self.analysis.tasks,
            pairs: self.analysis.pairs,
            tree,
            unshared_pj: self.figures.unshared_pj,
            shared_pj: self.figures.shared_pj,
            evaluations: self.evaluations,
            own_reused: self.analysis.own_reused,
            calibration_requests: calibration.iter().map(|b| b.requests.len()).collect(),
            seconds: self.started.elapsed().as_secs_f64(),
            area: self.figures.area,
            joint: self.joint.iter().map(|g| JointReport::of(g, w)).collect(),
        }
    }

    /// What the generator chose for task `t`, with the final `tree`.
    fn task(&self, w: &Inputs, tree: &[(String, Vec<Vec<String>>)], t: usize) -> TaskShare {
        let (c, name) = (&self.choice, &w.names[t]);
        let source_name = |s: Source| match s {
            Source::Own => "own".to_string(),
            Source::Base => w.model(t).name.clone(),
            Source::Task(r) => w.names[r].clone(),
        };
        // Blocks computed with others, and the energy the task no longer
        // spends (its share of each such block).
        let together: Vec<(String, usize)> = tree
            .iter()
            .filter_map(|(label, groups)| {
                let k = groups.iter().find(|g| g.contains(name))?.len();
                (k > 1).then(|| (label.clone(), k))
            })
            .collect();
        let saved = together
            .iter()
            .map(|(label, k)| {
                self.figures
                    .per_task_layer
                    .get(&(name.clone(), label.clone()))
                    .copied()
                    .unwrap_or(0.0)
                    * (1.0 - 1.0 / *k as f64)
            })
            .fold(0.0, |a, e| a + e);
        let first = tree
            .first()
            .and_then(|(_, groups)| groups.iter().find(|g| g.contains(name)))
            .map(|g| g.iter().filter(|x| *x != name).cloned().collect())
            .unwrap_or_default();
        TaskShare {
            name: name.clone(),
            model: w.model(t).name.clone(),
            blocks: forward::blocks(w.model(t)),
            shared_blocks: together.len(),
            depth: c.depth[t],
            source: match c.level[t] {
                Level::Joint => "joint".to_string(),
                _ => source_name(c.source[t]),
            },
            shared_with: first,
            measured: c.measured[t].clone(),
            regenerate: match c.level[t] {
                Level::None => "none",
                Level::Head => "head",
                Level::Branch => "branch",
                Level::Joint => "joint",
            },
            before_regeneration: c.before[t].clone(),
            regeneration_seconds: self.found.seconds[t],
            branch: self.branch(c, t),
            saved_pj: saved,
            reach: c.reach[t]
                .iter()
                .map(|(s, d)| (source_name(*s), *d))
                .collect(),
        }
    }

    /// What branch retraining did for task `t`, if its choice uses it.
    fn branch(&self, c: &Choice, t: usize) -> Option<BranchReport> {
        if c.level[t] != Level::Branch {
            return None;
        }
        let tr = self.found.branches.get(&(t, c.source[t], c.depth[t]))?;
        Some(BranchReport {
            parameters: tr.parameters,
            steps: tr.log.steps,
            first_loss: tr.log.first_loss,
            last_loss: tr.log.last_loss,
            retrainings: self.found.retrainings[t],
        })
    }
}
