//! `audit`: profiles the selected sources and seeds (every one when none
//! is selected) as they are read, in one streaming pass each (see
//! [`crate::audit`]), and writes `.ferry/audit/<run id>/audit.json`.

use std::collections::BTreeSet;

use anyhow::{Context as _, Result};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::TableReference;
use futures::StreamExt as _;
use serde::Serialize;

use super::{Prepared, plan};
use crate::audit::{TableProfile, TableProfiler};
use crate::diagnostic::{Code, Diagnostic};
use crate::engine::{Engine, sources};
use crate::manifest::{NodeId, Resource};
use crate::state::RunDir;

/// What an audit found, and where it wrote it.
#[derive(Debug, Serialize)]
pub struct Audit {
    pub run_id: String,
    pub created_at: String,
    pub tables: Vec<TableProfile>,
    #[serde(skip)]
    pub diagnostics: Vec<Diagnostic>,
    #[serde(skip)]
    pub file: Option<RunDir>,
}

/// Profiles the sources and seeds among `selected` (all of them when it
/// holds none).
pub async fn audit(prepared: &Prepared, engine: &Engine, selected: &BTreeSet<NodeId>) -> Result<Audit> {
    let manifest = &prepared.manifest;
    let readable = |i: &NodeId| matches!(manifest[*i].resource, Resource::Source(_) | Resource::Seed(_));
    let mut wanted: BTreeSet<NodeId> = selected.iter().copied().filter(readable).collect();
    if wanted.is_empty() {
        wanted = manifest.order.iter().copied().filter(readable).collect();
    }
    let outcome = plan::plan(engine, manifest, (&wanted, &prepared.failed), None).await;
    let run_id = manifest.globals.invocation_id.clone();
    let mut audit = Audit {
        run_id: run_id.clone(),
        created_at: chrono::Utc::now().to_rfc3339(),
        tables: Vec::new(),
        diagnostics: outcome.diagnostics,
        file: None,
    };
    for &i in manifest.order.iter().filter(|i| wanted.contains(i) && !outcome.failed.contains(i)) {
        let node = &manifest[i];
        // A CSV is read as text: the audit is of what the file holds.
        let table = match sources::register_as_text(engine, manifest, node).await {
            Some(text) => text,
            None => sources::table_of(node),
        };
        match profile(engine, &node.display_name(), table, outcome.schemas.get(&i)).await {
            Ok(p) => audit.tables.push(p),
            Err(e) => audit.diagnostics.push(
                Diagnostic::error(
                    Code::Execution,
                    format!("`{}` could not be read: {}", node.display_name(), sources::first_line(&e)),
                )
                .in_file(node.path()),
            ),
        }
    }
    let file = prepared.layout.audit(&run_id).join("audit.json");
    let json = serde_json::to_vec_pretty(&audit)?;
    crate::state::files::write_atomic(&file.path, &json, true)
        .with_context(|| format!("cannot write `{}`", file.shown))?;
    audit.file = Some(file);
    Ok(audit)
}

/// One table's profile, its rows streamed.
async fn profile(
    engine: &Engine,
    name: &str,
    table: TableReference,
    declared: Option<&SchemaRef>,
) -> Result<TableProfile, datafusion::error::DataFusionError> {
    let plan = engine.plan(&format!("SELECT * FROM {}", table.to_quoted_string())).await?;
    let schema: SchemaRef = std::sync::Arc::new(plan.schema().as_arrow().clone());
    let declared = declared.unwrap_or(&schema);
    // Each partition (a byte range of a file) is read and profiled on a
    // task of its own; the profiles merge in partition order.
    let mut tasks = Vec::new();
    for mut stream in engine.execute_partitioned(plan).await? {
        let mut profiler = TableProfiler::new(name, &schema, declared);
        tasks.push(tokio::spawn(async move {
            while let Some(batch) = stream.next().await {
                profiler.add(&batch?)?;
            }
            Ok::<_, datafusion::error::DataFusionError>(profiler)
        }));
    }
    let mut merged = TableProfiler::new(name, &schema, declared);
    for task in tasks {
        let profiler = task.await.map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))??;
        merged.merge(profiler);
    }
    Ok(merged.finish())
}
