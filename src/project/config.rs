//! The project file (`ferry.yml`, or a dbt `dbt_project.yml`) and the nested
//! `models:` / `seeds:` config trees that apply configs by folder.

use std::collections::BTreeSet;
use std::sync::Arc;

use camino::{Utf8Path, Utf8PathBuf};
use serde_json::{Map, Value as Json};

use super::yaml::{self, Key, Node, Value};
use crate::diagnostic::{Code, Diagnostic, Label, SourceFile};
use crate::template::merge_config;

/// Project file names, in the order they are looked for.
pub const PROJECT_FILES: [&str; 2] = ["ferry.yml", "dbt_project.yml"];

/// Top-level keys a dbt or ferry project file may hold.
const PROJECT_KEYS: &[&str] = &[
    "name",
    "version",
    "config-version",
    "profile",
    "model-paths",
    "source-paths",
    "seed-paths",
    "data-paths",
    "test-paths",
    "analysis-paths",
    "macro-paths",
    "snapshot-paths",
    "docs-paths",
    "asset-paths",
    "target-path",
    "log-path",
    "packages-install-path",
    "clean-targets",
    "query-comment",
    "require-dbt-version",
    "quoting",
    "models",
    "seeds",
    "tests",
    "data_tests",
    "snapshots",
    "sources",
    "vars",
    "history",
    "executor",
    "stage_dir",
    "on-run-start",
    "on-run-end",
    "dispatch",
    "flags",
    "restrict-access",
    "dbt-cloud",
    "metrics",
    "semantic-models",
    "saved-queries",
    "exposures",
    "unit_tests",
];

/// Config keys a model may set (dbt's, plus ferry's `load`, `rules`,
/// `dedupe`, `reconcile`).
pub const MODEL_CONFIG_KEYS: &[&str] = &[
    "enabled",
    "reconcile",
    "tags",
    "pre-hook",
    "post-hook",
    "pre_hook",
    "post_hook",
    "database",
    "schema",
    "alias",
    "persist_docs",
    "full_refresh",
    "meta",
    "docs",
    "materialized",
    "sql_header",
    "on_configuration_change",
    "unique_key",
    "incremental_strategy",
    "change_detection",
    "cursor",
    "null_cursor",
    "on_schema_change",
    "on_schema_drift",
    "contract",
    "constraints",
    "grants",
    "access",
    "group",
    "event_time",
    "batch_size",
    "begin",
    "lookback",
    "concurrent_batches",
    "incremental_predicates",
    "merge_update_columns",
    "merge_exclude_columns",
    "indexes",
    "partition_by",
    "cluster_by",
    "description",
    "column_types",
    "quote_columns",
    "delimiter",
    "quoting",
    "severity",
    "error_if",
    "warn_if",
    "where",
    "limit",
    "store_failures",
    "store_failures_as",
    "fail_calc",
    "load",
    "on_conversion_error",
    "rules",
    "dedupe",
    "quarantine",
    "loaded_at_field",
    "freshness",
    "strategy",
    "updated_at",
    "check_cols",
    "hard_deletes",
    "invalidate_hard_deletes",
    "dbt_valid_to_current",
    "snapshot_meta_column_names",
    "target_schema",
    "target_database",
    "identifier",
];

/// A parsed project file.
#[derive(Debug, Clone)]
pub struct ProjectFile {
    pub file: Arc<SourceFile>,
    pub name: String,
    pub profile: Option<String>,
    pub model_paths: Vec<Utf8PathBuf>,
    pub macro_paths: Vec<Utf8PathBuf>,
    pub seed_paths: Vec<Utf8PathBuf>,
    pub test_paths: Vec<Utf8PathBuf>,
    pub docs_paths: Vec<Utf8PathBuf>,
    pub snapshot_paths: Vec<Utf8PathBuf>,
    pub vars: Map<String, Json>,
    /// The `models:` config tree.
    pub models: Node,
    /// The `seeds:` config tree.
    pub seeds: Node,
    /// The `data_tests:` (or `tests:`) config tree.
    pub tests: Node,
    /// The `snapshots:` config tree.
    pub snapshots: Node,
    /// `history: {keep_runs: N}`: the runs whose quarantine and error files
    /// are kept (all when unset).
    pub keep_runs: Option<usize>,
    /// `executor: df://host:port`: the Ballista cluster that runs the
    /// models (`local`, the default: this process).
    pub executor: Option<String>,
    /// `stage_dir:`: where the stages live, a directory (relative to the
    /// project) or an object-store URL (`s3://bucket/prefix`); unset:
    /// `.ferry/stage`. With where it is written, for errors.
    pub stage_dir: Option<(String, Label)>,
    /// `dispatch:`: per macro namespace, the namespaces searched in order.
    pub dispatch: Vec<(String, Vec<String>)>,
    /// `packages-install-path` (dbt's default `dbt_packages`).
    pub packages_install_path: Utf8PathBuf,
}

