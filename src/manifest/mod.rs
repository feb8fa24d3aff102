//! The manifest: every node of a project, rendered, with the dependencies
//! its templates actually used, the DAG over them, and each node's config
//! read into typed settings ([`config`], [`rules`]).
//!
//! Built from a [`Project`] by rendering each model and singular test once
//! with the [`Templater`] (see `build.rs`). Planning (output schemas) and
//! running are the run's job; nothing here touches DataFusion or a target.

mod build;
pub mod config;
pub mod rules;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use camino::Utf8PathBuf;
use serde_json::{Map, Value as Json};

pub use crate::dag::NodeId;
use crate::dag::{Graph, Id as _, NodeFacts};
use crate::diagnostic::{Diagnostic, SourceFile};
use crate::project::nodes::{ColumnSpec, Model, NodeRef, Seed, SourceTable, Test, TestKind};
use crate::state::Layout;
use crate::template::functions::Relation;
use crate::template::{Globals, Rendered, Templater};
use build::Lookup;
pub use build::context_for;
use config::NodeConfig;

/// How a model is materialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Materialization {
    View,
    Table,
    Ephemeral,
    Incremental,
}

impl Materialization {
    pub const NAMES: [&'static str; 4] = ["view", "table", "ephemeral", "incremental"];

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "view" => Self::View,
            "table" => Self::Table,
            "ephemeral" => Self::Ephemeral,
            "incremental" => Self::Incremental,
            _ => return None,
        })
    }

    /// The name a config gives it (`view`, `table`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::View => "view",
            Self::Table => "table",
            Self::Ephemeral => "ephemeral",
            Self::Incremental => "incremental",
        }
    }
}

/// What a node is, with what only that kind has.
#[derive(Debug, Clone)]
pub enum Resource {
    Model { model: Model, materialized: Materialization },
    Seed(Seed),
    Source(SourceTable),
    Test(Test),
}

/// One node of the DAG.
#[derive(Debug, Clone)]
pub struct Node {
    pub unique_id: String,
    pub name: String,
    pub resource: Resource,
    pub fqn: Vec<String>,
    /// Final config, as written: project file, schema file, then the
    /// template's `config()` (for `ls`, selection and `manifest.json`).
    pub raw_config: Map<String, Json>,
    /// The config ferry acts on, read once.
    pub config: NodeConfig,
    /// The relation `ref`/`source` render to, for models, seeds and sources.
    pub relation: Option<Arc<Relation>>,
    /// The render of a model or singular test.
    pub rendered: Option<Rendered>,
}

impl Node {
    /// Whether the model is staged through the checking query (rules,
    /// dedup, or conversions whose failures are quarantined).
    pub fn is_checked(&self) -> bool {
        !self.config.rules.is_empty()
            || self.config.dedupe.is_some()
            || self.config.on_conversion_error == config::OnConversionError::Quarantine
    }
}

