//! Area mode (`area = delta(bits = N)`): base matrices programmed once and
//! reused, low-bit deltas, budgets re-measured by the reference executor
//! independently of the pass, the simulator running the result, and the
//! validator refusing malformed reuse.

mod common;

use common::{json_of, mgen};
use std::path::{Path, PathBuf};

/// The quickstart with area mode at `bits`, in a fresh directory.
fn quickstart_area(dir: &Path, bits: u32) -> PathBuf {
    let src = std::fs::read_to_string("examples/quickstart.mgen")
        .unwrap()
        .replace(
            "tasks  = [sentiment, topic, similarity];",
            &format!("tasks  = [sentiment, topic, similarity];\n    area = delta(bits = {bits});"),
        );
    assert!(src.contains("area = delta"));
    let p = dir.join(format!("qa{bits}.mgen"));
    std::fs::write(&p, src).unwrap();
    p
}

/// Area mode on the quickstart: fewer crossbars, more energy, every task
/// that takes it keeps its budgets — re-measured here by the reference
/// executor on the generated and the unshared modules, and equal to the
/// pass's own figures.
#[test]
fn area_mode_trades_energy_for_crossbars_within_budgets() {
    let dir = tempfile::tempdir().unwrap();
    let p = quickstart_area(dir.path(), 2);
    let (m, arts, store, cx) = common::compiled(&p, "default");
    let s = arts.sharing.as_ref().unwrap();
    let a = s.area.as_ref().expect("an area report");
    assert_eq!(a.delta_bits, 2);
    assert!(a.crossbars_with < a.crossbars_without, "{a:?}");
    assert!(a.area_with_mm2 < a.area_without_mm2, "{a:?}");
    assert!(a.energy_with_pj > a.energy_without_pj, "{a:?}");
    assert!(a.tasks.iter().any(|t| t.applied && t.delta_matrices > 0));
    // Every delta param is narrow, and its base matrix is reused.
    let deltas: Vec<_> = m.params.iter().filter(|p| p.bits == Some(2)).collect();
    assert!(!deltas.is_empty());
    let placement = mgen::backend::place::place(&m).unwrap();
    assert!(placement.matrices.iter().any(|q| q.reuses.is_some()));
    for q in &placement.matrices {
        let bits = m.params[q.param].bits.unwrap_or(8);
        assert_eq!(q.slices, (bits as u64).div_ceil(2), "{}", q.tensor);
    }
    assert_eq!(placement.crossbars_used, a.crossbars_with);
    // Independent re-measurement.
    let (exact, _, store_x, _) = common::compiled(&p, "exact");
    let got = common::outputs(&m, store, &cx);
    let own = common::outputs(&exact, store_x, &cx);
    for (t, at) in a.tasks.iter().enumerate() {
        let task = &m.spec.tasks[m.spec.workload.tasks[t]];
        let labels: Vec<_> = cx.calibration[t].requests.iter().map(|r| r.label).collect();
        for (b, reported) in task.budgets.iter().zip(&at.measured) {
            let x = mgen::passes::share::measure(b, &task.head, &got[t], &own[t], &labels);
            assert!(x.holds, "{}: {x:?}", at.name);
            assert_eq!(x.value, reported.value, "{}", at.name);
        }
    }
}

