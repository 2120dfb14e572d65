//! Steps 2 to 4 of the search: each candidate source's reach, the tree (a
//! source per task) of least energy, and the final measurements that lower
//! a failing depth until it holds.
//!
//! Invariants of the [`Choice`]: `depth[t] == 0` exactly when
//! `source[t] == Own`; `measured[t]` are the budgets measured at the chosen
//! (source, depth, level), and they all hold unless the depth is 0 (the
//! task's own model); `level[t]` is `None` for a task that shares nothing;
//! when a regeneration was used, `before[t]` holds the same choice measured
//! without it (on every request), else nothing.

use super::evaluate::Evaluator;
use super::inputs::Inputs;
use super::measure::Measured;
use super::{Level, Source};
use crate::diag::Diags;
use crate::forward;
use std::collections::BTreeMap;

/// What the search chose for every task.
pub(super) struct Choice {
    pub source: Vec<Source>,
    pub depth: Vec<usize>,
    pub level: Vec<Level>,
    pub measured: Vec<Vec<Measured>>,
    pub before: Vec<Vec<Measured>>,
    /// Per task: the deepest depth each candidate source allows.
    pub reach: Vec<BTreeMap<Source, usize>>,
}

/// Runs steps 2 to 4; `caps[t]` bounds task `t`'s depth.
pub(super) fn search(
    ev: &mut Evaluator,
    w: &Inputs,
    candidates: &[Vec<Source>],
    caps: &[Option<usize>],
) -> Result<Choice, Diags> {
    let reach = reach(ev, w, candidates, caps)?;
    let tree = Tree { w, reach: &reach };
    let mut source = tree.choose(candidates);
    let mut depth = tree.depths(&source);
    let (measured, level) = settle(ev, &mut source, &mut depth)?;
    // Regenerated tasks: the same choice without regeneration, for the report.
    let mut before: Vec<Vec<Measured>> = vec![Vec::new(); w.n()];
    for t in 0..w.n() {
        if level[t] != Level::None {
            before[t] = ev.evaluate(t, source[t], depth[t], Level::None, true)?.1;
        }
    }
    Ok(Choice {
        source,
        depth,
        level,
        measured,
        before,
        reach,
    })
}

/// Reach: the deepest depth each candidate source allows.
fn reach(
    ev: &mut Evaluator,
    w: &Inputs,
    candidates: &[Vec<Source>],
    caps: &[Option<usize>],
) -> Result<Vec<BTreeMap<Source, usize>>, Diags> {
    let n = w.n();
    let mut reach: Vec<BTreeMap<Source, usize>> = vec![BTreeMap::new(); n];
    for t in 0..n {
        let nb = forward::blocks(w.model(t));
        for &s in &candidates[t] {
            let cap = caps.get(t).copied().flatten().unwrap_or(nb).min(nb);
            reach[t].insert(s, reach_of(ev, t, s, cap)?);
        }
    }
    Ok(reach)
}

/// The deepest depth up to `cap` at which task `t` keeps its budgets with
/// source `s`: by bisection without regeneration or with a refitted head,
/// then deeper one block at a time with retrained branches.
fn reach_of(ev: &mut Evaluator, t: usize, s: Source, cap: usize) -> Result<usize, Diags> {
    let (mut lo, mut hi) = (0usize, cap + 1);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        // The task's own head first; a refitted one only where
        // that fails (regeneration never does worse than none).
        if ev.evaluate(t, s, mid, Level::None, false)?.0
            || ev.evaluate(t, s, mid, Level::Head, false)?.0
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
    while lo < cap && ev.trials_left(t) {
        if ev.evaluate(t, s, lo + 1, Level::Branch, false)?.0 {
            lo += 1;
        } else {
            break;
        }
    }
    Ok(lo)
}

/// Measures every choice; lowers a depth that fails until it holds (a
/// task at depth 0 then uses its own model). Returns the measures and
/// the regeneration level of every task.
fn settle(
    ev: &mut Evaluator,
    source: &mut [Source],
    depth: &mut [usize],
) -> Result<(Vec<Vec<Measured>>, Vec<Level>), Diags> {
    let n = source.len();
    let mut measured: Vec<Vec<Measured>> = Vec::with_capacity(n);
    let mut level = vec![Level::None; n];
    for t in 0..n {
        let (ms, lv) = settle_task(ev, t, source[t], &mut depth[t])?;
        measured.push(ms);
        level[t] = lv;
        if depth[t] == 0 {
            source[t] = Source::Own;
        }
    }
    for t in 0..n {
        if depth[t] == 0 || source[t] == Source::Own {
            level[t] = Level::None;
        }
    }
    Ok((measured, level))
}

/// [`settle`] for one task: its own head, then a refitted head, then a
/// retrained branch, at each depth from `depth` down.
fn settle_task(
    ev: &mut Evaluator,
    t: usize,
    s: Source,
    depth: &mut usize,
) -> Result<(Vec<Measured>, Level), Diags> {
    loop {
        let (ok, ms, _) = ev.evaluate(t, s, *depth, Level::None, false)?;
        if ok || *depth == 0 {
            return Ok((ms, Level::None));
        }
        let (ok, ms, lv) = ev.evaluate(t, s, *depth, Level::Head, false)?;
        if ok {
            return Ok((ms, lv));
        }
        // A branch retrained at this depth already, or one more
        // retraining if the budget allows.
        let (ok, ms, lv) = ev.evaluate(t, s, *depth, Level::Branch, false)?;
        if ok && lv == Level::Branch {
            return Ok((ms, Level::Branch));
        }
        *depth -= 1;
    }
}

