//! `mgen compare --noise-sweep K,K,...`: one full comparison per noise
//! scale (the hardware's noise model, or `--noise`'s, times K), each
//! against its own baseline on chips as noisy, summarised as one table and
//! two SVG line charts (energy ratio, and each task's figures, against K).
//!
//! Invariants: every point is exactly what `mgen compare --noise-scale K`
//! gives with the same other flags (the sweep only collects them); the
//! points keep the order the scales were given in; a task's figures are its
//! first budget's.

use crate::compare::{Comparison, NoisyBudget, fig};
use crate::diag::Diags;
use crate::held_out::HeldOut;
use serde::Serialize;
use std::path::Path;

/// One task at one noise scale.
#[derive(Debug, Clone, Serialize)]
pub struct SweepTask {
    /// The first budget as written.
    pub budget: Option<String>,
    /// The held-out figures on the first chip, with a `test` file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_out: Option<HeldOut>,
    pub holds: bool,
    pub name: String,
    /// The first budget on the chip over the instances (absent when the
    /// scale leaves the chip noise-free).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noisy: Option<NoisyBudget>,
    /// The first budget's value on the chip (the quantile under noise).
    pub on_chip: Option<f64>,
    pub shared_layers: usize,
}

/// One noise scale in brief.
#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    pub all_hold: bool,
    /// Rounds of chip verification the tree took.
    pub chip_rounds: usize,
    pub energy_ratio: f64,
    pub energy_ratio_per_request_no_programming: f64,
    /// The noise model at this scale, one line (`none` when it is off).
    pub model: String,
    pub scale: f64,
    pub seconds: f64,
    pub tasks: Vec<SweepTask>,
}

impl SweepPoint {
    fn of(scale: f64, c: &Comparison) -> SweepPoint {
        SweepPoint {
            all_hold: c.tasks.iter().all(|t| t.holds),
            chip_rounds: c.chip_rounds.len(),
            energy_ratio: c.energy_ratio,
            energy_ratio_per_request_no_programming: c.energy_ratio_per_request_no_programming,
            model: c.noise.as_ref().map_or("none".into(), |n| n.model.clone()),
            scale,
            seconds: c.seconds,
            tasks: c
                .tasks
                .iter()
                .map(|t| {
                    let first = t.budgets.first();
                    SweepTask {
                        budget: t.budget.clone(),
                        held_out: t.held_out.clone(),
                        holds: t.holds,
                        name: t.name.clone(),
                        noisy: first.and_then(|b| b.noisy.clone()),
                        on_chip: first.and_then(|b| b.on_chip),
                        shared_layers: t.shared_layers,
                    }
                })
                .collect(),
        }
    }
}

/// `mgen compare --noise-sweep`: the points, then every comparison in full.
#[derive(Debug, Clone, Serialize)]
pub struct NoiseSweep {
    pub chips: usize,
    pub comparisons: Vec<Comparison>,
    pub file: String,
    pub points: Vec<SweepPoint>,
    pub quantile: f64,
}

impl NoiseSweep {
    /// Collects `(scale, comparison)` pairs, in the order given.
    pub fn new(file: &Path, chips: usize, quantile: f64, runs: Vec<(f64, Comparison)>) -> Self {
        NoiseSweep {
            chips,
            file: file.display().to_string(),
            points: runs.iter().map(|(k, c)| SweepPoint::of(*k, c)).collect(),
            comparisons: runs.into_iter().map(|(_, c)| c).collect(),
            quantile,
        }
    }

    /// Whether no point has any noise (the hardware has no noise model and
    /// `--noise` named none).
    pub fn noise_free(&self) -> bool {
        self.points.iter().all(|p| p.model == "none")
    }

