//! The dbt context: `ref`, `source`, `config`, `var`, `env_var`, `log`,
//! `return`, `exceptions`, `this`, `target`, `is_incremental`, ...
//!
//! Calls are recorded in a render-local [`Capture`] (a minijinja state
//! extension, which follows the render into macro calls), so a model's
//! dependencies are exactly the `ref`/`source` calls its template made.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use minijinja::value::{Kwargs, Object, Rest, Value};
use minijinja::{Error, ErrorKind, State};
use serde_json::{Map, Value as Json};

/// A `ref()` call: optional package and the model's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RefCall {
    pub package: Option<String>,
    pub name: String,
}

/// Everything a render recorded.
#[derive(Debug, Default)]
pub struct Capture {
    pub refs: Vec<RefCall>,
    pub sources: Vec<(String, String)>,
    pub config: Map<String, Json>,
    pub logs: Vec<LogLine>,
    pub warnings: Vec<String>,
    /// Model-specific context (`this`, `model`) handed on to macro calls.
    pub context: Value,
    /// Set by `return()`; taken by the macro caller.
    pub returned: Option<Value>,
    pub macro_depth: usize,
    pub is_incremental: bool,
    /// What `{% call statement(name, fetch_result=True) %}` fetched, for `load_result(name)`.
    pub results: std::collections::BTreeMap<String, Value>,
}

/// A `log()` call: `info=True` lines are shown to the user, others only
/// in debug logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub message: String,
    pub info: bool,
}

/// Typed causes attached to minijinja errors, so diagnostics can tell an
/// unknown `ref` from any other render failure.
#[derive(Debug, thiserror::Error)]
pub enum TemplateFailure {
    #[error("model `{name}` not found")]
    UnknownRef { name: String, suggestion: Option<String> },
    #[error("source `{source_name}.{table}` not found")]
    UnknownSource { source_name: String, table: String, suggestion: Option<String> },
    #[error("{0}")]
    CompilerError(String),
    /// Not a failure: carries `return()` out of a macro.
    #[error("return() called outside a macro")]
    Return,
    /// The render asked about a relation's columns before any was planned;
    /// it is rendered again once they are (see [`super::introspect`]).
    #[error("relation introspection is answered only once the parents are planned")]
    NeedsIntrospection,
}

pub(crate) fn fail(kind: ErrorKind, failure: TemplateFailure) -> Error {
    Error::new(kind, failure.to_string()).with_source(failure)
}

/// Finds ferry's typed cause in a minijinja error chain.
pub fn failure_of(err: &Error) -> Option<&TemplateFailure> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = cur {
        if let Some(f) = e.downcast_ref::<TemplateFailure>() {
            return Some(f);
        }
        cur = e.source();
    }
    None
}

/// Converts any serializable value to a template value.
pub fn to_value<T: serde::Serialize>(value: T) -> Value {
    Value::from(minijinja::value::Serde(value))
}

pub(crate) fn capture<'a>(state: &'a mut State<'_, '_>) -> &'a mut Capture {
    state.get_or_insert_extension_with(Capture::default)
}

/// A relation (`ref`, `source`, `this`): renders as the DataFusion table
/// name and exposes dbt's `database`, `schema`, `identifier`, `name`.
#[derive(Debug, Clone)]
pub struct Relation {
    /// The SQL text the relation renders to (already quoted).
    pub rendered: String,
    pub database: String,
    pub schema: String,
    pub identifier: String,
}

impl Object for Relation {
    /// A relation is true in a condition (`{% if not relation %}`), as in
    /// dbt; minijinja's default would take a map with no keys as false.
    fn is_true(self: &Arc<Self>) -> bool {
        true
    }

    /// Two relations compare (and key a dict) by the table they name.
    fn custom_cmp(self: &Arc<Self>, other: &minijinja::value::DynObject) -> Option<std::cmp::Ordering> {
        Some(self.rendered.cmp(&other.downcast_ref::<Self>()?.rendered))
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        Some(Value::from(match key.as_str()? {
            "database" => &self.database,
            "schema" => &self.schema,
            "identifier" | "name" | "table" => &self.identifier,
            "render" => &self.rendered,
            // dbt-utils' `_is_relation` checks `metadata.type` ends in `Relation`.
            "metadata" => return Some(to_value(serde_json::json!({ "type": "FerryRelation" }))),
            _ => return None,
        } as &str))
    }

