//! The `[search]` table as written: the search's settings, its space (`[search.space]`: one
//! distribution per searched key) and its pruner (`[search.pruner]`), each value checked and
//! located. What the search then does with them is the `search` stage's; docs/search.md has the
//! rules.

use std::ops::Range;

use toml_edit::{Item, Value};

use crate::experiment::diagnostics::{Located, Problem};
use crate::experiment::file::{
    SweepTable, TableLike, check_value, flattened_entries, item_span, sweepable_key, type_name,
    with_article,
};
use crate::experiment::schema::{self, Key, Section, ValueKind};
use crate::experiment::setting::{Setting, format_float};

/// How trials are proposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SearchMethod {
    Random,
    Tpe,
}

impl SearchMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            SearchMethod::Random => "random",
            SearchMethod::Tpe => "tpe",
        }
    }
}

/// The grid of a stepped uniform distribution: values `low + k * step`, written with `decimals`
/// decimals at most (the step's and the low end's, as written), so `0.15` stays `0.15`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    pub step: f64,
    pub decimals: u32,
}

/// The distribution one searched key is drawn from.
#[derive(Clone, Debug, PartialEq)]
pub enum Distribution {
    /// A float in `[low, high]`, optionally on a step grid.
    Uniform {
        low: f64,
        high: f64,
        step: Option<Step>,
    },
    /// A float in `[low, high]`, uniform in its logarithm.
    LogUniform { low: f64, high: f64 },
    /// An integer in `[low, high]` on the grid `low + k * step`; `log`: uniform in its logarithm.
    Int {
        low: i64,
        high: i64,
        step: i64,
        log: bool,
    },
    /// One of the values, as written (numbers, strings, booleans, paths).
    Choice(Vec<Setting>),
}

impl Distribution {
    /// Whether plots show the key on a log axis.
    pub fn is_log(&self) -> bool {
        matches!(
            self,
            Distribution::LogUniform { .. } | Distribution::Int { log: true, .. }
        )
    }

    /// The distribution as canonical JSON, for the search's identity and `search.json`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Distribution::Uniform { low, high, step } => {
                let mut value = serde_json::json!({ "uniform": [low, high] });
                if let Some(step) = step {
                    value["step"] = serde_json::json!(step.step);
                }
                value
            }
            Distribution::LogUniform { low, high } => {
                serde_json::json!({ "log_uniform": [low, high] })
            }
            Distribution::Int {
                low,
                high,
                step,
                log,
            } => {
                let mut value = serde_json::json!({ "int": [low, high] });
                if *step != 1 {
                    value["step"] = serde_json::json!(step);
                }
                if *log {
                    value["log"] = serde_json::json!(true);
                }
                value
            }
            Distribution::Choice(values) => {
                serde_json::json!({ "choice": values })
            }
        }
    }
}

/// One `[search.space]` entry.
#[derive(Clone, Debug)]
pub struct SearchDimension {
    pub key: &'static Key,
    pub key_span: Option<Range<usize>>,
    pub distribution: Distribution,
    /// The span of the distribution's table.
    pub span: Option<Range<usize>>,
}

/// `[search.pruner]`.
#[derive(Clone, Debug)]
pub struct PrunerTable {
    pub min_epochs: usize,
    pub reduction_factor: usize,
    pub span: Option<Range<usize>>,
}

/// The `[search]` table as written.
#[derive(Clone, Debug)]
pub struct SearchTable {
    pub span: Option<Range<usize>>,
    pub method: SearchMethod,
    pub trials: usize,
    pub seed: u64,
    pub parallel: usize,
    pub startup_trials: usize,
    pub space: Vec<SearchDimension>,
    pub pruner: Option<PrunerTable>,
    /// Where each `[search]` key is written, for later messages.
    pub spans: Vec<(&'static str, Option<Range<usize>>)>,
}

impl SearchTable {
    /// Where a `[search]` key is written (the header when it is not).
    pub fn span_of(&self, name: &str) -> Option<Range<usize>> {
        self.spans
            .iter()
            .find(|(written, _)| *written == name)
            .and_then(|(_, span)| span.clone())
            .or(self.span.clone())
    }

