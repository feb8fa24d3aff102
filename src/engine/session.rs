//! The one place that builds DataFusion's session: configuration, catalog
//! layout (models in `public`, each source in a schema of its own) and
//! table registration. Other modules see [`Engine`], not a raw context.

use std::sync::Arc;

use camino::{Utf8Path, Utf8PathBuf};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::view::ViewTable;
use datafusion::catalog::{MemorySchemaProvider, TableProvider};
use datafusion::common::TableReference;
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::SessionState;
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions};
use std::num::NonZeroUsize;

use crate::source::CsvSettings;

/// Logs the physical plan (`-v`), inside the running node's span: which
/// columns and filters reach each reader, and where rows are exchanged.
fn log_plan(plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        let shown = datafusion::physical_plan::displayable(plan.as_ref()).indent(true).to_string();
        tracing::debug!("physical plan:\n{shown}");
    }
}

/// Whether `e` is Arrow refusing to merge two files' schemas.
fn is_schema_conflict(e: &DataFusionError) -> bool {
    matches!(e.find_root(), DataFusionError::ArrowError(inner, _)
        if matches!(inner.as_ref(), datafusion::arrow::error::ArrowError::SchemaError(_)))
}

/// The columns of `schemas` in order of first appearance; a column two
/// schemas type differently is text.
fn widest(schemas: &[SchemaRef]) -> SchemaRef {
    use datafusion::arrow::datatypes::{Field, Schema};
    let mut fields: Vec<Field> = Vec::new();
    for f in schemas.iter().flat_map(|s| s.fields().iter()) {
        match fields.iter_mut().find(|g| g.name() == f.name()) {
            Some(g) if g.data_type() != f.data_type() => *g = Field::new(f.name(), DataType::Utf8, true),
            Some(g) => *g = g.clone().with_nullable(g.is_nullable() || f.is_nullable()),
            None => fields.push(f.as_ref().clone()),
        }
    }
    Arc::new(Schema::new(fields))
}

/// Catalog and schema that models and seeds live in.
pub const CATALOG: &str = "datafusion";
pub const MODEL_SCHEMA: &str = "public";

/// Settings for the session.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub target_partitions: usize,
    /// Bytes that sorts, joins and aggregates may hold before they spill;
    /// `None` leaves memory unbounded (planning only).
    pub memory_limit: Option<usize>,
    /// Where spill files go (default: the OS temporary directory).
    pub spill_dir: Option<Utf8PathBuf>,
    /// The key of a masked run: the masking functions are registered, and
    /// sources, seeds and models are masked as their columns say.
    pub masking: Option<crate::mask::Key>,
    /// Run queries on this Ballista cluster (`df://host:port`) instead of
    /// in this process, with tables only ferry reads written under the
    /// directory or object-store prefix given (see [`super::cluster`]).
    pub cluster: Option<(String, crate::stage::Root)>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            target_partitions: std::thread::available_parallelism().map_or(2, usize::from),
            memory_limit: None,
            spill_dir: None,
            masking: None,
            cluster: None,
        }
    }
}

/// The default memory limit: half of the machine's RAM, so an extract
/// larger than memory spills instead of being killed.
pub fn default_memory_limit() -> usize {
    let mut system = sysinfo::System::new();
    system.refresh_memory();
    let total = usize::try_from(system.total_memory()).unwrap_or(usize::MAX);
    if total == 0 { 4 << 30 } else { total / 2 }
}

/// The embedded query engine.
#[derive(Clone)]
pub struct Engine {
    ctx: SessionContext,
    /// One snapshot for planning: cloning a session state copies every
    /// function registry, and the snapshot shares the catalog, so it sees
    /// tables registered later.
    planning: Arc<SessionState>,
    /// Whether the run masks personal data.
    masked: bool,
    /// The cluster that runs the queries, if not this process.
    #[cfg(feature = "cluster")]
    remote: Option<Arc<super::cluster::Remote>>,
    /// The node whose queries this engine runs, for the cluster's jobs.
    #[cfg(feature = "cluster")]
    node: Option<Arc<str>>,
}

