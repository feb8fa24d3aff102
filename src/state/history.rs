//! The run history: every run appends one record per node, and one per
//! rule of each checked model, to `.ferry/state/history/` as Parquet files
//! of their own (`nodes/<start>_<run>.parquet`, `rules/...`), never
//! rewritten, so that months of a recurring migration can be read back:
//! volumes, error rates and rule failures per run (`ferry history`).
//!
//! Each record carries [`SCHEMA_VERSION`]; a later version adds columns
//! (read back as NULL from older files) and never changes one.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use camino::Utf8PathBuf;
use datafusion::arrow::array::{
    ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray, UInt32Array, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::parquet::arrow::ArrowWriter;

use serde::Serialize;

use super::run_results::{RunResults, Status};
use super::{Layout, files};

/// The version of the records' schema.
pub const SCHEMA_VERSION: u32 = 1;

/// What the history says of a run besides its nodes' results.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub run_id: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub ended_at: chrono::DateTime<chrono::Utc>,
    /// The command (`build`) and the selection it was given.
    pub command: String,
    pub selection: String,
    /// The project's git commit, when it is in a repository.
    pub git_commit: Option<String>,
    /// Seconds each loaded table took to reconcile, by node unique id.
    pub reconcile_seconds: BTreeMap<String, f64>,
}

fn utc() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn node_schema() -> Schema {
    let text = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    let count = |n: &str| Field::new(n, DataType::UInt64, true);
    let secs = |n: &str| Field::new(n, DataType::Float64, true);
    Schema::new(vec![
        Field::new("schema_version", DataType::UInt32, false),
        text("run_id", false),
        Field::new("started_at", utc(), false),
        Field::new("ended_at", utc(), false),
        text("ferry_version", false),
        text("git_commit", true),
        text("command", false),
        text("selection", false),
        text("node", false),
        text("status", false),
        text("materialized", false),
        count("produced"),
        count("staged"),
        count("quarantined"),
        count("duplicates"),
        count("warned"),
        count("loaded"),
        count("inserted"),
        count("updated"),
        count("deleted"),
        text("reconcile", true),
        secs("model_seconds"),
        secs("load_seconds"),
        secs("reconcile_seconds"),
    ])
}

fn rule_schema() -> Schema {
    Schema::new(vec![
        Field::new("schema_version", DataType::UInt32, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("started_at", utc(), false),
        Field::new("node", DataType::Utf8, false),
        Field::new("rule", DataType::Utf8, false),
        Field::new("failures", DataType::UInt64, false),
    ])
}

/// Appends the run's records; the files written.
pub fn append(layout: &Layout, info: &RunInfo, results: &RunResults) -> Result<Vec<Utf8PathBuf>> {
    let dir = layout.state().join("history");
    let stem = format!("{}_{}", info.started_at.format("%Y%m%dT%H%M%S%.6fZ"), info.run_id);
    let mut written = Vec::new();
    let nodes = node_batch(info, results)?;
    if nodes.num_rows() > 0 {
        let path = dir.join("nodes").join(format!("{stem}.parquet"));
        write(&path, &nodes)?;
        written.push(path);
    }
    let rules = rule_batch(info, results)?;
    if rules.num_rows() > 0 {
        let path = dir.join("rules").join(format!("{stem}.parquet"));
        write(&path, &rules)?;
        written.push(path);
    }
    Ok(written)
}

fn write(path: &Utf8PathBuf, batch: &RecordBatch) -> Result<()> {
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), None)?;
    writer.write(batch)?;
    writer.close()?;
    files::write_atomic(path, &bytes, true).with_context(|| format!("failed to write the run history `{path}`"))
}

fn micros(t: &chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_micros()
}

