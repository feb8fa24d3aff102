//! CSV in another encoding than UTF-8 (or with `on_invalid: replace`):
//! transcoded while read, then parsed by arrow's CSV reader with the
//! source's dialect.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::csv::ReaderBuilder;
use datafusion::arrow::csv::reader::Format;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;

use super::columns::BATCH_ROWS;
use super::{At, DataFile, Problem, ReadError, Spec};
use crate::engine::CsvSettings;

/// Records read to infer the schema (as DataFusion's reader does).
const INFER_RECORDS: usize = 1000;

fn format(settings: &CsvSettings) -> Result<Format, regex::Error> {
    let mut f =
        Format::default().with_header(settings.header).with_delimiter(settings.delimiter).with_quote(settings.quote);
    if let Some(e) = settings.escape {
        f = f.with_escape(e);
    }
    if let Some(re) = &settings.null_regex {
        f = f.with_null_regex(regex::Regex::new(re)?);
    }
    Ok(f)
}

pub(super) fn infer(spec: &Spec, settings: &CsvSettings) -> Result<SchemaRef, ReadError> {
    let file = &spec.files[0];
    let format =
        format(settings).map_err(|e| spec.error(At::file(file.shown.clone()), Problem::Malformed(e.to_string())))?;
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
    let format =
        format(settings).map_err(|e| spec.error(At::file(file.shown.clone()), Problem::Malformed(e.to_string())))?;
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
