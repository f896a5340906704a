//! `bertlab show HASH`: one run's summary (`report::show`) on stdout.

use std::io::Write;

use crate::commands::Outcome;
use crate::store::RunStore;

pub fn execute(store: &RunStore, hash_prefix: &str) -> anyhow::Result<Outcome> {
    let hash = store.resolve(hash_prefix)?;
    let text = crate::report::show::show_text(store, &hash)?;
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(Outcome::Success)
}
