//! Plans models without running them: each model's SQL is planned against
//! its parents' output schemas (schema-only tables), in DAG order, so every
//! output schema is known and every error is found before any row moves.
//!
//! Parents are never inlined as views: on diamond-heavy DAGs recursive view
//! expansion grows exponentially.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use camino::{Utf8Path, Utf8PathBuf};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::{SchemaError, TableReference};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use serde_json::Value as Json;

use super::session::{Engine, FileFormat};
use crate::diagnostic::{Code, Diagnostic, Label, SourceFile};
use crate::manifest::{Manifest, Node, Resource, context_for};
use crate::project::nodes::{SourceTable, TestKind};

/// Where compiled SQL is written, relative to the project root.
pub const COMPILED_DIR: &str = ".ferry/compiled";

/// What planning found.
#[derive(Debug, Default)]
pub struct PlanOutcome {
    /// Output schema of every planned model, seed and source.
    pub schemas: HashMap<usize, SchemaRef>,
    /// Nodes that were planned (in DAG order).
    pub planned: Vec<usize>,
    pub failed: BTreeSet<usize>,
    /// Nodes not planned because an ancestor failed, with that ancestor.
    pub skipped: BTreeMap<usize, usize>,
    pub diagnostics: Vec<Diagnostic>,
}

/// The compiled-SQL path of a template (`.ferry/compiled/models/x.sql`).
pub fn compiled_path(template: &Utf8Path) -> Utf8PathBuf {
    Utf8Path::new(COMPILED_DIR).join(template)
}

/// Plans the `wanted` nodes and every ancestor they need, skipping nodes
/// already `failed` (while rendering) and their descendants.
pub async fn plan(
    engine: &Engine,
    manifest: &Manifest,
    wanted: &BTreeSet<usize>,
    failed: &BTreeSet<usize>,
) -> PlanOutcome {
    let needed = manifest.graph.with_ancestors(wanted.iter().copied());
    let mut out = PlanOutcome { failed: failed.clone(), ..PlanOutcome::default() };
    // Seeds and sources read files to learn their schemas: async, in order.
    for &i in manifest.order.iter().filter(|i| needed.contains(i)) {
        let node = &manifest.nodes[i];
        let result = match &node.resource {
            Resource::Source(s) => register_source(engine, manifest, s).await,
            Resource::Seed(_) => register_seed(engine, manifest, node).await,
            _ => continue,
        };
        if !out.failed.contains(&i) {
            out.record(i, result);
        }
    }
    // Models and singular tests only read schemas already registered: each
    // is planned, in parallel, as soon as its last parent is.
    let plannable: Vec<usize> = manifest
        .order
        .iter()
        .copied()
        .filter(|&i| needed.contains(&i) && is_plannable(&manifest.nodes[i]) && !out.failed.contains(&i))
        .collect();
    for (i, result) in plan_when_ready(engine, manifest, &plannable, &out.failed) {
        out.record(i, result);
    }
    let done: std::collections::HashSet<usize> = out.planned.iter().copied().collect();
    for &i in &plannable {
        if !out.failed.contains(&i) && !done.contains(&i) {
            let root = manifest
                .graph
                .parents(i)
                .iter()
                .find_map(|p| if out.failed.contains(p) { Some(*p) } else { out.skipped.get(p).copied() });
            out.skipped.insert(i, root.unwrap_or(i));
        }
    }
    out
}

fn is_plannable(node: &Node) -> bool {
    match &node.resource {
        Resource::Model { .. } => true,
        Resource::Test(t) => matches!(t.kind, TestKind::Singular { .. }),
        _ => false,
    }
}

/// Plans `nodes` on rayon's pool, each once every parent among `nodes` has
/// planned successfully; a node whose parent failed is never started.
/// Returns results in completion order.
fn plan_when_ready(
    engine: &Engine,
    manifest: &Manifest,
    nodes: &[usize],
    failed: &BTreeSet<usize>,
) -> Vec<(usize, Planned)> {
    let position: HashMap<usize, usize> = nodes.iter().enumerate().map(|(k, &i)| (i, k)).collect();
    let waiting: Vec<AtomicUsize> = nodes
        .iter()
        .map(|&i| {
            let parents = manifest.graph.parents(i);
            let blocked = parents.iter().any(|p| failed.contains(p));
            let pending = parents.iter().filter(|p| position.contains_key(p)).count();
            AtomicUsize::new(if blocked { usize::MAX } else { pending })
        })
        .collect();
    let results = Mutex::new(Vec::with_capacity(nodes.len()));
    let ctx = Scheduler { engine, manifest, position: &position, waiting: &waiting, results: &results };
    rayon::scope(|scope| {
        for (k, &i) in nodes.iter().enumerate() {
            if waiting[k].load(Ordering::Acquire) == 0 {
                scope.spawn(move |scope| ctx.run(i, scope));
            }
        }
    });
    results.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Clone, Copy)]
