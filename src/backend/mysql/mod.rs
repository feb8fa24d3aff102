//! MySQL and MariaDB: `LOAD DATA LOCAL INFILE` streamed from the staged
//! batches through the client's infile handler, with multi-row INSERTs when
//! the server refuses local infile (or the profile says `local_infile: false`).
//!
//! MySQL commits DDL implicitly, so `replace` loads a shadow table, checks
//! its row count and warnings, and swaps it in with one atomic
//! `RENAME TABLE`; the other modes run their DML in one transaction. `LOCAL`
//! turns bad values and duplicate keys into warnings, so any warning fails
//! the load (and rolls it back) instead of passing silently.

pub(super) mod hash;
mod infile;
mod reconcile;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use datafusion::arrow::datatypes::DataType;
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Value};

use super::quote;
use crate::backend::checksum::{FetchedRow, Profile, RowSink, SegmentSums, Side, SideChoice, Spec};
use crate::backend::preflight::{self, Family, TargetColumn};
use crate::backend::profiles::ServerTarget;
use crate::backend::{BackendError, LoadColumn, LoadJob, LoadReport, NEW_SUFFIX, PREV_SUFFIX};
use crate::values::cells::{self, Cell};
use crate::values::{LoadMode, TableName};

/// MySQL's identifier limit.
const MAX_IDENT: usize = 64;
/// Server errors that mean "no LOAD DATA LOCAL here".
const INFILE_REFUSED: [u16; 3] = [1148, 3948, 4166];

pub struct Mysql {
    conn: Conn,
    local_infile: bool,
}

/// The column type for a canonical Arrow type. Key columns of text or
/// binary get a bounded type so they can be indexed.
pub fn sql_type(c: &LoadColumn) -> String {
    use DataType as D;
    match &c.data_type {
        D::Boolean => "BOOLEAN".into(),
        D::Int8 => "TINYINT".into(),
        D::Int16 => "SMALLINT".into(),
        D::Int32 => "INT".into(),
        D::Int64 => "BIGINT".into(),
        D::UInt8 => "TINYINT UNSIGNED".into(),
        D::UInt16 => "SMALLINT UNSIGNED".into(),
        D::UInt32 => "INT UNSIGNED".into(),
        D::UInt64 => "BIGINT UNSIGNED".into(),
        D::Float32 => "FLOAT".into(),
        D::Float64 => "DOUBLE".into(),
        D::Decimal128(p, s) | D::Decimal256(p, s) => {
            let s = (*s).clamp(0, 30);
            format!("DECIMAL({},{s})", (*p).clamp(1, 65).max(s as u8))
        }
        D::Utf8 | D::LargeUtf8 | D::Utf8View if c.key => "VARCHAR(255)".into(),
        D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_) if c.key => "VARBINARY(255)".into(),
        D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_) => "LONGBLOB".into(),
        D::Date32 => "DATE".into(),
        D::Timestamp(..) => "DATETIME(6)".into(),
        D::Time64(_) => "TIME(6)".into(),
        D::Duration(_) | D::Interval(_) => "VARCHAR(64)".into(),
        d if cells::is_nested(d) => "JSON".into(),
        _ => "LONGTEXT".into(),
    }
}

/// What a column of an existing table holds, from `COLUMN_TYPE`.
pub fn family(sql_type: &str) -> Family {
    let t = sql_type.trim();
    let unsigned = t.contains("unsigned");
    let base = t.split(['(', ' ']).next().unwrap_or(t);
    let args: Vec<u32> = t
        .split_once('(')
        .map(|(_, rest)| {
            rest.split(')').next().unwrap_or("").split(',').filter_map(|a| a.trim().parse().ok()).collect()
        })
        .unwrap_or_default();
    let int = |bytes: u8| if unsigned { Family::UInt(bytes) } else { Family::Int(bytes) };
    match base {
        "tinyint" => int(1),
        "smallint" => int(2),
        "mediumint" => int(3),
        "int" | "integer" => int(4),
        "bigint" => int(8),
        "float" => Family::Float(4),
        "double" | "real" => Family::Float(8),
        "decimal" | "numeric" => match args[..] {
            [p, s] => Family::Decimal(Some((p, s))),
            [p] => Family::Decimal(Some((p, 0))),
            _ => Family::Decimal(Some((10, 0))),
        },
        "varchar" | "char" => Family::Text(args.first().copied()),
        "tinytext" => Family::Text(Some(255)),
        "text" | "mediumtext" | "longtext" => Family::Text(None),
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => Family::Binary,
        "date" => Family::Date,
        "datetime" | "timestamp" => Family::Timestamp,
        "time" => Family::Time,
        "json" => Family::Json,
        _ => Family::Other,
    }
}

