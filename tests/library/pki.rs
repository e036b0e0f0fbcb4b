//! The shipped trust anchors are the ones we think they are.

use x509_parser::prelude::{FromDer, X509Certificate};

/// The SHA-256 fingerprints of the certificates in `pki/NAME`.
fn fingerprints(name: &str) -> Vec<String> {
    let pem = std::fs::read(format!("{}/pki/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    enrollca::encoding::pem_certs(&pem)
        .unwrap()
        .iter()
        .map(|c| enrollca::encoding::fingerprint(c))
        .collect()
}

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

#[test]
fn google_hardware_attestation_root_fingerprints() {
    assert_eq!(
        fingerprints("google-hardware-attestation-roots.pem"),
        [
            // RSA-4096, serialNumber=f92009e853b6b045 (the 2022-2042 issue of the original key).
            "CE:DB:1C:B6:DC:89:6A:E5:EC:79:73:48:BC:E9:28:67:53:C2:B3:8E:E7:1C:E0:FB:E3:4A:9A:12:48:80:0D:FC",
            // P-384, Key Attestation CA1 (2025-2035): remotely provisioned devices from 2026.
            "6D:9D:B4:CE:6C:5C:0B:29:31:66:D0:89:86:E0:57:74:A8:77:6C:EB:52:5D:9E:43:29:52:0D:E1:2B:A4:BC:C0",
        ]
    );
}

#[test]
fn yubico_piv_attestation_root_fingerprints() {
    assert_eq!(
        fingerprints("yubico-piv-attestation-roots.pem"),
        [
            // Yubico PIV Root CA Serial 263751, the 2018 issue (pathlen 1) of the original key:
            // YubiKeys before firmware 5.7.4.
            "63:EC:E9:14:E5:4D:D8:79:15:F3:40:33:C8:5A:F4:C0:69:6B:A1:51:2F:8A:DD:66:CE:D7:38:33:12:07:B5:46",
            // Yubico Attestation Root 1 (2024-12-01 on): firmware 5.7.4 and later.
            "62:76:0C:6A:6E:F9:16:79:F4:54:C8:90:2B:80:FD:00:98:25:B3:F2:5D:A9:0F:1F:BA:CE:2E:C6:58:6C:D5:A8",
        ]
    );
}

#[test]
fn yubico_piv_attestation_intermediate_fingerprints() {
    assert_eq!(
        fingerprints("yubico-piv-attestation-intermediates.pem"),
        [
            // Yubico PIV Attestation A 1, under Attestation Intermediate A 1.
            "6D:E6:93:F0:53:76:F5:D8:CA:29:06:92:61:E1:C8:62:6C:75:D5:03:BD:2E:DB:FD:75:35:4C:AD:1F:72:28:70",
            // Yubico Attestation Intermediate A 1, under Attestation Root 1.
            "46:98:A1:D3:38:9C:3E:C6:00:16:C2:16:25:0F:1D:04:39:92:28:32:D6:51:42:32:74:36:37:6D:C2:94:2B:55",
            // Yubico PIV Attestation B 1, under Attestation Intermediate B 1.
            "2D:55:B7:99:8F:4E:42:56:9D:6D:8F:A3:82:B6:DC:77:D1:DA:CF:07:35:8B:19:70:11:63:89:29:22:B1:70:52",
            // Yubico Attestation Intermediate B 1, under Attestation Root 1.
            "D4:CC:3F:45:6F:DA:F4:E7:81:2A:21:AA:B1:DF:E9:D8:E2:7D:24:E2:FD:2D:6F:21:C9:94:01:09:F0:DA:A7:54",
        ]
    );
}
