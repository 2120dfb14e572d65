//! The checked specification: what a `.mgen` file means.
//!
//! [`check::check`] turns an AST into a [`Spec`] or diagnostics. Invariants
//! of a `Spec`: names are unique; every task's base is a model of the spec;
//! the workload names at least one task, each once; every size is within the
//! limits in [`limits`] (so lowering and weight generation never allocate
//! absurd amounts); `seq <= max_seq` for every task's model; budgets fit
//! their task's head. [`Spec::to_mgen`] prints it back as canonical `.mgen`
//! text with every default explicit (the header of a `.mir` file).

pub mod check;

use crate::diag::FileId;
use crate::hw::Hardware;
use crate::syntax::ast::quote;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::ops::Range;

/// Size limits checked before anything is allocated.
pub mod limits {
    /// Parameters of one model (about 16 GiB of f32).
    pub const MAX_PARAMS: u128 = 1 << 32;
    /// Elements of the largest activation of one request.
    pub const MAX_ACTIVATION: u128 = 1 << 31;
    /// Weights held at once: every base model the workload uses plus each
    /// of its tasks' own copy (3 × 2^30 elements, 12 GiB of f32, which
    /// leaves room on a 24 GiB machine for the search's activations).
    pub const MAX_TOTAL_PARAMS: u128 = 3 << 30;
    pub const MAX_REQUESTS: u64 = 1_000_000;
    pub const MAX_LAYERS: u64 = 1024;
    pub const MAX_HIDDEN: u64 = 65_536;
    pub const MAX_FFN: u64 = 262_144;
    pub const MAX_VOCAB: u64 = 1 << 24;
    pub const MAX_SEQ: u64 = 65_536;
    pub const MAX_CLASSES: u64 = 1_000_000;
}

/// A place in a source file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Loc {
    pub file: FileId,
    pub span: Range<usize>,
}

/// The whole checked file.
#[derive(Debug, Clone, Serialize)]
pub struct Spec {
    pub hardware: Hardware,
    pub models: Vec<Model>,
    pub tasks: Vec<Task>,
    pub workload: Workload,
    /// The directory relative paths (weights, inputs) are resolved against.
    pub root: String,
    /// Where each declaration and each attribute was written, keyed by
    /// `"kind name"` and `"kind name.attribute"` (e.g. `"task sst2.weights"`).
    #[serde(skip)]
    pub locs: BTreeMap<String, Loc>,
}

/// Where a model's or task's weights come from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum WeightSource {
    /// Deterministic BERT-like initialisation from a seed (models).
    Synthetic { seed: u64 },
    /// The base plus a depth-graded sparse delta (tasks).
    Finetuned { seed: u64, drift: f64 },
    /// A safetensors file, relative to the spec's root.
    File { path: String },
}

/// A BERT encoder declaration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Model {
    pub name: String,
    pub layers: u64,
    pub hidden: u64,
    pub heads: u64,
    pub ffn: u64,
    pub vocab: u64,
    pub max_seq: u64,
    pub type_vocab: u64,
    pub layer_norm_eps: f64,
    pub weights: WeightSource,
}

impl Model {
    /// Parameters of the encoder, embeddings and pooler.
    pub fn params(&self) -> u128 {
        let h = self.hidden as u128;
        let f = self.ffn as u128;
        let emb = (self.vocab + self.max_seq + self.type_vocab) as u128 * h + 2 * h;
        let layer = 4 * h * h + 4 * h + 2 * h * f + f + h + 4 * h;
        emb + self.layers as u128 * layer + h * h + h
    }
}

/// Pooling of the last hidden states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    /// The `[CLS]` position.
    Cls,
    /// The masked mean over positions.
    Mean,
}

impl Pool {
    pub fn name(self) -> &'static str {
        match self {
            Pool::Cls => "cls",
            Pool::Mean => "mean",
        }
    }
}

/// What a task outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Head {
    Classify { classes: u64, pool: Pool },
    Regress { pool: Pool },
    Embed { pool: Pool },
}

impl Head {
    /// Width of the task's output row.
    pub fn width(&self, hidden: u64) -> u64 {
        match self {
            Head::Classify { classes, .. } => *classes,
            Head::Regress { .. } => 1,
            Head::Embed { .. } => hidden,
        }
    }
    pub fn pool(&self) -> Pool {
        match self {
            Head::Classify { pool, .. } | Head::Regress { pool } | Head::Embed { pool } => *pool,
        }
    }
}

/// A budget metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Agreement,
    Cosine,
    Accuracy,
    Pearson,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Agreement => "agreement",
            Metric::Cosine => "cosine",
            Metric::Accuracy => "accuracy",
            Metric::Pearson => "pearson",
        }
    }
}

