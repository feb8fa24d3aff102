//! Source files DataFusion cannot read itself: Excel workbooks, XML exports,
//! JSON arrays and nested JSON, fixed-width flat files, and CSV in another
//! encoding than UTF-8. Each file is read record by record on a blocking
//! thread and handed to DataFusion as a stream of record batches, so a source
//! is never held in memory whole (an Excel sheet is: the format has no other
//! way to be read, and holds at most 1,048,576 rows).
//!
//! Every malformed record and every value that does not convert is an error
//! naming the file and line (the sheet and row for Excel).

mod columns;
mod csv;
pub mod database;
mod excel;
mod fixed_width;
mod json;
mod quarantine;
pub mod text;
mod xml;

use std::fmt;
use std::io::{self, BufRead};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use camino::{Utf8Path, Utf8PathBuf};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::streaming::PartitionStream;
use serde_json::Value as Json;

use crate::project::nodes::ColumnSpec;
use crate::state::RunDir;
pub use text::TextOptions;

/// A source table's reader keys that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(
        "unknown `encoding: {0}`; use a label such as `utf-8`, `windows-1252`, `latin1`, `utf-16le` or `shift_jis`"
    )]
    Encoding(String),
    #[error("`{key}: {value}` is not valid; expected {expected}")]
    Invalid { key: &'static str, value: String, expected: &'static str },
    #[error("`format: {format}` needs `{key}`: {what}")]
    Missing { format: &'static str, key: &'static str, what: &'static str },
    #[error("`layout` entry {index}: {message}")]
    Layout { index: usize, message: String },
    /// Asks the caller to fetch the URL's object and read the copy
    /// (see [`Spec::downloaded`]).
    #[error("`format: {0}` reads local files; ferry fetches a URL's object first")]
    NotLocal(&'static str),
    #[error("`{0}` matches no file")]
    NoFiles(String),
    #[error("the connection is not a postgres://, mysql://, sqlite:// or mssql:// URL")]
    NotADatabaseUrl,
    #[error("a database source needs exactly one of `table:` (such as `public.customers`) and `query:`")]
    TableOrQuery,
    #[error("`partitions` needs `partition_on:`, an integer column")]
    PartitionsWithoutKey,
}

/// A record or value that cannot be read, and where.
#[derive(Debug, thiserror::Error)]
#[error("cannot read `{table}`: {problem}")]
pub struct ReadError {
    /// The source table (`legacy.customers`).
    pub table: String,
    pub at: Box<At>,
    pub problem: Box<Problem>,
}

#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("{0}")]
    Io(io::Error),
    #[error("{0}")]
    InvalidText(text::InvalidText),
    #[error("`{value}` in column `{column}` is not a valid {ty}")]
    Value { column: String, value: String, ty: String },
    #[error("{0}")]
    Malformed(String),
}

/// A place in a source file: a line, or a sheet's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    pub path: Utf8PathBuf,
    pub sheet: Option<String>,
    /// 1-based line (or row of the sheet).
    pub line: Option<u64>,
}

impl At {
    pub fn file(path: Utf8PathBuf) -> Self {
        At { path, sheet: None, line: None }
    }

    pub fn line(path: Utf8PathBuf, line: u64) -> Self {
        At { path, sheet: None, line: Some(line) }
    }

    /// `path:line`, the form editors and terminals link.
    pub fn location(&self) -> String {
        match self.line {
            Some(l) if self.sheet.is_none() => format!("{}:{l}", self.path),
            _ => self.path.to_string(),
        }
    }
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.sheet, self.line) {
            (Some(s), Some(l)) => write!(f, "{}, sheet `{s}`, row {l}", self.path),
            (Some(s), None) => write!(f, "{}, sheet `{s}`", self.path),
            (None, Some(l)) => write!(f, "{}:{l}", self.path),
            (None, None) => write!(f, "{}", self.path),
        }
    }
}

impl ReadError {
    pub fn new(table: &str, at: At, problem: Problem) -> Self {
        ReadError { table: table.to_owned(), at: Box::new(at), problem: Box::new(problem) }
    }

