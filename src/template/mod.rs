//! Jinja templating for models, tests and macros, with dbt's context.
//!
//! [`Templater`] owns one minijinja environment per invocation. Models are
//! registered by their project-relative path; macros from `macros/**/*.sql`
//! become global functions callable from any template. Rendering records the
//! `ref`/`source`/`config` calls actually made (see [`functions::Capture`]).
//! This module knows nothing about DataFusion or the DAG.

pub mod config_values;
pub mod dispatch;
pub mod functions;
pub mod introspect;
pub mod modules;
pub mod scan;
pub mod source_map;

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use minijinja::value::{Kwargs, Object, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State};
use serde_json::{Map, Value as Json};

use crate::diagnostic::{Code, Diagnostic, Label, SourceFile};
pub use functions::merge_config;
use functions::{Capture, RefCall, Resolver, TemplateFailure};

/// What every template sees, fixed for one invocation.
#[derive(Debug, Clone)]
pub struct Globals {
    pub project_name: String,
    pub vars: Map<String, Json>,
    /// `target` as templates see it (no secrets).
    pub target: Json,
    pub invocation_id: String,
    pub run_started_at: chrono::DateTime<chrono::Utc>,
    /// The command being run (`compile`, `run`), for `flags.WHICH`.
    pub which: String,
    pub full_refresh: bool,
    /// `--event-time-start` and `--event-time-end` (microbatch models).
    pub event_time: crate::values::EventTimes,
    /// `{% docs %}` blocks, for `doc('name')`.
    pub docs: Arc<BTreeMap<String, String>>,
}

/// What one model's render sees besides the globals.
#[derive(Debug, Clone)]
pub struct NodeContext {
    pub this: Arc<functions::Relation>,
    /// `model` in dbt: name, unique_id, resource_type, path.
    pub model: Json,
    pub is_incremental: bool,
    /// What answers `adapter.get_columns_in_relation`; none while the DAG
    /// is being found (see [`introspect`]).
    pub introspector: Option<Arc<dyn introspect::Introspector>>,
    /// A unit test's `overrides`, when rendered for one.
    pub overrides: Option<Arc<Overrides>>,
}

/// A unit test's `overrides` (dbt 1.8): what a render sees in place of
/// macros (`is_incremental`, `dbt_utils.current_timestamp`: the value is
/// the macro's result), vars and environment variables, in the model and
/// in every macro it calls.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub macros: Map<String, Json>,
    pub vars: Map<String, Json>,
    pub env_vars: Map<String, Json>,
}

/// The render context key that carries [`Overrides`].
const OVERRIDES: &str = "__ferry_overrides";

/// The override of `key` in `kind` (`macros`, `vars`, `env_vars`) that
/// the render of `state` was given, if any.
pub(crate) fn overridden(state: &State<'_, '_>, kind: &str, key: &str) -> Option<Value> {
    let overrides = state.lookup(OVERRIDES).filter(|o| !o.is_undefined() && !o.is_none())?;
    overrides.get_attr(kind).ok()?.get_item(&Value::from(key)).ok().filter(|v| !v.is_undefined())
}

/// A rendered template and everything it called.
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    pub sql: String,
    pub refs: Vec<RefCall>,
    pub sources: Vec<(String, String)>,
    pub config: Map<String, Json>,
    pub logs: Vec<functions::LogLine>,
    pub warnings: Vec<String>,
    /// Rendered with `execute` false because it asked about the data (a
    /// relation's columns, a query): to be rendered again, with [`Rendered::context`], once its
    /// parents are planned.
    pub deferred: bool,
    /// The context a model or singular test was rendered with.
    pub context: Option<NodeContext>,
    /// Its SQL is wrapped in the query that masks its `mask:` columns (a
    /// masked run), which must happen once.
    pub masked: bool,
}

/// The macro files of one invocation, by namespace.
#[derive(Debug, Default, Clone)]
pub struct MacroSources {
    /// The root project's macro files (its namespace is the project's name).
    pub project: Vec<Arc<SourceFile>>,
    /// Installed packages' macro files, by package name.
    pub packages: Vec<(String, Vec<Arc<SourceFile>>)>,
    /// The project's `dispatch:` entries: namespace and search order.
    pub dispatch: Vec<(String, Vec<String>)>,
}

/// A registered template file: its original text and how offsets in the
/// rewritten text map back to it.
#[derive(Debug, Clone)]
struct TemplateFile {
    file: Arc<SourceFile>,
    /// (rewritten offset, original offset) at the start of each unchanged run.
    anchors: Vec<(usize, usize)>,
}

/// The templating environment for one invocation.
#[derive(Clone)]
pub struct Templater {
    env: Environment<'static>,
    files: HashMap<String, TemplateFile>,
    /// Macro name -> file that defines it, for the macros callable unqualified.
    pub macros: BTreeMap<String, String>,
    /// Namespace -> macro name -> (file, callable).
    namespaces: BTreeMap<String, BTreeMap<String, (String, Value)>>,
}

const MACRO_PREFIX: &str = "__ferry_macro_";

/// ferry's built-in macros, in dbt's namespace: the generic tests (`unique`,
/// `not_null`, `accepted_values`, `relationships`) and dbt's cross-database
/// macros, as Jinja a project can override.
const BUILTIN_FILES: [(&str, &str); 2] = [
    ("<ferry>/generic_tests.sql", include_str!("builtin/generic_tests.sql")),
    ("<ferry>/cross_db.sql", include_str!("builtin/cross_db.sql")),
];

