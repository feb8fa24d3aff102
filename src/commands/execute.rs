//! `ferry run`, `ferry seed`, `ferry test` and `ferry build`: plan every
//! selected node first (no row moves if planning fails), then materialize
//! and test them in DAG order, concurrently, load what passed, and write
//! `.ferry/run_results.json`. In `build`, a model's tests run right after
//! it, and a failing test skips everything downstream of it, as in dbt.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Result;
use tracing::Instrument as _;

use super::compile::{write_compiled, write_manifest};
use crate::cli::RunArgs;
use crate::dag::schedule::{self, Event};
use crate::diagnostic::{Code, Diagnostic};
use crate::engine::execute::{self, Materialized, RunContext};
use crate::engine::plan::{self, PlanOutcome};
use crate::error::ExitStatus;
use crate::manifest::{Manifest, Materialization, Resource};
use crate::printer::{Printer, Progress};
use crate::settings::Settings;
use crate::stage::{self, StageOptions};
use crate::state::Ledger;
use crate::state::run_results::{
    AdapterResponse, LoadRecord, LoadResult, NodeResult, ReconcileVerdict, RunResults, StageRef, Status, Timing,
};
use crate::validate::data_test::{self, TestError};
use crate::validate::{TestOutcome, Verdict};

/// Which command is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    Run,
    Seed,
    Test,
    Build,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Run => "run",
            Which::Seed => "seed",
            Which::Test => "test",
            Which::Build => "build",
        }
    }

    /// Whether this command executes node `i`.
    fn wants(self, manifest: &Manifest, i: usize) -> bool {
        let r = &manifest.nodes[i].resource;
        match self {
            Which::Run => matches!(r, Resource::Model { .. }),
            Which::Seed => matches!(r, Resource::Seed(_)),
            Which::Test => matches!(r, Resource::Test(_)),
            Which::Build => matches!(r, Resource::Model { .. } | Resource::Seed(_) | Resource::Test(_)),
        }
    }
}

