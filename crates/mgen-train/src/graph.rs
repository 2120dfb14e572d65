//! The block description ([`mgen_ir::bert`]) as a candle graph over a batch.
//!
//! [`run_block`] walks a [`Block`]'s steps in order and maps each step's
//! [`Op`] to candle operations on a whole batch: values carry a leading
//! request axis (`[B, seq, hidden]` inside an encoder layer, `[B, heads,
//! seq, seq]` for attention scores, `[B, width]` after pooling), the mask is
//! `[B, seq]`. Each op computes what the reference executor's kernel
//! (`mgen_model::reference`) computes per request:
//! - `linear` is `x · Wᵀ + b` on the last axis; `layernorm` normalises the
//!   last axis with the biased variance, `(x − μ) · 1/√(σ² + ε) · γ + β`;
//! - `qk`/`av` split the hidden axis into `heads` contiguous slices;
//! - `mask` adds `(1 − m) · −10000` over the key (last) axis;
//! - `softmax` subtracts the row maximum (detached: softmax is invariant to
//!   the shift, so its gradient is exact without it) before `exp`;
//! - `gelu` is the reference's own function (a custom op, [`GELU`]: the
//!   reference's fast erf forward, its `gelu_grad` backward, so both
//!   trainers and the executor compute one GELU); `pool` the CLS row or the
//!   masked mean with the count floored at 1e-9.
//!
//! Every op used here has a candle backward (basic ops, and the one custom
//! op), so the graph trains end to end. Ops that cannot train (the
//! embeddings, which read the ids) are refused with an error.
//!
//! A [`Part`] is the set of trained stages of one copy of weights: the
//! shared trunk or one task's branch. It holds one candle [`Var`] per tensor
//! of its stages, in the description's stage, step and param order, and
//! checks each initial tensor's shape against the description.

use candle_core::{D, Device, Tensor, Var};
use mgen_front::spec::{Head, Model, Pool};
use mgen_ir::Op;
use mgen_ir::bert::{self, Block, Operand};
use mgen_model::forward::Get;
use ndarray::{ArrayD, IxDyn};
use std::collections::HashMap;

/// Errors are sentences.
pub(crate) type R<T> = Result<T, String>;

/// candle's errors as sentences.
pub(crate) fn cerr(e: candle_core::Error) -> String {
    format!("candle: {e}")
}

/// The device everything runs on.
pub(crate) const CPU: Device = Device::Cpu;

/// An f32 ndarray as a candle tensor of the same shape.
pub(crate) fn tensor(a: &ArrayD<f32>) -> R<Tensor> {
    let v: Vec<f32> = a.iter().copied().collect();
    Tensor::from_vec(v, a.shape(), &CPU).map_err(cerr)
}

/// A candle tensor as an f32 ndarray of the same shape.
pub(crate) fn array(t: &Tensor) -> R<ArrayD<f32>> {
    let v = t.flatten_all().and_then(|f| f.to_vec1::<f32>());
    ArrayD::from_shape_vec(IxDyn(t.dims()), v.map_err(cerr)?).map_err(|e| e.to_string())
}

/// Maps every element of a contiguous f32 tensor with `f` (what both GELU
/// ops do; candle's graph is f32 throughout), on rayon's threads (an
/// elementwise map: the bits do not depend on the split).
fn map_f32(
    storage: &candle_core::CpuStorage,
    layout: &candle_core::Layout,
    f: fn(f32) -> f32,
) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
    let candle_core::CpuStorage::F32(v) = storage else {
        return Err(candle_core::Error::Msg("gelu: not f32".into()));
    };
    let Some((a, b)) = layout.contiguous_offsets() else {
        return Err(candle_core::Error::Msg("gelu: not contiguous".into()));
    };
    use rayon::prelude::*;
    let out: Vec<f32> = v[a..b].par_iter().map(|&x| f(x)).collect();
    Ok((candle_core::CpuStorage::F32(out), layout.shape().clone()))
}

/// An elementwise f32 function as a candle op: `f` forward and, when `df`
/// is given, `grad · df(x)` backward (`df` itself is applied without a
/// backward: nothing here differentiates twice).
struct Elementwise {
    name: &'static str,
    f: fn(f32) -> f32,
    df: Option<fn(f32) -> f32>,
}

/// GELU as the reference executor computes it ([`reference::gelu`]), with
/// [`reference::gelu_grad`] as its backward.
///
/// [`reference::gelu`]: mgen_model::reference::gelu
/// [`reference::gelu_grad`]: mgen_model::reference::gelu_grad
const GELU: Elementwise = Elementwise {
    name: "mgen-gelu",
    f: mgen_model::reference::gelu,
    df: Some(mgen_model::reference::gelu_grad),
};

