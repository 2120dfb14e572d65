//! The task scheduler and `mgen compare`: optimality of the request
//! grouping against every alternative (by the counting simulator, not the
//! scheduler's own arithmetic), buffer capacity, residency, budgets in the
//! compared run, and the one-task case.

mod common;

use common::json_of;
use mgen::backend::place::Placement;
use mgen::data::Batch;
use mgen::diag::Sources;
use mgen::ir::Module;
use mgen::passes::Artifacts;
use mgen::passes::schedule::Schedule;
use mgen::weights::Store;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The quickstart on a 2-tile chip (7 phases), with edits.
fn small_chip(dir: &Path, name: &str, edit: &dyn Fn(String) -> String) -> PathBuf {
    let p = dir.join(name);
    let src = std::fs::read_to_string("examples/quickstart.mgen")
        .unwrap()
        .replace("tiles = 168;", "tiles = 2;");
    std::fs::write(&p, edit(src)).unwrap();
    p
}

/// The module after the `exact` pipeline (merge, place, schedule), its
/// weights and its requests.
fn loaded(path: &Path) -> (Scheduled, Store, Batch) {
    let mut sources = Sources::new();
    let f = mgen::driver::front(&mut sources, path)
        .unwrap_or_else(|d| panic!("{}", d.render(&sources, false)));
    let (mut m, store) = mgen::driver::module_and_store(f, &sources).unwrap();
    let mut arts = Artifacts::default();
    mgen::passes::run_pipeline(
        &mut m,
        &mut arts,
        &mgen::passes::resolve("exact").unwrap(),
        &mgen::passes::Context::default(),
        |_, _| {},
    )
    .unwrap();
    let batch = mgen::data::load(&m.spec, &mut sources).unwrap();
    let Artifacts {
        placement,
        schedule,
        ..
    } = arts;
    (
        Scheduled {
            module: m,
            placement,
            schedule,
        },
        store,
        batch,
    )
}

/// A module with the placement and schedule the pipeline made for it
/// (reads as the module itself).
#[derive(Clone)]
struct Scheduled {
    module: Module,
    placement: Option<Placement>,
    schedule: Option<Schedule>,
}

impl std::ops::Deref for Scheduled {
    type Target = Module;
    fn deref(&self) -> &Module {
        &self.module
    }
}

impl Scheduled {
    fn artifacts(&self) -> Artifacts {
        Artifacts {
            sharing: None,
            placement: self.placement.clone(),
            schedule: self.schedule.clone(),
        }
    }
    fn program(&self) -> mgen::backend::isa::Program {
        let p = self.placement.as_ref().unwrap();
        mgen::backend::codegen::codegen(self, p, self.schedule.as_ref(), &HashMap::new())
    }
}

fn scheduled(path: &Path) -> Scheduled {
    loaded(path).0
}

/// Functional simulation of `m` (as scheduled) over `batch`.
fn simulated(m: &Scheduled, store: &Store, batch: &Batch) -> Vec<ndarray::Array2<f32>> {
    let pkg = mgen::backend::program::package(m, &m.artifacts(), store, batch, false).unwrap();
    mgen::sim::simulate(&pkg, false, mgen::progress::Mode::Off).unwrap()
}

/// The counted energy of `m` under a given grouping and parking level.
fn energy_with(m: &Scheduled, group: usize, edram: bool) -> (f64, mgen::backend::isa::Program) {
    let mut m2 = m.clone();
    let s = m2.schedule.as_mut().unwrap();
    s.group = group;
    s.edram = edram;
    let prog = m2.program();
    let r = m.spec.workload.requests as usize;
    (mgen::sim::count(&prog, &m.spec.hardware, r).energy_pj, prog)
}

/// Exhaustive check: no grouping (1..=R, eDRAM where it fits, else
/// off-chip) costs less than the scheduler's choice.
fn assert_optimal(m: &Scheduled) -> (usize, bool) {
    let s = m.schedule.as_ref().unwrap();
    let r = s.requests;
    let (chosen, _) = energy_with(m, s.group, s.edram);
    let mut best = (f64::INFINITY, 0, false);
    for g in 1..=r {
        for edram in [false, true] {
            let fits =
                g as u64 * s.parked_bytes_per_request + s.peak_live_bytes <= s.capacity_bytes;
            if edram && !fits {
                continue;
            }
            let (e, _) = energy_with(m, g, edram);
            if e < best.0 {
                best = (e, g, edram);
            }
        }
    }
    assert!(
        chosen <= best.0 * (1.0 + 1e-12),
        "scheduler chose g={} edram={} at {chosen} pJ; g={} edram={} costs {} pJ",
        s.group,
        s.edram,
        best.1,
        best.2,
        best.0
    );
    (s.group, s.edram)
}

