//! Searches end to end with the tiny fixture model: the same search run in one process, in two
//! processes at once, and killed (SIGKILL) and restarted gives the same trials, the same pruned
//! set and bit-identical metrics; raising `trials` extends a search without touching its first
//! trials; ASHA prunes (status `pruned`, checkpoint kept, no model) and spends fewer epochs than
//! trials x epochs; a grid continues a pruned run; failed trials are told apart from pruned ones.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Workspace, metrics_without_time, separable_csv};
use serde_json::Value;

fn workspace() -> Workspace {
    let workspace = Workspace::new();
    separable_csv(&workspace.path().join("data/separable.csv"), 240);
    workspace
}

/// A search over the separable data: TPE after 3 random trials, 2 in flight, ASHA with rungs at
/// 1 and 2 of 4 epochs; `space_extra` adds dimensions.
fn search_experiment(trials: usize, space_extra: &str) -> String {
    format!(
        "name = \"tiny-search\"\n\n[data]\ntrain = \"../data/separable.csv\"\ntest_fraction = 0.1\n\n\
         [model]\npath = \"../models/tiny\"\n\n[train]\nmax_length = 24\nbatch_size = 16\nepochs = 4\n\n\
         [search]\nmethod = \"tpe\"\ntrials = {trials}\nstartup_trials = 3\nparallel = 2\nseed = 7\n\n\
         [search.space]\nlearning_rate = {{ log_uniform = [1e-4, 1e-2] }}\n\
         warmup_ratio = {{ uniform = [0.0, 0.3], step = 0.05 }}\n\
         \"model.hidden_dropout\" = {{ choice = [0.0, 0.1] }}\n{space_extra}\n\
         [search.pruner]\nmethod = \"asha\"\nmin_epochs = 1\nreduction_factor = 2\n"
    )
}

/// The real binary on the store `store` (a folder of the workspace).
fn bertlab_command(workspace: &Workspace, store: &str, args: &[&str]) -> Command {
    let mut command = workspace.command(&["--runs", store]);
    command.args(args);
    command
}

fn run_to_end(workspace: &Workspace, store: &str, experiment: &str) -> std::process::Output {
    let output = bertlab_command(workspace, store, &["run", experiment])
        .output()
        .unwrap();
    assert!(
        output.status.code().is_some(),
        "killed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|error| panic!("{}: {error}", path.display())),
    )
    .unwrap()
}

/// The one search record of a store.
fn record(store: &Path) -> Value {
    let folder = store.join("searches");
    // A process killed while writing the record may leave its temporary file (`*.tmp`).
    let mut records: Vec<PathBuf> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    read_json(&records.pop().unwrap())
}

/// Everything a search's outcome is made of: per trial (run, status, epochs, value), and each
/// trained run's metrics without times.
type SearchOutcome = (Vec<(String, String, Value, Value)>, Vec<Vec<Vec<String>>>);

fn outcome(store: &Path) -> SearchOutcome {
    let record = record(store);
    let trials: Vec<(String, String, Value, Value)> = record["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|trial| {
            (
                trial["run"].as_str().unwrap_or("").to_string(),
                trial["status"].as_str().unwrap().to_string(),
                trial["epochs"].clone(),
                trial["value"].clone(),
            )
        })
        .collect();
    let metrics = trials
        .iter()
        .filter(|(run, status, _, _)| !run.is_empty() && status != "failed")
        .map(|(run, _, _, _)| metrics_without_time(&store.join(&run[..12])))
        .collect();
    (trials, metrics)
}

