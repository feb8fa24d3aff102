//! Plans models without running them: each model's SQL is planned against
//! its parents' output schemas (schema-only tables), in DAG order, so every
//! output schema is known and every error is found before any row moves.
//! A model's contract and the query that checks its rules are planned too.
//!
//! Parents are never inlined as views: on diamond-heavy DAGs recursive view
//! expansion grows exponentially.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::TableReference;
use datafusion::logical_expr::LogicalPlan;

use crate::backend::postgres;
use crate::dag::Id as _;
use crate::diagnostic::{Code, Diagnostic, SourceFile};
use crate::engine::sources::first_line;
use crate::engine::{Engine, Registered, diagnose, node as engine_node, sources};
use crate::manifest::{Manifest, Node, NodeId, Resource};
use crate::project::nodes::{Test, TestKind};
use crate::state::Layout;
use crate::template::Rendered;
use crate::template::functions::Relation;
use crate::template::introspect::{ColumnInfo, Introspector, QueryResult};
use crate::validate::rules::{self, checked_sql};

use super::{drift, snapshot};
use crate::state::source_schemas::SourceSchemas;

/// What planning found.
#[derive(Debug, Default)]
pub struct PlanOutcome {
    /// Output schema of every planned model, seed and source.
    pub schemas: HashMap<NodeId, SchemaRef>,
    /// Nodes that were planned (in DAG order).
    pub planned: Vec<NodeId>,
    pub failed: BTreeSet<NodeId>,
    /// Where in `diagnostics` each failed node's are.
    pub failures: HashMap<NodeId, std::ops::Range<usize>>,
    /// Nodes not planned because an ancestor failed, with that ancestor.
    pub skipped: BTreeMap<NodeId, NodeId>,
    pub diagnostics: Vec<Diagnostic>,
    /// Nodes rendered again once their parents were planned (their first
    /// render asked about a relation's columns): the SQL that was planned,
    /// which the run must use (see [`apply_renders`]).
    pub rendered: HashMap<NodeId, Rendered>,
    /// Nodes planned only when they run: a model whose SQL queries, while
    /// rendering, the rows of a model this run builds (`run_query`,
    /// `statement`, `dbt_utils.get_column_values(ref(...))`), and every
    /// node downstream of it. See [`plan_late`].
    pub late: BTreeMap<NodeId, Late>,
}

/// Why a node is planned when it runs, not before the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Late {
    /// The node whose render queries a model's rows (this node, or an
    /// ancestor).
    pub root: NodeId,
    /// The model it queries.
    pub reads: String,
}

