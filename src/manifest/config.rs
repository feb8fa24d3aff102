//! A node's config read once, when the manifest is built, into typed
//! settings ([`NodeConfig`]): how a model materializes, whether and how it
//! loads and reconciles, its rules, dedup and quarantine threshold, its
//! contract, and a test's severity and thresholds. Nothing outside this
//! module reads the config map.
//!
//! A setting that is wrong keeps its diagnostic, and the step that needs
//! the setting reports it when it runs (a bad `load:` fails the load, not
//! the model), as a setting read there would. Settings whose errors stop a
//! node from being built at all (materialization, rules, `dedupe`) fail the
//! node while the manifest is built.

use serde_json::{Map, Value as Json};

use super::rules::Rule;
use super::{Node, Resource};
use crate::backend::checksum::SideChoice;
use crate::diagnostic::{Code, Diagnostic};
use crate::project::config::column_list;
use crate::values::{LoadMode, TableName};

/// A setting read from config, or the diagnostic the step that uses it reports.
pub type Setting<T> = Result<T, Box<Diagnostic>>;

/// Everything ferry reads from a node's config.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub tags: Vec<String>,
    /// `unique_key`: the columns that name a record (empty when unset or
    /// unreadable; the load setting reports a bad one).
    pub unique_key: Vec<String>,
    /// `contract: {enforced: true}`.
    pub contract_enforced: bool,
    /// `load:` for table models and seeds (`None`: not loaded).
    pub load: Setting<Option<LoadConfig>>,
    pub reconcile: Setting<ReconcileConfig>,
    /// `quarantine: {error_if: ...}`, for a model with rules.
    pub quarantine: Setting<Option<Threshold>>,
    /// A model's row-level rules, compiled.
    pub rules: Vec<Rule>,
    pub dedupe: Option<Dedupe>,
    /// `on_conversion_error` of a `table` model, resolved: explicit, else
    /// `quarantine` when the model has rules, `dedupe` or a `quarantine`.
    pub on_conversion_error: OnConversionError,
    /// A test's severity, thresholds and options.
    pub test: Setting<TestConfig>,
    /// A seed's `column_types`: column and SQL type.
    pub column_types: Vec<(String, String)>,
    /// An incremental model's strategy and settings (`None` for every
    /// other node).
    pub incremental: Setting<Option<Incremental>>,
    /// A snapshot's strategy and settings (`None` for every other node).
    pub snapshot: Setting<Option<Snapshot>>,
    /// `change_detection:` of a `table` model (`None` for every other node).
    pub change_detection: Setting<Option<ChangeDetection>>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            tags: Vec::new(),
            unique_key: Vec::new(),
            contract_enforced: false,
            load: Ok(None),
            reconcile: Ok(ReconcileConfig::default()),
            quarantine: Ok(None),
            rules: Vec::new(),
            dedupe: None,
            on_conversion_error: OnConversionError::Fail,
            test: Ok(TestConfig::default()),
            column_types: Vec::new(),
            incremental: Ok(None),
            snapshot: Ok(None),
            change_detection: Ok(None),
        }
    }
}

impl NodeConfig {
    /// Reads `node`'s config (rules and `dedupe` are compiled apart, since
    /// their errors fail the node; see [`super::rules`]).
    pub fn read(node: &Node) -> NodeConfig {
        let config = &node.raw_config;
        let model_config = |message: String, help: Option<&str>| {
            let d = Diagnostic::error(Code::ModelConfig, message).in_file(node.path());
            Box::new(match help {
                Some(h) => d.with_help(h),
                None => d,
            })
        };
        let reconcile_help = "write `reconcile: {columns: [a, b], tolerance: 0.001, max_mismatch_rows: 0}`";
        if node.is_snapshot() {
            return Self::read_snapshot(node);
        }
        let change_detection = ChangeDetection::read(node);
        if let Ok(Some(cd)) = &change_detection
            && config.get("unique_key").is_none()
        {
            // Its key names its records in the target, as a `unique_key` does.
            let mut keyed = node.clone();
            keyed.raw_config.insert("unique_key".into(), Json::from(cd.key.clone()));
            return NodeConfig { change_detection, ..NodeConfig::read(&keyed) };
        }
        NodeConfig {
            change_detection,
            tags: tags(config),
            unique_key: config.get("unique_key").and_then(|v| column_list(v, "unique_key").ok()).unwrap_or_default(),
            contract_enforced: config
                .get("contract")
                .and_then(|c| c.get("enforced"))
                .and_then(Json::as_bool)
                .unwrap_or(false),
            load: LoadConfig::read(node),
            reconcile: ReconcileConfig::read(config.get("reconcile"))
                .map_err(|m| model_config(format!("{}: {m}", node.display_name()), Some(reconcile_help))),
            quarantine: Threshold::read(config).map_err(|m| model_config(format!("`{}`: {m}", node.name), None)),
            rules: Vec::new(),
            dedupe: None,
            on_conversion_error: OnConversionError::Fail,
            test: TestConfig::read(config)
                .map_err(|m| model_config(format!("test `{}` has an invalid config: {m}", node.name), None)),
            column_types: column_types(config),
            incremental: Incremental::read(node),
            snapshot: Ok(None),
        }
    }

    /// A snapshot's config: its rows are keyed by `dbt_scd_id` (loaded by
    /// upsert on it), its history is merged as an incremental model's
    /// current data is, never refreshed in full, and new source columns are
    /// added.
    fn read_snapshot(node: &Node) -> NodeConfig {
        let snapshot = Snapshot::read(node);
        let scd_id = snapshot.as_ref().map(|s| s.names.scd_id.clone()).unwrap_or_else(|_| "dbt_scd_id".to_owned());
        let mut read = NodeConfig { tags: tags(&node.raw_config), ..NodeConfig::default() };
        read.unique_key = vec![scd_id.clone()];
        read.incremental = Ok(Some(Incremental {
            strategy: Strategy::Merge,
            full_refresh: Some(false),
            on_schema_change: OnSchemaChange::AppendNewColumns,
            cursor: snapshot.as_ref().ok().and_then(|s| s.cursor.clone()),
            microbatch: None,
        }));
        let mut keyed = node.clone();
        keyed.raw_config.insert("unique_key".into(), Json::String(scd_id));
        read.load = LoadConfig::read(&keyed);
        read.reconcile = ReconcileConfig::read(node.raw_config.get("reconcile")).map_err(|m| {
            Box::new(Diagnostic::error(Code::ModelConfig, format!("{}: {m}", node.display_name())).in_file(node.path()))
        });
        read.snapshot = snapshot.map(Some);
        read
    }

