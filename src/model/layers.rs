//! Differentiable building blocks, composed from candle primitives that all have a backward pass.
//!
//! candle-nn's fused `ops::layer_norm` and `ops::softmax_last_dim` are built with
//! `apply_op*_no_bwd`: gradients stop at them without an error. Nothing here uses them, except
//! [`Kernels::CandleLayerNorm`], which exists only so that tests can show that the gradient
//! checks catch exactly that mistake. For speed, [`Kernels::Fused`] (the default) runs bertlab's
//! own fused kernels, which do have backward passes (`kernels`).

use candle_core::{D, DType, Result, Tensor, Var};

use crate::support::random::SeededRandom;

/// Whether a forward pass records candle's graph for a backward pass. Recording keeps every
/// intermediate tensor alive until the output is dropped; evaluation skips it, so each
/// intermediate is freed as soon as the next op has read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Graph {
    Record,
    Skip,
}

/// A parameter as an operand: itself when the graph is recorded, else a detached handle on the
/// same storage (no copy), which candle does not track.
pub fn operand(parameter: &Var, graph: Graph) -> Tensor {
    match graph {
        Graph::Record => parameter.as_tensor().clone(),
        Graph::Skip => parameter.as_tensor().detach(),
    }
}

/// A dense layer: `y = x W^T + b`, with `W` of shape `[out, in]` as in PyTorch checkpoints.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Var,
    pub bias: Var,
}

impl Linear {
    /// `x`: `[..., in]` -> `[..., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_graph(x, Graph::Record)
    }

    /// [`Linear::forward`], recording the graph or not.
    pub fn forward_graph(&self, x: &Tensor, graph: Graph) -> Result<Tensor> {
        self.forward_with(x, graph, Precision::Fp32)
    }

    /// [`Linear::forward_graph`] with the matrix product in `precision` (the bias add stays in
    /// the input's dtype).
    pub fn forward_with(&self, x: &Tensor, graph: Graph, precision: Precision) -> Result<Tensor> {
        let dims = x.dims();
        let features = dims[dims.len() - 1];
        let rows = x.elem_count() / features;
        let flat = x.reshape((rows, features))?;
        let weight = operand(&self.weight, graph);
        let bias = operand(&self.bias, graph);
        let out = match precision {
            Precision::Fp32 if Kernels::Fused.fused_for(&flat) => {
                crate::model::kernels::bias_add(&flat.matmul(&weight.t()?)?, &bias)?
            }
            Precision::Fp32 => flat.matmul(&weight.t()?)?.broadcast_add(&bias)?,
            // The bias add and its gradient are part of the CPU kernel's op.
            Precision::Bf16 if flat.device().is_cpu() && flat.dtype() == DType::F32 => {
                crate::model::bf16::linear(&flat, &weight, &bias)?
            }
            Precision::Bf16 => flat
                .to_dtype(DType::BF16)?
                .matmul(&weight.to_dtype(DType::BF16)?.t()?)?
                .to_dtype(flat.dtype())?
                .broadcast_add(&bias)?,
        };
        let mut shape = dims.to_vec();
        let last = shape.len() - 1;
        shape[last] = self.weight.dims()[0];
        out.reshape(shape)
    }
}

/// The arithmetic of the dense layers' matrix products.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// The parameters' dtype throughout.
    #[default]
    Fp32,
    /// Inputs and weights rounded to bf16, products summed in f32, f32 results: on the CPU
    /// bertlab's AVX512-BF16 kernels (`bf16`), elsewhere candle's bf16 matrix product. Weights,
    /// gradients, LayerNorm, softmax and the loss stay in f32.
    Bf16,
}

/// Which implementation of LayerNorm, softmax and GELU the model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Kernels {
    /// bertlab's fused kernels with analytic backward passes (`kernels`) on the CPU for f32 and
    /// f64; the composed forms elsewhere.
    #[default]
    Fused,
    /// Composed from differentiable candle primitives: the reference the fused kernels are
    /// tested against.
    Composed,
    /// The composed forms, but LayerNorm from candle-nn's fused kernel, which has **no backward
    /// pass**: for tests that prove the gradient checks detect it. Never use it to train.
    CandleLayerNorm,
}

