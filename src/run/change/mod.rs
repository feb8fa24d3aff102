//! Change detection by row hash (`change_detection:` on a `table` model
//! whose SQL reads a full extract each run).
//!
//! ferry keeps, per record key, the hash of the compared columns as of the
//! last run whose load and reconciliation succeeded
//! (`.ferry/state/hashes/<model>/`, or beside stages in an object store;
//! Parquet: the key columns and `__ferry_hash`, beside `detection.json`
//! naming the key and columns).
//! A run holds those hashes in memory by key ([`index`]), looks each
//! extract row up as it streams past, and stages three parts in that one
//! pass: the records that are new or changed (staged, through the model's
//! rules, as the model's stage, and upserted); the keys gone from the
//! extract, known once it is read (deleted, flagged or left as `deletes:`
//! says, in the same transaction); and what changes in the hashes (the new
//! and changed records' hashes, and the gone keys with none, tombstones).
//! The next hashes are the kept ones with those layered on, under the
//! run's directory (rewritten whole once layers pile up, see
//! [`stage::layer`]). They replace the kept ones only once the load and
//! reconciliation succeeded, so a failed or killed run leaves them as they
//! were and the next run finds the same changes again.
//!
//! A run that changes 1% of 6M records then reads the extract and the kept
//! hashes and writes 1% of each; the target is never read to find changes.
//! Cost grows with the extract read and the changes loaded, not with the
//! table's history.

use std::sync::Arc;

use camino::Utf8Path;
use datafusion::arrow::array::{BooleanArray, RecordBatch, new_null_array};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::manifest::config::{ChangeDetection, Deletes};
use crate::stage::{self, Root, StageError, StageOptions, StagedTable};
use crate::template::functions::quote_ident;
use crate::values::cells;

mod index;

use index::KeptIndex;

/// The column of a record's hash in the kept hashes.
pub const HASH: &str = "__ferry_hash";
const META_FILE: &str = "detection.json";

/// What the kept hashes were computed over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub key: Vec<String>,
    pub columns: Vec<String>,
    /// The types of the key and compared columns, which their hashes
    /// depend on.
    #[serde(default)]
    pub types: Vec<String>,
    pub run_id: String,
}

impl Meta {
    /// Whether hashes kept under `self` can be compared with ones computed
    /// under `other`.
    pub fn comparable(&self, other: &Meta) -> bool {
        (&self.key, &self.columns, &self.types) == (&other.key, &other.columns, &other.types)
    }

    /// The types of `key` then `columns` in `schema`, as hashed.
    pub fn types_in(schema: &Schema, key: &[String], columns: &[String]) -> Vec<String> {
        key.iter()
            .chain(columns)
            .map(|c| {
                schema.field_with_name(c).map(|f| cells::value_type(f.data_type()).to_string()).unwrap_or_default()
            })
            .collect()
    }
}

/// A model's kept hashes.
#[derive(Debug, Clone)]
pub struct Kept {
    pub table: StagedTable,
    pub meta: Meta,
}

/// Where models' hashes are kept, one stage each: `<state>/hashes/`, or,
/// with the stages in an object store, beside them under `_ferry_hashes/`,
/// where a cluster's executors read them.
pub fn hashes_root(stages: &Root, state_root: &Utf8Path) -> Root {
    match stages.stored() {
        Some(root) => Root::Stored(root.child(HASHES)),
        None => Root::Local(state_root.join("hashes")),
    }
}

/// The prefix, beside the stages in an object store, of the kept hashes.
pub const HASHES: &str = "_ferry_hashes";

/// The model's kept hashes under `root`, when there are any that check;
/// an error when the store that keeps them cannot be read (which says
/// nothing of them: building the model in full would replace its table).
pub async fn read_kept(root: &Root, model: &str) -> Result<Option<Kept>, StageError> {
    let dir = root.dir(model);
    let Some(manifest) = stage::existing(&dir).await? else { return Ok(None) };
    let table = StagedTable { dir, manifest };
    let meta = stage::read_beside(&table, META_FILE).await.and_then(|json| serde_json::from_slice(&json).ok());
    Ok(meta.map(|meta| Kept { table, meta }))
}