    /// The columns that name a record in the error log: the dedup key,
    /// else `unique_key`; empty means every column.
    pub fn record_key(&self) -> Vec<String> {
        match &self.dedupe {
            Some(d) => d.key.clone(),
            None => self.unique_key.clone(),
        }
    }
}

/// What a conversion in a model's SQL that fails on a row does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConversionError {
    /// The model fails, as the query does.
    Fail,
    /// The row is quarantined as breaking the `conversion` rule.
    Quarantine,
}

impl OnConversionError {
    /// Reads `on_conversion_error:`; `None` when unset.
    pub(super) fn read(config: &Map<String, Json>) -> Result<Option<Self>, String> {
        match config.get("on_conversion_error") {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) if s == "quarantine" => Ok(Some(OnConversionError::Quarantine)),
            Some(Json::String(s)) if s == "fail" => Ok(Some(OnConversionError::Fail)),
            Some(other) => Err(format!("`on_conversion_error` is `quarantine` or `fail`, not `{other}`")),
        }
    }

    /// Whether `config` has a `quarantine:` (or `error_if:`) setting.
    pub(super) fn has_quarantine(config: &Map<String, Json>) -> bool {
        config.contains_key("quarantine") || config.contains_key("error_if")
    }
}

fn tags(config: &Map<String, Json>) -> Vec<String> {
    match config.get("tags") {
        Some(Json::Array(items)) => items.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect(),
        Some(Json::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn column_types(config: &Map<String, Json>) -> Vec<(String, String)> {
    let Some(Json::Object(map)) = config.get("column_types") else { return Vec::new() };
    map.iter().filter_map(|(col, ty)| Some((col.clone(), ty.as_str()?.to_owned()))).collect()
}

/// Whether a raw config leaves the node enabled (`enabled: false` drops it).
pub(super) fn enabled(config: &Map<String, Json>) -> bool {
    config.get("enabled").and_then(Json::as_bool).unwrap_or(true)
}

/// A raw config's `schema` and `alias`, which the relation `ref()` renders
/// to are made of.
pub(super) fn schema_and_alias(config: &Map<String, Json>) -> (Option<&str>, Option<&str>) {
    (config.get("schema").and_then(Json::as_str), config.get("alias").and_then(Json::as_str))
}

/// A test's `where`: the filter dbt narrows its relation with.
pub(super) fn test_where(config: &Map<String, Json>) -> Option<&str> {
    config.get("where").and_then(Json::as_str).map(str::trim).filter(|w| !w.is_empty())
}

/// A model's `materialized`, unparsed.
pub(super) fn materialized(config: &Map<String, Json>) -> &str {
    config.get("materialized").and_then(Json::as_str).unwrap_or("view")
}

/// How an incremental model's new rows join its current data, in the
/// stage and in the target (dbt's `incremental_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Add the new rows.
    Append,
    /// Update the rows whose `unique_key` is staged, insert the rest.
    Merge,
    /// Delete the rows whose `unique_key` is staged, then insert the new rows.
    DeleteInsert,
    /// Replace the rows of a window of time batches by the model's rows
    /// in that window (see [`Microbatch`]).
    Microbatch,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Append => "append",
            Strategy::Merge => "merge",
            Strategy::DeleteInsert => "delete+insert",
            Strategy::Microbatch => "microbatch",
        }
    }

    /// The load mode that applies an increment to the target table.
    pub fn load_mode(self) -> LoadMode {
        match self {
            Strategy::Append => LoadMode::Append,
            Strategy::Merge => LoadMode::Upsert,
            Strategy::DeleteInsert => LoadMode::DeleteInsert,
            // The window's rows are deleted first (see `LoadJob::window`).
            Strategy::Microbatch => LoadMode::Append,
        }
    }
}

/// What an incremental run does when the model's columns differ from its
/// current data's (dbt's `on_schema_change`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSchemaChange {
    /// Keep the current columns: new columns are left out, missing ones are NULL.
    Ignore,
    /// Stop before anything is staged or loaded.
    Fail,
    /// Add the new columns (NULL in earlier rows); keep the missing ones.
    AppendNewColumns,
    /// Take the new columns and types, drop the missing ones.
    SyncAllColumns,
}

impl OnSchemaChange {
    pub fn name(self) -> &'static str {
        match self {
            OnSchemaChange::Ignore => "ignore",
            OnSchemaChange::Fail => "fail",
            OnSchemaChange::AppendNewColumns => "append_new_columns",
            OnSchemaChange::SyncAllColumns => "sync_all_columns",
        }
    }
}

/// An incremental model's settings, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Incremental {
    pub strategy: Strategy,
    /// `full_refresh:` (`Some(false)`: stay incremental under `--full-refresh`).
    pub full_refresh: Option<bool>,
    pub on_schema_change: OnSchemaChange,
    /// `cursor:`, the column whose high-water mark ferry keeps.
    pub cursor: Option<Cursor>,
    /// The settings of `incremental_strategy: microbatch`.
    pub microbatch: Option<Microbatch>,
}

/// A `microbatch` model's settings (dbt 1.9): its rows are cut into
/// batches of time by `event_time`, and a run replaces the batches of its
/// window (the `lookback` batches before the current one, and the current
/// one; from `begin` on a first run or a full refresh; or those between
/// `--event-time-start` and `--event-time-end`), all in UTC.
#[derive(Debug, Clone, PartialEq)]
pub struct Microbatch {
    /// The column of the model's rows that says which batch a row is in.
    pub event_time: String,
    /// Where a first run (or a full refresh) starts.
    pub begin: Option<chrono::NaiveDateTime>,
    pub batch_size: BatchSize,
    /// How many batches before the current one an incremental run
    /// builds again (1 unless set).
    pub lookback: u32,
}

/// The length of a microbatch model's batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    Hour,
    Day,
    Month,
    Year,
}

impl BatchSize {
    pub fn name(self) -> &'static str {
        match self {
            BatchSize::Hour => "hour",
            BatchSize::Day => "day",
            BatchSize::Month => "month",
            BatchSize::Year => "year",
        }
    }
}

