//! Apple Managed Device Attestation (`fmt: "apple"`): the Secure Enclave's key certified by
//! Apple's Enterprise Attestation CA, with the device's identity and a freshness nonce as
//! certificate extensions. Every check is mandatory: a missing extension is a failure.

use std::collections::HashSet;
use std::sync::Mutex;

use ciborium::Value;
use x509_parser::asn1_rs::oid;
use x509_parser::certificate::Validity;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::time::ASN1Time;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::{AttestError, Attestation, AttestationObject, DeviceFacts, Expected, Format, KeyType};
use crate::csr::SubjectKey;

/// Apple's root, shipped in `pki/` (its fingerprint is asserted by `tests/library/pki.rs`).
const APPLE_ROOT_PEM: &[u8] = include_bytes!("../../pki/apple-enterprise-attestation-root-ca.pem");

/// Leaf extensions (under Apple's arc 1.2.840.113635.100), as DER OID bytes; values are raw
/// bytes, not DER, except where noted.
const NONCE: &[u8] = &oid!(raw 1.2.840.113635.100.8.11.1);
const SERIAL: &[u8] = &oid!(raw 1.2.840.113635.100.8.9.1);
const UDID: &[u8] = &oid!(raw 1.2.840.113635.100.8.9.2);
const OS_VERSION: &[u8] = &oid!(raw 1.2.840.113635.100.8.10.1);
const SEPOS_VERSION: &[u8] = &oid!(raw 1.2.840.113635.100.8.10.2);
/// DER INTEGER.
const SIP_STATUS: &[u8] = &oid!(raw 1.2.840.113635.100.8.13.1);
const SECURE_BOOT: &[u8] = &oid!(raw 1.2.840.113635.100.8.13.2);
/// DER INTEGER.
const KEXT_STATUS: &[u8] = &oid!(raw 1.2.840.113635.100.8.13.3);

/// Longest chain accepted below the root (Apple sends leaf and one intermediate).
const MAX_CHAIN: usize = 4;
/// Intermediates remembered as verified against a root (signature only; validity is
/// checked on every use). Apple has few; the bound only guards memory.
const VERIFIED_CACHE: usize = 64;

pub struct Apple {
    /// Apple's root and any configured in `acme.attestation_roots`, parsed once.
    roots: Vec<Root>,
    /// SHA-256 of certificates whose signature by a root has been verified.
    verified: Mutex<HashSet<[u8; 32]>>,
}

/// A trust anchor: what a chain's top is checked against.
struct Root {
    der: Vec<u8>,
    /// The subject Name, DER, as an issuer name must match it.
    subject: Vec<u8>,
    /// The subject for messages.
    name: String,
    validity: Validity,
    /// SubjectPublicKeyInfo, DER.
    spki: Vec<u8>,
}

impl Root {
    fn parse(der: Vec<u8>) -> Result<Self, AttestError> {
        let Ok(([], cert)) = X509Certificate::from_der(&der) else {
            return Err(AttestError::Anchor(
                "a trusted attestation root is not a DER certificate".into(),
            ));
        };
        let (subject, name) = (cert.subject().as_raw().to_vec(), cert.subject().to_string());
        let (validity, spki) = (cert.validity().clone(), cert.public_key().raw.to_vec());
        Ok(Self {
            der,
            subject,
            name,
            validity,
            spki,
        })
    }
}

impl Apple {
    /// Trusts Apple's root and `extra` roots (DER).
    pub fn new(extra: Vec<Vec<u8>>) -> Result<Self, AttestError> {
        let apple =
            crate::encoding::pem_certs(APPLE_ROOT_PEM).expect("the shipped Apple root parses");
        let mut verifier = Self {
            roots: Vec::new(),
            verified: Mutex::new(HashSet::new()),
        };
        verifier.trust(apple)?;
        verifier.trust(extra)?;
        Ok(verifier)
    }

    /// Trusts more roots (DER); none of them unless all parse, so a caller adding one
    /// file's roots at a time can say which file is wrong.
    pub fn trust(&mut self, ders: Vec<Vec<u8>>) -> Result<(), AttestError> {
        let roots = ders
            .into_iter()
            .map(Root::parse)
            .collect::<Result<Vec<_>, _>>()?;
        self.roots.extend(roots);
        Ok(())
    }

