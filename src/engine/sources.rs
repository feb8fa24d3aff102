//! Registers seeds and file sources as DataFusion tables, learning their
//! schemas from the files and the declared `data_type`s (declared types win).

use std::io;
use std::sync::Arc;

use camino::{Utf8Path, Utf8PathBuf};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::TableReference;
use datafusion::error::DataFusionError;
use serde_json::Value as Json;

use super::Registered;
use super::session::{Engine, FileFormat, FileSource};
use crate::diagnostic::{Code, Diagnostic, Label};
use crate::manifest::{Manifest, Node, NodeId, Resource};
use crate::project::nodes::SourceTable;
use crate::source;
use crate::source::CsvSettings;
use crate::template::functions::quote_ident;
use datafusion::arrow::datatypes::DataType;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;

/// Registers source table `s` as a DataFusion table (a database table, a
/// file or files in any format ferry reads, or, with no path, its declared
/// columns alone), with its schema: the declared `data_type`s over what
/// the files hold.
pub async fn register_source(engine: &Engine, manifest: &Manifest, s: &SourceTable) -> Registered {
    let table = TableReference::partial(s.source.as_str(), s.name.as_str());
    let here = Label::new(&s.origin.file, s.origin.span.clone());
    let name = format!("{}.{}", s.source, s.name);
    if s.location.contains_key("connection") {
        return register_database(engine, manifest, s, table, &name, here).await;
    }
    let declared = declared_schema(engine, &s.columns, &s.origin.file.path).await?;
    let Some(path) = s.location.get("path").and_then(Json::as_str) else {
        if let Some(seed) = manifest.seed_read_by(s) {
            let sql = format!("select * from {}", quote_ident(&manifest[seed].name));
            let plan = engine.plan(&sql).await.map_err(|e| vec![source_error(&name, &e, here.clone())])?;
            let schema = Arc::clone(plan.schema().inner());
            engine.register_view(table, plan).map_err(|e| vec![source_error(&name, &e, here.clone())])?;
            return Ok(Some(schema));
        }
        match register_in_warehouse(engine, manifest, s, (table.clone(), &name, &here)).await {
            Some(Ok(schema)) => return Ok(schema),
            Some(Err(d)) if s.columns.is_empty() => return Err(d),
            // Declared columns plan the models without the warehouse's table.
            _ => {}
        }
        if let Some(schema) = declared.filter(|_| !s.columns.is_empty()) {
            engine
                .register_schema_only(table, Arc::clone(&schema))
                .map_err(|e| vec![source_error(&name, &e, here.clone())])?;
            return Ok(Some(schema));
        }
        return Err(vec![
            Diagnostic::error(Code::SourceSchema, format!("ferry cannot tell the columns of source `{name}`"))
                .with_label(here)
                .with_help("give the table a `path:` (and `format:`) to read, or `columns:` with a `data_type` each"),
        ]);
    };
    let source = FileSourceTable { engine, manifest, s, name: &name, here: &here, path };
    let (csv, compression) = dialect(path, &s.location).map_err(|msg| source.error(&msg))?;
    let (raw, inferred) = match source.spec(&csv, compression).await? {
        Some(spec) => source.infer(spec).await?,
        None => source.infer_file().await?,
    };
    if inferred.fields().is_empty() {
        return Err(vec![
            Diagnostic::error(Code::SourceSchema, format!("source `{name}` is empty: `{path}` has no columns"))
                .with_label(here),
        ]);
    }
    let schema = overlay(&inferred, declared.as_ref());
    source.register(raw, (table, &schema), csv.null_regex.as_deref()).await?;
    Ok(Some(schema))
}

/// A source table read from files.
struct FileSourceTable<'a> {
    engine: &'a Engine,
    manifest: &'a Manifest,
    s: &'a SourceTable,
    /// `source.table`, for messages.
    name: &'a str,
    here: &'a Label,
    path: &'a str,
}