fn q(name: &str) -> String {
    quote(name, '`')
}

fn qualified(t: &TableName) -> String {
    format!("{}.{}", q(&t.schema), q(&t.name))
}

fn db_error(table: &TableName, doing: &str, e: &mysql_async::Error) -> BackendError {
    BackendError::Database { table: table.to_string(), doing: doing.to_owned(), message: e.to_string() }
}

fn refused(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if INFILE_REFUSED.contains(&s.code))
}

fn create(table: &TableName, job: &LoadJob, temporary: bool) -> String {
    let mut defs: Vec<String> = job.columns.iter().map(|c| format!("{} {}", q(&c.name), sql_type(c))).collect();
    if !job.unique_key.is_empty() && !temporary {
        defs.push(format!("PRIMARY KEY ({})", job.unique_key.iter().map(|k| q(k)).collect::<Vec<_>>().join(", ")));
    }
    let name = qualified(table);
    format!(
        "CREATE {}TABLE {name} ({}) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
        if temporary { "TEMPORARY " } else { "" },
        defs.join(", ")
    )
}

/// `LOAD DATA` for the job's columns into `table` (`table` already quoted).
fn load_data_sql(table: &str, columns: &[LoadColumn]) -> String {
    let mut targets = Vec::new();
    let mut sets = Vec::new();
    for (k, c) in columns.iter().enumerate() {
        if matches!(
            c.data_type,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_)
        ) {
            targets.push(format!("@ferry_{k}"));
            sets.push(format!("{} = UNHEX(@ferry_{k})", q(&c.name)));
        } else {
            targets.push(q(&c.name));
        }
    }
    let set = if sets.is_empty() { String::new() } else { format!(" SET {}", sets.join(", ")) };
    format!(
        "LOAD DATA LOCAL INFILE 'ferry-stage' INTO TABLE {table} CHARACTER SET utf8mb4 \
         FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({}){set}",
        targets.join(", ")
    )
}

/// How a job runs: DDL before (autocommitted), whether DML runs in a
/// transaction, the table rows go into, DML after the rows, DDL after commit.
struct Plan {
    ddl_before: Vec<String>,
    rows_into: String,
    dml_after: Vec<String>,
    ddl_after: Vec<String>,
    /// Dropped if the load fails (a shadow table, or a table this load created).
    cleanup: Option<String>,
}

