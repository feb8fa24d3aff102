//! Validation: dbt data tests (`data_test`), run on the engine against what
//! a run staged, with dbt's severity and thresholds; and row-level rules
//! (`rules`), checked in the query that stages a model, whose broken rows
//! are quarantined and logged as they stream (`quarantine`), with the row
//! ledger; and dedup (`dedupe`), which keeps one row per key.

pub mod data_test;
pub mod dedupe;
pub mod quarantine;
pub mod rules;

pub use data_test::{TestConfig, TestOutcome, Verdict};
