//! Step 1, the redundancy analysis: every task's own outputs on its
//! calibration inputs (the reference every budget is measured against),
//! per-block weight distances to the base and between tasks of a group,
//! the per-block swap change, and each task's candidate sources.
//!
//! Invariants: `own[t]` has one row per request of task `t`'s calibration
//! batch, in order; a candidate list holds `Base` first, then the tasks of
//! the same group closer to `t` than the base (by mean block distance), in
//! workload order; a task alone in its group has no candidates.

use super::cache::ShareCache;
use super::evaluate::Steps;
use super::inputs::Inputs;
use super::regenerate::memo_key;
use super::report::{PairAnalysis, TaskAnalysis};
use super::{SWAP_REQUESTS, Source, block_of_name, bug};
use crate::diag::Diags;
use crate::forward::{self, Req};
use crate::spec::Head;
use crate::weights::{Store, layout};
use ndarray::{Array2, ArrayD};
use rayon::prelude::*;
use std::collections::HashMap;

/// One request's own output and per-block swap changes.
type OwnRow = (Vec<f32>, Vec<f64>);

/// What step 1 found.
pub(super) struct Analysis {
    /// Per task: its own model's outputs on its calibration inputs.
    pub own: Vec<Array2<f32>>,
    pub tasks: Vec<TaskAnalysis>,
    pub pairs: Vec<PairAnalysis>,
    /// Per task: the sources the search tries.
    pub candidates: Vec<Vec<Source>>,
    /// Tasks whose own outputs came from the [`ShareCache`] (an earlier
    /// run on the same weights and inputs) instead of being computed.
    pub own_reused: usize,
}

/// Runs step 1 (one step counted per task), taking each task's own
/// outputs from `cache` when an earlier run computed them.
pub(super) fn analyse(w: &Inputs, steps: &Steps, cache: &ShareCache) -> Result<Analysis, Diags> {
    let n = w.n();
    let mut own: Vec<Array2<f32>> = Vec::with_capacity(n);
    let mut tasks: Vec<TaskAnalysis> = Vec::with_capacity(n);
    let mut own_reused = 0;
    for t in 0..n {
        // Keyed on the base too: the swap change runs its blocks.
        let key = memo_key(
            "own-memo-v1",
            w,
            t,
            Source::Base,
            0,
            &SWAP_REQUESTS.to_string(),
            w.calibration(t),
        );
        let found = cache.owns.get(&key);
        own_reused += usize::from(found.is_some());
        let memo = match found {
            Some(m) => m,
            None => {
                let m = std::sync::Arc::new(own_outputs(w, t)?);
                cache.owns.put(key, m.clone());
                m
            }
        };
        steps.tick(1);
        own.push(memo.0.clone());
        tasks.push(against_base(w, t, memo.1.clone())?);
    }
    let (pairs, pair_dist) = pairs(w)?;
    let candidates = candidates(w, &tasks, &pair_dist);
    Ok(Analysis {
        own,
        tasks,
        pairs,
        candidates,
        own_reused,
    })
}

/// Task `t`'s own outputs, and per block the mean swap change over its
/// first [`SWAP_REQUESTS`] requests.
fn own_outputs(w: &Inputs, t: usize) -> Result<(Array2<f32>, Vec<f64>), Diags> {
    let model = w.model(t);
    let head = w.task(t).head;
    let nb = forward::blocks(model);
    let get_own = w.getter(t, Source::Own);
    let get_base = w.getter(t, Source::Base);
    // Materialise the task's and its base's tensors in parallel first: the
    // requests below would otherwise generate each on whichever thread
    // reaches it first (on both, when both do).
    let names: Vec<String> = layout(model, &head).into_iter().map(|ts| ts.name).collect();
    names
        .par_iter()
        .try_for_each(|n| get_own(n).and_then(|_| get_base(n)).map(|_| ()))
        .map_err(|e| bug(format!("materialising task `{}`: {e}", w.names[t])))?;
    let rows: Result<Vec<OwnRow>, String> = w
        .calibration(t)
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
    let rows = rows.map_err(|e| bug(format!("evaluating task `{}`: {e}", w.names[t])))?;
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
    Ok((o, swap))
}

