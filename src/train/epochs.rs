//! The epoch loop of one run: each epoch's batches (shuffled from the run's seed, optionally
//! bucketed by length), one optimizer step per group of `gradient_accumulation` batches at the
//! schedule's learning rate, then validation, the epoch's row in `metrics.csv`, the kept-weights
//! and early-stopping decisions of `policy`, and a checkpoint. With `eval_every_steps`, validation
//! (its row, the decisions) also runs inside epochs after every N-th optimizer step; one that
//! falls on an epoch's end is that epoch's validation.
//!
//! A checkpoint is written after every epoch, after every [`CHECKPOINT_INTERVAL`] of training, and
//! when the run is interrupted (the interrupt flag is read after every step and during
//! validation).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::bail;
use candle_core::Tensor;

use crate::model::encoder::EncoderClassifier;
use crate::plan::PlannedRun;
use crate::store::PruneRecord;
use crate::store::run_files::{self, EpochRow};
use crate::support::atomic_file;
use crate::support::progress::{Progress, StepStatus};
use crate::support::random::SeededRandom;
use crate::tokenize::batches;
use crate::tokenize::preprocess::TokenizedData;
use crate::train::TrainOptions;
use crate::train::checkpoint::{self, TrainingState};
use crate::train::evaluation::{self, SplitOutcome};
use crate::train::optimizer::AdamW;
use crate::train::policy::{self, EvaluationDecision};
use crate::train::schedule::Schedule;
use crate::train::step::{self, StepInputs};

/// The longest stretch of training between two checkpoints.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// Test hook: abort the process (as SIGKILL would stop it, with no cleanup) right after this
/// optimizer step.
pub const ABORT_AFTER_STEP_VARIABLE: &str = "BERTLAB_TEST_ABORT_AFTER_STEP";

/// Test hook: sleep this many milliseconds after every optimizer step (so that a test can stop a
/// tiny model's run in the middle; the results do not change).
pub const STEP_DELAY_VARIABLE: &str = "BERTLAB_TEST_STEP_DELAY_MS";

/// Reads the step-delay test hook (once per epoch: not on the step's path).
fn step_delay() -> Option<Duration> {
    std::env::var(STEP_DELAY_VARIABLE)
        .ok()
        .and_then(|value| value.parse().ok())
        .map(Duration::from_millis)
}

/// Reads the abort-after-step test hook once.
fn abort_after_step() -> Option<u64> {
    std::env::var(ABORT_AFTER_STEP_VARIABLE)
        .ok()
        .and_then(|value| value.parse().ok())
}

/// What the loop reads: the run, its data and model, where it writes, and the caller's options.
pub struct EpochLoop<'a> {
    pub run: &'a PlannedRun,
    /// The run directory (checkpoints, `metrics.csv`).
    pub directory: &'a Path,
    pub options: &'a TrainOptions<'a>,
    pub model: &'a EncoderClassifier,
    pub data: &'a TokenizedData,
    pub pad_id: u32,
    pub class_weights: Option<&'a Tensor>,
}

/// How the loop ended without an error.
#[derive(Clone, Debug, PartialEq)]
pub enum LoopEnd {
    /// Every epoch trained (or early stopping fired). `last_validation` is the last
    /// evaluation (its index in the history, outcome), if this process ran it.
    Finished {
        last_validation: Option<(usize, SplitOutcome)>,
    },
    /// Stopped by a signal after writing a checkpoint; `position` says where.
    Interrupted { position: String },
    /// Stopped at a rung of the search's pruner (the checkpoint of the rung's epoch end kept);
    /// `kept`: the epoch and step of the best evaluation so far.
    Pruned {
        pruned: PruneRecord,
        kept: Option<(usize, u64)>,
    },
}

/// The step counts of a run, fixed by its settings and the training split's size.
struct StepPlan {
    epochs: usize,
    accumulation: usize,
    /// The learning rate of each step; it knows the run's total steps.
    schedule: Schedule,
    /// Validate after every this many optimizer steps (0: after epochs only).
    eval_every_steps: u64,
}