/// One `dispatch:` entry of the project file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DispatchEntry {
    macro_namespace: String,
    search_order: Vec<String>,
}

/// The project file's `history:`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryConfig {
    keep_runs: Option<usize>,
}

impl ProjectFile {
    /// Parses a project file; warnings (unknown keys) go to `warnings`.
    pub fn parse(file: Arc<SourceFile>, warnings: &mut Vec<Diagnostic>) -> Result<Self, Box<Diagnostic>> {
        let root = yaml::parse(&file)?;
        if !matches!(root.value, Value::Map(_)) {
            return Err(Box::new(
                Diagnostic::error(Code::ProjectFile, "the project file must be a mapping").in_file(&file.path),
            ));
        }
        for (key, _) in root.entries() {
            if !PROJECT_KEYS.contains(&key.name.as_str()) {
                warnings.push(unknown_key(&file, key, PROJECT_KEYS, "project key"));
            }
        }
        let name = match root.get("name").and_then(Node::as_str) {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => {
                return Err(Box::new(
                    Diagnostic::error(Code::ProjectFile, "the project file has no `name`")
                        .in_file(&file.path)
                        .with_help("add `name: my_project` at the top"),
                ));
            }
        };
        let paths = |key: &str, default: &[&str]| -> Result<Vec<Utf8PathBuf>, Box<Diagnostic>> {
            match root.get(key) {
                None => Ok(default.iter().map(Utf8PathBuf::from).collect()),
                Some(n) => n.deserialize_into::<Vec<Utf8PathBuf>>(&file, &format!("`{key}`")),
            }
        };
        let vars = match root.get("vars") {
            Some(v) if !v.is_null() => v.deserialize_into(&file, "`vars`")?,
            _ => Map::new(),
        };
        // dbt before 1.0 named them `source-paths` and `data-paths`.
        let either = |key: &str, legacy: &str, default: &[&str]| match root.get(key) {
            None if root.get(legacy).is_some() => paths(legacy, default),
            _ => paths(key, default),
        };
        let model_paths = either("model-paths", "source-paths", &["models"])?;
        let seed_paths = either("seed-paths", "data-paths", &["seeds"])?;
        let macro_paths = paths("macro-paths", &["macros"])?;
        let mut docs_default: Vec<Utf8PathBuf> = model_paths.clone();
        docs_default.extend(seed_paths.iter().cloned());
        docs_default.extend(macro_paths.iter().cloned());
        let docs_paths = match root.get("docs-paths") {
            None => docs_default,
            Some(_) => paths("docs-paths", &[])?,
        };
        let keep_runs = match root.get("history") {
            Some(n) if !n.is_null() => {
                let history: HistoryConfig = n.deserialize_into(&file, "`history`")?;
                if history.keep_runs == Some(0) {
                    return Err(Box::new(
                        Diagnostic::error(Code::ProjectFile, "`history.keep_runs` is 0, which would keep no run")
                            .in_file(&file.path)
                            .with_help("keep 1 run or more, or leave `keep_runs` out to keep every run"),
                    ));
                }
                history.keep_runs
            }
            _ => None,
        };
        let dispatch = match root.get("dispatch") {
            Some(n) if !n.is_null() => n
                .deserialize_into::<Vec<DispatchEntry>>(&file, "`dispatch`")?
                .into_iter()
                .map(|d| (d.macro_namespace, d.search_order))
                .collect(),
            _ => Vec::new(),
        };
        let packages_install_path = match root.get("packages-install-path") {
            Some(n) if !n.is_null() => n.deserialize_into(&file, "`packages-install-path`")?,
            _ => Utf8PathBuf::from("dbt_packages"),
        };
        let executor = match root.get("executor") {
            Some(n) if !n.is_null() => match n.deserialize_into::<String>(&file, "`executor`")? {
                local if local == "local" => None,
                url => Some(url),
            },
            _ => None,
        };
        let stage_dir = match root.get("stage_dir") {
            Some(n) if !n.is_null() => {
                Some((n.deserialize_into::<String>(&file, "`stage_dir`")?, Label::new(&file, n.span.clone())))
            }
            _ => None,
        };
        Ok(ProjectFile {
            keep_runs,
            executor,
            stage_dir,
            dispatch,
            packages_install_path,
            name,
            profile: root.get("profile").and_then(Node::as_str).map(str::to_owned),
            model_paths,
            macro_paths,
            seed_paths,
            test_paths: paths("test-paths", &["tests"])?,
            docs_paths,
            snapshot_paths: paths("snapshot-paths", &["snapshots"])?,
            vars,
            models: root.get("models").cloned().unwrap_or_else(Node::null),
            seeds: root.get("seeds").cloned().unwrap_or_else(Node::null),
            tests: root.get("data_tests").or_else(|| root.get("tests")).cloned().unwrap_or_else(Node::null),
            snapshots: root.get("snapshots").cloned().unwrap_or_else(Node::null),
            file,
        })
    }