fn node_batch(info: &RunInfo, results: &RunResults) -> Result<RecordBatch> {
    let rows = &results.results;
    let n = rows.len();
    let same_text = |v: &str| Arc::new(StringArray::from(vec![v; n])) as ArrayRef;
    let time = |t: &chrono::DateTime<chrono::Utc>| {
        Arc::new(TimestampMicrosecondArray::from(vec![micros(t); n]).with_timezone("UTC")) as ArrayRef
    };
    let texts = |f: &dyn Fn(&super::run_results::NodeResult) -> Option<String>| {
        Arc::new(rows.iter().map(f).collect::<StringArray>()) as ArrayRef
    };
    let counts = |f: &dyn Fn(&super::run_results::NodeResult) -> Option<u64>| {
        Arc::new(rows.iter().map(f).collect::<UInt64Array>()) as ArrayRef
    };
    let secs = |f: &dyn Fn(&super::run_results::NodeResult) -> Option<f64>| {
        Arc::new(rows.iter().map(f).collect::<Float64Array>()) as ArrayRef
    };
    let git = info.git_commit.as_deref();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from(vec![SCHEMA_VERSION; n])),
        same_text(&info.run_id),
        time(&info.started_at),
        time(&info.ended_at),
        same_text(&results.metadata.ferry_version),
        Arc::new(StringArray::from(vec![git; n])),
        same_text(&info.command),
        same_text(&info.selection),
        texts(&|r| Some(r.unique_id.clone())),
        texts(&|r| serde_name(r.status)),
        texts(&|r| Some(r.materialized.clone())),
        counts(&|r| r.ledger.as_ref().map(|l| l.produced).or(r.rows)),
        counts(&|r| r.ledger.as_ref().map(|l| l.staged).or(r.rows)),
        counts(&|r| r.ledger.as_ref().map(|l| l.quarantined)),
        counts(&|r| r.ledger.as_ref().map(|l| l.duplicates_dropped)),
        counts(&|r| r.ledger.as_ref().map(|l| l.warned)),
        counts(&|r| loaded(r).map(|l| l.rows)),
        counts(&|r| changes(r).0),
        counts(&|r| changes(r).1),
        counts(&|r| changes(r).2),
        texts(&|r| r.reconcile.and_then(serde_name)),
        secs(&|r| Some(r.execution_time)),
        secs(&|r| loaded(r).map(|l| l.seconds)),
        secs(&|r| info.reconcile_seconds.get(&r.unique_id).copied()),
    ];
    Ok(RecordBatch::try_new(Arc::new(node_schema()), columns)?)
}

/// The rows a node's load inserted, updated and deleted, where they can
/// be told: a change-detected run's as it classified them (a soft delete
/// counts as a delete); an incremental run's from its data's rows before and after
/// (a key merged again is an update; a microbatch window's rows are
/// deleted, then its rows inserted); a replacing or appending load inserts
/// every row it loads.
fn changes(r: &super::run_results::NodeResult) -> (Option<u64>, Option<u64>, Option<u64>) {
    let Some(load) = loaded(r) else { return (None, None, None) };
    if let Some(c) = r.changes.as_ref().filter(|c| c.run == "changes") {
        let deleted = if c.deletes == "ignore" { 0 } else { c.deleted };
        return (Some(c.inserted), Some(c.updated), Some(deleted));
    }
    let incremental = r.incremental.as_ref().and_then(|i| i.previous_rows.map(|p| (i, p)));
    match incremental {
        Some((i, previous)) => match i.strategy.as_str() {
            "append" => (Some(i.rows), Some(0), Some(0)),
            "microbatch" => (Some(i.rows), Some(0), Some((previous + i.rows).saturating_sub(i.total_rows))),
            _ => {
                let inserted = i.total_rows.saturating_sub(previous);
                (Some(inserted), Some(i.rows.saturating_sub(inserted)), Some(0))
            }
        },
        None if load.mode == "replace" || load.mode == "append" => (Some(load.rows), None, None),
        None => (None, None, None),
    }
}

