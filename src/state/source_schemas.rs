//! `.ferry/state/source_schemas.json`: each source table's columns as the
//! last successful run read them, which the next run's are compared with
//! (schema drift).

use std::collections::BTreeMap;

use super::manifest_file::OutputColumn;
use super::{Layout, files};
use anyhow::{Context as _, Result};

/// Source tables' columns by unique id (`source.shop.raw.orders`).
pub type SourceSchemas = BTreeMap<String, Vec<OutputColumn>>;

fn path(layout: &Layout) -> camino::Utf8PathBuf {
    layout.state().join("source_schemas.json")
}

/// The recorded schemas (none when nothing was recorded, or the file is
/// from another version).
pub fn read(layout: &Layout) -> SourceSchemas {
    fs_err::read_to_string(path(layout)).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}

/// Records `schemas` over what was recorded (atomically).
pub fn write(layout: &Layout, schemas: &SourceSchemas) -> Result<()> {
    let mut all = read(layout);
    all.extend(schemas.iter().map(|(k, v)| (k.clone(), v.clone())));
    let path = path(layout);
    files::write_atomic(&path, &serde_json::to_vec_pretty(&all)?, true)
        .with_context(|| format!("failed to write `{path}`"))
}
