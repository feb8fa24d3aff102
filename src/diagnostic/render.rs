//! Renders [`Diagnostic`]s as human text (with the source line and a caret)
//! or as JSON, one object per line. The only module that touches
//! annotate-snippets.

use std::fmt::Write as _;

use annotate_snippets::renderer::DecorStyle;
use annotate_snippets::{AnnotationKind, Group, Level, Origin, Renderer, Snippet};
use serde::Serialize;

use super::{Diagnostic, Label, Severity};

/// How diagnostics are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Human { color: bool },
    Json,
    Github,
}

/// Renders one diagnostic in the given format, ending with a newline.
pub fn render(diag: &Diagnostic, format: Format) -> String {
    match format {
        Format::Human { color } => human(diag, color),
        Format::Json => json(diag),
        Format::Github => github(diag),
    }
}

fn human(diag: &Diagnostic, color: bool) -> String {
    let level = match diag.severity {
        Severity::Error => Level::ERROR,
        Severity::Warning => Level::WARNING,
    };
    let title = level.primary_title(diag.message.as_str()).id(diag.code.id());
    let mut group = Group::with_title(title);
    if let Some(label) = &diag.primary {
        let mut snippet = Snippet::source(&*label.file.text).path(label.file.path.as_str());
        snippet = snippet.annotation(annotation(AnnotationKind::Primary, label));
        for other in diag.secondary.iter().filter(|l| l.file == label.file) {
            snippet = snippet.annotation(annotation(AnnotationKind::Context, other));
        }
        group = group.element(snippet);
    } else if let Some(file) = &diag.file {
        group = group.element(Origin::path(file.as_str()));
    }
    for other in &diag.secondary {
        if diag.primary.as_ref().is_some_and(|p| p.file == other.file) {
            continue;
        }
        group = group.element(
            Snippet::source(&*other.file.text)
                .path(other.file.path.as_str())
                .annotation(annotation(AnnotationKind::Context, other)),
        );
    }
    for note in &diag.notes {
        group = group.element(Level::NOTE.message(note.as_str()));
    }
    if let Some(help) = &diag.help {
        group = group.element(Level::HELP.message(help.as_str()));
    }
    let renderer = if color { Renderer::styled() } else { Renderer::plain() };
    let mut out = renderer.decor_style(DecorStyle::Ascii).render(&[group]);
    out.push('\n');
    out
}

fn annotation<'a>(kind: AnnotationKind, label: &'a Label) -> annotate_snippets::Annotation<'a> {
    let ann = kind.span(label.range.clone());
    match &label.text {
        Some(text) => ann.label(text.as_str()),
        None => ann,
    }
}

#[derive(Serialize)]
struct JsonDiagnostic<'a> {
    code: &'static str,
    severity: Severity,
    message: &'a str,
    file: Option<&'a str>,
    line: Option<usize>,
    column: Option<usize>,
    end_line: Option<usize>,
    end_column: Option<usize>,
    label: Option<&'a str>,
    notes: &'a [String],
    help: Option<&'a str>,
}

fn json(diag: &Diagnostic) -> String {
    let start = diag.primary.as_ref().map(|l| l.file.line_col(l.range.start));
    let end = diag.primary.as_ref().map(|l| l.file.line_col(l.range.end));
    let value = JsonDiagnostic {
        code: diag.code.id(),
        severity: diag.severity,
        message: &diag.message,
        file: diag.file.as_ref().map(|p| p.as_str()),
        line: start.map(|s| s.0),
        column: start.map(|s| s.1),
        end_line: end.map(|e| e.0),
        end_column: end.map(|e| e.1),
        label: diag.primary.as_ref().and_then(|l| l.text.as_deref()),
        notes: &diag.notes,
        help: diag.help.as_deref(),
    };
    let mut out = serde_json::to_string(&value).unwrap_or_default();
    out.push('\n');
    out
}

/// GitHub Actions workflow commands: `::error file=..,line=..::message`.
fn github(diag: &Diagnostic) -> String {
    let kind = match diag.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let mut out = format!("::{kind} title={}", diag.code.id());
    if let Some(file) = &diag.file {
        let _ = write!(out, ",file={file}");
    }
    if let Some(label) = &diag.primary {
        let (line, col) = label.file.line_col(label.range.start);
        let _ = write!(out, ",line={line},col={col}");
    }
    let mut message = diag.message.clone();
    for note in &diag.notes {
        let _ = write!(message, "\nnote: {note}");
    }
    if let Some(help) = &diag.help {
        let _ = write!(message, "\nhelp: {help}");
    }
    let escaped = message.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A");
    let _ = writeln!(out, "::{escaped}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostic::{Code, SourceFile};

    fn sample() -> Diagnostic {
        let file = SourceFile::new("models/orders.sql", "select\n    sum(amount_usd) as revenue\nfrom t\n");
        let start = file.text.find("amount_usd").unwrap();
        Diagnostic::error(Code::UnknownColumn, "column `amount_usd` not found")
            .with_label(Label::new(&file, start..start + 10).with_text("not a column of `t`"))
            .with_note("`t` has `amount`, `currency`")
            .with_help("did you mean `amount`?")
    }

    #[test]
    fn human_shows_path_line_and_caret() {
        let out = render(&sample(), Format::Human { color: false });
        assert!(out.contains("error[F0302]: column `amount_usd` not found"), "{out}");
        assert!(out.contains("--> models/orders.sql:2:9"), "{out}");
        assert!(out.contains("^^^^^^^^^^ not a column of `t`"), "{out}");
        assert!(out.contains("help: did you mean `amount`?"), "{out}");
    }

    #[test]
    fn json_is_one_object_with_position() {
        let out = render(&sample(), Format::Json);
        assert_eq!(out.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["line"], 2);
        assert_eq!(v["column"], 9);
        assert_eq!(v["code"], "F0302");
    }

    #[test]
    fn github_escapes_newlines() {
        let out = render(&sample(), Format::Github);
        assert!(out.starts_with("::error title=F0302,file=models/orders.sql,line=2,col=9::"));
        assert_eq!(out.lines().count(), 1);
    }
}
