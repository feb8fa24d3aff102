//! Change detection by row hash: a full extract with no timestamp, run
//! again and again as it changes (inserts, updates, deletes, an unchanged
//! run, a new and a removed column), on PostgreSQL, MariaDB and SQLite.
//! After every run the change-detected table equals a full rebuild of the
//! same extract (`people_full`), the run results and history count each
//! class, and a load the target refuses leaves the kept hashes as they
//! were, so the next run loads the same changes and converges.

use crate::common::{TestProject, node_result};
use crate::load::{Db, ok, project_for};

const SOURCES: &str = "sources:\n  - name: raw\n    tables:\n      - name: people\n        path: data/people.csv\n";

fn with_models(p: TestProject) -> TestProject {
    let from = "select * from {{ source('raw', 'people') }}";
    p.file("models/sources.yml", SOURCES)
        .model("people_full.sql", &format!("{{{{ config(materialized='table', unique_key='id') }}}}\n{from}"))
        .model(
            "people_sync.sql",
            &format!("{{{{ config(materialized='table', change_detection={{'key': ['id']}}) }}}}\n{from}"),
        )
        .model(
            "people_soft.sql",
            &format!(
                "{{{{ config(materialized='table', change_detection={{'strategy': 'hash', 'key': 'id', \
                 'deletes': 'soft', 'deleted_flag': 'is_deleted', 'deleted_at': 'deleted_at'}}) }}}}\n{from}"
            ),
        )
}

fn export(p: &TestProject, text: &str) {
    fs_err::create_dir_all(p.path().join("data")).expect("data/");
    fs_err::write(p.path().join("data/people.csv"), text).expect("write the export");
}

/// The `changes` record of `model` in the last run's results.
fn changes(p: &TestProject, model: &str) -> serde_json::Value {
    let results = p.run_results();
    node_result(&results, &format!("model.shop.{model}")).unwrap_or_else(|| panic!("{model} ran"))["changes"].clone()
}

/// (inserted, updated, unchanged, deleted) of `model`'s last run.
fn counts(p: &TestProject, model: &str) -> (u64, u64, u64, u64) {
    let c = changes(p, model);
    let n = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("{k} in {c}"));
    (n("inserted"), n("updated"), n("unchanged"), n("deleted"))
}

async fn assert_in_step(db: &mut Db, run: &str) {
    let full = db.rows("people_full").await;
    assert_eq!(db.rows("people_sync").await, full, "{run}: people_sync differs from a full rebuild");
}

/// Rows of `people_soft` flagged deleted, and all its rows.
async fn soft_rows(db: &mut Db) -> (usize, usize) {
    let rows = db.rows("people_soft").await;
    let flagged = rows
        .iter()
        .filter(|r| {
            r.contains("\"is_deleted\":true") || r.contains("is_deleted='1'") || r.contains("is_deleted=Ok(Integer(1))")
        })
        .count();
    (flagged, rows.len())
}

