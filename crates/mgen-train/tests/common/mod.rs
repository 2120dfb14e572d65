//! Tiny synthetic models, weights and requests for the tests.

#![allow(dead_code)]

use mgen_front::spec::{Head, Model, Pool, WeightSource};
use mgen_model::forward::{self, Req};
use mgen_model::weights::layout;
use mgen_train::Batch;
use mgen_util::rng::Rng;
use ndarray::{Array2, ArrayD};
use std::collections::HashMap;
use std::sync::Arc;

pub type Store = HashMap<String, Arc<ArrayD<f32>>>;

/// A model with hidden width 32, 4 heads and `layers` encoder layers.
pub fn tiny(layers: u64) -> Model {
    Model {
        name: "tiny".into(),
        layers,
        hidden: 32,
        heads: 4,
        ffn: 48,
        vocab: 50,
        max_seq: 8,
        type_vocab: 2,
        layer_norm_eps: 1e-5,
        weights: WeightSource::Synthetic { seed: 1 },
    }
}

/// Every kind of head: both poolings of classify, regress and embed.
pub fn heads() -> Vec<Head> {
    let mut v = Vec::new();
    for pool in [Pool::Cls, Pool::Mean] {
        v.push(Head::Classify { classes: 3, pool });
        v.push(Head::Regress { pool });
        v.push(Head::Embed { pool });
    }
    v
}

/// Random weights for every tensor of the layout (LayerNorm gains near 1).
pub fn weights(m: &Model, head: &Head, seed: u64) -> Store {
    let mut rng = Rng::new(seed);
    let mut store = Store::new();
    for ts in layout(m, head) {
        let shape: Vec<usize> = ts.shape.iter().map(|&d| d as usize).collect();
        let gain = ts.name.contains("LayerNorm.weight");
        let t = ArrayD::from_shape_fn(shape, |_| match gain {
            true => 1.0 + rng.normal() as f32 * 0.1,
            false => rng.normal() as f32 * 0.3,
        });
        store.insert(ts.name, Arc::new(t));
    }
    store
}

/// `s` with every tensor perturbed by `N(0, amount²)`.
pub fn drift(s: &Store, seed: u64, amount: f32) -> Store {
    let mut rng = Rng::new(seed);
    let mut names: Vec<&String> = s.keys().collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let t = s[n].mapv(|v| v + rng.normal() as f32 * amount);
            (n.clone(), Arc::new(t))
        })
        .collect()
}

/// Looks tensors up in `s`.
pub fn getter(s: &Store) -> impl Fn(&str) -> Result<Arc<ArrayD<f32>>, String> + '_ {
    move |n: &str| s.get(n).cloned().ok_or_else(|| format!("no tensor `{n}`"))
}

/// Block 0's outputs and masks for `n` requests of `seq` tokens; request
/// `i` has `i % 3` padded positions.
pub struct Data {
    pub xs: Vec<Array2<f32>>,
    pub masks: Vec<Vec<f32>>,
}

pub fn data(n: usize, seq: usize, hidden: usize, seed: u64) -> Data {
    let mut rng = Rng::new(seed);
    let xs = (0..n)
        .map(|_| Array2::from_shape_fn((seq, hidden), |_| rng.normal() as f32))
        .collect();
    let masks = (0..n)
        .map(|i| (0..seq).map(|s| (s + i % 3 < seq) as u8 as f32).collect())
        .collect();
    Data { xs, masks }
}

impl Data {
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            x: self.xs.iter().map(|x| x.view()).collect(),
            masks: self.masks.iter().map(|m| m.as_slice()).collect(),
        }
    }
}

/// mgen's reference: every request through `forward::rest` from block 1.
pub fn reference(m: &Model, head: &Head, s: &Store, d: &Data) -> Array2<f32> {
    let get = getter(s);
    let rows: Vec<Vec<f32>> =
        d.xs.iter()
            .zip(&d.masks)
            .map(|(x, mask)| {
                let r = Req { ids: &[], mask };
                forward::rest(m, head, &get, 1, Some(&x.clone().into_dyn()), &r).unwrap()
            })
            .collect();
    let w = rows[0].len();
    Array2::from_shape_vec((rows.len(), w), rows.concat()).unwrap()
}

/// The largest absolute difference of two arrays of one shape.
pub fn max_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}
