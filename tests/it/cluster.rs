//! The same projects on a Ballista cluster (a scheduler and two executors
//! in this test process, over loopback) as in one process: every stage,
//! ledger, error log and data-test result alike.

use std::path::Path;

use serde_json::Value as Json;

use crate::common::TestProject;

/// A scheduler and 2 executors of 2 tasks each, in this process, with the
/// runtime that serves them.
fn cluster() -> (tokio::runtime::Runtime, ferry::engine::cluster::LocalCluster) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    let cluster = runtime.block_on(ferry::engine::cluster::LocalCluster::start(2, 2)).expect("the cluster starts");
    (runtime, cluster)
}

/// The rows of every Parquet file under `dir` (an error log, a
/// quarantine), sorted.
async fn rows_under(dir: &Path) -> Vec<String> {
    let mut all = Vec::new();
    if !dir.exists() {
        return all;
    }
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.unwrap();
        if entry.path().extension().is_some_and(|e| e == "parquet") {
            let ctx = datafusion::prelude::SessionContext::new();
            let df = ctx.read_parquet(entry.path().to_str().unwrap(), Default::default()).await.unwrap();
            let batches = df.collect().await.unwrap();
            let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
            let name = entry.path().strip_prefix(dir).unwrap().display().to_string();
            let mut lines: Vec<String> =
                text.lines().filter(|l| l.starts_with('|')).map(|l| format!("{name} {l}")).collect();
            lines.sort();
            all.extend(lines);
        }
    }
    all
}

/// Builds `make()` locally and on `url`, and checks the two alike.
async fn alike_on_the_cluster(make: impl Fn() -> TestProject, url: &str) {
    let local = make();
    let ran = local.run(["build"]);
    assert_eq!(ran.code, Some(0), "local: {}\n{}", ran.stdout, ran.stderr);
    let remote = make();
    let ran = remote.run(["build", "--cluster", url]);
    assert_eq!(ran.code, Some(0), "cluster: {}\n{}", ran.stdout, ran.stderr);
    let said = format!("{}{}", ran.stdout, ran.stderr);
    assert!(said.contains(&format!("the models ran on the cluster {url}")), "{said}");
    assert_eq!(crate::common::outcomes(&local), crate::common::outcomes(&remote));
    assert_eq!(crate::common::stages(&local), crate::common::stages(&remote));
    for stage in crate::common::stages(&local) {
        let sql = format!("select * from \"{stage}\"");
        let here = local.query_stages(&[&stage], &sql).await;
        assert_eq!(here, remote.query_stages(&[&stage], &sql).await, "stage `{stage}`");
    }
    let run_dir = |p: &TestProject| {
        let runs: Vec<_> = fs_err::read_dir(p.path().join(".ferry/runs")).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(runs.len(), 1, "{runs:?}");
        runs[0].clone()
    };
    for sub in ["errors", "quarantine"] {
        // Each row names its run.
        let rows = |dir: std::path::PathBuf| async move {
            let id = dir.file_name().unwrap().to_string_lossy().into_owned();
            rows_under(&dir.join(sub)).await.into_iter().map(|l| l.replace(&id, "<run>")).collect::<Vec<_>>()
        };
        assert_eq!(rows(run_dir(&local)).await, rows(run_dir(&remote)).await, "{sub}");
    }
}

#[test]
fn the_example_jaffle_shop_and_w1_build_alike_on_a_cluster() {
    let (runtime, cluster) = cluster();
    let url = cluster.address.to_string();
    let w1 = || {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let p = TestProject::new();
        crate::common::copy_dir(&root.join("benches/w1"), p.path().as_std_path());
        fs_err::create_dir_all(p.path().join("data")).unwrap();
        fs_err::copy(root.join("tests/fixtures/data/lineitem_dirty.csv"), p.path().join("data/lineitem_dirty.csv"))
            .unwrap();
        p
    };
    runtime.block_on(async {
        alike_on_the_cluster(TestProject::example, &url).await;
        alike_on_the_cluster(|| TestProject::fixture("jaffle_shop"), &url).await;
        alike_on_the_cluster(w1, &url).await;
    });
    drop(cluster);
}

