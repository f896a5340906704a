//! The experiment file as written: parsing TOML into [`ExperimentFile`], with every value's span,
//! checking names, types and ranges against `schema`, and collecting every problem at once.
//!
//! Nothing here reads data or model files and nothing touches the run store; defaults, grid points
//! and the checks that need the model live in `plan`.

use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use toml_edit::{Document, Item, Table, Value};

use crate::experiment::diagnostics::{InputError, Located, Problem, Source};
use crate::experiment::schema::{self, Bound, Key, Section, ValueKind, describe_range};
use crate::experiment::search::{self, SearchTable};
use crate::experiment::setting::{Setting, format_float};

/// One `[grid]` entry: a key and the values it sweeps, in the order written.
#[derive(Clone, Debug)]
pub struct GridAxis {
    pub key: &'static Key,
    pub key_span: Option<Range<usize>>,
    pub values: Vec<Located<Setting>>,
}

/// One `[[data.filter]]` table: keep rows with `min <= column <= max`, or with `column` in `values`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowFilter {
    pub column: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<Setting>>,
}

/// One `[labels]` entry: a raw label as it appears in the data, and its class id.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelEntry {
    pub raw: String,
    pub class_id: u32,
}

/// An experiment file as written, checked key by key.
#[derive(Clone, Debug)]
pub struct ExperimentFile {
    pub source: Source,
    pub name: String,
    pub description: Option<String>,
    /// The scalar keys the file sets, in the order written (grid axes excluded).
    pub values: Vec<(&'static Key, Located<Setting>)>,
    pub labels: Option<Vec<LabelEntry>>,
    pub filters: Vec<Located<RowFilter>>,
    /// The span of the `[grid]` header, when there is one.
    pub grid_span: Option<Range<usize>>,
    pub grid: Vec<GridAxis>,
    /// The `[search]` table, when there is one.
    pub search: Option<SearchTable>,
    /// Things that are allowed but probably not meant, rendered as warnings.
    pub warnings: Vec<Problem>,
}

impl ExperimentFile {
    /// Reads and checks an experiment file.
    pub fn load(path: &Path) -> anyhow::Result<ExperimentFile> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read experiment file {}", path.display()))?;
        let text = String::from_utf8(bytes).map_err(|error| {
            let offset = error.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(error.as_bytes()).into_owned();
            InputError::new(
                Source::new(path, text),
                vec![
                    Problem::new(
                        "the experiment file is not valid UTF-8",
                        Some(offset..offset + 1),
                    )
                    .help("TOML files must be UTF-8; re-save the file as UTF-8"),
                ],
            )
        })?;
        Ok(ExperimentFile::parse(path, &text)?)
    }

    /// Parses experiment text; `path` is where it came from (used to resolve relative paths and
    /// in messages).
    pub fn parse(path: &Path, text: &str) -> Result<ExperimentFile, InputError> {
        let source = Source::new(path, text);
        let document = match Document::parse(text) {
            Ok(document) => document,
            Err(error) => {
                let message = error
                    .message()
                    .lines()
                    .next()
                    .unwrap_or("invalid TOML")
                    .to_string();
                let problem =
                    Problem::new(format!("invalid TOML: {message}"), error.span()).label("here");
                return Err(InputError::new(source, vec![problem]));
            }
        };
        let mut parser = Parser::default();
        parser.document(document.as_table());
        let Parser {
            problems,
            warnings,
            name,
            description,
            values,
            labels,
            filters,
            grid_span,
            grid,
            search,
            tables_seen,
            written,
            one_class_labels: _,
        } = parser;
        let mut problems = problems;
        let is_set = |full: &str| {
            written.iter().any(|name| name == full)
                || search
                    .as_ref()
                    .is_some_and(|search| search.space.iter().any(|d| d.key.full_name() == full))
        };
        for key in schema::KEYS
            .iter()
            .filter(|key| matches!(key.default, schema::Default::Required))
        {
            if is_set(&key.full_name()) {
                continue;
            }
            let table = tables_seen
                .iter()
                .find(|(section, _)| *section == key.section);
            let problem = match (key.section, table) {
                (Section::Top, _) => {
                    Problem::new(format!("missing required key `{}`", key.name), Some(0..0)).help(
                        format!(
                            "add `{} = ...` at the top of the file: {}",
                            key.name, key.meaning
                        ),
                    )
                }
                (section, Some((_, span))) => Problem::new(
                    format!("missing required key `{}` in {section}", key.name),
                    span.clone(),
                )
                .help(format!("add `{} = ...`: {}", key.name, key.meaning)),
                (section, None) => Problem::new(
                    format!("missing table {section}: it must set `{}`", key.name),
                    None,
                )
                .help(format!(
                    "add {section} with `{} = ...`: {}",
                    key.name, key.meaning
                )),
            };
            problems.push(problem);
        }
        model_source_rules(&values, &grid, &tables_seen, &is_set, &mut problems);
        if let (Some(_), Some(grid_span)) = (&search, &grid_span) {
            problems.push(
                Problem::new("[grid] and [search] in one experiment file", Some(grid_span.clone()))
                    .label("this grid")
                    .help(
                        "a search proposes its own trials: move the grid's keys into [search.space] as `choice = [...]`, or write one experiment file per grid point",
                    ),
            );
        }
        if !problems.is_empty() {
            return Err(InputError::new(source, problems));
        }
        Ok(ExperimentFile {
            source,
            name: name.unwrap_or_default(),
            description,
            values,
            labels,
            filters,
            grid_span,
            grid,
            search,
            warnings,
        })
    }

