//! Conformance: dbt-utils' own integration tests (dbt-utils 1.4.1 as
//! published, `../shared/dbt/dbt-utils`), built by ferry unchanged:
//! `ferry deps` installs the package (`local: ../`), then `ferry build`
//! seeds, runs and tests the project on DataFusion.
//!
//! Every node's outcome must be the one that
//! `tests/fixtures/dbt_utils_outcomes.txt` lists; each node there that does
//! not pass carries the reason. A node that passed and now fails is a
//! regression; one that now passes but is listed as failing means the list
//! is stale (regenerate it with `scripts/dbt_utils_outcomes.py`).

use std::collections::BTreeMap;

use camino::Utf8PathBuf;

use crate::common::{copy_dir, ferry_command};

/// Where dbt-utils is: `FERRY_DBT_UTILS`, else the workplace's shared copy.
fn dbt_utils() -> Option<Utf8PathBuf> {
    let candidates = [
        std::env::var("FERRY_DBT_UTILS").ok().map(Utf8PathBuf::from),
        Some(Utf8PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/dbt/dbt-utils")),
        Some(Utf8PathBuf::from("/work/shared/dbt/dbt-utils")),
    ];
    candidates.into_iter().flatten().find(|p| p.join("integration_tests/dbt_project.yml").is_file())
}

#[test]
fn dbt_utils_integration_tests_build_as_listed() {
    let Some(source) = dbt_utils() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("dbt-utils is missing: set FERRY_DBT_UTILS to a copy of ../shared/dbt/dbt-utils");
        }
        eprintln!("skipped: dbt-utils not found (FERRY_DBT_UTILS)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = Utf8PathBuf::try_from(tmp.path().join("dbt-utils")).unwrap();
    copy_dir(source.as_std_path(), root.as_std_path());
    let project = root.join("integration_tests");
    std::fs::write(
        project.join("profiles.yml"),
        "integration_tests:\n  target: t\n  outputs:\n    t:\n      type: sqlite\n      path: .ferry/ferry.db\n",
    )
    .unwrap();
    let ferry = |args: &[&str]| {
        let out = ferry_command().current_dir(&project).env("HOME", tmp.path()).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, stderr) = ferry(&["deps"]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = ferry(&["build", "--no-load"]);
    assert!(code == Some(0) || code == Some(1), "{stderr}");

    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(project.join(".ferry/run_results.json")).unwrap()).unwrap();
    let got: BTreeMap<String, String> = results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["unique_id"].as_str().unwrap().to_owned(), r["status"].as_str().unwrap().to_owned()))
        .collect();
    let listed = include_str!("../fixtures/dbt_utils_outcomes.txt");
    let want: BTreeMap<String, String> = listed
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((parts.nth(1)?.to_owned(), l.split_whitespace().next()?.to_owned()))
        })
        .collect();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for status in got.values() {
        *counts.entry(status).or_default() += 1;
    }
    eprintln!("dbt-utils integration tests under ferry: {} nodes, {counts:?}", got.len());
    let mut wrong = Vec::new();
    for (id, status) in &got {
        match want.get(id) {
            Some(w) if w == status => {}
            Some(w) => wrong.push(format!("{id}: {status}, listed as {w}")),
            None => wrong.push(format!("{id}: {status}, not listed")),
        }
    }
    for id in want.keys().filter(|id| !got.contains_key(*id)) {
        wrong.push(format!("{id}: listed, but no such node ran"));
    }
    assert!(
        wrong.is_empty(),
        "outcomes differ from tests/fixtures/dbt_utils_outcomes.txt:\n{}\n{stderr}",
        wrong.join("\n")
    );
}
