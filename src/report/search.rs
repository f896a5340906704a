//! A search for people: its trials as a table (trial, run, status, epochs trained, the searched
//! values, the selection metric, what became of it), a one-line summary, and the same rows as
//! CSV; pure functions of the search's record (`search::SearchRecord`).

use crate::experiment::format_float;
use crate::plan::spec::SHORT_HASH_LENGTH;
use crate::report::tables::{count_of, text_table};
use crate::search::SearchRecord;

/// The index of the best done trial (the first of equals).
pub fn best_trial(record: &SearchRecord) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (index, trial) in record.trials.iter().enumerate() {
        let (Some(value), "done") = (trial.value, trial.status.as_str()) else {
            continue;
        };
        if value.is_nan() {
            continue;
        }
        let better = match best {
            None => true,
            Some((_, current)) if record.higher_is_better => value > current,
            Some((_, current)) => value < current,
        };
        if better {
            best = Some((index, value));
        }
    }
    best.map(|(index, _)| index)
}

/// How a searched key is shown: `learning_rate` for `[train]` keys, `model.x` otherwise.
fn column_name(full_name: &str) -> String {
    full_name
        .strip_prefix("train.")
        .unwrap_or(full_name)
        .to_string()
}

fn cell(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Number(number) if number.is_f64() => {
            // Four significant digits for people (the run's spec has every digit).
            let value = number.as_f64().expect("an f64");
            let shown: f64 = format!("{value:.3e}").parse().unwrap_or(value);
            format_float(shown)
        }
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The rows of the table and the CSV: one per trial.
fn rows(record: &SearchRecord) -> (Vec<String>, Vec<Vec<String>>) {
    let mut headers: Vec<String> = ["trial", "run", "status", "epochs"]
        .into_iter()
        .map(String::from)
        .collect();
    headers.extend(record.keys.iter().map(|(key, _)| column_name(key)));
    headers.push(format!("val_{}", record.selection_metric));
    headers.push("note".into());
    let best = best_trial(record);
    let rows = record
        .trials
        .iter()
        .enumerate()
        .map(|(index, trial)| {
            let mut row = vec![
                trial.trial.to_string(),
                trial
                    .run
                    .as_deref()
                    .map(|run| run[..SHORT_HASH_LENGTH.min(run.len())].to_string())
                    .unwrap_or_default(),
                trial.status.clone(),
                trial.epochs.map(|epochs| epochs.to_string()).unwrap_or_default(),
            ];
            for (key, _) in &record.keys {
                row.push(trial.values.get(key).map(cell).unwrap_or_default());
            }
            row.push(trial.value.map(|value| format!("{value:.4}")).unwrap_or_default());
            let mut notes = Vec::new();
            if best == Some(index) {
                notes.push("best".to_string());
            }
            if let Some(rung) = trial.rung {
                notes.push(format!("rung {rung}"));
            }
            if let Some(earlier) = trial.same_as {
                notes.push(format!("same run as trial {earlier}"));
            }
            if let Some(error) = &trial.error {
                let first_line = error.lines().next().unwrap_or("");
                let short: String = first_line.chars().take(60).collect();
                notes.push(if short.len() < first_line.len() {
                    format!("{short}...")
                } else {
                    short
                });
            }
            row.push(notes.join("; "));
            row
        })
        .collect();
    (headers, rows)
}

/// The trials as aligned columns, headed by the search's line.
pub fn search_table(record: &SearchRecord) -> String {
    let (headers, rows) = rows(record);
    let mut out = format!(
        "{} search {} ({}, {} of {} trials proposed)\n",
        record.experiment,
        &record.search[..SHORT_HASH_LENGTH],
        record.method,
        record.trials.len(),
        record.trials_planned
    );
    out.push_str(&text_table(&headers, &rows));
    out
}

/// The trials as CSV, a header row first.
pub fn search_csv(record: &SearchRecord) -> Vec<u8> {
    let (headers, rows) = rows(record);
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(&headers).expect("writing to memory");
    for row in rows {
        writer.write_record(&row).expect("writing to memory");
    }
    writer.into_inner().expect("writing to memory")
}

/// One line: trials by status, epochs trained against the budget of every trial trained to the
/// end, the best trial.
pub fn search_summary(record: &SearchRecord) -> String {
    let count = |status: &str| {
        record
            .trials
            .iter()
            .filter(|trial| trial.status == status)
            .count()
    };
    let mut parts = Vec::new();
    for status in ["done", "pruned", "failed", "running", "pending"] {
        let found = count(status);
        if found > 0 {
            parts.push(format!("{found} {status}"));
        }
    }
    let waiting = record.trials_planned - record.trials.len();
    if waiting > 0 {
        parts.push(format!("{waiting} to be proposed"));
    }
    // A trial that repeats an earlier one trains nothing.
    let trained: usize = record
        .trials
        .iter()
        .filter(|trial| trial.same_as.is_none())
        .filter_map(|trial| trial.epochs)
        .sum();
    let mut line = format!(
        "{} search {}: {} ({}); {trained} of {} epochs trained",
        record.experiment,
        &record.search[..SHORT_HASH_LENGTH],
        count_of(record.trials_planned, "trial"),
        parts.join(", "),
        record.trials_planned * record.epochs
    );
    if let Some(best) = best_trial(record) {
        let trial = &record.trials[best];
        line.push_str(&format!(
            "; best trial {} (validation {} {:.4}, run {})",
            trial.trial,
            record.selection_metric,
            trial.value.unwrap_or(f64::NAN),
            trial
                .run
                .as_deref()
                .map(|run| &run[..SHORT_HASH_LENGTH])
                .unwrap_or("")
        ));
    }
    line
}
