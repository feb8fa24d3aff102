//! Row-level rules as SQL. Each declared rule (see `manifest::rules`)
//! becomes one expression that is true exactly when a row breaks it, so
//! all rules of a model are evaluated in the single query that stages it
//! ([`checked_sql`]); a row that breaks an `error` rule is quarantined
//! instead of staged, a `warn` rule stages the row and logs it.

use crate::manifest::config::{Dedupe, Severity};
use crate::manifest::rules::{Literal, Rule, RuleKind};
use crate::template::functions::quote_ident;

/// A rule ready to check: its SQL and what a broken row is told.
#[derive(Debug, Clone)]
pub struct RuleCheck {
    pub rule: Rule,
    /// SQL, true exactly when a row breaks the rule (never NULL).
    pub broken: String,
    /// What a broken row is told: "`status` is not one of active, closed".
    pub message: String,
    /// A join the rule needs (relationships), added to the checking query.
    pub join: Option<String>,
}

/// The checks of a model's rules, in order.
pub fn checks(rules: &[Rule]) -> Vec<RuleCheck> {
    rules.iter().enumerate().map(|(k, r)| check(k, r)).collect()
}

/// Rule `k` of a model as SQL.
pub fn check(k: usize, rule: &Rule) -> RuleCheck {
    let c = rule.column.as_deref().map(quote_ident).unwrap_or_default();
    let shown = rule.column.clone().unwrap_or_else(|| "row".to_owned());
    let (broken, message, join) = match &rule.kind {
        RuleKind::NotNull => (format!("{c} IS NULL"), format!("`{shown}` is null"), None),
        RuleKind::NotBlank => {
            (format!("{c} IS NULL OR trim(CAST({c} AS VARCHAR)) = ''"), format!("`{shown}` is blank"), None)
        }
        RuleKind::AcceptedValues { values, shown: names } => {
            let listed: Vec<String> = values.iter().map(literal).collect();
            (
                format!("{c} IS NOT NULL AND {c} NOT IN ({})", listed.join(", ")),
                format!("`{shown}` is not one of {}", names.join(", ")),
                None,
            )
        }
        RuleKind::Between { min, max, inclusive, shown: (lo, hi) } => {
            let (lt, gt) = if *inclusive { ("<", ">") } else { ("<=", ">=") };
            let parts: Vec<String> = [min.as_ref().map(|v| (lt, v)), max.as_ref().map(|v| (gt, v))]
                .into_iter()
                .flatten()
                .map(|(op, v)| format!("{c} {op} {}", literal(v)))
                .collect();
            let (open, close) = if *inclusive { ('[', ']') } else { ('(', ')') };
            (parts.join(" OR "), format!("`{shown}` is outside {open}{lo}, {hi}{close}"), None)
        }
        RuleKind::Matches { pattern, what } => (
            format!("{c} IS NOT NULL AND NOT regexp_like(CAST({c} AS VARCHAR), {})", quote_str(pattern)),
            format!("`{shown}` does not match {what}"),
            None,
        ),
        RuleKind::Length { min, max } => length(&c, &shown, *min, *max),
        RuleKind::ParsesAs { type_name, format, .. } => {
            let with = if format.is_empty() { String::new() } else { format!(" in the format `{format}`") };
            (
                format!(
                    "{c} IS NOT NULL AND trim(CAST({c} AS VARCHAR)) <> '' AND NOT ferry_parses({c}, {}, {})",
                    quote_str(type_name),
                    quote_str(format)
                ),
                format!("`{shown}` does not parse as a {type_name}{with}"),
                None,
            )
        }
        RuleKind::NotInFuture => (format!("{c} > now()"), format!("`{shown}` is in the future"), None),
        RuleKind::Expression(e) => (format!("NOT ({e})"), format!("`{e}` does not hold"), None),
        RuleKind::Unique { columns } => {
            let cols: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
            let present: Vec<String> = cols.iter().map(|c| format!("{c} IS NOT NULL")).collect();
            let names: Vec<&str> = cols.iter().map(|c| c.trim_matches('"')).collect();
            (
                format!("{} AND count(*) OVER (PARTITION BY {}) > 1", present.join(" AND "), cols.join(", ")),
                format!("`{}` is not unique", names.join(", ")),
                None,
            )
        }
        RuleKind::Relationships { to, parent, field } => {
            let alias = quote_ident(&format!("__ferry_parent_{k}"));
            let join = format!(
                "LEFT JOIN (SELECT DISTINCT {} AS k FROM {parent}) AS {alias} ON {c} = {alias}.k",
                quote_ident(field)
            );
            (
                format!("{c} IS NOT NULL AND {alias}.k IS NULL"),
                format!("`{shown}` has no match in {to}.{field}"),
                Some(join),
            )
        }
        RuleKind::Custom { name, valid } => {
            (format!("NOT ({})", valid.trim()), format!("`{shown}` breaks `{name}`"), None)
        }
        RuleKind::Conversion { site_column, function } => (
            format!("{} IS NOT NULL", quote_ident(site_column)),
            format!("`{shown}` does not convert: {function}"),
            None,
        ),
    };
    RuleCheck {
        rule: rule.clone(),
        // A rule whose condition is NULL (a NULL compared) is not broken.
        broken: format!("coalesce(({broken}), false)"),
        message: rule.message.clone().unwrap_or(message),
        join,
    }
}