/// Task `t` against its base: weight distances and cosines per block.
fn against_base(w: &Inputs, t: usize, swap: Vec<f64>) -> Result<TaskAnalysis, Diags> {
    let st = w.spec_task(t);
    let model = w.model(t);
    let store = w.store;
    let tnames: Vec<String> = layout(model, &w.task(t).head)
        .into_iter()
        .map(|ts| ts.name)
        .collect();
    let mi = w.group_of(t);
    let (distance, cos) = distances(
        store,
        &tnames,
        forward::blocks(model),
        &|name| store.lookup(st, name).map(|d| d.0.clone()),
        &|name| store.base_digest(mi, name).cloned(),
    )
    .map_err(|e| bug(format!("analysing task `{}`: {e}", w.names[t])))?;
    Ok(TaskAnalysis {
        name: w.names[t].clone(),
        base: w.spec.models[mi].name.clone(),
        distance,
        cosine: cos,
        swap_change: swap,
    })
}

/// Distances per block between tasks of one group, by (a, b) both ways.
type PairDistances = HashMap<(usize, usize), Vec<f64>>;

/// Pairwise distances within groups of one base model.
fn pairs(w: &Inputs) -> Result<(Vec<PairAnalysis>, PairDistances), Diags> {
    let n = w.n();
    let store = w.store;
    let mut pairs = Vec::new();
    let mut pair_dist: PairDistances = HashMap::new();
    for a in 0..n {
        for b in a + 1..n {
            if w.group_of(a) != w.group_of(b) {
                continue;
            }
            let (sa, sb) = (w.spec_task(a), w.spec_task(b));
            let model = w.model(a);
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
                    w.names[a], w.names[b]
                ))
            })?;
            pair_dist.insert((a, b), d.clone());
            pair_dist.insert((b, a), d.clone());
            pairs.push(PairAnalysis {
                a: w.names[a].clone(),
                b: w.names[b].clone(),
                distance: d,
            });
        }
    }
    Ok((pairs, pair_dist))
}

/// Candidate sources per task: the base, and tasks closer than the base.
fn candidates(w: &Inputs, tasks: &[TaskAnalysis], pair_dist: &PairDistances) -> Vec<Vec<Source>> {
    let n = w.n();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let mut candidates: Vec<Vec<Source>> = vec![Vec::new(); n];
    for t in 0..n {
        let group: Vec<usize> = (0..n)
            .filter(|&u| u != t && w.group_of(u) == w.group_of(t))
            .collect();
        if group.is_empty() {
            continue;
        }
        candidates[t].push(Source::Base);
        for &r in &group {
            if mean(&pair_dist[&(t, r)]) < mean(&tasks[t].distance) {
                candidates[t].push(Source::Task(r));
            }
        }
    }
    candidates
}

/// Elements per chunk of [`sums`].
const CHUNK: usize = 1 << 14;

/// `[Σ(x−y)², Σx², Σy², Σxy]` over two slices of one length (in f64), in
/// chunks of [`CHUNK`] elements on rayon's threads, the chunks' sums added
/// in order: the bits do not depend on the thread count.
fn sums(a: &[f32], b: &[f32]) -> [f64; 4] {
    let parts: Vec<[f64; 4]> = a
        .par_chunks(CHUNK)
        .zip(b.par_chunks(CHUNK))
        .map(|(a, b)| {
            let mut s = [0.0f64; 4];
            for (&x, &y) in a.iter().zip(b) {
                let (x, y) = (x as f64, y as f64);
                s[0] += (x - y) * (x - y);
                s[1] += x * x;
                s[2] += y * y;
                s[3] += x * y;
            }
            s
        })
        .collect();
    parts.iter().fold([0.0; 4], |acc, p| {
        [acc[0] + p[0], acc[1] + p[1], acc[2] + p[2], acc[3] + p[3]]
    })
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
        let tb = if da == db {
            ta.clone()
        } else {
            store.tensor(&db)?
        };
        if ta.shape() != tb.shape() {
            return Err(format!(
                "`{name}` has shapes {:?} and {:?}",
                ta.shape(),
                tb.shape()
            ));
        }
        let (ca, cb) = (ta.as_standard_layout(), tb.as_standard_layout());
        let (Some(sa), Some(sb)) = (ca.as_slice(), cb.as_slice()) else {
            return Err(format!("`{name}` is not contiguous in standard layout"));
        };
        let [d, x, y, xy] = sums(sa, sb);
        diff[k] += d;
        na[k] += x;
        nb[k] += y;
        dot[k] += xy;
    }
    let dist = (0..blocks)
        .map(|k| (diff[k] / na[k].max(1e-300)).sqrt())
        .collect();
    let cos = (0..blocks)
        .map(|k| dot[k] / (na[k] * nb[k]).sqrt().max(1e-300))
        .collect();
    Ok((dist, cos))
}
