//! What each command does with resolved arguments: calls into the pipeline and writes data to
//! stdout, progress and warnings to stderr. Errors are returned, and printed once by `main`.

pub mod cli;

use std::io::Write;

use anyhow::Context;

use crate::commands::cli::{HiArgs, HiCommand, ReportFormat};
use crate::experiment::diagnostics::{Severity, render_problems};
use crate::plan::fingerprint::{Fingerprinter, default_cache_path};
use crate::plan::{self, Plan, PlanOptions};
use crate::report::tables::{self, PlanRow, TableFormat};
use crate::store::RunStore;
use crate::tokenize::preprocess;

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
        HiCommand::Results(options) => results_command(&args.store, &options, args.color_stderr),
        HiCommand::Predict(options) => predict_command(&args.store, &options),
        HiCommand::Reproduce(options) => reproduce_command(&args.store, &options),
        HiCommand::Compare(options) => {
            let hashes = options
                .hashes
                .iter()
                .map(|prefix| args.store.resolve(prefix))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let text = crate::report::compare::compare_text(&args.store, &hashes)?;
            std::io::stdout().lock().write_all(text.as_bytes())?;
            Ok(Outcome::Success)
        }
        HiCommand::Report(options) => report_command(&args.store, &options, args.color_stderr),
        HiCommand::Show { hash_prefix } => show_command(&args.store, &hash_prefix),
        HiCommand::Bench(options) => bench_command(&options, args.color_stderr),
        HiCommand::DeviceCheck(options) => device_check_command(&options),
    }
}

/// `bertlab bench`.
fn bench_command(
    options: &crate::commands::cli::BenchArgs,
    color: bool,
) -> anyhow::Result<Outcome> {
    use crate::train::bench::{self, BenchOptions};
    if let Some(threads) = options.threads {
        if threads == 0 {
            anyhow::bail!("--threads must be at least 1");
        }
        // candle reads RAYON_NUM_THREADS before each matrix product; rayon's pool is built on
        // first use, which has not happened yet.
        // SAFETY: no other thread of this process reads the environment at this point.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    }
    let plan = make_plan(
        std::slice::from_ref(&options.experiment),
        &PlanOptions::default(),
        color,
    )?;
    let Some(mut run) = plan.runs.first().cloned() else {
        anyhow::bail!(
            "{} plans no run: nothing to measure",
            options.experiment.display()
        );
    };
    // bench writes nothing to the store, so the run's spec may be changed for the measurement.
    if let Some(precision) = options.precision {
        run.spec.train.precision = precision;
    }
    if let Some(device) = options.device {
        run.settings.device = device;
    }
    if plan.runs.len() > 1 {
        eprintln!(
            "bench: {} plans {} runs; measuring the first ({})",
            options.experiment.display(),
            plan.runs.len(),
            run.hash.short()
        );
    }
    let report = bench::bench_run(
        &run,
        &BenchOptions {
            warmup_steps: options.warmup_steps,
            steps: options.steps,
            inference_batch_size: options.inference_batch_size,
            inference_examples: options.inference_examples,
            sequence_length: options.sequence_length,
        },
    )?;
    let mut stdout = std::io::stdout().lock();
    match options.format {
        crate::commands::cli::BenchFormat::Text => {
            stdout.write_all(bench::report_text(&report).as_bytes())?
        }
        crate::commands::cli::BenchFormat::Json => {
            serde_json::to_writer_pretty(&mut stdout, &report)?;
            stdout.write_all(b"\n")?;
        }
    }
    Ok(Outcome::Success)
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
                crate::support::atomic_file::write(
                    &path,
                    &tables::examples_csv(examples, &prepared.classes),
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

fn show_command(store: &RunStore, hash_prefix: &str) -> anyhow::Result<Outcome> {
    let hash = store.resolve(hash_prefix)?;
    let status = store.status(&hash)?;
    let record = store.record(&hash)?;
    let directory = store.run_directory(&hash);
    let spec: serde_json::Value = serde_json::from_slice(&store.spec_bytes(&hash)?)?;
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
    if let Ok(result) = crate::store::run_files::read_result(&directory) {
        line(
            "kept epoch",
            format!("{} of {}", result.best_epoch, result.epochs_run),
        );
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    let section =
        |stdout: &mut std::io::StdoutLock, title: &str, file: &str| -> anyhow::Result<()> {
            if let Ok(mut reader) = csv::Reader::from_path(directory.join(file)) {
                let headers: Vec<String> = reader.headers()?.iter().map(String::from).collect();
                let rows: Vec<Vec<String>> = reader
                    .records()
                    .filter_map(Result::ok)
                    .map(|record| {
                        record
                            .iter()
                            .map(|cell| match cell.parse::<f64>() {
                                Ok(number) if cell.contains('.') && number.fract() != 0.0 => {
                                    format!("{number:.4}")
                                }
                                _ => cell.to_string(),
                            })
                            .collect()
                    })
                    .collect();
                writeln!(stdout, "\n{title}")?;
                stdout.write_all(tables::text_table(&headers, &rows).as_bytes())?;
            }
            Ok(())
        };
    section(
        &mut stdout,
        "epochs (metrics.csv)",
        crate::store::run_files::METRICS_FILE,
    )?;
    section(
        &mut stdout,
        "per class, kept epoch",
        crate::store::run_files::PER_CLASS_FILE,
    )?;
    section(
        &mut stdout,
        "confusion (rows: gold)",
        crate::store::run_files::CONFUSION_FILE,
    )?;
    writeln!(stdout, "\nspec")?;
    writeln!(stdout, "{}", serde_json::to_string_pretty(&spec)?)?;
    Ok(Outcome::Success)
}

/// Registers SIGINT/SIGTERM: the first raises the flag (checkpoint, clean stop), a second exits.
fn interrupt_flag() -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let interrupt = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&interrupt))?;
        signal_hook::flag::register(signal, Arc::clone(&interrupt))?;
    }
    Ok(interrupt)
}

