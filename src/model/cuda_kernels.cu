// bertlab's fused GPU kernels (f32), compiled to PTX by build.rs when the `cuda` feature is on,
// and launched by src/model/cuda_kernels.rs. Each replaces a chain of candle's elementwise ops
// (and the intermediate tensors the backward pass keeps) with one pass over memory. Reductions
// run in a fixed order per row (no atomics), so results repeat bit for bit on the same GPU.

#include <stdint.h>

#define WARP 32

__device__ __forceinline__ float warp_sum(float value) {
    for (int offset = WARP / 2; offset > 0; offset /= 2) {
        value += __shfl_xor_sync(0xffffffff, value, offset);
    }
    return value;
}

__device__ __forceinline__ float warp_max(float value) {
    for (int offset = WARP / 2; offset > 0; offset /= 2) {
        value = fmaxf(value, __shfl_xor_sync(0xffffffff, value, offset));
    }
    return value;
}

// The sum of `value` over a block of blockDim.x threads (a multiple of 32, at most 1024);
// every thread gets the result. `scratch` holds 32 floats.
__device__ float block_sum(float value, float *scratch) {
    int lane = threadIdx.x % WARP;
    int warp = threadIdx.x / WARP;
    value = warp_sum(value);
    __syncthreads();
    if (lane == 0) {
        scratch[warp] = value;
    }
    __syncthreads();
    int warps = blockDim.x / WARP;
    float total = lane < warps ? scratch[lane] : 0.0f;
    return warp_sum(total);
}

// LayerNorm forward over rows of `columns`: one block per row. Mean first, then the variance of
// the centred values (two passes, as the CPU kernel computes it).
extern "C" __global__ void bertlab_layer_norm_forward(
    const float *x, const float *weight, const float *bias, float *y,
    int rows, int columns, float epsilon) {
    __shared__ float scratch[WARP];
    int row = blockIdx.x;
    if (row >= rows) return;
    const float *x_row = x + (size_t)row * columns;
    float *y_row = y + (size_t)row * columns;
    float sum = 0.0f;
    for (int j = threadIdx.x; j < columns; j += blockDim.x) sum += x_row[j];
    float mean = block_sum(sum, scratch) / columns;
    float squares = 0.0f;
    for (int j = threadIdx.x; j < columns; j += blockDim.x) {
        float centred = x_row[j] - mean;
        squares += centred * centred;
    }
    float variance = block_sum(squares, scratch) / columns;
    float inverse = rsqrtf(variance + epsilon);
    for (int j = threadIdx.x; j < columns; j += blockDim.x) {
        y_row[j] = (x_row[j] - mean) * inverse * weight[j] + bias[j];
    }
}

// LayerNorm backward for the input, one block per row; also writes the normalised input x̂
// (for the weight gradient, summed over rows by the caller):
//   g = dy * w,  dx = (g - mean(g) - x̂ mean(g x̂)) / sqrt(var + eps).
// `out` holds dx (rows x columns) then x̂ (rows x columns).
extern "C" __global__ void bertlab_layer_norm_backward(
    const float *x, const float *weight, const float *dy, float *out,
    int rows, int columns, float epsilon) {
    __shared__ float scratch[WARP];
    int row = blockIdx.x;
    if (row >= rows) return;
    size_t offset = (size_t)row * columns;
    const float *x_row = x + offset;
    const float *dy_row = dy + offset;
    float *dx_row = out + offset;
    float *normalized_row = out + (size_t)rows * columns + offset;
    float sum = 0.0f;
    for (int j = threadIdx.x; j < columns; j += blockDim.x) sum += x_row[j];
    float mean = block_sum(sum, scratch) / columns;
    float squares = 0.0f;
    for (int j = threadIdx.x; j < columns; j += blockDim.x) {
        float centred = x_row[j] - mean;
        squares += centred * centred;
    }
    float variance = block_sum(squares, scratch) / columns;
    float inverse = rsqrtf(variance + epsilon);
    float g_sum = 0.0f;
    float gx_sum = 0.0f;
    for (int j = threadIdx.x; j < columns; j += blockDim.x) {
        float normalized = (x_row[j] - mean) * inverse;
        float g = dy_row[j] * weight[j];
        g_sum += g;
        gx_sum += g * normalized;
        normalized_row[j] = normalized;
    }
    float g_mean = block_sum(g_sum, scratch) / columns;
    float gx_mean = block_sum(gx_sum, scratch) / columns;
    for (int j = threadIdx.x; j < columns; j += blockDim.x) {
        float normalized = normalized_row[j];
        float g = dy_row[j] * weight[j];
        dx_row[j] = (g - g_mean - normalized * gx_mean) * inverse;
    }
}

