//! `bertlab run`: plans, carries the plan out in the run store (`sweep::run_sweep`), then prints
//! the sweep's results table on stdout and a count on stderr.

use std::io::Write;

use crate::commands::{Outcome, interrupt_flag, make_plan};
use crate::plan::PlanOptions;
use crate::store::RunStore;

/// `bertlab run`: carries out the plan, then prints the sweep's results table on stdout.
pub fn execute(
    store: &RunStore,
    experiments: &[std::path::PathBuf],
    plan_options: &PlanOptions,
    options: &crate::sweep::SweepOptions,
    progress_bars: bool,
    color: bool,
) -> anyhow::Result<Outcome> {
    let plan = make_plan(experiments, plan_options, color)?;
    // The first SIGINT/SIGTERM asks for a checkpoint and a clean stop; a second one exits at once.
    let interrupt = interrupt_flag()?;
    store.create()?;
    for search in &plan.searches {
        let file = &plan.experiments[search.experiment];
        eprintln!(
            "{}",
            crate::commands::search_identity_note(store, search, file)?
        );
    }
    let mut planned = vec![crate::report::tables::count_of(plan.runs.len(), "run")];
    if !plan.searches.is_empty() {
        planned.push(crate::report::tables::count_of(
            plan.searches.iter().map(|search| search.trials).sum(),
            "search trial",
        ));
    }
    eprintln!(
        "{} planned, store {}",
        planned.join(" and "),
        store.root().display()
    );
    let mut progress = crate::support::progress::Progress::new(progress_bars);
    let report = crate::sweep::run_sweep(&plan, store, options, &interrupt, &mut progress)?;
    drop(progress);
    let mut stdout = std::io::stdout().lock();
    // The same table as `bertlab results EXP.toml...`: the plan's runs, what differs, figures.
    let rows = crate::store::results_index::planned_rows(
        crate::store::results_index::store_rows(store)?,
        &plan,
    )?;
    if !plan.runs.is_empty() {
        let frame = crate::report::results_table::only_changed(
            crate::report::results_table::frame(&rows)?,
        )?;
        stdout.write_all(crate::report::results_table::table_text(&frame)?.as_bytes())?;
    }
    let records = crate::commands::search_records(&plan, store)?;
    for record in &records {
        if !plan.runs.is_empty() {
            writeln!(stdout)?;
        }
        stdout.write_all(crate::report::search::search_table(record).as_bytes())?;
    }
    stdout.flush()?;
    let count =
        |status: crate::store::RunStatus| rows.iter().filter(|row| row.status == status).count();
    let done = count(crate::store::RunStatus::Done);
    let failed = count(crate::store::RunStatus::Failed);
    let stopped = if report.interrupted {
        " (interrupted: `bertlab run` again resumes)"
    } else if report.stopped_on_failure {
        " (stopped at the first failure: --fail-fast)"
    } else {
        ""
    };
    if !plan.runs.is_empty() || records.is_empty() {
        eprintln!(
            "{done} of {} runs done, {failed} failed{stopped}",
            plan.runs.len()
        );
    }
    for (record, waited) in records.iter().zip(&report.search_waits) {
        eprintln!(
            "{}; waited {waited:.0} s for earlier trials{}",
            crate::report::search::search_summary(record),
            if records.len() == 1 { stopped } else { "" }
        );
    }
    // Every trial proposed and ended done or pruned.
    let searches_finished = records.iter().all(|record| {
        record.trials.len() == record.trials_planned
            && record
                .trials
                .iter()
                .all(|trial| matches!(trial.status.as_str(), "done" | "pruned"))
    });
    Ok(if report.interrupted {
        Outcome::Interrupted
    } else if done == plan.runs.len() && searches_finished {
        Outcome::Success
    } else {
        Outcome::Failure
    })
}
