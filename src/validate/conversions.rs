//! Conversions that fail on a row quarantine the row, not the model.
//!
//! A model's plan is rewritten so that each conversion that can fail on a
//! value (`CAST` / `::`, `arrow_cast`, `to_date`, `to_timestamp` and the
//! other [`TRY_WRAPPED`] functions) takes its `try` form, which is NULL
//! where the value does not convert, and beside it a *site* column,
//! `__ferry_conv_<k>`, holds the offending input as text on exactly those
//! rows (NULL elsewhere). Each site becomes a `conversion` rule of the
//! model (see [`super::rules`]), so the splitter quarantines the row, logs
//! the input value with the function and its format, and counts it in the
//! ledger; every other row is staged.
//!
//! Rows are only followed where a row stays a row: projections, filters,
//! aliases, sorts, limits and `UNION ALL`, from the model's output down.
//! Below a join, an aggregate, a window or a `DISTINCT` a failed value
//! cannot be pinned to one output row, so conversions there stay strict
//! and fail the model as before. Inside `CASE` and `COALESCE` a conversion
//! only counts on the rows that evaluate it, so a guard such as `CASE WHEN
//! ferry_parses(x, 'date', '%d/%m/%Y') THEN to_date(x, '%d/%m/%Y') END`
//! quarantines nothing. A filter keeps a row whose condition could not be
//! evaluated because a conversion failed, so that the row is quarantined
//! rather than silently dropped.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode as _};
use datafusion::common::{Column, DFSchema, Result, ScalarValue};
use datafusion::logical_expr::expr::{Alias, Case, Cast, ScalarFunction, TryCast};
use datafusion::logical_expr::{
    Expr, ExprSchemable as _, Filter, LogicalPlan, LogicalPlanBuilder, Projection, SubqueryAlias, lit, when,
};

use crate::engine::functions::{TRY_WRAPPED, try_form};
use crate::manifest::config::Severity;
use crate::manifest::rules::{Rule, RuleKind};
use crate::project::nodes::Origin;

/// One conversion of a model that may fail on a row.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversion {
    /// The column of the plan's output holding the failing input's text.
    pub site_column: String,
    /// Where the conversion is: the output column it computes (at the
    /// projection it is in), or `WHERE`.
    pub place: String,
    /// What was asked: `to_date with format '%d/%m/%Y'`, `cast to decimal(15,2)`.
    pub function: String,
    /// What to try when it fails.
    pub suggestion: String,
}

/// A model's plan with its conversions made row errors.
pub struct Rewritten {
    /// The model's columns, then one site column per conversion.
    pub plan: LogicalPlan,
    pub conversions: Vec<Conversion>,
}

/// The `conversion` rule of each conversion, declared at `origin` (the
/// model's file).
pub fn rules(conversions: &[Conversion], origin: &Origin) -> Vec<Rule> {
    conversions
        .iter()
        .map(|c| Rule {
            name: "conversion".to_owned(),
            kind: RuleKind::Conversion { site_column: c.site_column.clone(), function: c.function.clone() },
            column: Some(c.place.clone()),
            severity: Severity::Error,
            suggestion: Some(c.suggestion.clone()),
            message: None,
            calls: None,
            origin: origin.clone(),
        })
        .collect()
}

/// The name of site `k`'s column.
pub fn site_column(k: usize) -> String {
    format!("__ferry_conv_{k}")
}

/// Rewrites `plan` (analyzed) so that conversions failing on a row flag the
/// row instead of failing the query. `None` when it has no conversion that
/// can fail where rows can be followed.
pub fn rewrite(plan: LogicalPlan) -> Result<Option<Rewritten>> {
    let mut sites = Sites::default();
    let (plan, carried) = sites.spine(plan)?;
    if carried.is_empty() {
        return Ok(None);
    }
    let conversions = carried.iter().map(|&k| sites.all[k].clone()).collect();
    Ok(Some(Rewritten { plan, conversions }))
}

/// Every site found so far, by number.
#[derive(Default)]
struct Sites {
    all: Vec<Conversion>,
}

/// A site's failure expression (the input's text where it failed) and what
/// it converts.
struct Found {
    failed: Expr,
    function: String,
    suggestion: String,
}