/// Writes what `hashes` were computed over beside them.
pub async fn write_meta(hashes: &StagedTable, meta: &Meta) -> Result<(), StageError> {
    let json = serde_json::to_vec_pretty(meta).unwrap_or_default();
    stage::write_beside(hashes, META_FILE, json).await
}

/// Replaces the model's kept hashes under `root` with a run's next ones.
pub async fn keep(root: &Root, next: &StagedTable, model: &str) -> Result<StagedTable, StageError> {
    stage::commit(root, next, model).await
}

/// What a change-detected run found.
pub use crate::state::ChangeCounts as Counts;

/// The columns of a model's rows that are compared: `columns` as
/// configured, else all but the key and the soft-delete columns.
pub fn compared_columns(cd: &ChangeDetection, schema: &Schema) -> Result<Vec<String>, String> {
    for k in &cd.key {
        if schema.field_with_name(k).is_err() {
            return Err(format!("its change detection key column `{k}` is not among its columns"));
        }
    }
    let soft: Vec<&str> = match &cd.deletes {
        Deletes::Soft { flag, at } => vec![flag, at],
        _ => Vec::new(),
    };
    match &cd.columns {
        Some(columns) => {
            if let Some(c) = columns.iter().find(|c| schema.field_with_name(c).is_err()) {
                return Err(format!("its change detection column `{c}` is not among its columns"));
            }
            Ok(columns.clone())
        }
        None => Ok(schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|c| !cd.key.contains(c) && !soft.contains(&c.as_str()))
            .collect()),
    }
}

/// `ferry_row_hash` over `columns` of `alias`.
fn hash_of(alias: &str, columns: &[String]) -> String {
    if columns.is_empty() {
        return "ferry_row_hash(NULL)".into();
    }
    let args: Vec<String> = columns.iter().map(|c| format!("{alias}.{}", quote_ident(c))).collect();
    format!("ferry_row_hash({})", args.join(", "))
}

/// The query of the hashes of every row of `table`.
pub fn hashes_sql(table: &str, key: &[String], columns: &[String]) -> String {
    let keys: Vec<String> = key.iter().map(|k| format!("__ferry_rows.{}", quote_ident(k))).collect();
    format!(
        "SELECT {}, {} AS {HASH} FROM {} AS __ferry_rows",
        keys.join(", "),
        hash_of("__ferry_rows", columns),
        quote_ident(table)
    )
}

/// The model's rows (`sql`), each with its row hash over `columns` as
/// `__ferry_new_hash`, last.
pub fn hashed_sql(sql: &str, columns: &[String]) -> String {
    format!(
        "SELECT __ferry_rows.*, {} AS __ferry_new_hash FROM ({sql}) AS __ferry_rows",
        hash_of("__ferry_rows", columns)
    )
}

/// The three outputs of a split run, staged.
pub struct Split {
    /// New and changed rows, with the extract's columns.
    pub changes: StagedTable,
    /// What changes in the kept hashes: the new and changed rows' keys
    /// with their new hash, and the gone keys with none.
    pub hashes: StagedTable,
    /// Kept keys gone from the extract.
    pub gone: StagedTable,
    pub counts: Counts,
}

/// How many bytes of the extract are read ahead, over all partitions,
/// while the kept hashes are being held; the extract's parse then runs on
/// the cores that holding them leaves idle.
const READ_AHEAD: usize = 256 << 20;

