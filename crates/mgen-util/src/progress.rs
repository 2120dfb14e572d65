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
    /// What [`Progress::message`] last said (appended to each line).
    message: Mutex<String>,
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
                    message: Mutex::new(String::new()),
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

    /// Shows `msg` beside the count (e.g. an epoch and a loss); a log
    /// prints it on its next line.
    pub fn message(&self, msg: &str) {
        match &self.inner {
            Inner::Off => {}
            Inner::Bar(b) => b.set_message(msg.to_string()),
            Inner::Log(s) => {
                if let Ok(mut m) = s.message.lock() {
                    *m = msg.to_string();
                }
            }
        }
    }

    /// Stops a spinner's redrawing while another progress of the same run
    /// draws on the terminal ([`Progress::resume`] restarts it).
    pub fn pause(&self) {
        if let Inner::Bar(b) = &self.inner {
            b.disable_steady_tick();
        }
    }

    /// Restarts what [`Progress::pause`] stopped.
    pub fn resume(&self) {
        if let Inner::Bar(b) = &self.inner
            && b.length().is_none()
        {
            b.enable_steady_tick(Duration::from_millis(200));
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
        let msg = self.message.lock().map(|m| m.clone()).unwrap_or_default();
        let line = match self.total {
            Some(t) => format!(
                "{}: {done}/{t} {} ({state}, {secs} s)",
                self.label, self.unit
            ),
            None => format!("{}: {done} {} ({state}, {secs} s)", self.label, self.unit),
        };
        match msg.is_empty() {
            true => line,
            false => format!("{line} {msg}"),
        }
    }
}

fn bar(total: Option<u64>, label: &str, unit: &str) -> indicatif::ProgressBar {
    let (b, template) = match total {
        Some(t) => (
            indicatif::ProgressBar::new(t),
            format!("{label} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{eta}} left) {{msg}}"),
        ),
        None => (
            indicatif::ProgressBar::new_spinner(),
            format!("{{spinner}} {label}: {{pos}} {unit} ({{elapsed}}) {{msg}}"),
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
    fn a_log_line_carries_the_message() {
        let p = Progress::every(Mode::Log, Some(10), "joint", "steps", Duration::ZERO);
        p.message("epoch 1/2, loss 0.5000");
        let line = log_state(&p).due(4).expect("due");
        assert!(line.ends_with(" epoch 1/2, loss 0.5000"), "{line}");
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
