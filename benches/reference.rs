//! Benchmark: the float32 reference executor on one BERT-base request at
//! seq 128, measured in the same run against
//! - the same matrix products alone, on the same GEMM kernel and in the
//!   reference's formulation (`W · xᵀ`; the floor any executor of this
//!   model on this kernel pays), and
//! - the f32 peak estimate: the model's multiply-adds at the rate this
//!   machine's kernel reaches on one large square product (the best this
//!   CPU does for f32 with the threads rayon has).
//!
//! `cargo bench --bench reference`. Prints medians of several runs; the
//! PyTorch comparison is `scripts/bench-peers.sh`.

mod common;
use common::median;
use mgen::gemm::matmul;
use ndarray::Array2;
use std::time::Instant;

const S: usize = 128;
const H: usize = 768;
const F: usize = 3072;
const HEADS: usize = 12;
const LAYERS: usize = 12;

fn gemm_loop(mats: &[Array2<f32>]) -> f32 {
    let x = Array2::<f32>::from_elem((S, H), 0.5);
    let xf = Array2::<f32>::from_elem((S, F), 0.5);
    let dh = H / HEADS;
    let qh = Array2::<f32>::from_elem((S, dh), 0.5);
    let p = Array2::<f32>::from_elem((S, S), 0.5);
    let mut acc = 0.0;
    for _ in 0..LAYERS {
        // The reference's formulation of `linear`: W · xᵀ.
        for w in &mats[..4] {
            acc += matmul(w.view(), x.t())[[0, 0]];
        }
        acc += matmul(mats[4].view(), x.t())[[0, 0]];
        acc += matmul(mats[5].view(), xf.t())[[0, 0]];
        for _ in 0..HEADS {
            acc += matmul(qh.view(), qh.t())[[0, 0]];
            acc += matmul(p.view(), qh.view())[[0, 0]];
        }
    }
    acc
}

/// Multiply-adds of one request: four h×h projections, two FFN products
/// and the per-head scores and mixes, per layer.
fn model_macs() -> f64 {
    let per_layer = 4 * S * H * H + 2 * S * H * F + 2 * S * S * H;
    (per_layer * LAYERS) as f64
}

/// Multiply-adds per second of one 1536³ product: the kernel's best.
fn peak_macs_per_s() -> f64 {
    let n = 1536;
    let a = Array2::<f32>::from_elem((n, n), 0.25);
    let _ = matmul(a.view(), a.view());
    let t: Vec<f64> = (0..3)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(matmul(a.view(), a.view()));
            t.elapsed().as_secs_f64()
        })
        .collect();
    (n * n * n) as f64 / median(t)
}

fn main() {
    let (m, _, store, batch) = common::bert_base();
    let t = Instant::now();
    let plan = mgen::reference::Plan::new(&m, &store).unwrap();
    eprintln!(
        "materialising BERT-base weights: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let mats: Vec<Array2<f32>> = [(H, H), (H, H), (H, H), (H, H), (F, H), (H, F)]
        .iter()
        .map(|&d| Array2::<f32>::from_elem(d, 0.01))
        .collect();
    let req = &batch.requests[0];
    let mask = req.mask();
    // Warm up both.
    let _ = plan.run_one(&req.ids, &mask);
    let _ = gemm_loop(&mats);
    let (mut tr, mut tg) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        let t = Instant::now();
        std::hint::black_box(plan.run_one(&req.ids, &mask));
        tr.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        std::hint::black_box(gemm_loop(&mats));
        tg.push(t.elapsed().as_secs_f64());
    }
    let (r, g) = (median(tr), median(tg));
    let peak = model_macs() / peak_macs_per_s();
    println!("threads: {}", rayon::current_num_threads());
    println!(
        "reference executor, BERT-base, 1 request, seq 128: {:.1} ms",
        r * 1e3
    );
    println!(
        "its matrix products alone, same GEMM kernel:       {:.1} ms",
        g * 1e3
    );
    println!(
        "f32 peak estimate (model MACs at the kernel's best): {:.1} ms",
        peak * 1e3
    );
    println!("ratio reference / products alone: {:.2}x", r / g);
    println!("ratio reference / f32 peak:       {:.2}x", r / peak);
}
