//! Reconciliation pulled from SQLite: the database is in-process, so ferry
//! reads the rows itself and feeds them to the caller's sink, which hashes
//! them with the stage side's code. SQLite keeps values by storage class,
//! not by declared type, so each is read back into the canonical text of
//! its staged column's family.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use camino::Utf8PathBuf;
use rusqlite::types::ValueRef;

use super::{Sqlite, db_error, q};
use crate::backend::checksum::{RowSink, Spec, SpecColumn};
use crate::backend::pipe::run_blocking;
use crate::backend::{BackendError, LoadJob};
use crate::values::cells::trim_decimal;
use crate::values::{Family, TableName};

/// The hash of a row or key encoding on SQLite's side, which ferry
/// computes itself: xxh3.
pub fn hash64(encoding: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(encoding)
}

/// A float's canonical text on SQLite's side: Rust's shortest round-trip
/// text (what ferry reads back from a REAL).
pub fn float_text(v: f64, single: bool) -> String {
    if single { format!("{}", v as f32) } else { format!("{v}") }
}

/// The canonical text of a stored value of column `c`.
fn value_text(v: ValueRef<'_>, c: &SpecColumn) -> Option<String> {
    let single = c.family == Family::Float32;
    Some(match v {
        ValueRef::Null => return None,
        ValueRef::Integer(i) => match c.family {
            Family::Bool => if i != 0 { "1" } else { "0" }.to_owned(),
            f if f.is_float() => float_text(i as f64, single),
            _ => i.to_string(),
        },
        ValueRef::Real(f) => match c.family {
            Family::Decimal => {
                let scale = usize::try_from(c.scale()).unwrap_or(0);
                trim_decimal(&format!("{f:.scale$}")).to_owned()
            }
            Family::Int | Family::Bool if f.fract() == 0.0 => format!("{}", f as i64),
            _ => float_text(f, single),
        },
        ValueRef::Text(t) => {
            let t = String::from_utf8_lossy(t);
            match c.family {
                Family::Decimal => trim_decimal(&t).to_owned(),
                // Zoned timestamps are stored with their UTC offset.
                Family::Timestamp => t.strip_suffix("+00:00").unwrap_or(&t).to_owned(),
                _ => t.into_owned(),
            }
        }
        ValueRef::Blob(b) => match c.family {
            Family::Binary => hex::encode(b),
            _ => String::from_utf8_lossy(b).into_owned(),
        },
    })
}

/// The table, in the database of its own, that holds the staged keys of a
/// scoped reconciliation (`Spec::touched_only`).
const KEYS: &str = "ferry_reconcile_keys";

/// Calls `each` with the canonical texts of every row of the table (of the
/// rows whose key was staged, for a `touched_only` spec).
fn each_row(sqlite: &Sqlite, spec: &Spec, mut each: impl FnMut(&[Option<&str>])) -> Result<(), BackendError> {
    let conn = sqlite.open(&spec.table)?;
    let fail = |e: rusqlite::Error| db_error(&spec.table, "reading rows", &e);
    let cols: Vec<String> = spec.columns.iter().map(|c| q(&c.name)).collect();
    let mut sql = format!("SELECT {} FROM {}", cols.join(", "), q(&spec.table.name));
    if spec.touched_only {
        let Some(dir) = &sqlite.reconcile_keys else {
            return Err(db_error(&spec.table, "reading rows", &rusqlite::Error::InvalidQuery));
        };
        let path = dir.path().join("keys.db");
        conn.execute("ATTACH DATABASE ?1 AS ferry_keys", [path.to_string_lossy()]).map_err(fail)?;
        let keys = spec.key.iter().map(|&k| q(&spec.columns[k].name)).collect::<Vec<_>>().join(", ");
        sql.push_str(&format!(" WHERE ({keys}) IN (SELECT {keys} FROM ferry_keys.{})", q(KEYS)));
    }
    let mut stmt = conn.prepare(&sql).map_err(fail)?;
    let mut rows = stmt.query([]).map_err(fail)?;
    let mut texts: Vec<Option<String>> = vec![None; spec.columns.len()];
    while let Some(row) = rows.next().map_err(fail)? {
        for (i, c) in spec.columns.iter().enumerate() {
            texts[i] = value_text(row.get_ref(i).map_err(fail)?, c);
        }
        let row: Vec<Option<&str>> = texts.iter().map(Option::as_deref).collect();
        each(&row);
    }
    Ok(())
}

impl Sqlite {
    /// Loads `job`'s staged keys into a database of their own, which later
    /// reads of a `touched_only` spec attach; the number of keys.
    pub async fn reconcile_scope(&mut self, job: &LoadJob) -> Result<u64, BackendError> {
        let dir = self.path.parent().map(|p| p.as_std_path().to_owned()).unwrap_or_else(std::env::temp_dir);
        let dir =
            tempfile::Builder::new().prefix(".ferry-reconcile-").tempdir_in(dir).map_err(|e| BackendError::Read {
                model: job.model.clone(),
                message: format!("cannot create a scratch database for the staged keys: {e}"),
            })?;
        let path = Utf8PathBuf::from_path_buf(dir.path().join("keys.db")).map_err(|p| BackendError::Read {
            model: job.model.clone(),
            message: format!("the scratch path {} is not UTF-8", p.display()),
        })?;
        let keys = job.keys_only(TableName { schema: "main".into(), name: KEYS.into() });
        let scratch = Sqlite::new(path);
        let mut loaded = scratch.load(&keys, &Arc::new(AtomicU64::new(0))).await?.rows;
        if let Some(gone) = job.hard_deleted_keys(keys.table.clone()) {
            loaded += scratch.load(&gone, &Arc::new(AtomicU64::new(0))).await?.rows;
        }
        self.reconcile_keys = Some(Arc::new(dir));
        Ok(loaded)
    }

    /// Feeds every row of the table (of the rows whose key was staged, for
    /// a `touched_only` spec) to `sink`, on a thread of its own.
    pub async fn pull_rows(&self, spec: &Spec, mut sink: Box<dyn RowSink>) -> Result<Box<dyn RowSink>, BackendError> {
        let (this, spec) = (self.clone(), spec.clone());
        run_blocking(&spec.table.to_string(), move || {
            each_row(&this, &spec, |texts| sink.row(texts))?;
            Ok(sink)
        })
        .await
    }
}
