//! The source audit that a migration starts with: what each column of a
//! source actually holds, against what it is declared to hold.
//!
//! A table is profiled in one streaming pass over its record batches
//! ([`TableProfiler::add`]): every value is read as text (as the source
//! file holds it) and classified by Rust accumulators, so memory is bounded
//! by the distinct values kept per column ([`DISTINCT_BOUND`]), never by
//! the table. Past that bound a column's distinct count is estimated (by a
//! sketch of every value, [`sketch`]) and labelled so, and its top values
//! and spellings are those among the values kept.

mod column;
pub mod compare;
mod lines;
mod sketch;
mod text;

use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use foldhash::HashMap;
use serde::Serialize;

pub use column::{ColumnProfile, DateFormats, Kind, Located, personal_name};
pub use lines::locate;
pub use text::TextCheck;

/// The most distinct values kept per column (and distinct rows per table).
pub const DISTINCT_BOUND: usize = 100_000;

/// What a table holds.
#[derive(Debug, Clone, Serialize)]
pub struct TableProfile {
    /// The source or seed, as `ref`/`source` name it.
    pub name: String,
    pub rows: u64,
    /// Rows equal, in every column, to an earlier row (`None`: more
    /// distinct rows than [`DISTINCT_BOUND`], not counted).
    pub duplicate_rows: Option<u64>,
    /// Columns whose values are never NULL or blank and never repeat.
    pub candidate_keys: Vec<String>,
    /// Pairs of columns that are together, where no column alone is (see
    /// `run::audit` for the pairs tried).
    pub candidate_key_pairs: Vec<[String; 2]>,
    /// The file the examples' lines are in, where it is one local CSV.
    pub file: Option<String>,
    /// How its bytes became text, where it is a local CSV.
    pub text: Option<TextCheck>,
    /// Each key the project declares unique (a `unique` or
    /// `unique_combination_of_columns` test), and the keys that repeat.
    pub declared_keys: Vec<KeyCheck>,
    /// Each declared relationship (a `relationships` test) to another
    /// source or seed, and the values with no match there.
    pub relationships: Vec<Orphans>,
    pub columns: Vec<ColumnProfile>,
}

/// A declared key's duplicates.
#[derive(Debug, Clone, Serialize)]
pub struct KeyCheck {
    pub columns: Vec<String>,
    /// Key values held by more than one row.
    pub duplicate_keys: u64,
    /// Rows beyond the first of each such key.
    pub duplicate_rows: u64,
    /// The most repeated key values (columns joined by `, `), with their rows.
    pub examples: Vec<(String, u64)>,
}

/// A declared relationship's orphans.
#[derive(Debug, Clone, Serialize)]
pub struct Orphans {
    pub column: String,
    /// The table and column it must match (`customers.id`).
    pub to: String,
    /// Rows whose value (not NULL) has no match.
    pub orphan_rows: u64,
    /// The most frequent of those values, with their rows.
    pub examples: Vec<(String, u64)>,
}

/// Profiles one table from its batches.
pub struct TableProfiler {
    name: String,
    rows: u64,
    columns: Vec<column::Accumulator>,
    /// Each distinct row (a 128-bit hash of its values), while under the
    /// bound.
    distinct_rows: Option<HashMap<u128, u64>>,
    /// A row's values laid end to end (reused), for its hash.
    row: Vec<u8>,
}

impl TableProfiler {
    /// A profiler for a table read as `schema`, whose columns are declared
    /// (or inferred by their reader) as in `declared`.
    pub fn new(name: &str, schema: &SchemaRef, declared: &SchemaRef) -> Self {
        let declared_type = |f: &datafusion::arrow::datatypes::Field| {
            declared.field_with_name(f.name()).map_or_else(|_| f.data_type().to_string(), |d| d.data_type().to_string())
        };
        let columns = schema.fields().iter().map(|f| column::Accumulator::new(f.name(), declared_type(f))).collect();
        TableProfiler {
            name: name.to_owned(),
            rows: 0,
            columns,
            distinct_rows: Some(HashMap::default()),
            row: Vec::new(),
        }
    }

