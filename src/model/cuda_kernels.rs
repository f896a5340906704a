//! bertlab's fused GPU kernels (`cuda_kernels.cu`, compiled to PTX by build.rs) as candle custom
//! ops with their backward passes: LayerNorm, the attention's scaled and masked softmax, GELU
//! (erf), dropout with a counter-based mask, and AdamW's in-place update. Each replaces a chain
//! of candle's elementwise kernels, and the intermediate tensors kept for the backward pass.
//!
//! f32 and contiguous inputs only (the model's arithmetic off the bf16 products); the callers
//! check [`available_for`]. `bertlab device-check` compares the model built on them with the CPU
//! (logits, every gradient, AdamW steps, dropout masks); `BERTLAB_GPU_KERNELS=composed` turns
//! them off (candle's composed ops instead).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::WrapErr;
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor,
    bail,
};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/bertlab_kernels.ptx"));
const MODULE: &str = "bertlab_kernels";

/// Set to `composed` to run candle's composed ops on the GPU instead of these kernels.
pub const KERNELS_VARIABLE: &str = "BERTLAB_GPU_KERNELS";

/// Whether the fused GPU kernels are on (not turned off by [`KERNELS_VARIABLE`]).
pub fn enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| {
        std::env::var(KERNELS_VARIABLE).map_or(true, |value| value.trim() != "composed")
    })
}

/// Whether the fused GPU kernels run for `x`: on a CUDA device, in f32, unless turned off.
pub fn available_for(x: &Tensor) -> bool {
    x.device().is_cuda() && x.dtype() == DType::F32 && enabled()
}

/// The f32 values of a contiguous CUDA tensor's storage, from its layout's offset.
fn slice<'a>(
    storage: &'a CudaStorage,
    layout: &Layout,
) -> Result<candle_core::cuda_backend::cudarc::driver::CudaView<'a, f32>> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("bertlab's GPU kernels need contiguous inputs");
    };
    Ok(storage.as_cuda_slice::<f32>()?.slice(start..end))
}

fn cpu_only(name: &str) -> Result<(CpuStorage, Shape)> {
    bail!("{name} is a GPU kernel; the CPU has its own (model::kernels)")
}

/// One block of 256 threads per row.
fn per_row(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One warp per row, 8 rows per block of 256 threads.
fn warp_per_row(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.div_ceil(8) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Grid-stride elementwise launches: at most 4096 blocks of 256 threads.
fn elementwise(count: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (count.div_ceil(256).clamp(1, 4096) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn rows_and_columns(layout: &Layout) -> (usize, usize) {
    let columns = *layout.shape().dims().last().unwrap_or(&1);
    (layout.shape().elem_count() / columns.max(1), columns)
}

// ---------------------------------------------------------------------------------------------

struct LayerNormOp {
    epsilon: f32,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "bertlab-gpu-layer-norm"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cpu_only(self.name())
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        x_layout: &Layout,
        w: &CudaStorage,
        w_layout: &Layout,
        b: &CudaStorage,
        b_layout: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let device = x.device().clone();
        let (rows, columns) = rows_and_columns(x_layout);
        let function = device.get_or_load_custom_func("bertlab_layer_norm_forward", MODULE, PTX)?;
        let out = unsafe { device.alloc::<f32>(rows * columns)? };
        let (x, w, b) = (
            slice(x, x_layout)?,
            slice(w, w_layout)?,
            slice(b, b_layout)?,
        );
        let mut builder = function.builder();
        builder.arg(&x);
        builder.arg(&w);
        builder.arg(&b);
        builder.arg(&out);
        candle_core::builder_arg!(builder, rows as i32, columns as i32, self.epsilon);
        unsafe { builder.launch(per_row(rows)) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, device),
            x_layout.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let columns = *x.dims().last().unwrap_or(&1);
        let rows = x.elem_count() / columns;
        let packed = x.apply_op3_no_bwd(
            w,
            &dy.contiguous()?,
            &LayerNormBackwardOp {
                epsilon: self.epsilon,
            },
        )?;
        let count = rows * columns;
        let dx = packed.narrow(0, 0, count)?.reshape(x.shape())?;
        let normalized = packed.narrow(0, count, count)?.reshape((rows, columns))?;
        let dy = dy.reshape((rows, columns))?;
        let dw = (&dy * normalized)?.sum(0)?;
        let db = dy.sum(0)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// dx and the normalised input, packed in one flat tensor (see the kernel).
struct LayerNormBackwardOp {
    epsilon: f32,
}

impl CustomOp3 for LayerNormBackwardOp {
    fn name(&self) -> &'static str {
        "bertlab-gpu-layer-norm-backward"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cpu_only(self.name())
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        x_layout: &Layout,
        w: &CudaStorage,
        w_layout: &Layout,
        dy: &CudaStorage,
        dy_layout: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let device = x.device().clone();
        let (rows, columns) = rows_and_columns(x_layout);
        let function =
            device.get_or_load_custom_func("bertlab_layer_norm_backward", MODULE, PTX)?;
        let out = unsafe { device.alloc::<f32>(2 * rows * columns)? };
        let (x, w, dy) = (
            slice(x, x_layout)?,
            slice(w, w_layout)?,
            slice(dy, dy_layout)?,
        );
        let mut builder = function.builder();
        builder.arg(&x);
        builder.arg(&w);
        builder.arg(&dy);
        builder.arg(&out);
        candle_core::builder_arg!(builder, rows as i32, columns as i32, self.epsilon);
        unsafe { builder.launch(per_row(rows)) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, device),
            Shape::from(2 * rows * columns),
        ))
    }
}

/// LayerNorm over the last dimension with weight and bias, on the GPU.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, epsilon: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        LayerNormOp {
            epsilon: epsilon as f32,
        },
    )
}

