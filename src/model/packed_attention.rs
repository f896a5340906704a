//! Fused CPU self-attention over packed projections, with what ModernBERT and DeBERTa add to
//! BERT's attention, and its analytic backward pass: rotary positions on queries and keys
//! (ModernBERT), a sliding window of keys (ModernBERT's local layers), and DeBERTa's
//! disentangled relative terms (content-to-position and position-to-content).
//!
//! The input is `[batch, length, 3 * hidden]`: queries, keys and values side by side, heads side
//! by side within each (ModernBERT's `Wqkv` writes exactly this; DeBERTa's three projections are
//! concatenated). One (example, head) block is the parallel unit; within a block the queries go in
//! tiles of [`QUERY_TILE`] rows, and a tile reads only the keys it may attend (all of them, or
//! the window's band), so memory grows with `length x tile`, not `batch x heads x length²`, and a
//! local layer's work with `length x window`. For query `i` and key `j` of a block:
//!
//! ```text
//!   q, k = rotate(q), rotate(k)                            (rotary: [x1, x2] -> [x1 c - x2 s, x2 c + x1 s])
//!   S[i, j] = scale * (q_i . k_j + C2P[i, r(i, j)] + P2C[j, r(i, j)]) + mask(i, j)
//!             C2P = q Kp^T, P2C = k Qp^T                  (DeBERTa: Kp, Qp the projected relative
//!                                                           embeddings, r(i, j) their row)
//!   P = softmax_j(S),  Pd = P * keep,  O = Pd v
//! backward (S and P recomputed):
//!   dPd = dO v^T,  dv = Pd^T dO,  G = scale * P * (dP - rowsum(dP * P)),  dP = dPd * keep
//!   dq = G k + dC2P Kp,  dk = G^T q + dP2C Qp,  dKp = sum over examples of dC2P^T q,
//!   dQp = sum over examples of dP2C^T k, with dC2P[i, r] = sum of G[i, j] over r(i, j) = r and
//!   dP2C[j, r] = sum of G[i, j] over r(i, j) = r; then dq, dk rotated back.
//! ```
//!
//! `mask(i, j)` is the key's additive padding mask, or the dtype's minimum where `|i - j|` is
//! beyond the window. Keys beyond a tile's band are not computed: for every query with a real key
//! in its window this is exactly the masked softmax (their weights are 0 in it too). A query
//! whose window holds only padding has every score at the minimum, and the masked softmax gives
//! every key of the sequence the same weight: such a query goes alone over all keys, as
//! transformers computes it (in the backward pass only where its output gradient is not zero; in
//! training it is zero, since nothing reads a padding position).
//!
//! Checked against the composed, autograd-differentiated forms (values and every gradient, f64
//! and f32) in the tests below, and through the families' gradient and transformers tests.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, bail};

use crate::model::kernels::{
    KernelFloat, SharedOutput, block_product, block_product_into, by_dtype, for_row_ranges,
    score_gradient, storage_slice, to_tensor, with_dropout, with_slice,
};

/// Query rows per tile.
pub const QUERY_TILE: usize = 64;

/// Rotary tables `[length, head_size / 2]` (both halves of a head use the same angles):
/// `cos(p / theta^(2i / d))`, `sin(...)` in f64; [`modernbert::rotary_tables`] widens them to
/// both halves for the composed form.
///
/// [`modernbert::rotary_tables`]: crate::model::modernbert::rotary_tables
#[derive(Clone, Debug)]
pub struct Rotary {
    pub cos: Vec<f64>,
    pub sin: Vec<f64>,
}

impl Rotary {
    pub fn new(length: usize, head_size: usize, theta: f64) -> Rotary {
        let half = head_size / 2;
        let mut cos = Vec::with_capacity(length * half);
        let mut sin = Vec::with_capacity(length * half);
        for position in 0..length {
            for index in 0..half {
                let frequency = 1.0 / theta.powf((2 * index) as f64 / head_size as f64);
                let angle = position as f64 * frequency;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Rotary { cos, sin }
    }
}

/// DeBERTa's relative terms: which are present, and the row of the relative embeddings each
/// query-key pair reads.
#[derive(Clone, Debug)]
pub struct Relative {
    /// `r(i, j)` at `[i * length + j]`, a row of the positions tensor.
    pub row_of: Vec<u32>,
    /// The positions tensor's first `hidden` columns are the position keys `Kp` (C2P).
    pub content_to_position: bool,
    /// Then (or first, without C2P) the position queries `Qp` (P2C).
    pub position_to_content: bool,
}

impl Relative {
    fn terms(&self) -> usize {
        usize::from(self.content_to_position) + usize::from(self.position_to_content)
    }
}

/// Keys further than `size` positions from the query are masked with `masked` (the dtype's
/// minimum).
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub size: usize,
    pub masked: f64,
}

/// What one attention call does, besides its differentiated inputs.
#[derive(Clone, Debug)]
pub struct PackedAttention {
    pub heads: usize,
    /// Multiplies the raw scores (and the relative terms).
    pub scale: f64,
    /// Additive key mask `[batch * length]`: 0 where attended, the dtype's minimum at padding.
    pub mask: Vec<f64>,
    pub window: Option<Window>,
    pub rotary: Option<Rotary>,
    pub relative: Option<Relative>,
    /// Dropout on the probabilities, if training: which of `[batch, heads, length, length]` are
    /// kept (the order [`layers::dropout`] draws in), and the factor of kept ones.
    ///
    /// [`layers::dropout`]: crate::model::layers::dropout
    pub keep: Option<(Vec<bool>, f64)>,
}

#[derive(Clone, Copy)]
struct Dimensions {
    batch: usize,
    length: usize,
    hidden: usize,
    heads: usize,
    head_size: usize,
    /// Rows of the positions tensor (0 without relative terms).
    position_rows: usize,
}

impl Dimensions {
    /// Offset of (example, position 0, head) of part 0 (queries), 1 (keys) or 2 (values) in the
    /// packed input, whose rows are `3 * hidden` long.
    fn packed(&self, example: usize, head: usize, part: usize) -> usize {
        example * self.length * 3 * self.hidden + part * self.hidden + head * self.head_size
    }

