//! Targets from dbt-format `profiles.yml` files: where data is loaded, and
//! the connections database sources name. What each database's output
//! takes (a file for SQLite; host, port, user and TLS for a server) is
//! checked here, beside the backends that connect with it.
//!
//! Values may use `{{ env_var('NAME') }}` so secrets stay out of files.
//! Passwords are held as [`Secret`], which never prints. With no profiles
//! file at all, the target is an embedded SQLite file under `.ferry/`.

use std::fmt;
use std::sync::Arc;

use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;

use super::DatabaseKind;
use crate::diagnostic::{Code, Diagnostic, Label, SourceFile};
use crate::project::yaml::{self, Node, Value};
use crate::state::Layout;

/// A value that must never be shown: `Debug` and `Display` print `****`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself, for handing to a driver. Never format it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("****")
    }
}

/// TLS modes, as libpq names them.
pub const SSL_MODES: &[&str] = &["disable", "allow", "prefer", "require", "verify-ca", "verify-full"];

/// How a connection uses TLS (`sslmode`), with libpq's meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never.
    Disable,
    /// When the server insists; ferry treats it as `Prefer`.
    Allow,
    /// When the server offers it, without checking its certificate (the default).
    Prefer,
    /// Always, without checking the certificate unless `sslrootcert` is set
    /// (then as `VerifyCa`, as libpq does).
    Require,
    /// Always, with the certificate signed by a trusted root.
    VerifyCa,
    /// Always, with the certificate signed by a trusted root and naming the host.
    VerifyFull,
}

impl SslMode {
    /// The mode named `text` (one of [`SSL_MODES`]).
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }
}

/// Connection settings for a networked database (PostgreSQL or MySQL/MariaDB).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    pub dbname: String,
    pub schema: String,
    pub sslmode: Option<String>,
    /// PEM file of the roots that sign the server's certificate, or
    /// `system` for the machine's trust store (`sslrootcert`).
    pub sslrootcert: Option<Utf8PathBuf>,
    /// PEM client certificate and key, for servers that ask for one.
    pub sslcert: Option<Utf8PathBuf>,
    pub sslkey: Option<Utf8PathBuf>,
    /// MySQL: whether to use `LOAD DATA LOCAL INFILE` (default true).
    pub local_infile: Option<bool>,
}

impl ServerTarget {
    /// The TLS mode; without `sslmode`, `prefer`, as libpq and the MySQL
    /// client default to.
    pub fn ssl_mode(&self) -> SslMode {
        self.sslmode.as_deref().and_then(SslMode::parse).unwrap_or(SslMode::Prefer)
    }
}

/// Where a target's database is: a file ferry opens in-process (SQLite),
/// or a server it connects to.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Address {
    File { path: Utf8PathBuf, schema: String },
    Server(ServerTarget),
}

/// One resolved output of a profile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    /// The output's name (`dev`, `prod`).
    pub name: String,
    /// The profile it came from, or `None` for the embedded default.
    pub profile: Option<String>,
    pub threads: Option<usize>,
    /// Which database; its [`Address`] is a file for SQLite and a server
    /// for the others.
    #[serde(rename = "type", serialize_with = "serialize_kind")]
    pub kind: DatabaseKind,
    #[serde(flatten)]
    pub address: Address,
    /// Personal data is masked in runs into this target (`masking: true`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub masking: bool,
    /// The environment variable holding the masking key
    /// (`masking_key_env:`, default `FERRY_MASKING_KEY`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub masking_key_env: Option<String>,
}

fn serialize_kind<S: serde::Serializer>(kind: &DatabaseKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.type_name())
}

impl Target {
    /// The embedded SQLite target used when no profile exists.
    pub fn embedded(project_dir: &Utf8Path) -> Self {
        Target {
            name: "default".to_owned(),
            profile: None,
            threads: None,
            kind: DatabaseKind::Sqlite,
            address: Address::File { path: Layout::new(project_dir).embedded_database(), schema: "main".to_owned() },
            masking: false,
            masking_key_env: None,
        }
    }

