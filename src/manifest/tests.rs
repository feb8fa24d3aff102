//! Manifests built from projects on disk: each node's config read into
//! typed settings once, its errors kept for the step that reports them.

use std::sync::Arc;

use camino::Utf8PathBuf;

use super::config::{Aggregate, Severity};
use super::rules::{Literal, RuleKind};
use super::*;
use crate::backend::checksum::SideChoice;
use crate::project::Project;
use crate::values::{LoadMode, ParseKind, TableName};

fn build(files: &[(&str, &str)]) -> Built {
    let dir = tempfile::tempdir().unwrap();
    let root = Utf8PathBuf::try_from(dir.path().to_owned()).unwrap();
    for (rel, text) in [("ferry.yml", "name: shop\n")].iter().chain(files) {
        let path = root.join(rel);
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(path, text).unwrap();
    }
    let project = Project::load(&root, &Map::new()).unwrap().project.unwrap();
    let globals = Globals {
        project_name: "shop".into(),
        vars: Map::new(),
        target: serde_json::json!({"name": "dev", "schema": "main", "type": "sqlite"}),
        invocation_id: "test".into(),
        run_started_at: chrono::Utc::now(),
        which: "compile".into(),
        full_refresh: false,
        event_time: Default::default(),
        docs: Arc::default(),
    };
    Manifest::build(project, globals, "main")
}

fn node<'a>(m: &'a Manifest, unique_id: &str) -> &'a Node {
    &m[m.find(unique_id).unwrap_or_else(|| panic!("no {unique_id}"))]
}

#[test]
fn load_and_reconcile_settings_are_read_once() {
    let built = build(&[
        ("models/orders.sql", "{{ config(materialized='table', unique_key='id') }}\nselect 1 as id"),
        ("models/view.sql", "select 1 as id"),
        (
            "models/schema.yml",
            "models:\n  - name: orders\n    config:\n      load: {table: t_orders, mode: upsert}\n      reconcile: {side: pulled, profile: {aggregates: [nulls]}}\n",
        ),
    ]);
    let m = built.manifest.unwrap();
    let orders = &node(&m, "model.shop.orders").config;
    let load = orders.load.as_ref().unwrap().as_ref().unwrap();
    assert_eq!(load.table, TableName { schema: "main".into(), name: "t_orders".into() });
    assert_eq!((load.mode, load.unique_key.as_slice()), (LoadMode::Upsert, ["id".to_owned()].as_slice()));
    let reconcile = orders.reconcile.as_ref().unwrap();
    assert_eq!((reconcile.side, reconcile.aggregates.as_slice()), (SideChoice::Pulled, [Aggregate::Nulls].as_slice()));
    // A view is not loaded.
    assert!(matches!(node(&m, "model.shop.view").config.load, Ok(None)));
}

#[test]
fn a_bad_setting_is_kept_for_the_step_that_needs_it() {
    let built = build(&[
        ("models/orders.sql", "{{ config(materialized='table') }}\nselect 1 as id"),
        ("models/schema.yml", "models:\n  - name: orders\n    config:\n      load: {mode: upsert}\n"),
    ]);
    // The model itself builds: only its load will fail.
    assert!(built.failed.is_empty(), "{:?}", built.diagnostics);
    let m = built.manifest.unwrap();
    let d = node(&m, "model.shop.orders").config.load.clone().unwrap_err();
    assert_eq!(d.message, "orders: load mode `upsert` needs a `unique_key`");
    assert_eq!(d.file.as_ref().map(|f| f.as_str()), Some("models/orders.sql"));
}

#[test]
fn rules_are_read_into_their_kinds() {
    let built = build(&[
        ("models/contacts.sql", "{{ config(materialized='table') }}\nselect 1 as id, 'a' as status, '1/2/2024' as d"),
        (
            "models/schema.yml",
            "models:\n  - name: contacts\n    config:\n      quarantine: {error_if: \">1%\"}\n      dedupe: {key: id, keep: {order_by: \"d desc\"}}\n    columns:\n      - name: status\n        rules:\n          - accepted_values: {values: [a, 2]}\n      - name: d\n        rules:\n          - parses_as: {type: date, format: \"%d/%m/%Y\", severity: warn}\n    rules:\n      - expression: {name: positive, expression: \"id > 0\"}\n",
        ),
    ]);
    assert!(built.failed.is_empty(), "{:?}", built.diagnostics);
    let m = built.manifest.unwrap();
    let config = &node(&m, "model.shop.contacts").config;
    let kinds: Vec<(&str, &RuleKind, Severity)> =
        config.rules.iter().map(|r| (r.name.as_str(), &r.kind, r.severity)).collect();
    assert_eq!(kinds.len(), 3);
    assert!(kinds.contains(&(
        "accepted_values_status",
        &RuleKind::AcceptedValues {
            values: vec![Literal::Quoted("a".into()), Literal::Quoted("2".into())],
            shown: vec!["a".into(), "2".into()],
        },
        Severity::Error,
    )));
    assert!(kinds.contains(&(
        "parses_as_d",
        &RuleKind::ParsesAs { type_name: "date".into(), kind: ParseKind::Date, format: "%d/%m/%Y".into() },
        Severity::Warn,
    )));
    assert!(kinds.contains(&("positive", &RuleKind::Expression("id > 0".into()), Severity::Error)));
    assert_eq!(config.dedupe.as_ref().map(|d| d.key.clone()), Some(vec!["id".to_owned()]));
    assert_eq!(config.record_key(), vec!["id".to_owned()]);
    assert!(config.quarantine.as_ref().unwrap().as_ref().is_some_and(|t| t.percent && t.value == 1.0));
}

#[test]
fn a_bad_rule_fails_its_model_when_the_manifest_is_built() {
    let built = build(&[
        ("models/contacts.sql", "{{ config(materialized='table') }}\nselect 1 as id"),
        (
            "models/schema.yml",
            "models:\n  - name: contacts\n    columns:\n      - name: id\n        rules: [between]\n",
        ),
    ]);
    assert_eq!(built.failed.len(), 1);
    let d = built.diagnostics.iter().find(|d| d.is_error()).unwrap();
    assert_eq!(d.message, "rule `between` of `contacts`: needs `min:`, `max:` or both");
}
