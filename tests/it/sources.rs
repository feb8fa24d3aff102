//! Legacy export formats as sources: Excel, XML, JSON arrays and nested
//! JSON, fixed-width files and text in other encodings, read from the
//! fixtures in `tests/fixtures/legacy/` (`make_binary.py` writes the binary
//! ones), each with its malformed records.

use std::path::Path;

use crate::common::{TestProject, copy_dir};

/// A project with the legacy fixtures under `data/`, one source table per
/// entry of `tables` (YAML for the table, indented under `tables:`), and a
/// `table` model `m_<name>` selecting `select` from each.
fn project(tables: &[(&str, &str, &str)]) -> TestProject {
    let mut yml = String::from("sources:\n  - name: legacy\n    tables:\n");
    for (name, keys, _) in tables {
        yml.push_str(&format!("      - name: {name}\n"));
        for line in keys.lines() {
            yml.push_str(&format!("        {line}\n"));
        }
    }
    let mut p = TestProject::new().file("models/sources.yml", &yml);
    for (name, _, select) in tables {
        p = p.model(
            &format!("m_{name}.sql"),
            &format!(
                "{{{{ config(materialized='table') }}}}\nselect {select} from {{{{ source('legacy', '{name}') }}}}"
            ),
        );
    }
    let data = p.path().join("data");
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy"), data.as_std_path());
    p
}

/// The rows of model `m` as JSON lines (NULLs left out), sorted.
fn rows(p: &TestProject, model: &str) -> Vec<String> {
    let shown = p.run(["show", "-s", model, "--format", "json", "--limit", "100"]);
    assert_eq!(shown.code, Some(0), "{}", shown.stderr);
    let mut lines: Vec<String> = shown.stdout.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect();
    lines.sort();
    lines
}

