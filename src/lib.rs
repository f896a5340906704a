//! bertlab: turns labelled text into the best BERT text classifier its user can get, and keeps
//! every experiment reproducible.

pub mod commands;
pub mod data;
pub mod experiment;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod report;
pub mod store;
pub mod support;
pub mod sweep;
pub mod tokenize;
pub mod train;
