//! The run's error log as the report shows it: per model and rule the
//! lines, severity, column, a suggestion and the values that broke it
//! most often, and the first lines themselves for the page's own viewer.
//! Queried on DataFusion over the run's `errors/*.parquet`, so a log of
//! millions of lines is counted without being held.

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use serde::Serialize;
use serde_json::{Map, Value};

use super::ReportError;
use crate::state::{RunDir, error_log};

/// Lines of the log the page carries (the rest are counted, and are in
/// the CSV files beside the report).
pub const LINES_SHOWN: usize = 5_000;
/// Offending values listed per rule.
const TOP_VALUES: usize = 5;

/// One rule of one model.
#[derive(Debug, Clone, Serialize)]
pub struct RuleFailures {
    pub model: String,
    pub rule: String,
    pub column: Option<String>,
    pub severity: String,
    pub lines: u64,
    pub suggestion: Option<String>,
    /// The values that broke it most often, with how often.
    pub top_values: Vec<(Option<String>, u64)>,
}

/// What the run's error log holds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ErrorLog {
    pub total: u64,
    pub rules: Vec<RuleFailures>,
    /// The first [`LINES_SHOWN`] lines, by model, rule and record.
    pub lines: Vec<Map<String, Value>>,
}

/// Reads the error log of the run in `run`.
pub async fn read(run: &RunDir) -> Result<ErrorLog, ReportError> {
    if error_log::log_files(&run.path).is_empty() {
        return Ok(ErrorLog::default());
    }
    let ctx = SessionContext::new();
    let dir = run.path.join("errors");
    ctx.register_parquet("log", dir.as_str(), ParquetReadOptions::default()).await?;
    let rows = |sql: String| {
        let ctx = ctx.clone();
        async move { json_rows(&ctx.sql(&sql).await?.collect().await?) }
    };
    let rules_sql = "SELECT model, rule, max(\"column\") AS \"column\", max(severity) AS severity, \
                     count(*) AS lines, max(suggestion) AS suggestion FROM log GROUP BY model, rule \
                     ORDER BY lines DESC, model, rule";
    let top_sql = format!(
        "SELECT model, rule, value, n FROM (SELECT model, rule, value, count(*) AS n, \
         row_number() OVER (PARTITION BY model, rule ORDER BY count(*) DESC, value) AS rank \
         FROM log GROUP BY model, rule, value) AS v WHERE rank <= {TOP_VALUES} ORDER BY model, rule, rank"
    );
    let lines_sql = format!(
        "SELECT model, record_key, rule, \"column\", value, severity, message, suggestion FROM log \
         ORDER BY model, rule, record_key LIMIT {LINES_SHOWN}"
    );
    let top = rows(top_sql).await?;
    let text = |row: &Map<String, Value>, k: &str| row.get(k).and_then(Value::as_str).map(str::to_owned);
    let count = |row: &Map<String, Value>, k: &str| row.get(k).and_then(Value::as_u64).unwrap_or(0);
    let rules: Vec<RuleFailures> = rows(rules_sql.to_owned())
        .await?
        .iter()
        .map(|r| {
            let (model, rule) = (text(r, "model").unwrap_or_default(), text(r, "rule").unwrap_or_default());
            let top_values = top
                .iter()
                .filter(|t| text(t, "model").as_ref() == Some(&model) && text(t, "rule").as_ref() == Some(&rule))
                .map(|t| (text(t, "value"), count(t, "n")))
                .collect();
            RuleFailures {
                column: text(r, "column"),
                severity: text(r, "severity").unwrap_or_default(),
                lines: count(r, "lines"),
                suggestion: text(r, "suggestion"),
                top_values,
                model,
                rule,
            }
        })
        .collect();
    let total = rules.iter().map(|r| r.lines).sum();
    Ok(ErrorLog { total, rules, lines: rows(lines_sql).await? })
}

/// Batches as JSON objects, one per row (NULLs left out).
pub(super) fn json_rows(batches: &[RecordBatch]) -> Result<Vec<Map<String, Value>>, ReportError> {
    let mut writer = arrow_json::ArrayWriter::new(Vec::new());
    writer.write_batches(&batches.iter().collect::<Vec<_>>())?;
    writer.finish()?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    Ok(serde_json::from_slice(&bytes)?)
}
