//! Reading a stage's Parquet files back as canonical batches (see
//! [`cells::normalize`]), on a thread of their own, so decoding overlaps
//! with what the reader does with them (sending rows to a target, hashing
//! them for a reconciliation).

use camino::Utf8PathBuf;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
use tokio::sync::mpsc;

use super::StagedTable;
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
    let files: Vec<Utf8PathBuf> = stage.manifest.files.iter().map(|f| stage.dir.join(&f.name)).collect();
    let model = model.to_owned();
    std::thread::spawn(move || {
        let fail = |message: String| E::from(ReadError { model: model.clone(), message });
        for path in files {
            let reader = std::fs::File::open(&path).map_err(|e| fail(format!("`{path}`: {e}"))).and_then(|f| {
                ParquetRecordBatchReaderBuilder::try_new(f)
                    .and_then(|b| {
                        let b = match &projection {
                            Some(p) => {
                                let mask = ProjectionMask::roots(b.parquet_schema(), p.iter().copied());
                                b.with_projection(mask)
                            }
                            None => b,
                        };
                        b.with_batch_size(BATCH_ROWS).build()
                    })
                    .map_err(|e| fail(format!("`{path}`: {e}")))
            });
            let reader = match reader {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            for batch in reader {
                let batch = batch
                    .map_err(|e| fail(format!("`{path}`: {e}")))
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

/// NULLs of each of `columns` in a stage, from the Parquet statistics
/// (`None` where a file has no statistics for the column).
pub fn null_counts(stage: &StagedTable, columns: &[&str]) -> Vec<Option<u64>> {
    let mut counts: Vec<Option<u64>> = vec![Some(0); columns.len()];
    for f in &stage.manifest.files {
        let path = stage.dir.join(&f.name);
        let Ok(file) = std::fs::File::open(&path) else { return vec![None; columns.len()] };
        let Ok(reader) = SerializedFileReader::new(file) else { return vec![None; columns.len()] };
        let meta = reader.metadata();
        let schema = meta.file_metadata().schema_descr();
        for (k, column) in columns.iter().enumerate() {
            // Only flat columns have one leaf with the column's name.
            let leaf = (0..schema.num_columns()).find(|&l| schema.column(l).path().string() == *column);
            for rg in meta.row_groups() {
                let n = leaf.and_then(|l| rg.column(l).statistics()).and_then(|s| s.null_count_opt());
                counts[k] = match (counts[k], n) {
                    (Some(a), Some(b)) => Some(a + b),
                    _ => None,
                };
            }
        }
    }
    counts
}
