//! `bertlab reproduce`: trains a finished run again from its stored spec, in a scratch store,
//! without touching the original, and compares metrics and weights. The data and model files are
//! found through the experiment file the run was trained from (its copy in the run directory,
//! resolved against the original folder); if any file's content no longer matches the spec's
//! fingerprint, the run is refused and the file named.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};
use candle_core::Device;
use serde_json::Value;

use crate::plan::spec::RunHash;
use crate::plan::{Plan, PlanOptions, PlannedRun};
use crate::store::run_files::{self, EXPERIMENT_COPY_FILE, TIME_COLUMNS};
use crate::store::{RunStatus, RunStore};
use crate::support::progress::Progress;
use crate::sweep::{self, SweepOptions};

/// What the comparison found.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub reproduced: bool,
    /// One line per checked part (metrics, weights, predictions).
    pub lines: Vec<String>,
}

/// The spec without file fingerprints: what the settings alone say.
fn without_fingerprints(spec: &Value) -> Value {
    let mut spec = spec.clone();
    if let Some(data) = spec.get_mut("data").and_then(Value::as_object_mut) {
        for file in ["train", "validation", "test"] {
            if let Some(entry) = data.get_mut(file).and_then(Value::as_object_mut) {
                entry.remove("sha256");
                entry.remove("size");
            }
        }
    }
    if let Some(model) = spec.get_mut("model").and_then(Value::as_object_mut) {
        model.remove("files");
    }
    spec
}

/// Which files of `planned` differ from the fingerprints in `stored`: `(path, then, now)`.
fn changed_files(stored: &Value, planned: &PlannedRun) -> Vec<(PathBuf, String, String)> {
    let now = serde_json::to_value(&planned.spec).expect("a spec is plain data");
    let sha = |value: &Value| {
        value
            .get("sha256")
            .and_then(Value::as_str)
            .unwrap_or("(none)")
            .to_string()
    };
    let mut changed = Vec::new();
    let paths = &planned.settings.data_paths;
    for (name, path) in [
        ("train", Some(&paths.train)),
        ("validation", paths.validation.as_ref()),
        ("test", paths.test.as_ref()),
    ] {
        let (then, current) = (sha(&stored["data"][name]), sha(&now["data"][name]));
        if then != current
            && let Some(path) = path
        {
            changed.push((path.clone(), then, current));
        }
    }
    let empty = serde_json::Map::new();
    let stored_files = stored["model"]["files"].as_object().unwrap_or(&empty);
    let current_files = now["model"]["files"].as_object().unwrap_or(&empty);
    for name in stored_files.keys().chain(current_files.keys()) {
        let (then, current) = (
            stored_files.get(name).map(sha).unwrap_or("(none)".into()),
            current_files.get(name).map(sha).unwrap_or("(none)".into()),
        );
        if then != current && !changed.iter().any(|(path, _, _)| path.ends_with(name)) {
            changed.push((planned.settings.model_path.join(name), then, current));
        }
    }
    changed
}

/// Plans the experiment a run came from, as it was: the copy in the run directory, resolved
/// against the folder of the original file.
fn plan_original(store: &RunStore, hash: &RunHash) -> anyhow::Result<Plan> {
    let directory = store.run_directory(hash);
    let copy = std::fs::read(directory.join(EXPERIMENT_COPY_FILE)).with_context(|| {
        format!(
            "{} has no {EXPERIMENT_COPY_FILE}: it was not trained by `bertlab run`",
            directory.display()
        )
    })?;
    let record = store
        .record(hash)?
        .with_context(|| format!("{} has no run.json", directory.display()))?;
    let original = record
        .provenance
        .as_ref()
        .map(|provenance| PathBuf::from(&provenance.experiment_file))
        .context("run.json records no experiment file")?;
    let options = PlanOptions::default();
    let mut fingerprinter = crate::plan::fingerprint::Fingerprinter::new(
        crate::plan::fingerprint::default_cache_path(),
    );
    if std::fs::read(&original).is_ok_and(|bytes| bytes == copy) {
        return crate::plan::plan(&[original], &options, &mut fingerprinter);
    }
    // The file changed or is gone: plan the copy from the original folder, where its relative
    // paths point.
    let folder = original
        .parent()
        .filter(|folder| folder.is_dir())
        .with_context(|| {
            format!(
                "the experiment's folder {} is gone: the paths in {} are relative to it",
                original
                    .parent()
                    .map(|folder| folder.display().to_string())
                    .unwrap_or_default(),
                directory.join(EXPERIMENT_COPY_FILE).display()
            )
        })?;
    let temporary = tempfile::Builder::new()
        .prefix(".bertlab-reproduce-")
        .suffix(".toml")
        .tempfile_in(folder)
        .with_context(|| format!("cannot write a temporary file in {}", folder.display()))?;
    std::fs::write(temporary.path(), &copy)?;
    crate::plan::plan(
        &[temporary.path().to_path_buf()],
        &options,
        &mut fingerprinter,
    )
}