async fn runs_in_step(mut db: Db, p: TestProject, (refuse, allow): (&str, &str)) {
    export(&p, "id,name,city\n1,ann,paris\n2,bob,rome\n3,cy,oslo\n4,dee,lima\n");
    let first = p.run(["build"]);
    ok(&first);
    assert_eq!(changes(&p, "people_sync")["run"], "full");
    assert_eq!(changes(&p, "people_sync")["reason"], "it has no row hashes yet");
    assert_eq!(changes(&p, "people_sync")["hashes_kept"], true);
    assert_in_step(&mut db, "run 1").await;

    // An insert, an update, a delete, two unchanged.
    export(&p, "id,name,city\n1,ann,paris\n2,bob,milan\n4,dee,lima\n5,eve,nice\n");
    let second = p.run(["build"]);
    ok(&second);
    assert!(second.stderr.contains("1 inserted, 1 updated, 2 unchanged, 1 deleted"), "{}", second.stderr);
    assert!(second.stderr.contains("1 rows deleted"), "the load says what it deleted: {}", second.stderr);
    assert_eq!(counts(&p, "people_sync"), (1, 1, 2, 1));
    assert!(
        second.stderr.contains("the extract: 1 inserted, 1 updated, 2 unchanged, 1 gone"),
        "the ledger says it too: {}",
        second.stderr
    );
    let results = p.run_results();
    let ledger = &node_result(&results, "model.shop.people_sync").expect("people_sync ran")["ledger"];
    assert_eq!((ledger["produced"].as_u64(), ledger["changes"]["unchanged"].as_u64()), (Some(2), Some(2)), "{ledger}");
    assert_eq!(p.run_results()["results"].as_array().map(|r| r.len()), Some(3));
    assert_in_step(&mut db, "run 2").await;
    assert_eq!(
        soft_rows(&mut db).await,
        (1, 5),
        "the deleted record is kept, flagged: {:?}",
        db.rows("people_soft").await
    );
    let history = p.run(["history", "--model", "people_sync", "--last", "1", "--format", "json"]);
    ok(&history);
    let last: serde_json::Value = serde_json::from_str(history.stdout.lines().next().unwrap_or("{}")).expect("json");
    assert_eq!(
        (last["inserted"].as_u64(), last["updated"].as_u64(), last["deleted"].as_u64()),
        (Some(1), Some(1), Some(1)),
        "{last}"
    );

    // Nothing changed: nothing is staged or loaded but the hashes.
    ok(&p.run(["build"]));
    assert_eq!(counts(&p, "people_sync"), (0, 0, 4, 0));
    assert_in_step(&mut db, "run 3").await;
    if !p.stages_stored() {
        // Run 2 replaced 2 of 4 kept hashes, more than a fifth: they were
        // rewritten whole, without the gone key's tombstone.
        let kept = kept_hashes(&p);
        assert_eq!((kept["row_count"].as_u64(), deleted_rows(&kept)), (Some(4), vec![]), "{kept}");
    }

    // Killed after staging, after the load committed, and after its
    // reconciliation, before the hashes are kept: each time the next run
    // finds the same change, and the table converges.
    export(&p, "id,name,city\n1,ann,paris\n2,bob,milan\n4,dee,lima\n5,eve,nice-killed\n");
    for phase in ["staged", "loaded", "reconciled"] {
        let killed = p.ferry(["build"]).env("FERRY_TEST_KILL_AT", phase).output().expect("ferry runs");
        assert!(!killed.status.success(), "{phase}: {}", String::from_utf8_lossy(&killed.stderr));
    }
    ok(&p.run(["build"]));
    assert_eq!(counts(&p, "people_sync"), (0, 1, 3, 0), "the change is found again after the kills");
    assert_in_step(&mut db, "after the kills").await;

    // A load the target refuses: the kept hashes stay, and the next run
    // loads the same change.
    export(&p, "id,name,city\n1,ann,paris\n2,bob,milan\n4,dee,lima-refused\n5,eve,nice-killed\n");
    db.execute(refuse).await;
    let refused = p.run(["build"]);
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);
    assert_eq!(changes(&p, "people_sync")["hashes_kept"], false);
    db.execute(allow).await;
    ok(&p.run(["build"]));
    assert_eq!(counts(&p, "people_sync"), (0, 1, 3, 0), "the refused change is found again");
    assert_in_step(&mut db, "after the refused load").await;

    // A record that comes back after a soft delete is current again.
    export(&p, "id,name,city\n1,ann,paris\n2,bob,milan\n3,cy,oslo\n4,dee,lima-refused\n5,eve,nice-killed\n");
    ok(&p.run(["build"]));
    assert_eq!(counts(&p, "people_sync"), (1, 0, 4, 0));
    assert_eq!(soft_rows(&mut db).await, (0, 5), "the record that came back is not flagged");
    assert_in_step(&mut db, "a record back").await;

    // A new column, then a removed one: the compared columns changed, so
    // every row is staged again and replaces the table.
    // Each is reported as source drift too (`warn`, the default).
    export(&p, "id,name,city,email\n1,ann,paris,a@x\n2,bob,milan,b@x\n3,cy,oslo,c@x\n5,eve,nice-killed,e@x\n");
    let added = p.run(["build"]);
    ok(&added);
    assert!(added.stderr.contains("`email` (Utf8) is new, column 4"), "{}", added.stderr);
    assert_eq!(changes(&p, "people_sync")["run"], "full");
    assert_in_step(&mut db, "a new column").await;
    export(&p, "id,name,email\n1,ann,a@x\n2,bob,b@x\n3,cy,c@x\n5,eve,e@y\n");
    let removed = p.run(["build"]);
    ok(&removed);
    assert!(removed.stderr.contains("`city` is gone"), "{}", removed.stderr);
    assert_eq!(changes(&p, "people_sync")["run"], "full");
    assert_in_step(&mut db, "a removed column").await;
    ok(&p.run(["build"]));
    assert_eq!(counts(&p, "people_sync"), (0, 0, 4, 0));
    // A retyped column: its values hash differently, so every row is
    // staged again and replaces the table.
    export(&p, "id,name,email\n1,ann,11\n2,bob,12\n3,cy,13\n5,eve,15\n");
    let retyped = p.run(["build"]);
    ok(&retyped);
    assert!(retyped.stderr.contains("`email` was Utf8, now Int64"), "{}", retyped.stderr);
    assert_eq!(changes(&p, "people_sync")["run"], "full");
    assert!(
        changes(&p, "people_sync")["reason"].as_str().is_some_and(|r| r.contains("(or their types) changed")),
        "{}",
        retyped.stderr
    );
    assert_in_step(&mut db, "a retyped column").await;
    // A full refresh rebuilds from scratch.
    ok(&p.run(["build", "--full-refresh"]));
    assert_eq!(changes(&p, "people_sync")["reason"], "--full-refresh");
    assert_in_step(&mut db, "full refresh").await;
    p.assert_stored_stages_whole(&["people_sync", "people_soft"]).await;
    db.drop_schema().await;
}