/// Plans the `wanted` nodes and every ancestor they need, skipping nodes
/// already `failed` (while rendering) and their descendants. With the
/// source schemas of the last successful run (`drift`), each source is
/// checked for schema drift (see [`drift`]).
pub async fn plan(
    engine: &Engine,
    manifest: &Manifest,
    (wanted, failed): (&BTreeSet<NodeId>, &BTreeSet<NodeId>),
    drift: Option<&SourceSchemas>,
) -> PlanOutcome {
    let needed = manifest.graph.with_ancestors(wanted.iter().copied());
    let mut out = PlanOutcome { failed: failed.clone(), ..PlanOutcome::default() };
    // Seeds and sources read files to learn their schemas: async, in order.
    for &i in manifest.order.iter().filter(|i| needed.contains(i)) {
        let node = &manifest[i];
        let result = match &node.resource {
            Resource::Source(s) => match (sources::register_source(engine, manifest, s).await, drift) {
                (Ok(Some(schema)), Some(previous)) => match drift::check(&node.unique_id, s, &schema, previous) {
                    Ok(warnings) => {
                        out.diagnostics.extend(warnings);
                        Ok(Some(schema))
                    }
                    Err(errors) => Err(errors),
                },
                (registered, _) => registered,
            },
            Resource::Seed(_) => sources::register_seed(engine, manifest, node).await,
            _ => continue,
        };
        let result = match result {
            Ok(Some(_)) if engine.masked() => mask(engine, node).await,
            other => other,
        };
        if !out.failed.contains(&i) {
            out.record(i, result);
        }
    }
    // Models and singular tests only read schemas already registered: each
    // is planned, in parallel, as soon as its last parent is.
    let plannable: Vec<NodeId> = manifest
        .order
        .iter()
        .copied()
        .filter(|&i| needed.contains(&i) && is_plannable(&manifest[i]) && !out.failed.contains(&i))
        .collect();
    for (i, step) in plan_when_ready(engine, manifest, &plannable, &out.failed) {
        match step {
            Step::Planned(result, rendered) => {
                if let Some(r) = rendered {
                    out.rendered.insert(i, *r);
                }
                out.record(i, result);
            }
            Step::Late(reads) => {
                out.late.insert(i, Late { root: i, reads });
            }
        }
    }
    let done: std::collections::HashSet<NodeId> = out.planned.iter().copied().collect();
    // In DAG order, so that a node's parents are settled before it.
    for &i in &plannable {
        if out.failed.contains(&i) || done.contains(&i) || out.late.contains_key(&i) {
            continue;
        }
        match (out.blocker(manifest, i), out.late_parent(manifest, i)) {
            (None, Some(late)) => {
                out.late.insert(i, late);
            }
            (root, _) => {
                out.skipped.insert(i, root.unwrap_or(i));
            }
        }
    }
    // A unit test needs its inputs' and its model's planned schemas.
    for &i in manifest.order.iter().filter(|&&i| needed.contains(&i) && is_unit_test(&manifest[i])) {
        if let Some(root) = out.blocker(manifest, i) {
            out.skipped.insert(i, root);
        } else if let Some(late) = out.late_parent(manifest, i) {
            let (node, model) = (&manifest[i], &manifest[late.root]);
            out.diagnostics.push(
                Diagnostic::error(
                    Code::SqlPlan,
                    format!(
                        "unit test `{}` cannot run: `{}` queries the rows of `{}` while rendering, which exist only once this run builds them",
                        node.name, model.name, late.reads
                    ),
                )
                .in_file(node.path())
                .with_help("give the unit test `overrides:` for the macro that runs the query, as dbt asks"),
            );
            out.failed.insert(i);
        }
    }
    out
}

impl PlanOutcome {
    /// The failed node that keeps `i` from planning: a parent that failed,
    /// or the one that a skipped parent waits on.
    fn blocker(&self, manifest: &Manifest, i: NodeId) -> Option<NodeId> {
        let parents = manifest.graph.parents(i);
        parents.iter().find_map(|p| if self.failed.contains(p) { Some(*p) } else { self.skipped.get(p).copied() })
    }

    /// The late parent `i` waits on, if any (see [`PlanOutcome::late`]).
    fn late_parent(&self, manifest: &Manifest, i: NodeId) -> Option<Late> {
        manifest.graph.parents(i).iter().find_map(|p| self.late.get(p).cloned())
    }
}

fn is_unit_test(node: &Node) -> bool {
    matches!(&node.resource, Resource::Test(Test { kind: TestKind::Unit { .. }, .. }))
}

fn is_plannable(node: &Node) -> bool {
    match &node.resource {
        Resource::Model { .. } => true,
        // A unit test plans nothing of its own: it runs its model's SQL.
        Resource::Test(Test { kind: TestKind::Unit { .. }, .. }) => false,
        Resource::Test(_) => node.rendered.is_some(),
        _ => false,
    }
}

/// Runs `f` on the pool models are planned on: rayon's threads with
/// stacks deep enough for the expressions [`crate::engine::depth`] lets
/// through (on the caller's pool if those threads cannot start).
fn on_planners<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("ferry-plan-{i}"))
            .stack_size(crate::engine::depth::STACK_BYTES)
            .build()
            .inspect_err(|e| tracing::warn!("cannot start the planning threads, planning on rayon's: {e}"))
            .ok()
    });
    match pool {
        Some(pool) => pool.install(f),
        None => f(),
    }
}

/// Plans `nodes` on the planning pool, each once every parent among `nodes` has
/// planned successfully; a node whose parent failed is never started.
/// Returns results in completion order.
fn plan_when_ready(
    engine: &Engine,
    manifest: &Manifest,
    nodes: &[NodeId],
    failed: &BTreeSet<NodeId>,
) -> Vec<(NodeId, Step)> {
    let position: HashMap<NodeId, usize> = nodes.iter().enumerate().map(|(k, &i)| (i, k)).collect();
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
    let handle = tokio::runtime::Handle::current();
    let ctx =
        Scheduler { engine, manifest, position: &position, waiting: &waiting, results: &results, handle: &handle };
    on_planners(|| {
        rayon::scope(|scope| {
            for (k, &i) in nodes.iter().enumerate() {
                if waiting[k].load(Ordering::Acquire) == 0 {
                    scope.spawn(move |scope| ctx.run(i, scope));
                }
            }
        });
    });
    results.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Clone, Copy)]
