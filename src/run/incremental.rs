//! Incremental models, run as dbt runs them and kept in step with the
//! target.
//!
//! An incremental model's stage (`.ferry/stage/<model>/`) is its current
//! data: what its target table holds after the last run that loaded it.
//! Before anything is planned, [`resolve`] decides for each selected
//! incremental model whether this run is incremental (`is_incremental()`
//! true: it has a stage that checks, its target table exists when it is
//! loaded, and no full refresh is asked) and renders those models again
//! with `is_incremental()` true and `{{ this }}` naming the table of their
//! current data.
//!
//! Materializing one then stages the model's rows as the run's increment
//! (`.ferry/runs/<run>/increments/<model>/`) and merges current data and
//! increment, by the strategy, into the model's next version
//! (`.ferry/runs/<run>/next/<model>/`; with the stages in an object store,
//! the increment under the run's scratch there and the next version as a
//! version of the stage pending), which its readers read in this run.
//! A full build stages straight into the next version. The increment is
//! loaded with the strategy's mode, a full build replaces the table, and
//! the next version replaces the stage only once that load has committed
//! (at once when the model is not loaded): a failed or killed run leaves
//! stage and target as the previous run left them, and the next run does
//! its work again.

use std::collections::{BTreeSet, HashMap};

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::TableReference;

use super::Prepared;
use super::microbatch::Window;
use crate::backend::Connection;
use crate::backend::profiles::Target;
use crate::diagnostic::{Code, Diagnostic};
use crate::engine::{Engine, node as engine_node};
use crate::manifest::config::{Cursor, Incremental, OnSchemaChange, Strategy};
use crate::manifest::{Manifest, Materialization, NodeId, Resource};
use crate::stage::{self, StagedTable};
use crate::state::watermarks::{self, Watermark};
use crate::template::functions::quote_ident;
use crate::values::cells;

/// How an incremental model runs this time.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Built from its SQL alone, replacing its stage and table; why.
    Full(String),
    /// Its rows are an increment merged into this current data.
    Incremental(StagedTable),
}

/// One incremental model's run.
#[derive(Debug, Clone)]
pub struct IncrementalRun {
    pub settings: Incremental,
    pub mode: Mode,
    /// The kept high-water mark of its cursor, for an incremental run.
    pub watermark: Option<Watermark>,
    /// The batches a `microbatch` model builds.
    pub window: Option<Window>,
}

/// What a run did with a model's cursor.
#[derive(Debug, Clone, PartialEq)]
pub struct CursorRun {
    pub column: String,
    /// The value rows were read from (`None`: every row was read).
    pub from: Option<String>,
    /// The largest value in the model's data after the run, and its type.
    pub high: Option<(String, String)>,
}

/// What [`resolve`] decided.
#[derive(Default)]
pub struct Resolved {
    /// The manifest with the incremental models rendered again; `None`
    /// when no model runs incrementally.
    pub manifest: Option<Manifest>,
    pub runs: HashMap<NodeId, IncrementalRun>,
    /// Models that cannot run (a render that failed, a target that cannot
    /// be asked), with their diagnostics.
    pub failed: BTreeSet<NodeId>,
    pub diagnostics: Vec<Diagnostic>,
}

/// The table `{{ this }}` names in an incremental run: the model's current data.
pub fn current_table(model: &str) -> String {
    format!("{model}__ferry_current")
}

/// The table of this run's increment, which the merge reads.
fn increment_table(model: &str) -> String {
    format!("{model}__ferry_increment")
}

