//! Masking of personal data in non-production runs: a column's `mask:`
//! policy (schema YAML, on sources, seeds and models) becomes a SQL
//! expression over the column, applied where the table enters the engine,
//! so that nothing downstream (stages, quarantine, the error log, test
//! failures, `ferry show`, reports, history) ever holds the clear value.
//!
//! The keyed policies (`hash`, `email`, `phone`, `date_shift`) are
//! HMAC-SHA256 under a key from the environment, never written anywhere:
//! the same value gives the same masked value in every table and run (so
//! keys and foreign keys still join), and without the key it cannot be
//! recomputed from a guess.

mod functions;

use datafusion::arrow::datatypes::DataType;
use serde_json::Value as Json;

pub use functions::udfs;

/// The environment variable that holds the key unless the profile names
/// another (`masking_key_env:`).
pub const KEY_VAR: &str = "FERRY_MASKING_KEY";

/// How a column is masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// The keyed hash: text as 32 hex digits, an integer as an integer of
    /// its type (non-negative).
    Hash,
    /// A constant (text columns).
    Redact(String),
    /// The first and last characters kept, the rest `*`.
    Partial {
        first: usize,
        last: usize,
    },
    /// A fake address of the same shape, from the keyed hash.
    Email,
    /// The digits replaced from the keyed hash, the rest kept.
    Phone,
    /// A date or time moved by up to `days` days either way (never 0),
    /// the same value always by the same days.
    DateShift {
        days: u32,
    },
    /// A date or time cut to the start of its month or year.
    Generalize(Unit),
    Null,
    /// A SQL expression over the row (`concat(left(name, 1), '.')`).
    Sql(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Month,
    Year,
}

/// The policy names, for messages.
pub const POLICIES: &str =
    "`hash`, `redact`, `partial`, `email`, `phone`, `date_shift`, `generalize`, `null` or `{sql: <expression>}`";

impl Policy {
    /// A `mask:` value: a policy's name, or a mapping with `policy:` (and
    /// its options) or `sql:`.
    pub fn parse(value: &Json) -> Result<Policy, String> {
        let (name, options) = match value {
            Json::String(name) => (name.as_str(), &serde_json::Map::new()),
            Json::Object(map) => {
                if let Some(sql) = map.get("sql") {
                    let sql = sql.as_str().filter(|s| !s.trim().is_empty()).ok_or("`sql:` must be an expression")?;
                    return Ok(Policy::Sql(sql.to_owned()));
                }
                let name = map.get("policy").and_then(Json::as_str).ok_or("a `mask:` mapping needs `policy:`")?;
                (name, map)
            }
            _ => return Err(format!("`mask:` must be {POLICIES}")),
        };
        let number = |key: &str, default: u64| -> Result<u64, String> {
            match options.get(key) {
                None => Ok(default),
                Some(v) => v.as_u64().ok_or_else(|| format!("`{key}:` must be a whole number")),
            }
        };
        for key in options.keys() {
            let known: &[&str] = match name {
                "redact" => &["policy", "value"],
                "partial" => &["policy", "keep_first", "keep_last"],
                "date_shift" => &["policy", "days"],
                "generalize" => &["policy", "to"],
                _ => &["policy"],
            };
            if !known.contains(&key.as_str()) {
                return Err(format!("`{key}:` is no option of `mask: {name}`"));
            }
        }
        Ok(match name {
            "hash" => Policy::Hash,
            "redact" => Policy::Redact(
                options.get("value").and_then(Json::as_str).map_or_else(|| "****".to_owned(), str::to_owned),
            ),
            "partial" => {
                Policy::Partial { first: number("keep_first", 1)? as usize, last: number("keep_last", 2)? as usize }
            }
            "email" => Policy::Email,
            "phone" => Policy::Phone,
            "date_shift" => match number("days", 30)? {
                0 => return Err("`days:` must be 1 or more".to_owned()),
                days => Policy::DateShift { days: u32::try_from(days).map_err(|_| "`days:` is too large")? },
            },
            "generalize" => match options.get("to").and_then(Json::as_str).unwrap_or("month") {
                "month" => Policy::Generalize(Unit::Month),
                "year" => Policy::Generalize(Unit::Year),
                other => return Err(format!("`to: {other}`: generalize to `month` or `year`")),
            },
            "null" => Policy::Null,
            other => return Err(format!("unknown masking policy `{other}`; use {POLICIES}")),
        })
    }