    /// The dimension of a key, if the search draws it.
    pub fn dimension(&self, key: &Key) -> Option<&SearchDimension> {
        self.space
            .iter()
            .find(|dimension| std::ptr::eq(dimension.key, key))
    }
}

/// The scalar keys of `[search]` or `[search.pruner]`, checked; unknown keys reported.
struct Scalars {
    values: Vec<(&'static Key, Located<Setting>)>,
}

impl Scalars {
    fn integer(&self, name: &str) -> Option<i64> {
        self.values
            .iter()
            .find(|(key, _)| key.name == name)
            .map(|(_, value)| value.value.as_integer())
    }

    fn span(&self, name: &str) -> Option<Range<usize>> {
        self.values
            .iter()
            .find(|(key, _)| key.name == name)
            .and_then(|(_, value)| value.span.clone())
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(key, _)| key.name == name)
            .map(|(_, value)| value.value.as_text())
    }

    /// A key's value, or its default.
    fn integer_or_default(&self, section: Section, name: &str) -> i64 {
        self.integer(name).unwrap_or_else(|| {
            match schema::find_search(section, name).map(|key| key.default) {
                Some(schema::Default::Integer(value)) => value,
                _ => unreachable!("`{name}` has an integer default"),
            }
        })
    }
}

/// Checks the scalar `[search]`/`[search.pruner]` keys of a table; `nested` are the names of
/// sub-tables handled by the caller.
fn scalars(
    section: Section,
    table: &TableLike,
    nested: &[&str],
    problems: &mut Vec<Problem>,
) -> Scalars {
    let mut values = Vec::new();
    for (name, key_span, item) in table.entries() {
        if nested.contains(&name) {
            continue;
        }
        let Some(key) = schema::find_search(section, name) else {
            let candidates = schema::names_in(section);
            let help = schema::closest(name, candidates.iter().copied())
                .map(|suggestion| format!("did you mean `{suggestion}`?"))
                .unwrap_or_else(|| format!("{section} accepts: {}", candidates.join(", ")));
            problems.push(
                Problem::new(format!("unknown key `{name}` in {section}"), key_span)
                    .label("unknown key")
                    .help(help),
            );
            continue;
        };
        let Item::Value(value) = item else {
            problems.push(
                Problem::new(
                    format!(
                        "`{}` must be a value, found {}",
                        key.full_name(),
                        with_article(type_name(item))
                    ),
                    item_span(item).or(key_span),
                )
                .label("expected a value"),
            );
            continue;
        };
        match check_value(key, value, &format!("`{}`", key.full_name())) {
            Ok(setting) => values.push((key, Located::new(setting, value.span()))),
            Err(problem) => problems.push(problem),
        }
    }
    Scalars { values }
}

/// Parses `[search]`; `None` when it has problems (they are in `problems`).
pub(crate) fn parse_search(
    table: &TableLike,
    header_span: Option<Range<usize>>,
    problems: &mut Vec<Problem>,
) -> Option<SearchTable> {
    let before = problems.len();
    let scalars = scalars(Section::Search, table, &["space", "pruner"], problems);
    let mut space = Vec::new();
    let mut space_seen = false;
    let mut pruner = None;
    for (name, key_span, item) in table.entries() {
        match name {
            "space" => {
                space_seen = true;
                match TableLike::of(item) {
                    Some(space_table) => space = parse_space(&space_table, problems),
                    None => problems.push(
                        Problem::new(
                            format!(
                                "`search.space` must be a table, found {}",
                                with_article(type_name(item))
                            ),
                            item_span(item).or(key_span),
                        )
                        .label("expected a table")
                        .help("write [search.space] with one distribution per key, for example learning_rate = { log_uniform = [1e-5, 1e-4] }"),
                    ),
                }
            }
            "pruner" => match TableLike::of(item) {
                Some(pruner_table) => {
                    let span = pruner_table.span().or(key_span);
                    pruner = parse_pruner(&pruner_table, span, problems);
                }
                None => problems.push(
                    Problem::new(
                        format!(
                            "`search.pruner` must be a table, found {}",
                            with_article(type_name(item))
                        ),
                        item_span(item).or(key_span),
                    )
                    .label("expected a table")
                    .help("write [search.pruner] with method = \"asha\""),
                ),
            },
            _ => {}
        }
    }
    if scalars.integer("trials").is_none()
        && !problems[before..]
            .iter()
            .any(|problem| problem.message.contains("search.trials"))
    {
        problems.push(
            Problem::new(
                "missing required key `trials` in [search]",
                header_span.clone(),
            )
            .help("add `trials = N`: how many trials the search runs in all"),
        );
    }
    if !space_seen {
        problems.push(
            Problem::new("[search] has no [search.space]", header_span.clone())
                .help("add [search.space] with the keys to search, for example learning_rate = { log_uniform = [1e-5, 1e-4] }"),
        );
    } else if space.is_empty() && problems.len() == before {
        problems.push(
            Problem::new("[search.space] is empty", header_span.clone())
                .help("list at least one key to search, for example learning_rate = { log_uniform = [1e-5, 1e-4] }"),
        );
    }
    if problems.len() > before {
        return None;
    }
    let method = match scalars.text("method") {
        Some("random") => SearchMethod::Random,
        _ => SearchMethod::Tpe,
    };
    let count = |name: &str| {
        usize::try_from(scalars.integer_or_default(Section::Search, name))
            .expect("the schema keeps counts non-negative")
    };
    let spans = ["method", "trials", "seed", "parallel", "startup_trials"]
        .into_iter()
        .map(|name| (name, scalars.span(name)))
        .collect();
    Some(SearchTable {
        span: header_span,
        method,
        trials: usize::try_from(scalars.integer("trials").expect("checked above"))
            .expect("the schema keeps `trials` positive"),
        seed: u64::try_from(scalars.integer_or_default(Section::Search, "seed"))
            .expect("the schema keeps seeds non-negative"),
        parallel: count("parallel"),
        startup_trials: count("startup_trials"),
        space,
        pruner,
        spans,
    })
}

fn parse_pruner(
    table: &TableLike,
    span: Option<Range<usize>>,
    problems: &mut Vec<Problem>,
) -> Option<PrunerTable> {
    let before = problems.len();
    let scalars = scalars(Section::SearchPruner, table, &[], problems);
    if scalars.text("method").is_none() && problems.len() == before {
        problems.push(
            Problem::new("missing required key `method` in [search.pruner]", span.clone())
                .help("add method = \"asha\" (asynchronous successive halving), or remove [search.pruner]"),
        );
    }
    if problems.len() > before {
        return None;
    }
    let count = |name: &str| {
        usize::try_from(scalars.integer_or_default(Section::SearchPruner, name))
            .expect("the schema keeps counts positive")
    };
    Some(PrunerTable {
        min_epochs: count("min_epochs"),
        reduction_factor: count("reduction_factor"),
        span,
    })
}

/// Where `[search.space]` names its keys, for the messages.
const SEARCH_SPACE: SweepTable = SweepTable {
    table: "[search.space]",
    swept: "searched",
    verb: "search",
    verbs: "searches",
};

/// Resolves a `[search.space]` key as `[grid]` does (a bare name is a `[train]` key,
/// `section.key` any sweepable key), but the selection metric, the search's objective.
fn space_key(
    name: &str,
    span: Option<Range<usize>>,
    problems: &mut Vec<Problem>,
) -> Option<&'static Key> {
    match sweepable_key(name, span.clone(), &SEARCH_SPACE) {
        Ok(key) if key.full_name() == "train.selection_metric" => {
            problems.push(
                Problem::new("`train.selection_metric` cannot be searched", span)
                    .label("the search's objective")
                    .help("the search optimises the runs' selection metric: set it in [train]"),
            );
            None
        }
        Ok(key) => Some(key),
        Err(problem) => {
            problems.push(problem);
            None
        }
    }
}