/// The simulator runs an area-mode program: a program directory gives the
/// same report as `run`, the chip holds the crossbars the pass reported,
/// and each base matrix is programmed once.
#[test]
fn the_simulator_runs_area_mode_and_counts_each_reused_matrix_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = quickstart_area(dir.path(), 2);
    let ps = p.to_str().unwrap();
    let share = json_of(&["compile", ps, "--emit", "sharing", "--json"]);
    let run = json_of(&["run", ps, "--json"]);
    assert_eq!(run["crossbars"], share["area"]["crossbars_with"]);
    for t in run["tasks"].as_array().unwrap() {
        let v = t["value"].as_f64().unwrap();
        assert!(v >= 0.98, "{t}");
    }
    let out = dir.path().join("prog");
    let (code, _, err) = mgen(&[
        "compile",
        ps,
        "--emit",
        "program",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let sim = json_of(&["sim", out.to_str().unwrap(), "--json"]);
    for k in ["energy_pj", "crossbars", "cell_writes", "tasks"] {
        assert_eq!(sim[k], run[k], "{k}");
    }
    let masm = std::fs::read_to_string(out.join("program.masm")).unwrap();
    let images = masm.lines().filter(|l| l.starts_with(".image")).count();
    let reuses = masm.lines().filter(|l| l.contains(" reuses=i")).count();
    let programs = masm
        .lines()
        .filter(|l| l.trim_start().starts_with("XB_PROGRAM"))
        .count();
    assert!(reuses > 0);
    assert_eq!(programs, images - reuses);
    assert!(masm.contains(" wbits=2 "));
}

/// More delta bits cost more crossbars and keep outputs closer.
#[test]
fn wider_deltas_take_more_crossbars() {
    let dir = tempfile::tempdir().unwrap();
    let a2 = json_of(&[
        "compile",
        quickstart_area(dir.path(), 2).to_str().unwrap(),
        "--emit",
        "sharing",
        "--json",
    ]);
    let a4 = json_of(&[
        "compile",
        quickstart_area(dir.path(), 4).to_str().unwrap(),
        "--emit",
        "sharing",
        "--json",
    ]);
    let x2 = a2["area"]["crossbars_with"].as_u64().unwrap();
    let x4 = a4["area"]["crossbars_with"].as_u64().unwrap();
    assert!(x2 < x4, "{x2} vs {x4}");
    assert!(x4 < a4["area"]["crossbars_without"].as_u64().unwrap());
    // Deltas as wide as the weights save nothing: every matrix stays whole.
    let a8 = json_of(&[
        "compile",
        quickstart_area(dir.path(), 8).to_str().unwrap(),
        "--emit",
        "sharing",
        "--json",
    ]);
    assert_eq!(
        a8["area"]["crossbars_with"],
        a8["area"]["crossbars_without"]
    );
    for t in a8["area"]["tasks"].as_array().unwrap() {
        assert_eq!(t["kept_whole"], "no saving", "{t}");
    }
}

/// A program that programs a reused image, or reuses an image it does not
/// match, is refused with the instruction or image named.
#[test]
fn malformed_reuse_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = quickstart_area(dir.path(), 2);
    let out = dir.path().join("prog");
    let os = out.to_str().unwrap();
    assert_eq!(
        mgen(&[
            "compile",
            p.to_str().unwrap(),
            "--emit",
            "program",
            "-o",
            os
        ])
        .0,
        0
    );
    let pristine = std::fs::read_to_string(out.join("program.masm")).unwrap();
    let line = pristine
        .lines()
        .find(|l| l.contains(" reuses=i"))
        .unwrap()
        .to_string();
    let k: String = line[".image i".len()..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    // XB_PROGRAM of the reusing image.
    common::rewrite_with_digest(&out, |s| {
        s.replacen(
            "    XB_PROGRAM  i0 ",
            &format!("    XB_PROGRAM  i{k}\n    XB_PROGRAM  i0 "),
            1,
        )
    });
    let (code, _, err) = mgen(&["sim", os]);
    assert_eq!(code, 1);
    assert!(
        err.contains("error[E304]") && err.contains("program i"),
        "{err}"
    );
    // A reuse of an image with other weights.
    common::rewrite_with_digest(&out, |_| {
        let bad = line.replacen(" reuses=i", " reuses=i0 was=", 1);
        let bad =
            bad.split(" was=").next().unwrap().to_string() + &line[line.find(" \"").unwrap()..];
        pristine.replacen(&line, &bad, 1)
    });
    let (code, _, err) = mgen(&["sim", os]);
    assert_eq!(code, 1);
    assert!(
        err.contains("error[E304]") && err.contains("reuses i0"),
        "{err}"
    );
    // A weight width out of range.
    common::rewrite_with_digest(&out, |_| pristine.replacen(" wbits=2 ", " wbits=1 ", 1));
    let (code, _, err) = mgen(&["sim", os]);
    assert_eq!(code, 1);
    assert!(err.contains("weights of 1 bits"), "{err}");
}

/// A delta is exact on its own grid: quantising it again at its width (as
/// the compiler does) gives it back, and clipping beats the max-abs scale.
#[test]
fn deltas_are_exact_at_their_width() {
    use ndarray::Array2;
    let d = Array2::from_shape_fn((32, 96), |(o, i)| {
        let x = (((o * 131 + i * 71) % 97) as f32 / 97.0 - 0.5) * 0.01;
        if (o + i) % 17 == 0 { x * 12.0 } else { x }
    });
    for bits in [2, 3, 4] {
        let q = mgen::weights::quantize_delta(d.view(), bits);
        let again = mgen::backend::quant::quantize_weights(q.view(), bits);
        for ((o, i), &v) in q.indexed_iter() {
            let back = again.q[[o, i]] as f32 * again.scale[o];
            assert!(
                (back - v).abs() <= 1e-6 * v.abs().max(1e-6),
                "{bits}: {back} vs {v}"
            );
        }
        let plain = mgen::backend::quant::quantize_weights(d.view(), bits);
        let err = |f: &dyn Fn(usize, usize) -> f32| -> f64 {
            d.indexed_iter()
                .map(|((o, i), &x)| ((f(o, i) - x) as f64).powi(2))
                .sum()
        };
        let clipped = err(&|o, i| q[[o, i]]);
        let maxabs = err(&|o, i| plain.q[[o, i]] as f32 * plain.scale[o]);
        assert!(clipped <= maxabs, "{bits}: {clipped} vs {maxabs}");
    }
}
