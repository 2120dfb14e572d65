//! AdamW with global-norm clipping and the warm-up/decay schedule, as
//! `mgen_model::train` runs them.
//!
//! - schedule ([`rate`]): step `k` (1-based) of `total` has rate
//!   `lr · k / warm` for `k ≤ warm`, else `lr · (total + 1 − k) / (total + 1
//!   − warm)`, with `warm = max(1, ⌈0.1 · total⌉)`;
//! - clipping: the gradient of every variable (trunk and branches together)
//!   is scaled by `min(1, 1 / ‖g‖₂)`, the norm summed in f64 per tensor and
//!   then over tensors in variable order;
//! - AdamW: β = 0.9, 0.999, ε = 1e-8, bias-corrected moments, decoupled
//!   weight decay 0.01 on matrices (rank-2 tensors) only:
//!   `p −= rate · (m̂ / (√v̂ + ε) + decay · p)`, in f32 exactly as the
//!   hand-written trainer writes it.
//!
//! The update is elementwise on host buffers (one copy of each gradient and
//! parameter per step); tensors are updated in parallel, each by one
//! thread, so the result does not depend on the thread count. A variable
//! the loss does not reach has gradient zero.

use crate::graph::{CPU, R, cerr};
use candle_core::Var;
use candle_core::backprop::GradStore;
use rayon::prelude::*;

/// Decoupled weight decay (matrices only).
pub const WEIGHT_DECAY: f32 = 0.01;
/// Global gradient-norm clip.
pub const CLIP: f64 = 1.0;
/// Share of the steps spent warming the learning rate up.
pub const WARMUP: f64 = 0.1;
const B1: f32 = 0.9;
const B2: f32 = 0.999;
const EPS: f32 = 1e-8;

/// The warm-up length of a run of `total` steps.
pub fn warmup(total: usize) -> usize {
    ((total as f64 * WARMUP).ceil() as usize).max(1)
}

/// The learning rate of step `k` (1-based) of `total`.
pub fn rate(lr: f64, k: usize, total: usize) -> f64 {
    let warm = warmup(total);
    lr * if k <= warm {
        k as f64 / warm as f64
    } else {
        (total + 1 - k) as f64 / (total + 1 - warm) as f64
    }
}

/// AdamW state over a fixed list of variables.
pub struct AdamW {
    vars: Vec<Var>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    t: i32,
}

/// One variable's update, in place on host buffers.
fn update(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: (f32, f32, f32, f32)) {
    let (lr, decay, c1, c2) = k;
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        *m = B1 * *m + (1.0 - B1) * g;
        *v = B2 * *v + (1.0 - B2) * g * g;
        let (mh, vh) = (*m / c1, *v / c2);
        *p -= lr * (mh / (vh.sqrt() + EPS) + decay * *p);
    }
}

impl AdamW {
    pub fn new(vars: Vec<Var>) -> AdamW {
        let zeros = |v: &Var| vec![0.0f32; v.elem_count()];
        AdamW {
            m: vars.iter().map(zeros).collect(),
            v: vars.iter().map(zeros).collect(),
            vars,
            t: 0,
        }
    }

    /// The gradients of every variable as host buffers (zero when absent).
    fn grads(&self, grads: &GradStore) -> R<Vec<Vec<f32>>> {
        self.vars
            .iter()
            .map(|v| match grads.get(v.as_tensor()) {
                Some(g) => g.flatten_all().and_then(|f| f.to_vec1()).map_err(cerr),
                None => Ok(vec![0.0; v.elem_count()]),
            })
            .collect()
    }

    /// Clips the gradients to global norm [`CLIP`] and takes one step at
    /// rate `lr`. Returns the gradient's norm before clipping.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> R<f64> {
        let mut g = self.grads(grads)?;
        let sq: Vec<f64> = g
            .par_iter()
            .map(|t| t.iter().fold(0.0f64, |a, &x| a + (x as f64).powi(2)))
            .collect();
        let norm = sq.iter().sum::<f64>().sqrt();
        if norm > CLIP {
            let scale = (CLIP / norm) as f32;
            g.par_iter_mut()
                .for_each(|t| t.iter_mut().for_each(|x| *x *= scale));
        }
        self.t += 1;
        let (c1, c2) = (1.0 - B1.powi(self.t), 1.0 - B2.powi(self.t));
        let mut ps: Vec<Vec<f32>> = self
            .vars
            .iter()
            .map(|v| v.flatten_all().and_then(|f| f.to_vec1()).map_err(cerr))
            .collect::<R<_>>()?;
        let ranks: Vec<usize> = self.vars.iter().map(|v| v.rank()).collect();
        ps.par_iter_mut()
            .zip(g.par_iter())
            .zip(self.m.par_iter_mut())
            .zip(self.v.par_iter_mut())
            .zip(ranks.par_iter())
            .for_each(|((((p, g), m), v), &rank)| {
                let decay = if rank == 2 { WEIGHT_DECAY } else { 0.0 };
                update(p, g, m, v, (lr as f32, decay, c1, c2));
            });
        for (var, p) in self.vars.iter().zip(ps) {
            let t = candle_core::Tensor::from_vec(p, var.shape(), &CPU).map_err(cerr)?;
            var.set(&t).map_err(cerr)?;
        }
        Ok(norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linear warm-up over the first 10% of steps to the peak, then linear
    /// decay towards zero (the branch trainer's schedule).
    #[test]
    fn the_rate_warms_up_then_decays() {
        let r: Vec<f64> = (1..=20).map(|k| rate(1.0, k, 20)).collect();
        assert_eq!(warmup(20), 2);
        assert_eq!((r[0], r[1]), (0.5, 1.0));
        assert!(r[1..].windows(2).all(|w| w[1] < w[0]));
        assert_eq!(r[19], 1.0 / 19.0);
        assert_eq!(warmup(3), 1);
        assert_eq!(rate(2.0, 1, 3), 2.0);
    }

    /// One step on a gradient of norm 10 is clipped to norm 1; AdamW's first
    /// step moves every coordinate by about `lr` against its gradient's sign
    /// (plus weight decay on the matrix only).
    #[test]
    fn a_step_clips_and_decays_matrices_only() {
        let w = Var::from_tensor(
            &candle_core::Tensor::ones((2, 2), candle_core::DType::F32, &CPU).unwrap(),
        )
        .unwrap();
        let b =
            Var::from_tensor(&candle_core::Tensor::ones(2, candle_core::DType::F32, &CPU).unwrap())
                .unwrap();
        let loss = ((w.as_tensor().sum_all().unwrap() * 5.0).unwrap()
            - (b.as_tensor().sum_all().unwrap() * 5.0).unwrap())
        .unwrap();
        let grads = loss.backward().unwrap();
        let mut opt = AdamW::new(vec![w.clone(), b.clone()]);
        let norm = opt.step(&grads, 0.1).unwrap();
        assert!((norm - (6.0f64 * 25.0).sqrt()).abs() < 1e-9, "{norm}");
        let w: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        for x in w {
            assert!((x - (1.0 - 0.1 * (1.0 + WEIGHT_DECAY))).abs() < 1e-5, "{x}");
        }
        for x in b {
            assert!((x - 1.1).abs() < 1e-5, "{x}");
        }
    }
}
