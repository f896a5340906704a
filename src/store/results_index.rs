//! The store's runs as rows for the results table: one [`RunRow`] per run directory (hash,
//! experiment, status, hyperparameters from `spec.json`, the run's `results.json`), and the rows of
//! the runs a plan holds (those not trained yet as `new`).
//!
//! Reading 1,000 run directories costs a few thousand file reads, so rows are kept in an index,
//! `<store>/.results-index.json`, keyed by each run's `run.json` size and modification time. The
//! index is only a cache: a missing, damaged or stale entry is rebuilt from the run directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::UNIX_EPOCH;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::experiment::schema::{self, Section};
use crate::plan::spec::RunHash;
use crate::store::run_files::{RunResult, read_result};
use crate::store::{RECORD_FILE, RunStatus, RunStore, SPEC_FILE};
use crate::support::atomic_file;

const INDEX_FILE: &str = ".results-index.json";
/// 2: results carry `best_step`. 3: rows carry search trials and pruned epochs.
const INDEX_VERSION: u32 = 3;

/// What the table knows about one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    pub hash: RunHash,
    pub experiment: Option<String>,
    pub status: RunStatus,
    /// Hyperparameters by column name, in spec order.
    pub parameters: Vec<(String, Value)>,
    pub result: Option<RunResult>,
    /// When the run last finished (done, failed or interrupted).
    pub finished_at: Option<String>,
    /// The search trials the run stands for (`run.json`'s `search_trials`), by number.
    #[serde(default)]
    pub trials: Vec<usize>,
    /// The epochs a pruned run trained before its rung stopped it.
    #[serde(default)]
    pub pruned_epochs: Option<usize>,
}

/// The hyperparameter columns of a spec: every `[train]` key by its name, the other `[data]` and
/// `[model]` settings as `data.x` / `model.x`, and the data and weights files as the first 12
/// digits of their sha256 (`data.train`, `model`).
pub fn parameters_of(spec: &Value) -> Vec<(String, Value)> {
    let mut parameters = Vec::new();
    let short = |file: &Value| -> Value {
        file.get("sha256")
            .and_then(Value::as_str)
            .map(|sha| Value::String(sha[..sha.len().min(12)].to_string()))
            .unwrap_or(Value::Null)
    };
    if let Some(model) = spec.get("model") {
        let files = model.get("files");
        let weights = files.and_then(|files| {
            files
                .get("model.safetensors")
                .or_else(|| files.get("pytorch_model.bin"))
        });
        parameters.push((
            "model".to_string(),
            weights.map(short).unwrap_or(Value::Null),
        ));
    }
    if let Some(Value::Object(data)) = spec.get("data") {
        for (key, value) in data {
            match key.as_str() {
                "train" | "validation" | "test" => {
                    parameters.push((format!("data.{key}"), short(value)));
                }
                "filters" => {
                    if value.as_array().is_some_and(|filters| !filters.is_empty()) {
                        parameters.push(("data.filters".into(), Value::String(value.to_string())));
                    }
                }
                _ => parameters.push((format!("data.{key}"), value.clone())),
            }
        }
    }
    if let Some(Value::Object(model)) = spec.get("model") {
        for (key, value) in model {
            if key != "files" {
                parameters.push((format!("model.{key}"), value.clone()));
            }
        }
    }
    if let Some(Value::Object(train)) = spec.get("train") {
        // A spec leaves out the keys at their defaults (so older hashes hold): the table shows
        // the resolved value, so a sweep over a schedule reads `linear`, not an empty cell.
        let mut resolved: BTreeMap<String, Value> = train.clone().into_iter().collect();
        for key in schema::KEYS
            .iter()
            .filter(|key| key.section == Section::Train && key.hashed)
        {
            let default = match key.default {
                schema::Default::Bool(value) => Value::Bool(value),
                schema::Default::Integer(value) => Value::from(value),
                schema::Default::Float(value) => Value::from(value),
                schema::Default::Text(value) => Value::String(value.to_string()),
                _ => continue,
            };
            resolved.entry(key.name.to_string()).or_insert(default);
        }
        parameters.extend(resolved);
    }
    parameters
}

#[derive(Serialize, Deserialize, Default)]
struct Index {
    version: u32,
    /// Short hash -> (run.json size, modification time in ns, row).
    rows: BTreeMap<String, (u64, u128, RunRow)>,
}

