//! A column's distinct values estimated, past the bound on those counted
//! one by one: DataFusion's `approx_distinct` (a HyperLogLog of 16,384
//! registers, standard error about 0.8%) over the values' hashes.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ScalarValue;
use datafusion::functions_aggregate::approx_distinct::approx_distinct_udaf;
use datafusion::logical_expr::Accumulator;
use datafusion::logical_expr::function::AccumulatorArgs;
use datafusion::physical_expr::expressions::Column;

/// `approx_distinct` takes a `UInt64` column and answers one: its calls
/// fail only on other types.
const UINT64: &str = "approx_distinct counts a UInt64 column";

/// The estimate of how many distinct values hash as those added.
#[derive(Debug)]
pub(super) struct Sketch(Box<dyn Accumulator>);

impl Sketch {
    /// A sketch of the values hashed `hashes`.
    pub(super) fn of(hashes: impl IntoIterator<Item = u64>) -> Sketch {
        let field = Arc::new(Field::new("hash", DataType::UInt64, false));
        let schema = Schema::new(vec![Arc::clone(&field)]);
        let args = AccumulatorArgs {
            return_field: Arc::new(Field::new("distinct", DataType::UInt64, false)),
            schema: &schema,
            ignore_nulls: false,
            order_bys: &[],
            is_reversed: false,
            name: "approx_distinct(hash)",
            is_distinct: false,
            exprs: &[Arc::new(Column::new("hash", 0))],
            expr_fields: &[field],
        };
        let mut sketch = Sketch(approx_distinct_udaf().accumulator(args).expect(UINT64));
        sketch.add(hashes);
        sketch
    }

    pub(super) fn add(&mut self, hashes: impl IntoIterator<Item = u64>) {
        let hashes: ArrayRef = Arc::new(UInt64Array::from_iter_values(hashes));
        self.0.update_batch(&[hashes]).expect(UINT64);
    }

    /// Adds the values `other` saw.
    pub(super) fn merge(&mut self, mut other: Sketch) {
        let state = other.0.state().expect(UINT64);
        let state: Vec<ArrayRef> = state.iter().map(ScalarValue::to_array).collect::<Result<_, _>>().expect(UINT64);
        self.0.merge_batch(&state).expect(UINT64);
    }

    pub(super) fn estimate(&mut self) -> u64 {
        match self.0.evaluate().expect(UINT64) {
            ScalarValue::UInt64(Some(n)) => n,
            other => unreachable!("{UINT64}, not {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Sketch;

    fn hash(i: u64) -> u64 {
        xxhash_rust::xxh3::xxh3_64(format!("value {i}").as_bytes())
    }

    /// Within 3% (nearly four standard errors) of the true count, each
    /// value counted once however often it was added, and sketches merged
    /// as their union.
    #[test]
    fn a_sketch_estimates_the_distinct_values_of_its_union() {
        let within = |estimate: u64, truth: u64| (estimate as f64 - truth as f64).abs() / (truth as f64) < 0.03;
        let mut a = Sketch::of((0..300_000).map(hash));
        a.add((0..300_000).map(hash));
        assert!(within(a.estimate(), 300_000), "{}", a.estimate());
        let b = Sketch::of((200_000..500_000).map(hash));
        a.merge(b);
        assert!(within(a.estimate(), 500_000), "{}", a.estimate());
    }
}
