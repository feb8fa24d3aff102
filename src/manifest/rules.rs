//! A model's `rules:` read into typed [`Rule`]s: ferry's extension of dbt
//! tests, declared like a test (under `rules:` on a model or a column, with
//! the same names and arguments) and checked on every row as the model is
//! staged. Arguments are rendered (they may use Jinja, as in dbt) and
//! checked here, once, with a diagnostic on the declaration; turning a rule
//! into the SQL that finds its broken rows is the validate module's.

use serde_json::{Map, Value as Json};

use super::config::{NodeConfig, Severity};
use crate::diagnostic::{Code, Diagnostic};
use crate::project::nodes::Origin;
use crate::project::schema::TestDecl;
use crate::template::{Rendered, Templater};
use crate::values::ParseKind;

/// The rules ferry knows, for messages.
pub const RULE_NAMES: &[&str] = &[
    "not_null",
    "not_blank",
    "unique",
    "accepted_values",
    "relationships",
    "between",
    "matches",
    "length",
    "parses_as",
    "not_in_future",
    "expression",
];

/// Named formats for `matches: {format: ...}`.
const FORMATS: &[(&str, &str)] = &[
    ("email", r"^[^@\s]+@[^@\s]+\.[^@\s]+$"),
    ("phone", r"^\+?[0-9][0-9 ()./-]{5,}[0-9]$"),
    ("uuid", r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"),
    ("iso_date", r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"),
];

/// One declared rule, its arguments checked.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Shown in the log: `name:` if given, else `<kind>_<column>`.
    pub name: String,
    pub kind: RuleKind,
    pub column: Option<String>,
    pub severity: Severity,
    pub suggestion: Option<String>,
    /// `message:`, replacing what the rule says of a broken row.
    pub message: Option<String>,
    /// The `ref`/`source` a `relationships` rule's `to:` calls, for the DAG.
    pub calls: Option<Rendered>,
    pub origin: Origin,
}

/// What a rule checks, with its arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    NotNull,
    NotBlank,
    /// `values:` as SQL literal texts (quoted or, with `quote: false`,
    /// plain numbers and booleans), and as shown.
    AcceptedValues {
        values: Vec<Literal>,
        shown: Vec<String>,
    },
    /// Bounds as SQL texts and as shown (`…` for an open end).
    Between {
        min: Option<Literal>,
        max: Option<Literal>,
        inclusive: bool,
        shown: (String, String),
    },
    /// A regex, and what it is called in messages (`the email format`).
    Matches {
        pattern: String,
        what: String,
    },
    Length {
        min: Option<u64>,
        max: Option<u64>,
    },
    /// `type:` as written and parsed, and `format:` (empty: ISO).
    ParsesAs {
        type_name: String,
        kind: ParseKind,
        format: String,
    },
    NotInFuture,
    /// A SQL condition that holds for a good row.
    Expression(String),
    /// The columns that together must be unique.
    Unique {
        columns: Vec<String>,
    },
    /// `to:` as written and rendered to SQL, and `field:`.
    Relationships {
        to: String,
        parent: String,
        field: String,
    },
    /// A `rule_<name>` macro, rendered: a SQL condition that holds for a good row.
    Custom {
        name: String,
        valid: String,
    },
    /// Not declared: a conversion in the model's SQL that failed on the
    /// row (see `validate::conversions`). `site_column` holds the input
    /// that did not convert; `function` says what was asked of it.
    Conversion {
        site_column: String,
        function: String,
    },
}

/// A value in a rule's SQL: a string literal, or a number or boolean as is.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Quoted(String),
    Plain(String),
}

