//! The files a command leaves for people and tools: the rendered SQL of
//! each selected model and test under `.ferry/compiled/`,
//! `.ferry/manifest.json` (written through `state::manifest_file`), and
//! each run's own record (`state::run_record`).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use rayon::prelude::*;

use super::plan::PlanOutcome;
use crate::backend::profiles::Target;
use crate::manifest::{Manifest, NodeId, Resource};
use crate::state::history::RunInfo;
use crate::state::manifest_file::{DependsOn, ManifestFile, ManifestNode, Metadata, OutputColumn};
use crate::state::run_record::{self, LineageNode, RunRecord};
use crate::state::run_results::RunResults;
use crate::state::{Layout, files};

/// Writes the rendered SQL of every selected model and singular test.
pub fn write_compiled(layout: &Layout, manifest: &Manifest, selected: &BTreeSet<NodeId>) -> Result<()> {
    let files: Vec<_> = selected
        .iter()
        .filter_map(|&i| {
            let n = &manifest[i];
            Some((layout.root().join(Layout::compiled(&n.compiled_name()?)), n.rendered.as_ref()?.sql.as_bytes()))
        })
        .collect();
    files.par_iter().try_for_each(|(path, sql)| files::write_if_changed(path, sql))
}

/// The manifest's nodes as `manifest.json` records them, with what
/// planning found of each (its output schema, or that it failed).
pub fn manifest_file<'a>(manifest: &'a Manifest, outcome: &'a PlanOutcome) -> ManifestFile<'a> {
    let mut file = ManifestFile {
        metadata: Metadata {
            ferry_version: Cow::Borrowed(env!("CARGO_PKG_VERSION")),
            project_name: Cow::Borrowed(&manifest.project_name),
            invocation_id: Cow::Borrowed(&manifest.globals.invocation_id),
            generated_at: manifest.globals.run_started_at.to_rfc3339(),
        },
        nodes: BTreeMap::new(),
        sources: BTreeMap::new(),
    };
    for (i, n) in manifest.iter() {
        let status = if outcome.failed.contains(&i) {
            "error"
        } else if outcome.skipped.contains_key(&i) {
            "skipped"
        } else {
            "ok"
        };
        let entry = ManifestNode {
            unique_id: Cow::Borrowed(&n.unique_id),
            resource_type: Cow::Borrowed(n.resource_type()),
            name: Cow::Borrowed(&n.name),
            fqn: Cow::Borrowed(&n.fqn),
            original_file_path: n.path(),
            config: Cow::Borrowed(&n.raw_config),
            tags: n.tags(),
            depends_on: DependsOn {
                nodes: manifest
                    .graph
                    .parents(i)
                    .iter()
                    .map(|&p| Cow::Borrowed(manifest[p].unique_id.as_str()))
                    .collect(),
            },
            description: Cow::Borrowed(n.description()),
            columns: Cow::Borrowed(n.columns()),
            output_schema: outcome.schemas.get(&i).map(|s| OutputColumn::of(s)),
            status: Cow::Borrowed(status),
            materialized: match &n.resource {
                Resource::Model { materialized, .. } => Some(Cow::Borrowed(materialized.name())),
                _ => None,
            },
            compiled_code: n.rendered.as_ref().map(|r| Cow::Borrowed(r.sql.as_str())),
            refs: n.rendered.as_ref().map(|r| r.refs.iter().map(|c| Cow::Borrowed(c.name.as_str())).collect()),
            sources: n.rendered.as_ref().map(|r| Cow::Borrowed(r.sources.as_slice())),
        };
        let key = Cow::Borrowed(n.unique_id.as_str());
        if matches!(n.resource, Resource::Source(_)) {
            file.sources.insert(key, entry);
        } else {
            file.nodes.insert(key, entry);
        }
    }
    file
}

/// The run's own record (see [`RunRecord`]): `info`'s facts, the results,
/// and the lineage of the nodes that ran (tests aside) with every node
/// upstream of them.
pub fn run_record(
    manifest: &Manifest,
    info: &RunInfo,
    (target, masked): (&Target, bool),
    results: &RunResults,
    cluster: Option<&run_record::ClusterRun>,
) -> RunRecord {
    let ran = results.results.iter().filter_map(|r| manifest.find(&r.unique_id));
    let ran = ran.filter(|&i| !matches!(manifest[i].resource, Resource::Test(_)));
    let lineage = manifest
        .graph
        .with_ancestors(ran)
        .into_iter()
        .filter(|&i| !matches!(manifest[i].resource, Resource::Test(_)))
        .map(|i| {
            let n = &manifest[i];
            LineageNode {
                unique_id: n.unique_id.clone(),
                name: n.name.clone(),
                resource_type: n.resource_type().to_owned(),
                materialized: match &n.resource {
                    Resource::Model { materialized, .. } => Some(materialized.name().to_owned()),
                    _ => None,
                },
                depends_on: manifest.graph.parents(i).iter().map(|&p| manifest[p].unique_id.clone()).collect(),
            }
        })
        .collect();
    RunRecord {
        schema_version: run_record::SCHEMA_VERSION,
        run_id: info.run_id.clone(),
        project_name: manifest.project_name.clone(),
        command: info.command.clone(),
        selection: info.selection.clone(),
        started_at: info.started_at.to_rfc3339(),
        ended_at: info.ended_at.to_rfc3339(),
        git_commit: info.git_commit.clone(),
        target: target.shown(),
        results: results.clone(),
        lineage,
        masked,
        cluster: cluster.cloned(),
    }
}
