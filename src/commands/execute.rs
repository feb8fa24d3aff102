//! `ferry run`, `ferry seed` and `ferry build`: plan every selected node
//! first (no row moves if planning fails), then materialize them in DAG
//! order, concurrently, and write `.ferry/run_results.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context as _, Result};
use tracing::Instrument as _;

use super::compile::{write_compiled, write_manifest};
use crate::artifacts;
use crate::cli::RunArgs;
use crate::dag::schedule::{self, Event};
use crate::diagnostic::Diagnostic;
use crate::engine::execute::{self, Materialized, RunContext};
use crate::engine::plan::{self, PlanOutcome};
use crate::error::ExitStatus;
use crate::manifest::{Manifest, Materialization, Resource};
use crate::printer::{Printer, Progress};
use crate::settings::Settings;
use crate::stage::{self, STAGE_DIR, StageOptions};
use crate::state::run_results::{LoadResult, NodeResult, RunResults, Status};

/// Which command is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    Run,
    Seed,
    Build,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Run => "run",
            Which::Seed => "seed",
            Which::Build => "build",
        }
    }

    /// Whether this command executes node `i`.
    fn wants(self, manifest: &Manifest, i: usize) -> bool {
        let r = &manifest.nodes[i].resource;
        match self {
            Which::Run => matches!(r, Resource::Model { .. }),
            Which::Seed => matches!(r, Resource::Seed(_)),
            Which::Build => matches!(r, Resource::Model { .. } | Resource::Seed(_)),
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

    let stage_root = settings.path(STAGE_DIR);
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
    });
    let progress = printer.progress(order.len());
    let mut report = Report::new(&manifest, &order, &outcome, &progress);
    let threads = super::threads(&args.exec);
    let interrupted = {
        let work = schedule::run(
            &manifest.graph,
            &runnable,
            threads,
            |i| {
                let (engine, manifest, ctx) = (engine.clone(), Arc::clone(&manifest), Arc::clone(&ctx));
                let span = tracing::info_span!("node", model = %manifest.nodes[i].name);
                async move {
                    let started_at = chrono::Utc::now();
                    let result = execute::materialize(&engine, &manifest, i, &ctx).await;
                    tracing::debug!(ok = result.is_ok(), "finished");
                    match result {
                        Ok(materialized) => Ok(Done { started_at, materialized }),
                        Err(diagnostics) => Err(Box::new(Failed { started_at, diagnostics })),
                    }
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
    let staged: BTreeSet<usize> = report
        .results
        .iter()
        .filter(|(_, r)| r.status == Status::Success && r.stage.is_some())
        .map(|(&i, _)| i)
        .collect();
    let loads = if interrupted || args.no_load {
        super::load::Loads::default()
    } else {
        super::load::load_nodes(&session.target, &manifest, &staged, &ctx.stage_root, printer).await
    };
    report.record_loads(&loads);
    let results = report.finish(&manifest, which, started, interrupted || loads.interrupted);
    let path = settings.path(".ferry/run_results.json");
    artifacts::write_atomic(&path, &serde_json::to_vec_pretty(&results)?, true)
        .with_context(|| format!("failed to write `{path}`"))?;
    write_manifest(settings, &manifest, &outcome)?;
    summarize(&results, which, printer, interrupted, planning_failed)
}

/// A node that ran, with when it started.
struct Done {
    started_at: chrono::DateTime<chrono::Utc>,
    materialized: Materialized,
}

/// A node that failed, with when it started.
struct Failed {
    started_at: chrono::DateTime<chrono::Utc>,
    diagnostics: Vec<Diagnostic>,
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
}

impl<'a> Report<'a> {
    fn new(manifest: &'a Manifest, order: &[usize], outcome: &PlanOutcome, progress: &'a Progress) -> Self {
        let mut r = Report {
            manifest,
            progress,
            total: order.len(),
            done: 0,
            running: BTreeMap::new(),
            results: BTreeMap::new(),
            diagnostics: Vec::new(),
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
                    Ok(done) => self.finish_node(
                        i,
                        Status::Success,
                        Some(&done.materialized),
                        secs,
                        None,
                        Some(done.started_at),
                    ),
                    Err(failed) => {
                        let message = failed.diagnostics.first().map(|d| d.message.clone());
                        self.diagnostics.extend(failed.diagnostics);
                        self.finish_node(i, Status::Error, None, secs, message, Some(failed.started_at));
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
        let detail = match (status, rows) {
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
            Status::Success => "OK",
            Status::Error => "ERROR",
            Status::Skipped => "SKIP",
        };
        self.progress.line(&node_line(self.done, self.total, word, kind, &node.display_name(), &detail));
        self.progress.advance();
        let staged = match m {
            Some(Materialized::Staged(t)) => Some(t.clone()),
            _ => None,
        };
        self.results.insert(i, NodeResult::new(node, status, kind, secs, rows, message, started_at, staged.as_ref()));
    }

    fn record_loads(&mut self, loads: &super::load::Loads) {
        for (i, result) in &loads.results {
            let Some(node) = self.results.get_mut(i) else { continue };
            node.load = Some(match result {
                Ok(report) => LoadResult { status: Status::Success, report: Some(report.clone()), message: None },
                Err(message) => LoadResult { status: Status::Error, report: None, message: Some(message.clone()) },
            });
        }
        self.diagnostics.extend(loads.diagnostics.iter().cloned());
    }

    fn finish(self, manifest: &Manifest, which: Which, started: Instant, interrupted: bool) -> RunResults {
        let mut results: Vec<NodeResult> = self.results.into_values().collect();
        results.sort_by(|a, b| a.unique_id.cmp(&b.unique_id));
        RunResults::new(manifest, which.name(), results, started.elapsed().as_secs_f64(), interrupted, self.diagnostics)
    }
}

fn kind_of(node: &crate::manifest::Node, m: Option<&Materialized>) -> &'static str {
    match (&node.resource, m) {
        (Resource::Seed(_), _) => "seed",
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
    results: &RunResults,
    which: Which,
    printer: &Printer,
    interrupted: bool,
    planning_failed: bool,
) -> Result<ExitStatus> {
    super::report(printer, &results.diagnostics);
    let count = |s: Status| results.results.iter().filter(|r| r.status == s).count();
    let (ok, failed, skipped) = (count(Status::Success), count(Status::Error), count(Status::Skipped));
    let loaded: Vec<&crate::load::LoadReport> =
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
        printer.status(&format!(
            "{} {ok} node{} ({} rows staged{load_note}) in {elapsed:.2}s",
            match which {
                Which::Seed => "seeded",
                _ => "ran",
            },
            if ok == 1 { "" } else { "s" },
            group(rows)
        ));
        Ok(ExitStatus::Success)
    } else {
        let loads = if load_failed > 0 {
            format!(", {load_failed} load{} failed", if load_failed == 1 { "" } else { "s" })
        } else {
            String::new()
        };
        printer.error_summary(&format!("{failed} failed, {skipped} skipped, {ok} succeeded{loads}"));
        Ok(ExitStatus::Failure)
    }
}
