//! `ferry clean --runs older-than AGE`: removes old runs' files and old
//! audits (`state::history::clean`), which may hold clear values, and says
//! what it removed; the run history keeps every run's counts.

use anyhow::Result;

use crate::cli::CleanArgs;
use crate::error::ExitStatus;
use crate::printer::Printer;
use crate::settings::Settings;
use crate::state::history;

pub(crate) fn clean(settings: &Settings, args: &CleanArgs, printer: &Printer) -> Result<ExitStatus> {
    let age = match args.older_than() {
        Ok(age) => age,
        Err(message) => {
            printer.error_summary(&message);
            return Ok(ExitStatus::Error);
        }
    };
    let layout = settings.layout();
    let cleaned = history::clean(&layout, age)?;
    let shown = &args.runs[1];
    for (what, ids, dir) in [("run", &cleaned.runs, layout.runs()), ("audit", &cleaned.audits, layout.audits())] {
        match ids.len() {
            0 => printer.status(&format!("no {what} under `{}/` is older than {shown}", dir.shown)),
            n => printer.status(&format!(
                "removed {n} {what}{} older than {shown} from `{}/`: {}",
                if n == 1 { "" } else { "s" },
                dir.shown,
                ids.join(", ")
            )),
        }
    }
    printer.status("the run history (`.ferry/state/`) keeps their counts");
    Ok(ExitStatus::Success)
}
