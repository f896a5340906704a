//! `EncoderClassifier`: the maths of transformers' `*ForSequenceClassification` for every
//! supported family (`family`), in candle, every operation differentiable, every random draw
//! from [`SeededRandom`].
//!
//! embeddings (word + position [+ token type], LayerNorm, dropout [, projection]) -> N post-norm
//! encoder layers (self-attention with the padding mask, dropout on probabilities, output dense
//! [, dropout], residual, LayerNorm; feed-forward with GELU (erf), dropout, residual, LayerNorm)
//! -> the family's head on the first token ([dropout,] dense, tanh/ReLU/GELU, dropout, output).
//! DeBERTa (`family::deberta`): no absolute positions where `position_biased_input` is false, the
//! projection before the embeddings' LayerNorm, the embeddings zeroed at padding, and its
//! disentangled relative-position terms added to the attention scores (`RelativeRows`: which
//! rows of the relative embeddings each query-key pair reads, `q . Wk r` and `k . Wq r`): on the
//! CPU in f32/f64 the fused `packed_attention::relative_attention`, elsewhere composed candle ops
//! (products and gathers) with their backward passes.
//!
//! Parameters carry transformers' names (`bert.encoder.layer.0.attention.self.query.weight`,
//! `distilbert.transformer.layer.0.attention.q_lin.weight`, `classifier.out_proj.weight`), so
//! checkpoints load and save without renaming.

use std::collections::HashMap;

use anyhow::{Context, bail};
use candle_core::{DType, Device, Tensor, Var};

use crate::model::Depth;
use crate::model::config::{DropoutRates, ModelConfig, RelativeAttention};
use crate::model::family::{
    EncoderKind, HeadActivation, Layout, Positions, ProjectionPlacement, RelativeNames, deberta,
};
use crate::model::kernels::QueryRows;
use crate::model::layers::{self, Graph, Kernels, LayerNorm, Linear, Precision, operand};
use crate::model::modernbert::ModernBert;
use crate::model::packed_attention::{
    PackedAttention, Relative, packed_attention, relative_attention,
};
use crate::model::unpadded::RealRows;
use crate::support::random::{SeededRandom, stream};

/// Which rows the encoder's row-wise work covers (`unpadded`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Rows {
    /// Every position of the padded batch (what [`EncoderClassifier::encode`] returns).
    Padded,
    /// The real tokens only, and past the last layer's attention each example's first token
    /// only, where the layers allow it (BERT's attention on the CPU); the other positions of the
    /// hidden states come out as zeros. The classifier's logits are the padded ones, with less
    /// work.
    #[default]
    Real,
}

/// A tokenized batch, all `[batch, length]` u32 tensors on the model's device.
#[derive(Clone, Debug)]
pub struct Batch {
    pub input_ids: Tensor,
    pub token_type_ids: Tensor,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Tensor,
}

impl Batch {
    /// Builds a batch from rows of token ids, padding each to the longest with `pad_id`; every
    /// token type 0.
    pub fn from_rows(
        rows: &[Vec<u32>],
        pad_id: u32,
        device: &Device,
    ) -> candle_core::Result<Batch> {
        Batch::with_token_types(rows, None, pad_id, device)
    }

    /// [`Batch::from_rows`] with each row's token type ids (a pair's, as the tokenizer gives
    /// them), padded with 0; `None`: all 0. A model without two or more token types ignores
    /// them, as transformers' tokenizers do not give them to such models.
    pub fn with_token_types(
        rows: &[Vec<u32>],
        type_ids: Option<&[Vec<u32>]>,
        pad_id: u32,
        device: &Device,
    ) -> candle_core::Result<Batch> {
        let length = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len() * length);
        let mut mask = Vec::with_capacity(rows.len() * length);
        let mut types = Vec::with_capacity(rows.len() * length);
        for (index, row) in rows.iter().enumerate() {
            ids.extend_from_slice(row);
            ids.extend(std::iter::repeat_n(pad_id, length - row.len()));
            mask.extend(std::iter::repeat_n(1u32, row.len()));
            mask.extend(std::iter::repeat_n(0u32, length - row.len()));
            match type_ids {
                Some(type_ids) => {
                    assert_eq!(type_ids[index].len(), row.len(), "one type id per token");
                    types.extend_from_slice(&type_ids[index]);
                }
                None => types.extend(std::iter::repeat_n(0u32, row.len())),
            }
            types.extend(std::iter::repeat_n(0u32, length - row.len()));
        }
        let shape = (rows.len(), length);
        Ok(Batch {
            input_ids: Tensor::from_vec(ids, shape, device)?,
            token_type_ids: Tensor::from_vec(types, shape, device)?,
            attention_mask: Tensor::from_vec(mask, shape, device)?,
        })
    }
}

/// Whether dropout is on. Evaluation is deterministic.
pub enum Mode<'a> {
    /// No dropout, and no graph recorded: nothing can be differentiated, and every intermediate
    /// tensor is freed as soon as it has been read.
    Eval,
    /// Dropout masks come from this generator (one per optimizer step, see `random`).
    Train(&'a mut SeededRandom),
}

impl Mode<'_> {
    /// Training records the graph for the backward pass; evaluation does not.
    pub fn graph(&self) -> Graph {
        match self {
            Mode::Eval => Graph::Skip,
            Mode::Train(_) => Graph::Record,
        }
    }
}

#[derive(Clone, Debug)]
struct Embeddings {
    word: Var,
    /// `None` in a model without absolute positions (DeBERTa-v3).
    position: Option<Var>,
    /// `None` in a model without token types.
    token_type: Option<Var>,
    norm: LayerNorm,
    /// `embedding_size` -> `hidden_size`, where they differ (ELECTRA, DeBERTa).
    project: Option<EmbeddingsProjection>,
}

#[derive(Clone, Debug)]
enum EmbeddingsProjection {
    /// After the LayerNorm, with a bias (ELECTRA).
    AfterNorm(Linear),
    /// Before the LayerNorm, a weight `[hidden, embedding]` only (DeBERTa).
    BeforeNorm(Var),
}

/// DeBERTa's relative embeddings `[2 span, hidden]` and their LayerNorm.
#[derive(Clone, Debug)]
struct RelativeEmbeddings {
    table: Var,
    norm: Option<LayerNorm>,
}

#[derive(Clone, Debug)]
struct EncoderLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
    /// DeBERTa without `share_att_key`: the relative embeddings' own projections.
    position_key: Option<Linear>,
    position_query: Option<Linear>,
}

