//! The shipped trust anchors are the ones we think they are.

use x509_parser::prelude::{FromDer, X509Certificate};

#[test]
fn apple_enterprise_attestation_root_fingerprint() {
    let pem = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/pki/apple-enterprise-attestation-root-ca.pem"
    ))
    .unwrap();
    let certs = enrollca::encoding::pem_certs(&pem).unwrap();
    assert_eq!(certs.len(), 1);
    assert_eq!(
        enrollca::encoding::fingerprint(&certs[0]),
        "CC:F5:9E:F8:FC:B3:01:7D:97:F8:B5:FA:6F:A9:0E:7A:3F:92:83:F7:6B:55:AC:6C:F6:ED:A8:B8:B9:49:F0:5B"
    );
    let (_, cert) = X509Certificate::from_der(&certs[0]).unwrap();
    assert_eq!(
        cert.subject().to_string(),
        "CN=Apple Enterprise Attestation Root CA, O=Apple Inc., C=US"
    );
    assert!(cert.is_ca());
}
