//! Incremental models kept in step with a target over several runs of a
//! changing export (`tests/fixtures/projects/incremental`), on PostgreSQL,
//! MariaDB and SQLite: after every run each incremental model's table must
//! equal the full rebuild (`events_full`) read back the same way, a load
//! that fails leaves stage and table as the previous run left them, and
//! the next run converges.

use crate::common::{TestProject, node_result};
use crate::load::{Db, ok, project_for, until_a_load_waits};

const HEADER: &str = "id,region,amount,updated_at\n";

/// Run 1: three events and one without a key.
const RUN1: &str = "1,north,10,2024-01-01 10:00:00\n\
                    2,south,20,2024-01-01 11:00:00\n\
                    3,north,30,2024-01-02 09:00:00\n\
                    ,east,5,2024-01-02 10:00:00\n";
/// Run 2: event 2 changed, events 4 and 5 new, another row without a key.
const RUN2: &str = "1,north,10,2024-01-01 10:00:00\n\
                    2,south,25,2024-01-03 08:00:00\n\
                    3,north,30,2024-01-02 09:00:00\n\
                    ,east,5,2024-01-02 10:00:00\n\
                    4,east,40,2024-01-03 09:00:00\n\
                    5,south,50,2024-01-03 10:00:00\n\
                    ,west,7,2024-01-03 11:00:00\n";
/// Run 3: events 1 and 4 changed, event 6 new.
const RUN3: &str = "1,north,15,2024-01-04 08:00:00\n\
                    2,south,25,2024-01-03 08:00:00\n\
                    3,north,30,2024-01-02 09:00:00\n\
                    ,east,5,2024-01-02 10:00:00\n\
                    4,east,45,2024-01-04 09:00:00\n\
                    5,south,50,2024-01-03 10:00:00\n\
                    ,west,7,2024-01-03 11:00:00\n\
                    6,north,60,2024-01-04 10:00:00\n";
/// Run 4: event 5 changed to an amount the target refuses (see `refuse`).
const RUN4: &str = "1,north,15,2024-01-04 08:00:00\n\
                    2,south,25,2024-01-03 08:00:00\n\
                    3,north,30,2024-01-02 09:00:00\n\
                    4,east,45,2024-01-04 09:00:00\n\
                    5,south,5000,2024-01-05 10:00:00\n\
                    6,north,60,2024-01-04 10:00:00\n";

/// The fixture's incremental models.
const INCREMENTAL: &[&str] = &["events_merge", "events_by_key", "events_log"];

fn export(p: &TestProject, rows: &str) {
    fs_err::write(p.path().join("data/events.csv"), format!("{HEADER}{rows}")).expect("write the export");
}

/// The `incremental` record of `model` in the last run's results.
fn record(p: &TestProject, model: &str) -> serde_json::Value {
    let results = p.run_results();
    let node = node_result(&results, &format!("model.shop.{model}")).unwrap_or_else(|| panic!("{model} ran"));
    node["incremental"].clone()
}

/// Each incremental model's table against the full rebuild.
async fn assert_in_step(db: &mut Db, run: &str) {
    let full = db.rows("events_full").await;
    assert_eq!(db.rows("events_merge").await, full, "{run}: events_merge differs from a full rebuild");
    assert_eq!(db.rows("events_by_key").await, full, "{run}: events_by_key differs from a full rebuild");
}