fn parse_space(table: &TableLike, problems: &mut Vec<Problem>) -> Vec<SearchDimension> {
    let mut space: Vec<SearchDimension> = Vec::new();
    for (name, key_span, item) in flattened_entries(table) {
        let Some(key) = space_key(&name, key_span.clone(), problems) else {
            continue;
        };
        if space
            .iter()
            .any(|dimension| std::ptr::eq(dimension.key, key))
        {
            problems.push(
                Problem::new(
                    format!("`{}` is searched twice in [search.space]", key.full_name()),
                    key_span,
                )
                .label("second entry for the same key")
                .help("keep one distribution per key"),
            );
            continue;
        }
        if let Some(distribution) = parse_distribution(key, &name, item, key_span.clone(), problems)
        {
            space.push(SearchDimension {
                key,
                key_span,
                distribution,
                span: item_span(item),
            });
        }
    }
    space
}

/// The decimals of the shortest text of a number (`0.05` -> 2, `1e-3` -> 3, `3` -> 0).
pub fn decimals_of(number: f64) -> u32 {
    let text = format!("{}", number.abs());
    text.split_once('.')
        .map_or(0, |(_, decimals)| decimals.len() as u32)
}

/// A value on a step grid: `low + k * step` for the nearest `k` within `[low, high]`, written
/// with at most `decimals` decimals.
pub fn on_step_grid(value: f64, low: f64, high: f64, step: Step) -> f64 {
    let last = ((high - low) / step.step + 1e-9).floor();
    let k = ((value - low) / step.step).round().clamp(0.0, last);
    let exact = low + k * step.step;
    let rounded: f64 = format!("{:.*}", step.decimals as usize, exact)
        .parse()
        .expect("a formatted number parses");
    if rounded == 0.0 { 0.0 } else { rounded }
}

