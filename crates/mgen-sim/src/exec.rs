//! Functional execution: the hardware's arithmetic.
//!
//! MVM: inputs are quantised with the image's static scale and zero point
//! to unsigned `input_bits`-bit codes `x_u = clamp(round(x/s) + z, 0,
//! 2^b − 1)` (symmetric: `z = 2^(b−1)`, two's complement offset), streamed
//! `dac_bits` at a time. Weights are quantised per output row, stored
//! offset (`W_u = W_q + 2^(wb−1)`) or as a differential pair, and
//! bit-sliced `cell_bits` per cell. Each crossbar column's sum for one input
//! digit and one slice is digitised by an ADC that saturates at
//! `2^adc_bits − 1` (transfer function: the exact integer column sum,
//! clipped to `[0, 2^adc_bits − 1]`; one LSB is one cell level times one DAC
//! level). Shift-and-add recombines digits and slices; the offsets are
//! removed digitally; the result is rescaled and the bias added in f32.
//!
//! Exact integer arithmetic is done with floating-point GEMMs whose every
//! partial sum is an integer below 2^24 (f32) or 2^53 (f64), so it is exact
//! and its bits do not depend on the kernel's summation order. Consecutive
//! row blocks are stacked into one product while their summed bound stays
//! below 2^24 (a [`Group`]).
//! Fast path: a (row block, slice) whose column sums cannot reach the ADC's
//! range for any input is computed for all digits at once (it cannot clip);
//! only the others are evaluated digit by digit. `--ideal-adc` removes the
//! clipping, so every block takes the fast path.
//!
//! Digital units (LayerNorm, softmax, GELU, QKᵀ, AV, pooling) compute in
//! f32 with the reference executor's functions.

use crate::hw::{Hardware, Signs};
use crate::noise::{gauss, round_code};
use mgen_isa::isa::{DmmKind, Inst, Program, VecOp};
use mgen_isa::quant::{InputQuant, QMatrix};
use mgen_model::gemm::{matmul, matmul_into};
use mgen_model::reference::{av, embed, gelu_all, layernorm, mask_scores, mean_pool, qk, softmax};
use mgen_util::rng::Rng;
use ndarray::{Array1, Array2, ArrayD, ArrayView2, ArrayViewMut2, Axis, Ix1, Ix2, Ix3, Zip, s};
use std::sync::Arc;

struct Block {
    r0: usize,
    r1: usize,
    /// Σ over clip-free slices of `slice · 2^(k·cell_bits)`, `[rows, out]`
    /// (moved into its [`Group`] once the groups are formed).
    fast: Array2<f32>,
    /// The largest column sum `fast` can give: rows × max input × max weight.
    bound: f64,
    /// The slices converted one by one (`None`: every slice is clip-free
    /// with whole currents).
    slow: Option<Slow>,
    /// This crossbar's ADCs on a noisy chip.
    adc: Option<Adc>,
}

/// One block's slices that are converted one by one: they may clip, or
/// their currents are not whole LSBs. Side by side, so each input digit
/// plane is one product for all of them.
struct Slow {
    /// Each slice's weight `2^(k·cell_bits)`.
    weights: Vec<f64>,
    /// `[rows, n·out]`: slice `i`'s cells in columns `i·out..(i+1)·out`;
    /// with read noise and one-bit digits (a digit's square is itself),
    /// the squared cells follow in columns `(n+i)·out..`, so the same
    /// product gives each conversion's current and its read-noise variance.
    w: Array2<f32>,
    /// The squared cells `[rows, n·out]`, when read noise meets digits of
    /// several bits (their squares are a product of their own).
    sq: Option<Array2<f32>>,
}

impl Slow {
    /// Puts `slices` side by side; `squares`: also each cell's square
    /// (next to them when `binary` digits, else apart).
    fn new(slices: Vec<(f64, Array2<f32>)>, squares: bool, binary: bool) -> Option<Slow> {
        if slices.is_empty() {
            return None;
        }
        let weights = slices.iter().map(|(w, _)| *w).collect();
        let views: Vec<_> = slices.iter().map(|(_, s)| s.view()).collect();
        let w = ndarray::concatenate(Axis(1), &views).expect("slices of one block");
        let sq = squares.then(|| w.mapv(|v| v * v));
        let (w, sq) = match sq {
            Some(sq) if binary => (
                ndarray::concatenate(Axis(1), &[w.view(), sq.view()]).expect("same rows"),
                None,
            ),
            sq => (w, sq),
        };
        Some(Slow { weights, w, sq })
    }
}

/// Consecutive row blocks whose clip-free parts are one product: their
/// `fast` matrices stacked, `[rows, out]`. In f32 when the summed bound
/// stays below 2^24 (every partial sum an exact integer), else in f64.
struct Group {
    r0: usize,
    r1: usize,
    w: Array2<f32>,
    f64: bool,
    /// No clip-free slice in any of its blocks: `w` is zero, its product
    /// is skipped.
    empty: bool,
}

/// 2^24: below it every integer is exact in f32.
const F32_EXACT: f64 = (1u64 << 24) as f64;

/// Stacks consecutive blocks into groups, each as wide as exactness allows.
fn group(blocks: &mut [Block]) -> Vec<Group> {
    let mut groups: Vec<(Group, f64)> = Vec::new();
    for b in blocks.iter_mut() {
        let fast = std::mem::take(&mut b.fast);
        match groups.last_mut() {
            Some((g, bound)) if !g.f64 && *bound + b.bound < F32_EXACT && g.r1 == b.r0 => {
                g.w.append(Axis(0), fast.view()).expect("same width");
                g.r1 = b.r1;
                *bound += b.bound;
            }
            _ => groups.push((
                Group {
                    r0: b.r0,
                    r1: b.r1,
                    w: fast,
                    f64: b.bound >= F32_EXACT,
                    empty: false,
                },
                b.bound,
            )),
        }
    }
    groups
        .into_iter()
        .map(|(g, bound)| Group {
            empty: bound == 0.0,
            ..g
        })
        .collect()
}