/// `add`: the columns to add to the existing table first (autocommitted,
/// like all DDL in MySQL: a failed load leaves them, empty and nullable).
fn plan(job: &LoadJob, exists: bool, add: Vec<String>) -> Plan {
    let t = &job.table;
    let cols = job.columns.iter().map(|c| q(&c.name)).collect::<Vec<_>>().join(", ");
    // `USE`: MariaDB resolves the aliases of a multi-table DELETE in the
    // current database.
    let mut ddl_before =
        vec![format!("CREATE DATABASE IF NOT EXISTS {}", q(&t.schema)), format!("USE {}", q(&t.schema))];
    ddl_before.extend(add);
    // A microbatch increment: the window's rows out, the new ones in.
    let window = job.window_predicate(q, "");
    match job.mode {
        LoadMode::Replace => {
            let shadow = t.sibling(NEW_SUFFIX, MAX_IDENT);
            let prev = t.sibling(PREV_SUFFIX, MAX_IDENT);
            ddl_before.push(format!("DROP TABLE IF EXISTS {}", qualified(&shadow)));
            ddl_before.push(create(&shadow, job, false));
            let mut ddl_after = vec![format!("DROP TABLE IF EXISTS {}", qualified(&prev))];
            ddl_after.push(if exists {
                format!(
                    "RENAME TABLE {} TO {}, {} TO {}",
                    qualified(t),
                    qualified(&prev),
                    qualified(&shadow),
                    qualified(t)
                )
            } else {
                format!("RENAME TABLE {} TO {}", qualified(&shadow), qualified(t))
            });
            Plan {
                ddl_before,
                rows_into: qualified(&shadow),
                dml_after: Vec::new(),
                ddl_after,
                cleanup: Some(format!("DROP TABLE IF EXISTS {}", qualified(&shadow))),
            }
        }
        LoadMode::Append if window.is_none() => {
            let cleanup = (!exists).then(|| format!("DROP TABLE IF EXISTS {}", qualified(t)));
            if !exists {
                ddl_before.push(create(t, job, false));
            }
            Plan { ddl_before, rows_into: qualified(t), dml_after: Vec::new(), ddl_after: Vec::new(), cleanup }
        }
        LoadMode::Append | LoadMode::Upsert | LoadMode::DeleteInsert => {
            let cleanup = (!exists).then(|| format!("DROP TABLE IF EXISTS {}", qualified(t)));
            if !exists {
                ddl_before.push(create(t, job, false));
            }
            let temp = TableName { schema: t.schema.clone(), name: "ferry_load".into() };
            let temp_name = qualified(&temp);
            ddl_before.push(format!("DROP TEMPORARY TABLE IF EXISTS {temp_name}"));
            ddl_before.push(create(&temp, job, true));
            let dml_after = if let Some(window) = &window {
                vec![
                    format!("DELETE FROM {} WHERE {window}", qualified(t)),
                    format!("INSERT INTO {} ({cols}) SELECT {cols} FROM {temp_name}", qualified(t)),
                ]
            } else if job.mode == LoadMode::Upsert {
                let updates: Vec<String> =
                    job.columns.iter().filter(|c| !c.key).map(|c| format!("{0} = VALUES({0})", q(&c.name))).collect();
                let action =
                    if updates.is_empty() { format!("{0} = {0}", q(&job.unique_key[0])) } else { updates.join(", ") };
                vec![format!(
                    "INSERT INTO {} ({cols}) SELECT {cols} FROM {temp_name} ON DUPLICATE KEY UPDATE {action}",
                    qualified(t)
                )]
            } else {
                let on: Vec<String> = job.unique_key.iter().map(|k| format!("t.{0} = s.{0}", q(k))).collect();
                vec![
                    format!("DELETE t FROM {} AS t JOIN {temp_name} AS s ON {}", qualified(t), on.join(" AND ")),
                    format!("INSERT INTO {} ({cols}) SELECT {cols} FROM {temp_name}", qualified(t)),
                ]
            };
            Plan {
                ddl_before,
                rows_into: temp_name.clone(),
                dml_after,
                ddl_after: vec![format!("DROP TEMPORARY TABLE IF EXISTS {temp_name}")],
                cleanup,
            }
        }
    }
}

/// A connection error, saying plainly when TLS was asked of a server
/// that does not offer it.
fn tls_message(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer) => {
            "the server does not offer TLS, which the target's `sslmode` requires".to_owned()
        }
        e => super::error_chain(e),
    }
}

