//! bertlab: turns labelled text into the best BERT text classifier its user can get, and keeps
//! every experiment reproducible.
//!
//! One module per pipeline stage, dependencies flowing one way (docs/architecture.md has the map,
//! what each stage owns and where a typical change goes; `tests/architecture.rs` keeps the arrows
//! one way):
//!
//! `support` <- `experiment` (the file as written) <- `plan` (runs, specs, hashes) <- `data`
//! (decode, clean, split) <- `tokenize` (ids, batches, the preprocessing cache) <- `model` (the
//! classifier; it uses `support` alone) <- `metrics` <- `store` (run directories, claims, run
//! files, the results index) <- `train` (one run) <- `search` (trials proposed and settled from
//! the store) <- `sweep` (a plan carried out) <- `report`
//! (tables, compare, HTML) <- `commands` (one file per verb, and the command line).

pub mod commands;
pub mod data;
pub mod experiment;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod report;
pub mod search;
pub mod store;
pub mod support;
pub mod sweep;
pub mod tokenize;
pub mod train;
