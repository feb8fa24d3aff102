//! One module per subcommand. Commands compose pipeline stages; stages
//! never call commands.

mod compile;
mod debug;
mod errors;
mod execute;
mod init;
mod load;
mod ls;
mod reconcile;
mod show;

use std::collections::BTreeSet;

use anyhow::Result;
use serde_json::Value as Json;

use crate::backend::profiles::{self, Target};
use crate::cli::{Cli, Command, ExecArgs, SelectArgs};
use crate::dag::select::{self, Selection};
use crate::diagnostic::{Code, Diagnostic};
use crate::error::ExitStatus;
use crate::manifest::{Built, Manifest};
use crate::printer::Printer;
use crate::project::Project;
use crate::settings::Settings;
use crate::template::Globals;
use execute::Which;

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<ExitStatus> {
    let printer = Printer::new(cli.global.format, cli.global.quiet, cli.global.verbose);
    match &cli.command {
        Command::Init(args) => init::init(args, &printer),
        Command::Compile(args) => compile::compile(&Settings::from_args(&cli.global)?, args, &printer).await,
        Command::Run(args) => execute::run(&Settings::from_args(&cli.global)?, args, Which::Run, &printer).await,
        Command::Seed(args) => execute::run(&Settings::from_args(&cli.global)?, args, Which::Seed, &printer).await,
        Command::Test(args) => {
            execute::run(&Settings::from_args(&cli.global)?, &args.into(), Which::Test, &printer).await
        }
        Command::Build(args) => execute::run(&Settings::from_args(&cli.global)?, args, Which::Build, &printer).await,
        Command::Load(args) => load::load(&Settings::from_args(&cli.global)?, args, &printer).await,
        Command::Reconcile(args) => reconcile::reconcile(&Settings::from_args(&cli.global)?, args, &printer).await,
        Command::Rollback(args) => load::rollback(&Settings::from_args(&cli.global)?, args, &printer).await,
        Command::Errors(args) => errors::errors(&Settings::from_args(&cli.global)?, args, &printer).await,
        Command::Show(args) => show::show(&Settings::from_args(&cli.global)?, args, &printer).await,
        Command::Ls(args) => ls::ls(&Settings::from_args(&cli.global)?, args, &printer),
        Command::Debug => debug::debug(&Settings::from_args(&cli.global)?, &printer).await,
    }
}

