//! The data stage: from the data files of a run's settings to labelled train, validation and
//! test examples, and a report of what happened to the rows.
//!
//! Steps, in this order, each recording rows in and out:
//! read -> decode -> select columns -> filters -> strip whitespace -> drop empty ->
//! drop duplicates -> map labels -> split -> leakage check.
//!
//! - decode: `encoding = "utf8"` stops at the first invalid byte (row and offset named);
//!   `"utf8-lossy"` repairs it and counts the rows.
//! - pairs (`text_pair_column`): both texts are stripped; a row whose second text is empty is
//!   an error naming the rows; deduplication and the leakage check compare the pair.
//! - drop duplicates: a text repeated with the same label keeps its first row. A text that
//!   appears with different labels follows `conflicting_labels`: `drop` removes every row of it,
//!   `majority` keeps the first row of its most frequent label (a tie drops them all). A label
//!   set counts as one label: the same set in any order is the same.
//! - map labels: with `[labels]`, unlisted labels are an error listing each with its count and
//!   first rows, or are dropped (`unknown_labels`: the row of a single label, the label alone
//!   from a label set); without it, the classes are the sorted distinct labels of the training
//!   file. A row without a label is an unlisted label; with `label_format = "multi"` it is the
//!   empty set, a valid example (none of the classes).
//! - split: separate files, or a seeded (stratified) split of the training file. Multi-label
//!   data is stratified on the label set: each distinct set is a stratum.
//! - leakage: texts (pairs) found both in train and in validation or test are counted.
//!
//! Uses: `support`, `experiment` (label entries, filters), `plan` (a run's resolved settings).
//! Never uses: the tokenizer, the model, the run store or anything above them.

pub mod decode;
pub mod read;
pub mod split;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::experiment::LabelEntry;
use crate::plan::PlannedRun;
use crate::plan::spec::{
    ConflictingLabels, DataFileSpec, DataFormat, DataOptions, Encoding, LabelFormat, UnknownLabels,
};

/// One labelled text, or pair of texts.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub text: String,
    /// The second text of a pair task (`data.text_pair_column`).
    pub text_pair: Option<String>,
    pub gold: Gold,
    /// 1-based data row in its source file.
    pub row: usize,
}

/// An example's gold labels: one class (`label_format = "single"`), or a set of classes, sorted
/// and possibly empty (`"multi"`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Gold {
    Class(u32),
    Set(Vec<u32>),
}

impl Example {
    /// The single label's class id (single-label data only).
    pub fn class(&self) -> u32 {
        match &self.gold {
            Gold::Class(class) => *class,
            Gold::Set(_) => panic!("a multi-label example has no single class"),
        }
    }

    /// What deduplication and the leakage check compare: the text, and the pair's second text.
    fn key(&self) -> (&str, Option<&str>) {
        (self.text.as_str(), self.text_pair.as_deref())
    }
}

/// Rows entering and leaving one step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepCount {
    pub file: String,
    pub step: String,
    pub rows_in: usize,
    pub rows_out: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A text seen with several labels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    pub text: String,
    pub labels: BTreeMap<String, usize>,
}

/// What the data stage did, for people (`bertlab data`) and for each run (`data_report.json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DataReport {
    pub steps: Vec<StepCount>,
    pub classes: Vec<String>,
    /// Examples per class, per split (`train`, `validation`, `test`).
    pub class_counts: BTreeMap<String, Vec<usize>>,
    pub repaired_rows: usize,
    pub conflicting_texts: usize,
    pub conflict_examples: Vec<Conflict>,
    pub dropped_labels: BTreeMap<String, usize>,
    /// Texts of validation and test that also occur in train.
    pub leaked_validation: usize,
    pub leaked_test: usize,
    pub warnings: Vec<String>,
    /// Multi-label: examples with the empty label set (none of the classes), per split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_label_sets: Option<Vec<usize>>,
}

/// Token lengths of the training texts (or pairs) under one tokenizer and `max_length`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenLengths {
    pub texts: usize,
    pub p50: usize,
    pub p90: usize,
    pub p99: usize,
    pub max: usize,
    pub max_length: usize,
    /// Texts (pairs) longer than `max_length` tokens, which training truncates.
    pub truncated: usize,
    pub truncated_share: f64,
    /// The lengths are of text pairs (both texts and the special tokens between them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pairs: bool,
}

