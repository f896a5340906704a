//! A Hugging Face model directory on disk: which of its files define the model (config, tokenizer,
//! weights) and the few `config.json` values that planning needs, per model family. Loading the weights is the model
//! stage's job; this module only finds and names files.

use std::path::{Path, PathBuf};

/// The weight files bertlab reads, in order of preference.
pub const WEIGHT_FILES: &[&str] = &["model.safetensors", "pytorch_model.bin"];
/// Every tokenizer file any family reads (a family's own list is [`FamilyKeys::tokenizer_files`]).
pub const TOKENIZER_FILES: &[&str] = &["tokenizer.json", "vocab.txt", "spm.model"];
/// Optional files that change how text is tokenized.
pub const TOKENIZER_SETTINGS_FILES: &[&str] = &["tokenizer_config.json", "special_tokens_map.json"];
/// Dropout that transformers uses when `config.json` does not say.
pub const DEFAULT_DROPOUT: f64 = 0.1;

/// What planning reads from one family's `config.json`: the model stage's family table
/// (`model::family::FAMILIES`) describes the maths, this one the keys planning checks and the
/// files that enter the run hash. A test keeps the two in step.
#[derive(Debug, PartialEq)]
pub struct FamilyKeys {
    pub model_type: &'static str,
    pub name: &'static str,
    /// The key of the encoder's layer count.
    pub layers: &'static str,
    /// The keys of the hidden, attention and classifier dropout with transformers' defaults (the
    /// classifier's `None`: the hidden dropout).
    pub hidden_dropout: (&'static str, f64),
    pub attention_dropout: (&'static str, f64),
    pub classifier_dropout: (&'static str, Option<f64>),
    /// RoBERTa's positions start after the padding id (this default where `pad_token_id` is
    /// absent), so `max_length` is at most `max_position_embeddings - pad - 1`.
    pub positions_after_padding: Option<u64>,
    /// The tokenizer files it reads (at least one must exist), in order of preference; they and
    /// [`TOKENIZER_SETTINGS_FILES`] enter the run hash.
    pub tokenizer_files: &'static [&'static str],
    /// The keys of the activations (feed-forward, pooler) and the values the model stage
    /// computes.
    pub activation: (&'static [&'static str], &'static [&'static str]),
    /// Counts that must be absent or 0, with what they would ask for (DeBERTa's
    /// `conv_kernel_size`).
    pub refused_when_positive: &'static [(&'static str, &'static str)],
}

const BERT_KEYS: FamilyKeys = FamilyKeys {
    model_type: "bert",
    name: "BERT",
    layers: "num_hidden_layers",
    hidden_dropout: ("hidden_dropout_prob", DEFAULT_DROPOUT),
    attention_dropout: ("attention_probs_dropout_prob", DEFAULT_DROPOUT),
    classifier_dropout: ("classifier_dropout", None),
    positions_after_padding: None,
    tokenizer_files: &["tokenizer.json", "vocab.txt"],
    activation: (&["hidden_act"], &["gelu", "gelu_python"]),
    refused_when_positive: &[],
};

