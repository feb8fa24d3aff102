//! The manifest: every node of a project, rendered, with the dependencies
//! its templates actually used, and the DAG over them.
//!
//! Built from a [`Project`] by rendering each model and singular test once
//! with the [`Templater`]. Planning (output schemas) is the engine's job.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use camino::Utf8PathBuf;
use rayon::prelude::*;
use serde_json::{Map, Value as Json};

use crate::dag::{Graph, NodeFacts};
use crate::diagnostic::{Code, Diagnostic, Label, SourceFile};
use crate::project::Project;
use crate::project::config::MODEL_CONFIG_KEYS;
use crate::project::nodes::{ColumnSpec, Model, NodeRef, Seed, SourceTable, Test, TestKind};
use crate::template::functions::{Relation, Resolver, quote_ident};
use crate::template::merge_config;
use crate::template::{Globals, NodeContext, Rendered, Templater};

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
    /// Final config: project file, schema file, then the template's `config()`.
    pub config: Map<String, Json>,
    /// The relation `ref`/`source` render to, for models, seeds and sources.
    pub relation: Option<Arc<Relation>>,
    /// The render of a model or singular test.
    pub rendered: Option<Rendered>,
    /// A model's row-level rules, compiled.
    pub rules: Vec<crate::validate::rules::Rule>,
    /// A model's `dedupe` config.
    pub dedupe: Option<crate::validate::rules::Dedupe>,
}

impl Node {
    /// Whether the model is staged through the checking query (rules or dedup).
    pub fn is_checked(&self) -> bool {
        !self.rules.is_empty() || self.dedupe.is_some()
    }
}

impl Node {
    /// `model`, `seed`, `source` or `test`.
    pub fn resource_type(&self) -> &'static str {
        match self.resource {
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
        match self.config.get("tags") {
            Some(Json::Array(items)) => items.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect(),
            Some(Json::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        }
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

    /// The node's own text for a display: `model.shop.orders` -> `orders`,
    /// sources as `source.table`.
    pub fn display_name(&self) -> String {
        match &self.resource {
            Resource::Source(s) => format!("{}.{}", s.source, s.name),
            _ => self.name.clone(),
        }
    }
}

/// All nodes, their DAG and the environment that rendered them.
pub struct Manifest {
    pub project_name: String,
    pub root: Utf8PathBuf,
    pub nodes: Vec<Node>,
    pub graph: Graph,
    /// Every node, parents before children.
    pub order: Vec<usize>,
    pub templater: Templater,
    pub globals: Globals,
    /// Connection URLs of the profile targets that database sources name
    /// (`connection: legacy_pg`), or why a name did not resolve.
    pub connections: BTreeMap<String, Result<String, String>>,
    by_id: HashMap<String, usize>,
}

/// The result of building a manifest: it may be partial (nodes that failed
/// to render are in `failed`) or absent (a cycle).
pub struct Built {
    pub manifest: Option<Manifest>,
    pub failed: BTreeSet<usize>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Manifest {
    pub fn node(&self, unique_id: &str) -> Option<usize> {
        self.by_id.get(unique_id).copied()
    }

    /// The nodes a render's `ref`/`source` calls name.
    pub fn nodes_called(&self, rendered: &Rendered) -> BTreeSet<usize> {
        let lookup = Lookup { project: &self.project_name, by_id: &self.by_id };
        let refs = rendered.refs.iter().map(|c| NodeRef::Model(c.name.clone()));
        let sources = rendered.sources.iter().map(|(s, t)| NodeRef::Source(s.clone(), t.clone()));
        refs.chain(sources).filter_map(|r| lookup.node(&r)).collect()
    }

    /// The node a generic test is attached to.
    pub fn attached_to(&self, test: usize) -> Option<usize> {
        let Resource::Test(Test { kind: TestKind::Generic { attached_to, .. }, .. }) = &self.nodes[test].resource
        else {
            return None;
        };
        Lookup { project: &self.project_name, by_id: &self.by_id }.node(attached_to)
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
                config: n.config.clone(),
                package: self.project_name.clone(),
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
                    _ => None,
                },
            })
            .collect()
    }

