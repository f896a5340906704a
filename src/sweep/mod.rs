//! The sweep stage: a plan carried out, and a finished run trained again.
//!
//! Owns: [`run_sweep`] here and `reproduce` (a finished run trained again from its stored spec in
//! a scratch store, its metrics and weights compared with the original's).
//!
//! Uses: every stage below it; `train::train_run` trains each run. Never uses: `report` or
//! `commands` (the sweep reports its rows; the commands print them).
//!
//! Carrying out a plan: every run in plan order, each claimed in the run store before it is
//! trained (so two processes on the same sweep split the work and never train a run twice),
//! `done` runs skipped, interrupted runs resumed from their checkpoint, failures recorded with
//! their reason while the sweep goes on (unless `fail_fast`), and runs that another process holds
//! waited for (and taken over if that process dies).
//!
//! With several devices (`bertlab run --devices 0,1,2,3`) one worker per GPU carries out the same
//! loop on its own thread: the run store's claims, which already split a sweep between processes,
//! split it between the workers, so each GPU trains one run at a time until the sweep is done.
//! Without `--devices` one worker trains each run on the run's own `train.device` (on the CPU,
//! one run at a time with every core).

pub mod reproduce;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::plan::spec::DeviceRequest;
use crate::plan::{Plan, PlannedRun};
use crate::store::run_files;
use crate::store::{Claim, Provenance, RunStatus, RunStore, hostname};
use crate::support::progress::Progress;
use crate::train::device::{self, ResolvedDevice};
use crate::train::{self, TrainEnd, TrainOptions};

/// How long to wait before looking again at runs other processes hold.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// What `bertlab run` was asked to do besides the plan.
#[derive(Clone, Debug, Default)]
pub struct SweepOptions {
    /// Stop at the first failed run.
    pub fail_fast: bool,
    /// Train runs recorded `failed` again (by default they are reported, not retried).
    pub retry_failed: bool,
    /// The preprocessing cache (none: no cache).
    pub cache_folder: Option<PathBuf>,
    /// One worker per device, each training one run at a time (`--devices`); empty: one worker
    /// that trains every run on its own `train.device`.
    pub devices: Vec<DeviceRequest>,
}

/// What happened to one planned run.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepRow {
    /// Index into the plan's runs.
    pub run: usize,
    pub status: RunStatus,
    pub error: Option<String>,
}

/// The sweep's outcome, run by run, in plan order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SweepReport {
    pub rows: Vec<SweepRow>,
    /// Stopped by a signal.
    pub interrupted: bool,
    /// Stopped by `fail_fast`.
    pub stopped_on_failure: bool,
}

/// The commit bertlab was built from (see build.rs).
pub fn bertlab_commit() -> Option<String> {
    option_env!("BERTLAB_GIT_COMMIT")
        .filter(|commit| !commit.is_empty())
        .map(String::from)
}