impl TokenLengths {
    /// Nearest-rank percentiles of `lengths` (token counts with [CLS] and [SEP]).
    pub fn from_lengths(mut lengths: Vec<usize>, max_length: usize) -> TokenLengths {
        lengths.sort_unstable();
        let count = lengths.len();
        let percentile = |p: f64| {
            if count == 0 {
                0
            } else {
                lengths[((p / 100.0 * count as f64).ceil() as usize).clamp(1, count) - 1]
            }
        };
        let truncated = lengths
            .iter()
            .filter(|&&length| length > max_length)
            .count();
        TokenLengths {
            texts: count,
            p50: percentile(50.0),
            p90: percentile(90.0),
            p99: percentile(99.0),
            max: lengths.last().copied().unwrap_or(0),
            max_length,
            truncated,
            truncated_share: if count == 0 {
                0.0
            } else {
                truncated as f64 / count as f64
            },
            pairs: false,
        }
    }
}

/// Prepared examples.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PreparedData {
    pub classes: Vec<String>,
    pub train: Vec<Example>,
    pub validation: Vec<Example>,
    pub test: Vec<Example>,
    pub report: DataReport,
}

/// A data problem that stops the run: the file, what is wrong, and what to change.
#[derive(Clone, Debug, PartialEq)]
pub struct DataError {
    pub file: String,
    pub message: String,
    pub help: Option<String>,
}

impl std::fmt::Display for DataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file, self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DataError {}

fn data_error(file: &Path, message: impl Into<String>, help: Option<&str>) -> anyhow::Error {
    DataError {
        file: file.display().to_string(),
        message: message.into(),
        help: help.map(str::to_string),
    }
    .into()
}

/// One file's rows after the steps before label mapping.
struct CleanRows {
    texts: Vec<String>,
    /// With a pair column: the second texts.
    text_pairs: Option<Vec<String>>,
    labels: CleanLabels,
    rows: Vec<usize>,
}

/// Labels after stripping: one per row (`None`: none), or a set per row (sorted, without
/// repeats or empty names).
enum CleanLabels {
    Single(Vec<Option<String>>),
    Sets(Vec<Vec<String>>),
}

impl CleanLabels {
    fn retain(&mut self, keep: &[bool]) {
        match self {
            CleanLabels::Single(labels) => retain(labels, keep),
            CleanLabels::Sets(sets) => retain(sets, keep),
        }
    }

    /// Each row's labels as one comparable value (a set's labels joined by NUL; `(no labels)`
    /// for the empty set), for deduplication.
    fn keys(&self) -> Vec<Option<String>> {
        match self {
            CleanLabels::Single(labels) => labels.clone(),
            // Joined with NUL, which no label holds, so that `["a|b"]` and `["a", "b"]` differ;
            // the report shows the separator (`Conflict`).
            CleanLabels::Sets(sets) => sets
                .iter()
                .map(|set| {
                    Some(if set.is_empty() {
                        "(no labels)".to_string()
                    } else {
                        set.join("\u{0}")
                    })
                })
                .collect(),
        }
    }
}

/// Separators a label column may use instead of the configured one, for the warning.
const OTHER_SEPARATORS: &[&str] = &["|", ",", ";", "/", "+"];