#[test]
fn the_scheduler_finds_the_optimal_grouping() {
    let dir = tempfile::tempdir().unwrap();
    // Cell writes dominate: all requests through each phase.
    let a = scheduled(&small_chip(dir.path(), "a.mgen", &|s| s));
    assert!(a.placement.as_ref().unwrap().phases > 1);
    assert_eq!(assert_optimal(&a), (8, false));
    // Cheap writes and room in eDRAM for four requests' parked activations:
    // groups of four beat one off-chip batch.
    let b = scheduled(&small_chip(dir.path(), "b.mgen", &|s| {
        s.replace(
            "crossbars_per_core = 8;",
            "crossbars_per_core = 8; tile_buffer = 524288 B; energy { cell_write = 0.1 pJ; }",
        )
    }));
    let (g, edram) = assert_optimal(&b);
    assert!(edram && (2..8).contains(&g), "groups of {g}, eDRAM {edram}");
    // One phase: nothing to choose, nothing parked.
    let c = scheduled(Path::new("examples/quickstart.mgen"));
    let s = c.schedule.as_ref().unwrap();
    assert_eq!((s.group, s.parked_bytes_per_request), (8, 0));
    assert_optimal(&c);
}

#[test]
fn parked_buffers_fit_their_level_and_grouped_programs_compute_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let p = small_chip(dir.path(), "b.mgen", &|s| {
        s.replace(
            "crossbars_per_core = 8;",
            "crossbars_per_core = 8; tile_buffer = 524288 B; energy { cell_write = 0.1 pJ; }",
        )
    });
    let m = scheduled(&p);
    let s = m.schedule.as_ref().unwrap().clone();
    assert!(s.edram);
    assert!(s.group as u64 * s.parked_bytes_per_request + s.peak_live_bytes <= s.capacity_bytes);
    // Off-chip parking is charged on the chip links; eDRAM parking is not.
    let (_, grouped) = energy_with(&m, s.group, true);
    let (_, offchip) = energy_with(&m, 8, false);
    let hw = &m.spec.hardware;
    let link = |prog: &mgen::backend::isa::Program| mgen::sim::count(prog, hw, 8).breakdown["interconnect"];
    assert!(link(&offchip) > link(&grouped));
    // Every group reprograms every phase before running it: the validator
    // refuses an MVM on crossbars not programmed in the current phase.
    mgen::sim::validate(
        &grouped,
        &mgen::backend::program::task_infos(&m),
        hw.crossbars(),
    )
    .unwrap();
    let loads = grouped
        .code
        .iter()
        .filter(|l| matches!(l.inst, mgen::backend::isa::Inst::Phase(_)))
        .count();
    assert_eq!(
        loads,
        8usize.div_ceil(s.group) * m.placement.as_ref().unwrap().phases as usize
    );
    // Two groups over the same requests would store a task twice.
    let mut twice = grouped.clone();
    let first = twice
        .code
        .iter()
        .find_map(|l| match l.inst {
            mgen::backend::isa::Inst::ForGroup { first, count } => Some((first, count)),
            _ => None,
        })
        .unwrap();
    for l in twice.code.iter_mut() {
        if let mgen::backend::isa::Inst::ForGroup { first: f, count: c } = &mut l.inst {
            (*f, *c) = first;
        }
    }
    let e = mgen::sim::validate(
        &twice,
        &mgen::backend::program::task_infos(&m),
        hw.crossbars(),
    )
    .unwrap_err()
    .render(&Sources::new(), false);
    assert!(e.contains("a second STORE"), "{e}");
    // Functionally, the grouped program computes what one batch computes.
    let (_, store, batch) = loaded(&p);
    let outputs = |group: usize, edram: bool| {
        let mut m2 = m.clone();
        let s = m2.schedule.as_mut().unwrap();
        s.group = group;
        s.edram = edram;
        simulated(&m2, &store, &batch)
    };
    assert_eq!(outputs(s.group, true), outputs(8, false));
}

