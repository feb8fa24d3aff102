//! Fixed-width flat files: each field at a declared position, positions
//! counted in characters from 1 (after decoding, so a multi-byte character
//! is one position).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use serde_json::Value as Json;

use super::columns::{Guess, TextBatcher, guessed_schema};
use super::text::Lines;
use super::{At, DataFile, Problem, ReadError, Spec, SpecError, index_of, send_full};

/// Records read to guess column types when the layout gives none.
const INFER_RECORDS: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Layout {
    pub fields: Vec<FixedField>,
    /// Only lines whose slice `start..start+width` is one of `values` are
    /// records of this table (multi-record files).
    pub record_type: Option<(usize, usize, Vec<String>)>,
    /// Lines to skip at the top of each file (headers).
    pub skip_lines: u64,
}

#[derive(Debug, Clone)]
pub struct FixedField {
    pub name: String,
    /// 0-based first character.
    pub start: usize,
    pub width: usize,
    /// The declared SQL type, if any.
    pub data_type: Option<String>,
    pub trim: Trim,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trim {
    Both,
    Left,
    Right,
    None,
}

impl Layout {
    /// `layout: [{name, start, width, type, trim}]`, `record_type: {start,
    /// width, value | values}`, `skip_lines: n`.
    pub fn of(location: &serde_json::Map<String, Json>) -> Result<Self, SpecError> {
        let Some(Json::Array(entries)) = location.get("layout") else {
            return Err(SpecError::Missing {
                format: "fixed_width",
                key: "layout",
                what: "a list of `{name, start, width}` (positions from 1), with optional `type` and `trim`",
            });
        };
        let mut fields: Vec<FixedField> = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let index = i + 1;
            let err = |message: String| SpecError::Layout { index, message };
            let Json::Object(map) = entry else {
                return Err(err("must be a map with `name`, `start` and `width`".into()));
            };
            let name = map.get("name").and_then(Json::as_str).ok_or_else(|| err("has no `name`".into()))?;
            let position = |k: &str| -> Result<usize, SpecError> {
                match map.get(k).and_then(Json::as_u64) {
                    Some(n) if n >= 1 => Ok(n as usize),
                    _ => Err(err(format!("`{name}` needs `{k}`: a whole number from 1"))),
                }
            };
            let (start, width) = (position("start")? - 1, position("width")?);
            let trim = match map.get("trim") {
                None | Some(Json::Bool(true)) => Trim::Both,
                Some(Json::Bool(false)) => Trim::None,
                Some(Json::String(s)) => match s.as_str() {
                    "both" => Trim::Both,
                    "left" => Trim::Left,
                    "right" => Trim::Right,
                    "none" => Trim::None,
                    other => return Err(err(format!("`trim: {other}` must be both, left, right or none"))),
                },
                Some(other) => return Err(err(format!("`trim: {other}` must be both, left, right or none"))),
            };
            if let Some(previous) = fields.iter().find(|f| f.start < start + width && start < f.start + f.width) {
                return Err(err(format!("`{name}` overlaps `{}`", previous.name)));
            }
            if fields.iter().any(|f| f.name == name) {
                return Err(err(format!("`{name}` appears twice")));
            }
            let data_type = map.get("type").or_else(|| map.get("data_type")).and_then(Json::as_str).map(str::to_owned);
            fields.push(FixedField { name: name.to_owned(), start, width, data_type, trim });
        }
        if fields.is_empty() {
            return Err(SpecError::Missing { format: "fixed_width", key: "layout", what: "at least one field" });
        }
        let record_type = match location.get("record_type") {
            None => None,
            Some(Json::Object(map)) => {
                let n = |k: &str| map.get(k).and_then(Json::as_u64).filter(|&n| n >= 1).map(|n| n as usize);
                let values: Vec<String> = match (map.get("value"), map.get("values")) {
                    (Some(v), _) => vec![json_text(v)],
                    (None, Some(Json::Array(vs))) => vs.iter().map(json_text).collect(),
                    _ => Vec::new(),
                };
                match (n("start"), n("width")) {
                    (Some(start), Some(width)) if !values.is_empty() => Some((start - 1, width, values)),
                    _ => {
                        return Err(SpecError::Invalid {
                            key: "record_type",
                            value: Json::Object(map.clone()).to_string(),
                            expected: "`{start, width, value}` (or `values: [...]`), positions from 1",
                        });
                    }
                }
            }
            Some(other) => {
                return Err(SpecError::Invalid {
                    key: "record_type",
                    value: other.to_string(),
                    expected: "`{start, width, value}`",
                });
            }
        };
        let skip_lines = match location.get("skip_lines") {
            None => 0,
            Some(v) => v.as_u64().ok_or_else(|| SpecError::Invalid {
                key: "skip_lines",
                value: v.to_string(),
                expected: "a whole number",
            })?,
        };
        Ok(Layout { fields, record_type, skip_lines })
    }

