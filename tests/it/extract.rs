//! Database sources through connectorx: tables seeded on the real
//! PostgreSQL and MariaDB servers (and a SQLite file), read whole and in key
//! ranges, with NULL partition keys, every common column type, and filters
//! pushed into the database's query.

use crate::common::TestProject;
use crate::load::{Db, ok, project_for};

/// 1,000 rows; every 100th has a NULL `part_key`. Columns of each common
/// family, with NULLs in each on row 7.
pub(crate) async fn seed(db: &mut Db) {
    let s = db.schema().to_owned();
    let sql = match db {
        Db::Pg { .. } => format!(
            "CREATE SCHEMA \"{s}\";
             CREATE TABLE \"{s}\".src (
               id bigint PRIMARY KEY, part_key integer, small smallint, amount numeric(12,2), ratio double precision,
               flag boolean, name text, born date, seen timestamp, raw bytea);
             INSERT INTO \"{s}\".src
             SELECT i, CASE WHEN i % 100 = 0 THEN NULL ELSE i END, (i % 100)::smallint, i * 1.25, i / 8.0,
                    i % 2 = 0, 'name ' || i || ' é', DATE '2020-01-01' + i::int,
                    TIMESTAMP '2020-01-01 00:00:00' + i * INTERVAL '90 minutes', decode(lpad(to_hex(i), 4, '0'), 'hex')
             FROM generate_series(1, 1000) AS i;
             UPDATE \"{s}\".src SET small = NULL, amount = NULL, ratio = NULL, flag = NULL, name = NULL, born = NULL,
                    seen = NULL, raw = NULL WHERE id = 7;"
        ),
        Db::My { .. } => format!(
            "CREATE DATABASE `{s}`;
             CREATE TABLE `{s}`.src (
               id bigint PRIMARY KEY, part_key int, small smallint, amount decimal(12,2), ratio double,
               flag boolean, name text, born date, seen datetime(6), raw varbinary(8));
             INSERT INTO `{s}`.src
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
             SELECT i, CASE WHEN i % 100 = 0 THEN NULL ELSE i END, i % 100, i * 1.25, i / 8.0,
                    i % 2 = 0, CONCAT('name ', i, ' é'), DATE '2020-01-01' + INTERVAL i DAY,
                    TIMESTAMP '2020-01-01 00:00:00' + INTERVAL (i * 90) MINUTE, UNHEX(LPAD(HEX(i), 4, '0'))
             FROM n;
             UPDATE `{s}`.src SET small = NULL, amount = NULL, ratio = NULL, flag = NULL, name = NULL, born = NULL,
                    seen = NULL, raw = NULL WHERE id = 7;"
        ),
        Db::Lite { .. } => "CREATE TABLE src (
               id integer PRIMARY KEY, part_key integer, small integer, amount real, ratio double,
               flag boolean, name text, born date, seen timestamp, raw blob);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
             INSERT INTO src
             SELECT i, CASE WHEN i % 100 = 0 THEN NULL ELSE i END, i % 100, i * 1.25, i / 8.0,
                    i % 2 = 0, 'name ' || i || ' é', date('2020-01-01', '+' || i || ' days'),
                    datetime('2020-01-01 00:00:00', '+' || (i * 90) || ' minutes'), unhex(printf('%04X', i))
             FROM n;
             UPDATE src SET small = NULL, amount = NULL, ratio = NULL, flag = NULL, name = NULL, born = NULL,
                    seen = NULL, raw = NULL WHERE id = 7;"
            .to_owned(),
    };
    if let Db::Lite { path } = db {
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
    }
    db.execute(&sql).await;
}

