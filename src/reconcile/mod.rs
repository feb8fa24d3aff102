//! Reconciliation: proving that a target table holds exactly what was
//! staged, and finding every difference when it does not.
//!
//! Both sides compute the same things over the same canonical encoding
//! (`backend::checksum`, and each database's own hashes under
//! `backend/<db>/hash.rs`):
//! 1. the row count, tied to the model's row ledger;
//! 2. a column profile: NULLs per column, exact sums of integer and
//!    decimal columns (floats within a relative 1e-9, since summation order
//!    differs), min/max of dates, timestamps, times and numeric keys, and
//!    the number of distinct keys;
//! 3. row checksums per segment: a row's 64-bit hash summed with wraparound
//!    and paired with the row count. Segments are buckets of the *key's*
//!    hash, not key ranges, so composite and string keys need no split
//!    points and no database collation is involved. The segment count is
//!    chosen so that a segment holds about [`SEGMENT_ROWS`] rows; segments
//!    that differ are fetched row by row from both sides and compared by
//!    key, down to missing keys, extra keys and changed columns with both
//!    values.
//!
//! The stage side streams the staged Parquet. The target side runs either
//! inside the database as SQL ("pushed down": PostgreSQL and MySQL), or in
//! ferry over the rows streamed out ("pulled": PostgreSQL's binary COPY, and
//! SQLite, which is in-process), fed to this module's scan as a
//! `RowSink`. On PostgreSQL both compute the same typed hashes, and the
//! side is chosen per table by estimated cost unless configured.
//!
//! This module is the policy: it builds the spec, chooses what to fetch,
//! and judges the answers ([`reconcile_table`]; for a project's loaded
//! tables [`reconcile_nodes`]). The backends only answer.

mod compare;
mod nodes;
mod scan;

use std::collections::HashMap;

use crate::backend::LoadJob;
use crate::backend::checksum::{FetchedRow, Group, Measure, Profile, SegmentSums, Spec, SpecColumn};
use crate::manifest::config::{Aggregate, ReconcileConfig};
use crate::state::Ledger;
use crate::values::{Family, LoadMode};
use datafusion::arrow::datatypes::DataType;
use serde::Serialize;

pub use compare::reconcile_table;
pub use nodes::{ReconcileEvent, Reconciled, ledgers_of_last_run, reconcile_nodes, reconcile_source, write_report};
pub use scan::{Scan, SegmentRows, key_hash, scan_stage, stage_rows_in};

/// Rows a segment should hold: fewer are fetched and compared row by row.
pub const SEGMENT_ROWS: u64 = 10_000;
/// Differing segments are fetched only while they hold at most this many
/// staged rows in all; beyond it the report gives counts, not keys.
pub const MAX_FETCH_ROWS: u64 = 500_000;
/// Differences listed per kind in the report.
pub const MAX_LISTED: usize = 100;

/// The spec for a load job: the configured columns (always with the key),
/// the key (`unique_key`, or every compared column), and the profile.
pub fn spec_for(job: &LoadJob, config: &ReconcileConfig) -> Result<Spec, String> {
    let named = [("columns", &config.columns), ("profile.columns", &config.profile_columns)];
    let segment_by = config.segment_by.iter().cloned().collect::<Vec<_>>();
    for (what, list) in named.into_iter().chain([("profile.segment_by", &segment_by)]) {
        for c in list {
            if !job.columns.iter().any(|l| &l.name == c) {
                let hint = crate::diagnostic::did_you_mean(c, job.columns.iter().map(|l| l.name.as_str()));
                return Err(format!(
                    "`reconcile.{what}` names `{c}`, which is not a staged column{}",
                    hint.map(|h| format!("; {h}")).unwrap_or_default()
                ));
            }
        }
    }
    let mut columns = Vec::new();
    for (i, c) in job.columns.iter().enumerate() {
        let key = job.unique_key.contains(&c.name);
        let grouped = config.segment_by.as_ref() == Some(&c.name);
        if config.columns.is_empty() || key || grouped || config.columns.contains(&c.name) {
            columns.push(SpecColumn {
                name: c.name.clone(),
                data_type: c.data_type.clone(),
                family: Family::of(&c.data_type),
                stage_index: i,
                key,
            });
        }
    }
    if job.unique_key.is_empty() {
        for c in &mut columns {
            c.key = true;
        }
    }
    let key: Vec<usize> = columns.iter().enumerate().filter(|(_, c)| c.key).map(|(i, _)| i).collect();
    let segments = job.rows().div_ceil(SEGMENT_ROWS).max(1);
    let segment_bits = (64 - (segments - 1).leading_zeros()).min(20);
    let measures = measures(&columns, config, !job.unique_key.is_empty());
    let group_by = config.segment_by.as_ref().and_then(|g| columns.iter().position(|c| &c.name == g));
    Ok(Spec { table: job.table.clone(), columns, key, segment_bits, measures, group_by, touched_only: false })
}