    /// `sqlite`, `postgres` or `mysql`.
    pub fn type_name(&self) -> &'static str {
        self.kind.type_name()
    }

    /// The server's settings, for a target that is not a file.
    pub fn server(&self) -> Option<&ServerTarget> {
        match &self.address {
            Address::Server(s) => Some(s),
            Address::File { .. } => None,
        }
    }

    /// Where the target is, for people and reports, without secrets:
    /// `sqlite .ferry/target.db`, `postgres app@db:5432/crm (schema public)`.
    pub fn shown(&self) -> String {
        match &self.address {
            Address::File { path, .. } => format!("{} {path}", self.type_name()),
            Address::Server(s) => {
                format!("{} {}@{}:{}/{} (schema {})", self.type_name(), s.user, s.host, s.port, s.dbname, s.schema)
            }
        }
    }

    /// The schema models load into.
    pub fn schema(&self) -> &str {
        match &self.address {
            Address::File { schema, .. } => schema,
            Address::Server(s) => &s.schema,
        }
    }

    /// The target as a connectorx connection URL, for database sources
    /// (with its password: never print it). connectorx takes fewer TLS
    /// settings than ferry's loaders: a mode it cannot honour is the error.
    pub fn url(&self) -> Result<String, String> {
        let server = |scheme: &str, s: &ServerTarget| -> Result<String, String> {
            let mut u = url::Url::parse(&format!("{scheme}://host")).expect("a valid base URL");
            let _ = u.set_host(Some(&s.host));
            let _ = u.set_port(Some(s.port));
            let _ = u.set_username(&s.user);
            if !s.password.is_empty() {
                let _ = u.set_password(Some(s.password.expose()));
            }
            u.set_path(&s.dbname);
            for (key, value) in connectorx_tls(scheme, s)? {
                u.query_pairs_mut().append_pair(key, &value);
            }
            Ok(u.to_string())
        };
        match (&self.address, self.kind) {
            (Address::File { path, .. }, _) => Ok(format!("sqlite://{path}")),
            (Address::Server(s), DatabaseKind::Mysql) => server("mysql", s),
            (Address::Server(s), _) => server("postgresql", s),
        }
    }

    /// The database name (file stem for SQLite).
    pub fn database(&self) -> &str {
        match &self.address {
            Address::File { path, .. } => path.file_stem().unwrap_or("main"),
            Address::Server(s) => &s.dbname,
        }
    }
}

/// Where to look for `profiles.yml`, in order.
pub fn search_dirs(explicit: Option<&Utf8Path>, project_dir: &Utf8Path) -> Vec<Utf8PathBuf> {
    if let Some(dir) = explicit {
        return vec![dir.to_owned()];
    }
    let mut dirs = Vec::new();
    for var in ["FERRY_PROFILES_DIR", "DBT_PROFILES_DIR"] {
        if let Ok(dir) = std::env::var(var)
            && !dir.is_empty()
        {
            dirs.push(Utf8PathBuf::from(dir));
        }
    }
    dirs.push(project_dir.to_owned());
    if let Ok(home) = std::env::var("HOME") {
        let home = Utf8PathBuf::from(home);
        dirs.push(home.join(".ferry"));
        dirs.push(home.join(".dbt"));
    }
    dirs
}

