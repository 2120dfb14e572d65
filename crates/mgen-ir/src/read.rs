//! The textual-IR reader: a `.mir` `graph` block (already parsed by the
//! shared grammar) → [`Module`].
//!
//! Parameters and nodes must be defined before use, which makes every read
//! graph acyclic; every node's declared shape is checked against
//! [`shape::infer`]. A node's `at = "file:line:col"` is kept verbatim and,
//! when that file can be read, turned into a span for diagnostics;
//! otherwise diagnostics point at the node's line in the `.mir`.

use super::*;
use crate::diag::{Code, Diagnostic, Diags, FileId, Sources};
use crate::spec::Spec;
use crate::syntax::ast::{self, Arg, Stmt, Value, ValueKind};
use std::collections::HashMap;

struct Reader<'a> {
    file: FileId,
    sources: &'a mut Sources,
    diags: Diags,
    loaded: HashMap<String, Option<FileId>>,
}

impl Reader<'_> {
    fn err(&mut self, span: &std::ops::Range<usize>, msg: impl Into<String>, label: &str) {
        self.diags
            .push(Diagnostic::error(Code::E101, msg).at(self.file, span.clone(), label));
    }

    fn shape(&mut self, v: &Value) -> Option<Vec<u64>> {
        let ValueKind::List { items } = &v.kind else {
            self.err(&v.span, "expected a shape like `[32, 256]`", "not a shape");
            return None;
        };
        let mut out = Vec::new();
        for it in items {
            match &it.kind {
                ValueKind::Number { value, .. }
                    if value.fract() == 0.0 && *value >= 0.0 && *value < 9.0e15 =>
                {
                    out.push(*value as u64)
                }
                _ => {
                    self.err(&it.span, "a dimension must be a whole number", "here");
                    return None;
                }
            }
        }
        Some(out)
    }

    fn resolve_at(&mut self, at: &str, fallback: &std::ops::Range<usize>) -> Option<Loc> {
        let mut parts = at.rsplitn(3, ':');
        let col = parts.next().and_then(|c| c.parse::<usize>().ok());
        let line = parts.next().and_then(|l| l.parse::<usize>().ok());
        let file = parts.next();
        let fallback = Loc {
            file: self.file,
            span: fallback.clone(),
        };
        let (Some(file), Some(line), Some(col)) = (file, line, col) else {
            return Some(fallback);
        };
        let id = match self.loaded.get(file) {
            Some(id) => *id,
            None => {
                let id = std::fs::read(file)
                    .ok()
                    .filter(|b| b.len() <= crate::syntax::MAX_FILE_BYTES)
                    .and_then(|b| String::from_utf8(b).ok())
                    .map(|t| self.sources.add(file, t));
                self.loaded.insert(file.to_string(), id);
                id
            }
        };
        match id.and_then(|id| self.sources.offset_of(id, line, col).map(|o| (id, o))) {
            Some((id, o)) => Some(Loc {
                file: id,
                span: o..o + 1,
            }),
            None => Some(fallback),
        }
    }
}

