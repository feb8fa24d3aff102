//! Models on an Apache DataFusion Ballista cluster.
//!
//! The client (a `ferry build` with `--cluster df://host:port`) plans every
//! query as it does locally; its session's query planner then hands the
//! logical plan to the cluster's scheduler, which splits it into stages that
//! the executors run, and the result streams back to the client, which
//! stages it as Parquet, loads and reconciles as it always does.
//!
//! The scheduler and the executors run ferry's SQL functions (this module
//! builds their sessions from the same [`Engine`] a local run uses), so a
//! model that calls `ferry_parses` or a `try_` function runs there as here.
//! A masked run needs the masking key in every executor's environment.
//!
//! The cluster reads what DataFusion's own readers read (CSV, Parquet and
//! JSON files, [`ListingTable`]s) from the same paths or URLs, so each
//! machine must reach them. A table that only the client can read (a
//! database table, a file that ferry's own reader parses, an Excel sheet)
//! is read by the client first and written as Parquet under the run's
//! cluster directory, which the cluster then reads: [`Remote::stage`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use ballista_core::execution_plans::DistributedQueryExec;
use ballista_core::extension::SessionStateExt;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::serde::protobuf::{
    GetJobMetricsParams, GetJobStatusParams, OperatorWithMetrics, job_status, operator_metric,
};
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use camino::{Utf8Path, Utf8PathBuf};
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{SendableRecordBatchStream, SessionState, SessionStateBuilder};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Filter, LogicalPlan, TableScanBuilder};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use futures::StreamExt;

use super::{Engine, EngineOptions};
use crate::state::run_record::{ClusterExecutor, ClusterJob, ClusterStage};

/// Ballista's own port for a scheduler, when the URL names none.
pub const DEFAULT_PORT: u16 = 50050;

/// What went wrong running a scheduler or an executor.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("`{url}` is not a cluster address: {why} (write it as `df://host:port`)")]
    Address { url: String, why: String },
    #[error("the cluster's scheduler at {0} cannot be reached: {1}")]
    Unreachable(String, std::io::Error),
    #[error("the scheduler stopped: {0}")]
    Scheduler(ballista_core::error::BallistaError),
    #[error("the executor stopped: {0}")]
    Executor(ballista_core::error::BallistaError),
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error(transparent)]
    Engine(#[from] DataFusionError),
}

/// A scheduler's address, from `df://host:port` (or `host:port`), with
/// the partitions a query is split into there (`?partitions=32`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub host: String,
    pub port: u16,
    /// Partitions per shuffle on the cluster, best the task slots of all
    /// its executors (default: the client's cores).
    pub partitions: Option<usize>,
}

