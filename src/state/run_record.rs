//! A run's own record, `.ferry/runs/<run id>/run.json`: what ran (command,
//! selection, times, ferry version, git commit), every node's result as
//! `run_results.json` has it, and the lineage of the nodes it ran (each
//! node with what it reads and the target table it was loaded into), so
//! that the run can be reported on later (`ferry report --run ID`) even
//! after other runs have replaced `run_results.json` and `manifest.json`.

use anyhow::{Context as _, Result};
use camino::Utf8PathBuf;
use serde::{Deserialize, Serialize};

use super::RunDir;
use super::files;
use super::run_results::RunResults;

/// The version of `run.json`'s shape; a later one only adds fields.
pub const SCHEMA_VERSION: u32 = 1;

/// The file's name in a run's directory.
pub const FILE: &str = "run.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub schema_version: u32,
    pub run_id: String,
    pub project_name: String,
    /// `build`, `run`, `seed`, `test` or `snapshot`.
    pub command: String,
    /// The selection as given (empty: everything).
    pub selection: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub ended_at: String,
    pub git_commit: Option<String>,
    /// Where the run loaded (`sqlite: .ferry/target.db`, `postgres: ...`),
    /// without secrets.
    pub target: String,
    pub results: RunResults,
    /// The nodes the run ran and the sources, seeds and models they read.
    pub lineage: Vec<LineageNode>,
    /// Whether the run masked personal data (`--mask`, `masking: true`).
    #[serde(default)]
    pub masked: bool,
    /// The Ballista cluster the models ran on, if not ferry's own process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterRun>,
}

/// Where a run's queries ran, when on a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRun {
    /// `df://host:port`.
    pub scheduler: String,
    /// The tables ferry read on its own host and staged for the cluster,
    /// which cannot read them itself.
    pub read_here: Vec<String>,
}

/// One node of the lineage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineageNode {
    pub unique_id: String,
    pub name: String,
    /// `source`, `seed`, `model`, `snapshot`.
    pub resource_type: String,
    pub materialized: Option<String>,
    /// Unique ids of the lineage nodes it reads.
    pub depends_on: Vec<String>,
}

impl RunRecord {
    /// Writes the record into its run's directory (atomically); the path.
    pub fn write(&self, run: &RunDir) -> Result<Utf8PathBuf> {
        let file = run.join(FILE);
        files::write_atomic(&file.path, &serde_json::to_vec_pretty(self)?, true)
            .with_context(|| format!("failed to write `{}`", file.path))?;
        Ok(file.shown)
    }

    /// Reads a run's record; `None` if the run left none.
    pub fn read(run: &RunDir) -> Result<Option<RunRecord>> {
        let file = run.join(FILE);
        let text = match fs_err::read_to_string(&file.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let record = serde_json::from_str(&text).with_context(|| format!("`{}` is not a run record", file.shown))?;
        Ok(Some(record))
    }
}
