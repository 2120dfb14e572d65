//! Placement, ISA, code generation and the simulator.

use mgen::backend::isa::{self, Image, Inst, Line, Program};
use mgen::diag::Sources;
use mgen::hw::{Hardware, Signs};
use ndarray::{Array1, Array2};
use std::path::Path;

mod common;
use common::{json_of, mgen};

/// The quickstart on a 2-tile chip (so it needs several phases), written
/// into `dir`.
fn small_chip_quickstart(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("small.mgen");
    let src = std::fs::read_to_string("examples/quickstart.mgen")
        .unwrap()
        .replace("tiles = 168;", "tiles = 2;");
    std::fs::write(&p, src).unwrap();
    p
}

fn placed(
    path: &str,
    edit: &dyn Fn(String) -> String,
) -> (mgen::ir::Module, mgen::passes::Artifacts) {
    let src = edit(std::fs::read_to_string(path).unwrap());
    let mut sources = Sources::new();
    let f = mgen::driver::front_bytes(&mut sources, path, src.as_bytes(), "examples", false)
        .unwrap_or_else(|d| panic!("{}", d.render(&sources, false)));
    let mut m = mgen::driver::module(f, &sources).unwrap();
    let mut arts = mgen::passes::Artifacts::default();
    mgen::passes::run_pipeline(
        &mut m,
        &mut arts,
        &mgen::passes::resolve("exact").unwrap(),
        &mgen::passes::Context::default(),
        |_, _| {},
    )
    .unwrap();
    (m, arts)
}

#[test]
fn placement_matches_the_closed_form() {
    for (signs, s) in [(Signs::Offset, 1), (Signs::Differential, 2)] {
        for (rows, cols, cb, wb) in [
            (128, 128, 2, 8),
            (64, 256, 1, 8),
            (256, 128, 3, 8),
            (128, 128, 4, 16),
        ] {
            let hw = Hardware {
                rows,
                cols,
                cell_bits: cb,
                weight_bits: wb,
                signs,
                ..Hardware::default()
            };
            for (out, inp) in [
                (768, 768),
                (3072, 768),
                (768, 3072),
                (2, 768),
                (1, 1),
                (129, 257),
            ] {
                let (rb, cbk, sl, sg) = hw.blocks(out, inp, hw.weight_bits);
                assert_eq!(
                    rb * cbk * sl * sg,
                    inp.div_ceil(rows) * out.div_ceil(cols) * (wb as u64).div_ceil(cb as u64) * s
                );
            }
        }
    }
    // BERT-base on ISAAC: 20 904 crossbars a task (offset signs), 8 tasks in glue8.
    let (_, arts) = placed("examples/glue8.mgen", &|s| s);
    let p = arts.placement.as_ref().unwrap();
    assert_eq!(p.crossbars_used, 8 * 20_904);
    assert!(p.fits && p.phases == 1);
    let (_, arts) = placed("examples/glue8.mgen", &|s| {
        s.replace(
            "crossbars_per_core = 8;",
            "crossbars_per_core = 8; signs = differential;",
        )
    });
    assert_eq!(
        arts.placement.as_ref().unwrap().crossbars_used,
        2 * 8 * 20_904
    );
}