    /// Offset of (example, position 0, head) in the `[batch, length, hidden]` context.
    fn context(&self, example: usize, head: usize) -> usize {
        example * self.length * self.hidden + head * self.head_size
    }
}

/// A block's queries and keys (rotated), `[length, head_size]` each, and its relative scores
/// `C2P`, `P2C` `[length, position_rows]`.
struct BlockInputs<T> {
    queries: Vec<T>,
    keys: Vec<T>,
    content_to_position: Option<Vec<T>>,
    position_to_content: Option<Vec<T>>,
}

fn zeros<T: KernelFloat>(count: usize) -> Vec<T> {
    vec![T::from_f64(0.0); count]
}

impl PackedAttention {
    fn dimensions(&self, layout: &Layout, positions: Option<&Layout>) -> Result<Dimensions> {
        let (batch, length, packed) = layout.shape().dims3()?;
        if packed % 3 != 0 {
            bail!("packed attention: the last dimension ({packed}) is not queries, keys and values")
        }
        let hidden = packed / 3;
        if self.heads == 0 || hidden % self.heads != 0 {
            bail!(
                "packed attention: hidden size {hidden} is not a multiple of {} heads",
                self.heads
            )
        }
        let head_size = hidden / self.heads;
        if self.mask.len() != batch * length {
            bail!(
                "packed attention: the mask holds {} values for {batch} x {length}",
                self.mask.len()
            )
        }
        if let Some((kept, _)) = &self.keep
            && kept.len() != batch * self.heads * length * length
        {
            bail!(
                "packed attention: {} dropout mask values for {batch} x {} x {length} x {length}",
                kept.len(),
                self.heads
            )
        }
        if let Some(rotary) = &self.rotary
            && (!head_size.is_multiple_of(2)
                || rotary.cos.len() != length * head_size / 2
                || rotary.sin.len() != rotary.cos.len())
        {
            bail!(
                "packed attention: rotary tables do not fit {length} positions of head size {head_size}"
            )
        }
        let position_rows = match (&self.relative, positions) {
            (None, None) => 0,
            (Some(relative), Some(positions)) => {
                let (rows, columns) = positions.shape().dims2()?;
                if columns != relative.terms() * hidden {
                    bail!(
                        "packed attention: the positions tensor has {columns} columns for {} terms of {hidden}",
                        relative.terms()
                    )
                }
                if relative.row_of.len() != length * length
                    || relative.row_of.iter().any(|&row| row as usize >= rows)
                {
                    bail!(
                        "packed attention: relative rows do not fit {length} x {length} and {rows} rows"
                    )
                }
                rows
            }
            _ => bail!("packed attention: relative terms need a positions tensor and only then"),
        };
        Ok(Dimensions {
            batch,
            length,
            hidden,
            heads: self.heads,
            head_size,
            position_rows,
        })
    }

    fn keep_block(&self, dims: Dimensions, block: usize) -> Option<(&[bool], f64)> {
        let size = dims.length * dims.length;
        self.keep
            .as_ref()
            .map(|(kept, scale)| (&kept[block * size..(block + 1) * size], *scale))
    }

    /// The keys a tile of queries `rows` reads.
    fn keys_for(&self, dims: Dimensions, rows: &std::ops::Range<usize>) -> std::ops::Range<usize> {
        match self.window {
            None => 0..dims.length,
            Some(window) => {
                rows.start.saturating_sub(window.size)..(rows.end + window.size).min(dims.length)
            }
        }
    }

    /// Column offsets of the position keys and position queries in the positions tensor.
    fn position_columns(&self, dims: Dimensions) -> (Option<usize>, Option<usize>) {
        match &self.relative {
            None => (None, None),
            Some(relative) => {
                let keys = relative.content_to_position.then_some(0);
                let queries =
                    relative
                        .position_to_content
                        .then_some(if relative.content_to_position {
                            dims.hidden
                        } else {
                            0
                        });
                (keys, queries)
            }
        }
    }

