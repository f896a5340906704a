//! Training one run, from its planned settings to a finished run directory: the data (through
//! the preprocessing cache), the model, the loop (seeded shuffling, gradient accumulation,
//! clipping, AdamW on a linear warmup/decay schedule, class weights), validation after every
//! epoch, the kept (best) epoch, the test split evaluated once with it, and the result files.
//!
//! Checkpoints make a run resumable bit for bit: `checkpoint/state.safetensors` holds the
//! weights, the AdamW moments and, in its metadata, where the loop stands (epoch, batch, step,
//! the epoch's loss sums, the metric history). It is written atomically after every epoch, every
//! `CHECKPOINT_INTERVAL` of training, and when the run is interrupted. Everything random is a
//! pure function of the seed and the position (shuffling: the epoch; dropout: the optimizer
//! step), so a resumed run draws what an uninterrupted run would have drawn.

pub mod bench;
pub mod device;
pub mod device_check;
pub mod optimizer;
pub mod predict;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::metrics::{self, Evaluation};
use crate::model::bert::{Batch, BertClassifier, DropoutRates, LoadReport, Mode};
use crate::model::checkpoint;
use crate::model::layers;
use crate::plan::PlannedRun;
use crate::plan::spec::{ClassWeights, Precision, SelectionMetric};
use crate::store::run_files::{self, EpochRow, Prediction};
use crate::support::atomic_file;
use crate::support::progress::{Progress, StepStatus};
use crate::support::random::SeededRandom;
use crate::tokenize::preprocess::{self, TokenizedData, TokenizedSplit};
use crate::tokenize::tokenizer;
use optimizer::AdamW;

/// Texts per forward pass when evaluating.
pub const EVALUATION_BATCH: usize = 64;
/// The longest stretch of training between two checkpoints.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(15 * 60);
const STATE_FILE: &str = "state.safetensors";
const BEST_FILE: &str = "best.safetensors";
const STATE_KEY: &str = "bertlab_training_state";
const STATE_VERSION: u32 = 1;
/// Test hook: abort the process (as SIGKILL would stop it, with no cleanup) right after this
/// optimizer step.
pub const ABORT_AFTER_STEP_VARIABLE: &str = "BERTLAB_TEST_ABORT_AFTER_STEP";

/// What the caller provides besides the run.
pub struct TrainOptions<'a> {
    /// The preprocessing cache (none: no cache).
    pub cache_folder: Option<PathBuf>,
    /// Set by SIGINT/SIGTERM: checkpoint and stop at the next step.
    pub interrupt: &'a AtomicBool,
    /// The experiment file's text, copied into the run directory.
    pub experiment_text: &'a str,
    /// Where to train (the sweep resolves `train.device` or its `--devices` slot).
    pub device: &'a Device,
}

/// How a run's figures ended up (`results.json` in its directory).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// 1-based epoch whose weights the run keeps.
    pub best_epoch: usize,
    pub epochs_run: usize,
    pub stopped_early: bool,
    pub validation: Evaluation,
    pub test: Option<Evaluation>,
    pub train_seconds: f64,
    pub train_samples_per_second: f64,
}

/// How [`train_run`] ended without an error.
#[derive(Clone, Debug, PartialEq)]
pub enum TrainEnd {
    Done(RunResult),
    /// Stopped by a signal after writing a checkpoint; `position` says where.
    Interrupted {
        position: String,
    },
}

/// Where the loop stands: the metadata of a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct TrainingState {
    version: u32,
    hash: String,
    /// 0-based epoch in progress (`epochs` when training is over).
    epoch: usize,
    /// Batches of that epoch already trained (a multiple of `gradient_accumulation`, or all).
    next_batch: usize,
    /// Optimizer steps taken.
    steps: u64,
    /// Sum of (weighted) training losses and examples of the epoch so far.
    loss_sum: f64,
    loss_examples: usize,
    /// Training seconds of the epoch so far.
    epoch_seconds: f64,
    /// The learning rate of the last step.
    learning_rate: f64,
    history: Vec<EpochRow>,
    /// Early stopping fired.
    stopped: bool,
}

impl TrainingState {
    fn new(hash: &str) -> TrainingState {
        TrainingState {
            version: STATE_VERSION,
            hash: hash.to_string(),
            epoch: 0,
            next_batch: 0,
            steps: 0,
            loss_sum: 0.0,
            loss_examples: 0,
            epoch_seconds: 0.0,
            learning_rate: 0.0,
            history: Vec::new(),
            stopped: false,
        }
    }
}