#[test]
fn an_unreachable_cluster_is_named() {
    let p = TestProject::example();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ran = p.run(["build", "--cluster", &format!("df://127.0.0.1:{port}")]);
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(ran.stderr.contains("cannot be reached"), "{}", ran.stderr);
    assert!(ran.stderr.contains(&format!("df://127.0.0.1:{port}")), "{}", ran.stderr);
    let ran = p.run(["build", "--cluster", "http://127.0.0.1:1"]);
    assert!(ran.stderr.contains("not `df://`"), "{}", ran.stderr);
    // `executor:` in ferry.yml names the cluster; `--cluster local` runs here all the same.
    let yml = p.path().join("ferry.yml");
    let text = fs_err::read_to_string(&yml).unwrap();
    fs_err::write(&yml, format!("{text}\nexecutor: df://127.0.0.1:{port}\n")).unwrap();
    let ran = p.run(["build"]);
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(ran.stderr.contains(&format!("df://127.0.0.1:{port}")), "{}", ran.stderr);
    let ran = p.run(["build", "--cluster", "local"]);
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(!ran.stdout.contains("ran on the cluster") && !ran.stderr.contains("ran on the cluster"));
}

/// A scheduler that takes connections but answers nothing (as Ballista's
/// can, stuck, when it loses an executor just as a job comes in): each
/// model fails after the URL's `start_timeout`, saying so, its children are
/// skipped, and no model's stage is committed.
#[test]
fn a_job_the_scheduler_does_not_take_fails_after_the_start_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    let p = TestProject::example();
    let url = format!("df://127.0.0.1:{port}?start_timeout=3s");
    let began = std::time::Instant::now();
    let ran = p.run(["build", "--cluster", &url]);
    assert_eq!(ran.code, Some(1), "{}\n{}", ran.stdout, ran.stderr);
    assert!(began.elapsed() < std::time::Duration::from_secs(90), "the run waited {:?}", began.elapsed());
    let said = format!("{}{}", ran.stdout, ran.stderr);
    assert!(said.contains(&format!("the scheduler at {url} had not taken its job within 3s")), "{said}");
    assert!(said.contains("`start_timeout`") && said.contains("skipped"), "{said}");
    let committed = p.path().join(".ferry/stage");
    let stages = if committed.exists() { crate::common::stages(&p) } else { Vec::new() };
    assert!(stages.iter().all(|s| s.starts_with("raw_") || s.starts_with("seed")), "{stages:?}");
}

