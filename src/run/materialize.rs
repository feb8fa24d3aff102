//! Materializes one planned node: re-plans its SQL against its parents'
//! live tables, then runs it. A `table` is streamed into a Parquet stage
//! (through its rules, when it has any) and registered from there; a
//! `view` or `ephemeral` is registered as a view (inlined into its
//! readers), except a view that several models read, which is computed once
//! into scratch Parquet so that diamond-shaped DAGs do not re-expand it into
//! every plan. Seeds are staged from their CSV.
//!
//! Scheduling (what runs when) is not this module's business.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::TableReference;

use super::change;
use super::incremental::{self, CursorRun, IncrementalRun, Mode, SchemaChange};
use super::microbatch::Window;
use super::plan;
use super::snapshot;
use crate::backend::ColumnSync;
use crate::diagnostic::{Code, Diagnostic};
use crate::engine::{Engine, node as engine_node};
use crate::manifest::config::{ChangeDetection, Deletes, OnConversionError, OnSchemaChange, Strategy};
use crate::manifest::rules::Rule;
use crate::manifest::{Manifest, Materialization, Node, NodeId, Resource};
use crate::project::nodes::Origin;
use crate::stage::{self, Root, StageError, StageOptions, StagedTable};
use crate::state::{Ledger, RunDir};
use crate::template::functions::quote_ident;
use crate::validate::checked::{CheckedRun, stage_checked};
use crate::validate::{conversions, rules};

/// Where a run's nodes are materialized.
#[derive(Debug, Clone)]
pub struct Places {
    /// `.ferry/stage`, or the project's `stage_dir`: staged tables and seeds.
    pub stage_root: Root,
    /// Scratch space for views computed once, removed after the run: under
    /// `.ferry/tmp/`, or beside the stages in an object store.
    pub scratch_root: Root,
    pub stage_options: StageOptions,
    /// Views read by more than one model in this run.
    pub compute_once: HashSet<NodeId>,
    /// This run's id and directory (`.ferry/runs/<id>/`: quarantine and
    /// error log).
    pub run_id: String,
    pub run_dir: RunDir,
    /// How each incremental model runs.
    pub incremental: HashMap<NodeId, IncrementalRun>,
    /// Where change-detected models' row hashes are kept (see
    /// [`change::hashes_root`]).
    pub hashes_root: Root,
}

impl Places {
    /// Where an incremental model's next version is staged apart from its
    /// stage until its load commits: under the run's directory, or, with
    /// the stages in an object store, as a version of its stage pending,
    /// which every machine reads.
    pub fn next_root(&self) -> Root {
        match self.stage_root.stored() {
            Some(root) => Root::Pending(root.clone()),
            None => Root::Local(self.run_dir.path.join("next")),
        }
    }

    /// Where this run stages `what` apart from the stages, to be loaded or
    /// read by a model of the run (an incremental model's increment, a
    /// change-detected model's changes and keys gone): under the run's
    /// directory, or beside the stages in an object store (see
    /// [`stored_apart`]).
    pub fn apart(&self, what: &str) -> Root {
        match self.stage_root.stored() {
            Some(root) => Root::Stored(stored_apart(root, &self.run_id).child(what)),
            None => Root::Local(self.run_dir.path.join(what)),
        }
    }

    /// Where a change-detected model's next row hashes (`what`: as split,
    /// or as corrected) are staged until they are kept: under the run's
    /// directory, or as a version of its kept hashes pending.
    pub fn next_hashes(&self, what: &str) -> Root {
        match self.hashes_root.stored() {
            Some(root) => Root::Pending(root.clone()),
            None => Root::Local(self.run_dir.path.join(what)),
        }
    }
}

/// With the stages in an object store at `root`, where run `run_id` stages
/// what it keeps apart from the stages (see [`Places::apart`]), loaded and
/// reconciled from there and removed as the run ends.
pub fn stored_apart(root: &crate::stage::Stored, run_id: &str) -> crate::stage::Stored {
    root.child(crate::stage::SCRATCH).child(&format!("{run_id}{APART}"))
}

/// The end of the name of what a run stages apart in an object store.
const APART: &str = "-apart";

/// Removes what killed runs staged apart in an object store at `root`
/// (one run at a time holds the project, so none is in use).
pub async fn sweep_stored_apart(root: &crate::stage::Stored) {
    crate::stage::store::sweep(&root.child(crate::stage::SCRATCH), |name| name.ends_with(APART)).await;
}

/// An incremental model's run, staged: its next version (what its readers
/// read now; it replaces the stage once loaded) and, unless it was built in
/// full, this run's increment.
#[derive(Debug, Clone)]
pub struct IncrementalStaged {
    pub next: StagedTable,
    pub increment: Option<StagedTable>,
    pub ledger: Option<Ledger>,
    pub strategy: Strategy,
    /// Why it was built in full, when it was.
    pub full: Option<String>,
    /// How its columns differ from its current data's.
    pub schema_change: SchemaChange,
    /// What it did with its cursor, when it has one.
    pub cursor: Option<CursorRun>,
    /// How its table's columns follow the new ones (`append_new_columns`,
    /// `sync_all_columns`).
    pub column_sync: ColumnSync,
    /// The batches a `microbatch` model built, whose rows its increment replaces.
    pub window: Option<Window>,
    /// Rows of its current data before this run (`None`: built in full).
    pub previous_rows: Option<u64>,
}

