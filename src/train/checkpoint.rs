//! The resumable state of a run in training: `checkpoint/state.safetensors` holds the weights,
//! the AdamW moments and, in its metadata, where the loop stands ([`TrainingState`]: epoch, batch,
//! step, the epoch's loss sums, the metric history); `checkpoint/best.safetensors` holds the kept
//! epoch's weights. Both are written atomically; the folder is removed once the run is `done`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::encoder::EncoderClassifier;
use crate::store::run_files::{self, EpochRow};
use crate::support::atomic_file;
use crate::train::optimizer::AdamW;

/// The state checkpoint in the checkpoint folder; written atomically, so it exists only whole.
pub const STATE_FILE: &str = "state.safetensors";
const BEST_FILE: &str = "best.safetensors";
const STATE_KEY: &str = "bertlab_training_state";
/// The layout of [`TrainingState`]; a checkpoint of another version is refused.
pub const STATE_VERSION: u32 = 1;

/// Where the loop stands: the metadata of a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingState {
    pub version: u32,
    pub hash: String,
    /// 0-based epoch in progress (`epochs` when training is over).
    pub epoch: usize,
    /// Batches of that epoch already trained (a multiple of `gradient_accumulation`, or all).
    pub next_batch: usize,
    /// Optimizer steps taken.
    pub steps: u64,
    /// Sum of (weighted) training losses and examples of the epoch so far.
    pub loss_sum: f64,
    pub loss_examples: usize,
    /// Training seconds of the epoch so far.
    pub epoch_seconds: f64,
    /// The learning rate of the last step.
    pub learning_rate: f64,
    pub history: Vec<EpochRow>,
    /// Early stopping fired.
    pub stopped: bool,
}

impl TrainingState {
    pub fn new(hash: &str) -> TrainingState {
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

/// The run's checkpoint folder.
pub fn checkpoint_folder(directory: &Path) -> PathBuf {
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

fn model_tensors(model: &EncoderClassifier) -> anyhow::Result<Vec<(String, Tensor)>> {
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

/// Writes the state checkpoint: weights, AdamW moments and where the loop stands.
pub fn save_state(
    directory: &Path,
    model: &EncoderClassifier,
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
pub fn load_state(
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

/// Copies checkpoint tensors into the model's parameters (to their dtype and device).
pub fn set_parameters(
    model: &EncoderClassifier,
    tensors: &HashMap<String, Tensor>,
) -> anyhow::Result<()> {
    for (name, var) in model.parameters() {
        let tensor = tensors
            .get(name)
            .with_context(|| format!("the checkpoint lacks {name}"))?;
        var.set(&tensor.to_dtype(var.dtype())?.to_device(var.device())?)
            .with_context(|| format!("cannot restore {name}"))?;
    }
    Ok(())
}

/// Writes the kept epoch's weights (`best.safetensors`).
pub fn save_best(directory: &Path, model: &EncoderClassifier) -> anyhow::Result<()> {
    let folder = checkpoint_folder(directory);
    std::fs::create_dir_all(&folder)
        .with_context(|| format!("cannot create {}", folder.display()))?;
    write_tensors(&folder.join(BEST_FILE), model_tensors(model)?, None)
}

/// Loads the kept epoch's weights (`best.safetensors`) into the model.
pub fn restore_best(directory: &Path, model: &EncoderClassifier) -> anyhow::Result<()> {
    let best_path = checkpoint_folder(directory).join(BEST_FILE);
    let tensors = candle_core::safetensors::load(&best_path, &Device::Cpu)
        .with_context(|| format!("cannot read the kept weights {}", best_path.display()))?;
    set_parameters(model, &tensors)
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
