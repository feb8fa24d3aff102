//! Reconciliation pushed down into PostgreSQL: the typed row and key hashes
//! (see [`hash::cell_hash`]), the segment sums and the profile are
//! computed by the server, so only one row per segment crosses the wire.

use std::sync::atomic::AtomicU64;

use super::hash;
use super::{Postgres, copy_in, create_table, db_error, q, qualified};
use crate::backend::checksum::{FetchedRow, Group, Measure, Profile, SegmentSums, Spec, SpecColumn};
use crate::backend::{BackendError, LoadJob};
use crate::values::{Family, TableName};

/// The canonical text of `e`, a value of column `c` (see
/// `crate::backend::checksum`); NULL stays NULL.
fn canonical(c: &SpecColumn, e: &str) -> String {
    match c.family {
        Family::Bool => format!("({e})::int::text"),
        Family::Int | Family::Text | Family::Json => format!("({e})::text"),
        Family::Float32 => format!("encode(float4send(({e})::float4), 'hex')"),
        Family::Float64 => format!("encode(float8send(({e})::float8), 'hex')"),
        Family::Decimal => format!("trim_scale(({e})::numeric)::text"),
        Family::Binary => format!("encode(({e})::bytea, 'hex')"),
        Family::Date => format!("to_char({e}, 'YYYY-MM-DD')"),
        // Zoned timestamps print in the session's zone, set to UTC.
        Family::Timestamp => format!("to_char({e}, 'YYYY-MM-DD HH24:MI:SS.US')"),
        Family::Time => format!("to_char(date '2000-01-01' + ({e}), 'HH24:MI:SS.US')"),
        Family::Interval => format!(
            "((extract(year from {e}) * 12 + extract(month from {e}))::bigint)::text || ',' || \
             (extract(day from {e})::bigint)::text || ',' || \
             ((extract(hour from {e}) * 3600000000 + extract(minute from {e}) * 60000000 \
             + extract(microseconds from {e}))::bigint)::text"
        ),
    }
}

/// The text a value is shown and compared by: floats as their shortest
/// round-trip decimal, the rest canonical.
fn shown(c: &SpecColumn, e: &str) -> String {
    match c.family {
        Family::Float32 | Family::Float64 => format!("({e})::text"),
        _ => canonical(c, e),
    }
}

/// [`hash::cell_hash`] on the server: the family's typed hash
/// function, seeded by the column's position.
fn cell_hash(c: &SpecColumn, e: &str, seed: u64) -> String {
    match c.family {
        Family::Bool => format!("hashint8extended(({e})::int::int8, {seed})"),
        Family::Int if c.wide() => format!("hash_numeric_extended(({e})::numeric, {seed})"),
        Family::Int => format!("hashint8extended(({e})::int8, {seed})"),
        // The server leaves the sign out of a numeric's hash: put it back.
        Family::Decimal => {
            format!("(hash_numeric_extended(({e})::numeric, {seed}) # (({e})::numeric < 0)::int::int8)")
        }
        Family::Float32 | Family::Float64 => format!("hashfloat8extended(({e})::float8, {seed})"),
        Family::Date => format!("hashint8extended((({e})::date - date '1970-01-01')::int8, {seed})"),
        // Zoned timestamps read in the session's zone, UTC.
        Family::Timestamp => format!("timestamp_hash_extended(({e})::timestamp, {seed})"),
        Family::Time => format!("time_hash_extended(({e})::time, {seed})"),
        Family::Text => format!("hashtextextended(({e})::text COLLATE \"C\", {seed})"),
        Family::Binary | Family::Interval | Family::Json => {
            format!("hashtextextended(({}) COLLATE \"C\", {seed})", canonical(c, e))
        }
    }
}

/// A row's hash as [`hash::cell_hash`] describes it, on the server.
fn row_hash(spec: &Spec) -> String {
    let cells: Vec<String> = spec.columns.iter().enumerate().map(|(i, c)| typed_hash(c, hash::seed(i))).collect();
    cells.join(" # ")
}

/// A column's typed hash seeded `seed`, NULL as [`hash::null_hash`].
fn typed_hash(c: &SpecColumn, seed: u64) -> String {
    format!("coalesce({}, ({})::int8)", cell_hash(c, &q(&c.name), seed), hash::null_hash(seed) as i64)
}

/// The segment of a row's key: the low bits of the XOR of the key
/// columns' typed hashes (see [`hash::key_seed`]).
fn segment_of(spec: &Spec) -> String {
    let parts: Vec<String> =
        spec.key.iter().enumerate().map(|(k, &i)| typed_hash(&spec.columns[i], hash::key_seed(k))).collect();
    format!("(({}) & {})", parts.join(" # "), spec.segment_mask())
}

/// The temporary table of the staged keys that a reconciliation of an
/// `append`, `upsert` or `delete+insert` load is scoped to.
const KEYS: &str = "ferry_reconcile_keys";

