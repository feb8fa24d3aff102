//! dbt packages and macros: `ferry deps` with local and git packages,
//! namespaced macros, `adapter.dispatch` with a project override, package
//! generic tests, and dbt's cross-database macros against PostgreSQL.

use std::process::Command;

use crate::common::TestProject;
use crate::load::Db;

fn git(dir: &camino::Utf8Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A git repository holding a package `tools` in `pkg/` (a subdirectory):
/// a dispatched macro and a generic test. Returns the repo and the commit.
fn tools_repo(dir: &camino::Utf8Path, greeting: &str) -> String {
    let pkg = dir.join("pkg");
    std::fs::create_dir_all(pkg.join("macros")).unwrap();
    std::fs::write(pkg.join("dbt_project.yml"), "name: tools\nversion: '1.0'\nconfig-version: 2\n").unwrap();
    std::fs::write(
        pkg.join("macros/tools.sql"),
        format!(
            "{{% macro greet(x) %}}{{{{ return(adapter.dispatch('greet', 'tools')(x)) }}}}{{% endmacro %}}\n\
             {{% macro default__greet(x) %}}'{greeting} ' || {{{{ x }}}}{{% endmacro %}}\n\
             {{% macro shout(x) %}}{{{{ return(adapter.dispatch('shout', 'tools')(x)) }}}}{{% endmacro %}}\n\
             {{% macro default__shout(x) %}}upper({{{{ x }}}}){{% endmacro %}}\n\
             {{% test is_positive(model, column_name) %}}select * from {{{{ model }}}} where {{{{ column_name }}}} <= 0{{% endtest %}}\n"
        ),
    )
    .unwrap();
    if !dir.join(".git").exists() {
        git(dir, &["init", "--quiet", "--initial-branch=main"]);
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "--quiet", "-m", greeting]);
    git(dir, &["rev-parse", "HEAD"])
}

