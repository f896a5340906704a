//! The plan stage: from experiment files to the ordered list of runs, each with its resolved
//! settings, its spec and its hash.
//!
//! Owns: [`plan`] here (defaults filled in, some from the model's `config.json`; grid points
//! expanded; cross-key rules checked; data and model files found and fingerprinted; points that
//! resolve to the same spec merged into one run), `search` (a file's search planned: its corners
//! resolved, its rungs, its identity; trial values resolved into runs), `spec` (the resolved settings of a run, the
//! canonical JSON of its spec and the run hash), `fingerprint` (content hashes of files, cached)
//! and `model_directory` (which files of a Hugging Face directory define the model, and the few
//! `config.json` values planning needs).
//!
//! Everything is checked before anything is written: a plan either comes back whole, or as an
//! error listing every problem of every file.
//!
//! Uses: `support`, `experiment`. Never uses: the data, the tokenizer, the model, the run store
//! or anything above them: a plan is made without reading a data row or loading a weight.

pub mod fingerprint;
pub mod hub_cache;
pub mod model_directory;
pub mod search;
pub mod spec;

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::experiment::diagnostics::{InputError, InputErrors, Located, Problem};
use crate::experiment::grid;
use crate::experiment::schema::{self, Key, Section};
use crate::experiment::{ExperimentFile, LabelEntry, Setting};
use crate::plan::fingerprint::Fingerprinter;
use crate::plan::model_directory::{ModelDirectory, ModelDirectoryProblem};
use crate::plan::spec::{
    ClassWeights, ConflictingLabels, DataFileSpec, DataFormat, DataOptions, DataPaths, DataSpec,
    DeviceRequest, Encoding, Freeze, LabelFormat, LearningRateSchedule, ModelOptions, ModelSpec,
    Precision, RunHash, RunSettings, RunSpec, SPEC_VERSION, SelectionMetric, TrainSettings,
    UnknownLabels, WeightDecayScope,
};

/// Limits on planning.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    /// The most runs one experiment file's grid, and the whole plan, may hold.
    pub max_runs: usize,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions { max_runs: 1000 }
    }
}

/// One run of the plan.
#[derive(Clone, Debug)]
pub struct PlannedRun {
    /// Index into [`Plan::experiments`].
    pub experiment: usize,
    /// This run's `[grid]` values, in grid order.
    pub swept: Vec<(&'static Key, Setting)>,
    /// Every setting of the run as written or defaulted (paths as written), in schema order.
    pub values: Vec<(&'static Key, Setting)>,
    pub settings: RunSettings,
    pub spec: RunSpec,
    pub hash: RunHash,
}

impl PlannedRun {
    /// The run's value for a key (`None` for an optional key left unset).
    pub fn value(&self, key: &Key) -> Option<&Setting> {
        self.values
            .iter()
            .find(|(candidate, _)| std::ptr::eq(*candidate, key))
            .map(|(_, value)| value)
    }
}

/// The runs of one or more experiment files, in order: files in the order given, each file's grid
/// points in grid order (see `grid`), a point identical to an earlier one planned once.
#[derive(Debug)]
pub struct Plan {
    pub experiments: Vec<ExperimentFile>,
    pub runs: Vec<PlannedRun>,
    /// Grid points that resolved to the spec of an earlier run and were merged into it.
    pub merged_points: usize,
    /// The searches of files with `[search]`, in file order; their trials are proposed while
    /// the sweep runs (`search`), not planned here.
    pub searches: Vec<search::PlannedSearch>,
}

impl Plan {
    /// The keys worth a column: the keys swept in any grid, then any other key whose value differs
    /// between runs, in schema order.
    pub fn varying_keys(&self) -> Vec<&'static Key> {
        let mut keys: Vec<&'static Key> = Vec::new();
        for experiment in &self.experiments {
            for axis in &experiment.grid {
                if !keys.iter().any(|key| std::ptr::eq(*key, axis.key)) {
                    keys.push(axis.key);
                }
            }
        }
        for key in schema::KEYS
            .iter()
            .filter(|key| key.section != Section::Top)
        {
            if keys.iter().any(|known| std::ptr::eq(*known, key)) {
                continue;
            }
            let mut values = self.runs.iter().map(|run| run.value(key));
            if let Some(first) = values.next()
                && values.any(|value| value != first)
            {
                keys.push(key);
            }
        }
        keys
    }
}

/// Plans the runs of experiment files.
pub fn plan(
    paths: &[PathBuf],
    options: &PlanOptions,
    fingerprinter: &mut Fingerprinter,
) -> anyhow::Result<Plan> {
    let mut experiments = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        match ExperimentFile::load(path) {
            Ok(experiment) => experiments.push(experiment),
            Err(error) => match error.downcast::<InputError>() {
                Ok(input_error) => errors.push(input_error),
                Err(other) => return Err(other),
            },
        }
    }
    let mut planner = Planner {
        fingerprinter,
        models: HashMap::new(),
    };
    let mut runs = Vec::new();
    let mut seen = HashSet::new();
    let mut merged_points = 0;
    let mut searches = Vec::new();
    for (index, experiment) in experiments.iter().enumerate() {
        if experiment.search.is_some() {
            match planner.search(experiment, index, options.max_runs) {
                Ok(search) => searches.push(search),
                Err(error) => errors.push(error),
            }
            continue;
        }
        match planner.experiment_runs(experiment, index, options) {
            Ok(experiment_runs) => {
                for run in experiment_runs {
                    if seen.insert(run.hash.clone()) {
                        runs.push(run);
                    } else {
                        merged_points += 1;
                    }
                }
            }
            Err(error) => errors.push(error),
        }
    }
    if !errors.is_empty() {
        return Err(InputErrors(errors).into());
    }
    if runs.len() > options.max_runs {
        anyhow::bail!(
            "the plan has {} runs, more than --max-runs {}; plan fewer experiment files at once, or raise the limit with --max-runs {}",
            runs.len(),
            options.max_runs,
            runs.len()
        );
    }
    Ok(Plan {
        experiments,
        runs,
        merged_points,
        searches,
    })
}