/// A project reading `src` through `connection: t` (the profile's target)
/// or the URL `via`, with `extra` keys on the source table, and a model
/// summing it.
fn project(db: &Db, extra: &str, via: Option<&str>) -> TestProject {
    // The servers are reached through the profile's target; the SQLite
    // file, seeded outside the project, by URL.
    let (connection, table) = match db {
        Db::Lite { path } => (format!("sqlite://{path}"), "src".to_owned()),
        _ => (via.map_or_else(|| "t".to_owned(), |u| format!("\"{u}\"")), format!("{}.src", db.schema())),
    };
    let mut yml = format!(
        "sources:\n  - name: db\n    tables:\n      - name: src\n        connection: {connection}\n        table: {table}\n"
    );
    for line in extra.lines() {
        yml.push_str(&format!("        {line}\n"));
    }
    project_for(db, None, "")
        .file("models/sources.yml", &yml)
        .model(
            "summary.sql",
            "{{ config(materialized='table', load=false) }}
select count(*) as n, count(part_key) as keyed, count(distinct id) as ids, sum(small) as small,
       sum(amount) as amount, sum(ratio) as ratio, sum(cast(flag as int)) as flags,
       sum(length(name)) as name_chars, min(born) as first_born, max(born) as last_born,
       min(seen) as first_seen, max(seen) as last_seen, sum(length(encode(raw, 'hex'))) as raw_hex
from {{ source('db', 'src') }}",
        )
        .model(
            "counted.sql",
            "{{ config(materialized='table', load=false) }}
select count(*) as n from {{ source('db', 'src') }}",
        )
        .model(
            "some_rows.sql",
            "{{ config(materialized='table', load=false) }}
select * from {{ source('db', 'src') }} where id in (1, 7, 100, 1000)",
        )
}

