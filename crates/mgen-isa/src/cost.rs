//! The energy and latency model: what every instruction is charged.
//!
//! All figures come from [`crate::hw::energy::TABLE`] (per operation) or the
//! hardware block's overrides. Counting mode and functional mode call the
//! same function, so they report the same energy by construction. See
//! `docs/isa.md` for the per-instruction formulas.

use crate::hw::Hardware;
use crate::isa::{DmmKind, Inst, Program, VecOp};

/// Element operations a tile's digital unit completes per digital cycle.
pub const DIGITAL_LANES: f64 = 64.0;
use crate::hw::energy::buffer_accesses as accesses;
pub use crate::hw::energy::{TILE_AREA_MM2, spill_pj};

/// Energy components, in report order.
pub const COMPONENTS: &[&str] = &[
    "adc",
    "dac",
    "crossbar_read",
    "shift_add",
    "cell_write",
    "buffers",
    "digital",
    "interconnect",
];

/// The cost of one execution of one instruction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cost {
    /// pJ, indexed like [`COMPONENTS`].
    pub energy: [f64; 8],
    pub latency_ns: f64,
    /// ADC conversions (for reports).
    pub conversions: f64,
    /// Cells written.
    pub cell_writes: f64,
}

impl Cost {
    pub fn total(&self) -> f64 {
        self.energy.iter().sum()
    }
}

/// The ADC energy per conversion at the hardware's resolution: the table's
/// 8-bit figure (or the override), or, for other resolutions without an
/// override, interpolated in bits through ISAAC's 4-, 8- and 10-bit points.
pub fn adc_energy(hw: &Hardware) -> f64 {
    if let Some(v) = hw.overrides.get("adc") {
        return *v;
    }
    let pts = [(4.0, 0.79), (8.0, 1.67), (10.0, 2.38)];
    let b = hw.adc_bits as f64;
    let (a, c) = if b <= 8.0 {
        (pts[0], pts[1])
    } else {
        (pts[1], pts[2])
    };
    (a.1 + (b - a.0) * (c.1 - a.1) / (c.0 - a.0)).max(0.05)
}

fn elems(s: &[u64]) -> f64 {
    s.iter().product::<u64>() as f64
}

