//! A search for people: its trials as a table (trial, run, status, epochs trained, the searched
//! values, the selection metric, what became of it), a one-line summary, and the same rows as
//! CSV; pure functions of the search's record (`search::SearchRecord`).

use crate::experiment::format_float;
use crate::experiment::schema::{self, Key};
use crate::metrics::improves;
use crate::plan::spec::SHORT_HASH_LENGTH;
use crate::report::tables::{count_of, text_table};
use crate::search::SearchRecord;
use crate::train::policy::best_index;

/// Each trial's value when it is done (pruned and unfinished trials: NaN).
fn done_value(trial: &crate::search::TrialRecord) -> f64 {
    match (trial.value, trial.status.as_str()) {
        (Some(value), "done") => value,
        _ => f64::NAN,
    }
}

/// The index of the best done trial (the first of equals).
pub fn best_trial(record: &SearchRecord) -> Option<usize> {
    let values: Vec<f64> = record.trials.iter().map(done_value).collect();
    best_index(&values, record.higher_is_better)
}

/// How a searched key is shown: the schema's column name (`learning_rate`, `model.x`).
fn column_name(full_name: &str) -> String {
    schema::find_full(full_name).map_or_else(|| full_name.to_string(), Key::column_name)
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
                trial
                    .epochs
                    .map(|epochs| epochs.to_string())
                    .unwrap_or_default(),
            ];
            for (key, _) in &record.keys {
                row.push(trial.values.get(key).map(cell).unwrap_or_default());
            }
            row.push(
                trial
                    .value
                    .map(|value| format!("{value:.4}"))
                    .unwrap_or_default(),
            );
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

