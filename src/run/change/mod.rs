//! Change detection by row hash (`change_detection:` on a `table` model
//! whose SQL reads a full extract each run).
//!
//! ferry keeps, per record key, the hash of the compared columns as of the
//! last run whose load and reconciliation succeeded
//! (`.ferry/state/hashes/<model>/`, or beside stages in an object store;
//! Parquet: the key columns and `__ferry_hash`, beside `detection.json`
//! naming the key and columns).
//! A run joins the extract with those hashes in one pass and splits the
//! result three ways: the records that are new or changed (staged, through
//! the model's rules, as the model's stage, and upserted), the keys gone
//! from the extract (deleted, flagged or left as `deletes:` says, in the
//! same transaction), and the next hashes of every record read, written
//! under the run's directory. Those replace the kept ones only once the
//! load and reconciliation succeeded, so a failed or killed run leaves
//! them as they were and the next run finds the same changes again.
//!
//! The target is never read to find changes: cost grows with the extract
//! read and the changes loaded, not with the table's history.

use std::sync::Arc;

use camino::Utf8Path;
use datafusion::arrow::array::{BooleanArray, RecordBatch};
use datafusion::arrow::compute::{filter_record_batch, kernels::cmp::distinct, not};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::manifest::config::{ChangeDetection, Deletes};
use crate::stage::{self, Root, StageError, StageOptions, StagedTable};
use crate::template::functions::quote_ident;
use crate::values::cells;

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

/// The model's rows (`sql`) joined with its kept hashes (`kept`): each
/// row of the extract with its new and its kept hash, and each kept key
/// the extract lacks (its new hash NULL). The kept hashes, the smaller side, come first, so
/// the join builds its table from them and streams the extract.
pub fn joined_sql(sql: &str, kept: &str, key: &[String], columns: &[String]) -> String {
    let on: Vec<String> =
        key.iter().map(|k| quote_ident(k)).map(|k| format!("__ferry_extract.{k} = __ferry_kept.{k}")).collect();
    let kept_keys: Vec<String> = key
        .iter()
        .enumerate()
        .map(|(n, k)| format!("__ferry_kept.{} AS __ferry_kept_key_{n}", quote_ident(k)))
        .collect();
    format!(
        "SELECT __ferry_extract.*, __ferry_kept.{HASH} AS __ferry_kept_hash, {} \
         FROM {} AS __ferry_kept FULL OUTER JOIN \
         (SELECT __ferry_rows.*, {} AS __ferry_new_hash FROM ({sql}) AS __ferry_rows) AS __ferry_extract ON {}",
        kept_keys.join(", "),
        quote_ident(kept),
        hash_of("__ferry_rows", columns),
        on.join(" AND ")
    )
}

/// The three outputs of a split run, staged.
pub struct Split {
    /// New and changed rows, with the extract's columns.
    pub changes: StagedTable,
    /// Every extract row's key, new hash and kept hash.
    pub hashes: StagedTable,
    /// Kept keys gone from the extract.
    pub gone: StagedTable,
    pub counts: Counts,
}

