//! dbt data tests: `ferry test`, and tests inside `ferry build`, over the
//! `tested` fixture, whose seed repeats two account ids, leaves an email
//! blank, and has accounts in countries the `countries` seed lacks.

use serde_json::Value as Json;

use crate::common::{TestProject, node_result};

fn result<'a>(results: &'a Json, unique_id: &str) -> &'a Json {
    node_result(results, unique_id).unwrap_or_else(|| panic!("no result for {unique_id}"))
}

/// `(status, failures)` of a test in `run_results.json`.
fn test_result(results: &Json, name: &str) -> (String, u64) {
    let r = result(results, &format!("test.tested.{name}"));
    (r["status"].as_str().unwrap().to_owned(), r["failures"].as_u64().unwrap())
}

fn loaded_tables(p: &TestProject) -> Vec<String> {
    let db = rusqlite::Connection::open(p.path().join(".ferry/ferry.db")).expect("target database");
    let mut stmt = db.prepare("select name from sqlite_master where type = 'table' order by name").unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

/// The stage manifest of the failing rows one test stored in this run.
fn stored_failures(p: &TestProject, test: &str) -> Option<Json> {
    let runs = p.path().join(".ferry/runs");
    let run = fs_err::read_dir(&runs)
        .ok()?
        .map(|e| e.unwrap().path())
        .max_by_key(|d| fs_err::metadata(d).and_then(|m| m.modified()).expect("mtime"))?;
    let manifest = run.join("test_failures").join(test).join("_ferry_stage.json");
    Some(serde_json::from_str(&fs_err::read_to_string(manifest).ok()?).expect("stage manifest"))
}

/// In `build`, each test runs right after its model, with dbt's severity,
/// thresholds, `where` and `limit`; an error-severity failure skips the
/// model's descendants and keeps the model out of the target, while the
/// independent branch finishes and loads.
#[test]
fn build_tests_each_model_and_a_failing_test_holds_back_what_depends_on_it() {
    let p = TestProject::fixture("tested");
    let ran = p.run(["build"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    let results = p.run_results();
    // ids 2 and 6 repeat: two failing groups.
    assert_eq!(test_result(&results, "unique_accounts_id"), ("fail".into(), 2));
    assert_eq!(test_result(&results, "not_null_accounts_id"), ("pass".into(), 0));
    // `severity: warn`: one blank email warns, never fails.
    assert_eq!(test_result(&results, "not_null_accounts_email"), ("warn".into(), 1));
    // `where: country_code is not null` leaves out `pending` (no country);
    // `frozen` is one result: over `warn_if: >0`, not over `error_if: >5`.
    assert_eq!(test_result(&results, "accepted_values_accounts_status__active__closed"), ("warn".into(), 1));
    // XX once and US twice are not in `countries`.
    assert_eq!(test_result(&results, "relationships_accounts_country_code__code__ref_countries_"), ("warn".into(), 3));
    // Two negative balances, but `limit: 1` counts one: under `error_if: >1`.
    assert_eq!(test_result(&results, "is_not_negative_accounts_balance"), ("warn".into(), 1));
    assert_eq!(test_result(&results, "countries_have_names"), ("pass".into(), 0));

    let balances = result(&results, "model.tested.balances");
    assert_eq!(balances["status"], "skipped");
    assert_eq!(balances["message"], "skipped: `unique_accounts_id` failed");
    assert_eq!(result(&results, "model.tested.country_names")["status"], "success");
    assert_eq!(result(&results, "model.tested.accounts")["status"], "success");
    assert!(result(&results, "model.tested.accounts").get("load").is_none());
    assert!(ran.stderr.contains("not loading `accounts`: its test `unique_accounts_id` failed"), "{}", ran.stderr);
    assert_eq!(loaded_tables(&p), ["countries", "country_names", "raw_accounts"]);

    // The failure points at the declaration and shows the failing rows.
    assert!(
        ran.stderr.contains(
            "error[F0601]: test `unique_accounts_id` failed: 2 results, configured to fail if != 0\n --> models/schema.yml:8:13\n  |\n8 |           - unique\n  |             ^^^^^^\n"
        ),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("| unique_field | n_records |"), "{}", ran.stderr);
    assert!(ran.stderr.contains("warning[F0601]: test `not_null_accounts_email` warned: 1 result"), "{}", ran.stderr);
    assert!(ran.stderr.contains("3 of 12") || ran.stderr.contains("of 12 FAIL  test      unique_accounts_id"));

    // `store_failures: true` kept the relationships test's three rows.
    let stored = stored_failures(&p, "relationships_accounts_country_code__code__ref_countries_").expect("stored");
    assert_eq!(stored["row_count"], 3);
    assert!(stored_failures(&p, "unique_accounts_id").is_none(), "only tests that ask store their failures");
}

/// The same project with the repeats dropped: every error-severity test
/// passes, so the model's descendants run and everything loads.
#[test]
fn when_the_tests_pass_the_model_and_its_descendants_load() {
    let p = TestProject::fixture("tested");
    let ran = p.run(["build", "--vars", "{keep_duplicates: false}"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let results = p.run_results();
    assert_eq!(test_result(&results, "unique_accounts_id"), ("pass".into(), 0));
    assert_eq!(test_result(&results, "relationships_accounts_country_code__code__ref_countries_"), ("warn".into(), 2));
    assert_eq!(result(&results, "model.tested.balances")["status"], "success");
    assert_eq!(loaded_tables(&p), ["accounts", "balances", "countries", "country_names", "raw_accounts"]);
    assert!(ran.stderr.contains("tests: 3 passed, 4 warned"), "{}", ran.stderr);
}

/// `ferry test` runs the selected nodes' tests against their stages,
/// without re-running models, and exits 1 when one fails.
#[test]
fn test_runs_the_selected_tests_against_the_stages() {
    let p = TestProject::fixture("tested");
    assert_eq!(p.run(["run", "--no-load"]).code, Some(0));
    let ran = p.run(["test", "-s", "accounts"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    let results = p.run_results();
    let ran_ids: Vec<&str> =
        results["results"].as_array().unwrap().iter().map(|r| r["unique_id"].as_str().unwrap()).collect();
    // accounts' six tests, with the relationships test that also reads
    // `countries`; not the singular test on `country_names`.
    assert_eq!(ran_ids.len(), 6, "{ran_ids:?}");
    assert!(ran_ids.iter().all(|id| id.starts_with("test.tested.")), "{ran_ids:?}");
    assert!(!ran_ids.contains(&"test.tested.countries_have_names"));
    assert!(!p.path().join(".ferry/ferry.db").exists(), "test never loads");

    // `--store-failures` keeps the failing rows of every test that ran.
    let ran = p.run(["test", "-s", "accounts", "--store-failures"]);
    assert_eq!(ran.code, Some(1));
    assert_eq!(stored_failures(&p, "unique_accounts_id").expect("stored")["row_count"], 2);
    assert_eq!(stored_failures(&p, "not_null_accounts_email").expect("stored")["row_count"], 1);
    assert!(ran.stderr.contains("all failing rows are stored in `.ferry/runs/"), "{}", ran.stderr);

    let ran = p.run(["test", "-s", "country_names"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stderr.contains("tests: 1 passed"), "{}", ran.stderr);
}

/// A test name that no macro defines is a diagnostic at its declaration,
/// and its model is kept out of the target; a bad threshold names the
/// config key.
#[test]
fn unknown_tests_and_bad_thresholds_are_named() {
    let p = TestProject::new().model("orders.sql", "{{ config(materialized='table') }}select 1 as id").file(
        "models/schema.yml",
        "version: 2\nmodels:\n  - name: orders\n    columns:\n      - name: id\n        data_tests: [uniqe]\n",
    );
    let ran = p.run(["build"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("in test `uniqe_orders_id`: no generic test named `uniqe`"), "{}", ran.stderr);
    assert!(ran.stderr.contains("--> models/schema.yml:6:22"), "{}", ran.stderr);
    assert!(ran.stderr.contains("did you mean `unique`?"), "{}", ran.stderr);
    assert!(ran.stderr.contains("not loading `orders`: its test `uniqe_orders_id` failed"), "{}", ran.stderr);

    let p = TestProject::new().model("orders.sql", "select 1 as id").file(
        "models/schema.yml",
        "version: 2\nmodels:\n  - name: orders\n    columns:\n      - name: id\n        data_tests:\n          - unique:\n              config:\n                error_if: lots\n",
    );
    let ran = p.run(["build"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("test `unique_orders_id` has an invalid config: `error_if: lots` must be a comparison"),
        "{}",
        ran.stderr
    );
}

/// A project's own generic test of a built-in's name replaces the built-in.
#[test]
fn a_project_test_overrides_a_builtin() {
    let p = TestProject::new()
        .model("orders.sql", "select 1 as id union all select 1")
        .file(
            "macros/unique.sql",
            "{% test unique(model, column_name) %}select * from {{ model }} where false{% endtest %}",
        )
        .file(
            "models/schema.yml",
            "version: 2\nmodels:\n  - name: orders\n    data_tests:\n      - unique:\n          column_name: id\n",
        );
    let ran = p.run(["build"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stderr.contains("PASS  test      unique_orders_id"), "{}", ran.stderr);
}

/// A unit test's rows may live in fixture files (`fixture:` with `format:
/// csv` or `sql`), found in a `fixtures` folder under the test paths, as in
/// dbt; a missing one is an error naming the test and the file.
#[test]
fn unit_test_rows_may_come_from_fixture_files() {
    let unit = "unit_tests:\n  - name: from_files\n    model: dim_customers\n    given:\n      - input: ref('stg_customers')\n        format: csv\n        fixture: customers\n      - input: ref('domains')\n        format: sql\n        fixture: no_domains\n    expect:\n      format: csv\n      fixture: expected_customers\n";
    let p = TestProject::new()
        .file("seeds/raw_customers.csv", "id,email\n7,z@z.com\n")
        .file("seeds/domains.csv", "tld\nnet\n")
        .model("stg_customers.sql", "select id, email from {{ ref('raw_customers') }}\n")
        .model(
            "dim_customers.sql",
            "select c.id, lower(c.email) as email, d.tld is not null as known_tld\nfrom {{ ref('stg_customers') }} c left join {{ ref('domains') }} d on c.email like concat('%.', d.tld)\n",
        )
        .file("tests/fixtures/customers.csv", "id,email\n1,A@X.COM\n")
        .file("tests/unit/fixtures/no_domains.sql", "select 'x' as tld where false")
        .file("tests/fixtures/expected_customers.csv", "id,email,known_tld\n1,a@x.com,false\n")
        .file("models/unit.yml", unit);
    let ran = p.run(["build", "--no-load"]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    let results = p.run_results();
    assert_eq!(result(&results, "unit_test.shop.dim_customers.from_files")["status"], "pass", "{results}");
    let ls = p.run(["ls"]);
    assert!(!ls.stdout.contains("no_domains"), "a fixture is no singular test: {}", ls.stdout);

    let p = p.file("models/unit.yml", &unit.replace("fixture: customers", "fixture: clients"));
    let ran = p.run(["compile"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("unit test `from_files`: fixture `clients` not found"), "{}", ran.stderr);
    assert!(ran.stderr.contains("put `clients.csv` in a `fixtures` folder under `tests`"), "{}", ran.stderr);
}

const UNIT_MODELS: &str = "\
models:
  - name: dim_customers
unit_tests:
  - name: known_tlds
    model: dim_customers
    given:
      - input: ref('stg_customers')
        rows:
          - {id: 1, email: A@X.COM}
          - {id: 2, email: b@y.org}
      - input: ref('domains')
        format: csv
        rows: |
          tld
          COM
    expect:
      rows:
        - {id: 1, email: a@x.com, known_tld: true}
        - {id: 2, email: b@y.org, known_tld: false}
  - name: wrong_expectation
    model: dim_customers
    given:
      - input: ref('stg_customers')
        rows:
          - {id: 1, email: A@X.COM}
          - {id: 2}
      - input: ref('domains')
        rows: []
    expect:
      rows:
        - {id: 1, known_tld: true}
";

/// dbt's unit tests: the model's SQL on given rows (dict and csv), compared
/// with the expected rows over the columns `expect` names; a failing one
/// shows the difference and keeps its model out of the target.
#[test]
fn unit_tests_run_a_model_on_given_rows() {
    let p = TestProject::new()
        .file("seeds/raw_customers.csv", "id,email\n7,z@z.com\n")
        .file("seeds/domains.csv", "tld\nnet\n")
        .model("stg_customers.sql", "{{ config(materialized='table') }}\nselect id, email from {{ ref('raw_customers') }}\n")
        .model(
            "dim_customers.sql",
            "{{ config(materialized='table') }}\nselect c.id, lower(c.email) as email, d.tld is not null as known_tld\nfrom {{ ref('stg_customers') }} c left join {{ ref('domains') }} d on c.email like concat('%.', d.tld)\n",
        )
        .file("models/unit.yml", UNIT_MODELS);
    let ran = p.run(["build"]);
    assert_eq!(ran.code, Some(1), "{}{}", ran.stdout, ran.stderr);
    let results = p.run_results();
    assert_eq!(result(&results, "unit_test.shop.dim_customers.known_tlds")["status"], "pass", "{results}");
    let wrong = result(&results, "unit_test.shop.dim_customers.wrong_expectation");
    assert_eq!(wrong["status"], "fail", "{results}");
    // id 1 is not a known TLD without domains (+ false, - true); id 2 is
    // returned but not expected.
    assert_eq!(wrong["failures"], 3, "{results}");
    assert!(ran.stderr.contains("test `wrong_expectation` failed: 3 results"), "{}", ran.stderr);
    assert!(ran.stderr.contains("| -    | 1  | true      |"), "{}", ran.stderr);
    assert!(ran.stderr.contains("| +    | 1  | false     |"), "{}", ran.stderr);
    // The model itself ran on its real parents, but stays out of the target.
    assert_eq!(result(&results, "model.shop.dim_customers")["status"], "success", "{results}");
    assert!(ran.stderr.contains("dim_customers"), "{}", ran.stderr);

    // Every parent must be given, and only parents.
    let p = p.file(
        "models/unit.yml",
        "unit_tests:\n  - name: partial\n    model: dim_customers\n    given:\n      - input: ref('stg_customers')\n        rows: []\n    expect:\n      rows: []\n",
    );
    let ran = p.run(["compile"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("no rows are given for `ref('domains')`, which `dim_customers` reads"),
        "{}",
        ran.stderr
    );
    let p = p.file(
        "models/unit.yml",
        "unit_tests:\n  - name: stray\n    model: stg_customers\n    given:\n      - input: ref('domains')\n        rows: []\n    expect:\n      rows: [{id: 1}]\n",
    );
    let ran = p.run(["compile"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("input `ref('domains')` is not read by `stg_customers`"), "{}", ran.stderr);
}

/// A unit test's `overrides` (dbt 1.8): `macros` (`is_incremental`, a
/// project macro by name or as `namespace.name`), `vars` and `env_vars`
/// are what the model's render sees; with `is_incremental` true, `input:
/// this` gives the model's current rows.
#[test]
fn unit_test_overrides_reach_the_models_render() {
    let p = TestProject::new()
        .file("seeds/raw_events.csv", "id,ts\n1,1\n2,5\n3,9\n")
        .file("macros/stamp.sql", "{% macro stamp() %}'real'{% endmacro %}\n")
        .model(
            "events_inc.sql",
            "{{ config(materialized='incremental', unique_key='id') }}\n\
             select id, ts, '{{ var(\"region\", \"eu\") }}' as region, '{{ env_var(\"FERRY_UT_SITE\", \"none\") }}' as site, {{ stamp() }} as stamped\n\
             from {{ ref('raw_events') }}\n\
             {% if is_incremental() %}where ts > (select max(ts) from {{ this }}){% endif %}\n",
        )
        .file(
            "models/unit.yml",
            "unit_tests:\n\
             \x20 - name: only_new_rows\n    model: events_inc\n\
             \x20   overrides:\n      macros: {is_incremental: true, shop.stamp: \"'fixed'\"}\n      vars: {region: us}\n      env_vars: {FERRY_UT_SITE: lab}\n\
             \x20   given:\n      - input: ref('raw_events')\n        rows: [{id: 1, ts: 1}, {id: 2, ts: 5}, {id: 3, ts: 9}]\n      - input: this\n        rows: [{id: 1, ts: 4}]\n\
             \x20   expect:\n      rows: [{id: 2, region: us, site: lab, stamped: fixed}, {id: 3, region: us, site: lab, stamped: fixed}]\n\
             \x20 - name: full_refresh\n    model: events_inc\n\
             \x20   overrides: {macros: {is_incremental: false, stamp: \"'other'\"}}\n\
             \x20   given:\n      - input: ref('raw_events')\n        rows: [{id: 1, ts: 1}]\n\
             \x20   expect:\n      rows: [{id: 1, region: eu, site: none, stamped: other}]\n",
        );
    let ran = p.run(["build", "--no-load"]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    let results = p.run_results();
    assert_eq!(result(&results, "unit_test.shop.events_inc.only_new_rows")["status"], "pass", "{results}");
    assert_eq!(result(&results, "unit_test.shop.events_inc.full_refresh")["status"], "pass", "{results}");
    // The model itself rendered as always.
    let sql = p.read(".ferry/compiled/models/events_inc.sql");
    assert!(sql.contains("'eu' as region, 'none' as site, 'real' as stamped"), "{sql}");

    let p = p.file(
        "models/unit.yml",
        "unit_tests:\n  - name: bad\n    model: events_inc\n    overrides: {vars: [region]}\n    given: []\n    expect:\n      rows: []\n",
    );
    let ran = p.run(["compile"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("unit test `bad`: `overrides.vars` must be a mapping"), "{}", ran.stderr);
    assert!(ran.stderr.contains("models/unit.yml"), "{}", ran.stderr);
}
