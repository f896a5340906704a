//! ModernBERT's maths (`family::modernbert`), every operation differentiable, behind
//! [`EncoderClassifier`]: transformers' `ModernBertForSequenceClassification` with eager
//! attention.
//!
//! tokens -> embeddings LayerNorm -> dropout -> N pre-norm layers:
//!   `x += Wo(attention(attn_norm(x)))` (no norm in layer 0): `Wqkv(h)` as `[batch, length, 3,
//!   heads, head_size]`, rotary positions on queries and keys (`q cos + rotate_half(q) sin`,
//!   `rotate_half(x) = [-x2, x1]` over the halves of each head, positions 0.. whatever the
//!   padding, base `global_rope_theta` or `local_rope_theta`), scores scaled by
//!   `1/sqrt(head_size)`, the padding mask (and in local layers, keys further than the window
//!   masked too), softmax, dropout, values;
//!   `x += Wo(dropout(GELU(a) * g))` where `[a, g] = Wi(mlp_norm(x))` (GeGLU)
//! -> the final norm -> the first token or the mean of the real tokens -> `head.dense` -> GELU
//! -> `head.norm` -> dropout -> `classifier`.
//!
//! Shapes: `input_ids`, `attention_mask` `[batch, length]`; hidden states `[batch, length,
//! hidden]`; logits `[batch, labels]`. On the CPU in f32/f64 the attention (rotary positions,
//! the local layers' band of keys) is the fused `packed_attention` and GeGLU the fused
//! `kernels::geglu`, each with an analytic backward pass; elsewhere both are composed candle ops
//! with their own backward passes (candle's `rope` has none). LayerNorm, softmax and GELU are the
//! kernels every family uses. Norms and layers without a bias hold a zero bias that is not a
//! parameter.

use anyhow::{Context, bail};
use candle_core::{D, DType, Device, Tensor, Var};

use crate::model::Depth;
use crate::model::config::{ModelConfig, ModernBertSettings, Pooling};
use crate::model::encoder::{
    Batch, EncoderClassifier, LoadReport, Mode, Tensors, initialized_linear,
};
use crate::model::layers::{self, LayerNorm, Linear};
use crate::model::packed_attention::{PackedAttention, Rotary, Window, packed_attention};
use crate::support::random::stream;

/// A LayerNorm whose bias may be absent (then zero, and not a parameter).
#[derive(Clone, Debug)]
struct Norm {
    norm: LayerNorm,
    has_bias: bool,
}

/// A dense layer whose bias may be absent (then zero, and not a parameter).
#[derive(Clone, Debug)]
struct Dense {
    linear: Linear,
    has_bias: bool,
}

#[derive(Clone, Debug)]
struct Layer {
    /// `None` in layer 0.
    attention_norm: Option<Norm>,
    qkv: Dense,
    attention_output: Dense,
    mlp_norm: Norm,
    mlp_in: Dense,
    mlp_out: Dense,
}

/// ModernBERT's tensors.
#[derive(Clone, Debug)]
pub(crate) struct ModernBert {
    word: Var,
    embeddings_norm: Norm,
    layers: Vec<Layer>,
    final_norm: Norm,
    head_dense: Dense,
    head_norm: Norm,
    classifier: Linear,
    settings: ModernBertSettings,
}

fn zeros(size: usize, dtype: DType, device: &Device) -> anyhow::Result<Var> {
    Ok(Var::zeros(size, dtype, device)?)
}

