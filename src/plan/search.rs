//! A search planned: its settings resolved beside the file's run settings, the rungs of its
//! pruner, its identity (a hash of everything but `trials`), and the resolution of one trial's
//! values into an ordinary run (the same spec, hash and directory as a grid point with those
//! values).
//!
//! Which values a trial takes is the `search` stage's (it needs the results of earlier trials);
//! this file turns values into runs and checks, before anything is written, that the space's
//! corners resolve.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::experiment::diagnostics::{InputError, Located, Problem};
use crate::experiment::schema::Key;
use crate::experiment::search::{Distribution, SearchDimension, SearchMethod};
use crate::experiment::{ExperimentFile, Setting};
use crate::plan::fingerprint::Fingerprinter;
use crate::plan::model_directory::{ModelDirectory, ModelDirectoryProblem};
use crate::plan::spec::{RunHash, SelectionMetric, canonical_json, hash_canonical};
use crate::plan::{PlannedRun, Planner, Point};

/// The version of a search's identity JSON.
pub const SEARCH_VERSION: u32 = 1;

/// ASHA's settings and the rungs they give for the run's epochs.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedPruner {
    pub min_epochs: usize,
    pub reduction_factor: usize,
    /// The epochs after which trials are compared: `min_epochs * reduction_factor^i`, below
    /// `train.epochs`.
    pub rungs: Vec<usize>,
}

/// The rungs of ASHA: `min_epochs * reduction_factor^i` below `epochs`.
pub fn rungs(min_epochs: usize, reduction_factor: usize, epochs: usize) -> Vec<usize> {
    let mut rungs = Vec::new();
    let mut rung = min_epochs;
    while rung < epochs {
        rungs.push(rung);
        rung = rung.saturating_mul(reduction_factor);
    }
    rungs
}

/// One search of the plan.
#[derive(Clone, Debug)]
pub struct PlannedSearch {
    /// Index into the plan's experiments.
    pub experiment: usize,
    /// sha256 of [`PlannedSearch::identity`]: everything that decides the trials but `trials`.
    pub hash: RunHash,
    pub identity: Vec<u8>,
    pub method: SearchMethod,
    pub trials: usize,
    pub seed: u64,
    pub parallel: usize,
    pub startup_trials: usize,
    pub dimensions: Vec<SearchDimension>,
    pub pruner: Option<PlannedPruner>,
    /// The objective: the runs' selection metric (the same for every trial: it cannot be
    /// searched).
    pub selection_metric: SelectionMetric,
    /// The runs' `train.epochs` (with a pruner, fixed: the last rung's ceiling).
    pub epochs: usize,
    /// The run of the space's first corner (every dimension at its low end or first choice):
    /// the base the identity hashes.
    pub base: PlannedRun,
}

impl PlannedSearch {
    /// The search's name in messages: `tweets-search` search `1a2b3c4d5e6f`.
    pub fn label(&self, file: &ExperimentFile) -> String {
        format!("{} search {}", file.name, self.hash.short())
    }
}

/// A value of a dimension at one end: the low end or first choice, or the high end or last.
pub fn corner_value(distribution: &Distribution, high: bool) -> Setting {
    match distribution {
        Distribution::Uniform { low, high: top, .. }
        | Distribution::LogUniform { low, high: top } => {
            Setting::Float(if high { *top } else { *low })
        }
        Distribution::Int {
            low,
            high: top,
            step,
            ..
        } => Setting::Integer(if high {
            low + (top - low) / step * step
        } else {
            *low
        }),
        Distribution::Choice(values) => {
            if high {
                values.last().expect("choices are not empty").clone()
            } else {
                values[0].clone()
            }
        }
    }
}

/// A trial's values as the overrides of a point, each located at its `[search.space]` entry (so
/// a rule the value breaks points there).
fn located_values(
    dimensions: &[SearchDimension],
    values: &[Setting],
) -> Vec<(&'static Key, Located<Setting>)> {
    dimensions
        .iter()
        .zip(values)
        .map(|(dimension, value)| {
            (
                dimension.key,
                Located::new(
                    value.clone(),
                    dimension.span.clone().or(dimension.key_span.clone()),
                ),
            )
        })
        .collect()
}

/// Turns trial values into runs: the planner's resolution (defaults, model values, cross-key
/// rules, fingerprints) on the file with the trial's values over it.
pub struct TrialResolver {
    fingerprinter: Fingerprinter,
    models: HashMap<PathBuf, Result<ModelDirectory, ModelDirectoryProblem>>,
}

impl TrialResolver {
    pub fn new(fingerprinter: Fingerprinter) -> TrialResolver {
        TrialResolver {
            fingerprinter,
            models: HashMap::new(),
        }
    }

    /// The run of one trial: `values` (one per dimension, in order) over the file's settings.
    /// A value a cross-key rule refuses is an error located at its `[search.space]` entry.
    pub fn resolve(
        &mut self,
        file: &ExperimentFile,
        experiment: usize,
        dimensions: &[SearchDimension],
        values: &[Setting],
    ) -> Result<PlannedRun, InputError> {
        let located = located_values(dimensions, values);
        let point = Point {
            file,
            overrides: located.iter().map(|(key, value)| (*key, value)).collect(),
        };
        let mut planner = Planner {
            fingerprinter: &mut self.fingerprinter,
            models: std::mem::take(&mut self.models),
        };
        let mut problems = Vec::new();
        let run = planner.resolve(&point, experiment, &mut problems);
        self.models = planner.models;
        match run {
            Some(run) if problems.is_empty() => Ok(run),
            _ => Err(file.error(problems)),
        }
    }

    /// Saves the fingerprint cache.
    pub fn save(&mut self) -> anyhow::Result<()> {
        self.fingerprinter.save()
    }
}

