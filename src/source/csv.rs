//! CSV that DataFusion's own reader cannot take: text in another encoding
//! than UTF-8 (or with `on_invalid: replace`), transcoded while read, then
//! parsed by arrow's CSV reader with the source's dialect; and CSV under
//! `on_error: quarantine`, read record by record (the csv crate), where a
//! record with the wrong number of fields, or a value that does not convert
//! to its column's type, is set aside with its text instead of failing the
//! run.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::csv::ReaderBuilder;
use datafusion::arrow::csv::reader::Format;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;

use super::CsvSettings;
use super::columns::BATCH_ROWS;
use super::{At, DataFile, Problem, ReadError, Spec};

/// Records read to infer the schema (as DataFusion's reader does).
const INFER_RECORDS: usize = 1000;

/// arrow's CSV dialect for the source's settings.
fn format(spec: &Spec, settings: &CsvSettings, file: &DataFile) -> Result<Format, ReadError> {
    let mut f =
        Format::default().with_header(settings.header).with_delimiter(settings.delimiter).with_quote(settings.quote);
    if let Some(e) = settings.escape {
        f = f.with_escape(e);
    }
    if let Some(re) = null_regex(spec, settings, file)? {
        f = f.with_null_regex(re);
    }
    Ok(f)
}

pub(super) fn infer(spec: &Spec, settings: &CsvSettings) -> Result<SchemaRef, ReadError> {
    let file = &spec.files[0];
    if spec.quarantine.is_some() {
        return infer_records(spec, settings, file);
    }
    let format = format(spec, settings, file)?;
    let replaced = Arc::new(AtomicU64::new(0));
    let text = spec.open_text(file, &replaced)?;
    let (schema, _) = format.infer_schema(text, Some(INFER_RECORDS)).map_err(|e| arrow_error(spec, file, None, e))?;
    Ok(Arc::new(schema))
}

pub(super) fn read(
    spec: &Spec,
    settings: &CsvSettings,
    file: &DataFile,
    schema: &SchemaRef,
    send: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<(), ReadError> {
    if spec.quarantine.is_some() {
        return read_records(spec, settings, file, schema, send);
    }
    let format = format(spec, settings, file)?;
    let replaced = Arc::new(AtomicU64::new(0));
    let text = spec.open_text(file, &replaced)?;
    let reader = ReaderBuilder::new(Arc::clone(schema))
        .with_format(format)
        .with_batch_size(BATCH_ROWS)
        .build_buffered(text)
        .map_err(|e| arrow_error(spec, file, Some(schema), e))?;
    for batch in reader {
        let batch = batch.map_err(|e| arrow_error(spec, file, Some(schema), e))?;
        if !send(batch) {
            return Ok(());
        }
    }
    spec.report_replaced(file, &replaced);
    Ok(())
}

/// The reader's error, naming line and column where its message does.
fn arrow_error(spec: &Spec, file: &DataFile, schema: Option<&SchemaRef>, e: ArrowError) -> ReadError {
    if let ArrowError::IoError(_, io) = e {
        return spec.io_error(file, None, io);
    }
    let message = e.to_string();
    let capture = |pattern: &str| regex::Regex::new(pattern).ok()?.captures(&message).map(|c| c[1].to_owned());
    // The reader counts lines from 0.
    let line = capture(r"(?:at|for) line (\d+)").and_then(|l| l.parse::<u64>().ok()).map(|l| l + 1);
    let at = At { path: file.shown.clone(), sheet: None, line };
    let column = capture(r"for column (\d+)")
        .and_then(|c| c.parse::<usize>().ok())
        .and_then(|c| schema?.fields().get(c).map(|f| f.name().clone()));
    match (capture(r"parsing value '(.*?)' as type"), column, capture(r"as type '(.*?)'")) {
        (Some(value), Some(column), Some(ty)) => spec.error(at, Problem::Value { column, value, ty }),
        _ => spec.error(at, Problem::Malformed(message)),
    }
}

/// The csv crate's reader over `file`'s text, in the source's dialect; the
/// header (if any) is read as a record, so lines count from the top.
fn records<'a>(
    spec: &Spec,
    settings: &CsvSettings,
    file: &DataFile,
    replaced: &Arc<AtomicU64>,
) -> Result<::csv::Reader<Box<dyn std::io::Read + Send + 'a>>, ReadError> {
    let text = spec.open_text(file, replaced)?;
    Ok(::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(settings.delimiter)
        .quote(settings.quote)
        .escape(settings.escape)
        .from_reader(Box::new(text) as Box<dyn std::io::Read + Send>))
}