/// `build` three times over a changing export, then a load the target
/// refuses, then the run after it.
async fn runs_in_step(mut db: Db, p: TestProject, (refuse, allow): (&str, &str)) {
    export(&p, RUN1);
    ok(&p.run(["build"]));
    for model in ["events_merge", "events_by_key", "events_log"] {
        let r = record(&p, model);
        assert_eq!(r["run"], "full", "{model}: {r}");
        assert_eq!(r["reason"], "it has no stage yet", "{model}: {r}");
        assert_eq!(r["committed"], true, "{model}: {r}");
    }
    assert_in_step(&mut db, "run 1").await;
    p.assert_stored_stages_whole(INCREMENTAL).await;
    assert_eq!(db.rows("events_full").await.len(), 3);
    let results = p.run_results();
    let merge = node_result(&results, "model.shop.events_merge").expect("events_merge ran");
    assert_eq!(merge["ledger"]["quarantined"], 1, "the row without a key is quarantined: {merge}");

    export(&p, RUN2);
    ok(&p.run(["build"]));
    for (model, strategy) in [("events_merge", "merge"), ("events_by_key", "delete+insert"), ("events_log", "append")] {
        let r = record(&p, model);
        assert_eq!(r["run"], "incremental", "{model}: {r}");
        assert_eq!(r["strategy"], strategy, "{model}: {r}");
        assert_eq!(r["committed"], true, "{model}: {r}");
    }
    // Events 2, 4 and 5 are newer than the current data; the keyless row
    // of 11:00 is too, and is quarantined again.
    assert_eq!(record(&p, "events_merge")["rows"], 3);
    assert_eq!(record(&p, "events_merge")["total_rows"], 5);
    assert_eq!(record(&p, "events_log")["rows"], 4);
    assert_in_step(&mut db, "run 2").await;
    p.assert_stored_stages_whole(INCREMENTAL).await;
    // The history tells the merged keys from the new ones.
    let history = p.run(["history", "--model", "events_merge", "--last", "1", "--format", "json"]);
    ok(&history);
    let last: serde_json::Value = serde_json::from_str(history.stdout.lines().next().unwrap_or("{}")).expect("json");
    assert_eq!((last["inserted"].as_u64(), last["updated"].as_u64()), (Some(2), Some(1)), "{last}");
    // 4 rows from run 1 (no key, so the keyless one too), 4 newer ones now.
    assert_eq!(db.rows("events_log").await.len(), 8, "the log keeps every version");

    if !p.stages_stored() {
        // Event 2's new version was layered on the stage, not merged into
        // a rewrite of it: its old version is a deleted row of the files,
        // which a reload and a reconciliation from the stage skip as the
        // models did. (Run 3 replaces past a fifth of the rows, so its
        // next version is rewritten compact.)
        let stage = p.stage_manifest("events_merge").await.expect("a stage");
        let files = stage["files"].as_array().expect("files");
        assert!(files.iter().any(|f| f["deleted"]["rows"].as_u64() > Some(0)), "{stage}");
        let rows: u64 = files.iter().map(|f| f["rows"].as_u64().unwrap()).sum();
        assert!(rows > stage["row_count"].as_u64().unwrap(), "{stage}");
        ok(&p.run(["load", "-s", "events_merge"]));
        assert_in_step(&mut db, "run 2, reloaded from its stage").await;
        ok(&p.run(["reconcile", "-s", "events_merge"]));
    }
    export(&p, RUN3);
    ok(&p.run(["build"]));
    assert_eq!(record(&p, "events_merge")["rows"], 3);
    assert_in_step(&mut db, "run 3").await;
    // The table model downstream read the merged data, not the increment.
    let totals = p.query_stages(&["region_totals"], "select region, amount, events from region_totals").await;
    let expected = p
        .query_stages(
            &["events_full"],
            "select region, sum(amount) as amount, count(*) as events from events_full group by region",
        )
        .await;
    assert_eq!(totals, expected);

    // Run 4's load is refused: stage and table stay as run 3 left them.
    let before_merge = db.rows("events_merge").await;
    let stage = p.stage_manifest("events_merge").await;
    db.execute(refuse).await;
    export(&p, RUN4);
    let ran = p.run(["build"]);
    assert_eq!(ran.code, Some(1), "the refused load fails the run:\n{}", ran.stderr);
    let r = record(&p, "events_merge");
    assert_eq!(r["committed"], false, "{r}");
    assert_eq!(db.rows("events_merge").await, before_merge, "the table is as run 3 left it");
    assert_eq!(p.stage_manifest("events_merge").await, stage, "the stage is as run 3 left it");
    p.assert_stored_stages_whole(INCREMENTAL).await;

    // Once the target takes it, the next run loads what run 4 could not.
    db.execute(allow).await;
    ok(&p.run(["build"]));
    let r = record(&p, "events_merge");
    assert_eq!(
        (r["run"].as_str(), r["rows"].as_u64(), r["committed"].as_bool()),
        (Some("incremental"), Some(1), Some(true)),
        "{r}"
    );
    assert_in_step(&mut db, "after the refused run").await;

    // --full-refresh rebuilds from scratch, to the same rows, compact.
    ok(&p.run(["build", "--full-refresh"]));
    assert_eq!(record(&p, "events_merge")["reason"], "--full-refresh");
    assert_in_step(&mut db, "full refresh").await;
    if let Some(stage) = p.stage_manifest("events_merge").await {
        let files = stage["files"].as_array().expect("files");
        assert!(files.iter().all(|f| f.get("deleted").is_none()), "{stage}");
    }
    p.assert_stored_stages_whole(INCREMENTAL).await;
    db.drop_schema().await;
}

