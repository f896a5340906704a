//! `bertlab bench` through the real binary on the tiny model: the work it reports is fixed by
//! the options and the data (not by timing), it writes nothing to the run store, and its JSON
//! carries every setting `scripts/bench_pytorch.py` reads.

mod common;

use common::{Workspace, separable_csv};
use serde_json::Value;

const EXPERIMENT: &str = r#"name = "speed"

[data]
train = "../data/separable.csv"
test_fraction = 0.1

[model]
path = "../models/tiny"

[train]
max_length = 24
batch_size = 8
learning_rate = 1e-3
"#;

fn bench_json(workspace: &Workspace) -> Value {
    let output = workspace.bertlab(&[
        "bench",
        "experiments/speed.toml",
        "--steps",
        "5",
        "--warmup-steps",
        "2",
        "--inference-batch-size",
        "6",
        "--inference-examples",
        "10",
        "--threads",
        "1",
        "--format",
        "json",
    ]);
    assert_eq!(output.status, Some(0), "{}", output.stderr);
    serde_json::from_str(&output.stdout).unwrap()
}

#[test]
fn bench_reports_the_fixed_work_and_writes_nothing() {
    let workspace = Workspace::new();
    separable_csv(&workspace.path().join("data/separable.csv"), 120);
    workspace.experiment("speed.toml", EXPERIMENT);
    let report = bench_json(&workspace);
    assert!(
        !workspace.store_exists(),
        "bench must not create the run store"
    );

    let train = &report["train"];
    assert_eq!(train["warmup_batches"], 2);
    assert_eq!(train["batches"], 5);
    assert_eq!(train["examples"], 40);
    let tokens = train["tokens"].as_u64().unwrap();
    let padded = train["padded_tokens"].as_u64().unwrap();
    // Every example holds [CLS], at least one word and [SEP]; padding only adds.
    assert!(
        tokens >= 40 * 3 && tokens <= padded && padded <= 40 * 24,
        "{train}"
    );
    assert!(train["samples_per_second"].as_f64().unwrap() > 0.0);

    let inference = &report["inference"];
    assert_eq!(inference["examples"], 10);
    assert_eq!(inference["batches"], 2);
    assert!(inference["tokens"].as_u64().unwrap() <= inference["padded_tokens"].as_u64().unwrap());
    assert!(inference["tokens_per_second"].as_f64().unwrap() > 0.0);

    assert_eq!(report["threads"], 1);
    assert_eq!(report["batch_size"], 8);
    assert_eq!(report["inference_batch_size"], 6);
    assert_eq!(report["max_length"], 24);
    assert_eq!(report["learning_rate"], 1e-3);
    assert_eq!(report["classes"].as_array().unwrap().len(), 2);
    assert!(report["model"].as_str().unwrap().ends_with("tiny"));
    if cfg!(target_os = "linux") {
        let train_peak = report["peak_rss_train_mib"].as_f64().unwrap();
        assert!(train_peak > 1.0 && train_peak <= report["peak_rss_mib"].as_f64().unwrap());
    }

    // The same options give the same work, token for token.
    let again = bench_json(&workspace);
    for part in ["train", "inference"] {
        for key in ["batches", "examples", "tokens", "padded_tokens"] {
            assert_eq!(report[part][key], again[part][key], "{part}.{key}");
        }
    }
}

#[test]
fn bench_prints_a_summary_and_refuses_bad_options() {
    let workspace = Workspace::new();
    separable_csv(&workspace.path().join("data/separable.csv"), 120);
    workspace.experiment("speed.toml", EXPERIMENT);
    let output = workspace.bertlab(&["bench", "experiments/speed.toml", "--steps", "2"]);
    assert_eq!(output.status, Some(0), "{}", output.stderr);
    assert!(output.stdout.contains("training "), "{}", output.stdout);
    assert!(output.stdout.contains("inference "), "{}", output.stdout);
    assert!(output.stdout.contains("peak RSS"), "{}", output.stdout);

    let output = workspace.bertlab(&["bench", "experiments/speed.toml", "--steps", "0"]);
    assert_eq!(output.status, Some(2));
    assert!(
        output.stderr.contains("--steps must be at least 1"),
        "{}",
        output.stderr
    );
}

/// `--batch-size` and `--sequence-length` set the shape of the work: every example exactly that
/// many tokens (beyond the run's max_length, up to the model's positions), no padding.
#[test]
fn bench_takes_a_fixed_shape_and_refuses_one_beyond_the_positions() {
    let workspace = Workspace::new();
    separable_csv(&workspace.path().join("data/separable.csv"), 120);
    workspace.experiment("speed.toml", EXPERIMENT);
    let shaped = |length: &str| {
        workspace.bertlab(&[
            "bench",
            "experiments/speed.toml",
            "--steps",
            "2",
            "--warmup-steps",
            "1",
            "--batch-size",
            "4",
            "--sequence-length",
            length,
            "--inference-examples",
            "6",
            "--format",
            "json",
        ])
    };
    // 32 tokens: beyond the experiment's max_length of 24.
    let output = shaped("32");
    assert_eq!(output.status, Some(0), "{}", output.stderr);
    let report: Value = serde_json::from_str(&output.stdout).unwrap();
    assert_eq!(report["batch_size"], 4);
    assert_eq!(report["sequence_length"], 32);
    assert_eq!(report["train"]["examples"], 8);
    assert_eq!(report["train"]["tokens"], 8 * 32);
    assert_eq!(report["train"]["padded_tokens"], 8 * 32);
    assert_eq!(report["inference"]["tokens"], 6 * 32);

    let too_long = (common::MAX_POSITIONS + 1).to_string();
    let output = shaped(&too_long);
    assert_eq!(output.status, Some(2), "{}", output.stderr);
    assert!(
        output
            .stderr
            .contains("longer than the model's position embeddings"),
        "{}",
        output.stderr
    );
}
