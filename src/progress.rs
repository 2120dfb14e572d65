//! Progress of long runs, on a terminal and in a log.
//!
//! Three modes, chosen once per process by the caller (`mgen` picks `Bar`
//! when stderr is a terminal and `Log` otherwise; `--progress` overrides):
//! - [`Mode::Bar`]: an indicatif bar (or a spinner with counts when the total
//!   is not known; never a made-up ETA);
//! - [`Mode::Log`]: one plain line on stderr every [`LOG_EVERY`] while the
//!   work lasts, so a log of a long run shows it is alive;
//! - [`Mode::Off`]: nothing (tests, `--progress none`).
//!
//! Invariants: a [`Progress`] may be ticked from any thread (rayon workers
//! tick it); it never holds a lock of stderr across calls, and its log lines
//! are written whole with one `eprintln!`, so nothing can deadlock on
//! stderr's lock. `mgen` itself never holds stderr's lock while work runs.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How a run shows its progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Nothing.
    #[default]
    Off,
    /// A bar (or spinner) redrawn on stderr, for a terminal.
    Bar,
    /// A line on stderr every few seconds, for a log.
    Log,
}

/// How often [`Mode::Log`] prints a line.
pub const LOG_EVERY: Duration = Duration::from_secs(5);

/// One unit of long work: `label` says what, `unit` what is counted.
pub struct Progress {
    inner: Inner,
}

enum Inner {
    Off,
    Bar(indicatif::ProgressBar),
    Log(Box<LogState>),
}

struct LogState {
    label: String,
    unit: String,
    total: Option<u64>,
    count: AtomicU64,
    start: Instant,
    last: Mutex<Instant>,
}

impl Progress {
    /// Progress over `total` steps (`None`: not known in advance, counted).
    pub fn new(mode: Mode, total: Option<u64>, label: &str, unit: &str) -> Progress {
        let inner = match mode {
            Mode::Off => Inner::Off,
            Mode::Bar => Inner::Bar(bar(total, label, unit)),
            Mode::Log => {
                let now = Instant::now();
                Inner::Log(Box::new(LogState {
                    label: label.to_string(),
                    unit: unit.to_string(),
                    total,
                    count: AtomicU64::new(0),
                    start: now,
                    last: Mutex::new(now),
                }))
            }
        };
        Progress { inner }
    }

    /// A progress that shows nothing.
    pub fn off() -> Progress {
        Progress { inner: Inner::Off }
    }

    /// Counts `n` more steps done.
    pub fn inc(&self, n: u64) {
        match &self.inner {
            Inner::Off => {}
            Inner::Bar(b) => b.inc(n),
            Inner::Log(s) => {
                let done = s.count.fetch_add(n, Ordering::Relaxed) + n;
                s.maybe_print(done);
            }
        }
    }

    /// Ends the progress: a bar is cleared; a log that printed anything
    /// prints its final count.
    pub fn finish(self) {
        match self.inner {
            Inner::Off => {}
            Inner::Bar(b) => b.finish_and_clear(),
            Inner::Log(s) => {
                let printed = s.last.lock().map(|l| *l != s.start).unwrap_or(false);
                if printed {
                    eprintln!("{}", s.line(s.count.load(Ordering::Relaxed), "done"));
                }
            }
        }
    }
}

impl LogState {
    fn maybe_print(&self, done: u64) {
        let now = Instant::now();
        // `try_lock`: a thread that finds another printing skips its turn.
        let Ok(mut last) = self.last.try_lock() else {
            return;
        };
        if now.duration_since(*last) < LOG_EVERY {
            return;
        }
        *last = now;
        drop(last);
        eprintln!("{}", self.line(done, "running"));
    }

    fn line(&self, done: u64, state: &str) -> String {
        let secs = self.start.elapsed().as_secs();
        match self.total {
            Some(t) => format!(
                "{}: {done}/{t} {} ({state}, {secs} s)",
                self.label, self.unit
            ),
            None => format!("{}: {done} {} ({state}, {secs} s)", self.label, self.unit),
        }
    }
}

fn bar(total: Option<u64>, label: &str, unit: &str) -> indicatif::ProgressBar {
    let (b, template) = match total {
        Some(t) => (
            indicatif::ProgressBar::new(t),
            format!("{label} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{eta}} left)"),
        ),
        None => (
            indicatif::ProgressBar::new_spinner(),
            format!("{{spinner}} {label}: {{pos}} {unit} ({{elapsed}})"),
        ),
    };
    b.set_style(
        indicatif::ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if total.is_none() {
        b.enable_steady_tick(Duration::from_millis(200));
    }
    b
}