// ---------------------------------------------------------------------------------------------

struct MaskedSoftmaxOp {
    scale: f32,
    rows_per_mask: usize,
}

impl CustomOp2 for MaskedSoftmaxOp {
    fn name(&self) -> &'static str {
        "bertlab-gpu-masked-softmax"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cpu_only(self.name())
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        x_layout: &Layout,
        mask: &CudaStorage,
        mask_layout: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let device = x.device().clone();
        let (rows, columns) = rows_and_columns(x_layout);
        let function =
            device.get_or_load_custom_func("bertlab_masked_softmax_forward", MODULE, PTX)?;
        let out = unsafe { device.alloc::<f32>(rows * columns)? };
        let (x, mask) = (slice(x, x_layout)?, slice(mask, mask_layout)?);
        let mut builder = function.builder();
        builder.arg(&x);
        builder.arg(&mask);
        builder.arg(&out);
        candle_core::builder_arg!(
            builder,
            rows as i32,
            columns as i32,
            self.rows_per_mask as i32,
            self.scale
        );
        unsafe { builder.launch(warp_per_row(rows)) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, device),
            x_layout.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _mask: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = y.apply_op2_no_bwd(&dy.contiguous()?, &SoftmaxBackwardOp { scale: self.scale })?;
        Ok((Some(dx), None))
    }
}

struct SoftmaxBackwardOp {
    scale: f32,
}

impl CustomOp2 for SoftmaxBackwardOp {
    fn name(&self) -> &'static str {
        "bertlab-gpu-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cpu_only(self.name())
    }

    fn cuda_fwd(
        &self,
        y: &CudaStorage,
        y_layout: &Layout,
        dy: &CudaStorage,
        dy_layout: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let device = y.device().clone();
        let (rows, columns) = rows_and_columns(y_layout);
        let function =
            device.get_or_load_custom_func("bertlab_masked_softmax_backward", MODULE, PTX)?;
        let out = unsafe { device.alloc::<f32>(rows * columns)? };
        let (y, dy) = (slice(y, y_layout)?, slice(dy, dy_layout)?);
        let mut builder = function.builder();
        builder.arg(&y);
        builder.arg(&dy);
        builder.arg(&out);
        candle_core::builder_arg!(builder, rows as i32, columns as i32, self.scale);
        unsafe { builder.launch(warp_per_row(rows)) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, device),
            y_layout.shape().clone(),
        ))
    }
}

/// softmax(x * scale + mask) over the last dimension, on the GPU. `x` is (batch, heads,
/// queries, keys); `mask` (batch, 1, 1, keys) is additive and gets no gradient.
pub fn masked_softmax(x: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    let dims = x.dims();
    let rows_per_mask = dims[1] * dims[2];
    x.contiguous()?.apply_op2(
        &mask.contiguous()?,
        MaskedSoftmaxOp {
            scale: scale as f32,
            rows_per_mask,
        },
    )
}

// ---------------------------------------------------------------------------------------------

struct GeluOp;

impl CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        "bertlab-gpu-gelu"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        cpu_only(self.name())
    }

    fn cuda_fwd(&self, x: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Shape)> {
        let device = x.device().clone();
        let count = layout.shape().elem_count();
        let function = device.get_or_load_custom_func("bertlab_gelu_forward", MODULE, PTX)?;
        let out = unsafe { device.alloc::<f32>(count)? };
        let x = slice(x, layout)?;
        let mut builder = function.builder();
        builder.arg(&x);
        builder.arg(&out);
        candle_core::builder_arg!(builder, count as i64);
        unsafe { builder.launch(elementwise(count)) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, device),
            layout.shape().clone(),
        ))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            x.apply_op2_no_bwd(&dy.contiguous()?, &GeluBackwardOp)?,
        ))
    }
}

struct GeluBackwardOp;

impl CustomOp2 for GeluBackwardOp {
    fn name(&self) -> &'static str {
        "bertlab-gpu-gelu-backward"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cpu_only(self.name())
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        x_layout: &Layout,
        dy: &CudaStorage,
        dy_layout: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let device = x.device().clone();
        let count = x_layout.shape().elem_count();
        let function = device.get_or_load_custom_func("bertlab_gelu_backward", MODULE, PTX)?;
        let out = unsafe { device.alloc::<f32>(count)? };
        let (x, dy) = (slice(x, x_layout)?, slice(dy, dy_layout)?);
        let mut builder = function.builder();
        builder.arg(&x);
        builder.arg(&dy);
        builder.arg(&out);
        candle_core::builder_arg!(builder, count as i64);
        unsafe { builder.launch(elementwise(count)) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, device),
            x_layout.shape().clone(),
        ))
    }
}

