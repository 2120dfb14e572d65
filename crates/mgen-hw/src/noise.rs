//! Device non-idealities declared by a hardware's `noise` block.
//!
//! Every figure is a magnitude of one kind of error; zero adds none of it.
//! Invariant (kept by the checker): every figure is finite and
//! non-negative, `stuck_low + stuck_high <= 1`, and the relative figures
//! (`program`, `read`, `adc_gain`, `drift_nu`, `drift_nu_std`) are at
//! most one. A [`Noise`] whose every figure is zero is no noise at all: the
//! simulator then takes its noise-free path and its outputs are
//! bit-identical to a hardware without a `noise` block.
//!
//! What each figure means (the simulator's model, docs/simulator.md §9):
//! - `program`: σ of a Gaussian programming error per cell, as a fraction
//!   of the cell's conductance range (lowest to highest level); the
//!   programmed conductance is clipped to that range.
//! - `read`: σ of a Gaussian read fluctuation of each cell's current per
//!   conversion, as a fraction of that cell's conductance (so a column's
//!   read noise grows with the current it carries).
//! - `stuck_low`, `stuck_high`: fractions of cells stuck at the lowest and
//!   the highest level, exactly that share of each crossbar image's cells.
//! - `drift_s` with `drift_nu`, `drift_nu_std`: conductance relaxation
//!   after `drift_s` seconds, `g(t) = g₀ · (1 + t/t₀)^(−ν)`, `t₀ = 1 s`,
//!   `ν ~ N(drift_nu, drift_nu_std)` per cell (clipped at 0); identity at
//!   `t = 0`.
//! - `adc_offset_lsb`, `adc_gain`: σ of each ADC's static offset (LSB) and
//!   relative gain error.

use serde::{Deserialize, Serialize};

/// The drift reference time t₀, in seconds.
pub const DRIFT_T0_S: f64 = 1.0;

/// A checked noise model (see the module docs for what each figure is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Noise {
    /// The preset the figures started from, if any (`typical_reram`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    pub program: f64,
    pub read: f64,
    pub stuck_low: f64,
    pub stuck_high: f64,
    pub drift_s: f64,
    pub drift_nu: f64,
    pub drift_nu_std: f64,
    pub adc_offset_lsb: f64,
    pub adc_gain: f64,
    /// Whether the chip is calibrated once after programming (default):
    /// each column is read with a known input and its codes rescaled to the
    /// intended column sum, and each ADC's offset is measured and
    /// subtracted from its codes.
    #[serde(default = "yes")]
    pub calibrate: bool,
}

fn yes() -> bool {
    true
}

impl Default for Noise {
    fn default() -> Self {
        Noise {
            preset: None,
            program: 0.0,
            read: 0.0,
            stuck_low: 0.0,
            stuck_high: 0.0,
            drift_s: 0.0,
            drift_nu: 0.0,
            drift_nu_std: 0.0,
            adc_offset_lsb: 0.0,
            adc_gain: 0.0,
            calibrate: true,
        }
    }
}

/// One named preset: its figures and where they come from.
pub struct Preset {
    pub name: &'static str,
    pub noise: fn() -> Noise,
    pub source: &'static str,
}

/// The named presets (`noise = NAME;`).
pub const PRESETS: &[Preset] = &[Preset {
    name: "typical_reram",
    noise: typical_reram,
    source: "docs/simulator.md §9 (noise presets) lists each figure's source",
}];

/// Published ReRAM figures (docs/simulator.md §9 gives each source).
fn typical_reram() -> Noise {
    Noise {
        preset: Some("typical_reram".into()),
        program: 0.02,
        read: 0.01,
        stuck_low: 0.0005,
        stuck_high: 0.0005,
        drift_s: 86_400.0,
        drift_nu: 0.005,
        drift_nu_std: 0.002,
        adc_offset_lsb: 0.5,
        adc_gain: 0.005,
        calibrate: true,
    }
}

/// The preset called `name`.
pub fn preset(name: &str) -> Option<Noise> {
    PRESETS.iter().find(|p| p.name == name).map(|p| (p.noise)())
}

/// The longest drift time accepted, in seconds (100 years).
pub const MAX_DRIFT_S: f64 = 100.0 * 365.25 * 86_400.0;

/// The largest ADC offset accepted, in LSB.
pub const MAX_ADC_OFFSET_LSB: f64 = 65_536.0;