impl FileSourceTable<'_> {
    fn error(&self, message: &dyn std::fmt::Display) -> Vec<Diagnostic> {
        vec![
            Diagnostic::error(Code::SourceSchema, format!("source `{}`: {message}", self.name))
                .with_label(self.here.clone()),
        ]
    }

    fn failed(&self, e: &DataFusionError) -> Vec<Diagnostic> {
        vec![source_error(self.name, e, self.here.clone())]
    }

    /// Whether the path names one object (no glob, not a directory).
    fn one_object(&self) -> bool {
        !self.path.contains(['*', '?', '[']) && !self.path.ends_with('/')
    }

    /// How ferry reads the files itself, or `None` when DataFusion's own
    /// reader suits. A format ferry reads itself, at a URL, is read from a
    /// local copy.
    async fn spec(
        &self,
        csv: &CsvSettings,
        compression: FileCompressionType,
    ) -> Result<Option<source::Spec>, Vec<Diagnostic>> {
        let (engine, manifest, s, path) = (self.engine, self.manifest, self.s, self.path);
        let format_name = format_name_of(path, &s.location);
        // DataFusion reads newline-delimited JSON from a URL itself; an array
        // is for ferry to read, and only the object's first bytes tell which.
        let json = matches!(format_name.as_deref(), Some("json" | "ndjson" | "jsonl"));
        let url_first_byte = if json && path.contains("://") && self.one_object() {
            first_byte_at(engine, path, compression).await.map_err(|e| self.failed(&e))?
        } else {
            None
        };
        let request = source::Request {
            table: self.name,
            root: &manifest.root,
            path,
            format: format_name.as_deref(),
            location: &s.location,
            columns: &s.columns,
            csv,
            compression,
            run: (
                manifest.globals.invocation_id.as_str(),
                manifest.layout().run(&manifest.globals.invocation_id),
                matches!(manifest.globals.which.as_str(), "run" | "build"),
            ),
            url_first_byte,
            masked: engine.masked(),
        };
        match source::Spec::of(&request) {
            Err(source::SpecError::NotLocal(format)) if !self.one_object() => Err(vec![
                Diagnostic::error(
                    Code::SourceSchema,
                    format!(
                        "source `{}`: `format: {format}` reads one object from a URL, and `{path}` names several",
                        self.name
                    ),
                )
                .with_label(self.here.clone())
                .with_help("declare a source table per object, or copy the objects to a local directory"),
            ]),
            Err(source::SpecError::NotLocal(_)) => {
                let (dir, file) = download(engine, path).await.map_err(|e| self.failed(&e))?;
                Ok(Some(source::Spec::downloaded(&request, dir, &file, path).map_err(|e| self.error(&e))?))
            }
            spec => spec.map_err(|e| self.error(&e)),
        }
    }

    /// The schema of files ferry reads itself, read on a blocking thread;
    /// a fixed-width layout's `type`s apply, which the columns' own
    /// `data_type`s override.
    async fn infer(&self, spec: source::Spec) -> Result<(Raw, SchemaRef), Vec<Diagnostic>> {
        let spec = Arc::new(spec);
        let reading = Arc::clone(&spec);
        let inferred = tokio::task::spawn_blocking(move || reading.infer())
            .await
            .map_err(|e| self.error(&e))?
            .map_err(|e| vec![read_error_diagnostic(&e)])?;
        let layout = declared_schema(self.engine, &spec.declared_columns(), &self.s.origin.file.path).await?;
        Ok((Raw::Read(spec), overlay(&inferred, layout.as_ref())))
    }

    /// The schema of files DataFusion reads.
    async fn infer_file(&self) -> Result<(Raw, SchemaRef), Vec<Diagnostic>> {
        let root = &self.manifest.root;
        let file = file_source(root, self.path, &self.s.location).map_err(|msg| self.error(&msg))?;
        check_exists(&file, self.name, self.here)?;
        let inferred = self.engine.infer_schema(&file).await.map_err(|e| {
            vec![
                invalid_text(self.name, root, &file, &e)
                    .or_else(|| malformed(self.name, root, &file))
                    .unwrap_or_else(|| source_error(self.name, &e, self.here.clone())),
            ]
        })?;
        if let Some(d) = duplicate_header(self.name, root, &file) {
            return Err(vec![d]);
        }
        Ok((Raw::File(file), inferred))
    }

    /// Registers the files as `table` with `schema`. Dates and timestamps
    /// in a declared format are read as text and parsed in a view over the
    /// raw table; NULL spellings in text columns, which the CSV reader
    /// leaves alone, become NULL there too.
    async fn register(
        &self,
        raw: Raw,
        (table, schema): (TableReference, &SchemaRef),
        null_regex: Option<&str>,
    ) -> Result<(), Vec<Diagnostic>> {
        let (engine, s) = (self.engine, self.s);
        let formats = TextFormats::of(&s.location);
        if formats.is_none() && null_regex.is_none() {
            return raw.register(engine, table, schema).await.map_err(|e| self.failed(&e));
        }
        let raw_schema = formats.raw_schema(schema);
        let raw_table = TableReference::partial(s.source.as_str(), raw_name(&s.name));
        raw.register(engine, raw_table.clone(), &raw_schema).await.map_err(|e| self.failed(&e))?;
        let sql = formats.view_sql(schema, &raw_table, null_regex);
        let plan = engine.plan(&sql).await.map_err(|e| self.failed(&e))?;
        engine.register_view(table, plan).map_err(|e| self.failed(&e))
    }
}

/// The first byte of the object at `url` that is not whitespace (see
/// `source::first_significant_byte`), from as little of its head as holds
/// one: the rest of the object is not fetched.
async fn first_byte_at(
    engine: &Engine,
    url: &str,
    compression: FileCompressionType,
) -> Result<Option<u8>, DataFusionError> {
    use futures::StreamExt;
    use object_store::ObjectStoreExt;
    /// Past this much leading whitespace the object is not an array.
    const HEAD: usize = 64 * 1024;
    let (store, location) = engine.object_store(url)?;
    // A plain GET, not a range: not every HTTP server serves ranges.
    let mut chunks = store.get(&location).await?.into_stream();
    let mut head = Vec::new();
    while let Some(chunk) = chunks.next().await {
        head.extend_from_slice(&chunk?);
        let found = source::first_significant_byte(io::Cursor::new(head.clone()), compression);
        if found.is_some() || head.len() >= HEAD {
            return Ok(found);
        }
    }
    Ok(None)
}

/// Copies the object at `url` (`s3://`, `gs://`, `az://`, `http(s)://`)
/// into a temporary directory, for the formats ferry reads itself from
/// local files (Excel needs to seek; the others read it as they would a
/// local file). Returns the directory, which removes itself when dropped,
/// and the copy.
async fn download(engine: &Engine, url: &str) -> Result<(tempfile::TempDir, Utf8PathBuf), DataFusionError> {
    use futures::StreamExt;
    use object_store::ObjectStoreExt;
    use tokio::io::AsyncWriteExt;
    let (store, location) = engine.object_store(url)?;
    let name = location.filename().unwrap_or("object").to_owned();
    let dir = tempfile::Builder::new().prefix("ferry-source-").tempdir()?;
    let file = Utf8PathBuf::from_path_buf(dir.path().join(&name))
        .map_err(|p| DataFusionError::Plan(format!("`{}` is not UTF-8", p.display())))?;
    let mut out = tokio::fs::File::create(&file).await?;
    let mut chunks = store.get(&location).await?.into_stream();
    while let Some(chunk) = chunks.next().await {
        out.write_all(&chunk?).await?;
    }
    out.flush().await?;
    Ok((dir, file))
}

/// A source's failure, as one diagnostic at its declaration.
fn source_failure(name: &str, here: &Label, message: String, help: Option<&str>) -> Vec<Diagnostic> {
    let d = Diagnostic::error(Code::SourceSchema, format!("source `{name}`: {message}")).with_label(here.clone());
    vec![match help {
        Some(h) => d.with_help(h),
        None => d,
    }]
}

