//! What a template may ask of the data while it renders: dbt's
//! `adapter.get_columns_in_relation` (and the `Column` objects it returns),
//! `adapter.get_relation`, `load_relation`, `run_query`, and
//! `{% call statement(..., fetch_result=True) %}` with `load_result`.
//!
//! dbt answers these from the warehouse, once a model's parents exist. ferry
//! answers them from the planned schemas of the parents, so no row has to
//! move first. A node is therefore rendered twice, as dbt does: the first
//! render (which finds the DAG) has no [`Introspector`], so a question fails
//! with [`TemplateFailure::NeedsIntrospection`] and the node is rendered
//! again with `execute` false (dbt's parse, where `dbt_utils.star` returns
//! `*`); the planner renders it once more, with an introspector over its
//! parents' schemas, just before planning it.

use std::fmt;
use std::sync::Arc;

use minijinja::value::{Object, Value};
use minijinja::{Error, ErrorKind, State};

use minijinja::value::{Enumerator, Kwargs};

use super::functions::{Relation, TemplateFailure, capture, fail, quote_ident};

/// Answers a render's questions about relations.
pub trait Introspector: Send + Sync + fmt::Debug {
    /// The columns of the relation that renders as `relation` (its SQL
    /// text, such as `"orders"` or `"raw"."orders"`), or `None` when no
    /// such relation is known.
    fn columns(&self, relation: &str) -> Option<Vec<ColumnInfo>>;

    /// The relation of the project's model, seed or source named
    /// `identifier` (in `schema`, when given), as `ref` or `source` gives it.
    fn relation(&self, schema: Option<&str>, identifier: &str) -> Option<Arc<Relation>>;

    /// Runs `sql` and returns every row, or why it cannot run now.
    fn query(&self, sql: &str) -> Result<QueryResult, String>;
}

/// The rows of a query, each value as JSON (numbers, text, booleans, null).
#[derive(Debug, Clone, Default)]
pub struct QueryResult {
    pub columns: Vec<ColumnInfo>,
    pub rows: Vec<Vec<serde_json::Value>>,
}

/// One column of a relation: its name and its type as PostgreSQL spells
/// it (`integer`, `text`, `numeric(12,2)`), ferry's dispatch family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    pub data_type: String,
}

/// The introspector of a render that finds the DAG with `execute` false:
/// every relation has no columns yet, as in dbt's parse.
#[derive(Debug)]
pub(crate) struct Parsing;

impl Introspector for Parsing {
    fn columns(&self, _: &str) -> Option<Vec<ColumnInfo>> {
        Some(Vec::new())
    }

    fn relation(&self, _: Option<&str>, _: &str) -> Option<Arc<Relation>> {
        None
    }

    fn query(&self, _: &str) -> Result<QueryResult, String> {
        Ok(QueryResult::default())
    }
}

/// The context key under which a render carries its introspector.
pub(crate) const KEY: &str = "__ferry_introspect";

/// An introspector as a template value (opaque to templates).
#[derive(Debug)]
pub(crate) struct Handle(pub Arc<dyn Introspector>);

impl Object for Handle {}

/// The render's introspector, or the failure that defers the render.
fn introspector(state: &State<'_, '_>) -> Result<Arc<dyn Introspector>, Error> {
    match state.lookup(KEY).as_ref().and_then(|v| v.downcast_object_ref::<Handle>()) {
        Some(h) => Ok(Arc::clone(&h.0)),
        None => Err(fail(ErrorKind::InvalidOperation, TemplateFailure::NeedsIntrospection)),
    }
}