/// Decides how each incremental model of `wanted` runs; see the module
/// doc. `ask_target`: whether the target is asked if the table exists
/// (not when nothing is loaded).
pub async fn resolve(prepared: &Prepared, wanted: &BTreeSet<NodeId>, ask_target: bool) -> Resolved {
    let manifest = &prepared.manifest;
    let mut out = Resolved::default();
    let mut target: LazyTarget = None;
    for &i in wanted.iter().filter(|i| !prepared.failed.contains(i)) {
        let node = &manifest[i];
        let Resource::Model { materialized: Materialization::Incremental, .. } = &node.resource else { continue };
        let settings = match &node.config.incremental {
            Ok(Some(s)) => s.clone(),
            Ok(None) => continue,
            Err(d) => {
                out.fail(i, (**d).clone());
                continue;
            }
        };
        let refresh = if settings.full_refresh == Some(true) {
            Some("it is configured `full_refresh: true`".to_owned())
        } else if manifest.globals.full_refresh && settings.full_refresh != Some(false) {
            Some("--full-refresh".to_owned())
        } else {
            None
        };
        let mode = match refresh {
            Some(why) => Mode::Full(why),
            None => {
                let target = if ask_target { Some((&prepared.target, &mut target)) } else { None };
                match current_mode(node, &prepared.stages, prepared.masking.is_some(), target).await {
                    Ok(mode) => mode,
                    Err(d) => {
                        out.fail(i, d);
                        continue;
                    }
                }
            }
        };
        let watermark = match (&mode, &settings.cursor) {
            (Mode::Incremental(_), Some(c)) => {
                watermarks::read(&prepared.layout, &node.name).filter(|w| w.cursor == c.column)
            }
            _ => None,
        };
        let window = match &settings.microbatch {
            None => None,
            Some(m) => {
                let incremental = matches!(mode, Mode::Incremental(_));
                let now = manifest.globals.run_started_at.naive_utc();
                match Window::of_run(m, incremental, manifest.globals.event_time, now) {
                    Ok(w) => Some(w),
                    Err(why) => {
                        let message = format!("microbatch model `{}` has no batches to build: {why}", node.name);
                        out.fail(i, Diagnostic::error(Code::ModelConfig, message).in_file(node.path()));
                        continue;
                    }
                }
            }
        };
        out.runs.insert(i, IncrementalRun { settings, mode, watermark, window });
    }
    let incremental: Vec<NodeId> =
        out.runs.iter().filter(|(_, r)| matches!(r.mode, Mode::Incremental(_))).map(|(&i, _)| i).collect();
    if !incremental.is_empty() {
        let mut rendered = (**manifest).clone();
        for i in incremental {
            let name = rendered[i].name.clone();
            if let Err(d) = rendered.render_incremental(i, &current_table(&name)) {
                out.runs.remove(&i);
                out.fail(i, *d);
            }
        }
        out.manifest = Some(rendered);
    }
    out
}

/// The target's connection, opened on first need (or why it could not be).
type LazyTarget = Option<Result<Connection, Box<Diagnostic>>>;

/// How `node` runs when no full refresh is asked: incrementally over its
/// stage, unless it has none, a run masking otherwise than this one
/// (`masked`) made it, or (when `target` is given) its table is not in the
/// target. The target is connected once, on first need, into `target.1`.
async fn current_mode(
    node: &crate::manifest::Node,
    stages: &stage::Root,
    masked: bool,
    target: Option<(&Target, &mut LazyTarget)>,
) -> Result<Mode, Diagnostic> {
    let dir = stages.dir(&node.name);
    // A store that cannot be read says nothing of the stage: building the
    // model in full would replace its table.
    let manifest = match stage::existing(&dir).await {
        Ok(Some(manifest)) => manifest,
        Ok(None) => return Ok(Mode::Full("it has no stage yet".into())),
        Err(e) => {
            let message = format!("cannot tell whether incremental model `{}` has a stage: {e}", node.name);
            return Err(Diagnostic::error(Code::Execution, message).in_file(node.path()));
        }
    };
    // Its rows are what this run builds on: never clear ones in a masked
    // run, nor masked ones in a run in clear.
    if !manifest.readable(masked) {
        let how =
            if manifest.masked { "with masking, and this run is in clear" } else { "in clear, and this run masks" };
        return Ok(Mode::Full(format!("its stage was made {how}")));
    }
    let current = Mode::Incremental(StagedTable { dir, manifest });
    let (Some((target, conn)), Ok(Some(load))) = (target, &node.config.load) else { return Ok(current) };
    let conn = match conn.get_or_insert(crate::load::connect(target).await) {
        Ok(conn) => conn,
        Err(d) => return Err((**d).clone()),
    };
    match conn.table_columns(&load.table).await {
        Ok(Some(_)) => Ok(current),
        Ok(None) => Ok(Mode::Full(format!("its table `{}` is not in the target", load.table))),
        Err(e) => Err(e.to_diagnostic(&node.name)),
    }
}