/// A declared cursor: `cursor: updated_at`, `lookback: '2 hours'`,
/// `null_cursor: quarantine | include`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    pub column: String,
    /// How far before the high-water mark an incremental run reads again:
    /// an interval (`2 hours`) for a date or time cursor, a number for a
    /// numeric one.
    pub lookback: Option<String>,
    /// Rows whose cursor is NULL: taken on every run (`include`), or
    /// quarantined (the default).
    pub include_nulls: bool,
}

impl Incremental {
    /// Reads `incremental_strategy`, `full_refresh` and `on_schema_change`
    /// of an incremental model. Without a `unique_key`, the default strategy
    /// is `append`, with one `delete+insert` (dbt-postgres's defaults), and
    /// `merge` or `delete+insert` without a key append, as in dbt.
    fn read(node: &Node) -> Setting<Option<Incremental>> {
        let Resource::Model { materialized: super::Materialization::Incremental, .. } = &node.resource else {
            return Ok(None);
        };
        let config = &node.raw_config;
        let bad = |msg: String, help: &str| {
            Box::new(
                Diagnostic::error(Code::ModelConfig, format!("`{}`: {msg}", node.name))
                    .in_file(node.path())
                    .with_help(help.to_owned()),
            )
        };
        let keyed = config.get("unique_key").is_some_and(|v| column_list(v, "unique_key").is_ok_and(|k| !k.is_empty()));
        let strategy = match config.get("incremental_strategy") {
            None | Some(Json::Null) => None,
            Some(Json::String(s)) => Some(s.to_ascii_lowercase()),
            Some(other) => {
                return Err(bad(format!("`incremental_strategy` must be a name, not `{other}`"), STRATEGY_HELP));
            }
        };
        let strategy = match strategy.as_deref() {
            None | Some("default") => {
                if keyed {
                    Strategy::DeleteInsert
                } else {
                    Strategy::Append
                }
            }
            Some("append") => Strategy::Append,
            Some("merge") if keyed => Strategy::Merge,
            Some("delete+insert" | "delete_insert") if keyed => Strategy::DeleteInsert,
            Some("merge" | "delete+insert" | "delete_insert") => Strategy::Append,
            Some("microbatch") => Strategy::Microbatch,
            Some("insert_overwrite") => {
                return Err(bad(
                    "incremental strategy `insert_overwrite` replaces partitions, and no target ferry loads has them"
                        .into(),
                    "use `microbatch` (with `event_time` and `batch_size`) to replace windows of time, or `merge` or `delete+insert` with a `unique_key`",
                ));
            }
            Some(s) => return Err(bad(format!("unknown incremental strategy `{s}`"), STRATEGY_HELP)),
        };
        let full_refresh = match config.get("full_refresh") {
            None | Some(Json::Null) => None,
            Some(Json::Bool(b)) => Some(*b),
            Some(other) => {
                return Err(bad(
                    format!("`full_refresh` must be true or false, not `{other}`"),
                    "write `full_refresh: false`",
                ));
            }
        };
        let on_schema_change = match config.get("on_schema_change").and_then(Json::as_str) {
            None | Some("ignore") => OnSchemaChange::Ignore,
            Some("fail") => OnSchemaChange::Fail,
            Some("append_new_columns") => OnSchemaChange::AppendNewColumns,
            Some("sync_all_columns") => OnSchemaChange::SyncAllColumns,
            Some(other) => {
                return Err(bad(
                    format!("unknown `on_schema_change: {other}`"),
                    "it is one of `ignore`, `fail`, `append_new_columns`, `sync_all_columns`",
                ));
            }
        };
        let text = |key: &str| match config.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
            Some(Json::Number(n)) if key == "lookback" => Ok(Some(n.to_string())),
            Some(other) => Err(bad(format!("`{key}` must be a name, not `{other}`"), CURSOR_HELP)),
        };
        if strategy == Strategy::Microbatch {
            if let Some(key) = ["cursor", "null_cursor"].into_iter().find(|k| config.contains_key(*k)) {
                return Err(bad(
                    format!("a `microbatch` model has no `{key}`: it replaces windows of time by its `event_time`"),
                    MICROBATCH_HELP,
                ));
            }
            let microbatch = Microbatch::read(config).map_err(|m| bad(m, MICROBATCH_HELP))?;
            return Ok(Some(Incremental {
                strategy,
                full_refresh,
                on_schema_change,
                cursor: None,
                microbatch: Some(microbatch),
            }));
        }
        let cursor = match text("cursor")? {
            None => {
                if let Some(key) = ["lookback", "null_cursor"].into_iter().find(|k| config.contains_key(*k)) {
                    return Err(bad(format!("`{key}` needs a `cursor`"), CURSOR_HELP));
                }
                None
            }
            Some(column) => {
                let include_nulls = match text("null_cursor")?.as_deref() {
                    None | Some("quarantine") => false,
                    Some("include") => true,
                    Some(other) => {
                        return Err(bad(
                            format!("`null_cursor` is `quarantine` or `include`, not `{other}`"),
                            CURSOR_HELP,
                        ));
                    }
                };
                Some(Cursor { column, lookback: text("lookback")?, include_nulls })
            }
        };
        Ok(Some(Incremental { strategy, full_refresh, on_schema_change, cursor, microbatch: None }))
    }
}

impl Microbatch {
    fn read(config: &Map<String, Json>) -> Result<Microbatch, String> {
        let text = |key: &str| match config.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
            Some(other) => Err(format!("`{key}` must be text, not `{other}`")),
        };
        let event_time = text("event_time")?.ok_or("a `microbatch` model needs `event_time`")?;
        let batch_size = match text("batch_size")?.map(|s| s.to_ascii_lowercase()).as_deref() {
            Some("hour") => BatchSize::Hour,
            Some("day") => BatchSize::Day,
            Some("month") => BatchSize::Month,
            Some("year") => BatchSize::Year,
            Some(other) => return Err(format!("`batch_size` is `hour`, `day`, `month` or `year`, not `{other}`")),
            None => return Err("a `microbatch` model needs `batch_size`".into()),
        };
        let begin = match text("begin")? {
            None => None,
            Some(b) => Some(crate::values::parse_utc(&b).ok_or_else(|| format!("`begin: {b}` is not a date or time"))?),
        };
        let lookback = match config.get("lookback") {
            None | Some(Json::Null) => 1,
            Some(Json::Number(n)) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("`lookback` is a number of batches, not `{n}`"))?,
            Some(other) => return Err(format!("`lookback` is a number of batches, not `{other}`")),
        };
        Ok(Microbatch { event_time, begin, batch_size, lookback })
    }
}

