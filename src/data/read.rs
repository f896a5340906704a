//! The read, select-columns and filter steps, through polars: a data file becomes the rows'
//! texts and raw labels (with their 1-based row numbers), keeping only rows that pass every
//! `[[data.filter]]`.
//!
//! CSV and TSV columns are read as text (nothing is guessed: `00123` stays `00123`); a filter on
//! `min`/`max` parses its column as numbers and names the first row that is not one. JSON Lines
//! and Parquet keep their types: the text (and pair) column must hold strings, and labels of any
//! scalar type are compared as text. Multi-label sets come from a list column of strings, or
//! from a text column split at `label_separator`.

use std::io::Cursor;
use std::path::Path;

use polars::prelude::*;

use crate::experiment::{RowFilter, Setting};
use crate::plan::spec::DataFormat;

/// The rows of one file after filtering: text (and second text), raw label or label set, and
/// source row, in file order.
#[derive(Clone, Debug, PartialEq)]
pub struct RawRows {
    pub texts: Vec<String>,
    /// With `text_pair_column`: each row's second text (`None` where the cell is empty).
    pub text_pairs: Option<Vec<Option<String>>>,
    pub labels: RawLabels,
    /// 1-based data row in the file (the header is not a row).
    pub rows: Vec<usize>,
}

/// The label column as read.
#[derive(Clone, Debug, PartialEq)]
pub enum RawLabels {
    /// One label per row (`None`: the cell is empty).
    Single(Vec<Option<String>>),
    /// A set of labels per row: a text column split at the separator, or a list column. An
    /// empty cell (or null) is the empty set.
    Sets {
        sets: Vec<Vec<String>>,
        /// A text column where no cell holds the separator (probably the wrong separator).
        separator_never_seen: bool,
    },
}

/// Which columns to read, and how the label column holds labels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Columns<'a> {
    pub text: &'a str,
    pub text_pair: Option<&'a str>,
    pub label: &'a str,
    /// Multi-label: the separator of a text label column; `None`: one label per row.
    pub label_separator: Option<&'a str>,
}

/// Rows kept by one filter.
#[derive(Clone, Debug, PartialEq)]
pub struct FilterCount {
    pub description: String,
    pub rows_in: usize,
    pub rows_out: usize,
}

/// A problem with a file's columns or values, said in words (the caller adds the file name).
pub type ReadError = String;

/// Reads a file into a frame. `text` is the decoded text of a csv, tsv or jsonl file.
pub fn read_frame(
    path: &Path,
    format: DataFormat,
    text: Option<&str>,
) -> Result<DataFrame, ReadError> {
    read_frame_typed_from(path, format, text, false)
}

/// [`read_frame`]; `every_row`: JSON Lines types come from every row, not the first 100 (label
/// sets: a list column whose first rows are all `[]` is still a list of strings).
pub fn read_frame_typed_from(
    path: &Path,
    format: DataFormat,
    text: Option<&str>,
    every_row: bool,
) -> Result<DataFrame, ReadError> {
    let result = match format {
        DataFormat::Csv | DataFormat::Tsv => {
            let bytes = text
                .expect("text formats are decoded first")
                .as_bytes()
                .to_vec();
            CsvReadOptions::default()
                .with_has_header(true)
                .with_infer_schema_length(Some(0)) // every column as text
                .map_parse_options(|options| {
                    options.with_separator(if format == DataFormat::Tsv {
                        b'\t'
                    } else {
                        b','
                    })
                })
                .into_reader_with_file_handle(Cursor::new(bytes))
                .finish()
        }
        DataFormat::Jsonl => {
            let bytes = text
                .expect("text formats are decoded first")
                .as_bytes()
                .to_vec();
            let reader =
                JsonReader::new(Cursor::new(bytes)).with_json_format(JsonFormat::JsonLines);
            if every_row {
                reader.infer_schema_len(None).finish()
            } else {
                reader.finish()
            }
        }
        DataFormat::Parquet => match std::fs::File::open(path) {
            Ok(file) => ParquetReader::new(file).finish(),
            Err(error) => return Err(format!("cannot open it: {error}")),
        },
    };
    result.map_err(|error| format!("cannot read it as {format}: {error}"))
}

