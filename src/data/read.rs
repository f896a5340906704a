//! The read, select-columns and filter steps, through polars: a data file becomes the rows'
//! texts and raw labels (with their 1-based row numbers), keeping only rows that pass every
//! `[[data.filter]]`.
//!
//! CSV and TSV columns are read as text (nothing is guessed: `00123` stays `00123`); a filter on
//! `min`/`max` parses its column as numbers and names the first row that is not one. JSON Lines
//! and Parquet keep their types: the text column must hold strings, and labels of any scalar
//! type are compared as text.

use std::io::Cursor;
use std::path::Path;

use polars::prelude::*;

use crate::experiment::{RowFilter, Setting};
use crate::plan::spec::DataFormat;

/// The rows of one file after filtering: text, raw label and source row, in file order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawRows {
    pub texts: Vec<String>,
    pub labels: Vec<Option<String>>,
    /// 1-based data row in the file (the header is not a row).
    pub rows: Vec<usize>,
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
            JsonReader::new(Cursor::new(bytes))
                .with_json_format(JsonFormat::JsonLines)
                .finish()
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

/// Applies the filters, then keeps the text and label columns.
pub fn select_and_filter(
    frame: &DataFrame,
    text_column_name: &str,
    label_column_name: &str,
    filters: &[RowFilter],
) -> Result<(RawRows, Vec<FilterCount>), ReadError> {
    let rows = frame.height();
    let texts = text_column(frame, text_column_name, "text", true)?;
    let labels = text_column(frame, label_column_name, "label", false)?;
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
    let mut raw = RawRows::default();
    for (index, ((text, label), kept)) in texts.iter().zip(labels.iter()).zip(&keep).enumerate() {
        if *kept {
            raw.texts.push(text.unwrap_or("").to_string());
            raw.labels.push(label.map(str::to_string));
            raw.rows.push(index + 1);
        }
    }
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
