//! The resolved settings of one run ([`RunSettings`], with paths, ready for the pipeline) and its
//! identity ([`RunSpec`], with content fingerprints instead of paths), the canonical JSON bytes of
//! a spec and the run hash: sha256 over those bytes.
//!
//! Canonical JSON: object keys sorted by their bytes, no whitespace, numbers in their shortest
//! round-trip form (`2e-5` and `0.00002` are the same float, so the same text), `-0.0` written as
//! `0.0`, `[[data.filter]]` tables sorted and their `values` sorted and deduplicated (filters are
//! a conjunction of sets, so order means nothing). `docs/run-directory.md` lists exactly what goes in.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::experiment::{LabelEntry, RowFilter, Setting};
pub use crate::plan::fingerprint::FileFingerprint;
use crate::plan::fingerprint::hex;

/// The version of the canonical spec layout, stored in every spec.
pub const SPEC_VERSION: u32 = 1;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$variant_meta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$variant_meta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Parses the text written in an experiment file; the schema has already checked it.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// How the bytes of the text column are decoded.
    Encoding { Utf8 = "utf8", Utf8Lossy = "utf8-lossy" }
);
string_enum!(
    /// What happens to rows whose label `[labels]` does not list.
    UnknownLabels { Error = "error", Drop = "drop" }
);
string_enum!(
    /// What happens to a text that appears with different labels.
    ConflictingLabels { Drop = "drop", Majority = "majority" }
);
string_enum!(
    /// A data file's format.
    DataFormat { Csv = "csv", Tsv = "tsv", Parquet = "parquet", Jsonl = "jsonl" }
);
string_enum!(
    /// The validation metric that selects the epoch a run keeps.
    SelectionMetric {
        MacroF1 = "macro_f1",
        Accuracy = "accuracy",
        Loss = "loss",
        MicroF1 = "micro_f1",
        SamplesF1 = "samples_f1",
        SubsetAccuracy = "subset_accuracy",
        HammingLoss = "hamming_loss",
    }
);
string_enum!(
    /// One label per example, or a set of labels (possibly empty).
    #[derive(Default)]
    LabelFormat {
        #[default]
        Single = "single",
        Multi = "multi",
    }
);
string_enum!(
    /// Per-class loss weights.
    ClassWeights { None = "none", Balanced = "balanced" }
);
string_enum!(
    /// Arithmetic of matrix products during training.
    Precision { Fp32 = "fp32", Bf16 = "bf16" }
);
string_enum!(
    /// The shape of the learning rate after the warmup (transformers' schedule functions).
    #[derive(Default)]
    LearningRateSchedule {
        #[default]
        Linear = "linear",
        Constant = "constant",
        Cosine = "cosine",
        Polynomial = "polynomial",
        InverseSqrt = "inverse_sqrt",
    }
);
string_enum!(
    /// Which parameters weight decay applies to.
    #[derive(Default)]
    WeightDecayScope {
        #[default]
        Standard = "standard",
        All = "all",
    }
);

/// Which parameters stay as loaded: none, the embeddings, or the embeddings and the lowest
/// `N` encoder layers. In a spec: `"embeddings"` or the integer `N` (absent when none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Freeze {
    #[default]
    None,
    Embeddings,
    /// The embeddings and encoder layers `0..N` (N >= 1).
    Layers(usize),
}

impl Freeze {
    /// Parses the setting as written: `"none"`, `"embeddings"` or an integer >= 1.
    pub fn from_setting(setting: &Setting) -> Option<Freeze> {
        match setting {
            Setting::Text(text) if text == "none" => Some(Freeze::None),
            Setting::Text(text) if text == "embeddings" => Some(Freeze::Embeddings),
            Setting::Integer(layers) if *layers >= 1 => {
                usize::try_from(*layers).ok().map(Freeze::Layers)
            }
            _ => None,
        }
    }

