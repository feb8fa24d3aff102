//! `ferry errors`: the error log of every run (or one), queried on the
//! engine: a summary by model, rule and severity, then the lines
//! themselves. Reads `.ferry/runs/<run id>/errors/<model>.parquet`.

use anyhow::{Context as _, Result};
use camino::Utf8PathBuf;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::cli::ErrorsArgs;
use crate::error::ExitStatus;
use crate::printer::Printer;
use crate::settings::Settings;
use crate::state::error_log;

pub(crate) async fn errors(settings: &Settings, args: &ErrorsArgs, printer: &Printer) -> Result<ExitStatus> {
    let runs_dir = settings.layout().runs();
    let runs = error_log::runs_with_logs(&runs_dir);
    let chosen: Vec<&(Utf8PathBuf, std::time::SystemTime)> = match args.run.as_deref() {
        None => runs.iter().collect(),
        Some("last") => runs.iter().max_by_key(|(_, t)| *t).into_iter().collect(),
        Some(id) => runs.iter().filter(|(d, _)| d.file_name() == Some(id)).collect(),
    };
    if chosen.is_empty() {
        let which = match args.run.as_deref() {
            None | Some("last") => "no run has logged a broken rule or a dropped duplicate yet".to_owned(),
            Some(id) => format!("run `{id}` logged nothing (or does not exist) under `{}/`", runs_dir.shown),
        };
        printer.status(&which);
        return Ok(ExitStatus::Success);
    }
    let files: Vec<String> = chosen
        .iter()
        .flat_map(|(dir, _)| error_log::log_files(dir))
        .filter(|f| args.model.is_empty() || args.model.iter().any(|m| f.file_stem() == Some(m.as_str())))
        .map(|f| f.to_string())
        .collect();
    if files.is_empty() {
        printer.status("no error log lines match");
        return Ok(ExitStatus::Success);
    }
    let (summary, lines) = read_logs(files, args).await?;
    if printer.is_json() {
        super::print_json_lines(printer, &lines)?;
        return Ok(ExitStatus::Success);
    }
    let total: usize = summary.iter().map(RecordBatch::num_rows).sum();
    if total == 0 {
        printer.status("no error log lines match");
        return Ok(ExitStatus::Success);
    }
    printer.data(&format!("By rule, over {} run{}:", chosen.len(), if chosen.len() == 1 { "" } else { "s" }))?;
    printer.data(&datafusion::arrow::util::pretty::pretty_format_batches(&summary)?.to_string())?;
    printer.data(&format!("First {} lines:", args.limit))?;
    printer.data(&datafusion::arrow::util::pretty::pretty_format_batches(&lines)?.to_string())?;
    Ok(ExitStatus::Success)
}

/// The error logs' lines that `args` picks: counted by model, rule and
/// severity, and the first `--limit` of them.
async fn read_logs(files: Vec<String>, args: &ErrorsArgs) -> Result<(Vec<RecordBatch>, Vec<RecordBatch>)> {
    let ctx = SessionContext::new();
    let log = ctx.read_parquet(files, ParquetReadOptions::default()).await.context("failed to read the error logs")?;
    ctx.register_table("errors", log.into_view())?;
    let filter = where_clause(args);
    let summary = query(
        &ctx,
        &format!(
            "SELECT model, rule, severity, count(*) AS lines, count(DISTINCT run_id) AS runs FROM errors{filter} \
             GROUP BY model, rule, severity ORDER BY lines DESC, model, rule"
        ),
    )
    .await?;
    let lines = query(
        &ctx,
        &format!(
            "SELECT run_id, model, record_key, rule, \"column\", value, severity, message, suggestion FROM errors{filter} \
             ORDER BY run_id, model, rule, record_key LIMIT {}",
            args.limit
        ),
    )
    .await?;
    Ok((summary, lines))
}

fn where_clause(args: &ErrorsArgs) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut parts = Vec::new();
    if !args.rule.is_empty() {
        parts.push(format!("rule IN ({})", args.rule.iter().map(|r| quote(r)).collect::<Vec<_>>().join(", ")));
    }
    if let Some(s) = &args.severity {
        parts.push(format!("severity = {}", quote(s)));
    }
    if parts.is_empty() { String::new() } else { format!(" WHERE {}", parts.join(" AND ")) }
}

async fn query(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    Ok(ctx.sql(sql).await?.collect().await?)
}
