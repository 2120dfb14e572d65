//! Joint regeneration (`regenerate = joint`): for a group of tasks of one
//! base model, the shared trunk and every task's branch above it are
//! trained **together** ([`mgen_train::train`]), so the trunk is produced
//! for all its tasks rather than borrowed frozen from one of them.
//!
//! After the frozen search (steps 2 to 4 of [`super`]) has chosen a tree,
//! [`improve`] runs per base model whose workload tasks ask for `joint`
//! (at least two, each with encoder layers and head of its own):
//! 1. the trunk depth `d` (blocks `0..d` shared; block 0, the embeddings,
//!    stays the base's and frozen) is searched by bisection between 1 and
//!    the model's block count, trying the deeper half first, at most
//!    `trials` trainings (`joint(layers = K)` tries only `d = K + 1`,
//!    or the chip rounds' cap if lower); a depth whose tree would not be
//!    cheaper than the frozen tree is not trained;
//! 2. at each depth the group is trained from the base's trunk and each
//!    task's own branch, distilling from each task's own model on its
//!    training inputs (plus its labels), and every task's budgets are
//!    measured on its calibration inputs with the trained weights (the
//!    float reference, [`crate::forward`]);
//! 3. when some tasks fail and at least two hold, the group is trained
//!    again without the failing ones at the same depth (they keep their
//!    frozen choice); a group that still fails makes the depth too deep;
//! 4. of the depths that held, the one whose tree is cheapest (the block
//!    energy model of the search) is adopted when it is cheaper than the
//!    frozen tree: its tasks get source `Base`, depth `d` and level
//!    `Joint`, and the rewrite installs the trained trunk once (one digest
//!    for the group, so `merge` shares it) and each task's branch.
//!
//! Invariants: a training is a pure function of what its key digests (the
//! group's tasks, heads and weights, the base's weights, the depth, the
//! settings, the seed, every training request), so it is looked up in the
//! [`ShareCache`](super::ShareCache) — memory, then its folder — before it
//! runs; the budgets of an adopted group are measured, never assumed; a
//! task outside the adopted group keeps its frozen choice, whose weights
//! are all still in the store.

use super::cache::{Hit, JointTrained};
use super::evaluate::Evaluator;
use super::inputs::Inputs;
use super::measure::{Measured, measure};
use super::search::{Choice, block_weight};
use super::{Getter, Level, Source, Tensors, bug};
use crate::data::Label;
use crate::diag::Diags;
use crate::forward::{self, Req};
use crate::spec::JointOpts;
use crate::weights::layout;
use ndarray::{ArrayD, ArrayView2, Ix2};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

/// One joint training the search ran (or found in the cache).
#[derive(Debug, Clone)]
pub(super) struct Trial {
    pub depth: usize,
    pub tasks: Vec<usize>,
    /// The tasks whose budgets failed with the trained weights.
    pub failed: Vec<usize>,
    /// Per task of `tasks`: its budgets with the trained weights.
    pub after: Vec<Vec<Measured>>,
    pub hit: Hit,
    pub seconds: f64,
    /// The block energy model's weight of the tree with this training.
    pub weight: f64,
    /// The training's log (losses before and after, per task).
    pub log: mgen_train::Log,
}

/// A group's outcome: what the search tried, and the training it chose
/// (if any depth held).
#[derive(Debug, Clone)]
pub(super) struct Group {
    /// The spec model (base) of the group.
    pub model: usize,
    /// Every training the search ran for the group, in order.
    pub trials: Vec<Trial>,
    pub chosen: Option<Chosen>,
    /// Whether the tree uses it (cheaper than the frozen tree).
    pub adopted: bool,
    /// The block energy model's weight of the frozen tree and of the
    /// chosen one.
    pub weights: (f64, f64),
}

/// The training a group's search chose: the cheapest that held.
#[derive(Debug, Clone)]
pub(super) struct Chosen {
    pub depth: usize,
    /// Workload tasks, in workload order.
    pub tasks: Vec<usize>,
    pub trained: JointTrained,
    /// The digest the training is cached under.
    pub key: String,
    pub hit: Hit,
    /// Per task of `tasks`: budgets at depth `d` without joint training
    /// (the frozen base trunk under the task's own layers, its classifier
    /// refitted: what sharing that deep gives without it) and with it.
    pub before: Vec<Vec<Measured>>,
    pub after: Vec<Vec<Measured>>,
}

