//! Compile-phase benchmarks on a synthetic project shaped like
//! `shared/bench/gen_synth_project.py`: N models, each reading one or two
//! earlier models through `ref()`, calling a macro and looping in Jinja,
//! with `not_null` and `unique` tests on every model.
//!
//! Stages are measured apart (load, render + DAG, plan) and together, for
//! 1,000 and 10,000 models, to show linear scaling.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;

use camino::{Utf8Path, Utf8PathBuf};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ferry::engine::{Engine, EngineOptions};
use ferry::manifest::Manifest;
use ferry::manifest::NodeId;
use ferry::project::Project;
use ferry::run::plan;
use ferry::template::Globals;

/// Writes the synthetic project; a small LCG keeps it deterministic.
fn synth_project(dir: &Utf8Path, n: usize) {
    let mut seed: u64 = 7;
    let mut next = |bound: usize| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(seed >> 33).unwrap_or(0) % bound.max(1)
    };
    let write = |rel: &str, text: &str| {
        let path = dir.join(rel);
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(path, text).unwrap();
    };
    write("dbt_project.yml", "name: synth\nprofile: synth\nmodels:\n  synth:\n    materialized: view\n");
    write("macros/money.sql", "{% macro cents_to_dollars(col) %}({{ col }} / 100.0){% endmacro %}\n");
    let mut seed_csv = String::from("id,amount_cents,kind\n");
    for i in 0..100 {
        let _ = writeln!(seed_csv, "{i},{},{}", i * 137 % 10_000, ["a", "b", "c"][i % 3]);
    }
    write("seeds/base.csv", &seed_csv);
    let mut schema = String::from("version: 2\nmodels:\n");
    for i in 0..n {
        let body = if i == 0 {
            "select id, amount_cents, kind from {{ ref('base') }}".to_owned()
        } else {
            let lo = i.saturating_sub(50);
            let mut ups: Vec<usize> = (0..1 + next(2)).map(|_| lo + next(i - lo)).collect();
            ups.sort_unstable();
            ups.dedup();
            match ups.as_slice() {
                [a] => format!("select id, amount_cents, kind from {{{{ ref('m{a:05}') }}}}"),
                [a, b, ..] => format!(
                    "select x.id, x.amount_cents + y.amount_cents as amount_cents, x.kind\nfrom {{{{ ref('m{a:05}') }}}} x join {{{{ ref('m{b:05}') }}}} y on x.id = y.id"
                ),
                [] => unreachable!("at least one upstream"),
            }
        };
        let sql = format!(
            "{{% set kinds = ['a', 'b', 'c'] %}}\nwith src as (\n{body}\n)\nselect id, amount_cents, kind,\n  {{{{ cents_to_dollars('amount_cents') }}}} as amount,\n  {{% for k in kinds %}}case when kind = '{{{{ k }}}}' then 1 else 0 end as is_{{{{ k }}}}{{% if not loop.last %}},{{% endif %}}\n  {{% endfor %}}\nfrom src\n"
        );
        write(&format!("models/m{i:05}.sql"), &sql);
        let _ =
            write!(schema, "  - name: m{i:05}\n    columns:\n      - name: id\n        tests: [not_null, unique]\n");
    }
    write("models/schema.yml", &schema);
}

fn globals() -> Globals {
    Globals {
        project_name: "synth".into(),
        vars: serde_json::Map::new(),
        target: serde_json::json!({"name": "dev", "schema": "main", "type": "sqlite"}),
        invocation_id: "bench".into(),
        run_started_at: chrono::Utc::now(),
        which: "compile".into(),
        full_refresh: false,
        event_time: Default::default(),
        docs: Arc::default(),
    }
}

fn build(root: &Utf8Path) -> Manifest {
    let project = Project::load(root, &serde_json::Map::new()).unwrap().project.unwrap();
    Manifest::build(project, globals(), "main").manifest.unwrap()
}

fn compile(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    for n in [1_000usize, 10_000] {
        let dir = tempfile::tempdir().unwrap();
        let root = Utf8PathBuf::try_from(dir.path().to_owned()).unwrap();
        synth_project(&root, n);
        group.bench_with_input(BenchmarkId::new("load", n), &root, |b, root| {
            b.iter(|| Project::load(root, &serde_json::Map::new()).unwrap());
        });
        group.bench_with_input(BenchmarkId::new("render_and_dag", n), &root, |b, root| b.iter(|| build(root)));
        let manifest = build(&root);
        let all: BTreeSet<NodeId> = manifest.graph.ids().collect();
        group.bench_with_input(BenchmarkId::new("plan", n), &manifest, |b, m| {
            b.iter(|| {
                let engine = Engine::new(&EngineOptions::default()).expect("engine");
                let outcome = rt.block_on(plan::plan(&engine, m, (&all, &BTreeSet::new()), None));
                assert!(outcome.failed.is_empty());
            });
        });
        group.bench_with_input(BenchmarkId::new("end_to_end", n), &root, |b, root| {
            b.iter(|| {
                let m = build(root);
                let engine = Engine::new(&EngineOptions::default()).expect("engine");
                rt.block_on(plan::plan(&engine, &m, (&all, &BTreeSet::new()), None))
            });
        });
    }
    group.finish();
}

fn toposort(c: &mut Criterion) {
    let n = 10_000;
    let mut g = ferry::dag::Graph::new(n);
    for i in 1..n {
        g.add_edge(i - 1, i);
        g.add_edge(i / 2, i);
    }
    c.bench_function("dag/toposort_10k", |b| b.iter(|| g.toposort().unwrap()));
}

criterion_group!(benches, compile, toposort);
criterion_main!(benches);
