//! Live databases as sources: PostgreSQL read with binary COPY and decoded
//! by ferry where it can ([`crate::backend::postgres::extract`]), and
//! otherwise, and MySQL/MariaDB, SQLite and SQL Server, through connectorx.
//! connectorx builds arrow 56 batches; each crosses to DataFusion's arrow
//! through the Arrow C data interface, without copying.
//!
//! A table is scanned with the columns and simple filters DataFusion pushes
//! down, split by `partition_on` into key ranges read in parallel, one
//! connection each, plus one partition for rows whose key is NULL.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use connectorx::get_arrow::new_record_batch_iter;
use connectorx::source_router::SourceConn;
use connectorx::sql::CXQuery;
use datafusion::arrow::array::{Array, RecordBatch, StructArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::scalar::ScalarValue;
use datafusion::sql::unparser::Unparser;
use datafusion::sql::unparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect, SqliteDialect};
use serde_json::Value as Json;

use super::SpecError;
use crate::backend::DatabaseKind;
use crate::backend::postgres::extract as postgres;

/// Rows per batch connectorx builds.
const BATCH_ROWS: usize = 8192;

/// A database source that cannot be read, and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot read `{table}` from the database: {message}")]
pub struct ExtractError {
    /// The source table (`legacy.customers`).
    pub table: String,
    pub message: String,
    /// A column whose type has no Arrow mapping, when known.
    pub column: Option<String>,
}

/// DataFusion's unparser dialect for the SQL a scan sends to `kind`.
fn unparser_dialect(kind: DatabaseKind) -> Box<dyn Dialect + Send + Sync> {
    match kind {
        DatabaseKind::Postgres | DatabaseKind::Mssql => Box::new(PostgreSqlDialect {}),
        DatabaseKind::Mysql => Box::new(MySqlDialect {}),
        DatabaseKind::Sqlite => Box::new(SqliteDialect {}),
    }
}

/// A connection URL; its password never prints.
#[derive(Clone)]
pub struct Url(String);

impl fmt::Debug for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match url::Url::parse(&self.0) {
            Ok(mut u) => {
                if u.password().is_some() {
                    let _ = u.set_password(Some("***"));
                }
                write!(f, "{u}")
            }
            Err(_) => write!(f, "<url>"),
        }
    }
}

/// What to read: a table, or a query.
#[derive(Debug, Clone)]
enum Base {
    Table(String),
    Query(String),
}

/// A database source table.
#[derive(Debug)]
pub struct DatabaseSpec {
    /// The source table, for messages (`legacy.customers`).
    pub table: String,
    kind: DatabaseKind,
    url: Url,
    base: Base,
    /// `partition_on` and `partitions`.
    partition: Option<(String, usize)>,
    /// A table's fixed-point columns with their declared precision and
    /// scale (found with the schema), read exactly at that scale: see
    /// [`read_exactly_by_connectorx`].
    exact: std::sync::OnceLock<std::collections::HashMap<String, DataType>>,
}

impl DatabaseSpec {
    /// From the source's keys and its connection's URL.
    pub fn of(table: &str, url: String, location: &serde_json::Map<String, Json>) -> Result<Self, SpecError> {
        let kind = DatabaseKind::of_url(&url).ok_or(SpecError::NotADatabaseUrl)?;
        let text = |k: &str| location.get(k).and_then(Json::as_str).map(str::to_owned);
        let base = match (text("table"), text("query")) {
            (Some(t), None) => Base::Table(t.split('.').map(|p| kind.quote(p)).collect::<Vec<_>>().join(".")),
            (None, Some(q)) => Base::Query(q.trim().trim_end_matches(';').to_owned()),
            (Some(_), Some(_)) | (None, None) => return Err(SpecError::TableOrQuery),
        };
        let partition = match (text("partition_on"), location.get("partitions")) {
            (None, None) => None,
            (Some(col), n) => {
                let n = match n {
                    None => 2,
                    Some(v) => v.as_u64().filter(|&n| n >= 1).ok_or_else(|| SpecError::Invalid {
                        key: "partitions",
                        value: v.to_string(),
                        expected: "a whole number from 1",
                    })? as usize,
                };
                Some((col, n))
            }
            (None, Some(_)) => return Err(SpecError::PartitionsWithoutKey),
        };
        Ok(DatabaseSpec { table: table.to_owned(), kind, url: Url(url), base, partition, exact: Default::default() })
    }