    /// Adds a batch's rows.
    pub fn add(&mut self, batch: &RecordBatch) -> Result<(), datafusion::arrow::error::ArrowError> {
        let texts: Vec<ArrayRef> = batch.columns().iter().map(as_text).collect::<Result<_, _>>()?;
        let texts: Vec<&StringArray> =
            texts.iter().map(|a| a.as_any().downcast_ref::<StringArray>().expect("cast to Utf8")).collect();
        for (acc, text) in self.columns.iter_mut().zip(&texts) {
            acc.add(text);
        }
        if let Some(rows) = &mut self.distinct_rows {
            for r in 0..batch.num_rows() {
                // Each value's length before it (NULL: no length), so no two
                // rows lay out alike.
                self.row.clear();
                for t in &texts {
                    if t.is_null(r) {
                        self.row.extend_from_slice(&u64::MAX.to_le_bytes());
                    } else {
                        let v = t.value(r).as_bytes();
                        self.row.extend_from_slice(&(v.len() as u64).to_le_bytes());
                        self.row.extend_from_slice(v);
                    }
                }
                *rows.entry(xxhash_rust::xxh3::xxh3_128(&self.row)).or_insert(0) += 1;
                if rows.len() > DISTINCT_BOUND {
                    self.distinct_rows = None;
                    break;
                }
            }
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Classifies the distinct values counted and not classified yet (which
    /// [`TableProfiler::merge`] and [`TableProfiler::finish`] otherwise do):
    /// for each partition's profiler to do on its own thread, before the
    /// profilers merge on one.
    pub fn classify_pending(&mut self) {
        for acc in &mut self.columns {
            acc.classify_pending();
        }
    }

    /// Adds what `other` (a profiler of the same table's later rows)
    /// collected: partitions profiled apart, merged in file order.
    pub fn merge(&mut self, other: TableProfiler) {
        self.rows += other.rows;
        for (mine, theirs) in self.columns.iter_mut().zip(other.columns) {
            mine.merge(theirs);
        }
        self.distinct_rows = match (self.distinct_rows.take(), other.distinct_rows) {
            (Some(mut rows), Some(more)) => {
                for (k, n) in more {
                    *rows.entry(k).or_insert(0) += n;
                }
                (rows.len() <= DISTINCT_BOUND).then_some(rows)
            }
            _ => None,
        };
    }

    pub fn finish(self) -> TableProfile {
        let duplicate_rows = self.distinct_rows.map(|rows| rows.values().map(|&n| n - 1).sum());
        let columns: Vec<ColumnProfile> = self.columns.into_iter().map(column::Accumulator::finish).collect();
        let candidate_keys = columns
            .iter()
            .filter(|c| self.rows > 0 && c.nulls == 0 && c.blanks == 0 && c.distinct_exact && c.distinct == self.rows)
            .map(|c| c.name.clone())
            .collect();
        TableProfile {
            name: self.name,
            rows: self.rows,
            duplicate_rows,
            candidate_keys,
            candidate_key_pairs: Vec::new(),
            file: None,
            text: None,
            declared_keys: Vec::new(),
            relationships: Vec::new(),
            columns,
        }
    }
}

/// Pairs of columns worth trying as a key of `t` (by their indexes), at
/// most `max`: only where no column alone is a key and no row is known to
/// repeat whole (then nothing is a key; past [`DISTINCT_BOUND`] distinct
/// rows that is not known, and the pairs, each a grouping of the whole
/// table, are not tried), among columns never NULL or blank whose kind
/// keys have (integers, codes, dates, UUIDs, emails), whose distinct
/// counts could multiply to the row count, nearest the table's start
/// first, since keys usually lead.
pub fn key_pairs_to_try(t: &TableProfile, max: usize) -> Vec<[usize; 2]> {
    if !t.candidate_keys.is_empty() || t.duplicate_rows != Some(0) || t.rows < 2 {
        return Vec::new();
    }
    let keyish = |c: &ColumnProfile| {
        c.nulls == 0
            && c.blanks == 0
            && matches!(c.kind, Kind::Integer | Kind::Text | Kind::Date | Kind::Uuid | Kind::Email)
    };
    let columns: Vec<usize> = (0..t.columns.len()).filter(|&i| keyish(&t.columns[i])).collect();
    let mut pairs = Vec::new();
    for (k, &a) in columns.iter().enumerate() {
        for &b in &columns[k + 1..] {
            let (ca, cb) = (&t.columns[a], &t.columns[b]);
            let enough = !ca.distinct_exact || !cb.distinct_exact || ca.distinct.saturating_mul(cb.distinct) >= t.rows;
            if enough {
                pairs.push([a, b]);
            }
        }
    }
    pairs.sort_by_key(|&[a, b]| (a + b, a));
    pairs.truncate(max);
    pairs
}

/// A column's values as text, as a file holds them.
fn as_text(array: &ArrayRef) -> Result<ArrayRef, datafusion::arrow::error::ArrowError> {
    match array.data_type() {
        DataType::Utf8 => Ok(std::sync::Arc::clone(array)),
        _ => cast(array, &DataType::Utf8),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    fn profile(columns: Vec<(&str, ArrayRef)>) -> TableProfile {
        let schema = Arc::new(Schema::new(
            columns.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect::<Vec<_>>(),
        ));
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns.into_iter().map(|(_, a)| a).collect()).unwrap();
        // Three batches: two into one profiler (the accumulators carry
        // over), the last into another, merged as partitions are.
        let mut p = TableProfiler::new("t", &schema, &schema);
        let rest = batch.num_rows() - 2;
        p.add(&batch.slice(0, 1)).unwrap();
        p.add(&batch.slice(1, 1)).unwrap();
        let mut later = TableProfiler::new("t", &schema, &schema);
        later.add(&batch.slice(2, rest)).unwrap();
        p.merge(later);
        p.finish()
    }

    fn text(values: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(values.to_vec()))
    }

    #[test]
    fn counts_types_formats_and_keys_exactly() {
        let t = profile(vec![
            ("id", Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5, 6])) as ArrayRef),
            ("amount", text(&[Some("12"), Some("3.50"), Some("-0.125"), Some("x"), None, Some(" ")])),
            (
                "day",
                text(&[
                    Some("2024-02-29"),
                    Some("31/02/2024"),
                    Some("25/12/2024"),
                    Some("12/25/2024"),
                    Some("03/04/2024"),
                    Some("2023-02-29"),
                ]),
            ),
            ("code", text(&[Some("007"), Some("AB-12"), Some("AB-34"), Some("ab-56 "), Some("USA"), Some("usa")])),
        ]);
        assert_eq!(t.rows, 6);
        assert_eq!(t.duplicate_rows, Some(0));
        assert_eq!(t.candidate_keys, ["id", "day", "code"]);
        let col = |n: &str| t.columns.iter().find(|c| c.name == n).unwrap();

