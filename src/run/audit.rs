//! `audit`: profiles the selected sources and seeds (every one when none
//! is selected) as they are read, in one streaming pass each (see
//! [`crate::audit`]), and writes `.ferry/audit/<run id>/audit.json`.

use std::collections::BTreeSet;

use anyhow::{Context as _, Result};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::TableReference;
use futures::StreamExt as _;
use serde::Serialize;

use super::{Prepared, plan};
use crate::audit::compare::TableChanges;
use crate::audit::{KeyCheck, Orphans, TableProfile, TableProfiler, TextCheck};
use crate::diagnostic::{Code, Diagnostic};
use crate::engine::{Engine, sources};
use crate::manifest::{Manifest, NodeId, Resource};
use crate::project::nodes::{Test, TestKind};
use crate::state::RunDir;

/// What an audit found, and where it wrote it.
#[derive(Debug, Serialize)]
pub struct Audit {
    pub run_id: String,
    pub created_at: String,
    pub tables: Vec<TableProfile>,
    /// Made in a masked run: masked columns' values are left out.
    pub masked: bool,
    /// What changed since the audit `--compare-to` names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compared_to: Option<Compared>,
    #[serde(skip)]
    pub diagnostics: Vec<Diagnostic>,
    #[serde(skip)]
    pub file: Option<RunDir>,
    /// Its page, `audit.html`, beside it.
    #[serde(skip)]
    pub page: Option<RunDir>,
}

/// The changes since an earlier audit.
#[derive(Debug, Serialize)]
pub struct Compared {
    pub run_id: String,
    pub created_at: String,
    pub tables: Vec<TableChanges>,
}

/// Profiles the sources and seeds among `selected` (all of them when it
/// holds none), and compares the result with the earlier audit
/// `compare_to` names (`last`, an id, or the start of one).
pub async fn audit(
    prepared: &Prepared,
    engine: &Engine,
    selected: &BTreeSet<NodeId>,
    compare_to: Option<&str>,
) -> Result<Audit> {
    let manifest = &prepared.manifest;
    let readable = |i: &NodeId| matches!(manifest[*i].resource, Resource::Source(_) | Resource::Seed(_));
    let mut wanted: BTreeSet<NodeId> = selected.iter().copied().filter(readable).collect();
    if wanted.is_empty() {
        wanted = manifest.order.iter().copied().filter(readable).collect();
    }
    let declared = declared_checks(manifest, &wanted);
    // The tables that declared relationships point to are read too.
    let mut planned = wanted.clone();
    planned.extend(declared.iter().filter_map(|d| match d {
        Declared::Relationship { to, .. } => Some(to.0),
        Declared::Key { .. } => None,
    }));
    let outcome = plan::plan(engine, manifest, (&planned, &prepared.failed), None).await;
    let run_id = manifest.globals.invocation_id.clone();
    let mut audit = Audit {
        run_id: run_id.clone(),
        created_at: chrono::Utc::now().to_rfc3339(),
        tables: Vec::new(),
        masked: prepared.masking.is_some(),
        compared_to: None,
        diagnostics: outcome.diagnostics,
        file: None,
        page: None,
    };
    // A source that could not be read for its bytes or records (a row
    // error) is still audited, read as text with bad bytes replaced: what
    // stopped it is a finding of the audit, a warning.
    let unreadable = |i: &NodeId| {
        outcome.failures.get(i).is_some_and(|r| audit.diagnostics[r.clone()].iter().all(|d| d.code == Code::SourceRow))
    };
    let audited: Vec<NodeId> = manifest
        .order
        .iter()
        .copied()
        .filter(|i| wanted.contains(i) && (!outcome.failed.contains(i) || unreadable(i)))
        .collect();
    for i in audited {
        let node = &manifest[i];
        let failed = outcome.failed.contains(&i);
        // A CSV is read as text: the audit is of what the file holds. Bytes
        // that are no UTF-8 fail DataFusion's reader; the file is then read
        // again by ferry's, which replaces them, to count them.
        let mut text = sources::register_as_text(engine, manifest, node, failed).await;
        let mut table = text.as_ref().map_or_else(|| sources::table_of(node), |t| t.table.clone());
        if failed && text.is_none() {
            continue;
        }
        let mut profiled = profile(engine, &node.display_name(), table.clone(), outcome.schemas.get(&i)).await;
        if matches!(&profiled, Err(e) if sources::is_invalid_utf8(e))
            && text.as_ref().is_some_and(|t| !t.replacing)
            && let Some(again) = sources::register_as_text(engine, manifest, node, true).await
        {
            table = again.table.clone();
            text = Some(again);
            profiled = profile(engine, &node.display_name(), table.clone(), outcome.schemas.get(&i)).await;
        }
        if failed && profiled.is_ok() {
            for d in &mut audit.diagnostics[outcome.failures[&i].clone()] {
                d.severity = crate::diagnostic::Severity::Warning;
                d.message.push_str("; the audit read it as text instead, any bytes that are no text replaced");
            }
        }
        match profiled {
            Ok(mut p) => {
                if let Some(text) = text {
                    p.file = locate_examples(&mut p, &text, manifest.root.as_path()).await;
                    let check = tokio::task::block_in_place(|| {
                        TextCheck::of(&p, text.text.encoding, text.replacing, || text.bytes())
                    });
                    p.text = Some(check);
                }
                let checks = declared.iter().filter(|d| d.table() == i);
                if let Err(e) = table_checks(engine, manifest, (&table, &mut p), checks).await {
                    audit.diagnostics.push(
                        Diagnostic::warning(
                            Code::Execution,
                            format!(
                                "`{}`: a key or relationship check failed: {}",
                                node.display_name(),
                                sources::first_line(&e)
                            ),
                        )
                        .in_file(node.path()),
                    );
                }
                if prepared.masking.is_some() {
                    withhold_masked(node, &mut p);
                }
                audit.tables.push(p)
            }
            Err(e) => audit.diagnostics.push(
                Diagnostic::error(
                    Code::Execution,
                    format!("`{}` could not be read: {}", node.display_name(), sources::first_line(&e)),
                )
                .in_file(node.path()),
            ),
        }
    }
    if let Some(earlier) = compare_to {
        match earlier_audit(&prepared.layout, earlier, &run_id)? {
            Ok((id, doc)) => {
                let tables = crate::audit::compare::compare(&doc, &serde_json::to_value(&audit)?);
                let created_at = doc["created_at"].as_str().unwrap_or_default().to_owned();
                audit.compared_to = Some(Compared { run_id: id, created_at, tables });
            }
            Err(message) => audit.diagnostics.push(Diagnostic::error(Code::Selector, message)),
        }
    }
    let file = prepared.layout.audit(&run_id).join("audit.json");
    let json = serde_json::to_vec_pretty(&audit)?;
    crate::state::files::write_atomic(&file.path, &json, true)
        .with_context(|| format!("cannot write `{}`", file.shown))?;
    audit.file = Some(file);
    audit.page = Some(crate::report::write_audit(&prepared.layout, &manifest.project_name, &run_id)?);
    Ok(audit)
}

