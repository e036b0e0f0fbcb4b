//! ACME resources (RFC 8555 §7.1) as stored, with their states as enums. Statuses that
//! follow from time or from other resources (an order is `ready` when its authorizations are
//! valid; anything pending past `expires` is no longer usable) are computed, never stored, so
//! they cannot disagree.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::error::AcmeError;
use super::jws::Jwk;
use crate::attest::Attestation;
use crate::ca::Serial;
use crate::store::DeviceId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum IdentifierType {
    #[serde(rename = "dns")]
    Dns,
    #[serde(rename = "ip")]
    Ip,
    /// A device's serial number or UDID (RFC 4043 PermanentIdentifier), proven by
    /// device-attest-01.
    #[serde(rename = "permanent-identifier")]
    PermanentIdentifier,
}

impl IdentifierType {
    pub fn name(self) -> &'static str {
        match self {
            Self::Dns => "dns",
            Self::Ip => "ip",
            Self::PermanentIdentifier => "permanent-identifier",
        }
    }
}

/// An identifier as a client names it; `parse` normalises it (lowercase names, canonical
/// addresses) so equal names compare equal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Identifier {
    #[serde(rename = "type")]
    pub kind: IdentifierType,
    pub value: String,
}

impl Identifier {
    pub fn dns(name: &str) -> Self {
        Self {
            kind: IdentifierType::Dns,
            value: name.to_ascii_lowercase(),
        }
    }

    pub fn ip(addr: IpAddr) -> Self {
        Self {
            kind: IdentifierType::Ip,
            value: addr.to_string(),
        }
    }

    /// Checks the syntax; whether the profile allows it is policy, decided elsewhere.
    pub fn normalised(&self) -> Result<Self, String> {
        match self.kind {
            IdentifierType::Ip => self
                .value
                .parse::<IpAddr>()
                .map(Self::ip)
                .map_err(|_| format!("`{}` is not an IP address", self.value)),
            // Serial numbers and UDIDs: letters, digits and dashes. Case is kept (the device
            // compares what it sent); matching against attestations ignores it.
            IdentifierType::PermanentIdentifier => {
                let v = &self.value;
                if (1..=64).contains(&v.len())
                    && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    Ok(self.clone())
                } else {
                    Err(format!(
                        "`{v}` is not a serial number or UDID (1-64 letters, digits and dashes)"
                    ))
                }
            }
            IdentifierType::Dns => {
                let name = self.value.to_ascii_lowercase();
                // A wildcard is one leading `*` label over a name (RFC 8555 §7.1.3).
                let base = name.strip_prefix("*.").unwrap_or(&name);
                let label_ok = |l: &str| {
                    (1..=63).contains(&l.len())
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                };
                let ok = name.len() <= 253
                    && base.split('.').all(label_ok)
                    && base.parse::<IpAddr>().is_err();
                if ok {
                    Ok(Self::dns(&name))
                } else {
                    Err(format!("`{}` is not a valid DNS name", self.value))
                }
            }
        }
    }

    /// For a wildcard name `*.x`, the name `x` its authorization proves control of.
    pub fn wildcard_base(&self) -> Option<&str> {
        match self.kind {
            IdentifierType::Dns => self.value.strip_prefix("*."),
            _ => None,
        }
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.name(), self.value)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountStatus {
    Valid,
    Deactivated,
    Revoked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub profile: String,
    pub key: Jwk,
    pub status: AccountStatus,
    pub contact: Vec<String>,
    /// The external account key this account was bound with.
    pub eab_kid: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Its certificates are listed under `AcmeAccountCert`. Accounts made before that list
    /// existed lack the field and are never purged as abandoned: nothing shows they are.
    #[serde(default)]
    pub certificates_listed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Pending,
    Ready,
    Processing,
    Valid,
    Invalid,
}

/// What is stored of an order's progress; `pending` and `ready` are derived from its
/// authorizations while it is `Open`, `processing` from a finalization running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderState {
    Open,
    Valid { certificate: Serial },
    Invalid { error: AcmeError },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub account: String,
    pub identifiers: Vec<Identifier>,
    pub authorizations: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    pub state: OrderState,
    /// The device, as the MDM's inventory names it, for orders of permanent identifiers.
    #[serde(default)]
    pub device: Option<DeviceId>,
    /// The store key of the one-time ClientIdentifier the order was placed with, used up
    /// with the certificate.
    #[serde(default)]
    pub client_identifier: Option<String>,
}

