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
    pub validation_accuracy: f64,
    pub validation_macro_f1: f64,
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

/// `metrics.csv`: one row per epoch.
pub fn metrics_csv(rows: &[EpochRow]) -> Vec<u8> {
    let headers: Vec<String> = [
        "epoch",
        "train_loss",
        "validation_loss",
        "validation_accuracy",
        "validation_macro_f1",
        "learning_rate",
        "steps",
        "epoch_seconds",
        "train_samples_per_second",
    ]
    .map(String::from)
    .to_vec();
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                row.epoch.to_string(),
                number(row.train_loss),
                number(row.validation_loss),
                number(row.validation_accuracy),
                number(row.validation_macro_f1),
                number(row.learning_rate),
                row.steps.to_string(),
                format!("{:.3}", row.epoch_seconds),
                format!("{:.2}", row.train_samples_per_second),
            ]
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

/// `confusion.csv`: `split, gold`, then one count column per predicted class.
pub fn confusion_csv(classes: &[String], splits: &[(&str, &Evaluation)]) -> Vec<u8> {
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

/// One evaluated example.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction<'a> {
    pub split: &'a str,
    /// 1-based data row in the source file.
    pub row: usize,
    pub text: &'a str,
    pub gold: u32,
    pub predicted: u32,
    pub probabilities: &'a [f32],
}

/// `predictions.csv`: `split, row, text, gold, predicted`, then `probability_<class>` columns.
pub fn predictions_csv(classes: &[String], predictions: &[Prediction]) -> Vec<u8> {
    let mut headers: Vec<String> = ["split", "row", "text", "gold", "predicted"]
        .map(String::from)
        .to_vec();
    headers.extend(classes.iter().map(|class| format!("probability_{class}")));
    let rows: Vec<Vec<String>> = predictions
        .iter()
        .map(|prediction| {
            let mut row = vec![
                prediction.split.to_string(),
                prediction.row.to_string(),
                prediction.text.to_string(),
                classes[prediction.gold as usize].clone(),
                classes[prediction.predicted as usize].clone(),
            ];
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
            &[Prediction {
                split: "test",
                row: 7,
                text: "a \"quoted\", text",
                gold: 1,
                predicted: 0,
                probabilities: &[0.75, 0.25],
            }],
        );
        assert_eq!(
            String::from_utf8(predictions).unwrap(),
            "split,row,text,gold,predicted,probability_neg,probability_pos\n\
             test,7,\"a \"\"quoted\"\", text\",pos,neg,0.75,0.25\n"
        );
    }
}
