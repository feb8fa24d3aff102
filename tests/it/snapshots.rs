//! Snapshots kept over several runs of a changing export
//! (`tests/fixtures/projects/snapshots`) on PostgreSQL, MariaDB and SQLite:
//! after every run each snapshot holds exactly the versions computed here by
//! hand (valid from and to per key, snapshot times told apart by run), the
//! target reconciles with it, a run over unchanged data changes nothing, and
//! a model reads a snapshot with `ref()`.

use crate::common::{TestProject, node_result};
use crate::load::{Db, ok, project_for};

const HEADER: &str = "id,name,tier,updated_at\n";

/// Run 1: three customers and one without a key.
const RUN1: &str = "1,ann,gold,2024-01-01 10:00:00\n\
                    2,bob,silver,2024-01-01 11:00:00\n\
                    3,cid,bronze,2024-01-01 12:00:00\n\
                    ,nokey,gold,2024-01-01 13:00:00\n";
/// Run 2: 2 changed, 3 deleted, 4 new, 5 new without an `updated_at`.
const RUN2: &str = "1,ann,gold,2024-01-01 10:00:00\n\
                    2,bob,gold,2024-01-02 09:00:00\n\
                    4,dee,silver,2024-01-02 10:00:00\n\
                    5,fay,bronze,\n\
                    ,nokey,gold,2024-01-01 13:00:00\n";
/// Run 3: 1's name changed without a newer `updated_at`, 3 back as it was,
/// 4 changed, 6 new with a late `updated_at`.
const RUN3: &str = "1,anna,gold,2024-01-01 10:00:00\n\
                    2,bob,gold,2024-01-02 09:00:00\n\
                    3,cid,bronze,2024-01-01 12:00:00\n\
                    4,dee,gold,2024-01-03 08:00:00\n\
                    5,fay,bronze,\n\
                    6,eve,silver,2023-12-31 00:00:00\n";

fn export(p: &TestProject, rows: &str) {
    fs_err::write(p.path().join("data/customers.csv"), format!("{HEADER}{rows}")).expect("write the export");
}

/// The start of each run so far, as SQL timestamps: a snapshot time is
/// shown as `T<run>`, the run it falls in.
struct Runs(Vec<String>);

impl Runs {
    fn build(&mut self, p: &TestProject, rows: &str) {
        export(p, rows);
        self.0.push(chrono::Utc::now().format("%Y-%m-%d %H:%M:%S%.6f").to_string());
        ok(&p.run(["build"]));
    }

    /// `column` as text: `T<run>` for a snapshot time, `null`, or the value.
    fn shown(&self, column: &str) -> String {
        let mut arms = String::new();
        for (k, start) in self.0.iter().enumerate().rev() {
            arms.push_str(&format!("WHEN {column} >= {} THEN 'T{}' ", micros(start), k + 1));
        }
        let data = format!("{column} < {} OR {column} >= {}", micros(&self.0[0]), micros("2100-01-01"));
        format!(
            "CASE WHEN {column} IS NULL THEN 'null' WHEN {data} THEN CAST({column} AS VARCHAR) {arms}ELSE CAST({column} AS VARCHAR) END"
        )
    }

    /// The staged versions of `snapshot`: id, name, tier, valid from and to (and `extra`).
    async fn versions(&self, p: &TestProject, snapshot: &str, (from, to): (&str, &str), extra: &str) -> Vec<String> {
        let sql = format!(
            "select concat_ws(' ', cast(id as varchar), name, tier, {}, {}{extra}) as v from {snapshot}",
            self.shown(from),
            self.shown(to)
        );
        let mut rows: Vec<String> = p
            .query_stages(&[snapshot], &sql)
            .await
            .iter()
            .map(|l| l.trim_matches(|c: char| c == '|' || c.is_whitespace()).to_owned())
            .collect();
        rows.sort();
        rows
    }
}

/// A timestamp literal of the meta columns' type (microseconds).
fn micros(at: &str) -> String {
    format!("arrow_cast('{at}', 'Timestamp(Microsecond, None)')")
}

/// The `incremental` record of a snapshot in the last run's results.
fn record(p: &TestProject, snapshot: &str) -> serde_json::Value {
    let results = p.run_results();
    let node = node_result(&results, &format!("snapshot.shop.{snapshot}")).unwrap_or_else(|| panic!("{snapshot} ran"));
    node["incremental"].clone()
}

