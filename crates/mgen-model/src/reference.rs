//! The float32 reference executor: evaluates the IR with ndarray.
//!
//! It is the oracle for every pass and for the simulator: it implements
//! each op exactly as documented in `docs/ir.md` (Hugging Face BERT
//! semantics: erf GELU, LayerNorm over the last axis, −10000 added to the
//! attention scores of padded keys, masked mean pooling). Requests are
//! independent and evaluated in parallel; each request's arithmetic is
//! sequential, so outputs are bit-identical from run to run on a machine.
//! A node's value is freed as soon as its last user has read it.

use crate::data::Batch;
use crate::diag::{Diagnostic, Diags};
use crate::gemm::matmul_into;
use crate::ir::{InputKind, Module, NodeId, Op};
use crate::spec::Pool;
use crate::weights::Store;
use ndarray::{
    Array1, Array2, Array3, ArrayD, ArrayView1, ArrayView2, ArrayView3, Axis, Ix1, Ix2, Ix3,
    ShapeBuilder, Zip, s,
};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

/// One task's outputs: `[requests, width]` (logits, regression value or
/// embedding), in workload order.
#[derive(Debug, Clone)]
pub struct TaskOutput {
    pub name: String,
    pub values: Array2<f32>,
}

/// The value the attention mask adds to scores of padded keys.
pub const MASK_VALUE: f32 = -10000.0;

/// A compiled evaluation plan: canonical order, operands, last uses and
/// the materialised params.
pub struct Plan<'a> {
    m: &'a Module,
    order: Vec<NodeId>,
    pos: HashMap<NodeId, usize>,
    operands: Vec<Vec<usize>>,
    /// For each step, the value slots that die after it.
    frees: Vec<Vec<usize>>,
    params: Vec<Arc<ArrayD<f32>>>,
    outputs: Vec<(usize, usize)>,
}

fn eval_error(msg: String) -> Diags {
    Diagnostic::internal(msg)
        .note("or a weights file changed while mgen was reading it")
        .into()
}

impl<'a> Plan<'a> {
    /// Orders the graph and materialises every parameter it uses.
    pub fn new(m: &'a Module, store: &Store) -> Result<Plan<'a>, Diags> {
        let order = m
            .canonical_order()
            .ok_or_else(|| eval_error("the graph has a cycle".into()))?;
        let pos: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let operands: Vec<Vec<usize>> = order
            .iter()
            .map(|n| m.operands(*n).iter().map(|o| pos[o]).collect())
            .collect();
        let mut last = vec![usize::MAX; order.len()];
        for (i, ops) in operands.iter().enumerate() {
            for &o in ops {
                last[o] = i;
            }
        }
        let mut frees = vec![Vec::new(); order.len()];
        for (v, &l) in last.iter().enumerate() {
            if l != usize::MAX {
                frees[l].push(v);
            }
        }
        let mut params = Vec::with_capacity(m.params.len());
        for p in &m.params {
            let t = store
                .tensor(&p.digest)
                .map_err(|e| eval_error(format!("weights `{}` of `{}`: {e}", p.name, p.source)))?;
            let want: Vec<usize> = p.shape.iter().map(|&d| d as usize).collect();
            if t.shape() != want.as_slice() {
                return Err(eval_error(format!(
                    "weights `{}` have shape {:?}, the IR says {:?}",
                    p.name,
                    t.shape(),
                    want
                )));
            }
            params.push(t);
        }
        let mut outputs: Vec<(usize, usize)> = order
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match m.node(*n).op {
                Op::Output { task } => Some((task, i)),
                _ => None,
            })
            .collect();
        outputs.sort();
        Ok(Plan {
            m,
            order,
            pos,
            operands,
            frees,
            params,
            outputs,
        })
    }

    /// The step of a node in the plan.
    pub fn step_of(&self, id: NodeId) -> Option<usize> {
        self.pos.get(&id).copied()
    }

    /// Evaluates one request; returns each task's output row (workload order).
    pub fn run_one(&self, ids: &[u32], mask: &[f32]) -> Vec<Vec<f32>> {
        self.run_observed(ids, mask, &mut |_, _| {})
    }

