//! Command-line options, the project file and the environment combined into
//! validated [`Settings`].

use anyhow::{Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde_json::{Map, Value as Json};

use crate::backend::profiles;
use crate::cli::GlobalArgs;
use crate::project;
pub use crate::values::EventTimes;

/// Everything a command needs to find and load a project.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Absolute project root.
    pub root: Utf8PathBuf,
    pub profiles_dirs: Vec<Utf8PathBuf>,
    pub profile: Option<String>,
    pub target: Option<String>,
    /// `--vars`, overriding the project's `vars`.
    pub vars: Map<String, Json>,
    /// `--full-refresh`: incremental models are rebuilt (templates see it
    /// as `flags.FULL_REFRESH`).
    pub full_refresh: bool,
    /// `--event-time-start` and `--event-time-end`: the window microbatch
    /// models build (UTC).
    pub event_time: EventTimes,
    /// `--mask`: mask personal data whatever the target says.
    pub mask: bool,
    /// `--require-masking`.
    pub require_masking: bool,
    /// `--cluster`: the Ballista cluster to run on.
    pub cluster: Option<String>,
}

impl Settings {
    /// Finds the project and parses `--vars`.
    pub fn from_args(args: &GlobalArgs) -> Result<Self> {
        let start = args.project_dir.clone().unwrap_or_else(|| Utf8PathBuf::from("."));
        let root = project::find_root(&start)?;
        let vars = match &args.vars {
            Some(text) => parse_vars(text)?,
            None => Map::new(),
        };
        Ok(Settings {
            profiles_dirs: profiles::search_dirs(args.profiles_dir.as_deref(), &root),
            root,
            profile: args.profile.clone(),
            target: args.target.clone(),
            vars,
            full_refresh: false,
            event_time: EventTimes::default(),
            mask: args.mask,
            require_masking: args.require_masking,
            cluster: args.cluster.clone(),
        })
    }

    /// A path relative to the project root.
    pub fn path(&self, rel: impl AsRef<Utf8Path>) -> Utf8PathBuf {
        self.root.join(rel)
    }

    /// The project's `.ferry/` directory.
    pub fn layout(&self) -> crate::state::Layout {
        crate::state::Layout::new(self.root.clone())
    }
}

/// Parses `--vars` as a YAML (or JSON) mapping.
fn parse_vars(text: &str) -> Result<Map<String, Json>> {
    let file = crate::diagnostic::SourceFile::new("--vars", text);
    let node =
        crate::project::yaml::parse(&file).map_err(|d| anyhow::anyhow!("{}", d.message)).context("invalid `--vars`")?;
    match node.to_json() {
        Json::Object(map) => Ok(map),
        Json::Null => Ok(Map::new()),
        _ => anyhow::bail!("`--vars` must be a mapping, such as `{{start_date: 2024-01-01}}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars_parse_as_yaml_mappings() {
        let v = parse_vars("{start: '2024-01-01', n: 3}").unwrap();
        assert_eq!(v["n"], 3);
        assert!(parse_vars("[1, 2]").is_err());
    }
}
