//! The AIK certificate (`x5c[0]`): what WebAuthn requires of it (§8.3.1: version 3, empty
//! subject, not a CA, extended key usage tcg-kp-AIKCertificate, the TPM's manufacturer,
//! model and version in its subjectAltName) and the device identity it may carry as an
//! otherName: a PermanentIdentifier (RFC 4043) or a HardwareModuleName (RFC 4108).

use der::asn1::{ObjectIdentifier, OctetStringRef, Utf8StringRef};
use der::{Decode, Sequence};
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::{OID_X509_EXT_EXTENDED_KEY_USAGE, OID_X509_EXT_SUBJECT_ALT_NAME};

use super::super::AttestError;
use crate::encoding::PermanentIdentifier;

/// tcg-kp-AIKCertificate.
const AIK_CERTIFICATE: &str = "2.23.133.8.3";
/// tcg-at-tpmManufacturer, tpmModel, tpmVersion.
const TPM_MANUFACTURER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.2.1");
const TPM_MODEL: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.2.2");
const TPM_VERSION: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.2.3");
/// id-on-hardwareModuleName.
const HARDWARE_MODULE_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.8.4");

/// RFC 4108 HardwareModuleName.
#[derive(Sequence)]
struct HardwareModuleName<'a> {
    hw_type: ObjectIdentifier,
    hw_serial_num: OctetStringRef<'a>,
}

/// What an AIK certificate says about its TPM and its device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AikFacts {
    /// e.g. `id:4E544300` (the TCG vendor ID, here Nuvoton's `NTC`).
    pub manufacturer: String,
    pub model: String,
    pub version: String,
    pub permanent_identifiers: Vec<String>,
    /// HardwareModuleName serial numbers: as text when printable, else hex.
    pub hardware_serials: Vec<String>,
}

fn bad(why: impl Into<String>) -> AttestError {
    AttestError::Chain(format!("x5c[0], the AIK certificate: {}", why.into()))
}

impl AikFacts {
    /// Checks WebAuthn's AIK certificate requirements and reads its subjectAltName.
    pub fn read(cert: &X509Certificate<'_>) -> Result<Self, AttestError> {
        if cert.version().0 != 2 {
            return Err(bad("not an X.509 version 3 certificate"));
        }
        if cert.subject().iter().next().is_some() {
            return Err(bad(format!(
                "its subject must be empty, not {}",
                cert.subject()
            )));
        }
        if cert.is_ca() {
            return Err(bad("it is a CA certificate"));
        }
        let extension = |oid| cert.extensions().iter().find(|e| e.oid == oid);
        let eku = cert
            .extended_key_usage()
            .map_err(|_| bad("its extended key usage does not parse"))?;
        let aik = eku.is_some_and(|e| {
            e.value
                .other
                .iter()
                .any(|o| o.to_id_string() == AIK_CERTIFICATE)
        });
        if extension(OID_X509_EXT_EXTENDED_KEY_USAGE).is_none() || !aik {
            return Err(bad(
                "its extended key usage lacks tcg-kp-AIKCertificate (2.23.133.8.3)",
            ));
        }
        let san = extension(OID_X509_EXT_SUBJECT_ALT_NAME)
            .ok_or_else(|| bad("it has no subjectAltName naming the TPM"))?;
        let names = SubjectAltName::from_der(san.value)
            .map_err(|_| bad("its subjectAltName does not parse"))?;
        let mut facts = AikFacts::default();
        for name in &names.0 {
            match name {
                GeneralName::DirectoryName(dn) => {
                    for attribute in dn.0.iter().flat_map(|rdn| rdn.0.iter()) {
                        let slot = match attribute.oid {
                            o if o == TPM_MANUFACTURER => &mut facts.manufacturer,
                            o if o == TPM_MODEL => &mut facts.model,
                            o if o == TPM_VERSION => &mut facts.version,
                            _ => continue,
                        };
                        *slot = Utf8StringRef::try_from(&attribute.value)
                            .map(|s| s.as_str().to_owned())
                            .map_err(|_| bad("a TPM attribute is not a UTF8String"))?;
                    }
                }
                GeneralName::OtherName(other) if other.type_id == PermanentIdentifier::OID => {
                    let id: PermanentIdentifier<'_> = other
                        .value
                        .decode_as()
                        .map_err(|_| bad("a PermanentIdentifier does not parse"))?;
                    if let Some(value) = id.identifier_value {
                        facts.permanent_identifiers.push(value.as_str().to_owned());
                    }
                }
                GeneralName::OtherName(other) if other.type_id == HARDWARE_MODULE_NAME => {
                    let hw: HardwareModuleName<'_> = other
                        .value
                        .decode_as()
                        .map_err(|_| bad("a HardwareModuleName does not parse"))?;
                    let serial = hw.hw_serial_num.as_bytes();
                    facts
                        .hardware_serials
                        .push(match std::str::from_utf8(serial) {
                            Ok(s) if !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic()) => {
                                s.to_owned()
                            }
                            _ => hex::encode(serial),
                        });
                }
                _ => {}
            }
        }
        for (what, value) in [
            ("manufacturer", &facts.manufacturer),
            ("model", &facts.model),
            ("version", &facts.version),
        ] {
            if value.is_empty() {
                return Err(bad(format!(
                    "its subjectAltName does not name the TPM {what}"
                )));
            }
        }
        Ok(facts)
    }
}