pub(crate) async fn run(settings: &Settings, args: &RunArgs, which: Which, printer: &Printer) -> Result<ExitStatus> {
    let started = Instant::now();
    let Some(session) = super::load_or_report(settings, which.name(), printer)? else {
        return Ok(ExitStatus::Failure);
    };
    let manifest = Arc::new(session.manifest);
    let Some(selected) = super::selected_or_report(&manifest, &args.select, printer) else {
        return Ok(ExitStatus::Failure);
    };
    let wanted: BTreeSet<usize> = selected.into_iter().filter(|&i| which.wants(&manifest, i)).collect();
    let engine = super::engine_for(settings, &args.exec)?;
    let outcome = plan::plan(&engine, &manifest, &wanted, &session.failed).await;
    write_compiled(settings, &manifest, &wanted)?;
    let mut diags = session.diagnostics;
    diags.extend(outcome.diagnostics.iter().cloned());
    let planning_failed = super::report(printer, &diags);

    let stage_root = settings.layout().stage_root();
    stage::sweep_leftovers(&stage_root);
    let order: Vec<usize> = manifest.order.iter().copied().filter(|i| wanted.contains(i)).collect();
    let runnable: Vec<usize> =
        order.iter().copied().filter(|i| !outcome.failed.contains(i) && !outcome.skipped.contains_key(i)).collect();
    let needed = manifest.graph.with_ancestors(wanted.iter().copied());
    let parents: BTreeSet<usize> =
        needed.into_iter().filter(|i| !wanted.contains(i) && !outcome.failed.contains(i)).collect();
    for name in execute::read_parents_lazily(&engine, &manifest, &parents, &stage_root).await {
        printer.status(&format!("note: `{name}` has no stage yet; reading it from its SQL"));
    }

    let rows = Arc::new(AtomicU64::new(0));
    let ctx = Arc::new(RunContext {
        stage_root,
        scratch_root: settings.path(".ferry/scratch").join(&manifest.globals.invocation_id),
        stage_options: StageOptions { rows_written: Some(Arc::clone(&rows)), ..StageOptions::default() },
        compute_once: execute::views_read_more_than_once(&manifest, &runnable),
        run_id: manifest.globals.invocation_id.clone(),
        run_dir: settings.path(RUNS_DIR).join(&manifest.globals.invocation_id),
        run_dir_shown: camino::Utf8Path::new(RUNS_DIR).join(&manifest.globals.invocation_id),
        ledgers: Arc::default(),
    });
    let progress = printer.progress(order.len());
    let mut report = Report::new(&manifest, &order, &outcome, &progress, Arc::clone(&ctx.ledgers));
    let threads = super::threads(&args.exec);
    let is_test = |i: usize| matches!(manifest.nodes[i].resource, Resource::Test(_));
    let (graph, runnable) = match which {
        Which::Build => {
            // A test that could not compile holds back what it would have gated.
            let broken: Vec<usize> =
                order.iter().copied().filter(|&i| is_test(i) && outcome.failed.contains(&i)).collect();
            let gated = manifest.graph.with_gates(&[runnable.as_slice(), &broken].concat(), is_test);
            let mut held = BTreeMap::new();
            for &b in &broken {
                for d in gated.descendants(b, None).into_iter().filter(|d| runnable.contains(d)) {
                    held.entry(d).or_insert(b);
                }
            }
            for (&i, &because) in &held {
                report.skip(i, because);
            }
            (gated, runnable.into_iter().filter(|i| !held.contains_key(i)).collect())
        }
        _ => (manifest.graph.clone(), runnable),
    };
    let failures = camino::Utf8Path::new(RUNS_DIR).join(&manifest.globals.invocation_id).join("test_failures");
    let tests = Arc::new(TestContext {
        failures_root: settings.path(&failures),
        failures_shown: failures,
        store_failures: args.store_failures,
    });
    let interrupted = {
        let work = schedule::run(
            &graph,
            &runnable,
            threads,
            |i| {
                let (engine, manifest, ctx, tests) =
                    (engine.clone(), Arc::clone(&manifest), Arc::clone(&ctx), Arc::clone(&tests));
                let span = tracing::info_span!("node", model = %manifest.nodes[i].name);
                async move {
                    let result = run_node(&engine, &manifest, i, &ctx, &tests).await;
                    tracing::debug!(ok = result.is_ok(), "finished");
                    result
                }
                .instrument(span)
            },
            |event| report.record(event, &rows),
        );
        tokio::select! {
            () = work => false,
            _ = tokio::signal::ctrl_c() => true,
        }
    };
    progress.finish();
    let _ = fs_err::remove_dir_all(&ctx.scratch_root);
    if let Some(parent) = ctx.scratch_root.parent() {
        let _ = fs_err::remove_dir(parent); // only if no other run is using it
    }
    let held_back = held_back_by_tests(&manifest, &report.results);
    let staged: BTreeSet<usize> = report
        .results
        .iter()
        .filter(|(i, r)| r.status == Status::Success && r.stage.is_some() && !held_back.contains_key(i))
        .map(|(&i, _)| i)
        .collect();
    if !(interrupted || args.no_load) {
        let would_load = |i: &usize| report.results.get(i).is_some_and(|r| r.stage.is_some());
        for (&i, &test) in held_back.iter().filter(|(i, _)| would_load(i)) {
            printer.status(&format!(
                "not loading `{}`: its test `{}` failed",
                manifest.nodes[i].display_name(),
                manifest.nodes[test].name
            ));
        }
    }
    let loads = if interrupted || args.no_load {
        super::load::Loads::default()
    } else {
        super::load::load_nodes(&session.target, &manifest, &staged, &ctx.stage_root, printer).await
    };
    report.record_loads(&loads);
    // `build` ends by proving each table it loaded holds its stage.
    let reconcile_started = Instant::now();
    let reconciled = if which == Which::Build && !interrupted && !loads.interrupted {
        let loaded: BTreeSet<usize> = loads.results.iter().filter(|(_, r)| r.is_ok()).map(|(&i, _)| i).collect();
        let ledgers = report.results.iter().filter_map(|(&i, r)| r.ledger.clone().map(|l| (i, l))).collect();
        let done = super::reconcile::reconcile_nodes(
            &session.target,
            &manifest,
            &loaded,
            &ctx.stage_root,
            &ledgers,
            None,
            printer,
        )
        .await;
        for (i, r) in &done.reports {
            if let Some(node) = report.results.get_mut(i) {
                node.reconcile = Some(verdict(r.status));
            }
        }
        Some(done)
    } else {
        None
    };
    let results = report.finish(&manifest, which, started, interrupted || loads.interrupted);
    results.0.write(&settings.layout())?;
    write_manifest(settings, &manifest, &outcome)?;
    let status = summarize(&results, which, printer, interrupted, planning_failed)?;
    match reconciled {
        Some(done) if !done.reports.is_empty() || !done.diagnostics.is_empty() => {
            let dirs = (ctx.run_dir.as_path(), ctx.run_dir_shown.as_path());
            let reconciled = super::reconcile::finish(&done, dirs, printer, reconcile_started)?;
            Ok(if status == ExitStatus::Success { reconciled } else { status })
        }
        _ => Ok(status),
    }
}