pub(crate) struct Planner<'a> {
    pub(crate) fingerprinter: &'a mut Fingerprinter,
    pub(crate) models: HashMap<PathBuf, Result<ModelDirectory, ModelDirectoryProblem>>,
}

/// The settings of one grid point: the point's values over the file's.
pub(crate) struct Point<'a> {
    pub(crate) file: &'a ExperimentFile,
    pub(crate) overrides: Vec<(&'static Key, &'a Located<Setting>)>,
}

impl Point<'_> {
    fn located(&self, key: &Key) -> Option<&Located<Setting>> {
        self.overrides
            .iter()
            .find(|(candidate, _)| std::ptr::eq(*candidate, key))
            .map(|(_, value)| *value)
            .or_else(|| self.file.explicit(key))
    }

    fn span(&self, full_name: &str) -> Option<Range<usize>> {
        self.located(key(full_name))
            .and_then(|value| value.span.clone())
    }

    /// Where a key is written, with no note; for a key left at its default, the span of
    /// `instead` (the key that makes the default wrong) and the note " (the default)".
    fn span_or_default(&self, full_name: &str, instead: &str) -> (Option<Range<usize>>, String) {
        match self.span(full_name) {
            Some(span) => (Some(span), String::new()),
            None => (self.span(instead), " (the default)".to_string()),
        }
    }

    fn is_set(&self, full_name: &str) -> bool {
        self.located(key(full_name)).is_some()
    }
}

pub(crate) fn key(full_name: &str) -> &'static Key {
    schema::find_full(full_name).unwrap_or_else(|| panic!("`{full_name}` is not in the schema"))
}