struct Part {
    sign: f64,
    blocks: Vec<Block>,
    groups: Vec<Group>,
    /// Σ_r of the stored (unsigned) weights, per column.
    colsum: Array1<f64>,
    /// The clip-free conversions' noise on a noisy chip.
    nz: Option<PartNoise>,
}

/// What the clip-free (fast) conversions of one part add on a noisy chip
/// whose currents stay whole (stuck cells and ADC offsets only, docs/
/// simulator.md §9): each conversion's code is `i + round(o)`, so the
/// offsets add a fixed amount per output.
struct PartNoise {
    /// Per column: Σ over fast conversions of their weight × rounded ADC
    /// offset, less what calibration subtracts.
    off: Array1<f64>,
}

/// A chip instance's noise as one image sees it.
struct ImageNoise {
    /// σ of a cell's read current per conversion, relative to its conductance.
    read: f64,
    /// Key of this image's per-conversion read-noise streams.
    key: u64,
}

/// A crossbar image prepared for simulation.
pub struct PImage {
    out: usize,
    inp: usize,
    wscale: Array1<f32>,
    xquant: InputQuant,
    /// Per-input-channel divisors applied before quantisation.
    smooth: Array1<f32>,
    parts: Vec<Part>,
    /// The weight offset (offset encoding), 0 for differential pairs.
    ow: f64,
    /// Noise of this chip instance (`None`: ideal devices).
    noise: Option<ImageNoise>,
    /// Fraction of (block, slice) pairs on the fast path (for reports).
    pub fast_fraction: f64,
}

/// Converter limits shared by a preparation.
struct Limits {
    cb: u32,
    slices: u32,
    cell_max: f64,
    dac_max: f64,
    adc_max: f64,
    xmax: f64,
    /// Σ_j 2^(j·dac_bits) over an input's digits.
    s1: f64,
}

impl Limits {
    fn new(bits: u32, hw: &Hardware) -> Limits {
        let cycles = hw.input_bits.div_ceil(hw.dac_bits);
        let s1: f64 = (0..cycles)
            .map(|j| (1u64 << (j * hw.dac_bits)) as f64)
            .sum();
        Limits {
            cb: hw.cell_bits,
            slices: bits.div_ceil(hw.cell_bits),
            cell_max: ((1u32 << hw.cell_bits) - 1) as f64,
            dac_max: ((1u32 << hw.dac_bits) - 1) as f64,
            adc_max: ((1u64 << hw.adc_bits) - 1) as f64,
            xmax: ((1u64 << hw.input_bits) - 1) as f64,
            s1,
        }
    }
}

/// Prepares a quantised matrix for the hardware, on the chip instance
/// `chip_key` (which only matters when `hw.noise` adds noise).
pub fn prepare(
    q: &QMatrix,
    xquant: InputQuant,
    hw: &Hardware,
    ideal_adc: bool,
    chip_key: u64,
) -> PImage {
    let (out, inp) = q.q.dim();
    let lim = Limits::new(q.bits, hw);
    let ow = match hw.signs {
        Signs::Offset => (1i64 << (q.bits - 1)) as f64,
        Signs::Differential => 0.0,
    };
    // Stored unsigned weights per part, [in, out].
    let stored: Vec<(f64, Array2<i64>)> = match hw.signs {
        Signs::Offset => vec![(1.0, q.q.t().mapv(|w| w as i64 + ow as i64))],
        Signs::Differential => vec![
            (1.0, q.q.t().mapv(|w| (w as i64).max(0))),
            (-1.0, q.q.t().mapv(|w| (-(w as i64)).max(0))),
        ],
    };
    let noisy = (!hw.noise.is_off()).then_some(&hw.noise);
    let (mut fast_n, mut total_n) = (0usize, 0usize);
    let parts = stored
        .into_iter()
        .enumerate()
        .map(|(p, (sign, wu))| {
            let colsum = wu.sum_axis(Axis(0)).mapv(|v| v as f64);
            let cx = PartCx {
                lim: &lim,
                hw,
                noise: noisy,
                ideal_adc,
                key: chip_key,
                part: p,
            };
            let (mut blocks, nz, fast, total) = cx.blocks(&wu);
            fast_n += fast;
            total_n += total;
            let groups = group(&mut blocks);
            Part {
                sign,
                blocks,
                groups,
                colsum,
                nz,
            }
        })
        .collect();
    PImage {
        out,
        inp,
        wscale: q.scale.clone(),
        xquant,
        smooth: q.smooth.clone(),
        parts,
        ow,
        noise: noisy.map(|n| ImageNoise {
            read: n.read,
            key: chip_key,
        }),
        fast_fraction: if total_n == 0 {
            1.0
        } else {
            fast_n as f64 / total_n as f64
        },
    }
}