/// The families planning accepts, in the order messages list them.
pub static FAMILIES: &[FamilyKeys] = &[
    BERT_KEYS,
    FamilyKeys {
        model_type: "distilbert",
        name: "DistilBERT",
        layers: "n_layers",
        hidden_dropout: ("dropout", DEFAULT_DROPOUT),
        attention_dropout: ("attention_dropout", DEFAULT_DROPOUT),
        classifier_dropout: ("seq_classif_dropout", Some(0.2)),
        activation: (&["activation"], &["gelu"]),
        ..BERT_KEYS
    },
    FamilyKeys {
        model_type: "roberta",
        name: "RoBERTa",
        positions_after_padding: Some(1),
        tokenizer_files: &["tokenizer.json"],
        ..BERT_KEYS
    },
    FamilyKeys {
        model_type: "xlm-roberta",
        name: "XLM-RoBERTa",
        positions_after_padding: Some(1),
        tokenizer_files: &["tokenizer.json"],
        ..BERT_KEYS
    },
    FamilyKeys {
        model_type: "electra",
        name: "ELECTRA",
        ..BERT_KEYS
    },
    FamilyKeys {
        model_type: "deberta-v2",
        name: "DeBERTa-v2/v3",
        classifier_dropout: ("cls_dropout", None),
        // Hub DeBERTa-v3 checkpoints ship a SentencePiece model and no tokenizer.json.
        tokenizer_files: &["tokenizer.json", "spm.model"],
        activation: (&["hidden_act", "pooler_hidden_act"], &["gelu"]),
        refused_when_positive: &[(
            "conv_kernel_size",
            "the convolution after the first layer (DeBERTa-v2-xlarge/xxlarge)",
        )],
        ..BERT_KEYS
    },
    FamilyKeys {
        model_type: "modernbert",
        name: "ModernBERT",
        hidden_dropout: ("mlp_dropout", 0.0),
        attention_dropout: ("attention_dropout", 0.0),
        classifier_dropout: ("classifier_dropout", Some(0.0)),
        tokenizer_files: &["tokenizer.json"],
        activation: (&["hidden_activation", "classifier_activation"], &["gelu"]),
        ..BERT_KEYS
    },
];