struct Scheduler<'a> {
    engine: &'a Engine,
    manifest: &'a Manifest,
    position: &'a HashMap<usize, usize>,
    waiting: &'a [AtomicUsize],
    results: &'a Mutex<Vec<(usize, Planned)>>,
}

impl<'a> Scheduler<'a> {
    fn run<'s>(self, i: usize, scope: &rayon::Scope<'s>)
    where
        'a: 's,
    {
        let result = futures::executor::block_on(plan_sql(self.engine, self.manifest, i));
        let ok = result.is_ok();
        self.results.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((i, result));
        if !ok {
            return;
        }
        for &child in self.manifest.graph.children(i) {
            let Some(&k) = self.position.get(&child) else { continue };
            if self.waiting[k].fetch_sub(1, Ordering::AcqRel) == 1 {
                scope.spawn(move |scope| self.run(child, scope));
            }
        }
    }
}

impl PlanOutcome {
    fn record(&mut self, i: usize, result: Planned) {
        match result {
            Ok(Some(schema)) => {
                self.schemas.insert(i, schema);
                self.planned.push(i);
            }
            Ok(None) => self.planned.push(i),
            Err(diags) => {
                self.diagnostics.extend(diags);
                self.failed.insert(i);
            }
        }
    }
}

type Planned = Result<Option<SchemaRef>, Vec<Diagnostic>>;

async fn plan_sql(engine: &Engine, manifest: &Manifest, i: usize) -> Planned {
    let node = &manifest.nodes[i];
    let (Some(template), Some(rendered)) = (node.template(), node.rendered.as_ref()) else {
        return Err(vec![Diagnostic::error(
            Code::SqlPlan,
            format!("`{}` has no rendered SQL; this is a bug, please report it with `-vv` output", node.name),
        )]);
    };
    let compiled = SourceFile::new(compiled_path(&template.path), rendered.sql.as_str());
    let plan = match engine.plan(&rendered.sql).await {
        Ok(plan) => plan,
        Err(e) => return Err(error_diagnostics(&e, manifest, i, &compiled)),
    };
    if !is_query(&plan) {
        return Err(vec![
            Diagnostic::error(Code::NotAQuery, format!("`{}` must be a single SELECT query", node.name))
                .in_file(&template.path)
                .with_note(format!("DataFusion planned it as `{}`", plan.display())),
        ]);
    }
    let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
    if let Resource::Model { .. } = node.resource {
        check_contract(engine, node, &schema).await?;
        engine
            .register_schema_only(TableReference::bare(node.name.as_str()), Arc::clone(&schema))
            .map_err(|e| vec![internal(&e, node)])?;
        return Ok(Some(schema));
    }
    Ok(None)
}

