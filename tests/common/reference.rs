//! Reading the reference values transformers wrote (`scripts/make_fixtures.py`) and comparing
//! bertlab's tensors with them.

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use serde_json::Value;

/// `tests/fixtures/`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A JSON array of arrays of token ids.
pub fn rows_u32(value: &Value) -> Vec<Vec<u32>> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

/// Every number of a (nested) JSON array, flattened.
pub fn floats(value: &Value) -> Vec<f64> {
    match value {
        Value::Array(items) => items.iter().flat_map(floats).collect(),
        Value::Number(number) => vec![number.as_f64().unwrap()],
        other => panic!("not a number: {other}"),
    }
}

/// The largest absolute difference of two equally long lists.
pub fn max_difference(actual: &[f64], expected: &[f64]) -> f64 {
    assert_eq!(actual.len(), expected.len());
    actual
        .iter()
        .zip(expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}

/// A tensor's values as f64, flattened.
pub fn to_f64(tensor: &Tensor) -> Vec<f64> {
    tensor
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}
