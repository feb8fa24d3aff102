//! `ferry load` (and the load step at the end of `run`, `seed` and
//! `build`), and `ferry rollback`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::execute::{group, node_line};
use crate::backend::Connection;
use crate::backend::profiles::Target;
use crate::backend::{LoadJob, LoadReport};
use crate::cli::{LoadArgs, RollbackArgs};
use crate::diagnostic::{Code, Diagnostic};
use crate::error::ExitStatus;
use crate::load;
use crate::manifest::Manifest;
use crate::printer::Printer;
use crate::settings::Settings;

/// What loading a set of nodes did, per node.
#[derive(Default)]
pub(crate) struct Loads {
    pub results: BTreeMap<usize, Result<LoadReport, String>>,
    pub diagnostics: Vec<Diagnostic>,
    pub interrupted: bool,
}

/// Loads `nodes` (those with a `load`, in load order) from their stages.
pub(crate) async fn load_nodes(
    target: &Target,
    manifest: &Manifest,
    nodes: &BTreeSet<usize>,
    stage_root: &camino::Utf8Path,
    printer: &Printer,
) -> Loads {
    let mut loads = Loads::default();
    let mut jobs = Vec::new();
    for i in load::load_order(manifest, nodes) {
        match load::config_for(manifest, i) {
            Ok(None) => {}
            Ok(Some(config)) => match load::job_for(manifest, i, config, stage_root) {
                Ok(job) => jobs.push((i, job)),
                Err(e) => {
                    loads.results.insert(i, Err(e.to_string()));
                    loads.diagnostics.push(e.to_diagnostic(&manifest.nodes[i].name));
                }
            },
            Err(d) => {
                loads.results.insert(i, Err(d.message.clone()));
                loads.diagnostics.push(*d);
            }
        }
    }
    if jobs.is_empty() {
        return loads;
    }
    let mut conn = match Connection::connect(target).await {
        Ok(c) => c,
        Err(e) => {
            for (i, _) in &jobs {
                loads.results.insert(*i, Err(e.to_string()));
            }
            loads.diagnostics.push(e.to_diagnostic(&format!("target `{}`", target.name)));
            return loads;
        }
    };
    let progress = printer.progress(jobs.len());
    let total = jobs.len();
    let line =
        |k: usize, word: &str, job: &LoadJob, detail: &str| node_line(k + 1, total, word, "load", &job.model, detail);
    for (k, (i, job)) in jobs.iter().enumerate() {
        let rows = Arc::new(AtomicU64::new(0));
        let ticker = tick(&progress, job, &rows);
        let work = conn.load(job, &rows);
        let result = tokio::select! {
            r = work => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        };
        ticker.abort();
        let Some(result) = result else {
            loads.interrupted = true;
            progress.line(&line(k, "STOP", job, "interrupted; the table is as it was"));
            break;
        };
        match result {
            Ok(report) => {
                let detail = format!(
                    "{} rows into {} ({}, {}) in {:.2}s",
                    group(report.rows),
                    report.table,
                    report.mode,
                    report.strategy,
                    report.seconds
                );
                progress.line(&line(k, "OK", job, &detail));
                for note in &report.notes {
                    progress.line(&format!("      note: {note}"));
                }
                loads.results.insert(*i, Ok(report));
            }
            Err(e) => {
                progress.line(&line(k, "ERROR", job, &job.table.to_string()));
                loads.results.insert(*i, Err(e.to_string()));
                loads.diagnostics.push(e.to_diagnostic(&job.model));
            }
        }
        progress.advance();
    }
    progress.finish();
    loads
}

