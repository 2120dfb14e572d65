//! The pass manager.
//!
//! Passes describe themselves ([`Pass::name`], [`Pass::description`]) and
//! are registered by name in [`registry`]; [`PIPELINES`] names sequences of
//! them. [`run_pipeline`] runs the verifier after every pass, so no pass
//! sees (and codegen never receives) a module that breaks the IR's
//! invariants; it times each pass and can dump the IR after any of them.

pub(crate) use mgen_front::spec;
pub(crate) use mgen_hw as hw;
pub(crate) use mgen_ir as ir;
pub(crate) use mgen_model::{data, forward, reference, train, weights};
pub(crate) use mgen_util::{diag, progress, table};

pub mod area;
pub mod merge;
pub mod place;
pub mod schedule;
pub mod share;

pub use schedule::TimingOracle;
pub use share::EnergyOracle;

/// What the back end answers for the optimiser: energy (for `share`) and
/// timing (for `schedule`). Implemented for every type that answers both.
pub trait Oracle: EnergyOracle + TimingOracle {}
impl<T: EnergyOracle + TimingOracle> Oracle for T {}

/// `place`: see [`place`](mod@crate::place).
pub struct Place;

impl Pass for Place {
    fn name(&self) -> &'static str {
        "place"
    }
    fn description(&self) -> &'static str {
        "tile every static-weight matrix onto crossbars (row blocks x column blocks x bit slices x signs); phases when the chip is too small"
    }
    fn contract(&self) -> &'static str {
        "requires a verified module; ensures every linear node has a placement and no two matrices of one phase share a crossbar"
    }
    fn provides(&self) -> &'static [Artifact] {
        &[Artifact::Placement]
    }
    fn invalidates(&self) -> &'static [Artifact] {
        &[Artifact::Schedule]
    }
    fn run(&self, m: &mut Module, arts: &mut Artifacts, _: &Context) -> Result<(), Diags> {
        arts.placement = Some(crate::place::place(m)?);
        Ok(())
    }
}

use crate::diag::{Code, Diagnostic, Diags};
use crate::ir::{Module, verify};
use std::time::Instant;

/// The results of analyses and passes, kept beside the IR (the [`Module`]
/// itself holds only the graph, its params and the spec).
///
/// Invariant: a result present here describes the module as it is now.
/// [`run_pipeline`] clears what a pass declares it [invalidates]
/// (Pass::invalidates) before running it, and [`verify_artifacts`] checks,
/// after every pass, that no result names a node the module no longer has.
#[derive(Debug, Clone, Default)]
pub struct Artifacts {
    /// Set by `share`: what the model generator chose and measured.
    pub sharing: Option<share::Sharing>,
    /// Set by `place` (or by `area`'s own placement check).
    pub placement: Option<crate::place::Placement>,
    /// Set by `schedule`: request groups and buffer levels codegen follows.
    pub schedule: Option<schedule::Schedule>,
}

/// Checks that every result in `arts` still fits `m`: a placement that
/// does not check, or that names a removed node, is a bug in a pass.
pub fn verify_artifacts(m: &Module, arts: &Artifacts, after: &str) -> Result<(), Diags> {
    let Some(p) = &arts.placement else {
        return Ok(());
    };
    let mut bad = Vec::new();
    if let Err(e) = p.check() {
        bad.push(format!("placement: {e}"));
    }
    for q in &p.matrices {
        if !m.graph.contains_node(q.node.0) {
            bad.push(format!("placement names a removed node {}", q.node_name));
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    Err(Diags(
        bad.into_iter()
            .map(|msg| {
                Diagnostic::error(
                    Code::E103,
                    format!("IR invariant broken after {after}: {msg}"),
                )
                .note("this is a bug in mgen, not a problem with your input")
            })
            .collect(),
    ))
}

/// A pass result kept beside the IR (in [`Artifacts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artifact {
    /// The model generator's tree and measurements (`share`).
    Sharing,
    /// Crossbar placement (`place`).
    Placement,
    /// The task schedule (`schedule`).
    Schedule,
}

impl Artifact {
    pub fn name(self) -> &'static str {
        match self {
            Artifact::Sharing => "sharing",
            Artifact::Placement => "placement",
            Artifact::Schedule => "schedule",
        }
    }
    /// The pass that provides it.
    fn provider(self) -> &'static str {
        match self {
            Artifact::Sharing => "share",
            Artifact::Placement => "place",
            Artifact::Schedule => "schedule",
        }
    }
    /// Drops it from `arts`: a pass changed what it describes.
    fn clear(self, arts: &mut Artifacts) {
        match self {
            Artifact::Sharing => arts.sharing = None,
            Artifact::Placement => arts.placement = None,
            Artifact::Schedule => arts.schedule = None,
        }
    }
}