impl Mysql {
    pub async fn connect(s: &ServerTarget, target_name: &str) -> Result<Self, BackendError> {
        let fail = |e: mysql_async::Error| super::connect_error(s, target_name, tls_message(&e));
        let policy = super::tls::TlsPolicy::for_target(s).map_err(|m| super::connect_error(s, target_name, m))?;
        let ssl = policy.mysql_opts().map_err(|m| super::connect_error(s, target_name, m))?;
        let opts = OptsBuilder::default()
            .ip_or_hostname(s.host.clone())
            .tcp_port(s.port)
            .user(Some(s.user.clone()))
            .pass((!s.password.is_empty()).then(|| s.password.expose().to_owned()))
            .prefer_socket(false);
        let mut conn = match Conn::new(opts.clone().ssl_opts(ssl)).await {
            // `prefer`: plain text when the server offers no TLS, as libpq does.
            Err(mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer)) if policy.optional => {
                Conn::new(opts).await.map_err(fail)?
            }
            other => other.map_err(fail)?,
        };
        conn.query_drop("SET SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES'), time_zone = '+00:00'")
            .await
            .map_err(fail)?;
        Ok(Mysql { conn, local_infile: s.local_infile.unwrap_or(true) })
    }

    pub async fn existing(&mut self, table: &TableName) -> Result<Option<Vec<TargetColumn>>, BackendError> {
        let rows: Vec<(String, String, i64, i64)> = self
            .conn
            .exec(
                "SELECT COLUMN_NAME, LOWER(COLUMN_TYPE), IS_NULLABLE = 'NO', COLUMN_DEFAULT IS NOT NULL \
                 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                (table.schema.as_str(), table.name.as_str()),
            )
            .await
            .map_err(|e| db_error(table, "reading the table's columns", &e))?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            rows.into_iter()
                .map(|(name, sql_type, not_null, has_default)| TargetColumn {
                    name,
                    sql_type,
                    not_null: not_null != 0,
                    has_default: has_default != 0,
                })
                .collect(),
        ))
    }

    /// Whether the table exists, and the columns to add to it.
    async fn preflight(&mut self, job: &LoadJob) -> Result<(bool, Vec<String>), BackendError> {
        let existing = self.existing(&job.table).await?;
        preflight::check_existing(job, existing.as_deref(), family, true)?;
        let t = qualified(&job.table);
        let mut alter: Vec<String> = preflight::columns_to_add(job, existing.as_deref(), true)
            .into_iter()
            .map(|c| format!("ALTER TABLE {t} ADD COLUMN {} {}", q(&c.name), sql_type(c)))
            .collect();
        let (drop, retype) = preflight::columns_to_sync(job, existing.as_deref(), true);
        alter.extend(drop.into_iter().map(|c| format!("ALTER TABLE {t} DROP COLUMN {}", q(&c.name))));
        alter.extend(
            retype.into_iter().map(|c| format!("ALTER TABLE {t} MODIFY COLUMN {} {}", q(&c.name), sql_type(c))),
        );
        Ok((existing.is_some(), alter))
    }

    pub async fn dry_run(&mut self, job: &LoadJob) -> Result<Vec<String>, BackendError> {
        let (exists, add) = self.preflight(job).await?;
        let p = plan(job, exists, add);
        let mut out = p.ddl_before;
        out.push("START TRANSACTION".into());
        out.push(format!("{}  -- {} rows from the stage", load_data_sql(&p.rows_into, &job.columns), job.rows()));
        out.extend(p.dml_after);
        out.push("COMMIT".into());
        out.extend(p.ddl_after);
        Ok(out)
    }

    pub async fn load(&mut self, job: &LoadJob, rows: &Arc<AtomicU64>) -> Result<LoadReport, BackendError> {
        let started = Instant::now();
        let (exists, add) = self.preflight(job).await?;
        let p = plan(job, exists, add);
        let result = self.run_plan(job, &p, rows).await;
        if result.is_err() {
            let _ = self.conn.query_drop("ROLLBACK").await;
            if let Some(sql) = &p.cleanup {
                let _ = self.conn.query_drop(sql).await;
            }
        }
        let (loaded, strategy, notes) = result?;
        Ok(LoadReport {
            table: job.table.to_string(),
            mode: job.mode.name(),
            rows: loaded,
            strategy,
            seconds: started.elapsed().as_secs_f64(),
            notes,
        })
    }

    async fn run_plan(
        &mut self,
        job: &LoadJob,
        p: &Plan,
        rows: &Arc<AtomicU64>,
    ) -> Result<(u64, String, Vec<String>), BackendError> {
        let t = &job.table;
        for sql in &p.ddl_before {
            self.execute(t, sql).await?;
        }
        let step = Instant::now();
        let mut notes = Vec::new();
        let deleted = job.deleted_keys(TableName { schema: t.schema.clone(), name: "ferry_deleted".into() });
        if let Some(keys) = &deleted {
            let into = qualified(&keys.table);
            self.execute(t, &format!("DROP TEMPORARY TABLE IF EXISTS {into}")).await?;
            self.execute(t, &create(&keys.table, keys, true)).await?;
        }
        self.conn.query_drop("START TRANSACTION").await.map_err(|e| db_error(t, "starting a transaction", &e))?;
        if let Some(keys) = &deleted {
            // Records gone from a change-detected extract: out (or
            // flagged) in this transaction.
            let into = qualified(&keys.table);
            self.load_keys(keys, &into).await?;
            let on: Vec<String> = job.unique_key.iter().map(|k| format!("t.{0} = d.{0}", q(k))).collect();
            let (sql, done) = match job.deletes.as_ref().and_then(|d| d.soft.as_ref()) {
                None => {
                    (format!("DELETE t FROM {} AS t JOIN {into} AS d ON {}", qualified(t), on.join(" AND ")), "deleted")
                }
                Some(soft) => (
                    format!(
                        "UPDATE {} AS t JOIN {into} AS d ON {} SET {}",
                        qualified(t),
                        on.join(" AND "),
                        soft.set_list(q, "t.")
                    ),
                    "flagged deleted",
                ),
            };
            self.execute(t, &sql).await?;
            notes.push(format!("{} rows {done}", self.conn.affected_rows()));
            self.execute(t, &format!("DROP TEMPORARY TABLE IF EXISTS {into}")).await?;
        }
        let mut strategy = "LOAD DATA LOCAL INFILE".to_owned();
        let loaded = if self.local_infile {
            match self.load_data(job, &p.rows_into, rows).await {
                Err(e) if refused(&e) => {
                    notes.push(format!(
                        "the server refused LOAD DATA LOCAL INFILE ({e}); loaded with multi-row INSERTs instead"
                    ));
                    strategy = "multi-row INSERT (fallback)".into();
                    rows.store(0, Ordering::Relaxed);
                    self.insert_rows(job, &p.rows_into, rows).await?
                }
                Err(e) => return Err(db_error(t, "loading rows (LOAD DATA)", &e)),
                Ok(n) => n,
            }
        } else {
            strategy = "multi-row INSERT (local_infile: false)".into();
            self.insert_rows(job, &p.rows_into, rows).await?
        };
        tracing::debug!(elapsed = ?step.elapsed(), rows = loaded, "{strategy} into {}", p.rows_into);
        self.check_warnings(t, "loading rows").await?;
        if loaded != job.rows() {
            return Err(BackendError::RowCount { table: t.to_string(), expected: job.rows(), loaded });
        }
        for sql in &p.dml_after {
            self.execute(t, sql).await?;
            self.check_warnings(t, sql).await?;
        }
        self.conn.query_drop("COMMIT").await.map_err(|e| db_error(t, "committing", &e))?;
        for sql in &p.ddl_after {
            self.execute(t, sql).await?;
        }
        Ok((loaded, strategy, notes))
    }

    /// Runs one statement, logging its time.
    async fn execute(&mut self, t: &TableName, sql: &str) -> Result<(), BackendError> {
        let step = Instant::now();
        self.conn.query_drop(sql).await.map_err(|e| db_error(t, &format!("running `{sql}`"), &e))?;
        tracing::debug!(elapsed = ?step.elapsed(), "{sql}");
        Ok(())
    }

    async fn load_data(&mut self, job: &LoadJob, into: &str, rows: &Arc<AtomicU64>) -> Result<u64, mysql_async::Error> {
        // Rows are encoded as LOAD DATA text on the reading thread, so
        // encoding overlaps sending.
        let (columns, model) = (job.columns.clone(), job.model.clone());
        let chunks = job.read_with(move |batch| {
            let mut buf = Vec::with_capacity(batch.num_rows() * 64);
            infile::encode(&batch, &columns, &mut buf)
                .map_err(|e| BackendError::Read { model: model.clone(), message: e.to_string() })?;
            Ok((Bytes::from(buf), batch.num_rows() as u64))
        });
        let stream = futures::stream::unfold((chunks, Arc::clone(rows)), |(mut chunks, rows)| async move {
            let chunk = chunks.recv().await?.map_err(|e| std::io::Error::other(e.to_string()));
            let bytes = chunk.map(|(bytes, n)| {
                rows.fetch_add(n, Ordering::Relaxed);
                bytes
            });
            Some((bytes, (chunks, rows)))
        });
        self.conn.set_infile_handler(async move { Ok(stream.boxed()) });
        self.conn.query_drop(load_data_sql(into, &job.columns)).await?;
        Ok(self.conn.affected_rows())
    }

    async fn insert_rows(&mut self, job: &LoadJob, into: &str, rows: &Arc<AtomicU64>) -> Result<u64, BackendError> {
        let t = &job.table;
        let cols = job.columns.iter().map(|c| q(&c.name)).collect::<Vec<_>>().join(", ");
        let per_row = format!("({})", vec!["?"; job.columns.len()].join(", "));
        let rows_per_stmt = (60_000 / job.columns.len().max(1)).clamp(1, 1000);
        let mut batches = job.read();
        let mut params: Vec<Value> = Vec::with_capacity(rows_per_stmt * job.columns.len());
        let mut pending = 0usize;
        let mut loaded = 0u64;
        while let Some(batch) = batches.recv().await {
            let batch = batch?;
            // Columns borrow the batch and are not Send: gather values first.
            let mut values = Vec::with_capacity(batch.num_rows());
            {
                let mut cols_ = cells::columns(&batch)
                    .map_err(|e| BackendError::Read { model: job.model.clone(), message: e.to_string() })?;
                for row in 0..batch.num_rows() {
                    let row_values: Vec<Value> =
                        cols_.iter_mut().zip(&job.columns).map(|(c, spec)| value(c.cell(row), spec)).collect();
                    values.push(row_values);
                }
            }
            for row_values in values {
                params.extend(row_values);
                pending += 1;
                if pending == rows_per_stmt {
                    loaded += self.insert(t, into, &cols, &per_row, pending, std::mem::take(&mut params)).await?;
                    rows.fetch_add(pending as u64, Ordering::Relaxed);
                    pending = 0;
                }
            }
        }
        if pending > 0 {
            loaded += self.insert(t, into, &cols, &per_row, pending, params).await?;
            rows.fetch_add(pending as u64, Ordering::Relaxed);
        }
        Ok(loaded)
    }

    async fn insert(
        &mut self,
        t: &TableName,
        into: &str,
        cols: &str,
        per_row: &str,
        n: usize,
        params: Vec<Value>,
    ) -> Result<u64, BackendError> {
        let sql = format!("INSERT INTO {into} ({cols}) VALUES {}", vec![per_row; n].join(", "));
        self.conn.exec_drop(sql, params).await.map_err(|e| db_error(t, "inserting rows", &e))?;
        Ok(self.conn.affected_rows())
    }

    async fn check_warnings(&mut self, t: &TableName, doing: &str) -> Result<(), BackendError> {
        if self.conn.get_warnings() == 0 {
            return Ok(());
        }
        let warnings: Vec<(String, u32, String)> =
            self.conn.query("SHOW WARNINGS LIMIT 5").await.map_err(|e| db_error(t, "reading warnings", &e))?;
        let text = warnings.iter().map(|(_, code, msg)| format!("{msg} ({code})")).collect::<Vec<_>>().join("; ");
        Err(BackendError::Database { table: t.to_string(), doing: doing.to_owned(), message: text })
    }

    /// The server's version and the connection's TLS, as the server sees it.
    pub async fn describe(&mut self) -> Result<String, BackendError> {
        let fail = |e: mysql_async::Error| BackendError::Connect { target: "MySQL".into(), message: tls_message(&e) };
        let version: Option<String> = self.conn.query_first("SELECT VERSION()").await.map_err(fail)?;
        let status: Vec<(String, String)> = self
            .conn
            .query("SHOW SESSION STATUS WHERE Variable_name IN ('Ssl_version', 'Ssl_cipher')")
            .await
            .map_err(fail)?;
        let get = |name: &str| status.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap_or_default();
        let tls = match get("Ssl_version") {
            v if v.is_empty() => "not encrypted".to_owned(),
            v => format!("TLS {v} ({})", get("Ssl_cipher")),
        };
        Ok(format!("MySQL {}, {tls}", version.unwrap_or_default()))
    }

    /// Swaps `<table>__ferry_prev` back in with one atomic `RENAME TABLE`.
    pub async fn rollback(&mut self, table: &TableName) -> Result<(), BackendError> {
        let prev = table.sibling(PREV_SUFFIX, MAX_IDENT);
        let swap = table.sibling("__ferry_swap", MAX_IDENT);
        if self.existing(&prev).await?.is_none() {
            return Err(BackendError::nothing_to_restore(table, &prev));
        }
        let sql = if self.existing(table).await?.is_some() {
            format!(
                "RENAME TABLE {t} TO {s}, {p} TO {t}, {s} TO {p}",
                t = qualified(table),
                s = qualified(&swap),
                p = qualified(&prev)
            )
        } else {
            format!("RENAME TABLE {} TO {}", qualified(&prev), qualified(table))
        };
        self.conn.query_drop(&sql).await.map_err(|e| db_error(table, "swapping the tables", &e))
    }
}