impl Engine {
    /// A session with span collection on, so planning errors carry positions,
    /// and with the memory limit and spill directory of `options`.
    pub fn new(options: &EngineOptions) -> Result<Self> {
        let mut config = SessionConfig::new()
            .with_information_schema(false)
            .with_default_catalog_and_schema(CATALOG, MODEL_SCHEMA)
            .with_target_partitions(options.target_partitions.max(1));
        config.options_mut().sql_parser.collect_spans = true;
        // A directory source reads its subdirectories too, and a glob may
        // cross directories (`data/*/orders.csv`), as `local_files` lists.
        config.options_mut().execution.listing_table_ignore_subdirectory = false;
        // Partition k reads file group k (a file's k-th byte range), never a
        // sibling's: what comes first is the files' order (the audit's first
        // examples and the values it holds, the order of a stage's rows),
        // the same on every run. DataFusion's work stealing, on by default,
        // hands whichever partition starts first the first range.
        config.options_mut().execution.enable_file_stream_work_stealing = false;
        let mut runtime =
            RuntimeEnvBuilder::new().with_object_store_registry(Arc::new(super::stores::FromEnv::default()));
        if let Some(limit) = options.memory_limit {
            // Fair between spilling operators; the tracker names the biggest
            // consumers when the limit is hit.
            let pool = TrackConsumersPool::new(FairSpillPool::new(limit), NonZeroUsize::new(5).expect("5 > 0"));
            runtime = runtime.with_memory_pool(Arc::new(pool));
        }
        if let Some(dir) = &options.spill_dir {
            fs_err::create_dir_all(dir)
                .map_err(|e| DataFusionError::IoError(e).context(format!("creating `{dir}`")))?;
            runtime = runtime.with_disk_manager_builder(
                DiskManagerBuilder::default()
                    .with_mode(DiskManagerMode::Directories(vec![dir.clone().into_std_path_buf()])),
            );
        }
        let ctx = SessionContext::new_with_config_rt(config, runtime.build_arc()?);
        for f in super::functions::all() {
            ctx.register_udf(f);
        }
        // DataFusion's functions that ferry wraps, and how.
        type Wrap = fn(Arc<datafusion::logical_expr::ScalarUDF>) -> datafusion::logical_expr::ScalarUDF;
        let wrapped: [(&[&str], Wrap); 3] = [
            (super::functions::ONE_TYPE, super::functions::one_type),
            (&["round"], super::functions::round),
            (super::functions::TRY_WRAPPED, super::functions::try_form),
        ];
        for (names, wrap) in wrapped {
            for name in names {
                if let Ok(inner) = datafusion::execution::FunctionRegistry::udf(&ctx, name) {
                    ctx.register_udf(wrap(inner));
                }
            }
        }
        if let Some(key) = &options.masking {
            for f in crate::mask::udfs(key) {
                ctx.register_udf(f);
            }
        }
        let planning = Arc::new(ctx.state());
        #[cfg(feature = "cluster")]
        let remote = match &options.cluster {
            Some((url, scratch)) => {
                let address =
                    super::cluster::Address::parse(url).map_err(|e| DataFusionError::External(Box::new(e)))?;
                Some(Arc::new(super::cluster::Remote::connect(&ctx, &address, scratch)?))
            }
            None => None,
        };
        #[cfg(not(feature = "cluster"))]
        if let Some((url, _)) = &options.cluster {
            return Err(DataFusionError::Configuration(format!(
                "this ferry was built without the `cluster` feature, so it cannot run on `{url}` \
                 (build it with `cargo build --release --features cluster`)"
            )));
        }
        Ok(Engine {
            ctx,
            planning,
            masked: options.masking.is_some(),
            #[cfg(feature = "cluster")]
            remote,
            #[cfg(feature = "cluster")]
            node: None,
        })
    }

    /// The same engine, running `node`'s queries: on a cluster, the jobs
    /// they run as are kept as that node's ([`Engine::cluster_jobs`]).
    pub fn for_node(&self, node: &str) -> Engine {
        #[cfg(feature = "cluster")]
        if self.remote.is_some() {
            return Engine { node: Some(Arc::from(node)), ..self.clone() };
        }
        let _ = node;
        self.clone()
    }

    /// The jobs the queries ran as on the cluster, in the order they ended
    /// (none when they ran here).
    pub fn cluster_jobs(&self) -> Vec<crate::state::run_record::ClusterJob> {
        #[cfg(feature = "cluster")]
        if let Some(remote) = &self.remote {
            return remote.jobs();
        }
        Vec::new()
    }

    /// Where the cluster jobs of the nodes running now stand, by node (none
    /// when they run here).
    pub fn cluster_progress(&self) -> Vec<(Arc<str>, super::JobProgress)> {
        #[cfg(feature = "cluster")]
        if let Some(remote) = &self.remote {
            return remote.live();
        }
        Vec::new()
    }

