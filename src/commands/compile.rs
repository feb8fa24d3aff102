//! `ferry compile`: render every selected model, plan it on DataFusion
//! against its parents' schemas, and write the SQL under `.ferry/compiled/`
//! and the nodes under `.ferry/manifest.json`.

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::Result;
use rayon::prelude::*;
use serde_json::{Value as Json, json};

use crate::artifacts;
use crate::cli::SelectArgs;
use crate::engine::plan::{self, PlanOutcome, compiled_path};
use crate::engine::{Engine, EngineOptions};
use crate::error::ExitStatus;
use crate::manifest::{Manifest, Resource};
use crate::printer::Printer;
use crate::settings::Settings;

pub(crate) async fn compile(settings: &Settings, args: &SelectArgs, printer: &Printer) -> Result<ExitStatus> {
    let started = Instant::now();
    let session = match super::load_session(settings, "compile")? {
        Ok(s) => s,
        Err(diags) => {
            super::report(printer, &diags);
            printer.error_summary("the project could not be loaded");
            return Ok(ExitStatus::Failure);
        }
    };
    let manifest = &session.manifest;
    let selected = match super::selected(manifest, args) {
        Ok(s) => s,
        Err(d) => {
            super::report(printer, &[*d]);
            return Ok(ExitStatus::Failure);
        }
    };
    let engine = Engine::new(&EngineOptions::default());
    let outcome = plan::plan(&engine, manifest, &selected, &session.failed).await;
    write_compiled(settings, manifest, &selected)?;
    artifacts::write_atomic(
        &settings.path(".ferry/manifest.json"),
        &serde_json::to_vec_pretty(&manifest_json(manifest, &outcome))?,
        true,
    )?;

    let mut diags = session.diagnostics;
    diags.extend(template_messages(manifest, &selected, printer));
    diags.extend(outcome.diagnostics.iter().cloned());
    let had_errors = super::report(printer, &diags);
    let summary = Summary::new(manifest, &selected, &outcome);
    let elapsed = started.elapsed().as_secs_f64();
    if summary.failed == 0 && !had_errors {
        printer.status(&format!("compiled {} in {elapsed:.2}s", summary.describe_ok()));
        Ok(ExitStatus::Success)
    } else {
        printer.error_summary(&summary.describe_failure(manifest));
        Ok(ExitStatus::Failure)
    }
}

/// Shows what templates said: `log(msg, info=True)` always, other `log()`
/// calls at debug level; `exceptions.warn()` becomes a warning.
fn template_messages(
    manifest: &Manifest,
    selected: &BTreeSet<usize>,
    printer: &Printer,
) -> Vec<crate::diagnostic::Diagnostic> {
    let mut warnings = Vec::new();
    for &i in selected {
        let node = &manifest.nodes[i];
        let Some(rendered) = &node.rendered else { continue };
        for line in &rendered.logs {
            match line.strip_prefix("info: ") {
                Some(info) => printer.status(&format!("{}: {info}", node.name)),
                None => tracing::debug!(model = %node.name, "log(): {line}"),
            }
        }
        for w in &rendered.warnings {
            warnings.push(
                crate::diagnostic::Diagnostic::warning(crate::diagnostic::Code::JinjaRender, w.clone())
                    .in_file(node.path()),
            );
        }
    }
    warnings
}

/// Writes the rendered SQL of every selected model and singular test.
fn write_compiled(settings: &Settings, manifest: &Manifest, selected: &BTreeSet<usize>) -> Result<()> {
    let files: Vec<_> = selected
        .iter()
        .filter_map(|&i| {
            let n = &manifest.nodes[i];
            Some((settings.path(compiled_path(&n.template()?.path)), n.rendered.as_ref()?.sql.as_bytes()))
        })
        .collect();
    files.par_iter().try_for_each(|(path, sql)| artifacts::write_if_changed(path, sql))
}

/// Counts of selected models (and singular tests) by outcome.
struct Summary {
    ok: usize,
    tests: usize,
    failed: usize,
    failed_tests: usize,
    skipped: usize,
    skipped_because: BTreeSet<usize>,
}

