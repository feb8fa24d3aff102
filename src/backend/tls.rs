//! TLS for the server targets, from a profile's `sslmode`, `sslrootcert`,
//! `sslcert` and `sslkey`, with libpq's meanings for both PostgreSQL and
//! MySQL/MariaDB:
//!
//! | `sslmode` | TLS | certificate checked |
//! |---|---|---|
//! | `disable` | never | - |
//! | `allow`, `prefer` (default) | when the server offers it | no |
//! | `require` | always | only against `sslrootcert` when one is given (libpq's rule) |
//! | `verify-ca` | always | signed by a root of `sslrootcert` |
//! | `verify-full` | always | signed, and naming the host |
//!
//! `sslrootcert: system` means the machine's trust store; without
//! `sslrootcert` the verifying modes use `~/.postgresql/root.crt` if it
//! exists, as libpq does, and are an error otherwise. This module decides
//! what to check; the drivers (postgres-openssl, mysql_async over
//! native-tls) do the handshakes.

use camino::Utf8PathBuf;

use crate::backend::profiles::{ServerTarget, SslMode};

/// What a connection must do about TLS, resolved from a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPolicy {
    pub mode: SslMode,
    /// Whether plain text is acceptable when the server offers no TLS.
    pub optional: bool,
    /// Roots to check the server's certificate against; `None` checks nothing.
    pub roots: Option<Roots>,
    /// Whether the certificate must name the host.
    pub verify_host: bool,
    /// A client certificate and its key (PEM).
    pub identity: Option<(Utf8PathBuf, Utf8PathBuf)>,
}

/// Where trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// A PEM file of certificates.
    File(Utf8PathBuf),
    /// The machine's trust store.
    System,
}

impl TlsPolicy {
    /// The policy for `s`; a verifying mode without roots is the message.
    pub fn for_target(s: &ServerTarget) -> Result<Self, String> {
        Self::resolve(s, default_root_file)
    }

    /// [`TlsPolicy::for_target`], with libpq's default roots file found by `default_roots`.
    fn resolve(s: &ServerTarget, default_roots: impl FnOnce() -> Option<Roots>) -> Result<Self, String> {
        let mode = s.ssl_mode();
        let given =
            s.sslrootcert.as_ref().map(|p| if p.as_str() == "system" { Roots::System } else { Roots::File(p.clone()) });
        let roots = match mode {
            SslMode::Disable | SslMode::Allow | SslMode::Prefer => None,
            SslMode::Require => given,
            SslMode::VerifyCa | SslMode::VerifyFull => Some(match given.or_else(default_roots) {
                Some(r) => r,
                None => {
                    return Err(format!(
                        "`sslmode: {}` checks the server's certificate: set `sslrootcert` to the PEM file of the \
                         roots that sign it, or to `system` for this machine's trust store",
                        s.sslmode.as_deref().unwrap_or_default()
                    ));
                }
            }),
        };
        Ok(TlsPolicy {
            mode,
            optional: matches!(mode, SslMode::Allow | SslMode::Prefer),
            roots,
            verify_host: mode == SslMode::VerifyFull,
            identity: s.sslcert.clone().zip(s.sslkey.clone()),
        })
    }

    /// Whether the connection tries TLS at all.
    pub fn enabled(&self) -> bool {
        self.mode != SslMode::Disable
    }

    /// The files this policy names, each checked to exist (OpenSSL's own
    /// message for a missing file is three lines of library codes).
    fn files(&self) -> Result<(), String> {
        let roots = match &self.roots {
            Some(Roots::File(p)) => Some(("sslrootcert", p)),
            _ => None,
        };
        let identity = self.identity.iter().flat_map(|(c, k)| [("sslcert", c), ("sslkey", k)]);
        for (key, path) in roots.into_iter().chain(identity) {
            if !path.is_file() {
                return Err(format!("`{key}` `{path}` is not a file"));
            }
        }
        Ok(())
    }

