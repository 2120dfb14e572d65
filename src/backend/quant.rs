//! Quantisation of weights (per output row, symmetric) and activations
//! (per tensor, static scale calibrated on the workload's inputs).
//!
//! Weights: `s_o = max|W[o,:]| / (2^(b−1) − 1)`, `q = round(W/s_o)` in
//! `[−(2^(b−1) − 1), 2^(b−1) − 1]`. Inputs: `s_x = max|x| / (2^(b−1) − 1)`
//! over the calibration run, or the scale that minimises the squared error on
//! the calibration samples ([`mse_scale`], what the compiler uses);
//! `x_q = clamp(round(x/s_x), −2^(b−1), 2^(b−1) − 1)`.

use ndarray::{Array1, Array2, ArrayView2};

/// A quantised matrix: `W ≈ diag(scale) · q · diag(smooth)⁻¹`; the
/// crossbars hold `q`, the digital unit divides input `c` by `smooth[c]`.
#[derive(Debug, Clone, PartialEq)]
pub struct QMatrix {
    /// `[out, in]`, values within ±(2^(bits−1) − 1).
    pub q: Array2<i16>,
    /// `[out]`.
    pub scale: Array1<f32>,
    /// `[in]`: per-input-channel divisors (all 1 without smoothing).
    pub smooth: Array1<f32>,
    pub bits: u32,
}

/// The SmoothQuant migration strengths α the compiler tries per matrix
/// (`None`: no smoothing); it keeps the one with the smallest output error
/// on calibration tokens ([`choose_input_treatment`]).
pub const SMOOTHING_CANDIDATES: [Option<f32>; 5] =
    [None, Some(0.5), Some(0.6), Some(0.7), Some(0.8)];

/// Per-channel divisors `s_c = max|x_c|^α / max|W[:,c]|^(1−α)` (1 where a
/// channel or a weight column is all zero), kept within [1e-4, 1e4].
pub fn smoothing(xmax: &[f32], w: ArrayView2<f32>, alpha: f32) -> Array1<f32> {
    Array1::from_iter(xmax.iter().enumerate().map(|(c, &x)| {
        let wm = w.column(c).fold(0.0f32, |a, &b| a.max(b.abs()));
        if x > 0.0 && wm > 0.0 {
            (x.powf(alpha) / wm.powf(1.0 - alpha)).clamp(1e-4, 1e4)
        } else {
            1.0
        }
    }))
}

/// Chooses a matrix's input treatment from calibration data: for every
/// candidate smoothing, the MSE-optimal input scale of the smoothed
/// `samples` (value, channel), then the squared error of the quantised
/// product against the float one on the calibration token `rows`
/// (`[tokens, in]`); the smallest wins. Returns (input scale, divisors).
pub fn choose_input_treatment(
    w_full: ArrayView2<f32>,
    xmax: &[f32],
    samples: &[(f32, u32)],
    rows: ArrayView2<f32>,
    weight_bits: u32,
    input_bits: u32,
) -> (f64, Array1<f32>) {
    // (Estimating the error on a subset of the outputs was tried: it picks
    // worse treatments — MiniLM's worst cosine fell from 0.986 to 0.957.)
    let w = w_full;
    let exact = rows.dot(&w.t());
    let mut best: Option<(f64, f64, Array1<f32>)> = None;
    for cand in SMOOTHING_CANDIDATES {
        let smooth = match cand {
            Some(a) => smoothing(xmax, w_full, a),
            None => Array1::ones(w.ncols()),
        };
        let smoothed: Vec<f32> = samples
            .iter()
            .map(|&(x, c)| x / smooth[c as usize])
            .collect();
        let xs = mse_scale(&smoothed, input_bits);
        let q = smooth_and_quantize(w, &smooth, weight_bits);
        let mut wdq = q.q.mapv(|v| v as f32);
        for (mut row, &s) in wdq.rows_mut().into_iter().zip(q.scale.iter()) {
            row *= s;
        }
        let mut xq = rows.to_owned();
        for mut r in xq.rows_mut() {
            for (v, &s) in r.iter_mut().zip(smooth.iter()) {
                *v = quantize_input(*v / s, xs as f32, input_bits) as f32 * xs as f32;
            }
        }
        let err: f64 = (&xq.dot(&wdq.t()) - &exact)
            .iter()
            .map(|&d| (d as f64) * (d as f64))
            .sum();
        if best.as_ref().is_none_or(|b| err < b.0) {
            best = Some((err, xs, smooth));
        }
    }
    let (_, xs, smooth) = best.unwrap_or((0.0, 1.0, Array1::ones(w.ncols())));
    (xs, smooth)
}