/// How a node ended up.
#[derive(Debug, Clone)]
pub enum Materialized {
    /// Registered as a view; no rows were read.
    View,
    /// Inlined into its readers.
    Ephemeral,
    /// A view several models read, computed once.
    ComputedOnce(StagedTable),
    /// A table or seed, staged as Parquet; a model with rules has its ledger.
    Staged(StagedTable, Option<Ledger>),
    /// An incremental model.
    Incremental(Box<IncrementalStaged>),
    /// A change-detected model: its new and changed rows, staged.
    Detected(Box<Detected>),
}

/// A change-detected model's run (see [`change`]).
#[derive(Debug, Clone)]
pub struct Detected {
    /// Its new and changed rows (all its rows when built in full).
    pub staged: StagedTable,
    pub ledger: Option<Ledger>,
    pub change: ChangeRun,
}

/// What change detection found and left to be kept.
#[derive(Debug, Clone)]
pub struct ChangeRun {
    pub counts: change::Counts,
    /// Why every row was staged, when it was (a first run, `--full-refresh`).
    pub full: Option<String>,
    /// The next row hashes, kept once the load and reconciliation succeed.
    pub hashes: StagedTable,
    /// The keys gone from the extract (none when built in full).
    pub gone: Option<StagedTable>,
    pub deletes: Deletes,
    /// Whether the hashes were kept (after the run's load and reconciliation).
    pub kept: bool,
}

impl Materialized {
    /// Rows written, when the node was executed.
    pub fn rows(&self) -> Option<u64> {
        match self {
            Materialized::View | Materialized::Ephemeral => None,
            Materialized::ComputedOnce(t) | Materialized::Staged(t, _) => Some(t.manifest.row_count),
            Materialized::Incremental(i) => Some(i.increment.as_ref().unwrap_or(&i.next).manifest.row_count),
            Materialized::Detected(d) => Some(d.staged.manifest.row_count),
        }
    }
}

/// A node that could not be materialized: why, and the ledger of a model
/// whose rows were counted before it failed (over its threshold).
pub struct NotMaterialized {
    pub diagnostics: Vec<Diagnostic>,
    pub ledger: Option<Ledger>,
}

impl From<Vec<Diagnostic>> for NotMaterialized {
    fn from(diagnostics: Vec<Diagnostic>) -> Self {
        NotMaterialized { diagnostics, ledger: None }
    }
}

/// Materializes model or seed `id` (a model from its rendered `sql`). Its
/// parents must have been materialized.
pub async fn materialize(
    engine: &Engine,
    manifest: &Manifest,
    id: NodeId,
    sql: &str,
    places: &Places,
) -> Result<Materialized, NotMaterialized> {
    let node = &manifest[id];
    let run = Materializing { engine, manifest, id, places };
    match &node.resource {
        Resource::Seed(_) => {
            // Models read the seed as staged (and loaded), as dbt reads the
            // table `dbt seed` made, not the CSV again.
            let sql = format!("SELECT * FROM {}", quote_ident(&node.name));
            Ok(Materialized::Staged(run.stage(&sql, &places.stage_root).await?, None))
        }
        Resource::Model { materialized, .. } => match materialized {
            Materialization::Incremental => run.incremental(sql).await,
            Materialization::View | Materialization::Ephemeral if !places.compute_once.contains(&id) => {
                run.view(sql).await?;
                Ok(if *materialized == Materialization::View { Materialized::View } else { Materialized::Ephemeral })
            }
            Materialization::View | Materialization::Ephemeral => {
                Ok(Materialized::ComputedOnce(run.stage(sql, &places.scratch_root).await?))
            }
            Materialization::Table if matches!(node.config.change_detection, Ok(Some(_)) | Err(_)) => {
                match &node.config.change_detection {
                    Ok(Some(cd)) => run.detected(sql, cd).await,
                    Err(d) => Err(vec![(**d).clone()].into()),
                    Ok(None) => unreachable!("matched above"),
                }
            }
            Materialization::Table => {
                let (staged, ledger) = run.staged(sql, &places.stage_root).await?;
                run.register(&staged)
                    .await
                    .map_err(|diagnostics| NotMaterialized { diagnostics, ledger: ledger.clone() })?;
                Ok(Materialized::Staged(staged, ledger))
            }
        },
        _ => Ok(Materialized::View),
    }
}

/// One node being materialized, and where.
struct Materializing<'a> {
    engine: &'a Engine,
    manifest: &'a Manifest,
    id: NodeId,
    places: &'a Places,
}

