//! Quantisation of weights (per output row, symmetric) and activations
//! (per tensor, static scale calibrated on the workload's inputs).
//!
//! Weights: `s_o = max|W[o,:]| / (2^(b−1) − 1)`, `q = round(W/s_o)` in
//! `[−(2^(b−1) − 1), 2^(b−1) − 1]`.
//!
//! Inputs ([`InputQuant`]): the DAC streams an unsigned code
//! `x_u = clamp(round(x/s_x) + z, 0, 2^b − 1)` and `x ≈ s_x · (x_u − z)`;
//! the zero point `z` is removed digitally after the crossbar
//! (`Σ_r W (x_u − z) = Σ_r W x_u − z · Σ_r W`, a per-column constant), so
//! any `z` costs the same. Symmetric: `z = 2^(b−1)` and
//! `s_x = max|x| / (2^(b−1) − 1)` ([`input_scale`]) or the scale minimising
//! the squared error on calibration samples ([`mse_scale`]). Asymmetric: `z`
//! and `s_x` cover a clipped `[lo, hi]` chosen by squared error
//! ([`mse_asymmetric`]) — one more bit of resolution for one-sided inputs
//! such as GELU outputs. The compiler keeps, per matrix, whichever
//! reproduces the float product best ([`choose_input_treatment`]).

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

/// The static quantisation of one matrix's input (see the module docs):
/// `x ≈ scale · (x_u − zero)`, `x_u` an unsigned `bits`-bit code.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputQuant {
    pub scale: f64,
    /// The code of 0, within `[0, 2^bits − 1]`.
    pub zero: i64,
}

impl InputQuant {
    /// The symmetric quantisation with this scale (`zero = 2^(bits−1)`).
    pub fn symmetric(scale: f64, bits: u32) -> Self {
        InputQuant {
            scale,
            zero: 1i64 << (bits - 1),
        }
    }

    /// The unsigned code of `x`. For a symmetric quantisation it is
    /// [`quantize_input`] plus `2^(bits−1)`.
    pub fn code(&self, x: f32, bits: u32) -> i64 {
        ((x / self.scale as f32).round() as i64 + self.zero).clamp(0, (1i64 << bits) - 1)
    }

    /// `x` quantised and back.
    pub fn round_trip(&self, x: f32, bits: u32) -> f32 {
        (self.code(x, bits) - self.zero) as f32 * self.scale as f32
    }
}

/// What calibration saw at one matrix's input: per-channel maxima, strided
/// (value, channel) samples and whole token rows `[tokens, in]`.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub xmax: &'a [f32],
    pub samples: &'a [(f32, u32)],
    pub rows: ArrayView2<'a, f32>,
}

/// Chooses a matrix's input treatment from calibration data: for every
/// candidate smoothing, the MSE-optimal symmetric and asymmetric
/// quantisations of the smoothed `samples` (value, channel), then the
/// squared error of the quantised product against the float one on the
/// calibration token `rows` (`[tokens, in]`); the smallest wins. Returns
/// (input quantisation, divisors).
pub fn choose_input_treatment(
    w: ArrayView2<f32>,
    xmax: &[f32],
    samples: &[(f32, u32)],
    rows: ArrayView2<f32>,
    weight_bits: u32,
    input_bits: u32,
) -> (InputQuant, Array1<f32>) {
    let (smooth, q) = choose_shared_treatment(
        w,
        &[Observed {
            xmax,
            samples,
            rows,
        }],
        weight_bits,
        input_bits,
        true,
    );
    (q[0], smooth)
}

