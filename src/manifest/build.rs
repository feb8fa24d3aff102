//! Builds the [`Manifest`]: renders every model and singular test (in
//! parallel), renders generic tests with the relation they are attached
//! to, reads each node's config into typed settings, drops disabled
//! models, and sorts the DAG over the `ref`/`source` calls the renders made.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use rayon::prelude::*;
use serde_json::{Map, Value as Json};

use super::config::{self, Dedupe, NodeConfig};
use super::rules::RuleKind;
use super::{Built, Manifest, Materialization, Node, NodeId, Resource};
use crate::dag::{Graph, Id as _};
use crate::diagnostic::{Code, Diagnostic, Label};
use crate::project::Project;
use crate::project::config::MODEL_CONFIG_KEYS;
use crate::project::nodes::{Model, NodeRef, Origin, SourceTable, Test, TestKind};
use crate::template::config_values::ConfigValues;
use crate::template::functions::{Relation, Resolver, quote_ident};
use crate::template::introspect::Introspector;
use crate::template::{Globals, MacroSources, NodeContext, Rendered, Templater, merge_config};

impl Manifest {
    /// Builds the manifest: renders every model and singular test, resolves
    /// test arguments, and sorts the DAG.
    pub fn build(project: Project, globals: Globals, target_schema: &str) -> Built {
        let project_name = project.file.name.clone();
        let namespaces = std::iter::once(project_name.clone()).chain(project.packages.iter().map(|p| p.name.clone()));
        let mut b = Builder {
            diags: Vec::new(),
            failed: BTreeSet::new(),
            disabled: Default::default(),
            namespaces: namespaces.collect(),
            schemas: SchemaNames::default(),
        };
        let root = project.root.clone();
        let (nodes, templater) = b.nodes(project, &globals, target_schema);
        let by_id: HashMap<String, usize> = nodes.iter().enumerate().map(|(i, n)| (n.unique_id.clone(), i)).collect();
        let graph = b.edges(&nodes, &by_id);
        let failed = b.failed.iter().copied().map(NodeId::from_index).collect();
        let order = match graph.toposort() {
            Ok(order) => order,
            Err(cycle) => {
                b.diags.push(cycle_diagnostic(&nodes, &cycle));
                return Built { manifest: None, failed, diagnostics: b.diags };
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
            warehouse: None,
            by_id,
            namespaces: b.namespaces,
        };
        Built { manifest: Some(manifest), failed, diagnostics: b.diags }
    }
}

struct Builder {
    diags: Vec<Diagnostic>,
    failed: BTreeSet<usize>,
    /// Models disabled by their own template's `config(enabled=false)`.
    disabled: std::collections::HashSet<String>,
    /// The project's name, then its packages' (see [`Manifest`]).
    namespaces: Vec<String>,
    schemas: SchemaNames,
}

/// dbt's default `generate_schema_name`: a custom schema is appended to the target's.
fn schema_for(custom: Option<&str>, target_schema: &str) -> String {
    match custom {
        Some(custom) if !custom.is_empty() => format!("{target_schema}_{custom}"),
        _ => target_schema.to_owned(),
    }
}

impl Node {
    /// A node as declared, its config not yet read and its template not yet rendered.
    fn declared(
        unique_id: String,
        (name, fqn): (&str, Vec<String>),
        raw_config: Map<String, Json>,
        relation: Option<Arc<Relation>>,
        resource: Resource,
    ) -> Node {
        Node {
            unique_id,
            name: name.to_owned(),
            fqn,
            raw_config,
            config: NodeConfig::default(),
            relation,
            rendered: None,
            resource,
        }
    }
}

impl Builder {
    fn nodes(&mut self, mut parts: Project, globals: &Globals, target_schema: &str) -> (Vec<Node>, Templater) {
        let project = parts.file.name.clone();
        self.render_config_values(&mut parts, globals);
        let mut resolver =
            Resolver { project: project.clone(), packages: self.namespaces[1..].to_vec(), ..Default::default() };
        let mut globals = globals.clone();
        globals.docs = Arc::new(parts.docs);
        let macros = MacroSources {
            project: parts.macro_files,
            packages: parts.packages.into_iter().map(|p| (p.name, p.macro_files)).collect(),
            dispatch: parts.file.dispatch.clone(),
        };
        self.schemas = SchemaNames::new(&globals, &macros, target_schema);
        let mut nodes = source_nodes((&project, &self.schemas.database), parts.sources, &mut resolver);
        for s in parts.seeds.into_iter().filter(|s| config::enabled(&s.config)) {
            let rel = self.relation_of(&s.name, &s.config, ("seed", &s.fqn));
            resolver.refs.insert(s.name.clone(), Arc::clone(&rel));
            resolver.owners.insert(s.name.clone(), s.fqn.first().cloned().unwrap_or_default());
            let ns = s.fqn.first().unwrap_or(&project);
            let (id, name, config) = (format!("seed.{ns}.{}", s.name), s.name.clone(), s.config.clone());
            nodes.push(Node::declared(id, (&name, s.fqn.clone()), config, Some(rel), Resource::Seed(s)));
        }
        let mut models: Vec<(Model, Arc<Relation>)> = Vec::new();
        for m in parts.models.into_iter().filter(|m| config::enabled(&m.config)) {
            let rel = self.relation_of(&m.name, &m.config, ("model", &m.fqn));
            resolver.refs.insert(m.name.clone(), Arc::clone(&rel));
            resolver.owners.insert(m.name.clone(), m.fqn.first().cloned().unwrap_or_default());
            if let Some(v) = &m.version {
                let versions = resolver.versions.entry(v.model.clone()).or_default();
                versions.models.insert(v.v.clone(), m.name.clone());
                if v.latest {
                    versions.latest.clone_from(&v.v);
                }
            }
            models.push((m, rel));
        }
        let (mut templater, macro_diags) = Templater::new(&globals, Arc::new(resolver), &macros);
        self.diags.extend(macro_diags);
        let first_model = nodes.len();
        for (m, rel) in models {
            if let Err(d) = templater.add_template(&m.file) {
                self.diags.push(*d);
                self.failed.insert(nodes.len());
            }
            let kind = if m.snapshot { "snapshot" } else { "model" };
            let ns = m.fqn.first().unwrap_or(&project);
            let (id, name, fqn, config) =
                (format!("{kind}.{ns}.{}", m.name), m.name.clone(), m.fqn.clone(), m.config.clone());
            let resource = Resource::Model { materialized: Materialization::View, model: m };
            nodes.push(Node::declared(id, (&name, fqn), config, Some(rel), resource));
        }
        for t in parts.tests.into_iter().filter(|t| config::enabled(&t.config)) {
            if let TestKind::Singular { file } = &t.kind
                && let Err(d) = templater.add_template(file)
            {
                self.diags.push(*d);
                self.failed.insert(nodes.len());
            }
            let ns = t.fqn.first().unwrap_or(&project);
            let id = match &t.kind {
                TestKind::Unit { model, .. } => format!("unit_test.{ns}.{model}.{}", t.name),
                _ => format!("test.{ns}.{}", t.name),
            };
            let (name, fqn, config) = (t.name.clone(), t.fqn.clone(), t.config.clone());
            nodes.push(Node::declared(id, (&name, fqn), config, None, Resource::Test(t)));
        }
        self.render_all(&mut nodes[first_model..], first_model, &templater);
        self.render_generic_tests(&mut nodes, &templater);
        self.render_unit_tests(&mut nodes, &templater);
        self.resolve_configs(&mut nodes, &templater);
        let mut nodes = self.drop_disabled(nodes);
        for node in &mut nodes {
            self.render_descriptions(node, &templater);
        }
        (nodes, templater)
    }

