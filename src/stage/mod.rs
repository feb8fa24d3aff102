//! Staged model output: Parquet files under `.ferry/stage/<model>/`,
//! written so that a reader never trusts half a stage.
//!
//! A stage is written into a temporary directory beside the final one,
//! every file is fsynced, a manifest (`_ferry_stage.json`: row count,
//! schema, files with sizes and row counts, and an xxh3 content checksum) is
//! written last, and the directory is renamed into place. [`read_manifest`]
//! checks the files against the manifest before anything trusts them. This
//! module writes, verifies and reads back stages ([`read`]); it does not
//! plan or execute models, and where the stages live is `state::Layout`'s.
//!
//! A stage root may also be a prefix of an object store (`stage_dir:
//! s3://bucket/prefix`, see [`store`]), which has no rename: there the
//! files go under a new version prefix and the manifest, written last in
//! one PUT, names the version.
//!
//! Every column is written with a Parquet logical type, so that other
//! readers (DuckDB, pyarrow, Spark) read the stage as ferry does: Arrow
//! types Parquet has no such type for are widened first (seconds to
//! milliseconds for timestamps and times, `Date64` to `Date32`). The one
//! exception is an incremental model's stage layered by [`layer`]: rows of
//! its files may be deleted by deletion files, which only ferry's readers
//! ([`read`], [`table`]) apply.

pub mod layer;
pub mod read;
pub mod store;
pub mod table;

pub use store::Stored;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use camino::{Utf8Path, Utf8PathBuf};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::arrow::arrow_reader::RowSelection;
use datafusion::parquet::arrow::async_writer::AsyncFileWriter;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::properties::WriterProperties;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// The manifest inside each staged model's directory.
pub const MANIFEST_FILE: &str = "_ferry_stage.json";

/// Why a stage could not be written or trusted.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("failed to read the rows of `{model}`")]
    Execute {
        model: String,
        #[source]
        source: DataFusionError,
    },
    #[error("failed to write Parquet for `{model}` to `{path}`")]
    Write {
        model: String,
        path: Utf8PathBuf,
        #[source]
        source: ParquetError,
    },
    #[error("failed to {action} `{path}`")]
    Io {
        action: &'static str,
        path: Utf8PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the stage of `{model}` at `{path}` cannot be trusted: {reason}")]
    Corrupt { model: String, path: Utf8PathBuf, reason: String },
}

/// One Parquet file of a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedFile {
    pub name: String,
    pub bytes: u64,
    /// The rows in the file, those deleted included.
    pub rows: u64,
    /// The file's rows that a later version replaced (see [`layer`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Deleted>,
}

/// A deletion file beside a stage's Parquet file: the positions (from 0)
/// of the file's rows that are no longer the stage's, as a Roaring bitmap
/// in its portable serialization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub name: String,
    pub bytes: u64,
    pub rows: u64,
}

impl StageManifest {
    /// Whether some file has rows deleted, which a reader of the Parquet
    /// files alone would see (see [`layer`]).
    pub fn has_deletes(&self) -> bool {
        self.files.iter().any(|f| f.deleted.is_some())
    }
}

/// The rows of a file that are the stage's: all but those its deletion
/// file lists, read from `dir`.
pub fn kept_rows(dir: &Utf8Path, file: &StagedFile) -> Result<Option<RowSelection>, String> {
    let Some(deleted) = &file.deleted else { return Ok(None) };
    let bitmap = read_deleted(dir, deleted)?;
    Ok(Some(selection(&bitmap, file.rows)))
}

/// A file's deletion bitmap.
fn read_deleted(dir: &Utf8Path, deleted: &Deleted) -> Result<roaring::RoaringBitmap, String> {
    let path = dir.join(&deleted.name);
    let bytes = fs_err::read(&path).map_err(|e| e.to_string())?;
    roaring::RoaringBitmap::deserialize_from(&bytes[..]).map_err(|e| format!("`{path}` is not a deletion file: {e}"))
}

/// The rows of `rows` not in `deleted`, as Parquet's reader selects them.
fn selection(deleted: &roaring::RoaringBitmap, rows: u64) -> RowSelection {
    use datafusion::parquet::arrow::arrow_reader::RowSelector;
    let mut selectors = Vec::new();
    let mut at = 0u64;
    for position in deleted.iter().map(u64::from).filter(|&p| p < rows) {
        if position > at {
            selectors.push(RowSelector::select((position - at) as usize));
        }
        selectors.push(RowSelector::skip(1));
        at = position + 1;
    }
    if at < rows {
        selectors.push(RowSelector::select((rows - at) as usize));
    }
    // Adjacent skips are merged.
    selectors.into()
}

