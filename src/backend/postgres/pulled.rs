//! Reconciliation pulled from PostgreSQL: the compared columns stream out
//! with binary `COPY ... TO STDOUT`, each cast by the server to one plain
//! wire type per family, and ferry decodes them into the same [`Cell`]s the
//! stage is read as, for the caller's sink to hash and profile with the
//! stage side's code ([`RowSink::typed_row`]). The hashes are the
//! pushed-down ones (see [`super::hash::cell_hash`]), so segments found either way
//! agree, and the rows of differing segments are fetched the same way after.

use bytes::Bytes;

use super::copy::{CopyReader, PG_EPOCH_DAYS, be, numeric_header, numeric_unscaled};
use super::hash::pg;
use super::reconcile::relation;
use super::{Postgres, db_error, q};
use crate::backend::checksum::{self, RowSink, Side, SideChoice, Spec, SpecColumn, choose_side};
use crate::backend::pipe::{run_blocking, send_batches};
use crate::backend::{BackendError, DatabaseKind};
use crate::values::cells::Cell;
use crate::values::{Family, TableName};

/// CopyData messages (about one row each) handed to the decoding thread at once.
const CHUNKS_PER_BATCH: usize = 2048;

/// The value of column `c` as the server sends it: one wire type per
/// family, which [`decode`] reads.
fn wire(c: &SpecColumn) -> String {
    let e = q(&c.name);
    match c.family {
        Family::Bool => format!("({e})::bool"),
        Family::Int if c.wide() => format!("({e})::numeric"),
        Family::Int => format!("({e})::int8"),
        Family::Float32 | Family::Float64 => format!("({e})::float8"),
        Family::Decimal => format!("({e})::numeric"),
        Family::Text | Family::Json => format!("({e})::text"),
        Family::Binary => format!("({e})::bytea"),
        Family::Date => format!("({e})::date"),
        // Zoned timestamps read in the session's zone, UTC.
        Family::Timestamp => format!("({e})::timestamp"),
        Family::Time => format!("({e})::time"),
        Family::Interval => format!("({e})::interval"),
    }
}

/// The statement that streams the compared rows.
pub(super) fn copy_statement(spec: &Spec) -> String {
    let columns: Vec<String> = spec.columns.iter().map(wire).collect();
    format!("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT binary)", columns.join(", "), relation(spec))
}

/// One field of column `c` (sent as [`wire`] says) as a cell.
fn decode<'a>(c: &SpecColumn, field: Option<&'a [u8]>) -> Result<Cell<'a>, String> {
    let Some(b) = field else { return Ok(Cell::Null) };
    let bad = || format!("column `{}`: a {}-byte value does not read as {:?}", c.name, b.len(), c.family);
    let i64_of = |b: &[u8]| be::<8>(b).map(i64::from_be_bytes).ok_or_else(bad);
    Ok(match c.family {
        Family::Bool => Cell::Bool(*b.first().ok_or_else(bad)? != 0),
        Family::Int if c.wide() => match numeric(b, 0).ok_or_else(bad)? {
            Cell::Decimal(v, _) => u64::try_from(v).map_or(Cell::Decimal(v, 0), Cell::UInt),
            other => other,
        },
        Family::Int => Cell::Int(i64_of(b)?),
        Family::Float32 | Family::Float64 => Cell::Float(f64::from_bits(i64_of(b)? as u64)),
        Family::Decimal => numeric(b, c.scale()).ok_or_else(bad)?,
        Family::Text => Cell::Text(std::str::from_utf8(b).map_err(|e| format!("column `{}`: {e}", c.name))?),
        Family::Json => Cell::Json(String::from_utf8_lossy(b).into_owned()),
        Family::Binary => Cell::Bytes(b),
        Family::Date => {
            let days = be::<4>(b).map(i32::from_be_bytes).ok_or_else(bad)?;
            Cell::Date(days.saturating_add(PG_EPOCH_DAYS))
        }
        Family::Timestamp => Cell::Timestamp(i64_of(b)?.saturating_add(pg::EPOCH_2000_MICROS)),
        Family::Time => Cell::Time(i64_of(b)?),
        Family::Interval => {
            let (micros, rest) = b.split_at_checked(8).ok_or_else(bad)?;
            let (days, months) = rest.split_at_checked(4).ok_or_else(bad)?;
            Cell::Interval {
                months: be::<4>(months).map(i32::from_be_bytes).ok_or_else(bad)?,
                days: be::<4>(days).map(i32::from_be_bytes).ok_or_else(bad)?,
                micros: i64_of(micros)?,
            }
        }
    })
}