/// Per distinct training batch of the run: block 0's (the base's
/// embeddings') output of every request, computed once.
type Embedded = HashMap<usize, Arc<Vec<ArrayD<f32>>>>;

/// Runs joint regeneration for every group that asks for it (see the
/// module docs); adopts into `choice` the groups that win. Returns every
/// group searched, adopted or not.
pub(super) fn improve<'a>(
    ev: &mut Evaluator<'a>,
    w: &'a Inputs<'a>,
    choice: &mut Choice,
    caps: &[Option<usize>],
) -> Result<Vec<Group>, Diags> {
    let mut out = Vec::new();
    let mut embedded = Embedded::new();
    for g in 0..w.spec.models.len() {
        let tasks: Vec<usize> = (0..w.n())
            .filter(|&t| {
                w.group_of(t) == g && w.task(t).regenerate.joint().is_some() && ev.alone(t)
            })
            .collect();
        if tasks.len() < 2 {
            continue;
        }
        let mut s = GroupSearch {
            ev: &mut *ev,
            w,
            g,
            caps,
            embedded: &mut embedded,
            trials: Vec::new(),
        };
        let group = s.run(choice, tasks)?;
        if let (true, Some(c)) = (group.adopted, &group.chosen) {
            adopt(choice, c);
        }
        out.push(group);
    }
    Ok(out)
}

/// Sets the group's tasks to the joint tree.
fn adopt(choice: &mut Choice, g: &Chosen) {
    for (i, &t) in g.tasks.iter().enumerate() {
        choice.source[t] = Source::Base;
        choice.depth[t] = g.depth;
        choice.level[t] = Level::Joint;
        choice.measured[t] = g.after[i].clone();
        choice.before[t] = g.before[i].clone();
    }
}

/// The block energy model's weight of a tree: every distinct computation
/// of a block counted once. Task `t` computes blocks `b < depth[t]` as its
/// source's (the base's, a task's own) and the rest as its own; tasks in
/// `joint` (a group at depth `d`) compute the embeddings as the base's and
/// blocks `1..d` as the group's one trunk.
pub(super) fn tree_weight(
    w: &Inputs,
    source: &[Source],
    depth: &[usize],
    joint: Option<(&[usize], usize)>,
) -> f64 {
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    enum Who {
        Base,
        Own(usize),
        Joint,
    }
    let mut computed: BTreeMap<(usize, Who, usize), f64> = BTreeMap::new();
    for t in 0..w.n() {
        let g = w.group_of(t);
        let nb = forward::blocks(&w.spec.models[g]);
        let jd = joint.and_then(|(ts, d)| ts.contains(&t).then_some(d));
        for b in 0..nb {
            let who = match jd {
                Some(_) if b == 0 => Who::Base,
                Some(d) if b < d => Who::Joint,
                Some(_) => Who::Own(t),
                None if b >= depth[t] => Who::Own(t),
                None => match source[t] {
                    Source::Base => Who::Base,
                    Source::Task(r) => Who::Own(r),
                    Source::Own => Who::Own(t),
                },
            };
            computed
                .entry((g, who, b))
                .or_insert_with(|| block_weight(w, g, b));
        }
    }
    computed.values().sum()
}

/// The block energy model's weight of the baseline: every task computes
/// its own whole model.
pub(super) fn unshared_weight(w: &Inputs) -> f64 {
    let n = w.n();
    tree_weight(w, &vec![Source::Own; n], &vec![0; n], None)
}

/// The search of one group (see the module docs).
struct GroupSearch<'e, 'a> {
    ev: &'e mut Evaluator<'a>,
    w: &'a Inputs<'a>,
    g: usize,
    /// Per task, the deepest sharing allowed (`compare`'s chip rounds).
    caps: &'e [Option<usize>],
    embedded: &'e mut Embedded,
    trials: Vec<Trial>,
}

/// One training measured: (trained, key, hit, budgets after, per task).
struct Attempt {
    trained: JointTrained,
    key: String,
    hit: Hit,
    after: Vec<Vec<Measured>>,
}

