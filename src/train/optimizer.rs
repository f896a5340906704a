//! The optimizer, with state bertlab owns (so a checkpoint holds it exactly): AdamW as
//! `torch.optim.AdamW` computes it (decoupled weight decay, bias correction, the run's betas and
//! epsilon), with one [`ParameterGroup`] per tensor as torch's parameter groups: whether weight
//! decay applies (`weight_decay_scope`: not on biases and LayerNorm weights as standard
//! fine-tuning does, or on everything) and the tensor's share of the learning rate (layer-wise
//! decay); and global-norm gradient clipping as `torch.nn.utils.clip_grad_norm_`. The learning
//! rate of each step comes from `train::schedule`. Frozen tensors are not given to the optimizer.
//!
//! Moments live in host memory as f32, one pair of vectors per parameter; when the model trains on
//! a GPU they move to that GPU at the first step ([`AdamW::step_on_device`]) and come back for
//! checkpoints.

use anyhow::{Context, bail};
use candle_core::{DType, Device, Tensor, Var};

use crate::model::Depth;
use crate::plan::spec::{TrainSettings, WeightDecayScope, recipe_defaults};

/// AdamW's hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWSettings {
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
}

impl AdamWSettings {
    /// transformers' Trainer defaults (betas 0.9 and 0.999, epsilon 1e-8) with `weight_decay`.
    pub fn with_weight_decay(weight_decay: f64) -> AdamWSettings {
        AdamWSettings {
            weight_decay,
            beta1: recipe_defaults::ADAM_BETA1,
            beta2: recipe_defaults::ADAM_BETA2,
            epsilon: recipe_defaults::ADAM_EPSILON,
        }
    }

    /// A run's settings.
    pub fn for_run(train: &TrainSettings) -> AdamWSettings {
        AdamWSettings {
            weight_decay: train.weight_decay,
            beta1: train.adam_beta1,
            beta2: train.adam_beta2,
            epsilon: train.adam_epsilon,
        }
    }
}

/// How one tensor is optimized (a torch parameter group of its own).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ParameterGroup {
    /// Whether weight decay applies.
    pub weight_decay: bool,
    /// The tensor's learning rate is the schedule's times this.
    pub learning_rate_scale: f64,
}

/// Whether weight decay applies to a parameter under `weight_decay_scope = "standard"`, by its
/// transformers name: every weight matrix and embedding, but no bias and no normalisation weight
/// (as transformers' Trainer groups them, by module type): BERT's `LayerNorm`, DistilBERT's
/// `sa_layer_norm`/`output_layer_norm`, ModernBERT's `embeddings.norm`, `attn_norm`, `mlp_norm`,
/// `final_norm`, `head.norm`.
pub fn applies_weight_decay(name: &str) -> bool {
    let module = name.strip_suffix(".weight").unwrap_or(name);
    let last = module.rsplit('.').next().unwrap_or(module);
    !(name.ends_with("bias") || name.contains("LayerNorm") || last.ends_with("norm"))
}

/// Whether weight decay applies to a parameter under `scope`.
pub fn decays(name: &str, scope: WeightDecayScope) -> bool {
    match scope {
        WeightDecayScope::Standard => applies_weight_decay(name),
        WeightDecayScope::All => true,
    }
}

/// The share of the learning rate of a tensor at `depth` in a model of `layers` encoder layers
/// under layer-wise decay `factor`: 1 for the head (classifier and pooler), `factor` for the top
/// layer, one more factor for each layer below, one more again for the embeddings.
pub fn layer_learning_rate_scale(depth: Depth, layers: usize, factor: f64) -> f64 {
    let below_head = match depth {
        Depth::Head => 0,
        Depth::Layer(index) => layers.saturating_sub(index),
        Depth::Embeddings => layers + 1,
    };
    factor.powi(below_head as i32)
}

/// The groups of a run's trainable tensors (`names` with their `depths`, in a model of `layers`
/// encoder layers).
pub fn parameter_groups(
    names: &[&str],
    depths: &[Depth],
    layers: usize,
    train: &TrainSettings,
) -> Vec<ParameterGroup> {
    names
        .iter()
        .zip(depths)
        .map(|(name, &depth)| ParameterGroup {
            weight_decay: decays(name, train.weight_decay_scope),
            learning_rate_scale: layer_learning_rate_scale(
                depth,
                layers,
                train.layer_learning_rate_decay,
            ),
        })
        .collect()
}

/// One parameter's moments.
#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    pub first: Vec<f32>,
    pub second: Vec<f32>,
}

