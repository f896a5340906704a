//! Fused CPU kernels with analytic backward passes, as candle custom ops: LayerNorm, softmax over
//! the last dimension, GELU (erf), GeGLU, the bias add, the embedding lookup, and multi-head
//! self-attention. Each replaces a chain of elementwise ops (and their many intermediate tensors
//! in the backward pass) with one pass over memory.
//!
//! Every kernel here is checked against its composed, autograd-differentiated twin in `layers`
//! (values and gradients), and the model's gradient tests run through them.

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Storage, Tensor, bail,
};
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::Mutex;

/// The float types the kernels run in.
pub trait KernelFloat: candle_core::WithDType + Copy + Send + Sync + 'static {
    fn sqrt(self) -> Self;
    fn exp(self) -> Self;
    fn erf(self) -> Self;
    fn wrap(values: Vec<Self>) -> CpuStorage;

    /// Each row of `p` (rows of `mask.len()` values) becomes the softmax of itself plus `mask`.
    /// The maximum is exact; this default sums in f64 in order, with the type's own `exp`.
    fn softmax_rows(p: &mut [Self], mask: &[f64]) {
        for row in p.chunks_mut(mask.len()) {
            let mut max = f64::NEG_INFINITY;
            for (value, added) in row.iter_mut().zip(mask) {
                *value = Self::from_f64(value.to_f64() + added);
                max = max.max(value.to_f64());
            }
            let mut total = 0.0;
            for value in row.iter_mut() {
                *value = Self::from_f64(value.to_f64() - max).exp();
                total += value.to_f64();
            }
            let inverse = 1.0 / total;
            for value in row.iter_mut() {
                *value = Self::from_f64(value.to_f64() * inverse);
            }
        }
    }

    /// `out[i] = GELU(x[i])` ([`gelu_value`]), every element of `out` written.
    fn gelu_block(out: &mut [MaybeUninit<Self>], x: &[Self]) {
        gelu_block(out, x)
    }

    /// One row of LayerNorm ([`layer_norm_row`]).
    fn layer_norm_row(y: &mut [Self], x: &[Self], w: &[Self], b: &[Self], epsilon: f64) {
        layer_norm_row(y, x, w, b, epsilon)
    }
}

impl KernelFloat for f32 {
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    fn exp(self) -> Self {
        f32::exp(self)
    }
    #[inline(always)]
    fn erf(self) -> Self {
        erf_f32(self)
    }
    fn wrap(values: Vec<Self>) -> CpuStorage {
        CpuStorage::F32(values)
    }

    /// In f32 with [`exp_f32`] and four f64 partial totals (the loops vectorise; libm's `expf`
    /// and the f64 round trips were a fifth of an inference): the same bits on every x86-64
    /// CPU, with or without AVX-512 (no fused multiply-adds, a fixed order of the totals).
    fn softmax_rows(p: &mut [Self], mask: &[f64]) {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked).
            unsafe { softmax_rows_f32_avx512(p, mask) }
        } else {
            softmax_rows_f32(p, mask)
        }
    }

    /// Compiled for AVX-512 where the CPU has it: the same operations element by element, so
    /// the same bits, 16 lanes at a time (the f64 steps 8).
    fn gelu_block(out: &mut [MaybeUninit<Self>], x: &[Self]) {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked).
            unsafe { gelu_block_f32_avx512(out, x) }
        } else {
            gelu_block(out, x)
        }
    }

    /// Compiled for AVX-512 where the CPU has it: the sums stay in order, so the same bits; the
    /// normalisation runs 8 lanes at a time.
    fn layer_norm_row(y: &mut [Self], x: &[Self], w: &[Self], b: &[Self], epsilon: f64) {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked).
            unsafe { layer_norm_row_f32_avx512(y, x, w, b, epsilon) }
        } else {
            layer_norm_row(y, x, w, b, epsilon)
        }
    }
}

/// [`gelu_block`] in f32 compiled for AVX-512.
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn gelu_block_f32_avx512(out: &mut [MaybeUninit<f32>], x: &[f32]) {
    gelu_block(out, x)
}

/// [`layer_norm_row`] in f32 compiled for AVX-512.
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn layer_norm_row_f32_avx512(y: &mut [f32], x: &[f32], w: &[f32], b: &[f32], epsilon: f64) {
    layer_norm_row(y, x, w, b, epsilon)
}

/// [`softmax_rows_f32`] compiled for AVX-512 (the same operations, wider vectors).
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn softmax_rows_f32_avx512(p: &mut [f32], mask: &[f64]) {
    softmax_rows_f32(p, mask)
}

#[inline(always)]
fn softmax_rows_f32(p: &mut [f32], mask: &[f64]) {
    let length = mask.len();
    let mask: Vec<f32> = mask.iter().map(|&value| value as f32).collect();
    for row in p.chunks_exact_mut(length) {
        // The maximum over 16 lanes (exact in any order; NaNs skipped, as `f32::max` does).
        let larger = |a: f32, b: f32| if b > a { b } else { a };
        let mut lanes = [f32::NEG_INFINITY; 16];
        let mut values = row.chunks_exact_mut(16);
        let mut added = mask.chunks_exact(16);
        for (values, added) in (&mut values).zip(&mut added) {
            for ((lane, value), &added) in lanes.iter_mut().zip(values).zip(added) {
                *value += added;
                *lane = larger(*lane, *value);
            }
        }
        for ((lane, value), &added) in lanes
            .iter_mut()
            .zip(values.into_remainder())
            .zip(added.remainder())
        {
            *value += added;
            *lane = larger(*lane, *value);
        }
        let max = lanes.into_iter().fold(f32::NEG_INFINITY, larger);
        for value in row.iter_mut() {
            *value = exp_f32(*value - max);
        }
        let mut totals = [0f64; 4];
        let mut chunks = row.chunks_exact(4);
        for chunk in &mut chunks {
            for (total, &value) in totals.iter_mut().zip(chunk) {
                *total += value as f64;
            }
        }
        for (total, &value) in totals.iter_mut().zip(chunks.remainder()) {
            *total += value as f64;
        }
        let inverse = 1.0 / ((totals[0] + totals[1]) + (totals[2] + totals[3]));
        for value in row.iter_mut() {
            *value = (*value as f64 * inverse) as f32;
        }
    }
}

/// exp in f32 without branches or library calls: `2^n · e^r` with `n = round(x / ln 2)`,
/// `r = x - n ln 2` in two parts (Cody and Waite), `e^r` by Cephes' degree-7 polynomial. Within
/// 2 ulp of the exact value from -87.3 to 88.3 (tested); 0 below (where e^x leaves f32's
/// normal range), infinity above 88.37 (a little early: e^x is finite up to 88.72; softmax
/// only takes x <= 0), NaN stays NaN. Plain multiplies and adds, so every CPU gives the same
/// bits.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOWEST: f32 = -87.336_54; // ln 2^-126
    const HIGHEST: f32 = 88.376_26; // 127.5 ln 2: n stays <= 127
    let clamped = x.clamp(LOWEST, HIGHEST);
    // Round to nearest by adding and subtracting 1.5 * 2^23.
    let shifted = clamped * std::f32::consts::LOG2_E + 12_582_912.0;
    let n = shifted - 12_582_912.0;
    let r = clamped - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut polynomial = 1.987_569_1e-4_f32;
    for coefficient in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ] {
        polynomial = polynomial * r + coefficient;
    }
    let value = polynomial * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    let result = value * scale;
    if x < LOWEST {
        0.0
    } else if x > HIGHEST {
        f32::INFINITY
    } else if x.is_nan() {
        x
    } else {
        result
    }
}

/// erf in f32 without branches or library calls (libm's `erff` was 9% of a training step):
/// a rational approximation on [-4, 4], where erf reaches ±1 in f32 precision, an odd
/// polynomial of degree 13 over an even one of degree 8 in the clamped argument. Within 5e-7
/// of `libm::erf` in f64 over the whole line (tested); NaN stays NaN.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut numerator = -2.726_142_3e-10_f32;
    for coefficient in [
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_6e-3,
        -1.609_603_3e-2,
    ] {
        numerator = numerator * x2 + coefficient;
    }
    let mut denominator = -1.456_607_2e-5_f32;
    for coefficient in [-2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2] {
        denominator = denominator * x2 + coefficient;
    }
    x * numerator / denominator
}

impl KernelFloat for f64 {
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn erf(self) -> Self {
        libm::erf(self)
    }
    fn wrap(values: Vec<Self>) -> CpuStorage {
        CpuStorage::F64(values)
    }
}

/// Runs `$body` with `$T` bound to the Rust float type of `$dtype` (f32 or f64).
macro_rules! by_dtype {
    ($dtype:expr, $what:literal, $T:ident => $body:expr) => {
        match $dtype {
            candle_core::DType::F32 => {
                type $T = f32;
                $body
            }
            candle_core::DType::F64 => {
                type $T = f64;
                $body
            }
            other => candle_core::bail!("{} supports f32 and f64, not {other:?}", $what),
        }
    };
}
pub(crate) use by_dtype;

/// A pointer to an output buffer that parallel workers write disjoint rows of.
pub(crate) struct SharedOutput<T>(pub(crate) *mut T);
unsafe impl<T> Sync for SharedOutput<T> {}

