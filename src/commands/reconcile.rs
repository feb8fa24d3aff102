//! `ferry reconcile` (and the last step of `ferry build`): for every loaded
//! model, compare the stage with the target table and report PASS/FAIL per
//! check, the exact differing keys and columns, and a report file under
//! `.ferry/runs/<run id>/reconcile.json`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use anyhow::{Context as _, Result};
use camino::Utf8Path;
use serde_json::Value as Json;

use super::execute::group;
use crate::backend::Connection;
use crate::backend::LoadJob;
use crate::backend::checksum::SideChoice;
use crate::backend::profiles::Target;
use crate::cli::ReconcileArgs;
use crate::diagnostic::{Code, Diagnostic, did_you_mean};
use crate::engine::{execute, plan};
use crate::error::ExitStatus;
use crate::load;
use crate::manifest::{Manifest, Resource};
use crate::printer::Printer;
use crate::reconcile::{self as rec, Config, ModelReport, Status};
use crate::settings::Settings;
use crate::stage::StageOptions;
use crate::state::Ledger;
use crate::values::{LoadMode, TableName};

/// What reconciling a set of nodes found.
#[derive(Default)]
pub(crate) struct Reconciled {
    pub reports: BTreeMap<usize, ModelReport>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Reconciled {
    pub fn failed(&self) -> usize {
        self.reports.values().filter(|r| matches!(r.status, Status::Fail | Status::Error)).count()
    }
}

pub(crate) async fn reconcile(settings: &Settings, args: &ReconcileArgs, printer: &Printer) -> Result<ExitStatus> {
    let started = Instant::now();
    let Some(session) = super::load_or_report(settings, "reconcile", printer)? else {
        return Ok(ExitStatus::Failure);
    };
    super::report(printer, &session.diagnostics);
    if let (Some(source), Some(table)) = (&args.source, &args.target_table) {
        return reconcile_source(settings, &session, args, (source, table), printer, started).await;
    }
    let manifest = &session.manifest;
    let Some(selected) = super::selected_or_report(manifest, &args.select, printer) else {
        return Ok(ExitStatus::Failure);
    };
    let loaded = load::loadable(manifest, selected);
    if loaded.is_empty() {
        printer.status("nothing to reconcile: no selected table model or seed is loaded");
        return Ok(ExitStatus::Success);
    }
    let ledgers = ledgers_of_last_run(settings, manifest);
    let shown = settings.layout().run(&manifest.globals.invocation_id).shown;
    let side = args.side.as_deref().and_then(SideChoice::parse);
    let stage_root = settings.layout().stage_root();
    let done = reconcile_nodes(&session.target, manifest, &loaded, &stage_root, &ledgers, side, printer).await;
    finish(&done, (&settings.path(&shown), &shown), printer, started)
}

/// `ferry reconcile --source s.t --target-table x`: the source is read once
/// into a temporary stage (so both passes see one snapshot of it, even of a
/// live database) and compared with the target table as a staged model is.
async fn reconcile_source(
    settings: &Settings,
    session: &super::Session,
    args: &ReconcileArgs,
    (source, table): (&str, &str),
    printer: &Printer,
    started: Instant,
) -> Result<ExitStatus> {
    let manifest = &session.manifest;
    let is_source = |n: &&crate::manifest::Node| matches!(n.resource, Resource::Source(_));
    let Some(i) = manifest.nodes.iter().position(|n| is_source(&n) && n.display_name() == source) else {
        let names: Vec<String> = manifest.nodes.iter().filter(is_source).map(|n| n.display_name()).collect();
        let mut d = Diagnostic::error(Code::Selector, format!("`--source {source}` names no source of this project"));
        d = match did_you_mean(source, names.iter().map(String::as_str)) {
            Some(hint) => d.with_help(hint),
            None if names.is_empty() => d.with_help("declare sources under `sources:` in a schema .yml file"),
            None => d.with_help(format!(
                "the sources are {}",
                names.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
            )),
        };
        super::report(printer, &[d]);
        return Ok(ExitStatus::Failure);
    };
    let target = match parse_table(table, session.target.schema()) {
        Ok(t) => t,
        Err(message) => {
            super::report(printer, &[Diagnostic::error(Code::Selector, message)]);
            return Ok(ExitStatus::Failure);
        }
    };
    let engine = super::engine_for(settings, &args.exec)?;
    let parents = BTreeSet::from([i]);
    let planned = plan::plan(&engine, manifest, &parents, &session.failed).await;
    if super::report(printer, &planned.diagnostics) {
        return Ok(ExitStatus::Failure);
    }
    // A directory of this invocation's own, removed however it ends.
    let tmp = settings.path(".ferry/tmp");
    fs_err::create_dir_all(&tmp).with_context(|| format!("failed to create `{tmp}`"))?;
    let scratch = tempfile::Builder::new()
        .prefix("reconcile-")
        .tempdir_in(&tmp)
        .with_context(|| format!("failed to create a directory in `{tmp}`"))?;
    let scratch_dir = camino::Utf8Path::from_path(scratch.path()).context("the scratch directory is not UTF-8")?;
    let relation = manifest.nodes[i].relation.as_ref().map_or_else(|| source.to_owned(), |r| r.rendered.clone());
    let staged = match engine.plan(&format!("SELECT * FROM {relation}")).await {
        Ok(p) => execute::stage_plan(&engine, manifest, i, p, scratch_dir, StageOptions::default()).await,
        Err(e) => Err(vec![Diagnostic::error(
            Code::Execution,
            format!("`{source}` cannot be read: {}", e.find_root().strip_backtrace()),
        )]),
    };
    let staged = match staged {
        Ok(s) => s,
        Err(diagnostics) => {
            super::report(printer, &diagnostics);
            return Ok(ExitStatus::Failure);
        }
    };
    let job = match LoadJob::from_stage(source, target, LoadMode::Replace, args.key.clone(), staged.dir) {
        Ok(j) => j,
        Err(e) => {
            super::report(printer, &[e.to_diagnostic(source)]);
            return Ok(ExitStatus::Failure);
        }
    };
    let config = Config {
        columns: args.columns.clone(),
        max_mismatch_rows: args.max_mismatch_rows,
        tolerance: args.tolerance,
        side: args.side.as_deref().and_then(SideChoice::parse).unwrap_or_default(),
        ..Config::default()
    };
    let mut done = Reconciled::default();
    let mut conn = match Connection::connect(&session.target).await {
        Ok(c) => c,
        Err(e) => {
            super::report(printer, &[e.to_diagnostic(&format!("target `{}`", session.target.name))]);
            return Ok(ExitStatus::Failure);
        }
    };
    let report = rec::reconcile_table(&mut conn, &job, (&config, rec::Reference::Source), None).await;
    print_report(&mut done, (1, 1), (i, &job), report, printer);
    let shown = settings.layout().run(&manifest.globals.invocation_id).shown;
    finish(&done, (&settings.path(&shown), &shown), printer, started)
}

/// `table` or `schema.table` (the target's schema by default).
fn parse_table(text: &str, default_schema: &str) -> Result<TableName, String> {
    let parts: Vec<&str> = text.split('.').collect();
    match parts.as_slice() {
        [name] if !name.is_empty() => Ok(TableName { schema: default_schema.to_owned(), name: (*name).to_owned() }),
        [schema, name] if !schema.is_empty() && !name.is_empty() => {
            Ok(TableName { schema: (*schema).to_owned(), name: (*name).to_owned() })
        }
        _ => Err(format!("`--target-table {text}` must be `table` or `schema.table`")),
    }
}

/// Prints a model's report (the `k`th of `total`) and files it in `done`.
fn print_report(
    done: &mut Reconciled,
    (k, total): (usize, usize),
    (i, job): (usize, &LoadJob),
    report: ModelReport,
    printer: &Printer,
) {
    let head = super::execute::node_line(
        k,
        total,
        report.status.word(),
        "reconcile",
        &job.model,
        &format!("{} ({:.2}s)", report.table, report.seconds),
    );
    printer.status(&head);
    for line in report_lines(&report) {
        printer.status(&format!("      {line}"));
    }
    if let Some(e) = &report.error {
        done.diagnostics.push(
            Diagnostic::error(Code::Reconcile, format!("{}: reconciling `{}` failed: {e}", job.model, job.table))
                .with_help("check the target with `ferry debug`, or reload with `ferry load`"),
        );
    }
    done.reports.insert(i, report);
}

/// Writes the report file into the run's directory (given as its path and
/// as shown to the user), prints the summary and picks the exit status.
pub(crate) fn finish(
    done: &Reconciled,
    (run_dir, shown): (&Utf8Path, &Utf8Path),
    printer: &Printer,
    started: Instant,
) -> Result<ExitStatus> {
    super::report(printer, &done.diagnostics);
    if done.reports.is_empty() {
        return Ok(if done.diagnostics.is_empty() { ExitStatus::Success } else { ExitStatus::Failure });
    }
    let path = run_dir.join("reconcile.json");
    let shown = shown.join("reconcile.json");
    let reports: Vec<&ModelReport> = done.reports.values().collect();
    crate::state::files::write_atomic(&path, &serde_json::to_vec_pretty(&reports)?, true)
        .with_context(|| format!("failed to write `{path}`"))?;
    if printer.is_json() {
        for r in &reports {
            printer.data(&serde_json::to_string(r)?)?;
        }
    }
    let failed = done.failed();
    let passed = done.reports.values().filter(|r| r.status == Status::Pass).count();
    let elapsed = started.elapsed().as_secs_f64();
    if failed == 0 && done.diagnostics.is_empty() {
        printer.status(&format!(
            "reconciled {passed} table{} in {elapsed:.2}s: the target holds exactly what was staged (report: {shown})",
            if passed == 1 { "" } else { "s" }
        ));
        Ok(ExitStatus::Success)
    } else {
        printer.error_summary(&format!(
            "{failed} table{} did not reconcile, {passed} did (report: {shown})",
            if failed == 1 { "" } else { "s" }
        ));
        Ok(ExitStatus::Failure)
    }
}

/// The ledgers `run_results.json` recorded, for stages that have not
/// changed since (their checksum still matches).
pub(crate) fn ledgers_of_last_run(settings: &Settings, manifest: &Manifest) -> HashMap<usize, Ledger> {
    let Ok(text) = fs_err::read_to_string(settings.path(".ferry/run_results.json")) else { return HashMap::new() };
    let Ok(json) = serde_json::from_str::<Json>(&text) else { return HashMap::new() };
    let mut out = HashMap::new();
    for r in json["results"].as_array().into_iter().flatten() {
        let Some(i) = manifest.nodes.iter().position(|n| Some(n.unique_id.as_str()) == r["unique_id"].as_str()) else {
            continue;
        };
        let Ok(ledger) = serde_json::from_value::<Ledger>(r["ledger"].clone()) else { continue };
        let stage = crate::stage::read_manifest(&settings.layout().stage_root().join(&manifest.nodes[i].name));
        if stage.is_ok_and(|s| Some(s.checksum.as_str()) == r["stage"]["checksum"].as_str()) {
            out.insert(i, ledger);
        }
    }
    out
}

/// Reconciles the loaded `nodes` against the target; `side` (from
/// `--side`) overrides each model's `reconcile.side`.
pub(crate) async fn reconcile_nodes(
    target: &Target,
    manifest: &Manifest,
    nodes: &BTreeSet<usize>,
    stage_root: &Utf8Path,
    ledgers: &HashMap<usize, Ledger>,
    side: Option<SideChoice>,
    printer: &Printer,
) -> Reconciled {
    let mut done = Reconciled::default();
    let mut jobs: Vec<(usize, LoadJob, Config)> = Vec::new();
    for i in load::load_order(manifest, nodes) {
        let node = &manifest.nodes[i];
        let config = match Config::from_json(node.config.get("reconcile")) {
            Ok(c) => Config { side: side.unwrap_or(c.side), ..c },
            Err(message) => {
                done.diagnostics.push(
                    Diagnostic::error(Code::ModelConfig, format!("{}: {message}", node.display_name()))
                        .in_file(node.path())
                        .with_help("write `reconcile: {columns: [a, b], tolerance: 0.001, max_mismatch_rows: 0}`"),
                );
                continue;
            }
        };
        if !config.enabled {
            continue;
        }
        match load::config_for(manifest, i) {
            Ok(None) => {}
            Ok(Some(load_config)) => match load::job_for(manifest, i, load_config, stage_root) {
                Ok(job) => jobs.push((i, job, config)),
                Err(e) => done.diagnostics.push(e.to_diagnostic(&node.name)),
            },
            Err(d) => done.diagnostics.push(*d),
        }
    }
    if jobs.is_empty() {
        return done;
    }
    let mut conn = match Connection::connect(target).await {
        Ok(c) => c,
        Err(e) => {
            done.diagnostics.push(e.to_diagnostic(&format!("target `{}`", target.name)));
            return done;
        }
    };
    let total = jobs.len();
    for (k, (i, job, config)) in jobs.iter().enumerate() {
        let report = rec::reconcile_table(&mut conn, job, (config, rec::Reference::Stage), ledgers.get(i)).await;
        print_report(&mut done, (k + 1, total), (*i, job), report, printer);
    }
    done
}

/// The lines under a model's status line: each check, then the differences.
fn report_lines(r: &ModelReport) -> Vec<String> {
    let mut out: Vec<String> = r.notes.iter().map(|n| format!("note: {n}")).collect();
    if r.checks.is_empty() {
        return out;
    }
    out.push(format!("target side: {}", r.target_side));
    for c in &r.checks {
        out.push(format!("{:<5} {}: {}", c.status.word(), c.name, c.detail));
        for m in c.mismatches.iter().take(10) {
            out.push(format!(
                "        {}: stage {}, target {}",
                m.measure,
                m.stage.as_deref().unwrap_or("NULL"),
                m.target.as_deref().unwrap_or("NULL")
            ));
        }
    }
    let d = &r.differences;
    let key = |k: &rec::Key| {
        k.0.iter().map(|(c, v)| format!("{c}={}", v.as_deref().unwrap_or("NULL"))).collect::<Vec<_>>().join(", ")
    };
    const SHOWN: usize = 10;
    for k in d.missing_keys.iter().take(SHOWN) {
        out.push(format!("  missing in target: {}", key(k)));
    }
    for k in d.extra_keys.iter().take(SHOWN) {
        out.push(format!("  extra in target:   {}", key(k)));
    }
    for k in d.duplicated.iter().take(SHOWN) {
        out.push(format!("  duplicate key in target: {}", key(k)));
    }
    for c in d.changed_rows.iter().take(SHOWN) {
        let cells: Vec<String> = c
            .columns
            .iter()
            .map(|x| {
                format!(
                    "{}: {} -> {}",
                    x.column,
                    x.stage.as_deref().map(|s| format!("{s:?}")).unwrap_or_else(|| "NULL".into()),
                    x.target.as_deref().map(|s| format!("{s:?}")).unwrap_or_else(|| "NULL".into())
                )
            })
            .collect();
        out.push(format!("  changed {}: {}", key(&c.key), cells.join("; ")));
    }
    let listed = d.missing_keys.len().min(SHOWN)
        + d.extra_keys.len().min(SHOWN)
        + d.duplicated.len().min(SHOWN)
        + d.changed_rows.len().min(SHOWN);
    if d.rows() > listed as u64 {
        out.push(format!("  ... {} more differing rows in the report file", group(d.rows() - listed as u64)));
    }
    out
}