/// Each column's digital correction after calibration, computed from the
/// codes a calibration read gives, as a chip can: the known input turns
/// on `chunk` rows at a time (as many as the ADC cannot clip at the
/// highest level), each chunk of each slice is converted (gain, offset,
/// rounding, clip) and the calibrated offset `sub` taken off; the
/// correction is the intended column sum over the measured one, slices
/// weighted `2^(k·cell_bits)`, 1 where either is 0. An analog error that
/// the rounding already removed is therefore not "corrected" a second
/// time (the ADC's codes are exact, and the correction stays 1).
fn calibration(
    ideal: &[Array2<f32>],
    noisy: &[Array2<f32>],
    adc: (&Array1<f64>, &Array1<f64>, &Array1<f64>),
    lim: &Limits,
) -> Array1<f64> {
    let (gain, off, sub) = adc;
    let chunk = ((lim.adc_max / lim.cell_max).floor() as usize).max(1);
    let cols = gain.len();
    let (mut want, mut got) = (Array1::<f64>::zeros(cols), Array1::<f64>::zeros(cols));
    let mut si = Array1::<f64>::zeros(cols);
    let mut sg = Array1::<f64>::zeros(cols);
    for (k, (i, g)) in ideal.iter().zip(noisy).enumerate() {
        let w = (1u64 << (k as u32 * lim.cb)) as f64;
        for (ic, gc) in i
            .axis_chunks_iter(Axis(0), chunk)
            .zip(g.axis_chunks_iter(Axis(0), chunk))
        {
            si.fill(0.0);
            sg.fill(0.0);
            for (ir, gr) in ic.rows().into_iter().zip(gc.rows()) {
                Zip::from(&mut si).and(&ir).for_each(|s, &v| *s += v as f64);
                Zip::from(&mut sg).and(&gr).for_each(|s, &v| *s += v as f64);
            }
            Zip::from(&mut want).and(&si).for_each(|a, &v| *a += w * v);
            Zip::from(&mut got)
                .and(&sg)
                .and(gain)
                .and(off)
                .and(sub)
                .for_each(|a, &v, &gn, &o, &sb| {
                    *a += w * (round_code(gn * v + o).clamp(0.0, lim.adc_max) - sb);
                });
        }
    }
    Zip::from(&want).and(&got).map_collect(|&want, &got| {
        if want > 0.0 && got > 0.0 {
            want / got
        } else {
            1.0
        }
    })
}

/// One part's preparation context.
struct PartCx<'a> {
    lim: &'a Limits,
    hw: &'a Hardware,
    noise: Option<&'a mgen_hw::Noise>,
    ideal_adc: bool,
    key: u64,
    part: usize,
}

/// One crossbar's ADCs on a noisy chip, per output column.
struct Adc {
    /// The physical gain `1 + ε` of each column's conversions.
    gain: Array1<f64>,
    /// The physical offset of each conversion, LSB.
    off: Array1<f64>,
    /// The digital correction of each column's codes after calibration
    /// (1 without): ideal over measured column sum.
    cal: Array1<f64>,
    /// What calibration subtracts from each column's codes: the mean code
    /// error it measured with a known input (`round(o)` when currents are
    /// whole, `o` when they are not; 0 without calibration).
    sub: Array1<f64>,
}

impl PartCx<'_> {
    /// The row blocks of one part's stored weights `wu` (`[in, out]`),
    /// with their noise if any; and (fast, all) (block, slice) counts.
    fn blocks(&self, wu: &Array2<i64>) -> (Vec<Block>, Option<PartNoise>, usize, usize) {
        let (inp, out) = wu.dim();
        let rows = self.hw.rows as usize;
        let mut nz = self.noise.map(|_| PartNoise {
            off: Array1::zeros(out),
        });
        let (mut fast_n, mut total_n) = (0, 0);
        let mut blocks = Vec::new();
        let mut r0 = 0;
        while r0 < inp {
            let r1 = (r0 + rows).min(inp);
            let (b, f) = self.block(wu, r0, r1, nz.as_mut());
            fast_n += f;
            total_n += self.lim.slices as usize;
            blocks.push(b);
            r0 = r1;
        }
        (blocks, nz, fast_n, total_n)
    }

    /// The slices of rows `r0..r1` as programmed (with static errors on a
    /// noisy chip), and the block's ADCs.
    fn cells(&self, wu: &Array2<i64>, r0: usize, r1: usize) -> (Vec<Array2<f32>>, Option<Adc>) {
        let lim = self.lim;
        let what = format!(
            "part {} block {}",
            self.part,
            r0 / (self.hw.rows as usize).max(1)
        );
        let ideal: Vec<Array2<f32>> = (0..lim.slices)
            .map(|k| {
                let shift = k * lim.cb;
                let cells = wu
                    .slice(s![r0..r1, ..])
                    .mapv(|w| ((w >> shift) & ((1i64 << lim.cb) - 1)) as f32);
                // `mapv` keeps a transposed layout (a one-block image of
                // `q.t()`); the noise below needs row-major cells.
                cells.as_standard_layout().into_owned()
            })
            .collect();
        let Some(n) = self.noise else {
            return (ideal, None);
        };
        let mut noisy = ideal.clone();
        for (k, slice) in noisy.iter_mut().enumerate() {
            let mut rng = crate::noise::static_stream(self.key, &format!("{what} slice {k}"));
            crate::noise::cells(slice, n, lim.cell_max, &mut rng);
            let flat = slice.as_slice_mut().expect("a fresh array is contiguous");
            crate::noise::stick(
                flat,
                n.stuck_low,
                n.stuck_high,
                lim.cell_max as f32,
                &mut rng,
            );
        }
        let out = wu.ncols();
        let (gain, off) =
            crate::noise::adc(n, out, &mut crate::noise::static_stream(self.key, &what));
        let frac = n.fractional();
        let sub = off.mapv(|o| match (n.calibrate, frac) {
            (false, _) => 0.0,
            (true, true) => o,
            (true, false) => round_code(o),
        });
        // Calibration: each column read with a known input; the digital
        // unit rescales its codes to the intended column sum.
        let cal = if n.calibrate {
            calibration(&ideal, &noisy, (&gain, &off, &sub), lim)
        } else {
            Array1::from_elem(out, 1.0)
        };
        let adc = Adc {
            gain,
            off,
            cal,
            sub,
        };
        (noisy, Some(adc))
    }

    /// One row block; and how many of its slices take the fast path.
    fn block(
        &self,
        wu: &Array2<i64>,
        r0: usize,
        r1: usize,
        mut nz: Option<&mut PartNoise>,
    ) -> (Block, usize) {
        let lim = self.lim;
        let out = wu.ncols();
        let (slices, adc) = self.cells(wu, r0, r1);
        // The margin ADC offsets need below the top code to stay clip-free
        // (gain error, read noise and other fractional currents never take
        // the fast path).
        let margin = adc
            .as_ref()
            .map_or(0.0, |a| a.off.fold(0.0f64, |x, &o| x.max(o.abs())) + 0.5);
        // Physical gain (1 on the fast path) times digital correction, per column.
        let scale = adc.as_ref().map(|a| (&a.gain * &a.cal).mapv(|v| v as f32));
        let mut fast = Array2::<f32>::zeros((r1 - r0, out));
        let (mut fast_max, mut fast_n) = (0.0f64, 0);
        let mut slow = Vec::new();
        let read = self.noise.is_some_and(|n| n.read > 0.0);
        // Currents that are not whole LSBs (programming error, read noise,
        // drift, gain) make every conversion's rounding matter: the ADC
        // rounds a small error away and a large one to a whole LSB, so
        // those slices are converted one by one (exact).
        let fractional = self.noise.is_some_and(|n| n.fractional());
        for (k, slice) in slices.into_iter().enumerate() {
            let col_max =
                slice.sum_axis(Axis(0)).fold(0.0f32, |a, &b| a.max(b)) as f64 * lim.dac_max;
            let weight = (1u64 << (k as u32 * lim.cb)) as f64;
            if fractional || !(self.ideal_adc || col_max + margin <= lim.adc_max) {
                slow.push((weight, slice));
                continue;
            }
            fast_n += 1;
            fast_max += weight * lim.cell_max;
            let (Some(scale), Some(a), Some(pn)) = (&scale, &adc, nz.as_deref_mut()) else {
                fast.scaled_add(weight as f32, &slice);
                continue;
            };
            let scaled = &slice * scale;
            fast.scaled_add(weight as f32, &scaled);
            // Each conversion's code is round(i + o) = i + round(o) for a
            // whole current `i`: a fixed error per ADC.
            Zip::from(&mut pn.off)
                .and(&a.off)
                .and(&a.sub)
                .and(&a.cal)
                .for_each(|v, &o, &sub, &f| {
                    *v += weight * lim.s1 * (round_code(o) - sub) * f;
                });
        }
        let block = Block {
            r0,
            r1,
            fast,
            bound: (r1 - r0) as f64 * lim.xmax * fast_max,
            slow: Slow::new(slow, read, self.hw.dac_bits == 1),
            adc,
        };
        (block, fast_n)
    }
}

