//! The statistics budgets are measured with.
//!
//! Invariant: none of them hides a non-finite input. A NaN or infinite
//! row agrees with nothing, a worst case over a NaN (or over nothing) is NaN,
//! and a correlation without variance is NaN, so a budget measured with them
//! can hold only on finite evidence.

/// Index of the largest value (first on ties).
pub fn argmax(row: ndarray::ArrayView1<f32>) -> usize {
    let mut best = (0, f32::NEG_INFINITY);
    for (j, &x) in row.iter().enumerate() {
        if x > best.1 {
            best = (j, x);
        }
    }
    best.0
}

/// Whether two output rows predict the same class: both finite and with
/// the same argmax (a row holding NaN or infinity agrees with nothing).
pub fn agree(a: ndarray::ArrayView1<f32>, b: ndarray::ArrayView1<f32>) -> bool {
    a.iter().chain(b.iter()).all(|x| x.is_finite()) && argmax(a) == argmax(b)
}

/// The smallest value, NaN if any value is NaN or there are none (a
/// worst case over no evidence, or over a NaN, passes no budget).
pub fn worst(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut worst = f64::NAN;
    for (i, v) in values.into_iter().enumerate() {
        if v.is_nan() {
            return f64::NAN;
        }
        worst = if i == 0 { v } else { worst.min(v) };
    }
    worst
}

/// The lower `q`-quantile of `values` (`q` in [0, 1]): the value at
/// position `floor(q·(n−1))` in ascending order, so `q = 0` is the smallest
/// and `q = 1` the largest. NaN if any value is NaN or there are none (as
/// [`worst`]).
pub fn low_quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let q = if q.is_finite() {
        q.clamp(0.0, 1.0)
    } else {
        0.0
    };
    v[(q * (v.len() - 1) as f64).floor() as usize]
}

/// Cosine of two vectors; 1 for two zero vectors (identical), NaN when an
/// input is NaN.
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    if na == 0.0 && nb == 0.0 {
        1.0
    } else {
        d / (na * nb).max(1e-300)
    }
}

/// Pearson correlation of two series; NaN where it is undefined (fewer
/// than two values, or a series without variance).
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().max(1) as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let ca: Vec<f64> = a.iter().map(|x| x - ma).collect();
    let cb: Vec<f64> = b.iter().map(|x| x - mb).collect();
    let var = |c: &[f64]| c.iter().map(|x| x * x).sum::<f64>();
    if a.len() < 2 || var(&ca) == 0.0 || var(&cb) == 0.0 {
        return f64::NAN;
    }
    cosine(&ca, &cb)
}

#[cfg(test)]
mod quantile_tests {
    use super::low_quantile;

    #[test]
    fn low_quantile_picks_from_the_low_end() {
        let v = [0.9, 0.5, 0.7, 0.8, 0.6];
        assert_eq!(low_quantile(&v, 0.0), 0.5);
        assert_eq!(low_quantile(&v, 0.25), 0.6);
        assert_eq!(low_quantile(&v, 0.5), 0.7);
        assert_eq!(low_quantile(&v, 1.0), 0.9);
        assert!(low_quantile(&[0.1, f64::NAN], 0.5).is_nan());
        assert!(low_quantile(&[], 0.5).is_nan());
    }
}
