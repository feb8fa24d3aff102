//! An incremental model's next version, made without rewriting its current
//! data: the current version's files, hard-linked, then the increment's,
//! with a deletion file beside each current file whose rows the increment
//! replaces (its rows with a key the increment stages, NULL key parts
//! matching nothing, as the merge's `=` does). A run that changes 1% of a
//! table then writes 1% of it, where rewriting the merge result would
//! read and write it all.
//!
//! Readers apply the deletion files: [`super::read`] and
//! [`super::table`]. A reader of the Parquet files alone sees the
//! replaced rows too, so a version is layered only while its replaced rows
//! stay a small share of its files ([`MAX_DELETED_SHARE`]) and its files
//! few ([`MAX_FILES`]); past either, [`layer`] declines and the caller
//! rewrites the version whole, compact again: with [`compact`], which
//! keeps the rows in their order (the current version's, then the
//! increment's), or by the merge's SQL.

use std::sync::Arc;

use camino::Utf8Path;
use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use futures::StreamExt;
use roaring::RoaringBitmap;

use super::{Deleted, Dir, StageError, StageManifest, StagedFile, StagedTable, TempDir, io};
use crate::values::cells::one_layout;

/// Past this share of a version's rows deleted, the next version is
/// rewritten whole.
pub const MAX_DELETED_SHARE: f64 = 0.2;
/// Past this many files, the next version is rewritten whole.
pub const MAX_FILES: usize = 64;

/// The next version of `current` with `increment` merged on `key` (none:
/// appended), layered under `parent` as [`super::write_stage`] puts a
/// stage in place; `None` when it should be rewritten instead (see the
/// module doc): the stages are not both on this machine, their columns'
/// names or types differ (but for the layout of strings and bytes), a
/// file has more rows than a deletion file can number, or the version
/// would hold too many replaced rows or files.
pub async fn layer(
    parent: &Utf8Path,
    model: &str,
    current: &StagedTable,
    increment: &StagedTable,
    key: &[String],
) -> Result<Option<StagedTable>, StageError> {
    Ok(layered(parent, model, (current, increment), key, None).await?.map(|(next, _)| next))
}

/// The next version of `current` with `increment` merged on `key`, as
/// [`layer`] makes it within its limits; past them, written whole under
/// `parent` with `options`: the current version's rows that the increment
/// does not replace, in their order, then the increment's, leaving out the
/// rows with a NULL in the column `without_nulls_in` when one is named.
/// `None` where [`layer`] declines for another reason than its limits, or
/// when no row is left.
///
/// A merge by SQL (a hash anti-join) leaves rows in another order; a
/// reader that expects them in the order it reads its source (the kept
/// hashes of change detection) then finds fewer where it looks first.
pub async fn compact(
    parent: &Utf8Path,
    model: &str,
    (current, increment): (&StagedTable, &StagedTable),
    key: &[String],
    (without_nulls_in, options): (Option<&str>, super::StageOptions),
) -> Result<Option<StagedTable>, StageError> {
    use datafusion::arrow::datatypes::Schema;
    use datafusion::error::DataFusionError;
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;

    tokio::fs::create_dir_all(parent).await.map_err(|e| io("create", parent, e))?;
    // Past the limits, the version layered here is read in order, then
    // dropped.
    let scratch = TempDir(parent.join(format!(".{model}.tmp-{}", uuid::Uuid::new_v4().simple())));
    super::create_dir(&scratch.0).await?;
    let layered = layered(parent, model, (current, increment), key, Some(&scratch.0)).await?;
    let layered = match layered {
        None => return Ok(None),
        Some((next, false)) => return Ok(Some(next)),
        Some((layered, true)) => layered,
    };
    let column = match without_nulls_in {
        Some(name) => match layered.manifest.columns.iter().position(|c| c.name == name) {
            Some(at) => Some(at),
            None => return Ok(None),
        },
        None => None,
    };
    let mut rx = super::read::spawn::<super::read::ReadError>(&layered, model, None);
    let external = |e: super::read::ReadError| DataFusionError::External(Box::new(e));
    let kept = move |batch: RecordBatch| -> Result<RecordBatch, DataFusionError> {
        match column {
            Some(at) => {
                let set = datafusion::arrow::compute::is_not_null(batch.column(at))?;
                Ok(datafusion::arrow::compute::filter_record_batch(&batch, &set)?)
            }
            None => Ok(batch),
        }
    };
    // Every field may hold NULLs, as some file's may, and strings and
    // bytes are in one layout, as a first run's and an increment's files
    // may not be: the batches of all files then fit one schema.
    let first = loop {
        match rx.recv().await {
            None => return Ok(None),
            Some(batch) => {
                let batch = kept(batch.map_err(external).map_err(|source| execute(model, source))?)
                    .map_err(|source| execute(model, source))?;
                if batch.num_rows() > 0 {
                    break batch;
                }
            }
        }
    };
    let fields: Vec<_> = first
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let t = one_layout(f.data_type());
            f.as_ref().clone().with_data_type(t).with_nullable(true)
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let rest = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    let to_schema = Arc::clone(&schema);
    let fitted = move |batch: RecordBatch| -> Result<RecordBatch, DataFusionError> {
        let columns = batch.columns().iter().zip(to_schema.fields()).map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(Arc::clone(c))
            } else {
                datafusion::arrow::compute::cast(c, f.data_type())
            }
        });
        Ok(RecordBatch::try_new(Arc::clone(&to_schema), columns.collect::<Result<_, _>>()?)?)
    };
    let rows = futures::stream::once(async move { Ok(first) })
        .chain(rest.map(move |b| b.map_err(external).and_then(kept)))
        .map(move |b| b.and_then(&fitted));
    let stream = Box::pin(RecordBatchStreamAdapter::new(schema, rows));
    let written = super::write_stage(parent, model, vec![stream], options).await?;
    drop(scratch);
    Ok(Some(written))
}