    /// The jobs of `node`'s queries on the cluster (none when they ran here).
    pub fn cluster_jobs_of(&self, node: &str) -> Vec<crate::state::run_record::ClusterJob> {
        #[cfg(feature = "cluster")]
        if let Some(remote) = &self.remote {
            return remote.jobs_of(node);
        }
        let _ = node;
        Vec::new()
    }

    /// The physical plan of `plan` in `state`: on a cluster, one that
    /// fetches the job's result into this process's partitions at once, so
    /// that what the caller does with the rows (the quarantine split,
    /// dedup, writing Parquet) runs on every core here.
    async fn physical(&self, state: &SessionState, plan: &LogicalPlan) -> Result<Arc<dyn ExecutionPlan>> {
        #[cfg(feature = "cluster")]
        if let Some(remote) = &self.remote {
            return remote.plan(plan).await;
        }
        state.create_physical_plan(plan).await
    }

    /// `stream`, the output of `physical`: on a cluster, its job is kept
    /// once it ends.
    fn watched(
        &self,
        physical: Arc<dyn ExecutionPlan>,
        stream: SendableRecordBatchStream,
    ) -> SendableRecordBatchStream {
        #[cfg(feature = "cluster")]
        if let Some(remote) = &self.remote {
            return remote.watched(self.node.clone(), physical, stream);
        }
        let _ = physical;
        stream
    }

    /// Makes `url`'s object store (`s3://`, `gs://`, `az://`, `http(s)://`)
    /// known to the session, configured from the environment as each
    /// cloud's own tools are (`AWS_*`, `GOOGLE_*`, `AZURE_*`); see
    /// [`super::stores`].
    pub fn register_object_store(&self, url: &str) -> Result<()> {
        self.object_store(url).map(|_| ())
    }

    /// The object store holding `url`'s object (made as
    /// [`Engine::register_object_store`] says), and the object's path in it.
    pub fn object_store(&self, url: &str) -> Result<(Arc<dyn object_store::ObjectStore>, object_store::path::Path)> {
        let parsed =
            url::Url::parse(url).map_err(|e| DataFusionError::Plan(format!("`{url}` is not a valid URL: {e}")))?;
        let store = self.ctx.runtime_env().object_store_registry.get_store(&parsed)?;
        Ok((store, object_store::path::Path::from_url_path(parsed.path())?))
    }

    /// Plans `plan` physically and starts it, one stream per output
    /// partition, so a consumer can drain partitions in parallel.
    pub async fn execute_partitioned(&self, plan: LogicalPlan) -> Result<Vec<SendableRecordBatchStream>> {
        let (state, plan) = self.executing(plan).await?;
        let physical = self.physical(&state, &plan).await?;
        log_plan(&physical);
        let mut streams =
            datafusion::physical_plan::execute_stream_partitioned(Arc::clone(&physical), state.task_ctx())?;
        // A cluster's query is one job, whichever stream ends first.
        if !streams.is_empty() {
            let first = streams.remove(0);
            streams.insert(0, self.watched(physical, first));
        }
        Ok(streams)
    }

    /// The session that runs `plan`, and the plan as it runs there: on a
    /// cluster, with the tables only this process reads staged for it.
    async fn executing(&self, plan: LogicalPlan) -> Result<(SessionState, LogicalPlan)> {
        #[cfg(feature = "cluster")]
        if let Some(remote) = &self.remote {
            let plan = remote.rewrite(&self.ctx, plan).await?;
            return Ok((remote.state(), plan));
        }
        Ok((self.ctx.state(), plan))
    }

    /// The cluster the queries run on (`df://host:port`), if not here.
    pub fn cluster(&self) -> Option<String> {
        #[cfg(feature = "cluster")]
        if let Some(remote) = &self.remote {
            return Some(remote.address().to_string());
        }
        None
    }

    /// The tables this process read and staged for the cluster, because
    /// the cluster cannot read them itself (a database table, a file of
    /// ferry's own reader).
    pub fn read_for_cluster(&self) -> Vec<String> {
        #[cfg(feature = "cluster")]
        if let Some(remote) = &self.remote {
            return remote.read_here();
        }
        Vec::new()
    }

