//! Lowering: checked [`Spec`] → dataflow [`Module`].
//!
//! Each task of the workload becomes its own full BERT encoder, its pooling
//! and its head: one node per step of the block description
//! ([`crate::bert::model`]), in its order, each step's params interned
//! just before its node; only the two request inputs are shared, and each
//! task ends in its `output` node. Sharing is left to the passes. Every
//! node gets the source location of the declaration it came from (the
//! task's `weights` for the embeddings and encoder layers, its `head` for
//! the pooling and head), and every weight a content digest.
//!
//! Digests come from a [`TensorIndex`] (the weight store): for synthetic weights they are computed
//! from how the weights are generated (seed, drift, tensor name, shape), so
//! identical declarations give identical digests without materialising a
//! byte; for checkpoints they are hashes of the tensors' contents.

use super::*;
use crate::bert::{self, Block, Operand, Stage};
use crate::diag::Diagnostic;
use crate::diag::{Diags, Sources};
use std::collections::HashMap;

/// Where lowering finds a task's tensors: the weight store, seen from the IR.
pub trait TensorIndex {
    /// The `(digest, source)` of tensor `name` of spec task `task` (the
    /// model or task whose weights hold it), if the task has it.
    fn lookup(&self, task: usize, name: &str) -> Option<&(String, String)>;
}

struct Lowerer<'a> {
    m: Module,
    sources: &'a Sources,
    store: &'a dyn TensorIndex,
    interned: HashMap<String, ParamId>,
    missing: Vec<String>,
}

impl Lowerer<'_> {
    fn param(&mut self, source: &str, name: String, shape: Vec<u64>, digest: String) -> ParamId {
        if let Some(&p) = self.interned.get(&digest) {
            return p;
        }
        let id = ParamId(self.m.params.len() as u32);
        self.m.params.push(Param {
            source: source.to_string(),
            name,
            shape,
            digest: digest.clone(),
            bits: None,
        });
        self.interned.insert(digest, id);
        id
    }

    fn origin(&self, key: &str) -> (String, Option<Loc>) {
        match self.m.spec.loc(key) {
            Some(loc) => {
                let (l, c) = self.sources.line_col(loc.file, loc.span.start);
                (
                    format!("{}:{l}:{c}", self.sources.name(loc.file)),
                    Some(loc.clone()),
                )
            }
            None => (format!("<{key}>"), None),
        }
    }

    fn node(
        &mut self,
        op: Op,
        operands: &[NodeId],
        params: Vec<ParamId>,
        tasks: TaskSet,
        layer: Layer,
        at: &(String, Option<Loc>),
    ) -> NodeId {
        let seq = self.m.spec.workload.seq;
        let shapes: Vec<&[u64]> = operands
            .iter()
            .map(|o| self.m.graph[o.0].shape.as_slice())
            .collect();
        let pshapes: Vec<&[u64]> = params
            .iter()
            .map(|p| self.m.params[p].shape.as_slice())
            .collect();
        // The checker guarantees consistent sizes; an inconsistency here is a bug
        // that the verifier reports rather than a panic.
        let shape = shape::infer(&op, &shapes, &pshapes, seq).unwrap_or_default();
        self.m.add(
            Node {
                op,
                params,
                shape,
                tasks,
                layer,
                origin: at.0.clone(),
                loc: at.1.clone(),
            },
            operands,
        )
    }
}

