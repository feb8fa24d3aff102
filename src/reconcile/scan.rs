//! One pass over rows given as canonical texts: segment sums, the profile
//! and the distinct keys. The stage side feeds it staged batches; a pulled
//! target side (SQLite, or PostgreSQL's binary COPY) feeds it the rows it
//! reads, as the [`RowSink`] the backend is handed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::backend::checksum::{
    self, FetchedRow, Group, Measure, Profile, RowSink, SegmentSums, Spec, SpecColumn, hash_text, push_field,
};
use crate::backend::pipe::run_blocking;
use crate::backend::postgres::hash as pg;
use crate::backend::{BackendError, DatabaseKind, LoadJob};
use crate::values::Family;
use crate::values::cells::{self, Cell};
use datafusion::arrow::array::Array as _;
use datafusion::arrow::record_batch::RecordBatch;

/// A running aggregate of the profile.
#[derive(Debug, Clone)]
enum Acc {
    Count(u64),
    IntSum(Option<i128>),
    /// An unscaled sum at the column's scale.
    DecimalSum(Option<i128>, i8),
    FloatSum(Option<f64>),
    /// `None` once a value could not be read as a number.
    Extreme {
        min: bool,
        best: Option<(Order, String)>,
    },
    Unreadable,
}

#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Order {
    Number(i128),
    Text(String),
}

/// Rows in, segment sums and a profile out.
pub struct Scan {
    spec: Arc<Spec>,
    kind: DatabaseKind,
    /// Per segment number (fewer than 2^20): rows and hash sum.
    segments: Vec<(u64, u64)>,
    groups: Groups,
    key_buf: Vec<u8>,
    row_buf: Vec<u8>,
    /// Every column's position, for PostgreSQL's row hash.
    all: Vec<usize>,
    /// A batch's row and key hashes (see [`Scan::pg_columns`]).
    row_hashes: Vec<u64>,
    key_hashes: Vec<u64>,
}

/// The profile's groups: one for the whole table, or one per value of the
/// segment column (found by its text; the NULL group apart).
struct Groups {
    list: Vec<(Group, GroupAccs)>,
    by_text: HashMap<String, usize>,
    null: Option<usize>,
    fresh: GroupAccs,
}

impl Groups {
    /// The aggregates of the group a row with these texts falls in.
    fn of(&mut self, spec: &Spec, texts: &[Option<&str>]) -> &mut GroupAccs {
        let Some(g) = spec.group_by else { return &mut self.list[0].1 };
        let found = match texts[g] {
            None => self.null,
            Some(t) => self.by_text.get(t).copied(),
        };
        let at = found.unwrap_or_else(|| {
            self.list.push((Group::of(spec, texts[g]), self.fresh.clone()));
            let at = self.list.len() - 1;
            match texts[g] {
                None => self.null = Some(at),
                Some(t) => {
                    self.by_text.insert(t.to_owned(), at);
                }
            }
            at
        });
        &mut self.list[at].1
    }
}

/// The running aggregates of one group.
#[derive(Clone)]
struct GroupAccs {
    accs: Vec<(Measure, Acc)>,
    /// Exact key hashes, when the profile counts distinct keys: appended
    /// (cheaper than a hash set's random writes), counted once sorted.
    keys: Option<Vec<u64>>,
}

impl Scan {
    /// A scan hashing rows as `kind`'s side of the reconciliation does.
    pub fn new(spec: Arc<Spec>, kind: DatabaseKind) -> Self {
        let accs = spec
            .measures
            .iter()
            .map(|&m| {
                let acc = match m {
                    Measure::Rows | Measure::Nulls(_) | Measure::DistinctKeys => Acc::Count(0),
                    Measure::Sum(c) => match spec.columns[c].family {
                        Family::Decimal => Acc::DecimalSum(None, spec.columns[c].scale()),
                        f if f.is_float() => Acc::FloatSum(None),
                        _ => Acc::IntSum(None),
                    },
                    Measure::Min(_) => Acc::Extreme { min: true, best: None },
                    Measure::Max(_) => Acc::Extreme { min: false, best: None },
                };
                (m, acc)
            })
            .collect();
        let fresh = GroupAccs { accs, keys: spec.measures.contains(&Measure::DistinctKeys).then(Vec::new) };
        Scan {
            segments: vec![(0, 0); spec.segments() as usize],
            groups: Groups {
                list: if spec.group_by.is_none() { vec![(Group::All, fresh.clone())] } else { Vec::new() },
                by_text: HashMap::new(),
                null: None,
                fresh,
            },
            key_buf: Vec::with_capacity(64),
            row_buf: Vec::with_capacity(256),
            all: (0..spec.columns.len()).collect(),
            row_hashes: Vec::new(),
            key_hashes: Vec::new(),
            spec,
            kind,
        }
    }