/// `acc += x · w` for integer-valued `x` and `w` whose product is exact in
/// the precision `f64` asks for (see [`Group`]).
fn add_product(
    acc: &mut Array2<f64>,
    x: ArrayView2<f32>,
    w: &Array2<f32>,
    f64: bool,
    buf: &mut Array2<f32>,
) {
    if f64 {
        let p = matmul(x.mapv(|v| v as f64).view(), w.mapv(|v| v as f64).view());
        *acc += &p;
    } else {
        matmul_into(x, w.view(), buf.view_mut(), false);
        Zip::from(acc).and(&*buf).for_each(|a, &v| *a += v as f64);
    }
}

/// The crossbar MVM of `x` (`[tokens, in]` or `[in]`), without the bias,
/// as request 0's first instruction (see [`mvm_at`]).
pub fn mvm(img: &PImage, x: &ArrayD<f32>, hw: &Hardware, ideal_adc: bool) -> ArrayD<f32> {
    mvm_at(img, x, hw, ideal_adc, (0, 0))
}

/// The crossbar MVM of `x` by instruction `at.1` of request `at.0`: on a
/// noisy chip the pair keys this MVM's read-noise stream.
pub fn mvm_at(
    img: &PImage,
    x: &ArrayD<f32>,
    hw: &Hardware,
    ideal_adc: bool,
    at: (u64, u64),
) -> ArrayD<f32> {
    mvm_stacked(img, x, hw, ideal_adc, at, STACK_ELEMS)
}

/// [`mvm_at`], with at most `stack` result elements per stacked product
/// of digit planes.
fn mvm_stacked(
    img: &PImage,
    x: &ArrayD<f32>,
    hw: &Hardware,
    ideal_adc: bool,
    at: (u64, u64),
    stack: usize,
) -> ArrayD<f32> {
    let two_d = x.ndim() == 2;
    // A matrix stays as it is; anything else is one token (a vector).
    let x2: Array2<f32> = match x.view().into_dimensionality::<Ix2>() {
        Ok(m) => m.to_owned(),
        Err(_) => Array1::from_iter(x.iter().copied()).insert_axis(Axis(0)),
    };
    let ib = hw.input_bits;
    let ox = img.xquant.zero as f64;
    // Smoothed (digital division per channel), quantised, offset to
    // unsigned: exact small integers in f32.
    let mut xu = Array2::<f32>::zeros(x2.dim());
    Zip::from(xu.rows_mut())
        .and(x2.rows())
        .for_each(|mut o, x| {
            Zip::from(&mut o)
                .and(&x)
                .and(&img.smooth)
                .for_each(|o, &v, &s| {
                    *o = img.xquant.code(v / s, ib) as f32;
                });
        });
    let tokens = xu.nrows();
    // Summed in f64: with 16-bit inputs an f32 sum of a long row is inexact.
    let xsum: Array1<f64> = xu.map_axis(Axis(1), |row| row.iter().map(|&v| v as f64).sum());
    let mut rng = img
        .noise
        .as_ref()
        .map(|n| crate::noise::stream(n.key, at.0, at.1));
    let mut y = Array2::<f64>::zeros((tokens, img.out));
    let mut buf = Array2::<f32>::zeros((tokens, img.out));
    let mut scratch = Scratch {
        stack,
        ..Scratch::default()
    };
    for part in &img.parts {
        let mut acc = Array2::<f64>::zeros((tokens, img.out));
        for g in part.groups.iter().filter(|g| !g.empty) {
            let xg = xu.slice(s![.., g.r0..g.r1]);
            add_product(&mut acc, xg, &g.w, g.f64, &mut buf);
        }
        if let Some(nz) = &part.nz {
            for mut row in acc.rows_mut() {
                row += &nz.off;
            }
        }
        for b in &part.blocks {
            let xb = xu.slice(s![.., b.r0..b.r1]);
            let nz = img.noise.as_ref().zip(rng.as_mut());
            slow_block(&mut acc, xb, b, hw, ideal_adc, nz, &mut scratch);
        }
        // Remove the input offset: Σ_r W_u (x_u − ox) = acc − ox·colsum.
        for mut row in acc.rows_mut() {
            Zip::from(&mut row)
                .and(&part.colsum)
                .for_each(|a, &c| *a -= ox * c);
        }
        y.scaled_add(part.sign, &acc);
    }
    // Remove the weight offset: − ow · Σ_r (x_u − ox).
    if img.ow != 0.0 {
        for (mut row, &xs) in y.rows_mut().into_iter().zip(xsum.iter()) {
            let corr = img.ow * (xs - ox * img.inp as f64);
            row.mapv_inplace(|v| v - corr);
        }
    }
    let mut out = Array2::<f32>::zeros((tokens, img.out));
    Zip::from(out.rows_mut())
        .and(y.rows())
        .for_each(|mut o, yr| {
            Zip::from(&mut o)
                .and(&yr)
                .and(&img.wscale)
                .for_each(|o, &v, &ws| {
                    *o = (v * img.xquant.scale as f32 as f64 * ws as f64) as f32
                });
        });
    if two_d {
        out.into_dyn()
    } else {
        out.index_axis(Axis(0), 0).to_owned().into_dyn()
    }
}