/// On a server: a CHECK constraint on `events_merge` (quoted with `q`)
/// refuses run 4's row.
async fn on_server(db: Db, q: char) {
    let t = format!("{q}{}{q}.{q}events_merge{q}", db.schema());
    let refuse = format!("ALTER TABLE {t} ADD CONSTRAINT small CHECK (amount < 1000)");
    let allow = format!("ALTER TABLE {t} DROP CONSTRAINT small");
    let p = project_for(&db, Some("incremental"), "");
    runs_in_step(db, p, (&refuse, &allow)).await;
}

#[tokio::test]
async fn postgres_incremental_models_stay_in_step_over_runs() {
    let Some(db) = Db::pg("incr").await else { return };
    on_server(db, '"').await;
}

#[tokio::test]
async fn mysql_incremental_models_stay_in_step_over_runs() {
    let Some(db) = Db::mysql("incr").await else { return };
    on_server(db, '`').await;
}

/// On SQLite, which cannot add a CHECK to a table: a trigger refuses run
/// 4's row.
async fn on_sqlite(p: TestProject) {
    let db = Db::sqlite(&p);
    let p = p.file("profiles.yml", &db.profiles("").replace("PROFILE", "shop"));
    let refuse = "CREATE TRIGGER small BEFORE UPDATE ON events_merge WHEN NEW.amount >= 1000 \
                  BEGIN SELECT RAISE(ABORT, 'amount too large'); END; \
                  CREATE TRIGGER small_insert BEFORE INSERT ON events_merge WHEN NEW.amount >= 1000 \
                  BEGIN SELECT RAISE(ABORT, 'amount too large'); END;";
    let allow = "DROP TRIGGER small; DROP TRIGGER small_insert;";
    runs_in_step(db, p, (refuse, allow)).await;
}

#[tokio::test]
async fn sqlite_incremental_models_stay_in_step_over_runs() {
    on_sqlite(TestProject::fixture("incremental")).await;
}

/// The same runs with the stages in an S3 bucket (moto): each model's next
/// version is written there pending and becomes its stage once loaded; a
/// refused load leaves the stage as it was and no version behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_models_stay_in_step_with_their_stages_in_s3() {
    let Some((_server, port)) = crate::object_stores::stages_bucket() else { return };
    on_sqlite(TestProject::fixture("incremental").stages_in_moto(port, "stages", "shop")).await;
}

