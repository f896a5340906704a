//! The search stage: which trials a search proposes and how each one ended, as a pure function
//! of the experiment file and the runs' results in the store.
//!
//! Owns: [`search_state`] here (every trial so far: its values, its run, its outcome, what it is
//! compared with at each rung), the search's record (`<store>/searches/<hash>.json`, rewritten
//! whenever a trial settles) and `sampler` (random and TPE proposals, pure functions of the
//! space, the observations and a seeded generator, testable alone on synthetic objectives).
//!
//! Reproducible trial for trial (docs/search.md): trial k is proposed only from the trials
//! 0..=k-parallel, and only once all of them are settled (done, pruned or failed); its
//! generator is the search seed's stream for k. At a rung it is compared with the values the
//! same trials reached there. So the trials, their hashes and every prune decision follow from
//! the file and earlier results alone, never from timing, processes or crashes; and at most
//! `parallel` trials are ever in flight. Nothing the search decides is stored as the truth: the
//! state is recomputed from the runs' records and `metrics.csv` whenever it is needed, so a crash
//! loses nothing and two processes agree.
//!
//! Uses: every stage below it (`plan` resolves trial values into runs, `store` holds their
//! results, `train::policy` is the rung rule the training loop applies). Never uses: `sweep`,
//! `report`, `commands` (the sweep carries the trials out; the report draws them).

pub mod sampler;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::experiment::search::{Distribution, SearchMethod, on_step_grid};
use crate::experiment::{ExperimentFile, Setting};
use crate::plan::PlannedRun;
use crate::plan::search::{PlannedSearch, TrialResolver};
use crate::plan::spec::{RunHash, SelectionMetric};
use crate::store::run_files::{self, EpochRow};
use crate::store::{RunStatus, RunStore, SearchTrial};
use crate::support::atomic_file;
use crate::support::random::{SeededRandom, stream};
use crate::train::policy::{self, PruningPlan, RungComparison};
use sampler::{Observation, Parameter, Score, TpeSettings, Value};

/// How a trial stands.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum TrialOutcome {
    /// Trained to its end (or stopped early by patience): `value` is its kept selection value.
    Done { value: f64, epochs: usize },
    /// Stopped at a rung: `value` is its best value up to the rung.
    Pruned {
        rung: usize,
        epochs: usize,
        value: f64,
        threshold: f64,
    },
    /// Its run failed (or its values could not be resolved into a run).
    Failed { reason: String },
    /// Being trained, here or elsewhere (or waiting for the earlier trial it repeats).
    Running,
    /// Not trained yet (or to be continued: interrupted, or pruned at an earlier epoch than
    /// this search's rules stop it).
    Pending,
}

impl TrialOutcome {
    /// Done, pruned or failed: nothing about it will change.
    pub fn is_settled(&self) -> bool {
        matches!(
            self,
            TrialOutcome::Done { .. } | TrialOutcome::Pruned { .. } | TrialOutcome::Failed { .. }
        )
    }

    /// The status word of tables: done, pruned, failed, running, pending.
    pub fn status(&self) -> &'static str {
        match self {
            TrialOutcome::Done { .. } => "done",
            TrialOutcome::Pruned { .. } => "pruned",
            TrialOutcome::Failed { .. } => "failed",
            TrialOutcome::Running => "running",
            TrialOutcome::Pending => "pending",
        }
    }

    /// The trial's value of the selection metric, when it has one.
    pub fn value(&self) -> Option<f64> {
        match self {
            TrialOutcome::Done { value, .. } | TrialOutcome::Pruned { value, .. } => Some(*value),
            _ => None,
        }
    }

    /// Epochs the trial trained, when settled with a value.
    pub fn epochs(&self) -> Option<usize> {
        match self {
            TrialOutcome::Done { epochs, .. } | TrialOutcome::Pruned { epochs, .. } => {
                Some(*epochs)
            }
            _ => None,
        }
    }
}