const RUNS_DIR: &str = ".ferry/runs";

/// What running a test needs.
struct TestContext {
    /// Where `store_failures` writes failing rows, and that place as shown
    /// to the user (relative to the project).
    failures_root: camino::Utf8PathBuf,
    failures_shown: camino::Utf8PathBuf,
    /// `--store-failures`: keep every test's failing rows.
    store_failures: bool,
}

/// What became of a node that did not fail.
enum Outcome {
    Materialized(Materialized),
    Tested(TestOutcome),
}

/// A node that ran, with when it started and what it has to say (a test's warning).
struct Done {
    started_at: chrono::DateTime<chrono::Utc>,
    outcome: Outcome,
    diagnostics: Vec<Diagnostic>,
}

/// A node that failed, with when it started; for a failed test, its result.
struct Failed {
    started_at: chrono::DateTime<chrono::Utc>,
    diagnostics: Vec<Diagnostic>,
    test: Option<TestOutcome>,
}

/// Materializes a model or seed, or runs a test.
async fn run_node(
    engine: &crate::engine::Engine,
    manifest: &Manifest,
    i: usize,
    ctx: &RunContext,
    tests: &TestContext,
) -> Result<Done, Box<Failed>> {
    let started_at = chrono::Utc::now();
    let node = &manifest.nodes[i];
    if !matches!(node.resource, Resource::Test(_)) {
        return match execute::materialize(engine, manifest, i, ctx).await {
            Ok(m) => Ok(Done { started_at, outcome: Outcome::Materialized(m), diagnostics: Vec::new() }),
            Err(diagnostics) => Err(Box::new(Failed { started_at, diagnostics, test: None })),
        };
    }
    let sql = node.rendered.as_ref().map(|r| r.sql.as_str()).unwrap_or_default();
    let mut config = node.config.clone();
    if tests.store_failures {
        config.insert("store_failures".into(), true.into());
    }
    let compiled = node.compiled_name().map(|c| crate::engine::plan::compiled_path(&c));
    let failed = |d: Diagnostic| Err(Box::new(Failed { started_at, diagnostics: vec![d], test: None }));
    match data_test::run(engine, &node.name, sql, &config, &tests.failures_root).await {
        Ok(mut outcome) => {
            if let Some(dir) = &mut outcome.stored {
                *dir = tests.failures_shown.join(&node.name);
            }
            let diagnostics: Vec<Diagnostic> =
                data_test::outcome_diagnostic(node, &outcome, compiled.as_deref()).into_iter().collect();
            if outcome.verdict == Verdict::Fail {
                Err(Box::new(Failed { started_at, diagnostics, test: Some(outcome) }))
            } else {
                Ok(Done { started_at, outcome: Outcome::Tested(outcome), diagnostics })
            }
        }
        Err(TestError::Config(message)) => failed(
            Diagnostic::error(Code::ModelConfig, format!("test `{}` has an invalid config: {message}", node.name))
                .in_file(node.path()),
        ),
        Err(e) => {
            let mut d = Diagnostic::error(Code::Execution, format!("test `{}` could not run: {e}", node.name))
                .in_file(node.path());
            if let Some(path) = compiled {
                d = d.with_note(format!("compiled SQL at `{path}`"));
            }
            failed(d)
        }
    }
}

