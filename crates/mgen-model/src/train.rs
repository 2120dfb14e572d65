//! Branch retraining (`regenerate = branch`): a task's unshared encoder
//! layers and head learn to reproduce its own unshared model's outputs
//! (distillation) over a frozen shared trunk.
//!
//! The model generator (`mgen::passes::share`) cuts a task at depth `d`:
//! blocks `0..d` use a source's weights and are frozen, blocks `d..` and the
//! head (pooler, classifier) are the task's own and are trained here. The
//! trunk's activation after block `d − 1` is computed once per training
//! request by the caller and passed in ([`Item::x`]); only the branch runs
//! forward and backward.
//!
//! The branch is a list of stages of the block description
//! ([`crate::ir::bert`]): encoder layers `d − 1..`, the pooling, the head;
//! its tensors are theirs, in their order. The forward pass walks their
//! steps with [`crate::forward::steps`], i.e. the reference executor's own
//! kernels, keeping every step's value; so [`Branch::output`] is
//! bit-identical to [`crate::forward`] (and to the lowered IR) on the same
//! weights. The backward pass walks the same steps last first, with a
//! hand-written backward per op (linear, LayerNorm, add, GELU, tanh,
//! pooling, QKᵀ, scale, mask, softmax, ·V), checked against central finite
//! differences in this module's tests (every op and the whole branch). A
//! value read by several steps sums their gradients in a fixed order (see
//! `total`). Ops with no backward here (the embeddings) cannot be trained:
//! [`Branch::new`] refuses them.
//!
//! Objective (per request, averaged over a mini-batch): for classifiers,
//! `(1 − α)·T²·KL(softmax(t/T) ‖ softmax(s/T)) + α·CE(s, label)`; for
//! regressors `(1 − α)·(s − t)² + α·(s − label)²`; for embeddings the mean
//! squared error to the teacher's embedding. `t` is the task's own model's
//! output, `α` = `labels` (used only on requests that carry a label).
//!
//! Optimiser: AdamW (β = 0.9, 0.999, ε = 1e-8, decoupled weight decay 0.01
//! on matrices only), linear warm-up over the first 10% of steps then
//! linear decay to zero, gradient clipping to global norm 1.
//!
//! Invariant (determinism): a mini-batch is split into [`CHUNKS`] fixed
//! contiguous chunks whatever the thread count; each chunk accumulates its
//! requests' gradients in order, and chunks are summed in order. The
//! request order comes from a seeded [`crate::weights::rng::Rng`]. So the
//! same inputs and seed give bit-identical weights on a machine.

use crate::data::Label;
use crate::forward::{self, Get, Req};
use crate::ir::Op;
use crate::ir::bert::{self, Block, Operand};
use crate::reference::gelu_grad;
use crate::spec::{BranchOpts, Head, Model, Pool};
use crate::weights::rng::Rng;
use ndarray::linalg::general_mat_mul;
use ndarray::{
    Array1, Array2, Array3, ArrayD, ArrayView1, ArrayView2, ArrayView3, ArrayViewMut1,
    ArrayViewMut2, Axis, Ix1, Ix2, Ix3, Zip, s,
};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

/// A mini-batch is reduced in this many fixed chunks (see the module docs).
pub const CHUNKS: usize = 4;
/// Decoupled weight decay (matrices only).
pub const WEIGHT_DECAY: f32 = 0.01;
/// Global gradient-norm clip.
pub const CLIP: f64 = 1.0;
/// Share of the steps spent warming the learning rate up.
pub const WARMUP: f64 = 0.1;

/// (weight, bias) indices into [`Branch::tensors`].
type Pair = (usize, usize);

/// One training request: the trunk's activation `[seq, hidden]` after the
/// last shared block, its attention mask, the teacher's output row and an
/// optional label.
pub struct Item<'a> {
    pub x: ArrayView2<'a, f32>,
    pub mask: &'a [f32],
    pub target: ArrayView1<'a, f32>,
    pub label: Option<Label>,
}

/// The loss' settings.
#[derive(Debug, Clone, Copy)]
pub struct Objective {
    pub temperature: f32,
    /// Weight of the label loss (0 = pure distillation).
    pub labels: f32,
}

impl From<&BranchOpts> for Objective {
    fn from(o: &BranchOpts) -> Self {
        Objective {
            temperature: o.temperature as f32,
            labels: o.labels as f32,
        }
    }
}

/// What a training run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainLog {
    pub steps: usize,
    /// Mean loss over every training item at the initial weights, before
    /// the first step ([`Branch::mean_loss`]).
    pub first_loss: f64,
    /// Mean loss over every training item at the final weights, after the
    /// last step (so with one epoch the two still differ when it learned).
    pub last_loss: f64,
}

/// The trainable part of a task model cut at a depth.
#[derive(Debug, Clone)]
pub struct Branch {
    names: Vec<String>,
    tensors: Vec<ArrayD<f32>>,
    /// The trained stages, from the block description: encoder layers
    /// `depth − 1..`, the pooling, the head.
    blocks: Vec<Block>,
    /// Per block, per step: the indices of its tensors in `tensors`.
    params: Vec<Vec<Vec<usize>>>,
    embed: bool,
}

/// A request's forward pass: every value the backward pass reads.
struct Trace {
    /// The first trained block's input (the frozen trunk's activation).
    input: ArrayD<f32>,
    /// The attention mask as a value.
    mask: ArrayD<f32>,
    /// Per trained block, every step's value.
    tapes: Vec<Vec<ArrayD<f32>>>,
}

/// What the backward pass of one step reads.
struct StepVals<'a> {
    /// The operands' values.
    args: Vec<&'a ArrayD<f32>>,
    /// The step's own value.
    out: &'a ArrayD<f32>,
    /// Its tensors' indices.
    params: &'a [usize],
    /// Which operands need a gradient.
    want: Vec<bool>,
    mask: &'a [f32],
}