/// One trial of a search.
#[derive(Clone, Debug)]
pub struct Trial {
    /// From 0.
    pub number: usize,
    /// One value per dimension, as the run gets it.
    pub values: Vec<Setting>,
    /// The sampler's values (what later proposals observe).
    pub sampled: Vec<Value>,
    /// The trial's run, or why its values do not make one.
    pub run: Result<PlannedRun, String>,
    /// The earlier trial whose run this one is (the same settings proposed again).
    pub same_as: Option<usize>,
    /// The rungs and what the trial is compared with at each (empty without a pruner).
    pub pruning: Option<PruningPlan>,
    pub outcome: TrialOutcome,
    /// Per rung of the pruner: the trial's value there, when its outcome reached the rung (what
    /// later trials are compared with).
    pub rung_values: Vec<Option<f64>>,
    /// Whether its run's `run.json` lists this trial already.
    pub listed: bool,
}

impl Trial {
    pub fn hash(&self) -> Option<&RunHash> {
        self.run.as_ref().ok().map(|run| &run.hash)
    }
}

/// Every trial of a search proposed so far, in order, and the next ones it cannot propose yet.
#[derive(Clone, Debug)]
pub struct SearchState {
    pub trials: Vec<Trial>,
    /// The trial number that waits for earlier trials to settle (none when all are proposed).
    pub blocked_at: Option<usize>,
}

impl SearchState {
    /// Every trial proposed and settled.
    pub fn is_complete(&self, search: &PlannedSearch) -> bool {
        self.trials.len() == search.trials
            && self.trials.iter().all(|trial| trial.outcome.is_settled())
    }
}

/// What the store holds about a run, as the search reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct RunView {
    pub status: RunStatus,
    /// `metrics.csv` (for done and pruned runs).
    pub history: Vec<EpochRow>,
    /// The epochs at which a pruner stopped it (status `pruned`).
    pub pruned_epochs: Option<usize>,
    pub error: Option<String>,
    /// The search trials its `run.json` lists.
    pub search_trials: Vec<SearchTrial>,
}

impl RunView {
    /// Reads a run's view from the store.
    pub fn read(store: &RunStore, hash: &RunHash) -> anyhow::Result<RunView> {
        let (record, status) = store.record_and_status(hash)?;
        let history = match status {
            RunStatus::Done | RunStatus::Pruned => {
                run_files::read_metrics(&store.run_directory(hash))?
            }
            _ => Vec::new(),
        };
        Ok(RunView {
            status,
            history,
            pruned_epochs: record
                .as_ref()
                .and_then(|record| record.pruned.as_ref())
                .map(|pruned| pruned.epochs),
            search_trials: record
                .as_ref()
                .map(|record| record.search_trials.clone())
                .unwrap_or_default(),
            error: record.and_then(|record| record.error),
        })
    }
}

/// The sampler's picture of the space.
pub fn parameters(search: &PlannedSearch) -> Vec<Parameter> {
    search
        .dimensions
        .iter()
        .map(|dimension| match &dimension.distribution {
            Distribution::Uniform { low, high, step } => Parameter::Float {
                low: *low,
                high: *high,
                log: false,
                step: step.map(|step| step.step),
            },
            Distribution::LogUniform { low, high } => Parameter::Float {
                low: *low,
                high: *high,
                log: true,
                step: None,
            },
            Distribution::Int {
                low,
                high,
                step,
                log,
            } => Parameter::Integer {
                low: *low,
                high: *high,
                log: *log,
                step: *step,
            },
            Distribution::Choice(values) => Parameter::Categorical {
                count: values.len(),
            },
        })
        .collect()
}

/// The run settings of sampled values: stepped floats on their grid with the step's decimals,
/// choices as written.
pub fn settings_of(search: &PlannedSearch, sampled: &[Value]) -> Vec<Setting> {
    search
        .dimensions
        .iter()
        .zip(sampled)
        .map(
            |(dimension, value)| match (&dimension.distribution, value) {
                (
                    Distribution::Uniform {
                        low,
                        high,
                        step: Some(step),
                    },
                    Value::Float(value),
                ) => Setting::Float(on_step_grid(*value, *low, *high, *step)),
                (_, Value::Float(value)) => Setting::Float(*value),
                (_, Value::Integer(value)) => Setting::Integer(*value),
                (Distribution::Choice(values), Value::Choice(index)) => values[*index].clone(),
                (distribution, value) => {
                    unreachable!("the sampler gave {value:?} for {distribution:?}")
                }
            },
        )
        .collect()
}