/// Quantises `W · diag(smooth)` (see [`QMatrix`]).
pub fn smooth_and_quantize(w: ArrayView2<f32>, smooth: &Array1<f32>, bits: u32) -> QMatrix {
    let mut ws = w.to_owned();
    for mut row in ws.rows_mut() {
        row *= smooth;
    }
    QMatrix {
        smooth: smooth.clone(),
        ..quantize_weights(ws.view(), bits)
    }
}

/// Quantises `w` (`[out, in]`) to `bits` per weight.
pub fn quantize_weights(w: ArrayView2<f32>, bits: u32) -> QMatrix {
    let qmax = ((1i32 << (bits - 1)) - 1).max(1) as f32;
    let mut q = Array2::<i16>::zeros(w.dim());
    let mut scale = Array1::<f32>::zeros(w.nrows());
    for (o, row) in w.rows().into_iter().enumerate() {
        let m = row.fold(0.0f32, |a, &b| a.max(b.abs()));
        let s = if m > 0.0 { m / qmax } else { 1.0 };
        scale[o] = s;
        for (i, &v) in row.iter().enumerate() {
            q[[o, i]] = (v / s).round().clamp(-qmax, qmax) as i16;
        }
    }
    let smooth = Array1::ones(w.ncols());
    QMatrix {
        q,
        scale,
        smooth,
        bits,
    }
}

/// The static scale of an input whose largest magnitude is `max_abs`.
pub fn input_scale(max_abs: f64, bits: u32) -> f64 {
    let qmax = ((1i64 << (bits - 1)) - 1).max(1) as f64;
    if max_abs > 0.0 && max_abs.is_finite() {
        max_abs / qmax
    } else {
        1.0
    }
}

/// The static scale that minimises the mean squared quantisation error of
/// the calibration `samples` (clipping included), searched over clipping
/// points from the largest magnitude down to 5% of it. Activations of
/// transformers have rare large outliers; clipping them costs less error
/// than the resolution a max-abs scale gives away.
pub fn mse_scale(samples: &[f32], bits: u32) -> f64 {
    let max = samples.iter().fold(0.0f32, |a, &b| a.max(b.abs())) as f64;
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let mut best = (f64::INFINITY, input_scale(max, bits));
    for k in 0..40 {
        let clip = max * (1.0 - k as f64 * 0.95 / 39.0);
        let s = input_scale(clip, bits);
        let err: f64 = samples
            .iter()
            .map(|&x| {
                let q = quantize_input(x, s as f32, bits) as f64 * s;
                (q - x as f64).powi(2)
            })
            .sum();
        if err < best.0 {
            best = (err, s);
        }
    }
    best.1
}

/// Quantises one input value.
pub fn quantize_input(x: f32, scale: f32, bits: u32) -> i32 {
    let hi = (1i32 << (bits - 1)) - 1;
    let lo = -(1i32 << (bits - 1));
    ((x / scale).round() as i64).clamp(lo as i64, hi as i64) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn round_trip_error_is_within_half_a_step() {
        let w = array![[0.5f32, -0.25, 0.1], [0.0, 0.0, 0.0], [-1.0, 0.3, 0.999]];
        let q = quantize_weights(w.view(), 8);
        for o in 0..3 {
            for i in 0..3 {
                let back = q.q[[o, i]] as f32 * q.scale[o];
                assert!((back - w[[o, i]]).abs() <= q.scale[o] / 2.0 + 1e-7);
            }
        }
        assert_eq!(q.q[[0, 0]], 127);
        assert_eq!(q.q[[2, 0]], -127);
        assert_eq!(quantize_input(10.0, 0.01, 8), 127);
        assert_eq!(quantize_input(-10.0, 0.01, 8), -128);
    }
}