/// Finds and resolves the target: the profile's chosen output, or the
/// embedded SQLite target when no profiles file exists and the project
/// names no profile (`named`: `profile:` in the project file or
/// `--profile`). A named profile with no profiles file is an error that
/// lists the places searched: loading elsewhere than the user meant would
/// be a wrong answer.
pub fn resolve_target(
    dirs: &[Utf8PathBuf],
    (profile, named): (&str, bool),
    target: Option<&str>,
    project_dir: &Utf8Path,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Target, Box<Diagnostic>> {
    let Some(path) = dirs.iter().map(|d| d.join("profiles.yml")).find(|p| p.is_file()) else {
        let looked = format!(
            "looked for profiles.yml in {}",
            dirs.iter().map(|d| format!("`{d}`")).collect::<Vec<_>>().join(", ")
        );
        if let Some(name) = target {
            return Err(Box::new(
                Diagnostic::error(Code::Profile, format!("no profiles.yml found, so target `{name}` does not exist"))
                    .with_note(looked),
            ));
        }
        if named {
            return Err(Box::new(
                Diagnostic::error(Code::Profile, format!("the project names profile `{profile}`, but there is no profiles.yml"))
                    .with_note(looked)
                    .with_help(format!(
                        "create profiles.yml with a `{profile}` profile (or pass --profiles-dir), or drop `profile:` from the project file to load into the embedded SQLite target"
                    )),
            ));
        }
        return Ok(Target::embedded(project_dir));
    };
    let text = fs_err::read_to_string(&path).map_err(|e| {
        Box::new(Diagnostic::error(Code::Profile, format!("cannot read profiles file: {e}")).in_file(&path))
    })?;
    let file = SourceFile::new(path, text);
    let root = yaml::parse(&file)?;
    let Some(profile_node) = root.get(profile) else {
        let names: Vec<&str> = root.entries().iter().map(|(k, _)| k.name.as_str()).filter(|n| *n != "config").collect();
        let mut diag = Diagnostic::error(Code::Profile, format!("profile `{profile}` not found in `{}`", file.path))
            .in_file(&file.path)
            .with_note(format!("profiles in this file: {}", list(&names)));
        if let Some(help) = crate::diagnostic::did_you_mean(profile, names.iter().copied()) {
            diag = diag.with_help(help);
        }
        return Err(Box::new(diag));
    };
    let outputs = profile_node.get("outputs").filter(|o| !o.entries().is_empty()).ok_or_else(|| {
        Box::new(
            Diagnostic::error(Code::Profile, format!("profile `{profile}` has no `outputs`"))
                .with_label(Label::new(&file, profile_node.span.clone())),
        )
    })?;
    let chosen = match target {
        Some(t) => t.to_owned(),
        None => match profile_node.get("target").map(|n| render_value(&file, n)).transpose()? {
            Some(t) => t,
            None => "dev".to_owned(),
        },
    };
    let Some(output) = outputs.get(&chosen) else {
        let names: Vec<&str> = outputs.entries().iter().map(|(k, _)| k.name.as_str()).collect();
        let mut diag = Diagnostic::error(Code::Profile, format!("target `{chosen}` not found in profile `{profile}`"))
            .with_label(Label::new(&file, outputs.span.clone()))
            .with_note(format!("targets: {}", list(&names)));
        if let Some(help) = crate::diagnostic::did_you_mean(&chosen, names.iter().copied()) {
            diag = diag.with_help(help);
        }
        return Err(Box::new(diag));
    };
    parse_output(&file, profile, &chosen, output, project_dir, warnings)
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        return "none".to_owned();
    }
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

const FIELDS: &[&str] = &[
    "type",
    "host",
    "server",
    "port",
    "user",
    "username",
    "password",
    "pass",
    "dbname",
    "database",
    "schema",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "threads",
    "path",
    "schemas_and_paths",
    "schema_directory",
    "connect_timeout",
    "keepalives_idle",
    "search_path",
    "role",
    "retries",
    "charset",
    "application_name",
    "extensions",
    "local_infile",
    "masking",
    "masking_key_env",
];

fn parse_output(
    file: &Arc<SourceFile>,
    profile: &str,
    name: &str,
    node: &Node,
    project_dir: &Utf8Path,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Target, Box<Diagnostic>> {
    for (key, _) in node.entries() {
        if !FIELDS.contains(&key.name.as_str()) {
            warnings.push(crate::project::config::unknown_key(file, key, FIELDS, "profile field"));
        }
    }
    let output = Output { file, name, node, project_dir };
    let (kind_name, kind_node) = output.field(&["type"])?.ok_or_else(|| {
        Box::new(
            Diagnostic::error(Code::Profile, format!("target `{name}` has no `type`"))
                .with_label(Label::new(file, node.span.clone()))
                .with_help("set `type:` to `sqlite`, `postgres` or `mysql`"),
        )
    })?;
    let threads = match output.field(&["threads"])? {
        Some((t, n)) => Some(t.parse::<usize>().map_err(|_| bad_value(file, n, "threads", "a whole number"))?),
        None => None,
    };
    let (kind, address) = match kind_name.as_str() {
        "postgres" | "postgresql" => (DatabaseKind::Postgres, Address::Server(output.server(5432)?)),
        "mysql" | "mariadb" => (DatabaseKind::Mysql, Address::Server(output.server(3306)?)),
        "sqlite" => (DatabaseKind::Sqlite, output.sqlite_file()?),
        other => {
            let mut diag = Diagnostic::error(Code::Profile, format!("unsupported target type `{other}`"))
                .with_label(Label::new(file, kind_node.span.clone()))
                .with_note("ferry loads into `sqlite`, `postgres` and `mysql` (MariaDB too)");
            if let Some(help) = crate::diagnostic::did_you_mean(other, ["sqlite", "postgres", "mysql"]) {
                diag = diag.with_help(help);
            }
            return Err(diag.into());
        }
    };
    let masking = match output.field(&["masking"])? {
        Some((m, n)) => match m.trim().to_ascii_lowercase().as_str() {
            "true" => true,
            "false" => false,
            _ => return Err(bad_value(file, n, "masking", "`true` or `false`")),
        },
        None => false,
    };
    let masking_key_env = output.field(&["masking_key_env"])?.map(|(v, _)| v);
    Ok(Target {
        name: name.to_owned(),
        profile: Some(profile.to_owned()),
        threads,
        kind,
        address,
        masking,
        masking_key_env,
    })
}

/// One output of a profile, read field by field.
struct Output<'a> {
    file: &'a Arc<SourceFile>,
    /// The output's name, for messages.
    name: &'a str,
    node: &'a Node,
    project_dir: &'a Utf8Path,
}

impl<'a> Output<'a> {
    /// The first of `names` that is set, rendered, with its node.
    fn field(&self, names: &[&str]) -> Result<Option<(String, &'a Node)>, Box<Diagnostic>> {
        for n in names {
            if let Some(v) = self.node.get(n).filter(|v| !v.is_null()) {
                return Ok(Some((render_value(self.file, v)?, v)));
            }
        }
        Ok(None)
    }

    /// [`Output::field`], which must be set.
    fn require(&self, names: &[&str]) -> Result<String, Box<Diagnostic>> {
        self.field(names)?.map(|(v, _)| v).ok_or_else(|| {
            Box::new(
                Diagnostic::error(Code::Profile, format!("target `{}` needs `{}`", self.name, names[0]))
                    .with_label(Label::new(self.file, self.node.span.clone())),
            )
        })
    }

    /// A path field, relative to the project unless absolute (or `system`).
    fn path(&self, key: &str) -> Result<Option<Utf8PathBuf>, Box<Diagnostic>> {
        Ok(self.field(&[key])?.map(|(p, _)| {
            let p = Utf8PathBuf::from(p);
            if p.is_absolute() || p.as_str() == "system" { p } else { self.project_dir.join(p) }
        }))
    }

    /// A parsed field: `parse` says what the value must be when it fails.
    fn parsed<T>(
        &self,
        key: &str,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, Box<Diagnostic>> {
        match self.field(&[key])? {
            Some((v, n)) => parse(&v).map(Some).ok_or_else(|| bad_value(self.file, n, key, expected)),
            None => Ok(None),
        }
    }

    /// A networked database's settings (PostgreSQL or MySQL/MariaDB).
    fn server(&self, default_port: u16) -> Result<ServerTarget, Box<Diagnostic>> {
        let port = self.parsed("port", "a port number", |p| p.parse::<u16>().ok())?.unwrap_or(default_port);
        let sslmode = match self.field(&["sslmode"])? {
            Some((m, n)) if !SSL_MODES.contains(&m.as_str()) => {
                return Err(bad_value(self.file, n, "sslmode", &format!("one of {}", SSL_MODES.join(", "))));
            }
            other => other.map(|(m, _)| m),
        };
        let schema = self.require(&["schema", "database", "dbname"])?;
        let local_infile = self.parsed("local_infile", "true or false", |v| v.parse::<bool>().ok())?;
        let (sslcert, sslkey) = (self.path("sslcert")?, self.path("sslkey")?);
        if sslcert.is_some() != sslkey.is_some() {
            let given = if sslcert.is_some() { "sslcert" } else { "sslkey" };
            let n = self.node.get(given).unwrap_or(self.node);
            let pair = "given with its pair: a client certificate needs `sslcert` and `sslkey`";
            return Err(bad_value(self.file, n, given, pair));
        }
        Ok(ServerTarget {
            sslrootcert: self.path("sslrootcert")?,
            sslcert,
            sslkey,
            host: self.require(&["host", "server"])?,
            port,
            user: self.require(&["user", "username"])?,
            password: Secret::new(self.field(&["password", "pass"])?.map(|(p, _)| p).unwrap_or_default()),
            dbname: self.field(&["dbname", "database"])?.map_or_else(|| schema.clone(), |(d, _)| d),
            schema,
            sslmode,
            local_infile,
        })
    }

    /// A SQLite database: its file (the embedded one under `.ferry/` by
    /// default) and the schema models load into.
    fn sqlite_file(&self) -> Result<Address, Box<Diagnostic>> {
        let path = match self.field(&["path"])? {
            Some((p, _)) => Utf8PathBuf::from(p),
            None => match self.node.get("schemas_and_paths").and_then(|m| m.entries().first()) {
                Some((_, p)) => Utf8PathBuf::from(render_value(self.file, p)?),
                None => Layout::new(self.project_dir).embedded_database(),
            },
        };
        let path = if path.is_absolute() { path } else { self.project_dir.join(path) };
        let schema = self.field(&["schema"])?.map_or_else(|| "main".to_owned(), |(s, _)| s);
        Ok(Address::File { path, schema })
    }
}

/// `sslmode` and its files as connectorx's URL parameters. Its PostgreSQL
/// source checks a certificate's chain when given `sslrootcert` (never the
/// host name); its MySQL source cannot fall back to plain text, so
/// `prefer` there means plain text.
fn connectorx_tls(scheme: &str, s: &ServerTarget) -> Result<Vec<(&'static str, String)>, String> {
    let mode = s.ssl_mode();
    let root = s.sslrootcert.as_ref().map(|p| p.to_string());
    if root.as_deref() == Some("system") {
        return Err("a database source cannot use `sslrootcert: system`; name the PEM file of the roots".into());
    }
    let verifies = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull);
    if verifies && root.is_none() {
        return Err(format!(
            "`sslmode: {}` on a database source needs `sslrootcert`, the PEM file of the roots",
            s.sslmode.as_deref().unwrap_or_default()
        ));
    }
    let mut out = Vec::new();
    if scheme == "postgresql" {
        if mode == SslMode::VerifyFull {
            return Err("a PostgreSQL database source cannot check the server's host name (connectorx does not); \
                        use `sslmode: verify-ca`"
                .into());
        }
        let text = match mode {
            SslMode::Disable => "disable",
            SslMode::Allow | SslMode::Prefer => "prefer",
            SslMode::Require | SslMode::VerifyCa => "require",
            SslMode::VerifyFull => unreachable!("refused above"),
        };
        out.push(("sslmode", text.to_owned()));
        out.extend(root.map(|r| ("sslrootcert", r)));
        if let (Some(c), Some(k)) = (&s.sslcert, &s.sslkey) {
            out.push(("sslcert", c.to_string()));
            out.push(("sslkey", k.to_string()));
        }
    } else {
        if s.sslcert.is_some() {
            return Err("a MySQL database source cannot present a client certificate (connectorx does not)".into());
        }
        let text = match mode {
            SslMode::Disable | SslMode::Allow | SslMode::Prefer => return Ok(out),
            SslMode::Require => "REQUIRED",
            SslMode::VerifyCa => "VERIFY_CA",
            SslMode::VerifyFull => "VERIFY_IDENTITY",
        };
        out.push(("ssl-mode", text.to_owned()));
        out.extend(root.map(|r| ("ssl-ca", r)));
    }
    Ok(out)
}

fn bad_value(file: &Arc<SourceFile>, node: &Node, field: &str, expected: &str) -> Box<Diagnostic> {
    Box::new(
        Diagnostic::error(Code::Profile, format!("`{field}` must be {expected}"))
            .with_label(Label::new(file, node.span.clone())),
    )
}

/// Renders a scalar profile value, expanding `{{ env_var('X') }}`. The
/// rendered value is never shown in errors (it may be a password).
fn render_value(file: &Arc<SourceFile>, node: &Node) -> Result<String, Box<Diagnostic>> {
    let raw = match &node.value {
        Value::String(s) => s.clone(),
        Value::Int(i) => return Ok(i.to_string()),
        Value::Bool(b) => return Ok(b.to_string()),
        Value::Float(f) => return Ok(f.to_string()),
        _ => return Err(bad_value(file, node, "this field", "a single value")),
    };
    if !raw.contains("{{") && !raw.contains("{%") {
        return Ok(raw);
    }
    let mut env = minijinja::Environment::new();
    env.add_function("env_var", crate::template::functions::env_var);
    env.render_str(&raw, ()).map_err(|e| {
        Box::new(
            Diagnostic::error(
                Code::Profile,
                format!("cannot render profile value: {}", e.detail().unwrap_or("invalid template")),
            )
            .with_label(Label::new(file, node.span.clone())),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str, profile: &str, target: Option<&str>) -> Result<Target, Box<Diagnostic>> {
        let dir = tempfile::tempdir().unwrap();
        let dir = Utf8PathBuf::try_from(dir.path().to_owned()).unwrap();
        fs_err::write(dir.join("profiles.yml"), text).unwrap();
        resolve_target(std::slice::from_ref(&dir), (profile, true), target, &dir, &mut Vec::new())
    }

    #[test]
    fn postgres_output_with_env_var_password_is_redacted() {
        // SAFETY: tests in this module read a variable only they set.
        unsafe { std::env::set_var("FERRY_TEST_SECRET_PW", "hunter2") };
        let t = resolve(
            "shop:\n  target: dev\n  outputs:\n    dev:\n      type: postgres\n      host: localhost\n      port: 5433\n      user: me\n      password: \"{{ env_var('FERRY_TEST_SECRET_PW') }}\"\n      dbname: test\n      schema: analytics\n      sslmode: require\n",
            "shop",
            None,
        )
        .unwrap();
        let (DatabaseKind::Postgres, Address::Server(s)) = (t.kind, &t.address) else { panic!("not postgres: {t:?}") };
        assert_eq!(s.password.expose(), "hunter2");
        assert_eq!(s.port, 5433);
        assert_eq!(t.schema(), "analytics");
        let shown = format!("{t:?} {}", serde_json::to_string(&t).unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn missing_target_suggests_the_closest() {
        let err = resolve("shop:\n  target: dev\n  outputs:\n    prod:\n      type: sqlite\n", "shop", Some("prd"))
            .unwrap_err();
        assert_eq!(err.help.as_deref(), Some("did you mean `prod`?"));
    }

    #[test]
    fn bad_sslmode_and_unknown_type_are_errors() {
        let base = "p:\n  target: d\n  outputs:\n    d:\n";
        let err = resolve(
            &format!(
                "{base}      type: postgres\n      host: h\n      user: u\n      schema: s\n      sslmode: maybe\n"
            ),
            "p",
            None,
        )
        .unwrap_err();
        assert!(err.message.contains("sslmode"), "{}", err.message);
        let err = resolve(&format!("{base}      type: postgre\n"), "p", None).unwrap_err();
        assert_eq!(err.help.as_deref(), Some("did you mean `postgres`?"));
    }

    #[test]
    fn no_profiles_file_means_embedded_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let dir = Utf8PathBuf::try_from(dir.path().to_owned()).unwrap();
        let t = resolve_target(std::slice::from_ref(&dir), ("shop", false), None, &dir, &mut Vec::new()).unwrap();
        assert_eq!(t.type_name(), "sqlite");
        assert_eq!(t.kind, DatabaseKind::Sqlite);
        assert_eq!(t.address, Address::File { path: dir.join(".ferry/ferry.db"), schema: "main".into() });
    }

    #[test]
    fn a_named_profile_without_a_profiles_file_is_an_error_listing_where_it_looked() {
        let dir = tempfile::tempdir().unwrap();
        let dir = Utf8PathBuf::try_from(dir.path().to_owned()).unwrap();
        let err = resolve_target(std::slice::from_ref(&dir), ("shop", true), None, &dir, &mut Vec::new()).unwrap_err();
        assert!(err.message.contains("profile `shop`"), "{}", err.message);
        assert!(err.notes.iter().any(|n| n.contains(dir.as_str())), "{:?}", err.notes);
    }
}
