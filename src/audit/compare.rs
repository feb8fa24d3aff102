//! What changed between two audits of the same sources (`ferry audit
//! --compare-to`): tables and columns that appeared or went, row counts,
//! whole-row duplicates, declared and inferred types, and per column the
//! empty values, distinct values and type breaks, each as a line in words.
//! Both audits are read as their `audit.json` documents, so an audit made
//! by an earlier ferry compares field by field as far as both hold them.

use serde::Serialize;
use serde_json::Value;

use super::DISTINCT_BOUND;

/// The changes of one table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableChanges {
    pub table: String,
    pub changes: Vec<String>,
}

/// The changes from `before` to `after` (two `audit.json` documents), for
/// the tables of `after` and those of `before` that are gone; tables
/// without changes are left out.
pub fn compare(before: &Value, after: &Value) -> Vec<TableChanges> {
    let tables = |doc: &Value| doc["tables"].as_array().cloned().unwrap_or_default();
    let (old, new) = (tables(before), tables(after));
    let named = |list: &[Value], name: &str| list.iter().find(|t| t["name"] == name).cloned();
    let mut out = Vec::new();
    for t in &new {
        let name = t["name"].as_str().unwrap_or_default();
        let changes = match named(&old, name) {
            None => vec!["new table: not in the earlier audit".to_owned()],
            Some(o) => table_changes(&o, t),
        };
        if !changes.is_empty() {
            out.push(TableChanges { table: name.to_owned(), changes });
        }
    }
    for o in &old {
        let name = o["name"].as_str().unwrap_or_default();
        if named(&new, name).is_none() {
            out.push(TableChanges { table: name.to_owned(), changes: vec!["not audited this time".to_owned()] });
        }
    }
    out
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// `before -> after (+d)`.
fn moved(before: u64, after: u64) -> String {
    let d = after as i128 - before as i128;
    format!("{before} -> {after} ({}{d})", if d > 0 { "+" } else { "" })
}

fn table_changes(o: &Value, t: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if o["rows"] != t["rows"] {
        out.push(format!("rows: {}", moved(n(&o["rows"]), n(&t["rows"]))));
    }
    if o["duplicate_rows"] != t["duplicate_rows"] && t["duplicate_rows"].is_u64() && o["duplicate_rows"].is_u64() {
        out.push(format!("duplicate rows: {}", moved(n(&o["duplicate_rows"]), n(&t["duplicate_rows"]))));
    }
    let columns = |doc: &Value| doc["columns"].as_array().cloned().unwrap_or_default();
    let (old, new) = (columns(o), columns(t));
    for c in &new {
        let name = c["name"].as_str().unwrap_or_default();
        let Some(b) = old.iter().find(|x| x["name"] == name) else {
            out.push(format!("new column `{name}` ({})", c["declared"].as_str().unwrap_or_default()));
            continue;
        };
        for (field, what) in [("declared", "type"), ("kind", "holds")] {
            if b[field] != c[field] {
                let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                out.push(format!("`{name}` {what}: {} -> {}", text(&b[field]), text(&c[field])));
            }
        }
        let empty = |v: &Value| n(&v["nulls"]) + n(&v["blanks"]);
        for (label, before, after) in [
            ("NULL or blank values", empty(b), empty(c)),
            ("values breaking its type", n(&b["type_breaks"]), n(&c["type_breaks"])),
        ] {
            if before != after {
                out.push(format!("`{name}` {label}: {}", moved(before, after)));
            }
        }
        if let Some(change) = distinct_change(Distinct::of(b), Distinct::of(c)) {
            out.push(format!("`{name}` distinct values: {change}"));
        }
    }
    for b in &old {
        let name = b["name"].as_str().unwrap_or_default();
        if !new.iter().any(|c| c["name"] == name) {
            out.push(format!("column `{name}` is gone"));
        }
    }
    out
}

/// A column's distinct count as an audit gives it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Distinct {
    Exact(u64),
    /// Past the bound, by a HyperLogLog sketch (standard error about 0.8%).
    Estimated(u64),
    /// Past the bound, in an audit made before the counts were estimated:
    /// the bound itself, a lower bound.
    AtLeast(u64),
}

impl Distinct {
    fn of(column: &Value) -> Distinct {
        let count = n(&column["distinct"]);
        match column["distinct_exact"].as_bool() {
            // An estimate is never the bound: it is at least one more than
            // the values held (see `Accumulator::finish`).
            Some(false) if count == DISTINCT_BOUND as u64 => Distinct::AtLeast(count),
            Some(false) => Distinct::Estimated(count),
            _ => Distinct::Exact(count),
        }
    }

    fn count(self) -> u64 {
        match self {
            Distinct::Exact(c) | Distinct::Estimated(c) | Distinct::AtLeast(c) => c,
        }
    }

    fn shown(self) -> String {
        match self {
            Distinct::Exact(c) => c.to_string(),
            Distinct::Estimated(c) => format!("≈{c}"),
            Distinct::AtLeast(c) => format!("{c} or more"),
        }
    }
}

