//! TPM 2.0 key attestation (`fmt: "tpm"`, the WebAuthn format, as draft-ietf-acme-device-attest
//! and step-ca use it): the TPM certifies a key it holds (`certInfo`, a `TPMS_ATTEST` signed
//! by an attestation identity key, AIK) and names it by the digest of its public area
//! (`pubArea`). The AIK certificate chains to a root the operator configures (a TPM maker's
//! or an AIK CA's, in `acme.attestation_roots`). Freshness: `extraData` is SHA-256 of the
//! challenge's key authorization. Every check is mandatory: a missing member is a failure.
//!
//! Statement: `{"ver": "2.0", "alg": COSE, "x5c": [AIK, …], "sig": bytes, "certInfo":
//! bytes, "pubArea": bytes}`.

mod aik;
mod structures;

use ciborium::Value;
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use serde::{Deserialize, Serialize};
use x509_parser::prelude::FromDer;

pub use aik::AikFacts;
pub use structures::{Certified, PublicArea, StructureError};

use super::chain::{self, Anchors};
use super::{
    AttestError, Attestation, AttestationObject, DeviceFacts, Expected, Format, FormatName,
};

/// Longest chain accepted below the root (Microsoft's: AIK, a per-region issuing CA).
const MAX_CHAIN: usize = 4;

/// What a profile demands of a TPM beyond a genuine attestation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TpmPolicy {
    /// Which name in the AIK certificate the order's identifier must be.
    pub identifier: TpmIdentifier,
    /// Accept `alg` -65535 (RSASSA-PKCS1-v1_5 with SHA-1), which Windows' TPM attestations
    /// still use. Off: SHA-1 signatures are refused.
    pub accept_sha1: bool,
}

/// Where a TPM's device identity is read from: an otherName in the AIK certificate's
/// subjectAltName, as the AIK CA wrote it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TpmIdentifier {
    /// RFC 4043 PermanentIdentifier (its identifierValue).
    #[default]
    PermanentIdentifier,
    /// RFC 4108 HardwareModuleName (its hwSerialNum: text when printable, else hex).
    HardwareModuleName,
}

/// COSE algorithms a TPM signs `certInfo` with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Rs256,
    Es256,
    Rs1,
}

impl Alg {
    fn of(value: Option<&Value>, policy: &TpmPolicy) -> Result<Self, AttestError> {
        let Some(Value::Integer(alg)) = value else {
            return Err(AttestError::Malformed(
                "`attStmt` has no integer `alg`".into(),
            ));
        };
        match i128::from(*alg) {
            -257 => Ok(Self::Rs256),
            -7 => Ok(Self::Es256),
            -65535 if policy.accept_sha1 => Ok(Self::Rs1),
            -65535 => Err(AttestError::Malformed(
                "`alg` -65535 signs with SHA-1, which this profile refuses (tpm.accept_sha1)"
                    .into(),
            )),
            other => Err(AttestError::Malformed(format!(
                "`alg` {other} is not RS256 (-257), ES256 (-7) or RS1 (-65535)"
            ))),
        }
    }

    fn verifier(self) -> &'static dyn VerificationAlgorithm {
        match self {
            Self::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Self::Es256 => &signature::ECDSA_P256_SHA256_ASN1,
            Self::Rs1 => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        }
    }
}

fn bytes<'a>(object: &'a AttestationObject, name: &str) -> Result<&'a [u8], AttestError> {
    match object.member(name) {
        Some(Value::Bytes(b)) if !b.is_empty() => Ok(b),
        _ => Err(AttestError::Malformed(format!(
            "`attStmt` has no `{name}` byte string"
        ))),
    }
}

pub struct Tpm {
    /// Only what the operator configures: no TPM root is trusted by default.
    anchors: Anchors,
}

impl Tpm {
    /// Trusts `roots` (DER): TPM manufacturers' roots or an AIK CA's.
    pub fn new(roots: &[Vec<u8>]) -> Result<Self, AttestError> {
        let mut anchors = Anchors::new(MAX_CHAIN);
        anchors.trust(roots)?;
        Ok(Self { anchors })
    }
}

impl Format for Tpm {
    fn name(&self) -> FormatName {
        FormatName::Tpm
    }

    fn verify(
        &self,
        object: &AttestationObject,
        expected: &Expected<'_>,
    ) -> Result<Attestation, AttestError> {
        let policy = expected.tpm;
        match object.member("ver") {
            Some(Value::Text(v)) if v == "2.0" => {}
            _ => return Err(AttestError::Malformed("`ver` is not \"2.0\"".into())),
        }
        let alg = Alg::of(object.member("alg"), policy)?;
        let (sig, cert_info, pub_area) = (
            bytes(object, "sig")?,
            bytes(object, "certInfo")?,
            bytes(object, "pubArea")?,
        );
        let x5c = chain::x5c(object)?;
        let now = chain::asn1_now(expected.now)?;
        let aik_cert = self.anchors.verify(&x5c, now)?.swap_remove(0);
        let aik = AikFacts::read(&aik_cert)?;

        let malformed = |e: StructureError| AttestError::Malformed(e.to_string());
        let certified = Certified::parse(cert_info).map_err(malformed)?;
        let public = PublicArea::parse(pub_area).map_err(malformed)?;
        UnparsedPublicKey::new(
            alg.verifier(),
            &aik_cert.public_key().subject_public_key.data,
        )
        .verify(cert_info, sig)
        .map_err(|_| {
            AttestError::Proof("the AIK's signature over certInfo does not verify".into())
        })?;
        if certified.name != public.name {
            return Err(AttestError::Key(
                "certInfo certifies another object than pubArea (their Names differ)".into(),
            ));
        }
        let freshness = crate::encoding::sha256(expected.key_authorization.as_bytes());
        if certified.extra_data != freshness {
            return Err(AttestError::Nonce(
                "certInfo's extraData is not SHA-256 of this challenge's key authorization".into(),
            ));
        }
        if !public.fixed_tpm || !public.sensitive_data_origin {
            return Err(AttestError::Device(
                "the key was not generated inside the TPM or may leave it \
                 (fixedTPM and sensitiveDataOrigin are required)"
                    .into(),
            ));
        }
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&public.spki)
            .map_err(|_| AttestError::Key("pubArea's key does not encode".into()))?;
        expected.accepts_key(&spki)?;

        let (candidates, kind) = match policy.identifier {
            TpmIdentifier::PermanentIdentifier => {
                (&aik.permanent_identifiers, "PermanentIdentifier")
            }
            TpmIdentifier::HardwareModuleName => (&aik.hardware_serials, "HardwareModuleName"),
        };
        let Some(identifier) = candidates
            .iter()
            .find(|c| expected.identifiers.contains(&c.as_str()))
        else {
            return Err(AttestError::Identifier(format!(
                "the order is for `{}`, the AIK certificate names {}",
                expected.identifiers.join("` or `"),
                if candidates.is_empty() {
                    format!("no {kind}")
                } else {
                    format!("{kind} {}", candidates.join(", "))
                }
            )));
        };
        let facts = DeviceFacts {
            format: self.name().as_str().to_owned(),
            serial: Some(identifier.clone()),
            tpm_manufacturer: Some(aik.manufacturer),
            tpm_model: Some(aik.model),
            firmware: Some(aik.version),
            ..DeviceFacts::default()
        };
        Ok(Attestation {
            spki: public.spki,
            facts,
        })
    }
}
