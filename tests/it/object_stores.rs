//! Sources in cloud object stores, read through object_store against
//! stand-ins that speak the real protocols on this machine: moto's S3 server
//! for `s3://` and Azurite for `az://` (installed by `scripts/test_tools.sh`
//! into `target/test-tools/`; `FERRY_TEST_TOOLS` names another place), and
//! for `gs://` an HTTP server answering GCS's object reads. Under CI
//! (`CI=true`) missing tools fail the test; elsewhere it says it skipped.
//! `http://` is tested in `run.rs` against Python's own server.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::TestProject;

pub(crate) fn tools() -> Option<PathBuf> {
    let dir = std::env::var_os("FERRY_TEST_TOOLS")
        .map_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-tools"), PathBuf::from);
    if dir.join("venv/bin/moto_server").exists() && dir.join("node_modules/.bin/azurite-blob").exists() {
        return Some(dir);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "the object store stand-ins are missing under CI: run scripts/test_tools.sh (looked in {})",
            dir.display()
        );
    }
    eprintln!("skipped: no object store stand-ins in {}; run scripts/test_tools.sh", dir.display());
    None
}

/// A server the test started, stopped when dropped.
pub(crate) struct Server(pub(crate) Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub(crate) fn start(command: &mut Command, port: u16) -> Server {
    let server = Server(command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("the stand-in starts"));
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "the stand-in on port {port} never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

/// Python's own HTTP server on a free port, serving `dir`: plain, or with
/// the ETag header GCS's client requires (`etag`), or over TLS with a
/// certificate and key (PEM files). Stopped when dropped.
fn http_server(dir: &std::path::Path, etag: bool, tls: Option<(&std::path::Path, &std::path::Path)>) -> (Server, u16) {
    use std::io::BufRead;
    const SCRIPT: &str = "import functools, http.server, ssl, sys\n\
        class H(http.server.SimpleHTTPRequestHandler):\n\
        \x20   def end_headers(self):\n\
        \x20       if sys.argv[2] == 'etag':\n\
        \x20           self.send_header('ETag', '\"1\"')\n\
        \x20       super().end_headers()\n\
        \x20   def log_message(self, *a): pass\n\
        srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(H, directory=sys.argv[1]))\n\
        if len(sys.argv) > 3:\n\
        \x20   ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
        \x20   ctx.load_cert_chain(sys.argv[3], sys.argv[4])\n\
        \x20   srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n\
        print(srv.server_address[1], flush=True)\n\
        srv.serve_forever()\n";
    let mut command = Command::new("python3");
    command.args(["-u", "-c", SCRIPT]).arg(dir).arg(if etag { "etag" } else { "plain" });
    if let Some((cert, key)) = tls {
        command.arg(cert).arg(key);
    }
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("python3 runs an HTTP server");
    let mut port = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut port).expect("its port");
    (Server(child), port.trim().parse().expect("a port"))
}

/// Runs a Python snippet with the tools' venv (boto3, azure-storage-blob).
pub(crate) fn python(tools: &std::path::Path, code: &str) {
    let out = Command::new(tools.join("venv/bin/python")).args(["-c", code]).output().expect("python runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// moto's S3 server on a free port, with `script` run first (Python, with
/// `s3` a boto3 client of it); the server, stopped when dropped, and its port.
pub(crate) fn moto(tools: &std::path::Path, script: &str) -> (Server, u16) {
    let port = free_port();
    let server = start(
        Command::new(tools.join("venv/bin/moto_server")).args(["-H", "127.0.0.1", "-p", &port.to_string()]),
        port,
    );
    python(
        tools,
        &format!(
            "import boto3\ns3 = boto3.client('s3', endpoint_url='http://127.0.0.1:{port}', region_name='us-east-1', aws_access_key_id='k', aws_secret_access_key='s')\n{script}"
        ),
    );
    (server, port)
}

/// moto with an empty bucket `stages`, and its port; none where the test
/// tools are missing (see [`tools`]).
pub(crate) fn stages_bucket() -> Option<(Server, u16)> {
    Some(moto(&tools()?, "s3.create_bucket(Bucket='stages')\n"))
}

/// The environment that points object_store's S3 client at moto on `port`.
pub(crate) fn s3_env(port: u16) -> [(&'static str, String); 5] {
    [
        ("AWS_ENDPOINT", format!("http://127.0.0.1:{port}")),
        ("AWS_ALLOW_HTTP", "true".to_owned()),
        ("AWS_ACCESS_KEY_ID", "k".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "s".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
    ]
}

/// A project whose `lake` source reads `orders.csv` and `events.json` under
/// `base`, and a table model summing them.
fn project(base: &str) -> TestProject {
    TestProject::new()
        .file(
            "models/sources.yml",
            &format!(
                "sources:\n  - name: lake\n    tables:\n      - name: orders\n        path: {base}/orders.csv\n      - name: events\n        path: {base}/events/\n        format: json\n"
            ),
        )
        .model(
            "totals.sql",
            "{{ config(materialized='table') }}\nselect count(*) as n, sum(amount) as total, (select count(*) from {{ source('lake', 'events') }}) as events from {{ source('lake', 'orders') }} where amount > 5",
        )
}

const ORDERS: &str = "id,amount\\n1,10\\n2,20\\n3,3\\n";
const EVENTS: &str = "{\"id\": 1}\\n{\"id\": 2}\\n";

#[tokio::test]
async fn s3_sources_are_read_from_an_s3_server() {
    let Some(tools) = tools() else { return };
    let (_server, port) = moto(
        &tools,
        &format!(
            "s3.create_bucket(Bucket='lake')\n\
             s3.put_object(Bucket='lake', Key='crm/orders.csv', Body=b'{ORDERS}')\n\
             s3.put_object(Bucket='lake', Key='crm/events/part-0.json', Body=b'{EVENTS}')\n\
             s3.put_object(Bucket='lake', Key='crm/events/part-1.json', Body=b'{EVENTS}')\n"
        ),
    );
    let p = project("s3://lake/crm");
    let env = s3_env(port);
    let ran = p.ferry(["run"]).envs(env.clone()).output().expect("run");
    assert_eq!(ran.status.code(), Some(0), "{}", String::from_utf8_lossy(&ran.stderr));
    assert_eq!(p.query_stages(&["totals"], "select n, total, events from totals").await, ["| 2 | 30    | 4      |"]);
    // A key that is not there is named.
    let p = p.file("models/sources.yml", "sources:\n  - name: lake\n    tables:\n      - name: orders\n        path: s3://lake/crm/gone.csv\n      - name: events\n        path: s3://lake/crm/events/\n        format: json\n");
    let ran = p.ferry(["run"]).envs(env).output().expect("run");
    let err = String::from_utf8_lossy(&ran.stderr);
    assert_eq!(ran.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot read source `lake.orders`") && err.contains("gone.csv"), "{err}");
}

#[tokio::test]
async fn azure_sources_are_read_from_azurite() {
    let Some(tools) = tools() else { return };
    let port = free_port();
    let data = tempfile::tempdir().unwrap();
    let _server = start(
        Command::new(tools.join("node_modules/.bin/azurite-blob"))
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--silent", "--skipApiVersionCheck"])
            .arg("--location")
            .arg(data.path()),
        port,
    );
    // Azurite's well-known development account.
    let key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    python(
        &tools,
        &format!(
            "from azure.storage.blob import BlobServiceClient\n\
             s = BlobServiceClient.from_connection_string('DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;')\n\
             s.create_container('lake')\n\
             s.get_blob_client('lake', 'crm/orders.csv').upload_blob(b'{ORDERS}')\n\
             s.get_blob_client('lake', 'crm/events/part-0.json').upload_blob(b'{EVENTS}')\n\
             s.get_blob_client('lake', 'crm/events/part-1.json').upload_blob(b'{EVENTS}')\n"
        ),
    );
    let p = project("az://lake/crm");
    let ran = p
        .ferry(["run"])
        .env("AZURE_STORAGE_USE_EMULATOR", "true")
        .env("AZURITE_BLOB_STORAGE_URL", format!("http://127.0.0.1:{port}"))
        .output()
        .expect("run");
    assert_eq!(ran.status.code(), Some(0), "{}", String::from_utf8_lossy(&ran.stderr));
    assert_eq!(p.query_stages(&["totals"], "select n, total, events from totals").await, ["| 2 | 30    | 4      |"]);
}

/// `gs://` through object_store's Google Cloud Storage client, against a
/// stand-in for the one part of GCS a single-object source uses: the XML
/// API's HEAD and GET of `/<bucket>/<object>`, with the ETag and
/// Last-Modified headers the client requires (Python's own HTTP server,
/// which adds the ETag). No GCS emulator that this client works with
/// installs here (gcp-storage-emulator answers HEAD with 501), so listing a
/// directory of objects is not covered.
#[tokio::test]
async fn gcs_sources_are_read_through_the_gcs_client() {
    let served = tempfile::tempdir().unwrap();
    fs_err::create_dir_all(served.path().join("lake/crm")).unwrap();
    fs_err::write(served.path().join("lake/crm/orders.csv"), ORDERS.replace("\\n", "\n")).unwrap();
    let (_server, port) = http_server(served.path(), true, None);
    let p = TestProject::new()
        .file(
            "models/sources.yml",
            "sources:\n  - name: lake\n    tables:\n      - name: orders\n        path: gs://lake/crm/orders.csv\n",
        )
        .model(
            "totals.sql",
            "{{ config(materialized='table') }}\nselect count(*) as n, sum(amount) as total from {{ source('lake', 'orders') }} where amount > 5",
        );
    let ran = p
        .ferry(["run"])
        .env("GOOGLE_BASE_URL", format!("http://127.0.0.1:{port}"))
        .env("GOOGLE_SKIP_SIGNATURE", "true")
        .output()
        .expect("run");
    assert_eq!(ran.status.code(), Some(0), "{}", String::from_utf8_lossy(&ran.stderr));
    assert_eq!(p.query_stages(&["totals"], "select n, total from totals").await, ["| 2 | 30    |"]);
}

/// `https://` verifies the server's certificate against the machine's
/// trust store (`SSL_CERT_FILE` names one here): a certificate it does not
/// trust fails the source, one it trusts is read.
#[tokio::test]
async fn https_sources_verify_the_servers_certificate() {
    let served = tempfile::tempdir().unwrap();
    fs_err::write(served.path().join("orders.csv"), ORDERS.replace("\\n", "\n")).unwrap();
    let (cert, key) = crate::common::self_signed("localhost");
    let certs = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    fs_err::write(&cert_path, cert).unwrap();
    fs_err::write(&key_path, key).unwrap();
    let (_server, port) = http_server(served.path(), false, Some((&cert_path, &key_path)));
    let p = TestProject::new()
        .file(
            "models/sources.yml",
            &format!(
                "sources:\n  - name: web\n    tables:\n      - name: orders\n        path: https://localhost:{port}/orders.csv\n"
            ),
        )
        .model("totals.sql", "{{ config(materialized='table') }}\nselect sum(amount) as total from {{ source('web', 'orders') }}");
    let untrusted = p.ferry(["run"]).env("SSL_CERT_FILE", "/nonexistent.pem").output().expect("run");
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert_eq!(untrusted.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot read source `web.orders`") && err.contains("certificate verify failed"), "{err}");
    let trusted = p.ferry(["run"]).env("SSL_CERT_FILE", &cert_path).output().expect("run");
    assert_eq!(trusted.status.code(), Some(0), "{}", String::from_utf8_lossy(&trusted.stderr));
    assert_eq!(p.query_stages(&["totals"], "select total from totals").await, ["| 33    |"]);
}

/// A source at an `http://` URL is read through object_store, from a real
/// HTTP server (Python's `http.server`, serving the test's directory).
#[tokio::test]
async fn a_source_at_an_http_url_is_read_through_object_store() {
    let p = TestProject::new()
        .file("served/orders.csv", "id,amount\n1,10\n2,20\n3,30\n")
        .file("served/events.json", "{\"id\": 1, \"kind\": \"open\"}\n{\"id\": 2, \"kind\": \"close\"}\n");
    let (server, port) = http_server(p.path().join("served").as_std_path(), false, None);
    let p = p
        .file(
            "models/sources.yml",
            &format!(
                "sources:\n  - name: web\n    tables:\n      - name: orders\n        path: http://127.0.0.1:{port}/orders.csv\n      - name: events\n        path: http://127.0.0.1:{port}/events.json\n        format: json\n      - name: gone\n        path: http://127.0.0.1:{port}/gone.csv\n"
            ),
        )
        .model(
            "totals.sql",
            "{{ config(materialized='table') }}\nselect count(*) as n, sum(amount) as total, (select max(kind) from {{ source('web', 'events') }}) as k from {{ source('web', 'orders') }}",
        )
        .model("gone.sql", "select * from {{ source('web', 'gone') }}");
    let ran = p.run(["run", "-s", "totals"]);
    let missing = p.run(["run", "-s", "gone"]);
    drop(server);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let totals = p.query_stages(&["totals"], "select n, total, k from totals").await;
    assert_eq!(totals, ["| 3 | 60    | open |"]);
    assert_eq!(missing.code, Some(1), "{}", missing.stderr);
    assert!(missing.stderr.contains("cannot read source `web.gone`"), "{}", missing.stderr);
    assert!(missing.stderr.contains("/gone.csv"), "{}", missing.stderr);
}

/// The formats ferry reads itself (Excel, XML, a JSON array with column
/// paths) read a URL's object from a local copy, and their errors name the
/// URL.
#[tokio::test]
async fn legacy_formats_at_a_url_are_fetched_and_read() {
    let legacy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy");
    let (server, port) = http_server(&legacy, false, None);
    let base = format!("http://127.0.0.1:{port}");
    let p = TestProject::new()
        .file(
            "models/sources.yml",
            &format!(
                "sources:\n  - name: web\n    tables:\n\
                 \x20     - name: sheet\n        path: {base}/customers.xlsx\n        sheet: Customers\n        header_row: 3\n\
                 \x20     - name: xml\n        path: {base}/customers.xml\n        record_path: /export/customers/customer\n\
                 \x20     - name: array\n        path: {base}/customers.json\n        columns:\n          - {{name: city, path: address.city}}\n\
                 \x20     - name: bare\n        path: {base}/customers.json\n\
                 \x20     - name: broken\n        path: {base}/customers.xlsx\n        sheet: Broken\n\
                 \x20     - name: several\n        path: {base}/\n        format: xml\n        record_path: /export/customers/customer\n"
            ),
        )
        .model(
            "both.sql",
            "{{ config(materialized='table') }}\nselect s.id, s.name, x.status, a.city from {{ source('web', 'sheet') }} s \
             join {{ source('web', 'xml') }} x on s.id = x.id join {{ source('web', 'array') }} a on s.id = a.id",
        )
        .model(
            "bare.sql",
            "{{ config(materialized='table') }}\nselect id, name, balance from {{ source('web', 'bare') }}",
        )
        .model("broken.sql", "{{ config(materialized='table') }}\nselect * from {{ source('web', 'broken') }}")
        .model("several.sql", "{{ config(materialized='table') }}\nselect * from {{ source('web', 'several') }}");
    let ran = p.run(["run", "-s", "both", "bare"]);
    let broken = p.run(["run", "-s", "broken"]);
    let several = p.run(["run", "-s", "several"]);
    drop(server);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let both = p.query_stages(&["both"], "select id, name, status, city from both order by id").await;
    assert_eq!(
        both,
        [
            "| 1  | Zoë Ärger | active | Zürich |",
            "| 2  | Bob       | closed | Köln   |",
            "| 3  | Chloé     | active |        |"
        ]
    );
    // A bare JSON array, with no key that would tell it from
    // newline-delimited JSON: its first byte does.
    let bare = p.query_stages(&["bare"], "select id, name, balance from bare order by id").await;
    assert_eq!(bare, ["| 1  | Zoë   | 1250.5  |", "| 2  | Bob   | 0.0     |", "| 3  | Chloé | -12.25  |"]);
    assert_eq!(broken.code, Some(1), "{}", broken.stderr);
    assert!(broken.stderr.contains("holds the error #DIV/0!"), "{}", broken.stderr);
    assert!(broken.stderr.contains(&format!("{base}/customers.xlsx")), "{}", broken.stderr);
    assert_eq!(several.code, Some(1), "{}", several.stderr);
    assert!(
        several.stderr.contains(&format!("reads one object from a URL, and `{base}/` names several")),
        "{}",
        several.stderr
    );
}

/// The moto bucket `name` on `port`.
fn bucket(port: u16, name: &str) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_allow_http(true)
        .with_bucket_name(name)
        .with_access_key_id("k")
        .with_secret_access_key("s")
        .with_region("us-east-1")
        .build()
        .unwrap()
}

/// Where stages are in moto on a port: `(port, bucket, prefix)`.
pub(crate) type StageDir<'a> = (u16, &'a str, &'a str);

/// The stage manifest of `model` at `at`.
pub(crate) async fn stored_manifest((port, name, prefix): StageDir<'_>, model: &str) -> Option<serde_json::Value> {
    use object_store::ObjectStoreExt;
    let store = bucket(port, name);
    let path = object_store::path::Path::from(format!("{prefix}/{model}/_ferry_stage.json"));
    let bytes = store.get(&path).await.ok()?.bytes().await.unwrap();
    Some(serde_json::from_slice(&bytes).unwrap())
}

/// Rows of `sql` over the stages at `at` of `models` (each registered
/// under its name), sorted, as `TestProject::query_stages` gives them.
pub(crate) async fn query_stored(at: StageDir<'_>, models: &[&str], sql: &str) -> Vec<String> {
    let ctx = datafusion::prelude::SessionContext::new();
    let (port, name, prefix) = at;
    let url = url::Url::parse(&format!("s3://{name}")).unwrap();
    ctx.register_object_store(&url, std::sync::Arc::new(bucket(port, name)));
    for m in models {
        let manifest = stored_manifest(at, m).await.expect("a stored stage");
        let version = manifest["version"].as_str().expect("a version");
        let files = format!("s3://{name}/{prefix}/{m}/{version}/");
        ctx.register_parquet(*m, &files, Default::default()).await.expect("stage readable");
    }
    crate::common::sorted_rows(&ctx, sql).await
}

/// That the stage of `model` at `at` holds its manifest and the one
/// version it names, with the files it lists and those named `beside`,
/// nothing else.
pub(crate) async fn assert_one_version(at: StageDir<'_>, model: &str, beside: &[&str]) {
    let manifest = stored_manifest(at, model).await.unwrap_or_else(|| panic!("`{model}` has a stage"));
    let version = manifest["version"].as_str().expect("a version");
    let files = manifest["files"].as_array().expect("files").iter().map(|f| f["name"].as_str().expect("a name"));
    let prefix = at.2;
    let mut expected: Vec<String> =
        files.chain(beside.iter().copied()).map(|f| format!("{prefix}/{model}/{version}/{f}")).collect();
    expected.push(format!("{prefix}/{model}/_ferry_stage.json"));
    expected.sort();
    assert_eq!(stored_objects(at, model).await, expected, "`{model}`: nothing but its version");
}

/// The objects under `<model>/` at `at`.
pub(crate) async fn stored_objects((port, name, prefix): StageDir<'_>, model: &str) -> Vec<String> {
    use futures::TryStreamExt;
    let store = bucket(port, name);
    let prefix = object_store::path::Path::from(format!("{prefix}/{model}"));
    let listed: Vec<object_store::ObjectMeta> =
        object_store::ObjectStore::list(&store, Some(&prefix)).try_collect().await.unwrap();
    let mut names: Vec<String> = listed.into_iter().map(|m| m.location.to_string()).collect();
    names.sort();
    names
}

/// The project's stages in an S3 bucket (`stage_dir: s3://...`, moto):
/// the bundled example builds, loads and reconciles from them as from
/// stages on this machine, byte for byte; a model that fails leaves its
/// stage as it was; a change-detected model keeps its row hashes there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_in_an_s3_bucket_build_load_and_reconcile_as_local_ones() {
    let Some((_server, port)) = stages_bucket() else { return };
    let local = TestProject::example().model("marts/later.sql", "select customer_id from {{ ref('customers') }}");
    let ran = local.run(["build"]);
    assert_eq!(ran.code, Some(0), "local: {}\n{}", ran.stdout, ran.stderr);
    let remote = TestProject::example()
        .model("marts/later.sql", "select customer_id from {{ ref('customers') }}")
        .stages_in_moto(port, "stages", "crm");
    let ran = remote.run(["build"]);
    assert_eq!(ran.code, Some(0), "stages in S3: {}\n{}", ran.stdout, ran.stderr);

    // Every stage alike: its schema and rows (a model whose rows come in no
    // set order may write them in another order, so not its bytes).
    let staged = crate::common::stages(&local);
    assert!(staged.len() >= 4, "{staged:?}");
    for model in &staged {
        let here: serde_json::Value =
            serde_json::from_str(&local.read(&format!(".ferry/stage/{model}/_ferry_stage.json"))).unwrap();
        let there = stored_manifest((port, "stages", "crm"), model)
            .await
            .unwrap_or_else(|| panic!("`{model}` is staged in the bucket"));
        for field in ["row_count", "columns"] {
            assert_eq!(here[field], there[field], "`{model}`: {field}");
        }
        let sql = format!("select * from \"{model}\"");
        let rows = query_stored((port, "stages", "crm"), &[model], &sql).await;
        assert_eq!(rows, local.query_stages(&[model], &sql).await, "`{model}`");
    }
    remote.assert_stored_stages_whole(&staged.iter().map(String::as_str).collect::<Vec<_>>()).await;
    // Loaded and reconciled alike: each node's status and rows loaded.
    assert_eq!(crate::common::outcomes(&local), crate::common::outcomes(&remote));
    // `stg_orders` and `stg_accounts`, views both marts read, were computed
    // once into the run's scratch beside the stages, removed as it ended.
    assert_eq!(stored_objects((port, "stages", "crm"), "_ferry_scratch").await, Vec::<String>::new());
    let ran = remote.run(["reconcile"]);
    let said = format!("{}{}", ran.stdout, ran.stderr);
    assert_eq!(ran.code, Some(0), "reconciled from the bucket: {said}");

    // A model that fails while its rows are written keeps the stage it had.
    let before = stored_manifest((port, "stages", "crm"), "later").await.unwrap();
    let objects = stored_objects((port, "stages", "crm"), "later").await;
    let remote = remote.model(
        "marts/later.sql",
        "select cast(concat('x', customer_id) as int) as customer_id from {{ ref('customers') }}",
    );
    let ran = remote.run(["run", "-s", "later"]);
    let said = format!("{}{}", ran.stdout, ran.stderr);
    assert_eq!(ran.code, Some(1), "{said}");
    assert!(said.contains("`later`"), "{said}");
    assert_eq!(stored_manifest((port, "stages", "crm"), "later").await.unwrap(), before);
    assert_eq!(stored_objects((port, "stages", "crm"), "later").await, objects, "no half-written version is left");

    // A change-detected model keeps its row hashes beside the stages.
    let remote = remote.model("marts/later.sql", "select customer_id from {{ ref('customers') }}").model(
        "marts/changed.sql",
        "{{ config(materialized='table', change_detection={'key': ['x']}) }}\nselect 1 as x",
    );
    let ran = remote.run(["run", "-s", "later", "changed"]);
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    let kept = stored_manifest((port, "stages", "crm/_ferry_hashes"), "changed").await.expect("hashes kept");
    assert_eq!(kept["row_count"], 1, "{kept}");
    assert!(!remote.path().join(".ferry/state/hashes").exists(), "no hashes are kept on this machine");
    assert_ne!(
        stored_manifest((port, "stages", "crm"), "later").await.unwrap()["version"],
        before["version"],
        "`later` ran again"
    );
}

/// A `stage_dir` that names no store ferry can write is refused, naming
/// the project file, before anything runs.
#[test]
fn a_stage_dir_ferry_cannot_write_is_named() {
    let p = TestProject::new()
        .file("ferry.yml", "name: shop\nstage_dir: ftp://files.example/stages\n")
        .model("one.sql", "{{ config(materialized='table') }}\nselect 1 as x");
    let ran = p.run(["run"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("`stage_dir: ftp://files.example/stages` cannot hold the stages"), "{}", ran.stderr);
    assert!(ran.stderr.contains("ferry.yml") && ran.stderr.contains("`ftp://`"), "{}", ran.stderr);
    assert!(!p.path().join(".ferry/stage").exists());
}
