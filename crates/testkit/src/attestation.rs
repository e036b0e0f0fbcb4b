//! Synthetic Apple-style attestations for the tests, the fuzz corpus and the load generator:
//! a P-384 root and intermediate laid out like Apple's, and leaves that carry a device key
//! and Apple's extensions. Nothing trusts them unless an operator lists the root in
//! `acme.attestation_roots`.

use ciborium::Value;
use std::path::Path;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DnType, IsCa, Issuer,
    KeyPair, PKCS_ECDSA_P384_SHA384, PublicKeyData,
};
use time::{Duration, OffsetDateTime};

/// Apple's arc for attestation extensions (1.2.840.113635.100.8).
const ARC: [u64; 7] = [1, 2, 840, 113635, 100, 8, 0];

fn apple_oid(tail: &[u64]) -> Vec<u64> {
    ARC[..6].iter().chain(tail).copied().collect()
}

/// A test attestation CA: root and intermediate, both P-384, valid around now. Only the
/// intermediate's key is kept: it signs the leaves.
pub struct TestAttestationCa {
    root_pem: String,
    intermediate_der: Vec<u8>,
    intermediate: Issuer<'static, KeyPair>,
}

/// What a synthetic leaf says. `Default` is a fresh, complete leaf without nonce or identity.
pub struct Leaf {
    pub nonce: Option<[u8; 32]>,
    pub serial: Option<String>,
    pub udid: Option<String>,
    pub os_version: Option<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Default for Leaf {
    fn default() -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            nonce: None,
            serial: None,
            udid: None,
            os_version: Some("18.1".into()),
            not_before: now - Duration::minutes(5),
            not_after: now + Duration::days(1),
        }
    }
}

impl TestAttestationCa {
    /// `label` goes into the CA names, so two test CAs are told apart.
    pub fn generate(label: &str) -> Result<Self, rcgen::Error> {
        let ca = |cn: String| {
            let mut p = CertificateParams::default();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, cn);
            p.distinguished_name
                .push(DnType::OrganizationName, "enrollca tests");
            p.not_before = OffsetDateTime::now_utc() - Duration::days(1);
            p.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
            p
        };
        let root = CertifiedIssuer::self_signed(
            ca(format!("{label} Enterprise Attestation Root CA")),
            KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?,
        )?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?;
        let params = ca(format!("{label} Enterprise Attestation Sub CA 1"));
        let intermediate_der = params.signed_by(&key, &root)?.der().to_vec();
        Ok(Self {
            root_pem: root.pem(),
            intermediate_der,
            intermediate: Issuer::new(params, key),
        })
    }

    /// Reads `root.pem`, `intermediate.pem` and `intermediate.key` (PKCS#8) from `dir`: a
    /// test CA made elsewhere (the benchmark makes one with openssl).
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let (intermediate, intermediate_der) = load_issuer(dir, "intermediate")?;
        Ok(Self {
            root_pem: read_file(dir, "root.pem")?,
            intermediate,
            intermediate_der,
        })
    }

    pub fn root_pem(&self) -> String {
        self.root_pem.clone()
    }

    pub fn intermediate_der(&self) -> Vec<u8> {
        self.intermediate_der.clone()
    }

    /// A leaf certifying `device_key`, signed by the intermediate (ecdsa-with-SHA384).
    pub fn leaf(
        &self,
        device_key: &impl PublicKeyData,
        leaf: &Leaf,
    ) -> Result<Vec<u8>, rcgen::Error> {
        let mut p = CertificateParams::default();
        let point = ring::digest::digest(&ring::digest::SHA256, device_key.der_bytes());
        p.distinguished_name
            .push(DnType::CommonName, hex::encode(point));
        p.distinguished_name
            .push(DnType::OrganizationalUnitName, "AAA Certification");
        p.not_before = leaf.not_before;
        p.not_after = leaf.not_after;
        let mut ext = |tail: &[u64], value: Vec<u8>| {
            p.custom_extensions
                .push(CustomExtension::from_oid_content(&apple_oid(tail), value));
        };
        if let Some(n) = leaf.nonce {
            ext(&[11, 1], n.to_vec());
        }
        if let Some(s) = &leaf.serial {
            ext(&[9, 1], s.clone().into_bytes());
        }
        if let Some(u) = &leaf.udid {
            ext(&[9, 2], u.clone().into_bytes());
        }
        if let Some(v) = &leaf.os_version {
            ext(&[10, 1], v.clone().into_bytes());
        }
        ext(&[10, 2], b"22.1.1".to_vec());
        ext(&[13, 2], b"Full Security".to_vec());
        // SIP status as a DER INTEGER 0.
        ext(&[13, 1], vec![0x02, 0x01, 0x00]);
        Ok(p.signed_by(device_key, &self.intermediate)?.der().to_vec())
    }

    /// The attestation object a device would send: the leaf and the intermediate.
    pub fn attest(
        &self,
        device_key: &impl PublicKeyData,
        leaf: &Leaf,
    ) -> Result<Vec<u8>, rcgen::Error> {
        Ok(object(
            "apple",
            &[self.leaf(device_key, leaf)?, self.intermediate_der()],
        ))
    }
}

