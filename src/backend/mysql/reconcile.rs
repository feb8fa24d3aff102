//! Reconciliation on MySQL and MariaDB. Pushed down, the server computes
//! the canonical texts, the row and key hashes and the segment sums;
//! pulled, it computes the canonical texts only and streams them out to the
//! caller's sink, which hashes and profiles them with the stage side's code. Queries use
//! the text protocol, so every value arrives as text.

use mysql_async::Row;
use mysql_async::prelude::Queryable;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::{Mysql, create, db_error, q, qualified, refused};
use crate::backend::checksum::{
    FetchedRow, Group, KEY_MOD, KEY_MUL, KEY_PRIME, Measure, Profile, RowSink, SegmentSums, Side, SideChoice, Spec,
    SpecColumn, choose_side,
};
use crate::backend::pipe::{run_blocking, send_batches};
use crate::backend::{BackendError, LoadJob};
use crate::values::{Family, TableName};

/// Rows handed to the hashing thread at once, on the pulled side.
const ROWS_PER_BATCH: usize = 2048;

/// What the choice between the sides weighs, as wall time: per row and
/// compared column, the server printing a value and hashing the row's
/// text (pushed) or printing it and sending it for ferry to hash (pulled);
/// per row and profile measure, the server aggregating it (pushed). Fitted
/// to W5 against MariaDB on the 2-core bench machine (6M rows, 11
/// columns, 27 measures: 35.7 s pushed down, 17.4 s pulled; see
/// benches/results/w5-2026-11-21.md).
mod cost {
    pub const PUSHED_CELL_NS: f64 = 350.0;
    pub const PUSHED_MEASURE_NS: f64 = 75.0;
    pub const PULLED_CELL_NS: f64 = 260.0;
}

/// A decimal's text without trailing fraction zeros.
fn trimmed(s: &str) -> String {
    format!("(CASE WHEN INSTR({s}, '.') > 0 THEN TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM {s})) ELSE {s} END)")
}

/// The canonical text of `e`, a value of column `c`; NULL stays NULL.
/// Floats print as the server's shortest round-trip text, which
/// [`super::hash::float_text`] reproduces. Intervals and JSON were loaded
/// as text and compare as text.
fn canonical(c: &SpecColumn, e: &str) -> String {
    let text = format!("CAST({e} AS CHAR)");
    match c.family {
        Family::Bool | Family::Int | Family::Float32 | Family::Float64 => text,
        Family::Decimal => trimmed(&text),
        Family::Text | Family::Interval | Family::Json => e.to_owned(),
        Family::Binary => format!("LOWER(HEX({e}))"),
        Family::Date => format!("DATE_FORMAT({e}, '%Y-%m-%d')"),
        Family::Timestamp => format!("DATE_FORMAT({e}, '%Y-%m-%d %H:%i:%s.%f')"),
        Family::Time => format!("TIME_FORMAT({e}, '%H:%i:%s.%f')"),
    }
}

/// One field of the row encoding (see `checksum::push_field`): text and
/// JSON length-prefixed, other values followed by `|`, NULL as `~`.
fn field(c: &SpecColumn) -> String {
    let t = canonical(c, &q(&c.name));
    if c.family.is_text_like() {
        format!("COALESCE(CONCAT(LENGTH({t}), ':', {t}), '~')")
    } else {
        format!("COALESCE(CONCAT({t}, '|'), '~')")
    }
}

fn hash(encoding: &str) -> String {
    format!("CAST(CONV(SUBSTRING(MD5({encoding}), 1, 16), 16, 10) AS UNSIGNED)")
}

fn encoding(spec: &Spec, columns: impl Iterator<Item = usize>) -> String {
    let fields: Vec<String> = columns.map(|i| field(&spec.columns[i])).collect();
    format!("CONCAT({})", fields.join(", "))
}

/// The segment of a row's key (`checksum::arithmetic_key_hash` for
/// integer keys, else the MD5 of the key's encoding), masked.
fn segment_of(spec: &Spec) -> String {
    if spec.arithmetic_key() {
        let mut h = "0".to_owned();
        for &k in &spec.key {
            let c = q(&spec.columns[k].name);
            h = format!("MOD(({h}) * {KEY_MUL} + MOD(MOD({c}, {KEY_MOD}) + {KEY_MOD}, {KEY_MOD}), {KEY_PRIME})");
        }
        format!("(({h}) & {})", spec.segment_mask())
    } else {
        format!("({} & {})", hash(&encoding(spec, spec.key.iter().copied())), spec.segment_mask())
    }
}

