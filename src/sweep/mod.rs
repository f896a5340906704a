//! The sweep stage: a plan carried out, and a finished run trained again.
//!
//! Owns: [`run_sweep`] here, `reproduce` (a finished run trained again from its stored spec in
//! a scratch store, its metrics and weights compared with the original's) and `slurm` (a sweep
//! as a Slurm job array whose tasks are ordinary workers: the submission, the job script, the
//! tasks beside their runs).
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
//! Searches: after the plan's runs, each worker takes the plan's searches pass by pass: the
//! search's state is recomputed from the store (`search::state_in_store`), its record rewritten
//! when it changed, and the first pending trial nobody holds is claimed and trained with its
//! rungs (the pruner's comparisons fixed before it starts); a worker with nothing to do waits for
//! earlier trials to settle (the time is reported). A trial's run is claimed like any run, so
//! processes and devices share a search as they share a grid.
//!
//! With several devices (`bertlab run --devices 0,1,2,3`) one worker per GPU carries out the same
//! loop on its own thread: the run store's claims, which already split a sweep between processes,
//! split it between the workers, so each GPU trains one run at a time until the sweep is done.
//! Without `--devices` one worker trains each run on the run's own `train.device` (on the CPU,
//! one run at a time with every core).

pub mod reproduce;
pub mod slurm;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::plan::fingerprint::{Fingerprinter, default_cache_path};
use crate::plan::search::{PlannedSearch, TrialResolver};
use crate::plan::spec::DeviceRequest;
use crate::plan::{Plan, PlannedRun};
use crate::search::{self as search_stage, SearchRecord, SearchState, TrialOutcome};
use crate::store::run_files;
use crate::store::{Claim, Provenance, RunStatus, RunStore, SearchTrial, hostname};
use crate::support::progress::{Progress, count_of};
use crate::train::device::{self, ResolvedDevice};
use crate::train::policy::PruningPlan;
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
    /// With `retry_failed`: retry the runs that failed before this time (default: before this
    /// sweep started), so that workers started later (Slurm tasks) retry a run once, not once each.
    pub retry_failed_before: Option<DateTime<Utc>>,
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
    /// Per search of the plan: seconds this process's workers waited for earlier trials to
    /// settle (trials that other processes or devices were training) before proposing more.
    pub search_waits: Vec<f64>,
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
        slurm: slurm::job_task_from_environment(),
        model_hub: run
            .settings
            .model_hub
            .as_ref()
            .map(|hub| crate::store::HubProvenance {
                id: hub.id.clone(),
                revision: hub.revision.clone(),
                commit: hub.commit.clone(),
            }),
        bf16_products: (run.spec.train.precision == crate::plan::spec::Precision::Bf16
            && device == "cpu"
            && crate::model::bf16::available())
        .then(|| crate::model::bf16::Unit::current().name().to_string()),
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
    /// Per search: seconds waited for earlier trials.
    search_waits: Vec<f64>,
}

