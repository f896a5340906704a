//! bertlab: turns labelled text into the best BERT text classifier its user can get, and keeps
//! every experiment reproducible.
//!
//! Pipeline stages, dependencies flowing one way:
//! experiment file (`schema`, `experiment`) -> plan (`grid`, `plan`, `spec`, `fingerprint`,
//! `model_directory`) -> run store (`store`) -> report (`report`). `cli` and `commands` sit on
//! top; `diagnostics` and `atomic_file` serve every stage.

pub mod atomic_file;
pub mod cli;
pub mod commands;
pub mod diagnostics;
pub mod experiment;
pub mod fingerprint;
pub mod grid;
pub mod model_directory;
pub mod plan;
pub mod report;
pub mod schema;
pub mod spec;
pub mod store;
