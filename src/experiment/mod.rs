//! The experiment stage.
pub mod diagnostics;
pub mod file;
pub mod grid;
pub mod schema;

pub use file::{
    ExperimentFile, GridAxis, LabelEntry, RowFilter, Setting, check_value, describe_range,
    format_float,
};
