//! YAML documents as trees of nodes that remember where they came from, so
//! that every complaint about a project file can point at the line.
//!
//! Parsing uses serde-saphyr; [`Node`] is a dynamic value with a location,
//! and [`Node::deserialize_into`] turns a subtree into a typed struct while
//! keeping diagnostics tied to the file.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::diagnostic::{Code, Diagnostic, Label, SourceFile};

/// A YAML value with its byte range in the source file.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: std::ops::Range<usize>,
}

/// The shape of a YAML value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Seq(Vec<Node>),
    /// Keys keep their own spans so unknown keys can be pointed at.
    Map(Vec<(Key, Node)>),
}

/// A mapping key and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub span: std::ops::Range<usize>,
}

impl Node {
    /// A null node with no location (for absent optional values).
    pub fn null() -> Self {
        Node { value: Value::Null, span: 0..0 }
    }

    /// The entries of a mapping (empty for anything else).
    pub fn entries(&self) -> &[(Key, Node)] {
        match &self.value {
            Value::Map(entries) => entries,
            _ => &[],
        }
    }

    /// The value under `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries().iter().find(|(k, _)| k.name == key).map(|(_, v)| v)
    }

    /// The string value, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The items of a sequence (empty for anything else).
    pub fn items(&self) -> &[Node] {
        match &self.value {
            Value::Seq(items) => items,
            _ => &[],
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// Converts the node to JSON (for configs handed to templates and artifacts).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::String(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(entries.iter().map(|(k, v)| (k.name.clone(), v.to_json())).collect()),
        }
    }

    /// Deserializes this subtree into `T`; a shape error points at this node.
    pub fn deserialize_into<T: de::DeserializeOwned>(
        &self,
        file: &Arc<SourceFile>,
        what: &str,
    ) -> Result<T, Box<Diagnostic>> {
        serde_json::from_value(self.to_json()).map_err(|e| {
            Box::new(
                Diagnostic::error(Code::YamlShape, format!("invalid {what}: {e}"))
                    .with_label(Label::new(file, self.span.clone())),
            )
        })
    }
}

/// Parses a YAML document; an empty document is a null node.
pub fn parse(file: &Arc<SourceFile>) -> Result<Node, Box<Diagnostic>> {
    if file.text.trim().is_empty() {
        return Ok(Node::null());
    }
    // `true`/`false` here; PyYAML's `yes`/`no`/`on`/`off` in `into_node`; `Y`, `N` stay strings.
    let options = serde_saphyr::options! { strict_booleans: true };
    let raw: Spanned<RawValue> = serde_saphyr::from_str_with_options(&file.text, options).map_err(|e| {
        let (message, help) = error_message(&e);
        let mut diag = Diagnostic::error(Code::YamlSyntax, message);
        if let Some(help) = help {
            diag = diag.with_help(help);
        }
        match e.location().and_then(|l| offset_of(file, &l)) {
            Some(off) => diag = diag.with_label(Label::new(file, off..off)),
            None => diag = diag.in_file(&file.path),
        }
        Box::new(diag)
    })?;
    Ok(into_node(file, raw))
}

/// The parser's error in ferry's words, with a suggestion where one
/// helps. The library's own wording names its API (`set DuplicateKeyPolicy
/// in Options`, `budget breached: Depth { depth: 65 }`); a user needs to know
/// what in the file is wrong.
fn error_message(e: &serde_saphyr::Error) -> (String, Option<String>) {
    use serde_saphyr::budget::BudgetBreach;
    let owned = |s: &str| Some(s.to_owned());
    let mut inner = e;
    while let serde_saphyr::Error::AliasError { error, .. } | serde_saphyr::Error::WithSnippet { error, .. } = inner {
        inner = error;
    }
    match inner {
        serde_saphyr::Error::DuplicateMappingKey { key, .. } => (
            match key {
                Some(k) => format!("duplicate key `{k}` in a mapping"),
                None => "duplicate key in a mapping".to_owned(),
            },
            owned("each key may appear once in a mapping; merge the two entries"),
        ),
        serde_saphyr::Error::Budget { breach, .. } => {
            let limits = serde_saphyr::Budget::default();
            let message = match breach {
                BudgetBreach::Depth { .. } => {
                    format!("YAML nested more than {} levels deep", limits.max_depth)
                }
                BudgetBreach::Nodes { .. } => {
                    format!("the YAML holds more than {} values once its aliases are expanded", limits.max_nodes)
                }
                BudgetBreach::Aliases { .. } | BudgetBreach::Anchors { .. } | BudgetBreach::MergeKeys { .. } => {
                    "the YAML uses more anchors, aliases or merge keys than ferry reads".to_owned()
                }
                _ => "the YAML is larger than ferry reads (too many values, documents or bytes)".to_owned(),
            };
            (
                message,
                owned(
                    "project YAML this large or deep is almost always generated by mistake; anchors (`&a`) that alias each other (`*a`) multiply",
                ),
            )
        }
        serde_saphyr::Error::AliasExpansionLimitExceeded { .. }
        | serde_saphyr::Error::AliasReplayLimitExceeded { .. }
        | serde_saphyr::Error::AliasReplayStackDepthExceeded { .. } => (
            "the YAML's aliases expand too far".to_owned(),
            owned("an anchor (`&a`) whose aliases (`*a`) nest other aliases multiplies with each level"),
        ),
        other => {
            let message = other.render_with_options(serde_saphyr::render_options! {
                snippets: serde_saphyr::SnippetMode::Off,
            });
            match strip_location_suffix(&message) {
                "recursion limit exceeded" => (
                    "YAML nested too deep: its `[` / `{` collections nest past the parser's limit".to_owned(),
                    owned("project YAML this deep is almost always generated by mistake"),
                ),
                message => (format!("malformed YAML: {message}"), None),
            }
        }
    }
}

