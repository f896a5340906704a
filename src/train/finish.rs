//! The end of a run's training: the kept epoch's weights (the best by the selection metric)
//! evaluated on validation and, once, on test; `per_class.csv`, `confusion.csv`,
//! `predictions.csv` and the model directory written; the run's [`RunResult`].

use std::path::Path;

use crate::metrics::Evaluation;
use crate::model::bert::BertClassifier;
use crate::model::checkpoint as model_checkpoint;
use crate::plan::PlannedRun;
use crate::store::run_files::{self, Prediction, RunResult};
use crate::support::atomic_file;
use crate::support::progress::Progress;
use crate::tokenize::preprocess::{TokenizedData, TokenizedSplit};
use crate::train::TrainEnd;
use crate::train::checkpoint::{self, TrainingState};
use crate::train::evaluation::{SplitOutcome, evaluate};
use crate::train::policy;

/// Loads the kept epoch's weights, evaluates validation and test with them, and writes the result
/// files and the model. `last_validation` is the last epoch's validation, if this process ran it.
#[allow(clippy::too_many_arguments)]
pub fn finish(
    run: &PlannedRun,
    directory: &Path,
    model: &BertClassifier,
    data: &TokenizedData,
    pad_id: u32,
    state: &TrainingState,
    last_validation: Option<(usize, SplitOutcome)>,
    progress: &mut Progress,
) -> anyhow::Result<TrainEnd> {
    let metric = run.spec.train.selection_metric;
    let history = policy::selection_history(&state.history, metric);
    let best = policy::best_index(&history, metric.higher_is_better()).unwrap_or(0);
    let classes = data.classes.len();
    let validation = match last_validation {
        // The model holds the kept epoch's weights already.
        Some((epoch, outcome)) if epoch == best + 1 => outcome,
        _ => {
            checkpoint::restore_best(directory, model)?;
            evaluate(model, &data.validation, pad_id, classes, None)?.expect("no interrupt flag")
        }
    };
    let test = if data.test.ids.is_empty() {
        None
    } else {
        Some(evaluate(model, &data.test, pad_id, classes, None)?.expect("no interrupt flag"))
    };
    let mut splits: Vec<(&str, &Evaluation)> = vec![("validation", &validation.evaluation)];
    if let Some(outcome) = &test {
        splits.push(("test", &outcome.evaluation));
    }
    atomic_file::write(
        &directory.join(run_files::PER_CLASS_FILE),
        &run_files::per_class_csv(&data.classes, &splits),
    )?;
    atomic_file::write(
        &directory.join(run_files::CONFUSION_FILE),
        &run_files::confusion_csv(&data.classes, &splits),
    )?;
    let mut rows: Vec<Prediction> = Vec::new();
    let mut evaluated: Vec<(&str, &TokenizedSplit, &SplitOutcome)> =
        vec![("validation", &data.validation, &validation)];
    if let Some(outcome) = &test {
        evaluated.push(("test", &data.test, outcome));
    }
    for (split_name, split, outcome) in evaluated {
        for (index, probabilities) in outcome.probabilities.iter().enumerate() {
            rows.push(Prediction {
                split: split_name,
                row: split.rows[index],
                text: &split.texts[index],
                gold: split.labels[index],
                predicted: outcome.predicted[index],
                probabilities,
            });
        }
    }
    atomic_file::write(
        &directory.join(run_files::PREDICTIONS_FILE),
        &run_files::predictions_csv(&data.classes, &rows),
    )?;
    model_checkpoint::save_classifier(
        model,
        &data.classes,
        &run.settings.model_path,
        &directory.join(run_files::MODEL_DIRECTORY),
    )?;
    let train_seconds: f64 = state.history.iter().map(|row| row.epoch_seconds).sum();
    let examples = data.train.ids.len() * state.history.len();
    let result = RunResult {
        best_epoch: best + 1,
        epochs_run: state.history.len(),
        stopped_early: state.stopped,
        validation: validation.evaluation,
        test: test.map(|outcome| outcome.evaluation),
        train_seconds,
        train_samples_per_second: examples as f64 / train_seconds.max(1e-9),
    };
    let mut line = format!(
        "done: kept epoch {} of {}: validation accuracy {:.4}, macro-F1 {:.4}",
        result.best_epoch,
        result.epochs_run,
        result.validation.accuracy,
        result.validation.macro_f1
    );
    if let Some(test) = &result.test {
        line.push_str(&format!(
            "; test accuracy {:.4}, macro-F1 {:.4}",
            test.accuracy, test.macro_f1
        ));
    }
    progress.event(&line);
    Ok(TrainEnd::Done(result))
}
