//! The overlapping timing model (`mgen_isa::timing`): crossbars of one
//! matrix fire together, ADCs bound the conversion rate, independent work
//! overlaps, chains do not, and every schedule lies between the critical
//! path and the sequential sum. The docs' hand calculation is asserted.

use mgen::backend::isa::{Image, Input, Inst, Line, Program, VecOp};
use mgen::backend::timing::{mvm_ns, timing};
use mgen::hw::Hardware;
use proptest::prelude::*;

fn line(inst: Inst) -> Line {
    Line {
        inst,
        node: String::new(),
        tasks: vec!["t".into()],
        layer: "0".into(),
        at: String::new(),
    }
}

fn image(out_dim: u64, in_dim: u64, first: u64, hw: &Hardware) -> Image {
    Image {
        tensor: "w".into(),
        out_dim,
        in_dim,
        phase: 0,
        first,
        crossbars: hw.crossbars_for(out_dim, in_dim, 8),
        tiles: 1,
        xscale: 1.0,
        xzero: 128,
        wbits: 8,
        reuses: None,
    }
}

/// A program: images programmed, then per request `LOAD b0` and `body`.
fn program(images: Vec<Image>, buffers: Vec<Vec<u64>>, body: Vec<Inst>) -> Program {
    let mut code = vec![line(Inst::Phase(0))];
    for i in 0..images.len() {
        code.push(line(Inst::XbProgram(i as u32)));
    }
    code.push(line(Inst::ForRequests));
    code.push(line(Inst::Load {
        dst: 0,
        input: Input::Ids,
    }));
    code.extend(body.into_iter().map(line));
    code.push(line(Inst::End));
    code.push(line(Inst::Halt));
    Program {
        buffers,
        consts: Vec::new(),
        images,
        code,
    }
}

fn mvm(dst: u32, src: u32, image: u32) -> Inst {
    Inst::Mvm {
        dst,
        src,
        image,
        bias: 0,
    }
}

/// One request's latency of a single MVM of `[out, in]` over 32 tokens.
fn one_mvm(out_dim: u64, in_dim: u64, hw: &Hardware) -> f64 {
    let p = program(
        vec![image(out_dim, in_dim, 0, hw)],
        vec![vec![32, in_dim], vec![32, out_dim]],
        vec![mvm(1, 0, 0)],
    );
    timing(&p, hw, 1).latency_ns
}

#[test]
fn crossbars_of_one_matrix_fire_together_and_adcs_bound_them() {
    let hw = Hardware::default();
    let one = one_mvm(128, 128, &hw);
    // 32 tokens x 8 input bits x one 100 ns cycle.
    assert_eq!(one, 32.0 * 8.0 * 100.0);
    // 4 x 4 = 16 crossbars (x 4 bit slices): the same time, not 16x.
    assert_eq!(one_mvm(512, 512, &hw), one);
    // Half an ADC per crossbar (4 per 8-crossbar core): twice the time.
    let half = Hardware {
        adcs_per_core: Some(4),
        ..Hardware::default()
    };
    assert_eq!(one_mvm(128, 128, &half), 2.0 * one);
    assert_eq!(one_mvm(512, 512, &half), 2.0 * one);
    // More ADCs than columns need cannot beat the crossbar read cycle.
    let many = Hardware {
        adcs_per_core: Some(64),
        ..Hardware::default()
    };
    assert_eq!(one_mvm(128, 128, &many), one);
}

/// Two MVMs reading `b0`, on images far apart (different tiles), either
/// independent or chained through `b1`.
fn two(chain: bool, second_first: u64) -> (f64, f64) {
    let hw = Hardware::default();
    let p = program(
        vec![image(128, 128, 0, &hw), image(128, 128, second_first, &hw)],
        vec![vec![32, 128]; 3],
        vec![mvm(1, 0, 0), mvm(2, if chain { 1 } else { 0 }, 1)],
    );
    let t = timing(&p, &hw, 1);
    (t.latency_ns, t.sequential_ns)
}

#[test]
fn independent_mvms_overlap_and_a_chain_does_not() {
    let one = 32.0 * 8.0 * 100.0;
    let per_tile = 96;
    assert_eq!(two(false, 3 * per_tile).0, one);
    assert_eq!(two(true, 3 * per_tile).0, 2.0 * one);
    // Two images on the same crossbars (reused) serialise on them.
    let hw = Hardware::default();
    let mut b = image(128, 128, 0, &hw);
    b.reuses = Some(0);
    let p = program(
        vec![image(128, 128, 0, &hw), b],
        vec![vec![32, 128]; 3],
        vec![mvm(1, 0, 0), mvm(2, 0, 1)],
    );
    assert_eq!(timing(&p, &hw, 1).latency_ns, 2.0 * one);
}

#[test]
fn requests_pipeline_through_a_chain() {
    let hw = Hardware::default();
    let p = program(
        vec![image(128, 128, 0, &hw), image(128, 128, 96, &hw)],
        vec![vec![32, 128]; 3],
        vec![mvm(1, 0, 0), mvm(2, 1, 1)],
    );
    let t = timing(&p, &hw, 8);
    let one = 32.0 * 8.0 * 100.0;
    // Nine MVM slots for 8 requests through a 2-stage pipeline.
    assert_eq!(t.makespan_ns - t.program_ns, 9.0 * one);
    assert!((t.throughput_per_s - 8.0 / (9.0 * one) * 1e9).abs() < 1e-6);
    assert_eq!(t.latency_ns, 2.0 * one);
}

