//! The error log: one line per broken rule of every row (a model's rules,
//! a source's records that could not be read), per run and node, as
//! `.ferry/runs/<run id>/errors/<node>.parquet` (and `.csv` beside it for
//! people), with the rows themselves under `quarantine/`. Models and
//! sources write it; `ferry errors` reads every run's.

use std::sync::Arc;

use camino::{Utf8Path, Utf8PathBuf};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::RunDir;

/// The error log's columns.
pub fn schema() -> SchemaRef {
    let text = |n: &str, nullable: bool| Field::new(n, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        text("run_id", false),
        text("model", false),
        text("record_key", false),
        text("rule", false),
        text("column", true),
        text("value", true),
        text("severity", false),
        text("message", false),
        text("suggestion", true),
    ]))
}

/// A node's error log in a run's directory, relative to it (`errors/<node>.<ext>`:
/// `parquet`, and `csv` for people).
pub fn log_file(node: &str, ext: &str) -> Utf8PathBuf {
    Utf8PathBuf::from(format!("errors/{node}.{ext}"))
}

/// A node's quarantined rows in a run's directory, relative to it
/// (`quarantine/<node>.<ext>`).
pub fn quarantine_file(node: &str, ext: &str) -> Utf8PathBuf {
    Utf8PathBuf::from(format!("quarantine/{node}.{ext}"))
}

/// Run directories holding an error log, with when they were last written.
pub fn runs_with_logs(runs: &RunDir) -> Vec<(Utf8PathBuf, std::time::SystemTime)> {
    let Ok(entries) = fs_err::read_dir(&runs.path) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let dir = Utf8PathBuf::try_from(e.path()).ok()?;
            let logs = dir.join("errors");
            let modified = fs_err::metadata(&logs).ok()?.modified().ok()?;
            Some((dir, modified))
        })
        .collect()
}

/// The Parquet error logs of one run's directory, in name order.
pub fn log_files(run_dir: &Utf8Path) -> Vec<Utf8PathBuf> {
    let Ok(entries) = fs_err::read_dir(run_dir.join("errors")) else { return Vec::new() };
    let mut files: Vec<Utf8PathBuf> = entries
        .flatten()
        .filter_map(|e| Utf8PathBuf::try_from(e.path()).ok())
        .filter(|p| p.extension() == Some("parquet"))
        .collect();
    files.sort();
    files
}
