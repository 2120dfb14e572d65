//! The joint model and its training loop.
//!
//! [`Joint::new`] checks the inputs and builds the model: one trunk
//! [`Part`] (encoder layers `0..d − 1`), one branch [`Part`] per task
//! (encoder layers `d − 1..`, pooling, head), the batches' block-0 outputs
//! and masks as `[n, seq, hidden]` and `[n, seq]` tensors, each task's
//! [`Teacher`] terms.
//!
//! A training step ([`Joint::step_loss`]) picks a mini-batch of request
//! indices per batch; for every batch some task uses, the trunk runs once
//! on its rows, and each of its tasks' branches runs on the trunk's
//! result. The step's loss is the sum over tasks of each task's mean
//! per-request loss, so one backward pass sends every task's gradient into
//! the trunk, and one optimiser step updates trunk and branches together.
//!
//! Mini-batches ([`Stream`]): an epoch has `⌈N / batch⌉` steps, `N` the
//! largest used batch's request count; step `k` takes `min(batch, N − k ·
//! batch)` requests of the largest batch and as many (at most the batch's
//! size) of every other one. Each batch draws from its own stream of
//! seeded permutations (`Rng::keyed(seed, "joint-order:{batch index}")`,
//! Fisher–Yates as the branch trainer shuffles): a fresh permutation at
//! each epoch's start and whenever the current one runs out (so a smaller
//! batch cycles, and a mini-batch that straddles two permutations may hold
//! a request twice).
//!
//! Evaluation ([`Joint::evaluate`]) runs forward only, on detached
//! weights, over every request in order in chunks of [`EVAL_CHUNK`], and
//! sums per-request losses in f64.
//!
//! Invariant (determinism): nothing here depends on timing or hashing
//! order except the optional time budget; candle's CPU kernels and the
//! optimiser give the same bits for the same inputs at a fixed thread
//! count (tested).

use crate::graph::{Part, R, branch_blocks, cerr, trunk_blocks};
use crate::inputs::{EVAL_CHUNK, Inputs, check_depth, index};
use crate::loss::Teacher;
use crate::optim::{AdamW, rate};
use crate::{Batch, Get, Log, Settings, Step, Task, Trained};
use candle_core::{Tensor, Var};
use mgen_front::spec::Model;
use mgen_util::rng::Rng;
use std::time::Instant;

/// A batch's stream of seeded permutations (see the module docs).
struct Stream {
    rng: Rng,
    order: Vec<usize>,
    pos: usize,
}

impl Stream {
    fn new(seed: u64, batch: usize, n: usize) -> Stream {
        Stream {
            rng: Rng::keyed(seed, &format!("joint-order:{batch}")),
            order: (0..n).collect(),
            pos: n,
        }
    }

    /// Starts a fresh permutation.
    fn shuffle(&mut self) {
        let n = self.order.len();
        self.order = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.rng.below(0, i as u64 + 1) as usize;
            self.order.swap(i, j);
        }
        self.pos = 0;
    }

    /// The next `count` requests.
    fn take(&mut self, count: usize) -> Vec<usize> {
        let mut v = Vec::with_capacity(count);
        while v.len() < count {
            if self.pos == self.order.len() {
                self.shuffle();
            }
            v.push(self.order[self.pos]);
            self.pos += 1;
        }
        v
    }
}

/// The joint model and its training data.
pub(crate) struct Joint {
    trunk: Part,
    branches: Vec<Part>,
    /// Per batch; `None` when no task uses it.
    inputs: Vec<Option<Inputs>>,
    teachers: Vec<Teacher>,
    /// Each task's batch.
    of: Vec<usize>,
}

