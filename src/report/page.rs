//! The report's page: what the run left on disk gathered into the plain
//! records the template (`page.html`) shows, and the rendering.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use super::ReportError;
use super::errors::{self, ErrorLog, RuleFailures};
use super::lineage::{self, Drawing, Drawn};
use crate::state::history;
use crate::state::run_record::RunRecord;
use crate::state::run_results::{NodeResult, ReconcileVerdict, Status};
use crate::state::{Layout, RunDir, error_log};
use crate::values::grouped as num;

/// Width of the longest ledger bar, in pixels.
const BAR: f64 = 320.0;
/// Runs of the history charted.
const HISTORY_RUNS: usize = 20;

#[derive(Serialize)]
struct Page {
    project: String,
    generated_at: String,
    ferry_version: &'static str,
    run: RunView,
    verdict: Verdict,
    models: Vec<ModelRow>,
    tests: Vec<TestRow>,
    rules: Vec<RuleFailures>,
    log: LogView,
    reconcile: Vec<ReconcileView>,
    lineage: Drawing,
    audit: Option<AuditView>,
    history: Vec<HistoryChart>,
    not_checked: Vec<String>,
}

#[derive(Serialize)]
struct RunView {
    id: String,
    command: String,
    selection: String,
    started_at: String,
    ended_at: String,
    seconds: f64,
    git_commit: Option<String>,
    target: String,
    /// The cluster the models ran on, and the tables read on ferry's host
    /// for it.
    cluster: Option<crate::state::run_record::ClusterRun>,
    interrupted: bool,
    /// Nodes per status.
    counts: BTreeMap<String, usize>,
}

#[derive(Serialize)]
struct Verdict {
    /// `PASS` or `FAIL`.
    word: &'static str,
    sentence: String,
}

#[derive(Serialize)]
struct ModelRow {
    name: String,
    unique_id: String,
    kind: String,
    status: String,
    seconds: f64,
    rows: Option<u64>,
    message: Option<String>,
    ledger: Option<LedgerRow>,
    load: Option<String>,
    reconcile: Option<String>,
    /// The files of its quarantine and error log, relative to the report.
    links: Vec<(String, String)>,
}

#[derive(Serialize)]
struct LedgerRow {
    produced: u64,
    staged: u64,
    quarantined: u64,
    duplicates: u64,
    warned: u64,
    balances: bool,
    /// Bar widths in pixels: staged, quarantined, duplicates.
    bars: [f64; 3],
}

#[derive(Serialize)]
struct TestRow {
    name: String,
    status: String,
    failures: Option<u64>,
    message: Option<String>,
}

#[derive(Serialize)]
struct LogView {
    total: u64,
    shown: usize,
    lines: Vec<Map<String, Value>>,
    models: Vec<String>,
    rules: Vec<String>,
    severities: Vec<String>,
}

#[derive(Serialize)]
struct ReconcileView {
    model: String,
    table: String,
    status: String,
    target_side: String,
    staged_rows: u64,
    target_rows: Option<u64>,
    checks: Vec<CheckView>,
    /// Counts of what differs, in words (empty when nothing does).
    summary: String,
    /// The differing keys and cells, one line each.
    differences: Vec<String>,
    error: Option<String>,
    notes: Vec<String>,
}

#[derive(Serialize)]
struct CheckView {
    name: String,
    status: String,
    detail: String,
}

#[derive(Serialize)]
struct AuditView {
    run_id: String,
    created_at: String,
    file: String,
    tables: Vec<Value>,
    /// What changed since an earlier audit (`--compare-to`).
    compared_to: Option<Value>,
    /// An audit made without masking, in a masked run's report: its values
    /// are not shown.
    withheld: bool,
    /// Made in a masked run.
    #[serde(skip)]
    masked_run: bool,
}

/// The audit's own page.
#[derive(Serialize)]
struct AuditPage {
    project: String,
    generated_at: String,
    ferry_version: &'static str,
    audit: AuditView,
}

