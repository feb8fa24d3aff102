//! What goes wrong talking to a target database. A failed load leaves the
//! target as it was before; a failed reconciliation changed nothing.

use crate::diagnostic::{Code, Diagnostic};
use crate::stage::StageError;
use crate::stage::read::ReadError;

/// Why a backend call failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot connect to {target}: {message}")]
    Connect { target: String, message: String },
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error("cannot read the stage of `{model}`: {message}")]
    Read { model: String, message: String },
    #[error("`{table}` does not fit the staged rows of `{model}`")]
    Preflight { model: String, table: String, problems: Vec<String> },
    /// The stage itself cannot be loaded anywhere, whatever the mode.
    #[error("the stage of `{model}` cannot be loaded into `{table}`")]
    Unloadable { model: String, table: String, problems: Vec<String> },
    #[error("loading `{table}` failed while {doing}: {message}")]
    Database { table: String, doing: String, message: String },
    #[error("loading `{table}` moved {loaded} rows but the stage holds {expected}; nothing was committed")]
    RowCount { table: String, expected: u64, loaded: u64 },
    #[error("cannot roll back `{table}`: {message}")]
    Rollback { table: String, message: String },
}

impl From<ReadError> for BackendError {
    fn from(e: ReadError) -> Self {
        BackendError::Read { model: e.model, message: e.message }
    }
}

impl BackendError {
    /// `ferry rollback` on a table no `replace` load has kept a copy of.
    pub fn nothing_to_restore(table: impl std::fmt::Display, prev: impl std::fmt::Display) -> Self {
        BackendError::Rollback {
            table: table.to_string(),
            message: format!("there is no `{prev}` to restore (a `replace` load keeps one)"),
        }
    }

    /// What a step that is not a load (a reconciliation) says of the
    /// error: the database's message with what was being done, else the
    /// error itself.
    pub fn reason(self) -> String {
        match self {
            BackendError::Database { doing, message, .. } => format!("{doing}: {message}"),
            other => other.to_string(),
        }
    }

    /// The error as a diagnostic for `model`.
    pub fn to_diagnostic(&self, model: &str) -> Diagnostic {
        let mut d = Diagnostic::error(Code::Load, format!("{model}: {self}"));
        match self {
            BackendError::Preflight { problems, .. } | BackendError::Unloadable { problems, .. } => {
                for p in problems {
                    d = d.with_note(p.clone());
                }
                d = d.with_help(if matches!(self, BackendError::Preflight { .. }) {
                    "change the table (or drop it), or load with `mode: replace`, which rebuilds it from the stage"
                        .to_owned()
                } else {
                    format!("change `{model}` (its `unique_key`, or cast the column to a type targets hold) and run it again")
                });
            }
            BackendError::Stage(_) | BackendError::Read { .. } => {
                d = d.with_help(format!("run `ferry run -s {model}` to stage it again"));
            }
            BackendError::Connect { .. } => d = d.with_help("check the target with `ferry debug`"),
            BackendError::Database { .. } | BackendError::RowCount { .. } => {
                d = d.with_note("the load was rolled back: the target table is as it was before");
            }
            BackendError::Rollback { .. } => {}
        }
        d
    }
}
