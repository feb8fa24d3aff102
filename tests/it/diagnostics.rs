//! Every kind of bad input gets a diagnostic that names the file and, where
//! it can, the line and column with a caret. One fixture project per case
//! under `tests/fixtures/projects/errors/`, snapshotted.

use insta_cmd::assert_cmd_snapshot;

use crate::common::TestProject;

#[test]
fn each_broken_project_gets_a_diagnostic() {
    insta::glob!("../fixtures/projects/errors", "*/ferry.yml", |path| {
        let case = path.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()).expect("case name");
        let project = TestProject::fixture(&format!("errors/{case}"));
        let settings = crate::common::settings(&project);
        settings.bind(|| assert_cmd_snapshot!(case, project.ferry(["compile"])));
    });
}

#[test]
fn json_format_prints_one_object_per_diagnostic() {
    let project = TestProject::fixture("errors/unknown_column");
    let out = project.ferry(["compile", "--format", "json"]).output().expect("run ferry");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let objects: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    assert_eq!(objects.len(), 1, "{stdout}");
    let d = &objects[0];
    assert_eq!(d["code"], "F0302");
    assert_eq!(d["file"], "models/orders.sql");
    assert_eq!((d["line"].as_u64(), d["column"].as_u64()), (Some(2), Some(35)));
    assert_eq!(d["help"], "did you mean `amount`?");
}

#[test]
fn github_format_annotates_the_file() {
    let project = TestProject::fixture("errors/missing_ref");
    let out = project.ferry(["compile", "--format", "github"]).output().expect("run ferry");
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    assert!(stderr.contains("::error title=F0201,file=models/orders.sql,line=2,col=9::"), "{stderr}");
}

#[test]
fn a_column_after_non_ascii_text_gets_the_right_caret() {
    let project = TestProject::new()
        .model("base.sql", "select 1 as id")
        .model("m.sql", "select 'héllo wörld' as grüße, nope\nfrom {{ ref('base') }}\n");
    let out = project.ferry(["compile", "--format", "json"]).output().expect("run ferry");
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one diagnostic");
    // `nope` starts at character 32 of line 1, though at byte 36.
    assert_eq!((d["line"].as_u64(), d["column"].as_u64(), d["end_column"].as_u64()), (Some(1), Some(32), Some(36)));
}

/// Jinja-generated chains: 100,000 `or` terms plan (balanced), long `or`
/// and `+` chains run, and a `+` chain past the depth limit is a diagnostic
/// with its place, never a stack overflow.
#[test]
fn long_generated_chains_plan_and_a_chain_too_deep_is_a_diagnostic() {
    let ors = |n: u32| {
        format!(
            "select * from (select {} as x) t\nwhere {{% for i in range({n}) %}}{{{{ ' or ' if not loop.first }}}}x = {{{{ i }}}}{{% endfor %}}\n",
            n - 1
        )
    };
    let p = TestProject::new()
        .file("ferry.yml", "name: shop\nmodels:\n  shop:\n    +materialized: table\n")
        .model("ors.sql", &ors(3000))
        .model("sums.sql", "select {% for i in range(1000) %}{{ ' + ' if not loop.first }}{{ i }}{% endfor %} as s\n");
    let ran = p.run(["run"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let conn = rusqlite::Connection::open(p.path().join(".ferry/ferry.db").as_std_path()).expect("open");
    let one = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).expect(sql);
    assert_eq!(one("SELECT x FROM ors"), 2_999);
    assert_eq!(one("SELECT s FROM sums"), 499_500);
    let long = p.model("ors.sql", &ors(100_000)).run(["compile", "-s", "ors"]);
    assert_eq!(long.code, Some(0), "{}", long.stderr);
    let deep = TestProject::new()
        .model("deep.sql", "select\n  {% for i in range(100000) %}{{ ' + ' if not loop.first }}1{% endfor %} as s\n");
    let ran = deep.run(["compile"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("an expression nests more than 5000 levels deep (a chain of `+`)"), "{}", ran.stderr);
    assert!(ran.stderr.contains("deep.sql:2:"), "{}", ran.stderr);
    assert!(!ran.stderr.contains("overflow"), "{}", ran.stderr);
}