impl GroupSearch<'_, '_> {
    fn run(&mut self, choice: &Choice, tasks: Vec<usize>) -> Result<Group, Diags> {
        let w = self.w;
        let opts = w.task(tasks[0]).regenerate.joint().unwrap_or_default();
        let nb = forward::blocks(&w.spec.models[self.g]);
        let frozen = tree_weight(w, &choice.source, &choice.depth, None);
        let cap = tasks
            .iter()
            .filter_map(|&t| self.caps.get(t).copied().flatten())
            .fold(nb, usize::min);
        // The bisection's open interval; `layers = K` fixes it around the
        // one depth K + 1 (within the chip rounds' cap), so it tries that.
        let (mut lo, mut hi) = match opts.layers as usize {
            0 => (1usize, cap + 1),
            k if (k + 1).min(cap) < 2 => (1, 1),
            k => ((k + 1).min(cap) - 1, (k + 1).min(cap) + 1),
        };
        let mut left = opts.trials;
        let mut best: Option<(f64, usize, Vec<usize>, Attempt)> = None;
        let weight_of =
            |ts: &[usize], d: usize| tree_weight(w, &choice.source, &choice.depth, Some((ts, d)));
        let mut consider = |ts: &[usize], d: usize, a: Attempt| {
            let weight = weight_of(ts, d);
            if best.as_ref().is_none_or(|b| weight < b.0 - 1e-9) {
                best = Some((weight, d, ts.to_vec(), a));
            }
        };
        while hi - lo > 1 && left > 0 {
            let d = (lo + hi).div_ceil(2);
            if weight_of(&tasks, d) >= frozen {
                // Deeper is cheaper: this depth cannot win, a deeper may.
                lo = d;
                continue;
            }
            left -= 1;
            let a = self.attempt(d, &tasks, &opts, weight_of(&tasks, d))?;
            let failed = failing(&tasks, &a.after);
            if failed.is_empty() {
                lo = d;
                consider(&tasks, d, a);
                continue;
            }
            hi = d;
            // The tasks that held, at the same depth, without the others
            // (who keep their frozen choice).
            let rest: Vec<usize> = tasks
                .iter()
                .copied()
                .filter(|t| !failed.contains(t))
                .collect();
            if rest.len() >= 2 && left > 0 && weight_of(&rest, d) < frozen {
                left -= 1;
                let a = self.attempt(d, &rest, &opts, weight_of(&rest, d))?;
                if failing(&rest, &a.after).is_empty() {
                    consider(&rest, d, a);
                }
            }
        }
        let mut group = Group {
            model: self.g,
            trials: std::mem::take(&mut self.trials),
            chosen: None,
            adopted: false,
            weights: (frozen, frozen),
        };
        let Some((weight, depth, tasks, a)) = best else {
            return Ok(group);
        };
        let before = tasks
            .iter()
            .map(|&t| {
                Ok(self
                    .ev
                    .evaluate(t, Source::Base, depth, Level::Head, true)?
                    .1)
            })
            .collect::<Result<Vec<_>, Diags>>()?;
        group.adopted = weight < frozen - 1e-9;
        group.weights.1 = weight;
        group.chosen = Some(Chosen {
            depth,
            tasks,
            trained: a.trained,
            key: a.key,
            hit: a.hit,
            before,
            after: a.after,
        });
        Ok(group)
    }

    /// Trains (or finds) the group `tasks` at depth `d` and measures every
    /// task's budgets with the result; `weight` is that tree's (for the
    /// report).
    fn attempt(
        &mut self,
        d: usize,
        tasks: &[usize],
        opts: &JointOpts,
        weight: f64,
    ) -> Result<Attempt, Diags> {
        let started = Instant::now();
        let w = self.w;
        let seed = crate::weights::seed_of_name(&format!(
            "joint:{}:{d}:{}",
            w.spec.models[self.g].name,
            tasks
                .iter()
                .map(|&t| w.names[t].as_str())
                .collect::<Vec<_>>()
                .join(",")
        ));
        for &t in tasks {
            self.ev.own_on_training(t)?;
        }
        let key = joint_key(w, self.g, d, tasks, opts, seed)?;
        let (trained, hit) = match self.ev.cache.joint(&key) {
            Some(found) => found,
            None => {
                let fresh = self.train(d, tasks, opts, seed)?;
                self.ev.cache.put_joint(&key, &fresh)?;
                (fresh, Hit::Trained)
            }
        };
        let after = tasks
            .iter()
            .enumerate()
            .map(|(i, &t)| self.measure(t, &trained.trunk, &trained.branches[i]))
            .collect::<Result<Vec<_>, Diags>>()?;
        let seconds = started.elapsed().as_secs_f64();
        for &t in tasks {
            self.ev.found.seconds[t] += seconds / tasks.len() as f64;
        }
        self.trials.push(Trial {
            depth: d,
            tasks: tasks.to_vec(),
            failed: failing(tasks, &after),
            after: after.clone(),
            hit,
            seconds,
            weight,
            log: trained.log.clone(),
        });
        Ok(Attempt {
            trained,
            key,
            hit,
            after,
        })
    }

