//! How deep a model's expressions nest, settled before DataFusion plans
//! them. sqlparser reads a chain such as `x = 1 or x = 2 or ...` or
//! `a + b + c + ...` without recursing, into a tree as deep as the chain is
//! long, and DataFusion's planner, type coercion and display then recurse
//! over that tree (and take time quadratic in its depth). So:
//!
//! - long `AND` / `OR` chains, which Jinja loops generate by the thousand,
//!   are rebuilt as balanced trees: the same operands in the same order,
//!   the same three-valued result, a depth of log2 of their length;
//! - any other expression nested deeper than [`MAX_EXPR_DEPTH`] (a chain of
//!   `+` or `||`, whose grouping can change its type or rounding) is a
//!   diagnostic naming where it is, instead of a crash or an hour of
//!   planning.
//!
//! The threads that plan and run queries have stacks sized for that depth
//! ([`STACK_BYTES`]).

use std::ops::ControlFlow;

use datafusion::common::Span;
use datafusion::error::DataFusionError;
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr, Spanned, Value, VisitMut, VisitorMut};

/// The deepest an expression may nest after `AND`/`OR` chains are
/// balanced. Planning a 5,000-term `+` chain takes about 20 s in
/// DataFusion 55; 1,000 terms take under a second.
pub const MAX_EXPR_DEPTH: usize = 5_000;

/// Stack for the threads that plan and run queries: DataFusion recurses
/// over expressions (about 10 KiB a level in a debug build, less in
/// release), so [`MAX_EXPR_DEPTH`] levels need tens of MiB. Reserved, not
/// committed: only the pages a deep expression touches are used.
pub const STACK_BYTES: usize = 256 << 20;

/// Chains of at most this many operands keep the shape they were written
/// in, so plans and column names of ordinary SQL read as written.
const BALANCE_OVER: usize = 64;

/// Balances long `AND`/`OR` chains in `statement` and checks how deep its
/// expressions nest.
pub fn settle(statement: &mut Statement) -> Result<(), DataFusionError> {
    let Statement::Statement(s) = statement else { return Ok(()) };
    let mut visitor = Settle { depth: 0 };
    match s.as_mut().visit(&mut visitor) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(too_deep) => Err(too_deep.into_error()),
    }
}

struct Settle {
    depth: usize,
}

/// Where the limit was hit: the operator there and its position.
struct TooDeep {
    what: String,
    span: Option<Span>,
}

impl TooDeep {
    fn into_error(self) -> DataFusionError {
        let message = format!("an expression nests more than {MAX_EXPR_DEPTH} levels deep ({})", self.what);
        let diagnostic = datafusion::common::Diagnostic::new_error(message.clone(), self.span).with_help(
            "split a long chain (a Jinja loop generating `a + b + ...` or `a || b || ...`) into parts computed in separate columns or models, or sum values over rows",
            None,
        );
        DataFusionError::Plan(message).with_diagnostic(diagnostic)
    }
}