fn parse_distribution(
    key: &'static Key,
    name: &str,
    item: &Item,
    key_span: Option<Range<usize>>,
    problems: &mut Vec<Problem>,
) -> Option<Distribution> {
    let what = format!("`search.space.{name}`");
    let Some(table) = TableLike::of(item) else {
        problems.push(
            Problem::new(
                format!(
                    "{what} must be a distribution table, found {}",
                    with_article(type_name(item))
                ),
                item_span(item).or(key_span),
            )
            .label("expected a table")
            .help(format!(
                "write {name} = {{ uniform = [low, high] }}, {{ log_uniform = [low, high] }}, {{ int = [low, high] }} or {{ choice = [a, b, ...] }}"
            )),
        );
        return None;
    };
    let table_span = item_span(item).or(key_span.clone());
    let before = problems.len();
    let mut kind: Option<(&str, &Value, Option<Range<usize>>)> = None;
    let mut step: Option<&Value> = None;
    let mut log: Option<&Value> = None;
    for (entry, entry_span, entry_item) in table.entries() {
        let Item::Value(value) = entry_item else {
            problems.push(
                Problem::new(format!("`{entry}` in {what} must be a value"), entry_span)
                    .label("expected a value"),
            );
            continue;
        };
        match entry {
            "uniform" | "log_uniform" | "int" | "choice" => {
                if let Some((first, _, _)) = kind {
                    problems.push(
                        Problem::new(
                            format!("{what} has two distributions, `{first}` and `{entry}`"),
                            entry_span,
                        )
                        .label("second distribution")
                        .help("keep one of them"),
                    );
                } else {
                    kind = Some((entry, value, entry_span));
                }
            }
            "step" => step = Some(value),
            "log" => log = Some(value),
            other => {
                let candidates = schema::DISTRIBUTIONS
                    .iter()
                    .chain(schema::DISTRIBUTION_MODIFIERS)
                    .copied();
                let help = schema::closest(other, candidates)
                    .map(|suggestion| format!("did you mean `{suggestion}`?"))
                    .unwrap_or_else(|| {
                        "a distribution is one of uniform, log_uniform, int, choice, with `step` (uniform, int) or `log` (int)".into()
                    });
                problems.push(
                    Problem::new(format!("unknown key `{other}` in {what}"), entry_span)
                        .label("unknown key")
                        .help(help),
                );
            }
        }
    }
    if problems.len() > before {
        return None;
    }
    let Some((kind, value, _)) = kind else {
        problems.push(
            Problem::new(format!("{what} names no distribution"), table_span)
                .label("no distribution")
                .help("add one of uniform = [low, high], log_uniform = [low, high], int = [low, high], choice = [a, b, ...]"),
        );
        return None;
    };
    let value_kind_name = match key.kind {
        ValueKind::Float { .. } => "a number",
        ValueKind::Integer { .. } => "an integer",
        _ => "not a number",
    };
    let wrong_kind = |problems: &mut Vec<Problem>, hint: &str| {
        problems.push(
            Problem::new(
                format!(
                    "{what} cannot be drawn from `{kind}`: `{}` is {value_kind_name}",
                    key.full_name()
                ),
                value.span(),
            )
            .label(format!("not for {value_kind_name}"))
            .help(hint.to_string()),
        );
    };
    let modifier_not_allowed =
        |problems: &mut Vec<Problem>, modifier: &str, modifier_value: &Value, hint: &str| {
            problems.push(
                Problem::new(
                    format!("`{modifier}` does not apply to `{kind}` in {what}"),
                    modifier_value.span(),
                )
                .label("not allowed here")
                .help(hint.to_string()),
            );
        };
    match kind {
        "choice" => {
            if let Some(step) = step {
                modifier_not_allowed(problems, "step", step, "a choice lists its values");
            }
            if let Some(log) = log {
                modifier_not_allowed(problems, "log", log, "a choice lists its values");
            }
            let Some(array) = value.as_array() else {
                problems.push(
                    Problem::new(
                        format!("`choice` in {what} must be an array of values"),
                        value.span(),
                    )
                    .label("expected an array such as [16, 32]"),
                );
                return None;
            };
            if array.is_empty() {
                problems.push(
                    Problem::new(format!("`choice` in {what} is empty"), array.span())
                        .label("empty list")
                        .help("list at least one value"),
                );
                return None;
            }
            let element_what = format!("a choice for `{}`", key.full_name());
            let mut values: Vec<Setting> = Vec::new();
            for element in array.iter() {
                match check_value(key, element, &element_what) {
                    Ok(setting) if values.contains(&setting) => problems.push(
                        Problem::new(
                            format!("{what} lists the choice {setting} twice"),
                            element.span(),
                        )
                        .label("a second time")
                        .help("list each value once"),
                    ),
                    Ok(setting) => values.push(setting),
                    Err(problem) => problems.push(problem),
                }
            }
            (problems.len() == before).then_some(Distribution::Choice(values))
        }
        "uniform" | "log_uniform" => {
            if !matches!(key.kind, ValueKind::Float { .. }) {
                wrong_kind(
                    problems,
                    if matches!(key.kind, ValueKind::Integer { .. }) {
                        "draw an integer with int = [low, high], or list values with choice = [...]"
                    } else {
                        "list its values with choice = [...]"
                    },
                );
                return None;
            }
            if let Some(log) = log {
                modifier_not_allowed(
                    problems,
                    "log",
                    log,
                    "write log_uniform = [low, high] for a float uniform in its logarithm",
                );
            }
            if kind == "log_uniform"
                && let Some(step) = step
            {
                modifier_not_allowed(
                    problems,
                    "step",
                    step,
                    "a log-uniform value has no step grid; use uniform = [low, high] with step, or choice = [...]",
                );
            }
            let (low, high) = bounds(key, &what, kind, value, problems, false)?;
            if kind == "log_uniform" && low <= 0.0 {
                problems.push(
                    Problem::new(
                        format!(
                            "`log_uniform` in {what} needs a low end above 0, found {}",
                            format_float(low)
                        ),
                        value.span(),
                    )
                    .label("the logarithm of 0 is not finite")
                    .help("start the range above 0, or use uniform = [low, high]"),
                );
                return None;
            }
            let step = match step {
                Some(step_value) if kind == "uniform" => {
                    let number = step_value
                        .as_float()
                        .or_else(|| step_value.as_integer().map(|integer| integer as f64));
                    match number {
                        Some(number)
                            if number.is_finite() && number > 0.0 && number <= high - low =>
                        {
                            Some(Step {
                                step: number,
                                decimals: decimals_of(number).max(decimals_of(low)),
                            })
                        }
                        _ => {
                            problems.push(
                                Problem::new(
                                    format!(
                                        "`step` in {what} must be a number above 0 and at most high - low = {}",
                                        format_float(high - low)
                                    ),
                                    step_value.span(),
                                )
                                .label("not a valid step"),
                            );
                            return None;
                        }
                    }
                }
                _ => None,
            };
            if problems.len() > before {
                return None;
            }
            Some(if kind == "uniform" {
                Distribution::Uniform { low, high, step }
            } else {
                Distribution::LogUniform { low, high }
            })
        }
        _ => {
            // "int"
            if !matches!(key.kind, ValueKind::Integer { .. }) {
                wrong_kind(
                    problems,
                    if matches!(key.kind, ValueKind::Float { .. }) {
                        "draw a float with uniform = [low, high] (with `step` for a grid) or log_uniform = [low, high]"
                    } else {
                        "list its values with choice = [...]"
                    },
                );
                return None;
            }
            let (low, high) = bounds(key, &what, kind, value, problems, true)?;
            let (low, high) = (low as i64, high as i64);
            let step = match step {
                None => 1,
                Some(step_value) => match step_value.as_integer() {
                    Some(step) if step >= 1 && step <= high - low => step,
                    _ => {
                        problems.push(
                            Problem::new(
                                format!(
                                    "`step` in {what} must be an integer from 1 to high - low = {}",
                                    high - low
                                ),
                                step_value.span(),
                            )
                            .label("not a valid step"),
                        );
                        return None;
                    }
                },
            };
            let log = match log {
                None => false,
                Some(log_value) => match log_value.as_bool() {
                    Some(log) => log,
                    None => {
                        problems.push(
                            Problem::new(
                                format!("`log` in {what} must be true or false"),
                                log_value.span(),
                            )
                            .label("expected true or false"),
                        );
                        return None;
                    }
                },
            };
            if log && (step != 1 || low < 1) {
                problems.push(
                    Problem::new(
                        format!("`log = true` in {what} needs a low end of at least 1 and no step"),
                        value.span(),
                    )
                    .label("not log-uniform")
                    .help("drop `step`, start the range at 1 or above, or drop `log`"),
                );
                return None;
            }
            Some(Distribution::Int {
                low,
                high,
                step,
                log,
            })
        }
    }
}