/// AdamW over a fixed list of parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamW {
    pub settings: AdamWSettings,
    /// Optimizer steps taken.
    pub steps: u64,
    /// Parameter names, in the order of the parameter list it was made for.
    pub names: Vec<String>,
    /// Each parameter's group, in the same order.
    pub groups: Vec<ParameterGroup>,
    pub moments: Vec<Moments>,
    /// The moments on the GPU, once a step ran there; they supersede `moments` until read back.
    pub device_moments: Option<DeviceMoments>,
}

/// Each parameter's (first, second) moments as f32 tensors on the parameters' device.
#[derive(Clone, Debug)]
pub struct DeviceMoments(pub Vec<(Tensor, Tensor)>);

impl PartialEq for DeviceMoments {
    /// Equal values (compared through host copies: for tests).
    fn eq(&self, other: &Self) -> bool {
        let values = |tensor: &Tensor| tensor.flatten_all().and_then(|t| t.to_vec1::<f32>()).ok();
        self.0.len() == other.0.len()
            && self.0.iter().zip(&other.0).all(|((a, b), (c, d))| {
                values(a) == values(c) && values(b) == values(d) && values(a).is_some()
            })
    }
}

impl AdamW {
    /// Fresh state (zero moments) for `parameters`, with transformers' Trainer defaults: betas
    /// 0.9 and 0.999, epsilon 1e-8, decay on every tensor but biases and LayerNorm weights, one
    /// learning rate.
    pub fn new(parameters: &[(String, Var)], weight_decay: f64) -> AdamW {
        let groups = parameters
            .iter()
            .map(|(name, _)| ParameterGroup {
                weight_decay: applies_weight_decay(name),
                learning_rate_scale: 1.0,
            })
            .collect();
        AdamW::with_groups(
            parameters,
            AdamWSettings::with_weight_decay(weight_decay),
            groups,
        )
    }

    /// Fresh state (zero moments) for `parameters`, each in its group (`groups`: one per
    /// parameter, in order).
    pub fn with_groups(
        parameters: &[(String, Var)],
        settings: AdamWSettings,
        groups: Vec<ParameterGroup>,
    ) -> AdamW {
        assert_eq!(parameters.len(), groups.len(), "one group per parameter");
        AdamW {
            settings,
            steps: 0,
            names: parameters.iter().map(|(name, _)| name.clone()).collect(),
            groups,
            moments: parameters
                .iter()
                .map(|(_, var)| Moments {
                    first: vec![0.0; var.elem_count()],
                    second: vec![0.0; var.elem_count()],
                })
                .collect(),
            device_moments: None,
        }
    }

