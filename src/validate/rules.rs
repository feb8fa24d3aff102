//! Row-level rules: ferry's extension of dbt tests. A rule is declared like
//! a test (under `rules:` on a model or a column, with the same names and
//! arguments) but is checked on every row as the model is staged: a row
//! that breaks an `error` rule is quarantined instead of staged; a `warn`
//! rule stages the row and logs it.
//!
//! Each rule compiles to one SQL expression that is true exactly when a row
//! breaks it, so all rules of a model are evaluated in the single query
//! that stages it ([`checked_sql`]).

use serde_json::Value as Json;

use super::data_test::Severity;
use crate::diagnostic::{Code, Diagnostic};
use crate::project::nodes::Origin;
use crate::project::schema::TestDecl;
use crate::template::Templater;
use crate::template::functions::quote_ident;

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

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Shown in the log: `name:` if given, else `<kind>_<column>`.
    pub name: String,
    pub kind: String,
    pub column: Option<String>,
    pub severity: Severity,
    pub suggestion: Option<String>,
    /// What a broken row is told: "`status` is not one of active, closed".
    pub message: String,
    /// SQL, true exactly when a row breaks the rule (never NULL).
    pub broken: String,
    /// A join the rule needs (relationships), added to the checking query.
    pub join: Option<String>,
    /// The `ref`/`source` the rule's `to:` calls, for the DAG.
    pub calls: Option<crate::template::Rendered>,
    pub origin: Origin,
}

