//! One run at a time per project: `.ferry/run.lock`, held with the
//! operating system's file lock for as long as a command that changes
//! stages, state or the target runs.
//!
//! The kernel releases the lock when its process ends, however it ends
//! (exit, panic, SIGKILL, Ctrl-C), so a lock left by a dead process never
//! holds a project; the file's text (process id, host, command, start) only
//! names the holder for the run that finds it held, and is rewritten by
//! each holder. On a network file system the lock is the server's (NFS
//! maps it to its byte-range locks), so runs on two hosts exclude each
//! other too.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, Write as _};
use std::time::Duration;

use camino::Utf8PathBuf;
use serde::{Deserialize, Serialize};

use super::Layout;

/// Why the project's lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another ferry run is working on this project: {holder}")]
    Held { holder: Holder },
    #[error("cannot lock `{path}`: {source}")]
    Io { path: Utf8PathBuf, source: std::io::Error },
}

/// Who holds a project's lock, as its file says.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    pub command: String,
    pub started_at: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.pid == 0 {
            return f.write_str("a process that has not yet said which");
        }
        write!(f, "`ferry {}`, process {} on {}, since {}", self.command, self.pid, self.host, self.started_at)
    }
}

/// The project's lock, held until dropped.
#[derive(Debug)]
pub struct ProjectLock {
    file: File,
    pub path: Utf8PathBuf,
}

impl ProjectLock {
    /// Takes the project's lock for `command`, or says who holds it.
    pub fn try_acquire(layout: &Layout, command: &str) -> Result<ProjectLock, LockError> {
        let path = layout.lock_file();
        let io = |source| LockError::Io { path: path.clone(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(LockError::Held { holder: read_holder(&mut file) }),
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let holder = Holder {
            pid: std::process::id(),
            host: hostname(),
            command: command.to_owned(),
            started_at: chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        };
        let text = serde_json::to_string(&holder).unwrap_or_default();
        file.set_len(0).and_then(|()| file.rewind()).and_then(|()| file.write_all(text.as_bytes())).map_err(io)?;
        Ok(ProjectLock { file, path })
    }

    /// Takes the project's lock, waiting while another run holds it;
    /// `waiting` is told who, once.
    pub async fn acquire(layout: &Layout, command: &str, waiting: impl FnOnce(&Holder)) -> Result<Self, LockError> {
        let mut waiting = Some(waiting);
        loop {
            match Self::try_acquire(layout, command) {
                Err(LockError::Held { holder }) => {
                    if let Some(tell) = waiting.take() {
                        tell(&holder);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => return other,
            }
        }
    }
}

impl Drop for ProjectLock {
    fn drop(&mut self) {
        // Closing the file releases the lock as well; this says so sooner.
        let _ = self.file.unlock();
    }
}

fn read_holder(file: &mut File) -> Holder {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    serde_json::from_str(&text).unwrap_or_default()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .or_else(|_| std::env::var("COMPUTERNAME"))
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "an unknown host".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_first_and_a_dropped_one_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(Utf8PathBuf::try_from(dir.path().to_owned()).unwrap());
        let first = ProjectLock::try_acquire(&layout, "build").unwrap();
        let Err(LockError::Held { holder }) = ProjectLock::try_acquire(&layout, "run") else {
            panic!("the lock was taken twice")
        };
        assert_eq!((holder.pid, holder.command.as_str()), (std::process::id(), "build"));
        assert!(holder.to_string().starts_with("`ferry build`, process "), "{holder}");
        drop(first);
        let again = ProjectLock::try_acquire(&layout, "run").unwrap();
        assert!(again.path.ends_with("run.lock"));
    }
}
