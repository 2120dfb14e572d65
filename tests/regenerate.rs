//! Regeneration (`regenerate = head`): the model generator refits a task's
//! classifier on the shared features (distilled from the task's own model
//! on its training inputs), which lets tasks share blocks that training-free
//! selection cannot; budgets are re-measured by the reference executor.

mod common;

use common::{json_of, mgen};
use mgen::diag::Sources;
use mgen::reference::Plan;

use common::{REGEN_FILE as FILE, write_regen as write};

/// Training-free selection shares nothing here (drift 0.3 under 90%
/// agreement); with the head refitted, `a` and `b` share blocks, their
/// budgets hold when re-measured by the executor (equal to the pass's own
/// figures), and the report says what the metric was without regeneration.
#[test]
fn a_refitted_head_makes_blocks_shareable() {
    let dir = tempfile::tempdir().unwrap();
    let plain = write(dir.path(), "plain.mgen", "");
    let regen = write(dir.path(), "regen.mgen", "regenerate = head;");
    let (_, m0_arts, _, _) = common::compiled(&plain, "default");
    let s0 = m0_arts.sharing.as_ref().unwrap();
    assert!(s0.tasks.iter().all(|t| t.shared_blocks == 0), "{s0:?}");
    let (m, arts, store, cx) = common::compiled(&regen, "default");
    let s = arts.sharing.as_ref().unwrap();
    for t in &s.tasks[..2] {
        assert!(t.shared_blocks >= 2, "{t:?}");
        assert_eq!(t.regenerate, "head");
        // Without the refit the same choice breaks the budget.
        assert!(!t.before_regeneration[0].holds, "{t:?}");
        assert!(t.before_regeneration[0].value < t.measured[0].value);
    }
    assert_eq!(s.tasks[2].regenerate, "none");
    let (exact, _, store_x, _) = common::compiled(&regen, "exact");
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
}

/// On requests the generator never saw (the workload's requests after the
/// 32 calibration ones; training inputs are separate synthetic ones), the
/// refitted heads agree with the tasks' own models at least as often as
/// the original heads do on the same shared model.
#[test]
fn refitted_heads_hold_up_on_held_out_requests() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("held.mgen");
    std::fs::write(
        &p,
        FILE.replace("REGEN", "regenerate = head;")
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
    // The same shared model with each task's original classifier.
    let plain = common::with_own_tensors(&m, store, |p| p.name.starts_with("classifier."));
    let agree = common::agreeing;
    let regen = Plan::new(&m, store).unwrap().run(&batch);
    let orig = Plan::new(&plain, store).unwrap().run(&batch);
    let own = Plan::new(&exact, store_x).unwrap().run(&batch);
    for t in 0..2 {
        assert!(arts.sharing.as_ref().unwrap().tasks[t].shared_blocks >= 2);
        let (r, o) = (
            agree(&regen[t].values, &own[t].values),
            agree(&orig[t].values, &own[t].values),
        );
        eprintln!("task {t}: held-out agreement {r}/64 refitted, {o}/64 original head");
        assert!(r >= o, "task {t}: {r} vs {o} of 64");
        assert!(r as f64 >= 0.8 * 64.0, "task {t}: {r} of 64");
    }
}

/// The same file and seeds give bit-identical regenerated heads.
#[test]
fn regeneration_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let regen = write(dir.path(), "regen.mgen", "regenerate = head;");
    let r = regen.to_str().unwrap();
    // Everything but the time spent.
    let tasks = |mut j: serde_json::Value| {
        for t in j["tasks"].as_array_mut().unwrap() {
            t.as_object_mut().unwrap().remove("regeneration_seconds");
        }
        j["tasks"].clone()
    };
    let a = tasks(json_of(&["compile", r, "--emit", "sharing", "--json"]));
    let b = tasks(json_of(&["compile", r, "--emit", "sharing", "--json"]));
    assert_eq!(a, b);
    let (wa, wb) = (dir.path().join("wa"), dir.path().join("wb"));
    for w in [&wa, &wb] {
        let (code, _, err) = mgen(&["compile", r, "--emit", "weights", "-o", w.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
    }
    for f in ["a.safetensors", "b.safetensors"] {
        assert_eq!(
            std::fs::read(wa.join(f)).unwrap(),
            std::fs::read(wb.join(f)).unwrap(),
            "{f}"
        );
    }
}

/// The ridge fit recovers a linear map exactly when there is one.
#[test]
fn the_ridge_fit_recovers_a_linear_head() {
    use ndarray::Array2;
    let f = Array2::from_shape_fn((200, 16), |(i, j)| {
        (((i * 37 + j * 101) % 89) as f32 / 89.0 - 0.5) * 2.0
    });
    let w = Array2::from_shape_fn((3, 16), |(o, j)| ((o * 7 + j * 3) % 11) as f32 / 11.0 - 0.4);
    let b = ndarray::arr1(&[0.5f32, -1.0, 0.25]);
    let y = f.dot(&w.t()) + &b;
    let (wf, bf) = mgen::passes::share::ridge_head(&f, &y);
    let wf = wf.into_dimensionality::<ndarray::Ix2>().unwrap();
    for (a, e) in wf.iter().zip(w.iter()) {
        assert!((a - e).abs() < 2e-2, "{a} vs {e}");
    }
    for (a, e) in bf.iter().zip(b.iter()) {
        assert!((a - e).abs() < 2e-2, "{a} vs {e}");
    }
}

/// What cannot be regenerated is refused at the attribute.
#[test]
fn regeneration_errors_point_at_the_attribute() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("e.mgen");
    std::fs::write(&p, FILE.replace("REGEN", "regenerate = twig;")).unwrap();
    let (code, _, err) = mgen(&["check", p.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("error[E016]") && err.contains("e.mgen:3:"),
        "{err}"
    );
    std::fs::write(
        &p,
        FILE.replace("REGEN", "")
            .replace(
                "head = classify(3); weights = finetuned(seed = 8",
                "head = embed(mean); weights = finetuned(seed = 8",
            )
            .replace(
                "keep agreement >= 90%; }\nworkload",
                "keep cosine >= 0.9; regenerate = head; }\nworkload",
            ),
    )
    .unwrap();
    let (code, _, err) = mgen(&["check", p.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("error[E017]") && err.contains("embed"),
        "{err}"
    );
    // Training inputs must not be the calibration set, and a synthetic
    // source needs its seed.
    std::fs::write(
        &p,
        FILE.replace(
            "REGEN",
            "regenerate = head; calibrate = \"d.jsonl\"; train = \"d.jsonl\";",
        ),
    )
    .unwrap();
    let (code, _, err) = mgen(&["check", p.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("error[E017]") && err.contains("held-out"),
        "{err}"
    );
    std::fs::write(
        &p,
        FILE.replace("REGEN", "regenerate = head; train = synthetic();"),
    )
    .unwrap();
    let (code, _, err) = mgen(&["check", p.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("error[E015]") && err.contains("seed"), "{err}");
    // Area mode needs its width.
    std::fs::write(
        &p,
        FILE.replace("REGEN", "")
            .replace("tasks = [a, b, c];", "tasks = [a, b, c]; area = delta();"),
    )
    .unwrap();
    let (code, _, err) = mgen(&["check", p.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("error[E015]") && err.contains("bits"), "{err}");
}
