//! Dedup (`dedupe: {key, keep: {order_by}}`): keeps one row per key among
//! the rows that pass every `error` rule, and names the row kept for each
//! row dropped.
//!
//! Repeated keys are rare, so nothing is sorted. Each partition of the
//! checked query is read whole, its rows' key hashes noted and its batches
//! kept (in memory while the engine's pool allows, else spilled to Arrow IPC
//! files in the spill directory). Then the hashes that occur more than once
//! are found; only the rows carrying one of them are compared, by their
//! actual keys (a hash collision is not a duplicate), and the first of each
//! key by `keep.order_by`, then by a hash of the whole row (ties left are
//! identical rows), is kept. The batches stream on, one output partition
//! per input partition, with the model's columns, the rule flags and
//! `__ferry_kept`: the kept row's text on every dropped row, NULL elsewhere.
//! Quarantine, logging and counting are the splitter's business.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringBuilder, UInt32Array, make_comparator, new_null_array,
};
use datafusion::arrow::compute::{SortOptions, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::hash_utils::{RandomState, create_hashes};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{FutureExt as _, StreamExt as _};

use super::rules::{HARD_COLUMN, order_column};
use crate::manifest::config::Dedupe;

/// The column the splitter reads: the kept row's text on a dropped row.
pub const KEPT_COLUMN: &str = "__ferry_kept";

/// Where the dedup columns are in the checked query's rows.
#[derive(Debug, Clone)]
struct Layout {
    /// The model's columns and the rule flags: what passes on.
    width: usize,
    /// The model's own columns (hashed to break ties, shown in the log).
    model: usize,
    key: Vec<usize>,
    hard: usize,
    order: Vec<(usize, SortOptions)>,
}

impl Layout {
    fn new(schema: &Schema, dedupe: &Dedupe, rules: usize) -> Result<Self> {
        let order = dedupe
            .order_by
            .iter()
            .enumerate()
            .map(|(k, o)| {
                let options = SortOptions { descending: o.descending, nulls_first: o.nulls_first };
                Ok((schema.index_of(&order_column(k))?, options))
            })
            .collect::<Result<Vec<_>>>()?;
        let hard = schema.index_of(HARD_COLUMN)?;
        let key = dedupe.key.iter().map(|k| Ok(schema.index_of(k)?)).collect::<Result<Vec<_>>>()?;
        Ok(Layout { width: hard, model: hard - rules, key, hard, order })
    }
}

/// Deduplicates the checked query's `partitions` (see [`super::rules::checked_sql`];
/// `rules` flags follow the model's columns). Reading starts at once, on a
/// task of its own, and stops if every output stream is dropped.
pub fn dedupe(
    partitions: Vec<SendableRecordBatchStream>,
    dedupe: &Dedupe,
    rules: usize,
    runtime: Arc<RuntimeEnv>,
) -> Result<Vec<SendableRecordBatchStream>> {
    let Some(first) = partitions.first() else { return Ok(Vec::new()) };
    let layout = Layout::new(&first.schema(), dedupe, rules)?;
    let input = first.schema();
    let mut fields: Vec<Arc<Field>> = input.fields()[..layout.width].to_vec();
    fields.push(Arc::new(Field::new(KEPT_COLUMN, DataType::Utf8, true)));
    let output: SchemaRef = Arc::new(Schema::new(fields));
    let n = partitions.len();
    let task = tokio::spawn(collect(partitions, layout, runtime));
    let abort = Arc::new(AbortOnDrop(task.abort_handle()));
    let done = task
        .map(|joined| match joined {
            Ok(Ok(c)) => Ok(Arc::new(c)),
            Ok(Err(e)) => Err(Arc::new(e)),
            Err(e) => Err(Arc::new(DataFusionError::External(Box::new(e)))),
        })
        .shared();
    Ok((0..n)
        .map(|p| {
            let (done, abort, schema) = (done.clone(), Arc::clone(&abort), Arc::clone(&output));
            let rows = futures::stream::once(done).flat_map(move |collected| {
                let _keep_running = &abort;
                match collected {
                    Ok(c) => c.emit(p, Arc::clone(&schema)),
                    Err(e) => futures::stream::once(async move { Err(DataFusionError::Shared(e)) }).boxed(),
                }
            });
            Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&output), rows)) as SendableRecordBatchStream
        })
        .collect())
}

