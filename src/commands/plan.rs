//! `bertlab plan`: the runs the experiment files plan, with what varies and each run's status in
//! the store; data to stdout, the summary after it (or on stderr for json and csv).

use std::io::Write;

use crate::commands::{Outcome, make_plan, search_identity_note, search_records};
use crate::plan::PlanOptions;
use crate::report::search as report_search;
use crate::report::tables::{self, PlanRow, TableFormat};
use crate::store::RunStore;

pub fn execute(
    store: &RunStore,
    experiments: &[std::path::PathBuf],
    format: TableFormat,
    options: &PlanOptions,
    color: bool,
) -> anyhow::Result<Outcome> {
    let plan = make_plan(experiments, options, color)?;
    let records = search_records(&plan, store)?;
    for search in &plan.searches {
        let file = &plan.experiments[search.experiment];
        eprintln!("{}", search_identity_note(store, search, file)?);
    }
    let keys = plan.varying_keys();
    let columns: Vec<String> = keys.iter().map(|key| key.column_name()).collect();
    let mut rows = Vec::with_capacity(plan.runs.len());
    for (index, run) in plan.runs.iter().enumerate() {
        rows.push(PlanRow {
            index: index + 1,
            experiment: plan.experiments[run.experiment].name.clone(),
            hash: run.hash.clone(),
            status: store.status(&run.hash)?,
            parameters: keys.iter().map(|key| run.value(key).cloned()).collect(),
        });
    }
    let show_experiment = plan.experiments.len() > 1;
    let summary = tables::plan_summary(&rows);
    let mut stdout = std::io::stdout().lock();
    let has_runs = !plan.runs.is_empty();
    match format {
        TableFormat::Table => {
            if has_runs {
                stdout
                    .write_all(tables::plan_table(&columns, &rows, show_experiment).as_bytes())?;
                writeln!(stdout, "{summary}")?;
            }
            for record in &records {
                if has_runs {
                    writeln!(stdout)?;
                }
                stdout.write_all(report_search::search_table(record).as_bytes())?;
                writeln!(stdout, "{}", report_search::search_summary(record))?;
            }
        }
        TableFormat::Json if records.is_empty() => {
            stdout.write_all(tables::plan_json(&columns, &rows).as_bytes())?;
            eprintln!("{summary}");
        }
        TableFormat::Json => {
            // With searches: an object, the runs beside each search's record.
            let runs: serde_json::Value =
                serde_json::from_str(&tables::plan_json(&columns, &rows))?;
            let value = serde_json::json!({ "runs": runs, "searches": records });
            writeln!(stdout, "{}", serde_json::to_string_pretty(&value)?)?;
            for record in &records {
                eprintln!("{}", report_search::search_summary(record));
            }
        }
        TableFormat::Csv if records.is_empty() => {
            stdout.write_all(&tables::plan_csv(&columns, &rows))?;
            eprintln!("{summary}");
        }
        TableFormat::Csv => {
            if has_runs {
                anyhow::bail!(
                    "--format csv shows either the runs of grids or the trials of one search; plan the search files on their own, or use --format json"
                );
            }
            if records.len() > 1 {
                anyhow::bail!(
                    "--format csv shows the trials of one search; plan one search file at a time, or use --format json"
                );
            }
            stdout.write_all(&report_search::search_csv(&records[0]))?;
            eprintln!("{}", report_search::search_summary(&records[0]));
        }
    }
    stdout.flush()?;
    Ok(Outcome::Success)
}
