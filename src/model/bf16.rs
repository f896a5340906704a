//! bf16 matrix products with f32 sums on CPUs with AVX512-BF16, and the dense layer built on
//! them (`precision = "bf16"`).
//!
//! `C = A·B` (or `C += A·B`, or `C = A·B + row vector`) where A and B are f32 matrices given as
//! strided views: both are rounded to bf16 (to nearest, ties to even) while they are packed,
//! `vdpbf16ps` multiplies pairs of bf16 values and sums them in f32, and C is f32. This is the
//! arithmetic of mixed-precision training: bf16 operands, f32 sums, f32 master weights, f32
//! everything outside the products.
//!
//! Packing: A into rows of pairs (`[row][pair]`, rows padded to a multiple of [`ROWS`]), B into
//! panels of [`COLUMNS`] columns (`[panel][pair][column]`); a pair holds k in its low half and
//! k + 1 in its high half, k padded to even with zeros. The microkernel keeps a
//! `ROWS x COLUMNS` tile of C in 24 registers and runs over blocks of [`PAIRS_PER_BLOCK`] pairs,
//! so that a block of a B panel (24 KiB) stays in L1 while every row panel of A streams past it.
//! Packing and products run on candle's CPU workers: first A's row groups and B's panels, then
//! one task per (B panel, group of 16 row panels), so that two workers stay evenly loaded; the
//! packing buffers are kept per thread and reused. Each tile of C is computed by one task, in
//! the same order whatever the thread count: results do not depend on it.
//!
//! Two units compute the products ([`Unit`]): AVX512-BF16 vectors (the microkernel below) and,
//! where the CPU has them, AMX tiles ([`amx`]; the same packs with k padded to whole tiles of 16
//! pairs, 32 x 32 blocks of C). Their sums differ in the last bits; each repeats its own.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, bail};
use std::arch::x86_64::*;
use std::cell::RefCell;

use crate::model::amx;
use crate::model::kernels::{SharedOutput, column_sums, to_tensor, with_slice};

/// Rows of C one microkernel call computes.
const ROWS: usize = 6;
/// Columns of C one microkernel call computes: four 16-lane vectors.
const COLUMNS: usize = 64;
/// Pairs of k values per block.
const PAIRS_PER_BLOCK: usize = 96;
/// Row panels per task (96 rows): the unit of work shared out between the workers.
const ROW_PANELS_PER_TASK: usize = 16;
/// Side of the square tiles that transposing packs go through, so their writes stay in cache.
const PACK_TILE: usize = 64;

/// Whether this CPU runs the bf16 products (AVX-512F, AVX-512BW and AVX512-BF16).
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512bf16")
}

/// Rounds an f32 to bf16 as `vcvtne2ps2bf16` does: to nearest, ties to even; subnormals become
/// zeros of their sign; NaN stays NaN (made quiet). Returns the 16 bits.
#[inline]
pub fn to_bf16(value: f32) -> u16 {
    let bits = value.to_bits();
    if bits & 0x7f80_0000 == 0 {
        return ((bits >> 16) & 0x8000) as u16;
    }
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

/// `out[i] = pair(source[2i], source[2i + 1])` for `out.len()` pairs.
///
/// # Safety
/// The CPU must have the features of [`available`]; `source` must hold `2 * out.len()` values.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pairs_from_line(source: &[f32], out: &mut [u32]) {
    let vectors = out.len() / 16;
    // SAFETY: chunk `v` reads source[32v..32v + 32] and writes out[16v..16v + 16], inside both.
    unsafe {
        for v in 0..vectors {
            let low = _mm512_loadu_ps(source.as_ptr().add(32 * v));
            let high = _mm512_loadu_ps(source.as_ptr().add(32 * v + 16));
            let converted: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(high, low));
            _mm512_storeu_si512(out.as_mut_ptr().add(16 * v) as *mut _, converted);
        }
    }
    for (index, slot) in out.iter_mut().enumerate().skip(16 * vectors) {
        *slot = pair(source[2 * index], source[2 * index + 1]);
    }
}

/// `out[i] = pair(low[i], high[i])` for `out.len()` pairs.
///
/// # Safety
/// The CPU must have the features of [`available`]; `low` and `high` must hold `out.len()` values.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pairs_from_two_lines(low: &[f32], high: &[f32], out: &mut [u32]) {
    let vectors = out.len() / 16;
    // Interleaves the 16 bf16 of `low` (lanes 0..16) with the 16 of `high` (lanes 16..32).
    let order = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4,
        19, 3, 18, 2, 17, 1, 16, 0,
    );
    // SAFETY: chunk `v` reads low/high[16v..16v + 16] and writes out[16v..16v + 16].
    unsafe {
        for v in 0..vectors {
            let l = _mm512_loadu_ps(low.as_ptr().add(16 * v));
            let h = _mm512_loadu_ps(high.as_ptr().add(16 * v));
            let converted: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(h, l));
            let interleaved = _mm512_permutexvar_epi16(order, converted);
            _mm512_storeu_si512(out.as_mut_ptr().add(16 * v) as *mut _, interleaved);
        }
    }
    for index in 16 * vectors..out.len() {
        out[index] = pair(low[index], high[index]);
    }
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

impl<'a> View<'a> {
    /// A contiguous row-major matrix whose rows hold `row_length` values.
    pub fn row_major(data: &'a [f32], row_length: usize) -> View<'a> {
        View {
            data,
            offset: 0,
            row_stride: row_length,
            column_stride: 1,
        }
    }

    /// The same values read as the transposed matrix.
    pub fn transposed(self) -> View<'a> {
        View {
            row_stride: self.column_stride,
            column_stride: self.row_stride,
            ..self
        }
    }