    /// The runtime: memory pool and spill files, for operators of ferry's own.
    pub fn runtime_env(&self) -> Arc<datafusion::execution::runtime_env::RuntimeEnv> {
        self.ctx.runtime_env()
    }

    /// Plans `plan` physically and starts it as one stream.
    pub async fn execute(&self, plan: LogicalPlan) -> Result<SendableRecordBatchStream> {
        let (state, plan) = self.executing(plan).await?;
        let physical = self.physical(&state, &plan).await?;
        log_plan(&physical);
        let stream = datafusion::physical_plan::execute_stream(Arc::clone(&physical), state.task_ctx())?;
        Ok(self.watched(physical, stream))
    }

    /// Whether the run masks personal data (see [`crate::mask`]).
    pub fn masked(&self) -> bool {
        self.masked
    }

    /// Puts a view that masks `columns` (name and policy) in place of
    /// `table`, which moves to `__ferry_clear_<name>` beside it: every plan
    /// that reads `table` reads masked values. Nothing when the run is not
    /// masked or no column has a policy; `Err` with a message naming the
    /// column a policy cannot mask.
    pub async fn mask_table(&self, table: &TableReference, columns: &[(String, crate::mask::Policy)]) -> Result<()> {
        if !self.masked || columns.is_empty() {
            return Ok(());
        }
        let provider = self.ctx.table_provider(table.clone()).await?;
        let schema = provider.schema();
        let fields: Vec<(String, DataType)> =
            schema.fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
        let list = crate::mask::select_list(&fields, columns).map_err(DataFusionError::Plan)?;
        let clear_name = format!("__ferry_clear_{}", table.table());
        let clear = match table.schema() {
            Some(schema) => TableReference::partial(schema, clear_name.as_str()),
            None => TableReference::bare(clear_name.as_str()),
        };
        self.register(clear.clone(), provider)?;
        let plan = self.plan(&format!("SELECT {list} FROM {}", clear.to_quoted_string())).await?;
        self.register_view(table.clone(), plan)
    }

    /// Registers a planned query as a view: inlined into every plan that reads it.
    pub fn register_view(&self, table: TableReference, plan: LogicalPlan) -> Result<()> {
        self.register(table, Arc::new(ViewTable::new(plan, None)))
    }

    /// A snapshot of the session state, for planning.
    pub fn state(&self) -> SessionState {
        self.ctx.state()
    }

    /// Parses and plans one SQL statement (no execution).
    pub async fn plan(&self, sql: &str) -> Result<LogicalPlan> {
        let state = &self.planning;
        let dialect = state.config().options().sql_parser.dialect;
        let mut statement = state.sql_to_statement(sql, &dialect)?;
        super::depth::settle(&mut statement)?;
        super::dialect::as_postgres(&mut statement);
        let plan = state.statement_to_plan(statement).await?;
        state.analyzer().execute_and_check(plan, state.config_options(), |_, _| {})
    }

    /// Makes sure a schema (namespace) exists for a source.
    pub fn ensure_schema(&self, name: &str) -> Result<()> {
        self.schema_in(CATALOG, name).map(|_| ())
    }