#[test]
fn a_small_chip_gets_phases_without_overlap_and_too_small_is_a_diagnostic() {
    let (m, arts) = placed("examples/quickstart.mgen", &|s| {
        s.replace("tiles = 168;", "tiles = 2;")
    });
    let p = arts.placement.as_ref().unwrap();
    assert!(p.phases > 1 && !p.fits, "{} phases", p.phases);
    p.check().unwrap();
    for ph in 0..p.phases {
        let used: u64 = p
            .matrices
            .iter()
            .filter(|q| q.phase == ph)
            .map(|q| q.crossbars)
            .sum();
        assert!(used <= p.crossbars_available);
    }
    // The program runs: every MVM's crossbars are programmed in its phase.
    let prog = mgen::backend::codegen::codegen(&m, p, arts.schedule.as_ref(), &Default::default());
    let tasks = mgen::backend::program::task_infos(&m);
    mgen::sim::validate(&prog, &tasks, p.crossbars_available).unwrap();
    assert!(
        prog.code
            .iter()
            .any(|l| matches!(l.inst, Inst::Spill { .. }))
    );
    // One core cannot hold a 1024 x 256 FFN matrix (8 x 2 x 4 = 64 crossbars).
    let src = std::fs::read_to_string("examples/quickstart.mgen")
        .unwrap()
        .replace(
            "chips = 1; tiles = 168; cores_per_tile = 12; crossbars_per_core = 8;",
            "chips = 1; tiles = 1; cores_per_tile = 1; crossbars_per_core = 8;",
        );
    // The checker finds it, before any weight is made.
    let mut sources = Sources::new();
    let err = mgen::driver::front_bytes(&mut sources, "q.mgen", src.as_bytes(), "examples", false)
        .err()
        .expect("a matrix larger than the machine is refused");
    assert!(err.render(&sources, false).contains("error[E301]"));
}

#[test]
fn assembly_round_trips_on_every_example() {
    for ex in [
        "examples/quickstart.mgen",
        "examples/glue8.mgen",
        "tests/golden/cases/ok-merge-identical.mgen",
    ] {
        let (m, arts) = placed(ex, &|s| s);
        let prog = mgen::backend::codegen::codegen(
            &m,
            arts.placement.as_ref().unwrap(),
            arts.schedule.as_ref(),
            &Default::default(),
        );
        let text = prog.to_masm();
        let back =
            isa::parse(&text, 0).unwrap_or_else(|_| panic!("{ex}: the assembly does not parse"));
        assert!(back == prog, "{ex}: assemble(disassemble(p)) != p");
        assert_eq!(back.to_masm(), text);
    }
}

#[test]
fn malformed_assembly_gives_located_errors() {
    let (m, arts) = placed("examples/quickstart.mgen", &|s| s);
    let text = mgen::backend::codegen::codegen(
        &m,
        arts.placement.as_ref().unwrap(),
        arts.schedule.as_ref(),
        &Default::default(),
    )
    .to_masm();
    for (bad, expect) in [
        (
            text.replacen("MVM ", "MVN ", 1),
            "unknown opcode `MVN`; did you mean `MVM`?",
        ),
        (
            text.replacen("LOAD        b0, ids", "LOAD        b0, idz", 1),
            "unknown input `idz`",
        ),
        (
            text.replacen("VEC         b", "VEC         b999999", 1),
            "is not declared",
        ),
        (
            text.replacen("XB_PROGRAM  i0", "XB_PROGRAM  i", 1),
            "bad image",
        ),
        (
            text.replacen("FOR_REQUESTS", "FOR_GROUP 1", 1),
            "`FOR_GROUP` takes 2 operand(s), found 1",
        ),
        (
            text.replacen("FOR_REQUESTS", "FOR_REQUESTS\n        SPILL b0, nowhere", 1),
            "unknown spill level `nowhere`",
        ),
    ] {
        let mut sources = Sources::new();
        let id = sources.add("p.masm", bad);
        let err = isa::parse(sources.text(id), id)
            .unwrap_err()
            .render(&sources, false);
        assert!(err.contains("error[E302]") && err.contains(expect), "{err}");
        assert!(err.contains("p.masm:"), "{err}");
    }
}