    /// Block 0's output on task `t`'s training inputs (`train`) or its
    /// calibration inputs, computed once per distinct batch.
    fn embedded(&mut self, t: usize, train: bool) -> Result<Arc<Vec<ArrayD<f32>>>, Diags> {
        let w = self.w;
        let (key, batch) = match train {
            true => (usize::MAX - w.train_of[t], w.training_of(t)?),
            false => (w.batch_of[t], w.calibration(t)),
        };
        if let Some(e) = self.embedded.get(&key) {
            return Ok(e.clone());
        }
        let model = w.model(t);
        let get = w.getter(t, Source::Base);
        let xs: Result<Vec<ArrayD<f32>>, String> = batch
            .requests
            .par_iter()
            .map(|r| {
                let mask = r.mask();
                let req = Req {
                    ids: &r.ids,
                    mask: &mask,
                };
                forward::block(model, 0, &*get, None, &req)
            })
            .collect();
        let xs = Arc::new(xs.map_err(|e| bug(format!("the embeddings: {e}")))?);
        self.embedded.insert(key, xs.clone());
        Ok(xs)
    }

    /// Task `t`'s budgets on its calibration inputs with the trained trunk
    /// and branch (the base's embeddings below), through the float
    /// reference.
    fn measure(
        &mut self,
        t: usize,
        trunk: &Arc<Tensors>,
        branch: &Arc<Tensors>,
    ) -> Result<Vec<Measured>, Diags> {
        let w = self.w;
        let x0 = self.embedded(t, false)?;
        let (model, task) = (w.model(t), w.task(t));
        let get = trained_getter(w.getter(t, Source::Base), trunk.clone(), branch.clone());
        let batch = w.calibration(t);
        let rows: Result<Vec<Vec<f32>>, String> = batch
            .requests
            .par_iter()
            .zip(x0.par_iter())
            .map(|(r, x)| {
                let mask = r.mask();
                let req = Req {
                    ids: &r.ids,
                    mask: &mask,
                };
                forward::rest(model, &task.head, &*get, 1, Some(x), &req)
            })
            .collect();
        let rows = rows.map_err(|e| bug(format!("evaluating task `{}`: {e}", w.names[t])))?;
        self.ev.steps.tick(1);
        let out = super::regenerate::rows_to_array(&rows);
        let own = &self.ev.own[t];
        let labels: Vec<Option<Label>> = batch.requests.iter().map(|r| r.label).collect();
        Ok(task
            .budgets
            .iter()
            .map(|b| measure(b, &task.head, &out, own, &labels))
            .collect())
    }

    /// Task `t`'s classifier refitted (ridge, [`super::ridge_head`]) on the
    /// features of the starting model — the group's `mean` trunk under the
    /// task's own layers — over its training inputs `x0`
    /// (their embeddings), to its own model's outputs there.
    fn probe(
        &mut self,
        t: usize,
        mean: &Arc<Tensors>,
        x0: &[ArrayD<f32>],
    ) -> Result<super::HeadPair, Diags> {
        let w = self.w;
        let (model, head) = (w.model(t), &w.task(t).head);
        let own = w.getter(t, Source::Own);
        let mean = mean.clone();
        let get: Box<Getter> = Box::new(move |name: &str| match mean.get(name) {
            Some(x) => Ok(x.clone()),
            None => own(name),
        });
        let tb = w.training_of(t)?;
        let feats: Result<Vec<Vec<f32>>, String> = tb
            .requests
            .par_iter()
            .zip(x0.par_iter())
            .map(|(r, x)| {
                let mask = r.mask();
                let req = Req {
                    ids: &r.ids,
                    mask: &mask,
                };
                forward::rest_features(model, head, &*get, 1, Some(x), &req)
                    .map(|f| f.iter().copied().collect())
            })
            .collect();
        let feats = feats.map_err(|e| bug(format!("probing task `{}`: {e}", w.names[t])))?;
        self.ev.steps.tick(1);
        let targets = self
            .ev
            .own_train
            .get(&t)
            .ok_or_else(|| bug("no teacher outputs".into()))?;
        Ok(super::ridge_head(
            &super::regenerate::rows_to_array(&feats),
            targets,
        ))
    }