    /// The sweep as text: one row per scale, then per task one column per
    /// scale (on-chip figure, then held-out when there are test sets).
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let first = self.comparisons.first();
        let _ = writeln!(
            o,
            "compare by noise scale: {} ({} requests x seq {}, {} chip(s) per scale, budgets at quantile {})",
            self.file,
            first.map_or(0, |c| c.requests),
            first.map_or(0, |c| c.seq),
            self.chips,
            self.quantile
        );
        if let Some(p) = self.points.iter().find(|p| p.scale > 0.0) {
            let _ = writeln!(o, "noise at scale {}: {}", p.scale, p.model);
        }
        if self.noise_free() {
            let _ = writeln!(
                o,
                "(the hardware has no noise model, so every scale is noise-free: name one with `noise = typical_reram;` or --noise typical_reram)"
            );
        }
        o.push('\n');
        o.push_str(&self.summary_table());
        let _ = writeln!(
            o,
            "\nper task: encoder layers shared / budget holds / first budget on the chip (the quantile over chips; mean in brackets)"
        );
        o.push_str(&self.task_table(|t| {
            let v = t.on_chip.map_or("-".into(), |v| format!("{v:.4}"));
            let mean = t
                .noisy
                .as_ref()
                .map_or(String::new(), |n| format!(" ({:.4})", n.mean));
            format!(
                "{} {} {v}{mean}",
                t.shared_layers,
                if t.holds { "yes" } else { "NO" }
            )
        }));
        if self
            .points
            .iter()
            .any(|p| p.tasks.iter().any(|t| t.held_out.is_some()))
        {
            let _ = writeln!(
                o,
                "\nheld out (each task's `test` file against its labels, on the first chip): baseline chip / mgen chip; own f32 in brackets"
            );
            o.push_str(&self.task_table(|t| {
                t.held_out.as_ref().map_or("-".into(), |h| {
                    format!(
                        "{} / {} ({})",
                        fig(h.baseline_chip),
                        fig(h.mgen_chip),
                        fig(h.own_f32)
                    )
                })
            }));
        }
        let _ = writeln!(
            o,
            "(energy, latency, area and wear do not depend on noise; the ratio moves only when the tree does)"
        );
        o
    }

    fn summary_table(&self) -> String {
        use crate::table::{Align, Table};
        let r = Align::Right;
        let mut tb = Table::new(&[
            ("scale", Align::Left),
            ("energy ratio", r),
            ("per request", r),
            ("chip rounds", r),
            ("budgets", r),
            ("time", r),
        ])
        .gap(3);
        for p in &self.points {
            tb.row(vec![
                format!("{}", p.scale),
                format!("{:.3}x", p.energy_ratio),
                format!("{:.3}x", p.energy_ratio_per_request_no_programming),
                p.chip_rounds.to_string(),
                if p.all_hold { "all hold" } else { "SOME FAIL" }.into(),
                format!("{:.1}s", p.seconds),
            ]);
        }
        tb.render()
    }

    /// One row per task, one column per scale, each cell `cell(task)`.
    fn task_table(&self, cell: impl Fn(&SweepTask) -> String) -> String {
        use crate::table::{Align, Table};
        let heads: Vec<String> = self
            .points
            .iter()
            .map(|p| format!("x{}", p.scale))
            .collect();
        let mut cols = vec![("task", Align::Left)];
        cols.extend(heads.iter().map(|h| (h.as_str(), Align::Right)));
        let mut tb = Table::new(&cols).gap(3);
        let n = self.points.first().map_or(0, |p| p.tasks.len());
        for i in 0..n {
            let mut row = vec![self.points[0].tasks[i].name.clone()];
            row.extend(self.points.iter().map(|p| cell(&p.tasks[i])));
            tb.row(row);
        }
        tb.render()
    }

    /// Writes `compare.json`, `noise-energy.svg`, `noise-tasks.svg` and one
    /// comparison report per scale (`scale-K/`) into `dir`.
    pub fn write_report(&self, dir: &Path) -> Result<(), Diags> {
        use crate::report::{Series, line_chart};
        crate::compare::report_dir(dir)?;
        let put = |name: &str, text: String| {
            mgen_util::fs::write_atomic(&dir.join(name), text.as_bytes())
        };
        put(
            "compare.json",
            serde_json::to_string_pretty(self).unwrap_or_default(),
        )?;
        let ratio = Series {
            name: "energy ratio (baseline / mgen)".into(),
            points: self
                .points
                .iter()
                .map(|p| (p.scale, p.energy_ratio))
                .collect(),
        };
        put(
            "noise-energy.svg",
            line_chart(
                "Energy efficiency against noise level",
                "noise scale (x the model)",
                "baseline / mgen",
                &[ratio],
            ),
        )?;
        put(
            "noise-tasks.svg",
            line_chart(
                "Each task on the chip against noise level",
                "noise scale (x the model)",
                "first budget's metric (quantile over chips) / held-out metric",
                &self.task_series(),
            ),
        )?;
        for (p, c) in self.points.iter().zip(&self.comparisons) {
            c.write_report(&dir.join(format!("scale-{}", p.scale)))?;
        }
        Ok(())
    }

    /// Per task: its first budget on the chip, and its held-out metric
    /// (mgen on the chip) where it has a test set.
    fn task_series(&self) -> Vec<crate::report::Series> {
        let n = self.points.first().map_or(0, |p| p.tasks.len());
        let mut out = Vec::new();
        for i in 0..n {
            let name = &self.points[0].tasks[i].name;
            let pick = |f: &dyn Fn(&SweepTask) -> Option<f64>| -> Vec<(f64, f64)> {
                self.points
                    .iter()
                    .filter_map(|p| f(&p.tasks[i]).map(|v| (p.scale, v)))
                    .filter(|(_, v)| v.is_finite())
                    .collect()
            };
            let chip = pick(&|t| t.on_chip);
            if !chip.is_empty() {
                out.push(crate::report::Series {
                    name: format!("{name}: on chip vs own"),
                    points: chip,
                });
            }
            let held = pick(&|t| t.held_out.as_ref().map(|h| h.mgen_chip));
            if !held.is_empty() {
                out.push(crate::report::Series {
                    name: format!("{name}: held out"),
                    points: held,
                });
            }
        }
        out
    }
}
