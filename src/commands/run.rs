//! `ferry run`, `ferry seed`, `ferry test` and `ferry build`: one call to
//! `run::execute`, shown as it goes (a line per node, progress bars) and
//! summed up at the end (the diagnostics, each model's row ledger, what was
//! run and loaded, and `build`'s reconciliation).

use std::sync::Mutex;

use anyhow::Result;

use super::render::{LoadLines, group, node_line, reconcile_event};
use crate::cli::RunArgs;
use crate::error::ExitStatus;
use crate::manifest::config::{Deletes, Strategy};
use crate::manifest::{Manifest, NodeId};
use crate::printer::{Printer, Progress};
use crate::run::{self as pipeline, NodeEvent, NodeReport, Observer, RunEvent, RunOptions, RunReport, Which};
use crate::settings::{EventTimes, Settings};
use crate::state::run_record::ClusterJob;
use crate::state::run_results::Status;

pub(crate) async fn run(settings: &Settings, args: &RunArgs, which: Which, printer: &Printer) -> Result<ExitStatus> {
    let event_time = EventTimes { start: args.event_time_start, end: args.event_time_end };
    if let (Some(start), Some(end)) = (event_time.start, event_time.end)
        && start >= end
    {
        anyhow::bail!("--event-time-start ({start}) must be before --event-time-end ({end})");
    }
    let settings = &Settings { full_refresh: args.full_refresh, event_time, ..settings.clone() };
    let Some(prepared) = super::prepare_or_report(settings, which.name(), printer)? else {
        return Ok(ExitStatus::Failure);
    };
    let Some(selected) = super::selected_or_report(&prepared.manifest, &args.select, printer) else {
        return Ok(ExitStatus::Failure);
    };
    let options = RunOptions {
        which,
        threads: super::threads(&args.exec),
        memory_limit: args.exec.memory_limit.map(|b| b.as_u64()),
        no_load: args.no_load,
        store_failures: args.store_failures,
        selection: selection_text(&args.select),
    };
    let terminal = Terminal::new(printer, &prepared.manifest);
    let report = pipeline::execute(&prepared, &selected, &options, &terminal).await?;
    if let Some(cluster) = &report.cluster {
        let mut line = format!("the models ran on the cluster {}", cluster.scheduler);
        if !cluster.read_here.is_empty() {
            let names: Vec<String> = cluster.read_here.iter().map(|n| format!("`{n}`")).collect();
            line.push_str(&format!(
                "; read here and staged for it, as the cluster cannot read them itself: {}",
                names.join(", ")
            ));
        }
        printer.status(&line);
    }
    let status = summarize(&report, &prepared.manifest, printer)?;
    if let (Some(keep), false) = (prepared.keep_runs, report.pruned.is_empty()) {
        let n = report.pruned.len();
        printer.status(&format!(
            "history.keep_runs is {keep}: removed the quarantine and error files of {n} older run{} ({}); \
             the history keeps their records",
            if n == 1 { "" } else { "s" },
            report.pruned.join(", ")
        ));
    }
    let status = match &report.reconciled {
        Some((done, started)) if !done.reports.is_empty() || !done.diagnostics.is_empty() => {
            let shown = prepared.layout.run(&report.run_id).join("reconcile.json").shown;
            let reconciled = super::reconcile::finish(done, &shown, printer, started.elapsed().as_secs_f64())?;
            if status == ExitStatus::Success { reconciled } else { status }
        }
        _ => status,
    };
    if args.report {
        let which = crate::report::Which::Id(report.run_id.clone());
        let written = super::report::write_and_say(&prepared.layout, &which, printer).await?;
        if status == ExitStatus::Success {
            return Ok(written);
        }
    }
    Ok(status)
}

/// Shows a run's events as they come.
struct Terminal<'a> {
    printer: &'a Printer,
    manifest: &'a Manifest,
    progress: Mutex<Option<Progress>>,
    loads: LoadLines<'a>,
}

impl<'a> Terminal<'a> {
    fn new(printer: &'a Printer, manifest: &'a Manifest) -> Self {
        Terminal { printer, manifest, progress: Mutex::new(None), loads: LoadLines::new(printer) }
    }

    fn node_event(&self, event: NodeEvent<'_>) {
        let progress = self.progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(progress) = progress.as_ref() else { return };
        match event {
            NodeEvent::Finished { id, report, done, total } => {
                progress.line(&self.node_line(id, report, done, total));
                progress.advance();
            }
            NodeEvent::Progress { rows, running, cluster } => {
                let running: Vec<String> = running
                    .iter()
                    .map(|&name| match cluster.iter().find(|(node, _)| &**node == name) {
                        Some((_, job)) => format!("{name} ({})", job_progress(job)),
                        None => name.to_owned(),
                    })
                    .collect();
                progress.message(format!("{} rows · running {}", group(rows), running.join(", ")));
            }
        }
    }

