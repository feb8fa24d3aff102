//! Turns DataFusion planning errors into diagnostics: classified in ferry's
//! words, and pointing into the model file when the position lies in its
//! literal text (through the template's source map), else into the
//! compiled SQL.

use std::sync::Arc;

use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;

use crate::diagnostic::{Code, Diagnostic, Label, SourceFile};
use crate::manifest::{Manifest, NodeId, Resource, context_for};

/// Diagnostics for a planning error: one per error in a collection, each
/// pointing into the model file when the position came from its literal
/// text, else into the compiled SQL.
pub fn error_diagnostics(
    err: &DataFusionError,
    manifest: &Manifest,
    id: NodeId,
    compiled: &Arc<SourceFile>,
) -> Vec<Diagnostic> {
    err.iter().map(|e| error_diagnostic(e, manifest, id, compiled)).collect()
}

fn error_diagnostic(err: &DataFusionError, manifest: &Manifest, id: NodeId, compiled: &Arc<SourceFile>) -> Diagnostic {
    let node = &manifest[id];
    let root = err.find_root();
    let df_diag = err.diagnostic();
    let Classified { code, message, mut help, notes } = classify(root, manifest);
    let generic = matches!(code, Code::SqlPlan);
    let message = match df_diag {
        Some(d) if generic => lower_first(&d.message),
        _ => message,
    };
    if help.is_none() {
        help = df_diag.and_then(|d| d.helps.first()).map(|h| lower_first(&h.message));
    }
    let span = df_diag.and_then(|d| d.span).map(|s| ((s.start.line, s.start.column), (s.end.line, s.end.column)));
    let span = span.or_else(|| parser_position(root).map(|p| (p, p)));
    let mut diag = Diagnostic::error(code, message);
    let template = node.template().cloned();
    match span.and_then(|(start, end)| rendered_range(compiled, start, end)) {
        Some(range) => {
            let mapped = template.as_ref().and_then(|t| {
                let plain = node.rendered.as_ref()?.sql.as_str();
                manifest.templater.source_map(t, &context_for(node), plain)?.range_to_template(range.clone())
            });
            match (mapped, &template) {
                (Some(r), Some(t)) => diag = diag.with_label(Label::new(t, r)),
                _ => {
                    diag = diag.with_label(Label::new(compiled, range));
                    if let Some(t) = &template {
                        diag = diag.with_note(format!("this part of the SQL was produced by Jinja in `{}`", t.path));
                    }
                }
            }
        }
        None => {
            if let Some(t) = &template {
                diag = diag.in_file(&t.path);
            }
        }
    }
    for n in notes {
        diag = diag.with_note(n);
    }
    if let (Some(d), true) = (df_diag, generic) {
        for n in &d.notes {
            diag = diag.with_note(lower_first(&n.message));
        }
    }
    if let Some(h) = help {
        diag = diag.with_help(h);
    }
    diag.with_note(format!("while planning `{}`", node.name))
}

/// A planning error of SQL that is no node's (`ferry show --inline`), in
/// the same words, with a caret on `file` (the rendered SQL) where known.
pub fn inline_diagnostic(err: &DataFusionError, manifest: &Manifest, file: &Arc<SourceFile>) -> Diagnostic {
    let root = err.find_root();
    let df_diag = err.diagnostic();
    let Classified { code, message, help, notes } = classify(root, manifest);
    let message = match df_diag {
        Some(d) if matches!(code, Code::SqlPlan) => lower_first(&d.message),
        _ => message,
    };
    let span = df_diag.and_then(|d| d.span).map(|s| ((s.start.line, s.start.column), (s.end.line, s.end.column)));
    let span = span.or_else(|| parser_position(root).map(|p| (p, p)));
    let mut diag = Diagnostic::error(code, message);
    diag = match span.and_then(|(start, end)| rendered_range(file, start, end)) {
        Some(range) => diag.with_label(Label::new(file, range)),
        None => diag.in_file(&file.path),
    };
    for n in notes {
        diag = diag.with_note(n);
    }
    match help.or_else(|| df_diag.and_then(|d| d.helps.first()).map(|h| lower_first(&h.message))) {
        Some(h) => diag.with_help(h),
        None => diag,
    }
}

/// What kind of planning error this is, in ferry's words.
struct Classified {
    code: Code,
    message: String,
    help: Option<String>,
    notes: Vec<String>,
}