#[test]
fn deps_installs_git_and_local_packages_and_models_call_them() {
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = camino::Utf8Path::from_path(repo_dir.path()).unwrap().to_owned();
    let first = tools_repo(&repo, "hello");
    let local_dir = tempfile::tempdir().unwrap();
    let local = camino::Utf8Path::from_path(local_dir.path()).unwrap();
    std::fs::create_dir_all(local.join("macros")).unwrap();
    std::fs::write(local.join("dbt_project.yml"), "name: helpers\n").unwrap();
    std::fs::write(local.join("macros/h.sql"), "{% macro twice(x) %}({{ x }} * 2){% endmacro %}\n").unwrap();

    let p = TestProject::new()
        .file("ferry.yml", "name: shop\ndispatch:\n  - macro_namespace: tools\n    search_order: [shop, tools]\n")
        .file(
            "packages.yml",
            &format!(
                "packages:\n  - git: \"{{{{ env_var('FERRY_TEST_TOOLS_REPO') }}}}\"\n    revision: main\n    subdirectory: pkg\n  - local: {local}\n"
            ),
        )
        // The project overrides one of the package's dispatched macros.
        .file("macros/over.sql", "{% macro ferry__shout(x) %}lower({{ x }}){% endmacro %}\n")
        .model(
            "greetings.sql",
            "{{ config(materialized='table') }}\nselect id, {{ tools.greet('name') }} as greeting, {{ tools.shout('name') }} as quiet, {{ helpers.twice('id') }} as doubled\nfrom (values (1, 'Ada'), (2, 'Bo')) as t(id, name)\n",
        )
        .file(
            "models/schema.yml",
            "models:\n  - name: greetings\n    columns:\n      - name: id\n        data_tests: [tools.is_positive]\n      - name: doubled\n        data_tests: [is_positive]\n",
        );

    // Before `ferry deps`, the namespace is unknown.
    let before = p.run(["compile"]);
    assert_eq!(before.code, Some(1), "{}", before.stderr);

    let deps = p.ferry(["deps"]).env("FERRY_TEST_TOOLS_REPO", repo.as_str()).output().unwrap();
    let stderr = String::from_utf8_lossy(&deps.stderr);
    assert_eq!(deps.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(&format!("installed tools from {repo} at {}", &first[..10])), "{stderr}");
    assert!(stderr.contains("installed helpers from"), "{stderr}");
    let lock = p.read("package-lock.yml");
    assert!(lock.contains(&first), "{lock}");
    assert!(p.path().join("dbt_packages/tools/macros/tools.sql").is_file());
    assert!(p.path().join("dbt_packages/helpers/macros/h.sql").is_file());

    let ran = p.run(["build", "--no-load"]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    let rows = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(p.query_stages(&["greetings"], "select id, greeting, quiet, doubled from greetings"));
    assert_eq!(
        rows,
        vec!["| 1  | hello Ada | ada   | 2       |".to_owned(), "| 2  | hello Bo  | bo    | 4       |".to_owned()]
    );
    let results = p.run_results().to_string();
    for test in ["test.shop.tools_is_positive_greetings_id", "test.shop.is_positive_greetings_doubled"] {
        let r = crate::common::node_result(&p.run_results(), test).cloned();
        assert_eq!(r.as_ref().and_then(|r| r["status"].as_str()), Some("pass"), "{test}: {results}");
    }

    // A new commit on the branch: the lock keeps the pinned commit until --upgrade.
    let second = tools_repo(&repo, "hi");
    let again = p.ferry(["deps"]).env("FERRY_TEST_TOOLS_REPO", repo.as_str()).output().unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(p.read("package-lock.yml").contains(&first));
    let upgraded = p.ferry(["deps", "--upgrade"]).env("FERRY_TEST_TOOLS_REPO", repo.as_str()).output().unwrap();
    assert_eq!(upgraded.status.code(), Some(0), "{}", String::from_utf8_lossy(&upgraded.stderr));
    assert!(p.read("package-lock.yml").contains(&second));
    let ran = p.run(["run"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let rows = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(p.query_stages(&["greetings"], "select greeting from greetings"));
    assert_eq!(rows, vec!["| hi Ada   |".to_owned(), "| hi Bo    |".to_owned()]);

    // A package ferry cannot fetch is a clear error, and the installed
    // packages stay as they were.
    let p = p.file("packages.yml", "packages:\n  - package: dbt-labs/dbt_utils\n    version: 1.3.0\n");
    let refused = p.ferry(["deps"]).env("DBT_PACKAGE_HUB_URL", "http://127.0.0.1:9").output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "hub package `dbt-labs/dbt_utils`: package `dbt-labs/dbt_utils` is not on the hub at http://127.0.0.1:9"
        ),
        "{stderr}"
    );
    assert!(p.path().join("dbt_packages/tools/macros/tools.sql").is_file());
}

#[test]
fn dispatch_names_every_macro_it_searched() {
    let p = TestProject::new()
        .file("ferry.yml", "name: shop\n")
        .file("macros/m.sql", "{% macro pick() %}{{ return(adapter.dispatch('pick', 'shop')()) }}{% endmacro %}\n")
        .model("m.sql", "select {{ pick() }} as x\n");
    let ran = p.run(["compile"]);
    assert_eq!(ran.code, Some(1));
    assert!(ran.stderr.contains("'shop.ferry__pick', 'shop.postgres__pick', 'shop.default__pick'"), "{}", ran.stderr);
    assert!(ran.stderr.contains("macros/m.sql"), "{}", ran.stderr);
}

/// Each of dbt's cross-database macros, rendered by ferry and run on
/// DataFusion, against the SQL that dbt's PostgreSQL variant renders, run
/// on PostgreSQL: the same value.
#[tokio::test]
async fn cross_database_macros_give_what_dbt_gives_on_postgres() {
    let Some(Db::Pg { client, .. }) = Db::pg("xdb").await else { return };
    let cases: &[(&str, &str, &str)] = &[
        (
            "dateadd_day",
            "{{ dbt.dateadd('day', 3, \"cast('2024-01-30' as date)\") }}",
            "cast('2024-01-30' as date) + ((interval '1 day') * (3))",
        ),
        (
            "dateadd_month",
            "{{ dbt.dateadd('month', -1, \"cast('2024-03-31 10:00:00' as timestamp)\") }}",
            "cast('2024-03-31 10:00:00' as timestamp) + ((interval '1 month') * (-1))",
        ),
        (
            "dateadd_hour",
            "{{ dateadd('hour', 30, \"cast('2024-01-01' as date)\") }}",
            "cast('2024-01-01' as date) + ((interval '1 hour') * (30))",
        ),
        (
            "datediff_day",
            "{{ dbt.datediff(\"'2024-01-30'\", \"'2024-03-02'\", 'day') }}",
            "(('2024-03-02')::date - ('2024-01-30')::date)",
        ),
        (
            "datediff_month",
            "{{ dbt.datediff(\"'2023-11-30'\", \"'2024-02-01'\", 'month') }}",
            "((date_part('year', ('2024-02-01')::date) - date_part('year', ('2023-11-30')::date)) * 12 + date_part('month', ('2024-02-01')::date) - date_part('month', ('2023-11-30')::date))",
        ),
        (
            "datediff_year",
            "{{ dbt.datediff(\"'2020-12-31'\", \"'2024-01-01'\", 'year') }}",
            "(date_part('year', ('2024-01-01')::date) - date_part('year', ('2020-12-31')::date))",
        ),
        (
            "datediff_week",
            "{{ dbt.datediff(\"cast('2024-01-03' as date)\", \"cast('2024-01-29' as date)\", 'week') }}",
            "((('2024-01-29')::date - ('2024-01-03')::date) / 7 + case when date_part('dow', ('2024-01-03')::timestamp) <= date_part('dow', ('2024-01-29')::timestamp) then case when '2024-01-03'::date <= '2024-01-29'::date then 0 else -1 end else case when '2024-01-03'::date <= '2024-01-29'::date then 1 else 0 end end)",
        ),
        (
            "datediff_hour",
            "{{ dbt.datediff(\"cast('2024-01-01 22:00:00' as timestamp)\", \"cast('2024-01-03 01:30:00' as timestamp)\", 'hour') }}",
            "((('2024-01-03 01:30:00')::date - ('2024-01-01 22:00:00')::date) * 24 + date_part('hour', ('2024-01-03 01:30:00')::timestamp) - date_part('hour', ('2024-01-01 22:00:00')::timestamp))",
        ),
        (
            "datediff_second",
            "{{ dbt.datediff(\"cast('2024-01-01 23:59:50' as timestamp)\", \"cast('2024-01-02 00:00:05' as timestamp)\", 'second') }}",
            "(((('2024-01-02 00:00:05')::date - ('2024-01-01 23:59:50')::date) * 24 + date_part('hour', ('2024-01-02 00:00:05')::timestamp) - date_part('hour', ('2024-01-01 23:59:50')::timestamp)) * 60 + date_part('minute', ('2024-01-02 00:00:05')::timestamp) - date_part('minute', ('2024-01-01 23:59:50')::timestamp)) * 60 + floor(date_part('second', ('2024-01-02 00:00:05')::timestamp)) - floor(date_part('second', ('2024-01-01 23:59:50')::timestamp))",
        ),
        (
            "date_trunc",
            "{{ dbt.date_trunc('month', \"cast('2024-02-17 13:14:15' as timestamp)\") }}",
            "date_trunc('month', cast('2024-02-17 13:14:15' as timestamp))",
        ),
        (
            "last_day",
            "{{ dbt.last_day(\"cast('2024-02-10' as date)\", 'month') }}",
            "cast(date_trunc('month', cast('2024-02-10' as date)) + ((interval '1 month') * (1)) + ((interval '1 day') * (-1)) as date)",
        ),
        ("safe_cast", "{{ dbt.safe_cast(\"'42'\", dbt.type_int()) }}", "cast('42' as integer)"),
        ("hash", "{{ dbt.hash(\"'ferry'\") }}", "md5(cast('ferry' as varchar))"),
        ("concat", "{{ dbt.concat([\"'a'\", \"'-'\", \"'b'\"]) }}", "'a' || '-' || 'b'"),
        ("concat_null", "{{ dbt.concat([\"'a'\", 'cast(null as varchar)']) }}", "'a' || cast(null as varchar)"),
        ("split_part", "{{ dbt.split_part(\"'a,b,c'\", \"','\", 2) }}", "split_part('a,b,c', ',', 2)"),
        ("split_part_negative", "{{ dbt.split_part(\"'a,b,c'\", \"','\", -1) }}", "split_part('a,b,c', ',', -1)"),
        (
            "listagg",
            "(select {{ dbt.listagg('x', \"'-'\", 'order by o') }} from (values ('a', 2), ('b', 1), ('c', 3)) as t(x, o))",
            "(select string_agg(x, '-' order by o) from (values ('a', 2), ('b', 1), ('c', 3)) as t(x, o))",
        ),
        (
            "listagg_limit",
            "(select {{ dbt.listagg('x', \"'-'\", 'order by o', 2) }} from (values ('a', 2), ('b', 1), ('c', 3)) as t(x, o))",
            "(select array_to_string((array_agg(x order by o))[1:2], '-') from (values ('a', 2), ('b', 1), ('c', 3)) as t(x, o))",
        ),
        (
            "any_value",
            "(select {{ dbt.any_value('x') }} from (values (3), (3)) as t(x))",
            "(select min(x) from (values (3), (3)) as t(x))",
        ),
        (
            "bool_or",
            "(select {{ dbt.bool_or('x > 2') }} from (values (1), (3)) as t(x))",
            "(select bool_or(x > 2) from (values (1), (3)) as t(x))",
        ),
        ("cast_bool_to_text", "{{ dbt.cast_bool_to_text('1 < 2') }}", "cast(1 < 2 as varchar)"),
        ("escape_single_quotes", "'{{ dbt.escape_single_quotes(\"it's\") }}'", "'it''s'"),
        ("string_literal", "{{ dbt.string_literal('ferry') }}", "'ferry'"),
        ("replace", "{{ dbt.replace(\"'banana'\", \"'an'\", \"'AN'\") }}", "replace('banana', 'an', 'AN')"),
        ("length", "{{ dbt.length(\"'ferry'\") }}", "length('ferry')"),
        ("position", "{{ dbt.position(\"'rr'\", \"'ferry'\") }}", "position('rr' in 'ferry')"),
        ("right", "{{ dbt.right(\"'ferry'\", 3) }}", "right('ferry', 3)"),
        ("date", "{{ dbt.date(2024, 2, 29) }}", "to_date('2024-2-29', 'YYYY-MM-DD')"),
        ("type_numeric", "cast(1.5 as {{ dbt.type_numeric() }})", "cast(1.5 as numeric(28,6))"),
        // PostgreSQL's `float` is a double: a 32-bit float would keep
        // about seven digits of this.
        ("type_float", "cast(62.3888186 as {{ dbt.type_float() }}) * 3", "cast(62.3888186 as float) * 3"),
        (
            "array_concat",
            "array_to_string({{ dbt.array_concat(dbt.array_construct([1, 2]), dbt.array_append(dbt.array_construct([3]), 4)) }}, ',')",
            "array_to_string(array_cat(array[1, 2]::integer[], array_append(array[3]::integer[], 4)), ',')",
        ),
    ];
    let model: Vec<String> =
        cases.iter().map(|(name, ferry, _)| format!("select '{name}' as k, cast({ferry} as varchar) as v")).collect();
    let p = TestProject::new()
        .file("ferry.yml", "name: xdb\n")
        .model("xdb.sql", &format!("{{{{ config(materialized='table') }}}}\n{}\n", model.join("\nunion all\n")));
    let ran = p.run(["run"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let rows = p.query_stages(&["xdb"], "select k, v from xdb").await;
    let ferry: std::collections::BTreeMap<String, String> = rows
        .iter()
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            (cells[0].to_owned(), cells.get(1).copied().unwrap_or("").to_owned())
        })
        .collect();
    let mut differ = Vec::new();
    for (name, _, pg) in cases {
        let row =
            client.query_one(&format!("select ({pg})::text"), &[]).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let want: Option<String> = row.get(0);
        let got = ferry.get(*name).cloned().unwrap_or_default();
        if !same_value(&got, want.as_deref().unwrap_or("")) {
            differ.push(format!("{name}: ferry {got:?}, PostgreSQL {want:?}"));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

/// The same value as text from either engine: numbers by value, times with
/// either separator, with or without zero fractions.
fn same_value(ferry: &str, pg: &str) -> bool {
    if let (Ok(a), Ok(b)) = (ferry.parse::<f64>(), pg.parse::<f64>()) {
        return (a - b).abs() < 1e-9;
    }
    let norm = |s: &str| s.replace('T', " ").trim_end_matches(".000000").to_owned();
    norm(ferry) == norm(pg)
}

/// `adapter.get_columns_in_relation` is answered from the planned schema
/// of the relation's model or seed (no row moves first), in models, in
/// generic tests and in `ferry show`; `execute` is false in the first
/// render, as in dbt's parse.
#[test]
fn columns_of_a_relation_come_from_its_planned_schema() {
    let p = TestProject::new()
        .file("seeds/people.csv", "id,name,amount\n1,Ada,2.5\n2,Bo,4\n")
        .file(
            "macros/cols.sql",
            "{% macro cols_except(rel, except) %}\n\
             {%- set cols = [] -%}\n\
             {%- for c in adapter.get_columns_in_relation(rel) if c.name not in except -%}{% do cols.append(c.quoted) %}{%- endfor -%}\n\
             {%- if not execute %}{{ return('*') }}{% endif -%}\n\
             {{ return(cols | join(', ')) }}\n\
             {% endmacro %}\n\
             {% test has_n_columns(model, n) %}\n\
             select 1 as failure where {{ adapter.get_columns_in_relation(model) | length }} != {{ n }}\n\
             {% endtest %}\n",
        )
        .model(
            "base.sql",
            "{{ config(materialized='table') }}\nselect id, name, amount, 'x' as \"Dropped\" from {{ ref('people') }}\n",
        )
        .model(
            "narrow.sql",
            "{{ config(materialized='table') }}\nselect {{ cols_except(ref('base'), ['Dropped']) }} from {{ ref('base') }}\n",
        )
        .model(
            "types.sql",
            "select '{% for c in adapter.get_columns_in_relation(ref('base')) %}{{ c.name }} {{ c.data_type }} {{ c.is_string() }};{% endfor %}' as t\n",
        )
        .file(
            "models/schema.yml",
            "models:\n  - name: narrow\n    data_tests:\n      - has_n_columns: {n: 3}\n  - name: base\n    data_tests:\n      - has_n_columns: {n: 4}\n",
        );

    let compiled = p.run(["compile"]);
    assert_eq!(compiled.code, Some(0), "{}", compiled.stderr);
    let sql = p.read(".ferry/compiled/models/narrow.sql");
    assert!(sql.contains("select \"id\", \"name\", \"amount\" from \"base\""), "{sql}");

    let ran = p.run(["build", "--no-load"]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    let results = p.run_results();
    for test in ["test.shop.has_n_columns_narrow__3", "test.shop.has_n_columns_base__4"] {
        let r = crate::common::node_result(&results, test);
        assert_eq!(r.and_then(|r| r["status"].as_str()), Some("pass"), "{test}: {results}");
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rows = rt.block_on(p.query_stages(&["narrow"], "select * from narrow order by id"));
    assert_eq!(rows, vec!["| 1  | Ada  | 2.5    |".to_owned(), "| 2  | Bo   | 4.0    |".to_owned()]);

    let shown = p.run(["show", "-s", "types", "--format", "json"]);
    assert_eq!(shown.code, Some(0), "{}", shown.stderr);
    assert!(
        shown.stdout.contains("id bigint False;name text True;amount double precision False;Dropped text True;"),
        "{}",
        shown.stdout
    );
}

/// `run_query` and `{% call statement(fetch_result=True) %}` with
/// `load_result` run while the model is planned, over a seed.
#[test]
fn queries_while_rendering_read_seeds() {
    let p = TestProject::new().file("seeds/people.csv", "id,name\n1,Ada\n2,Bo\n3,Cy\n").model(
        "names.sql",
        "{% set q %}select name from {{ ref('people') }} where id < 3 order by id{% endset %}\n\
             {% set names = run_query(q).columns[0].values() if execute else [] %}\n\
             {% call statement('top', fetch_result=True) %}select max(id) as m from {{ ref('people') }}{% endcall %}\n\
             {% set top = load_result('top')['data'][0][0] if execute else 0 %}\n\
             select '{{ names | join(',') }}' as names, {{ top }} as top\n",
    );
    let ran = p.run(["build", "--no-load"]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    let sql = p.read(".ferry/compiled/models/names.sql");
    assert!(sql.contains("select 'Ada,Bo' as names, 3 as top"), "{sql}");
}

/// A model whose render queries the rows of a model the same run builds
/// (the pivot over `get_column_values(ref(...))` of many dbt projects) is
/// planned as it runs, once that model is built, and so is everything
/// downstream of it (a model asking its columns, its tests); `compile`
/// says which ones. A unit test of such a model is a clear error.
#[test]
fn queries_while_rendering_read_models_built_in_the_same_run() {
    let p = TestProject::new()
        .file("seeds/payments.csv", "id,method,amount\n1,card,10\n2,cash,5\n3,card,7\n4,gift,1\n")
        .model("stg_payments.sql", "{{ config(materialized='view') }}\nselect * from {{ ref('payments') }} where amount > 1\n")
        .model("methods.sql", "{{ config(materialized='table') }}\nselect distinct method from {{ ref('stg_payments') }}\n")
        .model(
            "pivoted.sql",
            "{{ config(materialized='table') }}\n-- depends_on: {{ ref('methods') }}\n\
             {% set methods = run_query('select method from ' ~ ref('methods') ~ ' order by method').columns[0].values() if execute else [] %}\n\
             select {% for m in methods %}sum(case when method = '{{ m }}' then amount else 0 end) as {{ m }}_amount{% if not loop.last %}, {% endif %}{% endfor %}\n\
             from {{ ref('stg_payments') }}\n",
        )
        .model(
            "columns_of.sql",
            "{% set pivoted = ref('pivoted') %}{% set cols = adapter.get_columns_in_relation(pivoted) if execute else [] %}\n\
             select '{{ cols | map(attribute='name') | join(',') }}' as cols\n",
        )
        .model("after.sql", "{{ config(materialized='table') }}\nselect card_amount + cash_amount as total from {{ ref('pivoted') }}\n")
        .file(
            "models/schema.yml",
            "models:\n  - name: pivoted\n    columns:\n      - name: cash_amount\n        tests: [not_null]\n",
        );
    let ran = p.run(["build", "--no-load"]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    let sql = p.read(".ferry/compiled/models/pivoted.sql");
    assert!(
        sql.contains("as card_amount, sum(case when method = 'cash' then amount else 0 end) as cash_amount"),
        "{sql}"
    );
    let sql = p.read(".ferry/compiled/models/columns_of.sql");
    assert!(sql.contains("select 'card_amount,cash_amount' as cols"), "{sql}");
    let results = p.run_results();
    let r = crate::common::node_result(&results, "test.shop.not_null_pivoted_cash_amount");
    assert_eq!(r.and_then(|r| r["status"].as_str()), Some("pass"), "{results}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rows = rt
        .block_on(p.query_stages(&["pivoted", "after"], "select card_amount, cash_amount, total from pivoted, after"));
    assert_eq!(rows, vec!["| 17          | 5           | 22    |".to_owned()]);

    let compiled = p.run(["compile"]);
    assert_eq!(compiled.code, Some(0), "{}", compiled.stderr);
    let said = format!("{}{}", compiled.stdout, compiled.stderr);
    assert!(
        said.contains("`pivoted` is compiled when it runs: while rendering, it queries the rows of `methods`"),
        "{said}"
    );

    let p = p.file(
        "models/unit.yml",
        "unit_tests:\n  - name: pivot_unit\n    model: pivoted\n    given:\n      - input: ref('stg_payments')\n        rows: [{method: card, amount: 1}]\n      - input: ref('methods')\n        rows: [{method: card}]\n    expect:\n      rows: [{card_amount: 1}]\n",
    );
    let ran = p.run(["build", "--no-load"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains("unit test `pivot_unit` cannot run: `pivoted` queries the rows of `methods` while rendering"),
        "{}",
        ran.stderr
    );
}

/// `<target database>.information_schema.tables` lists the project's
/// relations that exist while the model renders (seeds here), named as dbt
/// names them, for the packages that find relations by pattern; relations
/// carry the target's database, as dbt's do.
#[test]
fn information_schema_lists_the_relations_that_exist() {
    let p = TestProject::new()
        .file("seeds/events_a.csv", "id\n1\n")
        .file("seeds/events_b.csv", "id\n2\n")
        .file("seeds/other.csv", "id\n3\n")
        .model(
            "listed.sql",
            "-- depends_on: {{ ref('events_a') }}, {{ ref('events_b') }}\n\
             {% set q %}select table_catalog, table_schema, table_name, table_type from {{ target.database }}.information_schema.tables \
             where table_name ilike 'events%' order by table_name{% endset %}\n\
             {% set rows = run_query(q).rows if execute else [] %}\n\
             select '{% for r in rows %}{{ r[0] }}.{{ r[1] }}.{{ r[2] }}:{{ r[3] }};{% endfor %}' as listed, \
             '{{ this.database }}|{{ target.database }}|{{ target.schema }}' as names\n",
        );
    let ran = p.run(["build", "--no-load"]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    let sql = p.read(".ferry/compiled/models/listed.sql");
    let names = sql.split("' as names").next().unwrap().rsplit('\'').next().unwrap();
    let [db, target_db, schema] = names.split('|').collect::<Vec<_>>()[..] else { panic!("{sql}") };
    assert!(!db.is_empty() && db == target_db, "{sql}");
    let want = format!("'{db}.{schema}.events_a:BASE TABLE;{db}.{schema}.events_b:BASE TABLE;' as listed");
    assert!(sql.contains(&want), "{want}\n{sql}");
}

/// A source with neither `path:` nor `connection:` is a table in the
/// warehouse, as in dbt: ferry reads `schema.identifier` from the target
/// (the identifier alone on SQLite); a missing one is an error naming the
/// target and the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_without_a_path_are_read_from_the_target() {
    let Some(mut pg) = Db::pg("warehouse").await else { return };
    crate::extract::seed(&mut pg).await;
    let on_pg = TestProject::new().file("profiles.yml", &pg.profiles("").replace("PROFILE", "shop"));
    check_warehouse_source(on_pg, pg.schema()).await;
    pg.drop_schema().await;

    let lite = TestProject::new();
    let mut db = Db::sqlite(&lite);
    crate::extract::seed(&mut db).await;
    let lite = lite.file("profiles.yml", &db.profiles("").replace("PROFILE", "shop"));
    check_warehouse_source(lite, "legacy").await;
}

async fn check_warehouse_source(p: TestProject, schema: &str) {
    let p = p
        .file(
            "models/sources.yml",
            &format!("sources:\n  - name: legacy\n    schema: {schema}\n    tables:\n      - name: src\n      - name: orders\n        identifier: nope\n"),
        )
        .model(
            "totals.sql",
            "{{ config(materialized='table') }}\nselect count(*) as n, sum(id) as s from {{ source('legacy', 'src') }}\n",
        );
    let ran = p.run(["build", "--no-load", "-s", "totals"]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    let rows = p.query_stages(&["totals"], "select n, s from totals").await;
    assert_eq!(rows, vec!["| 1000 | 500500 |".to_owned()]);

    let p = p.model("missing.sql", "select * from {{ source('legacy', 'orders') }}\n");
    let ran = p.run(["compile", "-s", "missing"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("is read from the target `t`, as table `"), "{}", ran.stderr);
    assert!(ran.stderr.contains("nope`"), "{}", ran.stderr);
    assert!(ran.stderr.contains("models/sources.yml"), "{}", ran.stderr);
}

/// A local package with models, a seed, a schema file and a generic test,
/// configured by its own project file and by the root's; a root model
/// refs it with `ref('crm', ...)`; a config value renders a var; a source
/// in the warehouse names a seed that lands in `<target>_raw`.
#[test]
fn package_models_and_seeds_build_with_the_project() {
    let pkg_dir = tempfile::tempdir().unwrap();
    let pkg = camino::Utf8Path::from_path(pkg_dir.path()).unwrap();
    for (rel, text) in [
        ("dbt_project.yml", "name: crm\nvars:\n  crm_min: 1\nmodels:\n  crm:\n    +materialized: table\n"),
        ("seeds/crm_people.csv", "id,name\n1,Ada\n2,Bo\n3,Cy\n"),
        (
            "models/crm_customers.sql",
            "select id, upper(name) as name from {{ ref('crm_people') }} where id > {{ var('crm_min') }}\n",
        ),
        ("models/extra/crm_extra.sql", "select 1 as x\n"),
        (
            "models/schema.yml",
            "models:\n  - name: crm_customers\n    columns:\n      - name: id\n        data_tests: [not_null, unique]\n",
        ),
    ] {
        std::fs::create_dir_all(pkg.join(rel).parent().unwrap()).unwrap();
        std::fs::write(pkg.join(rel), text).unwrap();
    }
    let p = TestProject::new()
        .file(
            "ferry.yml",
            "name: shop\nvars:\n  use_extra: false\nmodels:\n  crm:\n    extra:\n      +enabled: \"{{ var('use_extra') }}\"\nseeds:\n  shop:\n    +schema: raw\n",
        )
        .file("packages.yml", &format!("packages:\n  - local: {pkg}\n"))
        .file("seeds/raw_orders.csv", "id,amount\n1,10\n2,32\n")
        .file(
            "models/sources.yml",
            "sources:\n  - name: raw\n    schema: \"{{ target.schema }}_raw\"\n    tables:\n      - name: raw_orders\n",
        )
        .model(
            "report.sql",
            "{{ config(materialized='table') }}\nselect (select count(*) from {{ ref('crm', 'crm_customers') }}) as customers, (select sum(amount) from {{ source('raw', 'raw_orders') }}) as amount\n",
        );
    let deps = p.run(["deps"]);
    assert_eq!(deps.code, Some(0), "{}", deps.stderr);

    let ran = p.run(["build", "--no-load"]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    let results = p.run_results();
    for id in
        ["model.crm.crm_customers", "seed.crm.crm_people", "test.crm.unique_crm_customers_id", "model.shop.report"]
    {
        let r = crate::common::node_result(&results, id);
        assert!(r.and_then(|r| r["status"].as_str()).is_some_and(|s| s == "success" || s == "pass"), "{id}: {results}");
    }
    assert!(crate::common::node_result(&results, "model.crm.crm_extra").is_none(), "{results}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rows = rt.block_on(p.query_stages(&["crm_customers"], "select id, name from crm_customers order by id"));
    assert_eq!(rows, vec!["| 2  | BO   |".to_owned(), "| 3  | CY   |".to_owned()]);
    let rows = rt.block_on(p.query_stages(&["report"], "select customers, amount from report"));
    assert_eq!(rows, vec!["| 2         | 42     |".to_owned()]);

    // The var turns the package's folder on; a ref to the wrong package is an error.
    let listed = p.run(["ls", "--vars", "{use_extra: true}"]);
    assert_eq!(listed.code, Some(0), "{}", listed.stderr);
    assert!(listed.stdout.contains("crm_extra"), "{}", listed.stdout);
    let p = p.model("wrong.sql", "select * from {{ ref('shop', 'crm_customers') }}\n");
    let wrong = p.run(["compile", "-s", "wrong"]);
    assert_eq!(wrong.code, Some(1), "{}", wrong.stderr);
    assert!(wrong.stderr.contains("`crm_customers` is in `crm`, not in package `shop`"), "{}", wrong.stderr);
}

/// Serves the files under `root` over HTTP on a loopback port until the
/// test ends; returns the base URL.
fn serve(root: camino::Utf8PathBuf) -> String {
    use std::io::{BufRead as _, BufReader, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            // Skip the headers.
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/').to_owned();
            let response = match std::fs::read(root.join(&path)) {
                Ok(body) => {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Sat, 05 Dec 2026 06:00:00 GMT\r\nETag: \"{}\"\r\nConnection: close\r\n\r\n",
                        body.len(),
                        body.len()
                    );
                    [head.into_bytes(), body].concat()
                }
                Err(_) => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
            };
            let _ = stream.write_all(&response);
        }
    });
    base
}

/// A `.tar.gz` of a package `name` whose macro `hi()` says `says`, under
/// one folder as GitHub's archives are.
fn package_archive(path: &camino::Utf8Path, name: &str, says: &str) {
    let file = std::fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (rel, text) in [
        ("dbt_project.yml".to_owned(), format!("name: {name}\n")),
        ("macros/hi.sql".to_owned(), format!("{{% macro hi() %}}'{says}'{{% endmacro %}}\n")),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, format!("{name}-pkg/{rel}"), text.as_bytes()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
}

#[test]
fn deps_installs_tarball_and_hub_packages() {
    let site_dir = tempfile::tempdir().unwrap();
    let site = camino::Utf8Path::from_path(site_dir.path()).unwrap().to_owned();
    std::fs::create_dir_all(site.join("archives")).unwrap();
    std::fs::create_dir_all(site.join("api/v1/acme")).unwrap();
    let base = serve(site.clone());
    for v in ["1.0.0", "1.1.0", "2.0.0", "2.1.0-rc1"] {
        package_archive(&site.join(format!("archives/hello-{v}.tar.gz")), "hello", &format!("hello {v}"));
    }
    package_archive(&site.join("archives/other.tar.gz"), "other", "other");
    let versions: serde_json::Map<String, serde_json::Value> = ["1.0.0", "1.1.0", "2.0.0", "2.1.0-rc1"]
        .iter()
        .map(|v| {
            let entry = serde_json::json!({"name": "hello", "version": v,
                "downloads": {"tarball": format!("{base}/archives/hello-{v}.tar.gz")}});
            ((*v).to_owned(), entry)
        })
        .collect();
    let index = serde_json::json!({"name": "hello", "namespace": "acme", "latest": "2.0.0", "versions": versions});
    std::fs::write(site.join("api/v1/acme/hello.json"), index.to_string()).unwrap();

    let p = TestProject::new()
        .file(
            "packages.yml",
            &format!(
                "packages:\n  - package: acme/hello\n    version: [\">=1.0.0\", \"<2.0.0\"]\n  - tarball: {base}/archives/other.tar.gz\n    name: other\n"
            ),
        )
        .model("greet.sql", "{{ config(materialized='table') }}\nselect {{ hello.hi() }} as a, {{ other.hi() }} as b\n");
    let deps = p.ferry(["deps"]).env("DBT_PACKAGE_HUB_URL", &base).output().unwrap();
    let stderr = String::from_utf8_lossy(&deps.stderr);
    assert_eq!(deps.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("acme/hello 1.1.0 (hub)"), "{stderr}");
    let lock = p.read("package-lock.yml");
    assert!(lock.contains("package: acme/hello") && lock.contains("1.1.0"), "{lock}");
    assert!(lock.contains("other.tar.gz"), "{lock}");
    let ran = p.run(["build", "--no-load"]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    let rows = tokio::runtime::Runtime::new().unwrap().block_on(p.query_stages(&["greet"], "select a, b from greet"));
    assert_eq!(rows, vec!["| hello 1.1.0 | other |".to_owned()]);

    // A wider range takes the newest release, never the release candidate.
    let mut p = p.file("packages.yml", "packages:\n  - package: acme/hello\n    version: \">=1.0.0\"\n");
    let deps = p.ferry(["deps"]).env("DBT_PACKAGE_HUB_URL", &base).output().unwrap();
    let stderr = String::from_utf8_lossy(&deps.stderr);
    assert!(stderr.contains("acme/hello 2.0.0 (hub)"), "{stderr}");

    // A package the hub does not have, and a range nothing matches: clear
    // errors, and the installed packages stay.
    for (entry, says) in [
        ("package: acme/nope\n    version: 1.0.0", "package `acme/nope` is not on the hub at"),
        ("package: acme/hello\n    version: \">=3.0.0\"", "no version of `acme/hello` matches"),
    ] {
        p = p.file("packages.yml", &format!("packages:\n  - {entry}\n"));
        let deps = p.ferry(["deps"]).env("DBT_PACKAGE_HUB_URL", &base).output().unwrap();
        let stderr = String::from_utf8_lossy(&deps.stderr);
        assert_eq!(deps.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(p.path().join("dbt_packages/hello/macros/hi.sql").is_file());
    }
}

/// A project's own `generate_schema_name` names the schemas, as in dbt: a
/// seed folder's `+schema: raw` is `raw` itself, which a source then reads.
#[test]
fn a_project_generate_schema_name_names_the_schemas() {
    let p = TestProject::new()
        .file("ferry.yml", "name: shop\nseeds:\n  shop:\n    +schema: raw\n")
        .file(
            "macros/schemas.sql",
            "{% macro generate_schema_name(custom_schema_name, node) -%}\n{%- if custom_schema_name is none -%}{{ target.schema }}{%- else -%}{{ custom_schema_name | trim }}_{{ node.resource_type }}{%- endif -%}\n{%- endmacro %}\n",
        )
        .file("seeds/orders.csv", "id,amount\n1,10\n2,32\n")
        .file("models/sources.yml", "sources:\n  - name: raw\n    schema: raw_seed\n    tables:\n      - name: orders\n")
        .model(
            "report.sql",
            "{{ config(materialized='table', schema='mart') }}\nselect '{{ this.schema }}' as here, (select sum(amount) from {{ source('raw', 'orders') }}) as amount\n",
        )
        .model("plain.sql", "{{ config(materialized='table') }}\nselect '{{ this.schema }}' as here\n");
    let ran = p.run(["build", "--no-load"]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rows = rt.block_on(p.query_stages(&["report"], "select here, amount from report"));
    assert_eq!(rows, vec!["| mart_model | 42     |".to_owned()]);
    let rows = rt.block_on(p.query_stages(&["plain"], "select here from plain"));
    assert_eq!(rows, vec!["| main |".to_owned()]);
}

/// Versioned models (dbt 1.5 `versions:`): each version is the model
/// `<name>_v<v>` (or the file `defined_in` names, with dbt's relation
/// name as its alias) with the entry's properties, narrowed by `include` /
/// `exclude` and extended by the version's own; `ref(name)` reads the
/// latest version (`latest_version`, else the greatest), `ref(name, v=)`
/// a given one, and selecting the name selects every version.
#[test]
fn versioned_models_resolve_as_in_dbt() {
    let schema = |latest: &str| {
        format!(
            "models:\n  - name: dim_customers\n    config: {{materialized: table}}\n{latest}\
             \x20   columns:\n      - name: id\n        tests: [unique]\n      - name: name\n        tests: [not_null]\n\
             \x20   versions:\n\
             \x20     - v: 1\n        columns:\n          - include: all\n            exclude: [name]\n\
             \x20     - v: 2\n        config: {{materialized: view}}\n        columns:\n          - include: '*'\n          - name: extra\n            tests: [not_null]\n\
             \x20     - v: 3\n        defined_in: dim_next\n        columns:\n          - include: [id]\n"
        )
    };
    let p = TestProject::new()
        .file("seeds/raw_people.csv", "id,name\n1,ada\n2,bo\n")
        .model("dim_customers_v1.sql", "select id, name from {{ ref('raw_people') }}\n")
        .model("dim_customers_v2.sql", "select id, upper(name) as name, 'x' as extra from {{ ref('raw_people') }}\n")
        .model("dim_next.sql", "select id from {{ ref('raw_people') }}\n")
        .model(
            "report.sql",
            "select (select count(*) from {{ ref('dim_customers') }}) as latest_rows, \
             (select max(name) from {{ ref('dim_customers', v=1) }}) as v1_name, \
             (select count(*) from {{ ref('dim_customers', version=3) }}) as v3_rows\n",
        )
        .file("models/schema.yml", &schema("    latest_version: 2\n"));
    let ran = p.run(["build", "--no-load"]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    let sql = p.read(".ferry/compiled/models/report.sql");
    for relation in
        ["from \"dim_customers_v2\") as latest_rows", "from \"dim_customers_v1\") as v1_name", "from \"dim_next\")"]
    {
        assert!(sql.contains(relation), "{relation}\n{sql}");
    }
    let results = p.run_results();
    for (test, status) in [
        ("test.shop.unique_dim_customers_v1_id", Some("pass")),
        ("test.shop.unique_dim_customers_v2_id", Some("pass")),
        ("test.shop.not_null_dim_customers_v2_name", Some("pass")),
        ("test.shop.not_null_dim_customers_v2_extra", Some("pass")),
        // Version 1 excludes `name`, and only version 2 adds `extra`.
        ("test.shop.not_null_dim_customers_v1_name", None),
        ("test.shop.not_null_dim_customers_v1_extra", None),
    ] {
        let r = crate::common::node_result(&results, test);
        assert_eq!(r.and_then(|r| r["status"].as_str()), status, "{test}: {results}");
    }
    let ls = p.run(["ls", "-s", "dim_customers", "--resource-type", "model", "--output", "name"]);
    assert_eq!(
        ls.stdout.lines().collect::<Vec<_>>(),
        ["dim_customers_v1", "dim_customers_v2", "dim_next"],
        "{}",
        ls.stderr
    );

    // Without `latest_version`, the greatest version is the latest.
    let p = p.file("models/schema.yml", &schema(""));
    let ran = p.run(["compile"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let sql = p.read(".ferry/compiled/models/report.sql");
    assert!(sql.contains("from \"dim_next\") as latest_rows"), "{sql}");

    let p = p.model("bad.sql", "select * from {{ ref('dim_customers', v=7) }}\n");
    let ran = p.run(["compile"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("ref('dim_customers', v=7): `dim_customers` has versions 1, 2, 3"), "{}", ran.stderr);
    assert!(ran.stderr.contains("models/bad.sql"), "{}", ran.stderr);
}

/// A seed's `quote_columns: false` names its columns as PostgreSQL folds
/// them unquoted (lower case), as `dbt seed` creates them then; by
/// default they keep the header's case. Two headers that fold to one name
/// are an error naming both.
#[test]
fn seed_quote_columns_false_folds_the_header_case() {
    let p = TestProject::new()
        .file("ferry.yml", "name: shop\nseeds:\n  shop:\n    folded:\n      +quote_columns: false\n")
        .file("seeds/folded/people.csv", "Id,FullName,Joined\n1,Ada,2021-01-01 00:00\n")
        .file("seeds/kept.csv", "Id,FullName\n2,Bo\n")
        .file("models/schema.yml", "seeds:\n  - name: people\n    config:\n      column_types: {Joined: timestamp}\n")
        .model(
            "both.sql",
            "{{ config(materialized='table') }}\nselect id, fullname, joined from {{ ref('people') }}\n\
             union all select \"Id\", \"FullName\", null from {{ ref('kept') }}\n",
        );
    let ran = p.run(["build", "--no-load"]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rows = rt
        .block_on(p.query_stages(&["both"], "select id, fullname, cast(joined as varchar) as j from both order by id"));
    assert_eq!(
        rows,
        vec![
            "| 1  | Ada      | 2021-01-01T00:00:00 |".to_owned(),
            "| 2  | Bo       |                     |".to_owned()
        ]
    );

    let p = p.file("seeds/folded/people.csv", "Id,id\n1,2\n").file("models/schema.yml", "seeds: []\n");
    let ran = p.run(["seed"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("seed `people` has columns `Id` and `id`"), "{}", ran.stderr);
}
