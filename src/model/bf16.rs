//! bf16 matrix products with f32 sums on CPUs with AVX512-BF16, and the dense layer built on
//! them (`precision = "bf16"`).
//!
//! `C = A·B` (or `C += A·B`) where A and B are f32 matrices given as strided views: both are
//! rounded to bf16 (to nearest, ties to even) while they are packed, `vdpbf16ps` multiplies pairs
//! of bf16 values and sums them in f32, and C is f32. This is the arithmetic of mixed-precision
//! training: bf16 operands, f32 sums, f32 master weights, f32 everything outside the products.
//!
//! Packing: A into rows of pairs (`[row][pair]`, rows padded to a multiple of [`ROWS`]), B into
//! panels of [`COLUMNS`] columns (`[panel][pair][column]`); a pair holds k in its low half and
//! k + 1 in its high half, k padded to even with zeros. The microkernel keeps a
//! `ROWS x COLUMNS` tile of C in 24 registers and runs over blocks of [`PAIRS_PER_BLOCK`] pairs,
//! so that a block of a B panel (24 KiB) stays in L1 while every row panel of A streams past it.
//! The column panels are shared out between candle's CPU workers.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, bail};
use std::arch::x86_64::*;

use crate::model::kernels::{SharedOutput, to_tensor, with_slice};

/// Rows of C one microkernel call computes.
const ROWS: usize = 6;
/// Columns of C one microkernel call computes: four 16-lane vectors.
const COLUMNS: usize = 64;
/// Pairs of k values per block.
const PAIRS_PER_BLOCK: usize = 96;
/// Side of the square tiles that transposing packs go through, so their writes stay in cache.
const PACK_TILE: usize = 64;

/// Whether this CPU runs the bf16 products (AVX-512F and AVX512-BF16).
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
}

/// Rounds an f32 to bf16 (to nearest, ties to even; NaN stays NaN), as its 16 bits.
#[inline]
pub fn to_bf16(value: f32) -> u16 {
    let bits = value.to_bits();
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16;
    let quiet_nan = (bits >> 16) | 0x40;
    (if value.is_nan() { quiet_nan } else { rounded }) as u16
}

/// The f32 a bf16 stands for (exact).
#[inline]
pub fn from_bf16(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

#[inline]
fn pair(low: f32, high: f32) -> u32 {
    to_bf16(low) as u32 | ((to_bf16(high) as u32) << 16)
}

/// A strided view of an f32 matrix: element (r, c) is
/// `data[offset + r * row_stride + c * column_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub row_stride: usize,
    pub column_stride: usize,
}

impl View<'_> {
    #[inline]
    fn at(&self, row: usize, column: usize) -> f32 {
        self.data[self.offset + row * self.row_stride + column * self.column_stride]
    }
}

/// Packs A (`m x k`) as rows of pairs, `[row][pair]`, rows padded to a multiple of [`ROWS`].
fn pack_a(a: View, m: usize, k: usize, pairs: usize) -> Vec<u32> {
    let rows = m.div_ceil(ROWS) * ROWS;
    let mut packed = vec![0u32; rows * pairs];
    if a.column_stride == 1 {
        // Rows contiguous in k: one pass per row.
        for (row, out) in packed.chunks_exact_mut(pairs).take(m).enumerate() {
            let start = a.offset + row * a.row_stride;
            let source = &a.data[start..start + k];
            for (slot, values) in out.iter_mut().zip(source.chunks_exact(2)) {
                *slot = pair(values[0], values[1]);
            }
            if k % 2 == 1 {
                out[pairs - 1] = pair(source[k - 1], 0.0);
            }
        }
    } else if a.row_stride == 1 {
        // A transposed (columns contiguous in m): read runs along m, write in square tiles.
        for row_start in (0..m).step_by(PACK_TILE) {
            let height = PACK_TILE.min(m - row_start);
            for pair_start in (0..pairs).step_by(PACK_TILE) {
                for p in pair_start..pairs.min(pair_start + PACK_TILE) {
                    let low_start = a.offset + 2 * p * a.column_stride + row_start;
                    let low = &a.data[low_start..low_start + height];
                    for (index, &l) in low.iter().enumerate() {
                        let high = if 2 * p + 1 < k {
                            a.data[low_start + a.column_stride + index]
                        } else {
                            0.0
                        };
                        packed[(row_start + index) * pairs + p] = pair(l, high);
                    }
                }
            }
        }
    } else {
        for row in 0..m {
            for p in 0..pairs {
                let high = if 2 * p + 1 < k { a.at(row, 2 * p + 1) } else { 0.0 };
                packed[row * pairs + p] = pair(a.at(row, 2 * p), high);
            }
        }
    }
    packed
}