impl Order {
    /// The status a client sees at `now`, given the statuses of its authorizations and
    /// whether a finalization is running.
    pub fn status(
        &self,
        authzs: &[AuthzStatus],
        finalizing: bool,
        now: OffsetDateTime,
    ) -> OrderStatus {
        match self.state {
            OrderState::Open if finalizing => OrderStatus::Processing,
            OrderState::Valid { .. } => OrderStatus::Valid,
            OrderState::Invalid { .. } => OrderStatus::Invalid,
            OrderState::Open if self.expires <= now => OrderStatus::Invalid,
            OrderState::Open if authzs.iter().all(|s| *s == AuthzStatus::Valid) => {
                OrderStatus::Ready
            }
            OrderState::Open
                if authzs
                    .iter()
                    .all(|s| *s == AuthzStatus::Pending || *s == AuthzStatus::Valid) =>
            {
                OrderStatus::Pending
            }
            OrderState::Open => OrderStatus::Invalid,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthzStatus {
    Pending,
    Valid,
    Invalid,
    Deactivated,
    Expired,
    Revoked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChallengeType {
    #[serde(rename = "http-01")]
    Http01,
    /// A TXT record at `_acme-challenge.<name>` (RFC 8555 §8.4); the only proof for wildcards.
    #[serde(rename = "dns-01")]
    Dns01,
    /// RFC 8737: a self-signed certificate served with ALPN `acme-tls/1`.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// draft-ietf-acme-device-attest: the device answers with an attestation statement.
    #[serde(rename = "device-attest-01")]
    DeviceAttest01,
}

impl ChallengeType {
    pub fn name(self) -> &'static str {
        match self {
            Self::Http01 => "http-01",
            Self::Dns01 => "dns-01",
            Self::TlsAlpn01 => "tls-alpn-01",
            Self::DeviceAttest01 => "device-attest-01",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "http-01" => Some(Self::Http01),
            "dns-01" => Some(Self::Dns01),
            "tls-alpn-01" => Some(Self::TlsAlpn01),
            "device-attest-01" => Some(Self::DeviceAttest01),
            _ => None,
        }
    }

    /// Whether this challenge can prove control of `id` as ordered (RFC 8555 §7.1.3 and §8.4
    /// for wildcards, RFC 8738 §7 for addresses).
    pub fn validates(self, id: &Identifier) -> bool {
        let wildcard = id.wildcard_base().is_some();
        match self {
            Self::Http01 | Self::TlsAlpn01 => match id.kind {
                IdentifierType::Dns => !wildcard,
                IdentifierType::Ip => true,
                IdentifierType::PermanentIdentifier => false,
            },
            Self::Dns01 => id.kind == IdentifierType::Dns,
            Self::DeviceAttest01 => id.kind == IdentifierType::PermanentIdentifier,
        }
    }
}

/// A challenge's stored status; `processing` is what a pending one looks like while its
/// validation runs (see `in_flight`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChallengeStatus {
    Pending,
    Valid,
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub kind: ChallengeType,
    pub token: String,
    pub status: ChallengeStatus,
    #[serde(with = "time::serde::rfc3339::option")]
    pub validated: Option<OffsetDateTime>,
    pub error: Option<AcmeError>,
}

/// How a device-attest-01 authorization was proven.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DeviceProof {
    /// A verified attestation: the key the CSR must carry, and the device. Encoded as a bare
    /// `Attestation`, as authorizations stored before `Unattested` existed have it.
    Attested(Box<Attestation>),
    /// No attestation, on a profile that does not require one: the one-time
    /// ClientIdentifier alone vouched for its device, certified by the identifier registered
    /// for it. The CSR's key is then not known to be hardware-bound.
    Unattested { permanent_identifier: String },
}

/// An authorization belongs to exactly one order here (no reuse across orders), so its
/// changes never have to be reconciled with another order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorization {
    pub id: String,
    pub account: String,
    pub order: String,
    /// The name to prove: for an ordered wildcard `*.x`, `x` (and `wildcard` is set).
    pub identifier: Identifier,
    #[serde(default)]
    pub wildcard: bool,
    /// `Pending`, `Valid`, `Invalid` or `Deactivated`; expiry is derived.
    pub status: AuthzStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    pub challenges: Vec<Challenge>,
    /// How a valid device-attest-01 was proven (stored under its first name, `attestation`).
    #[serde(default, rename = "attestation")]
    pub proof: Option<DeviceProof>,
    /// For a ClientIdentifier: the serial number and UDID registered for its device, one of
    /// which the attestation must show. Empty: it must show the identifier itself.
    #[serde(default)]
    pub hardware_ids: Vec<String>,
}