/// A source read from a live database through connectorx. Column types
/// come from the database.
async fn register_database(
    engine: &Engine,
    manifest: &Manifest,
    s: &SourceTable,
    table: TableReference,
    name: &str,
    here: Label,
) -> Registered {
    let fail = |message: String, help: Option<&str>| source_failure(name, &here, message, help);
    let connection = s.location.get("connection").and_then(Json::as_str).unwrap_or_default();
    let url = if let Some(var) = connection.strip_prefix("env:") {
        std::env::var(var).map_err(|_| {
            fail(format!("`connection: {connection}` names the environment variable `{var}`, which is not set"), None)
        })?
    } else if connection.contains("://") {
        connection.to_owned()
    } else {
        match manifest.connections.get(connection) {
            Some(Ok(url)) => url.clone(),
            Some(Err(why)) => {
                return Err(fail(
                    format!("`connection: {connection}`: {why}"),
                    Some(
                        "name a target of this project's profile in profiles.yml, or use `connection: env:VAR` with a URL in VAR",
                    ),
                ));
            }
            None => {
                return Err(fail(
                    format!("`connection: {connection}` is not a target of this project's profile"),
                    None,
                ));
            }
        }
    };
    register_table_at(engine, s, (table, name, &here), url, &s.location).await
}

/// Registers source `s` (neither `path` nor `connection`) as the table
/// `schema.identifier` of the target database, as dbt reads its sources
/// (on SQLite, one schema per file, the `identifier` alone). `None` when
/// the target is not known (`ferry ls`, tests of the manifest).
async fn register_in_warehouse(
    engine: &Engine,
    manifest: &Manifest,
    s: &SourceTable,
    (table, name, here): (TableReference, &str, &Label),
) -> Option<Registered> {
    let warehouse = match manifest.warehouse.as_ref()? {
        Ok(w) => w,
        Err(why) => {
            let message =
                format!("source `{name}` has no `path:`, so it is read from the target, which cannot be read: {why}");
            return Some(Err(vec![Diagnostic::error(Code::SourceSchema, message).with_label(here.clone())]));
        }
    };
    let sqlite_file = warehouse.url.strip_prefix("sqlite://");
    let qualified = match sqlite_file {
        Some(_) => s.identifier.clone(),
        None => format!("{}.{}", s.schema, s.identifier),
    };
    // Connecting would create an SQLite file that is not there yet.
    if let Some(file) = sqlite_file.filter(|f| !std::path::Path::new(f).exists()) {
        let message = format!(
            "source `{name}` has no `path:`, so it is read from the target `{}`, whose database `{file}` does not exist yet",
            warehouse.name
        );
        let help = "load the table first (`ferry seed`), or give the source a `path:` to read";
        return Some(Err(vec![
            Diagnostic::error(Code::SourceSchema, message).with_label(here.clone()).with_help(help),
        ]));
    }
    let location: serde_json::Map<String, Json> =
        [("table".to_owned(), Json::from(qualified.clone()))].into_iter().collect();
    let result = register_table_at(engine, s, (table, name, here), warehouse.url.clone(), &location).await;
    let note = format!(
        "a source with no `path:` or `connection:` is read from the target `{}`, as table `{qualified}`",
        warehouse.name
    );
    let help = "load the table first (`ferry seed`, or an ingestion tool), give the source's `schema:` and the table's `identifier:`, or a `path:` to read";
    Some(result.map_err(|diags| diags.into_iter().map(|d| d.with_note(note.clone()).with_help(help)).collect()))
}

/// Registers source `s` as the database table or query `location` names
/// at `url`, with the declared `data_type`s over the database's types.
async fn register_table_at(
    engine: &Engine,
    s: &SourceTable,
    (table, name, here): (TableReference, &str, &Label),
    url: String,
    location: &serde_json::Map<String, Json>,
) -> Registered {
    let fail = |message: String, help: Option<&str>| source_failure(name, here, message, help);
    let spec = source::database::DatabaseSpec::of(name, url, location).map_err(|e| fail(e.to_string(), None))?;
    let spec = Arc::new(spec);
    let reading = Arc::clone(&spec);
    let schema = tokio::task::spawn_blocking(move || reading.schema())
        .await
        .map_err(|e| fail(e.to_string(), None))?
        .map_err(|e| {
            let help = "select it cast to text in a `query:` (`SELECT id, col::text AS col FROM t`)";
            fail(e.message, if e.column.is_some() { Some(help) } else { None })
        })?;
    // Declared `data_type`s win, as for files: the scan casts to them.
    let declared = declared_schema(engine, &s.columns, &s.origin.file.path).await?;
    let typed = overlay(&schema, declared.as_ref());
    let provider = Arc::new(source::database::DatabaseTable::new(spec, schema, Arc::clone(&typed)));
    engine.register(table, provider).map_err(|e| vec![source_error(name, &e, here.clone())])?;
    Ok(Some(typed))
}

/// What a source table's rows come from: a file DataFusion reads, or
/// ferry's own reader.
enum Raw {
    File(FileSource),
    Read(Arc<source::Spec>),
}

impl Raw {
    async fn register(
        &self,
        engine: &Engine,
        table: TableReference,
        schema: &SchemaRef,
    ) -> Result<(), DataFusionError> {
        match self {
            Raw::File(file) => engine.register_file(table, file, schema).await,
            Raw::Read(spec) => engine.register(table, Arc::clone(spec).provider(Arc::clone(schema))?),
        }
    }
}

/// When DataFusion's reader failed on invalid UTF-8, the diagnostic naming
/// where it is.
fn invalid_text(name: &str, root: &Utf8Path, file: &FileSource, e: &DataFusionError) -> Option<Diagnostic> {
    if !is_invalid_utf8(e) {
        return None;
    }
    source::find_invalid_utf8(name, root, &file.local_files(), file.compression).map(|e| read_error_diagnostic(&e))
}

