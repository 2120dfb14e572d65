//! The `place` pass: tile every static-weight matrix onto crossbars.
//!
//! A `linear` node with weight `[out, in]` computes `y = W·x`; on a
//! crossbar the `in` inputs drive rows (word lines) and the `out` outputs
//! are read from columns (bit lines). It takes
//! `ceil(in/rows) × ceil(out/cols) × ceil(bits/cell_bits) × signs`
//! crossbars (`signs` = 2 for differential pairs, 1 for offset encoding;
//! `bits` the hardware's `weight_bits`, or the param's own width for area
//! mode's low-bit deltas); when `bits` is not a multiple of `cell_bits`,
//! the top slice holds the remaining bits. Embedding tables, biases and LayerNorm vectors are
//! not MVM operands: they live in tile eDRAM and are read by the digital
//! unit. Shared nodes (used by several tasks) are placed once, and so is a
//! weight several nodes multiply different inputs by (area mode's base
//! matrices): within a phase, the later nodes **reuse** the first one's
//! crossbars (`reuses`), which are programmed once. This holds for the
//! baseline too: tasks with bit-identical matrices (e.g. `drift = 0`)
//! compute separately there, but on one copy of the weights.
//!
//! Crossbars are numbered globally, chip-major then tile, core, crossbar;
//! a matrix takes a contiguous range. When the chip cannot hold every
//! matrix, matrices are packed into **phases** in program order, each phase
//! within capacity; a phase's crossbars are reprogrammed when it starts.
//! Within a phase no two matrices overlap (checked by [`Placement::check`]).
//! A single matrix larger than the whole machine is a diagnostic (E301).

use crate::diag::{Code, Diagnostic, Diags};
use crate::hw::Hardware;
use crate::ir::{Module, NodeId, Op, ParamId};
use serde::Serialize;

/// Where one matrix lives.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatrixPlacement {
    #[serde(skip)]
    pub node: NodeId,
    #[serde(skip)]
    pub param: ParamId,
    /// The IR node as printed (`%k`).
    pub node_name: String,
    pub tensor: String,
    pub tasks: Vec<String>,
    pub in_dim: u64,
    pub out_dim: u64,
    pub row_blocks: u64,
    pub col_blocks: u64,
    pub slices: u64,
    pub signs: u64,
    /// Bits per weight.
    pub bits: u32,
    /// The placement (index into [`Placement::matrices`]) whose crossbars
    /// this one reuses: the same weights, earlier in the same phase.
    pub reuses: Option<usize>,
    pub phase: u32,
    /// First global crossbar index; the matrix occupies `first..first + crossbars`.
    pub first: u64,
    pub crossbars: u64,
    /// Cells holding weights (each programmed once per phase load; 0 for
    /// a reuse).
    pub cells: u64,
}

/// The placement of a module.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Placement {
    pub matrices: Vec<MatrixPlacement>,
    pub phases: u32,
    pub crossbars_available: u64,
    /// Crossbars holding weights, over all phases.
    pub crossbars_used: u64,
    /// Cells programmed to load every phase once.
    pub cells_programmed: u64,
    pub fits: bool,
    /// Per tile of the machine: crossbars in use in the fullest phase.
    #[serde(skip)]
    pub tile_use: Vec<u64>,
}

impl Placement {
    /// Where a global crossbar index is: (chip, tile, core, crossbar).
    pub fn locate(hw: &Hardware, xb: u64) -> (u64, u64, u64, u64) {
        let per_core = hw.crossbars_per_core;
        let per_tile = per_core * hw.cores_per_tile;
        let per_chip = per_tile * hw.tiles;
        (
            xb / per_chip,
            (xb % per_chip) / per_tile,
            (xb % per_tile) / per_core,
            xb % per_core,
        )
    }

    /// Global tile index of a crossbar.
    pub fn tile_of(hw: &Hardware, xb: u64) -> u64 {
        xb / (hw.crossbars_per_core * hw.cores_per_tile)
    }

    /// The placement of one node, if it is a placed matrix.
    pub fn of(&self, node: NodeId) -> Option<&MatrixPlacement> {
        self.matrices.iter().find(|p| p.node == node)
    }