/// `change_detection:` of a `table` model whose SQL reads a full extract
/// each run: ferry keeps each record's row hash from the last run that
/// loaded and reconciled, and stages and loads only the records that are
/// new or changed, applying deletes as `deletes` says.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeDetection {
    /// The columns that name a record.
    pub key: Vec<String>,
    /// The columns whose values are compared (`None`: all but the key).
    pub columns: Option<Vec<String>>,
    pub deletes: Deletes,
}

/// What change detection does with a record gone from the extract.
#[derive(Debug, Clone, PartialEq)]
pub enum Deletes {
    /// Deleted from the target.
    Hard,
    /// Kept in the target with `flag` set true and `at` set to the run's
    /// time; staged rows carry `flag` false and `at` NULL.
    Soft { flag: String, at: String },
    /// Left in the target as it is.
    Ignore,
}

const CHANGE_HELP: &str = "write `change_detection: {strategy: hash, key: [id], columns: [a, b], deletes: hard}` (`deletes`: hard, soft or ignore; soft names its columns with `deleted_flag` and `deleted_at`)";

impl ChangeDetection {
    fn read(node: &Node) -> Setting<Option<ChangeDetection>> {
        let Some(value) = node.raw_config.get("change_detection").filter(|v| !v.is_null()) else { return Ok(None) };
        let bad = |msg: String| {
            Box::new(
                Diagnostic::error(Code::ModelConfig, format!("`{}`: {msg}", node.name))
                    .in_file(node.path())
                    .with_help(CHANGE_HELP),
            )
        };
        if !matches!(&node.resource, Resource::Model { materialized: super::Materialization::Table, .. }) {
            return Err(bad("`change_detection` needs `materialized: table`: its rows are a full extract".into()));
        }
        let Json::Object(m) = value else {
            return Err(bad(format!("`change_detection` must be a mapping, not `{value}`")));
        };
        let known = ["strategy", "key", "columns", "deletes", "deleted_flag", "deleted_at"];
        if let Some(k) = m.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(bad(format!("unknown `change_detection` key `{k}`")));
        }
        let text = |k: &str, default: &str| match m.get(k) {
            None | Some(Json::Null) => Ok(default.to_owned()),
            Some(Json::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
            Some(other) => Err(bad(format!("`change_detection.{k}` must be a name, not `{other}`"))),
        };
        let strategy = text("strategy", "hash")?;
        if strategy != "hash" {
            return Err(bad(format!("unknown change detection strategy `{strategy}`; ferry has `hash`")));
        }
        let key = match m.get("key") {
            Some(v) => column_list(v, "change_detection.key").map_err(bad)?,
            None => node
                .raw_config
                .get("unique_key")
                .map(|v| column_list(v, "unique_key"))
                .transpose()
                .map_err(bad)?
                .unwrap_or_default(),
        };
        if key.is_empty() {
            return Err(bad("`change_detection` needs a `key`: the columns that name a record".into()));
        }
        let columns = match m.get("columns") {
            None | Some(Json::Null) => None,
            Some(v) => Some(column_list(v, "change_detection.columns").map_err(bad)?),
        };
        let deletes = match text("deletes", "hard")?.to_ascii_lowercase().as_str() {
            "hard" => Deletes::Hard,
            "ignore" => Deletes::Ignore,
            "soft" => Deletes::Soft {
                flag: text("deleted_flag", "_ferry_deleted")?,
                at: text("deleted_at", "_ferry_deleted_at")?,
            },
            other => {
                return Err(bad(format!("`change_detection.deletes` must be hard, soft or ignore, not `{other}`")));
            }
        };
        if let Some(mode) = node.raw_config.get("load").and_then(|l| l.get("mode")) {
            return Err(bad(format!(
                "`load.mode: {mode}` cannot be set with `change_detection`: changed records are upserted, and a first run replaces the table"
            )));
        }
        Ok(Some(ChangeDetection { key, columns, deletes }))
    }
}

/// A snapshot's settings, resolved (dbt 1.9).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The columns that name a record of the source (`unique_key`).
    pub key: Vec<String>,
    pub strategy: SnapshotStrategy,
    pub hard_deletes: HardDeletes,
    /// `dbt_valid_to_current`: a SQL expression for the `dbt_valid_to` of
    /// current rows (`None`: NULL).
    pub valid_to_current: Option<String>,
    pub names: MetaColumns,
    /// `cursor:` (with `lookback:`), a ferry extension: a later run reads
    /// only the query's rows at or after the cursor's high-water mark less
    /// the lookback (and those whose cursor is NULL), instead of all of
    /// them as dbt does. Only with `hard_deletes: ignore`, since a record
    /// missing from such a read is not gone.
    pub cursor: Option<Cursor>,
}

/// How a snapshot tells that a record changed.
#[derive(Debug, Clone, PartialEq)]
pub enum SnapshotStrategy {
    /// `strategy: timestamp`: its `updated_at` column is newer.
    Timestamp { updated_at: String },
    /// `strategy: check`: one of `check_cols` differs (`None`: `all`).
    Check { columns: Option<Vec<String>> },
}

/// What a snapshot does with a record gone from its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HardDeletes {
    Ignore,
    /// Its current version is closed.
    Invalidate,
    /// Closed, and a version marked deleted is added.
    NewRecord,
}

/// The names of a snapshot's meta columns (`snapshot_meta_column_names`).
#[derive(Debug, Clone, PartialEq)]
pub struct MetaColumns {
    pub scd_id: String,
    pub updated_at: String,
    pub valid_from: String,
    pub valid_to: String,
    pub is_deleted: String,
}

impl MetaColumns {
    /// The meta columns a snapshot adds, in order.
    pub fn all(&self, hard_deletes: HardDeletes) -> Vec<&str> {
        let mut out = vec![&*self.scd_id, &*self.updated_at, &*self.valid_from, &*self.valid_to];
        if hard_deletes == HardDeletes::NewRecord {
            out.push(&self.is_deleted);
        }
        out
    }
}