/// On a server: a CHECK constraint on `people_sync` (quoted with `q`)
/// refuses the changed row.
async fn on_server(db: Db, q: char) {
    let t = format!("{q}{}{q}.{q}people_sync{q}", db.schema());
    let refuse = format!("ALTER TABLE {t} ADD CONSTRAINT no_refused CHECK (city <> 'lima-refused')");
    let allow = format!("ALTER TABLE {t} DROP CONSTRAINT no_refused");
    let p = with_models(project_for(&db, None, ""));
    runs_in_step(db, p, (&refuse, &allow)).await;
}

#[tokio::test]
async fn postgres_change_detection_keeps_the_table_in_step() {
    let Some(db) = Db::pg("changes").await else { return };
    on_server(db, '"').await;
}

#[tokio::test]
async fn mysql_change_detection_keeps_the_table_in_step() {
    let Some(db) = Db::mysql("changes").await else { return };
    on_server(db, '`').await;
}

#[tokio::test]
async fn sqlite_change_detection_keeps_the_table_in_step() {
    on_sqlite(TestProject::new().file("ferry.yml", "name: shop\nprofile: shop\n")).await;
}

/// The same runs with the stages in an S3 bucket (moto), and so the kept
/// row hashes beside them: in the end the model's stage and its kept hashes
/// are each one version, and nothing a run staged apart is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_detection_keeps_the_table_in_step_with_the_stages_in_s3() {
    let Some((_server, port)) = crate::object_stores::stages_bucket() else { return };
    let p = TestProject::new().file("ferry.yml", "name: shop\nprofile: shop\n").stages_in_moto(port, "stages", "shop");
    let kept = (port, "stages", "shop/_ferry_hashes");
    on_sqlite(p).await;
    assert_kept_hashes_whole(kept).await;
}

/// The kept row hashes of `people_sync` in moto: their manifest, and the one
/// version it names, with the files it lists and what they were computed
/// over.
/// The manifest of `people_sync`'s kept row hashes, on this machine.
fn kept_hashes(p: &TestProject) -> serde_json::Value {
    serde_json::from_str(&p.read(".ferry/state/hashes/people_sync/_ferry_stage.json")).expect("a manifest")
}

/// The rows deleted from each file of a stage's manifest that has some.
fn deleted_rows(manifest: &serde_json::Value) -> Vec<u64> {
    let files = manifest["files"].as_array().expect("files");
    files.iter().filter_map(|f| f["deleted"]["rows"].as_u64()).collect()
}

