//! The half that tests/golden.rs and tests/filetests.rs share: a test file
//! names its command on its first line, `// RUN: ARGS` (`%s` stands for the
//! file's own path), and its expected outcome is `NAME.out` beside it — the
//! exit status, stdout and stderr of `mgen ARGS`, run in-process without
//! colour. `BLESS=1` rewrites the `.out` files instead of comparing them.
//!
//! A test crate that uses this module declares `mod common;` too.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use libtest_mimic::Failed;

use crate::common;

/// Whether this run rewrites the expected files (`BLESS=1`).
pub fn blessing() -> bool {
    std::env::var_os("BLESS").is_some()
}

/// Splits a command line at whitespace (no quoting: test paths have no spaces).
pub fn split_args(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

/// The arguments of `path`'s first line, `// RUN: ARGS`, with `%s` replaced
/// by `path` itself.
pub fn run_line(path: &Path) -> Result<Vec<String>, Failed> {
    let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let first = text.lines().next().unwrap_or("");
    let args = first
        .strip_prefix("// RUN: ")
        .ok_or_else(|| format!("{}: first line must be `// RUN: ARGS`", path.display()))?;
    Ok(split_args(&args.replace("%s", &path.display().to_string())))
}

/// `mgen ARGS` in-process, as one text: the format of a `.out` file.
pub fn outcome(args: &[String]) -> String {
    let (code, out, err) = common::mgen(args);
    format!("exit: {code}\n--- stdout\n{out}--- stderr\n{err}")
}

/// A test file's expected outcome: `NAME.out` beside `NAME.EXT`.
pub fn expected_path(test: &Path) -> PathBuf {
    test.with_extension("out")
}

/// Compares `actual` with `test`'s `.out` file; under `BLESS=1` writes it
/// instead. A mismatch names both files and shows a line diff.
pub fn check(test: &Path, actual: &str) -> Result<(), Failed> {
    let exp = expected_path(test);
    if blessing() {
        return fs::write(&exp, actual)
            .map_err(|e| format!("{}: cannot write: {e}", exp.display()).into());
    }
    match fs::read_to_string(&exp) {
        Ok(e) if e == actual => Ok(()),
        Ok(e) => Err(format!(
            "{}: the outcome differs from {} (`-` expected, `+` actual; BLESS=1 rewrites it)\n{}",
            test.display(),
            exp.display(),
            diff(&e, actual)
        )
        .into()),
        Err(_) => Err(format!(
            "{}: no {} (BLESS=1 writes it); the outcome:\n{}",
            test.display(),
            exp.display(),
            diff("", actual)
        )
        .into()),
    }
}

/// The files under `dir` (and its subdirectories) whose extension is one of
/// `exts`, sorted by path.
pub fn files(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if exts.iter().any(|x| p.extension().is_some_and(|e| e == *x)) {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

/// Lines of context around each change in [`diff`].
const CONTEXT: usize = 3;
/// [`diff`] stops after this many lines.
const MAX_LINES: usize = 120;

/// A line diff of `expected` and `actual` (longest common subsequence), in
/// hunks with a few lines of context, `-` expected and `+` actual.
pub fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    if a.len().saturating_mul(b.len()) > 16_000_000 {
        return format!("--- expected\n{expected}\n--- actual\n{actual}");
    }
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let w = b.len() + 1;
    let mut lcs = vec![0u32; (a.len() + 1) * w];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i * w + j] = if a[i] == b[j] {
                lcs[(i + 1) * w + j + 1] + 1
            } else {
                lcs[(i + 1) * w + j].max(lcs[i * w + j + 1])
            };
        }
    }
    // The edit script: (' ' | '-' | '+', expected line number, line).
    let mut ops = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', i, a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[(i + 1) * w + j] >= lcs[i * w + j + 1]) {
            ops.push(('-', i, a[i]));
            i += 1;
        } else {
            ops.push(('+', i, b[j]));
            j += 1;
        }
    }
    if expected.ends_with('\n') != actual.ends_with('\n') {
        ops.push(('!', a.len(), "(the two differ in their final newline)"));
    }
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != ' ').collect();
    let mut out = String::new();
    let mut lines = 0;
    let mut last = None;
    for &k in &changed {
        let from = k.saturating_sub(CONTEXT);
        let start = match last {
            Some(l) if from <= l + 1 => l + 1,
            _ => {
                let _ = writeln!(out, "@@ expected line {} @@", ops[from].1 + 1);
                from
            }
        };
        let end = (k + CONTEXT).min(ops.len() - 1);
        for op in &ops[start..=end] {
            if lines == MAX_LINES {
                out.push_str("... (diff cut)\n");
                return out;
            }
            let _ = writeln!(out, "{}{}", op.0, op.2);
            lines += 1;
        }
        last = Some(end);
    }
    out
}
