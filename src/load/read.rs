//! Reading a stage's Parquet files back as canonical batches, on a thread
//! of their own, so decoding overlaps with sending rows to the target.

use camino::Utf8PathBuf;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
use tokio::sync::mpsc;

use super::{LoadError, LoadJob, cells};

/// Batches in flight between the reader and the loader.
const CHANNEL_DEPTH: usize = 4;
/// Rows per batch read back.
const BATCH_ROWS: usize = 16 * 1024;

/// Starts reading `job`'s stage; batches (normalized, see
/// [`cells::normalize`]) arrive on the receiver in file order. The reader
/// stops when the receiver is dropped.
pub fn spawn(job: &LoadJob) -> mpsc::Receiver<Result<RecordBatch, LoadError>> {
    spawn_with(job, Ok)
}

/// [`spawn`], with `each` applied to every batch on the reading thread (to
/// encode rows for the wire while the loader sends the previous ones).
pub fn spawn_with<T: Send + 'static>(
    job: &LoadJob,
    mut each: impl FnMut(RecordBatch) -> Result<T, LoadError> + Send + 'static,
) -> mpsc::Receiver<Result<T, LoadError>> {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let files: Vec<Utf8PathBuf> = job.stage.files.iter().map(|f| job.stage_dir.join(&f.name)).collect();
    let model = job.model.clone();
    let projection = job.read_columns.clone();
    std::thread::spawn(move || {
        let fail = |message: String| LoadError::Read { model: model.clone(), message };
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

/// NULLs per column of a stage, from the Parquet statistics (`None` where a
/// file has no statistics for the column).
pub fn null_counts(job: &LoadJob) -> Vec<Option<u64>> {
    let mut counts: Vec<Option<u64>> = vec![Some(0); job.columns.len()];
    for f in &job.stage.files {
        let path = job.stage_dir.join(&f.name);
        let Ok(file) = std::fs::File::open(&path) else { return vec![None; job.columns.len()] };
        let Ok(reader) = SerializedFileReader::new(file) else { return vec![None; job.columns.len()] };
        let meta = reader.metadata();
        let schema = meta.file_metadata().schema_descr();
        for (k, column) in job.columns.iter().enumerate() {
            // Only flat columns have one leaf with the column's name.
            let leaf = (0..schema.num_columns()).find(|&l| schema.column(l).path().string() == column.name);
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