impl Resolved {
    fn fail(&mut self, i: NodeId, d: Diagnostic) {
        self.failed.insert(i);
        self.diagnostics.push(d);
    }
}

/// Makes each incremental model's current data readable as the table its
/// `{{ this }}` names; a model whose stage cannot be read fails.
pub async fn register_current(engine: &Engine, manifest: &Manifest, resolved: &mut Resolved) {
    let mut unreadable = Vec::new();
    for (&i, run) in &resolved.runs {
        if let Mode::Incremental(current) = &run.mode {
            let node = &manifest[i];
            let table = TableReference::bare(current_table(&node.name));
            if let Err(e) = engine_node::register_staged(engine, table, current).await {
                unreadable.push((i, engine_node::internal(&e, node, Code::Execution)));
            }
        }
    }
    for (i, d) in unreadable {
        resolved.runs.remove(&i);
        resolved.fail(i, d);
    }
}

/// How the model's columns differ from its current data's, by canonical type.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SchemaChange {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Column, current type, new type.
    pub retyped: Vec<(String, DataType, DataType)>,
}

impl SchemaChange {
    pub fn between(current: &SchemaRef, planned: &SchemaRef) -> SchemaChange {
        // Types that hold the same values and load alike are one type here.
        let canonical = cells::value_type;
        let mut change = SchemaChange::default();
        for f in planned.fields() {
            match current.field_with_name(f.name()) {
                Err(_) => change.added.push(f.name().clone()),
                Ok(c) if canonical(c.data_type()) != canonical(f.data_type()) => {
                    change.retyped.push((f.name().clone(), c.data_type().clone(), f.data_type().clone()));
                }
                Ok(_) => {}
            }
        }
        change.removed = current
            .fields()
            .iter()
            .filter(|c| planned.field_with_name(c.name()).is_err())
            .map(|c| c.name().clone())
            .collect();
        change
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.retyped.is_empty()
    }

    /// One line per difference, for messages and the report.
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = self.added.iter().map(|c| format!("`{c}` is new")).collect();
        out.extend(self.removed.iter().map(|c| format!("`{c}` is gone")));
        out.extend(self.retyped.iter().map(|(c, from, to)| format!("`{c}` was {from}, now {to}")));
        out
    }
}