/// The planned run with the stored hash, or an error naming what changed.
fn find_run(plan: Plan, hash: &RunHash, stored: &Value) -> anyhow::Result<(Plan, usize)> {
    if let Some(index) = plan.runs.iter().position(|run| &run.hash == hash) {
        return Ok((plan, index));
    }
    let settings = without_fingerprints(stored);
    for run in &plan.runs {
        let planned = serde_json::to_value(&run.spec)?;
        if without_fingerprints(&planned) == settings {
            let changed = changed_files(stored, run);
            let list: Vec<String> = changed
                .iter()
                .map(|(path, then, now)| {
                    format!(
                        "  {}: sha256 {} at training time, {} now",
                        path.display(),
                        &then[..then.len().min(12)],
                        &now[..now.len().min(12)]
                    )
                })
                .collect();
            bail!(
                "cannot reproduce run {}: its files changed since it was trained:\n{}\nrestore the files (the run's spec.json holds their sha256) and try again",
                hash.short(),
                list.join("\n")
            );
        }
    }
    bail!(
        "cannot reproduce run {}: its experiment file no longer plans it with these settings",
        hash.short()
    )
}

fn numbers_close(a: &str, b: &str, tolerance: f64) -> bool {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => (x - y).abs() <= tolerance || (x.is_nan() && y.is_nan()),
        _ => a == b,
    }
}

fn metrics_rows(directory: &Path) -> anyhow::Result<(Vec<String>, Vec<Vec<String>>)> {
    let path = directory.join(run_files::METRICS_FILE);
    let mut reader =
        csv::Reader::from_path(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let headers: Vec<String> = reader.headers()?.iter().map(String::from).collect();
    let keep: Vec<usize> = (0..headers.len())
        .filter(|&index| !TIME_COLUMNS.contains(&headers[index].as_str()))
        .collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record?;
        rows.push(
            keep.iter()
                .map(|&index| record[index].to_string())
                .collect(),
        );
    }
    Ok((
        keep.iter().map(|&index| headers[index].clone()).collect(),
        rows,
    ))
}

