//! Command-line arguments (clap derive types only; the doc comments are the help).

use camino::Utf8PathBuf;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Move data between systems with SQL you can trust.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub global: GlobalArgs,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The project directory (default: the nearest one holding `ferry.yml` or `dbt_project.yml`).
    #[arg(long, global = true, env = "FERRY_PROJECT_DIR")]
    pub project_dir: Option<Utf8PathBuf>,
    /// Where to find `profiles.yml` (default: the project dir, `~/.ferry/`, `~/.dbt/`).
    #[arg(long, global = true, env = "FERRY_PROFILES_DIR")]
    pub profiles_dir: Option<Utf8PathBuf>,
    /// The profile to use (default: the project file's `profile:`, else its name).
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// The profile output (target) to use (default: the profile's `target:`).
    #[arg(short, long, global = true)]
    pub target: Option<String>,
    /// Variables for `var()`, as YAML: `--vars '{start_date: 2024-01-01}'`.
    #[arg(long, global = true)]
    pub vars: Option<String>,
    /// Mask personal data as the columns' `mask:` policies say (as a
    /// profile's `masking: true` does); the key is read from
    /// `FERRY_MASKING_KEY` (or the profile's `masking_key_env`).
    #[arg(long, global = true)]
    pub mask: bool,
    /// In a masked run, a column that looks personal (by its name, or as
    /// the latest `ferry audit` found) but has no `mask:` policy is an
    /// error, not a warning.
    #[arg(long, global = true)]
    pub require_masking: bool,
    /// How to print diagnostics.
    #[arg(long, global = true, value_enum, env = "FERRY_FORMAT")]
    pub format: Option<OutputFormat>,
    /// More logging: `-v` debug, `-vv` trace (`RUST_LOG` overrides).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Run the models on this Apache DataFusion Ballista cluster
    /// (`df://host:port`, `?partitions=N` to split each shuffle N ways,
    /// `start_timeout=2m` for how long a job may wait to start)
    /// instead of in this process; overrides the project's `executor:`
    /// (`local`: in this process).
    #[arg(long, global = true, env = "FERRY_CLUSTER", value_name = "URL")]
    pub cluster: Option<String>,
    /// When another ferry run is working on the project, wait for it to
    /// end instead of stopping at once.
    #[arg(long, global = true)]
    pub wait: bool,
}

/// Diagnostic formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Source lines with carets.
    Human,
    /// One JSON object per diagnostic, on stdout.
    Json,
    /// GitHub Actions annotations.
    Github,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new project in DIR that compiles.
    Init(InitArgs),
    /// Install the dbt packages that `packages.yml` lists into `dbt_packages/`, pinned in `package-lock.yml`.
    Deps(DepsArgs),
    /// Render every selected model and plan it on DataFusion, writing SQL to `.ferry/compiled/`.
    Compile(SelectArgs),
    /// Run the selected models: tables are staged as Parquet under `.ferry/stage/`.
    Run(RunArgs),
    /// Stage the selected seeds (`seeds/*.csv`) as Parquet.
    Seed(RunArgs),
    /// Run the data tests of the selected nodes against their stages.
    Test(TestArgs),
    /// Seed, run and test the selected nodes in DAG order, then load what passed.
    Build(RunArgs),
    /// Run the selected snapshots: each keeps every version of its source's records, and loads the versions that changed.
    Snapshot(RunArgs),
    /// Load the latest stage of the selected table models and seeds into the target.
    Load(LoadArgs),
    /// Prove each loaded table holds exactly its stage: counts, profiles, row checksums, differing keys.
    Reconcile(ReconcileArgs),
    /// Restore the table a `replace` load kept (`<table>__ferry_prev`); again to undo.
    Rollback(RollbackArgs),
    /// Query the error log of past runs: broken rules and dropped duplicates, by rule.
    Errors(ErrorsArgs),
    /// Volumes, error rates and rule failures per run, from the run history.
    History(HistoryArgs),
    /// Preview the rows of one model (or of `--inline` SQL) as a table.
    Show(ShowArgs),
    /// Profile the sources and seeds: the types, formats and shapes their columns hold, nulls, duplicates, candidate keys.
    Audit(AuditArgs),
    /// Write a run's sign-off report: one self-contained HTML file under `.ferry/runs/<run>/report.html`.
    Report(ReportArgs),
    /// Remove old runs' files: their quarantine, error logs, test failures and reports, and old audits (`--runs older-than 7d`); the run history keeps their counts.
    Clean(CleanArgs),
    /// List the selected nodes.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show the project and target ferry would use, and check the profile.
    Debug,
    /// Run a Ballista scheduler or executor with ferry's SQL functions: a cluster that `--cluster df://HOST:PORT` runs models on.
    Cluster(ClusterArgs),
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub role: ClusterRole,
}

