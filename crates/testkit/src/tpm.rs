//! Synthetic TPM 2.0 attestations (`fmt: "tpm"`) for the tests, the fuzz corpus and the load
//! generator: an AIK CA (a P-256 root), AIK certificates as WebAuthn requires them, and the
//! `pubArea`/`certInfo` a TPM would produce for a device key, written byte by byte from the
//! TPM 2.0 specification (Part 2: TPMT_PUBLIC, TPMS_ATTEST), independently of the parser
//! enrollca uses. Nothing trusts the root unless an operator lists it in
//! `acme.attestation_roots`.

use ciborium::Value;
use der::Encode;
use der::asn1::{ObjectIdentifier, OctetString, SetOfVec, Utf8StringRef};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::{GeneralName, OtherName};
use x509_cert::name::{RdnSequence, RelativeDistinguishedName};

use std::path::Path;

use crate::attestation::{load_issuer, read_file, save_files, sign_sha256};

/// TPMA_OBJECT bits.
pub const FIXED_TPM: u32 = 0x0000_0002;
pub const FIXED_PARENT: u32 = 0x0000_0010;
pub const SENSITIVE_DATA_ORIGIN: u32 = 0x0000_0020;
const USER_WITH_AUTH: u32 = 0x0000_0040;
const SIGN: u32 = 0x0004_0000;

/// What a synthetic attestation says. `Default` is a genuine one for a device whose AIK
/// certificate carries the PermanentIdentifier `TPM-DEVICE-1`.
pub struct TpmLeaf {
    pub permanent_identifier: Option<String>,
    /// A HardwareModuleName otherName with this hwSerialNum.
    pub hardware_serial: Option<Vec<u8>>,
    /// Whether the SAN names the TPM's manufacturer, model and version.
    pub tpm_details: bool,
    /// Whether the AIK certificate has the tcg-kp-AIKCertificate extended key usage.
    pub aik_usage: bool,
    /// A subject for the AIK certificate (WebAuthn requires none).
    pub subject: Option<String>,
    /// TPMA_OBJECT of the certified key.
    pub attributes: u32,
    /// `extraData` to certify instead of SHA-256 of the key authorization.
    pub extra_data: Option<Vec<u8>>,
    /// certInfo's magic (TPM_GENERATED_VALUE unless changed).
    pub magic: u32,
    /// Certify this Name instead of the pubArea's.
    pub name: Option<Vec<u8>>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Default for TpmLeaf {
    fn default() -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            permanent_identifier: Some("TPM-DEVICE-1".into()),
            hardware_serial: None,
            tpm_details: true,
            aik_usage: true,
            subject: None,
            attributes: FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | USER_WITH_AUTH | SIGN,
            extra_data: None,
            magic: 0xff54_4347,
            name: None,
            not_before: now - Duration::minutes(5),
            not_after: now + Duration::days(1),
        }
    }
}

