//! What each command does with resolved arguments: calls into the pipeline and writes data to
//! stdout, progress and warnings to stderr. Errors are returned, and printed once by `main`.

use std::io::Write;

use anyhow::Context;

use crate::cli::{HiArgs, HiCommand, ReportFormat};
use crate::diagnostics::{Severity, render_problems};
use crate::fingerprint::{Fingerprinter, default_cache_path};
use crate::plan::{self, Plan, PlanOptions};
use crate::preprocess;
use crate::report::{self, PlanRow, TableFormat};
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
    match args.command {
        HiCommand::Plan {
            experiments,
            format,
            options,
        } => plan_command(
            &args.store,
            &experiments,
            format,
            &options,
            args.color_stderr,
        ),
        HiCommand::Data {
            experiments,
            format,
            export,
        } => data_command(&experiments, format, export.as_deref(), args.color_stderr),
        HiCommand::Run {
            experiments,
            plan_options,
            options,
            progress_bars,
        } => run_command(
            &args.store,
            &experiments,
            &plan_options,
            &options,
            progress_bars,
            args.color_stderr,
        ),
        HiCommand::Show { hash_prefix } => show_command(&args.store, &hash_prefix),
    }
}

/// Plans with the user's fingerprint cache; a cache that cannot be written only costs time.
pub fn make_plan(
    experiments: &[std::path::PathBuf],
    options: &PlanOptions,
    color: bool,
) -> anyhow::Result<Plan> {
    let mut fingerprinter = Fingerprinter::new(default_cache_path());
    let plan = plan::plan(experiments, options, &mut fingerprinter)?;
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

fn plan_command(
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
    let summary = report::plan_summary(&rows);
    let mut stdout = std::io::stdout().lock();
    match format {
        TableFormat::Table => {
            stdout.write_all(report::plan_table(&columns, &rows, show_experiment).as_bytes())?;
            writeln!(stdout, "{summary}")?;
        }
        TableFormat::Json => {
            stdout.write_all(report::plan_json(&columns, &rows).as_bytes())?;
            eprintln!("{summary}");
        }
        TableFormat::Csv => {
            stdout.write_all(&report::plan_csv(&columns, &rows))?;
            eprintln!("{summary}");
        }
    }
    stdout.flush()?;
    Ok(Outcome::Success)
}

/// One report per distinct data setup: the data settings and files, the labels, the tokenizer
/// and `max_length` (what the report depends on).
fn data_command(
    experiments: &[std::path::PathBuf],
    format: ReportFormat,
    export: Option<&std::path::Path>,
    color: bool,
) -> anyhow::Result<Outcome> {
    let plan = make_plan(experiments, &PlanOptions::default(), color)?;
    // Runs whose preprocessed data is the same (the cache key) share one report.
    let mut setups: Vec<(String, Vec<usize>)> = Vec::new();
    for (index, run) in plan.runs.iter().enumerate() {
        let key = preprocess::cache_key(run);
        match setups.iter_mut().find(|(existing, _)| *existing == key) {
            Some((_, runs)) => runs.push(index),
            None => setups.push((key, vec![index])),
        }
    }
    let mut reports = Vec::new();
    let mut stdout = std::io::stdout().lock();
    for (number, (_, runs)) in setups.iter().enumerate() {
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
                crate::atomic_file::write(
                    &path,
                    &report::examples_csv(examples, &prepared.classes),
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
                    "data setup {} of {}: {} run{} ({})",
                    number + 1,
                    setups.len(),
                    runs.len(),
                    if runs.len() == 1 { "" } else { "s" },
                    hashes.join(", ")
                );
                if number > 0 {
                    writeln!(stdout)?;
                }
                stdout.write_all(report::data_report_text(&title, &prepared.report, Some(&lengths)).as_bytes())?;
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

fn show_command(store: &RunStore, hash_prefix: &str) -> anyhow::Result<Outcome> {
    let hash = store.resolve(hash_prefix)?;
    let status = store.status(&hash)?;
    let record = store.record(&hash)?;
    let spec: serde_json::Value = serde_json::from_slice(&store.spec_bytes(&hash)?)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "run        {hash}")?;
    writeln!(
        stdout,
        "directory  {}",
        store.run_directory(&hash).display()
    )?;
    writeln!(stdout, "status     {status}")?;
    if let Some(record) = &record {
        writeln!(
            stdout,
            "updated    {}",
            record
                .updated_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )?;
        if let Some(error) = &record.error {
            writeln!(stdout, "error      {error}")?;
        }
    }
    writeln!(stdout, "spec")?;
    writeln!(stdout, "{}", serde_json::to_string_pretty(&spec)?)?;
    Ok(Outcome::Success)
}

/// `bertlab run`: carries out the plan, then prints the sweep's results table on stdout.
fn run_command(
    store: &RunStore,
    experiments: &[std::path::PathBuf],
    plan_options: &PlanOptions,
    options: &crate::sweep::SweepOptions,
    progress_bars: bool,
    color: bool,
) -> anyhow::Result<Outcome> {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    let plan = make_plan(experiments, plan_options, color)?;
    // The first SIGINT/SIGTERM asks for a checkpoint and a clean stop; a second one exits at once.
    let interrupt = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&interrupt))?;
        signal_hook::flag::register(signal, Arc::clone(&interrupt))?;
    }
    store.create()?;
    eprintln!(
        "{} run{} planned, store {}",
        plan.runs.len(),
        if plan.runs.len() == 1 { "" } else { "s" },
        store.root().display()
    );
    let mut progress = crate::progress::Progress::new(progress_bars);
    let report = crate::sweep::run_sweep(&plan, store, options, &interrupt, &mut progress)?;
    drop(progress);
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(crate::sweep::results_table(&plan, &report, store).as_bytes())?;
    stdout.flush()?;
    let count = |status: crate::store::RunStatus| {
        report
            .rows
            .iter()
            .filter(|row| store.status(&plan.runs[row.run].hash).unwrap_or(row.status) == status)
            .count()
    };
    let done = count(crate::store::RunStatus::Done);
    let failed = count(crate::store::RunStatus::Failed);
    eprintln!(
        "{done} of {} runs done, {failed} failed{}",
        plan.runs.len(),
        if report.interrupted {
            " (interrupted: `bertlab run` again resumes)"
        } else if report.stopped_on_failure {
            " (stopped at the first failure: --fail-fast)"
        } else {
            ""
        }
    );
    Ok(if report.interrupted {
        Outcome::Interrupted
    } else if done == plan.runs.len() {
        Outcome::Success
    } else {
        Outcome::Failure
    })
}
