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
//!
//! A task with a `test` file is also scored on it, against its labels
//! (`held_out`: [`crate::held_out`]): its own model in float, the baseline
//! and mgen on the chip. Those requests decide nothing — not the tree, not
//! the chip rounds, not `holds`.

use crate::data::Label;
use crate::diag::{Diagnostic, Diags, Sources};
use crate::held_out::{HeldOut, TestSets};
use crate::ir::Module;
use crate::label_check::LabelSets;
use crate::passes::{self, share};
use crate::sim::{self, Totals};
use crate::spec::Head;
use crate::weights::Store;
use serde::Serialize;
use std::collections::BTreeMap;
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
    let mut cx = passes::context_for(
        &pl,
        &m,
        store,
        sources,
        progress,
        &crate::backend::energy::Counting,
    )?;
    cx.depth_caps = caps.to_vec();
    cx.share_cache = cache.clone();
    passes::run_pipeline(&mut m, &mut arts, &pl, &cx, |_, _| {})?;
    Ok((m, arts))
}

/// At most this many recompilations when simulated outputs break budgets.
pub const CHIP_ROUNDS: usize = 6;

/// A regeneration level every task is set to by `--regenerate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Level {
    /// Selection only: shared blocks are used as they are.
    None,
    /// Each task head refitted on the shared trunk (embedding tasks: none).
    Head,
    /// Each task's unshared layers and head retrained over the frozen
    /// shared trunk (a task's own `branch(...)` settings, else the defaults).
    Branch,
    /// The shared trunk and every branch trained together for all tasks of
    /// a group (a task's own `joint(...)` settings, else the defaults).
    Joint,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Head => "head",
            Level::Branch => "branch",
            Level::Joint => "joint",
        }
    }

    /// Sets every task of `spec` to this level: `head` leaves embedding
    /// tasks (no classifier) at `none`; `branch` keeps a task's own
    /// `branch(...)` settings and gives the others the defaults.
    pub fn apply(self, spec: &mut crate::spec::Spec) {
        use crate::spec::{BranchOpts, JointOpts, Regenerate};
        for t in &mut spec.tasks {
            t.regenerate = match self {
                Level::None => Regenerate::None,
                Level::Head if matches!(t.head, Head::Embed { .. }) => Regenerate::None,
                Level::Head => Regenerate::Head,
                Level::Branch => {
                    Regenerate::Branch(t.regenerate.branch().unwrap_or(BranchOpts::default()))
                }
                Level::Joint => {
                    Regenerate::Joint(t.regenerate.joint().unwrap_or(JointOpts::default()))
                }
            };
        }
    }
}

// The reports below are written as JSON, text and SVG from the same value.
// Their fields are declared in sorted order: the JSON has always had sorted
// keys (it was built as `serde_json::Value`s), and serde writes a struct's
// fields in declaration order.

/// One side of a comparison (the baseline or mgen): the run's counted
/// figures.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub area_mm2: f64,
    pub breakdown: BTreeMap<String, f64>,
    pub cell_writes: f64,
    /// One request's dependency chain with unlimited resources (ns).
    pub critical_path_ns: f64,
    pub crossbars: u64,
    pub energy_per_request_pj: f64,
    pub energy_pj: f64,
    /// One request, overlapping timing model.
    pub latency_ns: f64,
    pub lifetime_inferences: Option<f64>,
    pub makespan_ns: f64,
    pub phases: u32,
    pub throughput_per_s: f64,
    pub tiles_in_use: u64,
    /// Busy share per resource kind over the makespan (timing model).
    pub utilisation: BTreeMap<String, f64>,
    pub writes_per_cell_per_run: u64,
}

impl From<&Totals> for Side {
    fn from(t: &Totals) -> Side {
        Side {
            area_mm2: t.area_mm2,
            breakdown: t.breakdown.clone(),
            cell_writes: t.cell_writes,
            critical_path_ns: t.timing.critical_path_ns,
            crossbars: t.crossbars,
            energy_per_request_pj: t.energy_per_request_pj(),
            energy_pj: t.energy_pj,
            latency_ns: t.latency_ns,
            lifetime_inferences: t.lifetime_inferences,
            makespan_ns: t.timing.makespan_ns,
            phases: t.phases,
            throughput_per_s: t.timing.throughput_per_s,
            tiles_in_use: t.tiles_in_use,
            utilisation: t.timing.utilisation.clone(),
            writes_per_cell_per_run: t.writes_per_cell_per_run,
        }
    }
}

/// One budget of a task. Without simulation (`--counts-only`) it is the
/// generator's float measurement, and the four optional fields are absent;
/// with simulation they are all present.
#[derive(Debug, Clone, Serialize)]
pub struct Budget {
    /// The baseline's simulated outputs against the task's own float model:
    /// what quantisation alone costs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_simulated: Option<f64>,
    pub bound: f64,
    /// The budget as written.
    pub budget: String,
    /// Whether the generated model holds the budget in float.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub float_holds: Option<bool>,
    /// Whether the budget holds: on the chip when simulated (`on_chip`),
    /// else in float.
    pub holds: bool,
    pub metric: &'static str,
    /// The generated model in float against the task's own float model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mgen_float: Option<f64>,
    /// mgen's simulated outputs against the task's own model simulated on
    /// the same chip.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_chip: Option<f64>,
    /// On a noisy chip: `on_chip` over the chip instances (`on_chip` is
    /// then their `--quantile`, which decides `holds`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noisy: Option<NoisyBudget>,
    /// What `value` measures.
    pub source: &'static str,
    /// mgen's simulated outputs (or, without simulation, the generator's
    /// float outputs) against the task's own float model.
    pub value: f64,
}

