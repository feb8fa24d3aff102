//! SQLite: prepared inserts in one large transaction, with WAL and a big
//! page cache. Every mode, the swap of `replace` included, commits once, so
//! a failure or Ctrl-C leaves the database as it was.
//!
//! SQLite types values, not columns: the declared types below set each
//! column's affinity, and dates, timestamps, times and intervals are stored
//! as ISO 8601 text (timestamps with a time zone in UTC, `+00:00`), decimals
//! of up to 15 digits as NUMERIC (exact in a REAL), wider decimals and
//! unsigned 64-bit integers as their exact text, booleans as 0/1 and nested
//! values as JSON text.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use camino::Utf8PathBuf;
use datafusion::arrow::datatypes::DataType;
use rusqlite::{Connection, OptionalExtension, params};

use super::quote;
use crate::backend::checksum::{FetchedRow, Profile, RowSink, SegmentSums, Side, SideChoice, Spec};
use crate::backend::preflight::{self, Family, TargetColumn};
use crate::backend::{BackendError, LoadColumn, LoadJob, LoadReport, NEW_SUFFIX, PREV_SUFFIX};
use crate::values::cells::{self, Cell};
use crate::values::{LoadMode, TableName};

/// SQLite has no identifier limit worth the name; keep names readable.
const MAX_IDENT: usize = 128;

pub(super) mod reconcile;

#[derive(Clone)]
pub struct Sqlite {
    path: Utf8PathBuf,
    /// A database of the staged keys a reconciliation is scoped to
    /// (attached to the reading connection), removed with the last clone.
    reconcile_keys: Option<Arc<tempfile::TempDir>>,
}

/// The declared type for a canonical Arrow type.
pub fn sql_type(dt: &DataType) -> String {
    use DataType as D;
    match dt {
        D::Boolean => "BOOLEAN".into(),
        D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32 => "INTEGER".into(),
        D::Float32 | D::Float64 => "REAL".into(),
        // A REAL keeps 15 significant digits: wider exact numbers stay text.
        D::Decimal128(p, s) | D::Decimal256(p, s) if *p <= 15 => format!("NUMERIC({p},{s})"),
        D::Decimal128(p, s) | D::Decimal256(p, s) => format!("TEXT /* DECIMAL({p},{s}) */"),
        D::UInt64 => "TEXT /* UBIGINT */".into(),
        D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_) => "BLOB".into(),
        D::Date32 => "DATE".into(),
        D::Timestamp(_, None) => "TIMESTAMP".into(),
        D::Timestamp(_, Some(_)) => "TIMESTAMPTZ".into(),
        D::Time64(_) => "TIME".into(),
        d if cells::is_nested(d) => "JSON".into(),
        _ => "TEXT".into(),
    }
}

fn q(name: &str) -> String {
    quote(name, '"')
}

fn db_error(table: &TableName, doing: &str, e: &rusqlite::Error) -> BackendError {
    BackendError::Database { table: table.name.clone(), doing: doing.to_owned(), message: e.to_string() }
}

impl Sqlite {
    pub fn new(path: Utf8PathBuf) -> Self {
        Sqlite { path, reconcile_keys: None }
    }

    /// The database file.
    pub fn path(&self) -> &Utf8PathBuf {
        &self.path
    }

