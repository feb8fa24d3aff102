//! Reconciliation against real targets: load, corrupt the target in known
//! ways, and assert the exact keys, columns and values `ferry reconcile`
//! reports; and that untouched loads of every type family pass.

use serde_json::Value as Json;

use crate::common::TestProject;
use crate::load::{Db, MODES_MODEL, ok, project_for};

/// 1,000 rows with a key and one column of each common family.
const ACCOUNTS: &str = "{{ config(materialized='table', unique_key='id') }}
select
  value as id,
  value % 2 = 0 as active,
  cast(value * 3 as int) as qty,
  cast(value as double) / 8 as ratio,
  cast(cast(value as double) / 4 as real) as ratio32,
  cast(value * 1.25 as decimal(12, 2)) as amount,
  'name ' || cast(value as varchar) as name,
  case when value % 10 = 0 then '' else 'note' end as note,
  arrow_cast(arrow_cast('b' || cast(value as varchar), 'Utf8'), 'Binary') as payload,
  cast(to_timestamp_seconds(1700000000 + value * 86400) as date) as day,
  arrow_cast(to_timestamp_seconds(1700000000 + value * 3600), 'Timestamp(Microsecond, Some(\"UTC\"))') as ts_utc,
  case when value % 7 = 0 then null else make_array(value, value + 1) end as tags,
  named_struct('kind', 'acct', 'n', value) as meta
from generate_series(1, 1000)
";

/// Every column, in the model's order, for INSERTs that copy a row.
const COLUMNS: &str = "active, qty, ratio, ratio32, amount, name, note, payload, day, ts_utc, tags, meta";

fn accounts(db: &Db) -> TestProject {
    project_for(db, None, "").model("accounts.sql", ACCOUNTS)
}

/// The report of the latest `ferry reconcile` or `build`, per model.
fn report(p: &TestProject) -> Vec<Json> {
    let runs = p.path().join(".ferry/runs");
    let latest = std::fs::read_dir(&runs)
        .expect("runs dir")
        .filter_map(Result::ok)
        .map(|e| e.path().join("reconcile.json"))
        .filter(|f| f.exists())
        .max_by_key(|f| f.metadata().and_then(|m| m.modified()).ok())
        .expect("a reconcile.json");
    serde_json::from_str(&std::fs::read_to_string(latest).expect("read report")).expect("report is JSON")
}

fn model<'a>(report: &'a [Json], name: &str) -> &'a Json {
    report.iter().find(|r| r["model"] == name).unwrap_or_else(|| panic!("no report for {name}: {report:?}"))
}

/// The check named `name` of a model's report.
fn check<'a>(m: &'a Json, name: &str) -> Option<&'a Json> {
    m["checks"].as_array().into_iter().flatten().find(|c| c["name"] == name)
}

fn check_status(m: &Json, name: &str) -> String {
    check(m, name).map(|c| c["status"].to_string()).unwrap_or_default()
}

fn key(k: &Json) -> String {
    k.as_object()
        .expect("key")
        .iter()
        .map(|(c, v)| format!("{c}={}", v.as_str().unwrap_or("NULL")))
        .collect::<Vec<_>>()
        .join(",")
}

/// The differences as sorted lines: `missing id=5`, `changed id=10 active: 1 -> 0`.
fn differences(m: &Json) -> Vec<String> {
    let d = &m["differences"];
    let mut out = Vec::new();
    for (kind, field) in [("missing", "missing_keys"), ("extra", "extra_keys"), ("duplicate", "duplicated")] {
        for k in d[field].as_array().into_iter().flatten() {
            out.push(format!("{kind} {}", key(k)));
        }
    }
    for row in d["changed_rows"].as_array().into_iter().flatten() {
        for c in row["columns"].as_array().into_iter().flatten() {
            let v = |x: &Json| x.as_str().map(|s| format!("{s:?}")).unwrap_or_else(|| "NULL".into());
            out.push(format!(
                "changed {} {}: {} -> {}",
                key(&row["key"]),
                c["column"].as_str().unwrap_or(""),
                v(&c["stage"]),
                v(&c["target"])
            ));
        }
    }
    out.sort();
    out
}