impl candle_core::CustomOp1 for Elementwise {
    fn name(&self) -> &'static str {
        self.name
    }
    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        map_f32(s, l, self.f)
    }
    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let Some(df) = self.df else {
            return Err(candle_core::Error::BackwardNotSupported { op: self.name });
        };
        let d = Elementwise {
            name: "mgen-derivative",
            f: df,
            df: None,
        };
        let d = arg.contiguous()?.apply_op1_no_bwd(&d)?;
        Ok(Some(grad.mul(&d)?))
    }
}

/// `x · Wᵀ + b` on the last axis of `x` (any rank ≥ 1 after the batch).
fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let mut dims = x.dims().to_vec();
    let inp = *dims.last().unwrap_or(&1);
    let rows = x.elem_count() / inp.max(1);
    let y = x.reshape((rows, inp))?.matmul(&w.t()?)?.broadcast_add(b)?;
    if let Some(last) = dims.last_mut() {
        *last = w.dim(0)?;
    }
    y.reshape(dims)
}

/// LayerNorm over the last axis (biased variance, as the reference).
fn layernorm(x: &Tensor, g: &Tensor, b: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let c = x.broadcast_sub(&mean)?;
    let var = c.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = var.affine(1.0, eps as f32 as f64)?.sqrt()?.recip()?;
    c.broadcast_mul(&inv)?.broadcast_mul(g)?.broadcast_add(b)
}

/// `[B, seq, hidden]` → `[B, heads, seq, hidden / heads]`.
fn split_heads(x: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (b, s, h) = x.dims3()?;
    x.reshape((b, s, heads, h / heads.max(1)))?
        .transpose(1, 2)?
        .contiguous()
}

/// Per-head `Q·Kᵀ`: `[B, seq, hidden]²` → `[B, heads, seq, seq]`.
fn qk(q: &Tensor, k: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    split_heads(q, heads)?.matmul(&split_heads(k, heads)?.t()?)
}

/// Per-head `P·V`: `[B, heads, seq, seq] × [B, seq, hidden]` → `[B, seq, hidden]`.
fn av(p: &Tensor, v: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (b, s, h) = v.dims3()?;
    p.matmul(&split_heads(v, heads)?)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, s, h))
}

/// Adds `(1 − m) · −10000` to scores `[B, heads, seq, seq]` over the key axis.
fn mask(scores: &Tensor, m: &Tensor) -> candle_core::Result<Tensor> {
    let (b, s) = m.dims2()?;
    let value = -mgen_model::reference::MASK_VALUE as f64;
    let bias = m.affine(value, -value)?.reshape((b, 1, 1, s))?;
    scores.broadcast_add(&bias)
}

/// Softmax over the last axis, shifted by the (detached) row maximum.
pub(crate) fn softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// `log softmax` over the last axis.
pub(crate) fn log_softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let z = x.broadcast_sub(&max)?;
    let lse = z.exp()?.sum_keepdim(D::Minus1)?.log()?;
    z.broadcast_sub(&lse)
}

/// Pooling `[B, seq, hidden]` with mask `[B, seq]` → `[B, hidden]`.
fn pool(p: Pool, x: &Tensor, m: &Tensor) -> candle_core::Result<Tensor> {
    match p {
        Pool::Cls => x.narrow(1, 0, 1)?.squeeze(1),
        Pool::Mean => {
            let sum = x.broadcast_mul(&m.unsqueeze(2)?)?.sum(1)?;
            let count = m.sum_keepdim(1)?.maximum(1e-9)?;
            sum.broadcast_div(&count)
        }
    }
}

/// Whether candle can train through `op` here.
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

/// One step's op on batched operands `a` with tensors `p`.
fn step(op: &Op, a: &[&Tensor], p: &[Tensor]) -> candle_core::Result<Tensor> {
    match op {
        Op::Linear => linear(a[0], &p[0], &p[1]),
        Op::LayerNorm { eps } => layernorm(a[0], &p[0], &p[1], *eps),
        Op::Qk { heads } => qk(a[0], a[1], *heads as usize),
        Op::Scale { factor } => a[0].affine(*factor as f32 as f64, 0.0),
        Op::Mask => mask(a[0], a[1]),
        Op::Softmax => softmax(a[0]),
        Op::Av { heads } => av(a[0], a[1], *heads as usize),
        Op::Add => a[0] + a[1],
        Op::Gelu => a[0].contiguous()?.apply_op1(GELU),
        Op::Tanh => a[0].tanh(),
        Op::Pool(p) => pool(*p, a[0], a[1]),
        other => Err(candle_core::Error::Msg(format!(
            "cannot train through `{}`",
            other.name()
        ))),
    }
}

