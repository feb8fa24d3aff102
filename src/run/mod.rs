//! The pipeline as a library call: [`prepare`] loads a project (files,
//! profile target, rendered manifest), [`execute`] runs a selection of it
//! (plan every node before any row moves, materialize and test in DAG
//! order, load what passed, reconcile what loaded) and returns a typed
//! [`RunReport`]. Progress reaches the caller as [`RunEvent`]s through an
//! [`Observer`]; nothing here prints. The commands render events and the
//! report.
//!
//! The steps are modules of their own: planning (`plan`), build gating
//! (`gating`), running one node (`node`, `materialize`), the run's files
//! (`artifacts`), and the report (`report`). Loading and reconciling are
//! `crate::load`'s and `crate::reconcile`'s library calls.

mod artifacts;
mod audit;
mod change;
mod drift;
mod events;
mod execute;
mod gating;
mod incremental;
mod materialize;
mod microbatch;
mod node;
pub mod plan;
mod prepare;
mod preview;
mod report;
mod snapshot;

pub use artifacts::{manifest_file, write_compiled};
pub use audit::{Audit, audit};
pub use events::{NodeEvent, Observer, RunEvent};
pub use execute::{RunOptions, execute};
pub use materialize::{Unstaged, read_parents_lazily};
pub use plan::PlanOutcome;
pub use prepare::{Prepared, Selected, engine, masks, prepare, select};
pub use preview::{Preview, Previewed, Rows, preview};
pub use report::{NodeReport, RunReport};

use crate::manifest::{Manifest, NodeId, Resource};

/// Which command is running: what it executes, and the name it goes by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Run,
    Seed,
    Test,
    Build,
    Snapshot,
}

impl Which {
    pub fn name(self) -> &'static str {
        match self {
            Which::Run => "run",
            Which::Seed => "seed",
            Which::Test => "test",
            Which::Build => "build",
            Which::Snapshot => "snapshot",
        }
    }

    /// Whether this command executes node `id`.
    pub fn wants(self, manifest: &Manifest, id: NodeId) -> bool {
        let r = &manifest[id].resource;
        match self {
            Which::Run => matches!(r, Resource::Model { model, .. } if !model.snapshot),
            Which::Snapshot => matches!(r, Resource::Model { model, .. } if model.snapshot),
            Which::Seed => matches!(r, Resource::Seed(_)),
            Which::Test => matches!(r, Resource::Test(_)),
            Which::Build => matches!(r, Resource::Model { .. } | Resource::Seed(_) | Resource::Test(_)),
        }
    }
}

#[cfg(test)]
mod tests;
