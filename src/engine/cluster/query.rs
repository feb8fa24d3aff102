//! A query's job on the cluster, and its result fetched by ferry.
//!
//! Ballista's own client ([`DistributedQueryExec`]) hands the plan to the
//! scheduler, waits for the job, then fetches the result partitions one
//! after another through Arrow Flight, which makes each executor decode its
//! shuffle file and encode it again as it sends it. [`ClusterQueryExec`]
//! submits the same plan the same way, but fetches the partitions by
//! Ballista's block transport (the executor sends the file's bytes as
//! they are, and ferry decodes them) and spreads them over this process's
//! partitions, so that they arrive at once and each core here decodes,
//! splits and stages its share.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballista_core::client::BallistaClient;
use ballista_core::config::BallistaConfig;
use ballista_core::execution_plans::DistributedQueryExec;
use ballista_core::extension::SessionConfigExt;
use ballista_core::serde::BallistaLogicalExtensionCodec;
use ballista_core::serde::protobuf::execute_query_params::Query;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::serde::protobuf::{
    CancelJobParams, ExecuteQueryParams, GetJobStatusParams, KeyValuePair, PartitionLocation, execute_query_result,
    job_status,
};
use ballista_core::utils::GrpcClientConfig;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use datafusion_proto::logical_plan::AsLogicalPlan;
use datafusion_proto::protobuf::LogicalPlanNode;
use futures::{StreamExt, TryStreamExt};

use super::{Address, ClusterError};

/// The result of a finished job: where each partition of it is.
type Finished = std::result::Result<Arc<Vec<PartitionLocation>>, Arc<DataFusionError>>;

/// Runs `plan` as one job on the cluster at `address`; its result comes out
/// in as many partitions as this process has (each a share of the job's
/// result partitions).
#[derive(Debug)]
pub(super) struct ClusterQueryExec {
    address: Address,
    plan: LogicalPlan,
    session_id: String,
    properties: Arc<PlanProperties>,
    /// The job, started by the first partition executed and shared by all.
    job: Arc<tokio::sync::OnceCell<Finished>>,
    job_id: Arc<Mutex<Option<String>>>,
}

impl ClusterQueryExec {
    /// In place of Ballista's `planned` (a [`DistributedQueryExec`] of
    /// `plan`), one of `partitions` partitions; any other plan as it is.
    pub(super) fn replacing(
        planned: Arc<dyn ExecutionPlan>,
        plan: &LogicalPlan,
        (address, session_id): (&Address, &str),
        partitions: usize,
    ) -> Arc<dyn ExecutionPlan> {
        if planned.downcast_ref::<DistributedQueryExec<LogicalPlanNode>>().is_none() {
            return planned;
        }
        let schema: SchemaRef = Arc::clone(plan.schema().inner());
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(partitions.max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Arc::new(ClusterQueryExec {
            address: address.clone(),
            plan: plan.clone(),
            session_id: session_id.to_owned(),
            properties: Arc::new(properties),
            job: Arc::new(tokio::sync::OnceCell::new()),
            job_id: Arc::new(Mutex::new(None)),
        })
    }

    /// The job's id, once the scheduler has taken it.
    pub(super) fn job_id(&self) -> Option<String> {
        self.job_id.lock().ok().and_then(|id| id.clone())
    }
}

impl DisplayAs for ClusterQueryExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "ClusterQueryExec: scheduler={}", self.address)
    }
}