impl Templater {
    /// Builds the environment with dbt's context functions and every macro.
    /// Macro files that do not parse become diagnostics.
    pub fn new(globals: &Globals, resolver: Arc<Resolver>, sources: &MacroSources) -> (Self, Vec<Diagnostic>) {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("ref", functions::ref_fn(Arc::clone(&resolver)));
        env.add_function("source", functions::source_fn(resolver));
        env.add_global("config", Value::from_object(functions::ConfigObject));
        env.add_function("var", functions::var_fn(Arc::new(globals.vars.clone())));
        env.add_function("env_var", functions::env_var);
        env.add_function("log", functions::log);
        env.add_function("return", functions::return_fn);
        env.add_function("is_incremental", functions::is_incremental);
        env.add_function("tojson", functions::tojson);
        env.add_function("doc", functions::doc_fn(Arc::clone(&globals.docs)));
        env.add_function("fromjson", functions::fromjson);
        env.add_function("set", functions::set_fn);
        env.add_function("run_query", introspect::run_query);
        env.add_function("statement", introspect::statement);
        env.add_function("load_result", introspect::load_result);
        env.add_function("load_relation", introspect::load_relation);
        env.add_function("zip", functions::zip);
        env.add_global("exceptions", Value::from_object(functions::Exceptions));
        env.add_function("__ferry_mutable", dispatch::mutable);
        env.add_function("__ferry_mutable_list", dispatch::mutable_list);
        env.add_function("should_store_failures", || false);
        env.add_global("modules", Value::from_object(modules::Modules));
        env.add_global("api", Value::from_object(introspect::Api));
        env.add_global("run_started_at", Value::from_object(functions::Timestamp(globals.run_started_at)));
        env.add_global("invocation_id", globals.invocation_id.clone());
        env.add_global("target", functions::to_value(&globals.target));
        env.add_global("project_name", globals.project_name.clone());
        env.add_global("execute", true);
        env.add_global(
            "flags",
            functions::to_value(serde_json::json!({ "FULL_REFRESH": globals.full_refresh, "WHICH": globals.which })),
        );
        let mut this = Templater { env, files: HashMap::new(), macros: BTreeMap::new(), namespaces: BTreeMap::new() };
        let mut diags = Vec::new();
        // Unqualified names go to the first definer: the project, then the
        // packages, then the built-ins (which a project may so override).
        let project = (globals.project_name.clone(), sources.project.clone());
        let builtin: Vec<Arc<SourceFile>> =
            BUILTIN_FILES.iter().map(|(path, text)| SourceFile::new(*path, *text)).collect();
        let builtin = (dispatch::BUILTIN.to_owned(), builtin);
        for (namespace, files) in std::iter::once(&project).chain(&sources.packages).chain(std::iter::once(&builtin)) {
            for file in files {
                if let Err(d) = this.add_macro_file(file, namespace) {
                    diags.push(*d);
                }
            }
        }
        let mut dispatch = dispatch::Dispatch {
            root: globals.project_name.clone(),
            search_orders: sources.dispatch.iter().cloned().collect(),
            namespaces: BTreeMap::new(),
        };
        for (namespace, macros) in &this.namespaces {
            let macros: Arc<dispatch::Macros> =
                Arc::new(macros.iter().map(|(name, (_, caller))| (name.clone(), caller.clone())).collect());
            if !this.macros.contains_key(namespace) {
                let ns = dispatch::Namespace { name: namespace.clone(), macros: Arc::clone(&macros) };
                this.env.add_global(namespace.clone(), Value::from_object(ns));
            }
            dispatch.namespaces.insert(namespace.clone(), macros);
        }
        this.env.add_global("adapter", Value::from_object(functions::Adapter { dispatch: Arc::new(dispatch) }));
        (this, diags)
    }

    /// Registers a macro file in `namespace`. A macro is callable
    /// unqualified unless an earlier namespace took its name.
    fn add_macro_file(&mut self, file: &Arc<SourceFile>, namespace: &str) -> Result<(), Box<Diagnostic>> {
        let (rewritten, names, anchors) = rewrite(&file.text, true);
        let name = file.path.to_string();
        self.files.insert(name.clone(), TemplateFile { file: Arc::clone(file), anchors: anchors.clone() });
        // The whole file is compiled once, so a syntax error anywhere in it
        // is reported against it; each macro is then a template of its own.
        self.env
            .add_template_owned(name.clone(), rewritten.clone())
            .map_err(|e| Box::new(self.diagnostic(&e, None)))?;
        let mut blocks: HashMap<String, String> = HashMap::new();
        for (macro_name, range) in macro_blocks(&rewritten) {
            let block = format!("{name}#{macro_name}");
            self.files.insert(block.clone(), TemplateFile { file: Arc::clone(file), anchors: anchors.clone() });
            self.env
                .add_template_owned(block.clone(), isolated(&rewritten, range))
                .map_err(|e| Box::new(self.diagnostic(&e, None)))?;
            blocks.insert(macro_name, block);
        }
        for macro_name in names {
            let ns = self.namespaces.entry(namespace.to_owned()).or_default();
            if let Some((other, _)) = ns.get(&macro_name) {
                return Err(Box::new(
                    Diagnostic::error(Code::DuplicateName, format!("macro `{macro_name}` is defined twice"))
                        .in_file(&file.path)
                        .with_note(format!("also defined in `{other}`")),
                ));
            }
            let caller = Value::from_object(MacroCaller {
                template: blocks.get(&macro_name).cloned().unwrap_or_else(|| name.clone()),
                inner: format!("{MACRO_PREFIX}{macro_name}"),
                qualified: format!("{namespace}.{macro_name}"),
            });
            ns.insert(macro_name.clone(), (name.clone(), caller.clone()));
            if !self.macros.contains_key(&macro_name) {
                self.env.add_global(macro_name.clone(), caller);
                self.macros.insert(macro_name, name.clone());
            }
        }
        Ok(())
    }

    /// Registers a model, test or analysis template; a syntax error is a diagnostic.
    pub fn add_template(&mut self, file: &Arc<SourceFile>) -> Result<(), Box<Diagnostic>> {
        let name = file.path.to_string();
        let (rewritten, _, anchors) = rewrite(&file.text, false);
        self.files.insert(name.clone(), TemplateFile { file: Arc::clone(file), anchors });
        self.env.add_template_owned(name, rewritten).map_err(|e| Box::new(self.diagnostic(&e, None)))
    }

    /// The generic test macro `name` names (`unique`, or a package's
    /// `dbt_utils.expression_is_true`), as the expression that calls it.
    fn generic_test_macro(&self, test_name: &str) -> Option<String> {
        match test_name.split_once('.') {
            Some((ns, bare)) => {
                let found = self.namespaces.get(ns).is_some_and(|m| m.contains_key(&format!("test_{bare}")));
                found.then(|| format!("{ns}.test_{bare}"))
            }
            None => self.macros.contains_key(&format!("test_{test_name}")).then(|| format!("test_{test_name}")),
        }
    }

    /// Renders a registered template for one node.
    /// A render that asks about the data with no introspector
    /// is done with `execute` false and comes back [`Rendered::deferred`].
    pub fn render(&self, file: &SourceFile, node: &NodeContext) -> Result<Rendered, Box<Diagnostic>> {
        let tmpl = self.env.get_template(file.path.as_str()).map_err(|e| Box::new(self.diagnostic(&e, Some(file))))?;
        let mut out = deferring(node.introspector.as_ref(), |phase| tmpl.render_captured(node_context(node, phase)))
            .map_err(|e| Box::new(self.diagnostic(&e, Some(file))))?;
        out.context = Some(node.clone());
        Ok(out)
    }