#[test]
fn compare_reports_both_sides_and_every_budget_holds_on_simulated_outputs() {
    let v = json_of(&["compare", "examples/quickstart.mgen", "--json"]);
    for k in ["energy_pj", "latency_ns", "crossbars", "cell_writes"] {
        assert!(v["baseline"][k].as_f64().unwrap() > 0.0, "baseline.{k}");
        assert!(v["mgen"][k].as_f64().unwrap() > 0.0, "mgen.{k}");
    }
    let ratio = v["energy_ratio"].as_f64().unwrap();
    assert!(ratio > 1.2, "energy ratio {ratio}");
    assert_eq!(
        ratio,
        v["baseline"]["energy_pj"].as_f64().unwrap() / v["mgen"]["energy_pj"].as_f64().unwrap()
    );
    for t in v["tasks"].as_array().unwrap() {
        for k in ["name", "shared_layers", "budget", "metric"] {
            assert!(!t[k].is_null(), "tasks[].{k}");
        }
        assert_eq!(t["holds"], true, "{t}");
        assert!(
            t["budgets"][0]["source"]
                .as_str()
                .unwrap()
                .contains("simulated")
        );
    }
}

#[test]
fn compare_writes_a_report_with_the_sharing_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = common::mgen(&[
        "compare",
        "examples/quickstart.mgen",
        "--counts-only",
        "--report",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("energy efficiency"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("compare.json")).unwrap())
            .unwrap();
    assert!(v["energy_ratio"].as_f64().unwrap() > 1.0);
    let tree = std::fs::read_to_string(dir.path().join("sharing_tree.svg")).unwrap();
    // One cell per task and block: 3 tasks x 5 blocks.
    assert_eq!(tree.matches("<rect").count(), 15);
    for f in [
        "energy_by_component.svg",
        "energy_total.svg",
        "shared_layers.svg",
    ] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    // The timing chart: latency and makespan of both sides, in µs.
    let timing = std::fs::read_to_string(dir.path().join("timing.svg")).unwrap();
    for label in [
        "latency baseline",
        "latency mgen",
        "makespan baseline",
        "makespan mgen",
    ] {
        assert!(timing.contains(label), "{label}: {timing}");
    }
    let us = v["mgen"]["makespan_ns"].as_f64().unwrap() * 1e-3;
    assert!(us > 0.0, "{v}");
    // The schedule's candidates carry their timing in the JSON.
    let t = &v["schedule"]["chosen"]["timing"];
    assert!(t["makespan_ns"].as_f64().unwrap() > 0.0, "{t}");
    assert_eq!(v["schedule"]["tolerance_pct"].as_f64(), Some(1.0));
    // Utilisation and the critical path, side by side.
    for side in ["baseline", "mgen"] {
        let u = v[side]["utilisation"]["crossbars"].as_f64().unwrap();
        assert!(u > 0.0 && u <= 1.0, "{side}: {u}");
        let cp = v[side]["critical_path_ns"].as_f64().unwrap();
        assert!(
            cp > 0.0 && cp <= v[side]["makespan_ns"].as_f64().unwrap(),
            "{side}"
        );
    }
    assert!(
        out.contains("busy: crossbars") && out.contains("critical path (batch)"),
        "{out}"
    );
}

#[test]
fn one_task_with_nothing_to_share_costs_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("one.mgen");
    let src = std::fs::read_to_string("examples/quickstart.mgen")
        .unwrap()
        .replace(
            "tasks  = [sentiment, topic, similarity];",
            "tasks  = [topic];",
        );
    std::fs::write(&p, src).unwrap();
    let v = json_of(&["compare", p.to_str().unwrap(), "--counts-only", "--json"]);
    assert_eq!(v["energy_ratio"].as_f64().unwrap(), 1.0);
    assert_eq!(v["baseline"]["cell_writes"], v["mgen"]["cell_writes"]);
    assert_eq!(v["tasks"][0]["shared_layers"], 0);
}

/// When one request's live buffers exceed the eDRAM, the longest-waiting
/// ones are kept off chip between uses: charged on the chip links, and the
/// outputs do not change.
#[test]
fn buffers_over_the_edram_are_evicted_and_charged() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = dir.path().join("tiny.mgen");
    let src = std::fs::read_to_string("examples/quickstart.mgen").unwrap();
    std::fs::write(
        &tiny,
        src.replace(
            "crossbars_per_core = 8;",
            "crossbars_per_core = 8; tile_buffer = 1700 B;",
        ),
    )
    .unwrap();
    let m = scheduled(&tiny);
    let s = m.schedule.as_ref().unwrap();
    assert!(s.peak_before_evictions > s.capacity_bytes);
    assert!(!s.evict.is_empty());
    assert!(s.peak_live_bytes < s.peak_before_evictions);
    // After evictions one request's live buffers fit.
    assert!(s.peak_live_bytes <= s.capacity_bytes);
    assert_eq!(s.overflow_bytes, 0);
    let big = scheduled(Path::new("examples/quickstart.mgen"));
    let hw = &m.spec.hardware;
    let r = m.spec.workload.requests as usize;
    let prog = m.program();
    let prog_big = big.program();
    let spills = prog
        .code
        .iter()
        .filter(|l| matches!(l.inst, mgen::backend::isa::Inst::Spill { edram: false, .. }))
        .count();
    assert_eq!(spills, s.evict.len());
    let link =
        |p: &mgen::backend::isa::Program| mgen::sim::count(p, hw, r).breakdown["interconnect"];
    assert!(link(&prog) > link(&prog_big));
    // Same outputs, bit for bit.
    let run = |path: &Path| {
        let (mm, store, batch) = loaded(path);
        simulated(&mm, &store, &batch)
    };
    assert_eq!(run(&tiny), run(Path::new("examples/quickstart.mgen")));
}