/// One budget's on-chip figure over noisy chip instances: mgen on chip
/// `k` against the task's own model (the baseline) on chip `k`.
#[derive(Debug, Clone, Serialize)]
pub struct NoisyBudget {
    pub mean: f64,
    /// On a noise-free chip.
    pub noise_free: f64,
    /// Per instance, in seed order.
    pub per_chip: Vec<f64>,
    /// The `--quantile` from the bad end (the lowest for every budget metric).
    pub quantile: f64,
    pub worst: f64,
}

/// The noise a comparison ran under.
#[derive(Debug, Clone, Serialize)]
pub struct NoiseRun {
    pub chips: usize,
    pub first_seed: u64,
    /// The noise model, one line.
    pub model: String,
    pub quantile: f64,
}

/// Which chips a comparison runs on: instances and the noise model.
pub struct OnChips<'a> {
    pub chips: sim::chips::Chips,
    /// Sets the hardware's noise model (from `--noise`, `--noise-scale`).
    pub set_noise: &'a dyn Fn(&mut crate::hw::Hardware),
}

/// One task of a comparison.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRow {
    /// Blocks of the task's model (embeddings, encoder layers, head).
    pub blocks: usize,
    /// The first budget as written (`None` without budgets).
    pub budget: Option<String>,
    pub budgets: Vec<Budget>,
    /// `classify`, `regress` or `embed`.
    pub head: &'static str,
    /// The task's held-out figures, when it has a `test` file and the
    /// comparison is simulated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_out: Option<HeldOut>,
    /// Every budget holds.
    pub holds: bool,
    /// The first budget's `value`.
    pub metric: Option<f64>,
    pub name: String,
    pub shared_blocks: usize,
    /// Encoder layers computed with other tasks.
    pub shared_layers: usize,
    /// Where the task's shared layers come from (the generator's `source`).
    pub source: String,
}

/// One round of verification on the chip.
#[derive(Debug, Clone, Serialize)]
pub struct ChipRound {
    /// Every task's sharing depth in the round.
    pub depths: Vec<usize>,
    /// The tasks whose simulated outputs broke a budget.
    pub failing: Vec<String>,
    /// Tasks whose own outputs the round's search took from an earlier
    /// round or level instead of computing them (all of them after the
    /// first search of a `compare`).
    pub own_reused: usize,
}

/// The schedule mgen chose, and the candidates it weighed.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleChoice {
    #[serde(serialize_with = "sorted_keys")]
    pub candidates: Vec<passes::schedule::Candidate>,
    #[serde(serialize_with = "sorted_keys")]
    pub chosen: passes::schedule::Candidate,
    pub edram: bool,
    pub group: usize,
    /// The workload's `makespan_tolerance` (percent).
    pub tolerance_pct: f64,
}

/// Serialises `x` with every object's keys in sorted order, as the
/// comparison's JSON has always had them (a type defined elsewhere keeps its
/// own field order).
fn sorted_keys<T: Serialize, S: serde::Serializer>(x: &T, s: S) -> Result<S::Ok, S::Error> {
    serde_json::to_value(x)
        .map_err(serde::ser::Error::custom)?
        .serialize(s)
}

/// `mgen compare`: the baseline against mgen, written as `--json`, text and
/// `--report` from this one value.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub baseline: Side,
    /// Baseline cell writes over mgen's.
    pub cell_write_ratio: f64,
    pub chip_rounds: Vec<ChipRound>,
    /// Baseline energy over mgen's, over the run.
    pub energy_ratio: f64,
    /// The generator's unshared energy over its shared energy, per request,
    /// without programming.
    pub energy_ratio_per_request_no_programming: f64,
    pub file: String,
    pub mgen: Side,
    pub mode: sim::Mode,
    /// The chips' noise (absent on a noise-free chip).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise: Option<NoiseRun>,
    pub notes: Vec<String>,
    /// The `--regenerate` level, or `as written`.
    pub regenerate: &'static str,
    pub requests: usize,
    pub schedule: Option<ScheduleChoice>,
    pub seconds: f64,
    pub seq: usize,
    /// The generator's own time.
    pub share_seconds: f64,
    pub tasks: Vec<TaskRow>,
    /// mgen's sharing analysis and tree (the report's `sharing_tree.svg`).
    #[serde(skip)]
    pub sharing: share::Sharing,
}

/// The baseline's side, computed once.
/// Every task's outputs, workload order.
type Outputs = Vec<ndarray::Array2<f32>>;

struct Baseline {
    pb: crate::sim::Package,
    ob: Option<Vec<ndarray::Array2<f32>>>,
    /// On a noisy chip: the baseline on every instance, and noise-free.
    noisy: Option<(Vec<Outputs>, Outputs)>,
    /// Simulated comparisons with test sets only.
    held: Option<BaselineHeldOut>,
    /// Label budgets checked on labelled calibration inputs (simulated
    /// comparisons whose workload requests carry no labels).
    labels: Option<LabelSets>,
}

/// The test sets, and the held-out figures that do not depend on mgen.
struct BaselineHeldOut {
    sets: TestSets,
    /// Per workload task: its own model in float on its test set.
    own_f32: Vec<Option<f64>>,
    /// Per workload task: the baseline on the chip on its test set.
    chip: Vec<Option<f64>>,
}