    /// Clipping and [`AdamW::step`] as tensor operations on the parameters' own device (a GPU:
    /// nothing crosses to the host but the norm), with the moments kept there. The same formulas
    /// as the host update, element by element, in the device's f32 arithmetic. Returns the
    /// gradient norm before clipping; a non-finite norm updates nothing.
    pub fn step_on_device(
        &mut self,
        parameters: &[(String, Var)],
        gradients: &[Tensor],
        max_norm: f64,
        learning_rate: f64,
    ) -> anyhow::Result<f64> {
        self.check_lengths(parameters.len(), gradients.len())?;
        let squares = gradients
            .iter()
            .map(|gradient| gradient.sqr()?.sum_all())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let norm = Tensor::stack(&squares, 0)?
            .to_dtype(DType::F64)?
            .sum_all()?
            .to_scalar::<f64>()?
            .sqrt();
        if !norm.is_finite() {
            return Ok(norm);
        }
        let clip = clip_coefficient(max_norm, norm);
        if self.device_moments.is_none() {
            let tensors = self
                .moments
                .iter()
                .zip(parameters)
                .map(|(moments, (_, var))| {
                    Ok((
                        Tensor::from_slice(&moments.first, var.shape(), var.device())?,
                        Tensor::from_slice(&moments.second, var.shape(), var.device())?,
                    ))
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            self.device_moments = Some(DeviceMoments(tensors));
        }
        self.steps += 1;
        let settings = self.settings;
        let constants = StepConstants::new(settings, self.steps);
        let one_minus_beta1 = (1.0 - settings.beta1) as f32 as f64;
        let one_minus_beta2 = (1.0 - settings.beta2) as f32 as f64;
        let beta2 = settings.beta2 as f32 as f64;
        let epsilon = settings.epsilon as f32 as f64;
        let Some(DeviceMoments(moments)) = &mut self.device_moments else {
            unreachable!("set above");
        };
        for ((((name, var), gradient), (first, second)), group) in parameters
            .iter()
            .zip(gradients)
            .zip(moments.iter_mut())
            .zip(&self.groups)
        {
            let (step_size, decay) = constants.for_tensor(group, learning_rate);
            let bias_correction2_sqrt = constants.bias_correction2_sqrt;
            #[cfg(feature = "cuda")]
            if crate::model::cuda_kernels::available_for(var.as_tensor()) {
                crate::model::cuda_kernels::adamw_in_place(
                    var.as_tensor(),
                    &gradient.to_dtype(DType::F32)?,
                    first,
                    second,
                    &crate::model::cuda_kernels::AdamWConstants {
                        clip: clip.unwrap_or(1.0),
                        decay,
                        one_minus_beta1: one_minus_beta1 as f32,
                        beta2: beta2 as f32,
                        one_minus_beta2: one_minus_beta2 as f32,
                        step_size,
                        correction2: bias_correction2_sqrt,
                        epsilon: epsilon as f32,
                    },
                )
                .with_context(|| format!("cannot update parameter {name}"))?;
                continue;
            }
            let gradient = gradient.to_dtype(DType::F32)?;
            let gradient = match clip {
                Some(coefficient) => gradient.affine(coefficient as f64, 0.0)?,
                None => gradient,
            };
            let value = var.as_tensor().to_dtype(DType::F32)?;
            let value = if decay == 1.0 {
                value
            } else {
                value.affine(decay as f64, 0.0)?
            };
            // first += (1 - beta1) * (grad - first)
            let new_first = (&*first + (&gradient - &*first)?.affine(one_minus_beta1, 0.0)?)?;
            // second = second * beta2 + (1 - beta2) * grad * grad
            let new_second =
                (second.affine(beta2, 0.0)? + gradient.sqr()?.affine(one_minus_beta2, 0.0)?)?;
            let denominator = new_second
                .sqrt()?
                .affine(1.0 / bias_correction2_sqrt as f64, epsilon)?;
            let updated = (value - (&new_first / denominator)?.affine(step_size as f64, 0.0)?)?;
            var.set(&updated.to_dtype(var.dtype())?)
                .with_context(|| format!("cannot update parameter {name}"))?;
            *first = new_first;
            *second = new_second;
        }
        Ok(norm)
    }

    /// One update with `gradients` (one flat f32 vector per parameter, in order) at
    /// `learning_rate`. Element by element the arithmetic is torch's single-tensor AdamW.
    /// One gradient per parameter, one moment pair per parameter.
    fn check_lengths(&self, parameters: usize, gradients: usize) -> anyhow::Result<()> {
        if parameters != self.moments.len() || gradients != self.moments.len() {
            bail!(
                "the optimizer holds {} parameters, got {parameters} parameters and {gradients} gradients",
                self.moments.len(),
            );
        }
        Ok(())
    }

    pub fn step(
        &mut self,
        parameters: &[(String, Var)],
        gradients: &[Vec<f32>],
        learning_rate: f64,
    ) -> anyhow::Result<()> {
        self.check_lengths(parameters.len(), gradients.len())?;
        self.steps += 1;
        let settings = self.settings;
        let constants = StepConstants::new(settings, self.steps);
        let (beta2, epsilon) = (settings.beta2 as f32, settings.epsilon as f32);
        let one_minus_beta1 = (1.0 - settings.beta1) as f32;
        let one_minus_beta2 = (1.0 - settings.beta2) as f32;
        for ((((name, var), gradient), moments), group) in parameters
            .iter()
            .zip(gradients)
            .zip(self.moments.iter_mut())
            .zip(&self.groups)
        {
            let (step_size, decay) = constants.for_tensor(group, learning_rate);
            let bias_correction2_sqrt = constants.bias_correction2_sqrt;
            let mut values = var
                .as_tensor()
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()
                .with_context(|| format!("cannot read parameter {name}"))?;
            if values.len() != gradient.len() {
                bail!(
                    "gradient of {name} has {} values for {} parameters",
                    gradient.len(),
                    values.len()
                );
            }
            for (((value, &grad), first), second) in values
                .iter_mut()
                .zip(gradient)
                .zip(moments.first.iter_mut())
                .zip(moments.second.iter_mut())
            {
                *value *= decay;
                // torch: exp_avg.lerp_(grad, 1 - beta1)
                *first += one_minus_beta1 * (grad - *first);
                // torch: exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                *second = *second * beta2 + one_minus_beta2 * grad * grad;
                let denominator = second.sqrt() / bias_correction2_sqrt + epsilon;
                *value -= step_size * (*first / denominator);
            }
            let updated =
                Tensor::from_vec(values, var.shape(), var.device())?.to_dtype(var.dtype())?;
            var.set(&updated)
                .with_context(|| format!("cannot update parameter {name}"))?;
        }
        Ok(())
    }

    /// The moments as named tensors (`adamw.first.<name>`, `adamw.second.<name>`), for a
    /// checkpoint.
    pub fn state_tensors(&self) -> anyhow::Result<Vec<(String, Tensor)>> {
        let mut tensors = Vec::with_capacity(2 * self.names.len());
        if let Some(DeviceMoments(moments)) = &self.device_moments {
            for (name, (first, second)) in self.names.iter().zip(moments) {
                tensors.push((
                    format!("adamw.first.{name}"),
                    first.flatten_all()?.to_device(&Device::Cpu)?,
                ));
                tensors.push((
                    format!("adamw.second.{name}"),
                    second.flatten_all()?.to_device(&Device::Cpu)?,
                ));
            }
            return Ok(tensors);
        }
        for (name, moments) in self.names.iter().zip(&self.moments) {
            tensors.push((
                format!("adamw.first.{name}"),
                Tensor::new(moments.first.as_slice(), &Device::Cpu)?,
            ));
            tensors.push((
                format!("adamw.second.{name}"),
                Tensor::new(moments.second.as_slice(), &Device::Cpu)?,
            ));
        }
        Ok(tensors)
    }

    /// Restores moments saved by [`AdamW::state_tensors`], and the step count.
    pub fn restore(
        &mut self,
        tensors: &std::collections::HashMap<String, Tensor>,
        steps: u64,
    ) -> anyhow::Result<()> {
        self.device_moments = None;
        for (name, moments) in self.names.iter().zip(self.moments.iter_mut()) {
            for (kind, target) in [
                ("first", &mut moments.first),
                ("second", &mut moments.second),
            ] {
                let key = format!("adamw.{kind}.{name}");
                let values = tensors
                    .get(&key)
                    .with_context(|| format!("the checkpoint lacks {key}"))?
                    .to_vec1::<f32>()?;
                if values.len() != target.len() {
                    bail!(
                        "{key} holds {} values, the model needs {}",
                        values.len(),
                        target.len()
                    );
                }
                *target = values;
            }
        }
        self.steps = steps;
        Ok(())
    }
}

/// Runs `f` on a tensor's f32 values without copying them, when it is a contiguous f32 tensor in
/// CPU memory; `None` otherwise (the caller copies instead).
pub fn with_cpu_f32<R>(tensor: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (storage, layout) = tensor.storage_and_layout();
    let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(values)) = &*storage else {
        return None;
    };
    let (start, end) = layout.contiguous_offsets()?;
    Some(f(&values[start..end]))
}

/// Elements per parallel chunk of the in-place update and of the norm.
const CHUNK: usize = 1 << 16;

/// The sum of squares of `values` in f64: partial sums of fixed chunks (computed in parallel),
/// added in chunk order, so the result does not depend on the number of threads.
pub fn sum_of_squares(values: &[f32]) -> f64 {
    use rayon::prelude::*;
    let wide = is_x86_feature_detected!("avx512f");
    let partial: Vec<f64> = values
        .par_chunks(CHUNK)
        .map(|chunk| {
            if wide {
                // SAFETY: the CPU has AVX-512F (checked).
                unsafe { chunk_sum_of_squares_avx512(chunk) }
            } else {
                chunk_sum_of_squares(chunk)
            }
        })
        .collect();
    partial.iter().sum()
}

/// Lanes of [`chunk_sum_of_squares`]: four vectors of 8 f64, enough to hide the adds' latency.
const SQUARE_LANES: usize = 32;

/// One chunk's sum of squares in f64: element `i` goes to lane `i % 32`, the lanes are added
/// pairwise in a fixed tree. A fixed order (not the input's), so the plain and the AVX-512
/// builds give the same bits; a sequential sum was one dependent add per element.
#[inline(always)]
fn chunk_sum_of_squares(chunk: &[f32]) -> f64 {
    let mut lanes = [0f64; SQUARE_LANES];
    let mut blocks = chunk.chunks_exact(SQUARE_LANES);
    for block in &mut blocks {
        for (lane, &value) in lanes.iter_mut().zip(block) {
            *lane += (value as f64) * (value as f64);
        }
    }
    for (lane, &value) in lanes.iter_mut().zip(blocks.remainder()) {
        *lane += (value as f64) * (value as f64);
    }
    let mut width = SQUARE_LANES;
    while width > 1 {
        width /= 2;
        for index in 0..width {
            lanes[index] += lanes[index + width];
        }
    }
    lanes[0]
}

/// [`chunk_sum_of_squares`] compiled for AVX-512.
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn chunk_sum_of_squares_avx512(chunk: &[f32]) -> f64 {
    chunk_sum_of_squares(chunk)
}

/// One parameter's AdamW update as an in-place op on its storage (see [`AdamW::step_tensors`]).
struct InPlaceUpdate<'a> {
    gradient: &'a [f32],
    moments: std::cell::RefCell<&'a mut Moments>,
    decay: f32,
    clip: Option<f32>,
    step_size: f32,
    bias_correction2_sqrt: f32,
    settings: AdamWSettings,
}