/// Loads, checks that the untouched load reconciles on `side` (`auto`,
/// `pushed` or `pulled`), then corrupts the target with `corrupt` and
/// returns the report for `accounts`.
async fn corrupted(
    db: &mut Db,
    p: &TestProject,
    side: &str,
    corrupt: fn(&Db) -> Vec<String>,
) -> (crate::common::Ran, Json) {
    ok(&p.run(["run"]));
    let clean = p.run(["reconcile", "--side", side]);
    ok(&clean);
    let r = report(p);
    let m = model(&r, "accounts");
    assert_eq!(m["status"], "pass", "{m:#}");
    if side != "auto" {
        assert!(m["target_side"].as_str().unwrap_or("").starts_with(side), "{m:#}");
    }
    for c in ["row count", "profile", "checksum"] {
        assert_eq!(check_status(m, c), "\"pass\"", "{c}: {m:#}");
    }
    for sql in corrupt(db) {
        db.execute(&sql).await;
    }
    let ran = p.run(["reconcile", "--side", side]);
    let r = report(p);
    (ran, model(&r, "accounts").clone())
}

/// What every backend must report for [`corruptions`].
const EXPECTED: &[&str] = &[
    "changed id=10 active: \"1\" -> \"0\"",
    "changed id=11 qty: \"33\" -> \"34\"",
    "changed id=12 ratio: \"1.5\" -> \"2.5\"",
    "changed id=13 amount: \"16.25\" -> \"16.26\"",
    "changed id=14 name: \"name 14\" -> \"renamed\"",
    "changed id=15 payload: \"623135\" -> \"7a7a\"",
    "changed id=16 day: \"2023-11-30\" -> \"2023-12-01\"",
    "changed id=17 ts_utc: \"2023-11-15 15:13:20.000000\" -> \"2023-11-15 16:13:20.000000\"",
    "changed id=18 ratio32: \"4.5\" -> \"5.5\"",
    "changed id=20 note: \"\" -> NULL",
    "duplicate id=30",
    "extra id=1001",
    "missing id=5",
];

/// The corruptions, in each dialect: a deleted row, an extra row, one
/// changed cell per family, an empty string made NULL, a timestamp shifted
/// by an hour, and a duplicated key (after dropping the key constraint).
fn corruptions(db: &Db) -> Vec<String> {
    let t = match db {
        Db::Pg { .. } => format!("\"{}\".accounts", db.schema()),
        Db::My { .. } => format!("`{}`.accounts", db.schema()),
        Db::Lite { .. } => "accounts".to_owned(),
    };
    let (bytes, next_day, hour_later) = match db {
        Db::Pg { .. } => ("'\\x7a7a'::bytea", "day + 1", "ts_utc + interval '1 hour'"),
        Db::My { .. } => ("X'7a7a'", "DATE_ADD(day, INTERVAL 1 DAY)", "DATE_ADD(ts_utc, INTERVAL 1 HOUR)"),
        Db::Lite { .. } => (
            "X'7a7a'",
            "date(day, '+1 day')",
            "strftime('%Y-%m-%d %H:%M:%S', substr(ts_utc, 1, 19), '+1 hour') || '.000000+00:00'",
        ),
    };
    let drop_key = match db {
        Db::Pg { .. } => format!(
            "DO $$ DECLARE c text; BEGIN SELECT conname INTO c FROM pg_constraint WHERE conrelid = '{t}'::regclass AND contype = 'p'; \
             EXECUTE format('ALTER TABLE {} DROP CONSTRAINT %I', c); END $$",
            t.replace('\'', "''")
        ),
        Db::My { .. } => format!("ALTER TABLE {t} DROP PRIMARY KEY"),
        Db::Lite { path } => {
            let conn = rusqlite::Connection::open(path.as_std_path()).expect("open sqlite");
            let mut stmt = conn
                .prepare(
                    "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'accounts' AND sql IS NOT NULL",
                )
                .expect("prepare");
            let names: Vec<String> = stmt.query_map([], |r| r.get(0)).expect("indexes").map(Result::unwrap).collect();
            names.iter().map(|n| format!("DROP INDEX \"{n}\"")).collect::<Vec<_>>().join("; ")
        }
    };
    let mut sql = vec![
        format!("DELETE FROM {t} WHERE id = 5"),
        format!("INSERT INTO {t} (id, {COLUMNS}) SELECT 1001, {COLUMNS} FROM {t} WHERE id = 6"),
        format!("UPDATE {t} SET active = NOT active WHERE id = 10"),
        format!("UPDATE {t} SET qty = qty + 1 WHERE id = 11"),
        format!("UPDATE {t} SET ratio = 2.5 WHERE id = 12"),
        format!("UPDATE {t} SET amount = amount + 0.01 WHERE id = 13"),
        format!("UPDATE {t} SET name = 'renamed' WHERE id = 14"),
        format!("UPDATE {t} SET payload = {bytes} WHERE id = 15"),
        format!("UPDATE {t} SET day = {next_day} WHERE id = 16"),
        format!("UPDATE {t} SET ts_utc = {hour_later} WHERE id = 17"),
        format!("UPDATE {t} SET ratio32 = ratio32 + 1 WHERE id = 18"),
        format!("UPDATE {t} SET note = NULL WHERE id = 20"),
        drop_key,
    ];
    sql.push(format!("INSERT INTO {t} (id, {COLUMNS}) SELECT id, {COLUMNS} FROM {t} WHERE id = 30"));
    sql
}

