//! File-driven golden tests.
//!
//! - `tests/golden/cases/NAME.mgen` (or `.mir`): the first line is
//!   `// RUN: ARGS`, where `%s` stands for the file's own path.
//! - `tests/golden/cmds/NAME.cmd`: one line of arguments (paths relative to
//!   the repository root).
//!
//! Each has `NAME.out` beside it: the exit status, stdout and stderr of
//! `mgen ARGS` (run in-process, no colour). `BLESS=1 cargo test --test
//! golden` rewrites the `.out` files; review the diff before committing.

use std::fs;
use std::path::{Path, PathBuf};

mod common;

fn run(args: &[String]) -> String {
    let (code, out, err) = common::mgen(args);
    format!("exit: {code}\n--- stdout\n{out}--- stderr\n{err}")
}

fn split_args(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

fn cases() -> Vec<(PathBuf, Vec<String>)> {
    let mut v = Vec::new();
    let mut entries: Vec<_> = fs::read_dir("tests/golden/cases")
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext != "mgen" && ext != "mir" {
            continue;
        }
        let bytes = fs::read(&p).unwrap();
        let first = String::from_utf8_lossy(&bytes)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        let run = first
            .strip_prefix("// RUN: ")
            .unwrap_or_else(|| panic!("{}: first line must be `// RUN: ARGS`", p.display()));
        let path = p.display().to_string();
        v.push((p.clone(), split_args(&run.replace("%s", &path))));
    }
    let mut cmds: Vec<_> = fs::read_dir("tests/golden/cmds")
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cmds.sort();
    for p in cmds {
        if p.extension().and_then(|e| e.to_str()) != Some("cmd") {
            continue;
        }
        let line = fs::read_to_string(&p).unwrap();
        v.push((p.clone(), split_args(line.trim())));
    }
    v
}

fn expected_path(p: &Path) -> PathBuf {
    p.with_extension("out")
}

#[test]
fn golden_files() {
    let bless = std::env::var_os("BLESS").is_some();
    let mut failures = Vec::new();
    let all = cases();
    assert!(all.len() > 20, "golden cases missing");
    for (path, args) in all {
        let actual = run(&args);
        let exp = expected_path(&path);
        if bless {
            fs::write(&exp, &actual).unwrap();
            continue;
        }
        match fs::read_to_string(&exp) {
            Ok(e) if e == actual => {}
            Ok(e) => failures.push(format!(
                "{}: output differs\n--- expected\n{e}\n--- actual\n{actual}",
                path.display()
            )),
            Err(_) => failures.push(format!(
                "{}: no {} (run with BLESS=1)",
                path.display(),
                exp.display()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden mismatch(es):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every error code listed in docs/diagnostics.md has a golden case whose
/// output shows it, and every case named `E...` shows its code.
#[test]
fn every_code_has_a_golden_case() {
    let doc = fs::read_to_string("docs/diagnostics.md").unwrap();
    let codes: Vec<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| E"))
        .map(|rest| format!("E{}", &rest[..3]))
        .collect();
    assert!(
        codes.len() >= 20,
        "codes table missing from docs/diagnostics.md"
    );
    let outs: Vec<String> = cases()
        .iter()
        .map(|(p, _)| fs::read_to_string(expected_path(p)).unwrap_or_default())
        .collect();
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
        assert!(
            outs.iter().any(|o| o.contains(&format!("error[{c}]"))),
            "no golden case shows {c}"
        );
    }
    for (p, _) in cases() {
        let name = p.file_stem().unwrap().to_string_lossy().to_string();
        if let Some(code) = name
            .get(..4)
            .filter(|c| c.starts_with('E') && c[1..].chars().all(|x| x.is_ascii_digit()))
        {
            let out = fs::read_to_string(expected_path(&p)).unwrap_or_default();
            assert!(
                out.contains(&format!("error[{code}]")),
                "{} does not show {code}",
                p.display()
            );
            assert!(
                out.starts_with("exit: 1\n"),
                "{} must exit with status 1",
                p.display()
            );
        }
    }
}
