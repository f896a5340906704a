//! The `bertlab` binary: parses arguments, dispatches to a command, prints an error once (as a
//! chain, or as located diagnostics for input files) and chooses the exit status, all here.

use std::process::ExitCode;

use bertlab::commands::cli::{HiArgs, LowArgs};
use bertlab::commands::{self, Outcome};
use bertlab::experiment::diagnostics::{InputError, InputErrors};
use clap::Parser;

/// Exit statuses, documented in the README.
const EXIT_FAILURE: u8 = 1;
const EXIT_ERROR: u8 = 2;
const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    bertlab::support::memory::keep_freed_memory();
    let args = HiArgs::from_low(LowArgs::parse());
    let color = args.color_stderr;
    match commands::run(args) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failure) => ExitCode::from(EXIT_FAILURE),
        Ok(Outcome::Interrupted) => ExitCode::from(EXIT_INTERRUPTED),
        Err(error) => {
            if is_broken_pipe(&error) {
                return ExitCode::SUCCESS;
            }
            eprint!("{}", render_error(&error, color));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn render_error(error: &anyhow::Error, color: bool) -> String {
    if let Some(errors) = error.downcast_ref::<InputErrors>() {
        return errors.render(color);
    }
    if let Some(input) = error.downcast_ref::<InputError>() {
        return input.render(color);
    }
    let mut text = format!("error: {error}\n");
    for cause in error.chain().skip(1) {
        text.push_str(&format!("  caused by: {cause}\n"));
    }
    text
}

/// `bertlab plan ... | head` closes our stdout early: not an error.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
