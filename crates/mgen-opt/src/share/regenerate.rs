//! Regeneration, for the `Evaluator`: a task's head refitted by ridge
//! regression on the shared trunk's features ([`ridge_head`]), or its
//! unshared layers and head retrained over the frozen trunk
//! ([`crate::train::Branch`]); both fit the task's own model's outputs on
//! its training inputs.
//!
//! Invariants: a refit or retraining is a pure function of the task, the
//! source, the depth and the run's inputs, so the evaluator may cache it;
//! a retraining, a head refit and the task's own outputs on its training
//! inputs are looked up in the caller's [`super::ShareCache`] under a digest
//! of everything they depend on (the task's and the source's weights, the
//! depth, the seed, the settings, the training inputs) before they run, and
//! added to it after; regeneration only touches a task whose encoder
//! layers and head are its alone ([`alone`]).

use super::cache::Trained;
use super::evaluate::Evaluator;
use super::inputs::Inputs;
use super::{HeadPair, Source, Tensors, bug};
use crate::data::Batch;
use crate::diag::Diags;
use crate::forward::{self, Req};
use crate::ir::{Layer, Module, TaskSet};
use crate::spec::BranchOpts;
use crate::weights::layout;
use ndarray::Array2;
use rayon::prelude::*;
use std::sync::Arc;

/// Per task: whether regeneration may replace its own tensors, i.e. its
/// encoder layers and head are its alone (`merge` found no exact twin).
pub(super) fn alone(m: &Module, n: usize) -> Vec<bool> {
    (0..n)
        .map(|t| {
            m.graph.node_weights().all(|nd| {
                !TaskSet::single(t).is_subset(nd.tasks)
                    || nd.tasks.len() == 1
                    || matches!(nd.layer, Layer::Input | Layer::Embed)
            })
        })
        .collect()
}