    /// Trains the group `tasks` at depth `d` (see [`mgen_train::train`]),
    /// with a progress bar of its own while it runs.
    fn train(
        &mut self,
        d: usize,
        tasks: &[usize],
        opts: &JointOpts,
        seed: u64,
    ) -> Result<JointTrained, Diags> {
        let w = self.w;
        // Distinct training batches, in first-use order.
        let mut order: Vec<usize> = Vec::new();
        for &t in tasks {
            if !order.contains(&w.train_of[t]) {
                order.push(w.train_of[t]);
            }
        }
        let batch_of: Vec<usize> = tasks
            .iter()
            .map(|&t| order.iter().position(|&u| u == w.train_of[t]).unwrap_or(0))
            .collect();
        let mut xs: Vec<Arc<Vec<ArrayD<f32>>>> = Vec::new();
        let mut masks: Vec<Vec<Vec<f32>>> = Vec::new();
        for &u in &order {
            xs.push(self.embedded(u, true)?);
            masks.push(
                w.training_of(u)?
                    .requests
                    .iter()
                    .map(|r| r.mask())
                    .collect(),
            );
        }
        let views: Vec<Vec<ArrayView2<f32>>> = xs
            .iter()
            .map(|x| {
                x.iter()
                    .map(|a| a.view().into_dimensionality::<Ix2>())
                    .collect::<Result<_, _>>()
            })
            .collect::<Result<_, _>>()
            .map_err(|e| bug(format!("an embeddings activation: {e}")))?;
        let batches: Vec<mgen_train::Batch> = views
            .iter()
            .zip(&masks)
            .map(|(x, m)| mgen_train::Batch {
                x: x.clone(),
                masks: m.iter().map(Vec::as_slice).collect(),
            })
            .collect();
        // Each branch starts from the task's own layers and, for a
        // classifier, its head refitted on the starting trunk's features (a
        // linear probe first, so training starts from the best head for
        // the trunk it starts with).
        let mean = mean_trunk(w, tasks, d)?;
        let mut inits: Vec<Box<Getter>> = Vec::new();
        for (&t, &b) in tasks.iter().zip(&batch_of) {
            let own = w.getter(t, Source::Own);
            inits.push(match w.task(t).head {
                crate::spec::Head::Embed { .. } => own,
                _ => {
                    let (cw, cb) = self.probe(t, &mean, &xs[b])?;
                    let (cw, cb) = (Arc::new(cw), Arc::new(cb));
                    Box::new(move |name: &str| match name {
                        "classifier.weight" => Ok(cw.clone()),
                        "classifier.bias" => Ok(cb.clone()),
                        _ => own(name),
                    })
                }
            });
        }
        let own_train = &self.ev.own_train;
        let jt: Vec<mgen_train::Task> = tasks
            .iter()
            .zip(&inits)
            .map(|(&t, init)| {
                let tb = w.training_of(t)?;
                Ok(mgen_train::Task {
                    head: &w.task(t).head,
                    batch: order.iter().position(|&u| u == w.train_of[t]).unwrap_or(0),
                    targets: own_train
                        .get(&t)
                        .ok_or_else(|| bug("no teacher outputs".into()))?
                        .view(),
                    labels: tb.requests.iter().map(|r| r.label).collect(),
                    init: &**init,
                })
            })
            .collect::<Result<_, Diags>>()?;
        let settings = mgen_train::Settings {
            epochs: opts.epochs,
            lr: opts.lr,
            batch: opts.batch,
            labels: opts.labels,
            temperature: opts.temperature,
            max_seconds: (opts.max_minutes > 0.0).then_some(opts.max_minutes * 60.0),
        };
        let base = w.getter(tasks[0], Source::Base);
        let init = mean.clone();
        let trunk_init: Box<Getter> = Box::new(move |name: &str| match init.get(name) {
            Some(x) => Ok(x.clone()),
            None => base(name),
        });
        let names: Vec<&str> = tasks.iter().map(|&t| w.names[t].as_str()).collect();
        let largest = batches.iter().map(|b| b.x.len()).max().unwrap_or(0);
        let total = opts.epochs as u64 * largest.div_ceil(opts.batch.max(1) as usize) as u64;
        let label = format!("joint d={d} [{}]", names.join(","));
        let bar = TrainBar::new(self.ev, &label, total);
        let on_step = |s: &mgen_train::Step| bar.step(s, opts.epochs);
        let model = &w.spec.models[self.g];
        let res = mgen_train::train(
            model,
            d,
            &*trunk_init,
            &batches,
            &jt,
            &settings,
            seed,
            &on_step,
        );
        bar.finish(self.ev);
        let tr = res.map_err(|e| bug(format!("joint training of {}: {e}", names.join(", "))))?;
        let arc = |m: HashMap<String, ArrayD<f32>>| -> Arc<Tensors> {
            Arc::new(m.into_iter().map(|(k, v)| (k, Arc::new(v))).collect())
        };
        Ok(JointTrained {
            trunk: arc(tr.trunk),
            branches: tr.branches.into_iter().map(arc).collect(),
            log: tr.log,
        })
    }
}

