//! The model generator (`share`): identical, unrelated and strict-budget
//! cases, and a property test whose oracle is the reference executor run
//! on the generated and the unshared modules — independently of the
//! search's own bookkeeping.

mod common;

use proptest::prelude::*;
use std::path::{Path, PathBuf};

fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mgen-share-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A small multi-task file: `tasks` is a list of (name, head, seed, drift,
/// budget line).
fn spec(model_seed: u64, tasks: &[(&str, &str, u64, f64, &str)], requests: u64) -> String {
    let mut s = format!(
        "hardware hw {{ crossbar = 64 x 64; chips = 1; tiles = 64; cores_per_tile = 4; crossbars_per_core = 8; }}\n\
         model m {{ layers = 3; hidden = 64; heads = 4; ffn = 128; vocab = 200; max_seq = 16; weights = synthetic(seed = {model_seed}); }}\n"
    );
    for (name, head, seed, drift, budget) in tasks {
        s += &format!(
            "task {name} {{ base = m; head = {head}; weights = finetuned(seed = {seed}, drift = {drift}); {budget} }}\n"
        );
    }
    let names: Vec<&str> = tasks.iter().map(|t| t.0).collect();
    s += &format!(
        "workload w {{ requests = {requests}; seq = 12; inputs = synthetic(seed = 5); tasks = [{}]; }}\n",
        names.join(", ")
    );
    s
}

fn energy(path: &Path, baseline: bool) -> f64 {
    let p = path.to_str().unwrap();
    let mut args = vec!["run", p, "--counts-only", "--json"];
    if baseline {
        args.push("--baseline");
    }
    common::json_of(&args)["energy_pj"].as_f64().unwrap()
}

#[test]
fn identical_tasks_share_one_full_model() {
    let t = ("a", "classify(3)", 11, 0.05, "keep agreement >= 100%;");
    let text = spec(
        7,
        &[t, ("b", t.1, t.2, t.3, t.4), ("c", t.1, t.2, t.3, t.4)],
        8,
    );
    let p = write("identical.mgen", &text);
    let (_, arts, _, _) = common::compiled(&p, "default");
    let s = arts.sharing.as_ref().unwrap();
    for t in &s.tasks {
        assert_eq!(t.shared_blocks, t.blocks, "{t:?}");
    }
    // Every block is computed once, by all three tasks.
    for (b, groups) in &s.tree {
        assert_eq!(groups.len(), 1, "block {b}: {groups:?}");
        assert_eq!(groups[0].len(), 3);
    }
    // Over the run, programming included: the baseline computes every task
    // separately but programs each of the identical matrices once (a
    // weight several MVMs use is placed once), so the ratio sits a little
    // below the per-request one.
    let ratio = energy(&p, true) / energy(&p, false);
    assert!((2.85..=3.0).contains(&ratio), "energy ratio {ratio}");
    // The pass's own estimate is the counting simulator's per-request figure.
    let est = s.unshared_pj / s.shared_pj;
    assert!((2.9..=3.0).contains(&est), "estimated ratio {est}");
}

#[test]
fn unrelated_tasks_share_only_what_is_identical() {
    // Different pre-trained models: nothing but the request inputs in common.
    let mut text = spec(7, &[("a", "classify(2)", 11, 0.02, "")], 8);
    text = text.replace("tasks = [a]", "tasks = [a, b]");
    text += "model m2 { layers = 3; hidden = 64; heads = 4; ffn = 128; vocab = 200; max_seq = 16; weights = synthetic(seed = 8); }\n\
             task b { base = m2; head = classify(2); weights = finetuned(seed = 12, drift = 0.02); }\n";
    let p = write("unrelated.mgen", &text);
    let (_, arts, _, _) = common::compiled(&p, "default");
    let s = arts.sharing.as_ref().unwrap();
    assert!(s.tasks.iter().all(|t| t.shared_blocks == 0));
    assert!(s.tree.iter().all(|(_, g)| g.len() == 2));
    assert_eq!(energy(&p, true), energy(&p, false));

    // One base, large unrelated drifts under strict budgets: nothing shared.
    let text = spec(
        7,
        &[
            ("a", "embed(mean)", 11, 0.6, "keep cosine >= 0.9999;"),
            ("b", "embed(mean)", 12, 0.6, "keep cosine >= 0.9999;"),
        ],
        8,
    );
    let p = write("far.mgen", &text);
    let (_, arts, _, _) = common::compiled(&p, "default");
    let s = arts.sharing.as_ref().unwrap();
    assert!(
        s.tasks.iter().all(|t| t.shared_blocks == 0),
        "{:?}",
        s.tasks
    );
    assert_eq!(energy(&p, true), energy(&p, false));
}

#[test]
fn strict_budgets_change_no_output() {
    // agreement >= 100%: every prediction equals the unshared model's;
    // cosine >= 1: every output is the unshared model's, bit for bit.
    let text = spec(
        7,
        &[
            (
                "a",
                "classify(4, pool = mean)",
                11,
                0.01,
                "keep agreement >= 100%;",
            ),
            ("b", "classify(3)", 12, 0.01, "keep agreement >= 100%;"),
            ("c", "embed(mean)", 13, 0.01, "keep cosine >= 1;"),
        ],
        16,
    );
    let p = write("strict.mgen", &text);
    let (shared, _, store, cx) = common::compiled(&p, "default");
    let (exact, _, store_x, _) = common::compiled(&p, "exact");
    let a = common::outputs(&shared, store, &cx);
    let b = common::outputs(&exact, store_x, &cx);
    for t in 0..2 {
        let pa: Vec<usize> = a[t]
            .rows()
            .into_iter()
            .map(mgen::passes::share::argmax)
            .collect();
        let pb: Vec<usize> = b[t]
            .rows()
            .into_iter()
            .map(mgen::passes::share::argmax)
            .collect();
        assert_eq!(pa, pb, "task {t}");
    }
    assert_eq!(
        a[2], b[2],
        "cosine >= 1 must leave the embedding bit-identical"
    );
}

#[test]
fn sharing_saves_energy_and_keeps_budgets_on_the_quickstart() {
    let (m, arts, store, cx) = common::compiled(Path::new("examples/quickstart.mgen"), "default");
    let s = arts.sharing.as_ref().unwrap();
    assert!(s.tasks.iter().any(|t| t.shared_blocks > 0), "{s:?}");
    let (exact, _, store_x, _) = common::compiled(Path::new("examples/quickstart.mgen"), "exact");
    let a = common::outputs(&m, store, &cx);
    let b = common::outputs(&exact, store_x, &cx);
    for (t, ts) in s.tasks.iter().enumerate() {
        let task = &m.spec.tasks[m.spec.workload.tasks[t]];
        let labels: Vec<_> = cx.calibration[t].requests.iter().map(|r| r.label).collect();
        for (b_, reported) in task.budgets.iter().zip(&ts.measured) {
            let got = mgen::passes::share::measure(b_, &task.head, &a[t], &b[t], &labels);
            assert!(got.holds, "{}: {got:?}", ts.name);
            // The search's own figure is the executor's, bit for bit.
            assert_eq!(got.value, reported.value, "{}", ts.name);
        }
    }
    assert!(
        energy(Path::new("examples/quickstart.mgen"), false)
            < energy(Path::new("examples/quickstart.mgen"), true)
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, .. ProptestConfig::default() })]
    /// Random small multi-task models and budgets: the generated model,
    /// run by the reference executor, keeps every budget against the
    /// unshared model on the calibration inputs.
    #[test]
    fn generated_models_keep_every_budget(
        seed in 1u64..1000,
        drifts in proptest::collection::vec(0.0f64..0.2, 2..4),
        agreement in 80u32..101,
        cos in 0.9f64..1.0,
    ) {
        let heads = ["classify(2)", "embed(mean)", "classify(3, pool = mean)"];
        let tasks: Vec<(String, &str, u64, f64, String)> = drifts
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let head = heads[i % 3];
                let budget = if head.starts_with("embed") {
                    format!("keep cosine >= {cos:.4};")
                } else {
                    format!("keep agreement >= {agreement}%;")
                };
                (format!("t{i}"), head, seed + i as u64, (d * 1000.0).round() / 1000.0, budget)
            })
            .collect();
        let refs: Vec<(&str, &str, u64, f64, &str)> =
            tasks.iter().map(|t| (t.0.as_str(), t.1, t.2, t.3, t.4.as_str())).collect();
        let p = write(&format!("prop-{seed}.mgen"), &spec(seed, &refs, 8));
        let (shared, _, store, cx) = common::compiled(&p, "default");
        let (exact, _, store_x, _) = common::compiled(&p, "exact");
        let a = common::outputs(&shared, store, &cx);
        let b = common::outputs(&exact, store_x, &cx);
        for t in 0..tasks.len() {
            let task = &shared.spec.tasks[shared.spec.workload.tasks[t]];
            for budget in &task.budgets {
                let got = mgen::passes::share::measure(budget, &task.head, &a[t], &b[t], &[]);
                prop_assert!(got.holds, "task {t}: {got:?}");
            }
        }
    }
}

/// A `.mir` written after `share` keeps its tree: compiling it again with
/// the default pipeline changes nothing.
#[test]
fn a_shared_mir_compiles_to_itself() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.mir");
    let b = dir.path().join("b.mir");
    let (code, _, err) = common::mgen(&[
        "compile",
        "examples/quickstart.mgen",
        "-o",
        a.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = common::mgen(&["compile", a.to_str().unwrap(), "-o", b.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(&a).unwrap(),
        std::fs::read_to_string(&b).unwrap()
    );
    let (_, out, _) = common::mgen(&["compile", a.to_str().unwrap(), "--emit", "sharing"]);
    assert!(out.contains("already shares"), "{out}");
}
