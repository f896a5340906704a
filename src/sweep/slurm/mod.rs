//! A sweep carried out by a Slurm job array: the submission, what each task trained, cancelling.
//!
//! Owns: the submission folder (`<store>/slurm/<UTC timestamp>-<short id>/`: `job.sh`,
//! `submission.json` with the job id once sbatch gave one, and one `task-<N>.log` per array
//! task once Slurm runs it), [`submit`], the tasks of a submission beside the runs each one
//! trained ([`task_rows`]), and which Slurm task this process is ([`job_task_from_environment`],
//! recorded in every run's `provenance.slurm`). `script` writes `job.sh`, `scheduler` calls and
//! reads Slurm's commands.
//!
//! Every task runs the ordinary `bertlab run` on the same experiments and store: the run
//! store's claims share the runs (and a search's trials) out, as between processes on one
//! machine, and a run a task stopped (time limit, preemption, cancellation) is resumed from its
//! checkpoint by whichever worker claims it next.

pub mod scheduler;
pub mod script;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{RunStatus, RunStore, SlurmProvenance};
use crate::support::atomic_file;
use script::{ScriptInputs, SubmitOptions};

/// The folder under the store that holds the submissions.
pub const SUBMISSIONS_FOLDER: &str = "slurm";
pub const SCRIPT_FILE: &str = "job.sh";
pub const SUBMISSION_FILE: &str = "submission.json";
/// Set by the job script: the submission folder's name, recorded in each run's provenance.
pub const SUBMISSION_VARIABLE: &str = "BERTLAB_SLURM_SUBMISSION";

/// `submission.json`: what was submitted, and the job id once sbatch gave it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubmissionRecord {
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// The array's job id, once submitted.
    pub job_id: Option<String>,
    /// Why sbatch refused it, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub workers: usize,
    pub experiments: Vec<PathBuf>,
    pub store: PathBuf,
    pub bertlab: PathBuf,
    pub working_directory: PathBuf,
    pub job_name: String,
    /// `--max-runs` of the submission (the workers plan with it; so does `status`).
    #[serde(default = "default_max_runs")]
    pub max_runs: usize,
}

fn default_max_runs() -> usize {
    crate::plan::PlanOptions::default().max_runs
}

/// A submission prepared: its folder (not created yet), record and script.
#[derive(Clone, Debug)]
pub struct PreparedSubmission {
    pub folder: PathBuf,
    pub record: SubmissionRecord,
    pub script: String,
}

