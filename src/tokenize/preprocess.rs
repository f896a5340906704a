//! Data and tokenize stages together, cached: a run's examples, split and tokenized, with the
//! data report. The cache key is a sha256 over the data part of the run spec (file fingerprints
//! and every `[data]` setting), `[labels]`, the tokenizer files' fingerprints and `max_length`,
//! so a 50-run sweep over learning rates and seeds decodes, cleans and tokenizes once.
//!
//! Entries are written atomically (temporary file, then rename): two runners that miss at the
//! same time both compute the same bytes, and a reader never sees half an entry. An unreadable
//! entry is recomputed.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::data::{self, DataReport, Example, Gold, TokenLengths};
use crate::plan::PlannedRun;
use crate::plan::spec::{LabelFormat, canonical_json, hash_canonical};
use crate::support::atomic_file;
use crate::tokenize::tokenizer;

/// Bumped when the cached layout or any step's behaviour changes.
const CACHE_VERSION: u32 = 1;

/// One split, tokenized: parallel vectors.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenizedSplit {
    pub texts: Vec<String>,
    /// Pair tasks: each example's second text (empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub text_pairs: Vec<String>,
    /// Single-label: each example's class (empty for multi-label data).
    pub labels: Vec<u32>,
    /// Multi-label: each example's sorted classes, possibly none (empty for single-label data).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub label_sets: Vec<Vec<u32>>,
    /// 1-based data rows in the source file.
    pub rows: Vec<usize>,
    /// Token ids with [CLS] and [SEP], truncated to `max_length`.
    pub ids: Vec<Vec<u32>>,
    /// Pair tasks: the token type ids the tokenizer gives (0 for the first text, 1 for the
    /// second where the template says so); empty for single texts (all 0).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub type_ids: Vec<Vec<u32>>,
}

impl TokenizedSplit {
    /// Whether the examples hold label sets (`label_format = "multi"`; an empty split: false).
    pub fn is_multi_label(&self) -> bool {
        !self.label_sets.is_empty()
    }
}

/// Everything training needs from the data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenizedData {
    pub version: u32,
    pub classes: Vec<String>,
    pub train: TokenizedSplit,
    pub validation: TokenizedSplit,
    pub test: TokenizedSplit,
    pub report: DataReport,
    /// Token lengths of the training texts (pairs) before truncation.
    pub token_lengths: TokenLengths,
    /// Each example has a set of labels (`label_format = "multi"`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub multi_label: bool,
}

/// The cache key of a run's preprocessed data (64 hex digits).
pub fn cache_key(run: &PlannedRun) -> String {
    let tokenizer_files: Vec<_> = run
        .spec
        .model
        .files
        .iter()
        .filter(|(name, _)| {
            crate::plan::model_directory::TOKENIZER_FILES.contains(&name.as_str())
                || crate::plan::model_directory::TOKENIZER_SETTINGS_FILES.contains(&name.as_str())
        })
        .collect();
    let key = serde_json::json!({
        "version": CACHE_VERSION,
        "data": run.spec.data,
        "labels": run.spec.labels,
        "tokenizer": tokenizer_files,
        "max_length": run.spec.train.max_length,
    });
    hash_canonical(&canonical_json(&key)).as_str().to_string()
}

/// The runs grouped by their preprocessed data (equal [`cache_key`]s), each group one data setup:
/// the runs' indices, groups in the order of their first run.
pub fn data_setups(runs: &[PlannedRun]) -> Vec<Vec<usize>> {
    let mut setups: Vec<(String, Vec<usize>)> = Vec::new();
    for (index, run) in runs.iter().enumerate() {
        let key = cache_key(run);
        match setups.iter_mut().find(|(existing, _)| *existing == key) {
            Some((_, members)) => members.push(index),
            None => setups.push((key, vec![index])),
        }
    }
    setups.into_iter().map(|(_, members)| members).collect()
}

/// The cache folder used when none is given: `data/` beside the fingerprint cache.
pub fn default_cache_folder() -> Option<PathBuf> {
    crate::plan::fingerprint::default_cache_path()
        .and_then(|path| path.parent().map(|folder| folder.join("data")))
}

/// Token id rows, and token type id rows (pairs; empty for single texts).
type IdsAndTypes = (Vec<Vec<u32>>, Vec<Vec<u32>>);