/// Versions of one key that follow each other: each closed version ends
/// where the next begins (none of `gapped` keys, whose record was away).
async fn assert_chained(p: &TestProject, snapshot: &str, gapped: &str) {
    let sql = format!(
        "select count(*) from (select id, dbt_valid_to, lead(dbt_valid_from) over (partition by id order by dbt_valid_from, dbt_updated_at) as next \
         from {snapshot} where id not in ({gapped})) where next is not null and dbt_valid_to is distinct from next"
    );
    let broken = p.query_stages(&[snapshot], &sql).await;
    assert_eq!(broken, ["| 0        |"], "{snapshot}: a closed version does not end where the next begins");
}

async fn snapshots_over_runs(mut db: Db, p: TestProject) {
    let mut runs = Runs(Vec::new());
    let ts = ("dbt_valid_from", "dbt_valid_to");
    runs.build(&p, RUN1);
    assert_eq!(
        runs.versions(&p, "customers_ts", ts, ", dbt_is_deleted").await,
        [
            "1 ann gold 2024-01-01T10:00:00 null False",
            "2 bob silver 2024-01-01T11:00:00 null False",
            "3 cid bronze 2024-01-01T12:00:00 null False",
        ]
    );
    let results = p.run_results();
    let node = node_result(&results, "snapshot.shop.customers_ts").expect("customers_ts ran");
    assert_eq!(node["ledger"]["quarantined"], 1, "the row without a key is quarantined: {node}");

    runs.build(&p, RUN2);
    assert_eq!(
        runs.versions(&p, "customers_ts", ts, ", dbt_is_deleted").await,
        [
            "1 ann gold 2024-01-01T10:00:00 null False",
            "2 bob gold 2024-01-02T09:00:00 null False",
            "2 bob silver 2024-01-01T11:00:00 2024-01-02T09:00:00 False",
            "3 cid bronze 2024-01-01T12:00:00 T2 False",
            "3 cid bronze T2 null True",
            "4 dee silver 2024-01-02T10:00:00 null False",
        ]
    );
    assert_eq!(
        runs.versions(&p, "customers_check", ts, "").await,
        [
            "1 ann gold T1 null",
            "2 bob gold T2 null",
            "2 bob silver T1 T2",
            "3 cid bronze T1 T2",
            "4 dee silver T2 null",
            "5 fay bronze T2 null",
        ]
    );

    runs.build(&p, RUN3);
    assert_eq!(
        runs.versions(&p, "customers_ts", ts, ", dbt_is_deleted").await,
        [
            "1 ann gold 2024-01-01T10:00:00 null False",
            "2 bob gold 2024-01-02T09:00:00 null False",
            "2 bob silver 2024-01-01T11:00:00 2024-01-02T09:00:00 False",
            "3 cid bronze 2024-01-01T12:00:00 T2 False",
            "3 cid bronze T2 T3 True",
            "3 cid bronze T3 null False",
            "4 dee gold 2024-01-03T08:00:00 null False",
            "4 dee silver 2024-01-02T10:00:00 2024-01-03T08:00:00 False",
            "6 eve silver 2023-12-31T00:00:00 null False",
        ]
    );
    assert_chained(&p, "customers_ts", "0").await;
    assert_eq!(
        runs.versions(&p, "customers_check", ts, "").await,
        [
            "1 ann gold T1 null",
            "2 bob gold T2 null",
            "2 bob silver T1 T2",
            "3 cid bronze T1 T2",
            "3 cid bronze T3 null",
            "4 dee gold T3 null",
            "4 dee silver T2 T3",
            "5 fay bronze T2 null",
            "6 eve silver T3 null",
        ]
    );
    assert_chained(&p, "customers_check", "3").await;
    assert_eq!(
        runs.versions(&p, "customers_yaml", ("valid_from", "valid_to"), "").await,
        [
            "1 ann gold 2024-01-01T10:00:00 9999-12-31T00:00:00",
            "2 bob gold 2024-01-02T09:00:00 9999-12-31T00:00:00",
            "2 bob silver 2024-01-01T11:00:00 2024-01-02T09:00:00",
            "3 cid bronze 2024-01-01T12:00:00 9999-12-31T00:00:00",
            "4 dee gold 2024-01-03T08:00:00 9999-12-31T00:00:00",
            "4 dee silver 2024-01-02T10:00:00 2024-01-03T08:00:00",
            "6 eve silver 2023-12-31T00:00:00 9999-12-31T00:00:00",
        ]
    );
    let current = p.query_stages(&["current_customers"], "select id, name, tier from current_customers").await;
    assert_eq!(
        current,
        [
            "| 1  | ann  | gold   |",
            "| 2  | bob  | gold   |",
            "| 3  | cid  | bronze |",
            "| 4  | dee  | gold   |",
            "| 6  | eve  | silver |",
        ],
        "the model read the snapshot after it ran"
    );
    // The build reconciled each table; the target holds every version.
    for (table, versions) in [("customers_ts", 9), ("customers_check", 9), ("customers_yaml", 7)] {
        assert_eq!(db.rows(table).await.len(), versions, "{table} in the target");
    }

    // The same export again changes nothing.
    let mut before = Vec::new();
    for (snapshot, cols) in
        [("customers_ts", ts), ("customers_check", ts), ("customers_yaml", ("valid_from", "valid_to"))]
    {
        before.push(runs.versions(&p, snapshot, cols, "").await);
    }
    runs.build(&p, RUN3);
    for (k, (snapshot, cols)) in
        [("customers_ts", ts), ("customers_check", ts), ("customers_yaml", ("valid_from", "valid_to"))]
            .into_iter()
            .enumerate()
    {
        let r = record(&p, snapshot);
        assert_eq!((r["run"].as_str(), r["rows"].as_u64()), (Some("incremental"), Some(0)), "{snapshot}: {r}");
        assert_eq!(runs.versions(&p, snapshot, cols, "").await, before[k], "{snapshot} is unchanged");
    }
    assert_eq!(db.rows("customers_check").await.len(), 9);

    // `--full-refresh` never rebuilds a snapshot: its history would be lost.
    ok(&p.run(["build", "--full-refresh"]));
    assert_eq!(record(&p, "customers_ts")["run"], "incremental");
    assert_eq!(db.rows("customers_ts").await.len(), 9);

    // Run 5: a new column, and 2 changed with it.
    let rows = RUN3.lines().map(|l| {
        if l.starts_with("2,") {
            "2,bob,platinum,2024-01-04 09:00:00,bob@example.com".to_owned()
        } else {
            format!("{l},")
        }
    });
    let rows: String = rows.map(|l| l + "\n").collect();
    fs_err::write(p.path().join("data/customers.csv"), format!("id,name,tier,updated_at,email\n{rows}"))
        .expect("write the export");
    ok(&p.run(["build"]));
    let emails = |snapshot: &str| {
        format!(
            "select concat_ws(' ', cast(id as varchar), tier, coalesce(email, 'null')) as v from {snapshot} where id = 2"
        )
    };
    for snapshot in ["customers_check", "customers_yaml"] {
        assert_eq!(
            p.query_stages(&[snapshot], &emails(snapshot)).await,
            ["| 2 gold null                |", "| 2 platinum bob@example.com |", "| 2 silver null              |"],
            "{snapshot}: the new column is NULL in earlier versions"
        );
    }
    // customers_ts selects its columns: the new one is not among them.
    for (table, versions) in [("customers_ts", 10), ("customers_check", 10), ("customers_yaml", 8)] {
        assert_eq!(db.rows(table).await.len(), versions, "{table} in the target");
    }
    p.assert_stored_stages_whole(&["customers_ts", "customers_check", "customers_yaml"]).await;
    db.drop_schema().await;
}

