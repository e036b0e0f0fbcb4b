//! YubiKey PIV attestation (`fmt: "step"`, as step-ca defines it): a key generated in a
//! YubiKey's PIV applet, certified by the key's own attestation key (slot `f9`), chained to
//! Yubico's PIV roots, with the key's serial number, firmware and PIN/touch policies as
//! Yubico extensions. A YubiKey has no freshness field to fill, so the attested key signs
//! the ACME key authorization instead: that proves the key answers this challenge now.
//! Every check is mandatory: a missing member is a failure.
//!
//! Statement: `{"alg": -7 or -257, "sig": bstr, "x5c": [leaf, f9, …]}`, where `sig` holds a
//! CBOR byte string wrapping the signature over SHA-256 of the key authorization (ECDSA, DER,
//! for an EC key whatever the curve, as step CLI signs; RSASSA-PKCS1-v1_5 for RSA).

use ciborium::Value;
use ring::signature::{self, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use x509_parser::asn1_rs::{FromDer, Integer, oid};
use x509_parser::certificate::X509Certificate;

use super::chain::{self, Anchors};
use super::{
    AttestError, Attestation, AttestationObject, DeviceFacts, Expected, Format, FormatName,
};
use crate::csr::SubjectKey;

/// Yubico's PIV roots, shipped in `pki/` (fingerprints asserted by `tests/library/pki.rs`):
/// `Yubico PIV Root CA Serial 263751` (firmware before 5.7.4) and `Yubico Attestation Root 1`.
const YUBICO_ROOTS_PEM: &[u8] = include_bytes!("../../pki/yubico-piv-attestation-roots.pem");

/// Yubico's intermediates between a 5.7.4+ key's `f9` certificate and `Yubico Attestation
/// Root 1` (PIV Attestation A 1 and B 1, Attestation Intermediate A 1 and B 1; fingerprints
/// asserted by `tests/library/pki.rs`): keys do not carry them, and a client that sends only
/// `[leaf, f9]` is completed with them.
const YUBICO_INTERMEDIATES_PEM: &[u8] =
    include_bytes!("../../pki/yubico-piv-attestation-intermediates.pem");

/// Longest chain accepted below the root: from firmware 5.7.4 the client sends the leaf,
/// the device's `f9` certificate and Yubico's two intermediates.
const MAX_CHAIN: usize = 4;

/// Yubico's extensions (arc 1.3.6.1.4.1.41482.3), as DER OID bytes.
const FIRMWARE: &[u8] = &oid!(raw 1.3.6.1.4.1.41482.3.3);
/// DER INTEGER.
const SERIAL: &[u8] = &oid!(raw 1.3.6.1.4.1.41482.3.7);
const POLICY: &[u8] = &oid!(raw 1.3.6.1.4.1.41482.3.8);
const FORM_FACTOR: &[u8] = &oid!(raw 1.3.6.1.4.1.41482.3.9);

/// COSE algorithms of the signature over the key authorization: ECDSA or RSASSA-PKCS1-v1_5,
/// both over SHA-256.
const ES256: i128 = -7;
const RS256: i128 = -257;

/// What a profile demands of a YubiKey beyond a genuine attestation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct YubiKeyPolicy {
    /// The key must be unusable without the PIN (policy `once`, `always` or a biometric match).
    pub require_pin: bool,
    /// The key must be unusable without a touch (policy `always` or `cached`).
    pub require_touch: bool,
}

/// When the key asks for the PIN (byte 1 of Yubico's policy extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinPolicy {
    Never,
    Once,
    Always,
    /// YubiKey Bio: a fingerprint match once per session.
    MatchOnce,
    MatchAlways,
    Other(u8),
}

/// When the key asks for a touch (byte 2 of Yubico's policy extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TouchPolicy {
    Never,
    Always,
    /// A touch is remembered for 15 seconds.
    Cached,
    Other(u8),
}

impl PinPolicy {
    fn of(byte: u8) -> Self {
        match byte {
            1 => Self::Never,
            2 => Self::Once,
            3 => Self::Always,
            4 => Self::MatchOnce,
            5 => Self::MatchAlways,
            b => Self::Other(b),
        }
    }

    /// Whether the key cannot be used without the PIN or a fingerprint.
    pub fn protects(self) -> bool {
        matches!(
            self,
            Self::Once | Self::Always | Self::MatchOnce | Self::MatchAlways
        )
    }

