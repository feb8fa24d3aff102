//! `execute`: plans every selected node first (no row moves if planning
//! fails), materializes and tests them in DAG order, concurrently, loads
//! what passed, reconciles what loaded (`build`), and writes
//! `.ferry/run_results.json` and `.ferry/manifest.json`. In `build`, a
//! model's tests run right after it, and a failing test skips everything
//! downstream of it, as in dbt.
//!
//! Ctrl-C stops the nodes running (their unfinished stages are discarded,
//! earlier stages kept) and nothing is loaded; during a load it leaves the
//! table being loaded as it was.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Result;
use tracing::Instrument as _;

use super::events::{NodeEvent, Observer, RunEvent};
use super::gating::{self, Gated};
use super::incremental::{self, IncrementalRun};
use super::materialize::{self, Places};
use super::node::{self, Done, Failed, Outcome, TestPlaces};
use super::plan::{self, PlanOutcome};
use super::report::{IncrementalReport, NodeReport, RunReport};
use super::{Prepared, Which, artifacts};
use crate::backend::{ColumnSync, KeyDeletes, ReplacedWindow, SoftDelete};
use crate::dag::schedule::{self, Event};
use crate::diagnostic::Diagnostic;
use crate::engine::Engine;
use crate::load::{self, Loads};
use crate::manifest::config::{Deletes, Strategy};
use crate::manifest::{Manifest, NodeId};
use crate::reconcile::{self, Reconciled};
use crate::stage::{self, StageOptions};
use crate::state::run_results::{RunResults, Status};
use crate::state::{history, source_schemas};
use crate::values::LoadMode;

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub which: Which,
    /// Models to run at once.
    pub threads: usize,
    /// The engine's memory pool (`None`: half the RAM).
    pub memory_limit: Option<u64>,
    /// Stage only: load nothing.
    pub no_load: bool,
    /// Keep every test's failing rows.
    pub store_failures: bool,
    /// The selection as given (`--select`, `--exclude`), for the run history.
    pub selection: String,
}

/// Runs `selected` (the nodes of it that `options.which` executes) and
/// reports what became of each. Errors are ferry's own (a file it could
/// not write); what the project gets wrong is in the report.
pub async fn execute(
    prepared: &Prepared,
    selected: &BTreeSet<NodeId>,
    options: &RunOptions,
    observer: &dyn Observer,
) -> Result<RunReport> {
    let started = Instant::now();
    let manifest = &prepared.manifest;
    let wanted: BTreeSet<NodeId> = selected.iter().copied().filter(|&i| options.which.wants(manifest, i)).collect();
    let engine = super::engine(prepared, options.memory_limit)?;
    let (prepared, incremental) = &with_incremental(prepared, &engine, &wanted, options).await;
    let manifest = &prepared.manifest;
    let recorded = source_schemas::read(&prepared.layout);
    let outcome = plan::plan(&engine, manifest, (&wanted, &prepared.failed), Some(&recorded)).await;
    let prepared = &Prepared { manifest: plan::apply_renders(manifest, &outcome), ..prepared.clone() };
    let manifest = &prepared.manifest;
    artifacts::write_compiled(&prepared.layout, manifest, &wanted)?;
    let mut planned = prepared.diagnostics.clone();
    planned.extend(outcome.diagnostics.iter().cloned());
    observer.event(RunEvent::Planned { diagnostics: &planned });
    let planning_failed = planned.iter().any(Diagnostic::is_error);

    let run = run_nodes(prepared, &engine, (&wanted, &outcome, incremental.clone()), options, observer).await;
    let prepared = &with_late_renders(prepared, &run.renders, &wanted)?;
    let manifest = &prepared.manifest;
    let mut report = RunReport {
        which: options.which,
        run_id: manifest.globals.invocation_id.clone(),
        nodes: run.nodes,
        diagnostics: run.diagnostics,
        planning_failed,
        interrupted: run.interrupted,
        load_interrupted: false,
        started,
        elapsed: 0.0,
        reconciled: None,
        pruned: Vec::new(),
        cluster: engine.cluster().map(|scheduler| crate::state::run_record::ClusterRun {
            scheduler,
            read_here: engine.read_for_cluster(),
            jobs: engine.cluster_jobs(),
        }),
    };
    kill_point("staged");
    if !(report.interrupted || options.no_load) {
        let loads = load_staged(prepared, &report, observer).await;
        record_loads(&mut report, loads);
    }
    kill_point("loaded");
    commit_incremental(prepared, &mut report).await;
    if options.which == Which::Build && !report.interrupted && !report.load_interrupted {
        report.reconciled = Some(reconcile_loaded(prepared, &mut report, observer).await);
    }
    kill_point("reconciled");
    advance_watermarks(prepared, &mut report);
    keep_row_hashes(prepared, &mut report).await;
    discard_stored_apart(prepared, &report).await;
    report.elapsed = started.elapsed().as_secs_f64();
    let results = report.results(manifest);
    results.write(&prepared.layout)?;
    if report.failed() == 0 && !report.planning_failed && !report.interrupted && !report.load_interrupted {
        record_source_schemas(prepared, &outcome)?;
    }
    let info = run_info(prepared, options, &report);
    report.pruned = record_history(prepared, &info, &results)?;
    let target = (&prepared.target, prepared.masking.is_some());
    artifacts::run_record(manifest, &info, target, &results, report.cluster.as_ref())
        .write(&prepared.layout.run(&report.run_id))?;
    artifacts::manifest_file(manifest, &outcome).write(&prepared.layout)?;
    if let Some((reconciled, _)) = &report.reconciled {
        reconcile::write_report(reconciled, &prepared.layout.run(&report.run_id))?;
    }
    Ok(report)
}

