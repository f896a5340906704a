//! The result files of a run directory as pure functions from results to bytes: `metrics.csv`
//! (one row per epoch), `per_class.csv`, `confusion.csv`, `predictions.csv` and `results.json`
//! (the run's [`RunResult`], read back by [`read_result`]). Numbers are written in their shortest
//! round-trip form, so the same results give the same bytes.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::metrics::Evaluation;

pub const METRICS_FILE: &str = "metrics.csv";
pub const PER_CLASS_FILE: &str = "per_class.csv";
pub const CONFUSION_FILE: &str = "confusion.csv";
pub const PREDICTIONS_FILE: &str = "predictions.csv";
pub const DATA_REPORT_FILE: &str = "data_report.json";
pub const EXPERIMENT_COPY_FILE: &str = "experiment.toml";
pub const LOG_FILE: &str = "train.log";
pub const MODEL_DIRECTORY: &str = "model";
pub const CHECKPOINT_DIRECTORY: &str = "checkpoint";
/// A finished run's [`RunResult`], as JSON in its directory.
pub const RESULT_FILE: &str = "results.json";

/// How a run's figures ended up (`results.json` in its directory).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// 1-based epoch whose weights the run keeps (the epoch in progress for a step's evaluation).
    pub best_epoch: usize,
    /// The optimizer step of the kept evaluation (absent in runs made before bertlab recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_step: Option<u64>,
    pub epochs_run: usize,
    pub stopped_early: bool,
    pub validation: Evaluation,
    pub test: Option<Evaluation>,
    pub train_seconds: f64,
    pub train_samples_per_second: f64,
}

/// `results.json`: the result as pretty JSON, one newline at the end.
pub fn result_json(result: &RunResult) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(result).expect("a run result serializes");
    bytes.push(b'\n');
    bytes
}

/// Reads a done run's `results.json`.
pub fn read_result(directory: &Path) -> anyhow::Result<RunResult> {
    let path = directory.join(RESULT_FILE);
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a valid results file", path.display()))
}

/// One epoch of training and validation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    /// 1-based.
    pub epoch: usize,
    /// Mean training loss over the epoch's examples (as weighted in training).
    pub train_loss: f64,
    pub validation_loss: f64,
    /// Multi-label: the subset accuracy (`validation_subset_accuracy` in `metrics.csv`).
    #[serde(alias = "validation_subset_accuracy")]
    pub validation_accuracy: f64,
    pub validation_macro_f1: f64,
    /// Multi-label only, as the three after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_micro_f1: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_samples_f1: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_hamming_loss: Option<f64>,
    /// The learning rate of the epoch's last optimizer step.
    pub learning_rate: f64,
    /// Optimizer steps taken by the end of the epoch.
    pub steps: u64,
    /// Training time of the epoch (validation excluded); not reproducible.
    pub epoch_seconds: f64,
    /// Training examples per second; not reproducible.
    pub train_samples_per_second: f64,
}

/// The columns of `metrics.csv` that depend on time, not on the run: left out when two runs are
/// compared for equality.
pub const TIME_COLUMNS: &[&str] = &["epoch_seconds", "train_samples_per_second"];

fn number(value: f64) -> String {
    if value.is_finite() {
        format!("{value}")
    } else {
        value.to_string().to_lowercase()
    }
}

fn csv_bytes(headers: &[String], rows: &[Vec<String>]) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(headers).expect("writing to memory");
    for row in rows {
        writer.write_record(row).expect("writing to memory");
    }
    writer.into_inner().expect("writing to memory")
}

/// `metrics.csv`: one row per evaluation. A multi-label run's rows name its accuracy
/// `validation_subset_accuracy` and add `validation_micro_f1`, `validation_samples_f1` and
/// `validation_hamming_loss`.
pub fn metrics_csv(rows: &[EpochRow]) -> Vec<u8> {
    let multi_label = rows.iter().any(|row| row.validation_micro_f1.is_some());
    let mut headers: Vec<String> = ["epoch", "train_loss", "validation_loss"]
        .map(String::from)
        .to_vec();
    if multi_label {
        headers.extend(
            [
                "validation_subset_accuracy",
                "validation_macro_f1",
                "validation_micro_f1",
                "validation_samples_f1",
                "validation_hamming_loss",
            ]
            .map(String::from),
        );
    } else {
        headers.extend(["validation_accuracy", "validation_macro_f1"].map(String::from));
    }
    headers.extend(
        [
            "learning_rate",
            "steps",
            "epoch_seconds",
            "train_samples_per_second",
        ]
        .map(String::from),
    );
    let optional = |value: Option<f64>| value.map_or_else(String::new, number);
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut cells = vec![
                row.epoch.to_string(),
                number(row.train_loss),
                number(row.validation_loss),
                number(row.validation_accuracy),
                number(row.validation_macro_f1),
            ];
            if multi_label {
                cells.extend([
                    optional(row.validation_micro_f1),
                    optional(row.validation_samples_f1),
                    optional(row.validation_hamming_loss),
                ]);
            }
            cells.extend([
                number(row.learning_rate),
                row.steps.to_string(),
                format!("{:.3}", row.epoch_seconds),
                format!("{:.2}", row.train_samples_per_second),
            ]);
            cells
        })
        .collect();
    csv_bytes(&headers, &rows)
}

