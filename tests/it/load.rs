//! Loading into real targets: PostgreSQL and MariaDB on this machine
//! (`FERRY_TEST_PG_URL`, `FERRY_TEST_MYSQL_URL`), SQLite in a temp dir.
//! Each test loads into a schema (database, for MySQL) of its own, so tests
//! run in parallel. Under CI (`CI=true`) an unreachable server fails the
//! test; elsewhere the test says it skipped.

use std::time::{Duration, Instant};

use crate::common::TestProject;

const PG_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/test";
const MYSQL_DEFAULT: &str = "mysql://root@127.0.0.1:3306/test";

fn url(var: &str, default: &str) -> url::Url {
    let text = std::env::var(var).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned());
    url::Url::parse(&text).unwrap_or_else(|e| panic!("{var} is not a URL: {e}"))
}

fn unreachable(what: &str, e: &dyn std::fmt::Display) -> Option<Db> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} is unreachable under CI: {e}");
    }
    eprintln!("skipped: {what} is unreachable: {e}");
    None
}

/// A schema of the test's own, and a way to read tables back.
pub(crate) enum Db {
    Pg { client: tokio_postgres::Client, url: url::Url, schema: String },
    My { conn: mysql_async::Conn, url: url::Url, schema: String },
    Lite { path: camino::Utf8PathBuf },
}