    pub fn path(&self) -> &Path {
        &self.source.path
    }

    /// The folder relative paths in the file are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        match self.source.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// The value the file sets for a key outside `[grid]`.
    pub fn explicit(&self, key: &Key) -> Option<&Located<Setting>> {
        self.values
            .iter()
            .find(|(candidate, _)| std::ptr::eq(*candidate, key))
            .map(|(_, value)| value)
    }

    /// Builds an error about this file.
    pub fn error(&self, problems: Vec<Problem>) -> InputError {
        InputError::new(self.source.clone(), problems)
    }
}

#[derive(Default)]
struct Parser {
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    name: Option<String>,
    description: Option<String>,
    values: Vec<(&'static Key, Located<Setting>)>,
    labels: Option<Vec<LabelEntry>>,
    filters: Vec<Located<RowFilter>>,
    grid_span: Option<Range<usize>>,
    grid: Vec<GridAxis>,
    search: Option<SearchTable>,
    tables_seen: Vec<(Section, Option<Range<usize>>)>,
    /// Full names of the keys written, valid or not.
    written: Vec<String>,
    /// `[labels]` maps every label to one class (its header's span): an error unless the data
    /// are label sets, which is known once every table is read.
    one_class_labels: Option<Option<Range<usize>>>,
}

/// A table-like item: a `[table]`, a dotted key, or an inline table.
pub(crate) enum TableLike<'a> {
    Table(&'a Table),
    Inline(&'a toml_edit::InlineTable),
}

impl<'a> TableLike<'a> {
    pub(crate) fn of(item: &'a Item) -> Option<TableLike<'a>> {
        match item {
            Item::Table(table) => Some(TableLike::Table(table)),
            Item::Value(Value::InlineTable(table)) => Some(TableLike::Inline(table)),
            _ => None,
        }
    }

    /// The span of the table (its header or its braces).
    pub(crate) fn span(&self) -> Option<Range<usize>> {
        match self {
            TableLike::Table(table) => table.span(),
            TableLike::Inline(table) => table.span(),
        }
    }

    /// (name, span of the key, item) in the order written.
    pub(crate) fn entries(&self) -> Vec<(&'a str, Option<Range<usize>>, &'a Item)> {
        match self {
            TableLike::Table(table) => table
                .iter()
                .map(|(name, item)| (name, table.key(name).and_then(|key| key.span()), item))
                .collect(),
            TableLike::Inline(table) => table
                .iter()
                .map(|(name, _)| {
                    let (key, item) = table.get_key_value(name).expect("key just listed");
                    (name, key.span(), item)
                })
                .collect(),
        }
    }
}

pub(crate) fn item_span(item: &Item) -> Option<Range<usize>> {
    match item {
        Item::Value(value) => value.span(),
        other => other.span(),
    }
}

pub(crate) fn type_name(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Value(value) => value.type_name(),
        Item::Table(_) => "table",
        Item::ArrayOfTables(_) => "array of tables",
    }
}

/// "a string", "an integer", for messages.
pub(crate) fn with_article(noun: &str) -> String {
    match noun.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {noun}"),
        _ => format!("a {noun}"),
    }
}

fn expected_description(kind: &ValueKind) -> String {
    match kind {
        ValueKind::Text | ValueKind::Name | ValueKind::Path | ValueKind::Device => {
            "a string".into()
        }
        ValueKind::Choice(choices) => format!("one of {}", quoted_list(choices)),
        ValueKind::Bool => "true or false".into(),
        ValueKind::Integer { .. } => "an integer".into(),
        ValueKind::Float { .. } => "a number".into(),
        ValueKind::Freeze => "\"none\", \"embeddings\" or an integer".into(),
    }
}

fn quoted_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|item| format!("\"{item}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

fn within(value: f64, min: Bound, max: Bound) -> bool {
    let above = match min {
        Bound::Unbounded => true,
        Bound::Inclusive(low) => value >= low,
        Bound::Exclusive(low) => value > low,
    };
    let below = match max {
        Bound::Unbounded => true,
        Bound::Inclusive(high) => value <= high,
        Bound::Exclusive(high) => value < high,
    };
    above && below
}

fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | '0'..='9'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '-'))
}

fn is_valid_device(device: &str) -> bool {
    match device {
        "auto" | "cpu" | "cuda" => true,
        other => other
            .strip_prefix("cuda:")
            .is_some_and(|index| !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit())),
    }
}