struct Scheduler<'a> {
    engine: &'a Engine,
    manifest: &'a Manifest,
    position: &'a HashMap<NodeId, usize>,
    waiting: &'a [AtomicUsize],
    results: &'a Mutex<Vec<(NodeId, Step)>>,
    handle: &'a tokio::runtime::Handle,
}

/// What planning made of one node.
enum Step {
    /// Its planning result, with its render if it was rendered again.
    Planned(Registered, Option<Box<Rendered>>),
    /// Its render queries the rows of this model, which the run builds:
    /// it is planned when it runs.
    Late(String),
}

impl<'a> Scheduler<'a> {
    fn run<'s>(self, i: NodeId, scope: &rayon::Scope<'s>)
    where
        'a: 's,
    {
        let rendered = render_again(self.engine, self.manifest, i, self.handle, When::Planning).map(|r| {
            futures::executor::block_on(masked_render(self.engine, &self.manifest[i], r))
                .map_err(|d| Unrendered::Failed(Box::new(d)))
        });
        let step = match rendered.and_then(|r| r) {
            Ok(rendered) => Step::Planned(
                futures::executor::block_on(plan_sql(self.engine, self.manifest, i, rendered.as_ref())),
                rendered.map(Box::new),
            ),
            Err(Unrendered::Failed(d)) => Step::Planned(Err(vec![*d]), None),
            Err(Unrendered::Late(reads)) => Step::Late(reads),
        };
        let ok = matches!(step, Step::Planned(Ok(_), _));
        self.results.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((i, step));
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
    fn record(&mut self, i: NodeId, result: Registered) {
        match result {
            Ok(Some(schema)) => {
                self.schemas.insert(i, schema);
                self.planned.push(i);
            }
            Ok(None) => self.planned.push(i),
            Err(diags) => {
                let start = self.diagnostics.len();
                self.diagnostics.extend(diags);
                self.failures.insert(i, start..self.diagnostics.len());
                self.failed.insert(i);
            }
        }
    }
}

/// Masks source or seed `node`'s registered table as its columns'
/// `mask:` policies say (in a masked run); the schema its readers see.
async fn mask(engine: &Engine, node: &Node) -> Registered {
    let policies = node.mask_policies();
    let table = sources::table_of(node);
    let failed = |e: &dyn std::fmt::Display| {
        let d = Diagnostic::error(Code::SourceSchema, format!("cannot mask `{}`: {e}", node.display_name()));
        vec![match &node.resource {
            Resource::Source(s) => d.with_label(crate::diagnostic::Label::new(&s.origin.file, s.origin.span.clone())),
            _ => d.in_file(node.path()),
        }]
    };
    engine.mask_table(&table, &policies).await.map_err(|e| failed(&e.strip_backtrace()))?;
    Ok(engine.table_schema(table).await)
}

/// Renders node `i` again if its first render was deferred (it asked about
/// a relation's columns or ran a query), now that its parents' schemas are
/// registered.
pub(super) fn render_planned(
    engine: &Engine,
    manifest: &Manifest,
    i: NodeId,
    handle: &tokio::runtime::Handle,
) -> Result<Option<Rendered>, Box<Diagnostic>> {
    render_again(engine, manifest, i, handle, When::Running).map_err(Unrendered::into_diagnostic)
}

/// When a node is rendered again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    /// Before any row moves: a query may read only what holds rows already.
    Planning,
    /// As the node runs, its parents built.
    Running,
}

/// Why a node was not rendered again.
enum Unrendered {
    Failed(Box<Diagnostic>),
    /// While planning, its render queried the rows of this model.
    Late(String),
}