    /// [`Plan::run_one`], showing every node's value to `observe`.
    pub fn run_observed(
        &self,
        ids: &[u32],
        mask: &[f32],
        observe: &mut dyn FnMut(NodeId, &ArrayD<f32>),
    ) -> Vec<Vec<f32>> {
        let mut vals: Vec<Option<ArrayD<f32>>> = vec![None; self.order.len()];
        let mut outs: Vec<Vec<f32>> = vec![Vec::new(); self.outputs.len()];
        for (i, id) in self.order.iter().enumerate() {
            let n = self.m.node(*id);
            let args: Vec<&ArrayD<f32>> = self.operands[i]
                .iter()
                .filter_map(|&o| vals[o].as_ref())
                .collect();
            let ps: Vec<&ArrayD<f32>> = n
                .params
                .iter()
                .map(|p| self.params[p.0 as usize].as_ref())
                .collect();
            let v = eval(&n.op, &args, &ps, ids, mask);
            observe(*id, &v);
            if let Op::Output { task } = n.op
                && let Some(slot) = outs.get_mut(task)
            {
                *slot = v.iter().copied().collect();
            }
            vals[i] = Some(v);
            for &f in &self.frees[i] {
                vals[f] = None;
            }
        }
        outs
    }

    /// Evaluates the whole batch.
    pub fn run(&self, batch: &Batch) -> Vec<TaskOutput> {
        self.run_ticking(batch, &|| {})
    }

    /// [`Plan::run`], calling `tick` after each request (for progress bars).
    pub fn run_ticking(&self, batch: &Batch, tick: &(dyn Fn() + Sync)) -> Vec<TaskOutput> {
        let rows: Vec<Vec<Vec<f32>>> = batch
            .requests
            .par_iter()
            .map(|r| {
                let o = self.run_one(&r.ids, &r.mask());
                tick();
                o
            })
            .collect();
        self.assemble(&rows)
    }

    /// Per-request rows (as [`Plan::run_one`] returns them) → per-task arrays.
    pub fn assemble(&self, rows: &[Vec<Vec<f32>>]) -> Vec<TaskOutput> {
        let names = self.m.task_names();
        (0..self.outputs.len())
            .map(|t| {
                let width = rows.first().map(|r| r[t].len()).unwrap_or(0);
                let mut values = Array2::<f32>::zeros((rows.len(), width));
                for (i, r) in rows.iter().enumerate() {
                    values.row_mut(i).assign(&ArrayView1::from(&r[t]));
                }
                TaskOutput {
                    name: names[t].to_string(),
                    values,
                }
            })
            .collect()
    }
}

/// Evaluates the module over a batch (see [`Plan`]).
pub fn run(m: &Module, store: &Store, batch: &Batch) -> Result<Vec<TaskOutput>, Diags> {
    Ok(Plan::new(m, store)?.run(batch))
}

fn v2(a: &ArrayD<f32>) -> ArrayView2<'_, f32> {
    a.view()
        .into_dimensionality::<Ix2>()
        .expect("verified shape")
}
fn v1(a: &ArrayD<f32>) -> ArrayView1<'_, f32> {
    a.view()
        .into_dimensionality::<Ix1>()
        .expect("verified shape")
}

/// `x · Wᵀ + b` for `x` of rank 1 or 2. The bias is the product's
/// starting value. A matrix `x` is multiplied feature-major (a transposed
/// copy of `x` times `Wᵀ` into a column-major result, copied back): the
/// orientation in which `gemm` reads `W` as stored, `[out, in]`, without
/// packing it, about twice as fast as multiplying `x` as it lies.
pub fn linear(x: &ArrayD<f32>, w: &ArrayD<f32>, b: &ArrayD<f32>) -> ArrayD<f32> {
    // Standard layout first, so the kernel (and so the bits) depend on the
    // values only, never on how the weights were laid out in memory.
    let w = v2(w);
    let w = w.as_standard_layout();
    let b = v1(b);
    if x.ndim() == 1 {
        let mut y = b.to_owned().insert_axis(Axis(0));
        matmul_into(v1(x).insert_axis(Axis(0)), w.t(), y.view_mut(), true);
        return y.index_axis_move(Axis(0), 0).into_dyn();
    }
    let x = v2(x);
    let x = x.as_standard_layout();
    let (rows, out) = (x.nrows(), w.nrows());
    let xt = transposed(&x.view());
    let mut yf = Array2::<f32>::zeros((rows, out).f());
    Zip::from(yf.columns_mut())
        .and(&b)
        .for_each(|mut c, &b| c.fill(b));
    matmul_into(xt.t(), w.t(), yf.view_mut(), true);
    // `yf` is column-major `[rows, out]`: its memory is `[out, rows]`.
    let mut y = vec![0.0f32; rows * out];
    if let Some(src) = yf.as_slice_memory_order() {
        transpose::transpose(src, &mut y, rows, out);
        return Array2::from_shape_vec((rows, out), y)
            .expect("rows · out values")
            .into_dyn();
    }
    yf.as_standard_layout().into_owned().into_dyn()
}

