//! Exporters: pure functions from rows to bytes (text table, CSV, JSON), so that every format is
//! snapshot-tested without running anything. The commands decide what the rows hold and where the
//! bytes go (data to stdout, summaries and messages to stderr).

use serde_json::{Map, Value, json};

use crate::data::{DataReport, TokenLengths};
use crate::experiment::Setting;
use crate::plan::spec::RunHash;
use crate::store::RunStatus;

/// One row of `bertlab plan`.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanRow {
    /// 1-based position in the plan.
    pub index: usize,
    pub experiment: String,
    pub hash: RunHash,
    pub status: RunStatus,
    /// One value per column of the plan (`None` for an optional key left unset).
    pub parameters: Vec<Option<Setting>>,
}

/// Output formats of tabular commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TableFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    /// An array of objects, one per row.
    Json,
    /// A header row, then one row per run.
    Csv,
}

pub use crate::support::progress::count_of;

/// Left-aligned columns separated by two spaces, with a header row; no trailing spaces.
pub fn text_table(headers: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|header| header.chars().count())
        .collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(headers).chain(rows.iter().map(Vec::as_slice)) {
        let mut line = String::new();
        for (column, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if column > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn display(value: &Option<Setting>) -> String {
    value.as_ref().map(Setting::to_string).unwrap_or_default()
}

/// The plan as a text table: `#`, `hash` (12 digits), the experiment when several are planned,
/// the columns that vary, and `status`.
pub fn plan_table(columns: &[String], rows: &[PlanRow], show_experiment: bool) -> String {
    let mut headers = vec!["#".to_string(), "hash".to_string()];
    if show_experiment {
        headers.push("experiment".into());
    }
    headers.extend(columns.iter().cloned());
    headers.push("status".into());
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut cells = vec![row.index.to_string(), row.hash.short().to_string()];
            if show_experiment {
                cells.push(row.experiment.clone());
            }
            cells.extend(row.parameters.iter().map(display));
            cells.push(row.status.to_string());
            cells
        })
        .collect();
    text_table(&headers, &body)
}

/// Examples as CSV: `row` (1-based data row of the source file), `text`, `text_pair` (pair
/// tasks only), `label` (the class name; a label set joined by `separator`).
pub fn examples_csv(
    examples: &[crate::data::Example],
    classes: &[String],
    separator: &str,
) -> Vec<u8> {
    let pairs = examples.iter().any(|example| example.text_pair.is_some());
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["row", "text"];
    if pairs {
        header.push("text_pair");
    }
    header.push("label");
    writer.write_record(&header).expect("writing to memory");
    for example in examples {
        let mut record = vec![example.row.to_string(), example.text.clone()];
        if pairs {
            record.push(example.text_pair.clone().unwrap_or_default());
        }
        record.push(match &example.gold {
            crate::data::Gold::Class(class) => classes[*class as usize].clone(),
            crate::data::Gold::Set(set) => crate::metrics::join_classes(set, classes, separator),
        });
        writer.write_record(&record).expect("writing to memory");
    }
    writer.into_inner().expect("writing to memory")
}

/// The plan as CSV: `index,experiment,hash,<columns>,status`, the full 64-digit hash.
pub fn plan_csv(columns: &[String], rows: &[PlanRow]) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["index".to_string(), "experiment".into(), "hash".into()];
    header.extend(columns.iter().cloned());
    header.push("status".into());
    writer.write_record(&header).expect("writing to memory");
    for row in rows {
        let mut record = vec![
            row.index.to_string(),
            row.experiment.clone(),
            row.hash.to_string(),
        ];
        record.extend(row.parameters.iter().map(display));
        record.push(row.status.to_string());
        writer.write_record(&record).expect("writing to memory");
    }
    writer.into_inner().expect("writing to memory")
}

