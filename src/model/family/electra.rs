//! ELECTRA (`model_type = "electra"`): transformers' `ElectraForSequenceClassification`. BERT's
//! embeddings at `embedding_size`, projected up to `hidden_size` by `embeddings_project` where
//! the two differ; BERT's layers under `electra.`; no pooler; the head on [CLS]: dropout ->
//! `classifier.dense` -> GELU -> dropout -> `classifier.out_proj`. A discriminator checkpoint's
//! `discriminator_predictions.*` (and a generator's `generator_*`) are reported as unused.

use anyhow::Result;
use serde_json::{Map, Value};

use crate::model::config::ModelConfig;
use crate::model::family::bert::{BERT_LAYOUT, read_bert_style};
use crate::model::family::roberta::CLASSIFICATION_HEAD;
use crate::model::family::{
    EncoderKind, Family, HeadActivation, HeadLayout, Layout, Projection, ProjectionPlacement,
    count_or,
};

pub static FAMILY: Family = Family {
    model_type: "electra",
    name: "ELECTRA",
    architecture: "ElectraForSequenceClassification",
    read_config,
    encoder: EncoderKind::PostNorm,
    layout: Layout {
        base: "electra",
        base_parts: &["embeddings", "embeddings_project", "encoder"],
        embeddings_project: Some(Projection {
            name: "embeddings_project",
            placement: ProjectionPlacement::AfterNormWithBias,
        }),
        head: HeadLayout {
            activation: HeadActivation::Gelu,
            ..CLASSIFICATION_HEAD
        },
        ..BERT_LAYOUT
    },
};

/// BERT's keys plus `embedding_size` (transformers' `ElectraConfig` default: 128).
fn read_config(object: &Map<String, Value>) -> Result<ModelConfig> {
    let mut config = read_bert_style(object, &FAMILY, 0)?;
    config.embedding_size = count_or(&mut config.written, "embedding_size", 128)?;
    Ok(config)
}
