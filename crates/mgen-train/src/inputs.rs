//! A batch's inputs as candle tensors, and the checks on them.
//!
//! Invariant: an [`Inputs`] holds `n` requests of one `seq` and the
//! model's hidden width: block 0's outputs `[n, seq, hidden]` and the masks
//! `[n, seq]`, in request order; a batch that does not fit is an error
//! naming the request.
//!
//! A selection of rows ([`Inputs::rows`]) drops the trailing token
//! positions that are padding in every selected request: the mask sends
//! them no attention (their scores are `−10000` below the row's, `exp`
//! of which is 0 in f32), mean pooling weighs them 0 and CLS pooling reads
//! position 0, so what the kept positions compute is unchanged — only the
//! order of float sums over fewer terms — and a mini-batch of short
//! sentences costs what they need, not the workload's `seq`.

use crate::Batch;
use crate::graph::{CPU, R, cerr};
use candle_core::Tensor;
use mgen_front::spec::Model;
use mgen_ir::bert;

/// Requests per forward pass when evaluating ([`crate::forward`] and the
/// loss before and after training).
pub const EVAL_CHUNK: usize = 64;

/// One batch's inputs as tensors.
pub(crate) struct Inputs {
    /// Block 0's outputs, `[n, seq, hidden]`.
    pub x: Tensor,
    /// The masks, `[n, seq]`.
    pub mask: Tensor,
    pub n: usize,
    /// Per request, one past its last unmasked position (0 if none).
    len: Vec<usize>,
}

impl Inputs {
    /// Checks that every request is `[seq, hidden]` with a mask of `seq`.
    pub fn new(b: &Batch, hidden: usize, what: &str) -> R<Inputs> {
        let n = b.x.len();
        if b.masks.len() != n {
            return Err(format!("{what}: {n} requests, {} masks", b.masks.len()));
        }
        let seq = b.x.first().map_or(0, |x| x.nrows());
        let mut xs: Vec<f32> = Vec::with_capacity(n * seq * hidden);
        let mut ms = Vec::with_capacity(n * seq);
        let mut len = Vec::with_capacity(n);
        for (i, (x, m)) in b.x.iter().zip(&b.masks).enumerate() {
            if x.dim() != (seq, hidden) || m.len() != seq {
                return Err(format!(
                    "{what}: request {i} is {:?} with a mask of {}, the batch needs [{seq}, {hidden}] and {seq}",
                    x.dim(),
                    m.len()
                ));
            }
            xs.extend(x.iter());
            ms.extend_from_slice(m);
            len.push(m.iter().rposition(|&v| v != 0.0).map_or(0, |p| p + 1));
        }
        Ok(Inputs {
            x: Tensor::from_vec(xs, (n, seq, hidden), &CPU).map_err(cerr)?,
            mask: Tensor::from_vec(ms, (n, seq), &CPU).map_err(cerr)?,
            n,
            len,
        })
    }

    /// The rows `ix` (`idx`: the same as a `u32` index tensor): `(x,
    /// mask)`, cut after the last position any of them does not mask
    /// (see the module docs; at least one position).
    pub fn rows(&self, ix: &[usize], idx: &Tensor) -> R<(Tensor, Tensor)> {
        let keep = ix
            .iter()
            .map(|&i| self.len.get(i).copied().unwrap_or(0))
            .max();
        let keep = keep.unwrap_or(0).max(1);
        let cut = |t: Tensor| -> R<Tensor> {
            match t.dim(1).map_err(cerr)? > keep {
                true => t
                    .narrow(1, 0, keep)
                    .and_then(|t| t.contiguous())
                    .map_err(cerr),
                false => Ok(t),
            }
        };
        let x = cut(self.x.index_select(idx, 0).map_err(cerr)?)?;
        Ok((x, cut(self.mask.index_select(idx, 0).map_err(cerr)?)?))
    }
}

/// A `u32` index tensor.
pub(crate) fn index(ix: &[usize]) -> R<Tensor> {
    let v: Vec<u32> = ix.iter().map(|&i| i as u32).collect();
    Tensor::from_vec(v, ix.len(), &CPU).map_err(cerr)
}

/// Checks the depth against the model's block count.
pub(crate) fn check_depth(m: &Model, depth: usize) -> R<()> {
    let nb = bert::blocks(m);
    if depth == 0 || depth > nb {
        return Err(format!(
            "a joint model shares 1 to {nb} blocks (embeddings and {} encoder layers), not {depth}",
            m.layers
        ));
    }
    Ok(())
}