    fn conn(&self) -> Result<SourceConn, ExtractError> {
        if self.kind == DatabaseKind::Mssql && !cfg!(feature = "mssql") {
            return Err(self.error(
                "SQL Server sources are not compiled into this build of ferry: build it with `--features mssql` \
                 (connectorx's driver needs libclang-dev and libkrb5-dev)"
                    .to_owned(),
            ));
        }
        let mut conn = SourceConn::try_from(self.url.0.as_str()).map_err(|e| self.error(e.to_string()))?;
        // connectorx reads PostgreSQL with `COPY ... (FORMAT binary)` unless
        // told otherwise, and its COPY reader enters the async runtime once
        // per row; its `cursor` protocol (a streamed query, binary results)
        // reads the same types with less client CPU: W1's 6M-row extract
        // takes 8.5-9.0 s against 9.4-10.2 s. A URL's own `cxprotocol` wins.
        let named = url::Url::parse(&self.url.0).is_ok_and(|u| u.query_pairs().any(|(k, _)| k == "cxprotocol"));
        if self.kind == DatabaseKind::Postgres && !named {
            conn.set_protocol("cursor");
        }
        Ok(conn)
    }

    /// Whether the server's port answers at all, within a few seconds:
    /// connectorx's pool would retry for 30 s, logging each try, before
    /// saying only "timed out". Names the server, never the password.
    fn reachable(&self) -> Result<(), ExtractError> {
        use std::net::ToSocketAddrs as _;
        const WAIT: std::time::Duration = std::time::Duration::from_secs(5);
        let (name, default_port) = match self.kind {
            DatabaseKind::Postgres => ("PostgreSQL", 5432),
            DatabaseKind::Mysql => ("MySQL", 3306),
            DatabaseKind::Sqlite | DatabaseKind::Mssql => return Ok(()),
        };
        let Ok(url) = url::Url::parse(&self.url.0) else { return Ok(()) };
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else { return Ok(()) };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = url.port().unwrap_or(default_port);
        let user = match url.username() {
            "" => String::new(),
            u => format!(" as `{u}`"),
        };
        let server = format!("{name} at {host}:{port}{user}");
        let addrs: Vec<_> = (host, port)
            .to_socket_addrs()
            .map_err(|e| self.error(format!("cannot connect to {server}: the host does not resolve ({e})")))?
            .collect();
        let mut last = None;
        for addr in &addrs {
            match std::net::TcpStream::connect_timeout(addr, WAIT) {
                Ok(_) => {
                    return match self.refused_login() {
                        Some(why) => Err(self.error(format!("{server} refused the login: {why}"))),
                        None => Ok(()),
                    };
                }
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                Err(self.error(format!("cannot connect to {server}: no answer within {} s", WAIT.as_secs())))
            }
            Some(e) => Err(self.error(format!("cannot connect to {server}: {e}"))),
            None => Ok(()),
        }
    }