    /// Schema `schema` of catalog `catalog`, each made (empty, in memory)
    /// if it does not exist yet.
    fn schema_in(&self, catalog: &str, schema: &str) -> Result<Arc<dyn datafusion::catalog::SchemaProvider>> {
        use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider};
        let cat: Arc<dyn CatalogProvider> = match self.ctx.catalog(catalog) {
            Some(c) => c,
            None => {
                let c = Arc::new(MemoryCatalogProvider::new());
                self.ctx.register_catalog(catalog, c.clone());
                c
            }
        };
        if let Some(s) = cat.schema(schema) {
            return Ok(s);
        }
        let s = Arc::new(MemorySchemaProvider::new());
        cat.register_schema(schema, s.clone())?;
        Ok(s)
    }

    /// Registers a table that has a schema and no rows: enough to plan
    /// queries that read it, without inlining its definition.
    pub fn register_schema_only(&self, table: TableReference, schema: SchemaRef) -> Result<()> {
        self.register(table, Arc::new(EmptyTable::new(schema)))
    }

    /// Registers (or replaces) a table provider.
    pub fn register(&self, table: TableReference, provider: Arc<dyn TableProvider>) -> Result<()> {
        self.make_room(&table)?;
        self.ctx.register_table(table, provider)?;
        Ok(())
    }

    /// Readies `table`'s name to be registered: its schema exists, and no
    /// table of that name is left.
    fn make_room(&self, table: &TableReference) -> Result<()> {
        if let Some(schema) = table.schema() {
            self.ensure_schema(schema)?;
        }
        self.ctx.deregister_table(table.clone())?;
        Ok(())
    }

    /// Registers `provider` as `catalog.schema.table`, in a catalog other
    /// than the engine's own (a warehouse's `information_schema`, say),
    /// replacing any table of that name.
    pub fn register_in_catalog(
        &self,
        (catalog, schema, table): (&str, &str, &str),
        provider: Arc<dyn TableProvider>,
    ) -> Result<()> {
        let holder = self.schema_in(catalog, schema)?;
        holder.deregister_table(table)?;
        holder.register_table(table.to_owned(), provider)?;
        Ok(())
    }

    /// The provider of a registered table, if there is one.
    pub async fn table_provider(&self, table: TableReference) -> Option<Arc<dyn TableProvider>> {
        self.ctx.table_provider(table).await.ok()
    }

    /// Registers a file (or directory, or glob) as a lazily read table with a
    /// known schema; projections and filters reach the reader.
    pub async fn register_file(&self, table: TableReference, file: &FileSource, schema: &SchemaRef) -> Result<()> {
        self.make_room(&table)?;
        let p = file.path.as_str();
        match file.format {
            FileFormat::Csv => self.ctx.register_csv(table, p, file.csv_options().schema(schema)).await,
            FileFormat::Parquet => {
                self.ctx.register_parquet(table, p, ParquetReadOptions::default().schema(schema)).await
            }
            FileFormat::Json => self.ctx.register_json(table, p, file.json_options().schema(schema)).await,
        }
    }

    /// Registers a stage's Parquet files (at `path`, of `schema`) as a
    /// table whose scans apply their filters while decoding: the columns a
    /// filter reads are decoded first, and the others only for the rows it
    /// keeps. Joins push their keys into the scan of their probe side as
    /// such a filter, so merging a few changed rows into a model's current
    /// stage, or a snapshot's history, decodes the whole of the rows it
    /// matches only.
    pub async fn register_stage(&self, table: TableReference, path: &str, schema: &SchemaRef) -> Result<()> {
        use datafusion::datasource::file_format::options::ReadOptions as _;
        self.make_room(&table)?;
        let mut table_options = self.ctx.copied_table_options();
        table_options.parquet.global.pushdown_filters = true;
        table_options.parquet.global.reorder_filters = true;
        let read = ParquetReadOptions::default().schema(schema);
        let listing = read.to_listing_options(&self.ctx.copied_config(), table_options);
        self.ctx.register_listing_table(table, path, listing, Some(Arc::clone(schema)), None).await
    }

    /// Registers Parquet files (of one schema) as one table.
    pub async fn register_parquet_files(&self, table: &str, files: Vec<String>) -> Result<()> {
        let frame = self.ctx.read_parquet(files, ParquetReadOptions::default()).await?;
        self.register(TableReference::bare(table), frame.into_view())
    }

    /// The schema DataFusion infers for a file, by format. Text files of a
    /// directory or glob whose types disagree (one file's `amount` looks
    /// like integers, another's holds text) get the widest: a column typed
    /// differently by two files is text, as DataFusion does for the records
    /// of one file; declared `data_type`s then win as usual.
    pub async fn infer_schema(&self, file: &FileSource) -> Result<SchemaRef> {
        match self.infer_together(file).await {
            Err(e) if file.format != FileFormat::Parquet && is_schema_conflict(&e) => {
                let mut schemas = Vec::new();
                for path in file.local_files() {
                    let single = FileSource { path: path.to_string(), ..file.clone() };
                    schemas.push(self.infer_together(&single).await?);
                }
                if schemas.len() < 2 {
                    return Err(e);
                }
                Ok(widest(&schemas))
            }
            other => other,
        }
    }

    async fn infer_together(&self, file: &FileSource) -> Result<SchemaRef> {
        if file.path.contains("://") {
            self.register_object_store(&file.path)?;
        }
        let p = file.path.as_str();
        let df = match file.format {
            FileFormat::Csv => self.ctx.read_csv(p, file.csv_options()).await?,
            FileFormat::Parquet => self.ctx.read_parquet(p, ParquetReadOptions::default()).await?,
            FileFormat::Json => self.ctx.read_json(p, file.json_options()).await?,
        };
        Ok(Arc::new(df.schema().as_arrow().clone()))
    }

    /// The schema of a registered table.
    pub async fn table_schema(&self, table: TableReference) -> Option<SchemaRef> {
        self.ctx.table_provider(table).await.ok().map(|t| t.schema())
    }

    /// Reads a local CSV source file by file, in one partition, so that a
    /// parse error's line number counts from the top of its file. Returns the
    /// file and the reader's message for the first bad row.
    pub async fn first_bad_row(&self, file: &FileSource, schema: &SchemaRef) -> Option<(Utf8PathBuf, String)> {
        use futures::StreamExt;
        let config = SessionConfig::new().with_target_partitions(1).with_repartition_file_scans(false);
        let ctx = SessionContext::new_with_config(config);
        for path in file.local_files() {
            let single = FileSource { path: path.to_string(), ..FileSource::local(&path, file.format) };
            let single = FileSource { csv: file.csv.clone(), compression: file.compression, ..single };
            let Ok(df) = ctx.read_csv(path.as_str(), single.csv_options().schema(schema)).await else { continue };
            let Ok(mut rows) = df.execute_stream().await else { continue };
            while let Some(batch) = rows.next().await {
                if let Err(e) = batch {
                    let message = e.find_root().strip_backtrace().lines().next().unwrap_or_default().to_owned();
                    return Some((path, message));
                }
            }
        }
        None
    }

    /// Maps a SQL type name (`bigint`, `varchar(20)`, `numeric(10,2)`) to an
    /// Arrow type the way DataFusion's planner does.
    pub async fn sql_type(&self, sql_type: &str) -> Result<DataType> {
        let plan = self.plan(&format!("SELECT CAST(NULL AS {sql_type}) AS t")).await?;
        Ok(plan.schema().field(0).data_type().clone())
    }
}