fn unique(test: &str) -> String {
    format!("ferry_{test}_{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

impl Db {
    pub(crate) async fn pg(test: &str) -> Option<Db> {
        let url = url("FERRY_TEST_PG_URL", PG_DEFAULT);
        let (client, conn) = match tokio_postgres::connect(url.as_str(), tokio_postgres::NoTls).await {
            Ok(c) => c,
            Err(e) => return unreachable("PostgreSQL", &e),
        };
        tokio::spawn(conn);
        Some(Db::Pg { client, url, schema: unique(test) })
    }

    pub(crate) async fn mysql(test: &str) -> Option<Db> {
        let url = url("FERRY_TEST_MYSQL_URL", MYSQL_DEFAULT);
        let conn = match mysql_async::Conn::from_url(url.as_str()).await {
            Ok(c) => c,
            Err(e) => return unreachable("MySQL/MariaDB", &e),
        };
        Some(Db::My { conn, url, schema: unique(test) })
    }

    pub(crate) fn sqlite(project: &TestProject) -> Db {
        Db::Lite { path: project.path().join(".ferry/ferry.db") }
    }

    /// `profiles.yml` for this target, with `extra` lines in the output.
    pub(crate) fn profiles(&self, extra: &str) -> String {
        let server = |kind: &str, url: &url::Url, schema: &str, dbname: Option<&str>| {
            let mut s = format!(
                "{}:\n  target: t\n  outputs:\n    t:\n      type: {kind}\n      host: {}\n      port: {}\n      user: {}\n      schema: {schema}\n",
                "PROFILE",
                url.host_str().unwrap_or("127.0.0.1"),
                url.port().unwrap_or(if kind == "postgres" { 5432 } else { 3306 }),
                url.username()
            );
            if let Some(p) = url.password() {
                s.push_str(&format!("      password: \"{p}\"\n"));
            }
            if let Some(d) = dbname {
                s.push_str(&format!("      dbname: {d}\n"));
            }
            s
        };
        let text = match self {
            Db::Pg { url, schema, .. } => server("postgres", url, schema, Some(url.path().trim_start_matches('/'))),
            Db::My { url, schema, .. } => server("mysql", url, schema, None),
            Db::Lite { .. } => {
                "PROFILE:\n  target: t\n  outputs:\n    t:\n      type: sqlite\n      path: .ferry/ferry.db\n"
                    .to_owned()
            }
        };
        format!("{text}{extra}")
    }

    /// Every row of `table`, ordered by its first column, one line each.
    pub(crate) async fn rows(&mut self, table: &str) -> Vec<String> {
        match self {
            Db::Pg { client, schema, .. } => client
                .query(&format!("SELECT row_to_json(t)::text FROM \"{schema}\".\"{table}\" t ORDER BY 1"), &[])
                .await
                .unwrap_or_else(|e| panic!("read {table}: {e}"))
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect(),
            Db::My { conn, schema, .. } => {
                use mysql_async::prelude::Queryable;
                let rows: Vec<mysql_async::Row> = conn
                    .query(format!("SELECT * FROM `{schema}`.`{table}` ORDER BY 1"))
                    .await
                    .unwrap_or_else(|e| panic!("read {table}: {e}"));
                rows.into_iter()
                    .map(|r| {
                        let names: Vec<String> = r.columns_ref().iter().map(|c| c.name_str().into_owned()).collect();
                        names
                            .iter()
                            .zip(r.unwrap())
                            .map(|(n, v)| format!("{n}={}", v.as_sql(false)))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .collect()
            }
            Db::Lite { path } => {
                let conn = rusqlite::Connection::open(path.as_std_path()).expect("open sqlite");
                let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\" ORDER BY 1")).expect("prepare");
                let names: Vec<String> = stmt.column_names().iter().map(|s| (*s).to_owned()).collect();
                stmt.query_map([], |r| {
                    Ok(names
                        .iter()
                        .enumerate()
                        .map(|(k, n)| format!("{n}={:?}", r.get_ref(k).map(rusqlite::types::Value::from)))
                        .collect::<Vec<_>>()
                        .join(" "))
                })
                .expect("query")
                .collect::<Result<Vec<_>, _>>()
                .expect("rows")
            }
        }
    }

    /// Whether `table` exists.
    async fn exists(&mut self, table: &str) -> bool {
        match self {
            Db::Pg { client, schema, .. } => client
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&format!("\"{schema}\".\"{table}\"")])
                .await
                .expect("to_regclass")
                .get(0),
            Db::My { conn, schema, .. } => {
                use mysql_async::prelude::Queryable;
                let n: Option<i64> = conn
                    .exec_first(
                        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                        (schema.as_str(), table),
                    )
                    .await
                    .expect("information_schema");
                n == Some(1)
            }
            Db::Lite { path } => {
                let conn = rusqlite::Connection::open(path.as_std_path()).expect("open sqlite");
                conn.query_row("SELECT count(*) FROM sqlite_master WHERE name = ?1", [table], |r| r.get::<_, i64>(0))
                    .expect("sqlite_master")
                    == 1
            }
        }
    }

    pub(crate) async fn execute(&mut self, sql: &str) {
        match self {
            Db::Pg { client, .. } => client.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}")),
            Db::My { conn, .. } => {
                use mysql_async::prelude::Queryable;
                conn.query_drop(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
            Db::Lite { path } => {
                rusqlite::Connection::open(path.as_std_path()).expect("open").execute_batch(sql).expect("sql");
            }
        }
    }

    /// Another session on the PostgreSQL server (to hold locks while
    /// ferry runs).
    pub(crate) async fn pg_session(&self) -> tokio_postgres::Client {
        let Db::Pg { url, .. } = self else { panic!("pg_session on a PostgreSQL Db only") };
        let (client, conn) =
            tokio_postgres::connect(url.as_str(), tokio_postgres::NoTls).await.expect("a second session");
        tokio::spawn(conn);
        client
    }

    pub(crate) fn schema(&self) -> &str {
        match self {
            Db::Pg { schema, .. } | Db::My { schema, .. } => schema,
            Db::Lite { .. } => "main",
        }
    }

    pub(crate) async fn drop_schema(&mut self) {
        let sql = match self {
            Db::Pg { schema, .. } => format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"),
            Db::My { schema, .. } => format!("DROP DATABASE IF EXISTS `{schema}`"),
            Db::Lite { .. } => return,
        };
        self.execute(&sql).await;
    }
}

pub(crate) fn project_for(db: &Db, fixture: Option<&str>, extra_profile: &str) -> TestProject {
    let p = match fixture {
        Some(f) => TestProject::fixture(f),
        None => TestProject::new().file("ferry.yml", "name: shop\nprofile: shop\n"),
    };
    let profile = if fixture == Some("types") { "types" } else { "shop" };
    p.file("profiles.yml", &db.profiles(extra_profile).replace("PROFILE", profile))
}

/// Snapshot settings: the per-test schema and generated names filtered out.
fn filters() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.add_filter(r"ferry_[a-z]+_[0-9a-f]{8}", "[SCHEMA]");
    s.add_filter(r"_pk_[0-9a-f]{8}", "_pk_[ID]");
    s
}