    /// Where the project file lives, relative to the project root.
    pub fn path(&self) -> &Utf8Path {
        &self.file.path
    }
}

/// A warning for a key that is not in `known`, with a suggestion.
pub fn unknown_key(file: &Arc<SourceFile>, key: &Key, known: &[&str], what: &str) -> Diagnostic {
    let bare = key.name.trim_start_matches('+');
    let mut diag = Diagnostic::warning(Code::UnknownConfigKey, format!("unknown {what} `{}`", key.name))
        .with_label(Label::new(file, key.span.clone()).with_text("ferry ignores this key"));
    if let Some(help) = crate::diagnostic::did_you_mean(bare, known.iter().copied()) {
        diag = diag.with_help(help);
    }
    diag
}

/// Applies a folder-scoped config tree (`models:` or `seeds:`) to resources
/// by their fully qualified name (`[project, folder.., name]`), as dbt does:
/// `+key` is always a config, a plain key is a config when it is a known
/// config name and a folder otherwise; deeper levels win, `tags` and `meta`
/// accumulate.
#[derive(Debug)]
pub struct ConfigTree<'a> {
    file: &'a Arc<SourceFile>,
    root: &'a Node,
    used_paths: std::cell::RefCell<BTreeSet<Vec<String>>>,
}

impl<'a> ConfigTree<'a> {
    pub fn new(file: &'a Arc<SourceFile>, root: &'a Node) -> Self {
        ConfigTree { file, root, used_paths: Default::default() }
    }

    /// The config for a resource with this fully qualified name.
    pub fn resolve(&self, fqn: &[String]) -> Map<String, Json> {
        let mut config = Map::new();
        let mut node = self.root;
        let mut path = Vec::new();
        apply_level(node, &mut config);
        for part in fqn {
            let Some(child) = folder_child(node, part) else { break };
            path.push(part.clone());
            self.used_paths.borrow_mut().insert(path.clone());
            apply_level(child, &mut config);
            node = child;
        }
        config
    }

    /// Warnings for unknown `+keys` and for folder paths that matched nothing.
    pub fn warnings(&self, section: &str, folder_names: &[String]) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        self.walk(self.root, &mut Vec::new(), section, folder_names, &mut out);
        out
    }

    fn walk(&self, node: &Node, path: &mut Vec<String>, section: &str, folders: &[String], out: &mut Vec<Diagnostic>) {
        for (key, value) in node.entries() {
            if let Some(bare) = key.name.strip_prefix('+') {
                if !MODEL_CONFIG_KEYS.contains(&bare) {
                    out.push(unknown_key(self.file, key, MODEL_CONFIG_KEYS, "config key"));
                }
                continue;
            }
            if is_plain_config(key, value) {
                continue;
            }
            path.push(key.name.clone());
            if self.used_paths.borrow().contains(path) {
                self.walk(value, path, section, folders, out);
            } else {
                let dotted = format!("{section}.{}", path.join("."));
                let mut diag =
                    Diagnostic::warning(Code::UnusedConfigPath, format!("config path `{dotted}` matches no resource"))
                        .with_label(Label::new(self.file, key.span.clone()));
                if let Some(help) = crate::diagnostic::did_you_mean(&key.name, folders.iter().map(String::as_str)) {
                    diag = diag.with_help(help);
                }
                out.push(diag);
            }
            path.pop();
        }
    }
}

/// Config keys whose values are themselves mappings, so a mapping under
/// them is a value rather than a subfolder.
const MAPPING_CONFIG_KEYS: &[&str] = &[
    "meta",
    "docs",
    "contract",
    "persist_docs",
    "grants",
    "column_types",
    "load",
    "dedupe",
    "quoting",
    "partition_by",
    "freshness",
];

