//! Apple Managed Device Attestation (`fmt: "apple"`): the Secure Enclave's key certified by
//! Apple's Enterprise Attestation CA, with the device's identity and a freshness nonce as
//! certificate extensions. Every check is mandatory: a missing extension is a failure.

use x509_parser::asn1_rs::oid;

use super::chain::{self, Anchors};
use super::{
    AttestError, Attestation, AttestationObject, DeviceFacts, Expected, Format, FormatName,
};

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

pub struct Apple {
    /// Apple's root and any configured in `acme.attestation_roots`.
    anchors: Anchors,
}

impl Apple {
    /// Trusts Apple's root and `extra` roots (DER).
    pub fn new(extra: Vec<Vec<u8>>) -> Result<Self, AttestError> {
        let apple =
            crate::encoding::pem_certs(APPLE_ROOT_PEM).expect("the shipped Apple root parses");
        let mut anchors = Anchors::new(MAX_CHAIN);
        anchors.trust(&apple)?;
        anchors.trust(&extra)?;
        Ok(Self { anchors })
    }

    /// Trusts more roots (DER); none of them unless all parse.
    pub fn trust(&mut self, ders: Vec<Vec<u8>>) -> Result<(), AttestError> {
        self.anchors.trust(&ders)
    }
}

impl Format for Apple {
    fn name(&self) -> FormatName {
        FormatName::Apple
    }

    fn verify(
        &self,
        object: &AttestationObject,
        expected: &Expected<'_>,
    ) -> Result<Attestation, AttestError> {
        let x5c = chain::x5c(object)?;
        let now = chain::asn1_now(expected.now)?;
        let leaf = self.anchors.verify(&x5c, now)?.swap_remove(0);

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
            format: self.name().as_str().to_owned(),
            serial: text(SERIAL, "serial number")?,
            udid: text(UDID, "UDID")?,
            os_version: text(OS_VERSION, "OS version")?,
            sepos_version: text(SEPOS_VERSION, "sepOS version")?,
            sip_status: integer(SIP_STATUS, "SIP status")?,
            secure_boot: text(SECURE_BOOT, "secure boot state")?,
            kext_status: integer(KEXT_STATUS, "kernel extension status")?,
            ..DeviceFacts::default()
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
        expected.accepts_key(spki)?;
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
        assert_eq!(apple.anchors.len(), 1);
    }

    #[test]
    fn a_configured_root_that_is_no_certificate_is_refused() {
        let err = Apple::new(vec![b"not a certificate".to_vec()])
            .err()
            .unwrap();
        assert!(matches!(err, AttestError::Anchor(_)), "{err}");
    }
}