/// `bertlab results`.
fn results_command(
    store: &RunStore,
    options: &crate::commands::cli::ResultsArgs,
    color: bool,
) -> anyhow::Result<Outcome> {
    use crate::commands::cli::ResultsFormat;
    use crate::report::results_table;
    use std::io::IsTerminal;

    let rows = select_rows(
        store,
        &options.experiments,
        options.experiment.as_deref(),
        color,
    )?;
    let mut frame = results_table::frame(&rows)?;
    if let Some(expression) = &options.where_ {
        frame = results_table::filter(frame, &results_table::parse_where(expression)?)?;
    }
    if options.group_seeds {
        frame = results_table::group_seeds(frame)?;
    }
    let for_people = matches!(options.format, ResultsFormat::Table | ResultsFormat::Md);
    if options.only_changed || (for_people && !options.all_columns) {
        frame = results_table::only_changed(frame)?;
    }
    if let Some(column) = &options.sort {
        frame = results_table::sort(frame, column)?;
    }
    let bytes = match options.format {
        ResultsFormat::Table => results_table::table_text(&frame)?.into_bytes(),
        ResultsFormat::Md => results_table::table_markdown(&frame)?.into_bytes(),
        ResultsFormat::Csv => results_table::table_csv(&mut frame)?,
        ResultsFormat::Json => results_table::table_json(&mut frame)?,
        ResultsFormat::Parquet => {
            if options.output.is_none() && std::io::stdout().is_terminal() {
                anyhow::bail!(
                    "parquet is binary: give --output FILE, or redirect stdout to a file"
                );
            }
            results_table::table_parquet(&mut frame)?
        }
    };
    match &options.output {
        Some(path) => crate::support::atomic_file::write(path, &bytes)?,
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&bytes)?;
            stdout.flush()?;
        }
    }
    eprintln!(
        "{} row{}",
        frame.height(),
        if frame.height() == 1 { "" } else { "s" }
    );
    Ok(Outcome::Success)
}

