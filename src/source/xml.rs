//! XML exports: one record per element at `record_path`. The record's
//! attributes and child elements are its columns; a child with children or
//! attributes of its own, or a child that repeats, becomes JSON text
//! (`{"@kind": "home", "#text": "555"}`, `["a", "b"]`). A column declared
//! with `path:` picks a value anywhere inside the record (`address/city`,
//! `@id`, `phone/@kind`).

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use quick_xml::events::{BytesStart, Event};
use serde_json::{Map, Value as Json};

use super::columns::{Guess, TextBatcher, guessed_schema};
use super::text::CountLines;
use super::{At, DataFile, Problem, ReadError, Spec, SpecError, send_full};
use crate::project::nodes::ColumnSpec;

#[derive(Debug, Clone)]
pub struct Options {
    /// Element names from the root (`/export/customers/customer`), or the
    /// last names of the path anywhere (`customer`, `customers/customer`).
    record_path: Vec<String>,
    absolute: bool,
    /// Columns declared with `path:`, as `(column, path)`.
    paths: Vec<(String, Vec<String>)>,
}

impl Options {
    pub fn of(location: &serde_json::Map<String, Json>, columns: &[ColumnSpec]) -> Result<Self, SpecError> {
        let Some(path) = location.get("record_path").and_then(Json::as_str) else {
            return Err(SpecError::Missing {
                format: "xml",
                key: "record_path",
                what: "the path of the element that holds one record, such as `/export/customers/customer`",
            });
        };
        let record_path: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect();
        if record_path.is_empty() {
            return Err(SpecError::Invalid {
                key: "record_path",
                value: path.to_owned(),
                expected: "element names separated by `/`",
            });
        }
        let paths = columns
            .iter()
            .filter_map(|c| {
                let p = c.path.as_deref()?;
                Some((c.name.clone(), p.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect()))
            })
            .collect();
        Ok(Options { record_path, absolute: path.starts_with('/'), paths })
    }

    fn is_record(&self, stack: &[String]) -> bool {
        if self.absolute { stack == self.record_path.as_slice() } else { stack.ends_with(&self.record_path) }
    }
}

/// An element of a record, with what is inside it.
#[derive(Debug, Default)]
struct Element {
    name: String,
    attributes: Vec<(String, String)>,
    text: String,
    children: Vec<Element>,
}

impl Element {
    fn is_leaf(&self) -> bool {
        self.attributes.is_empty() && self.children.is_empty()
    }

    /// A leaf as its text; anything else as JSON text.
    fn value(&self) -> String {
        if self.is_leaf() { self.text.clone() } else { self.json().to_string() }
    }

    fn json(&self) -> Json {
        if self.is_leaf() {
            return Json::String(self.text.clone());
        }
        let mut map = Map::new();
        for (k, v) in &self.attributes {
            map.insert(format!("@{k}"), Json::String(v.clone()));
        }
        for (name, group) in grouped(&self.children) {
            let value = match group.as_slice() {
                [one] => one.json(),
                many => Json::Array(many.iter().map(|e| e.json()).collect()),
            };
            map.insert(name.to_owned(), value);
        }
        let text = self.text.trim();
        if !text.is_empty() {
            map.insert("#text".into(), Json::String(text.to_owned()));
        }
        Json::Object(map)
    }

    /// The columns of a record: attributes, then children by name.
    fn columns(&self) -> Vec<(String, Option<String>)> {
        let mut out: Vec<(String, Option<String>)> =
            self.attributes.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect();
        for (name, group) in grouped(&self.children) {
            let value = match group.as_slice() {
                [one] => one.value(),
                many => Json::Array(many.iter().map(|e| e.json()).collect()).to_string(),
            };
            out.push((name.to_owned(), Some(value)));
        }
        out
    }

