//! Reconciliation: proving that a target table holds exactly what was
//! staged, and finding every difference when it does not.
//!
//! Both sides compute the same things over the same canonical encoding
//! ([`canonical`]):
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
//! SQLite, which is in-process). On PostgreSQL both compute the same typed
//! hashes, and [`Side`] is chosen per table by estimated cost unless
//! configured. See `crate::backend`.

pub mod canonical;
mod scan;

use std::collections::{BTreeMap, HashMap};

use datafusion::arrow::datatypes::DataType;
use serde::Serialize;
use serde_json::Value as Json;

use crate::backend::LoadJob;
use crate::validate::quarantine::Ledger;
use crate::values::{LoadMode, TableName};
pub use canonical::{Dialect, Family};

pub use scan::{Scan, SegmentSums, key_hash, run_blocking, scan_stage, send_batches, stage_rows_in};

/// Rows a segment should hold: fewer are fetched and compared row by row.
pub const SEGMENT_ROWS: u64 = 10_000;
/// Differing segments are fetched only while they hold at most this many
/// staged rows in all; beyond it the report gives counts, not keys.
pub const MAX_FETCH_ROWS: u64 = 500_000;
/// Differences listed per kind in the report.
pub const MAX_LISTED: usize = 100;

/// One compared column.
#[derive(Debug, Clone)]
pub struct SpecColumn {
    pub name: String,
    /// The canonical Arrow type it was staged as.
    pub data_type: DataType,
    pub family: Family,
    /// Its position in the staged batches.
    pub stage_index: usize,
    pub key: bool,
}

impl SpecColumn {
    /// An unsigned 64-bit column, which PostgreSQL keeps as `numeric` and
    /// whose values may not fit a signed 64-bit integer.
    pub fn wide(&self) -> bool {
        matches!(self.data_type, DataType::UInt64)
    }

    /// The declared scale of a decimal column.
    pub fn scale(&self) -> i8 {
        match self.data_type {
            DataType::Decimal128(_, s) | DataType::Decimal256(_, s) => s,
            _ => 0,
        }
    }
}

/// What both sides compute for one model.
#[derive(Debug, Clone)]
pub struct Spec {
    pub table: TableName,
    pub columns: Vec<SpecColumn>,
    /// Positions in `columns` of the key.
    pub key: Vec<usize>,
    /// Segments are the key hash's low `segment_bits` bits.
    pub segment_bits: u32,
    pub measures: Vec<Measure>,
    /// The position in `columns` of the column the profile is grouped by.
    pub group_by: Option<usize>,
    /// Whether only the target's rows with a staged key are compared (the
    /// rows an `append`, `upsert` or `delete+insert` load touched); the
    /// backend holds the keys (see `Connection::reconcile_scope`).
    pub touched_only: bool,
}

impl Spec {
    pub fn segment_mask(&self) -> u64 {
        (1u64 << self.segment_bits) - 1
    }

    pub fn segments(&self) -> u64 {
        1u64 << self.segment_bits
    }

    /// Whether the key is all integers (of at most 64 signed bits), so that
    /// on MySQL and SQLite its segment comes from
    /// [`canonical::arithmetic_key_hash`] rather than a hash of the key's
    /// text (PostgreSQL hashes every key by its typed values).
    pub fn arithmetic_key(&self) -> bool {
        self.key.iter().all(|&k| self.columns[k].family == Family::Int && !self.columns[k].wide())
    }
}

/// One aggregate of the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "measure", content = "column", rename_all = "snake_case")]
pub enum Measure {
    Rows,
    Nulls(usize),
    Sum(usize),
    Min(usize),
    Max(usize),
    DistinctKeys,
}

impl Measure {
    pub fn label(self, spec: &Spec) -> String {
        let name = |c: usize| spec.columns[c].name.as_str();
        match self {
            Measure::Rows => "rows".into(),
            Measure::Nulls(c) => format!("nulls({})", name(c)),
            Measure::Sum(c) => format!("sum({})", name(c)),
            Measure::Min(c) => format!("min({})", name(c)),
            Measure::Max(c) => format!("max({})", name(c)),
            Measure::DistinctKeys => "distinct keys".into(),
        }
    }
}

/// A model's `reconcile` config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub enabled: bool,
    /// Columns compared (all when empty).
    pub columns: Vec<String>,
    pub profile: bool,
    /// The profile's own choices: columns, aggregates, and the segment
    /// column its measures are grouped by.
    pub profile_columns: Vec<String>,
    pub aggregates: Vec<Aggregate>,
    pub segment_by: Option<String>,
    /// Differing rows allowed before the model fails.
    pub max_mismatch_rows: u64,
    /// Differing rows allowed, as a percentage of the staged rows.
    pub max_mismatch_pct: f64,
    /// Absolute difference allowed between float values.
    pub tolerance: f64,
    /// Where the target side runs.
    pub side: SideChoice,
}

