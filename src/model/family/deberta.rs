//! DeBERTa-v2 and DeBERTa-v3 (`model_type = "deberta-v2"`): transformers'
//! `DebertaV2ForSequenceClassification`. Word [+ absolute position, when
//! `position_biased_input`] [+ token type, when `type_vocab_size > 0`] embeddings [-> `embed_proj`
//! without bias, when `embedding_size` differs] -> LayerNorm -> zeroed at padding -> dropout;
//! post-norm layers whose attention adds disentangled relative-position terms to the scores
//! (content-to-position `c2p` and position-to-content `p2c`, from `encoder.rel_embeddings`
//! [LayerNorm'ed, `norm_rel_ebd = "layer_norm"`], projected by the layer's own query/key
//! projections when `share_att_key`, else by `pos_query_proj`/`pos_key_proj`; relative distances
//! log-bucketed when `position_buckets > 0`); the head on [CLS]: dropout (`pooler_dropout`) ->
//! `pooler.dense` -> GELU -> dropout (`cls_dropout`, else `hidden_dropout_prob`) -> `classifier`.
//! A pretraining checkpoint's `lm_predictions.*`/`mask_predictions.*` are reported as unused, its
//! unused absolute `position_embeddings` are ignored (as transformers does).

use anyhow::{Result, bail};
use serde_json::{Map, Value};

use crate::model::config::{self, DropoutRates, ModelConfig, RelativeAttention};
use crate::model::family::{
    EncoderKind, Family, HeadActivation, HeadLayout, LayerNames, Layout, Positions, Projection,
    ProjectionPlacement, RelativeNames, count_or, flag_or, float_or, text_or,
};

pub static FAMILY: Family = Family {
    model_type: "deberta-v2",
    name: "DeBERTa-v2/v3",
    architecture: "DebertaV2ForSequenceClassification",
    read_config,
    encoder: EncoderKind::PostNorm,
    layout: Layout {
        base: "deberta",
        base_parts: &["embeddings", "encoder"],
        word_embeddings: "embeddings.word_embeddings",
        position_embeddings: "embeddings.position_embeddings",
        token_type_embeddings: Some("embeddings.token_type_embeddings"),
        embeddings_norm: "embeddings.LayerNorm",
        embeddings_project: Some(Projection {
            name: "embeddings.embed_proj",
            placement: ProjectionPlacement::BeforeNormWithoutBias,
        }),
        mask_embeddings: true,
        positions: Positions::Absolute,
        layers: "encoder.layer",
        layer: LayerNames {
            query: "attention.self.query_proj",
            key: "attention.self.key_proj",
            value: "attention.self.value_proj",
            attention_output: "attention.output.dense",
            attention_norm: "attention.output.LayerNorm",
            intermediate: "intermediate.dense",
            output: "output.dense",
            output_norm: "output.LayerNorm",
        },
        relative: Some(RelativeNames {
            embeddings: "encoder.rel_embeddings",
            norm: "encoder.LayerNorm",
            position_key: "attention.self.pos_key_proj",
            position_query: "attention.self.pos_query_proj",
        }),
        dropout_after_attention: true,
        head: HeadLayout {
            dense: "pooler.dense",
            activation: HeadActivation::Gelu,
            output: "classifier",
            dropout_before_dense: true,
            dense_is_pretrained: false,
            dropout_key: "cls_dropout",
        },
    },
};

/// The relative-attention kinds `pos_att_type` may name, as a list or as `"p2c|c2p"`.
fn attention_kinds(object: &Map<String, Value>) -> Result<Vec<String>> {
    let kinds: Vec<String> = match object.get("pos_att_type") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => text
            .to_lowercase()
            .split('|')
            .map(|kind| kind.trim().to_string())
            .filter(|kind| !kind.is_empty())
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(|kind| kind.trim().to_lowercase())
                    .ok_or_else(|| anyhow::anyhow!("`pos_att_type` holds {item}, not a string"))
            })
            .collect::<Result<_>>()?,
        Some(other) => bail!("`pos_att_type` is {other}, not a list or a string"),
    };
    for kind in &kinds {
        if !matches!(kind.as_str(), "c2p" | "p2c") {
            bail!("`pos_att_type` names \"{kind}\"; DeBERTa-v2 computes \"c2p\" and \"p2c\"");
        }
    }
    Ok(kinds)
}

