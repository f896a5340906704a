//! A checkpoint's `config.json`, read by the family its `model_type` names (`family`) into one
//! resolved [`ModelConfig`]: the numbers the shared encoder needs, whatever each family calls
//! them (`hidden_size` or `dim`, `num_hidden_layers` or `n_layers`). The file as the family
//! reads it is kept beside them, so that a saved model's config is the original one plus the
//! classifier's labels.

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::{Map, Value};

use crate::model::family::{self, Family};

/// Dropout probabilities used in training.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropoutRates {
    /// After the embeddings and after each layer's dense outputs.
    pub hidden: f64,
    /// On the attention probabilities.
    pub attention: f64,
    /// In the classification head.
    pub classifier: f64,
}

/// DeBERTa's relative-position attention (`relative_attention = true`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RelativeAttention {
    /// Relative distances are log-bucketed into this many buckets each side (`position_buckets`);
    /// 0: not bucketed.
    pub position_buckets: usize,
    /// `max_relative_positions` (`max_position_embeddings` where the config gives less than 1).
    pub max_relative_positions: usize,
    /// Content-to-position scores (`c2p` in `pos_att_type`).
    pub content_to_position: bool,
    /// Position-to-content scores (`p2c`).
    pub position_to_content: bool,
    /// The layer's query/key projections also project the relative embeddings
    /// (`share_att_key`); else `pos_query_proj`/`pos_key_proj` do.
    pub share_attention_key: bool,
    /// `encoder.LayerNorm` on the relative embeddings (`norm_rel_ebd = "layer_norm"`).
    pub normalize_embeddings: bool,
}

impl RelativeAttention {
    /// transformers' `pos_ebd_size`: the buckets, else `max_relative_positions`; the relative
    /// embeddings have `2 * span` rows.
    pub fn span(&self) -> usize {
        if self.position_buckets > 0 {
            self.position_buckets
        } else {
            self.max_relative_positions
        }
    }
}

/// ModernBERT (`model_type = "modernbert"`): which layers attend globally, the rotary bases,
/// the local window, the pooling and which layers have biases.
#[derive(Clone, Debug, PartialEq)]
pub struct ModernBertSettings {
    /// Per layer: `true` for global (`full_attention`), `false` for local (`sliding_attention`).
    pub global_layers: Vec<bool>,
    /// The rotary base of global and of local layers (`rope_parameters`, or the older
    /// `global_rope_theta`/`local_rope_theta`).
    pub global_rope_theta: f64,
    pub local_rope_theta: f64,
    /// A local layer's query attends the keys at most this far away (`local_attention / 2`).
    pub window: usize,
    pub pooling: Pooling,
    pub norm_bias: bool,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    /// `head.dense`'s bias (`classifier_bias`; the classifier always has one).
    pub classifier_bias: bool,
    /// Dropout after the embeddings' norm (`embedding_dropout`, not a setting).
    pub embedding_dropout: f64,
}

/// What the classifier reads: the first token, or the mean over the real tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    Cls,
    Mean,
}

/// The encoder's shape and defaults, resolved from one family's `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub family: &'static Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// The width of the embeddings: `hidden_size` except in ELECTRA, whose `embedding_size` may
    /// be smaller (then `embeddings_project` maps it up).
    pub embedding_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    /// Rows of the token type embeddings; 0 for a family without them (DistilBERT).
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub initializer_range: f64,
    /// The padding token's id (RoBERTa counts positions after it).
    pub pad_token_id: u32,
    /// The dropout rates `config.json` gives, with the family's defaults where it is silent.
    pub dropout: DropoutRates,
    /// Learned absolute positions added to the embeddings (DeBERTa: `position_biased_input`).
    pub position_embeddings: bool,
    /// DeBERTa's disentangled relative-position attention, where the model has it.
    pub relative_attention: Option<RelativeAttention>,
    /// Attention scores are divided by `sqrt(head_size * attention_scale_factor)`: 1, except in
    /// DeBERTa (1 + one for each of `c2p`, `p2c`).
    pub attention_scale_factor: usize,
    /// The dropout on the first token before the head's dense layer, where the family's config
    /// gives it its own rate (DeBERTa's `pooler_dropout`); `None`: the classifier dropout.
    pub pooler_dropout: Option<f64>,
    /// ModernBERT's settings, in a ModernBERT.
    pub modern_bert: Option<ModernBertSettings>,
    /// `config.json` as the family read it (every field kept, defaults filled in).
    pub written: Map<String, Value>,
}

impl ModelConfig {
    /// Reads `config.json` and resolves it through the family its `model_type` names (absent:
    /// BERT, as in old BERT checkpoints).
    pub fn load(path: &Path) -> anyhow::Result<ModelConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        ModelConfig::from_json(&value)
            .with_context(|| format!("unsupported model in {}", path.display()))
    }

    /// Resolves a parsed `config.json`.
    pub fn from_json(value: &Value) -> anyhow::Result<ModelConfig> {
        let Some(object) = value.as_object() else {
            bail!("config.json is not a JSON object");
        };
        let model_type = object
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("bert");
        let Some(family) = family::for_model_type(model_type) else {
            bail!(
                "model_type is \"{model_type}\"; bertlab trains {}",
                family::supported_list()
            );
        };
        let config = (family.read_config)(object)?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            bail!(
                "the hidden size {} is not a multiple of the {} attention heads",
                self.hidden_size,
                self.num_attention_heads
            );
        }
        if self.max_sequence_length() == 0 {
            bail!(
                "{} positions leave no room for a sequence",
                self.max_position_embeddings
            );
        }
        Ok(())
    }

    pub fn head_size(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The longest sequence the position embeddings cover: all of them, except in families that
    /// count positions after the padding id (RoBERTa: `max_position_embeddings - pad - 1`).
    pub fn max_sequence_length(&self) -> usize {
        match self.family.layout.positions {
            family::Positions::Absolute => self.max_position_embeddings,
            family::Positions::AfterPadding => self
                .max_position_embeddings
                .saturating_sub(self.pad_token_id as usize + 1),
        }
    }
}

/// The value at `key` of a config object converted by `convert`, `None` where it is absent or
/// null, an error naming the key and the `kind` expected where it has another type.
fn typed<'a, T>(
    object: &'a Map<String, Value>,
    key: &str,
    kind: &str,
    convert: impl Fn(&'a Value) -> Option<T>,
) -> anyhow::Result<Option<T>> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => convert(value)
            .map(Some)
            .with_context(|| format!("`{key}` is {value}, not {kind}")),
    }
}

/// Reads an optional number from a config object.
pub(crate) fn number(object: &Map<String, Value>, key: &str) -> anyhow::Result<Option<f64>> {
    typed(object, key, "a number", Value::as_f64)
}

/// Reads a required count from a config object.
pub(crate) fn count(object: &Map<String, Value>, key: &str) -> anyhow::Result<usize> {
    optional_count(object, key)?.with_context(|| format!("missing field `{key}`"))
}

/// Reads an optional count from a config object.
pub(crate) fn optional_count(
    object: &Map<String, Value>,
    key: &str,
) -> anyhow::Result<Option<usize>> {
    typed(object, key, "a non-negative integer", |value| {
        value.as_u64().map(|count| count as usize)
    })
}

/// Reads an optional string from a config object.
pub(crate) fn text<'a>(
    object: &'a Map<String, Value>,
    key: &str,
) -> anyhow::Result<Option<&'a str>> {
    typed(object, key, "a string", Value::as_str)
}
