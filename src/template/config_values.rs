//! Jinja in config values written in the project and schema files
//! (`+enabled: "{{ var('use_orders', true) }}"`,
//! `+schema: "{{ env_var('RAW_SCHEMA') }}"`), rendered as dbt renders
//! `dbt_project.yml`: with `var`, `env_var` and `target`, before any model
//! is rendered, and read back as a YAML scalar, so `{{ false }}` is the
//! boolean false. Hooks are left as written: they render when they run.

use std::sync::Arc;

use minijinja::{AutoEscape, Environment};
use serde_json::{Map, Value as Json};

use super::{Globals, functions};

/// Keys whose Jinja renders later, when the node runs.
const DEFERRED: [&str; 4] = ["pre-hook", "post-hook", "pre_hook", "post_hook"];

/// Renders the Jinja in config values.
pub struct ConfigValues {
    env: Environment<'static>,
}

impl ConfigValues {
    pub fn new(globals: &Globals) -> Self {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.add_function("var", functions::var_fn(Arc::new(globals.vars.clone())));
        env.add_function("env_var", functions::env_var);
        env.add_global("target", functions::to_value(&globals.target));
        env.add_global("project_name", globals.project_name.clone());
        ConfigValues { env }
    }

    /// Renders every string value of `config` that holds Jinja; an error
    /// names the key.
    pub fn render(&self, config: &mut Map<String, Json>) -> Result<(), String> {
        for (key, value) in config.iter_mut() {
            if !DEFERRED.contains(&key.as_str()) {
                self.value(value).map_err(|e| format!("config `{key}`: {e}"))?;
            }
        }
        Ok(())
    }

    /// Renders a name written with Jinja (a source's `schema:`).
    pub fn render_text(&self, text: &mut String) -> Result<(), String> {
        if text.contains("{{") || text.contains("{%") {
            *text = self.env.render_str(text, ()).map_err(|e| message(&e))?.trim().to_owned();
        }
        Ok(())
    }

    fn value(&self, value: &mut Json) -> Result<(), String> {
        match value {
            Json::String(s) if s.contains("{{") || s.contains("{%") => {
                let text = self.env.render_str(s, ()).map_err(|e| message(&e))?;
                *value = scalar(&text);
            }
            Json::Array(items) => items.iter_mut().try_for_each(|v| self.value(v))?,
            Json::Object(map) => map.values_mut().try_for_each(|v| self.value(v))?,
            _ => {}
        }
        Ok(())
    }
}

fn message(e: &minijinja::Error) -> String {
    match functions::failure_of(e) {
        Some(functions::TemplateFailure::CompilerError(m)) => m.clone(),
        _ => super::jinja_message(e),
    }
}

/// A rendered value as dbt's native rendering reads it: Python's and YAML's
/// booleans, `None`, and numbers are values; anything else stays text.
fn scalar(text: &str) -> Json {
    let t = text.trim();
    match t {
        "True" | "true" => Json::Bool(true),
        "False" | "false" => Json::Bool(false),
        "None" | "none" | "null" => Json::Null,
        _ => t
            .parse::<i64>()
            .map(Json::from)
            .ok()
            .or_else(|| t.parse::<f64>().ok().filter(|f| f.is_finite()).map(Json::from))
            .unwrap_or_else(|| Json::String(text.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globals(vars: Json) -> Globals {
        Globals {
            project_name: "shop".into(),
            vars: vars.as_object().cloned().unwrap_or_default(),
            target: serde_json::json!({"name": "dev", "schema": "main"}),
            invocation_id: String::new(),
            run_started_at: chrono::Utc::now(),
            which: "run".into(),
            full_refresh: false,
            event_time: Default::default(),
            docs: Default::default(),
        }
    }

    #[test]
    fn jinja_in_config_values_renders_to_yaml_scalars() {
        let r = ConfigValues::new(&globals(serde_json::json!({"use_orders": false})));
        let mut c = serde_json::json!({
            "enabled": "{{ var('use_orders', true) }}",
            "schema": "{{ target.schema }}_raw",
            "threads": "{{ 2 + 2 }}",
            "tags": ["{{ target.name }}", "nightly"],
            "post-hook": "grant select on {{ this }} to reporter",
        });
        r.render(c.as_object_mut().unwrap()).unwrap();
        assert_eq!(c["enabled"], false);
        assert_eq!(c["schema"], "main_raw");
        assert_eq!(c["threads"], 4);
        assert_eq!(c["tags"], serde_json::json!(["dev", "nightly"]));
        assert_eq!(c["post-hook"], "grant select on {{ this }} to reporter");
    }

    #[test]
    fn an_unknown_var_names_the_key() {
        let r = ConfigValues::new(&globals(serde_json::json!({})));
        let mut c = serde_json::json!({"enabled": "{{ var('nope') }}"});
        let e = r.render(c.as_object_mut().unwrap()).unwrap_err();
        assert!(e.starts_with("config `enabled`:"), "{e}");
    }
}
