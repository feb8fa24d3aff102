//! Snapshots, run as dbt 1.9 runs them: a history of a source's records,
//! one row per version, with the meta columns `dbt_scd_id`,
//! `dbt_updated_at`, `dbt_valid_from`, `dbt_valid_to` (and
//! `dbt_is_deleted` with `hard_deletes: new_record`), named as
//! `snapshot_meta_column_names` says.
//!
//! A snapshot runs as an incremental model keyed by `dbt_scd_id` (see
//! [`super::incremental`]): its stage is the history, the first run stages
//! every source row as its first version, and each later run stages only
//! the versions that change, which are merged into the history and upserted
//! into the target on `dbt_scd_id`: new versions of new, changed and
//! reappeared records, the current versions they close, and for records gone
//! from the source their closed versions and deletion records. A run over
//! unchanged data stages nothing.
//!
//! Where ferry differs from dbt, it keeps history that dbt loses or
//! duplicates: a record that reappears after a deletion record starts its
//! new version at the snapshot time (dbt reuses its `updated_at`, which can
//! repeat the `dbt_scd_id` of its first version), and a column new in the
//! source is compared by `check_cols: all` only from the run that adds it.

use datafusion::arrow::datatypes::Schema;

use crate::diagnostic::{Code, Diagnostic};
use crate::manifest::config::{HardDeletes, Snapshot, SnapshotStrategy};
use crate::template::functions::quote_ident;

/// The snapshot time of a run, as a SQL timestamp (UTC, microseconds).
pub fn now_literal(now: chrono::DateTime<chrono::Utc>) -> String {
    timestamp(&format!("'{}'", now.format("%Y-%m-%d %H:%M:%S%.6f")))
}

/// Checks the columns of the snapshot's query (`source`) against its config:
/// its key, `updated_at` and `check_cols` are there, and no column has the
/// name of a meta column.
pub fn check_source(name: &str, s: &Snapshot, source: &Schema) -> Result<(), Box<Diagnostic>> {
    let has = |c: &str| source.field_with_name(c).is_ok();
    let mut wanted: Vec<(&str, &str)> = s.key.iter().map(|k| (k.as_str(), "unique_key")).collect();
    match &s.strategy {
        SnapshotStrategy::Timestamp { updated_at } => wanted.push((updated_at, "updated_at")),
        SnapshotStrategy::Check { columns: Some(cols) } => {
            wanted.extend(cols.iter().map(|c| (c.as_str(), "check_cols")))
        }
        SnapshotStrategy::Check { columns: None } => {}
    }
    if let Some(c) = &s.cursor {
        wanted.push((c.column.as_str(), "cursor"));
    }
    let columns = || source.fields().iter().map(|f| format!("`{}`", f.name())).collect::<Vec<_>>().join(", ");
    if let Some((column, key)) = wanted.into_iter().find(|(c, _)| !has(c)) {
        return Err(Box::new(
            Diagnostic::error(
                Code::ModelConfig,
                format!("snapshot `{name}`: its `{key}` `{column}` is not a column of its query"),
            )
            .with_note(format!("its query has {}", columns())),
        ));
    }
    if let Some(meta) = s.names.all(HardDeletes::NewRecord).into_iter().find(|m| has(m)) {
        return Err(Box::new(
            Diagnostic::error(
                Code::ModelConfig,
                format!("snapshot `{name}`: its query has a column `{meta}`, the name of a meta column"),
            )
            .with_help(
                "rename the column in the query, or name the meta columns apart with `snapshot_meta_column_names`",
            ),
        ));
    }
    Ok(())
}

/// The snapshot's SQL on its first run: every row of the query, as its
/// first version.
pub fn first_sql(query: &str, s: &Snapshot, now: &str) -> String {
    let updated = updated(s, "__ferry_source", now);
    let mut meta = vec![
        format!("{} AS {}", scd_id(&s.key, "__ferry_source", &updated), quote_ident(&s.names.scd_id)),
        format!("{updated} AS {}", quote_ident(&s.names.updated_at)),
        format!("{updated} AS {}", quote_ident(&s.names.valid_from)),
        format!("{} AS {}", valid_to_current(s), quote_ident(&s.names.valid_to)),
    ];
    if s.hard_deletes == HardDeletes::NewRecord {
        meta.push(format!("'False' AS {}", quote_ident(&s.names.is_deleted)));
    }
    format!("SELECT __ferry_source.*, {} FROM ({query}\n) AS __ferry_source", meta.join(", "))
}