/// The value of the selection metric in an epoch row.
fn selection_value(row: &EpochRow, metric: SelectionMetric) -> f64 {
    match metric {
        SelectionMetric::MacroF1 => row.validation_macro_f1,
        SelectionMetric::Accuracy => row.validation_accuracy,
        SelectionMetric::Loss => row.validation_loss,
    }
}

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

fn checkpoint_folder(directory: &Path) -> PathBuf {
    directory.join(run_files::CHECKPOINT_DIRECTORY)
}

/// Serializes named tensors (f32) with optional metadata and writes them atomically.
fn write_tensors(
    path: &Path,
    tensors: Vec<(String, Tensor)>,
    metadata: Option<HashMap<String, String>>,
) -> anyhow::Result<()> {
    let bytes = safetensors::serialize(tensors, metadata)
        .with_context(|| format!("cannot serialize {}", path.display()))?;
    atomic_file::write(path, &bytes)
}

fn model_tensors(model: &BertClassifier) -> anyhow::Result<Vec<(String, Tensor)>> {
    model
        .parameters()
        .iter()
        .map(|(name, var)| {
            Ok((
                name.clone(),
                var.as_tensor()
                    .to_dtype(DType::F32)?
                    .to_device(&Device::Cpu)?,
            ))
        })
        .collect()
}

fn save_state(
    directory: &Path,
    model: &BertClassifier,
    optimizer: &AdamW,
    state: &TrainingState,
) -> anyhow::Result<()> {
    let folder = checkpoint_folder(directory);
    std::fs::create_dir_all(&folder)
        .with_context(|| format!("cannot create {}", folder.display()))?;
    let mut tensors = model_tensors(model)?;
    tensors.extend(optimizer.state_tensors()?);
    let metadata = HashMap::from([(STATE_KEY.to_string(), serde_json::to_string(state)?)]);
    write_tensors(&folder.join(STATE_FILE), tensors, Some(metadata))
}

/// Reads a checkpoint's tensors and state, if the run has one.
fn load_state(
    directory: &Path,
) -> anyhow::Result<Option<(HashMap<String, Tensor>, TrainingState)>> {
    let path = checkpoint_folder(directory).join(STATE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    };
    let hint = || {
        format!(
            "{} is damaged; delete the folder {} to train the run from the start",
            path.display(),
            checkpoint_folder(directory).display()
        )
    };
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).with_context(hint)?;
    let text = header
        .metadata()
        .as_ref()
        .and_then(|metadata| metadata.get(STATE_KEY))
        .with_context(hint)?;
    let state: TrainingState = serde_json::from_str(text).with_context(hint)?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).with_context(hint)?;
    Ok(Some((tensors, state)))
}

fn set_parameters(model: &BertClassifier, tensors: &HashMap<String, Tensor>) -> anyhow::Result<()> {
    for (name, var) in model.parameters() {
        let tensor = tensors
            .get(name)
            .with_context(|| format!("the checkpoint lacks {name}"))?;
        var.set(&tensor.to_dtype(var.dtype())?.to_device(var.device())?)
            .with_context(|| format!("cannot restore {name}"))?;
    }
    Ok(())
}

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
    model: &BertClassifier,
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
    model: &BertClassifier,
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

/// Removes a finished run's checkpoint (called once the run is recorded `done`).
pub fn remove_checkpoint(directory: &Path) -> anyhow::Result<()> {
    let folder = checkpoint_folder(directory);
    match std::fs::remove_dir_all(&folder) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => {
            Err(error).with_context(|| format!("cannot remove the checkpoint {}", folder.display()))
        }
    }
}

/// Reads the abort-after-step test hook once.
fn abort_after_step() -> Option<u64> {
    std::env::var(ABORT_AFTER_STEP_VARIABLE)
        .ok()
        .and_then(|value| value.parse().ok())
}

/// The run's model as training starts it: f32, a classification head of `classes` outputs
/// initialised from the run's seed (where the checkpoint has none), the run's dropout rates.
pub fn load_training_model(
    run: &PlannedRun,
    classes: usize,
    device: &Device,
) -> anyhow::Result<(BertClassifier, LoadReport)> {
    let (mut model, report) = checkpoint::load_classifier(
        &run.settings.model_path,
        Some(classes),
        run.spec.train.seed,
        DType::F32,
        device,
    )?;
    model.precision = model_precision(run.spec.train.precision, device)?;
    let options = &run.spec.model.options;
    model.set_dropout(DropoutRates {
        hidden: options.hidden_dropout,
        attention: options.attention_dropout,
        classifier: options.classifier_dropout,
    })?;
    Ok((model, report))
}

