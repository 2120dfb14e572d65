//! The dataflow IR.
//!
//! A [`Module`] is the checked [`Spec`] plus a petgraph `StableDiGraph` of
//! [`Node`]s (so ids never shift when a pass removes a node) and a table of
//! [`Param`]s (weight tensors). An edge `a → b` with weight `i` says that
//! `a` is operand `i` of `b`.
//!
//! Invariants (checked by [`verify::verify`] after every pass):
//! - the graph is acyclic and every node's operands are present, numbered
//!   `0..n` without gaps, and their count fits the op;
//! - every node's shape equals [`shape::infer`] of its operands and params;
//! - every node has a source location (`origin`) and a non-empty task set,
//!   and a node's tasks are a subset of each operand's tasks;
//! - each task of the workload has exactly one `output` node;
//! - params are interned by content digest: two `ParamId`s never name the
//!   same tensor contents.
//!
//! Static-weight matrix multiplies ([`Op::Linear`], → crossbars) and
//! dynamic ones ([`Op::Qk`], [`Op::Av`], → digital units) are distinct ops.
//!
//! The topology of a BERT task model (which steps, in which order, reading
//! which Hugging Face tensors) is written once, in [`bert`]; lowering emits
//! it and the model crate's forward, training and weight layout walk it.
//!
//! The module holds no pass results: placement, sharing and schedule live
//! beside it in the pass manager's artifact store. Lowering reaches the
//! weights only through [`lower::TensorIndex`] (digests and sources by
//! task and tensor name), so this crate depends on the front end and the
//! hardware model only.

pub(crate) use mgen_front::{spec, syntax};
pub(crate) use mgen_util::diag;

pub mod bert;
pub mod lower;
pub mod print;
pub mod read;
pub mod shape;
pub mod verify;

use crate::spec::{Loc, Pool, Spec};
use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use std::fmt;

/// A node of the graph; prints as `%N` (N is the node's position in the
/// canonical printed order, see [`Module::canonical_order`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub NodeIndex<u32>);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0.index())
    }
}

/// A weight tensor; prints as `$N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub u32);

impl fmt::Display for ParamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}", self.0)
    }
}

/// A set of tasks, as bits over the workload's task list (at most 64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct TaskSet(pub u64);

/// The most tasks a workload may name.
pub const MAX_TASKS: usize = 64;

impl TaskSet {
    pub fn single(t: usize) -> Self {
        TaskSet(1 << t)
    }
    pub fn all(n: usize) -> Self {
        TaskSet(if n >= 64 { u64::MAX } else { (1u64 << n) - 1 })
    }
    pub fn union(self, o: TaskSet) -> TaskSet {
        TaskSet(self.0 | o.0)
    }
    pub fn is_subset(self, o: TaskSet) -> bool {
        self.0 & !o.0 == 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..64).filter(move |i| self.0 & (1 << i) != 0)
    }
}

/// Which request input an [`Op::Input`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputKind {
    /// Token ids, `[seq]`.
    Ids,
    /// Attention mask (1 for real tokens, 0 for padding), `[seq]`.
    Mask,
}

/// Operations. Attributes are part of the op; operands are edges; weights
/// are params.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// A request input. No operands.
    Input(InputKind),
    /// Word + position + token-type(0) embeddings. Operand: ids. Params:
    /// word `[vocab, h]`, position `[max_seq, h]`, token type `[types, h]`.
    Embed,
    /// LayerNorm over the last axis. Operand: x. Params: gamma, beta `[h]`.
    LayerNorm { eps: f64 },
    /// Static-weight matrix multiply, `x · Wᵀ + b` (→ crossbars). Operand:
    /// x `[.., in]`. Params: weight `[out, in]`, bias `[out]`.
    Linear,
    /// Per-head `Q·Kᵀ` (dynamic, → digital unit). Operands: q, k `[s, h]`.
    /// Result `[heads, s, s]`.
    Qk { heads: u64 },
    /// Multiply by a constant. Operand: x.
    Scale { factor: f64 },
    /// Add `-10000` where the mask is 0 (over the key axis). Operands:
    /// scores `[heads, s, s]`, mask `[s]`.
    Mask,
    /// Softmax over the last axis.
    Softmax,
    /// Per-head `P·V` (dynamic). Operands: p `[heads, s, s]`, v `[s, h]`.
    Av { heads: u64 },
    /// Elementwise sum of two operands of one shape.
    Add,
    /// GELU (erf form).
    Gelu,
    /// tanh.
    Tanh,
    /// Pooling over positions. Operands: x `[s, h]`, mask `[s]`. Result `[h]`.
    Pool(Pool),
    /// A task's result. Operand: x.
    Output { task: usize },
}