/// The key's columns, quoted, for a column list.
fn key_list(spec: &Spec) -> String {
    spec.key.iter().map(|&k| q(&spec.columns[k].name)).collect::<Vec<_>>().join(", ")
}

/// The rows compared: the whole table, or (`Spec::touched_only`) the rows
/// whose key is among the staged keys.
pub(super) fn relation(spec: &Spec) -> String {
    let t = qualified(&spec.table);
    if !spec.touched_only {
        return t;
    }
    let keys = key_list(spec);
    format!("(SELECT * FROM {t} WHERE ({keys}) IN (SELECT {keys} FROM pg_temp.{KEYS})) AS touched")
}

/// The temporary table that holds the touched rows of a table with a unique
/// index on the key, looked up once for both summary queries.
const TOUCHED: &str = "ferry_reconcile_touched";

/// For a `touched_only` spec over a table with a unique index on the key:
/// copies the rows of the staged keys into [`TOUCHED`], the staged keys
/// (then one each) joined to the table, which the planner does as one index
/// lookup per key rather than a scan of the whole table (120,952 keys of 6M
/// rows: 0.5 s against 2.2 s). Looked up once rather than by each of the
/// segment and profile queries, which then scan the copy: 120,448 keys,
/// 1.67 s for the two queries before. Dropped once they have run.
fn copy_touched(spec: &Spec) -> String {
    let t = qualified(&spec.table);
    let keys = key_list(spec);
    format!(
        "DROP TABLE IF EXISTS pg_temp.{TOUCHED}; \
         CREATE TEMP TABLE {TOUCHED} AS SELECT t.* FROM pg_temp.{KEYS} AS k JOIN {t} AS t USING ({keys})"
    )
}

fn sum_wrapping(text: &str) -> u64 {
    // The server sums signed 64-bit hashes exactly (as numeric); the
    // wrapping sum is that sum modulo 2^64.
    text.parse::<i128>().map(|v| v as u64).unwrap_or(0)
}

/// `unique`: the table has a unique index on exactly the key, so the
/// database already guarantees one row per key and counting distinct keys
/// (a sort of the whole table) reduces to counting complete keys.
fn profile_expr(spec: &Spec, m: Measure, unique: bool) -> String {
    let col = |c: usize| q(&spec.columns[c].name);
    match m {
        Measure::Rows => "count(*)::text".into(),
        Measure::Nulls(c) => format!("(count(*) - count({}))::text", col(c)),
        Measure::Sum(c) => match spec.columns[c].family {
            Family::Decimal => format!("trim_scale(sum({}))::text", col(c)),
            f if f.is_float() => format!("sum(({})::float8)::text", col(c)),
            _ => format!("sum({})::text", col(c)),
        },
        Measure::Min(c) => canonical(&spec.columns[c], &format!("min({})", col(c))),
        Measure::Max(c) => canonical(&spec.columns[c], &format!("max({})", col(c))),
        Measure::DistinctKeys => {
            let keys: Vec<String> = spec.key.iter().map(|&k| col(k)).collect();
            let all = keys.iter().map(|k| format!("{k} IS NOT NULL")).collect::<Vec<_>>().join(" AND ");
            if unique {
                format!("(count(*) FILTER (WHERE {all}))::text")
            } else if keys.len() == 1 {
                format!("count(DISTINCT {})::text", keys[0])
            } else {
                format!("(count(DISTINCT ({})) FILTER (WHERE {all}))::text", keys.join(", "))
            }
        }
    }
}

impl Postgres {
    pub(super) async fn reconcile_session(&self, spec: &Spec) -> Result<(), BackendError> {
        self.client
            // JIT compiling the wide hash expressions costs more than it
            // saves. The default random_page_cost (4, for spinning disks)
            // has the planner scan a whole table rather than look up a
            // run's keys in its index, on pages that are cached or on SSD.
            .batch_execute("SET TIME ZONE 'UTC'; SET extra_float_digits = 1; SET jit = off; SET random_page_cost = 1.1")
            .await
            .map_err(|e| db_error(&spec.table, "preparing the session", &e))
    }

    /// Copies `job`'s staged keys into a temporary table, to which later
    /// queries of a `touched_only` spec are scoped; the number of keys.
    pub async fn reconcile_scope(&mut self, job: &LoadJob) -> Result<u64, BackendError> {
        let keys = job.keys_only(TableName { schema: "pg_temp".into(), name: KEYS.into() });
        let t = &job.table;
        let tx = self.client.transaction().await.map_err(|e| db_error(t, "starting a transaction", &e))?;
        let create = create_table(&keys.table, &keys.columns, false, None);
        tx.batch_execute(&format!("DROP TABLE IF EXISTS pg_temp.{KEYS}; {create}"))
            .await
            .map_err(|e| db_error(t, "creating the table of staged keys", &e))?;
        let mut copied = copy_in(&tx, &keys, &keys.table, false, &AtomicU64::new(0)).await?;
        if let Some(gone) = job.hard_deleted_keys(keys.table.clone()) {
            copied += copy_in(&tx, &gone, &keys.table, false, &AtomicU64::new(0)).await?;
        }
        tx.batch_execute(&format!("ANALYZE pg_temp.{KEYS}"))
            .await
            .map_err(|e| db_error(t, "analyzing the staged keys", &e))?;
        tx.commit().await.map_err(|e| db_error(t, "committing the staged keys", &e))?;
        Ok(copied)
    }

