//! The report stage: what the user reads about runs, as pure functions from rows and run files to
//! text and bytes, so that every format is snapshot-tested without training anything.
//!
//! Owns: `tables` (the text table every command prints, the plan's and the data report's
//! exporters), `results_table` (the polars frame of the store's runs: `--where`, sorting,
//! `--only-changed`, `--group-seeds`, and the table, markdown, CSV, JSON and Parquet exporters),
//! `search` (a search's trials as a table, a summary line, CSV and the report's charts),
//! `compare` (what differs between runs, figures side by side), `show` (one run's summary) and
//! `html` (the HTML report page and the learning curves as SVG).
//!
//! Uses: every stage below it (above all the store's rows and run files; the model's
//! `config.json` for class names). Never uses: `commands`; and it writes no file: the commands
//! decide where the bytes go.

pub mod compare;
pub mod html;
pub mod results_table;
pub mod search;
pub mod show;
pub mod tables;
