//! `ferry reconcile` (and the summary of `ferry build`'s last step): for
//! every loaded model, the stage compared with the target table, shown as
//! PASS/FAIL per check with the exact differing keys and columns, and the
//! report file under `.ferry/runs/<run id>/reconcile.json`.

use std::time::Instant;

use anyhow::Result;
use camino::Utf8Path;

use super::render::reconcile_event;
use crate::backend::checksum::SideChoice;
use crate::cli::ReconcileArgs;
use crate::diagnostic::{Code, Diagnostic, did_you_mean};
use crate::error::ExitStatus;
use crate::load;
use crate::manifest::config::ReconcileConfig;
use crate::manifest::{NodeId, Resource};
use crate::printer::Printer;
use crate::reconcile::{self as rec, Reconciled};
use crate::run::Prepared;
use crate::settings::Settings;
use crate::values::TableName;

pub(crate) async fn reconcile(settings: &Settings, args: &ReconcileArgs, printer: &Printer) -> Result<ExitStatus> {
    let started = Instant::now();
    let Some(prepared) = super::prepare_or_report(settings, "reconcile", printer)? else {
        return Ok(ExitStatus::Failure);
    };
    super::report(printer, &prepared.diagnostics);
    if let (Some(source), Some(table)) = (&args.source, &args.target_table) {
        return reconcile_source(&prepared, args, (source, table), printer, started).await;
    }
    let manifest = &prepared.manifest;
    let Some(selected) = super::selected_or_report(manifest, &args.select, printer) else {
        return Ok(ExitStatus::Failure);
    };
    let loaded = load::loadable(manifest, selected);
    if loaded.is_empty() {
        printer.status("nothing to reconcile: no selected table model or seed is loaded");
        return Ok(ExitStatus::Success);
    }
    let ledgers = rec::ledgers_of_last_run(&prepared.layout, &prepared.stages, manifest).await;
    let side = args.side.as_deref().and_then(SideChoice::parse);
    let on = |e: rec::ReconcileEvent<'_>| reconcile_event(printer, e);
    let done = rec::reconcile_nodes(
        &prepared.target,
        manifest,
        &loaded,
        &crate::load::Stages::at(&prepared.stages),
        (&ledgers, side),
        &on,
    )
    .await;
    write_and_finish(&prepared, &done, printer, started)
}

/// `ferry reconcile --source s.t --target-table x`: the source, read into a
/// temporary stage, compared with a table of the target.
async fn reconcile_source(
    prepared: &Prepared,
    args: &ReconcileArgs,
    (source, table): (&str, &str),
    printer: &Printer,
    started: Instant,
) -> Result<ExitStatus> {
    let found = find_source(prepared, source).and_then(|i| Ok((i, parse_table(table, prepared.target.schema())?)));
    let (i, target) = match found {
        Ok(found) => found,
        Err(d) => {
            super::report(printer, &[*d]);
            return Ok(ExitStatus::Failure);
        }
    };
    let engine = super::engine_for(prepared, &args.exec)?;
    let config = ReconcileConfig {
        columns: args.columns.clone(),
        max_mismatch_rows: args.max_mismatch_rows,
        tolerance: args.tolerance,
        side: args.side.as_deref().and_then(SideChoice::parse).unwrap_or_default(),
        ..ReconcileConfig::default()
    };
    let on = |e: rec::ReconcileEvent<'_>| reconcile_event(printer, e);
    let context = (&engine, &*prepared.manifest, &prepared.target);
    match rec::reconcile_source(context, i, (target, args.key.clone()), &config, &on).await? {
        Ok(done) => write_and_finish(prepared, &done, printer, started),
        Err(diagnostics) => {
            super::report(printer, &diagnostics);
            Ok(ExitStatus::Failure)
        }
    }
}

/// The source `--source` names, or a diagnostic that suggests one.
fn find_source(prepared: &Prepared, source: &str) -> Result<NodeId, Box<Diagnostic>> {
    let manifest = &prepared.manifest;
    let sources: Vec<(NodeId, String)> = manifest
        .iter()
        .filter(|(_, n)| matches!(n.resource, Resource::Source(_)))
        .map(|(i, n)| (i, n.display_name()))
        .collect();
    if let Some((i, _)) = sources.iter().find(|(_, name)| name == source) {
        return Ok(*i);
    }
    let names: Vec<&str> = sources.iter().map(|(_, n)| n.as_str()).collect();
    let d = Diagnostic::error(Code::Selector, format!("`--source {source}` names no source of this project"));
    Err(Box::new(match did_you_mean(source, names.iter().copied()) {
        Some(hint) => d.with_help(hint),
        None if names.is_empty() => d.with_help("declare sources under `sources:` in a schema .yml file"),
        None => {
            d.with_help(format!("the sources are {}", names.iter().take(10).copied().collect::<Vec<_>>().join(", ")))
        }
    }))
}

/// `table` or `schema.table` (the target's schema by default).
fn parse_table(text: &str, default_schema: &str) -> Result<TableName, Box<Diagnostic>> {
    let parts: Vec<&str> = text.split('.').collect();
    match parts.as_slice() {
        [name] if !name.is_empty() => Ok(TableName { schema: default_schema.to_owned(), name: (*name).to_owned() }),
        [schema, name] if !schema.is_empty() && !name.is_empty() => {
            Ok(TableName { schema: (*schema).to_owned(), name: (*name).to_owned() })
        }
        _ => Err(Box::new(Diagnostic::error(
            Code::Selector,
            format!("`--target-table {text}` must be `table` or `schema.table`"),
        ))),
    }
}

fn write_and_finish(prepared: &Prepared, done: &Reconciled, printer: &Printer, started: Instant) -> Result<ExitStatus> {
    let run = prepared.layout.run(&prepared.manifest.globals.invocation_id);
    rec::write_report(done, &run)?;
    finish(done, &run.join("reconcile.json").shown, printer, started.elapsed().as_secs_f64())
}

/// Prints what reconciling found (the report file `shown` written) and
/// picks the exit status.
pub(crate) fn finish(done: &Reconciled, shown: &Utf8Path, printer: &Printer, elapsed: f64) -> Result<ExitStatus> {
    super::report(printer, &done.diagnostics);
    if done.reports.is_empty() {
        return Ok(if done.diagnostics.is_empty() { ExitStatus::Success } else { ExitStatus::Failure });
    }
    if printer.is_json() {
        for r in done.reports.values() {
            printer.data(&serde_json::to_string(r)?)?;
        }
    }
    let (failed, passed) = (done.failed(), done.passed());
    if failed == 0 && done.diagnostics.is_empty() {
        printer.status(&format!(
            "reconciled {passed} table{} in {elapsed:.2}s: the target holds exactly what was staged (report: {shown})",
            if passed == 1 { "" } else { "s" }
        ));
        Ok(ExitStatus::Success)
    } else {
        printer.error_summary(&format!(
            "{failed} table{} did not reconcile, {passed} did (report: {shown})",
            if failed == 1 { "" } else { "s" }
        ));
        Ok(ExitStatus::Failure)
    }
}
