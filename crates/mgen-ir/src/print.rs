//! The textual IR (`.mir`): the spec as canonical `.mgen` declarations, then
//! a `graph` block with one line per parameter and per node.
//!
//! Nodes are numbered in [`Module::canonical_order`] and parameters in order
//! of first use, so printing is a function of the graph's content, and
//! print → [`super::read`] → print gives identical text.

use super::*;
use crate::syntax::ast::quote;
use serde_json::json;
use std::collections::HashMap;
use std::fmt::Write;

/// Dense numbering of nodes and params for printing.
pub struct Numbering {
    pub order: Vec<NodeId>,
    pub node: HashMap<NodeId, usize>,
    pub params: Vec<ParamId>,
    pub param: HashMap<ParamId, usize>,
}

/// Numbers nodes canonically and params by first use (unused params are
/// not printed). Returns `None` on a cycle.
pub fn numbering(m: &Module) -> Option<Numbering> {
    let order = m.canonical_order()?;
    let node = order.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut params = Vec::new();
    let mut param = HashMap::new();
    for n in &order {
        for p in &m.node(*n).params {
            if !param.contains_key(p) {
                param.insert(*p, params.len());
                params.push(*p);
            }
        }
    }
    Some(Numbering {
        order,
        node,
        params,
        param,
    })
}

fn shape(s: &[u64]) -> String {
    let parts: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// The call text of a node: `linear(%3, $4, $5)`.
pub fn op_text(m: &Module, id: NodeId, num: &Numbering) -> String {
    let n = m.node(id);
    let mut args: Vec<String> = m
        .operands(id)
        .iter()
        .map(|o| format!("%{}", num.node[o]))
        .collect();
    args.extend(n.params.iter().map(|p| format!("${}", num.param[p])));
    match &n.op {
        Op::Input(InputKind::Ids) => args.push("ids".into()),
        Op::Input(InputKind::Mask) => args.push("mask".into()),
        Op::LayerNorm { eps } => args.push(format!("eps = {eps:e}")),
        Op::Qk { heads } | Op::Av { heads } => args.push(format!("heads = {heads}")),
        Op::Scale { factor } => args.push(format!("factor = {factor}")),
        Op::Pool(p) => args.push(format!("mode = {}", p.name())),
        Op::Output { task } => args.push(m.task_names()[*task].to_string()),
        _ => {}
    }
    format!("{}({})", n.op.name(), args.join(", "))
}

fn tasks_text(m: &Module, t: TaskSet) -> String {
    let names = m.task_names();
    let v: Vec<&str> = t.iter().filter_map(|i| names.get(i).copied()).collect();
    format!("[{}]", v.join(", "))
}

/// The whole module as `.mir` text.
pub fn print(m: &Module) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "// mgen textual IR: `mgen compile FILE.mir` reads it back."
    );
    s.push_str(&m.spec.to_mgen());
    let Some(num) = numbering(m) else {
        let _ = writeln!(s, "// (the graph has a cycle and cannot be printed)");
        return s;
    };
    let _ = writeln!(s, "graph {} {{", m.spec.workload.name);
    let _ = writeln!(s, "    root = {};", quote(&m.spec.root));
    for (i, p) in num.params.iter().enumerate() {
        let p = &m.params[p];
        let _ = writeln!(
            s,
            "    ${i} = param({}, {}, {}, {}{});",
            p.source,
            quote(&p.name),
            shape(&p.shape),
            quote(&p.digest),
            p.bits.map(|b| format!(", bits = {b}")).unwrap_or_default()
        );
    }
    for (i, id) in num.order.iter().enumerate() {
        let n = m.node(*id);
        let _ = writeln!(
            s,
            "    %{i} = {} : {} (tasks = {}, layer = {}, at = {});",
            op_text(m, *id, &num),
            shape(&n.shape),
            tasks_text(m, n.tasks),
            n.layer,
            quote(&n.origin)
        );
    }
    let _ = writeln!(s, "}}");
    s
}

/// The module as one JSON object (the machine form of [`print`]).
pub fn to_json(m: &Module) -> serde_json::Value {
    let Some(num) = numbering(m) else {
        return json!({ "error": "cycle" });
    };
    let names = m.task_names();
    let params: Vec<_> = num
        .params
        .iter()
        .map(|p| {
            let p = &m.params[p];
            json!({ "source": p.source, "name": p.name, "shape": p.shape, "digest": p.digest })
        })
        .collect();
    let nodes: Vec<_> = num
        .order
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let n = m.node(*id);
            let layer = match n.layer {
                Layer::Encoder(l) => json!(l),
                other => json!(other.to_string()),
            };
            json!({
                "id": i,
                "op": n.op.name(),
                "text": op_text(m, *id, &num),
                "operands": m.operands(*id).iter().map(|o| num.node[o]).collect::<Vec<_>>(),
                "params": n.params.iter().map(|p| num.param[p]).collect::<Vec<_>>(),
                "shape": n.shape,
                "tasks": n.tasks.iter().filter_map(|t| names.get(t)).collect::<Vec<_>>(),
                "layer": layer,
                "at": n.origin,
            })
        })
        .collect();
    json!({ "spec": m.spec, "params": params, "nodes": nodes })
}
