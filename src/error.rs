//! How a run ends: exit codes, and telling user errors from bugs.

use std::process::ExitCode;

/// The process's exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Everything succeeded.
    Success,
    /// Models, rules or checks failed (the user's input needs fixing).
    Failure,
    /// ferry itself failed (IO, a bad invocation, a bug).
    Error,
    /// Stopped by Ctrl-C (128 + SIGINT, as shells expect).
    Interrupted,
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        match status {
            ExitStatus::Success => ExitCode::from(0),
            ExitStatus::Failure => ExitCode::from(1),
            ExitStatus::Error => ExitCode::from(2),
            ExitStatus::Interrupted => ExitCode::from(130),
        }
    }
}

/// True when the error chain holds a broken pipe (`ferry ls | head`), which
/// is not a failure.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}