/// The classification head on the first token (`family::HeadLayout`).
#[derive(Clone, Debug)]
struct Head {
    dense: Linear,
    output: Linear,
}

/// What loading found: tensors initialised because the checkpoint lacked them, and checkpoint
/// tensors that were not used (as transformers reports them).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    pub initialized: Vec<String>,
    pub unexpected: Vec<String>,
    /// Human-readable warnings (a missing pooler, a head of another size).
    pub warnings: Vec<String>,
}

/// The post-norm encoder of BERT, DistilBERT, RoBERTa, XLM-R, ELECTRA and DeBERTa, and its head.
#[derive(Clone, Debug)]
struct PostNorm {
    embeddings: Embeddings,
    /// DeBERTa's relative embeddings, where the model has relative attention.
    relative: Option<RelativeEmbeddings>,
    layers: Vec<EncoderLayer>,
    head: Head,
}

/// The maths of a family: the shared post-norm encoder, or ModernBERT's (`modernbert`).
#[derive(Clone, Debug)]
enum Body {
    PostNorm(PostNorm),
    ModernBert(ModernBert),
}

/// A sequence classifier of any supported family: the shared encoder and the family's head.
#[derive(Clone, Debug)]
pub struct EncoderClassifier {
    config: ModelConfig,
    num_labels: usize,
    body: Body,
    /// Every trainable tensor, by transformers name, in a fixed order.
    parameters: Vec<(String, Var)>,
    /// Each parameter's place in the model, in the same order.
    depths: Vec<Depth>,
    /// The parameters that train: all but the frozen ones, in the same order.
    trainable: Vec<(String, Var)>,
    /// Their depths, in the same order.
    trainable_depths: Vec<Depth>,
    /// Frozen: nothing (`None`), the embeddings (`Some(0)`), or the embeddings and encoder layers
    /// `0..n` (`Some(n)`).
    frozen_layers: Option<usize>,
    pub dropout: DropoutRates,
    /// Which LayerNorm, softmax and GELU run; [`Kernels::Fused`] unless a test swaps it.
    pub kernels: Kernels,
    /// The dense layers' matrix products: [`Precision::Fp32`] unless the run asks for bf16.
    pub precision: Precision,
    /// Which rows [`EncoderClassifier::forward`] computes: [`Rows::Real`] unless a test asks.
    pub rows: Rows,
}

/// Maps a checkpoint key to bertlab's name (the base model's tensors under the family's prefix,
/// head tensors as they are), or `None` for buffers that are ignored without a report
/// (`position_ids`, `token_type_ids`).
fn normalize_key(layout: &Layout, key: &str) -> Option<String> {
    let key = key
        .replace("LayerNorm.gamma", "LayerNorm.weight")
        .replace("LayerNorm.beta", "LayerNorm.bias");
    if key.ends_with("embeddings.position_ids") || key.ends_with("embeddings.token_type_ids") {
        return None;
    }
    let first = key.split('.').next().unwrap_or_default();
    if layout.base_parts.contains(&first) {
        return Some(format!("{}.{key}", layout.base));
    }
    Some(key)
}

fn normal_tensor(
    shape: &[usize],
    std: f64,
    random: &mut SeededRandom,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let count: usize = shape.iter().product();
    let values: Vec<f64> = (0..count).map(|_| random.normal() * std).collect();
    Tensor::from_vec(values, shape, device)?.to_dtype(dtype)
}

/// RoBERTa's position ids (transformers' `create_position_ids_from_input_ids`): `pad + 1`,
/// `pad + 2`, ... over the tokens that are not `pad`, and `pad` at padding. `[batch, length]` u32.
fn position_ids_after_padding(input_ids: &Tensor, pad: u32) -> candle_core::Result<Tensor> {
    let rows = input_ids.to_device(&Device::Cpu)?.to_vec2::<u32>()?;
    let (batch_size, length) = input_ids.dims2()?;
    let mut ids = Vec::with_capacity(batch_size * length);
    for row in rows {
        let mut counted = 0u32;
        for id in row {
            if id == pad {
                ids.push(pad);
            } else {
                counted += 1;
                ids.push(pad + counted);
            }
        }
    }
    Tensor::from_vec(ids, (batch_size, length), input_ids.device())
}

/// Which rows of DeBERTa's relative embeddings a sequence of `length` tokens reads: rows
/// `first .. first + count`, and for each query `i` and key `j` the row (less `first`) that
/// `c2p` reads at `[i, j]` and `p2c` at `[j, i]` (both read `row(i, j)`, since the bucketing is
/// odd in the distance), as `[length, length]` row-major.
struct RelativeRows {
    first: usize,
    count: usize,
    content_to_position: Vec<u32>,
    position_to_content: Vec<u32>,
}

impl RelativeRows {
    fn new(length: usize, settings: &RelativeAttention) -> RelativeRows {
        let rows: Vec<usize> = (0..length * length)
            .map(|pair| deberta::relative_embedding_row(pair / length, pair % length, settings))
            .collect();
        let first = rows.iter().copied().min().unwrap_or(0);
        let last = rows.iter().copied().max().unwrap_or(0);
        let mut content_to_position = vec![0u32; length * length];
        let mut position_to_content = vec![0u32; length * length];
        for i in 0..length {
            for j in 0..length {
                let row = (rows[i * length + j] - first) as u32;
                content_to_position[i * length + j] = row;
                position_to_content[j * length + i] = row;
            }
        }
        RelativeRows {
            first,
            count: last + 1 - first,
            content_to_position,
            position_to_content,
        }
    }
}

/// The projections of DeBERTa's relative embeddings a layer's scores use: the position keys
/// (content-to-position) and the position queries (position-to-content), those present; the
/// layer's own key and query when `share_att_key`.
fn position_projections<'a>(
    layer: &'a EncoderLayer,
    settings: &RelativeAttention,
) -> (Option<&'a Linear>, Option<&'a Linear>) {
    let (key, query) = if settings.share_attention_key {
        (Some(&layer.key), Some(&layer.query))
    } else {
        (layer.position_key.as_ref(), layer.position_query.as_ref())
    };
    (
        key.filter(|_| settings.content_to_position),
        query.filter(|_| settings.position_to_content),
    )
}

/// Takes the checkpoint's tensors by name, checking shapes, and keeps the names that are missing.
pub(crate) struct Tensors {
    pub(crate) available: HashMap<String, Tensor>,
    pub(crate) missing: Vec<String>,
    pub(crate) dtype: DType,
    pub(crate) device: Device,
}