    /// The server's refusal of this URL's login (user, password,
    /// database), found with a login of ferry's own drivers where they read
    /// the URL; anything else is left to connectorx to find.
    fn refused_login(&self) -> Option<String> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        match self.kind {
            DatabaseKind::Postgres => {
                let connect = crate::backend::postgres::extract::Connect::of_url(&self.url.0)?;
                runtime.block_on(connect.refused_login())
            }
            DatabaseKind::Mysql => {
                let opts = mysql_async::Opts::from_url(&self.url.0).ok()?;
                let wait = std::time::Duration::from_secs(10);
                match runtime.block_on(tokio::time::timeout(wait, mysql_async::Conn::new(opts))) {
                    // Access denied (for the user, to the database), unknown database.
                    Ok(Err(mysql_async::Error::Server(e))) => matches!(e.code, 1044 | 1045 | 1049).then_some(e.message),
                    Ok(Ok(conn)) => {
                        let _ = runtime.block_on(conn.disconnect());
                        None
                    }
                    _ => None,
                }
            }
            DatabaseKind::Sqlite | DatabaseKind::Mssql => None,
        }
    }

    fn error(&self, message: String) -> ExtractError {
        ExtractError { table: self.table.clone(), message, column: None }
    }

    /// `SELECT <columns> FROM <base> WHERE <conditions>`; every column for
    /// `None`, and a constant when no column is needed (`count(*)`). For
    /// connectorx, decimals wider than it reads exactly are selected as
    /// text; PostgreSQL's COPY reader (`copy`) takes them as they are, and
    /// no column at all where none is needed.
    fn select(&self, columns: Option<&[String]>, conditions: &[String], copy: bool) -> String {
        let exact = self.exact.get();
        let column = |c: &String| {
            let quoted = self.kind.quote(c);
            let as_text = !copy && exact.and_then(|e| e.get(c)).is_some_and(|t| !read_exactly_by_connectorx(t));
            match (as_text, self.kind) {
                (true, DatabaseKind::Mysql) => format!("CAST({quoted} AS CHAR) AS {quoted}"),
                (true, _) => format!("CAST({quoted} AS TEXT) AS {quoted}"),
                (false, _) => quoted,
            }
        };
        let list = match columns {
            None => "*".to_owned(),
            Some([]) if !copy => "1 AS __ferry_row".to_owned(),
            Some([]) => String::new(),
            Some(columns) => columns.iter().map(column).collect::<Vec<_>>().join(", "),
        };
        let from = match &self.base {
            Base::Table(t) => t.clone(),
            Base::Query(q) => format!("({q}) AS {}", self.kind.quote("__ferry_q")),
        };
        match conditions {
            [] => format!("SELECT {list} FROM {from}"),
            _ => format!("SELECT {list} FROM {from} WHERE {}", conditions.join(" AND ")),
        }
    }

    /// The columns and their Arrow types, from the database (blocking).
    pub fn schema(&self) -> Result<SchemaRef, ExtractError> {
        self.reachable()?;
        let conn = self.conn()?;
        // Building the reader fetches the result's metadata, not its rows.
        let query = self.select(None, &[], false);
        let iter = catch(|| new_record_batch_iter(&conn, None, &[CXQuery::naked(&query)], BATCH_ROWS, None))
            .map_err(|m| self.unreadable(m))?
            .map_err(|e| self.error(chain(&e)))?;
        let (empty, _) = iter.get_schema();
        let batch = bridge(empty).map_err(|e| self.error(e.to_string()))?;
        let exact = self.exact.get_or_init(|| self.declared_decimals());
        let fields: Vec<Field> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), exact.get(f.name()).unwrap_or(f.data_type()).clone(), true))
            .collect();
        Ok(Arc::new(Schema::new(fields)))
    }

    /// A table's `numeric(p, s)` / `decimal(p, s)` columns (p up to 38) as
    /// `Decimal128(p, s)`, from the catalog; none for a query, or where the
    /// catalog cannot be read (connectorx's own mapping applies then).
    fn declared_decimals(&self) -> std::collections::HashMap<String, DataType> {
        let Some((schema, table)) = self.schema_and_table() else { return Default::default() };
        let literal = |v: &str| format!("'{}'", v.replace('\'', "''"));
        let query = match self.kind {
            DatabaseKind::Postgres => format!(
                "SELECT column_name::text, numeric_precision::int8, numeric_scale::int8 FROM information_schema.columns \
                 WHERE table_schema = {} AND table_name = {} AND data_type = 'numeric' AND numeric_precision IS NOT NULL",
                schema.map_or_else(|| "current_schema()".to_owned(), literal),
                literal(table)
            ),
            DatabaseKind::Mysql => format!(
                "SELECT CAST(COLUMN_NAME AS CHAR), CAST(NUMERIC_PRECISION AS SIGNED), CAST(NUMERIC_SCALE AS SIGNED) \
                 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} AND DATA_TYPE = 'decimal'",
                schema.map_or_else(|| "DATABASE()".to_owned(), literal),
                literal(table)
            ),
            DatabaseKind::Sqlite | DatabaseKind::Mssql => return Default::default(),
        };
        let mut exact = std::collections::HashMap::new();
        for batch in self.catalog(&query).unwrap_or_default() {
            use datafusion::arrow::array::AsArray;
            let text = |k: usize| datafusion::arrow::compute::cast(batch.column(k), &DataType::Utf8).ok();
            let (Some(names), Some(p), Some(s)) = (text(0), text(1), text(2)) else { continue };
            let (names, p, s) = (names.as_string::<i32>(), p.as_string::<i32>(), s.as_string::<i32>());
            for i in 0..batch.num_rows() {
                let (Ok(p), Ok(s)) = (p.value(i).parse::<u8>(), s.value(i).parse::<i8>()) else { continue };
                if (1..=38).contains(&p) {
                    exact.insert(names.value(i).to_owned(), DataType::Decimal128(p, s));
                }
            }
        }
        exact
    }

    /// The rows of a catalog query (blocking); `None` when it cannot be
    /// read, which callers treat as knowing nothing more.
    fn catalog(&self, query: &str) -> Option<Vec<RecordBatch>> {
        let conn = self.conn().ok()?;
        let mut iter = catch(|| new_record_batch_iter(&conn, None, &[CXQuery::naked(query)], 1024, None)).ok()?.ok()?;
        catch(|| iter.prepare()).ok()?;
        let mut out = Vec::new();
        while let Some(b) = catch(|| iter.next_batch()).ok()? {
            out.push(bridge(b).ok()?);
        }
        Some(out)
    }

    /// A table source's schema (if named) and table, unquoted.
    fn schema_and_table(&self) -> Option<(Option<&str>, &str)> {
        let Base::Table(quoted) = &self.base else { return None };
        let parts: Vec<&str> = quoted.split('.').map(trim_quotes).collect();
        match parts.as_slice() {
            [s, t] => Some((Some(s), t)),
            [t] => Some((None, t)),
            _ => None,
        }
    }

    /// connectorx panics on a column type it has no mapping for
    /// (`not implemented: point`): name the column, for a table.
    fn unreadable(&self, message: String) -> ExtractError {
        let Some(ty) = message.strip_prefix("not implemented: ").map(str::trim) else { return self.error(message) };
        let column = self.column_of_type(ty);
        let message = match &column {
            Some(c) => format!("column `{c}` has the type `{ty}`, which connectorx cannot read"),
            None => format!("a column has the type `{ty}`, which connectorx cannot read"),
        };
        ExtractError { table: self.table.clone(), message, column }
    }

    /// The first column of the table with the database type `ty`, from the
    /// catalog (PostgreSQL and MySQL).
    fn column_of_type(&self, ty: &str) -> Option<String> {
        let (schema, table) = self.schema_and_table()?;
        let literal = |v: &str| format!("'{}'", v.replace('\'', "''"));
        let in_schema = schema.map(|s| format!(" AND table_schema = {}", literal(s))).unwrap_or_default();
        let type_column = match self.kind {
            DatabaseKind::Postgres => "udt_name",
            DatabaseKind::Mysql => "data_type",
            _ => return None,
        };
        let query = format!(
            "SELECT column_name FROM information_schema.columns WHERE table_name = {}{in_schema} AND {type_column} = {} ORDER BY ordinal_position",
            literal(table),
            literal(ty)
        );
        let batch = self.catalog(&query)?.into_iter().next()?;
        let column = batch.columns().first()?;
        let text = datafusion::arrow::compute::cast(column, &datafusion::arrow::datatypes::DataType::Utf8).ok()?;
        let text = text.as_any().downcast_ref::<datafusion::arrow::array::StringArray>()?;
        (!text.is_empty()).then(|| text.value(0).to_owned())
    }

    /// The key range of the partition column (blocking).
    fn key_range(&self, column: &str, conditions: &[String]) -> Result<(i64, i64), ExtractError> {
        let conn = self.conn()?;
        let query = self.select(Some(&[column.to_owned()]), conditions, false);
        catch(|| connectorx::partition::get_col_range(&conn, &query, &self.kind.quote(column)))
            .map_err(|m| self.error(m))?
            .map_err(|e| self.error(format!("cannot find the range of `{column}` to partition on: {}", chain(&e))))
    }

    /// The queries of a scan: one per key range, and one for NULL keys.
    fn queries(&self, columns: &[String], conditions: &[String], copy: bool) -> Result<Vec<String>, ExtractError> {
        let Some((key, n)) = &self.partition else { return Ok(vec![self.select(Some(columns), conditions, copy)]) };
        let (min, max) = self.key_range(key, conditions)?;
        let quoted = self.kind.quote(key);
        let span = (i128::from(max) - i128::from(min) + 1).max(1);
        let n = (*n as i128).min(span);
        let mut queries = Vec::new();
        for i in 0..n {
            let lo = i128::from(min) + span * i / n;
            let hi = i128::from(min) + span * (i + 1) / n;
            let mut c = conditions.to_vec();
            c.push(format!("{quoted} >= {lo}"));
            if i + 1 < n {
                c.push(format!("{quoted} < {hi}"));
            }
            queries.push(self.select(Some(columns), &c, copy));
        }
        let mut c = conditions.to_vec();
        c.push(format!("{quoted} IS NULL"));
        queries.push(self.select(Some(columns), &c, copy));
        Ok(queries)
    }

    /// A filter as the database's SQL, when it is a simple column
    /// predicate whose result the database computes the same way (or keeps
    /// more rows, which DataFusion then filters again).
    fn pushed(&self, filter: &Expr) -> Option<String> {
        if !self.simple(filter) {
            return None;
        }
        let unqualified = filter
            .clone()
            .transform(|e| {
                Ok(match e {
                    Expr::Column(c) => {
                        Transformed::yes(Expr::Column(datafusion::common::Column::new_unqualified(c.name)))
                    }
                    other => Transformed::no(other),
                })
            })
            .ok()?
            .data;
        let dialect = unparser_dialect(self.kind);
        let sql = Unparser::new(dialect.as_ref()).expr_to_sql(&unqualified).ok()?;
        Some(sql.to_string())
    }

    fn simple(&self, e: &Expr) -> bool {
        let ordered_literal = |v: &ScalarValue| {
            matches!(
                v,
                ScalarValue::Int8(Some(_))
                    | ScalarValue::Int16(Some(_))
                    | ScalarValue::Int32(Some(_))
                    | ScalarValue::Int64(Some(_))
                    | ScalarValue::UInt8(Some(_))
                    | ScalarValue::UInt16(Some(_))
                    | ScalarValue::UInt32(Some(_))
                    | ScalarValue::UInt64(Some(_))
                    | ScalarValue::Float64(Some(_))
                    | ScalarValue::Decimal128(Some(_), _, _)
                    | ScalarValue::Date32(Some(_))
                    // Without a time zone: compared as the database's own
                    // `timestamp` / `DATETIME` (an incremental cursor's mark).
                    | ScalarValue::TimestampSecond(Some(_), None)
                    | ScalarValue::TimestampMillisecond(Some(_), None)
                    | ScalarValue::TimestampMicrosecond(Some(_), None)
                    | ScalarValue::TimestampNanosecond(Some(_), None)
            )
        };
        // Text equality keeps at least the rows DataFusion keeps (MySQL's
        // collations compare case-blind); text order depends on collation.
        let equal_literal = |v: &ScalarValue| {
            ordered_literal(v) || matches!(v, ScalarValue::Utf8(Some(_)) | ScalarValue::Boolean(Some(_)))
        };
        match e {
            Expr::BinaryExpr(b) => match b.op {
                Operator::And | Operator::Or => self.simple(&b.left) && self.simple(&b.right),
                Operator::Eq => column_and_literal(&b.left, &b.right, &equal_literal),
                Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq => {
                    column_and_literal(&b.left, &b.right, &ordered_literal)
                }
                _ => false,
            },
            Expr::IsNull(inner) | Expr::IsNotNull(inner) => matches!(inner.as_ref(), Expr::Column(_)),
            Expr::InList(l) => {
                !l.negated
                    && matches!(l.expr.as_ref(), Expr::Column(_))
                    && l.list.iter().all(|v| matches!(v, Expr::Literal(s, _) if equal_literal(s)))
            }
            Expr::Between(b) => {
                !b.negated
                    && matches!(b.expr.as_ref(), Expr::Column(_))
                    && [&b.low, &b.high].iter().all(|v| matches!(v.as_ref(), Expr::Literal(s, _) if ordered_literal(s)))
            }
            _ => false,
        }
    }
}