/// transformers' `DebertaV2Config` defaults: `type_vocab_size` 0, `layer_norm_eps` 1e-7,
/// `relative_attention` false, `position_biased_input` true, `pooler_dropout` 0,
/// `pooler_hidden_act` and `hidden_act` "gelu"; `max_relative_positions < 1` means
/// `max_position_embeddings`. A convolution after the first layer (`conv_kernel_size > 0`,
/// DeBERTa-v2-xlarge/xxlarge) is refused.
fn read_config(object: &Map<String, Value>) -> Result<ModelConfig> {
    let mut written = object.clone();
    for key in ["hidden_act", "pooler_hidden_act"] {
        let activation = text_or(&mut written, key, "gelu")?;
        if activation != "gelu" {
            bail!("{key} \"{activation}\" is not supported; DeBERTa-v2 uses \"gelu\"");
        }
    }
    if config::optional_count(object, "conv_kernel_size")?.unwrap_or(0) > 0 {
        bail!(
            "conv_kernel_size is set: the convolution layer of DeBERTa-v2-xlarge/xxlarge is not supported"
        );
    }
    let hidden = float_or(&mut written, "hidden_dropout_prob", 0.1)?;
    let attention = float_or(&mut written, "attention_probs_dropout_prob", 0.1)?;
    let classifier = config::number(object, "cls_dropout")?.unwrap_or(hidden);
    let pooler_dropout = float_or(&mut written, "pooler_dropout", 0.0)?;
    let type_vocab_size = count_or(&mut written, "type_vocab_size", 0)?;
    let initializer_range = float_or(&mut written, "initializer_range", 0.02)?;
    let layer_norm_eps = float_or(&mut written, "layer_norm_eps", 1e-7)?;
    let hidden_size = config::count(object, "hidden_size")?;
    let max_position_embeddings = config::count(object, "max_position_embeddings")?;
    let position_embeddings = flag_or(object, "position_biased_input", true);
    let kinds = attention_kinds(object)?;
    let content_to_position = kinds.iter().any(|kind| kind == "c2p");
    let position_to_content = kinds.iter().any(|kind| kind == "p2c");
    let relative = flag_or(object, "relative_attention", false);
    let relative_attention = if relative {
        let max_relative_positions =
            match object.get("max_relative_positions").and_then(Value::as_i64) {
                Some(positions) if positions >= 1 => positions as usize,
                _ => max_position_embeddings,
            };
        let position_buckets = match object.get("position_buckets").and_then(Value::as_i64) {
            Some(buckets) if buckets > 0 => buckets as usize,
            _ => 0,
        };
        let normalize_embeddings = config::text(object, "norm_rel_ebd")?
            .unwrap_or("none")
            .to_lowercase()
            .split('|')
            .any(|part| part.trim() == "layer_norm");
        Some(RelativeAttention {
            position_buckets,
            max_relative_positions,
            content_to_position,
            position_to_content,
            share_attention_key: flag_or(object, "share_att_key", false),
            normalize_embeddings,
        })
    } else {
        None
    };
    Ok(ModelConfig {
        family: &FAMILY,
        vocab_size: config::count(object, "vocab_size")?,
        hidden_size,
        embedding_size: config::optional_count(object, "embedding_size")?.unwrap_or(hidden_size),
        num_hidden_layers: config::count(object, "num_hidden_layers")?,
        num_attention_heads: config::count(object, "num_attention_heads")?,
        intermediate_size: config::count(object, "intermediate_size")?,
        max_position_embeddings,
        type_vocab_size,
        layer_norm_eps,
        initializer_range,
        pad_token_id: config::optional_count(object, "pad_token_id")?.map_or(0, |id| id as u32),
        dropout: DropoutRates {
            hidden,
            attention,
            classifier,
        },
        position_embeddings,
        relative_attention,
        attention_scale_factor: 1 + content_to_position as usize + position_to_content as usize,
        pooler_dropout: Some(pooler_dropout),
        modern_bert: None,
        written,
    })
}

/// transformers' `make_log_bucket_position` for one relative distance, in f32 as torch computes
/// it: distances within `bucket_size / 2` kept, longer ones mapped logarithmically so that
/// `max_position` lands on `bucket_size - 1`.
pub fn log_bucket_position(distance: i64, bucket_size: usize, max_position: usize) -> i64 {
    let middle = (bucket_size / 2) as i64;
    let absolute = if distance < middle && distance > -middle {
        middle - 1
    } else {
        distance.abs()
    };
    if absolute <= middle {
        return distance;
    }
    let ratio =
        (absolute as f32 / middle as f32).ln() / ((max_position as f32 - 1.0) / middle as f32).ln();
    let logarithmic = (ratio * (middle - 1) as f32).ceil() + middle as f32;
    logarithmic as i64 * distance.signum()
}

/// The relative position of query `i` to key `j`: `i - j`, bucketed when the model buckets
/// (transformers' `build_relative_position`).
pub fn relative_position(i: usize, j: usize, relative: &RelativeAttention) -> i64 {
    let distance = i as i64 - j as i64;
    if relative.position_buckets > 0 {
        log_bucket_position(
            distance,
            relative.position_buckets,
            relative.max_relative_positions,
        )
    } else {
        distance
    }
}

/// The row of `rel_embeddings` that both `c2p` and `p2c` read for query `i` and key `j`:
/// `clamp(relative position + span, 0, 2 span - 1)`.
pub fn relative_embedding_row(i: usize, j: usize, relative: &RelativeAttention) -> usize {
    let span = relative.span() as i64;
    (relative_position(i, j, relative) + span).clamp(0, 2 * span - 1) as usize
}
