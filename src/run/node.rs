//! Running one scheduled node: a model or seed is materialized, a test is
//! run against what the run staged. What comes back is typed: what became
//! of the node, and what it has to say.

use std::sync::Arc;

use camino::Utf8PathBuf;
use chrono::{DateTime, Utc};

use super::materialize::{self, Materialized, Places};
use crate::diagnostic::{Code, Diagnostic};
use crate::engine::Engine;
use crate::manifest::{Manifest, NodeId, Resource};
use crate::project::nodes::{Test, TestKind};
use crate::state::{Layout, Ledger, RunDir};
use crate::template::Rendered;
use crate::validate::{TestOutcome, Verdict};
use crate::validate::{data_test, unit_test};

/// What running a test needs.
pub struct TestPlaces {
    /// Where `store_failures` writes failing rows: `<run>/test_failures`.
    pub failures: RunDir,
    /// `--store-failures`: keep every test's failing rows.
    pub store_failures: bool,
}

/// What became of a node that did not fail.
pub enum Outcome {
    Materialized(Materialized),
    Tested(TestOutcome),
}

/// A node that ran, with when it started and what it has to say (a test's
/// warning); a late node's render (see [`super::plan::plan_late`]).
pub struct Done {
    pub started_at: DateTime<Utc>,
    pub outcome: Outcome,
    pub diagnostics: Vec<Diagnostic>,
    pub rendered: Option<Rendered>,
}

/// A node that failed, with when it started; for a failed test, its result;
/// for a model over its quarantine threshold, its ledger.
pub struct Failed {
    pub started_at: DateTime<Utc>,
    pub diagnostics: Vec<Diagnostic>,
    pub test: Option<TestOutcome>,
    pub ledger: Option<Ledger>,
}

/// Materializes a model or seed, or runs a test; a late node (see
/// [`super::plan::PlanOutcome::late`]) is planned first.
pub async fn run_node(
    engine: &Engine,
    manifest: &Arc<Manifest>,
    id: NodeId,
    (places, tests): (&Places, &TestPlaces),
    late: bool,
) -> Result<Done, Box<Failed>> {
    let started_at = Utc::now();
    let failed = |diagnostics| Box::new(Failed { started_at, diagnostics, test: None, ledger: None });
    let rendered = if late { plan_late(engine, manifest, id).await.map_err(failed)? } else { None };
    let sql = rendered.as_ref().or(manifest[id].rendered.as_ref()).map(|r| r.sql.as_str()).unwrap_or_default();
    if !matches!(manifest[id].resource, Resource::Test(_)) {
        return match materialize::materialize(engine, manifest, id, sql, places).await {
            Ok(m) => Ok(Done { started_at, outcome: Outcome::Materialized(m), diagnostics: Vec::new(), rendered }),
            Err(e) => Err(Box::new(Failed { started_at, diagnostics: e.diagnostics, test: None, ledger: e.ledger })),
        };
    }
    match run_test(engine, manifest, id, sql, tests).await {
        Ok((outcome, diagnostics)) => Ok(Done { started_at, outcome: Outcome::Tested(outcome), diagnostics, rendered }),
        Err(diagnostics) => {
            let (diagnostics, test) = *diagnostics;
            Err(Box::new(Failed { started_at, diagnostics, test, ledger: None }))
        }
    }
}

/// Plans late node `id` on a thread of its own: its render's queries
/// block until they have their rows.
async fn plan_late(engine: &Engine, manifest: &Arc<Manifest>, id: NodeId) -> Result<Option<Rendered>, Vec<Diagnostic>> {
    let (engine, manifest, handle) = (engine.clone(), Arc::clone(manifest), tokio::runtime::Handle::current());
    match tokio::task::spawn_blocking(move || super::plan::plan_late(&engine, &manifest, id, &handle)).await {
        Ok(planned) => planned,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(vec![Diagnostic::error(Code::Execution, format!("planning was stopped: {e}"))]),
    }
}

type TestFailure = Box<(Vec<Diagnostic>, Option<TestOutcome>)>;

/// Runs test `id`: its outcome and diagnostic (a warning), or why it failed.
async fn run_test(
    engine: &Engine,
    manifest: &Manifest,
    id: NodeId,
    sql: &str,
    tests: &TestPlaces,
) -> Result<(TestOutcome, Vec<Diagnostic>), TestFailure> {
    let node = &manifest[id];
    let mut config = node.config.test.clone().map_err(|d| Box::new((vec![*d], None)))?;
    config.store_failures |= tests.store_failures;
    let compiled: Option<Utf8PathBuf> = node.compiled_name().map(|c| Layout::compiled(&c));
    let result = if matches!(&node.resource, Resource::Test(Test { kind: TestKind::Unit { .. }, .. })) {
        unit_test::run(engine, manifest, id, config, &tests.failures.path).await
    } else {
        data_test::run(engine, &node.name, sql, config, &tests.failures.path).await.map_err(|e| e.to_string())
    };
    match result {
        Ok(mut outcome) => {
            if let Some(dir) = &mut outcome.stored {
                *dir = tests.failures.shown.join(&node.name);
            }
            let diagnostics: Vec<Diagnostic> =
                data_test::outcome_diagnostic(node, &outcome, compiled.as_deref()).into_iter().collect();
            if outcome.verdict == Verdict::Fail {
                Err(Box::new((diagnostics, Some(outcome))))
            } else {
                Ok((outcome, diagnostics))
            }
        }
        Err(e) => {
            let mut d = Diagnostic::error(Code::Execution, format!("test `{}` could not run: {e}", node.name))
                .in_file(node.path());
            if let Some(path) = compiled {
                d = d.with_note(format!("compiled SQL at `{path}`"));
            }
            Err(Box::new((vec![d], None)))
        }
    }
}