/// Aborts the collecting task when the last output stream is dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One input partition, read whole.
struct Partition {
    batches: Vec<Kept>,
    /// Each batch's key hashes, row by row.
    hashes: Vec<Vec<u64>>,
    /// Each batch's rows that break an `error` rule (they never compete).
    hard: Vec<BooleanArray>,
    /// Where batches went that the memory pool had no room for.
    spill: Option<Arc<dyn datafusion::execution::SpillFile>>,
    /// The memory the batches kept in memory and the hashes hold.
    reservation: MemoryReservation,
}

enum Kept {
    Memory(RecordBatch),
    /// The batch's position in the partition's spill file.
    Spilled(usize),
    /// Emitted, and its memory given back.
    Emitted,
}

impl Partition {
    /// Gives back the memory of what only finding the duplicates needed:
    /// the key hashes and the `error` rule flags.
    fn forget_hashes(&mut self) {
        let hashes: usize = self.hashes.iter().map(Vec::len).sum();
        self.reservation.shrink((hashes * 8).min(self.reservation.size()));
        self.hashes = Vec::new();
        self.hard = Vec::new();
    }

    /// Batch `b`, handed over for emitting: one kept in memory leaves the
    /// partition, and its memory the reservation, so that what runs
    /// downstream (the stage's writers) takes the room it frees.
    fn take_batch(&mut self, b: usize) -> Result<RecordBatch> {
        match std::mem::replace(&mut self.batches[b], Kept::Emitted) {
            Kept::Memory(batch) => {
                self.reservation.shrink(batch.get_array_memory_size().min(self.reservation.size()));
                Ok(batch)
            }
            kept => {
                self.batches[b] = kept;
                batch_of(self, b)
            }
        }
    }
}

/// A partition's spill file while it is written.
struct Spill {
    file: Arc<dyn datafusion::execution::SpillFile>,
    writer: datafusion::arrow::ipc::writer::FileWriter<Box<dyn datafusion::execution::SpillWriter>>,
    written: usize,
}

/// One partition's dropped rows: by batch, each row with the text of the
/// row kept instead.
type Dropped = HashMap<usize, Vec<(usize, String)>>;

/// Every partition read, with the dropped rows found; each partition's
/// part is taken by the stream that emits it.
struct Collected {
    partitions: Vec<Mutex<Option<(Partition, Dropped)>>>,
    layout: Layout,
}

async fn collect(
    partitions: Vec<SendableRecordBatchStream>,
    layout: Layout,
    runtime: Arc<RuntimeEnv>,
) -> Result<Collected> {
    let mut readers = tokio::task::JoinSet::new();
    for (p, stream) in partitions.into_iter().enumerate() {
        let (layout, runtime) = (layout.clone(), Arc::clone(&runtime));
        readers.spawn(async move { (p, read_partition(p, stream, &layout, &runtime).await) });
    }
    let mut read: Vec<Option<Partition>> = std::iter::repeat_with(|| None).take(readers.len()).collect();
    while let Some(joined) = readers.join_next().await {
        let (p, partition) = joined.map_err(|e| DataFusionError::External(Box::new(e)))?;
        read[p] = Some(partition?);
    }
    let read: Vec<Partition> = read.into_iter().flatten().collect();
    let found = layout.clone();
    let (read, dropped) = tokio::task::spawn_blocking(move || {
        let dropped = find_dropped(&read, &found);
        (read, dropped)
    })
    .await
    .map_err(|e| DataFusionError::External(Box::new(e)))?;
    let partitions = read.into_iter().zip(dropped?).map(|part| Mutex::new(Some(part))).collect();
    Ok(Collected { partitions, layout })
}