fn sized(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// TPMT_PUBLIC of a signing key (nameAlg SHA-256): P-256 with ECDSA, or RSA with RSASSA,
/// both over SHA-256.
pub fn pub_area(device_key: &KeyPair, attributes: u32) -> Vec<u8> {
    let rsa = device_key.algorithm() == &rcgen::PKCS_RSA_SHA256;
    let mut out = Vec::new();
    out.extend(if rsa { 0x0001u16 } else { 0x0023 }.to_be_bytes()); // type: RSA or ECC
    out.extend(0x000bu16.to_be_bytes()); // nameAlg: TPM_ALG_SHA256
    out.extend(attributes.to_be_bytes());
    out.extend(sized(&[])); // authPolicy
    out.extend(0x0010u16.to_be_bytes()); // symmetric: TPM_ALG_NULL
    if rsa {
        let spki = rcgen::PublicKeyData::subject_public_key_info(device_key);
        let modulus = openssl::pkey::PKey::public_key_from_der(&spki)
            .and_then(|k| k.rsa())
            .map(|k| k.n().to_vec())
            .expect("an RSA public key");
        out.extend(0x0014u16.to_be_bytes()); // scheme: TPM_ALG_RSASSA
        out.extend(0x000bu16.to_be_bytes()); //   hashAlg: SHA-256
        out.extend(((modulus.len() * 8) as u16).to_be_bytes()); // keyBits
        out.extend(0u32.to_be_bytes()); // exponent: the default, 65537
        out.extend(sized(&modulus));
    } else {
        let point = device_key.public_key_raw();
        assert_eq!(point.len(), 65, "a P-256 key");
        out.extend(0x0018u16.to_be_bytes()); // scheme: TPM_ALG_ECDSA
        out.extend(0x000bu16.to_be_bytes()); //   hashAlg: SHA-256
        out.extend(0x0003u16.to_be_bytes()); // curveID: TPM_ECC_NIST_P256
        out.extend(0x0010u16.to_be_bytes()); // kdf: TPM_ALG_NULL
        out.extend(sized(&point[1..33]));
        out.extend(sized(&point[33..]));
    }
    out
}

/// The Name of a pubArea: nameAlg (SHA-256) and its digest.
pub fn name(pub_area: &[u8]) -> Vec<u8> {
    let mut out = 0x000bu16.to_be_bytes().to_vec();
    out.extend(openssl::sha::sha256(pub_area));
    out
}

/// TPMS_ATTEST of type TPM_ST_ATTEST_CERTIFY.
pub fn cert_info(magic: u32, extra_data: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    out.extend(0x8017u16.to_be_bytes()); // TPM_ST_ATTEST_CERTIFY
    out.extend(sized(&[0x00, 0x0b, 0xaa, 0xbb])); // qualifiedSigner
    out.extend(sized(extra_data));
    out.extend(1_000_000u64.to_be_bytes()); // clockInfo.clock
    out.extend(3u32.to_be_bytes()); //          resetCount
    out.extend(7u32.to_be_bytes()); //          restartCount
    out.push(1); //                             safe
    out.extend(0x0007_0002_0000_0000u64.to_be_bytes()); // firmwareVersion
    out.extend(sized(name));
    out.extend(sized(name)); // qualifiedName
    out
}

/// A test AIK CA: its root signs AIK certificates.
pub struct TestTpmCa {
    root_pem: String,
    root: Issuer<'static, KeyPair>,
}

impl TestTpmCa {
    pub fn generate(label: &str) -> Result<Self, rcgen::Error> {
        let mut p = CertificateParams::default();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, format!("{label} AIK CA"));
        p.not_before = OffsetDateTime::now_utc() - Duration::days(1);
        p.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
        let root = CertifiedIssuer::self_signed(
            p.clone(),
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?,
        )?;
        let root_pem = root.pem();
        let key = KeyPair::from_pem(&root.key().serialize_pem())?;
        Ok(Self {
            root_pem,
            root: Issuer::new(p, key),
        })
    }

    /// Writes it into `dir` for `load`.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        save_files(
            dir,
            &[
                ("root.pem", self.root_pem.clone()),
                ("root.key", self.root.key().serialize_pem()),
            ],
        )
    }

    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let (root, _) = load_issuer(dir, "root")?;
        Ok(Self {
            root_pem: read_file(dir, "root.pem")?,
            root,
        })
    }

    pub fn root_pem(&self) -> String {
        self.root_pem.clone()
    }

    /// An AIK certificate for `aik` as `leaf` describes it.
    pub fn aik_cert(&self, aik: &KeyPair, leaf: &TpmLeaf) -> Result<Vec<u8>, rcgen::Error> {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        if let Some(cn) = &leaf.subject {
            p.distinguished_name.push(DnType::CommonName, cn.clone());
        }
        p.is_ca = IsCa::ExplicitNoCa;
        if leaf.aik_usage {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(vec![2, 23, 133, 8, 3])];
        }
        p.not_before = leaf.not_before;
        p.not_after = leaf.not_after;
        let mut san = CustomExtension::from_oid_content(&[2, 5, 29, 17], subject_alt_name(leaf));
        san.set_criticality(leaf.subject.is_none());
        p.custom_extensions.push(san);
        Ok(p.signed_by(aik, &self.root)?.der().to_vec())
    }

    /// The attestation object a TPM client sends for `device_key`.
    pub fn attest(
        &self,
        device_key: &KeyPair,
        leaf: &TpmLeaf,
        key_authorization: &str,
    ) -> Result<Vec<u8>, rcgen::Error> {
        let aik = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let pub_area = pub_area(device_key, leaf.attributes);
        let extra = leaf
            .extra_data
            .clone()
            .unwrap_or_else(|| openssl::sha::sha256(key_authorization.as_bytes()).to_vec());
        let name = leaf.name.clone().unwrap_or_else(|| name(&pub_area));
        let cert_info = cert_info(leaf.magic, &extra, &name);
        let sig = sign_sha256(&aik, &cert_info);
        Ok(tpm_object(
            &[self.aik_cert(&aik, leaf)?],
            -7,
            &sig,
            &cert_info,
            &pub_area,
        ))
    }
}

/// RFC 4043.
#[derive(der::Sequence)]
struct PermanentIdentifier<'a> {
    identifier_value: Utf8StringRef<'a>,
}

/// RFC 4108.
#[derive(der::Sequence)]
struct HardwareModuleName {
    hw_type: ObjectIdentifier,
    hw_serial_num: OctetString,
}

/// The AIK certificate's subjectAltName: the TPM's details and the device's otherNames.
fn subject_alt_name(leaf: &TpmLeaf) -> Vec<u8> {
    let mut names = Vec::new();
    if leaf.tpm_details {
        let mut rdns = Vec::new();
        for (oid, value) in [
            ("2.23.133.2.1", "id:54455354"),
            ("2.23.133.2.2", "TESTTPM"),
            ("2.23.133.2.3", "id:00010002"),
        ] {
            let attribute = AttributeTypeAndValue {
                oid: ObjectIdentifier::new_unwrap(oid),
                value: der::Any::encode_from(&Utf8StringRef::new(value).unwrap()).unwrap(),
            };
            rdns.push(RelativeDistinguishedName(
                SetOfVec::try_from(vec![attribute]).unwrap(),
            ));
        }
        names.push(GeneralName::DirectoryName(RdnSequence(rdns)));
    }
    if let Some(id) = &leaf.permanent_identifier {
        let id = PermanentIdentifier {
            identifier_value: Utf8StringRef::new(id).unwrap(),
        };
        names.push(GeneralName::OtherName(OtherName {
            type_id: ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.8.3"),
            value: der::Any::encode_from(&id).unwrap(),
        }));
    }
    if let Some(serial) = &leaf.hardware_serial {
        let hw = HardwareModuleName {
            hw_type: ObjectIdentifier::new_unwrap("2.23.133.1.2"),
            hw_serial_num: OctetString::new(serial.clone()).unwrap(),
        };
        names.push(GeneralName::OtherName(OtherName {
            type_id: ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.8.4"),
            value: der::Any::encode_from(&hw).unwrap(),
        }));
    }
    SubjectAltName(names).to_der().unwrap()
}