/// `keep METRIC >= BOUND`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Budget {
    pub metric: Metric,
    /// As written: percentage points for agreement and accuracy, a plain
    /// number for cosine and pearson.
    pub value: f64,
    /// `reference - value` (accuracy, pearson) rather than an absolute bound.
    pub relative: bool,
    /// True when the task declared no budget and this default applies.
    pub default: bool,
}

impl Budget {
    /// The bound as a fraction / plain number (99% → 0.99).
    pub fn amount(&self) -> f64 {
        match self.metric {
            Metric::Agreement | Metric::Accuracy => self.value / 100.0,
            Metric::Cosine | Metric::Pearson => self.value,
        }
    }

    pub fn to_mgen(&self) -> String {
        let v = match self.metric {
            Metric::Agreement | Metric::Accuracy => format!("{}%", self.value),
            _ => format!("{}", self.value),
        };
        if self.relative {
            format!("keep {} >= reference - {v};", self.metric.name())
        } else {
            format!("keep {} >= {v};", self.metric.name())
        }
    }
}

/// A fine-tuned task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Task {
    pub name: String,
    /// Index into [`Spec::models`].
    pub base: usize,
    pub head: Head,
    pub weights: WeightSource,
    pub budgets: Vec<Budget>,
    pub calibrate: Option<String>,
    /// What the model generator may re-generate of this task when it
    /// shares (`regenerate = none | head;`).
    pub regenerate: Regenerate,
    /// Training inputs for regeneration (`train = "FILE.jsonl"` or
    /// `synthetic(seed = S)`); never the `calibrate` set.
    pub train: Option<InputSource>,
    /// A labelled held-out set (`test = "FILE.jsonl"`), disjoint from the
    /// `train` and `calibrate` inputs: `mgen compare` scores the task's
    /// own model, the baseline and mgen's program on it. Never on an
    /// `embed` task (no labels to score).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
}

/// Regeneration levels (docs/sharing.md, "Regeneration").
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Regenerate {
    /// Selection only: shared blocks are used as they are.
    #[default]
    None,
    /// The task head is refitted (ridge regression, distilled from the
    /// task's own model) on the features of each candidate model.
    Head,
    /// The task's unshared layers and head are retrained over the frozen
    /// shared trunk (`mgen::train`); a head refit is tried first.
    Branch(BranchOpts),
    /// The shared trunk and every task's branch above it are trained
    /// together for all the tasks of a group (`mgen_train`); a head refit
    /// is tried first, as for `head`.
    Joint(JointOpts),
}

impl Regenerate {
    pub fn name(self) -> &'static str {
        match self {
            Regenerate::None => "none",
            Regenerate::Head => "head",
            Regenerate::Branch(_) => "branch",
            Regenerate::Joint(_) => "joint",
        }
    }

    /// Whether the head may be refitted (`head`, and `branch` before it
    /// retrains).
    pub fn refits_head(self) -> bool {
        !matches!(self, Regenerate::None)
    }

    /// The branch-training settings, for `branch`.
    pub fn branch(self) -> Option<BranchOpts> {
        match self {
            Regenerate::Branch(o) => Some(o),
            _ => None,
        }
    }

    /// The joint-training settings, for `joint`.
    pub fn joint(self) -> Option<JointOpts> {
        match self {
            Regenerate::Joint(o) => Some(o),
            _ => None,
        }
    }

    /// The `.mgen` form of the value.
    pub fn to_mgen(self) -> String {
        match self {
            Regenerate::Joint(o) if o != JointOpts::default() => format!(
                "joint(epochs = {}, lr = {}, batch = {}, labels = {}, temperature = {}, trials = {}, max_minutes = {}{})",
                o.epochs,
                o.lr,
                o.batch,
                o.labels,
                o.temperature,
                o.trials,
                o.max_minutes,
                match o.layers {
                    0 => String::new(),
                    k => format!(", layers = {k}"),
                }
            ),
            Regenerate::Branch(o) if o != BranchOpts::default() => format!(
                "branch(epochs = {}, lr = {}, batch = {}, labels = {}, temperature = {}, trials = {})",
                o.epochs, o.lr, o.batch, o.labels, o.temperature, o.trials
            ),
            r => r.name().to_string(),
        }
    }
}

/// Settings of branch retraining: `regenerate = branch(epochs = E, lr = X,
/// batch = B, labels = A, temperature = T, trials = N);` (every argument
/// optional; see docs/sharing.md).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BranchOpts {
    /// Passes over the training inputs per retraining.
    pub epochs: u32,
    /// Peak AdamW learning rate.
    pub lr: f64,
    /// Requests per mini-batch.
    pub batch: u32,
    /// Weight of the label loss (0 = distillation only).
    pub labels: f64,
    /// Distillation temperature (classifiers).
    pub temperature: f64,
    /// At most this many retrainings while searching deeper sharing (a
    /// deterministic budget: a wall-clock one would make results depend on
    /// the machine).
    pub trials: u32,
}

