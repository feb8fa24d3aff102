//! Turns a physical plan that ends in a global sort into one whose output
//! partitions each hold whole keys, sorted: the sort's input is hash
//! repartitioned on the key and every partition is sorted on its own.
//!
//! A global sort funnels every row through one merge and one consumer; the
//! keyed form keeps all partitions busy through to their consumers, at the
//! cost of a hash exchange. It owns no execution and no configuration.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_expr::expressions::col;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{ExecutionPlan, Partitioning};

/// Rewrites the topmost sort of `plan` (a merge of sorted partitions, or a
/// single sort) into `partitions` hash partitions on `key`, each sorted by
/// the same ordering. The sort's ordering must lead with `key` for the rows
/// of one key to be neighbours; that is the caller's SQL.
pub fn sort_within_key_partitions(
    plan: Arc<dyn ExecutionPlan>,
    key: &[String],
    partitions: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    let rewritten = plan.transform_down(|node| {
        let sort = match node.downcast_ref::<SortPreservingMergeExec>() {
            Some(merge) => merge.input().downcast_ref::<SortExec>(),
            None => node.downcast_ref::<SortExec>(),
        };
        let Some(sort) = sort.filter(|s| s.fetch().is_none()) else { return Ok(Transformed::no(node)) };
        let input = Arc::clone(sort.input());
        let schema = input.schema();
        let hash = key.iter().map(|k| col(k, &schema)).collect::<Result<Vec<_>>>()?;
        let exchange = Arc::new(RepartitionExec::try_new(input, Partitioning::Hash(hash, partitions.max(1)))?);
        let sorted = SortExec::new(sort.expr().clone(), exchange).with_preserve_partitioning(true);
        Ok(Transformed::new(Arc::new(sorted) as Arc<dyn ExecutionPlan>, true, TreeNodeRecursion::Jump))
    })?;
    if !rewritten.transformed {
        return Err(DataFusionError::Internal("the plan to group by key has no sort; this is a bug".into()));
    }
    Ok(rewritten.data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::Int64Type;
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::prelude::SessionContext;
    use futures::TryStreamExt;

    #[tokio::test]
    async fn every_partition_holds_whole_keys_in_order() -> Result<()> {
        let ctx = SessionContext::new_with_config(datafusion::prelude::SessionConfig::new().with_target_partitions(3));
        // 4 input batches, keys spread across them, 3 rows per key.
        let keys: Vec<i64> = (0..600).map(|i| (i * 7) % 200).collect();
        let batches: Vec<RecordBatch> = keys
            .chunks(150)
            .map(|c| {
                let k = Int64Array::from(c.to_vec());
                let v = Int64Array::from(c.iter().map(|x| -x).collect::<Vec<_>>());
                RecordBatch::try_from_iter([("k", Arc::new(k) as _), ("v", Arc::new(v) as _)])
            })
            .collect::<std::result::Result<_, _>>()?;
        let schema = batches[0].schema();
        let table =
            datafusion::datasource::MemTable::try_new(schema, vec![batches[..2].to_vec(), batches[2..].to_vec()])?;
        ctx.register_table("t", Arc::new(table))?;
        let plan = ctx.sql("SELECT k, v FROM t ORDER BY k, v").await?.create_physical_plan().await?;
        let grouped = sort_within_key_partitions(plan, &["k".to_owned()], 3)?;
        assert_eq!(
            datafusion::physical_plan::ExecutionPlanProperties::output_partitioning(&grouped).partition_count(),
            3
        );
        let streams = datafusion::physical_plan::execute_stream_partitioned(grouped, ctx.task_ctx())?;
        let mut seen = std::collections::HashMap::new();
        let mut total = 0;
        for (p, stream) in streams.into_iter().enumerate() {
            let batches: Vec<RecordBatch> = stream.try_collect().await?;
            let ks: Vec<i64> =
                batches.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect();
            assert!(ks.windows(2).all(|w| w[0] <= w[1]), "partition {p} is sorted");
            for k in ks {
                total += 1;
                assert_eq!(*seen.entry(k).or_insert(p), p, "key {k} is in one partition");
            }
        }
        assert_eq!(total, 600);
        Ok(())
    }

    #[tokio::test]
    async fn a_plan_without_a_sort_is_refused() -> Result<()> {
        let ctx = SessionContext::new();
        let plan = ctx.sql("SELECT 1 AS k").await?.create_physical_plan().await?;
        assert!(sort_within_key_partitions(plan, &["k".to_owned()], 2).is_err());
        Ok(())
    }
}
