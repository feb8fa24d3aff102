//! Loading staged models into the target database.
//!
//! A load never re-runs SQL: it reads the Parquet a run staged (checked
//! against the stage manifest first) and hands the batches to the target's
//! native bulk path (see `crate::backend`). Every mode is atomic and
//! idempotent: the target either holds the whole new load or is exactly as
//! it was.
//!
//! This module decides *what* to load, where and in which order; the
//! backends decide *how*.

pub mod cells;
pub mod preflight;
pub mod read;

use std::collections::{BTreeMap, BTreeSet};

use camino::{Utf8Path, Utf8PathBuf};
use datafusion::arrow::datatypes::DataType;
use serde::Serialize;
use serde_json::Value as Json;

use crate::diagnostic::{Code, Diagnostic};
use crate::manifest::{Manifest, Materialization, Resource};
use crate::project::nodes::TestKind;
use crate::stage::{self, StageError, StageManifest};

/// How a load changes the target table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Mode {
    /// Build a shadow table, then swap it in; the old table is kept as
    /// `<table>__ferry_prev` for `ferry rollback`.
    #[serde(rename = "replace")]
    Replace,
    #[serde(rename = "append")]
    Append,
    /// Insert new keys, update existing ones.
    #[serde(rename = "upsert")]
    Upsert,
    /// Delete the rows whose keys are staged, then insert the stage.
    #[serde(rename = "delete+insert")]
    DeleteInsert,
}

impl Mode {
    pub const NAMES: [&'static str; 4] = ["replace", "append", "upsert", "delete+insert"];

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "replace" => Mode::Replace,
            "append" => Mode::Append,
            "upsert" | "merge" => Mode::Upsert,
            "delete+insert" | "delete_insert" => Mode::DeleteInsert,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Replace => "replace",
            Mode::Append => "append",
            Mode::Upsert => "upsert",
            Mode::DeleteInsert => "delete+insert",
        }
    }

    /// Whether the mode matches rows on `unique_key`.
    pub fn needs_key(self) -> bool {
        matches!(self, Mode::Upsert | Mode::DeleteInsert)
    }
}

/// A table in the target: schema (database, for MySQL) and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    /// A table beside this one, named `<name><suffix>` (shortened with a
    /// hash when the database's identifier limit would cut it).
    pub fn sibling(&self, suffix: &str, max_len: usize) -> TableName {
        let full = format!("{}{suffix}", self.name);
        if full.len() <= max_len {
            return TableName { schema: self.schema.clone(), name: full };
        }
        let hash = format!("{:08x}", xxhash_rust::xxh3::xxh3_64(self.name.as_bytes()) as u32);
        let mut keep = max_len.saturating_sub(suffix.len() + hash.len() + 1);
        while !self.name.is_char_boundary(keep) {
            keep -= 1;
        }
        TableName { schema: self.schema.clone(), name: format!("{}_{hash}{suffix}", &self.name[..keep]) }
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// The suffix of the table a `replace` load keeps for `ferry rollback`.
pub const PREV_SUFFIX: &str = "__ferry_prev";
/// The suffix of the shadow table a `replace` load builds.
pub const NEW_SUFFIX: &str = "__ferry_new";

/// One staged column as it is loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadColumn {
    pub name: String,
    /// The canonical Arrow type (see [`cells::canonical`]).
    pub data_type: DataType,
    pub nullable: bool,
    /// Part of the unique key.
    pub key: bool,
}

/// One model to load: where from, where to, how.
#[derive(Debug, Clone)]
pub struct LoadJob {
    pub node: usize,
    pub model: String,
    pub table: TableName,
    pub mode: Mode,
    pub unique_key: Vec<String>,
    pub stage_dir: Utf8PathBuf,
    pub stage: StageManifest,
    pub columns: Vec<LoadColumn>,
    /// The stage's columns read back, by position (all when `None`).
    pub read_columns: Option<Vec<usize>>,
}