        let id = col("id");
        assert_eq!((id.declared.as_str(), id.integer, id.distinct, id.distinct_exact), ("Int64", 6, 6, true));
        assert_eq!((id.min.as_deref(), id.max.as_deref()), (Some("1"), Some("6")));

        let amount = col("amount");
        assert_eq!((amount.nulls, amount.blanks, amount.integer, amount.decimal), (1, 1, 1, 3));
        assert_eq!((amount.decimal_precision, amount.decimal_scale), (5, 3));
        assert_eq!(amount.kind, Kind::Text, "one value in four is no number");

        let day = col("day");
        let d = &day.dates;
        assert_eq!((d.iso, d.day_first, d.month_first, d.ambiguous, d.impossible), (1, 1, 1, 1, 2));
        assert_eq!(day.impossible_examples, ["31/02/2024", "2023-02-29"]);

        let code = col("code");
        assert_eq!((code.leading_zeros, code.stray_whitespace), (1, 1));
        assert_eq!(code.patterns[0], ("AA-99".to_owned(), 2));
        assert_eq!(code.spellings, [vec!["USA".to_owned(), "usa".to_owned()]]);
        assert_eq!((code.min_length, code.max_length), (Some(3), Some(6)));
    }

    #[test]
    fn recognises_what_a_column_looks_like() {
        let t = profile(vec![
            ("contact", text(&[Some("ada@example.com"), Some("bo@x.org"), Some("cy@y.net"), Some("dee@z.io")])),
            ("phone", text(&[Some("+44 20 7946 0958"), Some("(555) 010-9999"), Some("555-0100"), None])),
            (
                "uid",
                text(&[
                    Some("123e4567-e89b-12d3-a456-426614174000"),
                    Some("00000000-0000-0000-0000-000000000000"),
                    Some("123e4567-e89b-12d3-a456-426614174001"),
                    Some("123e4567-e89b-12d3-a456-426614174002"),
                ]),
            ),
            ("flag", text(&[Some("yes"), Some("No"), Some("true"), Some("F")])),
            ("last_name", text(&[Some("Lovelace"), Some("Bo"), Some("Cy"), Some("Dee")])),
        ]);
        let col = |n: &str| t.columns.iter().find(|c| c.name == n).unwrap();
        assert_eq!((col("contact").kind, col("contact").personal), (Kind::Email, true));
        assert_eq!((col("phone").kind, col("phone").personal), (Kind::Phone, true));
        assert_eq!((col("uid").kind, col("uid").personal), (Kind::Uuid, false));
        assert_eq!((col("flag").kind, col("flag").boolean), (Kind::Boolean, 4));
        assert!(col("last_name").personal, "named like a person's name");
    }

    /// Dates with a few impossible ones are dates (never phone numbers),
    /// each impossible value is an example once, and numbers are never
    /// spellings of each other.
    #[test]
    fn mostly_dates_are_dates_and_numbers_have_no_spellings() {
        let mut days: Vec<Option<&str>> = vec![Some("1996-03-13"); 18];
        days.extend([Some("1996-02-30"), Some("1996-02-30")]);
        let mut numbers: Vec<Option<&str>> = vec![Some("1"); 18];
        numbers.extend([Some("-1"), Some("+1")]);
        let t = profile(vec![("shipped", text(&days)), ("qty", text(&numbers))]);
        let shipped = &t.columns[0];
        assert_eq!((shipped.kind, shipped.personal, shipped.dates.impossible), (Kind::Date, false, 2));
        assert_eq!(shipped.impossible_examples, ["1996-02-30"]);
        assert!(shipped.looks.is_empty(), "{:?}", shipped.looks);
        assert!(t.columns[1].spellings.is_empty());
    }

    #[test]
    fn duplicates_are_counted_and_rule_out_keys() {
        let t = profile(vec![
            ("a", text(&[Some("1"), Some("1"), Some("2"), Some("1")])),
            ("b", text(&[Some("x"), Some("x"), Some("y"), Some("z")])),
        ]);
        assert_eq!(t.duplicate_rows, Some(1));
        assert!(t.candidate_keys.is_empty());
        let a = &t.columns[0];
        assert_eq!(a.top[0], ("1".to_owned(), 3));
        assert!(key_pairs_to_try(&t, 3).is_empty(), "a repeated row rules out every key");
    }

    #[test]
    fn key_pairs_are_tried_where_no_column_is_a_key() {
        let t = profile(vec![
            ("order", text(&[Some("1"), Some("1"), Some("2"), Some("2")])),
            ("line", text(&[Some("1"), Some("2"), Some("1"), Some("2")])),
            ("note", text(&[Some("a"), None, Some("b"), Some("c")])),
            ("qty", text(&[Some("5"), Some("5"), Some("5"), Some("5")])),
            ("day", text(&[Some("2024-01-01"), Some("2024-01-02"), Some("2024-01-03"), Some("2024-01-01")])),
        ]);
        // `note` has a NULL; `qty` pairs could not hold 4 distinct values.
        assert_eq!(key_pairs_to_try(&t, 3), [[0, 1], [0, 4], [1, 4]]);
        assert_eq!(key_pairs_to_try(&t, 1), [[0, 1]]);
    }
}
