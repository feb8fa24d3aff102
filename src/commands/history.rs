//! `ferry history`: the run history (`state::history`) shown per node and
//! run (volumes, error rate, the change of staged rows from the run
//! before), then per rule and run, with the rules whose failures doubled
//! or appeared flagged.

use anyhow::Result;
use datafusion::arrow::record_batch::RecordBatch;

use crate::cli::HistoryArgs;
use crate::error::ExitStatus;
use crate::printer::Printer;
use crate::settings::Settings;
use crate::state::history::{self, Query};

pub(crate) async fn history(settings: &Settings, args: &HistoryArgs, printer: &Printer) -> Result<ExitStatus> {
    let query = Query { model: args.model.clone(), last: args.last };
    let (nodes, rules) = history::read(&settings.layout(), &query).await?;
    let rows = |b: &[RecordBatch]| b.iter().map(RecordBatch::num_rows).sum::<usize>();
    if rows(&nodes) == 0 {
        printer.status(match &args.model {
            None => "no run is in the history yet",
            Some(_) => "no run in the history ran that node",
        });
        return Ok(ExitStatus::Success);
    }
    if printer.is_json() {
        super::print_json_lines(printer, &nodes)?;
        if rows(&rules) > 0 {
            super::print_json_lines(printer, &rules)?;
        }
        return Ok(ExitStatus::Success);
    }
    printer.data("By node and run:")?;
    printer.data(&datafusion::arrow::util::pretty::pretty_format_batches(&nodes)?.to_string())?;
    if rows(&rules) > 0 {
        printer.data("By rule and run (failures, the run before's, and a flag where they doubled or appeared):")?;
        printer.data(&datafusion::arrow::util::pretty::pretty_format_batches(&rules)?.to_string())?;
    }
    Ok(ExitStatus::Success)
}