/// ENERGY.md's worked example: one 128x128 crossbar, 8-bit inputs through
/// a 1-bit DAC: 8 x (128 x 1.67 + 30 + 128 x 0.0035) pJ before
/// shift-and-add and buffers.
#[test]
fn worked_example_energy_by_hand() {
    let hw = Hardware {
        cell_bits: 2,
        weight_bits: 2,
        ..Hardware::default()
    };
    let prog = Program {
        buffers: vec![vec![128], vec![128]],
        consts: vec![],
        images: vec![Image {
            tensor: "w".into(),
            out_dim: 128,
            in_dim: 128,
            phase: 0,
            first: 0,
            crossbars: 1,
            tiles: 1,
            xscale: 1.0,
            xzero: 128,
            wbits: 2,
            reuses: None,
        }],
        code: vec![],
    };
    let c = mgen::sim::cost::cost(
        &Inst::Mvm {
            dst: 1,
            src: 0,
            image: 0,
            bias: 0,
        },
        &prog,
        &hw,
    );
    let by_hand = 8.0 * (128.0 * 1.67 + 30.0 + 128.0 * 0.0035);
    let crossbar_part = c.energy[0] + c.energy[1] + c.energy[2];
    assert!(
        (crossbar_part - by_hand).abs() < 1e-6,
        "{crossbar_part} vs {by_hand}"
    );
    assert!((by_hand - 1953.664).abs() < 1e-9);
    assert_eq!(c.conversions, 8.0 * 128.0);
    // The whole instruction, as docs/simulator.md tabulates it: plus
    // shift-and-add, buffers and the digital recombination; 806 ns.
    assert!((c.total() - 2531.648).abs() < 1e-6, "{}", c.total());
    assert!((c.latency_ns - 808.0).abs() < 1e-9, "{}", c.latency_ns);
    // At 8-bit weights in 2-bit cells the matrix takes 4 crossbars (the
    // image's width sets its slices).
    let mut prog8 = prog.clone();
    prog8.images[0].wbits = 8;
    let c4 = mgen::sim::cost::cost(
        &Inst::Mvm {
            dst: 1,
            src: 0,
            image: 0,
            bias: 0,
        },
        &prog8,
        &Hardware::default(),
    );
    assert!((c4.energy[0] + c4.energy[1] + c4.energy[2] - 7814.656).abs() < 1e-6);
    let diff = Hardware {
        signs: Signs::Differential,
        ..Hardware::default()
    };
    let c8 = mgen::sim::cost::cost(
        &Inst::Mvm {
            dst: 1,
            src: 0,
            image: 0,
            bias: 0,
        },
        &prog8,
        &diff,
    );
    assert!((c8.energy[0] + c8.energy[1] + c8.energy[2] - 15_629.312).abs() < 1e-6);
    // Programming it: 128 x 128 cells x 1.4 pJ ≈ 22.9 nJ, 11 µs.
    let p = mgen::sim::cost::cost(&Inst::XbProgram(0), &prog, &hw);
    assert!((p.energy[4] - 16384.0 * 1.4).abs() < 1e-6);
    assert!((p.latency_ns - 11_000.0).abs() < 1e-9);
}

fn rand_matrix(seed: u64, r: usize, c: usize, scale: f64) -> Array2<f32> {
    let mut rng = mgen::weights::rng::Rng::new(seed);
    Array2::from_shape_fn((r, c), |_| (scale * rng.normal()) as f32)
}

/// With an ideal ADC the bit-sliced MVM equals the quantised product
/// exactly, so it is within the quantisation bound of the float product:
/// |y − Wx| ≤ Σ_r (|w| s_x/2 + |x_q s_x| s_w/2) + tiny.
#[test]
fn ideal_adc_mvm_is_within_the_quantisation_bound() {
    for (seed, (out, inp), hw) in [
        (1, (40, 300), Hardware::default()),
        (
            2,
            (64, 130),
            Hardware {
                signs: Signs::Differential,
                cell_bits: 1,
                ..Hardware::default()
            },
        ),
        (
            3,
            (17, 64),
            Hardware {
                weight_bits: 12,
                input_bits: 12,
                dac_bits: 2,
                cell_bits: 3,
                rows: 64,
                cols: 32,
                ..Hardware::default()
            },
        ),
        // 16-bit inputs over 600 rows: the offset sums exceed 2^24.
        (
            4,
            (9, 600),
            Hardware {
                input_bits: 16,
                ..Hardware::default()
            },
        ),
    ] {
        let w = rand_matrix(seed, out, inp, 0.05);
        let x = rand_matrix(seed + 100, 5, inp, 1.0);
        let q = mgen::backend::quant::quantize_weights(w.view(), hw.weight_bits);
        let xmax = x.iter().fold(0.0f32, |a, &b| a.max(b.abs())) as f64;
        let sx = mgen::backend::quant::input_scale(xmax, hw.input_bits);
        let img = mgen::sim::exec::prepare(
            &q,
            mgen::backend::quant::InputQuant::symmetric(sx, hw.input_bits),
            &hw,
            true,
            0,
        );
        let y = mgen::sim::exec::mvm(&img, &x.clone().into_dyn(), &hw, true);
        let y = y.into_dimensionality::<ndarray::Ix2>().unwrap();
        let exact = x.dot(&w.t());
        for t in 0..5 {
            for o in 0..out {
                let sw = q.scale[o] as f64;
                let bound: f64 = (0..inp)
                    .map(|r| {
                        (w[[o, r]] as f64).abs() * sx / 2.0
                            + (x[[t, r]] as f64).abs() * sw / 2.0
                            + sx * sw / 4.0
                    })
                    .sum::<f64>()
                    + 1e-4;
                let err = (y[[t, o]] as f64 - exact[[t, o]] as f64).abs();
                assert!(err <= bound, "seed {seed}: error {err} over bound {bound}");
            }
        }
    }
}

