//! The embedded DataFusion engine: the session (`session`), seeds and file
//! sources as tables (`sources`), planning of compiled models against their
//! parents' schemas (`plan`), planning errors as diagnostics (`diagnose`),
//! and sorts that keep each key within one partition (`grouped`).

mod diagnose;
pub mod execute;
pub mod functions;
mod grouped;
pub mod plan;
pub mod session;
pub(crate) mod sources;

pub use session::{CsvSettings, Engine, EngineOptions};
