//! A stage as a DataFusion table that applies its deletion files (see
//! [`super::layer`]): each Parquet file is scanned with the row selection
//! that skips its deleted rows, and filters reach the Parquet reader as a
//! listing table's do. A stage without deletion files is best registered
//! as a listing table of its directory, which a cluster reads itself.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::catalog::TableProvider;
use datafusion::common::stats::Precision;
use datafusion::common::{DFSchema, Statistics};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use super::{Dir, StagedTable};

/// The table of a stage on this machine, its deletion files applied.
#[derive(Debug)]
pub struct StageTable {
    schema: SchemaRef,
    files: Vec<PartitionedFile>,
    /// Its rows, for the planner to size joins by (never to answer a
    /// query: the statistics say it is inexact).
    statistics: Statistics,
}

impl StageTable {
    /// The table of `staged`, whose Parquet files have the columns of
    /// `schema`; an error when the stage is not on this machine or a
    /// deletion file cannot be read.
    pub fn new(staged: &StagedTable, schema: SchemaRef) -> Result<StageTable> {
        let Dir::Local(dir) = &staged.dir else {
            return Err(DataFusionError::Plan(format!("the stage at {} is not on this machine", staged.dir)));
        };
        let mut files = Vec::with_capacity(staged.manifest.files.len());
        for f in &staged.manifest.files {
            let path = dir.join(&f.name);
            let absolute = std::path::absolute(&path)?;
            let location = object_store::path::Path::from_absolute_path(&absolute)
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let mut file = PartitionedFile::new(location.to_string(), f.bytes);
            file.object_meta.location = location;
            if let Some(kept) = super::kept_rows(dir, f).map_err(DataFusionError::Execution)? {
                file =
                    file.with_extension(datafusion::datasource::physical_plan::parquet::ParquetRowSelection::new(kept));
            }
            files.push(file);
        }
        let rows = usize::try_from(staged.manifest.row_count).unwrap_or(usize::MAX);
        let statistics = Statistics::new_unknown(&schema).with_num_rows(Precision::Inexact(rows));
        Ok(StageTable { schema, files, statistics })
    }
}

#[async_trait]
impl TableProvider for StageTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn statistics(&self) -> Option<Statistics> {
        Some(self.statistics.clone())
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        // Applied by the reader where it can (row groups, pages, rows),
        // and again above the scan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut options = state.table_options().parquet.clone();
        options.global.pushdown_filters = true;
        options.global.reorder_filters = true;
        let mut source = ParquetSource::new(Arc::clone(&self.schema)).with_table_parquet_options(options);
        if let Some(predicate) = conjunction(filters.iter().cloned()) {
            let schema = DFSchema::try_from(Arc::clone(&self.schema))?;
            source = source.with_predicate(state.create_physical_expr(predicate, &schema)?);
        }
        // The files dealt out over the partitions; DataFusion splits large
        // files further.
        let partitions = state.config().target_partitions().clamp(1, self.files.len().max(1));
        let mut groups = vec![Vec::new(); partitions];
        for (k, f) in self.files.iter().enumerate() {
            groups[k % partitions].push(f.clone());
        }
        let groups = groups.into_iter().map(FileGroup::new).collect();
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), Arc::new(source))
            .with_file_groups(groups)
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .with_statistics(self.statistics.clone())
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}
