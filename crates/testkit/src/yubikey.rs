//! Synthetic YubiKey PIV attestations (`fmt: "step"`) for the tests, the fuzz corpus and the
//! load generator: a root and an `f9` device attestation certificate laid out like Yubico's,
//! and slot attestations carrying a device key and Yubico's extensions. The device key signs
//! the key authorization as step's client does. Nothing trusts the root unless an operator
//! lists it in `acme.attestation_roots`.

use asn1_rs::ToDer;
use ciborium::Value;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DnType, IsCa, Issuer,
    KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData,
};
use time::{Duration, OffsetDateTime};

use std::path::Path;

use crate::attestation::{load_issuer, read_file, save_files, sign_sha256};

/// Yubico's arc for PIV attestation extensions (1.3.6.1.4.1.41482.3).
fn yubico_oid(last: u64) -> [u64; 9] {
    [1, 3, 6, 1, 4, 1, 41482, 3, last]
}

/// What a synthetic slot attestation says. `Default` is a YubiKey 5 key (serial 5000001,
/// firmware 5.7.4, PIN once, touch never, USB-C keychain).
pub struct YubiKeyLeaf {
    /// The serial extension's DER; `None` leaves it out.
    pub serial: Option<Vec<u8>>,
    pub firmware: Option<Vec<u8>>,
    /// PIN policy byte, touch policy byte.
    pub policy: Option<Vec<u8>>,
    pub form_factor: Option<Vec<u8>>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Default for YubiKeyLeaf {
    fn default() -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            serial: Some(serial_der(5_000_001)),
            firmware: Some(vec![5, 7, 4]),
            policy: Some(vec![2, 1]),
            form_factor: Some(vec![3]),
            not_before: now - Duration::minutes(5),
            not_after: now + Duration::days(1),
        }
    }
}

/// A serial number as Yubico encodes it: a DER INTEGER.
pub fn serial_der(serial: u32) -> Vec<u8> {
    serial.to_der_vec().expect("DER encoding into memory")
}

/// A test YubiKey attestation CA: a root and one key's `f9` certificate, which signs the
/// slot attestations.
pub struct TestYubicoCa {
    root_pem: String,
    f9_der: Vec<u8>,
    f9: Issuer<'static, KeyPair>,
}

impl TestYubicoCa {
    /// `label` goes into the root's name, so two test CAs are told apart.
    pub fn generate(label: &str) -> Result<Self, rcgen::Error> {
        Self::generate_with(label, true)
    }

    /// As YubiKey 4.3 did when `f9_is_ca` is false: an `f9` certificate without
    /// basicConstraints.
    pub fn generate_with(label: &str, f9_is_ca: bool) -> Result<Self, rcgen::Error> {
        let ca = |cn: String, constraint| {
            let mut p = CertificateParams::default();
            p.is_ca = IsCa::Ca(constraint);
            p.distinguished_name.push(DnType::CommonName, cn);
            p.not_before = OffsetDateTime::now_utc() - Duration::days(1);
            p.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
            p
        };
        let root = CertifiedIssuer::self_signed(
            ca(
                format!("{label} Yubico PIV Root CA"),
                BasicConstraints::Constrained(1),
            ),
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?,
        )?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = ca(
            "Yubico PIV Attestation".into(),
            BasicConstraints::Constrained(0),
        );
        if !f9_is_ca {
            params.is_ca = IsCa::NoCa;
        }
        let f9_der = params.signed_by(&key, &root)?.der().to_vec();
        Ok(Self {
            root_pem: root.pem(),
            f9_der,
            f9: Issuer::new(params, key),
        })
    }

    /// Writes it into `dir` for `load`.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        save_files(
            dir,
            &[
                ("root.pem", self.root_pem.clone()),
                (
                    "f9.pem",
                    enrollca::encoding::to_pem("CERTIFICATE", &self.f9_der),
                ),
                ("f9.key", self.f9.key().serialize_pem()),
            ],
        )
    }

    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let (f9, f9_der) = load_issuer(dir, "f9")?;
        Ok(Self {
            root_pem: read_file(dir, "root.pem")?,
            f9_der,
            f9,
        })
    }

    pub fn root_pem(&self) -> String {
        self.root_pem.clone()
    }

    /// The key's `f9` certificate.
    pub fn f9_der(&self) -> Vec<u8> {
        self.f9_der.clone()
    }

    /// A slot attestation certifying `device_key`, signed by the `f9` key.
    pub fn leaf(
        &self,
        device_key: &impl PublicKeyData,
        leaf: &YubiKeyLeaf,
    ) -> Result<Vec<u8>, rcgen::Error> {
        let mut p = CertificateParams::default();
        p.distinguished_name
            .push(DnType::CommonName, "YubiKey PIV Attestation 9a");
        p.not_before = leaf.not_before;
        p.not_after = leaf.not_after;
        for (last, value) in [
            (3, &leaf.firmware),
            (7, &leaf.serial),
            (8, &leaf.policy),
            (9, &leaf.form_factor),
        ] {
            if let Some(value) = value {
                p.custom_extensions.push(CustomExtension::from_oid_content(
                    &yubico_oid(last),
                    value.clone(),
                ));
            }
        }
        Ok(p.signed_by(device_key, &self.f9)?.der().to_vec())
    }

    /// The attestation object step's client sends: the device key's signature over the key
    /// authorization, the slot attestation and the `f9` certificate.
    pub fn attest(
        &self,
        device_key: &KeyPair,
        leaf: &YubiKeyLeaf,
        key_authorization: &str,
    ) -> Result<Vec<u8>, rcgen::Error> {
        let x5c = [self.leaf(device_key, leaf)?, self.f9_der()];
        // ES256 for an EC key, RS256 for RSA.
        let alg = if device_key.algorithm() == &rcgen::PKCS_RSA_SHA256 {
            -257
        } else {
            -7
        };
        Ok(step_object(
            &x5c,
            &sign_sha256(device_key, key_authorization.as_bytes()),
            alg,
        ))
    }
}

/// `{"fmt": "step", "attStmt": {"alg": alg, "sig": cbor(bstr sig), "x5c": [...]}}` as CBOR.
pub fn step_object(x5c: &[Vec<u8>], sig: &[u8], alg: i64) -> Vec<u8> {
    let cbor = |v: &Value| {
        let mut out = Vec::new();
        ciborium::into_writer(v, &mut out).expect("writing CBOR to memory");
        out
    };
    let wrapped = cbor(&Value::Bytes(sig.to_vec()));
    cbor(&Value::Map(vec![
        (Value::Text("fmt".into()), Value::Text("step".into())),
        (
            Value::Text("attStmt".into()),
            Value::Map(vec![
                (Value::Text("alg".into()), Value::Integer(alg.into())),
                (Value::Text("sig".into()), Value::Bytes(wrapped)),
                (
                    Value::Text("x5c".into()),
                    Value::Array(x5c.iter().map(|d| Value::Bytes(d.clone())).collect()),
                ),
            ]),
        ),
    ]))
}
