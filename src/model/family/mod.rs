//! The encoder families bertlab trains, one file each, and the table that names them. A family
//! is data about one shared encoder (`encoder`): how its `config.json` reads (`read_config`),
//! where each tensor sits in its checkpoints (`Layout`), and its classification head. The maths
//! they share (embeddings, post-norm layers, the fused kernels, bf16 products, the GPU path) is
//! written once in `encoder`.
//!
//! Adding a family: a file here with its config reader and `FAMILY`, a line in [`FAMILIES`], a
//! line in `plan::model_directory::FAMILIES` (what planning reads from its config), a fixture in
//! `scripts/make_fixtures.py` and its proofs in `tests/families.rs` (docs/model.md).

pub mod bert;
pub mod deberta;
pub mod distilbert;
pub mod electra;
pub mod modernbert;
pub mod roberta;

use anyhow::Result;
use serde_json::{Map, Value};

use crate::model::config::ModelConfig;

/// One encoder family.
#[derive(Debug)]
pub struct Family {
    /// `config.json`'s `model_type`.
    pub model_type: &'static str,
    /// How people write it.
    pub name: &'static str,
    /// transformers' class for a fine-tuned model (`config.json`'s `architectures`).
    pub architecture: &'static str,
    /// Resolves this family's `config.json`.
    pub read_config: fn(&Map<String, Value>) -> Result<ModelConfig>,
    /// Which maths: the shared post-norm encoder, or ModernBERT's.
    pub encoder: EncoderKind,
    /// Where its tensors sit (ModernBERT: the names generic code reads, the prefix, the layers,
    /// the head; its own maths names the rest).
    pub layout: Layout,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncoderKind {
    /// `encoder`'s post-norm layers (BERT to DeBERTa).
    PostNorm,
    /// `modernbert`: pre-norm, rotary positions, GeGLU, local and global attention.
    ModernBert,
}

impl PartialEq for Family {
    fn eq(&self, other: &Family) -> bool {
        self.model_type == other.model_type
    }
}

/// Where a family's tensors sit, by transformers' names, and the few places its maths differs.
#[derive(Debug, PartialEq)]
pub struct Layout {
    /// The base model's attribute in `*ForSequenceClassification` (`bert`, `roberta`, ...): the
    /// prefix of every encoder tensor.
    pub base: &'static str,
    /// The first name parts of a bare base-model checkpoint's keys (saved without the prefix).
    pub base_parts: &'static [&'static str],
    pub word_embeddings: &'static str,
    pub position_embeddings: &'static str,
    /// `None`: the family has no token types.
    pub token_type_embeddings: Option<&'static str>,
    pub embeddings_norm: &'static str,
    /// The projection from `embedding_size` up to `hidden_size`, where they differ.
    pub embeddings_project: Option<Projection>,
    /// The embeddings are zeroed at padding after their LayerNorm (DeBERTa).
    pub mask_embeddings: bool,
    pub positions: Positions,
    /// Encoder layer `N` is `{base}.{layers}.N.*`.
    pub layers: &'static str,
    pub layer: LayerNames,
    /// Where the relative-position attention's tensors sit, in a family that may have it.
    pub relative: Option<RelativeNames>,
    /// Dropout on the attention block's output before its residual (BERT: yes, DistilBERT: no).
    pub dropout_after_attention: bool,
    pub head: HeadLayout,
}

/// An encoder layer's tensors, relative to `{base}.{layers}.N`.
#[derive(Debug, PartialEq)]
pub struct LayerNames {
    pub query: &'static str,
    pub key: &'static str,
    pub value: &'static str,
    pub attention_output: &'static str,
    pub attention_norm: &'static str,
    pub intermediate: &'static str,
    pub output: &'static str,
    pub output_norm: &'static str,
}

/// The embeddings' projection up to `hidden_size`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Projection {
    /// Its name under the base prefix (`embeddings_project`, `embeddings.embed_proj`).
    pub name: &'static str,
    pub placement: ProjectionPlacement,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProjectionPlacement {
    /// After the embeddings' LayerNorm (at `embedding_size`), with a bias (ELECTRA).
    AfterNormWithBias,
    /// Before the LayerNorm (then at `hidden_size`), without a bias (DeBERTa).
    BeforeNormWithoutBias,
}

