//! `ferry show`: preview the rows of one model, or of inline SQL, as a
//! table on stdout (or JSON rows with `--format json`). Parents are read
//! from their stages where they have one, else from their SQL.

use std::collections::BTreeSet;

use anyhow::Result;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::LogicalPlanBuilder;
use futures::TryStreamExt;

use crate::cli::ShowArgs;
use crate::diagnostic::{Code, Diagnostic, SourceFile};
use crate::error::ExitStatus;
use crate::manifest::{Manifest, NodeId, Resource};
use crate::printer::Printer;
use crate::run::{self as pipeline, plan};
use crate::settings::Settings;

pub(crate) async fn show(settings: &Settings, args: &ShowArgs, printer: &Printer) -> Result<ExitStatus> {
    let Some(prepared) = super::prepare_or_report(settings, "show", printer)? else {
        return Ok(ExitStatus::Failure);
    };
    let manifest = &prepared.manifest;
    let Some((name, sql, parents)) = what_to_show(manifest, args, printer) else {
        return Ok(ExitStatus::Failure);
    };
    let engine = super::engine_for(&prepared, &args.exec)?;
    let outcome = plan::plan(&engine, manifest, &parents, &prepared.failed).await;
    if super::report(printer, &outcome.diagnostics) {
        printer.error_summary(&format!("`{name}` cannot be shown: its parents failed to compile"));
        return Ok(ExitStatus::Failure);
    }
    pipeline::read_parents_lazily(&engine, manifest, &parents, &prepared.layout.stage_root()).await;
    let batches = match preview(&engine, &sql, args.limit).await {
        Ok(b) => b,
        Err(e) => {
            let d = Diagnostic::error(Code::Execution, format!("`{name}` failed: {}", e.find_root().strip_backtrace()));
            super::report(printer, &[d]);
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

/// The SQL to preview (`--inline`, or the one selected node's), what it is
/// called, and the nodes it reads; `None` after printing why there is none.
fn what_to_show(manifest: &Manifest, args: &ShowArgs, printer: &Printer) -> Option<(String, String, BTreeSet<NodeId>)> {
    if let Some(text) = &args.inline {
        let file = SourceFile::new("--inline", text.as_str());
        return match manifest.templater.render_inline(&file) {
            Ok(r) => {
                let parents = manifest.nodes_called(&r);
                Some(("--inline".to_owned(), r.sql, parents))
            }
            Err(d) => {
                super::report(printer, &[*d]);
                None
            }
        };
    }
    let i = one_node(manifest, args, printer)?;
    let node = &manifest[i];
    let sql = match (&node.resource, &node.rendered) {
        (Resource::Model { .. }, Some(r)) => r.sql.clone(),
        _ => format!(
            "SELECT * FROM {}",
            node.relation.as_ref().map_or_else(|| node.name.clone(), |r| r.rendered.clone())
        ),
    };
    Some((node.display_name(), sql, manifest.graph.parents(i).iter().copied().collect()))
}

/// The one node `--select` names; anything else is a diagnostic.
fn one_node(manifest: &Manifest, args: &ShowArgs, printer: &Printer) -> Option<NodeId> {
    let chosen: Vec<NodeId> = match pipeline::select(manifest, &args.select.select, &args.select.exclude) {
        Ok(s) if !args.select.select.is_empty() => {
            s.into_iter().filter(|&i| !matches!(manifest[i].resource, Resource::Test(_))).collect()
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

async fn preview(
    engine: &crate::engine::Engine,
    sql: &str,
    limit: usize,
) -> datafusion::error::Result<Vec<RecordBatch>> {
    let plan = engine.plan(sql).await?;
    let limited = LogicalPlanBuilder::from(plan).limit(0, Some(limit))?.build()?;
    engine.execute(limited).await?.try_collect().await
}