    /// `3 of 6 OK    table     orders   2,000 rows in 0.03s`; a test's
    /// `PASS`, `WARN n` or `FAIL n`.
    fn node_line(&self, id: NodeId, r: &NodeReport, done: usize, total: usize) -> String {
        let name = self.manifest[id].display_name();
        let secs = r.seconds;
        if let Some(failures) = r.failures {
            let word = match r.status {
                Status::Pass => "PASS",
                Status::Warn => "WARN",
                _ => "FAIL",
            };
            let detail = match r.status {
                Status::Pass => format!("in {secs:.2}s"),
                _ => format!("{} failing in {secs:.2}s", group(failures)),
            };
            return node_line(done, total, word, "test", &name, &(detail + &cluster_detail(&r.cluster)));
        }
        let word = match r.status {
            Status::Success | Status::Pass => "OK",
            Status::Warn => "WARN",
            Status::Error | Status::Fail => "ERROR",
            Status::Skipped => "SKIP",
        };
        node_line(done, total, word, r.kind, &name, &(node_detail(r) + &cluster_detail(&r.cluster)))
    }
}

/// ` · on the cluster: 2 stages of 2 and 1 tasks, the result from
/// 127.0.0.1:4001 (1)`: where a node's queries ran, when on a cluster.
fn cluster_detail(jobs: &[ClusterJob]) -> String {
    match jobs {
        [] => String::new(),
        [one] => format!(" · on the cluster: {}", one.describe()),
        many => {
            let stages: usize = many.iter().map(|j| j.stages.len()).sum();
            let tasks: u32 = many.iter().map(ClusterJob::tasks).sum();
            let mut from: Vec<&str> =
                many.iter().flat_map(|j| j.executors.iter().map(|e| e.address.as_str())).collect();
            from.sort_unstable();
            from.dedup();
            format!(
                " · on the cluster: {} jobs of {stages} stages and {tasks} tasks, the results from {}",
                many.len(),
                from.join(" and ")
            )
        }
    }
}

/// The selection as the history records it: `--select a b --exclude c`.
fn selection_text(args: &crate::cli::SelectArgs) -> String {
    let mut parts = Vec::new();
    if !args.select.is_empty() {
        parts.push(format!("--select {}", args.select.join(" ")));
    }
    if !args.exclude.is_empty() {
        parts.push(format!("--exclude {}", args.exclude.join(" ")));
    }
    parts.join(" ")
}

/// What a node line says after the node's name.
fn node_detail(r: &NodeReport) -> String {
    let secs = r.seconds;
    let set_aside = r.ledger.as_ref().filter(|l| l.quarantined + l.duplicates_dropped > 0).map(|l| {
        let mut parts = Vec::new();
        if l.quarantined > 0 {
            parts.push(format!("{} quarantined", group(l.quarantined)));
        }
        if l.duplicates_dropped > 0 {
            parts.push(format!("{} duplicates dropped", group(l.duplicates_dropped)));
        }
        parts.join(", ")
    });
    if let (Status::Success, Some(n), Some(c)) = (r.status, r.rows, &r.change) {
        let aside = set_aside.map(|a| format!(", {a}")).unwrap_or_default();
        let counts = &c.counts;
        let what = match &c.full {
            Some(why) => format!("built in full ({why}): {} rows", group(n)),
            None => {
                let deletes = match c.deletes {
                    Deletes::Hard => "deleted",
                    Deletes::Soft { .. } => "flagged deleted",
                    Deletes::Ignore => "gone (left in the target)",
                };
                format!(
                    "{} inserted, {} updated, {} unchanged, {} {deletes}",
                    group(counts.inserted),
                    group(counts.updated),
                    group(counts.unchanged),
                    group(counts.deleted)
                )
            }
        };
        return format!("{what}{aside} in {secs:.2}s");
    }
    if let (Status::Success, Some(n), Some(inc)) = (r.status, r.rows, &r.incremental) {
        let total = r.staged.as_ref().map_or(0, |s| s.manifest.row_count);
        let batches = inc.window.as_ref().map(|w| format!(" in {}", w.describe())).unwrap_or_default();
        let what = match &inc.full {
            Some(why) => format!("built in full ({why}): {} rows{batches}", group(n)),
            None if r.kind == "snapshot" => {
                format!("{} versions added or closed, {} in all", group(n), group(total))
            }
            None => {
                let how = match inc.strategy {
                    Strategy::Append => "appended",
                    Strategy::Merge => "merged",
                    Strategy::DeleteInsert => "delete+inserted",
                    Strategy::Microbatch => "replacing their window",
                };
                format!("{} new rows{batches} {how}, {} in all", group(n), group(total))
            }
        };
        let aside = set_aside.map(|a| format!(", {a}")).unwrap_or_default();
        return format!("{what}{aside} in {secs:.2}s");
    }
    match (r.status, r.rows) {
        (Status::Success, Some(n)) if set_aside.is_some() => {
            format!("{} rows, {}, in {secs:.2}s", group(n), set_aside.unwrap_or_default())
        }
        (Status::Success, Some(n)) if r.readers.is_some() => {
            format!("computed once for its {} readers, {} rows in {secs:.2}s", r.readers.unwrap_or(0), group(n))
        }
        (Status::Success, Some(n)) => format!("{} rows in {secs:.2}s", group(n)),
        (Status::Success, None) => format!("in {secs:.2}s"),
        (Status::Skipped, _) => r.message.clone().unwrap_or_default(),
        _ => format!("in {secs:.2}s"),
    }
}