/// A binary `numeric` as a decimal cell: unscaled at `scale` when it has
/// no more fraction digits than that and fits 128 bits, else as digits at
/// its own scale. `None` when the bytes are not a numeric (or are NaN or
/// infinite, which no staged decimal is).
fn numeric(b: &[u8], scale: i8) -> Option<Cell<'static>> {
    let word = |i: usize| be::<2>(b.get(i * 2..i * 2 + 2)?).map(u16::from_be_bytes);
    let (ndigits, weight, negative) = numeric_header(b)?;
    let weight = i64::from(weight);
    if let Some(v) = numeric_unscaled(b, scale) {
        return Some(Cell::Decimal(v, scale));
    }
    let groups = (0..ndigits).map(|i| word(4 + i).unwrap_or_default());
    // Digits at the scale of the last group (or with zeros for whole groups
    // past the last).
    let mut digits = String::with_capacity(ndigits * 4 + 8);
    if negative {
        digits.push('-');
    }
    for g in groups {
        digits.push_str(&format!("{g:04}"));
    }
    let frac_groups = ndigits as i64 - 1 - weight;
    let own_scale = if frac_groups >= 0 {
        4 * frac_groups
    } else {
        digits.extend(std::iter::repeat_n('0', (-4 * frac_groups) as usize));
        0
    };
    Some(Cell::BigDecimal(digits, i8::try_from(own_scale).ok()?))
}

/// Decodes the chunks of a COPY stream and feeds every row to `sink`.
fn scan_chunks(
    spec: &Spec,
    batches: &mut tokio::sync::mpsc::Receiver<Vec<Bytes>>,
    sink: &mut dyn RowSink,
) -> Result<(), String> {
    let mut reader = CopyReader::new();
    let n = spec.columns.len();
    let group = spec.group_by;
    let mut shown: Vec<u8> = Vec::new();
    let mut rows: u64 = 0;
    while let Some(batch) = batches.blocking_recv() {
        for chunk in batch {
            reader.feed(&chunk, |data, fields| {
                rows += 1;
                if fields.len() != n {
                    return Err(format!("row {rows} came with {} fields, not {n}", fields.len()));
                }
                let cells = spec
                    .columns
                    .iter()
                    .zip(fields)
                    .map(|(c, f)| decode(c, f.map(|(a, b)| &data[a..b])))
                    .collect::<Result<Vec<Cell<'_>>, String>>()
                    .map_err(|e| format!("row {rows}: {e}"))?;
                let mut texts: Vec<Option<&str>> = vec![None; n];
                if let Some(g) = group {
                    shown.clear();
                    if checksum::write_show(&cells[g], spec.columns[g].family, DatabaseKind::Postgres, &mut shown) {
                        texts[g] = Some(std::str::from_utf8(&shown).unwrap_or_default());
                    }
                }
                sink.typed_row(&texts, &cells);
                Ok(())
            })?;
        }
    }
    if !reader.ended {
        return Err(format!("the COPY stream ended after {rows} rows without its trailer"));
    }
    Ok(())
}

/// What the choice between the sides weighs, as wall time on the target
/// side: per row and compared column, the server hashing a value in SQL
/// (pushed) or sending it with COPY for ferry to decode and hash (pulled);
/// per row and profile measure, the server aggregating it (pushed; a
/// pulled profile comes with the scan); and how fast bytes cross the
/// connection. Fitted to W5 on this project's 2-core bench machine (6M
/// rows, 11 columns, 27 measures: 4.6-5.0 s pushed down, 7.8 s pulled; see
/// benches/results/w5-2026-11-21.md), where the server's binary COPY alone
/// takes 4.2 s. Pulled wins where the server is slower than the client.
mod cost {
    pub const PUSHED_CELL_NS: f64 = 60.0;
    pub const PUSHED_MEASURE_NS: f64 = 8.0;
    pub const PULLED_CELL_NS: f64 = 105.0;
    /// Bytes per second: over loopback, and assumed for a remote server.
    pub const LOCAL_BANDWIDTH: f64 = 1.0e9;
    pub const REMOTE_BANDWIDTH: f64 = 100.0e6;
}

/// Estimated seconds of each side, for `rows` rows of `spec` with rows of
/// `row_bytes` bytes on the wire.
fn estimate(spec: &Spec, rows: f64, row_bytes: f64, local: bool) -> (f64, f64) {
    let cells = rows * spec.columns.len() as f64;
    let pushed = (cells * cost::PUSHED_CELL_NS + rows * spec.measures.len() as f64 * cost::PUSHED_MEASURE_NS) / 1e9;
    let bandwidth = if local { cost::LOCAL_BANDWIDTH } else { cost::REMOTE_BANDWIDTH };
    let pulled = cells * cost::PULLED_CELL_NS / 1e9 + rows * row_bytes / bandwidth;
    (pushed, pulled)
}

fn read_error(table: &TableName, message: String) -> BackendError {
    BackendError::Read { model: table.to_string(), message: format!("reading the table's rows: {message}") }
}