fn git(folder: &Path, args: &[&str]) -> Option<String> {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(folder)
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The commit of the repository holding `file`, and whether its tracked files have uncommitted
/// changes outside `store_root`; `(None, None)` outside a repository or without git.
pub fn git_state(file: &Path, store_root: &Path) -> (Option<String>, Option<bool>) {
    let folder = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(commit) = git(&folder, &["rev-parse", "HEAD"]) else {
        return (None, None);
    };
    let top = git(&folder, &["rev-parse", "--show-toplevel"]).map(|top| PathBuf::from(top.trim()));
    let store = std::fs::canonicalize(store_root).ok();
    let dirty = git(&folder, &["status", "--porcelain", "--untracked-files=no"]).map(|status| {
        status.lines().any(|line| {
            let path = line.get(3..).unwrap_or("");
            match (&top, &store) {
                (Some(top), Some(store)) => !top.join(path).starts_with(store),
                _ => true,
            }
        })
    });
    (Some(commit.trim().to_string()), dirty)
}

fn provenance(plan: &Plan, run: &PlannedRun, store: &RunStore, device: &str) -> Provenance {
    let file = &plan.experiments[run.experiment].source.path;
    let (experiment_commit, experiment_dirty) = git_state(file, store.root());
    Provenance {
        host: hostname(),
        device: device.into(),
        threads: candle_core::utils::get_num_threads(),
        bertlab_version: env!("CARGO_PKG_VERSION").into(),
        bertlab_commit: bertlab_commit(),
        experiment_file: std::fs::canonicalize(file)
            .unwrap_or_else(|_| file.clone())
            .display()
            .to_string(),
        experiment_commit,
        experiment_dirty,
    }
}

fn short_duration(seconds: f64) -> String {
    let seconds = seconds.max(0.0).round() as u64;
    if seconds >= 3600 {
        format!("{}h{:02}m", seconds / 3600, (seconds % 3600) / 60)
    } else if seconds >= 60 {
        format!("{}m{:02}s", seconds / 60, seconds % 60)
    } else {
        format!("{seconds}s")
    }
}

/// The row of a run this process did not train.
fn observed_row(store: &RunStore, index: usize, run: &PlannedRun, status: RunStatus) -> SweepRow {
    let record = store.record(&run.hash).ok().flatten();
    SweepRow {
        run: index,
        status,
        error: record.and_then(|record| record.error),
    }
}

/// Whether a failed run failed before this sweep started (so `--retry-failed` retries it once,
/// not again after another process's retry failed).
fn failed_before(store: &RunStore, run: &PlannedRun, sweep_started: DateTime<Utc>) -> bool {
    store
        .record(&run.hash)
        .ok()
        .flatten()
        .and_then(|record| record.finished_at)
        .is_none_or(|finished| finished < sweep_started)
}

/// A run that could not be worked on or recorded (a damaged `run.json`, a file that cannot be
/// written): reported as failed, and the sweep goes on.
fn unrecorded_failure(
    index: usize,
    prefix: &str,
    error: anyhow::Error,
    progress: &mut Progress,
) -> SweepRow {
    let reason = format!("{error:#}");
    progress.message(&format!("{prefix} failed: {reason}"));
    SweepRow {
        run: index,
        status: RunStatus::Failed,
        error: Some(reason),
    }
}

/// What one worker did: the rows of the runs it trained (or could not record), and why it
/// stopped early, if it did.
#[derive(Default)]
struct WorkerReport {
    own: Vec<Option<SweepRow>>,
    interrupted: bool,
    stopped_on_failure: bool,
}

/// The devices runs train on, opened once per worker and kept for its later runs.
struct Devices {
    /// The worker's device (`--devices`); `None`: each run's own `train.device`.
    slot: Option<ResolvedDevice>,
    opened: HashMap<DeviceRequest, ResolvedDevice>,
}

impl Devices {
    fn for_run(&mut self, run: &PlannedRun) -> anyhow::Result<ResolvedDevice> {
        if let Some(slot) = &self.slot {
            return Ok(slot.clone());
        }
        let request = run.settings.device;
        if let Some(device) = self.opened.get(&request) {
            return Ok(device.clone());
        }
        let device = device::resolve(request)?;
        self.opened.insert(request, device.clone());
        Ok(device)
    }
}

/// Carries out `plan` in order. Returns when every run is done or failed, on a signal, or at the
/// first failure with `fail_fast` (with several devices, the runs other devices are training
/// then finish first).
pub fn run_sweep(
    plan: &Plan,
    store: &RunStore,
    options: &SweepOptions,
    interrupt: &AtomicBool,
    progress: &mut Progress,
) -> anyhow::Result<SweepReport> {
    let stop = AtomicBool::new(false);
    let workers: Vec<WorkerReport> = if options.devices.len() <= 1 {
        let slot = options
            .devices
            .first()
            .map(|&request| device::resolve(request))
            .transpose()?;
        let mut devices = Devices {
            slot,
            opened: HashMap::new(),
        };
        vec![sweep_worker(
            plan,
            store,
            options,
            &mut devices,
            interrupt,
            &stop,
            progress,
            "",
        )?]
    } else {
        // Every device must open before any run starts: a typo fails the command, not a run.
        let slots = options
            .devices
            .iter()
            .map(|&request| device::resolve(request))
            .collect::<anyhow::Result<Vec<_>>>()?;
        progress.message(&format!(
            "{} workers, one run at a time on each of {}",
            slots.len(),
            slots
                .iter()
                .map(|slot| slot.label.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let outcomes = std::thread::scope(|scope| {
            let handles: Vec<_> = slots
                .into_iter()
                .map(|slot| {
                    let mut worker_progress = progress.worker();
                    let stop = &stop;
                    scope.spawn(move || {
                        let tag = format!(" {}", slot.label);
                        let mut devices = Devices {
                            slot: Some(slot),
                            opened: HashMap::new(),
                        };
                        sweep_worker(
                            plan,
                            store,
                            options,
                            &mut devices,
                            interrupt,
                            stop,
                            &mut worker_progress,
                            &tag,
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().expect("a sweep worker panicked"))
                .collect::<Vec<_>>()
        });
        outcomes.into_iter().collect::<anyhow::Result<Vec<_>>>()?
    };
    let mut report = SweepReport {
        rows: Vec::with_capacity(plan.runs.len()),
        interrupted: workers.iter().any(|worker| worker.interrupted),
        stopped_on_failure: workers.iter().any(|worker| worker.stopped_on_failure),
    };
    for (index, run) in plan.runs.iter().enumerate() {
        let own = workers
            .iter()
            .find_map(|worker| worker.own.get(index).cloned().flatten());
        report.rows.push(match own {
            Some(row) => row,
            None => observed_row(store, index, run, store.status(&run.hash)?),
        });
    }
    Ok(report)
}

/// One worker's loop over the plan: claims the next run nobody holds, trains it on its device,
/// and repeats until every run is decided (done, failed, or trained elsewhere). `tag` follows
/// the run prefix in messages (the device, when there are several workers).
#[allow(clippy::too_many_arguments)]
fn sweep_worker(
    plan: &Plan,
    store: &RunStore,
    options: &SweepOptions,
    devices: &mut Devices,
    interrupt: &AtomicBool,
    stop: &AtomicBool,
    progress: &mut Progress,
    tag: &str,
) -> anyhow::Result<WorkerReport> {
    let total = plan.runs.len();
    let mut rows: Vec<Option<SweepRow>> = vec![None; total];
    let mut report = WorkerReport {
        own: vec![None; total],
        ..WorkerReport::default()
    };
    let mut announced_wait = false;
    // Runs seen held by another worker or process: their end is not news to this worker.
    let mut waited = vec![false; total];
    let sweep_started = Utc::now();
    loop {
        let mut trained_one = false;
        let mut waiting = Vec::new();
        for (index, run) in plan.runs.iter().enumerate() {
            if rows[index].is_some() {
                continue;
            }
            if interrupt.load(Ordering::SeqCst) {
                report.interrupted = true;
                break;
            }
            if stop.load(Ordering::SeqCst) {
                report.stopped_on_failure = true;
                break;
            }
            let prefix = format!("[{}/{}] {}{tag}", index + 1, total, run.hash.short());
            let status = match store.status(&run.hash) {
                Ok(status) => status,
                Err(error) => {
                    let row = unrecorded_failure(index, &prefix, error, progress);
                    report.own[index] = Some(row.clone());
                    rows[index] = Some(row);
                    continue;
                }
            };
            match status {
                RunStatus::Done => {
                    if !waited[index] {
                        progress.message(&format!("{prefix} done already, skipped"));
                    }
                    rows[index] = Some(observed_row(store, index, run, status));
                    continue;
                }
                RunStatus::Failed
                    if !(options.retry_failed && failed_before(store, run, sweep_started)) =>
                {
                    let row = observed_row(store, index, run, status);
                    if !waited[index] {
                        progress.message(&format!(
                            "{prefix} failed earlier ({}), skipped: --retry-failed trains it again",
                            row.error.as_deref().unwrap_or("no reason recorded")
                        ));
                    }
                    rows[index] = Some(row);
                    continue;
                }
                RunStatus::Running => {
                    waiting.push(index);
                    waited[index] = true;
                    continue;
                }
                RunStatus::New | RunStatus::Interrupted | RunStatus::Failed => {}
            }
            let spec_bytes = run.spec.canonical_bytes();
            let lease = match store.claim(&run.hash, &spec_bytes) {
                Ok(Claim::Claimed(lease)) => lease,
                Ok(Claim::Busy { .. }) => {
                    waiting.push(index);
                    waited[index] = true;
                    continue;
                }
                Err(error) => {
                    let row = unrecorded_failure(index, &prefix, error, progress);
                    report.own[index] = Some(row.clone());
                    rows[index] = Some(row);
                    if options.fail_fast {
                        report.stopped_on_failure = true;
                        stop.store(true, Ordering::SeqCst);
                        break;
                    }
                    continue;
                }
            };
            // Another process may have finished the run between the status check and the claim.
            let retry = lease.previous == RunStatus::Failed
                && options.retry_failed
                && failed_before(store, run, sweep_started);
            if lease.previous == RunStatus::Done || (lease.previous == RunStatus::Failed && !retry)
            {
                let previous = lease.previous;
                drop(lease);
                rows[index] = Some(observed_row(store, index, run, previous));
                continue;
            }
            if retry {
                // A retry starts over: the failed attempt's checkpoint would replay its failure.
                train::checkpoint::remove_checkpoint(lease.directory())?;
            }
            let row = match train_claimed(
                plan, run, index, store, &lease, options, devices, interrupt, progress, &prefix,
            ) {
                Ok(row) => row,
                Err(error) => {
                    // Bookkeeping failed (a file that cannot be written): record it if possible.
                    let reason = format!("{error:#}");
                    let _ = lease.set_status(RunStatus::Failed, Some(reason));
                    progress.finish_run();
                    unrecorded_failure(index, &prefix, error, progress)
                }
            };
            trained_one = true;
            let failed = row.status == RunStatus::Failed;
            let stopped = row.status == RunStatus::Interrupted;
            report.own[index] = Some(row.clone());
            rows[index] = Some(row);
            if stopped {
                report.interrupted = true;
                break;
            }
            if failed && options.fail_fast {
                report.stopped_on_failure = true;
                stop.store(true, Ordering::SeqCst);
                break;
            }
        }
        if report.interrupted || report.stopped_on_failure {
            break;
        }
        if rows.iter().all(Option::is_some) {
            break;
        }
        if !trained_one {
            if !announced_wait {
                progress.message(&format!(
                    "waiting for {} run{} being trained elsewhere (another device or process){tag}",
                    waiting.len(),
                    if waiting.len() == 1 { "" } else { "s" }
                ));
                announced_wait = true;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn train_claimed(
    plan: &Plan,
    run: &PlannedRun,
    index: usize,
    store: &RunStore,
    lease: &crate::store::RunLease,
    options: &SweepOptions,
    devices: &mut Devices,
    interrupt: &AtomicBool,
    progress: &mut Progress,
    prefix: &str,
) -> anyhow::Result<SweepRow> {
    let directory = lease.directory().to_path_buf();
    let experiment = &plan.experiments[run.experiment];
    let device = devices.for_run(run);
    let device_label = match &device {
        Ok(device) => device.label.clone(),
        Err(_) => run.settings.device.to_string(),
    };
    let provenance = provenance(plan, run, store, &device_label);
    let started = Utc::now();
    let mut attempt = 0;
    lease.update(|record| {
        record.status = RunStatus::Running;
        record.attempts += 1;
        attempt = record.attempts;
        record.started_at.get_or_insert(started);
        record.experiment = Some(experiment.name.clone());
        record.error = None;
        record.provenance = Some(provenance.clone());
    })?;
    progress.start_run(prefix.to_string(), directory.join(run_files::LOG_FILE));
    let swept: Vec<String> = run
        .swept
        .iter()
        .map(|(key, value)| format!("{}={value}", key.column_name()))
        .collect();
    progress.event(&format!(
        "{}{}: attempt {attempt}, run {} on {} with {} threads, bertlab {}{}",
        experiment.name,
        if swept.is_empty() {
            String::new()
        } else {
            format!(" ({})", swept.join(", "))
        },
        run.hash,
        provenance.device,
        provenance.threads,
        provenance.bertlab_version,
        provenance.commit_suffix()
    ));
    let clock = Instant::now();
    let outcome = device.and_then(|device| {
        train::train_run(
            run,
            &directory,
            &TrainOptions {
                cache_folder: options.cache_folder.clone(),
                interrupt,
                experiment_text: &experiment.source.text,
                device: &device.device,
            },
            progress,
        )
    });
    let seconds = clock.elapsed().as_secs_f64();
    let finished = Utc::now();
    // Every attempt ends the same way in run.json: status, reason, end time, time spent.
    let end_attempt =
        |status: RunStatus, error: Option<String>, kept: Option<&run_files::RunResult>| {
            lease.update(|record| {
                record.status = status;
                record.error = error;
                record.finished_at = Some(finished);
                record.duration_seconds = Some(record.duration_seconds.unwrap_or(0.0) + seconds);
                if let Some(result) = kept {
                    record.best_epoch = Some(result.best_epoch);
                    record.best_step = result.best_step;
                }
            })
        };
    let row = match outcome {
        Ok(TrainEnd::Done(result)) => {
            crate::support::atomic_file::write(
                &directory.join(run_files::RESULT_FILE),
                &run_files::result_json(&result),
            )?;
            end_attempt(RunStatus::Done, None, Some(&result))?;
            if let Err(error) = train::checkpoint::remove_checkpoint(&directory) {
                progress.message(&format!("{prefix} warning: {error:#}"));
            }
            let mut line = format!(
                "done in {}: epoch {}/{} kept, validation accuracy {:.4}, macro-F1 {:.4}",
                short_duration(seconds),
                result.best_epoch,
                result.epochs_run,
                result.validation.accuracy,
                result.validation.macro_f1
            );
            if let Some(test) = &result.test {
                line.push_str(&format!(", test accuracy {:.4}", test.accuracy));
            }
            progress.finish_run();
            progress.message(&format!("{prefix} {line}"));
            SweepRow {
                run: index,
                status: RunStatus::Done,
                error: None,
            }
        }
        Ok(TrainEnd::Interrupted { position }) => {
            let reason = format!("interrupted at {position}");
            end_attempt(RunStatus::Interrupted, Some(reason.clone()), None)?;
            progress.finish_run();
            progress.message(&format!(
                "{prefix} {reason}; `bertlab run` again resumes it from there"
            ));
            SweepRow {
                run: index,
                status: RunStatus::Interrupted,
                error: Some(reason),
            }
        }
        Err(error) => {
            let reason = format!("{error:#}");
            progress.event(&format!("failed: {reason}"));
            end_attempt(RunStatus::Failed, Some(reason.clone()), None)?;
            progress.finish_run();
            SweepRow {
                run: index,
                status: RunStatus::Failed,
                error: Some(reason),
            }
        }
    };
    Ok(row)
}
