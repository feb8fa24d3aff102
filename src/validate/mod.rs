//! Validation, on the engine: dbt data tests (`data_test`), run against
//! what a run staged, with dbt's severity and thresholds; row-level rules
//! (`rules`: a model's declared rules as SQL), checked in the query that
//! stages a model (`checked`), whose broken rows are quarantined and logged
//! as they stream (`quarantine`) and counted in the row ledger; and dedup
//! (`dedupe`), which keeps one row per key. The error logs of past runs
//! are read back here too (`error_log`). dbt's unit tests run a model on
//! given rows (`unit_test`).

pub mod checked;
pub mod conversions;
pub mod data_test;
pub mod dedupe;
pub mod error_log;
pub mod quarantine;
pub mod rules;
pub mod unit_test;

pub use data_test::{TestOutcome, Verdict};