/// The first structurally broken record of a local CSV or JSON source
/// (a ragged row, bytes that are not JSON), at its file and line.
pub fn malformed(name: &str, root: &Utf8Path, file: &FileSource) -> Option<Diagnostic> {
    file.local_files().iter().find_map(|path| {
        let (line, problem) = file.first_malformed(path)?;
        let shown = path.strip_prefix(root).unwrap_or(path);
        Some(
            Diagnostic::error(Code::SourceRow, format!("cannot read `{name}`: {problem} (line {line})"))
                .in_file(Utf8PathBuf::from(format!("{shown}:{line}"))),
        )
    })
}

/// A CSV header naming a column twice, at its file and line.
fn duplicate_header(name: &str, root: &Utf8Path, file: &FileSource) -> Option<Diagnostic> {
    file.local_files().iter().find_map(|path| {
        let (line, column, first, second) = file.duplicate_header(path)?;
        let shown = path.strip_prefix(root).unwrap_or(path);
        Some(
            Diagnostic::error(
                Code::SourceSchema,
                format!("cannot read `{name}`: the header names `{column}` twice (columns {first} and {second})"),
            )
            .in_file(Utf8PathBuf::from(format!("{shown}:{line}")))
            .with_help(
                "rename one of them in the file, or read it with `header: false` and name the columns in the model",
            ),
        )
    })
}

/// A read error as a diagnostic naming file and line (or sheet and row).
pub fn read_error_diagnostic(e: &source::ReadError) -> Diagnostic {
    let place = e.place().map(|p| format!(" ({p})")).unwrap_or_default();
    let d = Diagnostic::error(Code::SourceRow, format!("{e}{place}")).in_file(Utf8PathBuf::from(e.at.location()));
    match e.problem.as_ref() {
        source::Problem::Value { column, .. } => d.with_help(format!(
            "fix the value, or declare `{column}` with `data_type: varchar` and convert it in the model (`try_cast`)"
        )),
        source::Problem::InvalidText(_) => d.with_help(
            "declare the file's `encoding:` (such as `windows-1252` or `utf-16`), or set `on_invalid: replace` to replace bad bytes",
        ),
        _ => d,
    }
}

/// `schema` with the fields `text` picks read as text: the schema of a
/// raw table under a view that parses those columns itself.
fn read_as_text(schema: &SchemaRef, text: impl Fn(&Field) -> bool) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| if text(f) { Field::new(f.name(), DataType::Utf8, true) } else { f.as_ref().clone() })
        .collect();
    Arc::new(Schema::new(fields))
}

/// The name of the raw table under the view of source or seed `name`.
fn raw_name(name: &str) -> String {
    format!("__ferry_raw_{name}")
}

/// `date_format` / `timestamp_format` of a source table (chrono patterns).
struct TextFormats {
    date: Option<String>,
    timestamp: Option<String>,
}

impl TextFormats {
    fn of(location: &serde_json::Map<String, Json>) -> Self {
        let get = |k: &str| location.get(k).and_then(Json::as_str).map(str::to_owned);
        TextFormats { date: get("date_format"), timestamp: get("timestamp_format") }
    }

    fn is_none(&self) -> bool {
        self.date.is_none() && self.timestamp.is_none()
    }

    fn format_for(&self, ty: &DataType) -> Option<(&'static str, &str)> {
        match ty {
            DataType::Date32 | DataType::Date64 => self.date.as_deref().map(|f| ("to_date", f)),
            DataType::Timestamp(..) => self.timestamp.as_deref().map(|f| ("to_timestamp", f)),
            _ => None,
        }
    }

    fn raw_schema(&self, schema: &SchemaRef) -> SchemaRef {
        read_as_text(schema, |f| self.format_for(f.data_type()).is_some())
    }

    /// `null_regex` is applied here too: the reader leaves text columns alone.
    fn view_sql(&self, schema: &SchemaRef, raw: &TableReference, null_regex: Option<&str>) -> String {
        let columns: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| {
                let col = quote_ident(f.name());
                match self.format_for(f.data_type()) {
                    Some((func, fmt)) => {
                        let parsed = format!(
                            "CAST({func}({col}, '{}') AS {})",
                            fmt.replace('\'', "''"),
                            sql_type_of(f.data_type())
                        );
                        match null_regex {
                            Some(re) => format!(
                                "CASE WHEN regexp_like({col}, '{}') THEN NULL ELSE {parsed} END AS {col}",
                                re.replace('\'', "''")
                            ),
                            None => format!("{parsed} AS {col}"),
                        }
                    }
                    None if matches!(f.data_type(), DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8) => {
                        match null_regex {
                            Some(re) => format!(
                                "CASE WHEN regexp_like({col}, '{}') THEN NULL ELSE {col} END AS {col}",
                                re.replace('\'', "''")
                            ),
                            None => col,
                        }
                    }
                    None => col,
                }
            })
            .collect();
        let (Some(schema_name), table) = (raw.schema(), raw.table()) else { return String::new() };
        format!("SELECT {} FROM {}.{}", columns.join(", "), quote_ident(schema_name), quote_ident(table))
    }
}

/// SQL spelling of the date and timestamp types a format parses into.
fn sql_type_of(ty: &DataType) -> &'static str {
    use datafusion::arrow::datatypes::TimeUnit;
    match ty {
        DataType::Date32 | DataType::Date64 => "DATE",
        DataType::Timestamp(TimeUnit::Second, _) => "TIMESTAMP(0)",
        DataType::Timestamp(TimeUnit::Millisecond, _) => "TIMESTAMP(3)",
        DataType::Timestamp(TimeUnit::Microsecond, _) => "TIMESTAMP(6)",
        _ => "TIMESTAMP",
    }
}

/// The format a source declares, or else its file extension's, lower case.
fn format_name_of(path: &str, location: &serde_json::Map<String, Json>) -> Option<String> {
    location
        .get("format")
        .and_then(Json::as_str)
        .map(str::to_owned)
        .or_else(|| extension_of(path))
        .map(|f| f.to_ascii_lowercase())
}