/// A `ref` that only the incremental branch calls is an error on the first
/// incremental run, with dbt's remedy; the full build before it runs.
#[test]
fn a_ref_only_inside_is_incremental_is_an_error() {
    let p = TestProject::new().model("a.sql", "{{ config(materialized='table', load=false) }}\nselect 1 as id").model(
        "inc.sql",
        "{{ config(materialized='incremental', load=false) }}\nselect 2 as id\n\
             {% if is_incremental() %}union all select id from {{ ref('a') }}{% endif %}",
    );
    ok(&p.run(["run"]));
    let ran = p.run(["run"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("`inc` calls `ref('a')` only inside `is_incremental()`"), "{}", ran.stderr);
    assert!(ran.stderr.contains("-- depends_on: {{ ref('a') }}"), "{}", ran.stderr);
}

/// `on_schema_change: fail` stops before anything is staged, naming each
/// difference; `ignore` keeps the current columns (a gone one is NULL).
#[tokio::test]
async fn on_schema_change_fail_stops_and_ignore_keeps_the_columns() {
    let p = TestProject::new().model(
        "inc.sql",
        "{{ config(materialized='incremental', unique_key='id', load=false, on_schema_change=var('osc', 'ignore')) }}\n\
         select {{ var('cols', '1 as id, 10 as a') }}",
    );
    ok(&p.run(["run"]));
    let changed = |osc: &str| p.run(["run", "--vars", &format!("{{osc: {osc}, cols: '2 as id, 20 as b'}}")]);
    let ran = changed("fail");
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("the columns of `inc` changed since its last run"), "{}", ran.stderr);
    assert!(ran.stderr.contains("`b` is new") && ran.stderr.contains("`a` is gone"), "{}", ran.stderr);
    assert_eq!(p.query_stages(&["inc"], "select id, a from inc").await.len(), 1, "nothing was staged");
    ok(&changed("ignore"));
    let rows = p.query_stages(&["inc"], "select id, a from inc").await;
    assert_eq!(rows, ["| 1  | 10 |", "| 2  |    |"]);
}

/// A declared cursor over a PostgreSQL source: the mark (less the lookback)
/// reaches the source's query; a late row inside the lookback is read, one
/// before it is not; a row whose cursor is NULL is quarantined; and the mark
/// advances only when the run's load succeeded.
#[tokio::test]
async fn postgres_cursor_mark_reaches_the_source_and_advances_after_the_load() {
    let Some(mut db) = Db::pg("cursor").await else { return };
    let s = db.schema().to_owned();
    db.execute(&format!(
        "CREATE SCHEMA \"{s}\"; CREATE TABLE \"{s}\".src (id bigint, amount bigint, updated_at timestamp);
         INSERT INTO \"{s}\".src VALUES (1, 10, '2024-01-01 10:00'), (2, 20, '2024-01-02 10:00');"
    ))
    .await;
    let p = project_for(&db, None, "")
        .file(
            "models/sources.yml",
            &format!("sources:\n  - name: db\n    tables:\n      - name: src\n        connection: t\n        table: {s}.src\n"),
        )
        .model(
            "events.sql",
            "{{ config(materialized='incremental', unique_key='id', incremental_strategy='merge', \
             cursor='updated_at', lookback='1 hour') }}\nselect id, amount, updated_at from {{ source('db', 'src') }}",
        );
    ok(&p.run(["build"]));
    let mark = || p.read(".ferry/state/watermarks/events.json");
    assert!(mark().contains("2024-01-02T10:00:00"), "{}", mark());

    db.execute(&format!(
        "INSERT INTO \"{s}\".src VALUES (3, 30, '2024-01-03 10:00'), (4, 40, '2024-01-02 09:30'), \
         (5, 50, '2024-01-02 08:00'), (6, 60, NULL); UPDATE \"{s}\".src SET amount = 21, updated_at = '2024-01-03 11:00' WHERE id = 2;"
    ))
    .await;
    let ran = p.run(["build", "-vv"]);
    ok(&ran);
    let query = ran.stderr.lines().find(|l| l.contains("database scan")).unwrap_or_default().to_owned();
    assert!(query.contains("2024-01-02 09:00:00"), "the mark less the lookback is pushed: {query}");
    let r = record(&p, "events");
    assert_eq!(r["cursor"]["from"], "2024-01-02T10:00:00", "{r}");
    assert_eq!(r["cursor"]["high"], "2024-01-03T11:00:00", "{r}");
    assert_eq!(r["cursor"]["advanced"], true, "{r}");
    let results = p.run_results();
    let node = node_result(&results, "model.shop.events").expect("events ran");
    assert_eq!(node["ledger"]["quarantined"], 1, "the row without a cursor: {node}");
    let ids: Vec<String> = db.rows("events").await.iter().map(|r| r[..r.find(',').unwrap_or(0)].to_owned()).collect();
    // 4 is inside the lookback; 5 is before it and is not read (a full refresh would).
    assert_eq!(ids, ["{\"id\":1", "{\"id\":2", "{\"id\":3", "{\"id\":4"]);

    // A load the target refuses leaves the mark where it was.
    let before = mark();
    db.execute(&format!("ALTER TABLE \"{s}\".events ADD CONSTRAINT small CHECK (amount < 1000)")).await;
    db.execute(&format!("INSERT INTO \"{s}\".src VALUES (7, 7000, '2024-01-04 10:00')")).await;
    assert_eq!(p.run(["build"]).code, Some(1));
    assert_eq!(record(&p, "events")["cursor"]["advanced"], false);
    assert_eq!(mark(), before);
    db.drop_schema().await;
}

