//! Reading a stage's Parquet files back as canonical batches (see
//! [`cells::normalize`]), on a thread of their own, so decoding overlaps
//! with what the reader does with them (sending rows to a target, hashing
//! them for a reconciliation). A stage in an object store is read through
//! the store, on the same thread.

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::{DefaultParquetFileReaderFactory, ParquetFileReaderFactory};
use datafusion::parquet::arrow::arrow_reader::{ParquetRecordBatchReaderBuilder, RowSelection};
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
use futures::StreamExt;
use tokio::sync::mpsc;

use super::{Dir, StagedTable};
use crate::values::cells;

/// A stage whose files could not be read back.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot read the stage of `{model}`: {message}")]
pub struct ReadError {
    pub model: String,
    pub message: String,
}

/// Batches in flight between the reader and the loader.
const CHANNEL_DEPTH: usize = 4;
/// Rows per batch read back.
const BATCH_ROWS: usize = 16 * 1024;

/// Starts reading `stage` as `model` (the name its errors give), only the
/// columns at the positions `projection` gives (or all); batches
/// (normalized, see [`cells::normalize`]) arrive on the receiver in file
/// order. The reader stops when the receiver is dropped.
pub fn spawn<E: From<ReadError> + Send + 'static>(
    stage: &StagedTable,
    model: &str,
    projection: Option<Vec<usize>>,
) -> mpsc::Receiver<Result<RecordBatch, E>> {
    spawn_with(stage, model, projection, Ok)
}

/// [`spawn`], with `each` applied to every batch on the reading thread (to
/// encode rows for the wire while the loader sends the previous ones).
pub fn spawn_with<T: Send + 'static, E: From<ReadError> + Send + 'static>(
    stage: &StagedTable,
    model: &str,
    projection: Option<Vec<usize>>,
    mut each: impl FnMut(RecordBatch) -> Result<T, E> + Send + 'static,
) -> mpsc::Receiver<Result<T, E>> {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let stage = stage.clone();
    let model = model.to_owned();
    // A stored stage is read through its store, on the runtime that calls.
    let runtime = tokio::runtime::Handle::try_current();
    std::thread::spawn(move || {
        let fail = |message: String| E::from(ReadError { model: model.clone(), message });
        let factory = match &stage.dir {
            Dir::Stored(dir) => Some(DefaultParquetFileReaderFactory::new(std::sync::Arc::clone(dir.store()))),
            Dir::Local(_) => None,
        };
        for f in &stage.manifest.files {
            let reader = match (&stage.dir, &stage.manifest.version, &runtime, &factory) {
                (Dir::Local(dir), ..) => {
                    let path = dir.join(&f.name);
                    super::kept_rows(dir, f)
                        .and_then(|kept| local_batches(&path, projection.as_deref(), kept))
                        .map_err(|e| fail(format!("`{path}`: {e}")))
                }
                (Dir::Stored(dir), version, Ok(runtime), Some(factory)) => {
                    let name = super::store::file_name(version.as_deref(), &f.name);
                    let file = PartitionedFile::new(dir.object(&name).to_string(), f.bytes);
                    factory
                        .create_reader(0, file, None, &Default::default())
                        .map_err(|e| e.to_string())
                        .and_then(|reader| stored_batches(runtime.clone(), reader, projection.as_deref()))
                        .map_err(|e| fail(format!("`{}`: {e}", dir.shown(&name))))
                }
                (Dir::Stored(dir), ..) => Err(fail(format!("the stage at {dir} is read outside a runtime"))),
            };
            let reader = match reader {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            for batch in reader {
                let batch = batch
                    .map_err(|e| fail(format!("`{}`: {e}", f.name)))
                    .and_then(|b| cells::normalize(b).map_err(|e| fail(e.to_string())))
                    .and_then(&mut each);
                let failed = batch.is_err();
                if tx.blocking_send(batch).is_err() || failed {
                    return;
                }
            }
        }
    });
    rx
}

/// The batches of a Parquet file on this machine: its rows that `kept`
/// selects (all without it).
fn local_batches(
    path: &camino::Utf8Path,
    projection: Option<&[usize]>,
    kept: Option<RowSelection>,
) -> Result<Box<dyn Iterator<Item = Result<RecordBatch, String>>>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| e.to_string())?;
    let b = match projection {
        Some(p) => {
            let mask = ProjectionMask::roots(b.parquet_schema(), p.iter().copied());
            b.with_projection(mask)
        }
        None => b,
    };
    let b = match kept {
        Some(kept) => b.with_row_selection(kept),
        None => b,
    };
    let reader = b.with_batch_size(BATCH_ROWS).build().map_err(|e| e.to_string())?;
    Ok(Box::new(reader.map(|b| b.map_err(|e| e.to_string()))))
}

/// The batches of a Parquet object, fetched through `runtime` (from a
/// thread of the reader's own, which may block on it).
fn stored_batches(
    runtime: tokio::runtime::Handle,
    reader: Box<dyn AsyncFileReader + Send>,
    projection: Option<&[usize]>,
) -> Result<Box<dyn Iterator<Item = Result<RecordBatch, String>>>, String> {
    let mut stream = runtime
        .block_on(async {
            // Parquet reads through a boxed reader without `Send`.
            let reader: Box<dyn AsyncFileReader> = reader;
            let b = ParquetRecordBatchStreamBuilder::new(reader).await?;
            let b = match projection {
                Some(p) => {
                    let mask = ProjectionMask::roots(b.parquet_schema(), p.iter().copied());
                    b.with_projection(mask)
                }
                None => b,
            };
            b.with_batch_size(BATCH_ROWS).build()
        })
        .map_err(|e| e.to_string())?;
    Ok(Box::new(std::iter::from_fn(move || runtime.block_on(stream.next()).map(|b| b.map_err(|e| e.to_string())))))
}

/// NULLs of each of `columns` in a stage, from the Parquet statistics
/// (`None` where a file has no statistics for the column, or has NULLs
/// that may be in its deleted rows).
pub fn null_counts(stage: &StagedTable, columns: &[&str]) -> Vec<Option<u64>> {
    let mut counts: Vec<Option<u64>> = vec![Some(0); columns.len()];
    // Only a stage on this machine is read here, where nothing may wait.
    let Some(dir) = stage.dir.local() else { return vec![None; columns.len()] };
    for f in &stage.manifest.files {
        let path = dir.join(&f.name);
        let Ok(file) = std::fs::File::open(&path) else { return vec![None; columns.len()] };
        let Ok(reader) = SerializedFileReader::new(file) else { return vec![None; columns.len()] };
        let meta = reader.metadata();
        let schema = meta.file_metadata().schema_descr();
        for (k, column) in columns.iter().enumerate() {
            // Only flat columns have one leaf with the column's name.
            let leaf = (0..schema.num_columns()).find(|&l| schema.column(l).path().string() == *column);
            for rg in meta.row_groups() {
                let n = leaf.and_then(|l| rg.column(l).statistics()).and_then(|s| s.null_count_opt());
                let n = n.filter(|&n| n == 0 || f.deleted.is_none());
                counts[k] = match (counts[k], n) {
                    (Some(a), Some(b)) => Some(a + b),
                    _ => None,
                };
            }
        }
    }
    counts
}