/// Reads one file through read, decode, select, filters, strip, drop empty and drop duplicates.
fn clean_file(
    path: &Path,
    format: DataFormat,
    options: &DataOptions,
    report: &mut DataReport,
) -> anyhow::Result<CleanRows> {
    let file = path.display().to_string();
    let step = |report: &mut DataReport,
                name: &str,
                rows_in: usize,
                rows_out: usize,
                note: Option<String>| {
        report.steps.push(StepCount {
            file: file.clone(),
            step: name.into(),
            rows_in,
            rows_out,
            note,
        });
    };
    let bytes = match format {
        DataFormat::Parquet => Vec::new(),
        _ => std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
    };
    let decoded = match format {
        DataFormat::Parquet => None,
        _ => Some(decode::decode(&bytes, format, options.encoding == Encoding::Utf8Lossy).map_err(|invalid| {
            data_error(
                path,
                format!("row {}: invalid UTF-8 at byte offset {}", invalid.row, invalid.byte_offset),
                Some("set `encoding = \"utf8-lossy\"` in [data] to replace invalid bytes with U+FFFD (the rows repaired are counted)"),
            )
        })?),
    };
    let frame = read::read_frame_typed_from(
        path,
        format,
        decoded.as_ref().map(|decoded| &*decoded.text),
        options.label_format == LabelFormat::Multi,
    )
    .map_err(|message| data_error(path, message, None))?;
    let total = frame.height();
    step(report, "read", total, total, None);
    if let Some(decoded) = &decoded {
        let repaired = decoded.repaired_rows.len();
        report.repaired_rows += repaired;
        step(
            report,
            "decode",
            total,
            total,
            (repaired > 0).then(|| format!("{repaired} rows had invalid UTF-8 replaced")),
        );
    }
    drop(decoded);
    let multi_label = options.label_format == LabelFormat::Multi;
    let columns = read::Columns {
        text: &options.text_column,
        text_pair: options.text_pair_column.as_deref(),
        label: &options.label_column,
        label_separator: multi_label.then_some(options.label_separator.as_str()),
    };
    let (raw, filter_counts) = read::select_and_filter(&frame, columns, &options.filters)
        .map_err(|message| data_error(path, message, None))?;
    step(report, "select columns", total, total, None);
    for count in filter_counts {
        step(
            report,
            &format!("filter {}", count.description),
            count.rows_in,
            count.rows_out,
            None,
        );
    }

    let rows_in = raw.texts.len();
    let mut texts: Vec<String> = raw
        .texts
        .into_iter()
        .map(|text| text.trim().to_string())
        .collect();
    let mut text_pairs: Option<Vec<String>> = raw.text_pairs.map(|pairs| {
        pairs
            .into_iter()
            .map(|pair| pair.unwrap_or_default().trim().to_string())
            .collect()
    });
    step(report, "strip whitespace", rows_in, rows_in, None);
    let mut labels = match raw.labels {
        read::RawLabels::Single(labels) => CleanLabels::Single(
            labels
                .into_iter()
                .map(|label| {
                    label
                        .map(|label| label.trim().to_string())
                        .filter(|label| !label.is_empty())
                })
                .collect(),
        ),
        read::RawLabels::Sets {
            sets,
            separator_never_seen,
        } => {
            if separator_never_seen && sets.iter().any(|set| !set.is_empty()) {
                let others: Vec<String> = OTHER_SEPARATORS
                    .iter()
                    .filter(|other| **other != options.label_separator)
                    .filter_map(|other| {
                        let count = sets
                            .iter()
                            .filter(|set| set.iter().any(|label| label.contains(*other)))
                            .count();
                        (count > 0).then(|| format!("`{other}` in {count}"))
                    })
                    .collect();
                report.warnings.push(format!(
                    "{file}: no label of column `{}` contains `label_separator` = \"{}\", so every example has at most one label: probably the wrong separator{}; set `label_separator` in [data] to the character between the labels",
                    options.label_column,
                    options.label_separator,
                    if others.is_empty() {
                        String::new()
                    } else {
                        format!(" (the labels hold {})", others.join(", "))
                    }
                ));
            }
            CleanLabels::Sets(
                sets.into_iter()
                    .map(|set| {
                        let mut set: Vec<String> = set
                            .into_iter()
                            .map(|label| label.trim().to_string())
                            .filter(|label| !label.is_empty())
                            .collect();
                        set.sort();
                        set.dedup();
                        set
                    })
                    .collect(),
            )
        }
    };
    let mut rows = raw.rows;
    if options.drop_empty {
        let keep: Vec<bool> = texts.iter().map(|text| !text.is_empty()).collect();
        retain(&mut texts, &keep);
        if let Some(pairs) = &mut text_pairs {
            retain(pairs, &keep);
        }
        labels.retain(&keep);
        retain(&mut rows, &keep);
        step(report, "drop empty", rows_in, texts.len(), None);
    }
    if let Some(pairs) = &text_pairs {
        let empty: Vec<usize> = pairs
            .iter()
            .zip(&rows)
            .filter(|(pair, _)| pair.is_empty())
            .map(|(_, row)| *row)
            .collect();
        if !empty.is_empty() {
            let first: Vec<String> = empty.iter().take(5).map(usize::to_string).collect();
            return Err(data_error(
                path,
                format!(
                    "the pair column `{}` (`text_pair_column`) is empty in {} row{} (first: row {})",
                    options.text_pair_column.as_deref().unwrap_or_default(),
                    empty.len(),
                    if empty.len() == 1 { "" } else { "s" },
                    first.join(", ")
                ),
                Some(
                    "every example of a pair task needs its second text: fill those cells, or remove the rows from the file",
                ),
            ));
        }
    }
    if options.drop_duplicates {
        let rows_before = texts.len();
        let keys: Vec<String> = match &text_pairs {
            None => texts.clone(),
            Some(pairs) => texts
                .iter()
                .zip(pairs)
                .map(|(text, pair)| format!("{text}\u{0}{pair}"))
                .collect(),
        };
        let label_keys = labels.keys();
        let keep = deduplicate(
            &keys,
            &label_keys,
            options.conflicting_labels,
            &options.label_separator,
            report,
        );
        retain(&mut texts, &keep);
        if let Some(pairs) = &mut text_pairs {
            retain(pairs, &keep);
        }
        labels.retain(&keep);
        retain(&mut rows, &keep);
        step(report, "drop duplicates", rows_before, texts.len(), None);
    }
    Ok(CleanRows {
        texts,
        text_pairs,
        labels,
        rows,
    })
}

