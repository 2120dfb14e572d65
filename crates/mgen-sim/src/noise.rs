//! Device non-idealities on a crossbar image (the model of
//! [`mgen_hw::noise`], docs/simulator.md §9).
//!
//! Static errors — programming error, drift, stuck cells, each ADC's
//! offset and gain — are drawn once per chip instance when an image is
//! prepared ([`cells`], [`stick`], [`adc`]), from a stream keyed by the
//! chip seed, the image and the crossbar part, so the same seed gives the
//! same chip on every run and thread count. Read noise is drawn per
//! conversion from a stream keyed by the image, the request and the
//! instruction ([`stream`]).
//!
//! Invariant: with a [`Noise`] that [`Noise::is_off`], nothing here is
//! called and the simulator's outputs are bit-identical to a noise-free
//! chip's.

use mgen_hw::noise::{DRIFT_T0_S, Noise};
use mgen_util::rng::Rng;
use ndarray::{Array1, Array2};
use rand_distr::{Distribution, StandardNormal};

/// A standard normal draw: `rand_distr`'s ziggurat (Marsaglia and
/// Tsang, with the exact tail), over our stream: one table lookup and one
/// multiply for most draws, where Box–Muller needs a `log`, a `sqrt` and a
/// `cos`; and a normal's tails, which the ADC's rounding of small errors
/// depends on. Its bits are fixed on one machine;
/// the wedge test (1% of draws) calls the platform's `exp`.
pub fn gauss(rng: &mut Rng) -> f64 {
    StandardNormal.sample(&mut Bits(rng))
}

/// An ADC's rounding of a noisy current to a code: to the nearest
/// integer, ties to even (`(x + 1.5·2^52) − 1.5·2^52`, exact for
/// |x| < 2^51; two additions where `f64::round` is a library call on
/// baseline x86-64).
#[inline]
pub fn round_code(x: f64) -> f64 {
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    (x + SHIFT) - SHIFT
}

/// Our stream as a `rand` generator.
struct Bits<'a>(&'a mut Rng);

impl rand::RngCore for Bits<'_> {
    fn next_u32(&mut self) -> u32 {
        (self.0.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        rand::rand_core::impls::fill_bytes_via_next(self, dst)
    }
}

/// The stream of one chip instance's static errors for one purpose
/// (`"image 3 part 0 block 2 slice 1"`).
pub fn static_stream(chip_key: u64, what: &str) -> Rng {
    Rng::keyed(chip_key, what)
}

/// The per-conversion read-noise stream of one MVM: image key, request
/// and instruction.
pub fn stream(image_key: u64, request: u64, instruction: u64) -> Rng {
    Rng::keyed(image_key, &format!("read {request} {instruction}"))
}

/// Programming error and drift applied to one crossbar's cells (levels
/// `0..=cell_max`, in level units): `g = clip(L + σ·range·z, 0, range)`,
/// then `g · (1 + t/t₀)^(−ν)` with `ν ~ N(ν̄, σ_ν)` clipped at 0.
pub fn cells(c: &mut Array2<f32>, n: &Noise, cell_max: f64, rng: &mut Rng) {
    let sd = n.program * cell_max;
    let ln_age = (1.0 + n.drift_s / DRIFT_T0_S).ln();
    for v in c.iter_mut() {
        let mut g = *v as f64;
        if sd > 0.0 {
            g = (g + sd * gauss(rng)).clamp(0.0, cell_max);
        }
        if n.drifts() {
            let nu = (n.drift_nu + n.drift_nu_std * gauss(rng)).max(0.0);
            g *= (-nu * ln_age).exp();
        }
        *v = g as f32;
    }
}

/// Sticks exactly `round(low · n)` of the `n` cells at level 0 and
/// `round(high · n)` others at `cell_max` (a partial Fisher–Yates draw of
/// distinct cells). Gives the two counts.
pub fn stick(c: &mut [f32], low: f64, high: f64, cell_max: f32, rng: &mut Rng) -> (usize, usize) {
    let n = c.len();
    let lo = ((low * n as f64).round() as usize).min(n);
    let hi = ((high * n as f64).round() as usize).min(n - lo);
    if lo + hi == 0 {
        return (0, 0);
    }
    let mut idx: Vec<u32> = (0..n as u32).collect();
    for i in 0..lo + hi {
        let j = rng.below(i as u64, n as u64) as usize;
        idx.swap(i, j);
        c[idx[i] as usize] = if i < lo { 0.0 } else { cell_max };
    }
    (lo, hi)
}

/// One crossbar's ADCs, one per output column: (gain `1 + σ_g·z`,
/// offset `σ_o·z` in LSB).
pub fn adc(n: &Noise, columns: usize, rng: &mut Rng) -> (Array1<f64>, Array1<f64>) {
    let gain = Array1::from_iter((0..columns).map(|_| {
        if n.adc_gain > 0.0 {
            1.0 + n.adc_gain * gauss(rng)
        } else {
            1.0
        }
    }));
    let off = Array1::from_iter((0..columns).map(|_| {
        if n.adc_offset_lsb > 0.0 {
            n.adc_offset_lsb * gauss(rng)
        } else {
            0.0
        }
    }));
    (gain, off)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauss_has_unit_variance() {
        let mut r = Rng::new(5);
        let xs: Vec<f64> = (0..200_000).map(|_| gauss(&mut r)).collect();
        let m = xs.iter().sum::<f64>() / xs.len() as f64;
        let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / xs.len() as f64;
        // Standard errors: 1/sqrt(n) ≈ 0.0022 for the mean, ≈ 0.0032 for the variance.
        assert!(m.abs() < 0.01, "mean {m}");
        assert!((v - 1.0).abs() < 0.015, "variance {v}");
    }

    #[test]
    fn round_code_is_nearest_with_ties_to_even() {
        let cases = [(0.4, 0.0), (0.5, 0.0), (0.6, 1.0), (1.5, 2.0), (2.5, 2.0)];
        for (x, want) in cases {
            assert_eq!(round_code(x), want, "{x}");
        }
        assert_eq!(round_code(-0.6), -1.0);
        assert_eq!(round_code(-1.5), -2.0);
        assert_eq!(round_code(1023.49), 1023.0);
    }

    #[test]
    fn stick_gives_exact_counts_of_distinct_cells() {
        let mut c = vec![1.0f32; 10_000];
        let (lo, hi) = stick(&mut c, 0.0123, 0.0456, 3.0, &mut Rng::new(1));
        assert_eq!((lo, hi), (123, 456));
        assert_eq!(c.iter().filter(|&&v| v == 0.0).count(), 123);
        assert_eq!(c.iter().filter(|&&v| v == 3.0).count(), 456);
    }

    #[test]
    fn drift_at_time_zero_is_the_identity() {
        let n = Noise {
            drift_s: 0.0,
            drift_nu: 0.1,
            drift_nu_std: 0.05,
            ..Noise::default()
        };
        let mut c = Array2::from_shape_fn((8, 8), |(i, j)| ((i + j) % 4) as f32);
        let before = c.clone();
        cells(&mut c, &n, 3.0, &mut Rng::new(2));
        assert_eq!(c, before);
        let later = Noise {
            drift_s: 86_400.0,
            ..n
        };
        cells(&mut c, &later, 3.0, &mut Rng::new(2));
        assert!(c.iter().zip(&before).all(|(a, b)| a <= b));
        assert!(c.iter().zip(&before).any(|(a, b)| a < b));
    }
}
