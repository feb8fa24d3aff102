//! dbt's `modules`: the Python modules dbt hands to templates, as far as
//! packages use them. `modules.re` (`sub`, `search`, `match`, `fullmatch`,
//! `findall`, `split`, `escape`, `compile`) runs on the `regex` crate, whose
//! syntax is Python's for everything but look-around and backreferences in
//! patterns; `modules.datetime` gives `datetime.now()` / `utcnow()` (UTC, as
//! every time ferry shows), `datetime.strptime` and `date.today()`.

use std::sync::Arc;

use minijinja::value::{Kwargs, Object, Value, from_args};
use minijinja::{Error, ErrorKind, State};

use super::functions::Timestamp;

/// `modules`.
#[derive(Debug)]
pub struct Modules;

impl Object for Modules {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "re" => Some(Value::from_object(Re)),
            "datetime" => Some(Value::from_object(DatetimeModule)),
            _ => None,
        }
    }
}

/// `modules.re`.
#[derive(Debug)]
struct Re;

/// A compiled pattern (`modules.re.compile(p)`).
#[derive(Debug)]
struct Pattern(regex::Regex);

/// The result of `search` / `match`.
#[derive(Debug)]
struct Match {
    groups: Vec<Option<String>>,
    span: (usize, usize),
}

fn compile(pattern: &str) -> Result<regex::Regex, Error> {
    regex::Regex::new(pattern).map_err(|e| {
        Error::new(ErrorKind::InvalidOperation, format!("modules.re: pattern `{pattern}` does not compile: {e}"))
    })
}