fn column_names(frame: &DataFrame) -> String {
    frame
        .get_column_names()
        .iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The column as text; numbers and booleans become their text, nested values are an error.
fn text_column(
    frame: &DataFrame,
    name: &str,
    role: &str,
    strict: bool,
) -> Result<StringChunked, ReadError> {
    let column = frame.column(name).map_err(|_| {
        format!(
            "has no {role} column `{name}`; its columns are {}",
            column_names(frame)
        )
    })?;
    let dtype = column.dtype().clone();
    if strict && dtype != DataType::String && dtype != DataType::Null {
        return Err(format!(
            "its {role} column `{name}` holds {dtype}, not text; point `{role}_column` at the column of texts"
        ));
    }
    if dtype.is_nested() {
        return Err(format!(
            "its {role} column `{name}` holds {dtype}, not single values"
        ));
    }
    let cast = column
        .cast(&DataType::String)
        .map_err(|error| format!("cannot read column `{name}` as text: {error}"))?;
    Ok(cast.str().map_err(|error| error.to_string())?.clone())
}

/// A multi-label column's label sets: a list column's strings (a list of anything else is an
/// error naming the first row that holds one), or a text column split at `separator`.
fn label_sets(
    frame: &DataFrame,
    name: &str,
    separator: &str,
) -> Result<(Vec<Vec<String>>, bool), ReadError> {
    let column = frame.column(name).map_err(|_| {
        format!(
            "has no label column `{name}`; its columns are {}",
            column_names(frame)
        )
    })?;
    if let DataType::List(inner) = column.dtype() {
        let lists = column.list().map_err(|error| error.to_string())?;
        let inner = inner.as_ref().clone();
        let mut sets = Vec::with_capacity(lists.len());
        for index in 0..lists.len() {
            let Some(list) = lists.get_as_series(index) else {
                sets.push(Vec::new());
                continue;
            };
            if list.is_empty() || inner == DataType::Null {
                sets.push(Vec::new());
                continue;
            }
            if inner != DataType::String {
                let shown = list
                    .get(0)
                    .map_or_else(|_| "a value".to_string(), |value| value.to_string());
                return Err(format!(
                    "row {}: the label column `{name}` holds a list of {inner} (such as {shown}), not of strings; labels are names: write them as strings, such as [\"sports\", \"politics\"]",
                    index + 1
                ));
            }
            let strings = list.str().map_err(|error| error.to_string())?;
            sets.push(strings.iter().flatten().map(str::to_string).collect());
        }
        return Ok((sets, false));
    }
    if column.dtype().is_nested() {
        return Err(format!(
            "its label column `{name}` holds {}, not label sets; give a list of strings or a text of labels separated by `label_separator`",
            column.dtype()
        ));
    }
    let texts = text_column(frame, name, "label", false)?;
    let mut seen = false;
    let sets = texts
        .iter()
        .map(|value| match value {
            None => Vec::new(),
            Some(value) => {
                seen |= value.contains(separator);
                value.split(separator).map(str::to_string).collect()
            }
        })
        .collect();
    Ok((sets, !seen))
}

/// Applies the filters, then keeps the text, pair and label columns.
pub fn select_and_filter(
    frame: &DataFrame,
    columns: Columns,
    filters: &[RowFilter],
) -> Result<(RawRows, Vec<FilterCount>), ReadError> {
    let rows = frame.height();
    let texts = text_column(frame, columns.text, "text", true)?;
    let pairs = columns
        .text_pair
        .map(|name| text_column(frame, name, "text_pair", true))
        .transpose()?;
    let labels = match columns.label_separator {
        None => Some(text_column(frame, columns.label, "label", false).map_err(|message| {
            if frame
                .column(columns.label)
                .is_ok_and(|column| column.dtype().is_nested())
            {
                format!("{message}; if each text has a set of labels, set label_format = \"multi\" in [data]")
            } else {
                message
            }
        })?),
        Some(_) => None,
    };
    let sets = columns
        .label_separator
        .map(|separator| label_sets(frame, columns.label, separator))
        .transpose()?;
    let mut keep = vec![true; rows];
    let mut counts = Vec::new();
    for filter in filters {
        let rows_in = keep.iter().filter(|kept| **kept).count();
        let passes = filter_mask(frame, filter)?;
        for (kept, pass) in keep.iter_mut().zip(passes) {
            *kept &= pass;
        }
        counts.push(FilterCount {
            description: describe(filter),
            rows_in,
            rows_out: keep.iter().filter(|kept| **kept).count(),
        });
    }
    let kept: Vec<usize> = (0..rows).filter(|&index| keep[index]).collect();
    let texts: Vec<Option<&str>> = texts.iter().collect();
    let raw = RawRows {
        texts: kept
            .iter()
            .map(|&index| texts[index].unwrap_or("").to_string())
            .collect(),
        text_pairs: pairs.map(|pairs| {
            let pairs: Vec<Option<&str>> = pairs.iter().collect();
            kept.iter()
                .map(|&index| pairs[index].map(str::to_string))
                .collect()
        }),
        labels: match (labels, sets) {
            (Some(labels), _) => {
                let labels: Vec<Option<&str>> = labels.iter().collect();
                RawLabels::Single(
                    kept.iter()
                        .map(|&index| labels[index].map(str::to_string))
                        .collect(),
                )
            }
            (None, Some((mut sets, separator_never_seen))) => RawLabels::Sets {
                sets: kept
                    .iter()
                    .map(|&index| std::mem::take(&mut sets[index]))
                    .collect(),
                separator_never_seen,
            },
            (None, None) => unreachable!("one of the two label readings ran"),
        },
        rows: kept.iter().map(|&index| index + 1).collect(),
    };
    Ok((raw, counts))
}

/// `confidence >= 0.6`, `lang in ["en", "de"]`.
pub fn describe(filter: &RowFilter) -> String {
    use crate::experiment::format_float;
    match (&filter.values, filter.min, filter.max) {
        (Some(values), _, _) => {
            let shown: Vec<String> = values
                .iter()
                .map(|value| match value {
                    Setting::Text(text) => format!("\"{text}\""),
                    other => other.to_string(),
                })
                .collect();
            format!("{} in [{}]", filter.column, shown.join(", "))
        }
        (None, Some(min), Some(max)) => format!(
            "{} <= {} <= {}",
            format_float(min),
            filter.column,
            format_float(max)
        ),
        (None, Some(min), None) => format!("{} >= {}", filter.column, format_float(min)),
        (None, None, Some(max)) => format!("{} <= {}", filter.column, format_float(max)),
        (None, None, None) => filter.column.clone(),
    }
}

/// Which rows pass one filter. Rows with no value in the column never pass.
fn filter_mask(frame: &DataFrame, filter: &RowFilter) -> Result<Vec<bool>, ReadError> {
    let name = filter.column.as_str();
    let column = frame.column(name).map_err(|_| {
        format!(
            "has no column `{name}` to filter on; its columns are {}",
            column_names(frame)
        )
    })?;
    if let Some(values) = &filter.values {
        let wanted: Vec<String> = values.iter().map(Setting::to_string).collect();
        let text = text_column(frame, name, "filter", false)?;
        return Ok(text
            .iter()
            .map(|value| value.is_some_and(|value| wanted.iter().any(|w| w == value)))
            .collect());
    }
    let numbers: Vec<Option<f64>> = if column.dtype().is_primitive_numeric() {
        let cast = column
            .cast(&DataType::Float64)
            .map_err(|error| error.to_string())?;
        cast.f64()
            .map_err(|error| error.to_string())?
            .iter()
            .collect()
    } else {
        let text = text_column(frame, name, "filter", false)?;
        let mut numbers = Vec::with_capacity(text.len());
        for (index, value) in text.iter().enumerate() {
            numbers.push(match value.map(str::trim) {
                None | Some("") => None,
                Some(value) => Some(value.parse::<f64>().map_err(|_| {
                    format!(
                        "row {}: column `{name}` holds \"{value}\", not a number, so the filter `{}` cannot compare it",
                        index + 1,
                        describe(filter)
                    )
                })?),
            });
        }
        numbers
    };
    Ok(numbers
        .into_iter()
        .map(|value| {
            value.is_some_and(|value| {
                filter.min.is_none_or(|min| value >= min)
                    && filter.max.is_none_or(|max| value <= max)
            })
        })
        .collect())
}
