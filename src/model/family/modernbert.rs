//! ModernBERT (`model_type = "modernbert"`): transformers' `ModernBertForSequenceClassification`
//! with eager attention, computed by `model::modernbert`. Token embeddings -> LayerNorm ->
//! dropout; pre-norm layers (no norm before layer 0's attention): attention from one `Wqkv`
//! projection with rotary positions on queries and keys (the global or the local base),
//! global layers seeing every real token and local ones the keys within `local_attention / 2`;
//! a GeGLU feed-forward (`Wi` split in two halves, GELU of the first times the second); the
//! final norm; the head: the first token or the mean of the real tokens -> `head.dense` -> GELU
//! -> `head.norm` -> dropout -> `classifier`. Norms and linear layers without biases unless the
//! config asks for them. Up to `max_position_embeddings` (8,192) tokens.

use anyhow::{Result, bail};
use serde_json::{Map, Value};

use crate::model::config::{self, DropoutRates, ModelConfig, ModernBertSettings, Pooling};
use crate::model::family::{
    EncoderKind, Family, HeadActivation, HeadLayout, LayerNames, Layout, Positions, count_or,
    flag_or, float_or, text_or,
};

pub static FAMILY: Family = Family {
    model_type: "modernbert",
    name: "ModernBERT",
    architecture: "ModernBertForSequenceClassification",
    read_config,
    encoder: EncoderKind::ModernBert,
    layout: Layout {
        base: "model",
        base_parts: &["embeddings", "layers", "final_norm"],
        word_embeddings: "embeddings.tok_embeddings",
        position_embeddings: "",
        token_type_embeddings: None,
        embeddings_norm: "embeddings.norm",
        embeddings_project: None,
        mask_embeddings: false,
        positions: Positions::Absolute,
        layers: "layers",
        layer: LayerNames {
            query: "attn.Wqkv",
            key: "attn.Wqkv",
            value: "attn.Wqkv",
            attention_output: "attn.Wo",
            attention_norm: "attn_norm",
            intermediate: "mlp.Wi",
            output: "mlp.Wo",
            output_norm: "mlp_norm",
        },
        relative: None,
        dropout_after_attention: true,
        head: HeadLayout {
            dense: "head.dense",
            activation: HeadActivation::Gelu,
            output: "classifier",
            dropout_before_dense: false,
            dense_is_pretrained: true,
            dropout_key: "classifier_dropout",
        },
    },
};

/// The rotary base of one attention kind: `rope_parameters[kind].rope_theta` (transformers 5),
/// else the older key, else transformers' default; scaled rotary kinds are refused.
fn rope_theta(object: &Map<String, Value>, kind: &str, older: &str, default: f64) -> Result<f64> {
    if let Some(parameters) = object
        .get("rope_parameters")
        .and_then(|parameters| parameters.get(kind))
    {
        if let Some(rope_type) = parameters.get("rope_type").and_then(Value::as_str)
            && rope_type != "default"
        {
            bail!(
                "rope_parameters.{kind}.rope_type is \"{rope_type}\"; bertlab computes \"default\" rotary positions"
            );
        }
        if let Some(theta) = parameters.get("rope_theta").and_then(Value::as_f64) {
            return Ok(theta);
        }
    }
    Ok(config::number(object, older)?.unwrap_or(default))
}

/// transformers' `ModernBertConfig` defaults: `norm_eps` 1e-5, `local_attention` 128,
/// `global_attn_every_n_layers` 3 (where `layer_types` is absent), rotary bases 160,000 (global)
/// and 10,000 (local), every dropout 0, no biases, `classifier_pooling` "cls", GELU.
fn read_config(object: &Map<String, Value>) -> Result<ModelConfig> {
    let mut written = object.clone();
    for key in ["hidden_activation", "classifier_activation"] {
        let activation = text_or(&mut written, key, "gelu")?;
        if activation != "gelu" {
            bail!("{key} \"{activation}\" is not supported; ModernBERT uses \"gelu\"");
        }
    }
    let pooling = match text_or(&mut written, "classifier_pooling", "cls")?.as_str() {
        "cls" => Pooling::Cls,
        "mean" => Pooling::Mean,
        other => bail!("classifier_pooling \"{other}\" is not supported; \"cls\" or \"mean\""),
    };
    let layers = config::count(object, "num_hidden_layers")?;
    let global_layers: Vec<bool> = match object.get("layer_types").and_then(Value::as_array) {
        Some(types) => types
            .iter()
            .map(|kind| match kind.as_str() {
                Some("full_attention") => Ok(true),
                Some("sliding_attention") => Ok(false),
                _ => bail!("layer_types holds {kind}; \"full_attention\" or \"sliding_attention\""),
            })
            .collect::<Result<_>>()?,
        None => {
            let every = config::optional_count(object, "global_attn_every_n_layers")?.unwrap_or(3);
            if every == 0 {
                bail!("global_attn_every_n_layers is 0");
            }
            (0..layers).map(|index| index % every == 0).collect()
        }
    };
    if global_layers.len() != layers {
        bail!(
            "layer_types names {} layers, num_hidden_layers is {layers}",
            global_layers.len()
        );
    }
    let local_attention = count_or(&mut written, "local_attention", 128)?;
    let attention = float_or(&mut written, "attention_dropout", 0.0)?;
    let hidden = float_or(&mut written, "mlp_dropout", 0.0)?;
    let classifier = float_or(&mut written, "classifier_dropout", 0.0)?;
    let embedding_dropout = float_or(&mut written, "embedding_dropout", 0.0)?;
    let initializer_range = float_or(&mut written, "initializer_range", 0.02)?;
    let layer_norm_eps = float_or(&mut written, "norm_eps", 1e-5)?;
    let hidden_size = config::count(object, "hidden_size")?;
    let settings = ModernBertSettings {
        global_layers,
        global_rope_theta: rope_theta(object, "full_attention", "global_rope_theta", 160_000.0)?,
        local_rope_theta: rope_theta(object, "sliding_attention", "local_rope_theta", 10_000.0)?,
        window: local_attention / 2,
        pooling,
        norm_bias: flag_or(object, "norm_bias", false),
        attention_bias: flag_or(object, "attention_bias", false),
        mlp_bias: flag_or(object, "mlp_bias", false),
        classifier_bias: flag_or(object, "classifier_bias", false),
        embedding_dropout,
    };
    Ok(ModelConfig {
        family: &FAMILY,
        vocab_size: config::count(object, "vocab_size")?,
        hidden_size,
        embedding_size: hidden_size,
        num_hidden_layers: layers,
        num_attention_heads: config::count(object, "num_attention_heads")?,
        intermediate_size: config::count(object, "intermediate_size")?,
        max_position_embeddings: count_or(&mut written, "max_position_embeddings", 8192)?,
        type_vocab_size: 0,
        layer_norm_eps,
        initializer_range,
        pad_token_id: config::optional_count(object, "pad_token_id")?.map_or(50283, |id| id as u32),
        dropout: DropoutRates {
            hidden,
            attention,
            classifier,
        },
        position_embeddings: false,
        relative_attention: None,
        attention_scale_factor: 1,
        pooler_dropout: None,
        modern_bert: Some(settings),
        written,
    })
}