/// Adds one block's slices that may clip, or whose currents are not whole
/// LSBs, digit by digit, each conversion through the ADC: on a noisy chip
/// with read noise, gain, offset and rounding first, then the clip to
/// `[0, 2^adc_bits − 1]`. The input digit planes are stacked into one
/// product per chunk of planes (the block's cells are read once for all of
/// them), which serves every slow slice (and, with one-bit digits, their
/// read-noise variances). On whole currents the stacking cannot change a
/// bit; fractional currents are f32 sums whose rounding may follow the
/// kernel's order for the product's shape (deterministic for one build
/// and thread count).
fn slow_block(
    acc: &mut Array2<f64>,
    xb: ArrayView2<f32>,
    b: &Block,
    hw: &Hardware,
    ideal_adc: bool,
    noise: Option<(&ImageNoise, &mut Rng)>,
    sc: &mut Scratch,
) {
    let Some(sl) = &b.slow else {
        return;
    };
    let dac = hw.dac_bits;
    let cycles = hw.input_bits.div_ceil(dac) as usize;
    let conv = Conv {
        out: acc.ncols(),
        adc_max: ((1u64 << hw.adc_bits) - 1) as f64,
        ideal_adc,
    };
    let n = sl.weights.len();
    let tokens = xb.nrows();
    let chunk = planes_per_product(cycles, tokens, sl.w.ncols(), sc.stack);
    let mut noise = noise;
    let mut j0 = 0;
    while j0 < cycles {
        let planes = chunk.min(cycles - j0);
        let (p, v) = plane_products(xb, sl, dac, (j0, planes), sc);
        for j in j0..j0 + planes {
            let rows = s![(j - j0) * tokens..(j - j0 + 1) * tokens, ..];
            let p = p.slice(rows);
            let place = (1u64 << (j as u32 * dac)) as f64;
            let factors: Vec<f64> = sl.weights.iter().map(|w| w * place).collect();
            match (noise.as_mut(), &b.adc) {
                (Some((nz, rng)), Some(adc)) => {
                    // The variances: beside the currents, or their own product.
                    let (var, at) = match &v {
                        Some(v) => (v.slice(rows), 0),
                        None => (p, n * conv.out),
                    };
                    let read = (nz.read > 0.0).then_some((var, at, nz.read));
                    conv.noisy(acc, p, &factors, adc, read, rng);
                }
                _ => conv.exact(acc, p, &factors),
            }
        }
        j0 += planes;
    }
}

/// Elements of one stacked product's result at most (16 MB of f32): as
/// many digit planes per product as fit, at least one.
const STACK_ELEMS: usize = 1 << 22;

fn planes_per_product(cycles: usize, tokens: usize, cols: usize, stack: usize) -> usize {
    (stack / (tokens * cols).max(1)).clamp(1, cycles.max(1))
}

/// Buffers one MVM's slow blocks reuse: each product overwrites what it
/// uses, so they are zeroed only when they grow.
#[derive(Default)]
struct Scratch {
    /// At most this many result elements per stacked product.
    stack: usize,
    digits: Vec<f32>,
    p: Vec<f32>,
    v: Vec<f32>,
}

/// The first `rows × cols` elements of `buf` as a matrix (grown if short).
fn view_of(buf: &mut Vec<f32>, rows: usize, cols: usize) -> ArrayViewMut2<'_, f32> {
    let n = rows * cols;
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
    ArrayViewMut2::from_shape((rows, cols), &mut buf[..n]).expect("a buffer of that size")
}

/// Input digit planes `j0..j0+planes` of `xb` stacked (`[planes·tokens,
/// rows]`), times the slow slices: their currents into `sc.p` and, when
/// the squares are apart (digits of several bits), their read-noise
/// variances into `sc.v`. Returns (products, variances) views.
fn plane_products<'s>(
    xb: ArrayView2<f32>,
    sl: &Slow,
    dac: u32,
    (j0, planes): (usize, usize),
    sc: &'s mut Scratch,
) -> (ArrayView2<'s, f32>, Option<ArrayView2<'s, f32>>) {
    let tokens = xb.nrows();
    let mask = (1u64 << dac) - 1;
    let mut digits = view_of(&mut sc.digits, planes * tokens, xb.ncols());
    for (i, mut d) in digits
        .axis_chunks_iter_mut(Axis(0), tokens.max(1))
        .enumerate()
    {
        let shift = (j0 + i) as u32 * dac;
        Zip::from(&mut d)
            .and(xb)
            .for_each(|d, &x| *d = (((x as u64) >> shift) & mask) as f32);
    }
    let rows = planes * tokens;
    matmul_into(
        digits.view(),
        sl.w.view(),
        view_of(&mut sc.p, rows, sl.w.ncols()),
        false,
    );
    if let Some(sq) = &sl.sq {
        digits.mapv_inplace(|d| d * d);
        let v = view_of(&mut sc.v, rows, sq.ncols());
        matmul_into(digits.view(), sq.view(), v, false);
    }
    let p = ArrayView2::from_shape((rows, sl.w.ncols()), &sc.p[..rows * sl.w.ncols()]);
    let v = sl.sq.as_ref().map(|sq| {
        ArrayView2::from_shape((rows, sq.ncols()), &sc.v[..rows * sq.ncols()])
            .expect("the buffer just written")
    });
    (p.expect("the buffer just written"), v)
}

