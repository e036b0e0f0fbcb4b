//! Synthetic Android Key Attestations for the tests, the fuzz corpus and the load generator:
//! a P-384 root and intermediate, an attestation key certified `CA:FALSE` as real devices'
//! are, and leaves that carry a device key and a KeyDescription extension (encoded with
//! asn1-rs). Nothing trusts them unless an operator lists the root in
//! `acme.attestation_roots`.

use asn1_rs::{Any, Boolean, Class, Enumerated, Header, Length, OctetString, Sequence, Tag, ToDer};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DnType, IsCa, Issuer,
    KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PublicKeyData,
};
use time::{Duration, OffsetDateTime};

use std::path::Path;

use crate::attestation::{load_issuer, object, read_file, save_files};

/// The KeyDescription extension's OID.
const KEY_DESCRIPTION: [u64; 10] = [1, 3, 6, 1, 4, 1, 11129, 2, 1, 17];

/// What a synthetic leaf says. `Default` is a locked, verified TEE key without challenge or
/// identity.
pub struct AndroidLeaf {
    pub challenge: Vec<u8>,
    pub serial: Option<String>,
    pub imei: Option<String>,
    /// 0 Software, 1 TrustedEnvironment, 2 StrongBox.
    pub security_level: u32,
    pub device_locked: bool,
    /// 0 Verified, 1 SelfSigned, 2 Unverified, 3 Failed.
    pub boot_state: u32,
    /// Whether the hardware-enforced list carries a root of trust at all.
    pub root_of_trust: bool,
    /// Extension bytes to carry instead of the encoded KeyDescription (malformed cases).
    pub raw_extension: Option<Vec<u8>>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Default for AndroidLeaf {
    fn default() -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            challenge: Vec::new(),
            serial: None,
            imei: None,
            security_level: 1,
            device_locked: true,
            boot_state: 0,
            root_of_trust: true,
            raw_extension: None,
            not_before: now - Duration::minutes(5),
            not_after: now + Duration::days(1),
        }
    }
}

fn der(value: &impl ToDer) -> Vec<u8> {
    value.to_der_vec().expect("DER encoding into memory")
}

fn sequence(members: &[Vec<u8>]) -> Vec<u8> {
    der(&Sequence::new(members.concat().into()))
}

fn set(members: &[Vec<u8>]) -> Vec<u8> {
    let content = members.concat();
    der(&Any::new(
        Header::new(
            Class::Universal,
            true,
            Tag::Set,
            Length::Definite(content.len()),
        ),
        &content,
    ))
}

/// `[tag] EXPLICIT value`.
fn explicit(tag: u32, value: Vec<u8>) -> Vec<u8> {
    der(&Any::new(
        Header::new(
            Class::ContextSpecific,
            true,
            Tag(tag),
            Length::Definite(value.len()),
        ),
        &value,
    ))
}

fn octets(bytes: &[u8]) -> Vec<u8> {
    der(&OctetString::new(bytes))
}

/// The DER KeyDescription (attestation version 300) a leaf made from `leaf` carries.
pub fn key_description(leaf: &AndroidLeaf) -> Vec<u8> {
    let mut hardware = vec![
        explicit(1, set(&[der(&2i64), der(&3i64)])), // purpose: sign, verify
        explicit(2, der(&3i64)),                     // algorithm: EC
        explicit(10, der(&1i64)),                    // ecCurve: P-256
        explicit(503, der(&asn1_rs::Null::new())),   // noAuthRequired
        explicit(702, der(&0i64)),                   // origin: generated
    ];
    if leaf.root_of_trust {
        hardware.push(explicit(
            704,
            sequence(&[
                octets(&[0x5a; 32]),
                der(&Boolean::new(if leaf.device_locked { 0xff } else { 0 })),
                der(&Enumerated(leaf.boot_state)),
                octets(&[0xa5; 32]),
            ]),
        ));
    }
    hardware.push(explicit(705, der(&150000i64)));
    hardware.push(explicit(706, der(&202611i64)));
    if let Some(serial) = &leaf.serial {
        hardware.push(explicit(713, octets(serial.as_bytes())));
    }
    if let Some(imei) = &leaf.imei {
        hardware.push(explicit(714, octets(imei.as_bytes())));
    }
    hardware.push(explicit(717, octets(b"Pixel Test")));
    let application_id = sequence(&[
        set(&[sequence(&[octets(b"com.example.mdm.agent"), der(&7i64)])]),
        set(&[octets(&[0x11; 32])]),
    ]);
    let software = vec![
        explicit(701, der(&1_764_000_000_000i64)), // creationDateTime
        explicit(709, octets(&application_id)),
    ];
    sequence(&[
        der(&300i64),
        der(&Enumerated(leaf.security_level)),
        der(&300i64),
        der(&Enumerated(leaf.security_level)),
        octets(&leaf.challenge),
        octets(&[]),
        sequence(&software),
        sequence(&hardware),
    ])
}

/// A test Android attestation CA: root, intermediate and an attestation key (the three
/// certificates above a real device's leaf).
pub struct TestAndroidCa {
    root_pem: String,
    intermediate_der: Vec<u8>,
    attestation_der: Vec<u8>,
    attestation: Issuer<'static, KeyPair>,
}