#[test]
fn the_adc_saturates_when_column_sums_exceed_its_range() {
    // Every weight at the top of its range and every input at its maximum:
    // 128 rows x 3 (cell) x 1 (DAC) = 384 > 255 per column.
    let hw = Hardware::default();
    let w = Array2::<f32>::from_elem((4, 128), 1.0);
    let x = Array2::<f32>::from_elem((1, 128), 1.0);
    let q = mgen::backend::quant::quantize_weights(w.view(), 8);
    let ideal = mgen::sim::exec::mvm(
        &mgen::sim::exec::prepare(
            &q,
            mgen::backend::quant::InputQuant::symmetric(1.0 / 127.0, 8),
            &hw,
            true,
            0,
        ),
        &x.clone().into_dyn(),
        &hw,
        true,
    );
    let real_img = mgen::sim::exec::prepare(
        &q,
        mgen::backend::quant::InputQuant::symmetric(1.0 / 127.0, 8),
        &hw,
        false,
        0,
    );
    assert!(real_img.fast_fraction < 1.0);
    let real = mgen::sim::exec::mvm(&real_img, &x.into_dyn(), &hw, false);
    assert!((ideal[[0, 0]] - 128.0).abs() < 1.0, "{}", ideal[[0, 0]]);
    assert!(
        real[[0, 0]] < ideal[[0, 0]] - 1.0,
        "clipped {} vs ideal {}",
        real[[0, 0]],
        ideal[[0, 0]]
    );
    let _ = Array1::<f32>::zeros(1);
}

#[test]
fn run_counts_and_functional_agree_on_energy_and_are_deterministic() {
    let f = json_of(&["run", "examples/quickstart.mgen", "--json"]);
    let c = json_of(&["run", "examples/quickstart.mgen", "--json", "--counts-only"]);
    for k in [
        "energy_pj",
        "latency_ns",
        "crossbars",
        "cell_writes",
        "area_mm2",
    ] {
        assert_eq!(f[k], c[k], "{k}");
    }
    assert!(f["energy_pj"].as_f64().unwrap() > 0.0);
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    mgen(&[
        "run",
        "examples/quickstart.mgen",
        "--dump-outputs",
        d1.path().to_str().unwrap(),
    ]);
    mgen(&[
        "run",
        "examples/quickstart.mgen",
        "--dump-outputs",
        d2.path().to_str().unwrap(),
    ]);
    for t in ["sentiment", "topic", "similarity"] {
        let a = std::fs::read(d1.path().join(format!("{t}.npy"))).unwrap();
        let b = std::fs::read(d2.path().join(format!("{t}.npy"))).unwrap();
        assert_eq!(a, b, "{t}: outputs differ between runs");
    }
    // Every task keeps its reference behaviour on the quickstart.
    for t in f["tasks"].as_array().unwrap() {
        assert!(t["value"].as_f64().unwrap() >= 0.99, "{t}");
    }
}

