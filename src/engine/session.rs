//! The one place that builds DataFusion's session: configuration, catalog
//! layout (models in `public`, each source in a schema of its own) and
//! table registration. Other modules see [`Engine`], not a raw context.

use std::sync::Arc;

use camino::Utf8Path;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{MemorySchemaProvider, TableProvider};
use datafusion::common::TableReference;
use datafusion::datasource::empty::EmptyTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions};

/// Catalog and schema that models and seeds live in.
pub const CATALOG: &str = "datafusion";
pub const MODEL_SCHEMA: &str = "public";

/// Settings for the session.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub target_partitions: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions { target_partitions: std::thread::available_parallelism().map_or(2, usize::from) }
    }
}

/// The embedded query engine.
#[derive(Clone)]
pub struct Engine {
    ctx: SessionContext,
    /// One snapshot for planning: cloning a session state copies every
    /// function registry, and the snapshot shares the catalog, so it sees
    /// tables registered later.
    planning: Arc<SessionState>,
}

impl Engine {
    /// A session with span collection on, so planning errors carry positions.
    pub fn new(options: &EngineOptions) -> Self {
        let mut config = SessionConfig::new()
            .with_information_schema(false)
            .with_default_catalog_and_schema(CATALOG, MODEL_SCHEMA)
            .with_target_partitions(options.target_partitions.max(1));
        config.options_mut().sql_parser.collect_spans = true;
        let ctx = SessionContext::new_with_config(config);
        let planning = Arc::new(ctx.state());
        Engine { ctx, planning }
    }

    /// A snapshot of the session state, for planning.
    pub fn state(&self) -> SessionState {
        self.ctx.state()
    }

    /// Parses and plans one SQL statement (no execution).
    pub async fn plan(&self, sql: &str) -> Result<LogicalPlan> {
        let state = &self.planning;
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state.sql_to_statement(sql, &dialect)?;
        let plan = state.statement_to_plan(statement).await?;
        state.analyzer().execute_and_check(plan, state.config_options(), |_, _| {})
    }

    /// Makes sure a schema (namespace) exists for a source.
    pub fn ensure_schema(&self, name: &str) -> Result<()> {
        let catalog = self
            .ctx
            .catalog(CATALOG)
            .ok_or_else(|| DataFusionError::Internal(format!("catalog `{CATALOG}` is missing")))?;
        if catalog.schema(name).is_none() {
            catalog.register_schema(name, Arc::new(MemorySchemaProvider::new()))?;
        }
        Ok(())
    }

    /// Registers a table that has a schema and no rows: enough to plan
    /// queries that read it, without inlining its definition.
    pub fn register_schema_only(&self, table: TableReference, schema: SchemaRef) -> Result<()> {
        self.register(table, Arc::new(EmptyTable::new(schema)))
    }

    /// Registers (or replaces) a table provider.
    pub fn register(&self, table: TableReference, provider: Arc<dyn TableProvider>) -> Result<()> {
        if let Some(schema) = table.schema() {
            self.ensure_schema(schema)?;
        }
        self.ctx.deregister_table(table.clone())?;
        self.ctx.register_table(table, provider)?;
        Ok(())
    }

    /// Registers a file (or directory, or glob) as a lazily read table with a
    /// known schema.
    pub async fn register_file(
        &self,
        table: TableReference,
        path: &Utf8Path,
        format: FileFormat,
        schema: &SchemaRef,
    ) -> Result<()> {
        if let Some(s) = table.schema() {
            self.ensure_schema(s)?;
        }
        self.ctx.deregister_table(table.clone())?;
        let p = path.as_str();
        match format {
            FileFormat::Csv => {
                self.ctx.register_csv(table, p, CsvReadOptions::new().has_header(true).schema(schema)).await
            }
            FileFormat::Parquet => {
                self.ctx.register_parquet(table, p, ParquetReadOptions::default().schema(schema)).await
            }
            FileFormat::Json => {
                let ext = path.extension().map(|e| format!(".{e}")).unwrap_or_default();
                self.ctx.register_json(table, p, JsonReadOptions::default().file_extension(&ext).schema(schema)).await
            }
        }
    }

    /// The schema DataFusion infers for a file, by format.
    pub async fn infer_schema(&self, path: &Utf8Path, format: FileFormat) -> Result<SchemaRef> {
        let p = path.as_str();
        let df = match format {
            FileFormat::Csv => self.ctx.read_csv(p, CsvReadOptions::new().has_header(true)).await?,
            FileFormat::Parquet => self.ctx.read_parquet(p, ParquetReadOptions::default()).await?,
            FileFormat::Json => {
                let ext = path.extension().map(|e| format!(".{e}")).unwrap_or_default();
                self.ctx.read_json(p, JsonReadOptions::default().file_extension(&ext)).await?
            }
        };
        Ok(Arc::new(df.schema().as_arrow().clone()))
    }

    /// Maps a SQL type name (`bigint`, `varchar(20)`, `numeric(10,2)`) to an
    /// Arrow type the way DataFusion's planner does.
    pub async fn sql_type(&self, sql_type: &str) -> Result<DataType> {
        let plan = self.plan(&format!("SELECT CAST(NULL AS {sql_type}) AS t")).await?;
        Ok(plan.schema().field(0).data_type().clone())
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
        let e = Engine::new(&EngineOptions::default());
        assert_eq!(e.sql_type("bigint").await.unwrap(), DataType::Int64);
        assert_eq!(e.sql_type("numeric(10,2)").await.unwrap(), DataType::Decimal128(10, 2));
        assert!(e.sql_type("no_such_type").await.is_err());
    }

    #[tokio::test]
    async fn plans_against_schema_only_tables_in_source_schemas() {
        use datafusion::arrow::datatypes::{Field, Schema};
        let e = Engine::new(&EngineOptions::default());
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        e.register_schema_only(TableReference::partial("crm", "customers"), schema).unwrap();
        let plan = e.plan("select id + 1 as next_id from \"crm\".\"customers\"").await.unwrap();
        assert_eq!(plan.schema().field(0).name(), "next_id");
    }
}
