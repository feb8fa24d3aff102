//! TLS to the targets, against the servers on this machine: every
//! `sslmode` is honoured, checked by what the server itself reports about
//! the connection (`ferry debug` reads `pg_stat_ssl` / `Ssl_version`), and a
//! load over a verified connection lands its rows.

use crate::common::TestProject;
use crate::load::{Db, ok};
use crate::private_mariadb::PrivateMariadb;

/// A PostgreSQL profile for `host`, with `extra` lines (TLS settings).
fn pg_profile(db: &Db, host: &str, extra: &str) -> String {
    let Db::Pg { url, schema, .. } = db else { unreachable!("a PostgreSQL test") };
    format!(
        "shop:\n  target: t\n  outputs:\n    t:\n      type: postgres\n      host: {host}\n      port: {}\n      user: {}\n      dbname: {}\n      schema: {schema}\n{extra}",
        url.port().unwrap_or(5432),
        url.username(),
        url.path().trim_start_matches('/'),
    )
}

fn debug(p: &TestProject) -> (Option<i32>, String) {
    let ran = p.run(["debug"]);
    (ran.code, format!("{}{}", ran.stdout, ran.stderr))
}

/// The PEM certificate the PostgreSQL server presents (Debian's is
/// `ssl-cert-snakeoil.pem`, issued to `localhost` by itself).
async fn server_certificate(db: &mut Db) -> String {
    let Db::Pg { client, .. } = db else { unreachable!("a PostgreSQL test") };
    let on: String = client.query_one("SHOW ssl", &[]).await.expect("SHOW ssl").get(0);
    assert_eq!(on, "on", "these tests need the PostgreSQL server to offer TLS (`ssl = on`)");
    client.query_one("SHOW ssl_cert_file", &[]).await.expect("SHOW ssl_cert_file").get(0)
}

#[tokio::test]
async fn postgres_every_sslmode_is_honoured() {
    let Some(mut db) = Db::pg("tls").await else { return };
    let cert = server_certificate(&mut db).await;
    let other = crate::common::fixtures().parent().expect("tests/fixtures").join("tls/other_root.pem");
    let other = other.to_str().expect("UTF-8 path");
    let project = |host: &str, extra: &str| {
        TestProject::new()
            .file("ferry.yml", "name: shop\nprofile: shop\n")
            .file("profiles.yml", &pg_profile(&db, host, extra))
            .model("m.sql", "{{ config(materialized='table') }} select 1 as id, 'x' as name")
    };

    let (code, out) = debug(&project("127.0.0.1", "      sslmode: disable\n"));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("connection: ok, PostgreSQL") && out.contains("not encrypted"), "{out}");
    // Without `sslmode`: prefer, as libpq does, so TLS when the server offers it.
    for extra in ["", "      sslmode: prefer\n", "      sslmode: allow\n", "      sslmode: require\n"] {
        let (code, out) = debug(&project("127.0.0.1", extra));
        assert_eq!(code, Some(0), "{extra}: {out}");
        assert!(out.contains(", TLS TLSv1."), "{extra}: {out}");
    }
    // The server's certificate names `localhost`, signed by itself.
    let (code, out) = debug(&project("localhost", &format!("      sslmode: verify-full\n      sslrootcert: {cert}\n")));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(", TLS TLSv1."), "{out}");
    let (code, out) = debug(&project("127.0.0.1", &format!("      sslmode: verify-ca\n      sslrootcert: {cert}\n")));
    assert_eq!(code, Some(0), "verify-ca does not check the host name: {out}");
    assert!(out.contains(", TLS TLSv1."), "{out}");

    let (code, out) = debug(&project("127.0.0.1", &format!("      sslmode: verify-full\n      sslrootcert: {cert}\n")));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("cannot connect to target `t` (127.0.0.1:"), "{out}");
    assert!(out.contains("certificate verify failed") && out.contains("IP address mismatch"), "{out}");
    let (code, out) =
        debug(&project("localhost", &format!("      sslmode: verify-full\n      sslrootcert: {other}\n")));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("certificate verify failed"), "{out}");
    // `require` with a root file checks the chain, as libpq does.
    let (code, out) = debug(&project("localhost", &format!("      sslmode: require\n      sslrootcert: {other}\n")));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("certificate verify failed"), "{out}");
    let (code, out) = debug(&project("localhost", "      sslmode: verify-ca\n"));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("`sslmode: verify-ca` checks the server's certificate: set `sslrootcert`"), "{out}");
    let (code, out) =
        debug(&project("localhost", "      sslmode: require\n      sslcert: client.pem\n      sslkey: client.key\n"));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("`sslcert` `") && out.contains("client.pem` is not a file"), "{out}");

    // A load over a verified connection.
    let p = project("localhost", &format!("      sslmode: verify-full\n      sslrootcert: {cert}\n"));
    ok(&p.run(["run"]));
    assert_eq!(db.rows("m").await, [r#"{"id":1,"name":"x"}"#]);
    db.drop_schema().await;
}

#[tokio::test]
async fn mysql_sslmode_is_honoured() {
    let Some(mut db) = Db::mysql("tls").await else { return };
    let Db::My { conn, url, schema } = &mut db else { unreachable!("a MySQL test") };
    use mysql_async::prelude::Queryable;
    let have: Option<String> = conn.query_first("SELECT @@have_ssl").await.expect("@@have_ssl");
    let offers_tls = have.as_deref() == Some("YES");
    let (url, schema) = (url.clone(), schema.clone());
    let project = |extra: &str| {
        let profile = format!(
            "shop:\n  target: t\n  outputs:\n    t:\n      type: mysql\n      host: {}\n      port: {}\n      user: {}\n      schema: {schema}\n{extra}",
            url.host_str().unwrap_or("127.0.0.1"),
            url.port().unwrap_or(3306),
            url.username(),
        );
        TestProject::new()
            .file("ferry.yml", "name: shop\nprofile: shop\n")
            .file("profiles.yml", &profile)
            .model("m.sql", "{{ config(materialized='table') }} select 1 as id, 'x' as name")
    };
    let (code, out) = debug(&project("      sslmode: disable\n"));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("connection: ok, MySQL") && out.contains("not encrypted"), "{out}");
    // `prefer` (the default) encrypts when the server offers TLS, and falls
    // back to plain text when it does not.
    let (code, out) = debug(&project(""));
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.contains(", TLS TLSv1."), offers_tls, "{out}");
    let p = project("");
    ok(&p.run(["run"]));
    assert_eq!(db.rows("m").await, ["id='1' name='x'"]);
    let (code, out) = debug(&project("      sslmode: require\n"));
    if offers_tls {
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains(", TLS TLSv1."), "{out}");
    } else {
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("the server does not offer TLS, which the target's `sslmode` requires"), "{out}");
    }
    db.drop_schema().await;
}

