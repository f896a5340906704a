//! The results of many runs as one table, built on polars: one row per run with its hash,
//! experiment, status, hyperparameters (from `spec.json`), kept epoch, validation figures at that
//! epoch, test figures, training time and date. Filtering (`--where`), sorting, `--only-changed`,
//! `--group-seeds` (mean, std and n over seeds) and the exporters (table, markdown, CSV, JSON,
//! Parquet) all work on the frame.
//!
//! Reading 1,000 run directories costs a few thousand file reads, so rows are kept in an index,
//! `<store>/.results-index.json`, keyed by each run's `run.json` size and modification time. The
//! index is only a cache: a missing, damaged or stale entry is rebuilt from the run directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::UNIX_EPOCH;

use anyhow::{Context, bail};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::plan::spec::RunHash;
use crate::store::run_files::{RunResult, read_result};
use crate::store::{RECORD_FILE, RunStatus, RunStore, SPEC_FILE};
use crate::support::atomic_file;

const INDEX_FILE: &str = ".results-index.json";
const INDEX_VERSION: u32 = 1;

/// What the table knows about one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    pub hash: RunHash,
    pub experiment: Option<String>,
    pub status: RunStatus,
    /// Hyperparameters by column name, in spec order.
    pub parameters: Vec<(String, Value)>,
    pub result: Option<RunResult>,
    /// When the run last finished (done, failed or interrupted).
    pub finished_at: Option<String>,
}

/// The hyperparameter columns of a spec: every `[train]` key by its name, the other `[data]` and
/// `[model]` settings as `data.x` / `model.x`, and the data and weights files as the first 12
/// digits of their sha256 (`data.train`, `model`).
pub fn parameters_of(spec: &Value) -> Vec<(String, Value)> {
    let mut parameters = Vec::new();
    let short = |file: &Value| -> Value {
        file.get("sha256")
            .and_then(Value::as_str)
            .map(|sha| Value::String(sha[..sha.len().min(12)].to_string()))
            .unwrap_or(Value::Null)
    };
    if let Some(model) = spec.get("model") {
        let files = model.get("files");
        let weights = files.and_then(|files| {
            files
                .get("model.safetensors")
                .or_else(|| files.get("pytorch_model.bin"))
        });
        parameters.push((
            "model".to_string(),
            weights.map(short).unwrap_or(Value::Null),
        ));
    }
    if let Some(Value::Object(data)) = spec.get("data") {
        for (key, value) in data {
            match key.as_str() {
                "train" | "validation" | "test" => {
                    parameters.push((format!("data.{key}"), short(value)));
                }
                "filters" => {
                    if value.as_array().is_some_and(|filters| !filters.is_empty()) {
                        parameters.push(("data.filters".into(), Value::String(value.to_string())));
                    }
                }
                _ => parameters.push((format!("data.{key}"), value.clone())),
            }
        }
    }
    if let Some(Value::Object(model)) = spec.get("model") {
        for (key, value) in model {
            if key != "files" {
                parameters.push((format!("model.{key}"), value.clone()));
            }
        }
    }
    if let Some(Value::Object(train)) = spec.get("train") {
        for (key, value) in train {
            parameters.push((key.clone(), value.clone()));
        }
    }
    parameters
}

#[derive(Serialize, Deserialize, Default)]
struct Index {
    version: u32,
    /// Short hash -> (run.json size, modification time in ns, row).
    rows: BTreeMap<String, (u64, u128, RunRow)>,
}

fn stamp(path: &Path) -> Option<(u64, u128)> {
    let metadata = std::fs::metadata(path).ok()?;
    let modified = metadata.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some((metadata.len(), modified.as_nanos()))
}

fn read_row(store: &RunStore, hash: &RunHash) -> anyhow::Result<RunRow> {
    let directory = store.run_directory(hash);
    let spec: Value = serde_json::from_slice(&store.spec_bytes(hash)?)
        .with_context(|| format!("{} is not JSON", directory.join(SPEC_FILE).display()))?;
    let record = store.record(hash)?;
    let status = store.status(hash)?;
    let result = if status == RunStatus::Done {
        Some(read_result(&directory)?)
    } else {
        None
    };
    Ok(RunRow {
        hash: hash.clone(),
        experiment: record.as_ref().and_then(|record| record.experiment.clone()),
        status,
        parameters: parameters_of(&spec),
        result,
        finished_at: record.and_then(|record| {
            record
                .finished_at
                .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        }),
    })
}