impl ExecutionPlan for ClusterQueryExec {
    fn name(&self) -> &str {
        "ClusterQueryExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _: &mut dyn FnMut(&Arc<dyn datafusion::physical_expr::PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        match children.is_empty() {
            true => Ok(self),
            false => Err(DataFusionError::Internal("ClusterQueryExec has no children".into())),
        }
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let ways = self.properties.partitioning.partition_count();
        let config = context.session_config().ballista_config();
        let query = ExecuteQueryParams {
            query: Some(Query::LogicalPlan(encode(&self.plan)?)),
            settings: context
                .session_config()
                .options()
                .entries()
                .into_iter()
                .map(|e| KeyValuePair { key: e.key, value: e.value })
                .collect(),
            session_id: self.session_id.clone(),
            operation_id: uuid::Uuid::new_v4().to_string(),
        };
        let (job, job_id, address) = (Arc::clone(&self.job), Arc::clone(&self.job_id), self.address.clone());
        let fetched = async move {
            let started = job.get_or_init(|| run_job(address, query, &config, job_id)).await;
            let locations = started.clone().map_err(DataFusionError::Shared)?;
            // This partition's share of the result, fetched one after another.
            let mine: Vec<PartitionLocation> = locations.iter().skip(partition).step_by(ways).cloned().collect();
            let grpc = GrpcClientConfig::from(&config);
            Ok::<_, DataFusionError>(futures::stream::iter(mine).then(move |l| fetch(l, grpc.clone())).try_flatten())
        };
        let stream = futures::stream::once(fetched).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema(), stream)))
    }
}

fn encode(plan: &LogicalPlan) -> Result<Vec<u8>> {
    let node = LogicalPlanNode::try_from_logical_plan(plan, &BallistaLogicalExtensionCodec::default())
        .map_err(|e| DataFusionError::Internal(format!("the plan cannot be sent to the cluster: {e}")))?;
    let mut buf = Vec::new();
    node.try_encode(&mut buf)
        .map_err(|e| DataFusionError::Internal(format!("the plan cannot be sent to the cluster: {e}")))?;
    Ok(buf)
}

/// Submits `query`, and waits for its job to finish: where its result is.
async fn run_job(
    address: Address,
    query: ExecuteQueryParams,
    config: &BallistaConfig,
    job_id: Arc<Mutex<Option<String>>>,
) -> Finished {
    submit_and_wait(&address, query, config, &job_id).await.map(Arc::new).map_err(Arc::new)
}