    /// Makes room for `rows` rows (in an ungrouped profile).
    pub fn expect_rows(&mut self, rows: u64) {
        if let Some((_, GroupAccs { keys: Some(keys), .. })) = self.groups.list.first_mut() {
            keys.reserve(usize::try_from(rows).unwrap_or(0));
        }
    }

    /// The segment of a row and whether its key has no NULL (with its hash).
    fn key_hash(&mut self, texts: &[Option<&str>], cells: Option<&[Cell<'_>]>) -> KeyHash {
        key_hash(&self.spec, self.kind, texts, cells, &mut self.key_buf)
    }

    /// Adds one row, given as the shown texts of the spec's columns.
    pub fn row(&mut self, texts: &[Option<&str>]) {
        self.add(texts, None);
    }

    /// Adds one row given by its values, hashed as PostgreSQL hashes it
    /// (see `pg::cell_hash`): `cells` (one per spec column) and
    /// the shown text of the group column (others may be `None`). The
    /// profile reads the values themselves, so most columns are never
    /// printed.
    pub fn pg_row(&mut self, texts: &[Option<&str>], cells: &[Cell<'_>]) {
        let hash = pg_row_hash(&self.spec, &self.all, cells);
        self.add(texts, Some((cells, hash)));
    }

    /// Adds every row of a staged batch on PostgreSQL's side, column by
    /// column: each column's typed hashes are folded into the rows' hashes
    /// in one loop, and each measure reads its column in one loop, instead
    /// of every row visiting every column and measure. Only for a profile
    /// that is not grouped (see [`Scan::batch`]).
    fn pg_columns(&mut self, batch: &RecordBatch, columns: &mut [cells::Column<'_>]) {
        let spec = &*self.spec;
        debug_assert!(spec.group_by.is_none());
        let rows = batch.num_rows();
        let (mut hashes, mut keys) = (std::mem::take(&mut self.row_hashes), std::mem::take(&mut self.key_hashes));
        pg_fold(spec, columns, rows, &self.all, pg::seed, &mut hashes);
        pg_fold_key(spec, columns, rows, &mut keys);
        let mask = spec.segment_mask();
        for (&key, &hash) in keys.iter().zip(&hashes) {
            let seg = &mut self.segments[(key & mask) as usize];
            seg.0 += 1;
            seg.1 = seg.1.wrapping_add(hash);
        }
        let group = &mut self.groups.list[0].1;
        if let Some(distinct) = group.keys.as_mut() {
            // A key with a NULL part is not counted.
            let key_nulls: Vec<_> =
                spec.key.iter().filter_map(|&i| batch.column(spec.columns[i].stage_index).logical_nulls()).collect();
            distinct.extend(
                keys.iter().enumerate().filter(|(row, _)| key_nulls.iter().all(|n| n.is_valid(*row))).map(|(_, k)| *k),
            );
        }
        // A column's sum and extremes, read once for all of its measures.
        let mut numbers_of: Vec<Option<Option<Numbers>>> = vec![None; spec.columns.len()];
        for (m, acc) in &mut group.accs {
            match *m {
                Measure::Rows => {
                    if let Acc::Count(n) = acc {
                        *n += rows as u64;
                    }
                }
                Measure::DistinctKeys => {}
                Measure::Nulls(c) => {
                    if let Acc::Count(n) = acc {
                        *n += batch.column(spec.columns[c].stage_index).logical_null_count() as u64;
                    }
                }
                Measure::Sum(c) | Measure::Min(c) | Measure::Max(c) => {
                    let spec_column = &spec.columns[c];
                    let column = &mut columns[spec_column.stage_index];
                    let numbers = *numbers_of[c].get_or_insert_with(|| numbers(column, spec_column.scale()));
                    match (numbers, &mut *acc) {
                        (Some(n), Acc::IntSum(sum) | Acc::DecimalSum(sum, _)) if matches!(m, Measure::Sum(_)) => {
                            if n.count > 0 {
                                *sum = Some(sum.unwrap_or(0) + n.sum);
                            }
                        }
                        // Only a batch's own extreme can be a new one.
                        (Some(n), Acc::Extreme { min, .. }) => {
                            if let Some(v) = if *min { n.min } else { n.max } {
                                observe_cell(acc, &number_cell(column, v), spec_column, DatabaseKind::Postgres);
                            }
                        }
                        _ => {
                            for row in 0..rows {
                                observe_cell(acc, &column.cell(row), spec_column, DatabaseKind::Postgres);
                            }
                        }
                    }
                }
            }
        }
        (self.row_hashes, self.key_hashes) = (hashes, keys);
    }

    /// Adds every row of a staged batch (see [`batch_rows`]).
    fn batch(&mut self, batch: &RecordBatch) -> Result<(), String> {
        if self.kind == DatabaseKind::Postgres && self.spec.group_by.is_none() {
            let mut columns = cells::columns(batch).map_err(|e| e.to_string())?;
            self.pg_columns(batch, &mut columns);
            return Ok(());
        }
        let (spec, kind) = (Arc::clone(&self.spec), self.kind);
        batch_rows(&spec, kind, batch, false, None, |texts, cells| {
            if kind == DatabaseKind::Postgres {
                self.pg_row(texts, cells);
            } else {
                self.row(texts);
            }
        })
    }

    fn add(&mut self, texts: &[Option<&str>], typed: Option<(&[Cell<'_>], u64)>) {
        let key = self.key_hash(texts, typed.map(|(cells, _)| cells));
        let hash = match typed {
            Some((_, h)) => h,
            None => {
                self.row_buf.clear();
                for (c, t) in self.spec.columns.iter().zip(texts) {
                    let h = t.map(|t| hash_text(t, c.family, self.kind));
                    push_field(&mut self.row_buf, h.as_deref().map(str::as_bytes), c.family);
                }
                self.kind.hash64(&self.row_buf)
            }
        };
        let seg = &mut self.segments[(key.segment & self.spec.segment_mask()) as usize];
        seg.0 += 1;
        seg.1 = seg.1.wrapping_add(hash);
        let (spec, kind) = (&*self.spec, self.kind);
        let group = self.groups.of(spec, texts);
        if let Some(keys) = group.keys.as_mut().filter(|_| key.complete) {
            keys.push(key.exact);
        }
        for (m, acc) in &mut group.accs {
            let value = match m {
                Measure::Rows => {
                    if let Acc::Count(n) = acc {
                        *n += 1;
                    }
                    continue;
                }
                Measure::DistinctKeys => continue,
                Measure::Nulls(c) => {
                    let null = match typed {
                        Some((cells, _)) => matches!(cells[*c], Cell::Null),
                        None => texts[*c].is_none(),
                    };
                    if null && let Acc::Count(n) = acc {
                        *n += 1;
                    }
                    continue;
                }
                Measure::Sum(c) | Measure::Min(c) | Measure::Max(c) => *c,
            };
            let column = &spec.columns[value];
            match typed {
                Some((cells, _)) => observe_cell(acc, &cells[value], column, kind),
                None => {
                    if let Some(text) = texts[value] {
                        observe(acc, text, column.family, column.scale());
                    }
                }
            }
        }
    }

    /// The segment sums and the profile.
    pub fn finish(self) -> (SegmentSums, Profile) {
        let mut profile = Profile::new();
        for (group, accs) in self.groups.list {
            let keys = accs.keys.map_or(0, |mut k| {
                k.sort_unstable();
                k.dedup();
                k.len()
            }) as u64;
            for (m, acc) in accs.accs {
                let value = match acc {
                    _ if m == Measure::DistinctKeys => Some(keys.to_string()),
                    Acc::Count(n) => Some(n.to_string()),
                    Acc::IntSum(s) => s.map(|s| s.to_string()),
                    Acc::DecimalSum(s, scale) => {
                        s.map(|s| cells::trim_decimal(&cells::decimal128_text(s, scale)).to_owned())
                    }
                    Acc::FloatSum(s) => s.map(|s| s.to_string()),
                    Acc::Extreme { best, .. } => best.map(|(_, t)| t),
                    Acc::Unreadable => Some("(unreadable)".into()),
                };
                profile.insert((group.clone(), m), value);
            }
        }
        let segments =
            self.segments.into_iter().enumerate().filter(|(_, s)| s.0 > 0).map(|(k, s)| (k as u64, s)).collect();
        (segments, profile)
    }
}

/// A key's hashes: `segment` (its segment is the low bits; see
/// [`Spec::arithmetic_key`]) and `exact` (xxh3 of its encoding, for
/// counting distinct keys), and whether no part of it is NULL.
pub struct KeyHash {
    pub segment: u64,
    pub exact: u64,
    pub complete: bool,
}

/// The hashes of a row's key, as `kind`'s side computes them.
///
/// On PostgreSQL's side the segment comes from the key's typed hash (see
/// `pg::key_seed`), so `cells` must be given there.
pub fn key_hash(
    spec: &Spec,
    kind: DatabaseKind,
    texts: &[Option<&str>],
    cells: Option<&[Cell<'_>]>,
    buf: &mut Vec<u8>,
) -> KeyHash {
    if let (DatabaseKind::Postgres, Some(cells)) = (kind, cells) {
        // The typed key hash is both the segment and the exact key.
        let hash = pg_key_hash(spec, cells);
        let complete = spec.key.iter().all(|&i| !matches!(cells[i], Cell::Null));
        return KeyHash { segment: hash, exact: hash, complete };
    }
    buf.clear();
    let mut complete = true;
    for &k in &spec.key {
        let c = &spec.columns[k];
        let h = texts[k].map(|t| hash_text(t, c.family, kind));
        complete &= h.is_some();
        push_field(buf, h.as_deref().map(str::as_bytes), c.family);
    }
    let segment = if spec.arithmetic_key() {
        checksum::arithmetic_key_hash(
            spec.key.iter().map(|&k| texts[k].and_then(|t| t.parse::<i128>().ok()).unwrap_or(0)),
        )
    } else {
        kind.hash64(buf)
    };
    KeyHash { segment, exact: xxhash_rust::xxh3::xxh3_64(buf), complete }
}

/// The sum, count and extremes of a batch's non-NULL values of a column
/// that [`observe_cell`] reads as whole numbers: integers, decimals
/// (unscaled), dates, timestamps and times.
#[derive(Clone, Copy)]
struct Numbers {
    sum: i128,
    count: usize,
    min: Option<i128>,
    max: Option<i128>,
}

fn numbers(column: &cells::Column<'_>, scale: i8) -> Option<Numbers> {
    use cells::Column as C;
    fn of(values: impl Iterator<Item = i128>) -> Numbers {
        values.fold(Numbers { sum: 0, count: 0, min: None, max: None }, |n, v| Numbers {
            sum: n.sum + v,
            count: n.count + 1,
            min: Some(n.min.map_or(v, |m| m.min(v))),
            max: Some(n.max.map_or(v, |m| m.max(v))),
        })
    }
    Some(match column {
        C::I8(a) => of(a.iter().flatten().map(i128::from)),
        C::I16(a) => of(a.iter().flatten().map(i128::from)),
        C::I32(a) => of(a.iter().flatten().map(i128::from)),
        C::I64(a) => of(a.iter().flatten().map(i128::from)),
        C::U8(a) => of(a.iter().flatten().map(i128::from)),
        C::U16(a) => of(a.iter().flatten().map(i128::from)),
        C::U32(a) => of(a.iter().flatten().map(i128::from)),
        C::U64(a) => of(a.iter().flatten().map(i128::from)),
        // At another scale than the column's, [`observe_cell`] reads its text.
        C::D128(a, s) if *s == scale => of(a.iter().flatten()),
        C::Date(a) => of(a.iter().flatten().map(i128::from)),
        C::Timestamp(a) => of(a.iter().flatten().map(i128::from)),
        C::Time(a) => of(a.iter().flatten().map(i128::from)),
        _ => return None,
    })
}

/// The cell of `column`'s type holding `v`, one of its [`numbers`].
fn number_cell(column: &cells::Column<'_>, v: i128) -> Cell<'static> {
    use cells::Column as C;
    match column {
        C::U8(_) | C::U16(_) | C::U32(_) | C::U64(_) => Cell::UInt(v as u64),
        C::D128(_, scale) => Cell::Decimal(v, *scale),
        C::Date(_) => Cell::Date(v as i32),
        C::Timestamp(_) => Cell::Timestamp(v as i64),
        C::Time(_) => Cell::Time(v as i64),
        _ => Cell::Int(v as i64),
    }
}

fn observe(acc: &mut Acc, text: &str, family: Family, scale: i8) {
    match acc {
        Acc::IntSum(s) => match text.parse::<i128>() {
            Ok(v) => *s = Some(s.unwrap_or(0) + v),
            Err(_) => *acc = Acc::Unreadable,
        },
        Acc::DecimalSum(s, scale) => match unscaled(text, *scale) {
            Some(v) => *s = Some(s.unwrap_or(0) + v),
            None => *acc = Acc::Unreadable,
        },
        Acc::FloatSum(s) => match text.parse::<f64>() {
            Ok(v) => *s = Some(s.unwrap_or(0.0) + v),
            Err(_) => *acc = Acc::Unreadable,
        },
        Acc::Extreme { min, best } => {
            // Compare before copying: most values are not a new extreme.
            let order = match family {
                Family::Int => text.parse::<i128>().ok().map(Order::Number),
                Family::Decimal => unscaled(text, scale).map(Order::Number),
                _ => None,
            };
            let better = match (&order, best.as_ref()) {
                (_, None) => true,
                (Some(o), Some((b, _))) => {
                    if *min {
                        o < b
                    } else {
                        o > b
                    }
                }
                (None, Some((Order::Text(b), _))) => {
                    if *min {
                        text < b.as_str()
                    } else {
                        text > b.as_str()
                    }
                }
                (None, Some(_)) => false,
            };
            if order.is_none() && matches!(family, Family::Int | Family::Decimal) {
                *acc = Acc::Unreadable;
                return;
            }
            if better {
                *best = Some((order.unwrap_or_else(|| Order::Text(text.to_owned())), text.to_owned()));
            }
        }
        Acc::Count(_) | Acc::Unreadable => {}
    }
}

/// [`observe`] for a value read from the stage: numbers are summed and
/// ordered as numbers, and only a new extreme is printed.
fn observe_cell(acc: &mut Acc, cell: &Cell<'_>, column: &SpecColumn, kind: DatabaseKind) {
    let number = match cell {
        Cell::Null => return,
        Cell::Int(v) => Some(i128::from(*v)),
        Cell::UInt(v) => Some(i128::from(*v)),
        Cell::Decimal(v, s) if *s == column.scale() => Some(*v),
        Cell::Date(d) => Some(i128::from(*d)),
        Cell::Timestamp(us) | Cell::Time(us) => Some(i128::from(*us)),
        _ => None,
    };
    let show = |cell: &Cell<'_>| checksum::show_text(cell, column.family, kind).unwrap_or_default();
    match (acc, number, cell) {
        (Acc::IntSum(s) | Acc::DecimalSum(s, _), Some(v), _) => *s = Some(s.unwrap_or(0) + v),
        (Acc::FloatSum(s), _, Cell::Float(v)) => *s = Some(s.unwrap_or(0.0) + v),
        (Acc::Extreme { min, best }, Some(v), _) => {
            let better = match best {
                Some((Order::Number(b), _)) => {
                    if *min {
                        v < *b
                    } else {
                        v > *b
                    }
                }
                Some(_) => false,
                None => true,
            };
            if better {
                *best = Some((Order::Number(v), show(cell)));
            }
        }
        (acc, _, cell) => {
            // Anything else goes the way of the texts.
            let text = show(cell);
            observe(acc, &text, column.family, column.scale());
        }
    }
}

/// A decimal's text (`-1.5`) as an unscaled integer at `scale` (`-150` at
/// 2), or `None` when it has more fraction digits than the scale or is not
/// a decimal.
pub fn unscaled(text: &str, scale: i8) -> Option<i128> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let scale = u32::try_from(scale).ok()?;
    let frac = frac.trim_end_matches('0');
    if frac.len() > scale as usize || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let part: i128 = if frac.is_empty() { 0 } else { frac.parse().ok()? };
    let v = whole.checked_mul(10i128.checked_pow(scale)?)?.checked_add(part * 10i128.pow(scale - frac.len() as u32))?;
    Some(if neg { -v } else { v })
}

/// Every row of a staged batch, as the shown texts of the spec's columns
/// (written into buffers reused from row to row) and its cells. With
/// `all_texts` false and on PostgreSQL's side, only the group column is
/// printed: the row and key hashes and the profile read the values.
/// Only the rows `rows` gives (in order) are read (all of them if `None`).
fn batch_rows(
    spec: &Spec,
    kind: DatabaseKind,
    batch: &RecordBatch,
    all_texts: bool,
    rows: Option<&[usize]>,
    mut each: impl FnMut(&[Option<&str>], &[Cell<'_>]),
) -> Result<(), String> {
    let mut columns = cells::columns(batch).map_err(|e| e.to_string())?;
    let n = spec.columns.len();
    let mut bufs: Vec<Vec<u8>> = vec![Vec::new(); n];
    let mut present = vec![false; n];
    let printed: Vec<bool> =
        (0..n).map(|i| all_texts || kind != DatabaseKind::Postgres || spec.group_by == Some(i)).collect();
    let mut row_cells: Vec<Cell<'_>> = Vec::with_capacity(n);
    let all: Vec<usize>;
    let rows = match rows {
        Some(rows) => rows,
        None => {
            all = (0..batch.num_rows()).collect();
            &all
        }
    };
    for &row in rows {
        row_cells.clear();
        row_cells.extend(spec.columns.iter().map(|c| columns[c.stage_index].cell(row)));
        for (i, c) in spec.columns.iter().enumerate() {
            if printed[i] {
                bufs[i].clear();
                present[i] = checksum::write_show(&row_cells[i], c.family, kind, &mut bufs[i]);
            }
        }
        let texts: Vec<Option<&str>> = bufs
            .iter()
            .zip(&present)
            .zip(&printed)
            .map(|((b, p), printed)| (*printed && *p).then(|| std::str::from_utf8(b).unwrap_or_default()))
            .collect();
        each(&texts, &row_cells);
    }
    Ok(())
}

/// The XOR of typed hashes of the spec's columns at `columns`, seeded by
/// `seed(position)` (see `pg::cell_hash`).
fn pg_hash(spec: &Spec, cells: &[Cell<'_>], columns: &[usize], seed: fn(usize) -> u64) -> u64 {
    columns.iter().enumerate().fold(0, |h, (k, &i)| {
        let (c, seed) = (&spec.columns[i], seed(k));
        h ^ pg::cell_hash(&cells[i], c.family, c.wide(), seed).unwrap_or_else(|| pg::null_hash(seed))
    })
}

/// [`pg_hash`] of every row of a batch, column by column, into `hashes`.
fn pg_fold(
    spec: &Spec,
    columns: &mut [cells::Column<'_>],
    rows: usize,
    at: &[usize],
    seed: fn(usize) -> u64,
    hashes: &mut Vec<u64>,
) {
    hashes.clear();
    hashes.resize(rows, 0);
    for (k, &i) in at.iter().enumerate() {
        let c = &spec.columns[i];
        pg::fold_column(&mut columns[c.stage_index], c.family, c.wide(), seed(k), hashes);
    }
}

/// [`pg_key_hash`] of every row of a batch, into `keys`.
fn pg_fold_key(spec: &Spec, columns: &mut [cells::Column<'_>], rows: usize, keys: &mut Vec<u64>) {
    pg_fold(spec, columns, rows, &spec.key, pg::key_seed, keys);
}

/// A row's hash on PostgreSQL, from its cells.
fn pg_row_hash(spec: &Spec, all: &[usize], cells: &[Cell<'_>]) -> u64 {
    pg_hash(spec, cells, all, pg::seed)
}

/// A key's hash on PostgreSQL, from the row's cells: its segment's source.
fn pg_key_hash(spec: &Spec, cells: &[Cell<'_>]) -> u64 {
    pg_hash(spec, cells, &spec.key, pg::key_seed)
}

/// Streams the stage once: its segment sums and profile, computed as the
/// `kind`'s side computes them.
pub async fn scan_stage(
    job: &LoadJob,
    spec: &Arc<Spec>,
    kind: DatabaseKind,
) -> Result<(SegmentSums, Profile), BackendError> {
    let (job, spec) = (job.clone(), Arc::clone(spec));
    let model = job.model.clone();
    run_blocking(&model, move || {
        let mut scan = Scan::new(spec, kind);
        scan.expect_rows(job.rows());
        let mut rx = job.read();
        while let Some(batch) = rx.blocking_recv() {
            scan.batch(&batch?).map_err(|message| BackendError::Read { model: job.model.clone(), message })?;
        }
        Ok(scan.finish())
    })
    .await
}

/// The staged rows whose key falls in `segments`.
pub async fn stage_rows_in(
    job: &LoadJob,
    spec: &Arc<Spec>,
    kind: DatabaseKind,
    segments: HashSet<u64>,
) -> Result<Vec<FetchedRow>, BackendError> {
    let (job, spec) = (job.clone(), Arc::clone(spec));
    let model = job.model.clone();
    run_blocking(&model, move || {
        let mut rows = Vec::new();
        let mut buf = Vec::new();
        let mut rx = job.read();
        let mut keys = Vec::new();
        let mask = spec.segment_mask();
        let fail = |message: String| BackendError::Read { model: job.model.clone(), message };
        while let Some(batch) = rx.blocking_recv() {
            let batch = batch?;
            // On PostgreSQL's side the segment comes from the values, hashed
            // column by column, so rows of other segments are never read.
            let wanted: Option<Vec<usize>> = if kind == DatabaseKind::Postgres {
                let mut columns = cells::columns(&batch).map_err(|e| fail(e.to_string()))?;
                pg_fold_key(&spec, &mut columns, batch.num_rows(), &mut keys);
                Some(
                    keys.iter()
                        .enumerate()
                        .filter(|(_, k)| segments.contains(&(**k & mask)))
                        .map(|(row, _)| row)
                        .collect(),
                )
            } else {
                None
            };
            batch_rows(&spec, kind, &batch, true, wanted.as_deref(), |texts, cells| {
                // Rows already picked by their key hash need no second look.
                let in_segment = wanted.is_some()
                    || segments.contains(&(key_hash(&spec, kind, texts, Some(cells), &mut buf).segment & mask));
                if in_segment {
                    rows.push(FetchedRow { values: texts.iter().map(|t| t.map(str::to_owned)).collect() });
                }
            })
            .map_err(fail)?;
        }
        Ok(rows)
    })
    .await
}

impl RowSink for Scan {
    fn row(&mut self, texts: &[Option<&str>]) {
        Scan::row(self, texts);
    }

    fn typed_row(&mut self, texts: &[Option<&str>], cells: &[Cell<'_>]) {
        self.pg_row(texts, cells);
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

/// The rows of a pulled target (SQLite's, read in-process) whose key falls
/// in the wanted segments, kept as they stream past.
pub struct SegmentRows {
    spec: Arc<Spec>,
    kind: DatabaseKind,
    wanted: HashSet<u64>,
    buf: Vec<u8>,
    pub rows: Vec<FetchedRow>,
}

impl SegmentRows {
    pub fn new(spec: Arc<Spec>, kind: DatabaseKind, segments: &[u64]) -> Self {
        SegmentRows { spec, kind, wanted: segments.iter().copied().collect(), buf: Vec::new(), rows: Vec::new() }
    }

    fn keep(&mut self, texts: &[Option<&str>], cells: Option<&[Cell<'_>]>) {
        let key = key_hash(&self.spec, self.kind, texts, cells, &mut self.buf);
        if self.wanted.contains(&(key.segment & self.spec.segment_mask())) {
            self.rows.push(FetchedRow { values: texts.iter().map(|t| t.map(str::to_owned)).collect() });
        }
    }
}

impl RowSink for SegmentRows {
    fn row(&mut self, texts: &[Option<&str>]) {
        self.keep(texts, None);
    }

    fn typed_row(&mut self, texts: &[Option<&str>], cells: &[Cell<'_>]) {
        self.keep(texts, Some(cells));
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int16Array, Int32Array, Int64Array,
        StringArray, StringViewArray, TimestampMicrosecondArray, UInt64Array,
    };
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;

    /// A batch of every family the column-wise scan reads itself, and some
    /// it leaves to cells, with NULLs in every column but the first.
    fn every_family() -> RecordBatch {
        let n = 300;
        let some = |i: usize| i % 7 != 3;
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("id", Arc::new(Int64Array::from_iter_values((0..n as i64).map(|i| i * 7919 - 1_000_000)))),
            ("small", Arc::new(Int16Array::from_iter((0..n).map(|i| some(i).then_some(i as i16 - 150))))),
            ("int", Arc::new(Int32Array::from_iter((0..n).map(|i| some(i).then_some(-(i as i32) * 31))))),
            ("wide", Arc::new(UInt64Array::from_iter((0..n).map(|i| some(i).then_some(u64::MAX - i as u64))))),
            (
                "amount",
                Arc::new(
                    Decimal128Array::from_iter((0..n).map(|i| some(i).then_some(i as i128 * 1_234_567 - 99_000_001)))
                        .with_precision_and_scale(15, 2)
                        .unwrap(),
                ),
            ),
            ("ratio", Arc::new(Float64Array::from_iter((0..n).map(|i| some(i).then_some(i as f64 / 3.0 - 7.5))))),
            ("flag", Arc::new(BooleanArray::from_iter((0..n).map(|i| some(i).then_some(i % 2 == 0))))),
            ("name", Arc::new(StringArray::from_iter((0..n).map(|i| some(i).then(|| format!("név {i}")))))),
            ("note", Arc::new(StringViewArray::from_iter((0..n).map(|i| some(i).then(|| "x".repeat(i % 40)))))),
            ("day", Arc::new(Date32Array::from_iter((0..n).map(|i| some(i).then_some(i as i32 * 11 - 900))))),
            (
                "at",
                Arc::new(TimestampMicrosecondArray::from_iter(
                    (0..n).map(|i| some(i).then_some(i as i64 * 3_600_000_123 - 10_000_000)),
                )),
            ),
        ];
        let fields: Vec<Field> =
            columns.iter().map(|(name, a)| Field::new(*name, a.data_type().clone(), true)).collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns.into_iter().map(|(_, a)| a).collect()).unwrap()
    }

    fn spec_of(batch: &RecordBatch, key: Vec<usize>) -> Spec {
        let columns: Vec<SpecColumn> = batch
            .schema()
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| SpecColumn {
                name: f.name().clone(),
                data_type: f.data_type().clone(),
                family: Family::of(f.data_type()),
                stage_index: i,
                key: key.contains(&i),
            })
            .collect();
        let mut measures = vec![Measure::Rows, Measure::DistinctKeys];
        for i in 0..columns.len() {
            measures.extend([Measure::Nulls(i), Measure::Sum(i), Measure::Min(i), Measure::Max(i)]);
        }
        Spec {
            table: crate::values::TableName { schema: "s".into(), name: "t".into() },
            columns,
            key,
            segment_bits: 4,
            measures,
            group_by: None,
            touched_only: false,
        }
    }

    #[test]
    fn column_wise_scan_agrees_with_the_row_by_row_scan() {
        let batch = every_family();
        assert_eq!(batch.column(0).data_type(), &DataType::Int64);
        assert_eq!(batch.column(10).data_type(), &DataType::Timestamp(TimeUnit::Microsecond, None));
        // A key of one column, and a composite key with a NULL part.
        for key in [vec![0], vec![0, 7]] {
            let spec = spec_of(&batch, key);
            let mut by_columns = Scan::new(Arc::new(spec.clone()), DatabaseKind::Postgres);
            by_columns.batch(&batch).unwrap();
            by_columns.batch(&batch.slice(100, 50)).unwrap();
            let mut by_rows = Scan::new(Arc::new(spec.clone()), DatabaseKind::Postgres);
            for b in [batch.clone(), batch.slice(100, 50)] {
                batch_rows(&spec, DatabaseKind::Postgres, &b, false, None, |texts, cells| by_rows.pg_row(texts, cells))
                    .unwrap();
            }
            let (columns_sums, columns_profile) = by_columns.finish();
            let (rows_sums, rows_profile) = by_rows.finish();
            assert_eq!(columns_sums, rows_sums, "key {:?}", spec.key);
            assert_eq!(columns_profile, rows_profile, "key {:?}", spec.key);
            assert_eq!(columns_profile[&(Group::All, Measure::Rows)].as_deref(), Some("350"));
        }
    }

    #[test]
    fn column_fold_agrees_with_each_cell_hash() {
        let batch = every_family();
        let mut columns = cells::columns(&batch).unwrap();
        for (i, f) in batch.schema().fields().iter().enumerate() {
            let (family, wide) = (Family::of(f.data_type()), f.data_type() == &DataType::UInt64);
            let mut folded = vec![0u64; batch.num_rows()];
            pg::fold_column(&mut columns[i], family, wide, 5, &mut folded);
            for (row, h) in folded.iter().enumerate() {
                let cell = columns[i].cell(row);
                let want = pg::cell_hash(&cell, family, wide, 5).unwrap_or(pg::null_hash(5));
                assert_eq!(*h, want, "column {} row {row}", f.name());
            }
        }
    }

    #[test]
    fn decimal_text_reads_back_at_its_scale() {
        assert_eq!(unscaled("-1.5", 2), Some(-150));
        assert_eq!(unscaled("2", 2), Some(200));
        assert_eq!(unscaled("0.125", 2), None);
        assert_eq!(unscaled("0.120", 2), Some(12));
        assert_eq!(unscaled("x", 2), None);
    }
}