/// Staged models and seeds that an error-severity test failed on (or that
/// a test which could not compile or run was meant to check), with the
/// test: a generic test holds back the node it is attached to, a singular
/// test every node it reads. They stay staged but are not loaded.
fn held_back_by_tests(manifest: &Manifest, results: &BTreeMap<usize, NodeResult>) -> BTreeMap<usize, usize> {
    let mut held = BTreeMap::new();
    let failed_tests = results
        .iter()
        .filter(|&(&i, r)| matches!(manifest.nodes[i].resource, Resource::Test(_)) && r.status.is_failure());
    for (&t, _) in failed_tests {
        let targets: Vec<usize> = match manifest.attached_to(t) {
            Some(a) => vec![a],
            None => manifest.graph.parents(t).to_vec(),
        };
        for a in targets {
            held.entry(a).or_insert(t);
        }
    }
    held
}

/// Collects results as events arrive and prints a line per node.
struct Report<'a> {
    manifest: &'a Manifest,
    progress: &'a Progress,
    total: usize,
    done: usize,
    running: BTreeMap<usize, Instant>,
    results: BTreeMap<usize, NodeResult>,
    diagnostics: Vec<Diagnostic>,
    /// Row ledgers of models with rules, filled in as they stage.
    ledgers: Arc<std::sync::Mutex<std::collections::HashMap<usize, Ledger>>>,
}

impl<'a> Report<'a> {
    fn new(
        manifest: &'a Manifest,
        order: &[usize],
        outcome: &PlanOutcome,
        progress: &'a Progress,
        ledgers: Arc<std::sync::Mutex<std::collections::HashMap<usize, Ledger>>>,
    ) -> Self {
        let mut r = Report {
            manifest,
            progress,
            total: order.len(),
            done: 0,
            running: BTreeMap::new(),
            results: BTreeMap::new(),
            diagnostics: Vec::new(),
            ledgers,
        };
        for &i in order {
            if outcome.failed.contains(&i) {
                let message = outcome
                    .diagnostics
                    .iter()
                    .find(|d| d.file.as_ref() == Some(&manifest.nodes[i].path()))
                    .map_or_else(|| "failed to compile".to_owned(), |d| d.message.clone());
                r.finish_node(i, Status::Error, None, 0.0, Some(message), None);
            } else if let Some(&because) = outcome.skipped.get(&i) {
                r.skip(i, because);
            }
        }
        r
    }

    fn record(&mut self, event: Event<Done, Box<Failed>>, rows: &AtomicU64) {
        match event {
            Event::Started(i) => {
                self.running.insert(i, Instant::now());
            }
            Event::Finished(i, result) => {
                let secs = self.running.remove(&i).map_or(0.0, |t| t.elapsed().as_secs_f64());
                match result {
                    Ok(done) => {
                        self.diagnostics.extend(done.diagnostics);
                        match &done.outcome {
                            Outcome::Materialized(m) => {
                                self.finish_node(i, Status::Success, Some(m), secs, None, Some(done.started_at))
                            }
                            Outcome::Tested(t) => self.finish_test(i, t, secs, done.started_at),
                        }
                    }
                    Err(failed) => {
                        let message = failed.diagnostics.first().map(|d| d.message.clone());
                        self.diagnostics.extend(failed.diagnostics);
                        match &failed.test {
                            Some(t) => self.finish_test(i, t, secs, failed.started_at),
                            None => self.finish_node(i, Status::Error, None, secs, message, Some(failed.started_at)),
                        }
                    }
                }
            }
            Event::Skipped { node, because } => self.skip(node, because),
        }
        let names: Vec<&str> = self.running.keys().map(|&i| self.manifest.nodes[i].name.as_str()).collect();
        let rows = rows.load(Ordering::Relaxed);
        self.progress.message(format!("{} rows · running {}", group(rows), names.join(", ")));
    }

