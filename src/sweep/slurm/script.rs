//! The sbatch script of a submission: a pure function from what was asked to the bytes of
//! `job.sh` (snapshot-tested through `bertlab slurm submit --dry-run`).
//!
//! The script starts a job array of `workers` tasks; each task runs `bertlab run` on the same
//! experiments and store, so the store's claims share the runs out. Slurm's warning before the
//! time limit (`--signal=B:USR1@S`, to the batch shell) becomes a SIGTERM to the worker, which
//! checkpoints its run and stops; the shell then requeues its own task, which resumes the run
//! when it starts again. Cancellation, `scontrol requeue` and preemption send SIGTERM to every
//! process of the task: the worker checkpoints the same way, and the shell waits for it (a batch
//! shell that exits first gets its leftover processes killed).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

/// What `bertlab slurm submit` was asked for, besides the experiments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmitOptions {
    /// Array tasks, each one worker (`--workers`).
    pub workers: usize,
    pub partition: Option<String>,
    pub account: Option<String>,
    /// The time limit of each task, as sbatch takes it (`--time`).
    pub time: Option<String>,
    /// GPUs per task (`--gres=gpu:G`); the worker trains one run per GPU (`--devices`).
    pub gpus_per_worker: usize,
    /// CPUs per task (`--cpus-per-task`); the worker's matrix products use that many threads.
    pub cpus_per_worker: Option<usize>,
    /// Seconds before the time limit that Slurm warns the task (`--signal=B:USR1@S`).
    pub signal_before_seconds: u32,
    /// Further `#SBATCH` lines, as given (`--sbatch-arg`).
    pub sbatch_args: Vec<String>,
    /// Retry runs that failed before the submission (`--retry-failed-before` to every worker,
    /// so a failed run is retried once, not once per task start).
    pub retry_failed: bool,
    /// Flags passed on to every worker's `bertlab run` (`--retry-failed`, `--max-runs N`, ...).
    pub run_flags: Vec<String>,
}

impl Default for SubmitOptions {
    fn default() -> SubmitOptions {
        SubmitOptions {
            workers: 1,
            partition: None,
            account: None,
            time: None,
            gpus_per_worker: 0,
            cpus_per_worker: None,
            signal_before_seconds: DEFAULT_SIGNAL_BEFORE_SECONDS,
            sbatch_args: Vec::new(),
            retry_failed: false,
            run_flags: Vec::new(),
        }
    }
}

/// Time for a step, a checkpoint and its fsync on shared storage before the limit.
pub const DEFAULT_SIGNAL_BEFORE_SECONDS: u32 = 180;

/// Everything the script names, resolved to absolute paths.
#[derive(Clone, Debug)]
pub struct ScriptInputs<'a> {
    /// The submission folder's name (`<UTC timestamp>-<short id>`).
    pub name: &'a str,
    /// `<store>/slurm/<name>`: the script, the per-task logs.
    pub folder: &'a Path,
    pub store: &'a Path,
    /// The bertlab binary every task runs (on storage every node sees).
    pub bertlab: &'a Path,
    /// Where the tasks start (`--chdir`): where `submit` ran.
    pub working_directory: &'a Path,
    pub experiments: &'a [PathBuf],
    /// The job's name (`bertlab-<experiment>`).
    pub job_name: &'a str,
    pub options: &'a SubmitOptions,
    pub written_at: DateTime<Utc>,
    /// `0.1.0 (commit)`.
    pub bertlab_version: &'a str,
}

/// The name of each task's log in the submission folder; `%a` is the array task id.
pub const TASK_LOG_PATTERN: &str = "task-%a.log";

/// The log of one task.
pub fn task_log_name(task: u32) -> String {
    TASK_LOG_PATTERN.replace("%a", &task.to_string())
}