impl Op {
    /// The op's name in the textual IR.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input(_) => "input",
            Op::Embed => "embed",
            Op::LayerNorm { .. } => "layernorm",
            Op::Linear => "linear",
            Op::Qk { .. } => "qk",
            Op::Scale { .. } => "scale",
            Op::Mask => "mask",
            Op::Softmax => "softmax",
            Op::Av { .. } => "av",
            Op::Add => "add",
            Op::Gelu => "gelu",
            Op::Tanh => "tanh",
            Op::Pool(_) => "pool",
            Op::Output { .. } => "output",
        }
    }

    /// (operands, params) the op takes.
    pub fn arity(&self) -> (usize, usize) {
        match self {
            Op::Input(_) => (0, 0),
            Op::Embed => (1, 3),
            Op::LayerNorm { .. } | Op::Linear => (1, 2),
            Op::Qk { .. } | Op::Mask | Op::Av { .. } | Op::Add | Op::Pool(_) => (2, 0),
            Op::Scale { .. } | Op::Softmax | Op::Gelu | Op::Tanh | Op::Output { .. } => (1, 0),
        }
    }

    /// Does it run on crossbars (a static-weight MVM)?
    pub fn is_static_mvm(&self) -> bool {
        matches!(self, Op::Linear)
    }

    /// A key that is equal for two ops exactly when they compute the same
    /// function (floats by bit pattern).
    pub fn key(&self) -> String {
        match self {
            Op::Input(k) => format!("input {k:?}"),
            Op::LayerNorm { eps } => format!("layernorm {:x}", eps.to_bits()),
            Op::Qk { heads } => format!("qk {heads}"),
            Op::Av { heads } => format!("av {heads}"),
            Op::Scale { factor } => format!("scale {:x}", factor.to_bits()),
            Op::Pool(p) => format!("pool {}", p.name()),
            Op::Output { task } => format!("output {task}"),
            other => other.name().to_string(),
        }
    }
}

/// Which part of a model a node belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layer {
    Input,
    Embed,
    Encoder(u32),
    Head,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layer::Input => write!(f, "input"),
            Layer::Embed => write!(f, "emb"),
            Layer::Encoder(i) => write!(f, "{i}"),
            Layer::Head => write!(f, "head"),
        }
    }
}

/// A node: an op, its params, its result shape, the tasks that use it,
/// where it came from.
#[derive(Debug, Clone)]
pub struct Node {
    pub op: Op,
    pub params: Vec<ParamId>,
    pub shape: Vec<u64>,
    pub tasks: TaskSet,
    pub layer: Layer,
    /// `file:line:col` of the declaration that produced the node; printed
    /// and parsed back verbatim.
    pub origin: String,
    /// The same place as a span, when the file is loaded, for diagnostics.
    pub loc: Option<Loc>,
}

/// A weight tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// The model or task whose weights hold it.
    pub source: String,
    /// Hugging Face tensor name, e.g. `encoder.layer.0.attention.self.query.weight`.
    pub name: String,
    pub shape: Vec<u64>,
    /// Content digest (16 hex digits); equal digests mean equal tensors.
    pub digest: String,
    /// Bits per weight on the crossbars when not the hardware's
    /// `weight_bits` (area mode's low-bit deltas); printed `bits = N`.
    pub bits: Option<u32>,
}

/// `params[id]`: a param by its typed id (ids are indices into the
/// module's param table, which only grows or is compacted by a pass that
/// renumbers every use).
impl std::ops::Index<ParamId> for Vec<Param> {
    type Output = Param;
    fn index(&self, id: ParamId) -> &Param {
        &self[id.0 as usize]
    }
}