/// Reads a source table's location keys into what the reader needs.
fn file_source(root: &Utf8Path, path: &str, location: &serde_json::Map<String, Json>) -> Result<FileSource, String> {
    let format_name = format_name_of(path, location);
    let format = format_name.as_deref().and_then(FileFormat::from_name).ok_or_else(|| {
        format!(
            "has no readable `format`; set `format:` to one of {}, or {}",
            FileFormat::NAMES.map(|n| format!("`{n}`")).join(", "),
            source::FORMAT_NAMES.map(|n| format!("`{n}`")).join(", ")
        )
    })?;
    let full = resolve_path(root, path);
    let mut file = FileSource::local(&full, format);
    (file.csv, file.compression) = dialect(path, location)?;
    if full.is_dir() || !file.extension.contains('.') {
        let suffix = compression_suffix_of(file.compression);
        file.extension = format!("{}{suffix}", file.extension);
    }
    Ok(file)
}

/// The CSV dialect and compression keys of a source table.
fn dialect(path: &str, location: &serde_json::Map<String, Json>) -> Result<(CsvSettings, FileCompressionType), String> {
    let text = |k: &str| location.get(k).and_then(Json::as_str);
    let compression = match text("compression") {
        Some(c) => c.to_ascii_lowercase(),
        None => compression_suffix(path).unwrap_or("none").to_owned(),
    };
    let compression = match compression.as_str() {
        "none" | "uncompressed" => FileCompressionType::UNCOMPRESSED,
        "gz" | "gzip" => FileCompressionType::GZIP,
        "bz2" | "bzip2" => FileCompressionType::BZIP2,
        "xz" => FileCompressionType::XZ,
        "zst" | "zstd" => FileCompressionType::ZSTD,
        other => return Err(format!("unknown `compression: {other}`; use gzip, bzip2, xz or zstd")),
    };
    let byte = |k: &str| -> Result<Option<u8>, String> {
        match text(k) {
            None => Ok(None),
            Some("\\t" | "tab") => Ok(Some(b'\t')),
            Some(v) if v.len() == 1 && v.is_ascii() => Ok(Some(v.as_bytes()[0])),
            Some(v) => Err(format!("`{k}: {v}` must be one ASCII character (or `tab`)")),
        }
    };
    let mut csv = CsvSettings::default();
    if let Some(d) = byte("delimiter")? {
        csv.delimiter = d;
    }
    if let Some(q) = byte("quote")? {
        csv.quote = q;
    }
    csv.escape = byte("escape")?;
    match location.get("header") {
        None => {}
        Some(Json::Bool(b)) => csv.header = *b,
        Some(other) => return Err(format!("`header: {other}` must be true or false")),
    }
    let nulls: Vec<&str> = match location.get("null_strings").or_else(|| location.get("null_string")) {
        None => Vec::new(),
        Some(Json::String(s)) => vec![s.as_str()],
        Some(Json::Array(items)) => items.iter().filter_map(Json::as_str).collect(),
        Some(other) => return Err(format!("`null_strings: {other}` must be a string or a list of strings")),
    };
    if !nulls.is_empty() {
        // The empty field stays NULL, as it is without the option.
        let alternatives: Vec<String> =
            std::iter::once(String::new()).chain(nulls.iter().map(|n| regex::escape(n))).collect();
        csv.null_regex = Some(format!("^(?:{})$", alternatives.join("|")));
    }
    Ok((csv, compression))
}

fn compression_suffix(path: &str) -> Option<&'static str> {
    let name = path.rsplit('/').next()?;
    ["gz", "bz2", "xz", "zst"].into_iter().find(|ext| name.ends_with(&format!(".{ext}")))
}

fn compression_suffix_of(c: FileCompressionType) -> &'static str {
    match c {
        FileCompressionType::GZIP => ".gz",
        FileCompressionType::BZIP2 => ".bz2",
        FileCompressionType::XZ => ".xz",
        FileCompressionType::ZSTD => ".zst",
        _ => "",
    }
}

/// A local path that matches nothing is named before DataFusion's own,
/// vaguer error.
fn check_exists(file: &FileSource, name: &str, here: &Label) -> Result<(), Vec<Diagnostic>> {
    if file.path.contains("://") || file.path.contains(['*', '?', '[']) {
        return Ok(());
    }
    let path = Utf8Path::new(&file.path);
    let problem = match fs_err::metadata(path) {
        Err(_) => format!("`{path}` does not exist"),
        Ok(m) if m.is_file() && m.len() == 0 => format!("`{path}` is empty"),
        Ok(_) => return Ok(()),
    };
    Err(vec![
        Diagnostic::error(Code::SourceSchema, format!("cannot read source `{name}`: {problem}"))
            .with_label(here.clone()),
    ])
}