/// Every run of the store, through the index (rebuilt where stale; saved when it changed, if the
/// store can be written).
pub fn store_rows(store: &RunStore) -> anyhow::Result<Vec<RunRow>> {
    let index_path = store.root().join(INDEX_FILE);
    let mut index: Index = std::fs::read(&index_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .filter(|index: &Index| index.version == INDEX_VERSION)
        .unwrap_or_default();
    let mut changed = false;
    let mut rows = Vec::new();
    let hashes = store.runs()?;
    for hash in &hashes {
        let short = hash.short().to_string();
        let record_stamp = stamp(&store.run_directory(hash).join(RECORD_FILE));
        let cached = match (&record_stamp, index.rows.get(&short)) {
            (Some((size, time)), Some((cached_size, cached_time, row)))
                if size == cached_size && time == cached_time && row.hash == *hash =>
            {
                // A `running` record may belong to a dead process: ask the lock again.
                let mut row = row.clone();
                if row.status == RunStatus::Running {
                    row.status = store.status(hash)?;
                }
                Some(row)
            }
            _ => None,
        };
        let row = match cached {
            Some(row) => row,
            None => {
                let row = read_row(store, hash)?;
                if let Some((size, time)) = record_stamp {
                    index.rows.insert(short, (size, time, row.clone()));
                    changed = true;
                }
                row
            }
        };
        rows.push(row);
    }
    let before = index.rows.len();
    index
        .rows
        .retain(|short, _| hashes.iter().any(|hash| hash.short() == short));
    changed |= index.rows.len() != before;
    if changed {
        index.version = INDEX_VERSION;
        if let Ok(bytes) = serde_json::to_vec(&index) {
            // The index is a cache: a store that cannot be written only costs time.
            let _ = atomic_file::write(&index_path, &bytes);
        }
    }
    Ok(rows)
}

/// The rows of the runs a plan holds, in plan order: the store's row for each trained run, a
/// `new` row (its settings, no figures) for each run not trained yet.
pub fn planned_rows(rows: Vec<RunRow>, plan: &crate::plan::Plan) -> anyhow::Result<Vec<RunRow>> {
    let mut rows = rows;
    let mut planned = Vec::with_capacity(plan.runs.len());
    for run in &plan.runs {
        let name = plan.experiments[run.experiment].name.clone();
        match rows.iter().position(|row| row.hash == run.hash) {
            Some(index) => {
                let mut row = rows.swap_remove(index);
                row.experiment.get_or_insert(name);
                planned.push(row);
            }
            None => planned.push(RunRow {
                hash: run.hash.clone(),
                experiment: Some(name),
                status: RunStatus::New,
                parameters: parameters_of(&serde_json::to_value(&run.spec)?),
                result: None,
                finished_at: None,
            }),
        }
    }
    Ok(planned)
}

/// Metric columns, in table order.
pub const METRIC_COLUMNS: &[&str] = &[
    "val_loss",
    "val_accuracy",
    "val_macro_f1",
    "test_loss",
    "test_accuracy",
    "test_macro_f1",
];

/// Whether a larger value of a column is better (for `--sort`).
pub fn higher_is_better(column: &str) -> bool {
    !(column.ends_with("loss") || column.ends_with("seconds") || column == "hash")
}

fn json_column(name: &str, values: &[Value]) -> Column {
    let name = PlSmallStr::from(name);
    let all =
        |check: fn(&Value) -> bool| values.iter().all(|value| value.is_null() || check(value));
    if all(|value| value.is_i64() || value.is_u64()) {
        Column::new(name, values.iter().map(Value::as_i64).collect::<Vec<_>>())
    } else if all(Value::is_number) {
        Column::new(name, values.iter().map(Value::as_f64).collect::<Vec<_>>())
    } else if all(Value::is_boolean) {
        Column::new(name, values.iter().map(Value::as_bool).collect::<Vec<_>>())
    } else {
        Column::new(
            name,
            values
                .iter()
                .map(|value| match value {
                    Value::Null => None,
                    Value::String(text) => Some(text.clone()),
                    other => Some(other.to_string()),
                })
                .collect::<Vec<_>>(),
        )
    }
}

/// The table as a frame: `hash, experiment, status`, the hyperparameters, `best_epoch, epochs`,
/// the metric columns, `train_seconds, samples_per_second, finished_at`.
pub fn frame(rows: &[RunRow]) -> anyhow::Result<DataFrame> {
    let mut parameter_names: Vec<String> = Vec::new();
    for row in rows {
        for (name, _) in &row.parameters {
            if !parameter_names.contains(name) {
                parameter_names.push(name.clone());
            }
        }
    }
    let mut columns = vec![
        Column::new(
            "hash".into(),
            rows.iter()
                .map(|row| row.hash.to_string())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "experiment".into(),
            rows.iter()
                .map(|row| row.experiment.clone())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "status".into(),
            rows.iter()
                .map(|row| row.status.to_string())
                .collect::<Vec<_>>(),
        ),
    ];
    for name in &parameter_names {
        let values: Vec<Value> = rows
            .iter()
            .map(|row| {
                row.parameters
                    .iter()
                    .find(|(key, _)| key == name)
                    .map(|(_, value)| value.clone())
                    .unwrap_or(Value::Null)
            })
            .collect();
        columns.push(json_column(name, &values));
    }
    let result = |pick: fn(&RunResult) -> Option<f64>| -> Vec<Option<f64>> {
        rows.iter()
            .map(|row| row.result.as_ref().and_then(pick))
            .collect()
    };
    columns.push(Column::new(
        "best_epoch".into(),
        rows.iter()
            .map(|row| row.result.as_ref().map(|result| result.best_epoch as i64))
            .collect::<Vec<_>>(),
    ));
    columns.push(Column::new(
        "epochs_run".into(),
        rows.iter()
            .map(|row| row.result.as_ref().map(|result| result.epochs_run as i64))
            .collect::<Vec<_>>(),
    ));
    columns.push(Column::new(
        "val_loss".into(),
        result(|r| Some(r.validation.loss)),
    ));
    columns.push(Column::new(
        "val_accuracy".into(),
        result(|r| Some(r.validation.accuracy)),
    ));
    columns.push(Column::new(
        "val_macro_f1".into(),
        result(|r| Some(r.validation.macro_f1)),
    ));
    columns.push(Column::new(
        "test_loss".into(),
        result(|r| r.test.as_ref().map(|test| test.loss)),
    ));
    columns.push(Column::new(
        "test_accuracy".into(),
        result(|r| r.test.as_ref().map(|test| test.accuracy)),
    ));
    columns.push(Column::new(
        "test_macro_f1".into(),
        result(|r| r.test.as_ref().map(|test| test.macro_f1)),
    ));
    columns.push(Column::new(
        "train_seconds".into(),
        result(|r| Some(r.train_seconds)),
    ));
    columns.push(Column::new(
        "samples_per_second".into(),
        result(|r| Some(r.train_samples_per_second)),
    ));
    columns.push(Column::new(
        "finished_at".into(),
        rows.iter()
            .map(|row| row.finished_at.clone())
            .collect::<Vec<_>>(),
    ));
    Ok(DataFrame::new(rows.len(), columns)?)
}

/// The hyperparameter columns of a frame made by [`frame`].
pub fn parameter_columns(frame: &DataFrame) -> Vec<String> {
    let names: Vec<String> = frame
        .get_column_names()
        .iter()
        .map(|name| name.to_string())
        .collect();
    let start = names
        .iter()
        .position(|name| name == "status")
        .map_or(0, |i| i + 1);
    let end = names
        .iter()
        .position(|name| name == "best_epoch")
        .unwrap_or(names.len());
    names[start..end].to_vec()
}

/// Drops the hyperparameter columns that hold one value over every row.
pub fn only_changed(frame: DataFrame) -> anyhow::Result<DataFrame> {
    let mut constant = Vec::new();
    for name in parameter_columns(&frame) {
        let column = frame.column(&name)?;
        if column.n_unique()? <= 1 {
            constant.push(name);
        }
    }
    Ok(frame.drop_many(constant))
}

/// One `--where` condition: `column op value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub column: String,
    pub operator: &'static str,
    pub value: String,
}