    /// Renders a one-off template (a description) with the globals.
    pub fn render_str(&self, source: &str) -> Result<String, Box<Diagnostic>> {
        self.env.render_str(source, ()).map_err(|e| Box::new(self.diagnostic(&e, None)))
    }

    /// Evaluates a Jinja expression such as `ref('customers')` (a test
    /// argument), recording the calls it makes.
    pub fn render_expression(&self, expr: &str) -> Result<Rendered, Box<Diagnostic>> {
        self.render_one_off(&format!("{{{{ {expr} }}}}"), None, Value::from(()))
    }

    /// Renders a generic test: calls its `test_<name>` macro with `model`
    /// (the relation it is attached to), `column_name` and the declared
    /// arguments. An argument written as `ref(...)` or `source(...)` is
    /// evaluated as Jinja, as dbt does; others are passed as values.
    pub fn render_generic_test(
        &self,
        test_name: &str,
        model: Arc<functions::Relation>,
        column_name: Option<&str>,
        args: &Map<String, Json>,
        introspector: Option<&Arc<dyn introspect::Introspector>>,
    ) -> Result<Rendered, Box<Diagnostic>> {
        let Some(macro_name) = self.generic_test_macro(test_name) else {
            let known = self.macros.keys().filter_map(|m| m.strip_prefix("test_"));
            let mut d = Diagnostic::error(Code::UnknownTest, format!("no generic test named `{test_name}`"))
                .with_note("define it in `macros/` with `{% test name(model, column_name) %}`");
            if let Some(help) = crate::diagnostic::did_you_mean(test_name, known) {
                d = d.with_help(help);
            }
            return Err(Box::new(d));
        };
        let mut args = args.clone();
        if let Some(c) = column_name {
            args.insert("column_name".to_owned(), Json::from(c));
        }
        self.call_macro(&macro_name, Some(model), &args, introspector)
    }

    /// Renders a call of macro `name` with `args` as keyword arguments
    /// (`config` left out), returning its text.
    pub fn render_macro(&self, name: &str, args: &Map<String, Json>) -> Result<String, Box<Diagnostic>> {
        Ok(self.call_macro(name, None, args, None)?.sql)
    }

    fn call_macro(
        &self,
        macro_name: &str,
        model: Option<Arc<functions::Relation>>,
        args: &Map<String, Json>,
        introspector: Option<&Arc<dyn introspect::Introspector>>,
    ) -> Result<Rendered, Box<Diagnostic>> {
        let mut call = Vec::new();
        let mut context = BTreeMap::new();
        if let Some(model) = model {
            call.push("model=__ferry_call.model".to_owned());
            context.insert("model".to_owned(), Value::from_dyn_object(model));
        }
        for (k, v) in args {
            if k == "config" || k == "model" {
                continue;
            }
            if !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || k.starts_with(|c: char| c.is_ascii_digit())
            {
                return Err(Box::new(Diagnostic::error(
                    Code::JinjaRender,
                    format!("argument `{k}` is not a valid argument name"),
                )));
            }
            match v.as_str().map(str::trim) {
                Some(expr) if expr.starts_with("ref(") || expr.starts_with("source(") => {
                    call.push(format!("{k}={expr}"));
                }
                _ => {
                    call.push(format!("{k}=__ferry_call.{k}"));
                    context.insert(k.clone(), functions::to_value(v));
                }
            }
        }
        let source = format!("{{{{ {macro_name}({}) }}}}", call.join(", "));
        let tmpl = self.env.template_from_str(&source).map_err(|e| Box::new(self.diagnostic(&e, None)))?;
        deferring(introspector, |phase| {
            let (execute, introspector) = phase.values();
            tmpl.render_captured(minijinja::context! {
                __ferry_call => &context, execute => execute, __ferry_introspect => introspector,
            })
        })
        .map_err(|e| Box::new(self.diagnostic(&e, None)))
    }

    /// Renders SQL that is not a project file (`ferry show --inline`),
    /// recording its `ref`/`source` calls.
    pub fn render_inline(&self, file: &SourceFile) -> Result<Rendered, Box<Diagnostic>> {
        self.render_one_off(&file.text, Some(file), Value::from(()))
    }

    /// Renders a template that is not registered, with the globals only,
    /// recording its `ref`/`source` calls.
    fn render_one_off(
        &self,
        source: &str,
        file: Option<&SourceFile>,
        context: Value,
    ) -> Result<Rendered, Box<Diagnostic>> {
        let tmpl = self.env.template_from_str(source).map_err(|e| Box::new(self.diagnostic(&e, file)))?;
        let captured = tmpl.render_captured(context).map_err(|e| Box::new(self.diagnostic(&e, file)))?;
        Ok(rendered(captured))
    }

    /// Builds the source map for a model whose plain render gave `plain`.
    pub fn source_map(&self, file: &SourceFile, node: &NodeContext, plain: &str) -> Option<source_map::SourceMap> {
        // A template whose literals were made mutable renders from other
        // text than the file's; its output is not mapped.
        if self.files.get(file.path.as_str()).is_some_and(|t| t.anchors.len() > 1) {
            return None;
        }
        let marked = source_map::mark(&file.text);
        let phase = Phase::Execute(node.introspector.clone());
        let out = self.env.render_named_str(file.path.as_str(), &marked.source, node_context(node, phase)).ok()?;
        marked.source_map(&out, plain, &file.text)
    }

    /// Turns a minijinja error into a diagnostic pointing at the template.
    pub fn diagnostic(&self, err: &Error, rendering: Option<&SourceFile>) -> Diagnostic {
        let failure = functions::failure_of(err);
        let (code, message, help) = match failure {
            Some(TemplateFailure::UnknownRef { name, suggestion }) => (
                Code::UnknownRef,
                format!("`ref('{name}')` names no model, seed or snapshot"),
                suggestion.as_ref().map(|s| format!("did you mean `{s}`?")),
            ),
            Some(TemplateFailure::UnknownSource { source_name, table, suggestion }) => (
                Code::UnknownSource,
                format!("`source('{source_name}', '{table}')` is not declared in any schema file"),
                suggestion.as_ref().map(|s| format!("did you mean `{s}`?")),
            ),
            Some(TemplateFailure::CompilerError(msg)) => (Code::JinjaRender, msg.clone(), None),
            Some(TemplateFailure::Return) => (Code::JinjaRender, "`return()` called outside a macro".to_owned(), None),
            Some(TemplateFailure::NeedsIntrospection) => (
                Code::JinjaRender,
                "questions about the data (`adapter.get_columns_in_relation`, `run_query`, `statement`) are answered only in the SQL of a model or test".to_owned(),
                None,
            ),
            None if err.kind() == ErrorKind::SyntaxError => {
                (Code::JinjaSyntax, format!("Jinja syntax error: {}", err.detail().unwrap_or("invalid syntax")), None)
            }
            None => (Code::JinjaRender, jinja_message(err), mutation_help(err)),
        };
        let mut diag = Diagnostic::error(code, message);
        if let Some(help) = help {
            diag = diag.with_help(help);
        }
        let (file, range) = self.locate(err);
        match (file, range) {
            (Some(file), Some(range)) => diag = diag.with_label(Label::new(&file, range)),
            (Some(file), None) => diag = diag.in_file(&file.path),
            (None, _) => {
                if let Some(f) = rendering {
                    diag = diag.in_file(&f.path);
                }
            }
        }
        if let Some(f) = rendering
            && diag.file.as_ref() != Some(&f.path)
        {
            diag = diag.with_note(format!("while rendering `{}`", f.path));
        }
        diag
    }