    /// The layout's declared types, as `(column, SQL type)`.
    pub fn declared(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().filter_map(|f| Some((f.name.as_str(), f.data_type.as_deref()?)))
    }
}

fn json_text(v: &Json) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// One line cut into fields.
struct Cutter {
    /// Byte offset of each character, and the line's length, for slicing.
    bounds: Vec<usize>,
}

impl Cutter {
    /// The text at characters `start..start+width` of `line` (shorter at
    /// the end of the line); `None` when the line ends before `start`.
    fn cut<'a>(&mut self, line: &'a str, start: usize, width: usize) -> Option<&'a str> {
        if line.is_ascii() {
            return (start < line.len()).then(|| &line[start..(start + width).min(line.len())]);
        }
        self.bounds.clear();
        self.bounds.extend(line.char_indices().map(|(i, _)| i));
        self.bounds.push(line.len());
        let chars = self.bounds.len() - 1;
        (start < chars).then(|| &line[self.bounds[start]..self.bounds[(start + width).min(chars)]])
    }
}

fn trimmed(value: &str, trim: Trim) -> &str {
    match trim {
        Trim::Both => value.trim(),
        Trim::Left => value.trim_start(),
        Trim::Right => value.trim_end(),
        Trim::None => value,
    }
}

/// Reads the records of `file`, calling `each` with the line number and
/// the fields (blank fields are `None`). Stops when `each` returns false.
fn records(
    spec: &Spec,
    layout: &Layout,
    file: &DataFile,
    infer: bool,
    mut each: impl FnMut(u64, &str, &[Option<&str>]) -> Result<bool, ReadError>,
) -> Result<(), ReadError> {
    let replaced = Arc::new(AtomicU64::new(0));
    let mut lines = Lines::new(spec.open_text(file, &replaced)?);
    let mut cutter = Cutter { bounds: Vec::new() };
    let last = layout.fields.iter().max_by_key(|f| f.start).expect("a layout has a field");
    loop {
        let next = lines.next_line();
        let (n, line) = match next {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => return Err(spec.io_error(file, None, e)),
        };
        if n <= layout.skip_lines || line.trim().is_empty() {
            continue;
        }
        if let Some((start, width, values)) = &layout.record_type {
            let kind = cutter.cut(line, *start, *width).unwrap_or_default();
            if !values.iter().any(|v| v == kind) {
                continue;
            }
        }
        if cutter.cut(line, last.start, last.width).is_none() {
            let length = line.chars().count();
            let e = spec.error(
                At::line(file.shown.clone(), n),
                Problem::Malformed(format!(
                    "short line: it has {length} characters, but field `{}` starts at position {}",
                    last.name,
                    last.start + 1
                )),
            );
            if infer {
                continue;
            }
            spec.reject(e, || line.to_owned())?;
            continue;
        }
        let values: Vec<Option<&str>> = layout
            .fields
            .iter()
            .map(|f| cutter.cut(line, f.start, f.width).map(|v| trimmed(v, f.trim)).filter(|v| !v.trim().is_empty()))
            .collect();
        if !each(n, line, &values)? {
            break;
        }
    }
    spec.report_replaced(file, &replaced);
    Ok(())
}

pub(super) fn infer(spec: &Spec, layout: &Layout) -> Result<SchemaRef, ReadError> {
    let mut guesses = vec![Guess::default(); layout.fields.len()];
    let mut seen = 0;
    // A short line is reported when the rows are read, not here.
    records(spec, layout, &spec.files[0], true, |_, _, values| {
        for (g, v) in guesses.iter_mut().zip(values) {
            g.add(v.unwrap_or_default());
        }
        seen += 1;
        Ok(seen < INFER_RECORDS)
    })?;
    let names: Vec<String> = layout.fields.iter().map(|f| f.name.clone()).collect();
    Ok(guessed_schema(&names, &guesses))
}

pub(super) fn read(
    spec: &Spec,
    layout: &Layout,
    file: &DataFile,
    schema: &SchemaRef,
    send: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<(), ReadError> {
    let mut batcher = TextBatcher::new(Arc::clone(schema), spec.quarantine.is_some());
    // Schema column -> layout field.
    let order: Vec<Option<usize>> = layout.fields.iter().map(|f| index_of(schema, &f.name)).collect();
    let mut open = true;
    records(spec, layout, file, false, |line, text, values| {
        let mut row: Vec<Option<&str>> = vec![None; schema.fields().len()];
        for (field, value) in order.iter().zip(values) {
            if let Some(i) = field {
                row[*i] = *value;
            }
        }
        batcher.push(At::line(file.shown.clone(), line), row.iter().copied(), || text.to_owned());
        open = send_full(spec, &mut batcher, send, false)?;
        Ok(open)
    })?;
    if open {
        send_full(spec, &mut batcher, send, true)?;
    }
    Ok(())
}
