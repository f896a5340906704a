//! The metrics stage: classification figures of a set of predictions, pure functions: accuracy,
//! macro-F1, per-class precision/recall/F1/support and the confusion matrix; for label sets
//! (multi-label), micro-, macro- and samples-F1, subset accuracy, Hamming loss and each class's
//! true/false positives/negatives; and `improves`, the comparison every policy that reads a
//! metric history is built on (`train::policy`).
//!
//! Uses: `plan` (the selection metric's name). Never uses: `store`, `train` or `report` (which
//! use it), nor the model.
//!
//! Conventions (scikit-learn's): a class's precision is 0 when it is never predicted, its recall
//! 0 when it never occurs, F1 0 when both are 0; macro-F1 averages the classes that occur in the
//! gold labels or the predictions (for label sets too, where scikit-learn's `average="macro"`
//! would average every class). Multi-label: micro-F1 pools every class's counts; samples-F1
//! averages each example's F1 of its predicted set against its gold set, where an example whose
//! gold and predicted sets are both empty scores 1 (it is right; scikit-learn's
//! `zero_division=1.0`); subset accuracy is the share of exactly right sets; Hamming loss the
//! share of wrong (example, class) decisions.

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
    /// `confusion[gold][predicted]`: counts (single-label; empty for multi-label).
    pub confusion: Vec<Vec<usize>>,
    /// The multi-label figures (absent for single-label runs). `accuracy` is then the subset
    /// accuracy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_label: Option<Box<MultiLabelFigures>>,
}

/// The figures only label sets have.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MultiLabelFigures {
    pub micro_f1: f64,
    pub samples_f1: f64,
    pub subset_accuracy: f64,
    /// Lower is better.
    pub hamming_loss: f64,
    /// One per class.
    pub class_counts: Vec<ClassCounts>,
}

/// One class's decisions over a split's examples, as a one-vs-rest confusion matrix.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassCounts {
    pub true_positives: usize,
    pub false_positives: usize,
    pub false_negatives: usize,
    pub true_negatives: usize,
}

fn ratio(numerator: usize, denominator: usize) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator as f64 / denominator as f64
    }
}

/// F1 from precision and recall (0 when both are 0).
fn f1(precision: f64, recall: f64) -> f64 {
    if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}

/// Each class's figures from its (true positives, gold count, predicted count), and the
/// macro-F1 over the classes that occur in the gold labels or the predictions.
fn per_class_figures(
    counts: impl Iterator<Item = (usize, usize, usize)>,
) -> (Vec<ClassMetrics>, f64) {
    let mut per_class = Vec::new();
    let (mut f1_sum, mut present) = (0.0, 0usize);
    for (true_positives, support, predicted) in counts {
        let precision = ratio(true_positives, predicted);
        let recall = ratio(true_positives, support);
        let class_f1 = f1(precision, recall);
        if support > 0 || predicted > 0 {
            f1_sum += class_f1;
            present += 1;
        }
        per_class.push(ClassMetrics {
            precision,
            recall,
            f1: class_f1,
            support,
        });
    }
    let macro_f1 = if present == 0 {
        0.0
    } else {
        f1_sum / present as f64
    };
    (per_class, macro_f1)
}

