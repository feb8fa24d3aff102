//! `incremental_strategy: microbatch` over three runs of a changing export
//! on PostgreSQL, MariaDB and SQLite: a first run from `begin`, a backfill
//! of one day with `--event-time-start` / `--event-time-end`, and a run on
//! its default window (the day before today, and today). After each run the
//! table must hold exactly the expected rows (written independently, as an
//! export of their own loaded the same way), the stage the same, and the
//! run's batches must be recorded; a load the target refuses leaves table
//! and stage as the run before left them.

use crate::common::{TestProject, node_result};
use crate::load::{Db, ok, project_for};

const HEADER: &str = "id,region,amount,updated_at\n";

const SOURCES: &str = "version: 2
sources:
  - name: raw
    tables:
      - name: events
        path: data/events.csv
        columns: &cols
          - {name: id, data_type: bigint}
          - {name: region, data_type: varchar}
          - {name: amount, data_type: bigint}
          - {name: updated_at, data_type: timestamp}
      - name: expected
        path: data/expected.csv
        columns: *cols
";

const MODEL: &str = "{{ config(materialized='incremental', incremental_strategy='microbatch',
    event_time='updated_at', batch_size='day', begin='2024-01-01', lookback=1) }}
select id, region, amount, updated_at from {{ source('raw', 'events') }}
";

/// What the table must hold, loaded as the model is.
const EXPECTED: &str = "{{ config(materialized='table') }}
select id, region, amount, updated_at from {{ source('raw', 'expected') }}
";

/// Run 1: event 1 is before `begin`, event 5 has no time (quarantined).
const RUN1: &str = "1,north,10,2023-12-31 23:00:00\n\
                    2,south,20,2024-01-01 10:00:00\n\
                    3,north,30,2024-01-02 09:00:00\n\
                    7,west,70,2024-01-02 18:00:00\n\
                    4,east,40,2024-01-03 12:00:00\n\
                    5,west,50,\n";
const EXPECTED1: &str = "2,south,20,2024-01-01 10:00:00\n\
                         3,north,30,2024-01-02 09:00:00\n\
                         7,west,70,2024-01-02 18:00:00\n\
                         4,east,40,2024-01-03 12:00:00\n";

/// Run 2, a backfill of 2024-01-02: there event 3 changed, event 7 is
/// gone and event 6 is new; events 2 and 4 changed outside that day.
const RUN2: &str = "1,north,10,2023-12-31 23:00:00\n\
                    2,south,21,2024-01-01 10:00:00\n\
                    3,north,31,2024-01-02 09:00:00\n\
                    6,south,60,2024-01-02 15:00:00\n\
                    4,east,41,2024-01-03 12:00:00\n\
                    5,west,50,\n";
const EXPECTED2: &str = "2,south,20,2024-01-01 10:00:00\n\
                         3,north,31,2024-01-02 09:00:00\n\
                         6,south,60,2024-01-02 15:00:00\n\
                         4,east,40,2024-01-03 12:00:00\n";

fn write(p: &TestProject, file: &str, rows: &str) {
    fs_err::write(p.path().join("data").join(file), format!("{HEADER}{rows}")).expect("write an export");
}

/// The `incremental` record of `events_daily` in the last run's results.
fn record(p: &TestProject) -> serde_json::Value {
    let results = p.run_results();
    node_result(&results, "model.shop.events_daily").expect("events_daily ran")["incremental"].clone()
}

async fn assert_holds(db: &mut Db, p: &TestProject, run: &str) {
    assert_eq!(db.rows("events_daily").await, db.rows("daily_expected").await, "{run}: the table");
    let sql = "select id, amount, cast(updated_at as varchar) as at from {} order by id";
    let staged = p.query_stages(&["events_daily"], &sql.replace("{}", "events_daily")).await;
    let expected = p.query_stages(&["daily_expected"], &sql.replace("{}", "daily_expected")).await;
    assert_eq!(staged, expected, "{run}: the stage");
}

