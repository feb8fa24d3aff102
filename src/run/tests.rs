//! The run as a library: projects on disk, run with `prepare` and
//! `execute`, and what the report says of each node.

use std::collections::BTreeMap;

use camino::Utf8PathBuf;

use super::*;
use crate::settings::Settings;
use crate::state::run_results::{RunResults, Status};

/// A project in a temporary directory: `ferry.yml` and the given files.
fn project(files: &[(&str, &str)]) -> (tempfile::TempDir, Settings) {
    let dir = tempfile::tempdir().unwrap();
    let root = Utf8PathBuf::try_from(dir.path().to_owned()).unwrap();
    for (rel, text) in [("ferry.yml", "name: shop\n")].iter().chain(files) {
        let path = root.join(rel);
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(path, text).unwrap();
    }
    // No profiles.yml anywhere: the embedded SQLite target.
    let settings = Settings {
        profiles_dirs: vec![root.clone()],
        root,
        profile: None,
        target: None,
        vars: Default::default(),
        full_refresh: false,
        event_time: Default::default(),
        mask: false,
        require_masking: false,
        cluster: None,
    };
    (dir, settings)
}

fn options(which: Which) -> RunOptions {
    RunOptions {
        which,
        threads: 2,
        memory_limit: None,
        no_load: false,
        store_failures: false,
        selection: String::new(),
    }
}

/// Runs everything `which` runs and reports by node name.
async fn run(settings: &Settings, which: Which) -> (Prepared, RunReport) {
    let prepared = prepare(settings, which.name()).unwrap().unwrap_or_else(|d| panic!("{d:?}"));
    let selected = select(&prepared.manifest, &[], &[], false).unwrap().nodes;
    let report = execute(&prepared, &selected, &options(which), &()).await.unwrap();
    (prepared, report)
}

fn by_name<'a>(prepared: &Prepared, report: &'a RunReport) -> BTreeMap<String, &'a NodeReport> {
    report.nodes.iter().map(|(&i, r)| (prepared.manifest[i].name.clone(), r)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_model_skips_only_its_descendants() {
    let (_dir, settings) = project(&[
        ("models/base.sql", "{{ config(materialized='table') }}\nselect 1 as id, 2 as amount"),
        // Plans, then fails on its first row.
        (
            "models/bad.sql",
            "{{ config(materialized='table') }}\nselect to_date('31/02/2022', '%d/%m/%Y') as d, id from {{ ref('base') }}",
        ),
        ("models/after_bad.sql", "select * from {{ ref('bad') }}"),
        // Fails to plan: no such column.
        ("models/stg.sql", "select id, amount_usd from {{ ref('base') }}"),
        ("models/mart.sql", "select * from {{ ref('stg') }}"),
        ("models/other.sql", "{{ config(materialized='table') }}\nselect 3 as id"),
    ]);
    let (prepared, report) = run(&settings, Which::Run).await;
    let nodes = by_name(&prepared, &report);
    let status = |n: &str| nodes[n].status;
    assert_eq!(status("base"), Status::Success);
    assert_eq!(status("other"), Status::Success);
    assert_eq!(nodes["base"].rows, Some(1));
    assert!(nodes["base"].staged.is_some());
    assert_eq!(status("bad"), Status::Error);
    assert!(nodes["bad"].message.as_deref().unwrap_or_default().contains("failed while running"), "{nodes:?}");
    assert_eq!(status("after_bad"), Status::Skipped);
    assert_eq!(nodes["after_bad"].message.as_deref(), Some("skipped: `bad` failed"));
    assert_eq!(status("stg"), Status::Error);
    assert!(nodes["stg"].message.as_deref().unwrap_or_default().contains("amount_usd"), "{nodes:?}");
    assert_eq!(status("mart"), Status::Skipped);
    assert_eq!(report.failed(), 2);
    assert!(report.planning_failed);
    assert!(!report.interrupted);
    assert!(report.diagnostics.iter().any(|d| d.message.contains("`bad` failed while running")));
    // Only what staged is loaded, into the embedded target.
    assert!(matches!(nodes["base"].load, Some(Ok(_))));
    assert!(nodes["bad"].load.is_none());
    // The report is what run_results.json records.
    let results = RunResults::read(&prepared.layout).unwrap();
    assert_eq!(results.results, report.results(&prepared.manifest).results);
    let recorded = results.node("model.shop.after_bad").unwrap();
    assert_eq!((recorded.status, recorded.message.as_deref()), (Status::Skipped, Some("skipped: `bad` failed")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_loads_what_passed_and_reconciles_it() {
    let (_dir, settings) = project(&[
        ("models/orders.sql", "{{ config(materialized='table') }}\nselect 1 as id union all select 2 as id"),
        ("models/dupes.sql", "{{ config(materialized='table') }}\nselect 1 as id union all select 1 as id"),
        (
            "models/schema.yml",
            "models:\n  - name: orders\n    columns:\n      - name: id\n        data_tests: [unique]\n  - name: dupes\n    columns:\n      - name: id\n        data_tests: [unique]\n",
        ),
    ]);
    let (prepared, report) = run(&settings, Which::Build).await;
    let nodes = by_name(&prepared, &report);
    assert_eq!(nodes["unique_orders_id"].status, Status::Pass);
    assert_eq!(nodes["unique_dupes_id"].status, Status::Fail);
    assert_eq!(nodes["unique_dupes_id"].failures, Some(1));
    assert!(matches!(nodes["orders"].load, Some(Ok(_))));
    // A failing test keeps its model out of the target: staged, not loaded.
    assert!(nodes["dupes"].staged.is_some());
    assert!(nodes["dupes"].load.is_none());
    let (reconciled, _) = report.reconciled.as_ref().unwrap();
    assert_eq!(reconciled.reports.len(), 1);
    assert_eq!(nodes["orders"].reconcile, Some(crate::reconcile::Status::Pass));
    assert!(prepared.layout.run(&report.run_id).join("reconcile.json").path.is_file());
}