impl Tensors {
    /// "the checkpoint lacks N encoder tensors: a, b, ...".
    pub(crate) fn missing_message(&self) -> String {
        let missing = &self.missing;
        let shown: Vec<&str> = missing.iter().take(8).map(String::as_str).collect();
        format!(
            "the checkpoint lacks {} encoder tensor{}: {}{}",
            missing.len(),
            if missing.len() == 1 { "" } else { "s" },
            shown.join(", "),
            if missing.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        )
    }

    /// The tensor `name` of shape `shape` as a parameter, `None` (recorded as missing) when the
    /// checkpoint lacks it, an error when its shape differs.
    pub(crate) fn take(&mut self, name: &str, shape: &[usize]) -> anyhow::Result<Option<Var>> {
        match self.available.remove(name) {
            None => {
                self.missing.push(name.to_string());
                Ok(None)
            }
            Some(tensor) => {
                if tensor.dims() != shape {
                    bail!(
                        "checkpoint tensor {name} has shape {:?}, the config implies {:?}",
                        tensor.dims(),
                        shape
                    );
                }
                let tensor = tensor
                    .to_dtype(self.dtype)?
                    .to_device(&self.device)?
                    .contiguous()?;
                Ok(Some(Var::from_tensor(&tensor)?))
            }
        }
    }

    /// A dense layer `prefix.weight` `[out, in]` and `prefix.bias` `[out]`.
    pub(crate) fn linear(
        &mut self,
        prefix: &str,
        out: usize,
        input: usize,
    ) -> anyhow::Result<Option<Linear>> {
        let weight = self.take(&format!("{prefix}.weight"), &[out, input])?;
        let bias = self.take(&format!("{prefix}.bias"), &[out])?;
        Ok(weight
            .zip(bias)
            .map(|(weight, bias)| Linear { weight, bias }))
    }

    fn norm(
        &mut self,
        prefix: &str,
        size: usize,
        epsilon: f64,
    ) -> anyhow::Result<Option<LayerNorm>> {
        let weight = self.take(&format!("{prefix}.weight"), &[size])?;
        let bias = self.take(&format!("{prefix}.bias"), &[size])?;
        Ok(weight.zip(bias).map(|(weight, bias)| LayerNorm {
            weight,
            bias,
            epsilon,
        }))
    }
}

/// A dense layer initialised as transformers does (normal with std `initializer_range`, zero
/// bias) from stream `stream` of `seed`.
pub(crate) fn initialized_linear(
    out: usize,
    input: usize,
    config: &ModelConfig,
    seed: u64,
    stream: u64,
    dtype: DType,
    device: &Device,
) -> anyhow::Result<Linear> {
    let mut random = SeededRandom::new(seed, stream);
    let weight = normal_tensor(
        &[out, input],
        config.initializer_range,
        &mut random,
        dtype,
        device,
    )?;
    Ok(Linear {
        weight: Var::from_tensor(&weight)?,
        bias: Var::zeros(out, dtype, device)?,
    })
}

