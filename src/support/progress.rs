//! What a running sweep tells the user on stderr, and what each run writes to its `train.log`.
//! On a terminal, an indicatif bar per run (run i/N and hash, epoch, step, loss, samples/s,
//! ETA); otherwise plain lines, one per `PLAIN_INTERVAL` and one per event. Every event line also
//! goes to the run's `train.log`, timestamped, rewritten atomically. `count_of` words the counts
//! of every message and table (`1 run`, `2 runs`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::support::atomic_file;

/// How often a plain progress line is printed when stderr is not a terminal.
pub const PLAIN_INTERVAL: Duration = Duration::from_secs(30);

/// The reporter of a sweep.
pub struct Progress {
    terminal: bool,
    bar: Option<ProgressBar>,
    prefix: String,
    last_plain: Instant,
    log: Option<RunLog>,
    /// Shared by the reporters of parallel workers (`bertlab run --devices`): one bar each.
    multi: Option<MultiProgress>,
}

/// A run's `train.log`, kept in memory and rewritten whole (atomically) on every flush.
struct RunLog {
    path: PathBuf,
    text: String,
    dirty: bool,
}

/// Where training stands, for the progress display.
#[derive(Clone, Copy, Debug)]
pub struct StepStatus {
    pub epoch: usize,
    pub epochs: usize,
    /// Optimizer steps done in the whole run.
    pub steps: u64,
    pub total_steps: u64,
    /// Mean training loss of the epoch so far.
    pub loss: f64,
    pub samples_per_second: f64,
}

impl Progress {
    /// `terminal`: draw a bar (stderr is a terminal) rather than plain lines.
    pub fn new(terminal: bool) -> Progress {
        Progress {
            terminal,
            bar: None,
            prefix: String::new(),
            last_plain: Instant::now(),
            log: None,
            multi: None,
        }
    }

    /// A reporter for one of several workers that train at the same time: on a terminal their
    /// bars stack (one per worker); otherwise plain lines, as for one worker.
    pub fn worker(&mut self) -> Progress {
        if self.terminal && self.multi.is_none() {
            self.multi = Some(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        }
        Progress {
            terminal: self.terminal,
            bar: None,
            prefix: String::new(),
            last_plain: Instant::now(),
            log: None,
            multi: self.multi.clone(),
        }
    }

    /// Starts reporting a run: `prefix` names it (`[2/9] 3f2a9c0d1e2b`); events also go to
    /// `log_path`, which keeps what earlier attempts wrote.
    pub fn start_run(&mut self, prefix: String, log_path: PathBuf) {
        self.finish_run();
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        self.log = Some(RunLog {
            path: log_path,
            text,
            dirty: false,
        });
        self.prefix = prefix;
        self.last_plain = Instant::now();
    }

    /// Shows the step counter once the run knows its length.
    pub fn start_steps(&mut self, done: u64, total: u64) {
        if self.terminal {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{prefix} {wide_bar} {pos}/{len}  {msg}  eta {eta}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(self.prefix.clone());
            bar.set_position(done);
            bar.reset_eta();
            self.bar = Some(match &self.multi {
                Some(multi) => multi.add(bar),
                None => bar,
            });
        }
    }

    /// An event: printed (above the bar) and logged.
    pub fn event(&mut self, line: &str) {
        let text = format!("{} {line}", self.prefix);
        self.message(&text);
        self.log_line(line);
        self.flush_log();
    }

    /// A line for stderr only (not a run's log).
    pub fn message(&self, line: &str) {
        match (&self.bar, &self.multi) {
            (Some(bar), _) => bar.println(line),
            (None, Some(multi)) => {
                let _ = multi.println(line);
            }
            (None, None) => eprintln!("{line}"),
        }
    }

    /// Appends a line to the run's log (flushed with the next event or [`Progress::flush_log`]).
    pub fn log_line(&mut self, line: &str) {
        if let Some(log) = &mut self.log {
            log.text.push_str(&format!(
                "{} {line}\n",
                Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ));
            log.dirty = true;
        }
    }

    /// Writes the run's log if it changed. A log that cannot be written is reported, not fatal.
    pub fn flush_log(&mut self) {
        if let Some(log) = &mut self.log
            && log.dirty
        {
            if let Err(error) = atomic_file::write(&log.path, log.text.as_bytes()) {
                eprintln!("warning: cannot write {}: {error:#}", log.path.display());
            }
            log.dirty = false;
        }
    }

    /// After each optimizer step.
    pub fn step(&mut self, status: StepStatus) {
        let summary = format!(
            "epoch {}/{}  loss {:.4}  {:.1} samples/s",
            status.epoch, status.epochs, status.loss, status.samples_per_second
        );
        if let Some(bar) = &self.bar {
            bar.set_position(status.steps);
            bar.set_message(summary);
        } else if self.last_plain.elapsed() >= PLAIN_INTERVAL {
            self.last_plain = Instant::now();
            let line = format!("step {}/{}  {summary}", status.steps, status.total_steps);
            eprintln!("{} {line}", self.prefix);
            self.log_line(&line);
            self.flush_log();
        }
    }

    /// Ends the current run's display and flushes its log.
    pub fn finish_run(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.flush_log();
        self.log = None;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish_run();
    }
}

/// A count and its noun, singular for one: `1 run`, `2 runs`, `0 runs`.
pub fn count_of(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}