/// The snapshot's SQL on a later run: the versions that change, over its
/// history in table `this` (schema `current`) and its query's rows (schema
/// `source`). Columns are those of the history, then those new in the
/// source; a side that lacks one gives NULL.
pub fn changes_sql(query: &str, s: &Snapshot, now: &str, this: &str, (source, current): (&Schema, &Schema)) -> String {
    let n = &s.names;
    let q = quote_ident;
    let metas = s.names.all(HardDeletes::NewRecord);
    let is_meta = |c: &str| metas.contains(&c);
    let in_source = |c: &str| source.field_with_name(c).is_ok();
    let in_current = |c: &str| current.field_with_name(c).is_ok();
    let mut columns: Vec<(String, String)> = Vec::new();
    for f in current.fields().iter().filter(|f| !is_meta(f.name())) {
        columns.push((f.name().clone(), f.data_type().to_string()));
    }
    for f in source.fields().iter().filter(|f| !in_current(f.name())) {
        columns.push((f.name().clone(), f.data_type().to_string()));
    }
    let side = |alias: &str, has: &dyn Fn(&str) -> bool| -> String {
        columns
            .iter()
            .map(|(c, t)| {
                if has(c) {
                    format!("{alias}.{}", q(c))
                } else {
                    format!("arrow_cast(NULL, '{}') AS {}", t.replace('\'', "''"), q(c))
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let new_record = s.hard_deletes == HardDeletes::NewRecord;
    let tracks_deletes = new_record && in_current(&n.is_deleted);
    let deleted = |alias: &str| {
        if tracks_deletes {
            format!("coalesce({alias}.{}, 'False') = 'True'", q(&n.is_deleted))
        } else {
            "FALSE".to_owned()
        }
    };
    let join = |a: &str, b: &str| {
        s.key.iter().map(|k| format!("{a}.{k} = {b}.{k}", k = q(k))).collect::<Vec<_>>().join(" AND ")
    };
    let current_rows = match &s.valid_to_current {
        None => format!("{} IS NULL", q(&n.valid_to)),
        Some(_) => format!("({v} IS NULL OR {v} = {})", valid_to_current(s), v = q(&n.valid_to)),
    };
    let source_updated = updated(s, "src", now);
    let changed = match &s.strategy {
        SnapshotStrategy::Timestamp { .. } => format!("cur.{} < {source_updated}", q(&n.valid_from)),
        SnapshotStrategy::Check { columns } => {
            let checked: Vec<String> = match columns {
                Some(cols) => cols.clone(),
                None => source.fields().iter().map(|f| f.name().clone()).collect(),
            };
            let terms: Vec<String> = checked
                .iter()
                .filter(|c| in_current(c) && in_source(c))
                .map(|c| format!("src.{c} IS DISTINCT FROM cur.{c}", c = q(c)))
                .collect();
            if terms.is_empty() { "FALSE".to_owned() } else { format!("({})", terms.join(" OR ")) }
        }
    };
    let is_deleted_out =
        |value: &str| if new_record { format!(", {value} AS {}", q(&n.is_deleted)) } else { String::new() };
    let kept_is_deleted = if tracks_deletes { format!("cur.{}", q(&n.is_deleted)) } else { "'False'".to_owned() };
    // A version that starts at `updated`, with the columns of `alias`.
    let version = |(alias, has): (&str, &dyn Fn(&str) -> bool), from: &str, updated: &str, deleted: &str| {
        format!(
            "SELECT {cols}, {scd} AS {scd_n}, {updated} AS {upd_n}, {updated} AS {from_n}, {vtc} AS {to_n}{del} FROM {from}",
            cols = side(alias, has),
            scd = scd_id(&s.key, alias, updated),
            scd_n = q(&n.scd_id),
            upd_n = q(&n.updated_at),
            from_n = q(&n.valid_from),
            to_n = q(&n.valid_to),
            vtc = valid_to_current(s),
            del = is_deleted_out(deleted),
        )
    };
    let new_version = |from: &str, updated: &str| version(("src", &in_source), from, updated, "'False'");
    let closed = |valid_to: &str, from: &str| {
        format!(
            "SELECT {cols}, cur.{scd}, cur.{upd}, cur.{vf}, {valid_to} AS {vt}{del} FROM {from}",
            cols = side("cur", &|c: &str| in_current(c)),
            scd = q(&n.scd_id),
            upd = q(&n.updated_at),
            vf = q(&n.valid_from),
            vt = q(&n.valid_to),
            del = is_deleted_out(&kept_is_deleted),
        )
    };
    let unseen = format!("src WHERE NOT EXISTS (SELECT 1 FROM cur WHERE {})", join("cur", "src"));
    let mut parts = if s.hard_deletes == HardDeletes::Invalidate {
        // A record back after its version was closed starts again at the
        // snapshot time; see the module doc.
        let history = format!("SELECT 1 FROM {} AS h WHERE {}", q(this), join("h", "src"));
        vec![
            new_version(&format!("{unseen} AND NOT EXISTS ({history})"), &source_updated),
            new_version(&format!("{unseen} AND EXISTS ({history})"), now),
        ]
    } else {
        vec![new_version(&unseen, &source_updated)]
    };
    parts.push(new_version("changed AS src", "src.__ferry_updated"));
    parts.push(closed(
        "changed.__ferry_updated",
        // The changed records first: a hash join builds on its left side.
        &format!("changed JOIN cur ON cur.{} = changed.__ferry_old_scd", q(&n.scd_id)),
    ));
    if s.hard_deletes != HardDeletes::Ignore {
        let gone = format!(
            "cur WHERE NOT EXISTS (SELECT 1 FROM src WHERE {}) AND NOT ({})",
            join("cur", "src"),
            deleted("cur")
        );
        parts.push(closed(now, &gone));
        if new_record {
            parts.push(version(("cur", &in_current), &gone, now, "'True'"));
        }
    }
    format!(
        "WITH src AS (SELECT * FROM ({query}\n) AS __ferry_source),\n\
         cur AS (SELECT * FROM {this} WHERE {current_rows}),\n\
         changed AS (SELECT src.*, cur.{scd} AS __ferry_old_scd, {was_deleted} AS __ferry_was_deleted, \
         CASE WHEN {was_deleted} THEN {now} ELSE {source_updated} END AS __ferry_updated \
         FROM src JOIN cur ON {join} WHERE {changed} OR {was_deleted})\n{}",
        parts.join("\nUNION ALL\n"),
        scd = q(&n.scd_id),
        this = q(this),
        was_deleted = deleted("cur"),
        join = join("cur", "src"),
    )
}

/// The time a source row's version starts: its `updated_at`, or the
/// snapshot time for `strategy: check`.
fn updated(s: &Snapshot, alias: &str, now: &str) -> String {
    match &s.strategy {
        SnapshotStrategy::Timestamp { updated_at } => timestamp(&format!("{alias}.{}", quote_ident(updated_at))),
        SnapshotStrategy::Check { .. } => now.to_owned(),
    }
}

/// `dbt_valid_to` of a current version.
fn valid_to_current(s: &Snapshot) -> String {
    match &s.valid_to_current {
        Some(expr) => timestamp(&format!("({expr})")),
        None => timestamp("NULL"),
    }
}

/// `expr` as a timestamp in microseconds without a time zone, the type of
/// every meta time: it holds `dbt_valid_to_current` dates as far as 9999,
/// past the nanosecond `TIMESTAMP`'s year 2262.
fn timestamp(expr: &str) -> String {
    format!("arrow_cast({expr}, 'Timestamp(Microsecond, None)')")
}

/// dbt's `dbt_scd_id`: the MD5 of the key's parts and the version's start.
fn scd_id(key: &[String], alias: &str, updated: &str) -> String {
    let parts: Vec<String> = key
        .iter()
        .map(|k| format!("coalesce(CAST({alias}.{} AS VARCHAR), '')", quote_ident(k)))
        .chain([format!("coalesce(CAST({updated} AS VARCHAR), '')")])
        .collect();
    format!("md5(concat_ws('|', {}))", parts.join(", "))
}