/// A transformation of a [`Module`].
///
/// A pass declares the results it needs ([`requires`](Pass::requires)),
/// makes ([`provides`](Pass::provides)) and makes stale
/// ([`invalidates`](Pass::invalidates)); [`resolve`] refuses a pipeline in
/// which a pass needs what no earlier pass provides (E106), and
/// [`run_pipeline`] drops what a pass invalidated, so no later stage reads a
/// placement or schedule of nodes that no longer exist.
pub trait Pass {
    fn name(&self) -> &'static str;
    fn description(&self) -> &'static str;
    /// What the pass requires and ensures (shown by `mgen passes`).
    fn contract(&self) -> &'static str {
        ""
    }
    fn requires(&self) -> &'static [Artifact] {
        &[]
    }
    fn provides(&self) -> &'static [Artifact] {
        &[]
    }
    fn invalidates(&self) -> &'static [Artifact] {
        &[]
    }
    fn run(&self, m: &mut Module, arts: &mut Artifacts, cx: &Context) -> Result<(), Diags>;
}

/// What passes may read besides the module: the weights and each task's
/// calibration inputs (the `share` pass measures candidate models on them).
#[derive(Default)]
pub struct Context<'a> {
    pub store: Option<&'a crate::weights::Store>,
    /// Per workload task: the inputs its budgets are checked on.
    pub calibration: Vec<crate::data::Batch>,
    /// Progress bars on stderr.
    pub progress: crate::progress::Mode,
    /// Per workload task, the deepest sharing `share` may choose (set by
    /// `mgen compare` when a task's simulated outputs break its budget).
    pub depth_caps: Vec<Option<usize>>,
    /// Per workload task: its training inputs when it asks for
    /// regeneration (`regenerate = head`), else `None`.
    pub training: Vec<Option<crate::data::Batch>>,
    /// Branches `share` retrained, kept across pipeline runs by a driver
    /// that reruns it (`mgen compare`'s chip rounds); fresh by default.
    pub share_cache: share::ShareCache,
    /// What a candidate costs, for `share` (the back end's counting model).
    pub energy: Option<&'a dyn EnergyOracle>,
    /// How long a schedule takes, for `schedule` (the back end's timing
    /// model); without it, the scheduler weighs energy alone.
    pub timing: Option<&'a dyn TimingOracle>,
}

/// Synthetic training inputs of a task with `regenerate = head` and no
/// `train` file: this many requests from `synthetic(seed = S)` (S given, or
/// derived from the task's name).
pub const TRAIN_REQUESTS: usize = crate::data::TRAIN_REQUESTS;
/// The same for `regenerate = branch` ([`crate::data::BRANCH_TRAIN_REQUESTS`]).
pub const BRANCH_TRAIN_REQUESTS: usize = crate::data::BRANCH_TRAIN_REQUESTS;
/// At most this many requests of a `train` file are used.
pub const TRAIN_FILE_REQUESTS: usize = crate::data::TRAIN_FILE_REQUESTS;

/// The context a pipeline needs: calibration inputs are loaded only when
/// it runs `share`; `oracle` answers what a candidate costs and how long a
/// schedule takes.
pub fn context_for<'a>(
    passes: &[Box<dyn Pass>],
    m: &Module,
    store: &'a crate::weights::Store,
    sources: &mut crate::diag::Sources,
    progress: crate::progress::Mode,
    oracle: &'a dyn Oracle,
) -> Result<Context<'a>, Diags> {
    if passes.iter().any(|p| p.name() == "share") {
        Context::load(m, store, sources, progress, oracle)
    } else {
        Ok(Context {
            store: Some(store),
            calibration: Vec::new(),
            progress,
            depth_caps: Vec::new(),
            training: Vec::new(),
            share_cache: Default::default(),
            energy: Some(oracle),
            timing: Some(oracle),
        })
    }
}

