//! SQL functions ferry adds to DataFusion.
//!
//! `ferry_parses(text, kind, format)`: whether `text` parses as `kind`
//! (`date`, `timestamp`, `number`, `integer`) with a chrono `format` such as
//! `%d/%m/%Y` (empty: ISO 8601). NULL for NULL text. DataFusion's own
//! `to_date(text, format)` fails the query on the first bad value, which a
//! row rule must not do; this one answers per row.
//!
//! `try_to_date`, `try_to_timestamp` and the other [`TRY_WRAPPED`]
//! functions: the function, NULL where it fails on a row instead of failing
//! the query (as `try_cast` is to `cast`). Models that quarantine
//! conversion errors call them in place of the originals.
//!
//! `mod(a, b)`: the remainder of `a / b`, as PostgreSQL's `mod` (and the
//! `%` operator) gives it, with the sign of `a`; for integers an integer,
//! else a double. dbt's packages call it (dbt-utils' `width_bucket`).
//!
//! `coalesce`, `greatest` and `least` resolve their arguments' type as
//! PostgreSQL does where DataFusion finds none: text beside a date or a time
//! is read as that type (`coalesce(valid_to, '2099-01-01')`, as dbt-utils'
//! `mutually_exclusive_ranges` and many slowly changing dimensions write
//! it); DataFusion alone refuses a date and text. Otherwise they are
//! DataFusion's own.
//!
//! `round(x, n)` is DataFusion's, with `n` taken as the integer it is
//! written as: DataFusion's own casts a literal `n` to a 32-bit integer
//! while planning, after which it no longer sees the literal and plans
//! `round(decimal(28,6), 0)` as `decimal(29,6)` while computing
//! `decimal(28,0)`; a query over such a column (a view) then fails with
//! "Invalid comparison operation". Here planned and computed types agree.
//!
//! `ferry_row_hash(a, b, ...)`: a 128-bit hash (xxh3) of the values, as
//! 16 bytes, for change detection. Values are hashed in Arrow's row
//! encoding after their types are made canonical, so a column read as a
//! string view and one read as a string hash alike; NULL is a value.

use std::sync::Arc;

