//! Schema files (`models/**/*.yml`, dbt `version: 2`): model, seed and
//! source properties, columns, and the tests declared on them.

use std::sync::Arc;

use serde_json::{Map, Value as Json};

use super::config::{MODEL_CONFIG_KEYS, unknown_key};
use super::nodes::{ColumnSpec, Origin, SourceTable, Version};
use super::yaml::{self, Key, Node, Value};
use crate::diagnostic::{Code, Diagnostic, Label, SourceFile};
use crate::template::merge_config;

const ROOT_KEYS: &[&str] = &[
    "version",
    "models",
    "sources",
    "seeds",
    "macros",
    "snapshots",
    "analyses",
    "exposures",
    "metrics",
    "semantic_models",
    "saved_queries",
    "groups",
    "unit_tests",
];
const MODEL_KEYS: &[&str] = &[
    "name",
    "description",
    "columns",
    "config",
    "tests",
    "data_tests",
    "docs",
    "meta",
    "access",
    "constraints",
    "versions",
    "latest_version",
    "deprecation_date",
    "group",
    "time_spine",
    "rules",
    "dedupe",
];
const COLUMN_KEYS: &[&str] = &[
    "name",
    "mask",
    "description",
    "data_type",
    "tests",
    "data_tests",
    "meta",
    "quote",
    "constraints",
    "tags",
    "docs",
    "policy_tags",
    "granularity",
    "config",
    "rules",
    "path",
];
const SOURCE_KEYS: &[&str] = &[
    "name",
    "description",
    "database",
    "schema",
    "loader",
    "loaded_at_field",
    "meta",
    "tags",
    "config",
    "overrides",
    "freshness",
    "quoting",
    "tables",
];
const TABLE_KEYS: &[&str] = &[
    "name",
    "description",
    "identifier",
    "columns",
    "tests",
    "data_tests",
    "meta",
    "tags",
    "config",
    "loaded_at_field",
    "freshness",
    "external",
    "quoting",
];
/// ferry's keys that say where a source's data is and how to read it.
pub const LOCATION_KEYS: &[&str] = &[
    "path",
    "format",
    "delimiter",
    "quote",
    "escape",
    "header",
    "null_strings",
    "null_string",
    "date_format",
    "timestamp_format",
    "compression",
    "encoding",
    "on_invalid",
    "on_error",
    "connection",
    "table",
    "query",
    "partition_on",
    "partitions",
    "sheet",
    "header_row",
    "range",
    "records",
    "skip_lines",
    "record_path",
    "layout",
    "record_type",
    "comment",
    "terminator",
    "options",
];
/// Test config keys that dbt also accepts directly among a test's arguments.
const TEST_CONFIG_KEYS: &[&str] = &[
    "severity",
    "where",
    "limit",
    "error_if",
    "warn_if",
    "store_failures",
    "store_failures_as",
    "tags",
    "enabled",
    "meta",
    "fail_calc",
    "alias",
    "schema",
    "database",
];

/// A test as declared in a schema file.
#[derive(Debug, Clone)]
pub struct TestDecl {
    pub test_name: String,
    pub package: Option<String>,
    /// A name given with `name:`, replacing dbt's generated one.
    pub custom_name: Option<String>,
    pub column: Option<String>,
    pub args: Map<String, Json>,
    pub config: Map<String, Json>,
    pub origin: Origin,
}

/// Properties of a model or seed from a schema file.
#[derive(Debug, Clone)]
pub struct Patch {
    pub name: String,
    pub description: String,
    pub columns: Vec<ColumnSpec>,
    pub config: Map<String, Json>,
    pub tests: Vec<TestDecl>,
    /// Row-level rules (`rules:`), written like tests.
    pub rules: Vec<TestDecl>,
    /// A snapshot's `relation: ref('x')` or `source('s', 't')`, as written.
    pub relation: Option<String>,
    /// The version of a versioned model this entry describes.
    pub version: Option<Version>,
    pub origin: Origin,
}

