//! One epoch of joint training on a MiniLM-sized model (hidden 384, 6
//! layers, 12 heads, FFN 1536) with synthetic weights: 512 requests of 48
//! tokens, mini-batches of 16, two tasks on one batch, depth 4 (trunk =
//! encoder layers 0..3, branches = layers 3..6 and the heads). Prints the
//! time per step and per epoch, and a hash of the trained trunk's bits (to
//! compare runs at different thread counts).
//!
//! `cargo bench -p mgen-train` (set `RAYON_NUM_THREADS` to fix the threads;
//! `MGEN_BENCH_REQUESTS` to shorten the epoch). By default request `i` has
//! `i % 16` padded positions (nearly every mini-batch holds a full-length
//! request); `MGEN_BENCH_LENGTHS=short` draws each request's length
//! uniformly from 8..=48 instead (mean 28, about the real training files'
//! 14–29 tokens), where the trainer cuts positions padded in the whole
//! mini-batch.

use mgen_front::spec::{Head, Model, Pool, WeightSource};
use mgen_model::weights::layout;
use mgen_train::{Batch, Settings, Step, Task, train};
use mgen_util::rng::Rng;
use ndarray::{Array2, ArrayD};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

type Store = HashMap<String, Arc<ArrayD<f32>>>;

fn minilm() -> Model {
    Model {
        name: "minilm".into(),
        layers: 6,
        hidden: 384,
        heads: 12,
        ffn: 1536,
        vocab: 30522,
        max_seq: 512,
        type_vocab: 2,
        layer_norm_eps: 1e-12,
        weights: WeightSource::Synthetic { seed: 1 },
    }
}

/// Random weights for the encoder and head (the embeddings are skipped:
/// block 0 is frozen and its output is the input).
fn weights(m: &Model, head: &Head, seed: u64) -> Store {
    let mut rng = Rng::new(seed);
    layout(m, head)
        .into_iter()
        .filter(|t| !t.name.starts_with("embeddings."))
        .map(|t| {
            let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
            let gain = t.name.contains("LayerNorm.weight");
            let a = ArrayD::from_shape_fn(shape, |_| match gain {
                true => 1.0,
                false => rng.normal() as f32 * 0.05,
            });
            (t.name, Arc::new(a))
        })
        .collect()
}

/// `n` random block-0 outputs of `seq` tokens (up to 15 padded), their
/// masks, and random teacher rows for each head.
fn requests(m: &Model, heads: &[Head], n: usize, seq: usize) -> Requests {
    let mut rng = Rng::new(9);
    let h = m.hidden as usize;
    let xs = (0..n)
        .map(|_| Array2::from_shape_fn((seq, h), |_| rng.normal() as f32))
        .collect();
    let short = std::env::var("MGEN_BENCH_LENGTHS").is_ok_and(|v| v == "short");
    let masks = (0..n)
        .map(|i| {
            let len = match short {
                true => 8 + rng.below(0, 41) as usize,
                false => seq - i % 16,
            };
            (0..seq).map(|s| (s < len) as u8 as f32).collect()
        })
        .collect();
    let targets = heads
        .iter()
        .map(|hd| {
            let w = hd.width(m.hidden) as usize;
            Array2::from_shape_fn((n, w), |_| rng.normal() as f32)
        })
        .collect();
    (xs, masks, targets)
}

type Requests = (Vec<Array2<f32>>, Vec<Vec<f32>>, Vec<Array2<f32>>);

fn main() {
    let m = minilm();
    // `MGEN_BENCH_REQUESTS` shortens the epoch (the time per step is the figure).
    let n = std::env::var("MGEN_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let seq = 48;
    let heads = [
        Head::Classify {
            classes: 3,
            pool: Pool::Cls,
        },
        Head::Embed { pool: Pool::Mean },
    ];
    let stores: Vec<Store> = heads
        .iter()
        .zip(1..)
        .map(|(hd, s)| weights(&m, hd, s))
        .collect();
    let (xs, masks, targets) = requests(&m, &heads, n, seq);
    let batch = Batch {
        x: xs.iter().map(|x| x.view()).collect(),
        masks: masks.iter().map(|m| m.as_slice()).collect(),
    };
    let gets: Vec<_> = stores
        .iter()
        .map(|s| move |k: &str| s.get(k).cloned().ok_or_else(|| k.to_string()))
        .collect();
    let tasks: Vec<Task> = (0..2)
        .map(|i| Task {
            head: &heads[i],
            batch: 0,
            targets: targets[i].view(),
            labels: vec![None; n],
            init: &gets[i],
        })
        .collect();
    let s = Settings {
        epochs: 1,
        lr: 1e-4,
        batch: 16,
        labels: 0.0,
        temperature: 2.0,
        max_seconds: None,
    };
    let times = Mutex::new(Vec::new());
    let on_step = |_: &Step| times.lock().unwrap().push(Instant::now());
    let start = Instant::now();
    let t = train(&m, 4, &gets[0], &[batch], &tasks, &s, 1, &on_step).unwrap();
    let total = start.elapsed().as_secs_f64();
    let times = times.into_inner().unwrap();
    let steps = times.len();
    let per_step = (times[steps - 1] - times[0]).as_secs_f64() / (steps - 1) as f64;
    let mut names: Vec<&String> = t.trunk.keys().collect();
    names.sort();
    // FNV-1a over every bit of the trunk, in name order.
    let hash = names
        .iter()
        .flat_map(|k| t.trunk[*k].iter())
        .fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
            (h ^ x.to_bits() as u64).wrapping_mul(0x0100_0000_01b3)
        });
    println!(
        "joint epoch, MiniLM-sized (2 tasks, depth 4, {n} x {seq} tokens ({} lengths), batch 16, {} threads): \
         {steps} steps, {per_step:.3} s/step, epoch ≈ {:.1} s; whole call {total:.1} s \
         (incl. loss before/after); trunk bits hash {hash:016x}",
        std::env::var("MGEN_BENCH_LENGTHS").unwrap_or_else(|_| "full".into()),
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into()),
        per_step * steps as f64
    );
}
