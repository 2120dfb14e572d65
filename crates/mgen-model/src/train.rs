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
//! The forward pass here is the reference executor's arithmetic
//! ([`crate::reference`]: `x·Wᵀ + b`, erf GELU, LayerNorm over the last
//! axis, −10000 on padded keys, CLS or masked-mean pooling, `tanh` pooler),
//! written once more with a cache of what the backward pass needs. It is
//! not required to match the executor bit for bit: the trained weights are
//! measured by [`crate::forward`] (which is), so every budget the generator
//! reports is the executor's.
//!
//! Backward passes are hand-written per op and checked against central
//! finite differences in this module's tests (every op and the whole
//! branch).
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
use crate::forward::Get;
use crate::reference::{gelu, mask_scores, mean_pool, softmax};
use crate::spec::{BranchOpts, Head, Model, Pool};
use crate::weights::rng::Rng;
use ndarray::linalg::general_mat_mul;
use ndarray::{
    Array1, Array2, Array3, ArrayD, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis,
    Ix1, Ix2, Zip, s,
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

#[derive(Debug, Clone)]
struct LayerIx {
    q: Pair,
    k: Pair,
    v: Pair,
    o: Pair,
    ln1: Pair,
    f1: Pair,
    f2: Pair,
    ln2: Pair,
}

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
    /// Mean loss over the first and the last epoch.
    pub first_loss: f64,
    pub last_loss: f64,
}

/// The trainable part of a task model cut at a depth.
#[derive(Debug, Clone)]
pub struct Branch {
    names: Vec<String>,
    tensors: Vec<ArrayD<f32>>,
    layers: Vec<LayerIx>,
    pooler: Option<Pair>,
    cls: Option<Pair>,
    pool: Pool,
    embed: bool,
    heads: usize,
    eps: f32,
}

/// Per-layer values the backward pass reads.
struct LayerCache {
    x: Array2<f32>,
    q: Array2<f32>,
    k: Array2<f32>,
    v: Array2<f32>,
    p: Array3<f32>,
    c: Array2<f32>,
    xh1: Array2<f32>,
    inv1: Array1<f32>,
    x1: Array2<f32>,
    f1: Array2<f32>,
    ge: Array2<f32>,
    xh2: Array2<f32>,
    inv2: Array1<f32>,
}

/// A request's forward pass.
struct Trace {
    layers: Vec<LayerCache>,
    rows: usize,
    hidden: usize,
    pooled: Array1<f32>,
    feat: Array1<f32>,
    out: Array1<f32>,
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

/// `x·Wᵀ + b`.
fn linear(x: ArrayView2<f32>, w: ArrayView2<f32>, b: ArrayView1<f32>) -> Array2<f32> {
    let mut y = x.dot(&w.t());
    y += &b;
    y
}

/// Backward of [`linear`]: accumulates `dW += dyᵀ·x`, `db += Σ dy`;
/// returns `dx = dy·W` when asked.
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

/// LayerNorm over rows: `(y, x̂, 1/σ)`.
fn ln_fwd(
    x: &Array2<f32>,
    g: ArrayView1<f32>,
    b: ArrayView1<f32>,
    eps: f32,
) -> (Array2<f32>, Array2<f32>, Array1<f32>) {
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
    let mut y = &xh * &g;
    y += &b;
    (y, xh, inv)
}

/// Backward of [`ln_fwd`].
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

/// d GELU / dx (erf form).
fn gelu_grad(x: f32) -> f32 {
    let cdf = 0.5 * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2));
    let pdf = (-0.5 * x * x).exp() * 0.398_942_3;
    cdf + x * pdf
}