/// `{"fmt": "tpm", "attStmt": {"ver": "2.0", "alg", "x5c", "sig", "certInfo", "pubArea"}}`.
pub fn tpm_object(
    x5c: &[Vec<u8>],
    alg: i64,
    sig: &[u8],
    cert_info: &[u8],
    pub_area: &[u8],
) -> Vec<u8> {
    let text = |s: &str| Value::Text(s.into());
    let value = Value::Map(vec![
        (text("fmt"), text("tpm")),
        (
            text("attStmt"),
            Value::Map(vec![
                (text("ver"), text("2.0")),
                (text("alg"), Value::Integer(alg.into())),
                (
                    text("x5c"),
                    Value::Array(x5c.iter().map(|d| Value::Bytes(d.clone())).collect()),
                ),
                (text("sig"), Value::Bytes(sig.to_vec())),
                (text("certInfo"), Value::Bytes(cert_info.to_vec())),
                (text("pubArea"), Value::Bytes(pub_area.to_vec())),
            ]),
        ),
    ]);
    let mut out = Vec::new();
    ciborium::into_writer(&value, &mut out).expect("writing CBOR to memory");
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use enrollca::attest::status::{Revoked, StatusList};
    use enrollca::attest::{
        AndroidKey, AndroidPolicy, Expected, FormatName, KeyType, Tpm, TpmPolicy, Verifier,
        YubiKeyPiv, YubiKeyPolicy,
    };

    use super::*;
    use crate::android::{AndroidLeaf, TestAndroidCa};
    use crate::yubikey::{TestYubicoCa, YubiKeyLeaf};

    /// What the load generator relies on: a CA saved by one process attests, once loaded by
    /// another, what a server trusting the saved root accepts.
    #[test]
    fn saved_test_cas_load_and_attest() {
        let dir = tempfile::tempdir().unwrap();
        let device = KeyPair::generate().unwrap();
        let (token, ka) = ("tok", "tok.thumbprint");
        let nonce = enrollca::attest::freshness_nonce(token);
        let roots = |d: &std::path::Path| {
            enrollca::encoding::pem_certs(&std::fs::read(d.join("root.pem")).unwrap()).unwrap()
        };
        let expected = |formats: &'static [FormatName]| Expected {
            nonce,
            key_authorization: ka,
            identifiers: &["5000001", "TPM-DEVICE-1"],
            key_types: &[KeyType::P256],
            formats,
            android: Box::leak(Box::new(AndroidPolicy::default())),
            yubikey: Box::leak(Box::new(YubiKeyPolicy::default())),
            tpm: Box::leak(Box::new(TpmPolicy::default())),
            now: OffsetDateTime::now_utc(),
        };

        let d = dir.path().join("tpm");
        TestTpmCa::generate("Saved").unwrap().save(&d).unwrap();
        let object = TestTpmCa::load(&d)
            .unwrap()
            .attest(&device, &TpmLeaf::default(), ka)
            .unwrap();
        Verifier::new(vec![Arc::new(Tpm::new(&roots(&d)).unwrap())])
            .verify(&object, &expected(&[FormatName::Tpm]))
            .unwrap();

        let d = dir.path().join("step");
        TestYubicoCa::generate("Saved").unwrap().save(&d).unwrap();
        let object = TestYubicoCa::load(&d)
            .unwrap()
            .attest(&device, &YubiKeyLeaf::default(), ka)
            .unwrap();
        Verifier::new(vec![Arc::new(YubiKeyPiv::new(&roots(&d)).unwrap())])
            .verify(&object, &expected(&[FormatName::Step]))
            .unwrap();

        let d = dir.path().join("android");
        TestAndroidCa::generate("Saved").unwrap().save(&d).unwrap();
        let leaf = AndroidLeaf {
            challenge: nonce.to_vec(),
            serial: Some("5000001".into()),
            ..AndroidLeaf::default()
        };
        let object = TestAndroidCa::load(&d)
            .unwrap()
            .attest(&device, &leaf)
            .unwrap();
        let android = AndroidKey::new(&roots(&d), StatusList::loaded(Revoked::default())).unwrap();
        Verifier::new(vec![Arc::new(android)])
            .verify(&object, &expected(&[FormatName::AndroidKey]))
            .unwrap();
    }
}
