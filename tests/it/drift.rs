//! Schema drift: a source whose columns change between runs is reported
//! (renamed, new, gone and retyped columns, with the file named), and its
//! `on_schema_drift` says whether the run goes on (`warn`, `evolve`) or
//! the models that read it stop (`fail`), until a run succeeds with the
//! new columns.

use crate::common::TestProject;
use crate::load::ok;

fn project(policy: Option<&str>) -> TestProject {
    let config = policy.map(|p| format!("        config:\n          on_schema_drift: {p}\n")).unwrap_or_default();
    TestProject::new()
        .file("ferry.yml", "name: shop\n")
        .file(
            "models/sources.yml",
            &format!(
                "sources:\n  - name: raw\n    tables:\n      - name: people\n        path: data/people.csv\n{config}"
            ),
        )
        .model("people.sql", "{{ config(materialized='table') }}\nselect * from {{ source('raw', 'people') }}")
}

fn export(p: &TestProject, text: &str) {
    fs_err::create_dir_all(p.path().join("data")).expect("data/");
    fs_err::write(p.path().join("data/people.csv"), text).expect("write the export");
}

#[test]
fn drift_is_reported_and_warn_goes_on() {
    let p = project(None);
    export(&p, "id,name,amount\n1,ann,10\n2,bob,20\n");
    let first = p.run(["build"]);
    ok(&first);
    assert!(!first.stderr.contains("changed since"), "{}", first.stderr);
    export(&p, "id,full_name,amount,note\n1,ann,10,x\n2,bob,20,y\n");
    let second = p.run(["build"]);
    ok(&second);
    for said in [
        "warning",
        "the columns of source `raw.people` (read from `data/people.csv`) changed since the last successful run",
        "`name` was renamed `full_name` (column 2)",
        "`note` (Utf8) is new, column 4",
        "on_schema_drift: fail",
    ] {
        assert!(second.stderr.contains(said), "{said}:\n{}", second.stderr);
    }
    // The run succeeded: its columns are the ones the next run is compared with.
    let third = p.run(["build"]);
    ok(&third);
    assert!(!third.stderr.contains("changed since"), "{}", third.stderr);
}

#[test]
fn fail_stops_the_readers_until_the_source_is_fixed_and_evolve_takes_it() {
    let p = project(Some("fail"));
    export(&p, "id,name,amount\n1,ann,10\n2,bob,20\n");
    ok(&p.run(["build"]));
    export(&p, "id,name,amount\n1,ann,ten\n2,bob,20\n");
    for _ in 0..2 {
        let ran = p.run(["build"]);
        assert_eq!(ran.code, Some(1), "{}", ran.stderr);
        assert!(ran.stderr.contains("error"), "{}", ran.stderr);
        assert!(ran.stderr.contains("`amount` was Int64, now Utf8"), "{}", ran.stderr);
        assert!(ran.stderr.contains("the models that read it did not run"), "{}", ran.stderr);
    }
    let p = p.file(
        "models/sources.yml",
        "sources:\n  - name: raw\n    tables:\n      - name: people\n        path: data/people.csv\n        config:\n          on_schema_drift: evolve\n",
    );
    let ran = p.run(["build"]);
    ok(&ran);
    assert!(ran.stderr.contains("taken, as `on_schema_drift: evolve` says"), "{}", ran.stderr);
    let rows = p.run(["show", "-s", "people", "--format", "json"]);
    assert!(rows.stdout.contains("\"amount\":\"ten\""), "{}", rows.stdout);
}

/// A column contract: declared `data_type`s keep the source's columns as
/// they are, and with `on_error: quarantine` a value that no longer fits
/// sets its row aside (dlt's `discard_row`) instead of failing the run or
/// drifting the schema.
#[test]
fn declared_types_with_on_error_quarantine_discard_rows_that_no_longer_fit() {
    let p = TestProject::new().file("ferry.yml", "name: shop\n").file(
        "models/sources.yml",
        "sources:\n  - name: raw\n    tables:\n      - name: people\n        path: data/people.csv\n        \
         on_error: quarantine\n        columns:\n          - {name: id, data_type: bigint}\n          \
         - {name: name, data_type: varchar}\n          - {name: amount, data_type: bigint}\n",
    );
    let p = p.model("people.sql", "{{ config(materialized='table') }}\nselect * from {{ source('raw', 'people') }}");
    export(&p, "id,name,amount\n1,ann,10\n2,bob,20\n");
    ok(&p.run(["build"]));
    export(&p, "id,name,amount\n1,ann,ten\n2,bob,20\n");
    let ran = p.run(["build"]);
    ok(&ran);
    assert!(!ran.stderr.contains("changed since"), "the declared columns did not drift: {}", ran.stderr);
    assert!(ran.stderr.contains("1 record(s) quarantined"), "{}", ran.stderr);
    assert!(ran.stderr.contains("1 rows staged"), "{}", ran.stderr);
}
