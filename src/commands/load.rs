//! `ferry load` (loads the latest stages, or prints what a load would run
//! with `--dry-run`) and `ferry rollback`: calls to `crate::load`, shown.

use std::time::Instant;

use anyhow::Result;

use super::render::{LoadLines, group};
use crate::cli::{LoadArgs, RollbackArgs};
use crate::diagnostic::{Code, Diagnostic};
use crate::error::ExitStatus;
use crate::load::{self, Loads};
use crate::printer::Printer;
use crate::settings::Settings;

pub(crate) async fn load(settings: &Settings, args: &LoadArgs, printer: &Printer) -> Result<ExitStatus> {
    let started = Instant::now();
    let Some(prepared) = super::prepare_or_report(settings, "load", printer)? else {
        return Ok(ExitStatus::Failure);
    };
    super::report(printer, &prepared.diagnostics);
    let manifest = &prepared.manifest;
    let Some(selected) = super::selected_or_report(manifest, &args.select, printer) else {
        return Ok(ExitStatus::Failure);
    };
    let loadable = load::loadable(manifest, selected);
    if loadable.is_empty() {
        printer.status("nothing to load: no selected table model or seed has a stage to load");
        return Ok(ExitStatus::Success);
    }
    if args.dry_run {
        return dry_run(&prepared, &loadable, printer).await;
    }
    let lines = LoadLines::new(printer);
    let loads = load::load_nodes(&prepared.target, manifest, &loadable, &load::Stages::at(&prepared.stages), &|e| {
        lines.event(e)
    })
    .await;
    summarize(&loads, printer, started)
}

/// Prints the loads' results and picks the exit status.
fn summarize(loads: &Loads, printer: &Printer, started: Instant) -> Result<ExitStatus> {
    super::report(printer, &loads.diagnostics);
    if loads.interrupted {
        printer.error_summary("interrupted: the table being loaded was left as it was");
        return Ok(ExitStatus::Interrupted);
    }
    let failed = loads.results.values().filter(|r| r.is_err()).count();
    let ok: Vec<u64> = loads.results.values().filter_map(|r| r.as_ref().ok()).map(|r| r.rows).collect();
    if failed == 0 {
        printer.status(&format!(
            "loaded {} table{} ({} rows) in {:.2}s",
            ok.len(),
            if ok.len() == 1 { "" } else { "s" },
            group(ok.iter().sum()),
            started.elapsed().as_secs_f64()
        ));
        Ok(ExitStatus::Success)
    } else {
        printer.error_summary(&format!(
            "{failed} load{} failed, {} succeeded",
            if failed == 1 { "" } else { "s" },
            ok.len()
        ));
        Ok(ExitStatus::Failure)
    }
}

async fn dry_run(
    prepared: &crate::run::Prepared,
    nodes: &std::collections::BTreeSet<crate::manifest::NodeId>,
    printer: &Printer,
) -> Result<ExitStatus> {
    let plans = match load::dry_run(&prepared.target, &prepared.manifest, nodes, &prepared.stages).await {
        Ok(plans) => plans,
        Err(d) => {
            super::report(printer, &[*d]);
            return Ok(ExitStatus::Failure);
        }
    };
    let mut failed = false;
    for plan in plans {
        match plan {
            Ok((job, statements)) => {
                printer.data(&format!(
                    "-- {}: {} rows, mode {}, into {} ({})",
                    job.model,
                    job.rows(),
                    job.mode.name(),
                    job.table,
                    prepared.target.type_name()
                ))?;
                for sql in statements {
                    match sql.split_once("  -- ") {
                        Some((sql, comment)) => printer.data(&format!("{sql};  -- {comment}"))?,
                        None => printer.data(&format!("{sql};"))?,
                    }
                }
                printer.data("")?;
            }
            Err(d) => {
                failed = true;
                super::report(printer, &[*d]);
            }
        }
    }
    printer.status("dry run: nothing was changed in the target");
    Ok(if failed { ExitStatus::Failure } else { ExitStatus::Success })
}

pub(crate) async fn rollback(settings: &Settings, args: &RollbackArgs, printer: &Printer) -> Result<ExitStatus> {
    let Some(prepared) = super::prepare_or_report(settings, "rollback", printer)? else {
        return Ok(ExitStatus::Failure);
    };
    let manifest = &prepared.manifest;
    let Some(selected) = super::selected_or_report(manifest, &args.select, printer) else {
        return Ok(ExitStatus::Failure);
    };
    let targets = match load::rollback_targets(manifest, &selected) {
        Ok(t) => t,
        Err(d) => {
            super::report(printer, &[*d]);
            return Ok(ExitStatus::Failure);
        }
    };
    if targets.is_empty() {
        super::report(
            printer,
            &[Diagnostic::error(Code::Load, "nothing to roll back: the selection has no loaded table model or seed")
                .with_help("select a model: `ferry rollback -s orders`")],
        );
        return Ok(ExitStatus::Failure);
    }
    let done = match load::rollback(&prepared.target, targets).await {
        Ok(done) => done,
        Err(d) => {
            super::report(printer, &[*d]);
            return Ok(ExitStatus::Failure);
        }
    };
    let mut failed = false;
    for r in done {
        match r.result {
            Ok(()) => printer.status(&format!("rolled back {}: `{}` is the previous load again", r.model, r.table)),
            Err(d) => {
                failed = true;
                super::report(printer, &[*d]);
            }
        }
    }
    Ok(if failed { ExitStatus::Failure } else { ExitStatus::Success })
}
