//! `.ferry/run_results.json`: one entry per node with status, timing, rows
//! and error, dbt-like in shape so tools that read dbt's file can read it.

use serde::Serialize;

use crate::diagnostic::Diagnostic;
use crate::manifest::{Manifest, Node};
use crate::stage::StagedTable;

/// How a node ended, in dbt's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Success,
    Error,
    Skipped,
    /// A test that found nothing over its thresholds.
    Pass,
    /// A test whose `warn_if` held (or a `severity: warn` test that failed).
    Warn,
    /// A test whose `error_if` held.
    Fail,
}

impl Status {
    /// Whether the node failed the run.
    pub fn is_failure(self) -> bool {
        matches!(self, Status::Error | Status::Fail)
    }
}

#[derive(Debug, Serialize)]
pub struct RunResults {
    pub metadata: Metadata,
    pub results: Vec<NodeResult>,
    pub elapsed_time: f64,
    pub args: Args,
    /// Diagnostics of failed nodes, printed at the end of the run.
    #[serde(skip)]
    pub diagnostics: Vec<Diagnostic>,
}

#[derive(Debug, Serialize)]
pub struct Metadata {
    pub ferry_version: &'static str,
    pub generated_at: String,
    pub invocation_id: String,
}

#[derive(Debug, Serialize)]
pub struct Args {
    pub which: &'static str,
    pub interrupted: bool,
}

#[derive(Debug, Serialize)]
pub struct NodeResult {
    pub unique_id: String,
    pub status: Status,
    pub materialized: &'static str,
    pub timing: Vec<Timing>,
    pub execution_time: f64,
    /// Rows written, for executed nodes (`adapter_response.rows_affected` in dbt).
    pub rows: Option<u64>,
    pub adapter_response: AdapterResponse,
    pub message: Option<String>,
    /// For tests: `fail_calc` over the failing rows (their count by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures: Option<u64>,
    /// For models with rules: every row produced, staged or quarantined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger: Option<crate::validate::quarantine::Ledger>,
    pub stage: Option<StageRef>,
    /// The load into the target, for nodes that were loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadResult>,
    /// How reconciling the loaded table went (`build`; details in the run's `reconcile.json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<crate::reconcile::Status>,
}

/// How loading a staged node into the target went.
#[derive(Debug, Serialize)]
pub struct LoadResult {
    pub status: Status,
    #[serde(flatten)]
    pub report: Option<crate::backend::LoadReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Timing {
    pub name: &'static str,
    pub started_at: String,
    pub completed_at: String,
}

#[derive(Debug, Serialize)]
pub struct AdapterResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_affected: Option<u64>,
}

/// Where a staged node's rows are, and their checksum.
#[derive(Debug, Serialize)]
pub struct StageRef {
    pub path: String,
    pub files: usize,
    pub checksum: String,
}

impl NodeResult {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node: &Node,
        status: Status,
        materialized: &'static str,
        secs: f64,
        rows: Option<u64>,
        message: Option<String>,
        started_at: Option<chrono::DateTime<chrono::Utc>>,
        staged: Option<&StagedTable>,
    ) -> Self {
        let timing = started_at
            .map(|t0| {
                let t1 = t0 + chrono::Duration::microseconds((secs * 1e6) as i64);
                vec![Timing { name: "execute", started_at: t0.to_rfc3339(), completed_at: t1.to_rfc3339() }]
            })
            .unwrap_or_default();
        NodeResult {
            unique_id: node.unique_id.clone(),
            status,
            materialized,
            timing,
            execution_time: secs,
            rows,
            adapter_response: AdapterResponse { rows_affected: rows },
            message,
            failures: None,
            ledger: None,
            stage: staged.map(|s| StageRef {
                path: s.dir.to_string(),
                files: s.manifest.files.len(),
                checksum: s.manifest.checksum.clone(),
            }),
            load: None,
            reconcile: None,
        }
    }
}

impl RunResults {
    pub fn new(
        manifest: &Manifest,
        which: &'static str,
        results: Vec<NodeResult>,
        elapsed_time: f64,
        interrupted: bool,
        diagnostics: Vec<Diagnostic>,
    ) -> Self {
        RunResults {
            metadata: Metadata {
                ferry_version: env!("CARGO_PKG_VERSION"),
                generated_at: chrono::Utc::now().to_rfc3339(),
                invocation_id: manifest.globals.invocation_id.clone(),
            },
            results,
            elapsed_time,
            args: Args { which, interrupted },
            diagnostics,
        }
    }
}
