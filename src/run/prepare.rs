//! Loading a project as far as its manifest: the files, the profile's
//! target, the templates rendered with dbt's globals, and the connections
//! database sources name. Also the selection and the engine every command
//! that executes starts from.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use serde_json::Value as Json;

use crate::backend::profiles::{self, Target};
use crate::dag::select::{self, Selection};
use crate::diagnostic::{Code, Diagnostic};
use crate::engine::{Engine, EngineOptions};
use crate::manifest::{Built, Manifest, NodeId, Resource};
use crate::project::Project;
use crate::settings::Settings;
use crate::state::Layout;
use crate::template::Globals;

/// A project loaded as far as its manifest, with what went wrong on the way.
pub struct Prepared {
    pub layout: Layout,
    pub target: Target,
    pub manifest: Arc<Manifest>,
    /// Nodes whose templates failed to render.
    pub failed: BTreeSet<NodeId>,
    /// Warnings, and the errors of the nodes in `failed`.
    pub diagnostics: Vec<Diagnostic>,
}

/// Loads project, target and manifest for the command `which` (as
/// templates see it in `flags.WHICH`). `Ok(Err(diags))` means the project
/// itself is broken and nothing can run.
pub fn prepare(settings: &Settings, which: &str) -> Result<Result<Prepared, Vec<Diagnostic>>> {
    let started = std::time::Instant::now();
    let loaded = Project::load(&settings.root, &settings.vars)?;
    tracing::debug!(elapsed = ?started.elapsed(), "read the project files");
    let mut diagnostics = loaded.diagnostics;
    let Some(project) = loaded.project else { return Ok(Err(diagnostics)) };
    let profile_name = profile_name(settings, &project);
    let target = match profiles::resolve_target(
        &settings.profiles_dirs,
        &profile_name,
        settings.target.as_deref(),
        &settings.root,
        &mut diagnostics,
    ) {
        Ok(t) => t,
        Err(d) => {
            diagnostics.push(*d);
            return Ok(Err(diagnostics));
        }
    };
    let globals = Globals {
        project_name: project.file.name.clone(),
        vars: project.file.vars.clone(),
        target: target_json(&target),
        invocation_id: uuid::Uuid::new_v4().to_string(),
        run_started_at: chrono::Utc::now(),
        which: which.to_owned(),
        full_refresh: false,
        docs: Default::default(),
    };
    let schema = target.schema().to_owned();
    let Built { manifest, failed, diagnostics: built_diags } = Manifest::build(project, globals, &schema);
    tracing::debug!(elapsed = ?started.elapsed(), "rendered every template");
    diagnostics.extend(built_diags);
    let Some(mut manifest) = manifest else { return Ok(Err(diagnostics)) };
    manifest.connections = source_connections(settings, &manifest, &profile_name);
    Ok(Ok(Prepared { layout: settings.layout(), target, manifest: Arc::new(manifest), failed, diagnostics }))
}

fn profile_name(settings: &Settings, project: &Project) -> String {
    settings.profile.clone().or_else(|| project.file.profile.clone()).unwrap_or_else(|| project.file.name.clone())
}

/// The profile targets that database sources name as their `connection`,
/// resolved to URLs (URLs and `env:VAR` connections need no profile).
fn source_connections(
    settings: &Settings,
    manifest: &Manifest,
    profile: &str,
) -> BTreeMap<String, Result<String, String>> {
    let mut out = BTreeMap::new();
    for (_, node) in manifest.iter() {
        let Resource::Source(s) = &node.resource else { continue };
        let Some(name) = s.location.get("connection").and_then(Json::as_str) else { continue };
        if name.contains("://") || name.starts_with("env:") || out.contains_key(name) {
            continue;
        }
        let mut ignored = Vec::new();
        let resolved =
            profiles::resolve_target(&settings.profiles_dirs, profile, Some(name), &settings.root, &mut ignored)
                .map_err(|d| d.message.clone())
                .and_then(|t| t.url());
        out.insert(name.to_owned(), resolved);
    }
    out
}

/// `target` as templates see it: dbt's fields, never the password.
fn target_json(t: &Target) -> Json {
    let mut v = serde_json::json!({
        "name": t.name, "type": t.type_name(), "schema": t.schema(), "database": t.database(),
        "threads": t.threads.unwrap_or(1), "profile_name": t.profile,
    });
    if let Some(s) = t.server() {
        v["host"] = Json::from(s.host.clone());
        v["port"] = Json::from(s.port);
        v["user"] = Json::from(s.user.clone());
        v["dbname"] = Json::from(s.dbname.clone());
    }
    v
}

/// The nodes `--select` and `--exclude` pick; a bad selector is a diagnostic.
pub fn select(
    manifest: &Manifest,
    include: &[String],
    exclude: &[String],
) -> Result<BTreeSet<NodeId>, Box<Diagnostic>> {
    let parse = |items: &[String]| {
        Selection::parse(items).map_err(|e| {
            Box::new(Diagnostic::error(Code::Selector, e.to_string()).with_help(
                "selectors look like `orders`, `+orders`, `tag:nightly`, `path:models/staging` or `config.materialized:table`",
            ))
        })
    };
    let include = parse(include)?;
    let exclude = parse(exclude)?;
    let facts = manifest.facts();
    Ok(select::select(&facts, &manifest.graph, &include, &exclude))
}

/// The engine for commands that execute: a memory limit (half the RAM by
/// default) and the spill directory under `.ferry/`.
pub fn engine(layout: &Layout, memory_limit: Option<u64>) -> Result<Engine> {
    let limit = match memory_limit {
        Some(b) => usize::try_from(b).unwrap_or(usize::MAX),
        None => crate::engine::session::default_memory_limit(),
    };
    let options =
        EngineOptions { memory_limit: Some(limit), spill_dir: Some(layout.spill()), ..EngineOptions::default() };
    Engine::new(&options).context("failed to start the query engine")
}