/// The `[low, high]` of a numeric distribution, each end a valid value of the key, low below
/// high.
fn bounds(
    key: &Key,
    what: &str,
    kind: &str,
    value: &Value,
    problems: &mut Vec<Problem>,
    integers: bool,
) -> Option<(f64, f64)> {
    let pair = value.as_array().filter(|array| array.len() == 2);
    let Some(pair) = pair else {
        problems.push(
            Problem::new(
                format!("`{kind}` in {what} must be [low, high]"),
                value.span(),
            )
            .label(if integers {
                "expected two integers"
            } else {
                "expected two numbers"
            })
            .help(format!("write {kind} = [low, high]")),
        );
        return None;
    };
    let mut ends = Vec::new();
    for (end, element) in ["low", "high"].into_iter().zip(pair.iter()) {
        match check_value(key, element, &format!("the {end} end of {what}")) {
            Ok(setting) => ends.push(match setting {
                Setting::Integer(integer) => integer as f64,
                other => other.as_float(),
            }),
            Err(problem) => problems.push(problem),
        }
    }
    if ends.len() < 2 {
        return None;
    }
    let (low, high) = (ends[0], ends[1]);
    if low >= high {
        problems.push(
            Problem::new(
                format!(
                    "`{kind}` in {what} has low {} not below high {}",
                    format_float(low),
                    format_float(high)
                ),
                value.span(),
            )
            .label("an empty range")
            .help(format!(
                "write the range low first; to fix one value, set `{}` in [{}]",
                key.name,
                key.section.name()
            )),
        );
        return None;
    }
    Some((low, high))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::ExperimentFile;
    use std::path::Path;

    const HEAD: &str = "name = \"x\"\n[data]\ntrain = \"t.csv\"\n[model]\npath = \"m\"\n";

    fn parse(text: &str) -> Result<ExperimentFile, crate::experiment::diagnostics::InputError> {
        ExperimentFile::parse(Path::new("exp.toml"), &format!("{HEAD}{text}"))
    }

    #[test]
    fn stepped_values_keep_the_decimals_of_the_step() {
        let step = Step {
            step: 0.05,
            decimals: 2,
        };
        assert_eq!(on_step_grid(0.1 + 0.05 + 1e-12, 0.0, 0.2, step), 0.15);
        assert_eq!(format!("{}", on_step_grid(0.149, 0.0, 0.2, step)), "0.15");
        assert_eq!(on_step_grid(0.26, 0.0, 0.2, step), 0.2, "never above high");
        assert_eq!(on_step_grid(-1.0, 0.0, 0.2, step), 0.0);
        assert_eq!(decimals_of(0.05), 2);
        assert_eq!(decimals_of(1e-3), 3);
        assert_eq!(decimals_of(2.5e-4), 5);
        assert_eq!(decimals_of(3.0), 0);
        // 0.1 + k * 0.1 in floating point is 0.30000000000000004 for k = 2: the grid says 0.3.
        let tenth = Step {
            step: 0.1,
            decimals: 1,
        };
        assert_eq!(format!("{}", on_step_grid(0.3, 0.1, 0.9, tenth)), "0.3");
    }

    #[test]
    fn a_search_table_parses_in_the_order_written() {
        let file = parse(
            "[search]\nmethod = \"random\"\ntrials = 5\nparallel = 2\n[search.space]\nlearning_rate = { log_uniform = [1e-5, 1e-4] }\nwarmup_ratio = { uniform = [0, 0.2], step = 0.05 }\nbatch_size = { int = [8, 32], step = 8 }\nmodel.hidden_dropout = { choice = [0.0, 0.1] }\n\"model.path\" = { choice = [\"a\", \"b\"] }\n[search.pruner]\nmethod = \"asha\"\n",
        )
        .unwrap();
        let search = file.search.unwrap();
        assert_eq!(search.method, SearchMethod::Random);
        assert_eq!((search.trials, search.parallel, search.seed), (5, 2, 0));
        assert_eq!(search.startup_trials, 10, "Optuna's default");
        let keys: Vec<String> = search
            .space
            .iter()
            .map(|dimension| dimension.key.full_name())
            .collect();
        assert_eq!(
            keys,
            [
                "train.learning_rate",
                "train.warmup_ratio",
                "train.batch_size",
                "model.hidden_dropout",
                "model.path"
            ]
        );
        assert_eq!(
            search.space[1].distribution,
            Distribution::Uniform {
                low: 0.0,
                high: 0.2,
                step: Some(Step {
                    step: 0.05,
                    decimals: 2
                })
            }
        );
        assert_eq!(
            search.space[2].distribution,
            Distribution::Int {
                low: 8,
                high: 32,
                step: 8,
                log: false
            }
        );
        let pruner = search.pruner.unwrap();
        assert_eq!((pruner.min_epochs, pruner.reduction_factor), (1, 3));
    }

    #[test]
    fn a_searched_required_key_need_not_be_set_and_a_set_one_warns() {
        let text = "name = \"x\"\n[data]\ntrain = \"t.csv\"\n[train]\nlearning_rate = 1e-4\n[search]\ntrials = 2\n[search.space]\n\"model.path\" = { choice = [\"a\", \"b\"] }\nlearning_rate = { log_uniform = [1e-5, 1e-4] }\n";
        let file = ExperimentFile::parse(Path::new("exp.toml"), text).unwrap();
        assert_eq!(file.warnings.len(), 1);
        assert!(
            file.warnings[0]
                .message
                .contains("the search's values are used")
        );
    }

    #[test]
    fn a_search_needs_trials_and_a_space() {
        let messages = |text: &str| -> Vec<String> {
            parse(text)
                .unwrap_err()
                .problems
                .into_iter()
                .map(|problem| problem.message)
                .collect()
        };
        assert_eq!(
            messages("[search]\nmethod = \"tpe\"\n"),
            [
                "missing required key `trials` in [search]",
                "[search] has no [search.space]"
            ]
        );
        assert_eq!(
            messages("[search]\ntrials = 3\n[search.space]\n"),
            ["[search.space] is empty"]
        );
        assert_eq!(
            messages(
                "[search]\ntrials = 3\n[search.space]\nseed = { int = [3, 3] }\nlearning_rate = { uniform = [1e-4, 1e-5] }\n[search.pruner]\nmin_epochs = 1\n"
            ),
            [
                "`int` in `search.space.seed` has low 3 not below high 3",
                "`uniform` in `search.space.learning_rate` has low 1e-4 not below high 1e-5",
                "missing required key `method` in [search.pruner]",
            ]
        );
    }
}