/// The generator of trial `number`'s proposal: the search seed's own stream for it, so a
/// proposal never depends on how many draws other trials made.
pub fn trial_random(seed: u64, number: usize) -> SeededRandom {
    SeededRandom::new(seed, stream::SEARCH_TRIAL.wrapping_add(number as u64))
}

/// How a settled trial ranks for the sampler (lower is better).
fn score(outcome: &TrialOutcome, higher_is_better: bool) -> Score {
    let oriented = |value: f64| if higher_is_better { -value } else { value };
    match outcome {
        TrialOutcome::Done { value, .. } => Score::Completed {
            value: oriented(*value),
        },
        TrialOutcome::Pruned { epochs, value, .. } => Score::Pruned {
            epochs: *epochs,
            value: oriented(*value),
        },
        _ => Score::Failed,
    }
}

/// The values of trial `number`: random, or TPE from the settled observations it may see.
pub fn propose(search: &PlannedSearch, number: usize, observed: &[Trial]) -> Vec<Value> {
    let parameters = parameters(search);
    let mut random = trial_random(search.seed, number);
    match search.method {
        SearchMethod::Random => sampler::random_proposal(&parameters, &mut random),
        SearchMethod::Tpe => {
            let higher_is_better = search.selection_metric.higher_is_better();
            let observations: Vec<Observation> = observed
                .iter()
                .map(|trial| Observation {
                    values: trial.sampled.clone(),
                    score: score(&trial.outcome, higher_is_better),
                })
                .collect();
            let settings = TpeSettings {
                startup_trials: search.startup_trials,
                ..TpeSettings::default()
            };
            sampler::tpe_proposal(&parameters, &observations, &settings, &mut random)
        }
    }
}

/// The rungs of a trial and, at each, the values the trials it may see reached there.
fn pruning_plan(search: &PlannedSearch, observed: &[Trial]) -> Option<PruningPlan> {
    let pruner = search.pruner.as_ref()?;
    let rungs = pruner
        .rungs
        .iter()
        .enumerate()
        .map(|(index, &epochs)| RungComparison {
            epochs,
            earlier: observed
                .iter()
                .filter_map(|trial| trial.rung_values.get(index).copied().flatten())
                .collect(),
        })
        .collect();
    Some(PruningPlan {
        rungs,
        reduction_factor: pruner.reduction_factor,
    })
}

/// A settled trial's value at each rung of the pruner: its best value up to the rung when its
/// outcome went that far (done, or pruned at or above it) and its run's history reached the rung.
fn rung_values(search: &PlannedSearch, outcome: &TrialOutcome, view: &RunView) -> Vec<Option<f64>> {
    let Some(pruner) = &search.pruner else {
        return Vec::new();
    };
    pruner
        .rungs
        .iter()
        .map(|&epochs| {
            let reached = match outcome {
                TrialOutcome::Done { .. } => true,
                TrialOutcome::Pruned {
                    epochs: pruned_at, ..
                } => *pruned_at >= epochs,
                _ => false,
            };
            (reached && rung_reached(view, epochs))
                .then(|| policy::value_at(&view.history, epochs, search.selection_metric))
                .flatten()
        })
        .collect()
}

/// Whether a run's history went past the rung at `epochs`: later rows exist, or a pruner
/// stopped it exactly there (the training loop decides at the start of the next epoch).
fn rung_reached(view: &RunView, epochs: usize) -> bool {
    view.history.iter().any(|row| row.epoch > epochs) || view.pruned_epochs == Some(epochs)
}

