//! Registers seeds and file sources as DataFusion tables, learning their
//! schemas from the files and the declared `data_type`s (declared types win).

use std::sync::Arc;

use camino::{Utf8Path, Utf8PathBuf};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::TableReference;
use datafusion::error::DataFusionError;
use serde_json::Value as Json;

use super::plan::Planned;
use super::session::{Engine, FileFormat};
use crate::diagnostic::{Code, Diagnostic, Label};
use crate::manifest::{Manifest, Node, Resource};
use crate::project::nodes::SourceTable;

pub(super) async fn register_source(engine: &Engine, manifest: &Manifest, s: &SourceTable) -> Planned {
    let table = TableReference::partial(s.source.as_str(), s.name.as_str());
    let here = Label::new(&s.origin.file, s.origin.span.clone());
    let name = format!("{}.{}", s.source, s.name);
    if s.location.contains_key("connection") {
        return Err(vec![
            Diagnostic::error(
                Code::SourceSchema,
                format!("source `{name}` reads a database, which ferry does not support yet"),
            )
            .with_label(here),
        ]);
    }
    let declared = declared_schema(engine, &s.columns, &s.origin.file.path).await?;
    let Some(path) = s.location.get("path").and_then(Json::as_str) else {
        if let Some(schema) = declared.filter(|_| !s.columns.is_empty()) {
            engine
                .register_schema_only(table, Arc::clone(&schema))
                .map_err(|e| vec![source_error(&name, &e, here.clone())])?;
            return Ok(Some(schema));
        }
        return Err(vec![
            Diagnostic::error(Code::SourceSchema, format!("ferry cannot tell the columns of source `{name}`"))
                .with_label(here)
                .with_help("give the table a `path:` (and `format:`) to read, or `columns:` with a `data_type` each"),
        ]);
    };
    let format_name = s.location.get("format").and_then(Json::as_str).map(str::to_owned).or_else(|| extension_of(path));
    let format = format_name.as_deref().and_then(FileFormat::from_name).ok_or_else(|| {
        vec![
            Diagnostic::error(Code::SourceSchema, format!("source `{name}` has no readable `format`"))
                .with_label(here.clone())
                .with_help(format!(
                    "set `format:` to one of {}",
                    FileFormat::NAMES.map(|n| format!("`{n}`")).join(", ")
                )),
        ]
    })?;
    let full = resolve_path(&manifest.root, path);
    let inferred = engine.infer_schema(&full, format).await.map_err(|e| vec![source_error(&name, &e, here.clone())])?;
    let schema = overlay(&inferred, declared.as_ref());
    engine.register_file(table, &full, format, &schema).await.map_err(|e| vec![source_error(&name, &e, here)])?;
    Ok(Some(schema))
}

pub(super) async fn register_seed(engine: &Engine, manifest: &Manifest, node: &Node) -> Planned {
    let Resource::Seed(seed) = &node.resource else { return Ok(None) };
    let full = manifest.root.join(&seed.path);
    let err = |e: &DataFusionError| {
        vec![
            Diagnostic::error(Code::SourceSchema, format!("cannot read seed `{}`: {}", seed.name, first_line(e)))
                .in_file(&seed.path),
        ]
    };
    let inferred = engine.infer_schema(&full, FileFormat::Csv).await.map_err(|e| err(&e))?;
    let mut types = Vec::new();
    if let Some(Json::Object(map)) = node.config.get("column_types") {
        for (col, ty) in map {
            let Some(ty) = ty.as_str() else { continue };
            let dt = engine.sql_type(ty).await.map_err(|_| {
                vec![
                    Diagnostic::error(
                        Code::DataType,
                        format!("seed `{}`: unknown type `{ty}` for column `{col}`", seed.name),
                    )
                    .in_file(&seed.path),
                ]
            })?;
            if inferred.field_with_name(col).is_err() {
                return Err(vec![
                    Diagnostic::error(
                        Code::UnknownColumn,
                        format!("`column_types` names `{col}`, which seed `{}` does not have", seed.name),
                    )
                    .in_file(&seed.path)
                    .with_help(
                        crate::diagnostic::did_you_mean(col, inferred.fields().iter().map(|f| f.name().as_str()))
                            .unwrap_or_else(|| "check the CSV header".to_owned()),
                    ),
                ]);
            }
            types.push((col.clone(), dt));
        }
    }
    let declared = Arc::new(Schema::new(types.into_iter().map(|(n, t)| Field::new(n, t, true)).collect::<Vec<_>>()));
    let schema = overlay(&inferred, Some(&declared));
    engine
        .register_file(TableReference::bare(node.name.as_str()), &full, FileFormat::Csv, &schema)
        .await
        .map_err(|e| err(&e))?;
    Ok(Some(schema))
}

/// The declared `data_type`s of columns, as Arrow types.
async fn declared_schema(
    engine: &Engine,
    columns: &[crate::project::nodes::ColumnSpec],
    path: &Utf8Path,
) -> Result<Option<SchemaRef>, Vec<Diagnostic>> {
    let mut fields = Vec::new();
    for c in columns {
        let Some(ty) = &c.data_type else { continue };
        let dt = engine.sql_type(ty).await.map_err(|_| {
            vec![
                Diagnostic::error(Code::DataType, format!("unknown type `{ty}` for column `{}`", c.name)).in_file(path),
            ]
        })?;
        fields.push(Field::new(c.name.clone(), dt, true));
    }
    Ok((!fields.is_empty()).then(|| Arc::new(Schema::new(fields))))
}

/// The inferred schema with declared types replacing inferred ones.
fn overlay(inferred: &SchemaRef, declared: Option<&SchemaRef>) -> SchemaRef {
    let Some(declared) = declared else { return Arc::clone(inferred) };
    let fields: Vec<Field> = inferred
        .fields()
        .iter()
        .map(|f| match declared.field_with_name(f.name()) {
            Ok(d) => Field::new(f.name(), d.data_type().clone(), true),
            Err(_) => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

fn extension_of(path: &str) -> Option<String> {
    let name = path.rsplit('/').next()?;
    let mut parts: Vec<&str> = name.split('.').collect();
    while let Some(last) = parts.pop() {
        if !matches!(last, "gz" | "bz2" | "xz" | "zst") {
            return (!parts.is_empty()).then(|| last.to_owned());
        }
    }
    None
}

fn resolve_path(root: &Utf8Path, path: &str) -> Utf8PathBuf {
    let p = Utf8Path::new(path);
    if p.is_absolute() || path.contains("://") { p.to_owned() } else { root.join(p) }
}

fn source_error(name: &str, e: &DataFusionError, label: Label) -> Diagnostic {
    Diagnostic::error(Code::SourceSchema, format!("cannot read source `{name}`: {}", first_line(e))).with_label(label)
}

fn first_line(e: &DataFusionError) -> String {
    e.find_root().strip_backtrace().lines().next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_skips_compression_suffixes() {
        assert_eq!(extension_of("data/a.csv.gz").as_deref(), Some("csv"));
        assert_eq!(extension_of("data/a.parquet").as_deref(), Some("parquet"));
        assert_eq!(extension_of("data/dir"), None);
    }
}
