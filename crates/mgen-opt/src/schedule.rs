//! `schedule`: the task scheduler — the order of (phase, request group)
//! work, activation lifetimes, where activations wait between phases, and
//! the reprogramming events.
//!
//! Within a phase, each request runs the phase's nodes in the IR's
//! canonical order, so a request's trunk runs once and feeds its branches
//! (a node of a shared trunk is one node). A buffer lives from the step
//! that writes it to the last step that reads it; its value is released
//! then. A value read in a later phase is **parked** at the end of its
//! phase and brought back where it is read.
//!
//! When the placement has one phase, every crossbar is programmed once and
//! all requests run in one loop: nothing is parked. When the chip cannot
//! hold every matrix (several phases), each phase's crossbars are
//! reprogrammed whenever the phase runs. The scheduler then chooses the
//! **request group** `g`: requests run `g` at a time through every phase,
//! so crossbars are written `ceil(R/g)` times per phase, and the parked
//! activations of `g` requests wait between phases — in the tiles' eDRAM
//! when they fit next to one request's live buffers, off-chip otherwise
//! (charged per chip-link transfer). Its objective is the energy the two
//! differ in: cell writes plus parking traffic. For a fixed parking level
//! the energy falls with `g`, so the optimum is either the largest `g`
//! whose parked activations fit in eDRAM or `g = R`; both are candidates,
//! with powers of two and the naive request-by-request order (`g = 1`)
//! for the report. `tests/schedule.rs` checks the choice against every `g`
//! by the counting simulator.
//!
//! Given a [`TimingOracle`] (the back end's overlapping timing model, which
//! generates each candidate's program and list-schedules it), the scheduler
//! also times every candidate and picks, among those whose scheduling
//! energy is within the workload's `makespan_tolerance` (default 1%) of
//! the least, the one with the
//! shortest makespan (then the least energy, then the larger group). With
//! one phase there is one order, and it is timed for the report. Without an
//! oracle (a bare [`Context`]) the choice is the energy optimum alone.
//!
//! Requires: a verified, placed module (`place` ran). Ensures: the
//! schedule covers every request exactly once per phase;
//! [`Module::schedule`] holds it; codegen follows it.

use super::{Context, Pass};
use crate::diag::{Diagnostic, Diags};
use crate::hw::energy::spill_pj;
use crate::ir::{Module, NodeId, Op};
use crate::place::Placement;
use serde::Serialize;
use std::collections::HashMap;

/// The pass (named `schedule`).
pub struct SchedulePass;

impl Pass for SchedulePass {
    fn name(&self) -> &'static str {
        "schedule"
    }
    fn description(&self) -> &'static str {
        "task scheduler: per request trunk then branches; under capacity pressure, the request grouping and parking level that minimise cell writes plus parking traffic"
    }
    fn contract(&self) -> &'static str {
        "requires a placed module; ensures every request runs every phase once, and buffers park in eDRAM only when they fit"
    }
    fn requires(&self) -> &'static [super::Artifact] {
        &[super::Artifact::Placement]
    }
    fn provides(&self) -> &'static [super::Artifact] {
        &[super::Artifact::Schedule]
    }
    fn run(&self, m: &mut Module, arts: &mut super::Artifacts, cx: &Context) -> Result<(), Diags> {
        let p = arts
            .placement
            .as_ref()
            .ok_or_else(|| bug("the pipeline ran `schedule` without a placement"))?;
        arts.schedule = Some(schedule_timed(m, p, cx.timing)?);
        Ok(())
    }
}

/// A candidate's figures from the overlapping timing model
/// (`mgen_isa::timing`), each as in its `Timing`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Timed {
    /// One request on the programmed, otherwise empty chip (ns).
    pub latency_ns: f64,
    /// Requests per second once the chip is first programmed.
    pub throughput_per_s: f64,
    /// The whole batch, every reprogramming included (ns).
    pub makespan_ns: f64,
}

/// How long a schedule takes, for `schedule`: the optimiser sees no
/// programs, so it asks (`mgen_backend::Counting` answers by generating
/// the program the schedule implies and list-scheduling it).
pub trait TimingOracle: Sync {
    /// The figures of module `m`, placed as `p`, run as `s` says.
    fn timing(&self, m: &Module, p: &Placement, s: &Schedule) -> Timed;
}

