//! `mgen sim`: run a compiled program directory on the simulator; and the
//! simulation and report that `mgen run` shares.

use super::{Io, in_dir, to_json};
use crate::diag::{Diags, Sources};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub(super) struct Args {
    /// The program directory (program.masm, crossbars.safetensors,
    /// manifest.json).
    dir: PathBuf,
    /// One JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Write each task's outputs to DIR/TASK.npy (float32, [requests, width]).
    #[arg(long = "dump-outputs", value_name = "DIR")]
    dump_outputs: Option<PathBuf>,
    /// Write report.json and SVG charts into DIR.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Energy, latency, area and wear only: no numerics, no accuracy.
    #[arg(long = "counts-only")]
    counts_only: bool,
    /// An ADC that never saturates (isolates quantisation from saturation).
    #[arg(long = "ideal-adc")]
    ideal_adc: bool,
    #[command(flatten)]
    noise: super::noise::NoiseArgs,
}

pub(super) fn run(a: Args, io: &mut Io, sources: &mut Sources) -> Result<i32, Diags> {
    let mut pkg = crate::backend::program::read_dir(&a.dir, sources)?;
    a.noise.apply(&mut pkg.hw);
    let functional = !pkg.images.is_empty() || pkg.prog.images.is_empty();
    let out = Output {
        json: a.json,
        dump: a.dump_outputs.as_deref(),
        report: a.report.as_deref(),
        chips: a.noise.chips(),
    };
    simulate_and_report(
        io,
        &pkg,
        a.counts_only || !functional,
        a.ideal_adc,
        out,
        &[],
    )
}

/// Where a simulation's results go.
pub(super) struct Output<'a> {
    /// `--json`.
    pub json: bool,
    /// `--dump-outputs DIR`.
    pub dump: Option<&'a Path>,
    /// `--report DIR`.
    pub report: Option<&'a Path>,
    /// `--chips`, `--chip-seed`, `--quantile`.
    pub chips: crate::sim::chips::Chips,
}

/// Counts (and, unless `counts_only`, simulates) `pkg` and writes its
/// [`crate::sim::Report`].
pub(super) fn simulate_and_report(
    io: &mut Io,
    pkg: &crate::sim::Package,
    counts_only: bool,
    ideal_adc: bool,
    out: Output,
    notes: &[String],
) -> Result<i32, Diags> {
    use crate::sim::Mode;
    // Counting and running refuse the same programs, checked before either.
    crate::sim::validate_package(pkg)?;
    let totals = crate::sim::count(&pkg.prog, &pkg.hw, pkg.requests.len());
    let mut metrics = Vec::new();
    let mode = if counts_only {
        Mode::Counts
    } else if ideal_adc {
        Mode::IdealAdc
    } else {
        Mode::Functional
    };
    let mut noise = None;
    if !counts_only {
        let run = crate::sim::chips::run(pkg, ideal_adc, &out.chips, io.progress)?;
        let outs = run.outputs;
        metrics = run.metrics;
        noise = run.noise;
        if let Some(dir) = out.dump {
            let named: Vec<crate::reference::TaskOutput> = pkg
                .tasks
                .iter()
                .zip(outs)
                .map(|(t, v)| crate::reference::TaskOutput {
                    name: t.name.clone(),
                    values: v,
                })
                .collect();
            crate::run::dump_outputs(dir, &named)?;
        }
    }
    let mut report = crate::sim::Report::new(&totals, metrics, mode, notes);
    report.noise = noise;
    if let Some(dir) = out.report {
        crate::report::write(dir, &report, pkg)?;
    }
    if out.json {
        let _ = writeln!(io.out, "{}", to_json(&report));
    } else {
        let _ = write!(io.out, "{}", report.text());
        if let Some(d) = out.report {
            let _ = writeln!(
                io.out,
                "report: {} and SVG charts",
                in_dir(d, "report.json")
            );
        }
    }
    Ok(0)
}
