//! `mgen finetune`: fine-tunes one task model on its labelled `train`
//! inputs and writes a checkpoint that a `.mgen` file can name.
//!
//! It is the branch trainer of [`crate::train`] cut after the embeddings,
//! with the label loss only (`labels = 1`): every encoder layer, the pooler
//! (when the head reads it) and the classifier train from the task's
//! declared weights (e.g. the pre-trained checkpoint with a synthesised
//! head); the embeddings stay frozen, so fine-tuned tasks keep the base's
//! embeddings exactly. This is how the bundled real multi-task example
//! (`examples/minilm-tasks.mgen`, built by `scripts/fetch-tasks.sh`) makes
//! its task models from public data.
//!
//! Invariants: the output holds every tensor of the task's layout with
//! Hugging Face names (so it reads back as `weights = "FILE"`), written
//! atomically; the same inputs and seed give the same bytes (the trainer
//! is deterministic).

use crate::data::{Label, Request};
use crate::diag::{Code, Diagnostic, Diags, Sources};
use crate::forward::{self, Req};
use crate::spec::{BranchOpts, Head, InputSource};
use crate::train::{Branch, Item};
use ndarray::{Array1, ArrayD};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Fine-tuning settings (`--epochs`, `--lr`, `--batch`, `--seed`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub epochs: u32,
    pub lr: f64,
    pub batch: u32,
    pub seed: u64,
}

/// A request's embeddings output and its attention mask.
type Embedded = (ArrayD<f32>, Vec<f32>);

fn bug(msg: String) -> Diags {
    Diagnostic::internal(msg)
        .note("or a weights file changed while mgen was reading it")
        .into()
}

/// The task's metric over labelled requests: accuracy for classifiers,
/// Pearson correlation for regressors.
fn metric(head: &Head, outs: &[Array1<f32>], reqs: &[&Request]) -> f64 {
    let n = outs.len().max(1) as f64;
    match head {
        Head::Regress { .. } => {
            let ys: Vec<f64> = reqs
                .iter()
                .map(|r| match r.label {
                    Some(Label::Value(v)) => v,
                    Some(Label::Class(c)) => c as f64,
                    None => 0.0,
                })
                .collect();
            let xs: Vec<f64> = outs.iter().map(|o| o[0] as f64).collect();
            crate::passes::share::pearson(&xs, &ys)
        }
        _ => {
            outs.iter()
                .zip(reqs)
                .filter(|(o, r)| {
                    matches!(r.label, Some(Label::Class(c)) if c >= 0
                        && crate::passes::share::argmax(o.view()) == c as usize)
                })
                .count() as f64
                / n
        }
    }
}