/// `adapter.get_columns_in_relation(relation)`: its columns, or an empty
/// list for a relation that does not exist (as dbt returns).
pub(crate) fn get_columns_in_relation(state: &State<'_, '_>, args: &[Value]) -> Result<Value, Error> {
    let (relation,): (Value,) = minijinja::value::from_args(args)?;
    if relation.is_undefined() || relation.is_none() {
        return Err(Error::new(ErrorKind::InvalidOperation, "get_columns_in_relation() needs a relation"));
    }
    let introspector = introspector(state)?;
    let columns = introspector.columns(&relation.to_string()).unwrap_or_default();
    Ok(Value::from_iter(columns.into_iter().map(|c| Value::from_object(Column(c)))))
}

/// `adapter.get_relation(database, schema, identifier)`: the project's
/// relation of that name, or none.
pub(crate) fn get_relation(state: &State<'_, '_>, args: &[Value]) -> Result<Value, Error> {
    let (database, schema, identifier, kwargs): (Option<Value>, Option<String>, Option<String>, Kwargs) =
        minijinja::value::from_args(args)?;
    let _ = database.or(kwargs.get::<Option<Value>>("database")?);
    let schema = schema.or(kwargs.get::<Option<String>>("schema")?);
    let identifier = identifier.or(kwargs.get::<Option<String>>("identifier")?);
    kwargs.assert_all_used()?;
    let Some(identifier) = identifier else {
        return Err(Error::new(ErrorKind::MissingArgument, "get_relation() needs an identifier"));
    };
    let found = introspector(state)?.relation(schema.as_deref(), &identifier);
    Ok(found.map(Value::from_dyn_object).unwrap_or(Value::from(())))
}

/// `load_relation(relation)`: the relation if it exists, else none.
pub fn load_relation(state: &State<'_, '_>, relation: Value) -> Result<Value, Error> {
    let introspector = introspector(state)?;
    let exists = introspector.columns(&relation.to_string()).is_some();
    Ok(if exists { relation } else { Value::from(()) })
}

/// `run_query(sql)`: the rows of `sql`, as an agate-like table.
pub fn run_query(state: &State<'_, '_>, sql: String) -> Result<Value, Error> {
    let result = introspector(state)?.query(&sql).map_err(query_failed)?;
    Ok(Value::from_object(Table::new(result)))
}

/// `{% call statement(name, fetch_result=False) %}SQL{% endcall %}`: runs
/// the body; with `fetch_result`, `load_result(name)` gives its rows.
pub fn statement(state: &mut State<'_, '_>, name: Option<String>, kwargs: Kwargs) -> Result<Value, Error> {
    let caller: Value = kwargs.get("caller")?;
    let fetch: Option<bool> = kwargs.get("fetch_result")?;
    let _: Option<Value> = kwargs.get("auto_begin")?;
    let _: Option<Value> = kwargs.get("language")?;
    kwargs.assert_all_used()?;
    let sql = caller.call(state, &[])?.to_string();
    let result = introspector(state)?.query(&sql).map_err(query_failed)?;
    if let (Some(name), true) = (name, fetch.unwrap_or(false)) {
        let data =
            Value::from_iter(result.rows.iter().map(|r| Value::from_iter(r.iter().map(super::functions::to_value))));
        let response =
            super::functions::to_value(serde_json::json!({ "code": "SELECT", "rows_affected": result.rows.len() }));
        let table = Value::from_object(Table::new(result));
        let loaded = minijinja::context! { data => data, table => table, response => response };
        capture(state).results.insert(name, loaded);
    }
    Ok(Value::from(""))
}

/// `load_result(name)`: what `statement(name, fetch_result=True)` fetched.
pub fn load_result(state: &mut State<'_, '_>, name: String) -> Value {
    capture(state).results.get(&name).cloned().unwrap_or(Value::from(()))
}

fn query_failed(why: String) -> Error {
    fail(ErrorKind::InvalidOperation, TemplateFailure::CompilerError(why))
}

/// An agate table as dbt returns from `run_query`: `rows` (each indexable
/// by position and by column name), `columns` (each with `values()`),
/// `column_names`; iterating it gives the rows.
#[derive(Debug)]
pub struct Table {
    names: Arc<Vec<String>>,
    rows: Vec<Value>,
    columns: Vec<Value>,
}

