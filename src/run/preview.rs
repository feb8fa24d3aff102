//! `ferry show`'s library half: the rows of one model (or of inline SQL),
//! with its parents read from their stages where they have one, else from
//! their SQL.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder};
use futures::TryStreamExt as _;

use super::{Prepared, materialize, plan};
use crate::diagnostic::{Code, Diagnostic, SourceFile};
use crate::engine::Engine;
use crate::manifest::{Manifest, NodeId, Resource};

/// What to preview: a name for messages, its SQL, and the nodes it reads.
pub struct Preview {
    pub name: String,
    pub sql: String,
    pub parents: BTreeSet<NodeId>,
    /// The model previewed, whose SQL is rendered again once its parents
    /// are planned if its first render was deferred.
    pub model: Option<NodeId>,
}

/// What previewing found: the parents' planning diagnostics (warnings
/// too), and the rows, or why there are none.
pub struct Previewed {
    pub diagnostics: Vec<Diagnostic>,
    pub rows: Rows,
}

/// The rows of a preview.
pub enum Rows {
    Read(Vec<RecordBatch>),
    /// A parent failed to plan (the diagnostics say how); nothing ran.
    ParentsFailed,
    /// The query failed while it ran.
    Failed(Box<Diagnostic>),
}

impl Preview {
    /// The rows of node `id`: a model's SQL, or a seed's or source's table.
    pub fn node(manifest: &Manifest, id: NodeId) -> Preview {
        let node = &manifest[id];
        let sql = match (&node.resource, &node.rendered) {
            (Resource::Model { .. }, Some(r)) => r.sql.clone(),
            _ => format!(
                "SELECT * FROM {}",
                node.relation.as_ref().map_or_else(|| node.name.clone(), |r| r.rendered.clone())
            ),
        };
        // A seed is read as its readers read it: from its stage, else its CSV.
        let parents = match &node.resource {
            Resource::Seed(_) => BTreeSet::from([id]),
            _ => manifest.graph.parents(id).iter().copied().collect(),
        };
        let model = matches!(node.resource, Resource::Model { .. }).then_some(id);
        Preview { name: node.display_name(), sql, parents, model }
    }

    /// The rows of `--inline` SQL, which may use `ref()` and `source()`.
    pub fn inline(manifest: &Manifest, text: &str) -> Result<Preview, Box<Diagnostic>> {
        let rendered = manifest.templater.render_inline(&SourceFile::new("--inline", text))?;
        let parents = manifest.nodes_called(&rendered);
        Ok(Preview { name: "--inline".to_owned(), sql: rendered.sql, parents, model: None })
    }
}

/// Plans what `preview` reads, then runs it for its first `limit` rows.
pub async fn preview(prepared: &Prepared, engine: &Engine, preview: &Preview, limit: usize) -> Previewed {
    let manifest = &prepared.manifest;
    let outcome = plan::plan(engine, manifest, (&preview.parents, &prepared.failed), None).await;
    if outcome.diagnostics.iter().any(Diagnostic::is_error) {
        return Previewed { diagnostics: outcome.diagnostics, rows: Rows::ParentsFailed };
    }
    // Its parents' rows first: its render may query them.
    materialize::read_parents_lazily(engine, manifest, &preview.parents, &prepared.stages).await;
    let again =
        match preview.model.map(|i| plan::render_planned(engine, manifest, i, &tokio::runtime::Handle::current())) {
            Some(Err(d)) => return Previewed { diagnostics: outcome.diagnostics, rows: Rows::Failed(d) },
            Some(Ok(again)) => again,
            None => None,
        };
    // A masked run previews what it would stage: the model's own masks too.
    let sql = match preview.model.map(|i| plan::masked_render(engine, &manifest[i], again.clone())) {
        Some(masking) => match masking.await {
            Ok(Some(r)) => r.sql,
            Ok(None) => preview.sql.clone(),
            Err(d) => return Previewed { diagnostics: outcome.diagnostics, rows: Rows::Failed(Box::new(d)) },
        },
        None => again.map_or_else(|| preview.sql.clone(), |r| r.sql),
    };
    let plan = match engine.plan(&sql).await {
        Ok(plan) => plan,
        Err(e) => {
            let file = Arc::new(SourceFile::new(preview.name.as_str(), sql.as_str()));
            let d = crate::engine::diagnose::inline_diagnostic(&e, manifest, &file);
            return Previewed { diagnostics: outcome.diagnostics, rows: Rows::Failed(Box::new(d)) };
        }
    };
    let rows = match first_rows(engine, plan, limit).await {
        Ok(batches) => Rows::Read(batches),
        Err(e) => {
            let root = e.find_root().strip_backtrace();
            let message = format!("`{}` failed: {}", preview.name, root.lines().next().unwrap_or_default());
            Rows::Failed(Box::new(Diagnostic::error(Code::Execution, message)))
        }
    };
    Previewed { diagnostics: outcome.diagnostics, rows }
}

async fn first_rows(engine: &Engine, plan: LogicalPlan, limit: usize) -> datafusion::error::Result<Vec<RecordBatch>> {
    let schema = Arc::new(plan.schema().as_arrow().clone());
    let limited = LogicalPlanBuilder::from(plan).limit(0, Some(limit))?.build()?;
    let batches: Vec<RecordBatch> = engine.execute(limited).await?.try_collect().await?;
    // No rows (or `--limit 0`) still show the columns.
    Ok(if batches.is_empty() { vec![RecordBatch::new_empty(schema)] } else { batches })
}
