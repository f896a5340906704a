//! The policies that read a run's metric history (one row per evaluation: after each epoch, and
//! every `eval_every_steps` steps when set), pure functions: which evaluation's weights are kept
//! (the best by the selection metric, the first of equals), when early stopping stops, and
//! whether a search trial goes on at a rung of its pruner (ASHA).

use crate::metrics::improves;
use crate::plan::spec::SelectionMetric;
use crate::store::run_files::EpochRow;

/// The value of the selection metric in an epoch row.
pub fn selection_value(row: &EpochRow, metric: SelectionMetric) -> f64 {
    match metric {
        SelectionMetric::MacroF1 => row.validation_macro_f1,
        SelectionMetric::Accuracy => row.validation_accuracy,
        SelectionMetric::Loss => row.validation_loss,
        SelectionMetric::SubsetAccuracy => row.validation_accuracy,
        SelectionMetric::MicroF1 => row.validation_micro_f1.unwrap_or(f64::NAN),
        SelectionMetric::SamplesF1 => row.validation_samples_f1.unwrap_or(f64::NAN),
        SelectionMetric::HammingLoss => row.validation_hamming_loss.unwrap_or(f64::NAN),
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

/// The rungs a search trial meets and what it is compared with at each: the values earlier
/// trials reached there (settled before this trial started, so the comparison never depends on
/// timing).
#[derive(Clone, Debug, PartialEq)]
pub struct PruningPlan {
    pub rungs: Vec<RungComparison>,
    pub reduction_factor: usize,
}

/// One rung: after `epochs` epochs, the trial's best value so far against `earlier`.
#[derive(Clone, Debug, PartialEq)]
pub struct RungComparison {
    pub epochs: usize,
    pub earlier: Vec<f64>,
}

impl PruningPlan {
    /// The rung (its number from 1, and itself) reached after `epochs` completed epochs.
    pub fn rung_after(&self, epochs: usize) -> Option<(usize, &RungComparison)> {
        self.rungs
            .iter()
            .enumerate()
            .find(|(_, rung)| rung.epochs == epochs)
            .map(|(index, rung)| (index + 1, rung))
    }
}

/// ASHA's decision at a rung.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RungDecision {
    pub continues: bool,
    /// The worst value among those that continue (the trial's own when it is the only one).
    pub threshold: f64,
    /// How many of the `earlier.len() + 1` trials compared continue: `ceil(n / reduction_factor)`.
    pub continuing: usize,
}

/// Whether a trial with `value` goes on at a rung where earlier trials reached `earlier`: it does
/// when fewer than `n / reduction_factor` of the `n` trials compared (itself included) are better
/// or equal (an earlier trial wins a tie), that is when it is among the top
/// `ceil(n / reduction_factor)`. The first trial at a rung always goes on; a NaN never does.
pub fn rung_decision(
    value: f64,
    earlier: &[f64],
    reduction_factor: usize,
    higher_is_better: bool,
) -> RungDecision {
    let compared = earlier.len() + 1;
    let continuing = compared.div_ceil(reduction_factor.max(1));
    let at_least_as_good = |other: f64, than: f64| {
        !other.is_nan()
            && (than.is_nan() || other == than || improves(other, than, higher_is_better))
    };
    let ahead = earlier
        .iter()
        .filter(|&&other| at_least_as_good(other, value))
        .count();
    // All values, best first (earlier before the trial on ties), NaN last.
    let mut ranked: Vec<f64> = earlier.to_vec();
    ranked.push(value);
    ranked.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        (false, false) if higher_is_better => b.total_cmp(a),
        (false, false) => a.total_cmp(b),
    });
    RungDecision {
        continues: !value.is_nan() && ahead < continuing,
        threshold: ranked[continuing - 1],
        continuing,
    }
}

/// The best selection value of the evaluations up to the end of epoch `epochs` (rows of later
/// epochs excluded): a trial's value at a rung.
pub fn value_at(history: &[EpochRow], epochs: usize, metric: SelectionMetric) -> Option<f64> {
    let values: Vec<f64> = history
        .iter()
        .filter(|row| row.epoch <= epochs)
        .map(|row| selection_value(row, metric))
        .collect();
    best_index(&values, metric.higher_is_better()).map(|index| values[index])
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
    fn a_trial_goes_on_when_among_the_top_third_of_those_compared() {
        let higher = true;
        let decision = rung_decision(0.5, &[], 3, higher);
        assert!(decision.continues, "the first trial at a rung goes on");
        assert_eq!((decision.threshold, decision.continuing), (0.5, 1));
        // Two compared, ceil(2/3) = 1 goes on: only the best.
        assert!(!rung_decision(0.4, &[0.5], 3, higher).continues);
        assert!(rung_decision(0.6, &[0.5], 3, higher).continues);
        assert!(
            !rung_decision(0.5, &[0.5], 3, higher).continues,
            "an earlier trial wins a tie"
        );
        // Four compared: ceil(4/3) = 2 go on.
        let decision = rung_decision(0.55, &[0.5, 0.6, 0.3], 3, higher);
        assert!(decision.continues);
        assert_eq!((decision.threshold, decision.continuing), (0.55, 2));
        let decision = rung_decision(0.45, &[0.5, 0.6, 0.3], 3, higher);
        assert!(!decision.continues);
        assert_eq!(decision.threshold, 0.5);
        // Loss: lower is better.
        assert!(rung_decision(0.2, &[0.3, 0.4], 3, false).continues);
        assert!(!rung_decision(0.35, &[0.3, 0.4], 3, false).continues);
        assert!(!rung_decision(f64::NAN, &[], 3, higher).continues);
        assert!(rung_decision(0.1, &[f64::NAN], 2, higher).continues);
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