pub async fn register_seed(engine: &Engine, manifest: &Manifest, node: &Node) -> Registered {
    let Resource::Seed(seed) = &node.resource else { return Ok(None) };
    let full = manifest.root.join(&seed.path);
    let err = |e: &DataFusionError| {
        vec![
            Diagnostic::error(Code::SourceSchema, format!("cannot read seed `{}`: {}", seed.name, first_line(e)))
                .in_file(&seed.path),
        ]
    };
    let file = FileSource::local(&full, FileFormat::Csv);
    let inferred = engine.infer_schema(&file).await.map_err(|e| err(&e))?;
    let mut types = Vec::new();
    for (col, ty) in &node.config.column_types {
        let dt = engine.sql_type(ty).await.map_err(|_| {
            vec![
                Diagnostic::error(
                    Code::DataType,
                    format!("seed `{}`: unknown type `{ty}` for column `{col}`", seed.name),
                )
                .in_file(&seed.path),
            ]
        })?;
        if inferred.field_with_name(col).is_err() {
            return Err(vec![
                Diagnostic::error(
                    Code::UnknownColumn,
                    format!("`column_types` names `{col}`, which seed `{}` does not have", seed.name),
                )
                .in_file(&seed.path)
                .with_help(
                    crate::diagnostic::did_you_mean(col, inferred.fields().iter().map(|f| f.name().as_str()))
                        .unwrap_or_else(|| "check the CSV header".to_owned()),
                ),
            ]);
        }
        types.push((col.clone(), dt));
    }
    let declared = Arc::new(Schema::new(types.into_iter().map(|(n, t)| Field::new(n, t, true)).collect::<Vec<_>>()));
    let schema = overlay(&inferred, Some(&declared));
    let table = TableReference::bare(node.name.as_str());
    let lenient = LenientTimestamps::of(&declared);
    // `quote_columns: false`: the header's names as PostgreSQL folds them
    // unquoted (dbt's default quotes them, keeping their case).
    let fold = node.raw_config.get("quote_columns").and_then(Json::as_bool) == Some(false)
        && schema.fields().iter().any(|f| f.name().chars().any(char::is_uppercase));
    if lenient.columns.is_empty() && !fold {
        engine.register_file(table, &file, &schema).await.map_err(|e| err(&e))?;
        return Ok(Some(schema));
    }
    if fold {
        let mut seen = std::collections::HashMap::new();
        for f in schema.fields() {
            if let Some(first) = seen.insert(f.name().to_lowercase(), f.name()) {
                return Err(vec![
                    Diagnostic::error(
                        Code::DuplicateName,
                        format!(
                            "seed `{}` has columns `{first}` and `{}`, one column once `quote_columns: false` folds their case",
                            seed.name,
                            f.name()
                        ),
                    )
                    .in_file(&seed.path)
                    .with_help("rename one in the CSV header, or leave `quote_columns` true"),
                ]);
            }
        }
    }
    let raw = TableReference::bare(raw_name(&node.name));
    engine.register_file(raw.clone(), &file, &lenient.raw_schema(&schema)).await.map_err(|e| err(&e))?;
    let plan = engine.plan(&lenient.view_sql(&schema, &raw, fold)).await.map_err(|e| err(&e))?;
    let viewed = Arc::new(plan.schema().as_arrow().clone());
    engine.register_view(table, plan).map_err(|e| err(&e))?;
    Ok(Some(viewed))
}

/// The table a source or seed is registered as (a model's is its name).
pub fn table_of(node: &Node) -> TableReference {
    match &node.resource {
        Resource::Source(s) => TableReference::partial(s.source.as_str(), s.name.as_str()),
        _ => TableReference::bare(node.name.as_str()),
    }
}

/// The table a source's or seed's file is registered as when read as
/// text ([`register_as_text`]); `None` for other nodes.
pub fn text_table_of(node: &Node) -> Option<TableReference> {
    matches!(node.resource, Resource::Source(_) | Resource::Seed(_))
        .then(|| TableReference::bare(format!("__ferry_text_{}", node.unique_id.replace('.', "_"))))
}

/// A source's or seed's CSV file registered with every column as text.
pub struct TextTable {
    pub table: TableReference,
    pub file: FileSource,
    /// How its bytes became text: its declared encoding (UTF-8 unless
    /// declared), bad bytes replaced when `replacing`.
    pub text: source::TextOptions,
    pub replacing: bool,
}

impl TextTable {
    /// A reader of the CSV file `path` record by record, decoded as the
    /// table reads it; `None` when it is compressed or cannot be opened.
    pub fn records(&self, path: &Utf8Path) -> Option<csv::Reader<Box<dyn io::BufRead + Send>>> {
        if self.file.compression != FileCompressionType::UNCOMPRESSED {
            return None;
        }
        let file = std::fs::File::open(path).ok()?;
        let text = self.text.open(file, Arc::default());
        Some(self.file.csv_builder(self.file.csv.header).from_reader(text))
    }

    /// The raw bytes of its first file, decompressed.
    pub fn bytes(&self) -> Option<Box<dyn io::Read>> {
        let path = self.file.local_files().into_iter().next()?;
        let file = std::fs::File::open(path).ok()?;
        Some(Box::new(self.file.compression.convert_read(file).ok()?))
    }
}

/// Registers a CSV source's or seed's file with every column read as text
/// (as `__ferry_text_<name>`), for an audit of what the file holds before
/// any type is applied; `None` for a table of another kind (read as
/// registered). A file in UTF-8 is read by DataFusion's reader unless
/// `replacing`; one in another declared encoding, or `replacing`, by
/// ferry's, with bytes that are no text replaced by U+FFFD.
pub async fn register_as_text(engine: &Engine, manifest: &Manifest, node: &Node, replacing: bool) -> Option<TextTable> {
    let empty = serde_json::Map::new();
    let (path, location) = match &node.resource {
        Resource::Seed(seed) => (seed.path.as_str(), &empty),
        Resource::Source(s) if !s.location.contains_key("connection") => {
            (s.location.get("path").and_then(Json::as_str)?, &s.location)
        }
        _ => return None,
    };
    let file = match &node.resource {
        Resource::Seed(_) => FileSource::local(&manifest.root.join(path), FileFormat::Csv),
        _ => file_source(&manifest.root, path, location).ok()?,
    };
    if file.format != FileFormat::Csv || path.contains("://") {
        return None;
    }
    let mut text = source::TextOptions::of(location).ok()?;
    let replacing = replacing || !text.is_default();
    let table = text_table_of(node)?;
    if replacing {
        text.replace_invalid = true;
        let mut location = location.clone();
        location.insert("on_invalid".into(), Json::from("replace"));
        location.remove("on_error");
        let request = source::Request {
            table: &node.display_name(),
            root: &manifest.root,
            path,
            format: Some("csv"),
            location: &location,
            columns: &[],
            csv: &file.csv,
            compression: file.compression,
            run: (&manifest.globals.invocation_id, manifest.layout().run(&manifest.globals.invocation_id), false),
            url_first_byte: None,
            masked: engine.masked(),
        };
        let spec = Arc::new(source::Spec::of(&request).ok()??);
        let reading = Arc::clone(&spec);
        let inferred = tokio::task::spawn_blocking(move || reading.infer()).await.ok()?.ok()?;
        engine.register(table.clone(), spec.provider(read_as_text(&inferred, |_| true)).ok()?).ok()?;
    } else {
        let inferred = engine.infer_schema(&file).await.ok()?;
        engine.register_file(table.clone(), &file, &read_as_text(&inferred, |_| true)).await.ok()?;
    }
    Some(TextTable { table, file, text, replacing })
}