    fn open(&self, table: &TableName) -> Result<Connection, BackendError> {
        if let Some(dir) = self.path.parent() {
            fs_err::create_dir_all(dir).map_err(|e| BackendError::Connect {
                target: format!("SQLite `{}`", self.path),
                message: e.to_string(),
            })?;
        }
        let conn = Connection::open(&self.path)
            .map_err(|e| BackendError::Connect { target: format!("SQLite `{}`", self.path), message: e.to_string() })?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -262144; \
             PRAGMA temp_store = MEMORY; PRAGMA busy_timeout = 10000;",
        )
        .map_err(|e| db_error(table, "setting pragmas", &e))?;
        Ok(conn)
    }

    pub async fn load(&self, job: &LoadJob, rows: &Arc<AtomicU64>) -> Result<LoadReport, BackendError> {
        let started = Instant::now();
        let conn = self.open(&job.table)?;
        // The blocking load cannot be dropped like a future: if this one is
        // (Ctrl-C), the flag tells it to stop, and its transaction rolls back.
        let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
        let (job_, rows, cancelled) = (job.clone(), Arc::clone(rows), Arc::clone(&cancel.0));
        let (loaded, notes) = tokio::task::spawn_blocking(move || load_blocking(conn, &job_, &rows, &cancelled))
            .await
            .map_err(|e| BackendError::Database {
                table: job.table.name.clone(),
                doing: "loading".into(),
                message: e.to_string(),
            })??;
        Ok(LoadReport {
            table: job.table.name.clone(),
            mode: job.mode.name(),
            rows: loaded,
            strategy: "prepared INSERTs in one transaction".into(),
            seconds: started.elapsed().as_secs_f64(),
            notes,
        })
    }

    pub async fn dry_run(&self, job: &LoadJob) -> Result<Vec<String>, BackendError> {
        let conn = self.open(&job.table)?;
        let (before, insert, after) = statements(job, preflight(&conn, job)?);
        let mut out = vec!["BEGIN IMMEDIATE".to_owned()];
        out.extend(before);
        out.push(format!("{insert}  -- once per staged row, {} rows", job.rows()));
        out.extend(after);
        out.push("COMMIT".into());
        Ok(out)
    }

    pub async fn rollback(&self, table: &TableName) -> Result<(), BackendError> {
        let mut conn = self.open(table)?;
        let prev = table.sibling(PREV_SUFFIX, MAX_IDENT);
        let swap = table.sibling("__ferry_swap", MAX_IDENT);
        if existing(&conn, &prev)?.is_none() {
            return Err(BackendError::nothing_to_restore(&table.name, &prev.name));
        }
        let has_current = existing(&conn, table)?.is_some();
        let tx = conn.transaction().map_err(|e| db_error(table, "starting a transaction", &e))?;
        if has_current {
            tx.execute_batch(&format!("ALTER TABLE {} RENAME TO {}", q(&table.name), q(&swap.name)))
                .map_err(|e| db_error(table, "renaming", &e))?;
        }
        tx.execute_batch(&format!("ALTER TABLE {} RENAME TO {}", q(&prev.name), q(&table.name)))
            .map_err(|e| db_error(table, "renaming", &e))?;
        if has_current {
            tx.execute_batch(&format!("ALTER TABLE {} RENAME TO {}", q(&swap.name), q(&prev.name)))
                .map_err(|e| db_error(table, "renaming", &e))?;
        }
        tx.commit().map_err(|e| db_error(table, "committing", &e))
    }
}

fn existing(conn: &Connection, table: &TableName) -> Result<Option<Vec<TargetColumn>>, BackendError> {
    let found: Option<String> = conn
        .query_row("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?1", params![table.name], |r| {
            r.get(0)
        })
        .optional()
        .map_err(|e| db_error(table, "looking the table up", &e))?;
    if found.is_none() {
        return Ok(None);
    }
    let mut stmt = conn
        .prepare("SELECT name, lower(type), \"notnull\", dflt_value IS NOT NULL FROM pragma_table_info(?1)")
        .map_err(|e| db_error(table, "reading the table's columns", &e))?;
    let cols = stmt
        .query_map(params![table.name], |r| {
            Ok(TargetColumn { name: r.get(0)?, sql_type: r.get(1)?, not_null: r.get(2)?, has_default: r.get(3)? })
        })
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(|e| db_error(table, "reading the table's columns", &e))?;
    Ok(Some(cols))
}

/// Checks the table the job keeps, if any, and says whether it exists.
/// SQLite types values, not columns, so only names and NOT NULLs count.
/// Whether the table exists, and the columns to add to it.
fn preflight(conn: &Connection, job: &LoadJob) -> Result<(bool, Vec<String>), BackendError> {
    let existing = existing(conn, &job.table)?;
    preflight::check_existing(job, existing.as_deref(), |_| Family::Other, true)?;
    let t = q(&job.table.name);
    let mut alter: Vec<String> = preflight::columns_to_add(job, existing.as_deref(), true)
        .into_iter()
        .map(|c| format!("ALTER TABLE {t} ADD COLUMN {} {}", q(&c.name), sql_type(&c.data_type)))
        .collect();
    // A changed type needs nothing: SQLite types values, not columns.
    let (drop, _) = preflight::columns_to_sync(job, existing.as_deref(), true);
    alter.extend(drop.into_iter().map(|c| format!("ALTER TABLE {t} DROP COLUMN {}", q(&c.name))));
    Ok((existing.is_some(), alter))
}