use crate::values::ParseKind;
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, new_null_array};
use datafusion::arrow::compute::{cast, concat};
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{ScalarValue, exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

/// Every function to register.
pub fn all() -> Vec<ScalarUDF> {
    vec![ScalarUDF::from(Parses::new()), ScalarUDF::from(RowHash::new()), ScalarUDF::from(Mod::new())]
}

/// DataFusion's functions that convert a value and fail the query on one
/// that does not convert; each has a `try_` form.
pub const TRY_WRAPPED: &[&str] = &[
    "to_date",
    "to_time",
    "to_timestamp",
    "to_timestamp_seconds",
    "to_timestamp_millis",
    "to_timestamp_micros",
    "to_timestamp_nanos",
    "to_unixtime",
    "make_date",
    "make_time",
];

/// `inner`, NULL on the rows it fails on.
pub fn try_form(inner: Arc<ScalarUDF>) -> ScalarUDF {
    ScalarUDF::new_from_impl(TryForm { name: format!("try_{}", inner.name()), inner })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct TryForm {
    name: String,
    inner: Arc<ScalarUDF>,
}

impl TryForm {
    /// Rows `offset..offset + len` of `args`, evaluated; where the function
    /// fails, the rows are halved until each failing row is found and NULL.
    fn rows(&self, args: &ScalarFunctionArgs, offset: usize, len: usize) -> Result<ArrayRef> {
        let sliced = ScalarFunctionArgs {
            args: args
                .args
                .iter()
                .map(|a| match a {
                    ColumnarValue::Array(a) => ColumnarValue::Array(a.slice(offset, len)),
                    scalar => scalar.clone(),
                })
                .collect(),
            arg_fields: args.arg_fields.clone(),
            number_rows: len,
            return_field: Arc::clone(&args.return_field),
            config_options: Arc::clone(&args.config_options),
        };
        match self.inner.invoke_with_args(sliced) {
            Ok(v) => v.to_array(len),
            Err(e) if !is_value_error(&e) => Err(e),
            Err(_) if len == 1 => Ok(new_null_array(args.return_type(), 1)),
            Err(_) => {
                let half = len / 2;
                let (a, b) = (self.rows(args, offset, half)?, self.rows(args, offset + half, len - half)?);
                Ok(concat(&[a.as_ref(), b.as_ref()])?)
            }
        }
    }
}

/// Whether an error is about the values (one that does not convert), not
/// about resources or the query.
fn is_value_error(e: &datafusion::error::DataFusionError) -> bool {
    use datafusion::error::DataFusionError as E;
    matches!(e.find_root(), E::Execution(_) | E::ArrowError(..))
}

impl ScalarUDFImpl for TryForm {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        self.inner.return_type(args)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let field = self.inner.return_field_from_args(args)?;
        Ok(Arc::new(field.as_ref().clone().with_nullable(true)))
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let all_scalar = args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
        match self.inner.invoke_with_args(args.clone()) {
            Ok(v) => Ok(v),
            Err(e) if !is_value_error(&e) => Err(e),
            Err(_) if all_scalar => Ok(ColumnarValue::Scalar(ScalarValue::try_from(args.return_type())?)),
            Err(_) => Ok(ColumnarValue::Array(self.rows(&args, 0, args.number_rows)?)),
        }
    }
}

/// The functions whose arguments [`one_type`] resolves to one type.
pub const ONE_TYPE: &[&str] = &["coalesce", "greatest", "least"];

/// `inner` (one of [`ONE_TYPE`]), with text beside a date or a time
/// coerced to that type.
pub fn one_type(inner: Arc<ScalarUDF>) -> ScalarUDF {
    ScalarUDF::new_from_impl(OneType { inner })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct OneType {
    inner: Arc<ScalarUDF>,
}

impl ScalarUDFImpl for OneType {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        self.inner.return_type(args)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let is_text = |t: &DataType| matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8);
        match arg_types.iter().find(|t| t.is_temporal()) {
            Some(time) if arg_types.iter().any(is_text) => {
                let read: Vec<DataType> =
                    arg_types.iter().map(|t| if is_text(t) { time.clone() } else { t.clone() }).collect();
                self.inner.coerce_types(&read)
            }
            _ => self.inner.coerce_types(arg_types),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.inner.invoke_with_args(args)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn conditional_arguments<'a>(&self, args: &'a [Expr]) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.inner.conditional_arguments(args)
    }

    fn documentation(&self) -> Option<&datafusion::logical_expr::Documentation> {
        self.inner.documentation()
    }
}