/// Keeps the progress message current: rows sent and rows per second.
fn tick(progress: &crate::printer::Progress, job: &LoadJob, rows: &Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    let handle = progress.handle();
    let (rows, model, total) = (Arc::clone(rows), job.model.clone(), job.rows());
    let started = Instant::now();
    tokio::spawn(async move {
        let Some(bar) = handle else { return };
        loop {
            let n = rows.load(Ordering::Relaxed);
            let rate = n as f64 / started.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(format!("loading {model}: {n}/{total} rows, {rate:.0} rows/s"));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

pub(crate) async fn load(settings: &Settings, args: &LoadArgs, printer: &Printer) -> Result<ExitStatus> {
    let started = Instant::now();
    let Some(session) = super::load_or_report(settings, "load", printer)? else {
        return Ok(ExitStatus::Failure);
    };
    super::report(printer, &session.diagnostics);
    let manifest = &session.manifest;
    let Some(selected) = super::selected_or_report(manifest, &args.select, printer) else {
        return Ok(ExitStatus::Failure);
    };
    let stage_root = settings.layout().stage_root();
    let loadable = load::loadable(manifest, selected);
    if loadable.is_empty() {
        printer.status("nothing to load: no selected table model or seed has a stage to load");
        return Ok(ExitStatus::Success);
    }
    if args.dry_run {
        return dry_run(&session.target, manifest, &loadable, &stage_root, printer).await;
    }
    let loads = load_nodes(&session.target, manifest, &loadable, &stage_root, printer).await;
    summarize(&loads, printer, started)
}

/// Prints the loads' results and picks the exit status.
pub(crate) fn summarize(loads: &Loads, printer: &Printer, started: Instant) -> Result<ExitStatus> {
    super::report(printer, &loads.diagnostics);
    if loads.interrupted {
        printer.error_summary("interrupted: the table being loaded was left as it was");
        return Ok(ExitStatus::Interrupted);
    }
    let failed = loads.results.values().filter(|r| r.is_err()).count();
    let ok: Vec<&LoadReport> = loads.results.values().filter_map(|r| r.as_ref().ok()).collect();
    let rows: u64 = ok.iter().map(|r| r.rows).sum();
    if failed == 0 {
        printer.status(&format!(
            "loaded {} table{} ({} rows) in {:.2}s",
            ok.len(),
            if ok.len() == 1 { "" } else { "s" },
            group(rows),
            started.elapsed().as_secs_f64()
        ));
        Ok(ExitStatus::Success)
    } else {
        printer.error_summary(&format!(
            "{failed} load{} failed, {} succeeded",
            if failed == 1 { "" } else { "s" },
            ok.len()
        ));
        Ok(ExitStatus::Failure)
    }
}

/// Connects to the target, printing the diagnostic and `None` if it cannot.
async fn connect_or_report(target: &Target, printer: &Printer) -> Option<Connection> {
    Connection::connect(target)
        .await
        .map_err(|e| super::report(printer, &[e.to_diagnostic(&format!("target `{}`", target.name))]))
        .ok()
}

async fn dry_run(
    target: &Target,
    manifest: &Manifest,
    nodes: &BTreeSet<usize>,
    stage_root: &camino::Utf8Path,
    printer: &Printer,
) -> Result<ExitStatus> {
    let Some(mut conn) = connect_or_report(target, printer).await else {
        return Ok(ExitStatus::Failure);
    };
    let mut failed = false;
    for i in load::load_order(manifest, nodes) {
        let name = &manifest.nodes[i].name;
        let job = match load::config_for(manifest, i) {
            Ok(Some(config)) => load::job_for(manifest, i, config, stage_root).map_err(|e| e.to_diagnostic(name)),
            Ok(None) => continue,
            Err(d) => Err(*d),
        };
        let plan = match job {
            Ok(job) => conn.dry_run(&job).await.map(|sql| (job, sql)).map_err(|e| e.to_diagnostic(name)),
            Err(d) => Err(d),
        };
        match plan {
            Ok((job, statements)) => {
                printer.data(&format!(
                    "-- {name}: {} rows, mode {}, into {} ({})",
                    job.rows(),
                    job.mode.name(),
                    job.table,
                    target.type_name()
                ))?;
                for sql in statements {
                    match sql.split_once("  -- ") {
                        Some((sql, comment)) => printer.data(&format!("{sql};  -- {comment}"))?,
                        None => printer.data(&format!("{sql};"))?,
                    }
                }
                printer.data("")?;
            }
            Err(d) => {
                failed = true;
                super::report(printer, &[d]);
            }
        }
    }
    printer.status("dry run: nothing was changed in the target");
    Ok(if failed { ExitStatus::Failure } else { ExitStatus::Success })
}

pub(crate) async fn rollback(settings: &Settings, args: &RollbackArgs, printer: &Printer) -> Result<ExitStatus> {
    let Some(session) = super::load_or_report(settings, "rollback", printer)? else {
        return Ok(ExitStatus::Failure);
    };
    let manifest = &session.manifest;
    let Some(selected) = super::selected_or_report(manifest, &args.select, printer) else {
        return Ok(ExitStatus::Failure);
    };
    let mut targets = Vec::new();
    for i in selected {
        match load::config_for(manifest, i) {
            Ok(Some(c)) => targets.push((manifest.nodes[i].name.clone(), c.table)),
            Ok(None) => {}
            Err(d) => {
                super::report(printer, &[*d]);
                return Ok(ExitStatus::Failure);
            }
        }
    }
    if targets.is_empty() {
        super::report(
            printer,
            &[Diagnostic::error(Code::Load, "nothing to roll back: the selection has no loaded table model or seed")
                .with_help("select a model: `ferry rollback -s orders`")],
        );
        return Ok(ExitStatus::Failure);
    }
    let Some(mut conn) = connect_or_report(&session.target, printer).await else {
        return Ok(ExitStatus::Failure);
    };
    let mut failed = false;
    for (model, table) in targets {
        match conn.rollback(&table).await {
            Ok(()) => printer.status(&format!("rolled back {model}: `{table}` is the previous load again")),
            Err(e) => {
                failed = true;
                super::report(printer, &[e.to_diagnostic(&model)]);
            }
        }
    }
    Ok(if failed { ExitStatus::Failure } else { ExitStatus::Success })
}
