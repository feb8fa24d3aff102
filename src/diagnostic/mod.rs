//! Diagnostics as data: what went wrong, where, and what to do about it.
//!
//! Every user-facing problem (a bad model, a malformed YAML file, an unknown
//! `ref`) becomes a [`Diagnostic`]. They are rendered late by [`render`], so
//! the same value can become human text, JSON or a GitHub annotation. This
//! module must not print anything itself.

pub mod render;

use std::ops::Range;
use std::sync::Arc;

use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;

/// Stable identifiers for every kind of diagnostic ferry emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Code {
    /// A YAML file could not be parsed.
    YamlSyntax,
    /// A YAML file parsed but holds a value of the wrong shape.
    YamlShape,
    /// A config key ferry does not know (a warning).
    UnknownConfigKey,
    /// A project config path that matches no model folder (a warning).
    UnusedConfigPath,
    /// The project file is missing or invalid.
    ProjectFile,
    /// A profile or target is missing or invalid.
    Profile,
    /// A Jinja template failed to parse.
    JinjaSyntax,
    /// A Jinja template failed while rendering.
    JinjaRender,
    /// `ref()` names a model that does not exist.
    UnknownRef,
    /// `source()` names a source that is not declared.
    UnknownSource,
    /// Two nodes share one name.
    DuplicateName,
    /// The dependency graph has a cycle.
    Cycle,
    /// The rendered SQL does not parse.
    SqlSyntax,
    /// A column referenced in SQL does not exist.
    UnknownColumn,
    /// A table referenced in SQL does not exist.
    UnknownTable,
    /// Planning the SQL failed for another reason.
    SqlPlan,
    /// A model's SQL is not a single query.
    NotAQuery,
    /// A selector could not be parsed or matched nothing.
    Selector,
    /// A seed or source could not be read for its schema.
    SourceSchema,
    /// A declared `data_type` is not a known SQL type.
    DataType,
    /// A model's config is invalid (such as an unsupported materialization).
    ModelConfig,
    /// A model failed while it ran.
    Execution,
    /// A row of a source or seed file could not be read.
    SourceRow,
    /// Loading a staged model into the target failed.
    Load,
    /// A generic test names no `test_<name>` macro.
    UnknownTest,
    /// A data test returned failing rows.
    TestFailed,
    Reconcile,
}

impl Code {
    /// The short stable identifier shown as `error[F0101]`.
    pub fn id(self) -> &'static str {
        match self {
            Code::YamlSyntax => "F0001",
            Code::YamlShape => "F0002",
            Code::UnknownConfigKey => "F0003",
            Code::UnusedConfigPath => "F0004",
            Code::ProjectFile => "F0005",
            Code::Profile => "F0006",
            Code::JinjaSyntax => "F0101",
            Code::JinjaRender => "F0102",
            Code::UnknownRef => "F0201",
            Code::UnknownSource => "F0202",
            Code::DuplicateName => "F0203",
            Code::Cycle => "F0204",
            Code::Selector => "F0205",
            Code::SqlSyntax => "F0301",
            Code::UnknownColumn => "F0302",
            Code::UnknownTable => "F0303",
            Code::SqlPlan => "F0304",
            Code::NotAQuery => "F0305",
            Code::SourceSchema => "F0401",
            Code::DataType => "F0402",
            Code::ModelConfig => "F0403",
            Code::Execution => "F0306",
            Code::SourceRow => "F0404",
            Code::Load => "F0501",
            Code::UnknownTest => "F0206",
            Code::TestFailed => "F0601",
            Code::Reconcile => "F0701",
        }
    }
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

/// A file whose text a diagnostic points into, with its path relative to
/// the project root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: Utf8PathBuf,
    pub text: Arc<str>,
}

impl SourceFile {
    /// A file known by its project-relative path and its full text.
    pub fn new(path: impl Into<Utf8PathBuf>, text: impl Into<Arc<str>>) -> Arc<Self> {
        Arc::new(SourceFile { path: path.into(), text: text.into() })
    }

    /// 1-based line and character column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }

