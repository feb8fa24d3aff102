//! `ferry audit`: what the columns of sources and seeds hold, read from
//! the files as text, on a fixture with known defects.

use crate::common::TestProject;

const CUSTOMERS: &str = "id,email,joined,country,code,amount\n\
1,ada@example.com,25/12/2024,USA,007,12.50\n\
2,bo@x.org,12/25/2024,usa,010,3\n\
3,,31/02/2024,U.S.A.,011,x\n\
3, cy@y.net,03/04/2024,Germany,12,-0.125\n";

#[test]
fn audit_profiles_sources_and_seeds_as_their_files_hold_them() {
    let p = TestProject::new()
        .file("data/customers.csv", CUSTOMERS)
        .file(
            "models/sources.yml",
            "sources:\n  - name: crm\n    tables:\n      - name: customers\n        path: data/customers.csv\n",
        )
        .file("seeds/countries.csv", "code,name\nDE,Germany\nUS,USA\nUS,USA\n");
    let ran = p.run(["audit"]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    assert!(
        ran.stdout
            .contains("crm.customers: 4 rows, duplicate rows: 0, candidate keys: joined, country, code, amount\n"),
        "{}",
        ran.stdout
    );
    assert!(ran.stdout.contains("countries: 3 rows, duplicate rows: 1, candidate keys: none\n"), "{}", ran.stdout);
    assert!(ran.stdout.contains("1 value spelled several ways (U.S.A. / USA / usa)"), "{}", ran.stdout);
    assert!(ran.stderr.contains("the full audit is in `.ferry/audit/"), "{}", ran.stderr);

    let json = p.run(["audit", "-s", "source:crm", "--format", "json"]);
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    let audit: serde_json::Value = serde_json::from_str(json.stdout.trim()).expect("one JSON document");
    let tables = audit["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 1, "{audit}");
    let col = |name: &str| tables[0]["columns"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone();

    // The reader infers `code` as a number; the file holds leading zeros.
    let code = col("code");
    assert_eq!((code["declared"].as_str(), code["leading_zeros"].as_u64()), (Some("Int64"), Some(3)), "{code}");
    assert_eq!(
        (code["kind"].as_str(), code["min"].as_str(), code["max"].as_str()),
        (Some("integer"), Some("007"), Some("12")),
        "{code}"
    );

    let email = col("email");
    assert_eq!(
        (email["nulls"].as_u64(), email["kind"].as_str(), email["personal"].as_bool()),
        (Some(1), Some("email"), Some(true)),
        "{email}"
    );
    assert_eq!(email["stray_whitespace"], 1, "{email}");

    let joined = col("joined");
    let d = &joined["dates"];
    assert_eq!([&d["day_first"], &d["month_first"], &d["ambiguous"], &d["impossible"]], [1, 1, 1, 1], "{joined}");
    assert_eq!(joined["impossible_examples"], serde_json::json!(["31/02/2024"]), "{joined}");

    let country = col("country");
    assert_eq!(country["spellings"], serde_json::json!([["U.S.A.", "USA", "usa"]]), "{country}");
    assert_eq!(country["patterns"][0], serde_json::json!(["A.A.A.", 1]), "{country}");

    let amount = col("amount");
    assert_eq!(
        (amount["decimal"].as_u64(), amount["integer"].as_u64(), amount["present"].as_u64()),
        (Some(3), Some(1), Some(4)),
        "{amount}"
    );
    assert_eq!(
        (amount["decimal_precision"].as_u64(), amount["decimal_scale"].as_u64()),
        (Some(5), Some(3)),
        "{amount}"
    );

    let id = col("id");
    assert_eq!((id["distinct"].as_u64(), id["top"][0].clone()), (Some(3), serde_json::json!(["3", 2])), "{id}");

    // The file the JSON came from is the audit's.
    let run = audit["run_id"].as_str().unwrap();
    let file: serde_json::Value = serde_json::from_str(&p.read(&format!(".ferry/audit/{run}/audit.json"))).unwrap();
    assert_eq!(file["tables"], audit["tables"]);
}

/// Values that break a column's declared type are counted, with the first
/// of them and their lines; declared keys' duplicates and declared
/// relationships' orphans are counted with examples; where no column alone
/// is a key, a pair that is one is found.
#[test]
fn audit_checks_declared_types_keys_and_relationships() {
    let people =
        "id,name,joined\n1,Ada,2024-01-02\n2,Bo,2024-01-03\n3,Cy,31/01/2024\n2,Dee,2024-01-05\nx7,Eve,2024-01-06\n";
    let orders = "order_id,line_no,person_id\n10,1,1\n10,2,2\n11,1,9\n11,2,9\n12,1,8\n12,2,\n";
    let sources = r#"sources:
  - name: crm
    tables:
      - name: people
        path: data/people.csv
        columns:
          - name: id
            data_type: bigint
            data_tests: [unique]
          - name: joined
            data_type: date
      - name: orders
        path: data/orders.csv
        columns:
          - name: person_id
            data_tests:
              - relationships:
                  to: source('crm', 'people')
                  field: id
"#;
    let p = TestProject::new()
        .file("data/people.csv", people)
        .file("data/orders.csv", orders)
        .file("models/sources.yml", sources);
    let ran = p.run(["audit", "--format", "json"]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    let audit: serde_json::Value = serde_json::from_str(ran.stdout.trim()).expect("one JSON document");
    let table = |name: &str| audit["tables"].as_array().unwrap().iter().find(|t| t["name"] == name).unwrap().clone();
    let people = table("crm.people");
    let col = |t: &serde_json::Value, n: &str| {
        t["columns"].as_array().unwrap().iter().find(|c| c["name"] == n).unwrap().clone()
    };
    assert_eq!(people["file"], "data/people.csv", "{people}");
    let id = col(&people, "id");
    assert_eq!(id["type_breaks"], 1, "{id}");
    assert_eq!(id["break_examples"], serde_json::json!([{"value": "x7", "line": 6}]), "{id}");
    let joined = col(&people, "joined");
    assert_eq!(joined["type_breaks"], 1, "{joined}");
    assert_eq!(joined["break_examples"], serde_json::json!([{"value": "31/01/2024", "line": 4}]), "{joined}");
    assert_eq!(col(&people, "name")["type_breaks"], 0);
    assert_eq!(
        people["declared_keys"],
        serde_json::json!([{"columns": ["id"], "duplicate_keys": 1, "duplicate_rows": 1, "examples": [["2", 2]]}]),
        "{people}"
    );

    let orders = table("crm.orders");
    assert_eq!(orders["candidate_keys"], serde_json::json!([]), "{orders}");
    assert_eq!(orders["candidate_key_pairs"], serde_json::json!([["order_id", "line_no"]]), "{orders}");
    assert_eq!(
        orders["relationships"],
        serde_json::json!([{"column": "person_id", "to": "crm.people.id", "orphan_rows": 3, "examples": [["9", 2], ["8", 1]]}]),
        "{orders}"
    );

    let text = p.run(["audit"]);
    assert!(text.stdout.contains("1 not Int64 (e.g. `x7` at data/people.csv:6)"), "{}", text.stdout);
    assert!(text.stdout.contains("declared unique (id): 1 keys repeat, 1 extra rows (e.g. 2 x2)"), "{}", text.stdout);
    assert!(
        text.stdout.contains("relationship person_id -> crm.people.id: 3 orphan rows (e.g. 9 x2, 8 x1)"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("candidate key pairs: (order_id, line_no)"), "{}", text.stdout);
}

/// `--compare-to` says what changed in the sources since an earlier audit;
/// an audit it cannot find is the user's error.
#[test]
fn audit_compares_with_an_earlier_audit() {
    let sources = "sources:\n  - name: crm\n    tables:\n      - name: people\n        path: data/people.csv\n";
    let p = TestProject::new().file("data/people.csv", "id,name\n1,Ada\n2,Bo\n").file("models/sources.yml", sources);
    assert_eq!(p.run(["audit"]).code, Some(0));
    let p = p.file("data/people.csv", "id,name,email\n1,Ada,a@x.org\n2,,b@x.org\n3,Cy,c@x.org\n");
    let ran = p.run(["audit", "--compare-to", "last"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let since = &ran.stdout[ran.stdout.find("Since audit").expect("a comparison")..];
    assert!(since.contains("  crm.people:\n    rows: 2 -> 3 (+1)\n"), "{since}");
    assert!(since.contains("    `name` NULL or blank values: 0 -> 1 (+1)\n"), "{since}");
    assert!(since.contains("    new column `email` (Utf8)\n"), "{since}");
    // The audit's page says the same.
    let page = ran.stderr.split("in a browser in `").nth(1).and_then(|r| r.split('`').next()).expect("a page");
    let html = fs_err::read_to_string(p.path().join(page)).unwrap();
    let changes = &html[html.find("id=\"audit-changes\"").expect("the changes on the page")..];
    assert!(changes.contains("<code>crm.people</code>: rows: 2 -&gt; 3 (+1); "), "{changes}");
    assert!(changes.contains("new column `email` (Utf8)"), "{changes}");

    let json = p.run(["audit", "--compare-to", "last", "--format", "json"]);
    let audit: serde_json::Value = serde_json::from_str(json.stdout.trim()).expect("one JSON document");
    assert_eq!(audit["compared_to"]["tables"], serde_json::json!([]), "nothing changed since: {audit}");

    let missing = p.run(["audit", "--compare-to", "nosuchaudit"]);
    assert_eq!(missing.code, Some(1), "{}", missing.stderr);
    assert!(missing.stderr.contains("--compare-to: no earlier audit `nosuchaudit`"), "{}", missing.stderr);
}

/// A file in windows-1252 read as UTF-8 (its encoding undeclared) is still
/// audited: the values whose bytes are no UTF-8 are counted per column,
/// with examples at their lines, and the bytes are named for what they
/// look like. Declared, the same file reads clean. Text decoded twice
/// before it reached a file (`JosÃ©`) is counted apart.
#[test]
fn audit_names_encodings_replaced_bytes_and_double_encoded_text() {
    let people = "id,name,city\n1,Zoë Brontë,Köln\n2,Ada,Paris\n3,José Peña,Málaga\n4,Bo,Oslo\n\
                  5,Ångström Müller,Malmö\n6,Cy,Rome\n7,Françoise Noël,Besançon\n8,Grüße Straße,Düsseldorf\n";
    let (latin, _, _) = encoding_rs::WINDOWS_1252.encode(people);
    let sources = "sources:\n  - name: crm\n    tables:\n      - name: people\n        path: data/people.csv\n\
                   \x20     - name: mixed\n        path: data/mixed.csv\n";
    let p = TestProject::new()
        .file("models/sources.yml", sources)
        .file("data/mixed.csv", "id,name\n1,Ada\n2,JosÃ© García\n3,Zoë\n");
    fs_err::write(p.path().join("data/people.csv"), &latin).unwrap();

    let ran = p.run(["audit", "--format", "json"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    // The reader's refusal is a warning line first; the audit comes last.
    let (warning, audit) = ran.stdout.trim().split_once('\n').expect("a warning, then the audit");
    assert!(
        warning.contains(r#""severity":"warning","message":"cannot read `crm.people`: invalid UTF-8"#),
        "{warning}"
    );
    let audit: serde_json::Value = serde_json::from_str(audit).expect("one JSON document");
    let table = |name: &str| audit["tables"].as_array().unwrap().iter().find(|t| t["name"] == name).unwrap().clone();
    let col = |t: &serde_json::Value, name: &str| {
        t["columns"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone()
    };
    let people_t = table("crm.people");
    assert_eq!(people_t["rows"], 8, "{people_t}");
    let text = &people_t["text"];
    assert_eq!(
        (&text["encoding"], &text["read_with_replacement"], &text["replaced_values"], &text["guessed"]),
        (&"UTF-8".into(), &true.into(), &(5 + 5).into(), &"windows-1252".into()),
        "{text}"
    );
    let name = col(&people_t, "name");
    assert_eq!((&name["replaced"], &name["non_ascii"]), (&5.into(), &5.into()), "{name}");
    assert_eq!(
        name["replaced_examples"][0],
        serde_json::json!({"value": "Zo\u{FFFD} Bront\u{FFFD}", "line": 2}),
        "{name}"
    );
    assert_eq!(name["replaced_examples"][1]["line"], 4, "{name}");
    assert_eq!(col(&people_t, "city")["replaced"], 5);

    let mixed = table("crm.mixed");
    let name = col(&mixed, "name");
    assert_eq!((&name["mojibake"], &name["non_ascii"], &name["replaced"]), (&1.into(), &2.into(), &0.into()));
    assert_eq!(name["mojibake_examples"], serde_json::json!([{"value": "JosÃ© García", "line": 3}]));
    assert_eq!(
        (&mixed["text"]["read_with_replacement"], &mixed["text"]["mojibake_values"]),
        (&false.into(), &1.into())
    );

    let shown = p.run(["audit", "-s", "source:crm.people"]);
    assert!(
        shown.stdout.contains("the bytes look like windows-1252: declare `encoding: windows-1252` on the source"),
        "{}",
        shown.stdout
    );
    assert!(shown.stdout.contains("5 with bytes replaced (e.g. `Zo\u{FFFD} Bront\u{FFFD}` at data/people.csv:2"));
    let page = shown.stderr.split("in a browser in `").nth(1).and_then(|r| r.split('`').next()).expect("a page");
    let html = fs_err::read_to_string(p.path().join(page)).unwrap();
    assert!(html.contains("declare <code>encoding: windows-1252</code> on the source"), "{html}");
    assert!(html.contains("5 with replaced bytes"), "{html}");

    // Declared, the file reads clean: no byte replaced, nothing to advise.
    let declared =
        sources.replace("path: data/people.csv\n", "path: data/people.csv\n        encoding: windows-1252\n");
    let p = p.file("models/sources.yml", &declared);
    let ran = p.run(["audit", "-s", "source:crm.people", "--format", "json"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let audit: serde_json::Value = serde_json::from_str(ran.stdout.trim()).unwrap();
    let t = &audit["tables"][0];
    assert_eq!(
        (&t["text"]["encoding"], &t["text"]["replaced_values"], &t["text"]["guessed"]),
        (&"windows-1252".into(), &0.into(), &"windows-1252".into()),
        "{t}"
    );
    let name = col(t, "name");
    assert_eq!(
        (&name["replaced"], &name["non_ascii"], &name["max"]),
        (&0.into(), &5.into(), &"Ångström Müller".into())
    );
}