/// Sources the cluster cannot read itself (ferry's own readers: an Excel
/// sheet, a JSON array with nested paths) are read by ferry, staged for the
/// cluster, and named; the stages equal the local run's.
#[test]
fn sources_only_ferry_reads_are_staged_for_the_cluster_and_named() {
    let (runtime, cluster) = cluster();
    let url = cluster.address.to_string();
    let make = || {
        let yml = "sources:\n  - name: legacy\n    tables:\n\
            \x20     - name: xlsx\n        path: data/customers.xlsx\n        sheet: Customers\n        header_row: 3\n\
            \x20     - name: nested\n        path: data/customers.json\n        columns:\n\
            \x20         - name: city\n            path: address.city\n";
        let p = TestProject::new()
            .file("models/sources.yml", yml)
            .model("from_excel.sql", "{{ config(materialized='table') }}\nselect * from {{ source('legacy', 'xlsx') }}")
            .model(
                "cities.sql",
                "{{ config(materialized='table') }}\nselect city, count(*) as n from {{ source('legacy', 'nested') }} group by city",
            );
        crate::common::copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy"),
            p.path().join("data").as_std_path(),
        );
        p
    };
    runtime.block_on(alike_on_the_cluster(make, &url));
    // This time each shuffle on the cluster has 3 partitions.
    let url = format!("{url}?partitions=3");
    let p = make();
    let ran = p.run(["run", "--cluster", &url]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let said = format!("{}{}", ran.stdout, ran.stderr);
    assert!(said.contains(&format!("the models ran on the cluster {url}")), "{said}");
    assert!(said.contains("read here and staged for it"), "{said}");
    assert!(said.contains("`legacy.xlsx`") && said.contains("`legacy.nested`"), "{said}");
    // Each model's line says how its query ran there, and the run's record
    // keeps its jobs: stages, tasks, and the executors that hold the result.
    for model in ["from_excel", "cities"] {
        let line = said.lines().find(|l| l.contains(&format!(" {model} "))).unwrap_or_else(|| panic!("{said}"));
        assert!(line.contains("on the cluster: ") && line.contains("the result from 127.0.0.1:"), "{line}");
    }
    let jobs = cluster_jobs(&p);
    let staged_rows = |m: &str| {
        let manifest: Json = serde_json::from_str(&p.read(&format!(".ferry/stage/{m}/_ferry_stage.json"))).unwrap();
        manifest["row_count"].as_u64().unwrap()
    };
    let loopback = |a: &str| a.starts_with("127.0.0.1:");
    jobs_of(&jobs, "from_excel", Some(staged_rows("from_excel")), loopback);
    let cities = jobs_of(&jobs, "cities", Some(staged_rows("cities")), loopback);
    let stages = cities[0]["stages"].as_array().unwrap();
    assert!(stages.len() >= 2, "a grouping shuffles: {:#}", cities[0]);
    assert!(stages.iter().any(|s| s["tasks"] == 3), "into 3 partitions: {:#}", cities[0]);
    // The sign-off report says where the run ran, and what ferry read.
    let reported = p.run(["report"]);
    assert_eq!(reported.code, Some(0), "{}", reported.stderr);
    let runs: Vec<_> = fs_err::read_dir(p.path().join(".ferry/runs")).unwrap().map(|e| e.unwrap().path()).collect();
    let html = fs_err::read_to_string(runs[0].join("report.html")).unwrap();
    let shown = url.replace('/', "&#x2f;");
    assert!(html.contains(&format!("the Ballista cluster {shown}")), "{html}");
    assert!(html.contains("<code>legacy.xlsx</code>") && html.contains("<code>legacy.nested</code>"));
    let table = html.split("id=\"cluster-jobs\"").nth(1).unwrap_or_else(|| panic!("no jobs table: {html}"));
    let table = table.split("</table>").next().unwrap();
    assert!(table.contains("<code>from_excel</code>") && table.contains("<code>cities</code>"), "{table}");
    assert!(table.contains(&format!("<code>{}</code>", jobs[0]["job_id"].as_str().unwrap())), "{table}");
    // What was staged for the cluster goes with the run.
    let left: Vec<_> = walkdir::WalkDir::new(p.path().join(".ferry/tmp"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().display().to_string())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    drop(cluster);
}

/// The cluster's jobs that `p`'s only run recorded in its `run.json`.
fn cluster_jobs(p: &TestProject) -> Vec<Json> {
    let runs: Vec<_> = fs_err::read_dir(p.path().join(".ferry/runs")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let record: Json = serde_json::from_str(&fs_err::read_to_string(runs[0].join("run.json")).unwrap()).unwrap();
    record["cluster"]["jobs"].as_array().cloned().unwrap_or_default()
}

/// The jobs of `node` among `jobs`, each checked whole: stages with tasks,
/// and executors (their addresses passing `at`) holding as many result rows
/// as the node staged, when `rows` is given.
fn jobs_of<'j>(jobs: &'j [Json], node: &str, rows: Option<u64>, at: impl Fn(&str) -> bool) -> Vec<&'j Json> {
    let mine: Vec<&Json> = jobs.iter().filter(|j| j["node"] == node).collect();
    assert!(!mine.is_empty(), "no job of `{node}` in {jobs:#?}");
    for job in &mine {
        let stages = job["stages"].as_array().unwrap();
        assert!(!stages.is_empty() && stages.iter().all(|s| s["tasks"].as_u64().unwrap() >= 1), "{job:#}");
        let executors = job["executors"].as_array().unwrap();
        assert!(!executors.is_empty(), "{job:#}");
        for e in executors {
            assert!(at(e["address"].as_str().unwrap()), "{job:#}");
        }
    }
    if let Some(rows) = rows {
        let fetched: u64 =
            mine.iter().flat_map(|j| j["executors"].as_array().unwrap()).map(|e| e["rows"].as_u64().unwrap()).sum();
        assert_eq!(fetched, rows, "`{node}`'s result rows on the executors: {mine:#?}");
    }
    mine
}