/// Where the target side's hashes and profile are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// By the database, in SQL: one row per segment crosses the wire.
    Pushed,
    /// By ferry, over the compared columns streamed out of the database.
    Pulled,
}

/// `reconcile.side` and `ferry reconcile --side`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SideChoice {
    /// The cheaper side by the table's size and the connection.
    #[default]
    Auto,
    Pushed,
    Pulled,
}

/// The side `choice` picks, and why (for the report): as configured, or
/// (`auto`) the one with the lower estimated seconds. `does`: what each
/// side does; `detail`: more about the estimate, as shown.
pub fn choose_side(
    choice: SideChoice,
    (pushed, pulled): (f64, f64),
    detail: &str,
    (pushed_does, pulled_does): (&str, &str),
) -> (Side, String) {
    let figures = if pushed.max(pulled) < 0.1 {
        "estimated under 0.1s either way".to_owned()
    } else {
        format!("estimated {pushed:.1}s pushed down, {pulled:.1}s pulled{detail}")
    };
    match choice {
        SideChoice::Pushed => (Side::Pushed, format!("pushed down ({pushed_does}; as configured)")),
        SideChoice::Pulled => (Side::Pulled, format!("pulled ({pulled_does}; as configured)")),
        SideChoice::Auto if pulled < pushed => (Side::Pulled, format!("pulled ({pulled_does}; {figures})")),
        SideChoice::Auto => (Side::Pushed, format!("pushed down ({pushed_does}; {figures})")),
    }
}

