//! Where ferry's SQL reads types as PostgreSQL does rather than as
//! DataFusion's planner does by default. dbt projects (their SQL, seeds'
//! `column_types`, and dbt's own `type_float()`) write `float` meaning
//! PostgreSQL's `float`, a double (`float8`); DataFusion plans it as a
//! 32-bit float, which keeps about seven significant digits and silently
//! rounds `62.3888186` to `62.38882`. So,
//! before planning, `float` and `float(p)` with `p` over 24 become `double
//! precision`, and `float(p)` with `p` up to 24 becomes `real`, as in
//! PostgreSQL; `real`, `float4`, `float8` and `double` keep their meaning.

use std::ops::ControlFlow;

use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{ArrayElemTypeDef, DataType, ExactNumberInfo, Expr, VisitMut, VisitorMut};

/// Rewrites the types in `statement`'s casts as PostgreSQL reads them.
pub fn as_postgres(statement: &mut Statement) {
    let Statement::Statement(s) = statement else { return };
    let _ = s.as_mut().visit(&mut Types);
}

struct Types;

impl VisitorMut for Types {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::Cast { data_type, .. } = expr {
            postgres_type(data_type);
        }
        ControlFlow::Continue(())
    }
}

/// `ty` as PostgreSQL means it, in place.
fn postgres_type(ty: &mut DataType) {
    match ty {
        DataType::Float(ExactNumberInfo::Precision(p)) if *p <= 24 => *ty = DataType::Real,
        DataType::Float(_) => *ty = DataType::DoublePrecision,
        DataType::Array(
            ArrayElemTypeDef::AngleBracket(inner)
            | ArrayElemTypeDef::SquareBracket(inner, _)
            | ArrayElemTypeDef::Parenthesis(inner),
        ) => postgres_type(inner),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::parser::DFParser;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;

    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut statements = DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {}).unwrap();
        let mut s = statements.pop_front().unwrap();
        as_postgres(&mut s);
        s.to_string()
    }

    #[test]
    fn float_is_a_double_as_in_postgres() {
        assert_eq!(rewritten("SELECT CAST(x AS FLOAT)"), "SELECT CAST(x AS DOUBLE PRECISION)");
        assert_eq!(rewritten("SELECT x::float(53)"), "SELECT x::DOUBLE PRECISION");
        assert_eq!(rewritten("SELECT x::float(10)"), "SELECT x::REAL");
        assert_eq!(rewritten("SELECT CAST(x AS FLOAT[])"), "SELECT CAST(x AS DOUBLE PRECISION[])");
        assert_eq!(rewritten("SELECT CAST(x AS REAL), CAST(y AS FLOAT4)"), "SELECT CAST(x AS REAL), CAST(y AS FLOAT4)");
    }
}
