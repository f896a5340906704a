//! `config.json` of a BERT checkpoint, as transformers writes it. Fields bertlab does not use are
//! kept (in `other`) so that a saved model's config is the original one plus the classifier's
//! labels.

use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_type_vocab_size() -> usize {
    2
}
fn default_initializer_range() -> f64 {
    0.02
}
fn default_hidden_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f64 {
    0.1
}

/// The BERT architecture (`model_type = "bert"`: BERT, MiniLM, TinyBERT, ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_embedding_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier_dropout: Option<f64>,
    /// Every other field, kept as written.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl BertConfig {
    /// Reads and checks `config.json`.
    pub fn load(path: &Path) -> anyhow::Result<BertConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let config: BertConfig = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a BERT config", path.display()))?;
        config
            .check()
            .with_context(|| format!("unsupported model in {}", path.display()))?;
        Ok(config)
    }

    fn check(&self) -> anyhow::Result<()> {
        if let Some(model_type) = &self.model_type
            && model_type != "bert"
        {
            bail!(
                "model_type is \"{model_type}\"; bertlab trains BERT-architecture models (model_type \"bert\")"
            );
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size,
                self.num_attention_heads
            );
        }
        if !matches!(self.hidden_act.as_str(), "gelu" | "gelu_python") {
            bail!(
                "hidden_act \"{}\" is not supported; BERT uses \"gelu\"",
                self.hidden_act
            );
        }
        if let Some(kind) = &self.position_embedding_type
            && kind != "absolute"
        {
            bail!("position_embedding_type \"{kind}\" is not supported; only \"absolute\"");
        }
        Ok(())
    }

    pub fn head_size(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}