/// A file source as the reader sees it: where, what format, and how to
/// parse it.
#[derive(Debug, Clone)]
pub struct FileSource {
    /// An absolute local path (file, directory or glob) or a URL.
    pub path: String,
    pub format: FileFormat,
    pub compression: FileCompressionType,
    /// Suffix that files must end in to be read (`.csv`, `.csv.gz`).
    pub extension: String,
    pub csv: CsvSettings,
}

impl FileSource {
    /// A local file or directory with default settings for its format.
    pub fn local(path: &Utf8Path, format: FileFormat) -> Self {
        let extension = match path.file_name() {
            Some(name) if !path.is_dir() => name.find('.').map_or_else(String::new, |i| name[i..].to_owned()),
            _ => format!(".{}", format.default_extension()),
        };
        FileSource {
            path: path.to_string(),
            format,
            compression: FileCompressionType::UNCOMPRESSED,
            extension,
            csv: CsvSettings::default(),
        }
    }

    /// The local files a file, directory or glob source reads, in name
    /// order (none for URLs).
    pub fn local_files(&self) -> Vec<Utf8PathBuf> {
        let path = Utf8Path::new(&self.path);
        if path.is_file() {
            return vec![path.to_owned()];
        }
        let glob = self.path.contains(['*', '?', '[']) && !self.path.contains("://");
        let (root, matcher) = if glob {
            // Walk from the last directory before the first wildcard; the
            // pattern is rebuilt from the same (normalised) components as
            // the walked paths, so `./` in the path cannot stop a match.
            let wild = |c: &camino::Utf8Component<'_>| c.as_str().contains(['*', '?', '[']);
            let root: Utf8PathBuf = path.components().take_while(|c| !wild(c)).collect();
            let pattern: Utf8PathBuf = path.components().collect();
            let Ok(g) = globset::GlobBuilder::new(pattern.as_str()).literal_separator(true).build() else {
                return Vec::new();
            };
            (root, Some(g.compile_matcher()))
        } else {
            (path.to_owned(), None)
        };
        if !root.is_dir() {
            return Vec::new();
        }
        let mut files: Vec<Utf8PathBuf> = walkdir::WalkDir::new(&root)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .filter_map(|e| Utf8PathBuf::from_path_buf(e.into_path()).ok())
            .filter(|p| match &matcher {
                Some(m) => m.is_match(p.as_std_path()),
                None => p.as_str().ends_with(&self.extension),
            })
            .collect();
        files.sort();
        files
    }

    /// The first field of the CSV file `path` that holds exactly `value`,
    /// past the header: the line its record starts on and its column's name
    /// (`column_N` without a header).
    pub fn find_field(&self, path: &Utf8Path, value: &str) -> Option<(u64, String)> {
        if self.compression != FileCompressionType::UNCOMPRESSED {
            return None;
        }
        let mut reader = self.csv_reader(path)?;
        let mut row = csv::ByteRecord::new();
        let mut header = None;
        while reader.read_byte_record(&mut row).ok()? {
            if self.csv.header && header.is_none() {
                header = Some(row.clone());
                continue;
            }
            if let Some(k) = row.iter().position(|f| f == value.as_bytes()) {
                let name = header
                    .as_ref()
                    .and_then(|h| h.get(k))
                    .map_or_else(|| format!("column_{}", k + 1), |n| String::from_utf8_lossy(n).into_owned());
                return Some((row.position()?.line(), name));
            }
        }
        None
    }

    /// A CSV header that names a column twice: the header's line, the
    /// name, and the two positions (1-based). DataFusion would merge the
    /// two into one column and then fail on every row's field count.
    pub fn duplicate_header(&self, path: &Utf8Path) -> Option<(u64, String, usize, usize)> {
        if self.format != FileFormat::Csv || !self.csv.header || self.compression != FileCompressionType::UNCOMPRESSED {
            return None;
        }
        let mut reader = self.csv_reader(path)?;
        let mut header = csv::ByteRecord::new();
        if !reader.read_byte_record(&mut header).ok()? {
            return None;
        }
        let names: Vec<&[u8]> = header.iter().collect();
        for (j, name) in names.iter().enumerate() {
            if let Some(i) = names[..j].iter().position(|n| n == name) {
                let line = header.position().map_or(1, csv::Position::line);
                return Some((line, String::from_utf8_lossy(name).into_owned(), i + 1, j + 1));
            }
        }
        None
    }

    /// The first structural defect of the local file `path`, as its line
    /// and the problem in words: a CSV record whose field count differs from
    /// the first record's, or bytes of newline-delimited JSON that are not
    /// JSON. `None` when the file has none (or is compressed).
    pub fn first_malformed(&self, path: &Utf8Path) -> Option<(u64, String)> {
        if self.compression != FileCompressionType::UNCOMPRESSED {
            return None;
        }
        match self.format {
            FileFormat::Csv => {
                let mut reader = self.csv_reader(path)?;
                let mut row = csv::ByteRecord::new();
                let mut width = None;
                while reader.read_byte_record(&mut row).ok()? {
                    let line = row.position()?.line();
                    match width {
                        None => width = Some(row.len()),
                        Some(w) if row.len() != w => {
                            let first = if self.csv.header { "the header has" } else { "the first row has" };
                            return Some((line, format!("this row has {} fields where {first} {w}", row.len())));
                        }
                        Some(_) => {}
                    }
                }
                None
            }
            FileFormat::Json => {
                let file = std::io::BufReader::new(std::fs::File::open(path).ok()?);
                let values = serde_json::Deserializer::from_reader(file).into_iter::<serde_json::Value>();
                for v in values {
                    if let Err(e) = v {
                        let text = e.to_string();
                        let what = text.split(" at line ").next().unwrap_or(&text);
                        // Column 0 is the line break that ended the line
                        // before: the defect is at that line's end.
                        return Some(match (e.line(), e.column()) {
                            (line, 0) if line > 1 => {
                                ((line - 1) as u64, format!("not valid JSON: {what} (at the line's end)"))
                            }
                            (line, column) => (line as u64, format!("not valid JSON: {what} (column {column})")),
                        });
                    }
                }
                None
            }
            FileFormat::Parquet => None,
        }
    }

    /// A reader of the CSV file `path` record by record, with the
    /// source's dialect and header; `None` when it is compressed or cannot
    /// be opened.
    pub fn csv_records(&self, path: &Utf8Path) -> Option<csv::Reader<std::fs::File>> {
        if self.compression != FileCompressionType::UNCOMPRESSED {
            return None;
        }
        self.csv_builder(self.csv.header).from_path(path).ok()
    }

    /// A reader of the CSV file `path` that takes its header as a record.
    fn csv_reader(&self, path: &Utf8Path) -> Option<csv::Reader<std::fs::File>> {
        self.csv_builder(false).from_path(path).ok()
    }

    pub fn csv_builder(&self, header: bool) -> csv::ReaderBuilder {
        let c = &self.csv;
        let mut b = csv::ReaderBuilder::new();
        b.has_headers(header).flexible(true).delimiter(c.delimiter).quote(c.quote).escape(c.escape);
        b
    }

    /// The line on which record `record` (0-based, the header row counted)
    /// of the CSV file `path` starts: a quoted field may hold line breaks,
    /// so records and lines part ways. `None` for compressed files.
    pub fn line_of_record(&self, path: &Utf8Path, record: usize) -> Option<u64> {
        if self.compression != FileCompressionType::UNCOMPRESSED {
            return None;
        }
        let mut reader = self.csv_reader(path)?;
        let mut row = csv::ByteRecord::new();
        for _ in 0..=record {
            if !reader.read_byte_record(&mut row).ok()? {
                return None;
            }
        }
        row.position().map(csv::Position::line)
    }

    fn csv_options(&self) -> CsvReadOptions<'_> {
        let c = &self.csv;
        let mut o = CsvReadOptions::new()
            .has_header(c.header)
            .delimiter(c.delimiter)
            .quote(c.quote)
            .file_extension(&self.extension)
            .file_compression_type(self.compression);
        if let Some(e) = c.escape {
            o = o.escape(e);
        }
        if let Some(r) = &c.null_regex {
            o = o.null_regex(Some(r.clone()));
        }
        o
    }

