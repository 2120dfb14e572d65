//! A batch's inputs as candle tensors, and the checks on them.
//!
//! Invariant: an [`Inputs`] holds `n` requests of one `seq` and the
//! model's hidden width: block 0's outputs `[n, seq, hidden]` and the masks
//! `[n, seq]`, in request order; a batch that does not fit is an error
//! naming the request.

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
        }
        Ok(Inputs {
            x: Tensor::from_vec(xs, (n, seq, hidden), &CPU).map_err(cerr)?,
            mask: Tensor::from_vec(ms, (n, seq), &CPU).map_err(cerr)?,
            n,
        })
    }

    /// The rows `idx` (a `u32` index tensor): `(x, mask)`.
    pub fn rows(&self, idx: &Tensor) -> R<(Tensor, Tensor)> {
        let x = self.x.index_select(idx, 0).map_err(cerr)?;
        Ok((x, self.mask.index_select(idx, 0).map_err(cerr)?))
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