const SNAPSHOT_HELP: &str = "write `strategy: timestamp` with `updated_at: <column>`, or `strategy: check` with `check_cols: [a, b]` (or `all`), and `unique_key: <column>`";

impl Snapshot {
    fn read(node: &Node) -> Setting<Snapshot> {
        let config = &node.raw_config;
        let bad = |msg: String, help: &str| {
            Box::new(
                Diagnostic::error(Code::ModelConfig, format!("snapshot `{}`: {msg}", node.name))
                    .in_file(node.path())
                    .with_help(help.to_owned()),
            )
        };
        let text = |key: &str| match config.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
            Some(other) => Err(bad(format!("`{key}` must be text, not `{other}`"), SNAPSHOT_HELP)),
        };
        let key = match config.get("unique_key") {
            None | Some(Json::Null) => return Err(bad("it has no `unique_key`".into(), SNAPSHOT_HELP)),
            Some(v) => column_list(v, "unique_key").map_err(|m| bad(m, SNAPSHOT_HELP))?,
        };
        if key.is_empty() {
            return Err(bad("its `unique_key` names no column".into(), SNAPSHOT_HELP));
        }
        let strategy = match text("strategy")?.map(|s| s.to_ascii_lowercase()).as_deref() {
            Some("timestamp") => match text("updated_at")? {
                Some(updated_at) => SnapshotStrategy::Timestamp { updated_at },
                None => return Err(bad("strategy `timestamp` needs `updated_at`".into(), SNAPSHOT_HELP)),
            },
            Some("check") => match config.get("check_cols") {
                Some(Json::String(s)) if s.eq_ignore_ascii_case("all") => SnapshotStrategy::Check { columns: None },
                None | Some(Json::Null) => {
                    return Err(bad("strategy `check` needs `check_cols`".into(), SNAPSHOT_HELP));
                }
                Some(v) => SnapshotStrategy::Check {
                    columns: Some(column_list(v, "check_cols").map_err(|m| bad(m, SNAPSHOT_HELP))?),
                },
            },
            None => return Err(bad("it has no `strategy`".into(), SNAPSHOT_HELP)),
            Some(other) => return Err(bad(format!("unknown snapshot strategy `{other}`"), SNAPSHOT_HELP)),
        };
        let deletes_help = "write `hard_deletes: ignore`, `invalidate` or `new_record`";
        let hard_deletes = match text("hard_deletes")?.as_deref() {
            Some("ignore") => HardDeletes::Ignore,
            Some("invalidate") => HardDeletes::Invalidate,
            Some("new_record") => HardDeletes::NewRecord,
            Some(other) => return Err(bad(format!("unknown `hard_deletes: {other}`"), deletes_help)),
            None => match config.get("invalidate_hard_deletes") {
                Some(Json::Bool(true)) => HardDeletes::Invalidate,
                None | Some(Json::Null | Json::Bool(false)) => HardDeletes::Ignore,
                Some(other) => {
                    return Err(bad(
                        format!("`invalidate_hard_deletes` must be true or false, not `{other}`"),
                        deletes_help,
                    ));
                }
            },
        };
        let mut names = MetaColumns {
            scd_id: "dbt_scd_id".into(),
            updated_at: "dbt_updated_at".into(),
            valid_from: "dbt_valid_from".into(),
            valid_to: "dbt_valid_to".into(),
            is_deleted: "dbt_is_deleted".into(),
        };
        let names_help = "write `snapshot_meta_column_names: {dbt_valid_from: start_date, dbt_valid_to: end_date}`";
        match config.get("snapshot_meta_column_names") {
            None | Some(Json::Null) => {}
            Some(Json::Object(m)) => {
                for (k, v) in m {
                    let slot = match k.as_str() {
                        "dbt_scd_id" => &mut names.scd_id,
                        "dbt_updated_at" => &mut names.updated_at,
                        "dbt_valid_from" => &mut names.valid_from,
                        "dbt_valid_to" => &mut names.valid_to,
                        "dbt_is_deleted" => &mut names.is_deleted,
                        other => return Err(bad(format!("unknown meta column `{other}`"), names_help)),
                    };
                    match v.as_str() {
                        Some(s) if !s.trim().is_empty() => *slot = s.trim().to_owned(),
                        _ => return Err(bad(format!("the name for `{k}` must be text, not `{v}`"), names_help)),
                    }
                }
            }
            Some(other) => {
                return Err(bad(format!("`snapshot_meta_column_names` must be a mapping, not `{other}`"), names_help));
            }
        }
        let cursor = match text("cursor")? {
            None if config.contains_key("lookback") => {
                return Err(bad("`lookback` needs a `cursor`".into(), SNAPSHOT_CURSOR_HELP));
            }
            None => None,
            Some(_) if hard_deletes != HardDeletes::Ignore => {
                return Err(bad(
                    "a `cursor` reads only the rows changed since the last run, so records gone from the source cannot be told; it needs `hard_deletes: ignore`".into(),
                    "drop the `cursor` to read every row on each run, or set `hard_deletes: ignore`",
                ));
            }
            Some(_) if config.contains_key("null_cursor") => {
                return Err(bad(
                    "`null_cursor` is not a snapshot setting: rows whose cursor is NULL are read on every run".into(),
                    SNAPSHOT_CURSOR_HELP,
                ));
            }
            Some(column) => {
                let lookback = match config.get("lookback") {
                    None | Some(Json::Null) => None,
                    Some(Json::Number(n)) => Some(n.to_string()),
                    Some(_) => text("lookback")?,
                };
                Some(Cursor { column, lookback, include_nulls: true })
            }
        };
        let valid_to_current = text("dbt_valid_to_current")?;
        Ok(Snapshot { key, strategy, hard_deletes, valid_to_current, names, cursor })
    }
}

const SNAPSHOT_CURSOR_HELP: &str = "write `cursor: updated_at`, with `lookback: '2 hours'` if wanted";
const CURSOR_HELP: &str = "write `cursor: updated_at`, with `lookback: '2 hours'` and `null_cursor: include` if wanted";
const STRATEGY_HELP: &str = "write `incremental_strategy: merge` (or `append`, `delete+insert`, `microbatch`)";
const MICROBATCH_HELP: &str = "write `incremental_strategy: microbatch` with `event_time: <column>`, `batch_size: day` (or `hour`, `month`, `year`), `begin: '2024-01-01'` and, if wanted, `lookback: 2`";

