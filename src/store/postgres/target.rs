//! Where a node's database is and how the connection to it is protected.
//!
//! `sslmode` and `sslrootcert` mean what they mean to libpq, so a URL that `psql` accepts
//! behaves the same here: `prefer` (the default) and `require` encrypt without knowing whom
//! they talk to, `verify-ca` checks the server's chain, `verify-full` its name as well. The
//! driver knows only the first three, so the URL is read here first and the driver is handed
//! the rest. Roots come from `sslrootcert`, or the system's store when it is absent; a node
//! that the database authenticates by certificate presents `sslcert` with `sslkey`.

use std::path::PathBuf;
use std::str::FromStr;

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use tokio_postgres::config::{Host, SslMode};

pub(super) use tokio_postgres::Config as PgConfig;

/// How much of the server a connection checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protection {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, not authenticated.
    Prefer,
    /// TLS or no connection, not authenticated.
    Require,
    /// TLS, the server's certificate chains to a trusted root.
    VerifyCa,
    /// As `VerifyCa`, and the certificate names the host connected to.
    VerifyFull,
}

impl FromStr for Protection {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode={other} is not one of disable, prefer, require, verify-ca, \
                     verify-full"
                ));
            }
        })
    }
}

/// A database to connect to: the driver's settings and the TLS connector that goes with them.
#[derive(Clone)]
pub struct PgTarget {
    pub config: PgConfig,
    pub tls: MakeTlsConnector,
    protection: Protection,
}

impl PgTarget {
    /// Reads a `postgres://` URL; the error says which part is wrong and never repeats it.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut mode = None;
        let (mut root, mut cert, mut key) = (None, None, None);
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match form_urlencoded::parse(pair.as_bytes()).next() {
                Some((k, v)) if k == "sslmode" => mode = Some(v.parse::<Protection>()?),
                Some((k, v)) if k == "sslrootcert" => root = Some(PathBuf::from(v.into_owned())),
                Some((k, v)) if k == "sslcert" => cert = Some(PathBuf::from(v.into_owned())),
                Some((k, v)) if k == "sslkey" => key = Some(PathBuf::from(v.into_owned())),
                _ => rest.push(pair),
            }
        }
        let driver_url = match rest.is_empty() {
            true => base.to_owned(),
            false => format!("{base}?{}", rest.join("&")),
        };
        let mut config: PgConfig = driver_url.parse().map_err(|e| format!("{e}"))?;
        let protection = match (mode.unwrap_or(Protection::Prefer), &root) {
            // libpq's rule: `require` with a root file checks the chain.
            (Protection::Require, Some(_)) => Protection::VerifyCa,
            (m, _) => m,
        };
        config.ssl_mode(match protection {
            Protection::Disable => SslMode::Disable,
            Protection::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        });
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err("sslcert and sslkey go together".into()),
        };
        let tls = connector(protection, root.as_deref(), identity)?;
        Ok(Self {
            config,
            tls,
            protection,
        })
    }

    /// Why this connection could be intercepted, when it could: the database is not on this
    /// machine and the server is not authenticated.
    pub fn exposure(&self) -> Option<String> {
        let remote = self.config.get_hosts().iter().any(|h| match h {
            Host::Tcp(name) => {
                name != "localhost"
                    && !name
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            Host::Unix(_) => false,
        });
        (remote && self.protection != Protection::VerifyFull).then(|| {
            format!(
                "the database is reached over the network with {:?}; anyone on the path \
                 could pose as it: set sslmode=verify-full (and sslrootcert) in store.url",
                self.protection
            )
        })
    }
}

fn connector(
    protection: Protection,
    root: Option<&std::path::Path>,
    identity: Option<(PathBuf, PathBuf)>,
) -> Result<MakeTlsConnector, String> {
    let mut builder = SslConnector::builder(SslMethod::tls_client())
        .map_err(|e| format!("setting up TLS: {e}"))?;
    if let Some(root) = root {
        builder
            .set_ca_file(root)
            .map_err(|e| format!("sslrootcert {}: {e}", root.display()))?;
    }
    if let Some((cert, key)) = identity {
        builder
            .set_certificate_chain_file(&cert)
            .map_err(|e| format!("sslcert {}: {e}", cert.display()))?;
        builder
            .set_private_key_file(&key, SslFiletype::PEM)
            .and_then(|()| builder.check_private_key())
            .map_err(|e| format!("sslkey {}: {e}", key.display()))?;
    }
    let verify = matches!(protection, Protection::VerifyCa | Protection::VerifyFull);
    if !verify {
        builder.set_verify(SslVerifyMode::NONE);
    }
    let mut tls = MakeTlsConnector::new(builder.build());
    let full = protection == Protection::VerifyFull;
    tls.set_callback(move |connection, _| {
        connection.set_verify_hostname(full);
        Ok(())
    });
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_modes_are_read_and_the_rest_reaches_the_driver() {
        let t = PgTarget::parse("postgres://u@db:5433/ca?sslmode=verify-full&application_name=x")
            .unwrap();
        assert_eq!(t.protection, Protection::VerifyFull);
        assert_eq!(t.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(t.config.get_application_name(), Some("x"));
        assert!(t.exposure().is_none());

        let t = PgTarget::parse("postgres://u@db/ca").unwrap();
        assert_eq!(t.protection, Protection::Prefer);
        assert!(t.exposure().unwrap().contains("verify-full"));
        let t = PgTarget::parse("postgres://u@127.0.0.1/ca?sslmode=disable").unwrap();
        assert_eq!(t.config.get_ssl_mode(), SslMode::Disable);
        assert!(t.exposure().is_none(), "loopback is not exposed");
    }

    #[test]
    fn require_with_a_root_checks_the_chain_and_bad_values_are_named() {
        let dir = std::env::temp_dir().join(format!("enrollca-target-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let root = dir.join("root.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["db".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(&root, cert.pem()).unwrap();
        let url = format!(
            "postgres://u@db/ca?sslmode=require&sslrootcert={}",
            root.display()
        );
        assert_eq!(
            PgTarget::parse(&url).unwrap().protection,
            Protection::VerifyCa
        );

        let e = PgTarget::parse("postgres://u:hunter2@db/ca?sslmode=verify")
            .err()
            .unwrap();
        assert!(
            e.contains("sslmode=verify ") && !e.contains("hunter2"),
            "{e}"
        );
        let e = PgTarget::parse("postgres://u@db/ca?sslmode=verify-ca&sslrootcert=/nonexistent")
            .err()
            .unwrap();
        assert!(e.contains("sslrootcert /nonexistent"), "{e}");
        let e = PgTarget::parse(&format!("postgres://u@db/ca?sslcert={}", root.display()))
            .err()
            .unwrap();
        assert!(e.contains("sslcert and sslkey go together"), "{e}");
        // A certificate whose key is another one.
        let other = dir.join("other.key");
        std::fs::write(&other, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let url = format!(
            "postgres://u@db/ca?sslcert={}&sslkey={}",
            root.display(),
            other.display()
        );
        let e = PgTarget::parse(&url).err().unwrap();
        assert!(e.contains("sslkey") && e.contains("other.key"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
