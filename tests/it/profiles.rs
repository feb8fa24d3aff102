//! Profiles: dbt's `profiles.yml`, targets, and secrets that never print.

use crate::common::TestProject;

const PROFILES: &str = "shop:\n  target: dev\n  outputs:\n    dev:\n      type: postgres\n      host: 127.0.0.1\n      user: postgres\n      password: \"{{ env_var('FERRY_IT_PG_PASSWORD') }}\"\n      dbname: test\n      schema: analytics\n    local:\n      type: sqlite\n      path: local.db\n";

#[test]
fn debug_shows_the_target_without_its_password() {
    let p = TestProject::new().file("profiles.yml", PROFILES).model("m.sql", "select '{{ target.schema }}' as s");
    let out = p.ferry(["debug"]).env("FERRY_IT_PG_PASSWORD", "s3cr3t-value").output().expect("run");
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{all}");
    assert!(all.contains("target: dev (postgres), profile `shop`"), "{all}");
    assert!(all.contains("password: (set)"), "{all}");
    assert!(all.contains("connection: ok, PostgreSQL"), "debug tries the connection: {all}");
    assert!(!all.contains("s3cr3t-value"), "{all}");
    // A refused connection is an error naming the target, never the password.
    let p2 = TestProject::new()
        .file("profiles.yml", &PROFILES.replace("user: postgres", "user: ferry_no_such_role"))
        .model("m.sql", "select 1 as x");
    let out2 = p2.ferry(["debug"]).env("FERRY_IT_PG_PASSWORD", "s3cr3t-value").output().expect("run");
    let all2 = format!("{}{}", String::from_utf8_lossy(&out2.stdout), String::from_utf8_lossy(&out2.stderr));
    assert_eq!(out2.status.code(), Some(1), "{all2}");
    assert!(all2.contains("cannot connect to target `dev` (127.0.0.1:5432)"), "{all2}");
    assert!(all2.contains("ferry_no_such_role"), "the server's reason is shown: {all2}");
    assert!(!all2.contains("s3cr3t-value"), "{all2}");
    let out = p.ferry(["compile", "-vv"]).env("FERRY_IT_PG_PASSWORD", "s3cr3t-value").output().expect("run");
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("s3cr3t-value"));
    assert!(!p.read(".ferry/manifest.json").contains("s3cr3t-value"));
    assert!(p.read(".ferry/compiled/models/m.sql").contains("'analytics'"));
}

#[test]
fn target_flag_picks_an_output_and_unknown_targets_are_errors() {
    let p = TestProject::new().file("profiles.yml", PROFILES).model("m.sql", "select '{{ target.type }}' as t");
    let out = p.ferry(["debug", "--target", "local"]).output().expect("run");
    assert!(String::from_utf8_lossy(&out.stdout).contains("target: local (sqlite)"));
    let out = p.ferry(["debug", "--target", "lokal"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `local`?"));
}

#[test]
fn a_missing_env_var_in_a_profile_is_a_diagnostic() {
    let p = TestProject::new().file("profiles.yml", PROFILES).model("m.sql", "select 1 as x");
    let out = p.ferry(["debug"]).env_remove("FERRY_IT_PG_PASSWORD").output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("FERRY_IT_PG_PASSWORD"), "{err}");
    assert!(err.contains("profiles.yml:8"), "{err}");
}

#[test]
fn no_profiles_means_embedded_sqlite_under_dot_ferry() {
    let p = TestProject::new().model("m.sql", "select 1 as x");
    let out = p.ferry(["debug"]).output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("target: default (sqlite), no profiles.yml found"), "{stdout}");
    assert!(stdout.contains(".ferry/ferry.db"), "{stdout}");
}

#[test]
fn profiles_dir_flag_and_dbt_home_are_searched() {
    let p = TestProject::new()
        .file("elsewhere/profiles.yml", PROFILES)
        .file(".dbt/profiles.yml", "shop:\n  target: x\n  outputs:\n    x:\n      type: sqlite\n")
        .model("m.sql", "select 1 as x");
    let out = p.ferry(["debug", "--profiles-dir", "elsewhere"]).env("FERRY_IT_PG_PASSWORD", "p").output().expect("run");
    assert!(String::from_utf8_lossy(&out.stdout).contains("target: dev (postgres)"));
    let out = p.ferry(["debug"]).output().expect("run");
    assert!(String::from_utf8_lossy(&out.stdout).contains("target: x (sqlite)"), "HOME/.dbt/profiles.yml is found");
}

#[test]
fn a_named_profile_with_no_profiles_file_is_an_error_not_the_embedded_target() {
    let p = TestProject::new()
        .file("ferry.yml", "name: shop\nprofile: warehouse\n")
        .model("m.sql", "{{ config(materialized='table') }}\nselect 1 as x");
    for args in [&["build"][..], &["build", "--profiles-dir", "nowhere"], &["compile"]] {
        let ran = p.run(args.iter().copied());
        assert_eq!(ran.code, Some(1), "ferry {args:?}: {}", ran.stderr);
        assert!(
            ran.stderr.contains("the project names profile `warehouse`, but there is no profiles.yml"),
            "{}",
            ran.stderr
        );
        assert!(ran.stderr.contains("looked for profiles.yml in"), "{}", ran.stderr);
        assert!(!p.path().join(".ferry/ferry.db").exists(), "nothing was loaded: {}", ran.stderr);
    }
    let named_by_flag = TestProject::new().model("m.sql", "select 1 as x").run(["compile", "--profile", "warehouse"]);
    assert_eq!(named_by_flag.code, Some(1), "{}", named_by_flag.stderr);
    assert!(named_by_flag.stderr.contains("looked for profiles.yml in"), "{}", named_by_flag.stderr);
}
