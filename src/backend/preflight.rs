//! Checking, before any row moves, that an existing target table can take
//! the staged rows: every column there, wide enough, NOT NULL only where the
//! stage has no NULLs.

use datafusion::arrow::datatypes::DataType;

use super::{BackendError, LoadJob};
use crate::values::{LoadMode, cells};

/// A column of an existing target table, as the database describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetColumn {
    pub name: String,
    /// The database's own spelling, lowercased (`numeric(12,2)`, `varchar(20)`).
    pub sql_type: String,
    pub not_null: bool,
    pub has_default: bool,
}

/// What kind of values a target column holds, read from its SQL type by the
/// backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Signed integers of this many bytes.
    Int(u8),
    /// Unsigned integers of this many bytes (MySQL).
    UInt(u8),
    /// Floats of this many bytes.
    Float(u8),
    /// Decimals with (precision, scale); `None` when unconstrained.
    Decimal(Option<(u32, u32)>),
    /// Text, with a maximum length in characters when declared.
    Text(Option<u32>),
    Binary,
    Bool,
    Date,
    Timestamp,
    Time,
    Interval,
    Json,
    /// Anything else: taken on trust (the database checks each value).
    Other,
}

/// Checks the table the job keeps, if there is one: every mode but
/// `replace` (which rebuilds the table from the stage) loads into it.
pub fn check_existing(
    job: &LoadJob,
    existing: Option<&[TargetColumn]>,
    family: impl Fn(&str) -> Family,
    case_insensitive_names: bool,
) -> Result<(), BackendError> {
    match existing {
        Some(ex) if job.mode != LoadMode::Replace => {
            let names: Vec<&str> = job.columns.iter().map(|c| c.name.as_str()).collect();
            check(job, ex, family, &crate::stage::read::null_counts(&job.stage, &names), case_insensitive_names)
        }
        _ => Ok(()),
    }
}

/// Checks `existing` against the job's staged columns.
pub fn check(
    job: &LoadJob,
    existing: &[TargetColumn],
    family: impl Fn(&str) -> Family,
    null_counts: &[Option<u64>],
    case_insensitive_names: bool,
) -> Result<(), BackendError> {
    let same = |a: &str, b: &str| if case_insensitive_names { a.eq_ignore_ascii_case(b) } else { a == b };
    let mut problems = Vec::new();
    for (k, c) in job.columns.iter().enumerate() {
        let Some(t) = existing.iter().find(|t| same(&t.name, &c.name)) else {
            if job.column_sync.add {
                continue;
            }
            problems.push(format!(
                "column `{}` ({}) is staged but `{}` has no such column",
                c.name, c.data_type, job.table
            ));
            continue;
        };
        let retyped = job.column_sync.retype.iter().any(|r| same(r, &c.name));
        if let Some(why) = narrower(&c.data_type, family(&t.sql_type)).filter(|_| !retyped) {
            problems.push(format!(
                "column `{}`: the stage holds {} but the table's `{}` {why}",
                c.name, c.data_type, t.sql_type
            ));
        }
        if t.not_null
            && let Some(Some(n)) = null_counts.get(k)
            && *n > 0
        {
            problems.push(format!("column `{}` is NOT NULL in `{}` but {n} staged rows hold NULL", c.name, job.table));
        }
    }
    for t in existing {
        let dropped = job.column_sync.drop.iter().any(|d| same(d, &t.name));
        if t.not_null && !t.has_default && !dropped && !job.columns.iter().any(|c| same(&c.name, &t.name)) {
            problems.push(format!(
                "column `{}` of `{}` is NOT NULL without a default, and the stage has no such column",
                t.name, job.table
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(BackendError::Preflight { model: job.model.clone(), table: job.table.to_string(), problems })
    }
}

/// The job's columns that the existing table lacks, when the job adds
/// them (see [`LoadJob::add_columns`]): each is added, nullable, before any
/// row moves. Empty for a `replace`, which builds the table anew.
pub fn columns_to_add<'a>(
    job: &'a LoadJob,
    existing: Option<&[TargetColumn]>,
    case_insensitive_names: bool,
) -> Vec<&'a super::LoadColumn> {
    let Some(existing) = existing.filter(|_| job.column_sync.add && job.mode != LoadMode::Replace) else {
        return Vec::new();
    };
    let same = |a: &str, b: &str| if case_insensitive_names { a.eq_ignore_ascii_case(b) } else { a == b };
    job.columns.iter().filter(|c| !existing.iter().any(|t| same(&t.name, &c.name))).collect()
}

/// The existing table's columns that the job drops (`sync_all_columns`:
/// the model no longer returns them), and the staged columns whose type it
/// alters to the staged one. Both empty for a `replace`.
pub fn columns_to_sync<'a>(
    job: &'a LoadJob,
    existing: Option<&'a [TargetColumn]>,
    case_insensitive_names: bool,
) -> (Vec<&'a TargetColumn>, Vec<&'a super::LoadColumn>) {
    let Some(existing) = existing.filter(|_| job.mode != LoadMode::Replace) else {
        return (Vec::new(), Vec::new());
    };
    let same = |a: &str, b: &str| if case_insensitive_names { a.eq_ignore_ascii_case(b) } else { a == b };
    let sync = &job.column_sync;
    let drop = existing
        .iter()
        .filter(|t| sync.drop.iter().any(|d| same(d, &t.name)) && !job.columns.iter().any(|c| same(&c.name, &t.name)))
        .collect();
    let retype = job
        .columns
        .iter()
        .filter(|c| sync.retype.iter().any(|r| same(r, &c.name)) && existing.iter().any(|t| same(&t.name, &c.name)))
        .collect();
    (drop, retype)
}

