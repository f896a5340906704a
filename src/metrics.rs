//! The metrics stage: classification figures of a set of predictions, pure functions: accuracy,
//! macro-F1, per-class precision/recall/F1/support and the confusion matrix; and `improves`, the
//! comparison every policy that reads a metric history is built on (`train::policy`).
//!
//! Uses: `plan` (the selection metric's name). Never uses: `store`, `train` or `report` (which
//! use it), nor the model.
//!
//! Conventions (scikit-learn's): a class's precision is 0 when it is never predicted, its recall
//! 0 when it never occurs, F1 0 when both are 0; macro-F1 averages the classes that occur in the
//! gold labels or the predictions.

use serde::{Deserialize, Serialize};

use crate::plan::spec::SelectionMetric;

/// One class's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// How many gold examples the class has.
    pub support: usize,
}

/// How a model did on one split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Mean cross-entropy (unweighted).
    pub loss: f64,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[gold][predicted]`: counts.
    pub confusion: Vec<Vec<usize>>,
}

impl Evaluation {
    /// Scores `predicted` against `gold` (class ids below `classes`); `loss` is passed through.
    pub fn new(gold: &[u32], predicted: &[u32], classes: usize, loss: f64) -> Evaluation {
        assert_eq!(gold.len(), predicted.len(), "one prediction per example");
        let mut confusion = vec![vec![0usize; classes]; classes];
        for (&truth, &guess) in gold.iter().zip(predicted) {
            confusion[truth as usize][guess as usize] += 1;
        }
        let correct: usize = (0..classes).map(|class| confusion[class][class]).sum();
        let accuracy = if gold.is_empty() {
            0.0
        } else {
            correct as f64 / gold.len() as f64
        };
        let ratio = |numerator: usize, denominator: usize| {
            if denominator == 0 {
                0.0
            } else {
                numerator as f64 / denominator as f64
            }
        };
        let mut per_class = Vec::with_capacity(classes);
        let mut f1_sum = 0.0;
        let mut present = 0usize;
        for class in 0..classes {
            let true_positives = confusion[class][class];
            let support: usize = confusion[class].iter().sum();
            let predicted_count: usize = confusion.iter().map(|row| row[class]).sum();
            let precision = ratio(true_positives, predicted_count);
            let recall = ratio(true_positives, support);
            let f1 = if precision + recall == 0.0 {
                0.0
            } else {
                2.0 * precision * recall / (precision + recall)
            };
            if support > 0 || predicted_count > 0 {
                f1_sum += f1;
                present += 1;
            }
            per_class.push(ClassMetrics {
                precision,
                recall,
                f1,
                support,
            });
        }
        Evaluation {
            loss,
            accuracy,
            macro_f1: if present == 0 {
                0.0
            } else {
                f1_sum / present as f64
            },
            per_class,
            confusion,
        }
    }

    /// The value of a selection metric.
    pub fn metric(&self, metric: SelectionMetric) -> f64 {
        match metric {
            SelectionMetric::MacroF1 => self.macro_f1,
            SelectionMetric::Accuracy => self.accuracy,
            SelectionMetric::Loss => self.loss,
        }
    }
}

/// Whether `candidate` beats `incumbent` (strictly: ties keep the earlier epoch).
pub fn improves(candidate: f64, incumbent: f64, higher_is_better: bool) -> bool {
    if candidate.is_nan() {
        return false;
    }
    if incumbent.is_nan() {
        return true;
    }
    if higher_is_better {
        candidate > incumbent
    } else {
        candidate < incumbent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_match_a_hand_count() {
        // gold:      0 0 0 1 1 2
        // predicted: 0 0 1 1 2 2
        let evaluation = Evaluation::new(&[0, 0, 0, 1, 1, 2], &[0, 0, 1, 1, 2, 2], 3, 0.5);
        assert_eq!(
            evaluation.confusion,
            vec![vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 1]]
        );
        assert!((evaluation.accuracy - 4.0 / 6.0).abs() < 1e-15);
        let f1 = |p: f64, r: f64| 2.0 * p * r / (p + r);
        let expected = [(1.0, 2.0 / 3.0, 3), (0.5, 0.5, 2), (0.5, 1.0, 1)];
        for (class, (precision, recall, support)) in expected.into_iter().enumerate() {
            let metrics = &evaluation.per_class[class];
            assert!((metrics.precision - precision).abs() < 1e-15, "{class}");
            assert!((metrics.recall - recall).abs() < 1e-15, "{class}");
            assert!(
                (metrics.f1 - f1(precision, recall)).abs() < 1e-15,
                "{class}"
            );
            assert_eq!(metrics.support, support);
        }
        let macro_f1 = (f1(1.0, 2.0 / 3.0) + 0.5 + f1(0.5, 1.0)) / 3.0;
        assert!((evaluation.macro_f1 - macro_f1).abs() < 1e-15);
        assert_eq!(evaluation.metric(SelectionMetric::Loss), 0.5);
    }

    #[test]
    fn classes_never_seen_nor_predicted_leave_the_macro_average() {
        let evaluation = Evaluation::new(&[0, 1], &[0, 1], 3, 0.0);
        assert_eq!(evaluation.macro_f1, 1.0);
        assert_eq!(evaluation.per_class[2].f1, 0.0);
        let never_predicted = Evaluation::new(&[0, 1], &[0, 0], 2, 0.0);
        assert_eq!(never_predicted.per_class[1].precision, 0.0);
        assert!((never_predicted.macro_f1 - (2.0 / 3.0) / 2.0).abs() < 1e-15);
    }
}