async fn three_runs(mut db: Db, p: TestProject, (refuse, allow): (&str, &str)) {
    let p = p
        .file("models/sources.yml", SOURCES)
        .file("models/events_daily.sql", MODEL)
        .file("models/daily_expected.sql", EXPECTED);
    fs_err::create_dir_all(p.path().join("data")).expect("data/");

    write(&p, "events.csv", RUN1);
    write(&p, "expected.csv", EXPECTED1);
    ok(&p.run(["build"]));
    let r = record(&p);
    assert_eq!((r["run"].as_str(), r["strategy"].as_str()), (Some("full"), Some("microbatch")), "{r}");
    assert_eq!(r["batches"]["start"], "2024-01-01 00:00:00", "a first run starts at `begin`: {r}");
    assert_eq!(r["batches"]["batch_size"], "day", "{r}");
    let results = p.run_results();
    let node = node_result(&results, "model.shop.events_daily").expect("events_daily ran");
    assert_eq!(node["ledger"]["quarantined"], 1, "the row without an event_time is quarantined: {node}");
    assert_holds(&mut db, &p, "run 1").await;

    write(&p, "events.csv", RUN2);
    write(&p, "expected.csv", EXPECTED2);
    let ran = p.run(["build", "--event-time-start", "2024-01-02", "--event-time-end", "2024-01-02 23:00"]);
    ok(&ran);
    let said = "the rows of `updated_at` from 2024-01-02 00:00:00 to 2024-01-03 00:00:00 deleted, then";
    assert!(ran.stderr.contains(said), "the load says what it replaced:\n{}", ran.stderr);
    let r = record(&p);
    assert_eq!(r["run"], "incremental", "{r}");
    assert_eq!(
        (r["batches"]["count"].as_u64(), r["batches"]["start"].as_str(), r["batches"]["end"].as_str()),
        (Some(1), Some("2024-01-02 00:00:00"), Some("2024-01-03 00:00:00")),
        "{r}"
    );
    assert_eq!(r["rows"], 2, "the backfilled day's rows: {r}");
    assert_holds(&mut db, &p, "run 2, a backfill").await;
    // The history: the day's two rows deleted, its two rows inserted.
    let history = p.run(["history", "--model", "events_daily", "--last", "1", "--format", "json"]);
    ok(&history);
    let last: serde_json::Value = serde_json::from_str(history.stdout.lines().next().unwrap_or("{}")).expect("json");
    assert_eq!((last["inserted"].as_u64(), last["deleted"].as_u64()), (Some(2), Some(2)), "{last}");

    // Run 3 on the default window: yesterday and today. An event of today
    // is new; the 2024 changes are outside the window and stay as they were.
    let today = chrono::Utc::now().date_naive();
    let now_row = format!("8,east,80,{today} 00:30:00\n");
    write(&p, "events.csv", &format!("{RUN2}{now_row}"));
    write(&p, "expected.csv", &format!("{EXPECTED2}{now_row}"));
    // A backfill of 2024-01-02 whose new row the target refuses: the
    // day's rows, deleted in the same transaction, are back, and the stage
    // is as it was.
    let (table, stage) = (db.rows("events_daily").await, p.read(".ferry/stage/events_daily/_ferry_stage.json"));
    write(&p, "events.csv", &format!("{RUN2}9,north,90,2024-01-02 20:00:00\n"));
    db.execute(refuse).await;
    let ran = p.run(["build", "--event-time-start", "2024-01-02", "--event-time-end", "2024-01-03"]);
    assert_eq!(ran.code, Some(1), "the refused load fails the run:\n{}", ran.stderr);
    assert_eq!(db.rows("events_daily").await, table, "the table is as run 2 left it");
    assert_eq!(p.read(".ferry/stage/events_daily/_ferry_stage.json"), stage, "the stage is as run 2 left it");
    db.execute(allow).await;
    write(&p, "events.csv", &format!("{RUN2}{now_row}"));
    ok(&p.run(["build"]));
    let r = record(&p);
    assert_eq!((r["run"].as_str(), r["rows"].as_u64()), (Some("incremental"), Some(1)), "{r}");
    assert_eq!(r["batches"]["count"], 2, "the lookback batch and today's: {r}");
    assert_holds(&mut db, &p, "run 3").await;
    let results = p.run_results();
    let node = node_result(&results, "model.shop.events_daily").expect("events_daily ran");
    assert_eq!(node["reconcile"], "pass", "the table is the stage: {node}");
    db.drop_schema().await;
}

/// On a server: a CHECK constraint (quoted with `q`) refuses run 3's row.
async fn on_server(db: Db, p: TestProject, q: char) {
    let t = format!("{q}{}{q}.{q}events_daily{q}", db.schema());
    let refuse = format!("ALTER TABLE {t} ADD CONSTRAINT small CHECK (amount < 75)");
    let allow = format!("ALTER TABLE {t} DROP CONSTRAINT small");
    three_runs(db, p, (&refuse, &allow)).await;
}

#[tokio::test]
async fn postgres_microbatch_replaces_its_window() {
    let Some(db) = Db::pg("mbatch").await else { return };
    let p = project_for(&db, None, "");
    on_server(db, p, '"').await;
}

#[tokio::test]
async fn mysql_microbatch_replaces_its_window() {
    let Some(db) = Db::mysql("mbatch").await else { return };
    let p = project_for(&db, None, "");
    on_server(db, p, '`').await;
}

#[tokio::test]
async fn sqlite_microbatch_replaces_its_window() {
    let p = TestProject::new().file("ferry.yml", "name: shop\nprofile: shop\n");
    let db = Db::sqlite(&p);
    let p = p.file("profiles.yml", &db.profiles("").replace("PROFILE", "shop"));
    let refuse = "CREATE TRIGGER small BEFORE INSERT ON events_daily WHEN NEW.amount >= 75 \
                  BEGIN SELECT RAISE(ABORT, 'amount too large'); END;";
    three_runs(db, p, (refuse, "DROP TRIGGER small;")).await;
}

#[test]
fn a_microbatch_model_needs_its_settings_and_insert_overwrite_is_refused() {
    let p = TestProject::new()
        .model("mb.sql", "{{ config(materialized='incremental', incremental_strategy='microbatch', batch_size='day') }}\nselect 1 as id")
        .model("io.sql", "{{ config(materialized='incremental', incremental_strategy='insert_overwrite') }}\nselect 1 as id");
    let ran = p.run(["run"]);
    assert_eq!(ran.code, Some(1));
    assert!(ran.stderr.contains("a `microbatch` model needs `event_time`"), "{}", ran.stderr);
    assert!(ran.stderr.contains("models/mb.sql"), "{}", ran.stderr);
    assert!(ran.stderr.contains("`insert_overwrite` replaces partitions"), "{}", ran.stderr);
    assert!(ran.stderr.contains("models/io.sql"), "{}", ran.stderr);
}