fn execute(model: &str, source: datafusion::error::DataFusionError) -> StageError {
    StageError::Execute { model: model.to_owned(), source }
}

/// [`layer`], and whether the version went past its limits: then it is
/// layered under `past` if one is given, else declined.
async fn layered(
    parent: &Utf8Path,
    model: &str,
    (current, increment): (&StagedTable, &StagedTable),
    key: &[String],
    past: Option<&Utf8Path>,
) -> Result<Option<(StagedTable, bool)>, StageError> {
    let (Dir::Local(current_dir), Dir::Local(increment_dir)) = (&current.dir, &increment.dir) else { return Ok(None) };
    let (cur, inc) = (&current.manifest, &increment.manifest);
    // Types equal but for the layout of strings and bytes: a first run
    // stages a database's text as `Utf8`, its increments (fitted to the
    // current data as DataFusion reads it) as `Utf8View`, and readers read
    // both alike.
    if cur.columns.len() != inc.columns.len()
        || !cur.columns.iter().zip(&inc.columns).all(|(a, b)| a.name == b.name && alike(&a.data_type, &b.data_type))
        || cur.masked != inc.masked
        || key.iter().any(|k| !cur.columns.iter().any(|c| &c.name == k))
        || cur.files.iter().any(|f| f.rows > u64::from(u32::MAX))
    {
        return Ok(None);
    }
    let too_many_files = cur.files.len() + inc.files.iter().filter(|f| f.rows > 0).count() > MAX_FILES;
    if too_many_files && past.is_none() {
        return Ok(None);
    }
    let replaced = if key.is_empty() || inc.row_count == 0 {
        vec![None; cur.files.len()]
    } else {
        let (cur_dir, inc_dir) = (current_dir.clone(), increment_dir.clone());
        let (cur_files, inc_files, key) = (cur.files.clone(), inc.files.clone(), key.to_vec());
        tokio::task::spawn_blocking(move || replaced(&cur_dir, &cur_files, &inc_dir, &inc_files, &key))
            .await
            .map_err(|e| io("read", current_dir, std::io::Error::other(e)))?
            .map_err(|e| StageError::Corrupt { model: model.to_owned(), path: current_dir.clone(), reason: e })?
    };
    let physical: u64 = cur.files.iter().chain(&inc.files).map(|f| f.rows).sum();
    let deleted: u64 = replaced
        .iter()
        .zip(&cur.files)
        .map(|(r, f)| r.as_ref().map_or_else(|| f.deleted.as_ref().map_or(0, |d| d.rows), RoaringBitmap::len))
        .sum();
    let is_past = too_many_files || deleted as f64 > MAX_DELETED_SHARE * physical as f64;
    let parent = match (is_past, past) {
        (false, _) => parent,
        (true, Some(past)) => past,
        (true, None) => return Ok(None),
    };

    tokio::fs::create_dir_all(parent).await.map_err(|e| io("create", parent, e))?;
    let tmp = TempDir(parent.join(format!(".{model}.tmp-{}", uuid::Uuid::new_v4().simple())));
    super::create_dir(&tmp.0).await?;
    let mut files = Vec::with_capacity(cur.files.len() + inc.files.len());
    for (f, replaced) in cur.files.iter().zip(replaced) {
        link(&current_dir.join(&f.name), &tmp.0.join(&f.name)).await?;
        let deleted = match (replaced, &f.deleted) {
            (Some(bitmap), _) => {
                let name = format!("{}.deleted", f.name);
                let mut bytes = Vec::with_capacity(bitmap.serialized_size());
                bitmap.serialize_into(&mut bytes).map_err(|e| io("write", &tmp.0.join(&name), e))?;
                super::write_synced(&tmp.0.join(&name), &bytes).await?;
                Some(Deleted { name, bytes: bytes.len() as u64, rows: bitmap.len() })
            }
            (None, Some(d)) => {
                link(&current_dir.join(&d.name), &tmp.0.join(&d.name)).await?;
                Some(d.clone())
            }
            (None, None) => None,
        };
        files.push(StagedFile { deleted, ..f.clone() });
    }
    // The increment's files, under names of their own.
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    // An empty increment adds no file (its columns are the manifest's).
    for f in inc.files.iter().filter(|f| f.rows > 0) {
        let name = format!("{tag}-{}", f.name);
        link(&increment_dir.join(&f.name), &tmp.0.join(&name)).await?;
        files.push(StagedFile { name, ..f.clone() });
    }
    let checksum = super::checksum(&Dir::Local(tmp.0.clone()), &files).await?;
    let manifest = StageManifest {
        model: model.to_owned(),
        row_count: physical - deleted,
        // A column may hold NULLs if either side's may.
        columns: cur
            .columns
            .iter()
            .zip(&inc.columns)
            .map(|(c, i)| super::StagedColumn { nullable: c.nullable || i.nullable, ..i.clone() })
            .collect(),
        files,
        checksum,
        version: None,
        masked: cur.masked,
    };
    Ok(Some((super::put_in_place(parent, tmp, model, manifest).await?, is_past)))
}