/// Checks one task against its batch and builds its teacher terms.
fn teacher(t: &Task, i: usize, inputs: &[Option<Inputs>], m: &Model, s: &Settings) -> R<Teacher> {
    let n = inputs[t.batch].as_ref().map_or(0, |b| b.n);
    if n == 0 {
        return Err(format!("task {i}: batch {} has no requests", t.batch));
    }
    let w = t.head.width(m.hidden) as usize;
    if t.targets.dim() != (n, w) {
        return Err(format!(
            "task {i}: the targets are {:?}, its batch {} needs [{n}, {w}] (a row per request)",
            t.targets.dim(),
            t.batch
        ));
    }
    if t.labels.len() != n {
        return Err(format!(
            "task {i}: {} labels for the {n} requests of batch {}",
            t.labels.len(),
            t.batch
        ));
    }
    Teacher::new(t.head, t.targets, &t.labels, s.labels, s.temperature)
}

impl Joint {
    /// Checks the inputs and loads the initial weights.
    pub fn new(
        m: &Model,
        depth: usize,
        trunk: &Get,
        batches: &[Batch],
        tasks: &[Task],
        s: &Settings,
    ) -> R<Joint> {
        check_depth(m, depth)?;
        if tasks.is_empty() {
            return Err("joint training needs at least one task".into());
        }
        if let Some((i, t)) = tasks
            .iter()
            .enumerate()
            .find(|(_, t)| t.batch >= batches.len())
        {
            let n = batches.len();
            return Err(format!("task {i} reads batch {}, there are {n}", t.batch));
        }
        let mut inputs = Vec::with_capacity(batches.len());
        for (j, b) in batches.iter().enumerate() {
            let used = tasks.iter().any(|t| t.batch == j);
            let what = format!("batch {j}");
            inputs.push(
                used.then(|| Inputs::new(b, m.hidden as usize, &what))
                    .transpose()?,
            );
        }
        let teachers = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| teacher(t, i, &inputs, m, s))
            .collect::<R<_>>()?;
        let branches = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                Part::new(
                    branch_blocks(m, t.head, depth),
                    t.init,
                    &format!("task {i}"),
                )
            })
            .collect::<R<_>>()?;
        Ok(Joint {
            trunk: Part::new(trunk_blocks(m, depth), trunk, "trunk")?,
            branches,
            inputs,
            teachers,
            of: tasks.iter().map(|t| t.batch).collect(),
        })
    }

    /// Every variable: the trunk's, then each branch's.
    fn vars(&self) -> Vec<Var> {
        let mut v = self.trunk.vars.clone();
        v.extend(self.branches.iter().flat_map(|b| b.vars.iter().cloned()));
        v
    }

    /// Per task, the per-request losses of batch `j`'s rows `ix` (tasks of
    /// other batches get `None`).
    fn losses(&self, j: usize, ix: &[usize], track: bool) -> R<Vec<Option<Tensor>>> {
        let inp = self.inputs[j].as_ref().ok_or("an unused batch")?;
        let idx = index(ix)?;
        let (x, mask) = inp.rows(ix, &idx)?;
        let h = self.trunk.run(&x, &mask, track)?;
        (0..self.of.len())
            .map(|i| {
                if self.of[i] != j {
                    return Ok(None);
                }
                let out = self.branches[i].run(&h, &mask, track)?;
                Ok(Some(self.teachers[i].rows(&idx)?.losses(&out)?))
            })
            .collect()
    }

    /// A step's loss: Σ over tasks of the mean loss over their mini-batch
    /// (`picks[j]` = batch `j`'s rows, empty for unused batches).
    fn step_loss(&self, picks: &[Vec<usize>]) -> R<Tensor> {
        let mut total: Option<Tensor> = None;
        for (j, ix) in picks.iter().enumerate().filter(|(_, ix)| !ix.is_empty()) {
            for l in self.losses(j, ix, true)?.into_iter().flatten() {
                let mean = l.mean_all().map_err(cerr)?;
                total = Some(match total {
                    None => mean,
                    Some(t) => (t + mean).map_err(cerr)?,
                });
            }
        }
        total.ok_or_else(|| "a step with no requests".to_string())
    }

    /// Each task's mean loss over all of its requests, forward only.
    pub fn evaluate(&self) -> R<Vec<f64>> {
        let mut sums = vec![0.0f64; self.of.len()];
        for (j, inp) in self.inputs.iter().enumerate() {
            let Some(inp) = inp else { continue };
            let all: Vec<usize> = (0..inp.n).collect();
            for ix in all.chunks(EVAL_CHUNK) {
                for (i, l) in self.losses(j, ix, false)?.into_iter().enumerate() {
                    if let Some(l) = l {
                        let v: Vec<f32> = l.to_vec1().map_err(cerr)?;
                        sums[i] += v.iter().map(|&x| x as f64).sum::<f64>();
                    }
                }
            }
        }
        Ok(sums
            .iter()
            .zip(&self.of)
            .map(|(s, &j)| s / self.inputs[j].as_ref().map_or(1, |b| b.n) as f64)
            .collect())
    }

    /// The largest used batch's request count.
    fn largest(&self) -> usize {
        self.inputs.iter().flatten().map(|b| b.n).max().unwrap_or(0)
    }

    /// Trains for `s.epochs` epochs (or until the time budget, counted from
    /// `start`, runs out); fills the log's step, epoch and time fields.
    pub fn fit(
        &self,
        s: &Settings,
        seed: u64,
        on_step: &(dyn Fn(&Step) + Sync),
        start: Instant,
    ) -> R<Log> {
        let bs = (s.batch as usize).max(1);
        let n = self.largest();
        let per_epoch = n.div_ceil(bs);
        let total = s.epochs as usize * per_epoch;
        let mut streams: Vec<Option<Stream>> = (self.inputs.iter().enumerate())
            .map(|(j, b)| b.as_ref().map(|b| Stream::new(seed, j, b.n)))
            .collect();
        let mut opt = AdamW::new(self.vars());
        let mut log = Log::empty();
        'epochs: for epoch in 0..s.epochs {
            streams.iter_mut().flatten().for_each(Stream::shuffle);
            let mut sum = 0.0;
            for k in 0..per_epoch {
                let size = bs.min(n - k * bs);
                let picks: Vec<Vec<usize>> = streams
                    .iter_mut()
                    .zip(&self.inputs)
                    .map(|(st, b)| match (st, b) {
                        (Some(st), Some(b)) => st.take(size.min(b.n)),
                        _ => Vec::new(),
                    })
                    .collect();
                let loss = self.step_loss(&picks)?;
                let grads = loss.backward().map_err(cerr)?;
                log.steps += 1;
                opt.step(&grads, rate(s.lr, log.steps, total))?;
                let loss = loss.to_scalar::<f32>().map_err(cerr)? as f64;
                sum += loss;
                on_step(&Step {
                    epoch,
                    step: log.steps,
                    total_steps: total,
                    loss,
                });
                if s.max_seconds
                    .is_some_and(|m| start.elapsed().as_secs_f64() >= m)
                {
                    log.stopped_by_time = true;
                    break 'epochs;
                }
            }
            log.epochs = epoch + 1;
            log.epoch_losses.push(sum / per_epoch.max(1) as f64);
        }
        Ok(log)
    }

    /// The trunk's and each branch's current tensors.
    pub fn tensors(&self) -> R<Trained> {
        Ok(Trained {
            trunk: self.trunk.export()?,
            branches: self.branches.iter().map(Part::export).collect::<R<_>>()?,
            log: Log::empty(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream is a sequence of permutations: every window of `n` draws
    /// aligned to a permutation holds each request once, and an epoch's
    /// restart begins a fresh one.
    #[test]
    fn a_stream_cycles_through_permutations() {
        let mut s = Stream::new(3, 1, 5);
        s.shuffle();
        let draws: Vec<usize> = (0..5).flat_map(|_| s.take(3)).collect();
        for perm in draws.chunks(5) {
            let mut p = perm.to_vec();
            p.sort();
            assert_eq!(p, vec![0, 1, 2, 3, 4]);
        }
        assert_ne!(draws[..5], draws[5..10]);
        let again: Vec<usize> = {
            let mut t = Stream::new(3, 1, 5);
            t.shuffle();
            t.take(15)
        };
        assert_eq!(again, draws);
        s.shuffle();
        assert_eq!(s.pos, 0);
    }
}
