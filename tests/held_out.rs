//! Held-out evaluation: a task's `test = "FILE.jsonl"` is scored by
//! `mgen compare` (its own model in float, the baseline and mgen on the
//! chip), and a test set that is unlabelled, on an `embed` task, or not
//! disjoint from what the generator saw is a located error.

mod common;

use common::{json_of, mgen};
use std::fmt::Write;
use std::path::Path;

/// Three tasks on a small model; `WORKLOAD` and `EXTRA_<task>` are filled in.
const TEMPLATE: &str = "\
model m { layers = 2; hidden = 32; heads = 2; ffn = 64; vocab = 50; max_seq = 16; weights = synthetic(seed = 5); }
task a { base = m; head = classify(2); weights = finetuned(seed = 6, drift = 0.02); keep agreement >= 90%; EXTRA_a }
task b { base = m; head = classify(3, pool = mean); weights = finetuned(seed = 7, drift = 0.02); keep agreement >= 90%; calibrate = \"b-dev.jsonl\"; EXTRA_b }
task c { base = m; head = regress; weights = finetuned(seed = 8, drift = 0.02); keep cosine >= 0.9; EXTRA_c }
task e { base = m; head = embed(mean); weights = finetuned(seed = 9, drift = 0.02); }
workload w { WORKLOAD tasks = [a, b, c, e]; }
";

fn file(workload: &str, a: &str, b: &str, c: &str) -> String {
    TEMPLATE
        .replace("WORKLOAD", workload)
        .replace("EXTRA_a", a)
        .replace("EXTRA_b", b)
        .replace("EXTRA_c", c)
}

/// Requests of 3 to 6 tokens (shorter than the workload's synthetic ones,
/// so disjoint from them), distinct for distinct `i`.
fn ids(i: usize, salt: usize) -> Vec<usize> {
    let len = 3 + i % 4;
    (0..len)
        .map(|k| (i * 7 + k * 13 + salt * 17 + i / 7 * k) % 49 + 1)
        .collect()
}

fn jsonl(reqs: &[(Vec<usize>, Option<String>)]) -> String {
    let mut s = String::new();
    for (ids, label) in reqs {
        match label {
            Some(l) => writeln!(s, "{{\"ids\": {ids:?}, \"label\": {l}}}"),
            None => writeln!(s, "{{\"ids\": {ids:?}}}"),
        }
        .unwrap();
    }
    s
}

/// The float reference outputs of every task's own (unshared) model on the
/// requests of `inputs` (a file beside `dir/probe.mgen`).
fn own_outputs(dir: &Path, inputs: &str, n: usize) -> Vec<ndarray::Array2<f32>> {
    let probe = dir.join("probe.mgen");
    let w = format!("requests = {n}; seq = 8; inputs = \"{inputs}\";");
    std::fs::write(&probe, file(&w, "", "", "")).unwrap();
    let mut sources = mgen::diag::Sources::new();
    let f = mgen::driver::front(&mut sources, &probe).unwrap();
    let (m, store) = mgen::driver::module_and_store(f, &sources).unwrap();
    let batch = mgen::data::load(&m.spec, &mut sources).unwrap();
    mgen::reference::run(&m, &store, &batch)
        .unwrap()
        .into_iter()
        .map(|o| o.values)
        .collect()
}

fn argmax(r: ndarray::ArrayView1<f32>) -> usize {
    (0..r.len()).fold(0, |b, j| if r[j] > r[b] { j } else { b })
}

fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sxx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let syy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
    sxy / (sxx * syy).sqrt()
}

const N: usize = 24;