/// A model's `load` config, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadConfig {
    pub table: TableName,
    pub mode: LoadMode,
    pub unique_key: Vec<String>,
}

impl LoadConfig {
    /// Reads a model's or seed's `load` config (`load: false`, or
    /// `load: {table, schema, mode, unique_key}`), falling back to dbt's
    /// `alias`, `schema` and `unique_key`. `Ok(None)`: not loaded.
    fn read(node: &Node) -> Setting<Option<LoadConfig>> {
        let loads = match &node.resource {
            Resource::Model { materialized, .. } => {
                matches!(materialized, super::Materialization::Table | super::Materialization::Incremental)
            }
            Resource::Seed(_) => true,
            _ => false,
        };
        if !loads {
            return Ok(None);
        }
        let bad = |msg: String| {
            Box::new(
                Diagnostic::error(Code::ModelConfig, format!("{}: {msg}", node.display_name()))
                    .in_file(node.path())
                    .with_help(
                        "write `load: false`, or `load: {table: t, schema: s, mode: replace, unique_key: [id]}`",
                    ),
            )
        };
        let config = &node.raw_config;
        let load = match config.get("load") {
            None | Some(Json::Null) | Some(Json::Bool(true)) => Map::new(),
            Some(Json::Bool(false)) => return Ok(None),
            Some(Json::Object(m)) => {
                if m.get("enabled").and_then(Json::as_bool) == Some(false) {
                    return Ok(None);
                }
                if let Some(k) =
                    m.keys().find(|k| !["table", "schema", "mode", "unique_key", "enabled"].contains(&k.as_str()))
                {
                    return Err(bad(format!("unknown `load` key `{k}`")));
                }
                m.clone()
            }
            Some(other) => return Err(bad(format!("`load` must be `false` or a mapping, not `{other}`"))),
        };
        let text = |k: &str| -> Setting<Option<String>> {
            match load.get(k) {
                None | Some(Json::Null) => Ok(None),
                Some(Json::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
                Some(other) => Err(bad(format!("`load.{k}` must be a name, not `{other}`"))),
            }
        };
        let relation = node.relation.as_deref();
        let name =
            text("table")?.or_else(|| relation.map(|r| r.identifier.clone())).unwrap_or_else(|| node.name.clone());
        let schema = match text("schema")? {
            Some(s) => s,
            None => relation.map(|r| r.schema.clone()).unwrap_or_default(),
        };
        let incremental =
            matches!(node.resource, Resource::Model { materialized: super::Materialization::Incremental, .. });
        let mode = match text("mode")? {
            None => LoadMode::Replace,
            // Its strategy says how each run's rows go in; its current data
            // as a whole replaces the table.
            Some(m) if incremental => {
                return Err(bad(format!(
                    "`load.mode: {m}` cannot be set on an incremental model: its `incremental_strategy` says how new rows are loaded"
                )));
            }
            Some(m) => LoadMode::parse(&m)
                .ok_or_else(|| bad(format!("unknown load mode `{m}`; the modes are {}", LoadMode::NAMES.join(", "))))?,
        };
        let unique_key = match load.get("unique_key").or_else(|| config.get("unique_key")) {
            None => Vec::new(),
            Some(v) => column_list(v, "unique_key").map_err(bad)?,
        };
        if mode.needs_key() && unique_key.is_empty() {
            return Err(bad(format!("load mode `{}` needs a `unique_key`", mode.name())));
        }
        Ok(Some(LoadConfig { table: TableName { schema, name }, mode, unique_key }))
    }
}

/// A model's `reconcile` config.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconcileConfig {
    pub enabled: bool,
    /// Columns compared (all when empty).
    pub columns: Vec<String>,
    pub profile: bool,
    /// The profile's own choices: columns, aggregates, and the segment
    /// column its measures are grouped by.
    pub profile_columns: Vec<String>,
    pub aggregates: Vec<Aggregate>,
    pub segment_by: Option<String>,
    /// Differing rows allowed before the model fails.
    pub max_mismatch_rows: u64,
    /// Differing rows allowed, as a percentage of the staged rows.
    pub max_mismatch_pct: f64,
    /// Absolute difference allowed between float values.
    pub tolerance: f64,
    /// Where the target side runs.
    pub side: SideChoice,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            enabled: true,
            columns: Vec::new(),
            profile: true,
            profile_columns: Vec::new(),
            aggregates: Aggregate::ALL.to_vec(),
            segment_by: None,
            max_mismatch_rows: 0,
            max_mismatch_pct: 0.0,
            tolerance: 0.0,
            side: SideChoice::Auto,
        }
    }
}

impl ReconcileConfig {
    /// Reads `reconcile: false` or `reconcile: {columns, profile,
    /// max_mismatch_rows, max_mismatch_pct, tolerance, side, enabled}`.
    pub fn read(value: Option<&Json>) -> Result<ReconcileConfig, String> {
        let mut config = ReconcileConfig::default();
        let map = match value {
            None | Some(Json::Null) | Some(Json::Bool(true)) => return Ok(config),
            Some(Json::Bool(false)) => return Ok(ReconcileConfig { enabled: false, ..config }),
            Some(Json::Object(m)) => m,
            Some(other) => return Err(format!("`reconcile` must be `false` or a mapping, not `{other}`")),
        };
        for (k, v) in map {
            config.read_key(k, v)?;
        }
        Ok(config)
    }

