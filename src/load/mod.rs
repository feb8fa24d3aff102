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

use std::collections::{BTreeMap, BTreeSet};

use camino::Utf8Path;
use serde_json::Value as Json;

use crate::backend::{BackendError, LoadJob};
use crate::diagnostic::{Code, Diagnostic};
use crate::manifest::{Manifest, Materialization, Resource};
use crate::project::nodes::TestKind;
use crate::values::{LoadMode, TableName};

/// A model's `load` config, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadConfig {
    pub table: TableName,
    pub mode: LoadMode,
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
        None => LoadMode::Replace,
        Some(m) => LoadMode::parse(&m)
            .ok_or_else(|| bad(format!("unknown load mode `{m}`; the modes are {}", LoadMode::NAMES.join(", "))))?,
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
pub fn job_for(
    manifest: &Manifest,
    i: usize,
    config: LoadConfig,
    stage_root: &Utf8Path,
) -> Result<LoadJob, BackendError> {
    let node = &manifest.nodes[i];
    LoadJob::from_stage(&node.name, config.table, config.mode, config.unique_key, stage_root.join(&node.name))
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
