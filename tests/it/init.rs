//! `ferry init` makes a project that compiles.

use crate::common::ferry_command;

#[test]
fn init_scaffolds_a_project_that_compiles() {
    let dir = tempfile::tempdir().expect("tmp");
    let project = dir.path().join("New Shop");
    let out = ferry_command().current_dir(dir.path()).args(["init", "New Shop"]).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(fs_err::read_to_string(project.join("ferry.yml")).expect("ferry.yml").starts_with("name: new_shop\n"));
    let out = ferry_command().current_dir(&project).env("HOME", dir.path()).arg("compile").output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("compiled 2 models"));
    let again = ferry_command().current_dir(dir.path()).args(["init", "New Shop"]).output().expect("run");
    assert_eq!(again.status.code(), Some(1), "refuses to overwrite a project, as a user error");
    assert!(String::from_utf8_lossy(&again.stderr).contains("ferry.yml` already exists"));
    let nameless = ferry_command().current_dir(dir.path()).args(["init", "/"]).output().expect("run");
    assert_eq!(nameless.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&nameless.stderr).contains("pass `--name`"));
}
