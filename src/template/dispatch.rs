//! Macro namespaces and `adapter.dispatch`, as dbt resolves them.
//!
//! Every macro belongs to a namespace: the root project's name, an installed
//! package's name, or `dbt` for ferry's built-in macros (dbt's cross-database
//! macros and generic tests). `dbt_utils.star(...)` reaches a macro through
//! its namespace object. `adapter.dispatch(name, namespace)` searches the
//! namespaces that the project's `dispatch:` config orders (else the root
//! project, then the namespace), and within each the prefixes
//! [`PREFIXES`]: ferry's own variants, then PostgreSQL's (DataFusion's SQL is
//! closest to PostgreSQL's dialect), then the defaults.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use minijinja::value::{Enumerator, Object, ObjectRepr, Value};

/// The adapter prefixes that dispatch tries, in order.
pub const PREFIXES: [&str; 3] = ["ferry", "postgres", "default"];

/// The namespace of ferry's built-in macros, as dbt names its own.
pub const BUILTIN: &str = "dbt";

/// One namespace's macros by name, as callable values.
pub type Macros = BTreeMap<String, Value>;

/// A namespace as templates see it: `dbt_utils.star` is its macro `star`.
#[derive(Debug)]
pub struct Namespace {
    pub name: String,
    pub macros: Arc<Macros>,
}

impl Object for Namespace {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.macros.get(key.as_str()?).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.macros.keys().map(|k| Value::from(k.as_str())).collect())
    }
}

/// Everything `adapter.dispatch` needs to find a macro.
#[derive(Debug, Default)]
pub struct Dispatch {
    /// The root project's name.
    pub root: String,
    /// The project's `dispatch:` entries: namespace -> search order.
    pub search_orders: HashMap<String, Vec<String>>,
    pub namespaces: BTreeMap<String, Arc<Macros>>,
}

impl Dispatch {
    /// The namespaces searched for a dispatch in `namespace`, as dbt orders
    /// them: the configured search order, else the root project then the
    /// namespace; with no namespace, the root project then the built-ins.
    fn search_order(&self, namespace: Option<&str>) -> Vec<String> {
        match namespace {
            None => vec![self.root.clone(), BUILTIN.to_owned()],
            Some(ns) => match self.search_orders.get(ns) {
                Some(order) => order.clone(),
                None if self.namespaces.contains_key(ns) && ns != self.root => vec![self.root.clone(), ns.to_owned()],
                None => vec![ns.to_owned()],
            },
        }
    }

    /// The macro that `adapter.dispatch(name, namespace)` calls, or dbt's
    /// message listing every name searched.
    pub fn find(&self, name: &str, namespace: Option<&str>) -> Result<Value, String> {
        if let Some((ns, bare)) = name.split_once('.') {
            return Err(format!(
                "dispatch takes a macro name and its namespace apart: write `adapter.dispatch('{bare}', '{ns}')`"
            ));
        }
        let mut searched = Vec::new();
        for ns in self.search_order(namespace) {
            for prefix in PREFIXES {
                let candidate = format!("{prefix}__{name}");
                if let Some(found) = self.namespaces.get(&ns).and_then(|m| m.get(&candidate)) {
                    return Ok(found.clone());
                }
                searched.push(format!("'{ns}.{candidate}'"));
            }
        }
        Err(format!(
            "in dispatch: no macro named '{name}' found within namespace '{}'; searched for {}",
            namespace.unwrap_or(&self.root),
            searched.join(", ")
        ))
    }
}

/// A list that `{% do items.append(x) %}` may change, as dbt's Jinja lists
/// can. `{% set x = [...] %}` makes one (see [`super::rewrite_set_literals`]).
#[derive(Debug, Default)]
pub struct MutableList(std::sync::Mutex<Vec<Value>>);

/// A dict that `{% do d.update(...) %}` may change.
#[derive(Debug, Default)]
pub struct MutableMap(std::sync::Mutex<Vec<(Value, Value)>>);

