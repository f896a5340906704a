//! The train stage: one run, from its planned settings to a finished run directory.
//!
//! Owns, in the order a run meets them: [`train_run`] here (the experiment copy, the data
//! through the preprocessing cache, the model, a resumed checkpoint, then the loop and the
//! finish), `epochs` (the epoch loop: seeded batches, optimizer steps, validation after every
//! epoch and every `eval_every_steps` steps, checkpoints), `step` (one optimizer step: dropout,
//! class-weighted, label-smoothed cross-entropy or, for label sets, binary cross-entropy with
//! `pos_weight`, backward, gradient accumulation, clipping, AdamW
//! over the unfrozen parameters), `optimizer` (AdamW with per-tensor groups: weight-decay scope,
//! layer-wise learning rates; clipping; state bertlab owns), `schedule` (the learning rate of each
//! step: transformers' five schedules after a warmup), `policy` (the kept evaluation and early
//! stopping, pure functions of the metric history), `evaluation` (scoring a split in evaluation
//! mode), `checkpoint` (the resumable state on disk) and `finish` (the kept weights evaluated on
//! validation and test, the result files and the model written).
//!
//! Beside the loop, what uses a run's model the way training does: `device` (what
//! `train.device` and `--devices` resolve to), `bench` (how fast this build trains and
//! predicts), `device_check` (whether a GPU computes what the CPU computes, through the same
//! optimizer step) and `predict` (a finished run's model on new texts).
//!
//! Checkpoints make a run resumable bit for bit: everything random is a pure function of the seed
//! and the position (shuffling: the epoch; dropout: the optimizer step), so a resumed run draws
//! what an uninterrupted run would have drawn.
//!
//! Uses: `support`, `plan`, `data` (through `tokenize`), `tokenize`, `model`, `metrics`, `store`
//! (the run files it writes). Never uses: `sweep` (which calls [`train_run`] once per run),
//! `report` or `commands`.

pub mod bench;
pub mod checkpoint;
pub mod device;
pub mod device_check;
pub mod epochs;
pub mod evaluation;
pub mod finish;
pub mod optimizer;
pub mod policy;
pub mod predict;
pub mod schedule;
pub mod step;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::bail;
use candle_core::{DType, Device, Tensor};

use crate::model::DropoutRates;
use crate::model::encoder::{EncoderClassifier, LoadReport};
use crate::model::{checkpoint as model_checkpoint, layers};
use crate::plan::PlannedRun;
use crate::plan::spec::Precision;
use crate::store::run_files::{self, RunResult};
use crate::support::atomic_file;
use crate::support::progress::Progress;
use crate::tokenize::preprocess::{self, TokenizedData};
use crate::tokenize::tokenizer;
use checkpoint::TrainingState;
use epochs::{EpochLoop, LoopEnd};
use optimizer::{AdamW, AdamWSettings};

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
    /// A search trial's rungs (ASHA); `None` for a run of a grid.
    pub pruning: Option<&'a policy::PruningPlan>,
}

/// How [`train_run`] ended without an error.
#[derive(Clone, Debug, PartialEq)]
pub enum TrainEnd {
    Done(RunResult),
    /// Stopped by a signal after writing a checkpoint; `position` says where.
    Interrupted {
        position: String,
    },
    /// Stopped at a rung of a search's pruner: metrics and checkpoint kept, no test, no model;
    /// `kept`: the epoch and step of the best evaluation so far.
    Pruned {
        pruned: crate::store::PruneRecord,
        kept: Option<(usize, u64)>,
    },
}