/// One column of a staged schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedColumn {
    pub name: String,
    pub data_type: String,
    pub nullable: bool,
}

/// What `_ferry_stage.json` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageManifest {
    pub model: String,
    pub row_count: u64,
    pub columns: Vec<StagedColumn>,
    pub files: Vec<StagedFile>,
    /// xxh3-64 over the files' bytes in order, as 16 hex digits.
    pub checksum: String,
    /// In an object store, the prefix under the stage's that holds its
    /// files (see [`store`]); on a file system, none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Written by a masked run: its personal columns hold masked values
    /// only. A masked run reads no stage without it (see
    /// [`StageManifest::readable`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub masked: bool,
}

impl StageManifest {
    /// Whether a run that masks (`masked`) or not may read this stage as
    /// its data: a masked run never reads what a run in clear staged, nor
    /// builds on masked values in a run in clear.
    pub fn readable(&self, masked: bool) -> bool {
        self.masked == masked
    }
}

/// The prefix, beside the stages in an object store, of what a run writes
/// for itself only (views computed once, tables copied for a cluster),
/// removed as the run ends.
pub const SCRATCH: &str = "_ferry_scratch";

/// Where the stages live: a directory, or a prefix of an object store.
#[derive(Debug, Clone)]
pub enum Root {
    Local(Utf8PathBuf),
    Stored(Stored),
    /// The stages under a prefix of an object store, written to as new
    /// versions pending: [`write_stage`] leaves the stage as it was until
    /// [`commit`] makes the version written the stage (see [`store`]).
    Pending(Stored),
}

impl Root {
    /// Where the stage of `model` is (or would be).
    pub fn dir(&self, model: &str) -> Dir {
        match self {
            Root::Local(path) => Dir::Local(path.join(model)),
            Root::Stored(root) | Root::Pending(root) => Dir::Stored(Box::new(root.child(model))),
        }
    }

    /// The directory, for a root on this machine.
    pub fn local(&self) -> Option<&Utf8Path> {
        match self {
            Root::Local(path) => Some(path),
            Root::Stored(_) | Root::Pending(_) => None,
        }
    }

    /// The prefix, for a root in an object store.
    pub fn stored(&self) -> Option<&Stored> {
        match self {
            Root::Local(_) => None,
            Root::Stored(root) | Root::Pending(root) => Some(root),
        }
    }
}

impl std::fmt::Display for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Root::Local(path) => path.fmt(f),
            Root::Stored(root) | Root::Pending(root) => root.fmt(f),
        }
    }
}

impl From<&Utf8Path> for Root {
    fn from(path: &Utf8Path) -> Root {
        Root::Local(path.to_owned())
    }
}

impl From<&Utf8PathBuf> for Root {
    fn from(path: &Utf8PathBuf) -> Root {
        Root::Local(path.clone())
    }
}

impl From<&Root> for Root {
    fn from(root: &Root) -> Root {
        root.clone()
    }
}

/// Where one model's stage is: `<root>/<model>/`.
#[derive(Debug, Clone)]
pub enum Dir {
    Local(Utf8PathBuf),
    Stored(Box<Stored>),
}

impl Dir {
    /// The directory, for a stage on this machine.
    pub fn local(&self) -> Option<&Utf8Path> {
        match self {
            Dir::Local(path) => Some(path),
            Dir::Stored(_) => None,
        }
    }
}

impl std::fmt::Display for Dir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dir::Local(path) => path.fmt(f),
            Dir::Stored(dir) => dir.fmt(f),
        }
    }
}

/// A stage that has been written and put in place.
#[derive(Debug, Clone)]
pub struct StagedTable {
    pub dir: Dir,
    pub manifest: StageManifest,
}

impl StagedTable {
    /// The directory or URL that holds the stage's Parquet files and no
    /// others, as a reader of the files names it.
    pub fn location(&self) -> String {
        match (&self.dir, &self.manifest.version) {
            (Dir::Stored(dir), Some(version)) => dir.child(version).url().to_string(),
            (dir, _) => dir.to_string(),
        }
    }
}

/// Writes a small file `name` (what the files were computed over) beside a
/// stage's files, so that it goes where they go.
pub async fn write_beside(staged: &StagedTable, name: &str, bytes: Vec<u8>) -> Result<(), StageError> {
    match &staged.dir {
        Dir::Local(dir) => write_synced(&dir.join(name), &bytes).await,
        Dir::Stored(dir) => {
            use object_store::ObjectStoreExt;
            let object = dir.object(&store::file_name(staged.manifest.version.as_deref(), name));
            let put = dir.store().put(&object, object_store::PutPayload::from(bytes)).await;
            put.map(|_| ()).map_err(|e| store::io("write", &dir.shown(name), e))
        }
    }
}