/// In a masked run, the values of `node`'s masked columns dropped from its
/// profile (the counts stay): the audit reads the file, in clear.
fn withhold_masked(node: &crate::manifest::Node, p: &mut TableProfile) {
    let columns = node.columns();
    let masked = |name: &str| columns.iter().any(|c| c.name == name && c.mask.is_some());
    for c in p.columns.iter_mut().filter(|c| masked(&c.name)) {
        c.withhold_values();
    }
    for k in p.declared_keys.iter_mut().filter(|k| k.columns.iter().any(|c| masked(c))) {
        k.examples.clear();
    }
    for r in p.relationships.iter_mut().filter(|r| masked(&r.column)) {
        r.examples.clear();
    }
}

/// One table's profile, its rows streamed.
async fn profile(
    engine: &Engine,
    name: &str,
    table: TableReference,
    declared: Option<&SchemaRef>,
) -> Result<TableProfile, datafusion::error::DataFusionError> {
    let plan = engine.plan(&format!("SELECT * FROM {}", table.to_quoted_string())).await?;
    let schema: SchemaRef = std::sync::Arc::new(plan.schema().as_arrow().clone());
    let declared = declared.unwrap_or(&schema);
    // Each partition (a byte range of a file) is read and profiled on a
    // task of its own; the profiles merge in partition order.
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for (partition, mut stream) in engine.execute_partitioned(plan).await?.into_iter().enumerate() {
        let mut profiler = TableProfiler::new(name, &schema, declared);
        let name = name.to_owned();
        tasks.push(tokio::spawn(async move {
            while let Some(batch) = stream.next().await {
                profiler.add(&batch?)?;
            }
            profiler.classify_pending();
            tracing::debug!(elapsed = ?started.elapsed(), "read and profiled partition {partition} of `{name}`");
            Ok::<_, datafusion::error::DataFusionError>(profiler)
        }));
    }
    let mut merged = TableProfiler::new(name, &schema, declared);
    for task in tasks {
        let profiler = task.await.map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))??;
        merged.merge(profiler);
    }
    tracing::debug!(elapsed = ?started.elapsed(), "read, profiled and merged `{name}`");
    let started = std::time::Instant::now();
    let profile = merged.finish();
    tracing::debug!(elapsed = ?started.elapsed(), "finished `{name}`'s profile");
    Ok(profile)
}