    /// What the model freezes, as `EncoderClassifier::freeze` takes it: nothing (`None`), the
    /// embeddings (`Some(0)`), or the embeddings and the lowest N encoder layers (`Some(N)`).
    pub fn frozen_layers(self) -> Option<usize> {
        match self {
            Freeze::None => None,
            Freeze::Embeddings => Some(0),
            Freeze::Layers(layers) => Some(layers),
        }
    }
}

impl Serialize for Freeze {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Freeze::None => serializer.serialize_str("none"),
            Freeze::Embeddings => serializer.serialize_str("embeddings"),
            Freeze::Layers(layers) => serializer.serialize_u64(*layers as u64),
        }
    }
}

impl<'de> Deserialize<'de> for Freeze {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let setting = Setting::deserialize(deserializer)?;
        Freeze::from_setting(&setting).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "freeze must be \"none\", \"embeddings\" or an integer >= 1, found {setting:?}"
            ))
        })
    }
}

impl SelectionMetric {
    pub fn higher_is_better(self) -> bool {
        !matches!(self, SelectionMetric::Loss | SelectionMetric::HammingLoss)
    }

    /// Whether the metric is measured on multi-label predictions only.
    pub fn is_multi_label_only(self) -> bool {
        matches!(
            self,
            SelectionMetric::MicroF1
                | SelectionMetric::SamplesF1
                | SelectionMetric::SubsetAccuracy
                | SelectionMetric::HammingLoss
        )
    }
}

/// `data.label_separator`'s default.
pub const DEFAULT_LABEL_SEPARATOR: &str = "|";
/// `train.threshold`'s default.
pub const DEFAULT_THRESHOLD: f64 = 0.5;

fn is_default_label_separator(separator: &String) -> bool {
    separator == DEFAULT_LABEL_SEPARATOR
}

fn default_label_separator() -> String {
    DEFAULT_LABEL_SEPARATOR.to_string()
}

fn is_default_threshold(threshold: &f64) -> bool {
    *threshold == DEFAULT_THRESHOLD
}

fn default_threshold() -> f64 {
    DEFAULT_THRESHOLD
}

impl DataFormat {
    /// The format a file extension implies, if any.
    pub fn from_extension(extension: &str) -> Option<DataFormat> {
        match extension.to_ascii_lowercase().as_str() {
            "csv" => Some(DataFormat::Csv),
            "tsv" | "tab" => Some(DataFormat::Tsv),
            "parquet" | "pq" => Some(DataFormat::Parquet),
            "jsonl" | "ndjson" => Some(DataFormat::Jsonl),
            _ => None,
        }
    }
}

/// Where a run asks to execute. Not part of the run's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceRequest {
    Auto,
    Cpu,
    /// `cuda` (no index: the first GPU) or `cuda:N`.
    Cuda(Option<usize>),
}

impl DeviceRequest {
    pub fn parse(text: &str) -> Option<DeviceRequest> {
        match text {
            "auto" => Some(DeviceRequest::Auto),
            "cpu" => Some(DeviceRequest::Cpu),
            "cuda" => Some(DeviceRequest::Cuda(None)),
            other => other
                .strip_prefix("cuda:")?
                .parse()
                .ok()
                .map(|index| DeviceRequest::Cuda(Some(index))),
        }
    }
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceRequest::Auto => f.write_str("auto"),
            DeviceRequest::Cpu => f.write_str("cpu"),
            DeviceRequest::Cuda(None) => f.write_str("cuda"),
            DeviceRequest::Cuda(Some(index)) => write!(f, "cuda:{index}"),
        }
    }
}

/// The `[data]` settings other than file paths.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataOptions {
    pub text_column: String,
    pub label_column: String,
    pub encoding: Encoding,
    pub drop_empty: bool,
    pub drop_duplicates: bool,
    pub conflicting_labels: ConflictingLabels,
    pub unknown_labels: UnknownLabels,
    /// 0 when a separate validation file is given.
    pub validation_fraction: f64,
    /// 0 when a separate test file is given.
    pub test_fraction: f64,
    pub split_seed: u64,
    pub stratify: bool,
    pub filters: Vec<RowFilter>,
    /// A sample of the training split (absent from the spec when unset, so older hashes hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_train_examples: Option<usize>,
    /// The second text of a pair (absent when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_pair_column: Option<String>,
    /// Absent when `single`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub label_format: LabelFormat,
    /// Absent when `|`.
    #[serde(
        default = "default_label_separator",
        skip_serializing_if = "is_default_label_separator"
    )]
    pub label_separator: String,
}

