//! Runs one planned node: re-plans its SQL against its parents' live
//! tables, then materializes it. A `table` is streamed into a Parquet stage
//! and registered from there; a `view` or `ephemeral` is registered as a
//! view (inlined into its readers), except a view that several models read,
//! which is computed once into scratch Parquet so that diamond-shaped DAGs
//! do not re-expand it into every plan. Seeds are staged from their CSV.
//!
//! Scheduling (what runs when) is not this module's business.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use camino::{Utf8Path, Utf8PathBuf};
use datafusion::common::TableReference;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;

use super::session::{Engine, FileFormat, FileSource};
use super::{diagnose, sources};
use crate::diagnostic::{Code, Diagnostic, SourceFile};
use crate::manifest::{Manifest, Materialization, Node, Resource};
use crate::stage::{self, StageError, StageOptions, StagedTable};
use crate::state::Ledger;
use crate::template::functions::quote_ident;
use crate::validate::quarantine::{Splitter, Threshold, ThresholdExceeded};
use crate::validate::rules;

/// What a run needs besides the engine and the manifest.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// `.ferry/stage`: staged tables and seeds.
    pub stage_root: Utf8PathBuf,
    /// Scratch space for views computed once, removed after the run.
    pub scratch_root: Utf8PathBuf,
    pub stage_options: StageOptions,
    /// Views read by more than one model in this run.
    pub compute_once: HashSet<usize>,
    /// This run's id and directory (`.ferry/runs/<id>/`: quarantine and
    /// error log), as written and as shown to the user.
    pub run_id: String,
    pub run_dir: Utf8PathBuf,
    pub run_dir_shown: Utf8PathBuf,
    /// The row ledger of each model with rules, as it finishes.
    pub ledgers: Arc<Mutex<HashMap<usize, Ledger>>>,
}

/// How a node ended up.
#[derive(Debug, Clone)]
pub enum Materialized {
    /// Registered as a view; no rows were read.
    View,
    /// Inlined into its readers.
    Ephemeral,
    /// A view several models read, computed once.
    ComputedOnce(StagedTable),
    /// A table or seed, staged as Parquet.
    Staged(StagedTable),
}

impl Materialized {
    /// Rows written, when the node was executed.
    pub fn rows(&self) -> Option<u64> {
        match self {
            Materialized::View | Materialized::Ephemeral => None,
            Materialized::ComputedOnce(t) | Materialized::Staged(t) => Some(t.manifest.row_count),
        }
    }
}

