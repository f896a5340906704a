//! DistilBERT (`model_type = "distilbert"`): transformers' `DistilBertForSequenceClassification`.
//! Word + position embeddings (no token types), post-norm layers with their own names (`q_lin`,
//! `sa_layer_norm`, `ffn.lin1`, ...) and no dropout on the attention block's output, no pooler;
//! the head on the first token: `pre_classifier` -> ReLU -> dropout (`seq_classif_dropout`) ->
//! `classifier`. A pretraining checkpoint's `vocab_*` tensors are reported as unused.

use anyhow::{Result, bail};
use serde_json::{Map, Value};

use crate::model::config::{self, DropoutRates, ModelConfig};
use crate::model::family::{
    EncoderKind, Family, HeadActivation, HeadLayout, LayerNames, Layout, Positions, count_or,
    float_or, text_or,
};

pub static FAMILY: Family = Family {
    model_type: "distilbert",
    name: "DistilBERT",
    architecture: "DistilBertForSequenceClassification",
    read_config,
    encoder: EncoderKind::PostNorm,
    layout: Layout {
        base: "distilbert",
        base_parts: &["embeddings", "transformer"],
        word_embeddings: "embeddings.word_embeddings",
        position_embeddings: "embeddings.position_embeddings",
        token_type_embeddings: None,
        embeddings_norm: "embeddings.LayerNorm",
        embeddings_project: None,
        mask_embeddings: false,
        positions: Positions::Absolute,
        layers: "transformer.layer",
        layer: LayerNames {
            query: "attention.q_lin",
            key: "attention.k_lin",
            value: "attention.v_lin",
            attention_output: "attention.out_lin",
            attention_norm: "sa_layer_norm",
            intermediate: "ffn.lin1",
            output: "ffn.lin2",
            output_norm: "output_layer_norm",
        },
        relative: None,
        dropout_after_attention: false,
        head: HeadLayout {
            dense: "pre_classifier",
            activation: HeadActivation::Relu,
            output: "classifier",
            dropout_before_dense: false,
            dense_is_pretrained: false,
            dropout_key: "seq_classif_dropout",
        },
    },
};

/// `dim`, `n_layers`, `n_heads`, `hidden_dim`, `dropout`, `attention_dropout`,
/// `seq_classif_dropout` (default 0.2), `activation`; LayerNorm's epsilon is fixed at 1e-12.
fn read_config(object: &Map<String, Value>) -> Result<ModelConfig> {
    let mut written = object.clone();
    let activation = text_or(&mut written, "activation", "gelu")?;
    if activation != "gelu" {
        bail!("activation \"{activation}\" is not supported; DistilBERT uses \"gelu\"");
    }
    if object.get("sinusoidal_pos_embds") == Some(&Value::Bool(true)) {
        bail!("sinusoidal_pos_embds is true: fixed sinusoidal positions are not supported");
    }
    let hidden = float_or(&mut written, "dropout", 0.1)?;
    let attention = float_or(&mut written, "attention_dropout", 0.1)?;
    let classifier = float_or(&mut written, "seq_classif_dropout", 0.2)?;
    let initializer_range = float_or(&mut written, "initializer_range", 0.02)?;
    let pad_token_id = count_or(&mut written, "pad_token_id", 0)? as u32;
    let hidden_size = config::count(object, "dim")?;
    Ok(ModelConfig {
        family: &FAMILY,
        vocab_size: config::count(object, "vocab_size")?,
        hidden_size,
        embedding_size: hidden_size,
        num_hidden_layers: config::count(object, "n_layers")?,
        num_attention_heads: config::count(object, "n_heads")?,
        intermediate_size: config::count(object, "hidden_dim")?,
        max_position_embeddings: config::count(object, "max_position_embeddings")?,
        type_vocab_size: 0,
        layer_norm_eps: 1e-12,
        initializer_range,
        pad_token_id,
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
