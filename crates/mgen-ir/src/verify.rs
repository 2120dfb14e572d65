//! The verifier: checks the invariants listed in [the crate docs](crate). It runs
//! after lowering, after reading a `.mir`, and after every pass.

use super::*;
use crate::diag::{Code, Diagnostic, Diags};

/// Checks `m`; `after` names the stage for the messages.
pub fn verify(m: &Module, after: &str) -> Result<(), Diags> {
    let mut diags = Diags::default();
    // Name nodes as the printer would (`%k` in canonical order).
    let canon: std::collections::HashMap<NodeId, usize> = m
        .canonical_order()
        .map(|o| o.into_iter().enumerate().map(|(i, n)| (n, i)).collect())
        .unwrap_or_default();
    // Every message names a node this one way (`%k` as printed).
    let name = |id: &NodeId| match canon.get(id) {
        Some(k) => format!("%{k}"),
        None => format!("{id}"),
    };
    let mut bad = |id: Option<NodeId>, msg: String| {
        let mut d = Diagnostic::error(
            Code::E103,
            format!("IR invariant broken after {after}: {msg}"),
        );
        if let Some(id) = id
            && let Some(loc) = &m.graph[id.0].loc
        {
            d = d.at(
                loc.file,
                loc.span.clone(),
                format!("node {} came from here", name(&id)),
            );
        }
        diags.push(d.note("this is a bug in mgen or a hand-edited .mir file"));
    };
    if m.canonical_order().is_none() {
        bad(None, "the graph has a cycle".into());
        return Err(diags);
    }
    let n_tasks = m.spec.workload.tasks.len();
    let all = TaskSet::all(n_tasks);
    let mut outputs = vec![0usize; n_tasks];
    let seq = m.spec.workload.seq;
    for idx in m.graph.node_indices() {
        let id = NodeId(idx);
        let n = &m.graph[idx];
        let mut slots: Vec<u8> = m
            .graph
            .edges_directed(idx, Direction::Incoming)
            .map(|e| *e.weight())
            .collect();
        slots.sort();
        if slots.iter().enumerate().any(|(i, s)| *s as usize != i) {
            bad(
                Some(id),
                format!(
                    "{} has operand slots {slots:?}, not 0..{}",
                    name(&id),
                    slots.len()
                ),
            );
            continue;
        }
        if n.params.iter().any(|p| p.0 as usize >= m.params.len()) {
            bad(
                Some(id),
                format!("{} names a parameter that does not exist", name(&id)),
            );
            continue;
        }
        let ops = m.operands(id);
        let shapes: Vec<&[u64]> = ops.iter().map(|o| m.graph[o.0].shape.as_slice()).collect();
        let pshapes: Vec<&[u64]> = n
            .params
            .iter()
            .map(|p| m.params[p].shape.as_slice())
            .collect();
        match shape::infer(&n.op, &shapes, &pshapes, seq) {
            Ok(s) if s == n.shape => {}
            Ok(s) => bad(
                Some(id),
                format!(
                    "{} ({}) has shape {:?} but its operands give {:?}",
                    name(&id),
                    n.op.name(),
                    n.shape,
                    s
                ),
            ),
            Err(e) => bad(Some(id), format!("{}: {e}", name(&id))),
        }
        if n.origin.is_empty() {
            bad(Some(id), format!("{} has no source location", name(&id)));
        }
        if n.tasks.is_empty() || !n.tasks.is_subset(all) {
            bad(
                Some(id),
                format!(
                    "{} has task set {:#x}, outside the workload's {n_tasks} tasks",
                    name(&id),
                    n.tasks.0
                ),
            );
        }
        for o in &ops {
            if !n.tasks.is_subset(m.graph[o.0].tasks) {
                bad(
                    Some(id),
                    format!(
                        "{} serves tasks its operand {} does not",
                        name(&id),
                        name(o)
                    ),
                );
            }
        }
        if let Op::Output { task } = n.op {
            if task >= n_tasks {
                bad(
                    Some(id),
                    format!(
                        "{} is the output of task {task}, which does not exist",
                        name(&id)
                    ),
                );
            } else {
                outputs[task] += 1;
                if n.tasks != TaskSet::single(task) {
                    bad(
                        Some(id),
                        format!(
                            "{}, the output of one task, is marked for others",
                            name(&id)
                        ),
                    );
                }
            }
        }
    }
    let names = m.task_names();
    for (t, count) in outputs.iter().enumerate() {
        if *count != 1 {
            bad(
                None,
                format!("task `{}` has {count} output nodes, not 1", names[t]),
            );
        }
    }
    let mut digests = std::collections::HashSet::new();
    for p in &m.params {
        if !digests.insert(&p.digest) {
            bad(None, format!("two parameters share digest {}", p.digest));
        }
    }
    if diags.is_empty() { Ok(()) } else { Err(diags) }
}
