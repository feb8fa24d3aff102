//! The canonical row encoding of reconciliation: two staged rows encode to
//! the same bytes exactly when they hold the same values, on every target
//! database (`write_show`, then `hash_text`, then `push_field`, as the
//! stage side of a reconciliation does).
#![no_main]

use arbitrary::Arbitrary;
use ferry::backend::DatabaseKind;
use ferry::backend::checksum::{hash_text, push_field, write_show};
use ferry::values::Family;
use ferry::values::cells::Cell;
use libfuzzer_sys::fuzz_target;

/// One column of two rows: the same family, two values (None is NULL).
#[derive(Debug, Arbitrary)]
enum Pair {
    Bool(Option<bool>, Option<bool>),
    Int(Option<i64>, Option<i64>),
    UInt(Option<u64>, Option<u64>),
    Float32(Option<f32>, Option<f32>),
    Float64(Option<f64>, Option<f64>),
    /// Unscaled values and the column's scale (at most 38 digits, as
    /// `Decimal128` holds).
    Decimal(Option<i128>, Option<i128>, u8),
    Text(Option<String>, Option<String>),
    Bytes(Option<Vec<u8>>, Option<Vec<u8>>),
    Date(Option<i32>, Option<i32>),
    Timestamp(Option<i64>, Option<i64>),
    /// Microseconds since midnight, taken modulo a day.
    Time(Option<u64>, Option<u64>),
    Interval(Option<(i32, i32, i64)>, Option<(i32, i32, i64)>),
    Json(Option<Tree>, Option<Tree>),
}

/// A JSON value, as a list, struct or map column holds one.
#[derive(Debug, Arbitrary)]
enum Tree {
    Null,
    Bool(bool),
    Int(i64),
    Text(String),
    List(Vec<Tree>),
    Object(Vec<(String, Tree)>),
}

impl Tree {
    fn json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Tree::Null => J::Null,
            Tree::Bool(b) => J::Bool(*b),
            Tree::Int(i) => J::from(*i),
            Tree::Text(s) => J::String(s.clone()),
            Tree::List(items) => J::Array(items.iter().map(Tree::json).collect()),
            Tree::Object(entries) => J::Object(entries.iter().map(|(k, v)| (k.clone(), v.json())).collect()),
        }
    }
}

const DAY: u64 = 86_400_000_000;
const DECIMAL_BOUND: i128 = 10i128.pow(38);

