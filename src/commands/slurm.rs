//! `bertlab slurm submit|status|cancel`: a sweep as a Slurm job array (`sweep::slurm`), the
//! array's tasks beside their runs, and cancelling it. Data (the job id, the status table, the
//! dry run's script) goes to stdout; notes to stderr.

use std::io::Write;
use std::path::PathBuf;

use anyhow::bail;

use crate::commands::{Outcome, make_plan};
use crate::plan::PlanOptions;
use crate::report::tables::{count_of, text_table};
use crate::store::filesystem::{self, LockScope};
use crate::store::{RunStatus, RunStore};
use crate::sweep::slurm::{self, scheduler, script::SubmitOptions};

/// What the store's filesystem means for several workers: an error where two nodes could train
/// the same run, else notes for stderr.
fn check_store_filesystem(
    store: &RunStore,
    workers: usize,
    trust_store_locks: bool,
) -> anyhow::Result<Vec<String>> {
    let Some(mount) = filesystem::store_mount(store.root()) else {
        return Ok(vec![format!(
            "note: cannot tell which filesystem holds {}: it must be shared by every node, with file locks shared between nodes (docs/cluster.md)",
            store.root().display()
        )]);
    };
    let scope = filesystem::lock_scope(&mount, |path| std::fs::read_to_string(path).ok());
    let root = std::path::absolute(store.root()).unwrap_or_else(|_| store.root().to_path_buf());
    let place = format!(
        "the run store {} is on {} ({})",
        root.display(),
        mount.mount_point.display(),
        mount.filesystem
    );
    Ok(match scope {
        LockScope::Cluster => Vec::new(),
        LockScope::Unsupported { reason } => {
            bail!("{place}: {reason}, so no worker could claim a run; see docs/cluster.md")
        }
        LockScope::NodeOnly { reason } if workers > 1 && !trust_store_locks => bail!(
            "{place}: {reason}, so workers on two nodes could train the same run; put the store where locks are shared (docs/cluster.md lists the mount options), submit --workers 1, or, if you checked that locks are shared there, --trust-store-locks"
        ),
        LockScope::NodeOnly { reason } if workers > 1 => vec![format!(
            "warning: {place}: {reason}; submitting anyway (--trust-store-locks)"
        )],
        LockScope::NodeOnly { reason } => vec![format!(
            "note: {place}: {reason}; one worker is safe, several would not be (docs/cluster.md)"
        )],
        LockScope::Local => vec![format!(
            "note: {place}, a local filesystem: only tasks on this machine see it (fine on a one-node cluster; on a real cluster put the store on shared storage)"
        )],
        LockScope::Unknown => vec![format!(
            "note: {place}: bertlab cannot tell whether its file locks are shared between nodes; docs/cluster.md says what the store needs"
        )],
    })
}

/// How `submit` was asked to go about it.
#[derive(Clone, Copy, Debug)]
pub struct SubmitMode {
    /// Print the script, write nothing.
    pub dry_run: bool,
    /// Several workers even where the mount table says locks stay on each node.
    pub trust_store_locks: bool,
}

/// `bertlab slurm submit`.
pub fn submit(
    store: &RunStore,
    experiments: &[PathBuf],
    plan_options: &PlanOptions,
    options: &SubmitOptions,
    mode: SubmitMode,
    color: bool,
) -> anyhow::Result<Outcome> {
    let dry_run = mode.dry_run;
    if !dry_run {
        scheduler::find_command("sbatch")?;
    }
    // The experiment files must plan here: a typo fails now, not in every task.
    let plan = make_plan(experiments, plan_options, color)?;
    let names: Vec<String> = plan
        .experiments
        .iter()
        .map(|experiment| experiment.name.clone())
        .collect();
    let notes = check_store_filesystem(store, options.workers, mode.trust_store_locks)?;
    let prepared = slurm::prepare(
        store,
        experiments,
        &names,
        options,
        plan_options.max_runs,
        chrono::Utc::now(),
    )?;
    for note in &notes {
        eprintln!("{note}");
    }
    let mut work = vec![count_of(plan.runs.len(), "run")];
    if !plan.searches.is_empty() {
        work.push(count_of(
            plan.searches.iter().map(|search| search.trials).sum(),
            "search trial",
        ));
    }
    if dry_run {
        std::io::stdout()
            .lock()
            .write_all(prepared.script.as_bytes())?;
        eprintln!(
            "dry run: nothing written or submitted; {} planned for {}; the script would be {}",
            work.join(" and "),
            count_of(options.workers, "worker"),
            prepared.folder.join(slurm::SCRIPT_FILE).display()
        );
        return Ok(Outcome::Success);
    }
    let job = slurm::submit(store, &prepared)?;
    println!("{job}");
    eprintln!(
        "submitted job {job}: {} sharing {} in {}; script and task logs in {}; `bertlab slurm status {job}` shows the tasks and their runs",
        count_of(options.workers, "worker"),
        work.join(" and "),
        prepared.record.store.display(),
        prepared.folder.display()
    );
    Ok(Outcome::Success)
}

