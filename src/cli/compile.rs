//! `mgen compile`: compile a source and print (or write) one stage's output.

use super::{Io, in_dir, write_output};
use crate::diag::{Diags, Sources};
use crate::driver;
use crate::ir::print;
use crate::passes;
use clap::ValueEnum;
use std::path::PathBuf;
use std::time::Instant;

/// What `compile --emit` prints.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Emit {
    /// The syntax tree, as an outline (or JSON with --json).
    Ast,
    /// The textual IR after the pipeline (or JSON with --json).
    Ir,
    /// The sharing analysis and tree (model generator).
    Sharing,
    /// Crossbar placement.
    Placement,
    /// The task schedule.
    Schedule,
    /// ReRAM assembly.
    Asm,
    /// A program directory (needs -o).
    Program,
    /// Generated model weights (needs -o).
    Weights,
}

#[derive(clap::Args, Debug)]
pub(super) struct Args {
    /// The .mgen or .mir file.
    file: PathBuf,
    /// What to print: ast, ir, sharing, placement, schedule, asm, or
    /// write (with -o): program, weights.
    #[arg(long, value_enum, default_value = "ir")]
    emit: Emit,
    /// Write the output here instead of stdout (a directory for
    /// `--emit program|weights`).
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// Comma-separated passes, or a pipeline name (see `mgen passes`).
    #[arg(long)]
    passes: Option<String>,
    /// Print the IR to stderr after this pass (or `all`).
    #[arg(long = "dump-ir-after", value_name = "PASS")]
    dump_ir_after: Option<String>,
    /// Every task its own full model, nothing shared.
    #[arg(long)]
    baseline: bool,
    /// One JSON object on stdout instead of text.
    #[arg(long)]
    pub(super) json: bool,
    /// Per-stage and per-pass timing on stderr.
    #[arg(short, long)]
    verbose: bool,
}