/// The runs `results` and `report` show: the store's, or those the experiment files plan (runs
/// not trained yet included as `new`), optionally of one experiment name.
fn select_rows(
    store: &RunStore,
    experiments: &[std::path::PathBuf],
    experiment: Option<&str>,
    color: bool,
) -> anyhow::Result<Vec<crate::store::results_index::RunRow>> {
    use crate::store::results_index;
    let mut rows = results_index::store_rows(store)?;
    if !experiments.is_empty() {
        let plan = make_plan(experiments, &PlanOptions::default(), color)?;
        rows = results_index::planned_rows(rows, &plan)?;
    }
    if let Some(name) = experiment {
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

/// `bertlab report`: the HTML page, and `curves.svg` in every finished run's directory.
fn report_command(
    store: &RunStore,
    options: &crate::commands::cli::ReportArgs,
    color: bool,
) -> anyhow::Result<Outcome> {
    use crate::report::html;
    let rows = select_rows(
        store,
        &options.experiments,
        options.experiment.as_deref(),
        color,
    )?;
    for row in &rows {
        if row.result.is_some() {
            let directory = store.run_directory(&row.hash);
            let metrics = crate::store::run_files::read_metrics(&directory)?;
            crate::support::atomic_file::write(
                &directory.join("curves.svg"),
                html::run_curves_svg(&metrics)?.as_bytes(),
            )?;
        }
    }
    let frame =
        crate::report::results_table::only_changed(crate::report::results_table::frame(&rows)?)?;
    let (headers, cells) = crate::report::results_table::text_cells(&frame)?;
    let html = html::report_html(store, &rows, &headers, &cells)?;
    crate::support::atomic_file::write(&options.output, html.as_bytes())?;
    eprintln!(
        "wrote {} ({} runs); curves.svg in each finished run's directory",
        options.output.display(),
        rows.len()
    );
    Ok(Outcome::Success)
}

/// `bertlab predict`.
fn predict_command(
    store: &RunStore,
    options: &crate::commands::cli::PredictArgs,
) -> anyhow::Result<Outcome> {
    use crate::train::predict::{self, Predictor};

    let hash = store.resolve(&options.hash)?;
    let predictor = Predictor::load(&store.run_directory(&hash))?;
    let texts: Vec<String> = match &options.input {
        Some(path) => predict::read_texts(path, &options.text_column)?,
        None if options.texts.is_empty() => {
            anyhow::bail!(
                "nothing to predict: give --text TEXT (repeatable) or --input FILE --output FILE"
            )
        }
        None => options.texts.clone(),
    };
    let started = std::time::Instant::now();
    let references: Vec<&str> = texts.iter().map(String::as_str).collect();
    let predictions = predictor.predict(&references, options.batch_size)?;
    let seconds = started.elapsed().as_secs_f64();
    match &options.output {
        Some(path) => {
            let extension = path
                .extension()
                .map(|extension| extension.to_string_lossy().to_ascii_lowercase());
            let bytes = match extension.as_deref() {
                Some("csv") => predict::predictions_csv(&texts, &predictor.classes, &predictions),
                Some("jsonl") | Some("ndjson") => {
                    predict::predictions_jsonl(&texts, &predictor.classes, &predictions)
                }
                _ => anyhow::bail!(
                    "{}: write predictions to a .csv or .jsonl file",
                    path.display()
                ),
            };
            crate::support::atomic_file::write(path, &bytes)?;
        }
        None => {
            let mut headers = vec!["predicted".to_string()];
            headers.extend(predictor.classes.iter().cloned());
            headers.push("text".into());
            let rows: Vec<Vec<String>> = texts
                .iter()
                .zip(&predictions)
                .map(|(text, prediction)| {
                    let mut row = vec![predictor.classes[prediction.class as usize].clone()];
                    row.extend(prediction.probabilities.iter().map(|p| format!("{p:.4}")));
                    row.push(text.clone());
                    row
                })
                .collect();
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(tables::text_table(&headers, &rows).as_bytes())?;
        }
    }
    eprintln!(
        "predicted {} text{} with run {} in {:.2} s ({:.1} texts/s)",
        texts.len(),
        if texts.len() == 1 { "" } else { "s" },
        hash.short(),
        seconds,
        texts.len() as f64 / seconds.max(1e-9)
    );
    Ok(Outcome::Success)
}

/// `bertlab device-check`: the table on stdout; exit status 1 when a check fails.
fn device_check_command(
    options: &crate::commands::cli::DeviceCheckArgs,
) -> anyhow::Result<Outcome> {
    let device = crate::train::device::resolve(options.device)?;
    eprintln!("checking {} against the CPU", device.label);
    let lines = crate::train::device_check::check_device(&options.model, &device)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(crate::train::device_check::report_text(&device.label, &lines).as_bytes())?;
    Ok(if lines.iter().all(|line| line.passed()) {
        Outcome::Success
    } else {
        Outcome::Failure
    })
}

/// `bertlab reproduce`.
fn reproduce_command(
    store: &RunStore,
    options: &crate::commands::cli::ReproduceArgs,
) -> anyhow::Result<Outcome> {
    use std::io::IsTerminal;
    let hash = store.resolve(&options.hash)?;
    let interrupt = interrupt_flag()?;
    let temporary;
    let scratch = match &options.keep {
        Some(folder) => folder.clone(),
        None => {
            temporary = tempfile::Builder::new()
                .prefix("bertlab-reproduce-")
                .tempdir()
                .context("cannot create a scratch folder")?;
            temporary.path().to_path_buf()
        }
    };
    eprintln!("reproducing run {} in {}", hash.short(), scratch.display());
    let mut progress = crate::support::progress::Progress::new(std::io::stderr().is_terminal());
    let verdict = crate::sweep::reproduce::reproduce(
        store,
        &hash,
        &scratch,
        options.tolerance,
        &interrupt,
        &mut progress,
    )?;
    drop(progress);
    let Some(verdict) = verdict else {
        return Ok(Outcome::Interrupted);
    };
    let mut stdout = std::io::stdout().lock();
    for line in &verdict.lines {
        writeln!(stdout, "{line}")?;
    }
    writeln!(
        stdout,
        "{}",
        if verdict.reproduced {
            format!("run {} reproduced", hash.short())
        } else {
            format!("run {} NOT reproduced", hash.short())
        }
    )?;
    Ok(if verdict.reproduced {
        Outcome::Success
    } else {
        Outcome::Failure
    })
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
    let plan = make_plan(experiments, plan_options, color)?;
    // The first SIGINT/SIGTERM asks for a checkpoint and a clean stop; a second one exits at once.
    let interrupt = interrupt_flag()?;
    store.create()?;
    eprintln!(
        "{} run{} planned, store {}",
        plan.runs.len(),
        if plan.runs.len() == 1 { "" } else { "s" },
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
    let frame =
        crate::report::results_table::only_changed(crate::report::results_table::frame(&rows)?)?;
    stdout.write_all(crate::report::results_table::table_text(&frame)?.as_bytes())?;
    stdout.flush()?;
    let count =
        |status: crate::store::RunStatus| rows.iter().filter(|row| row.status == status).count();
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
