//! The dependency graph of a project and dbt-style node selection.
//! No DataFusion and no IO; `schedule` runs nodes on tokio.

pub mod graph;
pub mod schedule;
pub mod select;

pub use graph::{Graph, Id, NodeId};
pub use select::{NodeFacts, Selection, SelectorError, Unmatched};