    /// Invariants: every matrix within the machine; no two matrices of one
    /// phase share a crossbar, except a reuse, which has exactly the range
    /// of an earlier matrix of its phase with the same weights.
    pub fn check(&self) -> Result<(), String> {
        for (i, p) in self.matrices.iter().enumerate() {
            if p.first + p.crossbars > self.crossbars_available {
                return Err(format!("{} runs past the machine", p.node_name));
            }
            if let Some(j) = p.reuses {
                let ok = j < i
                    && self.matrices[j].reuses.is_none()
                    && self.matrices[j].param == p.param
                    && self.matrices[j].phase == p.phase
                    && self.matrices[j].first == p.first
                    && self.matrices[j].crossbars == p.crossbars;
                if !ok {
                    return Err(format!("{} reuses crossbars it may not", p.node_name));
                }
            }
        }
        for ph in 0..self.phases {
            let mut ranges: Vec<(u64, u64)> = self
                .matrices
                .iter()
                .filter(|p| p.phase == ph && p.reuses.is_none())
                .map(|p| (p.first, p.first + p.crossbars))
                .collect();
            ranges.sort();
            for w in ranges.windows(2) {
                if w[1].0 < w[0].1 {
                    return Err(format!("two matrices overlap in phase {ph}"));
                }
            }
        }
        Ok(())
    }
}

/// Places every `linear` node of the module.
pub fn place(m: &Module) -> Result<Placement, Diags> {
    let hw = &m.spec.hardware;
    let available = hw.crossbars();
    let order = m
        .canonical_order()
        .ok_or_else(|| Diags::from(Diagnostic::internal("cannot place a cyclic graph")))?;
    let names = m.task_names();
    let mut matrices = Vec::new();
    let mut phase = 0u32;
    let mut next = 0u64;
    for (k, id) in order.iter().enumerate() {
        let n = m.node(*id);
        if !matches!(n.op, Op::Linear) {
            continue;
        }
        let w = n.params[0];
        let shape = &m.params[w].shape;
        let (out_dim, in_dim) = (shape[0], shape[1]);
        let bits = m.params[w].bits.unwrap_or(hw.weight_bits);
        let (rb, cb, sl, sg) = hw.blocks(out_dim, in_dim, bits);
        let tasks: Vec<String> = n
            .tasks
            .iter()
            .filter_map(|t| names.get(t).map(|s| s.to_string()))
            .collect();
        let placed = |reuses: Option<usize>, phase: u32, first: u64, crossbars: u64, cells: u64| {
            MatrixPlacement {
                node: *id,
                param: w,
                node_name: format!("%{k}"),
                tensor: m.params[w].name.clone(),
                tasks: tasks.clone(),
                in_dim,
                out_dim,
                row_blocks: rb,
                col_blocks: cb,
                slices: sl,
                signs: sg,
                bits,
                reuses,
                phase,
                first,
                crossbars,
                cells,
            }
        };
        if let Some(j) = matrices
            .iter()
            .position(|q: &MatrixPlacement| q.param == w && q.phase == phase && q.reuses.is_none())
        {
            let (first, crossbars) = (matrices[j].first, matrices[j].crossbars);
            matrices.push(placed(Some(j), phase, first, crossbars, 0));
            continue;
        }
        let count = rb * cb * sl * sg;
        if count > available {
            let mut d = Diagnostic::error(
                Code::E301,
                format!(
                    "the {out_dim} x {in_dim} matrix `{}` needs {count} crossbars; the whole machine has {available}",
                    m.params[w].name
                ),
            )
            .help("add chips or tiles to the hardware block, or use larger crossbars");
            if let Some(l) = m.spec.loc(&format!("hardware {}", hw.name)) {
                d = d.at(l.file, l.span.clone(), "this hardware");
            }
            return Err(d.into());
        }
        if next + count > available {
            phase += 1;
            next = 0;
        }
        matrices.push(placed(None, phase, next, count, in_dim * out_dim * sl * sg));
        next += count;
    }
    let phases = if matrices.is_empty() { 1 } else { phase + 1 };
    let per_tile = hw.crossbars_per_core * hw.cores_per_tile;
    let tiles = (hw.chips * hw.tiles) as usize;
    let mut tile_use = vec![0u64; tiles];
    for ph in 0..phases {
        let mut use_ph = vec![0u64; tiles];
        for p in matrices
            .iter()
            .filter(|p| p.phase == ph && p.reuses.is_none())
        {
            for xb in p.first..p.first + p.crossbars {
                use_ph[(xb / per_tile) as usize] += 1;
            }
        }
        for (t, u) in use_ph.into_iter().enumerate() {
            tile_use[t] = tile_use[t].max(u);
        }
    }
    let placement = Placement {
        crossbars_used: matrices
            .iter()
            .filter(|p| p.reuses.is_none())
            .map(|p| p.crossbars)
            .sum(),
        cells_programmed: matrices.iter().map(|p| p.cells).sum(),
        fits: phases == 1,
        matrices,
        phases,
        crossbars_available: available,
        tile_use,
    };
    placement.check().map_err(|e| {
        Diags::from(Diagnostic::internal(format!(
            "placement invariant broken: {e}"
        )))
    })?;
    Ok(placement)
}

