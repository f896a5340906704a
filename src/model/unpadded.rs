//! A batch's real tokens as rows without padding: the encoder's row-wise work (the dense layers,
//! LayerNorm, GELU, residual adds, dropout) over the real tokens only, the attention over the
//! padded `[batch, length]` layout it needs.
//!
//! A batch of tweets padded to its longest is 30-45% padding; every dense layer computes those
//! rows and the classifier never reads them. [`RealRows`] lists the real tokens' rows of the
//! flattened `[batch * length]` layout; [`RealRows::gather`] takes them out (`[tokens, width]`),
//! [`RealRows::scatter`] puts rows back with zeros at padding (for the attention), both
//! differentiable (each one's backward pass is the other). A row's values do not depend on the
//! rows beside it, so the real rows come out as they do padded, and [`RealRows::dropout`] draws
//! the padded batch's masks (the same draws in the same order) and keeps the real rows' part:
//! a training step's randomness is the padded step's.
//!
//! Padding at a batch's first position (left padding) would leave the classifier's token out:
//! such a batch, and one without padding, gets no [`RealRows`] and runs padded.
//!
//! The same rows serve the last layer: past its attention a classifier needs each example's
//! first token only ([`RealRows::first_tokens`]), so its query, output and feed-forward products
//! cover `batch` rows, not `batch x length`.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor, bail};

use crate::model::layers;
use crate::support::random::SeededRandom;

/// The real tokens of a `[batch, length]` batch as rows of its flattened layout.
#[derive(Clone, Debug)]
pub struct RealRows {
    /// Row of the padded layout for each real token, in order (`[tokens]`, u32).
    index: Tensor,
    rows: Vec<usize>,
    /// `batch * length`.
    padded_rows: usize,
}

impl RealRows {
    /// The real rows of `attention_mask` (`[batch, length]`, 1 for real tokens), or `None` where
    /// there is no padding or an example starts with padding (see the module's note).
    pub fn of(attention_mask: &Tensor) -> Result<Option<RealRows>> {
        let (batch, length) = attention_mask.dims2()?;
        let mask = attention_mask
            .to_dtype(DType::U32)?
            .flatten_all()?
            .to_vec1::<u32>()?;
        let rows: Vec<usize> = (0..batch * length).filter(|&row| mask[row] != 0).collect();
        let starts_real = (0..batch).all(|example| mask[example * length] != 0);
        if rows.len() == batch * length || !starts_real {
            return Ok(None);
        }
        RealRows::from_rows(rows, batch * length, attention_mask.device()).map(Some)
    }

    /// `rows` (ascending) of a padded layout of `padded_rows` rows.
    fn from_rows(rows: Vec<usize>, padded_rows: usize, device: &Device) -> Result<RealRows> {
        let index = Tensor::from_vec(
            rows.iter().map(|&row| row as u32).collect::<Vec<u32>>(),
            rows.len(),
            device,
        )?;
        Ok(RealRows {
            index,
            rows,
            padded_rows,
        })
    }

    /// Each example's first token (`batch` examples of `length` positions): the rows a
    /// classifier's last layer needs past its attention.
    pub fn first_tokens(batch: usize, length: usize, device: &Device) -> Result<RealRows> {
        let rows = (0..batch).map(|example| example * length).collect();
        RealRows::from_rows(rows, batch * length, device)
    }

    /// Where these rows sit among `layout`'s rows (`None`: the padded layout), as a u32 index
    /// for `index_select`. Fails for a row `layout` lacks.
    pub fn positions_in(&self, layout: Option<&RealRows>) -> Result<Tensor> {
        let Some(layout) = layout else {
            return Ok(self.index.clone());
        };
        let positions = self
            .rows
            .iter()
            .map(|row| match layout.rows.binary_search(row) {
                Ok(position) => Ok(position as u32),
                Err(_) => bail!("row {row} is padding in this layout"),
            })
            .collect::<Result<Vec<u32>>>()?;
        Tensor::from_vec(positions, self.rows.len(), self.index.device())
    }

    /// Real tokens.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the batch has no real token.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// `[batch, length, width]` (or `[batch * length, width]`) -> `[tokens, width]`.
    pub fn gather(&self, x: &Tensor) -> Result<Tensor> {
        let width = x.dim(candle_core::D::Minus1)?;
        x.reshape((self.padded_rows, width))?
            .index_select(&self.index, 0)
    }