/// A source table and the tests declared on it.
#[derive(Debug, Clone)]
pub struct SourceDecl {
    pub table: SourceTable,
    pub tests: Vec<TestDecl>,
}

/// Everything one schema file declares.
#[derive(Debug, Default)]
pub struct SchemaFile {
    pub models: Vec<Patch>,
    /// Snapshot properties; an entry with a `relation` is a snapshot of its own.
    pub snapshots: Vec<Patch>,
    pub seeds: Vec<Patch>,
    pub sources: Vec<SourceDecl>,
    pub unit_tests: Vec<UnitTestDecl>,
}

/// A `unit_tests:` entry (dbt 1.8): a model run on given rows of its
/// parents, its output compared with the expected rows.
#[derive(Debug, Clone)]
pub struct UnitTestDecl {
    pub name: String,
    pub model: String,
    pub description: String,
    /// Each input: `ref('x')` or `source('s', 't')` as written, and its rows.
    pub given: Vec<(String, Fixture)>,
    pub expect: Fixture,
    pub config: Map<String, Json>,
    pub overrides: Option<crate::template::Overrides>,
    pub origin: Origin,
}

/// Rows written in a unit test, in one of dbt's formats.
#[derive(Debug, Clone, PartialEq)]
pub enum Fixture {
    /// `format: dict` (the default): a list of mappings, column to value.
    Rows(Vec<Map<String, Json>>),
    /// `format: csv`: a header line, then rows.
    Csv(String),
    /// `format: sql`: a query that returns the rows.
    Sql(String),
    /// `fixture: name` (with `format: csv` or `sql`): the rows are in the
    /// file `name.csv` (or `.sql`) in a `fixtures` folder under the
    /// `test-paths`, as in dbt; the project loader reads it in.
    File { name: String, sql: bool },
}

/// Parses one schema file; problems that do not stop parsing become warnings.
pub fn parse(file: &Arc<SourceFile>, warnings: &mut Vec<Diagnostic>) -> Result<SchemaFile, Box<Diagnostic>> {
    let root = yaml::parse(file)?;
    if root.is_null() {
        return Ok(SchemaFile::default());
    }
    let mut p = Parser { file, warnings };
    p.expect_map(&root, "a schema file")?;
    p.check_keys(&root, ROOT_KEYS, "schema file key");
    let mut out = SchemaFile::default();
    for entry in p.list(&root, "models")? {
        if entry.get("versions").is_some_and(|v| !v.is_null()) {
            out.models.extend(p.versioned(entry)?);
        } else {
            out.models.push(p.patch(entry, "model")?);
        }
    }
    for entry in p.list(&root, "seeds")? {
        out.seeds.push(p.patch(entry, "seed")?);
    }
    for entry in p.list(&root, "snapshots")? {
        out.snapshots.push(p.patch(entry, "snapshot")?);
    }
    for source in p.list(&root, "sources")? {
        p.source(source, &mut out.sources)?;
    }
    for entry in p.list(&root, "unit_tests")? {
        out.unit_tests.push(p.unit_test(entry)?);
    }
    Ok(out)
}

const UNIT_TEST_KEYS: &[&str] = &["name", "model", "description", "given", "expect", "overrides", "config", "versions"];

