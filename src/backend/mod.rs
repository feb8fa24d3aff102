//! Everything ferry knows of the databases it talks to, one database per
//! directory (`backend/<name>/`): its type mapping, its bulk load path and
//! SQL for each load mode, how it computes a reconciliation (in SQL, or by
//! streaming rows out), and its own hashes and printed forms reproduced in
//! ferry. [`DatabaseKind`] is the one answer to "which database";
//! [`connect`] opens a target as a [`Backend`].
//!
//! Backends offer capabilities (connect, bulk load a [`LoadJob`], describe
//! an existing table, answer a [`checksum::Spec`]) and never decide policy:
//! which nodes load, in which order, and what a reconciliation concludes
//! belong to the load and reconcile policies (`load/`, `reconcile/`),
//! which call in here and are never called from here.

pub mod checksum;
mod error;
mod job;
pub mod mysql;
pub mod pipe;
pub mod postgres;
pub mod preflight;
pub mod profiles;
pub mod sqlite;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

pub use error::BackendError;
pub use job::{
    ColumnSync, KeyDeletes, LoadColumn, LoadJob, LoadReport, NEW_SUFFIX, PREV_SUFFIX, ReplacedWindow, SoftDelete,
};

use crate::values::TableName;
use checksum::{FetchedRow, Profile, RowSink, SegmentSums, Side, SideChoice, Spec};
use preflight::TargetColumn;
use profiles::{Address, ServerTarget, Target};

/// Which database: of a target, of a database source, of the side of a
/// reconciliation whose hashes and texts must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    Postgres,
    /// MySQL and MariaDB.
    Mysql,
    Sqlite,
    /// SQL Server, as a database source only (never a target).
    Mssql,
}

impl DatabaseKind {
    /// The database a connection URL reaches, by its scheme.
    pub fn of_url(url: &str) -> Option<Self> {
        let scheme = url.split("://").next()?.split('+').next()?;
        Some(match scheme {
            "postgres" | "postgresql" => DatabaseKind::Postgres,
            "mysql" | "mariadb" => DatabaseKind::Mysql,
            "sqlite" => DatabaseKind::Sqlite,
            "mssql" | "sqlserver" => DatabaseKind::Mssql,
            _ => return None,
        })
    }

    /// The name a profile's `type:` gives it.
    pub fn type_name(self) -> &'static str {
        match self {
            DatabaseKind::Postgres => "postgres",
            DatabaseKind::Mysql => "mysql",
            DatabaseKind::Sqlite => "sqlite",
            DatabaseKind::Mssql => "mssql",
        }
    }

    /// `ident` as the database quotes an identifier.
    pub fn quote(self, ident: &str) -> String {
        match self {
            DatabaseKind::Mysql => quote(ident, '`'),
            DatabaseKind::Mssql => format!("[{}]", ident.replace(']', "]]")),
            DatabaseKind::Postgres | DatabaseKind::Sqlite => quote(ident, '"'),
        }
    }

    /// The 64-bit hash of a row or key encoding (see [`checksum`]) as this
    /// database's side computes it: PostgreSQL's `hashtextextended(text,
    /// 0)`, MySQL's MD5 (first 8 bytes); SQLite's rows are hashed by ferry
    /// itself, with xxh3.
    pub fn hash64(self, encoding: &[u8]) -> u64 {
        match self {
            DatabaseKind::Postgres => postgres::hash::hash_bytes_extended(encoding, 0),
            DatabaseKind::Mysql => mysql::hash::hash64(encoding),
            DatabaseKind::Sqlite | DatabaseKind::Mssql => sqlite::reconcile::hash64(encoding),
        }
    }

    /// A float's canonical text as this database's side produces it.
    pub fn float_text(self, v: f64, single: bool) -> String {
        match self {
            DatabaseKind::Postgres => postgres::hash::float_text(v, single),
            DatabaseKind::Mysql => mysql::hash::float_text(v, single),
            DatabaseKind::Sqlite | DatabaseKind::Mssql => sqlite::reconcile::float_text(v, single),
        }
    }
}

/// What every backend can do with an open target. Each database
/// implements it beside its loader (`backend/<db>/mod.rs`); [`connect`]
/// opens the one a target's [`DatabaseKind`] names.
#[async_trait::async_trait]
pub trait Backend: Send {
    /// Which database the connection reaches.
    fn kind(&self) -> DatabaseKind;

    /// What the open connection is, for `ferry debug`: the server's
    /// version and whether (and how) the connection is encrypted.
    async fn describe(&mut self) -> Result<String, BackendError>;

    /// Loads one staged model; `rows` counts rows as they are sent.
    async fn load(&mut self, job: &LoadJob, rows: &Arc<AtomicU64>) -> Result<LoadReport, BackendError>;

    /// The statements a load would run, after the same preflight checks.
    async fn dry_run(&mut self, job: &LoadJob) -> Result<Vec<String>, BackendError>;

    /// Restores the table a `replace` load kept as `<table>__ferry_prev`.
    async fn rollback(&mut self, table: &TableName) -> Result<(), BackendError>;

    /// The columns of `table` as the database has them, or `None` when
    /// there is no such table.
    async fn table_columns(&mut self, table: &TableName) -> Result<Option<Vec<TargetColumn>>, BackendError>;

    /// Where the target side of reconciling `spec` runs, given the
    /// configured choice, and why (for the report). `rows`: how many rows
    /// the target is expected to hold (the staged ones).
    async fn reconcile_side(
        &mut self,
        spec: &Spec,
        choice: SideChoice,
        rows: u64,
    ) -> Result<(Side, String), BackendError>;

    /// Puts `job`'s staged keys where the target side of a `touched_only`
    /// reconciliation reads them; the number of keys.
    async fn reconcile_scope(&mut self, job: &LoadJob) -> Result<u64, BackendError>;

    /// The target's segment sums and profile, computed by the database
    /// (the pushed-down side).
    async fn pushed_summary(&mut self, spec: &Spec) -> Result<(SegmentSums, Profile), BackendError>;

    /// The target's rows in `segments`, as shown texts, selected by the
    /// database; `None` when it cannot select them (then they are pulled).
    async fn pushed_rows(&mut self, spec: &Spec, segments: &[u64]) -> Result<Option<Vec<FetchedRow>>, BackendError>;

    /// Feeds every compared row of the target to `sink` (the pulled side)
    /// and hands the sink back.
    async fn pull_rows(&mut self, spec: &Spec, sink: Box<dyn RowSink>) -> Result<Box<dyn RowSink>, BackendError>;
}

/// An open target.
pub type Connection = Box<dyn Backend>;

/// Opens `target`: its file (SQLite, in-process) or a connection to its server.
pub async fn connect(target: &Target) -> Result<Connection, BackendError> {
    Ok(match (&target.address, target.kind) {
        (Address::File { path, .. }, _) => Box::new(sqlite::Sqlite::new(path.clone())),
        (Address::Server(s), DatabaseKind::Mysql) => Box::new(mysql::Mysql::connect(s, &target.name).await?),
        (Address::Server(s), _) => Box::new(postgres::Postgres::connect(s, &target.name).await?),
    })
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
