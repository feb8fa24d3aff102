//! TLS to the targets, against the servers on this machine: every
//! `sslmode` is honoured, checked by what the server itself reports about
//! the connection (`ferry debug` reads `pg_stat_ssl` / `Ssl_version`), and a
//! load over a verified connection lands its rows.

use crate::common::TestProject;
use crate::load::{Db, ok};

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

/// A MariaDB server of the test's own, in a temporary directory, serving
/// TLS with a certificate for `localhost` made here (the shared server on
/// this machine offers no TLS). Stopped when dropped.
struct PrivateMariadb {
    dir: tempfile::TempDir,
    server: std::process::Child,
    port: u16,
}

impl PrivateMariadb {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = |name: &str| dir.path().join(name);
        let (cert, key) = self_signed("localhost");
        fs_err::write(path("cert.pem"), cert).unwrap();
        fs_err::write(path("key.pem"), key).unwrap();
        // Clients sign in with a certificate the server trusts as its own root.
        let (cert, key) = self_signed("ferry client");
        fs_err::write(path("client.pem"), cert).unwrap();
        fs_err::write(path("client.key"), key).unwrap();
        let installed = std::process::Command::new("mariadb-install-db")
            .args(["--no-defaults", "--user=root", "--auth-root-authentication-method=normal", "--skip-test-db"])
            .arg(format!("--datadir={}", path("data").display()))
            .output()
            .expect("mariadb-install-db runs (MariaDB is installed on this machine)");
        assert!(installed.status.success(), "{}", String::from_utf8_lossy(&installed.stderr));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let server = std::process::Command::new("mariadbd")
            .args(["--no-defaults", "--user=root", "--bind-address=127.0.0.1", "--skip-log-bin"])
            .arg(format!("--port={port}"))
            .arg(format!("--datadir={}", path("data").display()))
            .arg(format!("--socket={}", path("sock").display()))
            .arg(format!("--pid-file={}", path("pid").display()))
            .arg(format!("--log-error={}", path("error.log").display()))
            .arg(format!("--ssl-cert={}", path("cert.pem").display()))
            .arg(format!("--ssl-key={}", path("key.pem").display()))
            .arg(format!("--ssl-ca={}", path("client.pem").display()))
            .spawn()
            .expect("mariadbd starts");
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed().as_secs() < 60,
                "{}",
                fs_err::read_to_string(path("error.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        PrivateMariadb { dir, server, port }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn cert(&self) -> String {
        self.file("cert.pem")
    }

    fn sql(&self, sql: &str) -> String {
        let out = std::process::Command::new("mariadb")
            .args(["-h", "127.0.0.1", "-u", "root", "--batch", "--skip-column-names", "-e", sql])
            .arg(format!("-P{}", self.port))
            .output()
            .expect("the mariadb client");
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for PrivateMariadb {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// A self-signed certificate for `cn` (also its DNS name) and its key, as PEM.
fn self_signed(cn: &str) -> (Vec<u8>, Vec<u8>) {
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

#[test]
fn mysql_tls_is_verified_against_a_server_that_offers_it() {
    let server = PrivateMariadb::start();
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