/// Checks one value against a key's kind. `what` names the value in messages (`batch_size`, or
/// `grid value for batch_size`).
pub fn check_value(key: &Key, value: &Value, what: &str) -> Result<Setting, Problem> {
    let span = value.span();
    let wrong_type = || {
        let expected = expected_description(&key.kind);
        Problem::new(
            format!(
                "{what} must be {expected}, found {}",
                with_article(value.type_name())
            ),
            span.clone(),
        )
        .label(format!("expected {expected}"))
    };
    match key.kind {
        ValueKind::Freeze => match (value.as_integer(), value.as_str()) {
            (Some(layers), _) if layers >= 1 => Ok(Setting::Integer(layers)),
            (Some(layers), _) => Err(Problem::new(
                format!(
                    "{what} must be \"none\", \"embeddings\" or at least 1 layer, found {layers}"
                ),
                span,
            )
            .label("at least 1")
            .help("write \"none\" to train every parameter")),
            (None, Some(text)) if schema::FREEZE_WORDS.contains(&text) => {
                Ok(Setting::Text(text.to_string()))
            }
            (None, Some(text)) => {
                let suggestion = schema::closest(text, schema::FREEZE_WORDS.iter().copied());
                Err(Problem::new(
                    format!("{what} must be \"none\", \"embeddings\" or an integer number of layers, found \"{text}\""),
                    span,
                )
                .label("unknown value")
                .help_opt(suggestion.map(|s| format!("did you mean \"{s}\"?"))))
            }
            (None, None) => Err(wrong_type()),
        },
        ValueKind::Bool => value.as_bool().map(Setting::Bool).ok_or_else(wrong_type),
        ValueKind::Integer { min, max } => {
            let Some(number) = value.as_integer() else {
                let mut problem = wrong_type();
                if let Some(float) = value.as_float()
                    && float.fract() == 0.0
                    && float.is_finite()
                {
                    problem = problem.help(format!(
                        "write `{}` without the decimal point",
                        float as i64
                    ));
                }
                return Err(problem);
            };
            if number < min || number > max {
                let range = if max >= 1_000_000 {
                    format!("at least {min}")
                } else {
                    format!("from {min} to {max}")
                };
                return Err(
                    Problem::new(format!("{what} must be {range}, found {number}"), span)
                        .label(format!("must be {range}")),
                );
            }
            Ok(Setting::Integer(number))
        }
        ValueKind::Float { min, max } => {
            let number = match (value.as_float(), value.as_integer()) {
                (Some(float), _) => float,
                (None, Some(integer)) => integer as f64,
                _ => return Err(wrong_type()),
            };
            if !number.is_finite() {
                return Err(Problem::new(
                    format!("{what} must be a finite number, found {number}"),
                    span,
                )
                .label("not a finite number"));
            }
            if !within(number, min, max) {
                let range = describe_range(min, max);
                return Err(Problem::new(
                    format!("{what} must be {range}, found {}", format_float(number)),
                    span,
                )
                .label(format!("must be {range}")));
            }
            // -0.0 and 0.0 are the same setting.
            Ok(Setting::Float(if number == 0.0 { 0.0 } else { number }))
        }
        ValueKind::Text
        | ValueKind::Name
        | ValueKind::Path
        | ValueKind::Choice(_)
        | ValueKind::Device => {
            let text = value.as_str().ok_or_else(wrong_type)?;
            match key.kind {
                ValueKind::Name if !is_valid_name(text) => Err(Problem::new(
                    format!("{what} must match [a-z0-9][a-z0-9._-]*, found \"{text}\""),
                    span,
                )
                .label("not a valid name")
                .help("use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit")),
                ValueKind::Path if text.is_empty() => {
                    Err(Problem::new(format!("{what} must not be empty"), span).label("empty path"))
                }
                ValueKind::Choice(choices) if !choices.contains(&text) => {
                    let suggestion = schema::closest(text, choices.iter().copied());
                    Err(Problem::new(
                        format!("{what} must be one of {}, found \"{text}\"", quoted_list(choices)),
                        span,
                    )
                    .label("unknown value")
                    .help_opt(suggestion.map(|s| format!("did you mean \"{s}\"?"))))
                }
                ValueKind::Device if !is_valid_device(text) => Err(Problem::new(
                    format!("{what} must be \"auto\", \"cpu\", \"cuda\" or \"cuda:N\", found \"{text}\""),
                    span,
                )
                .label("unknown device")),
                _ => Ok(Setting::Text(text.to_string())),
            }
        }
    }
}

impl Parser {
    fn document(&mut self, root: &Table) {
        for (name, key_span, item) in TableLike::Table(root).entries() {
            match name {
                "name" | "description" => {
                    let key = schema::find(Section::Top, name).expect("top-level key");
                    if let Some(setting) = self.scalar(key, item, key_span) {
                        match name {
                            "name" => self.name = Some(setting.as_text().to_string()),
                            _ => self.description = Some(setting.as_text().to_string()),
                        }
                    }
                }
                _ => match Section::from_name(name) {
                    Some(section) => self.section(section, item, key_span),
                    None if matches!(item, Item::Table(_)) => {
                        let help = schema::closest(
                            name,
                            Section::TABLES.iter().map(|section| section.name()),
                        )
                        .map(|suggestion| format!("did you mean [{suggestion}]?"))
                        .unwrap_or_else(|| {
                            "the tables are [data], [labels], [model], [train], [grid] and [search]"
                                .into()
                        });
                        self.problems.push(
                            Problem::new(format!("unknown table [{name}]"), key_span)
                                .label("unknown table")
                                .help(help),
                        );
                    }
                    None => self.unknown_key(Section::Top, name, key_span),
                },
            }
        }
        if let Some(header_span) = self.one_class_labels.take() {
            let multi_label = self.values.iter().any(|(key, value)| {
                key.full_name() == "data.label_format" && value.value.as_text() == "multi"
            });
            if !multi_label {
                self.problems.push(
                    Problem::new(
                        "[labels] maps every label to one class; a classifier needs at least 2",
                        header_span,
                    )
                    .help("give the classes ids 0, 1, ... (one class is enough for label sets: label_format = \"multi\")"),
                );
            }
        }
        self.search_rules();
    }

    fn unknown_key(&mut self, section: Section, name: &str, span: Option<Range<usize>>) {
        let candidates = schema::names_in(section);
        let mut help = schema::closest(name, candidates.iter().copied())
            .map(|suggestion| format!("did you mean `{suggestion}`?"));
        if help.is_none() {
            // A known key in the wrong table.
            if let Some(key) = schema::KEYS.iter().find(|key| key.name == name) {
                help = Some(match key.section {
                    Section::Top => {
                        format!("`{name}` belongs at the top of the file, before any table")
                    }
                    other => format!("`{name}` belongs in {other}"),
                });
            }
        }
        let help = help.unwrap_or_else(|| format!("{section} accepts: {}", candidates.join(", ")));
        self.problems.push(
            Problem::new(format!("unknown key `{name}` in {section}"), span)
                .label("unknown key")
                .help(help),
        );
    }

