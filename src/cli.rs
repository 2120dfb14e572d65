//! The `mgen` command line: argument parsing (clap), dispatch, output and
//! exit codes.
//!
//! Exit status: 0 success, 1 diagnostics (bad input), 2 usage. Nothing here
//! panics on user input; every failure is a rendered diagnostic. Output
//! files are written atomically (a temporary file in the same directory,
//! then a rename), so a failed run never leaves a half-written file.

use crate::diag::{Diags, Sources};
use crate::driver;
use crate::ir::print;
use crate::passes;
use clap::{Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(
    name = "mgen",
    version,
    about = "Compile and simulate multi-task BERT on ReRAM processing-in-memory accelerators",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// How long runs show progress on stderr: `auto` draws a bar on a
    /// terminal and prints a line every few seconds otherwise (a log);
    /// `bar`, `log` and `none` force one.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    progress: ProgressArg,
}

/// `--progress`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ProgressArg {
    /// A bar on a terminal, log lines otherwise.
    Auto,
    /// A bar (or a spinner with counts when the total is unknown).
    Bar,
    /// A plain line every few seconds.
    Log,
    /// Nothing.
    None,
}

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

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Parse and check a .mgen (or .mir) file: the language, checkpoints
    /// (names, shapes, dtypes, finite values, config.json) and every inputs
    /// file it names.
    Check {
        /// The .mgen or .mir file.
        file: PathBuf,
        /// One JSON object on stdout (the checked spec, or the diagnostics).
        #[arg(long)]
        json: bool,
    },
    /// Compile a .mgen or .mir file and print (or write) one stage's output.
    Compile {
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
        json: bool,
        /// Per-stage and per-pass timing on stderr.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Run a compiled program directory (`compile --emit program`) on the
    /// simulator.
    Sim {
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
    },
    /// Compile and run a .mgen file on the simulator (or the float reference).
    Run {
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
    },
    /// The baseline (every task its own model) against mgen, both
    /// simulated, side by side: energy, latency, area, wear, budgets.
    Compare {
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
        regenerate: Vec<crate::compare::Level>,
    },
    /// Fine-tune one task on its labelled `train` inputs (every encoder
    /// layer and the head; embeddings frozen) and write its checkpoint.
    Finetune {
        /// The .mgen file that declares the task and its `train` file.
        file: PathBuf,
        /// The task to fine-tune.
        #[arg(long)]
        task: String,
        /// The checkpoint to write (safetensors).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Passes over the training inputs (1-1000).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1000))]
        epochs: u32,
        /// Peak AdamW learning rate.
        #[arg(long, default_value_t = 5e-5, value_parser = parse_lr)]
        lr: f64,
        /// Requests per mini-batch (1-4096).
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
        batch: u32,
        /// Seed of the mini-batch order.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// One JSON object on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List passes and pipelines.
    Passes {
        /// One JSON object on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// A learning rate in (0, 1].
fn parse_lr(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x <= 1.0 => Ok(x),
        _ => Err(format!("`{s}` is not a learning rate in (0, 1]")),
    }
}

/// Where a command's text goes, and how diagnostics are drawn.
pub struct Io<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    /// ANSI colours in diagnostics (only when stderr is a terminal).
    pub color: bool,
    /// How progress is shown on stderr (`--progress auto` keeps this).
    pub progress: crate::progress::Mode,
}

/// Runs `mgen` with `args` (including the program name); returns the exit
/// status.
pub fn main_with(args: impl IntoIterator<Item = OsString>, io: &mut Io) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let text = e.render().to_string();
            return match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = write!(io.out, "{text}");
                    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                        2
                    } else {
                        0
                    }
                }
                _ => {
                    let _ = write!(io.err, "{text}");
                    2
                }
            };
        }
    };
    io.progress = match cli.progress {
        ProgressArg::Auto => io.progress,
        ProgressArg::Bar => crate::progress::Mode::Bar,
        ProgressArg::Log => crate::progress::Mode::Log,
        ProgressArg::None => crate::progress::Mode::Off,
    };
    let mut sources = Sources::new();
    let json = matches!(
        cli.cmd,
        Cmd::Check { json: true, .. }
            | Cmd::Compile { json: true, .. }
            | Cmd::Finetune { json: true, .. }
            | Cmd::Passes { json: true }
    );
    match dispatch(cli.cmd, io, &mut sources) {
        Ok(code) => code,
        Err(diags) => {
            if json {
                let _ = writeln!(io.out, "{}", diags_json(&diags, &sources));
            }
            let _ = write!(io.err, "{}", diags.render(&sources, io.color));
            1
        }
    }
}