/// A trial's outcome from its run's record and history: the rung decisions replayed with the
/// trial's own comparisons (so a run trained before, by a grid or another search, counts exactly
/// as if this search had trained it).
pub fn outcome_of(
    view: &RunView,
    pruning: Option<&PruningPlan>,
    metric: SelectionMetric,
) -> TrialOutcome {
    match view.status {
        RunStatus::Failed => {
            return TrialOutcome::Failed {
                reason: view.error.clone().unwrap_or_else(|| "failed".into()),
            };
        }
        RunStatus::Running => return TrialOutcome::Running,
        RunStatus::New | RunStatus::Interrupted => return TrialOutcome::Pending,
        RunStatus::Done | RunStatus::Pruned => {}
    }
    if let Some(pruning) = pruning {
        for (index, rung) in pruning.rungs.iter().enumerate() {
            if !rung_reached(view, rung.epochs) {
                if view.status == RunStatus::Done {
                    // It ended before this rung (early stopping): done.
                    break;
                }
                return TrialOutcome::Pending;
            }
            let value = policy::value_at(&view.history, rung.epochs, metric).unwrap_or(f64::NAN);
            let decision = policy::rung_decision(
                value,
                &rung.earlier,
                pruning.reduction_factor,
                metric.higher_is_better(),
            );
            if !decision.continues {
                return TrialOutcome::Pruned {
                    rung: index + 1,
                    epochs: rung.epochs,
                    value,
                    threshold: decision.threshold,
                };
            }
        }
    }
    if view.status != RunStatus::Done {
        // Pruned elsewhere at a rung this search passes it: to be continued.
        return TrialOutcome::Pending;
    }
    TrialOutcome::Done {
        value: policy::value_at(&view.history, usize::MAX, metric).unwrap_or(f64::NAN),
        epochs: view.history.last().map_or(0, |row| row.epoch),
    }
}

/// Every trial of `search` that can be proposed now, with its outcome, from the runs in the store
/// (`read_view` reads one run's view; each run is read once).
pub fn search_state(
    search: &PlannedSearch,
    file: &ExperimentFile,
    resolver: &mut TrialResolver,
    read_view: &mut dyn FnMut(&RunHash) -> anyhow::Result<RunView>,
) -> anyhow::Result<SearchState> {
    let mut views: HashMap<RunHash, RunView> = HashMap::new();
    let mut trials: Vec<Trial> = Vec::new();
    let mut blocked_at = None;
    for number in 0..search.trials {
        // Trial k sees trials 0..=k-parallel, and waits until all of them are settled.
        let visible = (number + 1).saturating_sub(search.parallel);
        if trials[..visible]
            .iter()
            .any(|trial| !trial.outcome.is_settled())
        {
            blocked_at = Some(number);
            break;
        }
        let observed = &trials[..visible];
        let sampled = propose(search, number, observed);
        let values = settings_of(search, &sampled);
        let run = resolver
            .resolve(file, search.experiment, &search.dimensions, &values)
            .map(|mut run| {
                run.swept = search
                    .dimensions
                    .iter()
                    .zip(&values)
                    .map(|(dimension, value)| (dimension.key, value.clone()))
                    .collect();
                run
            })
            .map_err(|error| error.to_string());
        let same_as = run.as_ref().ok().and_then(|run| {
            trials
                .iter()
                .find(|earlier| earlier.hash() == Some(&run.hash))
                .map(|earlier| earlier.number)
        });
        let pruning = pruning_plan(search, observed);
        let view = match &run {
            Ok(run) => {
                if !views.contains_key(&run.hash) {
                    views.insert(run.hash.clone(), read_view(&run.hash)?);
                }
                views.get(&run.hash)
            }
            Err(_) => None,
        };
        let (outcome, values_at_rungs) = match (&run, same_as, view) {
            (Err(reason), _, _) => (
                TrialOutcome::Failed {
                    reason: reason.clone(),
                },
                Vec::new(),
            ),
            // The same run as an earlier trial: its outcome, once it has one.
            (Ok(_), Some(earlier), _) => match &trials[earlier].outcome {
                settled if settled.is_settled() => {
                    (settled.clone(), trials[earlier].rung_values.clone())
                }
                _ => (TrialOutcome::Running, Vec::new()),
            },
            (Ok(_), None, view) => {
                let view = view.expect("every run's view is read above");
                let outcome = outcome_of(view, pruning.as_ref(), search.selection_metric);
                let at_rungs = rung_values(search, &outcome, view);
                (outcome, at_rungs)
            }
        };
        let listed = view.is_some_and(|view| {
            view.search_trials
                .iter()
                .any(|entry| entry.trial == number && entry.search == search.hash.as_str())
        });
        trials.push(Trial {
            number,
            values,
            sampled,
            run,
            same_as,
            pruning,
            outcome,
            rung_values: values_at_rungs,
            listed,
        });
    }
    Ok(SearchState { trials, blocked_at })
}

/// [`search_state`] read from a store.
pub fn state_in_store(
    search: &PlannedSearch,
    file: &ExperimentFile,
    store: &RunStore,
    resolver: &mut TrialResolver,
) -> anyhow::Result<SearchState> {
    search_state(search, file, resolver, &mut |hash| {
        RunView::read(store, hash)
    })
}