async fn finds_every_corruption(mut db: Db, p: TestProject, side: &str) {
    let (ran, m) = corrupted(&mut db, &p, side, corruptions).await;
    assert_eq!(ran.code, Some(1), "a failed reconciliation exits 1\n{}\n{}", ran.stdout, ran.stderr);
    assert_eq!(differences(&m), EXPECTED, "{m:#}");
    let d = &m["differences"];
    assert_eq!(
        (d["missing"].as_u64(), d["extra"].as_u64(), d["changed"].as_u64(), d["duplicate_keys"].as_u64()),
        (Some(1), Some(1), Some(10), Some(1))
    );
    assert_eq!(check_status(&m, "row count"), "\"fail\"");
    assert_eq!(check_status(&m, "profile"), "\"fail\"");
    assert_eq!(check_status(&m, "checksum"), "\"fail\"");
    assert!(
        ran.stderr.contains("missing in target: id=5") || ran.stdout.contains("missing in target: id=5"),
        "{}",
        ran.stderr
    );
    db.drop_schema().await;
}

#[tokio::test]
async fn postgres_pushed_down_reconcile_finds_every_corruption() {
    let Some(db) = Db::pg("recon").await else { return };
    let p = accounts(&db);
    finds_every_corruption(db, p, "pushed").await;
}

#[tokio::test]
async fn postgres_pulled_reconcile_finds_every_corruption() {
    let Some(db) = Db::pg("reconpull").await else { return };
    let p = accounts(&db);
    finds_every_corruption(db, p, "pulled").await;
}

#[tokio::test]
async fn mysql_pushed_down_reconcile_finds_every_corruption() {
    let Some(db) = Db::mysql("recon").await else { return };
    let p = accounts(&db);
    finds_every_corruption(db, p, "pushed").await;
}

#[tokio::test]
async fn mysql_pulled_reconcile_finds_every_corruption() {
    let Some(db) = Db::mysql("reconpull").await else { return };
    let p = accounts(&db);
    finds_every_corruption(db, p, "pulled").await;
}

#[tokio::test]
async fn sqlite_reconcile_finds_every_corruption() {
    let p = accounts(&Db::Lite { path: Default::default() });
    let db = Db::sqlite(&p);
    finds_every_corruption(db, p, "auto").await;
}