/// Packs B (`k x n`) into panels of [`COLUMNS`] columns, `[panel][pair][column]`.
fn pack_b(b: View, k: usize, n: usize, pairs: usize) -> Vec<u32> {
    let panels = n.div_ceil(COLUMNS);
    let mut packed = vec![0u32; panels * pairs * COLUMNS];
    for (panel, out) in packed.chunks_exact_mut(pairs * COLUMNS).enumerate() {
        let width = COLUMNS.min(n - panel * COLUMNS);
        let first_column = panel * COLUMNS;
        if b.column_stride == 1 {
            // Rows contiguous in n: two rows make one line of pairs.
            for (p, target) in out.chunks_exact_mut(COLUMNS).enumerate() {
                let low_start = b.offset + 2 * p * b.row_stride + first_column;
                let low = &b.data[low_start..low_start + width];
                if 2 * p + 1 < k {
                    let high_start = low_start + b.row_stride;
                    let high = &b.data[high_start..high_start + width];
                    for ((slot, &l), &h) in target.iter_mut().zip(low).zip(high) {
                        *slot = pair(l, h);
                    }
                } else {
                    for (slot, &l) in target.iter_mut().zip(low) {
                        *slot = pair(l, 0.0);
                    }
                }
            }
        } else if b.row_stride == 1 {
            // B transposed (a weight W read as Wᵀ): read runs along k, write in tiles of pairs.
            for pair_start in (0..pairs).step_by(PACK_TILE) {
                let pair_end = pairs.min(pair_start + PACK_TILE);
                for column in 0..width {
                    let start = b.offset + (first_column + column) * b.column_stride;
                    let source = &b.data[start..start + k];
                    for p in pair_start..pair_end {
                        let high = if 2 * p + 1 < k { source[2 * p + 1] } else { 0.0 };
                        out[p * COLUMNS + column] = pair(source[2 * p], high);
                    }
                }
            }
        } else {
            for p in 0..pairs {
                for column in 0..width {
                    let high = if 2 * p + 1 < k {
                        b.at(2 * p + 1, first_column + column)
                    } else {
                        0.0
                    };
                    out[p * COLUMNS + column] = pair(b.at(2 * p, first_column + column), high);
                }
            }
        }
    }
    packed
}

