//! Mutation fuzzing of the program-directory door (`mgen sim DIR`): each
//! case mutates one of `program.masm`, `manifest.json` or
//! `crossbars.safetensors` of a tiny compiled program, usually fixes up the
//! SHA-256s in the manifest (so the mutation reaches the parsers, not only
//! the integrity check), and runs `mgen sim DIR` and `mgen sim DIR
//! --counts-only` in-process: every run must end with a result or a coded
//! diagnostic, never a panic, an abort or a hang.
//!
//! `MGEN_FUZZ_CASES=N MGEN_FUZZ_SEED=S cargo test --release --test
//! fuzz_program -- --nocapture` runs deeper and prints a summary.

mod common;
mod fuzzkit;

use common::mgen;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One layer, hidden 16, two heads, on a chip too small for it (two
/// phases, spills): every instruction kind in a few milliseconds a run.
const TINY: &str = "\
hardware hw { crossbar = 16 x 16; chips = 1; tiles = 2; cores_per_tile = 2; crossbars_per_core = 8; }
model m { layers = 1; hidden = 16; heads = 2; ffn = 32; vocab = 100; max_seq = 8; weights = synthetic(seed = 1); }
task a { base = m; head = classify(2); weights = finetuned(seed = 2, drift = 0.02); keep agreement >= 50%; }
task b { base = m; head = embed(mean); weights = finetuned(seed = 3, drift = 0.02); keep cosine >= 0.5; }
task r { base = m; head = regress(pool = mean); weights = finetuned(seed = 5, drift = 0.02); keep cosine >= 0.5; }
workload w { requests = 2; seq = 8; inputs = synthetic(seed = 4); tasks = [a, b, r]; }
";

const FILES: [&str; 3] = ["program.masm", "manifest.json", "crossbars.safetensors"];

/// A run slower than this is a hang (the tiny program runs in milliseconds).
const HANG: Duration = Duration::from_secs(10);

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes the three files; when `fix` and the manifest is a JSON object,
/// with the manifest's SHA-256s made to match the (mutated) files and its
/// own content.
fn write_case(dir: &Path, files: &[Vec<u8>; 3], fix: bool) {
    let [masm, man, st] = files;
    let mut man_bytes = man.clone();
    if fix
        && let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(man)
        && v.is_object()
    {
        if !v["sha256"].is_object() {
            v["sha256"] = serde_json::json!({});
        }
        v["sha256"]["program.masm"] = sha(masm).into();
        v["sha256"]["crossbars.safetensors"] = sha(st).into();
        v["sha256"]["manifest"] = mgen::backend::manifest::digest(&v).into();
        man_bytes = v.to_string().into_bytes();
    }
    std::fs::write(dir.join(FILES[0]), masm).unwrap();
    std::fs::write(dir.join(FILES[1]), man_bytes).unwrap();
    std::fs::write(dir.join(FILES[2]), st).unwrap();
}

/// Compiles [`TINY`] into `dir/p`: the three pristine files.
fn pristine(dir: &Path) -> [Vec<u8>; 3] {
    let p = common::compile_program(TINY, dir);
    let (code, _, err) = mgen(&["sim", p.to_str().unwrap()]);
    assert_eq!(code, 0, "the pristine program must run: {err}");
    FILES.map(|f| std::fs::read(p.join(f)).unwrap())
}

/// One mutation of file `k`, often semantic (a number replaced by an edge
/// value).
fn mutated(files: &[Vec<u8>; 3], k: usize, rng: &mut fuzzkit::Rng) -> [Vec<u8>; 3] {
    let mut out = files.clone();
    // Numbers in the manifest and the assembly are semantic half the time;
    // in the safetensors file, a third of the time (its JSON header).
    out[k] = if rng.below(if k == 2 { 3 } else { 2 }) == 0 {
        fuzzkit::replace_number(&files[k], rng)
    } else {
        fuzzkit::mutate(&files[k], rng)
    };
    out
}

/// The case running now and since when (for the watchdog).
static RUNNING: Mutex<Option<(usize, Instant)>> = Mutex::new(None);

/// Ends the process if one case runs six times [`HANG`]: a hang fails the
/// test with its case number instead of stalling it.
fn watchdog(seed: u64) {
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let now = *RUNNING.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((i, t)) = now
                && t.elapsed() > 6 * HANG
            {
                eprintln!("program directory: case {i} (MGEN_FUZZ_SEED={seed}) hangs");
                std::process::abort();
            }
        }
    });
}

#[derive(Default)]
struct Tally {
    cases: [usize; 3],
    exits: [[usize; 3]; 3],
    slowest: Duration,
}

/// `mgen sim` in both modes (the functional run every fourth case with
/// `--report`, whose charts read the program too).
fn run_both(dir: &Path, i: usize, k: usize, tally: &mut Tally) {
    let d = dir.to_str().unwrap();
    let report = dir.with_extension("report");
    let mut functional = vec!["sim", d];
    if i % 4 == 3 {
        functional.extend(["--report", report.to_str().unwrap()]);
    }
    for args in [functional, vec!["sim", d, "--counts-only"]] {
        let t = Instant::now();
        let (code, _, err) = mgen(&args);
        let took = t.elapsed();
        fuzzkit::assert_clean("program directory", code, &err);
        assert!(
            took < HANG,
            "`mgen {}` took {took:?}: a hang",
            args.join(" ")
        );
        tally.slowest = tally.slowest.max(took);
        tally.exits[k][code.clamp(0, 2) as usize] += 1;
    }
}

#[test]
fn the_program_directory_door_survives_mutation() {
    fuzzkit::cap_memory(8);
    let tmp = tempfile::tempdir().unwrap();
    let files = pristine(tmp.path());
    let dir = tmp.path().join("case");
    std::fs::create_dir(&dir).unwrap();
    let (n, seed) = (fuzzkit::cases(fuzzkit::DEFAULT_CASES), fuzzkit::seed());
    let mut rng = fuzzkit::Rng::new(seed);
    let mut tally = Tally::default();
    watchdog(seed);
    let t = Instant::now();
    for i in 0..n {
        *RUNNING.lock().unwrap() = Some((i, Instant::now()));
        let k = i % 3;
        let case = mutated(&files, k, &mut rng);
        // One case in ten keeps the stale digests: the integrity check's turn.
        let fix = rng.below(10) != 0;
        write_case(&dir, &case, fix);
        tally.cases[k] += 1;
        fuzzkit::run_case("program directory", i, seed, &case[k], |_| {
            run_both(&dir, i, k, &mut tally)
        });
    }
    let secs = t.elapsed().as_secs_f64();
    for (k, f) in FILES.iter().enumerate() {
        eprintln!(
            "fuzz_program: {f}: {} cases, runs exiting 0/1/2: {:?}",
            tally.cases[k], tally.exits[k]
        );
    }
    eprintln!(
        "fuzz_program: {n} cases (seed {seed}) in {secs:.1} s ({:.2} s per 1000), slowest run {:?}; no panic, abort or hang",
        secs * 1000.0 / n.max(1) as f64,
        tally.slowest
    );
    // Mutations must reach past the integrity check to the parsers.
    let rejected: usize = tally.exits.iter().map(|e| e[1]).sum();
    assert!(rejected > 0 && tally.exits.iter().any(|e| e[0] > 0));
}