/// DataFusion's `round` (`inner`), its decimal places left as written.
pub fn round(inner: Arc<ScalarUDF>) -> ScalarUDF {
    ScalarUDF::new_from_impl(Round { inner, signature: Signature::user_defined(Volatility::Immutable) })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Round {
    inner: Arc<ScalarUDF>,
    signature: Signature,
}

impl ScalarUDFImpl for Round {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        use datafusion::arrow::datatypes::Field;
        let fields: Vec<FieldRef> = arg_types.iter().map(|t| Arc::new(Field::new("", t.clone(), true))).collect();
        let mut types: Vec<DataType> =
            datafusion::logical_expr::type_coercion::functions::fields_with_udf(&fields, self.inner.as_ref())?
                .iter()
                .map(|f| f.data_type().clone())
                .collect();
        if let (Some(given), Some(places)) = (arg_types.get(1), types.get_mut(1))
            && given.is_integer()
        {
            *places = given.clone();
        }
        Ok(types)
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        self.inner.return_type(args)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let Some(places) = args.args.get_mut(1)
            && places.data_type() != DataType::Int32
        {
            *places = places.cast_to(&DataType::Int32, None)?;
            let field = args.arg_fields[1].as_ref().clone().with_data_type(DataType::Int32);
            args.arg_fields[1] = Arc::new(field);
        }
        self.inner.invoke_with_args(args)
    }

    fn is_strict(&self) -> bool {
        self.inner.is_strict()
    }

    fn output_ordering(
        &self,
        inputs: &[datafusion::logical_expr::sort_properties::ExprProperties],
    ) -> Result<datafusion::logical_expr::sort_properties::SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn documentation(&self) -> Option<&datafusion::logical_expr::Documentation> {
        self.inner.documentation()
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Parses {
    signature: Signature,
}

impl Parses {
    fn new() -> Self {
        Parses { signature: Signature::new(TypeSignature::Any(3), Volatility::Immutable) }
    }
}

/// Whether `text` parses as `kind` with `format` (empty: the ISO forms).
pub fn parses(text: &str, kind: ParseKind, format: &str) -> bool {
    let t = text.trim();
    match (kind, format) {
        (ParseKind::Date, "") => NaiveDate::parse_from_str(t, "%Y-%m-%d").is_ok(),
        (ParseKind::Date, f) => NaiveDate::parse_from_str(t, f).is_ok(),
        (ParseKind::Timestamp, "") => {
            DateTime::parse_from_rfc3339(t).is_ok()
                || ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
                    .iter()
                    .any(|f| NaiveDateTime::parse_from_str(t, f).is_ok())
        }
        (ParseKind::Timestamp, f) => {
            NaiveDateTime::parse_from_str(t, f).is_ok() || DateTime::parse_from_str(t, f).is_ok()
        }
        (ParseKind::Number, _) => t.parse::<f64>().is_ok_and(f64::is_finite),
        (ParseKind::Integer, _) => t.parse::<i64>().is_ok(),
    }
}

fn literal(v: &ColumnarValue, what: &str) -> Result<String> {
    match v {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)),
        ) => Ok(s.clone()),
        _ => exec_err!("ferry_parses: {what} must be a text literal"),
    }
}

