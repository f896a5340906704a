//! A Hugging Face model directory on disk: which of its files define the model (config, tokenizer,
//! weights) and the few `config.json` values that planning needs. Loading the weights is the model
//! stage's job; this module only finds and names files.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The weight files bertlab reads, in order of preference.
pub const WEIGHT_FILES: &[&str] = &["model.safetensors", "pytorch_model.bin"];
/// Tokenizer files: at least one of the first two must exist.
pub const TOKENIZER_FILES: &[&str] = &["tokenizer.json", "vocab.txt"];
/// Optional files that change how text is tokenized.
pub const TOKENIZER_SETTINGS_FILES: &[&str] = &["tokenizer_config.json", "special_tokens_map.json"];

/// The parts of `config.json` that planning reads. Other fields are ignored here.
#[derive(Clone, Debug, Deserialize)]
pub struct ConfigSummary {
    #[serde(default)]
    pub model_type: Option<String>,
    pub max_position_embeddings: u64,
    /// Encoder layers (`freeze = N` may not exceed it); absent: not checked at planning.
    #[serde(default, alias = "n_layers", alias = "num_layers")]
    pub num_hidden_layers: Option<u64>,
    #[serde(default, alias = "dropout")]
    pub hidden_dropout_prob: Option<f64>,
    #[serde(default, alias = "attention_dropout")]
    pub attention_probs_dropout_prob: Option<f64>,
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
}

/// Dropout that transformers uses when `config.json` does not say.
pub const DEFAULT_DROPOUT: f64 = 0.1;

impl ConfigSummary {
    pub fn hidden_dropout(&self) -> f64 {
        self.hidden_dropout_prob.unwrap_or(DEFAULT_DROPOUT)
    }

    pub fn attention_dropout(&self) -> f64 {
        self.attention_probs_dropout_prob.unwrap_or(DEFAULT_DROPOUT)
    }

    /// As transformers' BertForSequenceClassification: `classifier_dropout`, else the hidden dropout.
    pub fn classifier_dropout(&self) -> f64 {
        self.classifier_dropout
            .unwrap_or_else(|| self.hidden_dropout())
    }
}

/// A model directory whose required files exist and whose config parsed.
#[derive(Clone, Debug)]
pub struct ModelDirectory {
    pub path: PathBuf,
    pub config: ConfigSummary,
    /// The files that define the model, as (file name, full path), sorted by file name.
    pub files: Vec<(String, PathBuf)>,
}

/// Why a directory is not a usable model directory: a message and a hint.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelDirectoryProblem {
    pub message: String,
    pub help: String,
}

impl ModelDirectory {
    /// Checks that `path` holds a Hugging Face model bertlab can use, without loading weights.
    pub fn inspect(path: &Path) -> Result<ModelDirectory, ModelDirectoryProblem> {
        if !path.is_dir() {
            let message = if path.exists() {
                format!("model path {} is not a directory", path.display())
            } else {
                format!("model directory not found: {}", path.display())
            };
            return Err(ModelDirectoryProblem {
                message,
                help: "`model.path` is resolved relative to the experiment file; point it at a Hugging Face model directory (config.json, tokenizer.json or vocab.txt, model.safetensors)".into(),
            });
        }
        let config_path = path.join("config.json");
        let config_text =
            std::fs::read_to_string(&config_path).map_err(|error| ModelDirectoryProblem {
                message: format!("cannot read {}: {error}", config_path.display()),
                help: "a Hugging Face model directory has a config.json".into(),
            })?;
        let config: ConfigSummary =
            serde_json::from_str(&config_text).map_err(|error| ModelDirectoryProblem {
                message: format!(
                    "{} is not a usable model config: {error}",
                    config_path.display()
                ),
                help: "bertlab needs at least `max_position_embeddings` in config.json".into(),
            })?;
        let mut files = vec![("config.json".to_string(), config_path)];
        let weights = WEIGHT_FILES
            .iter()
            .map(|name| (name.to_string(), path.join(name)))
            .find(|(_, candidate)| candidate.is_file())
            .ok_or_else(|| ModelDirectoryProblem {
                message: format!(
                    "no weights in {}: tried {}",
                    path.display(),
                    WEIGHT_FILES.join(" and ")
                ),
                help: "sharded checkpoints are not supported; save the model as a single model.safetensors".into(),
            })?;
        files.push(weights);
        let tokenizers: Vec<(String, PathBuf)> = TOKENIZER_FILES
            .iter()
            .chain(TOKENIZER_SETTINGS_FILES)
            .map(|name| (name.to_string(), path.join(name)))
            .filter(|(_, candidate)| candidate.is_file())
            .collect();
        if !tokenizers
            .iter()
            .any(|(name, _)| TOKENIZER_FILES.contains(&name.as_str()))
        {
            return Err(ModelDirectoryProblem {
                message: format!(
                    "no tokenizer in {}: tried {}",
                    path.display(),
                    TOKENIZER_FILES.join(" and ")
                ),
                help: "copy the tokenizer files of the checkpoint into the model directory".into(),
            });
        }
        files.extend(tokenizers);
        files.sort();
        Ok(ModelDirectory {
            path: path.to_path_buf(),
            config,
            files,
        })
    }
}