    fn locate(&self, err: &Error) -> (Option<Arc<SourceFile>>, Option<Range<usize>>) {
        let Some(name) = err.name() else { return (None, None) };
        let Some(m) = self.files.get(name) else { return (None, None) };
        let file = Arc::clone(&m.file);
        let range = match err.range() {
            Some(r) => Some(m.to_original(r.start)..m.to_original(r.end)),
            None => err.line().and_then(|line| line_range(&file, line)),
        };
        let range = range.filter(|r| r.end <= file.text.len());
        (Some(file), range)
    }
}

/// A finished render with the calls it recorded.
fn rendered(mut captured: minijinja::Captured<'_>) -> Rendered {
    let capture =
        captured.with_state_mut(|st| st.get_extension_mut::<Capture>().map(std::mem::take)).unwrap_or_default();
    Rendered {
        sql: captured.into_output(),
        refs: capture.refs,
        sources: capture.sources,
        config: capture.config,
        logs: capture.logs,
        warnings: capture.warnings,
        ..Rendered::default()
    }
}

fn jinja_message(err: &Error) -> String {
    match err.detail() {
        Some(detail) => format!("Jinja error: {detail}"),
        None => format!("Jinja error: {}", err.kind()),
    }
}

/// Lists and dicts cannot change in place here, unlike in dbt's Jinja.
fn mutation_help(err: &Error) -> Option<String> {
    let detail = err.detail()?;
    let method = ["append", "extend", "insert", "pop", "remove", "update"]
        .into_iter()
        .find(|m| detail.ends_with(&format!("has no method named {m}")))?;
    Some(match method {
        "update" => "only a dict that `{% set %}` assigns as a literal changes in place (`{% set d = {} %}`); or build a new one: `{% set d = dict(d, key=value) %}`".to_owned(),
        _ => "only a list that `{% set %}` assigns as a literal changes in place (`{% set items = [] %}`); or build a new one: `{% set items = items + [value] %}`".to_owned(),
    })
}

fn line_range(file: &SourceFile, line: usize) -> Option<Range<usize>> {
    let start = file.offset_of(line, 1)?;
    let text = &file.text[start..];
    let end = start + text.find('\n').unwrap_or(text.len());
    let lead = file.text[start..end].len() - file.text[start..end].trim_start().len();
    Some(start + lead..end)
}

impl TemplateFile {
    fn to_original(&self, offset: usize) -> usize {
        let idx = self.anchors.partition_point(|(rw, _)| *rw <= offset);
        match idx.checked_sub(1).and_then(|i| self.anchors.get(i)) {
            Some((rw, orig)) => orig + (offset - rw),
            None => offset,
        }
    }
}

/// How a render answers introspection: with `execute` true and the given
/// introspector (or none, which defers), or with `execute` false while
/// parsing.
#[derive(Clone)]
enum Phase {
    Execute(Option<Arc<dyn introspect::Introspector>>),
    Parse,
}

impl Phase {
    fn values(&self) -> (bool, Value) {
        match self {
            Phase::Execute(None) => (true, Value::UNDEFINED),
            Phase::Execute(Some(i)) => (true, Value::from_object(introspect::Handle(Arc::clone(i)))),
            Phase::Parse => (false, Value::from_object(introspect::Handle(Arc::new(introspect::Parsing)))),
        }
    }
}

/// Renders with `execute` true; when that needs introspection that
/// `introspector` cannot give, renders again as dbt parses (`execute`
/// false, no columns) and marks the result deferred.
fn deferring<'a>(
    introspector: Option<&Arc<dyn introspect::Introspector>>,
    render: impl Fn(Phase) -> Result<minijinja::Captured<'a>, Error>,
) -> Result<Rendered, Error> {
    match render(Phase::Execute(introspector.cloned())) {
        Ok(c) => Ok(rendered(c)),
        Err(e)
            if introspector.is_none()
                && matches!(functions::failure_of(&e), Some(TemplateFailure::NeedsIntrospection)) =>
        {
            let mut out = rendered(render(Phase::Parse)?);
            out.deferred = true;
            Ok(out)
        }
        Err(e) => Err(e),
    }
}

fn node_context(node: &NodeContext, phase: Phase) -> Value {
    let (execute, introspector) = phase.values();
    minijinja::context! {
        this => Value::from_dyn_object(Arc::clone(&node.this)),
        model => functions::to_value(&node.model),
        __ferry_is_incremental => node.is_incremental,
        execute => execute,
        __ferry_introspect => introspector,
        __ferry_overrides => node.overrides.as_ref().map(|o| functions::to_value(serde_json::json!({
            "macros": o.macros, "vars": o.vars, "env_vars": o.env_vars,
        }))),
    }
}

/// The top-level macro blocks of a rewritten macro file: each macro's name
/// (without [`MACRO_PREFIX`]) and the bytes from its `{% macro %}` to its
/// `{% endmacro %}`.
fn macro_blocks(src: &str) -> Vec<(String, std::ops::Range<usize>)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, usize)> = None;
    let mut depth = 0usize;
    for seg in scan::segments(src) {
        match seg.statement(src) {
            Some(("macro", rest)) => {
                if depth == 0 {
                    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
                    let name = rest[..end].strip_prefix(MACRO_PREFIX).unwrap_or(&rest[..end]);
                    open = Some((name.to_owned(), seg.range.start));
                }
                depth += 1;
            }
            Some(("endmacro", _)) if depth > 0 => {
                depth -= 1;
                if depth == 0
                    && let Some((name, start)) = open.take()
                {
                    blocks.push((name, start..seg.range.end));
                }
            }
            _ => {}
        }
    }
    blocks
}