    /// Builds the manifest: renders every model and singular test, resolves
    /// test arguments, and sorts the DAG.
    pub fn build(project: Project, globals: Globals, target_schema: &str) -> Built {
        let mut b = Builder { diags: Vec::new(), failed: BTreeSet::new(), disabled: Default::default() };
        let root = project.root.clone();
        let project_name = project.file.name.clone();
        let (nodes, templater) = b.nodes(project, &globals, target_schema);
        let by_id: HashMap<String, usize> = nodes.iter().enumerate().map(|(i, n)| (n.unique_id.clone(), i)).collect();
        let graph = b.edges(&nodes, &by_id);
        let order = match graph.toposort() {
            Ok(order) => order,
            Err(cycle) => {
                b.diags.push(cycle_diagnostic(&nodes, &cycle));
                return Built { manifest: None, failed: b.failed, diagnostics: b.diags };
            }
        };
        let manifest = Manifest {
            project_name,
            root,
            nodes,
            graph,
            order,
            templater,
            globals,
            connections: BTreeMap::new(),
            by_id,
        };
        Built { manifest: Some(manifest), failed: b.failed, diagnostics: b.diags }
    }
}

struct Builder {
    diags: Vec<Diagnostic>,
    failed: BTreeSet<usize>,
    /// Models disabled by their own template's `config(enabled=false)`.
    disabled: std::collections::HashSet<String>,
}

fn enabled(config: &Map<String, Json>) -> bool {
    config.get("enabled").and_then(Json::as_bool).unwrap_or(true)
}

/// dbt's default `generate_schema_name`: a custom schema is appended to the target's.
fn schema_for(config: &Map<String, Json>, target_schema: &str) -> String {
    match config.get("schema").and_then(Json::as_str) {
        Some(custom) if !custom.is_empty() => format!("{target_schema}_{custom}"),
        _ => target_schema.to_owned(),
    }
}

impl Builder {
    fn nodes(&mut self, parts: Project, globals: &Globals, target_schema: &str) -> (Vec<Node>, Templater) {
        let project = parts.file.name.clone();
        let mut resolver = Resolver { project: project.clone(), ..Default::default() };
        let mut nodes = Vec::new();
        for s in parts.sources {
            let rel = Arc::new(Relation {
                rendered: format!("{}.{}", quote_ident(&s.source), quote_ident(&s.name)),
                database: s.database.clone().unwrap_or_default(),
                schema: s.schema.clone(),
                identifier: s.identifier.clone(),
            });
            resolver.sources.insert((s.source.clone(), s.name.clone()), Arc::clone(&rel));
            nodes.push(Node {
                unique_id: format!("source.{project}.{}.{}", s.source, s.name),
                name: s.name.clone(),
                fqn: vec![project.clone(), s.source.clone(), s.name.clone()],
                config: s.config.clone(),
                relation: Some(rel),
                rendered: None,
                rules: Vec::new(),
                dedupe: None,
                resource: Resource::Source(s),
            });
        }
        for s in parts.seeds.into_iter().filter(|s| enabled(&s.config)) {
            let rel = model_relation(&s.name, &s.config, target_schema);
            resolver.refs.insert(s.name.clone(), Arc::clone(&rel));
            nodes.push(Node {
                unique_id: format!("seed.{project}.{}", s.name),
                name: s.name.clone(),
                fqn: s.fqn.clone(),
                config: s.config.clone(),
                relation: Some(rel),
                rendered: None,
                rules: Vec::new(),
                dedupe: None,
                resource: Resource::Seed(s),
            });
        }
        let models: Vec<(Model, Arc<Relation>)> = parts
            .models
            .into_iter()
            .filter(|m| enabled(&m.config))
            .map(|m| {
                let rel = model_relation(&m.name, &m.config, target_schema);
                resolver.refs.insert(m.name.clone(), Arc::clone(&rel));
                (m, rel)
            })
            .collect();
        let mut globals = globals.clone();
        globals.docs = Arc::new(parts.docs);
        let (mut templater, macro_diags) = Templater::new(&globals, Arc::new(resolver), &parts.macro_files);
        self.diags.extend(macro_diags);
        let first_model = nodes.len();
        for (m, rel) in models {
            if let Err(d) = templater.add_template(&m.file) {
                self.diags.push(*d);
                self.failed.insert(nodes.len());
            }
            nodes.push(Node {
                unique_id: format!("model.{project}.{}", m.name),
                name: m.name.clone(),
                fqn: m.fqn.clone(),
                config: m.config.clone(),
                relation: Some(rel),
                rendered: None,
                rules: Vec::new(),
                dedupe: None,
                resource: Resource::Model { model: m, materialized: Materialization::View },
            });
        }
        for t in parts.tests.into_iter().filter(|t| enabled(&t.config)) {
            if let TestKind::Singular { file } = &t.kind
                && let Err(d) = templater.add_template(file)
            {
                self.diags.push(*d);
                self.failed.insert(nodes.len());
            }
            nodes.push(Node {
                unique_id: format!("test.{project}.{}", t.name),
                name: t.name.clone(),
                fqn: t.fqn.clone(),
                config: t.config.clone(),
                relation: None,
                rendered: None,
                rules: Vec::new(),
                dedupe: None,
                resource: Resource::Test(t),
            });
        }
        self.render_all(&mut nodes[first_model..], first_model, &templater);
        self.render_generic_tests(&mut nodes, &templater);
        self.compile_rules(&mut nodes, &templater);
        let mut nodes = self.drop_disabled(nodes);
        for node in &mut nodes {
            self.render_descriptions(node, &templater);
        }
        (nodes, templater)
    }