/// Runs the comparison.
pub fn compare(
    file: &Path,
    sources: &mut Sources,
    counts_only: bool,
    progress: crate::progress::Mode,
    cache: &share::ShareCache,
    chips: &OnChips,
) -> Result<Comparison, Diags> {
    let mut all = compare_levels(file, sources, counts_only, progress, &[None], cache, chips)?;
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
    cache: &share::ShareCache,
    chips: &OnChips,
) -> Result<Vec<Comparison>, Diags> {
    let f = crate::driver::front(sources, file)?;
    let (mut lowered, store) = crate::driver::module_and_store(f, sources)?;
    (chips.set_noise)(&mut lowered.spec.hardware);
    let batch = crate::data::load(&lowered.spec, sources)?;
    // Test and calibration sets, read once and checked before anything is
    // compiled (a bad file fails fast).
    let wanted = crate::label_check::wanted(&lowered.spec, &batch.requests);
    let (tests, calibrate) = if crate::held_out::any(&lowered.spec) || wanted.contains(&true) {
        let files = crate::data::load_files(&lowered.spec, sources)?;
        let tests = TestSets::from_files(&lowered.spec, files.test);
        (tests, files.calibrate)
    } else {
        (None, Vec::new())
    };
    // One cache for every level and chip round: a branch retrained once is
    // not retrained again (joint trainings are kept in its folder too).
    let (base, base_arts) = compiled(&lowered, "baseline", &store, sources, progress, &[], cache)?;
    let mut pb = crate::backend::program::package(&base, &base_arts, &store, &batch, counts_only)?;
    let noisy_chip = !counts_only && !pb.hw.noise.is_off();
    let (ob, noisy) = if counts_only {
        (None, None)
    } else if noisy_chip {
        let all = sim::chips::simulate_all(&pb, false, &chips.chips, progress)?;
        let clean = sim::simulate_noise_free(&pb, false, progress)?;
        (Some(all[0].clone()), Some((all, clean)))
    } else {
        (Some(sim::simulate(&pb, false, progress)?), None)
    };
    let held = match tests {
        Some(ts) if !counts_only => {
            let own = crate::reference::run(&base, &store, &ts.batch)?;
            let own: Vec<ndarray::Array2<f32>> = own.into_iter().map(|o| o.values).collect();
            let chip =
                crate::held_out::simulate(&mut pb, &ts.batch.requests, chips.chips.seed, progress)?;
            Some(BaselineHeldOut {
                own_f32: ts.score(&lowered.spec, &own),
                chip: ts.score(&lowered.spec, &chip),
                sets: ts,
            })
        }
        _ => None,
    };
    let labels = match counts_only {
        true => None,
        false => LabelSets::build(&wanted, calibrate, &mut pb, chips.chips.seed, progress)?,
    };
    let baseline = Baseline {
        pb,
        ob,
        noisy,
        held,
        labels,
    };
    let mut out = Vec::new();
    for level in levels {
        let mut m = lowered.clone();
        if let Some(l) = level {
            l.apply(&mut m.spec);
        }
        let mut c = compare_one(
            file,
            &m,
            &store,
            &batch,
            &baseline,
            sources,
            counts_only,
            progress,
            cache,
            &chips.chips,
        )?;
        c.regenerate = level.map(|l| l.name()).unwrap_or("as written");
        out.push(c);
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
    chips: &sim::chips::Chips,
) -> Result<Comparison, Diags> {
    let t0 = std::time::Instant::now();
    let (pb, ob) = (&baseline.pb, &baseline.ob);
    let labels: Vec<Option<Label>> = batch.requests.iter().map(|q| q.label).collect();
    let n = lowered.spec.workload.tasks.len();
    // mgen, verified on the chip: a task whose simulated outputs break a
    // budget against its own model simulated on the same chip gets half its
    // sharing depth, and the tree is generated again.
    let mut caps: Vec<Option<usize>> = vec![None; n];
    let mut rounds = Vec::new();
    let mut last_oms: Vec<Vec<ndarray::Array2<f32>>> = Vec::new();
    let mut last_cal: Vec<ndarray::Array2<f32>> = Vec::new();
    let (ours, arts, mut pm, om) = loop {
        let (ours, arts) = compiled(lowered, "default", store, sources, progress, &caps, cache)?;
        let mut pm = crate::backend::program::package(&ours, &arts, store, batch, counts_only)?;
        let Some(ob) = &ob else {
            break (ours, arts, pm, None);
        };
        let oms = match &baseline.noisy {
            Some(_) => sim::chips::simulate_all(&pm, false, chips, progress)?,
            None => vec![sim::simulate(&pm, false, progress)?],
        };
        let obs = match &baseline.noisy {
            Some((all, _)) => all.as_slice(),
            None => std::slice::from_ref(ob),
        };
        let cal = match &baseline.labels {
            Some(ls) => ls.run(&mut pm, chips.seed, progress)?,
            None => Vec::new(),
        };
        let sharing = arts.sharing.as_ref();
        let failing: Vec<usize> = (0..n)
            .filter(|&t| {
                let task = &ours.spec.tasks[ours.spec.workload.tasks[t]];
                task.budgets.iter().any(|b| {
                    match baseline
                        .labels
                        .as_ref()
                        .and_then(|ls| ls.measure(&ours.spec, t, b, &cal))
                    {
                        Some(m) => !m.holds,
                        None => {
                            !holds_on_chips(b, &task.head, t, &oms, obs, &labels, chips.quantile)
                        }
                    }
                })
            })
            .collect();
        last_cal = cal;
        let om = oms[0].clone();
        last_oms = oms;
        let depths: Vec<usize> = (0..n)
            .map(|t| sharing.map(|s| s.tasks[t].depth).unwrap_or(0))
            .collect();
        let names: Vec<String> = ours.task_names().iter().map(|s| s.to_string()).collect();
        rounds.push(ChipRound {
            depths: depths.clone(),
            failing: failing.iter().map(|&t| names[t].clone()).collect(),
            own_reused: sharing.map(|s| s.own_reused).unwrap_or(0),
        });
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
    let passes::Artifacts {
        sharing, schedule, ..
    } = arts;
    let sharing = sharing.ok_or_else(|| {
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
    let om_clean = match &baseline.noisy {
        Some(_) => Some(sim::simulate_noise_free(&pm, false, progress)?),
        None => None,
    };
    let mut tasks = Vec::new();
    let sim_outputs = match (ob.as_ref(), om) {
        (Some(ob), Some(om)) => Some((ob, om)),
        _ => None,
    };
    // mgen's program on the test sets (the final program only).
    let held: Vec<Option<HeldOut>> = match &baseline.held {
        Some(bh) => {
            let ts = &bh.sets;
            let chip =
                crate::held_out::simulate(&mut pm, &ts.batch.requests, chips.seed, progress)?;
            let ours_scores = ts.score(&ours.spec, &chip);
            (0..n)
                .map(|t| {
                    let task = &ours.spec.tasks[ours.spec.workload.tasks[t]];
                    Some(HeldOut {
                        baseline_chip: bh.chip[t]?,
                        metric: crate::held_out::metric_of(&task.head),
                        mgen_chip: ours_scores[t]?,
                        n: ts.ranges[t].as_ref().map_or(0, |r| r.len()),
                        own_f32: bh.own_f32[t]?,
                    })
                })
                .collect()
        }
        None => vec![None; n],
    };
    let mut notes = store.notes.clone();
    if baseline.labels.is_some() {
        notes.push(
            "label budgets (accuracy, pearson) are checked on the chip on each task's labelled calibration inputs (the workload's requests carry no labels); every other budget on the workload's requests".into(),
        );
    }
    if counts_only && crate::held_out::any(&ours.spec) {
        notes.push(
            "held-out `test` sets are scored only when simulated (without --counts-only)".into(),
        );
    }
    for t in 0..n {
        let task = &ours.spec.tasks[ours.spec.workload.tasks[t]];
        let st = &sharing.tasks[t];
        let mut budgets = Vec::new();
        for (bi, b) in task.budgets.iter().enumerate() {
            let on_cal = baseline.labels.as_ref().and_then(|ls| {
                let m = ls.measure(&ours.spec, t, b, &last_cal)?;
                Some((m, ls.measure(&ours.spec, t, b, &ls.baseline)?))
            });
            if let Some((m, base)) = on_cal {
                budgets.push(label_budget(m, base, &st.measured[bi]));
                continue;
            }
            let entry = match (&sim_outputs, &pb.reference, &pm.reference) {
                (Some((ob, om)), Some(own), Some(float_m)) => {
                    let m_sim = share::measure(b, &task.head, &om[t], &own[t], &labels);
                    let b_sim = share::measure(b, &task.head, &ob[t], &own[t], &labels);
                    let m_float = share::measure(b, &task.head, &float_m[t], &own[t], &labels);
                    // The task's own model on the same chip is the baseline's
                    // simulated outputs: the budget on the chip.
                    let chip = share::measure(b, &task.head, &om[t], &ob[t], &labels);
                    let noisy = match (&baseline.noisy, &om_clean) {
                        (Some((obs, ob_clean)), Some(om_clean)) => Some(noisy_budget(
                            b,
                            &task.head,
                            t,
                            &last_oms,
                            obs,
                            (om_clean, ob_clean),
                            &labels,
                            chips,
                        )),
                        _ => None,
                    };
                    let holds = match &baseline.noisy {
                        Some((obs, _)) => holds_on_chips(
                            b,
                            &task.head,
                            t,
                            &last_oms,
                            obs,
                            &labels,
                            chips.quantile,
                        ),
                        None => chip.holds,
                    };
                    Budget {
                        baseline_simulated: Some(b_sim.value),
                        bound: m_sim.bound,
                        budget: m_sim.budget,
                        float_holds: Some(m_float.holds),
                        holds,
                        metric: m_sim.metric,
                        mgen_float: Some(m_float.value),
                        on_chip: Some(noisy.as_ref().map_or(chip.value, |x| x.quantile)),
                        noisy,
                        source: "mgen simulated outputs vs the task's own model simulated on the same chip (on_chip, holds) and vs its own float model (value), workload requests",
                        value: m_sim.value,
                    }
                }
                _ => {
                    let g = &st.measured[bi];
                    Budget {
                        baseline_simulated: None,
                        bound: g.bound,
                        budget: g.budget.clone(),
                        float_holds: None,
                        holds: g.holds,
                        metric: g.metric,
                        mgen_float: None,
                        on_chip: None,
                        noisy: None,
                        source: "generator: float outputs vs the task's own float model, calibration inputs",
                        value: g.value,
                    }
                }
            };
            budgets.push(entry);
        }
        tasks.push(TaskRow {
            blocks: st.blocks,
            budget: budgets.first().map(|b| b.budget.clone()),
            head: match task.head {
                Head::Classify { .. } => "classify",
                Head::Regress { .. } => "regress",
                Head::Embed { .. } => "embed",
            },
            held_out: held[t].clone(),
            holds: budgets.iter().all(|b| b.holds),
            metric: budgets.first().map(|b| b.value),
            name: st.name.clone(),
            shared_blocks: st.shared_blocks,
            shared_layers: layers_of(t),
            source: st.source.clone(),
            budgets,
        });
    }
    let schedule = schedule.map(|s| ScheduleChoice {
        candidates: s.candidates,
        chosen: s.chosen,
        edram: s.edram,
        group: s.group,
        tolerance_pct: s.tolerance_pct,
    });
    Ok(Comparison {
        baseline: Side::from(&tb),
        cell_write_ratio: tb.cell_writes / tm.cell_writes.max(1e-30),
        chip_rounds: rounds,
        energy_ratio: tb.energy_pj / tm.energy_pj.max(1e-30),
        energy_ratio_per_request_no_programming: sharing.unshared_pj / sharing.shared_pj.max(1e-30),
        file: file.display().to_string(),
        mgen: Side::from(&tm),
        mode: if counts_only {
            sim::Mode::Counts
        } else {
            sim::Mode::Functional
        },
        noise: baseline.noisy.as_ref().map(|(all, _)| NoiseRun {
            chips: all.len(),
            first_seed: chips.seed,
            model: pm.hw.noise.describe(),
            quantile: chips.quantile,
        }),
        notes,
        regenerate: "as written",
        requests: r,
        schedule,
        seconds: t0.elapsed().as_secs_f64(),
        seq: batch.seq,
        share_seconds: sharing.seconds,
        tasks,
        sharing,
    })
}

/// A label budget checked on the task's labelled calibration inputs
/// ([`LabelSets`]): mgen's `m` and the baseline's `base` on the chip,
/// the generator's float figure there.
fn label_budget(m: share::Measured, base: share::Measured, float: &share::Measured) -> Budget {
    Budget {
        baseline_simulated: Some(base.value),
        bound: m.bound,
        budget: m.budget,
        float_holds: Some(float.holds),
        holds: m.holds,
        metric: m.metric,
        mgen_float: Some(float.value),
        on_chip: Some(m.value),
        noisy: None,
        source: "the task's labelled calibration requests (the workload's carry no labels): mgen and the baseline simulated on the first chip, scored against the labels (on_chip, holds, value, baseline_simulated); the generator's float figure there (mgen_float)",
        value: m.value,
    }
}

/// Whether budget `b` of task `t` holds on the chips: mgen on chip `k`
/// (`oms[k]`) against the task's own model on chip `k` (`obs[k]`), the
/// margin over the bound at the lower `quantile` over chips (a NaN on any
/// chip fails it).
fn holds_on_chips(
    b: &crate::spec::Budget,
    head: &Head,
    t: usize,
    oms: &[Vec<ndarray::Array2<f32>>],
    obs: &[Vec<ndarray::Array2<f32>>],
    labels: &[Option<Label>],
    quantile: f64,
) -> bool {
    let margins: Vec<f64> = oms
        .iter()
        .zip(obs)
        .map(|(om, ob)| {
            let m = share::measure(b, head, &om[t], &ob[t], labels);
            m.value - m.bound
        })
        .collect();
    let q = mgen_util::stats::low_quantile(&margins, quantile);
    q.is_finite() && q >= -1e-12
}

/// [`NoisyBudget`] of budget `b` of task `t`; `clean` is (mgen, baseline)
/// on a noise-free chip.
#[allow(clippy::too_many_arguments)]
fn noisy_budget(
    b: &crate::spec::Budget,
    head: &Head,
    t: usize,
    oms: &[Vec<ndarray::Array2<f32>>],
    obs: &[Vec<ndarray::Array2<f32>>],
    clean: (&[ndarray::Array2<f32>], &[ndarray::Array2<f32>]),
    labels: &[Option<Label>],
    chips: &sim::chips::Chips,
) -> NoisyBudget {
    let per_chip: Vec<f64> = oms
        .iter()
        .zip(obs)
        .map(|(om, ob)| share::measure(b, head, &om[t], &ob[t], labels).value)
        .collect();
    NoisyBudget {
        mean: per_chip.iter().sum::<f64>() / per_chip.len().max(1) as f64,
        noise_free: share::measure(b, head, &clean.0[t], &clean.1[t], labels).value,
        quantile: mgen_util::stats::low_quantile(&per_chip, chips.quantile),
        worst: mgen_util::stats::low_quantile(&per_chip, 0.0),
        per_chip,
    }
}

/// How a report names its mode in its title line.
fn mode_text(mode: Option<sim::Mode>) -> &'static str {
    if mode == Some(sim::Mode::Counts) {
        "counts only"
    } else {
        "simulated"
    }
}

/// A figure with four decimals, or `-` when it is not finite.
pub(crate) fn fig(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.4}")
    } else {
        "-".into()
    }
}

/// A `[...]` list as the JSON writes it.
fn list<T: Serialize>(x: &[T]) -> String {
    serde_json::to_string(x).unwrap_or_default()
}

/// Creates `dir` for a report.
pub(crate) fn report_dir(dir: &Path) -> Result<(), Diags> {
    std::fs::create_dir_all(dir).map_err(|e| {
        Diags::from(Diagnostic::error(
            crate::diag::Code::E105,
            format!("cannot create `{}`: {e}", dir.display()),
        ))
    })
}

impl Comparison {
    /// The comparison as a side-by-side table.
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let (b, m) = (&self.baseline, &self.mgen);
        let mut o = String::new();
        let _ = writeln!(
            o,
            "compare: {} ({} requests x seq {}, {})",
            self.file,
            self.requests,
            self.seq,
            mode_text(Some(self.mode))
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
        // The ratio is mgen's advantage: baseline / mgen for a cost,
        // mgen / baseline for a rate (throughput), so above 1x is better.
        let ratio_row = |o: &mut String,
                         label: &str,
                         a: f64,
                         c: f64,
                         fmt: &dyn Fn(f64) -> String,
                         rate: bool| {
            let r = if rate {
                c / a.max(1e-30)
            } else {
                a / c.max(1e-30)
            };
            let _ = writeln!(o, "{:<26} {:>16} {:>16} {:>9.3}x", label, fmt(a), fmt(c), r);
        };
        let row = |o: &mut String, label: &str, a: f64, c: f64, fmt: &dyn Fn(f64) -> String| {
            ratio_row(o, label, a, c, fmt, false)
        };
        row(&mut o, "energy (total)", b.energy_pj, m.energy_pj, &sim::si);
        row(
            &mut o,
            "energy per request",
            b.energy_per_request_pj,
            m.energy_per_request_pj,
            &sim::si,
        );
        for (k, &a) in &b.breakdown {
            let c = m.breakdown.get(k).copied().unwrap_or(0.0);
            if a > 0.0 || c > 0.0 {
                row(&mut o, &format!("  {k}"), a, c, &sim::si);
            }
        }
        row(&mut o, "latency", b.latency_ns, m.latency_ns, &sim::time);
        row(&mut o, "makespan", b.makespan_ns, m.makespan_ns, &sim::time);
        ratio_row(
            &mut o,
            "throughput (req/s)",
            b.throughput_per_s,
            m.throughput_per_s,
            &|x| format!("{x:.1}"),
            true,
        );
        row(
            &mut o,
            "critical path (batch)",
            b.critical_path_ns,
            m.critical_path_ns,
            &sim::time,
        );
        let kinds: std::collections::BTreeSet<&String> =
            b.utilisation.keys().chain(m.utilisation.keys()).collect();
        for k in kinds {
            let pct = |x: &Side| {
                format!(
                    "{:.1}%",
                    100.0 * x.utilisation.get(k).copied().unwrap_or(0.0)
                )
            };
            let _ = writeln!(
                o,
                "{:<26} {:>16} {:>16}",
                format!("  busy: {k}"),
                pct(b),
                pct(m)
            );
        }
        let whole = |x: f64| format!("{x:.0}");
        row(
            &mut o,
            "crossbars",
            b.crossbars as f64,
            m.crossbars as f64,
            &whole,
        );
        row(&mut o, "area (mm2)", b.area_mm2, m.area_mm2, &|x| {
            format!("{x:.2}")
        });
        row(&mut o, "phases", b.phases as f64, m.phases as f64, &whole);
        row(&mut o, "cell writes", b.cell_writes, m.cell_writes, &|x| {
            format!("{x:.4e}")
        });
        let life = |x: &Side| match x.lifetime_inferences {
            Some(l) if l.is_finite() => format!("{l:.3e}"),
            _ => "unlimited".into(),
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
            "(ratio: baseline / mgen, throughput mgen / baseline: above 1x mgen is better)\n\nenergy efficiency (baseline / mgen): {:.3}x over the run; {:.3}x per request without programming",
            self.energy_ratio, self.energy_ratio_per_request_no_programming
        );
        o.push('\n');
        o.push_str(&self.task_table());
        if let Some(n) = &self.noise {
            o.push_str(&self.noise_table(n));
        }
        if self.chip_rounds.len() > 1 {
            let _ = writeln!(
                o,
                "\nverified on the chip in {} rounds (a task whose simulated outputs broke a budget got half its sharing depth):",
                self.chip_rounds.len()
            );
            for (i, x) in self.chip_rounds.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "  round {}: depths {}, failing {}; own outputs reused {}/{}",
                    i + 1,
                    list(&x.depths),
                    list(&x.failing),
                    x.own_reused,
                    x.depths.len()
                );
            }
        }
        if self.mode == sim::Mode::Counts {
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
        if self.tasks.iter().any(|t| t.held_out.is_some()) {
            let _ = writeln!(
                o,
                "\nheld out (each task's `test` file, scored against its labels; never used to compile or verify):"
            );
            o.push_str(&self.held_out_table());
            let _ = writeln!(
                o,
                "(own f32: the task's own model in float; base chip: the baseline simulated; mgen chip: mgen's program simulated)"
            );
        }
        if let Some(s) = &self.schedule
            && s.candidates.len() > 1
        {
            let _ = writeln!(o, "\nschedule (capacity-limited: phases are reprogrammed):");
            for x in &s.candidates {
                let _ = writeln!(
                    o,
                    "  {:<30} {:>12.4e} cell writes  {:>14} writes + parking{}",
                    x.name,
                    x.cell_writes,
                    sim::si(x.total_pj),
                    x.timing
                        .map(|t| format!("  makespan {}", sim::time(t.makespan_ns)))
                        .unwrap_or_default()
                );
            }
            let _ = writeln!(
                o,
                "  chosen: {} (the shortest makespan within {}% of the least writes + parking)",
                s.chosen.name, s.tolerance_pct
            );
        }
        for n in &self.notes {
            let _ = writeln!(o, "note: {n}");
        }
        o
    }

    /// The per-task table of [`Comparison::text`]: one row per budget.
    fn task_table(&self) -> String {
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
        // A figure, or `-` when there is none (or it is not finite).
        let num = |x: Option<f64>| match x {
            Some(x) if x.is_finite() => format!("{x:.4}"),
            _ => "-".into(),
        };
        for t in &self.tasks {
            for (i, bd) in t.budgets.iter().enumerate() {
                let mut row = if i == 0 {
                    vec![
                        t.name.clone(),
                        format!("{}/{}", t.shared_layers, t.blocks.saturating_sub(1)),
                        t.source.clone(),
                    ]
                } else {
                    vec![String::new(); 3]
                };
                let budget = bd
                    .budget
                    .trim_start_matches("keep ")
                    .trim_end_matches(';')
                    .to_string();
                let (chip, sim, f32_) = match bd.on_chip {
                    None => ("-".to_string(), "-".to_string(), num(Some(bd.value))),
                    Some(c) => (num(Some(c)), num(Some(bd.value)), num(bd.mgen_float)),
                };
                row.extend([
                    budget,
                    chip,
                    sim,
                    num(bd.baseline_simulated),
                    f32_,
                    if bd.holds { "yes" } else { "NO" }.to_string(),
                ]);
                tb.row(row);
            }
        }
        tb.render()
    }

    /// The noise table of [`Comparison::text`]: each budget's on-chip
    /// figure noise-free and over the chip instances.
    fn noise_table(&self, n: &NoiseRun) -> String {
        use crate::table::{Align, Table};
        let (l, r) = (Align::Left, Align::Right);
        let q = format!("q{}", n.quantile);
        let mut tb = Table::new(&[
            ("task", l),
            ("budget", l),
            ("noise-free", r),
            ("mean", r),
            ("worst", r),
            (q.as_str(), r),
            ("holds", r),
        ])
        .indent(2)
        .gap(2);
        for t in &self.tasks {
            for bd in &t.budgets {
                let Some(x) = &bd.noisy else { continue };
                tb.row(vec![
                    t.name.clone(),
                    bd.budget
                        .trim_start_matches("keep ")
                        .trim_end_matches(';')
                        .to_string(),
                    format!("{:.4}", x.noise_free),
                    format!("{:.4}", x.mean),
                    format!("{:.4}", x.worst),
                    format!("{:.4}", x.quantile),
                    if bd.holds { "yes" } else { "NO" }.to_string(),
                ]);
            }
        }
        format!(
            "\nunder noise ({}) on {} chip(s), seeds {}..{}: on chip, mgen vs the task's own model on the same chip;\n{}  ({q} decides `holds`; the table above shows the first chip, on chip = {q}; energy, latency, area and wear are unchanged by noise)\n",
            n.model,
            n.chips,
            n.first_seed,
            n.first_seed + n.chips.max(1) as u64 - 1,
            tb.render()
        )
    }

    /// The held-out table of [`Comparison::text`]: one row per task with a
    /// `test` file, beside its budgets.
    fn held_out_table(&self) -> String {
        use crate::table::{Align, Table};
        let (l, r) = (Align::Left, Align::Right);
        let mut tb = Table::new(&[
            ("task", l),
            ("metric", l),
            ("n", r),
            ("own f32", r),
            ("base chip", r),
            ("mgen chip", r),
            ("budgets", l),
        ])
        .gap(2);
        for t in &self.tasks {
            let Some(h) = &t.held_out else { continue };
            let budgets: Vec<&str> = t
                .budgets
                .iter()
                .map(|b| b.budget.trim_start_matches("keep ").trim_end_matches(';'))
                .collect();
            tb.row(vec![
                t.name.clone(),
                h.metric.to_string(),
                h.n.to_string(),
                fig(h.own_f32),
                fig(h.baseline_chip),
                fig(h.mgen_chip),
                budgets.join("; "),
            ]);
        }
        tb.render()
    }

    /// Writes `compare.json` and SVG charts into `dir`.
    pub fn write_report(&self, dir: &Path) -> Result<(), Diags> {
        use crate::report::bar_chart;
        report_dir(dir)?;
        let w =
            |name: &str, text: &str| mgen_util::fs::write_atomic(&dir.join(name), text.as_bytes());
        w(
            "compare.json",
            &serde_json::to_string_pretty(self).unwrap_or_default(),
        )?;
        let mut bars = Vec::new();
        for (k, &a) in &self.baseline.breakdown {
            let c = self.mgen.breakdown.get(k).copied().unwrap_or(0.0);
            if a > 0.0 || c > 0.0 {
                bars.push((format!("{k} (baseline)"), a));
                bars.push((format!("{k} (mgen)"), c));
            }
        }
        w(
            "energy_by_component.svg",
            &bar_chart("Energy by component: baseline vs mgen", "pJ", &bars),
        )?;
        let totals = vec![
            ("energy baseline".to_string(), self.baseline.energy_pj),
            ("energy mgen".to_string(), self.mgen.energy_pj),
        ];
        w(
            "energy_total.svg",
            &bar_chart("Energy over the run", "pJ", &totals),
        )?;
        let layers: Vec<(String, f64)> = self
            .tasks
            .iter()
            .map(|t| (t.name.clone(), t.shared_layers as f64))
            .collect();
        w(
            "shared_layers.svg",
            &bar_chart(
                "Encoder layers computed with other tasks",
                "layers",
                &layers,
            ),
        )?;
        let (b, m) = (&self.baseline, &self.mgen);
        let times = vec![
            ("latency baseline".to_string(), b.latency_ns * 1e-3),
            ("latency mgen".to_string(), m.latency_ns * 1e-3),
            ("makespan baseline".to_string(), b.makespan_ns * 1e-3),
            ("makespan mgen".to_string(), m.makespan_ns * 1e-3),
        ];
        w(
            "timing.svg",
            &bar_chart(
                "One request's latency and the batch's makespan (timing model)",
                "us",
                &times,
            ),
        )?;
        w("sharing_tree.svg", &share::tree_svg(&self.sharing))?;
        let mut held = Vec::new();
        for t in &self.tasks {
            if let Some(h) = &t.held_out {
                held.push((format!("{} own f32", t.name), h.own_f32));
                held.push((format!("{} baseline chip", t.name), h.baseline_chip));
                held.push((format!("{} mgen chip", t.name), h.mgen_chip));
            }
        }
        if !held.is_empty() {
            w(
                "held_out.svg",
                &bar_chart(
                    "Held-out accuracy / Pearson against each task's test labels",
                    "",
                    &held,
                ),
            )?;
        }
        Ok(())
    }
}