fn value(cell: Cell<'_>, spec: &LoadColumn) -> Value {
    match cell {
        Cell::Null => Value::NULL,
        Cell::Bool(b) => Value::Int(i64::from(b)),
        Cell::Int(v) => Value::Int(v),
        Cell::UInt(v) => Value::UInt(v),
        Cell::Float(v) if matches!(spec.data_type, DataType::Float32) => Value::Float(v as f32),
        Cell::Float(v) => Value::Double(v),
        Cell::Decimal(v, s) => Value::Bytes(cells::decimal128_text(v, s).into_bytes()),
        Cell::BigDecimal(d, s) => Value::Bytes(cells::decimal_text(&d, s).into_bytes()),
        Cell::Text(s) => Value::Bytes(s.as_bytes().to_vec()),
        Cell::Bytes(b) => Value::Bytes(b.to_vec()),
        Cell::Date(d) => Value::Bytes(cells::date_text(d).into_bytes()),
        Cell::Timestamp(us) => Value::Bytes(cells::timestamp_text(us).into_bytes()),
        Cell::Time(us) => Value::Bytes(cells::time_text(us).into_bytes()),
        Cell::Interval { months, days, micros } => {
            Value::Bytes(cells::interval_text(months, days, micros).into_bytes())
        }
        Cell::Json(s) => Value::Bytes(s.into_bytes()),
    }
}

