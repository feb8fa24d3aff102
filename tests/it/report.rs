//! `ferry report` and `ferry build --report`: the sign-off report of a
//! real run of the bundled example (with bad rows added, and a target
//! trigger that rewrites a loaded row so that reconciliation fails),
//! opened in headless Chromium through ChromeDriver: the verdict, the
//! ledger numbers, a FAIL reconciliation row, the lineage nodes and the
//! error-log filter after a click are checked on the rendered page, and a
//! screenshot is kept as a test artifact (`target/tmp/report.png`). Under
//! CI (`CI=true`) a missing Chromium or ChromeDriver fails the test;
//! elsewhere it says it skipped (`scripts/test_tools.sh` installs them).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use serde_json::{Value as Json, json};

use crate::common::TestProject;

/// A copy of the bundled example migration.
fn example() -> TestProject {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let p = TestProject::new();
    for dir in ["models", "macros", "seeds", "data", "data_tests"] {
        crate::common::copy_dir(&root.join(dir), &p.path().join(dir).into_std_path_buf());
    }
    fs_err::copy(root.join("ferry.yml"), p.path().join("ferry.yml")).unwrap();
    p
}

/// The example with bad rows: two customers without an email (quarantined
/// by an added `not_null` rule) and three with addresses that are no
/// email (kept, logged by the example's `warn` rule); `orders` made
/// incremental so that its target table, and a trigger on it, outlive a
/// run.
fn example_with_bad_rows() -> TestProject {
    let p = example();
    let mut customers = p.read("data/legacy/customers.csv");
    for (id, email) in [(9001, ""), (9002, ""), (9003, "not-an-email"), (9004, "still@wrong"), (9005, "x@")] {
        customers.push_str(&format!("{id},Bad Row{id},{email},FR,01/02/2020,P,+44 20 0000 0000,2024-03-12 10:00:00\n"));
    }
    let schema = p.read("models/marts/schema.yml").replace(
        "        rules:\n          - matches:\n              format: email",
        "        rules:\n          - not_null:\n              suggestion: ask the account owner for an address\n          - matches:\n              format: email",
    );
    assert!(schema.contains("not_null:\n              suggestion"), "the example's schema changed: {schema}");
    let orders = format!(
        "{{{{ config(materialized='incremental', unique_key='order_id') }}}}\n{}",
        p.read("models/marts/orders.sql")
    );
    p.file("data/legacy/customers.csv", &customers)
        .file("models/marts/schema.yml", &schema)
        .file("models/marts/orders.sql", &orders)
}

/// ChromeDriver, started on a free port; stopped when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Option<Driver> {
    let found = |name: &str| {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    };
    let (Some(driver), Some(_)) = (found("chromedriver"), found("chromium")) else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("chromium and chromedriver are missing under CI: run scripts/test_tools.sh");
        }
        eprintln!("skipped: no chromium or chromedriver on PATH; run scripts/test_tools.sh");
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(20), "chromedriver did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(Driver { child, port })
}

/// Adds triggers to the SQLite target that raise order ORD-0000007's amount by one
/// whenever the load writes it: the target no longer holds what was
/// staged, as a real target's triggers can make it.
fn rewrite_an_order_on_load(p: &TestProject) {
    let db = rusqlite::Connection::open(p.path().join(".ferry/ferry.db")).unwrap();
    for event in ["INSERT", "UPDATE"] {
        db.execute_batch(&format!(
            "CREATE TRIGGER rewrite_{event} AFTER {event} ON orders WHEN NEW.order_id = 'ORD-0000007' \
             BEGIN UPDATE orders SET amount = amount + 1 WHERE order_id = 'ORD-0000007'; END;"
        ))
        .unwrap();
    }
}