impl Sites {
    fn add(&mut self, place: &str, found: &Found) -> usize {
        let k = self.all.len();
        self.all.push(Conversion {
            site_column: site_column(k),
            place: place.to_owned(),
            function: found.function.clone(),
            suggestion: found.suggestion.clone(),
        });
        k
    }

    /// Rewrites the plan from its output down while rows stay rows;
    /// returns it with the sites whose columns it outputs last, in order.
    fn spine(&mut self, plan: LogicalPlan) -> Result<(LogicalPlan, Vec<usize>)> {
        match plan {
            LogicalPlan::Projection(p) => self.projection(p),
            LogicalPlan::Filter(f) => self.filter(f),
            LogicalPlan::SubqueryAlias(a) => {
                let (input, carried) = self.spine(Arc::unwrap_or_clone(a.input))?;
                Ok((LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(Arc::new(input), a.alias)?), carried))
            }
            LogicalPlan::Sort(_) | LogicalPlan::Limit(_) => {
                let exprs = plan.expressions();
                let Some(child) = plan.inputs().first().map(|c| (*c).clone()) else { return Ok((plan, Vec::new())) };
                let (input, carried) = self.spine(child)?;
                if carried.is_empty() {
                    return Ok((plan, carried));
                }
                Ok((plan.with_new_exprs(exprs, vec![input])?, carried))
            }
            LogicalPlan::Union(u) => self.union(u.inputs),
            other => Ok((other, Vec::new())),
        }
    }

    fn projection(&mut self, p: Projection) -> Result<(LogicalPlan, Vec<usize>)> {
        let (input, below) = self.spine(Arc::unwrap_or_clone(p.input))?;
        let in_schema = Arc::clone(input.schema());
        let mut exprs = Vec::with_capacity(p.expr.len());
        let mut found = Vec::new();
        for (i, e) in p.expr.into_iter().enumerate() {
            let (qualifier, field) = p.schema.qualified_field(i);
            let mut finder = Finder { schema: &in_schema, found: Vec::new() };
            let rewritten = finder.expr(e.clone(), &[])?;
            if finder.found.is_empty() {
                exprs.push(e);
                continue;
            }
            exprs.push(match rewritten {
                alias @ Expr::Alias(_) => alias,
                other => other.alias_qualified(qualifier.cloned(), field.name()),
            });
            found.extend(finder.found.into_iter().map(|f| (field.name().clone(), f)));
        }
        let mut carried = below.clone();
        exprs.extend(below.iter().map(|&k| Expr::Column(Column::new_unqualified(site_column(k)))));
        for (place, f) in found {
            let k = self.add(&place, &f);
            exprs.push(f.failed.alias(site_column(k)));
            carried.push(k);
        }
        Ok((LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(input))?), carried))
    }

    /// A filter keeps the rows it keeps, and the rows whose condition a
    /// failed conversion left unknown, to be quarantined.
    fn filter(&mut self, f: Filter) -> Result<(LogicalPlan, Vec<usize>)> {
        let (input, below) = self.spine(Arc::unwrap_or_clone(f.input))?;
        let schema = Arc::clone(input.schema());
        let mut finder = Finder { schema: &schema, found: Vec::new() };
        let predicate = finder.expr(f.predicate, &[])?;
        if finder.found.is_empty() && below.is_empty() {
            return Ok((LogicalPlan::Filter(Filter::try_new(predicate, Arc::new(input))?), below));
        }
        let flagged = |sites: &[usize]| {
            sites.iter().map(|&k| Expr::Column(Column::new_unqualified(site_column(k))).is_not_null()).reduce(Expr::or)
        };
        let mut carried = below.clone();
        let mut input = input;
        let mut here = Vec::new();
        if !finder.found.is_empty() {
            let mut exprs: Vec<Expr> = schema.columns().into_iter().map(Expr::Column).collect();
            for f in finder.found {
                let k = self.add("WHERE", &f);
                exprs.push(f.failed.alias(site_column(k)));
                here.push(k);
            }
            input = LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(input))?);
            carried.extend(&here);
        }
        let mut predicate = predicate;
        if let Some(below) = flagged(&below) {
            predicate = datafusion::functions::core::expr_fn::coalesce(vec![predicate, below]);
        }
        if let Some(here) = flagged(&here) {
            predicate = predicate.or(here);
        }
        Ok((LogicalPlan::Filter(Filter::try_new(predicate, Arc::new(input))?), carried))
    }

    /// `UNION ALL`: every branch outputs every branch's sites (NULL for
    /// the others').
    fn union(&mut self, inputs: Vec<Arc<LogicalPlan>>) -> Result<(LogicalPlan, Vec<usize>)> {
        let mut branches = Vec::with_capacity(inputs.len());
        for input in inputs {
            branches.push(self.spine(Arc::unwrap_or_clone(input))?);
        }
        let all: Vec<usize> = branches.iter().flat_map(|(_, s)| s.iter().copied()).collect();
        let mut built: Option<LogicalPlanBuilder> = None;
        for (plan, sites) in branches {
            let plan = if all.is_empty() {
                plan
            } else {
                let own = plan.schema().fields().len() - sites.len();
                let mut exprs: Vec<Expr> = plan.schema().columns().into_iter().take(own).map(Expr::Column).collect();
                for &k in &all {
                    exprs.push(if sites.contains(&k) {
                        Expr::Column(Column::new_unqualified(site_column(k)))
                    } else {
                        lit(ScalarValue::Utf8(None)).alias(site_column(k))
                    });
                }
                LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(plan))?)
            };
            built = Some(match built {
                None => LogicalPlanBuilder::from(plan),
                Some(b) => b.union(plan)?,
            });
        }
        let plan = match built {
            Some(b) => b.build()?,
            None => return datafusion::common::plan_err!("a UNION with no inputs"),
        };
        Ok((plan, all))
    }
}

