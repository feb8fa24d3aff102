//! One run at a time: a second `ferry build` on a project that a first one
//! is still loading stops at once naming the first, or with `--wait` waits
//! for it and then runs; a killed run leaves no lock behind.

use std::process::Stdio;
use std::time::Duration;

use crate::load::{Db, ok, project_for, until_a_load_waits};

#[tokio::test]
async fn postgres_a_second_run_stops_or_waits_while_the_first_holds_the_project() {
    let Some(mut db) = Db::pg("lock").await else { return };
    let s = db.schema().to_owned();
    let p = project_for(&db, None, "").model("numbers.sql", "{{ config(materialized='table') }}\nselect 1 as n");
    ok(&p.run(["build"]));

    // Another session holds the table: the next run's load waits for it,
    // holding the project.
    let locker = db.pg_session().await;
    let hold_sql = format!("BEGIN; LOCK TABLE \"{s}\".numbers IN ACCESS EXCLUSIVE MODE");
    let hold = || locker.batch_execute(&hold_sql);
    hold().await.expect("lock the table");
    let mut first = p.ferry(["build"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("ferry starts");
    until_a_load_waits(&locker, &mut first).await;

    let second = p.run(["build"]);
    assert_eq!(second.code, Some(1), "{}", second.stderr);
    let holder = format!("`ferry build`, process {} on ", first.id());
    assert!(second.stderr.contains("another ferry run is working on this project"), "{}", second.stderr);
    assert!(second.stderr.contains(&holder), "names the first run: {}", second.stderr);
    assert!(second.stderr.contains("--wait"), "{}", second.stderr);

    // With --wait the second starts once the first has ended.
    let waiting = p.ferry(["build", "--wait"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("starts");
    tokio::time::sleep(Duration::from_millis(600)).await;
    locker.batch_execute("ROLLBACK").await.expect("release the table");
    let first = first.wait_with_output().expect("the first run");
    assert_eq!(first.status.code(), Some(0), "{}", String::from_utf8_lossy(&first.stderr));
    let waited = waiting.wait_with_output().expect("the waiting run");
    let said = String::from_utf8_lossy(&waited.stderr);
    assert_eq!(waited.status.code(), Some(0), "{said}");
    assert!(said.contains("waiting for `ferry build`, process "), "{said}");
    assert_eq!(db.rows("numbers").await, ["{\"n\":1}"]);

    // A run killed while it holds the project leaves no lock behind.
    hold().await.expect("lock the table again");
    let mut killed = p.ferry(["build"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("ferry starts");
    until_a_load_waits(&locker, &mut killed).await;
    killed.kill().expect("kill the run");
    killed.wait().expect("the run is gone");
    locker.batch_execute("ROLLBACK").await.expect("release the table");
    ok(&p.run(["build"]));
    db.drop_schema().await;
}