/// Over an extract of 100 records, a run that changes a few layers what
/// changed on the kept hashes instead of rewriting them: the updated and
/// gone keys' kept rows are deleted, and the gone key is kept as a
/// tombstone, so the next run does not find it gone again. The table stays
/// in step throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_layered_on_the_kept_hashes() {
    let p = TestProject::new().file("ferry.yml", "name: shop\nprofile: shop\n");
    let mut db = Db::sqlite(&p);
    let p = with_models(p.file("profiles.yml", &db.profiles("").replace("PROFILE", "shop")));
    let extract = |rows: &mut dyn Iterator<Item = (u32, String)>| {
        let lines: String = rows.map(|(id, city)| format!("{id},n{id},{city}\n")).collect();
        format!("id,name,city\n{lines}")
    };
    export(&p, &extract(&mut (1..=100).map(|i| (i, "paris".to_owned()))));
    ok(&p.run(["build"]));
    let first = kept_hashes(&p);
    assert_eq!(first["row_count"], 100, "{first}");

    // 6 updated, 100 gone, 101 new.
    let changed = |i: u32| if i.is_multiple_of(15) { "rome".to_owned() } else { "paris".to_owned() };
    export(&p, &extract(&mut (1..=99).chain([101]).map(|i| (i, changed(i)))));
    ok(&p.run(["build"]));
    assert_eq!(counts(&p, "people_sync"), (1, 6, 93, 1));
    assert_in_step(&mut db, "changed").await;
    let layered = kept_hashes(&p);
    assert_eq!(deleted_rows(&layered).iter().sum::<u64>(), 7, "6 updated and 1 gone: {layered}");
    let files = |m: &serde_json::Value| m["files"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(files(&layered), files(&first) + 1, "one file of what changed: {layered}");
    assert_eq!(layered["row_count"], 101, "99 kept, 1 new and a tombstone: {layered}");

    // Nothing changed: 100 stays gone, and no file is added.
    ok(&p.run(["build"]));
    assert_eq!(counts(&p, "people_sync"), (0, 0, 100, 0));
    assert_eq!(kept_hashes(&p)["files"], layered["files"]);
    // 100 comes back, over its tombstone.
    export(&p, &extract(&mut (1..=101).map(|i| (i, changed(i)))));
    ok(&p.run(["build"]));
    assert_eq!(counts(&p, "people_sync"), (1, 0, 100, 0));
    assert_in_step(&mut db, "back").await;

    // A third of the records changed and one gone: past the share of
    // replaced rows a layer takes, the kept hashes are written whole again,
    // without tombstones or deleted rows.
    let oslo = |i: u32| if i.is_multiple_of(3) { "oslo".to_owned() } else { changed(i) };
    export(&p, &extract(&mut (2..=101).map(|i| (i, oslo(i)))));
    ok(&p.run(["build"]));
    assert_eq!(counts(&p, "people_sync"), (0, 33, 67, 1));
    assert_in_step(&mut db, "a third").await;
    let whole = kept_hashes(&p);
    assert_eq!(deleted_rows(&whole).iter().sum::<u64>(), 0, "{whole}");
    assert_eq!((whole["row_count"].as_u64(), files(&whole)), (Some(100), 1), "{whole}");
    ok(&p.run(["build"]));
    assert_eq!(counts(&p, "people_sync"), (0, 0, 100, 0));
}