/// One grouping the scheduler weighed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Candidate {
    pub name: String,
    /// Requests per group.
    pub group: usize,
    /// Parked activations wait in eDRAM (else off-chip).
    pub edram: bool,
    /// Phase loads over the run.
    pub reprogrammings: usize,
    pub cell_writes: f64,
    pub write_pj: f64,
    pub parking_pj: f64,
    pub total_pj: f64,
    /// Its timing, when the scheduler had a [`TimingOracle`].
    pub timing: Option<Timed>,
}

/// A buffer's lifetime within its phase's body (steps of one request).
#[derive(Debug, Clone, Serialize)]
pub struct Lifetime {
    /// The node as printed (`%k`).
    pub node: String,
    pub phase: u32,
    pub first: usize,
    /// The last step that reads it in its phase (`first` if none).
    pub last: usize,
    pub bytes: u64,
    /// Read in a later phase: parked at the end of its phase.
    pub parked: bool,
    /// Steps of its phase that read it.
    pub uses: Vec<usize>,
    /// Evicted off chip between its uses (one request's live buffers would
    /// not fit in eDRAM otherwise).
    pub evicted: bool,
}

/// The schedule.
#[derive(Debug, Clone, Serialize)]
pub struct Schedule {
    pub requests: usize,
    /// The workload's `makespan_tolerance` (percent).
    pub tolerance_pct: f64,
    pub phases: u32,
    /// Requests per group (the chosen candidate's).
    pub group: usize,
    /// Parked activations wait in eDRAM.
    pub edram: bool,
    /// eDRAM over every tile of every chip, bytes.
    pub capacity_bytes: u64,
    /// Most bytes one request holds live at once within a phase, after
    /// evictions.
    pub peak_live_bytes: u64,
    /// The same before evictions.
    pub peak_before_evictions: u64,
    /// Buffers kept off chip between their producer and each use, so that
    /// one request's live buffers fit in eDRAM (codegen emits `SPILL` after
    /// the producer and `FILL` before each use, charged on the chip links).
    #[serde(skip)]
    pub evict: Vec<NodeId>,
    /// Bytes over the eDRAM when even evicting every waiting buffer would
    /// not fit one request (an op's own operands and result are larger than
    /// the eDRAM; nothing is evicted then). 0 when it fits.
    pub overflow_bytes: u64,
    /// Most bytes one request parks across a phase boundary.
    pub parked_bytes_per_request: u64,
    /// Parks plus fetches per request.
    pub parking_moves_per_request: usize,
    /// Cells written to load every phase once.
    pub cells_per_load: u64,
    pub chosen: Candidate,
    pub candidates: Vec<Candidate>,
    /// (group first request, count, phase) in execution order.
    pub order: Vec<(usize, usize, u32)>,
    pub lifetimes: Vec<Lifetime>,
}

fn bug(msg: &str) -> Diags {
    Diagnostic::internal(msg.to_string()).into()
}

/// The phase each node runs in under placement `p`: its matrix's, or its
/// latest operand's (`order` is topological). Codegen uses it too.
pub fn phases_of(m: &Module, p: &Placement, order: &[NodeId]) -> HashMap<NodeId, u32> {
    let mut phase: HashMap<NodeId, u32> = HashMap::new();
    for id in order {
        let own = p.of(*id).map(|mp| mp.phase).unwrap_or(0);
        let from_ops = m
            .operands(*id)
            .iter()
            .map(|o| phase.get(o).copied().unwrap_or(0))
            .max()
            .unwrap_or(0);
        phase.insert(*id, own.max(from_ops));
    }
    phase
}