fn run_ok(p: &TestProject) {
    let ran = p.run(["run"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
}

/// Runs and expects failure: the error output.
fn run_fails(p: &TestProject) -> String {
    let ran = p.run(["run"]);
    assert_eq!(ran.code, Some(1), "expected a failed run:\n{}\n{}", ran.stdout, ran.stderr);
    ran.stderr
}

#[test]
fn excel_sheets_by_name_and_position_with_header_row_and_range() {
    let p = project(&[
        ("xlsx", "path: data/customers.xlsx\nsheet: Customers\nheader_row: 3", "*"),
        ("xls", "path: data/customers.xls\nsheet: 0", "*"),
        ("orders", "path: data/customers.xlsx\nsheet: Orders\nrange: B3:D6", "*"),
    ]);
    run_ok(&p);
    assert_eq!(
        rows(&p, "m_xlsx"),
        vec![
            r#"{"id":1,"name":"Zoë Ärger","balance":1250.5,"joined":"2021-03-04","active":true,"account":"0017"}"#,
            r#"{"id":2,"name":"Bob","balance":0.0,"joined":"2022-01-01","active":false,"account":"0027"}"#,
            r#"{"id":3,"name":"Chloé","balance":-12.25,"joined":"2023-05-06","active":true,"account":"0037"}"#,
        ]
    );
    assert_eq!(
        rows(&p, "m_xls"),
        vec![
            r#"{"id":1,"name":"Zoë Ärger","balance":1250.5,"joined":"2021-03-04","active":true}"#,
            r#"{"id":2,"name":"Bob","balance":0.0,"joined":"2022-01-01","active":false}"#,
            r#"{"id":3,"name":"Chloé","balance":-12.25,"joined":"2023-05-06","active":true}"#,
        ]
    );
    assert_eq!(
        rows(&p, "m_orders"),
        vec![r#"{"order_id":10,"sku":"A-1","qty":2}"#, r#"{"order_id":11,"sku":"B-7","qty":1}"#]
    );
}

#[test]
fn excel_declared_types_apply_and_errors_name_sheet_and_cell() {
    let p = project(&[(
        "xlsx",
        "path: data/customers.xlsx\nsheet: Customers\nheader_row: 3\ncolumns:\n  - name: balance\n    data_type: decimal(10,2)",
        "id, balance",
    )]);
    run_ok(&p);
    assert_eq!(
        rows(&p, "m_xlsx"),
        vec![r#"{"id":1,"balance":1250.50}"#, r#"{"id":2,"balance":0.00}"#, r#"{"id":3,"balance":-12.25}"#]
    );

    let p = project(&[("broken", "path: data/customers.xlsx\nsheet: Broken", "*")]);
    let err = run_fails(&p);
    assert!(
        err.contains(
            "cannot read `legacy.broken`: cell B3 (column `ratio`) holds the error #DIV/0! (sheet `Broken`, row 3)"
        ),
        "{err}"
    );
    assert!(err.contains("data/customers.xlsx"), "{err}");

    let p = project(&[("gone", "path: data/customers.xlsx\nsheet: Custmers", "*")]);
    let err = run_fails(&p);
    assert!(
        err.contains("the workbook has no sheet `Custmers`; its sheets are `Summary`, `Customers`, `Broken`, `Orders`"),
        "{err}"
    );
    assert!(err.contains("did you mean `Customers`"), "{err}");
}

#[test]
fn xml_records_with_attributes_nesting_repeats_and_paths() {
    let p = project(&[(
        "customers",
        "path: data/customers.xml\nrecord_path: /export/customers/customer\ncolumns:\n  - name: city\n    path: address/city\n  - name: address_kind\n    path: address/@kind\n  - name: balance\n    data_type: decimal(10,2)",
        "id, status, name, balance, joined, city, address_kind, phone, note, address",
    )]);
    run_ok(&p);
    assert_eq!(
        rows(&p, "m_customers"),
        vec![
            r#"{"id":1,"status":"active","name":"Zoë & Ärger","balance":1250.50,"joined":"2021-03-04","city":"Zürich","address_kind":"home","phone":"[\"+41 44 000 00 01\",\"+41 79 000 00 02\"]","address":"{\"@kind\":\"home\",\"city\":\"Zürich\",\"zip\":\"8001\"}"}"#,
            r#"{"id":2,"status":"closed","name":"Bob <the builder>","balance":0.00,"joined":"2022-01-01","city":"Köln","address_kind":"work","note":"","address":"{\"@kind\":\"work\",\"city\":\"Köln\",\"zip\":\"50667\"}"}"#,
            r#"{"id":3,"status":"active","name":"Chloé","balance":-12.25,"joined":"2023-05-06"}"#,
        ]
    );
}

#[test]
fn malformed_xml_names_file_and_line() {
    let p = project(&[("bad", "path: data/customers_malformed.xml\nrecord_path: customer", "*")]);
    let err = run_fails(&p);
    assert!(err.contains("cannot read `legacy.bad`: malformed XML"), "{err}");
    assert!(err.contains("(line 3)"), "{err}");
    assert!(err.contains("data/customers_malformed.xml:3"), "{err}");
}

#[test]
fn deeply_nested_xml_reads_and_past_the_limit_is_a_diagnostic() {
    let nested = |depth: usize| {
        format!("<export><r><id>1</id><n>{}x{}</n></r></export>\n", "<a>".repeat(depth), "</a>".repeat(depth))
    };
    let p = project(&[("deep", "path: data/deep.xml\nrecord_path: /export/r", "id, length(n) as n_length")])
        .file("data/deep.xml", &nested(7_000));
    run_ok(&p);
    assert_eq!(rows(&p, "m_deep").len(), 1);
    let p = p.file("data/deep.xml", &nested(1_000_000));
    let err = run_fails(&p);
    assert!(err.contains("elements nested more than 10000 levels deep (at `<a>`)"), "{err}");
    assert!(err.contains("data/deep.xml:1"), "{err}");
}

#[test]
fn json_arrays_documents_and_nested_paths() {
    let p = project(&[
        (
            "customers",
            "path: data/customers.json\ncolumns:\n  - name: city\n    path: address.city\n  - name: lat\n    path: $.address.geo.lat",
            "id, name, balance, city, lat",
        ),
        (
            "orders",
            "path: data/export.json\nrecords: data.items\ncolumns:\n  - name: customer_id\n    path: customer.id\n  - name: city\n    path: customer.address.city\n  - name: total\n    data_type: decimal(8,2)",
            "order_id, customer_id, city, total",
        ),
    ]);
    run_ok(&p);
    assert_eq!(
        rows(&p, "m_customers"),
        vec![
            r#"{"id":1,"name":"Zoë","balance":1250.5,"city":"Zürich","lat":47.37}"#,
            r#"{"id":2,"name":"Bob","balance":0.0,"city":"Köln"}"#,
            r#"{"id":3,"name":"Chloé","balance":-12.25}"#,
        ]
    );
    assert_eq!(
        rows(&p, "m_orders"),
        vec![
            r#"{"order_id":10,"customer_id":1,"city":"Zürich","total":19.90}"#,
            r#"{"order_id":11,"customer_id":3,"city":"Paris","total":5.00}"#,
        ]
    );
}

#[test]
fn malformed_json_array_names_the_line() {
    let p = project(&[("bad", "path: data/orders_malformed.json", "*")]);
    let err = run_fails(&p);
    assert!(err.contains("cannot read `legacy.bad`: malformed JSON"), "{err}");
    assert!(err.contains("data/orders_malformed.json:5"), "{err}");
}

#[test]
fn fixed_width_layout_with_record_types_and_encoding() {
    let layout = "path: data/customers_fixed.txt\nformat: fixed_width\nencoding: windows-1252\ndate_format: '%Y%m%d'\nrecord_type: {start: 1, width: 1, value: D}\nlayout:\n  - {name: id, start: 2, width: 5, type: bigint}\n  - {name: name, start: 7, width: 20}\n  - {name: balance, start: 27, width: 10, type: 'decimal(10,2)'}\n  - {name: joined, start: 37, width: 8, type: date}";
    let p = project(&[("fixed", layout, "*")]);
    run_ok(&p);
    assert_eq!(
        rows(&p, "m_fixed"),
        vec![
            r#"{"id":1,"name":"Zoë Ärger","balance":1250.50,"joined":"2021-03-04"}"#,
            r#"{"id":2,"name":"Bob","balance":0.00,"joined":"2022-01-01"}"#,
            r#"{"id":3,"name":"Chloé","balance":-12.25,"joined":"2023-05-06"}"#,
        ]
    );
}

#[test]
fn fixed_width_short_lines_and_bad_values_name_the_line() {
    let layout = "path: data/customers_short.txt\nformat: fixed_width\nlayout:\n  - {name: id, start: 2, width: 5, type: bigint}\n  - {name: name, start: 7, width: 20}\n  - {name: balance, start: 27, width: 10}";
    let p = project(&[("short", layout, "*")]);
    let err = run_fails(&p);
    assert!(
        err.contains("cannot read `legacy.short`: short line: it has 9 characters, but field `balance` starts at position 27 (line 2)"),
        "{err}"
    );
    assert!(err.contains("data/customers_short.txt:2"), "{err}");

    // The name field read as a number: the first bad value is named.
    let layout = "path: data/customers_fixed.txt\nformat: fixed_width\nencoding: latin1\nrecord_type: {start: 1, width: 1, values: [D]}\nlayout:\n  - {name: id, start: 2, width: 5}\n  - {name: name, start: 7, width: 20, type: int}";
    let p = project(&[("typed", layout, "*")]);
    let err = run_fails(&p);
    assert!(
        err.contains("cannot read `legacy.typed`: `Zoë Ärger` in column `name` is not a valid Int32 (line 2)"),
        "{err}"
    );
    assert!(err.contains("data/customers_fixed.txt:2"), "{err}");
}

#[test]
fn csv_in_legacy_encodings_is_transcoded() {
    let p = project(&[
        ("cp1252", "path: data/customers_1252.csv\ndelimiter: ';'\nencoding: windows-1252", "*"),
        ("utf16", "path: data/customers_utf16.csv\nencoding: utf-16", "*"),
    ]);
    run_ok(&p);
    let expected = vec![
        r#"{"id":1,"name":"Zoë","city":"Zürich"}"#,
        r#"{"id":2,"name":"Renée","city":"Besançon"}"#,
        r#"{"id":3,"name":"€uro Ltd","city":"Köln"}"#,
    ];
    assert_eq!(rows(&p, "m_cp1252"), expected);
    assert_eq!(rows(&p, "m_utf16"), expected);
}

#[test]
fn invalid_utf8_is_an_error_naming_line_and_offset_or_replaced() {
    let p = project(&[("bad", "path: data/customers_bad_utf8.csv\ndelimiter: ';'", "*")]);
    let err = run_fails(&p);
    assert!(err.contains("cannot read `legacy.bad`: invalid UTF-8 (byte 0xE9) at line 3, byte offset 33"), "{err}");
    assert!(err.contains("set `on_invalid: replace`"), "{err}");

    let p = project(&[("bad", "path: data/customers_bad_utf8.csv\ndelimiter: ';'\non_invalid: replace", "*")]);
    let ran = p.run(["run"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("replaced 2 invalid byte sequence(s) in `data/customers_bad_utf8.csv`"),
        "{}",
        ran.stderr
    );
    assert_eq!(
        rows(&p, "m_bad"),
        vec![r#"{"id":1,"name":"Zoë","city":"Zürich"}"#, r#"{"id":2,"name":"Ren�e","city":"Besan�on"}"#]
    );
}

/// Past the rows DataFusion's CSV reader samples for the schema, the bad
/// byte is found while the model runs, and still named exactly.
#[test]
fn invalid_utf8_deep_in_a_large_csv_is_named_while_running() {
    let mut text = String::from("id,name\n");
    for i in 1..=1500 {
        text.push_str(&format!("{i},name {i}\n"));
    }
    let offset = text.len() + "1501,caf".len();
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(b"1501,caf\xe9\n");
    let p = project(&[("big", "path: data/big.csv", "*")]);
    fs_err::write(p.path().join("data/big.csv"), bytes).unwrap();
    let err = run_fails(&p);
    assert!(
        err.contains(&format!(
            "cannot read `legacy.big`: invalid UTF-8 (byte 0xE9) at line 1502, byte offset {offset}"
        )),
        "{err}"
    );
    assert!(err.contains("data/big.csv:1502"), "{err}");
}

#[test]
fn reader_keys_that_cannot_work_are_named() {
    let p = project(&[
        ("a", "path: data/customers.xml", "*"),
        ("b", "path: data/customers_1252.csv\nencoding: klingon", "*"),
        (
            "c",
            "path: data/customers_fixed.txt\nformat: fixed_width\nlayout:\n  - {name: a, start: 1, width: 5}\n  - {name: b, start: 3, width: 5}",
            "*",
        ),
    ]);
    let ran = p.run(["run"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("source `legacy.a`: `format: xml` needs `record_path`"), "{}", ran.stderr);
    assert!(ran.stderr.contains("source `legacy.b`: unknown `encoding: klingon`"), "{}", ran.stderr);
    assert!(ran.stderr.contains("source `legacy.c`: `layout` entry 2: `b` overlaps `a`"), "{}", ran.stderr);
}

/// `on_error: quarantine`: records that cannot be read are set aside with
/// their raw text and logged, the rest are staged, and the run succeeds.
#[test]
fn malformed_records_can_be_quarantined_instead_of_failing() {
    let p = project(&[
        (
            "short",
            "path: data/customers_short.txt\nformat: fixed_width\non_error: quarantine\nlayout:\n  - {name: id, start: 2, width: 5, type: bigint}\n  - {name: name, start: 7, width: 20}\n  - {name: balance, start: 27, width: 10}",
            "id, name",
        ),
        (
            "typed",
            "path: data/customers_fixed.txt\nformat: fixed_width\nencoding: windows-1252\non_error: quarantine\nrecord_type: {start: 1, width: 1, value: D}\nlayout:\n  - {name: id, start: 2, width: 5, type: bigint}\n  - {name: balance, start: 27, width: 10, type: int}",
            "id, balance",
        ),
        ("broken", "path: data/customers.xlsx\nsheet: Broken\non_error: quarantine", "*"),
        ("lines", "path: data/orders.ndjson\nformat: json\non_error: quarantine", "*"),
    ]);
    fs_err::write(
        p.path().join("data/orders.ndjson"),
        "{\"order_id\": 1, \"total\": 2.5}\n{\"order_id\": 2, \"total\": \n{\"order_id\": 3, \"total\": 4}\n",
    )
    .unwrap();
    let ran = p.run(["run"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stderr.contains("`source.legacy.short`: 1 record(s) quarantined to `.ferry/runs/"), "{}", ran.stderr);
    assert_eq!(rows(&p, "m_short"), vec![r#"{"id":1,"name":"Ann"}"#]);
    // 1250.50 and -12.25 are not integers; 0000000.00 is not either.
    assert_eq!(rows(&p, "m_typed"), Vec::<String>::new());
    assert_eq!(rows(&p, "m_broken"), vec![r#"{"id":1,"ratio":0.5}"#]);
    assert_eq!(rows(&p, "m_lines"), vec![r#"{"order_id":1,"total":2.5}"#, r#"{"order_id":3,"total":4.0}"#]);

    let run = fs_err::read_dir(p.path().join(".ferry/runs")).unwrap().next().unwrap().unwrap().path();
    let short = fs_err::read_to_string(run.join("quarantine/source.legacy.short.csv")).unwrap();
    assert_eq!(
        short,
        "file,line,problem,raw\ndata/customers_short.txt,2,\"short line: it has 9 characters, but field `balance` starts at position 27\",D00002Bea\n"
    );
    let typed = fs_err::read_to_string(run.join("quarantine/source.legacy.typed.csv")).unwrap();
    assert_eq!(typed.lines().count(), 4, "{typed}");
    assert!(
        typed.contains(
            "data/customers_fixed.txt,2,`0001250.50` in column `balance` is not a valid Int32,D00001Zoë Ärger"
        ),
        "{typed}"
    );
    let broken = fs_err::read_to_string(run.join("quarantine/source.legacy.broken.csv")).unwrap();
    assert!(broken.contains("cell B3 (column `ratio`) holds the error #DIV/0!"), "{broken}");
    let lines = fs_err::read_to_string(run.join("quarantine/source.legacy.lines.csv")).unwrap();
    assert!(lines.contains("data/orders.ndjson,2,malformed JSON"), "{lines}");

    let errors = p.run(["errors", "--format", "json"]);
    assert_eq!(errors.code, Some(0), "{}", errors.stderr);
    let logged: Vec<serde_json::Value> = errors.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let of = |model: &str| logged.iter().filter(|l| l["model"] == model).count();
    assert_eq!(
        (of("source.legacy.short"), of("source.legacy.typed"), of("source.legacy.broken"), of("source.legacy.lines")),
        (1, 3, 1, 1),
        "{logged:?}"
    );
    let value = logged.iter().find(|l| l["model"] == "source.legacy.typed").unwrap();
    assert_eq!(
        (&value["rule"], &value["column"]),
        (&serde_json::json!("invalid_value"), &serde_json::json!("balance"))
    );
}

/// CSV under `on_error: quarantine` is read record by record: a record with
/// too few or too many fields, or a value that does not convert to its
/// declared type, is set aside with its line and text (a quoted field's line
/// breaks counted); the rest are staged. Parquet records cannot be set aside.
#[test]
fn malformed_csv_records_can_be_quarantined() {
    let p = project(&[
        (
            "orders",
            "path: data/orders_dirty.csv\non_error: quarantine\nnull_strings: ['n/a']\ncolumns:\n  - {name: amount, data_type: 'decimal(8,2)'}\n  - {name: placed, data_type: date}",
            "*",
        ),
        ("latin", "path: data/customers_1252.csv\nencoding: windows-1252\non_error: quarantine", "count(*) as n"),
    ]);
    fs_err::write(
        p.path().join("data/orders_dirty.csv"),
        "id,amount,placed,note\n1,10.50,2024-01-31,\"two\nlines\"\n2,abc,2024-02-01,x\n3,7.25\n4,1.00,2024-13-01,y\n5,2.00,2024-03-01,z,extra\n6,n/a,2024-03-02,\n",
    )
    .unwrap();
    let ran = p.run(["run"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stderr.contains("`source.legacy.orders`: 4 record(s) quarantined to `.ferry/runs/"), "{}", ran.stderr);
    assert_eq!(
        rows(&p, "m_orders"),
        [r#"{"id":1,"amount":10.50,"placed":"2024-01-31","note":"two\nlines"}"#, r#"{"id":6,"placed":"2024-03-02"}"#,]
    );
    let run = fs_err::read_dir(p.path().join(".ferry/runs")).unwrap().next().unwrap().unwrap().path();
    let quarantined = fs_err::read_to_string(run.join("quarantine/source.legacy.orders.csv")).unwrap();
    assert_eq!(
        quarantined,
        "file,line,problem,raw\n\
         data/orders_dirty.csv,4,\"`abc` in column `amount` is not a valid Decimal128(8, 2)\",\"2,abc,2024-02-01,x\"\n\
         data/orders_dirty.csv,5,\"the record has 2 fields, the header 4\",\"3,7.25\"\n\
         data/orders_dirty.csv,6,`2024-13-01` in column `placed` is not a valid Date32,\"4,1.00,2024-13-01,y\"\n\
         data/orders_dirty.csv,7,\"the record has 5 fields, the header 4\",\"5,2.00,2024-03-01,z,extra\"\n"
    );
    // Another encoding, read the same way.
    assert_eq!(rows(&p, "m_latin"), [r#"{"n":3}"#]);

    let p = project(&[("p", "path: data/x.parquet\non_error: quarantine", "*")]);
    let ran = p.run(["run"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("a Parquet file's records are typed"), "{}", ran.stderr);
}