/// Diagnostics as one JSON object, for `--json` runs that fail.
fn diags_json(diags: &Diags, sources: &Sources) -> serde_json::Value {
    let list: Vec<_> = diags
        .0
        .iter()
        .map(|d| {
            let at = d.labels.iter().find(|l| l.primary).map(|l| {
                let (line, col) = sources.line_col(l.file, l.span.start);
                serde_json::json!({ "file": sources.name(l.file), "line": line, "column": col, "label": l.message })
            });
            serde_json::json!({ "code": d.code.as_str(), "message": d.message, "at": at, "notes": d.notes })
        })
        .collect();
    serde_json::json!({ "ok": false, "diagnostics": list })
}

fn dispatch(cmd: Cmd, io: &mut Io, sources: &mut Sources) -> Result<i32, Diags> {
    match cmd {
        Cmd::Check { file, json } => {
            let f = driver::front(sources, &file)?;
            let spec = f.spec.clone();
            // Checkpoints are opened and checked (names, shapes, dtypes,
            // config.json), a .mir's digests against them, and the inputs.
            driver::module_and_store(f, sources)?;
            crate::data::check_files(&spec, sources)?;
            let s = &spec;
            let tasks: Vec<&str> = s
                .workload
                .tasks
                .iter()
                .map(|&t| s.tasks[t].name.as_str())
                .collect();
            if json {
                let v = serde_json::json!({ "ok": true, "file": file.display().to_string(), "spec": s });
                let _ = writeln!(io.out, "{v}");
            } else {
                let _ = writeln!(
                    io.out,
                    "ok: {}: hardware `{}`, {} model(s), {} task(s) [{}], workload `{}` ({} requests x seq {})",
                    file.display(),
                    s.hardware.name,
                    s.models.len(),
                    s.tasks.len(),
                    tasks.join(", "),
                    s.workload.name,
                    s.workload.requests,
                    s.workload.seq
                );
            }
            Ok(0)
        }
        Cmd::Compile {
            file,
            emit,
            output,
            passes: pass_list,
            dump_ir_after,
            baseline,
            json,
            verbose,
        } => {
            match emit {
                Emit::Program | Emit::Weights if output.is_none() => {
                    let _ = writeln!(
                        io.err,
                        "error: `--emit {}` writes a directory: give it with `-o DIR`",
                        if emit == Emit::Program {
                            "program"
                        } else {
                            "weights"
                        }
                    );
                    return Ok(2);
                }
                _ => {}
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
            let cx = passes::context_for(&pipeline, &m, &store, sources, io.progress)?;
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
                    if let Some(r) = own_reference(&arts, &lowered, &store, &batch, io.progress)? {
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
                        let _ = writeln!(io.out, "{summary}");
                    } else {
                        let files: Vec<String> = summary["models"]
                            .as_object()
                            .into_iter()
                            .chain(summary["tasks"].as_object())
                            .flat_map(|o| o.values())
                            .filter_map(|v| v["file"].as_str().map(str::to_string))
                            .collect();
                        let _ = writeln!(
                            io.out,
                            "wrote {} and weights.json; to read them back:\n{}",
                            in_dir(&dir, &format!("{{{}}}", files.join(", "))),
                            summary["mgen"].as_str().unwrap_or_default()
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
        Cmd::Passes { json } => {
            let reg = passes::registry();
            if json {
                let ps: Vec<_> = reg
                    .iter()
                    .map(|p| {
                        let names = |a: &[passes::Artifact]| a.iter().map(|a| a.name()).collect::<Vec<_>>();
                        serde_json::json!({
                            "name": p.name(), "description": p.description(), "contract": p.contract(),
                            "requires": names(p.requires()), "provides": names(p.provides()), "invalidates": names(p.invalidates()),
                        })
                    })
                    .collect();
                let pl: Vec<_> = passes::PIPELINES
                    .iter()
                    .map(
                        |(n, p, d)| serde_json::json!({ "name": n, "passes": p, "description": d }),
                    )
                    .collect();
                let _ = writeln!(
                    io.out,
                    "{}",
                    serde_json::json!({ "passes": ps, "pipelines": pl })
                );
            } else {
                let _ = writeln!(io.out, "passes:");
                for p in &reg {
                    let _ = writeln!(io.out, "  {:<10} {}", p.name(), p.description());
                    if !p.contract().is_empty() {
                        let _ = writeln!(io.out, "  {:<10} contract: {}", "", p.contract());
                    }
                    let list = |a: &[passes::Artifact]| {
                        a.iter().map(|a| a.name()).collect::<Vec<_>>().join(", ")
                    };
                    for (what, a) in [
                        ("requires", p.requires()),
                        ("provides", p.provides()),
                        ("invalidates", p.invalidates()),
                    ] {
                        if !a.is_empty() {
                            let _ = writeln!(io.out, "  {:<10} {what}: {}", "", list(a));
                        }
                    }
                }
                let _ = writeln!(io.out, "pipelines:");
                for (n, p, d) in passes::PIPELINES {
                    let list = if p.is_empty() {
                        "(no passes)".to_string()
                    } else {
                        p.join(",")
                    };
                    let _ = writeln!(io.out, "  {:<10} {:<18} {}", n, list, d);
                }
                let _ = writeln!(io.out, "The verifier runs after every pass.");
            }
            Ok(0)
        }
        Cmd::Sim {
            dir,
            json,
            dump_outputs,
            report,
            counts_only,
            ideal_adc,
        } => {
            let pkg = crate::backend::program::read_dir(&dir, sources)?;
            let functional = !pkg.images.is_empty() || pkg.prog.images.is_empty();
            simulate_and_report(
                io,
                &pkg,
                counts_only || !functional,
                ideal_adc,
                json,
                dump_outputs.as_deref(),
                report.as_deref(),
                &[],
            )
        }
        Cmd::Run {
            file,
            reference,
            baseline,
            counts_only,
            ideal_adc,
            json,
            dump_outputs,
            report,
        } => {
            let f = driver::front(sources, &file)?;
            let (mut m, store) = driver::module_and_store(f, sources)?;
            let lowered = m.clone();
            let pipeline = passes::resolve(if baseline { "baseline" } else { "default" })?;
            let cx = passes::context_for(&pipeline, &m, &store, sources, io.progress)?;
            let mut arts = passes::Artifacts::default();
            passes::run_pipeline(&mut m, &mut arts, &pipeline, &cx, |_, _| {})?;
            let batch = crate::data::load(&m.spec, sources)?;
            if !reference {
                let mut pkg =
                    crate::backend::program::package(&m, &arts, &store, &batch, counts_only)?;
                // Accuracy is against each task's own model: when the
                // generator changed what a task computes, its reference is
                // the unshared model's float outputs.
                if !counts_only
                    && let Some(r) = own_reference(&arts, &lowered, &store, &batch, io.progress)?
                {
                    pkg.reference = Some(r);
                }
                return simulate_and_report(
                    io,
                    &pkg,
                    counts_only,
                    ideal_adc,
                    json,
                    dump_outputs.as_deref(),
                    report.as_deref(),
                    &store.notes,
                );
            }
            let t = Instant::now();
            let plan = crate::reference::Plan::new(&m, &store)?;
            let outputs = crate::run::with_progress(&plan, &batch, io.progress);
            let seconds = t.elapsed().as_secs_f64();
            if let Some(dir) = &dump_outputs {
                crate::run::dump_outputs(dir, &outputs)?;
            }
            let summary = crate::run::Summary {
                file: file.display().to_string(),
                mode: "reference",
                notes: store.notes.clone(),
                requests: batch.requests.len(),
                seconds,
                seq: batch.seq,
                tasks: crate::run::summarize(&m, &outputs),
            };
            if json {
                let _ = writeln!(io.out, "{}", to_json(&summary));
            } else {
                let _ = write!(io.out, "{}", summary.text());
                if let Some(dir) = &dump_outputs {
                    let _ = writeln!(
                        io.out,
                        "outputs: {} (float32, [requests, width])",
                        in_dir(dir, "TASK.npy")
                    );
                }
            }
            Ok(0)
        }
        Cmd::Finetune {
            file,
            task,
            output,
            epochs,
            lr,
            batch,
            seed,
            json,
        } => {
            let s = crate::finetune::Settings {
                epochs,
                lr,
                batch,
                seed,
            };
            let v = crate::finetune::finetune(&file, &task, &output, s, sources, io.progress)?;
            if json {
                let _ = writeln!(io.out, "{v}");
            } else {
                let _ = write!(io.out, "{}", crate::finetune::text(&v));
            }
            Ok(0)
        }
        Cmd::Compare {
            file,
            counts_only,
            json,
            report,
            regenerate,
        } => {
            let (json_line, text, written) = if regenerate.is_empty() {
                let c = crate::compare::compare(&file, sources, counts_only, io.progress)?;
                if let Some(dir) = &report {
                    c.write_report(dir)?;
                }
                (to_json(&c), c.text(), "compare.json and SVG charts")
            } else {
                let levels: Vec<Option<crate::compare::Level>> =
                    regenerate.iter().copied().map(Some).collect();
                let all = crate::compare::compare_levels(
                    &file,
                    sources,
                    counts_only,
                    io.progress,
                    &levels,
                )?;
                let l = crate::compare::Levels::new(&file, all);
                if let Some(dir) = &report {
                    l.write_report(dir)?;
                }
                (
                    to_json(&l),
                    l.text(),
                    "compare.json, regeneration.svg and one directory per level",
                )
            };
            if json {
                let _ = writeln!(io.out, "{json_line}");
            } else {
                let _ = write!(io.out, "{text}");
                if let Some(d) = &report {
                    let _ = writeln!(io.out, "report: {}", in_dir(d, written));
                }
            }
            Ok(0)
        }
    }
}

/// The float outputs of each task's own unshared model, when the model
/// generator changed what some task of `m` computes (`None` otherwise: the
/// compiled module's own float outputs are then the same).
fn own_reference(
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

#[allow(clippy::too_many_arguments)]
fn simulate_and_report(
    io: &mut Io,
    pkg: &crate::sim::Package,
    counts_only: bool,
    ideal_adc: bool,
    json: bool,
    dump: Option<&Path>,
    report: Option<&Path>,
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
    if !counts_only {
        let outs = crate::sim::simulate(pkg, ideal_adc, io.progress)?;
        if let Some(r) = &pkg.reference {
            metrics = crate::sim::metrics(&pkg.tasks, &outs, r);
        }
        if let Some(dir) = dump {
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
    let r = crate::sim::Report::new(&totals, metrics, mode, notes);
    if let Some(dir) = report {
        crate::report::write(dir, &r, pkg)?;
    }
    if json {
        let _ = writeln!(io.out, "{}", to_json(&r));
    } else {
        let _ = write!(io.out, "{}", r.text());
        if let Some(d) = report {
            let _ = writeln!(
                io.out,
                "report: {} and SVG charts",
                in_dir(d, "report.json")
            );
        }
    }
    Ok(0)
}

/// A report as one line of JSON.
fn to_json<T: serde::Serialize>(x: &T) -> String {
    serde_json::to_string(x).unwrap_or_default()
}

/// `DIR/NAME` as shown to a user (one separator, whatever `DIR` ends with).
fn in_dir(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// Writes `text` to `path` atomically, or to stdout.
fn write_output(io: &mut Io, path: Option<&Path>, text: &str) -> Result<(), Diags> {
    match path {
        None => {
            let _ = io.out.write_all(text.as_bytes());
            Ok(())
        }
        Some(p) => write_atomic(p, text.as_bytes()),
    }
}

pub use mgen_util::fs::write_atomic;

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Arguments of `cmd` and every subcommand below it (at any depth) with
    /// no help line, or with a possible value that has none.
    fn missing_help(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            let id = a.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            if a.get_help().is_none() {
                missing.push(format!("{path} {id}"));
            }
            // (A switch's possible values are `true` and `false`.)
            let takes_value = matches!(
                a.get_action(),
                clap::ArgAction::Set | clap::ArgAction::Append
            );
            for v in a.get_possible_values() {
                if takes_value && v.get_help().is_none() {
                    missing.push(format!("{path} {id}={}", v.get_name()));
                }
            }
        }
        for sub in cmd.get_subcommands() {
            let path = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() {
                missing.push(format!("{path} (no about)"));
            }
            missing_help(sub, &path, missing);
        }
    }

    /// `--help` explains every subcommand, every flag and argument of each,
    /// and every value an enumerated flag takes.
    #[test]
    fn every_argument_has_a_help_line() {
        let cmd = super::Cli::command();
        let mut missing = Vec::new();
        missing_help(&cmd, "mgen", &mut missing);
        assert!(missing.is_empty(), "no help line: {missing:?}");
        let subs: Vec<&str> = cmd.get_subcommands().map(|s| s.get_name()).collect();
        assert_eq!(
            subs,
            [
                "check", "compile", "sim", "run", "compare", "finetune", "passes"
            ],
            "a new subcommand: list it here"
        );
    }

    /// Every flag that takes one of a fixed set of values lists them.
    #[test]
    fn enumerated_flags_list_their_values() {
        let cmd = super::Cli::command();
        let has_values = |sub: &str, id: &str| {
            let c = if sub.is_empty() {
                &cmd
            } else {
                cmd.find_subcommand(sub).unwrap()
            };
            let a = c.get_arguments().find(|a| a.get_id() == id).unwrap();
            !a.get_possible_values().is_empty()
        };
        assert!(has_values("", "progress"));
        assert!(has_values("compile", "emit"));
        assert!(has_values("compare", "regenerate"));
    }
}
