//! What a run tells its caller while it works: typed events, in the order
//! things happen, for the commands to render (progress bars, one line per
//! node, notes). The final word is the [`super::RunReport`].

use std::sync::Arc;

use crate::diagnostic::Diagnostic;
use crate::engine::JobProgress;
use crate::load::LoadEvent;
use crate::manifest::NodeId;
use crate::reconcile::ReconcileEvent;

use super::NodeReport;

/// One thing that happened in a run.
#[derive(Debug)]
pub enum RunEvent<'a> {
    /// Everything loading and planning the project found (warnings, and the
    /// errors of nodes that will not run), before any row moves.
    Planned {
        diagnostics: &'a [Diagnostic],
    },
    /// A parent outside the selection has no stage this run reads (`why`)
    /// and is read from its SQL.
    UnstagedParent {
        name: &'a str,
        why: super::materialize::Unstaged,
    },
    /// The selected nodes start running (and report as they end).
    Started {
        total: usize,
    },
    Node(NodeEvent<'a>),
    /// Every node has run (or the run was interrupted).
    Executed,
    /// A staged node is not loaded because a test of it failed.
    HeldBack {
        node: NodeId,
        test: NodeId,
    },
    Load(LoadEvent<'a>),
    Reconcile(ReconcileEvent<'a>),
}

/// A node's progress.
#[derive(Debug)]
pub enum NodeEvent<'a> {
    /// A node ended, the `done`th of `total`: ran, failed or skipped.
    Finished { id: NodeId, report: &'a NodeReport, done: usize, total: usize },
    /// Rows written so far and the nodes running now (every second while
    /// they run), with where their jobs stand when they run on a cluster.
    Progress { rows: u64, running: Vec<&'a str>, cluster: Vec<(Arc<str>, JobProgress)> },
}

/// Hears a run's events as they happen (from the run's own task).
pub trait Observer: Sync {
    fn event(&self, event: RunEvent<'_>);
}

/// An observer that ignores everything (for library callers and tests).
impl Observer for () {
    fn event(&self, _: RunEvent<'_>) {}
}
