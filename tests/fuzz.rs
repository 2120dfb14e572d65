//! Fuzz-style property tests of the front end: any bytes give `Ok` or
//! diagnostics — never a panic — and diagnostics always render.

mod fuzzkit;

use mgen::diag::Sources;
use mgen::driver;
use proptest::prelude::*;

fn quickstart() -> String {
    std::fs::read_to_string("examples/quickstart.mgen").unwrap()
}

/// Parses, checks and (for small models) lowers and runs `exact`; returns
/// whether it succeeded ([`fuzzkit::source_door`]). Panics only if mgen
/// panics or reports an error without a diagnostic.
fn run_all(bytes: &[u8], mir: bool) -> bool {
    fuzzkit::source_door(bytes, mir) != fuzzkit::Outcome::Rejected
}

#[test]
fn examples_pass() {
    assert!(run_all(quickstart().as_bytes(), false));
    // The quickstart is above the fuzz's lowering size: lower it here.
    let mut sources = Sources::new();
    let f =
        driver::front_bytes(&mut sources, "q.mgen", quickstart().as_bytes(), ".", false).unwrap();
    let mut m = driver::module(f, &sources).unwrap();
    mgen::passes::run_pipeline(
        &mut m,
        &mut Default::default(),
        &mgen::passes::resolve("exact").unwrap(),
        &mgen::passes::Context::default(),
        |_, _| {},
    )
    .unwrap();
}

#[test]
fn edge_inputs_never_panic() {
    let big_line = format!("model m {{ layers = {}; }}", "9".repeat(10 << 20));
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        b"\0\0\0".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x80],
        "{".repeat(100_000).into_bytes(),
        "[".repeat(100_000).into_bytes(),
        big_line.into_bytes(),
        "workload w { tasks = [".repeat(1000).into_bytes(),
        b"model m { layers = 1e400; }".to_vec(),
        b"model m { layers = -1; hidden = 1.5; }".to_vec(),
        "é∑ model ✓ { }".as_bytes().to_vec(),
        b"\"".to_vec(),
        b"/*".to_vec(),
        b"%999999999999999999999999 = x(); $1 = y;".to_vec(),
    ];
    for c in cases {
        assert!(!run_all(&c, false));
        assert!(!run_all(&c, true));
    }
}

fn mutate(src: &str, kind: u8, a: usize, b: usize, junk: &[u8]) -> Vec<u8> {
    let bytes = src.as_bytes();
    let lines: Vec<&str> = src.lines().collect();
    match kind % 5 {
        // truncate
        0 => bytes[..a % (bytes.len() + 1)].to_vec(),
        // delete a line
        1 => {
            let k = a % lines.len();
            lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != k)
                .map(|(_, l)| *l)
                .collect::<Vec<_>>()
                .join("\n")
                .into_bytes()
        }
        // replace the k-th number with another
        2 => {
            let mut out = String::new();
            let mut count = 0;
            let mut chars = src.chars().peekable();
            let k = a % 40;
            let replacements = [
                "0",
                "1",
                "3",
                "-7",
                "1e30",
                "65537",
                "0.5",
                "999999999999",
                "2",
                "4096",
            ];
            while let Some(c) = chars.next() {
                if c.is_ascii_digit() {
                    let mut num = c.to_string();
                    while let Some(&d) = chars.peek() {
                        if d.is_ascii_digit() || d == '.' {
                            num.push(d);
                            chars.next();
                        } else {
                            break;
                        }
                    }
                    out.push_str(if count == k {
                        replacements[b % replacements.len()]
                    } else {
                        &num
                    });
                    count += 1;
                } else {
                    out.push(c);
                }
            }
            out.into_bytes()
        }
        // insert random bytes
        3 => {
            let at = a % (bytes.len() + 1);
            let mut v = bytes[..at].to_vec();
            v.extend_from_slice(junk);
            v.extend_from_slice(&bytes[at..]);
            v
        }
        // swap two lines
        _ => {
            let mut ls = lines.clone();
            let (i, j) = (a % ls.len(), b % ls.len());
            ls.swap(i, j);
            ls.join("\n").into_bytes()
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn mutated_examples_never_panic(kind in 0u8..5, a in 0usize..100_000, b in 0usize..1000, junk in proptest::collection::vec(any::<u8>(), 0..12)) {
        let src = quickstart();
        let m = mutate(&src, kind, a, b, &junk);
        run_all(&m, false);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        run_all(&bytes, false);
        run_all(&bytes, true);
    }

    #[test]
    fn random_token_soup_never_panics(toks in proptest::collection::vec(prop::sample::select(vec![
        "hardware", "model", "task", "workload", "graph", "keep", "x", "=", ";", "{", "}", "(", ")", "[", "]",
        ",", ":", "%", "-", ">=", "128", "1.5", "\"s\"", "%3", "$1", "pJ", "seed", "layers", "reference", "×",
    ]), 0..60)) {
        let src = toks.join(" ");
        run_all(src.as_bytes(), false);
        run_all(src.as_bytes(), true);
    }
}

#[test]
fn mutated_mir_never_panics() {
    // A small .mir, mutated line by line.
    let mut sources = Sources::new();
    let f = driver::front_bytes(
        &mut sources,
        "q.mgen",
        quickstart().as_bytes(),
        "examples",
        false,
    )
    .unwrap();
    let m = driver::module(f, &sources).unwrap();
    let text = mgen::ir::print::print(&m);
    let lines: Vec<&str> = text.lines().collect();
    for (i, _) in lines.iter().enumerate().step_by(7) {
        let mut ls = lines.clone();
        ls.remove(i);
        run_all(ls.join("\n").as_bytes(), true);
        let mut ls = lines.clone();
        ls[i] = "%1 = add(%0, %0) : [32] (tasks = [sentiment], layer = 0, at = \"x:1:1\");";
        run_all(ls.join("\n").as_bytes(), true);
    }
}
