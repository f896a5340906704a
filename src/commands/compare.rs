//! `bertlab compare HASH HASH...`: what differs between runs, their figures side by side
//! (`report::compare`).

use std::io::Write;

use crate::commands::Outcome;
use crate::commands::cli::CompareArgs;
use crate::store::RunStore;

pub fn execute(store: &RunStore, options: &CompareArgs) -> anyhow::Result<Outcome> {
    let hashes = options
        .hashes
        .iter()
        .map(|prefix| store.resolve(prefix))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let text = crate::report::compare::compare_text(store, &hashes)?;
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(Outcome::Success)
}