/// At most this many requests of the workload's inputs are the calibration
/// inputs the `share` pass measures budgets on (for tasks without a
/// `calibrate` file).
pub const SHARE_CALIBRATION_REQUESTS: usize = crate::data::SHARE_CALIBRATION_REQUESTS;
/// At most this many requests of a task's `calibrate` file are used: a file
/// is chosen for the purpose, and more requests make a budget less noisy
/// (at a proportional search cost).
pub const CALIBRATE_FILE_REQUESTS: usize = crate::data::CALIBRATE_FILE_REQUESTS;

impl<'a> Context<'a> {
    /// The context of a module: its weights, and each task's calibration
    /// inputs (its `calibrate` file, at most [`CALIBRATE_FILE_REQUESTS`], or
    /// the workload's first [`SHARE_CALIBRATION_REQUESTS`]).
    pub fn load(
        m: &Module,
        store: &'a crate::weights::Store,
        sources: &mut crate::diag::Sources,
        progress: crate::progress::Mode,
        oracle: &'a dyn Oracle,
    ) -> Result<Context<'a>, Diags> {
        let spec = &m.spec;
        // Every inputs file, read once and checked as `mgen check` does.
        let files = crate::data::load_files(spec, sources)?;
        let seq = spec.workload.seq as usize;
        let mut workload = files.workload;
        workload.requests.truncate(SHARE_CALIBRATION_REQUESTS);
        let calibration = files
            .calibrate
            .into_iter()
            .map(|c| match c {
                None => workload.clone(),
                Some(requests) => crate::data::Batch { seq, requests },
            })
            .collect();
        let mut training = Vec::new();
        for (&t, file) in spec.workload.tasks.iter().zip(files.train) {
            let task = &spec.tasks[t];
            if task.regenerate == crate::spec::Regenerate::None {
                training.push(None);
                continue;
            }
            let requests = match file {
                Some(reqs) => reqs,
                None => crate::data::synthetic_training(spec, t).unwrap_or_default(),
            };
            training.push(Some(crate::data::Batch { seq, requests }));
        }
        Ok(Context {
            store: Some(store),
            calibration,
            progress,
            depth_caps: Vec::new(),
            training,
            share_cache: Default::default(),
            energy: Some(oracle),
            timing: Some(oracle),
        })
    }
}

/// Runs the verifier as a pass.
pub struct Verify;

impl Pass for Verify {
    fn name(&self) -> &'static str {
        "verify"
    }
    fn description(&self) -> &'static str {
        "check the IR's invariants (acyclic, shapes agree, operands defined, locations present, one output per task)"
    }
    fn run(&self, m: &mut Module, arts: &mut Artifacts, _: &Context) -> Result<(), Diags> {
        verify::verify(m, "verify")?;
        verify_artifacts(m, arts, "verify")
    }
}

/// Every pass, by name.
pub fn registry() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(Verify),
        Box::new(merge::Merge),
        Box::new(share::Share),
        Box::new(Place),
        Box::new(schedule::SchedulePass),
    ]
}

/// Named pipelines: name, passes, description.
pub const PIPELINES: &[(&str, &[&str], &str)] = &[
    (
        "default",
        &["merge", "share", "place", "schedule"],
        "what `mgen compile` and `mgen run` run: exact merging, the model generator (sharing under each task's budget), placement, the task scheduler",
    ),
    (
        "exact",
        &["merge", "place", "schedule"],
        "only the optimisations that keep every output bit-identical, then placement and the task scheduler",
    ),
    (
        "baseline",
        &["place"],
        "nothing shared: every task runs its own full model, tasks in declaration order, all requests through each phase (`--baseline`)",
    ),
    ("none", &[], "lowering only"),
];