impl candle_core::InplaceOp1 for InPlaceUpdate<'_> {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(
        &self,
        storage: &mut candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        let candle_core::CpuStorage::F32(values) = storage else {
            candle_core::bail!("adamw-update: parameters must be f32");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("adamw-update: parameters must be contiguous");
        };
        use rayon::prelude::*;
        let values = &mut values[start..end];
        let mut moments = self.moments.borrow_mut();
        let Moments { first, second } = &mut **moments;
        let settings = self.settings;
        let (beta2, epsilon) = (settings.beta2 as f32, settings.epsilon as f32);
        let one_minus_beta1 = (1.0 - settings.beta1) as f32;
        let one_minus_beta2 = (1.0 - settings.beta2) as f32;
        let (decay, step_size, correction) =
            (self.decay, self.step_size, self.bias_correction2_sqrt);
        let update = ElementUpdate {
            clip: self.clip,
            decay,
            one_minus_beta1,
            beta2,
            one_minus_beta2,
            correction,
            epsilon,
            step_size,
        };
        let wide = is_x86_feature_detected!("avx512f");
        // Element-wise, so splitting into chunks changes nothing in the result.
        values
            .par_chunks_mut(CHUNK)
            .zip(self.gradient.par_chunks(CHUNK))
            .zip(first.par_chunks_mut(CHUNK))
            .zip(second.par_chunks_mut(CHUNK))
            .for_each(|(((values, gradient), first), second)| {
                if wide {
                    // SAFETY: the CPU has AVX-512F (checked).
                    unsafe { update.run_avx512(values, gradient, first, second) }
                } else {
                    update.run(values, gradient, first, second)
                }
            });
        Ok(())
    }
}

