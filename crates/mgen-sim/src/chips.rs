//! Monte Carlo over chip instances: the same program on `n` chips whose
//! device errors are drawn from the hardware's `noise` model with the seeds
//! `seed, seed + 1, …, seed + n − 1`, and each task's metric summarised over
//! them (mean, worst, a lower quantile) beside its noise-free value.
//!
//! Invariants: chip `k`'s outputs depend only on the package and `k` (not
//! on `n`, the thread count or which other chips ran), so a run of chips
//! `0..8` and a run of chip `3` alone agree bit for bit on chip 3; and a
//! noise-free hardware is one chip, whatever `n` says (every instance is
//! the same chip). Noise changes what a conversion reads, never what runs:
//! energy, latency, area and wear are the same on every instance.

use crate::diag::Diags;
use crate::{Package, TaskMetric};
use ndarray::Array2;
use serde::Serialize;

/// Which chip instances to run, and the quantile reports and budgets use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chips {
    /// How many instances (at least 1).
    pub n: usize,
    /// The first instance's seed.
    pub seed: u64,
    /// The lower quantile of a metric over instances that decides a budget
    /// under noise (0: the worst chip).
    pub quantile: f64,
}

impl Default for Chips {
    fn default() -> Self {
        Chips {
            n: 1,
            seed: 0,
            quantile: 0.0,
        }
    }
}

impl Chips {
    /// The instances' seeds.
    pub fn seeds(&self) -> impl Iterator<Item = u64> + use<> {
        let s = self.seed;
        (0..self.n.max(1) as u64).map(move |k| s.wrapping_add(k))
    }
}

/// Whether a metric is better when higher (`agreement`, `cosine`) or lower
/// (`relative_error`).
fn higher_is_better(metric: &str) -> bool {
    metric != "relative_error"
}

/// One task's metric over chip instances.
#[derive(Debug, Clone, Serialize)]
pub struct NoisyMetric {
    /// Over the instances.
    pub mean: f64,
    pub metric: &'static str,
    pub name: String,
    /// On a chip without noise.
    pub noise_free: f64,
    /// Per instance, in seed order.
    pub per_chip: Vec<f64>,
    /// The [`Chips::quantile`] from the bad end (lowest for agreement and
    /// cosine, highest for relative error).
    pub quantile: f64,
    /// The worst instance's.
    pub worst: f64,
}

/// A run's figures under noise (a report's `noise` section).
#[derive(Debug, Clone, Serialize)]
pub struct NoiseSummary {
    pub chips: usize,
    pub first_seed: u64,
    /// The noise model, one line.
    pub model: String,
    pub quantile: f64,
    pub tasks: Vec<NoisyMetric>,
}

/// Summarises per-instance metrics (`per_chip[k][t]`: instance `k`, task
/// `t`) against the noise-free ones.
pub fn summarize(
    noise_free: &[TaskMetric],
    per_chip: &[Vec<TaskMetric>],
    chips: &Chips,
    model: String,
) -> NoiseSummary {
    let tasks = noise_free
        .iter()
        .enumerate()
        .map(|(t, m)| {
            let xs: Vec<f64> = per_chip.iter().map(|c| c[t].value).collect();
            // The bad end first: relative error is negated, then restored.
            let sign = if higher_is_better(m.metric) {
                1.0
            } else {
                -1.0
            };
            let signed: Vec<f64> = xs.iter().map(|x| sign * x).collect();
            NoisyMetric {
                mean: xs.iter().sum::<f64>() / xs.len().max(1) as f64,
                metric: m.metric,
                name: m.name.clone(),
                noise_free: m.value,
                quantile: sign * mgen_util::stats::low_quantile(&signed, chips.quantile),
                worst: sign * mgen_util::stats::low_quantile(&signed, 0.0),
                per_chip: xs,
            }
        })
        .collect();
    NoiseSummary {
        chips: per_chip.len(),
        first_seed: chips.seed,
        model,
        quantile: chips.quantile,
        tasks,
    }
}

/// The outputs of every instance, in seed order (one instance when the
/// hardware has no noise).
pub fn simulate_all(
    pkg: &Package,
    ideal_adc: bool,
    chips: &Chips,
    progress: crate::progress::Mode,
) -> Result<Vec<Vec<Array2<f32>>>, Diags> {
    if pkg.hw.noise.is_off() {
        return Ok(vec![crate::simulate(pkg, ideal_adc, progress)?]);
    }
    chips
        .seeds()
        .map(|s| crate::simulate_chip(pkg, ideal_adc, s, progress))
        .collect()
}

/// What [`run`] gives.
pub struct ChipRun {
    /// The first instance's outputs.
    pub outputs: Vec<Array2<f32>>,
    /// The first instance's metrics (none without a reference).
    pub metrics: Vec<TaskMetric>,
    /// `None` without noise or without a reference.
    pub noise: Option<NoiseSummary>,
}

/// Runs `pkg` on every instance and, with a reference and noise, on a
/// noise-free chip too.
pub fn run(
    pkg: &Package,
    ideal_adc: bool,
    chips: &Chips,
    progress: crate::progress::Mode,
) -> Result<ChipRun, Diags> {
    let mut all = simulate_all(pkg, ideal_adc, chips, progress)?;
    let Some(r) = &pkg.reference else {
        return Ok(ChipRun {
            outputs: all.swap_remove(0),
            metrics: Vec::new(),
            noise: None,
        });
    };
    let per_chip: Vec<Vec<TaskMetric>> = all
        .iter()
        .map(|o| crate::metrics(&pkg.tasks, o, r))
        .collect();
    let first = per_chip[0].clone();
    let summary = if pkg.hw.noise.is_off() {
        None
    } else {
        let clean = crate::simulate_noise_free(pkg, ideal_adc, progress)?;
        let clean = crate::metrics(&pkg.tasks, &clean, r);
        Some(summarize(&clean, &per_chip, chips, pkg.hw.noise.describe()))
    };
    Ok(ChipRun {
        outputs: all.swap_remove(0),
        metrics: first,
        noise: summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(metric: &'static str, value: f64) -> TaskMetric {
        TaskMetric {
            mean: None,
            metric,
            name: "t".into(),
            value,
        }
    }

    #[test]
    fn worst_is_the_bad_end_for_each_metric() {
        let clean = [m("agreement", 1.0), m("relative_error", 0.01)];
        let per_chip: Vec<Vec<TaskMetric>> = [(0.9, 0.02), (0.7, 0.05), (0.8, 0.03)]
            .iter()
            .map(|&(a, e)| vec![m("agreement", a), m("relative_error", e)])
            .collect();
        let c = Chips {
            n: 3,
            seed: 0,
            quantile: 0.5,
        };
        let s = summarize(&clean, &per_chip, &c, "x".into());
        assert_eq!(s.tasks[0].worst, 0.7);
        assert_eq!(s.tasks[0].quantile, 0.8);
        assert_eq!(s.tasks[1].worst, 0.05);
        assert_eq!(s.tasks[1].quantile, 0.03);
        assert!((s.tasks[0].mean - 0.8).abs() < 1e-12);
        assert_eq!(s.tasks[0].noise_free, 1.0);
    }

    #[test]
    fn seeds_follow_the_first() {
        let c = Chips {
            n: 3,
            seed: 7,
            quantile: 0.0,
        };
        assert_eq!(c.seeds().collect::<Vec<_>>(), vec![7, 8, 9]);
    }
}
