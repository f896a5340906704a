//! `bertlab device-check`: whether a device (a GPU) computes what the CPU computes, on a small
//! model, before anyone trusts a sweep to it. The CPU's arithmetic is the reference: its
//! gradients are proven against finite differences by the test suite.
//!
//! Checks, each against a stated tolerance:
//! - f64 and f32 (fp32 products): logits and every trainable tensor's gradient on the device
//!   against the CPU (relative error of the whole tensor), and no gradient that is zero on the
//!   device where the CPU's is not;
//! - bf16 products (f32 weights): logits and gradient cosines against the CPU's fp32;
//! - optimizer: a few full training steps (cross-entropy, backward, clipping, AdamW) on both, the
//!   losses and the parameters after them compared;
//! - dropout on the device: the kept share and scale, the same mask again for the same seed, a
//!   different one for another seed.
//!
//! Dropout is off in the gradient checks (the CPU and a GPU draw masks from different
//! generators). The attention's key bias is left out of the gradient comparisons: its true
//! gradient is zero (softmax ignores a constant added to a row), so both devices compute rounding
//! noise there.

use std::path::Path;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};

use crate::model::DropoutRates;
use crate::model::encoder::{Batch, EncoderClassifier, Mode};
use crate::model::{checkpoint, layers};
use crate::support::random::SeededRandom;
use crate::tokenize::preprocess::TokenizedSplit;
use crate::train::device::ResolvedDevice;
use crate::train::optimizer::AdamW;
use crate::train::step::{self, StepInputs};

/// One measured figure and its bound.
#[derive(Clone, Debug)]
pub struct CheckLine {
    pub name: String,
    pub measured: f64,
    /// Passing means `measured <= bound` (or `>=` when `at_least`).
    pub bound: f64,
    pub at_least: bool,
}

impl CheckLine {
    pub fn passed(&self) -> bool {
        if self.at_least {
            self.measured >= self.bound
        } else {
            self.measured <= self.bound
        }
    }
}

const CLASSES: usize = 3;
const SEED: u64 = 7;

/// Token rows of different lengths (so padding is exercised), ids below the vocabulary size.
/// Rows of random token ids other than the padding id `pad`.
fn check_rows(vocabulary: usize, pad: u32) -> Vec<Vec<u32>> {
    let mut random = SeededRandom::new(SEED, 11);
    [7usize, 12, 4, 9, 12, 6]
        .iter()
        .map(|&length| {
            (0..length)
                .map(|_| {
                    let id = random.below(vocabulary as u64 - 1) as u32;
                    if id >= pad { id + 1 } else { id }
                })
                .collect()
        })
        .collect()
}

fn load(
    model: &Path,
    dtype: DType,
    precision: layers::Precision,
    device: &Device,
) -> anyhow::Result<EncoderClassifier> {
    let (mut classifier, _) =
        checkpoint::load_classifier(model, Some(CLASSES), SEED, dtype, device)?;
    classifier.set_dropout(DropoutRates {
        hidden: 0.0,
        attention: 0.0,
        classifier: 0.0,
    })?;
    classifier.precision = precision;
    Ok(classifier)
}

fn values(tensor: &Tensor) -> anyhow::Result<Vec<f64>> {
    Ok(tensor
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?)
}

fn norm(values: &[f64]) -> f64 {
    values.iter().map(|v| v * v).sum::<f64>().sqrt()
}

fn relative_error(actual: &[f64], expected: &[f64]) -> f64 {
    let difference: Vec<f64> = actual.iter().zip(expected).map(|(a, e)| a - e).collect();
    norm(&difference) / norm(expected).max(1e-30)
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    dot / (norm(a) * norm(b)).max(1e-30)
}