/// The profile's measures over `columns`: the row count, then per
/// profiled column its NULLs, its sum (numbers), its extremes (dates and
/// times, and keys that order without a collation), and the distinct keys
/// (`keyed`: there is a unique key to count).
fn measures(columns: &[SpecColumn], config: &ReconcileConfig, keyed: bool) -> Vec<Measure> {
    let mut measures = vec![Measure::Rows];
    if !config.profile {
        return measures;
    }
    let wants = |a: Aggregate| config.aggregates.contains(&a);
    for (i, c) in columns.iter().enumerate() {
        if !config.profile_columns.is_empty() && !config.profile_columns.contains(&c.name) {
            continue;
        }
        if wants(Aggregate::Nulls) {
            measures.push(Measure::Nulls(i));
        }
        let wide_decimal = matches!(c.data_type, DataType::Decimal256(..));
        if wants(Aggregate::Sum) && ((c.family.sums_exactly() && !wide_decimal) || c.family.is_float()) {
            measures.push(Measure::Sum(i));
        }
        let ordered = matches!(c.family, Family::Date | Family::Timestamp | Family::Time)
            || (c.key && c.family.orders_without_collation() && !wide_decimal);
        if ordered && wants(Aggregate::Min) {
            measures.push(Measure::Min(i));
        }
        if ordered && wants(Aggregate::Max) {
            measures.push(Measure::Max(i));
        }
    }
    // Without a unique key the "key" is every column: nothing to count.
    if keyed && wants(Aggregate::DistinctKeys) {
        measures.push(Measure::DistinctKeys);
    }
    measures
}

/// How PASS or FAIL a check or a model is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skipped,
    Error,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skipped => "SKIP",
            Status::Error => "ERROR",
        }
    }
}

/// One check of one model.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mismatches: Vec<ProfileMismatch>,
}

