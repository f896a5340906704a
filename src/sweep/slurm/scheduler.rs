//! Slurm's own commands, called and read: `sbatch --parsable`, `scontrol show job --oneliner`
//! (never `sacct`, which needs an accounting database most small clusters lack) and `scancel`.
//! The parsers are pure functions of the commands' output, tested on output captured from
//! Slurm 22.05.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The error a missing Slurm command gives (the command exits 2 with it).
#[derive(Debug)]
pub struct SlurmMissing {
    pub command: &'static str,
}

impl std::fmt::Display for SlurmMissing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Slurm's `{}` is not on the PATH: `bertlab slurm` runs where Slurm's commands do (a login node of the cluster); `bertlab slurm submit --dry-run` prints the job script without Slurm",
            self.command
        )
    }
}

impl std::error::Error for SlurmMissing {}

/// Where `name` is on the PATH.
pub fn find_command(name: &'static str) -> Result<PathBuf, SlurmMissing> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|folder| folder.join(name))
        .find(|candidate| is_executable(candidate))
        .ok_or(SlurmMissing { command: name })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

/// Runs a Slurm command; its stdout, or an error with its stderr.
fn call(name: &'static str, args: &[&str]) -> anyhow::Result<String> {
    let program = find_command(name)?;
    let output = Command::new(&program)
        .args(args)
        .output()
        .with_context(|| format!("cannot start {}", program.display()))?;
    if !output.status.success() {
        bail!(
            "`{name} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Submits `script`; the job id sbatch prints.
pub fn sbatch(script: &Path) -> anyhow::Result<String> {
    let script = script
        .to_str()
        .context("the job script's path is not UTF-8")?;
    let output = call("sbatch", &["--parsable", script])?;
    parse_sbatch_output(&output)
}

/// `sbatch --parsable` prints `<job id>` or `<job id>;<cluster>`.
pub fn parse_sbatch_output(output: &str) -> anyhow::Result<String> {
    let first = output.lines().map(str::trim).find(|line| !line.is_empty());
    let id = first
        .and_then(|line| line.split(';').next())
        .filter(|id| !id.is_empty() && id.bytes().all(|byte| byte.is_ascii_digit()));
    match id {
        Some(id) => Ok(id.to_string()),
        None => bail!(
            "sbatch did not print a job id (it printed {:?})",
            output.trim()
        ),
    }
}

/// `scancel JOB`.
pub fn scancel(job: &str) -> anyhow::Result<()> {
    call("scancel", &[job]).map(|_| ())
}

/// One record of `scontrol show job --oneliner`: one array task, or the pending tasks of an
/// array not started yet (`ArrayTaskId=2-3`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRecord {
    /// The array's job id (the one sbatch printed); the job's own id for a job that is no array.
    pub array_job_id: String,
    /// The task ids this record stands for (one, or the pending ones).
    pub tasks: Vec<u32>,
    /// `PENDING`, `RUNNING`, `COMPLETED`, `FAILED`, `CANCELLED`, `TIMEOUT`, ...
    pub state: String,
    /// Why it waits or ended (`None` is dropped).
    pub reason: Option<String>,
    pub restarts: u32,
    /// `HH:MM:SS` (or `D-HH:MM:SS`).
    pub run_time: String,
    pub node: Option<String>,
    /// `code:signal`.
    pub exit_code: String,
}

/// The task ids of `ArrayTaskId`: `3`, `2-3`, `0-7%2`, `1,4-5`.
fn task_ids(text: &str) -> Option<Vec<u32>> {
    let text = text.split('%').next()?;
    let mut ids = Vec::new();
    for part in text.split(',') {
        match part.split_once('-') {
            Some((low, high)) => {
                let (low, high): (u32, u32) = (low.parse().ok()?, high.parse().ok()?);
                if high < low || high - low > 100_000 {
                    return None;
                }
                ids.extend(low..=high);
            }
            None => ids.push(part.parse().ok()?),
        }
    }
    Some(ids)
}

/// The records of `scontrol show job --oneliner JOB` (one line per record of `Key=Value`
/// fields; the fields read here hold no spaces).
pub fn parse_scontrol_jobs(output: &str) -> Vec<JobRecord> {
    output
        .lines()
        .filter(|line| line.contains("JobId="))
        .filter_map(|line| {
            let field = |key: &str| {
                line.split_whitespace()
                    .filter_map(|token| token.split_once('='))
                    .find(|(name, _)| *name == key)
                    .map(|(_, value)| value.to_string())
            };
            let job_id = field("JobId")?;
            let array_job_id = field("ArrayJobId").unwrap_or_else(|| job_id.clone());
            let tasks = match field("ArrayTaskId") {
                Some(ids) => task_ids(&ids)?,
                None => vec![0],
            };
            let node = field("NodeList").filter(|node| !node.is_empty() && node != "(null)");
            Some(JobRecord {
                array_job_id,
                tasks,
                state: field("JobState").unwrap_or_else(|| "UNKNOWN".into()),
                reason: field("Reason").filter(|reason| reason != "None"),
                restarts: field("Restarts")
                    .and_then(|count| count.parse().ok())
                    .unwrap_or(0),
                run_time: field("RunTime").unwrap_or_default(),
                node,
                exit_code: field("ExitCode").unwrap_or_default(),
            })
        })
        .collect()
}

/// What Slurm knows of a job now: its records, or `None` once it forgot the job (finished jobs
/// stay for `MinJobAge`, 300 s by default).
pub fn job_records(job: &str) -> anyhow::Result<Option<Vec<JobRecord>>> {
    let program = find_command("scontrol")?;
    let output = Command::new(&program)
        .args(["show", "job", "--oneliner", job])
        .output()
        .with_context(|| format!("cannot start {}", program.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        if stderr.contains("Invalid job id") {
            return Ok(None);
        }
        bail!(
            "`scontrol show job --oneliner {job}` failed ({}): {}",
            output.status,
            stderr.trim()
        );
    }
    Ok(Some(parse_scontrol_jobs(&stdout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from Slurm 22.05.8 (shortened: fields this module does not read removed).
    const SCONTROL: &str = "JobId=5 ArrayJobId=4 ArrayTaskId=1 JobName=bertlab-tiny UserId=root(0) JobState=RUNNING Reason=None Dependency=(null) Requeue=1 Restarts=1 BatchFlag=1 ExitCode=0:0 RunTime=00:00:07 TimeLimit=UNLIMITED NodeList=vm BatchHost=vm Command=/tmp/a b/job.sh\n\
JobId=4 ArrayJobId=4 ArrayTaskId=0 JobName=bertlab-tiny JobState=COMPLETED Reason=None Restarts=0 ExitCode=0:0 RunTime=00:00:12 NodeList=vm\n\
JobId=6 ArrayJobId=4 ArrayTaskId=2-3%2 JobName=bertlab-tiny JobState=PENDING Reason=JobArrayTaskLimit Restarts=0 ExitCode=0:0 RunTime=00:00:00 NodeList=\n";

    #[test]
    fn scontrol_records_are_read_per_task() {
        let records = parse_scontrol_jobs(SCONTROL);
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].array_job_id, "4");
        assert_eq!(records[0].tasks, vec![1]);
        assert_eq!(records[0].state, "RUNNING");
        assert_eq!(records[0].restarts, 1);
        assert_eq!(records[0].node.as_deref(), Some("vm"));
        assert_eq!(records[0].reason, None);
        assert_eq!(records[1].state, "COMPLETED");
        assert_eq!(records[1].run_time, "00:00:12");
        assert_eq!(records[2].tasks, vec![2, 3]);
        assert_eq!(records[2].reason.as_deref(), Some("JobArrayTaskLimit"));
        assert_eq!(records[2].node, None);
    }

    #[test]
    fn task_ranges_expand() {
        assert_eq!(task_ids("3"), Some(vec![3]));
        assert_eq!(task_ids("1,4-5"), Some(vec![1, 4, 5]));
        assert_eq!(task_ids("0-3%2"), Some(vec![0, 1, 2, 3]));
        assert_eq!(task_ids("x"), None);
        assert_eq!(task_ids("5-2"), None);
    }

    #[test]
    fn sbatch_prints_the_job_id_and_maybe_the_cluster() {
        assert_eq!(parse_sbatch_output("12\n").unwrap(), "12");
        assert_eq!(parse_sbatch_output("12;cluster-a\n").unwrap(), "12");
        let error = parse_sbatch_output("sbatch: error: x\n").unwrap_err();
        assert!(
            error.to_string().contains("did not print a job id"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_command_is_named() {
        let error = SlurmMissing { command: "sbatch" }.to_string();
        assert!(error.contains("`sbatch` is not on the PATH"), "{error}");
    }
}
