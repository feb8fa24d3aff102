//! dbt's unit tests (`unit_tests:` in schema files, dbt 1.8): a model's
//! SQL run on rows given for each of its parents, its output compared with
//! the expected rows.
//!
//! The model's SQL runs as planned, unchanged, in an engine session of its
//! own where each parent's name is a view over its given rows, typed as
//! the parent's planned columns (a column the rows leave out is NULL).
//! The comparison is a data test: the rows only the model returned (`+`)
//! and the rows only expected (`-`), over the columns `expect` names,
//! counted as multisets (`EXCEPT ALL`), so its verdict, sample and
//! `store_failures` are the data tests'.

use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::common::TableReference;
use serde_json::{Map, Value as Json};

use super::data_test::{self, TestOutcome};
use crate::engine::sources::first_line;
use crate::engine::{Engine, EngineOptions};
use crate::manifest::config::TestConfig;
use crate::manifest::{Manifest, NodeId, Resource};
use crate::project::nodes::{Test, TestKind};
use crate::project::schema::Fixture;
use crate::template::functions::quote_ident;

/// Runs unit test `id`; an error says what in the test is wrong.
pub async fn run(
    engine: &Engine,
    manifest: &Manifest,
    id: NodeId,
    config: TestConfig,
    failures_dir: &camino::Utf8Path,
) -> Result<TestOutcome, String> {
    let node = &manifest[id];
    let Resource::Test(Test { kind: TestKind::Unit { model, given, expect, overrides, .. }, .. }) = &node.resource
    else {
        return Err("not a unit test".to_owned());
    };
    let model_id = manifest.attached_to(id).ok_or_else(|| format!("model `{model}` is not in the project"))?;
    let sql = match overrides {
        Some(overrides) => {
            manifest
                .render_overridden(model_id, overrides)
                .map_err(|d| format!("`{model}` does not render with the test's `overrides`: {}", d.message))?
                .sql
        }
        None => manifest[model_id].rendered.as_ref().map(|r| r.sql.clone()).unwrap_or_default(),
    };
    let fx =
        Engine::new(&EngineOptions { target_partitions: 1, ..EngineOptions::default() }).map_err(|e| e.to_string())?;
    for (expr, rows) in given {
        // `this`: the model's own current rows, as an incremental run reads them.
        let parent = if expr == "this" {
            model_id
        } else {
            let rendered = manifest.templater.render_expression(expr).map_err(|d| d.message)?;
            let Some(&parent) = manifest.nodes_called(&rendered).iter().next() else {
                return Err(format!("input `{expr}` names no node"));
            };
            parent
        };
        let table = crate::engine::sources::table_of(&manifest[parent]);
        let schema = engine
            .table_schema(table.clone())
            .await
            .ok_or_else(|| format!("the columns of input `{expr}` are not known (was it planned?)"))?;
        let fields: Vec<&Field> = schema.fields().iter().map(|f| f.as_ref()).collect();
        let query = fixture_sql(rows, &fields, &format!("input `{expr}`"))?;
        let plan = fx.plan(&query).await.map_err(|e| format!("the rows of input `{expr}`: {}", first_line(&e)))?;
        fx.register_view(table, plan).map_err(|e| e.to_string())?;
    }
    let plan =
        fx.plan(&sql).await.map_err(|e| format!("`{model}` does not plan on the given rows: {}", first_line(&e)))?;
    let actual: SchemaRef = std::sync::Arc::clone(plan.schema().inner());
    fx.register_view(TableReference::bare("__ferry_actual"), plan).map_err(|e| e.to_string())?;

    let expected_sql = match expect {
        Fixture::Sql(q) => q.clone(),
        rows => {
            let names = fixture_columns(rows)?;
            let mut fields = Vec::new();
            for name in &names {
                let field = actual
                    .fields()
                    .iter()
                    .find(|f| f.name() == name)
                    .or_else(|| actual.fields().iter().find(|f| f.name().eq_ignore_ascii_case(name)))
                    .ok_or_else(|| {
                        let known: Vec<&str> = actual.fields().iter().map(|f| f.name().as_str()).collect();
                        format!(
                            "`expect` names column `{name}`, which `{model}` does not return ({})",
                            known.join(", ")
                        )
                    })?;
                fields.push(field.as_ref());
            }
            fixture_sql(rows, &fields, "`expect`")?
        }
    };
    let plan = fx.plan(&expected_sql).await.map_err(|e| format!("the `expect` rows: {}", first_line(&e)))?;
    let columns: Vec<String> = plan.schema().fields().iter().map(|f| quote_ident(f.name())).collect();
    fx.register_view(TableReference::bare("__ferry_expected"), plan).map_err(|e| e.to_string())?;
    let cols = columns.join(", ");
    let diff = format!(
        "select '+' as diff, * from (select {cols} from __ferry_actual except all select {cols} from __ferry_expected) a\n\
         union all\n\
         select '-' as diff, * from (select {cols} from __ferry_expected except all select {cols} from __ferry_actual) e"
    );
    data_test::run(&fx, &node.name, &diff, config, failures_dir).await.map_err(|e| e.to_string())
}

