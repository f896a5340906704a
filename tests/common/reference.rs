//! Reading the reference values transformers wrote (`scripts/make_fixtures.py`) and comparing
//! bertlab's tensors with them.

use std::path::{Path, PathBuf};

use bertlab::model::layers::cross_entropy;
use bertlab::model::{Batch, EncoderClassifier, Mode};
use bertlab::support::random::SeededRandom;
use candle_core::{DType, Tensor};
use serde_json::Value;

/// The families beside BERT with tiny fixtures (`tests/fixtures/tiny-NAME`), by fixture name:
/// `model_type`, except DeBERTa's two settings (`deberta-v3`: shared keys, log buckets, no
/// absolute positions, the hub's `pytorch_model.bin`; `deberta-v2`: own position projections,
/// clamped distances, absolute positions, token types, an embedding projection), both
/// `model_type = "deberta-v2"`; ModernBERT's two (`modernbert`: 3 layers, global-local-global,
/// a window of 8, the first token; `modernbert-mean`: mean pooling and every bias).
pub const FAMILIES: [&str; 8] = [
    "distilbert",
    "roberta",
    "xlm-roberta",
    "electra",
    "deberta-v2",
    "deberta-v3",
    "modernbert",
    "modernbert-mean",
];

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

/// `steps` steps of plain gradient descent (rate 0.05, dropout masks from seed 3) on one batch:
/// the evaluation loss before and after.
pub fn gradient_descent(
    model: &EncoderClassifier,
    batch: &Batch,
    labels: &Tensor,
    steps: u64,
) -> (f32, f32) {
    let eval_loss = || {
        let logits = model.forward(batch, &mut Mode::Eval).unwrap();
        cross_entropy(&logits, labels, None)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    let first = eval_loss();
    for step in 0..steps {
        let mut random = SeededRandom::for_dropout(3, step);
        let logits = model.forward(batch, &mut Mode::Train(&mut random)).unwrap();
        let gradients = cross_entropy(&logits, labels, None)
            .unwrap()
            .backward()
            .unwrap();
        for (_, var) in model.parameters() {
            let gradient = gradients.get(var.as_tensor()).unwrap();
            var.set(&(var.as_tensor() - (gradient * 0.05).unwrap()).unwrap())
                .unwrap();
        }
    }
    (first, eval_loss())
}