#[tokio::test]
async fn postgres_snapshots_keep_every_version_over_runs() {
    let Some(db) = Db::pg("snap").await else { return };
    let p = project_for(&db, Some("snapshots"), "");
    snapshots_over_runs(db, p).await;
}

#[tokio::test]
async fn mysql_snapshots_keep_every_version_over_runs() {
    let Some(db) = Db::mysql("snap").await else { return };
    let p = project_for(&db, Some("snapshots"), "");
    snapshots_over_runs(db, p).await;
}

async fn on_sqlite(p: TestProject) {
    let db = Db::sqlite(&p);
    let p = p.file("profiles.yml", &db.profiles("").replace("PROFILE", "shop"));
    snapshots_over_runs(db, p).await;
}

#[tokio::test]
async fn sqlite_snapshots_keep_every_version_over_runs() {
    on_sqlite(TestProject::fixture("snapshots")).await;
}

/// The same runs with the stages in an S3 bucket (moto).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_keep_every_version_with_their_stages_in_s3() {
    let Some((_server, port)) = crate::object_stores::stages_bucket() else { return };
    on_sqlite(TestProject::fixture("snapshots").stages_in_moto(port, "stages", "shop")).await;
}

/// `ferry snapshot` runs the snapshots alone, `ferry run` never does, and
/// `ls --resource-type snapshot` lists them.
#[test]
fn snapshot_runs_snapshots_and_run_does_not() {
    let p = TestProject::fixture("snapshots");
    let db = Db::sqlite(&p);
    let p = p.file("profiles.yml", &db.profiles("").replace("PROFILE", "shop"));
    export(&p, RUN1);
    ok(&p.run(["run", "-s", "customers_check"]));
    assert!(!p.path().join(".ferry/stage/customers_check").exists(), "`run` does not run a snapshot");
    ok(&p.run(["snapshot"]));
    for s in ["customers_ts", "customers_check", "customers_yaml"] {
        assert!(p.path().join(".ferry/stage").join(s).exists(), "{s} was staged");
    }
    assert!(!p.path().join(".ferry/stage/current_customers").exists(), "`snapshot` runs no model");
    let ls = p.run(["ls", "--resource-type", "snapshot", "--output", "name"]);
    ok(&ls);
    assert_eq!(ls.stdout.lines().collect::<Vec<_>>(), ["customers_check", "customers_ts", "customers_yaml"]);
}

