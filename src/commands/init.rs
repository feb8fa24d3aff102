//! `ferry init DIR`: a new project that compiles as soon as it exists.

use anyhow::{Context as _, Result};
use camino::Utf8Path;

use crate::cli::InitArgs;
use crate::diagnostic::{Code, Diagnostic};
use crate::error::ExitStatus;
use crate::printer::Printer;
use crate::project::config::PROJECT_FILES;

const FIRST_MODEL: &str = "\
-- A model is a SELECT. `ferry compile` plans it; `ferry run` materializes it.
{{ config(materialized='table') }}

select 1 as id, 'first' as label
union all
select 2 as id, 'second' as label
";

const SECOND_MODEL: &str = "\
-- `ref()` makes this model depend on `my_first_model`.
select id, upper(label) as label
from {{ ref('my_first_model') }}
where id = 1
";

const SCHEMA: &str = "\
version: 2

models:
  - name: my_first_model
    description: A starter model.
    columns:
      - name: id
        data_type: bigint
        data_tests: [unique, not_null]
  - name: my_second_model
    description: Reads the first model through `ref()`.
";

pub(crate) fn init(args: &InitArgs, printer: &Printer) -> Result<ExitStatus> {
    let dir = &args.dir;
    let refuse = |d: Diagnostic| {
        printer.diagnostics(&[d]);
        Ok(ExitStatus::Failure)
    };
    if let Some(existing) = PROJECT_FILES.iter().map(|f| dir.join(f)).find(|p| p.exists()) {
        return refuse(
            Diagnostic::error(Code::ProjectFile, format!("`{existing}` already exists"))
                .with_note("`ferry init` only creates new projects; it never overwrites one"),
        );
    }
    let name = match &args.name {
        Some(n) => n.clone(),
        None => match project_name(dir)? {
            Some(n) => n,
            None => {
                return refuse(
                    Diagnostic::error(Code::ProjectFile, format!("cannot take a project name from `{dir}`"))
                        .with_help("pass `--name`"),
                );
            }
        },
    };
    let files = [
        (
            "ferry.yml",
            format!(
                "name: {name}\n# Without a profile, runs load into the embedded SQLite file under .ferry/.\n# Name one (it must then be in profiles.yml) to load into PostgreSQL or MySQL:\n# profile: {name}\n\nmodel-paths: [models]\nseed-paths: [seeds]\nmacro-paths: [macros]\ntest-paths: [tests]\n\nmodels:\n  {name}:\n    +materialized: view\n"
            ),
        ),
        (".gitignore", ".ferry/\n".to_owned()),
        ("models/example/my_first_model.sql", FIRST_MODEL.to_owned()),
        ("models/example/my_second_model.sql", SECOND_MODEL.to_owned()),
        ("models/example/schema.yml", SCHEMA.to_owned()),
        ("seeds/.gitkeep", String::new()),
        ("macros/.gitkeep", String::new()),
        ("tests/.gitkeep", String::new()),
    ];
    for (rel, text) in files {
        let path = dir.join(rel);
        if path.exists() {
            continue;
        }
        if let Some(parent) = path.parent() {
            fs_err::create_dir_all(parent)?;
        }
        fs_err::write(&path, text)?;
    }
    printer.status(&format!("created project `{name}` in `{dir}`; try `ferry compile --project-dir {dir}`"));
    Ok(ExitStatus::Success)
}

/// A project name from a directory name: lower case, `_` for anything
/// that is not a letter or digit. `None` when the path has no name (`/`, `..`).
fn project_name(dir: &Utf8Path) -> Result<Option<String>> {
    let abs = if dir.is_absolute() {
        dir.to_owned()
    } else {
        let cwd =
            camino::Utf8PathBuf::try_from(std::env::current_dir()?).context("the working directory is not UTF-8")?;
        cwd.join(dir)
    };
    let Some(raw) = abs.file_name() else { return Ok(None) };
    let mut name: String =
        raw.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    Ok(Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_directory() {
        assert_eq!(project_name(Utf8Path::new("/tmp/My-Shop 2")).unwrap().as_deref(), Some("my_shop_2"));
        assert_eq!(project_name(Utf8Path::new("/tmp/2024")).unwrap().as_deref(), Some("_2024"));
        assert_eq!(project_name(Utf8Path::new("/")).unwrap(), None);
    }
}