impl Planner<'_> {
    /// Plans the search of `file`: its corners resolve (each dimension at its low and high end
    /// with the others low), the pruner's rules hold, and its identity is hashed.
    pub(crate) fn search(
        &mut self,
        file: &ExperimentFile,
        experiment: usize,
        max_runs: usize,
    ) -> Result<PlannedSearch, InputError> {
        let search = file.search.as_ref().expect("a search file");
        let mut problems = Vec::new();
        if search.trials > max_runs {
            problems.push(
                Problem::new(
                    format!(
                        "`search.trials` is {}, more than --max-runs {max_runs}",
                        search.trials
                    ),
                    search.span_of("trials"),
                )
                .label("too many trials")
                .help(format!(
                    "run fewer trials, or raise the limit with --max-runs {}",
                    search.trials
                )),
            );
        }
        // With a pruner, `train.epochs` is the file's (it cannot be searched).
        let epochs_key = crate::plan::key("train.epochs");
        let epochs = match (file.explicit(epochs_key), epochs_key.default) {
            (Some(value), _) => value.value.as_integer() as usize,
            (None, crate::experiment::schema::Default::Integer(value)) => value as usize,
            _ => unreachable!("`train.epochs` has an integer default"),
        };
        let pruner = match &search.pruner {
            None => None,
            Some(pruner) => {
                if let Some(dimension) = search.dimension(epochs_key) {
                    problems.push(
                        Problem::new(
                            "`train.epochs` is searched, but a pruner fixes it: it is the last rung's ceiling",
                            dimension.key_span.clone(),
                        )
                        .label("searched with a pruner")
                        .help("set `epochs` in [train] and let the pruner stop trials early, or remove [search.pruner]"),
                    );
                }
                let rungs = rungs(pruner.min_epochs, pruner.reduction_factor, epochs);
                if rungs.is_empty() {
                    problems.push(
                        Problem::new(
                            format!(
                                "the pruner's first rung ({} epochs) is not below `train.epochs` = {epochs}: it would never stop a trial",
                                pruner.min_epochs
                            ),
                            pruner.span.clone(),
                        )
                        .label("no rung below the last epoch")
                        .help("lower `min_epochs`, raise `train.epochs` in [train], or remove [search.pruner]"),
                    );
                }
                Some(PlannedPruner {
                    min_epochs: pruner.min_epochs,
                    reduction_factor: pruner.reduction_factor,
                    rungs,
                })
            }
        };
        let dimensions = &search.space;
        let low: Vec<Setting> = dimensions
            .iter()
            .map(|dimension| corner_value(&dimension.distribution, false))
            .collect();
        let mut corners = vec![low.clone()];
        for (index, dimension) in dimensions.iter().enumerate() {
            let mut corner = low.clone();
            corner[index] = corner_value(&dimension.distribution, true);
            corners.push(corner);
        }
        let mut base = None;
        for corner in &corners {
            let located = located_values(dimensions, corner);
            let point = Point {
                file,
                overrides: located.iter().map(|(key, value)| (*key, value)).collect(),
            };
            let before = problems.len();
            let run = self.resolve(&point, experiment, &mut problems);
            if problems.len() > before {
                // Say which trial values the rule refused: they are not written anywhere.
                let values: Vec<String> = dimensions
                    .iter()
                    .zip(corner)
                    .map(|(dimension, value)| format!("{} = {value}", dimension.key.column_name()))
                    .collect();
                for problem in &mut problems[before..] {
                    problem.message.push_str(&format!(
                        " (a trial of the search could take {})",
                        values.join(", ")
                    ));
                }
                continue;
            }
            if base.is_none() {
                base = run;
            }
        }
        let Some(base) = base.filter(|_| problems.is_empty()) else {
            return Err(file.error(problems));
        };
        // A searched `epochs` (no pruner): a trial's most is the range's top.
        let epochs = match search.dimension(epochs_key) {
            Some(dimension) => corner_value(&dimension.distribution, true).as_integer() as usize,
            None => epochs,
        };
        if !problems.is_empty() {
            return Err(file.error(problems));
        }
        let mut identity = serde_json::json!({
            "bertlab_search": SEARCH_VERSION,
            "base": base.hash.as_str(),
            "method": search.method.as_str(),
            "seed": search.seed,
            "parallel": search.parallel,
            "space": dimensions
                .iter()
                .map(|dimension| {
                    let mut entry = dimension.distribution.to_json();
                    entry["key"] = serde_json::json!(dimension.key.full_name());
                    entry
                })
                .collect::<Vec<_>>(),
        });
        if search.method == SearchMethod::Tpe {
            identity["startup_trials"] = serde_json::json!(search.startup_trials);
        }
        if let Some(pruner) = &pruner {
            identity["pruner"] = serde_json::json!({
                "method": "asha",
                "min_epochs": pruner.min_epochs,
                "reduction_factor": pruner.reduction_factor,
            });
        }
        let identity = canonical_json(&identity);
        Ok(PlannedSearch {
            experiment,
            hash: hash_canonical(&identity),
            identity,
            method: search.method,
            trials: search.trials,
            seed: search.seed,
            parallel: search.parallel,
            startup_trials: search.startup_trials,
            dimensions: dimensions.clone(),
            pruner,
            selection_metric: base.spec.train.selection_metric,
            epochs,
            base,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rungs_grow_by_the_reduction_factor_below_the_epochs() {
        assert_eq!(rungs(1, 3, 3), [1]);
        assert_eq!(rungs(1, 3, 10), [1, 3, 9]);
        assert_eq!(rungs(1, 2, 9), [1, 2, 4, 8]);
        assert_eq!(rungs(2, 2, 2), Vec::<usize>::new());
        assert_eq!(rungs(3, 3, 27), [3, 9]);
    }
}
