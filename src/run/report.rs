//! What a run did, node by node: the typed [`RunReport`] that `execute`
//! returns and the commands render, and the plain records of
//! `run_results.json` built from it.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::Which;
use super::incremental::CursorRun;
use super::materialize::{ChangeRun, Materialized};
use super::microbatch::Window;
use crate::backend::{ColumnSync, LoadReport};
use crate::diagnostic::Diagnostic;
use crate::manifest::config::Strategy;
use crate::manifest::{Manifest, Materialization, Node, NodeId, Resource};
use crate::reconcile::{self, Reconciled};
use crate::stage::StagedTable;
use crate::state::Ledger;
use crate::state::run_results::{
    AdapterResponse, Args, BatchesRecord, ChangesRecord, CursorRecord, IncrementalRecord, LoadRecord, LoadResult,
    Metadata, NodeResult, ReconcileVerdict, RunResults, StageRef, Status, Timing,
};
use crate::validate::{TestOutcome, Verdict};

/// How one node ended, and what became of its stage.
#[derive(Debug, Clone)]
pub struct NodeReport {
    pub status: Status,
    /// `table`, `view`, `seed`, `test`...
    pub kind: &'static str,
    pub seconds: f64,
    pub started_at: Option<DateTime<Utc>>,
    /// Rows written, for executed nodes.
    pub rows: Option<u64>,
    /// Why it failed or was skipped; a test's result count.
    pub message: Option<String>,
    pub staged: Option<StagedTable>,
    /// A view computed once: how many models of the run read it.
    pub readers: Option<usize>,
    /// For models with rules: every row produced, staged or quarantined.
    pub ledger: Option<Ledger>,
    /// For a test that ran: `fail_calc` over its failing rows.
    pub failures: Option<u64>,
    /// The load into the target, for nodes that were loaded.
    pub load: Option<Result<LoadReport, String>>,
    /// How reconciling the loaded table went (`build`).
    pub reconcile: Option<reconcile::Status>,
    /// An incremental model's run.
    pub incremental: Option<IncrementalReport>,
    /// A change-detected model's run.
    pub change: Option<ChangeRun>,
    /// The jobs its queries ran as, when the run was on a cluster.
    pub cluster: Vec<crate::state::run_record::ClusterJob>,
}

/// What an incremental model's run did; its next version is the report's
/// `staged`.
#[derive(Debug, Clone)]
pub struct IncrementalReport {
    pub strategy: Strategy,
    /// This run's rows (`None`: built in full, its rows are `staged`).
    pub increment: Option<StagedTable>,
    /// Why it was built in full, when it was.
    pub full: Option<String>,
    /// Differences from the current columns that were ignored.
    pub schema_change: Vec<String>,
    /// Whether `staged` has replaced the model's stage (once its load
    /// committed, or at once when it does not load).
    pub committed: bool,
    /// What it did with its cursor, and whether the kept high-water mark
    /// advanced (once the model's load and reconciliation succeeded).
    pub cursor: Option<CursorRun>,
    pub advanced: bool,
    /// How its table's columns follow the increment's.
    pub column_sync: ColumnSync,
    /// The batches a `microbatch` model built.
    pub window: Option<Window>,
    /// Rows of its current data before this run (`None`: built in full).
    pub previous_rows: Option<u64>,
}

/// What a run did.
#[derive(Debug)]
pub struct RunReport {
    pub which: Which,
    pub run_id: String,
    pub nodes: BTreeMap<NodeId, NodeReport>,
    /// The diagnostics of nodes and loads that failed, and of tests that
    /// warned, in the order they happened.
    pub diagnostics: Vec<Diagnostic>,
    /// Whether loading or planning the project found an error.
    pub planning_failed: bool,
    /// Stopped by Ctrl-C while nodes ran.
    pub interrupted: bool,
    /// Stopped by Ctrl-C while loading.
    pub load_interrupted: bool,
    pub started: Instant,
    pub elapsed: f64,
    /// `build`'s reconciliation of what it loaded, and when it started.
    pub reconciled: Option<(Reconciled, Instant)>,
    /// Old runs whose files `history.keep_runs` removed.
    pub pruned: Vec<String>,
    /// The cluster the models ran on, and the tables ferry read here and
    /// staged for it, which the cluster cannot read.
    pub cluster: Option<crate::state::run_record::ClusterRun>,
}

