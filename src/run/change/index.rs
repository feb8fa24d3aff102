//! A model's kept hashes, held in memory by key for one run: each extract
//! row is looked up as it streams past, on every partition at once, and
//! the kept keys no row looked up are the ones gone from the extract.
//!
//! The keys are held in Arrow's row format, all in one buffer, and found
//! through tables of their positions; for 6M keys of two integers that
//! is about 26 bytes a key, 16 for its hash and 12 for the tables. (A hash
//! join of the extract with the kept hashes, which this replaces, carried
//! every column of every row through the join and back out.)
//!
//! The tables are made once every key is read ([`Loading::index`]): the
//! keys are first sorted into parts by a few bits of their hash, and each
//! part's table, small enough to stay in cache, is filled on its own. One
//! table of every key, filled as they were read, missed the cache on
//! nearly every insert (88% of the time of holding 6M keys, by `perf`).
//!
//! Keys match as the merge's `=` does: a key with a NULL part matches
//! nothing, so such an extract row is new every run and such a kept key
//! gone. A key kept twice is held once; a key kept without a hash (a
//! tombstone: gone in an earlier run) is not held.

use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, BooleanBufferBuilder, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_64;

use super::Counts;
use crate::values::cells;

/// Where a partition's next key is looked for first: past the one found
/// last (see [`KeptIndex::probe`]).
#[derive(Debug, Default)]
pub struct Cursor {
    pub at: usize,
    /// Keys found where the cursor pointed.
    pub found: u64,
}

/// The kept hashes by key, and which keys this run's rows looked up.
pub struct KeptIndex {
    /// The key parts' types as held: [`cells::value_type`] of the kept
    /// ones, which the hashes were computed over.
    types: Vec<DataType>,
    /// The one converter of keys to rows (rows of others do not mix).
    converter: RowConverter,
    keys: Rows,
    /// Each held key's row hash.
    hashes: Vec<[u8; 16]>,
    /// The held keys' positions, in parts by [`part`] of their hash.
    tables: Vec<HashTable<u32>>,
    /// A bit per key: in `tables` (not a tombstone, nor kept twice, nor
    /// with a NULL part).
    held: Vec<AtomicU64>,
    /// A bit per key: looked up, or not to be named gone (kept twice).
    seen: Vec<AtomicU64>,
}

/// Keys in a part's table, about: 32Ki keys take some 190 KiB.
const PART_KEYS: usize = 32 * 1024;
/// Where in a key's hash its part is read: above the bits a table of one
/// part places a key by, and below the seven it tells keys apart by.
const PART_SHIFT: u32 = 40;

/// The part of a key hashed `h`, of `parts` (a power of two).
fn part(h: u64, parts: usize) -> usize {
    (h >> PART_SHIFT) as usize & (parts - 1)
}

/// The kept keys as they are read, before their tables are made.
pub struct Loading {
    index: KeptIndex,
    /// For each part, the positions of its keys to hold, in order, and
    /// their hashes (so that a part's table is made without reading keys
    /// spread over the whole buffer).
    parts: Vec<(Vec<u32>, Vec<u64>)>,
}

impl KeptIndex {
    /// An index of keys of `types` to be read, with room for `rows` of
    /// them.
    pub fn loading(types: &[DataType], rows: usize) -> Result<Loading, ArrowError> {
        let types: Vec<DataType> = types.iter().map(cells::value_type).collect();
        let converter = RowConverter::new(types.iter().map(|t| SortField::new(t.clone())).collect())?;
        // A guess at the bytes of a key: right for integers.
        let keys = converter.empty_rows(rows, rows * 9 * types.len());
        let hashes = Vec::with_capacity(rows);
        let parts = (rows / PART_KEYS).next_power_of_two().min(1 << 10);
        let per_part = rows / parts + rows / parts / 8;
        let index =
            KeptIndex { types, converter, keys, hashes, tables: Vec::new(), held: Vec::new(), seen: Vec::new() };
        let parts = (0..parts).map(|_| (Vec::with_capacity(per_part), Vec::with_capacity(per_part))).collect();
        Ok(Loading { index, parts })
    }

