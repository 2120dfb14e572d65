//! Benchmark: the model generator's search, end to end through the CLI.
//!
//! Times `mgen compile FILE --cache none` (parse, weights, the search,
//! placement, scheduling, codegen; the search is all but a second of it)
//! and reads its peak resident memory from the kernel (`getrusage` of the
//! child). Files: `glue8-mini.mgen` and `glue8.mgen` reduced to its first
//! four tasks on 16 requests (the whole of `glue8.mgen` takes minutes:
//! `MGEN_BENCH_FULL=1` adds it). One run each, as a ratio to the first
//! file's time measured in the same run. `cargo bench --bench share`.

use std::process::Command;
use std::time::Instant;

/// (seconds, peak RSS in MiB) of one compile.
fn compile(file: &str) -> (f64, f64) {
    let out = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_mgen"))
        .args([
            "--cache",
            "none",
            "compile",
            file,
            "--progress",
            "none",
            "-o",
        ])
        .arg(out.path().join("prog"))
        .status()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(status.success(), "mgen compile {file} failed");
    (secs, peak_rss_mib())
}

/// The largest resident set of any child waited for so far, in MiB.
fn peak_rss_mib() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable rusage for the call to fill.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    u.ru_maxrss as f64 / 1024.0
}

/// glue8.mgen with its first four tasks and 16 requests, in a temp dir.
fn reduced_glue8(dir: &std::path::Path) -> String {
    let src = std::fs::read_to_string("examples/glue8.mgen").unwrap();
    let src = src.replace("requests = 64;", "requests = 16;").replace(
        "tasks  = [sst2, mnli, qqp, qnli, cola, stsb, mrpc, rte];",
        "tasks  = [sst2, mnli, qqp, qnli];",
    );
    let path = dir.join("glue8-reduced.mgen");
    std::fs::write(&path, src).unwrap();
    path.to_string_lossy().into_owned()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = vec![
        "examples/glue8-mini.mgen".to_string(),
        reduced_glue8(dir.path()),
    ];
    if std::env::var_os("MGEN_BENCH_FULL").is_some() {
        files.push("examples/glue8.mgen".into());
    }
    println!("threads: {}", rayon::current_num_threads());
    let mut first = None;
    for f in &files {
        let (s, rss) = compile(f);
        let base = *first.get_or_insert(s);
        println!(
            "mgen compile {f}: {s:.1} s ({:.2}x the first), peak RSS so far {rss:.0} MiB",
            s / base
        );
    }
}