    fn skip(&mut self, i: usize, because: usize) {
        let cause = self.manifest.nodes[because].display_name();
        self.finish_node(i, Status::Skipped, None, 0.0, Some(format!("skipped: `{cause}` failed")), None);
    }

    fn finish_node(
        &mut self,
        i: usize,
        status: Status,
        m: Option<&Materialized>,
        secs: f64,
        message: Option<String>,
        started_at: Option<chrono::DateTime<chrono::Utc>>,
    ) {
        self.done += 1;
        let node = &self.manifest.nodes[i];
        let kind = kind_of(node, m);
        let rows = m.and_then(Materialized::rows);
        let ledger = self.ledgers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&i);
        let set_aside = ledger.as_ref().filter(|l| l.quarantined + l.duplicates_dropped > 0).map(|l| {
            let mut parts = Vec::new();
            if l.quarantined > 0 {
                parts.push(format!("{} quarantined", group(l.quarantined)));
            }
            if l.duplicates_dropped > 0 {
                parts.push(format!("{} duplicates dropped", group(l.duplicates_dropped)));
            }
            parts.join(", ")
        });
        let detail = match (status, rows) {
            (Status::Success, Some(n)) if set_aside.is_some() => {
                format!("{} rows, {}, in {secs:.2}s", group(n), set_aside.unwrap_or_default())
            }
            (Status::Success, Some(n)) if matches!(m, Some(Materialized::ComputedOnce(_))) => {
                format!(
                    "computed once for its {} readers, {} rows in {secs:.2}s",
                    self.manifest.graph.children(i).len(),
                    group(n)
                )
            }
            (Status::Success, Some(n)) => format!("{} rows in {secs:.2}s", group(n)),
            (Status::Success, None) => format!("in {secs:.2}s"),
            (Status::Skipped, _) => message.clone().unwrap_or_default(),
            _ => format!("in {secs:.2}s"),
        };
        let word = match status {
            Status::Success | Status::Pass => "OK",
            Status::Warn => "WARN",
            Status::Error | Status::Fail => "ERROR",
            Status::Skipped => "SKIP",
        };
        self.progress.line(&node_line(self.done, self.total, word, kind, &node.display_name(), &detail));
        self.progress.advance();
        let staged = match m {
            Some(Materialized::Staged(t)) => Some(t.clone()),
            _ => None,
        };
        let mut result = node_result(node, status, kind, secs, rows, message, started_at, staged.as_ref());
        result.ledger = ledger;
        self.results.insert(i, result);
    }

    /// Reports a test that ran: `PASS`, `WARN n` or `FAIL n`.
    fn finish_test(&mut self, i: usize, t: &TestOutcome, secs: f64, started_at: chrono::DateTime<chrono::Utc>) {
        self.done += 1;
        let node = &self.manifest.nodes[i];
        let (status, word) = match t.verdict {
            Verdict::Pass => (Status::Pass, "PASS"),
            Verdict::Warn => (Status::Warn, "WARN"),
            Verdict::Fail => (Status::Fail, "FAIL"),
        };
        let detail = match t.verdict {
            Verdict::Pass => format!("in {secs:.2}s"),
            _ => format!("{} failing in {secs:.2}s", group(t.failures)),
        };
        self.progress.line(&node_line(self.done, self.total, word, "test", &node.display_name(), &detail));
        self.progress.advance();
        let message = match t.verdict {
            Verdict::Pass => None,
            _ => Some(format!("Got {} result{}", t.failures, if t.failures == 1 { "" } else { "s" })),
        };
        let mut result = node_result(node, status, "test", secs, None, message, Some(started_at), None);
        result.failures = Some(t.failures);
        self.results.insert(i, result);
    }

    fn record_loads(&mut self, loads: &super::load::Loads) {
        for (i, result) in &loads.results {
            let Some(node) = self.results.get_mut(i) else { continue };
            node.load = Some(match result {
                Ok(report) => LoadResult { status: Status::Success, report: Some(load_record(report)), message: None },
                Err(message) => LoadResult { status: Status::Error, report: None, message: Some(message.clone()) },
            });
        }
        self.diagnostics.extend(loads.diagnostics.iter().cloned());
    }

    fn finish(
        self,
        manifest: &Manifest,
        which: Which,
        started: Instant,
        interrupted: bool,
    ) -> (RunResults, Vec<Diagnostic>) {
        let mut results: Vec<NodeResult> = self.results.into_values().collect();
        results.sort_by(|a, b| a.unique_id.cmp(&b.unique_id));
        (
            RunResults {
                metadata: crate::state::run_results::Metadata {
                    ferry_version: env!("CARGO_PKG_VERSION").to_owned(),
                    generated_at: chrono::Utc::now().to_rfc3339(),
                    invocation_id: manifest.globals.invocation_id.clone(),
                },
                results,
                elapsed_time: started.elapsed().as_secs_f64(),
                args: crate::state::run_results::Args { which: which.name().to_owned(), interrupted },
            },
            self.diagnostics,
        )
    }
}

