//! File-driven golden tests, one trial per file (libtest-mimic), named by
//! its path: `cargo test --release --test golden E207` runs the cases whose
//! path contains `E207`.
//!
//! - `tests/golden/cases/NAME.mgen` (or `.mir`): the first line is
//!   `// RUN: ARGS`, where `%s` stands for the file's own path.
//! - `tests/golden/cmds/NAME.cmd`: one line of arguments (paths relative to
//!   the repository root).
//!
//! Each has `NAME.out` beside it: the exit status, stdout and stderr of
//! `mgen ARGS` (run in-process, no colour). `BLESS=1 cargo test --release
//! --test golden` rewrites the `.out` files; review the diff before
//! committing. The per-pass file tests are tests/filetests.rs, on the same
//! conventions (tests/runfile).
//!
//! `every_code_has_a_golden_case` is a trial of its own. It reads the `.out`
//! files; under `BLESS=1` it checks the outcomes being written instead, so
//! it neither races the rewriting nor sees the old files.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use libtest_mimic::{Arguments, Failed, Trial};

mod common;
mod runfile;

/// A case or cmd file and its outcome, computed once by whichever trial
/// needs it first.
struct Case {
    path: PathBuf,
    outcome: OnceLock<String>,
}

impl Case {
    /// The arguments: a case's RUN line, or a cmd file's one line.
    fn args(&self) -> Result<Vec<String>, Failed> {
        if self.path.extension().is_some_and(|e| e == "cmd") {
            let line = fs::read_to_string(&self.path)
                .map_err(|e| format!("{}: {e}", self.path.display()))?;
            Ok(runfile::split_args(line.trim()))
        } else {
            runfile::run_line(&self.path)
        }
    }

    fn outcome(&self) -> Result<&str, Failed> {
        let args = self.args()?;
        Ok(self.outcome.get_or_init(|| runfile::outcome(&args)))
    }
}

fn cases() -> Vec<Case> {
    let mut paths = runfile::files(Path::new("tests/golden/cases"), &["mgen", "mir"]);
    paths.extend(runfile::files(Path::new("tests/golden/cmds"), &["cmd"]));
    paths
        .into_iter()
        .map(|path| Case {
            path,
            outcome: OnceLock::new(),
        })
        .collect()
}

fn main() {
    let args = Arguments::from_args();
    let cases = Arc::new(cases());
    let mut trials: Vec<Trial> = (0..cases.len())
        .map(|i| {
            let cases = Arc::clone(&cases);
            Trial::test(cases[i].path.display().to_string(), move || {
                let case = &cases[i];
                runfile::check(&case.path, case.outcome()?)
            })
        })
        .collect();
    trials.push(Trial::test("every_code_has_a_golden_case", move || {
        every_code_has_a_golden_case(&cases)
    }));
    libtest_mimic::run(&args, trials).exit();
}

/// Every error code listed in docs/diagnostics.md has a golden case whose
/// output shows it, and every case named `E...` shows its code.
fn every_code_has_a_golden_case(cases: &[Case]) -> Result<(), Failed> {
    let ensure = |ok: bool, msg: String| if ok { Ok(()) } else { Err(Failed::from(msg)) };
    ensure(cases.len() > 20, "golden cases missing".into())?;
    let doc = fs::read_to_string("docs/diagnostics.md").unwrap();
    let codes: Vec<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| E"))
        .map(|rest| format!("E{}", &rest[..3]))
        .collect();
    ensure(
        codes.len() >= 20,
        "codes table missing from docs/diagnostics.md".into(),
    )?;
    // Under BLESS the outcomes being written; else the files as they are.
    let outs: Vec<String> = if runfile::blessing() {
        cases
            .iter()
            .map(|c| c.outcome().map(str::to_string))
            .collect::<Result<_, _>>()?
    } else {
        cases
            .iter()
            .map(|c| fs::read_to_string(runfile::expected_path(&c.path)).unwrap_or_default())
            .collect()
    };
    // Codes whose rows say they are covered by tests/backend.rs need a valid
    // program directory to reach; they are asserted there.
    let elsewhere: Vec<String> = doc
        .lines()
        .filter(|l| {
            l.starts_with("| E")
                && (l.contains("(tests/backend.rs)")
                    || l.contains("(crates/mgen-util/src/diag.rs)"))
        })
        .map(|l| l[2..6].to_string())
        .collect();
    for c in codes.iter().filter(|c| !elsewhere.contains(c)) {
        ensure(
            outs.iter().any(|o| o.contains(&format!("error[{c}]"))),
            format!("no golden case shows {c}"),
        )?;
    }
    for (case, out) in cases.iter().zip(&outs) {
        let name = case.path.file_stem().unwrap().to_string_lossy().to_string();
        if let Some(code) = name
            .get(..4)
            .filter(|c| c.starts_with('E') && c[1..].chars().all(|x| x.is_ascii_digit()))
        {
            ensure(
                out.contains(&format!("error[{code}]")),
                format!("{} does not show {code}", case.path.display()),
            )?;
            ensure(
                out.starts_with("exit: 1\n"),
                format!("{} must exit with status 1", case.path.display()),
            )?;
        }
    }
    Ok(())
}