/// A snapshot whose config cannot work says why, naming the snapshot.
#[test]
fn a_snapshot_without_its_settings_says_what_it_lacks() {
    let p = TestProject::new().file(
        "snapshots/s.sql",
        "{% snapshot s %}\n{{ config(unique_key='id', strategy='timestamp') }}\nselect 1 as id\n{% endsnapshot %}\n",
    );
    let ran = p.run(["snapshot", "--no-load"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("snapshot `s`: strategy `timestamp` needs `updated_at`"), "{}", ran.stderr);
    let p = TestProject::new().file(
        "snapshots/s.sql",
        "{% snapshot s %}\n{{ config(unique_key='key', strategy='check', check_cols='all') }}\nselect 1 as id\n{% endsnapshot %}\n",
    );
    let ran = p.run(["snapshot", "--no-load"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("its `unique_key` `key` is not a column of its query"), "{}", ran.stderr);
}

/// A snapshot with a `cursor` reads only the rows at or after its mark less
/// the lookback: a changed row and a new one are versioned, a late row
/// inside the lookback too, one before it is not read (as documented), a
/// deleted record stays current (`hard_deletes: ignore`, overriding the project's `invalidate`), and the mark
/// advances to the newest `updated_at` seen.
#[tokio::test]
async fn a_snapshot_with_a_cursor_reads_only_the_rows_after_its_mark() {
    let p = TestProject::fixture("snapshots").file(
        "snapshots/customers_recent.sql",
        "{% snapshot customers_recent %}\n\
         {{ config(unique_key='id', strategy='timestamp', updated_at='updated_at', cursor='updated_at', lookback='12 hours', hard_deletes='ignore') }}\n\
         select id, name, tier, updated_at from {{ source('raw', 'customers') }} where id is not null\n\
         {% endsnapshot %}\n",
    );
    let db = Db::sqlite(&p);
    let p = p.file("profiles.yml", &db.profiles("").replace("PROFILE", "shop"));
    let mut runs = Runs(Vec::new());
    let snapshot = |runs: &mut Runs, rows: &str| {
        export(&p, rows);
        runs.0.push(chrono::Utc::now().format("%Y-%m-%d %H:%M:%S%.6f").to_string());
        ok(&p.run(["snapshot", "-s", "customers_recent"]));
    };
    snapshot(&mut runs, RUN1);
    assert_eq!(record(&p, "customers_recent")["cursor"]["high"], "2024-01-01T12:00:00");
    // 2 changed, 3 deleted, 4 new; 7 late but inside the lookback (at or
    // after 01-01 00:00, the mark less 12 hours), 6 late before it.
    let run2 = "1,ann,gold,2024-01-01 10:00:00\n\
                2,bob,gold,2024-01-02 09:00:00\n\
                4,dee,silver,2024-01-02 10:00:00\n\
                6,eve,silver,2023-12-31 00:00:00\n\
                7,gus,gold,2024-01-01 06:00:00\n";
    snapshot(&mut runs, run2);
    let r = record(&p, "customers_recent");
    assert_eq!(r["cursor"]["from"], "2024-01-01T12:00:00", "{r}");
    assert_eq!(r["cursor"]["high"], "2024-01-02T10:00:00", "{r}");
    assert_eq!(r["rows"], 4, "2's new and closed versions, 4 and 7: {r}");
    let ts = ("dbt_valid_from", "dbt_valid_to");
    assert_eq!(
        runs.versions(&p, "customers_recent", ts, "").await,
        [
            "1 ann gold 2024-01-01T10:00:00 null",
            "2 bob gold 2024-01-02T09:00:00 null",
            "2 bob silver 2024-01-01T11:00:00 2024-01-02T09:00:00",
            "3 cid bronze 2024-01-01T12:00:00 null",
            "4 dee silver 2024-01-02T10:00:00 null",
            "7 gus gold 2024-01-01T06:00:00 null",
        ]
    );
    // The same export again: the rows at the mark are read again, and
    // none of them changed.
    snapshot(&mut runs, run2);
    let r = record(&p, "customers_recent");
    assert_eq!((r["cursor"]["from"].as_str(), r["rows"].as_u64()), (Some("2024-01-02T10:00:00"), Some(0)), "{r}");

    // A cursor cannot tell deleted records: it needs `hard_deletes: ignore`.
    let bad = TestProject::new().file(
        "snapshots/s.sql",
        "{% snapshot s %}\n{{ config(unique_key='id', strategy='timestamp', updated_at='at', cursor='at', hard_deletes='invalidate') }}\n\
         select 1 as id, now() as at\n{% endsnapshot %}\n",
    );
    let ran = bad.run(["snapshot", "--no-load"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("snapshot `s`: a `cursor` reads only the rows changed"), "{}", ran.stderr);
    assert!(ran.stderr.contains("s.sql"), "the file is named: {}", ran.stderr);
}

/// 40 customers, of which `changed` have a new tier (and a newer
/// `updated_at`) and `gone` are not in the export.
fn customers(changed: &[(u32, &str, &str)], gone: &[u32]) -> String {
    (1..=40)
        .filter(|id| !gone.contains(id))
        .map(|id| match changed.iter().find(|c| c.0 == id) {
            Some((_, tier, at)) => format!("{id},c{id},{tier},{at}\n"),
            None => format!("{id},c{id},bronze,2024-01-01 10:00:00\n"),
        })
        .collect()
}

/// Snapshots whose changes replace few of their versions are layered on
/// their history (deletion files beside its files, see `stage::layer`),
/// and over three runs of changes and a deletion hold the versions
/// computed here: one per change, each closed where the next begins, the
/// current ones equal to the export; the target holds them all.
#[tokio::test]
async fn a_layered_history_keeps_every_version() {
    let p = TestProject::fixture("snapshots");
    let mut db = Db::sqlite(&p);
    let p = p.file("profiles.yml", &db.profiles("").replace("PROFILE", "shop"));
    let mut runs = Runs(Vec::new());
    let exports = [
        customers(&[], &[]),
        customers(&[(2, "silver", "2024-01-02 09:00:00")], &[]),
        customers(&[(2, "gold", "2024-01-03 09:00:00"), (4, "gold", "2024-01-03 10:00:00")], &[7]),
    ];
    // Ids with more than one version after each run: 2 changes twice, 4
    // once, 7 is closed and has a deletion record (`hard_deletes:
    // new_record`).
    let expected: [&[(u32, usize)]; 3] = [&[], &[(2, 2)], &[(2, 3), (4, 2), (7, 2)]];
    for (run, (rows, more)) in exports.iter().zip(expected).enumerate() {
        let run = run + 1;
        runs.build(&p, rows);
        let counts = p
            .stage_values(
                "customers_ts",
                "select concat_ws(' ', cast(id as varchar), cast(count(*) as varchar)) from customers_ts \
                 group by id having count(*) > 1",
            )
            .await;
        let mut want: Vec<String> = more.iter().map(|(id, n)| format!("{id} {n}")).collect();
        want.sort();
        assert_eq!(counts, want, "run {run}: versions per id");
        let current = p
            .stage_values(
                "customers_ts",
                "select concat_ws(',', cast(id as varchar), name, tier, cast(updated_at as varchar)) from customers_ts \
                 where dbt_valid_to is null and dbt_is_deleted = 'False'",
            )
            .await;
        let mut export: Vec<String> = rows.lines().map(|l| l.replace(' ', "T")).collect();
        export.sort();
        assert_eq!(current, export, "run {run}: the current versions are the export");
        assert_chained(&p, "customers_ts", "7").await;
        let versions = 40 + more.iter().map(|(_, n)| n - 1).sum::<usize>();
        assert_eq!(db.rows("customers_ts").await.len(), versions, "run {run}: the target holds every version");
        // Layered from the first incremental run, though the first run
        // staged `dbt_is_deleted` as `Utf8`, its increments as `Utf8View`.
        if run > 1 {
            let stage = p.stage_manifest("customers_ts").await.expect("a stage");
            let files = stage["files"].as_array().expect("files");
            assert!(files.iter().any(|f| f["deleted"]["rows"].as_u64() > Some(0)), "run {run}: layered: {stage}");
        }
    }
    let deleted = p
        .stage_values(
            "customers_ts",
            "select concat_ws(' ', cast(id as varchar), cast(dbt_valid_to is null as varchar)) from customers_ts \
             where dbt_is_deleted = 'True'",
        )
        .await;
    assert_eq!(deleted, ["7 true"]);
}
