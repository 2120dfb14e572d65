//! The device-noise flags `run`, `sim` and `compare` share: which noise
//! model (the file's, a preset, none; scaled), how many chip instances and
//! which seeds, and the quantile budgets are decided at.

use crate::hw::{Hardware, Noise};
use crate::sim::chips::Chips;

#[derive(clap::Args, Debug, Clone)]
pub(super) struct NoiseArgs {
    /// Replace the hardware's `noise` model by a preset (`typical_reram`,
    /// docs/simulator.md §9) or by `none`.
    #[arg(long, value_name = "PRESET", value_parser = parse_preset)]
    noise: Option<Noise>,
    /// Multiply every noise magnitude by K (σ's, stuck fractions, drift
    /// exponents, ADC errors; the drift time is kept): 0 is noise-free, 2
    /// twice as noisy. For sweeps.
    #[arg(long = "noise-scale", value_name = "K", value_parser = parse_scale)]
    noise_scale: Option<f64>,
    /// Run N independent chip instances (Monte Carlo over device errors,
    /// seeds S..S+N-1) and report each task's metric as noise-free, mean,
    /// worst and the `--quantile`; no effect without noise.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    chips: u64,
    /// The seed of the first chip instance (a chip's device errors depend
    /// only on its seed).
    #[arg(long = "chip-seed", value_name = "S", default_value_t = 0)]
    chip_seed: u64,
    /// The quantile of a metric over chips, from the bad end, that reports
    /// show and that decides a budget under noise: 0 is the worst chip,
    /// 0.1 the chip 10% of the way from the worst.
    #[arg(long, value_name = "Q", default_value_t = 0.0, value_parser = parse_quantile)]
    quantile: f64,
}

impl NoiseArgs {
    /// Sets `hw`'s noise model as the flags say.
    pub(super) fn apply(&self, hw: &mut Hardware) {
        self.apply_scaled(hw, self.noise_scale);
    }

    /// Sets `hw`'s noise model as the flags say, scaled by `k` instead of
    /// `--noise-scale` (a sweep's point).
    pub(super) fn apply_scaled(&self, hw: &mut Hardware, k: Option<f64>) {
        if let Some(n) = &self.noise {
            hw.noise = n.clone();
        }
        if let Some(k) = k {
            hw.noise = hw.noise.scaled(k);
        }
    }

    /// The chip instances to run.
    pub(super) fn chips(&self) -> Chips {
        Chips {
            n: self.chips as usize,
            seed: self.chip_seed,
            quantile: self.quantile,
        }
    }
}

fn parse_preset(s: &str) -> Result<Noise, String> {
    if s == "none" {
        return Ok(Noise::default());
    }
    crate::hw::noise::preset(s).ok_or_else(|| {
        let names: Vec<&str> = crate::hw::noise::PRESETS.iter().map(|p| p.name).collect();
        format!(
            "no noise preset `{s}` (presets: {}, none)",
            names.join(", ")
        )
    })
}

pub(super) fn parse_scale(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(k) if k.is_finite() && (0.0..=100.0).contains(&k) => Ok(k),
        _ => Err(format!("`{s}` is not a number from 0 to 100")),
    }
}

fn parse_quantile(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(q) if q.is_finite() && (0.0..=1.0).contains(&q) => Ok(q),
        _ => Err(format!("`{s}` is not a quantile from 0 to 1")),
    }
}
