//! The BERT block description: the one place the topology of a task model
//! is written down.
//!
//! A task model is a list of [`Block`]s, one per [`Stage`]: the embeddings
//! (with their LayerNorm), encoder layer `l` for `l` in `0..layers` (Q/K/V,
//! QKᵀ, scale, mask, softmax, ·V, output projection, residual, LayerNorm,
//! FFN1, GELU, FFN2, residual, LayerNorm), the pooling (with the pooler's
//! `tanh(dense)` when a classifier or regressor pools the CLS token) and the
//! head (the classifier; no steps for an `embed` task). [`model`] lists them
//! in order. Each block is an ordered list of [`Step`]s: an IR [`Op`] with
//! its attributes, its operands and the Hugging Face tensors it reads.
//!
//! Who walks it:
//! - lowering ([`crate::lower`]) emits one IR node per step, in step order,
//!   and one param per tensor, in tensor order;
//! - the weight layout (`mgen_model::weights::layout`: which tensors a model
//!   has, in which order, with which shapes) is [`model`]'s tensors;
//! - the tensor-level forward (`mgen_model::forward`) and the branch
//!   trainer (`mgen_model::train`) evaluate the steps with the reference
//!   executor's kernels, so they compute what the lowered IR computes.
//!
//! Invariants (checked by this module's tests for a range of models):
//! - a step's operands are [`Operand::Ids`], [`Operand::Mask`] (the two
//!   request inputs), [`Operand::Input`] (the previous stage's output; the
//!   embeddings stage has none and reads the ids) or [`Operand::Step`] `i`
//!   of an *earlier* step of the same block, so step order is an evaluation
//!   order;
//! - every step's operand and tensor counts are its op's [`Op::arity`], and
//!   the shapes fit [`crate::shape::infer`] for any `seq <= max_seq`;
//! - a block's result is its last step ([`Block::output`]), or its input
//!   when it has no steps (the head of an `embed` task);
//! - tensor names are unique across a model's stages, and every tensor is
//!   read by exactly one step; the tensors of [`model`], in stage, step and
//!   param order, are the weight layout (the order synthetic heads' digests
//!   and checkpoint checks follow);
//! - the description holds no task index and no `output` node: lowering
//!   adds the two shared `input` nodes and each task's `output` itself.

use crate::spec::{Head, Model, Pool};
use crate::{Layer, Op};

/// Which part of a task model a block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Word, position and token-type embeddings and their LayerNorm.
    Embeddings,
    /// Encoder layer `l`.
    Encoder(u64),
    /// Pooling of the last hidden states (and the pooler, when the head
    /// reads it): the features a classifier reads.
    Pool,
    /// The classifier (no steps for an `embed` task).
    Head,
}

impl Stage {
    /// The IR layer the stage's nodes belong to.
    pub fn layer(self) -> Layer {
        match self {
            Stage::Embeddings => Layer::Embed,
            Stage::Encoder(l) => Layer::Encoder(l as u32),
            Stage::Pool | Stage::Head => Layer::Head,
        }
    }
}

/// Where a step's operand comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operand {
    /// The request's token ids, `[seq]`.
    Ids,
    /// The request's attention mask, `[seq]`.
    Mask,
    /// The previous stage's output.
    Input,
    /// An earlier step of the same block, by index.
    Step(usize),
}

/// A weight tensor a step reads: its Hugging Face name and shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<u64>,
}

/// One operation of a block.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The step's name within its block, e.g. `attention.self.query`
    /// (a linear or LayerNorm is named by its Hugging Face module).
    pub name: &'static str,
    pub op: Op,
    pub operands: Vec<Operand>,
    /// The tensors, in the op's param order (weight before bias, gamma
    /// before beta).
    pub params: Vec<Tensor>,
}

/// The steps of one stage of a task model.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub stage: Stage,
    pub steps: Vec<Step>,
}

impl Block {
    /// The block's result: its last step, or its input when it has none.
    pub fn output(&self) -> Operand {
        match self.steps.len() {
            0 => Operand::Input,
            n => Operand::Step(n - 1),
        }
    }

    /// The index of the step named `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }

    /// The tensors the block reads, in step and param order.
    pub fn tensors(&self) -> impl Iterator<Item = &Tensor> {
        self.steps.iter().flat_map(|s| s.params.iter())
    }
}

/// Builds a block; tensor names get the block's prefix.
struct Builder {
    prefix: String,
    block: Block,
}

impl Builder {
    fn new(stage: Stage, prefix: impl Into<String>) -> Builder {
        Builder {
            prefix: prefix.into(),
            block: Block {
                stage,
                steps: Vec::new(),
            },
        }
    }