fn v2(a: &ArrayD<f32>) -> ArrayView2<'_, f32> {
    a.view().into_dimensionality::<Ix2>().expect("a matrix")
}
fn v1(a: &ArrayD<f32>) -> ArrayView1<'_, f32> {
    a.view().into_dimensionality::<Ix1>().expect("a vector")
}
fn m2(a: &mut ArrayD<f32>) -> ArrayViewMut2<'_, f32> {
    a.view_mut().into_dimensionality::<Ix2>().expect("a matrix")
}
fn m1(a: &mut ArrayD<f32>) -> ArrayViewMut1<'_, f32> {
    a.view_mut().into_dimensionality::<Ix1>().expect("a vector")
}

/// Backward of a linear on rows, `x·Wᵀ + b`: accumulates `dW += dyᵀ·x`,
/// `db += Σ dy`; returns `dx = dy·W` when asked.
fn linear_back(
    dy: &Array2<f32>,
    x: ArrayView2<f32>,
    w: ArrayView2<f32>,
    g: &mut [ArrayD<f32>],
    p: Pair,
    need_dx: bool,
) -> Option<Array2<f32>> {
    general_mat_mul(1.0, &dy.t(), &x, 1.0, &mut m2(&mut g[p.0]));
    m1(&mut g[p.1]).scaled_add(1.0, &dy.sum_axis(Axis(0)));
    need_dx.then(|| dy.dot(&w))
}

/// Backward of a linear on one vector, `W·x + b`: accumulates
/// `dW += dy ⊗ x`, `db += dy`; returns `dx = Wᵀ·dy` when asked.
fn linear1_back(
    dy: &Array1<f32>,
    x: ArrayView1<f32>,
    w: ArrayView2<f32>,
    g: &mut [ArrayD<f32>],
    p: Pair,
    need_dx: bool,
) -> Option<Array1<f32>> {
    let outer = dy.view().insert_axis(Axis(1)).to_owned() * x.insert_axis(Axis(0));
    m2(&mut g[p.0]).scaled_add(1.0, &outer);
    m1(&mut g[p.1]).scaled_add(1.0, dy);
    need_dx.then(|| w.t().dot(dy))
}

/// LayerNorm's normalised rows and inverse deviations `(x̂, 1/σ)`, by the
/// reference executor's arithmetic (recomputed from the step's input for
/// the backward pass).
fn ln_stats(x: ArrayView2<f32>, eps: f32) -> (Array2<f32>, Array1<f32>) {
    let (r, h) = x.dim();
    let mut xh = Array2::<f32>::zeros((r, h));
    let mut inv = Array1::<f32>::zeros(r);
    for (i, row) in x.rows().into_iter().enumerate() {
        let n = h as f32;
        let mean = row.sum() / n;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let iv = 1.0 / (var + eps).sqrt();
        inv[i] = iv;
        Zip::from(xh.row_mut(i))
            .and(&row)
            .for_each(|o, &v| *o = (v - mean) * iv);
    }
    (xh, inv)
}

/// Backward of LayerNorm over rows, from [`ln_stats`].
fn ln_back(
    dy: &Array2<f32>,
    xh: &Array2<f32>,
    inv: &Array1<f32>,
    gamma: ArrayView1<f32>,
    g: &mut [ArrayD<f32>],
    p: Pair,
) -> Array2<f32> {
    m1(&mut g[p.0]).scaled_add(1.0, &(dy * xh).sum_axis(Axis(0)));
    m1(&mut g[p.1]).scaled_add(1.0, &dy.sum_axis(Axis(0)));
    let h = dy.ncols() as f32;
    let mut dx = dy * &gamma;
    for ((mut row, xr), &iv) in dx.rows_mut().into_iter().zip(xh.rows()).zip(inv.iter()) {
        let a = row.sum() / h;
        let b = row.iter().zip(xr.iter()).map(|(d, x)| d * x).sum::<f32>() / h;
        Zip::from(&mut row)
            .and(&xr)
            .for_each(|d, &x| *d = iv * (*d - a - x * b));
    }
    dx
}

/// Backward of softmax over the last axis from its output `p`:
/// `p ⊙ (dy − Σ dy ⊙ p)` per row.
fn softmax_back(mut dy: ArrayD<f32>, p: &ArrayD<f32>) -> ArrayD<f32> {
    let last = Axis(dy.ndim() - 1);
    for (mut drow, prow) in dy.lanes_mut(last).into_iter().zip(p.lanes(last)) {
        let dot: f32 = drow.iter().zip(prow.iter()).map(|(d, p)| d * p).sum();
        Zip::from(&mut drow)
            .and(&prow)
            .for_each(|d, &p| *d = p * (*d - dot));
    }
    dy
}

/// Backward of per-head `P·V`: `(dP, dV)`.
fn av_back(
    dc: ArrayView2<f32>,
    p: ArrayView3<f32>,
    v: ArrayView2<f32>,
    heads: usize,
) -> (Array3<f32>, Array2<f32>) {
    let dh = v.ncols() / heads;
    let mut dp = Array3::<f32>::zeros(p.dim());
    let mut dv = Array2::<f32>::zeros(v.dim());
    for hd in 0..heads {
        let cols = s![.., hd * dh..(hd + 1) * dh];
        let dch = dc.slice(cols);
        dv.slice_mut(cols)
            .assign(&p.index_axis(Axis(0), hd).t().dot(&dch));
        dp.index_axis_mut(Axis(0), hd)
            .assign(&dch.dot(&v.slice(cols).t()));
    }
    (dp, dv)
}

/// Backward of per-head `Q·Kᵀ`: `(dQ, dK)`.
fn qk_back(
    ds: ArrayView3<f32>,
    q: ArrayView2<f32>,
    k: ArrayView2<f32>,
    heads: usize,
) -> (Array2<f32>, Array2<f32>) {
    let dh = q.ncols() / heads;
    let mut dq = Array2::<f32>::zeros(q.dim());
    let mut dk = Array2::<f32>::zeros(k.dim());
    for hd in 0..heads {
        let cols = s![.., hd * dh..(hd + 1) * dh];
        let dsh = ds.index_axis(Axis(0), hd);
        dq.slice_mut(cols).assign(&dsh.dot(&k.slice(cols)));
        dk.slice_mut(cols).assign(&dsh.t().dot(&q.slice(cols)));
    }
    (dq, dk)
}

