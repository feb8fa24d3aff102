//! How the commands show a run: one line per node, load and reconciled
//! table (`3 of 6 OK    table     orders   2,000 rows in 0.03s`), progress
//! bars while they work, and the lines under a reconciled table.

use std::sync::Mutex;

use crate::load::LoadEvent;
use crate::printer::{Printer, Progress};
use crate::reconcile::{self as rec, ReconcileEvent, ReconcileReport};

/// One line of a run's report: `3 of 6 OK    table     orders   2,000 rows in 0.03s`.
pub(crate) fn node_line(done: usize, total: usize, word: &str, kind: &str, name: &str, detail: &str) -> String {
    let width = total.to_string().len();
    format!("{done:>width$} of {total} {word:<5} {kind:<9} {name:<28} {detail}")
}

pub(crate) use crate::values::grouped as group;

/// Shows a load's progress: a bar while it works, a line per table.
pub(crate) struct LoadLines<'a> {
    printer: &'a Printer,
    progress: Mutex<Option<Progress>>,
}

impl<'a> LoadLines<'a> {
    pub(crate) fn new(printer: &'a Printer) -> Self {
        LoadLines { printer, progress: Mutex::new(None) }
    }

    pub(crate) fn event(&self, event: LoadEvent<'_>) {
        let mut progress = self.progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match event {
            LoadEvent::Started { total } => *progress = Some(self.printer.progress(total)),
            LoadEvent::Rows { model, rows, total, rate } => {
                if let Some(bar) = progress.as_ref().and_then(Progress::handle) {
                    bar.set_message(format!("loading {model}: {rows}/{total} rows, {rate:.0} rows/s"));
                }
            }
            LoadEvent::Finished { k, total, job, result } => {
                let Some(p) = progress.as_ref() else { return };
                match result {
                    Ok(report) => {
                        let detail = format!(
                            "{} rows into {} ({}, {}) in {:.2}s",
                            group(report.rows),
                            report.table,
                            report.mode,
                            report.strategy,
                            report.seconds
                        );
                        p.line(&node_line(k + 1, total, "OK", "load", &job.model, &detail));
                        for note in &report.notes {
                            p.line(&format!("      note: {note}"));
                        }
                    }
                    Err(_) => p.line(&node_line(k + 1, total, "ERROR", "load", &job.model, &job.table.to_string())),
                }
                p.advance();
            }
            LoadEvent::Interrupted { k, total, job } => {
                if let Some(p) = progress.as_ref() {
                    p.line(&node_line(k + 1, total, "STOP", "load", &job.model, "interrupted; the table is as it was"));
                }
            }
            LoadEvent::Done => {
                if let Some(p) = progress.take() {
                    p.finish();
                }
            }
        }
    }
}

/// Shows a reconciled table: its status line, then its checks and differences.
pub(crate) fn reconcile_event(printer: &Printer, event: ReconcileEvent<'_>) {
    let ReconcileEvent::Finished { k, total, job, report } = event;
    let detail = format!("{} ({:.2}s)", report.table, report.seconds);
    printer.status(&node_line(k, total, report.status.word(), "reconcile", &job.model, &detail));
    for line in report_lines(report) {
        printer.status(&format!("      {line}"));
    }
}

/// The lines under a model's status line: each check, then the differences.
fn report_lines(r: &ReconcileReport) -> Vec<String> {
    let mut out: Vec<String> = r.notes.iter().map(|n| format!("note: {n}")).collect();
    if r.checks.is_empty() {
        return out;
    }
    out.push(format!("target side: {}", r.target_side));
    for c in &r.checks {
        out.push(format!("{:<5} {}: {}", c.status.word(), c.name, c.detail));
        for m in c.mismatches.iter().take(10) {
            out.push(format!(
                "        {}: stage {}, target {}",
                m.measure,
                m.stage.as_deref().unwrap_or("NULL"),
                m.target.as_deref().unwrap_or("NULL")
            ));
        }
    }
    out.extend(difference_lines(&r.differences));
    out
}

/// The differing keys and changed columns of a report, the first of each kind.
fn difference_lines(d: &rec::Differences) -> Vec<String> {
    const SHOWN: usize = 10;
    let key = |k: &rec::Key| {
        k.0.iter().map(|(c, v)| format!("{c}={}", v.as_deref().unwrap_or("NULL"))).collect::<Vec<_>>().join(", ")
    };
    let mut out = Vec::new();
    for k in d.missing_keys.iter().take(SHOWN) {
        out.push(format!("  missing in target: {}", key(k)));
    }
    for k in d.extra_keys.iter().take(SHOWN) {
        out.push(format!("  extra in target:   {}", key(k)));
    }
    for k in d.duplicated.iter().take(SHOWN) {
        out.push(format!("  duplicate key in target: {}", key(k)));
    }
    for c in d.changed_rows.iter().take(SHOWN) {
        let cells: Vec<String> = c
            .columns
            .iter()
            .map(|x| {
                format!(
                    "{}: {} -> {}",
                    x.column,
                    x.stage.as_deref().map(|s| format!("{s:?}")).unwrap_or_else(|| "NULL".into()),
                    x.target.as_deref().map(|s| format!("{s:?}")).unwrap_or_else(|| "NULL".into())
                )
            })
            .collect();
        out.push(format!("  changed {}: {}", key(&c.key), cells.join("; ")));
    }
    let listed = d.missing_keys.len().min(SHOWN)
        + d.extra_keys.len().min(SHOWN)
        + d.duplicated.len().min(SHOWN)
        + d.changed_rows.len().min(SHOWN);
    if d.rows() > listed as u64 {
        out.push(format!("  ... {} more differing rows in the report file", group(d.rows() - listed as u64)));
    }
    out
}