impl<T> SharedOutput<T> {
    /// The buffer's start (a method, so closures capture the shareable wrapper, not the pointer).
    pub(crate) fn pointer(&self) -> *mut T {
        self.0
    }

    /// # Safety
    /// `range` (in elements) must lie inside the buffer and no other worker may touch it.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, range: Range<usize>) -> &mut [T] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(range.start), range.len()) }
    }
}

/// Runs `f` on ranges of rows in parallel, on candle's own CPU worker pool (the threads its
/// elementwise ops use), so the kernels add no threads of their own. The ranges partition
/// `0..rows` the same way on every call with the same thread count.
pub(crate) fn for_row_ranges(rows: usize, f: impl Fn(Range<usize>) + Sync) {
    candle_core::utils::barrier_pool().execute_chunked(rows, f)
}

/// Fills `output` (`rows` rows of `row_length`) by calling `f(input_row_index, output_row)`.
fn map_rows<T: KernelFloat>(
    rows: usize,
    row_length: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) -> Vec<T> {
    let mut output = vec![T::from_f64(0.0); rows * row_length];
    let shared = SharedOutput(output.as_mut_ptr());
    for_row_ranges(rows, |range| {
        // SAFETY: `for_row_ranges` hands out disjoint row ranges within `0..rows`.
        let block = unsafe { shared.slice(range.start * row_length..range.end * row_length) };
        for (offset, row) in block.chunks_mut(row_length.max(1)).enumerate() {
            f(range.start + offset, row);
        }
    });
    output
}

/// As [`map_rows`], for an `f` that writes every element of its output row (with
/// `MaybeUninit::write`): the output is not zero-filled first.
fn map_rows_written<T: KernelFloat>(
    rows: usize,
    row_length: usize,
    f: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync,
) -> Vec<T> {
    let length = rows * row_length;
    let mut output: Vec<MaybeUninit<T>> = Vec::with_capacity(length);
    // SAFETY: `MaybeUninit` needs no initialisation; `set_len` stays within the capacity.
    unsafe { output.set_len(length) };
    let shared = SharedOutput(output.as_mut_ptr());
    for_row_ranges(rows, |range| {
        // SAFETY: `for_row_ranges` hands out disjoint row ranges within `0..rows`.
        let block = unsafe { shared.slice(range.start * row_length..range.end * row_length) };
        for (offset, row) in block.chunks_mut(row_length.max(1)).enumerate() {
            f(range.start + offset, row);
        }
    });
    let mut output = std::mem::ManuallyDrop::new(output);
    // SAFETY: every row was written by `f` (its contract), so all `length` elements are
    // initialised; `MaybeUninit<T>` has `T`'s layout, and the allocation moves over unchanged.
    unsafe { Vec::from_raw_parts(output.as_mut_ptr().cast::<T>(), length, output.capacity()) }
}

/// A contiguous CPU tensor's values.
pub(crate) fn with_slice<T: KernelFloat, R>(
    tensor: &Tensor,
    f: impl FnOnce(&[T]) -> Result<R>,
) -> Result<R> {
    let tensor = tensor.contiguous()?;
    let (storage, layout) = tensor.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        bail!("bertlab's fused kernels run on the CPU only")
    };
    let (start, end) = layout.contiguous_offsets().expect("made contiguous");
    f(&cpu.as_slice::<T>()?[start..end])
}

pub(crate) fn storage_slice<'a, T: KernelFloat>(
    storage: &'a CpuStorage,
    layout: &Layout,
) -> Result<&'a [T]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("bertlab's fused kernels need contiguous inputs")
    };
    Ok(&storage.as_slice::<T>()?[start..end])
}

pub(crate) fn to_tensor<T: KernelFloat>(values: Vec<T>, like: &Tensor) -> Result<Tensor> {
    Tensor::from_vec(values, like.shape(), like.device())
}

// ---------------------------------------------------------------------------------------------
// LayerNorm over the last dimension: y = (x - mean) / sqrt(var + eps) * w + b.

struct LayerNormOp {
    epsilon: f64,
}

fn layer_norm_forward<T: KernelFloat>(x: &[T], w: &[T], b: &[T], epsilon: f64) -> Vec<T> {
    let n = w.len();
    map_rows(x.len() / n, n, |row, y_row| {
        T::layer_norm_row(y_row, &x[row * n..(row + 1) * n], w, b, epsilon)
    })
}

/// `y = (x - mean) / sqrt(var + eps) * w + b` for one row, in f64, the sums in order.
#[inline(always)]
fn layer_norm_row<T: KernelFloat>(y: &mut [T], x: &[T], w: &[T], b: &[T], epsilon: f64) {
    let n = x.len();
    let mean = x.iter().map(|v| v.to_f64()).sum::<f64>() / n as f64;
    let variance = x.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>() / n as f64;
    let inverse = 1.0 / (variance + epsilon).sqrt();
    for (((y, x), w), b) in y.iter_mut().zip(x).zip(w).zip(b) {
        let normalized = (x.to_f64() - mean) * inverse;
        *y = T::from_f64(normalized * w.to_f64() + b.to_f64());
    }
}

/// Gradients of LayerNorm: (dx, dw, db). With x̂ the normalized input and g = dy * w,
/// dx = inverse * (g - mean(g) - x̂ * mean(g * x̂)), dw = sum over rows of dy * x̂, db = sum of dy.
/// Sums of dw and db over one range of rows, keyed by the range's first row.
type PartialSums = (usize, Vec<f64>, Vec<f64>);

fn layer_norm_backward<T: KernelFloat>(
    x: &[T],
    w: &[T],
    dy: &[T],
    epsilon: f64,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let n = w.len();
    let rows = x.len() / n;
    let mut dx = vec![T::from_f64(0.0); x.len()];
    let shared = SharedOutput(dx.as_mut_ptr());
    // Partial sums of dw and db per row range, added up in range order afterwards, so that the
    // result does not depend on which thread finished first.
    let partials: Mutex<Vec<PartialSums>> = Mutex::new(Vec::new());
    for_row_ranges(rows, |range| {
        let mut dw = vec![0.0f64; n];
        let mut db = vec![0.0f64; n];
        let mut normalized = vec![0.0f64; n];
        // SAFETY: `for_row_ranges` hands out disjoint row ranges within `0..rows`.
        let block = unsafe { shared.slice(range.start * n..range.end * n) };
        for (offset, dx_row) in block.chunks_mut(n).enumerate() {
            let row = range.start + offset;
            let x_row = &x[row * n..(row + 1) * n];
            let dy_row = &dy[row * n..(row + 1) * n];
            let mean = x_row.iter().map(|v| v.to_f64()).sum::<f64>() / n as f64;
            let variance = x_row
                .iter()
                .map(|v| (v.to_f64() - mean).powi(2))
                .sum::<f64>()
                / n as f64;
            let inverse = 1.0 / (variance + epsilon).sqrt();
            let mut mean_g = 0.0;
            let mut mean_g_normalized = 0.0;
            for i in 0..n {
                normalized[i] = (x_row[i].to_f64() - mean) * inverse;
                let d = dy_row[i].to_f64();
                let g = d * w[i].to_f64();
                mean_g += g;
                mean_g_normalized += g * normalized[i];
                dw[i] += d * normalized[i];
                db[i] += d;
            }
            mean_g /= n as f64;
            mean_g_normalized /= n as f64;
            for i in 0..n {
                let g = dy_row[i].to_f64() * w[i].to_f64();
                dx_row[i] = T::from_f64(inverse * (g - mean_g - normalized[i] * mean_g_normalized));
            }
        }
        partials
            .lock()
            .expect("no worker panics while holding it")
            .push((range.start, dw, db));
    });
    let mut partials = partials.into_inner().expect("no worker panicked");
    partials.sort_by_key(|(start, _, _)| *start);
    let mut dw = vec![0.0f64; n];
    let mut db = vec![0.0f64; n];
    for (_, partial_dw, partial_db) in partials {
        for i in 0..n {
            dw[i] += partial_dw[i];
            db[i] += partial_db[i];
        }
    }
    let convert = |values: Vec<f64>| values.into_iter().map(T::from_f64).collect();
    (dx, convert(dw), convert(db))
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "bertlab-layer-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
        b: &CpuStorage,
        b_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let storage = by_dtype!(x.dtype(), "fused LayerNorm", T => T::wrap(layer_norm_forward(
            storage_slice::<T>(x, x_layout)?,
            storage_slice(w, w_layout)?,
            storage_slice(b, b_layout)?,
            self.epsilon,
        )));
        Ok((storage, x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        fn run<T: KernelFloat>(
            x: &Tensor,
            w: &Tensor,
            dy: &Tensor,
            epsilon: f64,
        ) -> Result<(Tensor, Tensor, Tensor)> {
            let (dx, dw, db) = with_slice::<T, _>(x, |x_values| {
                with_slice::<T, _>(w, |w_values| {
                    with_slice::<T, _>(dy, |dy_values| {
                        Ok(layer_norm_backward(x_values, w_values, dy_values, epsilon))
                    })
                })
            })?;
            Ok((to_tensor(dx, x)?, to_tensor(dw, w)?, to_tensor(db, w)?))
        }
        let (dx, dw, db) =
            by_dtype!(x.dtype(), "fused LayerNorm", T => run::<T>(x, w, dy, self.epsilon)?);
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// Fused LayerNorm over the last dimension (CPU, f32/f64).
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, epsilon: f64) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3(weight, bias, LayerNormOp { epsilon })
}

// ---------------------------------------------------------------------------------------------
// Softmax over the last dimension: y = exp(x - max) / sum(exp(x - max)); dx = y * (dy - sum(dy * y)).

struct SoftmaxOp;

fn softmax_forward<T: KernelFloat>(x: &[T], n: usize) -> Vec<T> {
    map_rows(x.len() / n, n, |row, y_row| {
        let x_row = &x[row * n..(row + 1) * n];
        let max = x_row
            .iter()
            .map(|v| v.to_f64())
            .fold(f64::NEG_INFINITY, f64::max);
        let mut total = 0.0;
        for i in 0..n {
            let e = T::from_f64(x_row[i].to_f64() - max).exp();
            y_row[i] = e;
            total += e.to_f64();
        }
        let inverse = 1.0 / total;
        for value in y_row.iter_mut() {
            *value = T::from_f64(value.to_f64() * inverse);
        }
    })
}

fn softmax_backward<T: KernelFloat>(y: &[T], dy: &[T], n: usize) -> Vec<T> {
    map_rows(y.len() / n, n, |row, dx_row| {
        let y_row = &y[row * n..(row + 1) * n];
        let dy_row = &dy[row * n..(row + 1) * n];
        let dot: f64 = y_row
            .iter()
            .zip(dy_row)
            .map(|(a, b)| a.to_f64() * b.to_f64())
            .sum();
        for i in 0..n {
            dx_row[i] = T::from_f64(y_row[i].to_f64() * (dy_row[i].to_f64() - dot));
        }
    })
}

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "bertlab-softmax"
    }

    fn cpu_fwd(&self, x: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let n = *layout.shape().dims().last().unwrap_or(&1);
        let storage = by_dtype!(x.dtype(), "fused softmax", T => T::wrap(softmax_forward(storage_slice::<T>(x, layout)?, n)));
        Ok((storage, layout.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let n = *y.dims().last().unwrap_or(&1);
        let dx = by_dtype!(y.dtype(), "fused softmax", T => to_tensor(
            with_slice::<T, _>(y, |y_values| with_slice(dy, |dy_values| Ok(softmax_backward(y_values, dy_values, n))))?,
            y,
        )?);
        Ok(Some(dx))
    }
}

/// Fused softmax over the last dimension (CPU, f32/f64).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(SoftmaxOp)
}

