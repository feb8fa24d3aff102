//! Staging a model through its rules and dedup: the checking query's rows
//! are deduplicated (`dedupe`), split as they stream (rows that break an
//! `error` rule to the run's quarantine, every broken rule to its error
//! log, the rest to the stage), and counted in the row ledger. Past its
//! `quarantine: {error_if: ...}` threshold the model fails and its new
//! stage is discarded.

use std::sync::Arc;

use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;

use super::quarantine::{Splitter, ThresholdExceeded};
use super::rules::RuleCheck;
use crate::diagnostic::{Code, Diagnostic};
use crate::engine::{Engine, node as engine_node};
use crate::manifest::{Manifest, Node, NodeId};
use crate::stage::{self, StageError, StageOptions, StagedTable};
use crate::state::{Ledger, RunDir};

/// Where a checked model's stage, quarantine and error log go.
pub struct CheckedRun<'a> {
    pub stage_root: &'a stage::Root,
    pub run_id: &'a str,
    pub run_dir: &'a RunDir,
    pub options: StageOptions,
}

/// A checked model that could not be staged: why, and its ledger when the
/// rows were counted (a model over its threshold).
pub struct CheckFailed {
    pub diagnostics: Vec<Diagnostic>,
    pub ledger: Option<Ledger>,
}

/// Stages model `id` from `plan` (its checking query, see
/// [`super::rules::checked_sql`]) through its rules.
pub async fn stage_checked(
    engine: &Engine,
    manifest: &Manifest,
    id: NodeId,
    (plan, checks): (LogicalPlan, Arc<Vec<RuleCheck>>),
    run: CheckedRun<'_>,
) -> Result<(StagedTable, Ledger), CheckFailed> {
    let node = &manifest[id];
    let failed = |diagnostics: Vec<Diagnostic>| CheckFailed { diagnostics, ledger: None };
    let threshold = node.config.quarantine.clone().map_err(|d| failed(vec![*d]))?;
    let execution_error = |e: &DataFusionError| failed(vec![engine_node::execution_error(node, e)]);
    let mut partitions = engine.execute_partitioned(plan).await.map_err(|e| execution_error(&e))?;
    let dedupe = node.config.dedupe.as_ref();
    if let Some(d) = dedupe {
        partitions =
            super::dedupe::dedupe(partitions, d, super::rules::sites(&checks) + checks.len(), engine.runtime_env())
                .map_err(|e| execution_error(&e))?;
    }
    let splitter = Splitter::new(checks, dedupe.cloned(), &node.name, run.run_id, node.config.record_key(), threshold);
    let (streams, written) = splitter.split(partitions, &run.run_dir.path);
    let result = stage::write_stage(run.stage_root, &node.name, streams, run.options).await;
    let staged_rows = result.as_ref().map_or(0, |s| s.manifest.row_count);
    let ledger = written.finish(staged_rows, &run.run_dir.shown).await.map_err(|e| {
        failed(vec![
            Diagnostic::error(
                Code::Execution,
                format!("`{}`: could not write its quarantine and error log: {e}", node.name),
            )
            .in_file(node.path()),
        ])
    })?;
    let with_ledger = |diagnostics| CheckFailed { diagnostics, ledger: Some(ledger.clone()) };
    if let Err(StageError::Execute { source, .. }) = &result
        && let Some(t) = threshold_exceeded(source)
    {
        return Err(with_ledger(vec![over_threshold(node, t, &ledger)]));
    }
    match result {
        Ok(staged) => Ok((staged, ledger)),
        Err(e) => Err(with_ledger(engine_node::stage_error(engine, manifest, id, e).await)),
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