impl Unrendered {
    fn into_diagnostic(self) -> Box<Diagnostic> {
        match self {
            Unrendered::Failed(d) => d,
            // Only planning defers a node; once running, the query's error says why.
            Unrendered::Late(reads) => {
                Box::new(Diagnostic::error(Code::SqlPlan, format!("the query reads `{reads}`, which has no rows yet")))
            }
        }
    }
}

fn render_again(
    engine: &Engine,
    manifest: &Manifest,
    i: NodeId,
    handle: &tokio::runtime::Handle,
    when: When,
) -> Result<Option<Rendered>, Unrendered> {
    if !manifest[i].rendered.as_ref().is_some_and(|r| r.deferred) {
        return Ok(None);
    }
    let relations = manifest.nodes.iter().filter_map(|n| n.relation.clone()).collect();
    let introspector =
        Arc::new(PlanTime { engine: engine.clone(), handle: handle.clone(), relations, unbuilt: Mutex::default() });
    let result = manifest.render_planned(i, Arc::clone(&introspector) as Arc<dyn Introspector>);
    let unbuilt = introspector.unbuilt.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    match (result, unbuilt) {
        (Ok(rendered), _) => Ok(Some(rendered)),
        (Err(_), Some(reads)) if when == When::Planning => Err(Unrendered::Late(reads)),
        (Err(d), _) => Err(Unrendered::Failed(d)),
    }
}

/// Plans late node `i` (see [`PlanOutcome::late`]) as it runs, its
/// parents built: renders it again if it asks about the data, then plans
/// and checks it as [`plan`] does. Its new render, if any, is the SQL the
/// run uses. Call it off the async runtime's threads (its queries block).
pub fn plan_late(
    engine: &Engine,
    manifest: &Manifest,
    i: NodeId,
    handle: &tokio::runtime::Handle,
) -> Result<Option<Rendered>, Vec<Diagnostic>> {
    let rendered = render_again(engine, manifest, i, handle, When::Running).map_err(|e| vec![*e.into_diagnostic()])?;
    let rendered = handle.block_on(masked_render(engine, &manifest[i], rendered)).map_err(|d| vec![d])?;
    handle.block_on(plan_sql(engine, manifest, i, rendered.as_ref()))?;
    Ok(rendered)
}

/// In a masked run, model `node`'s render (`rendered`, else its own) with
/// its SQL wrapped in a query that masks its `mask:` columns, as a source's
/// are masked where they enter; once: a masked render is left as it is.
/// A query that does not plan is left for [`plan_sql`] to report.
pub(super) async fn masked_render(
    engine: &Engine,
    node: &Node,
    rendered: Option<Rendered>,
) -> Result<Option<Rendered>, Diagnostic> {
    if !matches!(node.resource, Resource::Model { .. }) {
        return Ok(rendered);
    }
    let policies = node.mask_policies();
    if !engine.masked() || policies.is_empty() {
        return Ok(rendered);
    }
    let Some(mut r) = rendered.or_else(|| node.rendered.clone()).filter(|r| !r.masked) else { return Ok(None) };
    let Ok(plan) = engine.plan(&r.sql).await else { return Ok(Some(r)) };
    let fields: Vec<(String, datafusion::arrow::datatypes::DataType)> =
        plan.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
    let list = crate::mask::select_list(&fields, &policies).map_err(|e| {
        Diagnostic::error(Code::SqlPlan, format!("cannot mask `{}`: {e}", node.name)).in_file(node.path())
    })?;
    let query = r.sql.trim_end().trim_end_matches(';');
    r.sql = format!("SELECT {list} FROM (\n{query}\n) AS __ferry_masked");
    r.masked = true;
    Ok(Some(r))
}

/// Answers a render's questions: a relation's columns from the schemas
/// registered in the engine (while planning, a parent's planned columns,
/// with the types PostgreSQL would give them: ferry's dispatch family),
/// and queries over what holds rows (while planning: seeds, sources,
/// constants; once running, the node's built parents too).
struct PlanTime {
    engine: Engine,
    handle: tokio::runtime::Handle,
    relations: Vec<Arc<Relation>>,
    /// The model without rows that a query read, if one did.
    unbuilt: Mutex<Option<String>>,
}

/// The most rows a query while rendering may return.
const MAX_QUERY_ROWS: usize = 100_000;

impl std::fmt::Debug for PlanTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlanTime")
    }
}