/// Whether `e` is a reader's refusal of bytes that are not UTF-8.
pub fn is_invalid_utf8(e: &DataFusionError) -> bool {
    e.to_string().contains("UTF-8")
}

/// A seed's columns declared `timestamp` (`column_types`), read as
/// PostgreSQL's `COPY` reads them (which `dbt seed` loads through): what the
/// CSV reader parses, and also times without seconds (`2021-01-01 00:00`),
/// which it refuses. They are read as text and parsed in a view; a value
/// that neither way parses still fails the seed, naming the value.
struct LenientTimestamps {
    columns: Vec<String>,
}

/// The spellings tried after the reader's own, as chrono formats.
const TIMES_WITHOUT_SECONDS: [&str; 2] = ["%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"];

impl LenientTimestamps {
    fn of(declared: &SchemaRef) -> Self {
        let columns = declared
            .fields()
            .iter()
            .filter(|f| matches!(f.data_type(), DataType::Timestamp(_, None)))
            .map(|f| f.name().clone())
            .collect();
        LenientTimestamps { columns }
    }

    fn raw_schema(&self, schema: &SchemaRef) -> SchemaRef {
        read_as_text(schema, |f| self.columns.contains(f.name()))
    }

    /// The view over the raw table; with `fold`, each column named in
    /// lower case.
    fn view_sql(&self, schema: &SchemaRef, raw: &TableReference, fold: bool) -> String {
        let formats: Vec<String> = TIMES_WITHOUT_SECONDS.iter().map(|f| format!("'{f}'")).collect();
        let columns: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| {
                let col = quote_ident(f.name());
                let name = if fold { quote_ident(&f.name().to_lowercase()) } else { col.clone() };
                if !self.columns.contains(f.name()) {
                    return format!("{col} AS {name}");
                }
                let ty = sql_type_of(f.data_type());
                format!(
                    "CAST(CASE WHEN {col} IS NULL THEN NULL \
                     ELSE coalesce(try_cast({col} AS {ty}), to_timestamp({col}, {})) END AS {ty}) AS {name}",
                    formats.join(", ")
                )
            })
            .collect();
        format!("SELECT {} FROM {}", columns.join(", "), raw.to_quoted_string())
    }
}

/// After a CSV parse error in model `id`, finds which source or seed file of
/// its ancestors holds the bad row, and where.
pub async fn locate_bad_row(engine: &Engine, manifest: &Manifest, id: NodeId, message: &str) -> Option<Diagnostic> {
    // A record of the wrong shape (a ragged CSV row, bytes that are not
    // JSON) is found by one scan of the files, not by running the query.
    let malformed_record = message.contains("number of fields") || message.contains("Json error");
    for a in manifest.graph.ancestors(id, None) {
        let node = &manifest[a];
        let (file, table) = match &node.resource {
            Resource::Source(s) => {
                let path = s.location.get("path").and_then(Json::as_str)?;
                let file = file_source(&manifest.root, path, &s.location).ok()?;
                let raw = TableReference::partial(s.source.as_str(), raw_name(&s.name));
                let table = if engine.table_schema(raw.clone()).await.is_some() {
                    raw
                } else {
                    TableReference::partial(s.source.as_str(), s.name.as_str())
                };
                (file, table)
            }
            Resource::Seed(seed) => {
                // A seed whose timestamps are parsed in a view is read
                // from its raw table, as the file holds them.
                let raw = TableReference::bare(raw_name(&node.name));
                let table = if engine.table_schema(raw.clone()).await.is_some() {
                    raw
                } else {
                    TableReference::bare(node.name.as_str())
                };
                (FileSource::local(&manifest.root.join(&seed.path), FileFormat::Csv), table)
            }
            _ => continue,
        };
        if malformed_record {
            match malformed(&node.display_name(), &manifest.root, &file) {
                Some(d) => return Some(d),
                None => continue,
            }
        }
        if file.format != FileFormat::Csv {
            continue;
        }
        let Some(schema) = engine.table_schema(table).await else { continue };
        if let Some((path, message)) = engine.first_bad_row(&file, &schema).await {
            if message.contains("UTF-8")
                && let Some(e) = source::find_invalid_utf8(
                    &node.display_name(),
                    &manifest.root,
                    std::slice::from_ref(&path),
                    file.compression,
                )
            {
                return Some(read_error_diagnostic(&e));
            }
            let shown = path.strip_prefix(&manifest.root).map_or_else(|_| path.clone(), Utf8Path::to_owned);
            let line = |record: usize| file.line_of_record(&path, record);
            return Some(bad_row_diagnostic(&node.display_name(), &shown, &message, &schema, line));
        }
    }
    None
}

