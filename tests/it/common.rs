//! Test fixtures: a project in a temporary directory, and the `ferry`
//! command pointed at it with a clean environment.

use std::path::{Path, PathBuf};
use std::process::Command;

use camino::Utf8PathBuf;
use serde_json::Value as Json;

/// A ferry project in a temporary directory.
pub struct TestProject {
    dir: tempfile::TempDir,
    /// Set for every `ferry` command it runs.
    env: Vec<(String, String)>,
    /// Where its stages are when not under `.ferry/stage`: moto's port,
    /// the bucket and the prefix (see [`TestProject::stages_in_moto`]).
    stored: Option<(u16, String, String)>,
}

impl TestProject {
    /// An empty project named `shop`.
    pub fn new() -> Self {
        let p = TestProject { dir: tempfile::tempdir().expect("a temp dir"), env: Vec::new(), stored: None };
        p.file("ferry.yml", "name: shop\n")
    }

    /// A copy of `tests/fixtures/projects/<name>`.
    pub fn fixture(name: &str) -> Self {
        let p = TestProject { dir: tempfile::tempdir().expect("a temp dir"), env: Vec::new(), stored: None };
        copy_dir(&fixtures().join(name), p.dir.path());
        p
    }

    /// A copy of the bundled example migration (the repository root).
    pub fn example() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let p = TestProject::new();
        for dir in ["models", "macros", "seeds", "data", "data_tests"] {
            copy_dir(&root.join(dir), &p.path().join(dir).into_std_path_buf());
        }
        fs_err::copy(root.join("ferry.yml"), p.path().join("ferry.yml")).expect("copy ferry.yml");
        p
    }

    /// Writes a file (parents created).
    pub fn file(self, rel: &str, text: &str) -> Self {
        let path = self.dir.path().join(rel);
        fs_err::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        fs_err::write(path, text).expect("write");
        self
    }

    /// The project with its stages in moto on `port`, under `prefix` of
    /// `bucket` (`stage_dir: s3://bucket/prefix` in `ferry.yml`, and
    /// object_store's S3 client pointed at moto), where
    /// [`TestProject::query_stages`] and [`TestProject::stage_manifest`]
    /// read them.
    pub fn stages_in_moto(mut self, port: u16, bucket: &str, prefix: &str) -> Self {
        let ferry_yml = self.read("ferry.yml");
        self.env = crate::object_stores::s3_env(port).into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        self.stored = Some((port, bucket.to_owned(), prefix.to_owned()));
        self.file("ferry.yml", &format!("{ferry_yml}\nstage_dir: s3://{bucket}/{prefix}\n"))
    }

    /// Writes `models/<name>`.
    pub fn model(self, name: &str, sql: &str) -> Self {
        self.file(&format!("models/{name}"), sql)
    }

    pub fn path(&self) -> Utf8PathBuf {
        Utf8PathBuf::try_from(self.dir.path().to_owned()).expect("utf-8 temp dir")
    }

    pub fn read(&self, rel: &str) -> String {
        fs_err::read_to_string(self.dir.path().join(rel)).expect("read")
    }

    /// `.ferry/run_results.json`, parsed.
    pub fn run_results(&self) -> serde_json::Value {
        serde_json::from_str(&self.read(".ferry/run_results.json")).expect("run_results.json is JSON")
    }

    /// `.ferry/manifest.json`, parsed.
    pub fn manifest(&self) -> serde_json::Value {
        serde_json::from_str(&self.read(".ferry/manifest.json")).expect("manifest.json is JSON")
    }

    /// `ferry ARGS` run in the project, with no colour and no profiles
    /// from the machine running the tests.
    pub fn ferry<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = ferry_command();
        cmd.current_dir(self.dir.path()).args(args).env("HOME", self.dir.path()).envs(self.env.iter().cloned());
        cmd
    }
}

/// The `ferry` binary with a clean environment.
pub fn ferry_command() -> Command {
    let mut cmd = Command::new(insta_cmd::get_cargo_bin("ferry"));
    cmd.env("NO_COLOR", "1")
        .env_remove("FERRY_PROFILES_DIR")
        .env_remove("DBT_PROFILES_DIR")
        .env_remove("FERRY_PROJECT_DIR")
        .env_remove("FERRY_FORMAT")
        .env_remove("GITHUB_ACTIONS")
        .env_remove("RUST_LOG");
    cmd
}

/// The entry for node `unique_id` in a parsed `run_results.json`.
pub fn node_result<'a>(results: &'a serde_json::Value, unique_id: &str) -> Option<&'a serde_json::Value> {
    results["results"].as_array()?.iter().find(|r| r["unique_id"] == unique_id)
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/projects")
}

pub fn copy_dir(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.expect("walk fixture");
        let rel = entry.path().strip_prefix(from).expect("inside fixture");
        if rel.starts_with(".ferry") {
            continue;
        }
        let dest = to.join(rel);
        if entry.file_type().is_dir() {
            fs_err::create_dir_all(&dest).expect("mkdir");
        } else {
            fs_err::copy(entry.path(), &dest).expect("copy");
        }
    }
}

/// Snapshot settings: temp dirs and timings filtered out.
pub fn settings(project: &TestProject) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.add_filter(&regex_escape(project.path().as_str()), "[PROJECT]");
    s.add_filter(r"in \d+\.\d+s", "in [TIME]");
    s.add_filter(r"\\", "/");
    s
}

fn regex_escape(s: &str) -> String {
    s.chars().fold(String::new(), |mut out, c| {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
        out
    })
}