/// The `[model]` settings other than the path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelOptions {
    pub classifier_dropout: f64,
    pub hidden_dropout: f64,
    pub attention_dropout: f64,
}

/// The defaults of the `[train]` keys that entered the spec after version 1's first runs: a spec
/// holds such a key only when its value differs from the default, so every earlier hash holds.
/// The schema lists the same defaults (a test compares them).
pub mod recipe_defaults {
    pub const COSINE_CYCLES: f64 = 0.5;
    pub const POLYNOMIAL_POWER: f64 = 1.0;
    pub const POLYNOMIAL_END_LEARNING_RATE: f64 = 1e-7;
    pub const ADAM_BETA1: f64 = 0.9;
    pub const ADAM_BETA2: f64 = 0.999;
    pub const ADAM_EPSILON: f64 = 1e-8;
    pub const LABEL_SMOOTHING: f64 = 0.0;
    pub const LAYER_LEARNING_RATE_DECAY: f64 = 1.0;
    /// transformers' `get_inverse_sqrt_schedule` timescale when there is no warmup.
    pub const INVERSE_SQRT_TIMESCALE_WITHOUT_WARMUP: u64 = 10_000;
}

macro_rules! float_default {
    ($default:ident, $is_default:ident, $value:path) => {
        fn $default() -> f64 {
            $value
        }
        fn $is_default(value: &f64) -> bool {
            *value == $value
        }
    };
}

float_default!(
    cosine_cycles_default,
    is_cosine_cycles_default,
    recipe_defaults::COSINE_CYCLES
);
float_default!(
    polynomial_power_default,
    is_polynomial_power_default,
    recipe_defaults::POLYNOMIAL_POWER
);
float_default!(
    polynomial_end_default,
    is_polynomial_end_default,
    recipe_defaults::POLYNOMIAL_END_LEARNING_RATE
);
float_default!(beta1_default, is_beta1_default, recipe_defaults::ADAM_BETA1);
float_default!(beta2_default, is_beta2_default, recipe_defaults::ADAM_BETA2);
float_default!(
    epsilon_default,
    is_epsilon_default,
    recipe_defaults::ADAM_EPSILON
);
float_default!(
    label_smoothing_default,
    is_label_smoothing_default,
    recipe_defaults::LABEL_SMOOTHING
);
float_default!(
    layer_decay_default,
    is_layer_decay_default,
    recipe_defaults::LAYER_LEARNING_RATE_DECAY
);