/// The module after `exact` with the back end's timing model in the
/// context, as the CLI runs it.
fn scheduled_timed(path: &Path) -> Scheduled {
    let mut sources = Sources::new();
    let f = mgen::driver::front(&mut sources, path)
        .unwrap_or_else(|d| panic!("{}", d.render(&sources, false)));
    let (mut m, _store) = mgen::driver::module_and_store(f, &sources).unwrap();
    let mut arts = Artifacts::default();
    let cx = mgen::passes::Context {
        timing: Some(&mgen::backend::energy::Counting),
        ..Default::default()
    };
    let pl = mgen::passes::resolve("exact").unwrap();
    mgen::passes::run_pipeline(&mut m, &mut arts, &pl, &cx, |_, _| {}).unwrap();
    Scheduled {
        module: m,
        placement: arts.placement,
        schedule: arts.schedule,
    }
}

/// The makespan of `m` run as candidate `c`, by the full timing model.
fn makespan_as(m: &Scheduled, c: &mgen::passes::schedule::Candidate) -> f64 {
    let mut m2 = m.clone();
    let s = m2.schedule.as_ref().unwrap().with(c);
    m2.schedule = Some(s);
    let prog = m2.program();
    let r = m.spec.workload.requests as usize;
    mgen::backend::timing::timing(&prog, &m.spec.hardware, r).makespan_ns
}

/// With a timing model, every candidate is timed (by the same model `mgen
/// run` reports), and the pick has the shortest makespan among the orders
/// within the workload's tolerance of the least scheduling energy; a wider
/// tolerance trades energy for makespan.
#[test]
fn the_scheduler_picks_the_best_makespan_among_energy_optimal_orders() {
    let dir = tempfile::tempdir().unwrap();
    let cheap_writes = |tol: &'static str| {
        move |s: String| {
            s.replace(
                "crossbars_per_core = 8;",
                "crossbars_per_core = 8; tile_buffer = 524288 B; energy { cell_write = 0.1 pJ; }",
            )
            .replace(
                "requests = 8; seq = 32;",
                &format!("requests = 8; seq = 32; makespan_tolerance = {tol};"),
            )
        }
    };
    let mut picks = Vec::new();
    for (name, tol) in [("narrow.mgen", "1%"), ("wide.mgen", "50%")] {
        let m = scheduled_timed(&small_chip(dir.path(), name, &cheap_writes(tol)));
        let s = m.schedule.as_ref().unwrap();
        assert!(s.candidates.len() >= 3, "{:?}", s.candidates);
        let least = s
            .candidates
            .iter()
            .map(|c| c.total_pj)
            .fold(f64::INFINITY, f64::min);
        let within = |c: &mgen::passes::schedule::Candidate| {
            c.total_pj <= least * (1.0 + s.tolerance_pct / 100.0)
        };
        assert!(within(&s.chosen), "{name}: {:?}", s.chosen);
        let chosen = makespan_as(&m, &s.chosen);
        for c in &s.candidates {
            let t = c.timing.expect("every candidate is timed");
            let full = makespan_as(&m, c);
            assert!(
                (t.makespan_ns - full).abs() <= 1e-9 * full,
                "{name}: {c:?} vs {full}"
            );
            if within(c) {
                assert!(
                    chosen <= full,
                    "{name}: {} at {chosen} ns, {} at {full} ns",
                    s.chosen.name,
                    c.name
                );
            }
        }
        assert_eq!(s.group, s.chosen.group);
        picks.push((s.chosen.group, s.chosen.total_pj, chosen));
    }
    let (narrow, wide) = (picks[0], picks[1]);
    assert!(
        narrow.0 != wide.0,
        "the tolerance changed nothing: {picks:?}"
    );
    assert!(wide.1 > narrow.1 && wide.2 < narrow.2, "{picks:?}");
}
