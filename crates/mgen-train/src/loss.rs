//! The distillation objective of `mgen_model::train`, on batches of candle
//! tensors.
//!
//! Per request, with `s` the student's output row, `t` the teacher's and
//! `α` the label weight (`Settings::labels` on requests that carry a usable
//! label, 0 otherwise):
//! - classify: `(1 − α)·T²·KL(softmax(t/T) ‖ softmax(s/T)) + α·CE(s, label)`,
//!   `T` = the temperature floored at 1e-3; a class label outside
//!   `0..classes` is no label;
//! - regress: `(1 − α)(s − t)² + α(s − y)²`, where a class label counts as
//!   its number;
//! - embed: the mean over the width of `(s − t)²` (labels unused).
//!
//! Everything that depends only on the teacher and the labels (the soft
//! targets, their `Σ p log p`, the per-request weights, one-hot labels) is
//! computed once per task in f64 and kept as f32 tensors over all of the
//! task's requests; a mini-batch selects its rows ([`Teacher::rows`]).
//! [`Teacher::losses`] returns the per-request losses `[B]`; the gradient
//! flows to the student's output only.

use crate::graph::{R, cerr, log_softmax};
use candle_core::{D, Tensor};
use mgen_front::spec::Head;
use mgen_model::data::Label;
use ndarray::ArrayView2;

use crate::graph::CPU;

/// A task's teacher rows and label terms, per request.
#[derive(Clone)]
pub(crate) enum Teacher {
    Classify {
        /// `softmax(t/T)`, `[n, classes]`.
        soft: Tensor,
        /// `Σ_j p_j ln p_j` of `soft`, `[n]`.
        plogp: Tensor,
        /// `(1 − α)·T²`, `[n]`.
        distil: Tensor,
        /// `α` times the one-hot label (zero rows without one), `[n, classes]`.
        label: Tensor,
        temperature: f64,
    },
    Regress {
        target: Tensor,
        /// `α`, `[n]`.
        alpha: Tensor,
        /// The label's value (0 without one), `[n]`.
        value: Tensor,
    },
    Embed {
        target: Tensor,
    },
}

fn vec1(v: Vec<f32>) -> R<Tensor> {
    let n = v.len();
    Tensor::from_vec(v, n, &CPU).map_err(cerr)
}

fn vec2(v: Vec<f32>, rows: usize, cols: usize) -> R<Tensor> {
    Tensor::from_vec(v, (rows, cols), &CPU).map_err(cerr)
}

/// `softmax(x / t)` of one row, in f64.
fn soft(x: &[f32], t: f64) -> Vec<f64> {
    let max = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let e: Vec<f64> = x.iter().map(|&v| ((v as f64 - max) / t).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

impl Teacher {
    /// The teacher terms of a task with head `head` over its requests'
    /// `targets` (`[n, width]`) and `labels`.
    pub fn new(
        head: &Head,
        targets: ArrayView2<f32>,
        labels: &[Option<Label>],
        alpha: f64,
        temperature: f64,
    ) -> R<Teacher> {
        let (n, w) = targets.dim();
        let rows: Vec<Vec<f32>> = targets.rows().into_iter().map(|r| r.to_vec()).collect();
        let a = alpha as f32;
        match head {
            Head::Embed { .. } => Ok(Teacher::Embed {
                target: vec2(rows.concat(), n, w)?,
            }),
            Head::Regress { .. } => {
                let value = |l: &Option<Label>| match *l {
                    Some(Label::Value(v)) => Some(v as f32),
                    Some(Label::Class(c)) => Some(c as f32),
                    None => None,
                };
                let ys: Vec<Option<f32>> = labels.iter().map(value).collect();
                Ok(Teacher::Regress {
                    target: vec2(rows.concat(), n, w)?,
                    alpha: vec1(ys.iter().map(|y| y.map_or(0.0, |_| a)).collect())?,
                    value: vec1(ys.iter().map(|y| y.unwrap_or(0.0)).collect())?,
                })
            }
            Head::Classify { .. } => {
                let t = temperature.max(1e-3);
                let class = |l: &Option<Label>| match *l {
                    Some(Label::Class(c)) if c >= 0 && (c as usize) < w => Some(c as usize),
                    _ => None,
                };
                let ps: Vec<Vec<f64>> = rows.iter().map(|r| soft(r, t)).collect();
                let plogp = ps.iter().map(|p| {
                    p.iter()
                        .filter(|&&p| p > 0.0)
                        .map(|p| p * p.ln())
                        .sum::<f64>() as f32
                });
                let mut label = vec![0.0f32; n * w];
                let mut distil = Vec::with_capacity(n);
                for (i, l) in labels.iter().enumerate() {
                    let c = class(l);
                    if let Some(c) = c {
                        label[i * w + c] = a;
                    }
                    let ai = if c.is_some() { a } else { 0.0 };
                    distil.push(((1.0 - ai) as f64 * t * t) as f32);
                }
                let soft: Vec<f32> = ps.iter().flatten().map(|&p| p as f32).collect();
                Ok(Teacher::Classify {
                    soft: vec2(soft, n, w)?,
                    plogp: vec1(plogp.collect())?,
                    distil: vec1(distil)?,
                    label: vec2(label, n, w)?,
                    temperature: t,
                })
            }
        }
    }

    /// The terms of the requests `idx` (a `u32` index tensor), in its order.
    pub fn rows(&self, idx: &Tensor) -> R<Teacher> {
        let sel = |t: &Tensor| t.index_select(idx, 0).map_err(cerr);
        Ok(match self {
            Teacher::Classify {
                soft,
                plogp,
                distil,
                label,
                temperature,
            } => Teacher::Classify {
                soft: sel(soft)?,
                plogp: sel(plogp)?,
                distil: sel(distil)?,
                label: sel(label)?,
                temperature: *temperature,
            },
            Teacher::Regress {
                target,
                alpha,
                value,
            } => Teacher::Regress {
                target: sel(target)?,
                alpha: sel(alpha)?,
                value: sel(value)?,
            },
            Teacher::Embed { target } => Teacher::Embed {
                target: sel(target)?,
            },
        })
    }

    /// Per-request losses `[B]` of the student's outputs `s` (`[B, width]`)
    /// against these rows.
    pub fn losses(&self, s: &Tensor) -> R<Tensor> {
        self.losses_c(s).map_err(cerr)
    }

    fn losses_c(&self, s: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Teacher::Embed { target } => (s - target)?.sqr()?.mean(D::Minus1),
            Teacher::Regress {
                target,
                alpha,
                value,
            } => {
                let s = s.squeeze(1)?;
                let t = target.squeeze(1)?;
                let distil = (s.sub(&t)?.sqr()? * alpha.affine(-1.0, 1.0)?)?;
                let label = (s.sub(value)?.sqr()? * alpha)?;
                distil + label
            }
            Teacher::Classify {
                soft,
                plogp,
                distil,
                label,
                temperature,
            } => {
                let lp_t = log_softmax(&s.affine(1.0 / temperature, 0.0)?)?;
                let kl = (plogp - (soft * lp_t)?.sum(D::Minus1)?)?;
                let ce = (label * log_softmax(s)?)?.sum(D::Minus1)?.neg()?;
                (kl * distil)? + ce
            }
        }
    }
}
