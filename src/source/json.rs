//! JSON that DataFusion's newline-delimited reader cannot take: a top-level
//! array of records (`[{...}, {...}]`), an array inside a document
//! (`records: data.items`), nested values flattened into columns by declared
//! `path:`s (`customer.address.city`), and JSON in other encodings. Arrays
//! are streamed element by element, never parsed whole.

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::json::ReaderBuilder;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value as Json};

use super::columns::BATCH_ROWS;
use super::text::{CountLines, Lines};
use super::{At, DataFile, Problem, ReadError, Spec, SpecError};
use crate::project::nodes::ColumnSpec;

/// Records read to infer the schema.
const INFER_RECORDS: usize = 10_000;

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The file is one array of records (or `records` names one).
    array: bool,
    /// Keys from the document's root to the array of records.
    records: Vec<String>,
    /// Columns declared with `path:`, as `(column, keys)`.
    paths: Vec<(String, Vec<String>)>,
}

impl Options {
    /// `None` when DataFusion's newline-delimited reader suits.
    pub fn of(
        location: &serde_json::Map<String, Json>,
        columns: &[ColumnSpec],
        first_byte: impl FnOnce() -> Option<u8>,
    ) -> Result<Option<Self>, SpecError> {
        let records: Vec<String> = match location.get("records") {
            None => Vec::new(),
            Some(Json::String(p)) => keys(p),
            Some(other) => {
                return Err(SpecError::Invalid {
                    key: "records",
                    value: other.to_string(),
                    expected: "the dotted path to the array of records, such as `data.items`",
                });
            }
        };
        let paths: Vec<(String, Vec<String>)> =
            columns.iter().filter_map(|c| Some((c.name.clone(), keys(c.path.as_deref()?)))).collect();
        let array = !records.is_empty() || first_byte() == Some(b'[');
        if !array && paths.is_empty() {
            return Ok(None);
        }
        Ok(Some(Options { array, records, paths }))
    }
}

/// `$.a.b`, `a.b` or `a/b` as keys.
fn keys(path: &str) -> Vec<String> {
    let path = path.strip_prefix("$.").or_else(|| path.strip_prefix('$')).unwrap_or(path);
    path.split(['.', '/']).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// A record with its declared paths pulled up into columns.
fn flattened(options: &Options, record: Json) -> Json {
    if options.paths.is_empty() {
        return record;
    }
    let mut out = match &record {
        Json::Object(map) => map.clone(),
        _ => Map::new(),
    };
    for (name, keys) in &options.paths {
        let value = keys.iter().try_fold(&record, |v, k| v.get(k)).cloned().unwrap_or(Json::Null);
        out.insert(name.clone(), value);
    }
    Json::Object(out)
}

/// Why reading stopped early.
enum Stop {
    /// Enough records (inference), or the reader downstream has gone.
    Done,
    Failed(ReadError),
}

/// Reads the records of `file`, calling `each` with the line each starts on.
fn records(
    spec: &Spec,
    options: &Options,
    file: &DataFile,
    infer: bool,
    mut each: impl FnMut(u64, Json) -> Result<bool, ReadError>,
) -> Result<(), ReadError> {
    let replaced = Arc::new(AtomicU64::new(0));
    let text = spec.open_text(file, &replaced)?;
    if !options.array {
        let mut lines = Lines::new(text);
        loop {
            let (n, line) = match lines.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(e) => return Err(spec.io_error(file, None, e)),
            };
            if line.trim().is_empty() {
                continue;
            }
            let record: Json = match serde_json::from_str(line) {
                Ok(record) => record,
                Err(e) => {
                    let e =
                        spec.error(At::line(file.shown.clone(), n), Problem::Malformed(format!("malformed JSON: {e}")));
                    // Under `on_error: quarantine`, set aside when the rows are read.
                    if infer && spec.quarantine.is_some() {
                        continue;
                    }
                    spec.reject(e, || line.to_owned())?;
                    continue;
                }
            };
            if !each(n, flattened(options, record))? {
                break;
            }
        }
        spec.report_replaced(file, &replaced);
        return Ok(());
    }
    let counted = CountLines::new(text);
    let line = counted.counter();
    let mut de = serde_json::Deserializer::from_reader(counted);
    let mut stop = None;
    let walk = Walk {
        path: &options.records,
        line: &line,
        each: &mut |l, v| match each(l, flattened(options, v)) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Stop::Done),
            Err(e) => Err(Stop::Failed(e)),
        },
        stop: &mut stop,
    };
    let result = walk.deserialize(&mut de);
    match stop {
        Some(Stop::Done) => return Ok(()),
        Some(Stop::Failed(e)) => return Err(e),
        None => {}
    }
    if let Err(e) = result.and_then(|()| de.end()) {
        if e.is_io() {
            // The conversion gives back the reader's own error.
            return Err(spec.io_error(file, Some(line.get()), e.into()));
        }
        return Err(
            spec.error(At::line(file.shown.clone(), line.get()), Problem::Malformed(format!("malformed JSON: {e}")))
        );
    }
    spec.report_replaced(file, &replaced);
    Ok(())
}

type Each<'a> = dyn FnMut(u64, Json) -> Result<(), Stop> + 'a;

