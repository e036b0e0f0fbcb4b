//! The TPM 2.0 structures a `tpm` statement carries, unmarshalled by `tpm2-protocol`:
//! `certInfo` (a `TPMS_ATTEST` the AIK signed) and `pubArea` (the `TPMT_PUBLIC` of the key
//! it certifies). Parsing only; the format judges what they say.

use tpm2_protocol::TpmUnmarshal;
use tpm2_protocol::data::{
    TpmAlgId, TpmEccCurve, TpmSt, TpmaObject, TpmsAttest, TpmtPublic, TpmuAttest, TpmuPublicId,
    TpmuPublicParms,
};

/// Why a structure was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StructureError {
    #[error("{0} is not a TPM 2.0 structure: {1}")]
    Malformed(&'static str, String),
    #[error("{0} has {1} bytes after its end")]
    Trailing(&'static str, usize),
    #[error("certInfo is of type {0}, not TPM_ST_ATTEST_CERTIFY")]
    NotCertify(String),
    #[error("pubArea's nameAlg {0} is not SHA-1, SHA-256 or SHA-384")]
    NameAlg(String),
    #[error("pubArea holds a {0} key, not an RSA or NIST ECC key")]
    KeyType(String),
}

/// What `certInfo` says: the TPM generated it (its magic, checked while parsing), to certify
/// the object named `name`, with `extra_data` the caller chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certified {
    pub extra_data: Vec<u8>,
    /// The certified object's Name: nameAlg (2 bytes) then the digest of its pubArea.
    pub name: Vec<u8>,
    pub firmware_version: u64,
}

impl Certified {
    pub fn parse(bytes: &[u8]) -> Result<Self, StructureError> {
        let (attest, rest) = TpmsAttest::unmarshal(bytes)
            .map_err(|e| StructureError::Malformed("certInfo", e.to_string()))?;
        if !rest.is_empty() {
            return Err(StructureError::Trailing("certInfo", rest.len()));
        }
        let TpmuAttest::Certify(info) = &attest.attested else {
            return Err(StructureError::NotCertify(format!(
                "{:?}",
                attest.attest_type
            )));
        };
        debug_assert_eq!(attest.attest_type, TpmSt::AttestCertify);
        Ok(Self {
            extra_data: attest.extra_data.to_vec(),
            name: info.name.to_vec(),
            firmware_version: attest.firmware_version.value(),
        })
    }
}

/// What `pubArea` says: the key, how it may be used, and the Name it goes by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicArea {
    /// The key as a SubjectPublicKeyInfo, DER.
    pub spki: Vec<u8>,
    /// Created inside the TPM and unable to leave it.
    pub fixed_tpm: bool,
    pub sensitive_data_origin: bool,
    /// nameAlg followed by its digest of these bytes.
    pub name: Vec<u8>,
}

impl PublicArea {
    pub fn parse(bytes: &[u8]) -> Result<Self, StructureError> {
        let (public, rest) = TpmtPublic::unmarshal(bytes)
            .map_err(|e| StructureError::Malformed("pubArea", e.to_string()))?;
        if !rest.is_empty() {
            return Err(StructureError::Trailing("pubArea", rest.len()));
        }
        let digest = match public.name_alg {
            TpmAlgId::Sha1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            TpmAlgId::Sha256 => &ring::digest::SHA256,
            TpmAlgId::Sha384 => &ring::digest::SHA384,
            other => return Err(StructureError::NameAlg(format!("{other:?}"))),
        };
        let mut name = (public.name_alg as u16).to_be_bytes().to_vec();
        name.extend_from_slice(ring::digest::digest(digest, bytes).as_ref());
        let attributes = public.object_attributes;
        Ok(Self {
            spki: spki(&public)?,
            fixed_tpm: attributes.contains(TpmaObject::FIXED_TPM),
            sensitive_data_origin: attributes.contains(TpmaObject::SENSITIVE_DATA_ORIGIN),
            name,
        })
    }
}

/// The key's SubjectPublicKeyInfo (RSA, or ECC on a NIST curve), DER.
fn spki(public: &TpmtPublic) -> Result<Vec<u8>, StructureError> {
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    let bad = |e: openssl::error::ErrorStack| {
        StructureError::Malformed("pubArea", format!("its public key: {e}"))
    };
    let key = match (&public.parameters, &public.unique) {
        (TpmuPublicParms::Rsa(parms), TpmuPublicId::Rsa(modulus)) => {
            // An exponent of 0 is the default, 65537.
            let exponent = match parms.exponent.value() {
                0 => 65537,
                e => e,
            };
            let rsa = Rsa::from_public_components(
                BigNum::from_slice(modulus).map_err(bad)?,
                BigNum::from_u32(exponent).map_err(bad)?,
            )
            .map_err(bad)?;
            PKey::from_rsa(rsa).map_err(bad)?
        }
        (TpmuPublicParms::Ecc(parms), TpmuPublicId::Ecc(point)) => {
            let nid = match parms.curve_id {
                TpmEccCurve::NistP256 => Nid::X9_62_PRIME256V1,
                TpmEccCurve::NistP384 => Nid::SECP384R1,
                TpmEccCurve::NistP521 => Nid::SECP521R1,
                other => return Err(StructureError::KeyType(format!("ECC {other:?}"))),
            };
            let group = EcGroup::from_curve_name(nid).map_err(bad)?;
            let (x, y) = (
                BigNum::from_slice(&point.x).map_err(bad)?,
                BigNum::from_slice(&point.y).map_err(bad)?,
            );
            let key = EcKey::from_public_key_affine_coordinates(&group, &x, &y).map_err(bad)?;
            PKey::from_ec_key(key).map_err(bad)?
        }
        _ => return Err(StructureError::KeyType(format!("{:?}", public.object_type))),
    };
    key.public_key_to_der().map_err(bad)
}
