//! `bertlab slurm` against a real Slurm: a one-node cluster from Debian's packages
//! (`scripts/slurm-local.sh start`). A sweep shared by two array tasks trains every run once; a
//! task requeued mid-run (`scontrol requeue`, then Slurm's time-limit warning) resumes its run
//! from the checkpoint and ends bit-identical to an uninterrupted run; a task cancelled mid-run
//! leaves its run to the other worker. Where no Slurm answers, these tests say they were
//! skipped and why; `BERTLAB_REQUIRE_SLURM=1` (set by CI) makes that a failure.
//!
//! Without Slurm: the `--dry-run` script (snapshot), and the plain errors when Slurm's commands
//! are missing or a flag cannot work.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{Workspace, metrics_without_time, run_directories};
use serde_json::Value;

/// The Slurm tests share one small cluster: one at a time, so that a test's two workers both run.
static CLUSTER: Mutex<()> = Mutex::new(());

/// Whether a Slurm controller answers; otherwise says why the test is skipped (or fails, where
/// `BERTLAB_REQUIRE_SLURM=1`).
fn slurm_answers(test: &str) -> bool {
    let answers = Command::new("scontrol")
        .arg("ping")
        .output()
        .is_ok_and(|output| {
            output.status.success() && String::from_utf8_lossy(&output.stdout).contains("UP")
        });
    if answers {
        return true;
    }
    let reason = "no Slurm controller answers `scontrol ping` (start a one-node cluster as root: scripts/slurm-local.sh start)";
    if std::env::var("BERTLAB_REQUIRE_SLURM").as_deref() == Ok("1") {
        panic!("{test}: {reason}, and BERTLAB_REQUIRE_SLURM=1 forbids skipping");
    }
    // Straight to stderr, past the test harness's capture: a skip must be seen.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped {test}: {reason}");
    false
}

fn experiment(grid: &str, epochs: usize) -> String {
    format!(
        "name = \"tiny-slurm\"\n\n[data]\ntrain = \"../data/train.csv\"\n\n[model]\npath = \"../models/tiny\"\n\n\
         [train]\nmax_length = 32\nbatch_size = 8\nepochs = {epochs}\n\n[grid]\n{grid}\n"
    )
}

/// `bertlab --runs runs slurm ...` in the workspace; with a step delay (milliseconds) the
/// job's workers take that long per optimizer step, so a test can act in the middle of a run.
fn slurm_command(workspace: &Workspace, args: &[&str], step_delay_ms: u64) -> Command {
    let mut command = workspace.command(&["--runs", "runs", "slurm"]);
    command.args(args);
    if step_delay_ms > 0 {
        command.env(
            bertlab::train::epochs::STEP_DELAY_VARIABLE,
            step_delay_ms.to_string(),
        );
    }
    command
}

/// Submits and returns the job id (stdout).
fn submit(workspace: &Workspace, args: &[&str], step_delay_ms: u64) -> String {
    let mut full = vec!["submit"];
    full.extend_from_slice(args);
    let output = slurm_command(workspace, &full, step_delay_ms)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "submit failed: {stderr}");
    let job = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert!(
        !job.is_empty() && job.bytes().all(|byte| byte.is_ascii_digit()),
        "stdout is the job id: {job:?}"
    );
    assert!(stderr.contains(&format!("submitted job {job}")), "{stderr}");
    job
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|error| panic!("{}: {error}", path.display())),
    )
    .unwrap()
}

