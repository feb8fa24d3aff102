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
    /// The cluster's jobs, one per query, in the order they finished.
    #[serde(default)]
    pub jobs: Vec<ClusterJob>,
}

/// One query run on the cluster, as its scheduler reports it: a Ballista
/// job, split into stages of tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterJob {
    /// The node whose query it was (`None`: a query of the run itself).
    pub node: Option<String>,
    pub job_id: String,
    /// Milliseconds from the job's start to its end on the cluster, as the
    /// scheduler measured them.
    pub millis: u64,
    /// Its stages, in the order they ran (the last one produced the result).
    pub stages: Vec<ClusterStage>,
    /// The executors that ran the last stage, and so hold the result the
    /// client fetched.
    pub executors: Vec<ClusterExecutor>,
}

/// One stage of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStage {
    pub stage_id: u32,
    /// One task per partition.
    pub tasks: u32,
    /// Rows the stage wrote for the next (or for the client), when known.
    pub rows: Option<u64>,
}

/// An executor's share of a job's last stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterExecutor {
    /// The executor's id, as the scheduler knows it.
    pub id: String,
    /// `host:port` of its data service.
    pub address: String,
    /// The result partitions it computed.
    pub tasks: u32,
    pub rows: u64,
    pub bytes: u64,
}

impl ClusterJob {
    /// The job's tasks, over all its stages.
    pub fn tasks(&self) -> u32 {
        self.stages.iter().map(|s| s.tasks).sum()
    }

    /// `2 stages of 4 and 2 tasks, the result from 127.0.0.1:4001 (2) and 127.0.0.1:4003 (2)`.
    pub fn describe(&self) -> String {
        let stages = match self.stages.as_slice() {
            [] => "no stage reported".to_owned(),
            [one] => format!("1 stage of {} task{}", one.tasks, plural(one.tasks)),
            many => {
                let counts: Vec<String> = many.iter().map(|s| s.tasks.to_string()).collect();
                let (last, rest) = counts.split_last().expect("more than one");
                format!("{} stages of {} and {last} tasks", many.len(), rest.join(", "))
            }
        };
        if self.executors.is_empty() {
            return stages;
        }
        let from: Vec<String> = self.executors.iter().map(|e| format!("{} ({})", e.address, e.tasks)).collect();
        format!("{stages}, the result from {}", from.join(" and "))
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
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
