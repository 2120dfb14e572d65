//! Budgets measured on outputs: [`measure`] compares a candidate's outputs
//! with the task's own model's, and `hopeless` tells early that a
//! candidate's budget can no longer hold, whatever its remaining rows are.
//!
//! Invariants: a metric that is not finite never holds (NaN compares
//! false); `hopeless` is true only when the full measure cannot hold
//! (agreement and the cosine of embeddings are absolute budgets), so
//! stopping a candidate early changes no verdict.

use crate::data::Label;
use crate::spec::{Budget, Head, Metric};
use ndarray::Array2;
use serde::Serialize;

/// A budget as measured on calibration inputs.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// As written, e.g. `keep agreement >= 99%;`.
    pub budget: String,
    pub metric: &'static str,
    /// The metric reached.
    pub value: f64,
    /// The bound it must reach (for `reference - D` budgets, the unshared
    /// model's value minus D).
    pub bound: f64,
    pub holds: bool,
}

use mgen_util::stats::cosine;
pub use mgen_util::stats::{agree, argmax, pearson, worst};

fn col(a: &Array2<f32>) -> Vec<f64> {
    a.iter().map(|&x| x as f64).collect()
}

/// Measures one budget: `out` against the task's own model's `own`.
///
/// - agreement: the share of rows whose argmax equals `own`'s;
/// - cosine: for embeddings, the worst row's cosine to `own`'s; for
///   classifiers and regressors, the cosine between the flattened outputs
///   over all rows (a single value has no direction of its own);
/// - accuracy / pearson: against the labels, over the rows that carry one
///   (none: undefined, so the budget fails), bounded by `own`'s value
///   minus D for `reference - D` budgets.
///
/// A metric that is not finite (NaN or infinite outputs, a correlation
/// without variance, no rows) never holds.
pub fn measure(
    b: &Budget,
    head: &Head,
    out: &Array2<f32>,
    own: &Array2<f32>,
    labels: &[Option<Label>],
) -> Measured {
    let n = out.nrows().max(1) as f64;
    let (value, reference) = match b.metric {
        Metric::Agreement => {
            let agree = out
                .rows()
                .into_iter()
                .zip(own.rows())
                .filter(|(a, b)| agree(*a, *b))
                .count() as f64;
            (agree / n, 1.0)
        }
        Metric::Cosine => match head {
            Head::Embed { .. } => {
                let w = worst(out.rows().into_iter().zip(own.rows()).map(|(a, b)| {
                    let a: Vec<f64> = a.iter().map(|&x| x as f64).collect();
                    let b: Vec<f64> = b.iter().map(|&x| x as f64).collect();
                    cosine(&a, &b)
                }));
                (w, 1.0)
            }
            _ => (cosine(&col(out), &col(own)), 1.0),
        },
        Metric::Accuracy => {
            // Over the rows that carry a class label (none: undefined).
            let labelled = labels
                .iter()
                .take(out.nrows())
                .filter(|l| matches!(l, Some(Label::Class(_))))
                .count() as f64;
            let acc = |a: &Array2<f32>| {
                a.rows()
                    .into_iter()
                    .zip(labels)
                    .filter(|(r, l)| matches!(l, Some(Label::Class(c)) if *c >= 0 && r.iter().all(|x| x.is_finite()) && argmax(*r) == *c as usize))
                    .count() as f64
                    / labelled
            };
            match labelled > 0.0 {
                true => (acc(out), acc(own)),
                false => (f64::NAN, f64::NAN),
            }
        }
        Metric::Pearson => {
            // Over the rows that carry a label (a class counts as its number).
            let rows: Vec<(usize, f64)> = labels
                .iter()
                .take(out.nrows())
                .enumerate()
                .filter_map(|(i, l)| match l {
                    Some(Label::Value(v)) => Some((i, *v)),
                    Some(Label::Class(c)) => Some((i, *c as f64)),
                    None => None,
                })
                .collect();
            let ys: Vec<f64> = rows.iter().map(|r| r.1).collect();
            // A regressor's value is its first column (none: undefined).
            let p = |a: &Array2<f32>| match (a.ncols(), rows.len()) {
                (0, _) | (_, 0) => f64::NAN,
                _ => pearson(
                    &rows
                        .iter()
                        .map(|&(i, _)| a.get((i, 0)).map_or(f64::NAN, |&x| x as f64))
                        .collect::<Vec<_>>(),
                    &ys,
                ),
            };
            (p(out), p(own))
        }
    };
    let bound = if b.relative {
        reference - b.amount()
    } else {
        b.amount()
    };
    let finite = |a: &Array2<f32>| a.iter().all(|x| x.is_finite());
    // Non-finite outputs make any metric meaningless, whatever it reads.
    let value = if finite(out) && finite(own) && out.nrows() > 0 {
        value
    } else {
        f64::NAN
    };
    Measured {
        budget: b.to_mgen(),
        metric: b.metric.name(),
        value,
        bound,
        // A hair of tolerance for the float rounding of the bound itself;
        // NaN compares false, so a non-finite value or bound never holds.
        holds: value.is_finite() && bound.is_finite() && value >= bound - 1e-12,
    }
}

/// The measures of a candidate stopped early (`hopeless`): every budget
/// fails, with no value.
pub(super) fn failed(budgets: &[Budget]) -> Vec<Measured> {
    budgets
        .iter()
        .map(|b| Measured {
            budget: b.to_mgen(),
            metric: b.metric.name(),
            value: f64::NAN,
            bound: f64::NAN,
            holds: false,
        })
        .collect()
}

/// Whether a budget already fails on the first rows of a candidate's
/// outputs whatever the remaining rows are (agreement: too many
/// disagreements; cosine of embeddings: a row below the bound).
pub(super) fn hopeless(
    b: &Budget,
    head: &Head,
    rows: &[Vec<f32>],
    own: &Array2<f32>,
    total: usize,
) -> bool {
    match (b.metric, head) {
        (Metric::Agreement, _) => {
            let wrong = rows
                .iter()
                .zip(own.rows())
                .filter(|(r, o)| !agree(ndarray::ArrayView1::from(r.as_slice()), *o))
                .count();
            // Even if every remaining row agreed:
            ((total - wrong) as f64 / total.max(1) as f64) < b.amount() - 1e-12
        }
        (Metric::Cosine, Head::Embed { .. }) => rows.iter().zip(own.rows()).any(|(r, o)| {
            let a: Vec<f64> = r.iter().map(|&x| x as f64).collect();
            let c: Vec<f64> = o.iter().map(|&x| x as f64).collect();
            let cos = cosine(&a, &c);
            cos.is_nan() || cos < b.amount() - 1e-12
        }),
        _ => false,
    }
}
