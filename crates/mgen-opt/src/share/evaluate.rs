//! The [`Evaluator`]: measures one candidate — task `t` with its first
//! `depth` blocks from source `s`, regenerated to a [`Level`] — against the
//! task's budgets, and owns every cache of the run.
//!
//! A `Head` level refits the task's head on its training inputs to its own
//! model's outputs there (`regenerate = head` or `branch`); a `Branch` level
//! retrains its unshared layers and head the same way (`regenerate =
//! branch`, see [`crate::train`]); both live in `regenerate`.
//!
//! Invariants:
//! - a verdict is cached under (task, source, depth, level, exhaustive),
//!   where the level is the one actually used (a level the task cannot use
//!   falls back to `None` before the lookup), so a hit equals a recount;
//! - trunk activations are cached under (source, group, batch index), the
//!   index of a training batch being `usize::MAX - train_of[t]`, so equal
//!   batches share one trunk and calibration and training never collide;
//! - a task's retraining budget (`trials`) falls by one per distinct
//!   (source, depth) retrained and never below zero; a branch retrained
//!   once is reused whatever the budget;
//! - every evaluation of a shared candidate and every trunk or refit
//!   computed counts one step (the report's `evaluations`), hits count
//!   nothing.

use super::cache::{ShareCache, Trained};
use super::inputs::Inputs;
use super::measure::{self, Measured, hopeless, measure};
use super::{Getter, HeadPair, Level, Source, Tensors, bug};
use crate::data::Label;
use crate::diag::Diags;
use crate::forward::{self, Req};
use crate::spec::Head;
use ndarray::{Array2, ArrayD};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Trunk activations of a source on one batch, at every block boundary:
/// `trunk[i][b]` = the activation after block `b` of request `i`.
pub(super) type Trunk = Vec<Vec<ArrayD<f32>>>;
/// (budgets hold, measured, the level actually used).
pub(super) type Verdict = (bool, Vec<Measured>, Level);
/// (task, source, depth) of a regenerated candidate.
pub(super) type Candidate = (usize, Source, usize);

/// The search's steps: candidate evaluations (counted for the report) and
/// training steps, both shown on one progress counter.
pub(super) struct Steps {
    bar: crate::progress::Progress,
    mode: crate::progress::Mode,
    evaluations: AtomicUsize,
}

impl Steps {
    pub fn new(progress: crate::progress::Mode) -> Steps {
        Steps {
            bar: crate::progress::Progress::new(progress, None, "share", "steps"),
            mode: progress,
            evaluations: AtomicUsize::new(0),
        }
    }

    /// How the run shows progress (for a bar of its own, e.g. a training's).
    pub fn mode(&self) -> crate::progress::Mode {
        self.mode
    }

    /// Pauses the counter's redrawing while another bar draws.
    pub fn pause(&self) {
        self.bar.pause();
    }

    /// Resumes what [`Steps::pause`] paused.
    pub fn resume(&self) {
        self.bar.resume();
    }

    /// `k` evaluations done.
    pub fn tick(&self, k: usize) {
        self.evaluations.fetch_add(k, Ordering::Relaxed);
        self.bar.inc(k as u64);
    }

    /// One training step done (shown, not an evaluation).
    pub fn train_step(&self) {
        self.bar.inc(1);
    }

    /// Ends the progress; returns the evaluations counted.
    fn finish(self) -> usize {
        self.bar.finish();
        self.evaluations.load(Ordering::Relaxed)
    }
}

/// What regeneration produced during the search (the rewrite installs the
/// chosen ones, the report describes them).
pub(super) struct Regenerated {
    pub heads: HashMap<Candidate, HeadPair>,
    pub branches: HashMap<Candidate, Trained>,
    /// Per task: retrainings run (each a distinct candidate).
    pub retrainings: Vec<usize>,
    /// Per task: seconds spent regenerating its candidates.
    pub seconds: Vec<f64>,
}