/// What reads a scan's queries.
#[derive(Debug, Clone)]
enum Reader {
    Connectorx,
    /// PostgreSQL's binary COPY, decoded by ferry (see
    /// [`crate::backend::postgres::extract`]) into the scan's columns as the
    /// database types them (`native`), which `decoders` decode in order.
    Copy {
        connect: Arc<postgres::Connect>,
        decoders: Arc<[postgres::Decode]>,
        native: SchemaRef,
    },
}

impl DatabaseSpec {
    /// PostgreSQL's COPY reader for a scan of the `native` columns (as the
    /// database types them) when it decodes every one of them and the URL
    /// needs nothing only connectorx does; connectorx otherwise.
    async fn reader(&self, native: SchemaRef) -> Result<Reader, ExtractError> {
        let connect = match self.kind {
            DatabaseKind::Postgres => postgres::Connect::of_url(&self.url.0),
            DatabaseKind::Mysql | DatabaseKind::Sqlite | DatabaseKind::Mssql => None,
        };
        let Some(connect) = connect else { return Ok(Reader::Connectorx) };
        let columns: Vec<String> = native.fields().iter().map(|f| f.name().clone()).collect();
        let query = self.select(Some(&columns), &[], true);
        match postgres::plan(&connect, &query, &native).await.map_err(|m| self.error(m))? {
            Ok(decoders) => Ok(Reader::Copy { connect: Arc::new(connect), decoders: decoders.into(), native }),
            Err(why) => {
                tracing::debug!(table = %self.table, why, "read through connectorx");
                Ok(Reader::Connectorx)
            }
        }
    }
}

