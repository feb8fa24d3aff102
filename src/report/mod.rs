//! The sign-off report: one self-contained HTML file per run,
//! `.ferry/runs/<run>/report.html`, that a business user can read without
//! ferry and without a network: what ran and when, every node's status
//! and timings, the row ledger of each model (in = staged + quarantined +
//! duplicates) with a bar each, the rule failures with the values that
//! broke them, a searchable and paginated error log, every reconciliation
//! check with the keys that differ, the lineage drawn from sources to
//! target tables, the latest source audit, error rates over the run
//! history, and, in plain words, what was not checked.
//!
//! It is built from what the run left on disk (its record `run.json`,
//! `reconcile.json`, `errors/*.parquet`, the history, `.ferry/audit/`), so
//! any recorded run can be reported on again (`ferry report --run ID`).
//! The page is a minijinja template (`page.html`, HTML auto-escaped) with
//! its styles and a small script inline; the charts are inline SVG.

mod errors;
mod lineage;
mod page;

use camino::Utf8PathBuf;

use crate::state::run_record::{self, RunRecord};
use crate::state::{Layout, RunDir, files};

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("no run has left a record under `{0}/` yet: run `ferry build` (or `run`, `seed`, `test`) first")]
    NoRuns(Utf8PathBuf),
    #[error("there is no recorded run `{id}` under `{dir}/`{known}")]
    UnknownRun { id: String, dir: Utf8PathBuf, known: String },
    #[error("failed to read `{path}`: {message}")]
    Read { path: Utf8PathBuf, message: String },
    #[error("failed to write `{path}`: {message}")]
    Write { path: Utf8PathBuf, message: String },
    #[error(transparent)]
    State(#[from] anyhow::Error),
    #[error("failed to query the run's files: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    #[error("failed to read the run's files: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("failed to render the report: {0:#}")]
    Render(#[from] minijinja::Error),
}

/// Which run to report on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which {
    /// The latest run that left a record.
    Last,
    /// A run id (or a prefix of one, as `ferry history` shows them).
    Id(String),
}

impl Which {
    /// `last` or an id.
    pub fn parse(text: &str) -> Which {
        match text {
            "last" => Which::Last,
            id => Which::Id(id.to_owned()),
        }
    }
}

/// A report written.
#[derive(Debug, Clone)]
pub struct Written {
    pub run_id: String,
    /// The file, as written and as shown (relative to the project).
    pub file: RunDir,
}

/// Writes the report of run `which` into its directory.
pub async fn write(layout: &Layout, which: &Which) -> Result<Written, ReportError> {
    let (run, record) = find(layout, which)?;
    let html = page::render(layout, &run, &record).await?;
    let file = run.join("report.html");
    files::write_atomic(&file.path, html.as_bytes(), true)
        .map_err(|e| ReportError::Write { path: file.shown.clone(), message: e.to_string() })?;
    Ok(Written { run_id: record.run_id, file })
}

/// Writes audit `id`'s page, `audit.html`, beside its `audit.json`;
/// `project` names it.
pub fn write_audit(layout: &Layout, project: &str, id: &str) -> Result<RunDir, ReportError> {
    let html = page::render_audit(layout, project, id)?;
    let file = layout.audits().join(id).join("audit.html");
    files::write_atomic(&file.path, html.as_bytes(), true)
        .map_err(|e| ReportError::Write { path: file.shown.clone(), message: e.to_string() })?;
    Ok(file)
}

/// The run's directory and record.
fn find(layout: &Layout, which: &Which) -> Result<(RunDir, RunRecord), ReportError> {
    let runs = layout.runs();
    let recorded = runs.newest_holding(run_record::FILE);
    let id = match which {
        Which::Last => recorded.first().cloned().ok_or_else(|| ReportError::NoRuns(runs.shown.clone()))?,
        Which::Id(id) => {
            let matching: Vec<&String> = recorded.iter().filter(|r| r.starts_with(id.as_str())).collect();
            match matching.as_slice() {
                [one] => (*one).clone(),
                _ => {
                    let known = if recorded.is_empty() {
                        String::new()
                    } else {
                        let some: Vec<&str> = recorded.iter().take(5).map(String::as_str).collect();
                        let what = if matching.len() > 1 { "it starts more than one: " } else { "the latest: " };
                        format!("; {what}{}", some.join(", "))
                    };
                    return Err(ReportError::UnknownRun { id: id.clone(), dir: runs.shown.clone(), known });
                }
            }
        }
    };
    let run = runs.join(&id);
    let record = RunRecord::read(&run)?.ok_or_else(|| ReportError::UnknownRun {
        id: id.clone(),
        dir: runs.shown.clone(),
        known: String::new(),
    })?;
    Ok((run, record))
}