/// The file `name` beside a stage's files (see [`write_beside`]), if it
/// can be read.
pub async fn read_beside(staged: &StagedTable, name: &str) -> Option<Vec<u8>> {
    match &staged.dir {
        Dir::Local(dir) => fs_err::read(dir.join(name)).ok(),
        Dir::Stored(dir) => {
            use object_store::ObjectStoreExt;
            let object = dir.object(&store::file_name(staged.manifest.version.as_deref(), name));
            Some(dir.store().get(&object).await.ok()?.bytes().await.ok()?.to_vec())
        }
    }
}

/// How to cut a stage into files.
#[derive(Debug, Clone)]
pub struct StageOptions {
    /// Start a new file after this many rows.
    pub max_rows_per_file: u64,
    /// Counts rows as they are written, for progress displays.
    pub rows_written: Option<Arc<AtomicU64>>,
    /// Compress with LZ4 rather than ZSTD: faster to write, larger, for
    /// data that hardly compresses (row hashes).
    pub fast_codec: bool,
    /// The run masks personal data: recorded in the manifest.
    pub masked: bool,
}

impl Default for StageOptions {
    fn default() -> Self {
        StageOptions { max_rows_per_file: 4_000_000, rows_written: None, fast_codec: false, masked: false }
    }
}

/// Streams `partitions` into Parquet, one writer per partition running
/// concurrently, and swaps the result into `<parent>/<model>/`.
/// On any error, or if the future is dropped (Ctrl-C), the previous stage,
/// if there was one, is left as it was and the temporary directory is removed.
pub async fn write_stage(
    parent: impl Into<Root>,
    model: &str,
    partitions: Vec<SendableRecordBatchStream>,
    options: StageOptions,
) -> Result<StagedTable, StageError> {
    let parent = match parent.into() {
        Root::Local(parent) => parent,
        Root::Stored(root) => return store::write_stage(&root, model, partitions, options).await,
        Root::Pending(root) => return store::write_version(&root, model, partitions, options).await,
    };
    let tmp = TempDir(parent.join(format!(".{model}.tmp-{}", uuid::Uuid::new_v4().simple())));
    create_dir(&tmp.0).await?;
    let manifest = write_files(&Dir::Local(tmp.0.clone()), model, partitions, options).await?;
    put_in_place(&parent, tmp, model, manifest).await
}

/// Writes `manifest` last into the finished temporary stage `tmp`, and
/// moves it into place as `<parent>/<model>`.
async fn put_in_place(
    parent: &Utf8Path,
    tmp: TempDir,
    model: &str,
    manifest: StageManifest,
) -> Result<StagedTable, StageError> {
    let path = tmp.0.join(MANIFEST_FILE);
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| io("serialize", &path, std::io::Error::other(e)))?;
    write_synced(&path, &json).await?;
    sync_dir(&tmp.0).await?;
    let dir = swap_into_place(parent, &tmp.0, model).await?;
    std::mem::forget(tmp);
    Ok(StagedTable { dir: Dir::Local(dir), manifest })
}

/// Reads a stage's manifest, wherever the stage is, and checks its files
/// as [`read_manifest`] does.
pub async fn verify(dir: &Dir) -> Result<StageManifest, StageError> {
    match dir {
        Dir::Local(path) => read_manifest(path),
        Dir::Stored(dir) => store::read_manifest(dir).await,
    }
}