fn retain<T>(items: &mut Vec<T>, keep: &[bool]) {
    let mut flags = keep.iter();
    items.retain(|_| *flags.next().expect("one flag per item"));
}

/// Which rows survive deduplication (see the module comment for the rules).
fn deduplicate(
    texts: &[String],
    labels: &[Option<String>],
    rule: ConflictingLabels,
    separator: &str,
    report: &mut DataReport,
) -> Vec<bool> {
    let mut by_text: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut order = Vec::new();
    for (index, text) in texts.iter().enumerate() {
        let entry = by_text.entry(text.as_str()).or_default();
        if entry.is_empty() {
            order.push(text.as_str());
        }
        entry.push(index);
    }
    let mut keep = vec![false; texts.len()];
    for text in order {
        let indices = &by_text[text];
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for &index in indices {
            *counts
                .entry(labels[index].clone().unwrap_or_default())
                .or_default() += 1;
        }
        if counts.len() == 1 {
            keep[indices[0]] = true;
            continue;
        }
        report.conflicting_texts += 1;
        if report.conflict_examples.len() < 5 {
            report.conflict_examples.push(Conflict {
                // A pair's key holds its two texts apart with NUL.
                text: text.replace('\u{0}', " / "),
                // A label set's key holds its labels apart with NUL.
                labels: counts
                    .iter()
                    .map(|(labels, count)| (labels.replace('\u{0}', separator), *count))
                    .collect(),
            });
        }
        if rule == ConflictingLabels::Majority {
            let best = counts.values().max().copied().unwrap_or(0);
            let winners: Vec<&String> = counts
                .iter()
                .filter(|(_, count)| **count == best)
                .map(|(label, _)| label)
                .collect();
            if let [winner] = winners.as_slice() {
                let first = indices
                    .iter()
                    .find(|&&index| labels[index].clone().unwrap_or_default() == **winner);
                keep[*first.expect("the winner occurs")] = true;
            }
        }
    }
    keep
}

/// Label mapping: raw label -> class id, with class names.
struct LabelMap {
    classes: Vec<String>,
    ids: HashMap<String, u32>,
}

impl LabelMap {
    /// From `[labels]`: a class is named by the smallest raw label mapped to it.
    fn from_entries(entries: &[LabelEntry]) -> LabelMap {
        let count = entries
            .iter()
            .map(|entry| entry.class_id)
            .max()
            .map_or(0, |id| id as usize + 1);
        let mut classes: Vec<Option<String>> = vec![None; count];
        let mut sorted: Vec<&LabelEntry> = entries.iter().collect();
        sorted.sort_by(|a, b| a.raw.cmp(&b.raw));
        for entry in sorted {
            classes[entry.class_id as usize].get_or_insert_with(|| entry.raw.clone());
        }
        LabelMap {
            classes: classes.into_iter().map(Option::unwrap_or_default).collect(),
            ids: entries
                .iter()
                .map(|entry| (entry.raw.clone(), entry.class_id))
                .collect(),
        }
    }

