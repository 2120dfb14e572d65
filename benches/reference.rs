//! Benchmark: the float32 reference executor on one BERT-base request at
//! seq 128, as a ratio to a plain ndarray f32 GEMM loop of the same matrix
//! shapes (the floor any executor of this model pays), measured in the same
//! run. `cargo bench --bench reference`. Prints medians of several runs.

mod common;
use common::median;
use ndarray::Array2;
use std::time::Instant;

fn gemm_loop(
    s: usize,
    h: usize,
    f: usize,
    heads: usize,
    layers: usize,
    mats: &[Array2<f32>],
) -> f32 {
    let x = Array2::<f32>::from_elem((s, h), 0.5);
    let xf = Array2::<f32>::from_elem((s, f), 0.5);
    let dh = h / heads;
    let qh = Array2::<f32>::from_elem((s, dh), 0.5);
    let p = Array2::<f32>::from_elem((s, s), 0.5);
    let mut acc = 0.0;
    for _ in 0..layers {
        for w in &mats[..4] {
            acc += x.dot(&w.t())[[0, 0]];
        }
        acc += x.dot(&mats[4].t())[[0, 0]];
        acc += xf.dot(&mats[5].t())[[0, 0]];
        for _ in 0..heads {
            acc += qh.dot(&qh.t())[[0, 0]];
            acc += p.dot(&qh)[[0, 0]];
        }
    }
    acc
}

fn main() {
    let (m, _, store, batch) = common::bert_base();
    let t = Instant::now();
    let plan = mgen::reference::Plan::new(&m, &store).unwrap();
    eprintln!(
        "materialising BERT-base weights: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let (s, h, f, heads, layers) = (128, 768, 3072, 12, 12);
    let mats = vec![
        Array2::<f32>::from_elem((h, h), 0.01),
        Array2::<f32>::from_elem((h, h), 0.01),
        Array2::<f32>::from_elem((h, h), 0.01),
        Array2::<f32>::from_elem((h, h), 0.01),
        Array2::<f32>::from_elem((f, h), 0.01),
        Array2::<f32>::from_elem((h, f), 0.01),
    ];
    let req = &batch.requests[0];
    let mask = req.mask();
    // Warm up both.
    let _ = plan.run_one(&req.ids, &mask);
    let _ = gemm_loop(s, h, f, heads, layers, &mats);
    let (mut tr, mut tg) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        let t = Instant::now();
        std::hint::black_box(plan.run_one(&req.ids, &mask));
        tr.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        std::hint::black_box(gemm_loop(s, h, f, heads, layers, &mats));
        tg.push(t.elapsed().as_secs_f64());
    }
    let (r, g) = (median(tr), median(tg));
    println!(
        "reference executor, BERT-base, 1 request, seq 128: {:.1} ms",
        r * 1e3
    );
    println!(
        "plain ndarray GEMM loop, same shapes:              {:.1} ms",
        g * 1e3
    );
    println!("ratio reference / GEMM loop: {:.2}x (goal <= 1.5x)", r / g);
}