/// The `not_null` rules an incremental model gets without declaring them
/// (column, rule name, why): each `unique_key` column, since a NULL key
/// matches no row and would add a row on every run (dbt's silent
/// duplicates); its `cursor` unless `null_cursor: include`, since such a
/// row has no place before or after the high-water mark; and a microbatch
/// model's `event_time`, since such a row is in no batch.
pub fn implicit_not_null(config: &NodeConfig) -> Vec<(String, String, String)> {
    if let Ok(Some(snapshot)) = &config.snapshot {
        let mut out: Vec<(String, String, String)> = snapshot
            .key
            .iter()
            .map(|k| {
                let why = format!(
                    "`{k}` is part of the snapshot's `unique_key`; a row without it cannot be matched with its history"
                );
                (k.clone(), format!("unique_key_not_null_{k}"), why)
            })
            .collect();
        if let super::config::SnapshotStrategy::Timestamp { updated_at } = &snapshot.strategy {
            let why =
                format!("`{updated_at}` is the snapshot's `updated_at`; a row without it has no time to be valid from");
            out.push((updated_at.clone(), format!("updated_at_not_null_{updated_at}"), why));
        }
        return out;
    }
    if let Ok(Some(cd)) = &config.change_detection {
        return cd
            .key
            .iter()
            .map(|k| {
                let why = format!(
                    "`{k}` is part of the model's change detection `key`; a row without it cannot be matched with the rows loaded before"
                );
                (k.clone(), format!("key_not_null_{k}"), why)
            })
            .collect();
    }
    let Ok(Some(inc)) = &config.incremental else { return Vec::new() };
    let mut out: Vec<(String, String, String)> = config
        .unique_key
        .iter()
        .map(|k| {
            let why = format!(
                "`{k}` is part of the model's `unique_key`; a row without it cannot be matched with the rows loaded before"
            );
            (k.clone(), format!("unique_key_not_null_{k}"), why)
        })
        .collect();
    if let Some(c) = inc.cursor.as_ref().filter(|c| !c.include_nulls) {
        let k = &c.column;
        let why = format!("`{k}` is the model's `cursor`; set `null_cursor: include` to take such rows on every run");
        out.push((k.clone(), format!("cursor_not_null_{k}"), why));
    }
    if let Some(m) = &inc.microbatch {
        let k = &m.event_time;
        let why = format!("`{k}` is the model's `event_time`; a row without it is in no batch");
        out.push((k.clone(), format!("event_time_not_null_{k}"), why));
    }
    out
}

/// A `not_null` rule on `column` that no schema file declared.
pub fn not_null(column: &str, name: String, why: String, origin: &Origin) -> Rule {
    Rule {
        name,
        kind: RuleKind::NotNull,
        column: Some(column.to_owned()),
        severity: Severity::Error,
        suggestion: Some(why),
        message: None,
        calls: None,
        origin: origin.clone(),
    }
}

/// Reads a model's `rules:`. `model` names the model for messages.
pub fn read(model: &str, decls: &[TestDecl], templater: &Templater) -> Result<Vec<Rule>, Vec<Diagnostic>> {
    let mut rules = Vec::new();
    let mut diags = Vec::new();
    for d in decls {
        match read_one(d, templater) {
            Ok(r) => rules.push(r),
            Err(message) => diags.push(
                Diagnostic::error(Code::ModelConfig, format!("rule `{}` of `{model}`: {message}", d.test_name))
                    .with_label(d.origin.name_label()),
            ),
        }
    }
    let mut seen = std::collections::HashSet::new();
    for r in &rules {
        if !seen.insert(r.name.as_str()) {
            diags.push(
                Diagnostic::error(Code::DuplicateName, format!("`{model}` has two rules named `{}`", r.name))
                    .with_label(r.origin.name_label())
                    .with_help("give one of them a `name:`"),
            );
        }
    }
    if diags.is_empty() { Ok(rules) } else { Err(diags) }
}

fn read_one(d: &TestDecl, templater: &Templater) -> Result<Rule, String> {
    // Arguments may use Jinja (`max: "{{ var('max_age') }}"`), as in dbt.
    let mut args = d.args.clone();
    for v in args.values_mut() {
        if let Json::String(s) = v
            && (s.contains("{{") || s.contains("{%"))
        {
            *s = templater.render_str(s).map_err(|e| e.message)?;
        }
    }
    let setting = |key: &str| args.get(key).or_else(|| d.config.get(key));
    let severity = match setting("severity").and_then(Json::as_str).map(str::to_ascii_lowercase).as_deref() {
        None | Some("error") => Severity::Error,
        Some("warn") => Severity::Warn,
        Some(other) => return Err(format!("`severity: {other}` must be `error` or `warn`")),
    };
    let column = args.get("column_name").and_then(Json::as_str).map(str::to_owned);
    let mut calls = None;
    let kind = kind(&d.test_name, &args, column.is_some(), templater, &mut calls)?;
    let name = d.custom_name.clone().unwrap_or_else(|| match &column {
        Some(c) => format!("{}_{c}", d.test_name),
        None => d.test_name.clone(),
    });
    Ok(Rule {
        name,
        kind,
        column,
        severity,
        suggestion: setting("suggestion").and_then(Json::as_str).map(str::to_owned),
        message: setting("message").and_then(Json::as_str).map(str::to_owned),
        calls,
        origin: d.origin.clone(),
    })
}

