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
    every: Duration,
}

impl Progress {
    /// Progress over `total` steps (`None`: not known in advance, counted).
    pub fn new(mode: Mode, total: Option<u64>, label: &str, unit: &str) -> Progress {
        Progress::every(mode, total, label, unit, LOG_EVERY)
    }

    /// The same, logging every `every` in [`Mode::Log`].
    fn every(mode: Mode, total: Option<u64>, label: &str, unit: &str, every: Duration) -> Progress {
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
                    every,
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
                if let Some(line) = s.due(done) {
                    eprintln!("{line}");
                }
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
    /// The line to log now, if one is due.
    fn due(&self, done: u64) -> Option<String> {
        let now = Instant::now();
        // `try_lock`: a thread that finds another logging skips its turn.
        let mut last = self.last.try_lock().ok()?;
        if now.duration_since(*last) < self.every {
            return None;
        }
        *last = now;
        Some(self.line(done, "running"))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn log_state(p: &Progress) -> &LogState {
        match &p.inner {
            Inner::Log(s) => s,
            _ => panic!("not a log"),
        }
    }

    #[test]
    fn a_log_says_its_count_and_total_when_due() {
        let p = Progress::every(Mode::Log, Some(10), "share", "steps", Duration::ZERO);
        p.inc(3);
        let line = log_state(&p).due(3).expect("due");
        assert!(line.starts_with("share: 3/10 steps (running, "), "{line}");
        let p = Progress::every(Mode::Log, None, "share", "steps", Duration::ZERO);
        let line = log_state(&p).due(7).expect("due");
        assert!(line.starts_with("share: 7 steps (running, "), "{line}");
    }

    #[test]
    fn a_log_waits_its_interval() {
        let p = Progress::every(Mode::Log, Some(10), "x", "y", Duration::from_secs(3600));
        p.inc(1);
        assert!(log_state(&p).due(1).is_none());
    }

    #[test]
    fn off_counts_nothing_and_finishes() {
        let p = Progress::new(Mode::Off, Some(5), "x", "y");
        p.inc(5);
        p.finish();
    }
}