/// A quoted identifier's name (`"sales"` or `` `sales` ``).
fn trim_quotes(ident: &str) -> &str {
    ident.trim_matches(['"', '`', '[', ']'])
}

fn column_and_literal(a: &Expr, b: &Expr, ok: &dyn Fn(&ScalarValue) -> bool) -> bool {
    match (a, b) {
        (Expr::Column(_), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(_)) => ok(v),
        _ => false,
    }
}

/// An error with its sources: connectorx's own messages are terse (`db
/// error`), the driver's cause is below them.
fn chain(e: &dyn std::error::Error) -> String {
    crate::error::with_causes(e.to_string(), e)
}

thread_local! {
    /// Set while this thread runs connectorx code whose panics [`catch`]
    /// turns into errors.
    static CATCHING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs connectorx code, turning its panics (it panics on some errors, such
/// as a column type it cannot map) into an error message, without the panic
/// report on stderr that the message then repeats.
fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static QUIET_HOOK: std::sync::Once = std::sync::Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CATCHING.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    CATCHING.with(|c| c.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(false));
    result.map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "connectorx failed".to_owned())
    })
}

/// An arrow 56 batch from connectorx as an arrow 59 batch: the C data
/// interface carries the same buffers across.
fn bridge(batch: arrow56::record_batch::RecordBatch) -> Result<RecordBatch> {
    let schema56 = batch.schema();
    let rows = batch.num_rows();
    let data = arrow56::array::StructArray::from(batch);
    let (mut array56, mut schema56_ffi) = arrow56::ffi::to_ffi(&arrow56::array::Array::to_data(&data))
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    // SAFETY: both arrow versions define these structs as the C data
    // interface's `ArrowArray` and `ArrowSchema` (`#[repr(C)]`, the same
    // fields). `from_raw` moves the contents out and leaves released
    // structs behind, so each buffer is released exactly once.
    let (array, schema) = unsafe {
        (
            arrow::ffi::FFI_ArrowArray::from_raw((&raw mut array56).cast()),
            arrow::ffi::FFI_ArrowSchema::from_raw((&raw mut schema56_ffi).cast()),
        )
    };
    // SAFETY: the pair was exported together just above.
    let data = unsafe { arrow::ffi::from_ffi(array, &schema)? };
    let imported = StructArray::from(data);
    let fields: Vec<Field> = schema56
        .fields()
        .iter()
        .zip(imported.columns())
        .map(|(f, c)| Field::new(f.name(), c.data_type().clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let columns = imported.columns().to_vec();
    if columns.is_empty() {
        return Ok(RecordBatch::try_new_with_options(
            schema,
            columns,
            &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
        )?);
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// Whether connectorx reads a `Decimal128(p, s)` column exactly. It decodes
/// `numeric`/`decimal` through rust_decimal (28 significant digits) and
/// hands over `Decimal128(38, 10)`, so a column fits when its integer digits
/// plus ten fraction digits make at most 28 and its scale is at most 10; its
/// values then come over exactly and are rescaled to `(p, s)` without
/// rounding (the database holds them at scale `s`). Wider columns are
/// selected as text and parsed, which costs the server and ferry a text
/// round trip per value.
fn read_exactly_by_connectorx(declared: &DataType) -> bool {
    const DIGITS: i16 = 28;
    let scale = i16::from(connectorx::constants::DEFAULT_ARROW_DECIMAL_SCALE);
    match *declared {
        DataType::Decimal128(p, s) => {
            (0..=scale).contains(&i16::from(s)) && i16::from(p) - i16::from(s) + scale <= DIGITS
        }
        _ => false,
    }
}

/// The batch's columns as `schema` types them: fixed-point columns came as
/// connectorx's `Decimal128(38, 10)` or, when wider, as text, and are
/// converted exactly to their declared precision and scale; columns with a
/// declared `data_type` are cast to it. A value that does not convert is an
/// error naming the column, never a NULL or a rounding.
fn typed_columns(
    batch: &RecordBatch,
    schema: &SchemaRef,
    table: &str,
) -> Result<Vec<datafusion::arrow::array::ArrayRef>> {
    let options = datafusion::arrow::compute::CastOptions { safe: false, ..Default::default() };
    batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                return Ok(Arc::clone(c));
            }
            datafusion::arrow::compute::cast_with_options(c, f.data_type(), &options).map_err(|e| {
                DataFusionError::External(Box::new(ExtractError {
                    table: table.to_owned(),
                    message: format!("column `{}` does not convert to {}: {e}", f.name(), f.data_type()),
                    column: Some(f.name().clone()),
                }))
            })
        })
        .collect()
}

/// A batch read from the database as `schema` types it (see
/// [`typed_columns`]).
fn typed(batch: &RecordBatch, schema: &SchemaRef, table: &str) -> Result<RecordBatch> {
    // With no column needed, connectorx's query selected a constant.
    let columns = if schema.fields().is_empty() { Vec::new() } else { typed_columns(batch, schema, table)? };
    let options = datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)?)
}