fn show(p: &TestProject, model: &str) -> Vec<String> {
    let shown = p.run(["show", "-s", model, "--format", "json"]);
    ok(&shown);
    let mut lines: Vec<String> = shown.stdout.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

/// Reads `src` whole and in 3 key ranges plus the NULL-key partition,
/// through the profile's target or the URL `via`; both must give the same
/// rows. Returns the summary and four rows.
async fn extract(db: &mut Db, via: Option<&str>) -> (Vec<String>, Vec<String>) {
    seed(db).await;
    let whole = project(db, "", via);
    ok(&whole.run(["run"]));
    let parts = project(db, "partition_on: part_key\npartitions: 3", via);
    let ran = parts.run(["run", "-vv"]);
    ok(&ran);
    // 3 key ranges and the NULL partition, each its own query.
    assert!(ran.stderr.contains("IS NULL"), "{}", ran.stderr);
    let reader = if matches!(db, Db::Pg { .. }) && via.is_none() { "binary COPY" } else { "connectorx" };
    assert!(ran.stderr.lines().any(|l| l.contains("database scan") && l.contains(reader)), "{}", ran.stderr);
    let summary = show(&whole, "summary");
    assert_eq!(summary, show(&parts, "summary"));
    // No column needed: each partition's query selects a constant (or,
    // with COPY, no column).
    assert_eq!(show(&whole, "counted"), vec![r#"{"n":1000}"#]);
    assert_eq!(show(&parts, "counted"), vec![r#"{"n":1000}"#]);
    let rows = show(&whole, "some_rows");
    assert_eq!(rows, show(&parts, "some_rows"));
    db.drop_schema().await;
    (summary, rows)
}

/// Read with binary COPY, and the same through connectorx (a URL naming
/// one of its protocols).
#[tokio::test]
async fn postgres_tables_read_whole_and_partitioned() {
    let Some(mut db) = Db::pg("extract").await else { return };
    let by_copy = extract(&mut db, None).await;
    let Db::Pg { url, .. } = &db else { unreachable!() };
    let mut cx = url.clone();
    cx.query_pairs_mut().append_pair("sslmode", "disable").append_pair("cxprotocol", "cursor");
    assert_eq!(extract(&mut db, Some(cx.as_str())).await, by_copy);
    let (summary, rows) = by_copy;
    assert_eq!(
        summary,
        vec![
            r#"{"n":1000,"keyed":990,"ids":1000,"small":49493,"amount":625616.25,"ratio":62561.625,"flags":500,"name_chars":9885,"first_born":"2020-01-02","last_born":"2022-09-27","first_seen":"2020-01-01T01:30:00","last_seen":"2020-03-03T12:00:00","raw_hex":3996}"#
        ]
    );
    assert_eq!(
        rows,
        vec![
            r#"{"id":1,"part_key":1,"small":1,"amount":1.25,"ratio":0.125,"flag":false,"name":"name 1 é","born":"2020-01-02","seen":"2020-01-01T01:30:00","raw":"0001"}"#,
            r#"{"id":100,"small":0,"amount":125.00,"ratio":12.5,"flag":true,"name":"name 100 é","born":"2020-04-10","seen":"2020-01-07T06:00:00","raw":"0064"}"#,
            r#"{"id":1000,"small":0,"amount":1250.00,"ratio":125.0,"flag":true,"name":"name 1000 é","born":"2022-09-27","seen":"2020-03-03T12:00:00","raw":"03e8"}"#,
            r#"{"id":7,"part_key":7}"#,
        ]
    );
}

#[tokio::test]
async fn mariadb_tables_read_whole_and_partitioned() {
    let Some(mut db) = Db::mysql("extract").await else { return };
    let (summary, rows) = extract(&mut db, None).await;
    assert_eq!(
        summary,
        vec![
            r#"{"n":1000,"keyed":990,"ids":1000,"small":49493,"amount":625616.25,"ratio":62561.625,"flags":500,"name_chars":9885,"first_born":"2020-01-02","last_born":"2022-09-27","first_seen":"2020-01-01T01:30:00","last_seen":"2020-03-03T12:00:00","raw_hex":3996}"#
        ]
    );
    assert_eq!(
        rows,
        vec![
            r#"{"id":1,"part_key":1,"small":1,"amount":1.25,"ratio":0.125,"flag":0,"name":"name 1 é","born":"2020-01-02","seen":"2020-01-01T01:30:00","raw":"0001"}"#,
            r#"{"id":100,"small":0,"amount":125.00,"ratio":12.5,"flag":1,"name":"name 100 é","born":"2020-04-10","seen":"2020-01-07T06:00:00","raw":"0064"}"#,
            r#"{"id":1000,"small":0,"amount":1250.00,"ratio":125.0,"flag":1,"name":"name 1000 é","born":"2022-09-27","seen":"2020-03-03T12:00:00","raw":"03e8"}"#,
            r#"{"id":7,"part_key":7}"#,
        ]
    );
}

#[tokio::test]
async fn sqlite_tables_read_whole_and_partitioned() {
    let p = TestProject::new();
    let mut db = Db::sqlite(&p);
    let (summary, rows) = extract(&mut db, None).await;
    assert_eq!(
        summary,
        vec![
            r#"{"n":1000,"keyed":990,"ids":1000,"small":49493,"amount":625616.25,"ratio":62561.625,"flags":500,"name_chars":9885,"first_born":"2020-01-02","last_born":"2022-09-27","first_seen":"2020-01-01T01:30:00","last_seen":"2020-03-03T12:00:00","raw_hex":3996}"#
        ]
    );
    assert_eq!(
        rows,
        vec![
            r#"{"id":1,"part_key":1,"small":1,"amount":1.25,"ratio":0.125,"flag":false,"name":"name 1 é","born":"2020-01-02","seen":"2020-01-01T01:30:00","raw":"0001"}"#,
            r#"{"id":100,"small":0,"amount":125.0,"ratio":12.5,"flag":true,"name":"name 100 é","born":"2020-04-10","seen":"2020-01-07T06:00:00","raw":"0064"}"#,
            r#"{"id":1000,"small":0,"amount":1250.0,"ratio":125.0,"flag":true,"name":"name 1000 é","born":"2022-09-27","seen":"2020-03-03T12:00:00","raw":"03e8"}"#,
            r#"{"id":7,"part_key":7}"#,
        ]
    );
}

/// The model's columns and its simple filters reach PostgreSQL's query;
/// a filter the database might evaluate differently stays in DataFusion.
#[tokio::test]
async fn postgres_scans_get_the_columns_and_simple_filters() {
    let Some(mut db) = Db::pg("pushdown").await else { return };
    seed(&mut db).await;
    let p = project(&db, "", None);
    let ran = p.run([
        "show",
        "-vv",
        "--format",
        "json",
        "--inline",
        "select id, name from {{ source('db', 'src') }} where id >= 995 and part_key is not null and name > 'name 997' order by id",
    ]);
    ok(&ran);
    let query = ran.stderr.lines().find(|l| l.contains("database scan")).unwrap_or_default().to_owned();
    assert!(
        query.contains(r#"SELECT \"id\", \"name\", \"part_key\" FROM"#)
            || query.contains(r#"SELECT \"id\", \"part_key\", \"name\" FROM"#)
            || query.contains("SELECT \\\"id\\\""),
        "{query}"
    );
    assert!(query.contains("995"), "{query}");
    assert!(query.contains("IS NOT NULL"), "{query}");
    // Text order depends on collation: not pushed, filtered by DataFusion.
    assert!(!query.contains("name 997"), "{query}");
    // A limit with nothing filtering above the scan reaches each query.
    let limited = p.run([
        "show",
        "-vv",
        "--format",
        "json",
        "--limit",
        "3",
        "--inline",
        "select id from {{ source('db', 'src') }}",
    ]);
    ok(&limited);
    let query = limited.stderr.lines().find(|l| l.contains("database scan")).unwrap_or_default().to_owned();
    assert!(query.contains("LIMIT 3"), "{query}");
    assert_eq!(limited.stdout.lines().count(), 3, "{}", limited.stdout);
    assert_eq!(
        ran.stdout.lines().collect::<Vec<_>>(),
        vec![
            r#"{"id":997,"name":"name 997 é"}"#,
            r#"{"id":998,"name":"name 998 é"}"#,
            r#"{"id":999,"name":"name 999 é"}"#
        ]
    );
    db.drop_schema().await;
}

#[tokio::test]
async fn database_source_errors_name_the_source() {
    let Some(mut db) = Db::pg("cxerrors").await else { return };
    seed(&mut db).await;
    let s = db.schema().to_owned();
    db.execute(&format!("CREATE TABLE \"{s}\".odd (id int, spot point); INSERT INTO \"{s}\".odd VALUES (1, '(1,2)')"))
        .await;
    let p = project_for(&db, None, "").file(
        "models/sources.yml",
        &format!(
            "sources:\n  - name: db\n    tables:\n      - name: odd\n        connection: t\n        table: {s}.odd\n      - name: gone\n        connection: t\n        table: {s}.nope\n      - name: unset\n        connection: env:FERRY_TEST_UNSET_URL\n        table: x\n      - name: stranger\n        connection: elsewhere\n        table: x\n"
        ),
    )
    .model("a.sql", "select * from {{ source('db', 'odd') }}")
    .model("b.sql", "select * from {{ source('db', 'gone') }}")
    .model("c.sql", "select * from {{ source('db', 'unset') }}")
    .model("d.sql", "select * from {{ source('db', 'stranger') }}");
    let ran = p.run(["run"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    let err = &ran.stderr;
    assert!(err.contains("source `db.odd`: column `spot` has the type `point`, which connectorx cannot read"), "{err}");
    assert!(err.contains("select it cast to text in a `query:`"), "{err}");
    assert!(err.contains("source `db.gone`:"), "{err}");
    assert!(err.contains(r#"relation "ferry_cxerrors_"#) && err.contains(r#".nope" does not exist"#), "{err}");
    assert!(err.contains("source `db.unset`: `connection: env:FERRY_TEST_UNSET_URL` names the environment variable `FERRY_TEST_UNSET_URL`, which is not set"), "{err}");
    assert!(
        err.contains("source `db.stranger`: `connection: elsewhere`: target `elsewhere` not found in profile `shop`"),
        "{err}"
    );
    db.drop_schema().await;
}

/// A declared `data_type` on a database source's column wins, as on files:
/// the scan casts to it, a filter on the recast column stays out of the
/// database's query (the database would compare other values), and a value
/// that does not convert is an error naming the column.
#[tokio::test]
async fn postgres_declared_types_are_applied_to_database_columns() {
    let Some(mut db) = Db::pg("declared").await else { return };
    let s = db.schema().to_owned();
    db.execute(&format!(
        "CREATE SCHEMA \"{s}\";
         CREATE TABLE \"{s}\".legacy (id bigint, joined text, score text, amount numeric(8,3));
         INSERT INTO \"{s}\".legacy VALUES (1, '2020-01-31', '10', 1.5), (2, '2021-02-28', '20', 2.25), (3, NULL, NULL, NULL);"
    ))
    .await;
    let sources = format!(
        "sources:\n  - name: db\n    tables:\n      - name: legacy\n        connection: t\n        table: {s}.legacy\n        columns:\n          - {{name: joined, data_type: date}}\n          - {{name: score, data_type: int}}\n"
    );
    let p = project_for(&db, None, "").file("models/sources.yml", &sources).model(
        "typed.sql",
        "{{ config(materialized='table', load=false) }}\nselect id, joined, score, amount from {{ source('db', 'legacy') }} where joined >= date '2021-01-01'",
    );
    let ran = p.run(["run", "-vv"]);
    ok(&ran);
    let query = ran.stderr.lines().find(|l| l.contains("database scan")).unwrap_or_default().to_owned();
    // The date itself, not a year: the random schema name may hold "2021".
    assert!(!query.contains("2021-01-01"), "a filter on a recast column is not pushed: {query}");
    let manifest: serde_json::Value =
        serde_json::from_str(&p.read(".ferry/stage/typed/_ferry_stage.json")).expect("stage manifest");
    let types: Vec<&str> =
        manifest["columns"].as_array().unwrap().iter().map(|c| c["data_type"].as_str().unwrap()).collect();
    assert_eq!(types, ["Int64", "Date32", "Int32", "Decimal128(8, 3)"]);
    assert_eq!(show(&p, "typed"), [r#"{"id":2,"joined":"2021-02-28","score":20,"amount":2.250}"#]);
    // A value that does not convert names the column.
    db.execute(&format!("INSERT INTO \"{s}\".legacy VALUES (4, 'soon', '1', 0)")).await;
    let ran = p.run(["run"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("column `joined` does not convert to Date32"), "{}", ran.stderr);
    db.drop_schema().await;
}

/// Fixed-point columns keep every digit at their declared precision and
/// scale, on either side of the width connectorx decodes exactly (28
/// digits at scale 10): through connectorx (MariaDB) the narrow ones come
/// over as decimals, the wide ones as text, and the query says which;
/// PostgreSQL's COPY reader decodes them all.
async fn decimals_read_exactly(mut db: Db) {
    let s = db.schema().to_owned();
    let (create, schema) = match db {
        Db::Pg { .. } => ("CREATE SCHEMA", format!("\"{s}\"")),
        _ => ("CREATE DATABASE", format!("`{s}`")),
    };
    // n12_2 and n28_10 are decoded; n29_10, n38_10 and n20_12 go as text.
    db.execute(&format!(
        "{create} {schema}; CREATE TABLE {schema}.nums (id int, n12_2 decimal(12,2), n28_10 decimal(28,10), \
           n29_10 decimal(29,10), n38_10 decimal(38,10), n20_12 decimal(20,12));
         INSERT INTO {schema}.nums VALUES
           (1, 9999999999.99, 999999999999999999.9999999999, 9999999999999999999.9999999999,
            9999999999999999999999999999.9999999999, 99999999.999999999999),
           (2, -9999999999.99, -999999999999999999.9999999999, -9999999999999999999.9999999999,
            -9999999999999999999999999999.9999999999, -0.000000000001),
           (3, 0.01, 0.0000000001, 0, 1, NULL);"
    ))
    .await;
    let sources = format!(
        "sources:\n  - name: db\n    tables:\n      - name: nums\n        connection: t\n        table: {s}.nums\n"
    );
    let p = project_for(&db, None, "")
        .file("models/sources.yml", &sources)
        .model("nums.sql", "{{ config(materialized='table', load=false) }}\nselect * from {{ source('db', 'nums') }}");
    let ran = p.run(["run", "-vv"]);
    ok(&ran);
    let query = ran.stderr.lines().find(|l| l.contains("database scan")).unwrap_or_default().to_owned();
    // PostgreSQL's COPY reader decodes every width itself.
    let pg = matches!(db, Db::Pg { .. });
    for (column, as_text) in [("n12_2", false), ("n28_10", false), ("n29_10", !pg), ("n38_10", !pg), ("n20_12", !pg)] {
        // The log prints the queries with Debug escapes: \"n29_10\" or `n29_10`.
        let cast = [format!("CAST(\\\"{column}\\\""), format!("CAST(`{column}`")];
        assert_eq!(cast.iter().any(|c| query.contains(c.as_str())), as_text, "{column}: {query}");
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&p.read(".ferry/stage/nums/_ferry_stage.json")).expect("stage manifest");
    let types: Vec<&str> =
        manifest["columns"].as_array().unwrap().iter().map(|c| c["data_type"].as_str().unwrap()).collect();
    assert_eq!(
        types[1..],
        ["Decimal128(12, 2)", "Decimal128(28, 10)", "Decimal128(29, 10)", "Decimal128(38, 10)", "Decimal128(20, 12)"]
    );
    assert_eq!(
        show(&p, "nums"),
        [
            r#"{"id":1,"n12_2":9999999999.99,"n28_10":999999999999999999.9999999999,"n29_10":9999999999999999999.9999999999,"n38_10":9999999999999999999999999999.9999999999,"n20_12":99999999.999999999999}"#,
            r#"{"id":2,"n12_2":-9999999999.99,"n28_10":-999999999999999999.9999999999,"n29_10":-9999999999999999999.9999999999,"n38_10":-9999999999999999999999999999.9999999999,"n20_12":-0.000000000001}"#,
            r#"{"id":3,"n12_2":0.01,"n28_10":0.0000000001,"n29_10":0.0000000000,"n38_10":1.0000000000}"#,
        ]
    );
    db.drop_schema().await;
}

#[tokio::test]
async fn postgres_decimals_read_exactly_at_every_width() {
    let Some(db) = Db::pg("decimals").await else { return };
    decimals_read_exactly(db).await;
}

#[tokio::test]
async fn mariadb_decimals_read_exactly_at_every_width() {
    let Some(db) = Db::mysql("decimals").await else { return };
    decimals_read_exactly(db).await;
}

/// PostgreSQL sources are read with binary COPY, decoded by ferry; a URL
/// naming a connectorx protocol reads through connectorx. Both give the
/// same Arrow types and values for every column type the COPY reader
/// decodes, at their extremes and NULL; a table with a type it does not
/// decode goes through connectorx; a value no Arrow type holds (a `NaN`
/// numeric) fails the read naming the source, row and column.
#[tokio::test]
async fn postgres_copy_reader_agrees_with_connectorx_on_every_type() {
    let Some(mut db) = Db::pg("copyreader").await else { return };
    let Db::Pg { url, .. } = &db else { unreachable!() };
    let mut cx_url = url.clone();
    cx_url.query_pairs_mut().append_pair("sslmode", "disable").append_pair("cxprotocol", "cursor");
    let s = db.schema().to_owned();
    db.execute(&format!(
        "CREATE SCHEMA \"{s}\";
         CREATE TABLE \"{s}\".every (id int PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, f4 real,
           f8 double precision, n12_2 numeric(12,2), n38_10 numeric(38,10), n9_0 numeric(9,0), t text,
           vc varchar(20), ch char(5), nm name, raw bytea, d date, tm time, ts timestamp, tz timestamptz);
         INSERT INTO \"{s}\".every VALUES
           (1, true, 32767, 2147483647, 9223372036854775807, 1.5, 2.25e300, 1234567890.12,
            1234567890123456789012345678.0123456789, 123456789, 'héllo wörld', 'varying', 'ab', 'a name',
            '\\x00ff10'::bytea, '1999-12-31', '23:59:59.999999', '1970-01-01 00:00:00.000001',
            '2024-02-29 12:00:00+02'),
           (2, false, -32768, -2147483648, -9223372036854775808, -3.25, -1e-300, -0.01,
            -0.0000000001, -1, '', ' spaced ', 'a', '', ''::bytea, '0001-01-01', '00:00:00', '1900-01-01 00:00:00',
            '1960-06-01 00:00:00+00'),
           (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL),
           (4, true, 0, 0, 0, 0, 0, 0, 10000, 10000, 'x', 'y', 'zzzzz', 'n', '\\x00'::bytea, '2000-01-01',
            '12:00:00', '2000-01-01 00:00:00', '2000-01-01 00:00:00+00');
         CREATE TABLE \"{s}\".other (id int, u uuid, j jsonb);
         INSERT INTO \"{s}\".other VALUES (1, '00000000-0000-0000-0000-000000000001', '{{\"a\": 1}}');"
    ))
    .await;
    let table = |name: &str, connection: &str, table: &str| {
        format!("      - name: {name}\n        connection: \"{connection}\"\n        table: {s}.{table}\n")
    };
    let sources = format!(
        "sources:\n  - name: db\n    tables:\n{}{}{}",
        table("copy", "t", "every"),
        table("cx", cx_url.as_str(), "every"),
        table("other", "t", "other")
    );
    let model = |source: &str| {
        format!("{{{{ config(materialized='table', load=false) }}}}\nselect * from {{{{ source('db', '{source}') }}}}")
    };
    let p = project_for(&db, None, "")
        .file("models/sources.yml", &sources)
        .model("by_copy.sql", &model("copy"))
        .model("by_cx.sql", &model("cx"))
        .model("other.sql", &model("other"));
    let ran = p.run(["run", "-vv"]);
    ok(&ran);
    let scans: Vec<&str> = ran.stderr.lines().filter(|l| l.contains("database scan")).collect();
    let by = |table: &str, reader: &str| scans.iter().any(|l| l.contains(table) && l.contains(reader));
    assert!(by("db.copy", "binary COPY"), "{scans:?}");
    assert!(by("db.cx", "connectorx"), "{scans:?}");
    assert!(by("db.other", "connectorx"), "uuid and jsonb go through connectorx: {scans:?}");
    let types = |model: &str| -> Vec<String> {
        let manifest: serde_json::Value =
            serde_json::from_str(&p.read(&format!(".ferry/stage/{model}/_ferry_stage.json"))).expect("manifest");
        manifest["columns"].as_array().unwrap().iter().map(|c| c["data_type"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(types("by_copy"), types("by_cx"));
    let copied = show(&p, "by_copy");
    assert_eq!(copied, show(&p, "by_cx"));
    assert_eq!(copied.len(), 4, "{copied:?}");
    assert!(copied.iter().any(|r| r.contains(r#""n38_10":1234567890123456789012345678.0123456789"#)), "{copied:?}");
    assert!(copied.iter().any(|r| r.contains(r#""tz":"2024-02-29T10:00:00Z""#)), "{copied:?}");
    assert_eq!(show(&p, "other").len(), 1);
    // NaN has no decimal value: the read fails, naming where.
    db.execute(&format!("UPDATE \"{s}\".every SET n12_2 = 'NaN' WHERE id = 2")).await;
    let ran = p.run(["run", "-s", "by_copy"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("source `db.copy`") || ran.stderr.contains("db.copy"), "{}", ran.stderr);
    assert!(ran.stderr.contains("column `n12_2`") && ran.stderr.contains("NaN"), "{}", ran.stderr);
    db.drop_schema().await;
}

/// The COPY reader's connection honours the target's `sslmode`: the
/// server reports whether the very connection that runs the query is
/// encrypted.
#[tokio::test]
async fn postgres_copy_reader_connects_with_the_targets_sslmode() {
    let Some(db) = Db::pg("copytls").await else { return };
    let sources = "sources:\n  - name: db\n    tables:\n      - name: me\n        connection: t\n        query: select ssl from pg_stat_ssl where pid = pg_backend_pid()\n";
    for (mode, encrypted) in [("disable", "false"), ("require", "true"), ("prefer", "true")] {
        let p = project_for(&db, None, &format!("      sslmode: {mode}\n"))
            .file("models/sources.yml", sources)
            .model("m.sql", "{{ config(materialized='table', load=false) }}\nselect ssl from {{ source('db', 'me') }}");
        let ran = p.run(["run", "-vv"]);
        ok(&ran);
        assert!(ran.stderr.lines().any(|l| l.contains("database scan") && l.contains("binary COPY")), "{}", ran.stderr);
        assert_eq!(show(&p, "m"), [format!(r#"{{"ssl":{encrypted}}}"#)], "sslmode {mode}");
    }
}

/// Without the `mssql` feature, a SQL Server source says how to get it.
#[cfg(not(feature = "mssql"))]
#[test]
fn a_sql_server_source_names_the_feature_it_needs() {
    let p = TestProject::new()
        .file("ferry.yml", "name: shop\nprofile: shop\n")
        .file("profiles.yml", "shop:\n  target: t\n  outputs:\n    t:\n      type: sqlite\n      path: x.db\n")
        .file(
            "models/sources.yml",
            "sources:\n  - name: db\n    tables:\n      - name: n\n        connection: \"mssql://sa:pw@127.0.0.1:1433/db\"\n        table: dbo.n\n",
        )
        .model("m.sql", "select * from {{ source('db', 'n') }}");
    let ran = p.run(["run"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("source `db.n`: SQL Server sources are not compiled into this build"),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("--features mssql"), "{}", ran.stderr);
}

/// A database source that cannot be reached, or that refuses the login, is
/// one prompt diagnostic naming the server and user, never the password,
/// with no log lines from the connection pool's retries.
#[tokio::test]
async fn unreachable_and_refused_database_sources_are_one_clear_error() {
    let (Some(Db::Pg { url: pg, .. }), Some(Db::My { url: my, .. })) =
        (Db::pg("refused").await, Db::mysql("refused").await)
    else {
        return;
    };
    let mut nowhere = pg.clone();
    nowhere.set_port(Some(1)).unwrap();
    let _ = nowhere.set_password(Some("hunter2-secret"));
    let mut no_db = pg.clone();
    no_db.set_path("/ferry_no_such_database");
    let mut wrong_password = my.clone();
    let _ = wrong_password.set_password(Some("hunter2-secret"));
    let p = TestProject::new()
        .file(
            "models/sources.yml",
            "sources:\n  - name: db\n    tables:\n      - {name: nowhere, connection: 'env:NOWHERE', table: x}\n      - {name: no_db, connection: 'env:NO_DB', table: x}\n      - {name: wrong_password, connection: 'env:WRONG_PASSWORD', table: x}\n",
        )
        .model("a.sql", "select * from {{ source('db', 'nowhere') }}")
        .model("b.sql", "select * from {{ source('db', 'no_db') }}")
        .model("c.sql", "select * from {{ source('db', 'wrong_password') }}");
    let out = p
        .ferry(["run"])
        .env("NOWHERE", nowhere.as_str())
        .env("NO_DB", no_db.as_str())
        .env("WRONG_PASSWORD", wrong_password.as_str())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let host = pg.host_str().unwrap();
    assert!(
        err.contains(&format!("source `db.nowhere`: cannot connect to PostgreSQL at {host}:1 as `{}`", pg.username())),
        "{err}"
    );
    assert!(
        err.contains("source `db.no_db`: PostgreSQL at")
            && err.contains("refused the login: database \"ferry_no_such_database\" does not exist"),
        "{err}"
    );
    assert!(
        err.contains("source `db.wrong_password`: MySQL at") && err.contains("refused the login: Access denied"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    assert!(!err.contains('\u{1b}') && !err.contains(" ERROR "), "{err}");
}