impl Authorization {
    pub fn status_at(&self, now: OffsetDateTime) -> AuthzStatus {
        match self.status {
            AuthzStatus::Pending | AuthzStatus::Valid if self.expires <= now => {
                AuthzStatus::Expired
            }
            s => s,
        }
    }

    pub fn challenge(&self, kind: ChallengeType) -> Option<&Challenge> {
        self.challenges.iter().find(|c| c.kind == kind)
    }
}

/// An External Account Binding key minted by an operator for one profile; used once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EabKey {
    pub profile: String,
    #[serde(with = "serde_bytes")]
    pub hmac_key: Vec<u8>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The account it was bound to, once used.
    pub account: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_normalised_or_refused() {
        let dns = |v: &str| Identifier {
            kind: IdentifierType::Dns,
            value: v.into(),
        };
        assert_eq!(
            dns("Host.LocalHost").normalised().unwrap().value,
            "host.localhost"
        );
        let wild = dns("*.B.c").normalised().unwrap();
        assert_eq!(wild.value, "*.b.c");
        assert_eq!(wild.wildcard_base(), Some("b.c"));
        for bad in [
            "",
            "a..b",
            "-a.b",
            "*",
            "*.*.c",
            "a.*.c",
            "*b.c",
            "*.127.0.0.1",
            "a_b.c",
            "127.0.0.1",
            &"a".repeat(64),
        ] {
            assert!(dns(bad).normalised().is_err(), "{bad}");
        }
        let ip = Identifier {
            kind: IdentifierType::Ip,
            value: "::0001".into(),
        };
        assert_eq!(ip.normalised().unwrap().value, "::1");
    }

    #[test]
    fn order_status_follows_its_authorizations_and_time() {
        let now = OffsetDateTime::now_utc();
        let order = Order {
            id: "o".into(),
            account: "a".into(),
            identifiers: vec![],
            authorizations: vec![],
            created_at: now,
            expires: now + time::Duration::hours(1),
            state: OrderState::Open,
            device: None,
            client_identifier: None,
        };
        use AuthzStatus as A;
        assert_eq!(
            order.status(&[A::Valid, A::Pending], false, now),
            OrderStatus::Pending
        );
        assert_eq!(
            order.status(&[A::Valid, A::Valid], false, now),
            OrderStatus::Ready
        );
        assert_eq!(
            order.status(&[A::Valid], true, now),
            OrderStatus::Processing
        );
        assert_eq!(
            order.status(&[A::Valid, A::Invalid], false, now),
            OrderStatus::Invalid
        );
        let later = now + time::Duration::hours(2);
        assert_eq!(
            order.status(&[A::Valid], false, later),
            OrderStatus::Invalid
        );
    }

    #[test]
    fn a_device_proof_reads_what_earlier_versions_stored() {
        let attestation = Attestation {
            spki: vec![0x30, 0x59, 1, 2],
            facts: crate::attest::DeviceFacts {
                format: "apple".into(),
                serial: Some("C02X".into()),
                ..Default::default()
            },
        };
        fn cbor<T: Serialize>(value: &T) -> Vec<u8> {
            let mut bytes = Vec::new();
            ciborium::into_writer(value, &mut bytes).unwrap();
            bytes
        }
        // Earlier versions stored a bare `Attestation` under `attestation`.
        let legacy = cbor(&attestation);
        let read: DeviceProof = ciborium::from_reader(legacy.as_slice()).unwrap();
        assert_eq!(read, DeviceProof::Attested(Box::new(attestation.clone())));
        for proof in [
            DeviceProof::Attested(Box::new(attestation)),
            DeviceProof::Unattested {
                permanent_identifier: "C02X".into(),
            },
        ] {
            let bytes = cbor(&proof);
            let back: DeviceProof = ciborium::from_reader(bytes.as_slice()).unwrap();
            assert_eq!(back, proof);
        }
    }
}
