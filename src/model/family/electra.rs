//! ELECTRA (`model_type = "electra"`): transformers' `ElectraForSequenceClassification`. BERT's
//! embeddings at `embedding_size`, projected up to `hidden_size` by `embeddings_project` where
//! the two differ; BERT's layers under `electra.`; no pooler; the head on [CLS]: dropout ->
//! `classifier.dense` -> GELU -> dropout -> `classifier.out_proj`. A discriminator checkpoint's
//! `discriminator_predictions.*` (and a generator's `generator_*`) are reported as unused.

use anyhow::Result;
use serde_json::{Map, Value};

use crate::model::config::ModelConfig;
use crate::model::family::bert::{BERT_LAYER, read_bert_style};
use crate::model::family::{Family, HeadActivation, HeadLayout, Layout, Positions, count_or};

pub static FAMILY: Family = Family {
    model_type: "electra",
    name: "ELECTRA",
    architecture: "ElectraForSequenceClassification",
    read_config,
    layout: Layout {
        base: "electra",
        base_parts: &["embeddings", "embeddings_project", "encoder"],
        word_embeddings: "embeddings.word_embeddings",
        position_embeddings: "embeddings.position_embeddings",
        token_type_embeddings: Some("embeddings.token_type_embeddings"),
        embeddings_norm: "embeddings.LayerNorm",
        embeddings_project: Some("embeddings_project"),
        positions: Positions::Absolute,
        layers: "encoder.layer",
        layer: BERT_LAYER,
        dropout_after_attention: true,
        head: HeadLayout {
            dense: "classifier.dense",
            activation: HeadActivation::Gelu,
            output: "classifier.out_proj",
            dropout_before_dense: true,
            dense_is_pretrained: false,
            dropout_key: "classifier_dropout",
        },
    },
};

/// BERT's keys plus `embedding_size` (transformers' `ElectraConfig` default: 128).
fn read_config(object: &Map<String, Value>) -> Result<ModelConfig> {
    let mut config = read_bert_style(object, &FAMILY, 0)?;
    config.embedding_size = count_or(&mut config.written, "embedding_size", 128)?;
    Ok(config)
}