/// One digit plane's conversions: `p` holds each token's column currents,
/// slice `k`'s in columns `k·out..(k+1)·out`, weighted `factors[k]`.
struct Conv {
    out: usize,
    adc_max: f64,
    ideal_adc: bool,
}

impl Conv {
    /// Whole currents on ideal devices: only the clip.
    fn exact(&self, acc: &mut Array2<f64>, p: ArrayView2<f32>, factors: &[f64]) {
        for (mut a, pr) in acc.rows_mut().into_iter().zip(p.rows()) {
            for (k, &f) in factors.iter().enumerate() {
                let cols = pr.slice(s![k * self.out..(k + 1) * self.out]);
                Zip::from(&mut a).and(&cols).for_each(|a, &i| {
                    let code = if self.ideal_adc {
                        i as f64
                    } else {
                        (i as f64).clamp(0.0, self.adc_max)
                    };
                    *a += f * code;
                });
            }
        }
    }

    /// On a noisy chip: per conversion, read noise (`read`: the variances
    /// `Σ d²·g²` with their column offset, and σ), gain, offset, rounding,
    /// clip; then the digital calibration. Three passes per (token,
    /// slice): each conversion's current and read-noise deviation
    /// (vectorised), the draws in column order (one stream), then the ADC
    /// and the digital unit (vectorised) — the same operations on every
    /// element as one pass would do.
    fn noisy(
        &self,
        acc: &mut Array2<f64>,
        p: ArrayView2<f32>,
        factors: &[f64],
        adc: &Adc,
        read: Option<(ArrayView2<f32>, usize, f64)>,
        rng: &mut Rng,
    ) {
        let out = self.out;
        fn col(a: &Array1<f64>) -> &[f64] {
            a.as_slice().expect("a fresh array")
        }
        let (gain, off, sub, cal) = (col(&adc.gain), col(&adc.off), col(&adc.sub), col(&adc.cal));
        let (bottom, top) = if self.ideal_adc {
            (f64::NEG_INFINITY, f64::INFINITY)
        } else {
            (0.0, self.adc_max)
        };
        let mut cur = vec![0f64; out];
        let mut sd = vec![0f64; out];
        for (t, mut a) in acc.rows_mut().into_iter().enumerate() {
            let a = a.as_slice_mut().expect("a fresh array");
            let pr = p.row(t);
            let pr = pr.as_slice().expect("a contiguous row");
            for (k, &f) in factors.iter().enumerate() {
                for (c, &i) in cur.iter_mut().zip(&pr[k * out..(k + 1) * out]) {
                    *c = i as f64;
                }
                if let Some((var, at, sigma)) = &read {
                    let vr = var.row(t);
                    let vr = &vr.as_slice().expect("a contiguous row")[at + k * out..][..out];
                    for (s, &v) in sd.iter_mut().zip(vr) {
                        *s = sigma * (v as f64).sqrt();
                    }
                    // No current, no noise and no draw.
                    for ((c, &s), &v) in cur.iter_mut().zip(&sd).zip(vr) {
                        if v > 0.0 {
                            *c += s * gauss(rng);
                        }
                    }
                }
                let adc = gain.iter().zip(off).zip(sub).zip(cal);
                for ((a, &i), (((&g, &o), &s), &c)) in a.iter_mut().zip(&cur).zip(adc) {
                    *a += f * (round_code(i * g + o).clamp(bottom, top) - s) * c;
                }
            }
        }
    }
}

/// One request's execution state.
pub struct Machine<'a> {
    pub prog: &'a Program,
    pub hw: &'a Hardware,
    pub images: &'a [PImage],
    pub consts: &'a [Arc<ArrayD<f32>>],
    pub ideal_adc: bool,
}

fn v2(a: &ArrayD<f32>) -> Result<ArrayView2<'_, f32>, String> {
    a.view()
        .into_dimensionality::<Ix2>()
        .map_err(|_| format!("expected a matrix, found shape {:?}", a.shape()))
}