/// Class names of a label set joined by `separator` (`predictions.csv`, exports).
pub fn join_classes(set: &[u32], classes: &[String], separator: &str) -> String {
    set.iter()
        .map(|&class| classes[class as usize].as_str())
        .collect::<Vec<_>>()
        .join(separator)
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
        let accuracy = ratio(correct, gold.len());
        let (per_class, macro_f1) = per_class_figures((0..classes).map(|class| {
            (
                confusion[class][class],
                confusion[class].iter().sum(),
                confusion.iter().map(|row| row[class]).sum(),
            )
        }));
        Evaluation {
            loss,
            accuracy,
            macro_f1,
            per_class,
            confusion,
            multi_label: None,
        }
    }

    /// Scores predicted label sets against gold label sets (sorted class ids below `classes`);
    /// `loss` is passed through.
    pub fn multi_label(
        gold: &[Vec<u32>],
        predicted: &[Vec<u32>],
        classes: usize,
        loss: f64,
    ) -> Evaluation {
        assert_eq!(gold.len(), predicted.len(), "one prediction per example");
        let mut counts = vec![ClassCounts::default(); classes];
        let mut exact = 0usize;
        let mut samples_f1_sum = 0.0;
        for (truth, guess) in gold.iter().zip(predicted) {
            let mut shared = 0usize;
            for (class, counts) in counts.iter_mut().enumerate() {
                let class = class as u32;
                match (truth.contains(&class), guess.contains(&class)) {
                    (true, true) => {
                        counts.true_positives += 1;
                        shared += 1;
                    }
                    (false, true) => counts.false_positives += 1,
                    (true, false) => counts.false_negatives += 1,
                    (false, false) => counts.true_negatives += 1,
                }
            }
            if truth == guess {
                exact += 1;
            }
            samples_f1_sum += if truth.is_empty() && guess.is_empty() {
                1.0
            } else {
                2.0 * shared as f64 / (truth.len() + guess.len()) as f64
            };
        }
        let (per_class, macro_f1) = per_class_figures(counts.iter().map(|counts| {
            (
                counts.true_positives,
                counts.true_positives + counts.false_negatives,
                counts.true_positives + counts.false_positives,
            )
        }));
        let pooled = |field: fn(&ClassCounts) -> usize| counts.iter().map(field).sum::<usize>();
        let true_positives = pooled(|counts| counts.true_positives);
        let micro_f1 = f1(
            ratio(
                true_positives,
                true_positives + pooled(|counts| counts.false_positives),
            ),
            ratio(
                true_positives,
                true_positives + pooled(|counts| counts.false_negatives),
            ),
        );
        let wrong = pooled(|counts| counts.false_positives + counts.false_negatives);
        let subset_accuracy = ratio(exact, gold.len());
        Evaluation {
            loss,
            accuracy: subset_accuracy,
            macro_f1,
            per_class,
            confusion: Vec::new(),
            multi_label: Some(Box::new(MultiLabelFigures {
                micro_f1,
                samples_f1: if gold.is_empty() {
                    0.0
                } else {
                    samples_f1_sum / gold.len() as f64
                },
                subset_accuracy,
                hamming_loss: ratio(wrong, gold.len() * classes),
                class_counts: counts,
            })),
        }
    }

    /// The value of a selection metric (NaN for a multi-label metric of single-label figures,
    /// which planning refuses).
    pub fn metric(&self, metric: SelectionMetric) -> f64 {
        let multi = |value: fn(&MultiLabelFigures) -> f64| {
            self.multi_label.as_deref().map_or(f64::NAN, value)
        };
        match metric {
            SelectionMetric::MacroF1 => self.macro_f1,
            SelectionMetric::Accuracy => self.accuracy,
            SelectionMetric::Loss => self.loss,
            SelectionMetric::MicroF1 => multi(|figures| figures.micro_f1),
            SelectionMetric::SamplesF1 => multi(|figures| figures.samples_f1),
            SelectionMetric::SubsetAccuracy => multi(|figures| figures.subset_accuracy),
            SelectionMetric::HammingLoss => multi(|figures| figures.hamming_loss),
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

    #[test]
    fn multi_label_figures_match_a_hand_count() {
        // gold:      {0, 1}  {0}     {}  {2}
        // predicted: {0}     {0, 2}  {}  {}
        let evaluation = Evaluation::multi_label(
            &[vec![0, 1], vec![0], vec![], vec![2]],
            &[vec![0], vec![0, 2], vec![], vec![]],
            3,
            0.25,
        );
        let figures = evaluation.multi_label.as_ref().unwrap();
        let counts = |tp, fp, fn_, tn| ClassCounts {
            true_positives: tp,
            false_positives: fp,
            false_negatives: fn_,
            true_negatives: tn,
        };
        assert_eq!(
            figures.class_counts,
            vec![counts(2, 0, 0, 2), counts(0, 0, 1, 3), counts(0, 1, 1, 2)]
        );
        // Pooled: 2 true positives, 1 false positive, 2 false negatives.
        assert!((figures.micro_f1 - 4.0 / 7.0).abs() < 1e-15);
        assert!((evaluation.macro_f1 - 1.0 / 3.0).abs() < 1e-15);
        // Per example: 2/3, 2/3, 1 (both empty: right), 0.
        assert!((figures.samples_f1 - 7.0 / 12.0).abs() < 1e-15);
        assert_eq!(figures.subset_accuracy, 0.25);
        assert_eq!(evaluation.accuracy, 0.25);
        assert_eq!(figures.hamming_loss, 3.0 / 12.0);
        assert_eq!(evaluation.per_class[0].support, 2);
        assert!(evaluation.confusion.is_empty());
        assert_eq!(evaluation.metric(SelectionMetric::HammingLoss), 0.25);
        assert!(!SelectionMetric::HammingLoss.higher_is_better());
        assert!(
            Evaluation::new(&[0], &[0], 2, 0.0)
                .metric(SelectionMetric::MicroF1)
                .is_nan(),
            "no multi-label figures for one label"
        );
    }
}
