//! `bertlab results`: the results table of the store's runs (or of the runs the experiment files
//! plan), filtered, grouped, sorted and exported.

use std::io::Write;

use crate::commands::{Outcome, select_rows};
use crate::store::RunStore;

/// `bertlab results`.
pub fn execute(
    store: &RunStore,
    options: &crate::commands::cli::ResultsArgs,
    color: bool,
) -> anyhow::Result<Outcome> {
    use crate::commands::cli::ResultsFormat;
    use crate::report::results_table;
    use std::io::IsTerminal;

    let rows = select_rows(store, &options.selection, color)?;
    let mut frame = results_table::frame(&rows)?;
    if let Some(expression) = &options.where_ {
        frame = results_table::filter(frame, &results_table::parse_where(expression)?)?;
    }
    if options.group_seeds {
        frame = results_table::group_seeds(frame)?;
    }
    let for_people = matches!(options.format, ResultsFormat::Table | ResultsFormat::Md);
    if options.only_changed || (for_people && !options.all_columns) {
        frame = results_table::only_changed(frame)?;
    }
    if let Some(column) = &options.sort {
        frame = results_table::sort(frame, column)?;
    }
    let bytes = match options.format {
        ResultsFormat::Table => results_table::table_text(&frame)?.into_bytes(),
        ResultsFormat::Md => results_table::table_markdown(&frame)?.into_bytes(),
        ResultsFormat::Csv => results_table::table_csv(&mut frame)?,
        ResultsFormat::Json => results_table::table_json(&mut frame)?,
        ResultsFormat::Parquet => {
            if options.output.is_none() && std::io::stdout().is_terminal() {
                anyhow::bail!(
                    "parquet is binary: give --output FILE, or redirect stdout to a file"
                );
            }
            results_table::table_parquet(&mut frame)?
        }
    };
    match &options.output {
        Some(path) => crate::support::atomic_file::write(path, &bytes)?,
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&bytes)?;
            stdout.flush()?;
        }
    }
    eprintln!("{}", crate::report::tables::count_of(frame.height(), "row"));
    Ok(Outcome::Success)
}
