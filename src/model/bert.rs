//! `BertClassifier`: the maths of transformers' `BertForSequenceClassification` in candle, every
//! operation differentiable, every random draw from [`SeededRandom`].
//!
//! embeddings (word + position + token type, LayerNorm, dropout) -> N encoder layers
//! (self-attention with the padding mask, dropout on probabilities, output dense, dropout,
//! residual, LayerNorm; feed-forward with GELU (erf), dropout, residual, LayerNorm) -> pooler
//! (dense + tanh on [CLS]) -> dropout -> linear head.
//!
//! Parameters carry transformers' names (`bert.encoder.layer.0.attention.self.query.weight`,
//! `classifier.weight`), so checkpoints load and save without renaming.

use std::collections::HashMap;

use anyhow::{Context, bail};
use candle_core::{DType, Device, Tensor, Var};

use crate::model::Depth;
use crate::model::config::BertConfig;
use crate::model::layers::{self, Graph, Kernels, LayerNorm, Linear, Precision, operand};
use crate::support::random::{SeededRandom, stream};

/// A tokenized batch, all `[batch, length]` u32 tensors on the model's device.
#[derive(Clone, Debug)]
pub struct Batch {
    pub input_ids: Tensor,
    pub token_type_ids: Tensor,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Tensor,
}