/// The AdamW update of one element, its settings as plain values (so the loop vectorises).
#[derive(Clone, Copy)]
struct ElementUpdate {
    clip: Option<f32>,
    decay: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    correction: f32,
    epsilon: f32,
    step_size: f32,
}

impl ElementUpdate {
    /// Updates `values` and their moments in place from `gradient` (all the same length).
    /// Multiplies, adds, divisions and square roots are correctly rounded, one by one, on every
    /// x86-64 unit, so the vectorised build gives the scalar one's bits.
    #[inline(always)]
    fn run(&self, values: &mut [f32], gradient: &[f32], first: &mut [f32], second: &mut [f32]) {
        match self.clip {
            Some(coefficient) => {
                self.each(values, gradient, first, second, |raw| raw * coefficient)
            }
            None => self.each(values, gradient, first, second, |raw| raw),
        }
    }

    #[inline(always)]
    fn each(
        &self,
        values: &mut [f32],
        gradient: &[f32],
        first: &mut [f32],
        second: &mut [f32],
        clipped: impl Fn(f32) -> f32,
    ) {
        let Self {
            decay,
            one_minus_beta1,
            beta2,
            one_minus_beta2,
            correction,
            epsilon,
            step_size,
            ..
        } = *self;
        for (((value, &raw), first), second) in values
            .iter_mut()
            .zip(gradient)
            .zip(first.iter_mut())
            .zip(second.iter_mut())
        {
            let grad = clipped(raw);
            *value *= decay;
            *first += one_minus_beta1 * (grad - *first);
            *second = *second * beta2 + one_minus_beta2 * grad * grad;
            let denominator = second.sqrt() / correction + epsilon;
            *value -= step_size * (*first / denominator);
        }
    }

    /// [`ElementUpdate::run`] compiled for AVX-512.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn run_avx512(
        &self,
        values: &mut [f32],
        gradient: &[f32],
        first: &mut [f32],
        second: &mut [f32],
    ) {
        self.run(values, gradient, first, second)
    }
}

