//! dbt's selector syntax: any `--select` / `--exclude` text parses or is
//! refused with a message, and a parsed selection evaluates on a graph.
#![no_main]

use ferry::dag::graph::Graph;
use ferry::dag::select::{NodeFacts, Selection, select, wildcard};
use libfuzzer_sys::fuzz_target;

fn node(name: &str, resource_type: &'static str, folder: &str, tags: &[&str]) -> NodeFacts {
    NodeFacts {
        name: name.into(),
        resource_type,
        fqn: vec!["shop".into(), folder.into(), name.into()],
        path: format!("models/{folder}/{name}.sql"),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        config: serde_json::from_str(r#"{"materialized": "view"}"#).unwrap(),
        package: "shop".into(),
        source: None,
        test: None,
    }
}

fuzz_target!(|text: &str| {
    let (include, exclude) = text.split_once('\0').unwrap_or((text, ""));
    let (Ok(include), Ok(exclude)) = (Selection::parse(&[include]), Selection::parse(&[exclude])) else {
        return;
    };
    let nodes = vec![
        node("stg_orders", "model", "staging", &["daily"]),
        node("orders", "model", "marts", &["daily", "pii"]),
        node("customers", "model", "marts", &[]),
        node("not_null_orders_id", "test", "marts", &[]),
    ];
    let mut graph: Graph<usize> = Graph::new(nodes.len());
    graph.add_edge(0, 1);
    graph.add_edge(1, 2);
    graph.add_edge(1, 3);
    let picked = select(&nodes, &graph, &include, &exclude);
    assert!(picked.iter().all(|&n| n < nodes.len()));
    let _ = include.unmatched(&nodes);
    let _ = wildcard(text, "stg_orders");
});