    /// Copies a block's queries and keys out of the packed input, rotated, and computes its
    /// relative scores.
    fn block_inputs<T: KernelFloat>(
        &self,
        dims: Dimensions,
        packed: &[T],
        positions: &[T],
        example: usize,
        head: usize,
    ) -> BlockInputs<T> {
        let (length, d) = (dims.length, dims.head_size);
        let row = 3 * dims.hidden;
        let part = |which: usize| -> Vec<T> {
            let base = dims.packed(example, head, which);
            let mut out = zeros(length * d);
            for (position, target) in out.chunks_mut(d).enumerate() {
                let source = &packed[base + position * row..base + position * row + d];
                match &self.rotary {
                    None => target.copy_from_slice(source),
                    Some(rotary) => rotate_row(source, target, rotary, position, false),
                }
            }
            out
        };
        let queries = part(0);
        let keys = part(1);
        let rows = dims.position_rows;
        let columns = self.relative.as_ref().map_or(0, Relative::terms) * dims.hidden;
        let relative_scores = |content: &[T], offset: usize| -> Vec<T> {
            let mut scores = zeros(length * rows);
            // SAFETY: [length, d] content, the head's d columns of each of `rows` rows of the
            // positions tensor (checked shapes), into this call's own buffer.
            unsafe {
                block_product(
                    (length, rows, d),
                    (scores.as_mut_ptr(), rows as isize, 1),
                    (content.as_ptr(), d as isize, 1),
                    (
                        positions.as_ptr().add(offset + head * d),
                        1,
                        columns as isize,
                    ),
                    T::from_f64(1.0),
                );
            }
            scores
        };
        let (key_columns, query_columns) = self.position_columns(dims);
        let content_to_position = key_columns.map(|offset| relative_scores(&queries, offset));
        let position_to_content = query_columns.map(|offset| relative_scores(&keys, offset));
        BlockInputs {
            queries,
            keys,
            content_to_position,
            position_to_content,
        }
    }

    /// The probabilities of the queries `rows` over the keys `keys`, `[rows, keys]` row-major:
    /// softmax of the scores, each row's maximum and total in f64.
    fn tile_probabilities<T: KernelFloat>(
        &self,
        dims: Dimensions,
        inputs: &BlockInputs<T>,
        example: usize,
        rows: &std::ops::Range<usize>,
        keys: &std::ops::Range<usize>,
    ) -> Vec<T> {
        let (d, width) = (dims.head_size, keys.len());
        let mut p = zeros(rows.len() * width);
        // SAFETY: the tile's rows of the block's queries and keys, into this call's buffer.
        unsafe {
            block_product(
                (rows.len(), width, d),
                (p.as_mut_ptr(), width as isize, 1),
                (inputs.queries.as_ptr().add(rows.start * d), d as isize, 1),
                (inputs.keys.as_ptr().add(keys.start * d), 1, d as isize),
                T::from_f64(1.0),
            );
        }
        let mask = &self.mask[example * dims.length..(example + 1) * dims.length];
        let position_rows = dims.position_rows;
        for (offset, row) in p.chunks_mut(width).enumerate() {
            let query = rows.start + offset;
            let mut max = f64::NEG_INFINITY;
            for (column, value) in row.iter_mut().enumerate() {
                let key = keys.start + column;
                let mut raw = value.to_f64();
                if let Some(relative) = &self.relative {
                    let r = relative.row_of[query * dims.length + key] as usize;
                    if let Some(c2p) = &inputs.content_to_position {
                        raw += c2p[query * position_rows + r].to_f64();
                    }
                    if let Some(p2c) = &inputs.position_to_content {
                        raw += p2c[key * position_rows + r].to_f64();
                    }
                }
                let added = match self.window {
                    Some(window) if query.abs_diff(key) > window.size => window.masked,
                    _ => mask[key],
                };
                *value = T::from_f64(raw * self.scale + added);
                max = max.max(value.to_f64());
            }
            let mut total = 0.0;
            for value in row.iter_mut() {
                *value = T::from_f64(value.to_f64() - max).exp();
                total += value.to_f64();
            }
            let inverse = 1.0 / total;
            for value in row.iter_mut() {
                *value = T::from_f64(value.to_f64() * inverse);
            }
        }
        p
    }

    /// A tile's probabilities after dropout.
    fn tile_dropped<T: KernelFloat>(
        p: &[T],
        keep: Option<(&[bool], f64)>,
        length: usize,
        rows: &std::ops::Range<usize>,
        keys: &std::ops::Range<usize>,
    ) -> Vec<T> {
        match keep {
            None => p.to_vec(),
            Some((kept, scale)) => {
                let mut out = p.to_vec();
                for (offset, row) in out.chunks_mut(keys.len()).enumerate() {
                    let kept = &kept[(rows.start + offset) * length + keys.start..][..keys.len()];
                    for (value, &kept) in row.iter_mut().zip(kept) {
                        *value = with_dropout(*value, kept, scale);
                    }
                }
                out
            }
        }
    }

    fn tiles(length: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
        (0..length)
            .step_by(QUERY_TILE)
            .map(move |start| start..(start + QUERY_TILE).min(length))
    }

    /// Which queries of `example` have no real key in their window (only with a window): the
    /// masked softmax gives each the same weight to every key of the sequence (their scores are
    /// all the dtype's minimum), which a band of keys cannot, so they go as rows of their own
    /// over all keys.
    fn unattended(&self, dims: Dimensions, example: usize) -> Vec<bool> {
        let Some(window) = self.window else {
            return Vec::new();
        };
        let mask = &self.mask[example * dims.length..(example + 1) * dims.length];
        // real[j] = real keys among the first j.
        let mut real = vec![0usize; dims.length + 1];
        for (key, added) in mask.iter().enumerate() {
            real[key + 1] = real[key] + usize::from(*added == 0.0);
        }
        (0..dims.length)
            .map(|query| {
                let first = query.saturating_sub(window.size);
                let last = (query + window.size + 1).min(dims.length);
                real[last] == real[first]
            })
            .collect()
    }

    /// The tiles of a block: the query tiles over their keys, then each unattended query alone
    /// over every key; `true` where the tile's unattended rows are to be left out.
    fn block_tiles(
        &self,
        dims: Dimensions,
        unattended: &[bool],
    ) -> Vec<(std::ops::Range<usize>, std::ops::Range<usize>, bool)> {
        let mut tiles: Vec<_> = Self::tiles(dims.length)
            .map(|rows| {
                let keys = self.keys_for(dims, &rows);
                (rows, keys, !unattended.is_empty())
            })
            .collect();
        for (query, _) in unattended.iter().enumerate().filter(|(_, alone)| **alone) {
            tiles.push((query..query + 1, 0..dims.length, false));
        }
        tiles
    }