// ---------------------------------------------------------------------------------------------
// GELU (erf): y = x/2 (1 + erf(x/√2)); dy/dx = (1 + erf(x/√2))/2 + x φ(x).

struct GeluOp;

const FRAC_1_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2π)
const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// Elements per block of the elementwise GELU kernels.
const BLOCK: usize = 4096;

/// GELU of every element, into a fresh buffer that is written once (not zeroed first).
fn gelu_forward<T: KernelFloat>(x: &[T]) -> Vec<T> {
    let blocks = x.len() / BLOCK;
    let mut y: Vec<T> = Vec::with_capacity(x.len());
    let shared = SharedOutput(y.spare_capacity_mut().as_mut_ptr());
    for_row_ranges(blocks, |range| {
        // SAFETY: `for_row_ranges` hands out disjoint ranges of blocks within the capacity.
        let out = unsafe { shared.slice(range.start * BLOCK..range.end * BLOCK) };
        T::gelu_block(out, &x[range.start * BLOCK..range.end * BLOCK]);
    });
    // SAFETY: `gelu_block` wrote every element of the first `blocks` blocks.
    unsafe { y.set_len(blocks * BLOCK) };
    y.extend(x[y.len()..].iter().map(|value| gelu_value(*value)));
    y
}

/// `out[i] = GELU(x[i])` for every element of `out` (as long as `x`).
#[inline(always)]
fn gelu_block<T: KernelFloat>(out: &mut [MaybeUninit<T>], x: &[T]) {
    for (out, value) in out.iter_mut().zip(x) {
        out.write(gelu_value(*value));
    }
}

#[inline(always)]
pub(crate) fn gelu_value<T: KernelFloat>(value: T) -> T {
    let v = value.to_f64();
    let erf = T::from_f64(v * FRAC_1_SQRT_2).erf().to_f64();
    T::from_f64(0.5 * v * (1.0 + erf))
}

pub(crate) fn gelu_derivative<T: KernelFloat>(value: T, gradient: T) -> T {
    let v = value.to_f64();
    let erf = T::from_f64(v * FRAC_1_SQRT_2).erf().to_f64();
    let density = FRAC_1_SQRT_2PI * T::from_f64(-0.5 * v * v).exp().to_f64();
    T::from_f64(gradient.to_f64() * (0.5 * (1.0 + erf) + v * density))
}

fn gelu_backward<T: KernelFloat>(x: &[T], dy: &[T]) -> Vec<T> {
    let mut dx = map_rows(x.len() / BLOCK, BLOCK, |block, out| {
        let range = block * BLOCK..(block + 1) * BLOCK;
        for ((out, value), gradient) in out.iter_mut().zip(&x[range.clone()]).zip(&dy[range]) {
            *out = gelu_derivative(*value, *gradient);
        }
    });
    let done = dx.len();
    dx.extend(
        x[done..]
            .iter()
            .zip(&dy[done..])
            .map(|(value, gradient)| gelu_derivative(*value, *gradient)),
    );
    dx
}

impl CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        "bertlab-gelu-erf"
    }

    fn cpu_fwd(&self, x: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let storage = by_dtype!(x.dtype(), "fused GELU", T => T::wrap(gelu_forward(storage_slice::<T>(x, layout)?)));
        Ok((storage, layout.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let dx = by_dtype!(x.dtype(), "fused GELU", T => to_tensor(
            with_slice::<T, _>(x, |x_values| with_slice(dy, |dy_values| Ok(gelu_backward(x_values, dy_values))))?,
            x,
        )?);
        Ok(Some(dx))
    }
}

/// Fused GELU with the exact erf form (CPU, f32/f64).
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(GeluOp)
}

// ---------------------------------------------------------------------------------------------
// GeGLU over the last dimension, split into halves [a, g] of `width` each: y = GELU(a) * g;
// backward da = dy * g * GELU'(a), dg = dy * GELU(a), written side by side as [da, dg].

struct GegluOp;

fn geglu_forward<T: KernelFloat>(x: &[T], width: usize) -> Vec<T> {
    map_rows(x.len() / (2 * width), width, |row, out| {
        let (input, gate) = x[row * 2 * width..(row + 1) * 2 * width].split_at(width);
        for ((out, a), g) in out.iter_mut().zip(input).zip(gate) {
            *out = T::from_f64(gelu_value(*a).to_f64() * g.to_f64());
        }
    })
}

fn geglu_backward<T: KernelFloat>(x: &[T], dy: &[T], width: usize) -> Vec<T> {
    map_rows(x.len() / (2 * width), 2 * width, |row, out| {
        let (input, gate) = x[row * 2 * width..(row + 1) * 2 * width].split_at(width);
        let gradient = &dy[row * width..(row + 1) * width];
        let (d_input, d_gate) = out.split_at_mut(width);
        for (column, (a, g)) in input.iter().zip(gate).enumerate() {
            let d = gradient[column];
            d_input[column] = gelu_derivative(*a, T::from_f64(d.to_f64() * g.to_f64()));
            d_gate[column] = T::from_f64(d.to_f64() * gelu_value(*a).to_f64());
        }
    })
}

impl CustomOp1 for GegluOp {
    fn name(&self) -> &'static str {
        "bertlab-geglu"
    }

    fn cpu_fwd(&self, x: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let mut dims = layout.shape().dims().to_vec();
        let Some(last) = dims.last_mut().filter(|last| **last % 2 == 0 && **last > 0) else {
            bail!(
                "GeGLU needs an even, non-empty last dimension, not {:?}",
                layout.shape()
            )
        };
        *last /= 2;
        let width = *last;
        let storage = by_dtype!(x.dtype(), "fused GeGLU", T => T::wrap(geglu_forward(storage_slice::<T>(x, layout)?, width)));
        Ok((storage, Shape::from(dims)))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let width = x.dim(candle_core::D::Minus1)? / 2;
        let dx = by_dtype!(x.dtype(), "fused GeGLU", T => to_tensor(
            with_slice::<T, _>(x, |x_values| with_slice(dy, |dy_values| Ok(geglu_backward(x_values, dy_values, width))))?,
            x,
        )?);
        Ok(Some(dx))
    }
}

/// Fused GeGLU (CPU, f32/f64): `x` `[..., 2 * width]` holds `[a, g]`; returns `GELU(a) * g`
/// `[..., width]`, GELU in the exact erf form.
pub fn geglu(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(GegluOp)
}

// ---------------------------------------------------------------------------------------------
// Bias add over rows: y[r][j] = x[r][j] + b[j]; backward dx = dy, db[j] = sum over r of dy[r][j].
// candle's broadcast_add sums the bias gradient on one core (4.5% of a training step).

struct BiasAddOp;