/// Whether bertlab's fused GPU kernels run for `x` ([`Kernels::Fused`], a CUDA tensor in f32;
/// never in a build without the `cuda` feature).
pub(crate) fn gpu_fused(x: &Tensor, kernels: Kernels) -> bool {
    #[cfg(feature = "cuda")]
    {
        kernels == Kernels::Fused && crate::model::cuda_kernels::available_for(x)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (x, kernels);
        false
    }
}

impl Kernels {
    /// Whether the fused kernels run for `x`: [`Kernels::Fused`], on the CPU, in f32 or f64.
    pub(crate) fn fused_for(self, x: &Tensor) -> bool {
        self == Kernels::Fused
            && x.device().is_cpu()
            && matches!(x.dtype(), DType::F32 | DType::F64)
    }
}

/// LayerNorm over the last dimension with weight and bias.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub weight: Var,
    pub bias: Var,
    pub epsilon: f64,
}

impl LayerNorm {
    pub fn forward(&self, x: &Tensor, kernels: Kernels) -> Result<Tensor> {
        self.forward_graph(x, kernels, Graph::Record)
    }

    /// [`LayerNorm::forward`], recording the graph or not.
    pub fn forward_graph(&self, x: &Tensor, kernels: Kernels, graph: Graph) -> Result<Tensor> {
        let weight = operand(&self.weight, graph);
        let bias = operand(&self.bias, graph);
        match kernels {
            Kernels::Fused if kernels.fused_for(x) => {
                crate::model::kernels::layer_norm(x, &weight, &bias, self.epsilon)
            }
            #[cfg(feature = "cuda")]
            Kernels::Fused if gpu_fused(x, kernels) => {
                crate::model::cuda_kernels::layer_norm(x, &weight, &bias, self.epsilon)
            }
            Kernels::Fused | Kernels::Composed => {
                let mean = x.mean_keepdim(D::Minus1)?;
                let centered = x.broadcast_sub(&mean)?;
                let variance = centered.sqr()?.mean_keepdim(D::Minus1)?;
                let normalized = centered.broadcast_div(&(variance + self.epsilon)?.sqrt()?)?;
                normalized.broadcast_mul(&weight)?.broadcast_add(&bias)
            }
            Kernels::CandleLayerNorm => {
                candle_nn::ops::layer_norm(x, &weight, &bias, self.epsilon as f32)
            }
        }
    }
}

/// Softmax over the last dimension, fused where [`Kernels`] allows.
pub fn softmax(x: &Tensor, kernels: Kernels) -> Result<Tensor> {
    if kernels.fused_for(x) {
        crate::model::kernels::softmax_last_dim(x)
    } else {
        softmax_last_dim(x)
    }
}

/// GELU with the exact erf form, fused where [`Kernels`] allows. The composed form is built from
/// `erf`, whose backward is exact (candle's `gelu_erf` backward rounds 1/sqrt(2 pi) to 6 digits).
pub fn gelu(x: &Tensor, kernels: Kernels) -> Result<Tensor> {
    if kernels.fused_for(x) {
        crate::model::kernels::gelu_erf(x)
    } else if gpu_fused(x, kernels) {
        #[cfg(feature = "cuda")]
        return crate::model::cuda_kernels::gelu_erf(x);
        #[cfg(not(feature = "cuda"))]
        unreachable!("no GPU kernels in this build")
    } else {
        let cumulative = ((x * std::f64::consts::FRAC_1_SQRT_2)?.erf()? + 1.0)?;
        (x * 0.5)?.mul(&cumulative)
    }
}

/// The rows `ids` (`[n]`, u32) of an embedding table `[rows, width]`: `[n, width]`. On the CPU in
/// f32/f64 ([`Kernels::Fused`]) the fused lookup, whose table gradient is one allocation written
/// at the batch's rows only; `index_select` elsewhere (the same values).
pub fn embedding_rows(table: &Tensor, ids: &Tensor, kernels: Kernels) -> Result<Tensor> {
    if kernels.fused_for(table) {
        crate::model::kernels::embedding_lookup(table, ids)
    } else {
        table.index_select(ids, 0)
    }
}

/// GeGLU: `x` `[..., 2 * width]` holds `[a, g]`; returns `GELU(a) * g` `[..., width]` (the
/// fused kernel on the CPU in f32/f64, composed elsewhere).
pub fn geglu(x: &Tensor, kernels: Kernels) -> Result<Tensor> {
    if kernels.fused_for(x) {
        return crate::model::kernels::geglu(x);
    }
    let width = x.dim(D::Minus1)? / 2;
    let input = x.narrow(D::Minus1, 0, width)?.contiguous()?;
    let gate = x.narrow(D::Minus1, width, width)?.contiguous()?;
    gelu(&input, kernels)? * gate
}