    fn forward<T: KernelFloat>(&self, dims: Dimensions, packed: &[T], positions: &[T]) -> Vec<T> {
        let mut output = zeros::<T>(dims.batch * dims.length * dims.hidden);
        let shared = SharedOutput(output.as_mut_ptr());
        let (hidden, row) = (dims.hidden as isize, 3 * dims.hidden as isize);
        for_row_ranges(dims.batch * dims.heads, |blocks| {
            for block in blocks {
                let (example, head) = (block / dims.heads, block % dims.heads);
                let inputs = self.block_inputs(dims, packed, positions, example, head);
                let keep = self.keep_block(dims, block);
                let values = dims.packed(example, head, 2);
                let unattended = self.unattended(dims, example);
                for (rows, keys, leave_out) in self.block_tiles(dims, &unattended) {
                    let mut p = self.tile_probabilities(dims, &inputs, example, &rows, &keys);
                    if leave_out {
                        clear_rows(&mut p, &rows, keys.len(), &unattended);
                    }
                    let dropped = Self::tile_dropped(&p, keep, dims.length, &rows, &keys);
                    // SAFETY: block (example, head) writes only its own head's columns of its
                    // own example's rows; blocks are disjoint; reads lie inside the buffers. A
                    // row left out of its tile (zero there) is written again by its own tile.
                    unsafe {
                        block_product(
                            (rows.len(), dims.head_size, keys.len()),
                            (
                                shared
                                    .pointer()
                                    .add(dims.context(example, head) + rows.start * dims.hidden),
                                hidden,
                                1,
                            ),
                            (dropped.as_ptr(), keys.len() as isize, 1),
                            (
                                packed.as_ptr().add(values + keys.start * 3 * dims.hidden),
                                row,
                                1,
                            ),
                            T::from_f64(1.0),
                        );
                    }
                }
            }
        });
        output
    }

