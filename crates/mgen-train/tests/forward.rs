//! candle's forward against mgen's reference (`mgen_model::forward`), block
//! by block and for whole tasks, on random synthetic weights.

mod common;

use common::*;
use mgen_ir::bert;
use mgen_model::forward::{self, Req};
use mgen_train::{forward, forward_block};
use ndarray::{ArrayD, Axis};

const TOL: f32 = 1e-4;

/// Every stage after the embeddings (encoder layers, pooling, head), each
/// on the reference's own input to it, for every head.
#[test]
fn every_block_matches_the_reference() {
    let m = tiny(2);
    let d = data(5, 8, 32, 11);
    let mut worst = 0.0f32;
    for (hi, head) in heads().iter().enumerate() {
        let store = weights(&m, head, 20 + hi as u64);
        let get = getter(&store);
        let masks: Vec<&[f32]> = d.masks.iter().map(|m| m.as_slice()).collect();
        let mut xs: Vec<ArrayD<f32>> = d.xs.iter().map(|x| x.clone().into_dyn()).collect();
        for block in bert::model(&m, head).iter().skip(1) {
            let want: Vec<ArrayD<f32>> = xs
                .iter()
                .zip(&d.masks)
                .map(|(x, mask)| {
                    let r = Req { ids: &[], mask };
                    forward::run(block, &get, Some(x), &r).unwrap()
                })
                .collect();
            let views: Vec<_> = xs.iter().map(|x| x.view()).collect();
            let stacked = ndarray::stack(Axis(0), &views).unwrap();
            let got = forward_block(block, &get, &stacked, &masks).unwrap();
            let views: Vec<_> = want.iter().map(|x| x.view()).collect();
            let diff = max_diff(&got, &ndarray::stack(Axis(0), &views).unwrap());
            eprintln!(
                "{head:?} {:?}: max |candle − reference| = {diff:.2e}",
                block.stage
            );
            assert!(diff <= TOL, "{head:?} {:?}: {diff}", block.stage);
            worst = worst.max(diff);
            xs = want;
        }
    }
    eprintln!("every block: worst max-abs-diff {worst:.2e}");
}

/// A whole task from block 0's output to the head's, at every depth (trunk
/// and branch read one store, so the depth only moves the cut).
#[test]
fn whole_tasks_match_the_reference_at_every_depth() {
    let m = tiny(3);
    let d = data(6, 8, 32, 12);
    let mut worst = 0.0f32;
    for (hi, head) in heads().iter().enumerate() {
        let store = weights(&m, head, 40 + hi as u64);
        let get = getter(&store);
        let want = reference(&m, head, &store, &d).into_dyn();
        for depth in 1..=bert::blocks(&m) {
            let got = forward(&m, depth, head, &get, &get, &d.batch()).unwrap();
            let diff = max_diff(&got.into_dyn(), &want);
            eprintln!("{head:?} depth {depth}: max |candle − reference| = {diff:.2e}");
            assert!(diff <= TOL, "{head:?} depth {depth}: {diff}");
            worst = worst.max(diff);
        }
    }
    eprintln!("whole tasks: worst max-abs-diff {worst:.2e}");
}

/// The trunk really reads the trunk's tensors and the branch the branch's:
/// swapping in another model's trunk changes the output to that of the
/// mixed model.
#[test]
fn the_trunk_and_the_branch_read_their_own_tensors() {
    let m = tiny(2);
    let head = &heads()[0];
    let d = data(4, 8, 32, 13);
    let a = weights(&m, head, 60);
    let b = weights(&m, head, 61);
    let mut mixed = b.clone();
    for (n, t) in &a {
        if n.starts_with("encoder.layer.0.") {
            mixed.insert(n.clone(), t.clone());
        }
    }
    let got = forward(&m, 2, head, &getter(&a), &getter(&b), &d.batch()).unwrap();
    let want = reference(&m, head, &mixed, &d);
    let diff = max_diff(&got.into_dyn(), &want.into_dyn());
    assert!(diff <= TOL, "{diff}");
    let unmixed = reference(&m, head, &b, &d);
    let got = forward(&m, 2, head, &getter(&a), &getter(&b), &d.batch()).unwrap();
    assert!(max_diff(&got.into_dyn(), &unmixed.into_dyn()) > 1e-2);
}

/// Positions that are padding in every request of a batch are cut before
/// the forward pass (`Inputs::rows`): with 3 to 5 padded positions per
/// request, every head still matches the reference executor, which runs
/// the full sequence, at every depth.
#[test]
fn positions_padded_in_every_request_are_cut_without_changing_outputs() {
    let m = tiny(2);
    let mut d = data(5, 8, 32, 14);
    for (i, mask) in d.masks.iter_mut().enumerate() {
        for (s, v) in mask.iter_mut().enumerate() {
            *v = (s + 3 + i % 3 < 8) as u8 as f32;
        }
    }
    for (hi, head) in heads().iter().enumerate() {
        let store = weights(&m, head, 70 + hi as u64);
        let get = getter(&store);
        let want = reference(&m, head, &store, &d).into_dyn();
        for depth in 1..=bert::blocks(&m) {
            let got = forward(&m, depth, head, &get, &get, &d.batch()).unwrap();
            let diff = max_diff(&got.into_dyn(), &want);
            assert!(diff <= TOL, "{head:?} depth {depth}: {diff}");
        }
    }
}