    /// `[tokens, width]` -> `[batch * length, width]`, zeros at padding. Its backward pass
    /// gathers the real rows of the gradient.
    pub fn scatter(&self, x: &Tensor) -> Result<Tensor> {
        x.apply_op1(Scatter { real: self.clone() })
    }

    /// Dropout with rate `p` on `x` (`[tokens, width]`): the masks the padded
    /// `[batch * length, width]` tensor would draw, their real rows applied.
    pub fn dropout(&self, x: &Tensor, p: f64, random: &mut SeededRandom) -> Result<Tensor> {
        if p <= 0.0 {
            return Ok(x.clone());
        }
        if !x.device().is_cpu() {
            bail!("unpadded rows run on the CPU only")
        }
        let width = x.dim(candle_core::D::Minus1)?;
        let (kept, scale) = layers::dropout_mask(self.padded_rows * width, p, x.dtype(), random);
        let mask = if x.dtype() == DType::F64 {
            let values = self.real_part(&kept, width, scale, 0.0);
            Tensor::from_vec(values, x.shape(), x.device())?
        } else {
            let values = self.real_part(&kept, width, scale as f32, 0.0);
            Tensor::from_vec(values, x.shape(), x.device())?.to_dtype(x.dtype())?
        };
        x.mul(&mask)
    }
}

impl RealRows {
    /// The real rows of a padded `[batch * length, width]` keep mask, as `on` and `off` values.
    fn real_part<T: Copy>(&self, kept: &[bool], width: usize, on: T, off: T) -> Vec<T> {
        let mut values = Vec::with_capacity(self.rows.len() * width);
        for &row in &self.rows {
            let line = &kept[row * width..(row + 1) * width];
            values.extend(line.iter().map(|&keep| if keep { on } else { off }));
        }
        values
    }
}

/// [`RealRows::scatter`] as a differentiable op.
struct Scatter {
    real: RealRows,
}

/// `values`' rows placed at `rows` of a `padded x width` layout, zeros elsewhere, in one pass.
/// `rows` ascend, as [`RealRows`] lists them; a row out of order or out of range is an error.
fn scattered<T: Copy + Default>(
    values: &[T],
    rows: &[usize],
    padded: usize,
    width: usize,
) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(padded * width);
    let mut sources = values.chunks_exact(width).zip(rows).peekable();
    for row in 0..padded {
        match sources.next_if(|(_, real)| **real == row) {
            Some((source, _)) => out.extend_from_slice(source),
            None => out.resize(out.len() + width, T::default()),
        }
    }
    if let Some((_, row)) = sources.next() {
        bail!("scatter rows: row {row} is out of order or past {padded} rows")
    }
    Ok(out)
}