/// The mark, the stages and the tables of the killed-run test.
async fn killed_state(p: &TestProject, db: &mut Db) -> (Vec<String>, Vec<String>, Vec<String>) {
    let files = [
        ".ferry/state/watermarks/events.json",
        ".ferry/stage/events/_ferry_stage.json",
        ".ferry/stage/events_history/_ferry_stage.json",
    ];
    let files: Vec<String> = files.iter().map(|f| p.read(f)).collect();
    (files, db.rows("events").await, db.rows("events_history").await)
}

/// A run killed (SIGKILL) while its loads wait on the target leaves the
/// target, the stages and the cursor's mark as the previous run left them,
/// for an incremental model and a snapshot alike; the next run converges.
#[tokio::test]
async fn postgres_a_run_killed_mid_load_leaves_the_previous_state() {
    let Some(mut db) = Db::pg("killed").await else { return };
    let s = db.schema().to_owned();
    db.execute(&format!(
        "CREATE SCHEMA \"{s}\"; CREATE TABLE \"{s}\".src (id bigint, amount bigint, updated_at timestamp);
         INSERT INTO \"{s}\".src VALUES (1, 10, '2024-01-01 10:00'), (2, 20, '2024-01-02 10:00');"
    ))
    .await;
    let p = project_for(&db, None, "")
        .file(
            "models/sources.yml",
            &format!("sources:\n  - name: db\n    tables:\n      - name: src\n        connection: t\n        table: {s}.src\n"),
        )
        .model(
            "events.sql",
            "{{ config(materialized='incremental', unique_key='id', incremental_strategy='merge', \
             cursor='updated_at') }}\nselect id, amount, updated_at from {{ source('db', 'src') }}",
        )
        .file(
            "snapshots/events_history.sql",
            "{% snapshot events_history %}\n{{ config(unique_key='id', strategy='timestamp', updated_at='updated_at') }}\n\
             select id, amount, updated_at from {{ source('db', 'src') }}\n{% endsnapshot %}\n",
        );
    ok(&p.run(["build"]));
    let before = killed_state(&p, &mut db).await;
    assert_eq!((before.1.len(), before.2.len()), (2, 2));

    db.execute(&format!(
        "INSERT INTO \"{s}\".src VALUES (3, 30, '2024-01-03 10:00'); \
         UPDATE \"{s}\".src SET amount = 21, updated_at = '2024-01-03 11:00' WHERE id = 2;"
    ))
    .await;
    // Another session holds both tables: the run's loads wait for it.
    let locker = db.pg_session().await;
    locker
        .batch_execute(&format!("BEGIN; LOCK TABLE \"{s}\".events, \"{s}\".events_history IN ACCESS EXCLUSIVE MODE"))
        .await
        .expect("lock the tables");
    let mut child = p
        .ferry(["build"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ferry starts");
    until_a_load_waits(&locker, &mut child).await;
    child.kill().expect("kill the run");
    child.wait().expect("the run is gone");
    locker.batch_execute("ROLLBACK").await.expect("release the tables");
    assert_eq!(killed_state(&p, &mut db).await, before, "a killed run changes nothing");

    // The next run does what the killed one did not.
    ok(&p.run(["build"]));
    let (files, events, history) = killed_state(&p, &mut db).await;
    assert!(files[0].contains("2024-01-03T11:00:00"), "the mark advanced: {}", files[0]);
    let ids: Vec<&str> = events.iter().map(|r| &r[..r.find(',').unwrap_or(0)]).collect();
    assert_eq!(ids, ["{\"id\":1", "{\"id\":2", "{\"id\":3"]);
    assert!(events[1].contains("\"amount\":21"), "{}", events[1]);
    assert_eq!(history.len(), 4, "2's two versions, 1 and 3: {history:?}");
    db.drop_schema().await;
}

/// `on_schema_change: append_new_columns`: a new column is added to the
/// stage and the table (NULL in earlier rows), a column the model stops
/// returning stays, NULL in new rows. `sync_all_columns`: a new column is
/// added, a column gone is dropped, and a changed type changes, in the
/// stage and the table. `build` reconciles each run.
async fn new_columns_are_added(mut db: Db, p: TestProject) {
    let p = p
        .model(
            "wide.sql",
            "{{ config(materialized='incremental', unique_key='id', incremental_strategy='merge', \
             on_schema_change='append_new_columns') }}\nselect {{ var('cols', \"1 as id, 'a' as name\") }}",
        )
        .model(
            "synced.sql",
            "{{ config(materialized='incremental', unique_key='id', incremental_strategy='merge', \
             on_schema_change='sync_all_columns') }}\nselect {{ var('sync', \"1 as id, 'a' as name, 10 as amount\") }}",
        );
    ok(&p.run(["build"]));
    let sync = "sync: \"2 as id, 20.5 as amount, 'x' as note\"";
    ok(&p.run(["build", "--vars", &format!("{{cols: \"2 as id, 'b' as name, 20 as extra\", {sync}}}")]));
    let r = record(&p, "synced");
    assert_eq!(
        r["schema_changes"],
        serde_json::json!(["`note` is new", "`name` is gone", "`amount` was Int64, now Float64"]),
        "{r}"
    );
    ok(&p.run(["build", "--vars", &format!("{{cols: '3 as id, 30 as extra', {sync}}}")]));
    let staged = p.query_stages(&["synced"], "select id, amount, note from synced").await;
    assert_eq!(staged, ["| 1  | 10.0   |      |", "| 2  | 20.5   | x    |"]);
    let stage: serde_json::Value =
        serde_json::from_str(&p.read(".ferry/stage/synced/_ferry_stage.json")).expect("JSON");
    let columns: Vec<&str> =
        stage["columns"].as_array().expect("columns").iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(columns, ["id", "amount", "note"]);
    let rows = db.rows("synced").await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r.contains("note") && !r.contains("name")), "the table's columns follow: {rows:?}");
    assert!(rows[1].contains("20.5"), "the column holds the new type: {rows:?}");
    let staged = p.query_stages(&["wide"], "select id, name, extra from wide").await;
    assert_eq!(staged, ["| 1  | a    |       |", "| 2  | b    | 20    |", "| 3  |      | 30    |"]);
    let rows = db.rows("wide").await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows.iter().all(|r| r.contains("extra")), "the table has the new column: {rows:?}");
    db.drop_schema().await;
}

