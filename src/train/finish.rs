//! The end of a run's training: the kept weights (the best evaluation by the selection metric)
//! evaluated on validation and, once, on test; `per_class.csv`, `confusion.csv`,
//! `predictions.csv` and the model directory written; the run's [`RunResult`].

use std::path::Path;

use crate::metrics::Evaluation;
use crate::model::checkpoint as model_checkpoint;
use crate::model::encoder::EncoderClassifier;
use crate::plan::PlannedRun;
use crate::store::run_files::{self, Labels, Prediction, RunResult};
use crate::support::atomic_file;
use crate::support::progress::Progress;
use crate::tokenize::preprocess::{TokenizedData, TokenizedSplit};
use crate::train::TrainEnd;
use crate::train::checkpoint::{self, TrainingState};
use crate::train::evaluation::{SplitOutcome, evaluate};
use crate::train::policy;

/// Loads the kept weights, evaluates validation and test with them, and writes the result files
/// and the model. `last_validation` is the last evaluation (its history index, outcome), if this
/// process ran it.
#[allow(clippy::too_many_arguments)]
pub fn finish(
    run: &PlannedRun,
    directory: &Path,
    model: &EncoderClassifier,
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
    let threshold = run.spec.train.threshold;
    let validation = match last_validation {
        // The model holds the kept weights already.
        Some((index, outcome)) if index == best => outcome,
        _ => {
            checkpoint::restore_best(directory, model)?;
            evaluate(model, &data.validation, pad_id, classes, threshold, None)?
                .expect("no interrupt flag")
        }
    };
    let test = if data.test.ids.is_empty() {
        None
    } else {
        Some(
            evaluate(model, &data.test, pad_id, classes, threshold, None)?
                .expect("no interrupt flag"),
        )
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
            let (gold, predicted) = if split.is_multi_label() {
                (
                    Labels::Set(&split.label_sets[index]),
                    Labels::Set(&outcome.predicted_sets[index]),
                )
            } else {
                (
                    Labels::Class(split.labels[index]),
                    Labels::Class(outcome.predicted[index]),
                )
            };
            rows.push(Prediction {
                split: split_name,
                row: split.rows[index],
                text: &split.texts[index],
                text_pair: split.text_pairs.get(index).map(String::as_str),
                gold,
                predicted,
                probabilities,
            });
        }
    }
    atomic_file::write(
        &directory.join(run_files::PREDICTIONS_FILE),
        &run_files::predictions_csv(&data.classes, &run.settings.data.label_separator, &rows),
    )?;
    model_checkpoint::save_classifier(
        model,
        &data.classes,
        data.multi_label,
        &run.settings.model_path,
        &directory.join(run_files::MODEL_DIRECTORY),
    )?;
    let (train_seconds, examples) = training_totals(state, data.train.ids.len());
    let kept = state.history.get(best);
    let result = RunResult {
        best_epoch: kept.map_or(1, |row| row.epoch),
        best_step: kept.map(|row| row.steps),
        epochs_run: state.history.last().map_or(0, |row| row.epoch),
        stopped_early: state.stopped,
        validation: validation.evaluation,
        test: test.map(|outcome| outcome.evaluation),
        train_seconds,
        train_samples_per_second: examples as f64 / train_seconds.max(1e-9),
    };
    let kept_step = match (run.spec.train.eval_every_steps, result.best_step) {
        (0, _) | (_, None) => String::new(),
        (_, Some(step)) => format!(" (step {step})"),
    };
    let figures = |evaluation: &Evaluation| match &evaluation.multi_label {
        Some(multi) => format!(
            "subset accuracy {:.4}, micro-F1 {:.4}, macro-F1 {:.4}",
            evaluation.accuracy, multi.micro_f1, evaluation.macro_f1
        ),
        None => format!(
            "accuracy {:.4}, macro-F1 {:.4}",
            evaluation.accuracy, evaluation.macro_f1
        ),
    };
    let mut line = format!(
        "done: kept epoch {}{kept_step} of {}: validation {}",
        result.best_epoch,
        result.epochs_run,
        figures(&result.validation)
    );
    if let Some(test) = &result.test {
        line.push_str(&format!("; test {}", figures(test)));
    }
    progress.event(&line);
    Ok(TrainEnd::Done(result))
}

/// Training seconds and examples trained over the run: each epoch's last evaluation holds the
/// epoch's seconds so far (rows inside an epoch repeat its running time); every finished epoch
/// trained the whole split, an epoch stopped early `state.loss_examples` of it.
pub fn training_totals(state: &TrainingState, train_examples: usize) -> (f64, usize) {
    let mut seconds = 0.0;
    for (index, row) in state.history.iter().enumerate() {
        let last_of_epoch = state
            .history
            .get(index + 1)
            .is_none_or(|next| next.epoch != row.epoch);
        if last_of_epoch {
            seconds += row.epoch_seconds;
        }
    }
    (seconds, train_examples * state.epoch + state.loss_examples)
}