    /// Verifies `ders` (leaf first) up to a trust anchor, every certificate valid at `now`;
    /// returns the parsed leaf.
    fn chain<'a>(
        &self,
        ders: &'a [Vec<u8>],
        now: ASN1Time,
    ) -> Result<X509Certificate<'a>, AttestError> {
        // A client that also sends the root gains nothing by it; the anchor is ours.
        let ders = match ders.split_last() {
            Some((last, rest)) if !rest.is_empty() && self.roots.iter().any(|r| r.der == *last) => {
                rest
            }
            _ => ders,
        };
        if ders.len() > MAX_CHAIN {
            return Err(AttestError::Chain(format!(
                "{} certificates, more than the {MAX_CHAIN} accepted",
                ders.len()
            )));
        }
        let certs = ders
            .iter()
            .enumerate()
            .map(|(i, der)| match X509Certificate::from_der(der) {
                Ok(([], cert)) => Ok(cert),
                _ => Err(AttestError::Chain(format!(
                    "x5c[{i}] is not a DER certificate"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (i, cert) in certs.iter().enumerate() {
            valid_at(
                cert.validity(),
                now,
                &format!("x5c[{i}] ({})", cert.subject()),
            )?;
        }
        for (i, pair) in certs.windows(2).enumerate() {
            let (child, parent) = (&pair[0], &pair[1]);
            if child.issuer().as_raw() != parent.subject().as_raw() || !parent.is_ca() {
                return Err(AttestError::Chain(format!(
                    "x5c[{i}] ({}) is not issued by x5c[{}] ({})",
                    child.subject(),
                    i + 1,
                    parent.subject()
                )));
            }
            child
                .verify_signature(Some(parent.public_key()))
                .map_err(|_| {
                    AttestError::Chain(format!("the signature on x5c[{i}] does not verify"))
                })?;
        }
        let top_index = certs.len() - 1;
        let top = &certs[top_index];
        self.anchored(top, &ders[top_index], now).map_err(|why| {
            AttestError::Chain(format!("x5c[{top_index}] ({}): {why}", top.subject()))
        })?;
        Ok(certs.into_iter().next().expect("x5c is not empty"))
    }

    /// Whether a trusted root (valid now) signed `cert`.
    fn anchored(
        &self,
        cert: &X509Certificate<'_>,
        der: &[u8],
        now: ASN1Time,
    ) -> Result<(), String> {
        let digest = crate::encoding::sha256(der);
        let issuer = cert.issuer().as_raw();
        let mut named = false;
        for root in &self.roots {
            if root.subject != issuer {
                continue;
            }
            named = true;
            valid_at(&root.validity, now, &format!("the root {}", root.name))
                .map_err(|e| e.to_string())?;
            let cached = self
                .verified
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&digest);
            if cached {
                return Ok(());
            }
            let Ok(([], key)) = SubjectPublicKeyInfo::from_der(&root.spki) else {
                continue;
            };
            if cert.verify_signature(Some(&key)).is_ok() {
                let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
                if verified.len() >= VERIFIED_CACHE {
                    verified.clear();
                }
                verified.insert(digest);
                return Ok(());
            }
        }
        Err(if named {
            "its signature does not verify with the trusted root of that name".into()
        } else {
            format!(
                "its issuer ({}) is not a trusted attestation root",
                cert.issuer()
            )
        })
    }
}

fn valid_at(v: &Validity, now: ASN1Time, what: &str) -> Result<(), AttestError> {
    if now < v.not_before {
        return Err(AttestError::Chain(format!(
            "{what} is not valid before {}",
            v.not_before
        )));
    }
    if now > v.not_after {
        return Err(AttestError::Chain(format!(
            "{what} expired at {}",
            v.not_after
        )));
    }
    Ok(())
}

impl Format for Apple {
    fn name(&self) -> &'static str {
        "apple"
    }

    fn verify(
        &self,
        object: &AttestationObject,
        expected: &Expected<'_>,
    ) -> Result<Attestation, AttestError> {
        let x5c = match object.member("x5c") {
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .map(|v| match v {
                    Value::Bytes(b) => Ok(b.clone()),
                    _ => Err(AttestError::Malformed(
                        "an `x5c` entry is not a byte string".into(),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(Value::Array(_)) => return Err(AttestError::Chain("`x5c` is empty".into())),
            Some(_) => return Err(AttestError::Malformed("`x5c` is not an array".into())),
            None => return Err(AttestError::Malformed("`attStmt` has no `x5c`".into())),
        };
        let now = ASN1Time::from_timestamp(expected.now.unix_timestamp())
            .map_err(|_| AttestError::Chain("the current time is out of range".into()))?;
        let leaf = self.chain(&x5c, now)?;

        let ext = |oid: &[u8]| {
            leaf.extensions()
                .iter()
                .find(|e| e.oid.as_bytes() == oid)
                .map(|e| e.value)
        };
        let text = |oid: &[u8], name: &str| -> Result<Option<String>, AttestError> {
            ext(oid)
                .map(|v| {
                    String::from_utf8(v.to_vec())
                        .map_err(|_| AttestError::Malformed(format!("the {name} is not UTF-8")))
                })
                .transpose()
        };
        let integer = |oid: &[u8], name: &str| -> Result<Option<i64>, AttestError> {
            ext(oid)
                .map(|v| {
                    <i64 as der::Decode>::from_der(v).map_err(|_| {
                        AttestError::Malformed(format!("the {name} is not a DER INTEGER"))
                    })
                })
                .transpose()
        };

        match ext(NONCE) {
            None => {
                return Err(AttestError::Nonce(
                    "the leaf carries no freshness nonce".into(),
                ));
            }
            Some(n) if n != expected.nonce.as_slice() => {
                return Err(AttestError::Nonce(
                    "it is not SHA-256 of this challenge's token (made for another challenge?)"
                        .into(),
                ));
            }
            Some(_) => {}
        }

        let facts = DeviceFacts {
            format: self.name().to_owned(),
            serial: text(SERIAL, "serial number")?,
            udid: text(UDID, "UDID")?,
            os_version: text(OS_VERSION, "OS version")?,
            sepos_version: text(SEPOS_VERSION, "sepOS version")?,
            sip_status: integer(SIP_STATUS, "SIP status")?,
            secure_boot: text(SECURE_BOOT, "secure boot state")?,
            kext_status: integer(KEXT_STATUS, "kernel extension status")?,
        };
        let same = |v: &Option<String>| {
            v.as_deref().is_some_and(|v| {
                expected
                    .identifiers
                    .iter()
                    .any(|e| v.eq_ignore_ascii_case(e))
            })
        };
        if !same(&facts.serial) && !same(&facts.udid) {
            return Err(AttestError::Identifier(format!(
                "the order is for `{}`, the attestation for serial {} and UDID {}",
                expected.identifiers.join("` or `"),
                facts.serial.as_deref().unwrap_or("(none)"),
                facts.udid.as_deref().unwrap_or("(none)"),
            )));
        }

        let spki = leaf.public_key();
        let key = SubjectKey::of(spki)
            .ok()
            .and_then(KeyType::of)
            .ok_or_else(|| AttestError::Key("the leaf's key is not P-256 or P-384".into()))?;
        if !expected.key_types.contains(&key) {
            return Err(AttestError::Key(format!(
                "{key:?} keys are not accepted by this profile (accepted: {:?})",
                expected.key_types
            )));
        }
        Ok(Attestation {
            spki: spki.raw.to_vec(),
            facts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apple_root_is_always_trusted() {
        let apple = Apple::new(Vec::new()).unwrap();
        assert_eq!(apple.roots.len(), 1);
    }

    #[test]
    fn a_configured_root_that_is_no_certificate_is_refused() {
        let err = Apple::new(vec![b"not a certificate".to_vec()])
            .err()
            .unwrap();
        assert!(matches!(err, AttestError::Anchor(_)), "{err}");
    }
}