    /// Byte offset of a 1-based line and character column, if it exists.
    pub fn offset_of(&self, line: usize, column: usize) -> Option<usize> {
        let mut start = 0;
        for _ in 1..line {
            start += self.text[start..].find('\n')? + 1;
        }
        let rest = &self.text[start..];
        let line_text = &rest[..rest.find('\n').unwrap_or(rest.len())];
        let col = column.checked_sub(1)?;
        if col == line_text.chars().count() {
            return Some(start + line_text.len());
        }
        line_text.char_indices().nth(col).map(|(i, _)| start + i)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char_boundary(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// A place in a file, with optional text shown beside the caret.
#[derive(Debug, Clone)]
pub struct Label {
    pub file: Arc<SourceFile>,
    pub range: Range<usize>,
    pub text: Option<String>,
}

impl Label {
    /// A label over `range` in `file`, widened to whole characters and cut
    /// at the file's end (a parser may point at a byte inside a character).
    pub fn new(file: &Arc<SourceFile>, range: Range<usize>) -> Self {
        let text = &file.text;
        let start = floor_char_boundary(text, range.start.min(text.len()));
        let end = ceil_char_boundary(text, range.end.clamp(start, text.len()));
        Label { file: Arc::clone(file), range: start..end, text: None }
    }

    /// Sets the text shown beside the caret.
    #[must_use]
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }
}

/// One problem, with where it happened and how to fix it.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    /// Short, lower case, no trailing period.
    pub message: String,
    /// Where it went wrong, when known. Never invented.
    pub primary: Option<Label>,
    /// The file the problem belongs to when no exact place is known.
    pub file: Option<Utf8PathBuf>,
    /// Related places ("defined here").
    pub secondary: Vec<Label>,
    pub notes: Vec<String>,
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error with a code and message.
    pub fn error(code: Code, message: impl Into<String>) -> Self {
        Self::new(code, Severity::Error, message)
    }

    /// A warning with a code and message.
    pub fn warning(code: Code, message: impl Into<String>) -> Self {
        Self::new(code, Severity::Warning, message)
    }

    fn new(code: Code, severity: Severity, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            severity,
            message: message.into(),
            primary: None,
            file: None,
            secondary: Vec::new(),
            notes: Vec::new(),
            help: None,
        }
    }

    /// Points the diagnostic at a place.
    #[must_use]
    pub fn with_label(mut self, label: Label) -> Self {
        self.file = Some(label.file.path.clone());
        self.primary = Some(label);
        self
    }

    /// Names the file without pointing at a place in it.
    #[must_use]
    pub fn in_file(mut self, path: impl AsRef<Utf8Path>) -> Self {
        self.file = Some(path.as_ref().to_owned());
        self
    }

    /// Adds a related place.
    #[must_use]
    pub fn with_secondary(mut self, label: Label) -> Self {
        self.secondary.push(label);
        self
    }

    /// Adds a note.
    #[must_use]
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// Sets the help line.
    #[must_use]
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// True for errors, false for warnings.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// "did you mean `x`?" for the closest candidate, if one is close enough.
pub fn did_you_mean<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    closest(wanted, candidates).map(|c| format!("did you mean `{c}`?"))
}

/// The candidate closest to `wanted` by Jaro-Winkler similarity, if any is
/// similar enough to be a plausible typo.
pub fn closest<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let wanted_lower = wanted.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&wanted_lower, &c.to_lowercase()), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters_not_bytes() {
        let f = SourceFile::new("m.sql", "select\n  é, amount");
        let off = f.text.find("amount").unwrap();
        assert_eq!(f.line_col(off), (2, 6));
        assert_eq!(f.offset_of(2, 6), Some(off));
    }

    #[test]
    fn a_label_covers_whole_characters_inside_its_file() {
        // minijinja points one byte into the `ԓ` of `loopԓast` (found by
        // the `jinja` fuzz target).
        let f = SourceFile::new("m.sql", "loop\u{4d3}ast");
        assert_eq!(Label::new(&f, 5..5).range, 4..6);
        assert_eq!(Label::new(&f, 5..99).range, 4..9);
        assert_eq!(Label::new(&f, 40..50).range, 9..9);
    }

    #[test]
    fn offset_of_rejects_positions_past_the_line() {
        let f = SourceFile::new("m.sql", "ab\ncd");
        assert_eq!(f.offset_of(1, 3), Some(2));
        assert_eq!(f.offset_of(1, 9), None);
        assert_eq!(f.offset_of(5, 1), None);
    }

    #[test]
    fn closest_finds_a_plausible_typo_only() {
        let cands = ["amount", "currency", "paid_at"];
        assert_eq!(closest("amout", cands), Some("amount"));
        assert_eq!(closest("zzz", cands), None);
    }
}
