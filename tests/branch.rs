//! Branch retraining (`regenerate = branch`): the model generator retrains
//! a task's unshared layers and head over the frozen shared trunk
//! (distilled from its own model), which lets it share layers that neither
//! training-free selection nor a head refit can; budgets are re-measured by
//! the reference executor.

mod common;

use common::{json_of, mgen};
use mgen::diag::Sources;
use mgen::reference::Plan;

use common::{REGEN_FILE as FILE, write_regen as write};

const BRANCH: &str = "regenerate = branch(epochs = 10, lr = 1e-3);";

/// Training-free selection shares nothing here (drift 0.3 under 90%
/// agreement) and a head refit shares the embeddings and one layer; a
/// retrained branch lets `a` share the embeddings and two layers. Its
/// budget holds when re-measured by the executor (equal to the pass's own
/// figure), the same choice without retraining breaks it, and the report
/// says what the retraining did.
#[test]
fn a_retrained_branch_makes_two_layers_shareable() {
    let dir = tempfile::tempdir().unwrap();
    let plain = write(dir.path(), "plain.mgen", "");
    let head = write(dir.path(), "head.mgen", "regenerate = head;");
    let branch = write(dir.path(), "branch.mgen", BRANCH);
    let (_, m0_arts, _, _) = common::compiled(&plain, "default");
    let s0 = m0_arts.sharing.as_ref().unwrap();
    assert!(s0.tasks.iter().all(|t| t.shared_blocks == 0), "{s0:?}");
    let (_, mh_arts, _, _) = common::compiled(&head, "default");
    let head_a = &mh_arts.sharing.as_ref().unwrap().tasks[0];
    assert_eq!(head_a.shared_blocks, 2, "{head_a:?}");

    let (m, arts, store, cx) = common::compiled(&branch, "default");
    let s = arts.sharing.as_ref().unwrap();
    let a = &s.tasks[0];
    assert_eq!(a.regenerate, "branch", "{a:?}");
    assert!(a.shared_blocks >= 3, "emb + two layers: {a:?}");
    assert!(!a.before_regeneration[0].holds, "{a:?}");
    let br = a.branch.as_ref().unwrap();
    assert!(br.steps > 0 && br.last_loss < br.first_loss, "{br:?}");
    assert!(br.retrainings >= 1 && a.regeneration_seconds > 0.0);
    // Every budget of every task holds on the executor, at the figure the
    // pass reported.
    let (exact, _, store_x, _) = common::compiled(&branch, "exact");
    let got = common::outputs(&m, store, &cx);
    let own = common::outputs(&exact, store_x, &cx);
    for (t, ts) in s.tasks.iter().enumerate() {
        let task = &m.spec.tasks[m.spec.workload.tasks[t]];
        for (b, reported) in task.budgets.iter().zip(&ts.measured) {
            let x = mgen::passes::share::measure(b, &task.head, &got[t], &own[t], &[]);
            assert!(x.holds, "{}: {x:?}", ts.name);
            assert_eq!(x.value, reported.value, "{}", ts.name);
        }
    }
    // The energy the tree saves grows with the regeneration level.
    let ratio = |a: &mgen::passes::Artifacts| {
        let s = a.sharing.as_ref().unwrap();
        s.unshared_pj / s.shared_pj
    };
    assert!(ratio(&arts) > ratio(&mh_arts) && ratio(&mh_arts) > ratio(&m0_arts));
}

/// On requests the generator never saw, the retrained branch agrees with
/// the task's own model at least as often as the same shared trunk with the
/// task's original upper layers and head.
#[test]
fn retrained_branches_hold_up_on_held_out_requests() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("held.mgen");
    std::fs::write(
        &p,
        FILE.replace("REGEN", BRANCH)
            .replace("requests = 32;", "requests = 96;"),
    )
    .unwrap();
    let (m, arts, store, _) = common::compiled(&p, "default");
    let (exact, _, store_x, _) = common::compiled(&p, "exact");
    let mut sources = Sources::new();
    let mut batch = mgen::data::load(&m.spec, &mut sources).unwrap();
    batch
        .requests
        .drain(..mgen::passes::SHARE_CALIBRATION_REQUESTS);
    assert_eq!(batch.requests.len(), 64);
    // The same shared model with each task's own tensors wherever it
    // computes alone.
    let plain = common::with_own_tensors(&m, store, |_| true);
    let agree = common::agreeing;
    let regen = Plan::new(&m, store).unwrap().run(&batch);
    let orig = Plan::new(&plain, store).unwrap().run(&batch);
    let own = Plan::new(&exact, store_x).unwrap().run(&batch);
    let s = arts.sharing.as_ref().unwrap();
    let mut branches = 0;
    for (t, ts) in s.tasks.iter().enumerate() {
        if ts.regenerate == "none" {
            continue;
        }
        branches += usize::from(ts.regenerate == "branch");
        let (r, o) = (
            agree(&regen[t].values, &own[t].values),
            agree(&orig[t].values, &own[t].values),
        );
        eprintln!(
            "task {}: held-out agreement {r}/64 {}, {o}/64 without",
            ts.name, ts.regenerate
        );
        assert!(r >= o, "task {t}: {r} vs {o} of 64");
    }
    assert!(branches >= 1, "{s:?}");
}