/// Lowers every task of the workload. Infallible for a checked spec; the
/// `Result` carries verifier diagnostics should an invariant break.
pub fn lower(spec: Spec, sources: &Sources, store: &dyn TensorIndex) -> Result<Module, Diags> {
    let mut lw = Lowerer {
        m: Module {
            spec,
            graph: Graph::default(),
            params: Vec::new(),
        },
        sources,
        store,
        interned: HashMap::new(),
        missing: Vec::new(),
    };
    let n_tasks = lw.m.spec.workload.tasks.len();
    let all = TaskSet::all(n_tasks);
    let wl = format!("workload {}.inputs", lw.m.spec.workload.name);
    let at = lw.origin(&wl);
    let ids = lw.node(
        Op::Input(InputKind::Ids),
        &[],
        vec![],
        all,
        Layer::Input,
        &at,
    );
    let mask = lw.node(
        Op::Input(InputKind::Mask),
        &[],
        vec![],
        all,
        Layer::Input,
        &at,
    );
    for ti in 0..n_tasks {
        let t = lw.m.spec.workload.tasks[ti];
        lower_task(&mut lw, ti, t, ids, mask);
    }
    if let Some(name) = lw.missing.first() {
        return Err(Diagnostic::internal(format!(
            "lowering found no weights for tensor `{name}`: the weight layout and the lowering disagree"
        ))
        .into());
    }
    let m = lw.m;
    verify::verify(&m, "lowering")?;
    Ok(m)
}

fn lower_task(lw: &mut Lowerer, ti: usize, t: usize, ids: NodeId, mask: NodeId) {
    let task = lw.m.spec.tasks[t].clone();
    let model = lw.m.spec.models[task.base].clone();
    let at_w = lw.origin(&format!("task {}.weights", task.name));
    let at_h = lw.origin(&format!("task {}.head", task.name));
    let cx = TaskCx {
        t,
        source: task.name.clone(),
        tasks: TaskSet::single(ti),
        ids,
        mask,
    };
    // The embeddings read the ids; every later stage reads the one before.
    let mut x = ids;
    for block in bert::model(&model, &task.head) {
        let at = match block.stage {
            Stage::Embeddings | Stage::Encoder(_) => &at_w,
            Stage::Pool | Stage::Head => &at_h,
        };
        x = lower_block(lw, &cx, &block, x, at);
    }
    lw.node(
        Op::Output { task: ti },
        &[x],
        vec![],
        cx.tasks,
        Layer::Head,
        &at_h,
    );
}

/// What the nodes of one task's blocks share.
struct TaskCx {
    /// Spec task index (whose tensors the weight store resolves).
    t: usize,
    /// The task's name: the source of a tensor the store does not know.
    source: String,
    tasks: TaskSet,
    ids: NodeId,
    mask: NodeId,
}

/// Emits one node per step of `block` (each after its params, in the
/// description's order) on the stage input `x`; returns the block's result.
fn lower_block(
    lw: &mut Lowerer,
    cx: &TaskCx,
    block: &Block,
    x: NodeId,
    at: &(String, Option<Loc>),
) -> NodeId {
    let mut nodes: Vec<NodeId> = Vec::with_capacity(block.steps.len());
    let resolve = |nodes: &[NodeId], o: Operand| match o {
        Operand::Ids => cx.ids,
        Operand::Mask => cx.mask,
        Operand::Input => x,
        Operand::Step(i) => nodes[i],
    };
    for step in &block.steps {
        let operands: Vec<NodeId> = step.operands.iter().map(|&o| resolve(&nodes, o)).collect();
        let params: Vec<ParamId> = step
            .params
            .iter()
            .map(|p| tensor(lw, cx, &p.name, &p.shape))
            .collect();
        let n = lw.node(
            step.op.clone(),
            &operands,
            params,
            cx.tasks,
            block.stage.layer(),
            at,
        );
        nodes.push(n);
    }
    resolve(&nodes, block.output())
}

/// A tensor of the task's model, as the weight store resolved it (a
/// tensor it does not know is recorded, and lowering fails with E900).
fn tensor(lw: &mut Lowerer, cx: &TaskCx, name: &str, shape: &[u64]) -> ParamId {
    let (digest, source) = match lw.store.lookup(cx.t, name) {
        Some((d, s)) => (d.clone(), s.clone()),
        None => {
            lw.missing.push(name.to_string());
            (format!("{:016x}", lw.missing.len()), cx.source.clone())
        }
    };
    lw.param(&source, name.to_string(), shape.to_vec(), digest)
}