fn create(table: &str, columns: &[LoadColumn], if_not_exists: bool) -> String {
    let defs: Vec<String> = columns.iter().map(|c| format!("{} {}", q(&c.name), sql_type(&c.data_type))).collect();
    format!("CREATE TABLE {}{} ({})", if if_not_exists { "IF NOT EXISTS " } else { "" }, q(table), defs.join(", "))
}

fn key_index(table: &str, index_for: &str, keys: &[String]) -> String {
    format!(
        "CREATE UNIQUE INDEX {} ON {} ({})",
        q(&format!("{index_for}__key_{}", &uuid::Uuid::new_v4().simple().to_string()[..8])),
        q(table),
        keys.iter().map(|k| q(k)).collect::<Vec<_>>().join(", ")
    )
}

/// Statements before the inserts, the insert, statements after.
fn statements(job: &LoadJob, (exists, add): (bool, Vec<String>)) -> (Vec<String>, String, Vec<String>) {
    let t = &job.table.name;
    let cols = job.columns.iter().map(|c| q(&c.name)).collect::<Vec<_>>().join(", ");
    let marks = vec!["?"; job.columns.len()].join(", ");
    let keys = &job.unique_key;
    let mut before = add;
    let mut after = Vec::new();
    let insert_into = |table: &str| format!("INSERT INTO {} ({cols}) VALUES ({marks})", q(table));
    if let (Some(window), true) = (job.window_predicate(q, ""), exists) {
        // A microbatch increment: the window's rows go, in the load's
        // transaction, before the new ones are appended.
        before.push(format!("DELETE FROM {} WHERE {window}", q(t)));
    }
    match job.mode {
        LoadMode::Replace => {
            let shadow = job.table.sibling(NEW_SUFFIX, MAX_IDENT).name;
            let prev = job.table.sibling(PREV_SUFFIX, MAX_IDENT).name;
            before.push(format!("DROP TABLE IF EXISTS {}", q(&shadow)));
            before.push(create(&shadow, &job.columns, false));
            if !keys.is_empty() {
                after.push(key_index(&shadow, t, keys));
            }
            after.push(format!("DROP TABLE IF EXISTS {}", q(&prev)));
            if exists {
                after.push(format!("ALTER TABLE {} RENAME TO {}", q(t), q(&prev)));
            }
            after.push(format!("ALTER TABLE {} RENAME TO {}", q(&shadow), q(t)));
            (before, insert_into(&shadow), after)
        }
        LoadMode::Append => {
            if !exists {
                before.push(create(t, &job.columns, false));
                if !keys.is_empty() {
                    before.push(key_index(t, t, keys));
                }
            }
            (before, insert_into(t), after)
        }
        LoadMode::Upsert => {
            if !exists {
                before.push(create(t, &job.columns, false));
                before.push(key_index(t, t, keys));
            }
            let updates: Vec<String> =
                job.columns.iter().filter(|c| !c.key).map(|c| format!("{0} = excluded.{0}", q(&c.name))).collect();
            let action = if updates.is_empty() {
                "DO NOTHING".to_owned()
            } else {
                format!("DO UPDATE SET {}", updates.join(", "))
            };
            let key_list = keys.iter().map(|k| q(k)).collect::<Vec<_>>().join(", ");
            (before, format!("{} ON CONFLICT ({key_list}) {action}", insert_into(t)), after)
        }
        LoadMode::DeleteInsert => {
            if !exists {
                before.push(create(t, &job.columns, false));
                before.push(key_index(t, t, keys));
            }
            before.push("DROP TABLE IF EXISTS temp.ferry_load".into());
            before.push(format!("CREATE TEMP TABLE ferry_load AS SELECT {cols} FROM {} WHERE 0", q(t)));
            let key_list = keys.iter().map(|k| q(k)).collect::<Vec<_>>().join(", ");
            after.push(format!("DELETE FROM {} WHERE ({key_list}) IN (SELECT {key_list} FROM temp.ferry_load)", q(t)));
            after.push(format!("INSERT INTO {} ({cols}) SELECT {cols} FROM temp.ferry_load", q(t)));
            after.push("DROP TABLE temp.ferry_load".into());
            (before, format!("INSERT INTO temp.ferry_load ({cols}) VALUES ({marks})"), after)
        }
    }
}