/// Softmax over the last dimension, composed. The maximum subtracted for stability is detached:
/// softmax does not depend on it, so its gradient is zero anyway.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let exponentials = x.broadcast_sub(&max)?.exp()?;
    exponentials.broadcast_div(&exponentials.sum_keepdim(D::Minus1)?)
}

/// Log-softmax over the last dimension.
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let log_sum = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&log_sum)
}

/// An inverted-dropout mask for `count` elements of `dtype`, drawn from `random` in order: which
/// elements are kept (each with probability `1 - p`), and the factor kept ones are multiplied
/// by, `1/(1-p)` (computed in f32 for f32 tensors, returned exactly as f64). [`dropout`] and
/// the fused attention draw their masks here, so both consume the generator identically.
pub fn dropout_mask(
    count: usize,
    p: f64,
    dtype: DType,
    random: &mut SeededRandom,
) -> (Vec<bool>, f64) {
    if dtype == DType::F64 {
        let kept = (0..count).map(|_| random.uniform() >= p).collect();
        (kept, 1.0 / (1.0 - p))
    } else {
        let threshold = p as f32;
        let kept = (0..count)
            .map(|_| random.uniform_f32() >= threshold)
            .collect();
        (kept, (1.0 / (1.0 - p)) as f32 as f64)
    }
}

/// Seeds a GPU's random generator from `random` (one draw), so that the dropout masks of a
/// training step depend only on the run's seed and the step: a resumed run draws the same masks.
/// Only the composed fallback draws from that generator: nothing to do on the CPU, where every
/// mask comes from `random` itself, nor under bertlab's GPU dropout kernel.
pub fn seed_device_generator(
    device: &candle_core::Device,
    random: &mut SeededRandom,
) -> Result<()> {
    if device.is_cpu() {
        return Ok(());
    }
    // bertlab's dropout kernel takes its seeds from `random` call by call: nothing to seed.
    #[cfg(feature = "cuda")]
    if device.is_cuda() && crate::model::cuda_kernels::enabled() {
        return Ok(());
    }
    device.set_seed(random.next_u64())
}

/// Inverted dropout: zeroes each element with probability `p` and scales the rest by `1/(1-p)`,
/// with the mask drawn from `random` on the CPU (never from candle's unseedable CPU generator).
/// On a GPU the mask is drawn there (drawing it on the CPU and copying it over would cost more
/// than the step): by bertlab's kernel, a hash of a seed drawn from `random` and the element's
/// index; with the kernels turned off, by the device's generator (cuRAND), which the training
/// step seeds from its `random` before the forward pass ([`seed_device_generator`]).
pub fn dropout(x: &Tensor, p: f64, random: &mut SeededRandom) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    #[cfg(feature = "cuda")]
    if gpu_fused(x, Kernels::Fused) {
        return crate::model::cuda_kernels::dropout(x, p, random.next_u64());
    }
    if !x.device().is_cpu() {
        let scale = 1.0 / (1.0 - p);
        let mask = Tensor::rand(0f32, 1f32, x.shape(), x.device())?
            .ge(p)?
            .to_dtype(x.dtype())?
            .affine(scale, 0.0)?;
        return x.mul(&mask);
    }
    let (kept, scale) = dropout_mask(x.elem_count(), p, x.dtype(), random);
    let mask = if x.dtype() == DType::F64 {
        let values: Vec<f64> = kept
            .iter()
            .map(|&keep| if keep { scale } else { 0.0 })
            .collect();
        Tensor::from_vec(values, x.shape(), x.device())?
    } else {
        let scale = scale as f32;
        let values: Vec<f32> = kept
            .iter()
            .map(|&keep| if keep { scale } else { 0.0 })
            .collect();
        Tensor::from_vec(values, x.shape(), x.device())?.to_dtype(x.dtype())?
    };
    x.mul(&mask)
}