/// Runs `command` to its end, or fails the test after two minutes with
/// what it logged: a run on the cluster must end, whatever the cluster does.
fn within_two_minutes(command: &mut std::process::Command) -> std::process::Output {
    within_two_minutes_doing(command, |_| {})
}

/// [`within_two_minutes`], doing `meanwhile` once the command has started,
/// with a look at what it has logged so far.
fn within_two_minutes_doing(
    command: &mut std::process::Command,
    meanwhile: impl FnOnce(&dyn Fn() -> String),
) -> std::process::Output {
    use std::io::Read;
    use std::process::Stdio;
    use std::sync::{Arc, Mutex};
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let drain = |mut pipe: Box<dyn Read + Send>| {
        let all = Arc::new(Mutex::new(Vec::new()));
        let filled = Arc::clone(&all);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                filled.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        (all, reader)
    };
    let (stdout, out_reader) = drain(Box::new(child.stdout.take().unwrap()));
    let (stderr, err_reader) = drain(Box::new(child.stderr.take().unwrap()));
    let logged = || String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
    meanwhile(&logged);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let began = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            eprintln!("ferry ran for {:?}", began.elapsed());
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = logged();
            let tail: Vec<&str> = err.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect();
            panic!("the run did not end in two minutes; it logged, last:\n{}", tail.join("\n"));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let _ = (out_reader.join(), err_reader.join());
    let take = |v: Arc<Mutex<Vec<u8>>>| std::mem::take(&mut *v.lock().unwrap());
    std::process::Output { status, stdout: take(stdout), stderr: take(stderr) }
}