/// Compares the extract's rows (the partitions of [`hashed_sql`], whose
/// first `width` columns are the model's) with the `kept` hashes by `key`,
/// in one pass, and stages the three parts under `parents` (changes,
/// hashes, gone) as `model`. Each partition is looked up on its own
/// thread, and read ahead while the kept hashes are held.
pub async fn split(
    extract: Vec<SendableRecordBatchStream>,
    (width, key): (usize, &[String]),
    kept: &Kept,
    parents: [Root; 3],
    (model, options): (&str, StageOptions),
) -> Result<Split, StageError> {
    let Some(schema) = extract.first().map(|s| s.schema()) else {
        let source = DataFusionError::Internal("the extract has no partitions".into());
        return Err(StageError::Execute { model: model.to_owned(), source });
    };
    let fields = schema.fields();
    let key_at: Vec<usize> = key.iter().map(|k| schema.index_of(k).unwrap_or(0)).collect();
    let key_types: Vec<DataType> = key_at.iter().map(|&i| fields[i].data_type().clone()).collect();
    let started = std::time::Instant::now();

    let changes_schema = Arc::new(Schema::new(fields[..width].to_vec()));
    let key_fields: Vec<Field> = key_at.iter().map(|&i| fields[i].as_ref().clone()).collect();
    let hash_field = Field::new(HASH, fields[width].data_type().clone(), true);
    let hashes_schema = Arc::new(Schema::new([key_fields.clone(), vec![hash_field]].concat()));
    let gone_schema = Arc::new(Schema::new(key_fields));

    let (changes_tx, changes_rx) = mpsc::channel(4);
    let (hashes_tx, hashes_rx) = mpsc::channel(4);
    let (gone_tx, gone_rx) = mpsc::channel(4);
    // The index, once held; dropped unsent if it cannot be.
    let (index_tx, index_rx) = watch::channel(None);
    let ahead = READ_AHEAD / extract.len();
    let probes: Vec<_> = extract
        .into_iter()
        .map(|partition| {
            let schemas = [Arc::clone(&changes_schema), Arc::clone(&hashes_schema)];
            let (index_rx, key_at) = (index_rx.clone(), key_at.clone());
            let (changes_tx, hashes_tx) = (changes_tx.clone(), hashes_tx.clone());
            tokio::spawn(async move {
                let (mut counts, mut cursor) = (Counts::default(), index::Cursor::default());
                let Some((index, partition)) = read_ahead(partition, index_rx, ahead).await else {
                    return counts;
                };
                let mut partition = std::pin::pin!(partition);
                while let Some(batch) = partition.next().await {
                    let parts = batch.and_then(|b| {
                        let changed = index.probe(&b, (&key_at, width), &mut cursor, &mut counts)?;
                        changed_parts(&b, &changed, (width, &key_at), &schemas)
                    });
                    let (changes, hashes) = match parts {
                        Ok(parts) => parts,
                        Err(e) => {
                            let _ = changes_tx.send(Err(e)).await;
                            break;
                        }
                    };
                    // A writer that stopped has its error; the others end with it.
                    if changes_tx.send(Ok(changes)).await.is_err() || hashes_tx.send(Ok(hashes)).await.is_err() {
                        break;
                    }
                }
                let rows = counts.inserted + counts.updated + counts.unchanged;
                tracing::debug!(rows, found_in_order = cursor.found, "looked up a partition of the extract");
                counts
            })
        })
        .collect();
    drop(changes_tx);
    let streams =
        [receiver(&changes_schema, changes_rx), receiver(&hashes_schema, hashes_rx), receiver(&gone_schema, gone_rx)];
    // Once every row was looked up, the keys none looked up are gone.
    let probing = async move {
        let index = Arc::new(read_index(kept, key, &key_types, model).await?);
        let keys = kept.table.manifest.row_count;
        tracing::debug!(elapsed = ?started.elapsed(), keys, "held the kept row hashes of `{model}` by key");
        let _ = index_tx.send(Some(Arc::clone(&index)));
        let mut counts = Counts::default();
        for p in futures::future::join_all(probes).await {
            // A probe that panicked: its panic, not a stage error.
            let p = p.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
            counts.inserted += p.inserted;
            counts.updated += p.updated;
            counts.unchanged += p.unchanged;
        }
        tracing::debug!(elapsed = ?started.elapsed(), "looked up the extract of `{model}`");
        match index.gone(&key_types, 64 * 1024) {
            Ok(parts) => {
                for columns in parts {
                    let rows = columns.first().map_or(0, |c| c.len());
                    counts.deleted += rows as u64;
                    let no_hash = new_null_array(hashes_schema.field(columns.len()).data_type(), rows);
                    let gone = RecordBatch::try_new(Arc::clone(&gone_schema), columns.clone());
                    let tombstones =
                        RecordBatch::try_new(Arc::clone(&hashes_schema), [columns, vec![no_hash]].concat());
                    if gone_tx.send(gone.map_err(Into::into)).await.is_err()
                        || hashes_tx.send(tombstones.map_err(Into::into)).await.is_err()
                    {
                        break;
                    }
                }
            }
            Err(e) => {
                let _ = gone_tx.send(Err(e.into())).await;
            }
        }
        Ok(counts)
    };
    let quiet = StageOptions { rows_written: None, fast_codec: true, ..options.clone() };
    let [changes, hashes, gone] = streams;
    let [changes_at, hashes_at, gone_at] = parents;
    let writers = async {
        tokio::try_join!(
            stage::write_stage(changes_at, model, vec![changes], options),
            stage::write_stage(hashes_at, model, vec![hashes], quiet.clone()),
            stage::write_stage(gone_at, model, vec![gone], quiet),
        )
    };
    // The kept hashes that cannot be held end the run: the writers are
    // dropped with their temporary stages, and the probes stop with them.
    let ((changes, hashes, gone), counts) = tokio::try_join!(writers, probing)?;
    Ok(Split { changes, hashes, gone, counts })
}