/// The worked example of docs/simulator.md: one BERT-base layer's matrices
/// (128 tokens, hidden 768, FFN 3072) on the default (ISAAC) chip.
#[test]
fn hand_calculation_of_one_bert_base_layer() {
    let hw = Hardware::default();
    // Q, K, V, O: 128 tokens x 8 cycles x 100 ns; the digital shift-add
    // (128 x 768 x (6 x 4 + 1) adds + 128 x 1536 muls, 64 lanes, 1 ns)
    // = 41.472 us hides under it.
    assert_eq!(mvm_ns(&hw, 128.0, 768, 768, 8), 102_400.0);
    // FFN up [3072, 768]: (128 x 3072 x 25 + 128 x 3840) / 64 = 161.28 us
    // of digital work outlasts the 102.4 us of crossbar cycles.
    assert_eq!(mvm_ns(&hw, 128.0, 3072, 768, 8), 161_280.0);
    // FFN down [768, 3072]: (128 x 768 x 97 + 128 x 3840) / 64 = 156.672 us.
    assert_eq!(mvm_ns(&hw, 128.0, 768, 3072, 8), 156_672.0);
    // The layer's matrices, scheduled: Q, K and V read the layer input on
    // their own crossbars; O reads Q's result (standing in for attention),
    // FFN up reads O's and FFN down up's. The critical path is max(Q, K,
    // V) + O + up + down = 102.4 + 102.4 + 161.28 + 156.672 us.
    let shapes = [
        (768, 768),
        (768, 768),
        (768, 768),
        (768, 768),
        (3072, 768),
        (768, 3072),
    ];
    let mut first = 0;
    let mut images = Vec::new();
    for (o, i) in shapes {
        let im = image(o, i, first, &hw);
        first += im.crossbars;
        images.push(im);
    }
    let buffers = vec![
        vec![128, 768], // b0: the layer input
        vec![128, 768], // b1..b3: Q, K, V
        vec![128, 768],
        vec![128, 768],
        vec![128, 768],  // b4: O
        vec![128, 3072], // b5: FFN up
        vec![128, 768],  // b6: FFN down
    ];
    let body = vec![
        mvm(1, 0, 0),
        mvm(2, 0, 1),
        mvm(3, 0, 2),
        mvm(4, 1, 3),
        mvm(5, 4, 4),
        mvm(6, 5, 5),
    ];
    let t = timing(&program(images, buffers, body), &hw, 1);
    assert_eq!(t.latency_ns, 522_752.0);
    assert_eq!(t.critical_path_ns - t.program_ns, 522_752.0);
    // One ADC per two crossbars doubles the crossbar-bound ones only.
    let half = Hardware {
        adcs_per_core: Some(4),
        ..Hardware::default()
    };
    assert_eq!(mvm_ns(&half, 128.0, 768, 768, 8), 204_800.0);
    assert_eq!(mvm_ns(&half, 128.0, 3072, 768, 8), 204_800.0);
}

/// Images of different phases on the same crossbars (no `reuses`)
/// serialise on them, and utilisation counts those crossbars once.
#[test]
fn images_on_the_same_crossbars_serialise_and_count_once() {
    let hw = Hardware::default();
    let one = 32.0 * 8.0 * 100.0;
    let mut b = image(128, 128, 0, &hw);
    b.phase = 1;
    let p = program(
        vec![image(128, 128, 0, &hw), b],
        vec![vec![32, 128]; 3],
        vec![mvm(1, 0, 0), mvm(2, 0, 1)],
    );
    let t = timing(&p, &hw, 1);
    assert_eq!(t.latency_ns, 2.0 * one);
    // Busy 2 x one on n crossbars, over the n physical ones (not 2n).
    let u = t.utilisation["crossbars"];
    assert!((u - 2.0 * one / t.makespan_ns).abs() < 1e-12, "{u} {t:?}");
    // Programming is the array-write path's work, not the crossbars'.
    let w = t.utilisation["array_write"];
    assert!(
        (w - t.program_ns / t.makespan_ns).abs() < 1e-12,
        "{w} {t:?}"
    );
}

/// A random small program: MVMs and vector ops over a few buffers.
fn random_program(ops: &[(u8, u8, u8)], images: u8, requests: usize) -> (Program, usize) {
    let hw = Hardware::default();
    let n = images.max(1) as u64;
    let imgs: Vec<Image> = (0..n).map(|k| image(128, 128, k * 40, &hw)).collect();
    let mut body = Vec::new();
    let mut live = 1u32;
    for &(kind, a, b) in ops {
        let src = (a as u32) % live;
        let dst = live;
        live += 1;
        body.push(match kind % 3 {
            0 => Inst::Send { src, tiles: 1 },
            1 => mvm(dst, src, (b as u32) % n as u32),
            _ => Inst::Vec {
                dst,
                op: VecOp::Add,
                a: src,
                b: Some((b as u32) % live.saturating_sub(1).max(1)),
            },
        });
        if kind % 3 == 0 {
            live -= 1;
        }
    }
    let buffers = vec![vec![16, 128]; live as usize];
    (program(imgs, buffers, body), requests)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    #[test]
    fn makespan_between_critical_path_and_sequential_sum(
        ops in proptest::collection::vec((0u8..9, 0u8..255, 0u8..255), 1..24),
        images in 1u8..5,
        requests in 1usize..6,
    ) {
        let (p, r) = random_program(&ops, images, requests);
        let t = timing(&p, &Hardware::default(), r);
        prop_assert!(t.critical_path_ns <= t.makespan_ns + 1e-6, "{t:?}");
        prop_assert!(t.makespan_ns <= t.sequential_ns + 1e-6, "{t:?}");
        prop_assert!(t.latency_ns <= t.makespan_ns - t.program_ns + 1e-6, "{t:?}");
        // Deterministic.
        prop_assert_eq!(&t, &timing(&p, &Hardware::default(), r));
    }
}
