//! Masked runs: personal data loaded into PostgreSQL, MariaDB and SQLite
//! with `masking: true`. No clear value of a masked column may appear in
//! any file under `.ferry/` (Parquet read back cell by cell), in the
//! target, or in anything ferry prints; keys and foreign keys still join;
//! the same input gives the same masked value in two tables and two runs.

use std::collections::BTreeSet;
use std::process::Output;

use camino::Utf8Path;

use crate::common::TestProject;
use crate::load::Db;

const KEY: &str = "a masking key for the tests, not a secret";

const CUSTOMERS: &str = "id,first_name,email,phone,ssn,birth_date,city\n\
1,Adaline,adaline.lovelace@example.com,+44 20 7946 0958,123-45-6789,1985-12-10,London\n\
2,Bartholomew,bart.simpson@springfield.org,(555) 010-9999,987-65-4321,1990-04-01,Springfield\n\
3,Cyrielle,cyrielle@example.fr,555-0100,555-12-3456,1979-07-30,Paris\n\
4,Dorothea,dorothea@example.de,+49 30 1234567,222-33-4444,1969-02-30,Berlin\n";

const ORDERS: &str = "order_id,customer_email,amount\n\
100,adaline.lovelace@example.com,12.50\n\
101,bart.simpson@springfield.org,3.00\n\
102,adaline.lovelace@example.com,7.25\n";

const SCHEMA: &str = "sources:\n  - name: crm\n    tables:\n      - name: customers\n        path: data/customers.csv\n        on_error: quarantine\n        columns:\n\
\x20         - name: id\n            mask: hash\n\
\x20         - name: first_name\n            mask: {policy: partial, keep_first: 1, keep_last: 0}\n\
\x20         - name: email\n            mask: email\n\
\x20         - name: phone\n            mask: phone\n\
\x20         - name: ssn\n            mask: hash\n\
\x20         - name: birth_date\n            data_type: date\n            mask: {policy: date_shift, days: 20}\n\
seeds:\n  - name: orders\n    columns:\n      - name: customer_email\n        mask: email\n\
models:\n  - name: customer_orders\n    columns:\n      - name: phone\n        rules:\n\
\x20         - length: {min: 10}\n\
\x20     - name: surname_ref\n        mask: hash\n";

const MODEL: &str = "{{ config(materialized='table') }}\n\
select c.id, c.first_name, c.email, c.phone, c.ssn, c.birth_date, c.city,\n\
       'Love' || 'lace-' || c.city as surname_ref, count(o.order_id) as orders, sum(o.amount) as total\n\
from {{ source('crm', 'customers') }} c left join {{ ref('orders') }} o on o.customer_email = c.email\n\
group by 1, 2, 3, 4, 5, 6, 7, 8";

/// Every clear value of a masked column.
const CLEAR: [&str; 23] = [
    "Dorothea",
    "dorothea@example.de",
    "222-33-4444",
    "1969-02-30",
    "Adaline",
    "Bartholomew",
    "Cyrielle",
    "adaline.lovelace",
    "lovelace@example.com",
    "bart.simpson",
    "springfield.org",
    "cyrielle@example.fr",
    "7946 0958",
    "010-9999",
    "555-0100",
    "123-45-6789",
    "987-65-4321",
    "555-12-3456",
    "1985-12-10",
    "1990-04-01",
    "1979-07-30",
    "Lovelace",
    "Simpson",
];

fn ferry(p: &TestProject, args: &[&str], key: Option<&str>) -> Output {
    let mut command = p.ferry(args);
    command.env_remove("FERRY_MASKING_KEY");
    if let Some(key) = key {
        command.env("FERRY_MASKING_KEY", key);
    }
    command.output().expect("ferry runs")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The clear values found in `what`, with where.
fn leaks(what: &str, haystack: &str) -> Vec<String> {
    let lower = haystack.to_lowercase();
    CLEAR.iter().filter(|c| lower.contains(&c.to_lowercase())).map(|c| format!("{what}: `{c}`")).collect()
}

/// Every file under `dir`: Parquet read back cell by cell, the rest as bytes.
fn scan(dir: &Utf8Path) -> Vec<String> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::DataType;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(dir).into_iter().filter_map(Result::ok).filter(|e| e.file_type().is_file()) {
        let path = entry.path();
        let shown = path.display().to_string();
        if path.extension().is_some_and(|e| e == "parquet") {
            let file = std::fs::File::open(path).unwrap();
            let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
            let mut cells = String::new();
            for batch in reader {
                for column in batch.unwrap().columns() {
                    let Ok(strings) = datafusion::arrow::compute::cast(column, &DataType::Utf8) else { continue };
                    for v in strings.as_string::<i32>().iter().flatten() {
                        cells.push_str(v);
                        cells.push('\n');
                    }
                }
            }
            found.extend(leaks(&shown, &cells));
        } else {
            found.extend(leaks(&shown, &String::from_utf8_lossy(&std::fs::read(path).unwrap())));
        }
    }
    found
}