/// Compiles a model's `rules:`. `model` names the model for messages.
pub fn compile(model: &str, decls: &[TestDecl], templater: &Templater) -> Result<Vec<Rule>, Vec<Diagnostic>> {
    let mut rules = Vec::new();
    let mut diags = Vec::new();
    for (k, d) in decls.iter().enumerate() {
        match compile_one(k, d, templater) {
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

fn compile_one(k: usize, d: &TestDecl, templater: &Templater) -> Result<Rule, String> {
    // Arguments may use Jinja (`max: "{{ var('max_age') }}"`), as in dbt.
    let mut args = d.args.clone();
    for v in args.values_mut() {
        if let Json::String(s) = v
            && (s.contains("{{") || s.contains("{%"))
        {
            *s = templater.render_str(s).map_err(|e| e.message)?;
        }
    }
    let args = &args;
    let setting = |key: &str| args.get(key).or_else(|| d.config.get(key));
    let severity = match setting("severity").and_then(Json::as_str).map(str::to_ascii_lowercase).as_deref() {
        None | Some("error") => Severity::Error,
        Some("warn") => Severity::Warn,
        Some(other) => return Err(format!("`severity: {other}` must be `error` or `warn`")),
    };
    let column = args.get("column_name").and_then(Json::as_str).map(str::to_owned);
    let col = || -> Result<String, String> {
        column.as_deref().map(quote_ident).ok_or_else(|| "declare it under a column, or give `column_name:`".to_owned())
    };
    let shown = column.clone().unwrap_or_else(|| "row".to_owned());
    let mut join = None;
    let mut calls = None;
    let (broken, message) = match d.test_name.as_str() {
        "not_null" => (format!("{} IS NULL", col()?), format!("`{shown}` is null")),
        "not_blank" => {
            let c = col()?;
            (format!("{c} IS NULL OR trim(CAST({c} AS VARCHAR)) = ''"), format!("`{shown}` is blank"))
        }
        "accepted_values" => {
            let c = col()?;
            let values = args.get("values").and_then(Json::as_array).ok_or("needs `values:`, a list")?;
            let quote = args.get("quote").and_then(Json::as_bool).unwrap_or(true);
            let listed: Vec<String> =
                values.iter().map(|v| if quote { literal(v) } else { plain(v) }).collect::<Result<_, _>>()?;
            let names: Vec<String> =
                values.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)).collect();
            (
                format!("{c} IS NOT NULL AND {c} NOT IN ({})", listed.join(", ")),
                format!("`{shown}` is not one of {}", names.join(", ")),
            )
        }
        "between" => {
            let c = col()?;
            let inclusive = args.get("inclusive").and_then(Json::as_bool).unwrap_or(true);
            let (lo, hi) = (args.get("min").filter(|v| !v.is_null()), args.get("max").filter(|v| !v.is_null()));
            if lo.is_none() && hi.is_none() {
                return Err("needs `min:`, `max:` or both".into());
            }
            let (lt, gt) = if inclusive { ("<", ">") } else { ("<=", ">=") };
            let mut parts = Vec::new();
            if let Some(v) = lo {
                parts.push(format!("{c} {lt} {}", bound(v)?));
            }
            if let Some(v) = hi {
                parts.push(format!("{c} {gt} {}", bound(v)?));
            }
            let show = |v: Option<&Json>| {
                v.map_or_else(|| "…".to_owned(), |v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            };
            let (open, close) = if inclusive { ('[', ']') } else { ('(', ')') };
            (parts.join(" OR "), format!("`{shown}` is outside {open}{}, {}{close}", show(lo), show(hi)))
        }
        "matches" => {
            let c = col()?;
            let (pattern, what) =
                match (args.get("regex").and_then(Json::as_str), args.get("format").and_then(Json::as_str)) {
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
            (
                format!("{c} IS NOT NULL AND NOT regexp_like(CAST({c} AS VARCHAR), {})", quote_str(&pattern)),
                format!("`{shown}` does not match {what}"),
            )
        }
        "length" => {
            let c = col()?;
            let n = |key: &str| -> Result<Option<u64>, String> {
                match args.get(key).filter(|v| !v.is_null()) {
                    None => Ok(None),
                    Some(v) => v.as_u64().map(Some).ok_or_else(|| format!("`{key}: {v}` must be a whole number")),
                }
            };
            let (lo, hi) = (n("min")?, n("max")?);
            let len = format!("character_length(CAST({c} AS VARCHAR))");
            let mut parts = Vec::new();
            if let Some(v) = lo {
                parts.push(format!("{len} < {v}"));
            }
            if let Some(v) = hi {
                parts.push(format!("{len} > {v}"));
            }
            if parts.is_empty() {
                return Err("needs `min:`, `max:` or both".into());
            }
            let message = match (lo, hi) {
                (Some(lo), Some(hi)) => format!("`{shown}` is not {lo} to {hi} characters long"),
                (Some(lo), None) => format!("`{shown}` is shorter than {lo} characters"),
                (None, Some(hi)) => format!("`{shown}` is longer than {hi} characters"),
                (None, None) => unreachable!("checked above"),
            };
            (parts.join(" OR "), message)
        }
        "parses_as" => {
            let c = col()?;
            let ty =
                args.get("type").and_then(Json::as_str).ok_or("needs `type:` (date, timestamp, number or integer)")?;
            if crate::engine::functions::Kind::parse(ty).is_none() {
                return Err(format!("`type: {ty}` must be date, timestamp, number or integer"));
            }
            let format = args.get("format").and_then(Json::as_str).unwrap_or_default();
            let bad_format =
                chrono::format::StrftimeItems::new(format).any(|i| matches!(i, chrono::format::Item::Error));
            if bad_format {
                return Err(format!("`format: {format}` is not a valid strftime format (such as `%d/%m/%Y`)"));
            }
            let with = if format.is_empty() { String::new() } else { format!(" in the format `{format}`") };
            (
                format!(
                    "{c} IS NOT NULL AND trim(CAST({c} AS VARCHAR)) <> '' AND NOT ferry_parses({c}, {}, {})",
                    quote_str(ty),
                    quote_str(format)
                ),
                format!("`{shown}` does not parse as a {ty}{with}"),
            )
        }
        "not_in_future" => {
            let c = col()?;
            (format!("{c} > now()"), format!("`{shown}` is in the future"))
        }
        "expression" => {
            let e = args.get("expression").and_then(Json::as_str).ok_or("needs `expression:`, a SQL condition")?;
            (format!("NOT ({e})"), format!("`{e}` does not hold"))
        }
        "unique" => {
            let cols: Vec<String> = match args.get("columns").and_then(Json::as_array) {
                Some(list) => list.iter().filter_map(Json::as_str).map(quote_ident).collect(),
                None => vec![col()?],
            };
            if cols.is_empty() {
                return Err("`columns:` must list column names".into());
            }
            let present: Vec<String> = cols.iter().map(|c| format!("{c} IS NOT NULL")).collect();
            let names: Vec<&str> = cols.iter().map(|c| c.trim_matches('"')).collect();
            (
                format!("{} AND count(*) OVER (PARTITION BY {}) > 1", present.join(" AND "), cols.join(", ")),
                format!("`{}` is not unique", names.join(", ")),
            )
        }
        "relationships" => {
            let c = col()?;
            let to = args.get("to").and_then(Json::as_str).ok_or("needs `to:`, such as `ref('customers')`")?;
            let field = args.get("field").and_then(Json::as_str).ok_or("needs `field:`, the column in `to`")?;
            let rendered = templater.render_expression(to).map_err(|d| d.message)?;
            let parent = rendered.sql.clone();
            calls = Some(rendered);
            let alias = quote_ident(&format!("__ferry_parent_{k}"));
            join = Some(format!(
                "LEFT JOIN (SELECT DISTINCT {} AS k FROM {parent}) AS {alias} ON {c} = {alias}.k",
                quote_ident(field)
            ));
            (format!("{c} IS NOT NULL AND {alias}.k IS NULL"), format!("`{shown}` has no match in {to}.{field}"))
        }
        custom => {
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
            (format!("NOT ({})", valid.trim()), format!("`{shown}` breaks `{custom}`"))
        }
    };
    let name = d.custom_name.clone().unwrap_or_else(|| match &column {
        Some(c) => format!("{}_{c}", d.test_name),
        None => d.test_name.clone(),
    });
    Ok(Rule {
        name,
        kind: d.test_name.clone(),
        column,
        severity,
        suggestion: setting("suggestion").and_then(Json::as_str).map(str::to_owned),
        message: setting("message").and_then(Json::as_str).map_or(message, str::to_owned),
        // A rule whose condition is NULL (a NULL compared) is not broken.
        broken: format!("coalesce(({broken}), false)"),
        join,
        calls,
        origin: d.origin.clone(),
    })
}

/// `dedupe: {key: [cols], keep: {order_by: "updated_at desc"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dedupe {
    pub key: Vec<String>,
    /// `keep.order_by`, item by item: the first row in this order wins.
    pub order_by: Vec<OrderItem>,
}

/// One item of an ORDER BY list: a SQL expression and its direction.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderItem {
    pub expr: String,
    pub descending: bool,
    /// DataFusion's default: NULLs sort as the largest value.
    pub nulls_first: bool,
}

impl Dedupe {
    /// Reads a model's `dedupe` config; a bad one is the message to show.
    pub fn from_config(config: &serde_json::Map<String, Json>) -> Result<Option<Self>, String> {
        let Some(d) = config.get("dedupe").filter(|d| !d.is_null()) else { return Ok(None) };
        let key = match d.get("key") {
            None => Vec::new(),
            Some(v) => crate::project::config::column_list(v, "dedupe.key")?,
        };
        if key.is_empty() {
            return Err("`dedupe` needs `key:`, the column or columns that identify a record".into());
        }
        let order_by = match d.get("keep") {
            None | Some(Json::Null) => Vec::new(),
            Some(k) => match k.get("order_by").and_then(Json::as_str) {
                Some(o) => order_items(o)?,
                None => return Err("`dedupe.keep` takes `order_by:`, such as `\"updated_at desc\"`".into()),
            },
        };
        Ok(Some(Dedupe { key, order_by }))
    }
}

/// Parses an ORDER BY list (`updated_at desc nulls last, id`).
fn order_items(text: &str) -> Result<Vec<OrderItem>, String> {
    use datafusion::sql::sqlparser::{dialect::GenericDialect, parser::Parser, tokenizer::Token};
    let bad = |e: &dyn std::fmt::Display| format!("`keep.order_by: {text}` is not an ORDER BY list: {e}");
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect).try_with_sql(text).map_err(|e| bad(&e))?;
    let items = parser.parse_comma_separated(Parser::parse_order_by_expr).map_err(|e| bad(&e))?;
    parser.expect_token(&Token::EOF).map_err(|e| bad(&e))?;
    Ok(items
        .into_iter()
        .map(|o| {
            let descending = o.options.asc == Some(false);
            OrderItem { expr: o.expr.to_string(), descending, nulls_first: o.options.nulls_first.unwrap_or(descending) }
        })
        .collect())
}

