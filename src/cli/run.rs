//! `mgen run`: compile a source and run it on the simulator (or the float
//! reference).

use super::sim::{Output, simulate_and_report};
use super::{Io, in_dir, to_json};
use crate::diag::{Diags, Sources};
use crate::driver;
use crate::passes;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub(super) struct Args {
    /// The .mgen file.
    file: PathBuf,
    /// Evaluate with the float32 reference executor instead of the simulator.
    #[arg(long)]
    reference: bool,
    /// Every task its own full model, nothing shared.
    #[arg(long)]
    baseline: bool,
    /// Energy, latency, area and wear only: no numerics, no accuracy.
    #[arg(long = "counts-only")]
    counts_only: bool,
    /// An ADC that never saturates (isolates quantisation from saturation).
    #[arg(long = "ideal-adc")]
    ideal_adc: bool,
    /// One JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Write each task's outputs to DIR/TASK.npy (float32, [requests, width]).
    #[arg(long = "dump-outputs", value_name = "DIR")]
    dump_outputs: Option<PathBuf>,
    /// Write report.json and SVG charts into DIR.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    #[command(flatten)]
    noise: super::noise::NoiseArgs,
}

pub(super) fn run(
    a: Args,
    io: &mut Io,
    sources: &mut Sources,
    g: &super::Global,
) -> Result<i32, Diags> {
    let f = driver::front(sources, &a.file)?;
    let (mut m, store) = driver::module_and_store(f, sources)?;
    let lowered = m.clone();
    let pipeline = passes::resolve(if a.baseline { "baseline" } else { "default" })?;
    let mut cx = passes::context_for(
        &pipeline,
        &m,
        &store,
        sources,
        io.progress,
        &crate::backend::energy::Counting,
    )?;
    cx.share_cache = g.share_cache();
    let mut arts = passes::Artifacts::default();
    passes::run_pipeline(&mut m, &mut arts, &pipeline, &cx, |_, _| {})?;
    let batch = crate::data::load(&m.spec, sources)?;
    if !a.reference {
        let mut pkg = crate::backend::program::package(&m, &arts, &store, &batch, a.counts_only)?;
        a.noise.apply(&mut pkg.hw);
        // Accuracy is against each task's own model: when the generator
        // changed what a task computes, its reference is the unshared
        // model's float outputs.
        if !a.counts_only
            && let Some(r) = own_reference(&arts, &lowered, &store, &batch, io.progress)?
        {
            pkg.reference = Some(r);
        }
        let out = Output {
            json: a.json,
            dump: a.dump_outputs.as_deref(),
            report: a.report.as_deref(),
            chips: a.noise.chips(),
        };
        return simulate_and_report(io, &pkg, a.counts_only, a.ideal_adc, out, &store.notes);
    }
    let t = Instant::now();
    let plan = crate::reference::Plan::new(&m, &store)?;
    let outputs = crate::run::with_progress(&plan, &batch, io.progress);
    let seconds = t.elapsed().as_secs_f64();
    if let Some(dir) = &a.dump_outputs {
        crate::run::dump_outputs(dir, &outputs)?;
    }
    let summary = crate::run::Summary {
        file: a.file.display().to_string(),
        mode: "reference",
        notes: store.notes.clone(),
        requests: batch.requests.len(),
        seconds,
        seq: batch.seq,
        tasks: crate::run::summarize(&m, &outputs),
    };
    if a.json {
        let _ = writeln!(io.out, "{}", to_json(&summary));
    } else {
        let _ = write!(io.out, "{}", summary.text());
        if let Some(dir) = &a.dump_outputs {
            let _ = writeln!(
                io.out,
                "outputs: {} (float32, [requests, width])",
                in_dir(dir, "TASK.npy")
            );
        }
    }
    Ok(0)
}

/// The float outputs of each task's own unshared model, when the model
/// generator changed what some task of `m` computes (`None` otherwise: the
/// compiled module's own float outputs are then the same).
pub(super) fn own_reference(
    arts: &passes::Artifacts,
    lowered: &crate::ir::Module,
    store: &crate::weights::Store,
    batch: &crate::data::Batch,
    progress: crate::progress::Mode,
) -> Result<Option<Vec<ndarray::Array2<f32>>>, Diags> {
    let changed = arts.sharing.as_ref().is_some_and(|s| {
        s.tasks
            .iter()
            .any(|t| t.source != "own" && t.shared_blocks > 0)
    });
    if !changed {
        return Ok(None);
    }
    let mut own = lowered.clone();
    passes::run_pipeline(
        &mut own,
        &mut passes::Artifacts::default(),
        &passes::resolve("merge")?,
        &passes::Context::default(),
        |_, _| {},
    )?;
    let plan = crate::reference::Plan::new(&own, store)?;
    let outs = crate::run::with_progress(&plan, batch, progress);
    Ok(Some(outs.into_iter().map(|o| o.values).collect()))
}