#[derive(Serialize)]
struct HistoryChart {
    node: String,
    /// `run started  error %` for each run charted, oldest first.
    points: Vec<(String, String, f64)>,
    /// SVG polyline points, in a 300 x 80 box.
    polyline: String,
    max_pct: f64,
    flags: Vec<String>,
}

/// The page of `record`'s run.
pub async fn render(layout: &Layout, run: &RunDir, record: &RunRecord) -> Result<String, ReportError> {
    let results = &record.results.results;
    let log = errors::read(run).await?;
    let reconcile = read_reconcile(run)?;
    let models: Vec<ModelRow> =
        results.iter().filter(|r| !r.unique_id.starts_with("test.")).map(|r| model_row(r, run)).collect();
    let tests = results
        .iter()
        .filter(|r| r.unique_id.starts_with("test."))
        .map(|r| TestRow {
            name: short_name(&r.unique_id),
            status: status_word(r.status).to_owned(),
            failures: r.failures,
            message: r.message.clone(),
        })
        .collect();
    let audit = latest_audit(layout)?.map(|mut a| {
        if record.masked && !a.masked_run {
            (a.tables, a.compared_to, a.withheld) = (Vec::new(), None, true);
        }
        a
    });
    let history = history_charts(layout, record).await?;
    let page = Page {
        project: record.project_name.clone(),
        generated_at: now(),
        ferry_version: env!("CARGO_PKG_VERSION"),
        verdict: verdict(record, &reconcile),
        not_checked: not_checked(record, &reconcile, &log, audit.is_some()),
        run: run_view(record),
        lineage: draw_lineage(record),
        log: log_view(&log),
        rules: log.rules,
        models: with_bars(models),
        tests,
        reconcile,
        audit,
        history,
    };
    Ok(environment()?.get_template("page.html")?.render(minijinja::value::Serde(&page))?)
}

/// The page of audit `id` (under `.ferry/audit/`) of project `project`.
pub fn render_audit(layout: &Layout, project: &str, id: &str) -> Result<String, ReportError> {
    let page = AuditPage {
        project: project.to_owned(),
        generated_at: now(),
        ferry_version: env!("CARGO_PKG_VERSION"),
        audit: read_audit(layout, id)?,
    };
    Ok(environment()?.get_template("audit_page.html")?.render(minijinja::value::Serde(&page))?)
}

/// The templates, their shared styles and the audit's tables.
fn environment() -> Result<minijinja::Environment<'static>, ReportError> {
    let mut env = minijinja::Environment::new();
    env.add_filter("num", num);
    env.add_template("style.css", include_str!("style.css"))?;
    env.add_template("audit.html", include_str!("audit.html"))?;
    env.add_template("page.html", include_str!("page.html"))?;
    env.add_template("audit_page.html", include_str!("audit_page.html"))?;
    Ok(env)
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Success => "success",
        Status::Error => "error",
        Status::Skipped => "skipped",
        Status::Pass => "pass",
        Status::Warn => "warn",
        Status::Fail => "fail",
    }
}

fn verdict_word(v: ReconcileVerdict) -> &'static str {
    match v {
        ReconcileVerdict::Pass => "PASS",
        ReconcileVerdict::Fail => "FAIL",
        ReconcileVerdict::Skipped => "SKIP",
        ReconcileVerdict::Error => "ERROR",
    }
}

/// `model.shop.orders` -> `orders`; a test's id without its hash.
fn short_name(unique_id: &str) -> String {
    let mut parts = unique_id.splitn(3, '.');
    let (_, _, rest) = (parts.next(), parts.next(), parts.next());
    let rest = rest.unwrap_or(unique_id);
    match rest.rsplit_once('.') {
        Some((name, hash)) if unique_id.starts_with("test.") && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            name.to_owned()
        }
        _ => rest.to_owned(),
    }
}