/// The columns that name a record in the error log: the dedup key, else
/// `unique_key`; empty means every column.
pub fn record_key(config: &serde_json::Map<String, Json>, dedupe: Option<&Dedupe>) -> Vec<String> {
    match dedupe {
        Some(d) => d.key.clone(),
        None => config
            .get("unique_key")
            .and_then(|v| crate::project::config::column_list(v, "unique_key").ok())
            .unwrap_or_default(),
    }
}

/// How many columns the splitter sees after the model's own: one flag per
/// rule, and with `dedupe` the kept row's text that [`super::dedupe`] adds.
pub fn added_columns(rules: &[Rule], dedupe: Option<&Dedupe>) -> usize {
    rules.len() + usize::from(dedupe.is_some())
}

/// The query that stages a model with rules: its rows, then one boolean
/// column per rule, true where the row breaks it. With `dedupe`, then
/// whether the row breaks an `error` rule (`__ferry_hard`) and each
/// `keep.order_by` item's value (`__ferry_order_<k>`), which
/// [`super::dedupe`] reads to choose the row kept for each key.
pub fn checked_sql(model_sql: &str, rules: &[Rule], dedupe: Option<&Dedupe>) -> String {
    let body = model_sql.trim_end().trim_end_matches(';');
    let mut flags: Vec<String> =
        rules.iter().enumerate().map(|(k, r)| format!("{} AS {}", r.broken, quote_ident(&flag_name(k)))).collect();
    flags.insert(0, "__ferry_model.*".to_owned());
    let joins: Vec<&str> = rules.iter().filter_map(|r| r.join.as_deref()).collect();
    let checked = format!("SELECT {}\nFROM (\n{body}\n) AS __ferry_model\n{}", flags.join(",\n  "), joins.join("\n"));
    let Some(d) = dedupe else { return checked };
    let hard: Vec<String> = rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.severity == Severity::Error)
        .map(|(k, _)| quote_ident(&flag_name(k)))
        .collect();
    let hard = if hard.is_empty() { "false".to_owned() } else { hard.join(" OR ") };
    let mut extra = vec![format!("({hard}) AS {HARD_COLUMN}")];
    extra.extend(d.order_by.iter().enumerate().map(|(k, o)| format!("({}) AS {}", o.expr, order_column(k))));
    format!("SELECT __ferry_r.*, {} FROM (\n{checked}\n) AS __ferry_r", extra.join(", "))
}

