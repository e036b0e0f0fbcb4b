//! Device attestation: evidence, signed by a device maker's CA, that a key lives in a device's
//! secure hardware and which device that is. Each attestation format (`apple`, `android-key`,
//! `step`, `tpm`)
//! is one `Format`; ACME sees only `Verifier` and what it returns.

pub mod android;
mod apple;
mod chain;
mod object;
pub mod status;
pub mod tpm;
mod yubikey;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use crate::model::DeviceFacts;
pub use android::{AndroidKey, AndroidPolicy};
pub use apple::Apple;
pub use object::AttestationObject;
pub use tpm::{Tpm, TpmIdentifier, TpmPolicy};
pub use yubikey::{PinPolicy, PivExtensions, TouchPolicy, YubiKeyPiv, YubiKeyPolicy};

use crate::csr::SubjectKey;

/// Largest attestation object accepted (Apple's are about 2 KiB).
pub const MAX_OBJECT_LEN: usize = 64 * 1024;

/// Key types an attested key may have; a profile lists those it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyType {
    #[serde(rename = "p256")]
    P256,
    #[serde(rename = "p384")]
    P384,
    /// RSA of 2048 to 4096 bits (TPM and YubiKey keys often are).
    #[serde(rename = "rsa")]
    Rsa,
}

impl KeyType {
    pub fn of(key: SubjectKey) -> Option<Self> {
        match key {
            SubjectKey::EcP256 => Some(Self::P256),
            SubjectKey::EcP384 => Some(Self::P384),
            SubjectKey::Rsa { bits: 2048..=4096 } => Some(Self::Rsa),
            _ => None,
        }
    }
}

/// The attestation formats enrollca verifies; a profile lists those it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FormatName {
    /// Apple Managed Device Attestation.
    Apple,
    /// Android Key Attestation.
    AndroidKey,
    /// YubiKey PIV attestation, as step-ca defines it.
    Step,
    /// TPM 2.0 key attestation (WebAuthn's `tpm`).
    Tpm,
}

impl FormatName {
    /// The attestation object's `fmt`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Apple => "apple",
            Self::AndroidKey => "android-key",
            Self::Step => "step",
            Self::Tpm => "tpm",
        }
    }
}

/// A verified attestation: the hardware-bound key and the device it is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// The attested key's SubjectPublicKeyInfo, DER: the CSR at finalize must carry this key.
    #[serde(with = "serde_bytes")]
    pub spki: Vec<u8>,
    pub facts: DeviceFacts,
}

/// What the attestation must show: it was made for this challenge, for this identifier, with
/// a key of an allowed type, and is valid now.
pub struct Expected<'a> {
    /// SHA-256 of the challenge token (the freshness nonce).
    pub nonce: [u8; 32],
    /// The challenge's key authorization (token `.` account key thumbprint): what a format
    /// without a freshness field (`step`) signs with the attested key.
    pub key_authorization: &'a str,
    /// What the attested serial number or UDID must be (either): the order's permanent
    /// identifier, or what is registered for the device a ClientIdentifier stands for.
    pub identifiers: &'a [&'a str],
    pub key_types: &'a [KeyType],
    /// The formats the profile accepts.
    pub formats: &'a [FormatName],
    pub android: &'a AndroidPolicy,
    pub yubikey: &'a YubiKeyPolicy,
    pub tpm: &'a TpmPolicy,
    pub now: OffsetDateTime,
}

impl Expected<'_> {
    /// The attested key must be of a type the profile accepts.
    fn accepts_key(
        &self,
        spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>,
    ) -> Result<(), AttestError> {
        let key = SubjectKey::of(spki)
            .ok()
            .and_then(KeyType::of)
            .ok_or_else(|| {
                AttestError::Key("the key is not P-256, P-384 or RSA of 2048 to 4096 bits".into())
            })?;
        if !self.key_types.contains(&key) {
            return Err(AttestError::Key(format!(
                "{key:?} keys are not accepted by this profile (accepted: {:?})",
                self.key_types
            )));
        }
        Ok(())
    }
}

/// The freshness nonce an attestation for a challenge must carry: SHA-256 of its token.
pub fn freshness_nonce(token: &str) -> [u8; 32] {
    crate::encoding::sha256(token.as_bytes())
}

/// Each names the check that failed; ACME reports them as `badAttestationStatement`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestError {
    #[error("attestation object: {0}")]
    Malformed(String),
    #[error("attestation format `{0}` is not supported (supported: {1})")]
    UnsupportedFormat(String, String),
    #[error("certificate chain: {0}")]
    Chain(String),
    #[error("freshness nonce: {0}")]
    Nonce(String),
    #[error("identifier: {0}")]
    Identifier(String),
    #[error("attested key: {0}")]
    Key(String),
    /// The attested key did not prove it answers this challenge.
    #[error("proof of possession: {0}")]
    Proof(String),
    /// The device's state is not what the profile demands (security level, boot state).
    #[error("{0}")]
    Device(String),
    /// The answer carries no attestation: a device that cannot attest (Apple ignores
    /// `Attest` on A10X and earlier and on Intel Macs with a T2). A profile decides whether
    /// its one-time ClientIdentifier may vouch for it instead.
    #[error("no attestation was supplied ({0})")]
    NotSupplied(String),
    /// What the verdict needs is not at hand yet (a revocation list not loaded): ours, and
    /// the same answer may succeed later.
    #[error("cannot verify now: {0}")]
    Unavailable(String),
    /// A configured trust anchor is unusable (a start-up error, never a client's).
    #[error("trust anchor: {0}")]
    Anchor(String),
}

/// One attestation format's verifier.
pub trait Format: Send + Sync {
    /// The `fmt` value it verifies.
    fn name(&self) -> FormatName;
    /// Verifies the format's statement (`attStmt`) against what is expected.
    fn verify(
        &self,
        object: &AttestationObject,
        expected: &Expected<'_>,
    ) -> Result<Attestation, AttestError>;
}

/// The formats enrollca accepts, chosen by the attestation object's `fmt`.
#[derive(Clone)]
pub struct Verifier {
    formats: Vec<Arc<dyn Format>>,
    /// The operator's withdrawn attestation certificates, whatever the format.
    revocations: Option<status::StatusList>,
}

impl Verifier {
    pub fn new(formats: Vec<Arc<dyn Format>>) -> Self {
        Self {
            formats,
            revocations: None,
        }
    }

    /// Refuses any attestation whose `x5c` holds a certificate `list` names.
    pub fn with_revocations(mut self, list: status::StatusList) -> Self {
        self.revocations = Some(list);
        self
    }

    /// Parses the CBOR attestation object and verifies it with its format.
    pub fn verify(
        &self,
        bytes: &[u8],
        expected: &Expected<'_>,
    ) -> Result<Attestation, AttestError> {
        let object = AttestationObject::parse(bytes)?;
        // WebAuthn's `none`: an object that attests nothing.
        if object.fmt == "none" {
            return Err(AttestError::NotSupplied(
                "the attestation object is of format `none`".into(),
            ));
        }
        let format = self
            .formats
            .iter()
            .find(|f| f.name().as_str() == object.fmt && expected.formats.contains(&f.name()))
            .ok_or_else(|| {
                let names: Vec<_> = expected.formats.iter().map(|f| f.as_str()).collect();
                AttestError::UnsupportedFormat(object.fmt.clone(), names.join(", "))
            })?;
        if let Some(list) = &self.revocations {
            // A malformed x5c is the format's to report.
            let x5c = chain::x5c(&object).unwrap_or_default();
            list.check(&x5c, "acme.attestation_revocations")?;
        }
        format.verify(&object, expected)
    }
}