impl ModernBert {
    /// Takes ModernBERT's tensors from `checkpoint` (its keys already under `model.`); a missing
    /// encoder tensor is an error, a missing head is initialised as transformers does (normal
    /// dense layers from `seed`, norms at one) and reported.
    pub(crate) fn load(
        config: &ModelConfig,
        num_labels: usize,
        checkpoint: &mut Tensors,
        seed: u64,
        report: &mut LoadReport,
    ) -> anyhow::Result<ModernBert> {
        let settings = config
            .modern_bert
            .clone()
            .context("a ModernBERT config has ModernBERT settings")?;
        let (dtype, device) = (checkpoint.dtype, checkpoint.device.clone());
        let hidden = config.hidden_size;
        let intermediate = config.intermediate_size;
        let epsilon = config.layer_norm_eps;
        let norm = |checkpoint: &mut Tensors,
                    name: &str,
                    has_bias: bool|
         -> anyhow::Result<Option<Norm>> {
            let weight = checkpoint.take(&format!("{name}.weight"), &[hidden])?;
            let bias = if has_bias {
                checkpoint.take(&format!("{name}.bias"), &[hidden])?
            } else {
                Some(zeros(hidden, dtype, &device)?)
            };
            Ok(weight.zip(bias).map(|(weight, bias)| Norm {
                norm: LayerNorm {
                    weight,
                    bias,
                    epsilon,
                },
                has_bias,
            }))
        };
        let dense = |checkpoint: &mut Tensors,
                     name: &str,
                     out: usize,
                     input: usize,
                     has_bias: bool|
         -> anyhow::Result<Option<Dense>> {
            let weight = checkpoint.take(&format!("{name}.weight"), &[out, input])?;
            let bias = if has_bias {
                checkpoint.take(&format!("{name}.bias"), &[out])?
            } else {
                Some(zeros(out, dtype, &device)?)
            };
            Ok(weight.zip(bias).map(|(weight, bias)| Dense {
                linear: Linear { weight, bias },
                has_bias,
            }))
        };
        let word = checkpoint.take(
            "model.embeddings.tok_embeddings.weight",
            &[config.vocab_size, hidden],
        )?;
        let embeddings_norm = norm(checkpoint, "model.embeddings.norm", settings.norm_bias)?;
        let mut layers = Vec::new();
        for index in 0..config.num_hidden_layers {
            let prefix = format!("model.layers.{index}");
            let attention_norm = if index == 0 {
                Some(None)
            } else {
                norm(
                    checkpoint,
                    &format!("{prefix}.attn_norm"),
                    settings.norm_bias,
                )?
                .map(Some)
            };
            let qkv = dense(
                checkpoint,
                &format!("{prefix}.attn.Wqkv"),
                3 * hidden,
                hidden,
                settings.attention_bias,
            )?;
            let attention_output = dense(
                checkpoint,
                &format!("{prefix}.attn.Wo"),
                hidden,
                hidden,
                settings.attention_bias,
            )?;
            let mlp_norm = norm(
                checkpoint,
                &format!("{prefix}.mlp_norm"),
                settings.norm_bias,
            )?;
            let mlp_in = dense(
                checkpoint,
                &format!("{prefix}.mlp.Wi"),
                2 * intermediate,
                hidden,
                settings.mlp_bias,
            )?;
            let mlp_out = dense(
                checkpoint,
                &format!("{prefix}.mlp.Wo"),
                hidden,
                intermediate,
                settings.mlp_bias,
            )?;
            layers.push((|| {
                Some(Layer {
                    attention_norm: attention_norm?,
                    qkv: qkv?,
                    attention_output: attention_output?,
                    mlp_norm: mlp_norm?,
                    mlp_in: mlp_in?,
                    mlp_out: mlp_out?,
                })
            })());
        }
        let final_norm = norm(checkpoint, "model.final_norm", settings.norm_bias)?;
        if !checkpoint.missing.is_empty() {
            bail!(checkpoint.missing_message());
        }
        let present = "every encoder tensor is present";

        // The head: `head.dense` and `head.norm` come with a pretraining (masked LM) checkpoint;
        // `classifier` never does.
        let head_dense = match dense(
            checkpoint,
            "head.dense",
            hidden,
            hidden,
            settings.classifier_bias,
        )? {
            Some(dense) => dense,
            None => {
                report.warnings.push(
                    "the checkpoint has no head.dense: it was initialised randomly and will be trained"
                        .to_string(),
                );
                report.initialized.push("head.dense.weight".to_string());
                if settings.classifier_bias {
                    report.initialized.push("head.dense.bias".to_string());
                }
                let mut linear = initialized_linear(
                    hidden,
                    hidden,
                    config,
                    seed,
                    stream::POOLER_INITIALIZATION,
                    dtype,
                    &device,
                )?;
                if !settings.classifier_bias {
                    linear.bias = zeros(hidden, dtype, &device)?;
                }
                Dense {
                    linear,
                    has_bias: settings.classifier_bias,
                }
            }
        };
        let head_norm = match norm(checkpoint, "head.norm", settings.norm_bias)? {
            Some(norm) => norm,
            None => {
                report.initialized.push("head.norm.weight".to_string());
                if settings.norm_bias {
                    report.initialized.push("head.norm.bias".to_string());
                }
                Norm {
                    norm: LayerNorm {
                        weight: Var::from_tensor(&Tensor::ones(hidden, dtype, &device)?)?,
                        bias: zeros(hidden, dtype, &device)?,
                        epsilon,
                    },
                    has_bias: settings.norm_bias,
                }
            }
        };
        let classifier = match checkpoint.linear("classifier", num_labels, hidden) {
            Ok(Some(classifier)) => classifier,
            result => {
                if result.is_err()
                    || checkpoint.available.contains_key("classifier.weight")
                    || checkpoint.available.contains_key("classifier.bias")
                {
                    report.warnings.push(format!(
                        "the checkpoint's classifier does not have {num_labels} labels: a new one was initialised"
                    ));
                }
                report.initialized.push("classifier.weight".to_string());
                report.initialized.push("classifier.bias".to_string());
                initialized_linear(
                    num_labels,
                    hidden,
                    config,
                    seed,
                    stream::INITIALIZATION,
                    dtype,
                    &device,
                )?
            }
        };
        checkpoint.available.remove("classifier.weight");
        checkpoint.available.remove("classifier.bias");
        Ok(ModernBert {
            word: word.expect(present),
            embeddings_norm: embeddings_norm.expect(present),
            layers: layers
                .into_iter()
                .map(|layer| layer.expect(present))
                .collect(),
            final_norm: final_norm.expect(present),
            head_dense,
            head_norm,
            classifier,
            settings,
        })
    }