impl Noise {
    /// The module invariant, for a model read from a file that was not
    /// checked by the language (a program directory's manifest).
    pub fn check(&self) -> Result<(), String> {
        let unit = [
            ("program", self.program),
            ("read", self.read),
            ("stuck_low", self.stuck_low),
            ("stuck_high", self.stuck_high),
            ("drift_nu", self.drift_nu),
            ("drift_nu_std", self.drift_nu_std),
            ("adc_gain", self.adc_gain),
        ];
        for (k, v) in unit {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return Err(format!("noise `{k}` = {v} is not a fraction from 0 to 1"));
            }
        }
        if self.stuck_low + self.stuck_high > 1.0 {
            return Err("noise `stuck_low` + `stuck_high` is more than 1".into());
        }
        if !(self.drift_s.is_finite() && (0.0..=MAX_DRIFT_S).contains(&self.drift_s)) {
            return Err(format!(
                "noise `drift_s` = {} is not a time from 0 to 100 years",
                self.drift_s
            ));
        }
        let off = self.adc_offset_lsb;
        if !(off.is_finite() && (0.0..=MAX_ADC_OFFSET_LSB).contains(&off)) {
            return Err(format!(
                "noise `adc_offset_lsb` = {off} is not from 0 to {MAX_ADC_OFFSET_LSB:e}"
            ));
        }
        Ok(())
    }

    /// Whether this model adds no error of any kind.
    pub fn is_off(&self) -> bool {
        self.program == 0.0
            && self.read == 0.0
            && self.stuck_low == 0.0
            && self.stuck_high == 0.0
            && !self.drifts()
            && self.adc_offset_lsb == 0.0
            && self.adc_gain == 0.0
    }

    /// Whether drift changes any conductance.
    pub fn drifts(&self) -> bool {
        self.drift_s > 0.0 && (self.drift_nu > 0.0 || self.drift_nu_std > 0.0)
    }

    /// Whether the currents an ADC converts stop being whole LSBs before
    /// its offset (programming error, read noise, drift or gain error; not
    /// stuck cells), so its rounding adds an error of its own.
    pub fn fractional(&self) -> bool {
        self.program > 0.0 || self.read > 0.0 || self.drifts() || self.adc_gain > 0.0
    }

    /// Every magnitude times `k` (a noise-level sweep): σ's, fractions (the
    /// stuck fractions kept to a total of at most 1) and drift exponents;
    /// the drift time is kept.
    pub fn scaled(&self, k: f64) -> Noise {
        let k = if k.is_finite() { k.max(0.0) } else { 0.0 };
        let rel = |x: f64| (x * k).min(1.0);
        let stuck = (self.stuck_low + self.stuck_high) * k;
        let fit = if stuck > 1.0 { 1.0 / stuck } else { 1.0 };
        Noise {
            preset: self.preset.clone(),
            program: rel(self.program),
            read: rel(self.read),
            stuck_low: self.stuck_low * k * fit,
            stuck_high: self.stuck_high * k * fit,
            drift_s: self.drift_s,
            drift_nu: rel(self.drift_nu),
            drift_nu_std: rel(self.drift_nu_std),
            adc_offset_lsb: self.adc_offset_lsb * k,
            adc_gain: rel(self.adc_gain),
            calibrate: self.calibrate,
        }
    }

    /// One line naming every non-zero figure (reports).
    pub fn describe(&self) -> String {
        if self.is_off() {
            return "none".into();
        }
        let pct = |x: f64| format!("{}%", fmt(x * 100.0));
        let mut parts = Vec::new();
        if self.program > 0.0 {
            parts.push(format!("program {}", pct(self.program)));
        }
        if self.read > 0.0 {
            parts.push(format!("read {}", pct(self.read)));
        }
        if self.stuck_low > 0.0 || self.stuck_high > 0.0 {
            parts.push(format!(
                "stuck {} low / {} high",
                pct(self.stuck_low),
                pct(self.stuck_high)
            ));
        }
        if self.drifts() {
            parts.push(format!(
                "drift {} (nu {} ± {})",
                age(self.drift_s),
                fmt(self.drift_nu),
                fmt(self.drift_nu_std)
            ));
        }
        if self.adc_offset_lsb > 0.0 {
            parts.push(format!("adc_offset {} lsb", fmt(self.adc_offset_lsb)));
        }
        if self.adc_gain > 0.0 {
            parts.push(format!("adc_gain {}", pct(self.adc_gain)));
        }
        if !self.calibrate {
            parts.push("uncalibrated".into());
        }
        let body = parts.join(", ");
        match &self.preset {
            Some(p) => format!("{p}: {body}"),
            None => body,
        }
    }
}

/// A figure without trailing zeros.
/// A time since programming in the largest unit that divides it.
fn age(s: f64) -> String {
    for (unit, len) in [("year", 31_557_600.0), ("day", 86_400.0), ("h", 3600.0)] {
        if s >= len && (s / len).fract() == 0.0 {
            let n = s / len;
            let plural = if n != 1.0 && unit != "h" { "s" } else { "" };
            return format!("{} {unit}{plural}", fmt(n));
        }
    }
    format!("{} s", fmt(s))
}

fn fmt(x: f64) -> String {
    let s = format!("{x:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_off_and_preset_is_on() {
        assert!(Noise::default().is_off());
        let t = preset("typical_reram").unwrap();
        assert!(!t.is_off() && t.fractional());
        assert!(t.scaled(0.0).is_off());
        assert_eq!(t.scaled(1.0), t);
    }

    #[test]
    fn scaling_keeps_stuck_fractions_below_one() {
        let n = Noise {
            stuck_low: 0.3,
            stuck_high: 0.3,
            ..Noise::default()
        };
        let s = n.scaled(4.0);
        assert!((s.stuck_low + s.stuck_high - 1.0).abs() < 1e-12);
    }
}