impl Address {
    pub fn parse(url: &str) -> Result<Address, ClusterError> {
        let bad = |why: &str| ClusterError::Address { url: url.to_owned(), why: why.to_owned() };
        let rest = match url.split_once("://") {
            Some(("df", rest)) => rest,
            Some((scheme, _)) => return Err(bad(&format!("the scheme is `{scheme}://`, not `df://`"))),
            None => url,
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut partitions = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("partitions", n)) => match n.parse::<usize>() {
                    Ok(n) if n > 0 => partitions = Some(n),
                    _ => return Err(bad(&format!("`partitions={n}` is not a positive whole number"))),
                },
                _ => return Err(bad(&format!("`{pair}` is not a setting it takes (only `partitions=N`)"))),
            }
        }
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad(&format!("`{p}` is not a port")))?),
            None => (rest, DEFAULT_PORT),
        };
        if host.is_empty() || host.contains('/') {
            return Err(bad("it names no host"));
        }
        Ok(Address { host: host.trim_matches(['[', ']']).to_owned(), port, partitions })
    }

    /// The scheduler's gRPC endpoint, as Ballista's client takes it.
    fn endpoint(&self) -> String {
        if self.host.contains(':') {
            format!("http://[{}]:{}", self.host, self.port)
        } else {
            format!("http://{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "df://{}:{}", self.host, self.port)?;
        match self.partitions {
            Some(n) => write!(f, "?partitions={n}"),
            None => Ok(()),
        }
    }
}

/// The session of a scheduler or an executor, made once: ferry's SQL
/// functions (and the masking functions, when the key is in the
/// environment), and object stores made from URLs.
fn ferry_state() -> Result<SessionState> {
    let masking = crate::mask::Key::from_env(crate::mask::KEY_VAR, "a masked run").ok();
    Ok(Engine::new(&EngineOptions { masking, ..EngineOptions::default() })?.state())
}

/// A runtime with `base`'s object stores and empty caches, spilling to
/// `spill` (default: the OS temporary directory).
fn fresh_runtime(base: &SessionState, spill: Option<&str>) -> Result<Arc<RuntimeEnv>> {
    let mut runtime =
        RuntimeEnvBuilder::new().with_object_store_registry(Arc::clone(&base.runtime_env().object_store_registry));
    if let Some(dir) = spill {
        runtime = runtime.with_temp_file_path(dir);
    }
    runtime.build_arc()
}

/// How a scheduler presents itself and when it gives an executor up.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// The host name others reach it by.
    pub external_host: String,
    /// An executor silent this long is taken for lost, and its tasks are
    /// run again elsewhere.
    pub executor_timeout: std::time::Duration,
}

/// Runs a scheduler on `listener` until the process ends.
pub async fn scheduler(listener: tokio::net::TcpListener, settings: &SchedulerSettings) -> Result<(), ClusterError> {
    let bound = listener.local_addr().map_err(|e| ClusterError::Engine(e.into()))?;
    let timeout = settings.executor_timeout.as_secs().max(1);
    let config = SchedulerConfig {
        bind_host: bound.ip().to_string(),
        bind_port: bound.port(),
        external_host: settings.external_host.clone(),
        executor_timeout_seconds: timeout,
        expire_dead_executor_interval_seconds: (timeout / 4).clamp(1, 15),
        no_executors_grace_period_seconds: timeout,
        ..SchedulerConfig::default()
    }
    .with_override_session_builder({
        let base = ferry_state()?;
        // Each session (each client run) gets a runtime of its own: the
        // runtime caches file listings and Parquet footers, and a stage a
        // later run rewrites must not be read through an earlier run's.
        Arc::new(move |config| {
            Ok(SessionStateBuilder::new_from_existing(base.clone())
                .with_config(config)
                .with_runtime_env(fresh_runtime(&base, None)?)
                .build())
        })
    });
    let cluster = BallistaCluster::new_from_config(&config).await.map_err(ClusterError::Scheduler)?;
    let server = create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, Arc::new(config))
        .await
        .map_err(ClusterError::Scheduler)?;
    start_grpc_service_with_listener(listener, server).await.map_err(ClusterError::Scheduler)
}

/// Where an executor listens and which scheduler it serves.
#[derive(Debug, Clone)]
pub struct ExecutorSettings {
    pub scheduler: Address,
    /// Where the executor serves its results (Arrow Flight).
    pub bind: SocketAddr,
    /// Its gRPC port (for the scheduler's calls).
    pub grpc_port: u16,
    /// The host name other machines reach it by (default: the bind address).
    pub external_host: Option<String>,
    /// Tasks it runs at once (default: its cores).
    pub concurrent_tasks: usize,
    /// Where it keeps shuffle files (default: a temporary directory).
    pub work_dir: Option<Utf8PathBuf>,
    /// Bytes its tasks may hold together before they spill (default:
    /// Ballista's share of the machine's memory).
    pub memory_limit: Option<u64>,
}