/// Compares two run directories: metrics.csv (time columns aside), the weights, predictions.
pub fn compare(original: &Path, again: &Path, tolerance: Option<f64>) -> anyhow::Result<Verdict> {
    let mut lines = Vec::new();
    let mut reproduced = true;
    let (headers, first) = metrics_rows(original)?;
    let (_, second) = metrics_rows(again)?;
    let mut metric_differences = Vec::new();
    if first.len() != second.len() {
        metric_differences.push(format!("{} epochs, then {}", first.len(), second.len()));
    }
    for (row, (a, b)) in first.iter().zip(&second).enumerate() {
        for (column, (x, y)) in a.iter().zip(b).enumerate() {
            let same = match tolerance {
                None => x == y,
                Some(tolerance) => numbers_close(x, y, tolerance),
            };
            if !same {
                metric_differences.push(format!(
                    "epoch {} {}: {x} then {y}",
                    row + 1,
                    headers[column]
                ));
            }
        }
    }
    if metric_differences.is_empty() {
        lines.push(format!(
            "metrics.csv: {} epochs, {} columns {}",
            first.len(),
            headers.len(),
            if tolerance.is_some() {
                "within tolerance"
            } else {
                "identical"
            }
        ));
    } else {
        reproduced = false;
        lines.push(format!(
            "metrics.csv differs: {}",
            metric_differences
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }

    let weights = |directory: &Path| {
        let path = directory
            .join(run_files::MODEL_DIRECTORY)
            .join("model.safetensors");
        candle_core::safetensors::load(&path, &Device::Cpu)
            .with_context(|| format!("cannot read {}", path.display()))
    };
    let (first, second) = (weights(original)?, weights(again)?);
    let mut names: Vec<&String> = first.keys().collect();
    names.sort();
    let mut worst = 0f64;
    let mut different = Vec::new();
    for name in &names {
        let Some(other) = second.get(*name) else {
            different.push(format!("{name} missing"));
            continue;
        };
        let a: Vec<f32> = first[*name].flatten_all()?.to_vec1()?;
        let b: Vec<f32> = other.flatten_all()?.to_vec1()?;
        if a.len() != b.len() {
            different.push(format!("{name}: shape differs"));
            continue;
        }
        let bits_equal = a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits());
        let largest = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs() as f64)
            .fold(0.0, f64::max);
        worst = worst.max(largest);
        let same = match tolerance {
            None => bits_equal,
            Some(tolerance) => largest <= tolerance,
        };
        if !same {
            different.push(format!("{name} (largest difference {largest:e})"));
        }
    }
    if different.is_empty() && first.len() == second.len() {
        lines.push(match tolerance {
            None => format!("weights: {} tensors identical, bit for bit", names.len()),
            Some(tolerance) => format!(
                "weights: {} tensors within {tolerance:e} (largest difference {worst:e})",
                names.len()
            ),
        });
    } else {
        reproduced = false;
        lines.push(format!(
            "weights differ: {} of {} tensors, e.g. {}",
            different.len(),
            names.len(),
            different
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    let predictions = |directory: &Path| std::fs::read(directory.join(run_files::PREDICTIONS_FILE));
    match (predictions(original), predictions(again)) {
        (Ok(a), Ok(b)) if a == b => lines.push("predictions.csv: identical".into()),
        (Ok(_), Ok(_)) if tolerance.is_some() => {
            lines.push("predictions.csv: differs in its digits (see the tolerance)".into())
        }
        (Ok(_), Ok(_)) => {
            reproduced = false;
            lines.push("predictions.csv differs".into());
        }
        _ => lines.push("predictions.csv: missing, not compared".into()),
    }
    Ok(Verdict { reproduced, lines })
}

/// Reproduces a run: refuses when its files changed, trains it in `scratch`, compares.
pub fn reproduce(
    store: &RunStore,
    hash: &RunHash,
    scratch: &Path,
    tolerance: Option<f64>,
    interrupt: &AtomicBool,
    progress: &mut Progress,
) -> anyhow::Result<Option<Verdict>> {
    let status = store.status(hash)?;
    if status != RunStatus::Done {
        bail!(
            "run {} is {status}: only a done run can be reproduced (`bertlab run` finishes it)",
            hash.short()
        );
    }
    let stored: Value = serde_json::from_slice(&store.spec_bytes(hash)?)?;
    let plan = plan_original(store, hash)?;
    let (mut plan, index) = find_run(plan, hash, &stored)?;
    let run = plan.runs.swap_remove(index);
    plan.runs = vec![run];
    let scratch_store = RunStore::new(scratch);
    if scratch_store.status(hash)? == RunStatus::Done {
        bail!(
            "{} already holds a finished copy of run {}: give an empty folder to --keep",
            scratch.display(),
            hash.short()
        );
    }
    let original = store.record(hash)?.and_then(|record| record.provenance);
    let bf16_unit = (plan.runs[0].spec.train.precision == crate::plan::spec::Precision::Bf16)
        .then(|| {
            bf16_unit_plan(
                original.as_ref(),
                crate::model::amx::enabled(),
                crate::model::amx::hardware_available(),
            )
        })
        .flatten();
    let avoided = bf16_unit.as_ref().is_some_and(|plan| plan.avoid_tiles);
    if avoided {
        crate::model::amx::avoid_tiles(true);
    }
    let report = sweep::run_sweep(
        &plan,
        &scratch_store,
        &SweepOptions {
            fail_fast: true,
            retry_failed: false,
            retry_failed_before: None,
            cache_folder: None,
            devices: Vec::new(),
        },
        interrupt,
        progress,
    );
    if avoided {
        crate::model::amx::avoid_tiles(false);
    }
    let report = report?;
    if report.interrupted {
        return Ok(None);
    }
    let row = &report.rows[0];
    if row.status != RunStatus::Done {
        bail!(
            "the second training failed: {}",
            row.error.as_deref().unwrap_or("no reason recorded")
        );
    }
    let mut verdict = compare(
        &store.run_directory(hash),
        &scratch_store.run_directory(hash),
        tolerance,
    )?;
    if let Some(line) = bf16_unit.as_ref().and_then(|plan| plan.line.clone()) {
        verdict.lines.push(line);
    }
    if !verdict.reproduced {
        if let Some(note) = bf16_unit.and_then(|plan| plan.note_when_different) {
            verdict.lines.push(note);
        }
        if let Some(note) = build_difference(original.as_ref()) {
            verdict.lines.push(note);
        }
    }
    Ok(Some(verdict))
}

/// How a CPU bf16 run is trained again so that its products sum as the original's did.
#[derive(Clone, Debug, PartialEq)]
struct Bf16UnitPlan {
    /// Keep the products off the AMX tiles during the training (the original ran on vectors).
    avoid_tiles: bool,
    /// A line for the verdict saying what was done.
    line: Option<String>,
    /// A note for a verdict that found differences the unit explains.
    note_when_different: Option<String>,
}

/// The unit plan for a bf16 run whose `original` provenance says where it ran, on a machine
/// whose tiles are in use (`tiles_enabled`) or present at all (`tiles_present`). None for GPU
/// runs. Runs from before the tiles record no unit: they ran on the vectors.
fn bf16_unit_plan(
    original: Option<&crate::store::Provenance>,
    tiles_enabled: bool,
    tiles_present: bool,
) -> Option<Bf16UnitPlan> {
    let original = original?;
    if original.device != "cpu" {
        return None;
    }
    let vectors = crate::model::bf16::Unit::Vectors.name();
    let tiles = crate::model::bf16::Unit::Tiles.name();
    let recorded = original.bf16_products.as_deref().unwrap_or(vectors);
    Some(if recorded == tiles && !tiles_enabled {
        Bf16UnitPlan {
            avoid_tiles: false,
            line: None,
            note_when_different: Some(format!(
                "note: the run's bf16 products ran on AMX tiles, {}: the vectors' sums differ in the last bits; compare with --tolerance (for example 1e-4)",
                if tiles_present {
                    format!(
                        "which {}=avx512 keeps off here",
                        crate::model::amx::UNIT_VARIABLE
                    )
                } else {
                    "which this CPU lacks".to_string()
                }
            )),
        }
    } else if recorded == vectors && tiles_enabled {
        Bf16UnitPlan {
            avoid_tiles: true,
            line: Some(
                "bf16 products: on AVX512-BF16 vectors as the run's were (this CPU's AMX tiles set aside)"
                    .to_string(),
            ),
            note_when_different: None,
        }
    } else {
        Bf16UnitPlan {
            avoid_tiles: false,
            line: None,
            note_when_different: None,
        }
    })
}

/// A note when the run was trained by another bertlab build than this one: kernels change
/// between builds (summation order, approximations), so bit-for-bit equality is only promised by
/// the same build; `--tolerance` compares across builds.
fn build_difference(original: Option<&crate::store::Provenance>) -> Option<String> {
    let original = original?;
    let this_commit = sweep::bertlab_commit();
    let same_version = original.bertlab_version == env!("CARGO_PKG_VERSION");
    let same_commit = original.bertlab_commit == this_commit;
    if same_version && same_commit {
        return None;
    }
    let describe = |version: &str, commit: Option<&str>| match commit {
        Some(commit) => format!("bertlab {version} ({})", &commit[..commit.len().min(12)]),
        None => format!("bertlab {version}"),
    };
    Some(format!(
        "note: the run was trained by {}, this is {}: only the same build promises identical \
         bits; across builds compare with --tolerance (for example 1e-4)",
        describe(
            &original.bertlab_version,
            original.bertlab_commit.as_deref()
        ),
        describe(env!("CARGO_PKG_VERSION"), this_commit.as_deref()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_from_another_build_gets_a_note() {
        let provenance = |version: &str, commit: Option<String>| crate::store::Provenance {
            host: "h".into(),
            device: "cpu".into(),
            threads: 2,
            bertlab_version: version.into(),
            bertlab_commit: commit,
            experiment_file: "e.toml".into(),
            experiment_commit: None,
            experiment_dirty: None,
            slurm: None,
            model_hub: None,
            bf16_products: None,
        };
        let this = provenance(env!("CARGO_PKG_VERSION"), sweep::bertlab_commit());
        assert_eq!(build_difference(Some(&this)), None);
        assert_eq!(build_difference(None), None);
        let older = provenance("0.0.1", Some("0123456789abcdef0123".into()));
        let note = build_difference(Some(&older)).unwrap();
        assert!(note.contains("bertlab 0.0.1 (0123456789ab)"), "{note}");
        assert!(note.contains("--tolerance"), "{note}");
    }

    /// A run on the vectors (or from before the tiles) is trained on the vectors again where
    /// the tiles are in use; a run on the tiles gets a note where they are not; GPU runs and
    /// runs on the unit in use need nothing.
    #[test]
    fn a_bf16_run_is_trained_again_on_its_own_unit() {
        let provenance = |device: &str, unit: Option<&str>| crate::store::Provenance {
            host: "h".into(),
            device: device.into(),
            threads: 2,
            bertlab_version: "0.1.0".into(),
            bertlab_commit: None,
            experiment_file: "e.toml".into(),
            experiment_commit: None,
            experiment_dirty: None,
            slurm: None,
            model_hub: None,
            bf16_products: unit.map(String::from),
        };
        let nothing = Bf16UnitPlan {
            avoid_tiles: false,
            line: None,
            note_when_different: None,
        };
        assert_eq!(bf16_unit_plan(None, true, true), None);
        assert_eq!(
            bf16_unit_plan(Some(&provenance("cuda:0", None)), true, true),
            None
        );
        for unit in [None, Some("avx512-bf16")] {
            let original = provenance("cpu", unit);
            let plan = bf16_unit_plan(Some(&original), true, true).unwrap();
            assert!(plan.avoid_tiles, "{unit:?}");
            assert!(plan.line.unwrap().contains("AVX512-BF16"));
            assert_eq!(
                bf16_unit_plan(Some(&original), false, false),
                Some(nothing.clone())
            );
        }
        let on_tiles = provenance("cpu", Some("amx"));
        assert_eq!(bf16_unit_plan(Some(&on_tiles), true, true), Some(nothing));
        let lacking = bf16_unit_plan(Some(&on_tiles), false, false).unwrap();
        assert!(!lacking.avoid_tiles);
        let note = lacking.note_when_different.unwrap();
        assert!(
            note.contains("which this CPU lacks") && note.contains("--tolerance"),
            "{note}"
        );
        let kept_off = bf16_unit_plan(Some(&on_tiles), false, true).unwrap();
        let note = kept_off.note_when_different.unwrap();
        assert!(note.contains("BERTLAB_BF16_PRODUCTS=avx512"), "{note}");
    }
}
