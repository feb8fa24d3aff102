//! Loading staged models into the target database.
//!
//! A load never re-runs SQL: it reads the Parquet a run staged (checked
//! against the stage manifest first) and hands the batches to the target's
//! native bulk path (see `crate::backend`). Every mode is atomic and
//! idempotent: the target either holds the whole new load or is exactly as
//! it was.
//!
//! This module decides *what* to load, where and in which order
//! ([`load_nodes`], [`dry_run`], [`rollback`]); the backends decide *how*.
//! Progress reaches the caller as [`LoadEvent`]s; nothing here prints.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::backend::profiles::Target;
use crate::backend::{BackendError, ColumnSync, Connection, KeyDeletes, LoadJob, LoadReport, ReplacedWindow};
use crate::diagnostic::Diagnostic;
use crate::manifest::config::LoadConfig;
use crate::manifest::{Manifest, NodeId, Resource};
use crate::project::nodes::{NodeRef, TestKind};
use crate::stage::{Dir, Root};
use crate::values::{LoadMode, TableName};

/// What loading a set of nodes did, per node.
#[derive(Debug, Default)]
pub struct Loads {
    pub results: BTreeMap<NodeId, Result<LoadReport, String>>,
    pub diagnostics: Vec<Diagnostic>,
    pub interrupted: bool,
}