/// `text` as one word for bash: bare when it is safe, else single-quoted.
pub fn shell_word(text: &str) -> String {
    let safe = !text.is_empty()
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"/._-+=:,@%".contains(&byte));
    if safe {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

fn path_word(path: &Path) -> String {
    shell_word(&path.display().to_string())
}

/// The bytes of `job.sh`.
pub fn job_script(inputs: &ScriptInputs) -> String {
    let options = inputs.options;
    let mut script = String::new();
    let mut line = |text: &str| {
        script.push_str(text);
        script.push('\n');
    };
    line("#!/bin/bash");
    line(&format!(
        "# bertlab Slurm submission {}: written by bertlab {} at {}.",
        inputs.name,
        inputs.bertlab_version,
        inputs.written_at.format("%Y-%m-%dT%H:%M:%SZ")
    ));
    line(&format!(
        "# {} (array tasks 0-{}), each running `bertlab run` on the same experiments and run",
        crate::support::progress::count_of(options.workers, "worker"),
        options.workers - 1
    ));
    line(
        "# store: the store's claims share the runs (and a search's trials) out. To run it again,",
    );
    line("# submit the experiments again (a new folder that `bertlab slurm status` knows).");
    line(&format!("#SBATCH --job-name={}", inputs.job_name));
    line(&format!("#SBATCH --array=0-{}", options.workers - 1));
    line(&format!(
        "#SBATCH --output={}",
        inputs.folder.join(TASK_LOG_PATTERN).display()
    ));
    line("#SBATCH --open-mode=append");
    line(&format!(
        "#SBATCH --chdir={}",
        inputs.working_directory.display()
    ));
    line("#SBATCH --requeue");
    line(&format!(
        "#SBATCH --signal=B:USR1@{}",
        options.signal_before_seconds
    ));
    if let Some(time) = &options.time {
        line(&format!("#SBATCH --time={time}"));
    }
    if let Some(partition) = &options.partition {
        line(&format!("#SBATCH --partition={partition}"));
    }
    if let Some(account) = &options.account {
        line(&format!("#SBATCH --account={account}"));
    }
    if options.gpus_per_worker > 0 {
        line(&format!("#SBATCH --gres=gpu:{}", options.gpus_per_worker));
    }
    if let Some(cpus) = options.cpus_per_worker {
        line(&format!("#SBATCH --cpus-per-task={cpus}"));
    }
    for argument in &options.sbatch_args {
        line(&format!("#SBATCH {argument}"));
    }
    line("");
    line("set -u");
    line(&format!(
        "export BERTLAB_SLURM_SUBMISSION={}",
        shell_word(inputs.name)
    ));
    line("# The matrix products use the task's CPUs, not every core of the node.");
    line(
        "if [ -n \"${SLURM_CPUS_PER_TASK:-}\" ]; then export RAYON_NUM_THREADS=\"$SLURM_CPUS_PER_TASK\"; fi",
    );
    line("task=\"${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}_${SLURM_ARRAY_TASK_ID:-0}\"");
    line(
        "echo \"== $(date -u +%Y-%m-%dT%H:%M:%SZ) task $task on $(hostname) (restart ${SLURM_RESTART_COUNT:-0})\"",
    );
    line("");
    let mut command = vec![
        path_word(inputs.bertlab),
        "--runs".into(),
        path_word(inputs.store),
        "run".into(),
    ];
    command.extend(inputs.experiments.iter().map(|path| path_word(path)));
    if options.gpus_per_worker > 0 {
        let devices: Vec<String> = (0..options.gpus_per_worker)
            .map(|index| index.to_string())
            .collect();
        command.push("--devices".into());
        command.push(devices.join(","));
    }
    if options.retry_failed {
        command.push(format!(
            "--retry-failed-before={}",
            inputs.written_at.format("%Y-%m-%dT%H:%M:%SZ")
        ));
    }
    command.extend(options.run_flags.iter().map(|flag| shell_word(flag)));
    line("# Slurm's warning before the time limit: the worker checkpoints its run and stops, then");
    line("# this task goes back in the queue and resumes the run when it starts again.");
    line("requeue=0");
    line("worker=");
    line(
        "trap 'echo \"== warning signal: checkpoint, stop, requeue\"; requeue=1; [ -n \"$worker\" ] && kill -TERM \"$worker\" 2>/dev/null' USR1",
    );
    line(
        "# Cancellation, requeue and preemption signal the worker itself: wait for its checkpoint.",
    );
    line("trap 'echo \"== stopping: the worker checkpoints its run\"' TERM INT");
    line("");
    line(&format!("{} &", command.join(" ")));
    line("worker=$!");
    line("while :; do");
    line("    wait \"$worker\"");
    line("    status=$?");
    line("    kill -0 \"$worker\" 2>/dev/null || break");
    line("done");
    line("# A trap may have ended the last wait: the worker's own status, now that it is gone.");
    line("wait \"$worker\"");
    line("last=$?");
    line("if [ \"$last\" != 127 ]; then status=$last; fi");
    line("echo \"== $(date -u +%Y-%m-%dT%H:%M:%SZ) bertlab ended with status $status\"");
    line("# Only a worker the warning stopped (status 130) goes back in the queue: a finished");
    line("# sweep, or one that failed, ends here.");
    line("if [ \"$requeue\" = 1 ] && [ \"$status\" = 130 ]; then");
    line("    scontrol requeue \"$task\" ||");
    line(
        "        echo \"== scontrol requeue $task failed: its run resumes with another worker or the next submission\"",
    );
    line("fi");
    line("exit \"$status\"");
    script
}

/// Whether sbatch reads `path` as one value in an `#SBATCH` line: no whitespace, no quotes, no
/// `%` (a filename pattern), no `#` (a comment there) and no backslash.
pub fn usable_in_directives(path: &Path) -> bool {
    path.to_str().is_some_and(|text| {
        !text
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '%' | '#' | '\\'))
    })
}