/// Runs `block` on the batched input `x` with mask `m` (`[B, seq]`);
/// `get` finds a tensor by its Hugging Face name. Returns the block's
/// result ([`Block::output`]).
pub(crate) fn run_block(
    block: &Block,
    get: &dyn Fn(&str) -> R<Tensor>,
    x: &Tensor,
    m: &Tensor,
) -> R<Tensor> {
    let mut vals: Vec<Tensor> = Vec::with_capacity(block.steps.len());
    for s in &block.steps {
        let args: Vec<&Tensor> = s
            .operands
            .iter()
            .map(|o| match *o {
                Operand::Input => Ok(x),
                Operand::Mask => Ok(m),
                Operand::Step(i) => vals.get(i).ok_or("a step reads a later step"),
                Operand::Ids => Err("cannot train through a step that reads the ids"),
            })
            .collect::<Result<_, _>>()?;
        let params: Vec<Tensor> = s.params.iter().map(|t| get(&t.name)).collect::<R<_>>()?;
        let v = step(&s.op, &args, &params).map_err(|e| format!("step `{}`: {e}", s.name))?;
        vals.push(v);
    }
    Ok(match block.output() {
        Operand::Step(i) => vals.swap_remove(i),
        _ => x.clone(),
    })
}

/// The trunk's stages at depth `d`: encoder layers `0..d − 1` (blocks `1..d`).
pub(crate) fn trunk_blocks(m: &Model, d: usize) -> Vec<Block> {
    (1..d).map(|b| bert::block(m, b)).collect()
}

/// A branch's stages at depth `d`: encoder layers `d − 1..` (blocks
/// `d..nb`), the pooling and the head.
pub(crate) fn branch_blocks(m: &Model, head: &Head, d: usize) -> Vec<Block> {
    let mut v: Vec<Block> = (d..bert::blocks(m)).map(|b| bert::block(m, b)).collect();
    v.push(bert::pool(head, m.hidden));
    v.push(bert::head(head, m.hidden));
    v
}

/// The trained stages of one copy of weights and a variable per tensor.
pub(crate) struct Part {
    pub blocks: Vec<Block>,
    pub names: Vec<String>,
    pub vars: Vec<Var>,
    index: HashMap<String, usize>,
}

impl Part {
    /// Loads the tensors of `blocks` from `get`, checking each one's shape
    /// against the description; `what` names the part in errors.
    pub fn new(blocks: Vec<Block>, get: &Get, what: &str) -> R<Part> {
        let mut p = Part {
            blocks: Vec::new(),
            names: Vec::new(),
            vars: Vec::new(),
            index: HashMap::new(),
        };
        for s in blocks.iter().flat_map(|b| b.steps.iter()) {
            if !trainable(&s.op) || s.operands.contains(&Operand::Ids) {
                return Err(format!("{what}: cannot train through `{}`", s.op.name()));
            }
            for t in &s.params {
                let a = get(&t.name).map_err(|e| format!("{what}: tensor `{}`: {e}", t.name))?;
                let want: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
                if a.shape() != want.as_slice() {
                    return Err(format!(
                        "{what}: tensor `{}` has shape {:?}, the model needs {want:?}",
                        t.name,
                        a.shape()
                    ));
                }
                let v = Var::from_tensor(&tensor(&a)?).map_err(cerr)?;
                p.index.insert(t.name.clone(), p.vars.len());
                p.names.push(t.name.clone());
                p.vars.push(v);
            }
        }
        p.blocks = blocks;
        Ok(p)
    }

    /// Runs every stage on `x` (mask `m`). With `track`, the result's graph
    /// reaches the variables (for a backward pass); without, it reads
    /// detached copies (evaluation only).
    pub fn run(&self, x: &Tensor, m: &Tensor, track: bool) -> R<Tensor> {
        let get = |name: &str| -> R<Tensor> {
            let v = self
                .index
                .get(name)
                .map(|&i| self.vars[i].as_tensor())
                .ok_or_else(|| format!("tensor `{name}` is not trained here"))?;
            Ok(if track { v.clone() } else { v.detach() })
        };
        let mut cur = x.clone();
        for b in &self.blocks {
            cur = run_block(b, &get, &cur, m)?;
        }
        Ok(cur)
    }

    /// The current tensors by Hugging Face name.
    pub fn export(&self) -> R<HashMap<String, ArrayD<f32>>> {
        self.names
            .iter()
            .zip(&self.vars)
            .map(|(n, v)| Ok((n.clone(), array(v.as_tensor())?)))
            .collect()
    }
}