    fn step(
        &mut self,
        name: &'static str,
        op: Op,
        operands: &[Operand],
        params: Vec<(String, Vec<u64>)>,
    ) -> Operand {
        let params = params
            .into_iter()
            .map(|(n, shape)| Tensor {
                name: format!("{}{n}", self.prefix),
                shape,
            })
            .collect();
        self.block.steps.push(Step {
            name,
            op,
            operands: operands.to_vec(),
            params,
        });
        Operand::Step(self.block.steps.len() - 1)
    }

    /// `x · Wᵀ + b` with `{name}.weight` `[out, inp]` and `{name}.bias`.
    fn linear(&mut self, name: &'static str, x: Operand, out: u64, inp: u64) -> Operand {
        let params = vec![
            (format!("{name}.weight"), vec![out, inp]),
            (format!("{name}.bias"), vec![out]),
        ];
        self.step(name, Op::Linear, &[x], params)
    }

    /// LayerNorm over width `h` with `{name}.weight` and `{name}.bias`.
    fn layernorm(&mut self, name: &'static str, x: Operand, h: u64, eps: f64) -> Operand {
        let params = vec![
            (format!("{name}.weight"), vec![h]),
            (format!("{name}.bias"), vec![h]),
        ];
        self.step(name, Op::LayerNorm { eps }, &[x], params)
    }
}

/// The embeddings stage: `embed` of the ids, then LayerNorm.
pub fn embeddings(m: &Model) -> Block {
    let h = m.hidden;
    let mut b = Builder::new(Stage::Embeddings, "embeddings.");
    let tables = vec![
        ("word_embeddings.weight".to_string(), vec![m.vocab, h]),
        ("position_embeddings.weight".to_string(), vec![m.max_seq, h]),
        (
            "token_type_embeddings.weight".to_string(),
            vec![m.type_vocab, h],
        ),
    ];
    let e = b.step("embed", Op::Embed, &[Operand::Ids], tables);
    b.layernorm("LayerNorm", e, h, m.layer_norm_eps);
    b.block
}

/// Encoder layer `l`: self-attention with a residual and LayerNorm, then
/// the feed-forward network with a residual and LayerNorm.
pub fn encoder(m: &Model, l: u64) -> Block {
    let (h, f, heads, eps) = (m.hidden, m.ffn, m.heads, m.layer_norm_eps);
    let scale = 1.0 / ((h / heads) as f64).sqrt();
    let mut b = Builder::new(Stage::Encoder(l), format!("encoder.layer.{l}."));
    let x = Operand::Input;
    let q = b.linear("attention.self.query", x, h, h);
    let k = b.linear("attention.self.key", x, h, h);
    let v = b.linear("attention.self.value", x, h, h);
    let s = b.step("attention.self.scores", Op::Qk { heads }, &[q, k], vec![]);
    let s = b.step(
        "attention.self.scaled",
        Op::Scale { factor: scale },
        &[s],
        vec![],
    );
    let s = b.step(
        "attention.self.masked",
        Op::Mask,
        &[s, Operand::Mask],
        vec![],
    );
    let p = b.step("attention.self.probs", Op::Softmax, &[s], vec![]);
    let c = b.step("attention.self.context", Op::Av { heads }, &[p, v], vec![]);
    let o = b.linear("attention.output.dense", c, h, h);
    let r = b.step("attention.output.residual", Op::Add, &[o, x], vec![]);
    let x1 = b.layernorm("attention.output.LayerNorm", r, h, eps);
    let f1 = b.linear("intermediate.dense", x1, f, h);
    let g = b.step("intermediate.gelu", Op::Gelu, &[f1], vec![]);
    let f2 = b.linear("output.dense", g, h, f);
    let r2 = b.step("output.residual", Op::Add, &[f2, x1], vec![]);
    b.layernorm("output.LayerNorm", r2, h, eps);
    b.block
}

/// The pooling stage of a task with head `head` over hidden width `hidden`:
/// `pool`, then `tanh(pooler.dense)` when a classifier or regressor pools
/// the CLS token. Its output is what the classifier reads.
pub fn pool(head: &Head, hidden: u64) -> Block {
    let mut b = Builder::new(Stage::Pool, "");
    let pool = head.pool();
    let pooled = b.step(
        "pool",
        Op::Pool(pool),
        &[Operand::Input, Operand::Mask],
        vec![],
    );
    if !matches!(head, Head::Embed { .. }) && pool == Pool::Cls {
        let d = b.linear("pooler.dense", pooled, hidden, hidden);
        b.step("pooler.tanh", Op::Tanh, &[d], vec![]);
    }
    b.block
}

/// The head stage: the classifier (`classify` and `regress` tasks), or no
/// steps (`embed` tasks output the pooled states).
pub fn head(head: &Head, hidden: u64) -> Block {
    let mut b = Builder::new(Stage::Head, "");
    if !matches!(head, Head::Embed { .. }) {
        b.linear("classifier", Operand::Input, head.width(hidden), hidden);
    }
    b.block
}

