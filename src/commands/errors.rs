//! `ferry errors`: the error log of every run (or one), queried on the
//! engine (`validate::error_log`) and shown: a summary by model, rule and
//! severity, then the lines themselves.

use anyhow::Result;
use datafusion::arrow::record_batch::RecordBatch;

use crate::cli::ErrorsArgs;
use crate::error::ExitStatus;
use crate::printer::Printer;
use crate::settings::Settings;
use crate::validate::error_log::{self, LogQuery, Logs};

pub(crate) async fn errors(settings: &Settings, args: &ErrorsArgs, printer: &Printer) -> Result<ExitStatus> {
    let runs = settings.layout().runs();
    let query = LogQuery {
        run: args.run.clone(),
        models: args.model.clone(),
        rules: args.rule.clone(),
        severity: args.severity.clone(),
        limit: args.limit,
        masked_only: crate::run::masks(settings),
    };
    let (runs, summary, lines) = match error_log::read(&runs, &query).await? {
        Logs::NoRuns => {
            printer.status(&match args.run.as_deref() {
                None | Some("last") => "no run has logged a broken rule or a dropped duplicate yet".to_owned(),
                Some(id) => format!("run `{id}` logged nothing (or does not exist) under `{}/`", runs.shown),
            });
            return Ok(ExitStatus::Success);
        }
        Logs::Withheld(n) => {
            printer.status(&withheld(n));
            return Ok(ExitStatus::Success);
        }
        Logs::NoLines => {
            printer.status("no error log lines match");
            return Ok(ExitStatus::Success);
        }
        Logs::Found { runs, withheld: n, summary, lines } => {
            if n > 0 {
                printer.status(&withheld(n));
            }
            (runs, summary, lines)
        }
    };
    if printer.is_json() {
        super::print_json_lines(printer, &lines)?;
        return Ok(ExitStatus::Success);
    }
    let total: usize = summary.iter().map(RecordBatch::num_rows).sum();
    if total == 0 {
        printer.status("no error log lines match");
        return Ok(ExitStatus::Success);
    }
    printer.data(&format!("By rule, over {runs} run{}:", if runs == 1 { "" } else { "s" }))?;
    printer.data(&datafusion::arrow::util::pretty::pretty_format_batches(&summary)?.to_string())?;
    printer.data(&format!("First {} lines:", args.limit))?;
    printer.data(&datafusion::arrow::util::pretty::pretty_format_batches(&lines)?.to_string())?;
    Ok(ExitStatus::Success)
}

/// What a masked `ferry errors` says of the `n` runs made in clear it left out.
fn withheld(n: usize) -> String {
    let runs = if n == 1 { "1 run".to_owned() } else { format!("{n} runs") };
    format!("note: masking is on, so the error logs of {runs} made in clear (which hold clear values) are left out")
}
