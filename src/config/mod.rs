//! Runtime configuration: TOML, strict, validated once at start-up.
//!
//! Every key can be overridden by an environment variable `ENROLLCA_<SECTION>_<KEY>` (docker
//! users and scripts rely on this). The override table in `env` is the single list of keys; an
//! `ENROLLCA_*` variable that names no key is an error, like an unknown key in the file.
//! `sections` holds the file's sections and their defaults, `validate` the start-up checks.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::acme::settings::AcmeSettings;
use crate::http::settings::{Limits, Tls};
use crate::store::StoreSettings;

mod env;
mod sections;
mod validate;

pub use env::{RESERVED_ENV, env_var_for, keys};
pub use sections::{Ca, Events, Issuance, Listen, Log, LogFormat, Scep};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: Listen,
    pub tls: Tls,
    pub ca: Ca,
    pub issuance: Issuance,
    pub scep: Scep,
    pub acme: AcmeSettings,
    pub events: Events,
    pub limits: Limits,
    pub log: Log,
    pub store: StoreSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

impl Config {
    /// Reads `path` (when given), applies `ENROLLCA_*` overrides from `env`, validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::parse(&text).map_err(|message| ConfigError::Parse {
                    path: path.to_owned(),
                    message,
                })?
            }
            None => Self::default(),
        };
        config.apply_env(env)?;
        config.validate()?;
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_loopback() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.listen.http.to_string(), "127.0.0.1:8080");
        assert_eq!(c.listen.https.to_string(), "127.0.0.1:8443");
        assert_eq!(c.acme.http01_port, 80);
        assert_eq!(c.listen.public_url(), "http://127.0.0.1:8080");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("[listen]\nhtp = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(err.contains("unknown field `htp`"), "{err}");
        let err = Config::parse("[lisen]\n").unwrap_err();
        assert!(err.contains("unknown field `lisen`"), "{err}");
    }

    #[test]
    fn bad_address_is_named() {
        let err = Config::parse("[listen]\nhttp = \"nowhere\"\n").unwrap_err();
        assert!(err.contains("http"), "{err}");
        assert!(err.contains("invalid socket address"), "{err}");
    }

    #[test]
    fn every_key_has_an_env_override() {
        let c = Config::load(
            None,
            env(&[
                ("ENROLLCA_LISTEN_HTTP", "127.0.0.1:9000"),
                ("ENROLLCA_LISTEN_HTTPS", "127.0.0.1:9443"),
                ("ENROLLCA_LISTEN_PUBLIC_URL", "http://ca.example:9000/"),
                ("ENROLLCA_SCEP_CHALLENGE", "s3cret"),
                ("ENROLLCA_ACME_HTTP01_PORT", "5002"),
                ("ENROLLCA_ISSUANCE_LIFETIME", "30d"),
                ("ENROLLCA_LOG_FORMAT", "json"),
                ("PATH", "/usr/bin"),
                ("ENROLLCA_CA_PASSPHRASE", "not a key"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen.http.port(), 9000);
        assert_eq!(c.listen.https.port(), 9443);
        assert_eq!(c.listen.public_url(), "http://ca.example:9000");
        assert!(c.scep.challenge.unwrap().matches(b"s3cret"));
        assert_eq!(c.acme.http01_port, 5002);
        assert_eq!(c.issuance.lifetime, Duration::from_secs(30 * 86_400));
        assert_eq!(c.log.format, LogFormat::Json);
        // Every key in the table is a real key of the file format.
        for key in keys() {
            let (section, field) = key.split_once('.').unwrap();
            let toml = format!("[{section}]\n{field} = 1\n");
            let err = Config::parse(&toml).err().unwrap_or_default();
            assert!(!err.contains("unknown field"), "{key}: {err}");
        }
    }

    #[test]
    fn the_store_is_sled_unless_a_postgres_url_is_given_with_it() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.store.backend, crate::store::BackendKind::Sled);
        let c = Config::load(
            None,
            env(&[
                ("ENROLLCA_STORE_BACKEND", "postgres"),
                (
                    "ENROLLCA_STORE_URL",
                    "postgres://ca:pw@db.internal:5433/enrollca",
                ),
                ("ENROLLCA_STORE_POOL_SIZE", "32"),
            ]),
        )
        .unwrap();
        assert_eq!(c.store.backend, crate::store::BackendKind::Postgres);
        assert_eq!(c.store.pool_size, 32);
        assert!(
            !format!("{:?}", c.store).contains("pw@"),
            "the URL is a secret"
        );
        for (vars, key) in [
            (&[("ENROLLCA_STORE_BACKEND", "postgres")][..], "store.url"),
            (
                &[("ENROLLCA_STORE_URL", "postgres://db/x")][..],
                "store.url",
            ),
            (
                &[
                    ("ENROLLCA_STORE_BACKEND", "postgres"),
                    ("ENROLLCA_STORE_URL", "postgres://ca:hunter2@db:notaport/x"),
                ][..],
                "store.url",
            ),
            (&[("ENROLLCA_STORE_POOL_SIZE", "0")][..], "store.pool_size"),
        ] {
            let err = Config::load(None, env(vars)).unwrap_err().to_string();
            assert!(err.contains(key), "{vars:?}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        let err = Config::load(None, env(&[("ENROLLCA_STORE_BACKEND", "mysql")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sled or postgres"), "{err}");
    }

    #[test]
    fn env_lists_are_comma_separated() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.pem"), dir.path().join("b.pem"));
        std::fs::write(&a, "x").unwrap();
        std::fs::write(&b, "x").unwrap();
        let list = format!("{}, {}", a.display(), b.display());
        let c = Config::load(None, env(&[("ENROLLCA_ACME_ATTESTATION_ROOTS", &list)])).unwrap();
        assert_eq!(c.acme.attestation_roots, vec![a, b]);
    }

    #[test]
    fn the_attestation_revocation_list_is_set_from_the_environment() {
        let c = Config::load(
            None,
            env(&[
                (
                    "ENROLLCA_ACME_ATTESTATION_REVOCATIONS",
                    "https://mdm.example/revoked.json",
                ),
                ("ENROLLCA_ACME_ATTESTATION_REVOCATIONS_REFRESH", "10min"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.acme.attestation_revocations.as_deref(),
            Some("https://mdm.example/revoked.json")
        );
        assert_eq!(c.acme.attestation_revocations_refresh.as_secs(), 600);
    }

    #[test]
    fn env_errors_name_the_variable() {
        let err = Config::load(None, env(&[("ENROLLCA_LISTEN_HTTP", "localhost")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("environment variable ENROLLCA_LISTEN_HTTP"),
            "{err}"
        );
        let err = Config::load(None, env(&[("ENROLLCA_LISTEN_HTPP", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ENROLLCA_LISTEN_HTPP"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let err = Config::load(None, env(&[("ENROLLCA_TLS_CERT", "/nonexistent/cert.pem")]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("config key `tls.cert`"), "{err}");
        let err = Config::load(
            None,
            env(&[("ENROLLCA_ACME_ATTESTATION_ROOTS", "/nonexistent/root.pem")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("acme.attestation_roots"), "{err}");
        let err = Config::load(None, env(&[("ENROLLCA_LISTEN_HTTPS", "127.0.0.1:8080")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen.https"), "{err}");
        let hook = [("ENROLLCA_EVENTS_WEBHOOK_URL", "http://mdm.internal/hook")];
        let err = Config::load(None, env(&hook)).unwrap_err().to_string();
        assert!(err.contains("events.webhook_secret"), "{err}");
        let err = Config::load(None, env(&[("ENROLLCA_SCEP_APPROVAL", "sometimes")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ENROLLCA_SCEP_APPROVAL") && err.contains("manual"),
            "{err}"
        );
    }

    #[test]
    fn attesting_profiles_are_checked() {
        let load = |profile: &str| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("c.toml");
            std::fs::write(&path, format!("[acme.profiles.d]\n{profile}")).unwrap();
            Config::load(Some(&path), env(&[])).map_err(|e| e.to_string())
        };
        let mixed = load("challenges = [\"device-attest-01\", \"http-01\"]\n").unwrap_err();
        assert!(mixed.contains("must be its only challenge"), "{mixed}");
        let no_keys =
            load("challenges = [\"device-attest-01\"]\nattestation_key_types = []\n").unwrap_err();
        assert!(
            no_keys.contains("accepts no attested key type"),
            "{no_keys}"
        );
        let hook = load("challenges = [\"device-attest-01\"]\ndevice_inventory = \"webhook\"\n")
            .unwrap_err();
        assert!(hook.contains("needs inventory_webhook_url"), "{hook}");
        let unvouched =
            load("challenges = [\"device-attest-01\"]\nrequire_attestation = false\n").unwrap_err();
        assert!(
            unvouched.contains("require_attestation = false needs permanent_identifier"),
            "{unvouched}"
        );
        let ok = load("challenges = [\"device-attest-01\"]\ndns_names = []\n").unwrap();
        assert!(ok.acme.profiles["d"].attests());
    }
}
