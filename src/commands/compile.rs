//! `ferry compile`: render every selected model, plan it on DataFusion
//! against its parents' schemas (`run::plan`), and write the SQL under
//! `.ferry/compiled/` and the nodes under `.ferry/manifest.json`.

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::Result;

use crate::cli::SelectArgs;
use crate::engine::{Engine, EngineOptions};
use crate::error::ExitStatus;
use crate::manifest::{Manifest, NodeId, Resource};
use crate::printer::Printer;
use crate::run::{self as pipeline, PlanOutcome, plan};
use crate::settings::Settings;

pub(crate) async fn compile(settings: &Settings, args: &SelectArgs, printer: &Printer) -> Result<ExitStatus> {
    let started = Instant::now();
    let Some(prepared) = super::prepare_or_report(settings, "compile", printer)? else {
        return Ok(ExitStatus::Failure);
    };
    let manifest = &prepared.manifest;
    tracing::debug!(elapsed = ?started.elapsed(), nodes = manifest.nodes.len(), "loaded and rendered the project");
    let Some(selected) = super::selected_or_report(manifest, args, printer) else {
        return Ok(ExitStatus::Failure);
    };
    let engine = Engine::new(&EngineOptions::default())?;
    let mut outcome = plan::plan(&engine, manifest, (&selected, &prepared.failed), None).await;
    let manifest = &plan::apply_renders(manifest, &outcome);
    tracing::debug!(elapsed = ?started.elapsed(), planned = outcome.planned.len(), "planned");
    pipeline::write_compiled(&prepared.layout, manifest, &selected)?;
    tracing::trace!(elapsed = ?started.elapsed(), "wrote compiled SQL");
    pipeline::manifest_file(manifest, &outcome).write(&prepared.layout)?;

    tracing::debug!(elapsed = ?started.elapsed(), "wrote compiled SQL and the manifest");
    let mut diags = prepared.diagnostics.clone();
    diags.extend(template_messages(manifest, &selected, printer));
    diags.append(&mut outcome.diagnostics);
    let had_errors = super::report(printer, &diags);
    for (&i, late) in outcome.late.iter().filter(|(i, l)| l.root == **i && selected.contains(i)) {
        printer.status(&format!(
            "`{}` is compiled when it runs: while rendering, it queries the rows of `{}`, which a run builds first",
            manifest[i].display_name(),
            late.reads
        ));
    }
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
    selected: &BTreeSet<NodeId>,
    printer: &Printer,
) -> Vec<crate::diagnostic::Diagnostic> {
    let mut warnings = Vec::new();
    for &i in selected {
        let node = &manifest[i];
        let Some(rendered) = &node.rendered else { continue };
        for line in &rendered.logs {
            if line.info {
                printer.status(&format!("{}: {}", node.name, line.message));
            } else {
                tracing::debug!(model = %node.name, "log(): {}", line.message);
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

/// Counts of selected models and tests by outcome.
struct Summary {
    ok: usize,
    tests: usize,
    failed: usize,
    failed_tests: usize,
    skipped: usize,
    skipped_because: BTreeSet<NodeId>,
}

impl Summary {
    fn new(manifest: &Manifest, selected: &BTreeSet<NodeId>, outcome: &PlanOutcome) -> Self {
        let mut s =
            Summary { ok: 0, tests: 0, failed: 0, failed_tests: 0, skipped: 0, skipped_because: BTreeSet::new() };
        let planned: BTreeSet<NodeId> = outcome.planned.iter().copied().collect();
        for &i in selected {
            let node = &manifest[i];
            let is_model = matches!(node.resource, Resource::Model { .. });
            if !is_model && node.rendered.is_none() && !outcome.failed.contains(&i) {
                continue;
            }
            if outcome.failed.contains(&i) {
                s.failed += 1;
                s.failed_tests += usize::from(!is_model);
            } else if let Some(&root) = outcome.skipped.get(&i) {
                s.skipped += 1;
                s.skipped_because.insert(root);
            } else if planned.contains(&i) || outcome.late.contains_key(&i) {
                if is_model { s.ok += 1 } else { s.tests += 1 }
            }
        }
        s
    }

    fn describe_ok(&self) -> String {
        let mut text = plural(self.ok, "model");
        if self.tests > 0 {
            text.push_str(&format!(" and {}", plural(self.tests, "test")));
        }
        text
    }

    fn describe_failure(&self, manifest: &Manifest) -> String {
        let word = if self.failed_tests == 0 { "model" } else { "node" };
        let mut parts = vec![format!("{} failed", plural(self.failed, word))];
        if self.skipped > 0 {
            let roots: Vec<String> =
                self.skipped_because.iter().map(|&i| format!("`{}`", manifest[i].display_name())).collect();
            parts.push(format!("{} skipped (downstream of {})", self.skipped, roots.join(", ")));
        }
        parts.push(format!("{} succeeded", self.ok + self.tests));
        parts.join(", ")
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}
