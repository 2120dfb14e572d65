//! Lowering: checked [`Spec`] → dataflow [`Module`].
//!
//! Each task of the workload becomes its own full BERT encoder (embeddings +
//! LayerNorm; per layer Q/K/V, QKᵀ, scale, mask, softmax, ·V, output
//! projection, residual, LayerNorm, FFN1, GELU, FFN2, residual, LayerNorm),
//! its pooling and its head; only the two request inputs are shared. Sharing
//! is left to the passes. Every node gets the source location of the
//! declaration it came from, and every weight a content digest.
//!
//! Digests come from a [`TensorIndex`] (the weight store): for synthetic weights they are computed
//! from how the weights are generated (seed, drift, tensor name, shape), so
//! identical declarations give identical digests without materialising a
//! byte; for checkpoints they are hashes of the tensors' contents.

use super::*;
use crate::diag::Diagnostic;
use crate::diag::{Diags, Sources};
use crate::spec::Head;
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
            .map(|p| self.m.params[p.0 as usize].shape.as_slice())
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
    let ts = TaskSet::single(ti);
    let at_w = lw.origin(&format!("task {}.weights", task.name));
    let at_h = lw.origin(&format!("task {}.head", task.name));
    let (h, f) = (model.hidden, model.ffn);
    // A tensor of the task's model, as the weight store resolved it.
    let w = |lw: &mut Lowerer, name: String, shape: Vec<u64>| -> ParamId {
        let (digest, source) = match lw.store.lookup(t, &name) {
            Some((d, s)) => (d.clone(), s.clone()),
            None => {
                lw.missing.push(name.clone());
                (format!("{:016x}", lw.missing.len()), task.name.clone())
            }
        };
        lw.param(&source, name, shape, digest)
    };
    let word = w(
        lw,
        "embeddings.word_embeddings.weight".into(),
        vec![model.vocab, h],
    );
    let pos = w(
        lw,
        "embeddings.position_embeddings.weight".into(),
        vec![model.max_seq, h],
    );
    let typ = w(
        lw,
        "embeddings.token_type_embeddings.weight".into(),
        vec![model.type_vocab, h],
    );
    let e = lw.node(
        Op::Embed,
        &[ids],
        vec![word, pos, typ],
        ts,
        Layer::Embed,
        &at_w,
    );
    let g = w(lw, "embeddings.LayerNorm.weight".into(), vec![h]);
    let b = w(lw, "embeddings.LayerNorm.bias".into(), vec![h]);
    let eps = model.layer_norm_eps;
    let mut x = lw.node(
        Op::LayerNorm { eps },
        &[e],
        vec![g, b],
        ts,
        Layer::Embed,
        &at_w,
    );
    let heads = model.heads;
    let scale = 1.0 / ((h / heads) as f64).sqrt();
    for l in 0..model.layers {
        let ly = Layer::Encoder(l as u32);
        let p = format!("encoder.layer.{l}.");
        let lin = |lw: &mut Lowerer, x: NodeId, name: &str, out: u64, inp: u64| {
            let wt = w(lw, format!("{p}{name}.weight"), vec![out, inp]);
            let bs = w(lw, format!("{p}{name}.bias"), vec![out]);
            lw.node(Op::Linear, &[x], vec![wt, bs], ts, ly, &at_w)
        };
        let q = lin(lw, x, "attention.self.query", h, h);
        let k = lin(lw, x, "attention.self.key", h, h);
        let v = lin(lw, x, "attention.self.value", h, h);
        let s = lw.node(Op::Qk { heads }, &[q, k], vec![], ts, ly, &at_w);
        let s = lw.node(Op::Scale { factor: scale }, &[s], vec![], ts, ly, &at_w);
        let s = lw.node(Op::Mask, &[s, mask], vec![], ts, ly, &at_w);
        let pr = lw.node(Op::Softmax, &[s], vec![], ts, ly, &at_w);
        let c = lw.node(Op::Av { heads }, &[pr, v], vec![], ts, ly, &at_w);
        let o = lin(lw, c, "attention.output.dense", h, h);
        let r = lw.node(Op::Add, &[o, x], vec![], ts, ly, &at_w);
        let g = w(lw, format!("{p}attention.output.LayerNorm.weight"), vec![h]);
        let b = w(lw, format!("{p}attention.output.LayerNorm.bias"), vec![h]);
        let x1 = lw.node(Op::LayerNorm { eps }, &[r], vec![g, b], ts, ly, &at_w);
        let f1 = lin(lw, x1, "intermediate.dense", f, h);
        let ge = lw.node(Op::Gelu, &[f1], vec![], ts, ly, &at_w);
        let f2 = lin(lw, ge, "output.dense", h, f);
        let r2 = lw.node(Op::Add, &[f2, x1], vec![], ts, ly, &at_w);
        let g = w(lw, format!("{p}output.LayerNorm.weight"), vec![h]);
        let b = w(lw, format!("{p}output.LayerNorm.bias"), vec![h]);
        x = lw.node(Op::LayerNorm { eps }, &[r2], vec![g, b], ts, ly, &at_w);
    }
    let pool = task.head.pool();
    let pooled = lw.node(Op::Pool(pool), &[x, mask], vec![], ts, Layer::Head, &at_h);
    let result = match task.head {
        Head::Embed { .. } => pooled,
        Head::Classify { .. } | Head::Regress { .. } => {
            let n = task.head.width(h);
            let feat = if pool == crate::spec::Pool::Cls {
                let pw = w(lw, "pooler.dense.weight".into(), vec![h, h]);
                let pb = w(lw, "pooler.dense.bias".into(), vec![h]);
                let d = lw.node(Op::Linear, &[pooled], vec![pw, pb], ts, Layer::Head, &at_h);
                lw.node(Op::Tanh, &[d], vec![], ts, Layer::Head, &at_h)
            } else {
                pooled
            };
            let cw = w(lw, "classifier.weight".into(), vec![n, h]);
            let cb = w(lw, "classifier.bias".into(), vec![n]);
            lw.node(Op::Linear, &[feat], vec![cw, cb], ts, Layer::Head, &at_h)
        }
    };
    lw.node(
        Op::Output { task: ti },
        &[result],
        vec![],
        ts,
        Layer::Head,
        &at_h,
    );
}
