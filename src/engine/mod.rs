//! The embedded DataFusion engine: the session (`session`: runtime, memory
//! pool; object stores by URL, `stores`), seeds and file and database sources as tables
//! (`sources`), what the engine does with one node (`node`: plan its SQL,
//! stage a plan, register a stage), planning errors as diagnostics
//! (`diagnose`), ferry's own SQL functions (`functions`), and what is
//! settled in a statement before it is planned (`depth`, `dialect`); and
//! the same queries run on a Ballista cluster (`cluster`, a cargo feature).
//!
//! Which nodes run when, and what a rule or a test concludes, are not this
//! module's business (see `run/` and `validate/`).

#[cfg(feature = "cluster")]
pub mod cluster;
pub mod depth;
pub mod diagnose;
pub mod dialect;
pub mod functions;
pub mod node;
pub mod session;
pub mod sources;
pub mod stores;

use datafusion::arrow::datatypes::SchemaRef;

use crate::diagnostic::Diagnostic;

pub use session::{Engine, EngineOptions};

/// Where a query's job on a cluster stands, as its scheduler last said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobProgress {
    pub job_id: String,
    /// Out of the scheduler's queue, its tasks handed to executors.
    pub started: bool,
    /// Stages done so far, and their tasks.
    pub stages_done: usize,
    pub tasks_done: u32,
}

/// A node registered with the engine (a source or a seed) or planned (a
/// model): its output schema, or why it cannot be.
pub type Registered = Result<Option<SchemaRef>, Vec<Diagnostic>>;
