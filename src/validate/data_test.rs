//! dbt data tests: a test's SQL returns failing rows; ferry counts them
//! (`fail_calc`, default `count(*)`) and compares the count with the test's
//! `warn_if` and `error_if` (default `!= 0`), under its `severity`, exactly
//! as dbt does. Optionally the failing rows are kept (`store_failures`) as
//! Parquet under the run's directory.

use camino::{Utf8Path, Utf8PathBuf};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::error::DataFusionError;
use futures::TryStreamExt as _;

use crate::diagnostic::{Code, Diagnostic};
use crate::engine::Engine;
use crate::manifest::config::{Severity, TestConfig};
use crate::manifest::{Node, Resource};
use crate::project::nodes::{Test, TestKind};
use crate::stage::{self, StageError, StageOptions};

/// How many failing rows a failure's diagnostic shows.
const SAMPLE_ROWS: usize = 5;

/// The query dbt wraps around a test's SQL: one row of the failure count
/// and whether it crosses each threshold.
pub fn verdict_sql(config: &TestConfig, test_sql: &str) -> String {
    let calc = &config.fail_calc;
    format!(
        "select cast({calc} as bigint) as failures, ({calc}) {} as should_warn, ({calc}) {} as should_error \
         from (\n{}\n) dbt_internal_test",
        config.warn_if,
        config.error_if,
        failing_rows_sql(config, test_sql),
    )
}

/// The test's SQL, with its `limit`.
pub fn failing_rows_sql(config: &TestConfig, test_sql: &str) -> String {
    let body = test_sql.trim_end().trim_end_matches(';');
    match config.limit {
        Some(n) => format!("select * from (\n{body}\n) dbt_limited limit {n}"),
        None => body.to_owned(),
    }
}

/// How a test came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

/// A test's result.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    pub verdict: Verdict,
    /// `fail_calc` over the failing rows (by default, how many there are).
    pub failures: u64,
    pub config: TestConfig,
    /// The first failing rows as a text table, when the test did not pass.
    pub sample: Option<String>,
    /// Where the failing rows were stored (`store_failures`).
    pub stored: Option<Utf8PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error(transparent)]
    Query(#[from] DataFusionError),
    #[error("could not store the failing rows: {0}")]
    Store(#[from] StageError),
}

/// Runs a test's rendered SQL. With `store_failures`, the failing rows are
/// written under `failures_dir/<name>/`.
pub async fn run(
    engine: &Engine,
    name: &str,
    sql: &str,
    config: TestConfig,
    failures_dir: &Utf8Path,
) -> Result<TestOutcome, TestError> {
    let plan = engine.plan(&verdict_sql(&config, sql)).await?;
    let batches: Vec<_> = engine.execute(plan).await?.try_collect().await?;
    let (failures, should_warn, should_error) = read_verdict(&batches)?;
    let verdict = match config.severity {
        Severity::Error if should_error => Verdict::Fail,
        _ if should_warn => Verdict::Warn,
        _ => Verdict::Pass,
    };
    let mut outcome = TestOutcome { verdict, failures, config, sample: None, stored: None };
    if failures > 0 {
        let rows = failing_rows_sql(&outcome.config, sql);
        let plan = engine.plan(&format!("select * from (\n{rows}\n) dbt_sample limit {SAMPLE_ROWS}")).await?;
        let sample: Vec<_> = engine.execute(plan).await?.try_collect().await?;
        if sample.iter().any(|b| b.num_rows() > 0) {
            let table =
                datafusion::arrow::util::pretty::pretty_format_batches(&sample).map_err(DataFusionError::from)?;
            outcome.sample = Some(table.to_string());
        }
    }
    if outcome.config.store_failures {
        let plan = engine.plan(&failing_rows_sql(&outcome.config, sql)).await?;
        let partitions = engine.execute_partitioned(plan).await?;
        let staged = stage::write_stage(failures_dir, name, partitions, StageOptions::default()).await?;
        outcome.stored = staged.dir.local().map(ToOwned::to_owned);
    }
    Ok(outcome)
}

fn read_verdict(batches: &[datafusion::arrow::record_batch::RecordBatch]) -> Result<(u64, bool, bool), TestError> {
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok((0, false, false));
    };
    let failures = batch.column(0);
    let failures = match failures.data_type() {
        DataType::Int64 if !failures.is_null(0) => {
            failures.as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(0).max(0) as u64
        }
        _ => 0,
    };
    let flag = |k: usize| {
        let c = batch.column(k);
        c.data_type() == &DataType::Boolean && !c.is_null(0) && c.as_boolean().value(0)
    };
    Ok((failures, flag(1), flag(2)))
}

/// The diagnostic for a test that warned or failed, pointing at where the
/// test is declared, with the first failing rows.
pub fn outcome_diagnostic(node: &Node, outcome: &TestOutcome, compiled: Option<&Utf8Path>) -> Option<Diagnostic> {
    let (word, condition) = match outcome.verdict {
        Verdict::Pass => return None,
        Verdict::Warn => ("warned", format!("warn if {}", outcome.config.warn_if)),
        Verdict::Fail => ("failed", format!("fail if {}", outcome.config.error_if)),
    };
    let n = outcome.failures;
    let message =
        format!("test `{}` {word}: {n} result{}, configured to {condition}", node.name, if n == 1 { "" } else { "s" });
    let mut d = match outcome.verdict {
        Verdict::Warn => Diagnostic::warning(Code::TestFailed, message),
        _ => Diagnostic::error(Code::TestFailed, message),
    };
    d = match &node.resource {
        Resource::Test(Test { kind: TestKind::Generic { origin, .. } | TestKind::Unit { origin, .. }, .. }) => {
            d.with_label(origin.name_label())
        }
        _ => d.in_file(node.path()),
    };
    if let Some(sample) = &outcome.sample {
        let shown = if n as usize > SAMPLE_ROWS { format!("first {SAMPLE_ROWS} ") } else { String::new() };
        d = d.with_note(format!("failing rows ({shown}of the test's query):\n{sample}"));
    }
    if let Some(dir) = &outcome.stored {
        d = d.with_note(format!("all failing rows are stored in `{dir}`"));
    }
    if let Some(path) = compiled {
        d = d.with_note(format!("compiled SQL at `{path}`"));
    }
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_query_wraps_the_test_with_its_limit() {
        let c = TestConfig::read(&serde_json::from_str(r#"{"limit": 5, "error_if": "> 1"}"#).unwrap()).unwrap();
        let sql = verdict_sql(&c, "select * from t -- trailing comment");
        assert!(sql.contains("-- trailing comment\n) dbt_limited limit 5"), "{sql}");
        assert!(sql.contains("(count(*)) > 1 as should_error"), "{sql}");
    }
}