    /// Checks a scalar key and records it; returns the setting when it is valid.
    fn scalar(
        &mut self,
        key: &'static Key,
        item: &Item,
        key_span: Option<Range<usize>>,
    ) -> Option<Setting> {
        self.written.push(key.full_name());
        let Item::Value(value) = item else {
            let expected = expected_description(&key.kind);
            self.problems.push(
                Problem::new(
                    format!(
                        "`{}` must be {expected}, found {}",
                        key.full_name(),
                        with_article(type_name(item))
                    ),
                    item_span(item).or(key_span),
                )
                .label(format!("expected {expected}")),
            );
            return None;
        };
        match check_value(key, value, &format!("`{}`", key.full_name())) {
            Ok(setting) => {
                self.values
                    .push((key, Located::new(setting.clone(), value.span())));
                Some(setting)
            }
            Err(problem) => {
                self.problems.push(problem);
                None
            }
        }
    }

    fn section(&mut self, section: Section, item: &Item, key_span: Option<Range<usize>>) {
        let Some(table) = TableLike::of(item) else {
            self.problems.push(
                Problem::new(
                    format!(
                        "`{}` must be a table, found {}",
                        section.name(),
                        with_article(type_name(item))
                    ),
                    item_span(item).or(key_span.clone()),
                )
                .label("expected a table")
                .help(format!("write it as a table: [{}]", section.name())),
            );
            return;
        };
        let header_span = match &table {
            TableLike::Table(table) => table.span().or(key_span),
            TableLike::Inline(table) => table.span().or(key_span),
        };
        self.tables_seen.push((section, header_span.clone()));
        match section {
            Section::Labels => self.labels(&table, header_span),
            Section::Grid => self.grid(&table, header_span),
            Section::Search => {
                self.search = search::parse_search(&table, header_span, &mut self.problems);
            }
            _ => {
                for (name, key_span, item) in table.entries() {
                    if section == Section::Data && name == "filter" {
                        self.filters(item, key_span);
                        continue;
                    }
                    match schema::find(section, name) {
                        Some(key) => {
                            self.scalar(key, item, key_span);
                        }
                        None => self.unknown_key(section, name, key_span),
                    }
                }
            }
        }
    }

    fn labels(&mut self, table: &TableLike, header_span: Option<Range<usize>>) {
        let mut entries = Vec::new();
        let mut spans = Vec::new();
        for (raw, key_span, item) in table.entries() {
            let class_id = match item {
                Item::Value(Value::Integer(id)) if *id.value() >= 0 && *id.value() < 1_000_000 => {
                    *id.value() as u32
                }
                other => {
                    self.problems.push(
                        Problem::new(
                            format!(
                                "`labels.{raw}` must be a class id (an integer from 0), found {}",
                                match other {
                                    Item::Value(Value::Integer(id)) => id.value().to_string(),
                                    other => with_article(type_name(other)),
                                }
                            ),
                            item_span(other).or(key_span),
                        )
                        .label("expected a class id: 0, 1, 2, ...")
                        .help("map each raw label to a class id, for example: positive = 0"),
                    );
                    continue;
                }
            };
            entries.push(LabelEntry {
                raw: raw.to_string(),
                class_id,
            });
            spans.push(item_span(item));
        }
        if entries.is_empty() {
            if self.problems.is_empty() {
                self.problems.push(
                    Problem::new("[labels] is empty", header_span)
                        .help("map each raw label to a class id, or remove [labels] to infer the classes from the data"),
                );
            }
            return;
        }
        let classes = entries
            .iter()
            .map(|entry| entry.class_id)
            .max()
            .unwrap_or(0)
            + 1;
        let missing: Vec<String> = (0..classes)
            .filter(|id| !entries.iter().any(|entry| entry.class_id == *id))
            .map(|id| id.to_string())
            .collect();
        if !missing.is_empty() {
            let highest = entries
                .iter()
                .position(|entry| entry.class_id == classes - 1);
            self.problems.push(
                Problem::new(
                    format!(
                        "class ids in [labels] must be 0..{} without gaps; no label maps to {}",
                        classes - 1,
                        missing.join(", ")
                    ),
                    highest
                        .and_then(|index| spans[index].clone())
                        .or(header_span),
                )
                .label(format!("highest class id is {}", classes - 1))
                .help("number the classes 0, 1, 2, ... in any order"),
            );
        } else if classes < 2 {
            self.one_class_labels = Some(header_span);
        }
        self.labels = Some(entries);
    }

    fn filters(&mut self, item: &Item, key_span: Option<Range<usize>>) {
        let tables: Vec<(TableLike, Option<Range<usize>>)> = match item {
            Item::ArrayOfTables(array) => array
                .iter()
                .map(|table| (TableLike::Table(table), table.span()))
                .collect(),
            Item::Value(Value::Array(array)) => {
                let mut tables = Vec::new();
                for value in array.iter() {
                    match value {
                        Value::InlineTable(table) => tables.push((TableLike::Inline(table), table.span())),
                        other => self.problems.push(
                            Problem::new(
                                format!("each `data.filter` must be a table, found {}", with_article(other.type_name())),
                                other.span(),
                            )
                            .label("expected a table")
                            .help("write filters as [[data.filter]] tables with `column` and `min`/`max` or `values`"),
                        ),
                    }
                }
                tables
            }
            other => {
                self.problems.push(
                    Problem::new(
                        format!(
                            "`data.filter` must be an array of tables, found {}",
                            with_article(type_name(other))
                        ),
                        item_span(other).or(key_span),
                    )
                    .label("expected [[data.filter]] tables"),
                );
                return;
            }
        };
        for (table, span) in tables {
            if let Some(filter) = self.filter(&table, span.clone()) {
                self.filters.push(Located::new(filter, span));
            }
        }
    }