/// Settings of joint regeneration: `regenerate = joint(epochs = E, lr = X,
/// batch = B, labels = A, temperature = T, trials = N, max_minutes = M,
/// layers = K);`
/// (every argument optional; see docs/sharing.md, "Joint regeneration").
/// The tasks of one base model that ask for `joint` train together, so
/// they must agree on these settings (E017 otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct JointOpts {
    /// Passes over the largest training set per joint training.
    pub epochs: u32,
    /// Peak AdamW learning rate.
    pub lr: f64,
    /// Requests per mini-batch, per task.
    pub batch: u32,
    /// Weight of the label loss on requests that carry a label (the rest
    /// is distillation from the task's own model).
    pub labels: f64,
    /// Distillation temperature (classifiers).
    pub temperature: f64,
    /// At most this many joint trainings per group while searching the
    /// trunk depth (deterministic).
    pub trials: u32,
    /// A wall-clock budget per training in minutes (0 = none). When it
    /// binds the report says so, and the result depends on the machine.
    pub max_minutes: f64,
    /// The trunk's encoder layers, fixed (0 = searched): one training at
    /// that depth instead of the bisection, for trade-off sweeps.
    pub layers: u32,
}

impl Default for JointOpts {
    fn default() -> Self {
        JointOpts {
            epochs: 2,
            lr: 1e-4,
            batch: 16,
            labels: 0.5,
            temperature: 2.0,
            trials: 4,
            max_minutes: 0.0,
            layers: 0,
        }
    }
}

impl Default for BranchOpts {
    fn default() -> Self {
        BranchOpts {
            epochs: 4,
            lr: 1e-4,
            batch: 8,
            labels: 0.0,
            temperature: 2.0,
            trials: 4,
        }
    }
}

/// Where the workload's requests come from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum InputSource {
    Synthetic { seed: u64 },
    File { path: String },
}

/// The batch of requests every task serves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workload {
    pub name: String,
    pub requests: u64,
    pub seq: u64,
    pub inputs: InputSource,
    /// Indices into [`Spec::tasks`], in the order written.
    pub tasks: Vec<usize>,
    /// Area mode (`area = delta(bits = N);`): a task's own matrices are
    /// stored as the base's matrix (shared) plus an `N`-bit delta.
    pub area: Option<AreaMode>,
    /// The task scheduler picks the shortest makespan among the orders
    /// whose scheduling energy (cell writes plus parking) is at most this
    /// many percent above the least (`makespan_tolerance = 1%`, the
    /// default [`DEFAULT_MAKESPAN_TOLERANCE_PCT`]).
    pub makespan_tolerance_pct: f64,
}

/// The default `makespan_tolerance`, in percent.
pub const DEFAULT_MAKESPAN_TOLERANCE_PCT: f64 = 1.0;

/// How the model generator trades energy for crossbars (see
/// docs/sharing.md, "Area mode").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AreaMode {
    /// Bits per delta weight (2 ..= the hardware's `weight_bits`).
    pub delta_bits: u32,
}

impl Spec {
    /// The model a task is fine-tuned from.
    pub fn base_of(&self, task: usize) -> &Model {
        &self.models[self.tasks[task].base]
    }

    /// The location of a declaration or attribute (see [`Spec::locs`]).
    pub fn loc(&self, key: &str) -> Option<&Loc> {
        self.locs.get(key)
    }