fn is_zero(value: &u64) -> bool {
    *value == 0
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// The `[train]` settings that define a run (`device` is not among them). The fields after
/// `seed` are absent from the spec at their defaults (see [`recipe_defaults`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    pub max_length: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub epochs: usize,
    pub weight_decay: f64,
    pub warmup_ratio: f64,
    pub max_grad_norm: f64,
    pub gradient_accumulation: usize,
    pub early_stopping_patience: usize,
    pub selection_metric: SelectionMetric,
    pub class_weights: ClassWeights,
    pub length_bucketing: bool,
    pub precision: Precision,
    pub seed: u64,
    #[serde(default, skip_serializing_if = "is_default")]
    pub learning_rate_schedule: LearningRateSchedule,
    #[serde(
        default = "cosine_cycles_default",
        skip_serializing_if = "is_cosine_cycles_default"
    )]
    pub cosine_cycles: f64,
    #[serde(
        default = "polynomial_power_default",
        skip_serializing_if = "is_polynomial_power_default"
    )]
    pub polynomial_power: f64,
    #[serde(
        default = "polynomial_end_default",
        skip_serializing_if = "is_polynomial_end_default"
    )]
    pub polynomial_end_learning_rate: f64,
    /// Unset: the warmup steps, else 10,000 (transformers' default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inverse_sqrt_timescale: Option<u64>,
    /// Warmup length in optimizer steps; 0: `warmup_ratio` decides.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub warmup_steps: u64,
    #[serde(default = "beta1_default", skip_serializing_if = "is_beta1_default")]
    pub adam_beta1: f64,
    #[serde(default = "beta2_default", skip_serializing_if = "is_beta2_default")]
    pub adam_beta2: f64,
    #[serde(
        default = "epsilon_default",
        skip_serializing_if = "is_epsilon_default"
    )]
    pub adam_epsilon: f64,
    #[serde(default, skip_serializing_if = "is_default")]
    pub weight_decay_scope: WeightDecayScope,
    #[serde(
        default = "label_smoothing_default",
        skip_serializing_if = "is_label_smoothing_default"
    )]
    pub label_smoothing: f64,
    #[serde(
        default = "layer_decay_default",
        skip_serializing_if = "is_layer_decay_default"
    )]
    pub layer_learning_rate_decay: f64,
    #[serde(default, skip_serializing_if = "is_default")]
    pub freeze: Freeze,
    /// Validate every this many optimizer steps as well as after each epoch; 0: off.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub eval_every_steps: u64,
    /// Multi-label: the sigmoid probability from which a class is predicted (absent when 0.5).
    #[serde(
        default = "default_threshold",
        skip_serializing_if = "is_default_threshold"
    )]
    pub threshold: f64,
}

/// Data file locations, resolved against the experiment file's folder.
#[derive(Clone, Debug, PartialEq)]
pub struct DataPaths {
    pub train: PathBuf,
    pub validation: Option<PathBuf>,
    pub test: Option<PathBuf>,
}

/// Everything one run needs, every default filled in: what the later stages read.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSettings {
    pub data_paths: DataPaths,
    pub data: DataOptions,
    /// Raw label -> class id; `None` infers the classes (sorted distinct labels) from the data.
    pub labels: Option<Vec<LabelEntry>>,
    pub model_path: PathBuf,
    /// The hub id, revision and commit `model.hub` resolved to (`model_path` is its snapshot).
    pub model_hub: Option<crate::plan::hub_cache::ResolvedHubModel>,
    pub model: ModelOptions,
    pub train: TrainSettings,
    pub device: DeviceRequest,
}

/// A data file in a spec: its content and how it is read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataFileSpec {
    #[serde(flatten)]
    pub fingerprint: FileFingerprint,
    pub format: DataFormat,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataSpec {
    pub train: DataFileSpec,
    pub validation: Option<DataFileSpec>,
    pub test: Option<DataFileSpec>,
    #[serde(flatten)]
    pub options: DataOptions,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// The model directory's defining files by file name (config, tokenizer, weights).
    pub files: BTreeMap<String, FileFingerprint>,
    #[serde(flatten)]
    pub options: ModelOptions,
}

/// A run's identity: every setting that can change its result, with files by content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    pub bertlab_spec: u32,
    pub data: DataSpec,
    /// Raw label -> class id, or `None` when the classes are inferred from the data.
    pub labels: Option<BTreeMap<String, u32>>,
    pub model: ModelSpec,
    pub train: TrainSettings,
}

/// A run's sha256, 64 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RunHash(String);

/// How many hex digits name a run's directory and appear in tables.
pub const SHORT_HASH_LENGTH: usize = 12;