/// The families as a message lists them: `"bert" (BERT), "distilbert" (DistilBERT), ...`.
pub fn supported_families() -> String {
    FAMILIES
        .iter()
        .map(|family| format!("\"{}\" ({})", family.model_type, family.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The parts of `config.json` that planning reads, resolved with the family's keys and defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigSummary {
    pub family: &'static FamilyKeys,
    pub max_position_embeddings: u64,
    /// The longest `max_length` the positions allow (RoBERTa: `max_position_embeddings - pad - 1`).
    pub max_length: u64,
    /// Encoder layers (`freeze = N` may not exceed it); absent: not checked at planning.
    pub num_hidden_layers: Option<u64>,
    pub hidden_dropout: f64,
    pub attention_dropout: f64,
    pub classifier_dropout: f64,
}

impl ConfigSummary {
    /// Reads the summary of a parsed `config.json`: a message when the model is not one bertlab
    /// trains.
    pub fn read(config: &serde_json::Value) -> Result<ConfigSummary, String> {
        let object = config
            .as_object()
            .ok_or_else(|| "it is not a JSON object".to_string())?;
        let model_type = match object.get("model_type") {
            None | Some(serde_json::Value::Null) => "bert",
            Some(serde_json::Value::String(text)) => text.as_str(),
            Some(other) => return Err(format!("`model_type` is {other}, not a string")),
        };
        let family = FAMILIES
            .iter()
            .find(|family| family.model_type == model_type)
            .ok_or_else(|| {
                format!("it has model_type \"{model_type}\", which bertlab does not train")
            })?;
        let architectures: Vec<&str> = object
            .get("architectures")
            .and_then(serde_json::Value::as_array)
            .map(|items| items.iter().filter_map(serde_json::Value::as_str).collect())
            .unwrap_or_default();
        let decoder = architectures.iter().any(|name| {
            ["LMHeadModel", "ForCausalLM", "ForConditionalGeneration"]
                .iter()
                .any(|ending| name.ends_with(ending))
        });
        if decoder || object.get("is_decoder") == Some(&serde_json::Value::Bool(true)) {
            return Err(format!(
                "it describes a decoder (architectures {architectures:?}{}), not an encoder; bertlab fine-tunes encoders",
                if object.get("is_decoder") == Some(&serde_json::Value::Bool(true)) {
                    ", is_decoder true"
                } else {
                    ""
                }
            ));
        }
        let text = |key: &str| typed(object, key, "a string", serde_json::Value::as_str);
        let (activation_keys, activations) = family.activation;
        for activation_key in activation_keys {
            if let Some(activation) = text(activation_key)?
                && !activations.contains(&activation)
            {
                return Err(format!(
                    "`{activation_key}` is \"{activation}\"; bertlab's {} computes {}",
                    family.name,
                    activations
                        .iter()
                        .map(|name| format!("\"{name}\""))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ));
            }
        }
        if let Some(kind) = text("position_embedding_type")?
            && kind != "absolute"
        {
            return Err(format!(
                "`position_embedding_type` is \"{kind}\"; bertlab computes absolute positions only"
            ));
        }
        if object.get("sinusoidal_pos_embds") == Some(&serde_json::Value::Bool(true)) {
            return Err(
                "`sinusoidal_pos_embds` is true; bertlab trains learned positions only".to_string(),
            );
        }
        let number = |key: &str| typed(object, key, "a number", serde_json::Value::as_f64);
        let count = |key: &str| {
            typed(
                object,
                key,
                "a non-negative integer",
                serde_json::Value::as_u64,
            )
        };
        for (key, what) in family.refused_when_positive {
            if let Some(value) = count(key)?
                && value > 0
            {
                return Err(format!(
                    "`{key}` is {value}: bertlab's {} does not compute {what}",
                    family.name
                ));
            }
        }
        let max_position_embeddings = count("max_position_embeddings")?
            .ok_or_else(|| "it lacks `max_position_embeddings`".to_string())?;
        let max_length = match family.positions_after_padding {
            None => max_position_embeddings,
            Some(default_pad) => {
                let pad = count("pad_token_id")?.unwrap_or(default_pad);
                max_position_embeddings.saturating_sub(pad + 1)
            }
        };
        let hidden_dropout = number(family.hidden_dropout.0)?.unwrap_or(family.hidden_dropout.1);
        let attention_dropout =
            number(family.attention_dropout.0)?.unwrap_or(family.attention_dropout.1);
        let classifier_dropout = number(family.classifier_dropout.0)?
            .or(family.classifier_dropout.1)
            .unwrap_or(hidden_dropout);
        Ok(ConfigSummary {
            family,
            max_position_embeddings,
            max_length,
            num_hidden_layers: count(family.layers)?,
            hidden_dropout,
            attention_dropout,
            classifier_dropout,
        })
    }
}

/// The value at `key` of a config object converted by `convert`, `None` where it is absent or
/// null, a message naming the key and the `kind` expected where it has another type.
fn typed<'a, T>(
    object: &'a serde_json::Map<String, serde_json::Value>,
    key: &str,
    kind: &str,
    convert: impl Fn(&'a serde_json::Value) -> Option<T>,
) -> Result<Option<T>, String> {
    match object.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value) => convert(value)
            .map(Some)
            .ok_or_else(|| format!("`{key}` is {value}, not {kind}")),
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
        let config_value: serde_json::Value =
            serde_json::from_str(&config_text).map_err(|error| ModelDirectoryProblem {
                message: format!("{} is not valid JSON: {error}", config_path.display()),
                help: "a Hugging Face model directory has a config.json written by transformers"
                    .into(),
            })?;
        let config = ConfigSummary::read(&config_value).map_err(|reason| ModelDirectoryProblem {
            message: format!("{} is not a model bertlab can train: {reason}", config_path.display()),
            help: format!(
                "bertlab fine-tunes encoders of model_type {} (docs/model.md says what each computes): choose a checkpoint it trains",
                supported_families()
            ),
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
        let tokenizer_files = config.family.tokenizer_files;
        let tokenizers: Vec<(String, PathBuf)> = tokenizer_files
            .iter()
            .chain(TOKENIZER_SETTINGS_FILES)
            .map(|name| (name.to_string(), path.join(name)))
            .filter(|(_, candidate)| candidate.is_file())
            .collect();
        if !tokenizers
            .iter()
            .any(|(name, _)| tokenizer_files.contains(&name.as_str()))
        {
            let help = if tokenizer_files == ["tokenizer.json"] {
                format!(
                    "{} models are read through tokenizer.json; write one with transformers: AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR)",
                    config.family.name
                )
            } else {
                "copy the tokenizer files of the checkpoint into the model directory".to_string()
            };
            return Err(ModelDirectoryProblem {
                message: format!(
                    "no tokenizer in {}: tried {}",
                    path.display(),
                    tokenizer_files.join(" and ")
                ),
                help,
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