#[tokio::test]
async fn postgres_append_new_columns_reaches_the_table() {
    let Some(db) = Db::pg("newcols").await else { return };
    let p = project_for(&db, None, "");
    new_columns_are_added(db, p).await;
}

#[tokio::test]
async fn mysql_append_new_columns_reaches_the_table() {
    let Some(db) = Db::mysql("newcols").await else { return };
    let p = project_for(&db, None, "");
    new_columns_are_added(db, p).await;
}

#[tokio::test]
async fn sqlite_append_new_columns_reaches_the_table() {
    let p = TestProject::new().file("ferry.yml", "name: shop\nprofile: shop\n");
    let db = Db::sqlite(&p);
    let p = p.file("profiles.yml", &db.profiles("").replace("PROFILE", "shop"));
    new_columns_are_added(db, p).await;
}

/// The seed of `tests/fixtures/projects/dbt_recurring` at each run: run 2
/// changes order 2 and adds 4, run 3 changes 1 and adds 5.
const ORDERS: [&str; 3] = [
    "1,ann,placed,10.50,2024-01-01 10:00:00\n\
     2,bob,placed,20.00,2024-01-01 11:00:00\n\
     3,cid,shipped,5.25,2024-01-01 12:00:00\n",
    "1,ann,placed,10.50,2024-01-01 10:00:00\n\
     2,bob,shipped,20.00,2024-01-02 09:00:00\n\
     3,cid,shipped,5.25,2024-01-01 12:00:00\n\
     4,dee,placed,7.00,2024-01-02 10:00:00\n",
    "1,ann,cancelled,10.50,2024-01-03 08:00:00\n\
     2,bob,shipped,20.00,2024-01-02 09:00:00\n\
     3,cid,shipped,5.25,2024-01-01 12:00:00\n\
     4,dee,placed,7.00,2024-01-02 10:00:00\n\
     5,eve,placed,3.00,2024-01-03 09:00:00\n",
];

