//! `ferry compile` on working projects: rendering, planning, artifacts.

use insta_cmd::assert_cmd_snapshot;

use crate::common::TestProject;

#[test]
fn jaffle_shop_compiles_unchanged() {
    let project = TestProject::fixture("jaffle_shop");
    let settings = crate::common::settings(&project);
    settings.bind(|| {
        assert_cmd_snapshot!(project.ferry(["compile"]), @r"
    success: true
    exit_code: 0
    ----- stdout -----

    ----- stderr -----
    compiled 5 models and 20 tests in [TIME]
    ")
    });
    let test = project
        .read(".ferry/compiled/models/schema.yml/relationships_orders_customer_id__customer_id__ref_customers_.sql");
    assert!(test.contains("from \"orders\" as child"), "generic tests compile like dbt's: {test}");
    let orders = project.read(".ferry/compiled/models/orders.sql");
    assert!(
        orders.contains("sum(case when payment_method = 'gift_card' then amount else 0 end) as gift_card_amount,"),
        "{orders}"
    );
    assert!(orders.contains("from \"stg_orders\""), "{orders}");
}

#[test]
fn manifest_records_dependencies_and_planned_schemas() {
    let project = TestProject::fixture("jaffle_shop");
    assert!(project.ferry(["compile"]).status().expect("run").success());
    let m = project.manifest();
    let customers = &m["nodes"]["model.jaffle_shop.customers"];
    let mut deps: Vec<&str> =
        customers["depends_on"]["nodes"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    deps.sort_unstable();
    assert_eq!(
        deps,
        ["model.jaffle_shop.stg_customers", "model.jaffle_shop.stg_orders", "model.jaffle_shop.stg_payments"]
    );
    assert_eq!(customers["materialized"], "table");
    let columns: Vec<(&str, &str)> = customers["output_schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["data_type"].as_str().unwrap()))
        .collect();
    assert_eq!(columns[0], ("customer_id", "Int64"));
    assert_eq!(columns[6].0, "customer_lifetime_value");
    assert_eq!(m["nodes"]["model.jaffle_shop.stg_orders"]["materialized"], "view");
    let status_test = &m["nodes"]["test.jaffle_shop.relationships_orders_customer_id__customer_id__ref_customers_"];
    let mut test_deps: Vec<&str> =
        status_test["depends_on"]["nodes"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    test_deps.sort_unstable();
    assert_eq!(
        test_deps,
        ["model.jaffle_shop.customers", "model.jaffle_shop.orders"],
        "relationships depends on both models"
    );
}

#[test]
fn downstream_models_see_upstream_schemas() {
    let project = TestProject::new()
        .model("a.sql", "select cast(1 as bigint) as id, 'x' as name")
        .model("b.sql", "select id * 2 as doubled, upper(name) as name from {{ ref('a') }}")
        .model("c.sql", "select doubled + 1 as n from {{ ref('b') }}");
    assert!(project.ferry(["compile"]).status().expect("run").success());
    let m = project.manifest();
    assert_eq!(m["nodes"]["model.shop.c"]["output_schema"][0]["data_type"], "Int64");
}

#[test]
fn dependencies_come_from_calls_made_not_text() {
    let project = TestProject::new()
        .model("a.sql", "select 1 as id")
        .model("b.sql", "select 2 as id")
        .model("c.sql", "-- {{ '{{' }} ref('b') {{ '}}' }} is only text\n{% if false %}{{ ref('b') }}{% endif %}select * from {{ ref('a') }}");
    assert!(project.ferry(["compile"]).status().expect("run").success());
    let m = project.manifest();
    assert_eq!(m["nodes"]["model.shop.c"]["depends_on"]["nodes"], serde_json::json!(["model.shop.a"]));
}

#[test]
fn sources_with_files_and_typed_columns_plan() {
    let project = TestProject::new()
        .file("data/customers.csv", "id,name,signed_up\n1,Ann,2024-01-02\n2,Bo,2024-02-03\n")
        .file(
            "models/sources.yml",
            "version: 2\nsources:\n  - name: crm\n    tables:\n      - name: customers\n        path: data/customers.csv\n        columns:\n          - name: id\n            data_type: int\n      - name: accounts\n        columns:\n          - name: account_id\n            data_type: varchar(20)\n",
        )
        .model(
            "stg.sql",
            "select c.id, c.name, a.account_id from {{ source('crm', 'customers') }} c cross join {{ source('crm', 'accounts') }} a",
        );
    let out = project.ferry(["compile"]).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m = project.manifest();
    let schema = &m["nodes"]["model.shop.stg"]["output_schema"];
    assert_eq!(schema[0]["data_type"], "Int32", "declared data_type overrides the inferred one");
    assert_eq!(schema[2]["data_type"], "Utf8View", "DataFusion 55 plans varchar as Utf8View");
}

#[test]
fn macros_vars_and_config_apply() {
    let project = TestProject::new()
        .file("ferry.yml", "name: shop\nvars:\n  currency: EUR\nmodels:\n  shop:\n    marts:\n      +materialized: table\n      +tags: [nightly]\n")
        .file("macros/money.sql", "{% macro to_amount(col) %}({{ col }} / 100.0){% endmacro %}")
        .model("marts/orders.sql", "{{ config(tags=['finance']) }}select {{ to_amount('1234') }} as amount, '{{ var('currency') }}' as currency")
        .model("other.sql", "select 1 as x");
    assert!(project.ferry(["compile"]).status().expect("run").success());
    let m = project.manifest();
    let orders = &m["nodes"]["model.shop.orders"];
    assert_eq!(orders["materialized"], "table");
    assert_eq!(orders["tags"], serde_json::json!(["nightly", "finance"]));
    assert_eq!(orders["compiled_code"], "select (1234 / 100.0) as amount, 'EUR' as currency");
    let out = project.ferry(["compile", "--vars", "{currency: USD}", "-s", "orders"]).output().expect("run");
    assert!(out.status.success());
    assert!(project.read(".ferry/compiled/models/marts/orders.sql").contains("'USD'"));
}

#[test]
fn ephemeral_and_incremental_models_plan() {
    let project = TestProject::new()
        .model("eph.sql", "{{ config(materialized='ephemeral') }}select 1 as id")
        .model("inc.sql", "{{ config(materialized='incremental', unique_key='id') }}select id from {{ ref('eph') }}{% if is_incremental() %} where id > 0{% endif %}");
    assert!(project.ferry(["compile"]).status().expect("run").success());
}

#[test]
fn a_project_with_only_dbt_project_yml_is_a_project() {
    let project = TestProject::fixture("jaffle_shop");
    let out = crate::common::ferry_command()
        .args(["compile", "--project-dir"])
        .arg(project.path().join("models").as_str())
        .env("HOME", project.path().as_str())
        .output()
        .expect("run");
    assert!(out.status.success(), "found from a subdirectory: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn no_project_is_a_ferry_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = crate::common::ferry_command().current_dir(dir.path()).arg("compile").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no `ferry.yml` or `dbt_project.yml` found"));
}

#[test]
fn descriptions_resolve_docs_blocks_and_logs_show() {
    let project = TestProject::fixture("jaffle_shop");
    assert!(project.ferry(["compile"]).status().expect("run").success());
    let m = project.manifest();
    let status = &m["nodes"]["model.jaffle_shop.orders"]["columns"][3];
    assert_eq!(status["name"], "status");
    assert!(status["description"].as_str().unwrap().starts_with("Orders can be one of the following statuses:"));

    let p = TestProject::new()
        .model("m.sql", "{{ log('hello from m', info=True) }}{{ exceptions.warn('careful') }}select 1 as x")
        .file("models/s.yml", "version: 2\nmodels:\n  - name: m\n    description: '{{ doc(\"nope\") }}'\n");
    let out = p.ferry(["compile"]).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("m: hello from m"), "{err}");
    assert!(err.contains("warning[F0102]: careful"), "{err}");
    assert!(err.contains("in the description of `m`: no docs block named `nope`"), "{err}");
    assert!(err.contains("--> models/s.yml:3:5"), "{err}");
    assert_eq!(out.status.code(), Some(1));
}
