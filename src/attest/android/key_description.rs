//! Android's KeyDescription, the attestation extension (OID 1.3.6.1.4.1.11129.2.1.17) of a
//! Keystore/KeyMint attestation certificate, as AOSP's schema defines it (attestation
//! versions 1 to 400 share this shape). Parsed with asn1-rs; only the members enrollca checks
//! or records are kept, and everything else is skipped by its tag.

use x509_parser::asn1_rs::{Any, Class, FromBer};

/// The extension's OID, DER content bytes.
pub(super) const OID: &[u8] = &x509_parser::asn1_rs::oid!(raw 1.3.6.1.4.1.11129.2.1.17);

/// Where the key lives, as the attestation says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecurityLevel {
    Software,
    TrustedEnvironment,
    StrongBox,
}

/// The verified-boot state the bootloader reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootState {
    /// Booted an image signed by the OEM's key.
    Verified,
    /// Booted an image signed by a user-installed key (a custom OS such as GrapheneOS).
    SelfSigned,
    /// Unverified (bootloader unlocked).
    Unverified,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootOfTrust {
    pub verified_boot_key: Vec<u8>,
    pub device_locked: bool,
    pub boot_state: BootState,
}

/// The members of an AuthorizationList enrollca reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizationList {
    pub root_of_trust: Option<RootOfTrust>,
    /// `osVersion`: e.g. 160000 for Android 16.
    pub os_version: Option<i64>,
    /// `osPatchLevel`: YYYYMM.
    pub os_patch_level: Option<i64>,
    /// Package names from `attestationApplicationId`.
    pub packages: Vec<String>,
    pub serial: Option<Vec<u8>>,
    pub imei: Option<Vec<u8>>,
    pub meid: Option<Vec<u8>>,
    pub second_imei: Option<Vec<u8>>,
    pub model: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDescription {
    pub attestation_version: i64,
    pub attestation_security_level: SecurityLevel,
    pub challenge: Vec<u8>,
    pub software_enforced: AuthorizationList,
    /// `teeEnforced` before KeyMint: what the secure hardware itself vouches for.
    pub hardware_enforced: AuthorizationList,
}

/// What is wrong with the extension, naming the member.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyDescriptionError(String);

fn bad(what: impl Into<String>) -> KeyDescriptionError {
    KeyDescriptionError(what.into())
}

/// One TLV with nothing after it.
fn single<'a>(bytes: &'a [u8], what: &str) -> Result<Any<'a>, KeyDescriptionError> {
    match Any::from_ber(bytes) {
        Ok(([], any)) => Ok(any),
        Ok(_) => Err(bad(format!("{what}: trailing bytes"))),
        Err(e) => Err(bad(format!("{what}: {e}"))),
    }
}

/// The TLVs inside a constructed value.
fn children<'a>(any: &Any<'a>, what: &str) -> Result<Vec<Any<'a>>, KeyDescriptionError> {
    if !any.header.is_constructed() {
        return Err(bad(format!("{what} is not a SEQUENCE or SET")));
    }
    let mut rest = any.data;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (next, item) = Any::from_ber(rest).map_err(|e| bad(format!("{what}: {e}")))?;
        out.push(item);
        rest = next;
    }
    Ok(out)
}

fn integer(any: &Any<'_>, what: &str) -> Result<i64, KeyDescriptionError> {
    any.as_i64()
        .map_err(|_| bad(format!("{what} is not an INTEGER")))
}

fn octets(any: &Any<'_>, what: &str) -> Result<Vec<u8>, KeyDescriptionError> {
    any.as_octetstring()
        .map(|o| o.as_cow().to_vec())
        .map_err(|_| bad(format!("{what} is not an OCTET STRING")))
}

fn security_level(any: &Any<'_>, what: &str) -> Result<SecurityLevel, KeyDescriptionError> {
    match any.as_enumerated().map(|e| e.0) {
        Ok(0) => Ok(SecurityLevel::Software),
        Ok(1) => Ok(SecurityLevel::TrustedEnvironment),
        Ok(2) => Ok(SecurityLevel::StrongBox),
        Ok(n) => Err(bad(format!("{what} {n} is not a known security level"))),
        Err(_) => Err(bad(format!("{what} is not an ENUMERATED"))),
    }
}