    pub fn name(self) -> String {
        match self {
            Self::Never => "never".into(),
            Self::Once => "once".into(),
            Self::Always => "always".into(),
            Self::MatchOnce => "match-once".into(),
            Self::MatchAlways => "match-always".into(),
            Self::Other(b) => format!("unknown ({b})"),
        }
    }
}

impl TouchPolicy {
    fn of(byte: u8) -> Self {
        match byte {
            1 => Self::Never,
            2 => Self::Always,
            3 => Self::Cached,
            b => Self::Other(b),
        }
    }

    /// Whether the key cannot be used without a touch.
    pub fn protects(self) -> bool {
        matches!(self, Self::Always | Self::Cached)
    }

    pub fn name(self) -> String {
        match self {
            Self::Never => "never".into(),
            Self::Always => "always".into(),
            Self::Cached => "cached".into(),
            Self::Other(b) => format!("unknown ({b})"),
        }
    }
}

/// What Yubico's extensions on a slot attestation certificate say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PivExtensions {
    pub serial: u32,
    /// Major, minor, patch.
    pub firmware: Option<[u8; 3]>,
    pub pin: Option<PinPolicy>,
    pub touch: Option<TouchPolicy>,
    pub form_factor: Option<u8>,
}

impl PivExtensions {
    /// Reads the extensions of `cert`; the serial number is required.
    pub fn of(cert: &X509Certificate<'_>) -> Result<Self, AttestError> {
        let value = |oid: &[u8]| {
            cert.extensions()
                .iter()
                .find(|e| e.oid.as_bytes() == oid)
                .map(|e| e.value)
        };
        let bad = |what: &str| AttestError::Malformed(format!("the YubiKey {what} extension"));
        let serial = value(SERIAL).ok_or_else(|| {
            AttestError::Malformed("the leaf carries no YubiKey serial number extension".into())
        })?;
        let serial = match Integer::from_der(serial) {
            Ok(([], n)) => n.as_u32().map_err(|_| bad("serial number"))?,
            _ => return Err(bad("serial number")),
        };
        let firmware = value(FIRMWARE)
            .map(|v| <[u8; 3]>::try_from(v).map_err(|_| bad("firmware version")))
            .transpose()?;
        let (pin, touch) = match value(POLICY) {
            Some(&[pin, touch]) => (Some(PinPolicy::of(pin)), Some(TouchPolicy::of(touch))),
            Some(_) => return Err(bad("PIN and touch policy")),
            None => (None, None),
        };
        let form_factor = match value(FORM_FACTOR) {
            Some(&[f]) => Some(f),
            Some(_) => return Err(bad("form factor")),
            None => None,
        };
        Ok(Self {
            serial,
            firmware,
            pin,
            touch,
            form_factor,
        })
    }

    /// The form factor as Yubico names it (the high bits flag FIPS and CSPN models).
    pub fn form_factor_name(&self) -> Option<String> {
        let f = self.form_factor?;
        let kind = match f & 0x3f {
            1 => "usb-a-keychain",
            2 => "usb-a-nano",
            3 => "usb-c-keychain",
            4 => "usb-c-nano",
            5 => "usb-c-lightning",
            6 => "usb-a-bio",
            7 => "usb-c-bio",
            _ => "unspecified",
        };
        let mut name = kind.to_owned();
        if f & 0x80 != 0 {
            name.push_str(" fips");
        }
        if f & 0x40 != 0 {
            name.push_str(" cspn");
        }
        Some(name)
    }
}

/// The DER signature in `sig`: a byte string holding a CBOR byte string.
fn signature(object: &AttestationObject) -> Result<Vec<u8>, AttestError> {
    let bad = |m: &str| AttestError::Malformed(m.to_owned());
    let Some(Value::Bytes(wrapped)) = object.member("sig") else {
        return Err(bad("`attStmt` has no `sig` byte string"));
    };
    let mut reader = wrapped.as_slice();
    match ciborium::from_reader::<Value, _>(&mut reader) {
        Ok(Value::Bytes(sig)) if reader.is_empty() => Ok(sig),
        _ => Err(bad("`sig` does not hold a CBOR byte string")),
    }
}

pub struct YubiKeyPiv {
    anchors: Anchors,
}

