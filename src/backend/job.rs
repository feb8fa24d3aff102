//! What a backend is asked to load, and what it reports: a [`LoadJob`]
//! names a stage, the table it goes into and how ([`LoadMode`]); a
//! [`LoadReport`] says what the load did. Which nodes are loaded, in which
//! order, is the load policy's business (`load/`), not the backends'.

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use serde::Serialize;
use tokio::sync::mpsc;

use super::BackendError;
use crate::stage::{self, StagedTable};
use crate::values::{LoadMode, TableName, cells};

/// The suffix of the table a `replace` load keeps for `ferry rollback`.
pub const PREV_SUFFIX: &str = "__ferry_prev";
/// The suffix of the shadow table a `replace` load builds.
pub const NEW_SUFFIX: &str = "__ferry_new";

/// One staged column as it is loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadColumn {
    pub name: String,
    /// The canonical Arrow type (see [`cells::canonical`]).
    pub data_type: DataType,
    pub nullable: bool,
    /// Part of the unique key.
    pub key: bool,
}

/// One stage to load: where from, where to, how.
#[derive(Debug, Clone)]
pub struct LoadJob {
    /// The model (or source) the stage holds, as messages name it.
    pub model: String,
    pub table: TableName,
    pub mode: LoadMode,
    pub unique_key: Vec<String>,
    pub stage: StagedTable,
    pub columns: Vec<LoadColumn>,
    /// The stage's columns read back, by position (all when `None`).
    pub read_columns: Option<Vec<usize>>,
    /// How the existing table's columns follow the stage's (an
    /// incremental model's `on_schema_change`).
    pub column_sync: ColumnSync,
    /// For an `append`: the rows of the table it replaces (a microbatch
    /// model's window), deleted in the load's transaction.
    pub window: Option<ReplacedWindow>,
    /// Records gone from a change-detected model's extract, deleted or
    /// flagged in the load's transaction.
    pub deletes: Option<KeyDeletes>,
}

/// The keys of records to delete (or flag) in a load's transaction.
#[derive(Debug, Clone)]
pub struct KeyDeletes {
    /// A stage of the unique key's columns alone.
    pub keys: StagedTable,
    /// `None`: the rows are deleted; else they are kept, flagged.
    pub soft: Option<SoftDelete>,
}

/// How a soft delete marks a row: `flag` true, `at` the run's time.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftDelete {
    pub flag: String,
    pub at: String,
    pub time: chrono::NaiveDateTime,
}

impl SoftDelete {
    /// The statement's SET list, with `q` quoting names.
    pub fn set_list(&self, q: impl Fn(&str) -> String, prefix: &str) -> String {
        format!(
            "{prefix}{} = TRUE, {prefix}{} = '{}'",
            q(&self.flag),
            q(&self.at),
            self.time.format("%Y-%m-%d %H:%M:%S%.6f")
        )
    }
}

/// The rows of a table whose `column` is from `start` up to (not
/// including) `end`, in UTC.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplacedWindow {
    pub column: String,
    pub start: chrono::NaiveDateTime,
    pub end: chrono::NaiveDateTime,
}

/// How a load brings an existing table's columns in line with a stage
/// whose columns changed (`on_schema_change`); none of it for a `replace`,
/// which builds the table anew.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ColumnSync {
    /// Staged columns the table lacks are added, nullable, rather than
    /// refused (`append_new_columns`, `sync_all_columns`).
    pub add: bool,
    /// Columns the model no longer returns, dropped (`sync_all_columns`).
    pub drop: Vec<String>,
    /// Columns whose type changed, altered to the staged type
    /// (`sync_all_columns`).
    pub retype: Vec<String>,
}

/// What a finished load did.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub table: String,
    pub mode: &'static str,
    pub rows: u64,
    /// The bulk path used, such as `binary COPY`.
    pub strategy: String,
    pub seconds: f64,
    /// Things the user should know (a fallback taken, say).
    pub notes: Vec<String>,
}