/// Resolves `--passes LIST` (comma-separated pass names, or one pipeline
/// name) into passes.
pub fn resolve(list: &str) -> Result<Vec<Box<dyn Pass>>, Diags> {
    let list = list.trim();
    if let Some((_, passes, _)) = PIPELINES.iter().find(|(n, _, _)| *n == list) {
        return resolve(&passes.join(","));
    }
    let mut out: Vec<Box<dyn Pass>> = Vec::new();
    let mut diags = Diags::default();
    let mut names: Vec<&str> = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match PIPELINES.iter().find(|(n, _, _)| *n == name) {
            Some((_, passes, _)) => names.extend(passes.iter()),
            None => names.push(name),
        }
    }
    for name in names {
        match registry().into_iter().find(|p| p.name() == name) {
            Some(p) => out.push(p),
            None => {
                let mut known: Vec<&str> = registry().iter().map(|p| p.name()).collect();
                known.extend(PIPELINES.iter().map(|p| p.0));
                let mut d = Diagnostic::error(Code::E104, format!("unknown pass `{name}`"));
                d = match crate::spec::check::suggest(name, &known) {
                    Some(s) => d.help(format!("did you mean `{s}`?")),
                    None => d.note(format!("passes and pipelines: {}", known.join(", "))),
                };
                diags.push(d.help("`mgen passes` lists them"));
            }
        }
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    check_order(&out)?;
    Ok(out)
}

/// Refuses a pipeline in which a pass requires a result that no earlier
/// pass provides (or that a pass in between invalidated).
fn check_order(passes: &[Box<dyn Pass>]) -> Result<(), Diags> {
    let mut have: Vec<Artifact> = Vec::new();
    for (i, p) in passes.iter().enumerate() {
        if let Some(&a) = p.requires().iter().find(|a| !have.contains(a)) {
            let names: Vec<&str> = passes.iter().map(|p| p.name()).collect();
            let mut fixed: Vec<&str> = names[..i].to_vec();
            fixed.push(a.provider());
            fixed.extend(&names[i..]);
            return Err(Diagnostic::error(
                Code::E106,
                format!(
                    "pass `{}` needs a {}, which no earlier pass in `{}` provides",
                    p.name(),
                    a.name(),
                    names.join(",")
                ),
            )
            .help(format!(
                "run `{}` before it, e.g. `--passes {}`",
                a.provider(),
                fixed.join(",")
            ))
            .into());
        }
        have.retain(|a| !p.invalidates().contains(a));
        for a in p.provides() {
            if !have.contains(a) {
                have.push(*a);
            }
        }
    }
    Ok(())
}

/// Checks a `--dump-ir-after` name: a pass name or `all`.
pub fn check_dump_name(name: &str) -> Result<(), Diags> {
    if name == "all" || registry().iter().any(|p| p.name() == name) {
        return Ok(());
    }
    let known: Vec<&str> = registry().iter().map(|p| p.name()).collect();
    Err(Diagnostic::error(
        Code::E104,
        format!("unknown pass `{name}` for --dump-ir-after"),
    )
    .note(format!("passes: {}, or `all`", known.join(", ")))
    .into())
}

/// What happened in one pass, for `-v`.
#[derive(Debug, Clone)]
pub struct PassTiming {
    pub name: &'static str,
    pub seconds: f64,
    pub nodes_before: usize,
    pub nodes_after: usize,
}

/// Runs `passes` in order on `m`, keeping their results in `arts`,
/// verifying both after each; `dump` is called with the pass name and
/// module after each pass.
pub fn run_pipeline(
    m: &mut Module,
    arts: &mut Artifacts,
    passes: &[Box<dyn Pass>],
    cx: &Context,
    mut dump: impl FnMut(&str, &Module),
) -> Result<Vec<PassTiming>, Diags> {
    let mut timings = Vec::new();
    for p in passes {
        let before = m.graph.node_count();
        let t = Instant::now();
        for a in p.invalidates() {
            a.clear(arts);
        }
        p.run(m, arts, cx)?;
        let seconds = t.elapsed().as_secs_f64();
        let after = format!("pass `{}`", p.name());
        verify::verify(m, &after)?;
        verify_artifacts(m, arts, &after)?;
        timings.push(PassTiming {
            name: p.name(),
            seconds,
            nodes_before: before,
            nodes_after: m.graph.node_count(),
        });
        dump(p.name(), m);
    }
    Ok(timings)
}