    /// Where the problem is, in words: `line 4`, `sheet `S`, row 7`, or the
    /// byte offset of invalid text.
    pub fn place(&self) -> Option<String> {
        if let Problem::InvalidText(_) = self.problem.as_ref() {
            return None;
        }
        match (&self.at.sheet, self.at.line) {
            (Some(s), Some(l)) => Some(format!("sheet `{s}`, row {l}")),
            (Some(s), None) => Some(format!("sheet `{s}`")),
            (None, Some(l)) => Some(format!("line {l}")),
            (None, None) => None,
        }
    }

    /// The [`ReadError`] a DataFusion error carries, if any.
    pub fn find(e: &DataFusionError) -> Option<&ReadError> {
        use datafusion::arrow::error::ArrowError;
        let mut cur: &DataFusionError = e;
        loop {
            match cur {
                DataFusionError::External(inner) => return inner.downcast_ref::<ReadError>(),
                DataFusionError::ArrowError(a, _) => {
                    return match a.as_ref() {
                        ArrowError::ExternalError(inner) => inner.downcast_ref::<ReadError>(),
                        _ => None,
                    };
                }
                DataFusionError::Context(_, inner) => cur = inner,
                DataFusionError::Shared(inner) => cur = inner,
                DataFusionError::Diagnostic(_, inner) => cur = inner,
                _ => return None,
            }
        }
    }
}

/// One file of a source: its full path and the path shown in messages.
#[derive(Debug, Clone)]
pub struct DataFile {
    pub full: Utf8PathBuf,
    pub shown: Utf8PathBuf,
}

/// How a source table's files are read, when DataFusion's own readers
/// cannot read them.
#[derive(Debug)]
pub struct Spec {
    /// The source table, for messages (`legacy.customers`).
    pub table: String,
    pub files: Vec<DataFile>,
    pub text: TextOptions,
    pub compression: FileCompressionType,
    pub format: Format,
    /// Where records that cannot be read go, under `on_error: quarantine`.
    pub quarantine: Option<Arc<quarantine::Quarantine>>,
    /// The local copy of a URL's object, kept as long as the spec reads it.
    downloaded: Option<tempfile::TempDir>,
}

/// CSV dialect.
#[derive(Debug, Clone)]
pub struct CsvSettings {
    pub delimiter: u8,
    pub quote: u8,
    pub escape: Option<u8>,
    pub header: bool,
    /// Values read as NULL (a regex over the whole field).
    pub null_regex: Option<String>,
}

impl Default for CsvSettings {
    fn default() -> Self {
        CsvSettings { delimiter: b',', quote: b'"', escape: None, header: true, null_regex: None }
    }
}

#[derive(Debug)]
pub enum Format {
    Csv(CsvSettings),
    Xml(xml::Options),
    FixedWidth(fixed_width::Layout),
    Excel(excel::Options),
    Json(json::Options),
}

impl Format {
    fn name(&self) -> &'static str {
        match self {
            Format::Csv(_) => "csv",
            Format::Xml(_) => "xml",
            Format::FixedWidth(_) => "fixed_width",
            Format::Excel(_) => "excel",
            Format::Json(_) => "json",
        }
    }
}

/// The format names this module reads.
pub const FORMAT_NAMES: [&str; 5] = ["xml", "excel", "fixed_width", "json (arrays)", "csv (other encodings)"];

/// What to read, decided from the source's keys.
pub struct Request<'a> {
    pub table: &'a str,
    pub root: &'a Utf8Path,
    pub path: &'a str,
    /// The declared or extension-given format name, lower case.
    pub format: Option<&'a str>,
    pub location: &'a serde_json::Map<String, Json>,
    pub columns: &'a [ColumnSpec],
    pub csv: &'a CsvSettings,
    pub compression: FileCompressionType,
    /// This run's id, its directory, and whether the command keeps run
    /// artifacts there.
    pub run: (&'a str, RunDir, bool),
    /// For JSON at a URL, the object's first byte that is not whitespace
    /// (see [`first_significant_byte`]), which tells an array from
    /// newline-delimited JSON; local files are read for it here.
    pub url_first_byte: Option<u8>,
    /// A masked run: records set aside keep no raw text.
    pub masked: bool,
}