/// Writes a test CA's files into `dir` (created): `(name, contents)` pairs.
pub(crate) fn save_files(dir: &Path, files: &[(&str, String)]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, contents) in files {
        std::fs::write(dir.join(name), contents)
            .with_context(|| format!("writing {}", dir.join(name).display()))?;
    }
    Ok(())
}

/// Reads a file `save_files` wrote.
pub(crate) fn read_file(dir: &Path, name: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(dir.join(name))
        .with_context(|| format!("reading {}", dir.join(name).display()))
}

/// The issuer whose certificate (PEM) and PKCS#8 key are `NAME.pem` and `NAME.key` in `dir`,
/// and its certificate in DER.
pub(crate) fn load_issuer(
    dir: &Path,
    name: &str,
) -> anyhow::Result<(Issuer<'static, KeyPair>, Vec<u8>)> {
    let cert_pem = read_file(dir, &format!("{name}.pem"))?;
    let key = KeyPair::from_pem(&read_file(dir, &format!("{name}.key"))?)?;
    let der = enrollca::encoding::pem_certs(cert_pem.as_bytes())?
        .into_iter()
        .next()
        .with_context(|| format!("{name}.pem holds no certificate"))?;
    Ok((Issuer::from_ca_cert_pem(&cert_pem, key)?, der))
}

/// The signature over SHA-256 of `message` by `key`, as step's client signs a key
/// authorization and a TPM signs certInfo: ECDSA (DER) whatever the curve, or
/// RSASSA-PKCS1-v1_5.
pub fn sign_sha256(key: &KeyPair, message: &[u8]) -> Vec<u8> {
    let pkey = openssl::pkey::PKey::private_key_from_der(&key.serialize_der())
        .expect("an rcgen key loads");
    let digest = openssl::sha::sha256(message);
    if let Ok(ec) = pkey.ec_key() {
        return openssl::ecdsa::EcdsaSig::sign(&digest, &ec)
            .and_then(|s| s.to_der())
            .expect("ECDSA signing in memory");
    }
    let mut signer =
        openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &pkey).unwrap();
    signer
        .sign_oneshot_to_vec(message)
        .expect("RSA signing in memory")
}

/// `{"fmt": fmt, "attStmt": {"x5c": [...]}}` as CBOR.
pub fn object(fmt: &str, x5c: &[Vec<u8>]) -> Vec<u8> {
    let value = Value::Map(vec![
        (Value::Text("fmt".into()), Value::Text(fmt.into())),
        (
            Value::Text("attStmt".into()),
            Value::Map(vec![(
                Value::Text("x5c".into()),
                Value::Array(x5c.iter().map(|d| Value::Bytes(d.clone())).collect()),
            )]),
        ),
    ]);
    let mut out = Vec::new();
    ciborium::into_writer(&value, &mut out).expect("writing CBOR to memory");
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use enrollca::attest::{
        AndroidPolicy, Apple, Expected, FormatName, KeyType, TpmPolicy, Verifier, YubiKeyPolicy,
        freshness_nonce,
    };

    #[test]
    fn a_ca_made_by_openssl_loads_and_attests_under_its_root() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let script = format!(
            "set -e; cd {d}; \
             openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -keyout root.key \
               -out root.pem -days 2 -subj '/CN=Bench Root' 2>/dev/null; \
             openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes \
               -keyout intermediate.key -out i.csr -subj '/CN=Bench Sub CA' 2>/dev/null; \
             printf 'basicConstraints=critical,CA:TRUE\\nkeyUsage=critical,keyCertSign\\n' > ext; \
             openssl x509 -req -in i.csr -CA root.pem -CAkey root.key -CAcreateserial -days 2 \
               -sha384 -extfile ext -out intermediate.pem 2>/dev/null"
        );
        let ok = std::process::Command::new("sh")
            .args(["-c", &script])
            .status()
            .unwrap();
        assert!(ok.success());
        let ca = TestAttestationCa::load(dir.path()).unwrap();
        let root = std::fs::read(dir.path().join("root.pem")).unwrap();
        let roots = enrollca::encoding::pem_certs(&root).unwrap();
        let verifier = Verifier::new(vec![Arc::new(Apple::new(roots).unwrap())]);
        let device = KeyPair::generate().unwrap();
        let leaf = Leaf {
            nonce: Some(freshness_nonce("t")),
            serial: Some("S1".into()),
            ..Leaf::default()
        };
        let expected = Expected {
            nonce: freshness_nonce("t"),
            key_authorization: "",
            identifiers: &["S1"],
            key_types: &[KeyType::P256],
            formats: &[FormatName::Apple],
            android: &AndroidPolicy::default(),
            yubikey: &YubiKeyPolicy::default(),
            tpm: &TpmPolicy::default(),
            now: OffsetDateTime::now_utc(),
        };
        verifier
            .verify(&ca.attest(&device, &leaf).unwrap(), &expected)
            .unwrap();
    }
}