/// Sets its flag when dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn load_blocking(
    mut conn: Connection,
    job: &LoadJob,
    rows: &AtomicU64,
    cancelled: &AtomicBool,
) -> Result<(u64, Vec<String>), BackendError> {
    let t = &job.table;
    let mut notes = Vec::new();
    let (before, insert, after) = statements(job, preflight(&conn, job)?);
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| db_error(t, "starting a transaction", &e))?;
    for sql in &before {
        tx.execute_batch(sql).map_err(|e| db_error(t, &format!("running `{sql}`"), &e))?;
    }
    if let Some(keys) = job.deleted_keys(TableName { schema: "temp".into(), name: "ferry_deleted".into() }) {
        // Records gone from a change-detected extract: out (or flagged)
        // in this transaction.
        let key_list = job.unique_key.iter().map(|k| q(k)).collect::<Vec<_>>().join(", ");
        let setup =
            format!("DROP TABLE IF EXISTS temp.ferry_deleted; {}", create("ferry_deleted", &keys.columns, false))
                .replacen("CREATE TABLE", "CREATE TEMP TABLE", 1);
        tx.execute_batch(&setup).map_err(|e| db_error(t, "creating the table of deleted keys", &e))?;
        let marks = vec!["?"; keys.columns.len()].join(", ");
        insert_all(
            &tx,
            &keys,
            &format!("INSERT INTO temp.ferry_deleted ({key_list}) VALUES ({marks})"),
            None,
            cancelled,
        )?;
        let matched = format!("({key_list}) IN (SELECT {key_list} FROM temp.ferry_deleted)");
        let sql = match &keys_soft(job) {
            None => format!("DELETE FROM {} WHERE {matched}", q(&t.name)),
            Some(soft) => format!("UPDATE {} SET {} WHERE {matched}", q(&t.name), soft.set_list(q, "")),
        };
        let n = tx.execute(&sql, []).map_err(|e| db_error(t, &format!("running `{sql}`"), &e))?;
        tx.execute_batch("DROP TABLE temp.ferry_deleted").map_err(|e| db_error(t, "dropping the deleted keys", &e))?;
        let done = if keys_soft(job).is_some() { "flagged deleted" } else { "deleted" };
        notes.push(format!("{n} rows {done}"));
    }
    let loaded = insert_all(&tx, job, &insert, Some(rows), cancelled)?;
    if loaded != job.rows() {
        return Err(BackendError::RowCount { table: t.name.clone(), expected: job.rows(), loaded });
    }
    if cancelled.load(Ordering::Relaxed) {
        return Err(BackendError::Database {
            table: t.name.clone(),
            doing: "loading".into(),
            message: "interrupted".into(),
        });
    }
    for sql in &after {
        tx.execute_batch(sql).map_err(|e| db_error(t, &format!("running `{sql}`"), &e))?;
    }
    tx.commit().map_err(|e| db_error(t, "committing", &e))?;
    Ok((loaded, notes))
}

fn keys_soft(job: &LoadJob) -> Option<crate::backend::job::SoftDelete> {
    job.deletes.as_ref().and_then(|d| d.soft.clone())
}

/// Runs `insert` once per staged row of `job`, counting into `rows`.
fn insert_all(
    tx: &rusqlite::Transaction<'_>,
    job: &LoadJob,
    insert: &str,
    rows: Option<&AtomicU64>,
    cancelled: &AtomicBool,
) -> Result<u64, BackendError> {
    let t = &job.table;
    let mut loaded = 0u64;
    let mut stmt = tx.prepare(insert).map_err(|e| db_error(t, "preparing the insert", &e))?;
    let mut batches = job.read();
    while let Some(batch) = batches.blocking_recv() {
        if cancelled.load(Ordering::Relaxed) {
            return Err(BackendError::Database {
                table: t.name.clone(),
                doing: "loading".into(),
                message: "interrupted".into(),
            });
        }
        let batch = batch?;
        let mut cols = cells::columns(&batch)
            .map_err(|e| BackendError::Read { model: job.model.clone(), message: e.to_string() })?;
        for row in 0..batch.num_rows() {
            for (k, col) in cols.iter_mut().enumerate() {
                bind(&mut stmt, k + 1, col.cell(row), &job.columns[k].data_type)
                    .map_err(|e| db_error(t, "binding a value", &e))?;
            }
            stmt.raw_execute()
                .map_err(|e| db_error(t, &format!("inserting staged row {}", loaded + row as u64 + 1), &e))?;
        }
        loaded += batch.num_rows() as u64;
        if let Some(rows) = rows {
            rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        }
    }
    Ok(loaded)
}