    #[inline]
    fn at(&self, row: usize, column: usize) -> f32 {
        self.data[self.offset + row * self.row_stride + column * self.column_stride]
    }

    /// Whether every element of a `rows x columns` matrix lies inside `data`.
    fn covers(&self, rows: usize, columns: usize) -> bool {
        rows == 0
            || columns == 0
            || self.offset + (rows - 1) * self.row_stride + (columns - 1) * self.column_stride
                < self.data.len()
    }
}

/// How a product starts C.
#[derive(Clone, Copy, Debug)]
pub enum Start<'a> {
    /// `C = A·B`.
    Zero,
    /// `C += A·B`.
    Accumulate,
    /// `C = A·B + 1 vᵀ`: every row of C starts as `v` (`n` values), as a bias.
    Row(&'a [f32]),
}

/// Packs rows `rows` of A (`m x k`) as pairs into `out`, which holds those rows, `stride` apart
/// (`stride >= pairs`; the pairs from `pairs` to `stride` become zeros): rows at or past `m`
/// become zeros.
fn pack_a_rows(
    a: View,
    m: usize,
    k: usize,
    (pairs, stride): (usize, usize),
    rows: std::ops::Range<usize>,
    out: &mut [u32],
) {
    let first = rows.start;
    let real = rows.start..rows.end.min(m);
    out[real.len() * stride..].fill(0);
    if stride > pairs {
        for line in out[..real.len() * stride].chunks_exact_mut(stride) {
            line[pairs..].fill(0);
        }
    }
    if a.column_stride == 1 {
        // Rows contiguous in k: one pass per row.
        for (row, target) in real.clone().zip(out.chunks_exact_mut(stride)) {
            let start = a.offset + row * a.row_stride;
            let source = &a.data[start..start + k];
            // SAFETY: `product_raw` checked the features; the line holds 2 * (k / 2) values.
            unsafe { pairs_from_line(source, &mut target[..k / 2]) };
            if k % 2 == 1 {
                target[pairs - 1] = pair(source[k - 1], 0.0);
            }
        }
    } else if a.row_stride == 1 {
        // A transposed (columns contiguous in m): read runs along m, write in square tiles.
        for row_start in real.clone().step_by(PACK_TILE) {
            let height = PACK_TILE.min(real.end - row_start);
            for pair_start in (0..pairs).step_by(PACK_TILE) {
                for p in pair_start..pairs.min(pair_start + PACK_TILE) {
                    let low_start = a.offset + 2 * p * a.column_stride + row_start;
                    let low = &a.data[low_start..low_start + height];
                    let base = (row_start - first) * stride + p;
                    if 2 * p + 1 < k {
                        let high = &a.data[low_start + a.column_stride..][..height];
                        let mut converted = [0u32; PACK_TILE];
                        // SAFETY: `product_raw` checked the features; both runs hold `height`.
                        unsafe { pairs_from_two_lines(low, high, &mut converted[..height]) };
                        for (index, value) in converted[..height].iter().enumerate() {
                            out[base + index * stride] = *value;
                        }
                    } else {
                        for (index, &l) in low.iter().enumerate() {
                            out[base + index * stride] = pair(l, 0.0);
                        }
                    }
                }
            }
        }
    } else {
        for row in real {
            for p in 0..pairs {
                let high = if 2 * p + 1 < k {
                    a.at(row, 2 * p + 1)
                } else {
                    0.0
                };
                out[(row - first) * stride + p] = pair(a.at(row, 2 * p), high);
            }
        }
    }
}

