//! Area mode of the model generator (`area = delta(bits = N);` in the
//! workload): a task's own matrices are stored as the base model's matrix,
//! programmed once and reused by every MVM that needs it, plus the task's
//! `N`-bit delta. It runs inside the `share` pass, after the tree is
//! chosen, and trades energy (one more, narrower MVM per matrix) for
//! crossbars.
//!
//! Invariants:
//! - A rewritten node `y = linear(x, W_task, b)` becomes
//!   `y = add(linear(x, W_base, b), linear(x, Δ, 0))`, where `Δ` is
//!   `W_task − W_base` quantised per output row to `N` bits and
//!   dequantised (the store's `Delta` recipe), so the crossbars hold it
//!   exactly at `N` bits. Only matrices of encoder layers and the pooler
//!   that differ from the base are rewritten (heads have no base).
//! - A node is rewritten only when every task it serves accepts area mode;
//!   a task accepts it when all its budgets hold on its calibration inputs,
//!   measured by running the rewritten module with the reference executor
//!   against the task's own unshared outputs. A task that fails keeps its
//!   matrices whole, and the measurement is repeated until it is stable.
//! - The module is verified after the rewrite; nodes keep their task sets,
//!   layers and origins, so the tree and the report read the same.

use crate::data::Batch;
use crate::diag::Diags;
use crate::ir::{Module, Node, NodeId, Op, Param, ParamId};
use crate::reference::Plan;
use crate::share::{Measured, measure};
use crate::spec::AreaMode;
use crate::weights::Store;
use ndarray::Array2;
use petgraph::Direction;
use petgraph::visit::EdgeRef;
use serde::Serialize;
use std::collections::HashMap;

/// What area mode did for one task.
#[derive(Debug, Clone, Serialize)]
pub struct AreaTask {
    pub name: String,
    /// Whether some of its matrices are stored as base + delta.
    pub applied: bool,
    /// Why not, when not: `budget` (a budget would break, so they stay
    /// whole) or `no saving` (no matrix of its would take fewer crossbars).
    pub kept_whole: Option<&'static str>,
    /// Matrices it computes as base + delta.
    pub delta_matrices: usize,
    /// Fraction of zero weights in those deltas (after quantisation).
    pub zero_fraction: f64,
    /// Its budgets, measured with area mode applied to the tasks that
    /// accept it.
    pub measured: Vec<Measured>,
}

/// Area mode's report (part of the `share` report).
#[derive(Debug, Clone, Serialize)]
pub struct AreaReport {
    pub delta_bits: u32,
    /// Crossbars in use (over all phases) without and with area mode.
    pub crossbars_without: u64,
    pub crossbars_with: u64,
    /// Chip area of the tiles those crossbars occupy (ISAAC's area per
    /// tile, as the simulator's report), mm².
    pub area_without_mm2: f64,
    pub area_with_mm2: f64,
    /// Energy per request (counting simulator, programming excluded)
    /// without and with area mode, pJ.
    pub energy_without_pj: f64,
    pub energy_with_pj: f64,
    pub tasks: Vec<AreaTask>,
}

/// Rewrites every eligible node whose tasks all accept area mode.
fn rewrite(m: &mut Module, store: &Store, bits: u32, accepted: &[bool]) {
    let spec = m.spec.clone();
    let mut ids: Vec<NodeId> = m.graph.node_indices().map(NodeId).collect();
    ids.sort();
    // Per base matrix: `e` nodes already use it, `k` eligible nodes would.
    // With `S` slices per full matrix and `S_d` per delta, rewriting saves
    // crossbars when `k·S_d < k·S` (e > 0: the base is on the chip anyway)
    // or `S + k·S_d < k·S` (e = 0); otherwise those nodes stay whole.
    let eligible = |m: &Module, id: NodeId| -> Option<String> {
        let node = m.node(id);
        if !matches!(node.op, Op::Linear) || node.tasks.iter().any(|t| !accepted[t]) {
            return None;
        }
        let w = &m.params[node.params[0].0 as usize];
        store.zeros_of(w.shape[0])?;
        store.delta_of(&w.digest).map(|d| d.0.clone())
    };
    let hw = &spec.hardware;
    let full = hw.weight_bits.div_ceil(hw.cell_bits) as usize;
    let narrow = bits.div_ceil(hw.cell_bits) as usize;
    let mut existing: HashMap<String, usize> = HashMap::new();
    for &id in &ids {
        let node = m.node(id);
        if matches!(node.op, Op::Linear) {
            *existing
                .entry(m.params[node.params[0].0 as usize].digest.clone())
                .or_default() += 1;
        }
    }
    let mut new_users: HashMap<String, usize> = HashMap::new();
    for &id in &ids {
        if let Some(b) = eligible(m, id) {
            *new_users.entry(b).or_default() += 1;
        }
    }
    let saves = |b: &str| -> bool {
        let k = new_users.get(b).copied().unwrap_or(0);
        let e = existing.get(b).copied().unwrap_or(0);
        let base = if e > 0 { 0 } else { full };
        k > 0 && base + k * narrow < k * full
    };
    for id in ids {
        let node = m.node(id).clone();
        match eligible(m, id) {
            Some(b) if saves(&b) => {}
            _ => continue,
        }
        let Some(first) = node.tasks.iter().next() else {
            continue;
        };
        let w = m.params[node.params[0].0 as usize].clone();
        let Some((base, delta)) = store.delta_of(&w.digest).cloned() else {
            continue;
        };
        let Some(zeros) = store.zeros_of(w.shape[0]).cloned() else {
            continue;
        };
        let model = &spec.models[spec.tasks[spec.workload.tasks[first]].base].name;
        let pb = m.intern_param(Param {
            source: model.clone(),
            name: w.name.clone(),
            shape: w.shape.clone(),
            digest: base,
            bits: None,
        });
        let pd = m.intern_param(Param {
            source: w.source.clone(),
            name: format!("{}.delta", w.name),
            shape: w.shape.clone(),
            digest: delta,
            bits: Some(bits),
        });
        let pz = m.intern_param(Param {
            source: model.clone(),
            name: "zeros".into(),
            shape: vec![w.shape[0]],
            digest: zeros,
            bits: None,
        });
        m.graph[id.0].params[0] = pb;
        let x = m.operands(id)[0];
        let out: Vec<_> = m
            .graph
            .edges_directed(id.0, Direction::Outgoing)
            .map(|e| (e.id(), e.target(), *e.weight()))
            .collect();
        for (e, _, _) in &out {
            m.graph.remove_edge(*e);
        }
        let like = |op: Op, params: Vec<ParamId>| Node {
            op,
            params,
            shape: node.shape.clone(),
            tasks: node.tasks,
            layer: node.layer,
            origin: node.origin.clone(),
            loc: node.loc.clone(),
        };
        let d = m.add(like(Op::Linear, vec![pd, pz]), &[x]);
        let sum = m.add(like(Op::Add, vec![]), &[id, d]);
        for (_, target, weight) in out {
            m.graph.add_edge(sum.0, target, weight);
        }
    }
}