/// The column names: the header's fields, or `column_N`.
fn names(header: Option<&::csv::StringRecord>, width: usize) -> Vec<String> {
    (0..width)
        .map(|k| header.and_then(|h| h.get(k)).map_or_else(|| format!("column_{}", k + 1), str::to_owned))
        .collect()
}

/// A field as the value it stands for: NULL when empty or when it matches
/// the source's `null_strings`.
fn value<'r>(field: &'r str, nulls: Option<&regex::Regex>) -> Option<&'r str> {
    let null = match nulls {
        Some(re) => re.is_match(field),
        None => field.is_empty(),
    };
    (!null).then_some(field)
}

/// Column types guessed from the first records that have the header's
/// width (the others are quarantined when the rows are read).
fn infer_records(spec: &Spec, settings: &CsvSettings, file: &DataFile) -> Result<SchemaRef, ReadError> {
    let replaced = Arc::new(AtomicU64::new(0));
    let mut reader = records(spec, settings, file, &replaced)?;
    let nulls = null_regex(spec, settings, file)?;
    let mut header = None;
    let mut guesses: Vec<super::columns::Guess> = Vec::new();
    let mut seen = 0;
    let mut record = ::csv::StringRecord::new();
    while seen < INFER_RECORDS && read_record(spec, file, &mut reader, &mut record)? {
        if settings.header && header.is_none() {
            header = Some(record.clone());
            guesses = vec![Default::default(); record.len()];
            continue;
        }
        if guesses.is_empty() {
            guesses = vec![Default::default(); record.len()];
        }
        if record.len() != guesses.len() {
            continue;
        }
        for (g, field) in guesses.iter_mut().zip(record.iter()) {
            g.add(value(field, nulls.as_ref()).unwrap_or_default());
        }
        seen += 1;
    }
    Ok(super::columns::guessed_schema(&names(header.as_ref(), guesses.len()), &guesses))
}

fn read_records(
    spec: &Spec,
    settings: &CsvSettings,
    file: &DataFile,
    schema: &SchemaRef,
    send: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<(), ReadError> {
    let replaced = Arc::new(AtomicU64::new(0));
    let mut reader = records(spec, settings, file, &replaced)?;
    let nulls = null_regex(spec, settings, file)?;
    let width = schema.fields().len();
    let mut batcher = super::columns::TextBatcher::new(Arc::clone(schema), true);
    let mut record = ::csv::StringRecord::new();
    let mut first = true;
    let delimiter = char::from(settings.delimiter).to_string();
    while read_record(spec, file, &mut reader, &mut record)? {
        if std::mem::take(&mut first) && settings.header {
            continue;
        }
        let line = record.position().map_or(0, ::csv::Position::line);
        let at = At::line(file.shown.clone(), line);
        let raw = || record.iter().collect::<Vec<_>>().join(&delimiter);
        if record.len() != width {
            let problem = Problem::Malformed(format!("the record has {} fields, the header {width}", record.len()));
            spec.reject(spec.error(at, problem), raw)?;
            continue;
        }
        batcher.push(at, record.iter().map(|f| value(f, nulls.as_ref())), raw);
        if !super::send_full(spec, &mut batcher, send, false)? {
            return Ok(());
        }
    }
    super::send_full(spec, &mut batcher, send, true)?;
    spec.report_replaced(file, &replaced);
    Ok(())
}

/// The next record; a quote left open at the end of the file, or text that
/// is not valid, is an error naming the line.
fn read_record(
    spec: &Spec,
    file: &DataFile,
    reader: &mut ::csv::Reader<Box<dyn std::io::Read + Send + '_>>,
    record: &mut ::csv::StringRecord,
) -> Result<bool, ReadError> {
    reader.read_record(record).map_err(|e| {
        let line = e.position().map(::csv::Position::line);
        match e.into_kind() {
            ::csv::ErrorKind::Io(io) => spec.io_error(file, line, io),
            other => {
                spec.error(At { path: file.shown.clone(), sheet: None, line }, Problem::Malformed(format!("{other:?}")))
            }
        }
    })
}

/// The source's `null_strings` as one pattern, compiled.
fn null_regex(spec: &Spec, settings: &CsvSettings, file: &DataFile) -> Result<Option<regex::Regex>, ReadError> {
    settings
        .null_regex
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(|e| spec.error(At::file(file.shown.clone()), Problem::Malformed(e.to_string())))
}
