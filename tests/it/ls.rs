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