async fn read_partition(
    p: usize,
    mut stream: SendableRecordBatchStream,
    layout: &Layout,
    runtime: &Arc<RuntimeEnv>,
) -> Result<Partition> {
    let reservation = MemoryConsumer::new(format!("dedupe[{p}]")).with_can_spill(true).register(&runtime.memory_pool);
    let mut part = Partition { batches: Vec::new(), hashes: Vec::new(), hard: Vec::new(), spill: None, reservation };
    let mut spilling: Option<Spill> = None;
    let state = RandomState::with_seed(0x00de_d09e);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let keys: Vec<ArrayRef> = layout.key.iter().map(|&k| Arc::clone(batch.column(k))).collect();
        let mut hashes = vec![0u64; batch.num_rows()];
        create_hashes(&keys, &state, &mut hashes)?;
        part.reservation.grow(hashes.len() * 8);
        let hard = batch.column(layout.hard).as_boolean();
        part.hard.push(if hard.null_count() == 0 {
            hard.clone()
        } else {
            hard.iter().map(|v| Some(v == Some(true))).collect()
        });
        part.hashes.push(hashes);
        let kept = if part.reservation.try_grow(batch.get_array_memory_size()).is_ok() {
            Kept::Memory(batch)
        } else {
            // Written where it is, as DataFusion's own sorts spill.
            Kept::Spilled(spill(&mut spilling, &batch, runtime)?)
        };
        part.batches.push(kept);
    }
    if let Some(Spill { file, mut writer, .. }) = spilling {
        writer.finish()?;
        writer.into_inner()?.finish()?;
        part.spill = Some(file);
    }
    Ok(part)
}

/// Writes `batch` to the partition's spill file; its position there.
fn spill(spill: &mut Option<Spill>, batch: &RecordBatch, runtime: &Arc<RuntimeEnv>) -> Result<usize> {
    if spill.is_none() {
        let file = runtime.disk_manager.create_tmp_file("dedupe")?;
        let writer = datafusion::arrow::ipc::writer::FileWriter::try_new(file.open_writer()?, &batch.schema())?;
        *spill = Some(Spill { file, writer, written: 0 });
    }
    let s = spill.as_mut().expect("opened above");
    s.writer.write(batch)?;
    s.written += 1;
    Ok(s.written - 1)
}

/// Batch `b` of `part`, read back from the spill file if it went there.
fn batch_of(part: &Partition, b: usize) -> Result<RecordBatch> {
    match &part.batches[b] {
        Kept::Memory(batch) => Ok(batch.clone()),
        Kept::Emitted => Err(DataFusionError::Internal("a dedupe batch was emitted twice".into())),
        Kept::Spilled(at) => {
            let spill = part.spill.as_ref().ok_or_else(|| DataFusionError::Internal("no spill file".into()))?;
            let path = spill.path().ok_or_else(|| DataFusionError::Internal("the spill file has no path".into()))?;
            let file = fs_err::File::open(path).map_err(DataFusionError::IoError)?;
            let mut reader = datafusion::arrow::ipc::reader::FileReader::try_new(file, None)?;
            reader.set_index(*at)?;
            reader
                .next()
                .ok_or_else(|| DataFusionError::Internal("a spilled batch is missing".into()))?
                .map_err(Into::into)
        }
    }
}

/// One row that shares its key hash with another passing row.
struct Candidate {
    partition: usize,
    batch: usize,
    row: usize,
    /// The candidate rows of its batch, copied out of it (one batch for
    /// them all: a batch per row would cost more than the rows).
    values: Arc<RecordBatch>,
    /// This row's place in `values`.
    at: usize,
}

/// Finds the rows to drop: per partition and batch, the rows and the text
/// of the row kept for each.
fn find_dropped(parts: &[Partition], layout: &Layout) -> Result<Vec<Dropped>> {
    let repeated = repeated_hashes(parts);
    let mut dropped: Vec<Dropped> = vec![HashMap::new(); parts.len()];
    if repeated.is_empty() {
        return Ok(dropped);
    }
    let mut groups: HashMap<u64, Vec<Candidate>> = HashMap::new();
    for (p, part) in parts.iter().enumerate() {
        for (b, (hashes, hard)) in part.hashes.iter().zip(&part.hard).enumerate() {
            let rows: Vec<u32> = (0..hashes.len())
                .filter(|&i| !hard.value(i) && repeated.contains(&hashes[i]))
                .map(|i| u32::try_from(i).expect("a batch holds fewer than 2^32 rows"))
                .collect();
            if rows.is_empty() {
                continue;
            }
            let batch = batch_of(part, b)?;
            let values = Arc::new(compact(take_record_batch(&batch, &UInt32Array::from(rows.clone()))?)?);
            for (at, &i) in rows.iter().enumerate() {
                groups.entry(hashes[i as usize]).or_default().push(Candidate {
                    partition: p,
                    batch: b,
                    row: i as usize,
                    values: Arc::clone(&values),
                    at,
                });
            }
        }
    }
    for candidates in groups.into_values() {
        for same_key in split_by_key(candidates, &layout.key)? {
            if same_key.len() < 2 {
                continue;
            }
            let winner = first_in_order(&same_key, layout)?;
            let kept = &same_key[winner];
            let text =
                super::quarantine::row_text(&kept.values.project(&(0..layout.model).collect::<Vec<_>>())?, kept.at)?;
            for (_, c) in same_key.iter().enumerate().filter(|(k, _)| *k != winner) {
                dropped[c.partition].entry(c.batch).or_default().push((c.row, text.clone()));
            }
        }
    }
    Ok(dropped)
}

