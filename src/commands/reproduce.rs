//! `bertlab reproduce HASH`: trains a run again in a scratch store and says whether it reproduced
//! (`sweep::reproduce`).

use std::io::Write;

use anyhow::Context;

use crate::commands::{Outcome, interrupt_flag};
use crate::store::RunStore;

/// `bertlab reproduce`.
pub fn execute(
    store: &RunStore,
    options: &crate::commands::cli::ReproduceArgs,
) -> anyhow::Result<Outcome> {
    use std::io::IsTerminal;
    let hash = store.resolve(&options.hash)?;
    let interrupt = interrupt_flag()?;
    let temporary;
    let scratch = match &options.keep {
        Some(folder) => folder.clone(),
        None => {
            temporary = tempfile::Builder::new()
                .prefix("bertlab-reproduce-")
                .tempdir()
                .context("cannot create a scratch folder")?;
            temporary.path().to_path_buf()
        }
    };
    eprintln!("reproducing run {} in {}", hash.short(), scratch.display());
    let mut progress = crate::support::progress::Progress::new(std::io::stderr().is_terminal());
    let verdict = crate::sweep::reproduce::reproduce(
        store,
        &hash,
        &scratch,
        options.tolerance,
        &interrupt,
        &mut progress,
    )?;
    drop(progress);
    let Some(verdict) = verdict else {
        return Ok(Outcome::Interrupted);
    };
    let mut stdout = std::io::stdout().lock();
    for line in &verdict.lines {
        writeln!(stdout, "{line}")?;
    }
    writeln!(
        stdout,
        "{}",
        if verdict.reproduced {
            format!("run {} reproduced", hash.short())
        } else {
            format!("run {} NOT reproduced", hash.short())
        }
    )?;
    Ok(if verdict.reproduced {
        Outcome::Success
    } else {
        Outcome::Failure
    })
}