/// Kept hashes that cannot be read are no bug: the run fails naming the
/// model and where its hashes are, and changes nothing (the table, the
/// kept hashes); a full refresh starts them again. Spoiled two ways: the
/// data pages of a file (found while the extract is read ahead), and a
/// whole file (found as the kept hashes are opened).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_hashes_that_cannot_be_read_fail_the_run_and_change_nothing() {
    let p = TestProject::new().file("ferry.yml", "name: shop\nprofile: shop\n");
    let mut db = Db::sqlite(&p);
    let p = with_models(p.file("profiles.yml", &db.profiles("").replace("PROFILE", "shop")));
    let extract = |city: &str| {
        let lines: String = (1..=3000).map(|id| format!("{id},n{id},{city}\n")).collect();
        format!("id,name,city\n{lines}")
    };
    export(&p, &extract("paris"));
    ok(&p.run(["build", "-s", "people_sync"]));
    let before = db.rows("people_sync").await;
    let manifest = kept_hashes(&p);
    let dir = ".ferry/state/hashes/people_sync";
    let file = p.path().join(dir).join(manifest["files"][0]["name"].as_str().expect("a file"));
    let good = fs_err::read(&file).expect("the kept file");
    // Parquet: `PAR1`, the pages, the page index, the footer, its length,
    // `PAR1`; the first half of what precedes the footer is pages.
    let footer = u32::from_le_bytes(good[good.len() - 8..good.len() - 4].try_into().unwrap()) as usize;
    let mut pages_spoiled = good.clone();
    pages_spoiled[4..4 + (good.len() - 12 - footer) / 2].fill(b'x');
    let name = file.file_name().expect("a name").to_owned();
    export(&p, &extract("rome"));
    // The reader of the pages names the file; the opening, the directory.
    for (spoiled, named) in [(pages_spoiled, format!("`{name}`")), (vec![b'x'; good.len()], dir.to_owned())] {
        fs_err::write(&file, spoiled).expect("spoil the kept file");
        let failed = p.run(["build", "-s", "people_sync"]);
        assert_eq!(failed.code, Some(1), "stdout:\n{}\nstderr:\n{}", failed.stdout, failed.stderr);
        let said = format!("{}{}", failed.stdout, failed.stderr);
        assert!(said.contains("the row hashes kept for `people_sync` cannot be read: the stage"), "{said}");
        assert!(said.contains(dir) && said.contains(&named), "{named}: {said}");
        assert!(said.contains("--full-refresh") && !said.contains("bug"), "{said}");
        assert_eq!(db.rows("people_sync").await, before, "the table is as it was");
        assert_eq!(kept_hashes(&p), manifest, "the kept hashes are as they were");
    }
    ok(&p.run(["build", "-s", "people_sync", "--full-refresh"]));
    assert_eq!(counts(&p, "people_sync"), (3000, 0, 0, 0));
    assert!(db.rows("people_sync").await.iter().all(|r| r.contains("rome")));
}

async fn assert_kept_hashes_whole(kept: crate::object_stores::StageDir<'_>) {
    crate::object_stores::assert_one_version(kept, "people_sync", &["detection.json"]).await;
}

async fn on_sqlite(p: TestProject) {
    let db = Db::sqlite(&p);
    let p = with_models(p.file("profiles.yml", &db.profiles("").replace("PROFILE", "shop")));
    let refuse = "CREATE TRIGGER no_refused BEFORE UPDATE ON people_sync WHEN NEW.city = 'lima-refused' \
                  BEGIN SELECT RAISE(ABORT, 'refused'); END;";
    runs_in_step(db, p, (refuse, "DROP TRIGGER no_refused")).await;
}