/// The manifest with the renders of the nodes planned as they ran (see
/// [`PlanOutcome::late`]), whose compiled SQL is written again.
fn with_late_renders(
    prepared: &Prepared,
    renders: &HashMap<NodeId, crate::template::Rendered>,
    wanted: &BTreeSet<NodeId>,
) -> Result<Prepared> {
    if renders.is_empty() {
        return Ok(prepared.clone());
    }
    let prepared = Prepared { manifest: plan::with_renders(&prepared.manifest, renders), ..prepared.clone() };
    let again: BTreeSet<NodeId> = renders.keys().copied().filter(|i| wanted.contains(i)).collect();
    artifacts::write_compiled(&prepared.layout, &prepared.manifest, &again)?;
    Ok(prepared)
}

/// Records the columns of the sources this run read, which the next run's
/// are compared with (schema drift).
fn record_source_schemas(prepared: &Prepared, outcome: &PlanOutcome) -> Result<()> {
    let manifest = &prepared.manifest;
    let schemas: source_schemas::SourceSchemas = outcome
        .schemas
        .iter()
        .filter(|(i, _)| matches!(manifest[**i].resource, crate::manifest::Resource::Source(_)))
        .map(|(&i, schema)| (manifest[i].unique_id.clone(), crate::state::manifest_file::OutputColumn::of(schema)))
        .collect();
    if schemas.is_empty() {
        return Ok(());
    }
    source_schemas::write(&prepared.layout, &schemas)
}

/// What the history and the run's record say of the run besides its
/// nodes' results.
fn run_info(prepared: &Prepared, options: &RunOptions, report: &RunReport) -> history::RunInfo {
    let manifest = &prepared.manifest;
    let reconcile_seconds = report
        .reconciled
        .iter()
        .flat_map(|(r, _)| r.reports.iter())
        .map(|(&i, r)| (manifest[i].unique_id.clone(), r.seconds))
        .collect();
    history::RunInfo {
        run_id: report.run_id.clone(),
        started_at: manifest.globals.run_started_at,
        ended_at: chrono::Utc::now(),
        command: options.which.name().to_owned(),
        selection: options.selection.clone(),
        git_commit: history::git_commit(prepared.layout.root()),
        reconcile_seconds,
    }
}

/// Appends the run to the project's history (see [`history`]), and
/// removes the files of the runs `history.keep_runs` does not keep
/// (their ids).
fn record_history(prepared: &Prepared, info: &history::RunInfo, results: &RunResults) -> Result<Vec<String>> {
    history::append(&prepared.layout, info, results)?;
    match prepared.keep_runs {
        Some(keep) => history::prune_runs(&prepared.layout, keep, &info.run_id),
        None => Ok(Vec::new()),
    }
}

