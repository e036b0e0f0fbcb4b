//! A stored attestation object (tests/vectors/attest, made once by the test kit's
//! `attestation`, with a P-384 root and intermediate like Apple's) verifies at a fixed time,
//! yields its device key and facts, and every truncation of it is refused cleanly.

use std::sync::Arc;

use enrollca::attest::{
    AndroidPolicy, Apple, AttestError, Expected, FormatName, KeyType, TpmPolicy, Verifier,
    YubiKeyPolicy, freshness_nonce,
};
use time::macros::datetime;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/attest");

fn verifier() -> Verifier {
    let root = std::fs::read(format!("{DIR}/root.pem")).unwrap();
    let roots = enrollca::encoding::pem_certs(&root).unwrap();
    Verifier::new(vec![Arc::new(Apple::new(roots).unwrap())])
}

fn expected() -> Expected<'static> {
    Expected {
        nonce: freshness_nonce("vector-token"),
        key_authorization: "",
        identifiers: &["C02VECTOR01"],
        key_types: &[KeyType::P256],
        formats: &[FormatName::Apple],
        android: Box::leak(Box::new(AndroidPolicy::default())),
        yubikey: Box::leak(Box::new(YubiKeyPolicy::default())),
        tpm: Box::leak(Box::new(TpmPolicy::default())),
        now: datetime!(2027-06-01 0:00 UTC),
    }
}

#[test]
fn the_stored_attestation_verifies_and_names_its_device_and_key() {
    let obj = std::fs::read(format!("{DIR}/apple-valid.cbor")).unwrap();
    let a = verifier().verify(&obj, &expected()).unwrap();
    assert_eq!(a.facts.format, "apple");
    assert_eq!(a.facts.serial.as_deref(), Some("C02VECTOR01"));
    assert_eq!(a.facts.udid.as_deref(), Some("00008030-0000VECTOR01"));
    assert_eq!(a.facts.os_version.as_deref(), Some("18.1"));
    let key = std::fs::read_to_string(format!("{DIR}/device-key.pem")).unwrap();
    let key = rcgen::KeyPair::from_pem(&key).unwrap();
    assert_eq!(a.spki, rcgen::PublicKeyData::subject_public_key_info(&key));

    // The same object is refused for another token, identifier, time or trust store.
    let v = verifier();
    let other_token = Expected {
        nonce: freshness_nonce("other"),
        key_authorization: "",
        ..expected()
    };
    assert!(matches!(
        v.verify(&obj, &other_token),
        Err(AttestError::Nonce(_))
    ));
    let other_id = Expected {
        identifiers: &["C02OTHER"],
        ..expected()
    };
    assert!(matches!(
        v.verify(&obj, &other_id),
        Err(AttestError::Identifier(_))
    ));
    let later = Expected {
        now: datetime!(2040-01-01 0:00 UTC),
        ..expected()
    };
    assert!(matches!(v.verify(&obj, &later), Err(AttestError::Chain(_))));
    let apple_only = Verifier::new(vec![Arc::new(Apple::new(Vec::new()).unwrap())]);
    assert!(matches!(
        apple_only.verify(&obj, &expected()),
        Err(AttestError::Chain(_))
    ));
}

#[test]
fn every_truncation_is_refused_without_panic() {
    let obj = std::fs::read(format!("{DIR}/apple-valid.cbor")).unwrap();
    let v = verifier();
    for len in 0..obj.len() {
        assert!(
            v.verify(&obj[..len], &expected()).is_err(),
            "prefix of {len} bytes"
        );
    }
}