impl SideChoice {
    pub const NAMES: [&'static str; 3] = ["auto", "pushed", "pulled"];

    pub fn parse(name: &str) -> Option<SideChoice> {
        Some(match name {
            "auto" => SideChoice::Auto,
            "pushed" => SideChoice::Pushed,
            "pulled" => SideChoice::Pulled,
            _ => return None,
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            columns: Vec::new(),
            profile: true,
            profile_columns: Vec::new(),
            aggregates: Aggregate::ALL.to_vec(),
            segment_by: None,
            max_mismatch_rows: 0,
            max_mismatch_pct: 0.0,
            tolerance: 0.0,
            side: SideChoice::Auto,
        }
    }
}

impl Config {
    /// Reads `reconcile: false` or `reconcile: {columns, profile,
    /// max_mismatch_rows, max_mismatch_pct, tolerance, side, enabled}`.
    pub fn from_json(value: Option<&Json>) -> Result<Config, String> {
        let mut config = Config::default();
        let map = match value {
            None | Some(Json::Null) | Some(Json::Bool(true)) => return Ok(config),
            Some(Json::Bool(false)) => return Ok(Config { enabled: false, ..config }),
            Some(Json::Object(m)) => m,
            Some(other) => return Err(format!("`reconcile` must be `false` or a mapping, not `{other}`")),
        };
        for (k, v) in map {
            let number = || {
                v.as_f64()
                    .filter(|n| *n >= 0.0)
                    .ok_or_else(|| format!("`reconcile.{k}` must be a number of at least 0, not `{v}`"))
            };
            match k.as_str() {
                "enabled" => {
                    config.enabled =
                        v.as_bool().ok_or_else(|| format!("`reconcile.enabled` must be true or false, not `{v}`"))?
                }
                "profile" => match v {
                    Json::Bool(b) => config.profile = *b,
                    Json::Object(p) => config.read_profile(p)?,
                    _ => {
                        return Err(format!(
                            "`reconcile.profile` must be true, false or a mapping of columns, aggregates and segment_by, not `{v}`"
                        ));
                    }
                },
                "columns" => config.columns = crate::project::config::column_list(v, "reconcile.columns")?,
                "max_mismatch_rows" => config.max_mismatch_rows = number()? as u64,
                "max_mismatch_pct" => config.max_mismatch_pct = number()?,
                "tolerance" => config.tolerance = number()?,
                "side" => {
                    config.side = v.as_str().and_then(SideChoice::parse).ok_or_else(|| {
                        format!("`reconcile.side` must be one of {}, not `{v}`", SideChoice::NAMES.join(", "))
                    })?
                }
                other => {
                    return Err(format!(
                        "unknown `reconcile` key `{other}`; the keys are enabled, columns, profile, max_mismatch_rows, max_mismatch_pct, tolerance, side"
                    ));
                }
            }
        }
        Ok(config)
    }

    /// `profile: {columns: [a], aggregates: [nulls, sum], segment_by: country}`.
    fn read_profile(&mut self, map: &serde_json::Map<String, Json>) -> Result<(), String> {
        for (k, v) in map {
            match k.as_str() {
                "columns" => {
                    self.profile_columns = crate::project::config::column_list(v, "reconcile.profile.columns")?
                }
                "aggregates" => {
                    let names = crate::project::config::column_list(v, "reconcile.profile.aggregates")?;
                    self.aggregates = names
                        .iter()
                        .map(|n| {
                            Aggregate::parse(n).ok_or_else(|| {
                                format!(
                                    "unknown aggregate `{n}` in `reconcile.profile.aggregates`; the aggregates are {}",
                                    Aggregate::NAMES.join(", ")
                                )
                            })
                        })
                        .collect::<Result<_, _>>()?;
                }
                "segment_by" => match v {
                    Json::String(c) if !c.is_empty() => self.segment_by = Some(c.clone()),
                    _ => return Err(format!("`reconcile.profile.segment_by` must be a column name, not `{v}`")),
                },
                other => {
                    return Err(format!(
                        "unknown `reconcile.profile` key `{other}`; the keys are columns, aggregates, segment_by"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The aggregates a profile can be limited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Nulls,
    Sum,
    Min,
    Max,
    DistinctKeys,
}

impl Aggregate {
    pub const ALL: [Aggregate; 5] =
        [Aggregate::Nulls, Aggregate::Sum, Aggregate::Min, Aggregate::Max, Aggregate::DistinctKeys];
    const NAMES: [&'static str; 5] = ["nulls", "sum", "min", "max", "distinct_keys"];

    fn parse(name: &str) -> Option<Aggregate> {
        Self::NAMES.iter().position(|n| *n == name).map(|i| Self::ALL[i])
    }
}

/// The spec for a load job: the configured columns (always with the key),
/// the key (`unique_key`, or every compared column), and the profile.
pub fn spec_for(job: &LoadJob, config: &Config) -> Result<Spec, String> {
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
    let mut measures = vec![Measure::Rows];
    let wants = |a: Aggregate| config.aggregates.contains(&a);
    if config.profile {
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
        if !job.unique_key.is_empty() && wants(Aggregate::DistinctKeys) {
            measures.push(Measure::DistinctKeys);
        }
    }
    let group_by = config.segment_by.as_ref().and_then(|g| columns.iter().position(|c| &c.name == g));
    Ok(Spec { table: job.table.clone(), columns, key, segment_bits, measures, group_by, touched_only: false })
}

/// A profile: one value per group and measure (as canonical text; `None`
/// for an aggregate over no values).
pub type Profile = BTreeMap<(Group, Measure), Option<String>>;

/// The rows a profile's measures are over: the whole table, or the rows
/// whose segment column (`Spec::group_by`) shows this text (`None`: NULL).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    All,
    Of(Option<String>),
}

impl Group {
    /// The group of a row whose segment column shows `text`.
    pub fn of(spec: &Spec, text: Option<&str>) -> Group {
        match spec.group_by {
            None => Group::All,
            Some(_) => Group::Of(text.map(str::to_owned)),
        }
    }

    fn label(&self, spec: &Spec, measure: Measure) -> String {
        match (self, spec.group_by) {
            (Group::Of(v), Some(g)) => {
                format!("{}={}: {}", spec.columns[g].name, v.as_deref().unwrap_or("NULL"), measure.label(spec))
            }
            _ => measure.label(spec),
        }
    }
}

/// The rows a profile counts, over all its groups.
pub fn profile_rows(profile: &Profile) -> u64 {
    profile
        .iter()
        .filter(|((_, m), _)| *m == Measure::Rows)
        .filter_map(|(_, v)| v.as_deref()?.parse::<u64>().ok())
        .sum()
}

/// One row fetched from a differing segment: its key's and columns' texts.
#[derive(Debug, Clone)]
pub struct FetchedRow {
    pub values: Vec<Option<String>>,
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
pub struct ModelReport {
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
pub fn checksum_check(spec: &Spec, diff: &Differences, staged: u64, config: &Config) -> Check {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_every_key_and_names_unknown_ones() {
        let c =
            Config::from_json(Some(&serde_json::json!({"columns": ["a"], "tolerance": 0.01, "max_mismatch_rows": 3})))
                .unwrap();
        assert_eq!(c.columns, vec!["a"]);
        assert_eq!(c.max_mismatch_rows, 3);
        assert!(!Config::from_json(Some(&Json::Bool(false))).unwrap().enabled);
        let e = Config::from_json(Some(&serde_json::json!({"tolerence": 1}))).unwrap_err();
        assert!(e.contains("unknown `reconcile` key `tolerence`"), "{e}");
        assert_eq!(Config::from_json(Some(&serde_json::json!({"side": "pulled"}))).unwrap().side, SideChoice::Pulled);
        assert_eq!(Config::default().side, SideChoice::Auto);
        let e = Config::from_json(Some(&serde_json::json!({"side": "pull"}))).unwrap_err();
        assert_eq!(e, "`reconcile.side` must be one of auto, pushed, pulled, not `\"pull\"`");
    }
}