fn profile_expr(spec: &Spec, m: Measure) -> String {
    let col = |c: usize| q(&spec.columns[c].name);
    match m {
        Measure::Rows => "CAST(COUNT(*) AS CHAR)".into(),
        Measure::Nulls(c) => format!("CAST(COUNT(*) - COUNT({}) AS CHAR)", col(c)),
        Measure::Sum(c) => match spec.columns[c].family {
            Family::Decimal => trimmed(&format!("CAST(SUM({}) AS CHAR)", col(c))),
            _ => format!("CAST(SUM({}) AS CHAR)", col(c)),
        },
        Measure::Min(c) => canonical(&spec.columns[c], &format!("MIN({})", col(c))),
        Measure::Max(c) => canonical(&spec.columns[c], &format!("MAX({})", col(c))),
        Measure::DistinctKeys => {
            let keys: Vec<String> = spec.key.iter().map(|&k| col(k)).collect();
            format!("CAST(COUNT(DISTINCT {}) AS CHAR)", keys.join(", "))
        }
    }
}

/// The temporary table of the staged keys that a reconciliation of an
/// `append`, `upsert` or `delete+insert` load is scoped to.
const KEYS: &str = "ferry_reconcile_keys";

/// The rows compared: the whole table, or (`Spec::touched_only`) the rows
/// whose key is among the staged keys.
fn relation(spec: &Spec) -> String {
    let t = qualified(&spec.table);
    if !spec.touched_only {
        return t;
    }
    let keys_table = qualified(&TableName { schema: spec.table.schema.clone(), name: KEYS.into() });
    let keys = spec.key.iter().map(|&k| q(&spec.columns[k].name)).collect::<Vec<_>>().join(", ");
    format!("(SELECT * FROM {t} WHERE ({keys}) IN (SELECT {keys} FROM {keys_table})) AS touched")
}