/// Why `target` cannot hold every value of `staged`, or `None` if it can.
pub fn narrower(staged: &DataType, target: Family) -> Option<String> {
    use DataType as D;
    use Family as F;
    let int_digits = |bytes: u8, signed: bool| -> u32 {
        match (bytes, signed) {
            (1, _) => 3,
            (2, _) => 5,
            (4, _) => 10,
            (_, true) => 19,
            (_, false) => 20,
        }
    };
    let staged_int = match staged {
        D::Int8 => Some((1, true)),
        D::Int16 => Some((2, true)),
        D::Int32 => Some((4, true)),
        D::Int64 => Some((8, true)),
        D::UInt8 => Some((1, false)),
        D::UInt16 => Some((2, false)),
        D::UInt32 => Some((4, false)),
        D::UInt64 => Some((8, false)),
        _ => None,
    };
    if let Some((bytes, signed)) = staged_int {
        return match target {
            F::Int(m) if m > bytes || (m == bytes && signed) => None,
            F::UInt(m) if !signed && m >= bytes => None,
            F::Decimal(None) => None,
            F::Decimal(Some((p, s))) if p - s >= int_digits(bytes, signed) => None,
            F::Float(8) if bytes <= 4 => None,
            F::Float(4) if bytes <= 2 => None,
            F::Text(None) | F::Other => None,
            F::Int(_) | F::UInt(_) | F::Decimal(_) | F::Float(_) => Some("is too narrow".into()),
            _ => Some("holds a different kind of value".into()),
        };
    }
    match (staged, target) {
        (_, F::Other) => None,
        (D::Float32, F::Float(_)) | (D::Float64, F::Float(8)) => None,
        (D::Float64, F::Float(_)) => Some("is too narrow (4-byte float)".into()),
        (D::Decimal128(p, s) | D::Decimal256(p, s), F::Decimal(Some((tp, ts)))) => {
            let (p, s) = (u32::from(*p), u32::try_from(*s).unwrap_or(0));
            if ts < s {
                Some(format!("keeps {ts} decimal places, fewer than the stage's {s}"))
            } else if tp - ts < p - s {
                Some(format!(
                    "keeps {} integer digits, fewer than the stage's {} (values would overflow)",
                    tp - ts,
                    p - s
                ))
            } else {
                None
            }
        }
        (D::Decimal128(..) | D::Decimal256(..), F::Decimal(None) | F::Text(None)) => None,
        (D::Decimal128(..) | D::Decimal256(..), F::Float(_)) => {
            Some("is a float, which would round the decimals".into())
        }
        (D::Utf8 | D::LargeUtf8 | D::Utf8View, F::Text(_) | F::Json) => None,
        (D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_), F::Binary) => None,
        (D::Boolean, F::Bool | F::Int(_) | F::UInt(_)) => None,
        (D::Date32, F::Date | F::Timestamp) => None,
        (D::Timestamp(..), F::Timestamp) => None,
        (D::Time64(_), F::Time) => None,
        (D::Duration(_) | D::Interval(_), F::Interval) => None,
        (d, F::Json | F::Text(None)) if cells::is_nested(d) => None,
        (D::Null, _) => None,
        (_, F::Text(None)) => None,
        _ => Some("holds a different kind of value".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_and_scales() {
        assert_eq!(narrower(&DataType::Int32, Family::Int(8)), None);
        assert!(narrower(&DataType::Int64, Family::Int(4)).is_some());
        assert!(narrower(&DataType::UInt32, Family::Int(4)).is_some());
        assert_eq!(narrower(&DataType::Decimal128(10, 2), Family::Decimal(Some((12, 2)))), None);
        assert!(
            narrower(&DataType::Decimal128(10, 2), Family::Decimal(Some((10, 1)))).unwrap().contains("decimal places")
        );
        assert!(narrower(&DataType::Decimal128(12, 2), Family::Decimal(Some((10, 2)))).unwrap().contains("overflow"));
        assert!(narrower(&DataType::Utf8, Family::Date).is_some());
    }
}