fn project(db: &Db) -> TestProject {
    let p = crate::load::project_for(db, None, "      masking: true\n");
    p.file("data/customers.csv", CUSTOMERS)
        .file("seeds/orders.csv", ORDERS)
        .file("models/schema.yml", SCHEMA)
        .model("customer_orders.sql", MODEL)
}

async fn masked_everywhere(mut db: Db, p: TestProject) {
    let refused = ferry(&p, &["build"], None);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("target `t` says `masking: true`) but the environment has no `FERRY_MASKING_KEY`"),
        "{}",
        text(&refused)
    );

    let mut outputs = String::new();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let ran = ferry(&p, &["build", "--report"], Some(KEY));
        outputs.push_str(&text(&ran));
        assert_eq!(ran.status.code(), Some(0), "{}", text(&ran));
        runs.push(db.rows("customer_orders").await);
    }
    assert_eq!(runs[0], runs[1], "two runs, the same masked values");
    assert!(outputs.contains("1 quarantined"), "the phone rule sets one row aside: {outputs}");
    // Dorothea's impossible birth date sets her record aside as it is read.
    assert!(outputs.contains("source.crm.customers"), "{outputs}");
    for args in [&["show", "-s", "customer_orders"][..], &["errors"], &["audit"], &["test"]] {
        outputs.push_str(&text(&ferry(&p, args, Some(KEY))));
    }

    let customers = db.rows("customer_orders").await;
    let orders = db.rows("orders").await;
    let mut found = leaks("the output", &outputs);
    found.extend(leaks("the target", &format!("{customers:?}{orders:?}")));
    found.extend(scan(&p.path().join(".ferry")));
    assert!(found.is_empty(), "clear values found:\n{}", found.join("\n"));

    // The two customers with orders join theirs (two and one), the rule's
    // row aside: the masked emails of both tables match.
    assert_eq!(customers.len(), 2, "{customers:?}");
    assert!(customers.iter().any(|r| r.contains("19.75")) && customers.iter().any(|r| r.contains('3')));
    let emails: BTreeSet<String> = customers
        .iter()
        .flat_map(|r| r.split(['"', ' ', '=', ',', '\'']).map(str::to_owned).collect::<Vec<_>>())
        .filter(|w| w.contains('@'))
        .collect();
    assert_eq!(emails.len(), 2, "{customers:?}");
    for email in &emails {
        assert!(orders.iter().any(|o| o.contains(email.as_str())), "{email} in {orders:?}");
    }
    db.drop_schema().await;
}

#[tokio::test]
async fn masking_keeps_clear_values_out_of_postgres_and_every_file() {
    let Some(db) = Db::pg("masking").await else { return };
    let p = project(&db);
    masked_everywhere(db, p).await;
}

#[tokio::test]
async fn masking_keeps_clear_values_out_of_mariadb_and_every_file() {
    let Some(db) = Db::mysql("masking").await else { return };
    let p = project(&db);
    masked_everywhere(db, p).await;
}

#[tokio::test]
async fn masking_keeps_clear_values_out_of_sqlite_and_every_file() {
    // The SQLite target is a file in the project.
    let p = project(&Db::Lite { path: Default::default() });
    masked_everywhere(Db::sqlite(&p), p).await;

    // The scan finds what an unmasked run leaves, in Parquet and beside.
    let p = project(&Db::Lite { path: Default::default() });
    let p = p.file("profiles.yml", &Db::Lite { path: Default::default() }.profiles("").replace("PROFILE", "shop"));
    assert_eq!(ferry(&p, &["build"], None).status.code(), Some(0));
    let found = scan(&p.path().join(".ferry"));
    assert!(found.iter().any(|f| f.contains(".parquet: `Adaline`")), "{found:?}");
    assert!(found.iter().any(|f| f.contains("ferry.db: `123-45-6789`")), "{found:?}");
}

