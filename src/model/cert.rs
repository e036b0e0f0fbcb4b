//! Issued certificates as recorded, and the events that record their lives and the
//! issuers'.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{DeviceFacts, DeviceId, IssuerId, RevocationReason, Serial};

/// How a certificate was requested.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Scep,
    Acme,
    /// Issued by an operator through the admin API or CLI.
    Admin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum CertStatus {
    Good,
    Revoked {
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
        reason: RevocationReason,
    },
}

/// One issued certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertRecord {
    pub serial: Serial,
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
    /// The certificate this one renews, when it is a renewal.
    pub replaces: Option<Serial>,
    /// The ACME account that ordered it (its id), for ACME certificates.
    #[serde(default)]
    pub account: Option<String>,
    /// What device attestation proved about the device, for attested certificates.
    #[serde(default)]
    pub attested: Option<DeviceFacts>,
    pub status: CertStatus,
    #[serde(with = "serde_bytes")]
    pub der: Vec<u8>,
}

impl CertRecord {
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.not_after < now
    }
}

/// Position in the event feed; the first event is 1 and there are no gaps.
pub type Seq = u64;

#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum EventKind {
    /// `attested`: whether a device attestation vouched for it (absent from events recorded
    /// before enrollca said so).
    Issued {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attested: Option<bool>,
    },
    Renewed {
        replaces: Serial,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attested: Option<bool>,
    },
    Revoked {
        reason: RevocationReason,
    },
    /// Its notAfter has passed (noted by the periodic sweep, for certificates still good).
    Expired,
    /// Its notAfter is less than `events.expiring_before` away: time to have the device renew
    /// (noted once by the periodic sweep, for certificates still good and not yet renewed).
    Expiring,
    /// CA rotation, with the issuing CA certificate's serial and the issuer's id: staged as
    /// the next issuer of its line …
    #[serde(rename = "issuer-staged")]
    IssuerStaged,
    /// … issuing from now on …
    #[serde(rename = "issuer-activated")]
    IssuerActivated,
    /// … no longer issuing, still answering (CRL, OCSP) for what it issued …
    #[serde(rename = "issuer-retiring")]
    IssuerRetiring,
    /// … nothing it issued is valid any more.
    #[serde(rename = "issuer-retired")]
    IssuerRetired,
}

/// One entry of the ordered change feed the MDM follows.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: Seq,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    #[serde(flatten)]
    pub kind: EventKind,
    pub serial: Serial,
    pub issuer: IssuerId,
    pub device: Option<DeviceId>,
}

/// Where an issuer stands in its line. Only `Active` issues certificates; `Next` is announced
/// (SCEP GetNextCACert) before it takes over; `Retiring` still signs CRLs and OCSP for what it
/// issued; `Retired` has nothing left that is valid.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IssuerState {
    Active,
    Next,
    Retiring,
    Retired,
}
