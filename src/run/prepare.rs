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
use crate::manifest::{Built, Manifest, NodeId, Resource, Warehouse};
use crate::project::Project;
use crate::settings::Settings;
use crate::state::Layout;
use crate::template::Globals;

/// A project loaded as far as its manifest, with what went wrong on the way.
#[derive(Clone)]
pub struct Prepared {
    pub layout: Layout,
    pub target: Target,
    pub manifest: Arc<Manifest>,
    /// Nodes whose templates failed to render.
    pub failed: BTreeSet<NodeId>,
    /// Warnings, and the errors of the nodes in `failed`.
    pub diagnostics: Vec<Diagnostic>,
    /// The project's `history.keep_runs`.
    pub keep_runs: Option<usize>,
    /// The key of a masked run (`--mask`, or the target's `masking: true`).
    pub masking: Option<crate::mask::Key>,
    /// The Ballista cluster that runs the models (`--cluster`, or the
    /// project's `executor:`); `None`: this process.
    pub cluster: Option<String>,
    /// Where the stages live: `.ferry/stage`, or the project's `stage_dir`.
    pub stages: crate::stage::Root,
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
    let (profile_name, _) = profile_name(settings, &project);
    let target = match target(settings, &project, &mut diagnostics) {
        Ok(t) => t,
        Err(d) => {
            diagnostics.push(*d);
            return Ok(Err(diagnostics));
        }
    };
    let masking = match masking_key(settings, &target) {
        Ok(key) => key,
        Err(e) => {
            diagnostics.push(Diagnostic::error(crate::diagnostic::Code::Profile, e.to_string()));
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
        full_refresh: settings.full_refresh,
        event_time: settings.event_time,
        docs: Default::default(),
    };
    let schema = target.schema().to_owned();
    let keep_runs = project.file.keep_runs;
    // `--cluster local` runs here whatever `executor:` says.
    let cluster = match settings.cluster.as_deref() {
        Some("local") => None,
        Some(url) => Some(url.to_owned()),
        None => project.file.executor.clone(),
    };
    let layout = settings.layout();
    let stages = match stage_root(project.file.stage_dir.as_ref(), &settings.root, &layout) {
        Ok(stages) => stages,
        Err(d) => {
            diagnostics.push(*d);
            return Ok(Err(diagnostics));
        }
    };
    let Built { manifest, failed, diagnostics: built_diags } = Manifest::build(project, globals, &schema);
    tracing::debug!(elapsed = ?started.elapsed(), "rendered every template");
    diagnostics.extend(built_diags);
    let Some(mut manifest) = manifest else { return Ok(Err(diagnostics)) };
    manifest.connections = source_connections(settings, &manifest, &profile_name);
    manifest.warehouse = Some(target.url().map(|url| Warehouse { url, name: target.name.clone() }));
    if masking.is_some() {
        diagnostics.extend(unmasked_personal(&manifest, &layout, settings.require_masking));
    }
    Ok(Ok(Prepared {
        layout,
        target,
        manifest: Arc::new(manifest),
        failed,
        diagnostics,
        keep_runs,
        masking,
        cluster,
        stages,
    }))
}

/// Where the copies of tables a cluster cannot read itself go: beside the
/// stages when they are in an object store (which every machine reads),
/// else under `.ferry/tmp/`.
fn cluster_scratch(prepared: &Prepared) -> crate::stage::Root {
    match &prepared.stages {
        crate::stage::Root::Stored(stages) | crate::stage::Root::Pending(stages) => {
            crate::stage::Root::Stored(stages.child(crate::stage::SCRATCH))
        }
        crate::stage::Root::Local(_) => crate::stage::Root::Local(prepared.layout.tmp()),
    }
}

/// Where the stages live: the project's `stage_dir` (a directory,
/// relative to the project, or an object-store URL), else `.ferry/stage`.
fn stage_root(
    stage_dir: Option<&(String, crate::diagnostic::Label)>,
    root: &camino::Utf8Path,
    layout: &Layout,
) -> Result<crate::stage::Root, Box<Diagnostic>> {
    let Some((text, at)) = stage_dir.map(|(t, at)| (t.trim(), at)).filter(|(t, _)| !t.is_empty()) else {
        return Ok(crate::stage::Root::Local(layout.stage_root()));
    };
    let bad = |why: String| {
        Box::new(
            Diagnostic::error(Code::ProjectFile, format!("`stage_dir: {text}` cannot hold the stages: {why}"))
                .with_label(at.clone()),
        )
    };
    if !text.contains("://") {
        return Ok(crate::stage::Root::Local(root.join(text)));
    }
    let url = url::Url::parse(text).map_err(|e| bad(e.to_string()))?;
    if url.scheme() == "file" {
        let path = url.to_file_path().map_err(|()| bad("it is not a local path".into()))?;
        let path = camino::Utf8PathBuf::from_path_buf(path).map_err(|_| bad("the path is not UTF-8".into()))?;
        return Ok(crate::stage::Root::Local(path));
    }
    let store = crate::engine::stores::store_for(&url).map_err(|e| match e {
        datafusion::error::DataFusionError::Plan(why) => bad(why),
        e => bad(e.strip_backtrace()),
    })?;
    let stored = crate::stage::Stored::new(&url, store).map_err(|e| bad(e.to_string()))?;
    Ok(crate::stage::Root::Stored(stored))
}

/// In a masked run, the columns of sources and seeds that look personal
/// (by name, or as the latest audit found them) and have no `mask:`
/// policy: warnings, or errors with `--require-masking`.
fn unmasked_personal(manifest: &Manifest, layout: &Layout, required: bool) -> Vec<Diagnostic> {
    let audit: Json = layout
        .audits()
        .newest_holding("audit.json")
        .first()
        .and_then(|id| fs_err::read_to_string(layout.audits().join(id).join("audit.json").path).ok())
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (_, node) in manifest.iter() {
        if !matches!(node.resource, crate::manifest::Resource::Source(_) | crate::manifest::Resource::Seed(_)) {
            continue;
        }
        let columns = node.columns();
        let name = node.display_name();
        let audited = audit["tables"].as_array().into_iter().flatten().find(|t| t["name"] == name.as_str());
        let mut personal: Vec<String> = columns
            .iter()
            .filter(|c| crate::audit::personal_name(&c.name.to_lowercase()))
            .map(|c| c.name.clone())
            .collect();
        for c in audited.and_then(|t| t["columns"].as_array()).into_iter().flatten() {
            if c["personal"] == true
                && let Some(n) = c["name"].as_str()
                && !personal.iter().any(|p| p == n)
            {
                personal.push(n.to_owned());
            }
        }
        for column in personal {
            if columns.iter().any(|c| c.name == column && c.mask.is_some()) {
                continue;
            }
            let message = format!("`{name}.{column}` looks like personal data and has no `mask:` policy");
            let d = if required {
                Diagnostic::error(crate::diagnostic::Code::Profile, message)
            } else {
                Diagnostic::warning(crate::diagnostic::Code::Profile, message)
            };
            out.push(d.in_file(node.path()).with_help(format!(
                "give `{column}` a `mask:` policy (such as `hash`, `email` or `redact`) in the schema file"
            )));
        }
    }
    out
}

/// Whether a command on the project runs masked: `--mask`, or the target's
/// `masking: true` (only `--mask` when the project or its profile cannot be
/// read), for commands that read what runs left rather than run.
pub fn masks(settings: &Settings) -> bool {
    if settings.mask {
        return true;
    }
    let Some(project) = Project::load(&settings.root, &settings.vars).ok().and_then(|l| l.project) else {
        return false;
    };
    target(settings, &project, &mut Vec::new()).is_ok_and(|t| t.masking)
}

/// The target the project's profile (or `--profile`, `--target`) names.
fn target(settings: &Settings, project: &Project, warnings: &mut Vec<Diagnostic>) -> Result<Target, Box<Diagnostic>> {
    let (profile, named) = profile_name(settings, project);
    let (dirs, chosen) = (&settings.profiles_dirs, settings.target.as_deref());
    profiles::resolve_target(dirs, (&profile, named), chosen, &settings.root, warnings)
}

/// The masking key, when the run is masked: `--mask`, or the target's
/// `masking: true`.
fn masking_key(settings: &Settings, target: &Target) -> Result<Option<crate::mask::Key>, crate::mask::KeyError> {
    if !settings.mask && !target.masking {
        return Ok(None);
    }
    let why =
        if settings.mask { "`--mask`".to_owned() } else { format!("target `{}` says `masking: true`", target.name) };
    let var = target.masking_key_env.as_deref().unwrap_or(crate::mask::KEY_VAR);
    crate::mask::Key::from_env(var, &why).map(Some)
}

/// The profile's name, and whether the project (or `--profile`) names it
/// rather than it defaulting to the project's name.
fn profile_name(settings: &Settings, project: &Project) -> (String, bool) {
    match settings.profile.clone().or_else(|| project.file.profile.clone()) {
        Some(name) => (name, true),
        None => (project.file.name.clone(), false),
    }
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
        let resolved = profiles::resolve_target(
            &settings.profiles_dirs,
            (profile, true),
            Some(name),
            &settings.root,
            &mut ignored,
        )
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

/// What `--select` and `--exclude` picked, with warnings for terms that
/// matched nothing.
pub struct Selected {
    pub nodes: BTreeSet<NodeId>,
    pub warnings: Vec<Diagnostic>,
}

/// The nodes `--select` and `--exclude` pick. A bad selector is an error; so
/// is a `--select` term that names a node outright and matches none (with
/// the closest name), and an empty selection under `fail_on_empty`. Other
/// terms that match nothing, and an empty selection, are warnings, as dbt
/// gives.
pub fn select(
    manifest: &Manifest,
    include: &[String],
    exclude: &[String],
    fail_on_empty: bool,
) -> Result<Selected, Box<Diagnostic>> {
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
    let names: BTreeSet<&str> = facts.iter().map(|f| f.name.as_str()).collect();
    let mut warnings = Vec::new();
    for (flag, selection) in [("--select", &include), ("--exclude", &exclude)] {
        for u in selection.unmatched(&facts) {
            let message = format!("`{flag} {}` matches no node", u.term);
            let help = u.name.as_deref().and_then(|n| crate::diagnostic::did_you_mean(n, names.iter().copied()));
            if flag == "--select" && u.name.is_some() {
                let mut d = Diagnostic::error(Code::Selector, message);
                d = match help {
                    Some(help) => d.with_help(help),
                    None => d.with_note("no model, seed, test or source has that name (`ferry ls` lists them)"),
                };
                return Err(Box::new(d));
            }
            let mut d = Diagnostic::warning(Code::Selector, message);
            if let Some(help) = help {
                d = d.with_help(help);
            }
            warnings.push(d);
        }
    }
    let nodes = select::select(&facts, &manifest.graph, &include, &exclude);
    if nodes.is_empty() && !facts.is_empty() {
        let message = "the selection picks no node: nothing to do";
        if fail_on_empty {
            return Err(Box::new(Diagnostic::error(Code::Selector, message)));
        }
        warnings.push(
            Diagnostic::warning(Code::Selector, message)
                .with_help("`ferry ls` with the same --select/--exclude lists what they pick; --fail-on-empty-selection makes this an error"),
        );
    }
    Ok(Selected { nodes, warnings })
}

/// The engine for commands that execute: a memory limit (half the RAM by
/// default), the spill directory under `.ferry/`, the masking key, and the
/// cluster, if the run has one.
pub fn engine(prepared: &Prepared, memory_limit: Option<u64>) -> Result<Engine> {
    let layout = &prepared.layout;
    let limit = match memory_limit {
        Some(b) => usize::try_from(b).unwrap_or(usize::MAX),
        None => crate::engine::session::default_memory_limit(),
    };
    let options = EngineOptions {
        memory_limit: Some(limit),
        spill_dir: Some(layout.spill()),
        masking: prepared.masking.clone(),
        cluster: prepared.cluster.clone().map(|url| (url, cluster_scratch(prepared))),
        ..EngineOptions::default()
    };
    match &prepared.cluster {
        Some(url) => Engine::new(&options).with_context(|| format!("failed to connect to the cluster `{url}`")),
        None => Engine::new(&options).context("failed to start the query engine"),
    }
}