/// The policies that need no key, on a source's columns and a model's, and
/// the refusal of a policy on a type it cannot mask.
#[test]
fn every_policy_masks_as_written() {
    let schema = "sources:\n  - name: crm\n    tables:\n      - name: people\n        path: data/people.csv\n        columns:\n\
\x20         - name: name\n            mask: {sql: \"left(name, 1) || '.'\"}\n\
\x20         - name: email\n            mask: {policy: redact, value: \"(removed)\"}\n\
\x20         - name: phone\n            mask: \"null\"\n\
\x20         - name: ssn\n            mask: {policy: partial, keep_first: 0, keep_last: 4}\n\
\x20         - name: born\n            data_type: date\n            mask: {policy: generalize, to: month}\n\
models:\n  - name: people\n    columns:\n      - name: full_name\n        mask: {policy: partial, keep_first: 2, keep_last: 0}\n";
    let p = TestProject::new()
        .file("data/people.csv", "name,email,phone,ssn,born\nAdaline,ada@x.org,555-0100,123-45-6789,1985-12-10\n")
        .file("models/schema.yml", schema)
        .model("people.sql", "select *, 'Adaline Lovelace' as full_name from {{ source('crm', 'people') }};");
    let shown = ferry(&p, &["show", "-s", "people", "--mask", "--format", "json"], Some(KEY));
    assert_eq!(shown.status.code(), Some(0), "{}", text(&shown));
    let row: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("one JSON row");
    assert_eq!(
        row,
        serde_json::json!({
            "name": "A.", "email": "(removed)", "ssn": "*******6789", "born": "1985-12-01",
            "full_name": "Ad**************"
        }),
        "phone is NULL, so absent"
    );

    let p = p.file("models/schema.yml", &schema.replace("mask: {policy: generalize, to: month}", "mask: email"));
    let refused = ferry(&p, &["show", "-s", "people", "--mask"], Some(KEY));
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(text(&refused).contains("cannot mask `crm.people`"), "{}", text(&refused));
    assert!(text(&refused).contains("column `born`: `mask: email` masks text columns, and the column is Date32"));
}

/// In a masked run, a column that looks personal and has no policy is a
/// warning (an error with `--require-masking`), and an audit made in clear
/// is not shown in the masked run's report.
#[test]
fn unmasked_personal_columns_are_named_and_clear_audits_kept_out_of_reports() {
    let schema = "sources:\n  - name: crm\n    tables:\n      - name: people\n        path: data/people.csv\n        columns:\n\
\x20         - name: email\n            mask: email\n";
    let p = TestProject::new()
        .file("data/people.csv", "id,email,phone\n1,ada@example.org,555-0100\n2,bo@example.org,555-0199\n")
        .file("models/schema.yml", schema)
        .model("people.sql", "{{ config(materialized='table') }}\nselect id, email from {{ source('crm', 'people') }}");
    let audit = ferry(&p, &["audit"], None);
    assert_eq!(audit.status.code(), Some(0), "{}", text(&audit));

    let ran = ferry(&p, &["build", "--mask", "--report"], Some(KEY));
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran));
    assert!(
        text(&ran).contains("warning[F0006]: `crm.people.phone` looks like personal data and has no `mask:` policy"),
        "{}",
        text(&ran)
    );
    let page = text(&ran).split("to .ferry/runs/").nth(1).and_then(|r| r.split_whitespace().next()).map(str::to_owned);
    let html = fs_err::read_to_string(p.path().join(".ferry/runs").join(page.expect("a report"))).unwrap();
    assert!(html.contains("id=\"audit-withheld\""), "the clear audit is withheld");
    for clear in ["ada@example.org", "555-0100"] {
        assert!(!html.contains(clear), "{clear} in the report");
    }

    let refused = ferry(&p, &["build", "--mask", "--require-masking"], Some(KEY));
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(text(&refused).contains("error[F0006]: `crm.people.phone` looks like personal data"), "{}", text(&refused));
}