/// The project as this run runs it: its incremental models resolved (see
/// [`incremental`]) and rendered again where they run incrementally, their
/// current data registered, and the models that cannot run failed.
async fn with_incremental(
    prepared: &Prepared,
    engine: &Engine,
    wanted: &BTreeSet<NodeId>,
    options: &RunOptions,
) -> (Prepared, HashMap<NodeId, IncrementalRun>) {
    let mut resolved = incremental::resolve(prepared, wanted, !options.no_load).await;
    let manifest = resolved.manifest.take().map_or_else(|| Arc::clone(&prepared.manifest), Arc::new);
    incremental::register_current(engine, &manifest, &mut resolved).await;
    let mut failed = prepared.failed.clone();
    failed.extend(resolved.failed.iter().copied());
    let mut diagnostics = prepared.diagnostics.clone();
    diagnostics.extend(resolved.diagnostics);
    (Prepared { manifest, failed, diagnostics, ..prepared.clone() }, resolved.runs)
}

/// What running the nodes did.
struct NodesRun {
    nodes: BTreeMap<NodeId, NodeReport>,
    diagnostics: Vec<Diagnostic>,
    interrupted: bool,
    /// The renders of late nodes (see [`PlanOutcome::late`]).
    renders: HashMap<NodeId, crate::template::Rendered>,
}

/// Materializes and tests the planned nodes of `wanted`, in DAG order.
async fn run_nodes(
    prepared: &Prepared,
    engine: &Engine,
    (wanted, outcome, incremental): (&BTreeSet<NodeId>, &PlanOutcome, HashMap<NodeId, IncrementalRun>),
    options: &RunOptions,
    observer: &dyn Observer,
) -> NodesRun {
    let manifest = &prepared.manifest;
    match &prepared.stages {
        stage::Root::Local(root) => stage::sweep_leftovers(root),
        stage::Root::Stored(root) | stage::Root::Pending(root) => materialize::sweep_stored_apart(root).await,
    }
    let order: Vec<NodeId> = manifest.order.iter().copied().filter(|i| wanted.contains(i)).collect();
    let runnable: Vec<NodeId> =
        order.iter().copied().filter(|i| !outcome.failed.contains(i) && !outcome.skipped.contains_key(i)).collect();
    read_unselected_parents(prepared, engine, wanted, outcome, observer).await;
    let rows = Arc::new(AtomicU64::new(0));
    let places = Arc::new(Places { incremental, ..places(prepared, &runnable, &rows) });
    observer.event(RunEvent::Started { total: order.len() });
    let mut collect = Collector::new((manifest, engine), &order, outcome, observer);
    let gated = gating::gate(manifest, options.which, &order, runnable, &outcome.failed);
    for (&i, &because) in &gated.held {
        collect.skip(i, because);
    }
    let tests = TestPlaces { failures: places.run_dir.join("test_failures"), store_failures: options.store_failures };
    let late: BTreeSet<NodeId> = outcome.late.keys().copied().collect();
    let work = (engine, manifest, (Arc::clone(&places), Arc::new(tests)), &late);
    let interrupted = schedule_nodes(&gated, work, options.threads, &mut collect, &rows).await;
    observer.event(RunEvent::Executed);
    match &places.scratch_root {
        stage::Root::Local(scratch) => {
            let _ = fs_err::remove_dir_all(scratch);
            if let Some(parent) = scratch.parent() {
                let _ = fs_err::remove_dir(parent); // only if no other run is using it
            }
        }
        stage::Root::Stored(scratch) | stage::Root::Pending(scratch) => stage::store::remove(scratch).await,
    }
    NodesRun { nodes: collect.nodes, diagnostics: collect.diagnostics, interrupted, renders: collect.renders }
}

/// Where this run's nodes are materialized; `rows` counts the rows staged.
fn places(prepared: &Prepared, runnable: &[NodeId], rows: &Arc<AtomicU64>) -> Places {
    let run_id = prepared.manifest.globals.invocation_id.clone();
    Places {
        stage_root: prepared.stages.clone(),
        scratch_root: match &prepared.stages {
            // Where a cluster's executors read the stages, they read these.
            stage::Root::Stored(stages) | stage::Root::Pending(stages) => {
                stage::Root::Stored(stages.child(stage::SCRATCH).child(&run_id))
            }
            stage::Root::Local(_) => stage::Root::Local(prepared.layout.scratch(&run_id)),
        },
        stage_options: StageOptions {
            rows_written: Some(Arc::clone(rows)),
            masked: prepared.masking.is_some(),
            ..StageOptions::default()
        },
        compute_once: materialize::views_read_more_than_once(&prepared.manifest, runnable),
        run_dir: prepared.layout.run(&run_id),
        run_id,
        incremental: HashMap::new(),
        hashes_root: super::change::hashes_root(&prepared.stages, &prepared.layout.state()),
    }
}

