//! The counting energy model as the optimiser's [`EnergyOracle`]: a
//! candidate module is placed, compiled (nothing calibrated or quantised)
//! and each instruction of the per-request loop charged by
//! [`mgen_isa::cost::cost`], the function counting and functional
//! simulation also use — so the generator weighs exactly what the
//! simulator will report. It is also the scheduler's [`TimingOracle`]: a
//! schedule's program is generated the same way and list-scheduled by
//! [`mgen_isa::timing::brief`], the model `mgen run` reports.

use crate::data::Batch;
use crate::diag::Diags;
use crate::ir::Module;
use crate::passes::schedule::{Schedule, Timed, TimingOracle};
use crate::passes::{EnergyOracle, share::Energies};
use crate::place::Placement;
use crate::weights::Store;
use mgen_isa::cost::cost;
use mgen_isa::isa::Inst;
use std::collections::HashMap;

/// The counting model (see the module docs).
pub struct Counting;

impl EnergyOracle for Counting {
    fn per_request_energy(
        &self,
        m: &Module,
        store: &Store,
        batch: &Batch,
    ) -> Result<Energies, Diags> {
        let pkg =
            crate::program::package(m, &crate::passes::Artifacts::default(), store, batch, true)?;
        let mut by = HashMap::new();
        let (mut shared, mut unshared) = (0.0, 0.0);
        let mut in_loop = false;
        for line in &pkg.prog.code {
            match line.inst {
                Inst::ForRequests => in_loop = true,
                Inst::End => in_loop = false,
                _ => {}
            }
            if !in_loop {
                continue;
            }
            let c = cost(&line.inst, &pkg.prog, &pkg.hw).total();
            shared += c;
            if line.layer == "input" || line.tasks.is_empty() {
                unshared += c;
                continue;
            }
            unshared += c * line.tasks.len() as f64;
            for t in &line.tasks {
                *by.entry((t.clone(), line.layer.clone())).or_insert(0.0) += c;
            }
        }
        Ok((shared, unshared, by))
    }
}

impl TimingOracle for Counting {
    fn timing(&self, m: &Module, p: &Placement, s: &Schedule) -> Timed {
        let prog = crate::codegen::codegen(m, p, Some(s), &HashMap::new());
        let (latency_ns, throughput_per_s, makespan_ns) =
            mgen_isa::timing::brief(&prog, &m.spec.hardware, s.requests);
        Timed {
            latency_ns,
            throughput_per_s,
            makespan_ns,
        }
    }
}