/// Measures candidates; see the module docs.
pub(super) struct Evaluator<'a> {
    pub(super) w: &'a Inputs<'a>,
    /// Per task: its own model's outputs on its calibration inputs.
    pub(super) own: &'a [Array2<f32>],
    /// Whether regeneration may replace task t's own tensors: its encoder
    /// layers and head are its alone.
    alone: Vec<bool>,
    pub(super) cache: &'a ShareCache,
    pub(super) steps: Steps,
    trunks: HashMap<(Source, usize, usize), Arc<Trunk>>,
    verdicts: HashMap<(usize, Source, usize, Level, bool), Verdict>,
    /// Retrainings left per task (the search's deterministic budget).
    pub(super) trials: Vec<u32>,
    /// Per task: its own model's outputs on its training inputs.
    pub(super) own_train: HashMap<usize, Arc<Array2<f32>>>,
    pub(super) found: Regenerated,
}

impl<'a> Evaluator<'a> {
    pub fn new(
        w: &'a Inputs<'a>,
        own: &'a [Array2<f32>],
        alone: Vec<bool>,
        cache: &'a ShareCache,
        steps: Steps,
    ) -> Evaluator<'a> {
        let n = w.n();
        let trials = (0..n)
            .map(|t| match w.task(t).regenerate.branch() {
                Some(o) if alone[t] => o.trials,
                _ => 0,
            })
            .collect();
        Evaluator {
            w,
            own,
            alone,
            cache,
            steps,
            trunks: HashMap::new(),
            verdicts: HashMap::new(),
            trials,
            own_train: HashMap::new(),
            found: Regenerated {
                heads: HashMap::new(),
                branches: HashMap::new(),
                retrainings: vec![0; n],
                seconds: vec![0.0; n],
            },
        }
    }

    /// Whether regeneration may replace task `t`'s own tensors.
    pub fn alone(&self, t: usize) -> bool {
        self.alone[t]
    }

    /// Whether task `t` may still retrain a branch it has not retrained.
    pub fn trials_left(&self, t: usize) -> bool {
        self.trials[t] > 0
    }

    /// Ends the search: what regeneration produced, and the evaluations
    /// counted.
    pub fn finish(self) -> (Regenerated, usize) {
        (self.found, self.steps.finish())
    }

    /// The level task `t` can use for a candidate (`None` when nothing is
    /// shared, or the task does not ask for `level`, or may not use it).
    fn level(&self, t: usize, s: Source, depth: usize, level: Level) -> Level {
        let task = self.w.task(t);
        let shared = depth > 0 && s != Source::Own;
        match level {
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
                    && self.alone[t]
                    && (self.found.branches.contains_key(&(t, s, depth)) || self.trials[t] > 0) =>
            {
                Level::Branch
            }
            _ => Level::None,
        }
    }

    /// Evaluates task `t` with `depth` blocks from source `s` at a
    /// regeneration level (at most `level`); unless `exhaustive`, stops
    /// as soon as a budget can no longer hold.
    pub fn evaluate(
        &mut self,
        t: usize,
        s: Source,
        depth: usize,
        level: Level,
        exhaustive: bool,
    ) -> Result<Verdict, Diags> {
        let level = self.level(t, s, depth, level);
        let key = (t, s, depth, level, exhaustive);
        if let Some(r) = self.verdicts.get(&key) {
            return Ok(r.clone());
        }
        let started = Instant::now();
        if level != Level::None {
            self.own_on_training(t)?;
        }
        let refit = match level {
            Level::Head => Some(self.refit_head(t, s, depth)?),
            _ => None,
        };
        let trained = match level {
            Level::Branch => Some(self.branch(t, s, depth)?),
            _ => None,
        };
        if level != Level::None {
            self.found.seconds[t] += started.elapsed().as_secs_f64();
        }
        let (w, own) = (self.w, self.own);
        let task = w.task(t);
        let shared;
        let out = if depth == 0 || s == Source::Own {
            &own[t]
        } else {
            match self.shared_outputs(t, s, depth, refit.as_ref(), trained, exhaustive)? {
                Some(o) => {
                    shared = o;
                    &shared
                }
                None => {
                    let verdict = (false, measure::failed(&task.budgets), level);
                    self.verdicts.insert(key, verdict.clone());
                    return Ok(verdict);
                }
            }
        };
        let labels: Vec<Option<Label>> =
            w.calibration(t).requests.iter().map(|r| r.label).collect();
        let ms: Vec<Measured> = task
            .budgets
            .iter()
            .map(|b| measure(b, &task.head, out, &own[t], &labels))
            .collect();
        let verdict = (ms.iter().all(|m| m.holds), ms, level);
        self.verdicts.insert(key, verdict.clone());
        Ok(verdict)
    }

    /// Task `t`'s outputs with `depth` blocks from `s` (the trunk cached),
    /// its own blocks above (or `trained`'s) and its own head (or `refit`);
    /// `None` when stopped early because a budget can no longer hold.
    fn shared_outputs(
        &mut self,
        t: usize,
        s: Source,
        depth: usize,
        refit: Option<&HeadPair>,
        trained: Option<Arc<Tensors>>,
        exhaustive: bool,
    ) -> Result<Option<Array2<f32>>, Diags> {
        let (w, own_all) = (self.w, self.own);
        let own = &own_all[t];
        let task = w.task(t);
        let model = w.model(t);
        let batch = w.calibration(t);
        let tr = self.trunk(s, t, false)?;
        let own_get = w.getter(t, Source::Own);
        let get: Box<Getter<'_>> = match trained {
            Some(tt) => Box::new(move |name: &str| match tt.get(name) {
                Some(x) => Ok(x.clone()),
                None => own_get(name),
            }),
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
                    let x = Some(&acts[depth - 1]);
                    match refit {
                        None => forward::rest(model, &task.head, &*get, depth, x, &req),
                        Some((cw, cb)) => {
                            forward::rest_features(model, &task.head, &*get, depth, x, &req)
                                .map(|f| forward::classifier(&f, cw, cb, &req))
                        }
                    }
                })
                .collect();
            rows.extend(part.map_err(|e| bug(format!("evaluating task `{}`: {e}", w.names[t])))?);
            if !exhaustive
                && rows.len() < batch.requests.len()
                && task
                    .budgets
                    .iter()
                    .any(|b| hopeless(b, &task.head, &rows, own, batch.requests.len()))
            {
                failed = true;
                break;
            }
        }
        self.steps.tick(1);
        if failed {
            return Ok(None);
        }
        let mut o = Array2::<f32>::zeros((rows.len(), own.ncols()));
        for (i, r) in rows.iter().enumerate() {
            o.row_mut(i).assign(&ndarray::ArrayView1::from(r));
        }
        Ok(Some(o))
    }

    /// Source `s`'s trunk activations on task `t`'s calibration inputs, or
    /// with `train` on its training inputs (computed once per source, group
    /// and batch).
    pub(super) fn trunk(&mut self, s: Source, t: usize, train: bool) -> Result<Arc<Trunk>, Diags> {
        let w = self.w;
        let g = w.group_of(t);
        let key = (
            s,
            g,
            if train {
                usize::MAX - w.train_of[t]
            } else {
                w.batch_of[t]
            },
        );
        if let Some(tr) = self.trunks.get(&key) {
            return Ok(tr.clone());
        }
        let model = &w.spec.models[g];
        let get = match s {
            Source::Task(r) => w.getter(r, Source::Own),
            _ => w.getter(t, s),
        };
        let batch = match train {
            true => w.training_of(t)?,
            false => w.calibration(t),
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
        self.steps.tick(1);
        self.trunks.insert(key, tr.clone());
        Ok(tr)
    }
}