/// The table DataFusion scans.
#[derive(Debug)]
pub struct DatabaseTable {
    spec: Arc<DatabaseSpec>,
    /// The columns as the database gives them (see [`DatabaseSpec::schema`]).
    native: SchemaRef,
    /// The columns with the source's declared `data_type`s, which the scan casts to.
    schema: SchemaRef,
}

impl DatabaseTable {
    pub fn new(spec: Arc<DatabaseSpec>, native: SchemaRef, schema: SchemaRef) -> Self {
        DatabaseTable { spec, native, schema }
    }

    /// Whether `filter` reads only columns the database types as declared:
    /// a filter on a recast column compares other values in the database.
    fn natively_typed(&self, filter: &Expr) -> bool {
        filter.column_refs().iter().all(|c| {
            matches!((self.native.field_with_name(&c.name), self.schema.field_with_name(&c.name)),
                (Ok(n), Ok(d)) if n.data_type() == d.data_type())
        })
    }
}

#[async_trait]
impl TableProvider for DatabaseTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| match self.spec.pushed(f) {
                Some(_) if self.natively_typed(f) => TableProviderFilterPushDown::Inexact,
                _ => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (schema, native) = match projection {
            Some(p) => (Arc::new(self.schema.project(p)?), Arc::new(self.native.project(p)?)),
            None => (Arc::clone(&self.schema), Arc::clone(&self.native)),
        };
        let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let reader = self.spec.reader(native).await.map_err(|e| DataFusionError::External(Box::new(e)))?;
        let conditions: Vec<String> =
            filters.iter().filter(|f| self.natively_typed(f)).filter_map(|f| self.spec.pushed(f)).collect();
        let spec = Arc::clone(&self.spec);
        // DataFusion passes a limit only when nothing filters above the
        // scan: each partition's query need not return more.
        let limit_clause = match (limit, self.spec.kind) {
            (Some(n), DatabaseKind::Postgres | DatabaseKind::Mysql | DatabaseKind::Sqlite) => format!(" LIMIT {n}"),
            _ => String::new(),
        };
        let copy = matches!(reader, Reader::Copy { .. });
        let queries = tokio::task::spawn_blocking(move || spec.queries(&columns, &conditions, copy))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let queries: Vec<String> = queries.into_iter().map(|q| format!("{q}{limit_clause}")).collect();
        let by = if copy { "binary COPY" } else { "connectorx" };
        tracing::debug!(table = %self.spec.table, ?queries, by, "database scan");
        let partitions: Vec<Arc<dyn PartitionStream>> = queries
            .into_iter()
            .map(|query| {
                Arc::new(QueryPartition {
                    spec: Arc::clone(&self.spec),
                    query,
                    schema: Arc::clone(&schema),
                    reader: reader.clone(),
                }) as Arc<dyn PartitionStream>
            })
            .collect();
        StreamingTable::try_new(Arc::clone(&schema), partitions)?.scan(state, None, &[], limit).await
    }
}