impl Spec {
    /// The spec for a source DataFusion cannot read itself, or `None` when
    /// its own reader suits (CSV in UTF-8, Parquet, newline-delimited JSON).
    pub fn of(r: &Request<'_>) -> Result<Option<Spec>, SpecError> {
        let text = TextOptions::of(r.location)?;
        // The files are listed once, and only for a format ferry reads.
        let files = std::cell::OnceCell::new();
        let files_of = || files.get_or_init(|| local_files(r.root, r.path));
        let quarantine = match r.location.get("on_error").and_then(Json::as_str) {
            None | Some("fail") => false,
            Some("quarantine") => true,
            Some(other) => {
                return Err(SpecError::Invalid {
                    key: "on_error",
                    value: other.to_owned(),
                    expected: "`fail` (the default) or `quarantine`",
                });
            }
        };
        let format = match r.format.unwrap_or_default() {
            "xml" => Some(Format::Xml(xml::Options::of(r.location, r.columns)?)),
            "xlsx" | "xlsm" | "xlsb" | "xls" | "ods" | "excel" => Some(Format::Excel(excel::Options::of(r.location)?)),
            "fixed_width" | "fixed-width" | "fwf" => Some(Format::FixedWidth(fixed_width::Layout::of(r.location)?)),
            "json" | "ndjson" | "jsonl" => json::Options::of(r.location, r.columns, || {
                r.url_first_byte.or_else(|| first_byte(files_of().first()?, r.compression))
            })?
            .map(Format::Json)
            .or_else(|| (!text.is_default() || quarantine).then(|| Format::Json(json::Options::default()))),
            "csv" | "tsv" | "txt" if !text.is_default() || quarantine => Some(Format::Csv(r.csv.clone())),
            _ => None,
        };
        let Some(format) = format else {
            if quarantine {
                return Err(SpecError::Invalid {
                    key: "on_error",
                    value: "quarantine".to_owned(),
                    expected: "`fail`: a Parquet file's records are typed, so none can be set aside",
                });
            }
            return Ok(None);
        };
        let quarantine = quarantine.then(|| {
            let (run_id, dir, persist) = &r.run;
            quarantine::Quarantine::new(
                format!("source.{}", r.table),
                (*run_id).to_owned(),
                dir.clone(),
                (*persist, r.masked),
            )
        });
        if r.path.contains("://") {
            return Err(SpecError::NotLocal(format.name()));
        }
        let files = files.into_inner().unwrap_or_else(|| local_files(r.root, r.path));
        if files.is_empty() {
            return Err(SpecError::NoFiles(r.path.to_owned()));
        }
        Ok(Some(Spec {
            table: r.table.to_owned(),
            files,
            text,
            compression: r.compression,
            format,
            quarantine,
            downloaded: None,
        }))
    }

    /// The spec for a URL's object that `download` holds a copy of, named
    /// in messages by `url`.
    pub fn downloaded(
        r: &Request<'_>,
        download: tempfile::TempDir,
        file: &Utf8Path,
        url: &str,
    ) -> Result<Spec, SpecError> {
        let local = Request { path: file.as_str(), run: r.run.clone(), url_first_byte: None, ..*r };
        // The copy keeps the URL's format, which is one ferry reads, so
        // `None` (DataFusion's own reader) does not come back.
        let mut spec = Spec::of(&local)?.ok_or(SpecError::NoFiles(url.to_owned()))?;
        for f in &mut spec.files {
            f.shown = Utf8PathBuf::from(url);
        }
        spec.downloaded = Some(download);
        Ok(spec)
    }

