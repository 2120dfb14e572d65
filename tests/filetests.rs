//! Per-pass file tests, after cranelift's filetests: `tests/filetests/PASS/NAME.mir`
//! for every pass `mgen passes` lists, one trial per file, named by its path
//! (`cargo test --release --test filetests merge` runs the `merge` ones).
//!
//! A file is a `.mir` module whose first line is `// RUN: ARGS` (`%s` is the
//! file's own path), usually `compile %s --passes PASS --emit STAGE`; the
//! comment lines after it say what the case shows. Its expected outcome —
//! exit status, stdout, stderr — is `NAME.out` beside it, as in
//! tests/golden (the shared half is tests/runfile). `BLESS=1 cargo test
//! --release --test filetests` rewrites the `.out` files; review the diff
//! before committing.
//!
//! `every_pass_has_filetests` checks the layout: a directory per registered
//! pass with at least two cases, no directory that names no pass, and no
//! `.out` without its `.mir`.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use libtest_mimic::{Arguments, Failed, Trial};

mod common;
mod runfile;

const ROOT: &str = "tests/filetests";

fn main() {
    let args = Arguments::from_args();
    let mut trials: Vec<Trial> = runfile::files(Path::new(ROOT), &["mir"])
        .into_iter()
        .map(|path| {
            Trial::test(path.display().to_string(), move || {
                let actual = runfile::outcome(&runfile::run_line(&path)?);
                runfile::check(&path, &actual)
            })
        })
        .collect();
    trials.push(Trial::test(
        "every_pass_has_filetests",
        every_pass_has_filetests,
    ));
    libtest_mimic::run(&args, trials).exit();
}

fn every_pass_has_filetests() -> Result<(), Failed> {
    let passes: BTreeSet<String> = common::json_of(&["passes", "--json"])["passes"]
        .as_array()
        .ok_or("`mgen passes --json` has no `passes` list")?
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    let mut problems = Vec::new();
    for pass in &passes {
        let dir = Path::new(ROOT).join(pass);
        let n = if dir.is_dir() {
            runfile::files(&dir, &["mir"]).len()
        } else {
            0
        };
        if n < 2 {
            problems.push(format!(
                "pass `{pass}` has {n} file test(s) in {}; give it at least two",
                dir.display()
            ));
        }
    }
    for e in fs::read_dir(ROOT).map_err(|e| format!("{ROOT}: {e}"))? {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if p.is_dir() && !passes.contains(&name) {
            problems.push(format!(
                "{}: `{name}` is not a registered pass",
                p.display()
            ));
        }
    }
    for out in runfile::files(Path::new(ROOT), &["out"]) {
        if !out.with_extension("mir").exists() {
            problems.push(format!("{}: no .mir beside it", out.display()));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n").into())
    }
}