#[tokio::test]
async fn the_report_of_a_build_reads_in_a_browser() {
    let Some(driver) = chromedriver() else { return };
    let p = example_with_bad_rows();
    let first = p.run(["build"]);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    assert_eq!(p.run(["audit"]).code, Some(0));
    rewrite_an_order_on_load(&p);
    let ran = p.run(["build", "--report"]);
    assert_eq!(ran.code, Some(1), "the rewritten row fails reconciliation: {}{}", ran.stdout, ran.stderr);
    let results = p.run_results();
    let run_id = results["metadata"]["invocation_id"].as_str().unwrap().to_owned();
    let report = p.path().join(".ferry/runs").join(&run_id).join("report.html");
    assert!(ran.stderr.contains(&format!("wrote the report of run {run_id}")), "{}", ran.stderr);
    let ledger = crate::common::node_result(&results, "model.crm_migration.customers").unwrap()["ledger"].clone();
    assert_eq!(ledger["quarantined"], 2, "{ledger}");
    assert_eq!(ledger["warned"], 3, "{ledger}");

    let caps: serde_json::Map<String, Json> = json!({
        "goog:chromeOptions": {"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,2400"]}
    })
    .as_object()
    .unwrap()
    .clone();
    let c = ClientBuilder::native()
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a browser session");
    c.goto(&format!("file://{report}")).await.unwrap();
    let text = |css: &'static str| {
        let c = c.clone();
        async move { c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).text().await.unwrap() }
    };

    // The verdict names the failed reconciliation.
    let verdict = text("#verdict").await;
    assert!(verdict.starts_with("FAIL"), "{verdict}");
    assert!(verdict.contains("did not reconcile"), "{verdict}");

    // The ledger row of `customers` shows the run's own numbers.
    for (cell, key) in [("produced", "produced"), ("staged", "staged"), ("quarantined", "quarantined")] {
        let shown = text(match cell {
            "produced" => "#ledger-table tr[data-model=customers] td.produced",
            "staged" => "#ledger-table tr[data-model=customers] td.staged",
            _ => "#ledger-table tr[data-model=customers] td.quarantined",
        })
        .await;
        assert_eq!(shown.replace(',', ""), ledger[key].to_string(), "{cell}");
    }

    // A FAIL reconciliation of `orders`, with the changed row listed.
    let recon = text(".recon.FAIL").await;
    assert!(recon.contains("orders"), "{recon}");
    assert!(recon.contains("checksum"), "{recon}");
    assert!(recon.contains("order_id=ORD-0000007, amount"), "{recon}");
    let passed = c.find_all(Locator::Css(".recon.PASS")).await.unwrap();
    assert_eq!(passed.len(), 2, "customers and customer_types reconcile");

    // The lineage draws the sources, the models and the target tables.
    let mut ids = Vec::new();
    for node in c.find_all(Locator::Css("#lineage-svg g.node")).await.unwrap() {
        ids.push(node.attr("data-id").await.unwrap().unwrap_or_default());
    }
    for id in [
        "source.crm_migration.legacy.customers",
        "seed.crm_migration.customer_types",
        "model.crm_migration.stg_customers",
        "model.crm_migration.orders",
        "table:orders",
    ] {
        assert!(ids.iter().any(|i| i == id || i.ends_with(id.trim_start_matches("table:"))), "{id} in {ids:?}");
    }

    // The latest source audit is shown.
    let audit = text("#audit").await;
    assert!(audit.contains("legacy.customers") && audit.contains("PERSONAL"), "{audit}");

    // The error log: all 5 lines, then only the `not_null` rule's 2 after a click.
    assert!(text("#log-count").await.starts_with("5 matching lines"), "{}", text("#log-count").await);
    c.find(Locator::Css("button.show-lines[data-rule=not_null_email]")).await.unwrap().click().await.unwrap();
    let count = text("#log-count").await;
    assert!(count.starts_with("2 matching lines"), "{count}");
    let rows = c.find_all(Locator::Css("#log-table tbody tr")).await.unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        let cells = row.find_all(Locator::Css("td")).await.unwrap();
        assert_eq!(cells[2].text().await.unwrap(), "not_null_email");
        assert_eq!(cells[5].text().await.unwrap(), "error");
    }
    // Searching within the filter narrows it to one record.
    c.find(Locator::Css("#log-search")).await.unwrap().send_keys("9002").await.unwrap();
    assert!(text("#log-count").await.starts_with("1 matching line "), "{}", text("#log-count").await);

    c.goto(&format!("file://{report}")).await.unwrap();
    let png = c.screenshot().await.unwrap();
    let artifact = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("report.png");
    fs_err::write(&artifact, png).unwrap();
    c.close().await.unwrap();

    // `ferry report` writes the same run's report again, by id prefix.
    let again = p.run(["report", "--run", &run_id[..8]]);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert!(again.stderr.contains(&run_id), "{}", again.stderr);
}

#[test]
fn report_names_the_runs_it_knows() {
    let p = example();
    let none = p.run(["report"]);
    assert_eq!(none.code, Some(1), "{}", none.stderr);
    assert!(none.stderr.contains("no run has left a record under `.ferry/runs/` yet"), "{}", none.stderr);
    assert_eq!(p.run(["build", "--no-load"]).code, Some(0));
    let unknown = p.run(["report", "--run", "nosuchrun"]);
    assert_eq!(unknown.code, Some(1), "{}", unknown.stderr);
    assert!(unknown.stderr.contains("there is no recorded run `nosuchrun`"), "{}", unknown.stderr);
    let last = p.run(["report"]);
    assert_eq!(last.code, Some(0), "{}", last.stderr);
    let html = std::fs::read_to_string(
        glob_one(&p.path().join(".ferry/runs").into_std_path_buf(), "report.html").expect("a report"),
    )
    .unwrap();
    // Staged but not loaded, said in plain words; no network needed.
    assert!(html.contains("was staged but not loaded into the target"), "{html}");
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("<link"), "self-contained");
}

/// The one file called `name` in a directory below `dir`.
fn glob_one(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path().join(name)).find(|f| f.is_file())
}