    /// Looks up each row of `batch` (keys at `key_at`, its new row hash at
    /// `hash_at`): which rows are new or changed, counted into `counts`.
    /// `cursor`: where to look first, the key after the one found last;
    /// an extract read in the order its hashes were kept finds nearly every
    /// key there, in order through memory, without hashing it.
    pub fn probe(
        &self,
        batch: &RecordBatch,
        (key_at, hash_at): (&[usize], usize),
        cursor: &mut Cursor,
        counts: &mut Counts,
    ) -> Result<BooleanArray, ArrowError> {
        let columns = self.key_columns(batch, key_at)?;
        let rows = self.converter.convert_columns(&columns)?;
        let new = batch.column(hash_at).as_fixed_size_binary_opt().ok_or_else(|| {
            ArrowError::SchemaError(format!("row hashes have type {}", batch.column(hash_at).data_type()))
        })?;
        let null_key = any_null(&columns);
        let mut changed = BooleanBufferBuilder::new(batch.num_rows());
        for (r, key) in rows.iter().enumerate() {
            let found = if null_key.as_ref().is_some_and(|n| n.value(r)) {
                None
            } else if self.is_held(cursor.at) && self.keys.row(cursor.at).as_ref() == key.as_ref() {
                cursor.found += 1;
                Some(cursor.at)
            } else {
                let h = xxh3_64(key.as_ref());
                let table = &self.tables[part(h, self.tables.len())];
                table.find(h, |&i| self.keys.row(i as usize).as_ref() == key.as_ref()).map(|&i| i as usize)
            };
            if let Some(i) = found {
                cursor.at = i + 1;
            }
            let is_changed = match found {
                None => {
                    counts.inserted += 1;
                    true
                }
                Some(i) => {
                    mark(&self.seen, i);
                    let same = new.is_valid(r) && new.value(r) == self.hashes[i];
                    if same {
                        counts.unchanged += 1;
                    } else {
                        counts.updated += 1;
                    }
                    !same
                }
            };
            changed.append(is_changed);
        }
        Ok(BooleanArray::new(changed.finish(), None))
    }

    /// The keys held but never looked up, as columns of `types` (the
    /// extract's key types), in batches of at most `rows`.
    pub fn gone(&self, types: &[DataType], rows: usize) -> Result<Vec<Vec<ArrayRef>>, ArrowError> {
        let unseen =
            (0..self.hashes.len()).filter(|&i| self.seen[i / 64].load(Ordering::Relaxed) & (1 << (i % 64)) == 0);
        let unseen: Vec<usize> = unseen.collect();
        unseen
            .chunks(rows.max(1))
            .map(|chunk| {
                let columns = self.converter.convert_rows(chunk.iter().map(|&i| self.keys.row(i)))?;
                columns
                    .iter()
                    .zip(types)
                    .map(|(c, t)| if c.data_type() == t { Ok(c.clone()) } else { cast(c, t) })
                    .collect()
            })
            .collect()
    }

    fn is_held(&self, i: usize) -> bool {
        self.held.get(i / 64).is_some_and(|bits| bits.load(Ordering::Relaxed) & (1 << (i % 64)) != 0)
    }

    /// `batch`'s key columns at `key_at`, in the types held.
    fn key_columns(&self, batch: &RecordBatch, key_at: &[usize]) -> Result<Vec<ArrayRef>, ArrowError> {
        key_at
            .iter()
            .zip(&self.types)
            .map(|(&i, t)| {
                let c = batch.column(i);
                if c.data_type() == t { Ok(c.clone()) } else { cast(c, t) }
            })
            .collect()
    }
}

impl Loading {
    /// Adds the kept rows of `batch`: its key columns at `key_at`, then
    /// its row hashes at `hash_at`.
    pub fn add(&mut self, batch: &RecordBatch, key_at: &[usize], hash_at: usize) -> Result<(), ArrowError> {
        let index = &mut self.index;
        let columns = index.key_columns(batch, key_at)?;
        let hashes =
            batch.column(hash_at).as_fixed_size_binary_opt().filter(|h| h.value_length() == 16).ok_or_else(|| {
                ArrowError::SchemaError(format!("kept row hashes have type {}", batch.column(hash_at).data_type()))
            })?;
        let start = index.hashes.len();
        if start + batch.num_rows() > u32::MAX as usize {
            return Err(ArrowError::ComputeError("more than 4,294,967,295 keys kept".into()));
        }
        index.converter.append(&mut index.keys, &columns)?;
        let words = (start + batch.num_rows()).div_ceil(64);
        index.seen.resize_with(words, AtomicU64::default);
        index.held.resize_with(words, AtomicU64::default);
        let null_key = any_null(&columns);
        let parts = self.parts.len();
        for r in 0..batch.num_rows() {
            let at = start + r;
            index.hashes.push(hashes.value(r).try_into().unwrap_or_default());
            // A gone key's tombstone is neither looked up nor gone again.
            if hashes.is_null(r) {
                mark(&index.seen, at);
                continue;
            }
            if null_key.as_ref().is_some_and(|n| n.value(r)) {
                continue;
            }
            let h = key_hash(&index.keys, at as u32);
            let (positions, hashes) = &mut self.parts[part(h, parts)];
            positions.push(at as u32);
            hashes.push(h);
        }
        Ok(())
    }