/// Logits and gradients (in parameter order) of the check batch's loss.
fn logits_and_gradients(model: &EncoderClassifier) -> anyhow::Result<(Vec<f64>, Vec<Vec<f64>>)> {
    let device = model.device();
    let pad = model.config().pad_token_id;
    let batch = Batch::from_rows(&check_rows(model.config().vocab_size, pad), pad, device)?;
    let labels: Vec<u32> = (0..6).map(|row| row % CLASSES as u32).collect();
    let labels = Tensor::new(labels.as_slice(), device)?;
    let mut random = SeededRandom::new(SEED, 1);
    let logits = model.forward(&batch, &mut Mode::Train(&mut random))?;
    let loss = layers::cross_entropy(&logits, &labels, None)?;
    let gradients = loss.backward()?;
    let per_tensor = model
        .parameters()
        .iter()
        .map(|(name, var)| {
            match gradients.get(var) {
                Some(gradient) => values(gradient),
                None => Ok(vec![0.0; var.elem_count()]),
            }
            .with_context(|| format!("the gradient of {name}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((values(&logits)?, per_tensor))
}

/// The gradient comparison of one arithmetic; `bf16` compares cosines against the CPU's fp32.
fn gradient_checks(
    model: &Path,
    device: &ResolvedDevice,
    dtype: DType,
    bf16: bool,
    lines: &mut Vec<CheckLine>,
) -> anyhow::Result<()> {
    let precision = if bf16 {
        layers::Precision::Bf16
    } else {
        layers::Precision::Fp32
    };
    let reference = load(model, dtype, layers::Precision::Fp32, &Device::Cpu)?;
    let tested = load(model, dtype, precision, &device.device)?;
    let (reference_logits, reference_gradients) = logits_and_gradients(&reference)?;
    let (logits, gradients) = logits_and_gradients(&tested)?;
    let label = if bf16 {
        "bf16 products".to_string()
    } else {
        format!("{dtype:?}").to_lowercase()
    };
    let logit_error = logits
        .iter()
        .zip(&reference_logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let (logit_bound, gradient_bound) = match (dtype, bf16) {
        (_, true) => (5e-2, 0.99),
        (DType::F64, _) => (1e-10, 1e-8),
        _ => (1e-4, 1e-3),
    };
    lines.push(CheckLine {
        name: format!("{label}: largest logit difference"),
        measured: logit_error,
        bound: logit_bound,
        at_least: false,
    });
    let mut worst_error: f64 = 0.0;
    let mut worst_cosine: f64 = 1.0;
    let mut lost = 0;
    let names = reference.parameters().iter().map(|(name, _)| name);
    for ((actual, expected), name) in gradients.iter().zip(&reference_gradients).zip(names) {
        if reference.is_attention_key_bias(name) {
            continue;
        }
        if norm(expected) > 0.0 && norm(actual) == 0.0 {
            lost += 1;
        }
        if norm(expected) > 1e-12 {
            worst_error = worst_error.max(relative_error(actual, expected));
            worst_cosine = worst_cosine.min(cosine(actual, expected));
        }
    }
    lines.push(CheckLine {
        name: format!("{label}: trainable tensors with a zero gradient (CPU: non-zero)"),
        measured: lost as f64,
        bound: 0.0,
        at_least: false,
    });
    lines.push(if bf16 {
        CheckLine {
            name: format!("{label}: smallest gradient cosine against the CPU's fp32"),
            measured: worst_cosine,
            bound: gradient_bound,
            at_least: true,
        }
    } else {
        CheckLine {
            name: format!("{label}: largest relative gradient error of a tensor"),
            measured: worst_error,
            bound: gradient_bound,
            at_least: false,
        }
    });
    Ok(())
}

/// Three training steps (no dropout) on the CPU and on the device: losses and parameters.
fn optimizer_checks(
    model: &Path,
    device: &ResolvedDevice,
    lines: &mut Vec<CheckLine>,
) -> anyhow::Result<()> {
    let run_steps = |device: &Device| -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
        let model = load(model, DType::F32, layers::Precision::Fp32, device)?;
        let rows = check_rows(model.config().vocab_size, model.config().pad_token_id);
        let split = TokenizedSplit {
            texts: vec![String::new(); rows.len()],
            labels: (0..rows.len() as u32)
                .map(|row| row % CLASSES as u32)
                .collect(),
            rows: (1..=rows.len()).collect(),
            ids: rows,
            ..TokenizedSplit::default()
        };
        let mut optimizer = AdamW::new(model.parameters(), 0.01);
        let mut losses = Vec::new();
        for step in 0..3u64 {
            let inputs = StepInputs {
                model: &model,
                split: &split,
                pad_id: model.config().pad_token_id,
                class_weights: None,
                learning_rate: 1e-3,
                max_grad_norm: 1.0,
                label_smoothing: 0.0,
            };
            let mut random = SeededRandom::for_dropout(SEED, step);
            let outcome = step::optimizer_step(
                &inputs,
                &mut optimizer,
                &[(0..split.ids.len()).collect()],
                &mut random,
            )?;
            losses.push(outcome.batch_losses[0].0);
        }
        let mut parameters = Vec::new();
        for (name, var) in model.parameters() {
            // Its gradient is rounding noise on both devices, which AdamW scales up to full steps.
            if !model.is_attention_key_bias(name) {
                parameters.extend(values(var.as_tensor())?);
            }
        }
        Ok((losses, parameters))
    };
    let (reference_losses, reference_parameters) = run_steps(&Device::Cpu)?;
    let (losses, parameters) = run_steps(&device.device)?;
    let loss_error = losses
        .iter()
        .zip(&reference_losses)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1e-12))
        .fold(0.0, f64::max);
    lines.push(CheckLine {
        name: "3 AdamW steps (f32): largest relative loss difference".into(),
        measured: loss_error,
        bound: 1e-4,
        at_least: false,
    });
    let parameter_error = parameters
        .iter()
        .zip(&reference_parameters)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    lines.push(CheckLine {
        name: "3 AdamW steps (f32): largest parameter difference (key biases aside)".into(),
        measured: parameter_error,
        bound: 1e-4,
        at_least: false,
    });
    Ok(())
}

/// Dropout masks drawn on the device: kept share, scale, and repeatability per seed.
fn dropout_checks(device: &ResolvedDevice, lines: &mut Vec<CheckLine>) -> anyhow::Result<()> {
    let p = 0.1;
    let ones = Tensor::ones((1000, 1000), DType::F32, &device.device)?;
    let draw = |seed: u64| -> anyhow::Result<Vec<f64>> {
        let mut random = SeededRandom::for_dropout(seed, 0);
        layers::seed_device_generator(&device.device, &mut random)?;
        values(&layers::dropout(&ones, p, &mut random)?)
    };
    let first = draw(1)?;
    let again = draw(1)?;
    let other = draw(2)?;
    let kept = first.iter().filter(|&&v| v != 0.0).count() as f64 / first.len() as f64;
    lines.push(CheckLine {
        name: "dropout 0.1: kept share's distance from 0.9 (10^6 draws)".into(),
        measured: (kept - (1.0 - p)).abs(),
        bound: 3e-3,
        at_least: false,
    });
    let scale_error = first
        .iter()
        .filter(|&&v| v != 0.0)
        .map(|v| (v - 1.0 / (1.0 - p)).abs())
        .fold(0.0, f64::max);
    lines.push(CheckLine {
        name: "dropout 0.1: largest error of the kept values' scale 1/0.9".into(),
        measured: scale_error,
        bound: 1e-6,
        at_least: false,
    });
    let same = first.iter().zip(&again).filter(|(a, b)| a != b).count();
    lines.push(CheckLine {
        name: "dropout: mask elements that differ for the same seed".into(),
        measured: same as f64,
        bound: 0.0,
        at_least: false,
    });
    let differ = first.iter().zip(&other).filter(|(a, b)| a != b).count() as f64;
    lines.push(CheckLine {
        name: "dropout: share of mask elements that differ for another seed".into(),
        measured: differ / first.len() as f64,
        bound: 0.1,
        at_least: true,
    });
    Ok(())
}

/// Every check of the module documentation for `device`, with the CPU as the reference;
/// `model` is a small BERT directory (the test fixture `tests/fixtures/tiny-bert`).
pub fn check_device(model: &Path, device: &ResolvedDevice) -> anyhow::Result<Vec<CheckLine>> {
    let mut lines = Vec::new();
    gradient_checks(model, device, DType::F64, false, &mut lines)?;
    gradient_checks(model, device, DType::F32, false, &mut lines)?;
    if !device.device.is_cpu() || crate::model::bf16::available() {
        gradient_checks(model, device, DType::F32, true, &mut lines)?;
    }
    optimizer_checks(model, device, &mut lines)?;
    dropout_checks(device, &mut lines)?;
    Ok(lines)
}

/// The checks as an aligned table, one line each, and a verdict.
pub fn report_text(device: &str, lines: &[CheckLine]) -> String {
    let mut text = format!("device check: {device} against the CPU\n");
    for line in lines {
        text.push_str(&format!(
            "{:<4} {:<72} {:>12.3e} {} {:.1e}\n",
            if line.passed() { "ok" } else { "FAIL" },
            line.name,
            line.measured,
            if line.at_least { ">=" } else { "<=" },
            line.bound
        ));
    }
    let failed = lines.iter().filter(|line| !line.passed()).count();
    text.push_str(&if failed == 0 {
        format!("all {} checks passed\n", lines.len())
    } else {
        format!("{failed} of {} checks FAILED\n", lines.len())
    });
    text
}