impl Check {
    /// A check that passed if `passed`, with no profile mismatches.
    fn new(name: &'static str, passed: bool, detail: String) -> Self {
        Check { name, status: if passed { Status::Pass } else { Status::Fail }, detail, mismatches: Vec::new() }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProfileMismatch {
    pub measure: String,
    pub stage: Option<String>,
    pub target: Option<String>,
}

/// A key: its columns' names and shown texts, in the key's order (a JSON
/// object in that order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key(pub Vec<(String, Option<String>)>);

impl Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (column, value) in &self.0 {
            map.serialize_entry(column, value)?;
        }
        map.end()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangedRow {
    pub key: Key,
    pub columns: Vec<ChangedCell>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangedCell {
    pub column: String,
    pub stage: Option<String>,
    pub target: Option<String>,
}

/// The rows that differ, from the segments whose checksums differ.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Differences {
    pub segments: u64,
    pub segments_differing: u64,
    /// Keys staged but not in the target.
    pub missing: u64,
    /// Keys in the target but not staged.
    pub extra: u64,
    /// Keys in both whose columns differ.
    pub changed: u64,
    /// Keys the target holds more than once.
    pub duplicate_keys: u64,
    /// Whether the segments were too large to fetch: then only
    /// `segments_differing` is known.
    pub not_fetched: bool,
    pub missing_keys: Vec<Key>,
    pub extra_keys: Vec<Key>,
    pub changed_rows: Vec<ChangedRow>,
    pub duplicated: Vec<Key>,
}

impl Differences {
    /// Rows that differ (each missing, extra, changed or duplicated key once).
    pub fn rows(&self) -> u64 {
        self.missing + self.extra + self.changed + self.duplicate_keys
    }
}

/// What reconciling one model found.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcileReport {
    pub model: String,
    pub table: String,
    pub status: Status,
    /// `pushed down` or `pulled`, and why (empty for a skipped model).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub target_side: String,
    pub staged_rows: u64,
    pub target_rows: Option<u64>,
    pub checks: Vec<Check>,
    pub differences: Differences,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The ledger check: every row the model produced is staged, quarantined
/// or dropped as a duplicate, and the stage holds what the ledger says.
pub fn ledger_check(staged: u64, l: &Ledger) -> Check {
    let mut problems = Vec::new();
    if !l.balances() {
        problems.push(format!(
            "the ledger does not balance: produced {} != staged {} + quarantined {} + duplicates {}",
            l.produced, l.staged, l.quarantined, l.duplicates_dropped
        ));
    }
    if l.staged != staged {
        problems.push(format!("the ledger says {} rows were staged, the stage holds {staged}", l.staged));
    }
    let detail = if problems.is_empty() {
        format!(
            "{} produced = {} staged + {} quarantined + {} duplicates dropped",
            l.produced, l.staged, l.quarantined, l.duplicates_dropped
        )
    } else {
        problems.join("; ")
    };
    Check::new("ledger", problems.is_empty(), detail)
}

/// What the target is compared with: a model's stage, or a source read
/// into a temporary one (`ferry reconcile --source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    Stage,
    Source,
}

/// The row count check: the target holds as many rows as the stage.
pub fn count_check(staged: u64, target: u64, reference: Reference) -> Check {
    let side = match reference {
        Reference::Stage => "staged",
        Reference::Source => "in the source",
    };
    Check::new("row count", staged == target, format!("{staged} {side}, {target} in the target"))
}

/// When the checksum check found differing rows and allowed them (the
/// fidelity contract), the counts and profile those rows move are expected
/// to differ: such failures pass, saying why.
pub fn allow_explained(checks: &mut [Check], diff: &Differences) {
    let allowed =
        checks.iter().any(|c| c.name == "checksum" && c.status == Status::Pass) && !diff.not_fetched && diff.rows() > 0;
    if !allowed {
        return;
    }
    for c in checks.iter_mut().filter(|c| matches!(c.name, "row count" | "profile") && c.status == Status::Fail) {
        c.status = Status::Pass;
        c.detail = format!("{} (explained by the {} differing rows allowed)", c.detail, diff.rows());
    }
}

/// The profile check: every measure equal (float sums within a relative
/// 1e-9 plus the tolerance per row).
pub fn profile_check(spec: &Spec, stage: &Profile, target: &Profile, tolerance: f64) -> Check {
    let mut mismatches = Vec::new();
    let mut groups: Vec<&Group> = stage.keys().chain(target.keys()).map(|(g, _)| g).collect();
    groups.sort();
    groups.dedup();
    let mut compared = 0;
    for group in groups {
        for &m in &spec.measures {
            // The whole table's row count is the row count check's.
            if m == Measure::Rows && *group == Group::All {
                continue;
            }
            compared += 1;
            let value = |p: &Profile| p.get(&(group.clone(), m)).cloned().flatten();
            let (a, b) = (value(stage), value(target));
            let same = match (m, &a, &b) {
                (Measure::Sum(c), Some(x), Some(y)) if spec.columns[c].family.is_float() => {
                    match (x.parse::<f64>(), y.parse::<f64>()) {
                        (Ok(x), Ok(y)) => {
                            let rows = stage.get(&(group.clone(), Measure::Rows)).cloned().flatten();
                            let rows = rows.and_then(|r| r.parse::<f64>().ok()).unwrap_or(1.0);
                            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()) + tolerance * rows || x == y
                        }
                        _ => x == y,
                    }
                }
                _ => a == b,
            };
            if !same {
                mismatches.push(ProfileMismatch { measure: group.label(spec, m), stage: a, target: b });
            }
        }
    }
    let detail = if mismatches.is_empty() {
        format!("{compared} measures agree")
    } else {
        format!("{} of {compared} measures differ", mismatches.len())
    };
    let passed = mismatches.is_empty();
    Check { mismatches, ..Check::new("profile", passed, detail) }
}