    /// The index of the keys read: each part's table made on its own (on
    /// every core), its keys in the order read, so that of a key kept
    /// twice the first is held and the others are never named gone.
    pub fn index(self) -> KeptIndex {
        let Loading { mut index, parts } = self;
        let (keys, held, seen) = (&index.keys, &index.held, &index.seen);
        index.tables = parts
            .into_par_iter()
            .map(|(positions, hashes)| {
                let mut table = HashTable::with_capacity(positions.len());
                for (at, h) in positions.into_iter().zip(hashes) {
                    // Keys are read only where a kept one may match.
                    let eq = |&i: &u32| keys.row(i as usize).as_ref() == keys.row(at as usize).as_ref();
                    match table.entry(h, eq, |&i| key_hash(keys, i)) {
                        Entry::Occupied(_) => mark(seen, at as usize),
                        Entry::Vacant(slot) => {
                            slot.insert(at);
                            mark(held, at as usize);
                        }
                    }
                }
                table
            })
            .collect();
        index
    }
}

/// Sets bit `i` of `bits`.
fn mark(bits: &[AtomicU64], i: usize) {
    bits[i / 64].fetch_or(1 << (i % 64), Ordering::Relaxed);
}

/// The hash of kept key `i`.
fn key_hash(keys: &Rows, i: u32) -> u64 {
    xxh3_64(keys.row(i as usize).as_ref())
}