/// One task at one regeneration level.
#[derive(Debug, Clone, Serialize)]
pub struct LevelTask {
    pub blocks: usize,
    /// The task's held-out figures at this level (see [`TaskRow`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_out: Option<HeldOut>,
    pub holds: bool,
    /// The first budget's value.
    pub metric: Option<f64>,
    pub name: String,
    /// The regeneration the generator used.
    pub regenerate: &'static str,
    pub regeneration_seconds: f64,
    pub shared_layers: usize,
}

/// One regeneration level in brief.
#[derive(Debug, Clone, Serialize)]
pub struct LevelSummary {
    /// Every budget of every task holds.
    pub all_hold: bool,
    pub baseline_crossbars: u64,
    pub crossbars: u64,
    pub energy_ratio: f64,
    pub energy_ratio_per_request_no_programming: f64,
    pub regenerate: &'static str,
    pub seconds: f64,
    pub share_seconds: f64,
    pub tasks: Vec<LevelTask>,
}

impl LevelSummary {
    fn of(c: &Comparison) -> LevelSummary {
        LevelSummary {
            all_hold: c.tasks.iter().all(|t| t.holds),
            baseline_crossbars: c.baseline.crossbars,
            crossbars: c.mgen.crossbars,
            energy_ratio: c.energy_ratio,
            energy_ratio_per_request_no_programming: c.energy_ratio_per_request_no_programming,
            regenerate: c.regenerate,
            seconds: c.seconds,
            share_seconds: c.share_seconds,
            tasks: c
                .tasks
                .iter()
                .zip(&c.sharing.tasks)
                .map(|(t, st)| LevelTask {
                    blocks: t.blocks,
                    held_out: t.held_out.clone(),
                    holds: t.holds,
                    metric: t.metric,
                    name: t.name.clone(),
                    regenerate: st.regenerate,
                    regeneration_seconds: st.regeneration_seconds,
                    shared_layers: t.shared_layers,
                })
                .collect(),
        }
    }
}

