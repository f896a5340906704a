//! bertlab: turns labelled text into the best BERT text classifier its user can get, and keeps
//! every experiment reproducible.
//!
//! Pipeline stages, dependencies flowing one way:
//! experiment file (`schema`, `experiment`) -> plan (`grid`, `plan`, `spec`, `fingerprint`,
//! `model_directory`) -> data (`data`) -> tokenize (`tokenizer`, `wordpiece`, `preprocess`) ->
//! model (`model`) -> train (`optimizer`, `metrics`, `train`; `bench` measures its speed) ->
//! run store (`store`, `run_files`, `sweep`) -> report (`report`). `cli` and `commands` sit on top; `diagnostics`,
//! `atomic_file`, `progress`, `memory` (the allocator's settings) and `random` (every seeded
//! draw) serve every stage.

pub mod atomic_file;
pub mod bench;
pub mod cli;
pub mod commands;
pub mod data;
pub mod device;
pub mod device_check;
pub mod diagnostics;
pub mod experiment;
pub mod fingerprint;
pub mod grid;
pub mod html_report;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod model_directory;
pub mod optimizer;
pub mod plan;
pub mod predict;
pub mod preprocess;
pub mod progress;
pub mod random;
pub mod report;
pub mod reproduce;
pub mod results;
pub mod run_files;
pub mod schema;
pub mod spec;
pub mod store;
pub mod sweep;
pub mod tokenizer;
pub mod train;
pub mod wordpiece;