#[test]
fn compare_reports_held_out_figures() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The test requests, unlabelled, to compute each own model's outputs.
    let pool: Vec<_> = (0..N).map(|i| (ids(i, 0), None)).collect();
    std::fs::write(d.join("pool.jsonl"), jsonl(&pool)).unwrap();
    let own = own_outputs(d, "pool.jsonl", N);
    // Labels: the own model's class, wrong on every fourth request (so its
    // accuracy is 0.75); for the regressor, its value plus a perturbation.
    let mut expect_c = Vec::new();
    for (t, name) in [(0usize, "a"), (1, "b")] {
        let reqs: Vec<_> = (0..N)
            .map(|i| {
                let k = argmax(own[t].row(i));
                let wrong = if i % 4 == 3 {
                    (k + 1) % own[t].ncols()
                } else {
                    k
                };
                (pool[i].0.clone(), Some(wrong.to_string()))
            })
            .collect();
        std::fs::write(d.join(format!("{name}-test.jsonl")), jsonl(&reqs)).unwrap();
    }
    let reqs: Vec<_> = (0..N)
        .map(|i| {
            let y = own[2][[i, 0]] as f64 + if i % 2 == 0 { 0.3 } else { -0.2 } * (i % 5) as f64;
            expect_c.push(y);
            (pool[i].0.clone(), Some(format!("{y}")))
        })
        .collect();
    std::fs::write(d.join("c-test.jsonl"), jsonl(&reqs)).unwrap();
    let xs: Vec<f64> = own[2].column(0).iter().map(|&x| x as f64).collect();
    let own_pearson = pearson(&xs, &expect_c);
    // b's calibration inputs: other requests, labelled.
    let dev: Vec<_> = (0..16)
        .map(|i| (ids(i, 1), Some((i % 3).to_string())))
        .collect();
    std::fs::write(d.join("b-dev.jsonl"), jsonl(&dev)).unwrap();
    let main = d.join("main.mgen");
    let text = file(
        "requests = 8; seq = 8; inputs = synthetic(seed = 3);",
        "test = \"a-test.jsonl\";",
        "test = \"b-test.jsonl\";",
        "test = \"c-test.jsonl\";",
    );
    std::fs::write(&main, &text).unwrap();
    let path = main.to_str().unwrap();
    let v = json_of(&["compare", path, "--json"]);
    let tasks = v["tasks"].as_array().unwrap();
    for (t, metric) in [(0, "accuracy"), (1, "accuracy"), (2, "pearson")] {
        let h = &tasks[t]["held_out"];
        assert_eq!(h["metric"], metric, "{h}");
        assert_eq!(h["n"], N, "{h}");
        for k in ["own_f32", "baseline_chip", "mgen_chip"] {
            let x = h[k].as_f64().unwrap_or(f64::NAN);
            assert!((0.0..=1.0).contains(&x), "{k} = {x}: {h}");
        }
    }
    for t in &tasks[..2] {
        assert_eq!(t["held_out"]["own_f32"].as_f64(), Some(0.75), "{t}");
    }
    let p = tasks[2]["held_out"]["own_f32"].as_f64().unwrap();
    assert!((p - own_pearson).abs() < 1e-9, "{p} vs {own_pearson}");
    assert!(tasks[3].get("held_out").is_none(), "{}", tasks[3]);
    // The text shows the same figures, beside the budgets.
    let (code, out, err) = mgen(&["compare", path]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("held out (each task's `test` file"), "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("a ") && l.contains("accuracy"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        row.contains("0.7500") && row.contains("agreement >= 90%"),
        "{row}"
    );
    // The report draws them.
    let rep = d.join("rep");
    let (code, _, err) = mgen(&["compare", path, "--report", rep.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let svg = std::fs::read_to_string(rep.join("held_out.svg")).unwrap();
    assert!(svg.contains("c mgen chip"), "{svg}");
    // Per regeneration level, beside the level-independent figures.
    let (code, out, err) = mgen(&["compare", path, "--regenerate", "none,head"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("own f32   base chip     none     head"),
        "{out}"
    );
    let v = json_of(&["compare", path, "--regenerate", "none,head", "--json"]);
    for s in v["summary"].as_array().unwrap() {
        let h = &s["tasks"][0]["held_out"];
        assert_eq!(h["own_f32"].as_f64(), Some(0.75), "{s}");
    }
    // The canonical spec prints the attribute, and it reads back.
    let (code, ir, err) = mgen(&["compile", path, "--passes", "exact", "--emit", "ir"]);
    assert_eq!(code, 0, "{err}");
    assert!(ir.contains("test = \"a-test.jsonl\";"), "{ir}");
    let mir = d.join("main.mir");
    std::fs::write(&mir, &ir).unwrap();
    let mir = mir.to_str().unwrap();
    let (code, again, err) = mgen(&["compile", mir, "--passes", "exact", "--emit", "ir"]);
    assert_eq!((code, again), (0, ir), "{err}");
    // Without test files nothing changes: no key, no table.
    std::fs::write(
        &main,
        file(
            "requests = 8; seq = 8; inputs = synthetic(seed = 3);",
            "",
            "",
            "",
        ),
    )
    .unwrap();
    let (code, out, err) = mgen(&["compare", path]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("held out"), "{out}");
    let v = json_of(&["compare", path, "--json"]);
    assert!(
        v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t.get("held_out").is_none())
    );
}

/// `mgen check` on `text` (written to `dir/t.mgen`): exit 1 and stderr.
fn check_fails(dir: &Path, text: &str) -> String {
    let p = dir.join("t.mgen");
    std::fs::write(&p, text).unwrap();
    let (code, out, err) = mgen(&["check", p.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    err
}

/// The line of `err` under the one holding `source`: its carets.
fn carets_under<'e>(err: &'e str, source: &str) -> &'e str {
    let lines: Vec<&str> = err.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.contains(source))
        .unwrap_or_else(|| panic!("no `{source}` in {err}"));
    lines[i + 1]
}