/// The model's matrix-product arithmetic for a run's `precision`. bf16 on the CPU runs on
/// AVX512-BF16 instructions: a CPU without them is an error, not a silent fallback.
pub fn model_precision(precision: Precision, device: &Device) -> anyhow::Result<layers::Precision> {
    match precision {
        Precision::Fp32 => Ok(layers::Precision::Fp32),
        Precision::Bf16 if device.is_cpu() && !crate::model::bf16::available() => bail!(
            "precision = \"bf16\" needs a CPU with AVX512-BF16 (bertlab's bf16 matrix products use it) and this one lacks it: use precision = \"fp32\" on this machine"
        ),
        Precision::Bf16 => Ok(layers::Precision::Bf16),
    }
}

/// What one optimizer step reads besides the optimizer and the batches.
pub struct StepInputs<'a> {
    pub model: &'a BertClassifier,
    /// The examples the batches index into.
    pub split: &'a TokenizedSplit,
    pub pad_id: u32,
    pub class_weights: Option<&'a Tensor>,
    pub learning_rate: f64,
    pub max_grad_norm: f64,
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
        let rows: Vec<Vec<u32>> = batch_indices
            .iter()
            .map(|&index| inputs.split.ids[index].clone())
            .collect();
        let labels: Vec<u32> = batch_indices
            .iter()
            .map(|&index| inputs.split.labels[index])
            .collect();
        let batch = Batch::from_rows(&rows, inputs.pad_id, device)?;
        let labels = Tensor::new(labels.as_slice(), device)?;
        let logits = model.forward(&batch, &mut Mode::Train(random))?;
        let loss = layers::cross_entropy(&logits, &labels, inputs.class_weights)?;
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
                .parameters()
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
        for (index, (_, var)) in model.parameters().iter().enumerate() {
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
            model.parameters(),
            tensors,
            inputs.max_grad_norm,
            inputs.learning_rate,
        )?),
        Some(tensors) => optimizer.step_tensors(
            model.parameters(),
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
                optimizer.step(model.parameters(), &gradients, inputs.learning_rate)?;
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

/// Trains one run into `directory` (which holds its `spec.json` and lock), resuming from its
/// checkpoint if there is one. A data error, a diverged loss or an I/O error is an `Err`, which
/// the caller records as the run's failure.
pub fn train_run(
    run: &PlannedRun,
    directory: &Path,
    options: &TrainOptions,
    progress: &mut Progress,
) -> anyhow::Result<TrainEnd> {
    let settings = &run.settings;
    let train_settings = &run.spec.train;
    atomic_file::write(
        &directory.join(run_files::EXPERIMENT_COPY_FILE),
        options.experiment_text.as_bytes(),
    )?;

    let started = Instant::now();
    let (data, cache_use) = preprocess::preprocess_cached(run, options.cache_folder.as_deref())?;
    let mut report = serde_json::to_vec_pretty(&serde_json::json!({
        "report": data.report,
        "token_lengths": data.token_lengths,
    }))?;
    report.push(b'\n');
    atomic_file::write(&directory.join(run_files::DATA_REPORT_FILE), &report)?;
    progress.event(&format!(
        "data: {} train / {} validation / {} test examples, {} classes ({:.1} s, cache {})",
        data.train.ids.len(),
        data.validation.ids.len(),
        data.test.ids.len(),
        data.classes.len(),
        started.elapsed().as_secs_f64(),
        match cache_use {
            preprocess::CacheUse::Hit => "hit",
            preprocess::CacheUse::Miss => "miss",
            preprocess::CacheUse::Off => "off",
        }
    ));
    if data.train.ids.is_empty() {
        bail!(
            "the training split is empty: no example is left after the data steps (see data_report.json)"
        );
    }
    if data.classes.len() < 2 {
        bail!(
            "the data has {} class{}: a classifier needs at least 2",
            data.classes.len(),
            if data.classes.len() == 1 { "" } else { "es" }
        );
    }

    let device = options.device.clone();
    let (model, load_report) = load_training_model(run, data.classes.len(), &device)?;
    for warning in &load_report.warnings {
        progress.event(&format!("model: {warning}"));
    }
    let pad_id = tokenizer::load(&settings.model_path)?.pad_id;
    let weights = class_weights(
        &data.train.labels,
        data.classes.len(),
        train_settings.class_weights,
    )
    .map(|weights| Tensor::new(weights.as_slice(), &device))
    .transpose()?;

    let mut optimizer = AdamW::new(model.parameters(), train_settings.weight_decay);
    let mut state = TrainingState::new(run.hash.as_str());
    if let Some((tensors, saved)) = load_state(directory)? {
        if saved.hash != run.hash.as_str() || saved.version != STATE_VERSION {
            bail!(
                "the checkpoint in {} belongs to another run or bertlab version; delete it to start over",
                checkpoint_folder(directory).display()
            );
        }
        set_parameters(&model, &tensors)?;
        optimizer.restore(&tensors, saved.steps)?;
        progress.event(&format!(
            "resuming at epoch {} batch {} (step {})",
            saved.epoch + 1,
            saved.next_batch,
            saved.steps
        ));
        state = saved;
    } else {
        progress.event("training from the start");
    }

    let lengths: Vec<usize> = data.train.ids.iter().map(Vec::len).collect();
    let batch_size = train_settings.batch_size;
    let accumulation = train_settings.gradient_accumulation;
    let batches_per_epoch = lengths.len().div_ceil(batch_size);
    let steps_per_epoch = batches_per_epoch.div_ceil(accumulation) as u64;
    let epochs = train_settings.epochs;
    let total_steps = steps_per_epoch * epochs as u64;
    let warmup = optimizer::warmup_steps(total_steps, train_settings.warmup_ratio);
    let metric = train_settings.selection_metric;
    let abort_after = abort_after_step();
    progress.start_steps(state.steps, total_steps);
    let mut last_checkpoint = Instant::now();
    // The last validation in memory (epoch, figures, probabilities): when it is the kept epoch,
    // `finish` needs no second pass.
    let mut last_validation: Option<(usize, SplitOutcome)> = None;
    if options.interrupt.load(Ordering::SeqCst) {
        return Ok(TrainEnd::Interrupted {
            position: format!(
                "epoch {} (step {}), before training",
                state.epoch + 1,
                state.steps
            ),
        });
    }

    while state.epoch < epochs && !state.stopped {
        let epoch = state.epoch;
        let batches = tokenizer::epoch_batches(
            &lengths,
            batch_size,
            train_settings.seed,
            epoch as u64,
            train_settings.length_bucketing,
        );
        let mut segment_start = Instant::now();
        let mut segment_seconds_before = state.epoch_seconds;
        while state.next_batch < batches.len() {
            let group_end = (state.next_batch + accumulation).min(batches.len());
            let group = &batches[state.next_batch..group_end];
            let mut random = SeededRandom::for_dropout(train_settings.seed, state.steps);
            let learning_rate = optimizer::learning_rate_at(
                state.steps,
                total_steps,
                warmup,
                train_settings.learning_rate,
            );
            let outcome = optimizer_step(
                &StepInputs {
                    model: &model,
                    split: &data.train,
                    pad_id,
                    class_weights: weights.as_ref(),
                    learning_rate,
                    max_grad_norm: train_settings.max_grad_norm,
                },
                &mut optimizer,
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
                epochs,
                steps: state.steps,
                total_steps,
                loss: state.loss_sum / state.loss_examples.max(1) as f64,
                samples_per_second: state.loss_examples as f64 / seconds.max(1e-9),
            });
            if abort_after == Some(state.steps) {
                std::process::abort();
            }
            let interrupted = options.interrupt.load(Ordering::SeqCst);
            if interrupted || last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL {
                state.epoch_seconds = seconds;
                save_state(directory, &model, &optimizer, &state)?;
                last_checkpoint = Instant::now();
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
                    return Ok(TrainEnd::Interrupted { position });
                }
            }
        }
        state.epoch_seconds = segment_seconds_before + segment_start.elapsed().as_secs_f64();

        let Some(outcome) = evaluate(
            &model,
            &data.validation,
            pad_id,
            data.classes.len(),
            Some(options.interrupt),
        )?
        else {
            save_state(directory, &model, &optimizer, &state)?;
            let position = format!("epoch {} validation (step {})", epoch + 1, state.steps);
            progress.event(&format!("interrupted: checkpoint written at {position}"));
            return Ok(TrainEnd::Interrupted { position });
        };
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
            learning_rate: state.learning_rate,
            steps: state.steps,
            epoch_seconds: state.epoch_seconds,
            train_samples_per_second: state.loss_examples as f64 / state.epoch_seconds.max(1e-9),
        };
        state.history.push(row.clone());
        let history: Vec<f64> = state
            .history
            .iter()
            .map(|row| selection_value(row, metric))
            .collect();
        let decision = metrics::after_epoch(
            &history,
            metric.higher_is_better(),
            train_settings.early_stopping_patience,
        );
        if decision.keep {
            let folder = checkpoint_folder(directory);
            std::fs::create_dir_all(&folder)
                .with_context(|| format!("cannot create {}", folder.display()))?;
            write_tensors(&folder.join(BEST_FILE), model_tensors(&model)?, None)?;
        }
        atomic_file::write(
            &directory.join(run_files::METRICS_FILE),
            &run_files::metrics_csv(&state.history),
        )?;
        progress.event(&format!(
            "epoch {}/{}: train loss {:.4}, validation loss {:.4}, accuracy {:.4}, macro-F1 {:.4}{}, {:.1} samples/s",
            epoch + 1,
            epochs,
            row.train_loss,
            row.validation_loss,
            row.validation_accuracy,
            row.validation_macro_f1,
            if decision.keep { " (best so far)" } else { "" },
            row.train_samples_per_second
        ));
        state.epoch += 1;
        state.next_batch = 0;
        state.loss_sum = 0.0;
        state.loss_examples = 0;
        state.epoch_seconds = 0.0;
        if decision.stop && state.epoch < epochs {
            state.stopped = true;
            progress.event(&format!(
                "early stopping: {} epochs without improvement of validation {}",
                train_settings.early_stopping_patience, metric
            ));
        }
        save_state(directory, &model, &optimizer, &state)?;
        last_checkpoint = Instant::now();
        last_validation = Some((epoch + 1, outcome));
    }

    finish(
        run,
        directory,
        &model,
        &data,
        pad_id,
        &state,
        last_validation,
        progress,
    )
}