impl Node {
    /// `model`, `snapshot`, `seed`, `source` or `test`.
    pub fn resource_type(&self) -> &'static str {
        match &self.resource {
            Resource::Model { model, .. } if model.snapshot => "snapshot",
            Resource::Model { .. } => "model",
            Resource::Seed(_) => "seed",
            Resource::Source(_) => "source",
            Resource::Test(_) => "test",
        }
    }

    /// The file that defines the node, relative to the project root.
    pub fn path(&self) -> Utf8PathBuf {
        match &self.resource {
            Resource::Model { model, .. } => model.file.path.clone(),
            Resource::Seed(s) => s.path.clone(),
            Resource::Source(s) => s.origin.file.path.clone(),
            Resource::Test(t) => t.path().to_owned(),
        }
    }

    /// A label on `value` of the config key `key` where the model sets it:
    /// its schema-file entry, else the `config()` call in its SQL (on the
    /// key itself when `value` is `None`). `None` when neither holds it
    /// (the value then comes from `ferry.yml`).
    pub fn config_label(&self, key: &str, value: Option<&str>) -> Option<crate::diagnostic::Label> {
        let Resource::Model { model, .. } = &self.resource else { return None };
        let whole = 0..model.file.text.len();
        let places =
            model.patch.iter().map(|o| (&o.file, yaml_entry(&o.file.text, o.span.start))).chain([(&model.file, whole)]);
        for (file, span) in places {
            let Some(text) = file.text.get(span.clone()) else { continue };
            let Some(at) = find_word(text, key) else { continue };
            let from = span.start + at;
            let range = match value {
                None => Some(from..from + key.len()),
                Some(v) => file.text[from..span.end].find(v).map(|i| from + i..from + i + v.len()),
            };
            if let Some(range) = range {
                return Some(crate::diagnostic::Label::new(file, range));
            }
        }
        None
    }

    /// The template of a model or singular test.
    pub fn template(&self) -> Option<&Arc<SourceFile>> {
        match &self.resource {
            Resource::Model { model, .. } => Some(&model.file),
            Resource::Test(Test { kind: TestKind::Singular { file }, .. }) => Some(file),
            _ => None,
        }
    }

    /// The file its rendered SQL is written to, relative to the compiled
    /// directory: the template's path, or for a generic test (as dbt does)
    /// `<schema file>/<test name>.sql`.
    pub fn compiled_name(&self) -> Option<Utf8PathBuf> {
        match &self.resource {
            Resource::Test(Test { kind: TestKind::Generic { origin, .. }, .. }) => {
                Some(origin.file.path.join(format!("{}.sql", self.name)))
            }
            _ => self.template().map(|t| t.path.clone()),
        }
    }

    pub fn tags(&self) -> Vec<String> {
        self.config.tags.clone()
    }

    /// The description from schema files, with `doc()` rendered.
    pub fn description(&self) -> &str {
        match &self.resource {
            Resource::Model { model, .. } => &model.description,
            Resource::Seed(s) => &s.description,
            Resource::Source(s) => &s.description,
            Resource::Test(_) => "",
        }
    }

    /// Declared columns (from schema files).
    pub fn columns(&self) -> &[ColumnSpec] {
        match &self.resource {
            Resource::Model { model, .. } => &model.columns,
            Resource::Seed(s) => &s.columns,
            Resource::Source(s) => &s.columns,
            Resource::Test(_) => &[],
        }
    }

    /// The `mask:` policies of its declared columns, by column name.
    pub fn mask_policies(&self) -> Vec<(String, crate::mask::Policy)> {
        self.columns().iter().filter_map(|c| c.mask.clone().map(|p| (c.name.clone(), p))).collect()
    }

    /// The node's own text for a display: `model.shop.orders` -> `orders`,
    /// sources as `source.table`.
    /// Whether the node is a snapshot.
    pub fn is_snapshot(&self) -> bool {
        matches!(&self.resource, Resource::Model { model, .. } if model.snapshot)
    }

    pub fn display_name(&self) -> String {
        match &self.resource {
            Resource::Source(s) => format!("{}.{}", s.source, s.name),
            _ => self.name.clone(),
        }
    }
}

/// The seed whose table a source in the warehouse (neither `path` nor
/// `connection`) names by schema and identifier: the source reads that
/// seed, so a project whose seeds land in `raw` and whose sources read
/// `raw.*` runs in one invocation as `dbt seed` then `dbt run` would.
pub(crate) fn seed_named_by(nodes: &[Node], s: &SourceTable) -> Option<usize> {
    if s.location.contains_key("path") || s.location.contains_key("connection") {
        return None;
    }
    nodes.iter().position(|n| {
        matches!(n.resource, Resource::Seed(_))
            && n.relation.as_ref().is_some_and(|r| {
                r.schema.eq_ignore_ascii_case(&s.schema) && r.identifier.eq_ignore_ascii_case(&s.identifier)
            })
    })
}

/// All nodes, their DAG and the environment that rendered them.
#[derive(Clone)]
pub struct Manifest {
    pub project_name: String,
    pub root: Utf8PathBuf,
    pub nodes: Vec<Node>,
    pub graph: Graph<NodeId>,
    /// Every node, parents before children.
    pub order: Vec<NodeId>,
    pub templater: Templater,
    pub globals: Globals,
    /// Connection URLs of the profile targets that database sources name
    /// (`connection: legacy_pg`), or why a name did not resolve.
    pub connections: BTreeMap<String, Result<String, String>>,
    /// The target's connection URL, which sources with neither a
    /// `path` nor a `connection` are read from (dbt's sources in the
    /// warehouse), or why it has none.
    pub warehouse: Option<Result<Warehouse, String>>,
    by_id: HashMap<String, usize>,
    /// The project's name, then its installed packages': the namespaces of
    /// node ids (`model.dbt_utils.x`), searched in this order by name.
    namespaces: Vec<String>,
}

/// The target database, as sources in the warehouse read it.
#[derive(Debug, Clone)]
pub struct Warehouse {
    /// The connectorx URL (with any password: never print it).
    pub url: String,
    /// The target's name in `profiles.yml`, for messages.
    pub name: String,
}