    fn filter(&mut self, table: &TableLike, span: Option<Range<usize>>) -> Option<RowFilter> {
        let problems_before = self.problems.len();
        let mut filter = RowFilter {
            column: String::new(),
            min: None,
            max: None,
            values: None,
        };
        let mut column_seen = false;
        for (name, key_span, item) in table.entries() {
            let value = match item {
                Item::Value(value) => Some(value),
                _ => None,
            };
            let here = item_span(item).or(key_span.clone());
            match name {
                "column" => match value.and_then(Value::as_str) {
                    Some(column) if !column.is_empty() => {
                        filter.column = column.to_string();
                        column_seen = true;
                    }
                    _ => self.problems.push(
                        Problem::new("`data.filter.column` must be a non-empty string", here)
                            .label("expected a column name"),
                    ),
                },
                "min" | "max" => {
                    let number = value.and_then(|value| {
                        value
                            .as_float()
                            .or_else(|| value.as_integer().map(|integer| integer as f64))
                    });
                    match number {
                        Some(number) if number.is_finite() => {
                            let number = if number == 0.0 { 0.0 } else { number };
                            if name == "min" {
                                filter.min = Some(number);
                            } else {
                                filter.max = Some(number);
                            }
                        }
                        _ => self.problems.push(
                            Problem::new(
                                format!("`data.filter.{name}` must be a finite number"),
                                here,
                            )
                            .label("expected a number"),
                        ),
                    }
                }
                "values" => {
                    let Some(array) = value.and_then(Value::as_array) else {
                        self.problems.push(
                            Problem::new("`data.filter.values` must be an array", here)
                                .label("expected an array such as [\"a\", \"b\"]"),
                        );
                        continue;
                    };
                    let mut values = Vec::new();
                    for element in array.iter() {
                        match element {
                            Value::String(text) => values.push(Setting::Text(text.value().clone())),
                            Value::Integer(integer) => values.push(Setting::Integer(*integer.value())),
                            Value::Float(float) if float.value().is_finite() => {
                                values.push(Setting::Float(*float.value()))
                            }
                            Value::Boolean(boolean) => values.push(Setting::Bool(*boolean.value())),
                            other => self.problems.push(
                                Problem::new(
                                    format!(
                                        "`data.filter.values` may hold strings, numbers and booleans, found {}",
                                        with_article(other.type_name())
                                    ),
                                    other.span(),
                                )
                                .label("not allowed here"),
                            ),
                        }
                    }
                    if array.is_empty() {
                        self.problems.push(
                            Problem::new(
                                "`data.filter.values` is empty: the filter would drop every row",
                                here,
                            )
                            .label("empty"),
                        );
                    }
                    filter.values = Some(values);
                }
                other => {
                    let help = schema::closest(other, schema::FILTER_KEYS.iter().copied())
                        .map(|suggestion| format!("did you mean `{suggestion}`?"))
                        .unwrap_or_else(|| {
                            format!("a filter accepts: {}", schema::FILTER_KEYS.join(", "))
                        });
                    self.problems.push(
                        Problem::new(
                            format!("unknown key `{other}` in [[data.filter]]"),
                            key_span,
                        )
                        .label("unknown key")
                        .help(help),
                    );
                }
            }
        }
        if self.problems.len() > problems_before {
            return None;
        }
        let range = filter.min.is_some() || filter.max.is_some();
        let problem = if !column_seen {
            Some(
                Problem::new("a [[data.filter]] needs a `column`", span)
                    .help("add `column = \"...\"`"),
            )
        } else if range && filter.values.is_some() {
            Some(
                Problem::new(
                    "a [[data.filter]] takes either `min`/`max` or `values`, not both",
                    span,
                )
                .help("split it into two [[data.filter]] tables"),
            )
        } else if !range && filter.values.is_none() {
            Some(
                Problem::new(
                    format!("the filter on `{}` has no condition", filter.column),
                    span,
                )
                .help("add `min`, `max` or `values`"),
            )
        } else if let (Some(min), Some(max)) = (filter.min, filter.max)
            && min > max
        {
            Some(Problem::new(
                format!(
                    "the filter on `{}` has min {} above max {}: it would drop every row",
                    filter.column,
                    format_float(min),
                    format_float(max)
                ),
                span,
            ))
        } else {
            None
        };
        match problem {
            Some(problem) => {
                self.problems.push(problem);
                None
            }
            None => Some(filter),
        }
    }

    /// `[search]` beside the rest of the file: no `[grid]` with it (a search is one set of
    /// trials), and a searched key also set in its table is a warning (the search's values win).
    fn search_rules(&mut self) {
        let Some(search) = &self.search else {
            return;
        };
        for dimension in &search.space {
            if let Some((_, fixed)) = self
                .values
                .iter()
                .find(|(key, _)| std::ptr::eq(*key, dimension.key))
            {
                self.warnings.push(overridden_warning(
                    dimension.key,
                    fixed,
                    "searched in [search.space]",
                    "the search's values",
                ));
            }
        }
    }