fn classified(code: Code, message: String, help: Option<String>) -> Classified {
    Classified { code, message, help, notes: Vec::new() }
}

fn classify(root: &DataFusionError, manifest: &Manifest) -> Classified {
    match root {
        DataFusionError::SQL(e, _) => {
            classified(Code::SqlSyntax, format!("SQL syntax error: {}", strip_position(&e.to_string())), None)
        }
        DataFusionError::SchemaError(e, _) => match e.as_ref() {
            SchemaError::FieldNotFound { field, valid_fields } => {
                let mut names: Vec<String> = valid_fields.iter().map(|c| c.flat_name()).collect();
                names.sort();
                names.dedup();
                let help = crate::diagnostic::did_you_mean(&field.name, valid_fields.iter().map(|c| c.name.as_str()));
                let mut c = classified(Code::UnknownColumn, format!("column `{}` not found", field.name), help);
                if !names.is_empty() {
                    let shown: Vec<String> = names.iter().take(20).map(|n| format!("`{n}`")).collect();
                    let more = if names.len() > 20 { format!(" and {} more", names.len() - 20) } else { String::new() };
                    c.notes.push(format!("available columns: {}{more}", shown.join(", ")));
                }
                c
            }
            other => classified(Code::SqlPlan, other.to_string(), None),
        },
        DataFusionError::Plan(msg) if msg.starts_with("table '") && msg.ends_with("' not found") => {
            let full = msg.trim_start_matches("table '").trim_end_matches("' not found");
            let table = full.strip_prefix("datafusion.public.").unwrap_or(full);
            let bare = table.rsplit('.').next().unwrap_or(table);
            let models = manifest
                .iter()
                .filter(|(_, n)| matches!(n.resource, Resource::Model { .. } | Resource::Seed(_)))
                .map(|(_, n)| n.name.as_str());
            let help = match crate::diagnostic::closest(bare, models) {
                Some(m) => format!("refer to models with `{{{{ ref('{m}') }}}}`"),
                None => {
                    "refer to models with `{{ ref('name') }}` and to sources with `{{ source('source', 'table') }}`"
                        .to_owned()
                }
            };
            classified(Code::UnknownTable, format!("table `{table}` not found"), Some(help))
        }
        other => classified(Code::SqlPlan, other.strip_backtrace().lines().next().unwrap_or_default().to_owned(), None),
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) if c.clone().next().is_some_and(char::is_lowercase) => f.to_lowercase().chain(c).collect(),
        _ => s.to_owned(),
    }
}

/// sqlparser ends messages with `at Line: 3, Column: 14`.
fn parser_position(root: &DataFusionError) -> Option<(u64, u64)> {
    let DataFusionError::SQL(e, _) = root else { return None };
    let msg = e.to_string();
    let at = msg.rfind("Line: ")?;
    let rest = &msg[at + 6..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let col: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((line.trim().parse().ok()?, col.parse().ok()?))
}

fn strip_position(msg: &str) -> String {
    let msg = msg.strip_prefix("sql parser error: ").unwrap_or(msg);
    match msg.rfind(" at Line: ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

fn rendered_range(compiled: &SourceFile, start: (u64, u64), end: (u64, u64)) -> Option<std::ops::Range<usize>> {
    let to_usize = |(l, c): (u64, u64)| Some((usize::try_from(l).ok()?, usize::try_from(c).ok()?));
    let (sl, sc) = to_usize(start)?;
    if sl == 0 {
        return None;
    }
    let s = compiled.offset_of(sl, sc)?;
    let e = to_usize(end).and_then(|(el, ec)| compiled.offset_of(el, ec)).filter(|&e| e > s);
    let e = e.unwrap_or_else(|| {
        let rest = &compiled.text[s..];
        s + rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len()).max(1).min(rest.len())
    });
    Some(s..e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_first_keeps_acronyms() {
        assert_eq!(lower_first("Column 'x' not found"), "column 'x' not found");
        assert_eq!(lower_first("SQL error"), "SQL error");
    }

    #[test]
    fn parser_messages_lose_their_position_suffix() {
        assert_eq!(
            strip_position("sql parser error: Expected: an expression, found: , at Line: 1, Column: 11"),
            "Expected: an expression, found: ,"
        );
    }
}