/// A check the project declares on a source or seed: a unique key (a
/// `unique` or `unique_combination_of_columns` test), or a relationship
/// (a `relationships` test) to another source or seed.
enum Declared {
    Key { table: NodeId, columns: Vec<String> },
    Relationship { table: NodeId, column: String, to: (NodeId, String) },
}

impl Declared {
    fn table(&self) -> NodeId {
        match self {
            Declared::Key { table, .. } | Declared::Relationship { table, .. } => *table,
        }
    }
}

/// The declared checks on the tables of `wanted`.
fn declared_checks(manifest: &Manifest, wanted: &BTreeSet<NodeId>) -> Vec<Declared> {
    let is_table = |i: NodeId| matches!(manifest[i].resource, Resource::Source(_) | Resource::Seed(_));
    let mut out = Vec::new();
    for (t, node) in manifest.iter() {
        let Resource::Test(Test { kind: TestKind::Generic { test_name, column, args, .. }, .. }) = &node.resource
        else {
            continue;
        };
        let Some(table) = manifest.attached_to(t).filter(|a| wanted.contains(a)) else { continue };
        let text = |k: &str| args.get(k).and_then(serde_json::Value::as_str).map(str::to_owned);
        match test_name.as_str() {
            "unique" => out.extend(column.clone().map(|c| Declared::Key { table, columns: vec![c] })),
            "unique_combination_of_columns" => {
                let columns: Vec<String> = args
                    .get("combination_of_columns")
                    .and_then(serde_json::Value::as_array)
                    .map(|a| a.iter().filter_map(|c| c.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                if !columns.is_empty() {
                    out.push(Declared::Key { table, columns });
                }
            }
            "relationships" => {
                let parent = manifest.graph.parents(t).iter().copied().find(|&p| p != table && is_table(p));
                if let (Some(column), Some(parent), Some(field)) = (column, parent, text("field")) {
                    out.push(Declared::Relationship { table, column: column.clone(), to: (parent, field) });
                }
            }
            _ => {}
        }
    }
    out
}

/// Finds the lines of a profile's examples in its file, when that is one
/// local CSV; the file as shown (relative to the project).
async fn locate_examples(p: &mut TableProfile, text: &sources::TextTable, root: &camino::Utf8Path) -> Option<String> {
    let [path] = text.file.local_files().try_into().ok()?;
    let shown = path.strip_prefix(root).unwrap_or(&path).to_string();
    if p.columns.iter().any(crate::audit::ColumnProfile::has_examples)
        && let Some(reader) = text.records(&path)
    {
        let mut columns = p.columns.clone();
        let located = tokio::task::spawn_blocking(move || crate::audit::locate(reader, &mut columns).map(|()| columns));
        if let Ok(Ok(columns)) = located.await {
            p.columns = columns;
        }
    }
    Some(shown)
}

/// Pairs of columns tried as a key where no column alone is one: at most
/// this many, those nearest the table's start first (keys lead).
const KEY_PAIRS_TRIED: usize = 3;

/// Runs the declared checks on `table`, and looks for a key pair.
async fn table_checks(
    engine: &Engine,
    manifest: &Manifest,
    (table, p): (&TableReference, &mut TableProfile),
    declared: impl Iterator<Item = &Declared>,
) -> Result<(), datafusion::error::DataFusionError> {
    let t = table.to_quoted_string();
    for pair in crate::audit::key_pairs_to_try(p, KEY_PAIRS_TRIED) {
        let [a, b] = pair.map(|c| quoted(&p.columns[c].name));
        let sql = format!("SELECT count(*) AS n FROM (SELECT {a}, {b} FROM {t} GROUP BY {a}, {b} HAVING count(*) > 1)");
        if count(engine, &sql).await? == 0 {
            p.candidate_key_pairs.push(pair.map(|c| p.columns[c].name.clone()));
        }
    }
    for d in declared {
        match d {
            Declared::Key { columns, .. } => {
                let cols: Vec<String> = columns.iter().map(|c| quoted(c)).collect();
                let (list, present) = (cols.join(", "), not_null(&cols));
                let key = format!(
                    "concat_ws(', ', {})",
                    cols.iter().map(|c| format!("CAST({c} AS VARCHAR)")).collect::<Vec<_>>().join(", ")
                );
                let groups = format!(
                    "SELECT {key} AS k, count(*) AS n FROM {t} WHERE {present} GROUP BY {list} HAVING count(*) > 1"
                );
                let totals = format!("SELECT count(*) AS a, coalesce(sum(n - 1), 0) AS b FROM ({groups})");
                let (duplicate_keys, duplicate_rows) = counts(engine, &totals).await?;
                let examples = top(engine, &format!("SELECT k, n FROM ({groups}) ORDER BY n DESC, k LIMIT 5")).await?;
                p.declared_keys.push(KeyCheck { columns: columns.clone(), duplicate_keys, duplicate_rows, examples });
            }
            Declared::Relationship { column, to: (parent, field), .. } => {
                let parent_table = match sources::text_table_of(&manifest[*parent]) {
                    Some(text) if engine.table_schema(text.clone()).await.is_some() => text,
                    _ => sources::table_of(&manifest[*parent]),
                };
                let (c, f) = (quoted(column), quoted(field));
                let orphans = format!(
                    "SELECT CAST({c} AS VARCHAR) AS v FROM {t} WHERE {c} IS NOT NULL AND trim(CAST({c} AS VARCHAR)) <> '' \
                     AND CAST({c} AS VARCHAR) NOT IN (SELECT CAST({f} AS VARCHAR) FROM {} WHERE {f} IS NOT NULL)",
                    parent_table.to_quoted_string()
                );
                let orphan_rows = count(engine, &format!("SELECT count(*) AS n FROM ({orphans})")).await?;
                let examples = top(
                    engine,
                    &format!("SELECT v, count(*) AS n FROM ({orphans}) GROUP BY v ORDER BY n DESC, v LIMIT 5"),
                )
                .await?;
                let to = format!("{}.{field}", manifest[*parent].display_name());
                p.relationships.push(Orphans { column: column.clone(), to, orphan_rows, examples });
            }
        }
    }
    Ok(())
}

fn quoted(column: &str) -> String {
    format!("\"{}\"", column.replace('"', "\"\""))
}

fn not_null(columns: &[String]) -> String {
    columns.iter().map(|c| format!("{c} IS NOT NULL")).collect::<Vec<_>>().join(" AND ")
}

/// A query's rows, each column as text.
async fn rows(engine: &Engine, sql: &str) -> Result<Vec<Vec<Option<String>>>, datafusion::error::DataFusionError> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::DataType;
    let mut stream = engine.execute(engine.plan(sql).await?).await?;
    let mut out = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let columns = batch
            .columns()
            .iter()
            .map(|c| datafusion::arrow::compute::cast(c, &DataType::Utf8))
            .collect::<Result<Vec<_>, _>>()?;
        for r in 0..batch.num_rows() {
            out.push(
                columns.iter().map(|c| (!c.is_null(r)).then(|| c.as_string::<i32>().value(r).to_owned())).collect(),
            );
        }
    }
    Ok(out)
}