impl Batch {
    /// Builds a batch from rows of token ids, padding each to the longest with `pad_id`.
    pub fn from_rows(
        rows: &[Vec<u32>],
        pad_id: u32,
        device: &Device,
    ) -> candle_core::Result<Batch> {
        let length = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len() * length);
        let mut mask = Vec::with_capacity(rows.len() * length);
        for row in rows {
            ids.extend_from_slice(row);
            ids.extend(std::iter::repeat_n(pad_id, length - row.len()));
            mask.extend(std::iter::repeat_n(1u32, row.len()));
            mask.extend(std::iter::repeat_n(0u32, length - row.len()));
        }
        let shape = (rows.len(), length);
        Ok(Batch {
            input_ids: Tensor::from_vec(ids, shape, device)?,
            token_type_ids: Tensor::zeros(shape, DType::U32, device)?,
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

/// Dropout probabilities used in training.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropoutRates {
    pub hidden: f64,
    pub attention: f64,
    pub classifier: f64,
}

impl DropoutRates {
    /// The rates the checkpoint's config gives (as transformers uses them).
    pub fn from_config(config: &BertConfig) -> DropoutRates {
        DropoutRates {
            hidden: config.hidden_dropout_prob,
            attention: config.attention_probs_dropout_prob,
            classifier: config
                .classifier_dropout
                .unwrap_or(config.hidden_dropout_prob),
        }
    }
}

#[derive(Clone, Debug)]
struct Embeddings {
    word: Var,
    position: Var,
    token_type: Var,
    norm: LayerNorm,
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

/// A BERT sequence classifier.
#[derive(Clone, Debug)]
pub struct BertClassifier {
    config: BertConfig,
    num_labels: usize,
    embeddings: Embeddings,
    layers: Vec<EncoderLayer>,
    pooler: Linear,
    classifier: Linear,
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
}

/// Where a BERT tensor sits, by its bertlab name: `bert.embeddings.*`, `bert.encoder.layer.N.*`,
/// or the head (`bert.pooler.*`, `classifier.*`).
pub fn depth_of(name: &str) -> Depth {
    if name.starts_with("bert.embeddings.") {
        return Depth::Embeddings;
    }
    name.strip_prefix("bert.encoder.layer.")
        .and_then(|rest| rest.split('.').next())
        .and_then(|index| index.parse().ok())
        .map_or(Depth::Head, Depth::Layer)
}

/// Names of the base model's tensors, as in a `BertModel` checkpoint, pooler last.
pub fn base_tensor_names(config: &BertConfig) -> Vec<String> {
    let mut names: Vec<String> = [
        "embeddings.word_embeddings.weight",
        "embeddings.position_embeddings.weight",
        "embeddings.token_type_embeddings.weight",
        "embeddings.LayerNorm.weight",
        "embeddings.LayerNorm.bias",
    ]
    .iter()
    .map(|name| name.to_string())
    .collect();
    for layer in 0..config.num_hidden_layers {
        for part in [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "attention.output.LayerNorm",
            "intermediate.dense",
            "output.dense",
            "output.LayerNorm",
        ] {
            for kind in ["weight", "bias"] {
                names.push(format!("encoder.layer.{layer}.{part}.{kind}"));
            }
        }
    }
    names.push("pooler.dense.weight".into());
    names.push("pooler.dense.bias".into());
    names
}

/// The shape each base tensor must have.
fn expected_shape(config: &BertConfig, name: &str) -> Vec<usize> {
    let hidden = config.hidden_size;
    let intermediate = config.intermediate_size;
    if name.ends_with("word_embeddings.weight") {
        vec![config.vocab_size, hidden]
    } else if name.ends_with("position_embeddings.weight") {
        vec![config.max_position_embeddings, hidden]
    } else if name.ends_with("token_type_embeddings.weight") {
        vec![config.type_vocab_size, hidden]
    } else if name.contains("LayerNorm")
        || (name.ends_with(".bias") && !name.contains("intermediate"))
    {
        vec![hidden]
    } else if name.contains("intermediate.dense.weight") {
        vec![intermediate, hidden]
    } else if name.contains("intermediate.dense.bias") {
        vec![intermediate]
    } else if name.contains("output.dense.weight") && !name.contains("attention") {
        vec![hidden, intermediate]
    } else {
        vec![hidden, hidden]
    }
}

/// Maps a checkpoint key to bertlab's name (`bert.`-prefixed base keys, `classifier.*`), or
/// `None` for keys that are ignored without a report (buffers such as `position_ids`).
fn normalize_key(key: &str) -> Option<String> {
    let key = key
        .replace("LayerNorm.gamma", "LayerNorm.weight")
        .replace("LayerNorm.beta", "LayerNorm.bias");
    if key.ends_with("embeddings.position_ids") {
        return None;
    }
    if key.starts_with("bert.") || key.starts_with("classifier.") {
        return Some(key);
    }
    if key.starts_with("embeddings.") || key.starts_with("encoder.") || key.starts_with("pooler.") {
        return Some(format!("bert.{key}"));
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

impl BertClassifier {
    /// Builds a classifier from checkpoint tensors (keys with or without the `bert.` prefix).
    /// Missing pooler and classifier tensors are initialised as transformers does (normal with
    /// std `initializer_range`, zero bias) from `seed`; any other missing tensor is an error.
    pub fn from_tensors(
        config: BertConfig,
        num_labels: usize,
        tensors: HashMap<String, Tensor>,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> anyhow::Result<(BertClassifier, LoadReport)> {
        if num_labels < 2 {
            bail!("a classifier needs at least 2 labels, got {num_labels}");
        }
        let mut report = LoadReport::default();
        let mut available: HashMap<String, Tensor> = HashMap::new();
        for (key, tensor) in tensors {
            if let Some(name) = normalize_key(&key) {
                available.insert(name, tensor);
            }
        }
        let mut take = |name: &str, shape: Vec<usize>| -> anyhow::Result<Option<Var>> {
            match available.remove(name) {
                None => Ok(None),
                Some(tensor) => {
                    if tensor.dims() != shape.as_slice() {
                        bail!(
                            "checkpoint tensor {name} has shape {:?}, the config implies {:?}",
                            tensor.dims(),
                            shape
                        );
                    }
                    let tensor = tensor.to_dtype(dtype)?.to_device(device)?.contiguous()?;
                    Ok(Some(Var::from_tensor(&tensor)?))
                }
            }
        };
        let mut base = HashMap::new();
        let mut missing = Vec::new();
        for name in base_tensor_names(&config) {
            let full = format!("bert.{name}");
            match take(&full, expected_shape(&config, &name))? {
                Some(var) => {
                    base.insert(full, var);
                }
                None => missing.push(full),
            }
        }
        let pooler_missing: Vec<String> = missing
            .iter()
            .filter(|name| name.contains(".pooler."))
            .cloned()
            .collect();
        missing.retain(|name| !name.contains(".pooler."));
        if !missing.is_empty() {
            let shown: Vec<&str> = missing.iter().take(8).map(String::as_str).collect();
            bail!(
                "the checkpoint lacks {} encoder tensor{}: {}{}",
                missing.len(),
                if missing.len() == 1 { "" } else { "s" },
                shown.join(", "),
                if missing.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                }
            );
        }
        let hidden = config.hidden_size;
        if !pooler_missing.is_empty() {
            let mut random = SeededRandom::new(seed, stream::POOLER_INITIALIZATION);
            let weight = normal_tensor(
                &[hidden, hidden],
                config.initializer_range,
                &mut random,
                dtype,
                device,
            )?;
            base.insert(
                "bert.pooler.dense.weight".into(),
                Var::from_tensor(&weight)?,
            );
            base.insert(
                "bert.pooler.dense.bias".into(),
                Var::zeros(hidden, dtype, device)?,
            );
            report.warnings.push(
                "the checkpoint has no pooler (bert.pooler.dense): it was initialised randomly and will be trained".into(),
            );
            report.initialized.extend(pooler_missing);
        }
        let classifier_weight = take("classifier.weight", vec![num_labels, hidden]);
        let classifier_bias = take("classifier.bias", vec![num_labels]);
        let classifier = match (classifier_weight, classifier_bias) {
            (Ok(Some(weight)), Ok(Some(bias))) => Linear { weight, bias },
            (weight, bias) => {
                if weight.is_err() || bias.is_err() {
                    report.warnings.push(format!(
                        "the checkpoint's classifier does not have {num_labels} labels: a new one was initialised"
                    ));
                }
                let mut random = SeededRandom::new(seed, stream::INITIALIZATION);
                let weight = normal_tensor(
                    &[num_labels, hidden],
                    config.initializer_range,
                    &mut random,
                    dtype,
                    device,
                )?;
                report.initialized.push("classifier.weight".into());
                report.initialized.push("classifier.bias".into());
                Linear {
                    weight: Var::from_tensor(&weight)?,
                    bias: Var::zeros(num_labels, dtype, device)?,
                }
            }
        };
        available.retain(|name, _| !name.starts_with("classifier."));
        report.unexpected = available.into_keys().collect();
        report.unexpected.sort();

        let var = |name: String| {
            base.remove(&format!("bert.{name}"))
                .expect("every base tensor is present")
        };
        let linear = |var: &mut dyn FnMut(String) -> Var, prefix: &str| Linear {
            weight: var(format!("{prefix}.weight")),
            bias: var(format!("{prefix}.bias")),
        };
        let epsilon = config.layer_norm_eps;
        let norm = |var: &mut dyn FnMut(String) -> Var, prefix: &str| LayerNorm {
            weight: var(format!("{prefix}.weight")),
            bias: var(format!("{prefix}.bias")),
            epsilon,
        };
        let mut var = var;
        let embeddings = Embeddings {
            word: var("embeddings.word_embeddings.weight".into()),
            position: var("embeddings.position_embeddings.weight".into()),
            token_type: var("embeddings.token_type_embeddings.weight".into()),
            norm: norm(&mut var, "embeddings.LayerNorm"),
        };
        let layers = (0..config.num_hidden_layers)
            .map(|index| {
                let prefix = format!("encoder.layer.{index}");
                EncoderLayer {
                    query: linear(&mut var, &format!("{prefix}.attention.self.query")),
                    key: linear(&mut var, &format!("{prefix}.attention.self.key")),
                    value: linear(&mut var, &format!("{prefix}.attention.self.value")),
                    attention_output: linear(&mut var, &format!("{prefix}.attention.output.dense")),
                    attention_norm: norm(&mut var, &format!("{prefix}.attention.output.LayerNorm")),
                    intermediate: linear(&mut var, &format!("{prefix}.intermediate.dense")),
                    output: linear(&mut var, &format!("{prefix}.output.dense")),
                    output_norm: norm(&mut var, &format!("{prefix}.output.LayerNorm")),
                }
            })
            .collect();
        let pooler = linear(&mut var, "pooler.dense");

        let mut model = BertClassifier {
            dropout: DropoutRates::from_config(&config),
            config,
            num_labels,
            embeddings,
            layers,
            pooler,
            classifier,
            parameters: Vec::new(),
            depths: Vec::new(),
            trainable: Vec::new(),
            trainable_depths: Vec::new(),
            frozen_layers: None,
            kernels: Kernels::Fused,
            precision: Precision::Fp32,
        };
        model.parameters = model.collect_parameters();
        model.depths = model
            .parameters
            .iter()
            .map(|(name, _)| depth_of(name))
            .collect();
        model.freeze(None)?;
        Ok((model, report))
    }

    /// Freezes the embeddings (`Some(0)`) or the embeddings and the lowest `n` encoder layers
    /// (`Some(n)`), or nothing (`None`): frozen tensors get no gradient (the forward pass does
    /// not record them) and leave [`BertClassifier::trainable_parameters`].
    pub fn freeze(&mut self, frozen_layers: Option<usize>) -> anyhow::Result<()> {
        if let Some(layers) = frozen_layers
            && layers > self.layers.len()
        {
            bail!(
                "cannot freeze {layers} layers: the model has {}",
                self.layers.len()
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
    fn graph_at(&self, depth: Depth, graph: Graph) -> Graph {
        if self.is_frozen(depth) {
            Graph::Skip
        } else {
            graph
        }
    }

    /// The tensors that train (all, unless some are frozen), in the order of
    /// [`BertClassifier::parameters`].
    pub fn trainable_parameters(&self) -> &[(String, Var)] {
        &self.trainable
    }

    /// The depth of every tensor of [`BertClassifier::trainable_parameters`], in its order.
    pub fn trainable_depths(&self) -> &[Depth] {
        &self.trainable_depths
    }

    /// The depth of every tensor of [`BertClassifier::parameters`], in its order.
    pub fn parameter_depths(&self) -> &[Depth] {
        &self.depths
    }

    /// The number of encoder layers.
    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    fn collect_parameters(&self) -> Vec<(String, Var)> {
        let mut parameters = Vec::new();
        let mut push = |name: String, var: &Var| parameters.push((name, var.clone()));
        let linear = |push: &mut dyn FnMut(String, &Var), prefix: &str, layer: &Linear| {
            push(format!("{prefix}.weight"), &layer.weight);
            push(format!("{prefix}.bias"), &layer.bias);
        };
        let norm = |push: &mut dyn FnMut(String, &Var), prefix: &str, layer: &LayerNorm| {
            push(format!("{prefix}.weight"), &layer.weight);
            push(format!("{prefix}.bias"), &layer.bias);
        };
        push(
            "bert.embeddings.word_embeddings.weight".into(),
            &self.embeddings.word,
        );
        push(
            "bert.embeddings.position_embeddings.weight".into(),
            &self.embeddings.position,
        );
        push(
            "bert.embeddings.token_type_embeddings.weight".into(),
            &self.embeddings.token_type,
        );
        norm(
            &mut push,
            "bert.embeddings.LayerNorm",
            &self.embeddings.norm,
        );
        for (index, layer) in self.layers.iter().enumerate() {
            let prefix = format!("bert.encoder.layer.{index}");
            linear(
                &mut push,
                &format!("{prefix}.attention.self.query"),
                &layer.query,
            );
            linear(
                &mut push,
                &format!("{prefix}.attention.self.key"),
                &layer.key,
            );
            linear(
                &mut push,
                &format!("{prefix}.attention.self.value"),
                &layer.value,
            );
            linear(
                &mut push,
                &format!("{prefix}.attention.output.dense"),
                &layer.attention_output,
            );
            norm(
                &mut push,
                &format!("{prefix}.attention.output.LayerNorm"),
                &layer.attention_norm,
            );
            linear(
                &mut push,
                &format!("{prefix}.intermediate.dense"),
                &layer.intermediate,
            );
            linear(&mut push, &format!("{prefix}.output.dense"), &layer.output);
            norm(
                &mut push,
                &format!("{prefix}.output.LayerNorm"),
                &layer.output_norm,
            );
        }
        linear(&mut push, "bert.pooler.dense", &self.pooler);
        linear(&mut push, "classifier", &self.classifier);
        parameters
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    pub fn num_labels(&self) -> usize {
        self.num_labels
    }

    pub fn dtype(&self) -> DType {
        self.embeddings.word.dtype()
    }

    pub fn device(&self) -> &Device {
        self.embeddings.word.device()
    }

    /// Every trainable tensor with its transformers name, in a fixed order.
    pub fn parameters(&self) -> &[(String, Var)] {
        &self.parameters
    }

    /// The encoder's last hidden states `[batch, length, hidden]`.
    pub fn encode(&self, batch: &Batch, mode: &mut Mode) -> anyhow::Result<Tensor> {
        let (batch_size, length) = batch
            .input_ids
            .dims2()
            .context("input_ids must be [batch, length]")?;
        if length > self.config.max_position_embeddings {
            bail!(
                "sequence of {length} tokens is longer than the model's {} positions",
                self.config.max_position_embeddings
            );
        }
        let hidden = self.config.hidden_size;
        let dtype = self.dtype();
        let kernels = self.kernels;
        let precision = self.precision;
        let graph = mode.graph();
        let embeddings_graph = self.graph_at(Depth::Embeddings, graph);

        let word = operand(&self.embeddings.word, embeddings_graph)
            .index_select(&batch.input_ids.flatten_all()?, 0)?;
        let token_type = operand(&self.embeddings.token_type, embeddings_graph)
            .index_select(&batch.token_type_ids.flatten_all()?, 0)?;
        let position = operand(&self.embeddings.position, embeddings_graph).narrow(0, 0, length)?;
        let embedded = (word + token_type)?
            .reshape((batch_size, length, hidden))?
            .broadcast_add(&position.unsqueeze(0)?)?;
        let mut x = self
            .embeddings
            .norm
            .forward_graph(&embedded, kernels, embeddings_graph)?;
        x = self.dropout_hidden(&x, mode)?;

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
        // The fused attention (CPU, f32/f64) takes the mask as values.
        let fused_attention = kernels.fused_for(&x);
        let additive_values = if fused_attention {
            additive
                .to_dtype(DType::F64)?
                .flatten_all()?
                .to_vec1::<f64>()?
        } else {
            Vec::new()
        };

        let heads = self.config.num_attention_heads;
        let head_size = self.config.head_size();
        let scale = 1.0 / (head_size as f64).sqrt();
        let pass_graph = graph;
        for (index, layer) in self.layers.iter().enumerate() {
            let graph = self.graph_at(Depth::Layer(index), pass_graph);
            let split = |t: Tensor| -> candle_core::Result<Tensor> {
                t.reshape((batch_size, length, heads, head_size))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let query = layer.query.forward_with(&x, graph, precision)?;
            let key = layer.key.forward_with(&x, graph, precision)?;
            let value = layer.value.forward_with(&x, graph, precision)?;
            let context = if fused_attention {
                let keep = match mode {
                    Mode::Train(random) if self.dropout.attention > 0.0 => {
                        Some(layers::dropout_mask(
                            batch_size * heads * length * length,
                            self.dropout.attention,
                            dtype,
                            random,
                        ))
                    }
                    _ => None,
                };
                crate::model::kernels::attention(
                    &query,
                    &key,
                    &value,
                    heads,
                    additive_values.clone(),
                    keep,
                )?
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
            let attended = self.dropout_hidden(
                &layer
                    .attention_output
                    .forward_with(&context, graph, precision)?,
                mode,
            )?;
            x = layer
                .attention_norm
                .forward_graph(&(attended + &x)?, kernels, graph)?;
            let intermediate = layers::gelu(
                &layer.intermediate.forward_with(&x, graph, precision)?,
                kernels,
            )?;
            let output = self.dropout_hidden(
                &layer.output.forward_with(&intermediate, graph, precision)?,
                mode,
            )?;
            x = layer
                .output_norm
                .forward_graph(&(output + &x)?, kernels, graph)?;
        }
        Ok(x)
    }

    fn dropout_hidden(&self, x: &Tensor, mode: &mut Mode) -> candle_core::Result<Tensor> {
        match mode {
            Mode::Eval => Ok(x.clone()),
            Mode::Train(random) => layers::dropout(x, self.dropout.hidden, random),
        }
    }

    /// Class logits `[batch, num_labels]`.
    pub fn forward(&self, batch: &Batch, mode: &mut Mode) -> anyhow::Result<Tensor> {
        let hidden_states = self.encode(batch, mode)?;
        let first = hidden_states.narrow(1, 0, 1)?.squeeze(1)?;
        let graph = mode.graph();
        let pooled = self
            .pooler
            .forward_with(&first, graph, self.precision)?
            .tanh()?;
        let pooled = match mode {
            Mode::Eval => pooled,
            Mode::Train(random) => layers::dropout(&pooled, self.dropout.classifier, random)?,
        };
        Ok(self
            .classifier
            .forward_with(&pooled, graph, self.precision)?)
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