/// Fine-tunes task `task` of `file`; writes `out`; returns the report.
pub fn finetune(
    file: &Path,
    task: &str,
    out: &Path,
    s: Settings,
    sources: &mut Sources,
    progress: crate::progress::Mode,
) -> Result<Finetuned, Diags> {
    let t0 = std::time::Instant::now();
    let f = crate::driver::front(sources, file)?;
    let (m, store) = crate::driver::module_and_store(f, sources)?;
    let spec = &m.spec;
    let Some(st) = spec.tasks.iter().position(|t| t.name == task) else {
        let names: Vec<&str> = spec.tasks.iter().map(|t| t.name.as_str()).collect();
        return Err(Diagnostic::error(
            Code::E011,
            format!("`{}` declares no task `{task}`", file.display()),
        )
        .note(format!("its tasks: {}", names.join(", ")))
        .into());
    };
    let t = &spec.tasks[st];
    if matches!(t.head, Head::Embed { .. }) {
        return Err(Diagnostic::error(
            Code::E016,
            format!("task `{task}` has an `embed` head: there are no labels to fine-tune it on"),
        )
        .note("fine-tuning needs `classify(N)` or `regress`")
        .into());
    }
    let Some(InputSource::File { path }) = &t.train else {
        return Err(Diagnostic::error(
            Code::E015,
            format!("task `{task}` has no `train = \"FILE.jsonl\";` to fine-tune on"),
        )
        .note("give it labelled training inputs, one JSON object per line with `text` or `ids` and `label`")
        .into());
    };
    let seq = spec.workload.seq as usize;
    let load = |p: &str, key: &str, sources: &mut Sources| {
        let full = Path::new(&spec.root).join(p);
        crate::data::load_jsonl(spec, &full, key, seq, usize::MAX, sources)
    };
    let train = load(path, &format!("task {task}.train"), sources)?;
    let labelled: Vec<&Request> = train.iter().filter(|r| r.label.is_some()).collect();
    if labelled.is_empty() {
        return Err(Diagnostic::error(
            Code::E207,
            format!("the training inputs `{path}` of task `{task}` carry no labels"),
        )
        .note("give each line a \"label\" (a class index, or a number for `regress`)")
        .into());
    }
    let held: Vec<Request> = match &t.calibrate {
        Some(c) => load(c, &format!("task {task}.calibrate"), sources)?,
        None => Vec::new(),
    };
    let held: Vec<&Request> = held.iter().filter(|r| r.label.is_some()).collect();

    let model = &spec.models[t.base];
    let get = |name: &str| store.task_tensor(st, name);
    let mut branch = Branch::new(model, &t.head, &get, 1).map_err(bug)?;
    // The frozen embeddings' output, once per request.
    let embed = |reqs: &[&Request]| -> Result<Vec<Embedded>, Diags> {
        use rayon::prelude::*;
        reqs.par_iter()
            .map(|r| {
                let mask = r.mask();
                let req = Req {
                    ids: &r.ids,
                    mask: &mask,
                };
                let x = forward::block(model, 0, &get, None, &req).map_err(bug)?;
                Ok((x, mask))
            })
            .collect()
    };
    let width = match t.head {
        Head::Classify { classes, .. } => classes as usize,
        _ => 1,
    };
    let zeros = Array1::<f32>::zeros(width);
    let xs_train = embed(&labelled)?;
    let xs_held = embed(&held)?;
    let items: Vec<Item> = xs_train
        .iter()
        .zip(&labelled)
        .map(|((x, mask), r)| {
            Ok(Item {
                x: x.view()
                    .into_dimensionality::<ndarray::Ix2>()
                    .map_err(|e| bug(format!("an embedding output: {e}")))?,
                mask,
                target: zeros.view(),
                label: r.label,
            })
        })
        .collect::<Result<_, Diags>>()?;
    let score = |b: &Branch, xs: &[Embedded], reqs: &[&Request]| -> Option<f64> {
        if reqs.is_empty() {
            return None;
        }
        use rayon::prelude::*;
        let outs: Vec<Array1<f32>> = xs
            .par_iter()
            .map(|(x, mask)| {
                b.output(
                    x.view()
                        .into_dimensionality::<ndarray::Ix2>()
                        .expect("rank 2"),
                    mask,
                )
            })
            .collect();
        Some(metric(&t.head, &outs, reqs))
    };
    let before = (
        score(&branch, &xs_train, &labelled),
        score(&branch, &xs_held, &held),
    );
    let opts = BranchOpts {
        epochs: s.epochs,
        lr: s.lr,
        batch: s.batch,
        labels: 1.0,
        temperature: 1.0,
        trials: 0,
    };
    let steps = s.epochs as usize * items.len().div_ceil(s.batch.max(1) as usize);
    let bar = crate::progress::Progress::new(progress, Some(steps as u64), "finetune", "steps");
    let log = branch.train(&items, &opts, s.seed, &|| bar.inc(1));
    bar.finish();
    let after = (
        score(&branch, &xs_train, &labelled),
        score(&branch, &xs_held, &held),
    );
    // Every tensor of the task, the trained ones replaced.
    let trained = branch.tensors();
    let mut tensors: BTreeMap<String, Arc<ArrayD<f32>>> = BTreeMap::new();
    for ts in crate::weights::layout(model, &t.head) {
        let v = match trained.get(&ts.name) {
            Some(x) => x.clone(),
            None => store.task_tensor(st, &ts.name).map_err(bug)?,
        };
        tensors.insert(ts.name, v);
    }
    crate::export::write_file(out, &tensors)?;
    let metric_name = match t.head {
        Head::Regress { .. } => "pearson",
        _ => "accuracy",
    };
    Ok(Finetuned {
        batch: s.batch,
        epochs: s.epochs,
        first_epoch_loss: log.first_loss,
        held_out_after: after.1,
        held_out_before: before.1,
        held_out_requests: held.len(),
        last_epoch_loss: log.last_loss,
        lr: s.lr,
        metric: metric_name,
        output: out.display().to_string(),
        seconds: t0.elapsed().as_secs_f64(),
        steps: log.steps,
        task: task.to_string(),
        train_after: after.0,
        train_before: before.0,
        train_requests: labelled.len(),
        trained_values: branch.parameters(),
    })
}

/// What `mgen finetune` did, as text and JSON (fields in the order the
/// JSON has always had them; a non-finite metric is `null` in JSON and `-`
/// in text).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finetuned {
    pub batch: u32,
    pub epochs: u32,
    /// The mean loss over every training request at the initial weights
    /// (the trainer's `TrainLog::first_loss`; the key keeps its old name).
    pub first_epoch_loss: f64,
    pub held_out_after: Option<f64>,
    pub held_out_before: Option<f64>,
    pub held_out_requests: usize,
    /// The same at the final weights (`TrainLog::last_loss`).
    pub last_epoch_loss: f64,
    pub lr: f64,
    /// `accuracy`, or `pearson` for a regression task.
    pub metric: &'static str,
    pub output: String,
    pub seconds: f64,
    pub steps: usize,
    pub task: String,
    pub train_after: Option<f64>,
    pub train_before: Option<f64>,
    pub train_requests: usize,
    pub trained_values: usize,
}

impl Finetuned {
    /// The report as text.
    pub fn text(&self) -> String {
        let f = |x: Option<f64>| match x {
            Some(x) if x.is_finite() => format!("{x:.4}"),
            _ => "-".into(),
        };
        format!(
            "finetune: task `{}` -> {}\n  {} labelled training requests, {} epochs, {} steps, {} values trained; loss {} -> {}\n  {} on the training inputs {} -> {}; on the held-out `calibrate` inputs ({}) {} -> {}\n  {:.1} s\n",
            self.task,
            self.output,
            self.train_requests,
            self.epochs,
            self.steps,
            self.trained_values,
            f(Some(self.first_epoch_loss)),
            f(Some(self.last_epoch_loss)),
            self.metric,
            f(self.train_before),
            f(self.train_after),
            self.held_out_requests,
            f(self.held_out_before),
            f(self.held_out_after),
            self.seconds
        )
    }
}