/// The result of building a manifest: it may be partial (nodes that failed
/// to render are in `failed`) or absent (a cycle).
pub struct Built {
    pub manifest: Option<Manifest>,
    pub failed: BTreeSet<NodeId>,
    pub diagnostics: Vec<Diagnostic>,
}

impl std::ops::Index<NodeId> for Manifest {
    type Output = Node;

    fn index(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }
}

impl Manifest {
    /// The project's `.ferry/` directory.
    pub fn layout(&self) -> Layout {
        Layout::new(self.root.clone())
    }

    /// The node with this unique id (`model.shop.orders`).
    pub fn find(&self, unique_id: &str) -> Option<NodeId> {
        self.by_id.get(unique_id).copied().map(NodeId::from_index)
    }

    /// Every node with its id, in the order they were declared.
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, &Node)> {
        self.nodes.iter().enumerate().map(|(i, n)| (NodeId::from_index(i), n))
    }

    /// The nodes a render's `ref`/`source` calls name.
    pub fn nodes_called(&self, rendered: &Rendered) -> BTreeSet<NodeId> {
        let lookup = Lookup { namespaces: &self.namespaces, by_id: &self.by_id };
        lookup.called(rendered).map(NodeId::from_index).collect()
    }

    /// The seed a source in the warehouse names (see [`seed_named_by`]).
    pub fn seed_read_by(&self, s: &SourceTable) -> Option<NodeId> {
        seed_named_by(&self.nodes, s).map(NodeId::from_index)
    }

    /// The node a generic test is attached to.
    pub fn attached_to(&self, test: NodeId) -> Option<NodeId> {
        let attached_to = match &self[test].resource {
            Resource::Test(Test { kind: TestKind::Generic { attached_to, .. }, .. }) => attached_to,
            Resource::Test(Test { kind: TestKind::Unit { model, .. }, .. }) => &NodeRef::Model(model.clone()),
            _ => return None,
        };
        Lookup { namespaces: &self.namespaces, by_id: &self.by_id }.node(attached_to).map(NodeId::from_index)
    }

    /// Facts for selection, one per node.
    pub fn facts(&self) -> Vec<NodeFacts> {
        self.nodes
            .iter()
            .map(|n| NodeFacts {
                name: n.name.clone(),
                resource_type: n.resource_type(),
                fqn: n.fqn.clone(),
                path: n.path().to_string(),
                tags: n.tags(),
                config: n.raw_config.clone(),
                package: n.fqn.first().cloned().unwrap_or_else(|| self.project_name.clone()),
                versioned: match &n.resource {
                    Resource::Model { model, .. } => model.version.as_ref().map(|v| v.model.clone()),
                    _ => None,
                },
                source: match &n.resource {
                    Resource::Source(s) => Some((s.source.clone(), s.name.clone())),
                    _ => None,
                },
                test: match &n.resource {
                    Resource::Test(Test { kind: TestKind::Generic { test_name, .. }, .. }) => {
                        Some(("generic", test_name.clone()))
                    }
                    Resource::Test(Test { kind: TestKind::Singular { .. }, name, .. }) => {
                        Some(("singular", name.clone()))
                    }
                    Resource::Test(Test { kind: TestKind::Unit { .. }, name, .. }) => Some(("unit", name.clone())),
                    _ => None,
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;

/// Where `word` first occurs in `text` as a whole word.
fn find_word(text: &str, word: &str) -> Option<usize> {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(word).map(|(i, _)| i).find(|&i| {
        !text[..i].chars().next_back().is_some_and(is_word)
            && !text[i + word.len()..].chars().next().is_some_and(is_word)
    })
}

/// The lines of the YAML block entry starting at `start`: up to the first
/// later line indented less than `start`'s column.
fn yaml_entry(text: &str, start: usize) -> std::ops::Range<usize> {
    let start = start.min(text.len());
    let column = start - text[..start].rfind('\n').map_or(0, |i| i + 1);
    let mut end = text[start..].find('\n').map_or(text.len(), |i| start + i + 1);
    while end < text.len() {
        let line = &text[end..text[end..].find('\n').map_or(text.len(), |i| end + i + 1)];
        let indent = line.len() - line.trim_start_matches(' ').len();
        if !line.trim().is_empty() && !line.trim_start().starts_with('#') && indent < column {
            break;
        }
        end += line.len();
    }
    start..end
}