/// A value that fails the query with no place: a date or timestamp not in
/// its source's declared `date_format`/`timestamp_format` (`Error parsing
/// timestamp from '31/02/1900' using format ...`), or a number too large
/// for its declared decimal (`parse decimal overflow (12345.67)`). Finds
/// the first field holding that value in the CSV sources of node `id` and
/// names its file, line and column.
pub fn locate_bad_value(manifest: &Manifest, id: NodeId, message: &str) -> Option<Diagnostic> {
    let date = regex::Regex::new(r"Error parsing timestamp from '(.*?)' using format '(.*?)'").ok()?;
    let decimal = regex::Regex::new(r"parse decimal overflow \((.*?)\)").ok()?;
    let (value, problem, dated) = if let Some(found) = date.captures(message) {
        (found[1].to_owned(), format!("does not parse in the format `{}`", &found[2]), true)
    } else {
        let found = decimal.captures(message)?;
        (found[1].to_owned(), "is too large for the column's declared decimal type".to_owned(), false)
    };
    for a in manifest.graph.ancestors(id, None) {
        let Resource::Source(s) = &manifest[a].resource else { continue };
        if dated && TextFormats::of(&s.location).is_none() {
            continue;
        }
        let Some(path) = s.location.get("path").and_then(Json::as_str) else { continue };
        let Ok(file) = file_source(&manifest.root, path, &s.location) else { continue };
        if file.format != FileFormat::Csv {
            continue;
        }
        for f in file.local_files() {
            let Some((line, column)) = file.find_field(&f, &value) else { continue };
            let shown = f.strip_prefix(&manifest.root).map_or_else(|_| f.clone(), Utf8Path::to_owned);
            let name = manifest[a].display_name();
            let declared = s.columns.iter().find(|c| c.name == column).and_then(|c| c.data_type.as_deref());
            let problem = match declared {
                Some(ty) if !dated => format!("is too large for `{ty}`"),
                _ => problem.clone(),
            };
            return Some(
                Diagnostic::error(
                    Code::SourceRow,
                    format!("cannot read `{name}`: `{value}` in column `{column}` {problem} (line {line})"),
                )
                .in_file(Utf8PathBuf::from(format!("{shown}:{line}")))
                .with_help(format!(
                    "fix the value, or declare `{column}` as `varchar` and convert it in the model (`try_cast`; in a model with rules a failed conversion quarantines its row)"
                )),
            );
        }
    }
    None
}

/// A CSV reader error as a diagnostic naming file, line and column.
/// `line_of` finds where a record (0-based, as the reader counts them)
/// starts in the file.
fn bad_row_diagnostic(
    name: &str,
    path: &Utf8Path,
    message: &str,
    schema: &SchemaRef,
    line_of: impl Fn(usize) -> Option<u64>,
) -> Diagnostic {
    let capture = |pattern: &str| regex::Regex::new(pattern).ok()?.captures(message).map(|c| c[1].to_owned());
    // The reader numbers records from 0, the header included; the file's
    // line is where that record starts (later, when a quoted field holds a
    // line break), else the record number made 1-based.
    let record = capture(r"(?:at|for) line (\d+)").and_then(|l| l.parse::<usize>().ok());
    let line = record.map(|r| line_of(r).map_or(r + 1, |l| usize::try_from(l).unwrap_or(usize::MAX)));
    let column = capture(r"for column (\d+)")
        .and_then(|c| c.parse::<usize>().ok())
        .and_then(|c| schema.fields().get(c))
        .map(|f| f.name().clone());
    let value = capture(r"parsing value '(.*?)' as type");
    let ty = capture(r"as type '(.*?)'");
    let at = line.map_or_else(|| path.to_string(), |l| format!("{path}:{l}"));
    let what = match (&value, &column, &ty) {
        (Some(v), Some(c), Some(t)) => format!("`{v}` in column `{c}` is not a valid {t}"),
        _ => message.to_owned(),
    };
    let mut d = Diagnostic::error(
        Code::SourceRow,
        format!("cannot read `{name}`: {what}{}", line.map(|l| format!(" (line {l})")).unwrap_or_default()),
    )
    .in_file(Utf8PathBuf::from(at));
    if let Some(row) = capture(r"Row data: '(.*)'") {
        d = d.with_note(format!("the row: {row}"));
    }
    if let Some(c) = column {
        d = d.with_help(format!(
            "fix the row, or declare `{c}` with `data_type: varchar` and convert it in the model (`try_cast`)"
        ));
    }
    d
}

/// The declared `data_type`s of columns, as Arrow types.
async fn declared_schema(
    engine: &Engine,
    columns: &[crate::project::nodes::ColumnSpec],
    path: &Utf8Path,
) -> Result<Option<SchemaRef>, Vec<Diagnostic>> {
    let mut fields = Vec::new();
    for c in columns {
        let Some(ty) = &c.data_type else { continue };
        let dt = engine.sql_type(ty).await.map_err(|_| {
            vec![
                Diagnostic::error(Code::DataType, format!("unknown type `{ty}` for column `{}`", c.name)).in_file(path),
            ]
        })?;
        fields.push(Field::new(c.name.clone(), dt, true));
    }
    Ok((!fields.is_empty()).then(|| Arc::new(Schema::new(fields))))
}

/// The inferred schema with declared types replacing inferred ones.
fn overlay(inferred: &SchemaRef, declared: Option<&SchemaRef>) -> SchemaRef {
    let Some(declared) = declared else { return Arc::clone(inferred) };
    let fields: Vec<Field> = inferred
        .fields()
        .iter()
        .map(|f| match declared.field_with_name(f.name()) {
            Ok(d) => Field::new(f.name(), d.data_type().clone(), true),
            Err(_) => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

fn extension_of(path: &str) -> Option<String> {
    let name = path.rsplit('/').next()?;
    let mut parts: Vec<&str> = name.split('.').collect();
    while let Some(last) = parts.pop() {
        if !matches!(last, "gz" | "bz2" | "xz" | "zst") {
            return (!parts.is_empty()).then(|| last.to_owned());
        }
    }
    None
}

fn resolve_path(root: &Utf8Path, path: &str) -> Utf8PathBuf {
    let p = Utf8Path::new(path);
    if p.is_absolute() || path.contains("://") { p.to_owned() } else { root.join(p) }
}

fn source_error(name: &str, e: &DataFusionError, label: Label) -> Diagnostic {
    Diagnostic::error(Code::SourceSchema, format!("cannot read source `{name}`: {}", first_line(e))).with_label(label)
}

/// An error's first line, without DataFusion's backtrace, and with the
/// causes the message leaves out (an object store says "error sending
/// request"; the reason, such as an untrusted certificate, is below it).
pub(crate) fn first_line(e: &DataFusionError) -> String {
    let root = e.find_root();
    let line = root.strip_backtrace().lines().next().unwrap_or_default().to_owned();
    crate::error::with_causes(line, root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_skips_compression_suffixes() {
        assert_eq!(extension_of("data/a.csv.gz").as_deref(), Some("csv"));
        assert_eq!(extension_of("data/a.parquet").as_deref(), Some("parquet"));
        assert_eq!(extension_of("data/dir"), None);
    }
}