impl std::ops::Index<&ParamId> for Vec<Param> {
    type Output = Param;
    fn index(&self, id: &ParamId) -> &Param {
        &self[*id]
    }
}

impl std::ops::IndexMut<ParamId> for Vec<Param> {
    fn index_mut(&mut self, id: ParamId) -> &mut Param {
        &mut self[id.0 as usize]
    }
}

/// The graph type.
pub type Graph = StableDiGraph<Node, u8>;

/// A spec and its dataflow graph.
#[derive(Debug, Clone)]
pub struct Module {
    pub spec: Spec,
    pub graph: Graph,
    pub params: Vec<Param>,
}

impl Module {
    pub fn node(&self, id: NodeId) -> &Node {
        &self.graph[id.0]
    }

    /// Operands of a node, in order.
    pub fn operands(&self, id: NodeId) -> Vec<NodeId> {
        let mut e: Vec<(u8, NodeId)> = self
            .graph
            .edges_directed(id.0, Direction::Incoming)
            .map(|e| (*e.weight(), NodeId(e.source())))
            .collect();
        e.sort();
        e.into_iter().map(|(_, n)| n).collect()
    }

    /// Users of a node (each once).
    pub fn users(&self, id: NodeId) -> Vec<NodeId> {
        let mut u: Vec<NodeId> = self
            .graph
            .neighbors_directed(id.0, Direction::Outgoing)
            .map(NodeId)
            .collect();
        u.sort();
        u.dedup();
        u
    }

    /// The param with `p`'s digest, added when there is none (params are
    /// interned by digest: equal digests, one param).
    pub fn intern_param(&mut self, p: Param) -> ParamId {
        if let Some(i) = self.params.iter().position(|q| q.digest == p.digest) {
            return ParamId(i as u32);
        }
        self.params.push(p);
        ParamId(self.params.len() as u32 - 1)
    }

    /// Adds a node with its operands.
    pub fn add(&mut self, node: Node, operands: &[NodeId]) -> NodeId {
        let id = NodeId(self.graph.add_node(node));
        for (i, o) in operands.iter().enumerate() {
            self.graph.add_edge(o.0, id.0, i as u8);
        }
        id
    }

    /// Names of the workload's tasks, in workload order (bit i of a
    /// [`TaskSet`] is the i-th).
    pub fn task_names(&self) -> Vec<&str> {
        self.spec
            .workload
            .tasks
            .iter()
            .map(|&t| self.spec.tasks[t].name.as_str())
            .collect()
    }

    /// Nodes in topological order, ties broken by smallest index: the order
    /// the printer numbers nodes in. Returns `None` on a cycle.
    pub fn canonical_order(&self) -> Option<Vec<NodeId>> {
        use std::cmp::Reverse;
        use std::collections::{BinaryHeap, HashMap};
        let mut indeg: HashMap<NodeIndex<u32>, usize> = HashMap::new();
        let mut heap = BinaryHeap::new();
        for n in self.graph.node_indices() {
            let d = self.graph.edges_directed(n, Direction::Incoming).count();
            indeg.insert(n, d);
            if d == 0 {
                heap.push(Reverse(n));
            }
        }
        let mut out = Vec::with_capacity(self.graph.node_count());
        while let Some(Reverse(n)) = heap.pop() {
            out.push(NodeId(n));
            for e in self.graph.edges_directed(n, Direction::Outgoing) {
                let d = indeg.get_mut(&e.target())?;
                *d -= 1;
                if *d == 0 {
                    heap.push(Reverse(e.target()));
                }
            }
        }
        (out.len() == self.graph.node_count()).then_some(out)
    }

    /// Static-weight MVM nodes and the tasks they serve: a summary used by
    /// `-v` and tests.
    pub fn count_ops(&self) -> std::collections::BTreeMap<&'static str, usize> {
        let mut m = std::collections::BTreeMap::new();
        for n in self.graph.node_weights() {
            *m.entry(n.op.name()).or_insert(0) += 1;
        }
        m
    }
}