#[test]
fn a_program_directory_simulates_like_run_and_tampering_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("prog");
    let ds = d.to_str().unwrap();
    let (code, _, err) = mgen(&[
        "compile",
        "examples/quickstart.mgen",
        "--emit",
        "program",
        "-o",
        ds,
    ]);
    assert_eq!(code, 0, "{err}");
    for f in ["program.masm", "crossbars.safetensors", "manifest.json"] {
        assert!(d.join(f).exists(), "{f}");
    }
    let a = json_of(&["run", "examples/quickstart.mgen", "--json"]);
    let b = json_of(&["sim", ds, "--json"]);
    for k in ["energy_pj", "latency_ns", "crossbars", "tasks"] {
        assert_eq!(a[k], b[k], "{k}");
    }
    // Tampering: edit the assembly without updating the manifest.
    let masm = std::fs::read_to_string(d.join("program.masm")).unwrap();
    std::fs::write(d.join("program.masm"), masm.replacen("MVM", "MVN", 1)).unwrap();
    let (code, _, err) = mgen(&["sim", ds]);
    assert_eq!(code, 1);
    assert!(
        err.contains("error[E303]") && err.contains("SHA-256"),
        "{err}"
    );
    // A missing crossbar image file.
    std::fs::write(d.join("program.masm"), masm).unwrap();
    std::fs::remove_file(d.join("crossbars.safetensors")).unwrap();
    let (code, _, err) = mgen(&["sim", ds]);
    assert_eq!(code, 1);
    assert!(
        err.contains("error[E303]") && err.contains("crossbars.safetensors"),
        "{err}"
    );
}

#[test]
fn validation_names_the_instruction() {
    let (m, arts) = placed("examples/quickstart.mgen", &|s| s);
    let p = arts.placement.as_ref().unwrap();
    let prog = mgen::backend::codegen::codegen(&m, p, arts.schedule.as_ref(), &Default::default());
    let tasks = mgen::backend::program::task_infos(&m);
    let bare = |inst| Line {
        inst,
        node: String::new(),
        tasks: vec![],
        layer: String::new(),
        at: String::new(),
    };
    // An MVM on unprogrammed crossbars.
    let mut p1 = prog.clone();
    p1.code.retain(|l| !matches!(l.inst, Inst::XbProgram(0)));
    let e = mgen::sim::validate(&p1, &tasks, p.crossbars_available)
        .unwrap_err()
        .render(&Sources::new(), false);
    assert!(
        e.contains("error[E304]") && e.contains("`MVM`") && e.contains("not programmed"),
        "{e}"
    );
    // A read of a buffer never written.
    let mut p2 = prog.clone();
    p2.code.retain(|l| !matches!(l.inst, Inst::Load { .. }));
    let e = mgen::sim::validate(&p2, &tasks, p.crossbars_available)
        .unwrap_err()
        .render(&Sources::new(), false);
    assert!(e.contains("read before it is written"), "{e}");
    // Crossbars outside the machine.
    let mut p3 = prog.clone();
    p3.images[0].first = p.crossbars_available;
    let e = mgen::sim::validate(&p3, &tasks, p.crossbars_available)
        .unwrap_err()
        .render(&Sources::new(), false);
    assert!(e.contains("outside the machine"), "{e}");
    // Code after HALT, a program without HALT, a task stored twice.
    let mut p5 = prog.clone();
    p5.code.push(bare(Inst::Barrier));
    let e = mgen::sim::validate(&p5, &tasks, p.crossbars_available)
        .unwrap_err()
        .render(&Sources::new(), false);
    assert!(e.contains("after HALT"), "{e}");
    let mut p6 = prog.clone();
    p6.code.pop();
    let e = mgen::sim::validate(&p6, &tasks, p.crossbars_available)
        .unwrap_err()
        .render(&Sources::new(), false);
    assert!(e.contains("does not end with HALT"), "{e}");
    let mut p7 = prog.clone();
    let store = p7
        .code
        .iter()
        .position(|l| matches!(l.inst, Inst::Store { .. }))
        .unwrap();
    let again = p7.code[store].clone();
    p7.code.insert(store, again);
    let e = mgen::sim::validate(&p7, &tasks, p.crossbars_available)
        .unwrap_err()
        .render(&Sources::new(), false);
    assert!(e.contains("a second STORE"), "{e}");
    // Unbalanced loops.
    let mut p4 = prog.clone();
    p4.code.push(bare(Inst::ForRequests));
    assert!(mgen::sim::validate(&p4, &tasks, p.crossbars_available).is_err());
    let _ = Path::new(".");
}