    /// Drops models that a template's own `config(enabled=false)` disabled
    /// (known only after rendering), with the generic tests attached to them.
    fn drop_disabled(&mut self, nodes: Vec<Node>) -> Vec<Node> {
        let disabled: std::collections::HashSet<String> = nodes
            .iter()
            .filter(|n| matches!(n.resource, Resource::Model { .. }) && !enabled(&n.config))
            .map(|n| n.name.clone())
            .collect();
        if disabled.is_empty() {
            return nodes;
        }
        let keep = |n: &Node| match &n.resource {
            Resource::Model { .. } => !disabled.contains(&n.name),
            Resource::Test(Test { kind: TestKind::Generic { attached_to, .. }, .. }) => {
                !matches!(attached_to, NodeRef::Model(m) if disabled.contains(m))
            }
            _ => true,
        };
        let mut kept = Vec::with_capacity(nodes.len());
        let mut failed = BTreeSet::new();
        for (i, n) in nodes.into_iter().enumerate() {
            if keep(&n) {
                if self.failed.contains(&i) {
                    failed.insert(kept.len());
                }
                kept.push(n);
            }
        }
        self.failed = failed;
        self.disabled = disabled;
        kept
    }

    /// Renders `{{ doc('name') }}` (and any Jinja) in descriptions, in place.
    fn render_descriptions(&mut self, node: &mut Node, templater: &Templater) {
        let (description, columns, place) = match &mut node.resource {
            Resource::Model { model, .. } => {
                let place = model.patch.as_ref().map(|o| Label::new(&o.file, o.span.clone()));
                (&mut model.description, &mut model.columns, place)
            }
            Resource::Seed(s) => (&mut s.description, &mut s.columns, None),
            Resource::Source(s) => {
                let place = Some(Label::new(&s.origin.file, s.origin.span.clone()));
                (&mut s.description, &mut s.columns, place)
            }
            Resource::Test(_) => return,
        };
        let texts = std::iter::once(description).chain(columns.iter_mut().map(|c| &mut c.description));
        for text in texts.filter(|t| t.contains("{{") || t.contains("{%")) {
            match templater.render_str(text) {
                Ok(rendered) => *text = rendered,
                Err(mut d) => {
                    d.message = format!("in the description of `{}`: {}", node.name, d.message);
                    if let Some(label) = &place {
                        d.file = Some(label.file.path.clone());
                        d.primary = Some(label.clone());
                    }
                    self.diags.push(*d);
                }
            }
        }
    }