    pub(crate) fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// Every parameter by transformers name with its depth: the embeddings, the layers from the
    /// lowest, then the final norm and the head (above the layers).
    pub(crate) fn parameters(&self) -> Vec<((String, Var), Depth)> {
        let mut out = Vec::new();
        out.push((
            (
                "model.embeddings.tok_embeddings.weight".to_string(),
                self.word.clone(),
            ),
            Depth::Embeddings,
        ));
        let push_norm = |out: &mut Vec<((String, Var), Depth)>, name: &str, norm: &Norm, depth| {
            out.push(((format!("{name}.weight"), norm.norm.weight.clone()), depth));
            if norm.has_bias {
                out.push(((format!("{name}.bias"), norm.norm.bias.clone()), depth));
            }
        };
        let push_dense =
            |out: &mut Vec<((String, Var), Depth)>, name: &str, dense: &Dense, depth| {
                out.push((
                    (format!("{name}.weight"), dense.linear.weight.clone()),
                    depth,
                ));
                if dense.has_bias {
                    out.push(((format!("{name}.bias"), dense.linear.bias.clone()), depth));
                }
            };
        push_norm(
            &mut out,
            "model.embeddings.norm",
            &self.embeddings_norm,
            Depth::Embeddings,
        );
        for (index, layer) in self.layers.iter().enumerate() {
            let prefix = format!("model.layers.{index}");
            let depth = Depth::Layer(index);
            if let Some(attention_norm) = &layer.attention_norm {
                push_norm(
                    &mut out,
                    &format!("{prefix}.attn_norm"),
                    attention_norm,
                    depth,
                );
            }
            push_dense(&mut out, &format!("{prefix}.attn.Wqkv"), &layer.qkv, depth);
            push_dense(
                &mut out,
                &format!("{prefix}.attn.Wo"),
                &layer.attention_output,
                depth,
            );
            push_norm(
                &mut out,
                &format!("{prefix}.mlp_norm"),
                &layer.mlp_norm,
                depth,
            );
            push_dense(&mut out, &format!("{prefix}.mlp.Wi"), &layer.mlp_in, depth);
            push_dense(&mut out, &format!("{prefix}.mlp.Wo"), &layer.mlp_out, depth);
        }
        push_norm(&mut out, "model.final_norm", &self.final_norm, Depth::Head);
        push_dense(&mut out, "head.dense", &self.head_dense, Depth::Head);
        push_norm(&mut out, "head.norm", &self.head_norm, Depth::Head);
        out.push((
            (
                "classifier.weight".to_string(),
                self.classifier.weight.clone(),
            ),
            Depth::Head,
        ));
        out.push((
            ("classifier.bias".to_string(), self.classifier.bias.clone()),
            Depth::Head,
        ));
        out
    }