impl Introspector for PlanTime {
    fn columns(&self, relation: &str) -> Option<Vec<ColumnInfo>> {
        use futures::FutureExt;
        let table = TableReference::parse_str(relation.trim());
        // Registered tables are in memory catalogs: the lookup is ready at once.
        let schema = self.engine.table_schema(table).now_or_never().flatten()?;
        Some(column_infos(&schema))
    }

    fn relation(&self, schema: Option<&str>, identifier: &str) -> Option<Arc<Relation>> {
        let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        self.relations
            .iter()
            .find(|r| same(&r.identifier, identifier) && schema.is_none_or(|s| same(&r.schema, s)))
            .cloned()
    }

    fn query(&self, sql: &str) -> Result<QueryResult, String> {
        let (engine, sql) = (self.engine.clone(), sql.to_owned());
        let (relations, unbuilt) = (self.relations.clone(), &self.unbuilt);
        let run = async move {
            if sql.to_ascii_lowercase().contains("information_schema") {
                register_information_schema(&engine, &relations)
                    .await
                    .map_err(|e| format!("cannot list the relations: {}", first_line(&e)))?;
            }
            let plan = engine.plan(&sql).await.map_err(|e| format!("the query failed to plan: {}", first_line(&e)))?;
            if let Some(table) = unbuilt_table(&plan) {
                let why = format!(
                    "the query reads `{table}`, which is not built yet: a model queried while rendering must be an ancestor (add `-- depends_on: {{{{ ref('{table}') }}}}`)"
                );
                *unbuilt.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(table);
                return Err(why);
            }
            let schema = Arc::new(plan.schema().as_arrow().clone());
            let mut stream = engine.execute(plan).await.map_err(|e| format!("the query failed: {}", first_line(&e)))?;
            let mut batches = Vec::new();
            let mut rows = 0;
            while let Some(batch) = futures::StreamExt::next(&mut stream).await {
                let batch = batch.map_err(|e| format!("the query failed: {}", first_line(&e)))?;
                rows += batch.num_rows();
                if rows > MAX_QUERY_ROWS {
                    return Err(format!("the query returned more than {MAX_QUERY_ROWS} rows"));
                }
                batches.push(batch);
            }
            Ok(QueryResult { columns: column_infos(&schema), rows: json_rows(&schema, &batches)? })
        };
        match tokio::runtime::Handle::try_current() {
            Ok(_) => tokio::task::block_in_place(|| self.handle.block_on(run)),
            Err(_) => self.handle.block_on(run),
        }
    }
}

/// `<database>.information_schema.tables` as the warehouse would answer it,
/// for the packages that find relations by pattern (dbt-utils'
/// `get_relations_by_pattern` and `get_relations_by_prefix`): one row per
/// relation of the project (model, seed, snapshot or source) that the engine
/// holds now, named as dbt names it (its database, schema and identifier),
/// with `table_type` `BASE TABLE` or `VIEW`. Queried while a model renders,
/// it lists what exists at that point, as a warehouse does mid-run.
async fn register_information_schema(
    engine: &Engine,
    relations: &[Arc<Relation>],
) -> Result<(), datafusion::error::DataFusionError> {
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::datasource::TableType;
    let mut by_database: BTreeMap<&str, Vec<[&str; 4]>> = BTreeMap::new();
    for r in relations {
        let Some(provider) = engine.table_provider(TableReference::parse_str(&r.rendered)).await else { continue };
        let kind = if provider.table_type() == TableType::View { "VIEW" } else { "BASE TABLE" };
        by_database.entry(&r.database).or_default().push([&r.database, &r.schema, &r.identifier, kind]);
    }
    let names = ["table_catalog", "table_schema", "table_name", "table_type"];
    let schema = Arc::new(Schema::new(names.map(|n| Field::new(n, DataType::Utf8, false)).to_vec()));
    for (database, rows) in by_database {
        let columns =
            (0..4).map(|c| Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r[c]))) as _).collect::<Vec<_>>();
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
        let table = datafusion::datasource::MemTable::try_new(Arc::clone(&schema), vec![vec![batch]])?;
        engine.register_in_catalog((database, "information_schema", "tables"), Arc::new(table))?;
    }
    Ok(())
}