/// The number of blocks as the model generator counts depth: the
/// embeddings and every encoder layer (the pooling and head are not blocks).
pub fn blocks(m: &Model) -> usize {
    m.layers as usize + 1
}

/// Block `b` as the model generator counts depth: 0 is the embeddings,
/// `l + 1` is encoder layer `l`.
pub fn block(m: &Model, b: usize) -> Block {
    match b {
        0 => embeddings(m),
        b => encoder(m, b as u64 - 1),
    }
}

/// Every stage of a task model with base `m` and head `h`, in order:
/// embeddings, encoder layers, pooling, head.
pub fn model(m: &Model, h: &Head) -> Vec<Block> {
    let mut v: Vec<Block> = (0..blocks(m)).map(|b| block(m, b)).collect();
    v.push(pool(h, m.hidden));
    v.push(head(h, m.hidden));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::WeightSource;

    fn tiny(layers: u64) -> Model {
        Model {
            name: "tiny".into(),
            layers,
            hidden: 8,
            heads: 2,
            ffn: 12,
            vocab: 10,
            max_seq: 8,
            type_vocab: 2,
            layer_norm_eps: 1e-5,
            weights: WeightSource::Synthetic { seed: 1 },
        }
    }

    fn heads() -> Vec<Head> {
        let mut v = Vec::new();
        for pool in [Pool::Cls, Pool::Mean] {
            v.push(Head::Classify { classes: 3, pool });
            v.push(Head::Regress { pool });
            v.push(Head::Embed { pool });
        }
        v
    }

    /// Operands point backwards, arities fit, shapes infer along every
    /// stage, tensor names are unique and every tensor is read once.
    #[test]
    fn every_model_satisfies_the_invariants() {
        for layers in [0, 1, 3] {
            for h in heads() {
                let m = tiny(layers);
                let stages = model(&m, &h);
                assert_eq!(stages.len(), layers as usize + 3);
                let mut names = std::collections::HashSet::new();
                let seq = 5;
                let mut input: Option<Vec<u64>> = None;
                for b in &stages {
                    let mut shapes: Vec<Vec<u64>> = Vec::new();
                    for (i, s) in b.steps.iter().enumerate() {
                        let ops: Vec<Vec<u64>> = s
                            .operands
                            .iter()
                            .map(|o| match *o {
                                Operand::Ids | Operand::Mask => vec![seq],
                                Operand::Input => input.clone().expect("an input"),
                                Operand::Step(j) => {
                                    assert!(j < i, "{:?} {}: operand {j}", b.stage, s.name);
                                    shapes[j].clone()
                                }
                            })
                            .collect();
                        let o: Vec<&[u64]> = ops.iter().map(Vec::as_slice).collect();
                        let p: Vec<&[u64]> = s.params.iter().map(|t| t.shape.as_slice()).collect();
                        let shape = crate::shape::infer(&s.op, &o, &p, seq)
                            .unwrap_or_else(|e| panic!("{:?} {}: {e}", b.stage, s.name));
                        shapes.push(shape);
                        for t in &s.params {
                            assert!(names.insert(t.name.clone()), "{} twice", t.name);
                        }
                    }
                    if let Operand::Step(j) = b.output() {
                        input = Some(shapes[j].clone());
                    }
                }
                assert_eq!(input, Some(vec![h.width(m.hidden)]), "{h:?}");
            }
        }
    }

    /// The Hugging Face names, in layout order, for one layer and a CLS
    /// classifier: a change to the description that renames or reorders a
    /// tensor shows here.
    #[test]
    fn tensor_names_are_hugging_face_names_in_layout_order() {
        let m = tiny(1);
        let h = Head::Classify {
            classes: 3,
            pool: Pool::Cls,
        };
        let names: Vec<String> = model(&m, &h)
            .iter()
            .flat_map(|b| b.tensors().map(|t| t.name.clone()).collect::<Vec<_>>())
            .collect();
        let mut want: Vec<String> = [
            "word_embeddings.weight",
            "position_embeddings.weight",
            "token_type_embeddings.weight",
            "LayerNorm.weight",
            "LayerNorm.bias",
        ]
        .iter()
        .map(|n| format!("embeddings.{n}"))
        .collect();
        for n in [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "attention.output.LayerNorm",
            "intermediate.dense",
            "output.dense",
            "output.LayerNorm",
        ] {
            want.push(format!("encoder.layer.0.{n}.weight"));
            want.push(format!("encoder.layer.0.{n}.bias"));
        }
        for n in ["pooler.dense", "classifier"] {
            want.push(format!("{n}.weight"));
            want.push(format!("{n}.bias"));
        }
        assert_eq!(names, want);
        assert_eq!(encoder(&m, 0).find("attention.self.probs"), Some(6));
    }
}
