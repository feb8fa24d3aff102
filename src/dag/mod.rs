//! The dependency graph of a project and dbt-style node selection.
//! Pure: no DataFusion, no IO.

pub mod graph;
pub mod select;

pub use graph::Graph;
pub use select::{NodeFacts, Selection, SelectorError};