async fn every_type_family_reconciles(mut db: Db, side: &str) {
    let p = project_for(&db, Some("types"), "");
    ok(&p.run(["run"]));
    let ran = p.run(["reconcile", "--side", side]);
    ok(&ran);
    let r = report(&p);
    let m = model(&r, "all_types");
    assert_eq!(m["status"], "pass", "{m:#}");
    assert_eq!(m["differences"]["segments_differing"], 0, "{m:#}");
    if side != "auto" {
        assert!(m["target_side"].as_str().unwrap_or("").starts_with(side), "{m:#}");
    }
    db.drop_schema().await;
}

#[tokio::test]
async fn postgres_pushed_down_untouched_load_of_every_type_family_reconciles() {
    let Some(db) = Db::pg("recontypes").await else { return };
    every_type_family_reconciles(db, "pushed").await;
}

#[tokio::test]
async fn postgres_pulled_untouched_load_of_every_type_family_reconciles() {
    let Some(db) = Db::pg("recontypespull").await else { return };
    every_type_family_reconciles(db, "pulled").await;
}

#[tokio::test]
async fn mysql_pushed_down_untouched_load_of_every_type_family_reconciles() {
    let Some(db) = Db::mysql("recontypes").await else { return };
    every_type_family_reconciles(db, "pushed").await;
}

#[tokio::test]
async fn mysql_pulled_untouched_load_of_every_type_family_reconciles() {
    let Some(db) = Db::mysql("recontypespull").await else { return };
    every_type_family_reconciles(db, "pulled").await;
}

#[tokio::test]
async fn sqlite_untouched_load_of_every_type_family_reconciles() {
    let p = project_for(&Db::Lite { path: Default::default() }, Some("types"), "");
    ok(&p.run(["run"]));
    ok(&p.run(["reconcile"]));
    assert_eq!(model(&report(&p), "all_types")["status"], "pass");
}

/// A decimal column narrowed to one decimal place: exactly the rows whose
/// second decimal was not zero change; widened, nothing does.
async fn decimal_scale(mut db: Db) {
    let p = accounts(&db);
    ok(&p.run(["run"]));
    let alter = |p: u8, s: u8| match &db {
        Db::Pg { .. } => format!("ALTER TABLE \"{}\".accounts ALTER COLUMN amount TYPE numeric({p}, {s})", db.schema()),
        _ => format!("ALTER TABLE `{}`.accounts MODIFY amount DECIMAL({p}, {s})", db.schema()),
    };
    let (narrow, widen) = (alter(12, 1), alter(14, 4));
    db.execute(&widen).await;
    ok(&p.run(["reconcile"]));
    db.execute(&narrow).await;
    let ran = p.run(["reconcile"]);
    assert_eq!(ran.code, Some(1));
    let r = report(&p);
    let m = model(&r, "accounts");
    // value * 1.25 has a non-zero second decimal for odd values: 500 rows.
    assert_eq!(m["differences"]["changed"], 500, "{m:#}");
    let lines = differences(m);
    assert!(lines.iter().all(|l| l.contains(" amount: ")), "{lines:?}");
    assert!(lines.contains(&"changed id=1 amount: \"1.25\" -> \"1.3\"".to_owned()), "{lines:?}");
    db.drop_schema().await;
}

#[tokio::test]
async fn postgres_reconcile_sees_a_decimal_scale_change() {
    let Some(db) = Db::pg("reconscale").await else { return };
    decimal_scale(db).await;
}

#[tokio::test]
async fn mysql_reconcile_sees_a_decimal_scale_change() {
    let Some(db) = Db::mysql("reconscale").await else { return };
    decimal_scale(db).await;
}

/// 25,000 rows with a composite text key: four segments, and a change
/// fetches only the segments it falls in.
const REGIONS: &str =
    "{{ config(materialized='table', unique_key=['region', 'code'], reconcile={'max_mismatch_rows': 1}) }}
select
  case value % 3 when 0 then 'north' when 1 then 'South' else 'éast' end as region,
  'C-' || cast(value as varchar) as code,
  cast(value as double) * 0.1 as score
from generate_series(1, 25000)
";