/// The model's SQL fitted to its current data's columns when they differ,
/// as `on_schema_change` says; `Err` when the run must stop.
pub fn fit_to_current(
    sql: &str,
    model: &str,
    settings: &Incremental,
    (current, planned): (&SchemaRef, &SchemaRef),
) -> Result<(String, SchemaChange), Box<Diagnostic>> {
    let change = SchemaChange::between(current, planned);
    if change.is_empty() {
        return Ok((sql.to_owned(), change));
    }
    let stop = |why: &str| {
        let mut d = Diagnostic::error(
            Code::ModelConfig,
            format!("the columns of `{model}` changed since its last run, and {why}"),
        );
        for line in change.describe() {
            d = d.with_note(line);
        }
        Box::new(d.with_help(
            "run it once with `--full-refresh` to rebuild it with the new columns, or set `on_schema_change: ignore`",
        ))
    };
    match settings.on_schema_change {
        OnSchemaChange::Fail => Err(stop("`on_schema_change` is `fail`")),
        OnSchemaChange::SyncAllColumns => {
            // The model's columns as they are now: kept ones in their
            // current order, then the new ones.
            let kept = current.fields().iter().filter(|c| planned.field_with_name(c.name()).is_ok());
            let columns: Vec<String> = kept
                .map(|c| c.name())
                .chain(change.added.iter())
                .map(|c| format!("__ferry_model.{}", quote_ident(c)))
                .collect();
            Ok((format!("SELECT {} FROM ({sql}) AS __ferry_model", columns.join(", ")), change))
        }
        OnSchemaChange::Ignore | OnSchemaChange::AppendNewColumns => {
            let mut columns: Vec<String> = current
                .fields()
                .iter()
                .map(|c| {
                    let name = quote_ident(c.name());
                    match planned.field_with_name(c.name()) {
                        Ok(p) if p.data_type() == c.data_type() => format!("__ferry_model.{name}"),
                        Ok(_) => format!("arrow_cast(__ferry_model.{name}, '{}') AS {name}", c.data_type()),
                        Err(_) => format!("arrow_cast(NULL, '{}') AS {name}", c.data_type()),
                    }
                })
                .collect();
            if settings.on_schema_change == OnSchemaChange::AppendNewColumns {
                columns.extend(change.added.iter().map(|c| format!("__ferry_model.{}", quote_ident(c))));
            }
            Ok((format!("SELECT {} FROM ({sql}) AS __ferry_model", columns.join(", ")), change))
        }
    }
}

/// The largest value of `column` in `table`, as text and Arrow type
/// (`None` when the table holds no value).
pub async fn cursor_max(
    engine: &Engine,
    table: &str,
    column: &str,
) -> Result<Option<(String, String)>, datafusion::error::DataFusionError> {
    use datafusion::arrow::array::{Array, AsArray};
    let (c, t) = (quote_ident(column), quote_ident(table));
    let sql = format!("SELECT CAST(max({c}) AS VARCHAR) AS v, arrow_typeof(max({c})) AS t FROM {t}");
    let stream = engine.execute(engine.plan(&sql).await?).await?;
    let batches: Vec<_> = futures::TryStreamExt::try_collect(stream).await?;
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else { return Ok(None) };
    let cast = |k: usize| datafusion::arrow::compute::cast(batch.column(k), &DataType::Utf8);
    let (v, t) = (cast(0)?, cast(1)?);
    let (v, t) = (v.as_string::<i32>(), t.as_string::<i32>());
    if v.is_null(0) {
        return Ok(None);
    }
    Ok(Some((v.value(0).to_owned(), t.value(0).to_owned())))
}

/// The model's SQL narrowed to the rows at or after the high-water mark
/// `(value, type)` less the cursor's lookback, and those whose cursor is
/// NULL (which its `null_cursor` rule quarantines unless it includes
/// them). `append` reads strictly after the mark, since rows read again
/// would be added again; the keyed strategies read the mark's own rows
/// again, since rows may arrive later with the same cursor value.
pub fn after_cursor(sql: &str, cursor: &Cursor, (value, data_type): (&str, &str), strategy: Strategy) -> String {
    let numeric = ["Int", "UInt", "Float", "Decimal"].iter().any(|p| data_type.starts_with(p));
    let mark = format!("arrow_cast('{}', '{}')", value.replace('\'', "''"), data_type.replace('\'', "''"));
    let bound = match &cursor.lookback {
        None => mark,
        Some(back) if numeric => format!("({mark} - {back})"),
        Some(back) => format!("({mark} - INTERVAL '{}')", back.replace('\'', "''")),
    };
    let op = if strategy == Strategy::Append && cursor.lookback.is_none() { ">" } else { ">=" };
    let c = format!("__ferry_cursor.{}", quote_ident(&cursor.column));
    format!("SELECT * FROM ({sql}) AS __ferry_cursor WHERE {c} {op} {bound} OR {c} IS NULL")
}

