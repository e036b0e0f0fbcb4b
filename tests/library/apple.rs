//! The Apple format's checks, against attestations made by the test kit's synthetic CA: a
//! genuine one yields the key and the facts, and each failed check is refused with its reason.

use std::sync::Arc;

use enrollca::attest::{
    AndroidPolicy, Apple, AttestError, Expected, FormatName, KeyType, TpmPolicy, Verifier,
    YubiKeyPolicy, freshness_nonce,
};
use enrollca_testkit::attestation::{Leaf, TestAttestationCa, object};
use time::{Duration, OffsetDateTime};

struct Fixture {
    ca: TestAttestationCa,
    verifier: Verifier,
    device: rcgen::KeyPair,
}

fn fixture() -> Fixture {
    let ca = TestAttestationCa::generate("Unit").unwrap();
    let root = enrollca::encoding::pem_certs(ca.root_pem().as_bytes()).unwrap();
    Fixture {
        verifier: Verifier::new(vec![Arc::new(Apple::new(root).unwrap())]),
        ca,
        device: rcgen::KeyPair::generate().unwrap(),
    }
}

fn leaf(token: &str) -> Leaf {
    Leaf {
        nonce: Some(freshness_nonce(token)),
        serial: Some("C02XYZ123".into()),
        udid: Some("00008030-001A2C3E0A12802E".into()),
        ..Leaf::default()
    }
}

fn expect<'a>(token: &str, identifier: &'a [&'a str]) -> Expected<'a> {
    Expected {
        nonce: freshness_nonce(token),
        key_authorization: "",
        identifiers: identifier,
        key_types: &[KeyType::P256, KeyType::P384],
        formats: &[FormatName::Apple],
        android: Box::leak(Box::new(AndroidPolicy::default())),
        yubikey: Box::leak(Box::new(YubiKeyPolicy::default())),
        tpm: Box::leak(Box::new(TpmPolicy::default())),
        now: OffsetDateTime::now_utc(),
    }
}

#[test]
fn a_genuine_attestation_yields_the_key_and_the_facts() {
    let f = fixture();
    let obj = f.ca.attest(&f.device, &leaf("tok")).unwrap();
    for id in ["C02XYZ123", "c02xyz123", "00008030-001A2C3E0A12802E"] {
        let a = f.verifier.verify(&obj, &expect("tok", &[id])).unwrap();
        assert_eq!(
            a.spki,
            rcgen::PublicKeyData::subject_public_key_info(&f.device)
        );
        assert_eq!(a.facts.serial.as_deref(), Some("C02XYZ123"));
        assert_eq!(a.facts.os_version.as_deref(), Some("18.1"));
        assert_eq!(a.facts.secure_boot.as_deref(), Some("Full Security"));
        assert_eq!(a.facts.sip_status, Some(0));
    }
}

#[test]
fn every_check_refuses_with_its_reason() {
    let f = fixture();
    let other = TestAttestationCa::generate("Other").unwrap();
    let now = OffsetDateTime::now_utc();
    let signed = |ca: &TestAttestationCa, l: &Leaf| ca.attest(&f.device, l).unwrap();
    let lone_leaf = object("apple", &[f.ca.leaf(&f.device, &leaf("tok")).unwrap()]);
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let cases: Vec<(&str, Vec<u8>, Expected, &str)> = vec![
        (
            "wrong nonce",
            signed(&f.ca, &leaf("other")),
            expect("tok", &["C02XYZ123"]),
            "freshness nonce: it is not SHA-256",
        ),
        (
            "no nonce",
            signed(
                &f.ca,
                &Leaf {
                    nonce: None,
                    ..leaf("tok")
                },
            ),
            expect("tok", &["C02XYZ123"]),
            "no freshness nonce",
        ),
        (
            "expired",
            signed(
                &f.ca,
                &Leaf {
                    not_before: now - Duration::days(3),
                    not_after: now - Duration::days(1),
                    ..leaf("tok")
                },
            ),
            expect("tok", &["C02XYZ123"]),
            "expired at",
        ),
        (
            "not yet valid",
            signed(
                &f.ca,
                &Leaf {
                    not_before: now + Duration::days(1),
                    not_after: now + Duration::days(3),
                    ..leaf("tok")
                },
            ),
            expect("tok", &["C02XYZ123"]),
            "not valid before",
        ),
        (
            "unknown root",
            signed(&other, &leaf("tok")),
            expect("tok", &["C02XYZ123"]),
            "not a trusted attestation root",
        ),
        (
            "intermediate missing",
            lone_leaf,
            expect("tok", &["C02XYZ123"]),
            "not a trusted attestation root",
        ),
        (
            "identifier",
            signed(&f.ca, &leaf("tok")),
            expect("tok", &["SOMEONE-ELSE"]),
            "identifier: the order is for `SOMEONE-ELSE`",
        ),
        (
            "no identity",
            signed(
                &f.ca,
                &Leaf {
                    serial: None,
                    udid: None,
                    ..leaf("tok")
                },
            ),
            expect("tok", &["C02XYZ123"]),
            "serial (none) and UDID (none)",
        ),
        (
            "empty x5c",
            object("apple", &[]),
            expect("tok", &["C02XYZ123"]),
            "`x5c` is empty",
        ),
        (
            "fmt",
            object("tpm", &[]),
            expect("tok", &["C02XYZ123"]),
            "format `tpm` is not supported",
        ),
        (
            "garbage cert",
            object("apple", &[vec![0x30, 0x03, 1, 2, 3]]),
            expect("tok", &["C02XYZ123"]),
            "x5c[0] is not a DER certificate",
        ),
        (
            "swapped",
            object(
                "apple",
                &[
                    f.ca.intermediate_der(),
                    f.ca.leaf(&f.device, &leaf("tok")).unwrap(),
                ],
            ),
            expect("tok", &["C02XYZ123"]),
            "is not issued by",
        ),
    ];
    for (name, obj, expected, why) in cases {
        let err = f.verifier.verify(&obj, &expected).unwrap_err().to_string();
        assert!(err.contains(why), "{name}: {err}");
    }
    let only_p256 = Expected {
        key_types: &[KeyType::P256],
        formats: &[FormatName::Apple],
        ..expect("tok", &["C02XYZ123"])
    };
    let err = f
        .verifier
        .verify(&f.ca.attest(&p384, &leaf("tok")).unwrap(), &only_p256)
        .unwrap_err();
    assert!(matches!(err, AttestError::Key(_)), "{err}");
}

#[test]
fn a_forged_intermediate_with_a_trusted_name_does_not_verify() {
    let f = fixture();
    // Same names as the trusted CA, different keys: the names match, the signature not.
    let forger = TestAttestationCa::generate("Unit").unwrap();
    let err = f
        .verifier
        .verify(
            &forger.attest(&f.device, &leaf("tok")).unwrap(),
            &expect("tok", &["C02XYZ123"]),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("signature does not verify"), "{err}");
}
