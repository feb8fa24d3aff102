//! The run history: three builds of a changing export are each recorded
//! per node and per rule, `ferry history` shows the volumes, the change
//! from the run before and flags a rule whose failures doubled, and
//! `history.keep_runs` removes old runs' files but never their records.

use crate::common::TestProject;
use crate::load::ok;

const SCHEMA: &str = "version: 2
sources:
  - name: raw
    tables:
      - name: people
        path: data/people.csv
models:
  - name: people
    columns:
      - name: email
        rules:
          - not_null
";

fn project() -> TestProject {
    TestProject::new()
        .file("ferry.yml", "name: shop\nhistory:\n  keep_runs: 2\n")
        .file("models/schema.yml", SCHEMA)
        .model("people.sql", "{{ config(materialized='table') }}\nselect id, email from {{ source('raw', 'people') }}")
}

fn export(p: &TestProject, rows: &str) {
    fs_err::create_dir_all(p.path().join("data")).expect("data/");
    fs_err::write(p.path().join("data/people.csv"), format!("id,email\n{rows}")).expect("write the export");
}

/// `ferry history --format json`: its lines as JSON values, nodes then rules.
fn history(p: &TestProject, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["history", "--format", "json"];
    all.extend_from_slice(args);
    let ran = p.run(all);
    ok(&ran);
    ran.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

#[test]
fn every_run_is_recorded_and_a_rule_whose_failures_doubled_is_flagged() {
    let p = project();
    export(&p, "1,a@x\n2,\n3,c@x\n4,d@x\n");
    ok(&p.run(["build"]));
    export(&p, "1,a@x\n2,\n3,\n4,d@x\n5,e@x\n");
    ok(&p.run(["build"]));
    export(&p, "1,a@x\n2,\n3,\n4,d@x\n5,e@x\n6,f@x\n");
    let third = p.run(["build"]);
    ok(&third);
    assert!(
        third.stderr.contains("history.keep_runs is 2: removed the quarantine and error files of 1 older run"),
        "{}",
        third.stderr
    );
    let runs = fs_err::read_dir(p.path().join(".ferry/runs")).expect("runs").count();
    assert_eq!(runs, 2, "two runs' files are kept");

    let lines = history(&p, &[]);
    let nodes: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("staged").is_some()).collect();
    let rules: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("rule").is_some()).collect();
    assert_eq!(nodes.len(), 3, "one record per run, the removed run's too: {lines:?}");
    let staged: Vec<u64> = nodes.iter().map(|n| n["staged"].as_u64().unwrap_or(99)).collect();
    assert_eq!(staged, [3, 3, 4]);
    assert_eq!(nodes[0]["produced"], 4);
    assert_eq!(nodes[0]["quarantined"], 1);
    assert_eq!(nodes[0]["error_pct"], 25.0);
    assert!(nodes[0].get("staged_change").is_none(), "the first run has no run before: {}", nodes[0]);
    assert_eq!((nodes[1]["staged_change"].as_i64(), nodes[2]["staged_change"].as_i64()), (Some(0), Some(1)));
    assert!(nodes.iter().all(|n| n["command"] == "build" && n["node"] == "model.shop.people"), "{nodes:?}");
    assert!(nodes.iter().all(|n| n["reconcile"] == "pass"), "{nodes:?}");

    let not_null: Vec<(u64, Option<&str>)> =
        rules.iter().map(|r| (r["failures"].as_u64().unwrap_or(99), r["flag"].as_str())).collect();
    assert_eq!(not_null, [(1, None), (2, Some("doubled")), (2, None)], "{rules:?}");

    // --last and --model narrow it.
    let last = history(&p, &["--last", "1"]);
    assert_eq!(last.iter().filter(|l| l.get("staged").is_some()).count(), 1, "{last:?}");
    assert!(history(&p, &["--model", "nothing"]).is_empty());
    let human = p.run(["history", "--model", "people"]);
    ok(&human);
    assert!(human.stdout.contains("| doubled |"), "{}", human.stdout);
}

#[test]
fn keep_runs_of_zero_is_refused() {
    let p = project().file("ferry.yml", "name: shop\nhistory:\n  keep_runs: 0\n");
    let ran = p.run(["compile"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("`history.keep_runs` is 0"), "{}", ran.stderr);
}

/// `ferry clean --runs older-than 7d` removes the runs and audits last
/// written more than a week ago and says which; the history keeps their
/// records; an age it cannot read is refused.
#[test]
fn clean_removes_old_runs_and_audits_but_not_their_history() {
    let p = TestProject::new()
        .file("models/schema.yml", SCHEMA)
        .model("people.sql", "{{ config(materialized='table') }}\nselect id, email from {{ source('raw', 'people') }}");
    export(&p, "1,a@x\n2,\n");
    ok(&p.run(["build"]));
    ok(&p.run(["audit"]));
    ok(&p.run(["build"]));
    let ids = |dir: &str| -> Vec<String> {
        let mut ids: Vec<String> = fs_err::read_dir(p.path().join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        ids.sort();
        ids
    };
    let (runs, audits) = (ids(".ferry/runs"), ids(".ferry/audit"));
    assert_eq!((runs.len(), audits.len()), (2, 1));
    // The earlier run and the audit, ten days old.
    let latest = p.run_results()["metadata"]["invocation_id"].as_str().unwrap().to_owned();
    let old = runs.iter().find(|r| **r != latest).unwrap().clone();
    for dir in [format!(".ferry/runs/{old}"), format!(".ferry/audit/{}", audits[0])] {
        let touched = std::process::Command::new("touch").args(["-d", "10 days ago"]).arg(p.path().join(dir)).status();
        assert!(touched.unwrap().success());
    }

    let ran = p.run(["clean", "--runs", "older-than", "7d"]);
    ok(&ran);
    assert!(ran.stderr.contains(&format!("removed 1 run older than 7d from `.ferry/runs/`: {old}")), "{}", ran.stderr);
    assert!(ran.stderr.contains(&format!("removed 1 audit older than 7d from `.ferry/audit/`: {}", audits[0])));
    assert_eq!(ids(".ferry/runs"), [latest]);
    assert!(ids(".ferry/audit").is_empty());
    let nodes = history(&p, &[]).into_iter().filter(|l| l.get("staged").is_some()).count();
    assert_eq!(nodes, 2, "the history keeps both runs");

    let again = p.run(["clean", "--runs", "older-than", "7d"]);
    ok(&again);
    assert!(again.stderr.contains("no run under `.ferry/runs/` is older than 7d"), "{}", again.stderr);
    let refused = p.run(["clean", "--runs", "newer-than", "7d"]);
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(refused.stderr.contains("write `--runs older-than AGE`"), "{}", refused.stderr);
}