/// Reads a run's `metrics.csv` back into rows.
pub fn read_metrics(directory: &Path) -> anyhow::Result<Vec<EpochRow>> {
    let path = directory.join(METRICS_FILE);
    let mut reader =
        csv::Reader::from_path(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut rows = Vec::new();
    for record in reader.deserialize() {
        rows.push(record.with_context(|| format!("{} is not a metrics file", path.display()))?);
    }
    Ok(rows)
}

/// `per_class.csv`: `split, class, precision, recall, f1, support` for each evaluated split.
pub fn per_class_csv(classes: &[String], splits: &[(&str, &Evaluation)]) -> Vec<u8> {
    let headers: Vec<String> = ["split", "class", "precision", "recall", "f1", "support"]
        .map(String::from)
        .to_vec();
    let mut rows = Vec::new();
    for (split, evaluation) in splits {
        for (class, metrics) in classes.iter().zip(&evaluation.per_class) {
            rows.push(vec![
                split.to_string(),
                class.clone(),
                number(metrics.precision),
                number(metrics.recall),
                number(metrics.f1),
                metrics.support.to_string(),
            ]);
        }
    }
    csv_bytes(&headers, &rows)
}

/// `confusion.csv`: `split, gold`, then one count column per predicted class; for multi-label
/// figures, one one-vs-rest row per class: `split, class, true_positives, false_positives,
/// false_negatives, true_negatives`.
pub fn confusion_csv(classes: &[String], splits: &[(&str, &Evaluation)]) -> Vec<u8> {
    if splits
        .iter()
        .any(|(_, evaluation)| evaluation.multi_label.is_some())
    {
        let headers: Vec<String> = [
            "split",
            "class",
            "true_positives",
            "false_positives",
            "false_negatives",
            "true_negatives",
        ]
        .map(String::from)
        .to_vec();
        let mut rows = Vec::new();
        for (split, evaluation) in splits {
            let Some(figures) = &evaluation.multi_label else {
                continue;
            };
            for (class, counts) in classes.iter().zip(&figures.class_counts) {
                rows.push(vec![
                    split.to_string(),
                    class.clone(),
                    counts.true_positives.to_string(),
                    counts.false_positives.to_string(),
                    counts.false_negatives.to_string(),
                    counts.true_negatives.to_string(),
                ]);
            }
        }
        return csv_bytes(&headers, &rows);
    }
    let mut headers: Vec<String> = vec!["split".into(), "gold".into()];
    headers.extend(classes.iter().map(|class| format!("predicted_{class}")));
    let mut rows = Vec::new();
    for (split, evaluation) in splits {
        for (class, counts) in classes.iter().zip(&evaluation.confusion) {
            let mut row = vec![split.to_string(), class.clone()];
            row.extend(counts.iter().map(usize::to_string));
            rows.push(row);
        }
    }
    csv_bytes(&headers, &rows)
}

/// An example's labels in a prediction: one class, or a set of classes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Labels<'a> {
    Class(u32),
    Set(&'a [u32]),
}

impl Labels<'_> {
    /// The class name, or the set's names joined by `separator` (empty for no class).
    pub fn names(self, classes: &[String], separator: &str) -> String {
        match self {
            Labels::Class(class) => classes[class as usize].clone(),
            Labels::Set(set) => crate::metrics::join_classes(set, classes, separator),
        }
    }
}

/// One evaluated example.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction<'a> {
    pub split: &'a str,
    /// 1-based data row in the source file.
    pub row: usize,
    pub text: &'a str,
    /// A pair's second text.
    pub text_pair: Option<&'a str>,
    pub gold: Labels<'a>,
    pub predicted: Labels<'a>,
    /// Softmax probabilities, or a sigmoid per class (multi-label).
    pub probabilities: &'a [f32],
}