/// MiniLM on the simulator with the default ISAAC-like settings (8-bit
/// inputs, 1-bit DAC, 8-bit ADC): every sentence's mean-pooled embedding
/// keeps a cosine of at least 0.99 to the float reference (measured: worst
/// 0.9921, mean 0.9952, with the compiler's per-matrix choice of smoothing
/// and symmetric or zero-point quantisation; symmetric only gave a worst
/// case of 0.985). With 16-bit inputs the worst case is above 0.999.
#[test]
fn minilm_on_the_simulator_stays_close_to_the_float_reference() {
    common::ensure_weights();
    let r = json_of(&["run", "examples/minilm.mgen", "--json"]);
    let cos = r["tasks"][0]["value"].as_f64().unwrap();
    let mean = r["tasks"][0]["mean"].as_f64().unwrap();
    assert!(
        cos >= 0.99 && mean >= 0.99,
        "worst-case cosine {cos}, mean {mean}"
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m16.mgen");
    let src = std::fs::read_to_string("examples/minilm.mgen")
        .unwrap()
        .replace("input_bits = 8;", "input_bits = 16;")
        .replace(
            "\"../weights/",
            &format!("\"{}/weights/", std::env::current_dir().unwrap().display()),
        )
        .replace(
            "\"data/",
            &format!(
                "\"{}/examples/data/",
                std::env::current_dir().unwrap().display()
            ),
        );
    std::fs::write(&p, src).unwrap();
    let r = json_of(&["run", p.to_str().unwrap(), "--json"]);
    let cos16 = r["tasks"][0]["value"].as_f64().unwrap();
    assert!(cos16 >= 0.999, "16-bit inputs: worst-case cosine {cos16}");
    eprintln!(
        "MiniLM simulated vs float: worst cosine {cos:.5} (8-bit inputs), {cos16:.5} (16-bit inputs)"
    );
}

/// A chip too small for every task: several phases, spills, constants of
/// several tasks — and the outputs still agree with the float reference.
#[test]
fn a_phased_multi_task_program_computes_the_right_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let p = small_chip_quickstart(dir.path());
    let r = json_of(&["run", p.to_str().unwrap(), "--json"]);
    assert!(r["phases"].as_u64().unwrap() > 1);
    for t in r["tasks"].as_array().unwrap() {
        assert!(t["value"].as_f64().unwrap() >= 0.99, "{t}");
    }
    assert!(r["lifetime_inferences"].as_f64().is_some());
}

/// In a phased program, a later phase sees only the buffers it FILLs.
#[test]
fn a_phase_cannot_read_an_earlier_phase_buffer_without_fill() {
    let (m, arts) = placed("examples/quickstart.mgen", &|s| {
        s.replace("tiles = 168;", "tiles = 2;")
    });
    let p = arts.placement.as_ref().unwrap();
    let mut prog =
        mgen::backend::codegen::codegen(&m, p, arts.schedule.as_ref(), &Default::default());
    let tasks = mgen::backend::program::task_infos(&m);
    mgen::sim::validate(&prog, &tasks, p.crossbars_available).unwrap();
    // A FILL at the top of a phase's body (the schedule may also evict
    // buffers within a phase; those FILLs follow their own SPILLs).
    let fill = (1..prog.code.len())
        .find(|&i| {
            matches!(prog.code[i].inst, Inst::Fill { .. })
                && matches!(
                    prog.code[i - 1].inst,
                    Inst::ForRequests | Inst::ForGroup { .. }
                )
        })
        .unwrap();
    prog.code.remove(fill);
    let e = mgen::sim::validate(&prog, &tasks, p.crossbars_available)
        .unwrap_err()
        .render(&Sources::new(), false);
    assert!(e.contains("read before it is written"), "{e}");
}

