//! `bertlab report`: the HTML report page, and `curves.svg` in every finished run's directory.

use crate::commands::{Outcome, select_rows};
use crate::store::RunStore;

/// `bertlab report`: the HTML page, and `curves.svg` in every finished run's directory.
pub fn execute(
    store: &RunStore,
    options: &crate::commands::cli::ReportArgs,
    color: bool,
) -> anyhow::Result<Outcome> {
    use crate::report::html;
    let rows = select_rows(store, &options.selection, color)?;
    for row in &rows {
        if row.result.is_some() {
            let directory = store.run_directory(&row.hash);
            let metrics = crate::store::run_files::read_metrics(&directory)?;
            crate::support::atomic_file::write(
                &directory.join("curves.svg"),
                html::run_curves_svg(&metrics)?.as_bytes(),
            )?;
        }
    }
    let frame =
        crate::report::results_table::only_changed(crate::report::results_table::frame(&rows)?)?;
    let (headers, cells) = crate::report::results_table::text_cells(&frame)?;
    // The searches whose trials are among the rows.
    let searches: Vec<crate::search::SearchRecord> = crate::search::read_records(store)?
        .into_iter()
        .filter(|record| {
            record.trials.iter().any(|trial| {
                trial
                    .run
                    .as_deref()
                    .is_some_and(|run| rows.iter().any(|row| row.hash.as_str() == run))
            })
        })
        .collect();
    let html = html::report_html(store, &rows, &headers, &cells, &searches)?;
    crate::support::atomic_file::write(&options.output, html.as_bytes())?;
    eprintln!(
        "wrote {} ({}); curves.svg in each finished run's directory",
        options.output.display(),
        crate::report::tables::count_of(rows.len(), "run")
    );
    Ok(Outcome::Success)
}
