//! `bertlab device-check`: a device against the CPU on a small model (`train::device_check`); the
//! table on stdout, exit status 1 when a check fails.

use std::io::Write;

use crate::commands::Outcome;

/// `bertlab device-check`: the table on stdout; exit status 1 when a check fails.
pub fn execute(options: &crate::commands::cli::DeviceCheckArgs) -> anyhow::Result<Outcome> {
    let device = crate::train::device::resolve(options.device)?;
    eprintln!("checking {} against the CPU", device.label);
    let lines = crate::train::device_check::check_device(&options.model, &device)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(crate::train::device_check::report_text(&device.label, &lines).as_bytes())?;
    Ok(if lines.iter().all(|line| line.passed()) {
        Outcome::Success
    } else {
        Outcome::Failure
    })
}
