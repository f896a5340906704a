//! The morning after a sweep, through the real binary on a tiny 2 x 2 sweep: `results` in every
//! format (one row per run, the metrics of `metrics.csv` at the kept epoch), filtered, sorted and
//! grouped over seeds; `show`; `predict` agreeing with the run's own predictions; `reproduce`
//! matching exactly, and refusing with the file named when the data changed.

mod common;

use common::{Workspace, run_directories, separable_csv};
use polars::prelude::SerReader;
use serde_json::Value;

const SWEEP: &str = r#"name = "morning"

[data]
train = "../data/separable.csv"
test_fraction = 0.1

[model]
path = "../models/tiny"

[train]
max_length = 24
batch_size = 16
epochs = 3

[grid]
learning_rate = [1e-3, 2e-3]
seed = [0, 1]
"#;

/// A workspace where the 4-run sweep is done.
fn trained() -> Workspace {
    let workspace = Workspace::new();
    separable_csv(&workspace.path().join("data/separable.csv"), 160);
    workspace.experiment("morning.toml", SWEEP);
    let output = workspace.bertlab(&["run", "experiments/morning.toml"]);
    assert_eq!(output.status, Some(0), "{}", output.stderr);
    workspace
}

fn csv_rows(text: &str) -> Vec<std::collections::HashMap<String, String>> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    reader
        .records()
        .map(|record| {
            headers
                .iter()
                .cloned()
                .zip(record.unwrap().iter().map(String::from))
                .collect()
        })
        .collect()
}