#[test]
fn change_detection_is_refused_where_it_cannot_work() {
    let p = TestProject::new()
        .file("ferry.yml", "name: shop\n")
        .file("models/sources.yml", SOURCES)
        .model(
            "people_view.sql",
            "{{ config(materialized='view', change_detection={'key': 'id'}) }}\nselect * from {{ source('raw', 'people') }}",
        )
        .model(
            "people_nokey.sql",
            "{{ config(materialized='table', change_detection={'deletes': 'sometimes'}) }}\nselect * from {{ source('raw', 'people') }}",
        );
    export(&p, "id,name,city\n1,ann,paris\n");
    let ran = p.run(["build"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    for said in ["`change_detection` needs `materialized: table`", "`change_detection` needs a `key`"] {
        assert!(ran.stderr.contains(said), "{said}:\n{}", ran.stderr);
    }
}

/// A changed row that breaks a rule is quarantined, and keeps its kept
/// hash: the table keeps the previous version, and once the source is
/// fixed the next run finds the change again.
#[test]
fn a_quarantined_change_is_found_again_once_fixed() {
    quarantined_changes_found_again(TestProject::new().file("ferry.yml", "name: shop\n"));
}

/// The same with the stages, and so the kept row hashes, in an S3 bucket
/// (moto): the hashes corrected for the quarantined rows are kept there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_change_is_found_again_with_the_hashes_in_s3() {
    let Some((_server, port)) = crate::object_stores::stages_bucket() else { return };
    let p = TestProject::new().file("ferry.yml", "name: shop\n").stages_in_moto(port, "stages", "shop");
    let p = tokio::task::spawn_blocking(move || quarantined_changes_found_again(p)).await.unwrap();
    p.assert_stored_stages_whole(&["people_sync"]).await;
    assert_kept_hashes_whole((port, "stages", "shop/_ferry_hashes")).await;
}

fn quarantined_changes_found_again(p: TestProject) -> TestProject {
    let p = p
        .file("models/sources.yml", SOURCES)
        .file(
            "models/schema.yml",
            "version: 2\nmodels:\n  - name: people_sync\n    columns:\n      - name: city\n        rules:\n          - not_null\n",
        )
        .model(
            "people_sync.sql",
            "{{ config(materialized='table', change_detection={'key': 'id'}) }}\nselect * from {{ source('raw', 'people') }}",
        );
    export(&p, "id,name,city\n1,ann,paris\n2,bob,rome\n");
    ok(&p.run(["build"]));
    export(&p, "id,name,city\n1,ann,\n2,bob,milan\n3,cy,\n");
    let ran = p.run(["build"]);
    ok(&ran);
    assert!(ran.stderr.contains("2 quarantined"), "{}", ran.stderr);
    assert_eq!(counts(&p, "people_sync"), (1, 2, 0, 0));
    // Unchanged source: the quarantined update and insert are found again.
    let again = p.run(["build"]);
    ok(&again);
    assert_eq!(counts(&p, "people_sync"), (1, 1, 1, 0), "{}", again.stderr);
    export(&p, "id,name,city\n1,ann,lyon\n2,bob,milan\n3,cy,oslo\n");
    ok(&p.run(["build"]));
    assert_eq!(counts(&p, "people_sync"), (1, 1, 1, 0));
    ok(&p.run(["build"]));
    assert_eq!(counts(&p, "people_sync"), (0, 0, 3, 0));
    p
}

/// A value in a changed row that does not convert is quarantined with the
/// row, not the model: the other changes load, and the row is tried again.
#[test]
fn a_conversion_that_fails_in_a_changed_row_quarantines_the_row() {
    let p = TestProject::new().file("ferry.yml", "name: shop\n").file(
        "models/sources.yml",
        "sources:\n  - name: raw\n    tables:\n      - name: scores\n        path: data/scores.csv\n        \
         columns:\n          - {name: id, data_type: bigint}\n          - {name: score, data_type: varchar}\n",
    );
    let p = p.model(
        "scores_sync.sql",
        "{{ config(materialized='table', change_detection={'key': 'id'}) }}\n\
         select id, cast(score as int) as score from {{ source('raw', 'scores') }}",
    );
    let export = |text: &str| {
        fs_err::create_dir_all(p.path().join("data")).expect("data/");
        fs_err::write(p.path().join("data/scores.csv"), text).expect("write the export");
    };
    let counts = |p: &TestProject| counts(p, "scores_sync");
    export("id,score\n1,10\n2,20\n");
    ok(&p.run(["build"]));
    export("id,score\n1,ten\n2,21\n");
    let ran = p.run(["build"]);
    ok(&ran);
    assert!(ran.stderr.contains("1 quarantined"), "{}", ran.stderr);
    assert_eq!(counts(&p), (0, 2, 0, 0));
    let again = p.run(["build"]);
    ok(&again);
    assert_eq!(counts(&p), (0, 1, 1, 0), "the bad row is found again: {}", again.stderr);
    // The target keeps the row's last good version.
    let db = rusqlite::Connection::open(p.path().join(".ferry/ferry.db").as_std_path()).expect("open the target");
    let mut stmt = db.prepare("SELECT id, score FROM scores_sync ORDER BY id").expect("prepare");
    let rows: Vec<(i64, i64)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).expect("query").map(|r| r.expect("row")).collect();
    assert_eq!(rows, [(1, 10), (2, 21)]);
}