/// A key without `+` is a config when it names one, unless it holds a
/// mapping for a config that never takes one (then it is a folder).
fn is_plain_config(key: &Key, value: &Node) -> bool {
    let name = key.name.as_str();
    let is_map = matches!(value.value, Value::Map(_));
    MODEL_CONFIG_KEYS.contains(&name) && (!is_map || MAPPING_CONFIG_KEYS.contains(&name))
}

fn folder_child<'n>(node: &'n Node, part: &str) -> Option<&'n Node> {
    node.entries()
        .iter()
        .find(|(k, v)| k.name == part && !k.name.starts_with('+') && !is_plain_config(k, v))
        .map(|(_, v)| v)
}

fn apply_level(node: &Node, config: &mut Map<String, Json>) {
    for (key, value) in node.entries() {
        let name = match key.name.strip_prefix('+') {
            Some(bare) => bare,
            None if is_plain_config(key, value) => key.name.as_str(),
            None => continue,
        };
        merge_config(config, name, value.to_json());
    }
}

/// A config value naming columns: `id`, `"a, b"` or `[a, b]` (null: none).
/// The error names `key`.
pub fn column_list(value: &Json, key: &str) -> Result<Vec<String>, String> {
    match value {
        Json::Null => Ok(Vec::new()),
        Json::String(s) => Ok(s.split(',').map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()).collect()),
        Json::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| format!("`{key}` must list column names")))
            .collect(),
        other => Err(format!("`{key}` must be a column or a list of columns, not `{other}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(text: &str) -> (ProjectFile, Vec<Diagnostic>) {
        let mut warnings = Vec::new();
        let file = SourceFile::new("dbt_project.yml", text);
        (ProjectFile::parse(file, &mut warnings).unwrap(), warnings)
    }

    fn fqn(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn folder_configs_apply_deepest_last_and_tags_accumulate() {
        let (p, _) = project(
            "name: shop\nmodels:\n  +tags: [all]\n  shop:\n    materialized: view\n    staging:\n      +materialized: table\n      +tags: stg\n      +schema: raw\n",
        );
        let tree = ConfigTree::new(&p.file, &p.models);
        let c = tree.resolve(&fqn(&["shop", "staging", "stg_orders"]));
        assert_eq!(c["materialized"], "table");
        assert_eq!(c["schema"], "raw");
        assert_eq!(c["tags"], serde_json::json!(["all", "stg"]));
        let c = tree.resolve(&fqn(&["shop", "orders"]));
        assert_eq!(c["materialized"], "view");
        assert_eq!(c["tags"], serde_json::json!(["all"]));
    }

    #[test]
    fn unknown_plus_key_and_unused_folder_warn() {
        let (p, _) = project("name: shop\nmodels:\n  shop:\n    +materialised: view\n    stagin:\n      +schema: x\n");
        let tree = ConfigTree::new(&p.file, &p.models);
        tree.resolve(&fqn(&["shop", "staging", "a"]));
        let warnings = tree.warnings("models", &["staging".to_owned()]);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert_eq!(warnings[0].code, Code::UnknownConfigKey);
        assert_eq!(warnings[0].help.as_deref(), Some("did you mean `materialized`?"));
        assert_eq!(warnings[1].code, Code::UnusedConfigPath);
        assert_eq!(warnings[1].help.as_deref(), Some("did you mean `staging`?"));
    }

    #[test]
    fn legacy_path_keys_are_read_when_the_current_ones_are_absent() {
        let (p, warnings) = project("name: shop\nsource-paths: [src]\ndata-paths: [data]\n");
        assert_eq!((p.model_paths, p.seed_paths), (vec![Utf8PathBuf::from("src")], vec![Utf8PathBuf::from("data")]));
        assert!(warnings.is_empty(), "{warnings:?}");
        let (p, _) = project("name: shop\nmodel-paths: [m]\nsource-paths: [src]\n");
        assert_eq!(p.model_paths, vec![Utf8PathBuf::from("m")]);
    }

    #[test]
    fn defaults_and_unknown_top_level_keys() {
        let (p, warnings) = project("name: shop\nprofile: shop\nmodle-paths: [x]\n");
        assert_eq!(p.model_paths, vec![Utf8PathBuf::from("models")]);
        assert_eq!(p.profile.as_deref(), Some("shop"));
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].help.as_deref(), Some("did you mean `model-paths`?"));
    }
}
