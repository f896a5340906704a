//! `bertlab bench`: how fast this build trains and predicts on an experiment's first run
//! (`train::bench`).

use std::io::Write;

use crate::commands::{Outcome, make_plan};
use crate::plan::PlanOptions;

/// `bertlab bench`.
pub fn execute(options: &crate::commands::cli::BenchArgs, color: bool) -> anyhow::Result<Outcome> {
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
            batch_size: options.batch_size,
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