/// Loads the kept epoch's weights, evaluates validation and test with them, and writes the result
/// files and the model. `last_validation` is the last epoch's validation, if this process ran it.
#[allow(clippy::too_many_arguments)]
fn finish(
    run: &PlannedRun,
    directory: &Path,
    model: &BertClassifier,
    data: &TokenizedData,
    pad_id: u32,
    state: &TrainingState,
    last_validation: Option<(usize, SplitOutcome)>,
    progress: &mut Progress,
) -> anyhow::Result<TrainEnd> {
    let metric = run.spec.train.selection_metric;
    let history: Vec<f64> = state
        .history
        .iter()
        .map(|row| selection_value(row, metric))
        .collect();
    let best = metrics::best_index(&history, metric.higher_is_better()).unwrap_or(0);
    let classes = data.classes.len();
    let validation = match last_validation {
        // The model holds the kept epoch's weights already.
        Some((epoch, outcome)) if epoch == best + 1 => outcome,
        _ => {
            let best_path = checkpoint_folder(directory).join(BEST_FILE);
            let tensors = candle_core::safetensors::load(&best_path, &Device::Cpu)
                .with_context(|| format!("cannot read the kept weights {}", best_path.display()))?;
            set_parameters(model, &tensors)?;
            evaluate(model, &data.validation, pad_id, classes, None)?.expect("no interrupt flag")
        }
    };
    let test = if data.test.ids.is_empty() {
        None
    } else {
        Some(evaluate(model, &data.test, pad_id, classes, None)?.expect("no interrupt flag"))
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
            rows.push(Prediction {
                split: split_name,
                row: split.rows[index],
                text: &split.texts[index],
                gold: split.labels[index],
                predicted: outcome.predicted[index],
                probabilities,
            });
        }
    }
    atomic_file::write(
        &directory.join(run_files::PREDICTIONS_FILE),
        &run_files::predictions_csv(&data.classes, &rows),
    )?;
    checkpoint::save_classifier(
        model,
        &data.classes,
        &run.settings.model_path,
        &directory.join(run_files::MODEL_DIRECTORY),
    )?;
    let train_seconds: f64 = state.history.iter().map(|row| row.epoch_seconds).sum();
    let examples = data.train.ids.len() * state.history.len();
    let result = RunResult {
        best_epoch: best + 1,
        epochs_run: state.history.len(),
        stopped_early: state.stopped,
        validation: validation.evaluation,
        test: test.map(|outcome| outcome.evaluation),
        train_seconds,
        train_samples_per_second: examples as f64 / train_seconds.max(1e-9),
    };
    let mut line = format!(
        "done: kept epoch {} of {}: validation accuracy {:.4}, macro-F1 {:.4}",
        result.best_epoch,
        result.epochs_run,
        result.validation.accuracy,
        result.validation.macro_f1
    );
    if let Some(test) = &result.test {
        line.push_str(&format!(
            "; test accuracy {:.4}, macro-F1 {:.4}",
            test.accuracy, test.macro_f1
        ));
    }
    progress.event(&line);
    Ok(TrainEnd::Done(result))
}