/// [`schedule`], then each candidate timed by `oracle` and the pick
/// weighed by makespan (see the module docs); `oracle = None` is
/// [`schedule`].
pub fn schedule_timed(
    m: &Module,
    p: &Placement,
    oracle: Option<&dyn TimingOracle>,
) -> Result<Schedule, Diags> {
    let mut s = schedule(m, p)?;
    let Some(oracle) = oracle else {
        return Ok(s);
    };
    for i in 0..s.candidates.len() {
        let c = s.candidates[i].clone();
        s.candidates[i].timing = Some(oracle.timing(m, p, &s.with(&c)));
    }
    let least = s
        .candidates
        .iter()
        .map(|c| c.total_pj)
        .fold(f64::INFINITY, f64::min);
    let makespan = |c: &Candidate| c.timing.map_or(f64::INFINITY, |t| t.makespan_ns);
    let tolerance = m.spec.workload.makespan_tolerance_pct / 100.0;
    let pick = s
        .candidates
        .iter()
        .filter(|c| c.total_pj <= least + least.abs() * tolerance)
        .min_by(|a, b| {
            makespan(a)
                .total_cmp(&makespan(b))
                .then(a.total_pj.total_cmp(&b.total_pj))
                .then(b.group.cmp(&a.group))
        })
        .cloned()
        .ok_or_else(|| bug("the scheduler weighed no candidate"))?;
    Ok(s.with(&pick))
}

impl Schedule {
    /// The same schedule with candidate `c` chosen: its grouping, parking
    /// level and execution order.
    pub fn with(&self, c: &Candidate) -> Schedule {
        let mut s = self.clone();
        s.group = if s.phases > 1 { c.group } else { s.requests };
        s.edram = c.edram;
        s.chosen = c.clone();
        s.order = execution_order(s.requests, s.group, s.phases);
        s
    }
}

/// (group first request, count, phase) in execution order.
fn execution_order(requests: usize, group: usize, phases: u32) -> Vec<(usize, usize, u32)> {
    let mut order = Vec::new();
    for first in (0..requests).step_by(group.max(1)) {
        for ph in 0..phases.max(1) {
            order.push((first, group.min(requests - first), ph));
        }
    }
    order
}