// Softmax over rows of `columns` of (x * scale + mask), one warp per row; the additive mask has
// one row of `columns` per batch entry, shared by the `rows_per_mask` consecutive rows of that
// entry (heads x query positions).
extern "C" __global__ void bertlab_masked_softmax_forward(
    const float *x, const float *mask, float *y,
    int rows, int columns, int rows_per_mask, float scale) {
    int row = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    int lane = threadIdx.x % WARP;
    if (row >= rows) return;
    const float *x_row = x + (size_t)row * columns;
    const float *mask_row = mask + (size_t)(row / rows_per_mask) * columns;
    float *y_row = y + (size_t)row * columns;
    float maximum = -INFINITY;
    for (int j = lane; j < columns; j += WARP) maximum = fmaxf(maximum, x_row[j] * scale + mask_row[j]);
    maximum = warp_max(maximum);
    float total = 0.0f;
    for (int j = lane; j < columns; j += WARP) {
        float e = expf(x_row[j] * scale + mask_row[j] - maximum);
        y_row[j] = e;
        total += e;
    }
    total = warp_sum(total);
    float inverse = 1.0f / total;
    for (int j = lane; j < columns; j += WARP) y_row[j] *= inverse;
}

// Its backward for x: dx = scale * y * (dy - sum(dy * y)), one warp per row.
extern "C" __global__ void bertlab_masked_softmax_backward(
    const float *y, const float *dy, float *dx, int rows, int columns, float scale) {
    int row = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    int lane = threadIdx.x % WARP;
    if (row >= rows) return;
    size_t offset = (size_t)row * columns;
    float dot = 0.0f;
    for (int j = lane; j < columns; j += WARP) dot += y[offset + j] * dy[offset + j];
    dot = warp_sum(dot);
    for (int j = lane; j < columns; j += WARP) {
        dx[offset + j] = scale * y[offset + j] * (dy[offset + j] - dot);
    }
}

// GELU with the exact erf form and its derivative.
extern "C" __global__ void bertlab_gelu_forward(const float *x, float *y, int64_t count) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x) {
        float v = x[i];
        y[i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    }
}

extern "C" __global__ void bertlab_gelu_backward(
    const float *x, const float *dy, float *dx, int64_t count) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x) {
        float v = x[i];
        float cumulative = 0.5f * (1.0f + erff(v * 0.70710678118654752f));
        float density = 0.39894228040143268f * expf(-0.5f * v * v);
        dx[i] = dy[i] * (cumulative + v * density);
    }
}

// Inverted dropout with a counter-based mask: element i is kept when the top 24 bits of
// splitmix64(seed + (i + 1) * golden ratio) give a uniform number >= p. The same (seed, i) always
// gives the same decision, so the backward pass applies the same op to the gradient.
__device__ __forceinline__ float dropout_uniform(uint64_t seed, uint64_t index) {
    uint64_t z = seed + (index + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

extern "C" __global__ void bertlab_dropout(
    const float *x, float *y, int64_t count, uint64_t seed, float p, float scale) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x) {
        y[i] = dropout_uniform(seed, (uint64_t)i) >= p ? x[i] * scale : 0.0f;
    }
}

// One parameter's AdamW update in place, the host update's formulas element by element:
// g = grad * clip; value *= decay; first += (1 - beta1)(g - first);
// second = second beta2 + (1 - beta2) g²; value -= step_size first / (sqrt(second) / c2 + eps).
extern "C" __global__ void bertlab_adamw(
    float *value, const float *gradient, float *first, float *second, int64_t count,
    float clip, float decay, float one_minus_beta1, float beta2, float one_minus_beta2,
    float step_size, float correction2, float epsilon) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x) {
        float g = gradient[i] * clip;
        float v = value[i] * decay;
        float m = first[i] + one_minus_beta1 * (g - first[i]);
        float s = second[i] * beta2 + one_minus_beta2 * g * g;
        first[i] = m;
        second[i] = s;
        value[i] = v - step_size * (m / (sqrtf(s) / correction2 + epsilon));
    }
}