impl Evaluator<'_> {
    /// Computes (once per task) its own model's outputs on its training
    /// inputs: the targets of every regeneration.
    pub(super) fn own_on_training(&mut self, t: usize) -> Result<(), Diags> {
        let w = self.w;
        let tb = w.training_of(t)?;
        if self.own_train.contains_key(&t) {
            return Ok(());
        }
        let key = memo_key("own-train-v1", w, t, Source::Own, 0, "", tb);
        if let Some(hit) = self.cache.own_train.get(&key) {
            self.own_train.insert(t, hit);
            return Ok(());
        }
        let get = w.getter(t, Source::Own);
        let (model, head) = (w.model(t), &w.task(t).head);
        let rows: Result<Vec<Vec<f32>>, String> = tb
            .requests
            .par_iter()
            .map(|r| {
                let mask = r.mask();
                let req = Req {
                    ids: &r.ids,
                    mask: &mask,
                };
                forward::rest(model, head, &*get, 0, None, &req)
            })
            .collect();
        let rows = rows.map_err(|e| bug(format!("evaluating task `{}`: {e}", w.names[t])))?;
        let o = Arc::new(rows_to_array(&rows));
        self.cache.own_train.put(key, o.clone());
        self.own_train.insert(t, o);
        Ok(())
    }

    /// Task `t`'s head refitted on source `s`'s trunk features at `depth`
    /// (kept for the rewrite).
    pub(super) fn refit_head(
        &mut self,
        t: usize,
        s: Source,
        depth: usize,
    ) -> Result<HeadPair, Diags> {
        let w = self.w;
        let tb = w.training_of(t)?;
        let key = memo_key("head-memo-v1", w, t, s, depth, "", tb);
        if let Some(pair) = self.cache.heads.get(&key) {
            self.steps.tick(1);
            self.found.heads.insert((t, s, depth), pair.clone());
            return Ok(pair);
        }
        let (model, head) = (w.model(t), &w.task(t).head);
        let get = w.getter(t, Source::Own);
        let tr = self.trunk(s, t, true)?;
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
                forward::rest_features(model, head, &*get, depth, Some(&acts[depth - 1]), &req)
                    .map(|f| f.iter().copied().collect())
            })
            .collect();
        let feats = feats.map_err(|e| bug(format!("evaluating task `{}`: {e}", w.names[t])))?;
        self.steps.tick(1);
        let pair = ridge_head(&rows_to_array(&feats), &self.own_train[&t]);
        self.cache.heads.put(key, pair.clone());
        self.found.heads.insert((t, s, depth), pair.clone());
        Ok(pair)
    }

    /// Task `t`'s branch above `depth` retrained over source `s`'s trunk:
    /// once per (task, source, depth) in a run (each counts against the
    /// task's trials), from the [`super::ShareCache`] when a run retrained it
    /// before.
    pub(super) fn branch(
        &mut self,
        t: usize,
        s: Source,
        depth: usize,
    ) -> Result<Arc<Tensors>, Diags> {
        let key = (t, s, depth);
        if !self.found.branches.contains_key(&key) {
            self.trials[t] -= 1;
            self.found.retrainings[t] += 1;
            let w = self.w;
            let tb = w.training_of(t)?;
            let opts = w.task(t).regenerate.branch().unwrap_or_default();
            let seed =
                crate::weights::seed_of_name(&format!("branch:{}:{:?}:{depth}", w.names[t], s));
            let memo = memo_key(
                "branch-memo-v1",
                w,
                t,
                s,
                depth,
                &format!("{seed}:{opts:?}"),
                tb,
            );
            let trained = match self.cache.get(&memo) {
                Some(hit) => hit,
                None => {
                    let fresh = self.retrain(t, s, depth, seed, &opts, tb)?;
                    self.cache.put(memo, &fresh);
                    fresh
                }
            };
            self.found.branches.insert(key, trained);
        }
        Ok(self.found.branches[&key].tensors.clone())
    }

    /// Retrains task `t`'s branch above `depth` on its training inputs
    /// `tb`, over source `s`'s frozen trunk.
    fn retrain(
        &mut self,
        t: usize,
        s: Source,
        depth: usize,
        seed: u64,
        opts: &BranchOpts,
        tb: &Batch,
    ) -> Result<Trained, Diags> {
        let w = self.w;
        let (model, head) = (w.model(t), &w.task(t).head);
        let get = w.getter(t, Source::Own);
        let mut br = crate::train::Branch::new(model, head, &*get, depth)
            .map_err(|e| bug(format!("task `{}`: {e}", w.names[t])))?;
        let tr = self.trunk(s, t, true)?;
        let masks: Vec<Vec<f32>> = tb.requests.iter().map(|r| r.mask()).collect();
        let targets = &self.own_train[&t];
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
        let steps = &self.steps;
        let log = br.train(&items, opts, seed, &|| steps.train_step());
        Ok(Trained {
            tensors: Arc::new(br.tensors()),
            log,
            parameters: br.parameters(),
        })
    }
}

/// The digest of everything a regeneration of `kind` depends on (a
/// [`super::ShareCache`] key): the task's tensors and the source's, the
/// task's head, the depth, the `settings`, the training inputs `tb`.
pub(super) fn memo_key(
    kind: &str,
    w: &Inputs,
    t: usize,
    s: Source,
    depth: usize,
    settings: &str,
    tb: &Batch,
) -> String {
    let (st, task, store) = (w.spec_task(t), w.task(t), w.store);
    let mut parts: Vec<String> = vec![kind.into(), format!("{depth}:{settings}:{:?}", task.head)];
    let src_task = match s {
        Source::Task(r) => w.spec_task(r),
        _ => st,
    };
    for ts in layout(w.model(t), &task.head) {
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
    crate::weights::digest_of(&refs)
}

pub(super) fn rows_to_array(rows: &[Vec<f32>]) -> Array2<f32> {
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
