//! A budget holds only on a finite metric: NaN or infinite outputs, a
//! correlation without variance and an empty set of rows all fail, for
//! every metric (they once passed: a minimum over cosines dropped NaN and a
//! non-finite worst case was read as 1.0).

use mgen::data::Label;
use mgen::passes::share::{measure, pearson, worst};
use mgen::spec::{Budget, Head, Metric, Pool};
use ndarray::{Array2, array};

fn budget(metric: Metric, value: f64, relative: bool) -> Budget {
    Budget {
        metric,
        value,
        relative,
        default: false,
    }
}

const CLS: Head = Head::Classify {
    classes: 2,
    pool: Pool::Cls,
};
const EMB: Head = Head::Embed { pool: Pool::Mean };
const REG: Head = Head::Regress { pool: Pool::Cls };

fn nan_row(a: &Array2<f32>) -> Array2<f32> {
    let mut b = a.clone();
    b[[0, 0]] = f32::NAN;
    b
}

#[test]
fn finite_outputs_that_agree_hold() {
    let own = array![[1.0f32, 0.0], [0.0, 1.0]];
    let m = measure(
        &budget(Metric::Agreement, 99.0, false),
        &CLS,
        &own,
        &own,
        &[],
    );
    assert!(m.holds && m.value == 1.0, "{m:?}");
    let m = measure(&budget(Metric::Cosine, 0.99, false), &EMB, &own, &own, &[]);
    assert!(m.holds, "{m:?}");
}

#[test]
fn nan_outputs_fail_every_metric() {
    let own = array![[1.0f32, 0.0], [0.0, 1.0]];
    let bad = nan_row(&own);
    let labels = [Some(Label::Class(0)), Some(Label::Class(1))];
    for (b, head) in [
        (budget(Metric::Agreement, 50.0, false), CLS),
        (budget(Metric::Cosine, 0.5, false), EMB),
        (budget(Metric::Cosine, 0.5, false), CLS),
        (budget(Metric::Accuracy, 10.0, true), CLS),
    ] {
        let m = measure(&b, &head, &bad, &own, &labels);
        assert!(!m.holds, "{b:?} held on NaN outputs: {m:?}");
        // The task's own model itself non-finite: nothing to compare against.
        let m = measure(&b, &head, &own, &bad, &labels);
        assert!(!m.holds, "{b:?} held against a NaN reference: {m:?}");
    }
    let inf = array![[f32::INFINITY], [1.0]];
    let own1 = array![[0.5f32], [1.0]];
    let labels = [Some(Label::Value(0.5)), Some(Label::Value(1.0))];
    let m = measure(
        &budget(Metric::Pearson, 0.5, true),
        &REG,
        &inf,
        &own1,
        &labels,
    );
    assert!(!m.holds, "{m:?}");
}

#[test]
fn pearson_without_variance_is_undefined_and_fails() {
    assert!(pearson(&[1.0, 2.0, 3.0], &[5.0, 5.0, 5.0]).is_nan());
    assert!(pearson(&[1.0], &[2.0]).is_nan());
    assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]) - 1.0).abs() < 1e-12);
    let out = array![[0.1f32], [0.2], [0.3]];
    let constant = [Some(Label::Value(1.0)); 3];
    let m = measure(
        &budget(Metric::Pearson, 0.1, true),
        &REG,
        &out,
        &out,
        &constant,
    );
    assert!(!m.holds, "Pearson against constant labels held: {m:?}");
}

#[test]
fn no_rows_fail() {
    let empty = Array2::<f32>::zeros((0, 2));
    let m = measure(
        &budget(Metric::Cosine, 0.5, false),
        &EMB,
        &empty,
        &empty,
        &[],
    );
    assert!(!m.holds, "{m:?}");
    let m = measure(
        &budget(Metric::Agreement, 0.0, false),
        &CLS,
        &empty,
        &empty,
        &[],
    );
    assert!(!m.holds, "{m:?}");
}

#[test]
fn worst_propagates_nan_and_has_no_value_when_empty() {
    assert_eq!(worst([0.9, 0.5, 0.7]), 0.5);
    assert!(worst([0.9, f64::NAN, 0.7]).is_nan());
    assert!(worst(std::iter::empty()).is_nan());
}

/// Accuracy and Pearson read only the rows that carry a label: unlabelled
/// rows count neither as wrong nor as a label of 0, and with no labelled
/// row the figure is undefined and the budget fails (over a workload's
/// unlabelled requests accuracy once read 0 on both sides and held).
#[test]
fn label_metrics_read_only_the_labelled_rows() {
    let out = array![[1.0f32, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]];
    let acc = budget(Metric::Accuracy, 1.0, true);
    let labels = [Some(Label::Class(0)), None, Some(Label::Class(0)), None];
    let m = measure(&acc, &CLS, &out, &out, &labels);
    assert!(m.value == 1.0 && m.holds, "two of two labelled rows: {m:?}");
    let m = measure(&acc, &CLS, &out, &out, &[None; 4]);
    assert!(m.value.is_nan() && !m.holds, "{m:?}");
    let reg = array![[1.0f32], [9.0], [2.0], [9.0], [3.0]];
    let p = budget(Metric::Pearson, 0.01, true);
    let (a, b, c) = (Label::Value(1.0), Label::Value(2.0), Label::Value(3.0));
    let ys = [Some(a), None, Some(b), None, Some(c)];
    let m = measure(&p, &REG, &reg, &reg, &ys);
    assert!((m.value - 1.0).abs() < 1e-12 && m.holds, "{m:?}");
    let m = measure(&p, &REG, &reg, &reg, &[None; 5]);
    assert!(m.value.is_nan() && !m.holds, "{m:?}");
}