/// `src` with everything outside `keep` blanked: the same length and the
/// same line breaks, so that positions in errors stay those of the file,
/// with the blank stretches made comments (they render to nothing).
fn isolated(src: &str, keep: std::ops::Range<usize>) -> String {
    let blank = |part: &str| -> Vec<u8> {
        let mut out: Vec<u8> = part.bytes().map(|b| if b == b'\n' { b'\n' } else { b' ' }).collect();
        let pairs: Vec<usize> = (1..out.len()).filter(|&i| out[i - 1] == b' ' && out[i] == b' ').collect();
        if let (Some(&first), Some(&last)) = (pairs.first(), pairs.last())
            && last > first + 1
        {
            out[first - 1..=first].copy_from_slice(b"{#");
            out[last - 1..=last].copy_from_slice(b"#}");
        }
        out
    };
    let mut out = blank(&src[..keep.start]);
    out.extend_from_slice(&src.as_bytes()[keep.clone()]);
    out.extend(blank(&src[keep.end..]));
    String::from_utf8(out).expect("blanked text is ASCII around a slice of UTF-8 at tag boundaries")
}

/// Calls a macro defined in another template, carrying the render's capture
/// into the macro's state and back, and turning `return(x)` into the result.
#[derive(Debug)]
struct MacroCaller {
    template: String,
    inner: String,
    /// `namespace.name`, as a unit test's `overrides` may name it.
    qualified: String,
}

const MAX_MACRO_DEPTH: usize = 64;

impl Object for MacroCaller {
    fn call(self: &Arc<Self>, state: &mut State<'_, '_>, args: &[Value]) -> Result<Value, Error> {
        let name = self.inner.strip_prefix(MACRO_PREFIX).unwrap_or(&self.inner);
        if let Some(value) = overridden(state, "macros", &self.qualified).or_else(|| overridden(state, "macros", name))
        {
            return Ok(value);
        }
        let mut cap = take_capture(state);
        if cap.macro_depth >= MAX_MACRO_DEPTH {
            // The caller takes its capture back from this state.
            *functions::capture(state) = cap;
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("macro calls nested deeper than {MAX_MACRO_DEPTH}"),
            ));
        }
        cap.macro_depth += 1;
        let tmpl = state.env().get_template(&self.template)?;
        let mut captured = match tmpl.render_captured(cap.context.clone()) {
            Ok(c) => c,
            Err(e) => {
                cap.macro_depth -= 1;
                state.get_or_insert_extension(Capture::default());
                *functions::capture(state) = cap;
                return Err(e);
            }
        };
        let (result, mut cap) = captured.with_state_mut(|st| {
            st.get_or_insert_extension(Capture::default());
            *functions::capture(st) = cap;
            let result = match st.lookup(&self.inner) {
                Some(m) if !m.is_undefined() => match gather_kwargs(&m, args) {
                    Some(args) => m.call(st, &args),
                    None => m.call(st, args),
                },
                _ => Err(Error::new(ErrorKind::UnknownFunction, format!("macro `{}` went missing", self.inner))),
            };
            (result, std::mem::take(functions::capture(st)))
        });
        cap.macro_depth -= 1;
        let returned = cap.returned.take();
        *functions::capture(state) = cap;
        match result {
            Err(e) if matches!(functions::failure_of(&e), Some(TemplateFailure::Return)) => {
                Ok(returned.unwrap_or_default())
            }
            other => other,
        }
    }
}

/// For a macro that reads `kwargs` (given a `kwargs` parameter by
/// [`rewrite`]): the call's arguments with the keywords it does not name
/// gathered into `kwargs`, as Jinja2 gathers them. `None` for any other.
fn gather_kwargs(m: &Value, args: &[Value]) -> Option<Vec<Value>> {
    let names: Vec<String> =
        m.get_attr("arguments").ok()?.try_iter().ok()?.filter_map(|v| v.as_str().map(str::to_owned)).collect();
    if !names.iter().any(|n| n == "kwargs") {
        return None;
    }
    let (last, positional) = args.split_last()?;
    if !last.is_kwargs() {
        return None;
    }
    let (given,): (Kwargs,) = minijinja::value::from_args(std::slice::from_ref(last)).ok()?;
    let mut named = Vec::new();
    let mut extra = Vec::new();
    for key in given.args() {
        let value: Value = given.peek(key).ok()?;
        if names.iter().any(|n| n == key) || key == "caller" {
            named.push((key.to_owned(), value));
        } else {
            extra.push((key.to_owned(), value));
        }
    }
    if extra.is_empty() {
        return None;
    }
    named.push(("kwargs".to_owned(), Value::from(extra.into_iter().collect::<BTreeMap<String, Value>>())));
    let mut out = positional.to_vec();
    out.push(Value::from(Kwargs::from_iter(named)));
    Some(out)
}

fn take_capture(state: &mut State<'_, '_>) -> Capture {
    if state.get_extension::<Capture>().is_none_or(|c| c.context.is_undefined()) {
        let context = minijinja::context! {
            this => state_lookup(state, "this"),
            model => state_lookup(state, "model"),
            __ferry_is_incremental => state_lookup(state, "__ferry_is_incremental"),
            execute => state_lookup(state, "execute"),
            __ferry_introspect => state_lookup(state, introspect::KEY),
            __ferry_overrides => state_lookup(state, OVERRIDES),
        };
        let is_incremental = state_lookup(state, "__ferry_is_incremental").is_true();
        let cap = functions::capture(state);
        cap.context = context;
        cap.is_incremental = is_incremental;
    }
    std::mem::take(functions::capture(state))
}

fn state_lookup(state: &State<'_, '_>, name: &str) -> Value {
    state.lookup(name).unwrap_or_default()
}

