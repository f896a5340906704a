//! Scoring texts in evaluation mode and evaluating a split: log-probabilities in f64, the
//! predicted class (the first of equal logits), mean cross-entropy and the split's figures; for
//! multi-label data, a sigmoid per class in f64, the classes at or above the threshold, mean
//! binary cross-entropy and the multi-label figures.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device};

use crate::metrics::Evaluation;
use crate::model::encoder::{Batch, EncoderClassifier, Mode};
use crate::tokenize::preprocess::TokenizedSplit;

/// Texts per forward pass when evaluating.
pub const EVALUATION_BATCH: usize = 64;

/// One text scored in evaluation mode.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    /// The argmax of the logits (the first of equals).
    pub class: u32,
    /// Log-probabilities of the classes, computed in f64.
    pub log_probabilities: Vec<f64>,
}

impl Scored {
    pub fn probabilities(&self) -> Vec<f32> {
        self.log_probabilities
            .iter()
            .map(|value| value.exp() as f32)
            .collect()
    }
}

/// The logits (in f64) of token id rows in evaluation mode, `batch_size` rows of similar length
/// (sorted) per forward pass, so little is padded; results in the order of `ids`. `type_ids`:
/// the rows' token types (pairs). `None` when `interrupt` is raised first.
pub fn logits(
    model: &EncoderClassifier,
    ids: &[Vec<u32>],
    type_ids: Option<&[Vec<u32>]>,
    pad_id: u32,
    batch_size: usize,
    interrupt: Option<&AtomicBool>,
) -> anyhow::Result<Option<Vec<Vec<f64>>>> {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&index| ids[index].len());
    let mut all = vec![Vec::new(); ids.len()];
    for chunk in order.chunks(batch_size.max(1)) {
        if interrupt.is_some_and(|flag| flag.load(Ordering::SeqCst)) {
            return Ok(None);
        }
        let rows: Vec<Vec<u32>> = chunk.iter().map(|&index| ids[index].clone()).collect();
        let types: Option<Vec<Vec<u32>>> =
            type_ids.map(|type_ids| chunk.iter().map(|&index| type_ids[index].clone()).collect());
        let batch = Batch::with_token_types(&rows, types.as_deref(), pad_id, model.device())?;
        let logits = model
            .forward(&batch, &mut Mode::Eval)?
            .to_dtype(DType::F64)?
            .to_device(&Device::Cpu)?
            .to_vec2::<f64>()?;
        for (&index, row) in chunk.iter().zip(logits) {
            all[index] = row;
        }
    }
    Ok(Some(all))
}

/// One row of logits as a single-label score: the argmax and the log-softmax, in f64.
pub fn softmax_scored(row: &[f64]) -> Scored {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let log_sum = row
        .iter()
        .map(|value| (value - max).exp())
        .sum::<f64>()
        .ln();
    Scored {
        class: argmax(row) as u32,
        log_probabilities: row.iter().map(|value| value - max - log_sum).collect(),
    }
}

/// A multi-label prediction from one row of logits: each class's sigmoid (computed in f64,
/// kept as the f32 that files show), and the classes whose sigmoid is at least `threshold`, in
/// class order, decided on that f32 so that a file's probabilities and sets always agree.
pub fn predicted_set(logits: &[f64], threshold: f64) -> (Vec<u32>, Vec<f32>) {
    let probabilities: Vec<f32> = logits.iter().map(|&x| sigmoid(x) as f32).collect();
    let classes = (0..probabilities.len() as u32)
        .filter(|&class| f64::from(probabilities[class as usize]) >= threshold)
        .collect();
    (classes, probabilities)
}

/// The logistic function, stable at both ends.
fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `-[y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))]`, stable.
fn binary_cross_entropy(x: f64, target: bool) -> f64 {
    let softplus = |z: f64| z.max(0.0) + (-z.abs()).exp().ln_1p();
    if target { softplus(-x) } else { softplus(x) }
}

/// A split evaluated: the figures, and each example's prediction (a class, or for multi-label
/// data a set of classes) and probabilities (softmax, or one sigmoid per class).
#[derive(Clone, Debug, PartialEq)]
pub struct SplitOutcome {
    pub evaluation: Evaluation,
    /// Single-label: each example's class (empty for multi-label data).
    pub predicted: Vec<u32>,
    /// Multi-label: each example's predicted classes (empty for single-label data).
    pub predicted_sets: Vec<Vec<u32>>,
    pub probabilities: Vec<Vec<f32>>,
}

/// Evaluates `split` (see [`logits`]): mean cross-entropy, figures, predictions; for multi-label
/// data (see [`predicted_set`]) the mean binary cross-entropy over every (example, class)
/// (unweighted), the sets at `threshold` and the multi-label figures.
pub fn evaluate(
    model: &EncoderClassifier,
    split: &TokenizedSplit,
    pad_id: u32,
    classes: usize,
    threshold: f64,
    interrupt: Option<&AtomicBool>,
) -> anyhow::Result<Option<SplitOutcome>> {
    let type_ids = (!split.type_ids.is_empty()).then_some(split.type_ids.as_slice());
    let Some(all) = logits(
        model,
        &split.ids,
        type_ids,
        pad_id,
        EVALUATION_BATCH,
        interrupt,
    )?
    else {
        return Ok(None);
    };
    if split.is_multi_label() {
        let mut loss_sum = 0.0;
        for (row, gold) in all.iter().zip(&split.label_sets) {
            for (class, &x) in row.iter().enumerate() {
                loss_sum += binary_cross_entropy(x, gold.contains(&(class as u32)));
            }
        }
        let loss = loss_sum / (all.len() * classes).max(1) as f64;
        let (predicted_sets, probabilities): (Vec<Vec<u32>>, Vec<Vec<f32>>) =
            all.iter().map(|row| predicted_set(row, threshold)).unzip();
        return Ok(Some(SplitOutcome {
            evaluation: Evaluation::multi_label(&split.label_sets, &predicted_sets, classes, loss),
            probabilities,
            predicted: Vec::new(),
            predicted_sets,
        }));
    }
    let scored: Vec<Scored> = all.iter().map(|row| softmax_scored(row)).collect();
    let loss_sum: f64 = scored
        .iter()
        .zip(&split.labels)
        .map(|(scored, &gold)| -scored.log_probabilities[gold as usize])
        .sum();
    let loss = if scored.is_empty() {
        0.0
    } else {
        loss_sum / scored.len() as f64
    };
    let predicted: Vec<u32> = scored.iter().map(|scored| scored.class).collect();
    Ok(Some(SplitOutcome {
        evaluation: Evaluation::new(&split.labels, &predicted, classes, loss),
        probabilities: scored.iter().map(Scored::probabilities).collect(),
        predicted,
        predicted_sets: Vec::new(),
    }))
}

/// The index of the largest value (the first of equals).
fn argmax<T: PartialOrd + Copy>(values: &[T]) -> usize {
    let mut best = 0;
    for (index, value) in values.iter().enumerate() {
        if *value > values[best] {
            best = index;
        }
    }
    best
}
