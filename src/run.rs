//! Running a compiled module over the workload: progress, output files and
//! per-task summaries (shared by `mgen run` and, later, `mgen sim`).

use crate::data::Batch;
use crate::diag::Diags;
use crate::ir::Module;
use crate::progress::{Mode, Progress};
use crate::reference::{Plan, TaskOutput};
use crate::spec::Head;
use mgen_util::fs::write_atomic;
use ndarray::Axis;
use serde::Serialize;
use std::path::Path;

/// Evaluates the batch, showing progress per request.
pub fn with_progress(plan: &Plan, batch: &Batch, progress: Mode) -> Vec<TaskOutput> {
    let n = batch.requests.len();
    let bar = if n > 1 {
        Progress::new(progress, Some(n as u64), "reference", "requests")
    } else {
        Progress::off()
    };
    let out = plan.run_ticking(batch, &|| bar.inc(1));
    bar.finish();
    out
}

/// Writes `DIR/TASK.npy` for every task, atomically.
pub fn dump_outputs(dir: &Path, outputs: &[TaskOutput]) -> Result<(), Diags> {
    std::fs::create_dir_all(dir).map_err(|e| {
        Diags::from(crate::diag::Diagnostic::error(
            crate::diag::Code::E105,
            format!("cannot create `{}`: {e}", dir.display()),
        ))
    })?;
    for o in outputs {
        let mut buf = Vec::new();
        ndarray_npy::WriteNpyExt::write_npy(&o.values, &mut buf).map_err(|e| {
            Diags::from(crate::diag::Diagnostic::error(
                crate::diag::Code::E105,
                format!("cannot encode `{}.npy`: {e}", o.name),
            ))
        })?;
        write_atomic(&dir.join(format!("{}.npy", o.name)), &buf)?;
    }
    Ok(())
}

fn head_text(h: &Head) -> String {
    match h {
        Head::Classify { classes, pool } => format!("classify({classes}, {})", pool.name()),
        Head::Regress { pool } => format!("regress({})", pool.name()),
        Head::Embed { pool } => format!("embed({})", pool.name()),
    }
}

/// What a task's float outputs look like, by head.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum OutputSummary {
    /// Requests per predicted class, and the mean softmax probability of
    /// the predicted class.
    Classify {
        class_counts: Vec<u64>,
        mean_confidence: f64,
    },
    /// Mean and standard deviation of every output value.
    Regress { mean: f64, std: f64 },
    /// Mean L2 norm of the embeddings.
    Embed { mean_norm: f64 },
}

/// One task of a [`Summary`].
#[derive(Debug, Clone, Serialize)]
pub struct TaskSummary {
    pub head: String,
    pub name: String,
    /// `[requests, width]`.
    pub shape: [usize; 2],
    pub summary: OutputSummary,
}

/// `mgen run --reference`: the float outputs of every task, summarised;
/// written as `--json` and text from this one value (fields in sorted
/// order, the order the JSON has always had).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub file: String,
    pub mode: &'static str,
    pub notes: Vec<String>,
    pub requests: usize,
    pub seconds: f64,
    pub seq: usize,
    pub tasks: Vec<TaskSummary>,
}

/// Per-task summaries.
pub fn summarize(m: &Module, outputs: &[TaskOutput]) -> Vec<TaskSummary> {
    outputs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let task = &m.spec.tasks[m.spec.workload.tasks[i]];
            let v = &o.values;
            let summary =
                match task.head {
                    Head::Classify { classes, .. } => {
                        let mut counts = vec![0u64; classes as usize];
                        let mut conf = 0.0f64;
                        for row in v.axis_iter(Axis(0)) {
                            let (arg, max) = row.iter().enumerate().fold(
                                (0, f32::NEG_INFINITY),
                                |b, (j, &x)| if x > b.1 { (j, x) } else { b },
                            );
                            counts[arg] += 1;
                            let z: f32 = row.iter().map(|&x| (x - max).exp()).sum();
                            conf += 1.0 / z as f64;
                        }
                        OutputSummary::Classify {
                            class_counts: counts,
                            mean_confidence: conf / v.nrows().max(1) as f64,
                        }
                    }
                    Head::Regress { .. } => {
                        let xs: Vec<f64> = v.iter().map(|&x| x as f64).collect();
                        let n = xs.len().max(1) as f64;
                        let mean = xs.iter().sum::<f64>() / n;
                        let sd =
                            (xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt();
                        OutputSummary::Regress { mean, std: sd }
                    }
                    Head::Embed { .. } => {
                        let norms: Vec<f64> = v
                            .axis_iter(Axis(0))
                            .map(|r| r.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt())
                            .collect();
                        OutputSummary::Embed {
                            mean_norm: norms.iter().sum::<f64>() / norms.len().max(1) as f64,
                        }
                    }
                };
            TaskSummary {
                head: head_text(&task.head),
                name: o.name.clone(),
                shape: [v.nrows(), v.ncols()],
                summary,
            }
        })
        .collect()
}

impl Summary {
    /// The summaries as a table, then the notes.
    pub fn text(&self) -> String {
        let mut s = format!(
            "reference (float32) over {} requests, seq {}\n",
            self.requests, self.seq
        );
        use crate::table::{Align, Table};
        let mut tb = Table::new(&[
            ("task", Align::Left),
            ("head", Align::Left),
            ("width", Align::Right),
            ("outputs", Align::Left),
        ])
        .gap(2);
        for t in &self.tasks {
            let text = match &t.summary {
                OutputSummary::Classify {
                    class_counts,
                    mean_confidence,
                } => {
                    let counts: Vec<String> = class_counts.iter().map(u64::to_string).collect();
                    format!(
                        "requests per predicted class [{}], mean confidence {mean_confidence:.3}",
                        counts.join(",")
                    )
                }
                OutputSummary::Embed { mean_norm } => format!("mean L2 norm {mean_norm:.4}"),
                OutputSummary::Regress { mean, std } => format!("mean {mean:.4}, std {std:.4}"),
            };
            tb.row(vec![
                t.name.clone(),
                t.head.clone(),
                t.shape[1].to_string(),
                text,
            ]);
        }
        s.push_str(&tb.render());
        for n in &self.notes {
            s.push_str(&format!("note: {n}\n"));
        }
        s
    }
}