    fn read_key(&mut self, k: &str, v: &Json) -> Result<(), String> {
        let number = || {
            v.as_f64()
                .filter(|n| *n >= 0.0)
                .ok_or_else(|| format!("`reconcile.{k}` must be a number of at least 0, not `{v}`"))
        };
        match k {
            "enabled" => {
                self.enabled =
                    v.as_bool().ok_or_else(|| format!("`reconcile.enabled` must be true or false, not `{v}`"))?;
            }
            "profile" => match v {
                Json::Bool(b) => self.profile = *b,
                Json::Object(p) => self.read_profile(p)?,
                _ => {
                    return Err(format!(
                        "`reconcile.profile` must be true, false or a mapping of columns, aggregates and segment_by, not `{v}`"
                    ));
                }
            },
            "columns" => self.columns = column_list(v, "reconcile.columns")?,
            "max_mismatch_rows" => self.max_mismatch_rows = number()? as u64,
            "max_mismatch_pct" => self.max_mismatch_pct = number()?,
            "tolerance" => self.tolerance = number()?,
            "side" => {
                self.side = v.as_str().and_then(SideChoice::parse).ok_or_else(|| {
                    format!("`reconcile.side` must be one of {}, not `{v}`", SideChoice::NAMES.join(", "))
                })?;
            }
            other => {
                return Err(format!(
                    "unknown `reconcile` key `{other}`; the keys are enabled, columns, profile, max_mismatch_rows, max_mismatch_pct, tolerance, side"
                ));
            }
        }
        Ok(())
    }

    /// `profile: {columns: [a], aggregates: [nulls, sum], segment_by: country}`.
    fn read_profile(&mut self, map: &Map<String, Json>) -> Result<(), String> {
        for (k, v) in map {
            match k.as_str() {
                "columns" => self.profile_columns = column_list(v, "reconcile.profile.columns")?,
                "aggregates" => {
                    let names = column_list(v, "reconcile.profile.aggregates")?;
                    self.aggregates = names
                        .iter()
                        .map(|n| {
                            Aggregate::parse(n).ok_or_else(|| {
                                format!(
                                    "unknown aggregate `{n}` in `reconcile.profile.aggregates`; the aggregates are {}",
                                    Aggregate::NAMES.join(", ")
                                )
                            })
                        })
                        .collect::<Result<_, _>>()?;
                }
                "segment_by" => match v {
                    Json::String(c) if !c.is_empty() => self.segment_by = Some(c.clone()),
                    _ => return Err(format!("`reconcile.profile.segment_by` must be a column name, not `{v}`")),
                },
                other => {
                    return Err(format!(
                        "unknown `reconcile.profile` key `{other}`; the keys are columns, aggregates, segment_by"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The aggregates a profile can be limited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Nulls,
    Sum,
    Min,
    Max,
    DistinctKeys,
}

impl Aggregate {
    pub const ALL: [Aggregate; 5] =
        [Aggregate::Nulls, Aggregate::Sum, Aggregate::Min, Aggregate::Max, Aggregate::DistinctKeys];
    const NAMES: [&'static str; 5] = ["nulls", "sum", "min", "max", "distinct_keys"];

    fn parse(name: &str) -> Option<Aggregate> {
        Self::NAMES.iter().position(|n| *n == name).map(|i| Self::ALL[i])
    }
}

/// `quarantine: {error_if: ">1%"}`: too many quarantined rows fail the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub op: &'static str,
    pub value: f64,
    pub percent: bool,
    pub text: String,
}

impl Threshold {
    /// Parses `>1%`, `> 100`, `>= 0.5%`: a test's threshold, in rows or
    /// percent of the rows produced.
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        let (body, percent) = match t.strip_suffix('%') {
            Some(body) => (body, true),
            None => (t, false),
        };
        let c = Condition::parse(body)?;
        Some(Threshold { op: c.op, value: c.value.parse().ok()?, percent, text: t.to_owned() })
    }

    /// A model's threshold: `quarantine: {error_if: ...}`, or `error_if:`
    /// straight in its config. A bad one is the message to show.
    fn read(config: &Map<String, Json>) -> Result<Option<Self>, String> {
        let text = config.get("quarantine").and_then(|q| q.get("error_if")).or_else(|| config.get("error_if"));
        let Some(text) = text.and_then(Json::as_str) else { return Ok(None) };
        Threshold::parse(text)
            .map(Some)
            .ok_or_else(|| format!("`quarantine: {{error_if: {text}}}` must be like `\">1%\"` or `\"> 100\"`"))
    }

    /// Whether `quarantined` of `produced` rows crosses the threshold.
    pub fn exceeded(&self, quarantined: u64, produced: u64) -> bool {
        let x = if self.percent {
            if produced == 0 { 0.0 } else { quarantined as f64 * 100.0 / produced as f64 }
        } else {
            quarantined as f64
        };
        match self.op {
            ">=" => x >= self.value,
            ">" => x > self.value,
            "<=" => x <= self.value,
            "<" => x < self.value,
            "!=" => x != self.value,
            _ => x == self.value,
        }
    }
}

/// What a failing test (or a broken rule) does to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Fails the test (and skips what depends on its model) when `error_if` holds.
    Error,
    /// Never fails; warns when `warn_if` holds.
    Warn,
}

/// A test's config, as dbt reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct TestConfig {
    pub severity: Severity,
    pub fail_calc: String,
    pub warn_if: Condition,
    pub error_if: Condition,
    pub limit: Option<u64>,
    pub store_failures: bool,
}

impl Default for TestConfig {
    fn default() -> Self {
        let never = Condition { op: "!=", value: "0".into() };
        TestConfig {
            severity: Severity::Error,
            fail_calc: "count(*)".into(),
            warn_if: never.clone(),
            error_if: never,
            limit: None,
            store_failures: false,
        }
    }
}

/// A threshold such as `!= 0` or `>10`: an operator and a number.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub op: &'static str,
    pub value: String,
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.op, self.value)
    }
}

impl Condition {
    /// Parses `!= 0`, `>10`, `>= 100`.
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        let op = ["!=", "<>", ">=", "<=", "==", "=", ">", "<"].into_iter().find(|op| t.starts_with(op))?;
        let value = t[op.len()..].trim();
        value.parse::<f64>().ok()?;
        let op = match op {
            "==" => "=",
            "<>" => "!=",
            other => other,
        };
        Some(Condition { op, value: value.to_owned() })
    }
}

