//! The results of many runs as one table, built on polars from the store's rows
//! ([`RunRow`], `store::results_index`): one row per run with its hash, experiment, status,
//! hyperparameters (from `spec.json`), kept epoch, validation figures at that epoch, test
//! figures, training time and date. Filtering (`--where`), sorting, `--only-changed`,
//! `--group-seeds` (mean, std and n over seeds) and the exporters (table, markdown, CSV, JSON,
//! Parquet) all work on the frame.

use anyhow::bail;
use polars::prelude::*;
use serde_json::Value;

use crate::store::results_index::RunRow;
use crate::store::run_files::RunResult;

/// Metric columns, in table order.
pub const METRIC_COLUMNS: &[&str] = &[
    "val_loss",
    "val_accuracy",
    "val_macro_f1",
    "test_loss",
    "test_accuracy",
    "test_macro_f1",
];

/// The metric columns a table gains when one of its runs is multi-label (`val_accuracy` is
/// then the subset accuracy).
pub const MULTI_LABEL_METRIC_COLUMNS: &[&str] = &[
    "val_micro_f1",
    "val_samples_f1",
    "val_hamming_loss",
    "test_micro_f1",
    "test_samples_f1",
    "test_hamming_loss",
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

/// The table as a frame: `hash, experiment, status`, the hyperparameters, `best_epoch,
/// best_step, epochs_run`,
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
    // Search trials: the trial numbers a run stands for (only when some run has any).
    if rows.iter().any(|row| !row.trials.is_empty()) {
        columns.push(Column::new(
            "trial".into(),
            rows.iter()
                .map(|row| {
                    (!row.trials.is_empty()).then(|| {
                        row.trials
                            .iter()
                            .map(|trial| trial.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                })
                .collect::<Vec<_>>(),
        ));
    }
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
        "best_step".into(),
        rows.iter()
            .map(|row| {
                row.result
                    .as_ref()
                    .and_then(|result| result.best_step)
                    .map(|step| step as i64)
            })
            .collect::<Vec<_>>(),
    ));
    columns.push(Column::new(
        "epochs_run".into(),
        rows.iter()
            .map(|row| {
                row.result
                    .as_ref()
                    .map(|result| result.epochs_run)
                    .or(row.pruned_epochs)
                    .map(|epochs| epochs as i64)
            })
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
    let multi_label = rows.iter().any(|row| {
        row.result
            .as_ref()
            .is_some_and(|result| result.validation.multi_label.is_some())
    });
    fn figure(
        evaluation: Option<&crate::metrics::Evaluation>,
        value: fn(&crate::metrics::MultiLabelFigures) -> f64,
    ) -> Option<f64> {
        evaluation.and_then(|evaluation| evaluation.multi_label.as_deref().map(value))
    }
    if multi_label {
        columns.push(Column::new(
            "val_micro_f1".into(),
            result(|r| figure(Some(&r.validation), |f| f.micro_f1)),
        ));
        columns.push(Column::new(
            "val_samples_f1".into(),
            result(|r| figure(Some(&r.validation), |f| f.samples_f1)),
        ));
        columns.push(Column::new(
            "val_hamming_loss".into(),
            result(|r| figure(Some(&r.validation), |f| f.hamming_loss)),
        ));
    }
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
    if multi_label {
        columns.push(Column::new(
            "test_micro_f1".into(),
            result(|r| figure(r.test.as_ref(), |f| f.micro_f1)),
        ));
        columns.push(Column::new(
            "test_samples_f1".into(),
            result(|r| figure(r.test.as_ref(), |f| f.samples_f1)),
        ));
        columns.push(Column::new(
            "test_hamming_loss".into(),
            result(|r| figure(r.test.as_ref(), |f| f.hamming_loss)),
        ));
    }
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
    let present: Vec<String> = frame
        .get_column_names()
        .iter()
        .map(|name| name.to_string())
        .collect();
    for metric in METRIC_COLUMNS.iter().chain(
        MULTI_LABEL_METRIC_COLUMNS
            .iter()
            .filter(|metric| present.iter().any(|name| name == *metric)),
    ) {
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
            } else if METRIC_COLUMNS
                .iter()
                .chain(MULTI_LABEL_METRIC_COLUMNS)
                .any(|metric| name.starts_with(metric))
            {
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