impl Table {
    fn new(result: QueryResult) -> Self {
        let names: Arc<Vec<String>> = Arc::new(result.columns.iter().map(|c| c.name.clone()).collect());
        let columns = (0..names.len())
            .map(|i| {
                let values = result.rows.iter().map(|r| super::functions::to_value(&r[i])).collect();
                Value::from_object(TableColumn { name: names[i].clone(), values })
            })
            .collect();
        let rows = result
            .rows
            .into_iter()
            .map(|r| {
                let values = r.iter().map(super::functions::to_value).collect();
                Value::from_object(Named { names: Arc::clone(&names), items: values })
            })
            .collect();
        Table { names, rows, columns }
    }
}

impl Object for Table {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        Some(match key.as_str()? {
            "rows" => Value::from(self.rows.clone()),
            "columns" => Value::from_object(Named { names: Arc::clone(&self.names), items: self.columns.clone() }),
            "column_names" => Value::from_iter(self.names.iter().cloned()),
            _ => return None,
        })
    }

    fn call_method(self: &Arc<Self>, _: &mut State<'_, '_>, method: &str, _: &[Value]) -> Result<Value, Error> {
        match method {
            "print_table" | "print_json" => Ok(Value::from("")),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.rows.clone())
    }
}

/// A sequence whose items are also found by column name (agate's
/// `MappedSequence`): a result's columns, or one row's values.
#[derive(Debug)]
struct Named {
    names: Arc<Vec<String>>,
    items: Vec<Value>,
}

impl Object for Named {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let i = match key.as_str() {
            Some(name) => self.names.iter().position(|n| n == name)?,
            None => usize::try_from(key.as_i64()?).ok()?,
        };
        self.items.get(i).cloned()
    }

    fn call_method(self: &Arc<Self>, _: &mut State<'_, '_>, method: &str, _: &[Value]) -> Result<Value, Error> {
        match method {
            "keys" => Ok(Value::from_iter(self.names.iter().cloned())),
            "values" => Ok(Value::from(self.items.clone())),
            "items" => Ok(Value::from_iter(
                self.names.iter().zip(&self.items).map(|(n, v)| Value::from(vec![Value::from(n.clone()), v.clone()])),
            )),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.items.clone())
    }
}

/// One column of a query's result: `name` and `values()`.
#[derive(Debug)]
struct TableColumn {
    name: String,
    values: Vec<Value>,
}

impl Object for TableColumn {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str() {
            Some("name") => Some(Value::from(self.name.clone())),
            Some(_) => None,
            None => self.values.get(usize::try_from(key.as_i64()?).ok()?).cloned(),
        }
    }

    fn call_method(self: &Arc<Self>, _: &mut State<'_, '_>, method: &str, _: &[Value]) -> Result<Value, Error> {
        match method {
            "values" => Ok(Value::from(self.values.clone())),
            "values_distinct" => {
                let mut v = self.values.clone();
                v.sort();
                v.dedup();
                Ok(Value::from(v))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.values.clone())
    }
}

/// dbt's `Column`: `name`, `column`, `quoted`, `data_type`, `dtype`,
/// `char_size`, `numeric_precision`, `numeric_scale`, and the `is_*` tests.
#[derive(Debug)]
pub struct Column(pub ColumnInfo);

impl Column {
    /// The type without its arguments (`numeric` of `numeric(12,2)`).
    fn dtype(&self) -> &str {
        self.0.data_type.split('(').next().unwrap_or(&self.0.data_type).trim()
    }

    fn args(&self) -> Vec<u32> {
        let Some((_, rest)) = self.0.data_type.split_once('(') else { return Vec::new() };
        rest.trim_end_matches(')').split(',').filter_map(|a| a.trim().parse().ok()).collect()
    }

    fn is_string(&self) -> bool {
        matches!(self.dtype(), "text" | "character varying" | "character" | "varchar" | "char")
    }