/// The predicate that tells a microbatch model's rows in `window`, over
/// `alias.column` of `data_type`: the bounds are literals of the column's
/// own type. `Err` when the column holds no dates or times, or holds dates
/// and the batches are hours.
pub fn in_window(alias: &str, column: &str, data_type: &DataType, window: &Window) -> Result<String, String> {
    let format = match data_type {
        DataType::Date32 | DataType::Date64 if window.batch_size == "hour" => {
            return Err(format!("its `event_time` column `{column}` holds dates, which `hour` batches cannot cut"));
        }
        DataType::Date32 | DataType::Date64 => "%Y-%m-%d",
        DataType::Timestamp(..) => "%Y-%m-%dT%H:%M:%S",
        other => {
            return Err(format!("its `event_time` column `{column}` is a {other}, not a date or a timestamp"));
        }
    };
    let bound = |t: &chrono::NaiveDateTime| {
        format!("arrow_cast('{}', '{}')", t.format(format), data_type.to_string().replace('\'', "''"))
    };
    let c = format!("{alias}.{}", quote_ident(column));
    Ok(format!("({c} >= {} AND {c} < {})", bound(&window.start), bound(&window.end)))
}

/// Registers the increment for the merge to read, and returns the query
/// of the model's next version: the current rows the increment does not
/// replace, then the increment. Without a key (or with `append`) every
/// current row stays.
/// A `microbatch` increment replaces the current rows of its window
/// (`window`: the predicate that tells them).
/// Columns the current data lacks (added by `append_new_columns`) are NULL
/// in its rows; those `retyped` (by `sync_all_columns`) are cast to the
/// increment's type.
pub async fn merged_sql(
    engine: &Engine,
    (model, current_schema, retyped): (&str, &SchemaRef, &[String]),
    increment: &StagedTable,
    (strategy, key, window): (Strategy, &[String], Option<&str>),
) -> Result<String, datafusion::error::DataFusionError> {
    let inc = increment_table(model);
    engine_node::register_staged(engine, TableReference::bare(inc.as_str()), increment).await?;
    let (current, inc) = (quote_ident(&current_table(model)), quote_ident(&inc));
    let columns: Vec<String> = increment.manifest.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let kept_columns: Vec<String> = increment
        .manifest
        .columns
        .iter()
        .map(|c| {
            let (name, data_type) = (quote_ident(&c.name), c.data_type.replace('\'', "''"));
            match current_schema.field_with_name(&c.name) {
                Ok(_) if retyped.contains(&c.name) => format!("arrow_cast({name}, '{data_type}') AS {name}"),
                Ok(_) => name,
                Err(_) => format!("arrow_cast(NULL, '{data_type}') AS {name}"),
            }
        })
        .collect();
    let (columns, kept_columns) = (columns.join(", "), kept_columns.join(", "));
    let kept = if let Some(window) = window {
        format!("SELECT {kept_columns} FROM {current} AS __ferry_batch WHERE NOT coalesce({window}, false)")
    } else if strategy == Strategy::Append || key.is_empty() {
        format!("SELECT {kept_columns} FROM {current}")
    } else {
        let matches: Vec<String> =
            key.iter().map(|k| quote_ident(k)).map(|k| format!("__ferry_new.{k} = __ferry_old.{k}")).collect();
        format!(
            "SELECT {kept_columns} FROM {current} AS __ferry_old WHERE NOT EXISTS \
             (SELECT 1 FROM {inc} AS __ferry_new WHERE {})",
            matches.join(" AND ")
        )
    };
    Ok(format!("{kept} UNION ALL SELECT {columns} FROM {inc}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

    use super::*;

    fn schema(cols: &[(&str, DataType)]) -> SchemaRef {
        Arc::new(Schema::new(cols.iter().map(|(n, t)| Field::new(*n, t.clone(), true)).collect::<Vec<_>>()))
    }

    fn settings(on_schema_change: OnSchemaChange) -> Incremental {
        Incremental { strategy: Strategy::Merge, full_refresh: None, on_schema_change, cursor: None, microbatch: None }
    }

    #[test]
    fn string_views_and_strings_are_the_same_column() {
        let current = schema(&[("id", DataType::Int64), ("name", DataType::Utf8View)]);
        let planned = schema(&[("name", DataType::Utf8), ("id", DataType::Int64)]);
        assert!(SchemaChange::between(&current, &planned).is_empty());
        let (sql, change) =
            fit_to_current("select 1", "m", &settings(OnSchemaChange::Fail), (&current, &planned)).unwrap();
        assert_eq!((sql.as_str(), change.is_empty()), ("select 1", true));
    }

    #[test]
    fn ignore_keeps_the_current_columns_append_adds_the_new_and_fail_lists_the_changes() {
        let current = schema(&[("id", DataType::Int64), ("gone", DataType::Utf8), ("amount", DataType::Int32)]);
        let planned = schema(&[("id", DataType::Int64), ("amount", DataType::Float64), ("new", DataType::Utf8)]);
        let change = SchemaChange::between(&current, &planned);
        assert_eq!(change.describe(), ["`new` is new", "`gone` is gone", "`amount` was Int32, now Float64"]);
        let (sql, _) =
            fit_to_current("select * from t", "m", &settings(OnSchemaChange::Ignore), (&current, &planned)).unwrap();
        assert_eq!(
            sql,
            "SELECT __ferry_model.\"id\", arrow_cast(NULL, 'Utf8') AS \"gone\", \
             arrow_cast(__ferry_model.\"amount\", 'Int32') AS \"amount\" FROM (select * from t) AS __ferry_model"
        );
        let (appended, _) =
            fit_to_current("select 1", "m", &settings(OnSchemaChange::AppendNewColumns), (&current, &planned)).unwrap();
        assert!(
            appended.ends_with("AS \"amount\", __ferry_model.\"new\" FROM (select 1) AS __ferry_model"),
            "{appended}"
        );
        let (synced, _) =
            fit_to_current("select 1", "m", &settings(OnSchemaChange::SyncAllColumns), (&current, &planned)).unwrap();
        assert_eq!(
            synced,
            "SELECT __ferry_model.\"id\", __ferry_model.\"amount\", __ferry_model.\"new\" FROM (select 1) AS __ferry_model"
        );
        let d = fit_to_current("select 1", "m", &settings(OnSchemaChange::Fail), (&current, &planned)).unwrap_err();
        assert!(d.message.contains("the columns of `m` changed since its last run"), "{}", d.message);
        assert_eq!(d.notes.len(), 3, "{d:?}");
    }

    #[test]
    fn the_cursor_filter_keeps_null_cursors_and_reads_the_mark_again_unless_appending() {
        let c = |lookback: Option<&str>| Cursor {
            column: "at".into(),
            lookback: lookback.map(str::to_owned),
            include_nulls: false,
        };
        let mark = ("2024-01-02T10:00:00", "Timestamp(µs)");
        assert_eq!(
            after_cursor("select 1", &c(Some("2 hours")), mark, Strategy::Merge),
            "SELECT * FROM (select 1) AS __ferry_cursor WHERE __ferry_cursor.\"at\" >= \
             (arrow_cast('2024-01-02T10:00:00', 'Timestamp(µs)') - INTERVAL '2 hours') OR __ferry_cursor.\"at\" IS NULL"
        );
        let appended = after_cursor("select 1", &c(None), mark, Strategy::Append);
        assert!(appended.contains("\"at\" > arrow_cast("), "{appended}");
        let numeric = after_cursor("select 1", &c(Some("100")), ("5000", "Int64"), Strategy::DeleteInsert);
        assert!(numeric.contains(">= (arrow_cast('5000', 'Int64') - 100)"), "{numeric}");
    }
}