/// The tasks of `tasks` whose budgets in `after` do not all hold.
fn failing(tasks: &[usize], after: &[Vec<Measured>]) -> Vec<usize> {
    tasks
        .iter()
        .zip(after)
        .filter(|(_, ms)| !ms.iter().all(|m| m.holds))
        .map(|(&t, _)| t)
        .collect()
}

/// The trunk's start: every tensor of encoder layers `0..d − 1` the mean
/// of the group's tasks' own (a merged model, closer to each task than the
/// base is when the tasks drifted apart from it independently), computed
/// once per training.
fn mean_trunk(w: &Inputs, tasks: &[usize], d: usize) -> Result<Arc<Tensors>, Diags> {
    let gets: Vec<Box<Getter>> = tasks.iter().map(|&t| w.getter(t, Source::Own)).collect();
    let n = tasks.len() as f32;
    let model = w.model(tasks[0]);
    let mut out = Tensors::new();
    for l in 0..d.saturating_sub(1) {
        for ts in crate::ir::bert::encoder(model, l as u64).tensors() {
            let mut sum: Option<ArrayD<f32>> = None;
            for g in &gets {
                let x = g(&ts.name).map_err(|e| bug(format!("the mean trunk: {e}")))?;
                match &mut sum {
                    None => sum = Some((*x).clone()),
                    Some(s) if s.shape() == x.shape() => *s += &*x,
                    Some(_) => {
                        return Err(bug(format!(
                            "`{}` differs in shape across the group",
                            ts.name
                        )));
                    }
                }
            }
            let s = sum.ok_or_else(|| bug("an empty group".into()))?;
            out.insert(ts.name.clone(), Arc::new(s / n));
        }
    }
    Ok(Arc::new(out))
}

/// A getter reading the trained trunk and branch first, `base` (the base's
/// embeddings) for the rest.
fn trained_getter<'a>(
    base: Box<Getter<'a>>,
    trunk: Arc<Tensors>,
    branch: Arc<Tensors>,
) -> Box<Getter<'a>> {
    Box::new(
        move |name: &str| match branch.get(name).or_else(|| trunk.get(name)) {
            Some(x) => Ok(x.clone()),
            None => base(name),
        },
    )
}

/// The progress of one training: a bar of known length (epoch, loss, ETA)
/// while the search's counter pauses.
struct TrainBar {
    bar: crate::progress::Progress,
}

impl TrainBar {
    fn new(ev: &Evaluator, label: &str, total: u64) -> TrainBar {
        ev.steps.pause();
        TrainBar {
            bar: crate::progress::Progress::new(ev.steps.mode(), Some(total), label, "steps"),
        }
    }

    fn step(&self, s: &mgen_train::Step, epochs: u32) {
        self.bar.inc(1);
        self.bar.message(&format!(
            "epoch {}/{epochs}, loss {:.4}",
            s.epoch + 1,
            s.loss
        ));
    }

    fn finish(self, ev: &Evaluator) {
        self.bar.finish();
        ev.steps.resume();
    }
}

/// The digest of everything a joint training depends on: its cache key.
fn joint_key(
    w: &Inputs,
    g: usize,
    d: usize,
    tasks: &[usize],
    opts: &JointOpts,
    seed: u64,
) -> Result<String, Diags> {
    let store = w.store;
    let model = &w.spec.models[g];
    let mut parts: Vec<String> = vec![
        "joint-memo-v5".into(),
        format!("{d}:{seed}:{opts:?}:{model:?}"),
    ];
    for &t in tasks {
        let (st, task) = (w.spec_task(t), w.task(t));
        parts.push(format!("{:?}", task.head));
        for ts in layout(model, &task.head) {
            let own = store.lookup(st, &ts.name).map(|x| x.0.clone());
            let base = store.base_digest(g, &ts.name).cloned();
            parts.push(format!("{own:?}/{base:?}"));
        }
        for r in &w.training_of(t)?.requests {
            parts.push(format!("{:?}/{}/{:?}", r.ids, r.len, r.label));
        }
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    Ok(crate::weights::digest_of(&refs))
}
