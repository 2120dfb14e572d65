//! Device noise end to end: a `noise {}` block that adds nothing is no
//! noise at all (bit-identical outputs), a chip's errors depend only on its
//! seed, and `--chips N` reports every task's metric over N instances.

mod common;

use common::{json_of, mgen};
use std::path::{Path, PathBuf};

/// The quickstart with `noise` (a hardware entry) added, in `dir`.
fn quickstart_with(dir: &Path, noise: &str) -> PathBuf {
    let src = std::fs::read_to_string("examples/quickstart.mgen")
        .unwrap()
        .replace(
            "adc_bits    = 8;",
            &format!("adc_bits    = 8;\n    {noise}"),
        );
    assert!(src.contains(noise));
    let p = dir.join("qn.mgen");
    std::fs::write(&p, src).unwrap();
    p
}

/// A noise model whose currents stay whole (stuck cells, ADC offsets):
/// the simulator's fast path, so the end-to-end tests stay quick; the
/// per-conversion path is tested by `tests/noise_stats.rs` and once below.
const WHOLE: &str = "noise { stuck_at = 0.5%; adc_offset = 0.5 lsb; }";

/// Every task's outputs of `mgen run FILE ARGS`, as raw bytes.
fn outputs(file: &Path, args: &[&str], dir: &Path) -> Vec<Vec<u8>> {
    let out = dir.join("out");
    let _ = std::fs::remove_dir_all(&out);
    let mut a = vec!["run", file.to_str().unwrap(), "--dump-outputs"];
    a.push(out.to_str().unwrap());
    a.extend_from_slice(args);
    let (code, _, err) = mgen(&a);
    assert_eq!(code, 0, "{err}");
    ["sentiment", "topic", "similarity"]
        .iter()
        .map(|t| std::fs::read(out.join(format!("{t}.npy"))).unwrap())
        .collect()
}

#[test]
fn an_empty_noise_block_is_no_noise_and_seeds_decide_the_chip() {
    let d = tempfile::tempdir().unwrap();
    let plain = PathBuf::from("examples/quickstart.mgen");
    let none = outputs(&plain, &[], d.path());
    let empty = quickstart_with(d.path(), "noise {}");
    assert_eq!(
        outputs(&empty, &[], d.path()),
        none,
        "noise {{}} changed outputs"
    );
    let zero = ["--noise", "typical_reram", "--noise-scale", "0"];
    assert_eq!(
        outputs(&plain, &zero, d.path()),
        none,
        "scale 0 changed outputs"
    );

    // The flag and the file's preset are the same chip.
    let preset = quickstart_with(d.path(), "noise = typical_reram;");
    let p0 = outputs(&preset, &[], d.path());
    assert_ne!(p0, none, "typical_reram added no error");
    assert_eq!(outputs(&plain, &["--noise", "typical_reram"], d.path()), p0);

    let noisy = quickstart_with(d.path(), WHOLE);
    let s0 = outputs(&noisy, &["--chip-seed", "0"], d.path());
    assert_ne!(s0, none, "stuck cells added no error");
    assert_eq!(outputs(&noisy, &["--chip-seed", "0"], d.path()), s0);
    assert_ne!(outputs(&noisy, &["--chip-seed", "1"], d.path()), s0);
    // Chip 1 alone is chip 1 of a run of chips 0..3 (its first output).
    let run3 = outputs(&noisy, &["--chip-seed", "1", "--chips", "3"], d.path());
    assert_eq!(run3, outputs(&noisy, &["--chip-seed", "1"], d.path()));
}