/// What every node's run shares: where it materializes, and where tests
/// keep failures.
type Shared = (Arc<Places>, Arc<TestPlaces>);

/// Runs the gated nodes, `threads` at a time, until they end or Ctrl-C
/// (then `true`: the running nodes are dropped, their stages discarded).
async fn schedule_nodes(
    gated: &Gated,
    (engine, manifest, (places, tests), late): (&Engine, &Arc<Manifest>, Shared, &BTreeSet<NodeId>),
    threads: usize,
    collect: &mut Collector<'_>,
    rows: &AtomicU64,
) -> bool {
    let work = schedule::run(
        &gated.graph,
        &gated.runnable,
        (threads, Some(std::time::Duration::from_secs(1))),
        |i| {
            let (engine, manifest, places, tests) =
                (engine.for_node(&manifest[i].name), Arc::clone(manifest), Arc::clone(&places), Arc::clone(&tests));
            let late = late.contains(&i);
            let span = tracing::info_span!("node", model = %manifest[i].name, late);
            async move {
                let result = node::run_node(&engine, &manifest, i, (&places, &tests), late).await;
                tracing::debug!(ok = result.is_ok(), "finished");
                result
            }
            .instrument(span)
        },
        |event| collect.record(event, rows),
    );
    tokio::select! {
        () = work => false,
        _ = tokio::signal::ctrl_c() => true,
    }
}

/// Makes the parents of `wanted` that this run does not execute readable
/// (from their stages, or their SQL), saying which had no stage.
async fn read_unselected_parents(
    prepared: &Prepared,
    engine: &Engine,
    wanted: &BTreeSet<NodeId>,
    outcome: &PlanOutcome,
    observer: &dyn Observer,
) {
    let manifest = &prepared.manifest;
    let needed = manifest.graph.with_ancestors(wanted.iter().copied());
    let parents: BTreeSet<NodeId> =
        needed.into_iter().filter(|i| !wanted.contains(i) && !outcome.failed.contains(i)).collect();
    for (name, why) in materialize::read_parents_lazily(engine, manifest, &parents, &prepared.stages).await {
        observer.event(RunEvent::UnstagedParent { name: &name, why });
    }
}

/// Collects node reports as the schedule's events arrive, and passes each
/// on to the observer.
struct Collector<'a> {
    manifest: &'a Manifest,
    /// The engine the nodes ran on, for the cluster's jobs of each.
    engine: &'a Engine,
    observer: &'a dyn Observer,
    total: usize,
    done: usize,
    running: BTreeMap<NodeId, Instant>,
    nodes: BTreeMap<NodeId, NodeReport>,
    diagnostics: Vec<Diagnostic>,
    renders: HashMap<NodeId, crate::template::Rendered>,
}

impl<'a> Collector<'a> {
    /// Starts with the nodes planning failed or skipped.
    fn new(
        (manifest, engine): (&'a Manifest, &'a Engine),
        order: &[NodeId],
        outcome: &PlanOutcome,
        observer: &'a dyn Observer,
    ) -> Self {
        let mut c = Collector {
            manifest,
            engine,
            observer,
            total: order.len(),
            done: 0,
            running: BTreeMap::new(),
            nodes: BTreeMap::new(),
            diagnostics: Vec::new(),
            renders: HashMap::new(),
        };
        for &i in order {
            if outcome.failed.contains(&i) {
                let message = outcome
                    .diagnostics
                    .iter()
                    .find(|d| d.file.as_ref() == Some(&manifest[i].path()))
                    .map_or_else(|| "failed to compile".to_owned(), |d| d.message.clone());
                c.finish(i, NodeReport::not_run(&manifest[i], Status::Error, message));
            } else if let Some(&because) = outcome.skipped.get(&i) {
                c.skip(i, because);
            }
        }
        c
    }