impl ScalarUDFImpl for Parses {
    fn name(&self) -> &str {
        "ferry_parses"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if args.len() != 3 {
            return plan_err!("ferry_parses(text, kind, format) takes three arguments");
        }
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let kind_text = literal(&args.args[1], "kind")?;
        let Some(kind) = ParseKind::parse(&kind_text) else {
            return exec_err!("ferry_parses: unknown kind `{kind_text}`");
        };
        let format = literal(&args.args[2], "format")?;
        let values = args.args[0].to_array(args.number_rows)?;
        let text = cast(&values, &DataType::Utf8)?;
        let text = text.as_string::<i32>();
        let out: BooleanArray =
            (0..text.len()).map(|i| (!text.is_null(i)).then(|| parses(text.value(i), kind, &format))).collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct RowHash {
    signature: Signature,
}

impl RowHash {
    fn new() -> Self {
        RowHash { signature: Signature::new(TypeSignature::VariadicAny, Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for RowHash {
    fn name(&self) -> &str {
        "ferry_row_hash"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::FixedSizeBinary(16))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        use datafusion::arrow::array::FixedSizeBinaryBuilder;
        use datafusion::arrow::row::{RowConverter, SortField};
        let n = args.number_rows;
        let mut arrays = Vec::with_capacity(args.args.len());
        for a in &args.args {
            let a = a.to_array(n)?;
            let t = crate::values::cells::value_type(a.data_type());
            // Strings and bytes of any layout (views, as readers give them)
            // make the same row bytes: only other types are cast.
            let same = crate::values::cells::one_layout(a.data_type()) == t;
            arrays.push(if same { a } else { cast(&a, &t)? });
        }
        let converter = RowConverter::new(arrays.iter().map(|a| SortField::new(a.data_type().clone())).collect())?;
        let rows = converter.convert_columns(&arrays)?;
        let mut out = FixedSizeBinaryBuilder::with_capacity(n, 16);
        for row in rows.iter() {
            out.append_value(xxhash_rust::xxh3::xxh3_128(row.as_ref()).to_le_bytes())?;
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// `mod(a, b)`: see the module's documentation.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Mod {
    signature: Signature,
}

impl Mod {
    fn new() -> Self {
        Mod { signature: Signature::user_defined(Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for Mod {
    fn name(&self) -> &str {
        "mod"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(args.first().cloned().unwrap_or(DataType::Int64))
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let integer = |t: &DataType| t.is_integer() || t.is_null();
        let number = |t: &DataType| t.is_numeric() || t.is_null();
        match args {
            [a, b] if integer(a) && integer(b) => Ok(vec![DataType::Int64, DataType::Int64]),
            [a, b] if number(a) && number(b) => Ok(vec![DataType::Float64, DataType::Float64]),
            [_, _] => plan_err!(
                "mod() takes two numbers, not {}",
                args.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" and ")
            ),
            _ => plan_err!("mod() takes two arguments, not {}", args.len()),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let all_scalar = args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [a, b] = arrays.as_slice() else { return exec_err!("mod() takes two arguments") };
        let rem = datafusion::arrow::compute::kernels::numeric::rem(a, b)?;
        if all_scalar {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&rem, 0)?));
        }
        Ok(ColumnarValue::Array(rem))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dates_timestamps_and_numbers() {
        assert!(parses("2024-02-29", ParseKind::Date, ""));
        assert!(!parses("2023-02-29", ParseKind::Date, ""));
        assert!(parses("31/12/2024", ParseKind::Date, "%d/%m/%Y"));
        assert!(!parses("12/31/2024", ParseKind::Date, "%d/%m/%Y"));
        assert!(parses("2024-01-02 03:04:05", ParseKind::Timestamp, ""));
        assert!(parses("2024-01-02T03:04:05Z", ParseKind::Timestamp, ""));
        assert!(parses("02.01.2024 03:04", ParseKind::Timestamp, "%d.%m.%Y %H:%M"));
        assert!(parses(" 12.5 ", ParseKind::Number, ""));
        assert!(!parses("12,5", ParseKind::Number, ""));
        assert!(parses("-7", ParseKind::Integer, ""));
        assert!(!parses("7.0", ParseKind::Integer, ""));
    }

    /// Runs `plan` and prints its rows as a table.
    async fn table_of(engine: &crate::engine::Engine, plan: datafusion::logical_expr::LogicalPlan) -> String {
        use futures::TryStreamExt as _;
        let batches: Vec<_> = engine.execute(plan).await.unwrap().try_collect().await.unwrap();
        datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string()
    }

    /// A value's hash does not depend on the layout its reader chose, nor
    /// on the values beside it in its batch.
    #[test]
    fn row_hashes_are_the_same_for_every_string_layout() {
        use std::collections::HashSet;

        use datafusion::arrow::array::{LargeStringArray, StringArray, StringViewArray};
        use datafusion::arrow::datatypes::Field;
        use datafusion::logical_expr::ScalarUDFImpl as _;
        let hash = |columns: Vec<ArrayRef>| {
            let arg_fields = columns.iter().map(|c| Arc::new(Field::new("c", c.data_type().clone(), true))).collect();
            let args = ScalarFunctionArgs {
                number_rows: columns[0].len(),
                args: columns.into_iter().map(ColumnarValue::Array).collect(),
                arg_fields,
                return_field: Arc::new(Field::new("h", DataType::FixedSizeBinary(16), false)),
                config_options: Default::default(),
            };
            let ColumnarValue::Array(out) = RowHash::new().invoke_with_args(args).unwrap() else { panic!() };
            out.as_fixed_size_binary().iter().map(|h| h.unwrap().to_vec()).collect::<Vec<_>>()
        };
        // A long value, past the row format's first block.
        let long = "a value longer than thirty-two bytes, in blocks";
        let values = [Some("a"), None, Some(""), Some(long)];
        let plain = hash(vec![Arc::new(StringArray::from(values.to_vec())), Arc::new(StringArray::from(vec!["x"; 4]))]);
        let views =
            hash(vec![Arc::new(StringViewArray::from(values.to_vec())), Arc::new(StringViewArray::from(vec!["x"; 4]))]);
        let large =
            hash(vec![Arc::new(LargeStringArray::from(values.to_vec())), Arc::new(StringArray::from(vec!["x"; 4]))]);
        assert_eq!(plain, views);
        assert_eq!(plain, large);
        assert_eq!(plain.iter().collect::<HashSet<_>>().len(), 4, "each value has its own hash");
        // One row alone hashes as it does among others.
        assert_eq!(
            hash(vec![Arc::new(StringViewArray::from(vec![long])), Arc::new(StringArray::from(vec!["x"]))])[0],
            plain[3]
        );
    }

    #[tokio::test]
    async fn mod_gives_postgres_remainders() {
        let engine = crate::engine::Engine::new(&Default::default()).unwrap();
        let plan = engine
            .plan("select mod(7, 3) as a, mod(-7, 3) as b, mod(7.5, 2) as c, mod(x, 4) as d from (values (10), (11)) t(x)")
            .await
            .unwrap();
        let table = table_of(&engine, plan).await;
        assert!(table.contains("| 1 | -1 | 1.5 | 2 |") && table.contains("| 1 | -1 | 1.5 | 3 |"), "{table}");
        assert!(engine.plan("select mod('a', 2)").await.unwrap_err().to_string().contains("mod() takes two numbers"));
    }

    /// A view over `round(decimal, 0)`, compared with an integer, as
    /// dbt-utils' haversine tests do: the planned and computed types agree.
    #[tokio::test]
    async fn round_plans_the_type_it_computes() {
        use datafusion::common::TableReference;
        let engine = crate::engine::Engine::new(&Default::default()).unwrap();
        let view = engine
            .plan("select round(cast(x as decimal(28,6)), 0) as r, round(x, n) as s from (values (430.4, 1)) v(x, n)")
            .await
            .unwrap();
        assert_eq!(view.schema().field(0).data_type(), &DataType::Decimal128(28, 0));
        engine.register_view(TableReference::bare("rounded"), view).unwrap();
        let plan = engine.plan("select r, s from rounded where r = cast(430 as bigint)").await.unwrap();
        let table = table_of(&engine, plan).await;
        assert!(table.contains("| 430 | 430.4 |"), "{table}");
    }

    #[tokio::test]
    async fn text_beside_a_date_or_time_takes_its_type_as_in_postgres() {
        use futures::TryStreamExt as _;
        let engine = crate::engine::Engine::new(&Default::default()).unwrap();
        let sql = "select coalesce(d, '2099-01-01') as a, greatest(t, '2020-01-01 10:00:00') as b, \
                   least(d, '2000-01-01') as c, coalesce(null, 'x') as e, coalesce(1, 2.5) as f \
                   from (values (cast(null as date), cast('2019-01-01' as timestamp))) v(d, t)";
        let plan = engine.plan(sql).await.unwrap();
        let types: Vec<String> = plan.schema().fields().iter().map(|f| f.data_type().to_string()).collect();
        assert_eq!(types, ["Date32", "Timestamp(ns)", "Date32", "Utf8", "Float64"]);
        let table = table_of(&engine, plan).await;
        assert!(table.contains("| 2099-01-01 | 2020-01-01T10:00:00 | 2000-01-01 | x | 1.0 |"), "{table}");
        // Text that is no date still fails, naming the value.
        let plan = engine.plan("select coalesce(cast(null as date), 'soon')").await.unwrap();
        let err = match engine.execute(plan).await {
            Ok(s) => s.try_collect::<Vec<_>>().await.unwrap_err(),
            Err(e) => e,
        };
        assert!(err.to_string().contains("'soon'"), "{err}");
    }
}
