//! The commands, on top of every stage: one file per verb, each turning resolved arguments
//! (`cli`: clap's raw arguments, [`cli::LowArgs`], and the resolved ones, [`cli::HiArgs`]) into
//! a call of the stage that does the work, and printing the result: data to stdout, progress,
//! notes and warnings to stderr. Errors are returned, and printed once by `main`, which also picks
//! the exit status from the [`Outcome`].
//!
//! Here: the dispatch, and what several verbs share (planning with the fingerprint cache and
//! its warnings, the rows `results` and `report` show, the interrupt flag).
//!
//! Uses: every stage. Never: holds a pipeline step (a verb's work lives in its stage, the
//! command only resolves, calls and prints); nothing but `main.rs` uses it.

pub mod bench;
pub mod cli;
pub mod compare;
pub mod data;
pub mod device_check;
pub mod plan;
pub mod predict;
pub mod report;
pub mod reproduce;
pub mod results;
pub mod run;
pub mod show;
pub mod slurm;

use std::io::Write;

use crate::commands::cli::{HiArgs, HiCommand};
use crate::experiment::diagnostics::{Severity, render_problems};
use crate::plan::fingerprint::{Fingerprinter, default_cache_path};
use crate::plan::{Plan, PlanOptions};
use crate::store::RunStore;

/// How a command ended, for the exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Everything asked for was done.
    Success,
    /// The work ran, but not all of it succeeded.
    Failure,
    /// Stopped by SIGINT or SIGTERM.
    Interrupted,
}

pub fn run(args: HiArgs) -> anyhow::Result<Outcome> {
    let color = args.color_stderr;
    let store = &args.store;
    match args.command {
        HiCommand::Plan {
            experiments,
            format,
            options,
        } => plan::execute(store, &experiments, format, &options, color),
        HiCommand::Data {
            experiments,
            format,
            export,
        } => data::execute(&experiments, format, export.as_deref(), color),
        HiCommand::Run {
            experiments,
            plan_options,
            options,
            progress_bars,
        } => run::execute(
            store,
            &experiments,
            &plan_options,
            &options,
            progress_bars,
            color,
        ),
        HiCommand::Results(options) => results::execute(store, &options, color),
        HiCommand::Predict(options) => predict::execute(store, &options),
        HiCommand::Reproduce(options) => reproduce::execute(store, &options),
        HiCommand::Compare(options) => compare::execute(store, &options),
        HiCommand::Report(options) => report::execute(store, &options, color),
        HiCommand::Show { hash_prefix } => show::execute(store, &hash_prefix),
        HiCommand::Bench(options) => bench::execute(&options, color),
        HiCommand::DeviceCheck(options) => device_check::execute(&options),
        HiCommand::SlurmSubmit {
            experiments,
            plan_options,
            options,
            mode,
        } => slurm::submit(store, &experiments, &plan_options, &options, mode, color),
        HiCommand::SlurmStatus { job } => slurm::status(store, job.as_deref(), color),
        HiCommand::SlurmCancel { job } => slurm::cancel(store, &job),
    }
}

/// Plans with the user's fingerprint cache; a cache that cannot be written only costs time.
/// The record of each search of a plan as the store has it now (trials settled, running, the
/// next ones that can be proposed), without training anything.
pub fn search_records(
    plan: &Plan,
    store: &crate::store::RunStore,
) -> anyhow::Result<Vec<crate::search::SearchRecord>> {
    let mut resolver =
        crate::plan::search::TrialResolver::new(Fingerprinter::new(default_cache_path()));
    let mut records = Vec::new();
    for search in &plan.searches {
        let file = &plan.experiments[search.experiment];
        let state = crate::search::state_in_store(search, file, store, &mut resolver)?;
        records.push(crate::search::search_record(search, file, &state));
    }
    let _ = resolver.save();
    Ok(records)
}

