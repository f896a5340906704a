//! The report stage.
pub mod compare;
pub mod html;
pub mod results_table;
pub mod show;
pub mod tables;