#[tokio::test]
async fn postgres_composite_text_keys_and_the_mismatch_allowance() {
    let Some(mut db) = Db::pg("reconkeys").await else { return };
    let p = project_for(&db, None, "").model("regions.sql", REGIONS);
    ok(&p.run(["run"]));
    ok(&p.run(["reconcile"]));
    let t = format!("\"{}\".regions", db.schema());
    // One changed row is within `max_mismatch_rows: 1`.
    db.execute(&format!("UPDATE {t} SET score = score + 1 WHERE region = 'South' AND code = 'C-7'")).await;
    let ran = p.run(["reconcile"]);
    ok(&ran);
    let r = report(&p);
    let m = model(&r, "regions");
    // `auto` says which side it chose, and by what estimate.
    let side = m["target_side"].as_str().unwrap_or("");
    assert_eq!(side, "pushed down (hashed by the server; estimated under 0.1s either way)");
    assert_eq!(m["differences"]["segments"], 4, "{m:#}");
    assert_eq!(m["differences"]["segments_differing"], 1, "{m:#}");
    assert_eq!(
        differences(m),
        ["changed code=C-7,region=South score: \"0.7000000000000001\" -> \"1.7000000000000002\""]
    );
    // A second one is not.
    db.execute(&format!("DELETE FROM {t} WHERE region = 'éast' AND code = 'C-8'")).await;
    let ran = p.run(["reconcile"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    let r = report(&p);
    let lines = differences(model(&r, "regions"));
    assert_eq!(lines[1], "missing code=C-8,region=éast", "{lines:?}");
    db.drop_schema().await;
}

#[test]
fn build_ends_by_reconciling_what_it_loaded() {
    let p = accounts(&Db::Lite { path: Default::default() });
    ok(&p.run(["build"]));
    let results = p.run_results();
    let node = crate::common::node_result(&results, "model.shop.accounts").expect("accounts result");
    assert_eq!(node["reconcile"], "pass", "{node:#}");
    assert_eq!(model(&report(&p), "accounts")["status"], "pass");
}

#[tokio::test]
async fn a_missing_target_table_is_an_error_naming_it() {
    let p = accounts(&Db::Lite { path: Default::default() });
    ok(&p.run(["run"]));
    let mut db = Db::sqlite(&p);
    db.execute("DROP TABLE accounts").await;
    let ran = p.run(["reconcile"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("error[F0701]: accounts: reconciling `main.accounts` failed"), "{}", ran.stderr);
    assert!(ran.stderr.contains("no such table: accounts"), "{}", ran.stderr);
    assert_eq!(model(&report(&p), "accounts")["status"], "error");
}

/// ferry's reproduction of `hashtextextended` agrees with the server's for
/// every length around the 12-byte blocks, multibyte text and seeds.
#[tokio::test]
async fn postgres_row_hash_is_the_servers_hashtextextended() {
    let Some(Db::Pg { client, .. }) = Db::pg("hash").await else { return };
    let mut texts: Vec<String> = (0..40).map(|n| "x7é|~".chars().cycle().take(n).collect()).collect();
    texts.push("12:name 1000|0|2023-11-14 22:13:20.000000|~".into());
    for text in &texts {
        for seed in [0i64, 1, -1, 0x5eed_0000_0001] {
            let row = client.query_one("SELECT hashtextextended($1::text COLLATE \"C\", $2)", &[text, &seed]).await;
            let server: i64 = row.expect("hashtextextended").get(0);
            let ours = ferry::backend::postgres::hash::hash_bytes_extended(text.as_bytes(), seed as u64);
            assert_eq!(ours as i64, server, "{text:?} seed {seed}");
        }
    }
}

/// 30 accounts in three regions, for profiles grouped by region.
const BY_REGION: &str =
    "{{ config(materialized='table', unique_key='id', reconcile={'profile': {'segment_by': 'region', 'aggregates': ['nulls', 'sum']}}) }}
select
  value as id,
  case value % 3 when 0 then 'north' when 1 then 'South' else 'éast' end as region,
  cast(value * 1.25 as decimal(12, 2)) as amount
from generate_series(1, 30)
";

/// The profile mismatches of a report, as `measure: stage -> target`.
fn profile_mismatches(m: &Json) -> Vec<String> {
    let profile = check(m, "profile").expect("profile check");
    let v = |x: &Json| x.as_str().unwrap_or("NULL").to_owned();
    profile["mismatches"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| format!("{}: {} -> {}", x["measure"].as_str().unwrap_or(""), v(&x["stage"]), v(&x["target"])))
        .collect()
}

async fn grouped_profile(mut db: Db, side: &str) {
    let p = project_for(&db, None, "").model("by_region.sql", BY_REGION);
    ok(&p.run(["run"]));
    ok(&p.run(["reconcile", "--side", side]));
    let m = model(&report(&p), "by_region").clone();
    assert_eq!(profile_mismatches(&m), Vec::<String>::new());
    assert!(check_detail(&m, "profile").contains("18 measures agree"), "{m:#}");
    let t = match db {
        Db::Pg { .. } => format!("\"{}\".by_region", db.schema()),
        _ => format!("`{}`.by_region", db.schema()),
    };
    // One amount moved within South; one row moved from `north` to
    // `North`, which no collation may fold back into `north`.
    db.execute(&format!("UPDATE {t} SET amount = amount + 1 WHERE id = 4")).await;
    db.execute(&format!("UPDATE {t} SET region = 'North' WHERE id = 3")).await;
    let ran = p.run(["reconcile", "--side", side]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    let m = model(&report(&p), "by_region").clone();
    assert_eq!(
        profile_mismatches(&m),
        [
            "region=North: rows: NULL -> 1",
            "region=North: nulls(id): NULL -> 0",
            "region=North: sum(id): NULL -> 3",
            "region=North: nulls(region): NULL -> 0",
            "region=North: nulls(amount): NULL -> 0",
            "region=North: sum(amount): NULL -> 3.75",
            "region=South: sum(amount): 181.25 -> 182.25",
            "region=north: rows: 10 -> 9",
            "region=north: sum(id): 165 -> 162",
            "region=north: sum(amount): 206.25 -> 202.5",
        ]
    );
    assert!(ran.stderr.contains("region=South: sum(amount): stage 181.25, target 182.25"), "{}", ran.stderr);
    db.drop_schema().await;
}

fn check_detail(m: &Json, name: &str) -> String {
    check(m, name).and_then(|c| c["detail"].as_str()).unwrap_or_default().to_owned()
}

#[tokio::test]
async fn postgres_pushed_down_profile_grouped_by_a_segment_column() {
    let Some(db) = Db::pg("recongroup").await else { return };
    grouped_profile(db, "pushed").await;
}

#[tokio::test]
async fn postgres_pulled_profile_grouped_by_a_segment_column() {
    let Some(db) = Db::pg("recongrouppull").await else { return };
    grouped_profile(db, "pulled").await;
}

#[tokio::test]
async fn mysql_profile_grouped_by_a_segment_column() {
    let Some(db) = Db::mysql("recongroup").await else { return };
    grouped_profile(db, "pushed").await;
}

#[test]
fn a_profile_config_naming_an_unknown_column_or_aggregate_is_an_error() {
    let bad = BY_REGION.replace("'segment_by': 'region'", "'segment_by': 'regoin'");
    let p = accounts(&Db::Lite { path: Default::default() }).model("by_region.sql", &bad);
    ok(&p.run(["run"]));
    let ran = p.run(["reconcile", "-s", "by_region"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(
        ran.stderr.contains(
            "`reconcile.profile.segment_by` names `regoin`, which is not a staged column; did you mean `region`?"
        ),
        "{}",
        ran.stderr
    );
    let bad = BY_REGION.replace("'nulls', 'sum'", "'nulls', 'median'");
    let p = accounts(&Db::Lite { path: Default::default() }).model("by_region.sql", &bad);
    let ran = p.run(["reconcile", "-s", "by_region"]);
    assert!(ran.stderr.contains("unknown aggregate `median`"), "{}", ran.stderr);
}

/// A CSV source, and a copy of it in PostgreSQL made without ferry.
const CUSTOMERS_CSV: &str =
    "id,name,balance,joined\n1,Ann,10.5,2024-01-05\n2,Bob,0,2024-02-29\n3,Chloé,-2.25,2023-12-31\n4,Dan,7,2024-03-01\n";

#[tokio::test]
async fn postgres_reconcile_a_source_against_a_copy_made_by_another_tool() {
    let Some(mut db) = Db::pg("reconsrc").await else { return };
    let p = project_for(&db, None, "").file("data/customers.csv", CUSTOMERS_CSV).file(
        "models/sources.yml",
        "sources:\n  - name: crm\n    tables:\n      - name: customers\n        path: data/customers.csv\n",
    );
    let schema = db.schema().to_owned();
    db.execute(&format!(
        "CREATE SCHEMA \"{schema}\"; CREATE TABLE \"{schema}\".copy (id bigint PRIMARY KEY, name text, balance numeric(10, 2), joined date); \
         INSERT INTO \"{schema}\".copy VALUES (1, 'Ann', 10.50, '2024-01-05'), (2, 'Bob', 0, '2024-02-29'), \
         (3, 'Chloé', -2.25, '2023-12-31'), (4, 'Dan', 7, '2024-03-01')"
    ))
    .await;
    let args = ["reconcile", "--source", "crm.customers", "--target-table", "copy", "--key", "id"];
    let ran = p.run(args);
    ok(&ran);
    let m = model(&report(&p), "crm.customers").clone();
    assert_eq!(m["status"], "pass", "{m:#}");
    assert_eq!(m["staged_rows"], 4);
    // The copy loses a row, gains one and changes a name.
    db.execute(&format!(
        "DELETE FROM \"{schema}\".copy WHERE id = 2; INSERT INTO \"{schema}\".copy VALUES (9, 'Zed', 1, '2024-01-01'); \
         UPDATE \"{schema}\".copy SET name = 'Chloe' WHERE id = 3"
    ))
    .await;
    let ran = p.run(args);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    let m = model(&report(&p), "crm.customers").clone();
    assert_eq!(differences(&m), ["changed id=3 name: \"Chloé\" -> \"Chloe\"", "extra id=9", "missing id=2"]);
    // The source's temporary stage is gone.
    let tmp = p.path().join(".ferry/tmp");
    assert!(std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0) == 0, "{tmp} is not empty");
    // Naming mistakes are diagnostics.
    let ran = p.run(["reconcile", "--source", "crm.customer", "--target-table", "copy"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("`--source crm.customer` names no source of this project"), "{}", ran.stderr);
    assert!(ran.stderr.contains("did you mean `crm.customers`?"), "{}", ran.stderr);
    let ran = p.run(["reconcile", "--source", "crm.customers", "--target-table", "a.b.c"]);
    assert!(ran.stderr.contains("`--target-table a.b.c` must be `table` or `schema.table`"), "{}", ran.stderr);
    let ran = p.run(["reconcile", "--source", "crm.customers", "--target-table", "copy", "--key", "nope"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("`nope`"), "{}", ran.stderr);
    db.drop_schema().await;
}

/// An `upsert` load is reconciled over the rows whose keys it staged: the
/// table's other rows (earlier loads') are left out, and a touched row
/// changed afterwards is found.
async fn scoped_to_the_touched_keys(server: Option<Db>, side: &str) {
    let rows = r#"{"rows": "(1, 'a', 1.00), (2, 'b', 2.00), (3, 'c', 3.00)"}"#;
    let p = project_for(server.as_ref().unwrap_or(&Db::Lite { path: Default::default() }), None, "")
        .model("accounts.sql", MODES_MODEL);
    let mut db = server.unwrap_or_else(|| Db::sqlite(&p));
    ok(&p.run(["build", "--vars", rows]));
    let upsert = r#"{"mode": "upsert", "rows": "(2, 'B', 20.00), (5, 'e', 5.00)"}"#;
    ok(&p.run(["run", "--vars", upsert]));
    let ran = p.run(["reconcile", "--vars", upsert, "--side", side]);
    ok(&ran);
    let m = model(&report(&p), "accounts").clone();
    assert_eq!(m["status"], "pass", "{m:#}");
    assert_eq!(m["target_rows"], 2, "{m:#}");
    assert!(
        m["notes"][0].as_str().unwrap_or("").contains("compared the target's rows with the 2 staged keys only"),
        "{m:#}"
    );
    let t = match db {
        Db::Pg { .. } => format!("\"{}\".accounts", db.schema()),
        Db::My { .. } => format!("`{}`.accounts", db.schema()),
        Db::Lite { .. } => "accounts".to_owned(),
    };
    // A row of an earlier load changes: not this load's concern. A row
    // this load upserted changes: found.
    db.execute(&format!("UPDATE {t} SET name = 'x' WHERE id = 1")).await;
    ok(&p.run(["reconcile", "--vars", upsert, "--side", side]));
    db.execute(&format!("UPDATE {t} SET name = 'y' WHERE id = 5")).await;
    let ran = p.run(["reconcile", "--vars", upsert, "--side", side]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert_eq!(differences(model(&report(&p), "accounts")), ["changed id=5 name: \"e\" -> \"y\""]);
    // `append` without a key cannot be scoped: skipped, saying why.
    let path = p.path().join("models/accounts.sql");
    let keyless = std::fs::read_to_string(&path).expect("model").replace(", 'unique_key': ['id']", "");
    std::fs::write(&path, keyless).expect("write model");
    let append = r#"{"mode": "append", "rows": "(7, 'g', 7.00)"}"#;
    ok(&p.run(["run", "--vars", append]));
    ok(&p.run(["reconcile", "--vars", append]));
    let m = model(&report(&p), "accounts").clone();
    assert_eq!(m["status"], "skipped", "{m:#}");
    assert!(m["notes"][0].as_str().unwrap_or("").contains("without a `unique_key`"), "{m:#}");
    db.drop_schema().await;
}

#[tokio::test]
async fn postgres_pushed_down_upsert_is_reconciled_over_the_keys_it_touched() {
    let Some(db) = Db::pg("reconscope").await else { return };
    scoped_to_the_touched_keys(Some(db), "pushed").await;
}

#[tokio::test]
async fn postgres_pulled_upsert_is_reconciled_over_the_keys_it_touched() {
    let Some(db) = Db::pg("reconscopepull").await else { return };
    scoped_to_the_touched_keys(Some(db), "pulled").await;
}

#[tokio::test]
async fn mysql_upsert_is_reconciled_over_the_keys_it_touched() {
    let Some(db) = Db::mysql("reconscope").await else { return };
    scoped_to_the_touched_keys(Some(db), "pulled").await;
}

#[tokio::test]
async fn sqlite_upsert_is_reconciled_over_the_keys_it_touched() {
    scoped_to_the_touched_keys(None, "auto").await;
}

/// A database source (read through connectorx) against a copy of it in the
/// same server: every common column family, NULLs included, then one
/// changed cell.
#[tokio::test]
async fn postgres_reconcile_a_database_source_against_its_copy() {
    let Some(mut db) = Db::pg("recondbsrc").await else { return };
    crate::extract::seed(&mut db).await;
    let s = db.schema().to_owned();
    db.execute(&format!("CREATE TABLE \"{s}\".copy AS SELECT * FROM \"{s}\".src")).await;
    let p = project_for(&db, None, "").file(
        "models/sources.yml",
        &format!(
            "sources:\n  - name: db\n    tables:\n      - name: src\n        connection: t\n        table: {s}.src\n"
        ),
    );
    let args = ["reconcile", "--source", "db.src", "--target-table", "copy", "--key", "id"];
    ok(&p.run(args));
    assert_eq!(model(&report(&p), "db.src")["staged_rows"], 1000);
    db.execute(&format!("UPDATE \"{s}\".copy SET seen = seen + interval '1 second' WHERE id = 42")).await;
    let ran = p.run(args);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert_eq!(
        differences(model(&report(&p), "db.src")),
        ["changed id=42 seen: \"2020-01-03 15:00:00.000000\" -> \"2020-01-03 15:00:01.000000\""]
    );
    db.drop_schema().await;
}
