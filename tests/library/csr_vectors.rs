//! The CSR parser on captured requests, and on every truncation and single-byte corruption of
//! them: each either parses or is refused with an error, never a panic, and a corrupted
//! request never passes as its original.

use enrollca::csr::{Attr, Csr, CsrError, San, SubjectKey};

fn vector(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/vectors/csr/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn captured_requests_parse_as_expected() {
    let ec = Csr::from_der(&vector("ec-p256.der")).unwrap();
    assert_eq!(ec.key, SubjectKey::EcP256);
    assert_eq!(ec.common_name(), Some("device-p256"));
    assert_eq!(
        ec.sans,
        vec![
            San::Dns("device.example".into()),
            San::Ip("10.0.0.1".parse().unwrap()),
            San::Email("dev@example.com".into()),
            San::Uri("urn:uuid:1".into()),
        ]
    );
    let p384 = Csr::from_der(&vector("ec-p384.der")).unwrap();
    assert_eq!(p384.key, SubjectKey::EcP384);
    assert!(
        p384.subject
            .contains(&(Attr::SerialNumber, "C02XK0AAJG5H".into()))
    );
    let rsa = Csr::from_der(&vector("rsa-2048.der")).unwrap();
    assert_eq!(rsa.key, SubjectKey::Rsa { bits: 2048 });
    assert_eq!(rsa.subject[0], (Attr::Country, "US".into()));
    assert_eq!(
        Csr::from_der(&vector("ed25519.der")).unwrap().key,
        SubjectKey::Ed25519
    );
    assert_eq!(
        Csr::from_der(&vector("weak-rsa-1024.der")).unwrap_err(),
        CsrError::WeakKey(1024)
    );
    assert!(matches!(
        Csr::from_der(&vector("unsupported-secp256k1.der")),
        Err(CsrError::UnsupportedKey(_))
    ));
}

#[test]
fn truncated_and_corrupted_requests_are_refused() {
    for name in ["ec-p256.der", "rsa-2048.der", "ed25519.der"] {
        let good = vector(name);
        for len in 0..good.len() {
            assert!(
                Csr::from_der(&good[..len]).is_err(),
                "{name} truncated to {len} parsed"
            );
        }
        let mut extra = good.clone();
        extra.push(0);
        assert_eq!(Csr::from_der(&extra).unwrap_err(), CsrError::TrailingData);
        let original = Csr::from_der(&good).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            // Either refused, or (in unsigned framing bytes such as a BIT STRING's unused-bits
            // count) still the same request: never a different one that verifies.
            if let Ok(parsed) = Csr::from_der(&bad) {
                assert_eq!(parsed.spki, original.spki, "{name} byte {i}");
                assert_eq!(parsed.subject, original.subject, "{name} byte {i}");
                assert_eq!(parsed.sans, original.sans, "{name} byte {i}");
            }
        }
    }
    assert!(matches!(
        Csr::from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
        Err(CsrError::Malformed(_))
    ));
    assert!(matches!(Csr::from_pem(""), Err(CsrError::Malformed(_))));
}