/// The transpose of a standard-layout matrix, in standard layout, by a
/// cache-blocked copy (the `transpose` crate; ndarray's element iterator
/// over a transposed view was a tenth of a BERT request).
fn transposed(x: &ArrayView2<f32>) -> Array2<f32> {
    let (rows, cols) = x.dim();
    match x.as_slice() {
        Some(src) => {
            let mut t = vec![0.0f32; rows * cols];
            transpose::transpose(src, &mut t, cols, rows);
            Array2::from_shape_vec((cols, rows), t).expect("rows · cols values")
        }
        None => x.t().as_standard_layout().into_owned(),
    }
}

/// LayerNorm over the last axis.
pub fn layernorm(x: &ArrayD<f32>, g: &ArrayD<f32>, b: &ArrayD<f32>, eps: f32) -> ArrayD<f32> {
    let (g, b) = (v1(g), v1(b));
    let mut y = x.clone();
    let last = Axis(y.ndim() - 1);
    for mut row in y.lanes_mut(last) {
        let n = row.len() as f32;
        let mean = row.sum() / n;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let inv = 1.0 / (var + eps).sqrt();
        Zip::from(&mut row)
            .and(&g)
            .and(&b)
            .for_each(|v, &g, &b| *v = (*v - mean) * inv * g + b);
    }
    y
}

/// Softmax over the last axis.
pub fn softmax(x: &ArrayD<f32>) -> ArrayD<f32> {
    let mut y = x.clone();
    let last = Axis(y.ndim() - 1);
    for mut row in y.lanes_mut(last) {
        let max = row.fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut sum = 0.0;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        let inv = 1.0 / sum;
        row.mapv_inplace(|v| v * inv);
    }
    y
}

/// The erf form of GELU, `x/2 · (1 + erf(x/√2))`, with [`erf`].
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// d GELU / dx of the erf form, `Φ(x) + x·φ(x)`, with libm's exact erf
/// (the exact derivative of the function [`gelu`] approximates). The
/// one derivative both trainers use: the hand-written backward passes and
/// candle's graph (`mgen-train`), so they train the same function.
pub fn gelu_grad(x: f32) -> f32 {
    let cdf = 0.5 * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2));
    let pdf = (-0.5 * x * x).exp() * 0.398_942_3;
    cdf + x * pdf
}

/// GELU of every element, in place, split among rayon's threads (an
/// elementwise map: the bits do not depend on the split).
pub fn gelu_all(mut x: ArrayD<f32>) -> ArrayD<f32> {
    x.par_mapv_inplace(gelu);
    x
}

/// `erf(x)` in f32 by the rational approximation Eigen and TensorFlow use
/// (odd degree-13 numerator, even degree-8 denominator, `x` clamped to
/// ±4 where erf is 1 to f32 precision). Branch-free, so a loop over it
/// vectorises, unlike `libm::erff`, which made GELU a fifth of a BERT
/// request. Within 5e-7 of the exact erf everywhere (tested against
/// `libm::erff`; f32's own spacing near 1 is 6e-8).
pub fn erf(x: f32) -> f32 {
    const A: [f32; 7] = [
        -2.726_142_3e-10,
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_6e-3,
        -1.609_603_3e-2,
    ];
    const B: [f32; 5] = [
        -1.456_607_2e-5,
        -2.133_740_6e-4,
        -1.682_827e-3,
        -7.373_329_2e-3,
        -1.426_473_9e-2,
    ];
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = A[0];
    for a in &A[1..] {
        p = x2 * p + a;
    }
    let mut q = B[0];
    for b in &B[1..] {
        q = x2 * q + b;
    }
    x * p / q
}

// The digital-unit operations. The simulator's digital units call these
// same functions (after checking their operands' shapes), so both
// executors agree on every non-MVM op bit for bit.

/// Word + position + token-type(0) embeddings of `ids` (ids past the table
/// are clamped to its last row; the simulator rejects them first).
pub fn embed(
    ids: ArrayView1<f32>,
    w: ArrayView2<f32>,
    pos: ArrayView2<f32>,
    typ: ArrayView2<f32>,
) -> Array2<f32> {
    let mut y = Array2::<f32>::zeros((ids.len(), w.ncols()));
    for (s, (mut row, &id)) in y.rows_mut().into_iter().zip(ids.iter()).enumerate() {
        let id = (id as usize).min(w.nrows() - 1);
        Zip::from(&mut row)
            .and(w.row(id))
            .and(pos.row(s))
            .and(typ.row(0))
            .for_each(|o, &a, &b, &c| *o = a + b + c);
    }
    y
}

/// Per-head `Q·Kᵀ`: `[s, h] x [s, h] → [heads, s, s]`.
pub fn qk(q: ArrayView2<f32>, k: ArrayView2<f32>, heads: usize) -> Array3<f32> {
    let (s, h) = q.dim();
    let dh = h / heads;
    let mut y = Array3::<f32>::zeros((heads, s, k.nrows()));
    for hd in 0..heads {
        let qh = q.slice(s![.., hd * dh..(hd + 1) * dh]);
        let kh = k.slice(s![.., hd * dh..(hd + 1) * dh]);
        matmul_into(qh, kh.t(), y.index_axis_mut(Axis(0), hd), false);
    }
    y
}