impl Postgres {
    /// Where reconciling `spec` runs: as `choice` says, or (`auto`) the
    /// side with the lower estimated time for `rows` rows. A server before
    /// PostgreSQL 13 lacks functions the pushed side calls.
    pub async fn reconcile_side(
        &self,
        spec: &Spec,
        choice: SideChoice,
        rows: u64,
    ) -> Result<(Side, String), BackendError> {
        let fail = |e: tokio_postgres::Error| db_error(&spec.table, "estimating the reconcile's cost", &e);
        let names: Vec<&str> = spec.columns.iter().map(|c| c.name.as_str()).collect();
        // Bytes per row on the wire: the columns' average widths where the
        // table has statistics, plus COPY's 4-byte length per field.
        let row = self
            .client
            .query_one(
                "SELECT current_setting('server_version_num')::int, \
                 (SELECT sum(avg_width)::float8 FROM pg_stats WHERE schemaname = $1 AND tablename = $2 \
                 AND attname = ANY($3))",
                &[&spec.table.schema, &spec.table.name, &names],
            )
            .await
            .map_err(fail)?;
        let (version, width): (i32, Option<f64>) = (row.get(0), row.get(1));
        let row_bytes = width.unwrap_or(8.0 * names.len() as f64) + 4.0 * names.len() as f64 + 2.0;
        let (pushed, pulled) = estimate(spec, rows as f64, row_bytes, self.local);
        let where_ = if self.local { "this machine" } else { "the network" };
        let detail = format!(" ({:.0} MB over {where_})", rows as f64 * row_bytes / 1e6);
        let does = ("hashed by the server", "streamed out with binary COPY and hashed by ferry");
        if version < 130_000 {
            let why = "the server predates PostgreSQL 13, which pushing down needs";
            return Ok((Side::Pulled, format!("pulled ({}; {why})", does.1)));
        }
        Ok(choose_side(choice, (pushed, pulled), &detail, does))
    }

    /// Feeds the rows that binary COPY streams out to `sink` (decoded on a
    /// thread of its own while the stream is read).
    pub async fn pull_rows(&self, spec: &Spec, mut sink: Box<dyn RowSink>) -> Result<Box<dyn RowSink>, BackendError> {
        self.reconcile_session(spec).await?;
        let stream = self
            .client
            .copy_out(&copy_statement(spec))
            .await
            .map_err(|e| db_error(&spec.table, "reading rows with COPY", &e))?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Bytes>>(8);
        let what = spec.table.to_string();
        let scanned = {
            let spec = spec.clone();
            run_blocking(&what, move || {
                scan_chunks(&spec, &mut rx, sink.as_mut()).map_err(|m| read_error(&spec.table, m))?;
                Ok(sink)
            })
        };
        let fail = |e: tokio_postgres::Error| db_error(&spec.table, "reading rows with COPY", &e);
        let read = send_batches(stream, tx, CHUNKS_PER_BATCH, fail);
        let (read, scanned) = tokio::join!(read, scanned);
        // An error reading the stream explains a scan that saw it cut short.
        read?;
        scanned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binary numeric: its digit groups, weight, sign and display scale.
    fn numeric_bytes(groups: &[u16], weight: i16, negative: bool, dscale: u16) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend((groups.len() as u16).to_be_bytes());
        b.extend(weight.to_be_bytes());
        b.extend(if negative { 0x4000u16 } else { 0 }.to_be_bytes());
        b.extend(dscale.to_be_bytes());
        for g in groups {
            b.extend(g.to_be_bytes());
        }
        b
    }

    #[test]
    fn numerics_read_at_the_column_scale_or_as_digits() {
        // 1234.5 (groups 1234 | 5000, weight 0) at scale 2.
        assert!(matches!(numeric(&numeric_bytes(&[1234, 5000], 0, false, 1), 2), Some(Cell::Decimal(123450, 2))));
        // -0.0001 at scale 4; zero has no groups.
        assert!(matches!(numeric(&numeric_bytes(&[1], -1, true, 4), 4), Some(Cell::Decimal(-1, 4))));
        assert!(matches!(numeric(&numeric_bytes(&[], 0, false, 0), 2), Some(Cell::Decimal(0, 2))));
        // 10000 (group 1 at weight 1) at scale 0.
        assert!(matches!(numeric(&numeric_bytes(&[1], 1, false, 0), 0), Some(Cell::Decimal(10000, 0))));
        // 0.125 does not fit scale 2: digits at its own scale, hashing as the value.
        let Some(Cell::BigDecimal(d, s)) = numeric(&numeric_bytes(&[1250], -1, false, 3), 2) else { panic!() };
        assert_eq!((d.as_str(), s), ("1250", 4));
        let as_digits = super::super::hash::cell_hash(&Cell::BigDecimal(d, s), Family::Decimal, false, 3);
        let as_decimal = super::super::hash::cell_hash(&Cell::Decimal(125, 3), Family::Decimal, false, 3);
        assert_eq!(as_digits, as_decimal);
        // NaN's sign word.
        assert!(numeric(&numeric_bytes(&[], 0, false, 0)[..6], 0).is_none());
        let mut nan = numeric_bytes(&[], 0, false, 0);
        nan[4..6].copy_from_slice(&0xC000u16.to_be_bytes());
        assert!(numeric(&nan, 0).is_none());
    }
}