impl Materializing<'_> {
    fn node(&self) -> &Node {
        &self.manifest[self.id]
    }

    /// Registers the node's SQL as a view, inlined into its readers.
    async fn view(&self, sql: &str) -> Result<(), Vec<Diagnostic>> {
        let plan = engine_node::plan(self.engine, self.manifest, self.id, sql).await?;
        let table = TableReference::bare(self.node().name.as_str());
        self.engine
            .register_view(table, plan)
            .map_err(|e| vec![engine_node::internal(&e, self.node(), Code::Execution)])
    }

    /// Runs the node's SQL into a stage under `parent`, and registers it.
    async fn stage(&self, sql: &str, parent: &Root) -> Result<StagedTable, Vec<Diagnostic>> {
        let (engine, manifest, id) = (self.engine, self.manifest, self.id);
        let plan = engine_node::plan(engine, manifest, id, sql).await?;
        let options = self.places.stage_options.clone();
        let staged = engine_node::stage_plan(engine, manifest, id, plan, parent, options).await?;
        self.register(&staged).await?;
        Ok(staged)
    }

    /// Stages the node's rows under `parent`, through its rules when it
    /// has any, without registering them; the ledger of a checked model.
    async fn staged(&self, sql: &str, parent: &Root) -> Result<(StagedTable, Option<Ledger>), NotMaterialized> {
        if self.node().is_checked() {
            let (staged, ledger) = self.checked(sql, parent).await?;
            return Ok((staged, Some(ledger)));
        }
        let (engine, manifest, id) = (self.engine, self.manifest, self.id);
        let plan = engine_node::plan(engine, manifest, id, sql).await?;
        let options = self.places.stage_options.clone();
        Ok((engine_node::stage_plan(engine, manifest, id, plan, parent, options).await?, None))
    }

    /// A change-detected model: its extract joined with its kept row
    /// hashes in one pass, its new and changed rows staged through its
    /// rules; every row, on a first run or a full refresh (see [`change`]).
    async fn detected(&self, sql: &str, cd: &ChangeDetection) -> Result<Materialized, NotMaterialized> {
        let (engine, manifest, id, node) = (self.engine, self.manifest, self.id, self.node());
        let internal = |e: &datafusion::error::DataFusionError| vec![engine_node::internal(e, node, Code::Execution)];
        let sql = match &cd.deletes {
            Deletes::Soft { flag, at } => format!(
                "SELECT __ferry_cd.*, false AS {}, CAST(NULL AS TIMESTAMP) AS {} FROM ({sql}) AS __ferry_cd",
                quote_ident(flag),
                quote_ident(at)
            ),
            _ => sql.to_owned(),
        };
        let planned = engine_node::plan(engine, manifest, id, &sql).await?;
        let schema = planned.schema().as_arrow().clone();
        let columns = change::compared_columns(cd, &schema).map_err(|why| {
            vec![Diagnostic::error(Code::ModelConfig, format!("`{}`: {why}", node.name)).in_file(node.path())]
        })?;
        let types = change::Meta::types_in(&schema, &cd.key, &columns);
        let meta = change::Meta { key: cd.key.clone(), columns, types, run_id: self.places.run_id.clone() };
        let kept = change::read_kept(&self.places.hashes_root, &node.name).await.map_err(|e| {
            let message = format!("cannot tell whether change-detected model `{}` has row hashes: {e}", node.name);
            vec![Diagnostic::error(Code::Execution, message).in_file(node.path())]
        })?;
        let full = match &kept {
            _ if manifest.globals.full_refresh => Some("--full-refresh"),
            None => Some("it has no row hashes yet"),
            // A masked run compares no clear rows (nor the other way round).
            Some(k) if !k.table.manifest.readable(engine.masked()) => Some(if engine.masked() {
                "its row hashes were kept in clear, and this run masks"
            } else {
                "its row hashes were kept masked, and this run is in clear"
            }),
            Some(k) if !k.meta.comparable(&meta) => {
                Some("its key or compared columns (or their types) changed since the hashes were kept")
            }
            Some(_) => None,
        };
        let quiet = StageOptions { rows_written: None, fast_codec: true, ..self.places.stage_options.clone() };
        let (staged, mut ledger, hashes, gone, counts) = match (full, kept) {
            (Some(_), _) | (None, None) => {
                let (staged, ledger) = self.staged(&sql, &self.places.stage_root).await?;
                let with_ledger =
                    |diagnostics: Vec<Diagnostic>| NotMaterialized { diagnostics, ledger: ledger.clone() };
                self.register(&staged).await.map_err(with_ledger)?;
                let hashes_sql = change::hashes_sql(&node.name, &meta.key, &meta.columns);
                let plan = engine.plan(&hashes_sql).await.map_err(|e| with_ledger(internal(&e)))?;
                let hashes =
                    engine_node::stage_plan(engine, manifest, id, plan, self.places.next_hashes("hashes"), quiet)
                        .await
                        .map_err(with_ledger)?;
                let counts = change::Counts { inserted: staged.manifest.row_count, ..Default::default() };
                (staged, ledger, hashes, None, counts)
            }
            (None, Some(kept)) => {
                let kept_table = format!("{}__ferry_kept_hashes", node.name);
                // Kept hashes spoiled on disk are no bug of ferry's: the
                // user is told where they are and how to start them again.
                engine_node::register_staged(engine, TableReference::bare(kept_table.as_str()), &kept.table)
                    .await
                    .map_err(|e| {
                        let e = StageError::Corrupt {
                            model: node.name.clone(),
                            path: kept.table.location().into(),
                            reason: e.find_root().strip_backtrace(),
                        };
                        vec![unreadable_hashes(node, &e)]
                    })?;
                // Conversions that fail on a row are found as the extract
                // is read, and quarantined with the changes.
                let (extract, conversions) = self.converted(&sql).await?;
                let width = engine_node::plan(engine, manifest, id, &extract).await?.schema().fields().len();
                let hashed = change::hashed_sql(&extract, &meta.columns);
                let plan = engine_node::plan(engine, manifest, id, &hashed).await?;
                let partitions =
                    engine.execute_partitioned(plan).await.map_err(|e| vec![engine_node::execution_error(node, &e)])?;
                let parents =
                    [self.places.apart("changes"), self.places.next_hashes("hashes"), self.places.apart("gone")];
                let options = (node.name.as_str(), self.places.stage_options.clone());
                let split = match change::split(partitions, (width, &meta.key), &kept, parents, options).await {
                    Ok(split) => split,
                    // The kept hashes, spoiled: as when they cannot be opened.
                    Err(e) if matches!(&e, StageError::Corrupt { path, .. } if path.as_str() == kept.table.location()) =>
                    {
                        return Err(vec![unreadable_hashes(node, &e)].into());
                    }
                    Err(e) => return Err(engine_node::stage_error(engine, manifest, id, e).await.into()),
                };
                let changes_table = format!("{}__ferry_changes", node.name);
                engine_node::register_staged(engine, TableReference::bare(changes_table.as_str()), &split.changes)
                    .await
                    .map_err(|e| internal(&e))?;
                let changed = format!("SELECT * FROM {}", quote_ident(&changes_table));
                let (staged, ledger) = if self.node().is_checked() || !conversions.is_empty() {
                    let parent = &self.places.stage_root;
                    let (staged, ledger) = self.checked_converted(&changed, &conversions, parent).await?;
                    (staged, Some(ledger))
                } else {
                    self.staged(&changed, &self.places.stage_root).await?
                };
                let with_ledger =
                    |diagnostics: Vec<Diagnostic>| NotMaterialized { diagnostics, ledger: ledger.clone() };
                self.register(&staged).await.map_err(with_ledger)?;
                let mut hashes = split.hashes;
                if staged.manifest.row_count < split.changes.manifest.row_count {
                    // Changed rows quarantined or dropped keep their kept
                    // hash, so that the next run finds them again.
                    let next_table = format!("{}__ferry_next_hashes", node.name);
                    engine_node::register_staged(engine, TableReference::bare(next_table.as_str()), &hashes)
                        .await
                        .map_err(|e| with_ledger(internal(&e)))?;
                    let tables = (changes_table.as_str(), node.name.as_str(), kept_table.as_str());
                    let sql = change::corrected_sql(&next_table, tables, &meta.key);
                    let plan = engine.plan(&sql).await.map_err(|e| with_ledger(internal(&e)))?;
                    let parent = self.places.next_hashes("hashes-corrected");
                    let corrected = engine_node::stage_plan(engine, manifest, id, plan, parent, quiet)
                        .await
                        .map_err(with_ledger)?;
                    crate::stage::store::discard(&hashes).await;
                    hashes = corrected;
                }
                let next = self.next_hashes(&kept, &kept_table, &hashes, &meta.key).await.map_err(with_ledger)?;
                crate::stage::store::discard(&hashes).await;
                (staged, ledger, next, Some(split.gone), split.counts)
            }
        };
        if let Some(l) = ledger.as_mut() {
            l.changes = Some(counts);
        }
        if let Err(e) = change::write_meta(&hashes, &meta).await {
            let message = format!("the row hashes of `{}` could not be written: {e}", node.name);
            return Err(NotMaterialized { diagnostics: vec![Diagnostic::error(Code::Execution, message)], ledger });
        }
        let change =
            ChangeRun { counts, full: full.map(str::to_owned), hashes, gone, deletes: cd.deletes.clone(), kept: false };
        Ok(Materialized::Detected(Box::new(Detected { staged, ledger, change })))
    }

    /// An incremental model: built in full into its next version, or its
    /// rows staged as the increment and merged with its current data (see
    /// [`incremental`]). Either way its readers read the next version.
    async fn incremental(&self, sql: &str) -> Result<Materialized, NotMaterialized> {
        let (engine, node) = (self.engine, self.node());
        let Some(run) = self.places.incremental.get(&self.id) else {
            let message = format!("`{}` is incremental but was not prepared as such; this is a bug", node.name);
            return Err(vec![Diagnostic::error(Code::Execution, message).in_file(node.path())].into());
        };
        let mut staged = match &run.mode {
            Mode::Full(why) => {
                let sql = self.snapshot_sql(sql, None).await?;
                let sql = self.batched(&sql, run).await?;
                let (next, ledger) = self.staged(&sql, &self.places.next_root()).await?;
                self.register(&next)
                    .await
                    .map_err(|diagnostics| NotMaterialized { diagnostics, ledger: ledger.clone() })?;
                let strategy = run.settings.strategy;
                let (full, schema_change) = (Some(why.clone()), SchemaChange::default());
                let (cursor, column_sync, window) = (None, ColumnSync::default(), run.window.clone());
                let (increment, previous_rows) = (None, None);
                IncrementalStaged {
                    next,
                    increment,
                    ledger,
                    strategy,
                    full,
                    schema_change,
                    cursor,
                    column_sync,
                    window,
                    previous_rows,
                }
            }
            Mode::Incremental(_) => self.increment(sql, run).await?,
        };
        if let Some(c) = &run.settings.cursor {
            let high = incremental::cursor_max(engine, &node.name, &c.column).await.map_err(|e| NotMaterialized {
                diagnostics: vec![engine_node::internal(&e, node, Code::Execution)],
                ledger: staged.ledger.clone(),
            })?;
            staged.cursor.get_or_insert_with(|| CursorRun { column: c.column.clone(), from: None, high: None }).high =
                high;
        }
        Ok(Materialized::Incremental(Box::new(staged)))
    }

    /// An incremental run: the model's rows after its cursor's mark, fitted
    /// to its current columns, staged as the increment and merged with its
    /// current data into the next version, which its readers read.
    async fn increment(&self, sql: &str, run: &IncrementalRun) -> Result<IncrementalStaged, NotMaterialized> {
        let (engine, manifest, id, node) = (self.engine, self.manifest, self.id, self.node());
        let internal = |e: &datafusion::error::DataFusionError| vec![engine_node::internal(e, node, Code::Execution)];
        let this = incremental::current_table(&node.name);
        let strategy = run.settings.strategy;
        // The cursor narrows the model's SQL, or a snapshot's query (its
        // history is then compared with the rows read only).
        let mut query = sql.to_owned();
        let mut cursor = None;
        if let Some(c) = &run.settings.cursor {
            let mark = match &run.watermark {
                Some(w) => Some((w.value.clone(), w.data_type.clone())),
                None => incremental::cursor_max(engine, &this, &c.column).await.map_err(|e| internal(&e))?,
            };
            if let Some((value, data_type)) = &mark {
                query = incremental::after_cursor(&query, c, (value, data_type), strategy);
            }
            cursor = Some(CursorRun { column: c.column.clone(), from: mark.map(|m| m.0), high: None });
        }
        let sql = self.snapshot_sql(&query, Some(&this)).await?;
        let sql = self.batched(&sql, run).await?;
        let planned = engine_node::plan(engine, manifest, id, &sql).await?;
        let planned: SchemaRef = Arc::new(planned.schema().as_arrow().clone());
        let current_plan =
            engine.plan(&format!("SELECT * FROM {}", quote_ident(&this))).await.map_err(|e| internal(&e))?;
        let current_schema: SchemaRef = Arc::new(current_plan.schema().as_arrow().clone());
        let (sql, schema_change) =
            incremental::fit_to_current(&sql, &node.name, &run.settings, (&current_schema, &planned))
                .map_err(|d| vec![(*d).in_file(node.path())])?;
        let (increment, ledger) = self.staged(&sql, &self.places.apart("increments")).await?;
        let retyped: Vec<String> = match run.settings.on_schema_change {
            OnSchemaChange::SyncAllColumns => schema_change.retyped.iter().map(|(c, _, _)| c.clone()).collect(),
            _ => Vec::new(),
        };
        let with_ledger = |diagnostics: Vec<Diagnostic>| NotMaterialized { diagnostics, ledger: ledger.clone() };
        let replaced = match (&run.window, &run.settings.microbatch) {
            (Some(window), Some(m)) => {
                let column =
                    current_schema.field_with_name(&m.event_time).map_err(|e| with_ledger(internal(&e.into())))?;
                let predicate = incremental::in_window("__ferry_batch", &m.event_time, column.data_type(), window)
                    .map_err(|why| with_ledger(vec![self.microbatch_error(&why)]))?;
                Some(predicate)
            }
            _ => None,
        };
        let layered = match self.layered(run, &increment, replaced.is_some()).await {
            Ok(layered) => layered,
            Err(e) => return Err(with_ledger(engine_node::stage_error(engine, manifest, id, e).await)),
        };
        let next = match layered {
            Some(next) => next,
            None => {
                let merged = incremental::merged_sql(
                    engine,
                    (&node.name, &current_schema, &retyped),
                    &increment,
                    (strategy, &node.config.unique_key, replaced.as_deref()),
                )
                .await
                .map_err(|e| with_ledger(internal(&e)))?;
                let plan = engine.plan(&merged).await.map_err(|e| with_ledger(internal(&e)))?;
                let options = StageOptions { rows_written: None, ..self.places.stage_options.clone() };
                engine_node::stage_plan(engine, manifest, id, plan, self.places.next_root(), options)
                    .await
                    .map_err(with_ledger)?
            }
        };
        self.register(&next).await.map_err(with_ledger)?;
        let increment = Some(increment);
        let column_sync = match run.settings.on_schema_change {
            OnSchemaChange::AppendNewColumns => {
                ColumnSync { add: !schema_change.added.is_empty(), ..ColumnSync::default() }
            }
            OnSchemaChange::SyncAllColumns => ColumnSync {
                add: !schema_change.added.is_empty(),
                drop: schema_change.removed.clone(),
                retype: retyped,
            },
            OnSchemaChange::Ignore | OnSchemaChange::Fail => ColumnSync::default(),
        };
        let window = run.window.clone();
        let previous_rows = match &run.mode {
            Mode::Incremental(current) => Some(current.manifest.row_count),
            Mode::Full(_) => None,
        };
        Ok(IncrementalStaged {
            previous_rows,
            next,
            increment,
            ledger,
            strategy,
            full: None,
            schema_change,
            cursor,
            column_sync,
            window,
        })
    }

    /// The next version of an incremental model's stage on this machine,
    /// layered (see [`stage::layer`]): its current files and the
    /// increment's, with the rows the increment replaces deleted. `None`
    /// where it is rewritten instead: a window of batches is replaced
    /// (`window`), the columns changed, a cluster runs the models (it reads
    /// the stages' files, not their deletion files), or `layer` declines.
    async fn layered(
        &self,
        run: &IncrementalRun,
        increment: &StagedTable,
        window: bool,
    ) -> Result<Option<StagedTable>, stage::StageError> {
        let (Mode::Incremental(current), Root::Local(parent)) = (&run.mode, self.places.next_root()) else {
            return Ok(None);
        };
        if window || run.settings.strategy == Strategy::Microbatch || self.engine.cluster().is_some() {
            return Ok(None);
        }
        let node = self.node();
        let key: &[String] = match run.settings.strategy {
            Strategy::Append => &[],
            _ => &node.config.unique_key,
        };
        let layered = stage::layer::layer(&parent, &node.name, current, increment, key).await?;
        match &layered {
            Some(next) => {
                let deleted: u64 = next.manifest.files.iter().filter_map(|f| f.deleted.as_ref()).map(|d| d.rows).sum();
                tracing::info!(
                    "`{}`: next version layered on the current one: {} files, {deleted} of their rows deleted",
                    node.name,
                    next.manifest.files.len()
                );
            }
            None => tracing::info!("`{}`: next version rewritten whole", node.name),
        }
        Ok(layered)
    }

    /// A `microbatch` model's SQL narrowed to the rows of its window, and
    /// those without an `event_time` (which its implicit rule
    /// quarantines); other models' SQL as it is.
    async fn batched(&self, sql: &str, run: &IncrementalRun) -> Result<String, NotMaterialized> {
        let (Some(window), Some(m)) = (&run.window, &run.settings.microbatch) else { return Ok(sql.to_owned()) };
        let plan = engine_node::plan(self.engine, self.manifest, self.id, sql).await?;
        let Ok(field) = plan.schema().as_arrow().field_with_name(&m.event_time).cloned() else {
            let why = format!("its `event_time` column `{}` is not among its columns", m.event_time);
            return Err(vec![self.microbatch_error(&why)].into());
        };
        let predicate = incremental::in_window("__ferry_batch", &m.event_time, field.data_type(), window)
            .map_err(|why| vec![self.microbatch_error(&why)])?;
        let c = format!("__ferry_batch.{}", quote_ident(&m.event_time));
        Ok(format!("SELECT * FROM ({sql}) AS __ferry_batch WHERE {predicate} OR {c} IS NULL"))
    }

    fn microbatch_error(&self, why: &str) -> Diagnostic {
        let node = self.node();
        Diagnostic::error(Code::ModelConfig, format!("microbatch model `{}`: {why}", node.name))
            .in_file(node.path())
            .with_help("set `event_time` to a date or timestamp column of the model's rows")
    }

    /// A snapshot's SQL around its query: every row as a first version, or
    /// (over its history in `this`) the versions that change; see
    /// [`snapshot`]. Other models' SQL as it is.
    async fn snapshot_sql(&self, query: &str, this: Option<&str>) -> Result<String, NotMaterialized> {
        let (engine, manifest, id, node) = (self.engine, self.manifest, self.id, self.node());
        let settings = match &node.config.snapshot {
            Ok(None) => return Ok(query.to_owned()),
            Ok(Some(s)) => s,
            Err(d) => return Err(vec![(**d).clone()].into()),
        };
        let source = engine_node::plan(engine, manifest, id, query).await?;
        let source = source.schema().as_arrow().clone();
        snapshot::check_source(&node.name, settings, &source).map_err(|d| vec![(*d).in_file(node.path())])?;
        let now = snapshot::now_literal(chrono::Utc::now());
        let Some(this) = this else { return Ok(snapshot::first_sql(query, settings, &now)) };
        let current = engine
            .plan(&format!("SELECT * FROM {}", quote_ident(this)))
            .await
            .map_err(|e| vec![engine_node::internal(&e, node, Code::Execution)])?;
        let current = current.schema().as_arrow().clone();
        Ok(snapshot::changes_sql(query, settings, &now, this, (&source, &current)))
    }

    /// Stages a table through its rules, dedup and quarantined
    /// conversions under `parent`.
    async fn checked(&self, sql: &str, parent: &Root) -> Result<(StagedTable, Ledger), NotMaterialized> {
        let (body, conversions) = self.converted(sql).await?;
        self.checked_converted(&body, &conversions, parent).await
    }

    /// A change-detected model's next kept hashes: the `kept` ones (also
    /// registered as `kept_table`) with a run's `increment` layered on
    /// where they can be (see [`stage::layer`]), else merged and written
    /// whole, which drops the tombstones of gone keys too.
    async fn next_hashes(
        &self,
        kept: &change::Kept,
        kept_table: &str,
        increment: &StagedTable,
        key: &[String],
    ) -> Result<StagedTable, Vec<Diagnostic>> {
        let (engine, manifest, id, node) = (self.engine, self.manifest, self.id, self.node());
        let internal = |e: &dyn std::fmt::Display| {
            let message = format!("the row hashes of `{}` could not be written: {e}", node.name);
            vec![Diagnostic::error(Code::Execution, message).in_file(node.path())]
        };
        let quiet = StageOptions { rows_written: None, fast_codec: true, ..self.places.stage_options.clone() };
        if let Root::Local(parent) = self.places.next_hashes("hashes-next")
            && engine.cluster().is_none()
        {
            // Layered, or past a layer's limits whole, in the order kept:
            // the extract's, where the next run looks first.
            let tables = (&kept.table, increment);
            let next = stage::layer::compact(&parent, &node.name, tables, key, (Some(change::HASH), quiet.clone()));
            if let Some(next) = next.await.map_err(|e| internal(&e))? {
                return Ok(next);
            }
            tracing::info!("`{}`: next row hashes rewritten whole", node.name);
        }
        let increment_table = format!("{}__ferry_hashes_increment", node.name);
        engine_node::register_staged(engine, TableReference::bare(increment_table.as_str()), increment)
            .await
            .map_err(|e| internal(&e))?;
        let sql = change::merged_sql(kept_table, &increment_table, key);
        let plan = engine.plan(&sql).await.map_err(|e| internal(&e))?;
        engine_node::stage_plan(engine, manifest, id, plan, self.places.next_hashes("hashes-merged"), quiet).await
    }

    /// The model's SQL with its conversions made row errors when it
    /// quarantines them (a query of the rewritten view), and their
    /// `conversion` rules; else the SQL as it is.
    async fn converted(&self, sql: &str) -> Result<(String, Vec<Rule>), Vec<Diagnostic>> {
        if self.node().config.on_conversion_error == OnConversionError::Quarantine
            && let Some((from, conversions)) = self.converting(sql).await?
        {
            return Ok((format!("SELECT * FROM {}", quote_ident(&from)), conversions));
        }
        Ok((sql.to_owned(), Vec::new()))
    }

    /// Stages `body` (the model's rows, with a site column per conversion
    /// of `conversions`) through its rules, dedup and conversion rules.
    async fn checked_converted(
        &self,
        body: &str,
        conversions: &[Rule],
        parent: &Root,
    ) -> Result<(StagedTable, Ledger), NotMaterialized> {
        let (engine, manifest, id, node) = (self.engine, self.manifest, self.id, self.node());
        let mut checks = rules::checks(&node.config.rules);
        checks.extend(conversions.iter().enumerate().map(|(k, r)| rules::check(node.config.rules.len() + k, r)));
        let checks = Arc::new(checks);
        let checked = rules::checked_sql(body, &checks, node.config.dedupe.as_ref());
        let plan = engine_node::plan(engine, manifest, id, &checked).await?;
        let places = self.places;
        let run = CheckedRun {
            stage_root: parent,
            run_id: &places.run_id,
            run_dir: &places.run_dir,
            options: places.stage_options.clone(),
        };
        stage_checked(engine, manifest, id, (plan, checks), run)
            .await
            .map_err(|f| NotMaterialized { diagnostics: f.diagnostics, ledger: f.ledger })
    }

    /// The model's plan with its conversions made row errors (see
    /// [`conversions`]), registered as a view for the checking query to
    /// read; its name and the `conversion` rules. `None` when nothing in
    /// the model converts where rows can be followed.
    async fn converting(&self, sql: &str) -> Result<Option<(String, Vec<Rule>)>, Vec<Diagnostic>> {
        let (engine, manifest, id, node) = (self.engine, self.manifest, self.id, self.node());
        let plan = engine_node::plan(engine, manifest, id, sql).await?;
        let rewritten =
            conversions::rewrite(plan).map_err(|e| vec![engine_node::internal(&e, node, Code::Execution)])?;
        let (Some(rewritten), Some(file)) = (rewritten, node.template()) else { return Ok(None) };
        let from = format!("__ferry_converting_{}", node.name);
        engine
            .register_view(TableReference::bare(from.as_str()), rewritten.plan)
            .map_err(|e| vec![engine_node::internal(&e, node, Code::Execution)])?;
        let origin = Origin { file: Arc::clone(file), span: 0..0 };
        Ok(Some((from, conversions::rules(&rewritten.conversions, &origin))))
    }

    /// Registers a stage as the table the node's readers read.
    async fn register(&self, staged: &StagedTable) -> Result<(), Vec<Diagnostic>> {
        let table = TableReference::bare(self.node().name.as_str());
        engine_node::register_staged(self.engine, table, staged)
            .await
            .map_err(|e| vec![engine_node::internal(&e, self.node(), Code::Execution)])
    }
}