/// Bad programs that pass the integrity check: malformed assembly (E302,
/// located in program.masm), an MVM on unprogrammed crossbars (E304, in
/// counting mode too), hardware out of range in the manifest (E303).
#[test]
fn bad_program_directories_are_errors_in_every_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("p");
    let ds = d.to_str().unwrap();
    assert_eq!(
        mgen(&[
            "compile",
            "examples/quickstart.mgen",
            "--emit",
            "program",
            "-o",
            ds
        ])
        .0,
        0
    );
    let pristine = std::fs::read_to_string(d.join("program.masm")).unwrap();
    let manifest = std::fs::read_to_string(d.join("manifest.json")).unwrap();

    common::rewrite_with_digest(&d, |s| s.replacen("MVM ", "MVN ", 1));
    let (code, _, err) = mgen(&["sim", ds]);
    assert_eq!(code, 1);
    assert!(
        err.contains("error[E302]")
            && err.contains("program.masm:")
            && err.contains("did you mean `MVM`"),
        "{err}"
    );

    common::rewrite_with_digest(&d, |_| pristine.replacen("XB_PROGRAM  i0", "BARRIER", 1));
    for mode in [None, Some("--counts-only")] {
        let mut args = vec!["sim", ds];
        args.extend(mode);
        let (code, _, err) = mgen(&args);
        assert_eq!(code, 1, "{mode:?}");
        assert!(
            err.contains("error[E304]") && err.contains("not programmed"),
            "{mode:?}: {err}"
        );
    }

    // A zero point outside the input's codes.
    common::rewrite_with_digest(&d, |_| {
        let at = pristine.find("xzero=").unwrap() + "xzero=".len();
        let end = at + pristine[at..].find(' ').unwrap();
        format!("{}256{}", &pristine[..at], &pristine[end..])
    });
    let (code, _, err) = mgen(&["sim", ds]);
    assert_eq!(code, 1);
    assert!(
        err.contains("error[E303]") && err.contains("zero point 256"),
        "{err}"
    );

    common::rewrite_with_digest(&d, |_| pristine.clone());
    let mut man: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    man["hardware"]["dac_bits"] = 0.into();
    // Edited without its digest: the manifest's own SHA-256 catches it.
    std::fs::write(d.join("manifest.json"), man.to_string()).unwrap();
    let (code, _, err) = mgen(&["sim", ds]);
    assert_eq!(code, 1);
    assert!(
        err.contains("error[E303]") && err.contains("its own SHA-256"),
        "{err}"
    );
    // Edited and re-hashed: the range check catches it.
    man["sha256"]["manifest"] = mgen::backend::manifest::digest(&man).into();
    std::fs::write(d.join("manifest.json"), man.to_string()).unwrap();
    let (code, _, err) = mgen(&["sim", ds]);
    assert_eq!(code, 1);
    assert!(
        err.contains("error[E303]") && err.contains("out of range"),
        "{err}"
    );
}