impl KeyDescription {
    pub fn parse(der: &[u8]) -> Result<Self, KeyDescriptionError> {
        let top = single(der, "KeyDescription")?;
        let fields = children(&top, "KeyDescription")?;
        let [
            version,
            level,
            _keymint_version,
            _keymint_level,
            challenge,
            _unique_id,
            sw,
            hw,
            ..,
        ] = fields.as_slice()
        else {
            return Err(bad(format!(
                "KeyDescription has {} members, not the 8 of its schema",
                fields.len()
            )));
        };
        Ok(Self {
            attestation_version: integer(version, "attestationVersion")?,
            attestation_security_level: security_level(level, "attestationSecurityLevel")?,
            challenge: octets(challenge, "attestationChallenge")?,
            software_enforced: AuthorizationList::parse(sw, "softwareEnforced")?,
            hardware_enforced: AuthorizationList::parse(hw, "hardwareEnforced")?,
        })
    }
}

impl AuthorizationList {
    fn parse(any: &Any<'_>, list: &str) -> Result<Self, KeyDescriptionError> {
        let mut out = Self::default();
        let mut seen = Vec::new();
        for entry in children(any, list)? {
            if entry.class() != Class::ContextSpecific {
                return Err(bad(format!("{list}: a member is not context-tagged")));
            }
            let tag = entry.tag().0;
            if seen.contains(&tag) {
                return Err(bad(format!("{list}: tag [{tag}] is repeated")));
            }
            seen.push(tag);
            let what = format!("{list} [{tag}]");
            // Every member is [tag] EXPLICIT: the value is the one TLV inside.
            let value = || -> Result<Any<'_>, KeyDescriptionError> {
                if !entry.header.is_constructed() {
                    return Err(bad(format!("{what} is not EXPLICIT")));
                }
                single(entry.data, &what)
            };
            match tag {
                704 => out.root_of_trust = Some(RootOfTrust::parse(&value()?)?),
                705 => out.os_version = Some(integer(&value()?, &what)?),
                706 => out.os_patch_level = Some(integer(&value()?, &what)?),
                709 => out.packages = application_packages(&octets(&value()?, &what)?)?,
                713 => out.serial = Some(octets(&value()?, &what)?),
                714 => out.imei = Some(octets(&value()?, &what)?),
                715 => out.meid = Some(octets(&value()?, &what)?),
                717 => out.model = Some(octets(&value()?, &what)?),
                723 => out.second_imei = Some(octets(&value()?, &what)?),
                _ => {}
            }
        }
        Ok(out)
    }
}

impl RootOfTrust {
    fn parse(any: &Any<'_>) -> Result<Self, KeyDescriptionError> {
        let fields = children(any, "rootOfTrust")?;
        let [key, locked, state, ..] = fields.as_slice() else {
            return Err(bad("rootOfTrust has fewer than 3 members"));
        };
        // BER, not DER: some devices encode TRUE as 0x01, and the certificate's signature,
        // not the encoding, is what makes the value trustworthy.
        let device_locked = locked
            .as_boolean()
            .map_err(|_| bad("rootOfTrust.deviceLocked is not a BOOLEAN"))?
            .bool();
        let boot_state = match state.as_enumerated().map(|e| e.0) {
            Ok(0) => BootState::Verified,
            Ok(1) => BootState::SelfSigned,
            Ok(2) => BootState::Unverified,
            Ok(3) => BootState::Failed,
            _ => return Err(bad("rootOfTrust.verifiedBootState is not a known state")),
        };
        Ok(Self {
            verified_boot_key: octets(key, "rootOfTrust.verifiedBootKey")?,
            device_locked,
            boot_state,
        })
    }
}

/// `AttestationApplicationId ::= SEQUENCE { package_infos SET OF SEQUENCE { name OCTET
/// STRING, version INTEGER }, signature_digests SET OF OCTET STRING }`, DER inside an OCTET
/// STRING: the package names.
fn application_packages(der: &[u8]) -> Result<Vec<String>, KeyDescriptionError> {
    let what = "attestationApplicationId";
    let top = single(der, what)?;
    let members = children(&top, what)?;
    let Some(infos) = members.first() else {
        return Err(bad(format!("{what} is empty")));
    };
    children(infos, what)?
        .iter()
        .map(|info| {
            let fields = children(info, what)?;
            let name = fields
                .first()
                .ok_or_else(|| bad(format!("{what}: a package has no name")))?;
            String::from_utf8(octets(name, what)?)
                .map_err(|_| bad(format!("{what}: a package name is not UTF-8")))
        })
        .collect()
}