    /// Segment sums and the profile, computed by the server.
    pub async fn reconcile_summary(&self, spec: &Spec) -> Result<(SegmentSums, Profile), BackendError> {
        self.reconcile_session(spec).await?;
        let unique = self.unique_on_key(spec).await?;
        let copied = spec.touched_only && unique;
        let relation = if copied {
            self.client
                .batch_execute(&copy_touched(spec))
                .await
                .map_err(|e| db_error(&spec.table, "reading the touched rows", &e))?;
            format!("pg_temp.{TOUCHED} AS touched")
        } else {
            relation(spec)
        };
        let sql = format!(
            "SELECT seg, count(*), sum(h)::text FROM (SELECT {} AS seg, {} AS h FROM {relation}) x GROUP BY seg",
            segment_of(spec),
            row_hash(spec),
        );
        // The planner cannot tell how few segments there are and would sort
        // the whole table to group it; hashing streams it, in parallel
        // workers.
        self.client
            .batch_execute("SET enable_sort = off")
            .await
            .map_err(|e| db_error(&spec.table, "preparing the session", &e))?;
        let rows = self.client.query(&sql, &[]).await;
        self.client
            .batch_execute("RESET enable_sort")
            .await
            .map_err(|e| db_error(&spec.table, "preparing the session", &e))?;
        let rows = rows.map_err(|e| db_error(&spec.table, "summing row hashes", &e))?;
        let mut segments = SegmentSums::new();
        for row in rows {
            let (seg, n, sum): (i64, i64, String) = (row.get(0), row.get(1), row.get(2));
            segments.insert(seg as u64, (n as u64, sum_wrapping(&sum)));
        }
        let mut exprs: Vec<String> = spec.measures.iter().map(|&m| profile_expr(spec, m, unique)).collect();
        // Grouped by the segment column: its shown text leads each row.
        let group = spec.group_by.map(|g| shown(&spec.columns[g], &q(&spec.columns[g].name)));
        exprs.insert(0, group.clone().unwrap_or_else(|| "NULL::text".into()));
        let mut sql = format!("SELECT {} FROM {relation}", exprs.join(", "));
        if group.is_some() {
            sql.push_str(" GROUP BY 1");
        }
        let rows = self.client.query(&sql, &[]).await.map_err(|e| db_error(&spec.table, "profiling", &e))?;
        if copied {
            self.client
                .batch_execute(&format!("DROP TABLE pg_temp.{TOUCHED}"))
                .await
                .map_err(|e| db_error(&spec.table, "dropping the touched rows", &e))?;
        }
        let mut profile = Profile::new();
        for row in rows {
            let g = Group::of(spec, row.get::<_, Option<&str>>(0));
            for (i, &m) in spec.measures.iter().enumerate() {
                profile.insert((g.clone(), m), row.get::<_, Option<String>>(i + 1));
            }
        }
        Ok((segments, profile))
    }

    /// The rows whose key falls in `segments`, as shown texts.
    pub async fn reconcile_rows(&self, spec: &Spec, segments: &[u64]) -> Result<Vec<FetchedRow>, BackendError> {
        self.reconcile_session(spec).await?;
        let shown: Vec<String> = spec.columns.iter().map(|c| shown(c, &q(&c.name))).collect();
        let sql = format!("SELECT {} FROM {} WHERE {} = ANY($1)", shown.join(", "), relation(spec), segment_of(spec));
        let wanted: Vec<i64> = segments.iter().map(|&s| s as i64).collect();
        let rows = self.client.query(&sql, &[&wanted]).await.map_err(|e| db_error(&spec.table, "fetching rows", &e))?;
        Ok(rows
            .into_iter()
            .map(|row| FetchedRow {
                values: (0..spec.columns.len()).map(|i| row.get::<_, Option<String>>(i)).collect(),
            })
            .collect())
    }

    /// Whether a valid unique index covers exactly the key's columns.
    async fn unique_on_key(&self, spec: &Spec) -> Result<bool, BackendError> {
        let mut key: Vec<String> = spec.key.iter().map(|&k| spec.columns[k].name.clone()).collect();
        key.sort();
        let row = self
            .client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = $1::text::regclass AND i.indisunique \
                 AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indnkeyatts = $3 \
                 AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text) FROM pg_attribute a \
                 WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)) = $2::text[])",
                &[&qualified(&spec.table), &key, &(key.len() as i16)],
            )
            .await
            .map_err(|e| db_error(&spec.table, "reading the table's indexes", &e))?;
        Ok(row.get(0))
    }
}