/// Reads `partition` ahead, up to `limit` bytes, until the index arrives
/// on `held`; then the index, and the partition's batches from the
/// first. `None` when the index could not be held.
async fn read_ahead(
    partition: SendableRecordBatchStream,
    mut held: watch::Receiver<Option<Arc<KeptIndex>>>,
    limit: usize,
) -> Option<(Arc<KeptIndex>, impl futures::Stream<Item = Result<RecordBatch, DataFusionError>>)> {
    let mut partition = partition.fuse();
    let (mut ahead, mut bytes, mut ended) = (std::collections::VecDeque::new(), 0, false);
    let index = loop {
        if let Some(index) = held.borrow_and_update().clone() {
            break index;
        }
        if ended || bytes >= limit {
            held.changed().await.ok()?;
            continue;
        }
        tokio::select! {
            changed = held.changed() => changed.ok()?,
            batch = partition.next() => match batch {
                // Read no further than an error, which the lookup sends on.
                Some(Err(e)) => {
                    ahead.push_back(Err(e));
                    ended = true;
                }
                Some(Ok(batch)) => {
                    bytes += batch.get_array_memory_size();
                    ahead.push_back(Ok(batch));
                }
                None => ended = true,
            },
        }
    };
    Some((index, futures::stream::iter(ahead).chain(partition)))
}