/// What a finished load did.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub table: String,
    pub mode: &'static str,
    pub rows: u64,
    /// The bulk path used, such as `binary COPY`.
    pub strategy: String,
    pub seconds: f64,
    /// Things the user should know (a fallback taken, say).
    pub notes: Vec<String>,
}

/// Why a load failed. The target is as it was before the load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot connect to {target}: {message}")]
    Connect { target: String, message: String },
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error("cannot read the stage of `{model}`: {message}")]
    Read { model: String, message: String },
    #[error("`{table}` does not fit the staged rows of `{model}`")]
    Preflight { model: String, table: String, problems: Vec<String> },
    #[error("loading `{table}` failed while {doing}: {message}")]
    Database { table: String, doing: String, message: String },
    #[error("loading `{table}` moved {loaded} rows but the stage holds {expected}; nothing was committed")]
    RowCount { table: String, expected: u64, loaded: u64 },
    #[error("cannot roll back `{table}`: {message}")]
    Rollback { table: String, message: String },
}

impl LoadError {
    /// `ferry rollback` on a table no `replace` load has kept a copy of.
    pub fn nothing_to_restore(table: impl std::fmt::Display, prev: impl std::fmt::Display) -> Self {
        LoadError::Rollback {
            table: table.to_string(),
            message: format!("there is no `{prev}` to restore (a `replace` load keeps one)"),
        }
    }

    /// The error as a diagnostic for `model`.
    pub fn to_diagnostic(&self, model: &str) -> Diagnostic {
        let mut d = Diagnostic::error(Code::Load, format!("{model}: {self}"));
        match self {
            LoadError::Preflight { problems, .. } => {
                for p in problems {
                    d = d.with_note(p.clone());
                }
                d = d.with_help(
                    "change the table (or drop it), or load with `mode: replace`, which rebuilds it from the stage",
                );
            }
            LoadError::Stage(_) | LoadError::Read { .. } => {
                d = d.with_help(format!("run `ferry run -s {model}` to stage it again"));
            }
            LoadError::Connect { .. } => d = d.with_help("check the target with `ferry debug`"),
            LoadError::Database { .. } | LoadError::RowCount { .. } => {
                d = d.with_note("the load was rolled back: the target table is as it was before");
            }
            LoadError::Rollback { .. } => {}
        }
        d
    }
}

/// A model's `load` config, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadConfig {
    pub table: TableName,
    pub mode: Mode,
    pub unique_key: Vec<String>,
}