impl EncoderClassifier {
    /// Builds a classifier from checkpoint tensors (the base model's keys with or without the
    /// family's prefix). Missing head tensors are initialised as transformers does (normal with
    /// std `initializer_range`, zero bias) from `seed`; any other missing tensor is an error.
    pub fn from_tensors(
        config: ModelConfig,
        num_labels: usize,
        tensors: HashMap<String, Tensor>,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> anyhow::Result<(EncoderClassifier, LoadReport)> {
        if num_labels < 2 {
            bail!("a classifier needs at least 2 labels, got {num_labels}");
        }
        let layout = &config.family.layout;
        let base = layout.base;
        let mut report = LoadReport::default();
        let mut checkpoint = Tensors {
            available: tensors
                .into_iter()
                .filter_map(|(key, tensor)| Some((normalize_key(layout, &key)?, tensor)))
                .collect(),
            missing: Vec::new(),
            dtype,
            device: device.clone(),
        };
        if config.family.encoder == EncoderKind::ModernBert {
            let body = ModernBert::load(&config, num_labels, &mut checkpoint, seed, &mut report)?;
            report.unexpected = checkpoint.available.into_keys().collect();
            report.unexpected.sort();
            return EncoderClassifier::assemble(config, num_labels, Body::ModernBert(body), report);
        }
        let hidden = config.hidden_size;
        let width = config.embedding_size;
        let intermediate = config.intermediate_size;
        let epsilon = config.layer_norm_eps;

        let word = checkpoint.take(
            &format!("{base}.{}.weight", layout.word_embeddings),
            &[config.vocab_size, width],
        )?;
        let position_name = format!("{base}.{}.weight", layout.position_embeddings);
        let position = if config.position_embeddings {
            Some(checkpoint.take(&position_name, &[config.max_position_embeddings, width])?)
        } else {
            // DeBERTa-v3 checkpoints keep the table they do not use; transformers ignores it.
            checkpoint.available.remove(&position_name);
            None
        };
        let token_type = match layout.token_type_embeddings {
            Some(name) if config.type_vocab_size > 0 => Some(checkpoint.take(
                &format!("{base}.{name}.weight"),
                &[config.type_vocab_size, width],
            )?),
            _ => None,
        };
        let projected = layout.embeddings_project.filter(|_| width != hidden);
        let norm_width = match projected.map(|projection| projection.placement) {
            Some(ProjectionPlacement::BeforeNormWithoutBias) => hidden,
            _ => width,
        };
        let norm = checkpoint.norm(
            &format!("{base}.{}", layout.embeddings_norm),
            norm_width,
            epsilon,
        )?;
        let project = match projected {
            Some(projection) => {
                let name = format!("{base}.{}", projection.name);
                Some(match projection.placement {
                    ProjectionPlacement::AfterNormWithBias => checkpoint
                        .linear(&name, hidden, width)?
                        .map(EmbeddingsProjection::AfterNorm),
                    ProjectionPlacement::BeforeNormWithoutBias => checkpoint
                        .take(&format!("{name}.weight"), &[hidden, width])?
                        .map(EmbeddingsProjection::BeforeNorm),
                })
            }
            None => None,
        };
        let relative = match (config.relative_attention, layout.relative) {
            (Some(settings), Some(names)) => {
                let table = checkpoint.take(
                    &format!("{base}.{}.weight", names.embeddings),
                    &[2 * settings.span(), hidden],
                )?;
                let norm = if settings.normalize_embeddings {
                    Some(checkpoint.norm(&format!("{base}.{}", names.norm), hidden, epsilon)?)
                } else {
                    None
                };
                Some((table, norm))
            }
            (Some(_), None) => bail!("{} has no relative-position attention", config.family.name),
            _ => None,
        };
        // The relative projections a layer has of its own: not with `share_att_key`.
        let own_projections = config
            .relative_attention
            .filter(|settings| !settings.share_attention_key);
        let mut layers = Vec::new();
        for index in 0..config.num_hidden_layers {
            let prefix = format!("{base}.{}.{index}", layout.layers);
            let names = &layout.layer;
            let mut linear = |name: &str, out: usize, input: usize| {
                checkpoint.linear(&format!("{prefix}.{name}"), out, input)
            };
            let query = linear(names.query, hidden, hidden)?;
            let key = linear(names.key, hidden, hidden)?;
            let value = linear(names.value, hidden, hidden)?;
            let attention_output = linear(names.attention_output, hidden, hidden)?;
            let attention_norm = checkpoint.norm(
                &format!("{prefix}.{}", names.attention_norm),
                hidden,
                epsilon,
            )?;
            let intermediate_layer = checkpoint.linear(
                &format!("{prefix}.{}", names.intermediate),
                intermediate,
                hidden,
            )?;
            let output =
                checkpoint.linear(&format!("{prefix}.{}", names.output), hidden, intermediate)?;
            let output_norm =
                checkpoint.norm(&format!("{prefix}.{}", names.output_norm), hidden, epsilon)?;
            let mut own = |wanted: bool, name: fn(&RelativeNames) -> &'static str| match (
                wanted,
                layout.relative,
            ) {
                (true, Some(names)) => checkpoint
                    .linear(&format!("{prefix}.{}", name(&names)), hidden, hidden)
                    .map(Some),
                _ => Ok(None),
            };
            let position_key = own(
                own_projections.is_some_and(|settings| settings.content_to_position),
                |names| names.position_key,
            )?;
            let position_query = own(
                own_projections.is_some_and(|settings| settings.position_to_content),
                |names| names.position_query,
            )?;
            layers.push((|| {
                Some(EncoderLayer {
                    query: query?,
                    key: key?,
                    value: value?,
                    attention_output: attention_output?,
                    attention_norm: attention_norm?,
                    intermediate: intermediate_layer?,
                    output: output?,
                    output_norm: output_norm?,
                    position_key: match position_key {
                        Some(linear) => Some(linear?),
                        None => None,
                    },
                    position_query: match position_query {
                        Some(linear) => Some(linear?),
                        None => None,
                    },
                })
            })());
        }
        if !checkpoint.missing.is_empty() {
            bail!(checkpoint.missing_message());
        }
        let present = "every encoder tensor is present";
        let embeddings = Embeddings {
            word: word.expect(present),
            position: position.map(|position| position.expect(present)),
            token_type: token_type.map(|token_type| token_type.expect(present)),
            norm: norm.expect(present),
            project: project.map(|project| project.expect(present)),
        };
        let relative = relative.map(|(table, norm)| RelativeEmbeddings {
            table: table.expect(present),
            norm: norm.map(|norm| norm.expect(present)),
        });
        let layers = layers
            .into_iter()
            .map(|layer| layer.expect(present))
            .collect();

        // The head: its dense layer (BERT's pooler) and its output layer, each initialised
        // where the checkpoint lacks it; an output of another size is replaced.
        let head_layout = &layout.head;
        let dense = match checkpoint.linear(head_layout.dense, hidden, hidden)? {
            Some(dense) => dense,
            None => {
                if head_layout.dense_is_pretrained {
                    report.warnings.push(format!(
                        "the checkpoint has no pooler ({}): it was initialised randomly and will be trained",
                        head_layout.dense
                    ));
                }
                report
                    .initialized
                    .push(format!("{}.weight", head_layout.dense));
                report
                    .initialized
                    .push(format!("{}.bias", head_layout.dense));
                initialized_linear(
                    hidden,
                    hidden,
                    &config,
                    seed,
                    stream::POOLER_INITIALIZATION,
                    dtype,
                    device,
                )?
            }
        };
        let output_weight = format!("{}.weight", head_layout.output);
        let output_bias = format!("{}.bias", head_layout.output);
        let output = match checkpoint.linear(head_layout.output, num_labels, hidden) {
            Ok(Some(output)) => output,
            result => {
                if result.is_err()
                    || checkpoint.available.contains_key(&output_weight)
                    || checkpoint.available.contains_key(&output_bias)
                {
                    report.warnings.push(format!(
                        "the checkpoint's classifier does not have {num_labels} labels: a new one was initialised"
                    ));
                }
                report.initialized.push(output_weight.clone());
                report.initialized.push(output_bias.clone());
                initialized_linear(
                    num_labels,
                    hidden,
                    &config,
                    seed,
                    stream::INITIALIZATION,
                    dtype,
                    device,
                )?
            }
        };
        checkpoint.available.remove(&output_weight);
        checkpoint.available.remove(&output_bias);
        report.unexpected = checkpoint.available.into_keys().collect();
        report.unexpected.sort();

        let body = Body::PostNorm(PostNorm {
            embeddings,
            relative,
            layers,
            head: Head { dense, output },
        });
        EncoderClassifier::assemble(config, num_labels, body, report)
    }

    /// The classifier of `body`, its parameters listed, nothing frozen.
    fn assemble(
        config: ModelConfig,
        num_labels: usize,
        body: Body,
        report: LoadReport,
    ) -> anyhow::Result<(EncoderClassifier, LoadReport)> {
        let mut model = EncoderClassifier {
            dropout: config.dropout,
            config,
            num_labels,
            body,
            parameters: Vec::new(),
            depths: Vec::new(),
            trainable: Vec::new(),
            trainable_depths: Vec::new(),
            frozen_layers: None,
            kernels: Kernels::Fused,
            precision: Precision::Fp32,
            rows: Rows::Real,
        };
        (model.parameters, model.depths) = model.collect_parameters().into_iter().unzip();
        model.freeze(None)?;
        Ok((model, report))
    }

    /// Freezes the embeddings (`Some(0)`) or the embeddings and the lowest `n` encoder layers
    /// (`Some(n)`), or nothing (`None`): frozen tensors get no gradient (the forward pass does
    /// not record them) and leave [`EncoderClassifier::trainable_parameters`].
    pub fn freeze(&mut self, frozen_layers: Option<usize>) -> anyhow::Result<()> {
        if let Some(layers) = frozen_layers
            && layers > self.layer_count()
        {
            bail!(
                "cannot freeze {layers} layers: the model has {}",
                self.layer_count()
            );
        }
        self.frozen_layers = frozen_layers;
        (self.trainable, self.trainable_depths) = self
            .parameters
            .iter()
            .zip(&self.depths)
            .filter(|(_, depth)| !self.is_frozen(**depth))
            .map(|(parameter, depth)| (parameter.clone(), *depth))
            .unzip();
        Ok(())
    }