#[test]
fn results_hold_one_row_per_run_with_the_metrics_of_the_kept_epoch() {
    let workspace = trained();
    let output = workspace.bertlab(&["results", "--format", "csv"]);
    assert_eq!(output.status, Some(0), "{}", output.stderr);
    let rows = csv_rows(&output.stdout);
    assert_eq!(rows.len(), 4);
    for directory in run_directories(&workspace.path().join("runs")) {
        let hash = directory.file_name().unwrap().to_str().unwrap();
        let row = rows
            .iter()
            .find(|row| row["hash"].starts_with(hash))
            .unwrap_or_else(|| panic!("no row for {hash}"));
        assert_eq!(row["status"], "done");
        assert_eq!(row["experiment"], "morning");
        let best: usize = row["best_epoch"].parse().unwrap();
        let metrics = csv_rows(&std::fs::read_to_string(directory.join("metrics.csv")).unwrap());
        let epoch = &metrics[best - 1];
        for (column, metric) in [
            ("val_loss", "validation_loss"),
            ("val_accuracy", "validation_accuracy"),
            ("val_macro_f1", "validation_macro_f1"),
        ] {
            let a: f64 = row[column].parse().unwrap();
            let b: f64 = epoch[metric].parse().unwrap();
            assert_eq!(a, b, "{hash} {column}");
        }
        assert!(row["test_accuracy"].parse::<f64>().is_ok());
    }
    // Filter, sort, group.
    let filtered = workspace.bertlab(&[
        "results",
        "--where",
        "learning_rate=0.002",
        "--format",
        "csv",
    ]);
    assert_eq!(csv_rows(&filtered.stdout).len(), 2, "{}", filtered.stderr);
    let sorted = csv_rows(
        &workspace
            .bertlab(&["results", "--sort", "val_loss", "--format", "csv"])
            .stdout,
    );
    let losses: Vec<f64> = sorted
        .iter()
        .map(|row| row["val_loss"].parse().unwrap())
        .collect();
    assert!(
        losses.windows(2).all(|pair| pair[0] <= pair[1]),
        "{losses:?}"
    );
    let grouped = workspace.bertlab(&["results", "--group-seeds", "--format", "csv"]);
    let grouped_rows = csv_rows(&grouped.stdout);
    assert_eq!(grouped_rows.len(), 2, "{}", grouped.stdout);
    for row in &grouped_rows {
        assert_eq!(row["n"], "2");
        assert!(row["val_macro_f1_std"].parse::<f64>().is_ok());
    }
    // The table shows what differs; JSON parses; a bad --where says what columns exist.
    let table = workspace.bertlab(&["results", "experiments/morning.toml"]);
    let header = table.stdout.lines().next().unwrap().to_string();
    assert!(
        header.contains("learning_rate") && header.contains("seed"),
        "{header}"
    );
    assert!(
        !header.contains("max_length"),
        "constant columns are hidden: {header}"
    );
    let json: Value =
        serde_json::from_str(&workspace.bertlab(&["results", "--format", "json"]).stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 4);
    let wrong = workspace.bertlab(&["results", "--where", "accuracy>0.5"]);
    assert_eq!(wrong.status, Some(2));
    assert!(wrong.stderr.contains("no column `accuracy`") && wrong.stderr.contains("val_accuracy"));
    // Parquet reads back with polars.
    let parquet = workspace.path().join("results.parquet");
    let written = workspace.bertlab(&[
        "results",
        "--format",
        "parquet",
        "--output",
        parquet.to_str().unwrap(),
    ]);
    assert_eq!(written.status, Some(0), "{}", written.stderr);
    let frame = polars::prelude::ParquetReader::new(std::fs::File::open(&parquet).unwrap())
        .finish()
        .unwrap();
    assert_eq!(frame.height(), 4);
    // compare: the swept settings differ, the figures side by side.
    let hashes: Vec<String> = rows
        .iter()
        .map(|row| row["hash"][..8].to_string())
        .collect();
    let compared = workspace.bertlab(&["compare", &hashes[0], &hashes[3]]);
    assert_eq!(compared.status, Some(0), "{}", compared.stderr);
    let text = &compared.stdout;
    assert!(
        text.contains("learning_rate") && text.contains("seed"),
        "{text}"
    );
    assert!(!text.contains("max_length"), "only what differs: {text}");
    assert!(
        text.contains("val_macro_f1") && text.contains("epoch 3"),
        "{text}"
    );
    // report: one HTML page with curves and a confusion matrix; curves.svg in every run.
    let report = workspace.bertlab(&["report", "--output", "report.html"]);
    assert_eq!(report.status, Some(0), "{}", report.stderr);
    let html = std::fs::read_to_string(workspace.path().join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 2, "two charts");
    assert!(html.contains("Confusion matrix of the best run") && html.contains("val_macro_f1"));
    // The tables scroll inside their own box rather than widening the page.
    assert!(html.contains(".table-box { max-width: 100%; overflow-x: auto;"));
    assert_eq!(
        html.matches("<div class=\"table-box\">\n<table>").count(),
        2,
        "the results table and the confusion matrix"
    );
    assert!(html.contains(&format!("<p>{} runs in <code>", rows.len())));
    for directory in run_directories(&workspace.path().join("runs")) {
        let svg = std::fs::read_to_string(directory.join("curves.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("validation"));
    }
    // A damaged index is rebuilt.
    std::fs::write(workspace.path().join("runs/.results-index.json"), "{").unwrap();
    assert_eq!(
        csv_rows(&workspace.bertlab(&["results", "--format", "csv"]).stdout),
        rows
    );
}

#[test]
fn show_predict_and_reproduce_a_run() {
    let workspace = trained();
    let directory = run_directories(&workspace.path().join("runs"))[0].clone();
    let hash = directory.file_name().unwrap().to_str().unwrap().to_string();

    let shown = workspace.bertlab(&["show", &hash[..6]]);
    assert_eq!(shown.status, Some(0), "{}", shown.stderr);
    for part in [
        "status      done",
        "kept epoch",
        "epochs (metrics.csv)",
        "per class",
        "confusion",
        "spec",
    ] {
        assert!(shown.stdout.contains(part), "{part}:\n{}", shown.stdout);
    }

    // predict agrees with the run's predictions.csv.
    let predictions =
        csv_rows(&std::fs::read_to_string(directory.join("predictions.csv")).unwrap());
    let mut input = String::from("text\n");
    for row in &predictions {
        input.push_str(&format!("\"{}\"\n", row["text"].replace('"', "\"\"")));
    }
    std::fs::write(workspace.path().join("texts.csv"), input).unwrap();
    let predicted = workspace.bertlab(&[
        "predict",
        &hash,
        "--input",
        "texts.csv",
        "--output",
        "out.jsonl",
    ]);
    assert_eq!(predicted.status, Some(0), "{}", predicted.stderr);
    assert!(predicted.stderr.contains("texts/s"), "{}", predicted.stderr);
    let lines: Vec<Value> = std::fs::read_to_string(workspace.path().join("out.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), predictions.len());
    for (line, row) in lines.iter().zip(&predictions) {
        assert_eq!(line["text"], row["text"].as_str());
        assert_eq!(line["predicted"], row["predicted"].as_str());
        for class in ["negative", "positive"] {
            let a = line["probabilities"][class].as_f64().unwrap();
            let b: f64 = row[&format!("probability_{class}")].parse().unwrap();
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
    let quick = workspace.bertlab(&["predict", &hash, "--text", "i love this great film"]);
    assert_eq!(quick.status, Some(0));
    assert!(quick.stdout.contains("positive"), "{}", quick.stdout);

    // reproduce: exact on the CPU, the original untouched.
    let before = std::fs::read(directory.join("run.json")).unwrap();
    let reproduced = workspace.bertlab(&["reproduce", &hash]);
    assert_eq!(
        reproduced.status,
        Some(0),
        "{}\n{}",
        reproduced.stdout,
        reproduced.stderr
    );
    assert!(
        reproduced.stdout.contains("identical, bit for bit"),
        "{}",
        reproduced.stdout
    );
    assert!(reproduced.stdout.contains("reproduced"));
    assert_eq!(std::fs::read(directory.join("run.json")).unwrap(), before);

    // A changed data file is refused, naming it.
    let data = workspace.path().join("data/separable.csv");
    let mut text = std::fs::read_to_string(&data).unwrap();
    text.push_str("an extra good row,positive\n");
    std::fs::write(&data, text).unwrap();
    let refused = workspace.bertlab(&["reproduce", &hash]);
    assert_eq!(refused.status, Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("separable.csv") && refused.stderr.contains("changed"),
        "{}",
        refused.stderr
    );
}