/// Reads the `graph` item of a `.mir` file into a module over `spec`.
pub fn read(
    spec: Spec,
    graph: &ast::Item,
    file: FileId,
    sources: &mut Sources,
) -> Result<Module, Diags> {
    let mut r = Reader {
        file,
        sources,
        diags: Diags::default(),
        loaded: HashMap::new(),
    };
    let mut m = Module {
        spec,
        graph: Graph::default(),
        params: Vec::new(),
    };
    let task_index: HashMap<String, usize> = m
        .task_names()
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), i))
        .collect();
    let mut nodes: HashMap<u64, NodeId> = HashMap::new();
    // Definitions that failed: their uses fail silently, so one error is
    // reported once rather than at every later use.
    let mut failed: std::collections::HashSet<u64> = std::collections::HashSet::new();
    let mut params: HashMap<u64, ParamId> = HashMap::new();
    let mut root_seen = false;
    for stmt in &graph.body {
        match stmt {
            Stmt::Attr { key, value, span } if key.name == "root" && !root_seen => {
                root_seen = true;
                match &value.kind {
                    ValueKind::Str { text } => m.spec.root = text.clone(),
                    _ => r.err(span, "`root` must be a string", "here"),
                }
            }
            Stmt::Def { target, value, ty, meta, span } => match &target.kind {
                ValueKind::ParamRef { index } => {
                    if ty.is_some() || !meta.is_empty() {
                        r.err(span, "a parameter definition has no `:` shape or metadata", "here");
                        continue;
                    }
                    if params.contains_key(index) {
                        r.err(&target.span, format!("`${index}` is defined twice"), "defined again");
                        continue;
                    }
                    if let Some(p) = read_param(&mut r, value) {
                        if m.params.iter().any(|q| q.digest == p.digest) {
                            r.err(&value.span, format!("a parameter with digest {} is already defined", p.digest), "duplicate contents");
                            continue;
                        }
                        let id = ParamId(m.params.len() as u32);
                        m.params.push(p);
                        params.insert(*index, id);
                    }
                }
                ValueKind::NodeRef { index } => {
                    if nodes.contains_key(index) {
                        r.err(&target.span, format!("`%{index}` is defined twice"), "defined again");
                        continue;
                    }
                    let uses_failed = match &value.kind {
                        ValueKind::Call { args, .. } => args.iter().any(|a| matches!(a.value.kind, ValueKind::NodeRef { index } if failed.contains(&index))),
                        _ => false,
                    };
                    if uses_failed {
                        failed.insert(*index);
                        continue;
                    }
                    match read_node(&mut r, &mut m, &nodes, &params, &task_index, value, ty.as_ref(), meta, span) {
                        Some(id) => {
                            nodes.insert(*index, id);
                        }
                        None => {
                            failed.insert(*index);
                        }
                    }
                }
                _ => r.err(span, "expected `%N = ...` or `$N = ...`", "here"),
            },
            Stmt::Error { .. } => {}
            other => r.err(&other.span(), "a graph holds `root = \"...\";`, `$N = param(...);` and `%N = op(...) : [shape] (metadata);`", "not expected here"),
        }
    }
    if !r.diags.is_empty() {
        return Err(r.diags);
    }
    verify::verify(&m, "reading the .mir file")?;
    Ok(m)
}

fn read_param(r: &mut Reader, v: &Value) -> Option<Param> {
    let ValueKind::Call { func, args } = &v.kind else {
        r.err(
            &v.span,
            "expected `param(SOURCE, \"NAME\", [SHAPE], \"DIGEST\")`",
            "here",
        );
        return None;
    };
    let positional = args.iter().take_while(|a| a.name.is_none()).count();
    let extra_ok = args[positional.min(args.len())..]
        .iter()
        .all(|a| a.name.as_ref().is_some_and(|n| n.name == "bits"));
    if func.name != "param" || positional != 4 || args.len() > 5 || !extra_ok {
        r.err(
            &v.span,
            "expected `param(SOURCE, \"NAME\", [SHAPE], \"DIGEST\")` or `param(..., bits = N)`",
            "here",
        );
        return None;
    }
    let bits = match args.get(4).map(|a| &a.value.kind) {
        None => None,
        Some(ValueKind::Number { value, .. })
            if value.fract() == 0.0 && (2.0..=16.0).contains(value) =>
        {
            Some(*value as u32)
        }
        Some(_) => {
            r.err(
                &args[4].span,
                "`bits` is a whole number from 2 to 16",
                "here",
            );
            return None;
        }
    };
    let source = match &args[0].value.kind {
        ValueKind::Name { name } => name.clone(),
        _ => {
            r.err(
                &args[0].span,
                "the source of a parameter is a model or task name",
                "here",
            );
            return None;
        }
    };
    let name = match &args[1].value.kind {
        ValueKind::Str { text } => text.clone(),
        _ => {
            r.err(&args[1].span, "the tensor name is a string", "here");
            return None;
        }
    };
    let shape = r.shape(&args[2].value)?;
    let digest = match &args[3].value.kind {
        ValueKind::Str { text }
            if text.len() == 16 && text.chars().all(|c| c.is_ascii_hexdigit()) =>
        {
            text.clone()
        }
        _ => {
            r.err(
                &args[3].span,
                "the digest is 16 hex digits in quotes",
                "here",
            );
            return None;
        }
    };
    Some(Param {
        source,
        name,
        shape,
        digest,
        bits,
    })
}