/// The same file and seeds give bit-identical retrained weights, whatever
/// the thread count.
#[test]
fn branch_retraining_is_deterministic_across_thread_counts() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "branch.mgen", BRANCH);
    let r = p.to_str().unwrap();
    let mut outs = Vec::new();
    for threads in ["1", "2", "2"] {
        let w = dir.path().join(format!("w{}", outs.len()));
        let st = std::process::Command::new(env!("CARGO_BIN_EXE_mgen"))
            .args(["compile", r, "--emit", "weights", "-o", w.to_str().unwrap()])
            .env("RAYON_NUM_THREADS", threads)
            .status()
            .unwrap();
        assert!(st.success());
        outs.push(w);
    }
    let j = json_of(&["compile", r, "--emit", "sharing", "--json"]);
    assert_eq!(j["tasks"][0]["regenerate"], "branch", "{j}");
    for f in ["a.safetensors", "b.safetensors"] {
        let first = std::fs::read(outs[0].join(f)).unwrap();
        for o in &outs[1..] {
            assert!(first == std::fs::read(o.join(f)).unwrap(), "{f} differs");
        }
    }
}

/// Settings out of range, and a label loss without labels, are refused.
#[test]
fn branch_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("e.mgen");
    for (regen, code, needle) in [
        ("regenerate = branch(epochs = 0);", "E017", "epochs"),
        ("regenerate = branch(lr = 2);", "E017", "lr"),
        ("regenerate = branch(batch = 1.5);", "E016", "batch"),
        ("regenerate = branch(trials = 100);", "E017", "trials"),
        ("regenerate = branch(labels = 0.5);", "E017", "label"),
        ("regenerate = twig;", "E016", "branch"),
    ] {
        std::fs::write(&p, FILE.replace("REGEN", regen)).unwrap();
        let (st, _, err) = mgen(&["check", p.to_str().unwrap()]);
        assert_eq!(st, 1, "{regen}");
        assert!(
            err.contains(&format!("error[{code}]"))
                && err.contains(needle)
                && err.contains("e.mgen:3:"),
            "{regen}: {err}"
        );
    }
    // A label loss over a training file without labels.
    std::fs::write(
        dir.path().join("t.jsonl"),
        "{\"ids\": [1, 2, 3]}\n{\"ids\": [4, 5]}\n",
    )
    .unwrap();
    std::fs::write(
        &p,
        FILE.replace(
            "REGEN",
            "regenerate = branch(labels = 0.5); train = \"t.jsonl\";",
        ),
    )
    .unwrap();
    let (st, _, err) = mgen(&["compile", p.to_str().unwrap()]);
    assert_eq!(st, 1);
    assert!(
        err.contains("error[E207]") && err.contains("no labels"),
        "{err}"
    );
}

/// `compare --regenerate none,head,branch`: one baseline, one comparison
/// per level (every task set to it), side by side; on this file each level
/// saves more than the one before, every budget holding on the chip.
#[test]
fn compare_shows_the_levels_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "branch.mgen", BRANCH);
    let r = p.to_str().unwrap();
    let v = json_of(&["compare", r, "--regenerate", "none,head,branch", "--json"]);
    let s = v["summary"].as_array().unwrap();
    let names: Vec<&str> = s
        .iter()
        .map(|x| x["regenerate"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["none", "head", "branch"]);
    let ratio: Vec<f64> = s
        .iter()
        .map(|x| x["energy_ratio"].as_f64().unwrap())
        .collect();
    assert!(ratio[0] < ratio[1] && ratio[1] < ratio[2], "{ratio:?}");
    assert!(s.iter().all(|x| x["all_hold"] == true), "{v}");
    // `none` really regenerates nothing; `branch` retrains some task.
    let used = |i: usize| -> Vec<String> {
        s[i]["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["regenerate"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(used(0).iter().all(|x| x == "none"));
    assert!(used(2).iter().any(|x| x == "branch"));
    // The same baseline for every level.
    let b: Vec<&serde_json::Value> = v["levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["baseline"]["energy_pj"])
        .collect();
    assert!(b.windows(2).all(|w| w[0] == w[1]));
    // Own outputs are computed once: the first search of the run computes
    // all three, every later chip round and level reuses them, and reuse
    // changes nothing (the branch level run alone gives the same figures).
    let rounds: Vec<&serde_json::Value> = v["levels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["chip_rounds"].as_array().unwrap())
        .collect();
    assert!(rounds.len() >= 3, "{rounds:?}");
    assert_eq!(rounds[0]["own_reused"], 0);
    assert!(
        rounds[1..].iter().all(|x| x["own_reused"] == 3),
        "{rounds:?}"
    );
    let alone = json_of(&["compare", r, "--regenerate", "branch", "--json"]);
    let untimed = |x: &serde_json::Value| -> serde_json::Value {
        let mut x = x.clone();
        let strip = |o: &mut serde_json::Value| {
            let o = o.as_object_mut().unwrap();
            o.retain(|k, _| !k.ends_with("seconds"));
        };
        strip(&mut x);
        x["tasks"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .for_each(strip);
        x
    };
    assert_eq!(untimed(&alone["summary"][0]), untimed(&v["summary"][2]));
    let (code, _, err) = mgen(&["compare", r, "--regenerate", "twig"]);
    assert_eq!(code, 2, "{err}");
}