#[test]
fn mysql_tls_is_verified_against_a_server_that_offers_it() {
    let server = PrivateMariadb::start(&[]);
    let other = crate::common::fixtures().parent().expect("tests/fixtures").join("tls/other_root.pem");
    let as_user = |user: &str, host: &str, extra: &str| {
        let profile = format!(
            "shop:\n  target: t\n  outputs:\n    t:\n      type: mysql\n      host: {host}\n      port: {}\n      user: {user}\n      schema: tls_test\n{extra}",
            server.port
        );
        TestProject::new()
            .file("ferry.yml", "name: shop\nprofile: shop\n")
            .file("profiles.yml", &profile)
            .model("m.sql", "{{ config(materialized='table') }} select 1 as id, 'x' as name")
    };
    let project = |host: &str, extra: &str| as_user("root", host, extra);
    let verify = |root: &str| format!("      sslmode: verify-full\n      sslrootcert: {root}\n");
    for (host, extra) in [
        ("127.0.0.1", String::new()),
        ("127.0.0.1", "      sslmode: require\n".to_owned()),
        ("127.0.0.1", format!("      sslmode: verify-ca\n      sslrootcert: {}\n", server.cert())),
        ("localhost", verify(&server.cert())),
    ] {
        let (code, out) = debug(&project(host, &extra));
        assert_eq!(code, Some(0), "{host} {extra}: {out}");
        assert!(out.contains(", TLS TLSv1."), "{host} {extra}: {out}");
    }
    let (code, out) = debug(&project("127.0.0.1", "      sslmode: disable\n"));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("not encrypted"), "{out}");
    let (code, out) = debug(&project("127.0.0.1", &verify(&server.cert())));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("certificate verify failed") && out.contains("IP address mismatch"), "{out}");
    let (code, out) = debug(&project("localhost", &verify(other.to_str().unwrap())));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("certificate verify failed"), "{out}");
    // A load over the verified connection lands its rows.
    let p = project("localhost", &verify(&server.cert()));
    ok(&p.run(["run"]));
    assert_eq!(server.sql("SELECT id, name FROM tls_test.m"), "1\tx\n");

    // A user that must present a certificate: refused without one, let in
    // with `sslcert`/`sslkey` (PEM, handed to the driver as PKCS#12).
    server.sql("CREATE USER certified@'%' REQUIRE X509; GRANT ALL ON *.* TO certified@'%'");
    let as_certified = |extra: &str| as_user("certified", "localhost", &format!("{}{extra}", verify(&server.cert())));
    let (code, out) = debug(&as_certified(""));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("Access denied for user 'certified'"), "{out}");
    let identity =
        format!("      sslcert: {}\n      sslkey: {}\n", server.file("client.pem"), server.file("client.key"));
    let (code, out) = debug(&as_certified(&identity));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(", TLS TLSv1."), "{out}");
}