/// Whether two types, as a manifest names them, are one but for the
/// layout of strings and bytes ([`one_layout`]).
fn alike(a: &str, b: &str) -> bool {
    a == b
        || matches!((a.parse::<DataType>(), b.parse::<DataType>()), (Ok(a), Ok(b)) if one_layout(&a) == one_layout(&b))
}

/// `column` with strings and bytes in one layout, so that keys read from
/// files with either layout encode alike.
fn canonical(column: &ArrayRef) -> Result<ArrayRef, datafusion::arrow::error::ArrowError> {
    match column.data_type() {
        DataType::Dictionary(_, value) => canonical(&datafusion::arrow::compute::cast(column, value)?),
        t if one_layout(t) != *t => datafusion::arrow::compute::cast(column, &one_layout(t)),
        _ => Ok(Arc::clone(column)),
    }
}

/// Links `to` to the file `from` (a copy where the two are on different
/// file systems); the files of a stage are never written again, so both
/// versions may share them.
async fn link(from: &Utf8Path, to: &Utf8Path) -> Result<(), StageError> {
    if tokio::fs::hard_link(from, to).await.is_ok() {
        return Ok(());
    }
    tokio::fs::copy(from, to).await.map_err(|e| io("copy", from, e))?;
    let file = tokio::fs::File::open(to).await.map_err(|e| io("open", to, e))?;
    file.sync_all().await.map_err(|e| io("sync", to, e))
}

