//! The sections of the configuration file and their defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::policy::SanKind;
use crate::scep::pending::Approval;
use crate::secret::Secret;

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