#[test]
fn chips_report_each_task_over_every_instance() {
    let d = tempfile::tempdir().unwrap();
    let f = quickstart_with(d.path(), WHOLE);
    let j = json_of(&[
        "run",
        f.to_str().unwrap(),
        "--chips",
        "3",
        "--quantile",
        "0.5",
        "--json",
    ]);
    let n = &j["noise"];
    assert_eq!(n["chips"], 3);
    assert!(n["model"].as_str().unwrap().contains("stuck"), "{n}");
    for t in n["tasks"].as_array().unwrap() {
        let per: Vec<f64> = t["per_chip"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(per.len(), 3);
        let (lo, hi) = per
            .iter()
            .fold((f64::MAX, f64::MIN), |a, &v| (a.0.min(v), a.1.max(v)));
        let worst = t["worst"].as_f64().unwrap();
        let mean = t["mean"].as_f64().unwrap();
        assert!(worst == lo || worst == hi, "{t}");
        assert!(lo - 1e-12 <= mean && mean <= hi + 1e-12, "{t}");
        // The first instance's metric is the report's own.
        let name = t["name"].as_str().unwrap();
        let own = j["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .unwrap();
        assert_eq!(own["value"].as_f64().unwrap(), per[0]);
    }
    // Without noise there is no noise section, whatever --chips says.
    let j = json_of(&["run", "examples/quickstart.mgen", "--chips", "3", "--json"]);
    assert!(j.get("noise").is_none());
}

#[test]
fn bad_noise_flags_are_usage_errors() {
    for args in [
        ["--noise", "quiet"],
        ["--noise-scale", "-1"],
        ["--quantile", "1.5"],
        ["--chips", "0"],
    ] {
        let mut a = vec!["run", "examples/quickstart.mgen"];
        a.extend_from_slice(&args);
        let (code, _, err) = mgen(&a);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(args[1]), "{args:?}: {err}");
    }
}

#[test]
fn compare_decides_holds_over_noisy_chips_and_sweeps_noise_levels() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("sweep");
    let f = quickstart_with(dir.path(), WHOLE);
    let j = json_of(&[
        "compare",
        f.to_str().unwrap(),
        "--chips",
        "2",
        "--noise-sweep",
        "0,1",
        "--report",
        report.to_str().unwrap(),
        "--json",
    ]);
    let points = j["points"].as_array().unwrap();
    let scales: Vec<f64> = points
        .iter()
        .map(|p| p["scale"].as_f64().unwrap())
        .collect();
    assert_eq!(scales, [0.0, 1.0]);
    let (clean, noisy) = (&j["comparisons"][0], &j["comparisons"][1]);
    // Scale 0 is noise-free; each point is its comparison in brief.
    assert!(clean.get("noise").is_none(), "{clean}");
    assert_eq!(points[0]["model"], "none");
    for (p, c) in points.iter().zip([clean, noisy]) {
        assert_eq!(p["energy_ratio"], c["energy_ratio"]);
        assert_eq!(
            p["chip_rounds"].as_u64().unwrap() as usize,
            c["chip_rounds"].as_array().unwrap().len()
        );
    }
    assert_eq!(noisy["noise"]["chips"], 2);
    for t in noisy["tasks"].as_array().unwrap() {
        for b in t["budgets"].as_array().unwrap() {
            let x = &b["noisy"];
            let per: Vec<f64> = x["per_chip"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(per.len(), 2, "{b}");
            let worst = per.iter().cloned().fold(f64::MAX, f64::min);
            assert_eq!(x["worst"].as_f64().unwrap(), worst);
            // Quickstart's budgets are absolute: at quantile 0 a budget
            // holds exactly when its worst chip reaches the bound.
            let bound = b["bound"].as_f64().unwrap();
            assert_eq!(b["holds"].as_bool().unwrap(), worst >= bound - 1e-12, "{b}");
            assert_eq!(b["on_chip"].as_f64().unwrap(), worst);
        }
    }
    for f in ["noise-energy.svg", "noise-tasks.svg"] {
        let svg = std::fs::read_to_string(report.join(f)).unwrap();
        assert!(svg.contains("<polyline"), "{f}");
    }
    assert!(report.join("scale-1").join("compare.json").exists());
}

#[test]
fn a_noise_sweep_conflicts_with_other_lists() {
    for (extra, says) in [
        (
            ["--regenerate", "head,branch"],
            "at most one `--regenerate` level",
        ),
        (["--noise-scale", "2"], "cannot be used with"),
    ] {
        let mut a = vec![
            "compare",
            "examples/quickstart.mgen",
            "--noise-sweep",
            "0,1",
        ];
        a.extend(extra);
        let (code, _, err) = mgen(&a);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(says), "{err}");
    }
    let (code, _, err) = mgen(&[
        "compare",
        "examples/quickstart.mgen",
        "--noise-sweep",
        "0,-1",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a number from 0 to 100"), "{err}");
}

#[test]
fn a_drift_exponent_is_a_number_or_a_percentage() {
    let d = tempfile::tempdir().unwrap();
    let noise_of = |entry: &str| {
        let f = quickstart_with(d.path(), &format!("noise {{ drift = 1 day; {entry} }}"));
        let mut sources = mgen::diag::Sources::new();
        let front = mgen::driver::front(&mut sources, &f).unwrap();
        front.spec.hardware.noise.clone()
    };
    let plain = noise_of("drift_nu = 0.005; drift_nu_std = 0.002;");
    let percent = noise_of("drift_nu = 0.5%; drift_nu_std = 0.2%;");
    assert_eq!(plain.drift_nu, 0.005);
    assert_eq!(plain.drift_nu_std, 0.002);
    assert_eq!((percent.drift_nu, percent.drift_nu_std), (0.005, 0.002));
}

#[test]
fn a_sweep_without_a_noise_model_says_so() {
    let (code, out, err) = mgen(&[
        "compare",
        "examples/quickstart.mgen",
        "--noise-sweep",
        "0,1",
        "--counts-only",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("every scale is noise-free"), "{out}");
}