/// A load's progress.
#[derive(Debug)]
pub enum LoadEvent<'a> {
    /// The target is connected and `total` loads start.
    Started { total: usize },
    /// Rows sent so far of the table loading now (every 200 ms).
    Rows { model: &'a str, rows: u64, total: u64, rate: f64 },
    /// The `k`th load of `total` (from 0) ended.
    Finished { k: usize, total: usize, job: &'a LoadJob, result: Result<&'a LoadReport, &'a BackendError> },
    /// Ctrl-C stopped the `k`th load; its table is as it was.
    Interrupted { k: usize, total: usize, job: &'a LoadJob },
    /// The loads that started have ended.
    Done,
}

/// A model's or seed's `load` config (`None`: it is not loaded), or the
/// diagnostic of a bad one.
pub fn config_for(manifest: &Manifest, id: NodeId) -> Result<Option<LoadConfig>, Box<Diagnostic>> {
    manifest[id].config.load.clone()
}

/// The nodes of `selected` that load into the target (or whose `load`
/// config is wrong, so that the error is reported).
pub fn loadable(manifest: &Manifest, selected: BTreeSet<NodeId>) -> BTreeSet<NodeId> {
    selected.into_iter().filter(|&i| matches!(manifest[i].config.load, Ok(Some(_)) | Err(_))).collect()
}

/// Where the stages to load are: `<root>/<node>/`, except the rows a run
/// staged elsewhere to be loaded its own way (an incremental model's
/// increment, or its first build before it replaces the stage).
#[derive(Debug, Clone)]
pub struct Stages {
    pub root: Root,
    pub pending: BTreeMap<NodeId, Pending>,
}

/// Rows staged apart from the node's stage, and the mode they load with.
#[derive(Debug, Clone)]
pub struct Pending {
    pub dir: Dir,
    pub mode: LoadMode,
    /// How the table's columns follow the rows' (see [`ColumnSync`]).
    pub column_sync: ColumnSync,
    /// The rows of the table they replace (see [`LoadJob::window`]).
    pub window: Option<ReplacedWindow>,
    /// Records to delete or flag with them (see [`LoadJob::deletes`]).
    pub deletes: Option<KeyDeletes>,
}

impl Stages {
    /// Every node's stage under `root`.
    pub fn at(root: &Root) -> Self {
        Stages { root: root.clone(), pending: BTreeMap::new() }
    }
}

/// A job for a staged node: reads and checks its stage manifest and
/// resolves the columns.
pub async fn job_for(
    manifest: &Manifest,
    id: NodeId,
    config: LoadConfig,
    stages: &Stages,
) -> Result<LoadJob, BackendError> {
    let node = &manifest[id];
    let (dir, mode, column_sync, window, deletes) = match stages.pending.get(&id) {
        Some(p) => (p.dir.clone(), p.mode, p.column_sync.clone(), p.window.clone(), p.deletes.clone()),
        None => (stages.root.dir(&node.name), config.mode, ColumnSync::default(), None, None),
    };
    let manifest = crate::stage::verify(&dir).await?;
    let stage = crate::stage::StagedTable { dir, manifest };
    let job = LoadJob::from_stage(&node.name, config.table, mode, config.unique_key, stage)?;
    Ok(LoadJob { column_sync, window, deletes, ..job })
}

/// Why a node's load cannot start (a bad `load` config, a stage that
/// cannot be read): what its result records, and the diagnostic.
#[derive(Debug)]
pub struct NotLoadable {
    pub message: String,
    pub diagnostic: Box<Diagnostic>,
}

/// The jobs for `nodes` that load, in load order, or why each cannot.
pub async fn jobs_for(
    manifest: &Manifest,
    nodes: &BTreeSet<NodeId>,
    stages: &Stages,
) -> Vec<(NodeId, Result<LoadJob, NotLoadable>)> {
    let mut jobs = Vec::new();
    for i in load_order(manifest, nodes) {
        let job = match config_for(manifest, i) {
            Ok(None) => continue,
            Ok(Some(config)) => job_for(manifest, i, config, stages).await.map_err(|e| NotLoadable {
                message: e.to_string(),
                diagnostic: Box::new(e.to_diagnostic(&manifest[i].name)),
            }),
            Err(d) => Err(NotLoadable { message: d.message.clone(), diagnostic: d }),
        };
        jobs.push((i, job));
    }
    jobs
}

/// Loads `nodes` (those with a `load`, in load order) from their stages.
/// Ctrl-C stops the load under way (its table is left as it was) and the
/// rest.
pub async fn load_nodes(
    target: &Target,
    manifest: &Manifest,
    nodes: &BTreeSet<NodeId>,
    stages: &Stages,
    on: &(dyn Fn(LoadEvent<'_>) + Sync),
) -> Loads {
    let mut loads = Loads::default();
    let mut jobs = Vec::new();
    for (i, job) in jobs_for(manifest, nodes, stages).await {
        match job {
            Ok(job) => jobs.push((i, job)),
            Err(e) => {
                loads.results.insert(i, Err(e.message));
                loads.diagnostics.push(*e.diagnostic);
            }
        }
    }
    if jobs.is_empty() {
        return loads;
    }
    match crate::backend::connect(target).await {
        Ok(mut conn) => load_jobs(&mut conn, &jobs, on, &mut loads).await,
        Err(e) => {
            for (i, _) in &jobs {
                loads.results.insert(*i, Err(e.to_string()));
            }
            loads.diagnostics.push(e.to_diagnostic(&format!("target `{}`", target.name)));
        }
    }
    loads
}

/// Loads `jobs` one after another into `loads`, until one is interrupted.
async fn load_jobs(
    conn: &mut Connection,
    jobs: &[(NodeId, LoadJob)],
    on: &(dyn Fn(LoadEvent<'_>) + Sync),
    loads: &mut Loads,
) {
    let total = jobs.len();
    on(LoadEvent::Started { total });
    for (k, (i, job)) in jobs.iter().enumerate() {
        let Some(result) = load_one(conn, job, on).await else {
            loads.interrupted = true;
            on(LoadEvent::Interrupted { k, total, job });
            break;
        };
        on(LoadEvent::Finished { k, total, job, result: result.as_ref() });
        match result {
            Ok(report) => {
                loads.results.insert(*i, Ok(report));
            }
            Err(e) => {
                loads.results.insert(*i, Err(e.to_string()));
                loads.diagnostics.push(e.to_diagnostic(&job.model));
            }
        }
    }
    on(LoadEvent::Done);
}

/// Loads one job, telling `on` of the rows sent as it goes; `None` when
/// Ctrl-C stopped it.
async fn load_one(
    conn: &mut Connection,
    job: &LoadJob,
    on: &(dyn Fn(LoadEvent<'_>) + Sync),
) -> Option<Result<LoadReport, BackendError>> {
    let rows = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let work = conn.load(job, &rows);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(work, ctrl_c);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            r = &mut work => return Some(r.map(|report| with_window(report, job))),
            _ = &mut ctrl_c => return None,
            _ = tick.tick() => {
                let n = rows.load(Ordering::Relaxed);
                let rate = n as f64 / started.elapsed().as_secs_f64().max(1e-3);
                on(LoadEvent::Rows { model: &job.model, rows: n, total: job.rows(), rate });
            }
        }
    }
}

/// A microbatch load's report says that its rows replaced a window.
fn with_window(mut report: LoadReport, job: &LoadJob) -> LoadReport {
    if let Some(w) = job.window.as_ref().filter(|_| job.mode == LoadMode::Append) {
        report.strategy =
            format!("the rows of `{}` from {} to {} deleted, then {}", w.column, w.start, w.end, report.strategy);
    }
    report
}

/// The statements each load of `nodes` would run, after the same preflight
/// checks (`ferry load --dry-run`): per node, its job and statements, or
/// why it cannot load. `Err`: the target cannot be reached.
pub async fn dry_run(
    target: &Target,
    manifest: &Manifest,
    nodes: &BTreeSet<NodeId>,
    stage_root: &Root,
) -> Result<Vec<Result<(LoadJob, Vec<String>), Box<Diagnostic>>>, Box<Diagnostic>> {
    let mut conn = connect(target).await?;
    let mut plans = Vec::new();
    for (i, job) in jobs_for(manifest, nodes, &Stages::at(stage_root)).await {
        let name = &manifest[i].name;
        let plan = match job {
            Ok(job) => conn.dry_run(&job).await.map(|sql| (job, sql)).map_err(|e| Box::new(e.to_diagnostic(name))),
            Err(e) => Err(e.diagnostic),
        };
        plans.push(plan);
    }
    Ok(plans)
}

/// What `ferry rollback` did to one model's table.
pub struct RolledBack {
    pub model: String,
    pub table: TableName,
    pub result: Result<(), Box<Diagnostic>>,
}

/// The tables the `replace` loads of `selected` kept as
/// `<table>__ferry_prev`, each with its model; a bad `load` config stops
/// everything with its diagnostic.
pub fn rollback_targets(
    manifest: &Manifest,
    selected: &BTreeSet<NodeId>,
) -> Result<Vec<(String, TableName)>, Box<Diagnostic>> {
    let mut targets = Vec::new();
    for &i in selected {
        if let Some(c) = config_for(manifest, i)? {
            targets.push((manifest[i].name.clone(), c.table));
        }
    }
    Ok(targets)
}

/// Restores each of `targets` (model, table) from the table its last
/// `replace` load kept. `Err`: the target cannot be reached.
pub async fn rollback(target: &Target, targets: Vec<(String, TableName)>) -> Result<Vec<RolledBack>, Box<Diagnostic>> {
    let mut conn = connect(target).await?;
    let mut done = Vec::new();
    for (model, table) in targets {
        let result = conn.rollback(&table).await.map_err(|e| Box::new(e.to_diagnostic(&model)));
        done.push(RolledBack { model, table, result });
    }
    Ok(done)
}

/// Connects to the target, or says why not as a diagnostic.
pub async fn connect(target: &Target) -> Result<Connection, Box<Diagnostic>> {
    crate::backend::connect(target).await.map_err(|e| Box::new(e.to_diagnostic(&format!("target `{}`", target.name))))
}

/// Orders loads so that parents come before children: along the DAG, and
/// along `relationships` tests between loaded nodes (so foreign keys hold
/// at every commit). Ties keep DAG order.
pub fn load_order(manifest: &Manifest, nodes: &BTreeSet<NodeId>) -> Vec<NodeId> {
    let position: BTreeMap<NodeId, usize> = manifest.order.iter().enumerate().map(|(k, &i)| (i, k)).collect();
    let mut before: BTreeMap<NodeId, BTreeSet<NodeId>> = nodes.iter().map(|&i| (i, BTreeSet::new())).collect();
    for &i in nodes {
        for a in manifest.graph.ancestors(i, None) {
            if nodes.contains(&a) {
                before.entry(i).or_default().insert(a);
            }
        }
    }
    for (t, node) in manifest.iter() {
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
    let mut pending: Vec<NodeId> = nodes.iter().copied().collect();
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

fn node_ref_is(manifest: &Manifest, id: NodeId, r: &NodeRef) -> bool {
    let node = &manifest[id];
    match (r, &node.resource) {
        (NodeRef::Model(m), Resource::Model { .. }) | (NodeRef::Seed(m), Resource::Seed(_)) => &node.name == m,
        _ => false,
    }
}
