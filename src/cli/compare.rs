//! `mgen compare`: the baseline against mgen, side by side (once, or once
//! per `--regenerate` level).

use super::{Io, in_dir, to_json};
use crate::compare::{Level, Levels};
use crate::diag::{Diags, Sources};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub(super) struct Args {
    /// The .mgen file.
    file: PathBuf,
    /// Energy, latency, area and wear only; budgets as the generator
    /// measured them in float (no chip verification).
    #[arg(long = "counts-only")]
    counts_only: bool,
    /// One JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Write compare.json and SVG charts into DIR.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Compare once per regeneration level, every task set to it
    /// (e.g. `none,head,branch`), against one baseline.
    #[arg(long, value_enum, value_delimiter = ',')]
    regenerate: Vec<Level>,
    /// On a noisy chip, `holds` is decided over `--chips` instances at the
    /// `--quantile` (0: every chip), and the chip rounds regenerate the
    /// tree when noise breaks a budget.
    #[command(flatten)]
    noise: super::noise::NoiseArgs,
    /// Compare once per noise scale (e.g. `0,0.5,1,2`: the hardware's
    /// noise model, or `--noise`'s, times each), every point against its
    /// own baseline on `--chips` instances; a summary table, and with
    /// `--report` two SVG line charts (energy ratio, each task's figures).
    /// With one `--regenerate` level, every point uses it.
    #[arg(long = "noise-sweep", value_name = "K,K,...", value_delimiter = ',',
          value_parser = super::noise::parse_scale, conflicts_with = "noise_scale")]
    noise_sweep: Vec<f64>,
}

pub(super) fn run(
    a: Args,
    io: &mut Io,
    sources: &mut Sources,
    g: &super::Global,
) -> Result<i32, Diags> {
    let set = |hw: &mut crate::hw::Hardware| a.noise.apply(hw);
    let chips = crate::compare::OnChips {
        chips: a.noise.chips(),
        set_noise: &set,
    };
    if !a.noise_sweep.is_empty() && a.regenerate.len() > 1 {
        let _ = writeln!(
            io.err,
            "error: `--noise-sweep` takes at most one `--regenerate` level (sweep levels or noise, not both)"
        );
        return Ok(2);
    }
    let (json, text, written) = if !a.noise_sweep.is_empty() {
        let s = sweep(&a, io, sources, g)?;
        if let Some(dir) = &a.report {
            s.write_report(dir)?;
        }
        (
            to_json(&s),
            s.text(),
            "compare.json, noise-energy.svg, noise-tasks.svg and one directory per scale",
        )
    } else if a.regenerate.is_empty() {
        let c = crate::compare::compare(
            &a.file,
            sources,
            a.counts_only,
            io.progress,
            &g.share_cache(),
            &chips,
        )?;
        if let Some(dir) = &a.report {
            c.write_report(dir)?;
        }
        (to_json(&c), c.text(), "compare.json and SVG charts")
    } else {
        let levels: Vec<Option<Level>> = a.regenerate.iter().copied().map(Some).collect();
        let all = crate::compare::compare_levels(
            &a.file,
            sources,
            a.counts_only,
            io.progress,
            &levels,
            &g.share_cache(),
            &chips,
        )?;
        let l = Levels::new(&a.file, all);
        if let Some(dir) = &a.report {
            l.write_report(dir)?;
        }
        (
            to_json(&l),
            l.text(),
            "compare.json, regeneration.svg and one directory per level",
        )
    };
    if a.json {
        let _ = writeln!(io.out, "{json}");
    } else {
        let _ = write!(io.out, "{text}");
        if let Some(d) = &a.report {
            let _ = writeln!(io.out, "report: {}", in_dir(d, written));
        }
    }
    Ok(0)
}

/// `--noise-sweep`: one comparison per scale, in the order given.
fn sweep(
    a: &Args,
    io: &mut Io,
    sources: &mut Sources,
    g: &super::Global,
) -> Result<crate::sweep::NoiseSweep, Diags> {
    let cache = g.share_cache();
    let mut runs = Vec::new();
    for &k in &a.noise_sweep {
        let set = |hw: &mut crate::hw::Hardware| a.noise.apply_scaled(hw, Some(k));
        let chips = crate::compare::OnChips {
            chips: a.noise.chips(),
            set_noise: &set,
        };
        let level = [a.regenerate.first().copied()];
        let mut c = crate::compare::compare_levels(
            &a.file,
            sources,
            a.counts_only,
            io.progress,
            &level,
            &cache,
            &chips,
        )?;
        runs.push((k, c.remove(0)));
    }
    let ch = a.noise.chips();
    Ok(crate::sweep::NoiseSweep::new(
        &a.file,
        ch.n,
        ch.quantile,
        runs,
    ))
}
