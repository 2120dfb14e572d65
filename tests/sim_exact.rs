//! The simulator's MVM against the bit-sliced crossbar taken literally.
//!
//! The oracle below walks every (sign part, row block, weight slice, input
//! digit) in i64, clips each column sum at the ADC's range unless the ADC
//! is ideal, and shift-adds: the definition in `docs/simulator.md`, with no
//! fast path and no floating-point products. `mgen::sim::exec::mvm` must
//! give the same bits for random matrices, inputs and hardware: its fast
//! paths (clip-free slices summed at once, row blocks stacked into one
//! GEMM, f32 where exact) are exact rewrites, never approximations.

use mgen::backend::quant::{InputQuant, QMatrix, quantize_weights};
use mgen::hw::{Hardware, Signs};
use ndarray::{Array1, Array2};
use proptest::prelude::*;

/// The literal crossbar: returns `[tokens, out]`.
fn oracle(q: &QMatrix, xq: InputQuant, x: &Array2<f32>, hw: &Hardware, ideal: bool) -> Array2<f32> {
    let (out, inp) = q.q.dim();
    let ib = hw.input_bits;
    let (cb, dac) = (hw.cell_bits as u64, hw.dac_bits as u64);
    let slices = q.bits.div_ceil(hw.cell_bits) as u64;
    let cycles = (ib as u64).div_ceil(dac);
    let adc_max = (1i64 << hw.adc_bits) - 1;
    let ow: i64 = match hw.signs {
        Signs::Offset => 1 << (q.bits - 1),
        Signs::Differential => 0,
    };
    let parts: Vec<(f64, Array2<i64>)> = match hw.signs {
        Signs::Offset => vec![(1.0, q.q.mapv(|w| w as i64 + ow))],
        Signs::Differential => vec![
            (1.0, q.q.mapv(|w| (w as i64).max(0))),
            (-1.0, q.q.mapv(|w| (-(w as i64)).max(0))),
        ],
    };
    let ox = xq.zero as f64;
    let rows = hw.rows as usize;
    let mut y = Array2::<f32>::zeros((x.nrows(), out));
    for t in 0..x.nrows() {
        let xu: Vec<i64> = (0..inp)
            .map(|r| xq.code(x[[t, r]] / q.smooth[r], ib))
            .collect();
        let xsum: f64 = xu.iter().map(|&v| v as f64).sum();
        for o in 0..out {
            let mut yo = 0.0f64;
            for (sign, wu) in &parts {
                let mut acc: i64 = 0;
                for r0 in (0..inp).step_by(rows) {
                    let r1 = (r0 + rows).min(inp);
                    for k in 0..slices {
                        for j in 0..cycles {
                            let col: i64 = (r0..r1)
                                .map(|r| {
                                    let digit = (xu[r] >> (j * dac)) & ((1 << dac) - 1);
                                    let cell = (wu[[o, r]] >> (k * cb)) & ((1 << cb) - 1);
                                    digit * cell
                                })
                                .sum();
                            let col = if ideal { col } else { col.clamp(0, adc_max) };
                            acc += col << (k * cb + j * dac);
                        }
                    }
                }
                let colsum: i64 = (0..inp).map(|r| wu[[o, r]]).sum();
                let acc = acc as f64 - ox * colsum as f64;
                yo += sign * acc;
            }
            if ow != 0 {
                yo -= ow as f64 * (xsum - ox * inp as f64);
            }
            y[[t, o]] = (yo * xq.scale as f32 as f64 * q.scale[o] as f64) as f32;
        }
    }
    y
}

fn matrix(seed: u64, rows: usize, cols: usize, amp: f32) -> Array2<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    Array2::from_shape_fn((rows, cols), |_| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * amp
    })
}

fn hardware() -> impl Strategy<Value = Hardware> {
    (
        prop::sample::select(vec![16u64, 64, 128]),
        1u32..=4,
        1u32..=2,
        3u32..=8,
        prop::sample::select(vec![4u32, 8]),
        prop::sample::select(vec![8u32, 16]),
        any::<bool>(),
    )
        .prop_map(
            |(rows, cell_bits, dac_bits, adc_bits, weight_bits, input_bits, diff)| Hardware {
                rows,
                cell_bits,
                dac_bits,
                adc_bits,
                weight_bits,
                input_bits,
                signs: if diff {
                    Signs::Differential
                } else {
                    Signs::Offset
                },
                ..Hardware::default()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn mvm_equals_the_literal_crossbar_bit_for_bit(
        hw in hardware(),
        out in 1usize..24,
        inp in 1usize..300,
        tokens in 1usize..4,
        seed in 0u64..1000,
        ideal in any::<bool>(),
        wide in any::<bool>(),
    ) {
        // Wide weights make clipping likely; narrow ones keep blocks fast.
        let w = matrix(seed, out, inp, if wide { 1.0 } else { 0.05 });
        let x = matrix(seed + 7, tokens, inp, 1.0);
        let q = quantize_weights(w.view(), hw.weight_bits);
        let xq = InputQuant::symmetric(1.0 / 127.0, hw.input_bits);
        let img = mgen::sim::exec::prepare(&q, xq, &hw, ideal, 0);
        let got = mgen::sim::exec::mvm(&img, &x.clone().into_dyn(), &hw, ideal);
        let want = oracle(&q, xq, &x, &hw, ideal);
        for (g, w) in got.iter().zip(want.iter()) {
            prop_assert_eq!(g.to_bits(), w.to_bits(), "{} vs {}", g, w);
        }
    }
}

#[test]
fn a_vector_input_is_one_token() {
    let hw = Hardware::default();
    let w = matrix(1, 5, 40, 0.5);
    let x = matrix(2, 1, 40, 1.0);
    let q = quantize_weights(w.view(), hw.weight_bits);
    let xq = InputQuant::symmetric(1.0 / 127.0, hw.input_bits);
    let img = mgen::sim::exec::prepare(&q, xq, &hw, false, 0);
    let v: Array1<f32> = x.row(0).to_owned();
    let got = mgen::sim::exec::mvm(&img, &v.into_dyn(), &hw, false);
    let want = oracle(&q, xq, &x, &hw, false);
    assert_eq!(got.shape(), &[5]);
    assert!(
        got.iter()
            .zip(want.iter())
            .all(|(g, w)| g.to_bits() == w.to_bits())
    );
}