/// Rewrites a template for dbt's Jinja. In every template, a list or dict
/// literal assigned by `{% set %}` becomes changeable in place
/// (`{% do items.append(x) %}`), as in dbt. In a macro file (`macros`), its
/// macros are reached through [`MacroCaller`]: `{% macro m(..) %}` becomes
/// `{% macro __ferry_macro_m(..) %}`, dbt's `{% test t(..) %}` becomes the
/// macro `test_t`, and `{% docs %}` and `{% materialization %}` blocks are
/// skipped. Returns the new text, the macro names, and offset anchors back
/// to the original.
fn rewrite(src: &str, macros: bool) -> (String, Vec<String>, Vec<(usize, usize)>) {
    let mut out = String::with_capacity(src.len() + 64);
    let mut names = Vec::new();
    let mut anchors = vec![(0, 0)];
    let mut copied = 0;
    for seg in scan::segments(src) {
        let Some((keyword, rest)) = seg.statement(src) else { continue };
        let (open, close) = (&src[seg.range.start..seg.inner.start], &src[seg.inner.end..seg.range.end]);
        let replacement = match keyword {
            "set" => match (mutable_literal(rest), changed_alias(rest, src)) {
                (Some((name, literal)), _) => format!("{open} set {name} = __ferry_mutable({literal}) {close}"),
                (None, Some((name, value))) => format!("{open} set {name} = __ferry_mutable_list({value}) {close}"),
                _ => continue,
            },
            _ if !macros => continue,
            "macro" | "test" => {
                let name_len = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
                let name = &rest[..name_len];
                let full = if keyword == "test" { format!("test_{name}") } else { name.to_owned() };
                let tail = with_kwargs(&rest[name_len..], &src[seg.range.end..]);
                names.push(full.clone());
                // The delimiters stay as written: `-%}` trims the body's start.
                format!("{open} macro {MACRO_PREFIX}{full}{tail} {close}")
            }
            "endtest" => format!("{open} endmacro {close}"),
            "docs" | "materialization" => "{% if false %}{% raw %}".to_owned(),
            "enddocs" | "endmaterialization" => "{% endraw %}{% endif %}".to_owned(),
            _ => continue,
        };
        out.push_str(&src[copied..seg.range.start]);
        out.push_str(&replacement);
        copied = seg.range.end;
        anchors.push((out.len(), copied));
    }
    out.push_str(&src[copied..]);
    (out, names, anchors)
}

/// `name = other` (a `set` of one variable to another), where the
/// template later changes `name` in place (`name.append(..)`, `.extend`,
/// `.insert`, `.pop`, `.remove`): as its name and the other variable.
fn changed_alias<'a>(rest: &'a str, src: &str) -> Option<(&'a str, &'a str)> {
    let (name, value) = rest.split_once('=')?;
    let (name, value) = (name.trim(), value.trim());
    let ident = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_');
    if !ident(name) || !ident(value) || value.starts_with('=') {
        return None;
    }
    let changed = ["append", "extend", "insert", "pop", "remove"].iter().any(|m| src.contains(&format!("{name}.{m}(")));
    changed.then_some((name, value))
}

/// A macro's parameter list (`(a, b=1) `), with a `kwargs` parameter added
/// when its body (up to the next `endmacro`/`endtest`) reads `kwargs`, as
/// Jinja2 macros gather extra keyword arguments there.
fn with_kwargs(params: &str, after: &str) -> String {
    static WORD: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"\bkwargs\b").expect("valid regex"));
    static END: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"\{%-?\s*end(macro|test)\b").expect("valid regex"));
    let body = &after[..END.find(after).map_or(after.len(), |m| m.start())];
    let (Some(open), Some(close)) = (params.find('('), params.rfind(')')) else { return params.to_owned() };
    if !WORD.is_match(body) || WORD.is_match(&params[open..close]) {
        return params.to_owned();
    }
    let sep = if params[open + 1..close].trim().is_empty() { "" } else { ", " };
    format!("{}{sep}kwargs={{}}{}", &params[..close], &params[close..])
}

/// `name = [...]` or `name = {...}` (the rest of a `set` statement whose
/// value is one list or dict literal), as its name and literal.
fn mutable_literal(rest: &str) -> Option<(&str, &str)> {
    let (name, value) = rest.split_once('=')?;
    let (name, value) = (name.trim(), value.trim());
    let ident = name.chars().all(|c| c.is_alphanumeric() || c == '_') && !name.is_empty();
    let close = match value.chars().next()? {
        '[' => ']',
        '{' => '}',
        _ => return None,
    };
    if !ident || !value.ends_with(close) || value.starts_with("==") {
        return None;
    }
    // The opening bracket must close at the very end: `[1] + x` is no literal.
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        match quote {
            Some(_) if escaped => escaped = false,
            Some(_) if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' => quote = Some(c),
                '[' | '{' | '(' => depth += 1,
                ']' | '}' | ')' => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 && i + c.len_utf8() < value.len() {
                        return None;
                    }
                }
                _ => {}
            },
        }
    }
    (depth == 0).then_some((name, value))
}