/// What `inst` costs once (per request inside `FOR_REQUESTS`).
pub fn cost(inst: &Inst, p: &Program, hw: &Hardware) -> Cost {
    let f = |n: &str| hw.figure(n);
    let mut c = Cost::default();
    let buf = |b: u32| {
        p.buffers
            .get(b as usize)
            .map(|s| s.as_slice())
            .unwrap_or(&[])
    };
    let tb = f("tile_buffer");
    let digital = |c: &mut Cost, adds: f64, muls: f64, divs: f64, luts: f64| {
        c.energy[6] +=
            adds * f("alu_add") + muls * f("alu_mul") + divs * f("alu_div") + luts * f("alu_lut");
        c.latency_ns += (adds + muls + divs + luts) / DIGITAL_LANES * f("digital_cycle");
    };
    match inst {
        Inst::Phase(_)
        | Inst::ForRequests
        | Inst::ForGroup { .. }
        | Inst::End
        | Inst::Barrier
        | Inst::Halt => {}
        Inst::XbProgram(i) => {
            if let Some(img) = p.images.get(*i as usize) {
                let (rb, cb, sl, sg) = hw.blocks(img.out_dim, img.in_dim, img.wbits);
                let cells = (img.in_dim * img.out_dim * sl * sg) as f64;
                c.cell_writes = cells;
                c.energy[4] = cells * f("cell_write");
                c.latency_ns = f("array_write")
                    * ((rb * cb * sl * sg) as f64 / img.tiles.max(1) as f64).ceil();
            }
        }
        Inst::Load { dst, .. } | Inst::Store { src: dst, .. } => {
            c.energy[5] = accesses(elems(buf(*dst)) * 32.0) * tb;
        }
        Inst::Embed { dst, .. } => {
            let n = elems(buf(*dst));
            c.energy[5] = accesses(3.0 * n * 32.0) * tb + accesses(n * 32.0) * tb;
            digital(&mut c, 2.0 * n, 0.0, 0.0, 0.0);
        }
        Inst::LayerNorm { dst, .. } => {
            let s = buf(*dst);
            let n = elems(s);
            let rows = n / (*s.last().unwrap_or(&1)).max(1) as f64;
            c.energy[5] = accesses(2.0 * n * 32.0) * tb;
            digital(&mut c, 3.0 * n, 2.0 * n, rows, rows);
        }
        Inst::Send { src, tiles } => {
            let n = elems(buf(*src));
            c.energy[7] = *tiles as f64 * accesses(n * hw.input_bits as f64) * f("noc_flit");
            c.latency_ns = accesses(n * hw.input_bits as f64) * f("digital_cycle");
        }
        Inst::Mvm { src, image, .. } => {
            let Some(img) = p.images.get(*image as usize) else {
                return c;
            };
            let s = buf(*src);
            let tokens = if s.len() > 1 {
                elems(&s[..s.len() - 1])
            } else {
                1.0
            };
            let (rb, cb, sl, sg) = hw.blocks(img.out_dim, img.in_dim, img.wbits);
            let (rb, cb, sl, sg) = (rb as f64, cb as f64, sl as f64, sg as f64);
            let cycles = (hw.input_bits as f64 / hw.dac_bits as f64).ceil();
            let (ind, outd) = (img.in_dim as f64, img.out_dim as f64);
            let conv = cycles * outd * rb * sl * sg;
            let size = (hw.rows * hw.cols) as f64 / 16384.0;
            c.conversions = tokens * conv;
            c.energy[0] = tokens * conv * adc_energy(hw);
            c.energy[1] = tokens * cycles * ind * cb * sl * sg * f("dac");
            c.energy[2] = tokens * cycles * rb * cb * sl * sg * f("crossbar_read") * size;
            c.energy[3] = tokens * conv * f("shift_add");
            c.energy[5] =
                tokens * (accesses(ind * hw.input_bits as f64) + accesses(outd * 32.0)) * tb;
            let adds = tokens * outd * (rb * sl * sg + 1.0);
            // The rescale of each output, and the smoothing of each input.
            let muls = tokens * (outd + ind);
            c.energy[6] = adds * f("alu_add") + muls * f("alu_mul");
            c.latency_ns = tokens * cycles * f("crossbar_cycle")
                + (adds + muls) / DIGITAL_LANES * f("digital_cycle");
        }
        Inst::Dmm { a, b, kind, .. } => {
            let (sa, sb) = (buf(*a), buf(*b));
            let macs = match kind {
                DmmKind::Qk => sa.first().copied().unwrap_or(0) as f64 * elems(sa),
                DmmKind::Av => sa.get(2).copied().unwrap_or(0) as f64 * elems(sb),
            };
            c.energy[5] = accesses((elems(sa) + elems(sb)) * 32.0) * tb;
            digital(&mut c, macs, macs, 0.0, 0.0);
        }
        Inst::Vec { dst, op, b, .. } => {
            let s = buf(*dst);
            let n = elems(s);
            let rows = n / (*s.last().unwrap_or(&1)).max(1) as f64;
            let inputs = if b.is_some() { 2.0 } else { 1.0 };
            c.energy[5] = accesses((inputs + 1.0) * n * 32.0) * tb;
            match op {
                VecOp::Add => digital(&mut c, n, 0.0, 0.0, 0.0),
                VecOp::Scale(_) => digital(&mut c, 0.0, n, 0.0, 0.0),
                VecOp::Mask => digital(&mut c, n, n, 0.0, 0.0),
                VecOp::Softmax => digital(&mut c, 2.0 * n, n, rows, n),
                VecOp::Gelu => digital(&mut c, n, 2.0 * n, 0.0, n),
                VecOp::Tanh => digital(&mut c, 0.0, 0.0, 0.0, n),
            }
        }
        Inst::Pool { src, mean, .. } => {
            let n = elems(buf(*src));
            c.energy[5] = accesses(n * 32.0) * tb;
            if *mean {
                digital(
                    &mut c,
                    n,
                    n / (*buf(*src).last().unwrap_or(&1)).max(1) as f64,
                    0.0,
                    0.0,
                );
            }
        }
        Inst::Spill {
            src: b,
            edram: true,
        }
        | Inst::Fill {
            dst: b,
            edram: true,
        } => {
            // Parked in the tiles' eDRAM: one buffer access per 256 bits.
            let n = elems(buf(*b));
            c.energy[5] = accesses(n * 32.0) * tb;
            c.latency_ns = accesses(n * 32.0) * f("digital_cycle");
        }
        Inst::Spill { src: b, .. } | Inst::Fill { dst: b, .. } => {
            let n = elems(buf(*b));
            c.energy[7] = (n * 32.0 / 128.0).ceil() * f("chip_link");
            c.latency_ns = (n * 32.0 / 128.0).ceil() * f("digital_cycle");
        }
    }
    c
}