#[test]
fn a_search_is_the_same_trial_for_trial_in_one_two_or_killed_processes() {
    let workspace = workspace();
    let experiment = "experiments/search.toml";
    workspace.experiment("search.toml", &search_experiment(8, ""));

    // One process.
    let output = run_to_end(&workspace, "one", experiment);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let single = outcome(&workspace.path().join("one"));
    assert_eq!(single.0.len(), 8);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("tiny-search search"), "{stdout}");
    assert!(stdout.contains("trial  run"), "{stdout}");

    // The report draws the search: best so far, and the metric against each numeric key.
    let report = bertlab_command(&workspace, "one", &["report", "--output", "report.html"])
        .output()
        .unwrap();
    assert_eq!(report.status.code(), Some(0));
    let html = std::fs::read_to_string(workspace.path().join("report.html")).unwrap();
    assert!(html.contains("<h2>Search "), "no search section");
    assert!(html.contains("best so far per trial"));
    assert!(html.contains("learning_rate (log scale)"));
    assert!(html.contains("against warmup_ratio"));

    // Two processes at once on one store.
    let spawn = || {
        bertlab_command(&workspace, "two", &["run", experiment])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn(), spawn());
    for output in [
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    ] {
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(outcome(&workspace.path().join("two")), single);
    // Every run trained once.
    for (run, status, _, _) in &single.0 {
        if status == "failed" {
            continue;
        }
        let run_record = read_json(
            &workspace
                .path()
                .join("two")
                .join(&run[..12])
                .join("run.json"),
        );
        assert_eq!(run_record["attempts"], 1, "{run}");
    }

    // Killed with SIGKILL inside a trial (the abort hook: step 20 of the first trial that gets
    // there), then restarted.
    let output = bertlab_command(&workspace, "killed", &["run", experiment])
        .env(bertlab::train::epochs::ABORT_AFTER_STEP_VARIABLE, "20")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), None, "the hook aborts the process");
    let output = run_to_end(&workspace, "killed", experiment);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(outcome(&workspace.path().join("killed")), single);

    // Killed from outside once trials have settled, then restarted.
    let mut child = bertlab_command(&workspace, "signalled", &["run", experiment])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let search_folder = workspace.path().join("signalled/searches");
    loop {
        let settled = std::fs::read_dir(&search_folder)
            .ok()
            .and_then(|entries| {
                entries.map(|entry| entry.unwrap().path()).find(|path| {
                    path.extension()
                        .is_some_and(|extension| extension == "json")
                })
            })
            .and_then(|path| std::fs::read(path).ok())
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .map(|record| {
                record["trials"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|trial| trial["status"] == "done" || trial["status"] == "pruned")
                    .count()
            })
            .unwrap_or(0);
        if settled >= 3 || child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    child.wait().unwrap();
    let output = run_to_end(&workspace, "signalled", experiment);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(outcome(&workspace.path().join("signalled")), single);
}

#[test]
fn raising_trials_extends_the_search_and_keeps_its_first_trials() {
    let workspace = workspace();
    let experiment = "experiments/search.toml";
    workspace.experiment("search.toml", &search_experiment(4, ""));
    let output = run_to_end(&workspace, "runs", experiment);
    assert_eq!(output.status.code(), Some(0));
    let four = outcome(&workspace.path().join("runs"));
    let first_record = record(&workspace.path().join("runs"));

    workspace.experiment("search.toml", &search_experiment(7, ""));
    let plan = bertlab_command(&workspace, "runs", &["plan", experiment])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&plan.stderr);
    assert!(
        stderr.contains("trials raised from 4 to 7: the search goes on where it stands"),
        "{stderr}"
    );
    let output = run_to_end(&workspace, "runs", experiment);
    assert_eq!(output.status.code(), Some(0));
    let seven = outcome(&workspace.path().join("runs"));
    let extended = record(&workspace.path().join("runs"));
    assert_eq!(
        extended["search"], first_record["search"],
        "the same search"
    );
    assert_eq!(seven.0.len(), 7);
    assert_eq!(&seven.0[..4], &four.0[..], "the first trials are untouched");

    // A fresh store gets the same 7 trials.
    let output = run_to_end(&workspace, "fresh", experiment);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(outcome(&workspace.path().join("fresh")), seven);

    // Another `parallel` is another search, and `plan` says so.
    workspace.experiment(
        "search.toml",
        &search_experiment(7, "").replace("parallel = 2", "parallel = 3"),
    );
    let plan = bertlab_command(&workspace, "runs", &["plan", experiment])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&plan.stderr);
    assert!(
        stderr.contains("a new search; the store holds 1 other search"),
        "{stderr}"
    );
}

