//! The simulator's device noise against its analytic statistics
//! (docs/simulator.md §9).
//!
//! One 128×128 image on 2-bit cells whose every level is 1 or 2 (so a 2%
//! programming error, cut at 6σ, never reaches the clip at 0 or 3) and a
//! 10-bit ADC (so every slice is clip-free and takes the fast path). The
//! MVM output error `e_o = noisy − noise-free` then has mean 0 and the
//! variance written out below from the model itself — a sum over rows,
//! slices and DAC digits, not the simulator's pre-summed form — plus the
//! documented ADC-rounding term (1/12 LSB² per conversion, each weighted
//! by its shift). Over `SAMPLES` chips (programming noise) or requests
//! (read noise) and all 128 outputs, the standardised errors must have
//! mean within 4 standard errors of 0 and variance within 4 standard
//! errors of 1. The streams are seeded, so each test is deterministic.

use mgen::backend::quant::{InputQuant, QMatrix};
use mgen::hw::{Hardware, Noise, Signs};
use ndarray::{Array1, Array2, ArrayD};

const N: usize = 128;
const SAMPLES: usize = 64;

fn hardware(noise: Noise) -> Hardware {
    Hardware {
        rows: N as u64,
        cell_bits: 2,
        dac_bits: 1,
        adc_bits: 10,
        weight_bits: 8,
        input_bits: 8,
        signs: Signs::Offset,
        noise,
        ..Hardware::default()
    }
}

/// A fixed pseudo-random sequence (an LCG; the test's own, not the
/// simulator's streams).
fn lcg(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed;
    move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s >> 33
    }
}

/// Weights whose stored code `q + 128` has every base-4 digit in {1, 2}.
fn weights() -> QMatrix {
    let mut r = lcg(11);
    let q = Array2::from_shape_fn((N, N), |_| {
        let u: i16 = (0..4).map(|k| (1 + (r() & 1) as i16) << (2 * k)).sum();
        u - 128
    });
    QMatrix {
        q,
        scale: Array1::ones(N),
        smooth: Array1::ones(N),
        bits: 8,
    }
}

/// One token of integer inputs in [−128, 127]: with scale 1 and zero 128
/// its codes are `x + 128`.
fn input() -> (Array2<f32>, Vec<f64>) {
    let mut r = lcg(23);
    let x = Array2::from_shape_fn((1, N), |_| (r() % 256) as f32 - 128.0);
    let codes = x.iter().map(|&v| v as f64 + 128.0).collect();
    (x, codes)
}

/// The stored level of slice `k` of weight `[o, r]`.
fn level(q: &QMatrix, o: usize, r: usize, k: u32) -> f64 {
    (((q.q[[o, r]] + 128) >> (2 * k)) & 3) as f64
}

/// The fast path's ADC-rounding variance of one output: one row block,
/// four slices (weight 4^k) and eight input digits (weight 2^j), 1/12 each.
fn rounding_variance() -> f64 {
    let slices: f64 = (0..4).map(|k| 16f64.powi(k)).sum();
    let digits: f64 = (0..8).map(|j| 4f64.powi(j)).sum();
    slices * digits / 12.0
}

/// (mean, variance) of the standardised errors `e / sd` pooled over
/// every sample and output.
fn standardised(errors: &[Array1<f64>], sd: &[f64]) -> (f64, f64) {
    let z: Vec<f64> = errors
        .iter()
        .flat_map(|e| e.iter().zip(sd).map(|(e, s)| e / s))
        .collect();
    let n = z.len() as f64;
    let mean = z.iter().sum::<f64>() / n;
    let var = z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var)
}

/// Four standard errors of a standard normal sample's mean and variance.
fn bounds() -> (f64, f64) {
    let n = (SAMPLES * N) as f64;
    (4.0 / n.sqrt(), 4.0 * (2.0 / n).sqrt())
}