/// Finds the conversions of one expression and replaces them with their
/// `try` forms.
struct Finder<'a> {
    schema: &'a DFSchema,
    found: Vec<Found>,
}

impl Finder<'_> {
    /// `e` with its conversions in `try` form. `only_if`: the conditions
    /// under which `e` is evaluated at all (inside `CASE` / `COALESCE`).
    fn expr(&mut self, e: Expr, only_if: &[Expr]) -> Result<Expr> {
        match e {
            Expr::Cast(Cast { expr, field }) => {
                let from = expr.get_type(self.schema)?;
                let input = self.expr(*expr, only_if)?;
                let data_type = field.data_type().clone();
                if !can_fail(&from, &data_type) {
                    return Ok(Expr::Cast(Cast::new_from_field(Box::new(input), field)));
                }
                let tried = Expr::TryCast(TryCast::new_from_field(Box::new(input.clone()), field));
                self.site(&[input], &tried, only_if, cast_function(&data_type), cast_suggestion(&data_type))?;
                Ok(tried)
            }
            Expr::ScalarFunction(f) if f.func.name() == "arrow_cast" => {
                let to = match f.args.get(1) {
                    Some(Expr::Literal(ScalarValue::Utf8(Some(t)) | ScalarValue::Utf8View(Some(t)), _)) => {
                        t.parse::<DataType>().ok()
                    }
                    _ => None,
                };
                let (Some(to), Some(first)) = (to, f.args.first().cloned()) else {
                    return self.children(Expr::ScalarFunction(f), only_if);
                };
                let from = first.get_type(self.schema)?;
                let input = self.expr(first, only_if)?;
                if !can_fail(&from, &to) {
                    return Ok(Expr::Cast(Cast::new(Box::new(input), to)));
                }
                let tried = Expr::TryCast(TryCast::new(Box::new(input.clone()), to.clone()));
                self.site(&[input], &tried, only_if, format!("arrow_cast to {to}"), cast_suggestion(&to))?;
                Ok(tried)
            }
            Expr::ScalarFunction(f) if TRY_WRAPPED.contains(&f.func.name()) => {
                let name = f.func.name().to_owned();
                let formats: Vec<String> = f.args.iter().skip(1).filter_map(text_literal).collect();
                let args = f.args.into_iter().map(|a| self.expr(a, only_if)).collect::<Result<Vec<_>>>()?;
                let tried = Expr::ScalarFunction(ScalarFunction::new_udf(Arc::new(try_form(f.func)), args.clone()));
                // make_date(y, m, d) converts all its arguments; the others
                // their first, in the formats that follow.
                let inputs: Vec<Expr> =
                    if name.starts_with("make_") { args } else { args.into_iter().take(1).collect() };
                let function = match formats.as_slice() {
                    [] => name.clone(),
                    [one] => format!("{name} with format '{one}'"),
                    many => format!(
                        "{name} with formats {}",
                        many.iter().map(|f| format!("'{f}'")).collect::<Vec<_>>().join(", ")
                    ),
                };
                self.site(&inputs, &tried, only_if, function, function_suggestion(&name, formats.is_empty()))?;
                Ok(tried)
            }
            Expr::ScalarFunction(f) if f.func.name() == "coalesce" => {
                let mut conditions = only_if.to_vec();
                let mut args = Vec::with_capacity(f.args.len());
                for a in f.args {
                    let a = self.expr(a, &conditions)?;
                    conditions.push(a.clone().is_null());
                    args.push(a);
                }
                Ok(Expr::ScalarFunction(ScalarFunction::new_udf(f.func, args)))
            }
            Expr::Case(case) => self.case(case, only_if),
            // Subqueries plan on their own; their conversions stay strict.
            e @ (Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)) => Ok(e),
            Expr::Alias(Alias { expr, relation, name, metadata }) => {
                let inner = self.expr(*expr, only_if)?;
                Ok(Expr::Alias(Alias { expr: Box::new(inner), relation, name, metadata }))
            }
            other => self.children(other, only_if),
        }
    }

    fn children(&mut self, e: Expr, only_if: &[Expr]) -> Result<Expr> {
        e.map_children(|c| self.expr(c, only_if).map(Transformed::yes)).map(|t| t.data)
    }

    /// `CASE`: a branch's result is evaluated only where its condition
    /// holds and no earlier one did; `ELSE` where none did.
    fn case(&mut self, case: Case, only_if: &[Expr]) -> Result<Expr> {
        let base = case.expr.map(|b| self.expr(*b, only_if)).transpose()?;
        let mut earlier_failed = only_if.to_vec();
        let mut when_then = Vec::with_capacity(case.when_then_expr.len());
        for (w, t) in case.when_then_expr {
            let w = self.expr(*w, &earlier_failed)?;
            let holds = match &base {
                Some(b) => b.clone().eq(w.clone()),
                None => w.clone(),
            };
            let mut taken = earlier_failed.clone();
            taken.push(holds.clone().is_true());
            let t = self.expr(*t, &taken)?;
            earlier_failed.push(holds.is_not_true());
            when_then.push((Box::new(w), Box::new(t)));
        }
        let otherwise = case.else_expr.map(|e| self.expr(*e, &earlier_failed)).transpose()?;
        Ok(Expr::Case(Case { expr: base.map(Box::new), when_then_expr: when_then, else_expr: otherwise.map(Box::new) }))
    }

    /// Records a site: where `tried` is NULL although every input is not
    /// (and the conversion was evaluated), the input's text.
    fn site(
        &mut self,
        inputs: &[Expr],
        tried: &Expr,
        only_if: &[Expr],
        function: String,
        suggestion: String,
    ) -> Result<()> {
        // The try form first: always evaluated, so DataFusion computes it
        // once for the column and the site.
        let mut failed = tried.clone().is_null();
        for i in inputs {
            failed = failed.and(i.clone().is_not_null());
        }
        for c in only_if {
            failed = failed.and(c.clone());
        }
        let text = |e: &Expr| Expr::Cast(Cast::new(Box::new(e.clone()), DataType::Utf8));
        let shown = match inputs {
            [one] => text(one),
            many => datafusion::functions::string::expr_fn::concat_ws(lit(", "), many.iter().map(text).collect()),
        };
        self.found.push(Found { failed: when(failed, shown).end()?, function, suggestion });
        Ok(())
    }
}

