//! `ferry report`: writes a run's sign-off report (`crate::report`) and
//! says where it is.

use anyhow::{Context as _, Result};

use crate::cli::ReportArgs;
use crate::error::ExitStatus;
use crate::printer::Printer;
use crate::report::{self, ReportError, Which};
use crate::settings::Settings;
use crate::state::Layout;

pub(crate) async fn report(settings: &Settings, args: &ReportArgs, printer: &Printer) -> Result<ExitStatus> {
    write_and_say(&settings.layout(), &Which::parse(&args.run), printer).await
}

/// Writes the report of run `which` and prints its path; a run that is
/// not recorded is the user's error (exit 1).
pub(crate) async fn write_and_say(layout: &Layout, which: &Which, printer: &Printer) -> Result<ExitStatus> {
    match report::write(layout, which).await {
        Ok(written) => {
            printer.status(&format!("wrote the report of run {} to {}", written.run_id, written.file.shown));
            Ok(ExitStatus::Success)
        }
        Err(e @ (ReportError::NoRuns(_) | ReportError::UnknownRun { .. })) => {
            printer.error_summary(&e.to_string());
            Ok(ExitStatus::Failure)
        }
        Err(e) => Err(e).context("failed to write the run's report"),
    }
}
