//! Block-by-block evaluation of one task model, outside the IR.
//!
//! The model generator (`mgen::passes::share`) evaluates thousands of
//! candidate models that differ only in which weights some blocks use, and
//! the weight store centres synthesised heads on probe inputs. Both need a
//! BERT forward pass that can start from a cached activation at any block
//! boundary. This module provides it.
//!
//! Invariant: every block calls the reference executor's own op evaluator
//! ([`crate::reference`]) on the same ops, operands and params in the same
//! order as the lowering builds them, so a model evaluated here gives
//! **bit-identical** results to the same model lowered and run by
//! [`crate::reference::Plan`] (tested in `tests/share.rs`).
//!
//! Blocks are numbered as the generator counts depth: block 0 is the
//! embeddings (with their LayerNorm), block `l + 1` is encoder layer `l`;
//! the head (pooling, pooler, classifier) is not a block.

use crate::ir::{InputKind, Op};
use crate::reference::eval;
use crate::spec::{Head, Model, Pool};
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
    m.layers as usize + 1
}

/// Runs block `b` on `x` (ignored for block 0, which reads the ids).
pub fn block(
    m: &Model,
    b: usize,
    get: &Get,
    x: Option<&ArrayD<f32>>,
    r: &Req,
) -> Result<ArrayD<f32>, String> {
    let eps = m.layer_norm_eps;
    if b == 0 {
        let ids = r.input(InputKind::Ids);
        let (w, p, t) = (
            get("embeddings.word_embeddings.weight")?,
            get("embeddings.position_embeddings.weight")?,
            get("embeddings.token_type_embeddings.weight")?,
        );
        let e = r.op(&Op::Embed, &[&ids], &[&w, &p, &t]);
        let (g, bb) = (
            get("embeddings.LayerNorm.weight")?,
            get("embeddings.LayerNorm.bias")?,
        );
        return Ok(r.op(&Op::LayerNorm { eps }, &[&e], &[&g, &bb]));
    }
    let x = x.ok_or("block input missing")?;
    let l = b - 1;
    let p = format!("encoder.layer.{l}.");
    let g2 = |n: &str| get(&format!("{p}{n}"));
    let lin = |x: &ArrayD<f32>, n: &str| -> Result<ArrayD<f32>, String> {
        let (w, bs) = (g2(&format!("{n}.weight"))?, g2(&format!("{n}.bias"))?);
        Ok(r.op(&Op::Linear, &[x], &[&w, &bs]))
    };
    let heads = m.heads;
    let scale = 1.0 / ((m.hidden / heads) as f64).sqrt();
    let mask = r.input(InputKind::Mask);
    let q = lin(x, "attention.self.query")?;
    let k = lin(x, "attention.self.key")?;
    let v = lin(x, "attention.self.value")?;
    let s = r.op(&Op::Qk { heads }, &[&q, &k], &[]);
    let s = r.op(&Op::Scale { factor: scale }, &[&s], &[]);
    let s = r.op(&Op::Mask, &[&s, &mask], &[]);
    let pr = r.op(&Op::Softmax, &[&s], &[]);
    let c = r.op(&Op::Av { heads }, &[&pr, &v], &[]);
    let o = lin(&c, "attention.output.dense")?;
    let res = r.op(&Op::Add, &[&o, x], &[]);
    let (g, bb) = (
        g2("attention.output.LayerNorm.weight")?,
        g2("attention.output.LayerNorm.bias")?,
    );
    let x1 = r.op(&Op::LayerNorm { eps }, &[&res], &[&g, &bb]);
    let f1 = lin(&x1, "intermediate.dense")?;
    let ge = r.op(&Op::Gelu, &[&f1], &[]);
    let f2 = lin(&ge, "output.dense")?;
    let r2 = r.op(&Op::Add, &[&f2, &x1], &[]);
    let (g, bb) = (g2("output.LayerNorm.weight")?, g2("output.LayerNorm.bias")?);
    Ok(r.op(&Op::LayerNorm { eps }, &[&r2], &[&g, &bb]))
}

/// The features the classifier reads: the pooled last hidden states, through
/// `tanh(pooler)` when the head pools the CLS token. For `embed` heads, the
/// pooled states are the output.
pub fn features(head: &Head, get: &Get, x: &ArrayD<f32>, r: &Req) -> Result<ArrayD<f32>, String> {
    let pool = head.pool();
    let mask = r.input(InputKind::Mask);
    let pooled = r.op(&Op::Pool(pool), &[x, &mask], &[]);
    if matches!(head, Head::Embed { .. }) || pool == Pool::Mean {
        return Ok(pooled);
    }
    let (w, b) = (get("pooler.dense.weight")?, get("pooler.dense.bias")?);
    let d = r.op(&Op::Linear, &[&pooled], &[&w, &b]);
    Ok(r.op(&Op::Tanh, &[&d], &[]))
}

/// The task's output row from the last hidden states.
pub fn head(head: &Head, get: &Get, x: &ArrayD<f32>, r: &Req) -> Result<Vec<f32>, String> {
    let f = features(head, get, x, r)?;
    if matches!(head, Head::Embed { .. }) {
        return Ok(f.iter().copied().collect());
    }
    let (w, b) = (get("classifier.weight")?, get("classifier.bias")?);
    Ok(r.op(&Op::Linear, &[&f], &[&w, &b])
        .iter()
        .copied()
        .collect())
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
