//! dbt's node selection syntax: `m`, `+m`, `m+`, `2+m`, `m+1`, `@m`,
//! `tag:x`, `path:models/staging`, `config.materialized:view`, `source:s+`,
//! wildcards, union by space and intersection by comma.

use std::collections::BTreeSet;

use serde_json::{Map, Value as Json};

use super::graph::{Graph, Id};

/// What selection needs to know about a node.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub name: String,
    /// `model`, `seed`, `source`, `test`.
    pub resource_type: &'static str,
    /// `[project, folders.., name]` (for sources: `[project, source, table]`).
    pub fqn: Vec<String>,
    /// Path of the defining file, relative to the project root.
    pub path: String,
    pub tags: Vec<String>,
    pub config: Map<String, Json>,
    pub package: String,
    /// `(source, table)` for sources.
    pub source: Option<(String, String)>,
    /// `generic` or `singular` for tests, and the generic test's name.
    pub test: Option<(&'static str, String)>,
    /// For a version of a versioned model, the model's name (which
    /// selects every version, as in dbt).
    pub versioned: Option<String>,
}

/// A selector that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector `{selector}`: {reason}")]
pub struct SelectorError {
    pub selector: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Atom {
    /// The term as written, for messages.
    raw: String,
    method: Method,
    value: String,
    at: bool,
    parents: Option<Option<usize>>,
    children: Option<Option<usize>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Method {
    Fqn,
    Tag,
    Path,
    File,
    Config(String),
    Source,
    ResourceType,
    Package,
    TestType,
    TestName,
}

/// Parsed `--select`/`--exclude` expressions: a union of intersections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    union: Vec<Vec<Atom>>,
}

impl Selection {
    /// Parses selector arguments (each may hold several space-separated terms).
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Self, SelectorError> {
        let mut union = Vec::new();
        for arg in args {
            for term in arg.as_ref().split_whitespace() {
                let atoms = term.split(',').map(parse_atom).collect::<Result<Vec<_>, _>>()?;
                union.push(atoms);
            }
        }
        Ok(Selection { union })
    }

    pub fn is_empty(&self) -> bool {
        self.union.is_empty()
    }

    /// The nodes this selection picks.
    pub fn evaluate<N: Id>(&self, nodes: &[NodeFacts], graph: &Graph<N>) -> BTreeSet<N> {
        let mut out = BTreeSet::new();
        for intersection in &self.union {
            let mut sets = intersection.iter().map(|a| eval_atom(a, nodes, graph));
            let Some(mut acc) = sets.next() else { continue };
            for s in sets {
                acc = acc.intersection(&s).copied().collect();
            }
            out.extend(acc);
        }
        out
    }
}

/// A selector term that matches no node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmatched {
    /// The term as written.
    pub term: String,
    /// The node name the term spells out when it is a plain name (graph
    /// operators aside; no method or wildcard): a typo rather than, say, a
    /// tag that nothing carries yet.
    pub name: Option<String>,
}

impl Selection {
    /// The terms (each side of a comma counts alone) that match no node,
    /// in the order written.
    pub fn unmatched(&self, nodes: &[NodeFacts]) -> Vec<Unmatched> {
        let mut out: Vec<Unmatched> = Vec::new();
        for atom in self.union.iter().flatten() {
            if nodes.iter().any(|n| matches(atom, n)) || out.iter().any(|u| u.term == atom.raw) {
                continue;
            }
            let plain = atom.method == Method::Fqn && !atom.value.contains(['*', '?', '[']);
            out.push(Unmatched { term: atom.raw.clone(), name: plain.then(|| atom.value.clone()) });
        }
        out
    }
}

