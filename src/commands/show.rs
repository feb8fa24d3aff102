//! `ferry show`: preview the rows of one model, or of inline SQL, as a
//! table on stdout (or JSON rows with `--format json`), through
//! `run::preview`.

use anyhow::Result;

use crate::cli::ShowArgs;
use crate::diagnostic::{Code, Diagnostic};
use crate::error::ExitStatus;
use crate::manifest::{Manifest, NodeId, Resource};
use crate::printer::Printer;
use crate::run::{self as pipeline, Preview, Rows};
use crate::settings::Settings;

pub(crate) async fn show(settings: &Settings, args: &ShowArgs, printer: &Printer) -> Result<ExitStatus> {
    let Some(prepared) = super::prepare_or_report(settings, "show", printer)? else {
        return Ok(ExitStatus::Failure);
    };
    let manifest = &prepared.manifest;
    let preview = match &args.inline {
        Some(text) => Preview::inline(manifest, text).map_err(|d| super::report(printer, &[*d])).ok(),
        None => one_node(manifest, args, printer).map(|i| {
            if manifest[i].is_checked() {
                super::report(printer, &[unchecked(&manifest[i].name)]);
            }
            Preview::node(manifest, i)
        }),
    };
    let Some(preview) = preview else { return Ok(ExitStatus::Failure) };
    let engine = super::engine_for(&prepared, &args.exec)?;
    let previewed = pipeline::preview(&prepared, &engine, &preview, args.limit).await;
    super::report(printer, &previewed.diagnostics);
    let batches = match previewed.rows {
        Rows::Read(batches) => batches,
        Rows::ParentsFailed => {
            printer.error_summary(&format!("`{}` cannot be shown: its parents failed to compile", preview.name));
            return Ok(ExitStatus::Failure);
        }
        Rows::Failed(d) => {
            super::report(printer, &[*d]);
            return Ok(ExitStatus::Failure);
        }
    };
    if printer.is_json() {
        super::print_json_lines(printer, &batches)?;
    } else {
        printer.data(&datafusion::arrow::util::pretty::pretty_format_batches(&batches)?.to_string())?;
    }
    Ok(ExitStatus::Success)
}

/// A model with rules, `dedupe` or quarantined conversions is previewed
/// from its SQL: what it produces, before what the run would set aside.
fn unchecked(model: &str) -> Diagnostic {
    Diagnostic::warning(
        Code::ModelConfig,
        format!("these are the rows `{model}` produces before its rules and dedupe: rows that `ferry run` would quarantine or drop as duplicates are among them"),
    )
    .with_help(format!("`ferry run -s {model}` stages only the rows that pass; `ferry errors` lists the others"))
}

/// The one node `--select` names; anything else is a diagnostic.
fn one_node(manifest: &Manifest, args: &ShowArgs, printer: &Printer) -> Option<NodeId> {
    let chosen: Vec<NodeId> = match pipeline::select(manifest, &args.select.select, &args.select.exclude, false) {
        Ok(s) if !args.select.select.is_empty() => {
            super::report(printer, &s.warnings);
            s.nodes.into_iter().filter(|&i| !matches!(manifest[i].resource, Resource::Test(_))).collect()
        }
        Ok(_) => Vec::new(),
        Err(d) => {
            super::report(printer, &[*d]);
            return None;
        }
    };
    if chosen.len() == 1 {
        return Some(chosen[0]);
    }
    let names: Vec<String> = chosen.iter().take(5).map(|&i| format!("`{}`", manifest[i].display_name())).collect();
    let d = Diagnostic::error(
        Code::Selector,
        if chosen.is_empty() {
            "`ferry show` needs `--select` naming one model, seed or source, or `--inline` SQL".to_owned()
        } else {
            format!("`--select` matched {} nodes ({}); `ferry show` previews one", chosen.len(), names.join(", "))
        },
    );
    super::report(printer, &[d]);
    None
}