fn number(cell: Option<&Option<String>>) -> u64 {
    cell.and_then(|c| c.as_deref()).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// A query's single count.
async fn count(engine: &Engine, sql: &str) -> Result<u64, datafusion::error::DataFusionError> {
    Ok(rows(engine, sql).await?.first().map_or(0, |r| number(r.first())))
}

/// A query's two counts.
async fn counts(engine: &Engine, sql: &str) -> Result<(u64, u64), datafusion::error::DataFusionError> {
    Ok(rows(engine, sql).await?.first().map_or((0, 0), |r| (number(r.first()), number(r.get(1)))))
}

/// A query's (value, count) rows.
async fn top(engine: &Engine, sql: &str) -> Result<Vec<(String, u64)>, datafusion::error::DataFusionError> {
    let rows = rows(engine, sql).await?;
    Ok(rows.iter().map(|r| (r.first().cloned().flatten().unwrap_or_default(), number(r.get(1)))).collect())
}

/// The audit `wanted` names (`last`: the newest before `current`; else an
/// id or the start of one) and its document; `Err` with words for the
/// user when there is none or more than one.
fn earlier_audit(
    layout: &crate::state::Layout,
    wanted: &str,
    current: &str,
) -> Result<Result<(String, serde_json::Value), String>> {
    let audits = layout.audits();
    let found: Vec<String> = audits.newest_holding("audit.json").into_iter().filter(|id| id != current).collect();
    let ids: Vec<&String> = match wanted {
        "last" => found.iter().take(1).collect(),
        prefix => found.iter().filter(|id| id.starts_with(prefix)).collect(),
    };
    let id = match ids.as_slice() {
        [one] => (*one).clone(),
        [] => return Ok(Err(format!("--compare-to: no earlier audit `{wanted}` under `{}/`", audits.shown))),
        _ => return Ok(Err(format!("--compare-to: `{wanted}` starts more than one audit id; give more of it"))),
    };
    let file = audits.join(&id).join("audit.json");
    let text = fs_err::read_to_string(&file.path)?;
    let doc = serde_json::from_str(&text).with_context(|| format!("`{}` is not an audit", file.shown))?;
    Ok(Ok((id, doc)))
}