    /// Renders the Jinja in config values from the project and schema files
    /// (`+enabled: "{{ var('x') }}"`) and in sources' names, as dbt does
    /// before it parses a model.
    fn render_config_values(&mut self, parts: &mut Project, globals: &Globals) {
        let values = ConfigValues::new(globals);
        let mut failed = |what: String, path: &camino::Utf8Path, e: String| {
            self.diags.push(Diagnostic::error(Code::ModelConfig, format!("{what}: {e}")).in_file(path).with_note(
                "config values in `dbt_project.yml` and schema files render with `var`, `env_var` and `target`",
            ));
        };
        for m in &mut parts.models {
            if let Err(e) = values.render(&mut m.config) {
                failed(format!("`{}`", m.name), &m.file.path, e);
            }
        }
        for s in &mut parts.seeds {
            if let Err(e) = values.render(&mut s.config) {
                failed(format!("seed `{}`", s.name), &s.path, e);
            }
        }
        for t in &mut parts.tests {
            if let Err(e) = values.render(&mut t.config) {
                failed(format!("test `{}`", t.name), t.path(), e);
            }
        }
        for s in &mut parts.sources {
            let what = format!("source `{}.{}`", s.source, s.name);
            let mut names = [&mut s.schema, &mut s.identifier].into_iter().chain(s.database.as_mut());
            let result = values.render(&mut s.config).and_then(|()| names.try_for_each(|n| values.render_text(n)));
            if let Err(e) = result {
                failed(what, &s.origin.file.path, e);
            }
        }
    }