    fn record(&mut self, event: Event<Done, Box<Failed>, NodeId>, rows: &AtomicU64) {
        match event {
            Event::Started(i) => {
                self.running.insert(i, Instant::now());
            }
            Event::Finished(i, result) => {
                let secs = self.running.remove(&i).map_or(0.0, |t| t.elapsed().as_secs_f64());
                let node = &self.manifest[i];
                let mut report = match result {
                    Ok(done) => {
                        self.diagnostics.extend(done.diagnostics);
                        if let Some(rendered) = done.rendered {
                            self.renders.insert(i, rendered);
                        }
                        let readers = self.manifest.graph.children(i).len();
                        match &done.outcome {
                            Outcome::Materialized(m) => {
                                NodeReport::materialized(node, m, readers, (secs, done.started_at))
                            }
                            Outcome::Tested(t) => NodeReport::tested(node, t, (secs, done.started_at)),
                        }
                    }
                    Err(failed) => {
                        let Failed { started_at, diagnostics, test, ledger } = *failed;
                        let message = diagnostics.first().map(|d| d.message.clone());
                        self.diagnostics.extend(diagnostics);
                        match &test {
                            Some(t) => NodeReport::tested(node, t, (secs, started_at)),
                            None => NodeReport::failed(node, message, ledger, (secs, started_at)),
                        }
                    }
                };
                report.cluster = self.engine.cluster_jobs_of(&node.name);
                self.finish(i, report);
            }
            Event::Skipped { node, because } => self.skip(node, because),
            Event::Tick => {}
        }
        let running: Vec<&str> = self.running.keys().map(|&i| self.manifest[i].name.as_str()).collect();
        let rows = rows.load(Ordering::Relaxed);
        let cluster = self.engine.cluster_progress();
        self.observer.event(RunEvent::Node(NodeEvent::Progress { rows, running, cluster }));
    }

    fn skip(&mut self, i: NodeId, because: NodeId) {
        let cause = self.manifest[because].display_name();
        let report = NodeReport::not_run(&self.manifest[i], Status::Skipped, format!("skipped: `{cause}` failed"));
        self.finish(i, report);
    }

    fn finish(&mut self, id: NodeId, report: NodeReport) {
        self.done += 1;
        let (done, total) = (self.done, self.total);
        self.observer.event(RunEvent::Node(NodeEvent::Finished { id, report: &report, done, total }));
        self.nodes.insert(id, report);
    }
}

/// Loads the staged nodes no failing test holds back, in load order.
async fn load_staged(prepared: &Prepared, report: &RunReport, observer: &dyn Observer) -> Loads {
    let manifest = &prepared.manifest;
    let held_back = gating::held_back_by_tests(manifest, &report.nodes);
    let staged: BTreeSet<NodeId> = report
        .nodes
        .iter()
        .filter(|(i, r)| r.status == Status::Success && r.staged.is_some() && !held_back.contains_key(i))
        .map(|(&i, _)| i)
        .collect();
    let would_load = |i: &NodeId| report.nodes.get(i).is_some_and(|r| r.staged.is_some());
    for (&node, &test) in held_back.iter().filter(|(i, _)| would_load(i)) {
        observer.event(RunEvent::HeldBack { node, test });
    }
    let stages = pending_stages(prepared, report);
    load::load_nodes(&prepared.target, manifest, &staged, &stages, &|e| observer.event(RunEvent::Load(e))).await
}

/// Where the loads and reconciliations of this run find their rows: the
/// nodes' stages, except an incremental model's increment (loaded with its
/// strategy's mode) and a full build not yet moved into its stage. Once
/// moved, a full build, and an `append` without a key, are compared whole.
fn pending_stages(prepared: &Prepared, report: &RunReport) -> load::Stages {
    let mut stages = load::Stages::at(&prepared.stages);
    for (&i, r) in &report.nodes {
        // A change-detected model's changes are upserted, its deletes
        // applied with them; built in full, its stage replaces the table.
        if let (Some(change), Some(staged)) = (&r.change, &r.staged)
            && change.full.is_none()
        {
            let soft = match &change.deletes {
                Deletes::Ignore => None,
                Deletes::Hard => Some(None),
                Deletes::Soft { flag, at } => Some(Some(SoftDelete {
                    flag: flag.clone(),
                    at: at.clone(),
                    time: prepared.manifest.globals.run_started_at.naive_utc(),
                })),
            };
            let deletes = match (soft, &change.gone) {
                (Some(soft), Some(keys)) => Some(KeyDeletes { keys: keys.clone(), soft }),
                _ => None,
            };
            let column_sync = ColumnSync { add: true, ..ColumnSync::default() };
            let pending =
                load::Pending { dir: staged.dir.clone(), mode: LoadMode::Upsert, column_sync, window: None, deletes };
            stages.pending.insert(i, pending);
            continue;
        }
        let (Some(inc), Some(next)) = (&r.incremental, &r.staged) else { continue };
        // A microbatch model's rows are matched by its window, not its key.
        let appends = matches!(inc.strategy, Strategy::Append | Strategy::Microbatch);
        let keyed = !prepared.manifest[i].config.unique_key.is_empty() && inc.strategy != Strategy::Microbatch;
        let pending = match &inc.increment {
            Some(increment) if !inc.committed || keyed || !appends => load::Pending {
                dir: increment.dir.clone(),
                mode: inc.strategy.load_mode(),
                column_sync: inc.column_sync.clone(),
                window: replaced_window(prepared, i, inc),
                deletes: None,
            },
            None if !inc.committed => load::Pending {
                dir: next.dir.clone(),
                mode: LoadMode::Replace,
                column_sync: ColumnSync::default(),
                window: None,
                deletes: None,
            },
            _ => continue,
        };
        stages.pending.insert(i, pending);
    }
    stages
}

