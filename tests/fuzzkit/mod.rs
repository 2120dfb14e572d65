//! A small, seeded mutation fuzzer shared by the door fuzz tests
//! (`tests/fuzz_*.rs`): each door takes a valid seed input, mutates it a
//! bounded number of times and checks that mgen answers with a result or a
//! diagnostic (exit 0, 1 or 2), never a panic or an abort.
//!
//! - Case count: `MGEN_FUZZ_CASES` (default [`DEFAULT_CASES`]); the seed:
//!   `MGEN_FUZZ_SEED` (default 1). `scripts/fuzz.sh` runs deeper.
//! - Memory: [`cap_memory`] limits the test process's address space, so a
//!   size that slips past a check fails fast instead of swapping.
//! - Mutations are deterministic given the seed: a failure prints the case
//!   number and seed, and `MGEN_FUZZ_SEED=S MGEN_FUZZ_CASES=N` replays it.
#![allow(dead_code)]

/// Cases per door in `cargo test` (bounded: a few seconds a door).
pub const DEFAULT_CASES: usize = 2000;

/// How many cases to run: `MGEN_FUZZ_CASES`, or `default`.
pub fn cases(default: usize) -> usize {
    std::env::var("MGEN_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The base seed: `MGEN_FUZZ_SEED`, or 1.
pub fn seed() -> u64 {
    std::env::var("MGEN_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// Caps the process's address space at `gib` GiB (Linux; elsewhere a no-op).
pub fn cap_memory(gib: u64) {
    #[cfg(target_os = "linux")]
    unsafe {
        let lim = libc::rlimit {
            rlim_cur: gib << 30,
            rlim_max: libc::RLIM_INFINITY,
        };
        libc::setrlimit(libc::RLIMIT_AS, &lim);
    }
}

/// A splitmix64 generator: small, seeded, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Numbers that find edges: zero, signs, powers of two around the integer
/// widths, floats that overflow, non-finite spellings.
pub const INTERESTING: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "7",
    "255",
    "256",
    "65535",
    "65536",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967301",
    "9007199254740993",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "1e308",
    "1e309",
    "-1e308",
    "1e-320",
    "0.5",
    "-0.0",
    "NaN",
    "nan",
    "inf",
    "Infinity",
];

/// One mutation of `input`: a byte flip, an insertion of junk or of an
/// interesting number, a deletion, a duplicated slice, a truncation, or a
/// number replaced by an interesting one. Several may be stacked.
pub fn mutate(input: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = input.to_vec();
    let rounds = 1 + rng.below(3);
    for _ in 0..rounds {
        let len = v.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(at..at, junk);
            }
            2 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(16)).min(len);
                v.drain(a..b);
            }
            3 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64)).min(len);
                let slice = v[a..b].to_vec();
                let at = rng.below(v.len() + 1);
                v.splice(at..at, slice);
            }
            4 => v.truncate(rng.below(len + 1)),
            5 => {
                let at = rng.below(len + 1);
                let s = INTERESTING[rng.below(INTERESTING.len())]
                    .as_bytes()
                    .to_vec();
                v.splice(at..at, s);
            }
            _ => v = replace_number(&v, rng),
        }
    }
    v
}

/// Replaces one run of ASCII digits (with an optional sign, point and
/// exponent) by an interesting number.
pub fn replace_number(input: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < input.len() {
        if input[i].is_ascii_digit() {
            let start = if i > 0 && input[i - 1] == b'-' {
                i - 1
            } else {
                i
            };
            while i < input.len()
                && (input[i].is_ascii_digit() || matches!(input[i], b'.' | b'e' | b'E' | b'+'))
            {
                i += 1;
            }
            runs.push(start..i);
        } else {
            i += 1;
        }
    }
    if runs.is_empty() {
        return input.to_vec();
    }
    let r = runs[rng.below(runs.len())].clone();
    let mut v = input[..r.start].to_vec();
    v.extend_from_slice(INTERESTING[rng.below(INTERESTING.len())].as_bytes());
    v.extend_from_slice(&input[r.end..]);
    v
}

/// Runs `f` on case `i`; a panic is re-raised with the case number and the
/// seed, so the failure can be replayed.
pub fn run_case(door: &str, i: usize, seed: u64, input: &[u8], f: impl FnOnce(&[u8])) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(input)));
    if let Err(e) = r {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let shown = String::from_utf8_lossy(&input[..input.len().min(400)]).into_owned();
        panic!(
            "{door}: case {i} (MGEN_FUZZ_SEED={seed}) panicked: {msg}\ninput (first 400 bytes):\n{shown}"
        );
    }
}

/// Asserts an in-process `mgen` run ended as a user-facing result: exit 0,
/// 1 (with a coded diagnostic) or 2 (usage), and no internal error.
pub fn assert_clean(door: &str, code: i32, err: &str) {
    assert!(
        matches!(code, 0..=2),
        "{door}: exit {code} is neither 0, 1 nor 2\n{err}"
    );
    if code == 1 {
        assert!(
            err.contains("error[E"),
            "{door}: exit 1 without a code\n{err}"
        );
    }
    assert!(!err.contains("panicked at"), "{door}: {err}");
}

/// Runs each of `runs` through `mgen` (the in-process CLI of
/// tests/common) until one fails, asserting each ended cleanly
/// ([`assert_clean`]); returns whether the input was rejected.
pub fn rejected(
    door: &str,
    runs: &[Vec<&str>],
    mgen: impl Fn(&[&str]) -> (i32, String, String),
) -> bool {
    for args in runs {
        let (code, _, err) = mgen(args);
        assert_clean(door, code, &err);
        if code != 0 {
            return true;
        }
    }
    false
}

/// How far a source file got through [`source_door`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Refused with coded diagnostics.
    Rejected,
    /// Parsed and checked; too large to lower cheaply.
    Checked,
    /// Also lowered, run through `exact` and printed.
    Lowered,
}

/// The source door: parse and check `bytes` as a `.mgen` (or `.mir`), and
/// for small models (at most 2^20 parameters, 8 tasks) lower them and run
/// the `exact` pipeline. Panics only if mgen panics or reports an error
/// without a coded, renderable diagnostic.
pub fn source_door(bytes: &[u8], mir: bool) -> Outcome {
    let mut sources = mgen::diag::Sources::new();
    let name = if mir { "fuzz.mir" } else { "fuzz.mgen" };
    let result = mgen::driver::front_bytes(&mut sources, name, bytes, ".", mir).and_then(|f| {
        // Lowering makes every weight: keep it to small models.
        let small =
            f.spec.models.iter().all(|m| m.params() <= 1 << 20) && f.spec.workload.tasks.len() <= 8;
        if !small {
            return Ok(Outcome::Checked);
        }
        let mut m = mgen::driver::module(f, &sources)?;
        mgen::passes::run_pipeline(
            &mut m,
            &mut Default::default(),
            &mgen::passes::resolve("exact")?,
            &mgen::passes::Context::default(),
            |_, _| {},
        )?;
        let _ = mgen::ir::print::print(&m);
        Ok(Outcome::Lowered)
    });
    match result {
        Ok(o) => o,
        Err(d) => {
            assert!(!d.is_empty(), "an error without a diagnostic");
            let text = d.render(&sources, false);
            assert!(text.contains("error[E"), "{text}");
            Outcome::Rejected
        }
    }
}
