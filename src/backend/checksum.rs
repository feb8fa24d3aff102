//! What a target database is asked to compute for a reconciliation, and
//! the canonical encoding of values and rows that both sides hash: the
//! vocabulary between the reconcile policy (which builds a [`Spec`] and
//! compares the answers) and each backend (which answers it in SQL, or
//! streams its rows to a [`RowSink`] for ferry to hash).
//!
//! Every value becomes a canonical text:
//!
//! | family | canonical text |
//! |---|---|
//! | NULL | no text (encoded as `~`, distinct from the empty string) |
//! | boolean | `1` / `0` |
//! | integers | decimal digits |
//! | decimals | the exact value, trailing fraction zeros dropped (`1.50` = `1.5`, `2.00` = `2`) |
//! | text | the UTF-8 bytes |
//! | binary | lowercase hex |
//! | date / timestamp / time | `YYYY-MM-DD`, `YYYY-MM-DD HH:MM:SS.ffffff` (UTC), `HH:MM:SS.ffffff` |
//! | floats | PostgreSQL: the IEEE-754 bits in hex (`float8send`); MySQL/MariaDB: the server's shortest round-trip text; SQLite: Rust's shortest round-trip text |
//! | intervals | PostgreSQL: `months,days,microseconds`; elsewhere the text ferry loaded |
//! | lists, structs, maps | PostgreSQL: `jsonb`'s output form; elsewhere the JSON text ferry loaded |
//!
//! A row is its values' texts one after another: text and JSON as
//! `<byte length>:<text>`, every other family as `<text>|`, NULL as `~`,
//! so no two rows share an encoding (see [`push_field`]). Its 64-bit
//! hash is one the target database computes natively, so the target side
//! can run inside it (see [`DatabaseKind::hash64`]); on PostgreSQL a row is
//! hashed from its typed values instead, with no text at all (see
//! `backend::postgres::hash::cell_hash`).
//! A segment sums its rows' hashes with wraparound and always pairs the sum
//! with its row count.

use std::collections::{BTreeMap, HashMap};

use datafusion::arrow::datatypes::DataType;
use serde::Serialize;

use super::DatabaseKind;
use crate::values::cells::{self, Cell};
use crate::values::{Family, TableName};

/// One compared column.
#[derive(Debug, Clone)]
pub struct SpecColumn {
    pub name: String,
    /// The canonical Arrow type it was staged as.
    pub data_type: DataType,
    pub family: Family,
    /// Its position in the staged batches.
    pub stage_index: usize,
    pub key: bool,
}

impl SpecColumn {
    /// An unsigned 64-bit column, which PostgreSQL keeps as `numeric` and
    /// whose values may not fit a signed 64-bit integer.
    pub fn wide(&self) -> bool {
        matches!(self.data_type, DataType::UInt64)
    }

    /// The declared scale of a decimal column.
    pub fn scale(&self) -> i8 {
        match self.data_type {
            DataType::Decimal128(_, s) | DataType::Decimal256(_, s) => s,
            _ => 0,
        }
    }
}

/// What both sides compute for one model.
#[derive(Debug, Clone)]
pub struct Spec {
    pub table: TableName,
    pub columns: Vec<SpecColumn>,
    /// Positions in `columns` of the key.
    pub key: Vec<usize>,
    /// Segments are the key hash's low `segment_bits` bits.
    pub segment_bits: u32,
    pub measures: Vec<Measure>,
    /// The position in `columns` of the column the profile is grouped by.
    pub group_by: Option<usize>,
    /// Whether only the target's rows with a staged key are compared (the
    /// rows an `append`, `upsert` or `delete+insert` load touched); the
    /// backend holds the keys (see `Backend::reconcile_scope`).
    pub touched_only: bool,
}

impl Spec {
    pub fn segment_mask(&self) -> u64 {
        (1u64 << self.segment_bits) - 1
    }

    pub fn segments(&self) -> u64 {
        1u64 << self.segment_bits
    }