/// Energy of one block `b` of model `g` per request, from the cost model:
/// crossbar MVMs dominate, so a block's weight is its static-MVM count
/// (crossbar reads); the embeddings (a digital lookup) weigh a small
/// epsilon.
pub(super) fn block_weight(w: &Inputs, g: usize, b: usize) -> f64 {
    if b == 0 {
        return 1e-3;
    }
    let spec = &w.spec;
    let model = &spec.models[g];
    let xb = |o: u64, i: u64| {
        let (r, c) = (spec.hardware.rows.max(1), spec.hardware.cols.max(1));
        (o.div_ceil(c) * i.div_ceil(r)) as f64
    };
    let h = model.hidden;
    4.0 * xb(h, h) + xb(model.ffn, h) + xb(h, model.ffn)
}

/// The energy model of a tree: which blocks a source assignment computes.
struct Tree<'a> {
    w: &'a Inputs<'a>,
    reach: &'a [BTreeMap<Source, usize>],
}

impl Tree<'_> {
    fn block_weight(&self, g: usize, b: usize) -> f64 {
        block_weight(self.w, g, b)
    }

    /// The depths of an assignment: reach, clipped so no block is computed
    /// for a single follower of the base.
    fn depths(&self, assign: &[Source]) -> Vec<usize> {
        let w = self.w;
        let n = w.n();
        let mut d: Vec<usize> = (0..n)
            .map(|t| match assign[t] {
                Source::Own => 0,
                s => self.reach[t].get(&s).copied().unwrap_or(0),
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
        for g in 0..w.spec.models.len() {
            let followers: Vec<usize> = (0..n)
                .filter(|&t| w.group_of(t) == g && assign[t] == Source::Base && d[t] > 0)
                .collect();
            let mut ds: Vec<usize> = followers.iter().map(|&t| d[t]).collect();
            ds.sort_unstable_by(|a, b| b.cmp(a));
            let second = ds.get(1).copied().unwrap_or(0);
            for &t in &followers {
                d[t] = d[t].min(second);
            }
        }
        d
    }

    /// The energy of an assignment at depths `d`: every task's own blocks,
    /// plus each group's base trunk once.
    fn energy(&self, assign: &[Source], d: &[usize]) -> f64 {
        let w = self.w;
        let mut e = 0.0;
        for (t, &dt) in d.iter().enumerate() {
            let g = w.group_of(t);
            let nb = forward::blocks(&w.spec.models[g]);
            for b in dt..nb {
                e += self.block_weight(g, b);
            }
        }
        for g in 0..w.spec.models.len() {
            let deepest = (0..w.n())
                .filter(|&t| w.group_of(t) == g && assign[t] == Source::Base)
                .map(|t| d[t])
                .max()
                .unwrap_or(0);
            for b in 0..deepest {
                e += self.block_weight(g, b);
            }
        }
        e
    }

    fn cost(&self, assign: &[Source]) -> f64 {
        self.energy(assign, &self.depths(assign))
    }

    /// The assignment of least energy: exhaustively over every task's
    /// options (its own model or a candidate) when there are at most
    /// 50 000 combinations, greedily otherwise.
    fn choose(&self, candidates: &[Vec<Source>]) -> Vec<Source> {
        let n = self.w.n();
        let options: Vec<Vec<Source>> = (0..n)
            .map(|t| {
                let mut o = vec![Source::Own];
                o.extend(candidates[t].iter().copied());
                o
            })
            .collect();
        let combos: f64 = options.iter().map(|o| o.len() as f64).product();
        let best: Vec<Source> = vec![Source::Own; n];
        if combos <= 50_000.0 {
            self.exhaustive(&options, best)
        } else {
            self.greedy(&options, candidates, best)
        }
    }

    /// Every combination of `options`, in odometer order (task 0 fastest);
    /// a later one wins only when it is cheaper by more than 1e-9.
    fn exhaustive(&self, options: &[Vec<Source>], mut best: Vec<Source>) -> Vec<Source> {
        let n = options.len();
        let mut best_e = self.cost(&best);
        let mut idx = vec![0usize; n];
        loop {
            let a: Vec<Source> = (0..n).map(|t| options[t][idx[t]]).collect();
            let e = self.cost(&a);
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
        best
    }

    /// Greedy: everyone on the base, then single-task moves while they help.
    fn greedy(
        &self,
        options: &[Vec<Source>],
        candidates: &[Vec<Source>],
        mut best: Vec<Source>,
    ) -> Vec<Source> {
        let n = options.len();
        let mut best_e = self.cost(&best);
        let start: Vec<Source> = (0..n)
            .map(|t| {
                if candidates[t].is_empty() {
                    Source::Own
                } else {
                    Source::Base
                }
            })
            .collect();
        let e0 = self.cost(&start);
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
                    let e = self.cost(&a);
                    if e < best_e - 1e-9 {
                        best = a;
                        best_e = e;
                        improved = true;
                    }
                }
            }
        }
        best
    }
}