/// The rows of a microbatch model's table that its increment replaces.
fn replaced_window(prepared: &Prepared, i: NodeId, inc: &IncrementalReport) -> Option<ReplacedWindow> {
    let settings = prepared.manifest[i].config.incremental.as_ref().ok()?.as_ref()?.microbatch.as_ref()?;
    let window = inc.window.as_ref()?;
    Some(ReplacedWindow { column: settings.event_time.clone(), start: window.start, end: window.end })
}

/// Moves each incremental model's next version into its stage once nothing
/// can undo it: its load committed, or it is not loaded at all. Held back
/// by a test, failed to load, or not loaded in this run, it stays where it
/// is and the model's stage keeps the previous version, as its table does.
async fn commit_incremental(prepared: &Prepared, report: &mut RunReport) {
    for (&i, r) in &mut report.nodes {
        let (Some(inc), Some(next)) = (r.incremental.as_mut(), r.staged.as_ref()) else { continue };
        let loads = matches!(load::config_for(&prepared.manifest, i), Ok(Some(_)) | Err(_));
        let ready = match &r.load {
            Some(Ok(_)) => true,
            Some(Err(_)) => false,
            None => !loads,
        };
        if r.status != Status::Success || !ready {
            continue;
        }
        let name = &prepared.manifest[i].name;
        match stage::commit(&prepared.stages, next, name).await {
            Ok(committed) => {
                r.staged = Some(committed);
                inc.committed = true;
            }
            Err(e) => report.diagnostics.push(
                Diagnostic::error(
                    crate::diagnostic::Code::Execution,
                    format!("the new data of `{name}` could not replace its stage: {e}"),
                )
                .with_note(format!("its table was loaded; `{}` holds the data it was loaded from", next.dir))
                .with_help("run the model again with `--full-refresh` to bring its stage and table back in step"),
            ),
        }
    }
}

/// With the stages in an object store: removes what this run staged apart
/// (increments, changes, keys gone), each incremental model's next version
/// that did not become its stage and was not loaded (one loaded whose stage
/// could not be replaced stays, as its error says), and each
/// change-detected model's next row hashes that were not kept.
async fn discard_stored_apart(prepared: &Prepared, report: &RunReport) {
    let stage::Root::Stored(root) = &prepared.stages else { return };
    stage::store::remove(&materialize::stored_apart(root, &report.run_id)).await;
    for r in report.nodes.values() {
        if let (Some(inc), Some(next)) = (&r.incremental, &r.staged)
            && !inc.committed
            && !matches!(r.load, Some(Ok(_)))
        {
            stage::store::discard(next).await;
        }
        if let Some(change) = r.change.as_ref().filter(|c| !c.kept) {
            stage::store::discard(&change.hashes).await;
        }
    }
}

fn record_loads(report: &mut RunReport, loads: Loads) {
    for (i, result) in loads.results {
        if let Some(node) = report.nodes.get_mut(&i) {
            node.load = Some(result);
        }
    }
    report.diagnostics.extend(loads.diagnostics);
    report.load_interrupted = loads.interrupted;
}