#[derive(Debug, Subcommand)]
pub enum ClusterRole {
    /// Run the scheduler, which clients and executors connect to.
    Scheduler {
        /// Address and port to listen on.
        #[arg(long, default_value = "0.0.0.0:50050")]
        bind: std::net::SocketAddr,
        /// The host name others reach this machine by (default: its host name).
        #[arg(long)]
        external_host: Option<String>,
        /// An executor silent this long is taken for lost and its tasks run
        /// again on the others (`30s`, `3m`).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        executor_timeout: std::time::Duration,
    },
    /// Run an executor, which takes tasks from the scheduler.
    Executor {
        /// The scheduler: `HOST:PORT` or `df://HOST:PORT`.
        #[arg(long)]
        scheduler: String,
        /// Address and port to serve results on (Arrow Flight).
        #[arg(long, default_value = "0.0.0.0:50051")]
        bind: std::net::SocketAddr,
        /// Port for the scheduler's calls (gRPC).
        #[arg(long, default_value_t = 50052)]
        grpc_port: u16,
        /// The host name others reach this machine by (default: its host name).
        #[arg(long)]
        external_host: Option<String>,
        /// Tasks to run at once (default: the machine's cores).
        #[arg(long)]
        concurrent_tasks: Option<usize>,
        /// Where to keep shuffle files (default: a temporary directory).
        #[arg(long)]
        work_dir: Option<Utf8PathBuf>,
        /// Memory its tasks may use together before they spill, such as
        /// `4GB` (default: Ballista's, a share of the machine's RAM).
        #[arg(long, value_parser = memory_limit)]
        memory_limit: Option<bytesize::ByteSize>,
    },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory for the new project (created if missing).
    pub dir: Utf8PathBuf,
    /// Project name (default: the directory name).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct DepsArgs {
    /// Resolve every package anew (git revisions to their newest commits) instead of the lock file's pins.
    #[arg(long)]
    pub upgrade: bool,
}