fn locked<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `__ferry_mutable(value)`: a list or dict literal, made changeable.
pub fn mutable(value: Value) -> Result<Value, minijinja::Error> {
    match value.kind() {
        minijinja::value::ValueKind::Seq => {
            Ok(Value::from_object(MutableList(std::sync::Mutex::new(value.try_iter()?.collect()))))
        }
        minijinja::value::ValueKind::Map => {
            let mut map = Vec::new();
            for key in value.try_iter()? {
                let v = value.get_item(&key)?;
                map.push((key, v));
            }
            Ok(Value::from_object(MutableMap(std::sync::Mutex::new(map))))
        }
        _ => Ok(value),
    }
}

/// `__ferry_mutable_list(value)`: a list that `{% set a = b %}` names and
/// the template then changes (`a.append(x)`), made changeable; one that
/// already is keeps its identity, as Python's lists do. Anything else is
/// left as it is.
pub fn mutable_list(value: Value) -> Result<Value, minijinja::Error> {
    use minijinja::value::ValueKind;
    if matches!(value.kind(), ValueKind::Seq | ValueKind::Iterable)
        && value.downcast_object_ref::<MutableList>().is_none()
    {
        return Ok(Value::from_object(MutableList(std::sync::Mutex::new(value.try_iter()?.collect()))));
    }
    Ok(value)
}

/// A plain list or dict stored into a changeable one is changeable too, as
/// every list and dict is in Python (`d.update({k: []})` then
/// `d[k].append(x)`); one that already is keeps its identity.
fn owned(value: Value) -> Result<Value, minijinja::Error> {
    // Only plain lists and dicts (minijinja's own: a map is an IndexMap with
    // `preserve_order`); objects such as a Column or a Relation stay as they are.
    let plain = value.downcast_object_ref::<Vec<Value>>().is_some()
        || value.downcast_object_ref::<indexmap::IndexMap<Value, Value>>().is_some();
    if plain { mutable(value) } else { Ok(value) }
}

fn index(len: usize, at: i64) -> Option<usize> {
    let i = if at < 0 { len as i64 + at } else { at };
    usize::try_from(i).ok().filter(|i| *i < len)
}

impl Object for MutableList {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let items = locked(&self.0);
        let at = index(items.len(), key.as_i64()?)?;
        items.get(at).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(locked(&self.0).clone())
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut minijinja::State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, minijinja::Error> {
        use minijinja::value::from_args;
        let mut items = locked(&self.0);
        match method {
            "append" => {
                let (v,): (Value,) = from_args(args)?;
                items.push(owned(v)?);
            }
            "extend" => {
                let (v,): (Value,) = from_args(args)?;
                items.extend(v.try_iter()?);
            }
            "insert" => {
                let (at, v): (i64, Value) = from_args(args)?;
                let len = items.len() as i64;
                let at = if at < 0 { (len + at).max(0) } else { at.min(len) };
                items.insert(at as usize, owned(v)?);
            }
            "pop" => {
                let (at,): (Option<i64>,) = from_args(args)?;
                let len = items.len();
                let Some(at) = index(len, at.unwrap_or(-1)) else {
                    return Err(minijinja::Error::new(
                        minijinja::ErrorKind::InvalidOperation,
                        "pop from an empty list or past its end",
                    ));
                };
                return Ok(items.remove(at));
            }
            "remove" => {
                let (v,): (Value,) = from_args(args)?;
                let Some(at) = items.iter().position(|x| *x == v) else {
                    return Err(minijinja::Error::new(
                        minijinja::ErrorKind::InvalidOperation,
                        format!("list.remove({v}): the value is not in the list"),
                    ));
                };
                items.remove(at);
            }
            _ => return Err(minijinja::Error::from(minijinja::ErrorKind::UnknownMethod)),
        }
        Ok(Value::from(()))
    }
}