fn stamp(path: &Path) -> Option<(u64, u128)> {
    let metadata = std::fs::metadata(path).ok()?;
    let modified = metadata.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some((metadata.len(), modified.as_nanos()))
}

fn read_row(store: &RunStore, hash: &RunHash) -> anyhow::Result<RunRow> {
    let directory = store.run_directory(hash);
    let spec: Value = serde_json::from_slice(&store.spec_bytes(hash)?)
        .with_context(|| format!("{} is not JSON", directory.join(SPEC_FILE).display()))?;
    let record = store.record(hash)?;
    let status = store.status(hash)?;
    let result = if status == RunStatus::Done {
        Some(read_result(&directory)?)
    } else {
        None
    };
    Ok(RunRow {
        hash: hash.clone(),
        experiment: record.as_ref().and_then(|record| record.experiment.clone()),
        status,
        parameters: parameters_of(&spec),
        result,
        trials: record
            .as_ref()
            .map(|record| {
                record
                    .search_trials
                    .iter()
                    .map(|entry| entry.trial)
                    .collect()
            })
            .unwrap_or_default(),
        pruned_epochs: record
            .as_ref()
            .and_then(|record| record.pruned.as_ref())
            .map(|pruned| pruned.epochs),
        finished_at: record.and_then(|record| {
            record
                .finished_at
                .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        }),
    })
}

/// Every run of the store, through the index (rebuilt where stale; saved when it changed, if the
/// store can be written).
pub fn store_rows(store: &RunStore) -> anyhow::Result<Vec<RunRow>> {
    let index_path = store.root().join(INDEX_FILE);
    let mut index: Index = std::fs::read(&index_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .filter(|index: &Index| index.version == INDEX_VERSION)
        .unwrap_or_default();
    let mut changed = false;
    let mut rows = Vec::new();
    let hashes = store.runs()?;
    for hash in &hashes {
        let short = hash.short().to_string();
        let record_stamp = stamp(&store.run_directory(hash).join(RECORD_FILE));
        let cached = match (&record_stamp, index.rows.get(&short)) {
            (Some((size, time)), Some((cached_size, cached_time, row)))
                if size == cached_size && time == cached_time && row.hash == *hash =>
            {
                // A `running` record may belong to a dead process: ask the lock again.
                let mut row = row.clone();
                if row.status == RunStatus::Running {
                    row.status = store.status(hash)?;
                }
                Some(row)
            }
            _ => None,
        };
        let row = match cached {
            Some(row) => row,
            None => {
                let row = read_row(store, hash)?;
                if let Some((size, time)) = record_stamp {
                    index.rows.insert(short, (size, time, row.clone()));
                    changed = true;
                }
                row
            }
        };
        rows.push(row);
    }
    let before = index.rows.len();
    index
        .rows
        .retain(|short, _| hashes.iter().any(|hash| hash.short() == short));
    changed |= index.rows.len() != before;
    if changed {
        index.version = INDEX_VERSION;
        if let Ok(bytes) = serde_json::to_vec(&index) {
            // The index is a cache: a store that cannot be written only costs time.
            let _ = atomic_file::write(&index_path, &bytes);
        }
    }
    Ok(rows)
}

/// The rows of the runs a plan holds, in plan order: the store's row for each trained run, a
/// `new` row (its settings, no figures) for each run not trained yet.
pub fn planned_rows(rows: Vec<RunRow>, plan: &crate::plan::Plan) -> anyhow::Result<Vec<RunRow>> {
    let mut rows = rows;
    let mut planned = Vec::with_capacity(plan.runs.len());
    for run in &plan.runs {
        let name = plan.experiments[run.experiment].name.clone();
        match rows.iter().position(|row| row.hash == run.hash) {
            Some(index) => {
                let mut row = rows.swap_remove(index);
                row.experiment.get_or_insert(name);
                planned.push(row);
            }
            None => planned.push(RunRow {
                hash: run.hash.clone(),
                experiment: Some(name),
                status: RunStatus::New,
                parameters: parameters_of(&serde_json::to_value(&run.spec)?),
                result: None,
                finished_at: None,
                trials: Vec::new(),
                pruned_epochs: None,
            }),
        }
    }
    Ok(planned)
}