fn bind(stmt: &mut rusqlite::Statement<'_>, i: usize, cell: Cell<'_>, dt: &DataType) -> rusqlite::Result<()> {
    let zoned = matches!(dt, DataType::Timestamp(_, Some(_)));
    match cell {
        Cell::Null => stmt.raw_bind_parameter(i, rusqlite::types::Null),
        Cell::Bool(b) => stmt.raw_bind_parameter(i, i64::from(b)),
        Cell::Int(v) => stmt.raw_bind_parameter(i, v),
        Cell::UInt(v) if matches!(dt, DataType::UInt64) => stmt.raw_bind_parameter(i, v.to_string()),
        Cell::UInt(v) => stmt.raw_bind_parameter(i, v as i64),
        Cell::Float(v) => stmt.raw_bind_parameter(i, v),
        Cell::Decimal(v, s) => stmt.raw_bind_parameter(i, cells::decimal128_text(v, s)),
        Cell::BigDecimal(d, s) => stmt.raw_bind_parameter(i, cells::decimal_text(&d, s)),
        Cell::Text(s) => stmt.raw_bind_parameter(i, s),
        Cell::Bytes(b) => stmt.raw_bind_parameter(i, b),
        Cell::Date(d) => stmt.raw_bind_parameter(i, cells::date_text(d)),
        Cell::Timestamp(us) if zoned => stmt.raw_bind_parameter(i, format!("{}+00:00", cells::timestamp_text(us))),
        Cell::Timestamp(us) => stmt.raw_bind_parameter(i, cells::timestamp_text(us)),
        Cell::Time(us) => stmt.raw_bind_parameter(i, cells::time_text(us)),
        Cell::Interval { months, days, micros } => {
            stmt.raw_bind_parameter(i, cells::interval_text(months, days, micros))
        }
        Cell::Json(s) => stmt.raw_bind_parameter(i, s),
    }
}
#[async_trait::async_trait]
impl super::Backend for Sqlite {
    fn kind(&self) -> super::DatabaseKind {
        super::DatabaseKind::Sqlite
    }

    async fn describe(&mut self) -> Result<String, BackendError> {
        Ok(format!("SQLite {} at `{}`", rusqlite::version(), self.path()))
    }

    async fn load(&mut self, job: &LoadJob, rows: &Arc<AtomicU64>) -> Result<LoadReport, BackendError> {
        Sqlite::load(self, job, rows).await
    }

    async fn dry_run(&mut self, job: &LoadJob) -> Result<Vec<String>, BackendError> {
        Sqlite::dry_run(self, job).await
    }

    async fn rollback(&mut self, table: &TableName) -> Result<(), BackendError> {
        Sqlite::rollback(self, table).await
    }

    async fn table_columns(&mut self, table: &TableName) -> Result<Option<Vec<TargetColumn>>, BackendError> {
        let conn = self.open(table)?;
        existing(&conn, table)
    }

    async fn reconcile_side(&mut self, _: &Spec, choice: SideChoice, _: u64) -> Result<(Side, String), BackendError> {
        let why = match choice {
            SideChoice::Pushed => "SQLite is read in-process; `side: pushed` does not apply",
            _ => "SQLite is read and hashed in-process",
        };
        Ok((Side::Pulled, format!("pulled ({why})")))
    }

    async fn reconcile_scope(&mut self, job: &LoadJob) -> Result<u64, BackendError> {
        Sqlite::reconcile_scope(self, job).await
    }

    async fn pushed_summary(&mut self, spec: &Spec) -> Result<(SegmentSums, Profile), BackendError> {
        Err(BackendError::Database {
            table: spec.table.to_string(),
            doing: "summing row hashes".into(),
            message: "SQLite has no pushed-down side: its rows are read and hashed in-process".into(),
        })
    }

    async fn pushed_rows(&mut self, _: &Spec, _: &[u64]) -> Result<Option<Vec<FetchedRow>>, BackendError> {
        Ok(None)
    }

    async fn pull_rows(&mut self, spec: &Spec, sink: Box<dyn RowSink>) -> Result<Box<dyn RowSink>, BackendError> {
        Sqlite::pull_rows(self, spec, sink).await
    }
}