impl RunHash {
    /// Accepts exactly 64 lowercase hex digits.
    pub fn parse(text: &str) -> Option<RunHash> {
        (text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| RunHash(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 digits: the run directory's name.
    pub fn short(&self) -> &str {
        &self.0[..SHORT_HASH_LENGTH]
    }
}

impl fmt::Display for RunHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl RunSpec {
    /// Puts set-like parts in canonical order: filters sorted, filter values sorted and deduplicated.
    pub fn normalize(&mut self) {
        for filter in &mut self.data.options.filters {
            if let Some(values) = &mut filter.values {
                let mut keyed: Vec<(Vec<u8>, Setting)> = values
                    .drain(..)
                    .map(|value| {
                        (
                            canonical_json(&serde_json::to_value(&value).expect("plain value")),
                            value,
                        )
                    })
                    .collect();
                keyed.sort_by(|a, b| a.0.cmp(&b.0));
                keyed.dedup_by(|a, b| a.0 == b.0);
                *values = keyed.into_iter().map(|(_, value)| value).collect();
            }
        }
        self.data.options.filters.sort_by_cached_key(|filter| {
            canonical_json(&serde_json::to_value(filter).expect("plain value"))
        });
    }

    /// The canonical JSON bytes: what `spec.json` holds and what the hash is computed over.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut normalized = self.clone();
        normalized.normalize();
        canonical_json(&serde_json::to_value(&normalized).expect("a spec is plain data"))
    }

    /// sha256 of the canonical bytes.
    pub fn hash(&self) -> RunHash {
        hash_canonical(&self.canonical_bytes())
    }
}

/// The run hash of canonical spec bytes.
pub fn hash_canonical(bytes: &[u8]) -> RunHash {
    RunHash(hex(&Sha256::digest(bytes)))
}

/// Canonical JSON text of a value: sorted keys, no whitespace, shortest numbers, no negative zero.
pub fn canonical_json(value: &serde_json::Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    out
}

/// A float's canonical text, fixed forever (hashes depend on it, so it must not follow any
/// library's formatting): the shortest digits that read back to the same value (Rust's `{}` and
/// `{:e}`), positional for 1e-4 <= |x| < 1e15 and with an exponent otherwise, always marked as a
/// float (`3.0`, not `3`), and `0.0` for both zeros.
pub fn canonical_float(value: f64) -> String {
    if value == 0.0 {
        return "0.0".into();
    }
    let text = if (1e-4..1e15).contains(&value.abs()) {
        format!("{value}")
    } else {
        format!("{value:e}")
    };
    if text.contains(['.', 'e']) {
        text
    } else {
        format!("{text}.0")
    }
}

fn write_canonical(value: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => {
            out.extend_from_slice(serde_json::to_string(value).expect("scalar").as_bytes())
        }
        Value::Number(number) => {
            let text = match number.as_f64() {
                Some(float) if number.is_f64() => canonical_float(float),
                _ => number.to_string(),
            };
            out.extend_from_slice(text.as_bytes());
        }
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(serde_json::to_string(key).expect("string").as_bytes());
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_and_normalizes_numbers() {
        let value = json!({"b": 2e-5, "a": {"z": -0.0, "y": [1, 0.00002, 1.0]}});
        assert_eq!(
            String::from_utf8(canonical_json(&value)).unwrap(),
            r#"{"a":{"y":[1,2e-5,1.0],"z":0.0},"b":2e-5}"#
        );
    }

    #[test]
    fn canonical_floats() {
        let cases = [
            (2e-5, "2e-5"),
            (0.1, "0.1"),
            (3.0, "3.0"),
            (-0.0, "0.0"),
            (1e-4, "0.0001"),
            (1e15, "1e15"),
            (123456.5, "123456.5"),
        ];
        for (value, text) in cases {
            assert_eq!(canonical_float(value), text);
            assert_eq!(text.parse::<f64>().unwrap(), value);
        }
    }

    #[test]
    fn run_hash_parses_only_full_lowercase_hex() {
        let digits = "a".repeat(64);
        assert_eq!(RunHash::parse(&digits).unwrap().short(), "aaaaaaaaaaaa");
        assert!(RunHash::parse(&"A".repeat(64)).is_none());
        assert!(RunHash::parse("abc").is_none());
    }

    #[test]
    fn device_requests() {
        assert_eq!(
            DeviceRequest::parse("cuda:3"),
            Some(DeviceRequest::Cuda(Some(3)))
        );
        assert_eq!(
            DeviceRequest::parse("cuda"),
            Some(DeviceRequest::Cuda(None))
        );
        assert_eq!(DeviceRequest::parse("gpu"), None);
        assert_eq!(DeviceRequest::Cuda(Some(1)).to_string(), "cuda:1");
    }
}