/// `2 done, 1 interrupted`: the statuses that occur, in [`RunStatus::ALL`]'s order.
fn status_counts(statuses: &[RunStatus]) -> String {
    let parts: Vec<String> = RunStatus::ALL
        .iter()
        .filter_map(|status| {
            let count = statuses.iter().filter(|each| *each == status).count();
            (count > 0).then(|| format!("{count} {status}"))
        })
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// `bertlab slurm status`.
pub fn status(store: &RunStore, job: Option<&str>, color: bool) -> anyhow::Result<Outcome> {
    scheduler::find_command("scontrol")?;
    let submission = slurm::find_submission(store, job)?;
    let Some(job_id) = submission.job_id.clone() else {
        bail!(
            "submission {} was never submitted: {}",
            submission.name,
            submission
                .error
                .as_deref()
                .unwrap_or("sbatch gave no job id")
        );
    };
    let records = scheduler::job_records(&job_id)?;
    let runs = slurm::runs_by_task(store, &job_id)?;
    let rows = slurm::task_rows(submission.workers, records.as_deref(), runs);
    let mut out = String::new();
    out.push_str(&format!(
        "job {job_id} (submission {}, {}): {}\n",
        submission.name,
        count_of(submission.workers, "worker"),
        submission
            .experiments
            .iter()
            .map(|path| path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if records.is_none() {
        out.push_str(
            "Slurm no longer knows the job (it forgets finished jobs after MinJobAge): the runs below are the store's\n",
        );
    }
    let headers: Vec<String> = [
        "task", "state", "node", "time", "restarts", "reason", "runs", "training",
    ]
    .iter()
    .map(|header| header.to_string())
    .collect();
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let slurm = row.slurm.as_ref();
            // A run whose lock is held while its task is not running: a node that died holding
            // it, until the filesystem lets the lock go (docs/cluster.md).
            let task_running = slurm.is_some_and(|record| record.state == "RUNNING");
            let training: Vec<String> = row
                .runs
                .iter()
                .filter(|run| run.status == RunStatus::Running)
                .map(|run| {
                    if task_running {
                        run.hash.short().to_string()
                    } else {
                        format!("{} (held, task not running)", run.hash.short())
                    }
                })
                .collect();
            let dash = || "-".to_string();
            vec![
                format!("{job_id}_{}", row.task),
                slurm.map(|record| record.state.clone()).unwrap_or_else(|| {
                    if records.is_none() {
                        "ended".into()
                    } else {
                        dash()
                    }
                }),
                slurm
                    .and_then(|record| record.node.clone())
                    .unwrap_or_else(dash),
                slurm
                    .map(|record| record.run_time.clone())
                    .filter(|time| !time.is_empty())
                    .unwrap_or_else(dash),
                slurm
                    .map(|record| record.restarts.to_string())
                    .unwrap_or_else(dash),
                slurm
                    .and_then(|record| record.reason.clone())
                    .unwrap_or_else(dash),
                // What the task trained; the run it is training is the next column.
                status_counts(
                    &row.runs
                        .iter()
                        .map(|run| run.status)
                        .filter(|status| *status != RunStatus::Running)
                        .collect::<Vec<_>>(),
                ),
                if training.is_empty() {
                    dash()
                } else {
                    training.join(", ")
                },
            ]
        })
        .collect();
    out.push_str(&text_table(&headers, &table));
    // The sweep's progress: the submission's experiments as they plan now.
    match make_plan(
        &submission.experiments,
        &PlanOptions {
            max_runs: submission.max_runs,
        },
        color,
    ) {
        Ok(plan) => {
            if !plan.runs.is_empty() {
                let statuses = plan
                    .runs
                    .iter()
                    .map(|run| store.status(&run.hash))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                out.push_str(&format!(
                    "sweep: {} planned: {}\n",
                    count_of(plan.runs.len(), "run"),
                    status_counts(&statuses)
                ));
            }
            for record in crate::commands::search_records(&plan, store)? {
                out.push_str(&format!(
                    "search: {}\n",
                    crate::report::search::search_summary(&record)
                ));
            }
        }
        Err(error) => out.push_str(&format!(
            "the experiments no longer plan ({error:#}): no sweep progress\n"
        )),
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    Ok(Outcome::Success)
}

/// `bertlab slurm cancel`.
pub fn cancel(store: &RunStore, job: &str) -> anyhow::Result<Outcome> {
    scheduler::find_command("scancel")?;
    let (array, task) = match job.split_once('_') {
        Some((array, task)) => (array, Some(task)),
        None => (job, None),
    };
    let valid = !array.is_empty()
        && array.bytes().all(|byte| byte.is_ascii_digit())
        && task
            .is_none_or(|task| !task.is_empty() && task.bytes().all(|byte| byte.is_ascii_digit()));
    if !valid {
        bail!(
            "`{job}` is not a job id: give the number `bertlab slurm submit` printed, or JOB_TASK for one task"
        );
    }
    let submission = slurm::find_submission(store, Some(array))?;
    let training: Vec<String> = slurm::runs_by_task(store, array)?
        .into_iter()
        .filter(|(index, run)| {
            run.status == RunStatus::Running && task.is_none_or(|task| task.parse() == Ok(*index))
        })
        .map(|(_, run)| run.hash.short().to_string())
        .collect();
    scheduler::scancel(job)?;
    eprintln!(
        "cancelled {} of submission {}{}",
        match task {
            Some(task) => format!("task {task} of job {array}"),
            None => format!("job {array} ({})", count_of(submission.workers, "task")),
        },
        submission.name,
        if training.is_empty() {
            String::new()
        } else {
            format!(
                ": {} being trained ({}) checkpoint and stop as `interrupted`; another worker, `bertlab run` or a new submission resumes them",
                count_of(training.len(), "run"),
                training.join(", ")
            )
        }
    );
    Ok(Outcome::Success)
}