    fn json_options(&self) -> JsonReadOptions<'_> {
        JsonReadOptions::default().file_extension(&self.extension).file_compression_type(self.compression)
    }
}

/// File formats ferry reads directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    Parquet,
    Json,
}

impl FileFormat {
    pub const NAMES: [&'static str; 5] = ["csv", "parquet", "json", "ndjson", "jsonl"];

    fn default_extension(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Parquet => "parquet",
            Self::Json => "json",
        }
    }

    /// From a declared `format:`, or else the file's extension.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "csv" | "tsv" | "txt" => Some(Self::Csv),
            "parquet" | "pq" => Some(Self::Parquet),
            "json" | "ndjson" | "jsonl" => Some(Self::Json),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sql_types_map_to_arrow() {
        let e = Engine::new(&EngineOptions::default()).unwrap();
        assert_eq!(e.sql_type("bigint").await.unwrap(), DataType::Int64);
        assert_eq!(e.sql_type("numeric(10,2)").await.unwrap(), DataType::Decimal128(10, 2));
        assert!(e.sql_type("no_such_type").await.is_err());
    }

    #[tokio::test]
    async fn plans_against_schema_only_tables_in_source_schemas() {
        use datafusion::arrow::datatypes::{Field, Schema};
        let e = Engine::new(&EngineOptions::default()).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        e.register_schema_only(TableReference::partial("crm", "customers"), schema).unwrap();
        let plan = e.plan("select id + 1 as next_id from \"crm\".\"customers\"").await.unwrap();
        assert_eq!(plan.schema().field(0).name(), "next_id");
    }