/// One query of a scan, read on its own connection.
#[derive(Debug)]
struct QueryPartition {
    spec: Arc<DatabaseSpec>,
    query: String,
    /// The columns as the scan gives them (declared types).
    schema: SchemaRef,
    reader: Reader,
}

impl PartitionStream for QueryPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStream::builder(Arc::clone(&self.schema), 2);
        let tx = builder.tx();
        let (spec, query, schema) = (Arc::clone(&self.spec), self.query.clone(), Arc::clone(&self.schema));
        if let Reader::Copy { connect, decoders, native } = &self.reader {
            let (connect, decoders, native) = (Arc::clone(connect), Arc::clone(decoders), Arc::clone(native));
            builder.spawn(async move {
                let table = spec.table.clone();
                // Called on the decoding thread; an error is sent, and ends the read.
                let emit = move |batch: RecordBatch| {
                    let batch = typed(&batch, &schema, &table);
                    let failed = batch.is_err();
                    tx.blocking_send(batch).is_ok() && !failed
                };
                postgres::read(&connect, &query, decoders, native, BATCH_ROWS, emit)
                    .await
                    .map_err(|m| DataFusionError::External(Box::new(spec.error(m))))
            });
            return builder.build();
        }
        builder.spawn_blocking(move || {
            let external = |e: ExtractError| DataFusionError::External(Box::new(e));
            let conn = spec.conn().map_err(external)?;
            let mut iter = catch(|| new_record_batch_iter(&conn, None, &[CXQuery::naked(&query)], BATCH_ROWS, None))
                .map_err(|m| external(spec.error(m)))?
                .map_err(|e| external(spec.error(chain(&e))))?;
            catch(|| iter.prepare()).map_err(|m| external(spec.error(m)))?;
            loop {
                let next = catch(|| iter.next_batch()).map_err(|m| external(spec.error(m)))?;
                let Some(batch) = next else { break };
                let batch = typed(&bridge(batch)?, &schema, &spec.table)?;
                if tx.blocking_send(Ok(batch)).is_err() {
                    break;
                }
            }
            Ok(())
        });
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connectorx_reads_decimals_of_up_to_28_digits_at_scale_10_exactly() {
        let fits = |p, s| read_exactly_by_connectorx(&DataType::Decimal128(p, s));
        assert!(fits(12, 2));
        assert!(fits(15, 2));
        assert!(fits(28, 10), "18 integer digits and 10 fraction digits");
        assert!(fits(18, 0));
        assert!(!fits(29, 10), "19 integer digits");
        assert!(!fits(19, 0), "19 integer digits at scale 10 make 29");
        assert!(!fits(20, 12), "more fraction digits than connectorx keeps");
        assert!(!fits(38, 10));
        assert!(!fits(5, -2), "a negative scale goes as text");
        assert!(!read_exactly_by_connectorx(&DataType::Utf8));
    }

    #[test]
    fn postgres_is_read_with_the_cursor_protocol_unless_the_url_names_one() {
        let location: serde_json::Map<String, Json> = serde_json::from_str(r#"{"table": "t"}"#).unwrap();
        let proto = |url: &str| DatabaseSpec::of("s.t", url.to_owned(), &location).unwrap().conn().unwrap().proto;
        assert_eq!(proto("postgresql://u@localhost:5432/db"), "cursor");
        assert_eq!(proto("postgresql://u@localhost:5432/db?sslmode=disable&cxprotocol=binary"), "binary");
        assert_eq!(proto("mysql://u@localhost:3306/db"), "binary");
    }
}
