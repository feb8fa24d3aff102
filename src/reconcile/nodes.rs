//! Reconciling a project's loaded tables (`ferry reconcile`, the end of
//! `ferry build`) and a source against a table (`ferry reconcile
//! --source`): the jobs, one connection, a [`ReconcileReport`] per table as
//! [`ReconcileEvent`]s, and the run's `reconcile.json`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};

use super::{ReconcileReport, Reference, Status, reconcile_table};
use crate::backend::LoadJob;
use crate::backend::checksum::SideChoice;
use crate::backend::profiles::Target;
use crate::diagnostic::{Code, Diagnostic};
use crate::engine::{Engine, node as engine_node, sources};
use crate::load;
use crate::manifest::config::ReconcileConfig as Config;
use crate::manifest::{Manifest, NodeId, Resource};
use crate::stage::{self, Root, StageOptions, StagedTable};
use crate::state::run_results::RunResults;
use crate::state::{Layout, Ledger, RunDir, files};
use crate::values::{LoadMode, TableName};

/// What reconciling a set of nodes found.
#[derive(Debug, Default)]
pub struct Reconciled {
    pub reports: BTreeMap<NodeId, ReconcileReport>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Reconciled {
    /// Tables that did not reconcile (or could not be compared).
    pub fn failed(&self) -> usize {
        self.reports.values().filter(|r| matches!(r.status, Status::Fail | Status::Error)).count()
    }

    /// Tables that reconciled.
    pub fn passed(&self) -> usize {
        self.reports.values().filter(|r| r.status == Status::Pass).count()
    }

    /// Files a table's report, with a diagnostic when it could not be compared.
    fn file(&mut self, id: NodeId, job: &LoadJob, report: ReconcileReport) {
        if let Some(e) = &report.error {
            self.diagnostics.push(
                Diagnostic::error(Code::Reconcile, format!("{}: reconciling `{}` failed: {e}", job.model, job.table))
                    .with_help("check the target with `ferry debug`, or reload with `ferry load`"),
            );
        }
        self.reports.insert(id, report);
    }
}

/// A reconciliation's progress.
#[derive(Debug)]
pub enum ReconcileEvent<'a> {
    /// The `k`th table of `total` (from 1) is reconciled.
    Finished { k: usize, total: usize, job: &'a LoadJob, report: &'a ReconcileReport },
}