    /// Each partition reads its own byte range of a file, whichever is
    /// polled first: the first rows of partition k come after those of
    /// partition k - 1, as in the file, on every run.
    #[tokio::test]
    async fn partitions_read_their_own_ranges_of_a_file() {
        use datafusion::arrow::array::AsArray;
        use datafusion::arrow::datatypes::{Field, Int64Type, Schema};
        use futures::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let path = Utf8PathBuf::from_path_buf(dir.path().join("n.csv")).unwrap();
        let text: String = std::iter::once("n\n".to_owned()).chain((0..200_000).map(|i| format!("{i}\n"))).collect();
        fs_err::write(&path, text).unwrap();
        let e = Engine::new(&EngineOptions { target_partitions: 4, ..EngineOptions::default() }).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        e.register_file(TableReference::bare("n"), &FileSource::local(&path, FileFormat::Csv), &schema).await.unwrap();
        let mut streams = e.execute_partitioned(e.plan("select n from n").await.unwrap()).await.unwrap();
        assert_eq!(streams.len(), 4);
        // The last partition is polled first.
        let mut firsts = Vec::new();
        for stream in streams.iter_mut().rev() {
            let batch = stream.next().await.unwrap().unwrap();
            firsts.push(batch.column(0).as_primitive::<Int64Type>().value(0));
        }
        firsts.reverse();
        assert_eq!(firsts[0], 0, "{firsts:?}");
        assert!(firsts.is_sorted(), "{firsts:?}");
    }
}
