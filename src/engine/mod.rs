//! The embedded DataFusion engine: the session (`session`) and planning of
//! compiled models against their parents' schemas (`plan`).

pub mod plan;
pub mod session;

pub use session::{Engine, EngineOptions};