/// For each current file, the rows deleted in the next version (those
/// deleted already and those whose key the increment stages), or `None`
/// where the increment replaces none of its rows.
fn replaced(
    current_dir: &Utf8Path,
    current: &[StagedFile],
    increment_dir: &Utf8Path,
    increment: &[StagedFile],
    key: &[String],
) -> Result<Vec<Option<RoaringBitmap>>, String> {
    use rayon::prelude::*;
    let mut staged: foldhash::HashSet<Box<[u8]>> = foldhash::HashSet::default();
    let mut converter = None;
    for f in increment {
        keys(&increment_dir.join(&f.name), key, &mut converter, |_, row| {
            staged.insert(row.into());
        })?;
    }
    let staged = Arc::new(staged);
    current
        .par_iter()
        .map(|f| {
            let before = match &f.deleted {
                Some(d) => super::read_deleted(current_dir, d)?,
                None => RoaringBitmap::new(),
            };
            let (mut deleted, mut more) = (before, false);
            let mut converter = None;
            keys(&current_dir.join(&f.name), key, &mut converter, |position, row| {
                if staged.contains(row) {
                    more |= deleted.insert(position);
                }
            })?;
            Ok(more.then_some(deleted))
        })
        .collect()
}

/// Calls `each` with the position and the row-encoded key of every row of
/// the Parquet file at `path` whose key has no NULL part.
fn keys(
    path: &Utf8Path,
    key: &[String],
    converter: &mut Option<RowConverter>,
    mut each: impl FnMut(u32, &[u8]),
) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("`{path}`: {e}");
    let file = std::fs::File::open(path).map_err(|e| fail(&e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| fail(&e))?;
    let fields = builder.schema().fields().clone();
    let roots: Vec<usize> = key
        .iter()
        .map(|k| fields.iter().position(|f| f.name() == k).ok_or_else(|| fail(&format!("no column `{k}`"))))
        .collect::<Result<_, _>>()?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder.with_projection(mask).with_batch_size(64 * 1024).build().map_err(|e| fail(&e))?;
    let mut position: u32 = 0;
    for batch in reader {
        let batch = batch.map_err(|e| fail(&e))?;
        let columns: Vec<ArrayRef> =
            batch.columns().iter().map(canonical).collect::<Result<_, _>>().map_err(|e| fail(&e))?;
        let converter = match converter {
            Some(c) => c,
            None => converter.insert(
                RowConverter::new(columns.iter().map(|c| SortField::new(c.data_type().clone())).collect())
                    .map_err(|e| fail(&e))?,
            ),
        };
        let rows = converter.convert_columns(&columns).map_err(|e| fail(&e))?;
        let nulls = columns.iter().any(|c| c.null_count() > 0);
        for i in 0..batch.num_rows() {
            if !(nulls && columns.iter().any(|c| c.is_null(i))) {
                each(position + i as u32, rows.row(i).as_ref());
            }
        }
        position += batch.num_rows() as u32;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use camino::Utf8PathBuf;
    use datafusion::arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::stage::{StageOptions, read, write_stage};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("name", DataType::Utf8, true)]))
    }

    /// A stage of `rows` (id, name) under `parent`, 250 rows a file.
    async fn staged(parent: &Utf8Path, model: &str, rows: &[(i64, Option<&str>)]) -> StagedTable {
        staged_as(parent, model, rows, DataType::Utf8).await
    }

    /// [`staged`], with its names of type `names`.
    async fn staged_as(parent: &Utf8Path, model: &str, rows: &[(i64, Option<&str>)], names: DataType) -> StagedTable {
        let ids = Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>());
        let strings = StringArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>());
        let names = datafusion::arrow::compute::cast(&strings, &names).unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", names.data_type().clone(), true),
        ]));
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(ids), names]).unwrap();
        let stream = Box::pin(RecordBatchStreamAdapter::new(schema, futures::stream::iter([Ok(batch)])));
        let options = StageOptions { max_rows_per_file: 250, ..StageOptions::default() };
        write_stage(parent, model, vec![stream], options).await.unwrap()
    }

    /// Every row of `stage` as [`read::spawn`] reads it, by id.
    async fn read_back(stage: &StagedTable) -> BTreeMap<i64, Vec<Option<String>>> {
        let mut rx = read::spawn::<read::ReadError>(stage, "m", None);
        let mut rows: BTreeMap<i64, Vec<Option<String>>> = BTreeMap::new();
        while let Some(batch) = rx.recv().await {
            let batch = batch.unwrap();
            let ids = batch.column(0).as_primitive::<Int64Type>();
            let names = datafusion::arrow::compute::cast(batch.column(1), &DataType::Utf8).unwrap();
            let names = names.as_string::<i32>();
            for i in 0..batch.num_rows() {
                rows.entry(ids.value(i)).or_default().push(names.is_valid(i).then(|| names.value(i).to_owned()));
            }
        }
        rows
    }

    /// One value of `sql` over `stage` registered as `t` through [`super::super::table`].
    async fn query(stage: &StagedTable, sql: &str) -> String {
        let ctx = SessionContext::new();
        let table = crate::stage::table::StageTable::new(stage, schema()).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string()
    }

    fn named(ids: std::ops::Range<i64>, name: &'static str) -> Vec<(i64, Option<&'static str>)> {
        ids.map(|i| (i, Some(name))).collect()
    }

    #[tokio::test]
    async fn a_merge_links_the_current_files_and_deletes_the_rows_its_increment_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let root = Utf8PathBuf::try_from(dir.path().to_owned()).unwrap();
        let current = staged(&root.join("stage"), "m", &named(0..1000, "old")).await;
        let increment = staged(&root.join("inc1"), "m", &named(990..1010, "new")).await;
        let key = ["id".to_owned()];

        let next = layer(&root.join("next"), "m", &current, &increment, &key).await.unwrap().expect("layered");
        assert_eq!(next.manifest.row_count, 1010);
        assert_eq!(next.manifest.files.len(), 5);
        let deleted: Vec<u64> = next.manifest.files.iter().map(|f| f.deleted.as_ref().map_or(0, |d| d.rows)).collect();
        assert_eq!(deleted, [0, 0, 0, 10, 0]);
        assert_eq!(crate::stage::read_manifest(next.dir.local().unwrap()).unwrap(), next.manifest);
        let rows = read_back(&next).await;
        assert_eq!(rows.len(), 1010);
        assert!(rows.values().all(|names| names.len() == 1), "one row per id");
        assert_eq!(rows[&989], [Some("old".to_owned())]);
        assert_eq!(rows[&995], [Some("new".to_owned())]);
        let counted = query(&next, "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM t").await;
        assert!(counted.contains("| 1010 | 1010 |"), "{counted}");
        let filtered = query(&next, "SELECT name FROM t WHERE id = 995").await;
        assert!(filtered.contains("| new  |") && !filtered.contains("old"), "{filtered}");

        // A second increment: the first's deletions kept, new ones added,
        // and the current stage's files untouched.
        let increment = staged(&root.join("inc2"), "m", &named(0..5, "newer")).await;
        let after = layer(&root.join("next2"), "m", &next, &increment, &key).await.unwrap().expect("layered");
        let deleted: Vec<u64> = after.manifest.files.iter().map(|f| f.deleted.as_ref().map_or(0, |d| d.rows)).collect();
        assert_eq!(deleted, [5, 0, 0, 10, 0, 0]);
        let rows = read_back(&after).await;
        assert_eq!(
            (rows.len(), rows[&3].clone(), rows[&995].clone()),
            (1010, vec![Some("newer".to_owned())], vec![Some("new".to_owned())])
        );
        assert_eq!(read_back(&next).await.len(), 1010, "the version before is as it was");
        assert_eq!(read_back(&current).await[&995], [Some("old".to_owned())]);
    }

    #[tokio::test]
    async fn null_key_parts_replace_nothing_an_append_deletes_nothing_and_too_many_deletions_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let root = Utf8PathBuf::try_from(dir.path().to_owned()).unwrap();
        let mut rows = named(0..100, "a");
        rows.push((100, None));
        let current = staged(&root.join("stage"), "m", &rows).await;
        let key = ["id".to_owned(), "name".to_owned()];
        let increment = staged(&root.join("inc1"), "m", &[(100, None), (5, Some("a")), (6, Some("b"))]).await;
        let next = layer(&root.join("next"), "m", &current, &increment, &key).await.unwrap().expect("layered");
        let rows = read_back(&next).await;
        assert_eq!(rows[&100], [None, None], "NULL never matches NULL");
        assert_eq!(rows[&5], [Some("a".to_owned())], "the whole key matched");
        assert_eq!(rows[&6], [Some("a".to_owned()), Some("b".to_owned())], "a key part differs");
        assert_eq!(next.manifest.row_count, 103);

        let appended = layer(&root.join("next2"), "m", &current, &increment, &[]).await.unwrap().expect("layered");
        assert!(!appended.manifest.has_deletes());
        assert_eq!(appended.manifest.row_count, 104);

        let most = staged(&root.join("inc2"), "m", &named(0..30, "a")).await;
        let declined = layer(&root.join("next3"), "m", &current, &most, &key).await.unwrap();
        assert!(declined.is_none(), "30 of 131 rows deleted is past the share");
        assert!(!root.join("next3/m").exists());
    }

    #[tokio::test]
    async fn strings_of_either_layout_layer_and_other_types_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let root = Utf8PathBuf::try_from(dir.path().to_owned()).unwrap();
        let current = staged(&root.join("stage"), "m", &named(0..100, "old")).await;
        let key = ["id".to_owned()];
        let views = staged_as(&root.join("inc1"), "m", &named(95..105, "new"), DataType::Utf8View).await;
        let next = layer(&root.join("next"), "m", &current, &views, &key).await.unwrap().expect("layered");
        assert_eq!(next.manifest.columns[1].data_type, "Utf8View", "the increment's layout");
        let rows = read_back(&next).await;
        assert_eq!((rows.len(), rows[&97].clone()), (105, vec![Some("new".to_owned())]));
        let counted = query(&next, "SELECT count(*) AS n, count(*) FILTER (WHERE name = 'new') AS new FROM t").await;
        assert!(counted.contains("| 105 | 10  |"), "{counted}");

        let bytes = staged_as(&root.join("inc2"), "m", &named(95..105, "new"), DataType::Binary).await;
        let declined = layer(&root.join("next2"), "m", &current, &bytes, &key).await.unwrap();
        assert!(declined.is_none(), "bytes are not strings");
    }

    /// Every id of `stage` in the order [`read::spawn`] reads them.
    async fn ids_in_order(stage: &StagedTable) -> Vec<i64> {
        let mut rx = read::spawn::<read::ReadError>(stage, "m", None);
        let mut ids = Vec::new();
        while let Some(batch) = rx.recv().await {
            ids.extend(batch.unwrap().column(0).as_primitive::<Int64Type>().values().iter().copied());
        }
        ids
    }

    #[tokio::test]
    async fn a_compact_version_keeps_the_rows_in_order_past_the_limits_and_drops_the_unset() {
        let dir = tempfile::tempdir().unwrap();
        let root = Utf8PathBuf::try_from(dir.path().to_owned()).unwrap();
        let current = staged(&root.join("stage"), "m", &named(0..1000, "old")).await;
        let key = ["id".to_owned()];
        // Layered once: 990..1010 replaced or new.
        let increment = staged(&root.join("inc1"), "m", &named(990..1010, "new")).await;
        let next = layer(&root.join("next"), "m", &current, &increment, &key).await.unwrap().expect("layered");
        // Then 300 rows replaced (past the share a layer takes), 5 of them
        // without a name (left out), and 2000 new.
        let mut rows = named(200..500, "newer");
        rows[5].1 = None;
        rows.extend(named(2000..2001, "newest"));
        // Its names as views, the first run's as strings.
        let increment = staged_as(&root.join("inc2"), "m", &rows, DataType::Utf8View).await;
        assert!(layer(&root.join("declined"), "m", &next, &increment, &key).await.unwrap().is_none());

        let options = crate::stage::StageOptions::default();
        let compact = compact(&root.join("compact"), "m", (&next, &increment), &key, (Some("name"), options))
            .await
            .unwrap()
            .expect("compacted");
        assert!(!compact.manifest.has_deletes());
        let expected: Vec<i64> =
            (0..200).chain(500..990).chain(990..1010).chain((200..500).filter(|&i| i != 205)).chain([2000]).collect();
        assert_eq!(ids_in_order(&compact).await, expected, "the current rows in order, then the increment's");
        assert_eq!(compact.manifest.row_count, expected.len() as u64);
        let rows = read_back(&compact).await;
        assert_eq!(
            (rows[&100].clone(), rows[&300].clone()),
            (vec![Some("old".to_owned())], vec![Some("newer".to_owned())])
        );
        assert!(
            !root.join("compact").read_dir().unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')),
            "no scratch left"
        );
        assert_eq!(read_back(&next).await.len(), 1010, "the version before is as it was");
    }
}