fn text(row: &Row, i: usize) -> Option<String> {
    match row.as_ref(i) {
        Some(mysql_async::Value::Bytes(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        Some(mysql_async::Value::NULL) | None => None,
        Some(other) => Some(other.as_sql(true).trim_matches('\'').to_owned()),
    }
}

impl Mysql {
    /// Loads `job`'s staged keys into a temporary table, to which later
    /// queries of a `touched_only` spec are scoped; the number of keys.
    pub async fn reconcile_scope(&mut self, job: &LoadJob) -> Result<u64, BackendError> {
        let keys = job.keys_only(TableName { schema: job.table.schema.clone(), name: KEYS.into() });
        let t = &job.table;
        let into = qualified(&keys.table);
        self.execute(t, &format!("DROP TEMPORARY TABLE IF EXISTS {into}")).await?;
        self.execute(t, &create(&keys.table, &keys, true)).await?;
        let mut loaded = self.load_keys(&keys, &into).await?;
        if let Some(gone) = job.hard_deleted_keys(keys.table.clone()) {
            loaded += self.load_keys(&gone, &into).await?;
        }
        Ok(loaded)
    }

    /// Loads a job of keys into `into`, by LOAD DATA where the server allows.
    pub(super) async fn load_keys(&mut self, keys: &LoadJob, into: &str) -> Result<u64, BackendError> {
        let rows = Arc::new(AtomicU64::new(0));
        if !self.local_infile {
            return self.insert_rows(keys, into, &rows).await;
        }
        match self.load_data(keys, into, &rows).await {
            Err(e) if refused(&e) => self.insert_rows(keys, into, &rows).await,
            Err(e) => Err(db_error(&keys.table, "loading keys (LOAD DATA)", &e)),
            Ok(n) => Ok(n),
        }
    }

    /// Segment sums and the profile, computed by the server.
    pub async fn reconcile_summary(&mut self, spec: &Spec) -> Result<(SegmentSums, Profile), BackendError> {
        let sql = format!(
            "SELECT seg, COUNT(*), CAST(SUM(h) AS CHAR) FROM (SELECT {} AS seg, {} AS h FROM {}) x GROUP BY seg",
            segment_of(spec),
            hash(&encoding(spec, 0..spec.columns.len())),
            relation(spec)
        );
        let rows: Vec<Row> = self.conn.query(sql).await.map_err(|e| db_error(&spec.table, "summing row hashes", &e))?;
        let mut segments = SegmentSums::new();
        for row in rows {
            let number = |i: usize| text(&row, i).and_then(|t| t.parse::<u128>().ok()).unwrap_or(0);
            segments.insert(number(0) as u64, (number(1) as u64, number(2) as u64));
        }
        let mut exprs: Vec<String> = spec.measures.iter().map(|&m| profile_expr(spec, m)).collect();
        // Grouped by the segment column: its canonical text leads each row,
        // as bytes, so that no collation merges `US` with `us`.
        let group = spec
            .group_by
            .map(|g| format!("CAST({} AS BINARY)", canonical(&spec.columns[g], &q(&spec.columns[g].name))));
        exprs.insert(0, group.clone().unwrap_or_else(|| "NULL".into()));
        let mut sql = format!("SELECT {} FROM {}", exprs.join(", "), relation(spec));
        if group.is_some() {
            sql.push_str(" GROUP BY 1");
        }
        let rows: Vec<Row> = self.conn.query(sql).await.map_err(|e| db_error(&spec.table, "profiling", &e))?;
        let mut profile = Profile::new();
        for row in &rows {
            let g = Group::of(spec, text(row, 0).as_deref());
            for (i, &m) in spec.measures.iter().enumerate() {
                profile.insert((g.clone(), m), text(row, i + 1));
            }
        }
        Ok((segments, profile))
    }

    /// Where reconciling `spec` runs: as `choice` says, or (`auto`) the
    /// side with the lower estimated time.
    pub fn reconcile_side(&self, spec: &Spec, choice: SideChoice, rows: u64) -> (Side, String) {
        let rows = rows as f64;
        let cells = rows * spec.columns.len() as f64;
        let pushed = (cells * cost::PUSHED_CELL_NS + rows * spec.measures.len() as f64 * cost::PUSHED_MEASURE_NS) / 1e9;
        let pulled = cells * cost::PULLED_CELL_NS / 1e9;
        let does = ("hashed by the server", "canonical texts streamed out and hashed by ferry");
        choose_side(choice, (pushed, pulled), "", does)
    }

    /// Feeds the canonical texts the server streams out to `sink` (on a
    /// thread of its own while the stream is read).
    pub async fn pull_rows(
        &mut self,
        spec: &Spec,
        mut sink: Box<dyn RowSink>,
    ) -> Result<Box<dyn RowSink>, BackendError> {
        let shown: Vec<String> = spec.columns.iter().map(|c| canonical(c, &q(&c.name))).collect();
        let sql = format!("SELECT {} FROM {}", shown.join(", "), relation(spec));
        let fail = |e: mysql_async::Error| db_error(&spec.table, "reading rows", &e);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Row>>(8);
        let what = spec.table.to_string();
        let scanned = {
            let spec = spec.clone();
            run_blocking(&what, move || {
                while let Some(rows) = rx.blocking_recv() {
                    for row in &rows {
                        let texts = (0..spec.columns.len())
                            .map(|i| match row.as_ref(i) {
                                Some(mysql_async::Value::Bytes(b)) => std::str::from_utf8(b).map(Some).map_err(|_| i),
                                _ => Ok(None),
                            })
                            .collect::<Result<Vec<Option<&str>>, usize>>()
                            .map_err(|i| BackendError::Read {
                                model: spec.table.to_string(),
                                message: format!("column `{}` sent text that is not UTF-8", spec.columns[i].name),
                            })?;
                        sink.row(&texts);
                    }
                }
                Ok(sink)
            })
        };
        let conn = &mut self.conn;
        let read = async move {
            let mut result = conn.query_iter(sql).await.map_err(fail)?;
            let Some(stream) = result.stream::<Row>().await.map_err(fail)? else { return Ok(()) };
            send_batches(stream, tx, ROWS_PER_BATCH, fail).await
        };
        let (read, scanned) = tokio::join!(read, scanned);
        read?;
        scanned
    }

    /// The rows whose key falls in `segments`, as shown texts.
    pub async fn reconcile_rows(&mut self, spec: &Spec, segments: &[u64]) -> Result<Vec<FetchedRow>, BackendError> {
        let shown: Vec<String> = spec.columns.iter().map(|c| canonical(c, &q(&c.name))).collect();
        let wanted: Vec<String> = segments.iter().map(u64::to_string).collect();
        let sql = format!(
            "SELECT {} FROM {} WHERE {} IN ({})",
            shown.join(", "),
            relation(spec),
            segment_of(spec),
            wanted.join(", ")
        );
        let rows: Vec<Row> = self.conn.query(sql).await.map_err(|e| db_error(&spec.table, "fetching rows", &e))?;
        Ok(rows
            .iter()
            .map(|row| FetchedRow { values: (0..spec.columns.len()).map(|i| text(row, i)).collect() })
            .collect())
    }
}