    /// Inferred: the sorted distinct labels (of every label set).
    fn inferred(labels: &CleanLabels) -> LabelMap {
        let mut classes: Vec<String> = match labels {
            CleanLabels::Single(labels) => labels.iter().flatten().cloned().collect(),
            CleanLabels::Sets(sets) => sets.iter().flatten().cloned().collect(),
        };
        classes.sort();
        classes.dedup();
        let ids = classes
            .iter()
            .enumerate()
            .map(|(id, label)| (label.clone(), id as u32))
            .collect();
        LabelMap { classes, ids }
    }
}

/// Maps raw labels to class ids; unknown labels are an error, or are dropped: the row of a
/// single label, the label from a label set (the row stays, with the labels left).
fn map_labels(
    path: &Path,
    rows: CleanRows,
    map: &LabelMap,
    policy: UnknownLabels,
    report: &mut DataReport,
) -> anyhow::Result<Vec<Example>> {
    let mut unknown: BTreeMap<String, (usize, Vec<usize>)> = BTreeMap::new();
    let mut note_unknown = |shown: String, row: usize| {
        let entry = unknown.entry(shown).or_default();
        entry.0 += 1;
        if entry.1.len() < 3 {
            entry.1.push(row);
        }
    };
    let mut examples = Vec::with_capacity(rows.texts.len());
    let rows_in = rows.texts.len();
    let pairs: Box<dyn Iterator<Item = Option<String>>> = match rows.text_pairs {
        Some(pairs) => Box::new(pairs.into_iter().map(Some)),
        None => Box::new(std::iter::repeat(None)),
    };
    let multi_label = matches!(rows.labels, CleanLabels::Sets(_));
    let golds: Vec<Option<Gold>> = match rows.labels {
        CleanLabels::Single(labels) => labels
            .into_iter()
            .zip(&rows.rows)
            .map(
                |(label, &row)| match label.as_ref().and_then(|label| map.ids.get(label)) {
                    Some(&class) => Some(Gold::Class(class)),
                    None => {
                        note_unknown(
                            label.map_or_else(
                                || "(missing)".to_string(),
                                |label| format!("\"{label}\""),
                            ),
                            row,
                        );
                        None
                    }
                },
            )
            .collect(),
        CleanLabels::Sets(sets) => sets
            .into_iter()
            .zip(&rows.rows)
            .map(|(set, &row)| {
                let mut classes: Vec<u32> = Vec::with_capacity(set.len());
                for label in set {
                    match map.ids.get(&label) {
                        Some(&class) => classes.push(class),
                        None => note_unknown(format!("\"{label}\""), row),
                    }
                }
                classes.sort_unstable();
                classes.dedup();
                Some(Gold::Set(classes))
            })
            .collect(),
    };
    for (((text, text_pair), gold), row) in
        rows.texts.into_iter().zip(pairs).zip(golds).zip(rows.rows)
    {
        if let Some(gold) = gold {
            examples.push(Example {
                text,
                text_pair,
                gold,
                row,
            });
        }
    }
    if !unknown.is_empty() && policy == UnknownLabels::Error {
        let listing: Vec<String> = unknown
            .iter()
            .map(|(label, (count, rows))| {
                let rows: Vec<String> = rows.iter().map(usize::to_string).collect();
                format!(
                    "{label}: {count} row{} (first: row {})",
                    if *count == 1 { "" } else { "s" },
                    rows.join(", ")
                )
            })
            .collect();
        return Err(data_error(
            path,
            format!(
                "{} label value{} not in [labels]{}: {}",
                unknown.len(),
                if unknown.len() == 1 { "" } else { "s" },
                if multi_label {
                    " (inside label sets)"
                } else {
                    ""
                },
                listing.join("; ")
            ),
            Some(if multi_label {
                "add them to [labels], or set `unknown_labels = \"drop\"` in [data] to drop those labels from their sets (the rows stay)"
            } else {
                "add them to [labels], or set `unknown_labels = \"drop\"` in [data] to drop those rows"
            }),
        ));
    }
    let dropped_from_sets: usize = unknown.values().map(|(count, _)| count).sum();
    for (label, (count, _)) in unknown {
        *report.dropped_labels.entry(label).or_default() += count;
    }
    report.steps.push(StepCount {
        file: path.display().to_string(),
        step: "map labels".into(),
        rows_in,
        rows_out: examples.len(),
        note: (multi_label && dropped_from_sets > 0)
            .then(|| format!("{dropped_from_sets} unknown labels dropped from their sets")),
    });
    Ok(examples)
}

