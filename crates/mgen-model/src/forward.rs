//! Block-by-block evaluation of one task model, outside the IR.
//!
//! The model generator (`mgen::passes::share`) evaluates thousands of
//! candidate models that differ only in which weights some blocks use, and
//! the weight store centres synthesised heads on probe inputs. Both need a
//! BERT forward pass that can start from a cached activation at any block
//! boundary. This module provides it.
//!
//! Every stage is evaluated by walking its steps in the block description
//! ([`crate::ir::bert`]), the one the lowering emits nodes from, with the
//! reference executor's own op evaluator ([`crate::reference`]) on each
//! step's op, operands and tensors. So a model evaluated here gives
//! **bit-identical** results to the same model lowered and run by
//! [`crate::reference::Plan`] by construction: both evaluate the same ops
//! on the same values in the same order (tested block by block in
//! `crates/mgen-model/tests/bert.rs`).
//!
//! Blocks are numbered as the generator counts depth: block 0 is the
//! embeddings (with their LayerNorm), block `l + 1` is encoder layer `l`;
//! the head (pooling, pooler, classifier) is not a block.

use crate::ir::bert::{self, Block, Operand};
use crate::ir::{InputKind, Op};
use crate::reference::eval;
use crate::spec::{Head, Model};
use ndarray::ArrayD;
use std::sync::Arc;

/// Looks a tensor up by its Hugging Face name.
pub type Get<'a> = dyn Fn(&str) -> Result<Arc<ArrayD<f32>>, String> + 'a;

/// One request's inputs.
pub struct Req<'a> {
    pub ids: &'a [u32],
    pub mask: &'a [f32],
}

impl Req<'_> {
    fn input(&self, k: InputKind) -> ArrayD<f32> {
        eval(&Op::Input(k), &[], &[], self.ids, self.mask)
    }
    fn op(&self, op: &Op, a: &[&ArrayD<f32>], p: &[&ArrayD<f32>]) -> ArrayD<f32> {
        eval(op, a, p, self.ids, self.mask)
    }
}

/// The number of blocks of a model (embeddings + layers).
pub fn blocks(m: &Model) -> usize {
    bert::blocks(m)
}

/// Evaluates `block`'s steps in order with the reference executor's op
/// evaluator: `params[i]` are step `i`'s tensors in the step's order, `x`
/// the stage's input (`None` for the embeddings, which read the ids).
/// Returns every step's value, in step order.
pub fn steps(
    block: &Block,
    params: &[Vec<&ArrayD<f32>>],
    x: Option<&ArrayD<f32>>,
    r: &Req,
) -> Result<Vec<ArrayD<f32>>, String> {
    if params.len() != block.steps.len() {
        return Err(format!(
            "{} steps, tensors for {}",
            block.steps.len(),
            params.len()
        ));
    }
    let uses = |k: Operand| block.steps.iter().any(|s| s.operands.contains(&k));
    let ids = uses(Operand::Ids).then(|| r.input(InputKind::Ids));
    let mask = uses(Operand::Mask).then(|| r.input(InputKind::Mask));
    let mut vals: Vec<ArrayD<f32>> = Vec::with_capacity(block.steps.len());
    for (step, p) in block.steps.iter().zip(params) {
        if p.len() != step.params.len() {
            return Err(format!(
                "step `{}` takes {} tensors",
                step.name,
                step.params.len()
            ));
        }
        let args: Option<Vec<&ArrayD<f32>>> = step
            .operands
            .iter()
            .map(|o| match *o {
                Operand::Ids => ids.as_ref(),
                Operand::Mask => mask.as_ref(),
                Operand::Input => x,
                Operand::Step(i) => vals.get(i),
            })
            .collect();
        let v = r.op(&step.op, &args.ok_or("block input missing")?, p);
        vals.push(v);
    }
    Ok(vals)
}

/// Runs `block` on `x` with the tensors `get` finds by name; returns its
/// result.
pub fn run(
    block: &Block,
    get: &Get,
    x: Option<&ArrayD<f32>>,
    r: &Req,
) -> Result<ArrayD<f32>, String> {
    let held: Vec<Vec<Arc<ArrayD<f32>>>> = block
        .steps
        .iter()
        .map(|s| s.params.iter().map(|t| get(&t.name)).collect())
        .collect::<Result<_, _>>()?;
    let params: Vec<Vec<&ArrayD<f32>>> = held
        .iter()
        .map(|p| p.iter().map(|t| t.as_ref()).collect())
        .collect();
    let mut vals = steps(block, &params, x, r)?;
    match block.output() {
        Operand::Step(i) => Ok(vals.swap_remove(i)),
        _ => x.cloned().ok_or_else(|| "block input missing".to_string()),
    }
}

/// Runs block `b` on `x` (ignored for block 0, which reads the ids).
pub fn block(
    m: &Model,
    b: usize,
    get: &Get,
    x: Option<&ArrayD<f32>>,
    r: &Req,
) -> Result<ArrayD<f32>, String> {
    run(&bert::block(m, b), get, x, r)
}

/// The hidden width of last hidden states `x` (`[seq, hidden]`).
fn width(x: &ArrayD<f32>) -> u64 {
    x.shape().last().copied().unwrap_or(0) as u64
}

/// The features the classifier reads: the pooled last hidden states, through
/// `tanh(pooler)` when the head pools the CLS token. For `embed` heads, the
/// pooled states are the output.
pub fn features(head: &Head, get: &Get, x: &ArrayD<f32>, r: &Req) -> Result<ArrayD<f32>, String> {
    run(&bert::pool(head, width(x)), get, Some(x), r)
}

/// The task's output row from the last hidden states.
pub fn head(head: &Head, get: &Get, x: &ArrayD<f32>, r: &Req) -> Result<Vec<f32>, String> {
    let f = features(head, get, x, r)?;
    let out = run(&bert::head(head, width(x)), get, Some(&f), r)?;
    Ok(out.iter().copied().collect())
}

/// The head's classifier applied to features `f` with weights `w`, `b`
/// (the reference executor's `linear`).
pub fn classifier(f: &ArrayD<f32>, w: &ArrayD<f32>, b: &ArrayD<f32>, r: &Req) -> Vec<f32> {
    r.op(&Op::Linear, &[f], &[w, b]).iter().copied().collect()
}

/// Runs blocks `from..` on `x` like [`rest`], then the head's features
/// (what its classifier reads).
pub fn rest_features(
    m: &Model,
    h: &Head,
    get: &Get,
    from: usize,
    x: Option<&ArrayD<f32>>,
    r: &Req,
) -> Result<ArrayD<f32>, String> {
    features(h, get, &blocks_from(m, get, from, x, r)?, r)
}

/// The activation after the last block, running blocks `from..` on `x`.
fn blocks_from(
    m: &Model,
    get: &Get,
    from: usize,
    x: Option<&ArrayD<f32>>,
    r: &Req,
) -> Result<ArrayD<f32>, String> {
    let mut cur = x.cloned();
    for b in from..blocks(m) {
        cur = Some(block(m, b, get, cur.as_ref(), r)?);
    }
    cur.ok_or_else(|| "no blocks".to_string())
}

/// Runs blocks `from..` on `x` (the activation after block `from - 1`, or
/// `None` when `from == 0`), then the head.
pub fn rest(
    m: &Model,
    h: &Head,
    get: &Get,
    from: usize,
    x: Option<&ArrayD<f32>>,
    r: &Req,
) -> Result<Vec<f32>, String> {
    head(h, get, &blocks_from(m, get, from, x, r)?, r)
}
