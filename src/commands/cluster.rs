//! `ferry cluster scheduler` and `ferry cluster executor`: the processes of
//! a Ballista cluster, with ferry's SQL functions (`engine::cluster`). They
//! run until stopped (Ctrl-C).

use anyhow::Result;

use crate::cli::{ClusterArgs, ClusterRole};
use crate::error::ExitStatus;
use crate::printer::Printer;

#[cfg(feature = "cluster")]
pub(crate) async fn cluster(args: &ClusterArgs, printer: &Printer) -> Result<ExitStatus> {
    use anyhow::Context as _;

    use crate::engine::cluster::{self, Address, ExecutorSettings, SchedulerSettings};
    let host = |given: &Option<String>, bind: std::net::SocketAddr| {
        given.clone().unwrap_or_else(|| match bind.ip().is_unspecified() {
            true => sysinfo::System::host_name().unwrap_or_else(|| "localhost".to_owned()),
            false => bind.ip().to_string(),
        })
    };
    let served = match &args.role {
        ClusterRole::Scheduler { bind, external_host, executor_timeout } => {
            let listener = tokio::net::TcpListener::bind(bind).await.with_context(|| format!("binding {bind}"))?;
            let host = host(external_host, *bind);
            printer.status(&format!(
                "scheduler listening on {bind}: run models on it with `--cluster df://{host}:{}` (Ctrl-C to stop)",
                bind.port()
            ));
            let settings = SchedulerSettings { external_host: host, executor_timeout: *executor_timeout };
            run_until_ctrl_c(cluster::scheduler(listener, &settings)).await
        }
        ClusterRole::Executor {
            scheduler,
            bind,
            grpc_port,
            external_host,
            concurrent_tasks,
            work_dir,
            memory_limit,
        } => {
            let settings = ExecutorSettings {
                scheduler: Address::parse(scheduler)?,
                bind: *bind,
                grpc_port: *grpc_port,
                external_host: Some(host(external_host, *bind)),
                concurrent_tasks: concurrent_tasks
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)),
                work_dir: work_dir.clone(),
                memory_limit: memory_limit.map(|b| b.as_u64()),
            };
            printer.status(&format!(
                "executor serving on {bind} for the scheduler at {} (Ctrl-C to stop)",
                settings.scheduler
            ));
            run_until_ctrl_c(cluster::executor(settings)).await
        }
    };
    match served {
        Some(Ok(())) => Ok(ExitStatus::Success),
        Some(Err(e)) => {
            printer.error_summary(&e.to_string());
            Ok(ExitStatus::Error)
        }
        None => Ok(ExitStatus::Interrupted),
    }
}

/// `serve` to its end, or `None` at Ctrl-C.
#[cfg(feature = "cluster")]
async fn run_until_ctrl_c<T>(serve: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        done = serve => Some(done),
        _ = tokio::signal::ctrl_c() => None,
    }
}

#[cfg(not(feature = "cluster"))]
pub(crate) async fn cluster(args: &ClusterArgs, printer: &Printer) -> Result<ExitStatus> {
    let role = match args.role {
        ClusterRole::Scheduler { .. } => "scheduler",
        ClusterRole::Executor { .. } => "executor",
    };
    printer.error_summary(&format!(
        "this ferry was built without the `cluster` feature, so it cannot run a {role} \
         (build it with `cargo build --release --features cluster`)"
    ));
    Ok(ExitStatus::Error)
}