fn setting_json(value: &Option<Setting>) -> Value {
    match value {
        None => Value::Null,
        Some(Setting::Bool(value)) => json!(value),
        Some(Setting::Integer(value)) => json!(value),
        Some(Setting::Float(value)) => json!(value),
        Some(Setting::Text(value)) => json!(value),
    }
}

/// The plan as a JSON array: one object per run with `index`, `experiment`, `hash` (64 digits),
/// `short_hash`, `status`, and each column under its own name, numbers as numbers.
pub fn plan_json(columns: &[String], rows: &[PlanRow]) -> String {
    let array: Vec<Value> = rows
        .iter()
        .map(|row| {
            let mut object = Map::new();
            object.insert("index".into(), json!(row.index));
            object.insert("experiment".into(), json!(row.experiment));
            object.insert("hash".into(), json!(row.hash.as_str()));
            object.insert("short_hash".into(), json!(row.hash.short()));
            object.insert("status".into(), json!(row.status.as_str()));
            for (column, value) in columns.iter().zip(&row.parameters) {
                object.insert(column.clone(), setting_json(value));
            }
            Value::Object(object)
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&array).expect("plain data");
    text.push('\n');
    text
}

/// `18 runs, 4 done, 14 new`: the count, then each status that occurs, in a fixed order.
pub fn plan_summary(rows: &[PlanRow]) -> String {
    let total = rows.len();
    let mut parts = vec![count_of(total, "run")];
    for status in RunStatus::ALL {
        let count = rows.iter().filter(|row| row.status == status).count();
        if count > 0 {
            parts.push(format!("{count} {status}"));
        }
    }
    parts.join(", ")
}

/// The data report of one data setup, for people: rows per step, class counts per split, token
/// lengths, warnings. `title` heads it.
pub fn data_report_text(
    title: &str,
    report: &DataReport,
    lengths: Option<&TokenLengths>,
) -> String {
    let mut out = format!("{title}\n\n");
    let headers: Vec<String> = ["file", "step", "rows in", "rows out", "note"]
        .iter()
        .map(|h| h.to_string())
        .collect();
    let rows: Vec<Vec<String>> = report
        .steps
        .iter()
        .map(|step| {
            vec![
                step.file.clone(),
                step.step.clone(),
                step.rows_in.to_string(),
                step.rows_out.to_string(),
                step.note.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&text_table(&headers, &rows));
    out.push('\n');
    let headers: Vec<String> = ["class", "train", "validation", "test"]
        .iter()
        .map(|h| h.to_string())
        .collect();
    let mut totals = [0usize; 3];
    let mut rows: Vec<Vec<String>> = Vec::new();
    for class in &report.classes {
        let counts = report
            .class_counts
            .get(class)
            .cloned()
            .unwrap_or_else(|| vec![0; 3]);
        for (total, count) in totals.iter_mut().zip(&counts) {
            *total += count;
        }
        let mut row = vec![class.clone()];
        row.extend(counts.iter().map(usize::to_string));
        rows.push(row);
    }
    if let Some(empty) = &report.empty_label_sets {
        let mut row = vec!["(no labels)".to_string()];
        row.extend(empty.iter().map(usize::to_string));
        rows.push(row);
    }
    // A multi-label example counts once per label it has: the total counts labels.
    let mut total_row = vec![if report.empty_label_sets.is_some() {
        "total labels".to_string()
    } else {
        "total".to_string()
    }];
    total_row.extend(totals.iter().map(usize::to_string));
    rows.push(total_row);
    out.push_str(&text_table(&headers, &rows));
    if report.conflicting_texts > 0 {
        out.push_str(&format!(
            "\n{} texts appear with different labels",
            report.conflicting_texts
        ));
        if let Some(example) = report.conflict_examples.first() {
            let labels: Vec<String> = example
                .labels
                .iter()
                .map(|(label, count)| format!("{label} x{count}"))
                .collect();
            out.push_str(&format!(
                ", e.g. \"{}\" ({})",
                example.text,
                labels.join(", ")
            ));
        }
        out.push('\n');
    }
    if !report.dropped_labels.is_empty() {
        let dropped: Vec<String> = report
            .dropped_labels
            .iter()
            .map(|(label, count)| format!("{label} x{count}"))
            .collect();
        out.push_str(&format!(
            "\ndropped {} not in [labels]: {}\n",
            if report.empty_label_sets.is_some() {
                "labels (from their label sets)"
            } else {
                "rows with labels"
            },
            dropped.join(", ")
        ));
    }
    if let Some(lengths) = lengths {
        out.push_str(&format!(
            "\ntoken lengths of {} training {} ({} included): p50 {}, p90 {}, p99 {}, max {}; {} ({:.1}%) longer than max_length {} and truncated{}\n",
            lengths.texts,
            if lengths.pairs { "pairs" } else { "texts" },
            if lengths.pairs {
                "both texts and the special tokens"
            } else {
                "[CLS] and [SEP]"
            },
            lengths.p50,
            lengths.p90,
            lengths.p99,
            lengths.max,
            lengths.truncated,
            lengths.truncated_share * 100.0,
            lengths.max_length,
            if lengths.pairs {
                " (longest_first: the longer text is cut)"
            } else {
                ""
            }
        ));
    }
    for warning in &report.warnings {
        out.push_str(&format!("warning: {warning}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_run_is_singular() {
        assert_eq!(count_of(1, "run"), "1 run");
        assert_eq!(count_of(0, "run"), "0 runs");
        assert_eq!(count_of(12, "run"), "12 runs");
    }

    fn rows() -> (Vec<String>, Vec<PlanRow>) {
        let columns = vec!["learning_rate".to_string(), "model.path".to_string()];
        let hash = |digit: char| RunHash::parse(&digit.to_string().repeat(64)).unwrap();
        let rows = vec![
            PlanRow {
                index: 1,
                experiment: "demo".into(),
                hash: hash('a'),
                status: RunStatus::Done,
                parameters: vec![
                    Some(Setting::Float(2e-5)),
                    Some(Setting::Text("../m, \"a\"".into())),
                ],
            },
            PlanRow {
                index: 2,
                experiment: "demo".into(),
                hash: hash('b'),
                status: RunStatus::New,
                parameters: vec![Some(Setting::Float(0.001)), None],
            },
        ];
        (columns, rows)
    }

    #[test]
    fn table() {
        let (columns, rows) = rows();
        assert_eq!(
            plan_table(&columns, &rows, false),
            "#  hash          learning_rate  model.path  status\n\
             1  aaaaaaaaaaaa  2e-5           ../m, \"a\"   done\n\
             2  bbbbbbbbbbbb  0.001                      new\n"
        );
    }

    #[test]
    fn csv_quotes_and_keeps_full_hashes() {
        let (columns, rows) = rows();
        let text = String::from_utf8(plan_csv(&columns, &rows)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "index,experiment,hash,learning_rate,model.path,status"
        );
        assert_eq!(
            lines[1],
            format!("1,demo,{},2e-5,\"../m, \"\"a\"\"\",done", "a".repeat(64))
        );
        assert_eq!(lines[2], format!("2,demo,{},0.001,,new", "b".repeat(64)));
    }

    #[test]
    fn json_has_numbers_as_numbers() {
        let (columns, rows) = rows();
        let parsed: Value = serde_json::from_str(&plan_json(&columns, &rows)).unwrap();
        assert_eq!(parsed[0]["learning_rate"], json!(2e-5));
        assert_eq!(parsed[0]["hash"], json!("a".repeat(64)));
        assert_eq!(parsed[1]["model.path"], Value::Null);
        assert_eq!(parsed[1]["status"], json!("new"));
    }

    #[test]
    fn summary_counts_statuses() {
        let (_, rows) = rows();
        assert_eq!(plan_summary(&rows), "2 runs, 1 done, 1 new");
        assert_eq!(plan_summary(&rows[..1]), "1 run, 1 done");
    }
}
