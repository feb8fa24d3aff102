//! `ferry deps`: install the packages that `packages.yml` lists.

use anyhow::{Context as _, Result};

use crate::cli::DepsArgs;
use crate::error::ExitStatus;
use crate::printer::Printer;
use crate::settings::Settings;

pub(crate) fn deps(settings: &Settings, args: &DepsArgs, printer: &Printer) -> Result<ExitStatus> {
    let installed = crate::package::deps(&settings.root, args.upgrade).context("ferry deps failed")?;
    let installed = match installed {
        Ok(i) => i,
        Err(diags) => {
            super::report(printer, &diags);
            return Ok(ExitStatus::Failure);
        }
    };
    super::report(printer, &installed.warnings);
    let Some(spec) = &installed.spec_file else {
        printer.status("no packages.yml or dependencies.yml: nothing to install");
        return Ok(ExitStatus::Success);
    };
    for (name, from) in &installed.packages {
        printer.status(&format!("installed {name} from {from}"));
    }
    printer.status(&format!(
        "{} package{} from {spec}, pinned in {}",
        installed.packages.len(),
        if installed.packages.len() == 1 { "" } else { "s" },
        crate::package::LOCK_FILE
    ));
    Ok(ExitStatus::Success)
}
