//! Target databases. Code for one database lives together under
//! `backend/<name>/`: its type mapping, its bulk path and its SQL for each
//! load mode. [`Connection`] picks the backend for a target.

mod error;
mod job;
pub mod mysql;
pub mod postgres;
pub mod preflight;
pub mod sqlite;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

pub use error::BackendError;
pub use job::{LoadColumn, LoadJob, LoadReport, NEW_SUFFIX, PREV_SUFFIX};

use crate::project::profiles::{ServerTarget, Target, TargetKind};
use crate::reconcile::{Dialect, FetchedRow, Profile, SegmentSums, Side, SideChoice, Spec};
use crate::values::TableName;

/// An open target.
pub enum Connection {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
    Mysql(mysql::Mysql),
}

impl Connection {
    pub async fn connect(target: &Target) -> Result<Self, BackendError> {
        Ok(match &target.kind {
            TargetKind::Sqlite { path, .. } => Connection::Sqlite(sqlite::Sqlite::new(path.clone())),
            TargetKind::Postgres(s) => Connection::Postgres(postgres::Postgres::connect(s, &target.name).await?),
            TargetKind::Mysql(s) => Connection::Mysql(mysql::Mysql::connect(s, &target.name).await?),
        })
    }

    /// What the open connection is, for `ferry debug`: the server's
    /// version and whether (and how) the connection is encrypted.
    pub async fn describe(&mut self) -> Result<String, BackendError> {
        match self {
            Connection::Sqlite(b) => Ok(format!("SQLite {} at `{}`", rusqlite::version(), b.path())),
            Connection::Postgres(b) => b.describe().await,
            Connection::Mysql(b) => b.describe().await,
        }
    }

    /// Loads one staged model; `rows` counts rows as they are sent.
    pub async fn load(&mut self, job: &LoadJob, rows: &Arc<AtomicU64>) -> Result<LoadReport, BackendError> {
        match self {
            Connection::Sqlite(b) => b.load(job, rows).await,
            Connection::Postgres(b) => b.load(job, rows).await,
            Connection::Mysql(b) => b.load(job, rows).await,
        }
    }

    /// The statements a load would run, after the same preflight checks.
    pub async fn dry_run(&mut self, job: &LoadJob) -> Result<Vec<String>, BackendError> {
        match self {
            Connection::Sqlite(b) => b.dry_run(job).await,
            Connection::Postgres(b) => b.dry_run(job).await,
            Connection::Mysql(b) => b.dry_run(job).await,
        }
    }

    /// Which canonical texts the target side can compute.
    pub fn dialect(&self) -> Dialect {
        match self {
            Connection::Sqlite(b) => b.dialect(),
            Connection::Postgres(b) => b.dialect(),
            Connection::Mysql(b) => b.dialect(),
        }
    }

    /// Where the target side of reconciling `spec` runs, given the
    /// configured choice, and why (for the report).
    /// `rows`: how many rows the target is expected to hold (the staged ones).
    pub async fn reconcile_side(
        &mut self,
        spec: &Spec,
        choice: SideChoice,
        rows: u64,
    ) -> Result<(Side, String), BackendError> {
        Ok(match self {
            Connection::Sqlite(_) => {
                let why = match choice {
                    SideChoice::Pushed => "SQLite is read in-process; `side: pushed` does not apply",
                    _ => "SQLite is read and hashed in-process",
                };
                (Side::Pulled, format!("pulled ({why})"))
            }
            Connection::Postgres(b) => b.reconcile_side(spec, choice, rows).await?,
            Connection::Mysql(b) => b.reconcile_side(spec, choice, rows),
        })
    }

    /// Puts `job`'s staged keys where the target side of a `touched_only`
    /// reconciliation reads them; the number of keys.
    pub async fn reconcile_scope(&mut self, job: &LoadJob) -> Result<u64, BackendError> {
        match self {
            Connection::Sqlite(b) => b.reconcile_scope(job).await,
            Connection::Postgres(b) => b.reconcile_scope(job).await,
            Connection::Mysql(b) => b.reconcile_scope(job).await,
        }
    }

    /// The target's segment sums and profile for a reconciliation,
    /// computed on `side` (see [`Connection::reconcile_side`]).
    pub async fn reconcile_summary(&mut self, spec: &Spec, side: Side) -> Result<(SegmentSums, Profile), BackendError> {
        match self {
            Connection::Sqlite(b) => b.reconcile_summary(spec).await,
            Connection::Postgres(b) if side == Side::Pulled => b.reconcile_pulled(spec).await,
            Connection::Postgres(b) => b.reconcile_summary(spec).await,
            Connection::Mysql(b) if side == Side::Pulled => b.reconcile_pulled(spec).await,
            Connection::Mysql(b) => b.reconcile_summary(spec).await,
        }
    }

    /// The target's rows in `segments`, as shown texts.
    pub async fn reconcile_rows(&mut self, spec: &Spec, segments: &[u64]) -> Result<Vec<FetchedRow>, BackendError> {
        match self {
            Connection::Sqlite(b) => b.reconcile_rows(spec, segments).await,
            Connection::Postgres(b) => b.reconcile_rows(spec, segments).await,
            Connection::Mysql(b) => b.reconcile_rows(spec, segments).await,
        }
    }

    /// Restores the table a `replace` load kept as `<table>__ferry_prev`.
    pub async fn rollback(&mut self, table: &TableName) -> Result<(), BackendError> {
        match self {
            Connection::Sqlite(b) => b.rollback(table).await,
            Connection::Postgres(b) => b.rollback(table).await,
            Connection::Mysql(b) => b.rollback(table).await,
        }
    }
}

/// An error with each of its causes (see [`crate::error::with_causes`]).
fn error_chain(e: &dyn std::error::Error) -> String {
    crate::error::with_causes(e.to_string(), e)
}

/// A connection error that names the target and its address.
fn connect_error(s: &ServerTarget, target_name: &str, message: String) -> BackendError {
    BackendError::Connect { target: format!("target `{target_name}` ({}:{})", s.host, s.port), message }
}

/// `name` as a quoted identifier, the quote character doubled inside.
pub fn quote(name: &str, quote: char) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push(quote);
    for c in name.chars() {
        if c == quote {
            out.push(quote);
        }
        out.push(c);
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn quote_doubles_the_quote_character() {
        assert_eq!(super::quote("we\"ird", '"'), "\"we\"\"ird\"");
        assert_eq!(super::quote("a`b", '`'), "`a``b`");
    }
}