    /// The value at `path` (`a/b`, `@id`, `a/@kind`): the matching
    /// element's value, or JSON text of all of them when several match.
    fn at(&self, path: &[String]) -> Option<String> {
        let (last, parents) = path.split_last()?;
        let mut current: Vec<&Element> = vec![self];
        for step in parents {
            current = current.iter().flat_map(|e| e.children.iter().filter(|c| &c.name == step)).collect();
        }
        if let Some(attr) = last.strip_prefix('@') {
            let found: Vec<&str> = current
                .iter()
                .filter_map(|e| e.attributes.iter().find(|(k, _)| k == attr).map(|(_, v)| v.as_str()))
                .collect();
            return match found.as_slice() {
                [] => None,
                [one] => Some((*one).to_owned()),
                many => Some(Json::from(many.to_vec()).to_string()),
            };
        }
        let found: Vec<&Element> = current.iter().flat_map(|e| e.children.iter().filter(|c| &c.name == last)).collect();
        match found.as_slice() {
            [] => None,
            [one] => Some(one.value()),
            many => Some(Json::Array(many.iter().map(|e| e.json()).collect()).to_string()),
        }
    }
}

/// Children grouped by name, in order of first appearance.
fn grouped(children: &[Element]) -> Vec<(&str, Vec<&Element>)> {
    let mut groups: Vec<(&str, Vec<&Element>)> = Vec::new();
    for c in children {
        match groups.iter_mut().find(|(n, _)| *n == c.name) {
            Some((_, g)) => g.push(c),
            None => groups.push((&c.name, vec![c])),
        }
    }
    groups
}

/// How deep elements may nest in a file.
const MAX_DEPTH: usize = 10_000;

/// Reads the records of `file`, calling `each` with the line each starts
/// on. Stops when `each` returns false.
fn records(
    spec: &Spec,
    options: &Options,
    file: &DataFile,
    mut each: impl FnMut(u64, &Element) -> Result<bool, ReadError>,
) -> Result<(), ReadError> {
    let replaced = Arc::new(AtomicU64::new(0));
    let text = spec.open_text(file, &replaced)?;
    let mut reader = quick_xml::Reader::from_reader(CountLines::new(text));
    let mut buf = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    // The record being built: its elements from the record down.
    let mut open: Vec<Element> = Vec::new();
    let mut record_line = 0;
    let malformed =
        |line: u64, message: String| spec.error(At::line(file.shown.clone(), line), Problem::Malformed(message));
    loop {
        let line = reader.get_ref().line();
        let event = match reader.read_event_into(&mut buf) {
            Ok(event) => event,
            Err(quick_xml::Error::Io(e)) => {
                let e = Arc::try_unwrap(e).unwrap_or_else(|e| io::Error::new(e.kind(), e.to_string()));
                return Err(spec.io_error(file, Some(reader.get_ref().line()), e));
            }
            Err(e) => return Err(malformed(reader.get_ref().line(), format!("malformed XML: {e}"))),
        };
        match event {
            Event::Start(start) => {
                let element = element_of(&start).map_err(|m| malformed(reader.get_ref().line(), m))?;
                if stack.len() >= MAX_DEPTH {
                    // A record's elements become nested JSON, built and
                    // dropped recursively: past this depth it is not data.
                    return Err(malformed(
                        reader.get_ref().line(),
                        format!("elements nested more than {MAX_DEPTH} levels deep (at `<{}>`)", element.name),
                    ));
                }
                stack.push(element.name.clone());
                if !open.is_empty() || options.is_record(&stack) {
                    if open.is_empty() {
                        record_line = line;
                    }
                    open.push(element);
                }
            }
            Event::Empty(start) => {
                let element = element_of(&start).map_err(|m| malformed(reader.get_ref().line(), m))?;
                if let Some(parent) = open.last_mut() {
                    parent.children.push(element);
                } else {
                    stack.push(element.name.clone());
                    let is_record = options.is_record(&stack);
                    stack.pop();
                    if is_record && !each(line, &element)? {
                        break;
                    }
                }
            }
            Event::End(_) => {
                stack.pop();
                if let Some(done) = open.pop() {
                    match open.last_mut() {
                        Some(parent) => parent.children.push(done),
                        None => {
                            if !each(record_line, &done)? {
                                break;
                            }
                        }
                    }
                }
            }
            Event::Text(t) => {
                if let Some(e) = open.last_mut() {
                    e.text.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some(e) = open.last_mut() {
                    e.text.push_str(&t.into_inner());
                }
            }
            Event::GeneralRef(r) => {
                if let Some(e) = open.last_mut() {
                    let name = r.xml10_content();
                    match r.resolve_char_ref() {
                        Ok(Some(c)) => e.text.push(c),
                        Ok(None) => match quick_xml::escape::resolve_xml_entity(&name) {
                            Some(text) => e.text.push_str(text),
                            None => {
                                return Err(malformed(reader.get_ref().line(), format!("unknown entity `&{name};`")));
                            }
                        },
                        Err(err) => {
                            return Err(malformed(reader.get_ref().line(), format!("bad character reference: {err}")));
                        }
                    }
                }
            }
            Event::Eof => {
                if let Some(name) = stack.last() {
                    return Err(malformed(reader.get_ref().line(), format!("the file ends inside `<{name}>`")));
                }
                break;
            }
            _ => {}
        }
        buf.clear();
    }
    spec.report_replaced(file, &replaced);
    Ok(())
}

fn element_of(start: &BytesStart<'_>) -> Result<Element, String> {
    let name = start.name().as_ref().to_owned();
    let mut attributes = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| format!("malformed attribute in `<{name}>`: {e}"))?;
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| format!("malformed attribute in `<{name}>`: {e}"))?;
        let key = attr.key.as_ref();
        // Namespace declarations are not data.
        if key == "xmlns" || key.starts_with("xmlns:") {
            continue;
        }
        attributes.push((key.to_owned(), value.into_owned()));
    }
    Ok(Element { name, attributes, text: String::new(), children: Vec::new() })
}

