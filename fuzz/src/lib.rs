//! What the fuzz targets share: a source file read the way a source table
//! is read (format keys, inference, then every record), and the checks
//! every target makes of a diagnostic.

use camino::{Utf8Path, Utf8PathBuf};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use ferry::diagnostic::Diagnostic;
use ferry::diagnostic::render::{Format, render};
use ferry::project::nodes::ColumnSpec;
use ferry::source::{CsvSettings, ReadError, Request, Spec};
use ferry::state::RunDir;
use serde_json::{Map, Value as Json};

/// A directory of this process for the file under test (in memory where
/// the machine has `/dev/shm`).
fn scratch() -> &'static Utf8Path {
    static DIR: std::sync::OnceLock<Utf8PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let base = if Utf8Path::new("/dev/shm").is_dir() {
            Utf8PathBuf::from("/dev/shm")
        } else {
            Utf8PathBuf::try_from(std::env::temp_dir()).expect("a UTF-8 temporary directory")
        };
        let dir = base.join(format!("ferry-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        dir
    })
}

/// What reading a source file came to.
#[derive(Debug, Default)]
pub struct Outcome {
    pub rows: usize,
    /// The error that stopped the read (inference or a record), if any.
    pub error: Option<String>,
}

/// Reads `data` as the file of a source table whose keys are `location`
/// and whose declared columns are `columns`, as `ferry run` does: the
/// format's options, schema inference, then every record. Keys that
/// the format refuses end the read with no outcome.
pub fn read_source(
    format: &str,
    location: Json,
    columns: &[ColumnSpec],
    csv: &CsvSettings,
    data: &[u8],
) -> Option<Outcome> {
    let dir = scratch();
    let name = format!("input.{format}");
    std::fs::write(dir.join(&name), data).expect("the input file is written");
    let Json::Object(location) = location else { panic!("a location is a map") };
    let request = Request {
        table: "fuzz.input",
        root: dir,
        path: &name,
        format: Some(format),
        location: &location,
        columns,
        csv,
        compression: FileCompressionType::UNCOMPRESSED,
        // Nothing set aside is written: the quarantine keeps it in memory.
        run: ("fuzz", RunDir { path: dir.join("run"), shown: "run".into() }, false),
        url_first_byte: None,
    };
    let spec = match Spec::of(&request) {
        Ok(Some(spec)) => spec,
        // DataFusion's own reader, or keys the format refuses.
        Ok(None) | Err(_) => return None,
    };
    let schema = match spec.infer() {
        Ok(schema) => schema,
        Err(e) => {
            check_read_error(&e);
            return Some(Outcome { rows: 0, error: Some(e.to_string()) });
        }
    };
    let mut rows = 0;
    let mut send = |batch: RecordBatch| {
        assert_eq!(batch.schema().fields(), schema.fields(), "a batch has the inferred schema");
        rows += batch.num_rows();
        true
    };
    let error = match spec.read_file(0, &schema, &mut send) {
        Ok(()) => None,
        Err(e) => {
            let inner =
                ReadError::find(&e).unwrap_or_else(|| panic!("a read fails with an error that names its place: {e}"));
            check_read_error(inner);
            Some(inner.to_string())
        }
    };
    Some(Outcome { rows, error })
}

/// A read error names the source table and the file, and prints.
pub fn check_read_error(e: &ReadError) {
    assert_eq!(e.table, "fuzz.input");
    assert!(e.at.path.as_str().starts_with("input."), "the error names the file: {}", e.at);
    let _ = e.to_string();
    let _ = e.place();
}

/// Renders a diagnostic in every format, as the commands would print it:
/// labels must point inside their files, at character boundaries.
pub fn check_diagnostic(d: &Diagnostic) {
    for label in d.primary.iter().chain(&d.secondary) {
        let text = &label.file.text;
        assert!(label.range.start <= label.range.end, "a label's range is ordered: {:?}", label.range);
        assert!(label.range.end <= text.len(), "a label ends inside its file: {:?} of {}", label.range, text.len());
        assert!(text.is_char_boundary(label.range.start) && text.is_char_boundary(label.range.end));
    }
    for format in [Format::Human { color: false }, Format::Human { color: true }, Format::Json, Format::Github] {
        let out = render(d, format);
        assert!(out.ends_with('\n'));
    }
}

/// A map for `serde_json`'s `Json::Object`, from pairs.
pub fn map(pairs: impl IntoIterator<Item = (&'static str, Json)>) -> Json {
    Json::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect::<Map<String, Json>>())
}
