//! The policies that read a run's metric history (one row per evaluation: after each epoch, and
//! every `eval_every_steps` steps when set), pure functions: which evaluation's weights are kept
//! (the best by the selection metric, the first of equals) and when early stopping stops.

use crate::metrics::improves;
use crate::plan::spec::SelectionMetric;
use crate::store::run_files::EpochRow;

/// The value of the selection metric in an epoch row.
pub fn selection_value(row: &EpochRow, metric: SelectionMetric) -> f64 {
    match metric {
        SelectionMetric::MacroF1 => row.validation_macro_f1,
        SelectionMetric::Accuracy => row.validation_accuracy,
        SelectionMetric::Loss => row.validation_loss,
    }
}

/// The index of the best value in a history (the first of equals), if any.
pub fn best_index(history: &[f64], higher_is_better: bool) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (index, &value) in history.iter().enumerate() {
        match best {
            None if !value.is_nan() => best = Some(index),
            Some(current) if improves(value, history[current], higher_is_better) => {
                best = Some(index)
            }
            _ => {}
        }
    }
    best
}

/// What the loop does after a validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvaluationDecision {
    /// The evaluation just made is the best so far: keep its weights.
    pub keep: bool,
    /// Stop training now (early stopping).
    pub stop: bool,
}

/// The decision after the last evaluation of `history` (selection metric values, one per
/// evaluation): keep its weights if it is the best so far; stop when `patience > 0` evaluations
/// have passed without improvement.
pub fn after_evaluation(
    history: &[f64],
    higher_is_better: bool,
    patience: usize,
) -> EvaluationDecision {
    let last = history.len().saturating_sub(1);
    let best = best_index(history, higher_is_better);
    let keep = !history.is_empty() && best == Some(last);
    let since_best = match best {
        Some(best) => last - best,
        None => history.len(),
    };
    EvaluationDecision {
        keep,
        stop: patience > 0 && since_best >= patience,
    }
}

/// The selection metric's values of a history, one per evaluation.
pub fn selection_history(history: &[EpochRow], metric: SelectionMetric) -> Vec<f64> {
    history
        .iter()
        .map(|row| selection_value(row, metric))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_epoch_is_the_first_of_equals() {
        assert_eq!(best_index(&[0.5, 0.7, 0.7, 0.6], true), Some(1));
        assert_eq!(best_index(&[0.5, 0.3, 0.3, 0.6], false), Some(1));
        assert_eq!(best_index(&[f64::NAN, 0.2], true), Some(1));
        assert_eq!(best_index(&[], true), None);
    }

    #[test]
    fn early_stopping_counts_epochs_without_improvement() {
        let higher = true;
        assert_eq!(
            after_evaluation(&[0.5], higher, 2),
            EvaluationDecision {
                keep: true,
                stop: false
            }
        );
        assert_eq!(
            after_evaluation(&[0.5, 0.4], higher, 2),
            EvaluationDecision {
                keep: false,
                stop: false
            }
        );
        assert_eq!(
            after_evaluation(&[0.5, 0.4, 0.5], higher, 2),
            EvaluationDecision {
                keep: false,
                stop: true
            },
            "a tie is no improvement"
        );
        assert!(
            !after_evaluation(&[0.5, 0.4, 0.3, 0.2], higher, 0).stop,
            "0: off"
        );
        assert!(
            after_evaluation(&[0.5, 0.9], false, 1).stop,
            "loss: lower is better"
        );
        assert!(!after_evaluation(&[0.9, 0.5], false, 1).stop);
    }
}