async fn submit_and_wait(
    address: &Address,
    query: ExecuteQueryParams,
    config: &BallistaConfig,
    job_id: &Mutex<Option<String>>,
) -> Result<Vec<PartitionLocation>> {
    let failed = |e: &dyn std::fmt::Display| {
        DataFusionError::Execution(format!("the cluster's scheduler at {address} failed the query: {e}"))
    };
    let grpc = GrpcClientConfig::from(config);
    let endpoint =
        ballista_core::utils::create_grpc_client_endpoint(address.endpoint(), Some(&grpc)).map_err(|e| failed(&e))?;
    let limit = address.start_timeout();
    let began = Instant::now();
    let not_started = |what: String| DataFusionError::External(Box::new(ClusterError::NotStarted { what, limit }));
    let channel = tokio::time::timeout(limit, endpoint.connect())
        .await
        .map_err(|_| not_started(format!("the scheduler at {address} did not answer")))?
        .map_err(|e| failed(&e))?;
    let mut scheduler = SchedulerGrpcClient::new(channel)
        .max_encoding_message_size(config.grpc_client_max_message_size())
        .max_decoding_message_size(config.grpc_client_max_message_size());
    let mut request = tonic::Request::new(query);
    ballista_core::version::insert_version_header(request.metadata_mut());
    let submitted = tokio::time::timeout(limit, scheduler.execute_query(request))
        .await
        .map_err(|_| not_started(format!("the scheduler at {address} had not taken its job")))?
        .map_err(|e| failed(&e.message()))?
        .into_inner();
    let id = match submitted.result {
        Some(execute_query_result::Result::Success(s)) => s.job_id,
        Some(execute_query_result::Result::Failure(f)) => return Err(failed(&format!("{:?}", f.failure))),
        None => return Err(failed(&"it answered with neither a job nor an error")),
    };
    if let Ok(mut handle) = job_id.lock() {
        *handle = Some(id.clone());
    }
    tracing::info!(job = %id, "submitted to the cluster");
    // Until the job has ended, giving up on it (its query dropped: Ctrl-C,
    // another node failed; or not started in time) cancels it.
    let mut unfinished = CancelOnDrop { scheduler: Some(scheduler.clone()), job_id: id.clone() };
    loop {
        let status = scheduler
            .get_job_status(GetJobStatusParams { job_id: id.clone() })
            .await
            .map_err(|e| failed(&e.message()))?
            .into_inner();
        match status.status.and_then(|s| s.status) {
            None | Some(job_status::Status::Queued(_)) if began.elapsed() >= limit => {
                return Err(not_started(format!("its job {id} was still queued at the scheduler at {address}")));
            }
            None | Some(job_status::Status::Queued(_)) | Some(job_status::Status::Running(_)) => {}
            Some(job_status::Status::Failed(f)) => {
                unfinished.ended();
                return Err(failed(&format!("job {id} failed: {}", f.error)));
            }
            Some(job_status::Status::Successful(done)) => {
                unfinished.ended();
                tracing::info!(job = %id, "done on the cluster in {} ms", done.ended_at.saturating_sub(done.started_at));
                return Ok(done.partition_location);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Cancels a job on the cluster when dropped before [`CancelOnDrop::ended`]:
/// the scheduler is told in the background, and a failure to tell it is
/// only logged (the job's query is gone either way).
struct CancelOnDrop {
    scheduler: Option<SchedulerGrpcClient<tonic::transport::Channel>>,
    job_id: String,
}

impl CancelOnDrop {
    /// The job ended on its own: nothing to cancel.
    fn ended(&mut self) {
        self.scheduler = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(scheduler) = self.scheduler.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(cancel(scheduler, std::mem::take(&mut self.job_id)));
    }
}

/// Asks the scheduler to cancel `job_id` until it holds the job ended. A
/// job cancelled while the scheduler is still planning it can be taken up
/// again once planned (Ballista's), so the request is repeated, every half
/// second for up to 10 s.
async fn cancel(mut scheduler: SchedulerGrpcClient<tonic::transport::Channel>, job_id: String) {
    for _ in 0..20 {
        let asked = scheduler.cancel_job(CancelJobParams { job_id: job_id.clone() });
        match tokio::time::timeout(Duration::from_secs(5), asked).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(job = %job_id, "the scheduler did not cancel the job: {}", e.message());
                return;
            }
            Err(_) => {
                tracing::warn!(job = %job_id, "the scheduler did not answer the job's cancellation within 5 s");
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let status = scheduler.get_job_status(GetJobStatusParams { job_id: job_id.clone() }).await;
        match status.map(|s| s.into_inner().status.and_then(|s| s.status)) {
            Ok(Some(job_status::Status::Failed(_) | job_status::Status::Successful(_))) | Ok(None) => {
                tracing::info!(job = %job_id, "cancelled on the cluster");
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(job = %job_id, "the scheduler did not say whether it cancelled the job: {}", e.message());
                return;
            }
        }
    }
    tracing::warn!(job = %job_id, "the scheduler still runs the job after 20 requests to cancel it");
}

/// One result partition, by block transport from the executor holding it.
async fn fetch(location: PartitionLocation, grpc: GrpcClientConfig) -> Result<SendableRecordBatchStream> {
    let missing =
        |what: &str| DataFusionError::Internal(format!("the scheduler named a result partition without {what}"));
    let layout = location.layout();
    let executor = location.executor_meta.ok_or_else(|| missing("its executor"))?;
    let partition = location.partition_id.ok_or_else(|| missing("its id"))?;
    let port = u16::try_from(executor.port).map_err(|_| missing("a valid port"))?;
    let mut client = BallistaClient::try_new(
        &executor.host,
        port,
        grpc.max_message_size,
        grpc.use_tls,
        None,
        grpc.io_retries_times,
        grpc.io_retry_wait_time_ms,
        grpc.initial_connection_window_size,
        grpc.initial_stream_window_size,
    )
    .await
    .map_err(|e| DataFusionError::Execution(format!("reaching executor {}:{port}: {e}", executor.host)))?;
    client
        .fetch_partition(&executor.id, &partition.into(), location.file_id, layout, false)
        .await
        .map_err(|e| e.into_datafusion())
}