/// Runs an executor until the process ends (or the scheduler stops it).
pub async fn executor(settings: ExecutorSettings) -> Result<(), ClusterError> {
    let state = ferry_state()?;
    // Shuffle and spill files go to the work directory (a temporary one,
    // removed when the executor stops, unless given); object stores are
    // those of ferry's session, made from URLs as on the client, so the
    // executor reads `s3://` sources itself.
    let (work_dir, _temporary) = match &settings.work_dir {
        Some(dir) => (dir.to_string(), None),
        None => {
            let t = tempfile::Builder::new().prefix("ferry-executor-").tempdir().map_err(DataFusionError::from)?;
            (t.path().to_string_lossy().into_owned(), Some(t))
        }
    };
    let spill = work_dir.clone();
    let base = state.clone();
    let runtime: ballista_core::RuntimeProducer = Arc::new(move |_: &SessionConfig| fresh_runtime(&base, Some(&spill)));
    let config = ExecutorProcessConfig {
        bind_host: settings.bind.ip().to_string(),
        port: settings.bind.port(),
        grpc_port: settings.grpc_port,
        external_host: settings.external_host.clone().or_else(|| Some(settings.bind.ip().to_string())),
        scheduler_host: settings.scheduler.host.clone(),
        scheduler_port: settings.scheduler.port,
        scheduler_connect_timeout_seconds: 30,
        vcores: settings.concurrent_tasks,
        work_dir: Some(work_dir),
        override_runtime_producer: Some(runtime),
        memory_pool_size: settings.memory_limit,
        print_thread_info: false,
        // Well inside any scheduler's executor timeout.
        executor_heartbeat_interval_seconds: 2,
        override_function_registry: Some(Arc::new((&state).into())),
        ..ExecutorProcessConfig::default()
    };
    start_executor_process(Arc::new(config)).await.map_err(ClusterError::Executor)
}