/// Every task's budgets on its calibration batch, from the module's own
/// reference outputs.
fn measure_all(
    m: &Module,
    store: &Store,
    calibration: &[&Batch],
    own: &[Array2<f32>],
) -> Result<Vec<Vec<Measured>>, Diags> {
    let spec = &m.spec;
    let plan = Plan::new(m, store)?;
    let mut outs: Vec<(*const Batch, Vec<crate::reference::TaskOutput>)> = Vec::new();
    let mut result = Vec::with_capacity(calibration.len());
    for (t, batch) in calibration.iter().enumerate() {
        let key = *batch as *const Batch;
        let k = match outs.iter().position(|(b, _)| *b == key) {
            Some(k) => k,
            None => {
                outs.push((key, plan.run(batch)));
                outs.len() - 1
            }
        };
        let task = &spec.tasks[spec.workload.tasks[t]];
        let labels: Vec<_> = batch.requests.iter().map(|r| r.label).collect();
        let out = &outs[k].1[t].values;
        result.push(
            task.budgets
                .iter()
                .map(|b| measure(b, &task.head, out, &own[t], &labels))
                .collect(),
        );
    }
    Ok(result)
}

/// Applies area mode to the shared module `m` (see the module docs).
/// `calibration[t]` and `own[t]` are task `t`'s calibration batch and its
/// own model's outputs on it; `energy` gives a module's energy per request.
pub fn apply(
    m: &mut Module,
    store: &Store,
    mode: AreaMode,
    calibration: &[&Batch],
    own: &[Array2<f32>],
    energy: &dyn Fn(&Module) -> Result<f64, Diags>,
) -> Result<AreaReport, Diags> {
    let n = m.spec.workload.tasks.len();
    let before = m.clone();
    let placed = |m: &Module| -> Result<(u64, f64), Diags> {
        let p = crate::place::place(m)?;
        let tiles = p.tile_use.iter().filter(|&&u| u > 0).count();
        Ok((
            p.crossbars_used,
            tiles as f64 * crate::hw::energy::TILE_AREA_MM2,
        ))
    };
    let (crossbars_without, area_without_mm2) = placed(&before)?;
    let energy_without_pj = energy(&before)?;
    let mut accepted = vec![true; n];
    let measured = loop {
        *m = before.clone();
        rewrite(m, store, mode.delta_bits, &accepted);
        super::merge::merge(m);
        super::share::gc_params(m);
        crate::ir::verify::verify(m, "share (area mode)")?;
        let measured = measure_all(m, store, calibration, own)?;
        let failing: Vec<usize> = (0..n)
            .filter(|&t| accepted[t] && measured[t].iter().any(|x| !x.holds))
            .collect();
        if failing.is_empty() {
            break measured;
        }
        for t in failing {
            accepted[t] = false;
        }
    };
    let names = m
        .task_names()
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>();
    let mut tasks = Vec::with_capacity(n);
    for t in 0..n {
        let deltas: Vec<&Param> = m
            .graph
            .node_weights()
            .filter(|nd| matches!(nd.op, Op::Linear) && nd.tasks.iter().any(|x| x == t))
            .map(|nd| &m.params[nd.params[0].0 as usize])
            .filter(|p| p.bits.is_some())
            .collect();
        let (mut zeros, mut total) = (0usize, 0usize);
        for p in &deltas {
            let v = store
                .tensor(&p.digest)
                .map_err(|e| Diags::from(crate::diag::Diagnostic::internal(e)))?;
            zeros += v.iter().filter(|x| **x == 0.0).count();
            total += v.len();
        }
        tasks.push(AreaTask {
            name: names[t].clone(),
            applied: accepted[t] && !deltas.is_empty(),
            kept_whole: if !accepted[t] {
                Some("budget")
            } else if deltas.is_empty() {
                Some("no saving")
            } else {
                None
            },
            delta_matrices: deltas.len(),
            zero_fraction: if total == 0 {
                0.0
            } else {
                zeros as f64 / total as f64
            },
            measured: measured[t].clone(),
        });
    }
    let (crossbars_with, area_with_mm2) = placed(m)?;
    Ok(AreaReport {
        delta_bits: mode.delta_bits,
        crossbars_without,
        crossbars_with,
        area_without_mm2,
        area_with_mm2,
        energy_without_pj,
        energy_with_pj: energy(m)?,
        tasks,
    })
}
