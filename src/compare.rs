//! `mgen compare`: the baseline against mgen, on the same hardware and
//! workload.
//!
//! - **baseline**: the `baseline` pipeline — every task its own full model,
//!   tasks in declaration order, all requests through each phase, parked
//!   activations off-chip (the pre-scheduler code generator's order);
//! - **mgen**: the `default` pipeline — `merge`, `share` (the model
//!   generator), `place`, `schedule`.
//!
//! Both are compiled from one lowering, run by the simulator (or counted
//! with `--counts-only`), and reported side by side. Per task, each budget
//! is measured from **mgen's simulated outputs** against the float outputs
//! of the task's own unshared model (the baseline's float reference) on the
//! workload's requests; the baseline's own simulated outputs against the
//! same reference show what quantisation alone costs. With
//! `--counts-only` nothing is simulated: the per-task figures are the
//! generator's, measured in float on the calibration inputs, and say so.

use crate::data::Label;
use crate::diag::{Diagnostic, Diags, Sources};
use crate::ir::Module;
use crate::passes::{self, share};
use crate::sim::{self, Totals};
use crate::spec::Head;
use crate::weights::Store;
use serde_json::{Value, json};
use std::path::Path;

/// Compiles `lowered` with `pipeline` (and sharing depth caps), `share`
/// reusing the branches retrained in `cache`.
fn compiled(
    lowered: &Module,
    pipeline: &str,
    store: &Store,
    sources: &mut Sources,
    progress: crate::progress::Mode,
    caps: &[Option<usize>],
    cache: &share::ShareCache,
) -> Result<(Module, passes::Artifacts), Diags> {
    let mut m = lowered.clone();
    let mut arts = passes::Artifacts::default();
    let pl = passes::resolve(pipeline)?;
    let mut cx = passes::context_for(&pl, &m, store, sources, progress)?;
    cx.depth_caps = caps.to_vec();
    cx.share_cache = cache.clone();
    passes::run_pipeline(&mut m, &mut arts, &pl, &cx, |_, _| {})?;
    Ok((m, arts))
}

/// At most this many recompilations when simulated outputs break budgets.
pub const CHIP_ROUNDS: usize = 6;

fn side(t: &Totals) -> Value {
    json!({
        "energy_pj": t.energy_pj,
        "energy_per_request_pj": t.energy_pj / t.requests.max(1) as f64,
        "breakdown": t.breakdown,
        "latency_ns": t.latency_ns,
        "crossbars": t.crossbars,
        "area_mm2": t.area_mm2,
        "tiles_in_use": t.tiles_in_use,
        "phases": t.phases,
        "cell_writes": t.cell_writes,
        "writes_per_cell_per_run": t.writes_per_cell_per_run,
        "lifetime_inferences": t.lifetime_inferences,
    })
}

/// A regeneration level every task is set to by `--regenerate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    None,
    Head,
    Branch,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Head => "head",
            Level::Branch => "branch",
        }
    }

    /// Parses `none`, `head` or `branch`.
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "none" => Some(Level::None),
            "head" => Some(Level::Head),
            "branch" => Some(Level::Branch),
            _ => None,
        }
    }

    /// Sets every task of `spec` to this level: `head` leaves embedding
    /// tasks (no classifier) at `none`; `branch` keeps a task's own
    /// `branch(...)` settings and gives the others the defaults.
    pub fn apply(self, spec: &mut crate::spec::Spec) {
        use crate::spec::{BranchOpts, Regenerate};
        for t in &mut spec.tasks {
            t.regenerate = match self {
                Level::None => Regenerate::None,
                Level::Head if matches!(t.head, Head::Embed { .. }) => Regenerate::None,
                Level::Head => Regenerate::Head,
                Level::Branch => {
                    Regenerate::Branch(t.regenerate.branch().unwrap_or(BranchOpts::default()))
                }
            };
        }
    }
}

/// The baseline's side, computed once.
struct Baseline {
    pb: crate::sim::Package,
    ob: Option<Vec<ndarray::Array2<f32>>>,
}