impl Summary {
    fn new(manifest: &Manifest, selected: &BTreeSet<usize>, outcome: &PlanOutcome) -> Self {
        let mut s =
            Summary { ok: 0, tests: 0, failed: 0, failed_tests: 0, skipped: 0, skipped_because: BTreeSet::new() };
        let planned: BTreeSet<usize> = outcome.planned.iter().copied().collect();
        for &i in selected {
            let node = &manifest.nodes[i];
            let is_model = matches!(node.resource, Resource::Model { .. });
            if !is_model && node.template().is_none() {
                continue;
            }
            if outcome.failed.contains(&i) {
                s.failed += 1;
                s.failed_tests += usize::from(!is_model);
            } else if let Some(&root) = outcome.skipped.get(&i) {
                s.skipped += 1;
                s.skipped_because.insert(root);
            } else if planned.contains(&i) {
                if is_model { s.ok += 1 } else { s.tests += 1 }
            }
        }
        s
    }

    fn describe_ok(&self) -> String {
        let mut text = plural(self.ok, "model");
        if self.tests > 0 {
            text.push_str(&format!(" and {}", plural(self.tests, "singular test")));
        }
        text
    }

    fn describe_failure(&self, manifest: &Manifest) -> String {
        let word = if self.failed_tests == 0 { "model" } else { "node" };
        let mut parts = vec![format!("{} failed", plural(self.failed, word))];
        if self.skipped > 0 {
            let roots: Vec<String> =
                self.skipped_because.iter().map(|&i| format!("`{}`", manifest.nodes[i].display_name())).collect();
            parts.push(format!("{} skipped (downstream of {})", self.skipped, roots.join(", ")));
        }
        parts.push(format!("{} succeeded", self.ok + self.tests));
        parts.join(", ")
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}

/// `.ferry/manifest.json`: nodes, config, dependencies, compiled SQL and
/// planned output schemas, dbt-like in shape.
fn manifest_json(manifest: &Manifest, outcome: &PlanOutcome) -> Json {
    let mut nodes = serde_json::Map::new();
    let mut sources = serde_json::Map::new();
    for (i, n) in manifest.nodes.iter().enumerate() {
        let depends_on: Vec<&str> =
            manifest.graph.parents(i).iter().map(|&p| manifest.nodes[p].unique_id.as_str()).collect();
        let schema = outcome.schemas.get(&i).map(|s| {
            s.fields()
                .iter()
                .map(|f| json!({"name": f.name(), "data_type": f.data_type().to_string(), "nullable": f.is_nullable()}))
                .collect::<Vec<_>>()
        });
        let mut v = json!({
            "unique_id": n.unique_id,
            "resource_type": n.resource_type(),
            "name": n.name,
            "fqn": n.fqn,
            "original_file_path": n.path(),
            "config": n.config,
            "tags": n.tags(),
            "depends_on": {"nodes": depends_on},
            "description": n.description(),
            "columns": n.columns(),
            "output_schema": schema,
            "status": if outcome.failed.contains(&i) { "error" } else if outcome.skipped.contains_key(&i) { "skipped" } else { "ok" },
        });
        if let Some(r) = &n.rendered {
            v["compiled_code"] = Json::from(r.sql.clone());
            v["refs"] = r.refs.iter().map(|c| Json::from(c.name.clone())).collect();
            v["sources"] = r.sources.iter().map(|(s, t)| json!([s, t])).collect();
        }
        if let Resource::Model { materialized, .. } = &n.resource {
            v["materialized"] = json!(materialized);
        }
        if matches!(n.resource, Resource::Source(_)) {
            sources.insert(n.unique_id.clone(), v);
        } else {
            nodes.insert(n.unique_id.clone(), v);
        }
    }
    json!({
        "metadata": {
            "ferry_version": env!("CARGO_PKG_VERSION"),
            "project_name": manifest.project_name,
            "invocation_id": manifest.globals.invocation_id,
            "generated_at": manifest.globals.run_started_at.to_rfc3339(),
        },
        "nodes": nodes,
        "sources": sources,
    })
}
