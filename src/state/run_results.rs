//! `.ferry/run_results.json`: one entry per node with status, timing, rows
//! and error, dbt-like in shape so tools that read dbt's file can read it.
//! The records are ferry's own plain data (built by the run from its
//! report), written and read back here.

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::{Layout, Ledger, files};

/// How a node ended, in dbt's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// How reconciling a loaded table went (details in the run's
/// `reconcile.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReconcileVerdict {
    Pass,
    Fail,
    Skipped,
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResults {
    pub metadata: Metadata,
    pub results: Vec<NodeResult>,
    pub elapsed_time: f64,
    pub args: Args,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub ferry_version: String,
    pub generated_at: String,
    pub invocation_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Args {
    pub which: String,
    pub interrupted: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeResult {
    pub unique_id: String,
    pub status: Status,
    pub materialized: String,
    pub timing: Vec<Timing>,
    pub execution_time: f64,
    /// Rows written, for executed nodes (`adapter_response.rows_affected` in dbt).
    pub rows: Option<u64>,
    pub adapter_response: AdapterResponse,
    pub message: Option<String>,
    /// For tests: `fail_calc` over the failing rows (their count by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<u64>,
    /// For models with rules: every row produced, staged or quarantined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<Ledger>,
    pub stage: Option<StageRef>,
    /// The load into the target, for nodes that were loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadResult>,
    /// How reconciling the loaded table went (`build`; details in the run's `reconcile.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<ReconcileVerdict>,
    /// For incremental models: how this run went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<IncrementalRecord>,
    /// For change-detected models: what changed since the kept hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<ChangesRecord>,
}

/// What change detection found in a run of a model (`change_detection:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangesRecord {
    /// `changes`, or `full` (every row staged; with `reason`).
    pub run: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Keys gone from the extract.
    pub deleted: u64,
    /// What was done with them: `hard`, `soft` or `ignore`.
    pub deletes: String,
    /// Whether this run's row hashes are now the kept ones (after its
    /// load and reconciliation succeeded).
    pub hashes_kept: bool,
}

/// What a run of an incremental model did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncrementalRecord {
    /// `incremental`, or `full` (with `reason`).
    pub run: String,
    pub strategy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// This run's new rows (an incremental run's increment).
    pub rows: u64,
    /// Rows of the model's data after the run.
    pub total_rows: u64,
    /// Rows of the model's data before the run (none: built in full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_rows: Option<u64>,
    /// Where the increment is staged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub increment: Option<StageRef>,
    /// How the model's columns differ from its current data's (what
    /// `on_schema_change` acted on, or ignored).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schema_changes: Vec<String>,
    /// Whether the model's stage now holds the run's result (an
    /// incremental model's stage advances only once its load commits).
    pub committed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<CursorRecord>,
    /// The batches a `microbatch` model built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batches: Option<BatchesRecord>,
}

/// The window of time batches a microbatch model built (UTC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchesRecord {
    /// `hour`, `day`, `month` or `year`.
    pub batch_size: String,
    pub count: u64,
    pub start: String,
    /// The end of the last batch, not included.
    pub end: String,
}

/// What a run did with an incremental model's cursor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CursorRecord {
    pub column: String,
    /// The high-water mark rows were read from (none: every row was read).
    pub from: Option<String>,
    /// The largest value in the model's data after the run.
    pub high: Option<String>,
    /// Whether the kept mark moved to `high` (once load and reconciliation succeeded).
    pub advanced: bool,
}

/// How loading a staged node into the target went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadResult {
    pub status: Status,
    #[serde(flatten)]
    pub report: Option<LoadRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What a finished load did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadRecord {
    pub table: String,
    pub mode: String,
    pub rows: u64,
    /// The bulk path used, such as `binary COPY`.
    pub strategy: String,
    pub seconds: f64,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub name: String,
    pub started_at: String,
    pub completed_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_affected: Option<u64>,
}

/// Where a staged node's rows are, and their checksum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRef {
    pub path: String,
    pub files: usize,
    pub checksum: String,
}

impl RunResults {
    /// Writes `.ferry/run_results.json` (atomically, fsynced).
    pub fn write(&self, layout: &Layout) -> Result<()> {
        let path = layout.run_results();
        files::write_atomic(&path, &serde_json::to_vec_pretty(self)?, true)
            .with_context(|| format!("failed to write `{path}`"))
    }

    /// The last run's results, or `None` when there are none (or they
    /// cannot be read: a file from another version is not an error).
    pub fn read(layout: &Layout) -> Option<RunResults> {
        let text = fs_err::read_to_string(layout.run_results()).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The result of the node `unique_id`.
    pub fn node(&self, unique_id: &str) -> Option<&NodeResult> {
        self.results.iter().find(|r| r.unique_id == unique_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(status: Status, load: Option<LoadResult>) -> NodeResult {
        NodeResult {
            unique_id: "model.shop.orders".into(),
            status,
            materialized: "table".into(),
            timing: Vec::new(),
            execution_time: 0.5,
            rows: Some(3),
            adapter_response: AdapterResponse { rows_affected: Some(3) },
            message: None,
            failures: None,
            ledger: Some(Ledger { produced: 4, staged: 3, quarantined: 1, ..Ledger::default() }),
            stage: Some(StageRef { path: ".ferry/stage/orders".into(), files: 1, checksum: "00".into() }),
            load,
            reconcile: Some(ReconcileVerdict::Pass),
            incremental: None,
            changes: None,
        }
    }

    #[test]
    fn results_read_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(camino::Utf8PathBuf::try_from(dir.path().to_owned()).unwrap());
        let loaded = LoadRecord {
            table: "main.orders".into(),
            mode: "replace".into(),
            rows: 3,
            strategy: "insert".into(),
            seconds: 0.1,
            notes: vec![],
        };
        let results = RunResults {
            metadata: Metadata { ferry_version: "0".into(), generated_at: "t".into(), invocation_id: "id".into() },
            results: vec![
                node(
                    Status::Success,
                    Some(LoadResult { status: Status::Success, report: Some(loaded), message: None }),
                ),
                node(
                    Status::Error,
                    Some(LoadResult { status: Status::Error, report: None, message: Some("x".into()) }),
                ),
            ],
            elapsed_time: 1.0,
            args: Args { which: "build".into(), interrupted: false },
        };
        results.write(&layout).unwrap();
        let text = fs_err::read_to_string(layout.run_results()).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["results"][0]["load"]["strategy"], "insert", "a load's report is flattened into it");
        assert_eq!(json["results"][1]["load"], serde_json::json!({"status": "error", "message": "x"}));
        assert_eq!(RunResults::read(&layout), Some(results));
    }
}
