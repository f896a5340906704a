//! The data stage: from the data files of a run's settings to labelled train, validation and
//! test examples, and a report of what happened to the rows.
//!
//! Steps, in this order, each recording rows in and out:
//! read -> decode -> select columns -> filters -> strip whitespace -> drop empty ->
//! drop duplicates -> map labels -> split -> leakage check.
//!
//! - decode: `encoding = "utf8"` stops at the first invalid byte (row and offset named);
//!   `"utf8-lossy"` repairs it and counts the rows.
//! - drop duplicates: a text repeated with the same label keeps its first row. A text that
//!   appears with different labels follows `conflicting_labels`: `drop` removes every row of it,
//!   `majority` keeps the first row of its most frequent label (a tie drops them all).
//! - map labels: with `[labels]`, unlisted labels are an error listing each with its count and
//!   first rows, or are dropped (`unknown_labels`); without it, the classes are the sorted distinct
//!   labels of the training file. A row without a label is an unlisted label.
//! - split: separate files, or a seeded (stratified) split of the training file.
//! - leakage: texts found both in train and in validation or test are counted.
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
    ConflictingLabels, DataFileSpec, DataFormat, DataOptions, Encoding, UnknownLabels,
};

/// One labelled text.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub text: String,
    pub label: u32,
    /// 1-based data row in its source file.
    pub row: usize,
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
}

/// Token lengths of the training texts under one tokenizer and `max_length`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenLengths {
    pub texts: usize,
    pub p50: usize,
    pub p90: usize,
    pub p99: usize,
    pub max: usize,
    pub max_length: usize,
    /// Texts longer than `max_length` tokens, which training truncates.
    pub truncated: usize,
    pub truncated_share: f64,
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
    labels: Vec<Option<String>>,
    rows: Vec<usize>,
}

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
    let frame = read::read_frame(path, format, decoded.as_ref().map(|decoded| &*decoded.text))
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
    let (raw, filter_counts) = read::select_and_filter(
        &frame,
        &options.text_column,
        &options.label_column,
        &options.filters,
    )
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
    step(report, "strip whitespace", rows_in, rows_in, None);
    let mut labels: Vec<Option<String>> = raw
        .labels
        .into_iter()
        .map(|label| {
            label
                .map(|label| label.trim().to_string())
                .filter(|label| !label.is_empty())
        })
        .collect();
    let mut rows = raw.rows;
    if options.drop_empty {
        let keep: Vec<bool> = texts.iter().map(|text| !text.is_empty()).collect();
        retain(&mut texts, &keep);
        retain(&mut labels, &keep);
        retain(&mut rows, &keep);
        step(report, "drop empty", rows_in, texts.len(), None);
    }
    if options.drop_duplicates {
        let rows_before = texts.len();
        let keep = deduplicate(&texts, &labels, options.conflicting_labels, report);
        retain(&mut texts, &keep);
        retain(&mut labels, &keep);
        retain(&mut rows, &keep);
        step(report, "drop duplicates", rows_before, texts.len(), None);
    }
    Ok(CleanRows {
        texts,
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
                text: text.to_string(),
                labels: counts.clone(),
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

    /// Inferred: the sorted distinct labels.
    fn inferred(labels: &[Option<String>]) -> LabelMap {
        let mut classes: Vec<String> = labels.iter().flatten().cloned().collect();
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

/// Maps raw labels to class ids; unknown labels are an error or dropped.
fn map_labels(
    path: &Path,
    rows: CleanRows,
    map: &LabelMap,
    policy: UnknownLabels,
    report: &mut DataReport,
) -> anyhow::Result<Vec<Example>> {
    let mut unknown: BTreeMap<String, (usize, Vec<usize>)> = BTreeMap::new();
    let mut examples = Vec::with_capacity(rows.texts.len());
    let rows_in = rows.texts.len();
    for ((text, label), row) in rows.texts.into_iter().zip(rows.labels).zip(rows.rows) {
        match label.as_ref().and_then(|label| map.ids.get(label)) {
            Some(&class) => examples.push(Example {
                text,
                label: class,
                row,
            }),
            None => {
                let shown =
                    label.map_or_else(|| "(missing)".to_string(), |label| format!("\"{label}\""));
                let entry = unknown.entry(shown).or_default();
                entry.0 += 1;
                if entry.1.len() < 3 {
                    entry.1.push(row);
                }
            }
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
                "{} label value{} not in [labels]: {}",
                unknown.len(),
                if unknown.len() == 1 { "" } else { "s" },
                listing.join("; ")
            ),
            Some(
                "add them to [labels], or set `unknown_labels = \"drop\"` in [data] to drop those rows",
            ),
        ));
    }
    for (label, (count, _)) in unknown {
        *report.dropped_labels.entry(label).or_default() += count;
    }
    report.steps.push(StepCount {
        file: path.display().to_string(),
        step: "map labels".into(),
        rows_in,
        rows_out: examples.len(),
        note: None,
    });
    Ok(examples)
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
    let map = match &settings.labels {
        Some(entries) => LabelMap::from_entries(entries),
        None => LabelMap::inferred(&train_rows.labels),
    };
    if map.classes.len() < 2 {
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

    let labels: Vec<u32> = train_all.iter().map(|example| example.label).collect();
    let parts = split::split(
        &labels,
        map.classes.len(),
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
        let labels: Vec<u32> = train.iter().map(|example| example.label).collect();
        let kept = split::sample(&labels, map.classes.len(), size, options.split_seed);
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
            counts[example.label as usize] += 1;
        }
        counts
    };
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

    let train_texts: std::collections::HashSet<&str> =
        train.iter().map(|example| example.text.as_str()).collect();
    report.leaked_validation = validation
        .iter()
        .filter(|example| train_texts.contains(example.text.as_str()))
        .count();
    report.leaked_test = test
        .iter()
        .filter(|example| train_texts.contains(example.text.as_str()))
        .count();
    if report.leaked_validation + report.leaked_test > 0 {
        report.warnings.push(format!(
            "{} validation and {} test texts also occur in train: their metrics will be optimistic",
            report.leaked_validation, report.leaked_test
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