/// Applies `--select` and `--exclude`, then adds tests whose parents were
/// picked (dbt's eager indirect selection). An empty select picks everything.
pub fn select<N: Id>(nodes: &[NodeFacts], graph: &Graph<N>, include: &Selection, exclude: &Selection) -> BTreeSet<N> {
    let mut picked: BTreeSet<N> =
        if include.is_empty() { graph.ids().collect() } else { include.evaluate(nodes, graph) };
    let excluded = exclude.evaluate(nodes, graph);
    picked.retain(|n| !excluded.contains(n));
    let tests: Vec<N> = graph
        .ids()
        .filter(|&n| nodes[n.index()].resource_type == "test" && !picked.contains(&n) && !excluded.contains(&n))
        .filter(|&n| graph.parents(n).iter().any(|p| picked.contains(p)))
        .collect();
    picked.extend(tests);
    picked
}

fn parse_atom(raw: &str) -> Result<Atom, SelectorError> {
    let err = |reason: &str| SelectorError { selector: raw.to_owned(), reason: reason.to_owned() };
    let mut s = raw;
    let mut at = false;
    let mut parents = None;
    let mut children = None;
    if let Some(rest) = s.strip_prefix('@') {
        at = true;
        s = rest;
    } else if let Some(plus) = s.find('+').filter(|&i| s[..i].chars().all(|c| c.is_ascii_digit())) {
        let depth = &s[..plus];
        parents = Some(if depth.is_empty() { None } else { Some(depth.parse().map_err(|_| err("bad depth"))?) });
        s = &s[plus + 1..];
    }
    if let Some(plus) = s.rfind('+').filter(|&i| s[i + 1..].chars().all(|c| c.is_ascii_digit())) {
        let depth = &s[plus + 1..];
        children = Some(if depth.is_empty() { None } else { Some(depth.parse().map_err(|_| err("bad depth"))?) });
        s = &s[..plus];
    }
    if at && children.is_some() {
        return Err(err("`@` cannot be combined with a trailing `+`"));
    }
    if s.is_empty() {
        return Err(err("nothing to select"));
    }
    let (method, value) = match s.split_once(':') {
        Some((m, v)) => (parse_method(m).ok_or_else(|| err(&format!("unknown method `{m}`")))?, v),
        None if s.contains('/') || s.contains('\\') => (Method::Path, s),
        None if s.ends_with(".sql") || s.ends_with(".csv") || s.ends_with(".yml") => (Method::File, s),
        None => (Method::Fqn, s),
    };
    if value.is_empty() {
        return Err(err("the method has no value"));
    }
    Ok(Atom { raw: raw.to_owned(), method, value: value.to_owned(), at, parents, children })
}

fn parse_method(m: &str) -> Option<Method> {
    Some(match m {
        "fqn" => Method::Fqn,
        "tag" => Method::Tag,
        "path" => Method::Path,
        "file" => Method::File,
        "source" => Method::Source,
        "resource_type" => Method::ResourceType,
        "package" => Method::Package,
        "test_type" => Method::TestType,
        "test_name" => Method::TestName,
        other => Method::Config(other.strip_prefix("config.")?.to_owned()),
    })
}

/// Graph operators walk models, seeds and sources; tests are leaves that
/// indirect selection adds afterwards, never bridges (a relationships test
/// must not pull its other parent into `@m`).
fn eval_atom<N: Id>(atom: &Atom, nodes: &[NodeFacts], graph: &Graph<N>) -> BTreeSet<N> {
    let base: Vec<N> = graph.ids().filter(|&n| matches(atom, &nodes[n.index()])).collect();
    let mut out: BTreeSet<N> = base.iter().copied().collect();
    for &n in &base {
        if let Some(depth) = atom.parents {
            out.extend(graph.ancestors(n, depth));
        }
        if let Some(depth) = atom.children {
            out.extend(graph.descendants(n, depth));
        }
        if atom.at {
            for d in graph.descendants(n, None) {
                out.insert(d);
                if nodes[d.index()].resource_type != "test" {
                    out.extend(graph.ancestors(d, None));
                }
            }
        }
    }
    out
}