/// The run's model as training starts it: f32, a classification head of `classes` outputs
/// initialised from the run's seed (where the checkpoint has none), the run's dropout rates and
/// frozen parameters.
pub fn load_training_model(
    run: &PlannedRun,
    classes: usize,
    device: &Device,
) -> anyhow::Result<(EncoderClassifier, LoadReport)> {
    let (mut model, report) = model_checkpoint::load_classifier(
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
    model.freeze(run.spec.train.freeze.frozen_layers())?;
    Ok((model, report))
}

/// A fresh AdamW for the run's trainable parameters: its betas, epsilon and weight decay, each
/// tensor's decay by `weight_decay_scope` and its learning-rate share by
/// `layer_learning_rate_decay`.
pub fn run_optimizer(run: &PlannedRun, model: &EncoderClassifier) -> AdamW {
    let train = &run.spec.train;
    let trainable = model.trainable_parameters();
    let names: Vec<&str> = trainable.iter().map(|(name, _)| name.as_str()).collect();
    AdamW::with_groups(
        trainable,
        AdamWSettings::for_run(train),
        optimizer::parameter_groups(&names, model.trainable_depths(), model.layer_count(), train),
    )
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

    let data = prepare_data(run, directory, options, progress)?;

    let device = options.device.clone();
    let (model, load_report) = load_training_model(run, data.classes.len(), &device)?;
    for warning in &load_report.warnings {
        progress.event(&format!("model: {warning}"));
    }
    if !load_report.unexpected.is_empty() {
        let shown: Vec<&str> = load_report
            .unexpected
            .iter()
            .take(6)
            .map(String::as_str)
            .collect();
        progress.event(&format!(
            "model: {} checkpoint tensor{} not used by {} (a pretraining head): {}{}",
            load_report.unexpected.len(),
            if load_report.unexpected.len() == 1 {
                " is"
            } else {
                "s are"
            },
            model.config().family.architecture,
            shown.join(", "),
            if load_report.unexpected.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        ));
    }
    let pad_id = tokenizer::load(&settings.model_path)?.pad_id;
    let weights = if data.multi_label {
        step::positive_weights(
            &data.train.label_sets,
            data.classes.len(),
            train_settings.class_weights,
        )
    } else {
        step::class_weights(
            &data.train.labels,
            data.classes.len(),
            train_settings.class_weights,
        )
    }
    .map(|weights| Tensor::new(weights.as_slice(), &device))
    .transpose()?;

    let mut optimizer = run_optimizer(run, &model);
    let mut state = resume(run, directory, &model, &mut optimizer, progress)?;

    let epoch_loop = EpochLoop {
        run,
        directory,
        options,
        model: &model,
        data: &data,
        pad_id,
        class_weights: weights.as_ref(),
    };
    match epochs::run_epochs(&epoch_loop, &mut optimizer, &mut state, progress)? {
        LoopEnd::Interrupted { position } => Ok(TrainEnd::Interrupted { position }),
        LoopEnd::Pruned { pruned, kept } => Ok(TrainEnd::Pruned { pruned, kept }),
        LoopEnd::Finished { last_validation } => finish::finish(
            run,
            directory,
            &model,
            &data,
            pad_id,
            &state,
            last_validation,
            progress,
        ),
    }
}

/// The run's data through the preprocessing cache, its `data_report.json` written and logged;
/// an empty training split or fewer than two classes is an error.
fn prepare_data(
    run: &PlannedRun,
    directory: &Path,
    options: &TrainOptions,
    progress: &mut Progress,
) -> anyhow::Result<TokenizedData> {
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
    if data.classes.len() < 2 && !(data.multi_label && data.classes.len() == 1) {
        bail!(
            "the data has {} class{}: a classifier needs at least 2",
            data.classes.len(),
            if data.classes.len() == 1 { "" } else { "es" }
        );
    }
    Ok(data)
}

/// Where training starts: the run's checkpoint restored into `model` and `optimizer` when there is
/// one (it must belong to this run and this state version), else the first step.
fn resume(
    run: &PlannedRun,
    directory: &Path,
    model: &EncoderClassifier,
    optimizer: &mut AdamW,
    progress: &mut Progress,
) -> anyhow::Result<TrainingState> {
    let Some((tensors, saved)) = checkpoint::load_state(directory)? else {
        progress.event("training from the start");
        return Ok(TrainingState::new(run.hash.as_str()));
    };
    if saved.hash != run.hash.as_str() || saved.version != checkpoint::STATE_VERSION {
        bail!(
            "the checkpoint in {} belongs to another run or bertlab version; delete it to start over",
            checkpoint::checkpoint_folder(directory).display()
        );
    }
    checkpoint::set_parameters(model, &tensors)?;
    optimizer.restore(&tensors, saved.steps)?;
    progress.event(&format!(
        "resuming at epoch {} batch {} (step {})",
        saved.epoch + 1,
        saved.next_batch,
        saved.steps
    ));
    Ok(saved)
}