#[async_trait::async_trait]
impl super::Backend for Mysql {
    fn kind(&self) -> super::DatabaseKind {
        super::DatabaseKind::Mysql
    }

    async fn describe(&mut self) -> Result<String, BackendError> {
        Mysql::describe(self).await
    }

    async fn load(&mut self, job: &LoadJob, rows: &Arc<AtomicU64>) -> Result<LoadReport, BackendError> {
        Mysql::load(self, job, rows).await
    }

    async fn dry_run(&mut self, job: &LoadJob) -> Result<Vec<String>, BackendError> {
        Mysql::dry_run(self, job).await
    }

    async fn rollback(&mut self, table: &TableName) -> Result<(), BackendError> {
        Mysql::rollback(self, table).await
    }

    async fn table_columns(&mut self, table: &TableName) -> Result<Option<Vec<TargetColumn>>, BackendError> {
        Mysql::existing(self, table).await
    }

    async fn reconcile_side(
        &mut self,
        spec: &Spec,
        choice: SideChoice,
        rows: u64,
    ) -> Result<(Side, String), BackendError> {
        Ok(Mysql::reconcile_side(self, spec, choice, rows))
    }

    async fn reconcile_scope(&mut self, job: &LoadJob) -> Result<u64, BackendError> {
        Mysql::reconcile_scope(self, job).await
    }

    async fn pushed_summary(&mut self, spec: &Spec) -> Result<(SegmentSums, Profile), BackendError> {
        self.reconcile_summary(spec).await
    }

    async fn pushed_rows(&mut self, spec: &Spec, segments: &[u64]) -> Result<Option<Vec<FetchedRow>>, BackendError> {
        self.reconcile_rows(spec, segments).await.map(Some)
    }

    async fn pull_rows(&mut self, spec: &Spec, sink: Box<dyn RowSink>) -> Result<Box<dyn RowSink>, BackendError> {
        Mysql::pull_rows(self, spec, sink).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_from_column_type() {
        assert_eq!(family("int(11)"), Family::Int(4));
        assert_eq!(family("bigint(20) unsigned"), Family::UInt(8));
        assert_eq!(family("decimal(12,2)"), Family::Decimal(Some((12, 2))));
        assert_eq!(family("varchar(20)"), Family::Text(Some(20)));
        assert_eq!(family("datetime(6)"), Family::Timestamp);
    }
}