/// The utilisation chart shows each tile's fullest phase, never over 100%.
#[test]
fn the_report_directory_has_json_and_charts() {
    let tmp = tempfile::tempdir().unwrap();
    let p = small_chip_quickstart(tmp.path());
    let r = tmp.path().join("report");
    let (code, _, err) = mgen(&[
        "run",
        p.to_str().unwrap(),
        "--counts-only",
        "--report",
        r.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r.join("report.json")).unwrap()).unwrap();
    assert!(json["energy_pj"].as_f64().unwrap() > 0.0 && json["phases"].as_u64().unwrap() > 1);
    let timeline = std::fs::read_to_string(r.join("timeline.svg")).unwrap();
    // One bar per scheduled instruction, MVMs among them, on labelled tiles.
    assert!(timeline.matches("<rect").count() > 10, "{timeline}");
    assert!(timeline.contains("MVM layer") && timeline.contains(">tile "));
    assert!(json["throughput_per_s"].as_f64().unwrap() > 0.0);
    assert!(
        json["timing"]["makespan_ns"].as_f64().unwrap()
            <= json["timing"]["sequential_ns"].as_f64().unwrap()
    );
    let svg = std::fs::read_to_string(r.join("crossbar_utilisation.svg")).unwrap();
    // Bar labels read `<text ...>VALUE %</text>`.
    let percents: Vec<f64> = svg
        .lines()
        .filter_map(|l| l.strip_suffix(" %</text>"))
        .filter_map(|l| l.rsplit('>').next())
        .filter_map(|v| v.parse().ok())
        .collect();
    assert!(!percents.is_empty(), "{svg}");
    assert!(
        percents.iter().all(|&p| p > 0.0 && p <= 100.0),
        "{percents:?}"
    );
    for f in ["energy_by_component.svg", "energy_by_layer.svg"] {
        assert!(
            std::fs::read_to_string(r.join(f))
                .unwrap()
                .starts_with("<svg"),
            "{f}"
        );
    }
}

/// `-o` to a FIFO (or `/dev/stdout`) writes through it instead of renaming
/// a temporary file over the special file.
#[test]
fn output_to_a_special_file_writes_through_it() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("pipe");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    let (code, _, err) = mgen(&[
        "compile",
        "tests/golden/cases/ok-check.mgen",
        "--emit",
        "placement",
        "-o",
        fifo.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let text = reader.join().unwrap();
    assert!(text.starts_with("placement on `isaac`"), "{text}");
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::metadata(&fifo).unwrap().file_type().is_fifo(),
        "the FIFO was replaced"
    );
}

/// Smoothing is chosen only when it reproduces the float product better:
/// with an outlier input channel it is; the choice is never worse than no
/// smoothing (which is among the candidates).
#[test]
fn the_input_treatment_tames_outlier_channels() {
    use mgen::backend::quant::{InputQuant, choose_input_treatment, smooth_and_quantize};
    let w = rand_matrix(11, 32, 64, 0.05);
    let mut x = rand_matrix(12, 64, 64, 1.0);
    for t in 0..64 {
        x[[t, 5]] *= 40.0; // one channel an order of magnitude larger, as in BERT
    }
    let xmax: Vec<f32> = (0..64)
        .map(|c| x.column(c).fold(0.0f32, |a, &b| a.max(b.abs())))
        .collect();
    let samples: Vec<(f32, u32)> = x.indexed_iter().map(|((_, c), &v)| (v, c as u32)).collect();
    let error = |xq: InputQuant, smooth: &Array1<f32>| -> f64 {
        let q = smooth_and_quantize(w.view(), smooth, 8);
        let mut got = 0.0;
        for t in 0..64 {
            for o in 0..32 {
                let y: f64 = (0..64)
                    .map(|c| {
                        xq.round_trip(x[[t, c]] / smooth[c], 8) as f64
                            * q.q[[o, c]] as f64
                            * q.scale[o] as f64
                    })
                    .sum();
                let exact: f64 = (0..64).map(|c| x[[t, c]] as f64 * w[[o, c]] as f64).sum();
                got += (y - exact).powi(2);
            }
        }
        got
    };
    let (xs, smooth) = choose_input_treatment(w.view(), &xmax, &samples, x.view(), 8, 8);
    let plain: Vec<f32> = samples.iter().map(|s| s.0).collect();
    let none = error(
        InputQuant::symmetric(mgen::backend::quant::mse_scale(&plain, 8), 8),
        &Array1::ones(64),
    );
    let chosen = error(xs, &smooth);
    assert!(
        smooth[5] > 1.0,
        "the outlier channel is divided down: {}",
        smooth[5]
    );
    assert!(chosen < none * 0.8, "chosen {chosen} vs none {none}");
}
