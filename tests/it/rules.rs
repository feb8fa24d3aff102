//! Row-level rules: quarantine, the error log and the row ledger, over the
//! `rules` fixture (a legacy contact export with one defect per row; each
//! expected figure below is worked out in the seed's `note` column).

use serde_json::Value as Json;

use crate::common::{TestProject, node_result};

fn contacts_result(p: &TestProject) -> Json {
    node_result(&p.run_results(), "model.rules.contacts").expect("contacts ran").clone()
}

/// The one run directory under `.ferry/runs/`.
fn run_dir(p: &TestProject) -> camino::Utf8PathBuf {
    let runs: Vec<_> = fs_err::read_dir(p.path().join(".ferry/runs")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    camino::Utf8PathBuf::try_from(runs[0].clone()).unwrap()
}

/// Rows of `sql` over one Parquet file registered as `t`, one line each, sorted.
async fn query_file(path: &camino::Utf8Path, sql: &str) -> Vec<String> {
    use datafusion::prelude::{ParquetReadOptions, SessionContext};
    let ctx = SessionContext::new();
    ctx.register_parquet("t", path.as_str(), ParquetReadOptions::default()).await.unwrap();
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
    let mut lines: Vec<String> =
        text.lines().filter(|l| l.starts_with('|')).skip(1).map(|l| l.replace(' ', "")).collect();
    lines.sort();
    lines
}

/// Every rule is checked in the pass that stages the model: rows that break
/// an `error` rule are quarantined with the rules they broke, `warn` rules
/// stage and log, every broken rule is one log line, and the ledger holds.
#[tokio::test]
async fn rules_quarantine_log_and_account_for_every_row() {
    let p = TestProject::fixture("rules");
    let ran = p.run(["build"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let contacts = contacts_result(&p);
    let ledger = &contacts["ledger"];
    // 10 rows: ids 1 and 4 pass every error rule; 4 only warns.
    assert_eq!((&ledger["produced"], &ledger["staged"], &ledger["quarantined"]), (&10.into(), &2.into(), &8.into()));
    assert_eq!(ledger["duplicates_dropped"], 0);
    assert_eq!(ledger["warned"], 1);
    let by_rule: std::collections::BTreeMap<String, u64> = serde_json::from_value(ledger["by_rule"].clone()).unwrap();
    let expected: std::collections::BTreeMap<String, u64> = [
        ("unique_contact_id", 2),
        ("not_null_email", 1),
        ("matches_email", 1),
        ("length_phone", 1),
        ("relationships_country", 1),
        ("between_age", 1),
        ("adult_age", 0),
        ("parses_as_signed_up_text", 1),
        ("not_in_future_signed_up_on", 1),
        ("signed_up_when_adult", 0),
        ("external_ref_is_uuid", 1),
        ("not_blank_note", 1),
        ("note_is_known", 9),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(by_rule, expected);
    assert!(
        ran.stderr.contains("ledger `contacts`: 10 produced = 2 staged + 8 quarantined + 0 duplicates dropped"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("OK    table     contacts                     2 rows, 8 quarantined"),
        "{}",
        ran.stderr
    );

    // Staged (and loaded): the rows that broke no error rule.
    assert_eq!(
        p.query_stages(&["contacts"], "select contact_id from contacts").await,
        ["| 1          |", "| 4          |"]
    );
    assert_eq!(contacts["load"]["rows"], 2);

    // Quarantined: the full rows, with the rules each broke.
    let run = run_dir(&p);
    let quarantined =
        query_file(&run.join("quarantine/contacts.parquet"), "select contact_id, email, _ferry_broken_rules from t")
            .await;
    assert_eq!(
        quarantined,
        [
            "|2|bob@example|matches_email,note_is_known|",
            "|3||not_null_email,note_is_known|",
            "|5|eve@example.com|relationships_country,note_is_known|",
            "|6|fay@example.com|between_age,note_is_known|",
            "|7|gus@example.com|not_in_future_signed_up_on,note_is_known|",
            "|8|hal@example.com|parses_as_signed_up_text,note_is_known|",
            "|9|ivy2@example.com|unique_contact_id,note_is_known|",
            "|9|ivy@example.com|unique_contact_id,not_blank_note,note_is_known|",
        ]
    );

    // The error log: one line per broken rule per row, errors and warnings
    // told apart, with the record key, the value and the suggestion.
    let log = run.join("errors/contacts.parquet");
    let lines = query_file(&log, "select count(*), count(distinct rule) from t").await;
    assert_eq!(lines, ["|20|11|"]);
    let errors = query_file(&log, "select record_key, rule, value, suggestion from t where severity = 'error'").await;
    assert_eq!(
        errors,
        [
            "|contact_id=2|matches_email|bob@example||",
            "|contact_id=3|not_null_email||asktheaccountownerforanaddress|",
            "|contact_id=5|relationships_country|XX|mapthecodeinseeds/countries.csv|",
            "|contact_id=6|between_age|150||",
            "|contact_id=7|not_in_future_signed_up_on|2099-01-01||",
            "|contact_id=8|parses_as_signed_up_text|2021-13-01||",
            "|contact_id=9|unique_contact_id|9|mergetherepeatedcontactsintheCRM|",
            "|contact_id=9|unique_contact_id|9|mergetherepeatedcontactsintheCRM|",
        ]
    );
    let csv = fs_err::read_to_string(run.join("errors/contacts.csv")).unwrap();
    assert_eq!(csv.lines().count(), 21, "a header and 20 lines:\n{csv}");
    assert!(
        csv.contains(",contacts,contact_id=4,length_phone,phone,12,warn,`phone` is shorter than 6 characters,"),
        "{csv}"
    );
}

/// Past its `quarantine: {error_if: ...}` threshold the model fails: its new
/// stage is discarded, nothing of it loads, and its descendants are skipped;
/// the quarantine and the log are still written, for the people fixing it.
#[tokio::test]
async fn a_model_over_its_quarantine_threshold_stages_nothing() {
    let p = TestProject::fixture("rules");
    let yml = p.read("ferry.yml").replace(
        "    +materialized: table\n",
        "    +materialized: table\n    +quarantine:\n      error_if: \">50%\"\n",
    );
    let p = p.file("ferry.yml", &yml);
    let ran = p.run(["build"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(
        ran.stderr.contains(
            "`contacts` quarantined 8 of 10 rows (80.00%), over its threshold `error_if: >50%`; nothing was staged"
        ),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("= note: 2 rows break `unique_contact_id`"), "{}", ran.stderr);
    assert!(!p.path().join(".ferry/stage/contacts").exists(), "no stage");
    let contacts = contacts_result(&p);
    assert_eq!(contacts["status"], "error");
    assert!(contacts.get("load").is_none());
    assert_eq!(contacts["ledger"]["quarantined"], 8);
    let results = p.read(".ferry/run_results.json");
    assert!(results.contains("\"message\": \"skipped: `contacts` failed\""), "{results}");
    assert!(run_dir(&p).join("errors/contacts.csv").exists());

    // Under the threshold (a count this time), the same rows stage.
    let p = p.file("ferry.yml", &yml.replace("\">50%\"", "\"> 8\""));
    assert_eq!(p.run(["build"]).code, Some(0));
    // `error_if` may also sit straight in the model's config.
    let p = p.file("ferry.yml", &yml.replace("+quarantine:\n      error_if: \">50%\"", "+error_if: \"> 7\""));
    let ran = p.run(["build"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("over its threshold `error_if: > 7`"), "{}", ran.stderr);
}

/// Rules are checked before any row moves: an unknown rule, a rule on a
/// column the model lacks, and rules on a view are diagnostics at the rule.
#[test]
fn bad_rules_are_named_where_they_are_declared() {
    let schema = |rules: &str| {
        format!("version: 2\nmodels:\n  - name: m\n    columns:\n      - name: id\n        rules:\n{rules}")
    };
    let p = TestProject::new()
        .model("m.sql", "{{ config(materialized='table') }}select 1 as id")
        .file("models/schema.yml", &schema("          - not_nul\n"));
    let ran = p.run(["build"]);
    assert_eq!(ran.code, Some(1));
    assert!(ran.stderr.contains("rule `not_nul` of `m`: no rule named `not_nul`"), "{}", ran.stderr);
    assert!(ran.stderr.contains("did you mean `not_null`?"), "{}", ran.stderr);
    assert!(ran.stderr.contains("--> models/schema.yml:7:13"), "{}", ran.stderr);

    let p = TestProject::new()
        .model("m.sql", "{{ config(materialized='table') }}select 1 as id")
        .file("models/schema.yml", &schema("          - expression:\n              expression: \"amount > 0\"\n"));
    let ran = p.run(["build"]);
    assert_eq!(ran.code, Some(1));
    assert!(ran.stderr.contains("rule `expression_id` of `m` cannot be checked"), "{}", ran.stderr);
    assert!(ran.stderr.contains("amount"), "{}", ran.stderr);
    assert!(!p.path().join(".ferry/stage/m").exists(), "nothing ran");

    let p = TestProject::new()
        .model("m.sql", "select 1 as id")
        .file("models/schema.yml", &schema("          - not_null\n"));
    let ran = p.run(["build"]);
    assert_eq!(ran.code, Some(1));
    assert!(ran.stderr.contains("`m` has rules but is materialized as `view`"), "{}", ran.stderr);
}

/// `dedupe` keeps one row per key, deterministically: by `keep.order_by`,
/// rows that pass the error rules first; each dropped row is logged with
/// the row kept instead, and the ledger counts it.
#[tokio::test]
async fn dedupe_keeps_one_row_per_key_and_logs_the_rest() {
    let p = TestProject::new()
        .file("seeds/customers_raw.csv", "customer_id,email,updated_at\n1,a@x.io,2024-01-01\n1,a-new@x.io,2024-06-01\n2,b@x.io,2024-03-01\n3,c@x.io,2024-02-01\n3,c@x.io,2024-02-01\n4,bad,2024-09-09\n4,d@x.io,2024-01-01\n")
        .model("customers.sql", "{{ config(materialized='table') }}\nselect customer_id, email, cast(updated_at as date) as updated_at from {{ ref('customers_raw') }}")
        .file(
            "models/schema.yml",
            "version: 2\nmodels:\n  - name: customers\n    dedupe:\n      key: customer_id\n      keep:\n        order_by: updated_at desc\n    columns:\n      - name: email\n        rules:\n          - matches: {format: email}\n",
        );
    let ran = p.run(["build"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("ledger `customers`: 7 produced = 4 staged + 1 quarantined + 2 duplicates dropped"),
        "{}",
        ran.stderr
    );
    // 1: the newest wins. 3: exact copies, one kept. 4: the newest breaks an
    // error rule and is quarantined, so the older valid row is kept.
    assert_eq!(
        p.query_stages(&["customers"], "select customer_id, email from customers").await,
        [
            "| 1           | a-new@x.io |",
            "| 2           | b@x.io     |",
            "| 3           | c@x.io     |",
            "| 4           | d@x.io     |"
        ]
    );
    let log = run_dir(&p).join("errors/customers.parquet");
    let dropped = query_file(&log, "select record_key, severity, value, message from t where rule = 'dedupe'").await;
    assert_eq!(
        dropped,
        [
            "|customer_id=1|duplicate|customer_id=1,email=a@x.io,updated_at=2024-01-01|droppedasaduplicateoftherowkept:customer_id=1,email=a-new@x.io,updated_at=2024-06-01|",
            "|customer_id=3|duplicate|customer_id=3,email=c@x.io,updated_at=2024-02-01|droppedasaduplicateoftherowkept:customer_id=3,email=c@x.io,updated_at=2024-02-01|",
        ]
    );
    // A bad `dedupe` is named before anything runs.
    let p = p.file(
        "models/schema.yml",
        "version: 2\nmodels:\n  - name: customers\n    dedupe:\n      keep:\n        order_by: updated_at desc\n",
    );
    let ran = p.run(["build"]);
    assert_eq!(ran.code, Some(1));
    assert!(ran.stderr.contains("`customers`: `dedupe` needs `key:`"), "{}", ran.stderr);
}

/// W1's project (benches/w1: the lineitem model with declared rules and
/// dedup) on a 4,004-row slice made by `make_dirty_lineitem.py`, whose
/// manifest (`tests/fixtures/data/expected.json`) gives the exact figures.
#[tokio::test]
async fn the_w1_project_reports_the_dirty_extracts_exact_figures() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let p = TestProject::new();
    crate::common::copy_dir(&root.join("benches/w1"), &p.path().join("").into_std_path_buf());
    fs_err::create_dir_all(p.path().join("data")).unwrap();
    fs_err::copy(root.join("tests/fixtures/data/lineitem_dirty.csv"), p.path().join("data/lineitem_dirty.csv"))
        .unwrap();
    let expected: Json =
        serde_json::from_str(&fs_err::read_to_string(root.join("tests/fixtures/data/expected.json")).unwrap()).unwrap();
    let ran = p.run(["build"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let results = p.run_results();
    let lineitem = node_result(&results, "model.w1.lineitem").unwrap();
    let ledger = &lineitem["ledger"];
    assert_eq!(ledger["produced"], expected["rows_in"]);
    assert_eq!(ledger["quarantined"], expected["expected_rejected"]);
    assert_eq!(ledger["duplicates_dropped"], expected["expected_duplicates_dropped"]);
    assert_eq!(ledger["staged"], expected["expected_loaded"]);
    assert_eq!(ledger["warned"], expected["expected_warnings"]);
    assert_eq!(ledger["by_rule"]["received_after_shipped"], expected["receipt_before_ship"]);
    assert_eq!(ledger["by_rule"]["quantity_positive"], expected["negative_quantity"]);
    assert_eq!(ledger["by_rule"]["valid_ship_date"], expected["invalid_ship_date"]);
    assert_eq!(ledger["by_rule"]["part_key_present"], expected["missing_part_key"]);
    assert_eq!(lineitem["load"]["rows"], expected["expected_loaded"]);
    // The row the generator made invalid (every 1000th + 3) is logged by its key.
    let log = run_dir(&p).join("errors/lineitem.parquet");
    let keys = query_file(&log, "select record_key from t where rule = 'valid_ship_date' order by 1 limit 1").await;
    assert_eq!(keys.len(), 1);
    assert!(keys[0].starts_with("|order_id="), "{keys:?}");
}

/// `ferry errors` queries the log across runs: a summary by rule, then the
/// lines; `--run last`, `--rule`, `--severity` and `--model` narrow it.
#[test]
fn errors_queries_the_log_across_runs() {
    let p = TestProject::fixture("rules");
    assert_eq!(p.run(["build", "-q"]).code, Some(0));
    assert_eq!(p.run(["build", "-q"]).code, Some(0));
    let ran = p.run(["errors", "--rule", "unique_contact_id"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stdout.contains("By rule, over 2 runs:"), "{}", ran.stdout);
    assert!(ran.stdout.contains("| contacts | unique_contact_id | error    | 4     | 2    |"), "{}", ran.stdout);
    let last = p.run(["errors", "--run", "last", "--severity", "error", "--format", "json", "--limit", "100"]);
    let lines: Vec<Json> = last.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 8, "{}", last.stdout);
    assert!(lines.iter().all(|l| l["severity"] == "error" && l["run_id"] == lines[0]["run_id"]));
    let none = p.run(["errors", "--model", "nope"]);
    assert_eq!(none.code, Some(0));
    assert!(none.stderr.contains("no error log lines match"), "{}", none.stderr);
}

/// `parses_as` with a `format:` answers per row (DataFusion's `to_date`
/// would fail the whole query on the first bad value).
#[test]
fn parses_as_checks_text_against_a_format() {
    let p = TestProject::new()
        .file("seeds/dates.csv", "id,d\n1,31/12/2024\n2,2024-12-31\n3,31/02/2024\n4,\n")
        .file("ferry.yml", "name: shop\nseeds:\n  shop:\n    dates:\n      +column_types: {d: varchar}\n")
        .model("m.sql", "{{ config(materialized='table') }}select id, d from {{ ref('dates') }}")
        .file(
            "models/schema.yml",
            "version: 2\nmodels:\n  - name: m\n    columns:\n      - name: d\n        rules:\n          - parses_as: {type: date, format: \"%d/%m/%Y\", severity: warn}\n",
        );
    let ran = p.run(["build"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let results = p.run_results();
    let m = node_result(&results, "model.shop.m").unwrap();
    // 2024-12-31 is the wrong format and 31/02 is no date; blank is not checked.
    assert_eq!(m["ledger"]["by_rule"]["parses_as_d"], 2, "{m}");
    assert_eq!(m["ledger"]["warned"], 2);
}

// ---------------------------------------------------------------- conversions

/// A legacy export whose values do not all convert: one defect per row,
/// named in `note`.
const LEGACY: &str = "id,created,amount,qty,note\n\
1,31/12/2022,10.50,3,clean\n\
2,31/02/2022,7.00,1,no 31st of February\n\
3,01/03/2022,x12,2,amount is not a number\n\
4,01/01/2020,99999999999,5,amount too large for decimal(8;2)\n\
5,15/06/2021,3.00,3000000000,qty too large for int\n\
6,,1.00,4,no date: NULL converts to NULL\n\
7,not a date,2.00,6,guarded in clean_dates\n\
1,31/12/2022,10.50,3,duplicate of 1\n";

fn legacy_project(model: &str, schema_yml: &str) -> TestProject {
    TestProject::new()
        .file("data/legacy.csv", LEGACY)
        .file(
            "models/sources.yml",
            "version: 2\nsources:\n  - name: legacy\n    tables:\n      - name: orders\n        path: data/legacy.csv\n        columns:\n          - {name: created, data_type: varchar}\n          - {name: amount, data_type: varchar}\n          - {name: qty, data_type: varchar}\n",
        )
        .file("models/schema.yml", schema_yml)
        .model("orders.sql", model)
}

const CONVERTING: &str = "{{ config(materialized='table') }}\n\
with typed as (\n\
    select id, to_date(created, '%d/%m/%Y') as created_on, cast(amount as decimal(8, 2)) as amount,\n\
        qty::int as qty, note\n\
    from {{ source('legacy', 'orders') }}\n\
    where id <> 7\n\
)\n\
select * from typed\n";

const RULES: &str = "version: 2\nmodels:\n  - name: orders\n    rules:\n      - not_null:\n          column_name: id\n";

/// Each value that does not convert quarantines its row with a log line
/// naming the column, the input, the function and its format; the rest
/// stage, and the ledger counts the rows under `conversion`.
#[tokio::test]
async fn values_that_do_not_convert_quarantine_their_row_and_the_rest_stage() {
    let p = legacy_project(CONVERTING, RULES);
    let ran = p.run(["run"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let staged = p.query_stages(&["orders"], "select id, created_on, amount, qty, note from orders").await;
    let ids: Vec<&str> = staged.iter().map(|l| l.split('|').nth(1).unwrap_or_default().trim()).collect();
    assert_eq!(ids, ["1", "1", "6"], "{staged:?}");
    let result = node_result(&p.run_results(), "model.shop.orders").expect("orders ran").clone();
    let ledger = &result["ledger"];
    assert_eq!((&ledger["produced"], &ledger["staged"], &ledger["quarantined"]), (&7.into(), &3.into(), &4.into()));
    assert_eq!(ledger["by_rule"]["conversion"], 4, "{ledger}");
    let log = query_file(
        &run_dir(&p).join("errors/orders.parquet"),
        "select split_part(record_key, ',', 1), rule, \"column\", value, message from t",
    )
    .await;
    assert_eq!(
        log,
        [
            "|id=2|conversion|created_on|31/02/2022|`created_on`doesnotconvert:to_datewithformat'%d/%m/%Y'|",
            "|id=3|conversion|amount|x12|`amount`doesnotconvert:casttodecimal(8,2)|",
            "|id=4|conversion|amount|99999999999|`amount`doesnotconvert:casttodecimal(8,2)|",
            "|id=5|conversion|qty|3000000000|`qty`doesnotconvert:casttoint|",
        ]
    );
    let suggestions = query_file(&run_dir(&p).join("errors/orders.parquet"), "select distinct suggestion from t").await;
    assert!(suggestions.iter().any(|s| s.contains("to_date(x,'format1','format2')")), "{suggestions:?}");
}

/// A guard keeps a conversion from running on the rows it excludes; a
/// condition that cannot be evaluated keeps its row for the quarantine;
/// `UNION ALL` branches each report theirs; dedup keeps the row that
/// converts.
#[tokio::test]
async fn guards_filters_unions_and_dedup_see_conversions_per_row() {
    let model = "{{ config(materialized='table') }}\n\
select id, case when ferry_parses(created, 'date', '%d/%m/%Y') then to_date(created, '%d/%m/%Y') end as created_on,\n\
    coalesce(try_cast(amount as decimal(8, 2)), cast(qty as decimal(8, 2))) as amount, 'a' as branch\n\
from {{ source('legacy', 'orders') }}\n\
where cast(qty as int) < 5\n\
union all\n\
select id, try_to_date(created, '%d/%m/%Y'), cast(amount as decimal(8, 2)), 'b' from {{ source('legacy', 'orders') }}\n\
where id in (2, 3)\n";
    let schema = "version: 2\nmodels:\n  - name: orders\n    dedupe:\n      key: [id, branch]\n";
    let p = legacy_project(model, schema);
    let ran = p.run(["run"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    // Branch a: qty < 5 keeps 1, 2, 3, 6 (and the duplicate of 1, dropped);
    // 5's qty does not convert, so the row is quarantined, not filtered.
    // The guarded dates of 2 and 7 are NULL, not errors. Branch b: 2's date
    // is NULL from try_to_date; 3's amount is quarantined.
    let staged = p.query_stages(&["orders"], "select branch, id, created_on, amount from orders").await;
    assert_eq!(
        staged,
        [
            "| a      | 1  | 2022-12-31 | 10.50  |",
            "| a      | 2  |            | 7.00   |",
            "| a      | 3  | 2022-03-01 | 2.00   |",
            "| a      | 6  |            | 1.00   |",
            "| b      | 2  |            | 7.00   |",
        ],
        "{}",
        ran.stderr
    );
    let log =
        query_file(&run_dir(&p).join("errors/orders.parquet"), "select record_key, rule, \"column\", value from t")
            .await;
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(log.iter().any(|l| l.contains("id=5") && l.contains("|conversion|WHERE|3000000000|")), "{log:?}");
    assert!(log.iter().any(|l| l.contains("id=3") && l.contains("branch=b") && l.contains("|amount|x12|")), "{log:?}");
    assert!(log.iter().any(|l| l.contains("|dedupe|")), "{log:?}");
}

/// `on_conversion_error: fail` keeps the old behaviour; a table without
/// rules fails unless it asks to quarantine; a conversion below a join
/// cannot be pinned to a row and stays strict.
#[test]
fn on_conversion_error_chooses_and_joins_stay_strict() {
    let fail =
        legacy_project(CONVERTING, &format!("{RULES}    config:\n      on_conversion_error: fail\n")).run(["run"]);
    assert_eq!(fail.code, Some(1), "{}", fail.stderr);
    assert!(fail.stderr.contains("31/02/2022"), "{}", fail.stderr);
    let plain = legacy_project(CONVERTING, "version: 2\n").run(["run"]);
    assert_eq!(plain.code, Some(1), "{}", plain.stderr);
    let asked = legacy_project(
        CONVERTING,
        "version: 2\nmodels:\n  - name: orders\n    config:\n      on_conversion_error: quarantine\n",
    )
    .run(["run"]);
    assert_eq!(asked.code, Some(0), "{}", asked.stderr);
    assert!(asked.stderr.contains("3 staged + 4 quarantined"), "{}", asked.stderr);
    let joined = "{{ config(materialized='table') }}\n\
select a.id, b.created_on from {{ source('legacy', 'orders') }} a\n\
join (select id, to_date(created, '%d/%m/%Y') as created_on from {{ source('legacy', 'orders') }}) b on a.id = b.id\n";
    let strict = legacy_project(joined, RULES).run(["run"]);
    assert_eq!(strict.code, Some(1), "{}", strict.stderr);
    let bad = legacy_project(
        CONVERTING,
        "version: 2\nmodels:\n  - name: orders\n    config:\n      on_conversion_error: skip\n",
    )
    .run(["compile"]);
    assert_eq!(bad.code, Some(1), "{}", bad.stderr);
    assert!(bad.stderr.contains("`on_conversion_error` is `quarantine` or `fail`"), "{}", bad.stderr);
}