    /// Whether the key is all integers (of at most 64 signed bits), so that
    /// on MySQL and SQLite its segment comes from
    /// [`arithmetic_key_hash`] rather than a hash of the key's
    /// text (PostgreSQL hashes every key by its typed values).
    pub fn arithmetic_key(&self) -> bool {
        self.key.iter().all(|&k| self.columns[k].family == Family::Int && !self.columns[k].wide())
    }
}

/// One aggregate of the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "measure", content = "column", rename_all = "snake_case")]
pub enum Measure {
    Rows,
    Nulls(usize),
    Sum(usize),
    Min(usize),
    Max(usize),
    DistinctKeys,
}

impl Measure {
    pub fn label(self, spec: &Spec) -> String {
        let name = |c: usize| spec.columns[c].name.as_str();
        match self {
            Measure::Rows => "rows".into(),
            Measure::Nulls(c) => format!("nulls({})", name(c)),
            Measure::Sum(c) => format!("sum({})", name(c)),
            Measure::Min(c) => format!("min({})", name(c)),
            Measure::Max(c) => format!("max({})", name(c)),
            Measure::DistinctKeys => "distinct keys".into(),
        }
    }
}

/// Per segment: rows and the wrapping sum of their hashes.
pub type SegmentSums = HashMap<u64, (u64, u64)>;

/// A profile: one value per group and measure (as canonical text; `None`
/// for an aggregate over no values).
pub type Profile = BTreeMap<(Group, Measure), Option<String>>;

/// The rows a profile's measures are over: the whole table, or the rows
/// whose segment column (`Spec::group_by`) shows this text (`None`: NULL).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    All,
    Of(Option<String>),
}

impl Group {
    /// The group of a row whose segment column shows `text`.
    pub fn of(spec: &Spec, text: Option<&str>) -> Group {
        match spec.group_by {
            None => Group::All,
            Some(_) => Group::Of(text.map(str::to_owned)),
        }
    }

    pub fn label(&self, spec: &Spec, measure: Measure) -> String {
        match (self, spec.group_by) {
            (Group::Of(v), Some(g)) => {
                format!("{}={}: {}", spec.columns[g].name, v.as_deref().unwrap_or("NULL"), measure.label(spec))
            }
            _ => measure.label(spec),
        }
    }
}

/// The rows a profile counts, over all its groups.
pub fn profile_rows(profile: &Profile) -> u64 {
    profile
        .iter()
        .filter(|((_, m), _)| *m == Measure::Rows)
        .filter_map(|(_, v)| v.as_deref()?.parse::<u64>().ok())
        .sum()
}

/// One row fetched from a differing segment: its key's and columns' texts.
#[derive(Debug, Clone)]
pub struct FetchedRow {
    pub values: Vec<Option<String>>,
}

/// Where the target side's hashes and profile are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// By the database, in SQL: one row per segment crosses the wire.
    Pushed,
    /// By ferry, over the compared columns streamed out of the database.
    Pulled,
}

/// `reconcile.side` and `ferry reconcile --side`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SideChoice {
    /// The cheaper side by the table's size and the connection.
    #[default]
    Auto,
    Pushed,
    Pulled,
}

/// The side `choice` picks, and why (for the report): as configured, or
/// (`auto`) the one with the lower estimated seconds. `does`: what each
/// side does; `detail`: more about the estimate, as shown.
pub fn choose_side(
    choice: SideChoice,
    (pushed, pulled): (f64, f64),
    detail: &str,
    (pushed_does, pulled_does): (&str, &str),
) -> (Side, String) {
    let figures = if pushed.max(pulled) < 0.1 {
        "estimated under 0.1s either way".to_owned()
    } else {
        format!("estimated {pushed:.1}s pushed down, {pulled:.1}s pulled{detail}")
    };
    match choice {
        SideChoice::Pushed => (Side::Pushed, format!("pushed down ({pushed_does}; as configured)")),
        SideChoice::Pulled => (Side::Pulled, format!("pulled ({pulled_does}; as configured)")),
        SideChoice::Auto if pulled < pushed => (Side::Pulled, format!("pulled ({pulled_does}; {figures})")),
        SideChoice::Auto => (Side::Pushed, format!("pushed down ({pushed_does}; {figures})")),
    }
}