/// [`choose_input_treatment`] for one matrix several MVMs multiply
/// different inputs by (they share its crossbars, so one smoothing): per
/// candidate smoothing (none only, unless `smoothing`), each user's best
/// quantisation by its own product error; the candidate with the smallest
/// total error wins. Per-channel maxima are the users' largest. Returns
/// (divisors, each user's input quantisation).
pub fn choose_shared_treatment(
    w: ArrayView2<f32>,
    users: &[Observed],
    weight_bits: u32,
    input_bits: u32,
    smoothing_allowed: bool,
) -> (Array1<f32>, Vec<InputQuant>) {
    // (Estimating the error on a subset of the outputs was tried: it picks
    // worse treatments — MiniLM's worst cosine fell from 0.986 to 0.957.)
    let mut xmax = vec![0.0f32; w.ncols()];
    for u in users {
        for (a, &b) in xmax.iter_mut().zip(u.xmax) {
            *a = a.max(b);
        }
    }
    let exact: Vec<Array2<f32>> = users.iter().map(|u| u.rows.dot(&w.t())).collect();
    let mut best: Option<(f64, Array1<f32>, Vec<InputQuant>)> = None;
    for cand in SMOOTHING_CANDIDATES {
        let smooth = match cand {
            Some(_) if !smoothing_allowed => continue,
            Some(a) => smoothing(&xmax, w, a),
            None => Array1::ones(w.ncols()),
        };
        let q = smooth_and_quantize(w, &smooth, weight_bits);
        let mut wdq = q.q.mapv(|v| v as f32);
        for (mut row, &s) in wdq.rows_mut().into_iter().zip(q.scale.iter()) {
            row *= s;
        }
        let mut total = 0.0;
        let mut chosen = Vec::with_capacity(users.len());
        for (u, exact) in users.iter().zip(&exact) {
            let smoothed: Vec<f32> = u
                .samples
                .iter()
                .map(|&(x, c)| x / smooth[c as usize])
                .collect();
            let sym = InputQuant::symmetric(mse_scale(&smoothed, input_bits), input_bits);
            let mut options = vec![sym];
            if one_sided(&smoothed) {
                options.push(mse_asymmetric(&smoothed, input_bits));
            }
            let mut mine: Option<(f64, InputQuant)> = None;
            for xq_params in options {
                let mut xq = u.rows.to_owned();
                for mut r in xq.rows_mut() {
                    for (v, &s) in r.iter_mut().zip(smooth.iter()) {
                        *v = xq_params.round_trip(*v / s, input_bits);
                    }
                }
                let err: f64 = (&xq.dot(&wdq.t()) - exact)
                    .iter()
                    .map(|&d| (d as f64) * (d as f64))
                    .sum();
                if mine.as_ref().is_none_or(|b| err < b.0) {
                    mine = Some((err, xq_params));
                }
            }
            let (err, xq) = mine.unwrap_or((0.0, sym));
            total += err;
            chosen.push(xq);
        }
        if best.as_ref().is_none_or(|b| total < b.0) {
            best = Some((total, smooth, chosen));
        }
    }
    match best {
        Some((_, smooth, q)) => (smooth, q),
        None => (
            Array1::ones(w.ncols()),
            vec![InputQuant::symmetric(1.0, input_bits); users.len()],
        ),
    }
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

/// The asymmetric quantisation (zero point and scale) whose clipped range
/// `[lo, hi] ∋ 0` minimises the squared error of the `samples` (at most
/// 16,384 of them, strided): coordinate descent over 40 clipping points per
/// end, from the extreme value down to 5% of it, two rounds. All-zero
/// samples give the symmetric quantisation with scale 1.
pub fn mse_asymmetric(samples: &[f32], bits: u32) -> InputQuant {
    let step = samples.len().div_ceil(1 << 14).max(1);
    let sub: Vec<f32> = samples.iter().step_by(step).copied().collect();
    let lo0 = sub.iter().fold(0.0f32, |a, &b| a.min(b)) as f64;
    let hi0 = sub.iter().fold(0.0f32, |a, &b| a.max(b)) as f64;
    if !(hi0 - lo0 > 0.0 && (hi0 - lo0).is_finite()) {
        return InputQuant::symmetric(1.0, bits);
    }
    let levels = ((1i64 << bits) - 1) as f64;
    let quant = |lo: f64, hi: f64| -> InputQuant {
        let scale = (hi - lo) / levels;
        InputQuant {
            scale,
            zero: ((-lo / scale).round() as i64).clamp(0, (1i64 << bits) - 1),
        }
    };
    let error = |q: InputQuant| -> f64 {
        sub.iter()
            .map(|&x| (q.round_trip(x, bits) as f64 - x as f64).powi(2))
            .sum()
    };
    let shrink = |k: usize| 1.0 - k as f64 * 0.95 / 39.0;
    let (mut lo, mut hi) = (lo0, hi0);
    let mut best = (error(quant(lo, hi)), quant(lo, hi));
    for _ in 0..2 {
        for k in 0..40 {
            let h = hi0 * shrink(k);
            let q = quant(lo, h);
            let e = error(q);
            if e < best.0 {
                best = (e, q);
                hi = h;
            }
        }
        for k in 0..40 {
            let l = lo0 * shrink(k);
            let q = quant(l, hi);
            let e = error(q);
            if e < best.0 {
                best = (e, q);
                lo = l;
            }
        }
    }
    best.1
}

/// Whether samples are one-sided enough for a zero point: the smaller side
/// reaches at most [`ONE_SIDED`] of the larger. Only such inputs (GELU
/// outputs) are offered a zero point: on roughly symmetric inputs a
/// shifted, clipped range lowers one matrix's squared error on the
/// calibration rows but biases its rounding, and the bias accumulates over
/// layers (measured on glue8-mini: output error 0.057 → 0.073 when every
/// input could take one).
pub fn one_sided(samples: &[f32]) -> bool {
    let lo = samples.iter().fold(0.0f32, |a, &b| a.min(b)).abs();
    let hi = samples.iter().fold(0.0f32, |a, &b| a.max(b));
    lo.min(hi) <= ONE_SIDED * lo.max(hi)
}

/// See [`one_sided`].
pub const ONE_SIDED: f32 = 0.25;

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

    #[test]
    fn a_symmetric_code_is_the_signed_value_offset() {
        for bits in [4, 8, 12] {
            let q = InputQuant::symmetric(0.037, bits);
            for k in -400..400 {
                let x = k as f32 * 0.013;
                assert_eq!(
                    q.code(x, bits),
                    quantize_input(x, 0.037, bits) as i64 + (1 << (bits - 1))
                );
            }
        }
    }

    /// GELU outputs are one-sided (≥ −0.17): a zero point spends every code
    /// on the range they occupy, which roughly halves the squared error of
    /// the best symmetric scale; the treatment choice then takes it.
    #[test]
    fn one_sided_inputs_get_a_zero_point() {
        let gelu = |x: f32| 0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044715 * x * x * x)).tanh());
        let xs: Vec<f32> = (0..4096)
            .map(|k| gelu(((k * 7919) % 4096) as f32 / 4096.0 * 6.0 - 3.0))
            .collect();
        let sym = InputQuant::symmetric(mse_scale(&xs, 8), 8);
        let asym = mse_asymmetric(&xs, 8);
        let err = |q: InputQuant| -> f64 {
            xs.iter()
                .map(|&x| (q.round_trip(x, 8) as f64 - x as f64).powi(2))
                .sum()
        };
        assert!(one_sided(&xs));
        assert!(asym.zero < 40, "zero point {}", asym.zero);
        assert!(err(asym) < err(sym) * 0.5, "{} vs {}", err(asym), err(sym));
        // As a matrix's input: the zero point is chosen.
        let w = Array2::from_shape_fn((16, 64), |(o, i)| ((o * 31 + i * 17) % 23) as f32 - 11.0);
        let rows = Array2::from_shape_fn((64, 64), |(t, i)| xs[(t * 64 + i) % xs.len()]);
        let samples: Vec<(f32, u32)> = rows
            .indexed_iter()
            .map(|((_, c), &v)| (v, c as u32))
            .collect();
        let xmax: Vec<f32> = (0..64)
            .map(|c| rows.column(c).fold(0.0f32, |a, &b| a.max(b.abs())))
            .collect();
        let (q, _) = choose_input_treatment(w.view(), &xmax, &samples, rows.view(), 8, 8);
        assert_ne!(q.zero, 128, "{q:?}");
        // Shifted but two-sided inputs are never offered one.
        let two: Vec<(f32, u32)> = samples.iter().map(|&(v, c)| (v - 0.6, c)).collect();
        let rows2 = rows.mapv(|v| v - 0.6);
        assert!(!one_sided(&two.iter().map(|s| s.0).collect::<Vec<_>>()));
        let (q2, _) = choose_input_treatment(w.view(), &xmax, &two, rows2.view(), 8, 8);
        assert_eq!(q2.zero, 128, "{q2:?}");
    }
}
