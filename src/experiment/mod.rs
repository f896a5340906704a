//! The experiment stage: an experiment file as written, checked, and turned into typed values.
//!
//! Owns: the file format. `schema` (every key: section, type, range, default, whether `[grid]`
//! may sweep it, its meaning; the single source of truth), `setting` (a typed value and the
//! shortest text of a float), `file` (the TOML parsed into an [`ExperimentFile`] with every
//! value's span, checked against the schema, every problem collected at once), `search` (the
//! `[search]` table: its settings, space and pruner, checked and located), `diagnostics`
//! (problems located by span, rendered with file, line, column and a caret) and `grid` (the
//! order of the grid's points, a pure function).
//!
//! Uses: `support`, and no other stage. The order inside: `setting` <- `schema` <- `file` <->
//! `search` (the parser hands `[search]` to `search`, which uses the parser's value checks);
//! `diagnostics` and `grid` stand alone.
//!
//! Never: reads data or model files, touches the run store, or fills in defaults that need the
//! model (that is `plan`'s job).

pub mod diagnostics;
pub mod file;
pub mod grid;
pub mod schema;
pub mod search;
pub mod setting;

pub use file::{ExperimentFile, GridAxis, LabelEntry, RowFilter};
pub use setting::{Setting, format_float};