/// The seconds of a time limit as sbatch takes it: `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`,
/// `D-HH:MM`, `D-HH:MM:SS`.
pub fn time_limit_seconds(text: &str) -> Option<u64> {
    let number = |part: &str| -> Option<u64> {
        (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
            .then(|| part.parse().ok())
            .flatten()
    };
    let (days, clock) = match text.split_once('-') {
        Some((days, clock)) => (Some(number(days)?), clock),
        None => (None, text),
    };
    let parts = clock.split(':').map(number).collect::<Option<Vec<u64>>>()?;
    let seconds = match (days, parts.as_slice()) {
        (None, [minutes]) => minutes * 60,
        (None, [minutes, seconds]) => minutes * 60 + seconds,
        (None, [hours, minutes, seconds]) | (Some(_), [hours, minutes, seconds]) => {
            hours * 3600 + minutes * 60 + seconds
        }
        (Some(_), [hours]) => hours * 3600,
        (Some(_), [hours, minutes]) => hours * 3600 + minutes * 60,
        _ => return None,
    };
    Some(days.unwrap_or(0) * 86_400 + seconds)
}

/// The sbatch options bertlab writes itself (and that would break the job if overridden), as
/// `(long, short)`.
const OWN_OPTIONS: &[(&str, Option<&str>)] = &[
    ("--array", Some("-a")),
    ("--output", Some("-o")),
    ("--error", Some("-e")),
    ("--open-mode", None),
    ("--chdir", Some("-D")),
    ("--signal", None),
    ("--requeue", None),
    ("--no-requeue", None),
    ("--export", None),
    ("--wrap", None),
];

/// Why an `--sbatch-arg` cannot be used, if it cannot.
pub fn sbatch_argument_problem(argument: &str) -> Option<String> {
    if argument.contains('\n') || argument.contains('\r') {
        return Some(format!("--sbatch-arg {argument:?} holds a line break"));
    }
    if !argument.starts_with('-') {
        return Some(format!(
            "--sbatch-arg `{argument}` is not an option: give it as sbatch takes it, like --sbatch-arg=--exclusive"
        ));
    }
    let name = argument.split(['=', ' ']).next().unwrap_or(argument);
    let own = OWN_OPTIONS.iter().find(|(long, short)| {
        name == *long
            || short.is_some_and(|short| !argument.starts_with("--") && argument.starts_with(short))
    })?;
    Some(format!(
        "--sbatch-arg `{argument}` would override bertlab's own `{}` line of the job script ({}), and the job would not work as bertlab expects",
        own.0,
        match own.0 {
            "--array" => "use --workers",
            "--signal" => "use --signal-before",
            "--output" | "--error" | "--open-mode" => "the task logs go to the submission folder",
            "--chdir" => "tasks start where `submit` ran",
            _ => "bertlab needs it as written",
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_only_when_they_must_be() {
        assert_eq!(shell_word("/data/runs"), "/data/runs");
        assert_eq!(shell_word("--max-runs=5"), "--max-runs=5");
        assert_eq!(shell_word("my runs"), "'my runs'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word("$HOME"), "'$HOME'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn paths_with_spaces_or_patterns_cannot_go_in_directives() {
        assert!(usable_in_directives(Path::new("/data/runs/slurm/x")));
        assert!(!usable_in_directives(Path::new("/data/my runs")));
        assert!(!usable_in_directives(Path::new("/data/100%")));
        assert!(!usable_in_directives(Path::new("/data/#1")));
    }

    #[test]
    fn time_limits_are_read_as_sbatch_reads_them() {
        assert_eq!(time_limit_seconds("30"), Some(1800));
        assert_eq!(time_limit_seconds("02:30"), Some(150));
        assert_eq!(time_limit_seconds("04:00:00"), Some(14_400));
        assert_eq!(time_limit_seconds("1-02"), Some(93_600));
        assert_eq!(time_limit_seconds("1-02:30"), Some(95_400));
        assert_eq!(time_limit_seconds("2-00:00:10"), Some(172_810));
        assert_eq!(time_limit_seconds("soon"), None);
        assert_eq!(time_limit_seconds("1:2:3:4"), None);
    }

    #[test]
    fn sbatch_arguments_that_would_break_the_job_are_refused() {
        assert_eq!(sbatch_argument_problem("--exclusive"), None);
        assert_eq!(sbatch_argument_problem("--mem=16G"), None);
        assert_eq!(sbatch_argument_problem("--constraint=a100"), None);
        assert_eq!(sbatch_argument_problem("-N1"), None);
        for bad in [
            "--array=0-9",
            "-a0-3",
            "--output=x.log",
            "-o x",
            "--signal=USR1@60",
            "--no-requeue",
            "--export=NONE",
            "-D /tmp",
        ] {
            assert!(sbatch_argument_problem(bad).is_some(), "{bad}");
        }
        assert!(
            sbatch_argument_problem("--array=1")
                .unwrap()
                .contains("--workers")
        );
        assert!(
            sbatch_argument_problem("exclusive")
                .unwrap()
                .contains("not an option")
        );
        assert!(sbatch_argument_problem("--x\n#SBATCH --array=1").is_some());
    }

    #[test]
    fn gpus_become_gres_and_devices() {
        let options = SubmitOptions {
            workers: 3,
            gpus_per_worker: 2,
            cpus_per_worker: Some(8),
            time: Some("04:00:00".into()),
            sbatch_args: vec!["--exclusive".into()],
            retry_failed: true,
            run_flags: vec!["--fail-fast".into()],
            ..SubmitOptions::default()
        };
        let experiments = vec![PathBuf::from("/home/a/exp one.toml")];
        let script = job_script(&ScriptInputs {
            name: "20261201T160000Z-abcdef",
            folder: Path::new("/s/slurm/20261201T160000Z-abcdef"),
            store: Path::new("/s"),
            bertlab: Path::new("/opt/bertlab"),
            working_directory: Path::new("/home/a"),
            experiments: &experiments,
            job_name: "bertlab-x",
            options: &options,
            written_at: DateTime::from_timestamp(0, 0).unwrap(),
            bertlab_version: "0.1.0",
        });
        for expected in [
            "#SBATCH --array=0-2\n",
            "#SBATCH --gres=gpu:2\n",
            "#SBATCH --cpus-per-task=8\n",
            "#SBATCH --time=04:00:00\n",
            "#SBATCH --exclusive\n",
            "#SBATCH --output=/s/slurm/20261201T160000Z-abcdef/task-%a.log\n",
            "/opt/bertlab --runs /s run '/home/a/exp one.toml' --devices 0,1 --retry-failed-before=1970-01-01T00:00:00Z --fail-fast &\n",
        ] {
            assert!(script.contains(expected), "{expected} missing in\n{script}");
        }
        assert!(!script.contains("--partition"));
    }
}