/// `mgen compare --regenerate`: one comparison per level, against one
/// baseline, with a summary per level.
#[derive(Debug, Clone, Serialize)]
pub struct Levels {
    pub file: String,
    pub levels: Vec<Comparison>,
    pub mode: Option<sim::Mode>,
    pub summary: Vec<LevelSummary>,
}

impl Levels {
    pub fn new(file: &Path, levels: Vec<Comparison>) -> Levels {
        Levels {
            file: file.display().to_string(),
            mode: levels.first().map(|c| c.mode),
            summary: levels.iter().map(LevelSummary::of).collect(),
            levels,
        }
    }

    /// The per-level comparison as text: a summary table, then the tasks.
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let first = self.levels.first();
        let _ = writeln!(
            o,
            "compare by regeneration level: {} ({} requests x seq {}, {})\n",
            self.file,
            first.map_or("null".into(), |c| c.requests.to_string()),
            first.map_or("null".into(), |c| c.seq.to_string()),
            mode_text(self.mode)
        );
        let _ = writeln!(
            o,
            "{:<12} {:>13} {:>13} {:>17} {:>11} {:>11}",
            "regenerate", "energy ratio", "per request", "crossbars", "budgets", "share time"
        );
        for s in &self.summary {
            let _ = writeln!(
                o,
                "{:<12} {:>12.3}x {:>12.3}x {:>17} {:>11} {:>10.1}s",
                s.regenerate,
                s.energy_ratio,
                s.energy_ratio_per_request_no_programming,
                format!("{} -> {}", s.baseline_crossbars, s.crossbars),
                if s.all_hold { "all hold" } else { "SOME FAIL" },
                s.share_seconds
            );
        }
        let _ = writeln!(
            o,
            "\nper task: encoder layers computed with other tasks / regeneration used / budget holds (first budget's value)"
        );
        o.push_str(&self.task_table());
        if self.mode == Some(sim::Mode::Counts) {
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
        if let Some(table) = self.held_out_table() {
            let _ = writeln!(
                o,
                "\nheld out (each task's `test` file, scored against its labels): own f32, baseline chip, then mgen's program on the chip per level"
            );
            o.push_str(&table);
        }
        o
    }

