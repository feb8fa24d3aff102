//! Schema drift: each run compares every source table's columns (names,
//! types, nullability, order) with those the last successful run read
//! (`state::source_schemas`), and reports added, removed, renamed (same
//! position and type, new name) and retyped columns, naming the source's
//! file or table. A source's `on_schema_drift` says what then happens:
//! `warn` (the default) goes on with a warning, `evolve` goes on and says
//! the change was taken, `fail` stops every model that reads the source.

use datafusion::arrow::datatypes::Schema;
use serde_json::Value as Json;

use crate::diagnostic::{Code, Diagnostic, Label};
use crate::project::nodes::SourceTable;
use crate::state::manifest_file::OutputColumn;
use crate::state::source_schemas::SourceSchemas;

/// How `now` differs from `before`, one line per difference.
pub fn compare(before: &[OutputColumn], now: &[OutputColumn]) -> Vec<String> {
    let find = |cols: &[OutputColumn], name: &str| cols.iter().position(|c| c.name == name);
    let mut removed: Vec<(usize, &OutputColumn)> =
        before.iter().enumerate().filter(|(_, c)| find(now, &c.name).is_none()).collect();
    let mut added: Vec<(usize, &OutputColumn)> =
        now.iter().enumerate().filter(|(_, c)| find(before, &c.name).is_none()).collect();
    let mut out = Vec::new();
    // A column gone and one new at the same position with the same type:
    // renamed.
    removed.retain(|(at, old)| {
        let renamed = added.iter().position(|(k, new)| k == at && new.data_type == old.data_type);
        match renamed {
            Some(k) => {
                out.push(format!("`{}` was renamed `{}` (column {})", old.name, added[k].1.name, at + 1));
                added.remove(k);
                false
            }
            None => true,
        }
    });
    out.extend(added.iter().map(|(at, c)| format!("`{}` ({}) is new, column {}", c.name, c.data_type, at + 1)));
    out.extend(removed.iter().map(|(_, c)| format!("`{}` is gone", c.name)));
    for c in now {
        let Some(old) = find(before, &c.name).map(|k| &before[k]) else { continue };
        if old.data_type != c.data_type {
            out.push(format!("`{}` was {}, now {}", c.name, old.data_type, c.data_type));
        } else if old.nullable != c.nullable {
            let now = if c.nullable { "may now be NULL" } else { "is no longer nullable" };
            out.push(format!("`{}` {now}", c.name));
        }
    }
    let order = |cols: &[OutputColumn]| -> Vec<String> {
        cols.iter()
            .filter(|c| find(before, &c.name).is_some() && find(now, &c.name).is_some())
            .map(|c| c.name.clone())
            .collect()
    };
    if out.is_empty() && order(before) != order(now) {
        out.push(format!("the columns are in another order: {}", order(now).join(", ")));
    }
    out
}

/// Checks source table `s`, read as `schema`, against the columns recorded
/// under `unique_id`: the warnings to report, or (`on_schema_drift: fail`,
/// or a bad setting) the errors that fail it.
pub fn check(
    unique_id: &str,
    s: &SourceTable,
    schema: &Schema,
    previous: &SourceSchemas,
) -> Result<Vec<Diagnostic>, Vec<Diagnostic>> {
    let here = Label::new(&s.origin.file, s.origin.span.clone());
    let name = format!("{}.{}", s.source, s.name);
    let policy = match s.config.get("on_schema_drift") {
        None | Some(Json::Null) => "warn",
        Some(Json::String(p)) if ["fail", "warn", "evolve"].contains(&p.as_str()) => p.as_str(),
        Some(other) => {
            return Err(vec![
                Diagnostic::error(Code::ModelConfig, format!("source `{name}`: unknown `on_schema_drift: {other}`"))
                    .with_label(here)
                    .with_help("it is one of `fail`, `warn` (the default), `evolve`"),
            ]);
        }
    };
    let Some(before) = previous.get(unique_id) else { return Ok(Vec::new()) };
    let changes = compare(before, &OutputColumn::of(schema));
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let read_from = match (s.location.get("path").and_then(Json::as_str), s.location.get("table")) {
        (Some(path), _) => format!("read from `{path}`"),
        (None, Some(Json::String(table))) => format!("read from table `{table}`"),
        _ => format!("read from `{}`", s.identifier),
    };
    let message = format!("the columns of source `{name}` ({read_from}) changed since the last successful run");
    let d = if policy == "fail" {
        Diagnostic::error(Code::SourceSchema, message)
            .with_help("the models that read it did not run; fix the source, or set `on_schema_drift: warn` or `evolve` to take the change")
    } else if policy == "evolve" {
        Diagnostic::warning(Code::SourceSchema, format!("{message}; taken, as `on_schema_drift: evolve` says"))
    } else {
        Diagnostic::warning(Code::SourceSchema, message).with_help(
            "set `on_schema_drift: fail` to stop runs when it changes, or `evolve` to take changes as they come",
        )
    };
    let d = changes.into_iter().fold(d.with_label(here), Diagnostic::with_note);
    if policy == "fail" { Err(vec![d]) } else { Ok(vec![d]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(spec: &[(&str, &str)]) -> Vec<OutputColumn> {
        spec.iter().map(|(n, t)| OutputColumn { name: (*n).into(), data_type: (*t).into(), nullable: true }).collect()
    }

    #[test]
    fn drift_tells_added_removed_renamed_retyped_and_reordered_columns() {
        let before = cols(&[("id", "Int64"), ("name", "Utf8"), ("amount", "Int32"), ("note", "Utf8")]);
        let now = cols(&[("id", "Int64"), ("full_name", "Utf8"), ("amount", "Float64"), ("added", "Date32")]);
        assert_eq!(
            compare(&before, &now),
            [
                "`name` was renamed `full_name` (column 2)",
                "`added` (Date32) is new, column 4",
                "`note` is gone",
                "`amount` was Int32, now Float64",
            ]
        );
        assert!(compare(&before, &before).is_empty());
        let swapped = cols(&[("name", "Utf8"), ("id", "Int64"), ("amount", "Int32"), ("note", "Utf8")]);
        assert_eq!(compare(&before, &swapped), ["the columns are in another order: name, id, amount, note"]);
    }
}
