//! Held-out evaluation (`test = "FILE.jsonl"` on a task): `mgen compare`
//! scores each such task against its labels on requests the generator
//! never saw — accuracy for `classify`, Pearson for `regress` — for the
//! task's own unshared model in float, the baseline on the chip and mgen's
//! program on the chip.
//!
//! Every task's test requests form one batch, run once through each
//! program (the chip runs every task for every request, as it does for
//! the workload); a task is scored on its own requests' rows of its own
//! output only. The programs are the ones compiled and calibrated for the
//! workload: the test requests change nothing that is compiled, chosen or
//! verified (the loader has checked them disjoint from every input the
//! generator saw: [`crate::data::check_test`]).

use crate::data::{Batch, Label, Request};
use crate::diag::Diags;
use crate::sim::Package;
use crate::spec::{Head, Spec};
use mgen_util::stats::{argmax, pearson};
use ndarray::{Array2, ArrayView2, Axis};
use serde::Serialize;
use std::ops::Range;

/// Every workload task's test requests, as one batch.
pub struct TestSets {
    pub batch: Batch,
    /// Per workload task: its rows of `batch`, if it has a `test` file.
    pub ranges: Vec<Option<Range<usize>>>,
}

/// Whether any task of the workload names a `test` file.
pub fn any(spec: &Spec) -> bool {
    spec.workload
        .tasks
        .iter()
        .any(|&t| spec.tasks[t].test.is_some())
}

impl TestSets {
    /// The workload's test sets from every task's `test` requests
    /// ([`crate::data::Files::test`], loaded and checked with every other
    /// inputs file); `None` when no task has one.
    pub fn from_files(spec: &Spec, test: Vec<Option<Vec<Request>>>) -> Option<TestSets> {
        if test.iter().all(Option::is_none) {
            return None;
        }
        let (requests, ranges) = stack(test);
        Some(TestSets {
            batch: Batch {
                seq: spec.workload.seq as usize,
                requests,
            },
            ranges,
        })
    }

    /// Per workload task with a test set: its metric's value on its rows of
    /// `outputs` (per task `[requests of the batch, width]`).
    pub fn score(&self, spec: &Spec, outputs: &[Array2<f32>]) -> Vec<Option<f64>> {
        self.ranges
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let r = r.as_ref()?;
                let head = &spec.tasks[spec.workload.tasks[i]].head;
                let out = outputs.get(i)?.slice(ndarray::s![r.clone(), ..]);
                let labels: Vec<Option<Label>> = self.batch.requests[r.clone()]
                    .iter()
                    .map(|q| q.label)
                    .collect();
                Some(score(head, out, &labels))
            })
            .collect()
    }
}

/// Per-task request sets as one list of requests and, per task, its rows
/// of it (`None` where a task has no set).
pub fn stack(
    sets: impl IntoIterator<Item = Option<Vec<Request>>>,
) -> (Vec<Request>, Vec<Option<Range<usize>>>) {
    let mut requests: Vec<Request> = Vec::new();
    let ranges = sets
        .into_iter()
        .map(|set| {
            set.map(|reqs| {
                let start = requests.len();
                requests.extend(reqs);
                start..requests.len()
            })
        })
        .collect();
    (requests, ranges)
}

/// The held-out metric a head is scored by: `accuracy` or `pearson`.
pub fn metric_of(head: &Head) -> &'static str {
    match head {
        Head::Regress { .. } => "pearson",
        _ => "accuracy",
    }
}

/// A head's outputs against labels: the share of rows whose (finite)
/// argmax is the label's class (`classify`), or the Pearson correlation of
/// the first column with the labels (`regress`); NaN where undefined.
pub fn score(head: &Head, out: ArrayView2<f32>, labels: &[Option<Label>]) -> f64 {
    match head {
        Head::Regress { .. } => {
            if out.ncols() == 0 {
                return f64::NAN;
            }
            let ys: Vec<f64> = labels
                .iter()
                .map(|l| match l {
                    Some(Label::Value(v)) => *v,
                    Some(Label::Class(c)) => *c as f64,
                    None => f64::NAN,
                })
                .collect();
            let xs: Vec<f64> = out.column(0).iter().map(|&x| x as f64).collect();
            pearson(&xs, &ys)
        }
        _ => {
            if out.nrows() == 0 {
                return f64::NAN;
            }
            let right = out
                .rows()
                .into_iter()
                .zip(labels)
                .filter(|(r, l)| {
                    matches!(l, Some(Label::Class(c)) if *c >= 0
                        && r.iter().all(|x| x.is_finite())
                        && argmax(*r) == *c as usize)
                })
                .count();
            right as f64 / out.nrows() as f64
        }
    }
}

/// Runs `requests` through `pkg`'s program on the simulator, in runs of at
/// most the workload's request count (a schedule's request groups are laid
/// out for it), and gives the per-task outputs `[requests, width]`.
/// `pkg`'s own requests are restored afterwards. `chip` is the chip
/// instance (the seed of its device errors).
pub fn simulate(
    pkg: &mut Package,
    requests: &[Request],
    chip: u64,
    progress: crate::progress::Mode,
) -> Result<Vec<Array2<f32>>, Diags> {
    crate::sim::validate_package(pkg)?;
    let images = crate::sim::prepare_images(pkg, false, chip);
    let per = pkg.requests.len().max(1);
    let own = std::mem::take(&mut pkg.requests);
    let mut parts: Vec<Vec<Array2<f32>>> = Vec::new();
    let mut result = Ok(());
    for (k, chunk) in requests.chunks(per).enumerate() {
        pkg.requests = chunk.to_vec();
        match crate::sim::simulate_prepared(pkg, &images, false, k * per, progress) {
            Ok(o) => parts.push(o),
            Err(d) => {
                result = Err(d);
                break;
            }
        }
    }
    pkg.requests = own;
    result?;
    (0..pkg.tasks.len())
        .map(|t| {
            let views: Vec<ArrayView2<f32>> = parts.iter().map(|p| p[t].view()).collect();
            if views.is_empty() {
                return Ok(Array2::zeros((0, pkg.tasks[t].width as usize)));
            }
            ndarray::concatenate(Axis(0), &views)
                .map_err(|e| Diags::from(crate::diag::Diagnostic::internal(e.to_string())))
        })
        .collect()
}

/// One task's held-out figures (`mgen compare`'s `held_out`): its metric
/// against the labels of its `test` file, for the task's own unshared
/// model in float, the baseline on the chip and mgen's program on the
/// chip. A figure that is undefined (e.g. Pearson of constant outputs) is
/// `null`.
#[derive(Debug, Clone, Serialize)]
pub struct HeldOut {
    pub baseline_chip: f64,
    /// `accuracy` (classify) or `pearson` (regress).
    pub metric: &'static str,
    pub mgen_chip: f64,
    /// Requests in the task's `test` file.
    pub n: usize,
    pub own_f32: f64,
}