/// Packs column panel `panel` of B (`k x n`) into `out` (`[pair][column]`, `pairs` x
/// [`COLUMNS`]); columns past `n` become zeros.
fn pack_b_panel(b: View, k: usize, n: usize, pairs: usize, panel: usize, out: &mut [u32]) {
    let width = COLUMNS.min(n - panel * COLUMNS);
    let first_column = panel * COLUMNS;
    if width < COLUMNS {
        for line in out.chunks_exact_mut(COLUMNS) {
            line[width..].fill(0);
        }
    }
    if b.column_stride == 1 {
        // Rows contiguous in n: two rows make one line of pairs.
        for (p, target) in out.chunks_exact_mut(COLUMNS).enumerate() {
            let low_start = b.offset + 2 * p * b.row_stride + first_column;
            let low = &b.data[low_start..low_start + width];
            if 2 * p + 1 < k {
                let high = &b.data[low_start + b.row_stride..][..width];
                // SAFETY: `product_raw` checked the features; both lines hold `width` values.
                unsafe { pairs_from_two_lines(low, high, &mut target[..width]) };
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
            // Pairs that lie wholly inside k convert as one run; an odd k's last pair alone.
            let whole_end = pair_end.min(k / 2);
            for column in 0..width {
                let start = b.offset + (first_column + column) * b.column_stride;
                let source = &b.data[start..start + k];
                let mut converted = [0u32; PACK_TILE];
                if whole_end > pair_start {
                    let run = &mut converted[..whole_end - pair_start];
                    // SAFETY: `product_raw` checked the features; the run holds 2 * run.len().
                    unsafe { pairs_from_line(&source[2 * pair_start..2 * whole_end], run) };
                }
                for p in pair_start..pair_end {
                    out[p * COLUMNS + column] = if p < whole_end {
                        converted[p - pair_start]
                    } else {
                        pair(source[2 * p], 0.0)
                    };
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

thread_local! {
    /// Packed A and B, reused by the products this thread starts (grown, never shrunk).
    static PACKING: RefCell<(Vec<u32>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// `C = A·B` (or as `start` says) with A (`m x k`) and B (`k x n`) rounded to bf16 and the sums
/// in f32. C is row-major with row stride `ldc` (`c[r * ldc + j]`).
///
/// On the unit of [`Unit::current`]. Bails when the CPU lacks AVX512-BF16 (see [`available`]),
/// or a view or `c` is too short.
#[allow(clippy::too_many_arguments)]
pub fn product(
    a: View,
    b: View,
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    ldc: usize,
    start: Start,
) -> Result<()> {
    product_on(Unit::current(), a, b, m, n, k, c, ldc, start)
}

/// [`product`] into memory that may be uninitialised (`Start::Accumulate` aside): every element
/// of the `m x n` output is written.
///
/// # Safety
/// `c` must be valid for writes (and reads, with `Start::Accumulate`) of `(m - 1) * ldc + n`
/// values, `ldc >= n`, and nothing else may access them during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn product_raw(
    a: View,
    b: View,
    m: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    ldc: usize,
    start: Start,
) -> Result<()> {
    // SAFETY: forwarded.
    unsafe { product_raw_on(Unit::current(), a, b, m, n, k, c, ldc, start) }
}

/// The unit that computes the bf16 products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// AVX512-BF16 vectors (`vdpbf16ps`).
    Vectors,
    /// AMX tiles (`tdpbf16ps`, [`amx`]).
    Tiles,
}

impl Unit {
    /// The unit this process's products use now: the tiles where [`amx::enabled`], else the
    /// vectors.
    pub fn current() -> Unit {
        if amx::enabled() {
            Unit::Tiles
        } else {
            Unit::Vectors
        }
    }

    /// The name runs record in their provenance: `avx512-bf16` or `amx`.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Vectors => "avx512-bf16",
            Unit::Tiles => "amx",
        }
    }
}

/// [`product`] on a chosen unit (the tests compare the two).
#[allow(clippy::too_many_arguments)]
pub fn product_on(
    unit: Unit,
    a: View,
    b: View,
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    ldc: usize,
    start: Start,
) -> Result<()> {
    if m > 0 && n > 0 && (ldc < n || c.len() < (m - 1) * ldc + n) {
        bail!(
            "bf16 product: output of {} values is too short for {m} x {n}",
            c.len()
        )
    }
    // SAFETY: `c` covers the output (checked above).
    unsafe { product_raw_on(unit, a, b, m, n, k, c.as_mut_ptr(), ldc, start) }
}

/// [`product_raw`] on `unit`.
///
/// # Safety
/// As [`product_raw`].
#[allow(clippy::too_many_arguments)]
unsafe fn product_raw_on(
    unit: Unit,
    a: View,
    b: View,
    m: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    ldc: usize,
    start: Start,
) -> Result<()> {
    if unit == Unit::Tiles && !amx::hardware_available() {
        bail!(
            "bf16 products on AMX tiles need a CPU (and kernel) with AMX-BF16, which this one lacks"
        )
    }
    if !available() {
        bail!(
            "bf16 matrix products need a CPU with AVX512-BF16, which this one lacks: use precision = \"fp32\""
        )
    }
    if !a.covers(m, k) || !b.covers(k, n) {
        bail!("bf16 product: an operand view is too short for {m} x {k} times {k} x {n}")
    }
    if let Start::Row(row) = start
        && row.len() != n
    {
        bail!(
            "bf16 product: a start row of {} values for {n} columns",
            row.len()
        )
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let output = SharedOutput(c);
    if k == 0 {
        for r in 0..m {
            // SAFETY: row r of the output lies inside `c` (the caller's contract).
            let line = unsafe { output.pointer().add(r * ldc) };
            for j in 0..n {
                match start {
                    Start::Zero => unsafe { line.add(j).write(0.0) },
                    Start::Row(row) => unsafe { line.add(j).write(row[j]) },
                    Start::Accumulate => {}
                }
            }
        }
        return Ok(());
    }
    if unit == Unit::Tiles {
        // SAFETY: the caller's contract on `c`; the operands and the tiles were checked above.
        unsafe { product_on_tiles(a, b, m, n, k, output, ldc, start) };
        return Ok(());
    }
    let pairs = k.div_ceil(2);
    let row_panels = m.div_ceil(ROWS);
    let column_panels = n.div_ceil(COLUMNS);
    let padded_row = padded_start_row(start, column_panels * COLUMNS);
    let (mut packed_a, mut packed_b) =
        PACKING.with(|buffers| std::mem::take(&mut *buffers.borrow_mut()));
    if packed_a.len() < row_panels * ROWS * pairs {
        packed_a.resize(row_panels * ROWS * pairs, 0);
    }
    if packed_b.len() < column_panels * pairs * COLUMNS {
        packed_b.resize(column_panels * pairs * COLUMNS, 0);
    }
    let pool = candle_core::utils::barrier_pool();
    // Packing: groups of A's row panels and B's column panels, one shared list of work.
    let a_groups = row_panels.div_ceil(ROW_PANELS_PER_TASK);
    {
        let a_out = SharedOutput(packed_a.as_mut_ptr());
        let b_out = SharedOutput(packed_b.as_mut_ptr());
        pool.execute_chunked(a_groups + column_panels, |items| {
            for item in items {
                if item < a_groups {
                    let panels = item * ROW_PANELS_PER_TASK
                        ..((item + 1) * ROW_PANELS_PER_TASK).min(row_panels);
                    let rows = panels.start * ROWS..panels.end * ROWS;
                    // SAFETY: workers get disjoint row ranges inside the buffer (sized above).
                    let out = unsafe { a_out.slice(rows.start * pairs..rows.end * pairs) };
                    pack_a_rows(a, m, k, (pairs, pairs), rows, out);
                } else {
                    let panel = item - a_groups;
                    // SAFETY: each column panel is packed by one worker; the buffer holds all.
                    let out = unsafe {
                        b_out.slice(panel * pairs * COLUMNS..(panel + 1) * pairs * COLUMNS)
                    };
                    pack_b_panel(b, k, n, pairs, panel, out);
                }
            }
        });
    }
    // Products: one task per (column panel, group of row panels), so that the two workers share
    // the work evenly even when there are only a few column panels.
    let (packed_a_ref, packed_b_ref) = (&packed_a, &packed_b);
    pool.execute_chunked(column_panels * a_groups, |tasks| {
        for task in tasks {
            let column_panel = task / a_groups;
            let row_group = task % a_groups;
            let b_panel = &packed_b_ref[column_panel * pairs * COLUMNS..][..pairs * COLUMNS];
            let width = COLUMNS.min(n - column_panel * COLUMNS);
            let row_panel_range = row_group * ROW_PANELS_PER_TASK
                ..((row_group + 1) * ROW_PANELS_PER_TASK).min(row_panels);
            let mut block_start = 0;
            while block_start < pairs {
                let block = PAIRS_PER_BLOCK.min(pairs - block_start);
                let init = if block_start > 0 {
                    Init::Load
                } else {
                    match (&start, &padded_row) {
                        (Start::Accumulate, _) => Init::Load,
                        (Start::Row(_), Some(row)) => {
                            Init::Row(row[column_panel * COLUMNS..].as_ptr())
                        }
                        _ => Init::Zero,
                    }
                };
                for row_panel in row_panel_range.clone() {
                    let height = ROWS.min(m - row_panel * ROWS);
                    // SAFETY: the CPU has the features (checked above); the tile lies inside the
                    // output (the caller's contract) and belongs to this task alone; the packed
                    // operands hold `ROWS` rows and `COLUMNS` columns of `pairs` pairs.
                    unsafe {
                        let tile = output
                            .pointer()
                            .add(row_panel * ROWS * ldc + column_panel * COLUMNS);
                        let a_rows = packed_a_ref
                            .as_ptr()
                            .add(row_panel * ROWS * pairs + block_start);
                        let b_block = b_panel.as_ptr().add(block_start * COLUMNS);
                        if height == ROWS && width == COLUMNS {
                            kernel(block, a_rows, pairs, b_block, tile, ldc, init);
                        } else {
                            let mut edge = [0f32; ROWS * COLUMNS];
                            if matches!(init, Init::Load) {
                                for row in 0..height {
                                    for column in 0..width {
                                        edge[row * COLUMNS + column] =
                                            *tile.add(row * ldc + column);
                                    }
                                }
                            }
                            kernel(
                                block,
                                a_rows,
                                pairs,
                                b_block,
                                edge.as_mut_ptr(),
                                COLUMNS,
                                init,
                            );
                            for row in 0..height {
                                for column in 0..width {
                                    *tile.add(row * ldc + column) = edge[row * COLUMNS + column];
                                }
                            }
                        }
                    }
                }
                block_start += block;
            }
        }
    });
    PACKING.with(|buffers| *buffers.borrow_mut() = (packed_a, packed_b));
    Ok(())
}

/// The start row of `Start::Row`, padded with zeros to `length` (whole panels), so that edge
/// tiles read zeros past `n`.
fn padded_start_row(start: Start, length: usize) -> Option<Vec<f32>> {
    match start {
        Start::Row(row) => {
            let mut padded = row.to_vec();
            padded.resize(length, 0.0);
            Some(padded)
        }
        _ => None,
    }
}

/// Blocks of 32 rows per task of [`product_on_tiles`] (96 rows, as the vector kernel's tasks).
const ROW_BLOCKS_PER_TASK: usize = 3;

/// [`product_raw`] on AMX tiles ([`amx`]): the same packs with k padded to whole tiles of 16
/// pairs and A's rows to whole blocks of 32, one task per (B panel, group of 3 row blocks), and
/// in a task one [`amx::block`] call per 32 x 32 block of C over the whole of k.
///
/// # Safety
/// As [`product_raw`], whose checks must have passed, with `m, n, k > 0` and
/// [`amx::hardware_available`] true.
#[allow(clippy::too_many_arguments)]
unsafe fn product_on_tiles(
    a: View,
    b: View,
    m: usize,
    n: usize,
    k: usize,
    output: SharedOutput<f32>,
    ldc: usize,
    start: Start,
) {
    let pairs = k.div_ceil(2);
    let stride = pairs.div_ceil(amx::TILE_PAIRS) * amx::TILE_PAIRS;
    let tiles = stride / amx::TILE_PAIRS;
    let row_blocks = m.div_ceil(amx::BLOCK_ROWS);
    let padded_rows = row_blocks * amx::BLOCK_ROWS;
    let column_panels = n.div_ceil(COLUMNS);
    let padded_row = padded_start_row(start, column_panels * COLUMNS);
    let (mut packed_a, mut packed_b) =
        PACKING.with(|buffers| std::mem::take(&mut *buffers.borrow_mut()));
    if packed_a.len() < padded_rows * stride {
        packed_a.resize(padded_rows * stride, 0);
    }
    if packed_b.len() < column_panels * stride * COLUMNS {
        packed_b.resize(column_panels * stride * COLUMNS, 0);
    }
    let pool = candle_core::utils::barrier_pool();
    let group_rows = ROW_BLOCKS_PER_TASK * amx::BLOCK_ROWS;
    let a_groups = row_blocks.div_ceil(ROW_BLOCKS_PER_TASK);
    {
        let a_out = SharedOutput(packed_a.as_mut_ptr());
        let b_out = SharedOutput(packed_b.as_mut_ptr());
        pool.execute_chunked(a_groups + column_panels, |items| {
            for item in items {
                if item < a_groups {
                    let rows = item * group_rows..((item + 1) * group_rows).min(padded_rows);
                    // SAFETY: workers get disjoint row ranges inside the buffer (sized above).
                    let out = unsafe { a_out.slice(rows.start * stride..rows.end * stride) };
                    pack_a_rows(a, m, k, (pairs, stride), rows, out);
                } else {
                    let panel = item - a_groups;
                    // SAFETY: each column panel is packed by one worker; the buffer holds all.
                    let out = unsafe {
                        b_out.slice(panel * stride * COLUMNS..(panel + 1) * stride * COLUMNS)
                    };
                    let (real, padding) = out.split_at_mut(pairs * COLUMNS);
                    padding.fill(0);
                    pack_b_panel(b, k, n, pairs, panel, real);
                }
            }
        });
    }
    let (packed_a_ref, packed_b_ref) = (&packed_a, &packed_b);
    let padded_row_ref = &padded_row;
    pool.execute_chunked(column_panels * a_groups, |tasks| {
        // SAFETY: the caller checked that the tiles exist and are permitted.
        unsafe { amx::configure() };
        for task in tasks {
            let column_panel = task / a_groups;
            let group = task % a_groups;
            let b_panel = &packed_b_ref[column_panel * stride * COLUMNS..][..stride * COLUMNS];
            let blocks =
                group * ROW_BLOCKS_PER_TASK..((group + 1) * ROW_BLOCKS_PER_TASK).min(row_blocks);
            for row_block in blocks {
                let first_row = row_block * amx::BLOCK_ROWS;
                let height = amx::BLOCK_ROWS.min(m - first_row);
                let a_block = &packed_a_ref[first_row * stride..][..amx::BLOCK_ROWS * stride];
                for half in 0..COLUMNS / amx::BLOCK_COLUMNS {
                    let first_column = column_panel * COLUMNS + half * amx::BLOCK_COLUMNS;
                    if first_column >= n {
                        break;
                    }
                    let width = amx::BLOCK_COLUMNS.min(n - first_column);
                    let b_block = b_panel[half * amx::BLOCK_COLUMNS..].as_ptr();
                    let row_start = padded_row_ref.as_ref().map(|row| amx::BlockStart::Load {
                        top: row[first_column..].as_ptr(),
                        bottom: row[first_column..].as_ptr(),
                        stride: 0,
                    });
                    // SAFETY: the tiles are configured; packed A holds 32 rows of `stride`
                    // pairs from `a_block`, the B panel `stride` pair-rows of 64 columns, the
                    // padded start row 32 values from `first_column`; the block of C lies
                    // inside the output (the caller's contract) and belongs to this task alone.
                    unsafe {
                        let c_block = output.pointer().add(first_row * ldc + first_column);
                        if height == amx::BLOCK_ROWS && width == amx::BLOCK_COLUMNS {
                            let block_start = match start {
                                Start::Zero => amx::BlockStart::Zero,
                                Start::Accumulate => amx::BlockStart::Load {
                                    top: c_block,
                                    bottom: c_block.add(16 * ldc),
                                    stride: ldc * 4,
                                },
                                Start::Row(_) => row_start.expect("padded above"),
                            };
                            amx::block(
                                tiles,
                                a_block.as_ptr(),
                                stride * 4,
                                b_block,
                                block_start,
                                c_block,
                                ldc * 4,
                            );
                        } else {
                            const EDGE_STRIDE: usize = amx::BLOCK_COLUMNS;
                            let mut edge = [0f32; amx::BLOCK_ROWS * EDGE_STRIDE];
                            let block_start = match start {
                                Start::Zero => amx::BlockStart::Zero,
                                Start::Accumulate => {
                                    for row in 0..height {
                                        for column in 0..width {
                                            edge[row * EDGE_STRIDE + column] =
                                                *c_block.add(row * ldc + column);
                                        }
                                    }
                                    amx::BlockStart::Load {
                                        top: edge.as_ptr(),
                                        bottom: edge.as_ptr().add(16 * EDGE_STRIDE),
                                        stride: EDGE_STRIDE * 4,
                                    }
                                }
                                Start::Row(_) => row_start.expect("padded above"),
                            };
                            amx::block(
                                tiles,
                                a_block.as_ptr(),
                                stride * 4,
                                b_block,
                                block_start,
                                edge.as_mut_ptr(),
                                EDGE_STRIDE * 4,
                            );
                            for row in 0..height {
                                for column in 0..width {
                                    *c_block.add(row * ldc + column) =
                                        edge[row * EDGE_STRIDE + column];
                                }
                            }
                        }
                    }
                }
            }
        }
        // SAFETY: configured above on this thread.
        unsafe { amx::release() };
    });
    PACKING.with(|buffers| *buffers.borrow_mut() = (packed_a, packed_b));
}

/// How a microkernel call starts its tile.
#[derive(Clone, Copy)]
enum Init {
    Zero,
    /// Add to what the tile holds.
    Load,
    /// Every row starts as the [`COLUMNS`] values there.
    Row(*const f32),
}

/// One [`ROWS`] x [`COLUMNS`] tile of C (from `c`, row stride `ldc`) over `pairs` pairs of k:
/// `a` points at the first row's pairs (rows `a_row_stride` apart), `b` at the block of a packed
/// B panel.
///
/// # Safety
/// The CPU must have AVX-512F and AVX512-BF16; the pointers must cover the tile and the pairs.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn kernel(
    pairs: usize,
    a: *const u32,
    a_row_stride: usize,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    init: Init,
) {
    // SAFETY (whole body): the caller guarantees the pointers cover the tile and the pairs.
    unsafe {
        let mut sums = [[_mm512_setzero_ps(); 4]; ROWS];
        match init {
            Init::Zero => {}
            Init::Load => {
                for (row, row_sums) in sums.iter_mut().enumerate() {
                    for (vector, sum) in row_sums.iter_mut().enumerate() {
                        *sum = _mm512_loadu_ps(c.add(row * ldc + vector * 16));
                    }
                }
            }
            Init::Row(values) => {
                for row_sums in sums.iter_mut() {
                    for (vector, sum) in row_sums.iter_mut().enumerate() {
                        *sum = _mm512_loadu_ps(values.add(vector * 16));
                    }
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
                _mm512_storeu_ps(c.add(row * ldc + vector * 16), *sum);
            }
        }
    }
}

/// `x Wᵀ + b` with bf16 products: `x` `[rows, in]`, `W` `[out, in]`, `b` `[out]` (f32, CPU) ->
/// `[rows, out]`. The backward pass computes `dx = dy W` and `dW = dyᵀ x` with bf16 products
/// too, and `db` as f32 column sums of `dy`.
struct LinearOp;

fn matrix_dims(layout: &Layout, what: &str) -> Result<(usize, usize)> {
    match layout.dims() {
        [rows, columns] => Ok((*rows, *columns)),
        other => bail!("bf16 linear: {what} must be 2-dimensional, got {other:?}"),
    }
}

fn f32_view<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<View<'a>> {
    let CpuStorage::F32(values) = storage else {
        bail!("bf16 linear: {what} must be f32, got {:?}", storage.dtype())
    };
    let stride = layout.stride();
    Ok(View {
        data: values,
        offset: layout.start_offset(),
        row_stride: stride[0],
        column_stride: stride[1],
    })
}

/// A `rows x columns` f32 buffer filled by `fill`, which must write every element.
fn filled(
    rows: usize,
    columns: usize,
    fill: impl FnOnce(*mut f32) -> Result<()>,
) -> Result<Vec<f32>> {
    let mut values: Vec<f32> = Vec::with_capacity(rows * columns);
    fill(values.as_mut_ptr())?;
    // SAFETY: `fill` wrote all `rows * columns` elements.
    unsafe { values.set_len(rows * columns) };
    Ok(values)
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "bertlab-linear-bf16"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, features) = matrix_dims(x_layout, "the input")?;
        let (outputs, weight_features) = matrix_dims(weight_layout, "the weight")?;
        if features != weight_features {
            bail!("bf16 linear: the input has {features} features, the weight {weight_features}")
        }
        let (CpuStorage::F32(bias_values), Some((bias_start, bias_end))) =
            (bias, bias_layout.contiguous_offsets())
        else {
            bail!("bf16 linear: the bias must be contiguous f32")
        };
        let bias_values = &bias_values[bias_start..bias_end];
        if bias_values.len() != outputs {
            bail!(
                "bf16 linear: a bias of {} values for {outputs} outputs",
                bias_values.len()
            )
        }
        let x_view = f32_view(x, x_layout, "the input")?;
        // B = Wᵀ: B[k][j] = W[j][k].
        let w_view = f32_view(weight, weight_layout, "the weight")?.transposed();
        let out = filled(rows, outputs, |out| {
            // SAFETY: `out` has room for rows x outputs values; every one is written.
            unsafe {
                product_raw(
                    x_view,
                    w_view,
                    rows,
                    outputs,
                    features,
                    out,
                    outputs,
                    Start::Row(bias_values),
                )
            }
        })?;
        Ok((CpuStorage::F32(out), Shape::from((rows, outputs))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _output: &Tensor,
        d_output: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (rows, features) = x.dims2()?;
        let outputs = weight.dims2()?.0;
        let (dx, dw, db) = with_slice::<f32, _>(x, |x_values| {
            with_slice::<f32, _>(weight, |w_values| {
                with_slice::<f32, _>(d_output, |dy_values| {
                    let dy = View::row_major(dy_values, outputs);
                    // dx [rows, in] = dy [rows, out] · W [out, in]
                    let w = View::row_major(w_values, features);
                    let dx = filled(rows, features, |out| {
                        // SAFETY: `out` has room for the whole output; every value is written.
                        unsafe {
                            product_raw(dy, w, rows, features, outputs, out, features, Start::Zero)
                        }
                    })?;
                    // dW [out, in] = dyᵀ [out, rows] · x [rows, in]
                    let dy_transposed = dy.transposed();
                    let x_view = View::row_major(x_values, features);
                    let dw = filled(outputs, features, |out| {
                        // SAFETY: as above.
                        unsafe {
                            product_raw(
                                dy_transposed,
                                x_view,
                                outputs,
                                features,
                                rows,
                                out,
                                features,
                                Start::Zero,
                            )
                        }
                    })?;
                    Ok((dx, dw, column_sums(dy_values, rows, outputs)))
                })
            })
        })?;
        Ok((
            Some(to_tensor(dx, x)?),
            Some(to_tensor(dw, weight)?),
            Some(to_tensor(db, bias)?),
        ))
    }
}

/// `x Wᵀ + b` for `x` `[rows, in]`, `W` `[out, in]` and `b` `[out]`, all f32 on the CPU, with
/// bf16 products and f32 sums; differentiable in all three.
pub fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    for (tensor, what) in [(x, "input"), (weight, "weight"), (bias, "bias")] {
        if tensor.dtype() != DType::F32 {
            bail!(
                "bf16 products take f32 operands (f32 master weights); the {what} is {:?}",
                tensor.dtype()
            )
        }
    }
    x.apply_op3(weight, bias, LinearOp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::random::SeededRandom;

    fn values(count: usize, random: &mut SeededRandom) -> Vec<f32> {
        (0..count)
            .map(|_| random.uniform_f32() * 2.0 - 1.0)
            .collect()
    }

    fn rounded(value: f32) -> f64 {
        from_bf16(to_bf16(value)) as f64
    }

    /// The units this CPU has: the vectors, and the tiles where there are some.
    fn units() -> Vec<Unit> {
        let mut units = vec![Unit::Vectors];
        if amx::hardware_available() {
            units.push(Unit::Tiles);
        }
        units
    }

    /// Each unit repeats its bits exactly (the sums do not depend on how the work is shared);
    /// the tiles and the vectors agree up to f32 summation order; asking for tiles a CPU lacks is
    /// an error that says so.
    #[test]
    fn each_unit_repeats_its_bits_and_the_units_agree_closely() {
        if !available() {
            return; // products_match_the_rounded_f64_reference checks the error.
        }
        let (m, n, k) = (150, 200, 300);
        let mut random = SeededRandom::new(6, 0);
        let a = values(m * k, &mut random);
        let b = values(k * n, &mut random);
        let (a_view, b_view) = (View::row_major(&a, k), View::row_major(&b, n));
        let run = |unit| {
            let mut c = vec![0f32; m * n];
            product_on(unit, a_view, b_view, m, n, k, &mut c, n, Start::Zero).map(|()| c)
        };
        let vectors = run(Unit::Vectors).unwrap();
        assert_eq!(
            run(Unit::Vectors).unwrap(),
            vectors,
            "the vectors repeat their bits"
        );
        if !amx::hardware_available() {
            let error = run(Unit::Tiles).unwrap_err();
            assert!(error.to_string().contains("AMX"), "{error}");
            return;
        }
        let tiles = run(Unit::Tiles).unwrap();
        assert_eq!(
            run(Unit::Tiles).unwrap(),
            tiles,
            "the tiles repeat their bits"
        );
        let worst = vectors
            .iter()
            .zip(&tiles)
            .map(|(v, t)| (v - t).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "tiles and vectors differ by {worst:e}");
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
        assert_eq!(
            to_bf16(f32::MAX),
            0x7f80,
            "beyond bf16's largest finite value: infinity"
        );
        for nan in [
            f32::NAN,
            f32::from_bits(0x7f80_0001),
            f32::from_bits(0xffff_ffff),
        ] {
            assert!(from_bf16(to_bf16(nan)).is_nan(), "{:#x}", nan.to_bits());
        }
    }

    /// The vector conversions give exactly the scalar [`to_bf16`]'s bits, specials included.
    #[test]
    fn vector_and_scalar_rounding_agree() {
        if !available() {
            return;
        }
        let mut random = SeededRandom::new(4, 0);
        let mut specials = vec![
            0.0,
            -0.0,
            1.0 + 2f32.powi(-8),
            1.0 + 3.0 * 2f32.powi(-8),
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            f32::from_bits(1),
            -f32::from_bits(0x007f_ffff),
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::from_bits(0x7f80_0001),
        ];
        specials.extend((0..64 - specials.len() + 7).map(|_| random.uniform_f32() * 1e3 - 5e2));
        let pairs = specials.len() / 2;
        let mut line = vec![0u32; pairs];
        unsafe { pairs_from_line(&specials, &mut line) };
        let (low, high) = specials.split_at(pairs);
        let mut two = vec![0u32; pairs];
        unsafe { pairs_from_two_lines(low, &high[..pairs], &mut two) };
        for index in 0..pairs {
            assert_eq!(
                line[index],
                pair(specials[2 * index], specials[2 * index + 1]),
                "pair {index}"
            );
            assert_eq!(
                two[index],
                pair(low[index], high[index]),
                "pair {index} of two lines"
            );
        }
        assert_eq!(
            to_bf16(f32::from_bits(1)),
            0,
            "subnormals flush to zero, as the instruction does"
        );
        assert_eq!(to_bf16(-f32::from_bits(1)), 0x8000);
    }

    /// Every layout the packing distinguishes (rows contiguous, transposed, other strides), odd
    /// and even k, edge tiles, overwrite and accumulate: exactly the f64 sum of the rounded
    /// products, up to f32 summation error.
    #[test]
    fn products_match_the_rounded_f64_reference() {
        if !available() {
            let mut c = [0f32; 1];
            let one = View {
                data: &[1.0],
                offset: 0,
                row_stride: 1,
                column_stride: 1,
            };
            let error = product(one, one, 1, 1, 1, &mut c, 1, Start::Zero).unwrap_err();
            assert!(error.to_string().contains("AVX512-BF16"), "{error}");
            return;
        }
        let mut random = SeededRandom::new(3, 0);
        for (m, n, k) in [
            (1, 1, 1),
            (7, 70, 13),
            (13, 130, 200),
            (200, 70, 33),
            (6, 64, 192),
            (40, 3, 385),
            // Whole 32 x 32 blocks of the tiles, and blocks cut by m, n and k.
            (64, 128, 64),
            (97, 33, 31),
        ] {
            let a = values(m * k + 5, &mut random);
            let b = values(k * n * 2 + 3, &mut random);
            // A: row-major, transposed, and every other element of a wider buffer.
            let a_views = [
                View {
                    data: &a,
                    offset: 5,
                    row_stride: k,
                    column_stride: 1,
                },
                View {
                    data: &a,
                    offset: 5,
                    row_stride: 1,
                    column_stride: m,
                },
            ];
            let b_views = [
                View {
                    data: &b,
                    offset: 3,
                    row_stride: n,
                    column_stride: 1,
                },
                View {
                    data: &b,
                    offset: 3,
                    row_stride: 1,
                    column_stride: k,
                },
                View {
                    data: &b,
                    offset: 3,
                    row_stride: 2 * n,
                    column_stride: 2,
                },
            ];
            for a_view in a_views {
                for b_view in b_views {
                    let start_row = values(n, &mut random);
                    for (unit, start) in units().into_iter().flat_map(|unit| {
                        [Start::Zero, Start::Accumulate, Start::Row(&start_row)]
                            .map(|start| (unit, start))
                    }) {
                        let ldc = n + 2;
                        let mut c = values(m * ldc, &mut random);
                        let before = c.clone();
                        product_on(unit, a_view, b_view, m, n, k, &mut c, ldc, start).unwrap();
                        let mut worst = 0f64;
                        for i in 0..m {
                            for j in 0..ldc {
                                let got = c[i * ldc + j] as f64;
                                if j >= n {
                                    assert_eq!(
                                        got,
                                        before[i * ldc + j] as f64,
                                        "outside the product"
                                    );
                                    continue;
                                }
                                let mut sum = match start {
                                    Start::Zero => 0.0,
                                    Start::Accumulate => before[i * ldc + j] as f64,
                                    Start::Row(row) => row[j] as f64,
                                };
                                for l in 0..k {
                                    sum += rounded(a_view.at(i, l)) * rounded(b_view.at(l, j));
                                }
                                worst = worst.max((got - sum).abs());
                            }
                        }
                        assert!(
                            worst < 1e-6 * (k as f64).sqrt() * 4.0,
                            "{unit:?} {m}x{n}x{k} {a_view:?} {b_view:?} {start:?}: off by {worst:e}"
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
        let x =
            candle_core::Var::from_vec(values(rows * inputs, &mut random), (rows, inputs), &device)
                .unwrap();
        let w = candle_core::Var::from_vec(
            values(outputs * inputs, &mut random),
            (outputs, inputs),
            &device,
        )
        .unwrap();
        let bias =
            candle_core::Var::from_vec(values(outputs, &mut random), outputs, &device).unwrap();
        let dy = values(rows * outputs, &mut random);
        let y = linear(x.as_tensor(), w.as_tensor(), bias.as_tensor()).unwrap();
        let seed = Tensor::from_vec(dy.clone(), (rows, outputs), &device).unwrap();
        let gradients = (y.clone() * seed)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let flat = |tensor: &Tensor| tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let gradient = |var: &candle_core::Var| flat(gradients.get(var.as_tensor()).unwrap());
        let (x_values, w_values, y_values) = (flat(&x), flat(&w), flat(&y));
        let (dx, dw, db) = (gradient(&x), gradient(&w), gradient(&bias));
        let bias_values = bias.to_vec1::<f32>().unwrap();
        let close = |got: f32, want: f64, what: &str| {
            assert!(
                (got as f64 - want).abs() < 2e-5,
                "{what}: {got} against {want}"
            );
        };
        for r in 0..rows {
            for o in 0..outputs {
                let want: f64 = (0..inputs)
                    .map(|i| rounded(x_values[r * inputs + i]) * rounded(w_values[o * inputs + i]))
                    .sum();
                close(y_values[r * outputs + o], want + bias_values[o] as f64, "y");
            }
            for i in 0..inputs {
                let want: f64 = (0..outputs)
                    .map(|o| rounded(dy[r * outputs + o]) * rounded(w_values[o * inputs + i]))
                    .sum();
                close(dx[r * inputs + i], want, "dx");
            }
        }
        for o in 0..outputs {
            let want: f64 = (0..rows).map(|r| dy[r * outputs + o] as f64).sum();
            close(db[o], want, "db (f32 sums, unrounded)");
            for i in 0..inputs {
                let want: f64 = (0..rows)
                    .map(|r| rounded(dy[r * outputs + o]) * rounded(x_values[r * inputs + i]))
                    .sum();
                close(dw[o * inputs + i], want, "dW");
            }
        }
    }
}
