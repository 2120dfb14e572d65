//! Label budgets on the chip (`keep accuracy >= ...`, `keep pearson >=
//! ...`) need requests that carry labels. The generator checks them in
//! float on each task's calibration inputs; `mgen compare` checks every
//! other budget on the chip over the workload's requests, which a real
//! request stream serves unlabelled. So when a task has a label budget and
//! none of the workload's requests carries a label, its label budgets are
//! checked on the chip on **its labelled calibration inputs** instead: the
//! same requests the generator measured them on, run through mgen's
//! program and the baseline's on the same chip (the first chip instance,
//! `--chip-seed`), scored against their labels.
//!
//! Invariants: the calibration requests are run as extra requests of the
//! programs compiled for the workload ([`crate::held_out::simulate`]), so
//! they change nothing that is compiled; a task is scored on its own rows
//! of its own output only; a budget with no labelled row is undefined and
//! never holds ([`share::measure`]).

use crate::data::{Label, Request};
use crate::diag::Diags;
use crate::passes::share::{self, Measured};
use crate::sim::Package;
use crate::spec::{Budget, Metric, Spec};
use ndarray::{Array2, s};
use std::ops::Range;

/// Whether a budget is scored against labels.
pub fn needs_labels(b: &Budget) -> bool {
    matches!(b.metric, Metric::Accuracy | Metric::Pearson)
}

/// The calibration requests of the tasks whose label budgets are checked
/// on them, and the baseline program's outputs there.
pub struct LabelSets {
    pub requests: Vec<Request>,
    /// Per workload task: its rows of `requests`, if it is checked here.
    pub ranges: Vec<Option<Range<usize>>>,
    /// The baseline (each task's own model) on the chip, per task
    /// `[requests, width]`.
    pub baseline: Vec<Array2<f32>>,
}

/// Per workload task, whether its label budgets are checked on its
/// calibration inputs: it has one and no workload request carries a label.
pub fn wanted(spec: &Spec, workload: &[Request]) -> Vec<bool> {
    let unlabelled = workload.iter().all(|r| r.label.is_none());
    (spec.workload.tasks.iter())
        .map(|&st| unlabelled && spec.tasks[st].budgets.iter().any(needs_labels))
        .collect()
}

impl LabelSets {
    /// The label sets of the `wanted` tasks from every task's calibration
    /// requests ([`crate::data::Files::calibrate`]; a task without labelled
    /// ones keeps the workload's), with the baseline package `pb` run on
    /// them on chip `chip`; `None` when no task needs one.
    pub fn build(
        wanted: &[bool],
        calibrate: Vec<Option<Vec<Request>>>,
        pb: &mut Package,
        chip: u64,
        progress: crate::progress::Mode,
    ) -> Result<Option<LabelSets>, Diags> {
        let sets: Vec<Option<Vec<Request>>> = calibrate
            .into_iter()
            .zip(wanted)
            .map(|(c, &w)| c.filter(|reqs| w && reqs.iter().any(|r| r.label.is_some())))
            .collect();
        if sets.iter().all(Option::is_none) {
            return Ok(None);
        }
        let (requests, ranges) = crate::held_out::stack(sets);
        let baseline = crate::held_out::simulate(pb, &requests, chip, progress)?;
        Ok(Some(LabelSets {
            requests,
            ranges,
            baseline,
        }))
    }

    /// Runs mgen's package `pm` on the sets (chip `chip`).
    pub fn run(
        &self,
        pm: &mut Package,
        chip: u64,
        progress: crate::progress::Mode,
    ) -> Result<Vec<Array2<f32>>, Diags> {
        crate::held_out::simulate(pm, &self.requests, chip, progress)
    }

    /// Budget `b` of workload task `t` measured on its set: `ours`
    /// (outputs on the sets, e.g. from [`LabelSets::run`]) against the
    /// baseline on the chip, which sets a `reference - D` bound. `None`
    /// when `b` is not checked here.
    pub fn measure(
        &self,
        spec: &Spec,
        t: usize,
        b: &Budget,
        ours: &[Array2<f32>],
    ) -> Option<Measured> {
        let r = self.ranges.get(t)?.as_ref()?;
        if !needs_labels(b) {
            return None;
        }
        let head = &spec.tasks[spec.workload.tasks[t]].head;
        let labels: Vec<Option<Label>> = self.requests[r.clone()].iter().map(|q| q.label).collect();
        let rows = |a: &Array2<f32>| a.slice(s![r.clone(), ..]).to_owned();
        let own = rows(self.baseline.get(t)?);
        Some(share::measure(b, head, &rows(ours.get(t)?), &own, &labels))
    }
}