impl RunReport {
    /// Nodes that ended with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.nodes.values().filter(|r| r.status == status).count()
    }

    /// Nodes that failed the run.
    pub fn failed(&self) -> usize {
        self.nodes.values().filter(|r| r.status.is_failure()).count()
    }

    /// Loads that failed.
    pub fn loads_failed(&self) -> usize {
        self.nodes.values().filter(|r| matches!(r.load, Some(Err(_)))).count()
    }

    /// The records of `run_results.json`, sorted by unique id.
    pub fn results(&self, manifest: &Manifest) -> RunResults {
        let mut results: Vec<NodeResult> = self.nodes.iter().map(|(&id, r)| r.result(&manifest[id])).collect();
        results.sort_by(|a, b| a.unique_id.cmp(&b.unique_id));
        RunResults {
            metadata: Metadata {
                ferry_version: env!("CARGO_PKG_VERSION").to_owned(),
                generated_at: Utc::now().to_rfc3339(),
                invocation_id: self.run_id.clone(),
            },
            results,
            elapsed_time: self.elapsed,
            args: Args { which: self.which.name().to_owned(), interrupted: self.interrupted || self.load_interrupted },
        }
    }
}

impl NodeReport {
    /// A node that ended without running: failed to compile, or skipped.
    pub fn not_run(node: &Node, status: Status, message: String) -> Self {
        NodeReport {
            status,
            kind: kind_of(node),
            seconds: 0.0,
            started_at: None,
            rows: None,
            message: Some(message),
            staged: None,
            readers: None,
            ledger: None,
            failures: None,
            load: None,
            reconcile: None,
            incremental: None,
            change: None,
            cluster: Vec::new(),
        }
    }

    /// A model or seed that was materialized.
    pub fn materialized(node: &Node, m: &Materialized, readers: usize, (seconds, at): (f64, DateTime<Utc>)) -> Self {
        let (staged, ledger) = match m {
            Materialized::Staged(t, ledger) => (Some(t.clone()), ledger.clone()),
            Materialized::Incremental(i) => (Some(i.next.clone()), i.ledger.clone()),
            Materialized::Detected(d) => (Some(d.staged.clone()), d.ledger.clone()),
            _ => (None, None),
        };
        let incremental = match m {
            Materialized::Incremental(i) => Some(IncrementalReport {
                strategy: i.strategy,
                increment: i.increment.clone(),
                full: i.full.clone(),
                schema_change: i.schema_change.describe(),
                committed: false,
                cursor: i.cursor.clone(),
                advanced: false,
                column_sync: i.column_sync.clone(),
                window: i.window.clone(),
                previous_rows: i.previous_rows,
            }),
            _ => None,
        };
        NodeReport {
            status: Status::Success,
            rows: m.rows(),
            started_at: Some(at),
            seconds,
            staged,
            ledger,
            readers: matches!(m, Materialized::ComputedOnce(_)).then_some(readers),
            incremental,
            change: match m {
                Materialized::Detected(d) => Some(d.change.clone()),
                _ => None,
            },
            message: None,
            ..NodeReport::not_run(node, Status::Success, String::new())
        }
    }

    /// A node that failed while it ran.
    pub fn failed(
        node: &Node,
        message: Option<String>,
        ledger: Option<Ledger>,
        (seconds, at): (f64, DateTime<Utc>),
    ) -> Self {
        NodeReport {
            seconds,
            started_at: Some(at),
            ledger,
            message,
            ..NodeReport::not_run(node, Status::Error, String::new())
        }
    }

    /// A test that ran: `pass`, `warn` or `fail` with its failures.
    pub fn tested(node: &Node, t: &TestOutcome, (seconds, at): (f64, DateTime<Utc>)) -> Self {
        let status = match t.verdict {
            Verdict::Pass => Status::Pass,
            Verdict::Warn => Status::Warn,
            Verdict::Fail => Status::Fail,
        };
        let message = match t.verdict {
            Verdict::Pass => None,
            _ => Some(format!("Got {} result{}", t.failures, if t.failures == 1 { "" } else { "s" })),
        };
        NodeReport {
            seconds,
            started_at: Some(at),
            failures: Some(t.failures),
            message,
            ..NodeReport::not_run(node, status, String::new())
        }
    }