/// Reconciles the loaded `nodes` against the target, with the ledgers of
/// the run that staged them; `side` (from `--side`) overrides each model's
/// `reconcile.side`.
pub async fn reconcile_nodes(
    target: &Target,
    manifest: &Manifest,
    nodes: &BTreeSet<NodeId>,
    stages: &load::Stages,
    (ledgers, side): (&HashMap<NodeId, Ledger>, Option<SideChoice>),
    on: &(dyn Fn(ReconcileEvent<'_>) + Sync),
) -> Reconciled {
    let mut done = Reconciled::default();
    let jobs = jobs(manifest, nodes, stages, side, &mut done.diagnostics).await;
    if jobs.is_empty() {
        return done;
    }
    let mut conn = match load::connect(target).await {
        Ok(c) => c,
        Err(d) => {
            done.diagnostics.push(*d);
            return done;
        }
    };
    let total = jobs.len();
    for (k, (i, job, config)) in jobs.iter().enumerate() {
        let report = reconcile_table(&mut conn, job, (config, Reference::Stage), ledgers.get(i)).await;
        on(ReconcileEvent::Finished { k: k + 1, total, job, report: &report });
        done.file(*i, job, report);
    }
    done
}

/// The tables of `nodes` to reconcile, in load order, with their config;
/// what keeps one out (a bad config, a stage that cannot be read) goes to
/// `diagnostics`.
async fn jobs(
    manifest: &Manifest,
    nodes: &BTreeSet<NodeId>,
    stages: &load::Stages,
    side: Option<SideChoice>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<(NodeId, LoadJob, Config)> {
    let mut jobs = Vec::new();
    for i in load::load_order(manifest, nodes) {
        let node = &manifest[i];
        let config = match &node.config.reconcile {
            Ok(c) => Config { side: side.unwrap_or(c.side), ..c.clone() },
            Err(d) => {
                diagnostics.push((**d).clone());
                continue;
            }
        };
        if !config.enabled {
            continue;
        }
        match load::config_for(manifest, i) {
            Ok(None) => {}
            Ok(Some(load_config)) => match load::job_for(manifest, i, load_config, stages).await {
                Ok(job) => jobs.push((i, job, config)),
                Err(e) => diagnostics.push(e.to_diagnostic(&node.name)),
            },
            Err(d) => diagnostics.push(*d),
        }
    }
    jobs
}

/// `ferry reconcile --source s.t --target-table x`: the source is read once
/// into a temporary stage under `.ferry/tmp/` (so both passes see one
/// snapshot of it, even of a live database) and compared with the target
/// table as a staged model is, keyed by `key`. `Ok(Err(...))`: the source
/// cannot be read or the target reached.
pub async fn reconcile_source(
    (engine, manifest, target): (&Engine, &Manifest, &Target),
    source: NodeId,
    (table, key): (TableName, Vec<String>),
    config: &Config,
    on: &(dyn Fn(ReconcileEvent<'_>) + Sync),
) -> Result<Result<Reconciled, Vec<Diagnostic>>> {
    // A directory of this invocation's own, removed however it ends.
    let tmp = manifest.layout().tmp();
    fs_err::create_dir_all(&tmp).with_context(|| format!("failed to create `{tmp}`"))?;
    let scratch = tempfile::Builder::new()
        .prefix("reconcile-")
        .tempdir_in(&tmp)
        .with_context(|| format!("failed to create a directory in `{tmp}`"))?;
    let scratch_dir = Utf8Path::from_path(scratch.path()).context("the scratch directory is not UTF-8")?;
    let name = manifest[source].display_name();
    let staged = match stage_source(engine, manifest, source, scratch_dir).await {
        Ok(s) => s,
        Err(diagnostics) => return Ok(Err(diagnostics)),
    };
    let job = match LoadJob::from_stage(&name, table, LoadMode::Replace, key, staged) {
        Ok(j) => j,
        Err(e) => return Ok(Err(vec![e.to_diagnostic(&name)])),
    };
    let mut conn = match load::connect(target).await {
        Ok(c) => c,
        Err(d) => return Ok(Err(vec![*d])),
    };
    let report = reconcile_table(&mut conn, &job, (config, Reference::Source), None).await;
    on(ReconcileEvent::Finished { k: 1, total: 1, job: &job, report: &report });
    let mut done = Reconciled::default();
    done.file(source, &job, report);
    Ok(Ok(done))
}

/// Reads source `id` whole into a stage under `dir`.
async fn stage_source(
    engine: &Engine,
    manifest: &Manifest,
    id: NodeId,
    dir: &Utf8Path,
) -> Result<StagedTable, Vec<Diagnostic>> {
    let node = &manifest[id];
    if let Resource::Source(s) = &node.resource {
        sources::register_source(engine, manifest, s).await?;
    }
    let name = node.display_name();
    let relation = node.relation.as_ref().map_or_else(|| name.clone(), |r| r.rendered.clone());
    match engine.plan(&format!("SELECT * FROM {relation}")).await {
        Ok(p) => engine_node::stage_plan(engine, manifest, id, p, dir, StageOptions::default()).await,
        Err(e) => Err(vec![Diagnostic::error(
            Code::Execution,
            format!("`{name}` cannot be read: {}", e.find_root().strip_backtrace()),
        )]),
    }
}

/// The ledgers the last run's `run_results.json` recorded, for stages that
/// have not changed since (their checksum still matches). An incremental
/// run's ledger counts its increment, not the stage it merged it into, so
/// it has none to check.
pub async fn ledgers_of_last_run(layout: &Layout, stages: &Root, manifest: &Manifest) -> HashMap<NodeId, Ledger> {
    let Some(results) = RunResults::read(layout) else { return HashMap::new() };
    let mut out = HashMap::new();
    for r in &results.results {
        let (Some(i), Some(ledger), Some(recorded)) = (manifest.find(&r.unique_id), &r.ledger, &r.stage) else {
            continue;
        };
        if r.incremental.as_ref().is_some_and(|inc| inc.run == "incremental") {
            continue;
        }
        let stage = stage::verify(&stages.dir(&manifest[i].name)).await;
        if stage.is_ok_and(|s| s.checksum == recorded.checksum) {
            out.insert(i, ledger.clone());
        }
    }
    out
}

/// Writes the reports into the run's directory as `reconcile.json`: the
/// file, as shown, or `None` when there was nothing to reconcile.
pub fn write_report(done: &Reconciled, run: &RunDir) -> Result<Option<Utf8PathBuf>> {
    if done.reports.is_empty() {
        return Ok(None);
    }
    let file = run.join("reconcile.json");
    let reports: Vec<&ReconcileReport> = done.reports.values().collect();
    files::write_atomic(&file.path, &serde_json::to_vec_pretty(&reports)?, true)
        .with_context(|| format!("failed to write `{}`", file.path))?;
    Ok(Some(file.shown))
}