impl Observer for Terminal<'_> {
    fn event(&self, event: RunEvent<'_>) {
        match event {
            RunEvent::Planned { diagnostics } => {
                super::report(self.printer, diagnostics);
            }
            RunEvent::UnstagedParent { name, why } => {
                self.printer.status(&format!("note: `{name}` {why}; reading it from its SQL"));
            }
            RunEvent::Started { total } => {
                *self.progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(self.printer.progress(total));
            }
            RunEvent::Node(e) => self.node_event(e),
            RunEvent::Executed => {
                if let Some(p) = self.progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
                    p.finish();
                }
            }
            RunEvent::HeldBack { node, test } => self.printer.status(&format!(
                "not loading `{}`: its test `{}` failed",
                self.manifest[node].display_name(),
                self.manifest[test].name
            )),
            RunEvent::Load(e) => self.loads.event(e),
            RunEvent::Reconcile(e) => reconcile_event(self.printer, e),
        }
    }
}

/// Prints what went wrong, each model's ledger and the summary line, and
/// picks the exit status.
fn summarize(report: &RunReport, manifest: &Manifest, printer: &Printer) -> Result<ExitStatus> {
    super::report(printer, &report.diagnostics);
    let (ok, skipped, failed) = (report.count(Status::Success), report.count(Status::Skipped), report.failed());
    let (passed, warned, failed_tests) =
        (report.count(Status::Pass), report.count(Status::Warn), report.count(Status::Fail));
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
    if report.interrupted {
        printer.error_summary(&format!(
            "interrupted: {ok} done before Ctrl-C; unfinished stages were discarded and earlier stages kept"
        ));
        return Ok(ExitStatus::Interrupted);
    }
    print_ledgers(report, manifest, printer);
    if report.load_interrupted {
        printer.error_summary(&format!(
            "interrupted during the load: {ok} model{} staged; the table being loaded was left as it was",
            if ok == 1 { "" } else { "s" }
        ));
        return Ok(ExitStatus::Interrupted);
    }
    let load_failed = report.loads_failed();
    if failed == 0 && load_failed == 0 && !report.planning_failed {
        printer.status(&success_line(report, ok, &test_note));
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

/// One line per model with rules: produced = staged + quarantined + dropped.
fn print_ledgers(report: &RunReport, manifest: &Manifest, printer: &Printer) {
    let mut ledgers: Vec<(&str, &crate::state::Ledger)> =
        report.nodes.iter().filter_map(|(&i, r)| Some((manifest[i].unique_id.as_str(), r.ledger.as_ref()?))).collect();
    ledgers.sort_by_key(|(unique_id, _)| *unique_id);
    for (unique_id, l) in ledgers {
        let name = unique_id.rsplit('.').next().unwrap_or_default();
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
        if let Some(c) = &l.changes {
            line.push_str(&format!(
                "; the extract: {} inserted, {} updated, {} unchanged, {} gone",
                group(c.inserted),
                group(c.updated),
                group(c.unchanged),
                group(c.deleted)
            ));
        }
        if let Some(log) = &l.error_log {
            line.push_str(&format!("; log: {log}"));
        }
        printer.status(&line);
    }
}

/// `ran 6 nodes (2,000 rows staged; loaded 3 tables (1,500 rows)) in 0.41s`.
fn success_line(report: &RunReport, ok: usize, test_note: &str) -> String {
    let elapsed = report.elapsed;
    if report.which == Which::Test {
        return format!("tested in {elapsed:.2}s{test_note}");
    }
    let loaded: Vec<u64> =
        report.nodes.values().filter_map(|r| r.load.as_ref()?.as_ref().ok()).map(|l| l.rows).collect();
    let load_note = if loaded.is_empty() {
        String::new()
    } else {
        format!(
            "; loaded {} table{} ({} rows)",
            loaded.len(),
            if loaded.len() == 1 { "" } else { "s" },
            group(loaded.iter().sum())
        )
    };
    let rows: u64 = report.nodes.values().filter(|r| r.staged.is_some()).filter_map(|r| r.rows).sum();
    format!(
        "{} {ok} node{} ({} rows staged{load_note}{test_note}) in {elapsed:.2}s",
        match report.which {
            Which::Seed => "seeded",
            _ => "ran",
        },
        if ok == 1 { "" } else { "s" },
        group(rows)
    )
}

/// `cluster job 5yYp…: 2 stages done (7 tasks)`, or `queued`.
fn job_progress(job: &crate::engine::JobProgress) -> String {
    let id: String = job.job_id.chars().take(7).collect();
    match (job.started, job.stages_done) {
        (false, _) => format!("cluster job {id}: queued"),
        (true, 0) => format!("cluster job {id}: running"),
        (true, n) => format!(
            "cluster job {id}: {n} stage{} done ({} task{})",
            if n == 1 { "" } else { "s" },
            job.tasks_done,
            if job.tasks_done == 1 { "" } else { "s" }
        ),
    }
}
