//! The high-water mark of each incremental model's `cursor`:
//! `.ferry/state/watermarks/<model>.json`, written whole (see [`super::files`])
//! and only once a run's load and reconciliation of the model succeeded, so
//! a failed or killed run leaves the mark where it was and the next run reads
//! the same rows again.

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::Layout;

/// One model's mark: the largest cursor value its data held after the
/// last run that advanced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// The cursor column.
    pub cursor: String,
    /// The value, as DataFusion shows it (`2024-01-03T10:00:00`).
    pub value: String,
    /// Its Arrow type, as `arrow_cast` reads it (`Timestamp(µs)`).
    pub data_type: String,
    /// The run that advanced it, and when.
    pub run_id: String,
    pub advanced_at: String,
}

/// Model `model`'s mark, if one was kept (an unreadable file is none: the
/// run then takes the mark from the model's data).
pub fn read(layout: &Layout, model: &str) -> Option<Watermark> {
    let text = fs_err::read_to_string(layout.watermark(model)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Keeps `mark` as model `model`'s (atomically, fsynced).
pub fn write(layout: &Layout, model: &str, mark: &Watermark) -> Result<()> {
    let path = layout.watermark(model);
    super::files::write_atomic(&path, &serde_json::to_vec_pretty(mark)?, true)
        .with_context(|| format!("failed to write `{path}`"))
}