/// `<UTC timestamp>-<6 hex digits>`: sorts by time; the digits tell apart two submissions of
/// the same second (a hash of the time in nanoseconds, the process and the experiments).
pub fn submission_name(now: DateTime<Utc>, experiments: &[PathBuf]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(now.timestamp_nanos_opt().unwrap_or_default().to_le_bytes());
    hasher.update(std::process::id().to_le_bytes());
    for path in experiments {
        hasher.update(path.display().to_string().as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    let short: String = digest[..3]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("{}-{short}", now.format("%Y%m%dT%H%M%SZ"))
}

/// An absolute form of `path` (relative to the current directory), symlinks resolved where the
/// path exists.
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    if let Ok(resolved) = std::fs::canonicalize(path) {
        return Ok(resolved);
    }
    std::path::absolute(path).with_context(|| format!("cannot make {} absolute", path.display()))
}

/// The job's name: `bertlab-<first experiment's name>` (`+N` more), in sbatch's safe letters.
fn job_name(experiment_names: &[String]) -> String {
    let first = experiment_names
        .first()
        .map(String::as_str)
        .unwrap_or("sweep");
    let mut name: String = format!("bertlab-{first}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if experiment_names.len() > 1 {
        name.push_str(&format!("+{}", experiment_names.len() - 1));
    }
    name
}

/// Prepares a submission: absolute paths, the folder's name, the record and the script. Writes
/// nothing.
pub fn prepare(
    store: &RunStore,
    experiments: &[PathBuf],
    experiment_names: &[String],
    options: &SubmitOptions,
    max_runs: usize,
    now: DateTime<Utc>,
) -> anyhow::Result<PreparedSubmission> {
    if options.workers == 0 {
        bail!("--workers must be at least 1");
    }
    if let Some(time) = &options.time {
        let seconds = script::time_limit_seconds(time)
            .with_context(|| format!("`{time}` is not a time limit"))?;
        // Slurm may send the warning up to 60 s early: leave the task some time to train.
        let needed = u64::from(options.signal_before_seconds) + 120;
        if seconds < needed {
            bail!(
                "--time {time} ({seconds} s) leaves no time to train before the warning {} s ahead of the limit (--signal-before; Slurm may send it up to 60 s early): give --time of at least {needed} s, or a smaller --signal-before",
                options.signal_before_seconds
            );
        }
    }
    for argument in &options.sbatch_args {
        if let Some(problem) = script::sbatch_argument_problem(argument) {
            bail!(problem);
        }
    }
    if options.gpus_per_worker > 0 && !cfg!(feature = "cuda") {
        bail!(
            "--gpus-per-worker {} needs a bertlab built with the `cuda` feature (`cargo build --release --features cuda`); this one trains on the CPU only",
            options.gpus_per_worker
        );
    }
    let store_root = absolute(store.root())?;
    let experiments: Vec<PathBuf> = experiments
        .iter()
        .map(|path| absolute(path))
        .collect::<anyhow::Result<_>>()?;
    let bertlab = std::env::current_exe().context("cannot find the bertlab binary's path")?;
    let working_directory = std::env::current_dir().context("cannot read the current directory")?;
    let name = submission_name(now, &experiments);
    let folder = store_root.join(SUBMISSIONS_FOLDER).join(&name);
    for (what, path) in [
        ("the submission folder", &folder),
        ("the working directory", &working_directory),
    ] {
        if !script::usable_in_directives(path) {
            bail!(
                "{what} {} holds a space, a quote, `%`, `#` or a backslash, which sbatch cannot take in an #SBATCH line: use a run store and a working directory without them",
                path.display()
            );
        }
    }
    let record = SubmissionRecord {
        name: name.clone(),
        created_at: now,
        job_id: None,
        error: None,
        workers: options.workers,
        experiments: experiments.clone(),
        store: store_root.clone(),
        bertlab: bertlab.clone(),
        working_directory: working_directory.clone(),
        job_name: job_name(experiment_names),
        max_runs,
    };
    let version = format!(
        "{}{}",
        env!("CARGO_PKG_VERSION"),
        crate::store::commit_suffix(crate::sweep::bertlab_commit().as_deref())
    );
    let script = script::job_script(&ScriptInputs {
        name: &name,
        folder: &folder,
        store: &store_root,
        bertlab: &bertlab,
        working_directory: &working_directory,
        experiments: &experiments,
        job_name: &record.job_name,
        options,
        written_at: now,
        bertlab_version: &version,
    });
    Ok(PreparedSubmission {
        folder,
        record,
        script,
    })
}

fn write_record(folder: &Path, record: &SubmissionRecord) -> anyhow::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(record)?;
    bytes.push(b'\n');
    atomic_file::write(&folder.join(SUBMISSION_FILE), &bytes)
}

/// Writes the submission folder (script and record), submits the script with sbatch and records
/// the job id (or sbatch's refusal) in `submission.json`. Returns the job id.
pub fn submit(store: &RunStore, prepared: &PreparedSubmission) -> anyhow::Result<String> {
    // Fail before writing anything when sbatch is missing.
    scheduler::find_command("sbatch")?;
    store.create()?;
    std::fs::create_dir_all(&prepared.folder).with_context(|| {
        format!(
            "cannot create the submission folder {}",
            prepared.folder.display()
        )
    })?;
    let script_path = prepared.folder.join(SCRIPT_FILE);
    atomic_file::write(&script_path, prepared.script.as_bytes())?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script_path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot make {} executable", script_path.display()))?;
    }
    let mut record = prepared.record.clone();
    write_record(&prepared.folder, &record)?;
    match scheduler::sbatch(&script_path) {
        Ok(job) => {
            record.job_id = Some(job.clone());
            write_record(&prepared.folder, &record)?;
            Ok(job)
        }
        Err(error) => {
            record.error = Some(format!("{error:#}"));
            write_record(&prepared.folder, &record)?;
            Err(error.context(format!(
                "the job was not submitted; its script is in {}",
                prepared.folder.display()
            )))
        }
    }
}