/// Per-head `P·V`: `[heads, s, s] x [s, h] → [s, h]`.
pub fn av(p: ArrayView3<f32>, v: ArrayView2<f32>, heads: usize) -> Array2<f32> {
    let (s, h) = v.dim();
    let dh = h / heads;
    let mut y = Array2::<f32>::zeros((s, h));
    for hd in 0..heads {
        let vh = v.slice(s![.., hd * dh..(hd + 1) * dh]);
        let o = y.slice_mut(s![.., hd * dh..(hd + 1) * dh]);
        matmul_into(p.index_axis(Axis(0), hd), vh, o, false);
    }
    y
}

/// Adds [`MASK_VALUE`] to the scores of padded keys (the last axis).
pub fn mask_scores(mut x: ArrayD<f32>, m: ArrayView1<f32>) -> ArrayD<f32> {
    let last = Axis(x.ndim() - 1);
    for mut row in x.lanes_mut(last) {
        Zip::from(&mut row)
            .and(&m)
            .for_each(|v, &mk| *v += (1.0 - mk) * MASK_VALUE);
    }
    x
}

/// The masked mean over positions: `[s, h]` with mask `[s]` → `[h]`.
pub fn mean_pool(x: ArrayView2<f32>, m: ArrayView1<f32>) -> Array1<f32> {
    let mut acc = Array1::<f32>::zeros(x.ncols());
    let mut count = 0.0f32;
    for (row, &mk) in x.rows().into_iter().zip(m.iter()) {
        if mk != 0.0 {
            acc.scaled_add(mk, &row);
            count += mk;
        }
    }
    acc.mapv_inplace(|v| v / count.max(1e-9));
    acc
}

pub(crate) fn eval(
    op: &Op,
    a: &[&ArrayD<f32>],
    p: &[&ArrayD<f32>],
    ids: &[u32],
    mask: &[f32],
) -> ArrayD<f32> {
    match op {
        Op::Input(InputKind::Ids) => Array1::from_iter(ids.iter().map(|&i| i as f32)).into_dyn(),
        Op::Input(InputKind::Mask) => Array1::from(mask.to_vec()).into_dyn(),
        Op::Embed => embed(v1(a[0]), v2(p[0]), v2(p[1]), v2(p[2])).into_dyn(),
        Op::LayerNorm { eps } => layernorm(a[0], p[0], p[1], *eps as f32),
        Op::Linear => linear(a[0], p[0], p[1]),
        Op::Qk { heads } => qk(v2(a[0]), v2(a[1]), *heads as usize).into_dyn(),
        Op::Scale { factor } => {
            let f = *factor as f32;
            a[0].mapv(|v| v * f)
        }
        Op::Mask => mask_scores(a[0].clone(), v1(a[1])),
        Op::Softmax => softmax(a[0]),
        Op::Av { heads } => av(
            a[0].view()
                .into_dimensionality::<Ix3>()
                .expect("verified shape"),
            v2(a[1]),
            *heads as usize,
        )
        .into_dyn(),
        Op::Add => a[0] + a[1],
        Op::Gelu => gelu_all(a[0].clone()),
        Op::Tanh => a[0].mapv(f32::tanh),
        Op::Pool(Pool::Cls) => v2(a[0]).row(0).to_owned().into_dyn(),
        Op::Pool(Pool::Mean) => mean_pool(v2(a[0]), v1(a[1])).into_dyn(),
        Op::Output { .. } => a[0].clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_is_within_5e_7_of_libm() {
        let mut worst = 0.0f64;
        for i in -600_000..=600_000 {
            let x = i as f32 * 1e-5;
            let d = (erf(x) as f64 - libm::erff(x) as f64).abs();
            worst = worst.max(d);
        }
        assert!(worst < 5e-7, "erf is {worst} away from libm");
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(-1.5), -erf(1.5));
        assert!(erf(f32::INFINITY) > 0.999_999 && erf(f32::NEG_INFINITY) < -0.999_999);
    }

    #[test]
    fn gelu_all_equals_gelu_elementwise() {
        let x = ArrayD::from_shape_fn(vec![7, 300], |d| (d[0] * 300 + d[1]) as f32 * 0.01 - 10.0);
        let y = gelu_all(x.clone());
        assert!(
            x.iter()
                .zip(y.iter())
                .all(|(a, b)| gelu(*a).to_bits() == b.to_bits())
        );
    }
}
