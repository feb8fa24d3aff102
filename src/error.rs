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

/// `message`, then each cause of `e` (its sources, in order) that the text
/// so far does not already hold: drivers and object stores nest the reason
/// a level or two down ("error sending request: ... certificate verify
/// failed"), and some repeat it.
pub fn with_causes(mut message: String, e: &dyn std::error::Error) -> String {
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
        cause = c.source();
    }
    message
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct E(String, #[source] Option<Box<E>>);

    #[test]
    fn causes_follow_the_message_once_each() {
        let inner = E("certificate verify failed".into(), None);
        let middle = E("error sending request: certificate verify failed".into(), Some(Box::new(inner)));
        let outer = E("HTTP error".into(), Some(Box::new(middle)));
        assert_eq!(
            super::with_causes(outer.to_string(), &outer),
            "HTTP error: error sending request: certificate verify failed"
        );
        assert_eq!(super::with_causes(String::new(), &outer), "error sending request: certificate verify failed");
    }
}