/// Waits until a session of the database waits on a lock (a run's load
/// that `locker` holds up), while `child` runs.
pub(crate) async fn until_a_load_waits(locker: &tokio_postgres::Client, child: &mut std::process::Child) {
    let waiting =
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()";
    let started = std::time::Instant::now();
    loop {
        locker.batch_execute("SELECT pg_stat_clear_snapshot()").await.expect("a fresh view");
        let n: i64 = locker.query_one(waiting, &[]).await.expect("pg_stat_activity").get(0);
        if n > 0 {
            return;
        }
        assert!(child.try_wait().expect("the run").is_none(), "the run ended before its load waited");
        assert!(started.elapsed() < std::time::Duration::from_secs(120), "the run never reached its load");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

pub(crate) fn ok(ran: &crate::common::Ran) {
    assert_eq!(ran.code, Some(0), "stdout:\n{}\nstderr:\n{}", ran.stdout, ran.stderr);
}

// ---------------------------------------------------------------- round trips

async fn round_trip(mut db: Db, p: &TestProject) -> Vec<String> {
    ok(&p.run(["run"]));
    let rows = db.rows("all_types").await;
    db.drop_schema().await;
    rows
}

#[tokio::test]
async fn postgres_round_trip_of_every_type_family() {
    let Some(db) = Db::pg("types").await else { return };
    let p = project_for(&db, Some("types"), "");
    let rows = round_trip(db, &p).await;
    insta::assert_snapshot!(rows.join("\n"));
}

#[tokio::test]
async fn postgres_column_types_follow_the_mapping() {
    let Some(mut db) = Db::pg("coltypes").await else { return };
    let p = project_for(&db, Some("types"), "");
    ok(&p.run(["run"]));
    let Db::Pg { client, schema, .. } = &db else { unreachable!() };
    let types: Vec<String> = client
        .query(
            "SELECT column_name || ' ' || format_type(a.atttypid, a.atttypmod) FROM information_schema.columns c \
             JOIN pg_attribute a ON a.attrelid = to_regclass(quote_ident(c.table_schema) || '.' || quote_ident(c.table_name)) AND a.attname = c.column_name \
             WHERE c.table_schema = $1 AND c.table_name = 'all_types' ORDER BY c.ordinal_position",
            &[schema],
        )
        .await
        .expect("columns")
        .iter()
        .map(|r| r.get(0))
        .collect();
    db.drop_schema().await;
    insta::assert_snapshot!(types.join("\n"));
}

#[tokio::test]
async fn mysql_round_trip_of_every_type_family() {
    let Some(db) = Db::mysql("types").await else { return };
    let p = project_for(&db, Some("types"), "");
    let rows = round_trip(db, &p).await;
    insta::assert_snapshot!(rows.join("\n"));
}

#[tokio::test]
async fn mysql_insert_fallback_loads_the_same_rows() {
    let Some(db) = Db::mysql("fallback").await else { return };
    let p = project_for(&db, Some("types"), "      local_infile: false\n");
    let ran = p.run(["run"]);
    ok(&ran);
    assert!(ran.stderr.contains("multi-row INSERT"), "{}", ran.stderr);
    let fallback = round_trip(db, &p).await;
    let Some(db) = Db::mysql("infile").await else { return };
    let p = project_for(&db, Some("types"), "");
    assert_eq!(fallback, round_trip(db, &p).await);
}

#[tokio::test]
async fn sqlite_round_trip_of_every_type_family() {
    let p = TestProject::fixture("types");
    let db = Db::sqlite(&p);
    let p = p.file("profiles.yml", &db.profiles("").replace("PROFILE", "types"));
    let rows = round_trip(db, &p).await;
    insta::assert_snapshot!(rows.join("\n"));
}

// ---------------------------------------------------------------- modes

pub(crate) const MODES_MODEL: &str = "{{ config(materialized='table', load={'mode': var('mode', 'replace'), 'unique_key': ['id']}) }}\n\
select cast(column1 as bigint) as id, column2 as name, cast(column3 as decimal(10, 2)) as balance\n\
from (values {{ var('rows', \"(1, 'a', 1.00), (2, 'b', 2.00)\") }})\n";

fn load_with(p: &TestProject, mode: &str, rows: &str) -> crate::common::Ran {
    p.run(["run", "--vars", &format!("{{\"mode\": \"{mode}\", \"rows\": \"{rows}\"}}")])
}

/// Replace, rollback (twice), append, a constraint violation, upsert (twice)
/// and delete+insert, reading the table back after each.
async fn every_mode(mut db: Db, p: &TestProject) -> Vec<String> {
    let mut log = Vec::new();
    let mut step = async |db: &mut Db, what: &str, ran: Option<crate::common::Ran>| {
        if let Some(ran) = ran {
            log.push(format!("## {what}: exit {:?}", ran.code));
            if ran.code != Some(0) {
                let first = ran.stderr.lines().find(|l| l.starts_with("error[")).unwrap_or("").to_owned();
                log.push(first);
            }
        } else {
            log.push(format!("## {what}"));
        }
        log.extend(db.rows("accounts").await);
    };
    ok(&load_with(p, "replace", "(1, 'a', 1.00), (2, 'b', 2.00)"));
    step(&mut db, "replace", None).await;
    ok(&load_with(p, "replace", "(1, 'a', 1.00), (2, 'b', 2.00), (3, 'c', 3.00)"));
    step(&mut db, "replace again, one more row", None).await;
    assert!(db.exists("accounts__ferry_prev").await);
    let r = p.run(["rollback", "-s", "accounts"]);
    step(&mut db, "rollback", Some(r)).await;
    let r = p.run(["rollback", "-s", "accounts"]);
    step(&mut db, "rollback again (undoes the rollback)", Some(r)).await;
    let r = load_with(p, "append", "(4, 'd', 4.00)");
    step(&mut db, "append", Some(r)).await;
    let r = load_with(p, "append", "(5, 'e', 5.00), (4, 'd', 4.00)");
    step(&mut db, "append a duplicate key (fails, table unchanged)", Some(r)).await;
    let r = load_with(p, "upsert", "(2, 'B', 20.00), (5, 'e', 5.00)");
    step(&mut db, "upsert", Some(r)).await;
    let r = load_with(p, "upsert", "(2, 'B', 20.00), (5, 'e', 5.00)");
    step(&mut db, "upsert again (idempotent)", Some(r)).await;
    let r = load_with(p, "delete+insert", "(3, 'C', 30.00)");
    step(&mut db, "delete+insert", Some(r)).await;
    db.drop_schema().await;
    log
}

fn modes_project(db: &Db, extra: &str) -> TestProject {
    project_for(db, None, extra).model("accounts.sql", MODES_MODEL)
}

#[tokio::test]
async fn postgres_every_mode_is_atomic_and_idempotent() {
    let Some(db) = Db::pg("modes").await else { return };
    let p = modes_project(&db, "");
    let log = every_mode(db, &p).await;
    filters().bind(|| insta::assert_snapshot!(log.join("\n")));
}

#[tokio::test]
async fn mysql_every_mode_is_atomic_and_idempotent() {
    let Some(db) = Db::mysql("modes").await else { return };
    let p = modes_project(&db, "");
    let log = every_mode(db, &p).await;
    filters().bind(|| insta::assert_snapshot!(log.join("\n")));
}

#[tokio::test]
async fn sqlite_every_mode_is_atomic_and_idempotent() {
    let p = TestProject::new().file("ferry.yml", "name: shop\n").model("accounts.sql", MODES_MODEL);
    let db = Db::sqlite(&p);
    let log = every_mode(db, &p).await;
    filters().bind(|| insta::assert_snapshot!(log.join("\n")));
}

// ---------------------------------------------------------------- preflight, dry run

#[tokio::test]
async fn postgres_preflight_names_the_column_that_does_not_fit() {
    let Some(mut db) = Db::pg("preflight").await else { return };
    let schema = db.schema().to_owned();
    db.execute(&format!(
        "CREATE SCHEMA \"{schema}\"; CREATE TABLE \"{schema}\".accounts (id bigint, name text, balance numeric(5,1) NOT NULL); \
         INSERT INTO \"{schema}\".accounts VALUES (9, 'z', 9.0)"
    ))
    .await;
    let p = modes_project(&db, "");
    let ran = load_with(&p, "append", "(1, 'a', 1.25), (2, 'b', NULL)");
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("column `balance`"), "{}", ran.stderr);
    assert!(ran.stderr.contains("keeps 1 decimal places, fewer than the stage's 2"), "{}", ran.stderr);
    assert!(ran.stderr.contains("NOT NULL"), "{}", ran.stderr);
    assert_eq!(db.rows("accounts").await, vec![r#"{"id":9,"name":"z","balance":9.0}"#]);
    db.drop_schema().await;
}

#[tokio::test]
async fn dry_run_prints_the_plan_and_changes_nothing() {
    let Some(mut db) = Db::pg("dryrun").await else { return };
    let p = modes_project(&db, "");
    ok(&p.run(["run", "--no-load"]));
    let ran = p.run(["load", "--dry-run"]);
    ok(&ran);
    assert!(ran.stdout.contains("COPY"), "{}", ran.stdout);
    assert!(ran.stdout.contains("FORMAT binary, FREEZE"), "{}", ran.stdout);
    assert!(ran.stdout.contains("__ferry_new"), "{}", ran.stdout);
    assert!(!db.exists("accounts").await);
    ok(&p.run(["load"]));
    assert_eq!(db.rows("accounts").await.len(), 2);
    db.drop_schema().await;
}

// ---------------------------------------------------------------- faults

const BIG_MODEL: &str = "{{ config(materialized='table', load={'unique_key': ['id']}) }}\n\
select value as id, concat('row ', cast(value as varchar)) as label from range(0, {{ var('n', 2) }})\n";

/// How a test stops a running load.
enum Stop<'a> {
    /// On the server: the SQL that ends the session with this id.
    Server(&'a dyn Fn(i64) -> String),
    /// Ctrl-C to the `ferry` process.
    CtrlC,
}

/// Starts `ferry load`, waits until `is_loading` (a query returning the
/// server's session id) sees the load running on the server, stops it, and
/// returns the finished command.
async fn stop_mid_load(p: &TestProject, db: &mut Db, is_loading: &str, stop: Stop<'_>) -> crate::common::Ran {
    stop_mid(p, &["load"], db, is_loading, stop).await
}

/// Starts `ferry <args>`, waits until `is_loading` sees its load running on
/// the server, stops it, and returns the finished command.
async fn stop_mid(p: &TestProject, args: &[&str], db: &mut Db, is_loading: &str, stop: Stop<'_>) -> crate::common::Ran {
    let child =
        p.ferry(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("spawn");
    let started = Instant::now();
    let id = loop {
        assert!(started.elapsed() < Duration::from_secs(60), "the load never showed up on the server");
        let found: Option<i64> = match db {
            Db::Pg { client, .. } => client
                .query_opt(is_loading, &[])
                .await
                .expect("pg_stat_activity")
                .map(|r| i64::from(r.get::<_, i32>(0))),
            Db::My { conn, .. } => {
                use mysql_async::prelude::Queryable;
                conn.query_first::<i64, _>(is_loading).await.expect("processlist")
            }
            Db::Lite { .. } => unreachable!(),
        };
        if let Some(id) = found {
            break id;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    match stop {
        Stop::Server(kill) => db.execute(&kill(id)).await,
        Stop::CtrlC => {
            let status = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status();
            assert!(status.expect("kill").success());
        }
    }
    let out = child.wait_with_output().expect("ferry finishes");
    crate::common::Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The server session of this test's COPY (other tests load in parallel).
fn pg_copying(db: &Db) -> String {
    format!(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'ferry' AND query LIKE 'COPY \"{}\".%' AND state = 'active' LIMIT 1",
        db.schema()
    )
}

/// The server session of this test's `LOAD DATA`.
fn mysql_loading(db: &Db) -> String {
    format!("SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'LOAD DATA%`{}`%'", db.schema())
}

#[tokio::test]
async fn postgres_backend_terminated_mid_copy_leaves_the_table_as_it_was() {
    let Some(mut db) = Db::pg("fault").await else { return };
    let p = project_for(&db, None, "").model("big.sql", BIG_MODEL);
    ok(&p.run(["run", "--vars", "{n: 2}"]));
    let before = db.rows("big").await;
    ok(&p.run(["run", "--no-load", "--vars", "{n: 3000000}"]));
    let copying = pg_copying(&db);
    let ran =
        stop_mid_load(&p, &mut db, &copying, Stop::Server(&|pid| format!("SELECT pg_terminate_backend({pid})"))).await;
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("big"), "{}", ran.stderr);
    assert!(ran.stderr.contains("rolled back"), "{}", ran.stderr);
    assert_eq!(db.rows("big").await, before);
    assert!(!db.exists("big__ferry_new").await);
    db.drop_schema().await;
}

#[tokio::test]
async fn mysql_connection_killed_mid_load_leaves_the_table_as_it_was() {
    let Some(mut db) = Db::mysql("fault").await else { return };
    let p = project_for(&db, None, "").model("big.sql", BIG_MODEL);
    ok(&p.run(["run", "--vars", "{n: 2}"]));
    let before = db.rows("big").await;
    ok(&p.run(["run", "--no-load", "--vars", "{n: 3000000}"]));
    let loading = mysql_loading(&db);
    let ran = stop_mid_load(&p, &mut db, &loading, Stop::Server(&|id| format!("KILL {id}"))).await;
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("big"), "{}", ran.stderr);
    assert_eq!(db.rows("big").await, before);
    db.drop_schema().await;
}

// ---------------------------------------------------------------- order

fn load_lines(ran: &crate::common::Ran) -> Vec<String> {
    ran.stderr
        .lines()
        .filter(|l| l.contains(" load "))
        .filter_map(|l| l.split_whitespace().nth(5).map(str::to_owned))
        .collect()
}

#[test]
fn parents_load_before_children_along_relationships_tests() {
    let project = |schema_yml: &str| {
        TestProject::new()
            .model("a_orders.sql", "{{ config(materialized='table') }}\nselect 1 as order_id, 7 as customer_id\n")
            .model("z_customers.sql", "{{ config(materialized='table') }}\nselect 7 as customer_id\n")
            .file("models/schema.yml", schema_yml)
    };
    let without = project("version: 2\n").run(["run"]);
    ok(&without);
    assert_eq!(load_lines(&without), ["a_orders", "z_customers"], "{}", without.stderr);
    let with = project(
        "version: 2\nmodels:\n  - name: a_orders\n    columns:\n      - name: customer_id\n        tests:\n          - relationships:\n              to: ref('z_customers')\n              field: customer_id\n",
    )
    .run(["run"]);
    ok(&with);
    assert_eq!(load_lines(&with), ["z_customers", "a_orders"], "{}", with.stderr);
}

#[tokio::test]
async fn postgres_ctrl_c_mid_copy_leaves_the_table_as_it_was() {
    let Some(mut db) = Db::pg("sigint").await else { return };
    let p = project_for(&db, None, "").model("big.sql", BIG_MODEL);
    ok(&p.run(["run", "--vars", "{n: 2}"]));
    let before = db.rows("big").await;
    ok(&p.run(["run", "--no-load", "--vars", "{n: 3000000}"]));
    let copying = pg_copying(&db);
    let ran = stop_mid_load(&p, &mut db, &copying, Stop::CtrlC).await;
    assert_eq!(ran.code, Some(130), "{}", ran.stderr);
    assert!(ran.stderr.contains("interrupted"), "{}", ran.stderr);
    // The server rolls the transaction back when the connection goes.
    let deadline = Instant::now();
    while db.exists("big__ferry_new").await {
        assert!(deadline.elapsed() < Duration::from_secs(30), "the shadow table outlived the connection");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(db.rows("big").await, before);
    db.drop_schema().await;
}

#[tokio::test]
async fn ctrl_c_in_the_load_phase_of_build_and_run_exits_130() {
    let Some(mut db) = Db::pg("sigint_build").await else { return };
    let p = project_for(&db, None, "").model("big.sql", BIG_MODEL);
    ok(&p.run(["run", "--vars", "{n: 2}"]));
    let before = db.rows("big").await;
    let copying = pg_copying(&db);
    for command in ["build", "run"] {
        let ran = stop_mid(&p, &[command, "--vars", "{n: 3000000}"], &mut db, &copying, Stop::CtrlC).await;
        assert_eq!(ran.code, Some(130), "ferry {command}: {}", ran.stderr);
        assert!(ran.stderr.contains("interrupted during the load"), "ferry {command}: {}", ran.stderr);
        let deadline = Instant::now();
        while db.exists("big__ferry_new").await {
            assert!(deadline.elapsed() < Duration::from_secs(30), "the shadow table outlived the connection");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(db.rows("big").await, before, "ferry {command}");
    }
    db.drop_schema().await;
}

#[tokio::test]
async fn alias_and_schema_in_a_models_sql_name_the_target_table_as_yaml_does() {
    let Some(mut db) = Db::pg("alias").await else { return };
    let custom = format!("{}_archive", db.schema());
    let p = project_for(&db, None, "")
        .model(
            "in_sql.sql",
            "{{ config(materialized='table', alias='accounts_v2', schema='archive') }}\nselect 1 as id\n",
        )
        .model("in_yaml.sql", "{{ config(materialized='table') }}\nselect 2 as id\n")
        .file(
            "models/schema.yml",
            "version: 2\nmodels:\n  - name: in_yaml\n    config:\n      alias: orders_v2\n      schema: archive\n",
        );
    let ran = p.run(["run"]);
    ok(&ran);
    let Db::Pg { client, .. } = &db else { unreachable!() };
    let tables: Vec<String> = client
        .query("SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1", &[&custom])
        .await
        .expect("tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tables, ["accounts_v2", "orders_v2"], "{}", ran.stderr);
    assert!(!db.exists("in_sql").await && !db.exists("accounts_v2").await);
    db.execute(&format!("DROP SCHEMA \"{custom}\" CASCADE")).await;
    db.drop_schema().await;
}

#[test]
fn load_config_names_the_table_or_keeps_a_model_in_the_stage() {
    let p = TestProject::new()
        .file("ferry.yml", "name: shop\nmodels:\n  shop:\n    +materialized: table\n    audit:\n      +load: false\n")
        .model("audit.sql", "select 1 as id\n")
        .model("renamed.sql", "{{ config(load={'table': 'customers_v2'}) }}\nselect 1 as id\n");
    let ran = p.run(["run"]);
    ok(&ran);
    let conn = rusqlite::Connection::open(p.path().join(".ferry/ferry.db").as_std_path()).expect("open");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("tables");
    assert_eq!(tables, ["customers_v2"]);
    let results: serde_json::Value = serde_json::from_str(&p.read(".ferry/run_results.json")).expect("json");
    let loads: Vec<&serde_json::Value> =
        results["results"].as_array().expect("results").iter().filter_map(|r| r.get("load")).collect();
    assert_eq!(loads.len(), 1, "{results:#}");
    assert_eq!(loads[0]["status"], "success");
    assert_eq!(loads[0]["rows"], 1);
    assert_eq!(loads[0]["table"], "customers_v2");
    let bad = p.file("models/renamed.sql", "{{ config(load={'mode': 'truncate'}) }}\nselect 1 as id\n").run(["run"]);
    assert_eq!(bad.code, Some(1));
    assert!(bad.stderr.contains("unknown load mode `truncate`"), "{}", bad.stderr);
}

#[test]
fn sqlite_ctrl_c_mid_load_leaves_the_table_as_it_was() {
    let p = TestProject::new().file("ferry.yml", "name: shop\n").model("big.sql", BIG_MODEL);
    ok(&p.run(["run", "--vars", "{n: 2}"]));
    let mut db = Db::sqlite(&p);
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let before = rt.block_on(db.rows("big"));
    ok(&p.run(["run", "--no-load", "--vars", "{n: 3000000}"]));
    let child = p
        .ferry(["load"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // The load is under way once another writer cannot start.
    let path = p.path().join(".ferry/ferry.db");
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < Duration::from_secs(60), "the load never started writing");
        let probe = rusqlite::Connection::open(path.as_std_path()).expect("open");
        probe.busy_timeout(Duration::ZERO).expect("no waiting for locks");
        if probe.execute_batch("BEGIN IMMEDIATE; ROLLBACK").is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let out = child.wait_with_output().expect("ferry finishes");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    let after = rt.block_on(db.rows("big"));
    assert!(after == before, "the table changed: {} rows, not {}; ferry said: {stderr}", after.len(), before.len());
    assert!(!rt.block_on(db.exists("big__ferry_new")));
}

/// A server that refuses `LOAD DATA LOCAL INFILE` (a MariaDB of the test's
/// own, started with `--local-infile=0`: the shared server's setting is
/// global, so toggling it would disturb other tests) gets multi-row
/// INSERTs, and the output says so.
#[test]
fn mysql_server_refusing_local_infile_gets_multi_row_inserts() {
    let server = crate::private_mariadb::PrivateMariadb::start(&["--local-infile=0"]);
    assert_eq!(server.sql("SELECT @@local_infile"), "0\n");
    let profile = format!(
        "shop:\n  target: t\n  outputs:\n    t:\n      type: mysql\n      host: 127.0.0.1\n      port: {}\n      user: root\n      schema: refused\n",
        server.port
    );
    let p = TestProject::new()
        .file("ferry.yml", "name: shop\nprofile: shop\n")
        .file("profiles.yml", &profile)
        .model("big.sql", BIG_MODEL);
    let ran = p.run(["run", "--vars", "{n: 2500}"]);
    ok(&ran);
    assert!(
        ran.stderr.contains("the server refused LOAD DATA LOCAL INFILE") && ran.stderr.contains("multi-row INSERT"),
        "{}",
        ran.stderr
    );
    assert_eq!(server.sql("SELECT count(*), sum(id), max(label) FROM refused.big"), "2500\t3123750\trow 999\n");
}

#[tokio::test]
async fn mysql_ctrl_c_mid_load_leaves_the_table_as_it_was() {
    let Some(mut db) = Db::mysql("sigint").await else { return };
    let p = project_for(&db, None, "").model("big.sql", BIG_MODEL);
    ok(&p.run(["run", "--vars", "{n: 2}"]));
    let before = db.rows("big").await;
    ok(&p.run(["run", "--no-load", "--vars", "{n: 3000000}"]));
    let loading = mysql_loading(&db);
    let ran = stop_mid_load(&p, &mut db, &loading, Stop::CtrlC).await;
    assert_eq!(ran.code, Some(130), "{}", ran.stderr);
    assert!(ran.stderr.contains("interrupted"), "{}", ran.stderr);
    assert_eq!(db.rows("big").await, before);
    // The shadow table a killed `replace` may leave (MySQL's DDL commits on
    // its own) is dropped by the next load, which lands every row.
    ok(&p.run(["load"]));
    assert!(!db.exists("big__ferry_new").await);
    let Db::My { conn, schema, .. } = &mut db else { unreachable!() };
    use mysql_async::prelude::Queryable;
    let n: Option<i64> = conn.query_first(format!("SELECT count(*) FROM `{schema}`.big")).await.expect("count");
    assert_eq!(n, Some(3_000_000));
    db.drop_schema().await;
}

// ---------------------------------------------------------------- the way back

/// Every type family loaded, then read back out of the target through a
/// database source (connectorx): the staged Arrow type of each column, for
/// README's mapping table "and back".
async fn read_back_types(mut db: Db) -> String {
    let table = match &db {
        Db::Lite { .. } => "all_types".to_owned(),
        _ => format!("{}.all_types", db.schema()),
    };
    let p = project_for(&db, Some("types"), "");
    ok(&p.run(["run"]));
    let p = p
        .file(
            "models/back.yml",
            &format!("sources:\n  - name: target\n    tables:\n      - name: all_types\n        connection: t\n        table: {table}\n"),
        )
        .model("back.sql", "{{ config(materialized='table', load=false) }}\nselect * from {{ source('target', 'all_types') }}");
    ok(&p.run(["run", "-s", "back"]));
    let manifest: serde_json::Value =
        serde_json::from_str(&p.read(".ferry/stage/back/_ferry_stage.json")).expect("stage manifest");
    db.drop_schema().await;
    let staged: serde_json::Value =
        serde_json::from_str(&p.read(".ferry/stage/all_types/_ferry_stage.json")).expect("stage manifest");
    let loaded: Vec<String> =
        staged["columns"].as_array().unwrap().iter().map(|c| c["data_type"].as_str().unwrap().to_owned()).collect();
    manifest["columns"]
        .as_array()
        .unwrap()
        .iter()
        .zip(loaded)
        .map(|(c, from)| format!("{}: {from} -> {}", c["name"].as_str().unwrap(), c["data_type"].as_str().unwrap()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn postgres_types_read_back_through_a_database_source() {
    let Some(db) = Db::pg("back").await else { return };
    insta::assert_snapshot!(read_back_types(db).await);
}

#[tokio::test]
async fn mysql_types_read_back_through_a_database_source() {
    let Some(db) = Db::mysql("back").await else { return };
    insta::assert_snapshot!(read_back_types(db).await);
}

#[tokio::test]
async fn sqlite_types_read_back_through_a_database_source() {
    let p = TestProject::fixture("types");
    insta::assert_snapshot!(read_back_types(Db::sqlite(&p)).await);
}