/// Every submission of the store, oldest first (by folder name, which starts with the time).
pub fn submissions(store: &RunStore) -> anyhow::Result<Vec<SubmissionRecord>> {
    let folder = store.root().join(SUBMISSIONS_FOLDER);
    let entries = match std::fs::read_dir(&folder) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(error).with_context(|| format!("cannot list {}", folder.display()));
        }
    };
    let mut records = Vec::new();
    for entry in entries {
        let path = entry?.path().join(SUBMISSION_FILE);
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let record: SubmissionRecord = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a submission record", path.display()))?;
        records.push(record);
    }
    records.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(records)
}

/// The submission `job` names: its job id, or its folder's name (or a prefix of it); the
/// newest submitted one when `job` is `None`.
pub fn find_submission(store: &RunStore, job: Option<&str>) -> anyhow::Result<SubmissionRecord> {
    let all = submissions(store)?;
    let submitted = || all.iter().filter(|record| record.job_id.is_some());
    let found = match job {
        None => submitted().next_back(),
        Some(job)
            if job
                .bytes()
                .all(|byte| byte.is_ascii_digit() || byte == b'_') =>
        {
            let array = job.split('_').next().unwrap_or(job);
            submitted().find(|record| record.job_id.as_deref() == Some(array))
        }
        Some(name) => {
            let matching: Vec<&SubmissionRecord> = all
                .iter()
                .filter(|record| record.name.starts_with(name))
                .collect();
            if matching.len() > 1 {
                bail!(
                    "`{name}` names {} submissions ({}): give more of the folder's name, or the job id",
                    matching.len(),
                    matching
                        .iter()
                        .map(|record| record.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            matching.first().copied()
        }
    };
    match found {
        Some(record) => Ok(record.clone()),
        None => {
            let known: Vec<String> = submitted()
                .rev()
                .take(5)
                .map(|record| {
                    format!(
                        "job {} ({})",
                        record.job_id.as_deref().unwrap_or("?"),
                        record.name
                    )
                })
                .collect();
            bail!(
                "{} in {}{}",
                match job {
                    Some(job) => format!("no submission of job `{job}`"),
                    None => "no Slurm submission".to_string(),
                },
                store.root().join(SUBMISSIONS_FOLDER).display(),
                if known.is_empty() {
                    ": `bertlab slurm submit` makes one".to_string()
                } else {
                    format!("; the latest: {}", known.join(", "))
                }
            )
        }
    }
}

/// Which Slurm task this process is, from the variables Slurm sets in a job (`None` outside
/// one).
pub fn job_task_from_environment() -> Option<SlurmProvenance> {
    job_task_from(|name| std::env::var(name).ok())
}

/// [`job_task_from_environment`] with the variables read by `variable`.
pub fn job_task_from(variable: impl Fn(&str) -> Option<String>) -> Option<SlurmProvenance> {
    let job = variable("SLURM_JOB_ID").filter(|id| !id.is_empty())?;
    Some(SlurmProvenance {
        job_id: variable("SLURM_ARRAY_JOB_ID")
            .filter(|id| !id.is_empty())
            .unwrap_or(job),
        array_task_id: variable("SLURM_ARRAY_TASK_ID").and_then(|id| id.parse().ok()),
        restart_count: variable("SLURM_RESTART_COUNT")
            .and_then(|count| count.parse().ok())
            .unwrap_or(0),
        submission: variable(SUBMISSION_VARIABLE).filter(|name| !name.is_empty()),
    })
}

/// A run one task of a job trained (the task that last worked on it).
#[derive(Clone, Debug, PartialEq)]
pub struct TaskRun {
    pub hash: crate::plan::spec::RunHash,
    pub status: RunStatus,
    pub restart_count: u32,
    pub experiment: Option<String>,
}

/// One array task: Slurm's view (when Slurm still knows the job) beside the runs it trained.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskRow {
    pub task: u32,
    pub slurm: Option<scheduler::JobRecord>,
    pub runs: Vec<TaskRun>,
}

/// The runs of the store whose last trainer was `job`, by array task.
pub fn runs_by_task(store: &RunStore, job: &str) -> anyhow::Result<Vec<(u32, TaskRun)>> {
    let mut runs = Vec::new();
    for hash in store.runs()? {
        let (Some(record), status) = store.record_and_status(&hash)? else {
            continue;
        };
        let Some(slurm) = record
            .provenance
            .as_ref()
            .and_then(|provenance| provenance.slurm.as_ref())
        else {
            continue;
        };
        if slurm.job_id != job {
            continue;
        }
        runs.push((
            slurm.array_task_id.unwrap_or(0),
            TaskRun {
                hash,
                status,
                restart_count: slurm.restart_count,
                experiment: record.experiment.clone(),
            },
        ));
    }
    Ok(runs)
}

/// The tasks of a submission, each with Slurm's record (when given) and its runs.
pub fn task_rows(
    workers: usize,
    records: Option<&[scheduler::JobRecord]>,
    runs: Vec<(u32, TaskRun)>,
) -> Vec<TaskRow> {
    let mut rows: Vec<TaskRow> = (0..workers as u32)
        .map(|task| TaskRow {
            task,
            slurm: records.and_then(|records| {
                records
                    .iter()
                    .find(|record| record.tasks.contains(&task))
                    .cloned()
            }),
            runs: Vec::new(),
        })
        .collect();
    for (task, run) in runs {
        if let Some(row) = rows.get_mut(task as usize) {
            row.runs.push(run);
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_task_comes_from_slurms_variables() {
        let variables = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| value.to_string())
            }
        };
        assert_eq!(job_task_from(variables(&[])), None);
        let task = job_task_from(variables(&[
            ("SLURM_JOB_ID", "15"),
            ("SLURM_ARRAY_JOB_ID", "12"),
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_RESTART_COUNT", "2"),
            ("BERTLAB_SLURM_SUBMISSION", "20261201T000000Z-abcdef"),
        ]))
        .unwrap();
        assert_eq!(task.job_id, "12");
        assert_eq!(task.array_task_id, Some(3));
        assert_eq!(task.restart_count, 2);
        assert_eq!(task.label(), "slurm job 12_3 (restart 2)");
        let plain = job_task_from(variables(&[("SLURM_JOB_ID", "7")])).unwrap();
        assert_eq!(plain.job_id, "7");
        assert_eq!(plain.array_task_id, None);
        assert_eq!(plain.restart_count, 0);
        assert_eq!(plain.label(), "slurm job 7 (restart 0)");
    }

    #[test]
    fn submission_names_sort_by_time_and_differ_within_a_second() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T16:05:01.5Z")
            .unwrap()
            .with_timezone(&Utc);
        let name = submission_name(now, &[PathBuf::from("/a.toml")]);
        assert!(name.starts_with("20261201T160501Z-"), "{name}");
        assert_eq!(name.len(), "20261201T160501Z-".len() + 6);
        let other = submission_name(now, &[PathBuf::from("/b.toml")]);
        assert_ne!(name, other);
    }

    #[test]
    fn job_names_use_safe_letters() {
        assert_eq!(
            job_name(&["tweets sentiment".into()]),
            "bertlab-tweets-sentiment"
        );
        assert_eq!(
            job_name(&["a".into(), "b".into(), "c".into()]),
            "bertlab-a+2"
        );
    }

    #[test]
    fn tasks_meet_their_records_and_runs() {
        let record = scheduler::JobRecord {
            array_job_id: "4".into(),
            tasks: vec![1, 2],
            state: "PENDING".into(),
            reason: None,
            restarts: 0,
            run_time: String::new(),
            node: None,
            exit_code: String::new(),
        };
        let run = TaskRun {
            hash: crate::plan::spec::hash_canonical(b"{}"),
            status: RunStatus::Done,
            restart_count: 0,
            experiment: None,
        };
        let rows = task_rows(
            3,
            Some(std::slice::from_ref(&record)),
            vec![(0, run.clone())],
        );
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].slurm, None);
        assert_eq!(rows[0].runs, vec![run]);
        assert_eq!(rows[2].slurm.as_ref(), Some(&record));
    }
}