    /// The policy's name, as written.
    pub fn name(&self) -> &'static str {
        match self {
            Policy::Hash => "hash",
            Policy::Redact(_) => "redact",
            Policy::Partial { .. } => "partial",
            Policy::Email => "email",
            Policy::Phone => "phone",
            Policy::DateShift { .. } => "date_shift",
            Policy::Generalize(_) => "generalize",
            Policy::Null => "null",
            Policy::Sql(_) => "sql",
        }
    }

    /// The SQL expression that masks `column` (quoted) of type `ty`,
    /// keeping its type; `Err` with why the policy cannot mask such a
    /// column.
    pub fn expression(&self, column: &str, ty: &DataType) -> Result<String, String> {
        let text = matches!(ty, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
        let temporal = matches!(ty, DataType::Date32 | DataType::Date64 | DataType::Timestamp(..));
        let keep_type = |expr: String| format!("arrow_cast({expr}, '{ty}')");
        let refuse = |what: &str| Err(format!("`mask: {}` masks {what}, and the column is {ty}", self.name()));
        Ok(match self {
            Policy::Hash if text || ty.is_integer() => keep_type(format!("ferry_mask_hash({column})")),
            Policy::Hash => return refuse("text and integer columns"),
            Policy::Redact(value) if text => {
                keep_type(format!("CASE WHEN {column} IS NULL THEN NULL ELSE {} END", quote_literal(value)))
            }
            Policy::Redact(_) => return refuse("text columns (use `null` for others)"),
            Policy::Partial { first, last } if text => {
                keep_type(format!("ferry_mask_partial({column}, {first}, {last})"))
            }
            Policy::Email if text => keep_type(format!("ferry_mask_email({column})")),
            Policy::Phone if text => keep_type(format!("ferry_mask_phone({column})")),
            Policy::Partial { .. } | Policy::Email | Policy::Phone => return refuse("text columns"),
            Policy::DateShift { days } if temporal => keep_type(format!("ferry_mask_date_shift({column}, {days})")),
            Policy::Generalize(unit) if temporal => {
                let unit = if *unit == Unit::Month { "month" } else { "year" };
                keep_type(format!("date_trunc('{unit}', {column})"))
            }
            Policy::DateShift { .. } | Policy::Generalize(_) => return refuse("dates and timestamps"),
            Policy::Null => keep_type("NULL".to_owned()),
            Policy::Sql(sql) => format!("({sql})"),
        })
    }
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The masking key: bytes from the environment, never shown.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Why masking cannot start.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "masking is on ({why}) but the environment has no `{var}`: set it to a secret of at least 16 characters, \
         the same in every run whose masked values must match"
    )]
    Missing { var: String, why: String },
    #[error("`{var}` is too short for a masking key: give at least 16 characters")]
    Short { var: String },
}

impl Key {
    /// The key in environment variable `var`; `why` says what turned
    /// masking on, for the message when it is missing.
    pub fn from_env(var: &str, why: &str) -> Result<Key, KeyError> {
        match std::env::var_os(var) {
            None => Err(KeyError::Missing { var: var.to_owned(), why: why.to_owned() }),
            Some(v) if v.is_empty() => Err(KeyError::Missing { var: var.to_owned(), why: why.to_owned() }),
            Some(v) if v.len() < 16 => Err(KeyError::Short { var: var.to_owned() }),
            Some(v) => Ok(Key(v.into_encoded_bytes())),
        }
    }

    #[cfg(test)]
    pub fn of(bytes: &[u8]) -> Key {
        Key(bytes.to_vec())
    }
}

/// The `SELECT` list that masks `columns` (name and policy) of a table
/// with fields `fields` (name and type): the other columns as they are.
pub fn select_list(fields: &[(String, DataType)], columns: &[(String, Policy)]) -> Result<String, String> {
    let quote = |n: &str| format!("\"{}\"", n.replace('"', "\"\""));
    for (name, _) in columns {
        if !fields.iter().any(|(f, _)| f == name) {
            return Err(format!("`mask:` is on column `{name}`, which the table does not have"));
        }
    }
    let mut list = Vec::with_capacity(fields.len());
    for (name, ty) in fields {
        let column = quote(name);
        match columns.iter().find(|(c, _)| c == name) {
            Some((_, policy)) => {
                let expr = policy.expression(&column, ty).map_err(|e| format!("column `{name}`: {e}"))?;
                list.push(format!("{expr} AS {column}"));
            }
            None => list.push(column),
        }
    }
    Ok(list.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_are_read_as_written_and_refused_clearly() {
        let p = |v: Json| Policy::parse(&v);
        assert_eq!(p(Json::from("hash")), Ok(Policy::Hash));
        assert_eq!(
            p(serde_json::json!({"policy": "partial", "keep_last": 4})),
            Ok(Policy::Partial { first: 1, last: 4 })
        );
        assert_eq!(p(serde_json::json!({"policy": "generalize", "to": "year"})), Ok(Policy::Generalize(Unit::Year)));
        assert_eq!(p(serde_json::json!({"sql": "left(name, 1)"})), Ok(Policy::Sql("left(name, 1)".into())));
        assert!(p(Json::from("scramble")).unwrap_err().contains("unknown masking policy `scramble`"));
        assert!(p(serde_json::json!({"policy": "hash", "days": 3})).unwrap_err().contains("`days:` is no option"));
        assert!(Policy::Email.expression("\"id\"", &DataType::Int64).unwrap_err().contains("masks text columns"));
        assert_eq!(
            Policy::Redact("x'y".into()).expression("\"n\"", &DataType::Utf8).unwrap(),
            "arrow_cast(CASE WHEN \"n\" IS NULL THEN NULL ELSE 'x''y' END, 'Utf8')"
        );
    }
}
