//! One module per subcommand. A command parses its arguments into a library
//! call (`run::prepare` and `run::execute`, `load`, `reconcile`), renders
//! the events and reports that come back (`render`), and picks the exit
//! status; the pipeline itself lives below `commands/`.

mod audit;
mod clean;
mod cluster;
mod compile;
mod debug;
mod deps;
mod errors;
mod history;
mod init;
mod load;
mod ls;
mod reconcile;
mod render;
mod report;
mod run;
mod show;

use std::collections::BTreeSet;

use anyhow::Result;

use crate::cli::{Cli, Command, ExecArgs, SelectArgs};
use crate::diagnostic::Diagnostic;
use crate::error::ExitStatus;
use crate::manifest::{Manifest, NodeId};
use crate::printer::Printer;
use crate::run::{self as pipeline, Prepared, Which};
use crate::settings::Settings;
use crate::state::lock::{Holder, LockError, ProjectLock};

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<ExitStatus> {
    let printer = Printer::new(cli.global.format, cli.global.quiet, cli.global.verbose);
    let settings = || Settings::from_args(&cli.global);
    // Held until the command returns.
    let _lock = match changes_project(&cli.command) {
        Some(name) => match lock_project(&settings()?, name, cli.global.wait, &printer).await? {
            Ok(lock) => Some(lock),
            Err(status) => return Ok(status),
        },
        None => None,
    };
    match &cli.command {
        Command::Init(args) => init::init(args, &printer),
        Command::Deps(args) => deps::deps(&settings()?, args, &printer),
        Command::Compile(args) => compile::compile(&settings()?, args, &printer).await,
        Command::Run(args) => run::run(&settings()?, args, Which::Run, &printer).await,
        Command::Seed(args) => run::run(&settings()?, args, Which::Seed, &printer).await,
        Command::Test(args) => run::run(&settings()?, &args.into(), Which::Test, &printer).await,
        Command::Build(args) => run::run(&settings()?, args, Which::Build, &printer).await,
        Command::Snapshot(args) => run::run(&settings()?, args, Which::Snapshot, &printer).await,
        Command::Load(args) => load::load(&settings()?, args, &printer).await,
        Command::Reconcile(args) => reconcile::reconcile(&settings()?, args, &printer).await,
        Command::Rollback(args) => load::rollback(&settings()?, args, &printer).await,
        Command::Errors(args) => errors::errors(&settings()?, args, &printer).await,
        Command::History(args) => history::history(&settings()?, args, &printer).await,
        Command::Show(args) => show::show(&settings()?, args, &printer).await,
        Command::Audit(args) => audit::audit(&settings()?, args, &printer).await,
        Command::Report(args) => report::report(&settings()?, args, &printer).await,
        Command::Ls(args) => ls::ls(&settings()?, args, &printer),
        Command::Clean(args) => clean::clean(&settings()?, args, &printer),
        Command::Debug => debug::debug(&settings()?, &printer).await,
        Command::Cluster(args) => cluster::cluster(args, &printer).await,
    }
}

/// The name of a command that changes stages, state or the target, which
/// takes the project's lock (one run at a time).
fn changes_project(command: &Command) -> Option<&'static str> {
    Some(match command {
        Command::Run(_) => "run",
        Command::Seed(_) => "seed",
        Command::Test(_) => "test",
        Command::Build(_) => "build",
        Command::Snapshot(_) => "snapshot",
        Command::Load(_) => "load",
        Command::Reconcile(_) => "reconcile",
        Command::Rollback(_) => "rollback",
        Command::Deps(_) => "deps",
        Command::Clean(_) => "clean",
        _ => return None,
    })
}

/// Takes the project's lock for `command`: at once, or (`wait`) once the
/// run that holds it ends. `Err`: the status to end with, when another run
/// holds it and ferry does not wait (after saying who), or Ctrl-C stopped
/// the wait.
async fn lock_project(
    settings: &Settings,
    command: &str,
    wait: bool,
    printer: &Printer,
) -> Result<Result<ProjectLock, ExitStatus>> {
    let layout = settings.layout();
    if !wait {
        return match ProjectLock::try_acquire(&layout, command) {
            Ok(lock) => Ok(Ok(lock)),
            Err(LockError::Held { holder }) => {
                printer.error_summary(&format!(
                    "another ferry run is working on this project: {holder}; \
                     wait for it to end, or run again with `--wait` to wait for it"
                ));
                Ok(Err(ExitStatus::Failure))
            }
            Err(e) => Err(e.into()),
        };
    }
    let tell = |holder: &Holder| printer.status(&format!("waiting for {holder} to end (Ctrl-C to stop)"));
    tokio::select! {
        lock = ProjectLock::acquire(&layout, command, tell) => Ok(Ok(lock?)),
        _ = tokio::signal::ctrl_c() => {
            printer.error_summary("interrupted while waiting for the project's lock; nothing was changed");
            Ok(Err(ExitStatus::Interrupted))
        }
    }
}

/// [`pipeline::prepare`], printing the diagnostics and `None` when the
/// project itself is broken.
pub(crate) fn prepare_or_report(settings: &Settings, which: &str, printer: &Printer) -> Result<Option<Prepared>> {
    match pipeline::prepare(settings, which)? {
        Ok(p) => Ok(Some(p)),
        Err(diags) => {
            report(printer, &diags);
            printer.error_summary("the project could not be loaded");
            Ok(None)
        }
    }
}

/// Applies `--select`/`--exclude`, printing warnings for terms that
/// matched nothing, and the diagnostic and `None` for a bad selector.
pub(crate) fn selected_or_report(
    manifest: &Manifest,
    args: &SelectArgs,
    printer: &Printer,
) -> Option<BTreeSet<NodeId>> {
    match pipeline::select(manifest, &args.select, &args.exclude, args.fail_on_empty_selection) {
        Ok(selected) => {
            report(printer, &selected.warnings);
            Some(selected.nodes)
        }
        Err(d) => {
            report(printer, &[*d]);
            None
        }
    }
}

/// Prints diagnostics and says whether any was an error.
pub(crate) fn report(printer: &Printer, diags: &[Diagnostic]) -> bool {
    printer.diagnostics(diags);
    diags.iter().any(Diagnostic::is_error)
}

/// The engine for commands that execute, with `--memory-limit`.
pub(crate) fn engine_for(prepared: &Prepared, exec: &ExecArgs) -> Result<crate::engine::Engine> {
    pipeline::engine(prepared, exec.memory_limit.map(|b| b.as_u64()))
}

/// Prints rows as JSON, one object per line (`--format json`).
pub(crate) fn print_json_lines(
    printer: &Printer,
    batches: &[datafusion::arrow::record_batch::RecordBatch],
) -> Result<()> {
    let mut out = Vec::new();
    let mut writer = arrow_json::LineDelimitedWriter::new(&mut out);
    writer.write_batches(&batches.iter().collect::<Vec<_>>())?;
    writer.finish()?;
    printer.data(String::from_utf8_lossy(&out).trim_end())?;
    Ok(())
}

/// Models to run at once: `--threads`, else the core count.
pub(crate) fn threads(exec: &ExecArgs) -> usize {
    exec.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from)).max(1)
}