    /// Whether the parameters at `depth` are frozen.
    pub fn is_frozen(&self, depth: Depth) -> bool {
        match (self.frozen_layers, depth) {
            (None, _) | (_, Depth::Head) => false,
            (Some(_), Depth::Embeddings) => true,
            (Some(layers), Depth::Layer(index)) => index < layers,
        }
    }

    /// The graph mode of the parameters at `depth` in a pass of mode `graph`: frozen ones are
    /// never recorded.
    pub(crate) fn graph_at(&self, depth: Depth, graph: Graph) -> Graph {
        if self.is_frozen(depth) {
            Graph::Skip
        } else {
            graph
        }
    }

    /// The tensors that train (all, unless some are frozen), in the order of
    /// [`EncoderClassifier::parameters`].
    pub fn trainable_parameters(&self) -> &[(String, Var)] {
        &self.trainable
    }

    /// The depth of every tensor of [`EncoderClassifier::trainable_parameters`], in its order.
    pub fn trainable_depths(&self) -> &[Depth] {
        &self.trainable_depths
    }

    /// The depth of every tensor of [`EncoderClassifier::parameters`], in its order.
    pub fn parameter_depths(&self) -> &[Depth] {
        &self.depths
    }

    /// The number of encoder layers.
    pub fn layer_count(&self) -> usize {
        match &self.body {
            Body::PostNorm(encoder) => encoder.layers.len(),
            Body::ModernBert(encoder) => encoder.layer_count(),
        }
    }

    /// Every parameter by transformers name with its depth: the embeddings, the layers from the
    /// lowest, the head's dense layer, its output layer.
    fn collect_parameters(&self) -> Vec<((String, Var), Depth)> {
        let encoder = match &self.body {
            Body::PostNorm(encoder) => encoder,
            Body::ModernBert(encoder) => return encoder.parameters(),
        };
        let layout = &self.config.family.layout;
        let base = layout.base;
        let mut parameters = Vec::new();
        let mut push = |name: String, var: &Var, depth: Depth| {
            parameters.push(((name, var.clone()), depth));
        };
        let embeddings = Depth::Embeddings;
        push(
            format!("{base}.{}.weight", layout.word_embeddings),
            &encoder.embeddings.word,
            embeddings,
        );
        if let Some(position) = &encoder.embeddings.position {
            push(
                format!("{base}.{}.weight", layout.position_embeddings),
                position,
                embeddings,
            );
        }
        if let (Some(name), Some(var)) =
            (layout.token_type_embeddings, &encoder.embeddings.token_type)
        {
            push(format!("{base}.{name}.weight"), var, embeddings);
        }
        let prefix = format!("{base}.{}", layout.embeddings_norm);
        push(
            format!("{prefix}.weight"),
            &encoder.embeddings.norm.weight,
            embeddings,
        );
        push(
            format!("{prefix}.bias"),
            &encoder.embeddings.norm.bias,
            embeddings,
        );
        if let (Some(projection), Some(project)) =
            (layout.embeddings_project, &encoder.embeddings.project)
        {
            let name = projection.name;
            match project {
                EmbeddingsProjection::AfterNorm(linear) => {
                    push(format!("{base}.{name}.weight"), &linear.weight, embeddings);
                    push(format!("{base}.{name}.bias"), &linear.bias, embeddings);
                }
                EmbeddingsProjection::BeforeNorm(weight) => {
                    push(format!("{base}.{name}.weight"), weight, embeddings);
                }
            }
        }
        // The relative embeddings feed every layer: they sit with the embeddings.
        if let (Some(names), Some(relative)) = (layout.relative, &encoder.relative) {
            push(
                format!("{base}.{}.weight", names.embeddings),
                &relative.table,
                embeddings,
            );
            if let Some(norm) = &relative.norm {
                push(
                    format!("{base}.{}.weight", names.norm),
                    &norm.weight,
                    embeddings,
                );
                push(
                    format!("{base}.{}.bias", names.norm),
                    &norm.bias,
                    embeddings,
                );
            }
        }
        let names = &layout.layer;
        for (index, layer) in encoder.layers.iter().enumerate() {
            let prefix = format!("{base}.{}.{index}", layout.layers);
            let depth = Depth::Layer(index);
            for (name, weight, bias) in [
                (names.query, &layer.query.weight, &layer.query.bias),
                (names.key, &layer.key.weight, &layer.key.bias),
                (names.value, &layer.value.weight, &layer.value.bias),
                (
                    names.attention_output,
                    &layer.attention_output.weight,
                    &layer.attention_output.bias,
                ),
                (
                    names.attention_norm,
                    &layer.attention_norm.weight,
                    &layer.attention_norm.bias,
                ),
                (
                    names.intermediate,
                    &layer.intermediate.weight,
                    &layer.intermediate.bias,
                ),
                (names.output, &layer.output.weight, &layer.output.bias),
                (
                    names.output_norm,
                    &layer.output_norm.weight,
                    &layer.output_norm.bias,
                ),
            ] {
                push(format!("{prefix}.{name}.weight"), weight, depth);
                push(format!("{prefix}.{name}.bias"), bias, depth);
            }
            if let Some(names) = layout.relative {
                for (name, linear) in [
                    (names.position_key, &layer.position_key),
                    (names.position_query, &layer.position_query),
                ] {
                    if let Some(linear) = linear {
                        push(format!("{prefix}.{name}.weight"), &linear.weight, depth);
                        push(format!("{prefix}.{name}.bias"), &linear.bias, depth);
                    }
                }
            }
        }
        let head = &layout.head;
        for (name, linear) in [
            (head.dense, &encoder.head.dense),
            (head.output, &encoder.head.output),
        ] {
            push(format!("{name}.weight"), &linear.weight, Depth::Head);
            push(format!("{name}.bias"), &linear.bias, Depth::Head);
        }
        parameters
    }