/// `C = A·B`, or `C += A·B` when `accumulate`, with A (`m x k`) and B (`k x n`) rounded to bf16
/// and the sums in f32. C is row-major with row stride `ldc` (`c[r * ldc + j]`).
///
/// Bails when the CPU lacks AVX512-BF16 (see [`available`]) or `c` is too short.
#[allow(clippy::too_many_arguments)]
pub fn product(
    a: View,
    b: View,
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) -> Result<()> {
    if !available() {
        bail!(
            "bf16 matrix products need a CPU with AVX512-BF16, which this one lacks: use precision = \"fp32\""
        )
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if ldc < n || c.len() < (m - 1) * ldc + n {
        bail!("bf16 product: output of {} values is too short for {m} x {n}", c.len())
    }
    if k == 0 {
        if !accumulate {
            for row in 0..m {
                c[row * ldc..row * ldc + n].fill(0.0);
            }
        }
        return Ok(());
    }
    let pairs = k.div_ceil(2);
    let packed_a = pack_a(a, m, k, pairs);
    let packed_b = pack_b(b, k, n, pairs);
    let row_panels = m.div_ceil(ROWS);
    let output = SharedOutput(c.as_mut_ptr());
    candle_core::utils::barrier_pool().execute_chunked(n.div_ceil(COLUMNS), |panels| {
        for column_panel in panels {
            let b_panel = &packed_b[column_panel * pairs * COLUMNS..][..pairs * COLUMNS];
            let width = COLUMNS.min(n - column_panel * COLUMNS);
            let mut block_start = 0;
            while block_start < pairs {
                let block = PAIRS_PER_BLOCK.min(pairs - block_start);
                let load = accumulate || block_start > 0;
                for row_panel in 0..row_panels {
                    let height = ROWS.min(m - row_panel * ROWS);
                    // SAFETY: the CPU has the features (checked above); the tile lies inside `c`
                    // (length checked above), each column panel belongs to one worker, and the
                    // packed panels hold `ROWS` rows and `COLUMNS` columns of `pairs` pairs.
                    unsafe {
                        let tile = output
                            .pointer()
                            .add(row_panel * ROWS * ldc + column_panel * COLUMNS);
                        kernel(
                            block,
                            packed_a.as_ptr().add(row_panel * ROWS * pairs + block_start),
                            pairs,
                            b_panel.as_ptr().add(block_start * COLUMNS),
                            Tile { pointer: tile, stride: ldc, height, width },
                            load,
                        );
                    }
                }
                block_start += block;
            }
        }
    });
    Ok(())
}

/// Where a microkernel writes: `height x width` values of C from `pointer`, row stride `stride`.
struct Tile {
    pointer: *mut f32,
    stride: usize,
    height: usize,
    width: usize,
}

/// One [`ROWS`] x [`COLUMNS`] tile of C over `pairs` pairs of k: `a` points at the first row's
/// pairs (rows `a_row_stride` apart), `b` at the block of a packed B panel. `load`: add to
/// what C holds instead of overwriting it. Edge tiles go through a local buffer.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn kernel(pairs: usize, a: *const u32, a_row_stride: usize, b: *const u32, c: Tile, load: bool) {
    let full = c.height == ROWS && c.width == COLUMNS;
    let mut edge = [0f32; ROWS * COLUMNS];
    let (target, stride) = if full { (c.pointer, c.stride) } else { (edge.as_mut_ptr(), COLUMNS) };
    // SAFETY (whole body): the caller guarantees the pointers cover the tile and the pairs.
    unsafe {
        if !full && load {
            for row in 0..c.height {
                for column in 0..c.width {
                    edge[row * COLUMNS + column] = *c.pointer.add(row * c.stride + column);
                }
            }
        }
        let mut sums = [[_mm512_setzero_ps(); 4]; ROWS];
        if load {
            for (row, row_sums) in sums.iter_mut().enumerate() {
                for (vector, sum) in row_sums.iter_mut().enumerate() {
                    *sum = _mm512_loadu_ps(target.add(row * stride + vector * 16));
                }
            }
        }
        for p in 0..pairs {
            let line = b.add(p * COLUMNS);
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(line as *const _));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(line.add(16) as *const _));
            let b2: __m512bh = std::mem::transmute(_mm512_loadu_si512(line.add(32) as *const _));
            let b3: __m512bh = std::mem::transmute(_mm512_loadu_si512(line.add(48) as *const _));
            for (row, row_sums) in sums.iter_mut().enumerate() {
                let broadcast: __m512bh =
                    std::mem::transmute(_mm512_set1_epi32(*a.add(row * a_row_stride + p) as i32));
                row_sums[0] = _mm512_dpbf16_ps(row_sums[0], broadcast, b0);
                row_sums[1] = _mm512_dpbf16_ps(row_sums[1], broadcast, b1);
                row_sums[2] = _mm512_dpbf16_ps(row_sums[2], broadcast, b2);
                row_sums[3] = _mm512_dpbf16_ps(row_sums[3], broadcast, b3);
            }
        }
        for (row, row_sums) in sums.iter().enumerate() {
            for (vector, sum) in row_sums.iter().enumerate() {
                _mm512_storeu_ps(target.add(row * stride + vector * 16), *sum);
            }
        }
        if !full {
            for row in 0..c.height {
                for column in 0..c.width {
                    *c.pointer.add(row * c.stride + column) = edge[row * COLUMNS + column];
                }
            }
        }
    }
}

/// `x Wᵀ` with bf16 products: `x` `[rows, in]`, `W` `[out, in]` (f32, CPU) -> `[rows, out]`.
/// The backward pass computes `dx = dy W` and `dW = dyᵀ x` with bf16 products too.
struct LinearProductOp;

fn matrix_dims(layout: &Layout, what: &str) -> Result<(usize, usize)> {
    match layout.dims() {
        [rows, columns] => Ok((*rows, *columns)),
        other => bail!("bf16 linear: {what} must be 2-dimensional, got {other:?}"),
    }
}

fn f32_slice<'a>(storage: &'a CpuStorage, what: &str) -> Result<&'a [f32]> {
    match storage {
        CpuStorage::F32(values) => Ok(values),
        other => bail!("bf16 linear: {what} must be f32, got {:?}", other.dtype()),
    }
}

