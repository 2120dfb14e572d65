//! `merge`: exact cross-task redundancy elimination by hash-consing.
//!
//! Requires: a verified module. Ensures: no two nodes have the same op
//! (attributes compared bit-exactly), the same operands and the same params
//! (params are interned by content digest, so equal params mean equal
//! weights); the surviving node's task set is the union of the merged
//! nodes'. Outputs are never merged (each belongs to one task). Every
//! task's outputs are unchanged: a merged node computes exactly what each
//! of its copies did.

use super::{Context, Pass};
use crate::diag::Diags;
use crate::ir::{Module, NodeId, Op, ParamId};
use petgraph::Direction;
use petgraph::visit::EdgeRef;
use std::collections::HashMap;

pub struct Merge;

impl Pass for Merge {
    fn name(&self) -> &'static str {
        "merge"
    }
    fn description(&self) -> &'static str {
        "merge identical computations across tasks (same op, same inputs, same weight digests): identical tasks share everything"
    }
    fn contract(&self) -> &'static str {
        "requires a verified module; ensures no two non-output nodes are identical and every output is unchanged"
    }
    fn invalidates(&self) -> &'static [super::Artifact] {
        &[super::Artifact::Placement, super::Artifact::Schedule]
    }
    fn run(&self, m: &mut Module, _: &mut super::Artifacts, _: &Context) -> Result<(), Diags> {
        merge(m);
        Ok(())
    }
}

/// Merges identical nodes; returns how many were removed.
pub fn merge(m: &mut Module) -> usize {
    let Some(order) = m.canonical_order() else {
        return 0;
    };
    let mut memo: HashMap<(String, Vec<NodeId>, Vec<ParamId>), NodeId> = HashMap::new();
    let mut removed = 0;
    for id in order {
        let node = m.node(id);
        if matches!(node.op, Op::Output { .. }) {
            continue;
        }
        // Operands were visited first (topological order), so they are canonical already.
        let key = (node.op.key(), m.operands(id), node.params.clone());
        match memo.get(&key) {
            None => {
                memo.insert(key, id);
            }
            Some(&keep) => {
                let tasks = m.node(id).tasks;
                let users: Vec<(NodeId, u8)> = m
                    .graph
                    .edges_directed(id.0, Direction::Outgoing)
                    .map(|e| (NodeId(e.target()), *e.weight()))
                    .collect();
                for (u, slot) in users {
                    m.graph.add_edge(keep.0, u.0, slot);
                }
                let k = &mut m.graph[keep.0];
                k.tasks = k.tasks.union(tasks);
                m.graph.remove_node(id.0);
                removed += 1;
            }
        }
    }
    removed
}