impl Parser<'_> {
    fn unit_test(&mut self, node: &Node) -> Result<UnitTestDecl, Box<Diagnostic>> {
        let name = self.name(node, "a unit test")?;
        self.check_keys(node, UNIT_TEST_KEYS, "unit test key");
        let model = match node.get("model").and_then(Node::as_str) {
            Some(m) if !m.is_empty() => m.to_owned(),
            _ => return Err(self.shape(node, format!("unit test `{name}` names no `model`"))),
        };
        let overrides = match node.get("overrides").filter(|o| !o.is_null()) {
            Some(o) => Some(self.overrides(o, &name)?),
            None => None,
        };
        let mut given = Vec::new();
        for input in self.list(node, "given")? {
            self.expect_map(input, "a `given` entry")?;
            let Some(expr) = input.get("input").and_then(Node::as_str) else {
                return Err(self.shape(input, format!("unit test `{name}`: a `given` entry has no `input`")));
            };
            given.push((expr.trim().to_owned(), self.fixture(input, &name)?));
        }
        let Some(expect) = node.get("expect").filter(|e| !e.is_null()) else {
            return Err(self.shape(node, format!("unit test `{name}` has no `expect`")));
        };
        self.expect_map(expect, "`expect`")?;
        let expect = self.fixture(expect, &name)?;
        let config = match node.get("config") {
            Some(c) if !c.is_null() => c.deserialize_into(self.file, "`config`")?,
            _ => Map::new(),
        };
        Ok(UnitTestDecl {
            name,
            model,
            description: Self::text(node, "description"),
            given,
            expect,
            config,
            overrides,
            origin: Origin { file: Arc::clone(self.file), span: node.span.clone() },
        })
    }

    /// A model entry with `versions:`: one patch per version, each as if
    /// written on its own (dbt's rules): the entry's properties, with the
    /// version's `config` merged over the entry's, the version's `tests`
    /// added, and its `columns` in place of the entry's: those its
    /// `include` (`all` or `*` or a list, default all) and `exclude` keep,
    /// with the version's own column entries replacing or adding to them.
    fn versioned(&mut self, entry: &Node) -> Result<Vec<Patch>, Box<Diagnostic>> {
        let name = self.name(entry, "model")?;
        let mut versions = Vec::new();
        let mut patches = Vec::new();
        for version in self.list(entry, "versions")? {
            self.expect_map(version, "a version")?;
            let known = [
                "v",
                "defined_in",
                "columns",
                "config",
                "tests",
                "data_tests",
                "description",
                "docs",
                "constraints",
                "deprecation_date",
                "meta",
                "access",
                "group",
            ];
            self.check_keys(version, &known, "version property");
            let v = match version.get("v").map(|v| &v.value) {
                Some(Value::Int(i)) => i.to_string(),
                Some(Value::Float(f)) => f.to_string(),
                Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
                _ => return Err(self.shape(version, format!("a version of model `{name}` has no `v`"))),
            };
            if versions.iter().any(|(seen, _)| seen == &v) {
                return Err(self.shape(version, format!("model `{name}` lists version `{v}` twice")));
            }
            let defined_in = version.get("defined_in").and_then(Node::as_str).map(str::to_owned);
            let model = defined_in.clone().unwrap_or_else(|| format!("{name}_v{v}"));
            let node =
                self.version_node(entry, version, &model, defined_in.is_some().then(|| format!("{name}_v{v}")))?;
            let mut patch = self.patch(&node, "model")?;
            patch.origin = Origin { file: Arc::clone(self.file), span: version.span.clone() };
            patches.push(patch);
            versions.push((v, model));
        }
        let latest = match entry.get("latest_version").filter(|l| !l.is_null()) {
            Some(l) => {
                let given = match &l.value {
                    Value::Int(i) => i.to_string(),
                    Value::Float(f) => f.to_string(),
                    Value::String(s) => s.trim().to_owned(),
                    _ => String::new(),
                };
                if !versions.iter().any(|(v, _)| v == &given) {
                    return Err(
                        self.shape(l, format!("`latest_version` of model `{name}` is not one of its `versions`"))
                    );
                }
                given
            }
            None => {
                let number = |v: &str| v.parse::<f64>().ok();
                let greatest = versions.iter().map(|(v, _)| v).max_by(|a, b| match (number(a), number(b)) {
                    (Some(x), Some(y)) => x.total_cmp(&y),
                    _ => a.cmp(b),
                });
                match greatest {
                    Some(v) => v.clone(),
                    None => return Err(self.shape(entry, format!("model `{name}` lists no `versions`"))),
                }
            }
        };
        for (patch, (v, _)) in patches.iter_mut().zip(&versions) {
            patch.version = Some(Version { model: name.clone(), v: v.clone(), latest: v == &latest });
        }
        Ok(patches)
    }

    /// The model entry that version `version` of `entry` amounts to,
    /// named `model` (with `alias` set to `<name>_v<v>` when the version
    /// is `defined_in` a file of another name, as dbt names its relation).
    fn version_node(
        &self,
        entry: &Node,
        version: &Node,
        model: &str,
        alias: Option<String>,
    ) -> Result<Node, Box<Diagnostic>> {
        let key = |name: &str, span: &std::ops::Range<usize>| Key { name: name.to_owned(), span: span.clone() };
        let text =
            |t: &str, span: &std::ops::Range<usize>| Node { value: Value::String(t.to_owned()), span: span.clone() };
        let mut entries: Vec<(Key, Node)> = Vec::new();
        for (k, v) in entry.entries() {
            match k.name.as_str() {
                "versions" | "latest_version" | "columns" | "config" => {}
                "name" => entries.push((k.clone(), text(model, &v.span))),
                "description" if version.get("description").is_some() => {}
                _ => entries.push((k.clone(), v.clone())),
            }
        }
        // Columns: the entry's, narrowed by include / exclude, then the version's.
        let mut include: Option<Vec<String>> = None;
        let mut exclude: Vec<String> = Vec::new();
        let mut own: Vec<Node> = Vec::new();
        for col in self.list(version, "columns")? {
            if let Some(inc) = col.get("include") {
                include = match &inc.value {
                    Value::String(s) if s == "all" || s == "*" => None,
                    Value::Seq(items) => Some(items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect()),
                    _ => return Err(self.shape(inc, "`include` is `all`, `*` or a list of column names".to_owned())),
                };
                exclude = col
                    .get("exclude")
                    .map(|e| e.items().iter().filter_map(|i| i.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
            } else {
                own.push(col.clone());
            }
        }
        let own_name = |c: &Node| c.get("name").and_then(Node::as_str).map(str::to_owned);
        let mut columns: Vec<Node> = self
            .list(entry, "columns")?
            .iter()
            .filter(|c| {
                let Some(n) = own_name(c) else { return true };
                include.as_ref().is_none_or(|i| i.contains(&n))
                    && !exclude.contains(&n)
                    && !own.iter().any(|o| own_name(o).as_ref() == Some(&n))
            })
            .cloned()
            .collect();
        columns.extend(own);
        let span = version.span.clone();
        entries.push((key("columns", &span), Node { value: Value::Seq(columns), span: span.clone() }));
        // Config: the entry's, the version's over it.
        let mut config: Vec<(Key, Node)> = entry.get("config").map(|c| c.entries().to_vec()).unwrap_or_default();
        for (k, v) in version.get("config").map(Node::entries).unwrap_or_default() {
            config.retain(|(c, _)| c.name.trim_start_matches('+') != k.name.trim_start_matches('+'));
            config.push((k.clone(), v.clone()));
        }
        if let Some(alias) = alias.filter(|_| !config.iter().any(|(k, _)| k.name.trim_start_matches('+') == "alias")) {
            config.push((key("alias", &span), text(&alias, &span)));
        }
        entries.push((key("config", &span), Node { value: Value::Map(config), span: span.clone() }));
        // Tests: the entry's and the version's.
        for k in ["tests", "data_tests", "description"] {
            if let Some(v) = version.get(k) {
                match (entries.iter_mut().find(|(e, _)| e.name == k), &v.value) {
                    (Some((_, Node { value: Value::Seq(items), .. })), Value::Seq(more)) => {
                        items.extend(more.iter().cloned())
                    }
                    _ => entries.push((key(k, &v.span), v.clone())),
                }
            }
        }
        Ok(Node { value: Value::Map(entries), span: entry.span.clone() })
    }

    /// A unit test's `overrides`: `macros`, `vars` and `env_vars`, each a
    /// mapping.
    fn overrides(&mut self, node: &Node, test: &str) -> Result<crate::template::Overrides, Box<Diagnostic>> {
        self.expect_map(node, "`overrides`")?;
        self.check_keys(node, &["macros", "vars", "env_vars"], "`overrides` key");
        let mut out = crate::template::Overrides::default();
        for (key, slot) in [("macros", &mut out.macros), ("vars", &mut out.vars), ("env_vars", &mut out.env_vars)] {
            match node.get(key).map(Node::to_json) {
                None | Some(Json::Null) => {}
                Some(Json::Object(m)) => *slot = m,
                Some(_) => {
                    let at = node.get(key).unwrap_or(node);
                    return Err(self.shape(at, format!("unit test `{test}`: `overrides.{key}` must be a mapping")));
                }
            }
        }
        Ok(out)
    }

    /// The `rows` (and `format`) of a `given` entry or of `expect`.
    fn fixture(&self, node: &Node, test: &str) -> Result<Fixture, Box<Diagnostic>> {
        let format = node.get("format").and_then(Node::as_str).unwrap_or("dict");
        if let Some(fixture) = node.get("fixture").filter(|f| !f.is_null()) {
            let Some(name) = fixture.as_str().filter(|n| !n.is_empty()) else {
                return Err(self.shape(fixture, format!("unit test `{test}`: `fixture` must name a file")));
            };
            if node.get("rows").is_some_and(|r| !r.is_null()) {
                return Err(self.shape(node, format!("unit test `{test}`: give `rows` or a `fixture`, not both")));
            }
            return match format {
                "csv" | "sql" => Ok(Fixture::File { name: name.to_owned(), sql: format == "sql" }),
                other => Err(self.shape(
                    node,
                    format!("unit test `{test}`: a `fixture` file is csv or sql (`format: csv`), not `{other}`"),
                )),
            };
        }
        let rows = node.get("rows");
        let text = || rows.and_then(Node::as_str).map(str::to_owned);
        match format {
            "dict" => match rows.map(Node::to_json) {
                None | Some(Json::Null) => Ok(Fixture::Rows(Vec::new())),
                Some(Json::Array(items)) => items
                    .into_iter()
                    .map(|i| match i {
                        Json::Object(m) => Ok(m),
                        _ => Err(self.shape(node, format!("unit test `{test}`: each of `rows` must be a mapping"))),
                    })
                    .collect::<Result<_, _>>()
                    .map(Fixture::Rows),
                Some(_) => Err(self.shape(node, format!("unit test `{test}`: `rows` must be a list of mappings"))),
            },
            "csv" => text()
                .map(Fixture::Csv)
                .ok_or_else(|| self.shape(node, format!("unit test `{test}`: csv `rows` must be text"))),
            "sql" => text()
                .map(Fixture::Sql)
                .ok_or_else(|| self.shape(node, format!("unit test `{test}`: sql `rows` must be text"))),
            other => {
                Err(self.shape(node, format!("unit test `{test}`: `format: {other}` is not one of dict, csv, sql")))
            }
        }
    }
}

struct Parser<'a> {
    file: &'a Arc<SourceFile>,
    warnings: &'a mut Vec<Diagnostic>,
}