    /// The gradients with respect to the packed input and the positions tensor.
    fn backward<T: KernelFloat>(
        &self,
        dims: Dimensions,
        packed: &[T],
        positions: &[T],
        d_output: &[T],
    ) -> (Vec<T>, Vec<T>) {
        let (length, d, position_rows) = (dims.length, dims.head_size, dims.position_rows);
        let blocks = dims.batch * dims.heads;
        let mut d_packed = zeros::<T>(dims.batch * length * 3 * dims.hidden);
        let d_packed_out = SharedOutput(d_packed.as_mut_ptr());
        // Each block's share of dKp and dQp, summed in a fixed order afterwards.
        let (key_columns, query_columns) = self.position_columns(dims);
        let partial_size = position_rows * d;
        let mut key_partials = zeros::<T>(key_columns.map_or(0, |_| blocks * partial_size));
        let mut query_partials = zeros::<T>(query_columns.map_or(0, |_| blocks * partial_size));
        let key_partials_out = SharedOutput(key_partials.as_mut_ptr());
        let query_partials_out = SharedOutput(query_partials.as_mut_ptr());
        let (hidden, row) = (dims.hidden as isize, 3 * dims.hidden as isize);
        let columns = self.relative.as_ref().map_or(0, Relative::terms) * dims.hidden;
        for_row_ranges(blocks, |range| {
            for block in range {
                let (example, head) = (block / dims.heads, block % dims.heads);
                let inputs = self.block_inputs(dims, packed, positions, example, head);
                let keep = self.keep_block(dims, block);
                let values = dims.packed(example, head, 2);
                let context = dims.context(example, head);
                let unattended = self.unattended(dims, example);
                let mut d_queries = zeros::<T>(length * d);
                let mut d_keys = zeros::<T>(length * d);
                let mut d_content_to_position =
                    zeros::<T>(inputs.content_to_position.as_ref().map_or(0, Vec::len));
                let mut d_position_to_content =
                    zeros::<T>(inputs.position_to_content.as_ref().map_or(0, Vec::len));
                for (rows, keys, leave_out) in self.block_tiles(dims, &unattended) {
                    let d_rows = &d_output[context + rows.start * dims.hidden..];
                    if !leave_out
                        && rows.len() == 1
                        && d_rows[..d].iter().all(|value| value.to_f64() == 0.0)
                    {
                        // An unattended query nothing reads: it adds nothing.
                        continue;
                    }
                    let width = keys.len();
                    let mut p = self.tile_probabilities(dims, &inputs, example, &rows, &keys);
                    if leave_out {
                        clear_rows(&mut p, &rows, width, &unattended);
                    }
                    let dropped = Self::tile_dropped(&p, keep, length, &rows, &keys);
                    let mut d_scores = zeros::<T>(rows.len() * width);
                    // SAFETY (all products in this block): reads inside the packed input, the
                    // output gradient, the positions tensor and this block's scratch; writes to
                    // this block's scratch, its own head's value columns of its own example's
                    // rows of d_packed, and its own partials; blocks are disjoint.
                    unsafe {
                        // dPd = dO v^T
                        block_product(
                            (rows.len(), width, d),
                            (d_scores.as_mut_ptr(), width as isize, 1),
                            (d_rows.as_ptr(), hidden, 1),
                            (
                                packed.as_ptr().add(values + keys.start * 3 * dims.hidden),
                                1,
                                row,
                            ),
                            T::from_f64(1.0),
                        );
                        // dv += Pd^T dO
                        block_product_into(
                            (width, d, rows.len()),
                            (
                                d_packed_out
                                    .pointer()
                                    .add(values + keys.start * 3 * dims.hidden),
                                row,
                                1,
                            ),
                            (dropped.as_ptr(), 1, width as isize),
                            (d_rows.as_ptr(), hidden, 1),
                            T::from_f64(1.0),
                            true,
                        );
                    }
                    // G = scale * P * (dP - rowsum(dP * P)), dP = dPd * keep (0 where P is).
                    for (offset, (d_row, p_row)) in
                        d_scores.chunks_mut(width).zip(p.chunks(width)).enumerate()
                    {
                        let kept = keep.map(|(kept, factor)| {
                            (
                                &kept[(rows.start + offset) * length + keys.start..][..width],
                                factor,
                            )
                        });
                        score_gradient(d_row, p_row, kept, self.scale);
                        if let Some(relative) = &self.relative {
                            let query = rows.start + offset;
                            for (column, value) in d_row.iter().enumerate() {
                                let key = keys.start + column;
                                let r = relative.row_of[query * length + key] as usize;
                                if !d_content_to_position.is_empty() {
                                    d_content_to_position[query * position_rows + r] += *value;
                                }
                                if !d_position_to_content.is_empty() {
                                    d_position_to_content[key * position_rows + r] += *value;
                                }
                            }
                        }
                    }
                    unsafe {
                        // dq += G k
                        block_product_into(
                            (rows.len(), d, width),
                            (d_queries.as_mut_ptr().add(rows.start * d), d as isize, 1),
                            (d_scores.as_ptr(), width as isize, 1),
                            (inputs.keys.as_ptr().add(keys.start * d), d as isize, 1),
                            T::from_f64(1.0),
                            true,
                        );
                        // dk += G^T q
                        block_product_into(
                            (width, d, rows.len()),
                            (d_keys.as_mut_ptr().add(keys.start * d), d as isize, 1),
                            (d_scores.as_ptr(), 1, width as isize),
                            (inputs.queries.as_ptr().add(rows.start * d), d as isize, 1),
                            T::from_f64(1.0),
                            true,
                        );
                    }
                }
                // The relative terms: dq += dC2P Kp, dKp = dC2P^T q; dk += dP2C Qp, dQp = dP2C^T k.
                let terms = [
                    (
                        key_columns,
                        &d_content_to_position,
                        &mut d_queries,
                        &inputs.queries,
                        &key_partials_out,
                    ),
                    (
                        query_columns,
                        &d_position_to_content,
                        &mut d_keys,
                        &inputs.keys,
                        &query_partials_out,
                    ),
                ];
                for (offset, d_relative, d_content, content, partials) in terms {
                    let Some(offset) = offset else { continue };
                    unsafe {
                        let table = positions.as_ptr().add(offset + head * d);
                        block_product_into(
                            (length, d, position_rows),
                            (d_content.as_mut_ptr(), d as isize, 1),
                            (d_relative.as_ptr(), position_rows as isize, 1),
                            (table, columns as isize, 1),
                            T::from_f64(1.0),
                            true,
                        );
                        block_product(
                            (position_rows, d, length),
                            (partials.pointer().add(block * partial_size), d as isize, 1),
                            (d_relative.as_ptr(), 1, position_rows as isize),
                            (content.as_ptr(), d as isize, 1),
                            T::from_f64(1.0),
                        );
                    }
                }
                // dq, dk back through the rotation into the packed gradient.
                for (which, gradient) in [(0, &d_queries), (1, &d_keys)] {
                    let base = dims.packed(example, head, which);
                    for (position, source) in gradient.chunks(d).enumerate() {
                        let start = base + position * 3 * dims.hidden;
                        // SAFETY: this block's own head's columns of its example's rows.
                        let target = unsafe { d_packed_out.slice(start..start + d) };
                        match &self.rotary {
                            None => target.copy_from_slice(source),
                            Some(rotary) => rotate_row(source, target, rotary, position, true),
                        }
                    }
                }
            }
        });
        // dKp and dQp: each head's columns, the examples summed in order.
        let mut d_positions = zeros::<T>(position_rows * columns);
        for (offset, partials) in [
            (key_columns, &key_partials),
            (query_columns, &query_partials),
        ] {
            let Some(offset) = offset else { continue };
            for block in 0..blocks {
                let head = block % dims.heads;
                let partial = &partials[block * partial_size..(block + 1) * partial_size];
                for (r, values) in partial.chunks(d).enumerate() {
                    let start = r * columns + offset + head * d;
                    for (target, value) in d_positions[start..start + d].iter_mut().zip(values) {
                        *target += *value;
                    }
                }
            }
        }
        (d_packed, d_positions)
    }
}

/// Zeroes the rows of a tile that go alone (`unattended`).
fn clear_rows<T: KernelFloat>(
    p: &mut [T],
    rows: &std::ops::Range<usize>,
    width: usize,
    unattended: &[bool],
) {
    for (offset, row) in p.chunks_mut(width).enumerate() {
        if unattended[rows.start + offset] {
            row.fill(T::from_f64(0.0));
        }
    }
}

/// One head's row rotated by `position`'s angles (`inverse`: by minus them, the transpose, for
/// the backward pass): `[x1, x2] -> [x1 c - x2 s, x2 c + x1 s]` over the halves.
fn rotate_row<T: KernelFloat>(
    source: &[T],
    target: &mut [T],
    rotary: &Rotary,
    position: usize,
    inverse: bool,
) {
    let half = source.len() / 2;
    let cos = &rotary.cos[position * half..(position + 1) * half];
    let sin = &rotary.sin[position * half..(position + 1) * half];
    let sign = if inverse { -1.0 } else { 1.0 };
    for index in 0..half {
        let (first, second) = (source[index].to_f64(), source[index + half].to_f64());
        let (c, s) = (cos[index], sign * sin[index]);
        target[index] = T::from_f64(first * c - second * s);
        target[index + half] = T::from_f64(second * c + first * s);
    }
}

/// The op without relative terms (one input).
struct PackedOp(PackedAttention);
/// The op with DeBERTa's relative terms (the packed input and the positions tensor).
struct PackedRelativeOp(PackedAttention);

impl CustomOp1 for PackedOp {
    fn name(&self) -> &'static str {
        "bertlab-packed-attention"
    }