/// [`cross_entropy`] against smoothed targets, as torch's `cross_entropy(label_smoothing=e)`:
/// `(1 - e) * cross_entropy + e / classes * smooth`, where `smooth` is each example's
/// `-sum_c w_c log p_c` (`w_c = 1` without class weights), averaged over the examples, or, with
/// class weights, summed and divided by the gold classes' weights as the plain term is. `e = 0`
/// is exactly [`cross_entropy`].
pub fn cross_entropy_smoothed(
    logits: &Tensor,
    labels: &Tensor,
    class_weights: Option<&Tensor>,
    label_smoothing: f64,
) -> Result<Tensor> {
    if label_smoothing == 0.0 {
        return cross_entropy(logits, labels, class_weights);
    }
    let classes = logits.dim(1)?;
    let log_probabilities = log_softmax_last_dim(logits)?;
    let picked = log_probabilities
        .gather(&labels.unsqueeze(1)?, 1)?
        .squeeze(1)?;
    let (plain, smooth) = match class_weights {
        None => (
            picked.mean(0)?.neg()?,
            log_probabilities.sum(1)?.mean(0)?.neg()?,
        ),
        Some(weights) => {
            let example_weights = weights.index_select(labels, 0)?;
            let total = example_weights.sum_all()?;
            (
                (picked.mul(&example_weights)?.sum_all()? / &total)?.neg()?,
                (log_probabilities
                    .broadcast_mul(&weights.unsqueeze(0)?)?
                    .sum_all()?
                    / &total)?
                    .neg()?,
            )
        }
    };
    plain.affine(1.0 - label_smoothing, 0.0)?
        + smooth.affine(label_smoothing / classes as f64, 0.0)?
}

/// Mean cross-entropy of `logits` `[batch, classes]` against class ids `labels` `[batch]` (u32),
/// each example weighted by `class_weights[label]` when given (a weighted mean, as PyTorch's
/// `CrossEntropyLoss(weight=...)`).
pub fn cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    class_weights: Option<&Tensor>,
) -> Result<Tensor> {
    let log_probabilities = log_softmax_last_dim(logits)?;
    let picked = log_probabilities
        .gather(&labels.unsqueeze(1)?, 1)?
        .squeeze(1)?;
    match class_weights {
        None => picked.mean(0)?.neg(),
        Some(weights) => {
            let example_weights = weights.index_select(labels, 0)?;
            let total = example_weights.sum_all()?;
            (picked.mul(&example_weights)?.sum_all()? / total)?.neg()
        }
    }
}