/// Trains from where `state` stands to the last epoch, updating `state` as it goes.
pub fn run_epochs(
    context: &EpochLoop,
    optimizer: &mut AdamW,
    state: &mut TrainingState,
    progress: &mut Progress,
) -> anyhow::Result<LoopEnd> {
    let train_settings = &context.run.spec.train;
    let lengths: Vec<usize> = context.data.train.ids.iter().map(Vec::len).collect();
    let batch_size = train_settings.batch_size;
    let accumulation = train_settings.gradient_accumulation;
    let batches_per_epoch = lengths.len().div_ceil(batch_size);
    let steps_per_epoch = batches_per_epoch.div_ceil(accumulation) as u64;
    let epochs = train_settings.epochs;
    let total_steps = steps_per_epoch * epochs as u64;
    let steps = StepPlan {
        epochs,
        accumulation,
        schedule: Schedule::for_run(train_settings, total_steps),
        eval_every_steps: train_settings.eval_every_steps,
    };
    let abort_after = abort_after_step();
    progress.start_steps(state.steps, total_steps);
    let mut last_checkpoint = Instant::now();
    // The last validation in memory (history index, figures, probabilities): when it is the kept
    // one, `finish` needs no second pass.
    let mut last_validation: Option<(usize, SplitOutcome)> = None;
    if context.options.interrupt.load(Ordering::SeqCst) {
        return Ok(LoopEnd::Interrupted {
            position: format!(
                "epoch {} (step {}), before training",
                state.epoch + 1,
                state.steps
            ),
        });
    }

    while state.epoch < epochs && !state.stopped {
        if let Some(pruned) = rung_check(context, state, progress) {
            let metric = context.run.spec.train.selection_metric;
            let history = policy::selection_history(&state.history, metric);
            let kept = policy::best_index(&history, metric.higher_is_better())
                .map(|index| (state.history[index].epoch, state.history[index].steps));
            return Ok(LoopEnd::Pruned { pruned, kept });
        }
        let epoch = state.epoch;
        let batches = batches::epoch_batches(
            &lengths,
            batch_size,
            train_settings.seed,
            epoch as u64,
            train_settings.length_bucketing,
        );
        if let Some(position) = train_epoch(
            context,
            &steps,
            &batches,
            optimizer,
            state,
            progress,
            &mut last_checkpoint,
            abort_after,
            &mut last_validation,
        )? {
            return Ok(LoopEnd::Interrupted { position });
        }
        if state.stopped {
            // Early stopping inside the epoch: its last evaluation was the run's last.
            break;
        }

        let position = format!("epoch {} validation (step {})", epoch + 1, state.steps);
        let outcome = match validate(context, optimizer, state, progress, position)? {
            Ok(outcome) => outcome,
            Err(position) => return Ok(LoopEnd::Interrupted { position }),
        };
        end_epoch(context, epochs, &outcome, state, progress)?;
        checkpoint::save_state(context.directory, context.model, optimizer, state)?;
        last_checkpoint = Instant::now();
        last_validation = Some((state.history.len() - 1, outcome));
    }
    Ok(LoopEnd::Finished { last_validation })
}

/// At the start of an epoch that follows a rung of the search's pruner (also on resume, so a
/// process killed between the rung's checkpoint and its decision decides on restart): ASHA's
/// decision on the best value so far, logged; `Some` when the trial stops there.
fn rung_check(
    context: &EpochLoop,
    state: &TrainingState,
    progress: &mut Progress,
) -> Option<PruneRecord> {
    let pruning = context.options.pruning?;
    if state.next_batch != 0 {
        return None;
    }
    let (rung, comparison) = pruning.rung_after(state.epoch)?;
    let metric = context.run.spec.train.selection_metric;
    let value = policy::value_at(&state.history, comparison.epochs, metric).unwrap_or(f64::NAN);
    let decision = policy::rung_decision(
        value,
        &comparison.earlier,
        pruning.reduction_factor,
        metric.higher_is_better(),
    );
    let compared = comparison.earlier.len() + 1;
    progress.event(&format!(
        "rung {rung} ({} epoch{}): validation {metric} {value:.4}, {} among the top {} of {compared} trial{} (threshold {:.4})",
        comparison.epochs,
        if comparison.epochs == 1 { "" } else { "s" },
        if decision.continues { "continues:" } else { "pruned: not" },
        decision.continuing,
        if compared == 1 { "" } else { "s" },
        decision.threshold,
    ));
    (!decision.continues).then(|| PruneRecord {
        rung,
        epochs: comparison.epochs,
        metric: metric.to_string(),
        value,
        threshold: decision.threshold,
        compared_with: comparison.earlier.len(),
        continuing: decision.continuing,
    })
}

