//! What the `[acme]` configuration section says: the validators' ports and resolver, extra
//! attestation roots, and the profiles, each an ACME directory with its own rules.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::model::ChallengeType;
use crate::attest::{AndroidPolicy, FormatName, KeyType, TpmPolicy, YubiKeyPolicy};
use crate::model::KeyFamily;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeSettings {
    /// Port the http-01 validator connects to (80 in real deployments; tests pick another).
    pub http01_port: u16,
    /// Port the tls-alpn-01 validator connects to (443 in real deployments).
    pub tls_alpn01_port: u16,
    /// The DNS server dns-01 asks for `_acme-challenge` TXT records; none: the system's
    /// (`/etc/resolv.conf`). Point it at a resolver that sees the zones clients publish to.
    pub dns01_resolver: Option<SocketAddr>,
    /// Extra PEM root files trusted for device attestation, beside the built-in Apple,
    /// Google and Yubico roots (a TPM's AIK CA or manufacturers' roots go here).
    pub attestation_roots: Vec<PathBuf>,
    /// Google's attestation status list (revoked Android attestation keys): a file path or
    /// an HTTP(S) URL, read when a profile accepts `android-key` and again every
    /// `android_status_refresh`.
    pub android_status_list: String,
    #[serde(with = "humantime_serde")]
    pub android_status_refresh: Duration,
    /// The operator's own list of withdrawn attestation certificates, in Google's status
    /// list format (a file path or an HTTP(S) URL): an attestation of any format whose
    /// chain holds a listed serial is refused. Read again every
    /// `attestation_revocations_refresh`.
    pub attestation_revocations: Option<String>,
    #[serde(with = "humantime_serde")]
    pub attestation_revocations_refresh: Duration,
    /// Named profiles, each served at `/acme/<name>/directory`. Setting any replaces the
    /// built-in `default` profile.
    pub profiles: BTreeMap<String, AcmeProfile>,
}

impl Default for AcmeSettings {
    fn default() -> Self {
        Self {
            http01_port: 80,
            tls_alpn01_port: 443,
            dns01_resolver: None,
            attestation_roots: Vec::new(),
            android_status_list: GOOGLE_STATUS_LIST.to_owned(),
            android_status_refresh: Duration::from_secs(3600),
            attestation_revocations: None,
            attestation_revocations_refresh: Duration::from_secs(3600),
            profiles: BTreeMap::from([
                ("default".to_owned(), AcmeProfile::development()),
                ("device".to_owned(), AcmeProfile::device()),
            ]),
        }
    }
}

/// Where Google publishes the attestation status list.
pub const GOOGLE_STATUS_LIST: &str = "https://android.googleapis.com/attestation/status";

