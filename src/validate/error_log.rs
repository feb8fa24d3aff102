//! Reading the error log of past runs (`ferry errors`): the lines every
//! model's rules and every source's unreadable records logged (see
//! `state::error_log` for where), queried on the engine: a count by model,
//! rule and severity, and the lines themselves.

use std::time::SystemTime;

use anyhow::{Context as _, Result};
use camino::Utf8PathBuf;
use datafusion::arrow::record_batch::RecordBatch;
use futures::TryStreamExt as _;

use crate::engine::{Engine, EngineOptions};
use crate::state::run_record::RunRecord;
use crate::state::{RunDir, error_log};

/// Which lines to read.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// `last` (the latest run that logged anything), a run id, or every run.
    pub run: Option<String>,
    /// Only these models (none: all).
    pub models: Vec<String>,
    /// Only these rules (none: all).
    pub rules: Vec<String>,
    /// Only `error`, `warn` or `duplicate` lines.
    pub severity: Option<String>,
    /// Lines to return after the counts.
    pub limit: usize,
    /// Only runs that masked (a masked `ferry errors`): the logs of runs
    /// made in clear hold clear values.
    pub masked_only: bool,
}

/// What the error logs hold for a query.
pub enum Logs {
    /// No run (or not the one asked for) logged anything.
    NoRuns,
    /// Runs logged, but only runs made in clear, which a masked query
    /// leaves out (how many).
    Withheld(usize),
    /// Runs logged, but none of the lines asked for.
    NoLines,
    /// `runs` runs matched: the count by model, rule and severity, and the
    /// first lines; `withheld` runs made in clear were left out.
    Found { runs: usize, withheld: usize, summary: Vec<RecordBatch>, lines: Vec<RecordBatch> },
}

/// Reads the error logs under `runs` that `q` asks for.
pub async fn read(runs: &RunDir, q: &LogQuery) -> Result<Logs> {
    let all = error_log::runs_with_logs(runs);
    let chosen: Vec<&(Utf8PathBuf, SystemTime)> = match q.run.as_deref() {
        None => all.iter().collect(),
        Some("last") => all.iter().max_by_key(|(_, t)| *t).into_iter().collect(),
        Some(id) => all.iter().filter(|(d, _)| d.file_name() == Some(id)).collect(),
    };
    if chosen.is_empty() {
        return Ok(Logs::NoRuns);
    }
    let before = chosen.len();
    let chosen: Vec<_> = chosen.into_iter().filter(|(dir, _)| !q.masked_only || made_masked(runs, dir)).collect();
    let withheld = before - chosen.len();
    if chosen.is_empty() {
        return Ok(Logs::Withheld(withheld));
    }
    let files: Vec<String> = chosen
        .iter()
        .flat_map(|(dir, _)| error_log::log_files(dir))
        .filter(|f| q.models.is_empty() || q.models.iter().any(|m| f.file_stem() == Some(m.as_str())))
        .map(|f| f.to_string())
        .collect();
    if files.is_empty() {
        return Ok(Logs::NoLines);
    }
    let engine = Engine::new(&EngineOptions::default())?;
    engine.register_parquet_files("errors", files).await.context("failed to read the error logs")?;
    let filter = where_clause(q);
    let summary = query(
        &engine,
        &format!(
            "SELECT model, rule, severity, count(*) AS lines, count(DISTINCT run_id) AS runs FROM errors{filter} \
             GROUP BY model, rule, severity ORDER BY lines DESC, model, rule"
        ),
    )
    .await?;
    let lines = query(
        &engine,
        &format!(
            "SELECT run_id, model, record_key, rule, \"column\", value, severity, message, suggestion FROM errors{filter} \
             ORDER BY run_id, model, rule, record_key LIMIT {}",
            q.limit
        ),
    )
    .await?;
    Ok(Logs::Found { runs: chosen.len(), withheld, summary, lines })
}

/// Whether the run in `dir` (under `runs`) recorded that it masked; a run
/// that left no readable record counts as made in clear.
fn made_masked(runs: &RunDir, dir: &Utf8PathBuf) -> bool {
    let Some(id) = dir.file_name() else { return false };
    matches!(RunRecord::read(&runs.join(id)), Ok(Some(record)) if record.masked)
}

fn where_clause(q: &LogQuery) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut parts = Vec::new();
    if !q.rules.is_empty() {
        parts.push(format!("rule IN ({})", q.rules.iter().map(|r| quote(r)).collect::<Vec<_>>().join(", ")));
    }
    if let Some(s) = &q.severity {
        parts.push(format!("severity = {}", quote(s)));
    }
    if parts.is_empty() { String::new() } else { format!(" WHERE {}", parts.join(" AND ")) }
}

async fn query(engine: &Engine, sql: &str) -> Result<Vec<RecordBatch>> {
    let plan = engine.plan(sql).await?;
    Ok(engine.execute(plan).await?.try_collect().await?)
}