/// The rule `test_name` with its arguments checked. `has_column`: whether
/// the rule is declared under a column (or names one); most rules need one.
fn kind(
    test_name: &str,
    args: &Map<String, Json>,
    has_column: bool,
    templater: &Templater,
    calls: &mut Option<Rendered>,
) -> Result<RuleKind, String> {
    let column = || {
        if has_column { Ok(()) } else { Err("declare it under a column, or give `column_name:`".to_owned()) }
    };
    Ok(match test_name {
        "not_null" => column().map(|()| RuleKind::NotNull)?,
        "not_blank" => column().map(|()| RuleKind::NotBlank)?,
        "accepted_values" => {
            column()?;
            accepted_values(args)?
        }
        "between" => {
            column()?;
            between(args)?
        }
        "matches" => {
            column()?;
            matches(args)?
        }
        "length" => {
            column()?;
            length(args)?
        }
        "parses_as" => {
            column()?;
            parses_as(args)?
        }
        "not_in_future" => column().map(|()| RuleKind::NotInFuture)?,
        "expression" => {
            let e = args.get("expression").and_then(Json::as_str).ok_or("needs `expression:`, a SQL condition")?;
            RuleKind::Expression(e.to_owned())
        }
        "unique" => {
            let columns: Vec<String> = match args.get("columns").and_then(Json::as_array) {
                Some(list) => list.iter().filter_map(Json::as_str).map(str::to_owned).collect(),
                None => {
                    column()?;
                    vec![args.get("column_name").and_then(Json::as_str).unwrap_or_default().to_owned()]
                }
            };
            if columns.is_empty() {
                return Err("`columns:` must list column names".into());
            }
            RuleKind::Unique { columns }
        }
        "relationships" => {
            column()?;
            let to = args.get("to").and_then(Json::as_str).ok_or("needs `to:`, such as `ref('customers')`")?;
            let field = args.get("field").and_then(Json::as_str).ok_or("needs `field:`, the column in `to`")?;
            let rendered = templater.render_expression(to).map_err(|d| d.message)?;
            let parent = rendered.sql.clone();
            *calls = Some(rendered);
            RuleKind::Relationships { to: to.to_owned(), parent, field: field.to_owned() }
        }
        custom => custom_rule(custom, args, templater)?,
    })
}

fn accepted_values(args: &Map<String, Json>) -> Result<RuleKind, String> {
    let list = args.get("values").and_then(Json::as_array).ok_or("needs `values:`, a list")?;
    let quote = args.get("quote").and_then(Json::as_bool).unwrap_or(true);
    let values = list.iter().map(|v| if quote { quoted(v) } else { plain(v) }).collect::<Result<_, _>>()?;
    let shown = list.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)).collect();
    Ok(RuleKind::AcceptedValues { values, shown })
}

