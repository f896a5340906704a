//! `bertlab data`: the data report of every distinct data setup the experiment files plan (rows per
//! step, classes per split, token lengths), and `--export` of the splits as CSV.

use std::io::Write;

use anyhow::Context;

use crate::commands::cli::ReportFormat;
use crate::commands::{Outcome, make_plan};
use crate::plan::PlanOptions;
use crate::report::tables;
use crate::tokenize::preprocess;

/// One report per distinct data setup: the data settings and files, the labels, the tokenizer
/// and `max_length` (what the report depends on).
pub fn execute(
    experiments: &[std::path::PathBuf],
    format: ReportFormat,
    export: Option<&std::path::Path>,
    color: bool,
) -> anyhow::Result<Outcome> {
    let plan = make_plan(experiments, &PlanOptions::default(), color)?;
    // Runs whose preprocessed data is the same (the cache key) share one report.
    let setups = preprocess::data_setups(&plan.runs);
    let mut reports = Vec::new();
    let mut stdout = std::io::stdout().lock();
    for (number, runs) in setups.iter().enumerate() {
        let run = &plan.runs[runs[0]];
        let (prepared, _, lengths) = preprocess::prepare_with_lengths(run)?;
        if let Some(folder) = export {
            let folder = if setups.len() == 1 {
                folder.to_path_buf()
            } else {
                folder.join(format!("setup-{}", number + 1))
            };
            std::fs::create_dir_all(&folder)
                .with_context(|| format!("cannot create {}", folder.display()))?;
            for (name, examples) in [
                ("train.csv", &prepared.train),
                ("validation.csv", &prepared.validation),
                ("test.csv", &prepared.test),
            ] {
                let path = folder.join(name);
                crate::support::atomic_file::write(
                    &path,
                    &tables::examples_csv(
                        examples,
                        &prepared.classes,
                        &run.settings.data.label_separator,
                    ),
                )?;
            }
            eprintln!(
                "wrote the splits of data setup {} to {}",
                number + 1,
                folder.display()
            );
        }
        let hashes: Vec<&str> = runs
            .iter()
            .map(|&index| plan.runs[index].hash.short())
            .collect();
        match format {
            ReportFormat::Text => {
                let title = format!(
                    "data setup {} of {}: {} ({})",
                    number + 1,
                    setups.len(),
                    tables::count_of(runs.len(), "run"),
                    hashes.join(", ")
                );
                if number > 0 {
                    writeln!(stdout)?;
                }
                stdout.write_all(tables::data_report_text(&title, &prepared.report, Some(&lengths)).as_bytes())?;
            }
            ReportFormat::Json => reports.push(serde_json::json!({
                "runs": runs.iter().map(|&index| plan.runs[index].hash.as_str()).collect::<Vec<_>>(),
                "report": prepared.report,
                "token_lengths": lengths,
            })),
        }
    }
    if format == ReportFormat::Json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(&reports)?)?;
    }
    Ok(Outcome::Success)
}
