//! The operator's attestation revocation list (`acme.attestation_revocations`): whatever the
//! format, an attestation whose chain holds a listed certificate is refused naming it; a list
//! not yet loaded is "try later"; an empty list changes nothing.

use std::sync::Arc;

use enrollca::attest::status::{Revoked, StatusList};
use enrollca::attest::{
    AndroidKey, AndroidPolicy, Apple, AttestError, Expected, FormatName, KeyType, Tpm, TpmPolicy,
    Verifier, YubiKeyPiv, YubiKeyPolicy, freshness_nonce,
};
use enrollca_testkit::android::{AndroidLeaf, TestAndroidCa};
use enrollca_testkit::attestation::{Leaf, TestAttestationCa};
use enrollca_testkit::tpm::{TestTpmCa, TpmLeaf};
use enrollca_testkit::yubikey::{TestYubicoCa, YubiKeyLeaf, serial_der};
use rcgen::KeyPair;
use time::OffsetDateTime;

const KA: &str = "tok.thumbprint";

fn roots(pem: String) -> Vec<Vec<u8>> {
    enrollca::encoding::pem_certs(pem.as_bytes()).unwrap()
}

/// The serial of the certificate above the leaf, as the list writes it.
fn issuer_serial(object: &[u8]) -> String {
    let object = enrollca::attest::AttestationObject::parse(object).unwrap();
    let ciborium::Value::Array(x5c) = object.member("x5c").unwrap() else {
        panic!("x5c")
    };
    let der = match x5c.get(1).or(x5c.first()) {
        Some(ciborium::Value::Bytes(d)) => d,
        other => panic!("{other:?}"),
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    hex::encode(cert.raw_serial())
}

#[test]
fn a_listed_certificate_refuses_every_format() {
    let device = KeyPair::generate().unwrap();
    let nonce = freshness_nonce("tok");
    let apple = TestAttestationCa::generate("Revocations").unwrap();
    let android = TestAndroidCa::generate("Revocations").unwrap();
    let yubico = TestYubicoCa::generate("Revocations").unwrap();
    let tpm = TestTpmCa::generate("Revocations").unwrap();
    let extra: Vec<Vec<u8>> = [
        apple.root_pem(),
        android.root_pem(),
        yubico.root_pem(),
        tpm.root_pem(),
    ]
    .into_iter()
    .flat_map(roots)
    .collect();
    let formats = || -> Vec<Arc<dyn enrollca::attest::Format>> {
        vec![
            Arc::new(Apple::new(extra.clone()).unwrap()),
            Arc::new(AndroidKey::new(&extra, StatusList::loaded(Revoked::default())).unwrap()),
            Arc::new(YubiKeyPiv::new(&extra).unwrap()),
            Arc::new(Tpm::new(&extra).unwrap()),
        ]
    };
    let id = "5000001";
    let objects = [
        (
            "apple",
            apple
                .attest(
                    &device,
                    &Leaf {
                        nonce: Some(nonce),
                        serial: Some(id.into()),
                        ..Leaf::default()
                    },
                )
                .unwrap(),
        ),
        (
            "android-key",
            android
                .attest(
                    &device,
                    &AndroidLeaf {
                        challenge: nonce.to_vec(),
                        serial: Some(id.into()),
                        ..AndroidLeaf::default()
                    },
                )
                .unwrap(),
        ),
        (
            "step",
            yubico
                .attest(
                    &device,
                    &YubiKeyLeaf {
                        serial: Some(serial_der(5_000_001)),
                        ..YubiKeyLeaf::default()
                    },
                    KA,
                )
                .unwrap(),
        ),
        (
            "tpm",
            tpm.attest(
                &device,
                &TpmLeaf {
                    permanent_identifier: Some(id.into()),
                    ..TpmLeaf::default()
                },
                KA,
            )
            .unwrap(),
        ),
    ];
    let expected = Expected {
        nonce,
        key_authorization: KA,
        identifiers: &[id],
        key_types: &[KeyType::P256],
        formats: &[
            FormatName::Apple,
            FormatName::AndroidKey,
            FormatName::Step,
            FormatName::Tpm,
        ],
        android: &AndroidPolicy::default(),
        yubikey: &YubiKeyPolicy::default(),
        tpm: &TpmPolicy::default(),
        now: OffsetDateTime::now_utc(),
    };
    let list = StatusList::default();
    let verifier = Verifier::new(formats()).with_revocations(list.clone());
    for (name, object) in &objects {
        // Not loaded yet: ours, and the device may answer again.
        let err = verifier.verify(object, &expected).unwrap_err();
        assert!(matches!(err, AttestError::Unavailable(_)), "{name}: {err}");
    }
    list.set(Revoked::parse(br#"{"entries": {}}"#).unwrap());
    for (name, object) in &objects {
        verifier
            .verify(object, &expected)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let entries: Vec<String> = objects
        .iter()
        .map(|(_, o)| format!(r#""{}": {{"status": "REVOKED"}}"#, issuer_serial(o)))
        .collect();
    list.set(
        Revoked::parse(format!(r#"{{"entries": {{{}}}}}"#, entries.join(",")).as_bytes()).unwrap(),
    );
    for (name, object) in &objects {
        let err = verifier.verify(object, &expected).unwrap_err();
        assert!(
            err.to_string()
                .contains("is revoked in acme.attestation_revocations"),
            "{name}: {err}"
        );
    }
}