    fn call_method(self: &Arc<Self>, _: &mut State<'_, '_>, method: &str, _: &[Value]) -> Result<Value, Error> {
        match method {
            "render" => Ok(Value::from(self.rendered.clone())),
            "include" | "quote" => Ok(Value::from_dyn_object(Arc::clone(self))),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rendered)
    }
}

/// Quotes an identifier for DataFusion SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The nodes `ref()` and `source()` may name, known before any render.
#[derive(Debug, Default)]
pub struct Resolver {
    pub project: String,
    /// The installed packages' names.
    pub packages: Vec<String>,
    pub refs: HashMap<String, Arc<Relation>>,
    /// The package (or project) each name in `refs` belongs to.
    pub owners: HashMap<String, String>,
    pub sources: HashMap<(String, String), Arc<Relation>>,
    /// Versioned models (dbt 1.5): each version and the model holding it,
    /// and the latest version, by the name `ref()` calls them by.
    pub versions: HashMap<String, ModelVersions>,
}

/// The versions of one versioned model.
#[derive(Debug, Clone, Default)]
pub struct ModelVersions {
    /// Version to the name of the model holding it.
    pub models: BTreeMap<String, String>,
    pub latest: String,
}

impl Resolver {
    /// The model `ref(name, v=version)` reads: a version's own model (the
    /// latest without `v`), or `name` itself for a model without versions.
    fn versioned_name(&self, name: &str, version: Option<&Value>) -> Result<String, Error> {
        let Some(versions) = self.versions.get(name) else {
            return match version {
                Some(v) if !v.is_none() && !v.is_undefined() => Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("ref('{name}', v={v}): `{name}` has no `versions`"),
                )),
                _ => Ok(name.to_owned()),
            };
        };
        let wanted = match version.filter(|v| !v.is_none() && !v.is_undefined()) {
            Some(v) => v.as_str().map_or_else(|| v.to_string(), str::to_owned),
            None => versions.latest.clone(),
        };
        versions.models.get(&wanted).cloned().ok_or_else(|| {
            let known: Vec<&str> = versions.models.keys().map(String::as_str).collect();
            Error::new(
                ErrorKind::InvalidOperation,
                format!("ref('{name}', v={wanted}): `{name}` has versions {}", known.join(", ")),
            )
        })
    }

    fn resolve_ref(&self, call: &RefCall) -> Result<Value, Error> {
        if let Some(pkg) = &call.package {
            if pkg != &self.project && !self.packages.contains(pkg) {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("package `{pkg}` is not installed (run `ferry deps` if `packages.yml` lists it)"),
                ));
            }
            if let Some(owner) = self.owners.get(&call.name)
                && owner != pkg
            {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("`{}` is in `{owner}`, not in package `{pkg}`", call.name),
                ));
            }
        }
        match self.refs.get(&call.name) {
            Some(rel) => Ok(Value::from_dyn_object(Arc::clone(rel))),
            None => {
                let suggestion =
                    crate::diagnostic::closest(&call.name, self.refs.keys().map(String::as_str)).map(str::to_owned);
                Err(fail(
                    ErrorKind::InvalidOperation,
                    TemplateFailure::UnknownRef { name: call.name.clone(), suggestion },
                ))
            }
        }
    }

    fn resolve_source(&self, source: &str, table: &str) -> Result<Value, Error> {
        if let Some(rel) = self.sources.get(&(source.to_owned(), table.to_owned())) {
            return Ok(Value::from_dyn_object(Arc::clone(rel)));
        }
        let names: Vec<String> = self.sources.keys().map(|(s, t)| format!("{s}.{t}")).collect();
        let wanted = format!("{source}.{table}");
        let suggestion = crate::diagnostic::closest(&wanted, names.iter().map(String::as_str)).map(str::to_owned);
        Err(fail(
            ErrorKind::InvalidOperation,
            TemplateFailure::UnknownSource { source_name: source.to_owned(), table: table.to_owned(), suggestion },
        ))
    }
}