fn strip_location_suffix(message: &str) -> &str {
    let first = message.lines().next().unwrap_or(message);
    match first.rfind(" at line ") {
        Some(i) => &first[..i],
        None => first,
    }
}

fn offset_of(file: &SourceFile, loc: &serde_saphyr::Location) -> Option<usize> {
    if let Some(b) = loc.span().byte_offset() {
        return usize::try_from(b).ok();
    }
    let line = usize::try_from(loc.line()).ok()?;
    let col = usize::try_from(loc.column()).ok()?;
    file.offset_of(line, col)
}

fn span_of(file: &SourceFile, loc: &serde_saphyr::Location) -> std::ops::Range<usize> {
    let start = offset_of(file, loc).unwrap_or(0);
    let len = loc.span().byte_len().and_then(|l| usize::try_from(l).ok()).unwrap_or(0);
    start..(start + len).min(file.text.len())
}

fn into_node(file: &SourceFile, raw: Spanned<RawValue>) -> Node {
    let span = span_of(file, &raw.referenced);
    let value = match raw.value {
        RawValue::Null => Value::Null,
        RawValue::Bool(b) => Value::Bool(b),
        RawValue::Int(i) => Value::Int(i),
        RawValue::Float(f) => Value::Float(f),
        RawValue::String(s) => match yaml11_bool(&s) {
            // dbt reads YAML with PyYAML (YAML 1.1): a plain `yes`, `no`,
            // `on` or `off` is a boolean there, and so here; quoted, a string.
            Some(b) if !file.text[span.clone()].starts_with(['\'', '"']) => Value::Bool(b),
            _ => Value::String(s),
        },
        RawValue::Seq(items) => Value::Seq(items.into_iter().map(|i| into_node(file, i)).collect()),
        RawValue::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let key = Key { span: span_of(file, &k.referenced), name: k.value.0 };
                    (key, into_node(file, v))
                })
                .collect(),
        ),
    };
    Node { value, span }
}

/// PyYAML's YAML 1.1 booleans beyond `true` and `false` (not `y` or `n`).
fn yaml11_bool(s: &str) -> Option<bool> {
    match s {
        "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
        "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

/// A dynamic value as serde-saphyr hands it over, before spans become offsets.
enum RawValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Seq(Vec<Spanned<RawValue>>),
    Map(Vec<(Spanned<KeyString>, Spanned<RawValue>)>),
}

/// Any scalar key, kept as text (`1:` and `true:` are keys too).
struct KeyString(String);

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<RawValue, E> {
        Ok(RawValue::Null)
    }
    fn visit_none<E>(self) -> Result<RawValue, E> {
        Ok(RawValue::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawValue, D::Error> {
        RawValue::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<RawValue, E> {
        Ok(RawValue::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<RawValue, E> {
        Ok(RawValue::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<RawValue, E> {
        Ok(i64::try_from(v).map_or(RawValue::Float(v as f64), RawValue::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<RawValue, E> {
        Ok(RawValue::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<RawValue, E> {
        Ok(RawValue::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<RawValue, E> {
        Ok(RawValue::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(RawValue::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(RawValue::Map(entries))
    }
}

impl<'de> Deserialize<'de> for KeyString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = KeyString;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar mapping key")
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyString, E> {
                Ok(KeyString(v.to_owned()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<KeyString, E> {
                Ok(KeyString("null".to_owned()))
            }
        }
        d.deserialize_string(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_keep_their_positions() {
        let file = SourceFile::new("x.yml", "name: shop\nmodels:\n  shop:\n    +materialized: view\n");
        let node = parse(&file).unwrap();
        let models = node.get("models").unwrap();
        let (key, value) = &models.get("shop").unwrap().entries()[0];
        assert_eq!(key.name, "+materialized");
        assert_eq!(file.line_col(key.span.start), (4, 5));
        assert_eq!(value.as_str(), Some("view"));
        assert_eq!(&file.text[value.span.clone()], "view");
    }

    #[test]
    fn malformed_yaml_names_its_line() {
        let file = SourceFile::new("x.yml", "models:\n  - name: a\n   bad: [1, 2\n");
        let diag = parse(&file).unwrap_err();
        assert_eq!(diag.code, Code::YamlSyntax);
        let label = diag.primary.expect("a location");
        assert!(file.line_col(label.range.start).0 >= 3, "{:?}", file.line_col(label.range.start));
    }

    #[test]
    fn booleans_are_pyyamls_as_in_dbt() {
        let file = SourceFile::new(
            "x.yml",
            "{n: 3, values: [Y, N, yes, 'yes', \"no\", Off, ON, True, nope], flag: true, quote: no}",
        );
        let v = parse(&file).unwrap().to_json();
        assert_eq!(
            v,
            serde_json::json!({"n": 3, "values": ["Y", "N", true, "yes", "no", false, true, true, "nope"], "flag": true, "quote": false})
        );
    }

    #[test]
    fn empty_document_is_null() {
        let file = SourceFile::new("x.yml", "# only a comment\n");
        assert!(parse(&file).unwrap().is_null());
    }
}
