//! Jinja rendering with dbt's context: a macro file and a model (split at
//! the first NUL) render to SQL or to a diagnostic that points inside one
//! of them; never a panic or a stack overflow.
#![no_main]

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry::diagnostic::SourceFile;
use ferry::template::functions::{Relation, Resolver, quote_ident};
use ferry::template::{Globals, NodeContext, Templater};
use ferry_fuzz::check_diagnostic;
use libfuzzer_sys::fuzz_target;

fn relation(name: &str) -> Arc<Relation> {
    Arc::new(Relation {
        rendered: quote_ident(name),
        database: "db".into(),
        schema: "main".into(),
        identifier: name.into(),
    })
}

fuzz_target!(|text: &str| {
    let (macros, model) = text.split_once('\0').unwrap_or(("", text));
    let globals = Globals {
        project_name: "shop".into(),
        vars: serde_json::from_str(r#"{"start": "2020-01-01", "n": 3, "list": [1, 2]}"#).unwrap(),
        target: serde_json::json!({"name": "dev", "schema": "main", "type": "sqlite"}),
        invocation_id: "00000000-0000-0000-0000-000000000000".into(),
        run_started_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        which: "run".into(),
        full_refresh: false,
        docs: Arc::new(BTreeMap::from([("orders".to_owned(), "One row per order.".to_owned())])),
    };
    let mut resolver = Resolver { project: "shop".into(), ..Default::default() };
    for m in ["stg_orders", "stg_payments"] {
        resolver.refs.insert(m.into(), relation(m));
    }
    resolver.sources.insert(("raw".into(), "orders".into()), relation("raw_orders"));
    let macro_files = [SourceFile::new("macros/m.sql", macros)];
    let (mut templater, diags) = Templater::new(&globals, Arc::new(resolver), &macro_files);
    for d in &diags {
        check_diagnostic(d);
    }
    let file = SourceFile::new("models/m.sql", model);
    if let Err(d) = templater.add_template(&file) {
        check_diagnostic(&d);
        return;
    }
    let node = NodeContext { this: relation("m"), model: serde_json::json!({"name": "m"}), is_incremental: false };
    match templater.render(&file, &node) {
        Ok(rendered) => {
            let _ = templater.source_map(&file, &node, &rendered.sql);
        }
        Err(d) => check_diagnostic(&d),
    }
});