/// `ferry cluster scheduler` and two `ferry cluster executor` processes on
/// loopback ports, reading an `s3://` source (moto's S3 server) themselves,
/// with the stages in the same store (`stage_dir: s3://lake/stages`, read
/// by the executors for the model that joins the other): a run equals the
/// local run; a run that loses an executor midway either
/// finishes with the same stages or fails, naming the cause, and leaves
/// every earlier stage as it was; the next run, on the executor left,
/// equals the local run again.
#[test]
fn ferry_cluster_processes_read_s3_and_a_lost_executor_loses_no_stage() {
    use crate::object_stores::{Server, free_port, moto, query_stored, start, stored_manifest, stored_objects, tools};
    use std::process::Stdio;
    let Some(tools) = tools() else { return };
    // Four files of 50,000 rows: tasks enough to spread over both executors.
    let (_moto, s3) = moto(
        &tools,
        "s3.create_bucket(Bucket='lake')\n\
         for part in range(4):\n\
         \x20   rows = ''.join(f'{i},{i % 97},{(i * 7919) % 10007}\\n' for i in range(part * 50000, (part + 1) * 50000))\n\
         \x20   s3.put_object(Bucket='lake', Key=f'orders/part-{part}.csv', Body=('id,customer,amount\\n' + rows).encode())\n",
    );
    let env = crate::object_stores::s3_env(s3);
    let process = |args: &[String], port: u16| {
        let mut command = crate::common::ferry_command();
        command.args(args).envs(env.clone()).stdout(Stdio::null()).stderr(Stdio::null());
        start(&mut command, port)
    };
    let scheduler = free_port();
    let _scheduler = process(
        &["cluster", "scheduler", "--bind", &format!("127.0.0.1:{scheduler}"), "--executor-timeout", "10s"]
            .map(str::to_owned),
        scheduler,
    );
    let flights = [free_port(), free_port()];
    let mut executors: Vec<Server> = flights
        .iter()
        .map(|&flight| {
            let grpc = free_port();
            let args = [
                "cluster".to_owned(),
                "executor".to_owned(),
                "--scheduler".to_owned(),
                format!("127.0.0.1:{scheduler}"),
                "--bind".to_owned(),
                format!("127.0.0.1:{flight}"),
                "--grpc-port".to_owned(),
                grpc.to_string(),
                "--concurrent-tasks".to_owned(),
                "1".to_owned(),
            ];
            process(&args, flight)
        })
        .collect();
    let url = format!("df://127.0.0.1:{scheduler}");
    // And a JSON file of nested records, which ferry reads for the cluster.
    let project = || {
        let p = TestProject::new()
            .file(
                "models/sources.yml",
                "sources:\n  - name: lake\n    tables:\n      - name: orders\n        path: s3://lake/orders/\n        format: csv\n\
                 \x20 - name: legacy\n    tables:\n      - name: nested\n        path: data/customers.json\n        columns:\n\
                 \x20         - name: city\n            path: address.city\n",
            )
            .model(
                "cities.sql",
                "{{ config(materialized='table') }}\nselect city, count(*) as n from {{ source('legacy', 'nested') }} group by city",
            )
            .model(
                "by_customer.sql",
                "{{ config(materialized='table') }}\nselect customer, count(*) as n, sum(amount) as total from {{ source('lake', 'orders') }} group by customer",
            )
            .model(
                "ranked.sql",
                "{{ config(materialized='table') }}\nselect o.id, o.customer, o.amount, rank() over (partition by o.customer order by o.amount desc, o.id) as r, c.total \
                 from {{ source('lake', 'orders') }} o join {{ ref('by_customer') }} c on c.customer = o.customer",
            )
            .model(
                "grown.sql",
                "{{ config(materialized='incremental', unique_key='customer') }}\nselect customer, n, total from {{ ref('by_customer') }}\n\
                 {% if is_incremental() %}where total >= (select avg(total) from {{ this }}){% endif %}",
            )
            .model(
                "tracked.sql",
                "{{ config(materialized='table', change_detection={'key': ['customer']}) }}\nselect customer, n from {{ ref('by_customer') }}",
            );
        let legacy = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy/customers.json");
        fs_err::create_dir_all(p.path().join("data")).unwrap();
        fs_err::copy(legacy, p.path().join("data/customers.json")).unwrap();
        p
    };
    const STAGES: [&str; 2] = ["by_customer", "ranked"];
    async fn local_rows(p: &TestProject) -> Vec<String> {
        let mut all = Vec::new();
        for stage in STAGES {
            all.extend(p.query_stages(&[stage], &format!("select * from {stage}")).await);
        }
        all
    }
    let at = (s3, "lake", "stages");
    let rows = || async move {
        let mut all = Vec::new();
        for stage in STAGES {
            all.extend(query_stored(at, &[stage], &format!("select * from {stage}")).await);
        }
        all
    };
    // What a run committed, by stage.
    let stage_manifests = || async move {
        let mut all = Vec::new();
        for stage in STAGES {
            all.push((stage.to_owned(), stored_manifest(at, stage).await.expect("a stored stage")));
        }
        all
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let local = project();
    let ran = local.ferry(["run"]).envs(env.clone()).output().unwrap();
    assert!(ran.status.success(), "{}", String::from_utf8_lossy(&ran.stderr));
    let expected = runtime.block_on(local_rows(&local));
    assert_eq!(expected.len(), 97 + 200_000);

    let p = project().stages_in_moto(s3, "lake", "stages");
    let ran = within_two_minutes(p.ferry(["run", "--cluster", &url]).envs(env.clone()).env("RUST_LOG", "info"));
    assert!(ran.status.success(), "{}", String::from_utf8_lossy(&ran.stderr));
    assert_eq!(runtime.block_on(rows()), expected);
    assert!(!p.path().join(".ferry/stage").exists(), "nothing is staged on this machine");
    // The nested JSON was read here and copied beside the stages for the
    // cluster, the copy removed with the run.
    let said = String::from_utf8_lossy(&ran.stderr);
    assert!(said.contains("`legacy.nested` is read by ferry on this machine and staged for the cluster"), "{said}");
    let sql = "select * from cities";
    let cities = runtime.block_on(query_stored(at, &["cities"], sql));
    assert_eq!(cities, runtime.block_on(local.query_stages(&["cities"], sql)));
    assert_eq!(runtime.block_on(stored_objects(at, "_ferry_scratch")), Vec::<String>::new());
    let committed = runtime.block_on(stage_manifests());
    // Each model's job ran as stages of tasks, its result on these executors.
    let ours = |a: &str| flights.iter().any(|f| a == format!("127.0.0.1:{f}"));
    let jobs = cluster_jobs(&p);
    let by_customer = jobs_of(&jobs, "by_customer", Some(97), ours);
    let tasks: u64 = by_customer[0]["stages"].as_array().unwrap().iter().map(|s| s["tasks"].as_u64().unwrap()).sum();
    assert!(tasks >= 3, "a scan and a grouping stage, one of them in parallel: {:#}", by_customer[0]);
    jobs_of(&jobs, "ranked", Some(200_000), ours);

    // An incremental model run again merges its increment on the cluster
    // into a version of its stage pending in the store, which becomes the
    // stage: the rows of the local full build, and nothing else kept. A
    // change-detected model run again joins its extract on the cluster with
    // the row hashes kept in the store, and finds nothing changed.
    let grown = "select * from grown";
    let built = runtime.block_on(local.query_stages(&["grown"], grown));
    assert_eq!(built.len(), 97);
    assert_eq!(runtime.block_on(query_stored(at, &["grown"], grown)), built);
    let ran = within_two_minutes(p.ferry(["run", "-s", "grown", "tracked", "--cluster", &url]).envs(env.clone()));
    let said = format!("{}{}", String::from_utf8_lossy(&ran.stdout), String::from_utf8_lossy(&ran.stderr));
    assert!(ran.status.success(), "{said}");
    assert!(said.contains(&format!("the models ran on the cluster {url}")), "{said}");
    let results = p.run_results();
    let record = &crate::common::node_result(&results, "model.shop.grown").expect("grown ran")["incremental"];
    assert_eq!((record["run"].as_str(), record["committed"].as_bool()), (Some("incremental"), Some(true)), "{record}");
    assert!(record["rows"].as_u64().is_some_and(|n| n > 0 && n < 97), "an increment of some rows: {record}");
    assert_eq!(runtime.block_on(query_stored(at, &["grown"], grown)), built);
    runtime.block_on(p.assert_stored_stages_whole(&["by_customer", "ranked", "grown"]));
    let tracked = &crate::common::node_result(&results, "model.shop.tracked").expect("tracked ran")["changes"];
    assert_eq!((tracked["run"].as_str(), tracked["unchanged"].as_u64()), (Some("changes"), Some(97)), "{tracked}");
    assert!(runtime.block_on(stored_manifest((s3, "lake", "stages/_ferry_hashes"), "tracked")).is_some());
    assert!(!p.path().join(".ferry/state/hashes").exists(), "no row hashes are kept on this machine");

    // Lose an executor while the client submits the first job: Ballista's
    // scheduler can then leave the job unstarted (seen here, 5 runs in 12),
    // which ferry gives up on after the URL's `start_timeout`.
    let patient = format!("{url}?start_timeout=20s");
    let mut command = p.ferry(["run", "--cluster", &patient]);
    command.envs(env.clone()).env("RUST_LOG", "info");
    let out = within_two_minutes_doing(&mut command, |logged| {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !logged().contains("submitted to the cluster") && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        drop(executors.remove(0));
    });
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("the run that lost an executor: {}\n{err}", out.status);
    if out.status.success() {
        assert_eq!(runtime.block_on(rows()), expected, "a run that finished has the right rows");
    } else {
        // Each model that finished committed its stage, with the right
        // rows; the one that failed says why, and kept its earlier stage.
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("failed while running") && err.contains("executor"), "{err}");
        let results = p.run_results();
        let now = runtime.block_on(stage_manifests());
        for (stage, manifest) in &committed {
            let status =
                crate::common::node_result(&results, &format!("model.shop.{stage}")).unwrap()["status"].clone();
            let kept = now.iter().find(|(s, _)| s == stage).map(|(_, m)| m);
            if status == "success" {
                let sql = format!("select * from {stage}");
                let here = runtime.block_on(query_stored(at, &[stage], &sql));
                assert_eq!(here, runtime.block_on(local.query_stages(&[stage], &sql)), "{stage}");
            } else {
                assert_eq!(kept, Some(manifest), "`{stage}` ({status}) kept its stage: {err}");
            }
        }
    }

    // The executor left runs the next one, once the scheduler has taken
    // the other for lost (`--executor-timeout 10s`, checked every 15 s):
    // a job submitted before that can wait on the lost executor.
    std::thread::sleep(std::time::Duration::from_secs(26));
    let ran = within_two_minutes(p.ferry(["run", "--cluster", &url]).envs(env).env("RUST_LOG", "info"));
    assert!(ran.status.success(), "{}", String::from_utf8_lossy(&ran.stderr));
    assert_eq!(runtime.block_on(rows()), expected);
    drop(executors);
}
