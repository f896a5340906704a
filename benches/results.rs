//! `bertlab results` over a store of 1,000 finished runs (synthetic specs, real files): the
//! first read (no index), a read through the index, and the table built from the rows.
//!
//!     cargo bench --bench results
//!
//! The target: under a second for 1,000 runs.

use std::time::Instant;

use bertlab::metrics::Evaluation;
use bertlab::plan::spec::{canonical_json, hash_canonical};
use bertlab::store::run_files::RunResult;
use bertlab::store::{Claim, RunStatus, RunStore};

const RUNS: usize = 1000;

fn main() -> anyhow::Result<()> {
    let folder = tempfile::tempdir()?;
    let store = RunStore::new(folder.path().join("runs"));
    let start = Instant::now();
    for index in 0..RUNS {
        let learning_rate = [1e-5, 2e-5, 3e-5, 5e-5][index % 4];
        let spec = serde_json::json!({
            "bertlab_spec": 1,
            "data": {"train": {"sha256": "ab".repeat(32), "size": 1000, "format": "csv"}, "validation_fraction": 0.1},
            "model": {"files": {"model.safetensors": {"sha256": "cd".repeat(32), "size": 9}}, "hidden_dropout": 0.1},
            "train": {"learning_rate": learning_rate, "seed": index / 4, "epochs": 3, "batch_size": 16},
        });
        let bytes = canonical_json(&spec);
        let hash = hash_canonical(&bytes);
        let Claim::Claimed(lease) = store.claim(&hash, &bytes)? else {
            anyhow::bail!("busy");
        };
        let gold: Vec<u32> = (0..300).map(|i| (i % 3) as u32).collect();
        let predicted: Vec<u32> = (0..300).map(|i| ((i + index) % 4 % 3) as u32).collect();
        let evaluation = Evaluation::new(&gold, &predicted, 3, 0.5);
        let result = RunResult {
            best_epoch: 2,
            best_step: Some(200),
            epochs_run: 3,
            stopped_early: false,
            validation: evaluation.clone(),
            test: Some(evaluation),
            train_seconds: 100.0,
            train_samples_per_second: 30.0,
        };
        std::fs::write(
            lease.directory().join("results.json"),
            serde_json::to_vec_pretty(&result)?,
        )?;
        lease.set_status(RunStatus::Done, None)?;
    }
    eprintln!("made {RUNS} runs in {:.2} s", start.elapsed().as_secs_f64());
    for label in [
        "first read (builds the index)",
        "through the index",
        "through the index",
    ] {
        let start = Instant::now();
        let rows = bertlab::store::results_index::store_rows(&store)?;
        let read = start.elapsed().as_secs_f64();
        let frame = bertlab::report::results_table::only_changed(
            bertlab::report::results_table::frame(&rows)?,
        )?;
        let table = bertlab::report::results_table::table_text(&frame)?;
        let total = start.elapsed().as_secs_f64();
        println!(
            "{label}: {} rows read in {:.3} s, table of {} lines in {:.3} s total",
            rows.len(),
            read,
            table.lines().count(),
            total
        );
    }
    Ok(())
}
