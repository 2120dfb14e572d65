//! The simulator's device noise against its analytic statistics
//! (docs/simulator.md §9).
//!
//! One 128×128 image on 2-bit cells whose every level is 1 or 2 (so a 2%
//! programming error, σ = 0.06 levels, is 16σ from the clip at 0 or 3) and a
//! 10-bit ADC (nothing saturates). Noise-free, every conversion's current
//! is a whole number of LSBs; with an analog error `e` it reads
//! `round(i + e) = i + round(e)`, so the MVM output error is
//! `Σ_(slice k, digit j) 4^k · 2^j · round(e_kj)`. Each `e_kj` is Gaussian
//! with a variance written out below from the model (rows, cells, digits),
//! and `round` of `N(0, s²)` has the variance `V(s) = Σ_n n² P(n)`. Over
//! `SAMPLES` chips (programming noise) or requests (read noise) and all 128
//! outputs, the standardised errors must have mean within 4 standard
//! errors of 0 and variance within 4 standard errors of 1 (with the
//! sample's own kurtosis). The streams are seeded: each test is
//! deterministic.

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

/// `P(round(e) = n)` for `e ~ N(0, sd²)`.
fn p_round(n: f64, sd: f64) -> f64 {
    let phi = |x: f64| 0.5 * (1.0 + libm::erf(x / (sd * std::f64::consts::SQRT_2)));
    phi(n + 0.5) - phi(n - 0.5)
}

/// `Var(round(e))` for `e ~ N(0, sd²)`.
fn round_variance(sd: f64) -> f64 {
    if sd == 0.0 {
        return 0.0;
    }
    (1..=40)
        .map(|n| 2.0 * (n as f64).powi(2) * p_round(n as f64, sd))
        .sum()
}

/// (mean, variance, fourth central moment) of the standardised errors
/// `e / sd` pooled over every sample and output.
fn standardised(errors: &[Array1<f64>], sd: &[f64]) -> (f64, f64, f64) {
    let z: Vec<f64> = errors
        .iter()
        .flat_map(|e| e.iter().zip(sd).map(|(e, s)| e / s))
        .collect();
    let n = z.len() as f64;
    let mean = z.iter().sum::<f64>() / n;
    let var = z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let m4 = z.iter().map(|v| (v - mean).powi(4)).sum::<f64>() / n;
    (mean, var, m4)
}