fn matches(atom: &Atom, node: &NodeFacts) -> bool {
    let v = atom.value.as_str();
    match &atom.method {
        Method::Fqn => fqn_matches(v, node),
        Method::Tag => node.tags.iter().any(|t| wildcard(v, t)),
        Method::Path => path_matches(v, &node.path),
        Method::File => node
            .path
            .rsplit('/')
            .next()
            .is_some_and(|f| wildcard(v, f) || wildcard(v, f.rsplit_once('.').map_or(f, |x| x.0))),
        Method::Config(key) => node.config.get(key).is_some_and(|c| config_matches(v, c)),
        Method::Source => node.source.as_ref().is_some_and(|(s, t)| {
            let parts: Vec<&str> = v.split('.').collect();
            match parts.as_slice() {
                [src] => wildcard(src, s),
                [src, tbl] => wildcard(src, s) && wildcard(tbl, t),
                [pkg, src, tbl] => wildcard(pkg, &node.package) && wildcard(src, s) && wildcard(tbl, t),
                _ => false,
            }
        }),
        Method::ResourceType => v == node.resource_type,
        Method::Package => wildcard(v, &node.package),
        Method::TestType => node.test.as_ref().is_some_and(|(kind, _)| {
            *kind == v || (v == "data" && *kind == "singular") || (v == "schema" && *kind == "generic")
        }),
        Method::TestName => node.test.as_ref().is_some_and(|(_, name)| wildcard(v, name)),
    }
}

/// dbt's qualified-name match: the leaf name, or a dotted prefix of the fqn
/// where `*` matches the rest; every part may use shell wildcards.
fn fqn_matches(selector: &str, node: &NodeFacts) -> bool {
    if node.resource_type == "source" {
        return false;
    }
    if wildcard(selector, &node.name) || node.versioned.as_ref().is_some_and(|m| wildcard(selector, m)) {
        return true;
    }
    let fqn: Vec<&str> = node.fqn.iter().flat_map(|p| p.split('.')).collect();
    let parts: Vec<&str> = selector.split('.').collect();
    if parts.len() > fqn.len() {
        return false;
    }
    for (i, part) in parts.iter().enumerate() {
        if *part == "*" {
            return true;
        }
        if !wildcard(part, fqn[i]) {
            return false;
        }
    }
    true
}

fn path_matches(selector: &str, path: &str) -> bool {
    let sel = selector.trim_start_matches("./").trim_end_matches('/');
    if sel.contains(['*', '?', '[']) {
        return wildcard(sel, path) || path.starts_with(&format!("{}/", sel.trim_end_matches("/*")));
    }
    path == sel || path.starts_with(&format!("{sel}/"))
}

fn config_matches(selector: &str, value: &Json) -> bool {
    match value {
        Json::String(s) => wildcard(selector, s),
        Json::Bool(b) => selector.eq_ignore_ascii_case(&b.to_string()),
        Json::Number(n) => selector == n.to_string(),
        Json::Array(items) => items.iter().any(|i| config_matches(selector, i)),
        Json::Object(obj) => obj.keys().any(|k| wildcard(selector, k)),
        Json::Null => false,
    }
}

