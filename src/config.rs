//! Runtime configuration: TOML, strict, validated once at start-up.
//!
//! Every key can be overridden by an environment variable `ENROLLCA_<SECTION>_<KEY>` (docker
//! users and scripts rely on this). The override table below is the single list of keys; an
//! `ENROLLCA_*` variable that names no key is an error, like an unknown key in the file.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::acme::settings::{AcmeSettings, DeviceInventory, PermanentIdentifier};
use crate::http::settings::{Limits, Tls};
use crate::policy::SanKind;
use crate::scep::pending::Approval;
use crate::secret::Secret;

/// Environment variables with the `ENROLLCA_` prefix that are not config keys.
pub const RESERVED_ENV: &[&str] = &[
    "ENROLLCA_DATA",
    "ENROLLCA_CONFIG",
    "ENROLLCA_CA_PASSPHRASE",
    "ENROLLCA_CA_PKCS11_PIN",
    "ENROLLCA_URL",
    "ENROLLCA_TOKEN",
    "ENROLLCA_LOG",
];

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
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// Plain HTTP: SCEP, MDM API, CRL, OCSP, health and metrics.
    pub http: SocketAddr,
    /// HTTPS: ACME (RFC 8555 requires TLS) and everything the HTTP listener serves.
    pub https: SocketAddr,
    /// Base URL written into certificates (CRL distribution point, OCSP). Defaults to the HTTP
    /// listener's address; set it to the name devices and relying parties reach.
    pub public_url: Option<String>,
    /// Base URL of the HTTPS listener as clients see it (ACME directory URLs).
    pub public_https_url: Option<String>,
    /// Serve the API on the plain HTTP listener too. Off: bearer tokens never cross the
    /// network in clear. Only for a loopback-only set-up.
    pub api_on_http: bool,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            https: SocketAddr::from(([127, 0, 0, 1], 8443)),
            public_url: None,
            public_https_url: None,
            api_on_http: false,
        }
    }
}

impl Listen {
    pub fn public_url(&self) -> String {
        base_url(self.public_url.as_deref(), "http", self.http)
    }

    pub fn public_https_url(&self) -> String {
        base_url(self.public_https_url.as_deref(), "https", self.https)
    }
}