/// A column's cells as the stage holds them, its family, and whether the
/// two values are equal as the target database holds them.
fn cells(pair: &Pair, kind: DatabaseKind) -> (Family, Cell<'_>, Cell<'_>, bool) {
    fn both<'a, T: PartialEq>(
        a: &'a Option<T>,
        b: &'a Option<T>,
        cell: impl Fn(&'a T) -> Cell<'a>,
    ) -> (Cell<'a>, Cell<'a>, bool) {
        let of = |v: &'a Option<T>| v.as_ref().map_or(Cell::Null, &cell);
        (of(a), of(b), a == b)
    }
    fn float_eq(a: Option<f64>, b: Option<f64>, kind: DatabaseKind) -> bool {
        match (a, b) {
            (None, None) => true,
            (Some(x), Some(y)) if x.is_nan() && y.is_nan() => true,
            // SQLite keeps no negative zero; the others keep its sign.
            (Some(x), Some(y)) if x == 0.0 && y == 0.0 => kind == DatabaseKind::Sqlite || x.to_bits() == y.to_bits(),
            (Some(x), Some(y)) => x == y,
            _ => false,
        }
    }
    match pair {
        Pair::Bool(a, b) => {
            let (x, y, eq) = both(a, b, |v| Cell::Bool(*v));
            (Family::Bool, x, y, eq)
        }
        Pair::Int(a, b) => {
            let (x, y, eq) = both(a, b, |v| Cell::Int(*v));
            (Family::Int, x, y, eq)
        }
        Pair::UInt(a, b) => {
            let (x, y, eq) = both(a, b, |v| Cell::UInt(*v));
            (Family::Int, x, y, eq)
        }
        Pair::Float32(a, b) => {
            let (a, b) = (a.map(f64::from), b.map(f64::from));
            let cell = |v: Option<f64>| v.map_or(Cell::Null, Cell::Float);
            (Family::Float32, cell(a), cell(b), float_eq(a, b, kind))
        }
        Pair::Float64(a, b) => {
            let cell = |v: Option<f64>| v.map_or(Cell::Null, Cell::Float);
            (Family::Float64, cell(*a), cell(*b), float_eq(*a, *b, kind))
        }
        Pair::Decimal(a, b, scale) => {
            let scale = (scale % 39) as i8;
            let (a, b) = (a.map(|v| v % DECIMAL_BOUND), b.map(|v| v % DECIMAL_BOUND));
            let cell = |v: Option<i128>| v.map_or(Cell::Null, |v| Cell::Decimal(v, scale));
            (Family::Decimal, cell(a), cell(b), a == b)
        }
        Pair::Text(a, b) => {
            let (x, y, eq) = both(a, b, |v| Cell::Text(v));
            (Family::Text, x, y, eq)
        }
        Pair::Bytes(a, b) => {
            let (x, y, eq) = both(a, b, |v| Cell::Bytes(v));
            (Family::Binary, x, y, eq)
        }
        Pair::Date(a, b) => {
            let (x, y, eq) = both(a, b, |v| Cell::Date(*v));
            (Family::Date, x, y, eq)
        }
        Pair::Timestamp(a, b) => {
            let (x, y, eq) = both(a, b, |v| Cell::Timestamp(*v));
            (Family::Timestamp, x, y, eq)
        }
        Pair::Time(a, b) => {
            let (a, b) = (a.map(|v| v % DAY), b.map(|v| v % DAY));
            let cell = |v: Option<u64>| v.map_or(Cell::Null, |v| Cell::Time(v as i64));
            (Family::Time, cell(a), cell(b), a == b)
        }
        Pair::Interval(a, b) => {
            let (x, y, eq) = both(a, b, |&(months, days, micros)| Cell::Interval { months, days, micros });
            (Family::Interval, x, y, eq)
        }
        Pair::Json(a, b) => {
            let (a, b) = (a.as_ref().map(Tree::json), b.as_ref().map(Tree::json));
            // PostgreSQL keeps `jsonb`: the value, with one of each key; the
            // others keep the text as loaded.
            let eq = match kind {
                DatabaseKind::Postgres => a == b,
                _ => a.as_ref().map(ToString::to_string) == b.as_ref().map(ToString::to_string),
            };
            let cell = |v: Option<serde_json::Value>| v.map_or(Cell::Null, |v| Cell::Json(v.to_string()));
            (Family::Json, cell(a), cell(b), eq)
        }
    }
}

fn encode(out: &mut Vec<u8>, cell: &Cell<'_>, family: Family, kind: DatabaseKind) {
    let mut shown = Vec::new();
    if write_show(cell, family, kind, &mut shown) {
        let shown = String::from_utf8(shown).expect("a shown value is UTF-8");
        push_field(out, Some(hash_text(&shown, family, kind).as_bytes()), family);
    } else {
        push_field(out, None, family);
    }
}

fuzz_target!(|columns: Vec<Pair>| {
    for kind in [DatabaseKind::Postgres, DatabaseKind::Mysql, DatabaseKind::Sqlite] {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut equal = true;
        for pair in &columns {
            let (family, x, y, eq) = cells(pair, kind);
            let (mut one_a, mut one_b) = (Vec::new(), Vec::new());
            encode(&mut one_a, &x, family, kind);
            encode(&mut one_b, &y, family, kind);
            assert_eq!(
                one_a == one_b,
                eq,
                "{kind:?} {pair:?}: {:?} vs {:?}",
                String::from_utf8_lossy(&one_a),
                String::from_utf8_lossy(&one_b)
            );
            a.extend_from_slice(&one_a);
            b.extend_from_slice(&one_b);
            equal &= eq;
        }
        assert_eq!(a == b, equal, "{kind:?}: the rows' encodings agree with their values");
    }
});