impl AdamW {
    /// [`AdamW::step`] and clipping in one pass, with no copies: `gradients` are the backward
    /// pass's tensors (contiguous f32 on the CPU), parameters are updated in place. The
    /// arithmetic is the same, element by element, as clipping then [`AdamW::step`]. Returns
    /// the gradient norm before clipping, or `None` when a tensor is not on the CPU (then the
    /// caller takes the copying path).
    pub fn step_tensors(
        &mut self,
        parameters: &[(String, Var)],
        gradients: &[Tensor],
        max_norm: f64,
        learning_rate: f64,
    ) -> anyhow::Result<Option<f64>> {
        self.check_lengths(parameters.len(), gradients.len())?;
        let mut sum = 0.0f64;
        for gradient in gradients {
            let Some(part) = with_cpu_f32(gradient, sum_of_squares) else {
                return Ok(None);
            };
            sum += part;
        }
        let norm = sum.sqrt();
        if !norm.is_finite() {
            return Ok(Some(norm));
        }
        let clip = clip_coefficient(max_norm, norm);
        self.steps += 1;
        let settings = self.settings;
        let constants = StepConstants::new(settings, self.steps);
        for ((((name, var), gradient), moments), group) in parameters
            .iter()
            .zip(gradients)
            .zip(self.moments.iter_mut())
            .zip(&self.groups)
        {
            let (step_size, decay) = constants.for_tensor(group, learning_rate);
            let bias_correction2_sqrt = constants.bias_correction2_sqrt;
            let (storage, layout) = gradient.storage_and_layout();
            let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(values)) = &*storage else {
                bail!("the gradient of {name} is not f32 on the CPU");
            };
            let (start, end) = layout
                .contiguous_offsets()
                .with_context(|| format!("the gradient of {name} is not contiguous"))?;
            let update = InPlaceUpdate {
                gradient: &values[start..end],
                moments: std::cell::RefCell::new(moments),
                decay,
                clip,
                step_size,
                bias_correction2_sqrt,
                settings,
            };
            var.as_tensor()
                .inplace_op1(&update)
                .with_context(|| format!("cannot update parameter {name}"))?;
        }
        Ok(Some(norm))
    }
}

/// The global L2 norm of all gradients (summed in f64).
pub fn global_norm(gradients: &[Vec<f32>]) -> f64 {
    gradients
        .iter()
        .map(|gradient| sum_of_squares(gradient))
        .sum::<f64>()
        .sqrt()
}

/// The constants of one optimizer step for every tensor, as torch computes them in f64 for the
/// step count `t` already advanced: `1 - beta1^t` and `sqrt(1 - beta2^t)` (rounded to f32 once).
struct StepConstants {
    settings: AdamWSettings,
    bias_correction1: f64,
    bias_correction2_sqrt: f32,
}

impl StepConstants {
    fn new(settings: AdamWSettings, steps: u64) -> StepConstants {
        let step = steps as i32;
        StepConstants {
            settings,
            bias_correction1: 1.0 - settings.beta1.powi(step),
            bias_correction2_sqrt: (1.0 - settings.beta2.powi(step)).sqrt() as f32,
        }
    }

    /// A tensor's step size `lr / (1 - beta1^t)` and what it is multiplied by before the update
    /// (`1 - lr * weight_decay` when its group decays, else 1), at its own learning rate: the
    /// schedule's `learning_rate` times the group's share.
    fn for_tensor(&self, group: &ParameterGroup, learning_rate: f64) -> (f32, f32) {
        let rate = learning_rate * group.learning_rate_scale;
        let decay = if group.weight_decay {
            (1.0 - rate * self.settings.weight_decay) as f32
        } else {
            1.0
        };
        ((rate / self.bias_correction1) as f32, decay)
    }
}

/// torch's `clip_grad_norm_` coefficient `max_norm / (norm + 1e-6)` when it is below 1 (and
/// `max_norm > 0`); `None`: the gradients stay as they are.
fn clip_coefficient(max_norm: f64, norm: f64) -> Option<f32> {
    (max_norm > 0.0 && norm.is_finite())
        .then(|| max_norm / (norm + 1e-6))
        .filter(|coefficient| *coefficient < 1.0)
        .map(|coefficient| coefficient as f32)
}