fn kind_of(node: &crate::manifest::Node, m: Option<&Materialized>) -> &'static str {
    match (&node.resource, m) {
        (Resource::Seed(_), _) => "seed",
        (Resource::Test(_), _) => "test",
        (Resource::Model { materialized, .. }, _) => match materialized {
            Materialization::View => "view",
            Materialization::Table => "table",
            Materialization::Ephemeral => "ephemeral",
            Materialization::Incremental => "incremental",
        },
        _ => "node",
    }
}

/// One line of a run's report: `3 of 6 OK    table     orders   2,000 rows in 0.03s`.
pub(crate) fn node_line(done: usize, total: usize, word: &str, kind: &str, name: &str, detail: &str) -> String {
    let width = total.to_string().len();
    format!("{done:>width$} of {total} {word:<5} {kind:<9} {name:<28} {detail}")
}

/// `1234567` as `1,234,567`.
pub(crate) fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (k, c) in digits.chars().enumerate() {
        if k > 0 && (digits.len() - k).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn summarize(
    (results, diagnostics): &(RunResults, Vec<Diagnostic>),
    which: Which,
    printer: &Printer,
    interrupted: bool,
    planning_failed: bool,
) -> Result<ExitStatus> {
    super::report(printer, diagnostics);
    let count = |s: Status| results.results.iter().filter(|r| r.status == s).count();
    let (ok, skipped) = (count(Status::Success), count(Status::Skipped));
    let failed = results.results.iter().filter(|r| r.status.is_failure()).count();
    let (passed, warned, failed_tests) = (count(Status::Pass), count(Status::Warn), count(Status::Fail));
    let test_note = if passed + warned + failed_tests == 0 {
        String::new()
    } else {
        let mut parts = vec![format!("{passed} passed")];
        if warned > 0 {
            parts.push(format!("{warned} warned"));
        }
        if failed_tests > 0 {
            parts.push(format!("{failed_tests} failed"));
        }
        format!("; tests: {}", parts.join(", "))
    };
    let loaded: Vec<&crate::state::run_results::LoadRecord> =
        results.results.iter().filter_map(|r| r.load.as_ref()).filter_map(|l| l.report.as_ref()).collect();
    let load_failed =
        results.results.iter().filter_map(|r| r.load.as_ref()).filter(|l| l.status == Status::Error).count();
    let rows: u64 = results.results.iter().filter(|r| r.stage.is_some()).filter_map(|r| r.rows).sum();
    if interrupted {
        printer.error_summary(&format!(
            "interrupted: {ok} done before Ctrl-C; unfinished stages were discarded and earlier stages kept"
        ));
        return Ok(ExitStatus::Interrupted);
    }
    for r in &results.results {
        let Some(l) = &r.ledger else { continue };
        let name = r.unique_id.rsplit('.').next().unwrap_or_default();
        let mut line = format!(
            "ledger `{name}`: {} produced = {} staged + {} quarantined + {} duplicates dropped",
            group(l.produced),
            group(l.staged),
            group(l.quarantined),
            group(l.duplicates_dropped)
        );
        if !l.balances() {
            line = format!(
                "ledger `{name}`: {} produced, {} quarantined; nothing staged (the model failed)",
                group(l.produced),
                group(l.quarantined)
            );
        }
        if l.warned > 0 && l.balances() {
            line.push_str(&format!("; {} staged rows warned", group(l.warned)));
        }
        if let Some(log) = &l.error_log {
            line.push_str(&format!("; log: {log}"));
        }
        printer.status(&line);
    }
    let elapsed = results.elapsed_time;
    let load_note = if loaded.is_empty() {
        String::new()
    } else {
        format!(
            "; loaded {} table{} ({} rows)",
            loaded.len(),
            if loaded.len() == 1 { "" } else { "s" },
            group(loaded.iter().map(|l| l.rows).sum())
        )
    };
    if failed == 0 && load_failed == 0 && !planning_failed {
        if which == Which::Test {
            printer.status(&format!("tested in {elapsed:.2}s{test_note}"));
        } else {
            printer.status(&format!(
                "{} {ok} node{} ({} rows staged{load_note}{test_note}) in {elapsed:.2}s",
                match which {
                    Which::Seed => "seeded",
                    _ => "ran",
                },
                if ok == 1 { "" } else { "s" },
                group(rows)
            ));
        }
        Ok(ExitStatus::Success)
    } else {
        let loads = if load_failed > 0 {
            format!(", {load_failed} load{} failed", if load_failed == 1 { "" } else { "s" })
        } else {
            String::new()
        };
        printer.error_summary(&format!(
            "{failed} failed, {skipped} skipped, {} succeeded{loads}{test_note}",
            ok + passed + warned
        ));
        Ok(ExitStatus::Failure)
    }
}

fn verdict(s: crate::reconcile::Status) -> ReconcileVerdict {
    match s {
        crate::reconcile::Status::Pass => ReconcileVerdict::Pass,
        crate::reconcile::Status::Fail => ReconcileVerdict::Fail,
        crate::reconcile::Status::Skipped => ReconcileVerdict::Skipped,
        crate::reconcile::Status::Error => ReconcileVerdict::Error,
    }
}

fn load_record(r: &crate::backend::LoadReport) -> LoadRecord {
    LoadRecord {
        table: r.table.clone(),
        mode: r.mode.to_owned(),
        rows: r.rows,
        strategy: r.strategy.clone(),
        seconds: r.seconds,
        notes: r.notes.clone(),
    }
}

#[allow(clippy::too_many_arguments)]
fn node_result(
    node: &crate::manifest::Node,
    status: Status,
    materialized: &'static str,
    secs: f64,
    rows: Option<u64>,
    message: Option<String>,
    started_at: Option<chrono::DateTime<chrono::Utc>>,
    staged: Option<&crate::stage::StagedTable>,
) -> NodeResult {
    let timing = started_at
        .map(|t0| {
            let t1 = t0 + chrono::Duration::microseconds((secs * 1e6) as i64);
            vec![Timing { name: "execute".into(), started_at: t0.to_rfc3339(), completed_at: t1.to_rfc3339() }]
        })
        .unwrap_or_default();
    NodeResult {
        unique_id: node.unique_id.clone(),
        status,
        materialized: materialized.to_owned(),
        timing,
        execution_time: secs,
        rows,
        adapter_response: AdapterResponse { rows_affected: rows },
        message,
        failures: None,
        ledger: None,
        stage: staged.map(|s| StageRef {
            path: s.dir.to_string(),
            files: s.manifest.files.len(),
            checksum: s.manifest.checksum.clone(),
        }),
        load: None,
        reconcile: None,
    }
}