/// The manifest of the stage in `dir` when it has one that checks; none
/// when it has none (or one that does not check); an error when its store
/// cannot be read, which says nothing of the stage.
pub async fn existing(dir: &Dir) -> Result<Option<StageManifest>, StageError> {
    match verify(dir).await {
        Ok(manifest) => Ok(Some(manifest)),
        Err(StageError::Corrupt { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Makes a finished stage written apart the stage of `model` under
/// `parent`, replacing the stage there as [`write_stage`] does (the
/// previous one is removed only once the new one is in place): on a file
/// system, a stage written under another parent on the same file system is
/// moved; in an object store, a version written pending under the stage
/// (to [`Root::Pending`]) is made the stage by its manifest.
pub async fn commit(parent: &Root, staged: &StagedTable, model: &str) -> Result<StagedTable, StageError> {
    let (parent, from) = match (parent, &staged.dir) {
        (Root::Local(parent), Dir::Local(from)) => (parent, from),
        (Root::Stored(root) | Root::Pending(root), Dir::Stored(_)) => return store::commit(root, staged, model).await,
        (parent, dir) => {
            let e = std::io::Error::other(format!("`{dir}` cannot be moved to `{parent}`"));
            return Err(io("move", Utf8Path::new(&parent.to_string()), e));
        }
    };
    read_manifest(from)?;
    tokio::fs::create_dir_all(parent).await.map_err(|e| io("create", parent, e))?;
    let dir = swap_into_place(parent, from, model).await?;
    Ok(StagedTable { dir: Dir::Local(dir), manifest: staged.manifest.clone() })
}

/// Removes a temporary stage directory unless it was moved into place.
struct TempDir(Utf8PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs_err::remove_dir_all(&self.0);
    }
}

/// Removes temporary directories that a killed process left in `parent`.
pub fn sweep_leftovers(parent: &Utf8Path) {
    let Ok(entries) = fs_err::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && (name.contains(".tmp-") || name.contains(".old-")) {
            let _ = fs_err::remove_dir_all(entry.path());
        }
    }
}

/// Writing a stage's files into a directory: a temporary one, or a new
/// version's prefix in an object store.
impl Dir {
    /// File `name`, as messages show it.
    fn shown(&self, name: &str) -> Utf8PathBuf {
        match self {
            Dir::Local(dir) => dir.join(name),
            Dir::Stored(dir) => dir.shown(name),
        }
    }

    async fn create(&self, name: &str) -> Result<Box<dyn AsyncFileWriter>, StageError> {
        Ok(match self {
            Dir::Local(dir) => {
                let path = dir.join(name);
                Box::new(tokio::fs::File::create(&path).await.map_err(|e| io("create", &path, e))?)
            }
            Dir::Stored(dir) => {
                Box::new(object_store::buffered::BufWriter::new(Arc::clone(dir.store()), dir.object(name)))
            }
        })
    }

    /// The size of a file written and closed, made durable first (fsync)
    /// on a file system; in an object store, as the store holds it.
    async fn finished(&self, name: &str) -> Result<u64, StageError> {
        match self {
            Dir::Local(dir) => {
                let path = dir.join(name);
                let file = tokio::fs::File::open(&path).await.map_err(|e| io("open", &path, e))?;
                file.sync_all().await.map_err(|e| io("sync", &path, e))?;
                Ok(file.metadata().await.map_err(|e| io("stat", &path, e))?.len())
            }
            Dir::Stored(dir) => {
                use object_store::ObjectStoreExt;
                let meta = dir.store().head(&dir.object(name)).await;
                Ok(meta.map_err(|e| store::io("inspect", &dir.shown(name), e))?.size)
            }
        }
    }
}

async fn write_files(
    dir: &Dir,
    model: &str,
    partitions: Vec<SendableRecordBatchStream>,
    options: StageOptions,
) -> Result<StageManifest, StageError> {
    let schema = match partitions.first() {
        Some(p) => parquet_native(&p.schema()),
        None => Arc::new(datafusion::arrow::datatypes::Schema::empty()),
    };
    // Spawned, so partitions encode Parquet on different threads; a
    // JoinSet aborts them all if this future is dropped.
    let mut writers = tokio::task::JoinSet::new();
    for (k, rows) in partitions.into_iter().enumerate() {
        let (dir, model, options) = (dir.to_owned(), model.to_owned(), options.clone());
        writers.spawn(async move { write_partition(&dir, &model, k, rows, options).await });
    }
    let mut files = Vec::new();
    let mut first_error = None;
    while let Some(joined) = writers.join_next().await {
        match joined {
            Ok(Ok(mut written)) => files.append(&mut written),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
                writers.abort_all();
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                first_error.get_or_insert(io("write", &dir.shown(""), std::io::Error::other(e)));
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    // An empty result still gets one (empty) file, so its schema is kept.
    if files.is_empty() {
        let name = "part-00000.parquet".to_owned();
        let writer = open_writer(dir, &name, model, &schema, &options).await?;
        files.push(finish_file(dir, (name, writer, 0), model).await?);
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let checksum = checksum(dir, &files).await?;
    Ok(StageManifest {
        model: model.to_owned(),
        row_count: files.iter().map(|f| f.rows).sum(),
        columns: columns(&schema),
        files,
        checksum,
        version: None,
        masked: options.masked,
    })
}

/// Writes one partition's rows, starting a new file every
/// `max_rows_per_file` rows; an empty partition writes no file.
async fn write_partition(
    dir: &Dir,
    model: &str,
    partition: usize,
    mut rows: SendableRecordBatchStream,
    options: StageOptions,
) -> Result<Vec<StagedFile>, StageError> {
    let schema = parquet_native(&rows.schema());
    let widen = schema != rows.schema();
    let mut files = Vec::new();
    let mut current: Option<OpenFile> = None;
    while let Some(batch) = rows.next().await {
        let batch = batch.map_err(|source| StageError::Execute { model: model.to_owned(), source })?;
        let batch = if widen {
            widened(&batch, &schema).map_err(|e| StageError::Execute { model: model.to_owned(), source: e.into() })?
        } else {
            batch
        };
        let mut offset = 0;
        while offset < batch.num_rows() {
            let (name, writer, written) = match current.as_mut() {
                Some(open) => open,
                None => {
                    let name = format!("part-{partition:03}-{:03}.parquet", files.len());
                    let writer = open_writer(dir, &name, model, &schema, &options).await?;
                    current.insert((name, writer, 0))
                }
            };
            let room = usize::try_from(options.max_rows_per_file.saturating_sub(*written)).unwrap_or(usize::MAX).max(1);
            let take = room.min(batch.num_rows() - offset);
            let slice: RecordBatch = batch.slice(offset, take);
            writer.write(&slice).await.map_err(|source| StageError::Write {
                model: model.to_owned(),
                path: dir.shown(name),
                source,
            })?;
            *written += take as u64;
            offset += take;
            if let Some(counter) = &options.rows_written {
                counter.fetch_add(take as u64, Ordering::Relaxed);
            }
            if *written >= options.max_rows_per_file
                && let Some(done) = current.take()
            {
                files.push(finish_file(dir, done, model).await?);
            }
        }
    }
    if let Some(done) = current.take() {
        files.push(finish_file(dir, done, model).await?);
    }
    Ok(files)
}

async fn open_writer(
    dir: &Dir,
    name: &str,
    model: &str,
    schema: &SchemaRef,
    options: &StageOptions,
) -> Result<AsyncArrowWriter<Box<dyn AsyncFileWriter>>, StageError> {
    use datafusion::parquet::basic::Compression;
    let file = dir.create(name).await?;
    let codec = if options.fast_codec { Compression::LZ4_RAW } else { Compression::ZSTD(Default::default()) };
    let props = WriterProperties::builder().set_compression(codec).build();
    AsyncArrowWriter::try_new(file, Arc::clone(schema), Some(props)).map_err(|source| StageError::Write {
        model: model.to_owned(),
        path: dir.shown(name),
        source,
    })
}

/// A file being written: its name, its writer and the rows written so far.
type OpenFile = (String, AsyncArrowWriter<Box<dyn AsyncFileWriter>>, u64);

async fn finish_file(dir: &Dir, (name, writer, rows): OpenFile, model: &str) -> Result<StagedFile, StageError> {
    writer.close().await.map_err(|source| StageError::Write {
        model: model.to_owned(),
        path: dir.shown(&name),
        source,
    })?;
    let bytes = dir.finished(&name).await?;
    Ok(StagedFile { name, bytes, rows, deleted: None })
}

/// xxh3-64 over the files' contents, in manifest order, each file's
/// deletion file after it (read back, so that the checksum is of what the
/// files hold).
async fn checksum(dir: &Dir, files: &[StagedFile]) -> Result<String, StageError> {
    let dir = match dir {
        Dir::Local(dir) => dir,
        Dir::Stored(dir) => {
            use object_store::ObjectStoreExt;
            let mut hasher = xxhash_rust::xxh3::Xxh3::new();
            for f in files {
                let got = dir.store().get(&dir.object(&f.name)).await;
                let mut bytes = got.map_err(|e| store::io("read", &dir.shown(&f.name), e))?.into_stream();
                while let Some(chunk) = bytes.next().await {
                    hasher.update(&chunk.map_err(|e| store::io("read", &dir.shown(&f.name), e))?);
                }
            }
            return Ok(format!("{:016x}", hasher.digest()));
        }
    };
    let paths: Vec<Utf8PathBuf> = files
        .iter()
        .flat_map(|f| std::iter::once(&f.name).chain(f.deleted.as_ref().map(|d| &d.name)))
        .map(|name| dir.join(name))
        .collect();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let mut buf = vec![0u8; 1 << 20];
        for path in &paths {
            let mut f = fs_err::File::open(path).map_err(|e| io("read", path, e))?;
            loop {
                let n = f.read(&mut buf).map_err(|e| io("read", path, e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
        }
        Ok(format!("{:016x}", hasher.digest()))
    })
    .await
    .map_err(|e| io("hash", dir, std::io::Error::other(e)))?
}

/// Renames `tmp` to `<parent>/<model>`, moving any previous stage aside
/// first and removing it after; the parent directory is fsynced.
async fn swap_into_place(parent: &Utf8Path, tmp: &Utf8Path, model: &str) -> Result<Utf8PathBuf, StageError> {
    let dir = parent.join(model);
    let old = parent.join(format!(".{model}.old-{}", uuid::Uuid::new_v4().simple()));
    let had_old = tokio::fs::try_exists(&dir).await.map_err(|e| io("inspect", &dir, e))?;
    if had_old {
        tokio::fs::rename(&dir, &old).await.map_err(|e| io("move aside", &dir, e))?;
    }
    if let Err(e) = tokio::fs::rename(tmp, &dir).await {
        if had_old {
            let _ = tokio::fs::rename(&old, &dir).await;
        }
        let _ = tokio::fs::remove_dir_all(tmp).await;
        return Err(io("move into place", &dir, e));
    }
    sync_dir(parent).await?;
    if had_old {
        let _ = tokio::fs::remove_dir_all(&old).await;
    }
    Ok(dir)
}

/// Reads a stage's manifest and checks that its files are all there, with
/// the recorded sizes, and nothing half-written stands in for them.
pub fn read_manifest(dir: &Utf8Path) -> Result<StageManifest, StageError> {
    let path = dir.join(MANIFEST_FILE);
    let model = dir.file_name().unwrap_or_default().to_owned();
    let corrupt = |reason: String| StageError::Corrupt { model: model.clone(), path: dir.to_owned(), reason };
    let text = fs_err::read(&path).map_err(|_| corrupt(format!("`{MANIFEST_FILE}` is missing")))?;
    let manifest: StageManifest =
        serde_json::from_slice(&text).map_err(|e| corrupt(format!("`{MANIFEST_FILE}` is invalid: {e}")))?;
    for f in &manifest.files {
        let meta = fs_err::metadata(dir.join(&f.name)).map_err(|_| corrupt(format!("`{}` is missing", f.name)))?;
        if meta.len() != f.bytes {
            return Err(corrupt(format!("`{}` has {} bytes, the manifest says {}", f.name, meta.len(), f.bytes)));
        }
        if let Some(d) = &f.deleted {
            let meta = fs_err::metadata(dir.join(&d.name)).map_err(|_| corrupt(format!("`{}` is missing", d.name)))?;
            if meta.len() != d.bytes {
                return Err(corrupt(format!("`{}` has {} bytes, the manifest says {}", d.name, meta.len(), d.bytes)));
            }
        }
    }
    Ok(manifest)
}

/// `schema` with each type that Parquet has no logical type for widened to
/// one it has.
fn parquet_native(schema: &SchemaRef) -> SchemaRef {
    use datafusion::arrow::datatypes::{DataType as D, Field, Schema, TimeUnit};
    let native = |t: &D| match t {
        D::Timestamp(TimeUnit::Second, tz) => Some(D::Timestamp(TimeUnit::Millisecond, tz.clone())),
        D::Time32(TimeUnit::Second) => Some(D::Time32(TimeUnit::Millisecond)),
        D::Date64 => Some(D::Date32),
        _ => None,
    };
    if !schema.fields().iter().any(|f| native(f.data_type()).is_some()) {
        return Arc::clone(schema);
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match native(f.data_type()) {
            Some(t) => f.as_ref().clone().with_data_type(t),
            None => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` cast to `schema` (from [`parquet_native`]).
fn widened(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(Arc::clone(c))
            } else {
                datafusion::arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(Arc::clone(schema), columns)
}

fn columns(schema: &SchemaRef) -> Vec<StagedColumn> {
    schema
        .fields()
        .iter()
        .map(|f| StagedColumn {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        })
        .collect()
}

async fn create_dir(path: &Utf8Path) -> Result<(), StageError> {
    tokio::fs::create_dir_all(path).await.map_err(|e| io("create", path, e))
}

async fn write_synced(path: &Utf8Path, bytes: &[u8]) -> Result<(), StageError> {
    use tokio::io::AsyncWriteExt;
    let mut f = tokio::fs::File::create(path).await.map_err(|e| io("create", path, e))?;
    f.write_all(bytes).await.map_err(|e| io("write", path, e))?;
    f.sync_all().await.map_err(|e| io("sync", path, e))
}

/// fsyncs a directory so renames and new entries in it survive a crash.
async fn sync_dir(path: &Utf8Path) -> Result<(), StageError> {
    let dir = tokio::fs::File::open(path).await.map_err(|e| io("open", path, e))?;
    dir.sync_all().await.map_err(|e| io("sync", path, e))
}

fn io(action: &'static str, path: &Utf8Path, source: std::io::Error) -> StageError {
    StageError::Io { action, path: path.to_owned(), source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use datafusion::prelude::SessionContext;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("name", DataType::Utf8, true)]))
    }

    fn batch(start: i64, n: i64) -> RecordBatch {
        let ids: Vec<i64> = (start..start + n).collect();
        let names: Vec<Option<String>> = ids.iter().map(|i| (i % 3 != 0).then(|| format!("n{i}"))).collect();
        RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(ids)), Arc::new(StringArray::from(names))])
            .unwrap()
    }

    fn stream(items: Vec<Result<RecordBatch, DataFusionError>>) -> SendableRecordBatchStream {
        Box::pin(RecordBatchStreamAdapter::new(schema(), futures::stream::iter(items)))
    }

    fn root() -> (tempfile::TempDir, Utf8PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = Utf8PathBuf::try_from(dir.path().to_owned()).unwrap();
        (dir, path)
    }

    fn leftovers(root: &Utf8Path) -> Vec<String> {
        let mut names: Vec<String> = fs_err::read_dir(root.join(".ferry/stage"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn stages_rows_into_files_with_a_manifest() {
        let (_guard, root) = root();
        let options = StageOptions { max_rows_per_file: 250, ..StageOptions::default() };
        let staged = write_stage(
            &root.join(".ferry/stage"),
            "orders",
            vec![stream(vec![Ok(batch(0, 400)), Ok(batch(400, 200))])],
            options,
        )
        .await
        .unwrap();
        let m = &staged.manifest;
        assert_eq!(m.row_count, 600);
        assert_eq!(m.files.iter().map(|f| f.rows).collect::<Vec<_>>(), vec![250, 250, 100]);
        assert_eq!(m.columns[0], StagedColumn { name: "id".into(), data_type: "Int64".into(), nullable: false });
        assert_eq!(m.checksum.len(), 16);
        assert_eq!(read_manifest(staged.dir.local().unwrap()).unwrap(), *m);
        assert_eq!(leftovers(&root), vec!["orders"]);

        let ctx = SessionContext::new();
        let df = ctx.read_parquet(&staged.location(), Default::default()).await.unwrap();
        let counted = df
            .aggregate(vec![], vec![datafusion::functions_aggregate::expr_fn::count(datafusion::prelude::lit(1))])
            .unwrap();
        let rows = counted.collect().await.unwrap();
        let n = rows[0].column(0).as_any().downcast_ref::<Int64Array>().unwrap().value(0);
        assert_eq!(n, 600, "the stage reads back whole");
    }

    #[tokio::test]
    async fn same_rows_give_the_same_checksum_and_a_new_stage_replaces_the_old() {
        let (_guard, root) = root();
        let a =
            write_stage(&root.join(".ferry/stage"), "m", vec![stream(vec![Ok(batch(0, 10))])], StageOptions::default())
                .await
                .unwrap();
        let b =
            write_stage(&root.join(".ferry/stage"), "m", vec![stream(vec![Ok(batch(0, 10))])], StageOptions::default())
                .await
                .unwrap();
        assert_eq!(a.manifest.checksum, b.manifest.checksum);
        let c =
            write_stage(&root.join(".ferry/stage"), "m", vec![stream(vec![Ok(batch(5, 10))])], StageOptions::default())
                .await
                .unwrap();
        assert_ne!(c.manifest.checksum, a.manifest.checksum);
        assert_eq!(leftovers(&root), vec!["m"], "no temporary or old directories remain");
    }

    #[tokio::test]
    async fn a_failure_mid_stream_keeps_the_previous_stage() {
        let (_guard, root) = root();
        let good =
            write_stage(&root.join(".ferry/stage"), "m", vec![stream(vec![Ok(batch(0, 10))])], StageOptions::default())
                .await
                .unwrap();
        let failing = stream(vec![Ok(batch(0, 50)), Err(DataFusionError::Execution("boom".into()))]);
        let err =
            write_stage(&root.join(".ferry/stage"), "m", vec![failing], StageOptions::default()).await.unwrap_err();
        assert!(matches!(err, StageError::Execute { .. }), "{err}");
        assert_eq!(read_manifest(good.dir.local().unwrap()).unwrap(), good.manifest);
        assert_eq!(leftovers(&root), vec!["m"]);
    }

    #[tokio::test]
    async fn empty_results_keep_their_schema_and_tampering_is_caught() {
        let (_guard, root) = root();
        let staged = write_stage(
            &root.join(".ferry/stage"),
            "empty",
            vec![stream(vec![]), stream(vec![])],
            StageOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(staged.manifest.row_count, 0);
        assert_eq!(staged.manifest.files.len(), 1);
        fs_err::write(staged.dir.local().unwrap().join(&staged.manifest.files[0].name), b"half").unwrap();
        let err = read_manifest(staged.dir.local().unwrap()).unwrap_err();
        assert!(err.to_string().contains("has 4 bytes"), "{err}");
        fs_err::remove_file(staged.dir.local().unwrap().join(MANIFEST_FILE)).unwrap();
        assert!(read_manifest(staged.dir.local().unwrap()).unwrap_err().to_string().contains("is missing"));
    }

    /// In an object store, a version written pending leaves the stage as it
    /// was, reads as it is, and becomes the stage once committed, the other
    /// versions removed; one discarded leaves nothing behind.
    #[tokio::test]
    async fn a_pending_version_becomes_the_stage_only_once_committed() {
        use object_store::{ObjectStore, memory::InMemory};
        let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let url = url::Url::parse("memory://stages/crm").unwrap();
        let root = Stored::new(&url, Arc::clone(&memory)).unwrap();
        let objects = || async {
            use futures::TryStreamExt;
            let listed: Vec<_> = memory.list(None).try_collect().await.unwrap();
            let mut names: Vec<String> = listed.into_iter().map(|m| m.location.to_string()).collect();
            names.sort();
            names
        };
        let first =
            write_stage(Root::Stored(root.clone()), "m", vec![stream(vec![Ok(batch(0, 10))])], Default::default())
                .await
                .unwrap();
        let pending = Root::Pending(root.clone());
        let next =
            write_stage(pending.clone(), "m", vec![stream(vec![Ok(batch(0, 30))])], Default::default()).await.unwrap();
        assert_eq!(
            verify(&Root::Stored(root.clone()).dir("m")).await.unwrap(),
            first.manifest,
            "the stage is as it was"
        );
        assert_eq!(verify(&next.dir).await.unwrap().row_count, 30, "the pending version checks as it is");
        assert!(next.location().starts_with("memory://stages/crm/m/v-"), "{}", next.location());
        let committed = commit(&Root::Stored(root.clone()), &next, "m").await.unwrap();
        assert_eq!(verify(&committed.dir).await.unwrap(), committed.manifest);
        assert_eq!(committed.manifest.row_count, 30);
        let version = committed.manifest.version.clone().unwrap();
        let kept: Vec<String> =
            committed.manifest.files.iter().map(|f| format!("crm/m/{version}/{}", f.name)).collect();
        assert_eq!(objects().await, [vec!["crm/m/_ferry_stage.json".to_owned()], kept.clone()].concat());

        let dropped = write_stage(pending, "m", vec![stream(vec![Ok(batch(0, 5))])], Default::default()).await.unwrap();
        assert!(commit(&Root::Stored(root.child("other")), &dropped, "m").await.is_err(), "not a version of its stage");
        store::discard(&dropped).await;
        store::discard(&committed).await;
        assert_eq!(objects().await, [vec!["crm/m/_ferry_stage.json".to_owned()], kept].concat());
    }

    /// Ctrl-C drops the run's futures: a stage cut off mid-write leaves no
    /// temporary directory and the previous stage untouched.
    #[tokio::test]
    async fn a_dropped_write_leaves_the_previous_stage() {
        let (_guard, root) = root();
        let parent = root.join(".ferry/stage");
        let good =
            write_stage(&parent, "m", vec![stream(vec![Ok(batch(0, 10))])], StageOptions::default()).await.unwrap();
        let endless = futures::stream::iter(vec![Ok(batch(0, 100))]).chain(futures::stream::pending());
        let endless: SendableRecordBatchStream = Box::pin(RecordBatchStreamAdapter::new(schema(), endless));
        let cut = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            write_stage(&parent, "m", vec![endless], StageOptions::default()),
        )
        .await;
        assert!(cut.is_err(), "the write never finishes on its own");
        assert_eq!(leftovers(&root), vec!["m"]);
        assert_eq!(read_manifest(good.dir.local().unwrap()).unwrap(), good.manifest);
    }
}