/// Which rows have a NULL key part; `None` when none can.
fn any_null(columns: &[ArrayRef]) -> Option<BooleanArray> {
    let mut nulls = columns.iter().filter(|c| c.null_count() > 0);
    let first = nulls.next()?;
    let mut out = datafusion::arrow::compute::is_null(first.as_ref()).ok()?;
    for c in nulls {
        out = datafusion::arrow::compute::or(&out, &datafusion::arrow::compute::is_null(c.as_ref()).ok()?).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{FixedSizeBinaryArray, Int64Array, StringArray, StringViewArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    /// Kept rows; a hash of 0 is none (a tombstone).
    fn kept(ids: &[Option<i64>], names: &[&str], hashes: &[u8]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, false),
            Field::new("h", DataType::FixedSizeBinary(16), true),
        ]);
        let h = hashes.iter().map(|&b| (b > 0).then_some([b; 16]));
        let h = FixedSizeBinaryArray::try_from_sparse_iter_with_size(h, 16).unwrap();
        RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(Int64Array::from(ids.to_vec())), Arc::new(StringArray::from(names.to_vec())), Arc::new(h)],
        )
        .unwrap()
    }

    #[test]
    fn classifies_rows_and_names_the_keys_gone() {
        let mut loading = KeptIndex::loading(&[DataType::Int64, DataType::Utf8], 2).unwrap();
        // (4, d) is kept twice; (None, e) can match nothing; (6, g) was gone
        // in an earlier run, (7, h) too and is back.
        let first = kept(&[Some(1), Some(2), Some(6), Some(3)], &["a", "b", "g", "c"], &[1, 2, 0, 3]);
        loading.add(&first, &[0, 1], 2).unwrap();
        loading
            .add(&kept(&[Some(4), Some(4), None, Some(7)], &["d", "d", "e", "h"], &[4, 4, 5, 0]), &[0, 1], 2)
            .unwrap();
        let index = loading.index();
        assert_eq!(index.hashes.len(), 8);

        // The extract: (1, a) unchanged, (2, b) changed, (6, g) back, where
        // the cursor finds its tombstone, (5, f) new, (None, e) new, (4, d)
        // unchanged, (7, h) back; its names as views, as DataFusion reads
        // them.
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8View, false),
            Field::new("h", DataType::FixedSizeBinary(16), false),
        ]);
        let h = FixedSizeBinaryArray::try_from_iter([1u8, 9, 8, 6, 5, 4, 7].iter().map(|&b| [b; 16])).unwrap();
        let extract = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), Some(2), Some(6), Some(5), None, Some(4), Some(7)])),
                Arc::new(StringViewArray::from(vec!["a", "b", "g", "f", "e", "d", "h"])),
                Arc::new(h),
            ],
        )
        .unwrap();
        let mut counts = Counts::default();
        // Looked for first where the cursor says: at (1, a) and past it,
        // and in the wrong place for (4, d), found by its hash.
        let mut cursor = Cursor::default();
        let changed = index.probe(&extract, (&[0, 1], 2), &mut cursor, &mut counts).unwrap();
        assert_eq!((cursor.at, cursor.found), (5, 2), "(1, a) and (2, b) found there; past the (4, d) found last");
        assert_eq!(changed, BooleanArray::from(vec![false, true, true, true, true, false, true]));
        assert_eq!((counts.inserted, counts.updated, counts.unchanged), (4, 1, 2));

        // Gone: (3, c), and the kept (None, e), in the extract's types; not
        // the tombstones.
        let gone = index.gone(&[DataType::Int64, DataType::Utf8View], 1).unwrap();
        assert_eq!(gone.len(), 2);
        let ids: Vec<Option<i64>> = gone
            .iter()
            .map(|g| g[0].as_primitive::<datafusion::arrow::datatypes::Int64Type>().iter().next().flatten())
            .collect();
        assert_eq!(ids, vec![Some(3), None]);
        assert_eq!(gone[0][1].data_type(), &DataType::Utf8View);
        assert_eq!(gone[0][1].as_string_view().value(0), "c");
    }

    #[test]
    fn keys_in_many_parts_are_held_once_and_found_in_any_order() {
        // 100,000 keys in batches of 10,000 (four parts), key 70,000 kept
        // again last; looked up in reverse order, and 100,000 too, which is
        // new.
        let n = 100_000;
        let mut loading = KeptIndex::loading(&[DataType::Int64, DataType::Utf8], n).unwrap();
        assert_eq!(loading.parts.len(), 4);
        let names: Vec<String> = (0..n).map(|i| format!("k{}", i % 7)).collect();
        for start in (0..n).step_by(10_000) {
            let ids: Vec<Option<i64>> = (start..start + 10_000).map(|i| Some(i as i64)).collect();
            let batch_names: Vec<&str> = names[start..start + 10_000].iter().map(String::as_str).collect();
            loading.add(&kept(&ids, &batch_names, &vec![1; 10_000]), &[0, 1], 2).unwrap();
        }
        loading.add(&kept(&[Some(70_000)], &[names[70_000].as_str()], &[1]), &[0, 1], 2).unwrap();
        assert!(loading.parts.iter().all(|p| p.0.len() > n / 8), "the keys spread over the parts");
        let index = loading.index();
        assert_eq!(index.tables.iter().map(HashTable::len).sum::<usize>(), n, "the key kept twice is held once");
        assert!(index.is_held(70_000) && !index.is_held(n));

        let ids: Vec<i64> = (0..=n as i64).rev().collect();
        let looked: Vec<String> = ids.iter().map(|&i| format!("k{}", i % 7)).collect();
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("h", DataType::FixedSizeBinary(16), false),
        ]);
        let extract = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(looked)),
                Arc::new(FixedSizeBinaryArray::try_from_iter((0..=n).map(|_| [1u8; 16])).unwrap()),
            ],
        )
        .unwrap();
        let (mut counts, mut cursor) = (Counts::default(), Cursor::default());
        let changed = index.probe(&extract, (&[0, 1], 2), &mut cursor, &mut counts).unwrap();
        assert_eq!((counts.inserted, counts.updated, counts.unchanged), (1, 0, n as u64));
        assert_eq!(changed.true_count(), 1);
        assert!(index.gone(&[DataType::Int64, DataType::Utf8], 1024).unwrap().is_empty(), "none gone");
    }
}
