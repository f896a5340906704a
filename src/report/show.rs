//! `bertlab show`: one run's summary as text, from its run files: status, times, provenance,
//! the kept epoch, `metrics.csv`, `per_class.csv` and `confusion.csv` as tables, and the spec.

use crate::plan::spec::RunHash;
use crate::report::tables::text_table;
use crate::store::RunStore;
use crate::store::run_files;

/// The summary `bertlab show` prints for run `hash` of `store`.
pub fn show_text(store: &RunStore, hash: &RunHash) -> anyhow::Result<String> {
    let status = store.status(hash)?;
    let record = store.record(hash)?;
    let directory = store.run_directory(hash);
    let spec: serde_json::Value = serde_json::from_slice(&store.spec_bytes(hash)?)?;
    let mut out = String::new();
    let mut line = |label: &str, value: String| out.push_str(&format!("{label:<12}{value}\n"));
    line("run", hash.to_string());
    line("directory", directory.display().to_string());
    line("status", status.to_string());
    if let Some(record) = &record {
        let time = |time: &chrono::DateTime<chrono::Utc>| {
            time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        if let Some(experiment) = &record.experiment {
            line("experiment", experiment.clone());
        }
        if let Some(started) = &record.started_at {
            line("started", time(started));
        }
        if let Some(finished) = &record.finished_at {
            line("finished", time(finished));
        }
        if let Some(seconds) = record.duration_seconds {
            line(
                "duration",
                format!("{seconds:.1} s over {} attempt(s)", record.attempts),
            );
        }
        if let Some(error) = &record.error {
            line("error", error.clone());
        }
        if let Some(pruned) = &record.pruned {
            line(
                "pruned",
                format!(
                    "at rung {} after {} epoch{}: validation {} {:.4}, not among the top {} of {} trials (threshold {:.4}); `bertlab run` on a plan holding this run continues it",
                    pruned.rung,
                    pruned.epochs,
                    if pruned.epochs == 1 { "" } else { "s" },
                    pruned.metric,
                    pruned.value,
                    pruned.continuing,
                    pruned.compared_with + 1,
                    pruned.threshold
                ),
            );
        }
        if !record.search_trials.is_empty() {
            let mut by_search: Vec<(String, Vec<String>)> = Vec::new();
            for entry in &record.search_trials {
                let short = entry.search[..entry.search.len().min(12)].to_string();
                match by_search.iter_mut().find(|(search, _)| *search == short) {
                    Some((_, trials)) => trials.push(entry.trial.to_string()),
                    None => by_search.push((short, vec![entry.trial.to_string()])),
                }
            }
            line(
                "trials",
                by_search
                    .iter()
                    .map(|(search, trials)| format!("search {search}: trial {}", trials.join(", ")))
                    .collect::<Vec<_>>()
                    .join("; "),
            );
        }
        if let Some(provenance) = &record.provenance {
            line(
                "trained on",
                format!(
                    "{} ({}, {} threads) with bertlab {}{}",
                    provenance.host,
                    provenance.device,
                    provenance.threads,
                    provenance.bertlab_version,
                    provenance.commit_suffix()
                ),
            );
            if let Some(hub) = &provenance.model_hub {
                line(
                    "model",
                    format!(
                        "{} at {} (commit {})",
                        hub.id,
                        hub.revision,
                        &hub.commit[..hub.commit.len().min(12)]
                    ),
                );
            }
            if let Some(slurm) = &provenance.slurm {
                line(
                    "slurm",
                    format!(
                        "{}{}",
                        slurm.label(),
                        slurm
                            .submission
                            .as_deref()
                            .map(|name| format!(", submission {name}"))
                            .unwrap_or_default()
                    ),
                );
            }
            line(
                "experiment",
                format!(
                    "{}{}",
                    provenance.experiment_file,
                    match (&provenance.experiment_commit, provenance.experiment_dirty) {
                        (Some(commit), Some(dirty)) => format!(
                            " at commit {}{}",
                            &commit[..commit.len().min(12)],
                            if dirty {
                                " (with uncommitted changes)"
                            } else {
                                ""
                            }
                        ),
                        _ => " (not in a git repository)".into(),
                    }
                ),
            );
        }
    }
    if let Ok(result) = run_files::read_result(&directory) {
        // Runs validated every N steps say which step they kept.
        let kept_step = match (spec["train"].get("eval_every_steps"), result.best_step) {
            (Some(_), Some(step)) => format!(", step {step}"),
            _ => String::new(),
        };
        line(
            "kept epoch",
            format!("{} of {}{kept_step}", result.best_epoch, result.epochs_run),
        );
    }
    let section = |out: &mut String, title: &str, file: &str| -> anyhow::Result<()> {
        if let Ok(mut reader) = csv::Reader::from_path(directory.join(file)) {
            let headers: Vec<String> = reader.headers()?.iter().map(String::from).collect();
            let rows: Vec<Vec<String>> = reader
                .records()
                .filter_map(Result::ok)
                .map(|record| record.iter().map(table_cell).collect())
                .collect();
            out.push_str(&format!("\n{title}\n"));
            out.push_str(&text_table(&headers, &rows));
        }
        Ok(())
    };
    section(&mut out, "epochs (metrics.csv)", run_files::METRICS_FILE)?;
    section(&mut out, "per class, kept epoch", run_files::PER_CLASS_FILE)?;
    let confusion_title = if spec["data"]["label_format"] == "multi" {
        "decisions per class (multi-label, one-vs-rest)"
    } else {
        "confusion (rows: gold)"
    };
    section(&mut out, confusion_title, run_files::CONFUSION_FILE)?;
    out.push_str("\nspec\n");
    out.push_str(&serde_json::to_string_pretty(&spec)?);
    out.push('\n');
    Ok(out)
}

/// A cell of a run's CSV file as `show` prints it: numbers below 0.001 (learning rates) in
/// scientific notation with up to three significant digits (`1.0e-4`, `1.33e-5`), other
/// fractions with four decimals, integers and text as written.
fn table_cell(cell: &str) -> String {
    match cell.parse::<f64>() {
        Ok(number) if number.is_finite() && number != 0.0 && number.abs() < 1e-3 => {
            let text = format!("{number:.2e}");
            let (mantissa, exponent) = text.split_once('e').expect("{:e} writes an exponent");
            let mut mantissa = mantissa.trim_end_matches('0').to_string();
            if mantissa.ends_with('.') {
                mantissa.push('0');
            }
            format!("{mantissa}e{exponent}")
        }
        Ok(number) if cell.contains('.') && number.fract() != 0.0 => format!("{number:.4}"),
        _ => cell.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::table_cell;

    #[test]
    fn small_numbers_stay_readable() {
        assert_eq!(table_cell("0.0001"), "1.0e-4");
        assert_eq!(table_cell("1.3333333333333333e-5"), "1.33e-5");
        assert_eq!(table_cell("2e-5"), "2.0e-5");
        assert_eq!(table_cell("-0.00025"), "-2.5e-4");
        assert_eq!(table_cell("0.54561234"), "0.5456");
        assert_eq!(table_cell("0.001"), "0.0010");
        assert_eq!(table_cell("0"), "0");
        assert_eq!(table_cell("0.0"), "0.0");
        assert_eq!(table_cell("125"), "125");
        assert_eq!(table_cell("positive"), "positive");
        assert_eq!(table_cell("NaN"), "NaN");
    }
}
