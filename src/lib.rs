//! ferry: move data between systems with SQL you can trust.
//!
//! Sources become tables in an embedded DataFusion engine; dbt-style SQL
//! models transform them and data tests validate them; results are staged, loaded and
//! reconciled. The pipeline's stages are this crate's modules: `project`
//! (files on disk) -> `template` (Jinja) -> `manifest` (nodes and the DAG)
//! -> `engine` (planning and execution) -> `stage` (Parquet) -> `load`
//! (into the target, through `backend`), with `diagnostic` for everything a
//! user must be told and `commands` composing the stages.

pub mod backend;
pub mod cli;
pub mod commands;
pub mod dag;
pub mod diagnostic;
pub mod engine;
pub mod error;
pub mod load;
pub mod logging;
pub mod manifest;
pub mod printer;
pub mod project;
pub mod reconcile;
pub mod run;
pub mod settings;
pub mod source;
pub mod stage;
pub mod state;
pub mod template;
pub mod validate;
pub mod values;