/// GELU with the exact erf form, on the GPU.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(GeluOp)
}

// ---------------------------------------------------------------------------------------------

/// Inverted dropout whose mask is a function of (seed, element index): the backward pass is the
/// same op on the gradient.
#[derive(Clone, Copy)]
struct DropoutOp {
    seed: u64,
    p: f32,
    scale: f32,
}

impl CustomOp1 for DropoutOp {
    fn name(&self) -> &'static str {
        "bertlab-gpu-dropout"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        cpu_only(self.name())
    }

    fn cuda_fwd(&self, x: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Shape)> {
        let device = x.device().clone();
        let count = layout.shape().elem_count();
        let function = device.get_or_load_custom_func("bertlab_dropout", MODULE, PTX)?;
        let out = unsafe { device.alloc::<f32>(count)? };
        let x = slice(x, layout)?;
        let mut builder = function.builder();
        builder.arg(&x);
        builder.arg(&out);
        candle_core::builder_arg!(builder, count as i64, self.seed, self.p, self.scale);
        unsafe { builder.launch(elementwise(count)) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, device),
            layout.shape().clone(),
        ))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(dy.contiguous()?.apply_op1_no_bwd(self)?))
    }
}

/// Inverted dropout on the GPU: element i is zeroed when a hash of (seed, i) falls below `p`,
/// the rest are scaled by 1/(1-p).
pub fn dropout(x: &Tensor, p: f64, seed: u64) -> Result<Tensor> {
    x.contiguous()?.apply_op1(DropoutOp {
        seed,
        p: p as f32,
        scale: (1.0 / (1.0 - p)) as f32,
    })
}

// ---------------------------------------------------------------------------------------------

/// The constants of one AdamW update (see `optimizer::AdamW::step_on_device`).
pub struct AdamWConstants {
    pub clip: f32,
    pub decay: f32,
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    pub step_size: f32,
    pub correction2: f32,
    pub epsilon: f32,
}

fn cuda_storage(
    tensor: &Tensor,
) -> Result<(
    impl std::ops::Deref<Target = candle_core::Storage> + '_,
    Layout,
)> {
    let (storage, layout) = tensor.storage_and_layout();
    let layout = layout.clone();
    if !matches!(&*storage, candle_core::Storage::Cuda(_)) || tensor.dtype() != DType::F32 {
        bail!("the fused AdamW update needs f32 tensors on a GPU");
    }
    Ok((storage, layout))
}

/// Updates `value`, `first` and `second` in place from `gradient` (all f32, contiguous, on the
/// same GPU, the same number of elements): one kernel for the whole update.
pub fn adamw_in_place(
    value: &Tensor,
    gradient: &Tensor,
    first: &Tensor,
    second: &Tensor,
    constants: &AdamWConstants,
) -> Result<()> {
    let count = value.elem_count();
    if [gradient, first, second]
        .iter()
        .any(|tensor| tensor.elem_count() != count)
    {
        bail!("the fused AdamW update needs tensors of the same size");
    }
    let gradient = gradient.contiguous()?;
    let (value_storage, value_layout) = cuda_storage(value)?;
    let (gradient_storage, gradient_layout) = cuda_storage(&gradient)?;
    let (first_storage, first_layout) = cuda_storage(first)?;
    let (second_storage, second_layout) = cuda_storage(second)?;
    let candle_core::Storage::Cuda(value_cuda) = &*value_storage else {
        unreachable!("checked above")
    };
    let candle_core::Storage::Cuda(gradient_cuda) = &*gradient_storage else {
        unreachable!("checked above")
    };
    let candle_core::Storage::Cuda(first_cuda) = &*first_storage else {
        unreachable!("checked above")
    };
    let candle_core::Storage::Cuda(second_cuda) = &*second_storage else {
        unreachable!("checked above")
    };
    let device = value_cuda.device().clone();
    let function = device.get_or_load_custom_func("bertlab_adamw", MODULE, PTX)?;
    let value_view = slice(value_cuda, &value_layout)?;
    let gradient_view = slice(gradient_cuda, &gradient_layout)?;
    let first_view = slice(first_cuda, &first_layout)?;
    let second_view = slice(second_cuda, &second_layout)?;
    let mut builder = function.builder();
    // The kernel writes value, first and second through these views: candle holds them behind
    // shared references, and every launch goes to the device's one stream, in order.
    builder.arg(&value_view);
    builder.arg(&gradient_view);
    builder.arg(&first_view);
    builder.arg(&second_view);
    candle_core::builder_arg!(
        builder,
        count as i64,
        constants.clip,
        constants.decay,
        constants.one_minus_beta1,
        constants.beta2,
        constants.one_minus_beta2,
        constants.step_size,
        constants.correction2,
        constants.epsilon
    );
    unsafe { builder.launch(elementwise(count)) }.w()?;
    Ok(())
}