/// The batch with its string and binary views copied out of the buffers
/// they share with the batch they were taken from: a one-row candidate
/// would otherwise keep its whole source batch alive, and with a candidate
/// in most batches, the whole model in memory past `--memory-limit`.
fn compact(batch: RecordBatch) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Utf8View => Arc::new(c.as_string_view().gc()) as ArrayRef,
            DataType::BinaryView => Arc::new(c.as_binary_view().gc()) as ArrayRef,
            _ => Arc::clone(c),
        })
        .collect();
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// The key hashes that more than one passing row carries. Found a
/// sixteenth of the hash space at a time (by the top four bits), so the
/// sorted copy of the hashes is a sixteenth of the rows, not all of them.
fn repeated_hashes(parts: &[Partition]) -> HashSet<u64> {
    const BUCKET_BITS: u32 = 4;
    let mut repeated = HashSet::new();
    let mut passing: Vec<u64> = Vec::new();
    for bucket in 0..1u64 << BUCKET_BITS {
        passing.clear();
        for part in parts {
            for (hashes, hard) in part.hashes.iter().zip(&part.hard) {
                passing.extend(
                    hashes
                        .iter()
                        .zip(hard.iter())
                        .filter(|(x, h)| *h != Some(true) && **x >> (64 - BUCKET_BITS) == bucket)
                        .map(|(x, _)| *x),
                );
            }
        }
        passing.sort_unstable();
        repeated.extend(passing.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]));
    }
    repeated
}

/// Splits rows that share a key hash into groups of equal keys (NULLs
/// equal, as `IS NOT DISTINCT FROM`).
fn split_by_key(candidates: Vec<Candidate>, key: &[usize]) -> Result<Vec<Vec<Candidate>>> {
    let mut groups: Vec<Vec<Candidate>> = Vec::new();
    'rows: for c in candidates {
        for g in &mut groups {
            if same(&g[0], &c, key)? {
                g.push(c);
                continue 'rows;
            }
        }
        groups.push(vec![c]);
    }
    Ok(groups)
}

