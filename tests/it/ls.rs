//! `ferry ls`: selection syntax on a real project.

use crate::common::TestProject;

fn ls(project: &TestProject, args: &[&str]) -> Vec<String> {
    let out = project.ferry(["ls"].iter().chain(args)).output().expect("run ferry");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8").lines().map(str::to_owned).collect()
}

#[test]
fn selection_syntax_on_jaffle_shop() {
    let p = TestProject::fixture("jaffle_shop");
    let models = ["--resource-type", "model", "seed", "--output", "name"];
    let sel = |s: &str| {
        let mut args = vec!["-s", s];
        args.extend(models);
        ls(&p, &args)
    };
    assert_eq!(sel("orders"), ["orders"]);
    assert_eq!(sel("+orders"), ["orders", "raw_orders", "raw_payments", "stg_orders", "stg_payments"]);
    assert_eq!(sel("1+orders"), ["orders", "stg_orders", "stg_payments"]);
    assert_eq!(sel("stg_orders+"), ["customers", "orders", "stg_orders"]);
    assert_eq!(sel("stg_orders+1"), ["customers", "orders", "stg_orders"]);
    assert_eq!(
        sel("@stg_customers"),
        ["customers", "raw_customers", "raw_orders", "raw_payments", "stg_customers", "stg_orders", "stg_payments"]
    );
    assert_eq!(sel("path:models/staging"), ["stg_customers", "stg_orders", "stg_payments"]);
    assert_eq!(sel("config.materialized:view"), ["stg_customers", "stg_orders", "stg_payments"]);
    assert_eq!(sel("stg_*"), ["stg_customers", "stg_orders", "stg_payments"]);
    assert_eq!(sel("stg_orders customers"), ["customers", "stg_orders"]);
    assert_eq!(sel("path:models/staging,stg_*s"), ["stg_customers", "stg_orders", "stg_payments"]);
    assert_eq!(sel("config.materialized:table,+orders"), ["orders"]);
}

#[test]
fn exclude_and_indirect_tests() {
    let p = TestProject::fixture("jaffle_shop");
    let out = ls(&p, &["-s", "stg_orders", "--exclude", "test_name:accepted_values", "--output", "name"]);
    assert_eq!(out, ["not_null_stg_orders_order_id", "stg_orders", "unique_stg_orders_order_id"]);
}

#[test]
fn default_output_is_dbt_selector_form() {
    let p = TestProject::new()
        .file("models/src.yml", "version: 2\nsources:\n  - name: crm\n    tables:\n      - name: customers\n")
        .model("staging/stg.sql", "select * from {{ source('crm', 'customers') }}")
        .model("report.sql", "select * from {{ ref('stg') }}");
    assert_eq!(ls(&p, &["-s", "source:crm+"]), ["shop.report", "shop.staging.stg", "source:shop.crm.customers"]);
    let json = ls(&p, &["-s", "report", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json[0]).expect("json");
    assert_eq!(v["unique_id"], "model.shop.report");
}

#[test]
fn tags_and_an_unknown_selector_method() {
    let p = TestProject::new()
        .file("ferry.yml", "name: shop\nmodels:\n  shop:\n    marts:\n      +tags: [nightly]\n")
        .model("marts/a.sql", "select 1 as x")
        .model("b.sql", "select 1 as x");
    assert_eq!(ls(&p, &["-s", "tag:nightly", "--output", "name"]), ["a"]);
    let out = p.ferry(["ls", "-s", "colour:red"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown method `colour`"));
}

#[test]
fn a_selection_that_matches_nothing_warns_and_a_mistyped_name_fails() {
    let p = TestProject::new()
        .file("ferry.yml", "name: shop\nmodels:\n  shop:\n    +materialized: table\n")
        .model("orders.sql", "select 1 as id")
        .model("customers.sql", "select 2 as id");
    // A tag nothing carries yet: dbt's warning, and nothing runs.
    let tag = p.run(["build", "-s", "tag:nightly"]);
    assert_eq!(tag.code, Some(0), "{}", tag.stderr);
    assert!(tag.stderr.contains("`--select tag:nightly` matches no node"), "{}", tag.stderr);
    assert!(tag.stderr.contains("the selection picks no node: nothing to do"), "{}", tag.stderr);
    // ...an error when asked.
    let strict = p.run(["build", "-s", "tag:nightly", "--fail-on-empty-selection"]);
    assert_eq!(strict.code, Some(1), "{}", strict.stderr);
    assert!(strict.stderr.contains("the selection picks no node"), "{}", strict.stderr);
    assert!(!p.path().join(".ferry/stage").exists(), "{}", strict.stderr);
    // A name that matches no node is a typo: an error with the closest name,
    // even beside a name that matches.
    for args in [&["build", "-s", "ordres"][..], &["build", "-s", "customers", "+ordres"], &["ls", "-s", "ordres"]] {
        let typo = p.run(args.iter().copied());
        assert_eq!(typo.code, Some(1), "{args:?}: {}", typo.stderr);
        assert!(typo.stderr.contains("matches no node"), "{}", typo.stderr);
        assert!(typo.stderr.contains("did you mean `orders`?"), "{}", typo.stderr);
    }
    let unknown = p.run(["build", "-s", "zzz"]);
    assert_eq!(unknown.code, Some(1), "{}", unknown.stderr);
    assert!(unknown.stderr.contains("`ferry ls` lists them"), "{}", unknown.stderr);
    // An exclusion that matches nothing only warns.
    let exclude = p.run(["build", "--exclude", "ordres"]);
    assert_eq!(exclude.code, Some(0), "{}", exclude.stderr);
    assert!(exclude.stderr.contains("`--exclude ordres` matches no node"), "{}", exclude.stderr);
}