impl TestAndroidCa {
    pub fn generate(label: &str) -> Result<Self, rcgen::Error> {
        let name = |p: &mut CertificateParams, cn: String| {
            p.distinguished_name.push(DnType::CommonName, cn);
            p.distinguished_name
                .push(DnType::OrganizationName, "enrollca tests");
            p.not_before = OffsetDateTime::now_utc() - Duration::days(1);
            p.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
        };
        let ca = |cn: String| {
            let mut p = CertificateParams::default();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            name(&mut p, cn);
            p
        };
        let root = CertifiedIssuer::self_signed(
            ca(format!("{label} Android Attestation Root")),
            KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?,
        )?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?;
        let params = ca(format!("{label} Droid CA2"));
        let intermediate_der = params.signed_by(&key, &root)?.der().to_vec();
        let intermediate = Issuer::new(params, key);
        // The device's attestation key: an end-entity certificate that signs the leaf.
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::ExplicitNoCa;
        name(&mut params, format!("{label} TEE attestation key"));
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let attestation_der = params.signed_by(&key, &intermediate)?.der().to_vec();
        Ok(Self {
            root_pem: root.pem(),
            intermediate_der,
            attestation_der,
            attestation: Issuer::new(params, key),
        })
    }

    /// Writes it into `dir` for `load` (another process, e.g. the load generator, attests
    /// with the CA a server was configured with).
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let pem = |der: &[u8]| enrollca::encoding::to_pem("CERTIFICATE", der);
        save_files(
            dir,
            &[
                ("root.pem", self.root_pem.clone()),
                ("intermediate.pem", pem(&self.intermediate_der)),
                ("attestation.pem", pem(&self.attestation_der)),
                ("attestation.key", self.attestation.key().serialize_pem()),
            ],
        )
    }

    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let (attestation, attestation_der) = load_issuer(dir, "attestation")?;
        let intermediate = read_file(dir, "intermediate.pem")?;
        let intermediate_der = enrollca::encoding::pem_certs(intermediate.as_bytes())?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("intermediate.pem holds no certificate"))?;
        Ok(Self {
            root_pem: read_file(dir, "root.pem")?,
            intermediate_der,
            attestation_der,
            attestation,
        })
    }

    pub fn root_pem(&self) -> String {
        self.root_pem.clone()
    }

    /// The certificates above the leaf, leaf's issuer first.
    pub fn chain(&self) -> Vec<Vec<u8>> {
        vec![self.attestation_der.clone(), self.intermediate_der.clone()]
    }

    /// A leaf certifying `device_key`, signed by the attestation key.
    pub fn leaf(
        &self,
        device_key: &impl PublicKeyData,
        leaf: &AndroidLeaf,
    ) -> Result<Vec<u8>, rcgen::Error> {
        let mut p = CertificateParams::default();
        p.distinguished_name
            .push(DnType::CommonName, "Android Keystore Key");
        p.not_before = leaf.not_before;
        p.not_after = leaf.not_after;
        p.custom_extensions.push(CustomExtension::from_oid_content(
            &KEY_DESCRIPTION,
            leaf.raw_extension
                .clone()
                .unwrap_or_else(|| key_description(leaf)),
        ));
        Ok(p.signed_by(device_key, &self.attestation)?.der().to_vec())
    }

    /// The attestation object an Android device would send: leaf, attestation key,
    /// intermediate.
    pub fn attest(
        &self,
        device_key: &impl PublicKeyData,
        leaf: &AndroidLeaf,
    ) -> Result<Vec<u8>, rcgen::Error> {
        let mut x5c = vec![self.leaf(device_key, leaf)?];
        x5c.extend(self.chain());
        Ok(object("android-key", &x5c))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use enrollca::attest::status::{Revoked, StatusList};
    use enrollca::attest::{
        AndroidKey, AndroidPolicy, Expected, FormatName, KeyType, TpmPolicy, Verifier,
        YubiKeyPolicy,
    };

    #[test]
    fn a_synthetic_attestation_verifies_and_each_field_reads_back() {
        let ca = TestAndroidCa::generate("Unit").unwrap();
        let roots = enrollca::encoding::pem_certs(ca.root_pem().as_bytes()).unwrap();
        let verifier = Verifier::new(vec![Arc::new(
            AndroidKey::new(&roots, StatusList::loaded(Revoked::default())).unwrap(),
        )]);
        let device = KeyPair::generate().unwrap();
        let nonce = enrollca::attest::freshness_nonce("t");
        let leaf = AndroidLeaf {
            challenge: nonce.to_vec(),
            serial: Some("R5CT1000".into()),
            ..AndroidLeaf::default()
        };
        let a = verifier
            .verify(
                &ca.attest(&device, &leaf).unwrap(),
                &Expected {
                    nonce,
                    key_authorization: "",
                    identifiers: &["R5CT1000"],
                    key_types: &[KeyType::P256],
                    formats: &[FormatName::AndroidKey],
                    android: &AndroidPolicy::default(),
                    yubikey: &YubiKeyPolicy::default(),
                    tpm: &TpmPolicy::default(),
                    now: OffsetDateTime::now_utc(),
                },
            )
            .unwrap();
        assert_eq!(a.spki, device.subject_public_key_info());
        assert_eq!(a.facts.format, "android-key");
        assert_eq!(a.facts.serial.as_deref(), Some("R5CT1000"));
        assert_eq!(a.facts.os_version.as_deref(), Some("15.0.0"));
        assert_eq!(a.facts.patch_level.as_deref(), Some("2026-11"));
        assert_eq!(
            a.facts.security_level.as_deref(),
            Some("trusted-environment")
        );
        assert_eq!(a.facts.verified_boot.as_deref(), Some("verified"));
        assert_eq!(
            a.facts.attesting_app.as_deref(),
            Some("com.example.mdm.agent")
        );
    }
}