/// The segments whose count or hash sum differ.
pub fn differing_segments(stage: &SegmentSums, target: &SegmentSums) -> Vec<u64> {
    let mut out: Vec<u64> = stage
        .iter()
        .filter(|(b, s)| target.get(b) != Some(s))
        .map(|(b, _)| *b)
        .chain(target.keys().filter(|b| !stage.contains_key(b)).copied())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Compares the rows of the differing segments by key.
pub fn diff_rows(spec: &Spec, stage: Vec<FetchedRow>, target: Vec<FetchedRow>, tolerance: f64, diff: &mut Differences) {
    let key_of =
        |row: &FetchedRow| -> Vec<Option<String>> { spec.key.iter().map(|&k| row.values[k].clone()).collect() };
    let show_key = |k: &[Option<String>]| -> Key {
        Key(spec.key.iter().zip(k).map(|(&c, v)| (spec.columns[c].name.clone(), v.clone())).collect())
    };
    let mut staged: HashMap<Vec<Option<String>>, Vec<FetchedRow>> = HashMap::new();
    for row in stage {
        staged.entry(key_of(&row)).or_default().push(row);
    }
    let mut in_target: HashMap<Vec<Option<String>>, Vec<FetchedRow>> = HashMap::new();
    for row in target {
        in_target.entry(key_of(&row)).or_default().push(row);
    }
    let mut keys: Vec<&Vec<Option<String>>> =
        staged.keys().chain(in_target.keys().filter(|k| !staged.contains_key(*k))).collect();
    keys.sort();
    for key in keys {
        let s = staged.get(key).map(Vec::as_slice).unwrap_or_default();
        let t = in_target.get(key).map(Vec::as_slice).unwrap_or_default();
        match (s, t) {
            (_, []) => {
                diff.missing += 1;
                if diff.missing_keys.len() < MAX_LISTED {
                    diff.missing_keys.push(show_key(key));
                }
            }
            ([], _) => {
                diff.extra += 1;
                if diff.extra_keys.len() < MAX_LISTED {
                    diff.extra_keys.push(show_key(key));
                }
            }
            _ => {
                if t.len() > s.len() {
                    diff.duplicate_keys += 1;
                    if diff.duplicated.len() < MAX_LISTED {
                        diff.duplicated.push(show_key(key));
                    }
                    continue;
                }
                let columns = changed_cells(spec, &s[0], &t[0], tolerance);
                if !columns.is_empty() {
                    diff.changed += 1;
                    if diff.changed_rows.len() < MAX_LISTED {
                        diff.changed_rows.push(ChangedRow { key: show_key(key), columns });
                    }
                }
            }
        }
    }
}

fn changed_cells(spec: &Spec, s: &FetchedRow, t: &FetchedRow, tolerance: f64) -> Vec<ChangedCell> {
    let mut out = Vec::new();
    for (i, c) in spec.columns.iter().enumerate() {
        let (a, b) = (&s.values[i], &t.values[i]);
        let same = match (a, b) {
            (Some(x), Some(y)) if c.family.is_float() => floats_agree(x, y, c.family == Family::Float32, tolerance),
            _ => a == b,
        };
        if !same {
            out.push(ChangedCell { column: c.name.clone(), stage: a.clone(), target: b.clone() });
        }
    }
    out
}

fn floats_agree(x: &str, y: &str, single: bool, tolerance: f64) -> bool {
    let parse =
        |s: &str| -> Option<f64> { if single { s.parse::<f32>().ok().map(f64::from) } else { s.parse::<f64>().ok() } };
    match (parse(x), parse(y)) {
        (Some(a), Some(b)) => a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= tolerance,
        _ => x == y,
    }
}

/// The checksum check from the differences found.
pub fn checksum_check(spec: &Spec, diff: &Differences, staged: u64, config: &ReconcileConfig) -> Check {
    let rows = diff.rows();
    let pct = if staged == 0 { if rows == 0 { 0.0 } else { 100.0 } } else { rows as f64 * 100.0 / staged as f64 };
    // The fidelity contract: exact unless a row count or a share is allowed.
    let within = rows <= config.max_mismatch_rows || (config.max_mismatch_pct > 0.0 && pct <= config.max_mismatch_pct);
    let detail = if diff.segments_differing == 0 {
        format!(
            "{} segment{} of {} columns agree",
            diff.segments,
            if diff.segments == 1 { "" } else { "s" },
            spec.columns.len()
        )
    } else if diff.not_fetched {
        format!("{} of {} segments differ (too many rows to list keys)", diff.segments_differing, diff.segments)
    } else if rows == 0 {
        format!(
            "{} of {} segments differ in hash only; every row agrees within the tolerance",
            diff.segments_differing, diff.segments
        )
    } else {
        format!(
            "{rows} rows differ ({} missing, {} extra, {} changed, {} duplicate keys) in {} of {} segments",
            diff.missing, diff.extra, diff.changed, diff.duplicate_keys, diff.segments_differing, diff.segments
        )
    };
    let failed = (diff.not_fetched && diff.segments_differing > 0) || (rows > 0 && !within);
    Check::new("checksum", !failed, detail)
}

/// Whether a load leaves the target holding exactly the stage (`replace`),
/// or the rows it touched can be told by their keys.
pub fn reconcilable(mode: LoadMode, unique_key: &[String]) -> bool {
    mode == LoadMode::Replace || !unique_key.is_empty()
}