/// The split's strata: the class of a single label; for label sets, one stratum per distinct
/// set (in the order of first appearance), except that sets too rare to reach every part of a
/// split (fewer than `1 / smallest_share` examples, where `smallest_share` is the smallest
/// share the split takes: a held-out fraction, or a sample's) share one stratum of rare sets, so
/// that they are neither forced into validation and test nor kept out of train. Also their
/// number.
fn strata(examples: &[Example], smallest_share: f64) -> (Vec<u32>, usize) {
    let mut counts: HashMap<&Gold, usize> = HashMap::new();
    for example in examples {
        *counts.entry(&example.gold).or_default() += 1;
    }
    let least = if smallest_share > 0.0 {
        (1.0 / smallest_share).ceil() as usize
    } else {
        0
    };
    let mut ids: HashMap<&Gold, u32> = HashMap::new();
    let mut rare: Option<u32> = None;
    let mut classes = 0usize;
    let mut next = 0u32;
    let strata = examples
        .iter()
        .map(|example| match &example.gold {
            Gold::Class(class) => {
                classes = classes.max(*class as usize + 1);
                *class
            }
            gold @ Gold::Set(_) if counts[gold] < least => *rare.get_or_insert_with(|| {
                next += 1;
                next - 1
            }),
            gold @ Gold::Set(_) => *ids.entry(gold).or_insert_with(|| {
                next += 1;
                next - 1
            }),
        })
        .collect();
    (strata, classes.max(next as usize))
}