/// Python's replacement text (`\1`, `\g<name>`) in the `regex` crate's
/// syntax (`${1}`, `${name}`), with a literal `$` kept literal.
fn replacement(repl: &str) -> String {
    let mut out = String::with_capacity(repl.len());
    let mut chars = repl.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    let mut n = String::new();
                    while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                        n.push(d);
                        chars.next();
                    }
                    out.push_str(&format!("${{{n}}}"));
                }
                Some('g') => {
                    chars.next();
                    let name: String = chars.by_ref().skip_while(|c| *c == '<').take_while(|c| *c != '>').collect();
                    out.push_str(&format!("${{{name}}}"));
                }
                Some('n') => {
                    chars.next();
                    out.push('\n');
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

fn found(re: &regex::Regex, text: &str, anchored: Anchor) -> Value {
    let Some(caps) = re.captures(text) else { return Value::from(()) };
    let whole = caps.get(0).map_or((0, 0), |m| (m.start(), m.end()));
    let fits = match anchored {
        Anchor::None => true,
        Anchor::Start => whole.0 == 0,
        Anchor::Full => whole == (0, text.len()),
    };
    if !fits {
        return Value::from(());
    }
    let groups = caps.iter().map(|g| g.map(|m| m.as_str().to_owned())).collect();
    Value::from_object(Match { groups, span: whole })
}

#[derive(Clone, Copy)]
enum Anchor {
    None,
    Start,
    Full,
}

/// One `re` function on a compiled pattern; `args` are what follows the
/// pattern in Python's signature.
fn apply(re: &regex::Regex, method: &str, args: &[Value]) -> Result<Value, Error> {
    match method {
        "sub" => {
            let (repl, text, count, kwargs): (String, String, Option<usize>, Kwargs) = from_args(args)?;
            let count = match count {
                Some(c) => c,
                None => kwargs.get::<Option<usize>>("count")?.unwrap_or(0),
            };
            kwargs.assert_all_used()?;
            Ok(Value::from(re.replacen(&text, count, replacement(&repl).as_str()).into_owned()))
        }
        "search" | "match" | "fullmatch" => {
            let (text,): (String,) = from_args(args)?;
            let anchor = match method {
                "search" => Anchor::None,
                "match" => Anchor::Start,
                _ => Anchor::Full,
            };
            // `match` must start at 0: try the pattern anchored there.
            let anchored;
            let re = match anchor {
                Anchor::None => re,
                _ => {
                    anchored = compile(&format!("^(?:{})", re.as_str()))?;
                    &anchored
                }
            };
            Ok(found(re, &text, anchor))
        }
        "findall" => {
            let (text,): (String,) = from_args(args)?;
            let groups = re.captures_len() - 1;
            let items: Vec<Value> = re
                .captures_iter(&text)
                .map(|c| match groups {
                    0 => Value::from(c.get(0).map_or("", |m| m.as_str())),
                    1 => Value::from(c.get(1).map_or("", |m| m.as_str())),
                    _ => Value::from(
                        (1..=groups).map(|i| Value::from(c.get(i).map_or("", |m| m.as_str()))).collect::<Vec<_>>(),
                    ),
                })
                .collect();
            Ok(Value::from(items))
        }
        "split" => {
            let (text,): (String,) = from_args(args)?;
            Ok(Value::from(re.split(&text).map(Value::from).collect::<Vec<_>>()))
        }
        _ => Err(Error::from(ErrorKind::UnknownMethod)),
    }
}

impl Object for Re {
    fn call_method(self: &Arc<Self>, _: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        match method {
            "escape" => {
                let (text,): (String,) = from_args(args)?;
                Ok(Value::from(regex::escape(&text)))
            }
            "compile" => {
                let (pattern,): (String,) = from_args(args)?;
                Ok(Value::from_object(Pattern(compile(&pattern)?)))
            }
            _ => {
                let Some((pattern, rest)) = args.split_first() else {
                    return Err(Error::new(ErrorKind::MissingArgument, format!("modules.re.{method} takes a pattern")));
                };
                let pattern = match pattern.downcast_object_ref::<Pattern>() {
                    Some(p) => p.0.clone(),
                    None => compile(pattern.as_str().unwrap_or_default())?,
                };
                apply(&pattern, method, rest)
            }
        }
    }
}

impl Object for Pattern {
    fn call_method(self: &Arc<Self>, _: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        apply(&self.0, method, args)
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        (key.as_str()? == "pattern").then(|| Value::from(self.0.as_str()))
    }
}

impl Object for Match {
    fn call_method(self: &Arc<Self>, _: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        let group = |i: usize| self.groups.get(i).cloned().flatten().map_or(Value::from(()), Value::from);
        match method {
            "group" => {
                let (i,): (Option<usize>,) = from_args(args)?;
                Ok(group(i.unwrap_or(0)))
            }
            "groups" => Ok(Value::from((1..self.groups.len()).map(group).collect::<Vec<_>>())),
            "start" => Ok(Value::from(self.span.0)),
            "end" => Ok(Value::from(self.span.1)),
            "span" => Ok(Value::from(vec![self.span.0, self.span.1])),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// `modules.datetime`.
#[derive(Debug)]
struct DatetimeModule;

/// `modules.datetime.datetime` and `modules.datetime.date`.
#[derive(Debug)]
struct DatetimeClass {
    date: bool,
}

impl Object for DatetimeModule {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "datetime" => Some(Value::from_object(DatetimeClass { date: false })),
            "date" => Some(Value::from_object(DatetimeClass { date: true })),
            _ => None,
        }
    }
}

impl Object for DatetimeClass {
    fn call_method(self: &Arc<Self>, _: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        let now = chrono::Utc::now();
        let at = match (method, self.date) {
            ("now" | "utcnow", false) | ("today", _) => now,
            ("strptime", false) => {
                let (text, fmt): (String, String) = from_args(args)?;
                let parsed = chrono::NaiveDateTime::parse_from_str(&text, &fmt)
                    .or_else(|_| {
                        chrono::NaiveDate::parse_from_str(&text, &fmt).map(|d| d.and_time(chrono::NaiveTime::MIN))
                    })
                    .map_err(|e| {
                        Error::new(
                            ErrorKind::InvalidOperation,
                            format!("datetime.strptime: `{text}` does not match `{fmt}`: {e}"),
                        )
                    })?;
                parsed.and_utc()
            }
            _ => return Err(Error::from(ErrorKind::UnknownMethod)),
        };
        Ok(Value::from_object(Timestamp(at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str) -> String {
        let mut env = minijinja::Environment::new();
        env.add_global("modules", Value::from_object(Modules));
        env.render_str(src, ()).unwrap()
    }

    #[test]
    fn re_behaves_as_pythons_for_what_packages_call() {
        assert_eq!(render("{{ modules.re.sub('[ -]+', '_', 'a b-c') }}"), "a_b_c");
        assert_eq!(render("{{ modules.re.sub('(a)(b)', '\\\\2\\\\1$', 'xaby') }}"), "xba$y");
        assert_eq!(render("{{ modules.re.sub('a', 'b', 'aaa', 2) }}"), "bba");
        assert_eq!(render("{{ modules.re.search('b+', 'abbc').group() }}"), "bb");
        assert_eq!(render("{{ modules.re.match('b', 'abc') is none }}"), "True");
        assert_eq!(render("{{ modules.re.fullmatch('a.c', 'abc').span() }}"), "[0, 3]");
        assert_eq!(render("{{ modules.re.findall('(\\\\w)=(\\\\d)', 'a=1 b=2') }}"), "[['a', '1'], ['b', '2']]");
        assert_eq!(render("{{ modules.re.compile('\\\\s*,\\\\s*').split('a , b,c') }}"), "['a', 'b', 'c']");
        assert_eq!(render("{{ modules.re.escape('a.b') }}"), "a\\.b");
    }

    #[test]
    fn datetime_gives_now_and_parses() {
        let year = render("{{ modules.datetime.datetime.now().strftime('%Y') }}");
        assert_eq!(year.len(), 4);
        assert_eq!(
            render("{{ modules.datetime.datetime.strptime('2024-02-29', '%Y-%m-%d').strftime('%d/%m/%Y') }}"),
            "29/02/2024"
        );
    }
}