/// A project loaded as far as its manifest, with what went wrong on the way.
pub(crate) struct Session {
    pub target: Target,
    pub manifest: Manifest,
    /// Nodes whose templates failed to render.
    pub failed: BTreeSet<usize>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Loads project, target and manifest. `Ok(Err(diags))` means the project
/// itself is broken and nothing can run.
pub(crate) fn load_session(settings: &Settings, which: &str) -> Result<Result<Session, Vec<Diagnostic>>> {
    let started = std::time::Instant::now();
    let loaded = Project::load(&settings.root, &settings.vars)?;
    tracing::debug!(elapsed = ?started.elapsed(), "read the project files");
    let mut diagnostics = loaded.diagnostics;
    let Some(project) = loaded.project else { return Ok(Err(diagnostics)) };
    let profile_name = profile_name(settings, &project);
    let target = match resolve_target(settings, &project, &mut diagnostics) {
        Ok(t) => t,
        Err(d) => {
            diagnostics.push(*d);
            return Ok(Err(diagnostics));
        }
    };
    let globals = Globals {
        project_name: project.file.name.clone(),
        vars: project.file.vars.clone(),
        target: target_json(&target),
        invocation_id: uuid::Uuid::new_v4().to_string(),
        run_started_at: chrono::Utc::now(),
        which: which.to_owned(),
        full_refresh: false,
        docs: Default::default(),
    };
    let schema = target.schema().to_owned();
    let Built { manifest, failed, diagnostics: built_diags } = Manifest::build(project, globals, &schema);
    tracing::debug!(elapsed = ?started.elapsed(), "rendered every template");
    diagnostics.extend(built_diags);
    match manifest {
        Some(mut manifest) => {
            manifest.connections = source_connections(settings, &manifest, &profile_name);
            Ok(Ok(Session { target, manifest, failed, diagnostics }))
        }
        None => Ok(Err(diagnostics)),
    }
}

/// [`load_session`], printing the diagnostics and `None` when the project
/// itself is broken.
pub(crate) fn load_or_report(settings: &Settings, which: &str, printer: &Printer) -> Result<Option<Session>> {
    match load_session(settings, which)? {
        Ok(s) => Ok(Some(s)),
        Err(diags) => {
            report(printer, &diags);
            printer.error_summary("the project could not be loaded");
            Ok(None)
        }
    }
}

fn profile_name(settings: &Settings, project: &Project) -> String {
    settings.profile.clone().or_else(|| project.file.profile.clone()).unwrap_or_else(|| project.file.name.clone())
}

fn resolve_target(
    settings: &Settings,
    project: &Project,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Target, Box<Diagnostic>> {
    let name = profile_name(settings, project);
    profiles::resolve_target(&settings.profiles_dirs, &name, settings.target.as_deref(), &settings.root, warnings)
}

/// The profile targets that database sources name as their `connection`,
/// resolved to URLs (URLs and `env:VAR` connections need no profile).
fn source_connections(
    settings: &Settings,
    manifest: &crate::manifest::Manifest,
    profile: &str,
) -> std::collections::BTreeMap<String, Result<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for node in &manifest.nodes {
        let crate::manifest::Resource::Source(s) = &node.resource else { continue };
        let Some(name) = s.location.get("connection").and_then(Json::as_str) else { continue };
        if name.contains("://") || name.starts_with("env:") || out.contains_key(name) {
            continue;
        }
        let mut ignored = Vec::new();
        let resolved =
            profiles::resolve_target(&settings.profiles_dirs, profile, Some(name), &settings.root, &mut ignored)
                .map_err(|d| d.message.clone())
                .and_then(|t| t.url());
        out.insert(name.to_owned(), resolved);
    }
    out
}

/// `target` as templates see it: dbt's fields, never the password.
fn target_json(t: &Target) -> Json {
    let mut v = serde_json::json!({
        "name": t.name, "type": t.type_name(), "schema": t.schema(), "database": t.database(),
        "threads": t.threads.unwrap_or(1), "profile_name": t.profile,
    });
    if let Some(s) = t.server() {
        v["host"] = Json::from(s.host.clone());
        v["port"] = Json::from(s.port);
        v["user"] = Json::from(s.user.clone());
        v["dbname"] = Json::from(s.dbname.clone());
    }
    v
}

/// Applies `--select`/`--exclude`; a bad selector is a diagnostic.
pub(crate) fn selected(manifest: &Manifest, args: &SelectArgs) -> Result<BTreeSet<usize>, Box<Diagnostic>> {
    let parse = |items: &[String]| {
        Selection::parse(items).map_err(|e| {
            Box::new(Diagnostic::error(Code::Selector, e.to_string()).with_help(
                "selectors look like `orders`, `+orders`, `tag:nightly`, `path:models/staging` or `config.materialized:table`",
            ))
        })
    };
    let include = parse(&args.select)?;
    let exclude = parse(&args.exclude)?;
    let facts = manifest.facts();
    Ok(select::select(&facts, &manifest.graph, &include, &exclude))
}

/// [`selected`], printing the diagnostic and `None` for a bad selector.
pub(crate) fn selected_or_report(manifest: &Manifest, args: &SelectArgs, printer: &Printer) -> Option<BTreeSet<usize>> {
    selected(manifest, args).map_err(|d| report(printer, &[*d])).ok()
}

/// Prints diagnostics and says whether any was an error.
pub(crate) fn report(printer: &Printer, diags: &[Diagnostic]) -> bool {
    printer.diagnostics(diags);
    diags.iter().any(Diagnostic::is_error)
}

/// The engine for commands that execute: memory limit and spill directory
/// under `.ferry/`.
pub(crate) fn engine_for(settings: &Settings, exec: &ExecArgs) -> Result<crate::engine::Engine> {
    use anyhow::Context as _;
    let limit = match exec.memory_limit {
        Some(b) => usize::try_from(b.as_u64()).unwrap_or(usize::MAX),
        None => crate::engine::session::default_memory_limit(),
    };
    let options = crate::engine::EngineOptions {
        memory_limit: Some(limit),
        spill_dir: Some(settings.path(".ferry/spill")),
        ..crate::engine::EngineOptions::default()
    };
    crate::engine::Engine::new(&options).context("failed to start the query engine")
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
