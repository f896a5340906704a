//! Using a finished run: its `model/` directory loaded as a classifier, texts tokenized as in
//! training (the run's `max_length`), batched by length, and each text's predicted label with one
//! probability per class. Readers for input files and writers for CSV and JSON Lines output.

use std::path::Path;

use anyhow::{Context, bail};
use candle_core::{DType, Device};
use serde_json::{Map, Value, json};

use crate::model::checkpoint;
use crate::model::encoder::EncoderClassifier;
use crate::model::layers::Precision;
use crate::plan::spec::DataFormat;
use crate::store::run_files::MODEL_DIRECTORY;
use crate::tokenize::tokenizer::{self, LoadedTokenizer};

/// A run's model, ready to predict.
pub struct Predictor {
    model: EncoderClassifier,
    tokenizer: LoadedTokenizer,
    pub classes: Vec<String>,
    pub max_length: usize,
}

/// One text's prediction.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub class: u32,
    pub probabilities: Vec<f32>,
}

impl Predictor {
    /// Loads `run_directory/model` and the run's `max_length` from its `spec.json`.
    pub fn load(run_directory: &Path) -> anyhow::Result<Predictor> {
        let model_directory = run_directory.join(MODEL_DIRECTORY);
        if !model_directory.join("config.json").is_file() {
            bail!(
                "{} has no model: the run is not done (see `bertlab show`)",
                run_directory.display()
            );
        }
        let spec: Value = serde_json::from_slice(
            &std::fs::read(run_directory.join(crate::store::SPEC_FILE))
                .with_context(|| format!("cannot read the spec of {}", run_directory.display()))?,
        )?;
        let max_length = spec["train"]["max_length"]
            .as_u64()
            .context("spec.json has no train.max_length")? as usize;
        let (mut model, _) =
            checkpoint::load_classifier(&model_directory, None, 0, DType::F32, &Device::Cpu)?;
        // The run's matrix-product arithmetic (absent from specs older than it: fp32). A bf16
        // run predicts in fp32 on a CPU without AVX512-BF16 (its weights are f32 either way).
        let precision = match spec["train"]["precision"].as_str() {
            None | Some("fp32") => Precision::Fp32,
            Some("bf16") if crate::model::bf16::available() => Precision::Bf16,
            Some("bf16") => {
                eprintln!(
                    "note: the run trained with bf16 matrix products; this CPU lacks AVX512-BF16, so it predicts in fp32 (results may differ in the last digits)"
                );
                Precision::Fp32
            }
            Some(other) => bail!("spec.json has an unknown train.precision {other:?}"),
        };
        model.precision = precision;
        let classes = checkpoint::labels_of(model.config())
            .with_context(|| format!("{} has no id2label", model_directory.display()))?;
        let tokenizer = tokenizer::load(&model_directory)?;
        Ok(Predictor {
            model,
            tokenizer,
            classes,
            max_length,
        })
    }

    /// Predicts every text, `batch_size` texts of similar length per forward pass (as
    /// training evaluates); results in the order of `texts`.
    pub fn predict(&self, texts: &[&str], batch_size: usize) -> anyhow::Result<Vec<Prediction>> {
        let ids = tokenizer::encode_all(&self.tokenizer, texts, self.max_length)?;
        let scored = crate::train::evaluation::score(
            &self.model,
            &ids,
            self.tokenizer.pad_id,
            batch_size,
            None,
        )?
        .expect("no interrupt flag");
        Ok(scored
            .iter()
            .map(|scored| Prediction {
                class: scored.class,
                probabilities: scored.probabilities(),
            })
            .collect())
    }
}

/// The texts of one column of a data file (format from its extension).
pub fn read_texts(path: &Path, column: &str) -> anyhow::Result<Vec<String>> {
    let format = path
        .extension()
        .and_then(|extension| DataFormat::from_extension(&extension.to_string_lossy()))
        .with_context(|| {
            format!(
                "{}: cannot tell the format from the extension; use .csv, .tsv, .jsonl or .parquet",
                path.display()
            )
        })?;
    let text = match format {
        DataFormat::Parquet => None,
        _ => Some(
            String::from_utf8_lossy(
                &std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
            )
            .into_owned(),
        ),
    };
    let frame = crate::data::read::read_frame(path, format, text.as_deref())
        .map_err(|message| anyhow::anyhow!("{}: {message}", path.display()))?;
    let names: Vec<String> = frame
        .get_column_names()
        .iter()
        .map(|name| name.to_string())
        .collect();
    let values = frame.column(column).map_err(|_| {
        anyhow::anyhow!(
            "{} has no column `{column}`; its columns are {}; choose one with --text-column",
            path.display(),
            names.join(", ")
        )
    })?;
    let values = values.cast(&polars::prelude::DataType::String)?;
    Ok(values
        .str()?
        .iter()
        .map(|value| value.unwrap_or("").to_string())
        .collect())
}

/// Predictions as CSV: `text, predicted, probability_<class>...`.
pub fn predictions_csv(
    texts: &[String],
    classes: &[String],
    predictions: &[Prediction],
) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["text".to_string(), "predicted".to_string()];
    header.extend(classes.iter().map(|class| format!("probability_{class}")));
    writer.write_record(&header).expect("writing to memory");
    for (text, prediction) in texts.iter().zip(predictions) {
        let mut record = vec![text.clone(), classes[prediction.class as usize].clone()];
        record.extend(prediction.probabilities.iter().map(|p| p.to_string()));
        writer.write_record(&record).expect("writing to memory");
    }
    writer.into_inner().expect("writing to memory")
}

/// Predictions as JSON Lines: `{"text", "predicted", "probabilities": {class: p}}`.
pub fn predictions_jsonl(
    texts: &[String],
    classes: &[String],
    predictions: &[Prediction],
) -> Vec<u8> {
    let mut out = Vec::new();
    for (text, prediction) in texts.iter().zip(predictions) {
        let probabilities: Map<String, Value> = classes
            .iter()
            .zip(&prediction.probabilities)
            .map(|(class, p)| (class.clone(), json!(p)))
            .collect();
        let line = json!({
            "text": text,
            "predicted": classes[prediction.class as usize],
            "probabilities": probabilities,
        });
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}
