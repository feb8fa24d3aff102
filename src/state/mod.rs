//! What ferry keeps under `.ferry/` for the next command and for people,
//! and the one owner of that directory's layout ([`Layout`]): the last
//! run's results ([`run_results`]), the last compile's nodes
//! ([`manifest_file`]), the row ledger ([`Ledger`]) and the error log's
//! format ([`error_log`]), and incremental models' high-water marks
//! ([`watermarks`]), and the lock that keeps to one run at a time
//! ([`lock`]), and the run history ([`history`]), with each run's own
//! record ([`run_record`]).
//!
//! Every file is written whole or not at all (see [`files`]). This module
//! is on the ground floor: it records plain data that the run builds, and
//! imports no pipeline stage.

pub mod error_log;
pub mod files;
pub mod history;
mod layout;
mod ledger;
pub mod lock;
pub mod manifest_file;
pub mod run_record;
pub mod run_results;
pub mod source_schemas;
pub mod watermarks;

pub use layout::{FERRY_DIR, Layout, RunDir};
pub use ledger::{ChangeCounts, Ledger};
