//! Bounded mutation fuzz of the two source doors: `.mgen` files and the
//! textual IR (`.mir`). Each case mutates a valid file (every bundled
//! example, and the quickstart's printed IR), then parses, checks and —
//! for small models — lowers it and runs the exact-merge pipeline. Any
//! outcome but a result or coded diagnostics (a panic, an error without a
//! diagnostic) fails, naming the case and seed (tests/fuzzkit).

mod fuzzkit;

use mgen::diag::Sources;
use mgen::driver;

/// Whether the case got through lowering ([`fuzzkit::source_door`]).
fn front_and_lower(bytes: &[u8], mir: bool) -> bool {
    fuzzkit::source_door(bytes, mir) == fuzzkit::Outcome::Lowered
}

/// A small spec: mutations of it reach lowering often.
const SMALL: &str = "hardware h { crossbar = 32 x 32; }
model m { layers = 2; hidden = 16; heads = 2; ffn = 32; vocab = 100; max_seq = 8;
          weights = synthetic(seed = 1); }
task a { base = m; head = classify(2); weights = finetuned(seed = 2, drift = 0.02);
         keep agreement >= 90%; }
task b { base = m; head = regress; weights = finetuned(seed = 3, drift = 0.02); }
task c { base = m; head = embed(mean); weights = finetuned(seed = 4, drift = 0.02);
         keep cosine >= 0.99; }
workload w { requests = 2; seq = 8; inputs = synthetic(seed = 3); tasks = [a, b, c]; }
";

fn mgen_seeds() -> Vec<Vec<u8>> {
    let mut seeds = vec![SMALL.as_bytes().to_vec()];
    let mut paths: Vec<_> = std::fs::read_dir("examples")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mgen"))
        .collect();
    paths.sort();
    seeds.extend(paths.iter().map(|p| std::fs::read(p).unwrap()));
    seeds
}

fn mir_seed() -> Vec<u8> {
    let mut sources = Sources::new();
    let f = driver::front_bytes(&mut sources, "s.mgen", SMALL.as_bytes(), ".", false).unwrap();
    let m = driver::module(f, &sources).unwrap();
    mgen::ir::print::print(&m).into_bytes()
}

fn fuzz(door: &str, seeds: &[Vec<u8>], mir: bool) {
    fuzzkit::cap_memory(8);
    let (n, seed) = (fuzzkit::cases(fuzzkit::DEFAULT_CASES), fuzzkit::seed());
    let mut rng = fuzzkit::Rng::new(seed);
    let mut lowered = 0;
    for i in 0..n {
        // The small seed half the time: its mutations get furthest.
        let s = if rng.below(2) == 0 {
            &seeds[0]
        } else {
            &seeds[rng.below(seeds.len())]
        };
        // A third of the cases change one number only: those pass the
        // parser and probe the checker's ranges and the lowering's sizes.
        let input = if rng.below(3) == 0 {
            fuzzkit::replace_number(s, &mut rng)
        } else {
            fuzzkit::mutate(s, &mut rng)
        };
        fuzzkit::run_case(door, i, seed, &input, |b| {
            lowered += front_and_lower(b, mir) as usize;
        });
    }
    // Mutations must not only be rejected: some reach the deep stages.
    assert!(
        lowered * 20 >= n,
        "{door}: only {lowered} of {n} mutated cases got through lowering"
    );
}

#[test]
fn fuzz_mgen_door() {
    fuzz("mgen", &mgen_seeds(), false);
}

#[test]
fn fuzz_mir_door() {
    fuzz("mir", &[mir_seed()], true);
}

#[test]
fn the_seeds_lower() {
    assert!(front_and_lower(SMALL.as_bytes(), false));
    assert!(front_and_lower(&mir_seed(), true));
}