/// Output of a finished command, as text.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl TestProject {
    /// Runs `ferry ARGS` to completion.
    pub fn run<I, S>(&self, args: I) -> Ran
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let out = self.ferry(args).output().expect("ferry runs");
        Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Rows of a SQL query over staged models (each registered under its
    /// name), one line per row, sorted: order-independent comparisons.
    pub async fn query_stages(&self, models: &[&str], sql: &str) -> Vec<String> {
        use datafusion::prelude::SessionContext;
        if let Some((port, bucket, prefix)) = &self.stored {
            return crate::object_stores::query_stored((*port, bucket, prefix), models, sql).await;
        }
        let ctx = SessionContext::new();
        for m in models {
            let dir = self.path().join(".ferry/stage").join(m);
            let manifest = ferry::stage::read_manifest(&dir).expect("stage whole");
            // A layered stage's files may hold strings in either layout,
            // which DataFusion reads alike but infers apart.
            let mut schemas = Vec::new();
            for f in &manifest.files {
                let file = ctx.read_parquet(dir.join(&f.name).as_str(), Default::default()).await.unwrap();
                schemas.push(file.schema().as_arrow().clone());
            }
            let schema = datafusion::arrow::datatypes::Schema::try_merge(schemas).expect("one schema");
            if manifest.has_deletes() {
                // Read as ferry reads it: its deletion files applied.
                let staged = ferry::stage::StagedTable { dir: ferry::stage::Dir::Local(dir.clone()), manifest };
                let table = ferry::stage::table::StageTable::new(&staged, std::sync::Arc::new(schema)).unwrap();
                ctx.register_table(*m, std::sync::Arc::new(table)).expect("stage readable");
            } else {
                let options = datafusion::prelude::ParquetReadOptions::default().schema(&schema);
                ctx.register_parquet(*m, dir.as_str(), options).await.expect("stage readable");
            }
        }
        sorted_rows(&ctx, sql).await
    }
}

impl TestProject {
    /// The values of `sql`'s one column over `model`'s stage, sorted.
    pub async fn stage_values(&self, model: &str, sql: &str) -> Vec<String> {
        let rows = self.query_stages(&[model], sql).await;
        let mut values: Vec<String> =
            rows.iter().map(|l| l.trim_matches(|c: char| c == '|' || c.is_whitespace()).to_owned()).collect();
        values.sort();
        values
    }

    /// Whether its stages are in an object store (moto).
    pub fn stages_stored(&self) -> bool {
        self.stored.is_some()
    }

    /// The stage manifest of `model`, if it has a stage.
    pub async fn stage_manifest(&self, model: &str) -> Option<Json> {
        if let Some((port, bucket, prefix)) = &self.stored {
            return crate::object_stores::stored_manifest((*port, bucket, prefix), model).await;
        }
        let text = fs_err::read_to_string(self.path().join(".ferry/stage").join(model).join("_ferry_stage.json"));
        Some(serde_json::from_str(&text.ok()?).expect("a stage manifest is JSON"))
    }

    /// With the stages in moto: that nothing is staged on this machine,
    /// that the stage of each of `models` holds its manifest and the one
    /// version it names, nothing else, and that no run left scratch.
    pub async fn assert_stored_stages_whole(&self, models: &[&str]) {
        let Some((port, bucket, prefix)) = &self.stored else { return };
        let at = (*port, bucket.as_str(), prefix.as_str());
        assert!(!self.path().join(".ferry/stage").exists(), "nothing is staged on this machine");
        for model in models {
            crate::object_stores::assert_one_version(at, model, &[]).await;
        }
        let scratch = crate::object_stores::stored_objects(at, "_ferry_scratch").await;
        assert_eq!(scratch, Vec::<String>::new(), "no scratch is left");
    }
}

/// The rows of `sql` in `ctx`, one line per row, sorted.
pub async fn sorted_rows(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Vec<String> {
    let batches = ctx.sql(sql).await.expect("query plans").collect().await.expect("query runs");
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches).expect("formats").to_string();
    let mut lines: Vec<String> = text.lines().filter(|l| l.starts_with('|')).skip(1).map(str::to_owned).collect();
    lines.sort();
    lines
}

/// The stages under `.ferry/stage/`, by name.
pub fn stages(p: &TestProject) -> Vec<String> {
    let mut names: Vec<String> = fs_err::read_dir(p.path().join(".ferry/stage"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// A node's id, status, ledger, rows loaded and test failures.
pub type Outcome = (String, Json, Json, Json, Json);

/// What a run concluded per node: status, ledger, rows loaded, failures
/// of tests; not its timings.
pub fn outcomes(p: &TestProject) -> Vec<Outcome> {
    let results = p.run_results();
    let mut rows: Vec<_> = results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let id = r["unique_id"].as_str().unwrap().to_owned();
            // The files' paths name the run.
            let mut ledger = r["ledger"].clone();
            if let Some(l) = ledger.as_object_mut() {
                l.remove("error_log");
                l.remove("quarantine_file");
            }
            (id, r["status"].clone(), ledger, r["load"]["rows"].clone(), r["failures"].clone())
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

/// A self-signed certificate for `cn` (also its DNS name) and its key, as PEM.
pub fn self_signed(cn: &str) -> (Vec<u8>, Vec<u8>) {
    use openssl::{asn1::Asn1Time, bn::BigNum, hash::MessageDigest, pkey::PKey, rsa::Rsa, x509};
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = x509::X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap()).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap()).unwrap();
    let san = x509::extension::SubjectAlternativeName::new().dns(cn).build(&b.x509v3_context(None, None)).unwrap();
    b.append_extension(san).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    (b.build().to_pem().unwrap(), key.private_key_to_pem_pkcs8().unwrap())
}