fn text_literal(e: &Expr) -> Option<String> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s)),
            _,
        ) => Some(s.clone()),
        _ => None,
    }
}

/// Whether converting a `from` value to `to` can fail on some value.
pub fn can_fail(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    if from == to || *from == Null || matches!(to, Utf8 | LargeUtf8 | Utf8View) {
        return false;
    }
    let int_digits = |t: &DataType| match t {
        Int8 | UInt8 => Some(3),
        Int16 | UInt16 => Some(5),
        Int32 | UInt32 => Some(10),
        Int64 => Some(19),
        UInt64 => Some(20),
        _ => None,
    };
    let widens = match (from, to) {
        (Boolean, Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Float32 | Float64) => true,
        (Int8, Int16 | Int32 | Int64 | Float32 | Float64)
        | (Int16, Int32 | Int64 | Float32 | Float64)
        | (Int32, Int64 | Float64)
        | (Int64, Float64)
        | (UInt8, UInt16 | UInt32 | UInt64 | Int16 | Int32 | Int64 | Float32 | Float64)
        | (UInt16, UInt32 | UInt64 | Int32 | Int64 | Float32 | Float64)
        | (UInt32, UInt64 | Int64 | Float64)
        | (UInt64, Float64)
        | (Float16, Float32 | Float64)
        | (Float32, Float64)
        | (Date32, Date64) => true,
        (Decimal128(p1, s1), Decimal128(p2, s2)) => {
            s2 >= s1 && i16::from(*p2) - i16::from(*s2) >= i16::from(*p1) - i16::from(*s1)
        }
        (_, Decimal128(p, s)) => int_digits(from).is_some_and(|d| i16::from(*p) - i16::from(*s) >= d),
        _ => false,
    };
    !widens
}