/// The columns a fixture's rows name, in the order they first appear.
fn fixture_columns(rows: &Fixture) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = Vec::new();
    for row in rows_of(rows, "`expect`")? {
        for k in row.keys() {
            if !names.contains(k) {
                names.push(k.clone());
            }
        }
    }
    if names.is_empty() {
        return Err("`expect` names no column: give at least one row, or `format: sql`".to_owned());
    }
    Ok(names)
}

/// A fixture's rows as mappings (a CSV's header names the columns; an
/// empty field is NULL).
fn rows_of(fixture: &Fixture, what: &str) -> Result<Vec<Map<String, Json>>, String> {
    match fixture {
        Fixture::Rows(rows) => Ok(rows.clone()),
        Fixture::Csv(text) => {
            let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_bytes());
            let header: Vec<String> =
                reader.headers().map_err(|e| format!("{what}: {e}"))?.iter().map(str::to_owned).collect();
            let mut rows = Vec::new();
            for record in reader.records() {
                let record = record.map_err(|e| format!("{what}: {e}"))?;
                let row = header
                    .iter()
                    .zip(record.iter())
                    .map(|(k, v)| (k.clone(), if v.is_empty() { Json::Null } else { Json::from(v) }))
                    .collect();
                rows.push(row);
            }
            Ok(rows)
        }
        Fixture::Sql(_) => Err(format!("{what}: sql rows have no columns to read")),
        Fixture::File { name, .. } => Err(format!("{what}: fixture `{name}` was not read")),
    }
}

/// A query returning a fixture's rows with `fields`' names and types;
/// a field a row leaves out is NULL.
fn fixture_sql(fixture: &Fixture, fields: &[&Field], what: &str) -> Result<String, String> {
    if let Fixture::Sql(q) = fixture {
        return Ok(q.clone());
    }
    let rows = rows_of(fixture, what)?;
    let find = |row: &Map<String, Json>, name: &str| -> Option<Json> {
        row.get(name).or_else(|| row.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)).cloned()
    };
    for row in &rows {
        if let Some(k) = row.keys().find(|k| !fields.iter().any(|f| f.name().eq_ignore_ascii_case(k))) {
            let known: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
            return Err(format!("{what} names column `{k}`, which it does not have ({})", known.join(", ")));
        }
    }
    let select = |row: Option<&Map<String, Json>>| -> String {
        let items: Vec<String> = fields
            .iter()
            .map(|f| {
                let value = row.and_then(|r| find(r, f.name()));
                format!("{} as {}", literal(value.as_ref(), f.data_type()), quote_ident(f.name()))
            })
            .collect();
        format!("select {}", items.join(", "))
    };
    if rows.is_empty() {
        return Ok(format!("{} where false", select(None)));
    }
    Ok(rows.iter().map(|r| select(Some(r))).collect::<Vec<_>>().join("\nunion all\n"))
}

/// A value as SQL of type `ty`: its text cast as the engine casts text.
fn literal(value: Option<&Json>, ty: &DataType) -> String {
    let ty = ty.to_string().replace('\'', "''");
    match value {
        None | Some(Json::Null) => format!("arrow_cast(NULL, '{ty}')"),
        Some(v) => {
            let text = match v {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!("arrow_cast('{}', '{ty}')", text.replace('\'', "''"))
        }
    }
}