/// The kept hashes of `kept` held by key (of the extract's `types`).
async fn read_index(kept: &Kept, key: &[String], types: &[DataType], model: &str) -> Result<KeptIndex, StageError> {
    let columns = &kept.table.manifest.columns;
    let at = |name: &str| columns.iter().position(|c| c.name == name);
    let corrupt =
        |reason: String| StageError::Corrupt { model: model.to_owned(), path: kept.table.location().into(), reason };
    let mut projection: Vec<usize> = Vec::with_capacity(key.len() + 1);
    for name in key.iter().map(String::as_str).chain([HASH]) {
        projection.push(at(name).ok_or_else(|| corrupt(format!("it has no column `{name}`")))?);
    }
    // The projected batches hold the key then the hash, whatever the order
    // of the files' columns.
    let mut order: Vec<usize> = (0..projection.len()).collect();
    order.sort_by_key(|&i| projection[i]);
    let mut rank = vec![0; order.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r;
    }
    let mut rx = stage::read::spawn::<stage::read::ReadError>(&kept.table, model, Some(projection));
    let (types, rows) = (types.to_vec(), kept.table.manifest.row_count as usize);
    tokio::task::spawn_blocking(move || {
        let mut loading = KeptIndex::loading(&types, rows).map_err(|e| e.to_string())?;
        while let Some(batch) = rx.blocking_recv() {
            let batch = batch.map_err(|e| e.message)?;
            let (key_at, hash_at) = rank.split_at(rank.len() - 1);
            loading.add(&batch, key_at, hash_at[0]).map_err(|e| e.to_string())?;
        }
        Ok(loading.index())
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    .map_err(corrupt)
}

fn receiver(schema: &SchemaRef, rx: mpsc::Receiver<Result<RecordBatch, DataFusionError>>) -> SendableRecordBatchStream {
    let rows = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    Box::pin(RecordBatchStreamAdapter::new(Arc::clone(schema), rows))
}

/// One batch of the extract's `changed` rows, and their keys with their
/// new hash.
fn changed_parts(
    batch: &RecordBatch,
    changed: &BooleanArray,
    (width, key_at): (usize, &[usize]),
    [changes_schema, hashes_schema]: &[SchemaRef; 2],
) -> Result<(RecordBatch, RecordBatch), DataFusionError> {
    let columns = |at: &mut dyn Iterator<Item = usize>| at.map(|i| Arc::clone(batch.column(i))).collect::<Vec<_>>();
    let changes = RecordBatch::try_new(Arc::clone(changes_schema), columns(&mut (0..width)))?;
    let hashes = RecordBatch::try_new(Arc::clone(hashes_schema), columns(&mut key_at.iter().copied().chain([width])))?;
    Ok((filter_record_batch(&changes, changed)?, filter_record_batch(&hashes, changed)?))
}

/// The query of the next kept hashes in full: the `kept` ones but those
/// of the keys `increment` holds, then the increment's, with no
/// tombstones (keys without a hash).
pub fn merged_sql(kept: &str, increment: &str, key: &[String]) -> String {
    let keys: Vec<String> = key.iter().map(|k| quote_ident(k)).collect();
    let on: Vec<String> = keys.iter().map(|k| format!("__ferry_i.{k} = __ferry_k.{k}")).collect();
    let list = |alias: &str| keys.iter().map(|k| format!("{alias}.{k}, ")).collect::<String>();
    format!(
        "SELECT {k}__ferry_k.{HASH} FROM {kept} AS __ferry_k WHERE __ferry_k.{HASH} IS NOT NULL \
         AND NOT EXISTS (SELECT 1 FROM {inc} AS __ferry_i WHERE {on}) \
         UNION ALL SELECT {i}__ferry_i.{HASH} FROM {inc} AS __ferry_i WHERE __ferry_i.{HASH} IS NOT NULL",
        k = list("__ferry_k"),
        i = list("__ferry_i"),
        kept = quote_ident(kept),
        inc = quote_ident(increment),
        on = on.join(" AND "),
    )
}

/// The increment of the hashes (`hashes`) of a run in which some changed
/// rows were not staged (quarantined, or dropped as duplicates): those
/// keep their kept hash (or, new, get none), so the next run finds them
/// again. `changes`: the rows found changed; `staged`: those staged;
/// `kept`: the kept hashes.
pub fn corrected_sql(hashes: &str, (changes, staged, kept): (&str, &str, &str), key: &[String]) -> String {
    let keys: Vec<String> = key.iter().map(|k| quote_ident(k)).collect();
    let on = |a: &str, b: &str| keys.iter().map(|k| format!("{a}.{k} = {b}.{k}")).collect::<Vec<_>>().join(" AND ");
    let list = keys.join(", ");
    let out: Vec<String> = keys.iter().map(|k| format!("__ferry_h.{k}")).collect();
    format!(
        "SELECT {out}, CASE WHEN __ferry_l.__ferry_left_out THEN __ferry_k.{HASH} ELSE __ferry_h.{HASH} END AS {HASH} \
         FROM {h} AS __ferry_h \
         LEFT JOIN (SELECT {list}, true AS __ferry_left_out FROM \
           (SELECT {list} FROM {c} EXCEPT SELECT {list} FROM {s}) AS __ferry_x) AS __ferry_l ON {hl} \
         LEFT JOIN {k} AS __ferry_k ON {hk} \
         WHERE NOT (coalesce(__ferry_l.__ferry_left_out, false) AND __ferry_k.{HASH} IS NULL)",
        out = out.join(", "),
        h = quote_ident(hashes),
        c = quote_ident(changes),
        s = quote_ident(staged),
        k = quote_ident(kept),
        hl = on("__ferry_h", "__ferry_l"),
        hk = on("__ferry_h", "__ferry_k"),
    )
}