    /// Column types the format's own keys declare (a fixed-width layout's
    /// `type`s).
    pub fn declared_columns(&self) -> Vec<ColumnSpec> {
        match &self.format {
            Format::FixedWidth(layout) => layout
                .declared()
                .map(|(name, ty)| ColumnSpec {
                    name: name.to_owned(),
                    data_type: Some(ty.to_owned()),
                    ..ColumnSpec::default()
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The column names and types, found by reading the files (blocking).
    pub fn infer(&self) -> Result<SchemaRef, ReadError> {
        match &self.format {
            Format::Csv(settings) => csv::infer(self, settings),
            Format::Xml(options) => xml::infer(self, options),
            Format::FixedWidth(layout) => fixed_width::infer(self, layout),
            Format::Excel(options) => excel::infer(self, options),
            Format::Json(options) => json::infer(self, options),
        }
    }

    /// Reads file `index` of [`Spec::files`] as batches of `schema`
    /// (blocking), then writes the records set aside so far: what one
    /// partition of [`Spec::provider`]'s table does. `send` returns false
    /// when the reader downstream has gone.
    pub fn read_file(
        &self,
        index: usize,
        schema: &SchemaRef,
        send: &mut dyn FnMut(RecordBatch) -> bool,
    ) -> Result<(), DataFusionError> {
        self.read(&self.files[index], schema, send).map_err(|e| DataFusionError::External(Box::new(e)))?;
        if let Some(q) = &self.quarantine {
            q.write()?;
        }
        Ok(())
    }

    /// Reads one file as batches of `schema` (blocking); `send` returns
    /// false when the reader downstream has gone.
    fn read(
        &self,
        file: &DataFile,
        schema: &SchemaRef,
        send: &mut dyn FnMut(RecordBatch) -> bool,
    ) -> Result<(), ReadError> {
        match &self.format {
            Format::Csv(settings) => csv::read(self, settings, file, schema, send),
            Format::Xml(options) => xml::read(self, options, file, schema, send),
            Format::FixedWidth(layout) => fixed_width::read(self, layout, file, schema, send),
            Format::Excel(options) => excel::read(self, options, file, schema, send),
            Format::Json(options) => json::read(self, options, file, schema, send),
        }
    }

    /// A table that streams the files, one partition per file.
    pub fn provider(self: Arc<Self>, schema: SchemaRef) -> Result<Arc<dyn TableProvider>, DataFusionError> {
        let partitions: Vec<Arc<dyn PartitionStream>> = (0..self.files.len())
            .map(|file| {
                Arc::new(FilePartition { spec: Arc::clone(&self), file, schema: Arc::clone(&schema) })
                    as Arc<dyn PartitionStream>
            })
            .collect();
        Ok(Arc::new(StreamingTable::try_new(schema, partitions)?))
    }

    /// Opens a file as UTF-8 text, decompressed and decoded. `replaced`
    /// counts invalid bytes replaced under `on_invalid: replace`.
    fn open_text(&self, file: &DataFile, replaced: &Arc<AtomicU64>) -> Result<Box<dyn BufRead + Send>, ReadError> {
        let raw =
            fs_err::File::open(&file.full).map_err(|e| self.error(At::file(file.shown.clone()), Problem::Io(e)))?;
        let raw = self
            .compression
            .convert_read(raw)
            .map_err(|e| self.error(At::file(file.shown.clone()), Problem::Malformed(e.to_string())))?;
        Ok(self.text.open(raw, Arc::clone(replaced)))
    }

    /// A record that cannot be read: set aside under `on_error:
    /// quarantine` (with `raw`, its text), or the error.
    fn reject(&self, e: ReadError, raw: impl FnOnce() -> String) -> Result<(), ReadError> {
        reject(self.quarantine.as_deref(), e, raw)
    }

    fn error(&self, at: At, problem: Problem) -> ReadError {
        ReadError::new(&self.table, at, problem)
    }

    /// An IO error while reading `file` near `line`: invalid text names its
    /// own line and offset.
    fn io_error(&self, file: &DataFile, line: Option<u64>, e: io::Error) -> ReadError {
        match text::invalid_text(&e) {
            Some(invalid) => {
                self.error(At::line(file.shown.clone(), invalid.line), Problem::InvalidText(invalid.clone()))
            }
            None => self.error(At { path: file.shown.clone(), sheet: None, line }, Problem::Io(e)),
        }
    }

    /// Says how many invalid bytes were replaced in a file, if any.
    fn report_replaced(&self, file: &DataFile, replaced: &AtomicU64) {
        let n = replaced.load(Ordering::Relaxed);
        if n > 0 {
            tracing::warn!(
                "`{}`: replaced {n} invalid byte sequence(s) in `{}` with U+FFFD (`on_invalid: replace`)",
                self.table,
                file.shown
            );
        }
    }
}

/// A record that cannot be read: set aside in `quarantine` (with `raw`,
/// its text) when there is one, or the error.
fn reject(
    quarantine: Option<&quarantine::Quarantine>,
    e: ReadError,
    raw: impl FnOnce() -> String,
) -> Result<(), ReadError> {
    let Some(q) = quarantine else { return Err(e) };
    let (rule, column, value) = match e.problem.as_ref() {
        Problem::Value { column, value, .. } => ("invalid_value", Some(column.clone()), Some(value.clone())),
        _ => ("malformed_record", None, None),
    };
    q.add(quarantine::Entry { at: *e.at, rule, column, value, message: e.problem.to_string(), raw: raw() });
    Ok(())
}

/// The first invalid UTF-8 in `files` (read through `compression`), as
/// the error naming its file, line and byte offset. For when DataFusion's own
/// CSV or JSON reader says only that there is one.
pub fn find_invalid_utf8(
    table: &str,
    root: &Utf8Path,
    files: &[Utf8PathBuf],
    compression: FileCompressionType,
) -> Option<ReadError> {
    use std::io::Read;
    for full in files {
        let shown = full.strip_prefix(root).map_or_else(|_| full.clone(), Utf8Path::to_owned);
        let raw = compression.convert_read(fs_err::File::open(full).ok()?).ok()?;
        let mut text = TextOptions::default().open(raw, Arc::default());
        let mut buf = vec![0; 64 * 1024];
        loop {
            match text.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    let invalid = text::invalid_text(&e)?.clone();
                    return Some(ReadError::new(table, At::line(shown, invalid.line), Problem::InvalidText(invalid)));
                }
            }
        }
    }
    None
}

/// The first byte that is not white space in the first file (for telling a
/// JSON array from newline-delimited JSON).
fn first_byte(file: &DataFile, compression: FileCompressionType) -> Option<u8> {
    first_significant_byte(fs_err::File::open(&file.full).ok()?, compression)
}

/// The first byte of `compression`-compressed text `reader` that is neither
/// whitespace nor part of a byte-order mark; `None` if the text ends (or
/// can no longer be read, as a cut-off head of a compressed file) first.
pub fn first_significant_byte(reader: impl io::Read + Send + 'static, compression: FileCompressionType) -> Option<u8> {
    use std::io::Read;
    let reader = compression.convert_read(reader).ok()?;
    let bytes = io::BufReader::new(reader).bytes();
    bytes.map_while(Result::ok).find(|b| !b.is_ascii_whitespace() && *b != 0xEF && *b != 0xBB && *b != 0xBF)
}

/// The files a local path names: the file itself, or a directory's files in
/// name order (hidden files skipped).
fn local_files(root: &Utf8Path, path: &str) -> Vec<DataFile> {
    let full = if Utf8Path::new(path).is_absolute() { Utf8PathBuf::from(path) } else { root.join(path) };
    let shown = |p: &Utf8Path| p.strip_prefix(root).map_or_else(|_| p.to_owned(), Utf8Path::to_owned);
    if full.is_file() {
        return vec![DataFile { shown: shown(&full), full }];
    }
    let mut files: Vec<Utf8PathBuf> = walkdir::WalkDir::new(&full)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| Utf8PathBuf::from_path_buf(e.into_path()).ok())
        .collect();
    files.sort();
    files.into_iter().map(|f| DataFile { shown: shown(&f), full: f }).collect()
}

/// One file of a source as a DataFusion partition.
#[derive(Debug)]
struct FilePartition {
    spec: Arc<Spec>,
    file: usize,
    schema: SchemaRef,
}

impl PartitionStream for FilePartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStream::builder(Arc::clone(&self.schema), 2);
        let tx = builder.tx();
        let (spec, file, schema) = (Arc::clone(&self.spec), self.file, Arc::clone(&self.schema));
        builder.spawn_blocking(move || {
            let mut send = |batch: RecordBatch| tx.blocking_send(Ok(batch)).is_ok();
            spec.read_file(file, &schema, &mut send)
        });
        builder.build()
    }
}

/// Hands `batcher`'s records to `send` once it holds a batch's worth (or
/// always, with `force`). Returns false when the reader has gone.
fn send_full(
    spec: &Spec,
    batcher: &mut columns::TextBatcher,
    send: &mut dyn FnMut(RecordBatch) -> bool,
    force: bool,
) -> Result<bool, ReadError> {
    if !force && batcher.buffered() < columns::BATCH_ROWS {
        return Ok(true);
    }
    match batcher.flush(&spec.table, spec.quarantine.as_deref())? {
        Some(batch) => Ok(send(batch)),
        None => Ok(true),
    }
}

/// A schema column's position among `names`, by name.
fn index_of(schema: &SchemaRef, name: &str) -> Option<usize> {
    schema.fields().iter().position(|f| f.name() == name)
}