/// dbt's node selection.
#[derive(Debug, Args, Default, Clone)]
pub struct SelectArgs {
    /// Nodes to include: `m`, `+m`, `m+`, `2+m`, `@m`, `tag:x`, `path:models/staging`,
    /// `config.materialized:view`, `source:s+`, `stg_*`; space = union, comma = intersection.
    #[arg(short, long, num_args = 1.., alias = "models", short_alias = 'm')]
    pub select: Vec<String>,
    /// Nodes to leave out (same syntax).
    #[arg(long, num_args = 1..)]
    pub exclude: Vec<String>,
    /// Fail when the selection picks no node (by default a warning; a
    /// `--select` name that matches no node always fails).
    #[arg(long)]
    pub fail_on_empty_selection: bool,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Only these kinds of node.
    #[arg(long = "resource-type", value_enum, num_args = 1..)]
    pub resource_types: Vec<ResourceType>,
    /// What to print for each node.
    #[arg(short, long, value_enum, default_value_t = LsOutput::Selector)]
    pub output: LsOutput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResourceType {
    Model,
    Snapshot,
    Seed,
    Source,
    Test,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LsOutput {
    /// dbt's selector form: `project.folder.model`, `source:project.source.table`.
    Selector,
    Name,
    Path,
    Json,
}

/// How to execute.
#[derive(Debug, Args, Default, Clone)]
pub struct ExecArgs {
    /// Models to run at once (default: the number of cores).
    #[arg(long, value_parser = threads)]
    pub threads: Option<usize>,
    /// Memory that sorts, joins and aggregates may use before they spill to
    /// disk, such as `4GB` (default: half of the RAM; at least 32MB).
    #[arg(long, env = "FERRY_MEMORY_LIMIT", value_parser = memory_limit)]
    pub memory_limit: Option<bytesize::ByteSize>,
}

fn threads(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("give 1 or more models to run at once".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{text}` is not a whole number")),
    }
}

/// Below this no query runs: DataFusion's batches alone take more.
const MIN_MEMORY_LIMIT: u64 = 32_000_000;

fn memory_limit(text: &str) -> Result<bytesize::ByteSize, String> {
    let size: bytesize::ByteSize =
        text.trim().parse().map_err(|e| format!("`{text}` is not a size such as `4GB` ({e})"))?;
    if size.as_u64() < MIN_MEMORY_LIMIT {
        return Err(format!("{size} is too little to run queries in; give at least 32MB, such as `4GB`"));
    }
    Ok(size)
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub exec: ExecArgs,
    /// Stage only: do not load the staged tables into the target.
    #[arg(long)]
    pub no_load: bool,
    /// Keep every test's failing rows as Parquet under `.ferry/runs/<run>/test_failures/`.
    #[arg(long)]
    pub store_failures: bool,
    /// Rebuild incremental models from scratch (except those configured
    /// `full_refresh: false`), replacing their stages and target tables.
    #[arg(long)]
    pub full_refresh: bool,
    /// Build microbatch models' batches from this time on (UTC; a date or
    /// a date and time) instead of their lookback window: a backfill.
    #[arg(long, value_name = "TIME", value_parser = utc_time)]
    pub event_time_start: Option<chrono::NaiveDateTime>,
    /// With `--event-time-start`: build the batches before this time (UTC);
    /// the current time if unset.
    #[arg(long, value_name = "TIME", value_parser = utc_time, requires = "event_time_start")]
    pub event_time_end: Option<chrono::NaiveDateTime>,
    /// Write the run's sign-off report (`.ferry/runs/<run>/report.html`) when it ends.
    #[arg(long)]
    pub report: bool,
}

fn utc_time(text: &str) -> Result<chrono::NaiveDateTime, String> {
    crate::values::parse_utc(text)
        .ok_or_else(|| format!("`{text}` is not a date (2024-01-31) or a date and time (2024-01-31 10:00:00), in UTC"))
}

#[derive(Debug, Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub exec: ExecArgs,
    /// Keep every test's failing rows as Parquet under `.ferry/runs/<run>/test_failures/`.
    #[arg(long)]
    pub store_failures: bool,
}

impl From<&TestArgs> for RunArgs {
    fn from(t: &TestArgs) -> Self {
        RunArgs {
            select: t.select.clone(),
            exec: t.exec.clone(),
            no_load: true,
            store_failures: t.store_failures,
            full_refresh: false,
            event_time_start: None,
            event_time_end: None,
            report: false,
        }
    }
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Sources and seeds to profile (default: every one), e.g. `-s source:raw`.
    #[command(flatten)]
    pub select: SelectArgs,
    /// Say what changed since an earlier audit: `last` (the one before this)
    /// or its id (or the start of one), as named under `.ferry/audit/`.
    #[arg(long, value_name = "AUDIT")]
    pub compare_to: Option<String>,
    #[command(flatten)]
    pub exec: ExecArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// SQL to preview instead of a model (it may use `ref()` and `source()`).
    #[arg(long, conflicts_with = "select")]
    pub inline: Option<String>,
    /// Rows to show.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    #[command(flatten)]
    pub exec: ExecArgs,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Print the DDL and the plan for each table without changing the target.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Compare a source (`source_name.table`, as in `source()`) with
    /// `--target-table` instead of staged models: a check of a copy made by
    /// any tool.
    #[arg(long, value_name = "SOURCE.TABLE", requires = "target_table", conflicts_with_all = ["select", "exclude"])]
    pub source: Option<String>,
    /// The target table (`table` or `schema.table`) that `--source` is
    /// compared with.
    #[arg(long, value_name = "TABLE", requires = "source")]
    pub target_table: Option<String>,
    /// The key of the rows compared with `--source` (default: every
    /// compared column).
    #[arg(long, value_delimiter = ',', num_args = 1.., requires = "source")]
    pub key: Vec<String>,
    /// Only these columns (with the key) of `--source`.
    #[arg(long, value_delimiter = ',', num_args = 1.., requires = "source")]
    pub columns: Vec<String>,
    /// Differing rows allowed before `--source` fails.
    #[arg(long, default_value_t = 0, requires = "source")]
    pub max_mismatch_rows: u64,
    /// Absolute difference allowed between float values of `--source`.
    #[arg(long, default_value_t = 0.0, requires = "source")]
    pub tolerance: f64,
    /// Where the target's hashes are computed: `pushed` down into the
    /// database as SQL, `pulled` out and hashed by ferry, or `auto` (the
    /// cheaper by estimate; the default). Overrides `reconcile.side`.
    #[arg(long, value_parser = ["auto", "pushed", "pulled"])]
    pub side: Option<String>,
    #[command(flatten)]
    pub exec: ExecArgs,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// `last` (the latest recorded run) or a run id, or the start of one.
    #[arg(long, default_value = "last")]
    pub run: String,
}

#[derive(Debug, Args)]
pub struct CleanArgs {
    /// `older-than AGE`: the runs and audits to remove, by age (`7d`, `12h`, `2w`).
    #[arg(long, num_args = 2, value_names = ["older-than", "AGE"], required = true)]
    pub runs: Vec<String>,
}

impl CleanArgs {
    /// The age `--runs older-than AGE` gives.
    pub fn older_than(&self) -> Result<std::time::Duration, String> {
        match self.runs.as_slice() {
            [word, age] if word == "older-than" => {
                humantime::parse_duration(age).map_err(|e| format!("`{age}` is no age such as `7d` or `12h` ({e})"))
            }
            _ => Err(format!(
                "write `--runs older-than AGE`, such as `--runs older-than 7d`, not `{}`",
                self.runs.join(" ")
            )),
        }
    }
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only this model (or seed, or test): its name or unique id.
    #[arg(long)]
    pub model: Option<String>,
    /// Only the last N runs.
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
}

#[derive(Debug, Args)]
pub struct ErrorsArgs {
    /// Only these models.
    #[arg(long, num_args = 1..)]
    pub model: Vec<String>,
    /// `last` (the latest run that logged anything) or a run id (default: every run).
    #[arg(long)]
    pub run: Option<String>,
    /// Only these rules (`dedupe` for dropped duplicates).
    #[arg(long, num_args = 1..)]
    pub rule: Vec<String>,
    /// Only `error`, `warn` or `duplicate` lines.
    #[arg(long, value_parser = ["error", "warn", "duplicate"])]
    pub severity: Option<String>,
    /// Log lines to show after the summary.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub select: SelectArgs,
}