impl Machine<'_> {
    /// Executes one instruction of a request's body: `at` is (request,
    /// instruction index), `bufs` this request's buffers, `spilled` its
    /// off-chip copies, `outs` its outputs.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &self,
        inst: &Inst,
        at: (u64, u64),
        ids: &[u32],
        mask: &[f32],
        bufs: &mut [Option<ArrayD<f32>>],
        spilled: &mut [Option<ArrayD<f32>>],
        outs: &mut Vec<(String, Vec<f32>)>,
    ) -> Result<(), String> {
        let get = |bufs: &[Option<ArrayD<f32>>], b: u32| -> Result<ArrayD<f32>, String> {
            bufs.get(b as usize)
                .and_then(|v| v.clone())
                .ok_or_else(|| format!("buffer b{b} is read before it is written"))
        };
        let konst = |c: u32| -> Result<&ArrayD<f32>, String> {
            self.consts
                .get(c as usize)
                .map(|a| a.as_ref())
                .ok_or_else(|| format!("constant c{c} does not exist"))
        };
        let value: Option<(u32, ArrayD<f32>)> = match inst {
            Inst::Phase(_)
            | Inst::XbProgram(_)
            | Inst::ForRequests
            | Inst::ForGroup { .. }
            | Inst::End
            | Inst::Barrier
            | Inst::Halt
            | Inst::Send { .. } => None,
            Inst::Load { dst, input } => Some((
                *dst,
                match input {
                    mgen_isa::isa::Input::Ids => {
                        Array1::from_iter(ids.iter().map(|&i| i as f32)).into_dyn()
                    }
                    mgen_isa::isa::Input::Mask => Array1::from(mask.to_vec()).into_dyn(),
                },
            )),
            Inst::Embed {
                dst,
                ids: b,
                word,
                pos,
                typ,
            } => {
                let idv = get(bufs, *b)?;
                let (w, p, t) = (v2(konst(*word)?)?, v2(konst(*pos)?)?, v2(konst(*typ)?)?);
                if w.ncols() != p.ncols() || w.ncols() != t.ncols() || t.nrows() == 0 {
                    return Err("embedding tables of different widths".into());
                }
                if let Some(bad) = idv.iter().find(|&&id| id as usize >= w.nrows()) {
                    return Err(format!("token id {bad:.0} outside the embedding table"));
                }
                if idv.len() > p.nrows() {
                    return Err(format!(
                        "{} positions for {} position embeddings",
                        idv.len(),
                        p.nrows()
                    ));
                }
                let idv = idv
                    .view()
                    .into_dimensionality::<Ix1>()
                    .map_err(|_| "token ids are a vector".to_string())?;
                Some((*dst, embed(idv, w, p, t).into_dyn()))
            }
            Inst::LayerNorm {
                dst,
                src,
                gamma,
                beta,
                eps,
            } => {
                let x = get(bufs, *src)?;
                let (g, b) = (konst(*gamma)?, konst(*beta)?);
                let n = x.shape().last().copied();
                if n.is_none() || g.shape() != [n.unwrap_or(0)] || b.shape() != g.shape() {
                    return Err(format!(
                        "LAYERNORM of {:?} with gamma {:?} and beta {:?}",
                        x.shape(),
                        g.shape(),
                        b.shape()
                    ));
                }
                Some((*dst, layernorm(&x, g, b, *eps as f32)))
            }
            Inst::Mvm {
                dst,
                src,
                image,
                bias,
            } => {
                let img = self
                    .images
                    .get(*image as usize)
                    .ok_or_else(|| format!("image i{image} does not exist"))?;
                let x = get(bufs, *src)?;
                if x.ndim() == 0 || x.ndim() > 2 {
                    return Err(format!("MVM of a rank-{} buffer", x.ndim()));
                }
                // Rank 1 or 2 (checked above), so there is a last axis.
                let width = x.shape().last().copied().unwrap_or(0);
                if width != img.inp {
                    return Err(format!(
                        "input of width {width} for a {}-input image",
                        img.inp
                    ));
                }
                let mut y = mvm_at(img, &x, self.hw, self.ideal_adc, at);
                let b = konst(*bias)?
                    .view()
                    .into_dimensionality::<Ix1>()
                    .map_err(|_| "bias is not a vector".to_string())?;
                if b.len() != img.out {
                    return Err(format!("bias of {} for {} outputs", b.len(), img.out));
                }
                let last = Axis(y.ndim() - 1);
                for mut lane in y.lanes_mut(last) {
                    lane += &b;
                }
                Some((*dst, y))
            }
            Inst::Dmm {
                dst,
                a,
                b,
                kind,
                heads,
            } => {
                let (a, b) = (get(bufs, *a)?, get(bufs, *b)?);
                let heads = *heads as usize;
                match kind {
                    DmmKind::Qk => {
                        let (q, k) = (v2(&a)?, v2(&b)?);
                        let h = q.ncols();
                        if q.dim() != k.dim() || heads == 0 || h % heads != 0 {
                            return Err(format!(
                                "DMM qk of {:?} and {:?} with {heads} heads",
                                q.dim(),
                                k.dim()
                            ));
                        }
                        Some((*dst, qk(q, k, heads).into_dyn()))
                    }
                    DmmKind::Av => {
                        let p = a
                            .view()
                            .into_dimensionality::<Ix3>()
                            .map_err(|_| "DMM av needs [heads, s, s]".to_string())?;
                        let v = v2(&b)?;
                        let (sv, h) = v.dim();
                        if heads == 0 || h % heads != 0 || p.dim() != (heads, sv, sv) {
                            return Err(format!(
                                "DMM av of {:?} and {:?} with {heads} heads",
                                p.dim(),
                                v.dim()
                            ));
                        }
                        Some((*dst, av(p, v, heads).into_dyn()))
                    }
                }
            }
            Inst::Vec { dst, op, a, b } => {
                let x = get(bufs, *a)?;
                let y = match op {
                    VecOp::Add => {
                        let y = get(bufs, b.unwrap_or(u32::MAX))?;
                        if y.shape() != x.shape() {
                            return Err(format!(
                                "VEC add of shapes {:?} and {:?}",
                                x.shape(),
                                y.shape()
                            ));
                        }
                        x + &y
                    }
                    VecOp::Scale(f) => x.mapv(|v| v * *f as f32),
                    VecOp::Mask => {
                        let m = get(bufs, b.unwrap_or(u32::MAX))?;
                        let m = m
                            .view()
                            .into_dimensionality::<Ix1>()
                            .map_err(|_| "a mask is a vector".to_string())?;
                        if x.ndim() == 0 || x.shape().last() != Some(&m.len()) {
                            return Err(format!(
                                "VEC mask of {:?} with a mask of {}",
                                x.shape(),
                                m.len()
                            ));
                        }
                        mask_scores(x, m)
                    }
                    VecOp::Softmax if x.ndim() == 0 => return Err("softmax of a scalar".into()),
                    VecOp::Softmax => softmax(&x),
                    VecOp::Gelu => gelu_all(x),
                    VecOp::Tanh => x.mapv(f32::tanh),
                };
                Some((*dst, y))
            }
            Inst::Pool {
                dst,
                src,
                mask: mb,
                mean,
            } => {
                let x = get(bufs, *src)?;
                let x = v2(&x)?;
                if x.nrows() == 0 {
                    return Err("POOL of an empty sequence".into());
                }
                if get(bufs, *mb)?.shape() != [x.nrows()] {
                    return Err(format!(
                        "POOL over {} positions needs a mask of as many",
                        x.nrows()
                    ));
                }
                if *mean {
                    let m = get(bufs, *mb)?;
                    if m.len() != x.nrows() {
                        return Err(format!(
                            "POOL over {} positions with a mask of {}",
                            x.nrows(),
                            m.len()
                        ));
                    }
                    let m = m
                        .view()
                        .into_dimensionality::<Ix1>()
                        .map_err(|_| "a mask is a vector".to_string())?;
                    Some((*dst, mean_pool(x, m).into_dyn()))
                } else {
                    Some((*dst, x.row(0).to_owned().into_dyn()))
                }
            }
            Inst::Spill { src, .. } => {
                let v = get(bufs, *src)?;
                *spilled
                    .get_mut(*src as usize)
                    .ok_or("spill of an undeclared buffer")? = Some(v);
                None
            }
            Inst::Fill { dst, .. } => {
                let v = spilled
                    .get(*dst as usize)
                    .and_then(|v| v.clone())
                    .ok_or_else(|| format!("FILL b{dst} of a buffer never spilled"))?;
                Some((*dst, v))
            }
            Inst::Store { task, src } => {
                outs.push((task.clone(), get(bufs, *src)?.iter().copied().collect()));
                None
            }
        };
        if let Some((dst, v)) = value {
            let want = self
                .prog
                .buffers
                .get(dst as usize)
                .ok_or_else(|| format!("buffer b{dst} is not declared"))?;
            let got: Vec<u64> = v.shape().iter().map(|&d| d as u64).collect();
            if &got != want {
                return Err(format!(
                    "result of shape {got:?} for buffer b{dst} declared {want:?}"
                ));
            }
            bufs[dst as usize] = Some(v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mgen_hw::Noise;

    /// A `[out, in]` matrix of 8-bit weights (an LCG's) and 3 tokens of
    /// inputs, on crossbars of 16 rows.
    fn case(out: usize, inp: usize) -> (QMatrix, ArrayD<f32>) {
        let mut s = 7u64;
        let mut next = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as i64
        };
        let q = Array2::from_shape_fn((out, inp), |_| (next() % 255 - 127) as i16);
        let x = Array2::from_shape_fn((3, inp), |_| (next() % 200) as f32 / 50.0 - 2.0);
        let qm = QMatrix {
            q,
            scale: Array1::from_elem(out, 0.01),
            smooth: Array1::ones(inp),
            bits: 8,
        };
        (qm, x.into_dyn())
    }

    fn hardware(dac_bits: u32, noise: Noise) -> Hardware {
        Hardware {
            rows: 16,
            cell_bits: 2,
            dac_bits,
            adc_bits: 5,
            weight_bits: 8,
            input_bits: 8,
            signs: Signs::Offset,
            noise,
            ..Hardware::default()
        }
    }

    /// Digit planes stacked one per product, a few per product, or all in
    /// one: on whole currents (noise-free, clipping) the same bits, since
    /// every partial sum is an exact integer. On a noisy chip the currents
    /// are fractional f32 sums whose rounding may follow the kernel's
    /// summation order, which the product's shape can change, so there
    /// the outputs must agree to a small fraction of their range (a
    /// misplaced plane is off by a factor of two or more), with one-bit
    /// digits (variances beside the currents) and two-bit digits
    /// (variances a product of their own).
    #[test]
    fn stacking_digit_planes_keeps_every_plane_in_place() {
        let (q, x) = case(24, 40);
        let noisy = mgen_hw::noise::preset("typical_reram").expect("a preset");
        for (dac, noise) in [(1, Noise::default()), (1, noisy.clone()), (2, noisy)] {
            let exact = noise.is_off();
            let hw = hardware(dac, noise);
            let img = prepare(&q, InputQuant::symmetric(0.02, 8), &hw, false, 3);
            let one = mvm_stacked(&img, &x, &hw, false, (1, 2), 1);
            let range = one.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for stack in [3 * 24 * 8 * 3, usize::MAX] {
                let more = mvm_stacked(&img, &x, &hw, false, (1, 2), stack);
                let worst = one
                    .iter()
                    .zip(&more)
                    .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                let ok = if exact {
                    one.iter()
                        .zip(&more)
                        .all(|(a, b)| a.to_bits() == b.to_bits())
                } else {
                    worst <= 0.02 * range
                };
                assert!(ok, "dac {dac}, stack {stack}: worst {worst} of {range}");
            }
        }
    }

    /// Calibration computes its correction from the codes it reads: an
    /// analog error the ADC's rounding removes (a 0.05% gain error on
    /// currents of at most 48 LSBs moves none by 0.03 LSB) leaves every
    /// code exact and the correction 1, so the chip computes the
    /// noise-free outputs bit for bit; a 2% gain error does not.
    #[test]
    fn calibration_does_not_correct_what_rounding_removed() {
        let (q, x) = case(24, 40);
        let clean = hardware(1, Noise::default());
        let img = prepare(&q, InputQuant::symmetric(0.02, 8), &clean, false, 3);
        let want = mvm_at(&img, &x, &clean, false, (0, 0));
        for (gain, same) in [(0.0005, true), (0.02, false)] {
            let hw = hardware(
                1,
                Noise {
                    adc_gain: gain,
                    calibrate: true,
                    ..Noise::default()
                },
            );
            let img = prepare(&q, InputQuant::symmetric(0.02, 8), &hw, false, 3);
            let got = mvm_at(&img, &x, &hw, false, (0, 0));
            let equal = want
                .iter()
                .zip(&got)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert_eq!(equal, same, "gain {gain}: {want:?} vs {got:?}");
        }
    }
}
