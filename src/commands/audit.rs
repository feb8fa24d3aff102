//! `ferry audit`: profiles sources and seeds through `run::audit`, and
//! shows one table per source (or the whole audit as JSON).

use std::sync::Arc;

use anyhow::Result;
use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;

use crate::audit::{ColumnProfile, TableProfile};
use crate::cli::AuditArgs;
use crate::error::ExitStatus;
use crate::printer::Printer;
use crate::run as pipeline;
use crate::settings::Settings;

pub(crate) async fn audit(settings: &Settings, args: &AuditArgs, printer: &Printer) -> Result<ExitStatus> {
    let Some(prepared) = super::prepare_or_report(settings, "audit", printer)? else {
        return Ok(ExitStatus::Failure);
    };
    let Some(selected) = super::selected_or_report(&prepared.manifest, &args.select, printer) else {
        return Ok(ExitStatus::Failure);
    };
    let engine = super::engine_for(&prepared, &args.exec)?;
    let audit = pipeline::audit(&prepared, &engine, &selected, args.compare_to.as_deref()).await?;
    let failed = super::report(printer, &audit.diagnostics);
    if printer.is_json() {
        printer.data(&serde_json::to_string(&audit)?)?;
    } else {
        for table in &audit.tables {
            printer.data(&describe(table)?)?;
        }
        if let Some(c) = &audit.compared_to {
            printer.data(&format!("Since audit {} ({}):", c.run_id, c.created_at))?;
            if c.tables.is_empty() {
                printer.data("  nothing changed")?;
            }
            for t in &c.tables {
                printer.data(&format!("  {}:", t.table))?;
                for change in &t.changes {
                    printer.data(&format!("    {change}"))?;
                }
            }
        }
    }
    if let (Some(file), Some(page)) = (&audit.file, &audit.page) {
        printer.status(&format!(
            "audited {} tables; the full audit is in `{}`, to read in a browser in `{}`",
            audit.tables.len(),
            file.shown,
            page.shown
        ));
    }
    Ok(if failed { ExitStatus::Failure } else { ExitStatus::Success })
}

/// A table's profile as text: a line on the table, then one row per column.
fn describe(t: &TableProfile) -> Result<String> {
    let dups = t.duplicate_rows.map_or_else(|| "not counted (too many distinct rows)".to_owned(), |d| d.to_string());
    let keys = if t.candidate_keys.is_empty() { "none".to_owned() } else { t.candidate_keys.join(", ") };
    let mut head = format!("{}: {} rows, duplicate rows: {dups}, candidate keys: {keys}", t.name, t.rows);
    if !t.candidate_key_pairs.is_empty() {
        let pairs: Vec<String> = t.candidate_key_pairs.iter().map(|[a, b]| format!("({a}, {b})")).collect();
        head.push_str(&format!(", candidate key pairs: {}", pairs.join(", ")));
    }
    for k in &t.declared_keys {
        head.push_str(&format!(
            "\n  declared unique ({}): {} keys repeat, {} extra rows{}",
            k.columns.join(", "),
            k.duplicate_keys,
            k.duplicate_rows,
            examples(&k.examples)
        ));
    }
    for r in &t.relationships {
        head.push_str(&format!(
            "\n  relationship {} -> {}: {} orphan rows{}",
            r.column,
            r.to,
            r.orphan_rows,
            examples(&r.examples)
        ));
    }
    if let Some(text) = &t.text {
        let mut line = format!("\n  read as {}", text.encoding);
        if text.read_with_replacement {
            line.push_str(", bytes that are no text in it replaced with U+FFFD");
        }
        if let Some(advice) = text.advice() {
            line.push_str(&format!(": {advice}"));
        }
        head.push_str(&line);
    }
    let headers = ["column", "declared", "holds", "nulls", "blanks", "distinct", "min", "max", "notes"];
    let rows: Vec<[String; 9]> = t.columns.iter().map(|c| row(c, t.rows, t.file.as_deref())).collect();
    let schema = Arc::new(Schema::new(headers.map(|h| Field::new(h, DataType::Utf8, false)).to_vec()));
    let columns: Vec<ArrayRef> =
        (0..headers.len()).map(|k| Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r[k]))) as _).collect();
    let batch = RecordBatch::try_new(schema, columns)?;
    Ok(format!("{head}\n{}", datafusion::arrow::util::pretty::pretty_format_batches(&[batch])?))
}

/// ` (e.g. 7 x3, 9 x2)`, or nothing.
fn examples(values: &[(String, u64)]) -> String {
    if values.is_empty() {
        return String::new();
    }
    let shown: Vec<String> = values.iter().map(|(v, n)| format!("{v} x{n}")).collect();
    format!(" (e.g. {})", shown.join(", "))
}

fn row(c: &ColumnProfile, rows: u64, file: Option<&str>) -> [String; 9] {
    let share =
        |n: u64| if rows == 0 { "0".to_owned() } else { format!("{n} ({:.1}%)", n as f64 * 100.0 / rows as f64) };
    let mut notes = Vec::new();
    if c.personal {
        notes.push("personal data".to_owned());
    }
    let d = &c.dates;
    if d.day_first + d.month_first + d.ambiguous > 0 {
        notes.push(format!("DD/MM {}, MM/DD {}, ambiguous {}", d.day_first, d.month_first, d.ambiguous));
    }
    if d.impossible > 0 {
        notes.push(format!("{} no real date (e.g. {})", d.impossible, c.impossible_examples.join(", ")));
    }
    if c.kind == crate::audit::Kind::Text && c.decimal > 0 {
        notes.push(format!("{} of {} are numbers", c.decimal, c.present));
    }
    let located = |examples: &[crate::audit::Located]| {
        let file = file.map(|f| format!("{f}:")).unwrap_or_default();
        let shown: Vec<String> = examples
            .iter()
            .map(|e| match e.line {
                Some(line) => format!("`{}` at {file}{line}", e.value),
                None => format!("`{}`", e.value),
            })
            .collect();
        shown.join(", ")
    };
    if c.type_breaks > 0 {
        notes.push(format!("{} not {} (e.g. {})", c.type_breaks, c.declared, located(&c.break_examples)));
    }
    if c.replaced > 0 {
        notes.push(format!("{} with bytes replaced (e.g. {})", c.replaced, located(&c.replaced_examples)));
    }
    if c.mojibake > 0 {
        notes.push(format!("{} double-encoded (e.g. {})", c.mojibake, located(&c.mojibake_examples)));
    }
    if c.leading_zeros > 0 {
        notes.push(format!("{} leading zeros", c.leading_zeros));
    }
    if c.stray_whitespace > 0 {
        notes.push(format!("{} stray whitespace", c.stray_whitespace));
    }
    if let Some(spellings) = c.spellings.first() {
        let n = c.spellings.len();
        let values = if n == 1 { "1 value".to_owned() } else { format!("{n} values") };
        notes.push(format!("{values} spelled several ways ({})", spellings.join(" / ")));
    }
    let kind = serde_json::to_value(c.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    let distinct = if c.distinct_exact { c.distinct.to_string() } else { format!("≈ {}", c.distinct) };
    [
        c.name.clone(),
        c.declared.clone(),
        kind,
        share(c.nulls),
        share(c.blanks),
        distinct,
        c.min.clone().unwrap_or_default(),
        c.max.clone().unwrap_or_default(),
        notes.join("; "),
    ]
}