/// `ref('model')`, `ref('package', 'model')`; a versioned model's latest
/// version, or the one `v=` (or `version=`) names.
pub fn ref_fn(resolver: Arc<Resolver>) -> impl Fn(&mut State<'_, '_>, Rest<String>, Kwargs) -> Result<Value, Error> {
    move |state, args, kwargs| {
        let version = match kwargs.get::<Option<Value>>("v")? {
            Some(v) => Some(v),
            None => kwargs.get::<Option<Value>>("version")?,
        };
        kwargs.assert_all_used()?;
        let call = match args.as_slice() {
            [name] => RefCall { package: None, name: resolver.versioned_name(name, version.as_ref())? },
            [pkg, name] => {
                RefCall { package: Some(pkg.clone()), name: resolver.versioned_name(name, version.as_ref())? }
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "ref() takes a model name, or a package and a model name",
                ));
            }
        };
        let value = resolver.resolve_ref(&call)?;
        capture(state).refs.push(call);
        Ok(value)
    }
}

/// `source('source_name', 'table_name')`.
pub fn source_fn(resolver: Arc<Resolver>) -> impl Fn(&mut State<'_, '_>, String, String) -> Result<Value, Error> {
    move |state, source, table| {
        let value = resolver.resolve_source(&source, &table)?;
        capture(state).sources.push((source, table));
        Ok(value)
    }
}

/// `config(...)`: callable to set keys, with `get` and `require` methods.
#[derive(Debug)]
pub struct ConfigObject;

impl Object for ConfigObject {
    fn call(self: &Arc<Self>, state: &mut State<'_, '_>, args: &[Value]) -> Result<Value, Error> {
        let (positional, kwargs): (&[Value], Kwargs) = minijinja::value::from_args(args)?;
        let mut pairs: Vec<(String, Value)> = Vec::new();
        if let [dict] = positional {
            for key in dict.try_iter()? {
                let v = dict.get_item(&key)?;
                pairs.push((key.to_string(), v));
            }
        } else if !positional.is_empty() {
            return Err(Error::new(ErrorKind::InvalidOperation, "config() takes keyword arguments or one dict"));
        }
        for key in kwargs.args() {
            pairs.push((key.to_owned(), kwargs.get::<Value>(key)?));
        }
        let cap = capture(state);
        for (key, value) in pairs {
            let json =
                serde_json::to_value(&value).map_err(|e| Error::new(ErrorKind::BadSerialization, e.to_string()))?;
            merge_config(&mut cap.config, &key, json);
        }
        Ok(Value::from(""))
    }

