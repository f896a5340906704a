//! Using a finished run: its `model/` directory loaded as a classifier, texts (or pairs)
//! tokenized as in training (the run's `max_length`), batched by length, and each text's
//! predicted label with one probability per class; for a multi-label run, the set of classes at
//! or above its `threshold`, with a sigmoid per class. Readers for input files and writers for
//! CSV and JSON Lines output.

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
    /// The run's `data.text_pair_column`: the model reads pairs.
    pub text_pair_column: Option<String>,
    /// Multi-label: the run's `train.threshold` (`None`: one label per text).
    pub threshold: Option<f64>,
    /// The run's `data.label_separator`, which joins a predicted label set.
    pub label_separator: String,
}

/// One text's prediction.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// The predicted class (single-label: exactly one; multi-label: the set, maybe empty).
    pub predicted: Vec<u32>,
    /// Softmax probabilities, or one sigmoid per class (multi-label).
    pub probabilities: Vec<f32>,
}

impl Prediction {
    /// The predicted class names (a set joined by `separator`).
    pub fn names(&self, classes: &[String], separator: &str) -> String {
        crate::metrics::join_classes(&self.predicted, classes, separator)
    }
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
        let multi_label = spec["data"]["label_format"].as_str() == Some("multi")
            || model
                .config()
                .written
                .get("problem_type")
                .and_then(Value::as_str)
                == Some(checkpoint::MULTI_LABEL_PROBLEM);
        Ok(Predictor {
            model,
            tokenizer,
            classes,
            max_length,
            text_pair_column: spec["data"]["text_pair_column"]
                .as_str()
                .map(str::to_string),
            threshold: multi_label.then(|| {
                spec["train"]["threshold"]
                    .as_f64()
                    .unwrap_or(crate::plan::spec::DEFAULT_THRESHOLD)
            }),
            label_separator: spec["data"]["label_separator"]
                .as_str()
                .unwrap_or(crate::plan::spec::DEFAULT_LABEL_SEPARATOR)
                .to_string(),
        })
    }

    /// Predicts every text (with its second text for a pair model), `batch_size` texts of
    /// similar length per forward pass (as training evaluates); results in the order of `texts`.
    /// Pairs given to a single-text model, or missing for a pair model, are an error.
    pub fn predict(
        &self,
        texts: &[&str],
        text_pairs: Option<&[&str]>,
        batch_size: usize,
    ) -> anyhow::Result<Vec<Prediction>> {
        let (ids, type_ids) = match (text_pairs, &self.text_pair_column) {
            (None, None) => (
                tokenizer::encode_all(&self.tokenizer, texts, self.max_length)?,
                None,
            ),
            (Some(pairs), Some(_)) => {
                if pairs.len() != texts.len() {
                    bail!(
                        "{} texts but {} second texts: a pair model needs one second text per text",
                        texts.len(),
                        pairs.len()
                    );
                }
                let pairs: Vec<(&str, &str)> =
                    texts.iter().copied().zip(pairs.iter().copied()).collect();
                let (ids, types): (Vec<_>, Vec<_>) =
                    tokenizer::encode_pairs(&self.tokenizer, &pairs, Some(self.max_length))?
                        .into_iter()
                        .unzip();
                (ids, Some(types))
            }
            (None, Some(column)) => bail!(
                "this run's model classifies text pairs (it trained with text_pair_column = \"{column}\"): give each text's second text with --text-pair, or --text-pair-column with --input"
            ),
            (Some(_), None) => bail!(
                "this run's model classifies single texts (it trained without text_pair_column): leave out --text-pair / --text-pair-column"
            ),
        };
        let scoring = crate::train::evaluation::logits(
            &self.model,
            &ids,
            type_ids.as_deref(),
            self.tokenizer.pad_id,
            batch_size,
            None,
        )?
        .expect("no interrupt flag");
        Ok(scoring
            .iter()
            .map(|logits| match self.threshold {
                Some(threshold) => {
                    let (predicted, probabilities) =
                        crate::train::evaluation::predicted_set(logits, threshold);
                    Prediction {
                        predicted,
                        probabilities,
                    }
                }
                None => {
                    let scored = crate::train::evaluation::softmax_scored(logits);
                    Prediction {
                        predicted: vec![scored.class],
                        probabilities: scored.probabilities(),
                    }
                }
            })
            .collect())
    }
}

/// The texts of one column of a data file (format from its extension); `flag` is the option
/// that names the column (for the error when it is missing).
pub fn read_texts(path: &Path, column: &str, flag: &str) -> anyhow::Result<Vec<String>> {
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
            "{} has no column `{column}`; its columns are {}; choose one with {flag}",
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

/// Predictions as CSV: `text`, `text_pair` (pairs), `predicted` (a label set joined by
/// `separator`), `probability_<class>...`.
pub fn predictions_csv(
    texts: &[String],
    text_pairs: Option<&[String]>,
    classes: &[String],
    separator: &str,
    predictions: &[Prediction],
) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["text".to_string()];
    if text_pairs.is_some() {
        header.push("text_pair".into());
    }
    header.push("predicted".into());
    header.extend(classes.iter().map(|class| format!("probability_{class}")));
    writer.write_record(&header).expect("writing to memory");
    for (index, (text, prediction)) in texts.iter().zip(predictions).enumerate() {
        let mut record = vec![text.clone()];
        if let Some(pairs) = text_pairs {
            record.push(pairs[index].clone());
        }
        record.push(prediction.names(classes, separator));
        record.extend(prediction.probabilities.iter().map(|p| p.to_string()));
        writer.write_record(&record).expect("writing to memory");
    }
    writer.into_inner().expect("writing to memory")
}

/// Predictions as JSON Lines: `{"text", "text_pair" (pairs), "predicted", "probabilities":
/// {class: p}}`; `predicted` is a class name, or for a multi-label model a list of names.
pub fn predictions_jsonl(
    texts: &[String],
    text_pairs: Option<&[String]>,
    classes: &[String],
    multi_label: bool,
    predictions: &[Prediction],
) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, (text, prediction)) in texts.iter().zip(predictions).enumerate() {
        let probabilities: Map<String, Value> = classes
            .iter()
            .zip(&prediction.probabilities)
            .map(|(class, p)| (class.clone(), json!(p)))
            .collect();
        let predicted: Vec<&str> = prediction
            .predicted
            .iter()
            .map(|&class| classes[class as usize].as_str())
            .collect();
        let mut line = Map::new();
        line.insert("text".into(), json!(text));
        if let Some(pairs) = text_pairs {
            line.insert("text_pair".into(), json!(pairs[index]));
        }
        line.insert(
            "predicted".into(),
            if multi_label {
                json!(predicted)
            } else {
                json!(predicted[0])
            },
        );
        line.insert("probabilities".into(), Value::Object(probabilities));
        out.extend_from_slice(Value::Object(line).to_string().as_bytes());
        out.push(b'\n');
    }
    out
}
