//! The README's commands on a pseudo-terminal, as a person types them.
//!
//! CI has no terminal, and a hang that happened only when stderr was one
//! (progress bars ticking from worker threads while the main thread held
//! stderr's lock) once shipped unnoticed. Each test runs the built `mgen`
//! with stdin, stdout and stderr on a pty, with a generous timeout, and
//! checks that it finishes, succeeds and drew its progress.

use portable_pty::{CommandBuilder, NativePtySystem, PtySize, PtySystem};
use std::io::Read;
use std::time::{Duration, Instant};

/// Generous: the slowest command here takes ~10 s alone on 2 cores.
const TIMEOUT: Duration = Duration::from_secs(600);

/// Runs `mgen ARGS` on a pty; returns its exit status and everything it
/// drew. Panics (fails the test) if it does not finish within [`TIMEOUT`].
fn on_pty(args: &[&str]) -> (u32, String) {
    let pair = NativePtySystem::default()
        .openpty(PtySize {
            rows: 40,
            cols: 120,
            pixel_width: 0,
            pixel_height: 0,
        })
        .expect("a pty");
    let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_mgen"));
    cmd.args(args);
    cmd.cwd(env!("CARGO_MANIFEST_DIR"));
    cmd.env_remove("NO_COLOR");
    let mut child = pair.slave.spawn_command(cmd).expect("mgen starts");
    drop(pair.slave);
    let mut reader = pair.master.try_clone_reader().expect("a pty reader");
    // Drain the pty on a thread: a full pty buffer would block mgen.
    let drain = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        all
    });
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if t0.elapsed() > TIMEOUT {
            let _ = child.kill();
            panic!(
                "`mgen {}` on a terminal did not finish in {} s",
                args.join(" "),
                TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The master end closes when dropped, which ends the drain's read.
    drop(pair.master);
    let text = String::from_utf8_lossy(&drain.join().unwrap_or_default()).into_owned();
    (status.exit_code(), text)
}

#[test]
fn compare_finishes_on_a_terminal_and_draws_progress() {
    let (code, text) = on_pty(&["compare", "examples/quickstart.mgen"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("energy efficiency"), "{text}");
    assert!(
        text.contains("simulating ["),
        "no progress bar drawn:\n{text}"
    );
    // The generator's spinner ("share: N steps (Ts)"); the report itself
    // only says "merge + share + place".
    assert!(
        text.contains("share: ") && text.contains(" steps ("),
        "no share progress drawn:\n{text}"
    );
}

#[test]
fn run_and_run_reference_finish_on_a_terminal() {
    let (code, text) = on_pty(&["run", "examples/quickstart.mgen"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("simulating ["),
        "no progress bar drawn:\n{text}"
    );
    let (code, text) = on_pty(&["run", "examples/quickstart.mgen", "--reference"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("reference ["),
        "no progress bar drawn:\n{text}"
    );
}

#[test]
fn sim_finishes_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("prog");
    let prog = prog.to_str().unwrap();
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_mgen"))
        .args([
            "compile",
            "examples/quickstart.mgen",
            "--emit",
            "program",
            "-o",
            prog,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let (code, text) = on_pty(&["sim", prog]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("simulating ["),
        "no progress bar drawn:\n{text}"
    );
}

#[test]
fn a_diagnostic_on_a_terminal_is_coloured_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.mgen");
    std::fs::write(&f, "model m { layers = ; }").unwrap();
    let (code, text) = on_pty(&["check", f.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("error[E"), "{text}");
    assert!(text.contains("\u{1b}["), "no colour on a terminal:\n{text}");
}