/// Runs `joined` (from [`joined_sql`], whose first `width` columns are the
/// extract's) and stages its three parts under `parents` (changes, hashes,
/// gone) as `model`, in one pass.
pub async fn split(
    joined: SendableRecordBatchStream,
    (width, key): (usize, &[String]),
    parents: [Root; 3],
    model: &str,
    options: StageOptions,
) -> Result<Split, StageError> {
    let schema = joined.schema();
    let fields = schema.fields();
    let key_at: Vec<usize> = key.iter().map(|k| schema.index_of(k).unwrap_or(0)).collect();
    let changes_schema = Arc::new(Schema::new(fields[..width].to_vec()));
    let mut hash_fields: Vec<Field> = key_at.iter().map(|&i| fields[i].as_ref().clone()).collect();
    hash_fields.push(Field::new(HASH, fields[width].data_type().clone(), true));
    let hashes_schema = Arc::new(Schema::new(hash_fields));
    let gone_fields: Vec<Field> =
        key.iter().enumerate().map(|(n, k)| fields[width + 2 + n].as_ref().clone().with_name(k)).collect();
    let gone_schema = Arc::new(Schema::new(gone_fields));

    let schemas = (Arc::clone(&changes_schema), Arc::clone(&hashes_schema), Arc::clone(&gone_schema));
    let key_at = key_at.clone();
    let (changes_tx, changes_rx) = mpsc::channel(4);
    let (hashes_tx, hashes_rx) = mpsc::channel(4);
    let (gone_tx, gone_rx) = mpsc::channel(4);
    let writers = async {
        let opts = StageOptions { rows_written: None, fast_codec: true, ..options.clone() };
        tokio::try_join!(
            stage::write_stage(parents[0].clone(), model, vec![receiver(&changes_schema, changes_rx)], options.clone()),
            stage::write_stage(parents[1].clone(), model, vec![receiver(&hashes_schema, hashes_rx)], opts.clone()),
            stage::write_stage(parents[2].clone(), model, vec![receiver(&gone_schema, gone_rx)], opts),
        )
    };
    let splitting = async move {
        let mut joined = joined;
        let mut counts = Counts::default();
        while let Some(batch) = joined.next().await {
            let parts = batch
                .and_then(|b| split_batch(&b, (width, &key_at), [&schemas.0, &schemas.1, &schemas.2], &mut counts));
            let (changes, hashes, gone) = match parts {
                Ok(parts) => parts,
                Err(e) => {
                    let _ = changes_tx.send(Err(e)).await;
                    return counts;
                }
            };
            // A writer that stopped has its error; the others end with it.
            if changes_tx.send(Ok(changes)).await.is_err()
                || hashes_tx.send(Ok(hashes)).await.is_err()
                || gone_tx.send(Ok(gone)).await.is_err()
            {
                break;
            }
        }
        counts
    };
    let (written, counts) = tokio::join!(writers, splitting);
    let (changes, hashes, gone) = written?;
    Ok(Split { changes, hashes, gone, counts })
}

fn receiver(schema: &SchemaRef, rx: mpsc::Receiver<Result<RecordBatch, DataFusionError>>) -> SendableRecordBatchStream {
    let rows = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    Box::pin(RecordBatchStreamAdapter::new(Arc::clone(schema), rows))
}

/// One batch of the joined rows, split.
fn split_batch(
    batch: &RecordBatch,
    (width, key_at): (usize, &[usize]),
    [changes_schema, hashes_schema, gone_schema]: [&SchemaRef; 3],
    counts: &mut Counts,
) -> Result<(RecordBatch, RecordBatch, RecordBatch), DataFusionError> {
    let (new_hash, kept_hash) = (batch.column(width), batch.column(width + 1));
    // An extract row always has a hash; a kept key alone has none.
    let read = datafusion::arrow::compute::is_not_null(new_hash.as_ref())?;
    let differs = distinct(new_hash, kept_hash)?;
    let changed = datafusion::arrow::compute::and(&read, &differs)?;
    let gone = not(&read)?;
    let inserted = datafusion::arrow::compute::and(&changed, &datafusion::arrow::compute::is_null(kept_hash)?)?;
    let count = |b: &BooleanArray| b.true_count() as u64;
    counts.inserted += count(&inserted);
    counts.updated += count(&changed) - count(&inserted);
    counts.unchanged += count(&read) - count(&changed);
    counts.deleted += count(&gone);
    let columns = |at: &mut dyn Iterator<Item = usize>| at.map(|i| Arc::clone(batch.column(i))).collect::<Vec<_>>();
    let changes = RecordBatch::try_new(Arc::clone(changes_schema), columns(&mut (0..width)))?;
    let hashes = RecordBatch::try_new(Arc::clone(hashes_schema), columns(&mut key_at.iter().copied().chain([width])))?;
    let gone_rows = RecordBatch::try_new(Arc::clone(gone_schema), columns(&mut (width + 2..batch.num_columns())))?;
    Ok((
        filter_record_batch(&changes, &changed)?,
        filter_record_batch(&hashes, &read)?,
        filter_record_batch(&gone_rows, &gone)?,
    ))
}

/// The next hashes of a run in which some changed rows were not staged
/// (quarantined, or dropped as duplicates): those keep their kept hash
/// (or, new, get none), so the next run finds them again. `changes`: the
/// rows found changed; `staged`: those staged; `kept`: the kept hashes.
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