    /// Drops models and singular tests that a template's own
    /// `config(enabled=false)` disabled (known only after rendering), and
    /// the generic tests attached to such models.
    fn drop_disabled(&mut self, nodes: Vec<Node>) -> Vec<Node> {
        let disabled: std::collections::HashSet<String> = nodes
            .iter()
            .filter(|n| matches!(n.resource, Resource::Model { .. }) && !config::enabled(&n.raw_config))
            .map(|n| n.name.clone())
            .collect();
        let singular_off = |n: &Node| {
            matches!(&n.resource, Resource::Test(Test { kind: TestKind::Singular { .. }, .. }))
                && !config::enabled(&n.raw_config)
        };
        if disabled.is_empty() && !nodes.iter().any(singular_off) {
            return nodes;
        }
        let keep = |n: &Node| match &n.resource {
            Resource::Model { .. } => !disabled.contains(&n.name),
            Resource::Test(Test { kind: TestKind::Singular { .. }, .. }) => !singular_off(n),
            Resource::Test(Test { kind: TestKind::Generic { attached_to, .. }, .. }) => {
                !matches!(attached_to, NodeRef::Model(m) if disabled.contains(m))
            }
            Resource::Test(Test { kind: TestKind::Unit { model, .. }, .. }) => !disabled.contains(model),
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
    /// model's `config()` (a `schema` or `alias` there names the relation the
    /// model is loaded into, as in YAML) and checks its materialization.
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
                Some(Ok(mut rendered)) => {
                    self.apply_rendered_config(node, &rendered);
                    if let Some(before) = node.relation.clone()
                        && (rendered.config.contains_key("schema") || rendered.config.contains_key("alias"))
                    {
                        let after = self.relation_of(&node.name, &node.raw_config, ("model", &node.fqn));
                        let moved = before.schema != after.schema || before.identifier != after.identifier;
                        node.relation = Some(after);
                        // `{{ this }}` named the relation before the model's
                        // own config moved it: render again, as dbt's compile
                        // sees the config its parse found.
                        if moved && let Some(file) = node.template().cloned() {
                            match templater.render(&file, &context_for(node)) {
                                Ok(again) => rendered = again,
                                Err(d) => {
                                    self.diags.push(*d);
                                    self.failed.insert(offset + i);
                                    continue;
                                }
                            }
                        }
                    }
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
        let by_id: HashMap<String, usize> = nodes.iter().enumerate().map(|(i, n)| (n.unique_id.clone(), i)).collect();
        let lookup = Lookup { namespaces: &self.namespaces, by_id: &by_id };
        let relation_of = |r: &NodeRef| lookup.node(r).and_then(|i| nodes[i].relation.clone());
        let failed = &self.failed;
        let results: Vec<(usize, Result<Rendered, Box<Diagnostic>>)> = nodes
            .par_iter()
            .enumerate()
            .filter(|(i, _)| !failed.contains(i))
            .filter_map(|(i, n)| Some((i, render_generic(n, &relation_of, templater, None)?)))
            .collect();
        for (i, result) in results {
            match result {
                Ok(rendered) => {
                    for (k, v) in &rendered.config {
                        if !nodes[i].raw_config.contains_key(k) {
                            nodes[i].raw_config.insert(k.clone(), v.clone());
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

    /// Finds what each unit test reads: its `given` inputs (`ref('x')`,
    /// `source('s', 't')`, evaluated as Jinja) and its model. Every input
    /// must be a parent of the model, and every parent must be given, as dbt
    /// requires; the calls are the test's edges.
    fn render_unit_tests(&mut self, nodes: &mut [Node], templater: &Templater) {
        let by_id: HashMap<String, usize> = nodes.iter().enumerate().map(|(i, n)| (n.unique_id.clone(), i)).collect();
        let lookup = Lookup { namespaces: &self.namespaces, by_id: &by_id };
        for i in 0..nodes.len() {
            let Resource::Test(Test { kind: TestKind::Unit { model, given, origin, .. }, .. }) = &nodes[i].resource
            else {
                continue;
            };
            let fail = |message: String, help: Option<String>| {
                let mut d = Diagnostic::error(Code::UnknownRef, format!("unit test `{}`: {message}", nodes[i].name))
                    .with_label(Label::new(&origin.file, origin.span.clone()));
                if let Some(help) = help {
                    d = d.with_help(help);
                }
                d
            };
            let Some(m) = lookup.node(&NodeRef::Model(model.clone())) else {
                self.diags.push(fail(format!("model `{model}` is not in the project"), None));
                self.failed.insert(i);
                continue;
            };
            let parents: BTreeSet<usize> =
                nodes[m].rendered.as_ref().map_or_else(BTreeSet::new, |r| lookup.called(r).collect());
            let mut calls = Rendered::default();
            let mut inputs = BTreeSet::new();
            let mut problem = None;
            for (expr, _) in given {
                // The model's own rows (`is_incremental` overridden true).
                if expr == "this" {
                    continue;
                }
                let input = match templater.render_expression(expr) {
                    Ok(r) => r,
                    Err(d) => {
                        problem = Some(fail(format!("input `{expr}`: {}", d.message), None));
                        break;
                    }
                };
                let named: Vec<usize> = lookup.called(&input).collect();
                match named.as_slice() {
                    [p] if parents.contains(p) => {
                        inputs.insert(*p);
                    }
                    [p] => {
                        problem = Some(fail(
                            format!("input `{expr}` is not read by `{model}`"),
                            Some(format!(
                                "give only what `{model}` reads: `{}` is not among its parents",
                                nodes[*p].name
                            )),
                        ));
                        break;
                    }
                    _ => {
                        problem = Some(fail(
                            format!("input `{expr}` must name one relation: `ref('x')` or `source('s', 't')`"),
                            None,
                        ));
                        break;
                    }
                }
                calls.refs.extend(input.refs);
                calls.sources.extend(input.sources);
            }
            if problem.is_none()
                && let Some(missing) = parents.iter().find(|p| !inputs.contains(p))
            {
                let written = match &nodes[*missing].resource {
                    Resource::Source(s) => format!("source('{}', '{}')", s.source, s.name),
                    _ => format!("ref('{}')", nodes[*missing].name),
                };
                problem = Some(fail(
                    format!("no rows are given for `{written}`, which `{model}` reads"),
                    Some(format!("add `- input: {written}` to `given:` (with `rows: []` for none)")),
                ));
            }
            if let Some(d) = problem {
                self.diags.push(d);
                self.failed.insert(i);
                continue;
            }
            calls.refs.push(crate::template::functions::RefCall { package: None, name: model.clone() });
            nodes[i].rendered = Some(calls);
        }
    }

    /// Reads every node's config into typed settings. A model's `dedupe`
    /// and rules are compiled here: a bad one, or rules on a model that is
    /// not staged as a table, fails it.
    fn resolve_configs(&mut self, nodes: &mut [Node], templater: &Templater) {
        for (i, node) in nodes.iter_mut().enumerate() {
            node.config = NodeConfig::read(node);
            if self.failed.contains(&i) {
                continue;
            }
            if let Err(diags) = read_checks(node, templater) {
                self.diags.extend(diags);
                self.failed.insert(i);
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
            merge_config(&mut node.raw_config, k, v.clone());
        }
    }

    /// Adds edges for every `ref`/`source` call and for test attachments.
    fn edges(&mut self, nodes: &[Node], by_id: &HashMap<String, usize>) -> Graph<NodeId> {
        let mut graph = Graph::new(nodes.len());
        let lookup = Lookup { namespaces: &self.namespaces, by_id };
        for (i, node) in nodes.iter().enumerate() {
            for calls in node.config.rules.iter().filter_map(|r| r.calls.as_ref()) {
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
            if let Resource::Source(s) = &node.resource
                && let Some(seed) = super::seed_named_by(nodes, s)
            {
                graph.add_edge(NodeId::from_index(seed), NodeId::from_index(i));
            }
            let Resource::Test(Test { kind: TestKind::Generic { attached_to, .. }, .. }) = &node.resource else {
                continue;
            };
            // Arguments such as `to: ref('customers')` added edges when the
            // test rendered.
            if let Some(p) = lookup.node(attached_to) {
                graph.add_edge(NodeId::from_index(p), NodeId::from_index(i));
            }
        }
        graph
    }
}

/// Finds nodes by what `ref()`, `source()` and schema files call them.
pub(super) struct Lookup<'a> {
    /// The project's name, then its packages': names are unique across
    /// them, so the first namespace that has one is the one.
    pub(super) namespaces: &'a [String],
    pub(super) by_id: &'a HashMap<String, usize>,
}

impl Lookup<'_> {
    pub(super) fn node(&self, r: &NodeRef) -> Option<usize> {
        self.namespaces.iter().find_map(|ns| match r {
            NodeRef::Model(n) | NodeRef::Seed(n) => self
                .by_id
                .get(&format!("model.{ns}.{n}"))
                .or_else(|| self.by_id.get(&format!("snapshot.{ns}.{n}")))
                .or_else(|| self.by_id.get(&format!("seed.{ns}.{n}")))
                .copied(),
            NodeRef::Source(s, t) => self.by_id.get(&format!("source.{ns}.{s}.{t}")).copied(),
        })
    }

    /// The nodes a render's `ref`/`source` calls named.
    pub(super) fn called<'r>(&'r self, rendered: &'r Rendered) -> impl Iterator<Item = usize> + 'r {
        let refs = rendered.refs.iter().map(|c| NodeRef::Model(c.name.clone()));
        let sources = rendered.sources.iter().map(|(s, t)| NodeRef::Source(s.clone(), t.clone()));
        refs.chain(sources).filter_map(|r| self.node(&r))
    }

    /// Adds an edge from every node a render's `ref`/`source` calls named to `child`.
    fn add_calls(&self, graph: &mut Graph<NodeId>, rendered: &Rendered, child: usize) {
        for parent in self.called(rendered) {
            graph.add_edge(NodeId::from_index(parent), NodeId::from_index(child));
        }
    }
}

/// Renders generic test `n` (`None` for any other node) by calling its
/// `test_<name>` macro with the relation it is attached to.
fn render_generic(
    n: &Node,
    relation_of: &(dyn Fn(&NodeRef) -> Option<Arc<Relation>> + Sync),
    templater: &Templater,
    introspector: Option<&Arc<dyn Introspector>>,
) -> Option<Result<Rendered, Box<Diagnostic>>> {
    let Resource::Test(Test {
        kind: TestKind::Generic { test_name, package, attached_to, column, args, origin }, ..
    }) = &n.resource
    else {
        return None;
    };
    let result = match relation_of(attached_to) {
        Some(rel) => {
            let column = args.get("column_name").and_then(Json::as_str).or(column.as_deref());
            let qualified = match package {
                Some(p) => format!("{p}.{test_name}"),
                None => test_name.clone(),
            };
            templater.render_generic_test(&qualified, narrowed(&rel, &n.raw_config), column, args, introspector)
        }
        None => Err(Box::new(Diagnostic::error(
            Code::UnknownRef,
            format!("test `{}` is attached to `{}`, which is not in the project", n.name, describe(attached_to)),
        ))),
    };
    Some(result.map_err(|mut d| {
        d.message = format!("in test `{}`: {}", n.name, d.message);
        d.file = Some(origin.file.path.clone());
        d.primary = Some(Label::new(&origin.file, origin.span.clone()));
        d
    }))
}

/// A node per source table; `source()` renders each as `source.table`.
fn source_nodes((project, database): (&str, &str), sources: Vec<SourceTable>, resolver: &mut Resolver) -> Vec<Node> {
    let mut nodes = Vec::with_capacity(sources.len());
    for s in sources {
        let rel = Arc::new(Relation {
            rendered: format!("{}.{}", quote_ident(&s.source), quote_ident(&s.name)),
            database: s.database.clone().unwrap_or_else(|| database.to_owned()),
            schema: s.schema.clone(),
            identifier: s.identifier.clone(),
        });
        resolver.sources.insert((s.source.clone(), s.name.clone()), Arc::clone(&rel));
        let ns = s.package.as_deref().unwrap_or(project);
        let id = format!("source.{ns}.{}.{}", s.source, s.name);
        let fqn = vec![ns.to_owned(), s.source.clone(), s.name.clone()];
        let (name, config) = (s.name.clone(), s.config.clone());
        nodes.push(Node::declared(id, (&name, fqn), config, Some(rel), Resource::Source(s)));
    }
    nodes
}

/// A model's `dedupe`, `rules:` and `on_conversion_error`, into its
/// config: they act on rows as the model is staged, so the model must be a
/// `table`.
fn read_checks(node: &mut Node, templater: &Templater) -> Result<(), Vec<Diagnostic>> {
    let Resource::Model { model, materialized } = &node.resource else { return Ok(()) };
    let at_model = |d: Diagnostic| match &model.patch {
        Some(o) => d.with_label(o.name_label()),
        None => d.in_file(&model.file.path),
    };
    let dedupe = Dedupe::read(&node.raw_config).map_err(|message| {
        vec![at_model(Diagnostic::error(Code::ModelConfig, format!("`{}`: {message}", node.name)))]
    })?;
    let on_conversion_error = config::OnConversionError::read(&node.raw_config).map_err(|message| {
        vec![at_model(Diagnostic::error(Code::ModelConfig, format!("`{}`: {message}", node.name)))]
    })?;
    let quarantines = on_conversion_error == Some(config::OnConversionError::Quarantine);
    let implicit = super::rules::implicit_not_null(&node.config);
    if model.rules.is_empty() && dedupe.is_none() && !quarantines && implicit.is_empty() {
        return Ok(());
    }
    if !matches!(materialized, Materialization::Table | Materialization::Incremental) {
        let what = if !model.rules.is_empty() {
            "rules"
        } else if dedupe.is_some() {
            "`dedupe`"
        } else {
            "`on_conversion_error: quarantine`"
        };
        let d = Diagnostic::error(
            Code::ModelConfig,
            format!(
                "`{}` has {what} but is materialized as `{}`",
                node.name,
                format!("{materialized:?}").to_lowercase()
            ),
        )
        .with_help(
            "rules, dedup and quarantined conversions act on rows as a model is staged: materialize it as `table`",
        );
        return Err(vec![match model.rules.first() {
            Some(r) => d.with_label(r.origin.name_label()),
            None => at_model(d),
        }]);
    }
    let mut rules = super::rules::read(&node.name, &model.rules, templater)?;
    let origin = Origin { file: Arc::clone(&model.file), span: 0..0 };
    for (column, name, why) in implicit {
        let declared =
            rules.iter().any(|r| r.kind == RuleKind::NotNull && r.column.as_deref() == Some(column.as_str()));
        if !declared {
            rules.push(super::rules::not_null(&column, name, why, &origin));
        }
    }
    let has_quarantine =
        !rules.is_empty() || dedupe.is_some() || config::OnConversionError::has_quarantine(&node.raw_config);
    node.config.on_conversion_error = on_conversion_error.unwrap_or(if has_quarantine {
        config::OnConversionError::Quarantine
    } else {
        config::OnConversionError::Fail
    });
    node.config.dedupe = dedupe;
    node.config.rules = rules;
    Ok(())
}

/// The relation a test reads: its node's, narrowed by a `where` config as
/// dbt does (`(select * from x where ...) dbt_subquery`).
fn narrowed(rel: &Arc<Relation>, config: &Map<String, Json>) -> Arc<Relation> {
    match config::test_where(config) {
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

impl Manifest {
    /// Renders model `id` again as an incremental run sees it:
    /// `is_incremental()` is true and `{{ this }}` renders `current`, the
    /// table of its current data. A `ref` or `source` that only the
    /// incremental branch calls is an error, as in dbt: the DAG was sorted
    /// without it.
    pub fn render_incremental(&mut self, id: NodeId, current: &str) -> Result<(), Box<Diagnostic>> {
        let node = &self.nodes[id.index()];
        let Some(file) = node.template().cloned() else { return Ok(()) };
        let mut context = context_for(node);
        context.is_incremental = true;
        context.this = Arc::new(Relation { rendered: quote_ident(current), ..(*context.this).clone() });
        let rendered = self.templater.render(&file, &context)?;
        self.no_new_calls(id, &rendered, "only inside `is_incremental()`")?;
        self.nodes[id.index()].rendered = Some(rendered);
        Ok(())
    }

    /// Renders node `id` again with `execute` true and `introspector`
    /// answering its questions about relations' columns: a node whose
    /// first render was [`Rendered::deferred`], now that its parents are
    /// planned. The result is for the caller to keep.
    pub fn render_planned(&self, id: NodeId, introspector: Arc<dyn Introspector>) -> Result<Rendered, Box<Diagnostic>> {
        let node = &self[id];
        let rendered = match node.template() {
            Some(file) => {
                let before = node.rendered.as_ref().and_then(|r| r.context.clone());
                let mut context = before.unwrap_or_else(|| context_for(node));
                context.introspector = Some(introspector);
                self.templater.render(file, &context)?
            }
            None => {
                let lookup = Lookup { namespaces: &self.namespaces, by_id: &self.by_id };
                let relation_of = |r: &NodeRef| lookup.node(r).and_then(|i| self.nodes[i].relation.clone());
                render_generic(node, &relation_of, &self.templater, Some(&introspector)).unwrap_or_else(|| {
                    Err(Box::new(Diagnostic::error(Code::SqlPlan, format!("`{}` has no template", node.name))))
                })?
            }
        };
        self.no_new_calls(id, &rendered, "only once `execute` is true")?;
        Ok(rendered)
    }

    /// Renders model `id` again for a unit test with its `overrides` (see
    /// [`crate::template::Overrides`]), in the context of its last render
    /// (answering questions about the data as that did).
    pub fn render_overridden(
        &self,
        id: NodeId,
        overrides: &Arc<crate::template::Overrides>,
    ) -> Result<Rendered, Box<Diagnostic>> {
        let node = &self[id];
        let Some(file) = node.template() else {
            return Err(Box::new(Diagnostic::error(Code::SqlPlan, format!("`{}` has no template", node.name))));
        };
        let mut context = node.rendered.as_ref().and_then(|r| r.context.clone()).unwrap_or_else(|| context_for(node));
        context.overrides = Some(Arc::clone(overrides));
        self.templater.render(file, &context)
    }

    /// A `ref` or `source` that a later render of `id` calls and its first
    /// did not is an error, as in dbt: the DAG was sorted without it.
    fn no_new_calls(&self, id: NodeId, rendered: &Rendered, when: &str) -> Result<(), Box<Diagnostic>> {
        let node = &self.nodes[id.index()];
        let before = node.rendered.as_ref();
        let known = |name: &str| before.is_some_and(|r| r.refs.iter().any(|c| c.name == name));
        let known_source = |s: &(String, String)| before.is_some_and(|r| r.sources.contains(s));
        let new_ref = rendered.refs.iter().find(|c| !known(&c.name)).map(|c| format!("ref('{}')", c.name));
        let new_source =
            || rendered.sources.iter().find(|s| !known_source(s)).map(|(s, t)| format!("source('{s}', '{t}')"));
        let Some(call) = new_ref.or_else(new_source) else { return Ok(()) };
        let mut d = Diagnostic::error(Code::ModelConfig, format!("`{}` calls `{call}` {when}", node.name))
            .with_help(format!("add `-- depends_on: {{{{ {call} }}}}` to the model, outside the `if`, as dbt asks"));
        if let Some(path) = node.template().map(|f| &f.path) {
            d = d.in_file(path);
        }
        Err(Box::new(d))
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
        introspector: None,
        overrides: None,
    }
}

impl Builder {
    /// The relation `ref()` renders for a model or seed: its DataFusion
    /// table name, with dbt's schema and alias as attributes (the schema
    /// as the project's `generate_schema_name` makes it, if it has one).
    fn relation_of(&mut self, name: &str, config: &Map<String, Json>, (kind, fqn): (&str, &[String])) -> Arc<Relation> {
        let (custom, alias) = config::schema_and_alias(config);
        let schema = match self.schemas.generate(custom, name, kind, fqn) {
            Ok(s) => s,
            Err(d) => {
                self.diags.push(*d);
                schema_for(custom, &self.schemas.target)
            }
        };
        Arc::new(Relation {
            rendered: quote_ident(name),
            database: self.schemas.database.clone(),
            schema,
            identifier: alias.unwrap_or(name).to_owned(),
        })
    }
}

/// How a node's custom `schema` becomes its schema: dbt's default
/// `generate_schema_name` (the target's schema, `_custom` appended), or
/// the root project's own macro of that name, called as dbt calls it.
#[derive(Default)]
struct SchemaNames {
    target: String,
    /// The target's database, which relations name as dbt's do.
    database: String,
    /// Templates with the project's macros, when it overrides the macro.
    overridden: Option<Templater>,
}

impl SchemaNames {
    fn new(globals: &Globals, macros: &MacroSources, target: &str) -> Self {
        static DEFINES: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
            regex::Regex::new(r"\{%-?\s*macro\s+generate_schema_name\s*\(").expect("valid regex")
        });
        let overridden = macros.project.iter().any(|f| DEFINES.is_match(&f.text)).then(|| {
            // Only macros: the names ref() renders are not known yet.
            Templater::new(globals, Arc::new(Resolver::default()), macros).0
        });
        let database = globals.target.get("database").and_then(Json::as_str).unwrap_or_default().to_owned();
        SchemaNames { target: target.to_owned(), database, overridden }
    }

    fn generate(
        &self,
        custom: Option<&str>,
        name: &str,
        kind: &str,
        fqn: &[String],
    ) -> Result<String, Box<Diagnostic>> {
        let Some(templater) = &self.overridden else { return Ok(schema_for(custom, &self.target)) };
        let package = fqn.first().cloned().unwrap_or_default();
        let node = serde_json::json!({
            "name": name, "resource_type": kind, "fqn": fqn, "package_name": package,
            "unique_id": format!("{kind}.{package}.{name}"), "config": {"schema": custom},
        });
        let args = Map::from_iter([
            ("custom_schema_name".to_owned(), custom.map_or(Json::Null, Json::from)),
            ("node".to_owned(), node),
        ]);
        let schema = templater.render_macro("generate_schema_name", &args).map_err(|mut d| {
            d.message = format!("`generate_schema_name` for `{name}`: {}", d.message);
            d
        })?;
        Ok(schema.trim().to_owned())
    }
}

fn set_materialization(node: &mut Node) -> Result<(), Box<Diagnostic>> {
    let Resource::Model { model, materialized } = &mut node.resource else { return Ok(()) };
    if model.snapshot {
        // A snapshot keeps its history as an incremental model keeps its
        // current data; see `run::snapshot`.
        *materialized = Materialization::Incremental;
        return Ok(());
    }
    let value = config::materialized(&node.raw_config);
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

fn cycle_diagnostic(nodes: &[Node], cycle: &[NodeId]) -> Diagnostic {
    let names: Vec<String> = cycle.iter().map(|&i| format!("`{}`", nodes[i.index()].display_name())).collect();
    let mut chain = names.join(" -> ");
    chain.push_str(&format!(" -> {}", names[0]));
    let first = &nodes[cycle[0].index()];
    let mut d = Diagnostic::error(Code::Cycle, format!("dependency cycle: {chain}"))
        .with_help("each model depends on the next; remove one `ref()` to break the cycle");
    for (k, &i) in cycle.iter().enumerate() {
        let (node, next) = (&nodes[i.index()], &nodes[cycle[(k + 1) % cycle.len()].index()]);
        d = d.with_note(format!("`{}` ({}) refs `{}`", node.display_name(), node.path(), next.display_name()));
    }
    if let Some(file) = first.template() {
        d = d.in_file(&file.path);
    }
    d
}
