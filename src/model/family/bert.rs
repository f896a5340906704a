//! BERT (`model_type = "bert"`: BERT, MiniLM, TinyBERT, ...): transformers'
//! `BertForSequenceClassification`. Word + position + token type embeddings, post-norm layers,
//! the pooler (dense + tanh on [CLS]) then dropout and the classifier. Its `config.json` keys are
//! shared by RoBERTa and ELECTRA, which read them through [`read_bert_style`].

use anyhow::{Result, bail};
use serde_json::{Map, Value};

use crate::model::config::{self, DropoutRates, ModelConfig};
use crate::model::family::{
    EncoderKind, Family, HeadActivation, HeadLayout, LayerNames, Layout, Positions, count_or,
    float_or, text_or,
};

pub static FAMILY: Family = Family {
    model_type: "bert",
    name: "BERT",
    architecture: "BertForSequenceClassification",
    read_config,
    encoder: EncoderKind::PostNorm,
    layout: BERT_LAYOUT,
};

/// BERT's layout, which RoBERTa and ELECTRA change in a few places.
pub const BERT_LAYOUT: Layout = Layout {
    base: "bert",
    base_parts: &["embeddings", "encoder", "pooler"],
    word_embeddings: "embeddings.word_embeddings",
    position_embeddings: "embeddings.position_embeddings",
    token_type_embeddings: Some("embeddings.token_type_embeddings"),
    embeddings_norm: "embeddings.LayerNorm",
    embeddings_project: None,
    mask_embeddings: false,
    positions: Positions::Absolute,
    layers: "encoder.layer",
    layer: BERT_LAYER,
    relative: None,
    dropout_after_attention: true,
    head: HeadLayout {
        dense: "bert.pooler.dense",
        activation: HeadActivation::Tanh,
        output: "classifier",
        dropout_before_dense: false,
        dense_is_pretrained: true,
        dropout_key: "classifier_dropout",
    },
};

/// BERT's layer names, which RoBERTa and ELECTRA share.
pub const BERT_LAYER: LayerNames = LayerNames {
    query: "attention.self.query",
    key: "attention.self.key",
    value: "attention.self.value",
    attention_output: "attention.output.dense",
    attention_norm: "attention.output.LayerNorm",
    intermediate: "intermediate.dense",
    output: "output.dense",
    output_norm: "output.LayerNorm",
};

fn read_config(object: &Map<String, Value>) -> Result<ModelConfig> {
    read_bert_style(object, &FAMILY, 0)
}

/// A `config.json` with BERT's keys (`hidden_size`, `num_hidden_layers`, `hidden_dropout_prob`,
/// ...) and transformers' `ModelConfig` defaults where a key is absent, `pad_token_id` defaulting
/// to `default_pad`. The embedding width is `hidden_size` (ELECTRA overrides it).
pub(crate) fn read_bert_style(
    object: &Map<String, Value>,
    family: &'static Family,
    default_pad: u32,
) -> Result<ModelConfig> {
    let mut written = object.clone();
    let hidden_act = text_or(&mut written, "hidden_act", "gelu")?;
    if !matches!(hidden_act.as_str(), "gelu" | "gelu_python") {
        bail!(
            "hidden_act \"{hidden_act}\" is not supported; {} uses \"gelu\"",
            family.name
        );
    }
    if let Some(kind) = config::text(object, "position_embedding_type")?
        && kind != "absolute"
    {
        bail!("position_embedding_type \"{kind}\" is not supported; only \"absolute\"");
    }
    let hidden = float_or(&mut written, "hidden_dropout_prob", 0.1)?;
    let attention = float_or(&mut written, "attention_probs_dropout_prob", 0.1)?;
    let type_vocab_size = count_or(&mut written, "type_vocab_size", 2)?;
    let initializer_range = float_or(&mut written, "initializer_range", 0.02)?;
    let layer_norm_eps = float_or(&mut written, "layer_norm_eps", 1e-12)?;
    let classifier = config::number(object, "classifier_dropout")?.unwrap_or(hidden);
    let hidden_size = config::count(object, "hidden_size")?;
    Ok(ModelConfig {
        family,
        vocab_size: config::count(object, "vocab_size")?,
        hidden_size,
        embedding_size: hidden_size,
        num_hidden_layers: config::count(object, "num_hidden_layers")?,
        num_attention_heads: config::count(object, "num_attention_heads")?,
        intermediate_size: config::count(object, "intermediate_size")?,
        max_position_embeddings: config::count(object, "max_position_embeddings")?,
        type_vocab_size,
        layer_norm_eps,
        initializer_range,
        pad_token_id: config::optional_count(object, "pad_token_id")?
            .map_or(default_pad, |id| id as u32),
        dropout: DropoutRates {
            hidden,
            attention,
            classifier,
        },
        position_embeddings: true,
        relative_attention: None,
        attention_scale_factor: 1,
        pooler_dropout: None,
        modern_bert: None,
        written,
    })
}
