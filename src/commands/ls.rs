//! `ferry ls`: the nodes a selection picks, in dbt's output forms.

use anyhow::Result;

use crate::cli::{LsArgs, LsOutput, ResourceType};
use crate::error::ExitStatus;
use crate::manifest::Node;
use crate::printer::Printer;
use crate::settings::Settings;

pub(crate) fn ls(settings: &Settings, args: &LsArgs, printer: &Printer) -> Result<ExitStatus> {
    let prepared = match crate::run::prepare(settings, "ls")? {
        Ok(p) => p,
        Err(diags) => {
            super::report(printer, &diags);
            return Ok(ExitStatus::Failure);
        }
    };
    let failed = super::report(printer, &prepared.diagnostics);
    let manifest = &prepared.manifest;
    let Some(selected) = super::selected_or_report(manifest, &args.select, printer) else {
        return Ok(ExitStatus::Failure);
    };
    let wanted = |n: &Node| {
        args.resource_types.is_empty()
            || args.resource_types.iter().any(|t| {
                n.resource_type()
                    == match t {
                        ResourceType::Model => "model",
                        ResourceType::Snapshot => "snapshot",
                        ResourceType::Seed => "seed",
                        ResourceType::Source => "source",
                        ResourceType::Test => "test",
                    }
            })
    };
    let mut lines: Vec<String> =
        selected.iter().map(|&i| &manifest[i]).filter(|n| wanted(n)).map(|n| line(n, args.output)).collect();
    lines.sort();
    lines.dedup();
    for l in &lines {
        printer.data(l)?;
    }
    Ok(if failed { ExitStatus::Failure } else { ExitStatus::Success })
}

fn line(n: &Node, output: LsOutput) -> String {
    match output {
        LsOutput::Selector if n.resource_type() == "source" => format!("source:{}", n.fqn.join(".")),
        LsOutput::Selector => n.fqn.join("."),
        LsOutput::Name => n.display_name(),
        LsOutput::Path => n.path().to_string(),
        LsOutput::Json => serde_json::json!({
            "name": n.name,
            "resource_type": n.resource_type(),
            "unique_id": n.unique_id,
            "original_file_path": n.path(),
            "tags": n.tags(),
            "config": n.raw_config,
        })
        .to_string(),
    }
}