fn model_row(r: &NodeResult, run: &RunDir) -> ModelRow {
    let name = short_name(&r.unique_id);
    let load = r.load.as_ref().map(|l| match (&l.report, &l.message) {
        (Some(rep), _) => format!("{} rows into {} ({})", num(rep.rows), rep.table, rep.mode),
        (None, Some(m)) => format!("failed: {m}"),
        (None, None) => status_word(l.status).to_owned(),
    });
    let mut links = Vec::new();
    for (label, rel) in [
        ("error log (CSV)", error_log::log_file(&name, "csv")),
        ("quarantined rows (CSV)", error_log::quarantine_file(&name, "csv")),
        ("quarantined rows (Parquet)", error_log::quarantine_file(&name, "parquet")),
    ] {
        if run.path.join(&rel).is_file() {
            links.push((label.to_owned(), rel.to_string()));
        }
    }
    ModelRow {
        kind: r.materialized.clone(),
        status: status_word(r.status).to_owned(),
        seconds: r.execution_time,
        rows: r.rows,
        message: r.message.clone(),
        ledger: r.ledger.as_ref().map(|l| LedgerRow {
            produced: l.produced,
            staged: l.staged,
            quarantined: l.quarantined,
            duplicates: l.duplicates_dropped,
            warned: l.warned,
            balances: l.balances(),
            bars: [0.0; 3],
        }),
        load,
        reconcile: r.reconcile.map(|v| verdict_word(v).to_owned()),
        links,
        unique_id: r.unique_id.clone(),
        name,
    }
}

/// Scales the ledger bars to the model that produced the most rows.
fn with_bars(mut models: Vec<ModelRow>) -> Vec<ModelRow> {
    let max = models.iter().filter_map(|m| m.ledger.as_ref()).map(|l| l.produced).max().unwrap_or(0).max(1) as f64;
    for l in models.iter_mut().filter_map(|m| m.ledger.as_mut()) {
        let w = |n: u64| if n == 0 { 0.0 } else { (BAR * n as f64 / max).max(2.0) };
        l.bars = [w(l.staged), w(l.quarantined), w(l.duplicates)];
    }
    models
}

fn run_view(record: &RunRecord) -> RunView {
    let mut counts = BTreeMap::new();
    for r in &record.results.results {
        *counts.entry(status_word(r.status).to_owned()).or_insert(0) += 1;
    }
    let shown = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .map(|t| t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|_| t.to_owned())
    };
    RunView {
        id: record.run_id.clone(),
        command: record.command.clone(),
        selection: record.selection.clone(),
        started_at: shown(&record.started_at),
        ended_at: shown(&record.ended_at),
        seconds: record.results.elapsed_time,
        git_commit: record.git_commit.clone(),
        target: record.target.clone(),
        cluster: record.cluster.clone(),
        interrupted: record.results.args.interrupted,
        counts,
    }
}

fn verdict(record: &RunRecord, reconcile: &[ReconcileView]) -> Verdict {
    let failed = record.results.results.iter().filter(|r| r.status.is_failure()).count();
    let unreconciled = reconcile.iter().filter(|r| r.status == "FAIL" || r.status == "ERROR").count();
    let mut problems = Vec::new();
    if record.results.args.interrupted {
        problems.push("the run was interrupted".to_owned());
    }
    if failed > 0 {
        problems.push(format!("{failed} node{} failed", if failed == 1 { "" } else { "s" }));
    }
    if unreconciled > 0 {
        problems.push(format!(
            "{unreconciled} of {} loaded table{} did not reconcile with {} stage",
            reconcile.len(),
            if reconcile.len() == 1 { "" } else { "s" },
            if reconcile.len() == 1 { "its" } else { "their" }
        ));
    }
    if problems.is_empty() {
        let sentence = if reconcile.is_empty() {
            "Every node ran as it should; no table was reconciled in this run (see what was not checked).".to_owned()
        } else {
            format!(
                "Every node ran as it should, and each of the {} loaded table{} holds exactly what was staged.",
                reconcile.len(),
                if reconcile.len() == 1 { "" } else { "s" }
            )
        };
        return Verdict { word: "PASS", sentence };
    }
    let mut sentence = problems.join("; ");
    if let Some(first) = sentence.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    Verdict { word: "FAIL", sentence: format!("{sentence}.") }
}

