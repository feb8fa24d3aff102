//! What the engine does with one node: plans its SQL against the tables
//! registered now (errors pointing into the model), executes a plan into a
//! stage, registers a stage as the table its readers read, and turns what
//! went wrong while staging into diagnostics that name the bad row where
//! one can be found.

use camino::Utf8Path;
use datafusion::common::TableReference;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;

use super::session::{Engine, FileFormat, FileSource};
use super::{diagnose, sources};
use crate::diagnostic::{Code, Diagnostic, SourceFile};
use crate::manifest::{Manifest, Node, NodeId};
use crate::stage::{self, StageError, StageOptions, StagedTable};
use crate::state::Layout;

/// Plans `sql` for node `id` against the tables registered now; an error
/// points into the model (or its compiled SQL).
pub async fn plan(engine: &Engine, manifest: &Manifest, id: NodeId, sql: &str) -> Result<LogicalPlan, Vec<Diagnostic>> {
    engine.plan(sql).await.map_err(|e| {
        let node = &manifest[id];
        let path = node.compiled_name().map_or_else(|| node.path(), |c| Layout::compiled(&c));
        diagnose::error_diagnostics(&e, manifest, id, &SourceFile::new(path, sql))
    })
}

/// Registers a stage's Parquet files as the table downstream models read.
pub async fn register_staged(
    engine: &Engine,
    table: TableReference,
    staged: &StagedTable,
) -> Result<(), DataFusionError> {
    let file = FileSource::local(&staged.dir, FileFormat::Parquet);
    let schema = engine.infer_schema(&file).await?;
    engine.register_file(table, &file, &schema).await
}

/// Executes `plan` for node `id` and streams it into a stage under `parent`.
pub async fn stage_plan(
    engine: &Engine,
    manifest: &Manifest,
    id: NodeId,
    plan: LogicalPlan,
    parent: &Utf8Path,
    options: StageOptions,
) -> Result<StagedTable, Vec<Diagnostic>> {
    let node = &manifest[id];
    let partitions = engine.execute_partitioned(plan).await.map_err(|e| vec![execution_error(node, &e)])?;
    match stage::write_stage(parent, &node.name, partitions, options).await {
        Ok(staged) => Ok(staged),
        Err(e) => Err(stage_error(engine, manifest, id, e).await),
    }
}

/// What went wrong staging node `id`: a source's bad record or row (found
/// and named by file and line where it can be), else the query's error.
pub async fn stage_error(engine: &Engine, manifest: &Manifest, id: NodeId, e: StageError) -> Vec<Diagnostic> {
    let node = &manifest[id];
    match e {
        StageError::Execute { source, .. } => {
            if let Some(e) = crate::source::ReadError::find(&source) {
                return vec![
                    sources::read_error_diagnostic(e).with_note(format!("found while running `{}`", node.name)),
                ];
            }
            if is_csv_error(&source)
                && let Some(d) = sources::locate_bad_row(engine, manifest, id).await
            {
                return vec![d.with_note(format!("found while running `{}`", node.name))];
            }
            if let Some(d) = sources::locate_bad_date(manifest, id, &source.find_root().to_string()) {
                return vec![d.with_note(format!("found while running `{}`", node.name))];
            }
            vec![execution_error(node, &source)]
        }
        e => vec![
            Diagnostic::error(Code::Execution, format!("`{}` could not be staged: {e}", node.name))
                .in_file(node.path())
                .with_note(crate::error::with_causes(String::new(), &e)),
        ],
    }
}

fn is_csv_error(e: &DataFusionError) -> bool {
    let text = e.to_string();
    text.contains("Csv error") || text.contains("Error while parsing value") || text.contains("number of fields")
}

/// A query that failed while running, as a diagnostic on its node.
pub fn execution_error(node: &Node, e: &DataFusionError) -> Diagnostic {
    let root = e.find_root().strip_backtrace();
    let first = root.lines().next().unwrap_or_default();
    Diagnostic::error(Code::Execution, format!("`{}` failed while running: {first}", node.name)).in_file(node.path())
}

/// A node the engine could not register: a bug, not the user's doing.
pub fn internal(e: &DataFusionError, node: &Node, code: Code) -> Diagnostic {
    Diagnostic::error(code, format!("failed to register `{}`: {e}", node.name))
        .with_note("this is a bug, please report it with `-vv` output")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_errors_are_recognised() {
        let e = DataFusionError::ArrowError(
            Box::new(datafusion::arrow::error::ArrowError::ParseError(
                "Error while parsing value 'x' as type 'Int64' for column 1 at line 3. Row data: '[1,x]'".into(),
            )),
            None,
        );
        assert!(is_csv_error(&e));
        assert!(!is_csv_error(&DataFusionError::Execution("division by zero".into())));
    }
}