impl CustomOp1 for Scatter {
    fn name(&self) -> &'static str {
        "bertlab-scatter-rows"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let [tokens, width] = layout.dims() else {
            bail!(
                "scatter rows: the input must be [tokens, width], got {:?}",
                layout.dims()
            )
        };
        let (tokens, width) = (*tokens, *width);
        if tokens != self.real.rows.len() {
            bail!(
                "scatter rows: {tokens} rows for {} real tokens",
                self.real.rows.len()
            )
        }
        let Some((start, end)) = layout.contiguous_offsets() else {
            bail!("scatter rows: the input must be contiguous")
        };
        let (rows, padded) = (&self.real.rows, self.real.padded_rows);
        let out = match storage {
            CpuStorage::F32(values) => {
                CpuStorage::F32(scattered(&values[start..end], rows, padded, width)?)
            }
            CpuStorage::F64(values) => {
                CpuStorage::F64(scattered(&values[start..end], rows, padded, width)?)
            }
            other => bail!("scatter rows: f32 or f64 only, got {:?}", other.dtype()),
        };
        Ok((out, Shape::from((padded, width))))
    }

    fn bwd(&self, _x: &Tensor, _output: &Tensor, d_output: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.real.gather(d_output)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows go where `rows` says, zeros elsewhere; rows out of order or out of range are refused
    /// instead of dropped.
    #[test]
    fn scattered_rows_land_in_place_and_misordered_rows_are_refused() {
        let values = [1.0f32, 2.0, 3.0, 4.0];
        let out = scattered(&values, &[1, 3], 4, 2).unwrap();
        assert_eq!(out, [0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 3.0, 4.0]);
        assert!(scattered(&values, &[3, 1], 4, 2).is_err());
        assert!(scattered(&values, &[1, 4], 4, 2).is_err());
    }
    use candle_core::Var;

    fn mask(rows: &[&[u32]]) -> Tensor {
        let length = rows[0].len();
        let flat: Vec<u32> = rows.iter().flat_map(|row| row.iter().copied()).collect();
        Tensor::from_vec(flat, (rows.len(), length), &Device::Cpu).unwrap()
    }

    #[test]
    fn real_rows_skip_padding_and_refuse_what_must_run_padded() {
        let real = RealRows::of(&mask(&[&[1, 1, 1], &[1, 0, 0]]))
            .unwrap()
            .unwrap();
        assert_eq!(real.rows, vec![0, 1, 2, 3]);
        assert_eq!(real.len(), 4);
        // No padding: nothing to skip.
        assert!(RealRows::of(&mask(&[&[1, 1], &[1, 1]])).unwrap().is_none());
        // Left padding: the first token (the classifier's) would be lost.
        assert!(RealRows::of(&mask(&[&[1, 1], &[0, 1]])).unwrap().is_none());
    }

    #[test]
    fn first_tokens_are_found_among_the_real_rows() {
        let real = RealRows::of(&mask(&[&[1, 1, 0], &[1, 0, 0], &[1, 1, 1]]))
            .unwrap()
            .unwrap();
        let first = RealRows::first_tokens(3, 3, &Device::Cpu).unwrap();
        assert_eq!(first.rows, vec![0, 3, 6]);
        let within = |layout| {
            first
                .positions_in(layout)
                .unwrap()
                .to_vec1::<u32>()
                .unwrap()
        };
        assert_eq!(within(Some(&real)), vec![0, 2, 3]);
        assert_eq!(within(None), vec![0, 3, 6]);
        // A row the layout lacks is an error, not a wrong row.
        let padding = RealRows {
            index: Tensor::new(&[1u32], &Device::Cpu).unwrap(),
            rows: vec![2],
            padded_rows: 9,
        };
        assert!(padding.positions_in(Some(&real)).is_err());
    }

    #[test]
    fn scatter_puts_rows_back_and_both_directions_have_gradients() {
        let real = RealRows::of(&mask(&[&[1, 0], &[1, 1]])).unwrap().unwrap();
        let padded = Var::from_vec(
            (0..8).map(|v| v as f64).collect::<Vec<f64>>(),
            (2, 2, 2),
            &Device::Cpu,
        )
        .unwrap();
        let gathered = real.gather(padded.as_tensor()).unwrap();
        assert_eq!(
            gathered.to_vec2::<f64>().unwrap(),
            vec![vec![0.0, 1.0], vec![4.0, 5.0], vec![6.0, 7.0]]
        );
        let back = real.scatter(&gathered).unwrap();
        assert_eq!(
            back.to_vec2::<f64>().unwrap(),
            vec![
                vec![0.0, 1.0],
                vec![0.0, 0.0],
                vec![4.0, 5.0],
                vec![6.0, 7.0]
            ]
        );
        // d/dx of sum(w * scatter(gather(x))): w at the real rows, 0 at padding.
        let weights = Tensor::from_vec(
            (1..=8).map(|v| v as f64).collect::<Vec<f64>>(),
            (4, 2),
            &Device::Cpu,
        )
        .unwrap();
        let loss = (back * weights).unwrap().sum_all().unwrap();
        let gradients = loss.backward().unwrap();
        let gradient = gradients.get(padded.as_tensor()).unwrap();
        assert_eq!(
            gradient.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
            vec![1.0, 2.0, 0.0, 0.0, 5.0, 6.0, 7.0, 8.0]
        );
    }

    #[test]
    fn dropout_draws_the_padded_masks() {
        let real = RealRows::of(&mask(&[&[1, 1, 0], &[1, 0, 0]]))
            .unwrap()
            .unwrap();
        let padded = Tensor::ones((6, 4), DType::F32, &Device::Cpu).unwrap();
        let whole = layers::dropout(&padded, 0.5, &mut SeededRandom::new(7, 0)).unwrap();
        let rows = real.gather(&padded).unwrap();
        let dropped = real
            .dropout(&rows, 0.5, &mut SeededRandom::new(7, 0))
            .unwrap();
        assert_eq!(
            dropped.to_vec2::<f32>().unwrap(),
            real.gather(&whole).unwrap().to_vec2::<f32>().unwrap()
        );
        let kept: f32 = dropped.sum_all().unwrap().to_scalar().unwrap();
        assert!(kept > 0.0 && kept < 24.0, "{kept}");
    }
}