/// Reads a model's or seed's `load` config (`load: false`, or
/// `load: {table, schema, mode, unique_key}`), falling back to dbt's
/// `alias`, `schema` and `unique_key`. `Ok(None)`: not loaded.
pub fn config_for(manifest: &Manifest, i: usize) -> Result<Option<LoadConfig>, Box<Diagnostic>> {
    let node = &manifest.nodes[i];
    let loads = match &node.resource {
        Resource::Model { materialized, .. } => matches!(materialized, Materialization::Table),
        Resource::Seed(_) => true,
        _ => false,
    };
    if !loads {
        return Ok(None);
    }
    let bad = |msg: String| {
        Box::new(
            Diagnostic::error(Code::ModelConfig, format!("{}: {msg}", node.display_name()))
                .in_file(node.path())
                .with_help("write `load: false`, or `load: {table: t, schema: s, mode: replace, unique_key: [id]}`"),
        )
    };
    let load = match node.config.get("load") {
        None | Some(Json::Null) | Some(Json::Bool(true)) => serde_json::Map::new(),
        Some(Json::Bool(false)) => return Ok(None),
        Some(Json::Object(m)) => {
            if m.get("enabled").and_then(Json::as_bool) == Some(false) {
                return Ok(None);
            }
            for k in m.keys() {
                if !["table", "schema", "mode", "unique_key", "enabled"].contains(&k.as_str()) {
                    return Err(bad(format!("unknown `load` key `{k}`")));
                }
            }
            m.clone()
        }
        Some(other) => return Err(bad(format!("`load` must be `false` or a mapping, not `{other}`"))),
    };
    let relation = node.relation.as_deref();
    let text = |k: &str| -> Result<Option<String>, Box<Diagnostic>> {
        match load.get(k) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(other) => Err(bad(format!("`load.{k}` must be a name, not `{other}`"))),
        }
    };
    let name = text("table")?.or_else(|| relation.map(|r| r.identifier.clone())).unwrap_or_else(|| node.name.clone());
    let schema = match text("schema")? {
        Some(s) => s,
        None => relation.map(|r| r.schema.clone()).unwrap_or_default(),
    };
    let mode = match text("mode")? {
        None => Mode::Replace,
        Some(m) => Mode::parse(&m)
            .ok_or_else(|| bad(format!("unknown load mode `{m}`; the modes are {}", Mode::NAMES.join(", "))))?,
    };
    let key_json = load.get("unique_key").or_else(|| node.config.get("unique_key"));
    let unique_key = match key_json {
        None => Vec::new(),
        Some(v) => crate::project::config::column_list(v, "unique_key").map_err(bad)?,
    };
    if mode.needs_key() && unique_key.is_empty() {
        return Err(bad(format!("load mode `{}` needs a `unique_key`", mode.name())));
    }
    Ok(Some(LoadConfig { table: TableName { schema, name }, mode, unique_key }))
}

/// The nodes of `selected` that load into the target (or whose `load`
/// config is wrong, so that the error is reported).
pub fn loadable(manifest: &Manifest, selected: BTreeSet<usize>) -> BTreeSet<usize> {
    selected.into_iter().filter(|&i| matches!(config_for(manifest, i), Ok(Some(_)) | Err(_))).collect()
}

/// A job for a staged node: reads and checks its stage manifest and
/// resolves the columns.
pub fn job_for(manifest: &Manifest, i: usize, config: LoadConfig, stage_root: &Utf8Path) -> Result<LoadJob, LoadError> {
    let node = &manifest.nodes[i];
    LoadJob::from_stage(i, &node.name, config, stage_root.join(&node.name))
}

impl LoadJob {
    /// The job for the stage in `stage_dir`, read as `model` (node `node`).
    pub fn from_stage(
        node: usize,
        model: &str,
        config: LoadConfig,
        stage_dir: Utf8PathBuf,
    ) -> Result<LoadJob, LoadError> {
        let stage = stage::read_manifest(&stage_dir)?;
        let mut columns = Vec::with_capacity(stage.columns.len());
        for c in &stage.columns {
            let parsed: DataType = c.data_type.parse().map_err(|e| LoadError::Read {
                model: model.to_owned(),
                message: format!("column `{}` has type `{}` that ferry cannot read back: {e}", c.name, c.data_type),
            })?;
            let data_type = cells::canonical(&parsed).ok_or_else(|| LoadError::Preflight {
                model: model.to_owned(),
                table: config.table.to_string(),
                problems: vec![format!("column `{}` is a {parsed}, which no target can hold", c.name)],
            })?;
            columns.push(LoadColumn {
                name: c.name.clone(),
                data_type,
                nullable: c.nullable,
                key: config.unique_key.iter().any(|k| k == &c.name),
            });
        }
        let missing: Vec<String> = config
            .unique_key
            .iter()
            .filter(|k| !columns.iter().any(|c| &c.name == *k))
            .map(|k| format!("`unique_key` column `{k}` is not in the staged rows"))
            .collect();
        if !missing.is_empty() {
            return Err(LoadError::Preflight {
                model: model.to_owned(),
                table: config.table.to_string(),
                problems: missing,
            });
        }
        Ok(LoadJob {
            node,
            model: model.to_owned(),
            table: config.table,
            mode: config.mode,
            unique_key: config.unique_key,
            stage_dir,
            stage,
            columns,
            read_columns: None,
        })
    }

