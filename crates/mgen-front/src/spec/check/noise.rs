//! A hardware's device non-idealities: `noise = PRESET;` and/or a
//! `noise { ... }` block whose entries override the preset's (every entry
//! optional; an empty block adds no noise). Builds a valid
//! [`crate::hw::Noise`] (see its invariant) or reports located errors.

use super::*;
use crate::hw::noise::{self, Noise};

/// The entries a `noise` block takes.
const KEYS: &[&str] = &[
    "program",
    "read",
    "stuck_at",
    "stuck_low",
    "stuck_high",
    "drift",
    "drift_nu",
    "drift_nu_std",
    "adc_offset",
    "adc_gain",
    "calibrate",
];

/// Time-since-programming units (to seconds).
const AGE_UNITS: &[(&str, f64)] = &[
    ("s", 1.0),
    ("min", 60.0),
    ("h", 3600.0),
    ("day", 86_400.0),
    ("days", 86_400.0),
    ("week", 604_800.0),
    ("weeks", 604_800.0),
    ("year", 31_557_600.0),
    ("years", 31_557_600.0),
];

/// At most a century since programming.
const MAX_AGE_S: f64 = noise::MAX_DRIFT_S;

impl Cx {
    /// The noise model of a hardware body `b` (its `noise` attribute and
    /// block), or no noise.
    pub(super) fn noise(&mut self, b: &Body) -> Noise {
        let mut n = Noise::default();
        if let Some(v) = b.attrs.get("noise") {
            let names: Vec<&str> = noise::PRESETS.iter().map(|p| p.name).collect();
            let mut choices = names.clone();
            choices.push("none");
            match self.name(v, "noise", &choices) {
                Some("none") | None => {}
                Some(p) => n = noise::preset(p).unwrap_or_default(),
            }
        }
        let Some(stmts) = b.blocks.get("noise") else {
            return n;
        };
        let inner = self.body("noise block".into(), stmts, KEYS, &[], false, b.end.clone());
        let frac = |cx: &mut Cx, k: &str, dst: &mut f64| {
            if let Some(v) = inner.attrs.get(k)
                && let Some(x) = cx.fraction(v, k)
            {
                *dst = x;
            }
        };
        frac(self, "program", &mut n.program);
        frac(self, "read", &mut n.read);
        frac(self, "adc_gain", &mut n.adc_gain);
        for (k, dst) in [
            ("drift_nu", &mut n.drift_nu),
            ("drift_nu_std", &mut n.drift_nu_std),
        ] {
            if let Some(v) = inner.attrs.get(k)
                && let Some(x) = self.exponent(v, k)
            {
                *dst = x;
            }
        }
        self.stuck(&inner, &mut n);
        if let Some(v) = inner.attrs.get("drift")
            && let Some(x) = self.age(v)
        {
            n.drift_s = x;
        }
        if let Some(v) = inner.attrs.get("calibrate")
            && let Some(x) = self.name(v, "calibrate", &["true", "false"])
        {
            n.calibrate = x == "true";
        }
        if let Some(v) = inner.attrs.get("adc_offset")
            && let Some(x) = self.lsb(v)
        {
            n.adc_offset_lsb = x;
        }
        n
    }

    /// `stuck_at` (split evenly between the lowest and highest level) or
    /// `stuck_low`/`stuck_high`; together at most 100%.
    fn stuck(&mut self, inner: &Body, n: &mut Noise) {
        let at = inner.attrs.get("stuck_at");
        if let Some(v) = at {
            if let Some(k) = ["stuck_low", "stuck_high"]
                .into_iter()
                .find(|k| inner.attrs.contains_key(k))
            {
                self.err(
                    Diagnostic::error(
                        Code::E017,
                        format!("`stuck_at` and `{k}` both set the stuck cells"),
                    )
                    .at(self.file, v.span.clone(), "`stuck_at` is here")
                    .help("give `stuck_at` (half low, half high) or `stuck_low`/`stuck_high`"),
                );
                return;
            }
            if let Some(x) = self.fraction(v, "stuck_at") {
                n.stuck_low = x / 2.0;
                n.stuck_high = x / 2.0;
            }
            return;
        }
        let (mut lo, mut hi) = (n.stuck_low, n.stuck_high);
        for (k, dst) in [("stuck_low", &mut lo), ("stuck_high", &mut hi)] {
            if let Some(v) = inner.attrs.get(k)
                && let Some(x) = self.fraction(v, k)
            {
                *dst = x;
            }
        }
        if lo + hi > 1.0 {
            let span = inner
                .attrs
                .get("stuck_high")
                .map_or(inner.end.clone(), |v| v.span.clone());
            self.err(
                Diagnostic::error(
                    Code::E017,
                    format!(
                        "stuck cells add up to {}% of all cells",
                        ((lo + hi) * 1e6).round() / 1e4
                    ),
                )
                .at(self.file, span, "more than 100%"),
            );
            return;
        }
        (n.stuck_low, n.stuck_high) = (lo, hi);
    }