/// The kept row hashes of change-detected `node` cannot be read (`e`).
fn unreadable_hashes(node: &Node, e: &StageError) -> Diagnostic {
    Diagnostic::error(Code::Execution, format!("the row hashes kept for `{}` cannot be read: {e}", node.name))
        .in_file(node.path())
        .with_note("`--full-refresh` computes them again from this extract (and loads every row again)")
}

/// Makes `parents` (and their own ancestors) readable without running them:
/// a `table` or seed with a stage is read from it (a seed without one from
/// its CSV); other models are read from their SQL, as views, masked in a
/// masked run. A stage made by a run that masked otherwise is not read.
/// Returns the tables read from their SQL, each with why.
pub async fn read_parents_lazily(
    engine: &Engine,
    manifest: &Manifest,
    parents: &BTreeSet<NodeId>,
    stage_root: &Root,
) -> Vec<(String, Unstaged)> {
    let needed = manifest.graph.with_ancestors(parents.iter().copied());
    let mut unstaged = Vec::new();
    // A stage is read only where this run would have written it alike: a
    // masked run never reads one made in clear.
    let stage = async |name: &str| {
        let dir = stage_root.dir(name);
        match stage::verify(&dir).await {
            Ok(m) if m.readable(engine.masked()) => Ok(StagedTable { dir, manifest: m }),
            Ok(m) if m.masked => Err(Unstaged::Masked),
            Ok(_) => Err(Unstaged::Clear),
            Err(_) => Err(Unstaged::None),
        }
    };
    for &i in manifest.order.iter().filter(|i| needed.contains(i)) {
        let node = &manifest[i];
        let table = TableReference::bare(node.name.as_str());
        if let Resource::Seed(_) = &node.resource {
            if let Ok(staged) = stage(&node.name).await {
                let _ = engine_node::register_staged(engine, table, &staged).await;
            }
            continue;
        }
        let Resource::Model { materialized, .. } = &node.resource else { continue };
        if matches!(materialized, Materialization::Table | Materialization::Incremental) {
            let why = match stage(&node.name).await {
                Ok(staged) => match engine_node::register_staged(engine, table.clone(), &staged).await {
                    Ok(()) => continue,
                    Err(_) => Unstaged::None,
                },
                Err(why) => why,
            };
            unstaged.push((node.name.clone(), why));
        }
        // Its SQL as this run would stage it: masked in a masked run. A
        // model whose masks cannot apply is left unread, not read in clear.
        let Some(rendered) = &node.rendered else { continue };
        let sql = match plan::masked_render(engine, node, Some(rendered.clone())).await {
            Ok(Some(masked)) => masked.sql,
            Ok(None) => rendered.sql.clone(),
            Err(_) => continue,
        };
        if let Ok(plan) = engine.plan(&sql).await {
            let _ = engine.register_view(table, plan);
        }
    }
    unstaged
}