/// Estimates that differ by less than this share of the larger are within
/// the sketches' error (about 0.8% each), and not said to have changed.
const ESTIMATE_TOLERANCE: f64 = 0.02;

/// How a column's distinct count moved, when it can be said to have: exact
/// counts that differ; estimates (on either side) further apart than
/// [`ESTIMATE_TOLERANCE`]; a lower bound only against a count below it (a
/// lower bound says nothing of a count above it).
fn distinct_change(before: Distinct, after: Distinct) -> Option<String> {
    let (b, a) = (before.count(), after.count());
    let changed = match (before, after) {
        (Distinct::Exact(_), Distinct::Exact(_)) => return (b != a).then(|| moved(b, a)),
        (Distinct::AtLeast(_), _) => a < b,
        (_, Distinct::AtLeast(_)) => b < a,
        _ => b.abs_diff(a) as f64 > ESTIMATE_TOLERANCE * b.max(a) as f64,
    };
    changed.then(|| format!("{} -> {}", before.shown(), after.shown()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_kind_of_change_is_said() {
        let col = |name: &str, declared: &str, nulls: u64, breaks: u64, distinct: u64| {
            json!({"name": name, "declared": declared, "kind": "integer", "nulls": nulls, "blanks": 0,
                   "type_breaks": breaks, "distinct": distinct})
        };
        let before = json!({"tables": [
            {"name": "crm.people", "rows": 10, "duplicate_rows": 0,
             "columns": [col("id", "Int64", 0, 0, 10), col("fax", "Utf8", 9, 0, 1)]},
            {"name": "crm.old", "rows": 1, "duplicate_rows": 0, "columns": []},
            {"name": "crm.same", "rows": 1, "duplicate_rows": 0, "columns": [col("a", "Int64", 0, 0, 1)]}
        ]});
        let after = json!({"tables": [
            {"name": "crm.people", "rows": 12, "duplicate_rows": 1,
             "columns": [col("id", "Utf8", 2, 1, 9), col("email", "Utf8", 0, 0, 12)]},
            {"name": "crm.same", "rows": 1, "duplicate_rows": 0, "columns": [col("a", "Int64", 0, 0, 1)]},
            {"name": "crm.new", "rows": 1, "duplicate_rows": 0, "columns": []}
        ]});
        let changes = compare(&before, &after);
        assert_eq!(
            changes,
            [
                TableChanges {
                    table: "crm.people".into(),
                    changes: vec![
                        "rows: 10 -> 12 (+2)".into(),
                        "duplicate rows: 0 -> 1 (+1)".into(),
                        "`id` type: Int64 -> Utf8".into(),
                        "`id` NULL or blank values: 0 -> 2 (+2)".into(),
                        "`id` values breaking its type: 0 -> 1 (+1)".into(),
                        "`id` distinct values: 10 -> 9 (-1)".into(),
                        "new column `email` (Utf8)".into(),
                        "column `fax` is gone".into(),
                    ],
                },
                TableChanges { table: "crm.new".into(), changes: vec!["new table: not in the earlier audit".into()] },
                TableChanges { table: "crm.old".into(), changes: vec!["not audited this time".into()] },
            ]
        );
    }

    #[test]
    fn estimated_distinct_counts_change_only_past_their_error_and_a_lower_bound_only_downwards() {
        let col = |distinct: u64, exact: bool| json!({"name": "c", "distinct": distinct, "distinct_exact": exact});
        let doc = |c: Value| json!({"tables": [{"name": "t", "rows": 1, "columns": [c]}]});
        let said = |before: Value, after: Value| -> Vec<String> {
            compare(&doc(before), &doc(after)).into_iter().flat_map(|t| t.changes).collect()
        };
        // Two estimates 1% apart: within the sketches' error.
        assert!(said(col(1_500_000, false), col(1_515_000, false)).is_empty());
        assert_eq!(said(col(1_500_000, false), col(1_600_000, false)), ["`c` distinct values: ≈1500000 -> ≈1600000"]);
        // An exact count against an estimate, either way.
        assert!(said(col(99_000, true), col(100_500, false)).is_empty());
        assert_eq!(said(col(90_000, true), col(150_000, false)), ["`c` distinct values: 90000 -> ≈150000"]);
        assert_eq!(said(col(150_000, false), col(60, true)), ["`c` distinct values: ≈150000 -> 60"]);
        // An earlier ferry's lower bound says nothing of a count above it.
        let bound = DISTINCT_BOUND as u64;
        assert!(said(col(bound, false), col(1_520_996, false)).is_empty());
        assert_eq!(said(col(bound, false), col(5, true)), ["`c` distinct values: 100000 or more -> 5"]);
        assert!(said(col(1_520_996, false), col(bound, false)).is_empty());
        // Exact counts: any change.
        assert_eq!(said(col(10, true), col(11, true)), ["`c` distinct values: 10 -> 11 (+1)"]);
    }
}