/// Mean binary cross-entropy of `logits` `[batch, classes]` against 0/1 `targets` of the same
/// shape, each class's positive term weighted by `positive_weights[class]` when given: torch's
/// `BCEWithLogitsLoss(pos_weight=...)`, the mean over every (example, class). `log sigmoid(x)`
/// and `log(1 - sigmoid(x))` come from a log-softmax over `[0, x]`, stable for any `x` and
/// differentiable everywhere.
pub fn binary_cross_entropy_with_logits(
    logits: &Tensor,
    targets: &Tensor,
    positive_weights: Option<&Tensor>,
) -> Result<Tensor> {
    let pairs = Tensor::stack(&[&logits.zeros_like()?, logits], 2)?;
    let log_probabilities = log_softmax_last_dim(&pairs)?;
    let log_negative = log_probabilities.narrow(2, 0, 1)?.squeeze(2)?;
    let log_positive = log_probabilities.narrow(2, 1, 1)?.squeeze(2)?;
    let positive = match positive_weights {
        None => targets.clone(),
        Some(weights) => targets.broadcast_mul(&weights.unsqueeze(0)?)?,
    };
    (positive.mul(&log_positive)? + targets.affine(-1.0, 1.0)?.mul(&log_negative)?)?
        .mean_all()?
        .neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn softmax_rows_sum_to_one_and_match_the_definition() {
        let x = Tensor::new(&[[1.0f64, 2.0, 3.0], [-1.0, 0.0, 1000.0]], &Device::Cpu).unwrap();
        let y = softmax_last_dim(&x).unwrap().to_vec2::<f64>().unwrap();
        let total: f64 = [1.0f64, 2.0, 3.0].iter().map(|v| v.exp()).sum();
        assert!((y[0][0] - 1f64.exp() / total).abs() < 1e-15);
        assert!((y[1][2] - 1.0).abs() < 1e-15);
    }

    #[test]
    fn layer_norm_matches_the_fused_kernel() {
        let device = Device::Cpu;
        let x = Tensor::new(&[[1.0f32, 2.0, 4.0, 8.0], [0.5, -0.5, 0.25, 3.0]], &device).unwrap();
        let norm = LayerNorm {
            weight: Var::new(&[1.0f32, 2.0, 0.5, 1.0], &device).unwrap(),
            bias: Var::new(&[0.0f32, 0.1, 0.2, 0.3], &device).unwrap(),
            epsilon: 1e-12,
        };
        let composed = norm
            .forward(&x, Kernels::Composed)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let fused = norm
            .forward(&x, Kernels::CandleLayerNorm)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (a, b) in composed.iter().flatten().zip(fused.iter().flatten()) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn dropout_keeps_the_expected_share_and_scales() {
        let x = Tensor::ones((100, 100), DType::F32, &Device::Cpu).unwrap();
        let mut random = SeededRandom::new(0, 9);
        let y = dropout(&x, 0.25, &mut random)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let kept = y.iter().filter(|v| **v != 0.0).count();
        assert!((7300..7700).contains(&kept), "{kept}");
        assert!(y.iter().all(|v| *v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
        let mut again = SeededRandom::new(0, 9);
        let z = dropout(&x, 0.25, &mut again)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(y, z, "same seed, same mask");
    }

    #[test]
    fn cross_entropy_matches_a_hand_computation() {
        let device = Device::Cpu;
        let logits = Tensor::new(&[[2.0f64, 0.0], [0.0, 1.0]], &device).unwrap();
        let labels = Tensor::new(&[0u32, 0], &device).unwrap();
        let loss = cross_entropy(&logits, &labels, None)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let first = -(2f64.exp() / (2f64.exp() + 1.0)).ln();
        let second = -(1.0 / (1.0 + 1f64.exp())).ln();
        assert!((loss - (first + second) / 2.0).abs() < 1e-12);
        let weights = Tensor::new(&[3.0f64, 1.0], &device).unwrap();
        let weighted = cross_entropy(&logits, &labels, Some(&weights))
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(
            (weighted - (first + second) / 2.0).abs() < 1e-12,
            "equal labels: weights cancel"
        );
    }

    /// torch's `BCEWithLogitsLoss(pos_weight)` by its definition, at logits far from 0 too, and
    /// the gradient against central differences.
    #[test]
    fn binary_cross_entropy_matches_its_definition_and_its_gradient() {
        let device = Device::Cpu;
        let values = [[2.0f64, -1.5, 0.0], [-40.0, 60.0, 0.25]];
        let targets = [[1.0f64, 0.0, 1.0], [1.0, 0.0, 0.0]];
        let weights = [3.0f64, 0.5, 1.0];
        let expected = |values: &[[f64; 3]; 2], weighted: bool| {
            let mut sum = 0.0;
            for (row, target_row) in values.iter().zip(&targets) {
                for (class, (&x, &y)) in row.iter().zip(target_row).enumerate() {
                    let weight = if weighted { weights[class] } else { 1.0 };
                    // log sigmoid(x) = -softplus(-x), log(1 - sigmoid(x)) = -softplus(x)
                    let softplus = |z: f64| z.max(0.0) + (-z.abs()).exp().ln_1p();
                    sum += weight * y * softplus(-x) + (1.0 - y) * softplus(x);
                }
            }
            sum / 6.0
        };
        let targets_tensor = Tensor::new(&targets, &device).unwrap();
        let weights_tensor = Tensor::new(&weights, &device).unwrap();
        for weighted in [false, true] {
            let variable = candle_core::Var::new(&values, &device).unwrap();
            let loss = binary_cross_entropy_with_logits(
                variable.as_tensor(),
                &targets_tensor,
                weighted.then_some(&weights_tensor),
            )
            .unwrap();
            let value = loss.to_scalar::<f64>().unwrap();
            assert!(
                (value - expected(&values, weighted)).abs() < 1e-12,
                "{value}"
            );
            let gradient = loss.backward().unwrap();
            let gradient = gradient.get(&variable).unwrap().to_vec2::<f64>().unwrap();
            for row in 0..2 {
                for class in 0..3 {
                    let step = 1e-6;
                    let mut up = values;
                    up[row][class] += step;
                    let mut down = values;
                    down[row][class] -= step;
                    let numeric =
                        (expected(&up, weighted) - expected(&down, weighted)) / (2.0 * step);
                    assert!(
                        (gradient[row][class] - numeric).abs() < 1e-8,
                        "{row} {class}: {} vs {numeric}",
                        gradient[row][class]
                    );
                }
            }
        }
    }
}