    /// The final norm's output `[batch, length, hidden]`.
    pub(crate) fn encode(
        &self,
        model: &EncoderClassifier,
        batch: &Batch,
        mode: &mut Mode,
    ) -> anyhow::Result<Tensor> {
        let config = model.config();
        let (batch_size, length) = batch
            .input_ids
            .dims2()
            .context("input_ids must be [batch, length]")?;
        if length > config.max_position_embeddings {
            bail!(
                "sequence of {length} tokens is longer than the model's {} positions",
                config.max_position_embeddings
            );
        }
        let hidden = config.hidden_size;
        let heads = config.num_attention_heads;
        let head_size = config.head_size();
        let dtype = model.dtype();
        let device = model.device();
        let (kernels, precision) = (model.kernels, model.precision);
        let graph = mode.graph();
        let embeddings_graph = model.graph_at(Depth::Embeddings, graph);

        let x = layers::embedding_rows(
            &layers::operand(&self.word, embeddings_graph),
            &batch.input_ids.flatten_all()?,
            kernels,
        )?
        .reshape((batch_size, length, hidden))?;
        let x = self
            .embeddings_norm
            .norm
            .forward_graph(&x, kernels, embeddings_graph)?;
        let mut x = dropout(&x, self.settings.embedding_dropout, mode)?;

        let scale = 1.0 / (head_size as f64).sqrt();
        // On the CPU in f32/f64 the fused attention (rotary positions, the window's band of keys,
        // the padding mask as values); elsewhere composed ops and mask tensors.
        let attention = if kernels.fused_for(&x) {
            let minimum = if dtype == DType::F64 {
                f64::MIN
            } else {
                f32::MIN as f64
            };
            let mask = batch
                .attention_mask
                .to_dtype(DType::F64)?
                .affine(-minimum, minimum)?
                .flatten_all()?
                .to_vec1::<f64>()?;
            let settings = |theta: f64, window: Option<Window>| PackedAttention {
                heads,
                scale,
                mask: mask.clone(),
                window,
                rotary: Some(Rotary::new(length, head_size, theta)),
                relative: None,
                keep: None,
            };
            let window = Window {
                size: self.settings.window,
                masked: minimum,
            };
            AttentionForm::Fused {
                global: Box::new(settings(self.settings.global_rope_theta, None)),
                local: Box::new(settings(self.settings.local_rope_theta, Some(window))),
            }
        } else {
            let tables = |theta| rotary_tables(length, head_size, theta, dtype, device);
            AttentionForm::Composed {
                masks: Masks::new(batch, self.settings.window, dtype)?,
                global: tables(self.settings.global_rope_theta)?,
                local: tables(self.settings.local_rope_theta)?,
            }
        };
        for (index, layer) in self.layers.iter().enumerate() {
            let graph = model.graph_at(Depth::Layer(index), graph);
            let is_global = self.settings.global_layers[index];
            let normed = match &layer.attention_norm {
                Some(norm) => norm.norm.forward_graph(&x, kernels, graph)?,
                None => x.clone(),
            };
            let projected = layer.qkv.linear.forward_with(&normed, graph, precision)?;
            let context = match &attention {
                AttentionForm::Fused { global, local } => {
                    let mut settings =
                        PackedAttention::clone(if is_global { global } else { local });
                    settings.keep = match mode {
                        Mode::Train(random) if model.dropout.attention > 0.0 => {
                            Some(layers::dropout_mask(
                                batch_size * heads * length * length,
                                model.dropout.attention,
                                dtype,
                                random,
                            ))
                        }
                        _ => None,
                    };
                    packed_attention(&projected, settings)?
                }
                AttentionForm::Composed {
                    masks,
                    global,
                    local,
                } => {
                    let qkv = projected.reshape((batch_size, length, 3, heads, head_size))?;
                    let part = |which: usize| -> candle_core::Result<Tensor> {
                        qkv.narrow(2, which, 1)?
                            .squeeze(2)?
                            .transpose(1, 2)?
                            .contiguous()
                    };
                    let (cos, sin) = if is_global { global } else { local };
                    let query = rotate(&part(0)?, cos, sin)?;
                    let key = rotate(&part(1)?, cos, sin)?;
                    let value = part(2)?;
                    let scores = (query.matmul(&key.t()?.contiguous()?)? * scale)?;
                    let scores = if is_global {
                        scores.broadcast_add(&masks.keys)?
                    } else {
                        scores.broadcast_add(&masks.local)?
                    };
                    let probabilities = layers::softmax(&scores, kernels)?;
                    let probabilities = dropout(&probabilities, model.dropout.attention, mode)?;
                    probabilities
                        .matmul(&value)?
                        .transpose(1, 2)?
                        .contiguous()?
                        .reshape((batch_size, length, hidden))?
                }
            };
            let attended = layer
                .attention_output
                .linear
                .forward_with(&context, graph, precision)?;
            x = (x + dropout(&attended, model.dropout.attention, mode)?)?;

            let normed = layer.mlp_norm.norm.forward_graph(&x, kernels, graph)?;
            let projected = layer
                .mlp_in
                .linear
                .forward_with(&normed, graph, precision)?;
            let gated = layers::geglu(&projected, kernels)?;
            let gated = dropout(&gated, model.dropout.hidden, mode)?;
            x = (x + layer
                .mlp_out
                .linear
                .forward_with(&gated, graph, precision)?)?;
        }
        let head_graph = model.graph_at(Depth::Head, graph);
        Ok(self
            .final_norm
            .norm
            .forward_graph(&x, kernels, head_graph)?)
    }