/// Token ids (and type ids for pairs) of examples, truncated to `max_length` as transformers
/// truncates (a text keeps its last special token, a pair is cut `longest_first`), and their
/// untruncated lengths, from one encoding.
fn encode_examples(
    loaded: &tokenizer::LoadedTokenizer,
    examples: &[Example],
    max_length: usize,
) -> anyhow::Result<(IdsAndTypes, Vec<usize>)> {
    match pairs_of(examples) {
        None => {
            let untruncated = tokenizer::encode_untruncated(loaded, &texts_of(examples))?;
            let lengths = untruncated.iter().map(Vec::len).collect();
            let ids = untruncated
                .iter()
                .map(|ids| tokenizer::truncate(ids, max_length))
                .collect();
            Ok(((ids, Vec::new()), lengths))
        }
        Some(pairs) => {
            let (encoded, lengths) =
                tokenizer::encode_pairs_with_lengths(loaded, &pairs, Some(max_length))?;
            Ok((encoded.into_iter().unzip(), lengths))
        }
    }
}

fn into_split(
    examples: Vec<Example>,
    ids: Vec<Vec<u32>>,
    type_ids: Vec<Vec<u32>>,
) -> TokenizedSplit {
    let mut split = TokenizedSplit {
        ids,
        type_ids,
        ..TokenizedSplit::default()
    };
    for example in examples {
        split.texts.push(example.text);
        if let Some(pair) = example.text_pair {
            split.text_pairs.push(pair);
        }
        match example.gold {
            Gold::Class(class) => split.labels.push(class),
            Gold::Set(set) => split.label_sets.push(set),
        }
        split.rows.push(example.row);
    }
    split
}

/// The data stage for a run, its tokenizer, and the token lengths of its training texts.
pub fn prepare_with_lengths(
    run: &PlannedRun,
) -> anyhow::Result<(data::PreparedData, tokenizer::LoadedTokenizer, TokenLengths)> {
    let prepared = data::prepare(run)?;
    let loaded = tokenizer::load(&run.settings.model_path)?;
    let max_length = run.settings.train.max_length;
    let (_, lengths) = encode_examples(&loaded, &prepared.train, max_length)?;
    let lengths = TokenLengths {
        pairs: run.settings.data.text_pair_column.is_some(),
        ..TokenLengths::from_lengths(lengths, max_length)
    };
    Ok((prepared, loaded, lengths))
}

fn texts_of(examples: &[Example]) -> Vec<&str> {
    examples
        .iter()
        .map(|example| example.text.as_str())
        .collect()
}

/// The examples' pairs, when they are pairs.
fn pairs_of(examples: &[Example]) -> Option<Vec<(&str, &str)>> {
    examples
        .iter()
        .map(|example| {
            example
                .text_pair
                .as_deref()
                .map(|pair| (example.text.as_str(), pair))
        })
        .collect()
}

/// Runs the data and tokenize stages for a run, without the cache. The training texts are
/// tokenized once: their untruncated lengths give the report's statistics.
pub fn preprocess(run: &PlannedRun) -> anyhow::Result<TokenizedData> {
    let prepared = data::prepare(run)?;
    let loaded = tokenizer::load(&run.settings.model_path)?;
    let max_length = run.settings.train.max_length;
    let pairs = run.settings.data.text_pair_column.is_some();
    let ((train_ids, train_types), lengths) =
        encode_examples(&loaded, &prepared.train, max_length)?;
    let token_lengths = TokenLengths {
        pairs,
        ..TokenLengths::from_lengths(lengths, max_length)
    };
    let tokenize = |examples: Vec<Example>| -> anyhow::Result<TokenizedSplit> {
        let ((ids, types), _) = encode_examples(&loaded, &examples, max_length)?;
        Ok(into_split(examples, ids, types))
    };
    Ok(TokenizedData {
        version: CACHE_VERSION,
        classes: prepared.classes,
        train: into_split(prepared.train, train_ids, train_types),
        validation: tokenize(prepared.validation)?,
        test: tokenize(prepared.test)?,
        report: prepared.report,
        token_lengths,
        multi_label: run.settings.data.label_format == LabelFormat::Multi,
    })
}

/// Whether the result came from the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheUse {
    Hit,
    Miss,
    /// No cache folder.
    Off,
}

/// [`preprocess`] through the cache in `folder` (none: no cache).
pub fn preprocess_cached(
    run: &PlannedRun,
    folder: Option<&Path>,
) -> anyhow::Result<(TokenizedData, CacheUse)> {
    let Some(folder) = folder else {
        return Ok((preprocess(run)?, CacheUse::Off));
    };
    let path = folder.join(format!("{}.json", cache_key(run)));
    if let Ok(bytes) = std::fs::read(&path)
        && let Ok(data) = serde_json::from_slice::<TokenizedData>(&bytes)
        && data.version == CACHE_VERSION
    {
        return Ok((data, CacheUse::Hit));
    }
    let data = preprocess(run)?;
    std::fs::create_dir_all(folder)
        .with_context(|| format!("cannot create the cache folder {}", folder.display()))?;
    atomic_file::write(&path, &serde_json::to_vec(&data)?)?;
    Ok((data, CacheUse::Miss))
}
