//! Reconciling one loaded table: the spec is built, the target side chosen
//! and computed (by the database, or by ferry over the rows it streams
//! out), the stage scanned at the same time, and the checks made; differing
//! segments are fetched from both sides and compared row by row.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use super::scan::{Scan, SegmentRows, scan_stage, stage_rows_in};
use super::{
    Differences, MAX_FETCH_ROWS, ReconcileReport, Reference, Status, allow_explained, checksum_check, count_check,
    diff_rows, differing_segments, ledger_check, profile_check, reconcilable, spec_for,
};
use crate::backend::checksum::{FetchedRow, Profile, RowSink, SegmentSums, Side, Spec, profile_rows};
use crate::backend::{BackendError, Connection, LoadJob};
use crate::manifest::config::ReconcileConfig as Config;
use crate::state::Ledger;
use crate::values::LoadMode;

/// Reconciles `job`'s table with its stage (or, [`Reference::Source`], with
/// a source read into a stage): every check, and the differing rows.
pub async fn reconcile_table(
    conn: &mut Connection,
    job: &LoadJob,
    (config, reference): (&Config, Reference),
    ledger: Option<&Ledger>,
) -> ReconcileReport {
    let started = Instant::now();
    let mut report = ReconcileReport {
        model: job.model.clone(),
        table: job.table.to_string(),
        status: Status::Pass,
        target_side: String::new(),
        staged_rows: job.rows(),
        target_rows: None,
        checks: Vec::new(),
        differences: Differences::default(),
        seconds: 0.0,
        notes: Vec::new(),
        error: None,
    };
    if !reconcilable(job.mode, &job.unique_key) {
        report.status = Status::Skipped;
        report.notes.push(format!(
            "mode `{}` without a `unique_key` leaves rows of earlier loads in the table that cannot be told from this load's",
            job.mode.name()
        ));
        return report;
    }
    match compare(conn, job, (config, reference), ledger, &mut report).await {
        Ok(()) => {
            let failed = report.checks.iter().any(|c| c.status == Status::Fail);
            report.status = if failed { Status::Fail } else { Status::Pass };
        }
        Err(e) => {
            report.status = Status::Error;
            report.error = Some(e);
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}

async fn compare(
    conn: &mut Connection,
    job: &LoadJob,
    (config, reference): (&Config, Reference),
    ledger: Option<&Ledger>,
    report: &mut ReconcileReport,
) -> Result<(), String> {
    let spec = Arc::new(scoped_spec(conn, job, config, report).await?);
    let (side, why_side) = conn.reconcile_side(&spec, config.side, job.rows()).await.map_err(why)?;
    report.target_side = why_side;
    let kind = conn.kind();
    let (stage, target) = tokio::join!(scan_stage(job, &spec, kind), target_summary(conn, &spec, side));
    let (stage_segments, stage_profile) = stage.map_err(why)?;
    let (target_segments, target_profile) = target.map_err(why)?;
    let target_rows = profile_rows(&target_profile);
    report.target_rows = Some(target_rows);
    if let Some(l) = ledger {
        report.checks.push(ledger_check(job.rows(), l));
    }
    report.checks.push(count_check(job.rows(), target_rows, reference));
    if config.profile {
        report.checks.push(profile_check(&spec, &stage_profile, &target_profile, config.tolerance));
    }
    let differing = differing_segments(&stage_segments, &target_segments);
    let diff = &mut report.differences;
    diff.segments = spec.segments();
    diff.segments_differing = differing.len() as u64;
    if !differing.is_empty() {
        let staged_in: u64 = differing.iter().filter_map(|s| stage_segments.get(s)).map(|s| s.0).sum();
        let target_in: u64 = differing.iter().filter_map(|s| target_segments.get(s)).map(|s| s.0).sum();
        if staged_in.max(target_in) > MAX_FETCH_ROWS {
            diff.not_fetched = true;
        } else {
            let wanted: HashSet<u64> = differing.iter().copied().collect();
            let (stage_rows, target_rows) =
                tokio::join!(stage_rows_in(job, &spec, kind, wanted), target_rows_in(conn, &spec, &differing));
            diff_rows(&spec, stage_rows.map_err(why)?, target_rows.map_err(why)?, config.tolerance, diff);
        }
    }
    report.checks.push(checksum_check(&spec, &report.differences, job.rows(), config));
    allow_explained(&mut report.checks, &report.differences);
    Ok(())
}

/// The spec for `job`; for a load that keeps earlier loads' rows (every
/// mode but `replace`), scoped to the keys this load staged, which the
/// target is given first.
async fn scoped_spec(
    conn: &mut Connection,
    job: &LoadJob,
    config: &Config,
    report: &mut ReconcileReport,
) -> Result<Spec, String> {
    let mut spec = spec_for(job, config)?;
    if job.mode != LoadMode::Replace {
        let keys = conn.reconcile_scope(job).await.map_err(why)?;
        spec.touched_only = true;
        report.notes.push(format!(
            "mode `{}`: compared the target's rows with the {keys} staged keys only; rows of earlier loads are not checked",
            job.mode.name()
        ));
    }
    Ok(spec)
}

/// The target's segment sums and profile, from the database (pushed
/// down) or from its rows scanned as the stage is (pulled).
async fn target_summary(
    conn: &mut Connection,
    spec: &Arc<Spec>,
    side: Side,
) -> Result<(SegmentSums, Profile), BackendError> {
    if side == Side::Pushed {
        return conn.pushed_summary(spec).await;
    }
    let scan = Scan::new(Arc::clone(spec), conn.kind());
    Ok(pull(conn, spec, scan).await?.finish())
}

/// The target's rows in `segments`: selected by the database, or kept from
/// every row pulled out of it.
async fn target_rows_in(
    conn: &mut Connection,
    spec: &Arc<Spec>,
    segments: &[u64],
) -> Result<Vec<FetchedRow>, BackendError> {
    if let Some(rows) = conn.pushed_rows(spec, segments).await? {
        return Ok(rows);
    }
    let sink = SegmentRows::new(Arc::clone(spec), conn.kind(), segments);
    Ok(pull(conn, spec, sink).await?.rows)
}

/// Has the backend feed every row of the target to `sink`.
async fn pull<S: RowSink>(conn: &mut Connection, spec: &Spec, sink: S) -> Result<S, BackendError> {
    let back = conn.pull_rows(spec, Box::new(sink)).await?;
    back.into_any().downcast::<S>().map(|s| *s).map_err(|_| BackendError::Read {
        model: spec.table.to_string(),
        message: "the backend handed back another sink than it was given; this is a bug".into(),
    })
}

/// A backend error as reconciling meets it (the backends' errors speak of
/// loading).
fn why(e: BackendError) -> String {
    e.reason()
}