/// Multi-head attention core: `P = softmax(scale·QKᵀ + mask)`, `C = P·V`.
fn attn_fwd(
    q: &Array2<f32>,
    k: &Array2<f32>,
    v: &Array2<f32>,
    mask: &[f32],
    heads: usize,
) -> (Array3<f32>, Array2<f32>) {
    let (sq, h) = q.dim();
    let sk = k.nrows();
    let dh = h / heads;
    let scale = (1.0 / (dh as f64).sqrt()) as f32;
    let mut p = Array3::<f32>::zeros((heads, sq, sk));
    let mut c = Array2::<f32>::zeros((sq, h));
    for hd in 0..heads {
        let cols = s![.., hd * dh..(hd + 1) * dh];
        // The executor's own scale, mask and softmax.
        let sc = q.slice(cols).dot(&k.slice(cols).t()).mapv(|x| x * scale);
        let sc = softmax(&mask_scores(sc.into_dyn(), ArrayView1::from(mask)))
            .into_dimensionality::<Ix2>()
            .expect("a matrix");
        c.slice_mut(cols).assign(&sc.dot(&v.slice(cols)));
        p.index_axis_mut(Axis(0), hd).assign(&sc);
    }
    (p, c)
}

/// Backward of [`attn_fwd`]: `(dQ, dK, dV)`.
fn attn_back(
    dc: &Array2<f32>,
    q: &Array2<f32>,
    k: &Array2<f32>,
    v: &Array2<f32>,
    p: &Array3<f32>,
    heads: usize,
) -> (Array2<f32>, Array2<f32>, Array2<f32>) {
    let h = q.ncols();
    let dh = h / heads;
    let scale = (1.0 / (dh as f64).sqrt()) as f32;
    let mut dq = Array2::<f32>::zeros(q.dim());
    let mut dk = Array2::<f32>::zeros(k.dim());
    let mut dv = Array2::<f32>::zeros(v.dim());
    for hd in 0..heads {
        let cols = s![.., hd * dh..(hd + 1) * dh];
        let ph = p.index_axis(Axis(0), hd);
        let dch = dc.slice(cols);
        dv.slice_mut(cols).assign(&ph.t().dot(&dch));
        let mut ds = dch.dot(&v.slice(cols).t());
        for (mut drow, prow) in ds.rows_mut().into_iter().zip(ph.rows()) {
            let dot: f32 = drow.iter().zip(prow.iter()).map(|(d, p)| d * p).sum();
            Zip::from(&mut drow)
                .and(&prow)
                .for_each(|d, &p| *d = p * (*d - dot) * scale);
        }
        dq.slice_mut(cols).assign(&ds.dot(&k.slice(cols)));
        dk.slice_mut(cols).assign(&ds.t().dot(&q.slice(cols)));
    }
    (dq, dk, dv)
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
    /// head reads it, the classifier; initialised from `get`.
    pub fn new(m: &Model, head: &Head, get: &Get, depth: usize) -> Result<Branch, String> {
        if depth == 0 || depth > m.layers as usize + 1 {
            return Err(format!(
                "a branch starts after 1 to {} blocks, not {depth}",
                m.layers + 1
            ));
        }
        let pool = head.pool();
        let embed = matches!(head, Head::Embed { .. });
        let mut b = Branch {
            names: Vec::new(),
            tensors: Vec::new(),
            layers: Vec::new(),
            pooler: None,
            cls: None,
            pool,
            embed,
            heads: m.heads as usize,
            eps: m.layer_norm_eps as f32,
        };
        fn pair(b: &mut Branch, get: &Get, p: &str) -> Result<Pair, String> {
            let mut ix = [0usize; 2];
            for (k, part) in ["weight", "bias"].iter().enumerate() {
                let name = format!("{p}.{part}");
                let t = get(&name)?;
                b.names.push(name);
                b.tensors.push((*t).clone());
                ix[k] = b.tensors.len() - 1;
            }
            Ok((ix[0], ix[1]))
        }
        for l in depth - 1..m.layers as usize {
            let p = format!("encoder.layer.{l}.");
            let ix = LayerIx {
                q: pair(&mut b, get, &format!("{p}attention.self.query"))?,
                k: pair(&mut b, get, &format!("{p}attention.self.key"))?,
                v: pair(&mut b, get, &format!("{p}attention.self.value"))?,
                o: pair(&mut b, get, &format!("{p}attention.output.dense"))?,
                ln1: pair(&mut b, get, &format!("{p}attention.output.LayerNorm"))?,
                f1: pair(&mut b, get, &format!("{p}intermediate.dense"))?,
                f2: pair(&mut b, get, &format!("{p}output.dense"))?,
                ln2: pair(&mut b, get, &format!("{p}output.LayerNorm"))?,
            };
            b.layers.push(ix);
        }
        if !embed && pool == Pool::Cls {
            b.pooler = Some(pair(&mut b, get, "pooler.dense")?);
        }
        if !embed {
            b.cls = Some(pair(&mut b, get, "classifier")?);
        }
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
    fn lin(&self, x: ArrayView2<f32>, p: Pair) -> Array2<f32> {
        linear(x, self.w2(p.0), self.w1(p.1))
    }

    fn forward(&self, x: ArrayView2<f32>, mask: &[f32]) -> Trace {
        let (rows, hidden) = x.dim();
        let mut cur = x.to_owned();
        let mut layers = Vec::with_capacity(self.layers.len());
        for ix in &self.layers {
            let q = self.lin(cur.view(), ix.q);
            let k = self.lin(cur.view(), ix.k);
            let v = self.lin(cur.view(), ix.v);
            let (p, c) = attn_fwd(&q, &k, &v, mask, self.heads);
            let mut r1 = self.lin(c.view(), ix.o);
            r1 += &cur;
            let (x1, xh1, inv1) = ln_fwd(&r1, self.w1(ix.ln1.0), self.w1(ix.ln1.1), self.eps);
            let f1 = self.lin(x1.view(), ix.f1);
            let ge = f1.mapv(gelu);
            let mut r2 = self.lin(ge.view(), ix.f2);
            r2 += &x1;
            let (y, xh2, inv2) = ln_fwd(&r2, self.w1(ix.ln2.0), self.w1(ix.ln2.1), self.eps);
            layers.push(LayerCache {
                x: std::mem::replace(&mut cur, y),
                q,
                k,
                v,
                p,
                c,
                xh1,
                inv1,
                x1,
                f1,
                ge,
                xh2,
                inv2,
            });
        }
        let pooled = match self.pool {
            Pool::Cls => cur.row(0).to_owned(),
            Pool::Mean => mean_pool(cur.view(), ArrayView1::from(mask)),
        };
        let feat = match self.pooler {
            Some(p) => {
                let mut d = self.w2(p.0).dot(&pooled);
                d += &self.w1(p.1);
                d.mapv(f32::tanh)
            }
            None => pooled.clone(),
        };
        let out = match self.cls {
            Some(p) => {
                let mut d = self.w2(p.0).dot(&feat);
                d += &self.w1(p.1);
                d
            }
            None => feat.clone(),
        };
        Trace {
            layers,
            rows,
            hidden,
            pooled,
            feat,
            out,
        }
    }

    /// The branch's output row for a trunk activation.
    pub fn output(&self, x: ArrayView2<f32>, mask: &[f32]) -> Array1<f32> {
        self.forward(x, mask).out
    }

    fn layer_back(
        &self,
        ix: &LayerIx,
        c: &LayerCache,
        dy: Array2<f32>,
        g: &mut [ArrayD<f32>],
        need_dx: bool,
    ) -> Option<Array2<f32>> {
        let dr2 = ln_back(&dy, &c.xh2, &c.inv2, self.w1(ix.ln2.0), g, ix.ln2);
        let mut dge = linear_back(&dr2, c.ge.view(), self.w2(ix.f2.0), g, ix.f2, true)?;
        Zip::from(&mut dge)
            .and(&c.f1)
            .for_each(|d, &x| *d *= gelu_grad(x));
        let mut dx1 = linear_back(&dge, c.x1.view(), self.w2(ix.f1.0), g, ix.f1, true)?;
        dx1 += &dr2;
        let dr1 = ln_back(&dx1, &c.xh1, &c.inv1, self.w1(ix.ln1.0), g, ix.ln1);
        let dc = linear_back(&dr1, c.c.view(), self.w2(ix.o.0), g, ix.o, true)?;
        let (dq, dk, dv) = attn_back(&dc, &c.q, &c.k, &c.v, &c.p, self.heads);
        let xq = linear_back(&dq, c.x.view(), self.w2(ix.q.0), g, ix.q, need_dx);
        let xk = linear_back(&dk, c.x.view(), self.w2(ix.k.0), g, ix.k, need_dx);
        let xv = linear_back(&dv, c.x.view(), self.w2(ix.v.0), g, ix.v, need_dx);
        let (xq, xk, xv) = (xq?, xk?, xv?);
        let mut dx = dr1;
        dx += &xq;
        dx += &xk;
        dx += &xv;
        Some(dx)
    }

    /// Backward of the head: accumulates its gradients, returns the
    /// gradient of the last hidden states when layers are trained.
    fn head_back(
        &self,
        tr: &Trace,
        dout: Array1<f32>,
        mask: &[f32],
        g: &mut [ArrayD<f32>],
    ) -> Option<Array2<f32>> {
        let outer = |a: &Array1<f32>, b: &Array1<f32>| {
            a.view().insert_axis(Axis(1)).to_owned() * b.view().insert_axis(Axis(0))
        };
        let dfeat = match self.cls {
            Some(p) => {
                m2(&mut g[p.0]).scaled_add(1.0, &outer(&dout, &tr.feat));
                m1(&mut g[p.1]).scaled_add(1.0, &dout);
                self.w2(p.0).t().dot(&dout)
            }
            None => dout,
        };
        let dpooled = match self.pooler {
            Some(p) => {
                let dd = Zip::from(&dfeat)
                    .and(&tr.feat)
                    .map_collect(|d, &f| d * (1.0 - f * f));
                m2(&mut g[p.0]).scaled_add(1.0, &outer(&dd, &tr.pooled));
                m1(&mut g[p.1]).scaled_add(1.0, &dd);
                self.w2(p.0).t().dot(&dd)
            }
            None => dfeat,
        };
        if self.layers.is_empty() {
            return None;
        }
        let mut dx = Array2::<f32>::zeros((tr.rows, tr.hidden));
        match self.pool {
            Pool::Cls => dx.row_mut(0).assign(&dpooled),
            Pool::Mean => {
                let count = mask
                    .iter()
                    .filter(|m| **m != 0.0)
                    .fold(0.0f32, |a, &m| a + m)
                    .max(1e-9);
                for (mut row, &mk) in dx.rows_mut().into_iter().zip(mask) {
                    if mk != 0.0 {
                        row.scaled_add(mk / count, &dpooled);
                    }
                }
            }
        }
        Some(dx)
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
        let (loss, dout) = loss_grad(&tr.out, it.target, it.label, self.embed, o);
        let mut d = self.head_back(&tr, dout, it.mask, g);
        for (i, (ix, c)) in self.layers.iter().zip(&tr.layers).enumerate().rev() {
            match d.take() {
                Some(dy) => d = self.layer_back(ix, c, dy, g, i > 0),
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

    /// Trains on `items` with AdamW (see the module docs); `tick` is called
    /// after every step.
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
        let mut log = TrainLog::default();
        let mut step = 0usize;
        for epoch in 0..opts.epochs as usize {
            let mut order: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                let j = rng.below(0, i as u64 + 1) as usize;
                order.swap(i, j);
            }
            let mut epoch_loss = 0.0;
            for batch in order.chunks(bs) {
                let refs: Vec<&Item> = batch.iter().map(|&i| &items[i]).collect();
                let loss = self.loss_and_grad_into(&refs, o, &mut bufs);
                let g = &mut bufs[0];
                epoch_loss += loss;
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
            let mean = epoch_loss / n as f64;
            if epoch == 0 {
                log.first_loss = mean;
            }
            log.last_loss = mean;
        }
        log.steps = step;
        log
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let mut rng = Rng::new(5);
            let mut store: HashMap<String, Arc<ArrayD<f32>>> = HashMap::new();
            for ts in crate::weights::layout(&model, &head) {
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
            let b = Branch::new(&model, &head, &get, 1).unwrap();
            assert_eq!(b.layers.len(), 2);
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