    fn call_method(self: &Arc<Self>, state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        let (key, default): (String, Option<Value>) = minijinja::value::from_args(args)?;
        let found = capture(state).config.get(&key).map(to_value);
        match method {
            "get" => Ok(found.or(default).unwrap_or(Value::from(()))),
            "require" => found.ok_or_else(|| {
                fail(
                    ErrorKind::InvalidOperation,
                    TemplateFailure::CompilerError(format!("config `{key}` is required but not set")),
                )
            }),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// `var('name', default)`: project vars, overridden by `--vars` (and by
/// a unit test's `overrides`).
pub fn var_fn(vars: Arc<Map<String, Json>>) -> impl Fn(&State<'_, '_>, String, Option<Value>) -> Result<Value, Error> {
    move |state, name, default| match (super::overridden(state, "vars", &name), vars.get(&name), default) {
        (Some(v), _, _) => Ok(v),
        (None, Some(v), _) => Ok(to_value(v)),
        (None, None, Some(d)) => Ok(d),
        (None, None, None) => Err(fail(
            ErrorKind::UndefinedError,
            TemplateFailure::CompilerError(format!(
                "required var `{name}` not found in the project's `vars` or `--vars`"
            )),
        )),
    }
}

/// `env_var('NAME', default)` (or a unit test's `overrides`).
pub fn env_var(state: &State<'_, '_>, name: String, default: Option<String>) -> Result<String, Error> {
    if let Some(v) = super::overridden(state, "env_vars", &name) {
        return Ok(v.as_str().map_or_else(|| v.to_string(), str::to_owned));
    }
    match (std::env::var(&name), default) {
        (Ok(v), _) => Ok(v),
        (Err(_), Some(d)) => Ok(d),
        (Err(_), None) => Err(fail(
            ErrorKind::UndefinedError,
            TemplateFailure::CompilerError(format!("environment variable `{name}` is required but not set")),
        )),
    }
}

/// `log(msg, info=False)`: recorded and shown with `-v` (or always with `info=True`).
pub fn log(state: &mut State<'_, '_>, msg: Value, info: Option<bool>, kwargs: Kwargs) -> Result<String, Error> {
    let info = match kwargs.get::<Option<bool>>("info")? {
        Some(flag) => flag,
        None => info.unwrap_or(false),
    };
    kwargs.assert_all_used()?;
    capture(state).logs.push(LogLine { message: msg.to_string(), info });
    Ok(String::new())
}

/// `return(value)`: ends the enclosing macro with `value` as its result.
pub fn return_fn(state: &mut State<'_, '_>, value: Value) -> Result<Value, Error> {
    capture(state).returned = Some(value);
    Err(fail(ErrorKind::InvalidOperation, TemplateFailure::Return))
}

/// `is_incremental()`.
pub fn is_incremental(state: &mut State<'_, '_>) -> bool {
    if let Some(v) = super::overridden(state, "macros", "is_incremental") {
        return v.is_true();
    }
    let rendering = state.lookup("__ferry_is_incremental").is_some_and(|v| v.is_true());
    rendering || capture(state).is_incremental
}

/// `exceptions.raise_compiler_error(msg)` and `exceptions.warn(msg)`.
#[derive(Debug)]
pub struct Exceptions;

impl Object for Exceptions {
    fn call_method(self: &Arc<Self>, state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        let (msg,): (String,) = minijinja::value::from_args(args)?;
        match method {
            "raise_compiler_error" => Err(fail(ErrorKind::InvalidOperation, TemplateFailure::CompilerError(msg))),
            "warn" => {
                capture(state).warnings.push(msg);
                Ok(Value::from(""))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// `run_started_at`: renders as ISO 8601; has `strftime` and `isoformat`.
#[derive(Debug)]
pub struct Timestamp(pub chrono::DateTime<chrono::Utc>);

impl Object for Timestamp {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        use chrono::Datelike;
        Some(Value::from(match key.as_str()? {
            "year" => self.0.year(),
            "month" => i32::try_from(self.0.month()).ok()?,
            "day" => i32::try_from(self.0.day()).ok()?,
            _ => return None,
        }))
    }

    fn call_method(self: &Arc<Self>, _: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        match method {
            "strftime" => {
                let (fmt,): (String,) = minijinja::value::from_args(args)?;
                let items: Vec<_> = chrono::format::StrftimeItems::new(&fmt).collect();
                if items.contains(&chrono::format::Item::Error) {
                    return Err(Error::new(ErrorKind::InvalidOperation, format!("invalid strftime format `{fmt}`")));
                }
                Ok(Value::from(self.0.format_with_items(items.into_iter()).to_string()))
            }
            "isoformat" => Ok(Value::from(self.0.to_rfc3339())),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d %H:%M:%S%.6f+00:00"))
    }
}

/// `adapter`: `adapter.quote(name)` and `adapter.dispatch('macro', 'namespace')`.
#[derive(Debug)]
pub struct Adapter {
    pub dispatch: Arc<super::dispatch::Dispatch>,
}

impl Object for Adapter {
    fn call_method(self: &Arc<Self>, state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        match method {
            "quote" => {
                let (name,): (String,) = minijinja::value::from_args(args)?;
                Ok(Value::from(quote_ident(&name)))
            }
            "dispatch" => {
                let (name, namespace, kwargs): (String, Option<String>, minijinja::value::Kwargs) =
                    minijinja::value::from_args(args)?;
                let namespace = match namespace {
                    Some(ns) => Some(ns),
                    None => kwargs.get::<Option<String>>("macro_namespace")?,
                };
                if kwargs.has("packages") {
                    let _: Value = kwargs.get("packages")?;
                    capture(state).warnings.push(format!(
                        "adapter.dispatch('{name}', packages=...) is dbt's old form; ferry ignores `packages` and searches `macro_namespace`"
                    ));
                }
                kwargs.assert_all_used()?;
                self.dispatch
                    .find(&name, namespace.as_deref())
                    .map_err(|msg| fail(ErrorKind::UnknownFunction, TemplateFailure::CompilerError(msg)))
            }
            "get_columns_in_relation" => super::introspect::get_columns_in_relation(state, args),
            "get_relation" => super::introspect::get_relation(state, args),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// dbt's `set(iterable)`: the distinct values, sorted, so that two sets
/// compare equal when Python's would.
pub fn set_fn(values: Option<Value>) -> Result<Value, Error> {
    let mut items: Vec<Value> = match values {
        Some(v) if !v.is_none() && !v.is_undefined() => v.try_iter()?.collect(),
        _ => Vec::new(),
    };
    items.sort();
    items.dedup();
    Ok(Value::from(items))
}

/// dbt's `zip(a, b, ...)`: tuples of the items at each position, as long
/// as the shortest argument.
pub fn zip(args: Rest<Value>) -> Result<Value, Error> {
    let lists: Vec<Vec<Value>> = args.iter().map(|v| v.try_iter().map(Iterator::collect)).collect::<Result<_, _>>()?;
    let len = lists.iter().map(Vec::len).min().unwrap_or(0);
    Ok(Value::from_iter((0..len).map(|i| Value::from(lists.iter().map(|l| l[i].clone()).collect::<Vec<_>>()))))
}

/// `doc('name')`: the text of a `{% docs name %}` block.
pub fn doc_fn(docs: Arc<std::collections::BTreeMap<String, String>>) -> impl Fn(String) -> Result<String, Error> {
    move |name| {
        docs.get(&name).cloned().ok_or_else(|| {
            let hint = crate::diagnostic::did_you_mean(&name, docs.keys().map(String::as_str))
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
            fail(
                ErrorKind::UndefinedError,
                TemplateFailure::CompilerError(format!("no docs block named `{name}`{hint}")),
            )
        })
    }
}

/// `tojson(value)`.
pub fn tojson(value: Value) -> Result<String, Error> {
    serde_json::to_string(&value).map_err(|e| Error::new(ErrorKind::BadSerialization, e.to_string()))
}

/// `fromjson(text)`.
pub fn fromjson(text: String) -> Result<Value, Error> {
    serde_json::from_str::<Json>(&text)
        .map(|v| to_value(&v))
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("invalid JSON: {e}")))
}
/// Config keys whose values accumulate across levels instead of replacing.
const MERGED_KEYS: &[&str] = &["tags", "meta", "grants", "pre-hook", "post-hook"];

/// Sets one config key, accumulating `tags`/`meta`-like keys as dbt does.
pub fn merge_config(config: &mut Map<String, Json>, key: &str, value: Json) {
    let key = match key {
        "pre_hook" => "pre-hook",
        "post_hook" => "post-hook",
        k => k,
    };
    if !MERGED_KEYS.contains(&key) {
        config.insert(key.to_owned(), value);
        return;
    }
    match (config.get_mut(key), value) {
        (Some(Json::Object(old)), Json::Object(new)) => old.extend(new),
        (Some(old), new) if key != "meta" && key != "grants" => {
            let mut list = as_list(old.take());
            for item in as_list(new) {
                if !list.contains(&item) {
                    list.push(item);
                }
            }
            *old = Json::Array(list);
        }
        (_, new) => {
            let new = if key == "tags" { Json::Array(as_list(new)) } else { new };
            config.insert(key.to_owned(), new);
        }
    }
}

fn as_list(v: Json) -> Vec<Json> {
    match v {
        Json::Array(items) => items,
        Json::Null => Vec::new(),
        other => vec![other],
    }
}
