//! The default energy, timing and area table.
//!
//! Every figure is **per operation** (pJ per conversion, access or cell; ns
//! per cycle), never power × latency, and every entry names its source (see
//! `../shared/ENERGY.md` and `docs/simulator.md`). A `.mgen` hardware block
//! overrides any entry by name: `energy { adc = 1.67 pJ; }`,
//! `timing { crossbar_cycle = 100 ns; }`.

/// What an entry measures, which fixes the units it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Stored in pJ.
    Energy,
    /// Stored in ns.
    Time,
}

/// The largest figure an override may set: 10^9 pJ (1 mJ) for an energy,
/// 10^9 ns (1 s) for a time — far beyond any device, small enough that a
/// run's totals stay finite.
pub const MAX_FIGURE: f64 = 1e9;

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub name: &'static str,
    pub kind: Kind,
    /// In pJ (energy) or ns (time).
    pub default: f64,
    /// What one unit of the figure is charged for.
    pub per: &'static str,
    pub source: &'static str,
}

const fn e(name: &'static str, default: f64, per: &'static str, source: &'static str) -> Entry {
    Entry {
        name,
        kind: Kind::Energy,
        default,
        per,
        source,
    }
}

const fn t(name: &'static str, default: f64, per: &'static str, source: &'static str) -> Entry {
    Entry {
        name,
        kind: Kind::Time,
        default,
        per,
        source,
    }
}

/// The table. Names are stable: they appear in `.mgen` files and reports.
pub const TABLE: &[Entry] = &[
    e(
        "adc",
        1.67,
        "one 8-bit ADC conversion (4-bit 0.79 pJ, 10-bit 2.38 pJ)",
        "ISAAC, 32 nm (ISCA 2016), as tabulated in Accelergy hwcomponents-library isaac.py",
    ),
    e(
        "dac",
        0.0035,
        "one 1-bit DAC row drive",
        "PUMA puma-simulator include/constants.py (ISAAC-derived figure: 0.417 pJ)",
    ),
    e(
        "crossbar_read",
        30.0,
        "one 128x128 crossbar read cycle (one input bit)",
        "ISAAC model in puma-simulator constants.py: 0.3 mW x 100 ns",
    ),
    e(
        "cell_write",
        1.4,
        "programming one ReRAM cell",
        "puma-simulator constants.py",
    ),
    e(
        "shift_add",
        0.021,
        "one shift-and-add",
        "ISAAC; puma-simulator constants.py (0.021-0.045 pJ)",
    ),
    e(
        "tile_buffer",
        17.2,
        "one 256-bit access of a 64 KB eDRAM tile buffer",
        "puma-simulator; hwcomponents-library (17.2-20.5 pJ)",
    ),
    e(
        "core_buffer",
        0.57,
        "one access of a 2 KB core data memory",
        "puma-simulator constants.py",
    ),
    e(
        "alu_add",
        0.265,
        "one element of add / max / relu on the digital unit",
        "puma-simulator constants.py",
    ),
    e(
        "alu_mul",
        0.565,
        "one element of mul on the digital unit",
        "puma-simulator constants.py",
    ),
    e(
        "alu_div",
        1.08,
        "one element of div on the digital unit",
        "puma-simulator constants.py",
    ),
    e(
        "alu_lut",
        0.234,
        "one element of exp / tanh / sigmoid by look-up table",
        "puma-simulator constants.py",
    ),
    e(
        "noc_flit",
        20.7,
        "one 256-bit flit over the on-chip network",
        "ISAAC via hwcomponents-library",
    ),
    e(
        "chip_link",
        26.0,
        "128 bits over a chip-to-chip link",
        "hwcomponents-library",
    ),
    t(
        "crossbar_cycle",
        100.0,
        "one crossbar read cycle (one input bit)",
        "ISAAC (ISCA 2016)",
    ),
    t(
        "adc_sample",
        0.78125,
        "one ADC conversion (1.28 GS/s: a 128-column crossbar read in one 100 ns cycle)",
        "ISAAC (ISCA 2016): an 8-bit 1.28 GS/s ADC per crossbar",
    ),
    t(
        "digital_cycle",
        1.0,
        "one digital-unit cycle",
        "puma-simulator constants.py",
    ),
    t(
        "array_write",
        11000.0,
        "programming one 128x128 array",
        "puma-simulator constants.py (about 11 us)",
    ),
];

/// Looks an entry up by name.
pub fn entry(name: &str) -> Option<&'static Entry> {
    TABLE.iter().find(|e| e.name == name)
}

/// Names of the entries of one kind, for "did you mean" and error help.
pub fn names(kind: Kind) -> Vec<&'static str> {
    TABLE
        .iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.name)
        .collect()
}

/// Chip area of ISAAC (85.4 mm², ISCA 2016) over its 168 tiles.
pub const TILE_AREA_MM2: f64 = 85.4 / 168.0;

/// Accesses of a tile buffer (256 bits wide) to move `bits`.
pub fn buffer_accesses(bits: f64) -> f64 {
    (bits / 256.0).ceil()
}

/// Energy (pJ) of one SPILL or FILL of a buffer of `elems` f32 values:
/// off-chip, a chip link transfer per 128 bits; in the tiles' eDRAM, one
/// buffer access per 256 bits.
pub fn spill_pj(hw: &crate::Hardware, elems: f64, edram: bool) -> f64 {
    if edram {
        buffer_accesses(elems * 32.0) * hw.figure("tile_buffer")
    } else {
        (elems * 32.0 / 128.0).ceil() * hw.figure("chip_link")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_sources_present() {
        for (i, a) in TABLE.iter().enumerate() {
            assert!(!a.source.is_empty() && !a.per.is_empty(), "{}", a.name);
            assert!(a.default >= 0.0);
            for b in &TABLE[i + 1..] {
                assert_ne!(a.name, b.name);
            }
        }
    }

    #[test]
    fn worked_example_figure_from_the_table() {
        // ENERGY.md: one 128x128 crossbar MVM, 8-bit input, 1-bit DAC.
        let adc = entry("adc").unwrap().default;
        let dac = entry("dac").unwrap().default;
        let read = entry("crossbar_read").unwrap().default;
        let per_cycle = 128.0 * adc + read + 128.0 * dac;
        let total = 8.0 * per_cycle;
        assert!((total - 1953.6).abs() < 0.5, "{total}");
    }
}