/// The search's picture for the HTML report: the best value so far against the trial number
/// (every trial's value beside it: done filled, pruned hollow), then the metric against each
/// searched key (a log axis for log-scale keys); one SVG each.
pub fn search_charts_svg(record: &SearchRecord) -> anyhow::Result<Vec<String>> {
    use plotters::prelude::*;
    let error = |error: String| anyhow::anyhow!("{error}");
    let metric = format!("validation {}", record.selection_metric);
    let valued: Vec<(usize, f64, bool)> = record
        .trials
        .iter()
        .filter_map(|trial| {
            let value = trial.value.filter(|value| value.is_finite())?;
            Some((trial.trial, value, trial.status == "done"))
        })
        .collect();
    let (mut low, mut high) = valued.iter().fold(
        (f64::INFINITY, f64::NEG_INFINITY),
        |(low, high), &(_, value, _)| (low.min(value), high.max(value)),
    );
    if !low.is_finite() {
        (low, high) = (0.0, 1.0);
    }
    let margin = ((high - low) * 0.1).max(1e-3);
    let y_range = (low - margin)..(high + margin);
    let blue = RGBColor(31, 119, 180);
    let orange = RGBColor(255, 127, 14);
    let mut charts = Vec::new();

    // Best so far against the trial number.
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 360)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| error(e.to_string()))?;
        let trials = record.trials_planned.max(record.trials.len()).max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{}: best so far per trial", record.experiment),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(-0.5f64..trials - 0.5, y_range.clone())
            .map_err(|e| error(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("trial")
            .y_desc(metric.as_str())
            .x_label_formatter(&|x| format!("{}", x.round() as i64))
            .light_line_style(RGBColor(245, 245, 245))
            .draw()
            .map_err(|e| error(e.to_string()))?;
        let mut best: Option<f64> = None;
        let mut line = Vec::new();
        for trial in &record.trials {
            let value = done_value(trial);
            if value.is_finite()
                && best.is_none_or(|current| improves(value, current, record.higher_is_better))
            {
                best = Some(value);
            }
            if let Some(best) = best {
                line.push((trial.trial as f64, best));
            }
        }
        chart
            .draw_series(LineSeries::new(line, orange.stroke_width(2)))
            .map_err(|e| error(e.to_string()))?
            .label("best done trial so far")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], orange));
        chart
            .draw_series(valued.iter().map(|&(trial, value, done)| {
                let style = if done {
                    blue.filled()
                } else {
                    blue.stroke_width(1)
                };
                Circle::new((trial as f64, value), 4, style)
            }))
            .map_err(|e| error(e.to_string()))?
            .label("trials (hollow: pruned, at its rung)")
            .legend(move |(x, y)| Circle::new((x + 8, y), 4, blue.filled()));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| error(e.to_string()))?;
        root.present().map_err(|e| error(e.to_string()))?;
    }
    charts.push(svg);

    // The metric against each searched key.
    for (key, log) in &record.keys {
        let points: Vec<(f64, f64, bool)> = record
            .trials
            .iter()
            .filter_map(|trial| {
                let value = trial.value.filter(|value| value.is_finite())?;
                let x = trial.values.get(key)?.as_f64()?;
                Some((x, value, trial.status == "done"))
            })
            .collect();
        if points.is_empty() {
            // Not numeric (a choice of strings): the table shows it.
            continue;
        }
        let (x_low, x_high) = points.iter().fold(
            (f64::INFINITY, f64::NEG_INFINITY),
            |(low, high), &(x, _, _)| (low.min(x), high.max(x)),
        );
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (640, 360)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| error(e.to_string()))?;
            let caption = format!("{metric} against {}", column_name(key));
            let mut builder = ChartBuilder::on(&root);
            builder
                .caption(caption, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(56);
            let style = |done: bool| {
                if done {
                    blue.filled()
                } else {
                    blue.stroke_width(1)
                }
            };
            // A log-scale key is drawn at log10 of its values, labelled with the values.
            let log = *log && x_low > 0.0;
            let axis = |x: f64| if log { x.log10() } else { x };
            let (x_low, x_high) = (axis(x_low), axis(x_high));
            let pad = ((x_high - x_low) * 0.05).max(1e-9);
            let mut chart = builder
                .build_cartesian_2d((x_low - pad)..(x_high + pad), y_range.clone())
                .map_err(|e| error(e.to_string()))?;
            let x_name = column_name(key);
            chart
                .configure_mesh()
                .x_desc(if log {
                    format!("{x_name} (log scale)")
                } else {
                    x_name
                })
                .y_desc(metric.as_str())
                .x_label_formatter(&|x| {
                    let value = if log { 10f64.powf(*x) } else { *x };
                    let shown: f64 = format!("{value:.2e}").parse().unwrap_or(value);
                    format_float(shown)
                })
                .light_line_style(RGBColor(245, 245, 245))
                .draw()
                .map_err(|e| error(e.to_string()))?;
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|&(x, y, done)| Circle::new((axis(x), y), 4, style(done))),
                )
                .map_err(|e| error(e.to_string()))?;
            root.present().map_err(|e| error(e.to_string()))?;
        }
        charts.push(svg);
    }
    Ok(charts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::TrialRecord;

    fn trial(
        number: usize,
        status: &str,
        value: Option<f64>,
        epochs: Option<usize>,
    ) -> TrialRecord {
        let mut values = serde_json::Map::new();
        values.insert(
            "train.learning_rate".into(),
            serde_json::json!(1.234567e-4 * (number + 1) as f64),
        );
        values.insert("model.path".into(), serde_json::json!("../models/a"));
        TrialRecord {
            trial: number,
            run: Some(format!("{number:x}").repeat(64)[..64].to_string()),
            values,
            status: status.into(),
            value,
            epochs,
            rung: (status == "pruned").then_some(1),
            same_as: None,
            error: (status == "failed")
                .then(|| "diverged at epoch 1 step 3: the loss is NaN".into()),
        }
    }

    fn record() -> SearchRecord {
        SearchRecord {
            search: "ab".repeat(32),
            experiment: "tiny".into(),
            experiment_file: "exp.toml".into(),
            method: "tpe".into(),
            trials_planned: 6,
            epochs: 3,
            selection_metric: "macro_f1".into(),
            higher_is_better: true,
            identity: serde_json::json!({}),
            keys: vec![
                ("train.learning_rate".into(), true),
                ("model.path".into(), false),
            ],
            trials: vec![
                trial(0, "done", Some(0.61), Some(3)),
                trial(1, "pruned", Some(0.4), Some(1)),
                trial(2, "done", Some(0.72), Some(3)),
                trial(3, "failed", None, None),
                trial(4, "running", None, None),
            ],
        }
    }

    #[test]
    fn the_table_marks_the_best_done_trial_and_the_summary_counts_epochs() {
        let record = record();
        assert_eq!(best_trial(&record), Some(2));
        insta::assert_snapshot!(search_table(&record), @r"
        tiny search abababababab (tpe, 5 of 6 trials proposed)
        trial  run           status   epochs  learning_rate  model.path   val_macro_f1  note
        0      000000000000  done     3       1.235e-4       ../models/a  0.6100
        1      111111111111  pruned   1       2.469e-4       ../models/a  0.4000        rung 1
        2      222222222222  done     3       3.704e-4       ../models/a  0.7200        best
        3      333333333333  failed           4.938e-4       ../models/a                diverged at epoch 1 step 3: the loss is NaN
        4      444444444444  running          6.173e-4       ../models/a
        ");
        assert_eq!(
            search_summary(&record),
            "tiny search abababababab: 6 trials (2 done, 1 pruned, 1 failed, 1 running, 1 to be proposed); 7 of 18 epochs trained; best trial 2 (validation macro_f1 0.7200, run 222222222222)"
        );
        let csv = String::from_utf8(search_csv(&record)).unwrap();
        assert!(csv.starts_with("trial,run,status,epochs,learning_rate,model.path,val_macro_f1,note\n0,000000000000,done,3,"));
        assert_eq!(
            search_charts_svg(&record).unwrap().len(),
            2,
            "model.path is not numeric"
        );
    }

    #[test]
    fn loss_picks_the_lowest() {
        let mut record = record();
        record.higher_is_better = false;
        record.selection_metric = "loss".into();
        assert_eq!(best_trial(&record), Some(0));
    }
}