    /// Whether `name` is an encoder layer's attention key bias, whose true gradient is zero
    /// (softmax ignores what is added to every score of a row, and the key bias adds `q . b` to
    /// every score of query `q`'s row): its computed gradient is rounding noise.
    ///
    /// DeBERTa: its position-to-content scores read the keys against positions, so there the
    /// layer's key bias changes scores key by key and has a true gradient; the bias of its own
    /// position key projection (`pos_key_proj`, content-to-position: `q . b` again) has none.
    pub fn is_attention_key_bias(&self, name: &str) -> bool {
        // ModernBERT rotates keys by their position: its key bias has a true gradient.
        if self.config.family.encoder == EncoderKind::ModernBert {
            return false;
        }
        let layout = &self.config.family.layout;
        let position_to_content = self
            .config
            .relative_attention
            .is_some_and(|relative| relative.position_to_content);
        name.strip_prefix(&format!("{}.{}.", layout.base, layout.layers))
            .and_then(|rest| rest.split_once('.'))
            .is_some_and(|(index, rest)| {
                index.parse::<usize>().is_ok()
                    && ((rest == format!("{}.bias", layout.layer.key) && !position_to_content)
                        || layout
                            .relative
                            .is_some_and(|names| rest == format!("{}.bias", names.position_key)))
            })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn num_labels(&self) -> usize {
        self.num_labels
    }

    pub fn dtype(&self) -> DType {
        self.parameters[0].1.dtype()
    }

    pub fn device(&self) -> &Device {
        self.parameters[0].1.device()
    }

    /// Every trainable tensor with its transformers name, in a fixed order.
    pub fn parameters(&self) -> &[(String, Var)] {
        &self.parameters
    }

    /// The encoder's last hidden states `[batch, length, hidden]`.
    pub fn encode(&self, batch: &Batch, mode: &mut Mode) -> anyhow::Result<Tensor> {
        match &self.body {
            Body::PostNorm(encoder) => self.encode_post_norm(encoder, batch, mode, Rows::Padded),
            Body::ModernBert(encoder) => encoder.encode(self, batch, mode),
        }
    }

    fn encode_post_norm(
        &self,
        encoder: &PostNorm,
        batch: &Batch,
        mode: &mut Mode,
        rows: Rows,
    ) -> anyhow::Result<Tensor> {
        let (batch_size, length) = batch
            .input_ids
            .dims2()
            .context("input_ids must be [batch, length]")?;
        let usable = self.config.max_sequence_length();
        if length > usable {
            bail!("sequence of {length} tokens is longer than the model's {usable} positions");
        }
        let hidden = self.config.hidden_size;
        let width = self.config.embedding_size;
        let layout = &self.config.family.layout;
        let dtype = self.dtype();
        let kernels = self.kernels;
        let precision = self.precision;
        let graph = mode.graph();
        let embeddings_graph = self.graph_at(Depth::Embeddings, graph);

        let word = layers::embedding_rows(
            &operand(&encoder.embeddings.word, embeddings_graph),
            &batch.input_ids.flatten_all()?,
            kernels,
        )?;
        let summed = match &encoder.embeddings.token_type {
            Some(token_type) => {
                // One token type (RoBERTa): every token reads row 0, whatever the tokenizer said.
                let types = if self.config.type_vocab_size < 2 {
                    batch.token_type_ids.zeros_like()?
                } else {
                    batch.token_type_ids.clone()
                };
                let token_type =
                    operand(token_type, embeddings_graph).index_select(&types.flatten_all()?, 0)?;
                (word + token_type)?
            }
            None => word,
        }
        .reshape((batch_size, length, width))?;
        let embedded = match &encoder.embeddings.position {
            None => summed,
            Some(position) => {
                let position_table = operand(position, embeddings_graph);
                match layout.positions {
                    Positions::Absolute => {
                        summed.broadcast_add(&position_table.narrow(0, 0, length)?.unsqueeze(0)?)?
                    }
                    Positions::AfterPadding => {
                        let ids =
                            position_ids_after_padding(&batch.input_ids, self.config.pad_token_id)?;
                        (summed
                            + position_table
                                .index_select(&ids.flatten_all()?, 0)?
                                .reshape((batch_size, length, width))?)?
                    }
                }
            }
        };
        let embedded = match &encoder.embeddings.project {
            Some(EmbeddingsProjection::BeforeNorm(weight)) => {
                embedded.broadcast_matmul(&operand(weight, embeddings_graph).t()?)?
            }
            _ => embedded,
        };
        let mut x = encoder
            .embeddings
            .norm
            .forward_graph(&embedded, kernels, embeddings_graph)?;
        if layout.mask_embeddings {
            let keep = batch
                .attention_mask
                .to_dtype(dtype)?
                .reshape((batch_size, length, 1))?;
            x = x.broadcast_mul(&keep)?;
        }
        x = self.dropout_hidden(&x, mode)?;
        if let Some(EmbeddingsProjection::AfterNorm(project)) = &encoder.embeddings.project {
            x = project.forward_with(&x, embeddings_graph, precision)?;
        }
        // The fused attention kernels run on the CPU in f32/f64: BERT's (`kernels::attention`)
        // where the scores are scaled `q . k / sqrt(head_size)`, the packed one otherwise (DeBERTa's
        // relative terms and scale).
        let fused_attention = kernels.fused_for(&x);
        // DeBERTa: the rows of the relative embeddings this length reads (normalised once), and
        // where each query-key pair reads them (as index tensors for the composed form).
        let relative = match (&encoder.relative, self.config.relative_attention) {
            (Some(relative), Some(settings)) => {
                let rows = RelativeRows::new(length, &settings);
                let table =
                    operand(&relative.table, embeddings_graph).narrow(0, rows.first, rows.count)?;
                let table = match &relative.norm {
                    Some(norm) => norm.forward_graph(&table, kernels, embeddings_graph)?,
                    None => table,
                };
                let heads = self.config.num_attention_heads;
                let shape = (batch_size, heads, length, length);
                let index = |values: &[u32]| -> candle_core::Result<Tensor> {
                    Tensor::from_slice(values, (1, 1, length, length), x.device())?
                        .broadcast_as(shape)?
                        .contiguous()
                };
                let indices = if fused_attention {
                    None
                } else {
                    Some((
                        index(&rows.content_to_position)?,
                        index(&rows.position_to_content)?,
                    ))
                };
                Some((settings, table, rows, indices))
            }
            _ => None,
        };

        // Additive mask: 0 where attended, the dtype's minimum at padding, as transformers does.
        let minimum = if dtype == DType::F64 {
            f64::MIN
        } else {
            f32::MIN as f64
        };
        let mask = batch.attention_mask.to_dtype(dtype)?;
        let additive = mask
            .affine(-minimum, minimum)?
            .reshape((batch_size, 1, 1, length))?;
        let bert_attention = layout.relative.is_none() && self.config.attention_scale_factor == 1;
        // The fused kernels take the mask as values.
        let additive_values = if fused_attention {
            additive
                .to_dtype(DType::F64)?
                .flatten_all()?
                .to_vec1::<f64>()?
        } else {
            Vec::new()
        };
        // BERT's fused attention on the CPU: the layers' row-wise work on the real tokens only
        // and, past the last attention, on the first tokens only (`unpadded`); the attention on
        // the padded layout. `current`: the rows `x` holds (`None`: every position, `x` then
        // `[batch * length, hidden]`).
        let unpadded =
            rows == Rows::Real && fused_attention && bert_attention && relative.is_none();
        let mut current = if unpadded {
            RealRows::of(&batch.attention_mask)?
        } else {
            None
        };
        if unpadded {
            x = match &current {
                Some(real) => real.gather(&x)?,
                None => x.reshape((batch_size * length, x.dim(2)?))?,
            };
        }
        let padded = |t: Tensor, layout: Option<&RealRows>| -> candle_core::Result<Tensor> {
            let width = t.dim(candle_core::D::Minus1)?;
            match layout {
                Some(real) => real.scatter(&t)?.reshape((batch_size, length, width)),
                None => t.reshape((batch_size, length, width)),
            }
        };
        let dropout_hidden = |t: &Tensor,
                              mode: &mut Mode,
                              layout: Option<&RealRows>|
         -> candle_core::Result<Tensor> {
            match (layout, mode) {
                (Some(real), Mode::Train(random)) => real.dropout(t, self.dropout.hidden, random),
                (_, mode) => self.dropout_hidden(t, mode),
            }
        };
        let first_tokens = if unpadded {
            Some(RealRows::first_tokens(batch_size, length, x.device())?)
        } else {
            None
        };
        let layer_count = encoder.layers.len();

        let heads = self.config.num_attention_heads;
        let head_size = self.config.head_size();
        let scale = if layout.relative.is_some() {
            // DeBERTa takes the square root in f32 (`torch.tensor(size, dtype=torch.float)`),
            // whatever the model's dtype.
            1.0 / f64::from(((head_size * self.config.attention_scale_factor) as f32).sqrt())
        } else {
            1.0 / (head_size as f64).sqrt()
        };
        let pass_graph = graph;
        for (index, layer) in encoder.layers.iter().enumerate() {
            let graph = self.graph_at(Depth::Layer(index), pass_graph);
            let split = |t: Tensor| -> candle_core::Result<Tensor> {
                t.reshape((batch_size, length, heads, head_size))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            // The last layer's queries and everything past its attention: first tokens only.
            let first = first_tokens.as_ref().filter(|_| index + 1 == layer_count);
            let query_rows = match first {
                Some(first) => Some(x.index_select(&first.positions_in(current.as_ref())?, 0)?),
                None => None,
            };
            let query =
                layer
                    .query
                    .forward_with(query_rows.as_ref().unwrap_or(&x), graph, precision)?;
            let key = layer.key.forward_with(&x, graph, precision)?;
            let value = layer.value.forward_with(&x, graph, precision)?;
            let attention_keep = |mode: &mut Mode| match mode {
                Mode::Train(random) if self.dropout.attention > 0.0 => Some(layers::dropout_mask(
                    batch_size * heads * length * length,
                    self.dropout.attention,
                    dtype,
                    random,
                )),
                _ => None,
            };
            let context = if fused_attention && bert_attention {
                let keep = attention_keep(mode);
                if !unpadded {
                    crate::model::kernels::attention(
                        &query,
                        &key,
                        &value,
                        heads,
                        additive_values.clone(),
                        keep,
                        QueryRows::All,
                    )?
                } else {
                    let query = match first {
                        Some(first) => padded(query, Some(first))?,
                        None => padded(query, current.as_ref())?,
                    };
                    let context = crate::model::kernels::attention(
                        &query,
                        &padded(key, current.as_ref())?,
                        &padded(value, current.as_ref())?,
                        heads,
                        additive_values.clone(),
                        keep,
                        QueryRows::Real,
                    )?;
                    if let (Some(first), Some(rows)) = (first, query_rows) {
                        x = rows;
                        current = Some(first.clone());
                    }
                    match &current {
                        Some(real) => real.gather(&context)?,
                        None => context.reshape((batch_size * length, hidden))?,
                    }
                }
            } else if fused_attention {
                let packed = Tensor::cat(&[&query, &key, &value], 2)?;
                let mut settings = PackedAttention {
                    heads,
                    scale,
                    mask: additive_values.clone(),
                    window: None,
                    rotary: None,
                    relative: None,
                    keep: None,
                };
                match &relative {
                    Some((relative_settings, table, rows, _)) => {
                        // The same draws in the same order as the composed form: the relative
                        // embeddings' dropout, then the probabilities'.
                        let table = self.dropout_hidden(table, mode)?;
                        let (position_key, position_query) =
                            position_projections(layer, relative_settings);
                        let mut parts = Vec::new();
                        for projection in [position_key, position_query].into_iter().flatten() {
                            parts.push(projection.forward_with(&table, graph, precision)?);
                        }
                        settings.keep = attention_keep(mode);
                        settings.relative = Some(Relative {
                            row_of: rows.content_to_position.clone(),
                            content_to_position: position_key.is_some(),
                            position_to_content: position_query.is_some(),
                        });
                        if parts.is_empty() {
                            settings.relative = None;
                            packed_attention(&packed, settings)?
                        } else {
                            relative_attention(&packed, &Tensor::cat(&parts, 1)?, settings)?
                        }
                    }
                    None => {
                        settings.keep = attention_keep(mode);
                        packed_attention(&packed, settings)?
                    }
                }
            } else {
                // Off the CPU, bf16 covers the attention's two products too (softmax stays f32).
                let low = precision == layers::Precision::Bf16 && !x.device().is_cpu();
                let product = |a: &Tensor, b: &Tensor| -> candle_core::Result<Tensor> {
                    if low {
                        a.to_dtype(DType::BF16)?
                            .matmul(&b.to_dtype(DType::BF16)?)?
                            .to_dtype(a.dtype())
                    } else {
                        a.matmul(b)
                    }
                };
                let query = split(query)?;
                let key = split(key)?;
                let value = split(value)?;
                let raw = product(&query, &key.t()?.contiguous()?)?;
                let raw = match &relative {
                    Some((settings, table, _, indices)) => {
                        let (content_to_position, position_to_content) = indices
                            .as_ref()
                            .context("the composed form has its indices")?;
                        let table = self.dropout_hidden(table, mode)?;
                        let positions = |linear: &Linear| -> candle_core::Result<Tensor> {
                            // [rows, hidden] -> [1, heads, rows, head_size]
                            linear
                                .forward_with(&table, graph, precision)?
                                .reshape((table.dim(0)?, heads, head_size))?
                                .transpose(0, 1)?
                                .unsqueeze(0)?
                                .contiguous()
                        };
                        let (position_key, position_query) = position_projections(layer, settings);
                        let mut raw = raw;
                        if let Some(position_key) = position_key {
                            // c2p[b, h, i, j] = q_i . position_key[row(i, j)]
                            let scores = query
                                .broadcast_matmul(&positions(position_key)?.transpose(2, 3)?)?
                                .contiguous()?;
                            raw = (raw + scores.gather(content_to_position, 3)?)?;
                        }
                        if let Some(position_query) = position_query {
                            // p2c[b, h, i, j] = k_j . position_query[row(i, j)]
                            let scores = key
                                .broadcast_matmul(&positions(position_query)?.transpose(2, 3)?)?
                                .contiguous()?;
                            raw =
                                (raw + scores.gather(position_to_content, 3)?.transpose(2, 3)?)?;
                        }
                        raw
                    }
                    None => raw,
                };
                let probabilities = if layers::gpu_fused(&raw, kernels) {
                    #[cfg(feature = "cuda")]
                    {
                        crate::model::cuda_kernels::masked_softmax(&raw, &additive, scale)?
                    }
                    #[cfg(not(feature = "cuda"))]
                    unreachable!("no GPU kernels in this build")
                } else {
                    layers::softmax(&(raw * scale)?.broadcast_add(&additive)?, kernels)?
                };
                let probabilities = match mode {
                    Mode::Eval => probabilities,
                    Mode::Train(random) => {
                        layers::dropout(&probabilities, self.dropout.attention, random)?
                    }
                };
                product(&probabilities, &value)?
                    .transpose(1, 2)?
                    .contiguous()?
                    .reshape((batch_size, length, hidden))?
            };
            let attended = layer
                .attention_output
                .forward_with(&context, graph, precision)?;
            let attended = if layout.dropout_after_attention {
                dropout_hidden(&attended, mode, current.as_ref())?
            } else {
                attended
            };
            x = layer
                .attention_norm
                .forward_graph(&(attended + &x)?, kernels, graph)?;
            let intermediate = layers::gelu(
                &layer.intermediate.forward_with(&x, graph, precision)?,
                kernels,
            )?;
            let output = dropout_hidden(
                &layer.output.forward_with(&intermediate, graph, precision)?,
                mode,
                current.as_ref(),
            )?;
            x = layer
                .output_norm
                .forward_graph(&(output + &x)?, kernels, graph)?;
        }
        Ok(match (&current, unpadded) {
            (Some(rows), _) => rows.scatter(&x)?.reshape((batch_size, length, hidden))?,
            (None, true) => x.reshape((batch_size, length, hidden))?,
            (None, false) => x,
        })
    }

    fn dropout_hidden(&self, x: &Tensor, mode: &mut Mode) -> candle_core::Result<Tensor> {
        match mode {
            Mode::Eval => Ok(x.clone()),
            Mode::Train(random) => layers::dropout(x, self.dropout.hidden, random),
        }
    }

    /// Class logits `[batch, num_labels]`: the family's head on the first token.
    pub fn forward(&self, batch: &Batch, mode: &mut Mode) -> anyhow::Result<Tensor> {
        let encoder = match &self.body {
            Body::PostNorm(encoder) => encoder,
            Body::ModernBert(encoder) => return encoder.logits(self, batch, mode),
        };
        let hidden_states = self.encode_post_norm(encoder, batch, mode, self.rows)?;
        let head = &self.config.family.layout.head;
        let graph = mode.graph();
        let mut x = hidden_states.narrow(1, 0, 1)?.squeeze(1)?;
        if head.dropout_before_dense {
            x = match (self.config.pooler_dropout, &mut *mode) {
                (_, Mode::Eval) => x,
                (Some(rate), Mode::Train(random)) => layers::dropout(&x, rate, random)?,
                (None, _) => self.dropout_classifier(&x, mode)?,
            };
        }
        x = encoder.head.dense.forward_with(&x, graph, self.precision)?;
        x = match head.activation {
            HeadActivation::Tanh => x.tanh()?,
            HeadActivation::Relu => x.relu()?,
            HeadActivation::Gelu => layers::gelu(&x, self.kernels)?,
        };
        x = self.dropout_classifier(&x, mode)?;
        Ok(encoder
            .head
            .output
            .forward_with(&x, graph, self.precision)?)
    }

    fn dropout_classifier(&self, x: &Tensor, mode: &mut Mode) -> candle_core::Result<Tensor> {
        match mode {
            Mode::Eval => Ok(x.clone()),
            Mode::Train(random) => layers::dropout(x, self.dropout.classifier, random),
        }
    }

    /// Class probabilities `[batch, num_labels]` in evaluation mode.
    pub fn predict_probabilities(&self, batch: &Batch) -> anyhow::Result<Tensor> {
        let logits = self.forward(batch, &mut Mode::Eval)?;
        Ok(layers::softmax(&logits, self.kernels)?.to_dtype(DType::F32)?)
    }

    /// The tensors to save, by transformers name, as f32 on the CPU.
    pub fn state_dict(&self) -> anyhow::Result<HashMap<String, Tensor>> {
        let mut tensors = HashMap::new();
        for (name, var) in &self.parameters {
            let tensor = var
                .as_tensor()
                .to_dtype(DType::F32)?
                .to_device(&Device::Cpu)?
                .contiguous()?;
            tensors.insert(name.clone(), tensor);
        }
        Ok(tensors)
    }

    /// Checks that a mode's dropout rates are valid probabilities.
    pub fn set_dropout(&mut self, rates: DropoutRates) -> anyhow::Result<()> {
        for (name, rate) in [
            ("hidden", rates.hidden),
            ("attention", rates.attention),
            ("classifier", rates.classifier),
        ] {
            if !(0.0..1.0).contains(&rate) {
                bail!("{name} dropout must be in [0, 1), got {rate}");
            }
        }
        self.dropout = rates;
        Ok(())
    }
}