/// Validates the model; a signal during validation writes a checkpoint (where the loop stands:
/// the validation is run again on resume) and gives back `Err(position)`.
fn validate(
    context: &EpochLoop,
    optimizer: &AdamW,
    state: &TrainingState,
    progress: &mut Progress,
    position: String,
) -> anyhow::Result<Result<SplitOutcome, String>> {
    match evaluation::evaluate(
        context.model,
        &context.data.validation,
        context.pad_id,
        context.data.classes.len(),
        context.run.spec.train.threshold,
        Some(context.options.interrupt),
    )? {
        Some(outcome) => Ok(Ok(outcome)),
        None => {
            checkpoint::save_state(context.directory, context.model, optimizer, state)?;
            progress.event(&format!("interrupted: checkpoint written at {position}"));
            Ok(Err(position))
        }
    }
}

/// Whether the loop owes a validation inside the epoch before its next step: every
/// `eval_every_steps` steps, unless the epoch is over (its own validation covers that step) or
/// the history already holds this step (as after a resume).
fn step_evaluation_due(
    eval_every_steps: u64,
    state: &TrainingState,
    batches_in_epoch: usize,
) -> bool {
    eval_every_steps > 0
        && state.steps > 0
        && state.steps.is_multiple_of(eval_every_steps)
        && state.next_batch < batches_in_epoch
        && state.history.last().map(|row| row.steps) != Some(state.steps)
}

/// Trains the rest of the epoch `state.epoch` (from `state.next_batch`), one optimizer step per
/// group of batches, validating every `eval_every_steps` steps (which may stop the run early:
/// `state.stopped`); checkpoints every [`CHECKPOINT_INTERVAL`]. Returns where it stopped when it
/// was interrupted (after writing a checkpoint).
#[allow(clippy::too_many_arguments)]
fn train_epoch(
    context: &EpochLoop,
    steps: &StepPlan,
    batches: &[Vec<usize>],
    optimizer: &mut AdamW,
    state: &mut TrainingState,
    progress: &mut Progress,
    last_checkpoint: &mut Instant,
    abort_after: Option<u64>,
    last_validation: &mut Option<(usize, SplitOutcome)>,
) -> anyhow::Result<Option<String>> {
    let train_settings = &context.run.spec.train;
    let step_delay = step_delay();
    let epoch = state.epoch;
    let mut segment_start = Instant::now();
    let mut segment_seconds_before = state.epoch_seconds;
    loop {
        if step_evaluation_due(steps.eval_every_steps, state, batches.len()) {
            state.epoch_seconds = segment_seconds_before + segment_start.elapsed().as_secs_f64();
            let position = format!("epoch {} step {} validation", epoch + 1, state.steps);
            let outcome = match validate(context, optimizer, state, progress, position)? {
                Ok(outcome) => outcome,
                Err(position) => return Ok(Some(position)),
            };
            let decision = record_evaluation(context, steps.epochs, &outcome, state, progress)?;
            *last_validation = Some((state.history.len() - 1, outcome));
            // Validation time is not training time.
            segment_start = Instant::now();
            segment_seconds_before = state.epoch_seconds;
            if decision.stop {
                state.stopped = true;
                report_early_stop(context, progress);
                checkpoint::save_state(context.directory, context.model, optimizer, state)?;
                *last_checkpoint = Instant::now();
                return Ok(None);
            }
        }
        if state.next_batch >= batches.len() {
            break;
        }
        let group_end = (state.next_batch + steps.accumulation).min(batches.len());
        let group = &batches[state.next_batch..group_end];
        let mut random = SeededRandom::for_dropout(train_settings.seed, state.steps);
        let learning_rate = steps.schedule.learning_rate_at(state.steps);
        let outcome = step::optimizer_step(
            &StepInputs {
                model: context.model,
                split: &context.data.train,
                pad_id: context.pad_id,
                class_weights: context.class_weights,
                learning_rate,
                max_grad_norm: train_settings.max_grad_norm,
                label_smoothing: train_settings.label_smoothing,
            },
            optimizer,
            group,
            &mut random,
        )?;
        if let Some(problem) = outcome.divergence {
            bail!(
                "diverged at epoch {} step {}: {problem}",
                epoch + 1,
                state.steps + 1
            );
        }
        for (loss, examples) in outcome.batch_losses {
            state.loss_sum += loss * examples as f64;
            state.loss_examples += examples;
        }
        state.steps = optimizer.steps;
        state.learning_rate = learning_rate;
        state.next_batch = group_end;

        let seconds = segment_seconds_before + segment_start.elapsed().as_secs_f64();
        progress.step(StepStatus {
            epoch: epoch + 1,
            epochs: steps.epochs,
            steps: state.steps,
            total_steps: steps.schedule.total_steps,
            loss: state.loss_sum / state.loss_examples.max(1) as f64,
            samples_per_second: state.loss_examples as f64 / seconds.max(1e-9),
        });
        if abort_after == Some(state.steps) {
            std::process::abort();
        }
        if let Some(delay) = step_delay {
            std::thread::sleep(delay);
        }
        let interrupted = context.options.interrupt.load(Ordering::SeqCst);
        if interrupted || last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL {
            state.epoch_seconds = seconds;
            checkpoint::save_state(context.directory, context.model, optimizer, state)?;
            *last_checkpoint = Instant::now();
            segment_start = Instant::now();
            segment_seconds_before = seconds;
            if interrupted {
                let position = format!(
                    "epoch {} batch {}/{} (step {})",
                    epoch + 1,
                    state.next_batch,
                    batches.len(),
                    state.steps
                );
                progress.event(&format!("interrupted: checkpoint written at {position}"));
                return Ok(Some(position));
            }
        }
    }
    state.epoch_seconds = segment_seconds_before + segment_start.elapsed().as_secs_f64();
    Ok(None)
}

