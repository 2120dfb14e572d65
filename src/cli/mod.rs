//! The `mgen` command line: argument parsing (clap), dispatch, output and
//! exit codes. One module per subcommand: its arguments (`Args`) and its
//! `run`; this module holds the command list and what they share.
//!
//! Exit status: 0 success, 1 diagnostics (bad input), 2 usage. Nothing here
//! panics on user input; every failure is a rendered diagnostic. Output
//! files are written atomically (a temporary file in the same directory,
//! then a rename), so a failed run never leaves a half-written file.

mod check;
mod compare;
mod compile;
mod finetune;
mod noise;
mod passes;
mod run;
mod sim;

use crate::diag::{Diags, Sources};
use clap::{Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::io::Write;
use std::path::Path;

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
    /// Folder where jointly trained models (`regenerate = joint`) are kept,
    /// keyed by a digest of everything they depend on, so a rerun or a
    /// later command on the same inputs trains nothing again; `none` keeps
    /// them in memory only. Default: $MGEN_CACHE when set, else
    /// `.mgen-cache` in the current directory.
    #[arg(long, global = true, value_name = "DIR")]
    cache: Option<std::path::PathBuf>,
}

/// What every command may use besides its own arguments.
pub struct Global {
    /// The cache folder (`--cache`), `None` for `--cache none`.
    pub cache: Option<std::path::PathBuf>,
}

impl Global {
    fn of(cli: &Cli) -> Global {
        let dir = cli
            .cache
            .clone()
            .or_else(|| std::env::var_os("MGEN_CACHE").map(Into::into))
            .unwrap_or_else(|| ".mgen-cache".into());
        Global {
            cache: (dir.as_os_str() != "none").then_some(dir),
        }
    }

    /// The generator's cache for one command.
    pub fn share_cache(&self) -> crate::passes::share::ShareCache {
        match &self.cache {
            Some(d) => crate::passes::share::ShareCache::on_disk(d.clone()),
            None => Default::default(),
        }
    }
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

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Parse and check a .mgen (or .mir) file: the language, checkpoints
    /// (names, shapes, dtypes, finite values, config.json) and every inputs
    /// file it names.
    Check(check::Args),
    /// Compile a .mgen or .mir file and print (or write) one stage's output.
    Compile(compile::Args),
    /// Run a compiled program directory (`compile --emit program`) on the
    /// simulator.
    Sim(sim::Args),
    /// Compile and run a .mgen file on the simulator (or the float reference).
    Run(run::Args),
    /// The baseline (every task its own model) against mgen, both
    /// simulated, side by side: energy, latency, area, wear, budgets.
    Compare(compare::Args),
    /// Fine-tune one task on its labelled `train` inputs (every encoder
    /// layer and the head; embeddings frozen) and write its checkpoint.
    Finetune(finetune::Args),
    /// List passes and pipelines.
    Passes(passes::Args),
}

impl Cmd {
    /// Whether a failure prints its diagnostics as JSON on stdout too.
    fn json_diagnostics(&self) -> bool {
        match self {
            Cmd::Check(a) => a.json,
            Cmd::Compile(a) => a.json,
            Cmd::Finetune(a) => a.json,
            Cmd::Passes(a) => a.json,
            Cmd::Sim(_) | Cmd::Run(_) | Cmd::Compare(_) => false,
        }
    }
}

fn dispatch(cmd: Cmd, io: &mut Io, sources: &mut Sources, g: &Global) -> Result<i32, Diags> {
    match cmd {
        Cmd::Check(a) => check::run(a, io, sources),
        Cmd::Compile(a) => compile::run(a, io, sources, g),
        Cmd::Sim(a) => sim::run(a, io, sources),
        Cmd::Run(a) => run::run(a, io, sources, g),
        Cmd::Compare(a) => compare::run(a, io, sources, g),
        Cmd::Finetune(a) => finetune::run(a, io, sources),
        Cmd::Passes(a) => passes::run(a, io),
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
    let json = cli.cmd.json_diagnostics();
    let global = Global::of(&cli);
    match dispatch(cli.cmd, io, &mut sources, &global) {
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
            "a new subcommand: list it here (its arguments and `run` go in a module under src/cli/)"
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