fn between(args: &Map<String, Json>) -> Result<RuleKind, String> {
    let inclusive = args.get("inclusive").and_then(Json::as_bool).unwrap_or(true);
    let (lo, hi) = (args.get("min").filter(|v| !v.is_null()), args.get("max").filter(|v| !v.is_null()));
    if lo.is_none() && hi.is_none() {
        return Err("needs `min:`, `max:` or both".into());
    }
    let show = |v: Option<&Json>| {
        v.map_or_else(|| "…".to_owned(), |v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
    };
    Ok(RuleKind::Between {
        min: lo.map(bound).transpose()?,
        max: hi.map(bound).transpose()?,
        inclusive,
        shown: (show(lo), show(hi)),
    })
}

fn matches(args: &Map<String, Json>) -> Result<RuleKind, String> {
    let (pattern, what) = match (args.get("regex").and_then(Json::as_str), args.get("format").and_then(Json::as_str)) {
        (Some(re), None) => (re.to_owned(), format!("the pattern `{re}`")),
        (None, Some(f)) => {
            let Some((_, re)) = FORMATS.iter().find(|(n, _)| *n == f) else {
                let known: Vec<&str> = FORMATS.iter().map(|(n, _)| *n).collect();
                return Err(format!("unknown format `{f}`; known formats: {}", known.join(", ")));
            };
            ((*re).to_owned(), format!("the {f} format"))
        }
        _ => return Err("needs one of `regex:` or `format:`".into()),
    };
    regex::Regex::new(&pattern).map_err(|e| format!("`{pattern}` is not a valid regex: {e}"))?;
    Ok(RuleKind::Matches { pattern, what })
}

fn length(args: &Map<String, Json>) -> Result<RuleKind, String> {
    let n = |key: &str| -> Result<Option<u64>, String> {
        match args.get(key).filter(|v| !v.is_null()) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| format!("`{key}: {v}` must be a whole number")),
        }
    };
    let (min, max) = (n("min")?, n("max")?);
    if min.is_none() && max.is_none() {
        return Err("needs `min:`, `max:` or both".into());
    }
    Ok(RuleKind::Length { min, max })
}

fn parses_as(args: &Map<String, Json>) -> Result<RuleKind, String> {
    let ty = args.get("type").and_then(Json::as_str).ok_or("needs `type:` (date, timestamp, number or integer)")?;
    let Some(kind) = ParseKind::parse(ty) else {
        return Err(format!("`type: {ty}` must be date, timestamp, number or integer"));
    };
    let format = args.get("format").and_then(Json::as_str).unwrap_or_default();
    if chrono::format::StrftimeItems::new(format).any(|i| matches!(i, chrono::format::Item::Error)) {
        return Err(format!("`format: {format}` is not a valid strftime format (such as `%d/%m/%Y`)"));
    }
    Ok(RuleKind::ParsesAs { type_name: ty.to_owned(), kind, format: format.to_owned() })
}

fn custom_rule(custom: &str, args: &Map<String, Json>, templater: &Templater) -> Result<RuleKind, String> {
    let macro_name = format!("rule_{custom}");
    if !templater.macros.contains_key(&macro_name) {
        let mut msg = format!(
            "no rule named `{custom}`; ferry's rules are {}, and `{{% macro rule_{custom}(column_name) %}}` defines a custom one",
            RULE_NAMES.join(", ")
        );
        if let Some(help) = crate::diagnostic::did_you_mean(custom, RULE_NAMES.iter().copied()) {
            msg.push_str(&format!(" ({help})"));
        }
        return Err(msg);
    }
    let valid = templater.render_macro(&macro_name, args).map_err(|d| d.message)?;
    Ok(RuleKind::Custom { name: custom.to_owned(), valid })
}

/// A value as a quoted SQL literal.
fn quoted(v: &Json) -> Result<Literal, String> {
    match v {
        Json::String(s) => Ok(Literal::Quoted(s.clone())),
        Json::Number(n) => Ok(Literal::Quoted(n.to_string())),
        Json::Bool(b) => Ok(Literal::Quoted(b.to_string())),
        other => Err(format!("`{other}` is not a value")),
    }
}

/// A value as an unquoted SQL literal (`quote: false`): numbers and booleans.
fn plain(v: &Json) -> Result<Literal, String> {
    match v {
        Json::Number(n) => Ok(Literal::Plain(n.to_string())),
        Json::Bool(b) => Ok(Literal::Plain(b.to_string())),
        Json::String(s) if s.parse::<f64>().is_ok() => Ok(Literal::Plain(s.clone())),
        other => Err(format!("`{other}` must be a number with `quote: false`")),
    }
}

/// A `between` bound: a number as is, anything else as a string literal
/// (dates compare after DataFusion's coercion).
fn bound(v: &Json) -> Result<Literal, String> {
    match v {
        Json::Number(n) => Ok(Literal::Plain(n.to_string())),
        Json::String(s) if s.trim().parse::<f64>().is_ok() => Ok(Literal::Plain(s.trim().to_owned())),
        Json::String(s) => Ok(Literal::Quoted(s.clone())),
        other => Err(format!("`{other}` is not a bound")),
    }
}