    fn cpu_fwd(&self, packed: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = self.0.dimensions(layout, None)?;
        let storage = by_dtype!(packed.dtype(), "fused attention", T => T::wrap(self.0.forward::<T>(
            dims, storage_slice::<T>(packed, layout)?, &[],
        )));
        Ok((storage, Shape::from((dims.batch, dims.length, dims.hidden))))
    }

    fn bwd(&self, packed: &Tensor, _output: &Tensor, d_output: &Tensor) -> Result<Option<Tensor>> {
        let dims = self.0.dimensions(packed.layout(), None)?;
        let d_packed = by_dtype!(packed.dtype(), "fused attention", T => to_tensor(
            with_slice::<T, _>(packed, |packed_values| with_slice::<T, _>(d_output, |d_values| {
                Ok(self.0.backward(dims, packed_values, &[], d_values).0)
            }))?,
            packed,
        )?);
        Ok(Some(d_packed))
    }
}

impl CustomOp2 for PackedRelativeOp {
    fn name(&self) -> &'static str {
        "bertlab-relative-attention"
    }

    fn cpu_fwd(
        &self,
        packed: &CpuStorage,
        layout: &Layout,
        positions: &CpuStorage,
        positions_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = self.0.dimensions(layout, Some(positions_layout))?;
        let storage = by_dtype!(packed.dtype(), "fused attention", T => T::wrap(self.0.forward::<T>(
            dims,
            storage_slice::<T>(packed, layout)?,
            storage_slice::<T>(positions, positions_layout)?,
        )));
        Ok((storage, Shape::from((dims.batch, dims.length, dims.hidden))))
    }

    fn bwd(
        &self,
        packed: &Tensor,
        positions: &Tensor,
        _output: &Tensor,
        d_output: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dims = self
            .0
            .dimensions(packed.layout(), Some(positions.layout()))?;
        fn run<T: KernelFloat>(
            op: &PackedAttention,
            dims: Dimensions,
            [packed, positions, d_output]: [&Tensor; 3],
        ) -> Result<(Tensor, Tensor)> {
            let (d_packed, d_positions) = with_slice::<T, _>(packed, |packed_values| {
                with_slice::<T, _>(positions, |position_values| {
                    with_slice::<T, _>(d_output, |d_values| {
                        Ok(op.backward(dims, packed_values, position_values, d_values))
                    })
                })
            })?;
            Ok((
                to_tensor(d_packed, packed)?,
                to_tensor(d_positions, positions)?,
            ))
        }
        let (d_packed, d_positions) = by_dtype!(packed.dtype(), "fused attention", T =>
            run::<T>(&self.0, dims, [packed, positions, d_output])?);
        Ok((Some(d_packed), Some(d_positions)))
    }
}

/// Fused attention over `packed` `[batch, length, 3 * hidden]` (CPU, f32/f64), with the
/// rotary positions and window `settings` names; returns the context `[batch, length, hidden]`,
/// heads side by side. `settings.relative` must be `None` (see [`relative_attention`]).
pub fn packed_attention(packed: &Tensor, settings: PackedAttention) -> Result<Tensor> {
    if settings.relative.is_some() {
        bail!("packed attention with relative terms needs the positions tensor")
    }
    packed.contiguous()?.apply_op1(PackedOp(settings))
}