const WORKLOAD: &str = "requests = 2; seq = 8; inputs = synthetic(seed = 3);";

#[test]
fn test_on_embed_or_on_a_generator_file_is_e017() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let err = check_fails(
        d,
        &file(WORKLOAD, "", "", "").replace(
            "weights = finetuned(seed = 9, drift = 0.02); }",
            "weights = finetuned(seed = 9, drift = 0.02); test = \"e.jsonl\"; }",
        ),
    );
    assert!(
        err.contains("error[E017]") && err.contains("`embed`"),
        "{err}"
    );
    assert!(
        carets_under(&err, "test = \"e.jsonl\"").contains("^^^^^^^^^ nothing to score"),
        "{err}"
    );
    let err = check_fails(d, &file(WORKLOAD, "", "test = \"b-dev.jsonl\";", ""));
    assert!(
        err.contains("error[E017]: `test` and `calibrate` name the same file"),
        "{err}"
    );
    assert!(
        carets_under(&err, "test = \"b-dev.jsonl\"").contains("^^^^^^^^^^^^^ the `calibrate` set"),
        "{err}"
    );
    let err = check_fails(
        d,
        &file(
            WORKLOAD,
            "regenerate = head; train = \"tr.jsonl\"; test = \"tr.jsonl\";",
            "",
            "",
        ),
    );
    assert!(
        err.contains("error[E017]: `test` and `train` name the same file"),
        "{err}"
    );
}

#[test]
fn unlabelled_test_requests_are_e207() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dev: Vec<_> = (0..4).map(|i| (ids(i, 1), Some("0".into()))).collect();
    std::fs::write(d.join("b-dev.jsonl"), jsonl(&dev)).unwrap();
    let mut reqs: Vec<_> = (0..5).map(|i| (ids(i, 0), Some("1".into()))).collect();
    reqs[2].1 = None;
    reqs[4].1 = None;
    std::fs::write(d.join("a-test.jsonl"), jsonl(&reqs)).unwrap();
    let err = check_fails(d, &file(WORKLOAD, "test = \"a-test.jsonl\";", "", ""));
    assert!(err.contains("error[E207]"), "{err}");
    assert!(err.contains("2 of the 5 requests carry no label"), "{err}");
    assert!(
        carets_under(&err, "test = \"a-test.jsonl\"").contains('^'),
        "{err}"
    );
    // A class outside the head's range is E207 too.
    reqs[2].1 = Some("2".into());
    reqs[4].1 = Some("0".into());
    std::fs::write(d.join("a-test.jsonl"), jsonl(&reqs)).unwrap();
    let err = check_fails(d, &file(WORKLOAD, "test = \"a-test.jsonl\";", "", ""));
    assert!(
        err.contains("error[E207]") && err.contains("classify(2)"),
        "{err}"
    );
}

