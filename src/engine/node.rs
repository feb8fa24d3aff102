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

/// Registers a stage's Parquet files as the table downstream models read:
/// a listing table of its directory, or, where rows of its files are
/// deleted, a table that skips them (see [`stage::layer`]).
pub async fn register_staged(
    engine: &Engine,
    table: TableReference,
    staged: &StagedTable,
) -> Result<(), DataFusionError> {
    let location = staged.location();
    let file = FileSource {
        extension: ".parquet".to_owned(),
        ..FileSource::local(Utf8Path::new(&location), FileFormat::Parquet)
    };
    let schema = match engine.infer_schema(&file).await {
        Ok(schema) => schema,
        Err(e) => layered_schema(engine, staged).await.ok_or(e)?,
    };
    if staged.manifest.has_deletes() {
        return engine.register(table, std::sync::Arc::new(stage::table::StageTable::new(staged, schema)?));
    }
    engine.register_stage(table, &file.path, &schema).await
}

/// The columns of a layered version whose files hold strings in different
/// layouts (`Utf8` in its first files, `Utf8View` in an increment's), which
/// DataFusion reads alike but cannot infer as one: each file's, merged.
/// `None` when the stage is not on this machine or its files' columns
/// differ in more than that.
async fn layered_schema(engine: &Engine, staged: &StagedTable) -> Option<datafusion::arrow::datatypes::SchemaRef> {
    let dir = staged.dir.local()?;
    let mut schemas = Vec::with_capacity(staged.manifest.files.len());
    for f in &staged.manifest.files {
        let file = FileSource::local(&dir.join(&f.name), FileFormat::Parquet);
        schemas.push(engine.infer_schema(&file).await.ok()?.as_ref().clone());
    }
    datafusion::arrow::datatypes::Schema::try_merge(schemas).ok().map(std::sync::Arc::new)
}

/// Executes `plan` for node `id` and streams it into a stage under `parent`.
pub async fn stage_plan(
    engine: &Engine,
    manifest: &Manifest,
    id: NodeId,
    plan: LogicalPlan,
    parent: impl Into<stage::Root>,
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
            if is_reader_error(&source)
                && let Some(d) = sources::locate_bad_row(engine, manifest, id, &source.to_string()).await
            {
                return vec![d.with_note(format!("found while running `{}`", node.name))];
            }
            if let Some(d) = sources::locate_bad_value(manifest, id, &source.find_root().to_string()) {
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

/// An error of the CSV or JSON reader, which a scan of the source's
/// files can place at a line.
fn is_reader_error(e: &DataFusionError) -> bool {
    let text = e.to_string();
    text.contains("Csv error")
        || text.contains("Error while parsing value")
        || text.contains("number of fields")
        || text.contains("Json error")
}

/// A query that failed while running, as a diagnostic on its node.
pub fn execution_error(node: &Node, e: &DataFusionError) -> Diagnostic {
    if let DataFusionError::ResourcesExhausted(text) = e.find_root() {
        return out_of_memory(node, text);
    }
    let root = match e.find_root() {
        // Ours (a cluster's job not started), said as it is.
        DataFusionError::External(inner) => inner.to_string(),
        root => root.strip_backtrace(),
    };
    let first = root.lines().next().unwrap_or_default();
    Diagnostic::error(Code::Execution, format!("`{}` failed while running: {first}", node.name)).in_file(node.path())
}

/// A query over `--memory-limit`: which operator asked for how much, the
/// top consumers DataFusion lists, and what to do.
fn out_of_memory(node: &Node, text: &str) -> Diagnostic {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let failed = lines.iter().rev().find(|l| l.contains("Failed to allocate")).map(|l| l.trim_start_matches("Error: "));
    let operator = regex::Regex::new(r"allocation failed for ([A-Za-z]+)")
        .ok()
        .and_then(|r| r.captures(text).map(|c| c[1].to_owned()));
    let what = match operator.as_deref() {
        Some(o) if o.starts_with("HashJoin") => "a hash join's build side".to_owned(),
        Some(o) => format!("`{o}`"),
        None => "the query".to_owned(),
    };
    let mut d = Diagnostic::error(
        Code::Execution,
        format!("`{}` ran out of memory: {what} needs more than `--memory-limit` allows", node.name),
    )
    .in_file(node.path());
    if let Some(f) = failed {
        d = d.with_note(f.to_owned());
    }
    for consumer in lines.iter().filter(|l| l.contains("consumed")) {
        d = d.with_note(format!("consumer: {}", consumer.trim_end_matches([',', '.'])));
    }
    let cannot_spill = text.contains("can spill: false");
    d.with_help(if cannot_spill {
        "this operator holds its input in memory and cannot spill to disk: raise `--memory-limit` (or FERRY_MEMORY_LIMIT), or filter or aggregate the joined tables first"
    } else {
        "raise `--memory-limit` (or FERRY_MEMORY_LIMIT); sorts and aggregates spill to `.ferry/spill/` within it"
    })
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
        assert!(is_reader_error(&e));
        assert!(!is_reader_error(&DataFusionError::Execution("division by zero".into())));
    }
}