    fn grid(&mut self, table: &TableLike, header_span: Option<Range<usize>>) {
        self.grid_span = header_span;
        for (name, key_span, item) in flattened_entries(table) {
            let Some(key) = self.grid_key(&name, key_span.clone()) else {
                continue;
            };
            self.written.push(key.full_name());
            if self.grid.iter().any(|axis| std::ptr::eq(axis.key, key)) {
                self.problems.push(
                    Problem::new(
                        format!("`{}` is swept twice in [grid]", key.full_name()),
                        key_span,
                    )
                    .label("second sweep of the same key")
                    .help("merge the two lists into one"),
                );
                continue;
            }
            let Some(array) = (match item {
                Item::Value(Value::Array(array)) => Some(array),
                _ => None,
            }) else {
                self.problems.push(
                    Problem::new(
                        format!(
                            "`grid.{name}` must be an array of values to sweep, found {}",
                            with_article(type_name(item))
                        ),
                        item_span(item).or(key_span),
                    )
                    .label("expected an array")
                    .help(format!(
                        "write `{name} = [a, b, ...]`; to fix one value, set it in [{}]",
                        key.section.name()
                    )),
                );
                continue;
            };
            if array.is_empty() {
                self.problems.push(
                    Problem::new(
                        format!("`grid.{name}` is empty: a sweep needs at least one value"),
                        array.span(),
                    )
                    .label("empty list")
                    .help("list the values to try, or remove the key"),
                );
                continue;
            }
            let what = format!("grid value for `{}`", key.full_name());
            let mut values = Vec::new();
            for element in array.iter() {
                match check_value(key, element, &what) {
                    Ok(setting) => values.push(Located::new(setting, element.span())),
                    Err(problem) => self.problems.push(problem),
                }
            }
            if values.len() == array.len() {
                self.grid.push(GridAxis {
                    key,
                    key_span,
                    values,
                });
            }
        }
        // A key both set and swept: the sweep wins; say so, since the fixed value is dead.
        for axis in &self.grid {
            if let Some((_, fixed)) = self
                .values
                .iter()
                .find(|(key, _)| std::ptr::eq(*key, axis.key))
            {
                self.warnings.push(overridden_warning(
                    axis.key,
                    fixed,
                    "swept in [grid]",
                    "the [grid] values",
                ));
            }
        }
    }

    /// Resolves a `[grid]` key: a bare name is a `[train]` key, `section.key` any sweepable key.
    fn grid_key(&mut self, name: &str, span: Option<Range<usize>>) -> Option<&'static Key> {
        match sweepable_key(name, span, &SWEEP_IN_GRID) {
            Ok(key) => Some(key),
            Err(problem) => {
                self.problems.push(problem);
                None
            }
        }
    }
}

/// Where sweepable keys are named, for [`sweepable_key`]'s messages.
pub(crate) struct SweepTable {
    /// `[grid]`, `[search.space]`.
    pub table: &'static str,
    /// `swept in [grid]`, `searched`.
    pub swept: &'static str,
    /// `sweep`, `search`.
    pub verb: &'static str,
    /// `sweeps`, `searches`.
    pub verbs: &'static str,
}

const SWEEP_IN_GRID: SweepTable = SweepTable {
    table: "[grid]",
    swept: "swept in [grid]",
    verb: "sweep",
    verbs: "sweeps",
};

/// Resolves a key named where settings are swept (`[grid]`, `[search.space]`): a bare name is a
/// `[train]` key, `section.key` any sweepable key; otherwise a problem with a did-you-mean.
pub(crate) fn sweepable_key(
    name: &str,
    span: Option<Range<usize>>,
    table: &SweepTable,
) -> Result<&'static Key, Problem> {
    let found = if name.contains('.') {
        schema::find_full(name)
    } else {
        schema::find(Section::Train, name)
    };
    match found {
        Some(key) if key.gridded => Ok(key),
        Some(key) => Err(Problem::new(
            format!("`{}` cannot be {}", key.full_name(), table.swept),
            span,
        )
        .label("not sweepable")
        .help(format!("set it in [{}] instead", key.section.name()))),
        None => {
            let verb = table.verb;
            let help = if let Some((section, inner)) = name.split_once('.') {
                match (section, Section::from_name(section)) {
                    ("labels", _) | ("data", _) if inner == "filter" || section == "labels" => {
                        format!(
                            "[{section}] cannot be {}; write one experiment file per variant",
                            if verb == "sweep" { "swept" } else { "searched" }
                        )
                    }
                    (_, Some(section)) => schema::closest(inner, schema::names_in(section))
                        .map(|suggestion| {
                            format!("did you mean `{}.{suggestion}`?", section.name())
                        })
                        .unwrap_or_else(|| format!("[{}] has no key `{inner}`", section.name())),
                    (_, None) => format!(
                        "{verb} `section.key` with section one of data, model, train; `{section}` is none of them"
                    ),
                }
            } else if let Some(other) = schema::KEYS
                .iter()
                .find(|key| key.name == name && key.gridded && key.section != Section::Train)
            {
                format!(
                    "did you mean `\"{}\"`? bare names {verb} [train] keys",
                    other.full_name()
                )
            } else {
                schema::closest(name, schema::names_in(Section::Train))
                    .map(|suggestion| format!("did you mean `{suggestion}`?"))
                    .unwrap_or_else(|| {
                        format!(
                            "a bare name {} a [train] key; write \"section.key\" for others",
                            table.verbs
                        )
                    })
            };
            Err(
                Problem::new(format!("unknown key `{name}` in {}", table.table), span)
                    .label("unknown key")
                    .help(help),
            )
        }
    }
}