    /// An OpenSSL connector that checks what this policy asks (PostgreSQL).
    pub fn openssl_connector(&self) -> Result<openssl::ssl::SslConnector, String> {
        use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
        self.files()?;
        let err = |what: &str, e: openssl::error::ErrorStack| format!("{what}: {e}");
        let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| err("starting TLS", e))?;
        match &self.roots {
            None => b.set_verify(SslVerifyMode::NONE),
            Some(Roots::File(path)) => {
                // Only these roots: the builder starts out trusting the
                // machine's store, which would make `sslrootcert` a no-op.
                let pem = fs_err::read(path).map_err(|e| format!("reading `sslrootcert`: {e}"))?;
                let certs = openssl::x509::X509::stack_from_pem(&pem)
                    .map_err(|e| err(&format!("`sslrootcert` `{path}` is not a PEM certificate"), e))?;
                let mut store = openssl::x509::store::X509StoreBuilder::new().map_err(|e| err("starting TLS", e))?;
                for c in certs {
                    store.add_cert(c).map_err(|e| err(&format!("reading `sslrootcert` `{path}`"), e))?;
                }
                b.set_cert_store(store.build());
            }
            Some(Roots::System) => {
                let found = openssl_probe::probe();
                if let Some(file) = &found.cert_file {
                    b.set_ca_file(file).map_err(|e| err(&format!("reading `{}`", file.display()), e))?;
                }
                for dir in &found.cert_dir {
                    let dir = dir.to_str().ok_or("the trust store's path is not UTF-8")?;
                    b.cert_store_mut()
                        .add_lookup(openssl::x509::store::X509Lookup::hash_dir())
                        .and_then(|l| l.add_dir(dir, SslFiletype::PEM))
                        .map_err(|e| err(&format!("reading `{dir}`"), e))?;
                }
            }
        }
        if let Some((cert, key)) = &self.identity {
            b.set_certificate_chain_file(cert).map_err(|e| err(&format!("reading `sslcert` `{cert}`"), e))?;
            b.set_private_key_file(key, SslFiletype::PEM).map_err(|e| err(&format!("reading `sslkey` `{key}`"), e))?;
        }
        Ok(b.build())
    }

    /// mysql_async's TLS options for this policy (`None`: plain text).
    pub fn mysql_opts(&self) -> Result<Option<mysql_async::SslOpts>, String> {
        use mysql_async::{ClientIdentity, SslOpts};
        if !self.enabled() {
            return Ok(None);
        }
        self.files()?;
        let mut opts = SslOpts::default()
            .with_danger_accept_invalid_certs(self.roots.is_none())
            .with_danger_skip_domain_validation(!self.verify_host);
        if let Some(Roots::File(path)) = &self.roots {
            opts =
                opts.with_root_certs(vec![path.clone().into_std_path_buf().into()]).with_disable_built_in_roots(true);
        }
        if let Some((cert, key)) = &self.identity {
            // native-tls takes a client identity as PKCS#12 only.
            let pkcs12 = pkcs12_identity(cert, key)?;
            opts = opts.with_client_identity(Some(ClientIdentity::new(pkcs12.into()).with_password("")));
        }
        Ok(Some(opts))
    }
}

/// libpq's default roots file, `~/.postgresql/root.crt`, when it exists.
fn default_root_file() -> Option<Roots> {
    let home = std::env::var_os("HOME")?;
    let path = Utf8PathBuf::from_path_buf(std::path::PathBuf::from(home).join(".postgresql/root.crt")).ok()?;
    path.is_file().then_some(Roots::File(path))
}

/// A PEM certificate chain and key as an unprotected PKCS#12 archive.
fn pkcs12_identity(cert: &Utf8PathBuf, key: &Utf8PathBuf) -> Result<Vec<u8>, String> {
    let read = |p: &Utf8PathBuf, what: &str| fs_err::read(p).map_err(|e| format!("reading `{what}`: {e}"));
    let chain = openssl::x509::X509::stack_from_pem(&read(cert, "sslcert")?)
        .map_err(|e| format!("`sslcert` `{cert}` is not a PEM certificate: {e}"))?;
    let key = openssl::pkey::PKey::private_key_from_pem(&read(key, "sslkey")?)
        .map_err(|e| format!("`sslkey` `{key}` is not a PEM private key: {e}"))?;
    let (leaf, rest) = chain.split_first().ok_or_else(|| format!("`sslcert` `{cert}` holds no certificate"))?;
    let mut ca = openssl::stack::Stack::new().map_err(|e| e.to_string())?;
    for c in rest {
        ca.push(c.clone()).map_err(|e| e.to_string())?;
    }
    let mut builder = openssl::pkcs12::Pkcs12::builder();
    builder.name("ferry").pkey(&key).cert(leaf).ca(ca);
    let archive = builder.build2("").map_err(|e| format!("packing the client certificate: {e}"))?;
    archive.to_der().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::profiles::Secret;

    fn target(mode: Option<&str>, root: Option<&str>) -> ServerTarget {
        ServerTarget {
            host: "db.example".into(),
            port: 5432,
            user: "u".into(),
            password: Secret::new(String::new()),
            dbname: "d".into(),
            schema: "s".into(),
            sslmode: mode.map(str::to_owned),
            sslrootcert: root.map(Utf8PathBuf::from),
            sslcert: None,
            sslkey: None,
            local_infile: None,
        }
    }

    #[test]
    fn modes_decide_what_is_checked() {
        let p = TlsPolicy::for_target(&target(None, None)).unwrap();
        assert_eq!((p.mode, p.optional, p.roots, p.verify_host), (SslMode::Prefer, true, None, false));
        let p = TlsPolicy::for_target(&target(Some("disable"), Some("/r.pem"))).unwrap();
        assert!(!p.enabled() && p.roots.is_none());
        let p = TlsPolicy::for_target(&target(Some("require"), None)).unwrap();
        assert_eq!((p.optional, p.roots), (false, None));
        // libpq: `require` with a root file checks the chain.
        let p = TlsPolicy::for_target(&target(Some("require"), Some("/r.pem"))).unwrap();
        assert_eq!((p.roots, p.verify_host), (Some(Roots::File("/r.pem".into())), false));
        let p = TlsPolicy::for_target(&target(Some("verify-full"), Some("system"))).unwrap();
        assert_eq!((p.roots, p.verify_host), (Some(Roots::System), true));
    }

    #[test]
    fn a_verifying_mode_without_roots_says_what_to_set() {
        let e = TlsPolicy::resolve(&target(Some("verify-ca"), None), || None).unwrap_err();
        assert!(e.contains("`sslmode: verify-ca`") && e.contains("sslrootcert"), "{e}");
        let home = || Some(Roots::File("/home/me/.postgresql/root.crt".into()));
        let p = TlsPolicy::resolve(&target(Some("verify-ca"), None), home).unwrap();
        assert_eq!(p.roots, home());
    }
}
