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
use serde_json::{Value, json};
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

/// Per-task summaries as JSON values.
pub fn summarize(m: &Module, outputs: &[TaskOutput]) -> Vec<Value> {
    outputs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let task = &m.spec.tasks[m.spec.workload.tasks[i]];
            let v = &o.values;
            let summary = match task.head {
                Head::Classify { classes, .. } => {
                    let mut counts = vec![0u64; classes as usize];
                    let mut conf = 0.0f64;
                    for row in v.axis_iter(Axis(0)) {
                        let (arg, max) = row.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (j, &x)| if x > b.1 { (j, x) } else { b });
                        counts[arg] += 1;
                        let z: f32 = row.iter().map(|&x| (x - max).exp()).sum();
                        conf += 1.0 / z as f64;
                    }
                    json!({ "class_counts": counts, "mean_confidence": conf / v.nrows().max(1) as f64 })
                }
                Head::Regress { .. } => {
                    let xs: Vec<f64> = v.iter().map(|&x| x as f64).collect();
                    let n = xs.len().max(1) as f64;
                    let mean = xs.iter().sum::<f64>() / n;
                    let sd = (xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt();
                    json!({ "mean": mean, "std": sd })
                }
                Head::Embed { .. } => {
                    let norms: Vec<f64> = v.axis_iter(Axis(0)).map(|r| r.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()).collect();
                    json!({ "mean_norm": norms.iter().sum::<f64>() / norms.len().max(1) as f64 })
                }
            };
            json!({
                "name": o.name,
                "head": head_text(&task.head),
                "shape": [v.nrows(), v.ncols()],
                "summary": summary,
            })
        })
        .collect()
}

/// The summaries as a table.
pub fn summary_text(tasks: &[Value], requests: usize, seq: usize) -> String {
    let mut s = format!("reference (float32) over {requests} requests, seq {seq}\n");
    use crate::table::{Align, Table};
    let mut tb = Table::new(&[
        ("task", Align::Left),
        ("head", Align::Left),
        ("width", Align::Right),
        ("outputs", Align::Left),
    ])
    .gap(2);
    for t in tasks {
        let width = t["shape"][1].as_u64().unwrap_or(0);
        let sm = &t["summary"];
        let text = if let Some(p) = sm.get("class_counts") {
            format!(
                "requests per predicted class {p}, mean confidence {:.3}",
                sm["mean_confidence"].as_f64().unwrap_or(0.0)
            )
        } else if let Some(m) = sm.get("mean_norm") {
            format!("mean L2 norm {:.4}", m.as_f64().unwrap_or(0.0))
        } else {
            format!(
                "mean {:.4}, std {:.4}",
                sm["mean"].as_f64().unwrap_or(0.0),
                sm["std"].as_f64().unwrap_or(0.0)
            )
        };
        tb.row(vec![
            t["name"].as_str().unwrap_or("").to_string(),
            t["head"].as_str().unwrap_or("").to_string(),
            width.to_string(),
            text,
        ]);
    }
    s.push_str(&tb.render());
    s
}
