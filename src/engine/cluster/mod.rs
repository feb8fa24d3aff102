//! Models on an Apache DataFusion Ballista cluster.
//!
//! The client (a `ferry build` with `--cluster df://host:port`) plans every
//! query as it does locally; its session's query planner then hands the
//! logical plan to the cluster's scheduler, which splits it into stages that
//! the executors run; the client then fetches the result from the
//! executors ([`query`]), stages it as Parquet, loads and reconciles as it
//! always does. While a job runs, where it stands is asked of the
//! scheduler ([`Remote::watched`]).
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
use std::time::{Duration, Instant};

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
use camino::Utf8PathBuf;
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

use super::{Engine, EngineOptions, JobProgress};

mod query;
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
    #[error(
        "{what} within {}: the scheduler may be stuck (as it can be when it loses an executor just as a job \
         comes in), or have no executor free (the cluster URL's `start_timeout` sets the wait)",
        humantime::format_duration(*limit)
    )]
    NotStarted { what: String, limit: Duration },
    #[error(transparent)]
    Engine(#[from] DataFusionError),
}

/// How long a job may take to start running on the cluster (accepted by
/// the scheduler, then out of its queue) before its query fails.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(120);

/// A scheduler's address, from `df://host:port` (or `host:port`), with
/// the partitions a query is split into there (`?partitions=32`) and how
/// long a job may take to start (`?start_timeout=5m`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub host: String,
    pub port: u16,
    /// Partitions per shuffle on the cluster, best the task slots of all
    /// its executors (default: the client's cores).
    pub partitions: Option<usize>,
    /// How long a job may take to start (default [`DEFAULT_START_TIMEOUT`]).
    pub start_timeout: Option<Duration>,
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
        let (mut partitions, mut start_timeout) = (None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("partitions", n)) => match n.parse::<usize>() {
                    Ok(n) if n > 0 => partitions = Some(n),
                    _ => return Err(bad(&format!("`partitions={n}` is not a positive whole number"))),
                },
                Some(("start_timeout", t)) => match humantime::parse_duration(t) {
                    Ok(t) if !t.is_zero() => start_timeout = Some(t),
                    _ => return Err(bad(&format!("`start_timeout={t}` is not a time such as `90s` or `5m`"))),
                },
                _ => {
                    return Err(bad(&format!(
                        "`{pair}` is not a setting it takes (only `partitions=N` and `start_timeout=TIME`)"
                    )));
                }
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
        Ok(Address { host: host.trim_matches(['[', ']']).to_owned(), port, partitions, start_timeout })
    }

    /// How long a job may take to start running on the cluster.
    pub fn start_timeout(&self) -> Duration {
        self.start_timeout.unwrap_or(DEFAULT_START_TIMEOUT)
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
        let mut settings = Vec::new();
        if let Some(n) = self.partitions {
            settings.push(format!("partitions={n}"));
        }
        if let Some(t) = self.start_timeout {
            settings.push(match t.subsec_millis() {
                0 => format!("start_timeout={}s", t.as_secs()),
                _ => format!("start_timeout={}ms", t.as_millis()),
            });
        }
        match settings.is_empty() {
            true => Ok(()),
            false => write!(f, "?{}", settings.join("&")),
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
        let address = Address { host: "127.0.0.1".to_owned(), port, partitions: None, start_timeout: None };
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
    dir: Scratch,
    /// Staged copies, by the provider they copy.
    staged: tokio::sync::Mutex<HashMap<usize, Arc<dyn TableProvider>>>,
    /// The tables read by the client, for the run's output.
    read_here: Mutex<Vec<String>>,
    /// The jobs the queries ran as, as the scheduler reported them.
    jobs: Mutex<Vec<ClusterJob>>,
    /// Where the jobs running now stand, by node.
    live: Mutex<HashMap<Arc<str>, JobProgress>>,
    /// The partitions a job's result is fetched into: this process's.
    here_partitions: usize,
}

impl Remote {
    /// Connects `local`'s catalog and functions to the scheduler at
    /// `address`; tables the client must read are written under `scratch`.
    pub(super) fn connect(local: &SessionContext, address: &Address, scratch: &crate::stage::Root) -> Result<Remote> {
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
        let dir = match scratch {
            crate::stage::Root::Local(scratch) => {
                fs_err::create_dir_all(scratch)
                    .map_err(|e| DataFusionError::IoError(e).context(format!("creating `{scratch}`")))?;
                Scratch::Local(tempfile::Builder::new().prefix("cluster-").tempdir_in(scratch)?)
            }
            crate::stage::Root::Stored(scratch) | crate::stage::Root::Pending(scratch) => {
                Scratch::Stored(scratch.child(&format!("cluster-{}", uuid::Uuid::new_v4().simple())))
            }
        };
        Ok(Remote {
            ctx,
            address: address.clone(),
            dir,
            staged: tokio::sync::Mutex::new(HashMap::new()),
            read_here: Mutex::new(Vec::new()),
            jobs: Mutex::new(Vec::new()),
            live: Mutex::new(HashMap::new()),
            here_partitions: local.state().config().target_partitions(),
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

    /// The physical plan of `plan` in this session: Ballista's, with its
    /// client replaced by ferry's, which fetches the job's result into
    /// this process's partitions at once ([`query`]).
    pub(super) async fn plan(&self, plan: &LogicalPlan) -> Result<Arc<dyn ExecutionPlan>> {
        let state = self.ctx.state();
        // As `SessionState::create_physical_plan` does, keeping the plan
        // that Ballista's planner was given.
        let optimized = state.optimize(plan)?;
        let planned = state.query_planner().create_physical_plan(&optimized, &state).await?;
        Ok(query::ClusterQueryExec::replacing(
            planned,
            &optimized,
            (&self.address, state.session_id()),
            self.here_partitions,
        ))
    }

    /// Where the jobs of the nodes running now stand.
    pub(super) fn live(&self) -> Vec<(Arc<str>, JobProgress)> {
        let Ok(live) = self.live.lock() else { return Vec::new() };
        live.iter().map(|(node, p)| (Arc::clone(node), p.clone())).collect()
    }

    /// `stream`, the output of `plan`, watched while its job runs: a job
    /// the scheduler has not started within the address's start timeout
    /// fails the query, and where the job stands is kept as `node`'s; when
    /// the stream ends, the job is asked of the scheduler and kept.
    pub(super) fn watched(
        self: &Arc<Self>,
        node: Option<Arc<str>>,
        plan: Arc<dyn ExecutionPlan>,
        stream: SendableRecordBatchStream,
    ) -> SendableRecordBatchStream {
        let schema = stream.schema();
        let guard = Box::pin(Arc::clone(self).watch(node.clone(), Arc::clone(&plan)));
        let watched =
            Watched { inner: stream, guard, failed: false, live: node.clone().map(|n| (Arc::clone(self), n)) };
        let remote = Arc::clone(self);
        let noted = futures::stream::once(async move { remote.note_job(node.as_deref(), plan.as_ref()).await })
            .filter_map(|()| futures::future::ready(None));
        Box::pin(RecordBatchStreamAdapter::new(schema, watched.chain(noted)))
    }

    /// Watches `plan`'s job until the query's stream is dropped: fails
    /// (returns) once the job has taken longer than the start timeout to be
    /// accepted and leave the scheduler's queue (Ballista's client would
    /// wait for ever), else keeps where it stands as `node`'s, every second.
    async fn watch(self: Arc<Self>, node: Option<Arc<str>>, plan: Arc<dyn ExecutionPlan>) -> DataFusionError {
        if job_id_of(plan.as_ref()).is_none() && !is_job(plan.as_ref()) {
            return futures::future::pending().await;
        }
        let (limit, began) = (self.address.start_timeout(), Instant::now());
        let late = |what| DataFusionError::External(Box::new(ClusterError::NotStarted { what, limit }));
        let job_id = loop {
            if let Some(id) = job_id_of(plan.as_ref()) {
                break id;
            }
            if began.elapsed() >= limit {
                return late(format!("the scheduler at {} had not taken its job", self.address));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut scheduler = None;
        let (mut started, mut last_done) = (false, 0);
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if scheduler.is_none() {
                scheduler = self.scheduler().await.ok();
            }
            let asked = match scheduler.as_mut() {
                Some(s) => tokio::time::timeout(Duration::from_secs(5), progress(s, &job_id)).await,
                None => continue,
            };
            match asked {
                Ok(Ok(now)) => {
                    if now.started && (!started || now.stages_done > last_done) {
                        tracing::info!(job = %job_id, "{} stage(s) of the job done ({} tasks)", now.stages_done, now.tasks_done);
                    }
                    started |= now.started;
                    last_done = now.stages_done;
                    if let (Some(node), Ok(mut live)) = (&node, self.live.lock()) {
                        live.insert(Arc::clone(node), now);
                    }
                }
                // The scheduler answers Ballista's client, which fails the
                // query if it is gone; ask again on a new connection.
                Ok(Err(e)) => {
                    tracing::debug!(job = %job_id, "cannot ask the scheduler {} where the job stands: {e}", self.address);
                    scheduler = None;
                }
                Err(_) => scheduler = None,
            }
            if !started && began.elapsed() >= limit {
                return late(format!("its job {job_id} was still queued at the scheduler at {}", self.address));
            }
        }
    }

    /// A client of the scheduler's gRPC service.
    async fn scheduler(
        &self,
    ) -> Result<SchedulerGrpcClient<tonic::transport::Channel>, Box<dyn std::error::Error + Send + Sync>> {
        let endpoint = ballista_core::utils::create_grpc_client_endpoint(self.address.endpoint(), None)?;
        let channel = tokio::time::timeout(Duration::from_secs(5), endpoint.connect()).await??;
        Ok(SchedulerGrpcClient::new(channel))
    }

    async fn note_job(&self, node: Option<&str>, plan: &dyn ExecutionPlan) {
        let Some(job_id) = job_id_of(plan) else { return };
        match self.job(node, job_id.clone()).await {
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
        let mut scheduler = self.scheduler().await?;
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
        let url = match &self.dir {
            Scratch::Local(dir) => {
                let dir = dir.path().join(format!("{file_name}-{}", staged.len()));
                fs_err::create_dir_all(&dir)?;
                let dir =
                    dir.to_str().ok_or_else(|| DataFusionError::Plan("the cluster directory is not UTF-8".into()))?;
                format!("{dir}/")
            }
            Scratch::Stored(dir) => dir.child(&format!("{file_name}-{}", staged.len())).url().to_string(),
        };
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

/// Where the copies of tables a cluster cannot read itself go: a temporary
/// directory, or a prefix of the object store the stages are in; removed
/// when dropped.
enum Scratch {
    Local(tempfile::TempDir),
    Stored(crate::stage::Stored),
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Scratch::Stored(dir) = self else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let dir = dir.clone();
        // Waited for where the runtime allows it, so that the process does
        // not end before the copies are gone.
        match runtime.runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| runtime.block_on(crate::stage::store::remove(&dir)));
            }
            _ => drop(runtime.spawn(async move { crate::stage::store::remove(&dir).await })),
        }
    }
}

/// Whether `plan` runs as a job on the cluster.
fn is_job(plan: &dyn ExecutionPlan) -> bool {
    plan.downcast_ref::<query::ClusterQueryExec>().is_some()
        || plan.downcast_ref::<DistributedQueryExec<LogicalPlanNode>>().is_some()
}

/// The id of the job `plan` ran as, once the scheduler has taken it.
fn job_id_of(plan: &dyn ExecutionPlan) -> Option<String> {
    if let Some(query) = plan.downcast_ref::<query::ClusterQueryExec>() {
        return query.job_id();
    }
    plan.downcast_ref::<DistributedQueryExec<LogicalPlanNode>>().and_then(|q| q.job_id()).map(|id| id.to_string())
}

/// Where job `job_id` stands: started or not, and its stages done.
async fn progress(
    scheduler: &mut SchedulerGrpcClient<tonic::transport::Channel>,
    job_id: &str,
) -> Result<JobProgress, tonic::Status> {
    let status = scheduler.get_job_status(GetJobStatusParams { job_id: job_id.to_owned() }).await?.into_inner();
    let started = match status.status.and_then(|s| s.status) {
        None | Some(job_status::Status::Queued(_)) => false,
        Some(_) => true,
    };
    let (mut stages_done, mut tasks_done) = (0, 0);
    if started {
        // Only the stages done are reported, and none before the plan is.
        if let Ok(metrics) = scheduler.get_job_metrics(GetJobMetricsParams { job_id: job_id.to_owned() }).await {
            let stages = metrics.into_inner().stages;
            stages_done = stages.len();
            tasks_done = stages.iter().map(|s| s.partitions).sum();
        }
    }
    Ok(JobProgress { job_id: job_id.to_owned(), started, stages_done, tasks_done })
}

/// A query's stream, and the watch over its job ([`Remote::watch`]),
/// which ends the stream with its error when it gives up on the job.
struct Watched {
    inner: SendableRecordBatchStream,
    guard: std::pin::Pin<Box<dyn std::future::Future<Output = DataFusionError> + Send>>,
    failed: bool,
    /// The node whose job this is, forgotten from the live jobs on drop.
    live: Option<(Arc<Remote>, Arc<str>)>,
}

impl futures::Stream for Watched {
    type Item = Result<datafusion::arrow::record_batch::RecordBatch>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.failed {
            return std::task::Poll::Ready(None);
        }
        if let std::task::Poll::Ready(e) = self.guard.as_mut().poll(cx) {
            self.failed = true;
            return std::task::Poll::Ready(Some(Err(e)));
        }
        self.inner.poll_next_unpin(cx)
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some((remote, node)) = &self.live
            && let Ok(mut live) = remote.live.lock()
        {
            live.remove(node);
        }
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
        let a = Address::parse("df://h:1?start_timeout=90s&partitions=4").unwrap();
        assert_eq!((a.partitions, a.start_timeout()), (Some(4), Duration::from_secs(90)));
        assert_eq!(a.to_string(), "df://h:1?partitions=4&start_timeout=90s");
        assert_eq!(Address::parse("df://h:1").unwrap().start_timeout(), DEFAULT_START_TIMEOUT);
        assert!(Address::parse("df://h?start_timeout=soon").unwrap_err().to_string().contains("`start_timeout=soon`"));
    }

    /// A cluster of `executors` (2 tasks each) in this process, the run's
    /// client of it (with its scratch directory), and a query of 7 rows
    /// planned to run there.
    async fn a_query_on(executors: usize) -> (LocalCluster, tempfile::TempDir, Remote, Arc<dyn ExecutionPlan>) {
        let cluster = LocalCluster::start(executors, 2).await.unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let dir = camino::Utf8Path::from_path(scratch.path()).unwrap();
        let remote =
            Remote::connect(&SessionContext::new(), &cluster.address, &crate::stage::Root::Local(dir.to_owned()))
                .unwrap();
        let sql = "select v % 7 as k, count(*) as n from (select unnest(range(1000)) as v) group by v % 7";
        let logical = remote.ctx.sql(sql).await.unwrap().into_unoptimized_plan();
        let plan = remote.plan(&logical).await.unwrap();
        (cluster, scratch, remote, plan)
    }

    /// What the scheduler says of a job that ran: started, and every stage
    /// done with its tasks; the client it is asked through is the run's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_finished_job_stands_started_with_its_stages_done() {
        let (_cluster, _scratch, remote, plan) = a_query_on(1).await;
        assert_eq!(plan.name(), "ClusterQueryExec");
        let batches =
            datafusion::physical_plan::collect(Arc::clone(&plan), remote.ctx.state().task_ctx()).await.unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 7);
        let job_id = job_id_of(plan.as_ref()).expect("the job was named");
        let now = progress(&mut remote.scheduler().await.unwrap(), &job_id).await.unwrap();
        assert!(now.started, "{now:?}");
        assert!(now.stages_done >= 2 && now.tasks_done as usize >= now.stages_done, "{now:?}");
        assert_eq!(now.job_id, job_id);
    }

    /// A query given up before its job ends cancels the job. With no
    /// executor the job never ends on its own; once its stream is
    /// dropped, the scheduler holds it failed as cancelled.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_query_given_up_cancels_its_job() {
        use futures::StreamExt;
        let (_cluster, _scratch, remote, plan) = a_query_on(0).await;
        let mut rows = plan.execute(0, remote.ctx.state().task_ctx()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let job_id = loop {
            if let Ok(next) = tokio::time::timeout(Duration::from_millis(50), rows.next()).await {
                panic!("a job with no executor gave {:?}", next.map(|b| b.map(|b| b.num_rows())));
            }
            if let Some(id) = job_id_of(plan.as_ref()) {
                break id;
            }
            assert!(std::time::Instant::now() < deadline, "the scheduler never took the job");
        };
        drop(rows);
        let mut scheduler = remote.scheduler().await.unwrap();
        loop {
            let status = scheduler.get_job_status(GetJobStatusParams { job_id: job_id.clone() }).await.unwrap();
            let status = status.into_inner().status.and_then(|s| s.status);
            if let Some(job_status::Status::Failed(f)) = &status {
                assert!(f.error.contains("Cancelled"), "{}", f.error);
                break;
            }
            assert!(std::time::Instant::now() < deadline, "job {job_id} still stands: {status:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
