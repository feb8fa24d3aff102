//! Running one scheduled node: a model or seed is materialized, a test is
//! run against what the run staged. What comes back is typed: what became
//! of the node, and what it has to say.

use camino::Utf8PathBuf;
use chrono::{DateTime, Utc};

use super::materialize::{self, Materialized, Places};
use crate::diagnostic::{Code, Diagnostic};
use crate::engine::Engine;
use crate::manifest::{Manifest, NodeId, Resource};
use crate::project::nodes::{Test, TestKind};
use crate::state::{Layout, Ledger, RunDir};
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

/// A node that ran, with when it started and what it has to say (a test's warning).
pub struct Done {
    pub started_at: DateTime<Utc>,
    pub outcome: Outcome,
    pub diagnostics: Vec<Diagnostic>,
}

/// A node that failed, with when it started; for a failed test, its result;
/// for a model over its quarantine threshold, its ledger.
pub struct Failed {
    pub started_at: DateTime<Utc>,
    pub diagnostics: Vec<Diagnostic>,
    pub test: Option<TestOutcome>,
    pub ledger: Option<Ledger>,
}

/// Materializes a model or seed, or runs a test.
pub async fn run_node(
    engine: &Engine,
    manifest: &Manifest,
    id: NodeId,
    places: &Places,
    tests: &TestPlaces,
) -> Result<Done, Box<Failed>> {
    let started_at = Utc::now();
    if !matches!(manifest[id].resource, Resource::Test(_)) {
        return match materialize::materialize(engine, manifest, id, places).await {
            Ok(m) => Ok(Done { started_at, outcome: Outcome::Materialized(m), diagnostics: Vec::new() }),
            Err(e) => Err(Box::new(Failed { started_at, diagnostics: e.diagnostics, test: None, ledger: e.ledger })),
        };
    }
    run_test(engine, manifest, id, tests)
        .await
        .map_err(|diagnostics| {
            let (diagnostics, test) = *diagnostics;
            Box::new(Failed { started_at, diagnostics, test, ledger: None })
        })
        .map(|(outcome, diagnostics)| Done { started_at, outcome: Outcome::Tested(outcome), diagnostics })
}

type TestFailure = Box<(Vec<Diagnostic>, Option<TestOutcome>)>;

/// Runs test `id`: its outcome and diagnostic (a warning), or why it failed.
async fn run_test(
    engine: &Engine,
    manifest: &Manifest,
    id: NodeId,
    tests: &TestPlaces,
) -> Result<(TestOutcome, Vec<Diagnostic>), TestFailure> {
    let node = &manifest[id];
    let sql = node.rendered.as_ref().map(|r| r.sql.as_str()).unwrap_or_default();
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