/// Computes the schedule of a module placed as `p`.
pub fn schedule(m: &Module, p: &Placement) -> Result<Schedule, Diags> {
    let hw = &m.spec.hardware;
    let order = m
        .canonical_order()
        .ok_or_else(|| bug("the graph has a cycle"))?;
    let pos: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let phase = phases_of(m, p, &order);
    let bytes = |id: NodeId| m.node(id).shape.iter().product::<u64>() * 4;
    // Steps within each phase body; lifetimes.
    let mut step: HashMap<NodeId, usize> = HashMap::new();
    let mut counts = vec![0usize; p.phases.max(1) as usize];
    for id in &order {
        if matches!(m.node(*id).op, Op::Output { .. }) {
            continue;
        }
        let ph = phase[id] as usize;
        step.insert(*id, counts[ph]);
        counts[ph] += 1;
    }
    let mut lifetimes = Vec::new();
    let mut ids: Vec<NodeId> = Vec::new();
    // Per parked buffer: (made in, last read in, elems, moves = 1 SPILL + a FILL per later phase).
    let mut parked_elems: Vec<(u32, u32, f64, usize)> = Vec::new();
    let mut moves = 0usize;
    for id in &order {
        let Some(&first) = step.get(id) else { continue };
        let ph = phase[id];
        let users = m.users(*id);
        let last = users
            .iter()
            .filter(|u| phase[u] == ph)
            .filter_map(|u| step.get(u))
            .copied()
            .max()
            .unwrap_or(first);
        let later: std::collections::BTreeSet<u32> =
            users.iter().map(|u| phase[u]).filter(|&q| q > ph).collect();
        let parked = !later.is_empty();
        let mut uses: Vec<usize> = users
            .iter()
            .filter(|u| phase[u] == ph)
            .filter_map(|u| step.get(u))
            .copied()
            .collect();
        uses.sort_unstable();
        uses.dedup();
        if parked {
            let elems = m.node(*id).shape.iter().product::<u64>() as f64;
            parked_elems.push((
                ph,
                *later.iter().next_back().unwrap_or(&ph),
                elems,
                1 + later.len(),
            ));
            moves += 1 + later.len();
        }
        lifetimes.push(Lifetime {
            node: format!("%{}", pos[id]),
            phase: ph,
            first,
            last,
            bytes: bytes(*id),
            parked,
            uses,
            evicted: false,
        });
        ids.push(*id);
    }
    // Peak live bytes of one request within a phase body (a parked value
    // stays live to the end of its phase; an evicted one only at the steps
    // that make or read it).
    let peak_of = |lifetimes: &[Lifetime]| -> u64 {
        let mut peak = 0u64;
        for ph in 0..p.phases.max(1) {
            let n = counts[ph as usize];
            let mut delta = vec![0i64; n + 1];
            for l in lifetimes.iter().filter(|l| l.phase == ph) {
                if l.evicted {
                    for &s in std::iter::once(&l.first).chain(&l.uses) {
                        delta[s] += l.bytes as i64;
                        delta[s + 1] -= l.bytes as i64;
                    }
                    continue;
                }
                let end = if l.parked {
                    n.saturating_sub(1)
                } else {
                    l.last
                };
                delta[l.first] += l.bytes as i64;
                delta[end + 1] -= l.bytes as i64;
            }
            let mut live = 0i64;
            for d in delta {
                live += d;
                peak = peak.max(live.max(0) as u64);
            }
        }
        peak
    };
    let capacity = hw.tile_buffer * hw.tiles * hw.chips;
    let peak_before = peak_of(&lifetimes);
    let mut peak = peak_before;
    // One request's live buffers must fit in eDRAM: evict the buffers that
    // wait longest (bytes x steps) between their producer and a later use
    // until they do.
    if peak > capacity {
        let mut cands: Vec<usize> = (0..lifetimes.len())
            .filter(|&i| !lifetimes[i].parked && lifetimes[i].last > lifetimes[i].first + 1)
            .collect();
        cands.sort_by_key(|&i| {
            let l = &lifetimes[i];
            (std::cmp::Reverse(l.bytes * (l.last - l.first) as u64), i)
        });
        // Only when evictions can make it fit: otherwise an op's own inputs
        // and output exceed the eDRAM, and the overflow is reported.
        let mut all = lifetimes.clone();
        for &i in &cands {
            all[i].evicted = true;
        }
        if peak_of(&all) <= capacity {
            for i in cands {
                if peak <= capacity {
                    break;
                }
                lifetimes[i].evicted = true;
                peak = peak_of(&lifetimes);
            }
        }
    }
    let evict: Vec<NodeId> = (0..lifetimes.len())
        .filter(|&i| lifetimes[i].evicted)
        .map(|i| ids[i])
        .collect();
    // Bytes parked across each boundary k | k+1.
    let mut parked_max = 0u64;
    for k in 0..p.phases.saturating_sub(1) {
        let b: f64 = parked_elems
            .iter()
            .filter(|(made, last, _, _)| *made <= k && *last > k)
            .map(|(_, _, e, _)| e * 4.0)
            .sum();
        parked_max = parked_max.max(b as u64);
    }
    let requests = m.spec.workload.requests as usize;
    let cells: u64 = p.matrices.iter().map(|mp| mp.cells).sum();
    let per_request_parking = |edram: bool| -> f64 {
        parked_elems
            .iter()
            .map(|&(_, _, elems, moves)| moves as f64 * spill_pj(hw, elems, edram))
            .fold(0.0, |a, e| a + e)
    };
    let fits_edram = |g: usize| -> bool {
        parked_max > 0 && (g as u64).saturating_mul(parked_max) + peak <= capacity
    };
    let candidate = |name: &str, g: usize, edram: bool| -> Candidate {
        let loads = if p.phases > 1 {
            requests.div_ceil(g.max(1))
        } else {
            1
        };
        let cell_writes = (loads as u64 * cells) as f64;
        let write_pj = cell_writes * hw.figure("cell_write");
        let parking_pj = requests as f64 * per_request_parking(edram);
        Candidate {
            name: name.to_string(),
            group: g,
            edram,
            reprogrammings: loads * p.phases.max(1) as usize,
            cell_writes,
            write_pj,
            parking_pj,
            total_pj: write_pj + parking_pj,
            timing: None,
        }
    };
    let mut candidates = Vec::new();
    if p.phases > 1 {
        candidates.push(candidate("request by request (naive)", 1, fits_edram(1)));
        let mut g = 2;
        while g < requests {
            candidates.push(candidate(&format!("groups of {g}"), g, fits_edram(g)));
            g *= 2;
        }
        // The largest group whose parked activations fit in eDRAM.
        if parked_max > 0 && capacity > peak {
            let gmax = (((capacity - peak) / parked_max) as usize).min(requests);
            if gmax >= 1 && !candidates.iter().any(|c| c.group == gmax) {
                candidates.push(candidate(
                    &format!("largest eDRAM group ({gmax})"),
                    gmax,
                    true,
                ));
            }
        }
    }
    candidates.push(candidate("all requests", requests, fits_edram(requests)));
    let chosen = candidates
        .iter()
        .cloned()
        .min_by(|a, b| {
            a.total_pj
                .total_cmp(&b.total_pj)
                .then(b.group.cmp(&a.group))
        })
        .unwrap_or_else(|| candidate("all requests", requests, false));
    let group = if p.phases > 1 { chosen.group } else { requests };
    let order_steps = execution_order(requests, group, p.phases);
    Ok(Schedule {
        requests,
        tolerance_pct: m.spec.workload.makespan_tolerance_pct,
        phases: p.phases,
        group,
        edram: chosen.edram,
        capacity_bytes: capacity,
        peak_live_bytes: peak,
        peak_before_evictions: peak_before,
        evict,
        overflow_bytes: peak.saturating_sub(capacity),
        parked_bytes_per_request: parked_max,
        parking_moves_per_request: moves,
        cells_per_load: cells,
        chosen,
        candidates,
        order: order_steps,
        lifetimes,
    })
}