#[test]
fn a_test_file_overlapping_calibrate_or_train_is_e017() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dev: Vec<_> = (0..6).map(|i| (ids(i, 1), Some("0".into()))).collect();
    std::fs::write(d.join("b-dev.jsonl"), jsonl(&dev)).unwrap();
    // Lines 3 and 5 of the test file are calibration requests.
    let mut test: Vec<_> = (0..6).map(|i| (ids(i, 2), Some("1".into()))).collect();
    test[2].0 = dev[4].0.clone();
    test[4].0 = dev[1].0.clone();
    std::fs::write(d.join("b-test.jsonl"), jsonl(&test)).unwrap();
    let err = check_fails(d, &file(WORKLOAD, "", "test = \"b-test.jsonl\";", ""));
    assert!(err.contains("error[E017]: 2 of the 6 held-out `test` requests of task `b` have the token ids of a request of its `calibrate` inputs (the first on line 3)"), "{err}");
    assert!(
        carets_under(&err, "test = \"b-test.jsonl\"").contains("^ these held-out inputs"),
        "{err}"
    );
    assert!(err.contains("the first overlapping request"), "{err}");
    // The same against a `train` file, and against the workload's requests
    // a task without `calibrate` is calibrated on.
    let train: Vec<_> = (0..8).map(|i| (ids(i, 3), None)).collect();
    std::fs::write(d.join("tr.jsonl"), jsonl(&train)).unwrap();
    let mut test: Vec<_> = (0..4).map(|i| (ids(i, 2), Some("1".into()))).collect();
    test[1].0 = train[7].0.clone();
    std::fs::write(d.join("a-test.jsonl"), jsonl(&test)).unwrap();
    let err = check_fails(
        d,
        &file(
            WORKLOAD,
            "regenerate = head; train = \"tr.jsonl\"; test = \"a-test.jsonl\";",
            "",
            "",
        ),
    );
    assert!(err.contains("1 of the 4 held-out `test` requests of task `a` has the token ids of a request of its `train` inputs (the first on line 2)"), "{err}");
    let inputs: Vec<_> = (0..4).map(|i| (ids(i, 4), None)).collect();
    std::fs::write(d.join("in.jsonl"), jsonl(&inputs)).unwrap();
    test[1].0 = inputs[3].0.clone();
    std::fs::write(d.join("a-test.jsonl"), jsonl(&test)).unwrap();
    let err = check_fails(
        d,
        &file(
            "requests = 4; seq = 8; inputs = \"in.jsonl\";",
            "test = \"a-test.jsonl\";",
            "",
            "",
        ),
    );
    assert!(
        err.contains(
            "of its calibration inputs (the workload's first 32 requests) (the first on line 2)"
        ),
        "{err}"
    );
}

/// With unlabelled workload requests, a label budget (`accuracy`,
/// `pearson`) is checked on the chip on the task's labelled calibration
/// inputs: finite figures there, `holds` decided by them, and a note
/// that says so (before, accuracy over unlabelled requests was 0 and held,
/// and Pearson was undefined and failed every chip round).
#[test]
fn label_budgets_are_checked_on_the_chip_on_labelled_calibration_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let n = 24;
    let labelled = |salt: usize, label: &dyn Fn(usize) -> String| -> String {
        jsonl(
            &(0..n)
                .map(|i| (ids(i, salt), Some(label(i))))
                .collect::<Vec<_>>(),
        )
    };
    std::fs::write(
        dir.path().join("b-dev.jsonl"),
        labelled(3, &|i| (i % 3).to_string()),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("c-dev.jsonl"),
        labelled(4, &|i| format!("{}", (i % 5) as f64 * 0.5)),
    )
    .unwrap();
    let f = dir.path().join("f.mgen");
    let spec = file(
        "requests = 8; seq = 8; inputs = synthetic(seed = 3);",
        "",
        "keep accuracy >= reference - 5%;",
        "calibrate = \"c-dev.jsonl\"; keep pearson >= reference - 0.05;",
    );
    std::fs::write(&f, spec).unwrap();
    let c = json_of(&["compare", f.to_str().unwrap(), "--json"]);
    let notes = c["notes"].to_string();
    assert!(notes.contains("labelled calibration inputs"), "{notes}");
    let mut seen = 0;
    for t in c["tasks"].as_array().unwrap() {
        for b in t["budgets"].as_array().unwrap() {
            let metric = b["metric"].as_str().unwrap();
            if metric != "accuracy" && metric != "pearson" {
                continue;
            }
            seen += 1;
            let (v, bound) = (b["on_chip"].as_f64().unwrap(), b["bound"].as_f64().unwrap());
            assert!(
                b["source"]
                    .as_str()
                    .unwrap()
                    .contains("labelled calibration"),
                "{b}"
            );
            assert!(b["baseline_simulated"].as_f64().unwrap().is_finite(), "{b}");
            assert_eq!(b["holds"].as_bool().unwrap(), v >= bound - 1e-12, "{b}");
            if metric == "accuracy" {
                let k = v * n as f64;
                assert!(
                    (k - k.round()).abs() < 1e-9 && k > 0.0,
                    "accuracy over the {n} labelled requests: {b}"
                );
            }
        }
    }
    assert_eq!(seen, 2, "{}", c["tasks"]);
}