impl CustomOp2 for LinearProductOp {
    fn name(&self) -> &'static str {
        "bertlab-linear-bf16"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, features) = matrix_dims(x_layout, "the input")?;
        let (outputs, weight_features) = matrix_dims(weight_layout, "the weight")?;
        if features != weight_features {
            bail!("bf16 linear: input has {features} features, the weight {weight_features}")
        }
        let x_stride = x_layout.stride();
        let w_stride = weight_layout.stride();
        let x_view = View {
            data: f32_slice(x, "the input")?,
            offset: x_layout.start_offset(),
            row_stride: x_stride[0],
            column_stride: x_stride[1],
        };
        // B = Wᵀ: B[k][j] = W[j][k].
        let w_view = View {
            data: f32_slice(weight, "the weight")?,
            offset: weight_layout.start_offset(),
            row_stride: w_stride[1],
            column_stride: w_stride[0],
        };
        let mut out = vec![0f32; rows * outputs];
        product(x_view, w_view, rows, outputs, features, &mut out, outputs, false)?;
        Ok((CpuStorage::F32(out), Shape::from((rows, outputs))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _output: &Tensor,
        d_output: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (rows, features) = x.dims2()?;
        let outputs = weight.dims2()?.0;
        let (dx, dw) = with_slice::<f32, _>(x, |x_values| {
            with_slice::<f32, _>(weight, |w_values| {
                with_slice::<f32, _>(d_output, |dy_values| {
                    let dy = View { data: dy_values, offset: 0, row_stride: outputs, column_stride: 1 };
                    // dx [rows, in] = dy [rows, out] · W [out, in]
                    let mut dx = vec![0f32; rows * features];
                    let w = View { data: w_values, offset: 0, row_stride: features, column_stride: 1 };
                    product(dy, w, rows, features, outputs, &mut dx, features, false)?;
                    // dW [out, in] = dyᵀ [out, rows] · x [rows, in]
                    let mut dw = vec![0f32; outputs * features];
                    let dy_transposed =
                        View { data: dy_values, offset: 0, row_stride: 1, column_stride: outputs };
                    let x_view = View { data: x_values, offset: 0, row_stride: features, column_stride: 1 };
                    product(dy_transposed, x_view, outputs, features, rows, &mut dw, features, false)?;
                    Ok((dx, dw))
                })
            })
        })?;
        Ok((Some(to_tensor(dx, x)?), Some(to_tensor(dw, weight)?)))
    }
}

