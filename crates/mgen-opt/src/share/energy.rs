//! Energy per request of a module's program, asked of an
//! [`EnergyOracle`] (the back end's counting model), and the figures of the generated tree: shared,
//! and unshared (every task running its own model), with area mode applied
//! when the workload asks for it ([`of_tree`]).
//!
//! Invariants: the figures exclude programming (only the per-request
//! loop's work counts); the unshared figure never includes what area mode
//! adds (it is taken before area mode rewrites the module).

use super::inputs::Inputs;
use crate::data::Batch;
use crate::diag::Diags;
use crate::ir::Module;
use crate::weights::Store;
use ndarray::Array2;
use std::collections::HashMap;

/// Energy per request of a module's program (the counting simulator's
/// per-request work, so programming is excluded); the same work if every
/// task ran its own copy of every node (the unshared model: each node
/// costs the same for each task it serves; the request inputs are loaded
/// once either way); and each task's own energy per (task, layer).
pub type Energies = (f64, f64, HashMap<(String, String), f64>);

/// The energy figures the optimiser weighs, from the back end's counting
/// model: the optimiser sees neither programs nor what an instruction
/// costs, so it asks (`mgen_backend::Counting` answers).
pub trait EnergyOracle: Sync {
    /// See [`Energies`]. `m` must not be scheduled yet (`share` runs before
    /// `schedule`): request groups would repeat each phase's lines.
    fn per_request_energy(
        &self,
        m: &Module,
        store: &Store,
        batch: &Batch,
    ) -> Result<Energies, Diags>;
}

/// The generated tree's energy figures (pJ per request).
pub(super) struct Figures {
    /// Area mode's report, when the workload asks for it.
    pub area: Option<crate::area::AreaReport>,
    pub unshared_pj: f64,
    pub shared_pj: f64,
    /// Each task's own energy per (task, layer).
    pub per_task_layer: HashMap<(String, String), f64>,
}

/// Applies the workload's area mode to the rewritten module `m`, if it asks
/// for it, and measures the figures on the workload's first batch.
pub(super) fn of_tree(
    m: &mut Module,
    w: &Inputs,
    own: &[Array2<f32>],
    oracle: &dyn EnergyOracle,
) -> Result<Figures, Diags> {
    let (store, batch) = (w.store, w.batches[0]);
    let per_request_energy = |m: &Module, store, batch| oracle.per_request_energy(m, store, batch);
    let before_area = m.clone();
    let area = match w.spec.workload.area {
        Some(mode) => {
            let cal: Vec<&Batch> = (0..w.n()).map(|t| w.calibration(t)).collect();
            let energy = |m: &Module| per_request_energy(m, store, batch).map(|e| e.0);
            Some(crate::area::apply(m, store, mode, &cal, own, &energy)?)
        }
        None => None,
    };
    // The unshared figure is every task running its own model, whatever
    // area mode adds (computed before it).
    let unshared_pj = match &area {
        Some(_) => per_request_energy(&before_area, store, batch)?.1,
        None => 0.0,
    };
    let (shared_pj, unshared_after, per_task_layer) = per_request_energy(m, store, batch)?;
    let unshared_pj = if area.is_some() {
        unshared_pj
    } else {
        unshared_after
    };
    Ok(Figures {
        area,
        unshared_pj,
        shared_pj,
        per_task_layer,
    })
}