fn base_url(configured: Option<&str>, scheme: &str, addr: SocketAddr) -> String {
    match configured {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("{scheme}://{addr}"),
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Ca {
    /// File holding the passphrase of encrypted CA keys. `ENROLLCA_CA_PASSPHRASE` may carry
    /// the passphrase itself instead; it is never accepted on the command line.
    pub passphrase_file: Option<PathBuf>,
    /// PKCS#11 library for CA keys held in a token (issuer key files named
    /// `pkcs11:token=…;object=…`), e.g. /usr/lib/softhsm/libsofthsm2.so.
    pub pkcs11_module: Option<PathBuf>,
    /// File holding the token's user PIN; `ENROLLCA_CA_PKCS11_PIN` may carry it instead.
    pub pkcs11_pin_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Issuance {
    /// Lifetime of issued end-entity certificates (clamped to the issuer's own validity).
    #[serde(with = "humantime_serde")]
    pub lifetime: Duration,
    /// How far notBefore is set in the past, for devices whose clocks run slow.
    #[serde(with = "humantime_serde")]
    pub backdate: Duration,
}

impl Default for Issuance {
    fn default() -> Self {
        Self {
            lifetime: Duration::from_secs(365 * 86_400),
            backdate: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Scep {
    /// Static challenge password accepted by SCEP enrolment (optional).
    pub challenge: Option<Secret>,
    /// Validation webhook: consulted for challenges that are neither the static one nor a
    /// one-time one; enrolment proceeds only on a 2xx answer.
    pub webhook_url: Option<String>,
    /// How long the webhook may take before the request is refused.
    #[serde(with = "humantime_serde")]
    pub webhook_timeout: Duration,
    /// `manual`: accepted enrolments wait (PENDING) until an operator approves or rejects
    /// them; clients collect the result with CertPoll.
    pub approval: Approval,
    /// subjectAltName forms a request may ask for itself (`dns`, `ip`, `email`, `uri`); a
    /// one-time challenge or the webhook may state SANs whatever this says. Default: none.
    pub allowed_sans: Vec<SanKind>,
    /// Serve requests encrypted with single DES (56-bit key: it protects the challenge only
    /// weakly); micromdm's scepclient can send nothing else. Replies are never single DES.
    pub allow_single_des: bool,
}

impl Default for Scep {
    fn default() -> Self {
        Self {
            challenge: None,
            webhook_url: None,
            webhook_timeout: Duration::from_secs(5),
            approval: Approval::Automatic,
            allowed_sans: Vec::new(),
            allow_single_des: true,
        }
    }
}

/// The event feed and pushing it to the MDM.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Events {
    /// Every event is POSTed here, in order, at least once (retried with backoff).
    pub webhook_url: Option<String>,
    /// Key of the `X-Enrollca-Signature: sha256=<hex HMAC>` header over each body.
    pub webhook_secret: Option<Secret>,
    /// How long before its notAfter a certificate gets its `expiring` event, so the MDM can
    /// have the device renew in time. `0s`: none.
    #[serde(with = "humantime_serde")]
    pub expiring_before: Duration,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            webhook_url: None,
            webhook_secret: None,
            expiring_before: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// `tracing` filter directive, e.g. `info` or `enrollca=debug,info`.
    pub level: String,
    pub format: LogFormat,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
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

type Apply = fn(&mut Config, &str) -> Result<(), String>;

/// The one list of configuration keys, used for environment overrides.
const KEYS: &[(&str, Apply)] = &[
    ("listen.http", |c, v| parse_into(&mut c.listen.http, v)),
    ("listen.https", |c, v| parse_into(&mut c.listen.https, v)),
    ("listen.public_url", |c, v| {
        c.listen.public_url = non_empty(v);
        Ok(())
    }),
    ("listen.public_https_url", |c, v| {
        c.listen.public_https_url = non_empty(v);
        Ok(())
    }),
    ("listen.api_on_http", |c, v| {
        parse_into(&mut c.listen.api_on_http, v)
    }),
    ("tls.cert", |c, v| {
        c.tls.cert = non_empty(v).map(PathBuf::from);
        Ok(())
    }),
    ("tls.key", |c, v| {
        c.tls.key = non_empty(v).map(PathBuf::from);
        Ok(())
    }),
    ("ca.passphrase_file", |c, v| {
        c.ca.passphrase_file = non_empty(v).map(PathBuf::from);
        Ok(())
    }),
    ("ca.pkcs11_module", |c, v| {
        c.ca.pkcs11_module = non_empty(v).map(PathBuf::from);
        Ok(())
    }),
    ("ca.pkcs11_pin_file", |c, v| {
        c.ca.pkcs11_pin_file = non_empty(v).map(PathBuf::from);
        Ok(())
    }),
    ("issuance.lifetime", |c, v| {
        c.issuance.lifetime = parse_duration(v)?;
        Ok(())
    }),
    ("issuance.backdate", |c, v| {
        c.issuance.backdate = parse_duration(v)?;
        Ok(())
    }),
    ("scep.challenge", |c, v| {
        c.scep.challenge = non_empty(v).map(Secret::new);
        Ok(())
    }),
    ("scep.webhook_url", |c, v| {
        c.scep.webhook_url = non_empty(v);
        Ok(())
    }),
    ("scep.webhook_timeout", |c, v| {
        c.scep.webhook_timeout = parse_duration(v)?;
        Ok(())
    }),
    ("scep.approval", |c, v| {
        c.scep.approval = match v.trim() {
            "automatic" => Approval::Automatic,
            "manual" => Approval::Manual,
            _ => return Err("expected `automatic` or `manual`".into()),
        };
        Ok(())
    }),
    ("scep.allowed_sans", |c, v| {
        c.scep.allowed_sans = v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        Ok(())
    }),
    ("scep.allow_single_des", |c, v| {
        parse_into(&mut c.scep.allow_single_des, v)
    }),
    ("acme.http01_port", |c, v| {
        parse_into(&mut c.acme.http01_port, v)
    }),
    ("acme.tls_alpn01_port", |c, v| {
        parse_into(&mut c.acme.tls_alpn01_port, v)
    }),
    ("acme.dns01_resolver", |c, v| {
        c.acme.dns01_resolver = match non_empty(v) {
            Some(addr) => Some(
                addr.parse()
                    .map_err(|e| format!("{e} (expected IP:port)"))?,
            ),
            None => None,
        };
        Ok(())
    }),
    ("acme.attestation_roots", |c, v| {
        c.acme.attestation_roots = v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
        Ok(())
    }),
    ("events.webhook_url", |c, v| {
        c.events.webhook_url = non_empty(v);
        Ok(())
    }),
    ("events.webhook_secret", |c, v| {
        c.events.webhook_secret = non_empty(v).map(Secret::new);
        Ok(())
    }),
    ("events.expiring_before", |c, v| {
        c.events.expiring_before = parse_duration(v)?;
        Ok(())
    }),
    ("limits.header_read_timeout", |c, v| {
        c.limits.header_read_timeout = parse_duration(v)?;
        Ok(())
    }),
    ("limits.idle_timeout", |c, v| {
        c.limits.idle_timeout = parse_duration(v)?;
        Ok(())
    }),
    ("limits.request_timeout", |c, v| {
        c.limits.request_timeout = parse_duration(v)?;
        Ok(())
    }),
    ("limits.max_connections", |c, v| {
        parse_into(&mut c.limits.max_connections, v)
    }),
    ("limits.http2_max_streams", |c, v| {
        parse_into(&mut c.limits.http2_max_streams, v)
    }),
    ("limits.shutdown_timeout", |c, v| {
        c.limits.shutdown_timeout = parse_duration(v)?;
        Ok(())
    }),
    ("limits.client_rate", |c, v| {
        parse_into(&mut c.limits.client_rate, v)
    }),
    ("limits.client_burst", |c, v| {
        parse_into(&mut c.limits.client_burst, v)
    }),
    ("limits.client_concurrency", |c, v| {
        parse_into(&mut c.limits.client_concurrency, v)
    }),
    ("limits.account_order_rate", |c, v| {
        parse_into(&mut c.limits.account_order_rate, v)
    }),
    ("limits.account_order_burst", |c, v| {
        parse_into(&mut c.limits.account_order_burst, v)
    }),
    ("log.level", |c, v| {
        c.log.level = v.to_owned();
        Ok(())
    }),
    ("log.format", |c, v| {
        c.log.format = match v {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => return Err("expected `text` or `json`".into()),
        };
        Ok(())
    }),
];

fn parse_into<T: std::str::FromStr>(slot: &mut T, v: &str) -> Result<(), String>
where
    T::Err: fmt::Display,
{
    *slot = v.trim().parse().map_err(|e: T::Err| e.to_string())?;
    Ok(())
}

fn parse_duration(v: &str) -> Result<Duration, String> {
    humantime::parse_duration(v.trim()).map_err(|e| e.to_string())
}

fn non_empty(v: &str) -> Option<String> {
    let v = v.trim();
    (!v.is_empty()).then(|| v.to_owned())
}

/// The environment variable that overrides `key` (`listen.http` → `ENROLLCA_LISTEN_HTTP`).
pub fn env_var_for(key: &str) -> String {
    format!("ENROLLCA_{}", key.replace('.', "_").to_uppercase())
}

/// Every configuration key, in the order of the reference in README.md.
pub fn keys() -> impl Iterator<Item = &'static str> {
    KEYS.iter().map(|(k, _)| *k)
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

    fn apply_env(
        &mut self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        for (var, value) in env {
            if !var.starts_with("ENROLLCA_") || RESERVED_ENV.contains(&var.as_str()) {
                continue;
            }
            let Some((_, apply)) = KEYS.iter().find(|(key, _)| env_var_for(key) == var) else {
                return Err(ConfigError::Env {
                    var,
                    message: "names no configuration key (see README, Configuration)".into(),
                });
            };
            apply(self, &value).map_err(|message| ConfigError::Env { var, message })?;
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.http == self.listen.https && self.listen.http.port() != 0 {
            return Err(ConfigError::Invalid {
                key: "listen.https",
                message: format!("same address as listen.http ({})", self.listen.http),
            });
        }
        for (key, url) in [
            ("listen.public_url", &self.listen.public_url),
            ("listen.public_https_url", &self.listen.public_https_url),
            ("scep.webhook_url", &self.scep.webhook_url),
            ("events.webhook_url", &self.events.webhook_url),
        ] {
            if let Some(url) = url {
                check_url(key, url)?;
            }
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ConfigError::Invalid {
                key: "tls.cert",
                message: "tls.cert and tls.key must be set together".into(),
            });
        }
        for (key, path) in [
            ("tls.cert", &self.tls.cert),
            ("tls.key", &self.tls.key),
            ("ca.passphrase_file", &self.ca.passphrase_file),
            ("ca.pkcs11_module", &self.ca.pkcs11_module),
            ("ca.pkcs11_pin_file", &self.ca.pkcs11_pin_file),
        ] {
            if let Some(path) = path {
                check_file(key, path)?;
            }
        }
        for (name, profile) in &self.acme.profiles {
            let name_ok = !name.is_empty()
                && name.len() <= 32
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !name_ok {
                return Err(ConfigError::Invalid {
                    key: "acme.profiles",
                    message: format!("profile name `{name}`: use 1-32 of a-z, 0-9 and -"),
                });
            }
            if profile.challenges.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "acme.profiles",
                    message: format!("profile `{name}` offers no challenge type"),
                });
            }
            if let Some(url) = &profile.terms_of_service {
                check_url("acme.profiles.terms_of_service", url)?;
            }
            if profile.attests() && profile.challenges.len() > 1 {
                return Err(ConfigError::Invalid {
                    key: "acme.profiles",
                    message: format!(
                        "profile `{name}` offers device-attest-01, which must be its only challenge"
                    ),
                });
            }
            if profile.attests() && profile.attestation_key_types.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "acme.profiles",
                    message: format!("profile `{name}` accepts no attested key type"),
                });
            }
            match (&profile.device_inventory, &profile.inventory_webhook_url) {
                (DeviceInventory::Webhook, None) => {
                    return Err(ConfigError::Invalid {
                        key: "acme.profiles",
                        message: format!(
                            "profile `{name}`: device_inventory = \"webhook\" needs inventory_webhook_url"
                        ),
                    });
                }
                (_, Some(url)) => check_url("acme.profiles.inventory_webhook_url", url)?,
                _ => {}
            }
            if profile.permanent_identifier == PermanentIdentifier::ClientIdentifier
                && (!profile.attests() || profile.device_inventory != DeviceInventory::Registered)
            {
                return Err(ConfigError::Invalid {
                    key: "acme.profiles",
                    message: format!(
                        "profile `{name}`: permanent_identifier = \"client-identifier\" needs device-attest-01 and device_inventory = \"registered\" (the attestation is checked against the serial number and UDID registered for the device)"
                    ),
                });
            }
            if !profile.require_attestation
                && profile.permanent_identifier != PermanentIdentifier::ClientIdentifier
            {
                return Err(ConfigError::Invalid {
                    key: "acme.profiles",
                    message: format!(
                        "profile `{name}`: require_attestation = false needs permanent_identifier = \"client-identifier\" (without an attestation, only a one-time value the MDM minted for the device can vouch for it)"
                    ),
                });
            }
        }
        for path in &self.acme.attestation_roots {
            check_file("acme.attestation_roots", path)?;
        }
        if self.issuance.lifetime < Duration::from_secs(60) {
            return Err(ConfigError::Invalid {
                key: "issuance.lifetime",
                message: "must be at least 1 minute".into(),
            });
        }
        if self.scep.webhook_timeout < Duration::from_millis(100)
            || self.scep.webhook_timeout > Duration::from_secs(60)
        {
            return Err(ConfigError::Invalid {
                key: "scep.webhook_timeout",
                message: "must be between 100ms and 60s".into(),
            });
        }
        if self.issuance.backdate > Duration::from_secs(86_400) {
            return Err(ConfigError::Invalid {
                key: "issuance.backdate",
                message: "must be at most 1 day".into(),
            });
        }
        if self
            .scep
            .challenge
            .as_ref()
            .is_some_and(|s| s.expose().is_empty())
        {
            return Err(ConfigError::Invalid {
                key: "scep.challenge",
                message: "must not be empty (omit the key to disable the static challenge)".into(),
            });
        }
        if self.events.webhook_url.is_some() && self.events.webhook_secret.is_none() {
            return Err(ConfigError::Invalid {
                key: "events.webhook_secret",
                message: "events.webhook_url needs a secret to sign deliveries with".into(),
            });
        }
        let l = &self.limits;
        for (key, value) in [
            ("limits.header_read_timeout", l.header_read_timeout),
            ("limits.idle_timeout", l.idle_timeout),
            ("limits.request_timeout", l.request_timeout),
            ("limits.shutdown_timeout", l.shutdown_timeout),
        ] {
            if value < Duration::from_millis(100) || value > Duration::from_secs(3600) {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be between 100ms and 1h".into(),
                });
            }
        }
        if l.max_connections == 0 || l.max_connections > 1 << 20 {
            return Err(ConfigError::Invalid {
                key: "limits.max_connections",
                message: "must be between 1 and 1048576".into(),
            });
        }
        for (key, rate) in [
            ("limits.client_rate", l.client_rate),
            ("limits.account_order_rate", l.account_order_rate),
        ] {
            if !(rate.is_finite() && rate >= 0.0) {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be a number of requests a second, 0 for no limit".into(),
                });
            }
        }
        if l.http2_max_streams == 0 {
            return Err(ConfigError::Invalid {
                key: "limits.http2_max_streams",
                message: "must be at least 1".into(),
            });
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::Invalid {
                key: "log.level",
                message: e.to_string(),
            });
        }
        Ok(())
    }
}

fn check_url(key: &'static str, url: &str) -> Result<(), ConfigError> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() > "https://".len()
        && !url.contains(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            key,
            message: format!("`{url}` is not an http(s) URL"),
        })
    }
}

fn check_file(key: &'static str, path: &Path) -> Result<(), ConfigError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(ConfigError::Invalid {
            key,
            message: format!("{} is not a file", path.display()),
        }),
        Err(e) => Err(ConfigError::Invalid {
            key,
            message: format!("{}: {e}", path.display()),
        }),
    }
}

#[cfg(test)]
mod tests {
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
