//! Tasks beyond one label per text, end to end through the real binary with the tiny fixture
//! model: sentence pairs (`text_pair_column`) and multi-label classification (`label_format =
//! "multi"`): the model learns, the run directory holds the task's files and columns, `predict`
//! agrees with `predictions.csv`, `results` and `compare` show the task's metrics, and the run
//! reproduces bit for bit.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::{Workspace, run_directories};
use serde_json::Value;

const FILLER: &[&str] = &["the", "a", "it", "was", "is", "very", "not", "i"];

/// Deterministic choices (a 64-bit LCG).
struct Choices(u64);

impl Choices {
    fn next(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % bound
    }

    /// `least` to `least + extra` filler words.
    fn filler(&mut self, least: usize, extra: usize) -> Vec<&'static str> {
        let words = least + self.next(extra + 1);
        (0..words)
            .map(|_| FILLER[self.next(FILLER.len())])
            .collect()
    }
}

/// `tags.csv` (`text,tags`): a tag `praise` when the text holds good/great/love, `film` when it
/// holds movie/film, both, or none (the empty set): two tags the tiny model can learn.
fn tags_csv(path: &Path, rows: usize) {
    let mut choices = Choices(11);
    let mut text = String::from("text,tags\n");
    for index in 0..rows {
        let mut words = choices.filler(2, 2);
        let mut tags = Vec::new();
        if index % 2 == 0 {
            words.insert(
                choices.next(words.len() + 1),
                ["good", "great", "love"][choices.next(3)],
            );
            tags.push("praise");
        }
        if index % 3 == 0 {
            words.insert(
                choices.next(words.len() + 1),
                ["movie", "film"][choices.next(2)],
            );
            tags.push("film");
        }
        text.push_str(&format!("{} {index},{}\n", words.join(" "), tags.join("|")));
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// `pairs.csv` (`first,second,label`): filler first texts, and the label is the sentiment of the
/// second text, so the model must read the pair's second part.
fn pairs_csv(path: &Path, rows: usize) {
    let mut choices = Choices(5);
    let mut text = String::from("first,second,label\n");
    for index in 0..rows {
        let first = choices.filler(2, 3).join(" ");
        let positive = index % 2 == 0;
        let mut second = choices.filler(1, 2);
        let signal = if positive {
            ["good", "great", "love"][choices.next(3)]
        } else {
            ["bad", "awful", "hate"][choices.next(3)]
        };
        second.insert(choices.next(second.len() + 1), signal);
        text.push_str(&format!(
            "{first} {index},{},{}\n",
            second.join(" "),
            if positive { "positive" } else { "negative" }
        ));
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn csv_rows(path: &Path) -> (Vec<String>, Vec<HashMap<String, String>>) {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let rows = reader
        .records()
        .map(|record| {
            let record = record.unwrap();
            headers
                .iter()
                .cloned()
                .zip(record.iter().map(String::from))
                .collect()
        })
        .collect();
    (headers, rows)
}

const MULTI_LABEL: &str = "name = \"tags\"\n\n[data]\ntrain = \"../data/tags.csv\"\nlabel_column = \"tags\"\n\
    label_format = \"multi\"\ntest_fraction = 0.1\n\n[model]\npath = \"../models/tiny\"\n\n[train]\n\
    max_length = 24\nlearning_rate = 2e-3\nbatch_size = 16\nepochs = 8\nwarmup_ratio = 0.1\n\
    class_weights = \"balanced\"\nthreshold = 0.4\nselection_metric = \"micro_f1\"\n";

#[test]
fn a_multi_label_run_learns_writes_its_metrics_and_predicts_sets() {
    let workspace = Workspace::new();
    tags_csv(&workspace.path().join("data/tags.csv"), 240);
    workspace.experiment("tags.toml", MULTI_LABEL);
    let output = workspace.bertlab(&["run", "experiments/tags.toml"]);
    assert_eq!(output.status, Some(0), "{}", output.stderr);
    assert!(output.stderr.contains("micro-F1"), "{}", output.stderr);
    let directory = &run_directories(&workspace.path().join("runs"))[0];

    let results = read_json(&directory.join("results.json"));
    let figures = &results["validation"]["multi_label"];
    let micro_f1 = figures["micro_f1"].as_f64().unwrap();
    assert!(micro_f1 >= 0.9, "validation micro-F1 {micro_f1}");
    for key in ["samples_f1", "subset_accuracy", "hamming_loss"] {
        assert!(figures[key].is_number(), "{key}");
    }
    assert_eq!(
        results["validation"]["accuracy"], figures["subset_accuracy"],
        "accuracy means subset accuracy"
    );
    assert!(results["test"]["multi_label"]["micro_f1"].is_number());

    // metrics.csv: the multi-label columns; the kept evaluation is the best by micro-F1.
    let (headers, rows) = csv_rows(&directory.join("metrics.csv"));
    assert_eq!(
        headers[..8],
        [
            "epoch",
            "train_loss",
            "validation_loss",
            "validation_subset_accuracy",
            "validation_macro_f1",
            "validation_micro_f1",
            "validation_samples_f1",
            "validation_hamming_loss"
        ]
    );
    let micro: Vec<f64> = rows
        .iter()
        .map(|row| row["validation_micro_f1"].parse().unwrap())
        .collect();
    let best = results["best_epoch"].as_u64().unwrap() as usize;
    let top = micro.iter().copied().fold(f64::MIN, f64::max);
    assert_eq!(
        micro.iter().position(|value| *value == top).unwrap() + 1,
        best
    );

    // confusion.csv: one TP/FP/FN/TN row per class and split, each adding up to the split.
    let (headers, confusion) = csv_rows(&directory.join("confusion.csv"));
    assert_eq!(
        headers,
        [
            "split",
            "class",
            "true_positives",
            "false_positives",
            "false_negatives",
            "true_negatives"
        ]
    );
    assert_eq!(confusion.len(), 4, "2 classes x (validation, test)");
    let (_, predictions) = csv_rows(&directory.join("predictions.csv"));
    let validation_rows = predictions
        .iter()
        .filter(|row| row["split"] == "validation")
        .count();
    for row in confusion.iter().filter(|row| row["split"] == "validation") {
        let total: usize = [
            "true_positives",
            "false_positives",
            "false_negatives",
            "true_negatives",
        ]
        .iter()
        .map(|column| row[*column].parse::<usize>().unwrap())
        .sum();
        assert_eq!(total, validation_rows);
    }

    // predictions.csv: gold and predicted as sets joined by "|", a sigmoid per class, the
    // predicted set is the classes at or above the run's threshold (0.4).
    let mut empty_gold = 0;
    for row in &predictions {
        let probability =
            |class: &str| row[&format!("probability_{class}")].parse::<f64>().unwrap();
        let expected: Vec<&str> = ["film", "praise"]
            .into_iter()
            .filter(|class| probability(class) >= 0.4)
            .collect();
        assert_eq!(row["predicted"], expected.join("|"), "{row:?}");
        empty_gold += usize::from(row["gold"].is_empty());
        assert!(
            row["gold"].is_empty()
                || row["gold"] == "film"
                || row["gold"] == "praise"
                || row["gold"] == "film|praise",
            "{row:?}"
        );
    }
    assert!(empty_gold > 0, "texts with no tag are evaluated too");

    // The exported model says what it is; predict gives the same sigmoids and sets.
    let config = read_json(&directory.join("model/config.json"));
    assert_eq!(config["problem_type"], "multi_label_classification");
    let hash = directory.file_name().unwrap().to_string_lossy().to_string();
    let mut input = String::from("text\n");
    for row in &predictions {
        input.push_str(&format!("{}\n", row["text"]));
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
    let lines: Vec<Value> = std::fs::read_to_string(workspace.path().join("out.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), predictions.len());
    for (line, row) in lines.iter().zip(&predictions) {
        let names: Vec<&str> = line["predicted"]
            .as_array()
            .expect("a multi-label prediction is a list")
            .iter()
            .map(|name| name.as_str().unwrap())
            .collect();
        assert_eq!(names.join("|"), row["predicted"]);
        for class in ["film", "praise"] {
            let a = line["probabilities"][class].as_f64().unwrap();
            let b: f64 = row[&format!("probability_{class}")].parse().unwrap();
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    // results shows the multi-label columns, and can sort by Hamming loss (lower first).
    let table = workspace.bertlab(&["results", "--format", "csv"]);
    assert_eq!(table.status, Some(0), "{}", table.stderr);
    let header = table.stdout.lines().next().unwrap();
    for column in [
        "val_micro_f1",
        "val_samples_f1",
        "val_hamming_loss",
        "test_micro_f1",
    ] {
        assert!(
            header.split(',').any(|name| name == column),
            "{column}: {header}"
        );
    }
    let sorted = workspace.bertlab(&["results", "--sort", "val_hamming_loss"]);
    assert_eq!(sorted.status, Some(0), "{}", sorted.stderr);

    // show and report name the one-vs-rest table; compare shows the multi-label figures.
    let shown = workspace.bertlab(&["show", &hash]);
    assert_eq!(shown.status, Some(0), "{}", shown.stderr);
    assert!(
        shown
            .stdout
            .contains("decisions per class (multi-label, one-vs-rest)"),
        "{}",
        shown.stdout
    );
    let report = workspace.bertlab(&["report", "--output", "report.html"]);
    assert_eq!(report.status, Some(0), "{}", report.stderr);
    let html = std::fs::read_to_string(workspace.path().join("report.html")).unwrap();
    assert!(html.contains("Per-class decisions of the best run"));
    assert!(html.contains("<th>true positives</th>"));
    let compared = workspace.bertlab(&["compare", &hash, &hash]);
    assert_eq!(compared.status, Some(0), "{}", compared.stderr);
    assert!(
        compared.stdout.contains("val_micro_f1"),
        "{}",
        compared.stdout
    );

    // The run reproduces bit for bit.
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
}

const PAIRS: &str = "name = \"pairs\"\n\n[data]\ntrain = \"../data/pairs.csv\"\ntext_column = \"first\"\n\
    text_pair_column = \"second\"\nvalidation_fraction = 0.2\n\n[model]\npath = \"../models/tiny\"\n\n\
    [train]\nmax_length = 24\nlearning_rate = 2e-3\nbatch_size = 16\nepochs = 8\nwarmup_ratio = 0.1\n";

#[test]
fn a_pair_run_learns_from_the_second_text_and_predicts_pairs() {
    let workspace = Workspace::new();
    pairs_csv(&workspace.path().join("data/pairs.csv"), 240);
    workspace.experiment("pairs.toml", PAIRS);
    let output = workspace.bertlab(&["run", "experiments/pairs.toml"]);
    assert_eq!(output.status, Some(0), "{}", output.stderr);
    let directory = &run_directories(&workspace.path().join("runs"))[0];
    let results = read_json(&directory.join("results.json"));
    let accuracy = results["validation"]["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.9, "validation accuracy {accuracy}");

    let report = read_json(&directory.join("data_report.json"));
    assert_eq!(report["token_lengths"]["pairs"], true);
    let (headers, predictions) = csv_rows(&directory.join("predictions.csv"));
    assert_eq!(
        headers[..6],
        ["split", "row", "text", "text_pair", "gold", "predicted"]
    );

    // predict: pairs by position on the command line, and from a file's two columns, agree with
    // predictions.csv.
    let hash = directory.file_name().unwrap().to_string_lossy().to_string();
    let row = &predictions[0];
    let quick = workspace.bertlab(&[
        "predict",
        &hash,
        "--text",
        &row["text"],
        "--text-pair",
        &row["text_pair"],
    ]);
    assert_eq!(quick.status, Some(0), "{}", quick.stderr);
    assert!(quick.stdout.contains(&row["predicted"]), "{}", quick.stdout);
    let mut input = String::from("premise,hypothesis\n");
    for row in &predictions {
        input.push_str(&format!("{},{}\n", row["text"], row["text_pair"]));
    }
    std::fs::write(workspace.path().join("pairs-in.csv"), input).unwrap();
    let predicted = workspace.bertlab(&[
        "predict",
        &hash,
        "--input",
        "pairs-in.csv",
        "--text-column",
        "premise",
        "--text-pair-column",
        "hypothesis",
        "--output",
        "out.csv",
    ]);
    assert_eq!(predicted.status, Some(0), "{}", predicted.stderr);
    let (headers, out) = csv_rows(&workspace.path().join("out.csv"));
    assert_eq!(headers[..3], ["text", "text_pair", "predicted"]);
    for (line, row) in out.iter().zip(&predictions) {
        assert_eq!(line["text_pair"], row["text_pair"]);
        assert_eq!(line["predicted"], row["predicted"]);
        for class in ["negative", "positive"] {
            let column = format!("probability_{class}");
            let a: f64 = line[&column].parse().unwrap();
            let b: f64 = row[&column].parse().unwrap();
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    // A pair model without second texts, or a count that does not match, is refused.
    let alone = workspace.bertlab(&["predict", &hash, "--text", "a good film"]);
    assert_ne!(alone.status, Some(0), "{}", alone.stderr);
    assert!(alone.stderr.contains("--text-pair"), "{}", alone.stderr);
    let uneven = workspace.bertlab(&[
        "predict",
        &hash,
        "--text",
        "a",
        "--text",
        "b",
        "--text-pair",
        "good",
    ]);
    assert_ne!(uneven.status, Some(0));
    assert!(
        uneven.stderr.contains("2 texts but 1 second texts"),
        "{}",
        uneven.stderr
    );
}

/// A search on a multi-label task selects by Hamming loss, lower first: the trial marked best
/// has the lowest value, and each trial's value is its run's kept validation Hamming loss.
#[test]
fn a_search_selects_multi_label_trials_by_hamming_loss() {
    let workspace = Workspace::new();
    tags_csv(&workspace.path().join("data/tags.csv"), 160);
    let experiment = MULTI_LABEL
        .replace(
            "selection_metric = \"micro_f1\"",
            "selection_metric = \"hamming_loss\"",
        )
        .replace("epochs = 8", "epochs = 3")
        + "\n[search]\nmethod = \"random\"\ntrials = 3\nseed = 1\n\n[search.space]\nlearning_rate = { log_uniform = [1e-4, 3e-3] }\n";
    workspace.experiment("search.toml", &experiment);
    let output = workspace.bertlab(&["run", "experiments/search.toml"]);
    assert_eq!(output.status, Some(0), "{}", output.stderr);
    let table: Vec<&str> = output
        .stdout
        .lines()
        .skip_while(|line| !line.starts_with("trial"))
        .collect();
    let header: Vec<&str> = table[0].split_whitespace().collect();
    let value_column = header
        .iter()
        .position(|name| *name == "val_hamming_loss")
        .unwrap_or_else(|| panic!("{}", output.stdout));
    let trials: Vec<(f64, bool)> = table[1..4]
        .iter()
        .map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            (cells[value_column].parse().unwrap(), line.ends_with("best"))
        })
        .collect();
    let lowest = trials
        .iter()
        .map(|(value, _)| *value)
        .fold(f64::MAX, f64::min);
    let best: Vec<f64> = trials
        .iter()
        .filter(|(_, best)| *best)
        .map(|(value, _)| *value)
        .collect();
    assert_eq!(best, vec![lowest], "{}", output.stdout);
    for directory in run_directories(&workspace.path().join("runs")) {
        let results = read_json(&directory.join("results.json"));
        let kept = results["validation"]["multi_label"]["hamming_loss"]
            .as_f64()
            .unwrap();
        assert!(
            trials.iter().any(|(value, _)| (value - kept).abs() < 5e-5),
            "{kept} not among {trials:?}"
        );
    }
}
