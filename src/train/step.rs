//! One optimizer step, as `bertlab run`, `bertlab bench` and `bertlab device-check` take it:
//! forward with dropout, (class-weighted, label-smoothed) cross-entropy, backward, gradient
//! accumulation over a group of batches, global-norm clipping, AdamW over the trainable
//! (unfrozen) parameters.

use candle_core::{DType, Tensor};

use crate::model::encoder::{Batch, EncoderClassifier, Mode};
use crate::model::layers;
use crate::plan::spec::ClassWeights;
use crate::support::random::SeededRandom;
use crate::tokenize::preprocess::TokenizedSplit;
use crate::train::optimizer::{self, AdamW};

/// Per-class loss weights: `n / (classes * count)` for `balanced` (0 for a class with no
/// training example).
pub fn class_weights(labels: &[u32], classes: usize, policy: ClassWeights) -> Option<Vec<f32>> {
    match policy {
        ClassWeights::None => None,
        ClassWeights::Balanced => {
            let mut counts = vec![0usize; classes];
            for &label in labels {
                counts[label as usize] += 1;
            }
            Some(
                counts
                    .iter()
                    .map(|&count| {
                        if count == 0 {
                            0.0
                        } else {
                            (labels.len() as f64 / (classes as f64 * count as f64)) as f32
                        }
                    })
                    .collect(),
            )
        }
    }
}

/// Multi-label `balanced` weights: each class's positive term weighed by its negatives /
/// positives in training (torch's `pos_weight`; 1 for a class with no positive example).
pub fn positive_weights(
    label_sets: &[Vec<u32>],
    classes: usize,
    policy: ClassWeights,
) -> Option<Vec<f32>> {
    match policy {
        ClassWeights::None => None,
        ClassWeights::Balanced => {
            let mut positives = vec![0usize; classes];
            for set in label_sets {
                for &class in set {
                    positives[class as usize] += 1;
                }
            }
            Some(
                positives
                    .iter()
                    .map(|&count| {
                        if count == 0 {
                            1.0
                        } else {
                            ((label_sets.len() - count) as f64 / count as f64) as f32
                        }
                    })
                    .collect(),
            )
        }
    }
}

/// 0/1 targets `[examples, classes]` of label sets, row by row.
pub fn multi_label_targets(sets: &[&[u32]], classes: usize) -> Vec<f32> {
    let mut targets = vec![0f32; sets.len() * classes];
    for (row, set) in sets.iter().enumerate() {
        for &class in *set {
            targets[row * classes + class as usize] = 1.0;
        }
    }
    targets
}

/// What one optimizer step reads besides the optimizer and the batches.
pub struct StepInputs<'a> {
    pub model: &'a EncoderClassifier,
    /// The examples the batches index into.
    pub split: &'a TokenizedSplit,
    pub pad_id: u32,
    /// Per-class weights of the cross-entropy; multi-label: the `pos_weight` of each class.
    pub class_weights: Option<&'a Tensor>,
    pub learning_rate: f64,
    pub max_grad_norm: f64,
    /// torch's `label_smoothing` (0: plain cross-entropy).
    pub label_smoothing: f64,
}

/// How one optimizer step went.
#[derive(Clone, Debug, PartialEq)]
pub struct StepOutcome {
    /// Each batch's (weighted) mean loss and its number of examples, in order.
    pub batch_losses: Vec<(f64, usize)>,
    /// The gradient norm before clipping.
    pub gradient_norm: f64,
    /// Why the step was not applied: a non-finite loss or gradient norm.
    pub divergence: Option<String>,
}

/// The examples `indices` of `split` as a batch: their ids padded to the longest, with their
/// token types when the split holds pairs.
pub fn batch_of(
    split: &TokenizedSplit,
    indices: &[usize],
    pad_id: u32,
    device: &candle_core::Device,
) -> candle_core::Result<Batch> {
    let rows: Vec<Vec<u32>> = indices
        .iter()
        .map(|&index| split.ids[index].clone())
        .collect();
    let types: Option<Vec<Vec<u32>>> = (!split.type_ids.is_empty()).then(|| {
        indices
            .iter()
            .map(|&index| split.type_ids[index].clone())
            .collect()
    });
    Batch::with_token_types(&rows, types.as_deref(), pad_id, device)
}