/// Scales the gradients so their global norm is at most `max_norm` (0: no clipping), as
/// `torch.nn.utils.clip_grad_norm_` does (coefficient `max_norm / (norm + 1e-6)`, at most 1).
/// Returns the norm before clipping.
pub fn clip_global_norm(gradients: &mut [Vec<f32>], max_norm: f64) -> f64 {
    let norm = global_norm(gradients);
    if let Some(coefficient) = clip_coefficient(max_norm, norm) {
        for value in gradients
            .iter_mut()
            .flat_map(|gradient| gradient.iter_mut())
        {
            *value *= coefficient;
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sum of squares: the AVX-512 build's bits are the plain build's, and the value is the
    /// exact sum's to f64 rounding, over lengths with and without a tail.
    #[test]
    fn the_vectorised_sum_of_squares_gives_the_plain_bits() {
        let mut random = crate::support::random::SeededRandom::new(3, 0);
        for length in [0usize, 1, 31, 32, 1000, 65_536 + 77] {
            let values: Vec<f32> = (0..length).map(|_| random.normal() as f32).collect();
            let plain = chunk_sum_of_squares(&values);
            let exact: f64 = values.iter().map(|&v| (v as f64) * (v as f64)).sum();
            assert!((plain - exact).abs() <= 1e-12 * exact.max(1.0), "{length}");
            if is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F (checked).
                let wide = unsafe { chunk_sum_of_squares_avx512(&values) };
                assert_eq!(plain.to_bits(), wide.to_bits(), "{length}");
            }
        }
    }

    /// The element update compiled for AVX-512 gives the scalar build's bits, clipped and not,
    /// over a length that leaves a tail past the last full vector.
    #[test]
    fn the_vectorised_adamw_update_gives_the_scalar_bits() {
        if !is_x86_feature_detected!("avx512f") {
            return;
        }
        let mut random = crate::support::random::SeededRandom::new(9, 0);
        let mut draw = |scale: f64| -> Vec<f32> {
            (0..1027)
                .map(|_| (random.normal() * scale) as f32)
                .collect()
        };
        let (values, gradient, first) = (draw(0.05), draw(1e-3), draw(1e-4));
        let second: Vec<f32> = draw(1e-4).iter().map(|v| v * v).collect();
        for clip in [None, Some(0.37f32)] {
            let update = ElementUpdate {
                clip,
                decay: 1.0 - 2e-5 * 0.01,
                one_minus_beta1: 0.1,
                beta2: 0.999,
                one_minus_beta2: 1e-3,
                correction: 0.0447,
                epsilon: 1e-8,
                step_size: 2e-5 / 0.19,
            };
            let (mut plain, mut wide) = (
                (values.clone(), first.clone(), second.clone()),
                (values.clone(), first.clone(), second.clone()),
            );
            update.run(&mut plain.0, &gradient, &mut plain.1, &mut plain.2);
            // SAFETY: the CPU has AVX-512F (checked).
            unsafe { update.run_avx512(&mut wide.0, &gradient, &mut wide.1, &mut wide.2) };
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&plain.0), bits(&wide.0), "{clip:?}: values");
            assert_eq!(bits(&plain.1), bits(&wide.1), "{clip:?}: first moments");
            assert_eq!(bits(&plain.2), bits(&wide.2), "{clip:?}: second moments");
            assert_ne!(bits(&plain.0), bits(&values), "the update moved the values");
        }
    }

    #[test]
    fn decay_skips_biases_and_layer_norms() {
        assert!(applies_weight_decay(
            "bert.embeddings.word_embeddings.weight"
        ));
        assert!(applies_weight_decay(
            "bert.encoder.layer.0.attention.self.query.weight"
        ));
        assert!(applies_weight_decay("classifier.weight"));
        assert!(!applies_weight_decay("classifier.bias"));
        assert!(!applies_weight_decay("bert.embeddings.LayerNorm.weight"));
        assert!(!applies_weight_decay(
            "bert.encoder.layer.3.output.LayerNorm.bias"
        ));
        for norm in [
            "distilbert.transformer.layer.0.sa_layer_norm.weight",
            "distilbert.transformer.layer.5.output_layer_norm.weight",
            "model.embeddings.norm.weight",
            "model.layers.1.attn_norm.weight",
            "model.layers.1.mlp_norm.weight",
            "model.final_norm.weight",
            "head.norm.weight",
        ] {
            assert!(!applies_weight_decay(norm), "{norm}");
        }
        for weight in [
            "model.layers.1.attn.Wqkv.weight",
            "head.dense.weight",
            "deberta.encoder.rel_embeddings.weight",
            "model.embeddings.tok_embeddings.weight",
        ] {
            assert!(applies_weight_decay(weight), "{weight}");
        }
        assert!(decays("classifier.bias", WeightDecayScope::All));
        assert!(!decays("classifier.bias", WeightDecayScope::Standard));
    }

    #[test]
    fn layer_wise_decay_counts_factors_down_from_the_head() {
        let scale = |depth| layer_learning_rate_scale(depth, 6, 0.5);
        assert_eq!(scale(Depth::Head), 1.0);
        assert_eq!(scale(Depth::Layer(5)), 0.5, "the top layer: one factor");
        assert_eq!(scale(Depth::Layer(4)), 0.25);
        assert_eq!(scale(Depth::Layer(0)), 0.5f64.powi(6));
        assert_eq!(scale(Depth::Embeddings), 0.5f64.powi(7));
        assert_eq!(
            layer_learning_rate_scale(Depth::Embeddings, 6, 1.0),
            1.0,
            "1: off"
        );
    }

    #[test]
    fn clipping_scales_to_the_maximum_norm() {
        let mut gradients = vec![vec![3.0f32], vec![4.0]];
        let norm = clip_global_norm(&mut gradients, 1.0);
        assert_eq!(norm, 5.0);
        assert!((global_norm(&gradients) - 1.0).abs() < 1e-6);
        let mut small = vec![vec![0.3f32, 0.4]];
        clip_global_norm(&mut small, 1.0);
        assert_eq!(
            small,
            vec![vec![0.3f32, 0.4]],
            "under the maximum: untouched"
        );
        let mut off = vec![vec![30.0f32, 40.0]];
        clip_global_norm(&mut off, 0.0);
        assert_eq!(off, vec![vec![30.0f32, 40.0]], "0 turns clipping off");
    }

    /// The tensor-op update a GPU runs computes what the host update computes (run here on CPU
    /// tensors), its moments survive a checkpoint, and a restored state goes on identically.
    #[test]
    fn the_device_update_matches_the_host_update() {
        let parameters = |values: [&[f32]; 2]| -> Vec<(String, Var)> {
            vec![
                (
                    "layer.weight".to_string(),
                    Var::from_slice(values[0], (2, 2), &Device::Cpu).unwrap(),
                ),
                (
                    "layer.bias".to_string(),
                    Var::from_slice(values[1], 2, &Device::Cpu).unwrap(),
                ),
            ]
        };
        let start: [&[f32]; 2] = [&[0.5, -1.0, 2.0, 0.25], &[0.1, -0.2]];
        let host = parameters(start);
        let device = parameters(start);
        let mut host_optimizer = AdamW::new(&host, 0.01);
        let mut device_optimizer = AdamW::new(&device, 0.01);
        for step in 0..5 {
            let scale = 1.0 + step as f32;
            let gradients = [vec![0.3 * scale, -0.7, 1.5, 0.01], vec![-2.0, 0.4 * scale]];
            let mut clipped = gradients.to_vec();
            let host_norm = clip_global_norm(&mut clipped, 1.0);
            host_optimizer.step(&host, &clipped, 1e-2).unwrap();
            let tensors: Vec<Tensor> = gradients
                .iter()
                .zip(&device)
                .map(|(values, (_, var))| Tensor::from_slice(values, var.shape(), &Device::Cpu))
                .collect::<candle_core::Result<_>>()
                .unwrap();
            let device_norm = device_optimizer
                .step_on_device(&device, &tensors, 1.0, 1e-2)
                .unwrap();
            assert!((host_norm - device_norm).abs() < 1e-6 * host_norm);
        }
        for ((name, a), (_, b)) in host.iter().zip(&device) {
            let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-6, "{name}: host {x}, device {y}");
            }
        }
        let host_state = host_optimizer.state_tensors().unwrap();
        let device_state = device_optimizer.state_tensors().unwrap();
        assert_eq!(host_state.len(), device_state.len());
        for ((name, a), (other, b)) in host_state.iter().zip(&device_state) {
            assert_eq!(name, other);
            let a = a.to_vec1::<f32>().unwrap();
            let b = b.to_vec1::<f32>().unwrap();
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x - y).abs() <= 1e-6 * x.abs().max(1e-3),
                    "{name}: {x} vs {y}"
                );
            }
        }
        // A restored state drops the device copies and takes the checkpoint's moments.
        let saved: std::collections::HashMap<String, Tensor> = device_state.into_iter().collect();
        let mut restored = AdamW::new(&device, 0.01);
        restored.restore(&saved, device_optimizer.steps).unwrap();
        assert!(restored.device_moments.is_none());
        assert_eq!(restored.steps, 5);
    }
}
