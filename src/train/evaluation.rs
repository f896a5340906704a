//! Scoring texts in evaluation mode and evaluating a split: log-probabilities in f64, the
//! predicted class (the first of equal logits), mean cross-entropy and the split's figures.

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

/// Scores token id rows in evaluation mode, `batch_size` rows of similar length (sorted) per
/// forward pass, so little is padded; results in the order of `ids`. `None` when `interrupt` is
/// raised first.
pub fn score(
    model: &EncoderClassifier,
    ids: &[Vec<u32>],
    pad_id: u32,
    batch_size: usize,
    interrupt: Option<&AtomicBool>,
) -> anyhow::Result<Option<Vec<Scored>>> {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&index| ids[index].len());
    let mut scored = vec![
        Scored {
            class: 0,
            log_probabilities: Vec::new()
        };
        ids.len()
    ];
    for chunk in order.chunks(batch_size.max(1)) {
        if interrupt.is_some_and(|flag| flag.load(Ordering::SeqCst)) {
            return Ok(None);
        }
        let rows: Vec<Vec<u32>> = chunk.iter().map(|&index| ids[index].clone()).collect();
        let batch = Batch::from_rows(&rows, pad_id, model.device())?;
        let logits = model
            .forward(&batch, &mut Mode::Eval)?
            .to_dtype(DType::F64)?
            .to_device(&Device::Cpu)?
            .to_vec2::<f64>()?;
        for (&index, row) in chunk.iter().zip(logits) {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let log_sum = row
                .iter()
                .map(|value| (value - max).exp())
                .sum::<f64>()
                .ln();
            scored[index] = Scored {
                class: argmax(&row) as u32,
                log_probabilities: row.iter().map(|value| value - max - log_sum).collect(),
            };
        }
    }
    Ok(Some(scored))
}

/// A split evaluated: the figures, and each example's predicted class and probabilities.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitOutcome {
    pub evaluation: Evaluation,
    pub predicted: Vec<u32>,
    pub probabilities: Vec<Vec<f32>>,
}

/// Evaluates `split` (see [`score`]): mean cross-entropy, figures, predictions.
pub fn evaluate(
    model: &EncoderClassifier,
    split: &TokenizedSplit,
    pad_id: u32,
    classes: usize,
    interrupt: Option<&AtomicBool>,
) -> anyhow::Result<Option<SplitOutcome>> {
    let Some(scored) = score(model, &split.ids, pad_id, EVALUATION_BATCH, interrupt)? else {
        return Ok(None);
    };
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