    /// Renders models and singular tests in parallel, then applies each
    /// model's `config()` and checks its materialization.
    fn render_all(&mut self, nodes: &mut [Node], offset: usize, templater: &Templater) {
        let failed = &self.failed;
        let results: Vec<Option<Result<Rendered, Box<Diagnostic>>>> = nodes
            .par_iter()
            .enumerate()
            .map(|(i, n)| {
                if failed.contains(&(offset + i)) {
                    return None;
                }
                let file = n.template()?;
                Some(templater.render(file, &context_for(n)))
            })
            .collect();
        for (i, (node, result)) in nodes.iter_mut().zip(results).enumerate() {
            match result {
                None => {}
                Some(Err(d)) => {
                    self.diags.push(*d);
                    self.failed.insert(offset + i);
                }
                Some(Ok(rendered)) => {
                    self.apply_rendered_config(node, &rendered);
                    if let Err(d) = set_materialization(node) {
                        self.diags.push(*d);
                        self.failed.insert(offset + i);
                    }
                    node.rendered = Some(rendered);
                }
            }
        }
    }

    /// Renders every generic test by calling its `test_<name>` macro with
    /// the relation it is attached to; a test macro's own `config()` fills
    /// in what the schema files left unset.
    fn render_generic_tests(&mut self, nodes: &mut [Node], templater: &Templater) {
        let project = nodes.iter().find_map(|n| n.fqn.first().cloned()).unwrap_or_default();
        let by_id: HashMap<String, usize> = nodes.iter().enumerate().map(|(i, n)| (n.unique_id.clone(), i)).collect();
        let lookup = Lookup { project: &project, by_id: &by_id };
        let relation_of = |r: &NodeRef| lookup.node(r).and_then(|i| nodes[i].relation.clone());
        let failed = &self.failed;
        let results: Vec<(usize, Result<Rendered, Box<Diagnostic>>)> = nodes
            .par_iter()
            .enumerate()
            .filter(|(i, _)| !failed.contains(i))
            .filter_map(|(i, n)| {
                let Resource::Test(Test {
                    kind: TestKind::Generic { test_name, attached_to, column, args, origin, .. },
                    ..
                }) = &n.resource
                else {
                    return None;
                };
                let result = match relation_of(attached_to) {
                    Some(rel) => {
                        let column = args.get("column_name").and_then(Json::as_str).or(column.as_deref());
                        templater.render_generic_test(test_name, narrowed(&rel, &n.config), column, args)
                    }
                    None => Err(Box::new(Diagnostic::error(
                        Code::UnknownRef,
                        format!(
                            "test `{}` is attached to `{}`, which is not in the project",
                            n.name,
                            describe(attached_to)
                        ),
                    ))),
                };
                Some((
                    i,
                    result.map_err(|mut d| {
                        d.message = format!("in test `{}`: {}", n.name, d.message);
                        d.file = Some(origin.file.path.clone());
                        d.primary = Some(Label::new(&origin.file, origin.span.clone()));
                        d
                    }),
                ))
            })
            .collect();
        for (i, result) in results {
            match result {
                Ok(rendered) => {
                    for (k, v) in &rendered.config {
                        if !nodes[i].config.contains_key(k) {
                            nodes[i].config.insert(k.clone(), v.clone());
                        }
                    }
                    nodes[i].rendered = Some(rendered);
                }
                Err(d) => {
                    self.diags.push(*d);
                    self.failed.insert(i);
                }
            }
        }
    }

