//! `bertlab plan`: the runs the experiment files plan, with what varies and each run's status in
//! the store; data to stdout, the summary after it (or on stderr for json and csv).

use std::io::Write;

use crate::commands::{Outcome, make_plan};
use crate::plan::PlanOptions;
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
    match format {
        TableFormat::Table => {
            stdout.write_all(tables::plan_table(&columns, &rows, show_experiment).as_bytes())?;
            writeln!(stdout, "{summary}")?;
        }
        TableFormat::Json => {
            stdout.write_all(tables::plan_json(&columns, &rows).as_bytes())?;
            eprintln!("{summary}");
        }
        TableFormat::Csv => {
            stdout.write_all(&tables::plan_csv(&columns, &rows))?;
            eprintln!("{summary}");
        }
    }
    stdout.flush()?;
    Ok(Outcome::Success)
}
