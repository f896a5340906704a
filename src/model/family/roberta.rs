//! RoBERTa and XLM-RoBERTa (`model_type = "roberta"`, `"xlm-roberta"`): transformers'
//! `RobertaForSequenceClassification` and `XLMRobertaForSequenceClassification`, which share
//! their maths. BERT's layers under `roberta.`; position ids counted from `pad + 1` over the
//! tokens that are not padding (so a sequence may be at most `max_position_embeddings - pad - 1`
//! long: 512 of the usual 514); no pooler (a pretraining checkpoint's `roberta.pooler.*` and
//! `lm_head.*` are reported as unused); the head on `<s>`: dropout -> `classifier.dense` -> tanh
//! -> dropout -> `classifier.out_proj`.

use anyhow::Result;
use serde_json::{Map, Value};

use crate::model::config::ModelConfig;
use crate::model::family::bert::{BERT_LAYOUT, read_bert_style};
use crate::model::family::{EncoderKind, Family, HeadActivation, HeadLayout, Layout, Positions};

/// RoBERTa's head (`RobertaClassificationHead`), which ELECTRA's differs from in its activation.
pub const CLASSIFICATION_HEAD: HeadLayout = HeadLayout {
    dense: "classifier.dense",
    activation: HeadActivation::Tanh,
    output: "classifier.out_proj",
    dropout_before_dense: true,
    dense_is_pretrained: false,
    dropout_key: "classifier_dropout",
};

const LAYOUT: Layout = Layout {
    base: "roberta",
    positions: Positions::AfterPadding,
    head: CLASSIFICATION_HEAD,
    ..BERT_LAYOUT
};

pub static ROBERTA: Family = Family {
    model_type: "roberta",
    name: "RoBERTa",
    architecture: "RobertaForSequenceClassification",
    read_config: read_roberta,
    encoder: EncoderKind::PostNorm,
    layout: LAYOUT,
};

pub static XLM_ROBERTA: Family = Family {
    model_type: "xlm-roberta",
    name: "XLM-RoBERTa",
    architecture: "XLMRobertaForSequenceClassification",
    read_config: read_xlm_roberta,
    encoder: EncoderKind::PostNorm,
    layout: LAYOUT,
};

/// transformers' `RobertaConfig` defaults BERT's, but the padding id is 1.
fn read_roberta(object: &Map<String, Value>) -> Result<ModelConfig> {
    read_bert_style(object, &ROBERTA, 1)
}

fn read_xlm_roberta(object: &Map<String, Value>) -> Result<ModelConfig> {
    read_bert_style(object, &XLM_ROBERTA, 1)
}
