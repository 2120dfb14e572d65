//! The hardware model declared by a `hardware` block.
//!
//! Invariant: a [`Hardware`] built by the checker is valid — crossbar sides
//! are powers of two, bit widths are in 1..=16, counts are positive and the
//! total crossbar count fits in a `u64` — so later stages never re-check.

pub mod energy;
pub mod noise;

pub use noise::Noise;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How signed weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signs {
    /// Weights biased to be non-negative; the bias is subtracted digitally
    /// (ISAAC). One set of crossbars.
    Offset,
    /// A positive and a negative array per weight. Two sets of crossbars.
    Differential,
}

impl Signs {
    pub fn name(self) -> &'static str {
        match self {
            Signs::Offset => "offset",
            Signs::Differential => "differential",
        }
    }
}

/// A checked hardware description; defaults are ISAAC's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hardware {
    pub name: String,
    pub rows: u64,
    pub cols: u64,
    pub cell_bits: u32,
    pub weight_bits: u32,
    pub input_bits: u32,
    pub dac_bits: u32,
    pub adc_bits: u32,
    pub signs: Signs,
    pub chips: u64,
    /// Per chip.
    pub tiles: u64,
    pub cores_per_tile: u64,
    pub crossbars_per_core: u64,
    /// ADCs per core (shared by its crossbars); `None` is ISAAC's one ADC
    /// per crossbar. Sets how fast a crossbar's columns are converted
    /// ([`Hardware::adcs_per_crossbar`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adcs_per_core: Option<u64>,
    /// Bytes of eDRAM buffer per tile.
    pub tile_buffer: u64,
    /// Bytes of data memory per core.
    pub core_buffer: u64,
    /// Writes a cell survives.
    pub endurance: f64,
    /// Overrides of [`energy::TABLE`], by entry name, in pJ or ns.
    pub overrides: BTreeMap<String, f64>,
    /// Device non-idealities (`noise` block); off by default.
    #[serde(default, skip_serializing_if = "Noise::is_off")]
    pub noise: Noise,
}

impl Default for Hardware {
    fn default() -> Self {
        Hardware {
            name: "isaac".into(),
            rows: 128,
            cols: 128,
            cell_bits: 2,
            weight_bits: 8,
            input_bits: 8,
            dac_bits: 1,
            adc_bits: 8,
            signs: Signs::Offset,
            chips: 1,
            tiles: 168,
            cores_per_tile: 12,
            crossbars_per_core: 8,
            adcs_per_core: None,
            tile_buffer: 64 * 1024,
            core_buffer: 2 * 1024,
            endurance: 1e8,
            overrides: BTreeMap::new(),
            noise: Noise::default(),
        }
    }
}

impl Hardware {
    /// Crossbars on all chips.
    pub fn crossbars(&self) -> u64 {
        self.chips
            .saturating_mul(self.tiles)
            .saturating_mul(self.cores_per_tile)
            .saturating_mul(self.crossbars_per_core)
    }

    /// How one `[out, in]` matrix of `bits`-bit weights tiles onto
    /// crossbars: (row blocks, column blocks, bit slices, sign arrays).
    pub fn blocks(&self, out_dim: u64, in_dim: u64, bits: u32) -> (u64, u64, u64, u64) {
        let signs = match self.signs {
            Signs::Offset => 1,
            Signs::Differential => 2,
        };
        (
            in_dim.div_ceil(self.rows.max(1)),
            out_dim.div_ceil(self.cols.max(1)),
            (bits as u64).div_ceil(self.cell_bits.max(1) as u64),
            signs,
        )
    }

    /// Crossbars one `[out, in]` matrix of `bits`-bit weights needs: the
    /// product of its [`blocks`](Hardware::blocks), saturating.
    pub fn crossbars_for(&self, out_dim: u64, in_dim: u64, bits: u32) -> u64 {
        let (rb, cb, sl, sg) = self.blocks(out_dim, in_dim, bits);
        rb.saturating_mul(cb).saturating_mul(sl).saturating_mul(sg)
    }

    /// ADCs serving one crossbar: `adcs_per_core / crossbars_per_core`
    /// (ISAAC: 1). Below 1, crossbars of a core take turns on an ADC.
    pub fn adcs_per_crossbar(&self) -> f64 {
        match self.adcs_per_core {
            Some(a) => a as f64 / self.crossbars_per_core.max(1) as f64,
            None => 1.0,
        }
    }

    /// An energy (pJ) or time (ns) figure: the override if any, else the default.
    pub fn figure(&self, name: &str) -> f64 {
        self.overrides
            .get(name)
            .copied()
            .or_else(|| energy::entry(name).map(|e| e.default))
            .unwrap_or(0.0)
    }
}