    fn is_integer(&self) -> bool {
        matches!(self.dtype(), "smallint" | "integer" | "bigint")
    }

    fn is_float(&self) -> bool {
        matches!(self.dtype(), "real" | "double precision")
    }

    fn is_numeric(&self) -> bool {
        self.dtype() == "numeric"
    }
}

impl Object for Column {
    fn is_true(self: &Arc<Self>) -> bool {
        true
    }

    fn custom_cmp(self: &Arc<Self>, other: &minijinja::value::DynObject) -> Option<std::cmp::Ordering> {
        Some(self.0.name.cmp(&other.downcast_ref::<Self>()?.0.name))
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let args = self.args();
        Some(match key.as_str()? {
            "name" | "column" => Value::from(self.0.name.clone()),
            "quoted" => Value::from(quote_ident(&self.0.name)),
            "data_type" => Value::from(self.0.data_type.clone()),
            "dtype" => Value::from(self.dtype().to_owned()),
            "char_size" => Value::from(if self.is_string() { args.first().copied() } else { None }),
            "numeric_precision" => Value::from(if self.is_numeric() { args.first().copied() } else { None }),
            "numeric_scale" => Value::from(if self.is_numeric() { args.get(1).copied() } else { None }),
            _ => return None,
        })
    }

    fn call_method(self: &Arc<Self>, _: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        let _: () = minijinja::value::from_args(args)?;
        Ok(Value::from(match method {
            "is_string" => self.is_string(),
            "is_integer" => self.is_integer(),
            "is_float" => self.is_float(),
            "is_numeric" => self.is_numeric(),
            "is_number" => self.is_integer() || self.is_float() || self.is_numeric(),
            // As dbt's `Column.string_size()`: `text`, or a size not given, is 256.
            "string_size" if self.is_string() => {
                let size = match self.args().first() {
                    Some(&n) if self.dtype() != "text" => n,
                    _ => 256,
                };
                return Ok(Value::from(size));
            }
            "string_size" => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("string_size() called on column `{}`, which is not a string", self.0.name),
                ));
            }
            _ => return Err(Error::from(ErrorKind::UnknownMethod)),
        }))
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<Column {} ({})>", self.0.name, self.0.data_type)
    }
}

/// `api`: the adapter's classes that macros build values with, as in dbt:
/// `api.Column(name, dtype, char_size=, numeric_precision=, numeric_scale=)`,
/// `api.Column.create(name, dtype)`, `api.Column.string_type(size)`,
/// `api.Column.numeric_type(dtype, precision, scale)`, and
/// `api.Relation.create(database=, schema=, identifier=)`.
#[derive(Debug)]
pub struct Api;

impl Object for Api {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "Column" => Some(Value::from_object(ColumnClass)),
            "Relation" => Some(Value::from_object(RelationClass)),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct ColumnClass;

impl ColumnClass {
    fn build(args: &[Value]) -> Result<Value, Error> {
        let (name, dtype, kwargs): (String, String, Kwargs) = minijinja::value::from_args(args)?;
        let size: Option<u32> = kwargs.get("char_size")?;
        let precision: Option<u32> = kwargs.get("numeric_precision")?;
        let scale: Option<u32> = kwargs.get("numeric_scale")?;
        kwargs.assert_all_used()?;
        let data_type = match (size, precision, scale) {
            (Some(n), _, _) => string_type(Some(n)),
            (None, Some(p), s) => numeric_type(&dtype, Some(p), s),
            _ => dtype,
        };
        Ok(Value::from_object(Column(ColumnInfo { name, data_type })))
    }
}

/// dbt's Postgres `string_type`.
fn string_type(size: Option<u32>) -> String {
    match size {
        Some(n) => format!("character varying({n})"),
        None => "character varying".to_owned(),
    }
}

/// dbt's `numeric_type`: the type with its precision and scale, if given.
fn numeric_type(dtype: &str, precision: Option<u32>, scale: Option<u32>) -> String {
    match (precision, scale) {
        (Some(p), Some(s)) => format!("{dtype}({p},{s})"),
        (Some(p), None) => format!("{dtype}({p})"),
        _ => dtype.to_owned(),
    }
}

impl Object for ColumnClass {
    fn call(self: &Arc<Self>, _: &mut State<'_, '_>, args: &[Value]) -> Result<Value, Error> {
        Self::build(args)
    }