/// `x Wᵀ` for `x` `[rows, in]` and `W` `[out, in]`, both f32 on the CPU, with bf16 products and
/// f32 sums, differentiable in both.
pub fn linear_product(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    if x.dtype() != DType::F32 || weight.dtype() != DType::F32 {
        bail!("bf16 products take f32 inputs (f32 master weights), got {:?}", x.dtype())
    }
    x.apply_op2(weight, LinearProductOp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;

    fn values(count: usize, random: &mut SeededRandom) -> Vec<f32> {
        (0..count).map(|_| random.uniform_f32() * 2.0 - 1.0).collect()
    }

    fn rounded(value: f32) -> f64 {
        from_bf16(to_bf16(value)) as f64
    }

    #[test]
    fn rounding_to_bf16_is_to_nearest_even() {
        // 1 + 2^-8 lies halfway between 1 and the next bf16 (1 + 2^-7): ties go to even (1).
        assert_eq!(to_bf16(1.0 + 2f32.powi(-8)), 0x3f80);
        // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 (odd) and 1 + 2^-6: up to the even one.
        assert_eq!(to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
        assert_eq!(to_bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20)), 0x3f81);
        assert_eq!(to_bf16(-2.0), 0xc000);
        assert_eq!(to_bf16(f32::INFINITY), 0x7f80);
        assert_eq!(to_bf16(f32::MAX), 0x7f80, "beyond bf16's largest finite value: infinity");
        for nan in [f32::NAN, f32::from_bits(0x7f80_0001), f32::from_bits(0xffff_ffff)] {
            assert!(from_bf16(to_bf16(nan)).is_nan(), "{:#x}", nan.to_bits());
        }
    }

    /// Every layout the packing distinguishes (rows contiguous, transposed, other strides), odd
    /// and even k, edge tiles, overwrite and accumulate: exactly the f64 sum of the rounded
    /// products, up to f32 summation error.
    #[test]
    fn products_match_the_rounded_f64_reference() {
        if !available() {
            let mut c = [0f32; 1];
            let one = View { data: &[1.0], offset: 0, row_stride: 1, column_stride: 1 };
            let error = product(one, one, 1, 1, 1, &mut c, 1, false).unwrap_err();
            assert!(error.to_string().contains("AVX512-BF16"), "{error}");
            return;
        }
        let mut random = SeededRandom::new(3, 0);
        for (m, n, k) in [(1, 1, 1), (7, 70, 13), (13, 130, 200), (6, 64, 192), (40, 3, 385)] {
            let a = values(m * k + 5, &mut random);
            let b = values(k * n * 2 + 3, &mut random);
            // A: row-major, transposed, and every other element of a wider buffer.
            let a_views = [
                View { data: &a, offset: 5, row_stride: k, column_stride: 1 },
                View { data: &a, offset: 5, row_stride: 1, column_stride: m },
            ];
            let b_views = [
                View { data: &b, offset: 3, row_stride: n, column_stride: 1 },
                View { data: &b, offset: 3, row_stride: 1, column_stride: k },
                View { data: &b, offset: 3, row_stride: 2 * n, column_stride: 2 },
            ];
            for a_view in a_views {
                for b_view in b_views {
                    for accumulate in [false, true] {
                        let ldc = n + 2;
                        let mut c = values(m * ldc, &mut random);
                        let before = c.clone();
                        product(a_view, b_view, m, n, k, &mut c, ldc, accumulate).unwrap();
                        let mut worst = 0f64;
                        for i in 0..m {
                            for j in 0..ldc {
                                let got = c[i * ldc + j] as f64;
                                if j >= n {
                                    assert_eq!(got, before[i * ldc + j] as f64, "outside the product");
                                    continue;
                                }
                                let mut sum = if accumulate { before[i * ldc + j] as f64 } else { 0.0 };
                                for l in 0..k {
                                    sum += rounded(a_view.at(i, l)) * rounded(b_view.at(l, j));
                                }
                                worst = worst.max((got - sum).abs());
                            }
                        }
                        assert!(
                            worst < 1e-6 * (k as f64).sqrt() * 4.0,
                            "{m}x{n}x{k} {a_view:?} {b_view:?} accumulate {accumulate}: off by {worst:e}"
                        );
                    }
                }
            }
        }
    }

    /// The layer's forward and both gradients against f64 products of the rounded operands
    /// (the incoming gradient rounded too, as the backward products round it).
    #[test]
    fn linear_product_and_its_gradients() {
        if !available() {
            return; // products_match_the_rounded_f64_reference checks the error.
        }
        let (rows, inputs, outputs) = (9, 21, 70);
        let mut random = SeededRandom::new(5, 0);
        let device = candle_core::Device::Cpu;
        let x = candle_core::Var::from_vec(values(rows * inputs, &mut random), (rows, inputs), &device).unwrap();
        let w = candle_core::Var::from_vec(values(outputs * inputs, &mut random), (outputs, inputs), &device).unwrap();
        let dy = values(rows * outputs, &mut random);
        let y = linear_product(x.as_tensor(), w.as_tensor()).unwrap();
        let seed = Tensor::from_vec(dy.clone(), (rows, outputs), &device).unwrap();
        let gradients = (y.clone() * seed).unwrap().sum_all().unwrap().backward().unwrap();
        let x_values = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let w_values = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let y_values = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let dx = gradients.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let dw = gradients.get(w.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let close = |got: f32, want: f64, what: &str| {
            assert!((got as f64 - want).abs() < 2e-5, "{what}: {got} against {want}");
        };
        for r in 0..rows {
            for o in 0..outputs {
                let want: f64 = (0..inputs).map(|i| rounded(x_values[r * inputs + i]) * rounded(w_values[o * inputs + i])).sum();
                close(y_values[r * outputs + o], want, "y");
            }
            for i in 0..inputs {
                let want: f64 = (0..outputs).map(|o| rounded(dy[r * outputs + o]) * rounded(w_values[o * inputs + i])).sum();
                close(dx[r * inputs + i], want, "dx");
            }
        }
        for o in 0..outputs {
            for i in 0..inputs {
                let want: f64 = (0..rows).map(|r| rounded(dy[r * outputs + o]) * rounded(x_values[r * inputs + i])).sum();
                close(dw[o * inputs + i], want, "dW");
            }
        }
    }
}