/// Parses `--where`: conditions joined by `,` or ` and `, each `column op value` with op one of
/// `= == != < <= > >=`.
pub fn parse_where(text: &str) -> anyhow::Result<Vec<Condition>> {
    let mut conditions = Vec::new();
    for part in text.split(" and ").flat_map(|part| part.split(',')) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some((at, operator)) = ["<=", ">=", "!=", "==", "=", "<", ">"]
            .iter()
            .filter_map(|operator| part.find(operator).map(|at| (at, *operator)))
            .min_by_key(|(at, operator)| (*at, std::cmp::Reverse(operator.len())))
        else {
            bail!(
                "`{part}` is not a condition: write `column op value` with op one of = != < <= > >=, e.g. `val_macro_f1>0.7,learning_rate=2e-5`"
            );
        };
        let column = part[..at].trim().to_string();
        let value = part[at + operator.len()..].trim().to_string();
        if column.is_empty() || value.is_empty() {
            bail!("`{part}` is not a condition: a column and a value are needed");
        }
        conditions.push(Condition {
            column,
            operator: if operator == "==" { "=" } else { operator },
            value,
        });
    }
    Ok(conditions)
}

/// Keeps the rows meeting every condition. Unknown columns are an error listing the columns.
pub fn filter(frame: DataFrame, conditions: &[Condition]) -> anyhow::Result<DataFrame> {
    if conditions.is_empty() {
        return Ok(frame);
    }
    let mut predicate: Option<Expr> = None;
    for condition in conditions {
        let column = frame.column(&condition.column).map_err(|_| {
            anyhow::anyhow!(
                "--where: no column `{}`; the columns are: {}",
                condition.column,
                frame
                    .get_column_names()
                    .iter()
                    .map(|name| name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        let value = if column.dtype().is_primitive_numeric() {
            let number: f64 = condition.value.parse().map_err(|_| {
                anyhow::anyhow!(
                    "--where: `{}` is numeric, `{}` is not a number",
                    condition.column,
                    condition.value
                )
            })?;
            lit(number)
        } else if column.dtype() == &DataType::Boolean {
            lit(condition.value == "true")
        } else {
            lit(condition.value.clone())
        };
        let target = col(condition.column.as_str());
        let expression = match condition.operator {
            "=" => target.eq(value),
            "!=" => target.neq(value),
            "<" => target.lt(value),
            "<=" => target.lt_eq(value),
            ">" => target.gt(value),
            _ => target.gt_eq(value),
        };
        predicate = Some(match predicate {
            None => expression,
            Some(previous) => previous.and(expression),
        });
    }
    Ok(frame
        .lazy()
        .filter(predicate.expect("at least one condition"))
        .collect()?)
}

/// Sorts by a column, best first for metrics (missing values last).
pub fn sort(frame: DataFrame, column: &str) -> anyhow::Result<DataFrame> {
    if frame.column(column).is_err() {
        bail!(
            "--sort: no column `{column}`; try val_macro_f1, val_accuracy, val_loss, test_accuracy, train_seconds or a hyperparameter"
        );
    }
    Ok(frame
        .lazy()
        .sort(
            [column],
            SortMultipleOptions::default()
                .with_order_descending(higher_is_better(column))
                .with_nulls_last(true)
                .with_maintain_order(true),
        )
        .collect()?)
}

/// Folds rows that differ only in `seed` into one: the first hash, `n`, and the mean and
/// standard deviation of each metric (`<metric>` and `<metric>_std`). Only `done` runs count.
pub fn group_seeds(frame: DataFrame) -> anyhow::Result<DataFrame> {
    let mut keys: Vec<Expr> = vec![col("experiment")];
    keys.extend(
        parameter_columns(&frame)
            .iter()
            .filter(|name| name.as_str() != "seed")
            .map(|name| col(name.as_str())),
    );
    let mut aggregations = vec![
        col("hash").first(),
        len().alias("n"),
        col("train_seconds").mean(),
    ];
    for metric in METRIC_COLUMNS {
        aggregations.push(col(*metric).mean());
        aggregations.push(col(*metric).std(1).alias(format!("{metric}_std")));
    }
    Ok(frame
        .lazy()
        .filter(col("status").eq(lit("done")))
        .group_by_stable(keys)
        .agg(aggregations)
        .collect()?)
}

/// A cell as text for the table and markdown formats.
fn cell(name: &str, value: AnyValue) -> String {
    match value {
        AnyValue::Null => "-".into(),
        AnyValue::Float64(number) => {
            if name == "train_seconds" {
                format!("{}s", number.round())
            } else if name == "samples_per_second" {
                format!("{number:.1}")
            } else if METRIC_COLUMNS.iter().any(|metric| name.starts_with(metric)) {
                format!("{number:.4}")
            } else {
                crate::experiment::format_float(number)
            }
        }
        AnyValue::String(text) if name == "hash" => text[..text.len().min(12)].to_string(),
        AnyValue::StringOwned(text) if name == "hash" => text[..text.len().min(12)].to_string(),
        AnyValue::String(text) => text.to_string(),
        AnyValue::StringOwned(text) => text.to_string(),
        other => other.to_string(),
    }
}

/// The frame's headers and cells as text, as the table shows them.
pub fn text_cells(frame: &DataFrame) -> anyhow::Result<(Vec<String>, Vec<Vec<String>>)> {
    let headers: Vec<String> = frame
        .get_column_names()
        .iter()
        .map(|name| name.to_string())
        .collect();
    let mut rows = Vec::with_capacity(frame.height());
    for index in 0..frame.height() {
        let mut row = Vec::with_capacity(headers.len());
        for column in frame.columns() {
            row.push(cell(column.name(), column.get(index)?));
        }
        rows.push(row);
    }
    Ok((headers, rows))
}

/// An aligned text table (hashes shortened to 12 digits).
pub fn table_text(frame: &DataFrame) -> anyhow::Result<String> {
    let (headers, rows) = text_cells(frame)?;
    Ok(crate::report::tables::text_table(&headers, &rows))
}

/// A GitHub-flavoured markdown table.
pub fn table_markdown(frame: &DataFrame) -> anyhow::Result<String> {
    let (headers, rows) = text_cells(frame)?;
    let escape = |text: &str| text.replace('|', "\\|");
    let mut out = format!(
        "| {} |\n|{}|\n",
        headers
            .iter()
            .map(|h| escape(h))
            .collect::<Vec<_>>()
            .join(" | "),
        headers.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    for row in rows {
        out.push_str(&format!(
            "| {} |\n",
            row.iter()
                .map(|c| escape(c))
                .collect::<Vec<_>>()
                .join(" | ")
        ));
    }
    Ok(out)
}

/// CSV with full hashes and full-precision numbers.
pub fn table_csv(frame: &mut DataFrame) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    CsvWriter::new(&mut bytes).finish(frame)?;
    Ok(bytes)
}

/// A JSON array of row objects.
pub fn table_json(frame: &mut DataFrame) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    JsonWriter::new(&mut bytes)
        .with_json_format(JsonFormat::Json)
        .finish(frame)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Parquet bytes.
pub fn table_parquet(frame: &mut DataFrame) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    ParquetWriter::new(&mut bytes).finish(frame)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_clauses_parse() {
        let conditions =
            parse_where("val_macro_f1>=0.7, learning_rate=2e-5 and status != failed").unwrap();
        assert_eq!(
            conditions,
            vec![
                Condition {
                    column: "val_macro_f1".into(),
                    operator: ">=",
                    value: "0.7".into()
                },
                Condition {
                    column: "learning_rate".into(),
                    operator: "=",
                    value: "2e-5".into()
                },
                Condition {
                    column: "status".into(),
                    operator: "!=",
                    value: "failed".into()
                },
            ]
        );
        assert!(parse_where("accuracy").is_err());
        assert!(parse_where(">3").is_err());
    }
}