/// Column sums of a row-major `rows x columns` matrix, the columns shared out between workers
/// (each column summed in row order, so the result does not depend on the thread count).
pub(crate) fn column_sums<T: KernelFloat>(values: &[T], rows: usize, columns: usize) -> Vec<T> {
    const CHUNK: usize = 64;
    let mut sums = vec![T::from_f64(0.0); columns];
    let out = SharedOutput(sums.as_mut_ptr());
    for_row_ranges(columns.div_ceil(CHUNK), |chunks| {
        let range = chunks.start * CHUNK..(chunks.end * CHUNK).min(columns);
        // SAFETY: workers get disjoint column ranges of `sums`.
        let target = unsafe { out.slice(range.clone()) };
        for row in 0..rows {
            let line = &values[row * columns + range.start..row * columns + range.end];
            for (sum, value) in target.iter_mut().zip(line) {
                *sum += *value;
            }
        }
    });
    sums
}

impl CustomOp2 for BiasAddOp {
    fn name(&self) -> &'static str {
        "bertlab-bias-add"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let columns = bias_layout.shape().elem_count();
        let rows = x_layout.shape().elem_count() / columns.max(1);
        let storage = by_dtype!(x.dtype(), "fused bias add", T => {
            let x = storage_slice::<T>(x, x_layout)?;
            let bias = storage_slice::<T>(bias, bias_layout)?;
            T::wrap(map_rows_written(rows, columns, |row, out| {
                for ((out, value), b) in out.iter_mut().zip(&x[row * columns..]).zip(bias) {
                    out.write(*value + *b);
                }
            }))
        });
        Ok((storage, x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        bias: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let columns = bias.elem_count();
        let rows = dy.elem_count() / columns.max(1);
        let db = by_dtype!(dy.dtype(), "fused bias add", T => to_tensor(
            with_slice::<T, _>(dy, |values| Ok(column_sums(values, rows, columns)))?,
            bias,
        )?);
        Ok((Some(dy.clone()), Some(db)))
    }
}

/// `x + b` for `x` `[..., n]` and `b` `[n]` (CPU, f32/f64), the bias gradient summed on all
/// workers.
pub fn bias_add(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let columns = bias.elem_count();
    if bias.rank() != 1 || x.dims().last() != Some(&columns) {
        bail!(
            "bias add: a bias of shape {:?} for an input of shape {:?}",
            bias.dims(),
            x.dims()
        )
    }
    x.contiguous()?.apply_op2(&bias.contiguous()?, BiasAddOp)
}

// ---------------------------------------------------------------------------------------------
// Embedding lookup: y[i] = table[ids[i]]; backward d_table[r] = sum over i with ids[i] = r of
// dy[i], in the order of i (candle's index_add order, so the same sums). candle's index_select
// backward fills a table-sized tensor of zeros and then index_add copies all of it into a second
// one (for a 30,522-word vocabulary, two 47 MB tensors and a full copy per step); here the
// gradient is one table-sized allocation, written at the rows the batch uses only.

struct EmbeddingLookupOp;

impl CustomOp2 for EmbeddingLookupOp {
    fn name(&self) -> &'static str {
        "bertlab-embedding-lookup"
    }

    fn cpu_fwd(
        &self,
        table: &CpuStorage,
        table_layout: &Layout,
        ids: &CpuStorage,
        ids_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, width) = table_layout.shape().dims2()?;
        let ids = storage_slice_u32(ids, ids_layout)?;
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= rows) {
            bail!("embedding lookup: id {id} is outside the table's {rows} rows")
        }
        let storage = by_dtype!(table.dtype(), "fused embedding lookup", T => {
            let table = storage_slice::<T>(table, table_layout)?;
            T::wrap(map_rows_written(ids.len(), width, |row, out| {
                let id = ids[row] as usize;
                for (out, value) in out.iter_mut().zip(&table[id * width..(id + 1) * width]) {
                    out.write(*value);
                }
            }))
        });
        Ok((storage, Shape::from((ids.len(), width))))
    }

    fn bwd(
        &self,
        table: &Tensor,
        ids: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (rows, width) = table.dims2()?;
        let ids = ids.flatten_all()?.to_vec1::<u32>()?;
        let gradient = by_dtype!(dy.dtype(), "fused embedding lookup", T => {
            let sums = with_slice::<T, _>(dy, |values| {
                Ok(embedding_gradient(values, &ids, rows, width))
            })?;
            to_tensor(sums, table)?
        });
        Ok((Some(gradient), None))
    }
}

/// The table's gradient: `upstream` row `i` added to row `ids[i]`, in the order of `i`.
fn embedding_gradient<T: KernelFloat>(
    upstream: &[T],
    ids: &[u32],
    rows: usize,
    width: usize,
) -> Vec<T> {
    // Zeroed memory straight from the allocator (calloc): pages the batch never writes are
    // never touched.
    let mut sums = vec![T::from_f64(0.0); rows * width];
    for (row, &id) in ids.iter().enumerate() {
        let id = id as usize;
        let target = &mut sums[id * width..(id + 1) * width];
        for (sum, value) in target.iter_mut().zip(&upstream[row * width..]) {
            *sum += *value;
        }
    }
    sums
}

fn storage_slice_u32<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [u32]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("bertlab's fused kernels need contiguous inputs")
    };
    Ok(&storage.as_slice::<u32>()?[start..end])
}

/// The rows `ids` (`[n]`, u32) of `table` (`[rows, width]`, CPU, f32/f64): `[n, width]`, as
/// `table.index_select(ids, 0)`, with a gradient for the table that costs one table-sized
/// allocation and the batch's rows (the same values as index_select's, tested).
pub fn embedding_lookup(table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    if table.rank() != 2 || ids.rank() != 1 || ids.dtype() != candle_core::DType::U32 {
        bail!(
            "embedding lookup: a table of shape {:?} and ids of shape {:?} ({:?}); wanted \
             [rows, width] and [n] u32",
            table.dims(),
            ids.dims(),
            ids.dtype()
        )
    }
    table
        .contiguous()?
        .apply_op2(&ids.contiguous()?, EmbeddingLookupOp)
}

// ---------------------------------------------------------------------------------------------
// Self-attention, one (example, head) block at a time, reading queries, keys and values in the
// projections' own `[batch, length, hidden]` layout (head h is columns h*d..(h+1)*d) and writing
// the context in that layout too, so no head is ever transposed or copied:
//   S = scale * Q K^T + mask,  P = softmax(S),  Pd = P * keep,  O = Pd V
// backward (P recomputed from Q and K):
//   dPd = dO V^T,  dV = Pd^T dO,  dP = dPd * keep,  dS = P * (dP - rowsum(dP * P)),
//   dQ = scale * dS K,  dK = scale * dS^T Q.

/// Which query rows of each example an attention call computes. Rows it leaves out come back as
/// zeros and must have a zero output gradient: nothing downstream may read them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryRows {
    /// Every position of the padded layout.
    All,
    /// The real tokens only, where an example's real tokens lead and its padding trails (every
    /// position otherwise): for callers that take the real rows out of the context.
    ///
    /// (The last layer, whose classifier reads only the first token, computes its real rows too:
    /// one row is slower, gemm's single-row path, and sums in another order.)
    Real,
}

/// How many leading keys of an example carry weight: where its mask is real keys (0) followed by
/// padding at the dtype's minimum (right padding), the real keys; every key otherwise (left
/// padding, holes, or no real key at all, where the masked softmax weights every key alike).
///
/// Exact: for a query with a real key, the maximum of its scores is a real key's, every padding
/// key's `exp(score + minimum - max)` is exactly 0, so its weight is 0, it adds nothing to the
/// softmax's totals and nothing (`0 * v`) to the context or to any gradient. Leaving the
/// padding keys out gives the same probabilities, bit for bit, and the attention's work falls
/// from `length²` to `real²` per block (with [`QueryRows::Real`]). The products around the
/// softmax are gemm's, which picks its kernels by shape: their last bits can differ from the
/// padded shapes'.
pub(crate) fn attended_keys(mask: &[f64]) -> usize {
    let real = mask.iter().take_while(|&&added| added == 0.0).count();
    let padding_is_minimum = mask[real..].iter().all(|&added| added <= f32::MIN as f64);
    if real > 0 && padding_is_minimum {
        real
    } else {
        mask.len()
    }
}

/// The attention op: what is not differentiated travels in the op.
struct AttentionOp {
    heads: usize,
    scale: f64,
    /// Additive key mask `[batch, length]`: 0 where attended, the dtype's minimum at padding.
    mask: Vec<f64>,
    /// Dropout on the probabilities, if training: which of `[batch, heads, length, length]` are
    /// kept, and the factor kept ones are multiplied by.
    keep: Option<(Vec<bool>, f64)>,
    /// Per example, the leading keys that carry weight ([`attended_keys`]).
    keys: Vec<usize>,
    /// Per example, the leading query rows computed ([`QueryRows`]).
    queries: Vec<usize>,
}

/// The shapes of one attention call.
#[derive(Clone, Copy)]
struct AttentionShape {
    batch: usize,
    length: usize,
    hidden: usize,
    heads: usize,
    head_size: usize,
}

impl AttentionShape {
    /// Offset of (example, position 0, head) in a `[batch, length, hidden]` buffer.
    fn base(&self, example: usize, head: usize) -> usize {
        example * self.length * self.hidden + head * self.head_size
    }
}

/// One (example, head) block's extent: its computed query rows and its attended keys.
#[derive(Clone, Copy)]
struct BlockExtent {
    rows: usize,
    keys: usize,
}