/// Shell-style wildcard match (`*`, `?`, `[abc]`) on a whole string.
pub fn wildcard(pattern: &str, text: &str) -> bool {
    if !pattern.contains(['*', '?', '[']) {
        return pattern == text;
    }
    globset::GlobBuilder::new(pattern)
        .literal_separator(false)
        .build()
        .map(|g| g.compile_matcher().is_match(text))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, kind: &'static str, folder: &str, tags: &[&str], mat: &str) -> NodeFacts {
        let mut config = Map::new();
        config.insert("materialized".into(), Json::from(mat));
        let mut fqn = vec!["shop".to_owned()];
        fqn.extend(folder.split('/').filter(|s| !s.is_empty()).map(str::to_owned));
        fqn.push(name.to_owned());
        NodeFacts {
            name: name.into(),
            resource_type: kind,
            fqn,
            path: format!("models/{folder}/{name}.sql").replace("//", "/"),
            tags: tags.iter().map(|s| (*s).to_owned()).collect(),
            config,
            package: "shop".into(),
            source: None,
            test: None,
            versioned: None,
        }
    }

    /// raw(source 0) -> stg_orders(1) -> orders(2) -> report(3); stg_pay(4) -> orders; test(5) on orders.
    fn fixture() -> (Vec<NodeFacts>, Graph) {
        let mut src = node("orders", "source", "", &[], "");
        src.source = Some(("raw".into(), "orders".into()));
        src.fqn = vec!["shop".into(), "raw".into(), "orders".into()];
        let mut test = node("unique_orders_id", "test", "", &[], "test");
        test.test = Some(("generic", "unique".into()));
        let nodes = vec![
            src,
            node("stg_orders", "model", "staging", &["daily"], "view"),
            node("orders", "model", "marts", &[], "table"),
            node("report", "model", "marts", &["daily"], "table"),
            node("stg_payments", "model", "staging", &[], "view"),
            test,
        ];
        let mut g = Graph::new(nodes.len());
        for (p, c) in [(0, 1), (1, 2), (2, 3), (4, 2), (2, 5)] {
            g.add_edge(p, c);
        }
        (nodes, g)
    }

    fn pick(sel: &str) -> Vec<usize> {
        let (nodes, g) = fixture();
        Selection::parse(&[sel]).unwrap().evaluate(&nodes, &g).into_iter().collect()
    }

    #[test]
    fn unmatched_terms_say_whether_they_name_a_node() {
        let (nodes, _) = fixture();
        let sel = Selection::parse(&["ordres+ tag:nightly,orders stg_* nosuch_*"]).unwrap();
        let unmatched = sel.unmatched(&nodes);
        assert_eq!(
            unmatched,
            [
                Unmatched { term: "ordres+".into(), name: Some("ordres".into()) },
                Unmatched { term: "tag:nightly".into(), name: None },
                Unmatched { term: "nosuch_*".into(), name: None },
            ]
        );
        assert!(Selection::parse(&["orders shop.marts.report"]).unwrap().unmatched(&nodes).is_empty());
    }

    #[test]
    fn graph_operators() {
        assert_eq!(pick("orders"), vec![2]);
        assert_eq!(pick("+orders"), vec![0, 1, 2, 4]);
        assert_eq!(pick("1+orders"), vec![1, 2, 4]);
        assert_eq!(pick("orders+"), vec![2, 3, 5]);
        assert_eq!(pick("stg_orders+1"), vec![1, 2]);
        assert_eq!(pick("@stg_orders"), vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn methods_wildcards_union_and_intersection() {
        assert_eq!(pick("tag:daily"), vec![1, 3]);
        assert_eq!(pick("path:models/staging"), vec![1, 4]);
        assert_eq!(pick("models/marts"), vec![2, 3]);
        assert_eq!(pick("config.materialized:view"), vec![1, 4]);
        assert_eq!(pick("source:raw+"), vec![0, 1, 2, 3, 5]);
        assert_eq!(pick("stg_*"), vec![1, 4]);
        assert_eq!(pick("shop.marts.*"), vec![2, 3]);
        assert_eq!(pick("stg_orders report"), vec![1, 3]);
        assert_eq!(pick("tag:daily,config.materialized:table"), vec![3]);
        assert_eq!(pick("resource_type:test"), vec![5]);
        assert_eq!(pick("test_name:unique"), vec![5]);
    }

    #[test]
    fn exclude_and_indirect_tests() {
        let (nodes, g) = fixture();
        let inc = Selection::parse(&["orders"]).unwrap();
        let exc = Selection::parse::<&str>(&[]).unwrap();
        assert_eq!(select(&nodes, &g, &inc, &exc).into_iter().collect::<Vec<_>>(), vec![2, 5]);
        let exc = Selection::parse(&["tag:daily"]).unwrap();
        let all = Selection::default();
        assert_eq!(select(&nodes, &g, &all, &exc).into_iter().collect::<Vec<_>>(), vec![0, 2, 4, 5]);
    }

    #[test]
    fn bad_selectors_are_errors() {
        assert!(Selection::parse(&["colour:red"]).is_err());
        assert!(Selection::parse(&["@m+"]).is_err());
        assert!(Selection::parse(&["tag:"]).is_err());
    }
}