/// Resolved values of one point, looked up by full key name.
struct Values(Vec<(&'static Key, Setting)>);

impl Values {
    fn get(&self, full_name: &str) -> Option<&Setting> {
        let wanted = key(full_name);
        self.0
            .iter()
            .find(|(key, _)| std::ptr::eq(*key, wanted))
            .map(|(_, value)| value)
    }

    fn required(&self, full_name: &str) -> &Setting {
        self.get(full_name)
            .unwrap_or_else(|| panic!("`{full_name}` has a default or is required"))
    }

    fn text(&self, full_name: &str) -> &str {
        self.required(full_name).as_text()
    }

    fn float(&self, full_name: &str) -> f64 {
        self.required(full_name).as_float()
    }

    fn bool(&self, full_name: &str) -> bool {
        self.required(full_name).as_bool()
    }

    fn count(&self, full_name: &str) -> usize {
        usize::try_from(self.required(full_name).as_integer())
            .expect("the schema keeps counts non-negative")
    }

    fn seed(&self, full_name: &str) -> u64 {
        u64::try_from(self.required(full_name).as_integer())
            .expect("the schema keeps seeds non-negative")
    }

    fn choice<T>(&self, full_name: &str, parse: fn(&str) -> Option<T>) -> T {
        parse(self.text(full_name)).expect("the schema checked the choice")
    }
}

fn push_unique(problems: &mut Vec<Problem>, problem: Problem) {
    if !problems.contains(&problem) {
        problems.push(problem);
    }
}

impl Planner<'_> {
    fn experiment_runs(
        &mut self,
        file: &ExperimentFile,
        experiment: usize,
        options: &PlanOptions,
    ) -> Result<Vec<PlannedRun>, InputError> {
        let lengths: Vec<usize> = file.grid.iter().map(|axis| axis.values.len()).collect();
        let size = grid::size(&lengths);
        if size.is_none_or(|size| size > options.max_runs) {
            let shown = size.map_or_else(|| "more than 2^64".to_string(), |size| size.to_string());
            let factors: Vec<String> = lengths.iter().map(|length| length.to_string()).collect();
            return Err(file.error(vec![
                Problem::new(
                    format!(
                        "the grid has {shown} points ({}), more than --max-runs {}",
                        factors.join(" x "),
                        options.max_runs
                    ),
                    file.grid_span.clone(),
                )
                .label("this grid")
                .help(format!(
                    "sweep fewer values, or raise the limit with --max-runs {}",
                    size.map_or(usize::MAX, |size| size)
                )),
            ]));
        }
        let mut problems = Vec::new();
        let mut runs = Vec::new();
        for indices in grid::points(&lengths) {
            let point = Point {
                file,
                overrides: file
                    .grid
                    .iter()
                    .zip(&indices)
                    .map(|(axis, &index)| (axis.key, &axis.values[index]))
                    .collect(),
            };
            if let Some(run) = self.resolve(&point, experiment, &mut problems) {
                runs.push(run);
            }
        }
        if problems.is_empty() {
            Ok(runs)
        } else {
            Err(file.error(problems))
        }
    }

    fn model(&mut self, path: &Path) -> &Result<ModelDirectory, ModelDirectoryProblem> {
        self.models
            .entry(path.to_path_buf())
            .or_insert_with(|| ModelDirectory::inspect(path))
    }

    /// Resolves one grid point into a run, or records why it cannot be planned.
    pub(crate) fn resolve(
        &mut self,
        point: &Point,
        experiment: usize,
        problems: &mut Vec<Problem>,
    ) -> Option<PlannedRun> {
        let file = point.file;
        let base = file.base_dir();
        let problems_before = problems.len();

        // The model: a directory (`model.path`), or a snapshot in the Hugging Face cache
        // (`model.hub`, `model.revision`); the parser made sure exactly one is set.
        let model_key = if point.is_set("model.hub") {
            "model.hub"
        } else {
            "model.path"
        };
        let source = match point.located(key("model.hub")) {
            Some(hub) => {
                let wanted = hub_cache::HubModel {
                    id: hub.value.as_text().to_string(),
                    revision: point
                        .located(key("model.revision"))
                        .map_or(hub_cache::DEFAULT_REVISION, |revision| {
                            revision.value.as_text()
                        })
                        .to_string(),
                };
                hub_cache::resolve_from_environment(&wanted)
                    .map(|resolved| (resolved.directory.clone(), Some(resolved)))
                    .map_err(|problem| {
                        Problem::new(problem.message, point.span("model.hub"))
                            .label("model in the Hugging Face cache")
                            .help(problem.help)
                    })
            }
            None => Ok((
                base.join(
                    point
                        .located(key("model.path"))
                        .expect("the parser requires `path` or `hub`")
                        .value
                        .as_text(),
                ),
                None,
            )),
        };
        let source = match source {
            Ok(source) => Some(source),
            Err(problem) => {
                push_unique(problems, problem);
                None
            }
        };
        let model = match &source {
            None => None,
            Some((path, _)) => match self.model(path) {
                Ok(model) => Some(model.clone()),
                Err(problem) => {
                    push_unique(
                        problems,
                        Problem::new(problem.message.clone(), point.span(model_key))
                            .label("model directory")
                            .help(problem.help.clone()),
                    );
                    None
                }
            },
        };

        let mut values = Vec::new();
        for key in schema::KEYS
            .iter()
            .filter(|key| key.section != Section::Top)
        {
            let value = match (point.located(key), key.default) {
                (Some(located), _) => Some(located.value.clone()),
                (None, schema::Default::Bool(value)) => Some(Setting::Bool(value)),
                (None, schema::Default::Integer(value)) => Some(Setting::Integer(value)),
                (None, schema::Default::Float(value)) => Some(Setting::Float(value)),
                (None, schema::Default::Text(value)) => Some(Setting::Text(value.to_string())),
                (None, schema::Default::FromModel(_)) => {
                    let config = &model.as_ref()?.config;
                    Some(Setting::Float(match key.name {
                        "classifier_dropout" => config.classifier_dropout,
                        "hidden_dropout" => config.hidden_dropout,
                        "attention_dropout" => config.attention_dropout,
                        other => unreachable!("no model default for {other}"),
                    }))
                }
                (None, schema::Default::Absent | schema::Default::Required) => None,
            };
            if let Some(value) = value {
                values.push((key, value));
            }
        }
        let values = Values(values);
        let model = model?;
        let (model_path, model_hub) = source.expect("a model directory was read from its source");

        // Cross-key rules.
        let max_positions = model.config.max_length;
        let max_length = values.count("train.max_length");
        if max_length as u64 > max_positions {
            let (span, written) = point.span_or_default("train.max_length", model_key);
            let message = if max_positions == model.config.max_position_embeddings {
                format!(
                    "`train.max_length` is {max_length}{written}, above the {max_positions} positions of the model in {}",
                    model_path.display()
                )
            } else {
                format!(
                    "`train.max_length` is {max_length}{written}, above the {max_positions} tokens the model in {} takes ({} positions, counted after the padding id as {} does)",
                    model_path.display(),
                    model.config.max_position_embeddings,
                    model.config.family.name
                )
            };
            push_unique(
                problems,
                Problem::new(message, span)
                    .label(format!("at most {max_positions} for this model"))
                    .help(format!(
                        "set `max_length` to at most {max_positions} in [train]"
                    )),
            );
        }
        let validation_file = point.located(key("data.validation")).is_some();
        let test_file = point.located(key("data.test")).is_some();
        let validation_fraction = values.float("data.validation_fraction");
        let test_fraction = values.float("data.test_fraction");
        if validation_file && point.is_set("data.validation_fraction") {
            push_unique(
                problems,
                Problem::new(
                    "`data.validation_fraction` has no effect when `data.validation` names a file",
                    point.span("data.validation_fraction"),
                )
                .label("remove this")
                .help("keep either the validation file or the fraction"),
            );
        }
        if test_file && point.is_set("data.test_fraction") && test_fraction > 0.0 {
            push_unique(
                problems,
                Problem::new(
                    "`data.test_fraction` has no effect when `data.test` names a file",
                    point.span("data.test_fraction"),
                )
                .label("remove this")
                .help("keep either the test file or the fraction"),
            );
        }
        if !validation_file && validation_fraction == 0.0 {
            push_unique(
                problems,
                Problem::new(
                    "`data.validation_fraction` must be above 0 when there is no `data.validation` file",
                    point.span("data.validation_fraction"),
                )
                .label("no validation data")
                .help("every run is validated after each epoch: hold out a share (0.1 is usual) or name a validation file"),
            );
        }
        let held_out = if validation_file {
            0.0
        } else {
            validation_fraction
        } + if test_file { 0.0 } else { test_fraction };
        if held_out >= 1.0 {
            push_unique(
                problems,
                Problem::new(
                    format!(
                        "`data.validation_fraction` + `data.test_fraction` = {} leaves no training data",
                        crate::experiment::format_float(held_out)
                    ),
                    point.span("data.test_fraction").or(point.span("data.validation_fraction")),
                )
                .label("together at least 1")
                .help("the two fractions must add up to less than 1"),
            );
        }

        let learning_rate_schedule =
            values.choice("train.learning_rate_schedule", LearningRateSchedule::parse);
        recipe_rules(point, &values, learning_rate_schedule, problems);
        let label_format = values.choice("data.label_format", LabelFormat::parse);
        task_rules(point, &values, label_format, problems);
        let freeze = Freeze::from_setting(values.required("train.freeze"))
            .expect("the schema checked `freeze`");
        let frozen = freeze.frozen_layers().unwrap_or(0);
        if let Some(layers) = model.config.num_hidden_layers
            && frozen as u64 > layers
        {
            push_unique(
                problems,
                Problem::new(
                    format!(
                        "`train.freeze` = {} layers, but the model in {} has {layers}",
                        frozen,
                        model_path.display()
                    ),
                    point.span("train.freeze"),
                )
                .label(format!("at most {layers} for this model"))
                .help(format!(
                    "freeze at most {layers} layers (all of them leaves the pooler and the head to train)"
                )),
            );
        }

        // Data files: they must exist and have a known format.
        let format_override = values.get("data.format").map(|format| {
            DataFormat::parse(format.as_text()).expect("the schema checked the format")
        });
        let mut data_files = Vec::new();
        for role in ["data.train", "data.validation", "data.test"] {
            let Some(written) = point.located(key(role)) else {
                data_files.push(None);
                continue;
            };
            let path = base.join(written.value.as_text());
            let span = written.span.clone();
            if !path.is_file() {
                let message = if path.exists() {
                    format!("data path {} is not a file", path.display())
                } else {
                    format!("data file not found: {}", path.display())
                };
                push_unique(
                    problems,
                    Problem::new(message, span)
                        .label("this path")
                        .help("data paths are resolved relative to the experiment file's folder"),
                );
                data_files.push(None);
                continue;
            }
            let extension = path
                .extension()
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default();
            let Some(format) = format_override.or_else(|| DataFormat::from_extension(&extension))
            else {
                push_unique(
                    problems,
                    Problem::new(
                        format!(
                            "cannot tell the format of {} from its extension",
                            path.display()
                        ),
                        span,
                    )
                    .label("unknown extension")
                    .help(
                        "name the file .csv, .tsv, .parquet or .jsonl, or set `format` in [data]",
                    ),
                );
                data_files.push(None);
                continue;
            };
            data_files.push(Some((path, format, span)));
        }
        if problems.len() > problems_before {
            return None;
        }

        // Fingerprints: the files' content, not their paths, identify the run.
        let mut fingerprint = |path: &Path,
                               span: Option<Range<usize>>,
                               problems: &mut Vec<Problem>| {
            match self.fingerprinter.fingerprint(path) {
                Ok(fingerprint) => Some(fingerprint),
                Err(error) => {
                    push_unique(
                        problems,
                        Problem::new(format!("{error:#}"), span).label("cannot read this"),
                    );
                    None
                }
            }
        };
        let mut data_specs = Vec::new();
        for file_entry in &data_files {
            data_specs.push(match file_entry {
                Some((path, format, span)) => Some(DataFileSpec {
                    fingerprint: fingerprint(path, span.clone(), problems)?,
                    format: *format,
                }),
                None => None,
            });
        }
        let mut model_files = std::collections::BTreeMap::new();
        for (name, path) in &model.files {
            model_files.insert(
                name.clone(),
                fingerprint(path, point.span(model_key), problems)?,
            );
        }

        let data_options = DataOptions {
            text_column: values.text("data.text_column").to_string(),
            label_column: values.text("data.label_column").to_string(),
            encoding: values.choice("data.encoding", Encoding::parse),
            drop_empty: values.bool("data.drop_empty"),
            drop_duplicates: values.bool("data.drop_duplicates"),
            conflicting_labels: values.choice("data.conflicting_labels", ConflictingLabels::parse),
            unknown_labels: values.choice("data.unknown_labels", UnknownLabels::parse),
            validation_fraction: if validation_file {
                0.0
            } else {
                validation_fraction
            },
            test_fraction: if test_file { 0.0 } else { test_fraction },
            split_seed: values.seed("data.split_seed"),
            stratify: values.bool("data.stratify"),
            filters: file
                .filters
                .iter()
                .map(|filter| filter.value.clone())
                .collect(),
            max_train_examples: values.get("data.max_train_examples").map(|value| {
                usize::try_from(value.as_integer()).expect("the schema keeps counts positive")
            }),
            text_pair_column: values
                .get("data.text_pair_column")
                .map(|value| value.as_text().to_string()),
            label_format,
            label_separator: values.text("data.label_separator").to_string(),
        };
        let model_options = ModelOptions {
            classifier_dropout: values.float("model.classifier_dropout"),
            hidden_dropout: values.float("model.hidden_dropout"),
            attention_dropout: values.float("model.attention_dropout"),
        };
        let train = TrainSettings {
            max_length,
            batch_size: values.count("train.batch_size"),
            learning_rate: values.float("train.learning_rate"),
            epochs: values.count("train.epochs"),
            weight_decay: values.float("train.weight_decay"),
            warmup_ratio: values.float("train.warmup_ratio"),
            max_grad_norm: values.float("train.max_grad_norm"),
            gradient_accumulation: values.count("train.gradient_accumulation"),
            early_stopping_patience: values.count("train.early_stopping_patience"),
            selection_metric: values.choice("train.selection_metric", SelectionMetric::parse),
            class_weights: values.choice("train.class_weights", ClassWeights::parse),
            length_bucketing: values.bool("train.length_bucketing"),
            precision: values.choice("train.precision", Precision::parse),
            seed: values.seed("train.seed"),
            learning_rate_schedule,
            cosine_cycles: values.float("train.cosine_cycles"),
            polynomial_power: values.float("train.polynomial_power"),
            polynomial_end_learning_rate: values.float("train.polynomial_end_learning_rate"),
            inverse_sqrt_timescale: values.get("train.inverse_sqrt_timescale").map(|value| {
                u64::try_from(value.as_integer()).expect("the schema keeps the timescale positive")
            }),
            warmup_steps: values.seed("train.warmup_steps"),
            adam_beta1: values.float("train.adam_beta1"),
            adam_beta2: values.float("train.adam_beta2"),
            adam_epsilon: values.float("train.adam_epsilon"),
            weight_decay_scope: values.choice("train.weight_decay_scope", WeightDecayScope::parse),
            label_smoothing: values.float("train.label_smoothing"),
            layer_learning_rate_decay: values.float("train.layer_learning_rate_decay"),
            freeze,
            eval_every_steps: values.seed("train.eval_every_steps"),
            threshold: values.float("train.threshold"),
        };
        let labels: Option<Vec<LabelEntry>> = file.labels.clone();
        let mut data_specs = data_specs.into_iter();
        let spec = RunSpec {
            bertlab_spec: SPEC_VERSION,
            data: DataSpec {
                train: data_specs.next().flatten().expect("train is required"),
                validation: data_specs.next().flatten(),
                test: data_specs.next().flatten(),
                options: data_options.clone(),
            },
            labels: labels.as_ref().map(|entries| {
                entries
                    .iter()
                    .map(|entry| (entry.raw.clone(), entry.class_id))
                    .collect()
            }),
            model: ModelSpec {
                files: model_files,
                options: model_options.clone(),
            },
            train: train.clone(),
        };
        let mut paths = data_files
            .into_iter()
            .map(|entry| entry.map(|(path, _, _)| path));
        let settings = RunSettings {
            data_paths: DataPaths {
                train: paths.next().flatten().expect("train is required"),
                validation: paths.next().flatten(),
                test: paths.next().flatten(),
            },
            data: data_options,
            labels,
            model_path,
            model_hub,
            model: model_options,
            train,
            device: values.choice("train.device", DeviceRequest::parse),
        };
        let hash = spec.hash();
        Some(PlannedRun {
            experiment,
            swept: point
                .overrides
                .iter()
                .map(|(key, located)| (*key, located.value.clone()))
                .collect(),
            values: values.0,
            settings,
            spec,
            hash,
        })
    }
}

/// The cross-key rules of the task: the multi-label settings (`label_separator`, `threshold`,
/// the multi-label selection metrics) only with `label_format = "multi"`, no label smoothing with
/// it, a separator that is not empty, a pair column that is not the text column.
fn task_rules(point: &Point, values: &Values, format: LabelFormat, problems: &mut Vec<Problem>) {
    if format == LabelFormat::Single {
        for parameter in ["data.label_separator", "train.threshold"] {
            if point.is_set(parameter) {
                push_unique(
                    problems,
                    Problem::new(
                        format!(
                            "`{parameter}` applies to multi-label data, but `data.label_format` is \"single\""
                        ),
                        point.span(parameter),
                    )
                    .label("only for \"multi\"")
                    .help("remove it, or set label_format = \"multi\" in [data] if each text has a set of labels"),
                );
            }
        }
        let metric = values.choice("train.selection_metric", SelectionMetric::parse);
        if metric.is_multi_label_only() {
            push_unique(
                problems,
                Problem::new(
                    format!(
                        "`train.selection_metric` = \"{metric}\" is a multi-label metric, but `data.label_format` is \"single\""
                    ),
                    point.span("train.selection_metric"),
                )
                .label("only for \"multi\"")
                .help("with one label per text choose \"macro_f1\", \"accuracy\" or \"loss\""),
            );
        }
    } else {
        if values.float("train.label_smoothing") > 0.0 {
            push_unique(
                problems,
                Problem::new(
                    "`train.label_smoothing` smooths a softmax's target, but `data.label_format` = \"multi\" trains a sigmoid per class",
                    point.span("train.label_smoothing"),
                )
                .label("single-label only")
                .help("remove `label_smoothing`"),
            );
        }
        if values.text("data.label_separator").is_empty() {
            push_unique(
                problems,
                Problem::new(
                    "`data.label_separator` is empty",
                    point.span("data.label_separator"),
                )
                .label("empty")
                .help("give the character(s) between labels, such as \"|\" or \";\""),
            );
        }
    }
    if let Some(pair) = values.get("data.text_pair_column")
        && pair.as_text() == values.text("data.text_column")
    {
        push_unique(
            problems,
            Problem::new(
                format!(
                    "`data.text_pair_column` is `{}`, the same column as `data.text_column`",
                    pair.as_text()
                ),
                point.span("data.text_pair_column"),
            )
            .label("the text column again")
            .help("name the column of each example's second text"),
        );
    }
}

/// The cross-key rules of the training recipe: a schedule's parameter set for another schedule,
/// `warmup_steps` beside `warmup_ratio`, a polynomial end at or above the peak.
fn recipe_rules(
    point: &Point,
    values: &Values,
    schedule: LearningRateSchedule,
    problems: &mut Vec<Problem>,
) {
    for (parameter, owner) in [
        ("train.cosine_cycles", LearningRateSchedule::Cosine),
        ("train.polynomial_power", LearningRateSchedule::Polynomial),
        (
            "train.polynomial_end_learning_rate",
            LearningRateSchedule::Polynomial,
        ),
        (
            "train.inverse_sqrt_timescale",
            LearningRateSchedule::InverseSqrt,
        ),
    ] {
        if schedule != owner && point.is_set(parameter) {
            let name = parameter.trim_start_matches("train.");
            push_unique(
                problems,
                Problem::new(
                    format!(
                        "`{parameter}` shapes the `{owner}` schedule, but `learning_rate_schedule` is \"{schedule}\""
                    ),
                    point.span(parameter),
                )
                .label(format!("only for \"{owner}\""))
                .help(format!(
                    "remove `{name}`, or set learning_rate_schedule = \"{owner}\" (runs of several schedules with their own parameters go in separate experiment files)"
                )),
            );
        }
    }
    let warmup_steps = values.seed("train.warmup_steps");
    let warmup_ratio = values.float("train.warmup_ratio");
    if warmup_steps > 0 && warmup_ratio > 0.0 {
        push_unique(
            problems,
            Problem::new(
                format!(
                    "`train.warmup_steps` = {warmup_steps} and `train.warmup_ratio` = {} both set the warmup",
                    crate::experiment::format_float(warmup_ratio)
                ),
                point.span("train.warmup_steps").or(point.span("train.warmup_ratio")),
            )
            .label("one warmup only")
            .help("keep either `warmup_steps` (a count) or `warmup_ratio` (a share of the steps)"),
        );
    }
    let learning_rate = values.float("train.learning_rate");
    let end = values.float("train.polynomial_end_learning_rate");
    if schedule == LearningRateSchedule::Polynomial && end >= learning_rate {
        let (span, written) =
            point.span_or_default("train.polynomial_end_learning_rate", "train.learning_rate");
        push_unique(
            problems,
            Problem::new(
                format!(
                    "`train.polynomial_end_learning_rate` is {}{written}, not below `train.learning_rate` {}",
                    crate::experiment::format_float(end),
                    crate::experiment::format_float(learning_rate)
                ),
                span,
            )
            .label("the polynomial decays from the peak to this")
            .help("the end rate must be below the peak learning rate"),
        );
    }
}