/// Keeps each incremental model's new high-water mark once its run
/// cannot be undone: its stage advanced (so its load committed, if it
/// loads) and its reconciliation, when one ran, did not fail.
fn advance_watermarks(prepared: &Prepared, report: &mut RunReport) {
    let run_id = report.run_id.clone();
    for (&i, r) in &mut report.nodes {
        let Some(inc) = r.incremental.as_mut() else { continue };
        let reconciled = !matches!(r.reconcile, Some(reconcile::Status::Fail | reconcile::Status::Error));
        let Some(cursor) = inc.cursor.as_ref().filter(|_| inc.committed && reconciled) else { continue };
        let Some((value, data_type)) = cursor.high.clone() else { continue };
        let mark = crate::state::watermarks::Watermark {
            cursor: cursor.column.clone(),
            value,
            data_type,
            run_id: run_id.clone(),
            advanced_at: chrono::Utc::now().to_rfc3339(),
        };
        let model = &prepared.manifest[i].name;
        match crate::state::watermarks::write(&prepared.layout, model, &mark) {
            Ok(()) => inc.advanced = true,
            Err(e) => report.diagnostics.push(
                Diagnostic::warning(
                    crate::diagnostic::Code::Execution,
                    format!("the high-water mark of `{model}` could not be kept: {e:#}"),
                )
                .with_note("the next run reads from the previous mark again"),
            ),
        }
    }
}

/// Ends the process at once, as a kill would, when the environment names
/// `phase` in `FERRY_TEST_KILL_AT`: how tests prove that a run killed
/// between its phases leaves nothing the next run cannot put right.
fn kill_point(phase: &str) {
    if std::env::var("FERRY_TEST_KILL_AT").is_ok_and(|at| at == phase) {
        eprintln!("FERRY_TEST_KILL_AT={phase}: ending the process here");
        std::process::abort();
    }
}

/// Keeps each change-detected model's next row hashes once its run cannot
/// be undone: staged, loaded (when it loads) and not failing its
/// reconciliation. Otherwise the kept hashes stay, and the next run finds
/// the same changes again.
async fn keep_row_hashes(prepared: &Prepared, report: &mut RunReport) {
    let root = super::change::hashes_root(&prepared.stages, &prepared.layout.state());
    for (&i, r) in &mut report.nodes {
        let Some(change) = r.change.as_mut() else { continue };
        let loads = matches!(load::config_for(&prepared.manifest, i), Ok(Some(_)) | Err(_));
        let loaded = match &r.load {
            Some(Ok(_)) => true,
            Some(Err(_)) => false,
            None => !loads,
        };
        let reconciled = !matches!(r.reconcile, Some(reconcile::Status::Fail | reconcile::Status::Error));
        if r.status != Status::Success || !loaded || !reconciled {
            continue;
        }
        let model = &prepared.manifest[i].name;
        match super::change::keep(&root, &change.hashes, model).await {
            Ok(_) => change.kept = true,
            Err(e) => report.diagnostics.push(
                Diagnostic::warning(
                    crate::diagnostic::Code::Execution,
                    format!("the row hashes of `{model}` could not be kept: {e}"),
                )
                .with_note("the next run compares with the previous hashes and loads the same changes again"),
            ),
        }
    }
}

/// `build` ends by proving each table it loaded holds its stage.
async fn reconcile_loaded(
    prepared: &Prepared,
    report: &mut RunReport,
    observer: &dyn Observer,
) -> (Reconciled, Instant) {
    let started = Instant::now();
    let loaded: BTreeSet<NodeId> =
        report.nodes.iter().filter(|(_, r)| matches!(r.load, Some(Ok(_)))).map(|(&i, _)| i).collect();
    let stages = pending_stages(prepared, report);
    // A ledger counts the rows a run staged: an increment compared as part
    // of the whole stage has none of the stage's own.
    let whole = |i: &NodeId, r: &NodeReport| {
        r.incremental.as_ref().is_some_and(|inc| inc.increment.is_some()) && !stages.pending.contains_key(i)
    };
    let ledgers: HashMap<NodeId, _> = report
        .nodes
        .iter()
        .filter(|(i, r)| !whole(i, r))
        .filter_map(|(&i, r)| r.ledger.clone().map(|l| (i, l)))
        .collect();
    let done =
        reconcile::reconcile_nodes(&prepared.target, &prepared.manifest, &loaded, &stages, (&ledgers, None), &|e| {
            observer.event(RunEvent::Reconcile(e))
        })
        .await;
    for (i, r) in &done.reports {
        if let Some(node) = report.nodes.get_mut(i) {
            node.reconcile = Some(r.status);
        }
    }
    (done, started)
}
