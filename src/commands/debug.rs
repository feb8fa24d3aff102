//! `ferry debug`: which project and target ferry would use, with the
//! profile validated and the connection tried (as `dbt debug` does): the
//! server's version and whether the connection is encrypted. Secrets are
//! never shown.

use anyhow::Result;

use crate::backend::profiles::Address;
use crate::diagnostic::{Code, Diagnostic};
use crate::error::ExitStatus;
use crate::printer::Printer;
use crate::settings::Settings;

pub(crate) async fn debug(settings: &Settings, printer: &Printer) -> Result<ExitStatus> {
    let prepared = match crate::run::prepare(settings, "debug")? {
        Ok(p) => p,
        Err(diags) => {
            super::report(printer, &diags);
            return Ok(ExitStatus::Failure);
        }
    };
    let failed = super::report(printer, &prepared.diagnostics);
    let m = &prepared.manifest;
    let count = |kind: &str| m.nodes.iter().filter(|n| n.resource_type() == kind).count();
    printer.data(&format!("project: {} ({})", m.project_name, m.root))?;
    printer.data(&format!(
        "nodes: {} models, {} seeds, {} sources, {} tests",
        count("model"),
        count("seed"),
        count("source"),
        count("test")
    ))?;
    let t = &prepared.target;
    let origin = t
        .profile
        .as_ref()
        .map_or_else(|| "no profiles.yml found: embedded default".to_owned(), |p| format!("profile `{p}`"));
    printer.data(&format!("target: {} ({}), {origin}", t.name, t.type_name()))?;
    match &t.address {
        Address::File { path, schema } => printer.data(&format!("  path: {path}\n  schema: {schema}"))?,
        Address::Server(s) => printer.data(&format!(
            "  host: {}:{}\n  user: {}\n  password: {}\n  database: {}\n  schema: {}\n  sslmode: {}{}",
            s.host,
            s.port,
            s.user,
            if s.password.is_empty() { "(none)" } else { "(set)" },
            s.dbname,
            s.schema,
            s.sslmode.as_deref().unwrap_or("prefer (the default)"),
            s.sslrootcert.as_ref().map(|r| format!("\n  sslrootcert: {r}")).unwrap_or_default(),
        ))?,
    }
    let connected = match crate::backend::connect(t).await {
        Ok(mut c) => c.describe().await,
        Err(e) => Err(e),
    };
    match connected {
        Ok(about) => printer.data(&format!("connection: ok, {about}"))?,
        Err(e) => {
            let d = Diagnostic::error(Code::Load, format!("target `{}`: {e}", t.name));
            super::report(printer, &[d]);
            return Ok(ExitStatus::Failure);
        }
    }
    Ok(if failed { ExitStatus::Failure } else { ExitStatus::Success })
}
