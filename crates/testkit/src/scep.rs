//! The client side of SCEP, for the project's own test client and load generator: a device
//! identity (RSA key and its throw-away self-signed certificate) and its requests.

use der::Encode;
use openssl::pkey::{PKey, Private};

use enrollca::scep::wire::MessageSigner;

/// OID of PKCS#9 challengePassword.
const CHALLENGE_PASSWORD: &[u64] = &[1, 2, 840, 113549, 1, 9, 7];

pub struct Identity {
    pub key: PKey<Private>,
    rcgen_key: rcgen::KeyPair,
    pub cert_der: Vec<u8>,
}

impl Identity {
    /// The same key with a certificate issued for it: a renewal is signed this way.
    pub fn with_certificate(self, cert_der: Vec<u8>) -> Self {
        Self { cert_der, ..self }
    }

    /// A fresh RSA-2048 identity (what SCEP clients use).
    pub fn generate() -> Result<Self, String> {
        let key = openssl::rsa::Rsa::generate(2048)
            .and_then(PKey::from_rsa)
            .map_err(|e| e.to_string())?;
        let pkcs8 = key.private_key_to_pkcs8().map_err(|e| e.to_string())?;
        let rcgen_key = rcgen::KeyPair::try_from(pkcs8.as_slice()).map_err(|e| e.to_string())?;
        let cert = rcgen::CertificateParams::new(Vec::<String>::new())
            .and_then(|p| p.self_signed(&rcgen_key))
            .map_err(|e| e.to_string())?;
        Ok(Self {
            key,
            rcgen_key,
            cert_der: cert.der().to_vec(),
        })
    }

    /// A PKCS#10 request for this identity's key, with a challengePassword when given.
    pub fn csr(&self, common_name: &str, challenge: Option<&str>) -> Result<Vec<u8>, String> {
        self.csr_named(&[(rcgen::DnType::CommonName, common_name)], &[], challenge)
    }

    /// A request with the given subject (possibly empty) and DNS subjectAltNames.
    pub fn csr_named(
        &self,
        subject: &[(rcgen::DnType, &str)],
        dns_names: &[&str],
        challenge: Option<&str>,
    ) -> Result<Vec<u8>, String> {
        let names: Vec<String> = dns_names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).map_err(|e| e.to_string())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (ty, value) in subject {
            params.distinguished_name.push(ty.clone(), *value);
        }
        let mut attrs = Vec::new();
        if let Some(challenge) = challenge {
            // `values` is the DER of SET OF { DirectoryString }: PrintableString when the
            // challenge fits it (as most clients send), else UTF8String.
            let value = match der::asn1::PrintableStringRef::new(challenge) {
                Ok(p) => der::Any::encode_from(&p),
                Err(_) => {
                    der::asn1::Utf8StringRef::new(challenge).and_then(|u| der::Any::encode_from(&u))
                }
            }
            .and_then(|v| der::asn1::SetOfVec::try_from(vec![v]))
            .and_then(|set| set.to_der())
            .map_err(|e| e.to_string())?;
            attrs.push(rcgen::Attribute {
                oid: CHALLENGE_PASSWORD,
                values: value,
            });
        }
        params
            .serialize_request_with_attributes(&self.rcgen_key, attrs)
            .map(|csr| csr.der().to_vec())
            .map_err(|e| e.to_string())
    }

    pub fn signer(&self) -> MessageSigner<'_> {
        MessageSigner {
            cert_der: &self.cert_der,
            key: &self.key,
        }
    }
}

/// The SCEP CA in a GetCACert answer: the certificate itself, or the first of a chain (a
/// certs-only PKCS#7, which openssl reads in the order served).
pub fn ca_of_getcacert(body: &[u8]) -> Result<openssl::x509::X509, String> {
    if let Ok(cert) = openssl::x509::X509::from_der(body) {
        return Ok(cert);
    }
    let p7 = openssl::pkcs7::Pkcs7::from_der(body)
        .map_err(|_| "GetCACert answer is neither a certificate nor PKCS#7".to_owned())?;
    p7.signed()
        .and_then(|s| s.certificates())
        .and_then(|certs| certs.iter().next().map(ToOwned::to_owned))
        .ok_or_else(|| "no certificate in GetCACert's chain".to_owned())
}