/// A scheduler and executors running in this process, on loopback ports
/// (for tests, and for trying a cluster on one machine). They stop when
/// this is dropped.
pub struct LocalCluster {
    pub address: Address,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl LocalCluster {
    /// Starts a scheduler and `executors` executors, each running
    /// `concurrent_tasks` tasks at once, and waits until each listens.
    pub async fn start(executors: usize, concurrent_tasks: usize) -> Result<LocalCluster, ClusterError> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let listener = tokio::net::TcpListener::bind(any).await.map_err(|e| ClusterError::Bind(any, e))?;
        let port = listener.local_addr().map_err(|e| ClusterError::Bind(any, e))?.port();
        let address = Address { host: "127.0.0.1".to_owned(), port, partitions: None };
        let settings = SchedulerSettings {
            external_host: "127.0.0.1".to_owned(),
            executor_timeout: std::time::Duration::from_secs(20),
        };
        let mut tasks = vec![tokio::spawn(async move {
            if let Err(e) = scheduler(listener, &settings).await {
                tracing::error!("{e}");
            }
        })];
        for _ in 0..executors {
            let (flight, grpc) = (free_port()?, free_port()?);
            let settings = ExecutorSettings {
                scheduler: address.clone(),
                bind: SocketAddr::from(([127, 0, 0, 1], flight)),
                grpc_port: grpc,
                external_host: None,
                concurrent_tasks,
                work_dir: None,
                memory_limit: None,
            };
            tasks.push(tokio::spawn(async move {
                if let Err(e) = executor(settings).await {
                    tracing::error!("{e}");
                }
            }));
            wait_listening(SocketAddr::from(([127, 0, 0, 1], flight))).await?;
        }
        Ok(LocalCluster { address, tasks })
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> Result<u16, ClusterError> {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let l = std::net::TcpListener::bind(any).map_err(|e| ClusterError::Bind(any, e))?;
    Ok(l.local_addr().map_err(|e| ClusterError::Bind(any, e))?.port())
}

async fn wait_listening(addr: SocketAddr) -> Result<(), ClusterError> {
    let mut last = None;
    for _ in 0..300 {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Err(ClusterError::Unreachable(addr.to_string(), last.expect("tried")))
}

/// The client's side of a cluster: the session whose planner sends plans
/// to the scheduler, and the tables it read for the cluster.
pub(super) struct Remote {
    ctx: SessionContext,
    address: Address,
    /// Where tables the client reads for the cluster are written, removed
    /// with the engine.
    dir: tempfile::TempDir,
    /// Staged copies, by the provider they copy.
    staged: tokio::sync::Mutex<HashMap<usize, Arc<dyn TableProvider>>>,
    /// The tables read by the client, for the run's output.
    read_here: Mutex<Vec<String>>,
    /// The jobs the queries ran as, as the scheduler reported them.
    jobs: Mutex<Vec<ClusterJob>>,
}

impl Remote {
    /// Connects `local`'s catalog and functions to the scheduler at
    /// `address`; tables the client must read are written under `scratch`.
    pub(super) fn connect(local: &SessionContext, address: &Address, scratch: &Utf8Path) -> Result<Remote> {
        let target = (address.host.as_str(), address.port);
        let reached = std::net::ToSocketAddrs::to_socket_addrs(&target).and_then(|mut addrs| {
            let addr = addrs.next().ok_or_else(|| std::io::Error::other("the host name has no address"))?;
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(10))
        });
        if let Err(e) = reached {
            return Err(DataFusionError::External(Box::new(ClusterError::Unreachable(address.to_string(), e))));
        }
        let mut state = local.state().upgrade_for_ballista(address.endpoint())?;
        if let Some(n) = address.partitions {
            state.config_mut().options_mut().execution.target_partitions = n;
        }
        let ctx = SessionContext::new_with_state(state);
        fs_err::create_dir_all(scratch)
            .map_err(|e| DataFusionError::IoError(e).context(format!("creating `{scratch}`")))?;
        let dir = tempfile::Builder::new().prefix("cluster-").tempdir_in(scratch)?;
        Ok(Remote {
            ctx,
            address: address.clone(),
            dir,
            staged: tokio::sync::Mutex::new(HashMap::new()),
            read_here: Mutex::new(Vec::new()),
            jobs: Mutex::new(Vec::new()),
        })
    }

    /// The jobs the queries ran as so far, in the order they ended.
    pub(super) fn jobs(&self) -> Vec<ClusterJob> {
        self.jobs.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The jobs of `node`'s queries so far.
    pub(super) fn jobs_of(&self, node: &str) -> Vec<ClusterJob> {
        let Ok(jobs) = self.jobs.lock() else { return Vec::new() };
        jobs.iter().filter(|j| j.node.as_deref() == Some(node)).cloned().collect()
    }

    /// `stream`, the output of `plan`; when it ends, the job it ran as on
    /// the cluster is asked of the scheduler and kept as `node`'s.
    pub(super) fn watched(
        self: &Arc<Self>,
        node: Option<Arc<str>>,
        plan: Arc<dyn ExecutionPlan>,
        stream: SendableRecordBatchStream,
    ) -> SendableRecordBatchStream {
        let remote = Arc::clone(self);
        let schema = stream.schema();
        let noted = futures::stream::once(async move { remote.note_job(node.as_deref(), plan.as_ref()).await })
            .filter_map(|()| futures::future::ready(None));
        Box::pin(RecordBatchStreamAdapter::new(schema, stream.chain(noted)))
    }

    async fn note_job(&self, node: Option<&str>, plan: &dyn ExecutionPlan) {
        let query = plan.downcast_ref::<DistributedQueryExec<LogicalPlanNode>>();
        let Some(job_id) = query.and_then(DistributedQueryExec::job_id) else { return };
        match self.job(node, job_id.to_string()).await {
            Ok(job) => {
                tracing::info!(job = %job.job_id, "ran on the cluster: {}", job.describe());
                if let Ok(mut jobs) = self.jobs.lock() {
                    jobs.push(job);
                }
            }
            Err(e) => tracing::warn!("cannot ask the scheduler {} about job {job_id}: {e}", self.address),
        }
    }

    /// What the scheduler knows of a finished job: its stages and tasks
    /// (`GetJobMetrics`), and where its result partitions are (`GetJobStatus`).
    async fn job(
        &self,
        node: Option<&str>,
        job_id: String,
    ) -> Result<ClusterJob, Box<dyn std::error::Error + Send + Sync>> {
        let endpoint = ballista_core::utils::create_grpc_client_endpoint(self.address.endpoint(), None)?;
        let mut scheduler = SchedulerGrpcClient::new(endpoint.connect().await?);
        let status = scheduler.get_job_status(GetJobStatusParams { job_id: job_id.clone() }).await?.into_inner();
        let metrics = scheduler.get_job_metrics(GetJobMetricsParams { job_id: job_id.clone() }).await?.into_inner();
        let (millis, locations) = match status.status.and_then(|s| s.status) {
            Some(job_status::Status::Successful(done)) => {
                (done.ended_at.saturating_sub(done.started_at), done.partition_location)
            }
            _ => (0, Vec::new()),
        };
        let mut executors: Vec<ClusterExecutor> = Vec::new();
        for location in locations {
            let Some(meta) = location.executor_meta else { continue };
            let stats = location.partition_stats.unwrap_or_default();
            let (rows, bytes) = (stats.num_rows.max(0) as u64, stats.num_bytes.max(0) as u64);
            match executors.iter_mut().find(|e| e.id == meta.id) {
                Some(e) => {
                    e.tasks += 1;
                    e.rows += rows;
                    e.bytes += bytes;
                }
                None => executors.push(ClusterExecutor {
                    address: format!("{}:{}", meta.host, meta.port),
                    id: meta.id,
                    tasks: 1,
                    rows,
                    bytes,
                }),
            }
        }
        executors.sort_by(|a, b| a.address.cmp(&b.address));
        let mut stages: Vec<ClusterStage> = metrics
            .stages
            .into_iter()
            .map(|s| ClusterStage { stage_id: s.stage_id, tasks: s.partitions, rows: stage_rows(&s.operators) })
            .collect();
        stages.sort_by_key(|s| s.stage_id);
        Ok(ClusterJob { node: node.map(str::to_owned), job_id, millis, stages, executors })
    }

    pub(super) fn address(&self) -> &Address {
        &self.address
    }

    pub(super) fn state(&self) -> SessionState {
        self.ctx.state()
    }

    /// The tables the client read and staged for the cluster so far.
    pub(super) fn read_here(&self) -> Vec<String> {
        self.read_here.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// `plan` with every table the cluster cannot read replaced by a
    /// Parquet copy the client writes (once per table and run).
    pub(super) async fn rewrite(&self, local: &SessionContext, plan: LogicalPlan) -> Result<LogicalPlan> {
        let mut wanted: Vec<(TableReference, Arc<dyn TableProvider>)> = Vec::new();
        plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node
                && let Ok(provider) = source_as_provider(&scan.source)
                && !cluster_reads(provider.as_ref())
            {
                wanted.push((scan.table_name.clone(), provider));
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        if wanted.is_empty() {
            return Ok(plan);
        }
        let mut copies = HashMap::new();
        for (name, provider) in wanted {
            let copy = self.stage(local, &name, &provider).await?;
            copies.insert(key(&provider), copy);
        }
        plan.transform_up_with_subqueries(|node| {
            let LogicalPlan::TableScan(scan) = node else { return Ok(Transformed::no(node)) };
            let Some(copy) = source_as_provider(&scan.source).ok().and_then(|p| copies.get(&key(&p)).cloned()) else {
                return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
            };
            // A filter the original reader applied exactly is no longer
            // above the scan: keep it above the copy.
            let filters = scan.filters.clone();
            let replaced = TableScanBuilder::new(scan.table_name, provider_as_source(copy))
                .with_projection(scan.projection)
                .with_filters(scan.filters)
                .with_fetch(scan.fetch)
                .with_statistics_requests(scan.statistics_requests)
                .build()?;
            let replaced = LogicalPlan::TableScan(replaced);
            Ok(Transformed::yes(match conjunction(filters) {
                Some(predicate) => LogicalPlan::Filter(Filter::try_new(predicate, Arc::new(replaced))?),
                None => replaced,
            }))
        })
        .map(|t| t.data)
    }

    /// The Parquet copy of `provider` that the cluster reads, written by
    /// the client the first time a plan reads it.
    async fn stage(
        &self,
        local: &SessionContext,
        name: &TableReference,
        provider: &Arc<dyn TableProvider>,
    ) -> Result<Arc<dyn TableProvider>> {
        let mut staged = self.staged.lock().await;
        if let Some(copy) = staged.get(&key(provider)) {
            return Ok(Arc::clone(copy));
        }
        let file_name: String =
            name.to_string().chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
        let dir = self.dir.path().join(format!("{file_name}-{}", staged.len()));
        fs_err::create_dir_all(&dir)?;
        let dir = dir.to_str().ok_or_else(|| DataFusionError::Plan("the cluster directory is not UTF-8".into()))?;
        let url = format!("{dir}/");
        local.read_table(Arc::clone(provider))?.write_parquet(&url, DataFrameWriteOptions::new(), None).await?;
        let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new(ListingTableUrl::parse(&url)?)
            .with_listing_options(options)
            .with_schema(provider.schema());
        let copy: Arc<dyn TableProvider> = Arc::new(ListingTable::try_new(config)?);
        staged.insert(key(provider), Arc::clone(&copy));
        tracing::info!("`{name}` is read by ferry on this machine and staged for the cluster");
        if let Ok(mut names) = self.read_here.lock() {
            names.push(name.to_string());
        }
        Ok(copy)
    }
}

/// The rows a stage's top operator (its shuffle writer) put out, summed
/// over its tasks.
fn stage_rows(operators: &[OperatorWithMetrics]) -> Option<u64> {
    let top = operators.iter().find(|o| o.depth == 0)?;
    let rows = top.metrics.iter().filter_map(|m| match m.metric {
        Some(operator_metric::Metric::OutputRows(n)) => Some(n),
        _ => None,
    });
    rows.reduce(|a, b| a + b)
}

/// Whether the cluster reads `provider` itself: DataFusion's file tables.
fn cluster_reads(provider: &dyn TableProvider) -> bool {
    (provider as &dyn std::any::Any).downcast_ref::<ListingTable>().is_some()
}

fn key(provider: &Arc<dyn TableProvider>) -> usize {
    Arc::as_ptr(provider).cast::<()>() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_with_and_without_scheme_and_port() {
        let a = Address::parse("df://sched.example:50070").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("sched.example", 50070));
        assert_eq!(Address::parse("10.0.0.2").unwrap().port, DEFAULT_PORT);
        assert_eq!(Address::parse("df://h:1/").unwrap().endpoint(), "http://h:1");
        assert!(Address::parse("http://h:1").unwrap_err().to_string().contains("not `df://`"));
        assert!(Address::parse("df://h:port").unwrap_err().to_string().contains("`port` is not a port"));
        assert!(Address::parse("df://").is_err());
        let a = Address::parse("df://h:1?partitions=32").unwrap();
        assert_eq!((a.port, a.partitions), (1, Some(32)));
        assert_eq!(a.to_string(), "df://h:1?partitions=32");
        assert!(Address::parse("df://h:1?partitions=0").unwrap_err().to_string().contains("`partitions=0`"));
        assert!(Address::parse("df://h?tasks=3").unwrap_err().to_string().contains("only `partitions=N`"));
    }
}