/// The entries of a table where sweepable keys are named, an unquoted dotted key
/// (`model.path = ...`, which TOML makes a nested table) flattened into `model.path`.
pub(crate) fn flattened_entries<'a>(
    table: &TableLike<'a>,
) -> Vec<(String, Option<Range<usize>>, &'a Item)> {
    let mut entries = Vec::new();
    for (name, key_span, item) in table.entries() {
        if let (Some(_), Some(inner)) = (Section::from_name(name), TableLike::of(item))
            && !matches!(item, Item::Value(_))
        {
            for (inner_name, inner_span, inner_item) in inner.entries() {
                entries.push((format!("{name}.{inner_name}"), inner_span, inner_item));
            }
            continue;
        }
        entries.push((name.to_string(), key_span, item));
    }
    entries
}

/// The warning for a key set in its table and also swept (`where_swept`: "swept in [grid]"):
/// the fixed value is dead.
pub(crate) fn overridden_warning(
    key: &Key,
    fixed: &Located<Setting>,
    where_swept: &str,
    winner: &str,
) -> Problem {
    Problem::new(
        format!(
            "`{}` is set in [{}] and {where_swept}; {winner} are used",
            key.full_name(),
            key.section.name()
        ),
        fixed.span.clone(),
    )
    .label("ignored")
}