/// A dbt project (`dbt_project.yml`, its own `profiles.yml`: the embedded
/// SQLite target) with incremental models written in the usual dbt pattern
/// and a snapshot, run unchanged three times over a changing seed: the
/// merged model equals the seed, the appended one holds each change once,
/// the snapshot a version per change, and the model over the snapshot
/// reads its current versions.
#[tokio::test]
async fn a_dbt_project_with_incremental_models_and_a_snapshot_runs_unchanged() {
    let p = TestProject::fixture("dbt_recurring");
    let mut db = Db::sqlite(&p);
    // Versions per run: every order once, and one more per change.
    let versions = [3, 5, 7];
    let open = [
        vec!["1 ann placed", "2 bob placed"],
        vec!["1 ann placed", "4 dee placed"],
        vec!["1 ann cancelled", "4 dee placed", "5 eve placed"],
    ];
    for (run, rows) in ORDERS.iter().enumerate() {
        fs_err::write(p.path().join("seeds/raw_orders.csv"), format!("id,customer,status,amount,updated_at\n{rows}"))
            .expect("write the seed");
        ok(&p.run(["build"]));
        let results = p.run_results();
        for node in ["model.recurring.orders", "model.recurring.order_status_log", "snapshot.recurring.orders_snapshot"]
        {
            let r = node_result(&results, node).unwrap_or_else(|| panic!("{node} ran"));
            let want = if run == 0 { "full" } else { "incremental" };
            assert_eq!(r["incremental"]["run"], want, "run {}: {node}: {r}", run + 1);
        }
        assert_eq!(db.rows("orders").await, db.rows("raw_orders").await, "run {}: orders is the seed", run + 1);
        assert_eq!(db.rows("order_status_log").await.len(), versions[run], "run {}: a row per change", run + 1);
        assert_eq!(db.rows("orders_snapshot").await.len(), versions[run], "run {}: a version per change", run + 1);
        let current = p
            .stage_values(
                "open_orders",
                "select concat_ws(' ', cast(id as varchar), customer, status) from open_orders",
            )
            .await;
        assert_eq!(current, open[run], "run {}: open orders from the snapshot's current versions", run + 1);
    }
    let closed = p
        .stage_values(
            "orders_snapshot",
            "select concat_ws(' ', cast(id as varchar), status, cast(dbt_valid_to as varchar)) from orders_snapshot \
             where dbt_valid_to is not null",
        )
        .await;
    assert_eq!(closed, ["1 placed 2024-01-03T08:00:00", "2 placed 2024-01-02T09:00:00"]);
}