    /// Compiles each model's `rules:`; rules need a staged model.
    fn compile_rules(&mut self, nodes: &mut [Node], templater: &Templater) {
        for (i, node) in nodes.iter_mut().enumerate() {
            let Resource::Model { model, materialized } = &node.resource else { continue };
            if self.failed.contains(&i) {
                continue;
            }
            let dedupe = match crate::validate::rules::Dedupe::from_config(&node.config) {
                Ok(d) => d,
                Err(message) => {
                    let mut d = Diagnostic::error(Code::ModelConfig, format!("`{}`: {message}", node.name));
                    d = match &model.patch {
                        Some(o) => d.with_label(o.name_label()),
                        None => d.in_file(&model.file.path),
                    };
                    self.diags.push(d);
                    self.failed.insert(i);
                    continue;
                }
            };
            if model.rules.is_empty() && dedupe.is_none() {
                continue;
            }
            if *materialized != Materialization::Table {
                let what = if model.rules.is_empty() { "`dedupe`" } else { "rules" };
                let mut d = Diagnostic::error(
                    Code::ModelConfig,
                    format!(
                        "`{}` has {what} but is materialized as `{}`",
                        node.name,
                        format!("{materialized:?}").to_lowercase()
                    ),
                )
                .with_help("rules and dedup act on rows as a model is staged: materialize it as `table`");
                d = match (model.rules.first(), &model.patch) {
                    (Some(r), _) => d.with_label(r.origin.name_label()),
                    (None, Some(o)) => d.with_label(o.name_label()),
                    (None, None) => d.in_file(&model.file.path),
                };
                self.diags.push(d);
                self.failed.insert(i);
                continue;
            }
            node.dedupe = dedupe;
            match crate::validate::rules::compile(&node.name, &model.rules, templater) {
                Ok(rules) => node.rules = rules,
                Err(diags) => {
                    self.diags.extend(diags);
                    self.failed.insert(i);
                }
            }
        }
    }

    fn apply_rendered_config(&mut self, node: &mut Node, rendered: &Rendered) {
        let Some(file) = node.template().cloned() else { return };
        for (k, v) in &rendered.config {
            if !MODEL_CONFIG_KEYS.contains(&k.as_str()) {
                let mut d =
                    Diagnostic::warning(Code::UnknownConfigKey, format!("unknown config key `{k}` in `config()`"))
                        .in_file(&file.path);
                if let Some(help) = crate::diagnostic::did_you_mean(k, MODEL_CONFIG_KEYS.iter().copied()) {
                    d = d.with_help(help);
                }
                self.diags.push(d);
            }
            merge_config(&mut node.config, k, v.clone());
        }
    }

    /// Adds edges for every `ref`/`source` call and for test attachments.
    fn edges(&mut self, nodes: &[Node], by_id: &HashMap<String, usize>) -> Graph {
        let mut graph = Graph::new(nodes.len());
        let project = nodes.iter().find_map(|n| n.fqn.first().cloned()).unwrap_or_default();
        let lookup = Lookup { project: &project, by_id };
        for (i, node) in nodes.iter().enumerate() {
            for calls in node.rules.iter().filter_map(|r| r.calls.as_ref()) {
                lookup.add_calls(&mut graph, calls, i);
            }
            if let Some(r) = &node.rendered {
                lookup.add_calls(&mut graph, r, i);
                for name in r.refs.iter().map(|c| &c.name).filter(|n| self.disabled.contains(*n)) {
                    self.diags.push(
                        Diagnostic::error(
                            Code::UnknownRef,
                            format!("`{}` refs `{name}`, which is disabled", node.name),
                        )
                        .in_file(node.path())
                        .with_help(format!("enable `{name}`, or remove the `ref('{name}')`")),
                    );
                    self.failed.insert(i);
                }
            }
            let Resource::Test(Test { kind: TestKind::Generic { attached_to, .. }, .. }) = &node.resource else {
                continue;
            };
            // Arguments such as `to: ref('customers')` added edges when the
            // test rendered.
            if let Some(p) = lookup.node(attached_to) {
                graph.add_edge(p, i);
            }
        }
        graph
    }
}

/// Finds nodes by what `ref()`, `source()` and schema files call them.
struct Lookup<'a> {
    project: &'a str,
    by_id: &'a HashMap<String, usize>,
}

impl Lookup<'_> {
    fn node(&self, r: &NodeRef) -> Option<usize> {
        let project = self.project;
        match r {
            NodeRef::Model(n) | NodeRef::Seed(n) => self
                .by_id
                .get(&format!("model.{project}.{n}"))
                .or_else(|| self.by_id.get(&format!("seed.{project}.{n}")))
                .copied(),
            NodeRef::Source(s, t) => self.by_id.get(&format!("source.{project}.{s}.{t}")).copied(),
        }
    }

    /// Adds an edge from every node a render's `ref`/`source` calls named to `child`.
    fn add_calls(&self, graph: &mut Graph, rendered: &Rendered, child: usize) {
        let refs = rendered.refs.iter().map(|c| NodeRef::Model(c.name.clone()));
        let sources = rendered.sources.iter().map(|(s, t)| NodeRef::Source(s.clone(), t.clone()));
        for parent in refs.chain(sources).filter_map(|r| self.node(&r)) {
            graph.add_edge(parent, child);
        }
    }
}