impl VisitorMut for Settle {
    type Break = Box<TooDeep>;

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<Self::Break> {
        if let Expr::BinaryOp { op: op @ (BinaryOperator::And | BinaryOperator::Or), .. } = expr {
            let op = op.clone();
            balance(expr, &op);
        }
        self.depth += 1;
        if self.depth > MAX_EXPR_DEPTH {
            let what = match expr {
                Expr::BinaryOp { op, .. } => format!("a chain of `{op}`"),
                Expr::Cast { .. } => "a chain of casts".to_owned(),
                _ => "nested expressions".to_owned(),
            };
            // The right operand of a left-deep chain is a leaf, whose
            // position is cheap to find; the whole subtree's is not.
            let span = match expr {
                Expr::BinaryOp { right, .. } => Span::try_from_sqlparser_span(right.span()),
                _ => None,
            };
            // Taken apart here without recursion: dropped whole, a tree this
            // deep would recurse as deep again.
            dismantle(std::mem::replace(expr, Expr::Value(Value::Null.into())));
            return ControlFlow::Break(Box::new(TooDeep { what, span }));
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _expr: &mut Expr) -> ControlFlow<Self::Break> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

/// Rebuilds a left-deep chain of `op` (as sqlparser builds `a op b op c
/// ...`) of more than [`BALANCE_OVER`] operands as a balanced tree over
/// the same operands in the same order. `AND` and `OR` are associative in
/// SQL's three-valued logic, so the result is the same. Shorter chains,
/// and the balanced subtrees this builds, are left as they are.
fn balance(expr: &mut Expr, op: &BinaryOperator) {
    let mut operands = 1;
    let mut e = &*expr;
    while let Expr::BinaryOp { left, op: o, .. } = e
        && o == op
    {
        operands += 1;
        e = left;
    }
    if operands <= BALANCE_OVER {
        return;
    }
    let mut reversed = Vec::with_capacity(operands);
    let mut current = std::mem::replace(expr, Expr::Value(Value::Null.into()));
    loop {
        match current {
            Expr::BinaryOp { left, op: o, right } if o == *op => {
                reversed.push(*right);
                current = *left;
            }
            first => {
                reversed.push(first);
                break;
            }
        }
    }
    reversed.reverse();
    *expr = balanced(reversed, op);
}

/// `a op b op c ...` as sqlparser builds it: left-deep.
fn chained(operands: Vec<Expr>, op: &BinaryOperator) -> Expr {
    let mut it = operands.into_iter();
    let first = it.next().unwrap_or(Expr::Value(Value::Null.into()));
    it.fold(first, |left, right| Expr::BinaryOp { left: Box::new(left), op: op.clone(), right: Box::new(right) })
}

/// A balanced tree of `op`; recursion depth log2 of the operand count.
fn balanced(mut operands: Vec<Expr>, op: &BinaryOperator) -> Expr {
    if operands.len() <= 2 {
        return chained(operands, op);
    }
    let right = operands.split_off(operands.len() / 2);
    Expr::BinaryOp { left: Box::new(balanced(operands, op)), op: op.clone(), right: Box::new(balanced(right, op)) }
}

/// Drops an expression tree without recursing down its chains.
fn dismantle(expr: Expr) {
    let mut pending = vec![expr];
    while let Some(e) = pending.pop() {
        match e {
            Expr::BinaryOp { left, right, .. } => {
                pending.push(*left);
                pending.push(*right);
            }
            Expr::UnaryOp { expr, .. } | Expr::Nested(expr) | Expr::Cast { expr, .. } => pending.push(*expr),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(sql: &str) -> Statement {
        let mut statements = datafusion::sql::parser::DFParser::parse_sql(sql).expect("parses");
        statements.pop_front().expect("one statement")
    }

    fn chain(n: usize, op: &str) -> String {
        (0..n).map(|i| format!("x = {i}")).collect::<Vec<_>>().join(&format!(" {op} "))
    }

    #[test]
    fn short_chains_keep_their_shape_and_long_ones_are_balanced_in_order() {
        let sql = format!("select * from t where {}", chain(3, "or"));
        let mut s = parsed(&sql);
        settle(&mut s).unwrap();
        assert_eq!(s.to_string(), "SELECT * FROM t WHERE x = 0 OR x = 1 OR x = 2");
        let mut s = parsed(&format!("select * from t where {}", chain(100_000, "or")));
        settle(&mut s).unwrap();
        let Statement::Statement(q) = &s else { panic!("a query") };
        let datafusion::sql::sqlparser::ast::Statement::Query(q) = q.as_ref() else { panic!("a query") };
        let datafusion::sql::sqlparser::ast::SetExpr::Select(select) = q.body.as_ref() else { panic!("a select") };
        let mut depth = 0;
        let mut e = select.selection.as_ref().expect("a where");
        while let Expr::BinaryOp { left, .. } = e {
            depth += 1;
            e = left;
        }
        assert!((2..=17).contains(&depth), "balanced: {depth}");
        assert_eq!(
            s.to_string(),
            format!("SELECT * FROM t WHERE {}", chain(100_000, "OR")),
            "operands keep their order"
        );
    }

    #[test]
    fn a_chain_deeper_than_the_limit_is_an_error_with_its_position() {
        let sql = format!("select {} as s", vec!["1"; 100_000].join(" + "));
        let err = settle(&mut parsed(&sql)).unwrap_err();
        let d = err.diagnostic().expect("a diagnostic");
        assert!(d.message.contains("more than 5000 levels deep (a chain of `+`)"), "{}", d.message);
        assert!(d.span.is_some());
        let ok = format!("select {} as s", vec!["1"; 1_000].join(" + "));
        settle(&mut parsed(&ok)).unwrap();
    }
}
