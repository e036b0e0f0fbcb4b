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
    pub fn standing(&self, now: OffsetDateTime) -> Standing {
        self.status.standing(self.not_after, now)
    }

    /// The event its recording appends: `renewed` when it replaces another, else `issued`;
    /// either says whether an attestation vouched for it.
    pub fn issuance_event(&self) -> EventKind {
        let attested = Some(self.attested.is_some());
        match &self.replaces {
            Some(old) => EventKind::Renewed {
                replaces: old.clone(),
                attested,
            },
            None => EventKind::Issued { attested },
        }
    }
}

impl CertStatus {
    /// The one place good, expired and revoked are told apart: a revoked certificate stays
    /// revoked after its notAfter; a good one is expired once its notAfter has passed.
    pub fn standing(self, not_after: OffsetDateTime, now: OffsetDateTime) -> Standing {
        match self {
            Self::Revoked { .. } => Standing::Revoked,
            Self::Good if not_after < now => Standing::Expired,
            Self::Good => Standing::Good,
        }
    }
}

/// Where a certificate stands at a moment: what the API shows and what listings filter on.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Standing {
    Good,
    Revoked,
    Expired,
}

impl Standing {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Good => "good",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

impl std::str::FromStr for Standing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "good" => Ok(Self::Good),
            "revoked" => Ok(Self::Revoked),
            "expired" => Ok(Self::Expired),
            _ => Err(format!("unknown status `{s}` (good, revoked, expired)")),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_stands_good_until_its_not_after_and_revoked_for_ever() {
        let not_after = time::macros::datetime!(2026-06-01 00:00 UTC);
        let second = time::Duration::SECOND;
        let revoked = CertStatus::Revoked {
            at: not_after - 10 * second,
            reason: RevocationReason::KeyCompromise,
        };
        for (status, now, standing) in [
            (CertStatus::Good, not_after - second, Standing::Good),
            (CertStatus::Good, not_after, Standing::Good),
            (CertStatus::Good, not_after + second, Standing::Expired),
            (revoked, not_after - second, Standing::Revoked),
            (revoked, not_after + second, Standing::Revoked),
        ] {
            assert_eq!(
                status.standing(not_after, now),
                standing,
                "{status:?} at {now}"
            );
        }
        for s in [Standing::Good, Standing::Revoked, Standing::Expired] {
            assert_eq!(s.as_str().parse::<Standing>(), Ok(s));
        }
        assert!("valid".parse::<Standing>().is_err());
    }
}