/// What one ACME directory issues, and to whom.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeProfile {
    /// DNS names it issues for: each entry allows that name and every name under it.
    pub dns_names: Vec<String>,
    /// IP addresses it issues for.
    pub ip_addresses: Vec<IpAddr>,
    /// Challenge types offered for each identifier.
    pub challenges: Vec<ChallengeType>,
    /// Certificate lifetime; `issuance.lifetime` when absent.
    #[serde(with = "humantime_serde::option")]
    pub lifetime: Option<Duration>,
    /// Which issuer line signs its certificates.
    pub issuer: KeyFamily,
    /// Accounts must be bound to an operator-issued key (RFC 8555 §7.3.4).
    pub external_account_required: bool,
    /// Terms of service URL; when set, new accounts must agree to it.
    pub terms_of_service: Option<String>,
    /// device-attest-01 profiles: key types an attested key may have.
    pub attestation_key_types: Vec<KeyType>,
    /// device-attest-01 profiles: the attestation formats accepted (`apple`, `android-key`,
    /// `step`, `tpm`).
    pub attestation_formats: Vec<FormatName>,
    /// device-attest-01 profiles accepting `android-key`: what an Android device must show.
    pub android: AndroidPolicy,
    /// device-attest-01 profiles accepting `step`: what a YubiKey's key must demand.
    pub yubikey: YubiKeyPolicy,
    /// device-attest-01 profiles accepting `tpm`: where the device identity is read, SHA-1.
    pub tpm: TpmPolicy,
    /// device-attest-01 profiles: what a device orders as its permanent-identifier.
    pub permanent_identifier: PermanentIdentifier,
    /// device-attest-01 profiles: refuse a device that answers without an attestation.
    /// `false` (with `permanent_identifier = "client-identifier"` only) lets the one-time
    /// ClientIdentifier alone vouch for a device that cannot attest (Apple: A10X and
    /// earlier, Intel Macs with a T2); its certificate is recorded as not attested.
    pub require_attestation: bool,
    /// device-attest-01 profiles: how a genuine device is known to be one of ours.
    pub device_inventory: DeviceInventory,
    /// With `device_inventory = "webhook"`: asked about each device; only a 2xx admits it.
    pub inventory_webhook_url: Option<String>,
    /// device-attest-01 profiles: put the attested serial number into the subject
    /// (`serialNumber` attribute).
    pub subject_serial: bool,
    /// Internal address ranges (CIDR) http-01 and tls-alpn-01 may connect to. Loopback,
    /// private, link-local, CGNAT, multicast and unspecified addresses are refused, on the
    /// resolved address of the first request and of every redirect, unless listed here.
    pub internal_targets: Vec<ipnet::IpNet>,
}

/// What a device-attest-01 order names the device by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PermanentIdentifier {
    /// Its serial number or UDID, which the attestation must show.
    #[default]
    SerialOrUdid,
    /// A one-time ClientIdentifier the MDM minted for it (Apple's `ClientIdentifier`); the
    /// attestation must show the serial number or UDID the inventory has for that device.
    ClientIdentifier,
}

/// Where a device-attest-01 profile learns that a device belongs to this organisation: an
/// attestation proves a genuine device, not one of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceInventory {
    /// The MDM registers its devices (`PUT /api/v1/devices/{id}`).
    Registered,
    /// A validation webhook answers for each device.
    Webhook,
    /// Any genuine device (for tests and closed fleets only).
    None,
}

impl AcmeProfile {
    /// A profile offering device-attest-01 issues to attested devices only.
    pub fn attests(&self) -> bool {
        self.challenges.contains(&ChallengeType::DeviceAttest01)
    }

    /// The built-in `default` profile, for development: names under `localhost` and the
    /// loopback addresses, validated where they are (loopback, allowed deliberately).
    pub fn development() -> Self {
        Self {
            internal_targets: vec![
                ipnet::IpNet::from(IpAddr::from([127, 0, 0, 1])),
                ipnet::IpNet::from(IpAddr::from(Ipv6Addr::LOCALHOST)),
            ],
            ..Self::default()
        }
    }

    /// The built-in `device` profile: Apple Managed Device Attestation, registered devices.
    pub fn device() -> Self {
        Self {
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            challenges: vec![ChallengeType::DeviceAttest01],
            ..Self::default()
        }
    }
}

impl Default for AcmeProfile {
    /// The development profile: names under `localhost` and the loopback addresses, http-01.
    fn default() -> Self {
        Self {
            dns_names: vec!["localhost".into()],
            ip_addresses: vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from(Ipv6Addr::LOCALHOST),
            ],
            challenges: vec![ChallengeType::Http01],
            lifetime: None,
            issuer: KeyFamily::Ecdsa,
            external_account_required: false,
            terms_of_service: None,
            attestation_key_types: vec![KeyType::P256, KeyType::P384],
            attestation_formats: vec![FormatName::Apple],
            android: AndroidPolicy::default(),
            yubikey: YubiKeyPolicy::default(),
            tpm: TpmPolicy::default(),
            permanent_identifier: PermanentIdentifier::SerialOrUdid,
            require_attestation: true,
            device_inventory: DeviceInventory::Registered,
            inventory_webhook_url: None,
            subject_serial: false,
            internal_targets: Vec::new(),
        }
    }
}