/// After a validation (an epoch's or a step's): its row in the history and `metrics.csv`, the
/// kept weights when it is the best so far, the log line; returns the policy's decision.
fn record_evaluation(
    context: &EpochLoop,
    epochs: usize,
    outcome: &SplitOutcome,
    state: &mut TrainingState,
    progress: &mut Progress,
) -> anyhow::Result<EvaluationDecision> {
    let train_settings = &context.run.spec.train;
    let metric = train_settings.selection_metric;
    let epoch = state.epoch;
    let validation = &outcome.evaluation;
    if !validation.loss.is_finite() {
        bail!(
            "diverged at epoch {} (step {}): the validation loss is {}",
            epoch + 1,
            state.steps,
            validation.loss
        );
    }
    let row = EpochRow {
        epoch: epoch + 1,
        train_loss: state.loss_sum / state.loss_examples.max(1) as f64,
        validation_loss: validation.loss,
        validation_accuracy: validation.accuracy,
        validation_macro_f1: validation.macro_f1,
        validation_micro_f1: validation
            .multi_label
            .as_ref()
            .map(|figures| figures.micro_f1),
        validation_samples_f1: validation
            .multi_label
            .as_ref()
            .map(|figures| figures.samples_f1),
        validation_hamming_loss: validation
            .multi_label
            .as_ref()
            .map(|figures| figures.hamming_loss),
        learning_rate: state.learning_rate,
        steps: state.steps,
        epoch_seconds: state.epoch_seconds,
        train_samples_per_second: state.loss_examples as f64 / state.epoch_seconds.max(1e-9),
    };
    state.history.push(row.clone());
    let history = policy::selection_history(&state.history, metric);
    let decision = policy::after_evaluation(
        &history,
        metric.higher_is_better(),
        train_settings.early_stopping_patience,
    );
    if decision.keep {
        checkpoint::save_best(context.directory, context.model)?;
    }
    atomic_file::write(
        &context.directory.join(run_files::METRICS_FILE),
        &run_files::metrics_csv(&state.history),
    )?;
    let at_step = if train_settings.eval_every_steps > 0 {
        format!(" step {}", row.steps)
    } else {
        String::new()
    };
    let figures = match (row.validation_micro_f1, row.validation_hamming_loss) {
        (Some(micro_f1), Some(hamming_loss)) => format!(
            "subset accuracy {:.4}, micro-F1 {micro_f1:.4}, macro-F1 {:.4}, Hamming loss {hamming_loss:.4}",
            row.validation_accuracy, row.validation_macro_f1
        ),
        _ => format!(
            "accuracy {:.4}, macro-F1 {:.4}",
            row.validation_accuracy, row.validation_macro_f1
        ),
    };
    progress.event(&format!(
        "epoch {}/{}{at_step}: train loss {:.4}, validation loss {:.4}, {figures}{}, {:.1} samples/s",
        epoch + 1,
        epochs,
        row.train_loss,
        row.validation_loss,
        if decision.keep { " (best so far)" } else { "" },
        row.train_samples_per_second
    ));
    Ok(decision)
}