/// The placement as a readable report (`--emit placement`).
pub fn text(m: &Module, p: &Placement) -> String {
    let hw = &m.spec.hardware;
    let mut s = String::new();
    s.push_str(&format!(
        "placement on `{}`: {} x {} crossbars, {} bits/cell, {}-bit weights, {} signs\n",
        hw.name,
        hw.rows,
        hw.cols,
        hw.cell_bits,
        hw.weight_bits,
        hw.signs.name()
    ));
    s.push_str(&format!(
        "machine: {} chip(s) x {} tiles x {} cores x {} crossbars = {} crossbars\n",
        hw.chips, hw.tiles, hw.cores_per_tile, hw.crossbars_per_core, p.crossbars_available
    ));
    let used_tiles = p.tile_use.iter().filter(|&&u| u > 0).count();
    let per_tile = hw.crossbars_per_core * hw.cores_per_tile;
    s.push_str(&format!(
        "crossbars used: {} ({:.1}% of the machine{}), cells programmed: {}, tiles in use: {}, mean tile utilisation {:.1}%\n",
        p.crossbars_used,
        100.0 * p.crossbars_used as f64 / p.crossbars_available as f64,
        if p.fits { "" } else { ", over all phases" },
        p.cells_programmed,
        used_tiles,
        if used_tiles == 0 { 0.0 } else { 100.0 * p.tile_use.iter().sum::<u64>() as f64 / (used_tiles as u64 * per_tile) as f64 }
    ));
    if p.fits {
        s.push_str("fits: yes (one phase: every matrix is programmed once)\n");
    } else {
        s.push_str(&format!(
            "fits: no — {} phases; each phase's crossbars are reprogrammed when it starts\n",
            p.phases
        ));
    }
    s.push_str(&format!(
        "\n{:<7} {:<52} {:>11} {:>6} {:>9} {:>6} {:>16}  tasks\n",
        "node", "tensor", "in x out", "blocks", "crossbars", "phase", "crossbar range"
    ));
    for q in &p.matrices {
        s.push_str(&format!(
            "{:<7} {:<52} {:>11} {:>6} {:>9} {:>6} {:>16}  {}\n",
            q.node_name,
            q.tensor,
            format!("{}x{}", q.in_dim, q.out_dim),
            format!("{}x{}", q.row_blocks, q.col_blocks),
            q.crossbars,
            q.phase,
            match q.reuses {
                Some(j) => format!("reuses {}", p.matrices[j].node_name),
                None => format!("{}..{}", q.first, q.first + q.crossbars),
            },
            q.tasks.join(",")
        ));
    }
    s
}

/// The placement as JSON (`--emit placement --json`).
pub fn json(p: &Placement) -> serde_json::Value {
    serde_json::json!({
        "crossbars_used": p.crossbars_used,
        "crossbars_available": p.crossbars_available,
        "cells_programmed": p.cells_programmed,
        "phases": p.phases,
        "fits": p.fits,
        "tiles_in_use": p.tile_use.iter().filter(|&&u| u > 0).count(),
        "matrices": p.matrices,
    })
}