fn scontrol(args: &[&str]) -> (bool, String) {
    let output = Command::new("scontrol").args(args).output().unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// The states of a job's tasks (`JobState=` of every record).
fn job_states(job: &str) -> Vec<String> {
    let (_, text) = scontrol(&["show", "job", "--oneliner", job]);
    text.split_whitespace()
        .filter_map(|token| token.strip_prefix("JobState="))
        .map(String::from)
        .collect()
}

/// Polls `condition` every 200 ms until it holds; panics after `seconds` with `what` and the
/// job's logs.
fn wait_until(
    seconds: u64,
    what: &str,
    workspace: &Workspace,
    job: &str,
    mut condition: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !condition() {
        if Instant::now() > deadline {
            let _ = Command::new("scancel").arg(job).status();
            panic!(
                "timed out after {seconds} s waiting for {what}; job {job}: {:?}\n{}",
                job_states(job),
                task_logs(workspace)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every task log of every submission, and every run's record and train.log, for failure
/// messages.
fn task_logs(workspace: &Workspace) -> String {
    let mut text = String::new();
    let store = workspace.path().join("runs");
    if store.is_dir() {
        for directory in run_directories(&store) {
            for file in ["run.json", "train.log"] {
                text.push_str(&format!(
                    "--- {}\n{}",
                    directory.join(file).display(),
                    std::fs::read_to_string(directory.join(file)).unwrap_or_default()
                ));
            }
        }
    }
    for folder in submission_folders(workspace) {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|extension| extension == "log") {
                text.push_str(&format!(
                    "--- {}\n{}",
                    path.display(),
                    std::fs::read_to_string(&path).unwrap_or_default()
                ));
            }
        }
    }
    text
}

fn submission_folders(workspace: &Workspace) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(workspace.path().join("runs/slurm")) else {
        return Vec::new();
    };
    let mut folders: Vec<PathBuf> = entries.map(|entry| entry.unwrap().path()).collect();
    folders.sort();
    folders
}

/// Starts a requeued task now instead of after Slurm's ~120 s hold: once its requeue is
/// complete (pending with reason `BeginTime`) and its last instance had a moment to end (a start
/// forced while that instance is still completing fails the launch).
fn start_requeued_now(workspace: &Workspace, job: &str, task: &str) {
    wait_until(60, "the requeue to complete", workspace, job, || {
        let (_, text) = scontrol(&["show", "job", "--oneliner", task]);
        text.contains("JobState=PENDING") && text.contains("Reason=BeginTime")
    });
    std::thread::sleep(Duration::from_secs(2));
    let (updated, text) = scontrol(&["update", &format!("JobId={task}"), "StartTime=now"]);
    assert!(updated, "{text}");
}

fn finished(state: &str) -> bool {
    matches!(
        state,
        "COMPLETED" | "FAILED" | "CANCELLED" | "TIMEOUT" | "NODE_FAIL" | "OUT_OF_MEMORY"
    )
}

fn all_finished(job: &str) -> bool {
    let states = job_states(job);
    !states.is_empty() && states.iter().all(|state| finished(state))
}

fn record(directory: &Path) -> Value {
    read_json(&directory.join("run.json"))
}

fn run_status(directory: &Path) -> String {
    std::fs::read(directory.join("run.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|record| record["status"].as_str().map(String::from))
        .unwrap_or_default()
}

fn metrics_rows(directory: &Path) -> usize {
    std::fs::read_to_string(directory.join("metrics.csv"))
        .map(|text| text.lines().count().saturating_sub(1))
        .unwrap_or(0)
}

/// What a run's result is made of: metrics without times, and the kept model's weights.
fn fingerprint(directory: &Path) -> (Vec<Vec<String>>, Vec<u8>) {
    (
        metrics_without_time(directory),
        std::fs::read(directory.join("model/model.safetensors")).unwrap(),
    )
}

/// The same experiment trained by one plain `bertlab run`, uninterrupted, in another store.
fn uninterrupted(workspace: &Workspace, experiment: &str) -> Vec<PathBuf> {
    let output = workspace
        .command(&["--runs", "runs-reference", "run", experiment])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    run_directories(&workspace.path().join("runs-reference"))
}

#[test]
fn a_sweep_shared_by_two_workers_trains_every_run_once() {
    let _cluster = CLUSTER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !slurm_answers("a_sweep_shared_by_two_workers_trains_every_run_once") {
        return;
    }
    let workspace = Workspace::new();
    workspace.experiment(
        "sweep.toml",
        &experiment("learning_rate = [2e-5, 5e-5]\nseed = [0, 1]", 2),
    );
    let job = submit(
        &workspace,
        &[
            "experiments/sweep.toml",
            "--workers",
            "2",
            "--cpus-per-worker",
            "1",
        ],
        100,
    );
    let folders = submission_folders(&workspace);
    assert_eq!(folders.len(), 1);
    let submission = read_json(&folders[0].join("submission.json"));
    assert_eq!(submission["job_id"], job.as_str());
    assert_eq!(submission["workers"], 2);
    assert!(folders[0].join("job.sh").is_file());
    wait_until(240, "the job to finish", &workspace, &job, || {
        all_finished(&job)
    });
    let runs = run_directories(&workspace.path().join("runs"));
    assert_eq!(runs.len(), 4, "{}", task_logs(&workspace));
    let mut tasks = Vec::new();
    for directory in &runs {
        let record = record(directory);
        assert_eq!(record["status"], "done", "{record}");
        assert_eq!(record["attempts"], 1, "trained once: {record}");
        let slurm = &record["provenance"]["slurm"];
        assert_eq!(slurm["job_id"], job.as_str(), "{record}");
        assert_eq!(slurm["restart_count"], 0);
        assert_eq!(
            slurm["submission"],
            folders[0].file_name().unwrap().to_str().unwrap()
        );
        let task = slurm["array_task_id"].as_u64().unwrap();
        assert!(task < 2, "{record}");
        tasks.push(task);
        let log = std::fs::read_to_string(directory.join("train.log")).unwrap();
        assert_eq!(
            log.matches(&format!("of slurm job {job}_{task} (restart 0) on "))
                .count(),
            1,
            "one attempt, by the task run.json names: {log}"
        );
    }
    for task in 0..2 {
        let log = std::fs::read_to_string(folders[0].join(format!("task-{task}.log"))).unwrap();
        assert!(log.contains(&format!("task {job}_{task} on ")), "{log}");
        assert!(log.contains("bertlab ended with status 0"), "{log}");
    }
    // `slurm status`: both tasks, their runs, and the sweep's progress.
    let output = slurm_command(&workspace, &["status", &job], 0)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{status}");
    assert!(
        status.contains(&format!("job {job} (submission ")),
        "{status}"
    );
    for task in 0..2u64 {
        let count = tasks.iter().filter(|trained| **trained == task).count();
        let line = status
            .lines()
            .find(|line| line.starts_with(&format!("{job}_{task} ")))
            .unwrap_or_else(|| panic!("no line for task {task}: {status}"));
        assert!(line.contains("COMPLETED"), "{line}");
        if count > 0 {
            assert!(line.contains(&format!("{count} done")), "{line}");
        }
    }
    assert!(status.contains("sweep: 4 runs planned: 4 done"), "{status}");
    // With no job given, the newest submission.
    let output = slurm_command(&workspace, &["status"], 0).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), status);
}

#[test]
fn a_requeued_task_resumes_its_run_from_the_checkpoint_bit_for_bit() {
    let _cluster = CLUSTER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !slurm_answers("a_requeued_task_resumes_its_run_from_the_checkpoint_bit_for_bit") {
        return;
    }
    let workspace = Workspace::new();
    workspace.experiment("long.toml", &experiment("seed = [3]", 6));
    let job = submit(
        &workspace,
        &["experiments/long.toml", "--workers", "1"],
        400,
    );
    let task = format!("{job}_0");
    let run = || {
        run_directories(&workspace.path().join("runs"))
            .first()
            .cloned()
    };
    wait_until(120, "the first epoch", &workspace, &job, || {
        run().is_some_and(|directory| {
            run_status(&directory) == "running" && metrics_rows(&directory) >= 1
        })
    });
    let directory = run().unwrap();

    // 1. Requeued by the scheduler (as an administrator or a preemption would): SIGTERM to
    // the worker, which checkpoints and stops.
    let (requeued, text) = scontrol(&["requeue", &task]);
    assert!(requeued, "{text}");
    wait_until(
        60,
        "the run to stop as interrupted",
        &workspace,
        &job,
        || {
            run_status(&directory) == "interrupted"
                && job_states(&job).iter().any(|state| state == "PENDING")
        },
    );
    let rows_at_stop = metrics_rows(&directory);
    // A requeued task waits ~120 s before it may start again: start it now.
    start_requeued_now(&workspace, &job, &task);
    wait_until(60, "the task to start again", &workspace, &job, || {
        record(&directory)["attempts"] == 2 && run_status(&directory) == "running"
    });
    wait_until(120, "another epoch", &workspace, &job, || {
        metrics_rows(&directory) > rows_at_stop
    });

    // 2. Slurm's warning before the time limit (what `--signal=B:USR1@S` sends the batch
    // shell): the worker checkpoints, the task requeues itself.
    let warned = Command::new("scancel")
        .args(["--signal=USR1", "--batch", &task])
        .status()
        .unwrap();
    assert!(warned.success());
    wait_until(60, "the task to requeue itself", &workspace, &job, || {
        run_status(&directory) == "interrupted"
            && job_states(&job).iter().any(|state| state == "PENDING")
    });
    start_requeued_now(&workspace, &job, &task);
    wait_until(240, "the run to finish", &workspace, &job, || {
        run_status(&directory) == "done" && all_finished(&job)
    });

    let record = record(&directory);
    assert_eq!(record["attempts"], 3, "{record}");
    assert_eq!(
        record["provenance"]["slurm"]["restart_count"], 2,
        "{record}"
    );
    let train_log = std::fs::read_to_string(directory.join("train.log")).unwrap();
    assert_eq!(
        train_log.matches("resuming at epoch").count(),
        2,
        "{train_log}"
    );
    assert_eq!(
        train_log
            .matches("interrupted: checkpoint written at")
            .count(),
        2,
        "{train_log}"
    );
    for restart in 0..3 {
        assert!(
            train_log.contains(&format!("of slurm job {task} (restart {restart}) on ")),
            "{train_log}"
        );
    }
    let task_log = task_logs(&workspace);
    assert!(
        task_log.contains("== warning signal: checkpoint, stop, requeue"),
        "{task_log}"
    );
    assert_eq!(
        task_log.matches(&format!("task {task} on ")).count(),
        3,
        "{task_log}"
    );

    let reference = uninterrupted(&workspace, "experiments/long.toml");
    assert_eq!(reference.len(), 1);
    assert_eq!(
        reference[0].file_name(),
        directory.file_name(),
        "the same run hash"
    );
    assert_eq!(
        fingerprint(&directory),
        fingerprint(&reference[0]),
        "requeued twice and resumed = uninterrupted, bit for bit"
    );
}

#[test]
fn a_cancelled_task_leaves_its_run_to_the_other_worker() {
    let _cluster = CLUSTER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !slurm_answers("a_cancelled_task_leaves_its_run_to_the_other_worker") {
        return;
    }
    let workspace = Workspace::new();
    workspace.experiment("pair.toml", &experiment("seed = [0, 1]", 4));
    let job = submit(
        &workspace,
        &[
            "experiments/pair.toml",
            "--workers",
            "2",
            "--cpus-per-worker",
            "1",
        ],
        300,
    );
    let store = workspace.path().join("runs");
    // Both tasks training, one run each.
    let task_of = |directory: &Path| {
        std::fs::read(directory.join("run.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .and_then(|record| record["provenance"]["slurm"]["array_task_id"].as_u64())
    };
    wait_until(120, "both tasks training a run", &workspace, &job, || {
        let runs = if store.is_dir() {
            run_directories(&store)
        } else {
            Vec::new()
        };
        runs.len() == 2
            && runs
                .iter()
                .all(|directory| run_status(directory) == "running" && metrics_rows(directory) >= 1)
    });
    let runs = run_directories(&store);
    let cancelled = runs
        .iter()
        .find(|directory| task_of(directory) == Some(0))
        .expect("task 0 trains a run")
        .clone();
    let output = slurm_command(&workspace, &["cancel", &format!("{job}_0")], 0)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("cancelled task 0 of job {job}"))
            && stderr.contains("1 run being trained"),
        "{stderr}"
    );
    wait_until(
        240,
        "the other worker to finish both runs",
        &workspace,
        &job,
        || all_finished(&job) && runs.iter().all(|directory| run_status(directory) == "done"),
    );
    let record = record(&cancelled);
    assert_eq!(record["attempts"], 2, "{record}");
    assert_eq!(
        record["provenance"]["slurm"]["array_task_id"], 1,
        "taken over by task 1: {record}"
    );
    let train_log = std::fs::read_to_string(cancelled.join("train.log")).unwrap();
    assert!(train_log.contains("resuming at epoch"), "{train_log}");
    assert!(
        train_log.contains("interrupted: checkpoint written at"),
        "the cancelled worker got SIGTERM and checkpointed: {train_log}"
    );
    assert!(
        train_log.contains(&format!("of slurm job {job}_0 (restart 0)"))
            && train_log.contains(&format!("of slurm job {job}_1 (restart 0)")),
        "{train_log}"
    );
    let states = job_states(&job);
    assert!(states.contains(&"CANCELLED".to_string()), "{states:?}");

    let reference = uninterrupted(&workspace, "experiments/pair.toml");
    for (trained, expected) in runs.iter().zip(&reference) {
        assert_eq!(trained.file_name(), expected.file_name());
        assert_eq!(
            fingerprint(trained),
            fingerprint(expected),
            "{}",
            trained.display()
        );
    }
}

/// A folder holding no Slurm command, for PATH.
fn without_slurm(workspace: &Workspace, args: &[&str]) -> common::Output {
    let empty = workspace.path().join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let output = workspace
        .command(&["--runs", "runs"])
        .args(args)
        .env("PATH", &empty)
        .output()
        .unwrap();
    common::Output {
        status: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr)
            .replace(&workspace.path().display().to_string(), "[WORKSPACE]"),
    }
}

#[test]
fn without_slurms_commands_the_command_says_so_and_the_dry_run_still_prints_the_script() {
    let workspace = Workspace::new();
    workspace.experiment("sweep.toml", &experiment("seed = [0, 1]", 2));
    for args in [
        &["slurm", "submit", "experiments/sweep.toml"][..],
        &["slurm", "status"][..],
        &["slurm", "cancel", "12"][..],
    ] {
        let output = without_slurm(&workspace, args);
        assert_eq!(output.status, Some(2), "{args:?}: {}", output.stderr);
        let command = match args[1] {
            "submit" => "sbatch",
            "status" => "scontrol",
            _ => "scancel",
        };
        assert!(
            output
                .stderr
                .contains(&format!("error: Slurm's `{command}` is not on the PATH")),
            "{args:?}: {}",
            output.stderr
        );
        assert!(!workspace.store_exists(), "nothing written: {args:?}");
    }

    let output = without_slurm(
        &workspace,
        &[
            "slurm",
            "submit",
            "experiments/sweep.toml",
            "--workers",
            "3",
            "--partition",
            "gpu",
            "--account",
            "lab",
            "--time",
            "1-02:00:00",
            "--cpus-per-worker",
            "4",
            "--sbatch-arg=--exclusive",
            "--sbatch-arg",
            "--mem=16G",
            "--retry-failed",
            "--dry-run",
        ],
    );
    assert_eq!(output.status, Some(0), "{}", output.stderr);
    assert!(!workspace.store_exists(), "a dry run writes nothing");
    assert!(
        output
            .stderr
            .contains("dry run: nothing written or submitted; 2 runs planned for 3 workers"),
        "{}",
        output.stderr
    );
    let bertlab = std::fs::canonicalize(env!("CARGO_BIN_EXE_bertlab")).unwrap();
    let workspace_path = std::fs::canonicalize(workspace.path()).unwrap();
    let script = output
        .stdout
        .replace(&bertlab.display().to_string(), "[BERTLAB]")
        .replace(&workspace_path.display().to_string(), "[WORKSPACE]")
        .replace(&workspace.path().display().to_string(), "[WORKSPACE]");
    insta::with_settings!({filters => vec![
        (r"\d{8}T\d{6}Z-[0-9a-f]{6}", "[SUBMISSION]"),
        (r"written by bertlab \S+( \([0-9a-f]+\))? at \S+", "written by bertlab [VERSION] at [TIME]"),
        (r"--retry-failed-before=\S+", "--retry-failed-before=[SUBMISSION TIME]"),
    ]}, {
        insta::assert_snapshot!("slurm_dry_run_script", script);
    });

    // Flags that cannot work are refused before anything is written.
    let output = without_slurm(
        &workspace,
        &[
            "slurm",
            "submit",
            "experiments/sweep.toml",
            "--time",
            "soon",
            "--dry-run",
        ],
    );
    assert_eq!(output.status, Some(2));
    assert!(
        output.stderr.contains("is not a time limit"),
        "{}",
        output.stderr
    );
    if !cfg!(feature = "cuda") {
        let output = without_slurm(
            &workspace,
            &[
                "slurm",
                "submit",
                "experiments/sweep.toml",
                "--gpus-per-worker",
                "1",
                "--dry-run",
            ],
        );
        assert_eq!(output.status, Some(2));
        assert!(
            output
                .stderr
                .contains("needs a bertlab built with the `cuda` feature"),
            "{}",
            output.stderr
        );
    }
    assert!(!workspace.store_exists());
}

/// The job script's signal handling, run by bash with stand-ins for the worker and for
/// `scontrol` (no Slurm needed): the warning makes the worker checkpoint (exit 130) and the task
/// requeue itself; a worker that ends on its own after the warning is not requeued; SIGTERM to
/// the shell (cancellation) waits for the worker and requeues nothing.
#[test]
fn the_job_script_requeues_only_a_worker_the_warning_stopped() {
    let workspace = Workspace::new();
    workspace.experiment("sweep.toml", &experiment("seed = [0]", 1));
    let output = without_slurm(
        &workspace,
        &["slurm", "submit", "experiments/sweep.toml", "--dry-run"],
    );
    assert_eq!(output.status, Some(0), "{}", output.stderr);
    let bertlab = std::fs::canonicalize(env!("CARGO_BIN_EXE_bertlab")).unwrap();
    let stubs = workspace.path().join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    let calls = workspace.path().join("calls.txt");
    // The worker: says it started, then on SIGTERM "checkpoints" for a moment and exits with
    // $WORKER_ON_TERM; without a signal it would run 30 s.
    let worker = stubs.join("worker");
    std::fs::write(
        &worker,
        format!(
            "#!/bin/bash\ntrap 'sleep 0.5; echo worker-stopped >> {calls}; exit $WORKER_ON_TERM' TERM\necho worker-started >> {calls}\nfor i in $(seq 300); do sleep 0.1; done\n",
            calls = calls.display()
        ),
    )
    .unwrap();
    std::fs::write(
        stubs.join("scontrol"),
        format!("#!/bin/bash\necho \"scontrol $*\" >> {}\n", calls.display()),
    )
    .unwrap();
    for stub in ["worker", "scontrol"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(stubs.join(stub), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let script = output.stdout.replace(
        &bertlab.display().to_string(),
        &worker.display().to_string(),
    );
    let script_path = workspace.path().join("job.sh");
    std::fs::write(&script_path, script).unwrap();

    // (signal to the shell, the worker's status on SIGTERM, whether the worker also gets
    // SIGTERM directly as Slurm sends it on cancellation) -> (exit status, requeued)
    let cases = [
        ("USR1", 130, false, 130, true),
        ("USR1", 0, false, 0, false),
        ("TERM", 130, true, 130, false),
    ];
    for (signal, on_term, worker_too, expected_status, requeued) in cases {
        let _ = std::fs::remove_file(&calls);
        let path = format!("{}:{}", stubs.display(), std::env::var("PATH").unwrap());
        let mut shell = Command::new("bash")
            .arg(&script_path)
            .env("PATH", path)
            .env("SLURM_JOB_ID", "41")
            .env("SLURM_ARRAY_JOB_ID", "40")
            .env("SLURM_ARRAY_TASK_ID", "1")
            .env("WORKER_ON_TERM", on_term.to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&calls).is_ok_and(|text| text.contains("worker-started")) {
            assert!(Instant::now() < deadline, "the worker did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let signal_to = |pid: String| {
            assert!(
                Command::new("kill")
                    .args([&format!("-{signal}"), &pid])
                    .status()
                    .unwrap()
                    .success()
            );
        };
        signal_to(shell.id().to_string());
        if worker_too {
            let pgrep = Command::new("pgrep")
                .args(["-f", &worker.display().to_string()])
                .output()
                .unwrap();
            for pid in String::from_utf8_lossy(&pgrep.stdout).split_whitespace() {
                Command::new("kill").args(["-TERM", pid]).status().unwrap();
            }
        }
        let status = shell.wait().unwrap();
        let mut log = String::new();
        use std::io::Read;
        shell
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        let calls_text = std::fs::read_to_string(&calls).unwrap();
        assert_eq!(
            status.code(),
            Some(expected_status),
            "{signal} {on_term}: {log}{calls_text}"
        );
        assert!(
            calls_text.contains("worker-stopped"),
            "the shell waited for the worker: {calls_text}"
        );
        assert_eq!(
            calls_text.contains("scontrol requeue 40_1"),
            requeued,
            "{signal} {on_term}: {log}{calls_text}"
        );
        assert!(
            log.contains(&format!("bertlab ended with status {expected_status}")),
            "{log}"
        );
    }
}