impl SideChoice {
    pub const NAMES: [&'static str; 3] = ["auto", "pushed", "pulled"];

    pub fn parse(name: &str) -> Option<SideChoice> {
        Some(match name {
            "auto" => SideChoice::Auto,
            "pushed" => SideChoice::Pushed,
            "pulled" => SideChoice::Pulled,
            _ => return None,
        })
    }
}

/// Where a pulled target side sends its rows: ferry's own hashing and
/// profiling (the reconcile policy's scan), which the backends never see.
/// A sink moves to the thread that reads the rows and comes back when they
/// end.
pub trait RowSink: Send + 'static {
    /// One row, as the shown texts of the spec's columns.
    fn row(&mut self, texts: &[Option<&str>]);

    /// One row as typed values, hashed as PostgreSQL hashes them: `cells`
    /// (one per spec column) and the shown text of the group column (the
    /// others may be `None`).
    fn typed_row(&mut self, texts: &[Option<&str>], cells: &[Cell<'_>]);

    /// The sink as itself again, once a backend hands it back.
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send>;
}

/// The text of one staged value as it is shown and compared row by row
/// (`None` for NULL): the canonical text, except that floats are their
/// shortest round-trip decimal (see [`hash_text`]).
pub fn show_text(cell: &Cell<'_>, family: Family, kind: DatabaseKind) -> Option<String> {
    let mut out = Vec::new();
    write_show(cell, family, kind, &mut out).then(|| String::from_utf8_lossy(&out).into_owned())
}

/// Writes the shown text of a staged value into `out` (see [`show_text`]),
/// without allocating for the common families; `false` for NULL.
pub fn write_show(cell: &Cell<'_>, family: Family, kind: DatabaseKind, out: &mut Vec<u8>) -> bool {
    let mut text = |s: &str| out.extend_from_slice(s.as_bytes());
    match cell {
        Cell::Null => return false,
        Cell::Int(v) => text(itoa::Buffer::new().format(*v)),
        Cell::UInt(v) => text(itoa::Buffer::new().format(*v)),
        Cell::Bool(b) => text(if *b { "1" } else { "0" }),
        Cell::Text(s) => text(s),
        Cell::Float(v) => text(&DatabaseKind::Sqlite.float_text(*v, family == Family::Float32)),
        Cell::BigDecimal(d, s) => text(cells::trim_decimal(&cells::decimal_text(d, *s))),
        Cell::Bytes(b) => text(&hex::encode(b)),
        Cell::Interval { months, days, micros } => match kind {
            DatabaseKind::Postgres => text(&format!("{months},{days},{micros}")),
            _ => text(&cells::interval_text(*months, *days, *micros)),
        },
        Cell::Json(s) => match kind {
            DatabaseKind::Postgres => text(&super::postgres::hash::jsonb_text(s)),
            _ => text(s),
        },
        Cell::Decimal(v, s) => {
            cells::write_decimal(out, *v, *s);
            let trimmed = cells::trim_decimal(std::str::from_utf8(out).unwrap_or_default()).len();
            if trimmed == 1 && out.first() == Some(&b'-') {
                out.clear();
                out.push(b'0');
            } else {
                out.truncate(trimmed);
            }
        }
        Cell::Date(d) => cells::write_date(out, *d),
        Cell::Timestamp(us) => cells::write_timestamp(out, *us),
        Cell::Time(us) => cells::write_time(out, *us),
    }
    true
}

/// The canonical text that is hashed, from the shown text: floats become
/// what `kind` can produce for them; everything else is unchanged.
pub fn hash_text(show: &str, family: Family, kind: DatabaseKind) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    if !family.is_float() {
        return Cow::Borrowed(show);
    }
    if kind == DatabaseKind::Sqlite {
        // SQLite keeps no negative zero.
        return Cow::Borrowed(if show == "-0" { "0" } else { show });
    }
    match show.parse::<f64>() {
        Ok(v) => Cow::Owned(kind.float_text(v, family == Family::Float32)),
        Err(_) => Cow::Borrowed(show),
    }
}

/// Appends one field of a row encoding: `~` for NULL; a text or JSON value
/// as `<byte length>:<text>`; any other value, whose canonical text never
/// holds `|` or starts with `~`, as `<text>|`. (Length prefixes only where
/// they are needed keep the database's side to one evaluation per value.)
pub fn push_field(out: &mut Vec<u8>, text: Option<&[u8]>, family: Family) {
    match text {
        None => out.push(b'~'),
        Some(t) if family.is_text_like() => {
            out.extend_from_slice(itoa::Buffer::new().format(t.len()).as_bytes());
            out.push(b':');
            out.extend_from_slice(t);
        }
        Some(t) => {
            out.extend_from_slice(t);
            out.push(b'|');
        }
    }
}

/// The constants of the arithmetic key hash (see [`arithmetic_key_hash`]).
pub const KEY_MOD: i64 = 1_000_003;
pub const KEY_MUL: i64 = 1_000_033;
pub const KEY_PRIME: i64 = 1_000_000_007;

/// The segment hash of a key made of integers: `h = (h * 1000033 + v mod
/// 1000003) mod 1000000007` over the parts, with a non-negative `mod`.
/// Cheaper for the database than an MD5 of the key, and it stays within 64
/// bits at every step.
pub fn arithmetic_key_hash(parts: impl IntoIterator<Item = i128>) -> u64 {
    let mut h: i128 = 0;
    for v in parts {
        h = (h * i128::from(KEY_MUL) + v.rem_euclid(i128::from(KEY_MOD))) % i128::from(KEY_PRIME);
    }
    h as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_values_show_as_their_canonical_text() {
        for (cell, want) in [
            (Cell::Int(-42), "-42"),
            (Cell::UInt(u64::MAX), "18446744073709551615"),
            (Cell::Bool(true), "1"),
            (Cell::Text("a|b"), "a|b"),
            (Cell::Decimal(-150, 2), "-1.5"),
            (Cell::Decimal(0, 2), "0"),
            (Cell::Decimal(-1, 3), "-0.001"),
            (Cell::Decimal(1200, 0), "1200"),
            (Cell::Date(19_782), "2024-02-29"),
            (Cell::Timestamp(-1), "1969-12-31 23:59:59.999999"),
            (Cell::Time(3_723_000_001), "01:02:03.000001"),
            (Cell::Float(0.1), "0.1"),
            (Cell::Bytes(b"\x01\xff"), "01ff"),
        ] {
            assert_eq!(show_text(&cell, Family::Float64, DatabaseKind::Postgres).as_deref(), Some(want), "{cell:?}");
        }
        assert!(!write_show(&Cell::Null, Family::Int, DatabaseKind::Mysql, &mut Vec::new()));
    }

    #[test]
    fn fields_are_length_prefixed_and_null_is_not_empty() {
        let mut a = Vec::new();
        push_field(&mut a, Some(b"ab"), Family::Text);
        push_field(&mut a, None, Family::Text);
        push_field(&mut a, Some(b""), Family::Text);
        push_field(&mut a, Some(b"12"), Family::Int);
        push_field(&mut a, None, Family::Int);
        assert_eq!(a, b"2:ab~0:12|~");
        assert_ne!(DatabaseKind::Mysql.hash64(b"~"), DatabaseKind::Mysql.hash64(b"0:"));
    }

    #[test]
    fn integer_keys_hash_without_overflow_or_negative_segments() {
        assert_eq!(arithmetic_key_hash([5]), 5);
        assert_eq!(arithmetic_key_hash([-1]), 1_000_002);
        assert_eq!(arithmetic_key_hash([1, 2]), 1_000_035);
        let big = arithmetic_key_hash([i128::from(i64::MAX), i128::from(i64::MIN), 7]);
        assert!(big < 1_000_000_007);
    }
}