/// `predictions.csv`: `split, row, text`, `text_pair` for pairs, `gold, predicted` (label sets
/// joined by `separator`), then `probability_<class>` columns.
pub fn predictions_csv(classes: &[String], separator: &str, predictions: &[Prediction]) -> Vec<u8> {
    let pairs = predictions
        .iter()
        .any(|prediction| prediction.text_pair.is_some());
    let mut headers: Vec<String> = ["split", "row", "text"].map(String::from).to_vec();
    if pairs {
        headers.push("text_pair".into());
    }
    headers.extend(["gold", "predicted"].map(String::from));
    headers.extend(classes.iter().map(|class| format!("probability_{class}")));
    let rows: Vec<Vec<String>> = predictions
        .iter()
        .map(|prediction| {
            let mut row = vec![
                prediction.split.to_string(),
                prediction.row.to_string(),
                prediction.text.to_string(),
            ];
            if pairs {
                row.push(prediction.text_pair.unwrap_or_default().to_string());
            }
            row.push(prediction.gold.names(classes, separator));
            row.push(prediction.predicted.names(classes, separator));
            row.extend(
                prediction
                    .probabilities
                    .iter()
                    .map(|probability| format!("{probability}")),
            );
            row
        })
        .collect();
    csv_bytes(&headers, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_have_the_documented_columns() {
        let row = EpochRow {
            epoch: 1,
            train_loss: 0.5,
            validation_loss: 0.25,
            validation_accuracy: 0.75,
            validation_macro_f1: 0.7,
            validation_micro_f1: None,
            validation_samples_f1: None,
            validation_hamming_loss: None,
            learning_rate: 2e-5,
            steps: 10,
            epoch_seconds: 1.23456,
            train_samples_per_second: 99.999,
        };
        assert_eq!(
            String::from_utf8(metrics_csv(&[row])).unwrap(),
            "epoch,train_loss,validation_loss,validation_accuracy,validation_macro_f1,learning_rate,steps,epoch_seconds,train_samples_per_second\n\
             1,0.5,0.25,0.75,0.7,0.00002,10,1.235,100.00\n"
        );
        let classes = vec!["neg".to_string(), "pos".to_string()];
        let evaluation = Evaluation::new(&[0, 1, 1], &[0, 0, 1], 2, 0.1);
        assert_eq!(
            String::from_utf8(confusion_csv(&classes, &[("validation", &evaluation)])).unwrap(),
            "split,gold,predicted_neg,predicted_pos\nvalidation,neg,1,0\nvalidation,pos,1,1\n"
        );
        let per_class =
            String::from_utf8(per_class_csv(&classes, &[("test", &evaluation)])).unwrap();
        assert_eq!(
            per_class.lines().nth(2).unwrap(),
            "test,pos,1,0.5,0.6666666666666666,2"
        );
        let predictions = predictions_csv(
            &classes,
            "|",
            &[Prediction {
                split: "test",
                row: 7,
                text: "a \"quoted\", text",
                text_pair: None,
                gold: Labels::Class(1),
                predicted: Labels::Class(0),
                probabilities: &[0.75, 0.25],
            }],
        );
        assert_eq!(
            String::from_utf8(predictions).unwrap(),
            "split,row,text,gold,predicted,probability_neg,probability_pos\n\
             test,7,\"a \"\"quoted\"\", text\",pos,neg,0.75,0.25\n"
        );
    }

    #[test]
    fn multi_label_and_pair_files_have_their_columns() {
        let classes = vec!["code".to_string(), "politics".to_string()];
        let evaluation = Evaluation::multi_label(&[vec![0], vec![]], &[vec![0, 1], vec![]], 2, 0.1);
        assert_eq!(
            String::from_utf8(confusion_csv(&classes, &[("test", &evaluation)])).unwrap(),
            "split,class,true_positives,false_positives,false_negatives,true_negatives\n\
             test,code,1,0,0,1\ntest,politics,0,1,0,1\n"
        );
        let row = EpochRow {
            epoch: 1,
            train_loss: 0.5,
            validation_loss: 0.25,
            validation_accuracy: 0.5,
            validation_macro_f1: 0.7,
            validation_micro_f1: Some(0.8),
            validation_samples_f1: Some(0.75),
            validation_hamming_loss: Some(0.25),
            learning_rate: 2e-5,
            steps: 10,
            epoch_seconds: 1.0,
            train_samples_per_second: 2.0,
        };
        let bytes = metrics_csv(std::slice::from_ref(&row));
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            "epoch,train_loss,validation_loss,validation_subset_accuracy,validation_macro_f1,validation_micro_f1,validation_samples_f1,validation_hamming_loss,learning_rate,steps,epoch_seconds,train_samples_per_second\n\
             1,0.5,0.25,0.5,0.7,0.8,0.75,0.25,0.00002,10,1.000,2.00\n"
        );
        let folder = tempfile::tempdir().unwrap();
        std::fs::write(folder.path().join(METRICS_FILE), bytes).unwrap();
        assert_eq!(
            read_metrics(folder.path()).unwrap(),
            vec![row],
            "read back by name"
        );
        let predictions = predictions_csv(
            &classes,
            "|",
            &[Prediction {
                split: "validation",
                row: 3,
                text: "rust",
                text_pair: Some("and politics"),
                gold: Labels::Set(&[0]),
                predicted: Labels::Set(&[0, 1]),
                probabilities: &[0.9, 0.5],
            }],
        );
        assert_eq!(
            String::from_utf8(predictions).unwrap(),
            "split,row,text,text_pair,gold,predicted,probability_code,probability_politics\n\
             validation,3,rust,and politics,code,code|politics,0.9,0.5\n"
        );
    }
}