    /// The same stage's key columns alone, as a job that loads them into a
    /// table of their own (the keys a reconciliation is scoped to).
    pub fn keys_only(&self, table: TableName) -> LoadJob {
        let keys: Vec<usize> = self.columns.iter().enumerate().filter(|(_, c)| c.key).map(|(i, _)| i).collect();
        LoadJob {
            table,
            mode: Mode::Replace,
            unique_key: Vec::new(),
            columns: keys.iter().map(|&i| LoadColumn { key: false, ..self.columns[i].clone() }).collect(),
            read_columns: Some(keys),
            ..self.clone()
        }
    }
}

/// Orders loads so that parents come before children: along the DAG, and
/// along `relationships` tests between loaded nodes (so foreign keys hold
/// at every commit). Ties keep DAG order.
pub fn load_order(manifest: &Manifest, nodes: &BTreeSet<usize>) -> Vec<usize> {
    let position: BTreeMap<usize, usize> = manifest.order.iter().enumerate().map(|(k, &i)| (i, k)).collect();
    let mut before: BTreeMap<usize, BTreeSet<usize>> = nodes.iter().map(|&i| (i, BTreeSet::new())).collect();
    for &i in nodes {
        for a in manifest.graph.ancestors(i, None) {
            if nodes.contains(&a) {
                before.entry(i).or_default().insert(a);
            }
        }
    }
    for (t, node) in manifest.nodes.iter().enumerate() {
        let Resource::Test(test) = &node.resource else { continue };
        let TestKind::Generic { test_name, attached_to, .. } = &test.kind else { continue };
        if test_name != "relationships" {
            continue;
        }
        let Some(child) = manifest.graph.parents(t).iter().copied().find(|&p| node_ref_is(manifest, p, attached_to))
        else {
            continue;
        };
        for &parent in manifest.graph.parents(t) {
            if parent != child && nodes.contains(&parent) && nodes.contains(&child) {
                before.entry(child).or_default().insert(parent);
            }
        }
    }
    let mut order = Vec::with_capacity(nodes.len());
    let mut done = BTreeSet::new();
    let mut pending: Vec<usize> = nodes.iter().copied().collect();
    pending.sort_by_key(|i| position.get(i).copied().unwrap_or(usize::MAX));
    while !pending.is_empty() {
        let ready = pending.iter().position(|i| before[i].iter().all(|p| done.contains(p)));
        // A cycle of relationships: fall back to DAG order for the rest.
        let k = ready.unwrap_or(0);
        let i = pending.remove(k);
        done.insert(i);
        order.push(i);
    }
    order
}

fn node_ref_is(manifest: &Manifest, i: usize, r: &crate::project::nodes::NodeRef) -> bool {
    use crate::project::nodes::NodeRef;
    let node = &manifest.nodes[i];
    match (r, &node.resource) {
        (NodeRef::Model(m), Resource::Model { .. }) | (NodeRef::Seed(m), Resource::Seed(_)) => &node.name == m,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sibling_names_fit_the_identifier_limit() {
        let t = TableName { schema: "s".into(), name: "orders".into() };
        assert_eq!(t.sibling(PREV_SUFFIX, 63).name, "orders__ferry_prev");
        let long = TableName { schema: "s".into(), name: "x".repeat(60) };
        let s = long.sibling(PREV_SUFFIX, 63);
        assert!(s.name.len() <= 63, "{}", s.name);
        assert!(s.name.ends_with(PREV_SUFFIX));
        assert_ne!(s.name, long.sibling(NEW_SUFFIX, 63).name);
    }

    #[test]
    fn modes_parse_with_dbt_spellings() {
        assert_eq!(Mode::parse("delete+insert"), Some(Mode::DeleteInsert));
        assert_eq!(Mode::parse("merge"), Some(Mode::Upsert));
        assert_eq!(Mode::parse("truncate"), None);
    }
}
