//! A MariaDB server of a test's own: for what the shared server on this
//! machine cannot be made to do without disturbing other tests (offer TLS,
//! refuse `LOAD DATA LOCAL`).

/// A MariaDB server of the test's own, in a temporary directory, serving
/// TLS with a certificate for `localhost` made here (the shared server on
/// this machine offers no TLS). Stopped when dropped.
pub(crate) struct PrivateMariadb {
    dir: tempfile::TempDir,
    server: std::process::Child,
    pub(crate) port: u16,
}

impl PrivateMariadb {
    /// Starts one; `extra` are more `mariadbd` options.
    pub(crate) fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = |name: &str| dir.path().join(name);
        let (cert, key) = crate::common::self_signed("localhost");
        fs_err::write(path("cert.pem"), cert).unwrap();
        fs_err::write(path("key.pem"), key).unwrap();
        // Clients sign in with a certificate the server trusts as its own root.
        let (cert, key) = crate::common::self_signed("ferry client");
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
            .args(extra)
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

    pub(crate) fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    pub(crate) fn cert(&self) -> String {
        self.file("cert.pem")
    }

    pub(crate) fn sql(&self, sql: &str) -> String {
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