    /// Canonical `.mgen` text: every item, every attribute explicit.
    pub fn to_mgen(&self) -> String {
        let mut s = String::new();
        let h = &self.hardware;
        let _ = writeln!(s, "hardware {} {{", h.name);
        let _ = writeln!(s, "    crossbar = {} x {};", h.rows, h.cols);
        let _ = writeln!(s, "    cell_bits = {};", h.cell_bits);
        let _ = writeln!(s, "    weight_bits = {};", h.weight_bits);
        let _ = writeln!(s, "    input_bits = {};", h.input_bits);
        let _ = writeln!(s, "    dac_bits = {};", h.dac_bits);
        let _ = writeln!(s, "    adc_bits = {};", h.adc_bits);
        let _ = writeln!(s, "    signs = {};", h.signs.name());
        let _ = writeln!(
            s,
            "    chips = {}; tiles = {}; cores_per_tile = {}; crossbars_per_core = {};",
            h.chips, h.tiles, h.cores_per_tile, h.crossbars_per_core
        );
        if let Some(a) = h.adcs_per_core {
            let _ = writeln!(s, "    adcs_per_core = {a};");
        }
        let _ = writeln!(
            s,
            "    tile_buffer = {} B; core_buffer = {} B;",
            h.tile_buffer, h.core_buffer
        );
        let _ = writeln!(s, "    endurance = {};", h.endurance);
        let energy: Vec<_> = h
            .overrides
            .iter()
            .filter(|(k, _)| {
                crate::hw::energy::entry(k).map(|e| e.kind) == Some(crate::hw::energy::Kind::Energy)
            })
            .collect();
        if !energy.is_empty() {
            let _ = write!(s, "    energy {{");
            for (k, v) in energy {
                let _ = write!(s, " {k} = {v} pJ;");
            }
            let _ = writeln!(s, " }}");
        }
        let timing: Vec<_> = h
            .overrides
            .iter()
            .filter(|(k, _)| {
                crate::hw::energy::entry(k).map(|e| e.kind) == Some(crate::hw::energy::Kind::Time)
            })
            .collect();
        if !timing.is_empty() {
            let _ = write!(s, "    timing {{");
            for (k, v) in timing {
                let _ = write!(s, " {k} = {v} ns;");
            }
            let _ = writeln!(s, " }}");
        }
        let _ = writeln!(s, "}}");
        for m in &self.models {
            let _ = writeln!(s, "model {} {{", m.name);
            let _ = writeln!(
                s,
                "    layers = {}; hidden = {}; heads = {}; ffn = {}; vocab = {}; max_seq = {};",
                m.layers, m.hidden, m.heads, m.ffn, m.vocab, m.max_seq
            );
            let _ = writeln!(
                s,
                "    type_vocab = {}; layer_norm_eps = {:e};",
                m.type_vocab, m.layer_norm_eps
            );
            let _ = writeln!(s, "    weights = {};", weights_to_mgen(&m.weights));
            let _ = writeln!(s, "}}");
        }
        for t in &self.tasks {
            let _ = writeln!(s, "task {} {{", t.name);
            let _ = writeln!(s, "    base = {};", self.models[t.base].name);
            let head = match t.head {
                Head::Classify { classes, pool } => {
                    format!("classify({classes}, pool = {})", pool.name())
                }
                Head::Regress { pool } => format!("regress(pool = {})", pool.name()),
                Head::Embed { pool } => format!("embed({})", pool.name()),
            };
            let _ = writeln!(s, "    head = {head};");
            let _ = writeln!(s, "    weights = {};", weights_to_mgen(&t.weights));
            // A default budget is implied by the head: written out it would
            // read back as an explicit one.
            for b in t.budgets.iter().filter(|b| !b.default) {
                let _ = writeln!(s, "    {}", b.to_mgen());
            }
            if t.regenerate != Regenerate::None {
                let _ = writeln!(s, "    regenerate = {};", t.regenerate.to_mgen());
            }
            match &t.train {
                Some(InputSource::Synthetic { seed }) => {
                    let _ = writeln!(s, "    train = synthetic(seed = {seed});");
                }
                Some(InputSource::File { path }) => {
                    let _ = writeln!(s, "    train = {};", quote(path));
                }
                None => {}
            }
            if let Some(c) = &t.calibrate {
                let _ = writeln!(s, "    calibrate = {};", quote(c));
            }
            if let Some(c) = &t.test {
                let _ = writeln!(s, "    test = {};", quote(c));
            }
            let _ = writeln!(s, "}}");
        }
        let w = &self.workload;
        let _ = writeln!(s, "workload {} {{", w.name);
        let _ = writeln!(s, "    requests = {}; seq = {};", w.requests, w.seq);
        let inputs = match &w.inputs {
            InputSource::Synthetic { seed } => format!("synthetic(seed = {seed})"),
            InputSource::File { path } => quote(path),
        };
        let _ = writeln!(s, "    inputs = {inputs};");
        let names: Vec<_> = w
            .tasks
            .iter()
            .map(|&t| self.tasks[t].name.as_str())
            .collect();
        let _ = writeln!(s, "    tasks = [{}];", names.join(", "));
        if let Some(a) = w.area {
            let _ = writeln!(s, "    area = delta(bits = {});", a.delta_bits);
        }
        if w.makespan_tolerance_pct != DEFAULT_MAKESPAN_TOLERANCE_PCT {
            let _ = writeln!(s, "    makespan_tolerance = {}%;", w.makespan_tolerance_pct);
        }
        let _ = writeln!(s, "}}");
        s
    }
}

fn weights_to_mgen(w: &WeightSource) -> String {
    match w {
        WeightSource::Synthetic { seed } => format!("synthetic(seed = {seed})"),
        WeightSource::Finetuned { seed, drift } => {
            format!("finetuned(seed = {seed}, drift = {drift})")
        }
        WeightSource::File { path } => quote(path),
    }
}