/// The errors standardised by `sd` match N(0, 1) within [`bounds`]; and
/// the test has the power to tell: by a standard deviation 10% off, they
/// do not.
fn assert_standard(errors: &[Array1<f64>], sd: &[f64], what: &str) {
    let (b_mean, b_var) = bounds();
    let (mean, var) = standardised(errors, sd);
    assert!(
        mean.abs() < b_mean,
        "{what}: mean of standardised errors {mean:.4} (bound ±{b_mean:.4})"
    );
    assert!(
        (var - 1.0).abs() < b_var,
        "{what}: variance of standardised errors {var:.4} (bound 1 ± {b_var:.4})"
    );
    let wrong: Vec<f64> = sd.iter().map(|s| s * 1.1).collect();
    let (_, var) = standardised(errors, &wrong);
    assert!(
        (var - 1.0).abs() >= b_var,
        "{what}: a 10% error in σ passes"
    );
}

fn out(
    img: &mgen::sim::exec::PImage,
    x: &Array2<f32>,
    hw: &Hardware,
    at: (u64, u64),
) -> Array1<f64> {
    let y: ArrayD<f32> = mgen::sim::exec::mvm_at(img, &x.clone().into_dyn(), hw, false, at);
    y.iter().map(|&v| v as f64).collect()
}

#[test]
fn programming_error_has_the_analytic_mean_and_variance() {
    let (q, (x, codes)) = (weights(), input());
    let xq = InputQuant::symmetric(1.0, 8);
    let clean_hw = hardware(Noise::default());
    let clean = out(
        &mgen::sim::exec::prepare(&q, xq, &clean_hw, false, 0),
        &x,
        &clean_hw,
        (0, 0),
    );
    let sigma = 0.02;
    let hw = hardware(Noise {
        program: sigma,
        calibrate: false,
        ..Noise::default()
    });
    let errors: Vec<Array1<f64>> = (0..SAMPLES as u64)
        .map(|chip| {
            let img = mgen::sim::exec::prepare(&q, xq, &hw, false, chip);
            assert_eq!(img.fast_fraction, 1.0, "every slice is clip-free");
            out(&img, &x, &hw, (0, 0)) - &clean
        })
        .collect();
    // Each cell's level moves by N(0, (3σ)²); output o sums x_r · 4^k · δ.
    let cell_var = (3.0 * sigma).powi(2);
    let slices: f64 = (0..4).map(|k| 16f64.powi(k)).sum();
    let sd: Vec<f64> = (0..N)
        .map(|_| {
            let v: f64 = codes.iter().map(|c| c * c * slices * cell_var).sum();
            (v + rounding_variance()).sqrt()
        })
        .collect();
    assert_standard(&errors, &sd, "programming error");
}

#[test]
fn read_noise_has_the_analytic_mean_and_variance() {
    let (q, (x, codes)) = (weights(), input());
    let xq = InputQuant::symmetric(1.0, 8);
    let sigma = 0.1;
    let clean_hw = hardware(Noise::default());
    let clean = out(
        &mgen::sim::exec::prepare(&q, xq, &clean_hw, false, 0),
        &x,
        &clean_hw,
        (0, 0),
    );
    let hw = hardware(Noise {
        read: sigma,
        calibrate: false,
        ..Noise::default()
    });
    let img = mgen::sim::exec::prepare(&q, xq, &hw, false, 3);
    assert_eq!(img.fast_fraction, 1.0, "every slice is clip-free");
    let errors: Vec<Array1<f64>> = (0..SAMPLES as u64)
        .map(|request| out(&img, &x, &hw, (request, 5)) - &clean)
        .collect();
    // Each conversion (slice k, digit j) reads Σ_r g·d with a fluctuation
    // σ·g·d per cell, shifted by 4^k · 2^j.
    let sd: Vec<f64> = (0..N)
        .map(|o| {
            let mut v = 0.0;
            for (r, &c) in codes.iter().enumerate() {
                for k in 0..4 {
                    let g = level(&q, o, r, k);
                    for j in 0..8 {
                        let d = ((c as u64 >> j) & 1) as f64;
                        v += (sigma * g * d * 4f64.powi(k as i32) * 2f64.powi(j)).powi(2);
                    }
                }
            }
            (v + rounding_variance()).sqrt()
        })
        .collect();
    assert_standard(&errors, &sd, "read noise");
}
