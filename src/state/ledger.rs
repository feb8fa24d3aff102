//! The row ledger: every row a model's query produced is accounted for as
//! staged, quarantined or dropped as a duplicate. Made while a model is
//! staged, kept in `run_results.json`, and checked again when its table is
//! reconciled.

use std::collections::BTreeMap;

use camino::Utf8PathBuf;
use serde::{Deserialize, Serialize};

/// A model's row ledger: every row its query produced is accounted for.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ledger {
    pub produced: u64,
    pub staged: u64,
    pub quarantined: u64,
    pub duplicates_dropped: u64,
    /// Staged rows that broke a `warn` rule.
    pub warned: u64,
    /// Rows that broke each rule, by rule name.
    pub by_rule: BTreeMap<String, u64>,
    /// Where the quarantined rows and the error log are, when there are any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine_file: Option<Utf8PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_log: Option<Utf8PathBuf>,
    /// For a change-detected model, how the extract's rows were classified
    /// (only the inserted and updated ones are produced above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<ChangeCounts>,
}

/// How change detection classified an extract's records.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChangeCounts {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Kept keys gone from the extract.
    pub deleted: u64,
}

impl Ledger {
    /// produced = staged + quarantined + duplicates dropped.
    pub fn balances(&self) -> bool {
        self.produced == self.staged + self.quarantined + self.duplicates_dropped
    }
}