/// Whether rows `a` and `b` agree on `columns`.
fn same(a: &Candidate, b: &Candidate, columns: &[usize]) -> Result<bool> {
    for &k in columns {
        let compare =
            make_comparator(a.values.column(k).as_ref(), b.values.column(k).as_ref(), SortOptions::default())?;
        if !compare(a.at, b.at).is_eq() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The index of the row kept: first by `keep.order_by`, then by the hash
/// of the model's columns (ties left are identical rows).
fn first_in_order(rows: &[Candidate], layout: &Layout) -> Result<usize> {
    let state = RandomState::with_seed(0x5eed);
    let tie = |c: &Candidate| -> Result<u64> {
        let mut h = [0u64];
        let row = c.values.slice(c.at, 1);
        create_hashes(&row.columns()[..layout.model], &state, &mut h)?;
        Ok(h[0])
    };
    let mut best = 0;
    for k in 1..rows.len() {
        let (a, b) = (&rows[k], &rows[best]);
        let mut order = std::cmp::Ordering::Equal;
        for &(col, options) in &layout.order {
            order = make_comparator(a.values.column(col).as_ref(), b.values.column(col).as_ref(), options)?(a.at, b.at);
            if order.is_ne() {
                break;
            }
        }
        if order.is_eq() {
            order = tie(&rows[k])?.cmp(&tie(&rows[best])?);
        }
        if order.is_lt() {
            best = k;
        }
    }
    Ok(best)
}

impl Collected {
    /// Partition `p`'s batches, each with its `__ferry_kept` column.
    fn emit(&self, p: usize, schema: SchemaRef) -> futures::stream::BoxStream<'static, Result<RecordBatch>> {
        let Some((mut part, dropped)) =
            self.partitions[p].lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
        else {
            return futures::stream::empty().boxed();
        };
        part.forget_hashes();
        let width = self.layout.width;
        futures::stream::iter(0..part.batches.len())
            .map(move |b| {
                let batch = part.take_batch(b)?;
                let mut columns: Vec<ArrayRef> = batch.columns()[..width].to_vec();
                columns.push(match dropped.get(&b) {
                    None => new_null_array(&DataType::Utf8, batch.num_rows()),
                    Some(rows) => {
                        let mut text: Vec<Option<&str>> = vec![None; batch.num_rows()];
                        for (i, kept) in rows {
                            text[*i] = Some(kept.as_str());
                        }
                        let mut builder = StringBuilder::new();
                        builder.extend(text);
                        Arc::new(builder.finish())
                    }
                });
                Ok(RecordBatch::try_new(Arc::clone(&schema), columns)?)
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::config::OrderItem;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool as _};
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::physical_plan::memory::MemoryStream;
    use futures::TryStreamExt as _;

    /// Rows of the checked query's shape: model columns `k`, `v`, `note`,
    /// one rule flag, `__ferry_hard`, one `keep.order_by` value.
    fn batch(rows: &[(Option<i64>, i64, &str, bool)]) -> RecordBatch {
        let hard = BooleanArray::from(rows.iter().map(|r| r.3).collect::<Vec<_>>());
        RecordBatch::try_from_iter([
            ("k", Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())) as ArrayRef),
            ("v", Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())) as ArrayRef),
            ("note", Arc::new(StringArray::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())) as ArrayRef),
            ("__ferry_rule_0", Arc::new(hard.clone()) as ArrayRef),
            (HARD_COLUMN, Arc::new(hard) as ArrayRef),
            (
                order_column(0).as_str(),
                Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    fn spec() -> Dedupe {
        Dedupe {
            key: vec!["k".into()],
            order_by: vec![OrderItem { expr: "v".into(), descending: true, nulls_first: true }],
        }
    }

    /// Runs `dedupe` over `partitions` and returns, sorted, each output row
    /// as `k v note -> kept`.
    async fn run(partitions: Vec<Vec<RecordBatch>>, runtime: Arc<RuntimeEnv>) -> Vec<String> {
        let schema = partitions[0][0].schema();
        let streams: Vec<SendableRecordBatchStream> = partitions
            .into_iter()
            .map(|p| {
                Box::pin(MemoryStream::try_new(p, Arc::clone(&schema), None).unwrap()) as SendableRecordBatchStream
            })
            .collect();
        let mut out = Vec::new();
        for s in dedupe(streams, &spec(), 1, runtime).unwrap() {
            for b in s.try_collect::<Vec<_>>().await.unwrap() {
                assert_eq!(b.num_columns(), 5, "model columns, the rule's flag, then the kept text");
                let (k, v) = (
                    b.column(0).as_primitive::<datafusion::arrow::datatypes::Int64Type>(),
                    b.column(1).as_primitive::<datafusion::arrow::datatypes::Int64Type>(),
                );
                let (note, kept) = (b.column(2).as_string::<i32>(), b.column(4).as_string::<i32>());
                for i in 0..b.num_rows() {
                    let k = if k.is_null(i) { "NULL".to_owned() } else { k.value(i).to_string() };
                    out.push(format!(
                        "{k} {} {} -> {}",
                        v.value(i),
                        note.value(i),
                        kept.iter().nth(i).flatten().unwrap_or("-")
                    ));
                }
            }
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn keeps_the_first_row_of_each_key_across_partitions_and_spills() {
        let partitions = vec![
            vec![
                batch(&[(Some(1), 10, "a", false), (Some(2), 5, "b", false), (None, 1, "n1", false)]),
                batch(&[(Some(1), 30, "c", true), (Some(3), 7, "same", false)]),
            ],
            vec![batch(&[(Some(1), 20, "d", false), (None, 2, "n2", false), (Some(3), 7, "same", false)])],
        ];
        let expected = [
            "1 10 a -> k=1, v=20, note=d",
            "1 20 d -> -",
            // Breaks an error rule: never competes, never dropped (the splitter quarantines it).
            "1 30 c -> -",
            "2 5 b -> -",
            "3 7 same -> -",
            "3 7 same -> k=3, v=7, note=same",
            "NULL 1 n1 -> k=NULL, v=2, note=n2",
            "NULL 2 n2 -> -",
        ];
        let roomy = RuntimeEnvBuilder::new().build_arc().unwrap();
        assert_eq!(run(partitions.clone(), roomy).await, expected);
        // No memory at all: every batch goes through the spill files.
        let spill_dir = tempfile::tempdir().unwrap();
        let tight = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(1)))
            .with_disk_manager_builder(datafusion::execution::disk_manager::DiskManagerBuilder::default().with_mode(
                datafusion::execution::disk_manager::DiskManagerMode::Directories(vec![spill_dir.path().into()]),
            ))
            .build_arc()
            .unwrap();
        assert_eq!(run(partitions, tight).await, expected);
    }

    /// Emitting hands each batch over with its memory: the pool's
    /// reservation shrinks batch by batch (the hashes go first), so the
    /// stage's writers downstream find the room dedup held.
    #[tokio::test]
    async fn emitting_gives_back_the_memory_batch_by_batch() {
        let pool = Arc::new(GreedyMemoryPool::new(usize::MAX / 2));
        let runtime = RuntimeEnvBuilder::new().with_memory_pool(Arc::clone(&pool) as _).build_arc().unwrap();
        let batches: Vec<RecordBatch> =
            (0..4).map(|i| batch(&[(Some(i), 1, "a", false), (Some(i % 2), 2, "b", false)])).collect();
        let schema = batches[0].schema();
        let stream = Box::pin(MemoryStream::try_new(batches, schema, None).unwrap()) as SendableRecordBatchStream;
        let mut out = dedupe(vec![stream], &spec(), 1, runtime).unwrap().pop().unwrap();
        let mut reserved = Vec::new();
        while let Some(b) = out.next().await {
            b.unwrap();
            reserved.push(pool.reserved());
        }
        assert_eq!(reserved.len(), 4);
        assert!(reserved.windows(2).all(|w| w[0] > w[1]), "{reserved:?}");
        assert_eq!(reserved[3], 0, "every batch and hash given back once emitted: {reserved:?}");
    }

    /// A one-row candidate taken from a batch of string views holds its
    /// own row, not the whole batch's text.
    #[test]
    fn candidates_do_not_keep_their_batch_alive() {
        use datafusion::arrow::array::StringViewArray;
        let long: Vec<String> = (0..10_000).map(|i| format!("{i:0>100}")).collect();
        let views = StringViewArray::from_iter_values(long.iter());
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8View, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(views)]).unwrap();
        let taken = take_record_batch(&batch, &UInt32Array::from(vec![7])).unwrap();
        assert!(taken.get_array_memory_size() > 1_000_000, "take shares the batch's buffers");
        let own = compact(taken).unwrap();
        assert!(own.get_array_memory_size() < 10_000, "{}", own.get_array_memory_size());
        assert_eq!(own.column(0).as_string_view().value(0), long[7]);
    }

    #[test]
    fn a_shared_hash_is_split_by_the_actual_keys() {
        let b = batch(&[
            (Some(1), 1, "x", false),
            (Some(2), 1, "y", false),
            (Some(1), 2, "z", false),
            (None, 1, "w", false),
        ]);
        let b = Arc::new(b);
        let candidates =
            (0..4).map(|i| Candidate { partition: 0, batch: 0, row: i, values: Arc::clone(&b), at: i }).collect();
        let groups = split_by_key(candidates, &[0]).unwrap();
        let rows: Vec<Vec<usize>> = groups.iter().map(|g| g.iter().map(|c| c.row).collect()).collect();
        assert_eq!(rows, [vec![0, 2], vec![1], vec![3]]);
    }

    #[test]
    fn ties_in_keep_order_are_broken_by_the_rows_values_not_their_arrival() {
        let layout = Layout::new(&batch(&[]).schema(), &spec(), 1).unwrap();
        let b = batch(&[(Some(1), 5, "p", false), (Some(1), 5, "q", false), (Some(1), 4, "r", false)]);
        let b = Arc::new(b);
        let rows = |order: &[usize]| -> Vec<Candidate> {
            order.iter().map(|&i| Candidate { partition: 0, batch: 0, row: i, values: Arc::clone(&b), at: i }).collect()
        };
        let forward = rows(&[0, 1, 2]);
        let backward = rows(&[2, 1, 0]);
        let won = |rows: &[Candidate]| rows[first_in_order(rows, &layout).unwrap()].row;
        assert_eq!(won(&forward), won(&backward));
        assert_ne!(won(&forward), 2, "v = 5 beats v = 4 (descending)");
    }
}