/// `<store>/searches/`: one record per search.
pub const SEARCHES_FOLDER: &str = "searches";

/// Where a search's record lives.
pub fn record_path(store: &RunStore, search: &PlannedSearch) -> PathBuf {
    store
        .root()
        .join(SEARCHES_FOLDER)
        .join(format!("{}.json", search.hash.short()))
}

/// One trial in the search's record.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct TrialRecord {
    pub trial: usize,
    /// The run's hash (absent when the values make no run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// The searched keys' values, by full key name.
    pub values: serde_json::Map<String, serde_json::Value>,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rung: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_as: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl SearchRecord {
    /// How many trials are settled (done, pruned or failed).
    pub fn settled(&self) -> usize {
        self.trials
            .iter()
            .filter(|trial| matches!(trial.status.as_str(), "done" | "pruned" | "failed"))
            .count()
    }
}

/// The search's record (`searches/<hash>.json`): its identity, its space and every trial so far.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct SearchRecord {
    pub search: String,
    pub experiment: String,
    pub experiment_file: String,
    pub method: String,
    pub trials_planned: usize,
    /// The runs' `train.epochs`: a trial's most.
    pub epochs: usize,
    pub selection_metric: String,
    pub higher_is_better: bool,
    /// The identity (canonical JSON) parsed: method, seed, parallel, space, pruner, base run.
    pub identity: serde_json::Value,
    /// The searched keys, in order, and whether plots show them on a log axis.
    pub keys: Vec<(String, bool)>,
    pub trials: Vec<TrialRecord>,
}

/// The record of a search's state.
pub fn search_record(
    search: &PlannedSearch,
    file: &ExperimentFile,
    state: &SearchState,
) -> SearchRecord {
    let trials = state
        .trials
        .iter()
        .map(|trial| {
            let mut values = serde_json::Map::new();
            for (dimension, value) in search.dimensions.iter().zip(&trial.values) {
                values.insert(
                    dimension.key.full_name(),
                    serde_json::to_value(value).expect("a setting serializes"),
                );
            }
            TrialRecord {
                trial: trial.number,
                run: trial.hash().map(|hash| hash.as_str().to_string()),
                values,
                status: trial.outcome.status().to_string(),
                value: trial.outcome.value(),
                epochs: trial.outcome.epochs(),
                rung: match trial.outcome {
                    TrialOutcome::Pruned { rung, .. } => Some(rung),
                    _ => None,
                },
                same_as: trial.same_as,
                error: match &trial.outcome {
                    TrialOutcome::Failed { reason } => Some(reason.clone()),
                    _ => None,
                },
            }
        })
        .collect();
    SearchRecord {
        search: search.hash.as_str().to_string(),
        experiment: file.name.clone(),
        experiment_file: file.path().display().to_string(),
        method: search.method.as_str().to_string(),
        trials_planned: search.trials,
        epochs: search.epochs,
        selection_metric: search.selection_metric.to_string(),
        higher_is_better: search.selection_metric.higher_is_better(),
        identity: serde_json::from_slice(&search.identity).expect("the identity is JSON"),
        keys: search
            .dimensions
            .iter()
            .map(|dimension| (dimension.key.full_name(), dimension.distribution.is_log()))
            .collect(),
        trials,
    }
}

/// Writes the search's record atomically.
pub fn write_record(record: &SearchRecord, path: &Path) -> anyhow::Result<()> {
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder)?;
    }
    let mut bytes = serde_json::to_vec_pretty(record)?;
    bytes.push(b'\n');
    atomic_file::write(path, &bytes)
}