/// Backward of pooling `[rows, hidden] → [hidden]` (CLS row or masked mean).
fn pool_back(pool: Pool, d: ArrayView1<f32>, shape: &[usize], mask: &[f32]) -> Array2<f32> {
    let mut dx = Array2::<f32>::zeros((shape[0], shape[1]));
    match pool {
        Pool::Cls => dx.row_mut(0).assign(&d),
        Pool::Mean => {
            let count = mask
                .iter()
                .filter(|m| **m != 0.0)
                .fold(0.0f32, |a, &m| a + m)
                .max(1e-9);
            for (mut row, &mk) in dx.rows_mut().into_iter().zip(mask) {
                if mk != 0.0 {
                    row.scaled_add(mk / count, &d);
                }
            }
        }
    }
    dx
}

/// A value's gradient from its consumers' contributions, which the
/// backward walk delivers last consumer first: that one, then the others
/// in step order. For an encoder layer's input that is the residual path,
/// then Q, K and V (the order the hand-written layer backward summed in
/// before the description; floating-point addition is not associative, so
/// the order is part of the bit-identical result).
fn total(mut parts: Vec<ArrayD<f32>>) -> Option<ArrayD<f32>> {
    let mut rest = parts.split_off(parts.len().min(1));
    let mut acc = parts.pop()?;
    while let Some(p) = rest.pop() {
        acc += &p;
    }
    Some(acc)
}

/// Ops the backward pass knows.
fn trainable(op: &Op) -> bool {
    matches!(
        op,
        Op::Linear
            | Op::LayerNorm { .. }
            | Op::Add
            | Op::Gelu
            | Op::Tanh
            | Op::Pool(_)
            | Op::Qk { .. }
            | Op::Scale { .. }
            | Op::Mask
            | Op::Softmax
            | Op::Av { .. }
    )
}

fn v3(a: &ArrayD<f32>) -> ArrayView3<'_, f32> {
    a.view().into_dimensionality::<Ix3>().expect("a 3-tensor")
}
fn own2(a: ArrayD<f32>) -> Array2<f32> {
    a.into_dimensionality::<Ix2>().expect("a matrix")
}
fn own1(a: ArrayD<f32>) -> Array1<f32> {
    a.into_dimensionality::<Ix1>().expect("a vector")
}

/// The loss of one output row and its gradient.
fn loss_grad(
    out: &Array1<f32>,
    target: ArrayView1<f32>,
    label: Option<Label>,
    embed: bool,
    o: Objective,
) -> (f64, Array1<f32>) {
    let n = out.len();
    if embed {
        let d = out - &target;
        let loss = d.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / n.max(1) as f64;
        return (loss, d.mapv(|x| 2.0 * x / n.max(1) as f32));
    }
    if n == 1 {
        // Regression.
        let (s, t) = (out[0], target[0]);
        let a = match label {
            Some(Label::Value(_)) | Some(Label::Class(_)) => o.labels,
            None => 0.0,
        };
        let y = match label {
            Some(Label::Value(v)) => v as f32,
            Some(Label::Class(c)) => c as f32,
            None => 0.0,
        };
        let loss =
            (1.0 - a) as f64 * ((s - t) as f64).powi(2) + a as f64 * ((s - y) as f64).powi(2);
        let g = (1.0 - a) * 2.0 * (s - t) + a * 2.0 * (s - y);
        return (loss, Array1::from(vec![g]));
    }
    let soft = |x: ArrayView1<f32>, t: f32| -> Array1<f64> {
        let max = x.fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let e: Array1<f64> = x.mapv(|v| ((v as f64 - max) / t as f64).exp());
        let s = e.sum();
        e / s
    };
    let t = o.temperature.max(1e-3);
    let class = match label {
        Some(Label::Class(c)) if c >= 0 && (c as usize) < n => Some(c as usize),
        _ => None,
    };
    let a = if class.is_some() { o.labels } else { 0.0 };
    let ps = soft(out.view(), t);
    let pt = soft(target, t);
    let mut loss = 0.0;
    for j in 0..n {
        if pt[j] > 0.0 {
            loss += pt[j] * (pt[j].ln() - ps[j].max(1e-300).ln());
        }
    }
    loss *= (t as f64).powi(2) * (1.0 - a) as f64;
    let mut g: Array1<f32> =
        Array1::from_iter((0..n).map(|j| ((1.0 - a) as f64 * t as f64 * (ps[j] - pt[j])) as f32));
    if let Some(c) = class {
        let p1 = soft(out.view(), 1.0);
        loss += a as f64 * -(p1[c].max(1e-300).ln());
        for j in 0..n {
            let y = if j == c { 1.0 } else { 0.0 };
            g[j] += (a as f64 * (p1[j] - y)) as f32;
        }
    }
    (loss, g)
}

impl Branch {
    /// The trainable tensors of a task (with head `head`) of model `m` cut at block
    /// `depth` (≥ 1): encoder layers `depth − 1..`, the pooler when the
    /// head reads it, the classifier; initialised from `get`. The stages and
    /// their tensors, in order, are the block description's.
    pub fn new(m: &Model, head: &Head, get: &Get, depth: usize) -> Result<Branch, String> {
        if depth == 0 || depth > bert::blocks(m) {
            return Err(format!(
                "a branch starts after 1 to {} blocks, not {depth}",
                m.layers + 1
            ));
        }
        let mut blocks: Vec<Block> = (depth..bert::blocks(m))
            .map(|b| bert::block(m, b))
            .collect();
        blocks.push(bert::pool(head, m.hidden));
        blocks.push(bert::head(head, m.hidden));
        let mut b = Branch {
            names: Vec::new(),
            tensors: Vec::new(),
            blocks: Vec::new(),
            params: Vec::new(),
            embed: matches!(head, Head::Embed { .. }),
        };
        for block in &blocks {
            let mut per_step = Vec::with_capacity(block.steps.len());
            for step in &block.steps {
                if !trainable(&step.op) || step.operands.contains(&Operand::Ids) {
                    return Err(format!("cannot train through `{}`", step.op.name()));
                }
                let mut ix = Vec::with_capacity(step.params.len());
                for t in &step.params {
                    b.tensors.push((*get(&t.name)?).clone());
                    b.names.push(t.name.clone());
                    ix.push(b.tensors.len() - 1);
                }
                per_step.push(ix);
            }
            b.params.push(per_step);
        }
        b.blocks = blocks;
        Ok(b)
    }

