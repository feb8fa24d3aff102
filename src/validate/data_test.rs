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
use serde_json::{Map, Value as Json};

use crate::diagnostic::{Code, Diagnostic};
use crate::engine::Engine;
use crate::manifest::{Node, Resource};
use crate::project::nodes::{Test, TestKind};
use crate::stage::{self, StageError, StageOptions};

/// How many failing rows a failure's diagnostic shows.
const SAMPLE_ROWS: usize = 5;

/// What a failing test does to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Fails the test (and skips what depends on its model) when `error_if` holds.
    Error,
    /// Never fails; warns when `warn_if` holds.
    Warn,
}

/// A test's config, as dbt reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct TestConfig {
    pub severity: Severity,
    pub fail_calc: String,
    pub warn_if: Condition,
    pub error_if: Condition,
    pub limit: Option<u64>,
    pub store_failures: bool,
}

/// A threshold such as `!= 0` or `>10`: an operator and a number.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub op: &'static str,
    pub value: String,
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.op, self.value)
    }
}

impl Condition {
    /// Parses `!= 0`, `>10`, `>= 100`.
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        let op = ["!=", "<>", ">=", "<=", "==", "=", ">", "<"].into_iter().find(|op| t.starts_with(op))?;
        let value = t[op.len()..].trim();
        value.parse::<f64>().ok()?;
        let op = match op {
            "==" => "=",
            "<>" => "!=",
            other => other,
        };
        Some(Condition { op, value: value.to_owned() })
    }
}

impl TestConfig {
    /// Reads a test node's config; a bad value is the message to show.
    pub fn from_config(config: &Map<String, Json>) -> Result<Self, String> {
        let text = |key: &str| config.get(key).and_then(Json::as_str);
        let severity = match text("severity").map(str::to_ascii_lowercase).as_deref() {
            None | Some("error") => Severity::Error,
            Some("warn") => Severity::Warn,
            Some(other) => return Err(format!("`severity: {other}` must be `error` or `warn`")),
        };
        let condition = |key: &str| -> Result<Condition, String> {
            match config.get(key) {
                None | Some(Json::Null) => Ok(Condition { op: "!=", value: "0".into() }),
                Some(Json::String(s)) => Condition::parse(s)
                    .ok_or_else(|| format!("`{key}: {s}` must be a comparison with a number, such as `!= 0` or `>10`")),
                Some(other) => Err(format!("`{key}: {other}` must be a comparison such as `\"!= 0\"` or `\">10\"`")),
            }
        };
        let limit = match config.get("limit") {
            None | Some(Json::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| format!("`limit: {v}` must be a whole number"))?),
        };
        let store_failures = match config.get("store_failures") {
            None | Some(Json::Null) => false,
            Some(v) => v.as_bool().ok_or_else(|| format!("`store_failures: {v}` must be true or false"))?,
        };
        Ok(TestConfig {
            severity,
            fail_calc: text("fail_calc").unwrap_or("count(*)").to_owned(),
            warn_if: condition("warn_if")?,
            error_if: condition("error_if")?,
            limit,
            store_failures,
        })
    }

    /// The query dbt wraps around a test's SQL: one row of the failure
    /// count and whether it crosses each threshold.
    pub fn verdict_sql(&self, test_sql: &str) -> String {
        let calc = &self.fail_calc;
        format!(
            "select cast({calc} as bigint) as failures, ({calc}) {} as should_warn, ({calc}) {} as should_error \
             from (\n{}\n) dbt_internal_test",
            self.warn_if,
            self.error_if,
            self.failing_rows_sql(test_sql),
        )
    }

    /// The test's SQL, with its `limit`.
    pub fn failing_rows_sql(&self, test_sql: &str) -> String {
        let body = test_sql.trim_end().trim_end_matches(';');
        match self.limit {
            Some(n) => format!("select * from (\n{body}\n) dbt_limited limit {n}"),
            None => body.to_owned(),
        }
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
    #[error("{0}")]
    Config(String),
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
    config: &Map<String, Json>,
    failures_dir: &Utf8Path,
) -> Result<TestOutcome, TestError> {
    let config = TestConfig::from_config(config).map_err(TestError::Config)?;
    let plan = engine.plan(&config.verdict_sql(sql)).await?;
    let batches: Vec<_> = engine.execute(plan).await?.try_collect().await?;
    let (failures, should_warn, should_error) = read_verdict(&batches)?;
    let verdict = match config.severity {
        Severity::Error if should_error => Verdict::Fail,
        _ if should_warn => Verdict::Warn,
        _ => Verdict::Pass,
    };
    let mut outcome = TestOutcome { verdict, failures, config, sample: None, stored: None };
    if failures > 0 {
        let rows = outcome.config.failing_rows_sql(sql);
        let plan = engine.plan(&format!("select * from (\n{rows}\n) dbt_sample limit {SAMPLE_ROWS}")).await?;
        let sample: Vec<_> = engine.execute(plan).await?.try_collect().await?;
        if sample.iter().any(|b| b.num_rows() > 0) {
            let table =
                datafusion::arrow::util::pretty::pretty_format_batches(&sample).map_err(DataFusionError::from)?;
            outcome.sample = Some(table.to_string());
        }
    }
    if outcome.config.store_failures {
        let plan = engine.plan(&outcome.config.failing_rows_sql(sql)).await?;
        let partitions = engine.execute_partitioned(plan).await?;
        let staged = stage::write_stage(failures_dir, name, partitions, StageOptions::default()).await?;
        outcome.stored = Some(staged.dir);
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
        Resource::Test(Test { kind: TestKind::Generic { origin, .. }, .. }) => d.with_label(origin.name_label()),
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

    fn config(json: &str) -> Result<TestConfig, String> {
        TestConfig::from_config(&serde_json::from_str(json).unwrap())
    }

    #[test]
    fn defaults_are_dbts() {
        let c = config("{}").unwrap();
        assert_eq!(c.severity, Severity::Error);
        assert_eq!(c.warn_if.to_string(), "!= 0");
        assert_eq!(c.error_if.to_string(), "!= 0");
        assert_eq!(c.fail_calc, "count(*)");
        assert!(!c.store_failures);
    }

    #[test]
    fn thresholds_parse_and_bad_ones_are_named() {
        let c = config(r#"{"severity": "WARN", "error_if": ">10", "warn_if": ">= 2.5", "limit": 3}"#).unwrap();
        assert_eq!(c.severity, Severity::Warn);
        assert_eq!(c.error_if, Condition { op: ">", value: "10".into() });
        assert_eq!(c.warn_if.to_string(), ">= 2.5");
        assert_eq!(c.limit, Some(3));
        assert!(config(r#"{"error_if": "lots"}"#).unwrap_err().contains("`error_if: lots`"));
        assert!(config(r#"{"severity": "fatal"}"#).unwrap_err().contains("`severity: fatal`"));
        assert!(config(r#"{"limit": "ten"}"#).unwrap_err().contains("`limit"));
    }

    #[test]
    fn the_verdict_query_wraps_the_test_with_its_limit() {
        let c = config(r#"{"limit": 5, "error_if": "> 1"}"#).unwrap();
        let sql = c.verdict_sql("select * from t -- trailing comment");
        assert!(sql.contains("-- trailing comment\n) dbt_limited limit 5"), "{sql}");
        assert!(sql.contains("(count(*)) > 1 as should_error"), "{sql}");
    }
}