    fn call_method(self: &Arc<Self>, _: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        match method {
            "create" => Self::build(args),
            "string_type" => {
                let (size,): (Option<u32>,) = minijinja::value::from_args(args)?;
                Ok(Value::from(string_type(size)))
            }
            "numeric_type" => {
                let (dtype, precision, scale): (String, Option<u32>, Option<u32>) = minijinja::value::from_args(args)?;
                Ok(Value::from(numeric_type(&dtype, precision, scale)))
            }
            "translate_type" => {
                let (dtype,): (String,) = minijinja::value::from_args(args)?;
                Ok(Value::from(dtype))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

#[derive(Debug)]
struct RelationClass;

impl Object for RelationClass {
    fn call_method(self: &Arc<Self>, state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        if method != "create" {
            return Err(Error::from(ErrorKind::UnknownMethod));
        }
        let (kwargs,): (Kwargs,) = minijinja::value::from_args(args)?;
        let database: Option<String> = kwargs.get("database")?;
        let schema: Option<String> = kwargs.get("schema")?;
        let identifier: Option<String> = kwargs.get("identifier")?;
        let _: Option<Value> = kwargs.get("type")?;
        let _: Option<Value> = kwargs.get("quote_policy")?;
        kwargs.assert_all_used()?;
        let Some(identifier) = identifier else {
            return Err(Error::new(ErrorKind::MissingArgument, "api.Relation.create() needs an identifier"));
        };
        // A relation of the project renders as the engine's table of it.
        let known = introspector(state).ok().and_then(|i| i.relation(schema.as_deref(), &identifier));
        if let Some(rel) = known {
            return Ok(Value::from_dyn_object(rel));
        }
        Ok(Value::from_object(Relation {
            rendered: quote_ident(&identifier),
            database: database.unwrap_or_default(),
            schema: schema.unwrap_or_default(),
            identifier,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_answers_as_dbts_does() {
        let c = Arc::new(Column(ColumnInfo { name: "Amount".into(), data_type: "numeric(12,2)".into() }));
        let get = |k: &str| c.get_value(&Value::from(k)).map(|v| v.to_string());
        assert_eq!(get("name").as_deref(), Some("Amount"));
        assert_eq!(get("quoted").as_deref(), Some("\"Amount\""));
        assert_eq!(get("dtype").as_deref(), Some("numeric"));
        assert_eq!(get("numeric_precision").as_deref(), Some("12"));
        assert_eq!(get("numeric_scale").as_deref(), Some("2"));
        assert_eq!(get("char_size").as_deref(), Some("None"));
        assert!(c.is_numeric() && !c.is_string() && !c.is_integer());
    }

    #[test]
    fn api_builds_columns_and_relations_as_dbt_does() {
        let mut env = minijinja::Environment::new();
        env.add_global("api", Value::from_object(Api));
        let out = env
            .render_str(
                "{% set c = api.Column('code', 'varchar', char_size=3) %}{{ c.data_type }}|{{ c.is_string() }}|\
                 {{ api.Column.create('n', 'integer').is_integer() }}|{{ api.Column.numeric_type('numeric', 12, 2) }}|\
                 {{ api.Relation.create(schema='raw', identifier='orders') }}|{{ api.Relation.create(identifier='o').schema }}",
                (),
            )
            .unwrap();
        assert_eq!(out, "character varying(3)|True|True|numeric(12,2)|\"orders\"|");
    }
}