fn column_infos(schema: &SchemaRef) -> Vec<ColumnInfo> {
    schema
        .fields()
        .iter()
        .map(|f| ColumnInfo { name: f.name().clone(), data_type: postgres::sql_type(f.data_type()) })
        .collect()
}

/// A table the plan scans that has only a schema so far (a model not yet built).
fn unbuilt_table(plan: &LogicalPlan) -> Option<String> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut found = None;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(provider) = datafusion::datasource::source_as_provider(&scan.source)
            && provider.is::<datafusion::datasource::empty::EmptyTable>()
        {
            found = Some(scan.table_name.to_string());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Every row as JSON values, in column order.
fn json_rows(
    schema: &SchemaRef,
    batches: &[datafusion::arrow::record_batch::RecordBatch],
) -> Result<Vec<Vec<serde_json::Value>>, String> {
    let mut out = Vec::new();
    let mut writer =
        arrow_json::WriterBuilder::new().with_explicit_nulls(true).build::<_, arrow_json::writer::JsonArray>(&mut out);
    writer.write_batches(&batches.iter().collect::<Vec<_>>()).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    if out.is_empty() {
        return Ok(Vec::new());
    }
    let objects: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_slice(&out).map_err(|e| e.to_string())?;
    Ok(objects
        .into_iter()
        .map(|mut o| schema.fields().iter().map(|f| o.remove(f.name()).unwrap_or_default()).collect())
        .collect())
}

/// The manifest with the renders that planning made in place of the first.
pub fn apply_renders(manifest: &Arc<Manifest>, outcome: &PlanOutcome) -> Arc<Manifest> {
    with_renders(manifest, &outcome.rendered)
}

/// The manifest with `renders` in place of those nodes' renders.
pub fn with_renders(manifest: &Arc<Manifest>, renders: &HashMap<NodeId, Rendered>) -> Arc<Manifest> {
    if renders.is_empty() {
        return Arc::clone(manifest);
    }
    let mut m = (**manifest).clone();
    for (&i, rendered) in renders {
        m.nodes[i.index()].rendered = Some(rendered.clone());
    }
    Arc::new(m)
}

async fn plan_sql(engine: &Engine, manifest: &Manifest, i: NodeId, again: Option<&Rendered>) -> Registered {
    let node = &manifest[i];
    let (Some(compiled), Some(rendered)) = (node.compiled_name(), again.or(node.rendered.as_ref())) else {
        return Err(vec![Diagnostic::error(
            Code::SqlPlan,
            format!("`{}` has no rendered SQL; this is a bug, please report it with `-vv` output", node.name),
        )]);
    };
    let plan = match engine.plan(&rendered.sql).await {
        Ok(plan) => plan,
        Err(e) => {
            let compiled = SourceFile::new(Layout::compiled(&compiled), rendered.sql.as_str());
            return Err(diagnose::error_diagnostics(&e, manifest, i, &compiled));
        }
    };
    if !is_query(&plan) {
        return Err(vec![
            Diagnostic::error(Code::NotAQuery, format!("`{}` must be a single SELECT query", node.name))
                .in_file(node.path())
                .with_note(format!("DataFusion planned it as `{}`", plan.display())),
        ]);
    }
    let mut schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
    let mut sql = std::borrow::Cow::Borrowed(rendered.sql.as_str());
    if let Some(first) = snapshot_first_sql(node, &sql, &schema)? {
        let plan = engine.plan(&first).await.map_err(|e| vec![engine_node::internal(&e, node, Code::SqlPlan)])?;
        schema = Arc::new(plan.schema().as_arrow().clone());
        sql = std::borrow::Cow::Owned(first);
    }
    if let Resource::Model { .. } = node.resource {
        check_contract(engine, node, &schema).await?;
        check_config(node, &schema)?;
        check_rules(engine, node, &sql).await?;
        engine
            .register_schema_only(TableReference::bare(node.name.as_str()), Arc::clone(&schema))
            .map_err(|e| vec![engine_node::internal(&e, node, Code::SqlPlan)])?;
        return Ok(Some(schema));
    }
    Ok(None)
}

/// A snapshot's first-run SQL around its query (whose columns are
/// `source`), planned in its place so that its readers see the meta
/// columns; `None` for any other node. Its settings and their columns are
/// checked here, before any row moves.
fn snapshot_first_sql(node: &Node, query: &str, source: &SchemaRef) -> Result<Option<String>, Vec<Diagnostic>> {
    let settings = match &node.config.snapshot {
        Ok(None) => return Ok(None),
        Ok(Some(s)) => s,
        Err(d) => return Err(vec![(**d).clone()]),
    };
    snapshot::check_source(&node.name, settings, source).map_err(|d| vec![(*d).in_file(node.path())])?;
    Ok(Some(snapshot::first_sql(query, settings, &snapshot::now_literal(chrono::Utc::now()))))
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

/// Plans the query that checks a model's rules; a rule that does not plan
/// (an unknown column, a type that cannot compare) points at its declaration.
async fn check_rules(engine: &Engine, node: &Node, sql: &str) -> Result<(), Vec<Diagnostic>> {
    if !node.is_checked() {
        return Ok(());
    }
    let checks = rules::checks(&node.config.rules);
    let all = checked_sql(sql, &checks, node.config.dedupe.as_ref());
    if engine.plan(&all).await.is_ok() {
        return Ok(());
    }
    let mut diags = Vec::new();
    for check in &checks {
        if let Err(e) = engine.plan(&checked_sql(sql, std::slice::from_ref(check), None)).await {
            let root = e.find_root().strip_backtrace();
            let first = root.lines().next().unwrap_or_default().to_owned();
            diags.push(
                Diagnostic::error(
                    Code::SqlPlan,
                    format!("rule `{}` of `{}` cannot be checked: {first}", check.rule.name, node.name),
                )
                .with_label(check.rule.origin.name_label())
                .with_note(format!("it checks `{}`", check.broken)),
            );
        }
    }
    if diags.is_empty() {
        let e = engine.plan(&all).await.err().map(|e| e.find_root().strip_backtrace()).unwrap_or_default();
        let first = e.lines().next().unwrap_or_default();
        diags.push(
            Diagnostic::error(Code::SqlPlan, format!("the `dedupe` of `{}` cannot be applied: {first}", node.name))
                .in_file(node.path())
                .with_help("`dedupe.key` names the model's columns; `keep.order_by` is a SQL ORDER BY list"),
        );
    }
    Err(diags)
}

/// Every config value that can be checked before a row moves: settings
/// that did not parse (`quarantine`, `load`, `reconcile`), and the column
/// lists (`dedupe.key`, `unique_key`) against the model's planned columns.
/// Each points at the value where the model sets it.
fn check_config(node: &Node, schema: &SchemaRef) -> Result<(), Vec<Diagnostic>> {
    let config = &node.config;
    let mut diags = Vec::new();
    if let Err(d) = &config.quarantine {
        diags.push(match node.config_label("error_if", None) {
            Some(label) => Diagnostic { primary: Some(label), file: None, ..*d.clone() },
            None => *d.clone(),
        });
    }
    diags.extend(
        [config.load.as_ref().err(), config.reconcile.as_ref().err(), config.change_detection.as_ref().err()]
            .into_iter()
            .flatten()
            .map(|d| *d.clone()),
    );
    let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let mut named = |key: &str, what: &str, names: &[String]| {
        for name in names.iter().filter(|n| !columns.contains(&n.as_str())) {
            let mut d = Diagnostic::error(
                Code::ModelConfig,
                format!("`{what}` of `{}` names `{name}`, which the model does not return", node.name),
            );
            d = match node.config_label(key, Some(name)) {
                Some(label) => d.with_label(label),
                None => d.in_file(node.path()),
            };
            let help = match crate::diagnostic::did_you_mean(name, columns.iter().copied()) {
                Some(mean) => mean,
                None => format!(
                    "the model returns {}",
                    columns.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
                ),
            };
            diags.push(d.with_help(help));
        }
    };
    if let Some(dedupe) = &config.dedupe {
        named("dedupe", "dedupe.key", &dedupe.key);
    }
    named("unique_key", "unique_key", &config.unique_key);
    if diags.is_empty() { Ok(()) } else { Err(diags) }
}

/// With `contract: {enforced: true}`, the planned columns must match the
/// declared names and `data_type`s exactly, in order.
async fn check_contract(engine: &Engine, node: &Node, schema: &SchemaRef) -> Result<(), Vec<Diagnostic>> {
    if !node.config.contract_enforced {
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