    /// Class logits `[batch, labels]`.
    pub(crate) fn logits(
        &self,
        model: &EncoderClassifier,
        batch: &Batch,
        mode: &mut Mode,
    ) -> anyhow::Result<Tensor> {
        let hidden_states = self.encode(model, batch, mode)?;
        let pooled = match self.settings.pooling {
            Pooling::Cls => hidden_states.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => {
                let (batch_size, length) = batch.attention_mask.dims2()?;
                let mask = batch
                    .attention_mask
                    .to_dtype(hidden_states.dtype())?
                    .reshape((batch_size, length, 1))?;
                hidden_states
                    .broadcast_mul(&mask)?
                    .sum(1)?
                    .broadcast_div(&mask.sum(1)?)?
            }
        };
        let graph = model.graph_at(Depth::Head, mode.graph());
        let (kernels, precision) = (model.kernels, model.precision);
        let x = self
            .head_dense
            .linear
            .forward_with(&pooled, graph, precision)?;
        let x = layers::gelu(&x, kernels)?;
        let x = self.head_norm.norm.forward_graph(&x, kernels, graph)?;
        let x = dropout(&x, model.dropout.classifier, mode)?;
        Ok(self.classifier.forward_with(&x, graph, precision)?)
    }
}

fn dropout(x: &Tensor, rate: f64, mode: &mut Mode) -> candle_core::Result<Tensor> {
    match mode {
        Mode::Eval => Ok(x.clone()),
        Mode::Train(random) => layers::dropout(x, rate, random),
    }
}