    /// Whether anything is trainable.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Trainable values.
    pub fn parameters(&self) -> usize {
        self.tensors.iter().map(|t| t.len()).sum()
    }

    /// The current tensors by Hugging Face name.
    pub fn tensors(&self) -> HashMap<String, Arc<ArrayD<f32>>> {
        self.names
            .iter()
            .cloned()
            .zip(self.tensors.iter().map(|t| Arc::new(t.clone())))
            .collect()
    }

    fn w2(&self, i: usize) -> ArrayView2<'_, f32> {
        v2(&self.tensors[i])
    }
    fn w1(&self, i: usize) -> ArrayView1<'_, f32> {
        v1(&self.tensors[i])
    }

    /// Block `bi`'s input.
    fn input_of<'t>(&self, tr: &'t Trace, bi: usize) -> &'t ArrayD<f32> {
        match bi {
            0 => &tr.input,
            _ => self.output_of(tr, bi - 1),
        }
    }

    /// Block `bi`'s result.
    fn output_of<'t>(&self, tr: &'t Trace, bi: usize) -> &'t ArrayD<f32> {
        match self.blocks[bi].output() {
            Operand::Step(i) => &tr.tapes[bi][i],
            _ => self.input_of(tr, bi),
        }
    }

    /// The value operand `o` of a step of block `bi` reads.
    fn value<'t>(&self, tr: &'t Trace, bi: usize, o: Operand) -> &'t ArrayD<f32> {
        match o {
            Operand::Step(i) => &tr.tapes[bi][i],
            Operand::Input => self.input_of(tr, bi),
            // `Branch::new` refuses steps that read the ids.
            Operand::Mask | Operand::Ids => &tr.mask,
        }
    }

    /// The forward pass: every trained block's steps, walked by
    /// [`forward::steps`] (the reference executor's kernels).
    fn forward(&self, x: ArrayView2<f32>, mask: &[f32]) -> Trace {
        let r = Req { ids: &[], mask };
        let mut tr = Trace {
            input: x.to_owned().into_dyn(),
            mask: ArrayView1::from(mask).to_owned().into_dyn(),
            tapes: Vec::with_capacity(self.blocks.len()),
        };
        for (bi, block) in self.blocks.iter().enumerate() {
            let params: Vec<Vec<&ArrayD<f32>>> = self.params[bi]
                .iter()
                .map(|ix| ix.iter().map(|&i| &self.tensors[i]).collect())
                .collect();
            let tape = forward::steps(block, &params, Some(self.input_of(&tr, bi)), &r)
                .expect("a well-formed block description");
            tr.tapes.push(tape);
        }
        tr
    }

    /// The branch's output row for a trunk activation.
    pub fn output(&self, x: ArrayView2<f32>, mask: &[f32]) -> Array1<f32> {
        let tr = self.forward(x, mask);
        own1(self.output_of(&tr, self.blocks.len() - 1).clone())
    }

    /// Backward of one step: accumulates its tensors' gradients into `g`
    /// and returns each operand's gradient (`None` where none is wanted).
    fn step_back(
        &self,
        op: &Op,
        s: StepVals,
        dy: ArrayD<f32>,
        g: &mut [ArrayD<f32>],
    ) -> Vec<Option<ArrayD<f32>>> {
        let pair = || (s.params[0], s.params[1]);
        match op {
            Op::Linear if s.args[0].ndim() == 1 => {
                let (x, w) = (v1(s.args[0]), self.w2(s.params[0]));
                vec![linear1_back(&own1(dy), x, w, g, pair(), s.want[0]).map(|d| d.into_dyn())]
            }
            Op::Linear => {
                let (x, w) = (v2(s.args[0]), self.w2(s.params[0]));
                vec![linear_back(&own2(dy), x, w, g, pair(), s.want[0]).map(|d| d.into_dyn())]
            }
            Op::LayerNorm { eps } => {
                let (xh, inv) = ln_stats(v2(s.args[0]), *eps as f32);
                let gamma = self.w1(s.params[0]);
                vec![Some(
                    ln_back(&own2(dy), &xh, &inv, gamma, g, pair()).into_dyn(),
                )]
            }
            Op::Add => vec![s.want[0].then(|| dy.clone()), s.want[1].then_some(dy)],
            Op::Gelu => {
                let mut d = dy;
                Zip::from(&mut d)
                    .and(s.args[0])
                    .for_each(|d, &x| *d *= gelu_grad(x));
                vec![Some(d)]
            }
            Op::Tanh => vec![Some(
                Zip::from(&dy)
                    .and(s.out)
                    .map_collect(|d, &f| d * (1.0 - f * f)),
            )],
            Op::Pool(pool) => {
                let dx = s.want[0]
                    .then(|| pool_back(*pool, v1(&dy), s.args[0].shape(), s.mask).into_dyn());
                vec![dx, None]
            }
            Op::Scale { factor } => {
                let f = *factor as f32;
                vec![Some(dy.mapv_into(|x| x * f))]
            }
            Op::Mask => vec![Some(dy), None],
            Op::Softmax => vec![Some(softmax_back(dy, s.out))],
            Op::Qk { heads } => {
                let (q, k) = (v2(s.args[0]), v2(s.args[1]));
                let (dq, dk) = qk_back(v3(&dy), q, k, *heads as usize);
                vec![Some(dq.into_dyn()), Some(dk.into_dyn())]
            }
            Op::Av { heads } => {
                let (p, v) = (v3(s.args[0]), v2(s.args[1]));
                let (dp, dv) = av_back(v2(&dy), p, v, *heads as usize);
                vec![Some(dp.into_dyn()), Some(dv.into_dyn())]
            }
            // `Branch::new` refuses every other op.
            _ => vec![None; s.args.len()],
        }
    }

    /// Backward of block `bi` from its result's gradient `dy`, walking its
    /// steps last first: accumulates its tensors' gradients into `g` and
    /// returns its input's gradient (`None` for the first trained block,
    /// whose input is the frozen trunk's).
    fn block_back(
        &self,
        tr: &Trace,
        bi: usize,
        dy: ArrayD<f32>,
        mask: &[f32],
        g: &mut [ArrayD<f32>],
    ) -> Option<ArrayD<f32>> {
        let block = &self.blocks[bi];
        let n = block.steps.len();
        // Gradient contributions per step value; slot `n` is the input's.
        let slot = |o: Operand| match o {
            Operand::Step(i) => Some(i),
            Operand::Input => Some(n),
            Operand::Ids | Operand::Mask => None,
        };
        let mut parts: Vec<Vec<ArrayD<f32>>> = (0..=n).map(|_| Vec::new()).collect();
        parts[slot(block.output())?].push(dy);
        let want_input = bi > 0;
        for (i, step) in block.steps.iter().enumerate().rev() {
            let Some(d) = total(std::mem::take(&mut parts[i])) else {
                continue;
            };
            let vals = StepVals {
                args: step
                    .operands
                    .iter()
                    .map(|&o| self.value(tr, bi, o))
                    .collect(),
                out: &tr.tapes[bi][i],
                params: &self.params[bi][i],
                want: step
                    .operands
                    .iter()
                    .map(|&o| match o {
                        Operand::Step(_) => true,
                        Operand::Input => want_input,
                        Operand::Ids | Operand::Mask => false,
                    })
                    .collect(),
                mask,
            };
            let grads = self.step_back(&step.op, vals, d, g);
            for (&o, gr) in step.operands.iter().zip(grads) {
                if let (Some(k), Some(gr)) = (slot(o), gr) {
                    parts[k].push(gr);
                }
            }
        }
        if want_input {
            total(parts.pop()?)
        } else {
            None
        }
    }

    fn zeros(&self) -> Vec<ArrayD<f32>> {
        self.tensors
            .iter()
            .map(|t| ArrayD::zeros(t.raw_dim()))
            .collect()
    }

    /// One request's loss; accumulates its gradient into `g`.
    fn request(&self, it: &Item, o: Objective, g: &mut [ArrayD<f32>]) -> f64 {
        let tr = self.forward(it.x, it.mask);
        let out = own1(self.output_of(&tr, self.blocks.len() - 1).clone());
        let (loss, dout) = loss_grad(&out, it.target, it.label, self.embed, o);
        let mut d = Some(dout.into_dyn());
        for bi in (0..self.blocks.len()).rev() {
            match d.take() {
                Some(dy) => d = self.block_back(&tr, bi, dy, it.mask, g),
                None => break,
            }
        }
        loss
    }

    /// The summed loss and gradients over `items` (deterministic: fixed
    /// chunks, summed in order).
    pub fn loss_and_grad(&self, items: &[&Item], o: Objective) -> (f64, Vec<ArrayD<f32>>) {
        let mut bufs: Vec<Vec<ArrayD<f32>>> = (0..CHUNKS).map(|_| self.zeros()).collect();
        let loss = self.loss_and_grad_into(items, o, &mut bufs);
        (loss, bufs.swap_remove(0))
    }

    /// [`Branch::loss_and_grad`] into reused buffers (one per chunk, each
    /// shaped like the tensors): the gradient is left in `bufs[0]`.
    fn loss_and_grad_into(
        &self,
        items: &[&Item],
        o: Objective,
        bufs: &mut [Vec<ArrayD<f32>>],
    ) -> f64 {
        bufs.par_iter_mut()
            .flat_map(|b| b.par_iter_mut())
            .for_each(|t| t.fill(0.0));
        if items.is_empty() {
            return 0.0;
        }
        let per = items.len().div_ceil(CHUNKS);
        let losses: Vec<f64> = items
            .par_chunks(per)
            .zip(bufs.par_iter_mut())
            .map(|(chunk, g)| {
                let mut loss = 0.0;
                for it in chunk {
                    loss += self.request(it, o, g);
                }
                loss
            })
            .collect();
        let (first, rest) = bufs.split_at_mut(1);
        for gp in rest.iter() {
            first[0]
                .par_iter_mut()
                .zip(gp.par_iter())
                .for_each(|(a, b)| *a += b);
        }
        losses.iter().sum()
    }

    /// The mean loss over `items` at the current weights: forward passes
    /// only, reduced as [`Branch::loss_and_grad`] reduces a mini-batch
    /// ([`CHUNKS`] fixed contiguous chunks, each summed in order, the chunks
    /// summed in order), so it is deterministic. 0 for no items.
    pub fn mean_loss(&self, items: &[Item], o: Objective) -> f64 {
        if items.is_empty() || self.is_empty() {
            return 0.0;
        }
        let per = items.len().div_ceil(CHUNKS);
        let losses: Vec<f64> = items
            .par_chunks(per)
            .map(|chunk| {
                chunk
                    .iter()
                    .map(|it| {
                        let out = self.output(it.x, it.mask);
                        loss_grad(&out, it.target, it.label, self.embed, o).0
                    })
                    .fold(0.0, |a, l| a + l)
            })
            .collect();
        losses.iter().sum::<f64>() / items.len() as f64
    }

    /// Trains on `items` with AdamW (see the module docs); `tick` is called
    /// after every step. The log's losses are [`Branch::mean_loss`] over
    /// every item before the first step and after the last.
    pub fn train(
        &mut self,
        items: &[Item],
        opts: &BranchOpts,
        seed: u64,
        tick: &dyn Fn(),
    ) -> TrainLog {
        let o = Objective::from(opts);
        let n = items.len();
        if n == 0 || self.is_empty() {
            return TrainLog::default();
        }
        let bs = (opts.batch as usize).clamp(1, n);
        let per_epoch = n.div_ceil(bs);
        let total = opts.epochs as usize * per_epoch;
        let warm = ((total as f64 * WARMUP).ceil() as usize).max(1);
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        let mut mom = self.zeros();
        let mut vel = self.zeros();
        let mut rng = Rng::keyed(seed, "branch-order");
        let mut bufs: Vec<Vec<ArrayD<f32>>> = (0..CHUNKS).map(|_| self.zeros()).collect();
        let mut log = TrainLog {
            first_loss: self.mean_loss(items, o),
            ..TrainLog::default()
        };
        let mut step = 0usize;
        for _ in 0..opts.epochs as usize {
            let mut order: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                let j = rng.below(0, i as u64 + 1) as usize;
                order.swap(i, j);
            }
            for batch in order.chunks(bs) {
                let refs: Vec<&Item> = batch.iter().map(|&i| &items[i]).collect();
                self.loss_and_grad_into(&refs, o, &mut bufs);
                let g = &mut bufs[0];
                let inv = 1.0 / batch.len() as f32;
                // Per tensor, then summed in order (deterministic).
                let sq: Vec<f64> = g
                    .par_iter()
                    .map(|t| {
                        t.iter()
                            .fold(0.0f64, |a, &x| a + (x as f64 * inv as f64).powi(2))
                    })
                    .collect();
                let norm = sq.iter().sum::<f64>().sqrt();
                let scale = if norm > CLIP {
                    inv * (CLIP / norm) as f32
                } else {
                    inv
                };
                g.par_iter_mut().for_each(|t| t.mapv_inplace(|x| x * scale));
                step += 1;
                let lr = opts.lr
                    * if step <= warm {
                        step as f64 / warm as f64
                    } else {
                        (total + 1 - step) as f64 / (total + 1 - warm) as f64
                    };
                let (c1, c2) = (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32));
                let lr = lr as f32;
                self.tensors
                    .par_iter_mut()
                    .zip(g.par_iter())
                    .zip(mom.par_iter_mut())
                    .zip(vel.par_iter_mut())
                    .for_each(|(((p, g), m), v)| {
                        let decay = if p.ndim() == 2 { WEIGHT_DECAY } else { 0.0 };
                        Zip::from(p).and(g).and(m).and(v).for_each(|p, &g, m, v| {
                            *m = b1 * *m + (1.0 - b1) * g;
                            *v = b2 * *v + (1.0 - b2) * g * g;
                            let (mh, vh) = (*m / c1, *v / c2);
                            *p -= lr * (mh / (vh.sqrt() + eps) + decay * *p);
                        });
                    });
                tick();
            }
        }
        log.steps = step;
        log.last_loss = self.mean_loss(items, o);
        log
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::bert::Stage;
    use crate::reference::{av, gelu, mask_scores, qk, softmax};

    /// `x·Wᵀ + b` (the reference executor's `linear` on rows).
    fn linear(x: ArrayView2<f32>, w: ArrayView2<f32>, b: ArrayView1<f32>) -> Array2<f32> {
        let mut y = x.dot(&w.t());
        y += &b;
        y
    }

    /// LayerNorm over rows: `(y, x̂, 1/σ)`.
    fn ln_fwd(
        x: &Array2<f32>,
        g: ArrayView1<f32>,
        b: ArrayView1<f32>,
        eps: f32,
    ) -> (Array2<f32>, Array2<f32>, Array1<f32>) {
        let (xh, inv) = ln_stats(x.view(), eps);
        let mut y = &xh * &g;
        y += &b;
        (y, xh, inv)
    }

    fn scale_of(h: usize, heads: usize) -> f32 {
        (1.0 / ((h / heads) as f64).sqrt()) as f32
    }

    /// The attention core by the reference kernels, as an encoder layer's
    /// steps run it: `(P, C)` with `P = softmax(scale·QKᵀ + mask)`, `C = P·V`.
    fn attn_fwd(
        q: &Array2<f32>,
        k: &Array2<f32>,
        v: &Array2<f32>,
        mask: &[f32],
        heads: usize,
    ) -> (Array3<f32>, Array2<f32>) {
        let scale = scale_of(q.ncols(), heads);
        let s = qk(q.view(), k.view(), heads).into_dyn().mapv(|x| x * scale);
        let p = softmax(&mask_scores(s, ArrayView1::from(mask)));
        let c = av(v3(&p), v.view(), heads);
        (p.into_dimensionality::<Ix3>().unwrap(), c)
    }

    /// Backward of [`attn_fwd`] through the steps' own backward kernels
    /// (·V, softmax, scale, QKᵀ; the mask passes the gradient through):
    /// `(dQ, dK, dV)`.
    fn attn_back(
        dc: &Array2<f32>,
        q: &Array2<f32>,
        k: &Array2<f32>,
        v: &Array2<f32>,
        p: &Array3<f32>,
        heads: usize,
    ) -> (Array2<f32>, Array2<f32>, Array2<f32>) {
        let scale = scale_of(q.ncols(), heads);
        let (dp, dv) = av_back(dc.view(), p.view(), v.view(), heads);
        let ds = softmax_back(dp.into_dyn(), &p.clone().into_dyn()).mapv_into(|x| x * scale);
        let (dq, dk) = qk_back(v3(&ds), q.view(), k.view(), heads);
        (dq, dk, dv)
    }

    fn rand2(rng: &mut Rng, r: usize, c: usize, s: f32) -> Array2<f32> {
        Array2::from_shape_fn((r, c), |_| rng.normal() as f32 * s)
    }
    fn rand1(rng: &mut Rng, n: usize, s: f32) -> Array1<f32> {
        Array1::from_shape_fn(n, |_| rng.normal() as f32 * s)
    }

    /// Central difference of `f` at `x` along coordinate `i`.
    fn fd(x: &mut [f32], i: usize, f: &mut dyn FnMut(&[f32]) -> f64) -> f64 {
        let h = 1e-2f32;
        let orig = x[i];
        x[i] = orig + h;
        let a = f(x);
        x[i] = orig - h;
        let b = f(x);
        x[i] = orig;
        (a - b) / (2.0 * h as f64)
    }

    fn close(num: f64, ana: f64, what: &str) {
        let tol = 2e-3 + 3e-2 * num.abs().max(ana.abs());
        assert!(
            (num - ana).abs() <= tol,
            "{what}: finite difference {num}, backward {ana}"
        );
    }

    /// A fixed weighting of an op's output makes a scalar to differentiate.
    fn weights_like(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.normal() as f32).collect()
    }
    fn dot(a: &[f32], w: &[f32]) -> f64 {
        a.iter().zip(w).map(|(a, w)| *a as f64 * *w as f64).sum()
    }

    #[test]
    fn linear_backward_matches_finite_differences() {
        let mut rng = Rng::new(1);
        let x = rand2(&mut rng, 3, 5, 1.0);
        let w = rand2(&mut rng, 4, 5, 0.5);
        let b = rand1(&mut rng, 4, 0.5);
        let wy = weights_like(&mut rng, 12);
        let dy = Array2::from_shape_vec((3, 4), wy.clone()).unwrap();
        let mut g = vec![ArrayD::zeros(vec![4, 5]), ArrayD::zeros(vec![4])];
        let dx = linear_back(&dy, x.view(), w.view(), &mut g, (0, 1), true).unwrap();
        let f = |x: &Array2<f32>, w: &Array2<f32>, b: &Array1<f32>| {
            dot(
                linear(x.view(), w.view(), b.view()).as_slice().unwrap(),
                &wy,
            )
        };
        let mut xs = x.as_slice().unwrap().to_vec();
        for i in 0..xs.len() {
            let num = fd(&mut xs, i, &mut |v| {
                f(&Array2::from_shape_vec((3, 5), v.to_vec()).unwrap(), &w, &b)
            });
            close(num, dx.as_slice().unwrap()[i] as f64, "linear dx");
        }
        let mut ws = w.as_slice().unwrap().to_vec();
        for i in 0..ws.len() {
            let num = fd(&mut ws, i, &mut |v| {
                f(&x, &Array2::from_shape_vec((4, 5), v.to_vec()).unwrap(), &b)
            });
            close(num, g[0].as_slice().unwrap()[i] as f64, "linear dW");
        }
        let mut bs = b.to_vec();
        for i in 0..bs.len() {
            let num = fd(&mut bs, i, &mut |v| f(&x, &w, &Array1::from(v.to_vec())));
            close(num, g[1].as_slice().unwrap()[i] as f64, "linear db");
        }
    }

    #[test]
    fn layernorm_backward_matches_finite_differences() {
        let mut rng = Rng::new(2);
        let x = rand2(&mut rng, 3, 6, 1.0);
        let gm = rand1(&mut rng, 6, 1.0);
        let bt = rand1(&mut rng, 6, 0.3);
        let wy = weights_like(&mut rng, 18);
        let dy = Array2::from_shape_vec((3, 6), wy.clone()).unwrap();
        let (_, xh, inv) = ln_fwd(&x, gm.view(), bt.view(), 1e-5);
        let mut g = vec![ArrayD::zeros(vec![6]), ArrayD::zeros(vec![6])];
        let dx = ln_back(&dy, &xh, &inv, gm.view(), &mut g, (0, 1));
        let f = |x: &Array2<f32>, gm: &Array1<f32>, bt: &Array1<f32>| {
            dot(
                ln_fwd(x, gm.view(), bt.view(), 1e-5).0.as_slice().unwrap(),
                &wy,
            )
        };
        let mut xs = x.as_slice().unwrap().to_vec();
        for i in 0..xs.len() {
            let num = fd(&mut xs, i, &mut |v| {
                f(
                    &Array2::from_shape_vec((3, 6), v.to_vec()).unwrap(),
                    &gm,
                    &bt,
                )
            });
            close(num, dx.as_slice().unwrap()[i] as f64, "layernorm dx");
        }
        let mut gs = gm.to_vec();
        for i in 0..gs.len() {
            let num = fd(&mut gs, i, &mut |v| f(&x, &Array1::from(v.to_vec()), &bt));
            close(num, g[0][[i]] as f64, "layernorm dγ");
        }
        let mut bs = bt.to_vec();
        for i in 0..bs.len() {
            let num = fd(&mut bs, i, &mut |v| f(&x, &gm, &Array1::from(v.to_vec())));
            close(num, g[1][[i]] as f64, "layernorm dβ");
        }
    }

    #[test]
    fn gelu_derivative_matches_finite_differences() {
        for i in -40..=40 {
            let x = i as f32 * 0.1;
            let h = 1e-2f32;
            let num = (gelu(x + h) as f64 - gelu(x - h) as f64) / (2.0 * h as f64);
            close(num, gelu_grad(x) as f64, "gelu");
        }
    }

    #[test]
    fn attention_backward_matches_finite_differences() {
        let mut rng = Rng::new(3);
        let (sq, h, heads) = (4, 6, 2);
        let q = rand2(&mut rng, sq, h, 1.0);
        let k = rand2(&mut rng, sq, h, 1.0);
        let v = rand2(&mut rng, sq, h, 1.0);
        // The last key is padding.
        let mask = [1.0, 1.0, 1.0, 0.0];
        let wy = weights_like(&mut rng, sq * h);
        let dc = Array2::from_shape_vec((sq, h), wy.clone()).unwrap();
        let (p, _) = attn_fwd(&q, &k, &v, &mask, heads);
        let (dq, dk, dv) = attn_back(&dc, &q, &k, &v, &p, heads);
        let f = |q: &Array2<f32>, k: &Array2<f32>, v: &Array2<f32>| {
            dot(attn_fwd(q, k, v, &mask, heads).1.as_slice().unwrap(), &wy)
        };
        let mk = |v: &[f32]| Array2::from_shape_vec((sq, h), v.to_vec()).unwrap();
        for (which, ana) in [(0, &dq), (1, &dk), (2, &dv)] {
            let base = [&q, &k, &v][which];
            let mut xs = base.as_slice().unwrap().to_vec();
            for i in 0..xs.len() {
                let num = fd(&mut xs, i, &mut |x| match which {
                    0 => f(&mk(x), &k, &v),
                    1 => f(&q, &mk(x), &v),
                    _ => f(&q, &k, &mk(x)),
                });
                close(
                    num,
                    ana.as_slice().unwrap()[i] as f64,
                    ["dQ", "dK", "dV"][which],
                );
            }
        }
        // Padded keys get (almost) no gradient.
        assert!(dk.row(3).iter().all(|x| x.abs() < 1e-6));
    }

    #[test]
    fn losses_match_finite_differences() {
        let mut rng = Rng::new(4);
        let o = Objective {
            temperature: 2.0,
            labels: 0.3,
        };
        let cases: Vec<(usize, bool, Option<Label>)> = vec![
            (3, false, None),
            (3, false, Some(Label::Class(1))),
            (1, false, None),
            (1, false, Some(Label::Value(0.7))),
            (5, true, None),
        ];
        for (n, embed, label) in cases {
            let out = rand1(&mut rng, n, 1.0);
            let target = rand1(&mut rng, n, 1.0);
            let (_, g) = loss_grad(&out, target.view(), label, embed, o);
            let mut xs = out.to_vec();
            for i in 0..n {
                let num = fd(&mut xs, i, &mut |x| {
                    loss_grad(&Array1::from(x.to_vec()), target.view(), label, embed, o).0
                });
                close(
                    num,
                    g[i] as f64,
                    &format!("loss n={n} embed={embed} {label:?}"),
                );
            }
        }
    }

    /// A tiny model (2 layers, hidden 8) with random weights drawn from
    /// `rng`, and its branch cut at depth 1 (both layers and the head).
    fn tiny_branch(head: &Head, rng: &mut Rng) -> Branch {
        let model = Model {
            name: "tiny".into(),
            layers: 2,
            hidden: 8,
            heads: 2,
            ffn: 12,
            vocab: 10,
            max_seq: 8,
            type_vocab: 2,
            layer_norm_eps: 1e-5,
            weights: crate::spec::WeightSource::Synthetic { seed: 1 },
        };
        let mut store: HashMap<String, Arc<ArrayD<f32>>> = HashMap::new();
        for ts in crate::weights::layout(&model, head) {
            let shape: Vec<usize> = ts.shape.iter().map(|&d| d as usize).collect();
            let scale = if ts.name.contains("LayerNorm.weight") {
                None
            } else {
                Some(0.4)
            };
            let t = ArrayD::from_shape_fn(shape, |_| match scale {
                Some(s) => rng.normal() as f32 * s,
                None => 1.0 + rng.normal() as f32 * 0.1,
            });
            store.insert(ts.name.clone(), Arc::new(t));
        }
        let get = |n: &str| store.get(n).cloned().ok_or_else(|| n.to_string());
        Branch::new(&model, head, &get, 1).unwrap()
    }

    /// The log's losses are the mean loss over every item before the first
    /// step and after the last: with one epoch they differ (the log once
    /// held the mean over the first and the last epoch, the same figure
    /// twice), and on a case that learns the second is lower.
    #[test]
    fn train_log_is_the_loss_before_and_after_training() {
        let head = Head::Classify {
            classes: 3,
            pool: Pool::Cls,
        };
        let mut rng = Rng::new(7);
        let mut b = tiny_branch(&head, &mut rng);
        let xs: Vec<Array2<f32>> = (0..16).map(|_| rand2(&mut rng, 5, 8, 1.0)).collect();
        let targets: Vec<Array1<f32>> = (0..16).map(|_| rand1(&mut rng, 3, 2.0)).collect();
        let mask = [1.0, 1.0, 1.0, 1.0, 0.0];
        let items: Vec<Item> = xs
            .iter()
            .zip(&targets)
            .map(|(x, t)| Item {
                x: x.view(),
                mask: &mask,
                target: t.view(),
                label: None,
            })
            .collect();
        let opts = BranchOpts {
            epochs: 1,
            lr: 1e-2,
            batch: 2,
            ..BranchOpts::default()
        };
        let o = Objective::from(&opts);
        let before = b.mean_loss(&items, o);
        let log = b.train(&items, &opts, 3, &|| {});
        let after = b.mean_loss(&items, o);
        assert_eq!(log.steps, 8);
        assert_eq!((log.first_loss, log.last_loss), (before, after));
        assert!(
            log.last_loss < log.first_loss,
            "one epoch did not lower the loss: {log:?}"
        );
        // Deterministic: the same figure again.
        assert_eq!(b.mean_loss(&items, o), after);
    }

    /// A tiny model's branch: every trainable tensor's gradient against
    /// finite differences of the whole loss (layers, pooler, classifier,
    /// both poolings).
    #[test]
    fn branch_backward_matches_finite_differences() {
        for head in [
            Head::Classify {
                classes: 3,
                pool: Pool::Cls,
            },
            Head::Regress { pool: Pool::Mean },
            Head::Embed { pool: Pool::Mean },
        ] {
            let mut rng = Rng::new(5);
            let b = tiny_branch(&head, &mut rng);
            let layers = b
                .blocks
                .iter()
                .filter(|b| matches!(b.stage, Stage::Encoder(_)));
            assert_eq!(layers.count(), 2);
            let x = rand2(&mut rng, 5, 8, 1.0);
            let mask = [1.0, 1.0, 1.0, 1.0, 0.0];
            let width = match head {
                Head::Classify { classes, .. } => classes as usize,
                Head::Regress { .. } => 1,
                Head::Embed { .. } => 8,
            };
            let target = rand1(&mut rng, width, 1.0);
            let label = match head {
                Head::Classify { .. } => Some(Label::Class(2)),
                _ => None,
            };
            let o = Objective {
                temperature: 2.0,
                labels: 0.5,
            };
            let item = Item {
                x: x.view(),
                mask: &mask,
                target: target.view(),
                label,
            };
            let (_, g) = b.loss_and_grad(&[&item], o);
            let mut checked = 0;
            for (ti, gt) in g.iter().enumerate() {
                let len = b.tensors[ti].len();
                // A few coordinates of every tensor.
                for i in [0, len / 2, len - 1] {
                    let mut vals = b.tensors[ti].as_slice().unwrap().to_vec();
                    let num = fd(&mut vals, i, &mut |v| {
                        let mut c = b.clone();
                        c.tensors[ti] =
                            ArrayD::from_shape_vec(c.tensors[ti].raw_dim(), v.to_vec()).unwrap();
                        loss_grad(&c.output(x.view(), &mask), target.view(), label, c.embed, o).0
                    });
                    close(
                        num,
                        gt.as_slice().unwrap()[i] as f64,
                        &format!("{:?}: {}[{i}]", head, b.names[ti]),
                    );
                    checked += 1;
                }
            }
            assert!(checked >= 3 * 16);
        }
    }
}