impl Parser<'_> {
    fn shape(&self, node: &Node, message: String) -> Box<Diagnostic> {
        Box::new(Diagnostic::error(Code::YamlShape, message).with_label(Label::new(self.file, node.span.clone())))
    }

    fn expect_map(&self, node: &Node, what: &str) -> Result<(), Box<Diagnostic>> {
        match node.value {
            Value::Map(_) => Ok(()),
            _ => Err(self.shape(node, format!("expected {what} to be a mapping"))),
        }
    }

    fn check_keys(&mut self, node: &Node, known: &[&str], what: &str) {
        for (key, _) in node.entries() {
            if !known.contains(&key.name.as_str()) {
                self.warnings.push(unknown_key(self.file, key, known, what));
            }
        }
    }

    fn list<'n>(&self, node: &'n Node, key: &str) -> Result<&'n [Node], Box<Diagnostic>> {
        match node.get(key) {
            None => Ok(&[]),
            Some(n) if n.is_null() => Ok(&[]),
            Some(Node { value: Value::Seq(items), .. }) => Ok(items),
            Some(n) => Err(self.shape(n, format!("`{key}` must be a list"))),
        }
    }

    fn name(&self, node: &Node, what: &str) -> Result<String, Box<Diagnostic>> {
        self.expect_map(node, what)?;
        match node.get("name").and_then(Node::as_str) {
            Some(n) if !n.is_empty() => Ok(n.to_owned()),
            _ => Err(self.shape(node, format!("{what} entry has no `name`"))),
        }
    }

    fn text(node: &Node, key: &str) -> String {
        node.get(key).and_then(Node::as_str).unwrap_or_default().to_owned()
    }

    fn config(&mut self, node: &Node) -> Result<Map<String, Json>, Box<Diagnostic>> {
        let Some(cfg) = node.get("config").filter(|c| !c.is_null()) else { return Ok(Map::new()) };
        self.expect_map(cfg, "`config`")?;
        let mut out = Map::new();
        for (key, value) in cfg.entries() {
            let bare = key.name.trim_start_matches('+');
            if !MODEL_CONFIG_KEYS.contains(&bare) {
                self.warnings.push(unknown_key(self.file, key, MODEL_CONFIG_KEYS, "config key"));
            }
            merge_config(&mut out, bare, value.to_json());
        }
        Ok(out)
    }

    fn patch(&mut self, node: &Node, what: &str) -> Result<Patch, Box<Diagnostic>> {
        let name = self.name(node, what)?;
        let keys: Vec<&str> = MODEL_KEYS.iter().copied().chain((what == "snapshot").then_some("relation")).collect();
        self.check_keys(node, &keys, &format!("{what} property"));
        let relation = match node.get("relation").filter(|_| what == "snapshot") {
            None => None,
            Some(r) => match r.as_str().map(str::trim) {
                Some(r) if !r.is_empty() => Some(r.to_owned()),
                _ => {
                    return Err(self.shape(
                        r,
                        format!("snapshot `{name}`: `relation` must be `ref('model')` or `source('source', 'table')`"),
                    ));
                }
            },
        };
        let mut tests = self.tests(node, None)?;
        let mut rules = self.decls(node, None, &["rules"])?;
        let (columns, column_tests) = self.columns(node)?;
        tests.extend(column_tests);
        for col in self.list(node, "columns")? {
            rules.extend(self.decls(col, Some(&self.name(col, "column")?), &["rules"])?);
        }
        Ok(Patch {
            name,
            description: Self::text(node, "description"),
            columns,
            config: {
                let mut config = self.config(node)?;
                // `dedupe:` may sit beside `rules:` as well as in `config:`.
                if let Some(d) = node.get("dedupe").filter(|d| !d.is_null()) {
                    merge_config(&mut config, "dedupe", d.to_json());
                }
                config
            },
            tests,
            rules,
            relation,
            version: None,
            origin: Origin { file: Arc::clone(self.file), span: node.span.clone() },
        })
    }

    fn columns(&mut self, node: &Node) -> Result<(Vec<ColumnSpec>, Vec<TestDecl>), Box<Diagnostic>> {
        let mut columns = Vec::new();
        let mut tests = Vec::new();
        for col in self.list(node, "columns")? {
            let name = self.name(col, "column")?;
            self.check_keys(col, COLUMN_KEYS, "column property");
            tests.extend(self.tests(col, Some(&name))?);
            let meta = match col.get("meta") {
                Some(m) if !m.is_null() => m.deserialize_into(self.file, "`meta`")?,
                _ => Map::new(),
            };
            let mask = match col.get("mask") {
                Some(m) if m.is_null() => {
                    return Err(self.shape(
                        m,
                        format!(
                            "column `{name}`: `mask:` is empty; write `mask: \"null\"` for the policy that empties it"
                        ),
                    ));
                }
                Some(m) => Some(
                    crate::mask::Policy::parse(&m.to_json())
                        .map_err(|e| self.shape(m, format!("column `{name}`: {e}")))?,
                ),
                None => None,
            };
            columns.push(ColumnSpec {
                mask,
                description: Self::text(col, "description"),
                data_type: col.get("data_type").and_then(Node::as_str).map(str::to_owned),
                path: col.get("path").and_then(Node::as_str).map(str::to_owned),
                meta,
                name,
            });
        }
        Ok((columns, tests))
    }

    fn tests(&self, node: &Node, column: Option<&str>) -> Result<Vec<TestDecl>, Box<Diagnostic>> {
        self.decls(node, column, &["tests", "data_tests"])
    }

    /// Tests or rules under `keys`: one catalogue, one syntax.
    fn decls(&self, node: &Node, column: Option<&str>, keys: &[&str]) -> Result<Vec<TestDecl>, Box<Diagnostic>> {
        let mut out = Vec::new();
        for &key in keys {
            for t in self.list(node, key)? {
                out.push(self.test(t, column)?);
            }
        }
        Ok(out)
    }

    fn test(&self, node: &Node, column: Option<&str>) -> Result<TestDecl, Box<Diagnostic>> {
        let origin = Origin { file: Arc::clone(self.file), span: node.span.clone() };
        let (full_name, args_node) = match &node.value {
            Value::String(s) => (s.clone(), None),
            Value::Map(entries) if entries.len() == 1 => (entries[0].0.name.clone(), Some(&entries[0].1)),
            _ => {
                return Err(
                    self.shape(node, "a test must be a name or a mapping with one key (the test's name)".into())
                );
            }
        };
        let (package, test_name) = match full_name.rsplit_once('.') {
            Some((pkg, name)) => (Some(pkg.to_owned()), name.to_owned()),
            None => (None, full_name),
        };
        let mut args = Map::new();
        let mut config = Map::new();
        let mut custom_name = None;
        if let Some(a) = args_node.filter(|a| !a.is_null()) {
            self.expect_map(a, "test arguments")?;
            for (key, value) in a.entries() {
                match key.name.as_str() {
                    "config" => {
                        for (k, v) in value.entries() {
                            merge_config(&mut config, &k.name, v.to_json());
                        }
                    }
                    "arguments" => {
                        for (k, v) in value.entries() {
                            args.insert(k.name.clone(), v.to_json());
                        }
                    }
                    "name" => custom_name = value.as_str().map(str::to_owned),
                    k if TEST_CONFIG_KEYS.contains(&k) => merge_config(&mut config, k, value.to_json()),
                    k => {
                        args.insert(k.to_owned(), value.to_json());
                    }
                }
            }
        }
        if let Some(c) = column {
            args.entry("column_name").or_insert_with(|| Json::from(c));
        }
        Ok(TestDecl { test_name, package, custom_name, column: column.map(str::to_owned), args, config, origin })
    }

    fn source(&mut self, node: &Node, out: &mut Vec<SourceDecl>) -> Result<(), Box<Diagnostic>> {
        let source = self.name(node, "source")?;
        let mut known: Vec<&str> = SOURCE_KEYS.to_vec();
        known.extend(LOCATION_KEYS);
        self.check_keys(node, &known, "source property");
        let source_config = self.config(node)?;
        let source_location = location(node);
        let schema = node.get("schema").and_then(Node::as_str).map_or_else(|| source.clone(), str::to_owned);
        let mut table_keys: Vec<&str> = TABLE_KEYS.to_vec();
        table_keys.extend(LOCATION_KEYS);
        for table in self.list(node, "tables")? {
            let name = self.name(table, "source table")?;
            self.check_keys(table, &table_keys, "source table property");
            let mut config = source_config.clone();
            for (k, v) in self.config(table)? {
                merge_config(&mut config, &k, v);
            }
            let mut loc = source_location.clone();
            loc.extend(location(table));
            let mut tests = self.tests(table, None)?;
            let (columns, column_tests) = self.columns(table)?;
            tests.extend(column_tests);
            out.push(SourceDecl {
                table: SourceTable {
                    package: None,
                    source: source.clone(),
                    identifier: table
                        .get("identifier")
                        .and_then(Node::as_str)
                        .map_or_else(|| name.clone(), str::to_owned),
                    name,
                    schema: schema.clone(),
                    database: node.get("database").and_then(Node::as_str).map(str::to_owned),
                    description: Self::text(table, "description"),
                    columns,
                    config,
                    location: loc,
                    origin: Origin { file: Arc::clone(self.file), span: table.span.clone() },
                },
                tests,
            });
        }
        Ok(())
    }
}

