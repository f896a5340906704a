//! Hugging Face model directories in and out: reading `config.json` and weights from
//! `model.safetensors` or `pytorch_model.bin` (with or without the family's prefix), and saving a
//! fine-tuned classifier as a directory that transformers' `AutoModelForSequenceClassification`
//! loads as the family's `*ForSequenceClassification` with no missing or unexpected keys.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};
use candle_core::{DType, Device, Tensor};
use serde_json::{Map, Value, json};

use crate::model::config::ModelConfig;
use crate::model::encoder::{EncoderClassifier, LoadReport};

/// Files copied from the source model into a saved model where it has them: the tokenizer, in
/// every form transformers reads (a saved model predicts the same in Python).
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spm.model",
    "added_tokens.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// Reads every tensor of a checkpoint: `model.safetensors`, else `pytorch_model.bin`.
pub fn read_weights(directory: &Path) -> anyhow::Result<HashMap<String, Tensor>> {
    let safetensors = directory.join("model.safetensors");
    if safetensors.is_file() {
        return candle_core::safetensors::load(&safetensors, &Device::Cpu)
            .with_context(|| format!("cannot read the weights {}", safetensors.display()));
    }
    let pickle = directory.join("pytorch_model.bin");
    if pickle.is_file() {
        let tensors = candle_core::pickle::read_all(&pickle)
            .with_context(|| format!("cannot read the weights {}", pickle.display()))?;
        return Ok(tensors.into_iter().collect());
    }
    bail!(
        "no weights in {}: tried model.safetensors and pytorch_model.bin",
        directory.display()
    )
}

/// Loads a classifier from a model directory. `num_labels` defaults to the directory's own
/// `id2label` (a fine-tuned model) when `None`.
pub fn load_classifier(
    directory: &Path,
    num_labels: Option<usize>,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> anyhow::Result<(EncoderClassifier, LoadReport)> {
    let config = ModelConfig::load(&directory.join("config.json"))?;
    let num_labels = match num_labels {
        Some(count) => count,
        None => labels_of(&config)
            .map(|labels| labels.len())
            .with_context(|| {
                format!(
                    "{} has no id2label: give the number of labels",
                    directory.display()
                )
            })?,
    };
    let tensors = read_weights(directory)?;
    EncoderClassifier::from_tensors(config, num_labels, tensors, seed, dtype, device)
        .with_context(|| format!("cannot load the model in {}", directory.display()))
}

/// The class names of a fine-tuned config (`id2label`, ordered by id).
pub fn labels_of(config: &ModelConfig) -> Option<Vec<String>> {
    let id2label = config.written.get("id2label")?.as_object()?;
    let mut labels: Vec<(usize, String)> = id2label
        .iter()
        .filter_map(|(id, label)| Some((id.parse().ok()?, label.as_str()?.to_string())))
        .collect();
    labels.sort();
    labels
        .iter()
        .enumerate()
        .all(|(index, (id, _))| index == *id)
        .then(|| labels.into_iter().map(|(_, label)| label).collect())
}

/// transformers' `problem_type` of a multi-label classifier (a sigmoid per class, BCE).
pub const MULTI_LABEL_PROBLEM: &str = "multi_label_classification";

/// Saves `model` as a Hugging Face directory: `config.json` (the source's, with the family's
/// `*ForSequenceClassification` as architecture, `id2label`, `label2id`), `model.safetensors` with
/// transformers' key names, and the tokenizer files of `source`. The directory appears whole or
/// not at all: it is written next to `directory` and renamed into place. `multi_label`:
/// `problem_type` is [`MULTI_LABEL_PROBLEM`] (else `single_label_classification`).
pub fn save_classifier(
    model: &EncoderClassifier,
    labels: &[String],
    multi_label: bool,
    source: &Path,
    directory: &Path,
) -> anyhow::Result<()> {
    if labels.len() != model.num_labels() {
        bail!(
            "{} label names for a model with {} labels",
            labels.len(),
            model.num_labels()
        );
    }
    let parent = match directory.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".model-")
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a temporary folder in {}", parent.display()))?;

    let family = model.config().family;
    let mut object = model.config().written.clone();
    let id2label: Map<String, Value> = labels
        .iter()
        .enumerate()
        .map(|(id, label)| (id.to_string(), json!(label)))
        .collect();
    let label2id: Map<String, Value> = labels
        .iter()
        .enumerate()
        .map(|(id, label)| (label.clone(), json!(id)))
        .collect();
    object.insert("architectures".into(), json!([family.architecture]));
    object.insert("id2label".into(), Value::Object(id2label));
    object.insert("label2id".into(), Value::Object(label2id));
    object.insert(
        "problem_type".into(),
        json!(if multi_label {
            MULTI_LABEL_PROBLEM
        } else {
            "single_label_classification"
        }),
    );
    object.insert(
        family.layout.head.dropout_key.into(),
        json!(model.dropout.classifier),
    );
    object.insert("model_type".into(), json!(family.model_type));
    let mut text = serde_json::to_string_pretty(&Value::Object(object))?;
    text.push('\n');
    write_synced(&staging.path().join("config.json"), text.as_bytes())?;

    let weights = staging.path().join("model.safetensors");
    candle_core::safetensors::save(&model.state_dict()?, &weights)
        .with_context(|| format!("cannot write {}", weights.display()))?;
    std::fs::File::open(&weights)?.sync_all()?;

    for name in TOKENIZER_FILES {
        let file = source.join(name);
        if file.is_file() {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            write_synced(&staging.path().join(name), &bytes)?;
        }
    }

    let staged = staging.keep();
    // An existing directory is moved aside first and removed last, so a crash leaves the old
    // model or the new one in place (and at worst a hidden folder beside it).
    let old = if directory.exists() {
        let aside = parent.join(format!(".model-old-{}", std::process::id()));
        std::fs::rename(directory, &aside)
            .with_context(|| format!("cannot replace {}", directory.display()))?;
        Some(aside)
    } else {
        None
    };
    std::fs::rename(&staged, directory)
        .with_context(|| format!("cannot move the saved model into {}", directory.display()))?;
    if let Some(old) = old {
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("cannot remove the replaced model {}", old.display()))?;
    }
    if let Ok(folder) = std::fs::File::open(parent) {
        let _ = folder.sync_all();
    }
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}