/// The errors standardised by `sd` match mean 0 and variance 1 within
/// four standard errors (the variance's from the sample's kurtosis); and
/// the test has the power to tell: by a standard deviation 10% off, they
/// do not.
fn assert_standard(errors: &[Array1<f64>], sd: &[f64], what: &str) {
    let (mean, var, m4) = standardised(errors, sd);
    let n = (errors.len() * sd.len()) as f64;
    let (b_mean, b_var) = (4.0 * (var / n).sqrt(), 4.0 * ((m4 - var * var) / n).sqrt());
    assert!(
        mean.abs() < b_mean,
        "{what}: mean of standardised errors {mean:.4} (bound ±{b_mean:.4})"
    );
    assert!(
        (var - 1.0).abs() < b_var,
        "{what}: variance of standardised errors {var:.4} (bound 1 ± {b_var:.4})"
    );
    let wrong: Vec<f64> = sd.iter().map(|s| s * 1.1).collect();
    let (_, var, _) = standardised(errors, &wrong);
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

/// The noise-free output of `x`.
fn clean(q: &QMatrix, x: &Array2<f32>) -> Array1<f64> {
    let hw = hardware(Noise::default());
    let xq = InputQuant::symmetric(1.0, 8);
    out(
        &mgen::sim::exec::prepare(q, xq, &hw, false, 0),
        x,
        &hw,
        (0, 0),
    )
}

/// Per output, the standard deviation of every (slice k, digit j)
/// conversion's read fluctuation: σ · sqrt(Σ_r (g_rk · d_rj)²).
fn read_sds(q: &QMatrix, codes: &[f64], sigma: f64) -> Vec<Vec<(i32, i32, f64)>> {
    (0..N)
        .map(|o| {
            let mut v = Vec::new();
            for k in 0..4 {
                for j in 0..8 {
                    let s2: f64 = codes
                        .iter()
                        .enumerate()
                        .map(|(r, &c)| (level(q, o, r, k) * ((c as u64 >> j) & 1) as f64).powi(2))
                        .sum();
                    v.push((k as i32, j, sigma * s2.sqrt()));
                }
            }
            v
        })
        .collect()
}

#[test]
fn programming_error_has_the_analytic_mean_and_variance() {
    let q = weights();
    // Inputs 0 or −128 (codes 128 or 0): only the top digit is ever 1, so
    // each slice k has one conversion, over the m rows whose code is 128.
    let mut r = lcg(29);
    let x = Array2::from_shape_fn((1, N), |_| if r() & 1 == 0 { 0.0 } else { -128.0 });
    let m = x.iter().filter(|&&v| v == 0.0).count() as f64;
    let clean = clean(&q, &x);
    let sigma = 0.02;
    let hw = hardware(Noise {
        program: sigma,
        calibrate: false,
        ..Noise::default()
    });
    let xq = InputQuant::symmetric(1.0, 8);
    let errors: Vec<Array1<f64>> = (0..SAMPLES as u64)
        .map(|chip| {
            let img = mgen::sim::exec::prepare(&q, xq, &hw, false, chip);
            out(&img, &x, &hw, (0, 0)) - &clean
        })
        .collect();
    // Each cell's level moves by N(0, (3σ)²): slice k's conversion error
    // is N(0, m·(3σ)²), read as round(·), shifted by 4^k · 2^7.
    let s = 3.0 * sigma * m.sqrt();
    let v: f64 = (0..4)
        .map(|k| (4f64.powi(k) * 128.0).powi(2) * round_variance(s))
        .sum();
    let sd = vec![v.sqrt(); N];
    assert_standard(&errors, &sd, "programming error");
}

#[test]
fn read_noise_has_the_analytic_mean_and_variance() {
    let (q, (x, codes)) = (weights(), input());
    let xq = InputQuant::symmetric(1.0, 8);
    let clean = clean(&q, &x);
    let sigma = 0.1;
    let hw = hardware(Noise {
        read: sigma,
        calibrate: false,
        ..Noise::default()
    });
    let img = mgen::sim::exec::prepare(&q, xq, &hw, false, 3);
    let errors: Vec<Array1<f64>> = (0..SAMPLES as u64)
        .map(|request| out(&img, &x, &hw, (request, 5)) - &clean)
        .collect();
    let sd: Vec<f64> = read_sds(&q, &codes, sigma)
        .iter()
        .map(|convs| {
            let v: f64 = convs
                .iter()
                .map(|&(k, j, s)| (4f64.powi(k) * 2f64.powi(j)).powi(2) * round_variance(s))
                .sum();
            v.sqrt()
        })
        .collect();
    assert_standard(&errors, &sd, "read noise");
}

#[test]
fn small_read_noise_is_mostly_rounded_away() {
    // At 1% a conversion's fluctuation is about 0.15 LSB: the ADC reads
    // the noise-free code unless it crosses half an LSB. The share of
    // outputs exactly noise-free is Π over conversions of P(round(e) = 0).
    let (q, (x, codes)) = (weights(), input());
    let xq = InputQuant::symmetric(1.0, 8);
    let clean = clean(&q, &x);
    let hw = hardware(Noise {
        read: 0.01,
        calibrate: false,
        ..Noise::default()
    });
    let img = mgen::sim::exec::prepare(&q, xq, &hw, false, 3);
    let samples = 4 * SAMPLES as u64;
    let exact = (0..samples)
        .map(|request| out(&img, &x, &hw, (request, 5)) - &clean)
        .map(|e| e.iter().filter(|&&v| v == 0.0).count())
        .sum::<usize>() as f64;
    let want: f64 = read_sds(&q, &codes, 0.01)
        .iter()
        .map(|convs| {
            convs
                .iter()
                .map(|&(_, _, s)| p_round(0.0, s))
                .product::<f64>()
        })
        .sum::<f64>()
        / N as f64;
    let n = (samples as usize * N) as f64;
    let got = exact / n;
    let se = (want * (1.0 - want) / n).sqrt();
    assert!(
        (got - want).abs() < 4.0 * se,
        "noise-free share {got:.5}, analytic {want:.5} (±{:.5})",
        4.0 * se
    );
    assert!(
        want < 0.999 && want > 0.5,
        "the case tests rounding: {want}"
    );
}