#[test]
fn asha_prunes_failed_trials_are_failed_and_a_grid_continues_a_pruned_run() {
    let workspace = workspace();
    let experiment = "experiments/search.toml";
    // A text column that does not exist fails its trials at the data stage.
    workspace.experiment(
        "search.toml",
        &search_experiment(
            10,
            "\"data.text_column\" = { choice = [\"text\", \"missing\"] }\n",
        ),
    );
    let output = run_to_end(&workspace, "runs", experiment);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "a failed trial: {stderr}");
    let store = workspace.path().join("runs");
    let record = record(&store);
    let trials = record["trials"].as_array().unwrap();
    assert_eq!(
        trials.len(),
        10,
        "a failed trial counts; the search goes on"
    );
    let status = |wanted: &str| {
        trials
            .iter()
            .filter(|trial| trial["status"] == wanted)
            .collect::<Vec<_>>()
    };
    let (done, pruned, failed) = (status("done"), status("pruned"), status("failed"));
    assert_eq!(done.len() + pruned.len() + failed.len(), 10);
    assert!(!pruned.is_empty(), "ASHA pruned nothing: {record:#}");
    assert!(!failed.is_empty(), "no failed trial: {record:#}");
    for trial in &failed {
        assert_eq!(trial["values"]["data.text_column"], "missing");
        assert!(
            trial["error"].as_str().unwrap().contains("missing"),
            "{trial}"
        );
    }
    let epochs: u64 = trials
        .iter()
        .filter(|trial| trial["same_as"].is_null())
        .filter_map(|trial| trial["epochs"].as_u64())
        .sum();
    assert!(epochs < 10 * 4, "ASHA spends fewer epochs: {epochs}");
    assert!(stderr.contains("pruned"), "{stderr}");

    // A pruned run: its record, metrics and checkpoint; no test and no model.
    let pruned_trial = pruned[0];
    let run = &pruned_trial["run"].as_str().unwrap()[..12];
    let directory = store.join(run);
    let run_record = read_json(&directory.join("run.json"));
    assert_eq!(run_record["status"], "pruned");
    let prune = &run_record["pruned"];
    assert_eq!(prune["metric"], "macro_f1");
    assert_eq!(prune["rung"], pruned_trial["rung"]);
    assert!(prune["threshold"].is_f64() && prune["compared_with"].as_u64().unwrap() >= 1);
    assert!(
        run_record["search_trials"]
            .as_array()
            .unwrap()
            .iter()
            .any(|entry| entry["trial"] == pruned_trial["trial"])
    );
    let rows = metrics_without_time(&directory);
    assert_eq!(rows.len() as u64, prune["epochs"].as_u64().unwrap());
    assert!(directory.join("checkpoint").is_dir());
    assert!(!directory.join("model").exists());
    assert!(!directory.join("results.json").exists());
    let log = std::fs::read_to_string(directory.join("train.log")).unwrap();
    assert!(log.contains("pruned: not among the top"), "{log}");
    let show = bertlab_command(&workspace, "runs", &["show", run])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(shown.contains("status      pruned"), "{shown}");
    assert!(
        shown.contains(&format!(
            "pruned      at rung {} after {} epoch",
            prune["rung"], prune["epochs"]
        )),
        "{shown}"
    );
    assert!(shown.contains("trials      search "), "{shown}");

    // `results` shows trials like any run: their trial numbers and the epochs they trained.
    let results = bertlab_command(
        &workspace,
        "runs",
        &["results", experiment, "--format", "csv"],
    )
    .output()
    .unwrap();
    let table = String::from_utf8_lossy(&results.stdout);
    let mut reader = csv::Reader::from_reader(table.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|header| header == name).unwrap();
    let (hash, status, trial, epochs_run) = (
        column("hash"),
        column("status"),
        column("trial"),
        column("epochs_run"),
    );
    let pruned_row = reader
        .records()
        .map(|record| record.unwrap())
        .find(|record| record[hash].starts_with(run))
        .expect("the pruned run is a row");
    assert_eq!(&pruned_row[status], "pruned");
    assert_eq!(pruned_row[trial], pruned_trial["trial"].to_string());
    assert_eq!(pruned_row[epochs_run], prune["epochs"].to_string());

    // A plain experiment with the pruned trial's values is the same run: it continues it.
    let values = &pruned_trial["values"];
    let plain = format!(
        "name = \"tiny-search\"\n\n[data]\ntrain = \"../data/separable.csv\"\ntest_fraction = 0.1\ntext_column = \"text\"\n\n\
         [model]\npath = \"../models/tiny\"\nhidden_dropout = {}\n\n[train]\nmax_length = 24\nbatch_size = 16\nepochs = 4\n\
         learning_rate = {}\nwarmup_ratio = {}\n",
        values["model.hidden_dropout"], values["train.learning_rate"], values["train.warmup_ratio"]
    );
    workspace.experiment("plain.toml", &plain);
    let plan = bertlab_command(&workspace, "runs", &["plan", "experiments/plain.toml"])
        .output()
        .unwrap();
    let planned = String::from_utf8_lossy(&plan.stdout);
    assert!(planned.contains(run), "the same run: {planned}");
    let output = run_to_end(&workspace, "runs", "experiments/plain.toml");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let continued = read_json(&directory.join("run.json"));
    assert_eq!(continued["status"], "done");
    assert!(continued["pruned"].is_null());
    let log = std::fs::read_to_string(directory.join("train.log")).unwrap();
    assert!(log.contains("resuming at epoch"), "{log}");
    let all_rows = metrics_without_time(&directory);
    assert_eq!(all_rows.len(), 4);
    assert_eq!(&all_rows[..rows.len()], &rows[..]);
    // The search's view of that trial is unchanged: still pruned, at the same rung.
    let output = run_to_end(&workspace, "runs", experiment);
    assert_eq!(output.status.code(), Some(1));
    let again = self::record(&store);
    assert_eq!(again["trials"], record["trials"]);
}