/// `[model]` names its model one way: `path` (a directory) or `hub` (an id in the Hugging Face
/// cache), exactly one of them, in the table or the grid; `revision` only with `hub`.
fn model_source_rules(
    values: &[(&'static Key, Located<Setting>)],
    grid: &[GridAxis],
    tables_seen: &[(Section, Option<Range<usize>>)],
    is_set: &dyn Fn(&str) -> bool,
    problems: &mut Vec<Problem>,
) {
    let span_of = |full: &str| -> Option<Range<usize>> {
        values
            .iter()
            .find(|(key, _)| key.full_name() == full)
            .and_then(|(_, located)| located.span.clone())
            .or_else(|| {
                grid.iter()
                    .find(|axis| axis.key.full_name() == full)
                    .and_then(|axis| axis.key_span.clone())
            })
    };
    let (path, hub) = (is_set("model.path"), is_set("model.hub"));
    match (path, hub) {
        (true, true) => problems.push(
            Problem::new("`model.path` and `model.hub` are both set", span_of("model.hub"))
                .label("a second model source")
                .help("name the model one way: `path` for a model directory, or `hub = \"org/name\"` for a model in the Hugging Face cache"),
        ),
        (false, false) => {
            let table = tables_seen
                .iter()
                .find(|(section, _)| *section == Section::Model);
            let problem = match table {
                Some((_, span)) => Problem::new(
                    "missing required key `path` or `hub` in [model]",
                    span.clone(),
                ),
                None => Problem::new("missing table [model]: it must set `path` or `hub`", None),
            };
            problems.push(problem.help(
                "add `path = \"...\"` (a Hugging Face model directory: config.json, tokenizer, weights) or `hub = \"org/name\"` (a model in the local Hugging Face cache)",
            ));
        }
        _ => {}
    }
    if is_set("model.revision") && !hub {
        problems.push(
            Problem::new("`model.revision` without `model.hub`", span_of("model.revision"))
                .label("a revision of what?")
                .help("a revision picks a version of a model in the Hugging Face cache: set `hub = \"org/name\"`, or remove `revision`"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ExperimentFile, InputError> {
        ExperimentFile::parse(Path::new("exp.toml"), text)
    }

    const MINIMAL: &str = "name = \"x\"\n[data]\ntrain = \"t.csv\"\n[model]\npath = \"m\"\n";

    fn messages(text: &str) -> Vec<String> {
        parse(text)
            .unwrap_err()
            .problems
            .into_iter()
            .map(|problem| problem.message)
            .collect()
    }

    #[test]
    fn minimal_file_parses() {
        let file = parse(MINIMAL).unwrap();
        assert_eq!(file.name, "x");
        assert_eq!(file.values.len(), 3);
        assert!(file.grid.is_empty());
    }

    #[test]
    fn grid_keeps_written_order_and_accepts_dotted_keys() {
        let text = format!(
            "{MINIMAL}[grid]\nseed = [0, 1]\n\"model.path\" = [\"a\", \"b\"]\ndata.split_seed = [3]\nlearning_rate = [1, 2e-5]\n"
        );
        let file = parse(&text).unwrap();
        let names: Vec<String> = file.grid.iter().map(|axis| axis.key.full_name()).collect();
        assert_eq!(
            names,
            [
                "train.seed",
                "model.path",
                "data.split_seed",
                "train.learning_rate"
            ]
        );
        assert_eq!(file.grid[3].values[0].value, Setting::Float(1.0));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = "name = \"Bad Name\"\n[data]\ntrain = \"t.csv\"\n[model]\npath = \"m\"\n[train]\nlearing_rate = 1\nbatch_size = 0\nepochs = \"3\"\n";
        let found = messages(text);
        assert_eq!(found.len(), 4, "{found:?}");
        assert_eq!(
            found[0],
            "`name` must match [a-z0-9][a-z0-9._-]*, found \"Bad Name\""
        );
        assert!(found[1].contains("unknown key `learing_rate`"));
        assert!(found[2].contains("`train.batch_size` must be at least 1, found 0"));
        assert!(found[3].contains("must be an integer, found a string"));
    }

    #[test]
    fn did_you_mean_for_keys_choices_and_misplaced_keys() {
        let error = parse(&format!(
            "{MINIMAL}[train]\nlearing_rate = 1\nselection_metric = \"acuracy\"\n"
        ))
        .unwrap_err();
        assert_eq!(
            error.problems[0].help.as_deref(),
            Some("did you mean `learning_rate`?")
        );
        assert_eq!(
            error.problems[1].help.as_deref(),
            Some("did you mean \"accuracy\"?")
        );
        let error = parse(&format!("{MINIMAL}[train]\nclassifier_dropout = 0.2\n")).unwrap_err();
        assert_eq!(
            error.problems[0].help.as_deref(),
            Some("`classifier_dropout` belongs in [model]")
        );
    }

    #[test]
    fn out_of_range_nan_and_inf_are_rejected() {
        let found = messages(&format!(
            "{MINIMAL}[train]\nlearning_rate = 0\nwarmup_ratio = nan\nmax_grad_norm = inf\n[grid]\nseed = [-1]\n"
        ));
        assert_eq!(
            found,
            [
                "`train.learning_rate` must be in (0, 1], found 0",
                "`train.warmup_ratio` must be a finite number, found NaN",
                "`train.max_grad_norm` must be a finite number, found inf",
                "grid value for `train.seed` must be at least 0, found -1",
            ]
        );
    }

    #[test]
    fn grid_problems() {
        let found = messages(&format!(
            "{MINIMAL}[grid]\nlearning_rate = []\nbatch = [1]\nclassifier_dropout = [0.1]\ndevice = [\"cpu\"]\nepochs = 3\n"
        ));
        assert_eq!(found.len(), 5, "{found:?}");
        assert!(found[0].contains("is empty"));
        assert!(found[1].contains("unknown key `batch`"));
        assert!(found[2].contains("unknown key `classifier_dropout`"));
        assert!(found[3].contains("cannot be swept"));
        assert!(found[4].contains("must be an array"));
    }

    #[test]
    fn missing_required_keys_and_syntax_errors() {
        let found = messages("name = \"x\"\n[data]\ntext_column = \"t\"\n");
        assert_eq!(
            found,
            [
                "missing required key `train` in [data]",
                "missing table [model]: it must set `path` or `hub`"
            ]
        );
        let found = messages(
            "name = \"x\"\n[data]\ntrain = \"t.csv\"\n[model]\npath = \"m\"\nhub = \"org/m\"\n",
        );
        assert_eq!(found, ["`model.path` and `model.hub` are both set"]);
        let found = messages(
            "name = \"x\"\n[data]\ntrain = \"t.csv\"\n[model]\npath = \"m\"\nrevision = \"v1\"\n",
        );
        assert_eq!(found, ["`model.revision` without `model.hub`"]);
        let swept = parse(
            "name = \"x\"\n[data]\ntrain = \"t.csv\"\n[model]\nrevision = \"v1\"\n[grid]\n\"model.hub\" = [\"org/a\", \"org/b\"]\n",
        );
        assert!(
            swept.is_ok(),
            "`model.hub` swept in the grid names the model: {:?}",
            swept.err().map(|error| error.problems)
        );
        let error = parse("name = \"x\"\n[data\n").unwrap_err();
        assert!(
            error.problems[0].message.starts_with("invalid TOML"),
            "{:?}",
            error.problems
        );
        assert!(error.problems[0].span.is_some());
    }

    #[test]
    fn a_gridded_required_key_need_not_be_set() {
        let text = "name = \"x\"\n[data]\ntrain = \"t.csv\"\n[grid]\n\"model.path\" = [\"a\"]\n";
        assert!(parse(text).is_ok());
    }

    #[test]
    fn labels_must_be_contiguous_ids() {
        let found = messages(&format!("{MINIMAL}[labels]\na = 0\nb = 2\n"));
        assert_eq!(
            found,
            ["class ids in [labels] must be 0..2 without gaps; no label maps to 1"]
        );
        let file = parse(&format!(
            "{MINIMAL}[labels]\npos = 0\npositive = 0\nneg = 1\n"
        ))
        .unwrap();
        assert_eq!(file.labels.unwrap().len(), 3);
    }

    #[test]
    fn filters_are_checked() {
        let file = parse(&format!(
            "{MINIMAL}[[data.filter]]\ncolumn = \"confidence\"\nmin = 0.6\n[[data.filter]]\ncolumn = \"lang\"\nvalues = [\"en\"]\n"
        ))
        .unwrap();
        assert_eq!(file.filters.len(), 2);
        assert_eq!(file.filters[0].value.min, Some(0.6));
        let found = messages(&format!(
            "{MINIMAL}[[data.filter]]\ncolumn = \"c\"\nmin = 2\nmax = 1\n[[data.filter]]\ncolum = \"c\"\n"
        ));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("min 2 above max 1"));
        assert!(found[1].contains("unknown key `colum`"));
    }

    #[test]
    fn set_and_swept_key_warns() {
        let file = parse(&format!(
            "{MINIMAL}[train]\nseed = 1\n[grid]\nseed = [1, 2]\n"
        ))
        .unwrap();
        assert_eq!(file.warnings.len(), 1);
    }

    #[test]
    fn float_format_is_shortest() {
        assert_eq!(format_float(2e-5), "2e-5");
        assert_eq!(format_float(0.00002), "2e-5");
        assert_eq!(format_float(0.1), "0.1");
        assert_eq!(format_float(3.0), "3");
        assert_eq!(format_float(0.0), "0");
    }
}