impl LoadJob {
    /// The job for `stage` (its manifest checked, see `stage::verify`),
    /// read as `model`: resolves its columns' canonical types. Every
    /// `unique_key` column must be staged.
    pub fn from_stage(
        model: &str,
        table: TableName,
        mode: LoadMode,
        unique_key: Vec<String>,
        stage: StagedTable,
    ) -> Result<LoadJob, BackendError> {
        let manifest = &stage.manifest;
        let mut columns = Vec::with_capacity(manifest.columns.len());
        for c in &manifest.columns {
            let parsed: DataType = c.data_type.parse().map_err(|e| BackendError::Read {
                model: model.to_owned(),
                message: format!("column `{}` has type `{}` that ferry cannot read back: {e}", c.name, c.data_type),
            })?;
            let data_type = cells::canonical(&parsed).ok_or_else(|| BackendError::Unloadable {
                model: model.to_owned(),
                table: table.to_string(),
                problems: vec![format!("column `{}` is a {parsed}, which no target can hold", c.name)],
            })?;
            columns.push(LoadColumn {
                name: c.name.clone(),
                data_type,
                nullable: c.nullable,
                key: unique_key.iter().any(|k| k == &c.name),
            });
        }
        let missing: Vec<String> = unique_key
            .iter()
            .filter(|k| !columns.iter().any(|c| &c.name == *k))
            .map(|k| format!("`unique_key` column `{k}` is not in the staged rows"))
            .collect();
        if !missing.is_empty() {
            return Err(BackendError::Unloadable {
                model: model.to_owned(),
                table: table.to_string(),
                problems: missing,
            });
        }
        Ok(LoadJob {
            model: model.to_owned(),
            table,
            mode,
            unique_key,
            stage,
            columns,
            read_columns: None,
            column_sync: ColumnSync::default(),
            window: None,
            deletes: None,
        })
    }

    /// The predicate of the rows an `append` replaces (see
    /// [`LoadJob::window`]), with `q` quoting the column: the bounds are
    /// text in the form the backends write the column's values in, with
    /// `zone` after the time of a zoned timestamp.
    pub fn window_predicate(&self, q: impl Fn(&str) -> String, zone: &str) -> Option<String> {
        let w = self.window.as_ref().filter(|_| self.mode == LoadMode::Append)?;
        let column = self.columns.iter().find(|c| c.name == w.column)?;
        let bound = |t: &chrono::NaiveDateTime| match &column.data_type {
            DataType::Date32 | DataType::Date64 => format!("'{}'", t.format("%Y-%m-%d")),
            DataType::Timestamp(_, Some(_)) => format!("'{}{zone}'", t.format("%Y-%m-%d %H:%M:%S")),
            _ => format!("'{}'", t.format("%Y-%m-%d %H:%M:%S")),
        };
        let c = q(&w.column);
        Some(format!("{c} >= {} AND {c} < {}", bound(&w.start), bound(&w.end)))
    }

    /// The keys a hard delete removes, as a job that loads them into
    /// `table`: a reconciliation scoped to the staged keys checks that
    /// these are gone too. `None` without hard deletes.
    pub fn hard_deleted_keys(&self, table: TableName) -> Option<LoadJob> {
        self.deletes.as_ref().filter(|d| d.soft.is_none())?;
        self.deleted_keys(table)
    }

    /// Rows the stage holds.
    pub fn rows(&self) -> u64 {
        self.stage.manifest.row_count
    }

    /// The same stage's key columns alone, as a job that loads them into a
    /// table of their own (the keys a reconciliation is scoped to).
    pub fn keys_only(&self, table: TableName) -> LoadJob {
        let keys: Vec<usize> = self.columns.iter().enumerate().filter(|(_, c)| c.key).map(|(i, _)| i).collect();
        LoadJob {
            table,
            mode: LoadMode::Replace,
            unique_key: Vec::new(),
            columns: keys.iter().map(|&i| LoadColumn { key: false, ..self.columns[i].clone() }).collect(),
            read_columns: Some(keys),
            column_sync: ColumnSync::default(),
            window: None,
            deletes: None,
            ..self.clone()
        }
    }

    /// The keys to delete, as a job that loads them into `table` (`None`
    /// without deletes).
    pub fn deleted_keys(&self, table: TableName) -> Option<LoadJob> {
        let d = self.deletes.as_ref().filter(|d| d.keys.manifest.row_count > 0)?;
        let columns: Vec<LoadColumn> =
            self.columns.iter().filter(|c| c.key).map(|c| LoadColumn { key: false, ..c.clone() }).collect();
        let read: Vec<usize> = columns
            .iter()
            .map(|c| d.keys.manifest.columns.iter().position(|k| k.name == c.name).unwrap_or(0))
            .collect();
        Some(LoadJob {
            table,
            mode: LoadMode::Append,
            unique_key: Vec::new(),
            stage: d.keys.clone(),
            columns,
            read_columns: Some(read),
            column_sync: ColumnSync::default(),
            window: None,
            deletes: None,
            ..self.clone()
        })
    }

    /// Starts reading the stage's batches (the job's columns), on a thread
    /// of their own (see [`stage::read::spawn`]).
    pub fn read(&self) -> mpsc::Receiver<Result<RecordBatch, BackendError>> {
        stage::read::spawn(&self.stage, &self.model, self.read_columns.clone())
    }

    /// [`LoadJob::read`], with `each` applied to every batch on the reading thread.
    pub fn read_with<T: Send + 'static>(
        &self,
        each: impl FnMut(RecordBatch) -> Result<T, BackendError> + Send + 'static,
    ) -> mpsc::Receiver<Result<T, BackendError>> {
        stage::read::spawn_with(&self.stage, &self.model, self.read_columns.clone(), each)
    }
}
