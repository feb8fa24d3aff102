//! Validation: dbt data tests (`data_test`), run on the engine against what
//! a run staged, with dbt's severity and thresholds. Row-level rules with
//! quarantine, dedup and the row ledger join this module with their issue.

pub mod data_test;

pub use data_test::{TestConfig, TestOutcome, Verdict};
