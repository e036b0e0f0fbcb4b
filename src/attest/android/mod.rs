//! Android Key Attestation (`fmt: "android-key"`, the WebAuthn format name): a Keystore key
//! certified by the device's secure hardware, chained to Google's hardware attestation
//! roots, with a KeyDescription extension saying where the key lives, how the device booted
//! and which device it is. The freshness value is the `attestationChallenge` the app passed
//! to `setAttestationChallenge` when it generated the key: SHA-256 of the ACME token, as for
//! Apple. Every check is mandatory: a missing member is a failure.

mod key_description;

use serde::{Deserialize, Serialize};

pub use key_description::{BootState, KeyDescription, KeyDescriptionError, SecurityLevel};

use super::chain::{self, Anchors};
use super::status::StatusList;
use super::{
    AttestError, Attestation, AttestationObject, DeviceFacts, Expected, Format, FormatName,
};

/// Google's roots, shipped in `pki/` (fingerprints asserted by `tests/library/pki.rs`).
const GOOGLE_ROOTS_PEM: &[u8] =
    include_bytes!("../../../pki/google-hardware-attestation-roots.pem");

/// Longest chain accepted below the root: remotely provisioned keys come with a leaf, a
/// per-device intermediate and two or three Google intermediates.
const MAX_CHAIN: usize = 6;

/// What a profile demands of an Android device beyond a genuine attestation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AndroidPolicy {
    /// The least secure place the key may live: `trusted-environment` (the TEE, default) or
    /// `strongbox` (a separate secure element).
    pub security_level: RequiredLevel,
    /// Verified-boot states accepted. `verified` (the OEM's OS) by default; `self-signed`
    /// admits an OS signed by the owner's key (GrapheneOS). A locked bootloader is required
    /// whatever this says.
    pub boot_states: Vec<AcceptedBoot>,
    /// Which hardware-attested identifier the order names: `serial` (default), `imei`
    /// (either of the device's IMEIs) or `meid`.
    pub identifier: AndroidIdentifier,
}