/// Runs the comparison; returns the JSON report.
pub fn compare(
    file: &Path,
    sources: &mut Sources,
    counts_only: bool,
    progress: crate::progress::Mode,
) -> Result<(Value, Option<share::Sharing>), Diags> {
    let mut all = compare_levels(file, sources, counts_only, progress, &[None])?;
    Ok(all.remove(0))
}

/// The comparison once per regeneration level (`None`: as the file says),
/// against one baseline.
pub fn compare_levels(
    file: &Path,
    sources: &mut Sources,
    counts_only: bool,
    progress: crate::progress::Mode,
    levels: &[Option<Level>],
) -> Result<Vec<(Value, Option<share::Sharing>)>, Diags> {
    let f = crate::driver::front(sources, file)?;
    let (lowered, store) = crate::driver::module_and_store(f, sources)?;
    let batch = crate::data::load(&lowered.spec, sources)?;
    // One cache for every level and chip round: a branch retrained once is
    // not retrained again.
    let cache = share::ShareCache::default();
    let (base, base_arts) = compiled(&lowered, "baseline", &store, sources, progress, &[], &cache)?;
    let pb = crate::backend::program::package(&base, &base_arts, &store, &batch, counts_only)?;
    let ob = if counts_only {
        None
    } else {
        Some(sim::simulate(&pb, false, progress)?)
    };
    let baseline = Baseline { pb, ob };
    let mut out = Vec::new();
    for level in levels {
        let mut m = lowered.clone();
        if let Some(l) = level {
            l.apply(&mut m.spec);
        }
        let (mut v, s) = compare_one(
            file,
            &m,
            &store,
            &batch,
            &baseline,
            sources,
            counts_only,
            progress,
            &cache,
        )?;
        v["regenerate"] = json!(level.map(|l| l.name()).unwrap_or("as written"));
        out.push((v, s));
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn compare_one(
    file: &Path,
    lowered: &Module,
    store: &Store,
    batch: &crate::data::Batch,
    baseline: &Baseline,
    sources: &mut Sources,
    counts_only: bool,
    progress: crate::progress::Mode,
    cache: &share::ShareCache,
) -> Result<(Value, Option<share::Sharing>), Diags> {
    let t0 = std::time::Instant::now();
    let (pb, ob) = (&baseline.pb, &baseline.ob);
    let labels: Vec<Option<Label>> = batch.requests.iter().map(|q| q.label).collect();
    let n = lowered.spec.workload.tasks.len();
    // mgen, verified on the chip: a task whose simulated outputs break a
    // budget against its own model simulated on the same chip gets half its
    // sharing depth, and the tree is generated again.
    let mut caps: Vec<Option<usize>> = vec![None; n];
    let mut rounds = Vec::new();
    let (ours, arts, pm, om) = loop {
        let (ours, arts) = compiled(lowered, "default", store, sources, progress, &caps, cache)?;
        let pm = crate::backend::program::package(&ours, &arts, store, batch, counts_only)?;
        let Some(ob) = &ob else {
            break (ours, arts, pm, None);
        };
        let om = sim::simulate(&pm, false, progress)?;
        let sharing = arts.sharing.as_ref();
        let failing: Vec<usize> = (0..n)
            .filter(|&t| {
                let task = &ours.spec.tasks[ours.spec.workload.tasks[t]];
                task.budgets
                    .iter()
                    .any(|b| !share::measure(b, &task.head, &om[t], &ob[t], &labels).holds)
            })
            .collect();
        let depths: Vec<usize> = (0..n)
            .map(|t| sharing.map(|s| s.tasks[t].depth).unwrap_or(0))
            .collect();
        let names: Vec<String> = ours.task_names().iter().map(|s| s.to_string()).collect();
        rounds.push(json!({
            "depths": depths,
            "failing": failing.iter().map(|&t| names[t].clone()).collect::<Vec<_>>(),
        }));
        let movable: Vec<usize> = failing.iter().copied().filter(|&t| depths[t] > 0).collect();
        if movable.is_empty() || rounds.len() > CHIP_ROUNDS {
            break (ours, arts, pm, Some(om));
        }
        for t in movable {
            caps[t] = Some(depths[t] / 2);
        }
    };
    if counts_only {
        sim::validate(&pb.prog, &pb.tasks, pb.hw.crossbars())?;
        sim::validate(&pm.prog, &pm.tasks, pm.hw.crossbars())?;
    }
    let r = batch.requests.len();
    let tb = sim::count(&pb.prog, &pb.hw, r);
    let tm = sim::count(&pm.prog, &pm.hw, r);
    let sharing = arts.sharing.as_ref().ok_or_else(|| {
        Diags::from(Diagnostic::internal(
            "the default pipeline ran no `share` pass",
        ))
    })?;
    let layers_of = |t: usize| -> usize {
        let name = &sharing.tasks[t].name;
        sharing
            .tree
            .iter()
            .filter(|(b, groups)| {
                b != "emb" && groups.iter().any(|g| g.contains(name) && g.len() > 1)
            })
            .count()
    };
    let mut tasks = Vec::new();
    let sim_outputs = match (ob.as_ref(), om) {
        (Some(ob), Some(om)) => Some((ob, om)),
        _ => None,
    };
    for t in 0..n {
        let task = &ours.spec.tasks[ours.spec.workload.tasks[t]];
        let st = &sharing.tasks[t];
        let mut budgets = Vec::new();
        for (bi, b) in task.budgets.iter().enumerate() {
            let entry = match (&sim_outputs, &pb.reference, &pm.reference) {
                (Some((ob, om)), Some(own), Some(float_m)) => {
                    let m_sim = share::measure(b, &task.head, &om[t], &own[t], &labels);
                    let b_sim = share::measure(b, &task.head, &ob[t], &own[t], &labels);
                    let m_float = share::measure(b, &task.head, &float_m[t], &own[t], &labels);
                    // The task's own model on the same chip is the baseline's
                    // simulated outputs: the budget on the chip.
                    let chip = share::measure(b, &task.head, &om[t], &ob[t], &labels);
                    json!({
                        "budget": m_sim.budget, "metric": m_sim.metric, "bound": m_sim.bound,
                        "value": m_sim.value,
                        "holds": chip.holds,
                        "on_chip": chip.value,
                        "source": "mgen simulated outputs vs the task's own model simulated on the same chip (on_chip, holds) and vs its own float model (value), workload requests",
                        "mgen_float": m_float.value,
                        "float_holds": m_float.holds,
                        "baseline_simulated": b_sim.value,
                    })
                }
                _ => {
                    let g = &st.measured[bi];
                    json!({
                        "budget": g.budget, "metric": g.metric, "bound": g.bound,
                        "value": g.value, "holds": g.holds,
                        "source": "generator: float outputs vs the task's own float model, calibration inputs",
                    })
                }
            };
            budgets.push(entry);
        }
        let first = budgets.first().cloned().unwrap_or(Value::Null);
        tasks.push(json!({
            "name": st.name,
            "head": match task.head { Head::Classify { .. } => "classify", Head::Regress { .. } => "regress", Head::Embed { .. } => "embed" },
            "shared_layers": layers_of(t),
            "shared_blocks": st.shared_blocks,
            "blocks": st.blocks,
            "source": st.source,
            "budget": first["budget"],
            "metric": first["value"],
            "holds": budgets.iter().all(|b| b["holds"].as_bool().unwrap_or(false)),
            "budgets": budgets,
        }));
    }
    let schedule = arts.schedule.as_ref().map(|s| {
        json!({
            "group": s.group,
            "edram": s.edram,
            "chosen": s.chosen,
            "candidates": s.candidates,
        })
    });
    let v = json!({
        "file": file.display().to_string(),
        "mode": if counts_only { "counts" } else { "functional" },
        "requests": r,
        "seq": batch.seq,
        "baseline": side(&tb),
        "mgen": side(&tm),
        "energy_ratio": tb.energy_pj / tm.energy_pj.max(1e-30),
        "energy_ratio_per_request_no_programming": sharing.unshared_pj / sharing.shared_pj.max(1e-30),
        "cell_write_ratio": tb.cell_writes / tm.cell_writes.max(1e-30),
        "tasks": tasks,
        "schedule": schedule,
        "chip_rounds": rounds,
        "share_seconds": sharing.seconds,
        "seconds": t0.elapsed().as_secs_f64(),
        "notes": store.notes,
    });
    Ok((v, arts.sharing))
}

/// The comparison as a side-by-side table.
pub fn text(v: &Value) -> String {
    use std::fmt::Write;
    let (b, m) = (&v["baseline"], &v["mgen"]);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "compare: {} ({} requests x seq {}, {})",
        v["file"].as_str().unwrap_or(""),
        v["requests"],
        v["seq"],
        if v["mode"] == "counts" {
            "counts only"
        } else {
            "simulated"
        }
    );
    let _ = writeln!(
        o,
        "baseline: every task its own model, declaration order; mgen: merge + share + place + schedule\n"
    );
    let _ = writeln!(
        o,
        "{:<26} {:>16} {:>16} {:>10}",
        "", "baseline", "mgen", "ratio"
    );
    let f = |k: &str, x: &Value| x[k].as_f64().unwrap_or(0.0);
    let row = |o: &mut String, label: &str, a: f64, c: f64, fmt: &dyn Fn(f64) -> String| {
        let _ = writeln!(
            o,
            "{:<26} {:>16} {:>16} {:>9.3}x",
            label,
            fmt(a),
            fmt(c),
            a / c.max(1e-30)
        );
    };
    row(
        &mut o,
        "energy (total)",
        f("energy_pj", b),
        f("energy_pj", m),
        &sim::si,
    );
    row(
        &mut o,
        "energy per request",
        f("energy_per_request_pj", b),
        f("energy_per_request_pj", m),
        &sim::si,
    );
    if let (Some(bb), Some(mb)) = (b["breakdown"].as_object(), m["breakdown"].as_object()) {
        for (k, x) in bb {
            let (a, c) = (
                x.as_f64().unwrap_or(0.0),
                mb.get(k).and_then(|y| y.as_f64()).unwrap_or(0.0),
            );
            if a > 0.0 || c > 0.0 {
                row(&mut o, &format!("  {k}"), a, c, &sim::si);
            }
        }
    }
    row(
        &mut o,
        "latency",
        f("latency_ns", b),
        f("latency_ns", m),
        &sim::time,
    );
    row(
        &mut o,
        "crossbars",
        f("crossbars", b),
        f("crossbars", m),
        &|x| format!("{x:.0}"),
    );
    row(
        &mut o,
        "area (mm2)",
        f("area_mm2", b),
        f("area_mm2", m),
        &|x| format!("{x:.2}"),
    );
    row(&mut o, "phases", f("phases", b), f("phases", m), &|x| {
        format!("{x:.0}")
    });
    row(
        &mut o,
        "cell writes",
        f("cell_writes", b),
        f("cell_writes", m),
        &|x| format!("{x:.4e}"),
    );
    let life = |x: &Value| match x["lifetime_inferences"].as_f64() {
        Some(l) => format!("{l:.3e}"),
        None => "unlimited".into(),
    };
    let _ = writeln!(
        o,
        "{:<26} {:>16} {:>16}",
        "lifetime (inferences)",
        life(b),
        life(m)
    );
    let _ = writeln!(
        o,
        "\nenergy efficiency (baseline / mgen): {:.3}x over the run; {:.3}x per request without programming",
        v["energy_ratio"].as_f64().unwrap_or(0.0),
        v["energy_ratio_per_request_no_programming"]
            .as_f64()
            .unwrap_or(0.0)
    );
    o.push('\n');
    o.push_str(&task_table(v));
    if let Some(r) = v["chip_rounds"].as_array()
        && r.len() > 1
    {
        let _ = writeln!(
            o,
            "\nverified on the chip in {} rounds (a task whose simulated outputs broke a budget got half its sharing depth):",
            r.len()
        );
        for (i, x) in r.iter().enumerate() {
            let _ = writeln!(
                o,
                "  round {}: depths {}, failing {}",
                i + 1,
                x["depths"],
                x["failing"]
            );
        }
    }
    if v["mode"] == "counts" {
        let _ = writeln!(
            o,
            "(counts only: metrics are the generator's, float outputs vs each task's own float model on its calibration inputs)"
        );
    } else {
        let _ = writeln!(
            o,
            "(on chip: mgen's simulated outputs vs the task's own model simulated on the same chip, which decides `holds`;\n mgen sim / base sim: simulated outputs vs the task's own float model; mgen f32: the generated model in float)"
        );
    }
    if let Some(s) = v["schedule"].as_object()
        && let Some(c) = s.get("candidates").and_then(|c| c.as_array())
        && c.len() > 1
    {
        let _ = writeln!(o, "\nschedule (capacity-limited: phases are reprogrammed):");
        for x in c {
            let _ = writeln!(
                o,
                "  {:<30} {:>12.4e} cell writes  {:>14} writes + parking",
                x["name"].as_str().unwrap_or(""),
                x["cell_writes"].as_f64().unwrap_or(0.0),
                sim::si(x["total_pj"].as_f64().unwrap_or(0.0))
            );
        }
        let _ = writeln!(
            o,
            "  chosen: {}",
            s["chosen"]["name"].as_str().unwrap_or("")
        );
    }
    for n in v["notes"].as_array().into_iter().flatten() {
        let _ = writeln!(o, "note: {}", n.as_str().unwrap_or(""));
    }
    o
}

/// The JSON of a comparison per regeneration level.
pub fn levels_json(file: &Path, all: &[(Value, Option<share::Sharing>)]) -> Value {
    let summary: Vec<Value> = all
        .iter()
        .map(|(v, s)| {
            let tasks: Vec<Value> = v["tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .zip(s.iter().flat_map(|s| s.tasks.iter()))
                .map(|(t, st)| {
                    json!({
                        "name": t["name"],
                        "shared_layers": t["shared_layers"],
                        "blocks": t["blocks"],
                        "regenerate": st.regenerate,
                        "regeneration_seconds": st.regeneration_seconds,
                        "holds": t["holds"],
                        "metric": t["metric"],
                    })
                })
                .collect();
            json!({
                "regenerate": v["regenerate"],
                "energy_ratio": v["energy_ratio"],
                "energy_ratio_per_request_no_programming": v["energy_ratio_per_request_no_programming"],
                "crossbars": v["mgen"]["crossbars"],
                "baseline_crossbars": v["baseline"]["crossbars"],
                "all_hold": v["tasks"].as_array().into_iter().flatten().all(|t| t["holds"].as_bool().unwrap_or(false)),
                "share_seconds": v["share_seconds"],
                "seconds": v["seconds"],
                "tasks": tasks,
            })
        })
        .collect();
    json!({
        "file": file.display().to_string(),
        "mode": all.first().map(|(v, _)| v["mode"].clone()).unwrap_or(Value::Null),
        "summary": summary,
        "levels": all.iter().map(|(v, _)| v.clone()).collect::<Vec<_>>(),
    })
}

/// The per-task table of [`text`]: one row per budget.
fn task_table(v: &Value) -> String {
    use crate::table::{Align, Table};
    let (l, r) = (Align::Left, Align::Right);
    let mut tb = Table::new(&[
        ("task", l),
        ("layers", r),
        ("source", l),
        ("budget", l),
        ("on chip", r),
        ("mgen sim", r),
        ("base sim", r),
        ("mgen f32", r),
        ("holds", r),
    ])
    .gap(2);
    for t in v["tasks"].as_array().into_iter().flatten() {
        for (i, bd) in t["budgets"].as_array().into_iter().flatten().enumerate() {
            let mut row = if i == 0 {
                vec![
                    t["name"].as_str().unwrap_or("").to_string(),
                    format!(
                        "{}/{}",
                        t["shared_layers"],
                        t["blocks"].as_u64().unwrap_or(1).saturating_sub(1)
                    ),
                    t["source"].as_str().unwrap_or("").to_string(),
                ]
            } else {
                vec![String::new(); 3]
            };
            let num = |k: &str| {
                bd[k]
                    .as_f64()
                    .map(|x| format!("{x:.4}"))
                    .unwrap_or_else(|| "-".into())
            };
            let budget = bd["budget"]
                .as_str()
                .unwrap_or("")
                .trim_start_matches("keep ")
                .trim_end_matches(';')
                .to_string();
            let (chip, sim, f32_) = if bd["on_chip"].is_null() {
                ("-".to_string(), "-".to_string(), num("value"))
            } else {
                (num("on_chip"), num("value"), num("mgen_float"))
            };
            let holds = if bd["holds"].as_bool().unwrap_or(false) {
                "yes"
            } else {
                "NO"
            };
            row.extend([
                budget,
                chip,
                sim,
                num("baseline_simulated"),
                f32_,
                holds.to_string(),
            ]);
            tb.row(row);
        }
    }
    tb.render()
}

/// The per-level comparison as text: a summary table, then the tasks.
pub fn levels_text(v: &Value) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let first = &v["levels"][0];
    let _ = writeln!(
        o,
        "compare by regeneration level: {} ({} requests x seq {}, {})\n",
        v["file"].as_str().unwrap_or(""),
        first["requests"],
        first["seq"],
        if v["mode"] == "counts" {
            "counts only"
        } else {
            "simulated"
        }
    );
    let _ = writeln!(
        o,
        "{:<12} {:>13} {:>13} {:>17} {:>11} {:>11}",
        "regenerate", "energy ratio", "per request", "crossbars", "budgets", "share time"
    );
    let summary = v["summary"].as_array().cloned().unwrap_or_default();
    for s in &summary {
        let _ = writeln!(
            o,
            "{:<12} {:>12.3}x {:>12.3}x {:>17} {:>11} {:>10.1}s",
            s["regenerate"].as_str().unwrap_or(""),
            s["energy_ratio"].as_f64().unwrap_or(0.0),
            s["energy_ratio_per_request_no_programming"]
                .as_f64()
                .unwrap_or(0.0),
            format!(
                "{} -> {}",
                s["baseline_crossbars"].as_f64().unwrap_or(0.0),
                s["crossbars"].as_f64().unwrap_or(0.0)
            ),
            if s["all_hold"].as_bool().unwrap_or(false) {
                "all hold"
            } else {
                "SOME FAIL"
            },
            s["share_seconds"].as_f64().unwrap_or(0.0)
        );
    }
    let _ = writeln!(
        o,
        "\nper task: encoder layers computed with other tasks / regeneration used / budget holds (first budget's value)"
    );
    o.push_str(&levels_task_table(&summary));
    if v["mode"] == "counts" {
        let _ = writeln!(
            o,
            "(counts only: metrics are the generator's, float outputs vs each task's own float model on its calibration inputs)"
        );
    } else {
        let _ = writeln!(
            o,
            "(holds: mgen's simulated outputs vs the task's own model simulated on the same chip, on the workload's requests)"
        );
    }
    o
}

/// The per-task table of [`levels_text`]: one column per level.
fn levels_task_table(summary: &[Value]) -> String {
    use crate::table::{Align, Table};
    let names: Vec<&str> = summary
        .iter()
        .map(|s| s["regenerate"].as_str().unwrap_or(""))
        .collect();
    let mut cols = vec![("task", Align::Left)];
    cols.extend(names.iter().map(|n| (*n, Align::Right)));
    let mut tb = Table::new(&cols).gap(3);
    let n = summary
        .first()
        .and_then(|s| s["tasks"].as_array())
        .map(|t| t.len())
        .unwrap_or(0);
    for i in 0..n {
        let mut row = vec![
            summary[0]["tasks"][i]["name"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        ];
        for s in summary {
            let t = &s["tasks"][i];
            row.push(format!(
                "{}/{} {:<6} {} {:.4}",
                t["shared_layers"],
                t["blocks"].as_u64().unwrap_or(1).saturating_sub(1),
                t["regenerate"].as_str().unwrap_or(""),
                if t["holds"].as_bool().unwrap_or(false) {
                    "yes"
                } else {
                    "NO"
                },
                t["metric"].as_f64().unwrap_or(f64::NAN)
            ));
        }
        tb.row(row);
    }
    tb.render()
}

/// Writes `compare.json`, `regeneration.svg` and one [`write_report`]
/// directory per level into `dir`.
pub fn write_levels_report(
    dir: &Path,
    v: &Value,
    all: &[(Value, Option<share::Sharing>)],
) -> Result<(), Diags> {
    use crate::report::bar_chart;
    std::fs::create_dir_all(dir).map_err(|e| {
        Diags::from(Diagnostic::error(
            crate::diag::Code::E105,
            format!("cannot create `{}`: {e}", dir.display()),
        ))
    })?;
    mgen_util::fs::write_atomic(
        &dir.join("compare.json"),
        serde_json::to_string_pretty(v)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    let bars: Vec<(String, f64)> = v["summary"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                format!("regenerate = {}", s["regenerate"].as_str().unwrap_or("")),
                s["energy_ratio"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    mgen_util::fs::write_atomic(
        &dir.join("regeneration.svg"),
        bar_chart(
            "Energy efficiency (baseline / mgen) by regeneration level",
            "x",
            &bars,
        )
        .as_bytes(),
    )?;
    for (lv, s) in all {
        let name = lv["regenerate"]
            .as_str()
            .unwrap_or("level")
            .replace(' ', "-");
        write_report(&dir.join(name), lv, s.as_ref())?;
    }
    Ok(())
}

/// Writes `compare.json` and SVG charts into `dir` (with the sharing tree
/// when given).
pub fn write_report(dir: &Path, v: &Value, sharing: Option<&share::Sharing>) -> Result<(), Diags> {
    use crate::report::bar_chart;
    std::fs::create_dir_all(dir).map_err(|e| {
        Diags::from(Diagnostic::error(
            crate::diag::Code::E105,
            format!("cannot create `{}`: {e}", dir.display()),
        ))
    })?;
    let w = |name: &str, text: &str| mgen_util::fs::write_atomic(&dir.join(name), text.as_bytes());
    w(
        "compare.json",
        &serde_json::to_string_pretty(v).unwrap_or_default(),
    )?;
    let mut bars = Vec::new();
    if let (Some(bb), Some(mb)) = (
        v["baseline"]["breakdown"].as_object(),
        v["mgen"]["breakdown"].as_object(),
    ) {
        for (k, x) in bb {
            let (a, c) = (
                x.as_f64().unwrap_or(0.0),
                mb.get(k).and_then(|y| y.as_f64()).unwrap_or(0.0),
            );
            if a > 0.0 || c > 0.0 {
                bars.push((format!("{k} (baseline)"), a));
                bars.push((format!("{k} (mgen)"), c));
            }
        }
    }
    w(
        "energy_by_component.svg",
        &bar_chart("Energy by component: baseline vs mgen", "pJ", &bars),
    )?;
    let totals = vec![
        (
            "energy baseline".to_string(),
            v["baseline"]["energy_pj"].as_f64().unwrap_or(0.0),
        ),
        (
            "energy mgen".to_string(),
            v["mgen"]["energy_pj"].as_f64().unwrap_or(0.0),
        ),
    ];
    w(
        "energy_total.svg",
        &bar_chart("Energy over the run", "pJ", &totals),
    )?;
    let layers: Vec<(String, f64)> = v["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["name"].as_str().unwrap_or("").to_string(),
                t["shared_layers"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    w(
        "shared_layers.svg",
        &bar_chart(
            "Encoder layers computed with other tasks",
            "layers",
            &layers,
        ),
    )?;
    if let Some(s) = sharing {
        w("sharing_tree.svg", &share::tree_svg(s))?;
    }
    Ok(())
}