/// `dst (m x n) = alpha * lhs (m x k) * rhs (k x n)`; every matrix given as a pointer with row
/// and column strides in elements; single-threaded (the blocks are the parallel unit).
///
/// # Safety
/// Every element the strides reach must lie inside its buffer, and `dst` must not be written
/// by anyone else meanwhile.
pub(crate) unsafe fn block_product<T: KernelFloat>(
    sizes: (usize, usize, usize),
    dst: (*mut T, isize, isize),
    lhs: (*const T, isize, isize),
    rhs: (*const T, isize, isize),
    alpha: T,
) {
    unsafe { block_product_into(sizes, dst, lhs, rhs, alpha, false) }
}

/// [`block_product`], adding to `dst` when `accumulate` (`dst += alpha * lhs * rhs`).
///
/// # Safety
/// As [`block_product`].
pub(crate) unsafe fn block_product_into<T: KernelFloat>(
    (m, n, k): (usize, usize, usize),
    dst: (*mut T, isize, isize),
    lhs: (*const T, isize, isize),
    rhs: (*const T, isize, isize),
    alpha: T,
    accumulate: bool,
) {
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.0,
            dst.2,
            dst.1,
            accumulate,
            lhs.0,
            lhs.2,
            lhs.1,
            rhs.0,
            rhs.2,
            rhs.1,
            T::from_f64(if accumulate { 1.0 } else { 0.0 }),
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// The probabilities of one block, `rows x keys` (its [`BlockExtent`]), row-major: softmax over
/// the attended keys of `scale * q k^T + mask` ([`KernelFloat::softmax_rows`]).
fn block_probabilities<T: KernelFloat>(
    shape: AttentionShape,
    (q, k): (&[T], &[T]),
    mask: &[f64],
    scale: f64,
    (example, head): (usize, usize),
    extent: BlockExtent,
) -> Vec<T> {
    let BlockExtent { rows, keys } = extent;
    let hidden = shape.hidden as isize;
    let base = shape.base(example, head);
    let mut p = vec![T::from_f64(0.0); rows * keys];
    // SAFETY: the block of q and k lies inside the buffers (checked by the caller's shapes); p
    // is this call's own.
    unsafe {
        block_product(
            (rows, keys, shape.head_size),
            (p.as_mut_ptr(), keys as isize, 1),
            (q.as_ptr().add(base), hidden, 1),
            (k.as_ptr().add(base), 1, hidden),
            T::from_f64(scale),
        );
    }
    let start = example * shape.length;
    T::softmax_rows(&mut p, &mask[start..start + keys]);
    p
}

/// One row of an attention backward pass, in place: `d_row`, the gradient of the probabilities
/// after dropout, becomes `scale * P * (dP - rowsum(dP * P))`, the scores' gradient, where
/// `dP = d_row * keep` (`kept`: the row's dropout mask and factor) and `p_row` is `P`.
pub(crate) fn score_gradient<T: KernelFloat>(
    d_row: &mut [T],
    p_row: &[T],
    kept: Option<(&[bool], f64)>,
    scale: f64,
) {
    if let Some((kept, factor)) = kept {
        for (value, &kept) in d_row.iter_mut().zip(kept) {
            *value = with_dropout(*value, kept, factor);
        }
    }
    let dot: f64 = d_row
        .iter()
        .zip(p_row)
        .map(|(d, p)| d.to_f64() * p.to_f64())
        .sum();
    for (value, probability) in d_row.iter_mut().zip(p_row) {
        *value = T::from_f64(scale * probability.to_f64() * (value.to_f64() - dot));
    }
}

/// `value` times its dropout multiplier: `scale` where kept, 0 elsewhere.
pub(crate) fn with_dropout<T: KernelFloat>(value: T, kept: bool, scale: f64) -> T {
    if kept {
        T::from_f64(value.to_f64() * scale)
    } else {
        T::from_f64(0.0)
    }
}

/// Probabilities after dropout (`p` itself without dropout): `p` is `extent.rows x
/// extent.keys`, the block's dropout mask `length x length`.
fn block_dropped<'a, T: KernelFloat>(
    p: &'a [T],
    keep: Option<(&[bool], f64)>,
    extent: BlockExtent,
    length: usize,
) -> std::borrow::Cow<'a, [T]> {
    match keep {
        None => std::borrow::Cow::Borrowed(p),
        Some((kept, scale)) => p
            .chunks(extent.keys.max(1))
            .zip(kept.chunks(length))
            .flat_map(|(row, kept)| {
                row.iter()
                    .zip(kept)
                    .map(move |(value, &kept)| with_dropout(*value, kept, scale))
            })
            .collect(),
    }
}

impl AttentionOp {
    fn shape(&self, layout: &Layout) -> Result<AttentionShape> {
        let (batch, length, hidden) = layout.shape().dims3()?;
        if self.heads == 0 || hidden % self.heads != 0 {
            bail!(
                "attention: hidden size {hidden} is not a multiple of {} heads",
                self.heads
            )
        }
        if self.mask.len() != batch * length {
            bail!(
                "attention: the mask holds {} values for {batch} x {length}",
                self.mask.len()
            )
        }
        if let Some((kept, _)) = &self.keep
            && kept.len() != batch * self.heads * length * length
        {
            bail!(
                "attention: {} dropout mask values for {batch} x {} x {length} x {length}",
                kept.len(),
                self.heads
            )
        }
        Ok(AttentionShape {
            batch,
            length,
            hidden,
            heads: self.heads,
            head_size: hidden / self.heads,
        })
    }

    fn keep_block(&self, shape: AttentionShape, block: usize) -> Option<(&[bool], f64)> {
        let size = shape.length * shape.length;
        self.keep
            .as_ref()
            .map(|(kept, scale)| (&kept[block * size..(block + 1) * size], *scale))
    }

    fn extent(&self, example: usize) -> BlockExtent {
        BlockExtent {
            rows: self.queries[example],
            keys: self.keys[example],
        }
    }

    fn forward<T: KernelFloat>(&self, shape: AttentionShape, q: &[T], k: &[T], v: &[T]) -> Vec<T> {
        let mut output = vec![T::from_f64(0.0); shape.batch * shape.length * shape.hidden];
        let shared = SharedOutput(output.as_mut_ptr());
        let hidden = shape.hidden as isize;
        for_row_ranges(shape.batch * shape.heads, |blocks| {
            for block in blocks {
                let (example, head) = (block / shape.heads, block % shape.heads);
                let extent = self.extent(example);
                let p = block_probabilities(
                    shape,
                    (q, k),
                    &self.mask,
                    self.scale,
                    (example, head),
                    extent,
                );
                let keep = self.keep_block(shape, block);
                let dropped = block_dropped(&p, keep, extent, shape.length);
                let base = shape.base(example, head);
                // SAFETY: block (example, head) writes only its own head's columns of its own
                // example's rows; blocks are disjoint.
                unsafe {
                    block_product(
                        (extent.rows, shape.head_size, extent.keys),
                        (shared.pointer().add(base), hidden, 1),
                        (dropped.as_ptr(), extent.keys as isize, 1),
                        (v.as_ptr().add(base), hidden, 1),
                        T::from_f64(1.0),
                    );
                }
            }
        });
        output
    }