/// Whether a search is new or known to the store, and a note when the store holds another
/// search of the same experiment (its `[search]` or settings changed: a new search).
pub fn search_identity_note(
    store: &crate::store::RunStore,
    search: &crate::plan::search::PlannedSearch,
    file: &crate::experiment::ExperimentFile,
) -> anyhow::Result<String> {
    let records = crate::search::read_records(store)?;
    let label = search.label(file);
    if let Some(known) = records
        .iter()
        .find(|record| record.search == search.hash.as_str())
    {
        let settled = known.settled();
        let extension = if search.trials > known.trials_planned {
            format!(
                "; trials raised from {} to {}: the search goes on where it stands",
                known.trials_planned, search.trials
            )
        } else {
            String::new()
        };
        return Ok(format!(
            "{label}: in the store, {settled} trials settled{extension}"
        ));
    }
    let others: Vec<&str> = records
        .iter()
        .filter(|record| record.experiment == file.name)
        .map(|record| &record.search[..crate::plan::spec::SHORT_HASH_LENGTH])
        .collect();
    Ok(if others.is_empty() {
        format!("{label}: a new search")
    } else {
        format!(
            "{label}: a new search; the store holds {} of experiment {} ({}): the method, seed, parallel, space, pruner or a run setting differs, so this one starts afresh (only `trials` extends a search)",
            crate::report::tables::count_of(others.len(), "other search"),
            file.name,
            others.join(", ")
        )
    })
}

pub fn make_plan(
    experiments: &[std::path::PathBuf],
    options: &PlanOptions,
    color: bool,
) -> anyhow::Result<Plan> {
    let mut fingerprinter = Fingerprinter::new(default_cache_path());
    let plan = crate::plan::plan(experiments, options, &mut fingerprinter)?;
    if let Err(error) = fingerprinter.save() {
        eprintln!("warning: could not save the fingerprint cache: {error:#}");
    }
    let mut stderr = std::io::stderr().lock();
    for experiment in &plan.experiments {
        if !experiment.warnings.is_empty() {
            let text = render_problems(
                &experiment.source,
                &experiment.warnings,
                Severity::Warning,
                color,
            );
            let _ = stderr.write_all(text.as_bytes());
        }
    }
    if plan.merged_points > 0 {
        let _ = writeln!(
            stderr,
            "note: {} grid point{} resolved to the same settings as an earlier one and {} planned once",
            plan.merged_points,
            if plan.merged_points == 1 { "" } else { "s" },
            if plan.merged_points == 1 { "is" } else { "are" },
        );
    }
    Ok(plan)
}

/// The runs `results` and `report` show: the store's, or those the experiment files plan (runs
/// not trained yet included as `new`), optionally of one experiment name.
pub fn select_rows(
    store: &RunStore,
    selection: &cli::RunSelectionArgs,
    color: bool,
) -> anyhow::Result<Vec<crate::store::results_index::RunRow>> {
    use crate::store::results_index;
    let mut rows = results_index::store_rows(store)?;
    if !selection.experiments.is_empty() {
        let plan = make_plan(&selection.experiments, &PlanOptions::default(), color)?;
        let stored = rows.clone();
        rows = results_index::planned_rows(rows, &plan)?;
        // A search's trials, in trial order: the runs the store holds (a trial not trained yet
        // has no row; one that repeats a trial is its run's row once).
        for record in search_records(&plan, store)? {
            for run in record
                .trials
                .iter()
                .filter_map(|trial| trial.run.as_deref())
            {
                if rows.iter().any(|row| row.hash.as_str() == run) {
                    continue;
                }
                if let Some(row) = stored.iter().find(|row| row.hash.as_str() == run) {
                    rows.push(row.clone());
                }
            }
        }
    }
    if let Some(name) = selection.experiment.as_deref() {
        rows.retain(|row| row.experiment.as_deref() == Some(name));
        if rows.is_empty() {
            eprintln!(
                "note: no run in {} belongs to experiment `{name}`",
                store.root().display()
            );
        }
    }
    Ok(rows)
}

/// Registers SIGINT/SIGTERM: the first raises the flag (checkpoint, clean stop), a second exits.
/// Inside a Slurm job a second SIGTERM only repeats the first: Slurm sends one at preemption and
/// another when the grace time ends, and the job script's warning is followed by the time
/// limit's; the checkpoint must not be cut short by them (SIGKILL, `KillWait` later, is Slurm's
/// own last word).
pub fn interrupt_flag() -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let interrupt = Arc::new(AtomicBool::new(false));
    let in_slurm_job = crate::sweep::slurm::job_task_from_environment().is_some();
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if !(in_slurm_job && signal == signal_hook::consts::SIGTERM) {
            signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&interrupt))?;
        }
        signal_hook::flag::register(signal, Arc::clone(&interrupt))?;
    }
    Ok(interrupt)
}
