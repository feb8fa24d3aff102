//! Maps byte offsets in rendered SQL back to the template they came from.
//!
//! minijinja does not report where its output came from, so the map is built
//! by rendering a second time with invisible markers (private-use characters)
//! around each piece of literal template text. Stripping the markers must give
//! back exactly the plain render; if it does not (a filter or `set` block
//! changed the text), there is no map and diagnostics point at the compiled
//! file instead. Only literal text is mapped: output produced by a Jinja
//! expression has no place in the model file.

use std::ops::Range;

use super::scan::{self, Kind};

const START: char = '\u{E000}';
const ID_END: char = '\u{E001}';
const END: char = '\u{E002}';
const DIGIT0: u32 = 0xE010;

/// Literal pieces of the output and where each starts in the template.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceMap {
    pieces: Vec<(Range<usize>, usize)>,
}

/// A template with markers, and where each marked chunk starts.
#[derive(Debug)]
pub struct Marked {
    pub source: String,
    chunk_starts: Vec<usize>,
}

/// Inserts markers around the non-whitespace body of every literal chunk.
/// Leading and trailing whitespace stay outside the markers so that
/// whitespace control (`{%-`, `-%}`) still trims them.
pub fn mark(template: &str) -> Marked {
    let mut source = String::with_capacity(template.len() + 64);
    let mut chunk_starts = Vec::new();
    for seg in scan::segments(template) {
        let text = &template[seg.range.clone()];
        if seg.kind != Kind::Data || text.trim().is_empty() {
            source.push_str(text);
            continue;
        }
        let body_start = text.len() - text.trim_start().len();
        let body_end = text.trim_end().len();
        source.push_str(&text[..body_start]);
        source.push(START);
        for d in chunk_starts.len().to_string().chars() {
            source.push(char::from_u32(DIGIT0 + d.to_digit(10).unwrap_or(0)).unwrap_or(START));
        }
        source.push(ID_END);
        chunk_starts.push(seg.range.start + body_start);
        source.push_str(&text[body_start..body_end]);
        source.push(END);
        source.push_str(&text[body_end..]);
    }
    Marked { source, chunk_starts }
}

impl Marked {
    /// Builds the map from the marked render. Returns `None` unless stripping
    /// the markers reproduces `plain` exactly.
    pub fn source_map(&self, marked_output: &str, plain: &str, template: &str) -> Option<SourceMap> {
        let mut out = String::with_capacity(marked_output.len());
        let mut pieces = Vec::new();
        let mut open: Option<(usize, usize)> = None;
        let mut chars = marked_output.chars();
        while let Some(c) = chars.next() {
            match c {
                START => {
                    let mut id = 0usize;
                    for d in chars.by_ref() {
                        if d == ID_END {
                            break;
                        }
                        id = id * 10 + (u32::from(d).saturating_sub(DIGIT0)) as usize;
                    }
                    open = self.chunk_starts.get(id).map(|&t| (out.len(), t));
                }
                END => {
                    if let Some((start, tpl)) = open.take() {
                        let piece = start..out.len();
                        if template.get(tpl..tpl + piece.len()) == Some(&out[piece.clone()]) {
                            pieces.push((piece, tpl));
                        }
                    }
                }
                c => out.push(c),
            }
        }
        (out == plain).then_some(SourceMap { pieces })
    }
}

impl SourceMap {
    /// The template offset for an output offset inside literal text.
    pub fn to_template(&self, offset: usize) -> Option<usize> {
        let idx = self.pieces.partition_point(|(r, _)| r.end <= offset);
        let (range, tpl) = self.pieces.get(idx)?;
        range.contains(&offset).then(|| tpl + (offset - range.start))
    }

    /// Maps an output range; both ends must fall in the same literal piece.
    pub fn range_to_template(&self, range: Range<usize>) -> Option<Range<usize>> {
        let start = self.to_template(range.start)?;
        let len = range.end.saturating_sub(range.start);
        if len == 0 {
            return Some(start..start);
        }
        let end = self.to_template(range.end - 1)? + 1;
        (end == start + len).then_some(start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(tpl: &str) -> String {
        let env = minijinja::Environment::new();
        env.render_str(tpl, minijinja::context! { t => "\"orders\"" }).unwrap()
    }

    fn map_for(tpl: &str) -> (String, Option<SourceMap>) {
        let plain = render(tpl);
        let marked = mark(tpl);
        let marked_out = render(&marked.source);
        let map = marked.source_map(&marked_out, &plain, tpl);
        (plain, map)
    }

    #[test]
    fn literal_text_maps_back_through_loops_and_expressions() {
        let tpl = "select\n{% for k in ['a','b'] %}  {{ k }} as c_{{ k }},\n{% endfor %}  amount_usd\nfrom {{ t }}";
        let (out, map) = map_for(tpl);
        let map = map.expect("a map");
        let at = out.find("amount_usd").unwrap();
        let range = map.range_to_template(at..at + 10).unwrap();
        assert_eq!(&tpl[range], "amount_usd");
        let rendered_table = out.find("\"orders\"").unwrap();
        assert_eq!(map.to_template(rendered_table), None, "generated text has no place");
    }

    #[test]
    fn whitespace_control_still_trims() {
        let tpl = "select 1 {%- if true -%}   , 2  {%- endif %} as x";
        let (out, map) = map_for(tpl);
        assert_eq!(out, "select 1, 2 as x");
        let map = map.expect("a map");
        let at = out.find(", 2").unwrap();
        assert_eq!(map.to_template(at), Some(tpl.find(", 2").unwrap()));
    }

    #[test]
    fn text_changed_by_a_filter_gives_no_map() {
        let tpl = "{% filter upper %}select x{% endfilter %}";
        let (_, map) = map_for(tpl);
        if let Some(map) = map {
            assert_eq!(map.to_template(0), None);
        }
    }
}