/// The load of a node that loaded.
fn loaded(r: &super::run_results::NodeResult) -> Option<&super::run_results::LoadRecord> {
    r.load.as_ref().filter(|l| l.status == Status::Success).and_then(|l| l.report.as_ref())
}

fn rule_batch(info: &RunInfo, results: &RunResults) -> Result<RecordBatch> {
    let mut nodes = Vec::new();
    let mut rules = Vec::new();
    let mut failures = Vec::new();
    for r in &results.results {
        for (rule, count) in r.ledger.iter().flat_map(|l| l.by_rule.iter()) {
            nodes.push(r.unique_id.clone());
            rules.push(rule.clone());
            failures.push(*count);
        }
    }
    let n = nodes.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from(vec![SCHEMA_VERSION; n])),
        Arc::new(StringArray::from(vec![info.run_id.as_str(); n])),
        Arc::new(TimestampMicrosecondArray::from(vec![micros(&info.started_at); n]).with_timezone("UTC")),
        Arc::new(StringArray::from(nodes)),
        Arc::new(StringArray::from(rules)),
        Arc::new(UInt64Array::from(failures)),
    ];
    Ok(RecordBatch::try_new(Arc::new(rule_schema()), columns)?)
}

/// The name serde gives a unit variant (`success`, `pass`): the one
/// `run_results.json` writes.
fn serde_name(value: impl Serialize) -> Option<String> {
    serde_json::to_value(value).ok()?.as_str().map(str::to_owned)
}

/// Removes the directories of all but the `keep` newest runs under
/// `.ferry/runs/` (their quarantine, error logs and reports), never
/// `current`'s nor the history's records; the ids of the runs removed.
pub fn prune_runs(layout: &Layout, keep: usize, current: &str) -> Result<Vec<String>> {
    let runs = layout.runs().path;
    let Ok(entries) = fs_err::read_dir(&runs) else { return Ok(Vec::new()) };
    let mut dirs: Vec<(std::time::SystemTime, String)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let modified = e.metadata().and_then(|m| m.modified()).ok()?;
            Some((modified, e.file_name().to_str()?.to_owned()))
        })
        .filter(|(_, id)| id != current)
        .collect();
    // Newest first; the current run is one of those kept.
    dirs.sort_by(|a, b| b.cmp(a));
    let mut removed = Vec::new();
    for (_, id) in dirs.into_iter().skip(keep.saturating_sub(1)) {
        let dir = runs.join(&id);
        fs_err::remove_dir_all(&dir).with_context(|| format!("failed to remove the old run `{dir}`"))?;
        removed.push(id);
    }
    removed.sort();
    Ok(removed)
}

/// What [`clean`] removed: run and audit ids.
#[derive(Debug, Default)]
pub struct Cleaned {
    pub runs: Vec<String>,
    pub audits: Vec<String>,
}

/// Removes the directories of the runs under `.ferry/runs/` (their
/// quarantine, error logs, test failures and reports) and the audits under
/// `.ferry/audit/` last written more than `age` ago; never the history's
/// records, which keep every run's counts. Run under the project's lock.
pub fn clean(layout: &Layout, age: std::time::Duration) -> Result<Cleaned> {
    let cutoff = std::time::SystemTime::now().checked_sub(age).unwrap_or(std::time::UNIX_EPOCH);
    let old = |root: &camino::Utf8Path| -> Result<Vec<String>> {
        let Ok(entries) = fs_err::read_dir(root) else { return Ok(Vec::new()) };
        let mut removed = Vec::new();
        for e in entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
            let (Ok(modified), Some(id)) =
                (e.metadata().and_then(|m| m.modified()), e.file_name().to_str().map(str::to_owned))
            else {
                continue;
            };
            if modified < cutoff {
                let dir = root.join(&id);
                fs_err::remove_dir_all(&dir).with_context(|| format!("failed to remove `{dir}`"))?;
                removed.push(id);
            }
        }
        removed.sort();
        Ok(removed)
    };
    Ok(Cleaned { runs: old(&layout.runs().path)?, audits: old(&layout.audits().path)? })
}