/// [`packed_attention`] with DeBERTa's relative terms: `positions` `[rows, terms * hidden]`, the
/// projected relative embeddings (position keys, then position queries, those present).
pub fn relative_attention(
    packed: &Tensor,
    positions: &Tensor,
    settings: PackedAttention,
) -> Result<Tensor> {
    packed
        .contiguous()?
        .apply_op2(&positions.contiguous()?, PackedRelativeOp(settings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::layers;
    use crate::model::modernbert::{rotary_tables, rotate};
    use crate::support::random::SeededRandom;
    use candle_core::{DType, Device, Var};

    fn random_tensor(shape: &[usize], seed: u64, dtype: DType) -> Tensor {
        let mut random = SeededRandom::new(seed, 0);
        let count: usize = shape.iter().product();
        let values: Vec<f64> = (0..count).map(|_| random.normal()).collect();
        Tensor::from_vec(values, shape, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
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

    fn worst_difference(a: &Tensor, b: &Tensor) -> f64 {
        let (a, b) = (values(a), values(b));
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    struct Case {
        batch: usize,
        length: usize,
        heads: usize,
        head_size: usize,
        /// Real tokens of the last example (the others have `length`).
        last_real: usize,
        window: Option<usize>,
        theta: Option<f64>,
        /// (content to position, position to content, rows of the positions tensor)
        relative: Option<(bool, bool, usize)>,
        dropout: f64,
    }

    /// The same attention from differentiable candle ops: heads split with transposes, rotary by
    /// `modernbert::rotate`, relative terms by products and gathers, the window and padding as one
    /// clamped additive mask, the composed softmax, dropout as a multiplied mask.
    fn composed(
        case: &Case,
        packed: &Tensor,
        positions: Option<&Tensor>,
        settings: &PackedAttention,
        dtype: DType,
    ) -> Tensor {
        let (b, l, h, d) = (case.batch, case.length, case.heads, case.head_size);
        let hidden = h * d;
        let device = Device::Cpu;
        let part = |which: usize| {
            packed
                .narrow(2, which * hidden, hidden)
                .unwrap()
                .reshape((b, l, h, d))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (mut q, mut k, v) = (part(0), part(1), part(2));
        if let Some(theta) = case.theta {
            let (cos, sin) = rotary_tables(l, d, theta, dtype, &device).unwrap();
            q = rotate(&q, &cos, &sin).unwrap();
            k = rotate(&k, &cos, &sin).unwrap();
        }
        let mut raw = q.matmul(&k.t().unwrap().contiguous().unwrap()).unwrap();
        if let (Some((c2p, p2c, rows)), Some(positions)) = (case.relative, positions) {
            let relative = settings.relative.as_ref().unwrap();
            let index: Vec<u32> = relative.row_of.clone();
            let index = Tensor::from_vec(index, (1, 1, l, l), &device)
                .unwrap()
                .broadcast_as((b, h, l, l))
                .unwrap()
                .contiguous()
                .unwrap();
            let transposed: Vec<u32> = (0..l * l)
                .map(|pair| relative.row_of[(pair % l) * l + pair / l])
                .collect();
            let transposed = Tensor::from_vec(transposed, (1, 1, l, l), &device)
                .unwrap()
                .broadcast_as((b, h, l, l))
                .unwrap()
                .contiguous()
                .unwrap();
            let table = |offset: usize| {
                positions
                    .narrow(1, offset, hidden)
                    .unwrap()
                    .reshape((rows, h, d))
                    .unwrap()
                    .transpose(0, 1)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap()
                    .contiguous()
                    .unwrap()
            };
            if c2p {
                let scores = q
                    .broadcast_matmul(&table(0).transpose(2, 3).unwrap())
                    .unwrap()
                    .contiguous()
                    .unwrap();
                raw = (raw + scores.gather(&index, 3).unwrap()).unwrap();
            }
            if p2c {
                let offset = if c2p { hidden } else { 0 };
                let scores = k
                    .broadcast_matmul(&table(offset).transpose(2, 3).unwrap())
                    .unwrap()
                    .contiguous()
                    .unwrap();
                raw = (raw
                    + scores
                        .gather(&transposed, 3)
                        .unwrap()
                        .transpose(2, 3)
                        .unwrap())
                .unwrap();
            }
        }
        let mut mask = vec![0.0; b * l * l];
        for example in 0..b {
            for i in 0..l {
                for j in 0..l {
                    let outside = case.window.is_some_and(|w| i.abs_diff(j) > w);
                    mask[(example * l + i) * l + j] = if outside {
                        settings.window.unwrap().masked
                    } else {
                        settings.mask[example * l + j]
                    };
                }
            }
        }
        let mask = Tensor::from_vec(mask, (b, 1, l, l), &device)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let scores = (raw * settings.scale)
            .unwrap()
            .broadcast_add(&mask)
            .unwrap();
        let mut probabilities = layers::softmax(&scores, layers::Kernels::Composed).unwrap();
        if let Some((kept, scale)) = &settings.keep {
            let keep: Vec<f64> = kept
                .iter()
                .map(|&kept| if kept { *scale } else { 0.0 })
                .collect();
            let keep = Tensor::from_vec(keep, (b, h, l, l), &device)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            probabilities = (probabilities * keep).unwrap();
        }
        probabilities
            .matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((b, l, hidden))
            .unwrap()
    }

    /// The fused op against the composed form: the context at every position, and the gradients
    /// of a weighted sum of it with respect to the packed input and the positions tensor.
    fn check(case: Case) {
        for dtype in [DType::F64, DType::F32] {
            let (b, l, h, d) = (case.batch, case.length, case.heads, case.head_size);
            let hidden = h * d;
            let minimum = if dtype == DType::F64 {
                f64::MIN
            } else {
                f32::MIN as f64
            };
            let real =
                |example: usize, position: usize| example + 1 < b || position < case.last_real;
            let mask: Vec<f64> = (0..b * l)
                .map(|index| {
                    if real(index / l, index % l) {
                        0.0
                    } else {
                        minimum
                    }
                })
                .collect();
            let relative = case.relative.map(|(c2p, p2c, rows)| {
                // Rows as DeBERTa reads them: the clamped distance, shifted into [0, rows).
                let row_of = (0..l * l)
                    .map(|pair| {
                        let distance = (pair / l) as i64 - (pair % l) as i64;
                        (distance + rows as i64 / 2).clamp(0, rows as i64 - 1) as u32
                    })
                    .collect();
                Relative {
                    row_of,
                    content_to_position: c2p,
                    position_to_content: p2c,
                }
            });
            let keep = (case.dropout > 0.0).then(|| {
                layers::dropout_mask(
                    b * h * l * l,
                    case.dropout,
                    dtype,
                    &mut SeededRandom::for_dropout(3, 0),
                )
            });
            let settings = PackedAttention {
                heads: h,
                scale: 1.0 / (d as f64).sqrt(),
                mask,
                window: case.window.map(|size| Window {
                    size,
                    masked: minimum,
                }),
                rotary: case.theta.map(|theta| Rotary::new(l, d, theta)),
                relative,
                keep,
            };
            let packed = Var::from_tensor(&random_tensor(&[b, l, 3 * hidden], 21, dtype)).unwrap();
            let positions = case.relative.map(|(c2p, p2c, rows)| {
                let terms = usize::from(c2p) + usize::from(p2c);
                Var::from_tensor(&random_tensor(&[rows, terms * hidden], 22, dtype)).unwrap()
            });
            let fused = match &positions {
                None => packed_attention(packed.as_tensor(), settings.clone()).unwrap(),
                Some(positions) => {
                    relative_attention(packed.as_tensor(), positions.as_tensor(), settings.clone())
                        .unwrap()
                }
            };
            let reference = composed(
                &case,
                packed.as_tensor(),
                positions.as_ref().map(Var::as_tensor),
                &settings,
                dtype,
            );
            // Every position read, padding too (a padding query with only padding in its
            // window goes alone over all keys, in both passes).
            let readout: Vec<f64> = (0..b * l * hidden)
                .map(|index| ((index * 7919) % 13) as f64 / 6.0 - 1.0)
                .collect();
            let readout = Tensor::from_vec(readout, (b, l, hidden), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let tolerance = if dtype == DType::F64 { 1e-11 } else { 2e-5 };
            let (fused_read, reference_read) = (
                (&fused * &readout).unwrap(),
                (&reference * &readout).unwrap(),
            );
            let worst = worst_difference(&fused_read, &reference_read);
            assert!(worst < tolerance, "{dtype:?} context differs by {worst:e}");
            let fused_gradients = fused_read.sum_all().unwrap().backward().unwrap();
            let reference_gradients = reference_read.sum_all().unwrap().backward().unwrap();
            let mut inputs = vec![("packed", &packed)];
            if let Some(positions) = &positions {
                inputs.push(("positions", positions));
            }
            for (name, input) in inputs {
                let a = fused_gradients.get(input.as_tensor()).unwrap();
                let e = reference_gradients.get(input.as_tensor()).unwrap();
                assert!(values(e).iter().filter(|v| **v != 0.0).count() > values(e).len() / 2);
                let worst = worst_difference(a, e);
                assert!(
                    worst < tolerance * 10.0,
                    "{dtype:?} gradient of {name} differs by {worst:e}"
                );
            }
        }
    }

    /// ModernBERT's local layer: rotary positions and a window much shorter than the sequence,
    /// which spans three query tiles; the last example padded.
    #[test]
    fn rotary_sliding_window_attention_matches_the_composed_form() {
        check(Case {
            batch: 2,
            length: 2 * QUERY_TILE + 11,
            heads: 2,
            head_size: 6,
            last_real: QUERY_TILE + 20,
            window: Some(9),
            theta: Some(10_000.0),
            relative: None,
            dropout: 0.0,
        });
    }

    /// ModernBERT's global layer with attention dropout.
    #[test]
    fn rotary_global_attention_with_dropout_matches_the_composed_form() {
        check(Case {
            batch: 2,
            length: QUERY_TILE + 5,
            heads: 3,
            head_size: 4,
            last_real: 30,
            window: None,
            theta: Some(160_000.0),
            relative: None,
            dropout: 0.2,
        });
    }

    /// DeBERTa: both relative terms, fewer relative rows than distances (clamped), dropout.
    #[test]
    fn relative_attention_matches_the_composed_form() {
        check(Case {
            batch: 2,
            length: QUERY_TILE + 9,
            heads: 2,
            head_size: 4,
            last_real: 40,
            window: None,
            theta: None,
            relative: Some((true, true, 33)),
            dropout: 0.1,
        });
    }

    /// DeBERTa with position-to-content only (`pos_att_type = ["p2c"]`).
    #[test]
    fn position_to_content_alone_matches_the_composed_form() {
        check(Case {
            batch: 1,
            length: 12,
            heads: 2,
            head_size: 3,
            last_real: 12,
            window: None,
            theta: None,
            relative: Some((false, true, 7)),
            dropout: 0.0,
        });
    }

    #[test]
    fn misfitting_inputs_are_refused() {
        let settings = PackedAttention {
            heads: 2,
            scale: 1.0,
            mask: vec![0.0; 6],
            window: None,
            rotary: None,
            relative: None,
            keep: None,
        };
        let packed = random_tensor(&[2, 3, 12], 1, DType::F32);
        assert!(packed_attention(&packed, settings.clone()).is_ok());
        let wrong = random_tensor(&[2, 3, 10], 1, DType::F32);
        assert!(packed_attention(&wrong, settings.clone()).is_err());
        let short_mask = PackedAttention {
            mask: vec![0.0; 5],
            ..settings.clone()
        };
        assert!(packed_attention(&packed, short_mask).is_err());
        let with_relative = PackedAttention {
            relative: Some(Relative {
                row_of: vec![0; 9],
                content_to_position: true,
                position_to_content: false,
            }),
            ..settings
        };
        assert!(packed_attention(&packed, with_relative.clone()).is_err());
        let positions = random_tensor(&[1, 3], 2, DType::F32);
        assert!(relative_attention(&packed, &positions, with_relative).is_err());
    }
}