fn is_query(plan: &LogicalPlan) -> bool {
    !matches!(
        plan,
        LogicalPlan::Ddl(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::DescribeTable(_)
            | LogicalPlan::Explain(_)
            | LogicalPlan::Analyze(_)
    )
}

fn internal(e: &DataFusionError, node: &Node) -> Diagnostic {
    Diagnostic::error(Code::SqlPlan, format!("failed to register `{}`: {e}", node.name))
        .with_note("this is a bug, please report it with `-vv` output")
}

/// With `contract: {enforced: true}`, the planned columns must match the
/// declared names and `data_type`s exactly, in order.
async fn check_contract(engine: &Engine, node: &Node, schema: &SchemaRef) -> Result<(), Vec<Diagnostic>> {
    let enforced = node.config.get("contract").and_then(|c| c.get("enforced")).and_then(Json::as_bool).unwrap_or(false);
    if !enforced {
        return Ok(());
    }
    let path = node.path();
    let declared = node.columns();
    let mut problems = Vec::new();
    let planned: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    for col in declared {
        let Some(field) = schema.fields().iter().find(|f| f.name() == &col.name) else {
            problems.push(format!("`{}` is declared but the query does not return it", col.name));
            continue;
        };
        let Some(ty) = &col.data_type else {
            problems.push(format!("`{}` has no `data_type`; an enforced contract needs one per column", col.name));
            continue;
        };
        match engine.sql_type(ty).await {
            Ok(want) if &want == field.data_type() => {}
            Ok(want) => problems.push(format!(
                "`{}` is declared `{ty}` ({want}) but the query returns {}",
                col.name,
                field.data_type()
            )),
            Err(_) => problems.push(format!("`{}` declares an unknown type `{ty}`", col.name)),
        }
    }
    for name in &planned {
        if !declared.iter().any(|c| &c.name == name) {
            problems.push(format!("the query returns `{name}`, which the contract does not declare"));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let mut d = Diagnostic::error(Code::ModelConfig, format!("`{}` does not match its enforced contract", node.name))
        .in_file(&path);
    for p in problems {
        d = d.with_note(p);
    }
    Err(vec![d])
}

async fn register_source(engine: &Engine, manifest: &Manifest, s: &SourceTable) -> Planned {
    let table = TableReference::partial(s.source.as_str(), s.name.as_str());
    let here = Label::new(&s.origin.file, s.origin.span.clone());
    let name = format!("{}.{}", s.source, s.name);
    if s.location.contains_key("connection") {
        return Err(vec![
            Diagnostic::error(
                Code::SourceSchema,
                format!("source `{name}` reads a database, which ferry does not support yet"),
            )
            .with_label(here),
        ]);
    }
    let declared = declared_schema(engine, &s.columns, &s.origin.file.path).await?;
    let Some(path) = s.location.get("path").and_then(Json::as_str) else {
        if let Some(schema) = declared.filter(|_| !s.columns.is_empty()) {
            engine
                .register_schema_only(table, Arc::clone(&schema))
                .map_err(|e| vec![source_error(&name, &e, here.clone())])?;
            return Ok(Some(schema));
        }
        return Err(vec![
            Diagnostic::error(Code::SourceSchema, format!("ferry cannot tell the columns of source `{name}`"))
                .with_label(here)
                .with_help("give the table a `path:` (and `format:`) to read, or `columns:` with a `data_type` each"),
        ]);
    };
    let format_name = s.location.get("format").and_then(Json::as_str).map(str::to_owned).or_else(|| extension_of(path));
    let format = format_name.as_deref().and_then(FileFormat::from_name).ok_or_else(|| {
        vec![
            Diagnostic::error(Code::SourceSchema, format!("source `{name}` has no readable `format`"))
                .with_label(here.clone())
                .with_help(format!(
                    "set `format:` to one of {}",
                    FileFormat::NAMES.map(|n| format!("`{n}`")).join(", ")
                )),
        ]
    })?;
    let full = resolve_path(&manifest.root, path);
    let inferred = engine.infer_schema(&full, format).await.map_err(|e| vec![source_error(&name, &e, here.clone())])?;
    let schema = overlay(&inferred, declared.as_ref());
    engine.register_file(table, &full, format, &schema).await.map_err(|e| vec![source_error(&name, &e, here)])?;
    Ok(Some(schema))
}

async fn register_seed(engine: &Engine, manifest: &Manifest, node: &Node) -> Planned {
    let Resource::Seed(seed) = &node.resource else { return Ok(None) };
    let full = manifest.root.join(&seed.path);
    let err = |e: &DataFusionError| {
        vec![
            Diagnostic::error(Code::SourceSchema, format!("cannot read seed `{}`: {}", seed.name, first_line(e)))
                .in_file(&seed.path),
        ]
    };
    let inferred = engine.infer_schema(&full, FileFormat::Csv).await.map_err(|e| err(&e))?;
    let mut types = Vec::new();
    if let Some(Json::Object(map)) = node.config.get("column_types") {
        for (col, ty) in map {
            let Some(ty) = ty.as_str() else { continue };
            let dt = engine.sql_type(ty).await.map_err(|_| {
                vec![
                    Diagnostic::error(
                        Code::DataType,
                        format!("seed `{}`: unknown type `{ty}` for column `{col}`", seed.name),
                    )
                    .in_file(&seed.path),
                ]
            })?;
            if inferred.field_with_name(col).is_err() {
                return Err(vec![
                    Diagnostic::error(
                        Code::UnknownColumn,
                        format!("`column_types` names `{col}`, which seed `{}` does not have", seed.name),
                    )
                    .in_file(&seed.path)
                    .with_help(
                        crate::diagnostic::did_you_mean(col, inferred.fields().iter().map(|f| f.name().as_str()))
                            .unwrap_or_else(|| "check the CSV header".to_owned()),
                    ),
                ]);
            }
            types.push((col.clone(), dt));
        }
    }
    let declared = Arc::new(Schema::new(types.into_iter().map(|(n, t)| Field::new(n, t, true)).collect::<Vec<_>>()));
    let schema = overlay(&inferred, Some(&declared));
    engine
        .register_file(TableReference::bare(node.name.as_str()), &full, FileFormat::Csv, &schema)
        .await
        .map_err(|e| err(&e))?;
    Ok(Some(schema))
}

/// The declared `data_type`s of columns, as Arrow types.
async fn declared_schema(
    engine: &Engine,
    columns: &[crate::project::nodes::ColumnSpec],
    path: &Utf8Path,
) -> Result<Option<SchemaRef>, Vec<Diagnostic>> {
    let mut fields = Vec::new();
    for c in columns {
        let Some(ty) = &c.data_type else { continue };
        let dt = engine.sql_type(ty).await.map_err(|_| {
            vec![
                Diagnostic::error(Code::DataType, format!("unknown type `{ty}` for column `{}`", c.name)).in_file(path),
            ]
        })?;
        fields.push(Field::new(c.name.clone(), dt, true));
    }
    Ok((!fields.is_empty()).then(|| Arc::new(Schema::new(fields))))
}

/// The inferred schema with declared types replacing inferred ones.
fn overlay(inferred: &SchemaRef, declared: Option<&SchemaRef>) -> SchemaRef {
    let Some(declared) = declared else { return Arc::clone(inferred) };
    let fields: Vec<Field> = inferred
        .fields()
        .iter()
        .map(|f| match declared.field_with_name(f.name()) {
            Ok(d) => Field::new(f.name(), d.data_type().clone(), true),
            Err(_) => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

fn extension_of(path: &str) -> Option<String> {
    let name = path.rsplit('/').next()?;
    let mut parts: Vec<&str> = name.split('.').collect();
    while let Some(last) = parts.pop() {
        if !matches!(last, "gz" | "bz2" | "xz" | "zst") {
            return (!parts.is_empty()).then(|| last.to_owned());
        }
    }
    None
}

fn resolve_path(root: &Utf8Path, path: &str) -> Utf8PathBuf {
    let p = Utf8Path::new(path);
    if p.is_absolute() || path.contains("://") { p.to_owned() } else { root.join(p) }
}

fn source_error(name: &str, e: &DataFusionError, label: Label) -> Diagnostic {
    Diagnostic::error(Code::SourceSchema, format!("cannot read source `{name}`: {}", first_line(e))).with_label(label)
}

fn first_line(e: &DataFusionError) -> String {
    e.find_root().strip_backtrace().lines().next().unwrap_or_default().to_owned()
}

/// Diagnostics for a planning error: one per error in a collection, each
/// pointing into the model file when the position came from its literal
/// text, else into the compiled SQL.
fn error_diagnostics(
    err: &DataFusionError,
    manifest: &Manifest,
    i: usize,
    compiled: &Arc<SourceFile>,
) -> Vec<Diagnostic> {
    err.iter().map(|e| error_diagnostic(e, manifest, i, compiled)).collect()
}

fn error_diagnostic(err: &DataFusionError, manifest: &Manifest, i: usize, compiled: &Arc<SourceFile>) -> Diagnostic {
    let node = &manifest.nodes[i];
    let root = err.find_root();
    let df_diag = err.diagnostic();
    let Classified { code, message, mut help, notes } = classify(root, manifest);
    let generic = matches!(code, Code::SqlPlan);
    let message = match df_diag {
        Some(d) if generic => lower_first(&d.message),
        _ => message,
    };
    if help.is_none() {
        help = df_diag.and_then(|d| d.helps.first()).map(|h| lower_first(&h.message));
    }
    let span = df_diag.and_then(|d| d.span).map(|s| ((s.start.line, s.start.column), (s.end.line, s.end.column)));
    let span = span.or_else(|| parser_position(root).map(|p| (p, p)));
    let mut diag = Diagnostic::error(code, message);
    let template = node.template().cloned();
    match span.and_then(|(start, end)| rendered_range(compiled, start, end)) {
        Some(range) => {
            let mapped = template.as_ref().and_then(|t| {
                let plain = node.rendered.as_ref()?.sql.as_str();
                manifest.templater.source_map(t, &context_for(node), plain)?.range_to_template(range.clone())
            });
            match (mapped, &template) {
                (Some(r), Some(t)) => diag = diag.with_label(Label::new(t, r)),
                _ => {
                    diag = diag.with_label(Label::new(compiled, range));
                    if let Some(t) = &template {
                        diag = diag.with_note(format!("this part of the SQL was produced by Jinja in `{}`", t.path));
                    }
                }
            }
        }
        None => {
            if let Some(t) = &template {
                diag = diag.in_file(&t.path);
            }
        }
    }
    for n in notes {
        diag = diag.with_note(n);
    }
    if let (Some(d), true) = (df_diag, generic) {
        for n in &d.notes {
            diag = diag.with_note(lower_first(&n.message));
        }
    }
    if let Some(h) = help {
        diag = diag.with_help(h);
    }
    diag.with_note(format!("while planning `{}`", node.name))
}

/// What kind of planning error this is, in ferry's words.
struct Classified {
    code: Code,
    message: String,
    help: Option<String>,
    notes: Vec<String>,
}

fn classified(code: Code, message: String, help: Option<String>) -> Classified {
    Classified { code, message, help, notes: Vec::new() }
}

fn classify(root: &DataFusionError, manifest: &Manifest) -> Classified {
    match root {
        DataFusionError::SQL(e, _) => {
            classified(Code::SqlSyntax, format!("SQL syntax error: {}", strip_position(&e.to_string())), None)
        }
        DataFusionError::SchemaError(e, _) => match e.as_ref() {
            SchemaError::FieldNotFound { field, valid_fields } => {
                let mut names: Vec<String> = valid_fields.iter().map(|c| c.flat_name()).collect();
                names.sort();
                names.dedup();
                let help = crate::diagnostic::did_you_mean(&field.name, valid_fields.iter().map(|c| c.name.as_str()));
                let mut c = classified(Code::UnknownColumn, format!("column `{}` not found", field.name), help);
                if !names.is_empty() {
                    let shown: Vec<String> = names.iter().take(20).map(|n| format!("`{n}`")).collect();
                    let more = if names.len() > 20 { format!(" and {} more", names.len() - 20) } else { String::new() };
                    c.notes.push(format!("available columns: {}{more}", shown.join(", ")));
                }
                c
            }
            other => classified(Code::SqlPlan, other.to_string(), None),
        },
        DataFusionError::Plan(msg) if msg.starts_with("table '") && msg.ends_with("' not found") => {
            let full = msg.trim_start_matches("table '").trim_end_matches("' not found");
            let table = full.strip_prefix("datafusion.public.").unwrap_or(full);
            let bare = table.rsplit('.').next().unwrap_or(table);
            let models = manifest
                .nodes
                .iter()
                .filter(|n| matches!(n.resource, Resource::Model { .. } | Resource::Seed(_)))
                .map(|n| n.name.as_str());
            let help = match crate::diagnostic::closest(bare, models) {
                Some(m) => format!("refer to models with `{{{{ ref('{m}') }}}}`"),
                None => {
                    "refer to models with `{{ ref('name') }}` and to sources with `{{ source('source', 'table') }}`"
                        .to_owned()
                }
            };
            classified(Code::UnknownTable, format!("table `{table}` not found"), Some(help))
        }
        other => classified(Code::SqlPlan, other.strip_backtrace().lines().next().unwrap_or_default().to_owned(), None),
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) if c.clone().next().is_some_and(char::is_lowercase) => f.to_lowercase().chain(c).collect(),
        _ => s.to_owned(),
    }
}

/// sqlparser ends messages with `at Line: 3, Column: 14`.
fn parser_position(root: &DataFusionError) -> Option<(u64, u64)> {
    let DataFusionError::SQL(e, _) = root else { return None };
    let msg = e.to_string();
    let at = msg.rfind("Line: ")?;
    let rest = &msg[at + 6..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let col: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((line.trim().parse().ok()?, col.parse().ok()?))
}

fn strip_position(msg: &str) -> String {
    let msg = msg.strip_prefix("sql parser error: ").unwrap_or(msg);
    match msg.rfind(" at Line: ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

fn rendered_range(compiled: &SourceFile, start: (u64, u64), end: (u64, u64)) -> Option<std::ops::Range<usize>> {
    let to_usize = |(l, c): (u64, u64)| Some((usize::try_from(l).ok()?, usize::try_from(c).ok()?));
    let (sl, sc) = to_usize(start)?;
    if sl == 0 {
        return None;
    }
    let s = compiled.offset_of(sl, sc)?;
    let e = to_usize(end).and_then(|(el, ec)| compiled.offset_of(el, ec)).filter(|&e| e > s);
    let e = e.unwrap_or_else(|| {
        let rest = &compiled.text[s..];
        s + rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len()).max(1).min(rest.len())
    });
    Some(s..e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_skips_compression_suffixes() {
        assert_eq!(extension_of("data/a.csv.gz").as_deref(), Some("csv"));
        assert_eq!(extension_of("data/a.parquet").as_deref(), Some("parquet"));
        assert_eq!(extension_of("data/dir"), None);
    }

    #[test]
    fn lower_first_keeps_acronyms() {
        assert_eq!(lower_first("Column 'x' not found"), "column 'x' not found");
        assert_eq!(lower_first("SQL error"), "SQL error");
    }
}