/// The commit checked out in `root`'s git repository, if it is in one.
pub fn git_commit(root: &camino::Utf8Path) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["-C", root.as_str(), "rev-parse", "--verify", "--quiet", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

/// What `ferry history` asks for.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Only nodes whose unique id or name is this.
    pub model: Option<String>,
    /// Only the last N runs.
    pub last: Option<usize>,
}

/// The history's records as `ferry history` shows them, oldest run
/// first: per node and run, its volumes, error rate (quarantined per row
/// produced) and the change of its staged rows from its run before; per
/// rule and run, its failures beside its run before's, flagged `doubled`
/// (twice as many or more) or `new` (where there were none). Empty when
/// nothing was recorded yet.
pub async fn read(layout: &Layout, query: &Query) -> Result<(Vec<RecordBatch>, Vec<RecordBatch>)> {
    use datafusion::prelude::{ParquetReadOptions, SessionContext};
    let dir = layout.state().join("history");
    let has_files = |sub: &str| {
        fs_err::read_dir(dir.join(sub))
            .map(|d| d.flatten().any(|e| e.path().extension().is_some_and(|x| x == "parquet")))
            .unwrap_or(false)
    };
    if !has_files("nodes") {
        return Ok((Vec::new(), Vec::new()));
    }
    let ctx = SessionContext::new();
    ctx.register_parquet("nodes", dir.join("nodes").as_str(), ParquetReadOptions::default()).await?;
    let node_filter = match &query.model {
        Some(m) => {
            let m = m.replace('\'', "''");
            format!("WHERE node = '{m}' OR node LIKE '%.{m}'")
        }
        None => String::new(),
    };
    // The runs shown: the last N that recorded one of the nodes asked for.
    let runs = match query.last {
        Some(n) => format!(
            "WHERE __run_id IN (SELECT run_id FROM (SELECT run_id, max(started_at) AS at FROM nodes {node_filter} \
             GROUP BY run_id ORDER BY at DESC LIMIT {n}))"
        ),
        None => String::new(),
    };
    let started = "to_char(started_at, '%Y-%m-%d %H:%M:%S')";
    let nodes = format!(
        "SELECT left(run_id, 8) AS run, {started} AS started, command, node, status, produced, staged, \
         quarantined, round(100.0 * quarantined / nullif(produced, 0), 2) AS error_pct, loaded, inserted, updated, \
         deleted, reconcile, \
         CAST(staged AS BIGINT) - lag(CAST(staged AS BIGINT)) OVER (PARTITION BY node ORDER BY started_at) \
         AS staged_change, run_id AS __run_id, started_at AS __at FROM nodes {node_filter}"
    );
    let nodes = format!("SELECT * EXCEPT (__run_id, __at) FROM ({nodes}) AS h {runs} ORDER BY __at, node");
    let nodes = ctx.sql(&nodes).await?.collect().await?;
    if !has_files("rules") {
        return Ok((nodes, Vec::new()));
    }
    ctx.register_parquet("rules", dir.join("rules").as_str(), ParquetReadOptions::default()).await?;
    let rules = format!(
        "SELECT left(run_id, 8) AS run, {started} AS started, node, rule, failures, \
         lag(failures) OVER (PARTITION BY node, rule ORDER BY started_at) AS previous, \
         run_id AS __run_id, started_at AS __at FROM rules {node_filter}"
    );
    let rules = format!(
        "SELECT run, started, node, rule, failures, previous, \
         CASE WHEN previous > 0 AND failures >= 2 * previous THEN 'doubled' \
         WHEN previous = 0 AND failures > 0 THEN 'new' END AS flag \
         FROM ({rules}) AS h {runs} ORDER BY __at, node, rule"
    );
    let rules = ctx.sql(&rules).await?.collect().await?;
    Ok((nodes, rules))
}