pub(super) fn run(
    a: Args,
    io: &mut Io,
    sources: &mut Sources,
    g: &super::Global,
) -> Result<i32, Diags> {
    let Args {
        file,
        emit,
        output,
        passes: pass_list,
        dump_ir_after,
        baseline,
        json,
        verbose,
    } = a;
    if matches!(emit, Emit::Program | Emit::Weights) && output.is_none() {
        let _ = writeln!(
            io.err,
            "error: `--emit {}` writes a directory: give it with `-o DIR`",
            emit.to_possible_value()
                .map(|v| v.get_name().to_string())
                .unwrap_or_default()
        );
        return Ok(2);
    }
    if baseline && pass_list.is_some() {
        let _ = writeln!(
            io.err,
            "error: `--baseline` and `--passes` cannot be used together"
        );
        return Ok(2);
    }
    let mut pipeline = passes::resolve(pass_list.as_deref().unwrap_or(if baseline {
        "baseline"
    } else {
        "default"
    }))?;
    // `--emit sharing` reports the model generator: it runs `share`
    // (after `merge`) when the pipeline does not.
    if emit == Emit::Sharing && !pipeline.iter().any(|p| p.name() == "share") {
        if baseline {
            let _ = writeln!(
                io.err,
                "error: `--emit sharing` and `--baseline` cannot be used together: the baseline shares nothing"
            );
            return Ok(2);
        }
        pipeline.extend(passes::resolve("merge,share")?);
    }
    if let Some(d) = &dump_ir_after {
        passes::check_dump_name(d)?;
    }
    let t0 = Instant::now();
    let f = driver::front(sources, &file)?;
    let t_front = t0.elapsed().as_secs_f64();
    if emit == Emit::Ast {
        let text = if json {
            serde_json::to_string(&f.ast).unwrap_or_default() + "\n"
        } else {
            let id = f.file;
            crate::syntax::ast::outline(&f.ast, &|o| sources.line_col(id, o))
        };
        write_output(io, output.as_deref(), &text)?;
        return Ok(0);
    }
    let t1 = Instant::now();
    let (mut m, store) = driver::module_and_store(f, sources)?;
    let lowered = m.clone();
    let t_lower = t1.elapsed().as_secs_f64();
    let mut cx = passes::context_for(
        &pipeline,
        &m,
        &store,
        sources,
        io.progress,
        &crate::backend::energy::Counting,
    )?;
    cx.share_cache = g.share_cache();
    let err = &mut *io.err;
    let mut arts = passes::Artifacts::default();
    let timings = passes::run_pipeline(&mut m, &mut arts, &pipeline, &cx, |name, m| {
        if let Some(d) = &dump_ir_after
            && (d == "all" || d == name)
        {
            let _ = writeln!(err, "// ---- IR after pass `{name}` ----");
            let _ = write!(err, "{}", print::print(m));
        }
    })?;
    if verbose {
        let _ = writeln!(io.err, "timing: parse + check  {:>9.3} ms", t_front * 1e3);
        let _ = writeln!(
            io.err,
            "timing: {:<14} {:>9.3} ms",
            if driver::is_mir(&file) {
                "read .mir"
            } else {
                "lowering"
            },
            t_lower * 1e3
        );
        for t in &timings {
            let _ = writeln!(
                io.err,
                "timing: pass {:<9} {:>9.3} ms  ({} -> {} nodes)",
                t.name,
                t.seconds * 1e3,
                t.nodes_before,
                t.nodes_after
            );
        }
    }
    let text = match emit {
        Emit::Sharing => match &arts.sharing {
            Some(s) if json => serde_json::to_string(s).unwrap_or_default() + "\n",
            Some(s) => passes::share::text(s),
            None if json => "{\"already_shared\": true}\n".to_string(),
            None => "the module already shares computation (a .mir written after `share`): its tree is kept as it is\n".to_string(),
        },
        Emit::Schedule => {
            let s = match &arts.schedule {
                Some(s) => s.clone(),
                None => {
                    let p = match &arts.placement {
                        Some(p) => p.clone(),
                        None => crate::backend::place::place(&m)?,
                    };
                    passes::schedule::schedule(&m, &p)?
                }
            };
            if json {
                serde_json::to_string(&s).unwrap_or_default() + "\n"
            } else {
                passes::schedule::text(&s)
            }
        }
        Emit::Placement => {
            let p = match &arts.placement {
                Some(p) => p.clone(),
                None => crate::backend::place::place(&m)?,
            };
            if json {
                crate::backend::place::json(&p).to_string() + "\n"
            } else {
                crate::backend::place::text(&m, &p)
            }
        }
        Emit::Asm => {
            let batch = crate::data::load(&m.spec, sources)?;
            let prog = crate::backend::program::program(&m, &arts, &store, &batch)?;
            if json {
                serde_json::to_string(&prog).unwrap_or_default() + "\n"
            } else {
                prog.to_masm()
            }
        }
        Emit::Program => {
            let batch = crate::data::load(&m.spec, sources)?;
            let mut pkg = crate::backend::program::package(&m, &arts, &store, &batch, false)?;
            // Accuracy in the program is against each task's own model.
            if let Some(r) = super::run::own_reference(&arts, &lowered, &store, &batch, io.progress)? {
                pkg.reference = Some(r);
            }
            let dir = output.clone().unwrap_or_default();
            crate::backend::program::write_dir(&pkg, &dir)?;
            let _ = writeln!(
                io.out,
                "wrote {}, crossbars.safetensors, manifest.json",
                in_dir(&dir, "program.masm")
            );
            return Ok(0);
        }
        Emit::Weights => {
            let dir = output.clone().unwrap_or_default();
            let summary = crate::export::write_weights(&m, &store, &dir)?;
            if json {
                let text = serde_json::to_string(&summary).unwrap_or_default();
                let _ = writeln!(io.out, "{text}");
            } else {
                let _ = writeln!(
                    io.out,
                    "wrote {} and weights.json; to read them back:\n{}",
                    in_dir(&dir, &format!("{{{}}}", summary.files().join(", "))),
                    summary.mgen
                );
            }
            return Ok(0);
        }
        _ if json => print::to_json(&m).to_string() + "\n",
        _ => print::print(&m),
    };
    write_output(io, output.as_deref(), &text)?;
    Ok(0)
}