/// What the workers share to carry out the plan's searches.
struct Searches<'a> {
    /// Trial values into runs (fingerprints cached), one at a time.
    resolver: &'a Mutex<TrialResolver>,
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
    let resolver = Mutex::new(TrialResolver::new(Fingerprinter::new(default_cache_path())));
    let searches = Searches {
        resolver: &resolver,
    };
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
            &searches,
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
                    let searches = &searches;
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
                            searches,
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
    if let Err(error) = resolver.lock().expect("the resolver lock").save() {
        progress.message(&format!(
            "warning: could not save the fingerprint cache: {error:#}"
        ));
    }
    let mut report = SweepReport {
        rows: Vec::with_capacity(plan.runs.len()),
        interrupted: workers.iter().any(|worker| worker.interrupted),
        stopped_on_failure: workers.iter().any(|worker| worker.stopped_on_failure),
        search_waits: (0..plan.searches.len())
            .map(|index| {
                workers
                    .iter()
                    .map(|worker| worker.search_waits.get(index).copied().unwrap_or(0.0))
                    .sum()
            })
            .collect(),
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
    searches: &Searches,
) -> anyhow::Result<WorkerReport> {
    let total = plan.runs.len();
    let mut rows: Vec<Option<SweepRow>> = vec![None; total];
    let mut report = WorkerReport {
        own: vec![None; total],
        search_waits: vec![0.0; plan.searches.len()],
        ..WorkerReport::default()
    };
    let mut search_complete = vec![false; plan.searches.len()];
    let mut search_records: Vec<Option<SearchRecord>> = vec![None; plan.searches.len()];
    // Per search: (trials running elsewhere, the next trial waits for earlier ones).
    let mut search_waiting = vec![(0usize, false); plan.searches.len()];
    let mut announced_wait = false;
    // Runs seen held by another worker or process: their end is not news to this worker.
    let mut waited = vec![false; total];
    let sweep_started = options.retry_failed_before.unwrap_or_else(Utc::now);
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
                RunStatus::New | RunStatus::Interrupted | RunStatus::Failed | RunStatus::Pruned => {
                }
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
                None,
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
        if !(report.interrupted || report.stopped_on_failure) {
            for (index, search) in plan.searches.iter().enumerate() {
                if search_complete[index] {
                    continue;
                }
                if interrupt.load(Ordering::SeqCst) {
                    report.interrupted = true;
                    break;
                }
                let pass = search_pass(
                    plan,
                    search,
                    store,
                    options,
                    devices,
                    interrupt,
                    progress,
                    tag,
                    searches,
                    &mut search_records[index],
                )?;
                trained_one |= pass.trained;
                search_complete[index] = pass.complete;
                search_waiting[index] = (pass.running_elsewhere, pass.blocked);
                if pass.interrupted {
                    report.interrupted = true;
                    break;
                }
            }
        }
        if report.interrupted || report.stopped_on_failure {
            break;
        }
        if rows.iter().all(Option::is_some) && search_complete.iter().all(|complete| *complete) {
            break;
        }
        if !trained_one {
            // A search this worker cannot go on with waits for earlier trials to settle.
            for (index, complete) in search_complete.iter().enumerate() {
                if !complete {
                    report.search_waits[index] += POLL_INTERVAL.as_secs_f64();
                }
            }
            if !announced_wait {
                let trials: usize = search_waiting.iter().map(|(running, _)| running).sum();
                let blocked = search_waiting.iter().any(|(_, blocked)| *blocked);
                let mut waited_for = Vec::new();
                if !waiting.is_empty() {
                    waited_for.push(count_of(waiting.len(), "run"));
                }
                if trials > 0 {
                    waited_for.push(count_of(trials, "search trial"));
                }
                let mut line = if waited_for.is_empty() {
                    "waiting".to_string()
                } else {
                    format!(
                        "waiting for {} being trained elsewhere (another device or process)",
                        waited_for.join(" and ")
                    )
                };
                if blocked {
                    line.push_str(
                        "; the next trial is proposed once the trials it learns from are settled",
                    );
                }
                progress.message(&format!("{line}{tag}"));
                announced_wait = true;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
    Ok(report)
}

/// What one pass over a search did.
struct SearchPass {
    /// This worker trained (or tried to train) a trial.
    trained: bool,
    /// Every trial proposed and settled.
    complete: bool,
    /// Trials others are training (here: on other devices; or in other processes).
    running_elsewhere: usize,
    /// The next trial waits for earlier ones to settle before it can be proposed.
    blocked: bool,
    interrupted: bool,
}

/// One pass over a search: its state from the store (its record rewritten when it changed, each
/// settled trial listed in its run's `run.json`), then the first pending trial this worker can
/// claim trained with its rungs.
#[allow(clippy::too_many_arguments)]
fn search_pass(
    plan: &Plan,
    search: &PlannedSearch,
    store: &RunStore,
    options: &SweepOptions,
    devices: &mut Devices,
    interrupt: &AtomicBool,
    progress: &mut Progress,
    tag: &str,
    searches: &Searches,
    last_record: &mut Option<SearchRecord>,
) -> anyhow::Result<SearchPass> {
    let file = &plan.experiments[search.experiment];
    let state = {
        let mut resolver = searches.resolver.lock().expect("the resolver lock");
        search_stage::state_in_store(search, file, store, &mut resolver)?
    };
    let record = search_stage::search_record(search, file, &state);
    if last_record.as_ref() != Some(&record) {
        store.create()?;
        search_stage::write_record(&record, &search_stage::record_path(store, search))?;
        if let Some(previous) = last_record.as_ref() {
            announce_settled(search, file, previous, &record, progress);
        }
        *last_record = Some(record);
    }
    list_trials_in_runs(store, search, &state)?;
    let mut pass = SearchPass {
        trained: false,
        complete: state.is_complete(search),
        running_elsewhere: state
            .trials
            .iter()
            .filter(|trial| trial.outcome == TrialOutcome::Running)
            .count(),
        blocked: state.blocked_at.is_some(),
        interrupted: false,
    };
    for trial in &state.trials {
        if trial.outcome != TrialOutcome::Pending {
            continue;
        }
        let Ok(run) = &trial.run else {
            continue;
        };
        let lease = match store.claim(&run.hash, &run.spec.canonical_bytes())? {
            Claim::Claimed(lease) => lease,
            Claim::Busy { .. } => continue,
        };
        if matches!(lease.previous, RunStatus::Done | RunStatus::Failed) {
            // Finished elsewhere a moment ago: the next pass reads it.
            pass.trained = true;
            return Ok(pass);
        }
        let entry = SearchTrial {
            search: search.hash.as_str().to_string(),
            trial: trial.number,
        };
        lease.update(|record| {
            if !record.search_trials.contains(&entry) {
                record.search_trials.push(entry.clone());
            }
        })?;
        let prefix = format!("[trial {}] {}{tag}", trial.number, run.hash.short());
        let row = train_claimed(
            plan,
            run,
            trial.number,
            store,
            &lease,
            options,
            devices,
            interrupt,
            progress,
            &prefix,
            trial.pruning.as_ref(),
        );
        let row = match row {
            Ok(row) => row,
            Err(error) => {
                let reason = format!("{error:#}");
                let _ = lease.set_status(RunStatus::Failed, Some(reason));
                progress.finish_run();
                unrecorded_failure(trial.number, &prefix, error, progress)
            }
        };
        pass.trained = true;
        pass.interrupted = row.status == RunStatus::Interrupted;
        return Ok(pass);
    }
    Ok(pass)
}

/// Says which trials settled between two records of a search (the ones this worker did not
/// train itself are news too: another process's trials).
fn announce_settled(
    search: &PlannedSearch,
    file: &crate::experiment::ExperimentFile,
    previous: &SearchRecord,
    record: &SearchRecord,
    progress: &mut Progress,
) {
    let (count, before) = (record.settled(), previous.settled());
    if count > before {
        progress.message(&format!(
            "{}: {count} of {} trials settled",
            search.label(file),
            search.trials
        ));
    }
}

/// Lists each settled trial in its run's `run.json` (`search_trials`), so a run tells which
/// trials it stands for, also when it was trained before the search or repeats a trial.
fn list_trials_in_runs(
    store: &RunStore,
    search: &PlannedSearch,
    state: &SearchState,
) -> anyhow::Result<()> {
    for trial in &state.trials {
        if trial.listed || !trial.outcome.is_settled() {
            continue;
        }
        let Ok(run) = &trial.run else {
            continue;
        };
        let entry = SearchTrial {
            search: search.hash.as_str().to_string(),
            trial: trial.number,
        };
        if let Claim::Claimed(lease) = store.claim(&run.hash, &run.spec.canonical_bytes())? {
            lease.update(|record| {
                if !record.search_trials.contains(&entry) {
                    record.search_trials.push(entry.clone());
                }
            })?;
        }
    }
    Ok(())
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
    pruning: Option<&PruningPlan>,
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
        "{}{}: attempt {attempt}, run {} on {}{} with {} threads, bertlab {}{}",
        experiment.name,
        if swept.is_empty() {
            String::new()
        } else {
            format!(" ({})", swept.join(", "))
        },
        run.hash,
        provenance.device,
        provenance
            .slurm
            .as_ref()
            .map(|slurm| format!(" of {} on {}", slurm.label(), provenance.host))
            .unwrap_or_default(),
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
                pruning,
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
                if status != RunStatus::Interrupted {
                    // A pruned run that a plan continued is no longer pruned.
                    record.pruned = None;
                }
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
            let mut line = match &result.validation.multi_label {
                None => format!(
                    "done in {}: epoch {}/{} kept, validation accuracy {:.4}, macro-F1 {:.4}",
                    short_duration(seconds),
                    result.best_epoch,
                    result.epochs_run,
                    result.validation.accuracy,
                    result.validation.macro_f1
                ),
                Some(figures) => format!(
                    "done in {}: epoch {}/{} kept, validation micro-F1 {:.4}, macro-F1 {:.4}, subset accuracy {:.4}",
                    short_duration(seconds),
                    result.best_epoch,
                    result.epochs_run,
                    figures.micro_f1,
                    result.validation.macro_f1,
                    result.validation.accuracy
                ),
            };
            if let Some(test) = &result.test {
                match &test.multi_label {
                    None => line.push_str(&format!(", test accuracy {:.4}", test.accuracy)),
                    Some(figures) => {
                        line.push_str(&format!(", test micro-F1 {:.4}", figures.micro_f1))
                    }
                }
            }
            progress.finish_run();
            progress.message(&format!("{prefix} {line}"));
            SweepRow {
                run: index,
                status: RunStatus::Done,
                error: None,
            }
        }
        Ok(TrainEnd::Pruned { pruned, kept }) => {
            let line = format!(
                "pruned at rung {} after {} epoch{}: validation {} {:.4}, threshold {:.4} among {} trials",
                pruned.rung,
                pruned.epochs,
                if pruned.epochs == 1 { "" } else { "s" },
                pruned.metric,
                pruned.value,
                pruned.threshold,
                pruned.compared_with + 1
            );
            lease.update(|record| {
                record.status = RunStatus::Pruned;
                record.error = None;
                record.finished_at = Some(finished);
                record.duration_seconds = Some(record.duration_seconds.unwrap_or(0.0) + seconds);
                record.pruned = Some(pruned.clone());
                if let Some((epoch, step)) = kept {
                    record.best_epoch = Some(epoch);
                    record.best_step = Some(step);
                }
            })?;
            progress.event(&line);
            progress.finish_run();
            progress.message(&format!(
                "{prefix} pruned in {}: rung {} after {} epoch{}",
                short_duration(seconds),
                pruned.rung,
                pruned.epochs,
                if pruned.epochs == 1 { "" } else { "s" }
            ));
            SweepRow {
                run: index,
                status: RunStatus::Pruned,
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