/// DeBERTa's relative-position tensors: the shared ones under the base prefix, the per-layer
/// projections (only without `share_att_key`) relative to `{base}.{layers}.N`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RelativeNames {
    pub embeddings: &'static str,
    pub norm: &'static str,
    pub position_key: &'static str,
    pub position_query: &'static str,
}

/// How position ids are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Positions {
    /// 0, 1, 2, ... for every token.
    Absolute,
    /// RoBERTa's: `pad + 1`, `pad + 2`, ... over the tokens that are not the padding id, and `pad`
    /// for padding (`create_position_ids_from_input_ids`).
    AfterPadding,
}

/// The classification head on the first token: `[dropout] -> dense -> activation -> dropout ->
/// output`.
#[derive(Debug, PartialEq)]
pub struct HeadLayout {
    /// Full name of the dense layer (`bert.pooler.dense`, `pre_classifier`, `classifier.dense`).
    pub dense: &'static str,
    pub activation: HeadActivation,
    /// Full name of the output layer (`classifier`, `classifier.out_proj`).
    pub output: &'static str,
    /// Dropout on the first token before the dense layer too (RoBERTa, ELECTRA).
    pub dropout_before_dense: bool,
    /// Whether pretraining trained the dense layer (BERT's pooler): a checkpoint without it
    /// gets a warning, not only a line in the load report.
    pub dense_is_pretrained: bool,
    /// The `config.json` key that holds the head's dropout in a saved model.
    pub dropout_key: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadActivation {
    Tanh,
    Relu,
    Gelu,
}

/// Every family bertlab trains, in the order docs and messages list them.
pub static FAMILIES: &[&Family] = &[
    &bert::FAMILY,
    &distilbert::FAMILY,
    &roberta::ROBERTA,
    &roberta::XLM_ROBERTA,
    &electra::FAMILY,
    &deberta::FAMILY,
    &modernbert::FAMILY,
];

/// The family of a `model_type`.
pub fn for_model_type(model_type: &str) -> Option<&'static Family> {
    FAMILIES
        .iter()
        .copied()
        .find(|family| family.model_type == model_type)
}

/// `model_type` "bert", "distilbert", ...: for messages.
pub fn supported_list() -> String {
    let names: Vec<String> = FAMILIES
        .iter()
        .map(|family| format!("\"{}\"", family.model_type))
        .collect();
    format!("model_type {}", names.join(", "))
}

/// Writes `default` at `key` of a written config where the key is absent (a family's default,
/// written out in a saved model's config as transformers would).
fn fill(written: &mut Map<String, Value>, key: &str, default: impl Into<Value>) {
    if !written.contains_key(key) {
        written.insert(key.to_string(), default.into());
    }
}

/// The number at `key` of a written config, `default` (filled in) where it is absent.
pub(crate) fn float_or(written: &mut Map<String, Value>, key: &str, default: f64) -> Result<f64> {
    fill(written, key, default);
    Ok(crate::model::config::number(written, key)?.unwrap_or(default))
}

/// The count at `key` of a written config, `default` (filled in) where it is absent.
pub(crate) fn count_or(
    written: &mut Map<String, Value>,
    key: &str,
    default: usize,
) -> Result<usize> {
    fill(written, key, default);
    Ok(crate::model::config::optional_count(written, key)?.unwrap_or(default))
}

/// The text at `key` of a written config, `default` (filled in) where it is absent.
pub(crate) fn text_or(
    written: &mut Map<String, Value>,
    key: &str,
    default: &str,
) -> Result<String> {
    fill(written, key, default);
    Ok(crate::model::config::text(written, key)?
        .unwrap_or(default)
        .to_string())
}

/// The flag at `key` of a config, `default` where it is absent or not a boolean.
pub(crate) fn flag_or(object: &Map<String, Value>, key: &str, default: bool) -> bool {
    object.get(key).and_then(Value::as_bool).unwrap_or(default)
}