impl Default for AndroidPolicy {
    fn default() -> Self {
        Self {
            security_level: RequiredLevel::TrustedEnvironment,
            boot_states: vec![AcceptedBoot::Verified],
            identifier: AndroidIdentifier::Serial,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequiredLevel {
    TrustedEnvironment,
    Strongbox,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AcceptedBoot {
    Verified,
    SelfSigned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AndroidIdentifier {
    Serial,
    Imei,
    Meid,
}

pub struct AndroidKey {
    anchors: Anchors,
    status: StatusList,
}

impl AndroidKey {
    /// Trusts Google's roots and `extra` roots (DER); refuses chains through a certificate
    /// `status` lists.
    pub fn new(extra: &[Vec<u8>], status: StatusList) -> Result<Self, AttestError> {
        let google =
            crate::encoding::pem_certs(GOOGLE_ROOTS_PEM).expect("the shipped Google roots parse");
        let mut anchors = Anchors::new(MAX_CHAIN).leaf_issuer_may_be_end_entity();
        anchors.trust(&google)?;
        anchors.trust(extra)?;
        Ok(Self { anchors, status })
    }
}

fn level_name(level: SecurityLevel) -> &'static str {
    match level {
        SecurityLevel::Software => "software",
        SecurityLevel::TrustedEnvironment => "trusted-environment",
        SecurityLevel::StrongBox => "strongbox",
    }
}

fn boot_name(state: BootState) -> &'static str {
    match state {
        BootState::Verified => "verified",
        BootState::SelfSigned => "self-signed",
        BootState::Unverified => "unverified",
        BootState::Failed => "failed",
    }
}

fn text(bytes: &Option<Vec<u8>>, what: &str) -> Result<Option<String>, AttestError> {
    bytes
        .as_ref()
        .map(|b| {
            String::from_utf8(b.clone())
                .map_err(|_| AttestError::Malformed(format!("the attested {what} is not UTF-8")))
        })
        .transpose()
}

impl Format for AndroidKey {
    fn name(&self) -> FormatName {
        FormatName::AndroidKey
    }

    fn verify(
        &self,
        object: &AttestationObject,
        expected: &Expected<'_>,
    ) -> Result<Attestation, AttestError> {
        let x5c = chain::x5c(object)?;
        self.status
            .check(&x5c, "Google's attestation status list")?;
        let now = chain::asn1_now(expected.now)?;
        let leaf = self.anchors.verify(&x5c, now)?.swap_remove(0);

        let extension = leaf
            .extensions()
            .iter()
            .find(|e| e.oid.as_bytes() == key_description::OID)
            .ok_or_else(|| {
                AttestError::Malformed("the leaf carries no KeyDescription extension".into())
            })?;
        let description = KeyDescription::parse(extension.value)
            .map_err(|e| AttestError::Malformed(format!("the KeyDescription: {e}")))?;

        if description.challenge != expected.nonce {
            return Err(AttestError::Nonce(
                "the attestationChallenge is not SHA-256 of this challenge's token".into(),
            ));
        }
        let policy = expected.android;
        let level = description.attestation_security_level;
        let least = match policy.security_level {
            RequiredLevel::TrustedEnvironment => SecurityLevel::TrustedEnvironment,
            RequiredLevel::Strongbox => SecurityLevel::StrongBox,
        };
        if level < least {
            return Err(AttestError::Device(format!(
                "security level: the key is in {}, the profile requires {}",
                level_name(level),
                level_name(least)
            )));
        }
        // The hardware-enforced list only: the software list is what Android, not the
        // secure hardware, says.
        let hardware = &description.hardware_enforced;
        let root = hardware.root_of_trust.as_ref().ok_or_else(|| {
            AttestError::Device("root of trust: the hardware-enforced list has none".into())
        })?;
        if !root.device_locked {
            return Err(AttestError::Device(
                "root of trust: the bootloader is unlocked".into(),
            ));
        }
        let boot_ok = match root.boot_state {
            BootState::Verified => policy.boot_states.contains(&AcceptedBoot::Verified),
            BootState::SelfSigned => policy.boot_states.contains(&AcceptedBoot::SelfSigned),
            BootState::Unverified | BootState::Failed => false,
        };
        if !boot_ok {
            return Err(AttestError::Device(format!(
                "root of trust: verified boot state is {}, the profile accepts {:?}",
                boot_name(root.boot_state),
                policy.boot_states
            )));
        }

        let serial = text(&hardware.serial, "serial number")?;
        let imei = text(&hardware.imei, "IMEI")?;
        let second_imei = text(&hardware.second_imei, "second IMEI")?;
        let meid = text(&hardware.meid, "MEID")?;
        let candidates: Vec<&String> = match policy.identifier {
            AndroidIdentifier::Serial => serial.iter().collect(),
            AndroidIdentifier::Imei => imei.iter().chain(second_imei.iter()).collect(),
            AndroidIdentifier::Meid => meid.iter().collect(),
        };
        let matches = candidates.iter().any(|v| {
            expected
                .identifiers
                .iter()
                .any(|e| v.eq_ignore_ascii_case(e))
        });
        if !matches {
            return Err(AttestError::Identifier(format!(
                "the order is for `{}`, the hardware attests {:?} {}",
                expected.identifiers.join("` or `"),
                policy.identifier,
                if candidates.is_empty() {
                    "none (the device did not attest its IDs)".to_owned()
                } else {
                    candidates
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )));
        }

        let spki = leaf.public_key();
        expected.accepts_key(spki)?;
        let os_version = hardware.os_version.map(|v| {
            // 160000 is 16.0.0; 0 means unknown.
            format!("{}.{}.{}", v / 10000, v / 100 % 100, v % 100)
        });
        let facts = DeviceFacts {
            format: self.name().as_str().to_owned(),
            serial,
            imei,
            meid,
            os_version,
            patch_level: hardware
                .os_patch_level
                .map(|p| format!("{:04}-{:02}", p / 100, p % 100)),
            security_level: Some(level_name(level).to_owned()),
            verified_boot: Some(boot_name(root.boot_state).to_owned()),
            attesting_app: (!description.software_enforced.packages.is_empty())
                .then(|| description.software_enforced.packages.join(",")),
            ..DeviceFacts::default()
        };
        Ok(Attestation {
            spki: spki.raw.to_vec(),
            facts,
        })
    }
}