fn read_reconcile(run: &RunDir) -> Result<Vec<ReconcileView>, ReportError> {
    let file = run.join("reconcile.json");
    let text = match fs_err::read_to_string(&file.path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ReportError::Read { path: file.shown, message: e.to_string() }),
    };
    let reports: Vec<Value> = serde_json::from_str(&text)?;
    Ok(reports.iter().map(reconcile_view).collect())
}

/// `id=5, region=EU`.
fn key_text(key: &Value) -> String {
    match key.as_object() {
        Some(m) => m.iter().map(|(k, v)| format!("{k}={}", cell(v))).collect::<Vec<_>>().join(", "),
        None => key.to_string(),
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "NULL".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn reconcile_view(r: &Value) -> ReconcileView {
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    let count = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let list = |v: &Value, k: &str| v.get(k).and_then(Value::as_array).cloned().unwrap_or_default();
    let word = |s: String| s.to_ascii_uppercase().replace("SKIPPED", "SKIP");
    let checks = list(r, "checks")
        .iter()
        .map(|c| CheckView { name: text(c, "name"), status: word(text(c, "status")), detail: text(c, "detail") })
        .collect();
    let d = r.get("differences").cloned().unwrap_or(Value::Null);
    let mut differences = Vec::new();
    for (kind, field) in [("missing from the target", "missing_keys"), ("extra in the target", "extra_keys")] {
        differences.extend(list(&d, field).iter().map(|k| format!("{kind}: {}", key_text(k))));
    }
    for row in list(&d, "changed_rows") {
        let key = key_text(row.get("key").unwrap_or(&Value::Null));
        for c in list(&row, "columns") {
            differences.push(format!(
                "changed: {key}, {}: staged {} but the target holds {}",
                text(&c, "column"),
                cell(c.get("stage").unwrap_or(&Value::Null)),
                cell(c.get("target").unwrap_or(&Value::Null))
            ));
        }
    }
    differences.extend(list(&d, "duplicated").iter().map(|k| format!("key held twice in the target: {}", key_text(k))));
    let parts: Vec<String> =
        [("missing", "missing"), ("extra", "extra"), ("changed", "changed"), ("duplicated", "duplicate_keys")]
            .iter()
            .filter(|(_, f)| count(&d, f) > 0)
            .map(|(w, f)| format!("{} {w}", num(count(&d, f))))
            .collect();
    let mut summary = parts.join(", ");
    if d.get("not_fetched").and_then(Value::as_bool) == Some(true) {
        summary = format!(
            "{} of {} segments differ (too many rows to list the keys)",
            count(&d, "segments_differing"),
            count(&d, "segments")
        );
    }
    ReconcileView {
        model: text(r, "model"),
        table: text(r, "table"),
        status: word(text(r, "status")),
        target_side: text(r, "target_side"),
        staged_rows: count(r, "staged_rows"),
        target_rows: r.get("target_rows").and_then(Value::as_u64),
        checks,
        summary,
        differences,
        error: r.get("error").and_then(Value::as_str).map(str::to_owned),
        notes: list(r, "notes").iter().filter_map(Value::as_str).map(str::to_owned).collect(),
    }
}

fn draw_lineage(record: &RunRecord) -> Drawing {
    let by_id: BTreeMap<&str, &NodeResult> = record.results.results.iter().map(|r| (r.unique_id.as_str(), r)).collect();
    let drawn: Vec<Drawn<'_>> = record
        .lineage
        .iter()
        .map(|n| {
            let result = by_id.get(n.unique_id.as_str());
            Drawn {
                node: n,
                status: result.map_or("upstream", |r| status_word(r.status)).to_owned(),
                table: result
                    .and_then(|r| r.load.as_ref())
                    .and_then(|l| l.report.as_ref())
                    .map(|rep| rep.table.clone()),
            }
        })
        .collect();
    lineage::draw(&drawn)
}

fn log_view(log: &ErrorLog) -> LogView {
    let distinct = |k: &str| {
        let mut v: Vec<String> =
            log.rules.iter().map(|r| if k == "model" { r.model.clone() } else { r.rule.clone() }).collect();
        v.sort();
        v.dedup();
        v
    };
    let mut severities: Vec<String> = log.rules.iter().map(|r| r.severity.clone()).collect();
    severities.sort();
    severities.dedup();
    LogView {
        total: log.total,
        shown: log.lines.len(),
        lines: log.lines.clone(),
        models: distinct("model"),
        rules: distinct("rule"),
        severities,
    }
}

/// What this run did not check, in plain words.
fn not_checked(record: &RunRecord, reconcile: &[ReconcileView], log: &ErrorLog, audited: bool) -> Vec<String> {
    let mut out = Vec::new();
    if record.results.args.interrupted {
        out.push("The run was interrupted (Ctrl-C): the nodes after that point did not run.".to_owned());
    }
    let reconciled: std::collections::BTreeSet<&str> = reconcile.iter().map(|r| r.model.as_str()).collect();
    let mut loaded_unreconciled = Vec::new();
    for r in &record.results.results {
        let name = short_name(&r.unique_id);
        if r.status == Status::Skipped {
            out.push(format!(
                "`{name}` did not run{}.",
                r.message.as_ref().map(|m| format!(": {m}")).unwrap_or_default()
            ));
            continue;
        }
        let staged = r.stage.is_some() && !r.status.is_failure();
        match &r.load {
            None if staged && record.command != "test" => {
                out.push(format!("`{name}` was staged but not loaded into the target."));
            }
            Some(l) if l.report.is_none() => out.push(format!(
                "Loading `{name}` failed{}, so its table was not reconciled.",
                l.message.as_ref().map(|m| format!(": {m}")).unwrap_or_default()
            )),
            Some(_) if r.reconcile == Some(ReconcileVerdict::Skipped) => {
                out.push(format!("Reconciling `{name}` was skipped."));
            }
            Some(_) if !reconciled.contains(name.as_str()) => loaded_unreconciled.push(format!("`{name}`")),
            _ => {}
        }
    }
    if !loaded_unreconciled.is_empty() {
        let why = if record.command == "build" {
            "".to_owned()
        } else {
            format!(" (`ferry {}` loads without reconciling; `ferry reconcile` proves a loaded table)", record.command)
        };
        out.push(format!("Loaded but not reconciled in this run: {}{why}.", loaded_unreconciled.join(", ")));
    }
    for r in reconcile {
        out.extend(r.notes.iter().map(|n| format!("Reconciling `{}`: {n}.", r.table)));
    }
    if log.lines.len() as u64 > 0 && (log.lines.len() as u64) < log.total {
        out.push(format!(
            "The error log below holds the first {} of its {} lines; every line is in the CSV files under `errors/` beside this report.",
            num(log.lines.len() as u64),
            num(log.total)
        ));
    }
    if !audited {
        out.push("No source audit has been run in this project (`ferry audit`), so the sources' contents are not profiled here.".to_owned());
    }
    out
}

/// The latest `audit.json` under `.ferry/audit/`, if any.
fn latest_audit(layout: &Layout) -> Result<Option<AuditView>, ReportError> {
    let audits = layout.audits();
    let Some(id) = audits.newest_holding("audit.json").into_iter().next() else { return Ok(None) };
    read_audit(layout, &id).map(Some)
}

/// Audit `id`'s `audit.json`.
fn read_audit(layout: &Layout, id: &str) -> Result<AuditView, ReportError> {
    let file = layout.audits().join(id).join("audit.json");
    let text = fs_err::read_to_string(&file.path)
        .map_err(|e| ReportError::Read { path: file.shown.clone(), message: e.to_string() })?;
    let mut doc: Value = serde_json::from_str(&text)?;
    let shown_time = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t).map_or_else(
            |_| t.to_owned(),
            |t| t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
    };
    let mut compared_to = doc.get_mut("compared_to").map(Value::take).filter(|c| !c.is_null());
    if let Some(at) = compared_to.as_mut().and_then(|c| c.get_mut("created_at")) {
        *at = Value::from(shown_time(at.as_str().unwrap_or_default()));
    }
    Ok(AuditView {
        run_id: id.to_owned(),
        created_at: doc.get("created_at").and_then(Value::as_str).map(shown_time).unwrap_or_default(),
        file: file.shown.to_string(),
        tables: doc.get_mut("tables").map(Value::take).and_then(|t| t.as_array().cloned()).unwrap_or_default(),
        compared_to,
        withheld: false,
        masked_run: doc.get("masked").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// Error rates over the last runs of each model this run checked, where
/// the history holds two runs or more.
async fn history_charts(layout: &Layout, record: &RunRecord) -> Result<Vec<HistoryChart>, ReportError> {
    let query = history::Query { model: None, last: Some(HISTORY_RUNS) };
    let (nodes, rules) = history::read(layout, &query).await?;
    let nodes = errors::json_rows(&nodes)?;
    let rules = errors::json_rows(&rules)?;
    let this_run: String = record.run_id.chars().take(8).collect();
    let text = |row: &Map<String, Value>, k: &str| row.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    let mut charts = Vec::new();
    for r in record.results.results.iter().filter(|r| r.ledger.is_some()) {
        let points: Vec<(String, String, f64)> = nodes
            .iter()
            .filter(|n| text(n, "node") == r.unique_id && n.get("produced").is_some())
            .map(|n| (text(n, "run"), text(n, "started"), n.get("error_pct").and_then(Value::as_f64).unwrap_or(0.0)))
            .collect();
        if points.len() < 2 {
            continue;
        }
        let max_pct = points.iter().map(|p| p.2).fold(0.0, f64::max);
        let scale = if max_pct > 0.0 { max_pct } else { 1.0 };
        let step = 300.0 / (points.len() - 1) as f64;
        let polyline = points
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{:.1},{:.1}", i as f64 * step, 75.0 - 70.0 * p.2 / scale))
            .collect::<Vec<_>>()
            .join(" ");
        let flags = rules
            .iter()
            .filter(|x| text(x, "node") == r.unique_id && text(x, "run") == this_run && x.get("flag").is_some())
            .map(|x| {
                format!(
                    "rule `{}`: {} failures ({}, {} the run before)",
                    text(x, "rule"),
                    x.get("failures").and_then(Value::as_u64).unwrap_or(0),
                    text(x, "flag"),
                    x.get("previous").and_then(Value::as_u64).unwrap_or(0)
                )
            })
            .collect();
        charts.push(HistoryChart { node: short_name(&r.unique_id), points, polyline, max_pct, flags });
    }
    Ok(charts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_read_as_people_write_them() {
        assert_eq!(num(0), "0");
        assert_eq!(num(999), "999");
        assert_eq!(num(1_000), "1,000");
        assert_eq!(num(6_001_215), "6,001,215");
        assert_eq!(short_name("model.shop.orders"), "orders");
        assert_eq!(short_name("seed.shop.customer_types"), "customer_types");
        assert_eq!(short_name("test.shop.unique_orders_order_id.4f2a9c1b"), "unique_orders_order_id");
        assert_eq!(short_name("test.shop.orders_have_amounts"), "orders_have_amounts");
    }

    #[test]
    fn a_reconcile_report_lists_every_difference() {
        let r: Value = serde_json::json!({
            "model": "accounts", "table": "accounts", "status": "fail", "staged_rows": 3, "target_rows": 3,
            "checks": [{"name": "row count", "status": "pass", "detail": "3 staged, 3 in the target"},
                       {"name": "checksum", "status": "fail", "detail": "1 of 1 segments differ"}],
            "differences": {"segments": 1, "segments_differing": 1, "missing": 1, "extra": 0, "changed": 1,
                "duplicate_keys": 0, "not_fetched": false, "missing_keys": [{"id": "5"}], "extra_keys": [],
                "changed_rows": [{"key": {"id": "10"}, "columns": [{"column": "active", "stage": "1", "target": null}]}],
                "duplicated": []},
            "seconds": 0.1
        });
        let v = reconcile_view(&r);
        assert_eq!(v.status, "FAIL");
        assert_eq!(v.summary, "1 missing, 1 changed");
        assert_eq!(
            v.differences,
            ["missing from the target: id=5", "changed: id=10, active: staged 1 but the target holds NULL"]
        );
        assert_eq!(v.checks[1].status, "FAIL");
    }
}