/// A record's values by column name, declared paths first.
fn values_of(options: &Options, record: &Element) -> Vec<(String, Option<String>)> {
    let mut out = record.columns();
    for (name, path) in &options.paths {
        let value = record.at(path);
        match out.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => out.push((name.clone(), value)),
        }
    }
    out
}

pub(super) fn infer(spec: &Spec, options: &Options) -> Result<SchemaRef, ReadError> {
    let mut names: Vec<String> = options.paths.iter().map(|(n, _)| n.clone()).collect();
    let mut guesses: Vec<Guess> = vec![Guess::default(); names.len()];
    // Every record is read: a column may first appear anywhere.
    for file in &spec.files {
        records(spec, options, file, |_, record| {
            for (name, value) in values_of(options, record) {
                let i = match names.iter().position(|n| *n == name) {
                    Some(i) => i,
                    None => {
                        names.push(name);
                        guesses.push(Guess::default());
                        names.len() - 1
                    }
                };
                guesses[i].add(value.as_deref().unwrap_or_default());
            }
            Ok(true)
        })?;
    }
    Ok(guessed_schema(&names, &guesses))
}

pub(super) fn read(
    spec: &Spec,
    options: &Options,
    file: &DataFile,
    schema: &SchemaRef,
    send: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<(), ReadError> {
    let mut batcher = TextBatcher::new(Arc::clone(schema), spec.quarantine.is_some());
    let mut open = true;
    records(spec, options, file, |line, record| {
        let values = values_of(options, record);
        let row =
            schema.fields().iter().map(|f| values.iter().find(|(n, _)| n == f.name()).and_then(|(_, v)| v.as_deref()));
        let raw = || Json::Object(values.iter().map(|(n, v)| (n.clone(), Json::from(v.clone()))).collect()).to_string();
        batcher.push(At::line(file.shown.clone(), line), row, raw);
        open = send_full(spec, &mut batcher, send, false)?;
        Ok(open)
    })?;
    if open {
        send_full(spec, &mut batcher, send, true)?;
    }
    Ok(())
}