/// How a forward pass computes attention: the fused kernel's settings for global and local
/// layers (CPU, f32/f64), or the composed form's masks and rotary tables `(cos, sin)`.
enum AttentionForm {
    Fused {
        global: Box<PackedAttention>,
        local: Box<PackedAttention>,
    },
    Composed {
        masks: Masks,
        global: (Tensor, Tensor),
        local: (Tensor, Tensor),
    },
}

/// The additive attention masks (0 where attended, the dtype's minimum elsewhere, once even
/// where two reasons mask a key, so that a row stays finite): `keys` `[batch, 1, 1, length]`
/// masks padding (global layers), `local` `[batch, 1, length, length]` also the keys further than
/// the window from the query. Built on the model's device, from `[length, length]` distances:
/// a long batch never builds its masks on the host.
struct Masks {
    keys: Tensor,
    local: Tensor,
}

impl Masks {
    fn new(batch: &Batch, window: usize, dtype: DType) -> candle_core::Result<Masks> {
        let minimum = if dtype == DType::F64 {
            f64::MIN
        } else {
            f32::MIN as f64
        };
        let (batch_size, length) = batch.attention_mask.dims2()?;
        let device = batch.attention_mask.device();
        let keys = batch
            .attention_mask
            .to_dtype(dtype)?
            .affine(-minimum, minimum)?
            .reshape((batch_size, 1, 1, length))?;
        // |query - key| as f32 (exact for any length bertlab allows), compared with the window.
        let positions = Tensor::arange(0u32, length as u32, device)?.to_dtype(DType::F32)?;
        let distances = positions
            .unsqueeze(1)?
            .broadcast_sub(&positions.unsqueeze(0)?)?
            .abs()?;
        let outside = distances
            .gt(window as f64)?
            .to_dtype(dtype)?
            .affine(minimum, 0.0)?
            .reshape((1, 1, length, length))?;
        // Both reasons at once would add up to minus infinity: clamped back to the minimum.
        let local = outside.broadcast_add(&keys)?.clamp(minimum, 0.0)?;
        Ok(Masks { keys, local })
    }
}

/// Whether a local layer's `query` may attend `key` (padding aside): at most `window` apart, as
/// transformers' `sliding_window_bidirectional_overlay` with `sliding_window = local_attention
/// / 2`.
pub fn attends_locally(query: usize, key: usize, window: usize) -> bool {
    query.abs_diff(key) <= window
}

/// Rotary tables `cos`, `sin` `[1, 1, length, head_size]`: `f[p, i] = p / theta^(2i / d)` for
/// `i < d / 2`, both halves alike (transformers' `cat(freqs, freqs)`), computed in f64.
pub fn rotary_tables(
    length: usize,
    head_size: usize,
    theta: f64,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let rotary = Rotary::new(length, head_size, theta);
    let half = head_size / 2;
    let both_halves = |angles: &[f64]| -> Vec<f64> {
        angles
            .chunks(half.max(1))
            .flat_map(|row| row.iter().chain(row).copied())
            .collect()
    };
    let (cos, sin) = (both_halves(&rotary.cos), both_halves(&rotary.sin));
    let shape = (1, 1, length, head_size);
    Ok((
        Tensor::from_vec(cos, shape, device)?.to_dtype(dtype)?,
        Tensor::from_vec(sin, shape, device)?.to_dtype(dtype)?,
    ))
}

/// `x cos + rotate_half(x) sin` for `x` `[batch, heads, length, head_size]`, where
/// `rotate_half([x1, x2]) = [-x2, x1]` over the two halves of the last dimension.
pub(crate) fn rotate(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let first = x.narrow(D::Minus1, 0, half)?;
    let second = x.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&second.neg()?, &first], D::Minus1)?;
    x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}