fn location(node: &Node) -> Map<String, Json> {
    node.entries()
        .iter()
        .filter(|(k, _)| LOCATION_KEYS.contains(&k.name.as_str()))
        .map(|(k, v)| (k.name.clone(), v.to_json()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> (SchemaFile, Vec<Diagnostic>) {
        let mut w = Vec::new();
        let f = SourceFile::new("models/schema.yml", text);
        (parse(&f, &mut w).unwrap(), w)
    }

    #[test]
    fn models_columns_and_tests() {
        let (s, w) = parse_str(
            "version: 2\nmodels:\n  - name: orders\n    description: one row per order\n    config:\n      materialized: table\n    columns:\n      - name: order_id\n        data_type: bigint\n        tests: [unique, not_null]\n      - name: status\n        data_tests:\n          - accepted_values:\n              values: ['placed', 'shipped']\n              config:\n                severity: warn\n      - name: customer_id\n        tests:\n          - relationships:\n              to: ref('customers')\n              field: customer_id\n",
        );
        assert!(w.is_empty(), "{w:?}");
        let m = &s.models[0];
        assert_eq!(m.name, "orders");
        assert_eq!(m.config["materialized"], "table");
        assert_eq!(m.columns[0].data_type.as_deref(), Some("bigint"));
        let names: Vec<_> = m.tests.iter().map(|t| (t.test_name.as_str(), t.column.as_deref())).collect();
        assert_eq!(
            names,
            vec![
                ("unique", Some("order_id")),
                ("not_null", Some("order_id")),
                ("accepted_values", Some("status")),
                ("relationships", Some("customer_id"))
            ]
        );
        assert_eq!(m.tests[2].config["severity"], "warn");
        assert_eq!(m.tests[3].args["to"], "ref('customers')");
    }

    #[test]
    fn sources_carry_location_keys() {
        let (s, _) = parse_str(
            "version: 2\nsources:\n  - name: crm\n    format: csv\n    tables:\n      - name: customers\n        path: data/customers.csv\n        delimiter: ';'\n",
        );
        let t = &s.sources[0].table;
        assert_eq!((t.source.as_str(), t.name.as_str(), t.schema.as_str()), ("crm", "customers", "crm"));
        assert_eq!(t.location["format"], "csv");
        assert_eq!(t.location["path"], "data/customers.csv");
        assert_eq!(t.location["delimiter"], ";");
    }

    #[test]
    fn unknown_keys_warn_with_suggestions() {
        let (_, w) =
            parse_str("version: 2\nmodels:\n  - name: a\n    descripton: x\n    config:\n      materialzed: table\n");
        let helps: Vec<_> = w.iter().map(|d| d.help.clone().unwrap_or_default()).collect();
        assert_eq!(helps, vec!["did you mean `description`?", "did you mean `materialized`?"]);
    }

    #[test]
    fn a_model_entry_that_is_not_a_mapping_is_an_error() {
        let mut w = Vec::new();
        let f = SourceFile::new("models/schema.yml", "models:\n  - just_a_string\n");
        let d = parse(&f, &mut w).unwrap_err();
        assert_eq!(d.code, Code::YamlShape);
        assert_eq!(f.line_col(d.primary.unwrap().range.start).0, 2);
    }
}