/// A masked run reads nothing a run in clear staged, and no model's SQL in
/// clear: a parent with no stage, or with a stage made in clear, is read
/// from its SQL with its masks; an incremental model staged in clear is
/// built again in full; and a run in clear does not build on masked rows.
#[test]
fn a_masked_run_reads_no_stage_made_in_clear() {
    let schema = "sources:\n  - name: crm\n    tables:\n      - name: people\n        path: data/people.csv\n        columns:\n\
\x20         - name: email\n            mask: email\n\
seeds:\n  - name: orders\n    columns:\n      - name: customer_email\n        mask: email\n\
models:\n  - name: people\n    columns:\n      - name: nickname\n        mask: hash\n";
    let p = TestProject::new()
        .file("data/people.csv", "id,email\n1,adaline.lovelace@example.com\n2,bart.simpson@springfield.org\n")
        .file("seeds/orders.csv", "order_id,customer_email\n100,adaline.lovelace@example.com\n101,bart.simpson@springfield.org\n")
        .file("models/schema.yml", schema)
        .model(
            "people.sql",
            "{{ config(materialized='table') }}\nselect id, email, 'Lovelace' || id as nickname from {{ source('crm', 'people') }}",
        )
        .model(
            "contacts.sql",
            "{{ config(materialized='incremental', unique_key='id') }}\nselect id, email, nickname from {{ ref('people') }}",
        )
        .model(
            "tracked.sql",
            "{{ config(materialized='table', change_detection={'key': ['id']}) }}\nselect id, email from {{ source('crm', 'people') }}",
        );
    let inline = ["show", "--mask", "--inline", "select email, nickname from {{ ref('people') }}"];
    let masked_rows = |what: &str, out: &Output| {
        assert_eq!(out.status.code(), Some(0), "{what}: {}", text(out));
        assert!(leaks(what, &text(out)).is_empty(), "{what}: {}", text(out));
        assert_eq!(text(out).matches("@").count(), 2, "{what}: both rows, masked: {}", text(out));
    };
    masked_rows("a preview before any stage", &ferry(&p, &inline, Some(KEY)));

    let clear = ferry(&p, &["build"], None);
    assert_eq!(clear.status.code(), Some(0), "{}", text(&clear));
    assert!(!scan(&p.path().join(".ferry/stage")).is_empty(), "the run in clear staged clear values");
    masked_rows("a preview over a stage made in clear", &ferry(&p, &inline, Some(KEY)));
    let seed = ["show", "--mask", "--inline", "select customer_email from {{ ref('orders') }}"];
    masked_rows("a preview over a seed staged in clear", &ferry(&p, &seed, Some(KEY)));

    let masked = ferry(&p, &["build", "--mask", "-s", "contacts", "tracked"], Some(KEY));
    assert_eq!(masked.status.code(), Some(0), "{}", text(&masked));
    assert!(
        text(&masked).contains("`people` has a stage made in clear, which a masked run does not read"),
        "{}",
        text(&masked)
    );
    assert!(text(&masked).contains("its stage was made in clear, and this run masks"), "{}", text(&masked));
    assert!(text(&masked).contains("its row hashes were kept in clear, and this run masks"), "{}", text(&masked));
    for staged in ["contacts", "tracked"] {
        let found = scan(&p.path().join(".ferry/stage").join(staged));
        assert!(found.is_empty(), "the masked run's stage of `{staged}`: {found:?}");
    }
    let manifest = fs_err::read_to_string(p.path().join(".ferry/stage/contacts/_ferry_stage.json")).unwrap();
    assert!(manifest.contains("\"masked\": true"), "{manifest}");

    let again = ferry(&p, &["build", "-s", "contacts", "tracked"], None);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(text(&again).contains("its stage was made with masking, and this run is in clear"), "{}", text(&again));
    assert!(text(&again).contains("its row hashes were kept masked, and this run is in clear"), "{}", text(&again));
}

/// A masked `ferry errors` (`--mask`, or a target's `masking: true`) shows
/// the logs of masked runs only: a run made in clear logged clear values.
#[test]
fn a_masked_ferry_errors_leaves_out_the_logs_of_runs_made_in_clear() {
    let schema = "sources:\n  - name: crm\n    tables:\n      - name: people\n        path: data/people.csv\n        columns:\n\
\x20         - name: email\n            mask: email\n\
models:\n  - name: people\n    columns:\n      - name: email\n        rules:\n          - length: {max: 10}\n";
    let p = TestProject::new()
        .file("data/people.csv", "id,email\n1,adaline.lovelace@example.com\n2,bart.simpson@springfield.org\n")
        .file("models/schema.yml", schema)
        .model("people.sql", "{{ config(materialized='table') }}\nselect id, email from {{ source('crm', 'people') }}");
    let clear = ferry(&p, &["build"], None);
    assert_eq!(clear.status.code(), Some(0), "{}", text(&clear));
    let shown = ferry(&p, &["errors"], None);
    assert!(text(&shown).contains("adaline.lovelace@example.com"), "in clear, the clear log: {}", text(&shown));

    let withheld = ferry(&p, &["errors", "--mask"], None);
    assert_eq!(withheld.status.code(), Some(0), "{}", text(&withheld));
    assert!(leaks("a masked `ferry errors`", &text(&withheld)).is_empty(), "{}", text(&withheld));
    assert!(text(&withheld).contains("the error logs of 1 run made in clear"), "{}", text(&withheld));

    let masked = ferry(&p, &["build", "--mask"], Some(KEY));
    assert_eq!(masked.status.code(), Some(0), "{}", text(&masked));
    let shown = ferry(&p, &["errors", "--mask"], None);
    assert!(leaks("a masked `ferry errors`", &text(&shown)).is_empty(), "{}", text(&shown));
    assert!(text(&shown).contains("By rule, over 1 run:"), "the masked run's log: {}", text(&shown));
    let lines = text(&shown).lines().filter(|l| l.contains('@')).count();
    assert_eq!(lines, 2, "its two lines, with masked addresses: {}", text(&shown));
}
