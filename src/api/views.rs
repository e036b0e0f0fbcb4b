//! What the API returns (and the CLI reads back): stable JSON, independent of storage.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ca::{Issuer, IssuerId, KeyFamily, Serial};
use crate::csr::San;
use crate::encoding::to_pem;
use crate::revocation::RevocationReason;
use crate::store::{
    CertRecord, CertStatus, DeviceId, IssuerRecord, IssuerState, Page, Protocol, Standing,
};

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, Deserialize)]
pub struct CertView {
    pub serial: Serial,
    pub status: Standing,
    pub issuer: IssuerId,
    pub subject: String,
    pub sans: Vec<String>,
    pub device: Option<DeviceId>,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    pub protocol: Protocol,
    pub profile: String,
    pub replaces: Option<Serial>,
    /// The ACME account that ordered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Whether a device attestation vouched for the key and the device. `false` for SCEP and
    /// ACME certificates, and for a device that could not attest and enrolled on its one-time
    /// ClientIdentifier alone (`require_attestation = false`).
    pub attested: bool,
    /// What the attestation proved about the device (attested certificates only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<crate::attest::DeviceFacts>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    pub revocation_reason: Option<RevocationReason>,
    /// The certificate in PEM (single-certificate views only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pem: Option<String>,
}

impl CertView {
    pub fn new(rec: &CertRecord, now: OffsetDateTime, with_pem: bool) -> Self {
        let (revoked_at, revocation_reason) = match rec.status {
            CertStatus::Revoked { at, reason } => (Some(at), Some(reason)),
            CertStatus::Good => (None, None),
        };
        let status = rec.standing(now);
        Self {
            serial: rec.serial.clone(),
            status,
            issuer: rec.issuer.clone(),
            subject: rec.subject.clone(),
            sans: rec.sans.clone(),
            device: rec.device.clone(),
            not_before: rec.not_before,
            not_after: rec.not_after,
            issued_at: rec.issued_at,
            protocol: rec.protocol,
            profile: rec.profile.clone(),
            replaces: rec.replaces.clone(),
            account: rec.account.clone(),
            attested: rec.attested.is_some(),
            attestation: rec.attested.clone(),
            revoked_at,
            revocation_reason,
            pem: with_pem.then(|| to_pem("CERTIFICATE", &rec.der)),
        }
    }
}

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, Deserialize)]
pub struct CertPage {
    pub items: Vec<CertView>,
    pub next: Option<Serial>,
}

impl CertPage {
    pub fn new(page: &Page<CertRecord>, now: OffsetDateTime) -> Self {
        Self {
            items: page
                .items
                .iter()
                .map(|r| CertView::new(r, now, false))
                .collect(),
            next: page.next.clone(),
        }
    }
}

/// Answer to an issuance: the record and the PEM chain (leaf first) to hand to the client.
#[derive(utoipa::ToSchema, Debug, Clone, Serialize, Deserialize)]
pub struct IssuedView {
    pub certificate: CertView,
    pub chain_pem: String,
}

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, Deserialize)]
pub struct IssuerView {
    pub id: IssuerId,
    pub family: KeyFamily,
    pub state: IssuerState,
    pub subject: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    pub sha256_fingerprint: String,
    /// The issuer's certificate, then the intermediates between it and its root (imported
    /// hierarchies), nearest first.
    pub pem: String,
}

impl IssuerView {
    pub fn new<'a>(
        id: &IssuerId,
        family: KeyFamily,
        state: IssuerState,
        chain: impl IntoIterator<Item = &'a [u8]>,
    ) -> anyhow::Result<Self> {
        let chain: Vec<&[u8]> = chain.into_iter().collect();
        let cert_der = *chain
            .first()
            .ok_or_else(|| anyhow::anyhow!("issuer {id} has no certificate"))?;
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, cert) =
            X509Certificate::from_der(cert_der).map_err(|e| anyhow::anyhow!("issuer {id}: {e}"))?;
        Ok(Self {
            id: id.clone(),
            family,
            state,
            subject: cert.subject().to_string(),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            sha256_fingerprint: crate::encoding::fingerprint(cert_der),
            pem: chain.iter().map(|c| to_pem("CERTIFICATE", c)).collect(),
        })
    }

    pub fn from_record(rec: &IssuerRecord) -> anyhow::Result<Self> {
        let chain = std::iter::once(rec.cert_der.as_slice())
            .chain(rec.intermediates.iter().map(|c| c.as_slice()));
        Self::new(&rec.id, rec.family, rec.state, chain)
    }

    pub fn from_issuer(i: &Issuer) -> anyhow::Result<Self> {
        Self::new(i.id(), i.family(), i.state(), i.chain())
    }
}

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, Deserialize)]
pub struct IssueBody {
    /// PKCS#10 request in PEM.
    pub csr: String,
    pub device: Option<DeviceId>,
    /// Issuer line: `rsa` or `ecdsa` (default `ecdsa`).
    #[serde(default = "default_family")]
    pub issuer: KeyFamily,
}

fn default_family() -> KeyFamily {
    KeyFamily::Ecdsa
}

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RevokeBody {
    #[serde(default = "default_reason")]
    pub reason: RevocationReason,
}

fn default_reason() -> RevocationReason {
    RevocationReason::Unspecified
}

/// Request for a one-time SCEP challenge.
#[derive(utoipa::ToSchema, Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeBody {
    /// Bind the challenge to this device: the certificate is recorded for it, and its common
    /// name is the device id unless `subject` says otherwise.
    pub device: Option<DeviceId>,
    /// The subject the certificate must have, e.g. `CN=dev-42,O=Example`: a request asking
    /// for another is refused (badRequest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The subjectAltNames it must have, e.g. `["DNS:dev-42.example", "email:a@example.com"]`
    /// (kinds `DNS`, `IP`, `email`, `URI`); a request asking for others is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub sans: Option<Vec<San>>,
    /// How long it stays usable (default 1h, at most 30 days), e.g. `15m`, `2h`.
    #[serde(default, with = "humantime_serde")]
    pub ttl: Option<std::time::Duration>,
}

/// A freshly minted one-time challenge: shown once, stored only as a hash.
#[derive(utoipa::ToSchema, Debug, Clone, Serialize, Deserialize)]
pub struct ChallengeView {
    pub challenge: String,
    pub device: Option<DeviceId>,
    /// The stated subject, as the certificate will have it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub sans: Option<Vec<San>>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}