    fn result(&self, node: &Node) -> NodeResult {
        let timing = self
            .started_at
            .map(|t0| {
                let t1 = t0 + chrono::Duration::microseconds((self.seconds * 1e6) as i64);
                vec![Timing { name: "execute".into(), started_at: t0.to_rfc3339(), completed_at: t1.to_rfc3339() }]
            })
            .unwrap_or_default();
        NodeResult {
            unique_id: node.unique_id.clone(),
            status: self.status,
            materialized: self.kind.to_owned(),
            timing,
            execution_time: self.seconds,
            rows: self.rows,
            adapter_response: AdapterResponse { rows_affected: self.rows },
            message: self.message.clone(),
            failures: self.failures,
            ledger: self.ledger.clone(),
            stage: self.staged.as_ref().map(stage_ref),
            load: self.load.as_ref().map(|l| match l {
                Ok(r) => LoadResult { status: Status::Success, report: Some(load_record(r)), message: None },
                Err(m) => LoadResult { status: Status::Error, report: None, message: Some(m.clone()) },
            }),
            reconcile: self.reconcile.map(verdict),
            changes: self.change.as_ref().map(|c| ChangesRecord {
                run: if c.full.is_some() { "full" } else { "changes" }.to_owned(),
                reason: c.full.clone(),
                inserted: c.counts.inserted,
                updated: c.counts.updated,
                unchanged: c.counts.unchanged,
                deleted: c.counts.deleted,
                deletes: match c.deletes {
                    crate::manifest::config::Deletes::Hard => "hard",
                    crate::manifest::config::Deletes::Soft { .. } => "soft",
                    crate::manifest::config::Deletes::Ignore => "ignore",
                }
                .to_owned(),
                hashes_kept: c.kept,
            }),
            incremental: self.incremental.as_ref().map(|i| IncrementalRecord {
                run: if i.full.is_some() { "full" } else { "incremental" }.to_owned(),
                strategy: i.strategy.name().to_owned(),
                reason: i.full.clone(),
                rows: self.rows.unwrap_or(0),
                total_rows: self.staged.as_ref().map_or(0, |s| s.manifest.row_count),
                previous_rows: i.previous_rows,
                increment: i.increment.as_ref().map(stage_ref),
                schema_changes: i.schema_change.clone(),
                committed: i.committed,
                cursor: i.cursor.as_ref().map(|c| CursorRecord {
                    column: c.column.clone(),
                    from: c.from.clone(),
                    high: c.high.as_ref().map(|h| h.0.clone()),
                    advanced: i.advanced,
                }),
                batches: i.window.as_ref().map(|w| BatchesRecord {
                    batch_size: w.batch_size.to_owned(),
                    count: w.batches,
                    start: w.start.format("%Y-%m-%d %H:%M:%S").to_string(),
                    end: w.end.format("%Y-%m-%d %H:%M:%S").to_string(),
                }),
            }),
        }
    }
}

fn stage_ref(s: &StagedTable) -> StageRef {
    StageRef { path: s.dir.to_string(), files: s.manifest.files.len(), checksum: s.manifest.checksum.clone() }
}

/// `table`, `view`, `seed`, `test`, ...: what a node is, as reports name it.
fn kind_of(node: &Node) -> &'static str {
    match &node.resource {
        Resource::Seed(_) => "seed",
        Resource::Test(_) => "test",
        Resource::Model { .. } if node.is_snapshot() => "snapshot",
        Resource::Model { materialized, .. } => match materialized {
            Materialization::View => "view",
            Materialization::Table => "table",
            Materialization::Ephemeral => "ephemeral",
            Materialization::Incremental => "incremental",
        },
        Resource::Source(_) => "node",
    }
}

fn load_record(r: &LoadReport) -> LoadRecord {
    LoadRecord {
        table: r.table.clone(),
        mode: r.mode.to_owned(),
        rows: r.rows,
        strategy: r.strategy.clone(),
        seconds: r.seconds,
        notes: r.notes.clone(),
    }
}

fn verdict(s: reconcile::Status) -> ReconcileVerdict {
    match s {
        reconcile::Status::Pass => ReconcileVerdict::Pass,
        reconcile::Status::Fail => ReconcileVerdict::Fail,
        reconcile::Status::Skipped => ReconcileVerdict::Skipped,
        reconcile::Status::Error => ReconcileVerdict::Error,
    }
}