/// Walks down `path` through the document to the array, then hands each
/// element over as it is parsed.
struct Walk<'a, 'b> {
    path: &'a [String],
    line: &'a Rc<Cell<u64>>,
    each: &'a mut Each<'b>,
    stop: &'a mut Option<Stop>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path.first() {
            Some(key) => write!(f, "an object with the key `{key}`"),
            None => write!(f, "an array of records"),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((key, rest)) = self.path.split_first() else {
            return Err(serde::de::Error::custom("expected an array of records, found an object"));
        };
        let mut found = false;
        while let Some(k) = map.next_key::<String>()? {
            if &k == key && !found {
                found = true;
                map.next_value_seed(Walk {
                    path: rest,
                    line: self.line,
                    each: &mut *self.each,
                    stop: &mut *self.stop,
                })?;
                if self.stop.is_some() {
                    return Err(serde::de::Error::custom("stopped"));
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        if !found {
            return Err(serde::de::Error::custom(format!("the document has no key `{key}`")));
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if !self.path.is_empty() {
            return Err(serde::de::Error::custom(format!("expected an object with the key `{}`", self.path[0])));
        }
        loop {
            let line = self.line.get();
            let Some(value) = seq.next_element::<Json>()? else { break };
            if let Err(stop) = (self.each)(line, value) {
                *self.stop = Some(stop);
                return Err(serde::de::Error::custom("stopped"));
            }
        }
        Ok(())
    }
}

pub(super) fn infer(spec: &Spec, options: &Options) -> Result<SchemaRef, ReadError> {
    let mut sample: Vec<Json> = Vec::new();
    for file in &spec.files {
        records(spec, options, file, true, |line, record| {
            if !record.is_object() && spec.quarantine.is_some() {
                return Ok(true);
            }
            if !record.is_object() {
                return Err(spec.error(
                    At::line(file.shown.clone(), line),
                    Problem::Malformed(format!("a record must be a JSON object, not `{}`", short(&record))),
                ));
            }
            sample.push(record);
            Ok(sample.len() < INFER_RECORDS)
        })?;
        if sample.len() >= INFER_RECORDS {
            break;
        }
    }
    let schema = datafusion::arrow::json::reader::infer_json_schema_from_iterator(sample.iter().map(Ok))
        .map_err(|e| spec.error(At::file(spec.files[0].shown.clone()), Problem::Malformed(e.to_string())))?;
    Ok(Arc::new(schema))
}

fn short(v: &Json) -> String {
    let text = v.to_string();
    match text.char_indices().nth(60) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text,
    }
}

pub(super) fn read(
    spec: &Spec,
    options: &Options,
    file: &DataFile,
    schema: &SchemaRef,
    send: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<(), ReadError> {
    let mut rows: Vec<(u64, Json)> = Vec::with_capacity(BATCH_ROWS);
    let mut open = true;
    records(spec, options, file, false, |line, record| {
        rows.push((line, record));
        if rows.len() >= BATCH_ROWS {
            open = send(decode(spec, file, schema, &mut rows)?);
        }
        Ok(open)
    })?;
    if open && !rows.is_empty() {
        send(decode(spec, file, schema, &mut rows)?);
    }
    Ok(())
}

/// The buffered records as one batch; on a value that does not fit its
/// column, the error names the record's line.
fn decode(
    spec: &Spec,
    file: &DataFile,
    schema: &SchemaRef,
    rows: &mut Vec<(u64, Json)>,
) -> Result<RecordBatch, ReadError> {
    let builder = || ReaderBuilder::new(Arc::clone(schema)).with_coerce_primitive(true).build_decoder();
    let fail = |line: u64, message: String| spec.error(At::line(file.shown.clone(), line), Problem::Malformed(message));
    let mut decoder = builder().map_err(|e| fail(rows[0].0, e.to_string()))?;
    let values: Vec<&Json> = rows.iter().map(|(_, v)| v).collect();
    let result = decoder.serialize(&values).and_then(|()| decoder.flush());
    match result {
        Ok(batch) => {
            rows.clear();
            Ok(batch.unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(schema))))
        }
        Err(e) => {
            // Find the records: decode them one at a time, set aside (or
            // fail on) those that do not fit, decode the rest together.
            let mut good: Vec<&Json> = Vec::with_capacity(rows.len());
            for (line, value) in rows.iter() {
                let mut one = builder().map_err(|e| fail(*line, e.to_string()))?;
                match one.serialize(&[value]).and_then(|()| one.flush()) {
                    Ok(_) => good.push(value),
                    Err(e) => {
                        spec.reject(fail(*line, format!("{e} in record {}", short(value))), || value.to_string())?
                    }
                }
            }
            if good.len() == rows.len() {
                return Err(fail(rows[0].0, e.to_string()));
            }
            let mut decoder = builder().map_err(|e| fail(rows[0].0, e.to_string()))?;
            let batch = decoder
                .serialize(&good)
                .and_then(|()| decoder.flush())
                .map_err(|e| fail(rows[0].0, e.to_string()))?
                .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(schema)));
            rows.clear();
            Ok(batch)
        }
    }
}