impl YubiKeyPiv {
    /// Trusts Yubico's roots and `extra` roots (DER).
    pub fn new(extra: &[Vec<u8>]) -> Result<Self, AttestError> {
        let yubico =
            crate::encoding::pem_certs(YUBICO_ROOTS_PEM).expect("the shipped Yubico roots parse");
        // YubiKey 4.3's `f9` certificates carry no basicConstraints (YubiKey 5 added
        // `CA:TRUE`); the root signed them, which is what the chain must show.
        let intermediates = crate::encoding::pem_certs(YUBICO_INTERMEDIATES_PEM)
            .expect("the shipped Yubico intermediates parse");
        let mut anchors = Anchors::new(MAX_CHAIN)
            .leaf_issuer_may_be_end_entity()
            .completed_by(&intermediates)?;
        anchors.trust(&yubico)?;
        anchors.trust(extra)?;
        Ok(Self { anchors })
    }
}

impl Format for YubiKeyPiv {
    fn name(&self) -> FormatName {
        FormatName::Step
    }

    fn verify(
        &self,
        object: &AttestationObject,
        expected: &Expected<'_>,
    ) -> Result<Attestation, AttestError> {
        let alg = match object.member("alg") {
            Some(Value::Integer(alg)) => i128::from(*alg),
            _ => {
                return Err(AttestError::Malformed(
                    "`attStmt` has no integer `alg`".into(),
                ));
            }
        };
        let sig = signature(object)?;
        let x5c = chain::x5c(object)?;
        let now = chain::asn1_now(expected.now)?;
        let leaf = self.anchors.verify(&x5c, now)?.swap_remove(0);
        let piv = PivExtensions::of(&leaf)?;

        let spki = leaf.public_key();
        expected.accepts_key(spki)?;
        // The signature is over SHA-256 whatever the key: `alg` names its scheme.
        let algorithm: &dyn signature::VerificationAlgorithm = match (SubjectKey::of(spki), alg) {
            (Ok(SubjectKey::EcP256), ES256) => &signature::ECDSA_P256_SHA256_ASN1,
            (Ok(SubjectKey::EcP384), ES256) => &signature::ECDSA_P384_SHA256_ASN1,
            (Ok(SubjectKey::Rsa { .. }), RS256) => &signature::RSA_PKCS1_2048_8192_SHA256,
            (_, alg) => {
                return Err(AttestError::Malformed(format!(
                    "`alg` {alg} does not fit the attested key (ES256, -7, for an EC key; \
                     RS256, -257, for RSA)"
                )));
            }
        };
        UnparsedPublicKey::new(algorithm, &spki.subject_public_key.data)
            .verify(expected.key_authorization.as_bytes(), &sig)
            .map_err(|_| {
                AttestError::Proof(
                    "the signature over this challenge's key authorization does not verify \
                     with the attested key"
                        .into(),
                )
            })?;

        let serial = piv.serial.to_string();
        if !expected.identifiers.iter().any(|e| *e == serial) {
            return Err(AttestError::Identifier(format!(
                "the order is for `{}`, the YubiKey attests serial number {serial}",
                expected.identifiers.join("` or `")
            )));
        }
        let policy = expected.yubikey;
        if policy.require_pin && !piv.pin.is_some_and(PinPolicy::protects) {
            return Err(AttestError::Device(format!(
                "PIN policy: the key's is {}, the profile requires a PIN",
                piv.pin.map_or("not attested".into(), PinPolicy::name)
            )));
        }
        if policy.require_touch && !piv.touch.is_some_and(TouchPolicy::protects) {
            return Err(AttestError::Device(format!(
                "touch policy: the key's is {}, the profile requires a touch",
                piv.touch.map_or("not attested".into(), TouchPolicy::name)
            )));
        }
        let facts = DeviceFacts {
            format: self.name().as_str().to_owned(),
            serial: Some(serial),
            firmware: piv
                .firmware
                .map(|[major, minor, patch]| format!("{major}.{minor}.{patch}")),
            pin_policy: piv.pin.map(PinPolicy::name),
            touch_policy: piv.touch.map(TouchPolicy::name),
            form_factor: piv.form_factor_name(),
            ..DeviceFacts::default()
        };
        Ok(Attestation {
            spki: spki.raw.to_vec(),
            facts,
        })
    }
}