    /// The held-out table of [`Levels::text`], if any task has a test set:
    /// the level-independent figures, then mgen's per level.
    fn held_out_table(&self) -> Option<String> {
        use crate::table::{Align, Table};
        let first = self.summary.first()?;
        if first.tasks.iter().all(|t| t.held_out.is_none()) {
            return None;
        }
        let mut cols = vec![
            ("task", Align::Left),
            ("metric", Align::Left),
            ("n", Align::Right),
            ("own f32", Align::Right),
            ("base chip", Align::Right),
        ];
        cols.extend(self.summary.iter().map(|s| (s.regenerate, Align::Right)));
        let mut tb = Table::new(&cols).gap(3);
        for (i, t) in first.tasks.iter().enumerate() {
            let Some(h) = &t.held_out else { continue };
            let mut row = vec![
                t.name.clone(),
                h.metric.to_string(),
                h.n.to_string(),
                fig(h.own_f32),
                fig(h.baseline_chip),
            ];
            for s in &self.summary {
                row.push(
                    s.tasks[i]
                        .held_out
                        .as_ref()
                        .map_or("-".into(), |h| fig(h.mgen_chip)),
                );
            }
            tb.row(row);
        }
        Some(tb.render())
    }

    /// The per-task table of [`Levels::text`]: one column per level.
    fn task_table(&self) -> String {
        use crate::table::{Align, Table};
        let mut cols = vec![("task", Align::Left)];
        cols.extend(self.summary.iter().map(|s| (s.regenerate, Align::Right)));
        let mut tb = Table::new(&cols).gap(3);
        let n = self.summary.first().map_or(0, |s| s.tasks.len());
        for i in 0..n {
            let mut row = vec![self.summary[0].tasks[i].name.clone()];
            for s in &self.summary {
                let t = &s.tasks[i];
                row.push(format!(
                    "{}/{} {:<6} {} {:.4}",
                    t.shared_layers,
                    t.blocks.saturating_sub(1),
                    t.regenerate,
                    if t.holds { "yes" } else { "NO" },
                    t.metric.unwrap_or(f64::NAN)
                ));
            }
            tb.row(row);
        }
        tb.render()
    }

    /// Writes `compare.json`, `regeneration.svg` and one
    /// [`Comparison::write_report`] directory per level into `dir`.
    pub fn write_report(&self, dir: &Path) -> Result<(), Diags> {
        use crate::report::bar_chart;
        report_dir(dir)?;
        mgen_util::fs::write_atomic(
            &dir.join("compare.json"),
            serde_json::to_string_pretty(self)
                .unwrap_or_default()
                .as_bytes(),
        )?;
        let bars: Vec<(String, f64)> = self
            .summary
            .iter()
            .map(|s| (format!("regenerate = {}", s.regenerate), s.energy_ratio))
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
        for c in &self.levels {
            c.write_report(&dir.join(c.regenerate.replace(' ', "-")))?;
        }
        Ok(())
    }
}