/// One optimizer step of training, as `bertlab run` takes it: every batch of `group` (indices
/// into `inputs.split`, padded to its longest row) forward with dropout drawn from `random`,
/// cross-entropy, backward (gradients of a group of several batches summed, each batch weighted
/// by its share of the group's examples), the global norm clipped, then AdamW at
/// `inputs.learning_rate`. A non-finite loss stops before any update; so does a non-finite norm.
pub fn optimizer_step(
    inputs: &StepInputs,
    optimizer: &mut AdamW,
    group: &[Vec<usize>],
    random: &mut SeededRandom,
) -> anyhow::Result<StepOutcome> {
    let model = inputs.model;
    let device = model.device();
    let group_examples: usize = group.iter().map(Vec::len).sum();
    let mut outcome = StepOutcome {
        batch_losses: Vec::new(),
        gradient_norm: 0.0,
        divergence: None,
    };
    let on_device = !device.is_cpu();
    layers::seed_device_generator(device, random)?;
    let mut gradients: Vec<Vec<f32>> = Vec::new();
    // One batch per step: the backward pass's tensors go straight to the in-place update.
    let mut gradient_tensors: Option<Vec<Tensor>> = None;
    for batch_indices in group {
        let batch = batch_of(inputs.split, batch_indices, inputs.pad_id, device)?;
        let logits = model.forward(&batch, &mut Mode::Train(random))?;
        let loss = if inputs.split.is_multi_label() {
            let sets: Vec<&[u32]> = batch_indices
                .iter()
                .map(|&index| inputs.split.label_sets[index].as_slice())
                .collect();
            let classes = logits.dim(1)?;
            let targets = Tensor::from_vec(
                multi_label_targets(&sets, classes),
                (sets.len(), classes),
                device,
            )?
            .to_dtype(logits.dtype())?;
            layers::binary_cross_entropy_with_logits(&logits, &targets, inputs.class_weights)?
        } else {
            let labels: Vec<u32> = batch_indices
                .iter()
                .map(|&index| inputs.split.labels[index])
                .collect();
            let labels = Tensor::new(labels.as_slice(), device)?;
            layers::cross_entropy_smoothed(
                &logits,
                &labels,
                inputs.class_weights,
                inputs.label_smoothing,
            )?
        };
        let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !value.is_finite() {
            outcome.divergence = Some(format!("the training loss is {value}"));
            return Ok(outcome);
        }
        outcome.batch_losses.push((value, batch_indices.len()));
        let share = batch_indices.len() as f64 / group_examples as f64;
        let scaled = if group.len() == 1 {
            loss
        } else {
            (loss * share)?
        };
        let grads = scaled.backward()?;
        // On a GPU the gradients stay there (summed over the group's batches as tensors).
        if group.len() == 1 || on_device {
            let tensors = model
                .trainable_parameters()
                .iter()
                .map(|(_, var)| match grads.get(var) {
                    Some(gradient) => gradient.to_dtype(DType::F32)?.contiguous(),
                    None => var.as_tensor().zeros_like(),
                })
                .collect::<candle_core::Result<Vec<Tensor>>>()?;
            gradient_tensors = Some(match gradient_tensors.take() {
                None => tensors,
                Some(sums) => sums
                    .iter()
                    .zip(&tensors)
                    .map(|(sum, tensor)| sum + tensor)
                    .collect::<candle_core::Result<Vec<Tensor>>>()?,
            });
            continue;
        }
        let first = gradients.is_empty();
        for (index, (_, var)) in model.trainable_parameters().iter().enumerate() {
            let values = match grads.get(var) {
                Some(gradient) => gradient
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
                None => vec![0.0; var.elem_count()],
            };
            if first {
                gradients.push(values);
            } else {
                for (sum, value) in gradients[index].iter_mut().zip(values) {
                    *sum += value;
                }
            }
        }
    }
    let in_place = match &gradient_tensors {
        Some(tensors) if on_device => Some(optimizer.step_on_device(
            model.trainable_parameters(),
            tensors,
            inputs.max_grad_norm,
            inputs.learning_rate,
        )?),
        Some(tensors) => optimizer.step_tensors(
            model.trainable_parameters(),
            tensors,
            inputs.max_grad_norm,
            inputs.learning_rate,
        )?,
        None => None,
    };
    let norm = match in_place {
        Some(norm) => norm,
        None => {
            if let Some(tensors) = gradient_tensors.take() {
                gradients = tensors
                    .iter()
                    .map(|tensor| tensor.flatten_all()?.to_vec1::<f32>())
                    .collect::<candle_core::Result<Vec<_>>>()?;
            }
            let norm = optimizer::clip_global_norm(&mut gradients, inputs.max_grad_norm);
            if norm.is_finite() {
                optimizer.step(
                    model.trainable_parameters(),
                    &gradients,
                    inputs.learning_rate,
                )?;
            }
            norm
        }
    };
    outcome.gradient_norm = norm;
    if !norm.is_finite() {
        outcome.divergence = Some(format!("the gradient norm is {norm}"));
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_multi_label_weights_are_negatives_over_positives() {
        let sets = [vec![0, 1], vec![0], vec![], vec![0]];
        assert_eq!(
            positive_weights(&sets, 3, ClassWeights::Balanced),
            Some(vec![1.0 / 3.0, 3.0, 1.0]),
            "3 of 4 have class 0, 1 of 4 class 1, none class 2 (weight 1)"
        );
        assert_eq!(positive_weights(&sets, 3, ClassWeights::None), None);
        let sets: Vec<&[u32]> = vec![&[0, 2], &[]];
        assert_eq!(
            multi_label_targets(&sets, 3),
            vec![1.0, 0.0, 1.0, 0.0, 0.0, 0.0]
        );
    }
}