/// The relation a test reads: its node's, narrowed by a `where` config as
/// dbt does (`(select * from x where ...) dbt_subquery`).
fn narrowed(rel: &Arc<Relation>, config: &Map<String, Json>) -> Arc<Relation> {
    match config.get("where").and_then(Json::as_str).map(str::trim).filter(|w| !w.is_empty()) {
        None => Arc::clone(rel),
        Some(filter) => Arc::new(Relation {
            rendered: format!("(select * from {} where {filter}) dbt_subquery", rel.rendered),
            ..(**rel).clone()
        }),
    }
}

fn describe(r: &NodeRef) -> String {
    match r {
        NodeRef::Model(n) | NodeRef::Seed(n) => n.clone(),
        NodeRef::Source(s, t) => format!("{s}.{t}"),
    }
}

/// What a node's template sees as `this` and `model`.
pub fn context_for(n: &Node) -> NodeContext {
    let this = n.relation.clone().unwrap_or_else(|| {
        Arc::new(Relation {
            rendered: quote_ident(&n.name),
            database: String::new(),
            schema: String::new(),
            identifier: n.name.clone(),
        })
    });
    let path = n.path();
    NodeContext {
        this,
        model: serde_json::json!({
            "name": n.name, "unique_id": n.unique_id, "resource_type": n.resource_type(),
            "path": path, "original_file_path": path, "package_name": n.fqn.first(),
        }),
        is_incremental: false,
    }
}

/// The relation `ref()` renders for a model or seed: its DataFusion table
/// name, with dbt's schema and alias as attributes.
fn model_relation(name: &str, config: &Map<String, Json>, target_schema: &str) -> Arc<Relation> {
    Arc::new(Relation {
        rendered: quote_ident(name),
        database: String::new(),
        schema: schema_for(config, target_schema),
        identifier: config.get("alias").and_then(Json::as_str).unwrap_or(name).to_owned(),
    })
}

fn set_materialization(node: &mut Node) -> Result<(), Box<Diagnostic>> {
    let Resource::Model { model, materialized } = &mut node.resource else { return Ok(()) };
    let value = node.config.get("materialized").and_then(Json::as_str).unwrap_or("view");
    match Materialization::parse(value) {
        Some(m) => {
            *materialized = m;
            Ok(())
        }
        None => {
            let mut d = Diagnostic::error(
                Code::ModelConfig,
                format!("unknown materialization `{value}` for model `{}`", model.name),
            )
            .in_file(&model.file.path)
            .with_note(format!(
                "ferry materializes models as {}",
                Materialization::NAMES.map(|n| format!("`{n}`")).join(", ")
            ));
            if let Some(help) = crate::diagnostic::did_you_mean(value, Materialization::NAMES) {
                d = d.with_help(help);
            }
            Err(Box::new(d))
        }
    }
}

fn cycle_diagnostic(nodes: &[Node], cycle: &[usize]) -> Diagnostic {
    let names: Vec<String> = cycle.iter().map(|&i| format!("`{}`", nodes[i].display_name())).collect();
    let mut chain = names.join(" -> ");
    chain.push_str(&format!(" -> {}", names[0]));
    let first = &nodes[cycle[0]];
    let mut d = Diagnostic::error(Code::Cycle, format!("dependency cycle: {chain}"))
        .with_help("each model depends on the next; remove one `ref()` to break the cycle");
    for (k, &i) in cycle.iter().enumerate() {
        let next = &nodes[cycle[(k + 1) % cycle.len()]];
        d = d.with_note(format!("`{}` ({}) refs `{}`", nodes[i].display_name(), nodes[i].path(), next.display_name()));
    }
    if let Some(file) = first.template() {
        d = d.in_file(&file.path);
    }
    d
}