/// Runs every step for one planned run: its data settings and files, each read in the format
/// the plan resolved (extension or `data.format`).
pub fn prepare(run: &PlannedRun) -> anyhow::Result<PreparedData> {
    let settings = &run.settings;
    let files = &run.spec.data;
    let options = &settings.data;
    let mut report = DataReport::default();
    let paths = &settings.data_paths;
    let train_path = paths.train.as_path();
    let train_rows = clean_file(train_path, files.train.format, options, &mut report)?;
    if train_rows.texts.is_empty() {
        let emptied = report
            .steps
            .iter()
            .find(|step| step.rows_in > 0 && step.rows_out == 0)
            .map_or_else(
                || "the file has no data rows".to_string(),
                |step| format!("`{}` removed every row", step.step),
            );
        return Err(data_error(
            train_path,
            format!("no rows are left to train on: {emptied}"),
            Some("check `text_column`, the filters, and whether the texts are empty"),
        ));
    }
    let multi_label = options.label_format == LabelFormat::Multi;
    let map = match &settings.labels {
        Some(entries) => LabelMap::from_entries(entries),
        None => LabelMap::inferred(&train_rows.labels),
    };
    if multi_label && map.classes.is_empty() {
        return Err(data_error(
            train_path,
            "no label occurs in any label set: a multi-label classifier needs at least one class",
            Some("check `label_column` and `label_separator` in [data]"),
        ));
    }
    if !multi_label && map.classes.len() < 2 {
        return Err(data_error(
            train_path,
            format!(
                "only one class ({}) remains after cleaning: a classifier needs at least two",
                map.classes.first().map_or("none", String::as_str)
            ),
            Some("check `label_column` and the filters in [data]"),
        ));
    }
    let train_all = map_labels(
        train_path,
        train_rows,
        &map,
        options.unknown_labels,
        &mut report,
    )?;
    let other = |path: &Option<std::path::PathBuf>,
                 file: &Option<DataFileSpec>,
                 report: &mut DataReport| {
        path.as_ref()
            .zip(file.as_ref())
            .map(|(path, file)| {
                let rows = clean_file(path, file.format, options, report)?;
                map_labels(path, rows, &map, options.unknown_labels, report)
            })
            .transpose()
    };
    let validation_file = other(&paths.validation, &files.validation, &mut report)?;
    let test_file = other(&paths.test, &files.test, &mut report)?;

    let held_out = |fraction: f64, file: bool| if file { 0.0 } else { fraction };
    let shares = [
        held_out(options.validation_fraction, validation_file.is_some()),
        held_out(options.test_fraction, test_file.is_some()),
    ];
    let smallest_share =
        shares
            .into_iter()
            .filter(|share| *share > 0.0)
            .fold(0.0, |smallest: f64, share| {
                if smallest == 0.0 {
                    share
                } else {
                    smallest.min(share)
                }
            });
    let (labels, strata_count) = strata(&train_all, smallest_share);
    let parts = split::split(
        &labels,
        strata_count.max(map.classes.len()),
        if validation_file.is_some() {
            0.0
        } else {
            options.validation_fraction
        },
        if test_file.is_some() {
            0.0
        } else {
            options.test_fraction
        },
        options.split_seed,
        options.stratify,
    );
    let pick = |indices: &[usize]| {
        indices
            .iter()
            .map(|&index| train_all[index].clone())
            .collect::<Vec<_>>()
    };
    let mut train = pick(&parts.train);
    let validation = validation_file.unwrap_or_else(|| pick(&parts.validation));
    let test = test_file.unwrap_or_else(|| pick(&parts.test));
    report.steps.push(StepCount {
        file: train_path.display().to_string(),
        step: "split".into(),
        rows_in: train_all.len(),
        rows_out: train.len(),
        note: Some(format!(
            "train {}, validation {}, test {}",
            train.len(),
            validation.len(),
            test.len()
        )),
    });
    if let Some(size) = options.max_train_examples {
        let rows_in = train.len();
        let (labels, strata_count) = strata(&train, size as f64 / train.len().max(1) as f64);
        let kept = split::sample(
            &labels,
            strata_count.max(map.classes.len()),
            size,
            options.split_seed,
        );
        train = kept.iter().map(|&index| train[index].clone()).collect();
        report.steps.push(StepCount {
            file: train_path.display().to_string(),
            step: "sample train".into(),
            rows_in,
            rows_out: train.len(),
            note: Some(format!("max_train_examples = {size}")),
        });
    }
    if train.is_empty() || validation.is_empty() {
        let which = if train.is_empty() {
            "train"
        } else {
            "validation"
        };
        return Err(data_error(
            train_path,
            format!("the {which} split is empty"),
            Some("use more data, or change `validation_fraction` / `test_fraction` in [data]"),
        ));
    }

    let count = |examples: &[Example]| {
        let mut counts = vec![0usize; map.classes.len()];
        for example in examples {
            match &example.gold {
                Gold::Class(class) => counts[*class as usize] += 1,
                Gold::Set(set) => {
                    for class in set {
                        counts[*class as usize] += 1;
                    }
                }
            }
        }
        counts
    };
    if multi_label {
        let empty = |examples: &[Example]| {
            examples
                .iter()
                .filter(|example| example.gold == Gold::Set(Vec::new()))
                .count()
        };
        report.empty_label_sets = Some(vec![empty(&train), empty(&validation), empty(&test)]);
    }
    let (train_counts, validation_counts, test_counts) =
        (count(&train), count(&validation), count(&test));
    for (class, name) in map.classes.iter().enumerate() {
        report.class_counts.insert(
            name.clone(),
            vec![
                train_counts[class],
                validation_counts[class],
                test_counts[class],
            ],
        );
        if train_counts[class] == 0 {
            report
                .warnings
                .push(format!("class `{name}` has no training examples"));
        } else if validation_counts[class] == 0 {
            report.warnings.push(format!(
                "class `{name}` is absent from validation: its F1 cannot be measured; raise `validation_fraction` or keep `stratify = true`"
            ));
        }
    }

    let train_texts: std::collections::HashSet<(&str, Option<&str>)> =
        train.iter().map(Example::key).collect();
    report.leaked_validation = validation
        .iter()
        .filter(|example| train_texts.contains(&example.key()))
        .count();
    report.leaked_test = test
        .iter()
        .filter(|example| train_texts.contains(&example.key()))
        .count();
    if report.leaked_validation + report.leaked_test > 0 {
        report.warnings.push(format!(
            "{} validation and {} test {} also occur in train: their metrics will be optimistic",
            report.leaked_validation,
            report.leaked_test,
            if options.text_pair_column.is_some() {
                "pairs"
            } else {
                "texts"
            }
        ));
    }
    report.classes = map.classes.clone();
    Ok(PreparedData {
        classes: map.classes,
        train,
        validation,
        test,
        report,
    })
}