/// Why [`read_parents_lazily`] read a table from its SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unstaged {
    /// It has no stage (or none that can be read).
    None,
    /// Its stage was made in clear, and this run masks.
    Clear,
    /// Its stage was made masked, and this run does not mask.
    Masked,
}

impl std::fmt::Display for Unstaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unstaged::None => "has no stage yet",
            Unstaged::Clear => "has a stage made in clear, which a masked run does not read",
            Unstaged::Masked => "has a masked stage, which a run in clear does not read",
        })
    }
}

/// Views and ephemerals among `nodes` that more than one node of `nodes` reads.
pub fn views_read_more_than_once(manifest: &Manifest, nodes: &[NodeId]) -> HashSet<NodeId> {
    let running: HashSet<NodeId> = nodes.iter().copied().collect();
    nodes
        .iter()
        .copied()
        .filter(|&i| {
            matches!(
                manifest[i].resource,
                Resource::Model { materialized: Materialization::View | Materialization::Ephemeral, .. }
            )
        })
        .filter(|&i| {
            let readers = manifest
                .graph
                .children(i)
                .iter()
                .filter(|c| running.contains(c))
                .filter(|&&c| matches!(manifest[c].resource, Resource::Model { .. }));
            readers.count() > 1
        })
        .collect()
}