    /// A percentage from 0% to 100%, as a fraction.
    fn fraction(&mut self, v: &Value, what: &str) -> Option<f64> {
        match &v.kind {
            ValueKind::Percent { number, .. }
                if number.is_finite() && (0.0..=100.0).contains(number) =>
            {
                Some(number / 100.0)
            }
            ValueKind::Percent { text, .. } => {
                self.err(
                    Diagnostic::error(
                        Code::E017,
                        format!("`{what}` must be between 0% and 100%, not {text}%"),
                    )
                    .at(self.file, v.span.clone(), "out of range")
                    .help("a standard deviation or a fraction of cells is never negative"),
                );
                None
            }
            _ => {
                self.err(
                    Diagnostic::error(
                        Code::E016,
                        format!("`{what}` must be a percentage, found {}", v.describe()),
                    )
                    .at(self.file, v.span.clone(), "expected e.g. `2%`"),
                );
                None
            }
        }
    }

    /// A drift exponent: a plain number from 0 to 1 (`0.005`) or a
    /// percentage (`0.5%`, the same ν).
    fn exponent(&mut self, v: &Value, what: &str) -> Option<f64> {
        match &v.kind {
            ValueKind::Number { value, .. } if value.is_finite() && (0.0..=1.0).contains(value) => {
                Some(*value)
            }
            ValueKind::Number { text, .. } => {
                self.err(
                    Diagnostic::error(
                        Code::E017,
                        format!("`{what}` must be from 0 to 1, not {text}"),
                    )
                    .at(self.file, v.span.clone(), "out of range")
                    .help("a drift exponent is never negative; ReRAM's are about 0.005"),
                );
                None
            }
            _ => self.fraction(v, what),
        }
    }

    /// A time since programming (`1 day`, `10 years`), in seconds.
    fn age(&mut self, v: &Value) -> Option<f64> {
        let units: Vec<&str> = AGE_UNITS.iter().map(|(u, _)| *u).collect();
        match &v.kind {
            ValueKind::Quantity { number, unit, text } => {
                let Some((_, f)) = AGE_UNITS.iter().find(|(u, _)| *u == unit.name) else {
                    let mut d = Diagnostic::error(
                        Code::E018,
                        format!(
                            "`drift` is a time since programming; `{}` is not one of its units",
                            unit.name
                        ),
                    )
                    .at(self.file, unit.span.clone(), "unknown unit here");
                    d = match suggest(&unit.name, &units) {
                        Some(s) => d.help(format!("did you mean `{s}`?")),
                        None => d.help(format!("`drift` takes one of: {}", units.join(", "))),
                    };
                    self.err(d);
                    return None;
                };
                let x = number * f;
                if !x.is_finite() || !(0.0..=MAX_AGE_S).contains(&x) {
                    self.err(
                        Diagnostic::error(
                            Code::E017,
                            format!(
                                "`drift` must be from 0 s to 100 years, not {text} {}",
                                unit.name
                            ),
                        )
                        .at(self.file, v.span.clone(), "out of range"),
                    );
                    return None;
                }
                Some(x)
            }
            _ => {
                self.err(
                    Diagnostic::error(
                        Code::E016,
                        format!(
                            "`drift` must be a time since programming, found {}",
                            v.describe()
                        ),
                    )
                    .at(self.file, v.span.clone(), "expected e.g. `1 day`"),
                );
                None
            }
        }
    }

    /// An ADC offset `X lsb` (σ, in least significant bits), at most 2^16.
    fn lsb(&mut self, v: &Value) -> Option<f64> {
        match &v.kind {
            ValueKind::Quantity { number, unit, text } if unit.name.eq_ignore_ascii_case("lsb") => {
                if !number.is_finite() || !(0.0..=65_536.0).contains(number) {
                    self.err(
                        Diagnostic::error(
                            Code::E017,
                            format!("`adc_offset` must be from 0 to 65536 lsb, not {text}"),
                        )
                        .at(self.file, v.span.clone(), "out of range"),
                    );
                    return None;
                }
                Some(*number)
            }
            ValueKind::Quantity { unit, .. } => {
                self.err(
                    Diagnostic::error(
                        Code::E018,
                        format!("`adc_offset` is measured in `lsb`, not `{}`", unit.name),
                    )
                    .at(self.file, unit.span.clone(), "expected `lsb`"),
                );
                None
            }
            _ => {
                self.err(
                    Diagnostic::error(
                        Code::E016,
                        format!(
                            "`adc_offset` must be a number of `lsb`, found {}",
                            v.describe()
                        ),
                    )
                    .at(self.file, v.span.clone(), "expected e.g. `0.5 lsb`"),
                );
                None
            }
        }
    }
}