fn length(c: &str, shown: &str, min: Option<u64>, max: Option<u64>) -> (String, String, Option<String>) {
    let len = format!("character_length(CAST({c} AS VARCHAR))");
    let mut parts = Vec::new();
    if let Some(v) = min {
        parts.push(format!("{len} < {v}"));
    }
    if let Some(v) = max {
        parts.push(format!("{len} > {v}"));
    }
    let message = match (min, max) {
        (Some(lo), Some(hi)) => format!("`{shown}` is not {lo} to {hi} characters long"),
        (Some(lo), None) => format!("`{shown}` is shorter than {lo} characters"),
        (None, Some(hi)) => format!("`{shown}` is longer than {hi} characters"),
        (None, None) => unreachable!("the manifest refuses a `length` rule with neither bound"),
    };
    (parts.join(" OR "), message, None)
}

/// How many columns the splitter sees after the model's own: one site per
/// conversion (see [`super::conversions`]), one flag per rule, and with
/// `dedupe` the kept row's text that [`super::dedupe`] adds.
pub fn added_columns(checks: &[RuleCheck], dedupe: Option<&Dedupe>) -> usize {
    sites(checks) + checks.len() + usize::from(dedupe.is_some())
}

/// How many of `checks` are conversions, each with its site column.
pub fn sites(checks: &[RuleCheck]) -> usize {
    checks.iter().filter(|c| matches!(c.rule.kind, RuleKind::Conversion { .. })).count()
}

/// The query that stages a model with rules: its rows, then one boolean
/// column per rule, true where the row breaks it. With `dedupe`, then
/// whether the row breaks an `error` rule (`__ferry_hard`) and each
/// `keep.order_by` item's value (`__ferry_order_<k>`), which
/// [`super::dedupe`] reads to choose the row kept for each key.
pub fn checked_sql(model_sql: &str, checks: &[RuleCheck], dedupe: Option<&Dedupe>) -> String {
    let body = model_sql.trim_end().trim_end_matches(';');
    let mut flags: Vec<String> =
        checks.iter().enumerate().map(|(k, r)| format!("{} AS {}", r.broken, quote_ident(&flag_name(k)))).collect();
    flags.insert(0, "__ferry_model.*".to_owned());
    let joins: Vec<&str> = checks.iter().filter_map(|r| r.join.as_deref()).collect();
    let checked = format!("SELECT {}\nFROM (\n{body}\n) AS __ferry_model\n{}", flags.join(",\n  "), joins.join("\n"));
    let Some(d) = dedupe else { return checked };
    let hard: Vec<String> = checks
        .iter()
        .enumerate()
        .filter(|(_, r)| r.rule.severity == Severity::Error)
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

fn literal(v: &Literal) -> String {
    match v {
        Literal::Quoted(s) => quote_str(s),
        Literal::Plain(s) => s.clone(),
    }
}