#[allow(clippy::too_many_arguments)]
fn read_node(
    r: &mut Reader,
    m: &mut Module,
    nodes: &HashMap<u64, NodeId>,
    params: &HashMap<u64, ParamId>,
    task_index: &HashMap<String, usize>,
    v: &Value,
    ty: Option<&Value>,
    meta: &[Arg],
    span: &std::ops::Range<usize>,
) -> Option<NodeId> {
    let ValueKind::Call { func, args } = &v.kind else {
        r.err(
            &v.span,
            "expected an op call like `linear(%3, $4, $5)`",
            "here",
        );
        return None;
    };
    let mut operands = Vec::new();
    let mut ps = Vec::new();
    let mut named: HashMap<&str, &Value> = HashMap::new();
    let mut positional_names = Vec::new();
    for a in args {
        match (&a.name, &a.value.kind) {
            (None, ValueKind::NodeRef { index }) => match nodes.get(index) {
                Some(id) => operands.push(*id),
                None => {
                    r.diags.push(
                        Diagnostic::error(
                            Code::E102,
                            format!("`%{index}` is used before it is defined"),
                        )
                        .at(r.file, a.span.clone(), "undefined node"),
                    );
                    return None;
                }
            },
            (None, ValueKind::ParamRef { index }) => match params.get(index) {
                Some(id) => ps.push(*id),
                None => {
                    r.diags.push(
                        Diagnostic::error(
                            Code::E102,
                            format!("`${index}` is used before it is defined"),
                        )
                        .at(r.file, a.span.clone(), "undefined parameter"),
                    );
                    return None;
                }
            },
            (None, ValueKind::Name { name }) => positional_names.push((name.as_str(), &a.span)),
            (Some(n), _) => {
                named.insert(n.name.as_str(), &a.value);
            }
            (None, _) => {
                r.err(
                    &a.span,
                    "operands are `%N` nodes and `$N` parameters",
                    "unexpected argument",
                );
                return None;
            }
        }
    }
    let num = |r: &mut Reader, k: &str| -> Option<f64> {
        match named.get(k).map(|v| &v.kind) {
            Some(ValueKind::Number { value, .. })
                if value.is_finite()
                    && (k != "heads"
                        || (value.fract() == 0.0 && *value >= 1.0 && *value < 1e9)) =>
            {
                Some(*value)
            }
            _ => {
                r.err(
                    &v.span,
                    format!("`{}` needs `{k} = NUMBER`", func.name),
                    "here",
                );
                None
            }
        }
    };
    let op = match func.name.as_str() {
        "input" => match positional_names.as_slice() {
            [("ids", _)] => Op::Input(InputKind::Ids),
            [("mask", _)] => Op::Input(InputKind::Mask),
            _ => {
                r.err(&v.span, "expected `input(ids)` or `input(mask)`", "here");
                return None;
            }
        },
        "embed" => Op::Embed,
        "layernorm" => Op::LayerNorm {
            eps: num(r, "eps")?,
        },
        "linear" => Op::Linear,
        "qk" => Op::Qk {
            heads: num(r, "heads")? as u64,
        },
        "av" => Op::Av {
            heads: num(r, "heads")? as u64,
        },
        "scale" => Op::Scale {
            factor: num(r, "factor")?,
        },
        "mask" => Op::Mask,
        "softmax" => Op::Softmax,
        "add" => Op::Add,
        "gelu" => Op::Gelu,
        "tanh" => Op::Tanh,
        "pool" => match named.get("mode").map(|v| &v.kind) {
            Some(ValueKind::Name { name }) if name == "cls" => Op::Pool(crate::spec::Pool::Cls),
            Some(ValueKind::Name { name }) if name == "mean" => Op::Pool(crate::spec::Pool::Mean),
            _ => {
                r.err(
                    &v.span,
                    "`pool` needs `mode = cls` or `mode = mean`",
                    "here",
                );
                return None;
            }
        },
        "output" => match positional_names.as_slice() {
            [(name, _)] if task_index.contains_key(*name) => Op::Output {
                task: task_index[*name],
            },
            _ => {
                r.diags.push(
                    Diagnostic::error(Code::E102, "`output` needs the name of a task of the workload, as in `output(%9, sst2)`")
                        .at(r.file, v.span.clone(), "here"),
                );
                return None;
            }
        },
        other => {
            let ops = [
                "input",
                "embed",
                "layernorm",
                "linear",
                "qk",
                "av",
                "scale",
                "mask",
                "softmax",
                "add",
                "gelu",
                "tanh",
                "pool",
                "output",
            ];
            let mut d = Diagnostic::error(Code::E101, format!("unknown op `{other}`")).at(
                r.file,
                func.span.clone(),
                "not an op",
            );
            if let Some(s) = crate::spec::check::suggest(other, &ops) {
                d = d.help(format!("did you mean `{s}`?"));
            }
            r.diags.push(d);
            return None;
        }
    };
    let Some(ty) = ty else {
        r.err(span, "a node needs its shape: `%N = op(...) : [dims] (tasks = [...], layer = L, at = \"...\");`", "no shape");
        return None;
    };
    let shape = r.shape(ty)?;
    let mut tasks = TaskSet::default();
    let mut layer = None;
    let mut origin = None;
    for a in meta {
        let key = a.name.as_ref().map(|n| n.name.as_str()).unwrap_or("");
        match (key, &a.value.kind) {
            ("tasks", ValueKind::List { items }) => {
                for it in items {
                    match &it.kind {
                        ValueKind::Name { name } if task_index.contains_key(name) => {
                            tasks = tasks.union(TaskSet::single(task_index[name]))
                        }
                        _ => {
                            r.diags.push(
                                Diagnostic::error(Code::E102, "not a task of the workload").at(
                                    r.file,
                                    it.span.clone(),
                                    "unknown task",
                                ),
                            );
                            return None;
                        }
                    }
                }
            }
            ("layer", ValueKind::Name { name }) => {
                layer = match name.as_str() {
                    "input" => Some(Layer::Input),
                    "emb" => Some(Layer::Embed),
                    "head" => Some(Layer::Head),
                    _ => None,
                }
            }
            ("layer", ValueKind::Number { value, .. })
                if value.fract() == 0.0 && *value >= 0.0 && *value < 1e9 =>
            {
                layer = Some(Layer::Encoder(*value as u32))
            }
            ("at", ValueKind::Str { text }) => origin = Some(text.clone()),
            _ => {
                r.err(&a.span, "node metadata is `tasks = [..]`, `layer = input|emb|N|head`, `at = \"file:line:col\"`", "unexpected");
                return None;
            }
        }
    }
    let (Some(layer), Some(origin)) = (layer, origin) else {
        r.err(
            span,
            "a node needs `layer = ...` and `at = \"...\"` metadata",
            "incomplete metadata",
        );
        return None;
    };
    let loc = r.resolve_at(&origin, span);
    let (no, np) = op.arity();
    if operands.len() != no || ps.len() != np {
        r.err(
            &v.span,
            format!(
                "`{}` takes {no} node operand(s) and {np} parameter(s)",
                func.name
            ),
            "wrong operands",
        );
        return None;
    }
    let shapes: Vec<&[u64]> = operands
        .iter()
        .map(|o| m.graph[o.0].shape.as_slice())
        .collect();
    let pshapes: Vec<&[u64]> = ps.iter().map(|p| m.params[p].shape.as_slice()).collect();
    match shape::infer(&op, &shapes, &pshapes, m.spec.workload.seq) {
        Ok(s) if s == shape => {}
        Ok(s) => {
            r.err(
                &ty.span,
                format!("declared shape {shape:?} but the operands give {s:?}"),
                "wrong shape",
            );
            return None;
        }
        Err(e) => {
            r.err(&v.span, e, "operands do not fit");
            return None;
        }
    }
    Some(m.add(
        Node {
            op,
            params: ps,
            shape,
            tasks,
            layer,
            origin,
            loc,
        },
        &operands,
    ))
}
