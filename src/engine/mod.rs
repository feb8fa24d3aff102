//! The embedded DataFusion engine: the session (`session`), seeds and file
//! sources as tables (`sources`), planning of compiled models against their
//! parents' schemas (`plan`), and planning errors as diagnostics (`diagnose`).

mod diagnose;
pub mod execute;
pub mod functions;
pub mod plan;
pub mod session;
pub(crate) mod sources;

pub use session::{Engine, EngineOptions};