impl Object for MutableMap {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        locked(&self.0).iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(locked(&self.0).iter().map(|(k, _)| k.clone()).collect())
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut minijinja::State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, minijinja::Error> {
        use minijinja::value::{Kwargs, from_args};
        let mut map = locked(&self.0);
        match method {
            "update" => {
                let (other, kwargs): (Option<Value>, Kwargs) = from_args(args)?;
                if let Some(other) = other {
                    for key in other.try_iter()? {
                        let v = other.get_item(&key)?;
                        set(&mut map, key, owned(v)?);
                    }
                }
                for key in kwargs.args() {
                    let v: Value = kwargs.get(key)?;
                    set(&mut map, Value::from(key), owned(v)?);
                }
                Ok(Value::from(()))
            }
            "pop" => {
                let (key, default): (Value, Option<Value>) = from_args(args)?;
                let found = map.iter().position(|(k, _)| *k == key).map(|at| map.remove(at).1);
                match (found, default) {
                    (Some(v), _) | (None, Some(v)) => Ok(v),
                    (None, None) => Err(minijinja::Error::new(
                        minijinja::ErrorKind::InvalidOperation,
                        format!("dict.pop({key}): no such key"),
                    )),
                }
            }
            "setdefault" => {
                let (key, default): (Value, Option<Value>) = from_args(args)?;
                if let Some((_, v)) = map.iter().find(|(k, _)| *k == key) {
                    return Ok(v.clone());
                }
                let v = owned(default.unwrap_or_default())?;
                map.push((key, v.clone()));
                Ok(v)
            }
            _ => Err(minijinja::Error::from(minijinja::ErrorKind::UnknownMethod)),
        }
    }
}

fn set(map: &mut Vec<(Value, Value)>, key: Value, value: Value) {
    match map.iter_mut().find(|(k, _)| *k == key) {
        Some((_, v)) => *v = value,
        None => map.push((key, value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dispatch(macros: &[(&str, &[&str])], orders: &[(&str, &[&str])]) -> Dispatch {
        let namespaces = macros
            .iter()
            .map(|(ns, names)| {
                let m: Macros = names.iter().map(|n| ((*n).to_owned(), Value::from(format!("{ns}.{n}")))).collect();
                ((*ns).to_owned(), Arc::new(m))
            })
            .collect();
        let search_orders =
            orders.iter().map(|(ns, o)| ((*ns).to_owned(), o.iter().map(|s| (*s).to_owned()).collect())).collect();
        Dispatch { root: "shop".into(), search_orders, namespaces }
    }

    #[test]
    fn dispatch_prefers_the_root_project_then_ferry_postgres_and_default() {
        let d = dispatch(
            &[
                ("shop", &["default__star"]),
                ("dbt_utils", &["default__star", "postgres__star", "default__pivot", "ferry__pivot"]),
            ],
            &[],
        );
        assert_eq!(d.find("star", Some("dbt_utils")).unwrap().as_str(), Some("shop.default__star"));
        assert_eq!(d.find("pivot", Some("dbt_utils")).unwrap().as_str(), Some("dbt_utils.ferry__pivot"));
        let err = d.find("nope", Some("dbt_utils")).unwrap_err();
        assert!(err.contains("'shop.ferry__nope'") && err.contains("'dbt_utils.default__nope'"), "{err}");
        assert!(d.find("dbt_utils.star", None).unwrap_err().contains("adapter.dispatch('star', 'dbt_utils')"));
    }

    #[test]
    fn a_configured_search_order_is_followed_exactly() {
        let d = dispatch(
            &[("shop", &["default__star"]), ("dbt_utils", &["postgres__star"]), ("spark_utils", &["default__star"])],
            &[("dbt_utils", &["spark_utils", "dbt_utils"])],
        );
        assert_eq!(d.find("star", Some("dbt_utils")).unwrap().as_str(), Some("spark_utils.default__star"));
    }
}