/// `{% docs name %}...{% enddocs %}` blocks in a Markdown file.
pub fn docs_blocks(file: &SourceFile) -> Vec<(String, String)> {
    let src = &*file.text;
    let mut out = Vec::new();
    let mut open: Option<(String, usize)> = None;
    for seg in scan::segments(src) {
        match seg.statement(src) {
            Some(("docs", rest)) => open = Some((rest.trim().to_owned(), seg.range.end)),
            Some(("enddocs", _)) => {
                if let Some((name, start)) = open.take() {
                    out.push((name, src[start..seg.range.start].trim().to_owned()));
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globals() -> Globals {
        Globals {
            project_name: "shop".into(),
            vars: serde_json::from_str(r#"{"start": "2020-01-01"}"#).unwrap(),
            target: serde_json::json!({"name": "dev", "schema": "main", "type": "sqlite"}),
            invocation_id: "00000000-0000-0000-0000-000000000000".into(),
            run_started_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            which: "compile".into(),
            full_refresh: false,
            event_time: Default::default(),
            docs: Arc::new(BTreeMap::from([("orders".to_owned(), "One row per order.".to_owned())])),
        }
    }

    fn rel(name: &str) -> Arc<functions::Relation> {
        Arc::new(functions::Relation {
            rendered: functions::quote_ident(name),
            database: "db".into(),
            schema: "main".into(),
            identifier: name.into(),
        })
    }

    fn templater(macros: &[(&str, &str)]) -> Templater {
        let mut resolver = Resolver { project: "shop".into(), ..Default::default() };
        for m in ["stg_orders", "stg_payments"] {
            resolver.refs.insert(m.into(), rel(m));
        }
        resolver.sources.insert(("raw".into(), "orders".into()), rel("raw_orders"));
        let files: Vec<_> = macros.iter().map(|(p, t)| SourceFile::new(*p, *t)).collect();
        let sources = MacroSources { project: files, ..Default::default() };
        let (t, diags) = Templater::new(&globals(), Arc::new(resolver), &sources);
        assert!(diags.is_empty(), "{diags:?}");
        t
    }

    fn render(t: &mut Templater, text: &str) -> Result<Rendered, Box<Diagnostic>> {
        let file = SourceFile::new("models/m.sql", text);
        t.add_template(&file)?;
        t.render(
            &file,
            &NodeContext {
                this: rel("m"),
                model: serde_json::json!({"name": "m"}),
                is_incremental: false,
                introspector: None,
                overrides: None,
            },
        )
    }

    #[test]
    fn records_the_calls_the_template_actually_makes() {
        let mut t = templater(&[]);
        let r = render(
            &mut t,
            "{{ config(materialized='table', tags=['a']) }}-- ref('not_called')\n{% if false %}{{ ref('stg_payments') }}{% endif %}select * from {{ ref('stg_orders') }} join {{ source('raw', 'orders') }}",
        )
        .unwrap();
        assert_eq!(r.refs, vec![RefCall { package: None, name: "stg_orders".into() }]);
        assert_eq!(r.sources, vec![("raw".into(), "orders".into())]);
        assert_eq!(r.config["materialized"], "table");
        assert!(r.sql.ends_with("select * from \"stg_orders\" join \"raw_orders\""), "{}", r.sql);
    }

    #[test]
    fn macros_are_global_and_may_return_values() {
        let mut t = templater(&[
            (
                "macros/money.sql",
                "{% macro cents(col) %}({{ col }} / 100.0){% endmacro %}\n{% macro kinds() %}{{ return(['a', 'b']) }}{% endmacro %}",
            ),
            (
                "macros/uses.sql",
                "{% macro all_kinds() %}{% for k in kinds() %}{{ k }}{% endfor %}{% endmacro %}\n{% macro from_orders() %}{{ ref('stg_orders') }}{% endmacro %}",
            ),
        ]);
        let r = render(&mut t, "select {{ cents('amount') }}, '{{ all_kinds() }}' from {{ from_orders() }}").unwrap();
        assert_eq!(r.sql, "select (amount / 100.0), 'ab' from \"stg_orders\"");
        assert_eq!(r.refs.len(), 1, "a ref inside a macro is the model's dependency");
    }

    #[test]
    fn builtin_generic_tests_render_with_their_arguments() {
        let t = templater(&[]);
        let args: Map<String, Json> =
            serde_json::from_str(r#"{"values": ["it's", "ok"], "config": {"severity": "warn"}}"#).unwrap();
        let r = t.render_generic_test("accepted_values", rel("orders"), Some("status"), &args, None).unwrap();
        assert!(r.sql.contains("'it''s',"), "a quote in a value is escaped: {}", r.sql);
        assert!(r.sql.contains("from \"orders\""), "{}", r.sql);
        let args: Map<String, Json> = serde_json::from_str(r#"{"to": "ref('stg_orders')", "field": "id"}"#).unwrap();
        let r = t.render_generic_test("relationships", rel("payments"), Some("order_id"), &args, None).unwrap();
        assert_eq!(r.refs, vec![RefCall { package: None, name: "stg_orders".into() }], "`to:` is evaluated");
        assert!(r.sql.contains("select id as to_field from \"stg_orders\""), "{}", r.sql);
        let e = t.render_generic_test("uniqe", rel("orders"), Some("id"), &Map::new(), None).unwrap_err();
        assert_eq!(e.message, "no generic test named `uniqe`");
        assert_eq!(e.help.as_deref(), Some("did you mean `unique`?"));
    }

    #[test]
    fn each_macro_renders_alone_and_its_errors_point_into_its_file() {
        let text = "{# helpers #}\n{% set unused = 1 %}\n{% macro a() %}A{{ b() }}{% endmacro %}\n\n{% macro b() -%}\n  B{{ 1 + none_such.x }}\n{%- endmacro %}\n";
        let blocks = macro_blocks(&rewrite(text, true).0);
        assert_eq!(blocks.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        let (rewritten, _, _) = rewrite(text, true);
        let alone = isolated(&rewritten, blocks[1].1.clone());
        assert_eq!(alone.len(), rewritten.len());
        assert_eq!(alone.lines().count(), rewritten.lines().count());
        assert!(alone.starts_with("{#") && !alone.contains("set unused"), "{alone}");
        let mut t = templater(&[("macros/ab.sql", text)]);
        let d = render(&mut t, "select '{{ a() }}'").unwrap_err();
        let label = d.primary.as_ref().expect("a label");
        assert_eq!(label.file.path.as_str(), "macros/ab.sql");
        assert_eq!(label.file.line_col(label.range.start).0, 6, "{d:?}");
    }

    #[test]
    fn generic_test_blocks_become_test_macros() {
        let t = templater(&[(
            "macros/t.sql",
            "{% test is_even(model, column_name) %}select * from {{ model }} where {{ column_name }} % 2 = 1{% endtest %}",
        )]);
        assert!(t.macros.contains_key("test_is_even"));
    }

    #[test]
    fn unknown_ref_points_at_the_call_and_suggests() {
        let mut t = templater(&[]);
        let text = "select *\nfrom {{ ref('stg_order') }}";
        let d = render(&mut t, text).unwrap_err();
        assert_eq!(d.code, Code::UnknownRef);
        assert_eq!(d.help.as_deref(), Some("did you mean `stg_orders`?"));
        let label = d.primary.expect("a label");
        assert_eq!(label.file.line_col(label.range.start).0, 2);
    }

    #[test]
    fn var_env_var_target_and_compiler_errors() {
        let mut t = templater(&[]);
        let r = render(&mut t, "{{ var('start') }} {{ var('x', 3) }} {{ target.name }} {{ env_var('FERRY_SURELY_UNSET', 'd') }} {{ this }} {{ 'a,b'.split(',') | length }}").unwrap();
        assert_eq!(r.sql, "2020-01-01 3 dev d \"m\" 2");
        let d = render(&mut t, "{{ exceptions.raise_compiler_error('bad input') }}").unwrap_err();
        assert_eq!(d.message, "bad input");
        let d = render(&mut t, "{{ var('nope') }}").unwrap_err();
        assert!(d.message.contains("`nope`"), "{}", d.message);
    }

    #[test]
    fn test_arguments_and_docs_render() {
        let t = templater(&[]);
        let r = t.render_expression("ref('stg_orders')").unwrap();
        assert_eq!(r.refs[0].name, "stg_orders");
        assert_eq!(t.render_str("{{ doc('orders') }}").unwrap(), "One row per order.");
        assert!(t.render_str("{{ doc('nope') }}").unwrap_err().message.contains("`nope`"));
    }

    #[test]
    fn list_mutation_gets_a_rewrite_hint_and_dbt_idioms_work() {
        let mut t = templater(&[]);
        let d = render(&mut t, "{% set xs = 'a,b'.split(',') %}{% do xs.append(1) %}").unwrap_err();
        assert_eq!(
            d.help.as_deref(),
            Some(
                "only a list that `{% set %}` assigns as a literal changes in place (`{% set items = [] %}`); or build a new one: `{% set items = items + [value] %}`"
            )
        );
        let r = render(
            &mut t,
            "{% set ns = namespace(n=0) %}{% for c in ['a','b'] %}{% set ns.n = ns.n + 1 %}{% if not loop.first %},{% endif %}{{ c | upper }}{% endfor %} {{ ns.n }} {{ 'Hi'.upper() }} {{ run_started_at.strftime('%Y') }}",
        )
        .unwrap();
        assert_eq!(r.sql, "A,B 2 HI 2023");
        // A list stored into a changeable dict changes in place too (dbt-utils' union_relations).
        let r = render(
            &mut t,
            "{% set d = {} %}{% do d.update({'k': []}) %}{% do d['k'].append(1) %}{% do d.setdefault('j', []).append(2) %}{% do d.update({'r': this}) %}{{ d['k'] }}{{ d['j'] }}{{ d['r'] }}",
        )
        .unwrap();
        assert_eq!(r.sql, "[1][2]\"m\"");
    }

    #[test]
    fn macros_gather_extra_keywords_in_kwargs_and_objects_are_true() {
        let mut t = templater(&[(
            "macros/k.sql",
            "{% macro outer(model, n=1) %}{{ return(inner(model, n, **kwargs)) }}{% endmacro %}\n\
             {% macro inner(model, n) %}{{ model }}:{{ n }}:{{ kwargs.get('at_least', 'none') }}:{{ kwargs | length }}{% endmacro %}\n\
             {% macro plain(a) %}{{ a }}{% endmacro %}",
        )]);
        let r = render(&mut t, "{{ outer(this, n=2, at_least=0.5, arg=3) }} {{ outer(this) }} {{ not this }}").unwrap();
        assert_eq!(r.sql, "\"m\":2:0.5:2 \"m\":1:none:0 False");
        // A macro that does not read kwargs still refuses an unknown keyword.
        let d = render(&mut t, "{{ plain(a=1, b=2) }}").unwrap_err();
        assert!(d.message.contains("unknown keyword argument `b`"), "{}", d.message);
        // A list set from another, then changed, is a changed copy.
        let r = render(
            &mut t,
            "{% set base = ['a'] + [] %}{% set cols = base %}{% do cols.append('b') %}{{ cols | join(',') }}",
        )
        .unwrap();
        assert_eq!(r.sql, "a,b");
    }

    #[test]
    fn set_literals_change_in_place_as_in_dbt() {
        let mut t = templater(&[(
            "macros/keys.sql",
            "{% macro keys(cols) %}{%- set out = [] -%}{%- for c in cols -%}{%- do out.append(c ~ '_key') -%}{%- endfor -%}{{ return(out) }}{% endmacro %}",
        )]);
        let r = render(
            &mut t,
            "{%- set xs = [] %}{% for i in range(3) %}{% do xs.append(i) %}{% endfor %}{% do xs.extend([7, 8]) %}{% do xs.insert(0, -1) %}{{ xs.pop() }} {{ xs | join(',') }} {{ xs | length }} {{ (xs + [9]) | join(',') }} {{ xs[-1] }}",
        )
        .unwrap();
        assert_eq!(r.sql, "8 -1,0,1,2,7 5 -1,0,1,2,7,9 7");
        let r = render(
            &mut t,
            "{% set d = {'a': 1} %}{% do d.update({'b': 2}) %}{% do d.update(c=3) %}{{ d.pop('a') }} {{ d.b }} {{ d['c'] }} {% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %} {{ d.setdefault('e', 5) }} {{ 'e' in d }}",
        )
        .unwrap();
        assert_eq!(r.sql, "1 2 3 b=2;c=3; 5 True");
        assert_eq!(render(&mut t, "{{ keys(['a', 'b']) | join(' ') }}").unwrap().sql, "a_key b_key");
        // Only whole literals are rewritten; a set that is no literal is left alone.
        assert_eq!(render(&mut t, "{% set xs = [1] + [2] %}{{ xs | join(',') }}").unwrap().sql, "1,2");
        assert_eq!(mutable_literal("xs = [1, ']'] "), Some(("xs", "[1, ']']")));
        assert_eq!(mutable_literal("a, b = [1, 2]"), None);
        assert_eq!(mutable_literal("xs = [1][0]"), None);
    }

    #[test]
    fn namespaced_macros_and_dispatch_reach_the_right_variant() {
        let mut t = templater(&[(
            "macros/over.sql",
            "{% macro default__type_string() %}{{ return('text') }}{% endmacro %}{% macro shout(x) %}{{ return(adapter.dispatch('shout')(x)) }}{% endmacro %}{% macro postgres__shout(x) %}{{ x | upper }}!{% endmacro %}",
        )]);
        // The project's own default__type_string wins over dbt's, as in dbt.
        let r = render(&mut t, "{{ dbt.type_string() }} {{ type_int() }} {{ shout('hi') }} {{ shop.shout('yo') }}")
            .unwrap();
        assert_eq!(r.sql, "text integer HI! YO!");
        let r =
            render(&mut t, "{{ dbt.hash(dbt.concat(['a', \"'-'\", 'b'])) }} {{ dbt.dateadd('day', 1, 'd') }}").unwrap();
        assert_eq!(
            r.sql,
            "md5(cast(a || '-' || b as varchar)) (cast(d as timestamp) + cast(cast(1 as varchar) || ' day' as interval))"
        );
        let d = render(&mut t, "{{ adapter.dispatch('nope', 'dbt')() }}").unwrap_err();
        assert!(d.message.contains("'shop.ferry__nope'") && d.message.contains("'dbt.default__nope'"), "{}", d.message);
        let d = render(&mut t, "{{ nosuch.star() }}").unwrap_err();
        assert!(d.message.contains("nosuch"), "{}", d.message);
    }

    #[test]
    fn log_records_whether_a_line_is_for_the_user() {
        let mut t = templater(&[]);
        let r =
            render(&mut t, "{{ log('info: only text') }}{{ log('shown', info=True) }}{{ log('also', True) }}").unwrap();
        let lines: Vec<(&str, bool)> = r.logs.iter().map(|l| (l.message.as_str(), l.info)).collect();
        assert_eq!(lines, vec![("info: only text", false), ("shown", true), ("also", true)]);
    }

    #[test]
    fn syntax_error_is_a_diagnostic_with_a_line() {
        let mut t = templater(&[]);
        let d = render(&mut t, "select 1\n{% if x %}\nselect 2").unwrap_err();
        assert_eq!(d.code, Code::JinjaSyntax);
        assert!(d.primary.is_some() || d.file.is_some());
    }

    #[test]
    fn docs_blocks_are_extracted() {
        let f = SourceFile::new("models/docs.md", "{% docs orders %}\nOne row per order.\n{% enddocs %}");
        assert_eq!(docs_blocks(&f), vec![("orders".to_owned(), "One row per order.".to_owned())]);
    }
}
