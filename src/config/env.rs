//! Environment overrides: the one list of configuration keys, each with how a variable
//! `ENROLLCA_<SECTION>_<KEY>` sets it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::scep::pending::Approval;
use crate::secret::Secret;
use crate::store::BackendKind;

use super::{Config, ConfigError, LogFormat};

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
    ("acme.attestation_revocations", |c, v| {
        c.acme.attestation_revocations = non_empty(v);
        Ok(())
    }),
    ("acme.attestation_revocations_refresh", |c, v| {
        c.acme.attestation_revocations_refresh = parse_duration(v)?;
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
    ("store.backend", |c, v| {
        c.store.backend = match v {
            "sled" => BackendKind::Sled,
            "postgres" => BackendKind::Postgres,
            _ => return Err(format!("`{v}`: sled or postgres")),
        };
        Ok(())
    }),
    ("store.url", |c, v| {
        c.store.url = non_empty(v).map(Secret::new);
        Ok(())
    }),
    ("store.password_file", |c, v| {
        c.store.password_file = non_empty(v).map(PathBuf::from);
        Ok(())
    }),
    ("store.pool_size", |c, v| {
        parse_into(&mut c.store.pool_size, v)
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
    pub(super) fn apply_env(
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
}
