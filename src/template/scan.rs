//! Splits Jinja source into literal text and tags, with byte ranges.
//!
//! This is not a Jinja parser (minijinja does the real parsing); it only
//! finds where `{{ }}`, `{% %}` and `{# #}` stand, skipping string literals
//! inside them and the body of `{% raw %}`, so that callers can rewrite tags
//! (`{% test %}` blocks become macros) or mark literal text for source maps.

use std::ops::Range;

/// What a piece of template source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Literal text, copied to the output.
    Data,
    /// `{{ expression }}`
    Expr,
    /// `{% statement %}`
    Stmt,
    /// `{# comment #}`
    Comment,
}

/// One piece of template source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub kind: Kind,
    /// The whole piece, delimiters included.
    pub range: Range<usize>,
    /// Inside the delimiters and whitespace-control markers.
    pub inner: Range<usize>,
}

impl Segment {
    /// The statement's keyword and the rest (`("macro", "foo(a)")`), for `Stmt`.
    pub fn statement<'a>(&self, src: &'a str) -> Option<(&'a str, &'a str)> {
        if self.kind != Kind::Stmt {
            return None;
        }
        let inner = src[self.inner.clone()].trim();
        let end = inner.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(inner.len());
        Some((&inner[..end], inner[end..].trim_start()))
    }
}

/// Splits `src` into segments covering it end to end.
pub fn segments(src: &str) -> Vec<Segment> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut data_start = 0;
    while let Some(found) = src[pos..].find('{') {
        let open = pos + found;
        let kind = match bytes.get(open + 1) {
            Some(b'{') => Kind::Expr,
            Some(b'%') => Kind::Stmt,
            Some(b'#') => Kind::Comment,
            _ => {
                pos = open + 1;
                continue;
            }
        };
        let Some(close_end) = find_close(src, open + 2, kind) else { break };
        push_data(&mut out, data_start, open);
        let mut inner_start = open + 2;
        if matches!(bytes.get(inner_start), Some(b'-' | b'+')) {
            inner_start += 1;
        }
        let mut inner_end = close_end - 2;
        if inner_end > inner_start && matches!(bytes.get(inner_end - 1), Some(b'-' | b'+')) {
            inner_end -= 1;
        }
        let seg = Segment { kind, range: open..close_end, inner: inner_start..inner_end };
        let is_raw = seg.statement(src).is_some_and(|(kw, _)| kw == "raw");
        out.push(seg);
        pos = close_end;
        data_start = close_end;
        if is_raw && let Some(end_raw) = find_endraw(src, pos) {
            push_data(&mut out, pos, end_raw.start);
            out.push(Segment { kind: Kind::Stmt, range: end_raw.clone(), inner: end_raw.start + 2..end_raw.end - 2 });
            pos = end_raw.end;
            data_start = pos;
        }
    }
    push_data(&mut out, data_start, src.len());
    out
}

fn push_data(out: &mut Vec<Segment>, start: usize, end: usize) {
    if end > start {
        out.push(Segment { kind: Kind::Data, range: start..end, inner: start..end });
    }
}

/// Finds the end (exclusive) of a tag opened at `from - 2`.
fn find_close(src: &str, from: usize, kind: Kind) -> Option<usize> {
    let closer: &[u8] = match kind {
        Kind::Expr => b"}}",
        Kind::Stmt => b"%}",
        Kind::Comment => b"#}",
        Kind::Data => return None,
    };
    let bytes = src.as_bytes();
    let mut i = from;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(_) if b == b'\\' => {
                i += 2;
                continue;
            }
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if kind != Kind::Comment && (b == b'\'' || b == b'"') => quote = Some(b),
            None if bytes[i..].starts_with(closer) => return Some(i + 2),
            None => {}
        }
        i += 1;
    }
    None
}

fn find_endraw(src: &str, from: usize) -> Option<Range<usize>> {
    let mut pos = from;
    while let Some(found) = src[pos..].find("{%") {
        let open = pos + found;
        let close = open + 2 + src[open + 2..].find("%}")? + 2;
        let inner = src[open + 2..close - 2].trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        if inner == "endraw" {
            return Some(open..close);
        }
        pos = close;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<(Kind, &str)> {
        segments(src).into_iter().map(|s| (s.kind, &src[s.range])).collect()
    }

    #[test]
    fn splits_data_expressions_statements_and_comments() {
        let src = "select {{ ref('a') }} {%- if x %}1{% endif -%} {# c #}";
        assert_eq!(
            kinds(src),
            vec![
                (Kind::Data, "select "),
                (Kind::Expr, "{{ ref('a') }}"),
                (Kind::Data, " "),
                (Kind::Stmt, "{%- if x %}"),
                (Kind::Data, "1"),
                (Kind::Stmt, "{% endif -%}"),
                (Kind::Data, " "),
                (Kind::Comment, "{# c #}"),
            ]
        );
    }

    #[test]
    fn closers_inside_strings_do_not_end_a_tag() {
        let src = "{{ 'a }} b' }}x";
        assert_eq!(kinds(src), vec![(Kind::Expr, "{{ 'a }} b' }}"), (Kind::Data, "x")]);
    }

    #[test]
    fn raw_blocks_are_data() {
        let src = "{% raw %}{{ not a tag }}{% endraw %}";
        assert_eq!(
            kinds(src),
            vec![(Kind::Stmt, "{% raw %}"), (Kind::Data, "{{ not a tag }}"), (Kind::Stmt, "{% endraw %}")]
        );
    }

    #[test]
    fn statement_splits_keyword() {
        let src = "{%- macro cents(col) -%}";
        let seg = &segments(src)[0];
        assert_eq!(seg.statement(src), Some(("macro", "cents(col)")));
    }
}