/// With `dedupe`, the column of [`checked_sql`] that says a row breaks an `error` rule.
pub const HARD_COLUMN: &str = "__ferry_hard";

/// With `dedupe`, the column of [`checked_sql`] holding `keep.order_by` item `k`.
pub fn order_column(k: usize) -> String {
    format!("__ferry_order_{k}")
}

/// The name of rule `k`'s flag column in [`checked_sql`].
pub fn flag_name(k: usize) -> String {
    format!("__ferry_rule_{k}")
}

fn quote_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A value as a quoted SQL literal.
fn literal(v: &Json) -> Result<String, String> {
    match v {
        Json::String(s) => Ok(quote_str(s)),
        Json::Number(n) => Ok(quote_str(&n.to_string())),
        Json::Bool(b) => Ok(quote_str(&b.to_string())),
        other => Err(format!("`{other}` is not a value")),
    }
}

/// A value as an unquoted SQL literal (`quote: false`): numbers and booleans.
fn plain(v: &Json) -> Result<String, String> {
    match v {
        Json::Number(n) => Ok(n.to_string()),
        Json::Bool(b) => Ok(b.to_string()),
        Json::String(s) if s.parse::<f64>().is_ok() => Ok(s.clone()),
        other => Err(format!("`{other}` must be a number with `quote: false`")),
    }
}

/// A `between` bound: a number as is, anything else as a string literal
/// (dates compare after DataFusion's coercion).
fn bound(v: &Json) -> Result<String, String> {
    match v {
        Json::Number(n) => Ok(n.to_string()),
        Json::String(s) if s.trim().parse::<f64>().is_ok() => Ok(s.trim().to_owned()),
        Json::String(s) => Ok(quote_str(s)),
        other => Err(format!("`{other}` is not a bound")),
    }
}
