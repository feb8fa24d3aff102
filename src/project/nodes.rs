//! The resources a project declares: models, seeds, sources and tests.

use std::sync::Arc;

use camino::Utf8PathBuf;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::diagnostic::SourceFile;

/// A column as documented in a schema file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ColumnSpec {
    pub name: String,
    pub description: String,
    /// The SQL type declared for the column (`data_type:`), if any.
    pub data_type: Option<String>,
    /// Where a source column's value sits in a nested JSON or XML record
    /// (`customer.address.city`, `address/@kind`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub meta: Map<String, Json>,
    /// How the column is masked in masked runs (`mask:`).
    #[serde(skip)]
    pub mask: Option<crate::mask::Policy>,
}

/// Where a schema-file entry came from, for diagnostics.
#[derive(Debug, Clone)]
pub struct Origin {
    pub file: Arc<SourceFile>,
    pub span: std::ops::Range<usize>,
}

impl Origin {
    /// A label on the declared name at this entry (`- unique`,
    /// `- accepted_values:`), or on the whole entry.
    pub fn name_label(&self) -> crate::diagnostic::Label {
        let start = self.span.start;
        let text = &self.file.text[start.min(self.file.text.len())..];
        let len = text.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.')).unwrap_or(text.len());
        let span = if len > 0 { start..start + len } else { self.span.clone() };
        crate::diagnostic::Label::new(&self.file, span)
    }
}

/// A SQL model (`models/**/*.sql`).
#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub file: Arc<SourceFile>,
    pub fqn: Vec<String>,
    /// Project tree config merged with the schema file's `config:`; the
    /// model's own `config()` call is merged in when it renders.
    pub config: Map<String, Json>,
    pub description: String,
    pub columns: Vec<ColumnSpec>,
    /// The schema-file entry documenting this model.
    pub patch: Option<Origin>,
    /// Row-level rules declared in schema files (`rules:`).
    pub rules: Vec<crate::project::schema::TestDecl>,
    /// A snapshot (`{% snapshot %}` block or `snapshots:` entry with a
    /// `relation`), run as dbt runs snapshots.
    pub snapshot: bool,
    /// The version of a versioned model this model is.
    pub version: Option<Version>,
}

/// One version of a versioned model (dbt 1.5 `versions:`): `ref(model)`
/// reads the latest, `ref(model, v=v)` this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// The versioned model's name, as `ref()` names it.
    pub model: String,
    pub v: String,
    pub latest: bool,
}

/// A CSV seed (`seeds/**/*.csv`).
#[derive(Debug, Clone)]
pub struct Seed {
    pub name: String,
    pub path: Utf8PathBuf,
    pub fqn: Vec<String>,
    pub config: Map<String, Json>,
    pub description: String,
    pub columns: Vec<ColumnSpec>,
}

/// One table of a declared source.
#[derive(Debug, Clone)]
pub struct SourceTable {
    /// The installed package that declares it (`None`: the root project).
    pub package: Option<String>,
    pub source: String,
    pub name: String,
    /// The table's name in the source system (`identifier:`, default `name`).
    pub identifier: String,
    pub schema: String,
    pub database: Option<String>,
    pub description: String,
    pub columns: Vec<ColumnSpec>,
    pub config: Map<String, Json>,
    /// ferry's location keys (`path`, `format`, reader options), merged from
    /// the source and the table.
    pub location: Map<String, Json>,
    pub origin: Origin,
}

/// What a test checks.
#[derive(Debug, Clone)]
pub enum TestKind {
    /// `unique`, `not_null`, ... from a schema file, attached to a model,
    /// seed or source (and a column, when declared under one).
    Generic {
        test_name: String,
        /// The `test_<name>` macro that implements it, with its namespace.
        package: Option<String>,
        attached_to: NodeRef,
        column: Option<String>,
        /// Arguments as declared (unrendered).
        args: Map<String, Json>,
        origin: Origin,
    },
    /// A `.sql` file under `tests/` that returns failing rows.
    Singular { file: Arc<SourceFile> },
    /// A `unit_tests:` entry: `model` run on the `given` rows of its
    /// parents (`ref('x')` or `source('s', 't')` as written), its output
    /// compared with the `expect`ed rows.
    Unit {
        model: String,
        given: Vec<(String, crate::project::schema::Fixture)>,
        expect: crate::project::schema::Fixture,
        /// What the model's render sees in place of macros, vars and
        /// environment variables.
        overrides: Option<Arc<crate::template::Overrides>>,
        origin: Origin,
    },
}

/// A data test.
#[derive(Debug, Clone)]
pub struct Test {
    pub name: String,
    pub kind: TestKind,
    pub config: Map<String, Json>,
    pub fqn: Vec<String>,
}

/// A reference from a schema file to a node, by kind and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum NodeRef {
    Model(String),
    Seed(String),
    Source(String, String),
}

impl Test {
    /// The file that defines the test.
    pub fn path(&self) -> &camino::Utf8Path {
        match &self.kind {
            TestKind::Generic { origin, .. } | TestKind::Unit { origin, .. } => &origin.file.path,
            TestKind::Singular { file } => &file.path,
        }
    }
}

/// dbt's name for a generic test: `test_model_column__arg1__arg2`, made
/// identifier-safe. (dbt shortens only the compiled file's alias, never the
/// name, so neither does ferry.)
pub fn generic_test_name(test: &str, target: &str, column: Option<&str>, args: &Map<String, Json>) -> String {
    let mut parts = vec![test.to_owned(), target.to_owned()];
    // A model-level test may name its column as an argument.
    let column = column.or_else(|| args.get("column_name").and_then(Json::as_str));
    if let Some(c) = column {
        parts.push(c.to_owned());
    }
    let mut name = parts.join("_");
    let mut flat = Vec::new();
    let mut keys: Vec<&String> = args.keys().collect();
    keys.sort();
    for k in keys {
        if !matches!(k.as_str(), "config" | "column_name" | "model") {
            flatten(&args[k], &mut flat);
        }
    }
    if !flat.is_empty() {
        let cleaned: Vec<String> = flat.iter().map(|v| collapse_non_identifier(v)).collect();
        name.push_str("__");
        name.push_str(&cleaned.join("__"));
    }
    collapse_non_identifier(&name)
}

/// Replaces each run of characters outside `[0-9A-Za-z_]` with one `_`.
fn collapse_non_identifier(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_run = false;
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
            in_run = false;
        } else if !in_run {
            out.push('_');
            in_run = true;
        }
    }
    out
}

fn flatten(v: &Json, out: &mut Vec<String>) {
    match v {
        Json::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        Json::Object(map) => map.values().for_each(|i| flatten(i, out)),
        Json::String(s) => out.push(s.clone()),
        Json::Null => {}
        other => out.push(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_test_names_follow_dbt() {
        let no_args = Map::new();
        assert_eq!(generic_test_name("unique", "orders", Some("order_id"), &no_args), "unique_orders_order_id");
        let args: Map<String, Json> = serde_json::from_str(r#"{"values": ["placed", "shipped"]}"#).unwrap();
        assert_eq!(
            generic_test_name("accepted_values", "orders", Some("status"), &args),
            "accepted_values_orders_status__placed__shipped"
        );
        let args: Map<String, Json> = serde_json::from_str(r#"{"to": "ref('customers')", "field": "id"}"#).unwrap();
        let name = generic_test_name("relationships", "orders", Some("customer_id"), &args);
        assert_eq!(name, "relationships_orders_customer_id__id__ref_customers_");
    }
}