impl TestConfig {
    /// Reads a test node's config; a bad value is the message to show.
    pub fn read(config: &Map<String, Json>) -> Result<Self, String> {
        let text = |key: &str| config.get(key).and_then(Json::as_str);
        let severity = match text("severity").map(str::to_ascii_lowercase).as_deref() {
            None | Some("error") => Severity::Error,
            Some("warn") => Severity::Warn,
            Some(other) => return Err(format!("`severity: {other}` must be `error` or `warn`")),
        };
        let condition = |key: &str| -> Result<Condition, String> {
            match config.get(key) {
                None | Some(Json::Null) => Ok(Condition { op: "!=", value: "0".into() }),
                Some(Json::String(s)) => Condition::parse(s)
                    .ok_or_else(|| format!("`{key}: {s}` must be a comparison with a number, such as `!= 0` or `>10`")),
                Some(other) => Err(format!("`{key}: {other}` must be a comparison such as `\"!= 0\"` or `\">10\"`")),
            }
        };
        let limit = match config.get("limit") {
            None | Some(Json::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| format!("`limit: {v}` must be a whole number"))?),
        };
        let store_failures = match config.get("store_failures") {
            None | Some(Json::Null) => false,
            Some(v) => v.as_bool().ok_or_else(|| format!("`store_failures: {v}` must be true or false"))?,
        };
        Ok(TestConfig {
            severity,
            fail_calc: text("fail_calc").unwrap_or("count(*)").to_owned(),
            warn_if: condition("warn_if")?,
            error_if: condition("error_if")?,
            limit,
            store_failures,
        })
    }
}

/// `dedupe: {key: [cols], keep: {order_by: "updated_at desc"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dedupe {
    pub key: Vec<String>,
    /// `keep.order_by`, item by item: the first row in this order wins.
    pub order_by: Vec<OrderItem>,
}

/// One item of an ORDER BY list: a SQL expression and its direction.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderItem {
    pub expr: String,
    pub descending: bool,
    /// DataFusion's default: NULLs sort as the largest value.
    pub nulls_first: bool,
}

impl Dedupe {
    /// Reads a model's `dedupe` config; a bad one is the message to show.
    pub fn read(config: &Map<String, Json>) -> Result<Option<Self>, String> {
        let Some(d) = config.get("dedupe").filter(|d| !d.is_null()) else { return Ok(None) };
        let key = match d.get("key") {
            None => Vec::new(),
            Some(v) => column_list(v, "dedupe.key")?,
        };
        if key.is_empty() {
            return Err("`dedupe` needs `key:`, the column or columns that identify a record".into());
        }
        let order_by = match d.get("keep") {
            None | Some(Json::Null) => Vec::new(),
            Some(k) => match k.get("order_by").and_then(Json::as_str) {
                Some(o) => order_items(o)?,
                None => return Err("`dedupe.keep` takes `order_by:`, such as `\"updated_at desc\"`".into()),
            },
        };
        Ok(Some(Dedupe { key, order_by }))
    }
}

/// Parses an ORDER BY list (`updated_at desc nulls last, id`).
fn order_items(text: &str) -> Result<Vec<OrderItem>, String> {
    use datafusion::sql::sqlparser::{dialect::GenericDialect, parser::Parser, tokenizer::Token};
    let bad = |e: &dyn std::fmt::Display| format!("`keep.order_by: {text}` is not an ORDER BY list: {e}");
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect).try_with_sql(text).map_err(|e| bad(&e))?;
    let items = parser.parse_comma_separated(Parser::parse_order_by_expr).map_err(|e| bad(&e))?;
    parser.expect_token(&Token::EOF).map_err(|e| bad(&e))?;
    Ok(items
        .into_iter()
        .map(|o| {
            let descending = o.options.asc == Some(false);
            OrderItem { expr: o.expr.to_string(), descending, nulls_first: o.options.nulls_first.unwrap_or(descending) }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_count_rows_or_percent() {
        let t = Threshold::parse(">1%").unwrap();
        assert!(t.percent);
        assert!(!t.exceeded(10, 1000));
        assert!(t.exceeded(11, 1000));
        let t = Threshold::parse("> 100").unwrap();
        assert!(!t.exceeded(100, 10));
        assert!(t.exceeded(101, 1_000_000));
        assert!(Threshold::parse("lots").is_none());
        assert!(Threshold::parse(">x%").is_none());
    }

    fn config(json: &str) -> Result<TestConfig, String> {
        TestConfig::read(&serde_json::from_str(json).unwrap())
    }

    #[test]
    fn defaults_are_dbts() {
        let c = config("{}").unwrap();
        assert_eq!(c.severity, Severity::Error);
        assert_eq!(c.warn_if.to_string(), "!= 0");
        assert_eq!(c.error_if.to_string(), "!= 0");
        assert_eq!(c.fail_calc, "count(*)");
        assert!(!c.store_failures);
        assert_eq!(c, TestConfig::default());
    }

    #[test]
    fn thresholds_parse_and_bad_ones_are_named() {
        let c = config(r#"{"severity": "WARN", "error_if": ">10", "warn_if": ">= 2.5", "limit": 3}"#).unwrap();
        assert_eq!(c.severity, Severity::Warn);
        assert_eq!(c.error_if, Condition { op: ">", value: "10".into() });
        assert_eq!(c.warn_if.to_string(), ">= 2.5");
        assert_eq!(c.limit, Some(3));
        assert!(config(r#"{"error_if": "lots"}"#).unwrap_err().contains("`error_if: lots`"));
        assert!(config(r#"{"severity": "fatal"}"#).unwrap_err().contains("`severity: fatal`"));
        assert!(config(r#"{"limit": "ten"}"#).unwrap_err().contains("`limit"));
    }

    #[test]
    fn config_reads_every_key_and_names_unknown_ones() {
        let c = ReconcileConfig::read(Some(
            &serde_json::json!({"columns": ["a"], "tolerance": 0.01, "max_mismatch_rows": 3}),
        ))
        .unwrap();
        assert_eq!(c.columns, vec!["a"]);
        assert_eq!(c.max_mismatch_rows, 3);
        assert!(!ReconcileConfig::read(Some(&Json::Bool(false))).unwrap().enabled);
        let e = ReconcileConfig::read(Some(&serde_json::json!({"tolerence": 1}))).unwrap_err();
        assert!(e.contains("unknown `reconcile` key `tolerence`"), "{e}");
        assert_eq!(
            ReconcileConfig::read(Some(&serde_json::json!({"side": "pulled"}))).unwrap().side,
            SideChoice::Pulled
        );
        assert_eq!(ReconcileConfig::default().side, SideChoice::Auto);
        let e = ReconcileConfig::read(Some(&serde_json::json!({"side": "pull"}))).unwrap_err();
        assert_eq!(e, "`reconcile.side` must be one of auto, pushed, pulled, not `\"pull\"`");
    }
}