/// The log line of early stopping.
fn report_early_stop(context: &EpochLoop, progress: &mut Progress) {
    let train_settings = &context.run.spec.train;
    let counted = if train_settings.eval_every_steps > 0 {
        "evaluations"
    } else {
        "epochs"
    };
    progress.event(&format!(
        "early stopping: {} {counted} without improvement of validation {}",
        train_settings.early_stopping_patience, train_settings.selection_metric
    ));
}

/// After an epoch's validation: [`record_evaluation`], then the next epoch's start (or early
/// stopping).
fn end_epoch(
    context: &EpochLoop,
    epochs: usize,
    outcome: &SplitOutcome,
    state: &mut TrainingState,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let decision = record_evaluation(context, epochs, outcome, state, progress)?;
    state.epoch += 1;
    state.next_batch = 0;
    state.loss_sum = 0.0;
    state.loss_examples = 0;
    state.epoch_seconds = 0.0;
    if decision.stop && state.epoch < epochs {
        state.stopped = true;
        report_early_stop(context, progress);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(epoch: usize, steps: u64) -> EpochRow {
        EpochRow {
            epoch,
            train_loss: 0.5,
            validation_loss: 0.5,
            validation_accuracy: 0.5,
            validation_macro_f1: 0.5,
            validation_micro_f1: None,
            validation_samples_f1: None,
            validation_hamming_loss: None,
            learning_rate: 1e-3,
            steps,
            epoch_seconds: 1.0,
            train_samples_per_second: 1.0,
        }
    }

    #[test]
    fn a_step_evaluation_is_due_every_n_steps_inside_an_epoch_once() {
        let mut state = TrainingState::new("hash");
        let batches = 12;
        assert!(
            !step_evaluation_due(4, &state, batches),
            "not before the first step"
        );
        state.steps = 4;
        state.next_batch = 4;
        assert!(step_evaluation_due(4, &state, batches));
        assert!(!step_evaluation_due(0, &state, batches), "0: off");
        assert!(!step_evaluation_due(3, &state, batches));
        state.history.push(row(1, 4));
        assert!(
            !step_evaluation_due(4, &state, batches),
            "done already (a resume)"
        );
        state.steps = 12;
        state.next_batch = 12;
        assert!(
            !step_evaluation_due(4, &state, batches),
            "the epoch's own validation covers its last step"
        );
        // A checkpoint written after step 16 but before its evaluation: the resumed loop owes it.
        state.history.push(row(1, 12));
        state.epoch = 1;
        state.steps = 16;
        state.next_batch = 4;
        assert!(step_evaluation_due(4, &state, batches));
    }

    #[test]
    fn training_totals_count_each_epoch_once() {
        let mut state = TrainingState::new("hash");
        state.history = vec![row(1, 4), row(1, 8), row(2, 12), row(2, 16)];
        state.history[1].epoch_seconds = 3.0;
        state.history[3].epoch_seconds = 2.5;
        // Stopped early in epoch 2 after 40 of its examples.
        state.epoch = 1;
        state.loss_examples = 40;
        let (seconds, examples) = crate::train::finish::training_totals(&state, 100);
        assert_eq!(seconds, 5.5);
        assert_eq!(examples, 140);
    }
}