/// `cast to decimal(15,2)`, in SQL's names.
fn cast_function(to: &DataType) -> String {
    format!("cast to {}", sql_type(to))
}

fn sql_type(t: &DataType) -> String {
    use DataType::*;
    match t {
        Int8 => "tinyint".into(),
        Int16 => "smallint".into(),
        Int32 => "int".into(),
        Int64 => "bigint".into(),
        UInt8 => "tinyint unsigned".into(),
        UInt16 => "smallint unsigned".into(),
        UInt32 => "int unsigned".into(),
        UInt64 => "bigint unsigned".into(),
        Float32 => "real".into(),
        Float64 => "double".into(),
        Decimal128(p, s) => format!("decimal({p},{s})"),
        Date32 | Date64 => "date".into(),
        Timestamp(..) => "timestamp".into(),
        Time32(_) | Time64(_) => "time".into(),
        Boolean => "boolean".into(),
        other => other.to_string(),
    }
}

fn cast_suggestion(to: &DataType) -> String {
    use DataType::*;
    match to {
        Date32 | Date64 | Timestamp(..) | Time32(_) | Time64(_) => {
            "a cast reads ISO dates (2024-01-31); parse other layouts with to_date(x, '%d/%m/%Y') or correct the value in the source".to_owned()
        }
        Boolean => "a cast reads true/false, t/f, 1/0; map other spellings with CASE".to_owned(),
        _ => format!(
            "the value is not a {} or is out of its range: correct it in the source, or widen the type",
            sql_type(to)
        ),
    }
}

fn function_suggestion(name: &str, no_format: bool) -> String {
    if name.starts_with("make_") {
        return "the parts do not make a real date or time (a 31st of February, a 25th hour): correct them in the source".to_owned();
    }
    if no_format {
        format!(
            "{name} reads ISO forms without a format; give the layout the value is written in, as in {name}(x, '%d/%m/%Y')"
        )
    } else {
        format!(
            "correct the value in the source, or add the layout it is written in: {name}(x, 'format 1', 'format 2') tries each"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_casts_cannot_fail_and_narrowing_ones_can() {
        use DataType::*;
        assert!(!can_fail(&Int32, &Int64));
        assert!(!can_fail(&Int64, &Utf8));
        assert!(!can_fail(&Int32, &Decimal128(12, 2)));
        assert!(can_fail(&Int64, &Decimal128(15, 2)));
        assert!(can_fail(&Utf8, &Int64));
        assert!(can_fail(&Int64, &Int32));
        assert!(can_fail(&Decimal128(15, 2), &Decimal128(10, 2)));
        assert!(!can_fail(&Decimal128(10, 2), &Decimal128(15, 3)));
        assert!(can_fail(&Float64, &Int64));
    }
}
