//! `ferry run`, `seed`, `build` and `show`: execution, staging and failures.

use crate::common::{TestProject, node_result};

fn stage_manifest(p: &TestProject, model: &str) -> serde_json::Value {
    serde_json::from_str(&p.read(&format!(".ferry/stage/{model}/_ferry_stage.json"))).expect("stage manifest")
}

fn status_of(results: &serde_json::Value, unique_id: &str) -> String {
    node_result(results, unique_id).map_or_else(|| "missing".to_owned(), |r| r["status"].as_str().unwrap().to_owned())
}

/// The classic jaffle_shop gives the rows dbt gives: `expected/*.csv` were
/// exported from `dbt build` with dbt-core 1.10 and dbt-duckdb.
#[tokio::test]
async fn jaffle_shop_builds_the_rows_dbt_builds() {
    let p = TestProject::fixture("jaffle_shop");
    let ran = p.run(["build"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    for (model, columns) in [
        (
            "customers",
            "customer_id, first_name, last_name, first_order, most_recent_order, number_of_orders, cast(customer_lifetime_value as double)",
        ),
        (
            "orders",
            "order_id, customer_id, order_date, cast(status as varchar), cast(credit_card_amount as double), cast(coupon_amount as double), cast(bank_transfer_amount as double), cast(gift_card_amount as double), cast(amount as double)",
        ),
    ] {
        let ours = p.query_stages(&[model], &format!("select {columns} from {model}")).await;
        let expected = expected_rows(model, columns).await;
        assert_eq!(ours.len(), expected.len(), "{model}: row count");
        assert_eq!(ours, expected, "{model}: rows");
    }
    let results = p.run_results();
    // The project's 20 data tests pass unchanged, as under `dbt build`.
    let tests: Vec<&str> = results["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["unique_id"].as_str().unwrap().starts_with("test."))
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(tests, vec!["pass"; 20]);
    assert_eq!(status_of(&results, "model.jaffle_shop.customers"), "success");
    assert_eq!(status_of(&results, "seed.jaffle_shop.raw_orders"), "success");
    assert_eq!(stage_manifest(&p, "raw_payments")["row_count"], 40);
}

async fn expected_rows(model: &str, columns: &str) -> Vec<String> {
    use datafusion::prelude::{CsvReadOptions, SessionContext};
    let ctx = SessionContext::new();
    let path = crate::common::fixtures().join(format!("jaffle_shop/expected/{model}.csv"));
    ctx.register_csv(model, path.to_str().unwrap(), CsvReadOptions::new()).await.unwrap();
    let batches = ctx.sql(&format!("select {columns} from {model}")).await.unwrap().collect().await.unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
    let mut lines: Vec<String> = text.lines().filter(|l| l.starts_with('|')).skip(1).map(str::to_owned).collect();
    lines.sort();
    lines
}

/// A DAG with a runtime failure: `bad` fails, `after_bad` is skipped,
/// the independent branch finishes, the exit code is 1.
#[test]
fn a_failing_model_skips_its_descendants_and_the_rest_finishes() {
    let p = TestProject::new()
        .file("data/raw.csv", "id,v\n1,10\n2,x\n3,30\n")
        .file(
            "models/sources.yml",
            "sources:\n  - name: raw\n    tables:\n      - name: items\n        path: data/raw.csv\n        columns:\n          - name: v\n            data_type: varchar\n",
        )
        .model("good.sql", "{{ config(materialized='table') }}\nselect id from {{ source('raw', 'items') }}")
        .model("bad.sql", "{{ config(materialized='table') }}\nselect id, cast(v as bigint) as v from {{ source('raw', 'items') }}")
        .model("after_bad.sql", "{{ config(materialized='table') }}\nselect * from {{ ref('bad') }}")
        .model("after_good.sql", "{{ config(materialized='table') }}\nselect count(*) as n from {{ ref('good') }}");
    let ran = p.run(["run"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("`bad` failed while running"), "{}", ran.stderr);
    assert!(ran.stderr.contains("1 failed, 1 skipped, 2 succeeded"), "{}", ran.stderr);
    let results = p.run_results();
    assert_eq!(status_of(&results, "model.shop.bad"), "error");
    assert_eq!(status_of(&results, "model.shop.after_bad"), "skipped");
    assert_eq!(status_of(&results, "model.shop.after_good"), "success");
    assert!(!p.path().join(".ferry/stage/bad").exists(), "a failed model leaves no stage");
    let leftovers: Vec<_> =
        fs_err::read_dir(p.path().join(".ferry/stage")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 2, "only the two good stages: {leftovers:?}");
}

/// A bad value in a source file names the file, the line and the column.
#[test]
fn a_bad_csv_row_names_file_line_and_column() {
    let p = TestProject::new()
        .file("data/orders.csv", "id,amount\n1,10\n2,20\n3,abc\n4,40\n")
        .file(
            "models/sources.yml",
            "sources:\n  - name: legacy\n    tables:\n      - name: orders\n        path: data/orders.csv\n        columns:\n          - name: amount\n            data_type: bigint\n",
        )
        .model("totals.sql", "{{ config(materialized='table') }}\nselect sum(amount) as total from {{ source('legacy', 'orders') }}");
    let ran = p.run(["run"]);
    assert_eq!(ran.code, Some(1));
    assert!(ran.stderr.contains("data/orders.csv:4"), "{}", ran.stderr);
    assert!(ran.stderr.contains("`abc` in column `amount` is not a valid Int64"), "{}", ran.stderr);
}

/// A quoted field may hold line breaks: the line named is the file's line,
/// not the record's number. A glob's bad file is named too.
#[test]
fn a_bad_csv_row_is_named_by_its_line_after_quoted_line_breaks_and_in_globs() {
    let p = TestProject::new()
        .file("data/2023/orders.csv", "id,amount,note\n1,10,ok\n")
        .file("data/2024/orders.csv", "id,amount,note\n1,10,\"two\nlines\"\n2,20,\"three\n\nlines\"\n3,99999999999999999999,x\n")
        .file(
            "models/sources.yml",
            "sources:\n  - name: legacy\n    tables:\n      - name: orders\n        path: data/*/orders.csv\n        columns:\n          - name: amount\n            data_type: bigint\n",
        )
        .model("totals.sql", "{{ config(materialized='table') }}\nselect sum(amount) as total from {{ source('legacy', 'orders') }}");
    let ran = p.run(["run"]);
    assert_eq!(ran.code, Some(1));
    assert!(ran.stderr.contains("--> data/2024/orders.csv:7"), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("`99999999999999999999` in column `amount` is not a valid Int64 (line 7)"),
        "{}",
        ran.stderr
    );
}

#[test]
fn missing_and_empty_source_files_are_named() {
    let p = TestProject::new()
        .file("data/empty.csv", "")
        .file(
            "models/sources.yml",
            "sources:\n  - name: legacy\n    tables:\n      - name: gone\n        path: data/gone.csv\n      - name: empty\n        path: data/empty.csv\n",
        )
        .model("a.sql", "select * from {{ source('legacy', 'gone') }}")
        .model("b.sql", "select * from {{ source('legacy', 'empty') }}");
    let ran = p.run(["run"]);
    assert_eq!(ran.code, Some(1));
    assert!(ran.stderr.contains("data/gone.csv` does not exist"), "{}", ran.stderr);
    assert!(ran.stderr.contains("data/empty.csv` is empty"), "{}", ran.stderr);
}

/// Reader options: delimiter, NULL spellings, a date format and gzip.
#[test]
fn source_reader_options_apply() {
    use std::io::Write;
    let p = TestProject::new().file(
        "models/sources.yml",
        "sources:\n  - name: crm\n    tables:\n      - name: people\n        path: data/people.csv.gz\n        delimiter: ';'\n        null_strings: ['NULL', 'n/a']\n        date_format: '%d/%m/%Y'\n        columns:\n          - name: born\n            data_type: date\n",
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"id;name;born\n1;Ada;10/12/1815\n2;NULL;n/a\n3;n/a;23/06/1912\n").unwrap();
    let p = p.file("data/.keep", "");
    fs_err::write(p.path().join("data/people.csv.gz"), gz.finish().unwrap()).unwrap();
    let p = p.model(
        "people.sql",
        "{{ config(materialized='table') }}\nselect id, name, born, extract(year from born) as y from {{ source('crm', 'people') }}",
    );
    let ran = p.run(["run"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let shown = p.run(["show", "-s", "people", "--format", "json"]);
    assert_eq!(shown.code, Some(0), "{}", shown.stderr);
    let mut lines: Vec<&str> = shown.stdout.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            r#"{"id":1,"name":"Ada","born":"1815-12-10","y":1815}"#,
            r#"{"id":2}"#,
            r#"{"id":3,"born":"1912-06-23","y":1912}"#,
        ]
    );
}

/// A glob reads the files it matches; the columns a model uses and its
/// filters reach the readers (shown in the physical plan that `-v` logs).
#[test]
fn globs_read_what_they_match_and_pushdown_reaches_the_reader() {
    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use std::sync::Arc;
    let p = TestProject::new()
        .file("data/part-1.csv", "id,amount,note\n1,10,a\n2,20,b\n")
        .file("data/part-2.csv", "id,amount,note\n3,30,c\n")
        .file("data/other.csv", "id,amount,note\n4,1000,d\n")
        .file(
            "models/sources.yml",
            "sources:\n  - name: s\n    tables:\n      - name: parts\n        path: data/part-*.csv\n      - name: facts\n        path: data/facts.parquet\n",
        )
        .model("parts_total.sql", "{{ config(materialized='table') }}\nselect count(*) as n, sum(amount) as total from {{ source('s', 'parts') }}")
        .model("notes.sql", "{{ config(materialized='table') }}\nselect note from {{ source('s', 'parts') }} where amount > 15")
        .model("big.sql", "{{ config(materialized='table') }}\nselect id from {{ source('s', 'facts') }} where amount > 15");
    let batch = RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as _),
        ("amount", Arc::new(Int64Array::from(vec![10, 20, 30])) as _),
        ("note", Arc::new(StringArray::from(vec!["a", "b", "c"])) as _),
    ])
    .unwrap();
    let file = fs_err::File::create(p.path().join("data/facts.parquet")).unwrap();
    let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();

    let ran = p.run(["run", "-v"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(p.run(["show", "-s", "parts_total", "--format", "json"]).stdout.trim(), r#"{"n":3,"total":60}"#);
    // The CSV reader parses only the columns the model uses.
    let scans: Vec<&str> = ran.stderr.lines().filter(|l| l.contains("DataSourceExec")).collect();
    let csv = scans.iter().find(|l| l.contains("part-1.csv") && l.contains("note")).expect("the scan of notes");
    assert!(csv.contains("projection=[amount, note]"), "{csv}");
    // The Parquet reader gets the projection and the filter (row groups and
    // pages it rules out are never decoded).
    let parquet = scans.iter().find(|l| l.contains("facts.parquet")).expect("the scan of big");
    assert!(parquet.contains("projection=[id, amount]"), "{parquet}");
    assert!(parquet.contains("predicate=amount@1 > 15"), "{parquet}");
    assert!(!scans.iter().any(|l| l.contains("other.csv")), "the glob matches part-*.csv only");
}

/// A date that does not parse in its declared format names file, line and column.
#[test]
fn a_date_that_does_not_parse_in_its_format_names_file_line_and_column() {
    let p = TestProject::new()
        .file("data/p.csv", "id,note,born\n1,\"a\nb\",10/12/1815\n2,c,31/02/1900\n3,d,01/01/2000\n")
        .file(
            "models/sources.yml",
            "sources:\n  - name: s\n    tables:\n      - name: p\n        path: data/p.csv\n        date_format: '%d/%m/%Y'\n        columns:\n          - name: born\n            data_type: date\n",
        )
        .model("t.sql", "{{ config(materialized='table') }}\nselect * from {{ source('s', 'p') }}");
    let ran = p.run(["run"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("--> data/p.csv:4"), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("`31/02/1900` in column `born` does not parse in the format `%d/%m/%Y` (line 4)"),
        "{}",
        ran.stderr
    );
}

/// Structural defects are named at their file's line whether the schema
/// inference meets them (early) or the run does (past the first 1,000
/// records): a ragged CSV row, a header naming a column twice, malformed
/// newline-delimited JSON; and a number too large for its declared decimal.
#[test]
fn ragged_rows_duplicate_headers_bad_json_and_decimal_overflow_name_their_line() {
    let late_ragged: String = std::iter::once("id,name,amt\n".to_owned())
        .chain((1..=2000).map(|i| if i == 1500 { format!("{i},x,1,extra\n") } else { format!("{i},n,1\n") }))
        .collect();
    let late_json: String = (1..=2000)
        .map(|i| if i == 1800 { format!("{{\"id\":{i}}},}}\n") } else { format!("{{\"id\":{i}}}\n") })
        .collect();
    let deep_json = format!("{{\"id\":1,\"x\":{}{}}}\n", "[".repeat(100_000), "]".repeat(100_000));
    let tables = [
        (
            "deep_json",
            "data/deep.ndjson",
            deep_json.as_str(),
            "data/deep.ndjson:1",
            "not valid JSON: recursion limit exceeded",
        ),
        (
            "late_ragged",
            "data/late.csv",
            late_ragged.as_str(),
            "data/late.csv:1501",
            "this row has 4 fields where the header has 3 (line 1501)",
        ),
        (
            "early_ragged",
            "data/early.csv",
            "id,name,amt\n1,a,1\n2,b\n",
            "data/early.csv:3",
            "this row has 2 fields where the header has 3 (line 3)",
        ),
        (
            "twice",
            "data/twice.csv",
            "id,name,id\n1,a,1\n",
            "data/twice.csv:1",
            "the header names `id` twice (columns 1 and 3)",
        ),
        (
            "early_json",
            "data/early.ndjson",
            "{\"id\":1}\n{\"id\":2,\"x\":\"b\n{\"id\":3}\n",
            "data/early.ndjson:2",
            "not valid JSON",
        ),
        (
            "late_json",
            "data/late.ndjson",
            late_json.as_str(),
            "data/late.ndjson:1800",
            "not valid JSON: expected value (column 12) (line 1800)",
        ),
        (
            "money",
            "data/money.csv",
            "id,amt\n1,1.5\n2,12345.67\n",
            "data/money.csv:3",
            "`12345.67` in column `amt` is too large for `decimal(5,2)` (line 3)",
        ),
    ];
    let mut p = TestProject::new();
    let mut yml = "sources:\n  - name: s\n    tables:\n".to_owned();
    for (name, path, text, _, _) in &tables {
        p = p.file(path, text).model(
            &format!("m_{name}.sql"),
            &format!("{{{{ config(materialized='table') }}}}\nselect * from {{{{ source('s', '{name}') }}}}"),
        );
        yml.push_str(&format!("      - name: {name}\n        path: {path}\n"));
    }
    yml.push_str("        columns:\n          - {name: amt, data_type: 'decimal(5,2)'}\n");
    let p = p.file("models/sources.yml", &yml);
    for (name, _, _, at, what) in tables {
        let ran = p.run(["run", "-s", &format!("m_{name}"), "--no-load"]);
        assert_eq!(ran.code, Some(1), "{name}: {}", ran.stderr);
        assert!(ran.stderr.contains(&format!("--> {at}\n")), "{name}: {}", ran.stderr);
        assert!(ran.stderr.contains(what), "{name}: {}", ran.stderr);
        assert!(!ran.stderr.contains("Arrow error"), "{name}: {}", ran.stderr);
    }
}

/// Config values are checked when the project compiles, against the
/// planned columns, with a caret where the model sets them: in its schema
/// file or in its SQL's `config()`.
#[test]
fn config_values_are_checked_at_compile_time_where_they_are_set() {
    let schema = "models:\n  - name: m1\n    dedupe:\n      key: [idd]\n  - name: m2\n    config:\n      quarantine:\n        error_if: \"more than 5\"\n    rules:\n      - not_null: {column_name: id}\n";
    let table = "{{ config(materialized='table') }}\nselect 1 as id, 'a' as name";
    let p = TestProject::new()
        .file("models/schema.yml", schema)
        .model("m1.sql", table)
        .model("m2.sql", table)
        .model("m3.sql", "{{ config(materialized='table', unique_key=['id', 'nmae']) }}\nselect 1 as id, 'a' as name")
        .model("fine.sql", "{{ config(materialized='table', unique_key='id') }}\nselect 1 as id");
    let ran = p.run(["compile"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    for expected in [
        "`dedupe.key` of `m1` names `idd`, which the model does not return\n --> models/schema.yml:4:13",
        "`m2`: `quarantine: {error_if: more than 5}` must be like",
        "--> models/schema.yml:8:9",
        "`unique_key` of `m3` names `nmae`, which the model does not return\n --> models/m3.sql:1:52",
        "help: did you mean `name`?",
        "3 models failed, 1 succeeded",
    ] {
        assert!(ran.stderr.contains(expected), "{expected}\n{}", ran.stderr);
    }
}

/// A memory limit too small to run in, or no threads, is refused; a join
/// over the limit says what ran out of memory and what to do, whole.
#[test]
fn memory_limits_are_checked_and_a_join_over_the_limit_is_explained() {
    let mut csv = String::from("id,name\n");
    for i in 0..400_000 {
        csv.push_str(&format!("{i},{}{i}\n", "n".repeat(60)));
    }
    let p = TestProject::new()
        .file("data/big.csv", &csv)
        .file("models/sources.yml", "sources:\n  - name: s\n    tables:\n      - {name: big, path: data/big.csv}\n")
        .model(
            "joined.sql",
            "{{ config(materialized='table') }}\nselect a.id from {{ source('s', 'big') }} a join {{ source('s', 'big') }} b on a.name = b.name",
        );
    for (flag, value, says) in [
        ("--memory-limit", "0", "0 B is too little to run queries in; give at least 32MB"),
        ("--memory-limit", "10MB", "is too little to run queries in"),
        ("--memory-limit", "lots", "`lots` is not a size such as `4GB`"),
        ("--threads", "0", "give 1 or more models to run at once"),
    ] {
        let ran = p.run(["run", flag, value]);
        assert_eq!(ran.code, Some(2), "{flag} {value}: {}", ran.stderr);
        assert!(ran.stderr.contains(says), "{flag} {value}: {}", ran.stderr);
    }
    let ran = p.run(["run", "--memory-limit", "32MB", "--no-load"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains("`joined` ran out of memory: a hash join's build side needs more than `--memory-limit` allows"),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("note: consumer: HashJoinInput"), "{}", ran.stderr);
    assert!(ran.stderr.contains("help: this operator holds its input in memory and cannot spill"), "{}", ran.stderr);
    assert!(!ran.stderr.contains("(across reservations) as:"), "{}", ran.stderr);
}

/// A contract mismatch is found while planning: nothing is staged.
#[test]
fn a_broken_contract_stages_nothing() {
    let p = TestProject::new()
        .model("ok.sql", "{{ config(materialized='table') }}\nselect 1 as id")
        .model("typed.sql", "{{ config(materialized='table') }}\nselect 'x' as id")
        .file(
            "models/schema.yml",
            "models:\n  - name: typed\n    config:\n      contract: {enforced: true}\n    columns:\n      - name: id\n        data_type: bigint\n",
        );
    let ran = p.run(["run"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("does not match its enforced contract"), "{}", ran.stderr);
    assert!(!p.path().join(".ferry/stage/typed").exists());
    assert!(p.path().join(".ferry/stage/ok").exists(), "independent models still run");
}

/// A view that two models read is computed once, not expanded into both.
#[test]
fn a_view_read_twice_is_computed_once_and_ephemerals_inline() {
    let p = TestProject::new()
        .model("base.sql", "select * from (values (1), (2), (3)) as t(id)")
        .model("eph.sql", "{{ config(materialized='ephemeral') }}\nselect id * 10 as id from {{ ref('base') }}")
        .model("left_side.sql", "{{ config(materialized='table') }}\nselect sum(id) as s from {{ ref('base') }}")
        .model("right_side.sql", "{{ config(materialized='table') }}\nselect max(id) as m from {{ ref('eph') }}");
    let ran = p.run(["run"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stderr.contains("computed once"), "{}", ran.stderr);
    let results = p.run_results();
    let base = node_result(&results, "model.shop.base").unwrap();
    assert_eq!(base["rows"], 3);
    assert!(!p.path().join(".ferry/stage/base").exists(), "a view is never staged");
    assert!(!p.path().join(".ferry/scratch").exists(), "scratch space is removed");
    assert_eq!(stage_manifest(&p, "right_side")["row_count"], 1);
}

/// `config(enabled=false)` inside a template removes the model, or the
/// singular test (dbt-utils disables a flaky one this way).
#[test]
fn a_template_can_disable_its_model() {
    let p = TestProject::new()
        .model("off.sql", "{{ config(enabled=false) }}\nselect 1 as id")
        .model("on.sql", "{{ config(materialized='table') }}\nselect 1 as id")
        .file("tests/never_fails.sql", "{{ config(enabled=false) }}\nselect * from {{ ref('on') }}")
        .file("tests/none_bad.sql", "select * from {{ ref('on') }} where id <> 1");
    let ran = p.run(["build", "--no-load"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(!ran.stderr.contains("off"), "{}", ran.stderr);
    let ls = p.run(["ls"]);
    assert!(!ls.stdout.contains("off") && !ls.stdout.contains("never_fails"), "{}", ls.stdout);
    assert!(ls.stdout.contains("none_bad"), "{}", ls.stdout);
}

/// A seed's declared timestamps read as PostgreSQL's COPY reads them (what
/// `dbt seed` loads through): times without seconds too; a value that is
/// no time still fails the seed, naming the value; `float` is a double.
#[tokio::test]
async fn seed_timestamps_without_seconds_and_floats_read_as_in_postgres() {
    let p = TestProject::new()
        .file("seeds/ticks.csv", "at,x\n2021-01-01 00:00,62.3888186\n2021-01-01T01:30,1\n2021-01-01 02:00:05.5,2\n,3\n")
        .file(
            "seeds/schema.yml",
            "seeds:\n  - name: ticks\n    config:\n      column_types: {at: timestamp, x: float}\n",
        );
    let ran = p.run(["seed"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let columns = &stage_manifest(&p, "ticks")["columns"];
    assert_eq!(columns[1]["data_type"], "Float64");
    let rows = p.query_stages(&["ticks"], "select cast(at as varchar) as at, cast(x as varchar) as x from ticks").await;
    assert_eq!(
        rows,
        vec![
            "|                         | 3.0        |",
            "| 2021-01-01T00:00:00     | 62.3888186 |",
            "| 2021-01-01T01:30:00     | 1.0        |",
            "| 2021-01-01T02:00:05.500 | 2.0        |",
        ]
    );
    let p = p.file("seeds/ticks.csv", "at,x\n2021-01-01 00:00,1\nsoon,2\n");
    let ran = p.run(["seed"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("ticks") && ran.stderr.contains("soon"), "{}", ran.stderr);
}

/// Seeds with `column_types`, staged by `ferry seed`; `run` reads them.
#[tokio::test]
async fn seeds_stage_with_their_column_types() {
    let p = TestProject::new()
        .file("seeds/rates.csv", "code,rate\nEUR,1.10\nGBP,1.27\n")
        .file("seeds/schema.yml", "seeds:\n  - name: rates\n    config:\n      column_types: {rate: 'decimal(6,3)'}\n")
        .model("eur.sql", "{{ config(materialized='table') }}\nselect rate from {{ ref('rates') }} where code = 'EUR'");
    let ran = p.run(["seed"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let columns = &stage_manifest(&p, "rates")["columns"];
    assert_eq!(columns[1]["data_type"], "Decimal128(6, 3)");
    assert!(!p.path().join(".ferry/stage/eur").exists(), "`seed` runs no models");
    assert_eq!(p.run(["run"]).code, Some(0));
    assert_eq!(p.query_stages(&["eur"], "select rate from eur").await, vec!["| 1.100 |"]);
    // Models read a seed as it was seeded (dbt reads the table `dbt seed`
    // made), until it is seeded again.
    let p = p.file("seeds/rates.csv", "code,rate\nEUR,1.20\nGBP,1.27\n");
    assert_eq!(p.run(["run"]).code, Some(0));
    assert_eq!(p.query_stages(&["eur"], "select rate from eur").await, vec!["| 1.100 |"]);
    assert_eq!(p.run(["build"]).code, Some(0));
    assert_eq!(p.query_stages(&["eur"], "select rate from eur").await, vec!["| 1.200 |"]);
}

#[test]
fn show_previews_a_model_as_a_table() {
    let p = TestProject::new()
        .model("nums.sql", "select * from (values (1, 'a'), (2, 'b'), (3, 'c')) as t(n, s) order by n");
    let ran = p.run(["show", "--select", "nums", "--limit", "2"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    insta::assert_snapshot!(ran.stdout, @r"
    +---+---+
    | n | s |
    +---+---+
    | 1 | a |
    | 2 | b |
    +---+---+
    ");
}

/// `--limit 0` and empty results still show the columns; a syntax error in
/// `--inline` SQL is a diagnostic with a caret, in ferry's words; a model
/// with rules is previewed with a warning that its rows are not checked.
#[test]
fn show_prints_columns_of_no_rows_points_at_inline_errors_and_warns_of_unchecked_rows() {
    let p = TestProject::new()
        .model("nums.sql", "{{ config(materialized='table') }}\nselect * from (values (1, 'a'), (1, 'b')) as t(n, s)")
        .file("models/schema.yml", "models:\n  - name: nums\n    dedupe:\n      key: [n]\n");
    let none = p.run(["show", "--select", "nums", "--limit", "0"]);
    assert_eq!(none.code, Some(0), "{}", none.stderr);
    assert_eq!(none.stdout, "+---+---+\n| n | s |\n+---+---+\n+---+---+\n");
    assert!(
        none.stderr.contains("warning[F0403]: these are the rows `nums` produces before its rules and dedupe"),
        "{}",
        none.stderr
    );
    let bad = p.run(["show", "--inline", "select n from {{ ref('nums') }} whre n = 1"]);
    assert_eq!(bad.code, Some(1), "{}", bad.stderr);
    assert!(!bad.stderr.contains("ParserError"), "{}", bad.stderr);
    assert!(bad.stderr.contains("error[F0301]: SQL syntax error:"), "{}", bad.stderr);
    assert!(bad.stderr.contains("--> --inline:1:"), "{}", bad.stderr);
}

/// The bundled example migration (the repository root) builds.
#[tokio::test]
async fn the_example_migration_builds() {
    let p = TestProject::example();
    let ran = p.run(["build"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let customers = stage_manifest(&p, "customers");
    let dups =
        p.query_stages(&["customers"], "select count(*) - count(distinct customer_id) as d from customers").await;
    assert_eq!(dups.iter().map(|l| l.trim_matches(['|', ' '])).collect::<Vec<_>>(), vec!["0"], "one row per customer");
    assert!(customers["row_count"].as_u64().unwrap() > 0);
}

/// Every date and time column is staged with a Parquet logical type, so
/// that other readers (DuckDB, pyarrow) read the stage as ferry does:
/// Arrow's second-precision timestamps and times and `Date64`, which
/// Parquet has no type for, are widened (never a bare INT64).
#[tokio::test]
async fn every_staged_time_type_has_a_parquet_logical_type() {
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    let sql = "{{ config(materialized='table') }}\nselect 1 as id, \
        arrow_cast(timestamp '2024-01-02 03:04:05', 'Timestamp(Second, None)') as ts_s, \
        arrow_cast(timestamp '2024-01-02 03:04:05', 'Timestamp(Millisecond, None)') as ts_ms, \
        timestamp '2024-01-02 03:04:05' as ts_ns, \
        arrow_cast(timestamp '2024-01-02 03:04:05', 'Timestamp(Second, Some(\"UTC\"))') as tstz_s, \
        arrow_cast(date '2024-01-02', 'Date64') as d64, date '2024-01-02' as d32, \
        arrow_cast(arrow_cast(time '03:04:05', 'Time64(Microsecond)'), 'Time32(Second)') as t_s, \
        time '03:04:05' as t_us";
    let p = TestProject::new().model("times.sql", sql);
    let ran = p.run(["run"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let dir = p.path().join(".ferry/stage/times");
    let file = fs_err::read_dir(&dir)
        .expect("the stage")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .expect("a Parquet file");
    let reader = SerializedFileReader::new(fs_err::File::open(&file).expect("open").into_parts().0).expect("Parquet");
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    for column in schema.columns().iter().filter(|c| c.name() != "id") {
        assert!(column.logical_type_ref().is_some(), "`{}` has no logical type: {:?}", column.name(), column);
    }
    let rows = p.query_stages(&["times"], "select ts_s, tstz_s, d64, t_s from times").await;
    assert_eq!(rows, ["| 2024-01-02T03:04:05 | 2024-01-02T03:04:05Z | 2024-01-02 | 03:04:05 |"]);
}

/// `ferry show -s <seed>` shows the seed's rows, before it is seeded (from
/// its CSV) and after (from its stage).
#[test]
fn show_previews_a_seed() {
    let p = TestProject::new()
        .file("seeds/events.csv", "id,at\n1,2024-01-01 10:00:00\n2,2024-01-02 11:00:00\n")
        .model("ev.sql", "select * from {{ ref('events') }}");
    for step in ["before", "after"] {
        if step == "after" {
            assert_eq!(p.run(["seed"]).code, Some(0));
        }
        let shown = p.run(["show", "-s", "events", "--format", "json"]);
        assert_eq!(shown.code, Some(0), "{step}: {}", shown.stderr);
        assert!(shown.stdout.contains("\"at\":\"2024-01-02T11:00:00\""), "{step}: {}", shown.stdout);
    }
}