/// Every search record in a store, by file name order.
pub fn read_records(store: &RunStore) -> anyhow::Result<Vec<SearchRecord>> {
    let folder = store.root().join(SEARCHES_FOLDER);
    let entries = match std::fs::read_dir(&folder) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error.into()),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let bytes = std::fs::read(path)?;
            serde_json::from_slice(&bytes).map_err(|error| {
                anyhow::anyhow!("{} is not a valid search record: {error}", path.display())
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(epoch: usize, macro_f1: f64) -> EpochRow {
        EpochRow {
            epoch,
            train_loss: 0.5,
            validation_loss: 1.0 - macro_f1,
            validation_accuracy: macro_f1,
            validation_macro_f1: macro_f1,
            validation_micro_f1: None,
            validation_samples_f1: None,
            validation_hamming_loss: None,
            learning_rate: 1e-4,
            steps: epoch as u64 * 10,
            epoch_seconds: 1.0,
            train_samples_per_second: 1.0,
        }
    }

    fn view(status: RunStatus, values: &[f64], pruned_epochs: Option<usize>) -> RunView {
        RunView {
            status,
            history: values
                .iter()
                .enumerate()
                .map(|(index, &value)| row(index + 1, value))
                .collect(),
            pruned_epochs,
            error: None,
            search_trials: Vec::new(),
        }
    }

    /// Rungs after epochs 1 and 2 of 4, reduction factor 2.
    fn plan(rung_one: &[f64], rung_two: &[f64]) -> PruningPlan {
        PruningPlan {
            rungs: vec![
                RungComparison {
                    epochs: 1,
                    earlier: rung_one.to_vec(),
                },
                RungComparison {
                    epochs: 2,
                    earlier: rung_two.to_vec(),
                },
            ],
            reduction_factor: 2,
        }
    }

    #[test]
    fn a_done_run_is_replayed_through_the_rungs() {
        let metric = SelectionMetric::MacroF1;
        let done = view(RunStatus::Done, &[0.5, 0.6, 0.7, 0.65], None);
        assert_eq!(
            outcome_of(&done, None, metric),
            TrialOutcome::Done {
                value: 0.7,
                epochs: 4
            }
        );
        // Top half at rung 1 (0.5 against 0.4 and 0.3), but not at rung 2 (0.6 against 0.8 and 0.9).
        assert_eq!(
            outcome_of(&done, Some(&plan(&[0.4, 0.3], &[0.8, 0.9])), metric),
            TrialOutcome::Pruned {
                rung: 2,
                epochs: 2,
                value: 0.6,
                threshold: 0.8
            }
        );
        assert_eq!(
            outcome_of(&done, Some(&plan(&[0.4], &[0.55])), metric),
            TrialOutcome::Done {
                value: 0.7,
                epochs: 4
            }
        );
    }

    #[test]
    fn a_pruned_run_is_pruned_where_its_rung_says_and_pending_where_it_stopped_short() {
        let metric = SelectionMetric::MacroF1;
        let pruned_at_one = view(RunStatus::Pruned, &[0.3], Some(1));
        assert_eq!(
            outcome_of(&pruned_at_one, Some(&plan(&[0.4, 0.5], &[])), metric),
            TrialOutcome::Pruned {
                rung: 1,
                epochs: 1,
                value: 0.3,
                threshold: 0.4
            }
        );
        // Another search pruned it at epoch 1, where this one lets it go on: to be continued.
        assert_eq!(
            outcome_of(&pruned_at_one, Some(&plan(&[0.2], &[])), metric),
            TrialOutcome::Pending
        );
        // Stopped early by patience before rung 2: done.
        let early = view(RunStatus::Done, &[0.5], None);
        assert_eq!(
            outcome_of(&early, Some(&plan(&[], &[0.9])), metric),
            TrialOutcome::Done {
                value: 0.5,
                epochs: 1
            }
        );
        assert_eq!(
            outcome_of(&view(RunStatus::Interrupted, &[], None), None, metric),
            TrialOutcome::Pending
        );
        assert!(matches!(
            outcome_of(&view(RunStatus::Failed, &[], None), None, metric),
            TrialOutcome::Failed { .. }
        ));
    }

    #[test]
    fn loss_is_lower_is_better_at_the_rungs() {
        let metric = SelectionMetric::Loss;
        // Validation loss 1 - f1: 0.5 at epoch 1 against earlier 0.4 and 0.45: pruned.
        let done = view(RunStatus::Done, &[0.5, 0.9, 0.9, 0.9], None);
        assert!(matches!(
            outcome_of(&done, Some(&plan(&[0.4, 0.45], &[])), metric),
            TrialOutcome::Pruned { rung: 1, .. }
        ));
        assert!(matches!(
            outcome_of(&done, Some(&plan(&[0.6, 0.55], &[])), metric),
            TrialOutcome::Done { .. }
        ));
    }
}