/// The schedule as text.
pub fn text(s: &Schedule) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "schedule: {} requests, {} phase(s); groups of {} request(s); parked activations in {}",
        s.requests,
        s.phases,
        s.group,
        if s.parked_bytes_per_request == 0 {
            "(none: nothing crosses a phase)"
        } else if s.edram {
            "eDRAM"
        } else {
            "off-chip memory"
        }
    );
    let _ = writeln!(
        o,
        "buffers: peak {} B live per request; {} B parked per request across a phase boundary; eDRAM {} B",
        s.peak_live_bytes, s.parked_bytes_per_request, s.capacity_bytes
    );
    if !s.evict.is_empty() {
        let _ = writeln!(
            o,
            "evictions: {} buffer(s) kept off chip between uses (peak {} B before){}",
            s.evict.len(),
            s.peak_before_evictions,
            if s.overflow_bytes > 0 {
                format!("; still {} B over the eDRAM", s.overflow_bytes)
            } else {
                String::new()
            }
        );
    } else if s.overflow_bytes > 0 {
        let _ = writeln!(
            o,
            "overflow: {} B live at the peak do not fit the eDRAM (nothing could be kept off chip)",
            s.overflow_bytes
        );
    }
    let timed = s.candidates.iter().all(|c| c.timing.is_some());
    let _ = write!(
        o,
        "\n{:<30} {:>7} {:>6} {:>8} {:>16} {:>14} {:>14} {:>14}",
        "order", "group", "eDRAM", "loads", "cell writes", "writes uJ", "parking uJ", "total uJ"
    );
    if timed {
        let _ = write!(
            o,
            " {:>14} {:>12} {:>14}",
            "makespan us", "latency us", "throughput/s"
        );
    }
    let _ = writeln!(o);
    for c in &s.candidates {
        let _ = write!(
            o,
            "{:<30} {:>7} {:>6} {:>8} {:>16.0} {:>14.3} {:>14.3} {:>14.3}",
            c.name,
            c.group,
            if c.edram { "yes" } else { "no" },
            c.reprogrammings,
            c.cell_writes,
            c.write_pj * 1e-6,
            c.parking_pj * 1e-6,
            c.total_pj * 1e-6,
        );
        if let (true, Some(t)) = (timed, c.timing) {
            let _ = write!(
                o,
                " {:>14.3} {:>12.3} {:>14.1}",
                t.makespan_ns * 1e-3,
                t.latency_ns * 1e-3,
                t.throughput_per_s
            );
        }
        let _ = writeln!(o, "{}", if *c == s.chosen { "  <- chosen" } else { "" });
    }
    let _ = writeln!(
        o,
        "chosen: {}",
        if timed {
            format!(
                "the shortest makespan among the orders within {}% of the least scheduling energy",
                s.tolerance_pct
            )
        } else {
            "the least scheduling energy (no timing model in this context)".to_string()
        }
    );
    let _ = writeln!(o, "\nexecution order (first request, count, phase):");
    let shown = s.order.len().min(12);
    for (a, n, ph) in &s.order[..shown] {
        let _ = writeln!(o, "  requests {a}..{}  phase {ph}", a + n);
    }
    if s.order.len() > shown {
        let _ = writeln!(o, "  ... {} more", s.order.len() - shown);
    }
    o
}
