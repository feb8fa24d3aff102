//! Values and names that every layer shares, on the ground floor: staged
//! Arrow values read cell by cell ([`cells`]), the families they fall in
//! ([`Family`]), a table in a target ([`TableName`]) and how a load changes
//! it ([`LoadMode`]), and a count as people read it ([`grouped`]).
//!
//! Nothing here knows a database, a project or a run: the backends, the
//! load and reconcile policies and the config parser all speak these words,
//! so none of them has to import another for them.

pub mod cells;

use datafusion::arrow::datatypes::DataType;
use serde::Serialize;

/// `1234567` as `1,234,567`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (k, c) in digits.chars().enumerate() {
        if k > 0 && (digits.len() - k).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// How a load changes the target table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LoadMode {
    /// Build a shadow table, then swap it in; the old table is kept as
    /// `<table>__ferry_prev` for `ferry rollback`.
    #[serde(rename = "replace")]
    Replace,
    #[serde(rename = "append")]
    Append,
    /// Insert new keys, update existing ones.
    #[serde(rename = "upsert")]
    Upsert,
    /// Delete the rows whose keys are staged, then insert the stage.
    #[serde(rename = "delete+insert")]
    DeleteInsert,
}

impl LoadMode {
    pub const NAMES: [&'static str; 4] = ["replace", "append", "upsert", "delete+insert"];

    /// The mode a config names, with dbt's spellings (`merge`, `delete_insert`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "replace" => LoadMode::Replace,
            "append" => LoadMode::Append,
            "upsert" | "merge" => LoadMode::Upsert,
            "delete+insert" | "delete_insert" => LoadMode::DeleteInsert,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            LoadMode::Replace => "replace",
            LoadMode::Append => "append",
            LoadMode::Upsert => "upsert",
            LoadMode::DeleteInsert => "delete+insert",
        }
    }

    /// Whether the mode matches rows on `unique_key`.
    pub fn needs_key(self) -> bool {
        matches!(self, LoadMode::Upsert | LoadMode::DeleteInsert)
    }
}

/// A point in time as config and the command line write it, in UTC: a
/// date (`2024-01-31`), or a date and time (`2024-01-31 10:00:00`,
/// `2024-01-31T10:00`, with an optional `Z` or `+00:00`).
pub fn parse_utc(text: &str) -> Option<chrono::NaiveDateTime> {
    let t = text.trim();
    let t = t.strip_suffix('Z').or_else(|| t.strip_suffix("+00:00")).unwrap_or(t);
    let formats = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"];
    formats
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(t, f).ok())
        .or_else(|| chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)))
}

/// `--event-time-start` and `--event-time-end`, in UTC.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EventTimes {
    pub start: Option<chrono::NaiveDateTime>,
    pub end: Option<chrono::NaiveDateTime>,
}

/// A table in the target: schema (database, for MySQL) and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    /// A table beside this one, named `<name><suffix>` (shortened with a
    /// hash when the database's identifier limit would cut it).
    pub fn sibling(&self, suffix: &str, max_len: usize) -> TableName {
        let full = format!("{}{suffix}", self.name);
        if full.len() <= max_len {
            return TableName { schema: self.schema.clone(), name: full };
        }
        let hash = format!("{:08x}", xxhash_rust::xxh3::xxh3_64(self.name.as_bytes()) as u32);
        let mut keep = max_len.saturating_sub(suffix.len() + hash.len() + 1);
        while !self.name.is_char_boundary(keep) {
            keep -= 1;
        }
        TableName { schema: self.schema.clone(), name: format!("{}_{hash}{suffix}", &self.name[..keep]) }
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// What a text value must parse as (`parses_as` rules, `ferry_parses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseKind {
    Date,
    Timestamp,
    Number,
    Integer,
}

impl ParseKind {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "date" => ParseKind::Date,
            "timestamp" => ParseKind::Timestamp,
            "number" => ParseKind::Number,
            "integer" => ParseKind::Integer,
            _ => return None,
        })
    }
}

/// The value family of a canonical column type (see [`cells::canonical`]):
/// what decides how a value is printed, hashed, summed and ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Bool,
    Int,
    Float32,
    Float64,
    Decimal,
    Text,
    Binary,
    Date,
    Timestamp,
    Time,
    Interval,
    Json,
}

impl Family {
    pub fn of(dt: &DataType) -> Family {
        use DataType as D;
        match dt {
            D::Boolean => Family::Bool,
            D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32 | D::UInt64 => Family::Int,
            D::Float16 | D::Float32 => Family::Float32,
            D::Float64 => Family::Float64,
            D::Decimal32(..) | D::Decimal64(..) | D::Decimal128(..) | D::Decimal256(..) => Family::Decimal,
            D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_) => Family::Binary,
            D::Date32 | D::Date64 => Family::Date,
            D::Timestamp(..) => Family::Timestamp,
            D::Time32(_) | D::Time64(_) => Family::Time,
            D::Duration(_) | D::Interval(_) => Family::Interval,
            d if cells::is_nested(d) => Family::Json,
            _ => Family::Text,
        }
    }

    /// Families whose canonical text may hold any character.
    pub fn is_text_like(self) -> bool {
        matches!(self, Family::Text | Family::Json)
    }

    pub fn is_float(self) -> bool {
        matches!(self, Family::Float32 | Family::Float64)
    }

    /// Numbers whose sum is compared exactly.
    pub fn sums_exactly(self) -> bool {
        matches!(self, Family::Int | Family::Decimal)
    }

    /// Values whose order does not depend on a collation.
    pub fn orders_without_collation(self) -> bool {
        matches!(self, Family::Int | Family::Decimal | Family::Date | Family::Timestamp | Family::Time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sibling_names_fit_the_identifier_limit() {
        let t = TableName { schema: "s".into(), name: "orders".into() };
        assert_eq!(t.sibling("__ferry_prev", 63).name, "orders__ferry_prev");
        let long = TableName { schema: "s".into(), name: "x".repeat(60) };
        let s = long.sibling("__ferry_prev", 63);
        assert!(s.name.len() <= 63, "{}", s.name);
        assert!(s.name.ends_with("__ferry_prev"));
        assert_ne!(s.name, long.sibling("__ferry_new", 63).name);
    }

    #[test]
    fn modes_parse_with_dbt_spellings() {
        assert_eq!(LoadMode::parse("delete+insert"), Some(LoadMode::DeleteInsert));
        assert_eq!(LoadMode::parse("merge"), Some(LoadMode::Upsert));
        assert_eq!(LoadMode::parse("truncate"), None);
    }
}
