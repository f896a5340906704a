//! `bertlab plan` driven through the real binary: order, hashes, statuses and output formats.

mod common;

use bertlab::plan::fingerprint::Fingerprinter;
use bertlab::plan::{PlanOptions, plan};
use bertlab::store::{Claim, RunStatus, RunStore};
use common::{SWEEP, Workspace};
use serde_json::Value;

fn plan_json(workspace: &Workspace, experiment: &str) -> Vec<Value> {
    let output = workspace.bertlab(&["plan", experiment, "--format", "json"]);
    assert_eq!(output.status, Some(0), "{}", output.stderr);
    serde_json::from_str::<Value>(&output.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn hashes(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|row| row["hash"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_3_by_2_by_3_grid_is_18_runs_in_documented_order() {
    let workspace = Workspace::new();
    workspace.experiment("sweep.toml", SWEEP);
    let rows = plan_json(&workspace, "experiments/sweep.toml");
    assert_eq!(rows.len(), 18);
    // Keys in the order written in [grid], the last varying fastest.
    let mut expected = Vec::new();
    for learning_rate in [2e-5, 3e-5, 5e-5] {
        for batch_size in [16, 32] {
            for seed in [0, 1, 2] {
                expected.push((learning_rate, batch_size, seed));
            }
        }
    }
    let found: Vec<(f64, i64, i64)> = rows
        .iter()
        .map(|row| {
            (
                row["learning_rate"].as_f64().unwrap(),
                row["batch_size"].as_i64().unwrap(),
                row["seed"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(found, expected);
    for (index, row) in rows.iter().enumerate() {
        assert_eq!(row["index"], index + 1);
        assert_eq!(row["status"], "new");
        assert_eq!(row["hash"].as_str().unwrap().len(), 64);
    }
    let unique: std::collections::HashSet<String> = hashes(&rows).into_iter().collect();
    assert_eq!(unique.len(), 18);
    assert!(
        !workspace.store_exists(),
        "plan must not create the run store"
    );
}

#[test]
fn table_output_snapshot() {
    let workspace = Workspace::new();
    workspace.experiment("sweep.toml", SWEEP);
    let output = workspace.bertlab(&["plan", "experiments/sweep.toml"]);
    assert_eq!(output.status, Some(0), "{}", output.stderr);
    insta::assert_snapshot!(output.stdout);
    assert_eq!(output.stderr, "");
}

#[test]
fn csv_output_parses_with_one_row_per_run() {
    let workspace = Workspace::new();
    workspace.experiment("sweep.toml", SWEEP);
    let output = workspace.bertlab(&["plan", "experiments/sweep.toml", "--format", "csv"]);
    assert_eq!(output.status, Some(0), "{}", output.stderr);
    let mut reader = csv::Reader::from_reader(output.stdout.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header,
        [
            "index",
            "experiment",
            "hash",
            "learning_rate",
            "batch_size",
            "seed",
            "status"
        ]
    );
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 18);
    assert_eq!(&records[0][3], "2e-5");
    assert_eq!(
        output.stderr, "18 runs, 18 new\n",
        "the summary goes to stderr for machine formats"
    );
}

/// The same sweep written differently: tables and keys reordered, comments and whitespace,
/// `2e-5` as `0.00002`, integers for floats, a default written out.
const SWEEP_REWRITTEN: &str = r#"# The same experiment, written by someone else.
[grid]
"train.learning_rate" = [0.00002, 0.00003, 0.00005]   # same values
batch_size = [ 16, 32 ]
seed = [0, 1, 2]

[train]
epochs = 2
max_length   = 32
weight_decay = 0.01      # the default, written out
max_grad_norm = 1        # an integer for a float key

[model]
path = "../models/tiny"

[data]
text_column = "text"
train = "../data/train.csv"
"#;

#[test]
fn hashes_ignore_formatting_order_comments_name_and_number_spelling() {
    let workspace = Workspace::new();
    workspace.experiment("sweep.toml", SWEEP);
    let original = hashes(&plan_json(&workspace, "experiments/sweep.toml"));
    let renamed =
        format!("name = \"another-name\"\ndescription = \"other words\"\n{SWEEP_REWRITTEN}");
    workspace.experiment("rewritten.toml", &renamed);
    assert_eq!(
        hashes(&plan_json(&workspace, "experiments/rewritten.toml")),
        original
    );
}

#[test]
fn changing_one_hyperparameter_changes_exactly_the_runs_it_touches() {
    let workspace = Workspace::new();
    workspace.experiment("sweep.toml", SWEEP);
    let original = hashes(&plan_json(&workspace, "experiments/sweep.toml"));
    workspace.experiment("changed.toml", &SWEEP.replace("5e-5]", "4e-5]"));
    let changed = hashes(&plan_json(&workspace, "experiments/changed.toml"));
    let differing: Vec<usize> = (0..18)
        .filter(|&index| original[index] != changed[index])
        .collect();
    assert_eq!(
        differing,
        (12..18).collect::<Vec<_>>(),
        "only the six 5e-5 runs change"
    );
    workspace.experiment("epochs.toml", &SWEEP.replace("epochs = 2", "epochs = 3"));
    let epochs = hashes(&plan_json(&workspace, "experiments/epochs.toml"));
    assert!(
        (0..18).all(|index| original[index] != epochs[index]),
        "epochs is in every run"
    );
}

#[test]
fn one_changed_data_byte_changes_every_hash_and_moving_files_changes_none() {
    let workspace = Workspace::new();
    workspace.experiment("sweep.toml", SWEEP);
    let original = hashes(&plan_json(&workspace, "experiments/sweep.toml"));

    // Move the data and the model; point the experiment at the new places.
    let root = workspace.path();
    std::fs::create_dir_all(root.join("elsewhere")).unwrap();
    std::fs::rename(
        root.join("data/train.csv"),
        root.join("elsewhere/tweets.csv"),
    )
    .unwrap();
    std::fs::rename(root.join("models/tiny"), root.join("elsewhere/model")).unwrap();
    let moved = SWEEP
        .replace("../data/train.csv", "../elsewhere/tweets.csv")
        .replace("../models/tiny", "../elsewhere/model");
    workspace.experiment("moved.toml", &moved);
    assert_eq!(
        hashes(&plan_json(&workspace, "experiments/moved.toml")),
        original
    );

    let data = root.join("elsewhere/tweets.csv");
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 1;
    std::fs::write(&data, bytes).unwrap();
    let changed = hashes(&plan_json(&workspace, "experiments/moved.toml"));
    assert!((0..18).all(|index| original[index] != changed[index]));

    // So does one byte of the model's weights.
    let weights = root.join("elsewhere/model/model.safetensors");
    let before_weights = changed.clone();
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&weights, bytes).unwrap();
    let changed = hashes(&plan_json(&workspace, "experiments/moved.toml"));
    assert!((0..18).all(|index| before_weights[index] != changed[index]));
}

#[test]
fn identical_points_after_defaults_are_one_run() {
    let workspace = Workspace::new();
    // epochs 3 is the default; seed 0 is listed twice.
    workspace.experiment(
        "dupes.toml",
        "name = \"d\"\n[data]\ntrain = \"../data/train.csv\"\n[model]\npath = \"../models/tiny\"\n[train]\nmax_length = 32\n[grid]\nseed = [0, 0, 1]\n",
    );
    let output = workspace.bertlab(&["plan", "experiments/dupes.toml"]);
    assert_eq!(output.status, Some(0), "{}", output.stderr);
    assert!(
        output.stdout.ends_with("2 runs, 2 new\n"),
        "{}",
        output.stdout
    );
    assert_eq!(
        output.stderr,
        "note: 1 grid point resolved to the same settings as an earlier one and is planned once\n"
    );
}

#[test]
fn statuses_come_from_the_store_and_prefixes_resolve() {
    let workspace = Workspace::new();
    let experiment = workspace.experiment("sweep.toml", SWEEP);
    let mut fingerprinter = Fingerprinter::new(None);
    let planned = plan(&[experiment], &PlanOptions::default(), &mut fingerprinter).unwrap();
    let store = RunStore::new(workspace.path().join("runs"));
    let claim = |index: usize| match store
        .claim(
            &planned.runs[index].hash,
            &planned.runs[index].spec.canonical_bytes(),
        )
        .unwrap()
    {
        Claim::Claimed(lease) => lease,
        Claim::Busy { .. } => panic!("busy"),
    };
    claim(0).set_status(RunStatus::Done, None).unwrap();
    claim(1)
        .set_status(RunStatus::Failed, Some("diverged at epoch 1 step 3".into()))
        .unwrap();
    drop(claim(2)); // left running by a process that is gone
    let running = claim(3); // held by a live "process"
    let output = workspace.bertlab(&["plan", "experiments/sweep.toml", "--format", "json"]);
    let rows: Vec<Value> = serde_json::from_str(&output.stdout).unwrap();
    let statuses: Vec<&str> = rows
        .iter()
        .take(5)
        .map(|row| row["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["done", "failed", "interrupted", "running", "new"]
    );
    assert_eq!(
        output.stderr,
        "18 runs, 1 done, 1 running, 1 failed, 1 interrupted, 14 new\n"
    );
    drop(running);

    // spec.json recomputes to the hash.
    let hash = &planned.runs[0].hash;
    let bytes = std::fs::read(
        workspace
            .path()
            .join("runs")
            .join(hash.short())
            .join("spec.json"),
    )
    .unwrap();
    assert_eq!(&bertlab::plan::spec::hash_canonical(&bytes), hash);

    let shown = workspace.bertlab(&["show", &hash.as_str()[..6]]);
    assert_eq!(shown.status, Some(0), "{}", shown.stderr);
    assert!(
        shown.stdout.starts_with(&format!("run         {hash}\n")),
        "{}",
        shown.stdout
    );
    assert!(
        shown.stdout.contains("status      done"),
        "{}",
        shown.stdout
    );
    let failed = &planned.runs[1].hash;
    let shown = workspace.bertlab(&["show", failed.as_str()]);
    assert!(
        shown
            .stdout
            .contains("error       diverged at epoch 1 step 3"),
        "{}",
        shown.stdout
    );

    let missing = workspace.bertlab(&["show", "0000000"]);
    assert_eq!(missing.status, Some(2));
    assert!(
        missing
            .stderr
            .starts_with("error: no run in runs matches `0000000` (4 runs there)"),
        "{}",
        missing.stderr
    );
}

#[test]
fn the_store_can_live_elsewhere() {
    let workspace = Workspace::new();
    let experiment = workspace.experiment("sweep.toml", SWEEP);
    let mut fingerprinter = Fingerprinter::new(None);
    let planned = plan(&[experiment], &PlanOptions::default(), &mut fingerprinter).unwrap();
    let store = RunStore::new(workspace.path().join("other-store"));
    match store
        .claim(
            &planned.runs[0].hash,
            &planned.runs[0].spec.canonical_bytes(),
        )
        .unwrap()
    {
        Claim::Claimed(lease) => lease.set_status(RunStatus::Done, None).unwrap(),
        Claim::Busy { .. } => panic!("busy"),
    }
    let flag = workspace.bertlab(&["--runs", "other-store", "plan", "experiments/sweep.toml"]);
    assert!(
        flag.stdout.ends_with("18 runs, 1 done, 17 new\n"),
        "{}",
        flag.stdout
    );
    let after = workspace.bertlab(&["plan", "experiments/sweep.toml", "--runs", "other-store"]);
    assert!(
        after.stdout.ends_with("18 runs, 1 done, 17 new\n"),
        "{}",
        after.stdout
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bertlab"))
        .args(["plan", "experiments/sweep.toml"])
        .current_dir(workspace.path())
        .env("BERTLAB_RUNS", "other-store")
        .env("BERTLAB_CACHE_DIR", workspace.path().join("cache"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8(output.stdout)
            .unwrap()
            .ends_with("18 runs, 1 done, 17 new\n")
    );
}

#[test]
fn a_store_path_through_a_file_is_refused_naming_the_flag() {
    let workspace = Workspace::new();
    workspace.experiment("sweep.toml", SWEEP);
    std::fs::write(workspace.path().join("afile"), "keep me").unwrap();
    for store in ["afile", "afile/inner"] {
        for command in [&["results"][..], &["plan", "experiments/sweep.toml"][..]] {
            let mut args = vec!["--runs", store];
            args.extend_from_slice(command);
            let output = workspace.bertlab(&args);
            assert_eq!(
                output.status,
                Some(2),
                "{store} {command:?}: {}",
                output.stderr
            );
            assert!(
                output.stderr.contains("--runs")
                    && output.stderr.contains("afile is not a folder")
                    && !output.stderr.contains("Not a directory"),
                "{store} {command:?}: {}",
                output.stderr
            );
        }
    }
    assert_eq!(
        std::fs::read_to_string(workspace.path().join("afile")).unwrap(),
        "keep me"
    );
    assert!(!workspace.store_exists());
}

#[test]
fn several_experiment_files_are_planned_in_order_with_an_experiment_column() {
    let workspace = Workspace::new();
    workspace.experiment("sweep.toml", SWEEP);
    workspace.experiment(
        "single.toml",
        "name = \"single\"\n[data]\ntrain = \"../data/train.csv\"\n[model]\npath = \"../models/tiny\"\n[train]\nmax_length = 48\n",
    );
    let output = workspace.bertlab(&["plan", "experiments/single.toml", "experiments/sweep.toml"]);
    assert_eq!(output.status, Some(0), "{}", output.stderr);
    insta::assert_snapshot!(output.stdout);
}

#[test]
fn the_model_directory_is_fingerprinted_once_for_a_whole_sweep() {
    let workspace = Workspace::new();
    let experiment = workspace.experiment("sweep.toml", SWEEP);
    let cache = workspace.path().join("cache/fingerprints.json");
    // Age the files so that the cache may keep them (it skips files modified moments ago).
    for file in [
        "data/train.csv",
        "models/tiny/config.json",
        "models/tiny/vocab.txt",
        "models/tiny/model.safetensors",
    ] {
        let handle = std::fs::File::options()
            .write(true)
            .open(workspace.path().join(file))
            .unwrap();
        handle
            .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(60))
            .unwrap();
    }
    let mut first = Fingerprinter::new(Some(cache.clone()));
    plan(
        std::slice::from_ref(&experiment),
        &PlanOptions::default(),
        &mut first,
    )
    .unwrap();
    assert_eq!(
        first.files_read(),
        4,
        "data, config, vocabulary and weights, each once for 18 runs"
    );
    first.save().unwrap();
    let mut second = Fingerprinter::new(Some(cache));
    plan(&[experiment], &PlanOptions::default(), &mut second).unwrap();
    assert_eq!(second.files_read(), 0, "the next plan reads nothing");
}

/// The recipe keys sweep like any other: `freeze` takes words and integers in one axis, and a
/// point at a key's default is the same run as a file that never sets it (one run, merged).
#[test]
fn recipe_keys_sweep_and_a_default_point_is_the_unset_run() {
    let workspace = Workspace::new();
    let head = "name = \"recipes\"\n[data]\ntrain = \"../data/train.csv\"\n[model]\npath = \"../models/tiny\"\n[train]\nmax_length = 32\n";
    workspace.experiment(
        "sweep.toml",
        &format!(
            "{head}[grid]\nfreeze = [\"none\", \"embeddings\", 1, 2]\nlearning_rate_schedule = [\"linear\", \"constant\"]\n"
        ),
    );
    workspace.experiment("plain.toml", head);
    let rows = plan_json(&workspace, "experiments/sweep.toml");
    assert_eq!(rows.len(), 8);
    let unique: std::collections::HashSet<String> = hashes(&rows).into_iter().collect();
    assert_eq!(unique.len(), 8);
    let freeze: Vec<String> = rows.iter().map(|row| row["freeze"].to_string()).collect();
    assert_eq!(
        freeze,
        [
            "\"none\"",
            "\"none\"",
            "\"embeddings\"",
            "\"embeddings\"",
            "1",
            "1",
            "2",
            "2"
        ]
    );
    let plain = plan_json(&workspace, "experiments/plain.toml");
    assert_eq!(
        plain[0]["hash"], rows[0]["hash"],
        "none + linear: the defaults"
    );
}
