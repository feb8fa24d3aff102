//! The `.ferry/` directory of a project, in one place: every path ferry
//! reads or writes there is a method of [`Layout`], so the layout can change
//! (or move to an object store) without a hunt through the code.

use camino::{Utf8Path, Utf8PathBuf};

/// The directory, relative to the project root.
pub const FERRY_DIR: &str = ".ferry";

/// The `.ferry/` layout of one project.
///
/// ```text
/// .ferry/
///   stage/<model>/          staged tables (their format: the stage module)
///   runs/<run id>/          what one run found: quarantine/, errors/,
///                           test_failures/, reconcile.json
///   compiled/<path>.sql     rendered SQL of models and tests
///   scratch/<run id>/       views computed once, removed after the run
///   spill/                  sorts and joins beyond the memory limit
///   tmp/                    short-lived directories of one command
///   state/                  what runs keep for later runs
///   run_results.json        the last run's results
///   manifest.json           the last compile's nodes
///   ferry.db                the embedded SQLite target
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The project root (absolute).
    root: Utf8PathBuf,
}

/// A directory of one run, as written and as shown to the user (relative
/// to the project root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    pub path: Utf8PathBuf,
    pub shown: Utf8PathBuf,
}

impl RunDir {
    /// A directory or file inside this one.
    pub fn join(&self, rel: impl AsRef<Utf8Path>) -> RunDir {
        RunDir { path: self.path.join(rel.as_ref()), shown: self.shown.join(rel.as_ref()) }
    }

    /// The names of the directories in this one that hold `file` (a run's
    /// `run.json`, an audit's `audit.json`), newest first by when that file
    /// was written.
    pub fn newest_holding(&self, file: &str) -> Vec<String> {
        let Ok(entries) = fs_err::read_dir(&self.path) else { return Vec::new() };
        let mut found: Vec<(std::time::SystemTime, String)> = entries
            .flatten()
            .filter_map(|e| {
                let modified = fs_err::metadata(e.path().join(file)).ok()?.modified().ok()?;
                Some((modified, e.file_name().to_str()?.to_owned()))
            })
            .collect();
        found.sort_by(|a, b| b.cmp(a));
        found.into_iter().map(|(_, name)| name).collect()
    }
}

impl Layout {
    pub fn new(project_root: impl Into<Utf8PathBuf>) -> Self {
        Layout { root: project_root.into() }
    }

    /// The project root.
    pub fn root(&self) -> &Utf8Path {
        &self.root
    }

    fn path(&self, rel: &str) -> Utf8PathBuf {
        self.root.join(FERRY_DIR).join(rel)
    }

    /// The lock one run at a time holds: `.ferry/run.lock`.
    pub fn lock_file(&self) -> Utf8PathBuf {
        self.path("run.lock")
    }

    /// Where staged tables and seeds live: `.ferry/stage`.
    pub fn stage_root(&self) -> Utf8PathBuf {
        self.path("stage")
    }

    /// Where one node's stage lives.
    pub fn stage_dir(&self, node: &str) -> Utf8PathBuf {
        self.stage_root().join(node)
    }

    /// Every run's directory: `.ferry/runs`.
    pub fn runs(&self) -> RunDir {
        RunDir { path: self.path("runs"), shown: Utf8Path::new(FERRY_DIR).join("runs") }
    }

    /// One run's directory: `.ferry/runs/<run id>`.
    pub fn run(&self, run_id: &str) -> RunDir {
        self.runs().join(run_id)
    }

    /// The source audits' directory: `.ferry/audit`.
    pub fn audits(&self) -> RunDir {
        RunDir { path: self.path("audit"), shown: Utf8Path::new(FERRY_DIR).join("audit") }
    }

    /// One source audit's directory: `.ferry/audit/<run id>`.
    pub fn audit(&self, run_id: &str) -> RunDir {
        self.audits().join(run_id)
    }

    /// Where the rendered SQL of a template is written, relative to the
    /// project root (`.ferry/compiled/models/x.sql`).
    pub fn compiled(template: &Utf8Path) -> Utf8PathBuf {
        Utf8Path::new(FERRY_DIR).join("compiled").join(template)
    }

    /// Views a run computes once, removed when it ends: `.ferry/scratch/<run id>`.
    pub fn scratch(&self, run_id: &str) -> Utf8PathBuf {
        self.path("scratch").join(run_id)
    }

    /// Where DataFusion spills: `.ferry/spill`.
    pub fn spill(&self) -> Utf8PathBuf {
        self.path("spill")
    }

    /// Short-lived directories of one command: `.ferry/tmp`.
    pub fn tmp(&self) -> Utf8PathBuf {
        self.path("tmp")
    }

    /// What runs keep for later runs: `.ferry/state`.
    pub fn state(&self) -> Utf8PathBuf {
        self.path("state")
    }

    /// An incremental model's high-water mark: `.ferry/state/watermarks/<model>.json`.
    pub fn watermark(&self, model: &str) -> Utf8PathBuf {
        self.state().join("watermarks").join(format!("{model}.json"))
    }

    /// The last run's results: `.ferry/run_results.json`.
    pub fn run_results(&self) -> Utf8PathBuf {
        self.path("run_results.json")
    }

    /// The last compile's nodes: `.ferry/manifest.json`.
    pub fn manifest(&self) -> Utf8PathBuf {
        self.path("manifest.json")
    }

    /// The embedded SQLite target, used when no profile exists.
    pub fn embedded_database(&self) -> Utf8PathBuf {
        self.path("ferry.db")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_directories_are_written_absolute_and_shown_relative() {
        let layout = Layout::new("/p");
        let run = layout.run("abc").join("errors");
        assert_eq!(run.path, "/p/.ferry/runs/abc/errors");
        assert_eq!(run.shown, ".ferry/runs/abc/errors");
        assert_eq!(layout.stage_dir("orders"), "/p/.ferry/stage/orders");
        assert_eq!(Layout::compiled(Utf8Path::new("models/a.sql")), ".ferry/compiled/models/a.sql");
    }
}