    fn backward<T: KernelFloat>(
        &self,
        shape: AttentionShape,
        q: &[T],
        k: &[T],
        v: &[T],
        d_output: &[T],
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        let size = shape.batch * shape.length * shape.hidden;
        let mut dq = vec![T::from_f64(0.0); size];
        let mut dk = vec![T::from_f64(0.0); size];
        let mut dv = vec![T::from_f64(0.0); size];
        let (dq_out, dk_out, dv_out) = (
            SharedOutput(dq.as_mut_ptr()),
            SharedOutput(dk.as_mut_ptr()),
            SharedOutput(dv.as_mut_ptr()),
        );
        let hidden = shape.hidden as isize;
        let length = shape.length;
        for_row_ranges(shape.batch * shape.heads, |blocks| {
            for block in blocks {
                let (example, head) = (block / shape.heads, block % shape.heads);
                let base = shape.base(example, head);
                let extent = self.extent(example);
                let BlockExtent { rows, keys } = extent;
                let stride = keys as isize;
                let keep = self.keep_block(shape, block);
                let p = block_probabilities(
                    shape,
                    (q, k),
                    &self.mask,
                    self.scale,
                    (example, head),
                    extent,
                );
                let dropped = block_dropped(&p, keep, extent, length);
                let mut d_dropped = vec![T::from_f64(0.0); rows * keys];
                // SAFETY (all products below): each block reads inside the [batch, length,
                // hidden] buffers and its own scratch, and writes only its own head's columns
                // of its own example's rows of dq, dk and dv; blocks are disjoint.
                unsafe {
                    // dPd = dO V^T
                    block_product(
                        (rows, keys, shape.head_size),
                        (d_dropped.as_mut_ptr(), stride, 1),
                        (d_output.as_ptr().add(base), hidden, 1),
                        (v.as_ptr().add(base), 1, hidden),
                        T::from_f64(1.0),
                    );
                    // dV = Pd^T dO
                    block_product(
                        (keys, shape.head_size, rows),
                        (dv_out.pointer().add(base), hidden, 1),
                        (dropped.as_ptr(), 1, stride),
                        (d_output.as_ptr().add(base), hidden, 1),
                        T::from_f64(1.0),
                    );
                }
                // dS = P * (dP - rowsum(dP * P)), with dP = dPd * keep.
                let mut d_scores = d_dropped;
                for (row, (d_row, p_row)) in d_scores
                    .chunks_mut(keys.max(1))
                    .zip(p.chunks(keys.max(1)))
                    .enumerate()
                {
                    let kept = keep.map(|(kept, scale)| (&kept[row * length..][..keys], scale));
                    score_gradient(d_row, p_row, kept, 1.0);
                }
                let scale = T::from_f64(self.scale);
                unsafe {
                    // dQ = scale dS K
                    block_product(
                        (rows, shape.head_size, keys),
                        (dq_out.pointer().add(base), hidden, 1),
                        (d_scores.as_ptr(), stride, 1),
                        (k.as_ptr().add(base), hidden, 1),
                        scale,
                    );
                    // dK = scale dS^T Q
                    block_product(
                        (keys, shape.head_size, rows),
                        (dk_out.pointer().add(base), hidden, 1),
                        (d_scores.as_ptr(), 1, stride),
                        (q.as_ptr().add(base), hidden, 1),
                        scale,
                    );
                }
            }
        });
        (dq, dk, dv)
    }
}

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "bertlab-attention"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        q_layout: &Layout,
        k: &CpuStorage,
        k_layout: &Layout,
        v: &CpuStorage,
        v_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let shape = self.shape(q_layout)?;
        if k_layout.shape() != q_layout.shape() || v_layout.shape() != q_layout.shape() {
            bail!("attention: queries, keys and values must have the same shape")
        }
        let storage = by_dtype!(q.dtype(), "fused attention", T => T::wrap(self.forward(
            shape,
            storage_slice::<T>(q, q_layout)?,
            storage_slice(k, k_layout)?,
            storage_slice(v, v_layout)?,
        )));
        Ok((storage, q_layout.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _output: &Tensor,
        d_output: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let shape = self.shape(q.layout())?;
        fn run<T: KernelFloat>(
            op: &AttentionOp,
            shape: AttentionShape,
            tensors: [&Tensor; 4],
        ) -> Result<(Tensor, Tensor, Tensor)> {
            let [q, k, v, d_output] = tensors;
            let (dq, dk, dv) = with_slice::<T, _>(q, |q_values| {
                with_slice::<T, _>(k, |k_values| {
                    with_slice::<T, _>(v, |v_values| {
                        with_slice::<T, _>(d_output, |d_values| {
                            Ok(op.backward(shape, q_values, k_values, v_values, d_values))
                        })
                    })
                })
            })?;
            Ok((to_tensor(dq, q)?, to_tensor(dk, q)?, to_tensor(dv, q)?))
        }
        let (dq, dk, dv) = by_dtype!(q.dtype(), "fused attention", T => run::<T>(self, shape, [q, k, v, d_output])?);
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

/// Fused multi-head self-attention (CPU, f32/f64). `q`, `k`, `v`: `[batch, length, hidden]`
/// (the projections, heads side by side); `additive_mask`: `[batch * length]`, 0 where a key is
/// attended and the dtype's minimum at padding; `keep`: the dropout mask on the probabilities,
/// `[batch, heads, length, length]` row-major, and the factor of kept ones
/// ([`layers::dropout_mask`]), or `None`; `queries`: the query rows the caller reads (the others
/// come back as zeros, see [`QueryRows`]). Returns the context `[batch, length, hidden]`, heads
/// side by side. Each block runs over its example's attended keys only ([`attended_keys`]).
///
/// [`layers::dropout_mask`]: crate::model::layers::dropout_mask
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    additive_mask: Vec<f64>,
    keep: Option<(Vec<bool>, f64)>,
    queries: QueryRows,
) -> Result<Tensor> {
    let (batch, length, hidden) = q.dims3()?;
    let head_size = hidden / heads.max(1);
    if additive_mask.len() != batch * length {
        bail!(
            "attention: the mask holds {} values for {batch} x {length}",
            additive_mask.len()
        )
    }
    let keys: Vec<usize> = (0..batch)
        .map(|example| attended_keys(&additive_mask[example * length..(example + 1) * length]))
        .collect();
    let queries = keys
        .iter()
        .map(|&keys| match queries {
            QueryRows::All => length,
            QueryRows::Real => keys,
        })
        .collect();
    let op = AttentionOp {
        heads,
        scale: 1.0 / (head_size as f64).sqrt(),
        mask: additive_mask,
        keep,
        keys,
        queries,
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::layers;
    use crate::support::random::SeededRandom;
    use candle_core::{DType, Device, Var};

    fn random_tensor(shape: &[usize], seed: u64, scale: f64) -> Tensor {
        let mut random = SeededRandom::new(seed, 0);
        let count: usize = shape.iter().product();
        let values: Vec<f64> = (0..count).map(|_| random.normal() * scale).collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    /// A variable of normal values (std 1) in `dtype`.
    fn random_var(shape: &[usize], seed: u64, dtype: DType) -> Var {
        Var::from_tensor(&random_tensor(shape, seed, 1.0).to_dtype(dtype).unwrap()).unwrap()
    }

    fn values(tensor: &Tensor) -> Vec<f64> {
        tensor
            .flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn assert_close(a: &Tensor, b: &Tensor, tolerance: f64, what: &str) {
        let (a, b) = (values(a), values(b));
        assert_eq!(a.len(), b.len());
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(worst < tolerance, "{what}: differs by {worst:e}");
    }

    /// The fused attention against the composed one (heads split and merged with transposes,
    /// candle's matrix products, composed softmax, dropout as a multiplied mask), with padding in
    /// one example and dropout on: the context and the gradients of a weighted sum with respect to
    /// queries, keys and values, in f64 and f32.
    #[test]
    fn fused_attention_matches_the_composed_form() {
        let (batch, length, heads, head_size) = (2usize, 5usize, 3usize, 4usize);
        let hidden = heads * head_size;
        for dtype in [DType::F64, DType::F32] {
            let var = |seed| random_var(&[batch, length, hidden], seed, dtype);
            let (q, k, v) = (var(11), var(12), var(13));
            let weights = random_tensor(&[batch, length, hidden], 14, 1.0)
                .to_dtype(dtype)
                .unwrap();
            let minimum = if dtype == DType::F64 {
                f64::MIN
            } else {
                f32::MIN as f64
            };
            // Example 1 pads its last two positions.
            let additive: Vec<f64> = (0..batch * length)
                .map(|index| if index >= length + 3 { minimum } else { 0.0 })
                .collect();
            let (kept, keep_scale) = layers::dropout_mask(
                batch * heads * length * length,
                0.3,
                dtype,
                &mut SeededRandom::for_dropout(5, 0),
            );
            assert!(kept.contains(&false) && kept.contains(&true) && keep_scale > 1.0);
            let keep: Vec<f64> = kept
                .iter()
                .map(|&kept| if kept { keep_scale } else { 0.0 })
                .collect();

            let fused = attention(
                q.as_tensor(),
                k.as_tensor(),
                v.as_tensor(),
                heads,
                additive.clone(),
                Some((kept.clone(), keep_scale)),
                QueryRows::All,
            )
            .unwrap();
            let split = |t: &Tensor| {
                t.reshape((batch, length, heads, head_size))
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .contiguous()
                    .unwrap()
            };
            let mask = Tensor::from_vec(additive.clone(), (batch, 1, 1, length), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let keep_tensor =
                Tensor::from_vec(keep.clone(), (batch, heads, length, length), &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
            let scores = (split(q.as_tensor())
                .matmul(&split(k.as_tensor()).t().unwrap().contiguous().unwrap())
                .unwrap()
                * (1.0 / (head_size as f64).sqrt()))
            .unwrap()
            .broadcast_add(&mask)
            .unwrap();
            let probabilities = layers::softmax(&scores, layers::Kernels::Composed).unwrap();
            let composed = (probabilities * keep_tensor)
                .unwrap()
                .matmul(&split(v.as_tensor()))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
                .reshape((batch, length, hidden))
                .unwrap();
            let tolerance = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            assert_close(&fused, &composed, tolerance, "attention context");

            let gradient = |output: &Tensor| {
                (output * &weights)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap()
            };
            let (fused_gradients, composed_gradients) = (gradient(&fused), gradient(&composed));
            for (name, input) in [("queries", &q), ("keys", &k), ("values", &v)] {
                let a = fused_gradients.get(input.as_tensor()).unwrap();
                let b = composed_gradients.get(input.as_tensor()).unwrap();
                assert!(values(b).iter().any(|value| *value != 0.0));
                assert_close(a, b, tolerance * 10.0, name);
            }

            // Without dropout too.
            let plain = attention(
                q.as_tensor(),
                k.as_tensor(),
                v.as_tensor(),
                heads,
                additive,
                None,
                QueryRows::All,
            )
            .unwrap();
            assert_eq!(plain.dims(), &[batch, length, hidden]);
        }
    }

    /// Leaving out padding keys and unread query rows changes no value: a mask whose padding is
    /// -1e30 (not the dtype's minimum, so every key is computed, and its weight still underflows
    /// to exactly 0) against the same mask at the minimum, and [`QueryRows::Real`] against
    /// [`QueryRows::All`] on the rows it computes (zeros elsewhere), in the context and in every
    /// gradient, with dropout, in f64 and f32, at a tweet's sizes (50 positions, heads of 32).
    /// Example 0 has no padding, example 1 pads its last 17 positions, example 2 starts with
    /// padding. At these sizes gemm multiplies with the same kernels whatever the number of keys,
    /// so the bits match; at others its choice of kernel by shape can change the last bit of a
    /// product (the quickstart's metrics move in the seventh digit).
    #[test]
    fn attention_over_attended_keys_and_read_rows_gives_the_same_bits() {
        let (batch, length, heads, head_size) = (3usize, 50usize, 2usize, 32usize);
        let hidden = heads * head_size;
        let real = |example: usize, position: usize| match example {
            0 => true,
            1 => position < 33,
            _ => position >= 2,
        };
        assert_eq!(attended_keys(&[0.0, 0.0, f32::MIN as f64]), 2);
        assert_eq!(attended_keys(&[0.0, 0.0, -1e30]), 3);
        assert_eq!(attended_keys(&[f32::MIN as f64, 0.0, 0.0]), 3);
        assert_eq!(attended_keys(&[f32::MIN as f64; 2]), 2);
        assert_eq!(attended_keys(&[0.0, f64::MIN, 0.0]), 3);
        for dtype in [DType::F64, DType::F32] {
            let minimum = if dtype == DType::F64 {
                f64::MIN
            } else {
                f32::MIN as f64
            };
            let mask = |padding: f64| -> Vec<f64> {
                (0..batch * length)
                    .map(|index| {
                        if real(index / length, index % length) {
                            0.0
                        } else {
                            padding
                        }
                    })
                    .collect()
            };
            let var = |seed| random_var(&[batch, length, hidden], seed, dtype);
            let (q, k, v) = (var(21), var(22), var(23));
            let keep = layers::dropout_mask(
                batch * heads * length * length,
                0.2,
                dtype,
                &mut SeededRandom::for_dropout(7, 0),
            );
            // The gradient's weights: zero on the rows a call leaves out, as a caller's are.
            let read = |queries: QueryRows| -> Tensor {
                let weights: Vec<f64> = (0..batch * length * hidden)
                    .map(|index| {
                        let (example, position) =
                            (index / (length * hidden), index / hidden % length);
                        let computed = match queries {
                            QueryRows::All => true,
                            QueryRows::Real => example != 1 || position < 33,
                        };
                        if computed {
                            ((index * 37 % 11) as f64 - 5.0) / 4.0
                        } else {
                            0.0
                        }
                    })
                    .collect();
                Tensor::from_vec(weights, (batch, length, hidden), &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap()
            };
            let run = |padding: f64, queries: QueryRows, weights: &Tensor| {
                let context = attention(
                    q.as_tensor(),
                    k.as_tensor(),
                    v.as_tensor(),
                    heads,
                    mask(padding),
                    Some(keep.clone()),
                    queries,
                )
                .unwrap();
                let gradients = (&context * weights)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let mut all = vec![values(&context)];
                for input in [&q, &k, &v] {
                    all.push(values(gradients.get(input.as_tensor()).unwrap()));
                }
                all
            };
            for queries in [QueryRows::All, QueryRows::Real] {
                let weights = read(queries);
                let every_key = run(-1e30, QueryRows::All, &weights);
                let attended = run(minimum, queries, &weights);
                let (context, reference) = (&attended[0], &every_key[0]);
                for (index, (value, expected)) in context.iter().zip(reference).enumerate() {
                    let (example, position) = (index / (length * hidden), index / hidden % length);
                    let computed = match queries {
                        QueryRows::All => true,
                        QueryRows::Real => example != 1 || position < 33,
                    };
                    let expected = if computed { *expected } else { 0.0 };
                    assert_eq!(
                        value.to_bits(),
                        expected.to_bits(),
                        "{dtype:?} {queries:?} context {index}"
                    );
                }
                for (part, name) in [(1, "queries"), (2, "keys"), (3, "values")] {
                    assert!(every_key[part].iter().any(|value| *value != 0.0));
                    for (index, (value, expected)) in
                        attended[part].iter().zip(&every_key[part]).enumerate()
                    {
                        assert_eq!(
                            value.to_bits(),
                            expected.to_bits(),
                            "{dtype:?} {queries:?} {name} {index}"
                        );
                    }
                }
            }
        }
    }

    /// Each fused kernel against its composed twin: outputs and the gradients of a weighted sum
    /// (weights random, so every output element matters) with respect to every input.
    #[test]
    fn fused_kernels_match_composed_ops_in_value_and_gradient() {
        let x = Var::from_tensor(&random_tensor(&[3, 5, 17], 1, 2.0)).unwrap();
        let w = Var::from_tensor(&(random_tensor(&[17], 2, 0.3) + 1.0).unwrap()).unwrap();
        let b = Var::from_tensor(&random_tensor(&[17], 3, 0.3)).unwrap();
        let weights = random_tensor(&[3, 5, 17], 4, 1.0);
        let norm = layers::LayerNorm {
            weight: w.clone(),
            bias: b.clone(),
            epsilon: 1e-12,
        };
        type Case<'a> = (&'a str, Box<dyn Fn(layers::Kernels) -> Tensor + 'a>);
        let cases: Vec<Case> = vec![
            (
                "layer norm",
                Box::new(|kernels| norm.forward(x.as_tensor(), kernels).unwrap()),
            ),
            (
                "softmax",
                Box::new(|kernels| layers::softmax(x.as_tensor(), kernels).unwrap()),
            ),
            (
                "gelu",
                Box::new(|kernels| layers::gelu(x.as_tensor(), kernels).unwrap()),
            ),
        ];
        for (name, run) in cases {
            let fused = run(layers::Kernels::Fused);
            let composed = run(layers::Kernels::Composed);
            assert_close(&fused, &composed, 1e-12, name);
            let fused_gradients = fused
                .mul(&weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let composed_gradients = composed
                .mul(&weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (input, label) in [(&x, "x"), (&w, "weight"), (&b, "bias")] {
                match (
                    fused_gradients.get(input.as_tensor()),
                    composed_gradients.get(input.as_tensor()),
                ) {
                    (Some(f), Some(c)) => {
                        assert_close(f, c, 1e-10, &format!("{name}: gradient of {label}"))
                    }
                    (None, None) => {}
                    (f, c) => panic!(
                        "{name}: gradient of {label}: fused {:?}, composed {:?}",
                        f.is_some(),
                        c.is_some()
                    ),
                }
            }
        }
    }

    /// GeGLU against its composed twin (halves narrowed, GELU times gate), value and gradient,
    /// in f64 and f32, with more rows than one worker takes.
    #[test]
    fn fused_geglu_matches_the_composed_form() {
        for dtype in [DType::F64, DType::F32] {
            let x = Var::from_tensor(
                &random_tensor(&[4, 33, 2 * 19], 15, 2.0)
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
            let weights = random_tensor(&[4, 33, 19], 16, 1.0)
                .to_dtype(dtype)
                .unwrap();
            let fused = layers::geglu(x.as_tensor(), layers::Kernels::Fused).unwrap();
            let composed = layers::geglu(x.as_tensor(), layers::Kernels::Composed).unwrap();
            assert_eq!(fused.dims(), &[4, 33, 19]);
            let tolerance = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            assert_close(&fused, &composed, tolerance, "geglu");
            let gradient = |y: &Tensor| {
                (y * &weights)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap()
            };
            let (a, b) = (gradient(&fused), gradient(&composed));
            let (a, b) = (a.get(x.as_tensor()).unwrap(), b.get(x.as_tensor()).unwrap());
            let nonzero = values(b).iter().filter(|value| **value != 0.0).count();
            assert!(
                nonzero > values(b).len() * 9 / 10,
                "{nonzero} non-zero gradients"
            );
            assert_close(a, b, tolerance * 10.0, "geglu gradient");
        }
        assert!(geglu(&random_tensor(&[2, 3], 1, 1.0)).is_err());
    }

    /// Parallel partial sums are added in a fixed order: repeated backward passes give the same
    /// bits, as bit-identical training needs.
    #[test]
    fn layer_norm_gradients_are_bit_identical_across_runs() {
        let x = Var::from_tensor(
            &random_tensor(&[64, 40, 96], 6, 1.0)
                .to_dtype(DType::F32)
                .unwrap(),
        )
        .unwrap();
        let w =
            Var::from_tensor(&random_tensor(&[96], 7, 1.0).to_dtype(DType::F32).unwrap()).unwrap();
        let b =
            Var::from_tensor(&random_tensor(&[96], 8, 1.0).to_dtype(DType::F32).unwrap()).unwrap();
        let weights = random_tensor(&[64, 40, 96], 9, 1.0)
            .to_dtype(DType::F32)
            .unwrap();
        let norm = layers::LayerNorm {
            weight: w.clone(),
            bias: b.clone(),
            epsilon: 1e-12,
        };
        let run = || {
            let y = norm.forward(x.as_tensor(), layers::Kernels::Fused).unwrap();
            let gradients = y
                .mul(&weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let bits = |t: &Tensor| -> Vec<u32> {
                t.flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            };
            (
                bits(gradients.get(w.as_tensor()).unwrap()),
                bits(gradients.get(b.as_tensor()).unwrap()),
            )
        };
        let first = run();
        for _ in 0..5 {
            assert_eq!(run(), first);
        }
    }

    #[test]
    fn fused_kernels_run_in_f32_and_handle_large_inputs() {
        let x = random_tensor(&[4, 12, 40, 40], 5, 30.0)
            .to_dtype(DType::F32)
            .unwrap();
        let y = layers::softmax(&x, layers::Kernels::Fused).unwrap();
        let sums = y
            .sum(3)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5));
        let composed = layers::softmax(&x, layers::Kernels::Composed).unwrap();
        assert_close(&y, &composed, 1e-6, "f32 softmax");
        let g = layers::gelu(&x, layers::Kernels::Fused).unwrap();
        assert_close(&g, &x.gelu_erf().unwrap(), 1e-4, "f32 gelu");
    }

    /// The bias add against candle's broadcast_add, value and both gradients, in f64 and f32,
    /// with more columns than one worker's chunk.
    #[test]
    fn bias_add_matches_broadcast_add() {
        for dtype in [DType::F64, DType::F32] {
            let x = Var::from_tensor(&random_tensor(&[3, 7, 150], 8, 1.0).to_dtype(dtype).unwrap())
                .unwrap();
            let b =
                Var::from_tensor(&random_tensor(&[150], 9, 1.0).to_dtype(dtype).unwrap()).unwrap();
            let weights = random_tensor(&[3, 7, 150], 10, 1.0)
                .to_dtype(dtype)
                .unwrap();
            let tolerance = if dtype == DType::F64 { 1e-12 } else { 1e-4 };
            let fused = bias_add(x.as_tensor(), b.as_tensor()).unwrap();
            let composed = x.as_tensor().broadcast_add(b.as_tensor()).unwrap();
            assert_close(&fused, &composed, tolerance, "bias add");
            let fused_gradients = (fused * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let composed_gradients = (composed * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (var, what) in [(&x, "dx"), (&b, "db")] {
                assert_close(
                    fused_gradients.get(var.as_tensor()).unwrap(),
                    composed_gradients.get(var.as_tensor()).unwrap(),
                    tolerance,
                    what,
                );
            }
        }
        assert!(
            bias_add(
                &random_tensor(&[2, 3], 1, 1.0),
                &random_tensor(&[2], 1, 1.0)
            )
            .is_err()
        );
    }

    #[test]
    fn fast_erf_matches_libm() {
        let mut worst = 0.0f64;
        for step in -600_000..=600_000 {
            let x = step as f32 * 1e-5;
            let difference = (erf_f32(x) as f64 - libm::erf(x as f64)).abs();
            worst = worst.max(difference);
        }
        for x in [f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30] {
            assert!(
                (erf_f32(x) - x.signum()).abs() <= 2e-7,
                "erf({x}) = {}",
                erf_f32(x)
            );
        }
        assert!(erf_f32(f32::NAN).is_nan());
        assert!(worst < 5e-7, "largest difference from libm::erf: {worst:e}");
    }

    /// Within 2 ulp of f64's exp over the normal range; the edges and specials as documented.
    #[test]
    fn fast_exp_is_within_two_ulp() {
        let mut worst = 0.0f64;
        for step in -873_365..=883_762 {
            let x = step as f32 * 1e-4;
            let exact = (x as f64).exp();
            let got = exp_f32(x) as f64;
            if exact < f32::MIN_POSITIVE as f64 {
                continue; // below the normal range: a subnormal, or 0.
            }
            let ulp = f32::EPSILON as f64 * 2f64.powi(exact.log2().floor() as i32);
            worst = worst.max((got - exact).abs() / ulp);
        }
        assert!(worst <= 2.0, "largest difference from exp: {worst} ulp");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-88.0), 0.0);
        assert_eq!(exp_f32(f32::MIN), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(89.0), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
    }

    /// The f32 softmax: rows sum to 1, masked keys get 0, a row of only masked keys is uniform,
    /// the vector and plain builds agree bit for bit, and the values stay within 1e-6 of the
    /// f64 default's.
    /// GELU and LayerNorm in f32 compiled for AVX-512 give the plain build's bits (the same
    /// operations in the same order, only wider), on values that reach erf's clamp, zeros,
    /// subnormals, infinities and NaN.
    #[test]
    fn f32_gelu_and_layer_norm_are_the_same_on_every_path() {
        if !is_x86_feature_detected!("avx512f") {
            return;
        }
        let mut random = SeededRandom::new(41, 0);
        let mut x: Vec<f32> = (0..4096).map(|_| (random.normal() * 3.0) as f32).collect();
        x[..8].copy_from_slice(&[
            0.0,
            -0.0,
            1e-40,
            -6.0,
            7.5,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ]);
        let mut plain = vec![MaybeUninit::new(0f32); x.len()];
        let mut wide = plain.clone();
        gelu_block(&mut plain, &x);
        // SAFETY: the CPU has AVX-512F (checked).
        unsafe { gelu_block_f32_avx512(&mut wide, &x) };
        for (index, (a, b)) in plain.iter().zip(&wide).enumerate() {
            // SAFETY: both were initialised.
            let (a, b) = unsafe { (a.assume_init(), b.assume_init()) };
            assert_eq!(a.to_bits(), b.to_bits(), "GELU of {}", x[index]);
        }
        // The whole op: the blocks and the tail past the last whole block.
        let long: Vec<f32> = x.iter().chain(&x[..1000]).copied().collect();
        let expected: Vec<u32> = long.iter().map(|v| gelu_value(*v).to_bits()).collect();
        let got: Vec<u32> = gelu_forward(&long).iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, expected);
        let n = 384;
        let w: Vec<f32> = (0..n)
            .map(|_| (1.0 + random.normal() * 0.1) as f32)
            .collect();
        let b: Vec<f32> = (0..n).map(|_| (random.normal() * 0.1) as f32).collect();
        for row in x[8..].chunks_exact(n) {
            let (mut plain, mut wide) = (vec![0f32; n], vec![0f32; n]);
            layer_norm_row(&mut plain, row, &w, &b, 1e-12);
            // SAFETY: as above.
            unsafe { layer_norm_row_f32_avx512(&mut wide, row, &w, &b, 1e-12) };
            assert_eq!(
                plain.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                wide.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn f32_softmax_rows_are_exact_enough_and_the_same_on_every_path() {
        let mut random = SeededRandom::new(8, 0);
        let length = 37;
        let mask: Vec<f64> = (0..length)
            .map(|index| if index % 5 == 4 { f32::MIN as f64 } else { 0.0 })
            .collect();
        let scores: Vec<f32> = (0..length * 9)
            .map(|_| (random.normal() * 4.0) as f32)
            .collect();
        let mut plain = scores.clone();
        softmax_rows_f32(&mut plain, &mask);
        let mut dispatched = scores.clone();
        <f32 as KernelFloat>::softmax_rows(&mut dispatched, &mask);
        assert_eq!(plain, dispatched, "the AVX-512 build gives the same bits");
        let mut reference: Vec<f64> = scores.iter().map(|&value| value as f64).collect();
        <f64 as KernelFloat>::softmax_rows(&mut reference, &mask);
        for (row, reference_row) in plain.chunks(length).zip(reference.chunks(length)) {
            let total: f64 = row.iter().map(|&value| value as f64).sum();
            assert!((total - 1.0).abs() < 1e-5, "total {total}");
            for (index, (&got, &want)) in row.iter().zip(reference_row).enumerate() {
                if index % 5 == 4 {
                    assert_eq!(got, 0.0, "a masked key");
                }
                assert!((got as f64 - want).abs() < 1e-6, "{got} against {want}");
            }
        }
        let mut all_masked = vec![0.5f32; 4];
        softmax_rows_f32(&mut all_masked, &[f32::MIN as f64; 4]);
        assert_eq!(all_masked, vec![0.25; 4]);
    }

    #[test]
    fn the_embedding_lookup_gives_index_selects_rows_and_table_gradient_bit_for_bit() {
        // Repeated ids (summed in the gradient), an id used once, rows never used (zero).
        let ids = Tensor::new(&[3u32, 0, 3, 7, 3, 1, 0, 9], &Device::Cpu).unwrap();
        for dtype in [DType::F32, DType::F64] {
            let table = random_var(&[10, 6], 41, dtype);
            let upstream = random_tensor(&[8, 6], 42, 1.0).to_dtype(dtype).unwrap();
            let mut results = Vec::new();
            for fused in [true, false] {
                let rows = if fused {
                    embedding_lookup(table.as_tensor(), &ids).unwrap()
                } else {
                    table.as_tensor().index_select(&ids, 0).unwrap()
                };
                let loss = (&rows * &upstream).unwrap().sum_all().unwrap();
                let gradient = loss
                    .backward()
                    .unwrap()
                    .get(table.as_tensor())
                    .unwrap()
                    .clone();
                results.push((values(&rows), values(&gradient)));
            }
            let (fused, reference) = (&results[0], &results[1]);
            assert_eq!(fused.0, reference.0, "{dtype:?}: the rows");
            assert_eq!(fused.1, reference.1, "{dtype:?}: the table's gradient");
            // Row 2 is never looked up: its gradient is zero; row 3 sums three upstream rows.
            assert!(fused.1[2 * 6..3 * 6].iter().all(|&value| value == 0.0));
            assert!(fused.1[3 * 6] != 0.0);
        }
        let table = random_var(&[10, 6], 41, DType::F32);
        let outside = Tensor::new(&[2u32, 10], &Device::Cpu).unwrap();
        let error = embedding_lookup(table.as_tensor(), &outside).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("id 10 is outside the table's 10 rows"),
            "{error}"
        );
    }
}