/// Materializes model or seed `i`. Its parents must have been materialized.
pub async fn materialize(
    engine: &Engine,
    manifest: &Manifest,
    i: usize,
    ctx: &RunContext,
) -> Result<Materialized, Vec<Diagnostic>> {
    let node = &manifest.nodes[i];
    match &node.resource {
        Resource::Seed(_) => {
            let plan = replan(engine, manifest, i, &format!("SELECT * FROM {}", quote_ident(&node.name))).await?;
            let staged = stage_plan(engine, manifest, i, plan, &ctx.stage_root, ctx.stage_options.clone()).await?;
            // Models read the seed as staged (and loaded), as dbt reads the
            // table `dbt seed` made, not the CSV again.
            register_staged(engine, TableReference::bare(node.name.as_str()), &staged)
                .await
                .map_err(|e| vec![internal(&e, node)])?;
            Ok(Materialized::Staged(staged))
        }
        Resource::Model { materialized, .. } => {
            let sql = node.rendered.as_ref().map(|r| r.sql.clone()).unwrap_or_default();
            let table = TableReference::bare(node.name.as_str());
            match materialized {
                Materialization::Incremental => Err(vec![incremental_refused(node)]),
                Materialization::View | Materialization::Ephemeral if !ctx.compute_once.contains(&i) => {
                    let plan = replan(engine, manifest, i, &sql).await?;
                    engine.register_view(table, plan).map_err(|e| vec![internal(&e, node)])?;
                    Ok(if *materialized == Materialization::View {
                        Materialized::View
                    } else {
                        Materialized::Ephemeral
                    })
                }
                Materialization::View | Materialization::Ephemeral => {
                    let plan = replan(engine, manifest, i, &sql).await?;
                    let staged =
                        stage_plan(engine, manifest, i, plan, &ctx.scratch_root, ctx.stage_options.clone()).await?;
                    register_staged(engine, table, &staged).await.map_err(|e| vec![internal(&e, node)])?;
                    Ok(Materialized::ComputedOnce(staged))
                }
                Materialization::Table if node.is_checked() => {
                    let checked = rules::checked_sql(&sql, &node.rules, node.dedupe.as_ref());
                    let plan = replan(engine, manifest, i, &checked).await?;
                    let staged = stage_checked(engine, manifest, i, plan, ctx).await?;
                    register_staged(engine, table, &staged).await.map_err(|e| vec![internal(&e, node)])?;
                    Ok(Materialized::Staged(staged))
                }
                Materialization::Table => {
                    let plan = replan(engine, manifest, i, &sql).await?;
                    let staged =
                        stage_plan(engine, manifest, i, plan, &ctx.stage_root, ctx.stage_options.clone()).await?;
                    register_staged(engine, table, &staged).await.map_err(|e| vec![internal(&e, node)])?;
                    Ok(Materialized::Staged(staged))
                }
            }
        }
        _ => Ok(Materialized::View),
    }
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

/// Makes `parents` (and their own ancestors) readable without running them:
/// a `table` or seed with a stage is read from it (a seed without one from
/// its CSV); other models are read from their SQL, as views. Returns the
/// tables that had no stage.
pub async fn read_parents_lazily(
    engine: &Engine,
    manifest: &Manifest,
    parents: &std::collections::BTreeSet<usize>,
    stage_root: &Utf8Path,
) -> Vec<String> {
    let needed = manifest.graph.with_ancestors(parents.iter().copied());
    let mut unstaged = Vec::new();
    for &i in manifest.order.iter().filter(|i| needed.contains(i)) {
        let node = &manifest.nodes[i];
        let table = TableReference::bare(node.name.as_str());
        if let Resource::Seed(_) = &node.resource {
            let dir = stage_root.join(&node.name);
            if let Ok(m) = stage::read_manifest(&dir) {
                let _ = register_staged(engine, table, &StagedTable { dir, manifest: m }).await;
            }
            continue;
        }
        let Resource::Model { materialized, .. } = &node.resource else { continue };
        if *materialized == Materialization::Table {
            let dir = stage_root.join(&node.name);
            if let Ok(m) = stage::read_manifest(&dir)
                && register_staged(engine, table.clone(), &StagedTable { dir, manifest: m }).await.is_ok()
            {
                continue;
            }
            unstaged.push(node.name.clone());
        }
        if let Some(r) = &node.rendered
            && let Ok(plan) = engine.plan(&r.sql).await
        {
            let _ = engine.register_view(table, plan);
        }
    }
    unstaged
}

/// Plans `sql` for node `i` against the tables registered now.
async fn replan(engine: &Engine, manifest: &Manifest, i: usize, sql: &str) -> Result<LogicalPlan, Vec<Diagnostic>> {
    engine.plan(sql).await.map_err(|e| {
        let node = &manifest.nodes[i];
        let path = node.compiled_name().map_or_else(|| node.path(), |c| super::plan::compiled_path(&c));
        diagnose::error_diagnostics(&e, manifest, i, &SourceFile::new(path, sql))
    })
}

pub(crate) async fn stage_plan(
    engine: &Engine,
    manifest: &Manifest,
    i: usize,
    plan: LogicalPlan,
    parent: &Utf8Path,
    options: StageOptions,
) -> Result<StagedTable, Vec<Diagnostic>> {
    let node = &manifest.nodes[i];
    let partitions = engine.execute_partitioned(plan).await.map_err(|e| vec![execution_error(node, &e)])?;
    match stage::write_stage(parent, &node.name, partitions, options).await {
        Ok(staged) => Ok(staged),
        Err(e) => Err(stage_error(engine, manifest, i, e).await),
    }
}

/// Stages a model through its rules: rows that break an `error` rule are
/// quarantined instead of staged, every broken rule is logged, and the
/// ledger is recorded. Past its `quarantine: {error_if: ...}` threshold the
/// model fails and its new stage is discarded.
async fn stage_checked(
    engine: &Engine,
    manifest: &Manifest,
    i: usize,
    plan: LogicalPlan,
    ctx: &RunContext,
) -> Result<StagedTable, Vec<Diagnostic>> {
    let node = &manifest.nodes[i];
    let threshold = Threshold::from_config(&node.config).map_err(|m| {
        vec![Diagnostic::error(Code::ModelConfig, format!("`{}`: {m}", node.name)).in_file(node.path())]
    })?;
    let mut partitions = engine.execute_partitioned(plan).await.map_err(|e| vec![execution_error(node, &e)])?;
    if let Some(d) = &node.dedupe {
        partitions = crate::validate::dedupe::dedupe(partitions, d, node.rules.len(), engine.runtime_env())
            .map_err(|e| vec![execution_error(node, &e)])?;
    }
    let key = rules::record_key(&node.config, node.dedupe.as_ref());
    let splitter =
        Splitter::new(Arc::new(node.rules.clone()), node.dedupe.clone(), &node.name, &ctx.run_id, key, threshold);
    let (streams, written) = splitter.split(partitions, &ctx.run_dir);
    let result = stage::write_stage(&ctx.stage_root, &node.name, streams, ctx.stage_options.clone()).await;
    let staged_rows = result.as_ref().map_or(0, |s| s.manifest.row_count);
    let ledger = written.finish(staged_rows, &ctx.run_dir_shown).await.map_err(|e| {
        vec![
            Diagnostic::error(
                Code::Execution,
                format!("`{}`: could not write its quarantine and error log: {e}", node.name),
            )
            .in_file(node.path()),
        ]
    })?;
    ctx.ledgers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(i, ledger.clone());
    if let Err(StageError::Execute { source, .. }) = &result
        && let Some(t) = threshold_exceeded(source)
    {
        return Err(vec![over_threshold(node, t, &ledger)]);
    }
    match result {
        Ok(staged) => Ok(staged),
        Err(e) => Err(stage_error(engine, manifest, i, e).await),
    }
}

/// A model that quarantined more rows than its threshold allows.
fn over_threshold(node: &Node, t: &ThresholdExceeded, ledger: &Ledger) -> Diagnostic {
    let pct = if t.produced == 0 { 0.0 } else { t.quarantined as f64 * 100.0 / t.produced as f64 };
    let mut d = Diagnostic::error(
        Code::Execution,
        format!(
            "`{}` quarantined {} of {} rows ({pct:.2}%), over its threshold `error_if: {}`; nothing was staged",
            node.name, t.quarantined, t.produced, t.threshold
        ),
    )
    .in_file(node.path());
    for (rule, n) in ledger.by_rule.iter().filter(|(_, n)| **n > 0) {
        d = d.with_note(format!("{n} row{} `{rule}`", if *n == 1 { " breaks" } else { "s break" }));
    }
    if let Some(log) = &ledger.error_log {
        d = d.with_note(format!("every broken rule is in `{log}`"));
    }
    d
}

fn threshold_exceeded(e: &DataFusionError) -> Option<&ThresholdExceeded> {
    match e.find_root() {
        DataFusionError::External(inner) => inner.downcast_ref::<ThresholdExceeded>(),
        _ => None,
    }
}

async fn stage_error(engine: &Engine, manifest: &Manifest, i: usize, e: StageError) -> Vec<Diagnostic> {
    let node = &manifest.nodes[i];
    match e {
        StageError::Execute { source, .. } => {
            if let Some(e) = crate::source::ReadError::find(&source) {
                return vec![
                    sources::read_error_diagnostic(e).with_note(format!("found while running `{}`", node.name)),
                ];
            }
            if is_csv_error(&source)
                && let Some(d) = sources::locate_bad_row(engine, manifest, i).await
            {
                return vec![d.with_note(format!("found while running `{}`", node.name))];
            }
            if let Some(d) = sources::locate_bad_date(manifest, i, &source.find_root().to_string()) {
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

fn execution_error(node: &Node, e: &DataFusionError) -> Diagnostic {
    let root = e.find_root().strip_backtrace();
    let first = root.lines().next().unwrap_or_default();
    Diagnostic::error(Code::Execution, format!("`{}` failed while running: {first}", node.name)).in_file(node.path())
}

fn incremental_refused(node: &Node) -> Diagnostic {
    Diagnostic::error(
        Code::ModelConfig,
        format!("`{}` is materialized as `incremental`, which ferry cannot run yet", node.name),
    )
    .in_file(node.path())
    .with_help("materialize it as `table` for now; incremental runs with a run history are planned")
}

fn internal(e: &DataFusionError, node: &Node) -> Diagnostic {
    Diagnostic::error(Code::Execution, format!("failed to register `{}`: {e}", node.name))
        .with_note("this is a bug, please report it with `-vv` output")
}

/// Views and ephemerals among `nodes` that more than one node of `nodes` reads.
pub fn views_read_more_than_once(manifest: &Manifest, nodes: &[usize]) -> HashSet<usize> {
    let running: HashSet<usize> = nodes.iter().copied().collect();
    nodes
        .iter()
        .copied()
        .filter(|&i| {
            matches!(
                manifest.nodes[i].resource,
                Resource::Model { materialized: Materialization::View | Materialization::Ephemeral, .. }
            )
        })
        .filter(|&i| {
            let readers = manifest
                .graph
                .children(i)
                .iter()
                .filter(|c| running.contains(c))
                .filter(|&&c| matches!(manifest.nodes[c].resource, Resource::Model { .. }));
            readers.count() > 1
        })
        .collect()
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
