//! TPM 2.0 key attestation (`tpm`): a real Windows Hello attestation (tests/vectors/tpm, see
//! its README) parses and verifies up to its freshness, which is WebAuthn's and not an ACME
//! challenge's; synthetic attestations from the test kit pass, and each check refuses what it
//! must.

use std::sync::Arc;

use enrollca::attest::tpm::{AikFacts, Certified, PublicArea};
use enrollca::attest::{
    AndroidPolicy, AttestError, AttestationObject, Expected, FormatName, KeyType, Tpm,
    TpmIdentifier, TpmPolicy, Verifier, YubiKeyPolicy,
};
use enrollca_testkit::attestation::sign_sha256;
use enrollca_testkit::tpm::{TestTpmCa, TpmLeaf, tpm_object};
use rcgen::KeyPair;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/tpm");

fn windows_hello() -> Vec<u8> {
    std::fs::read(format!("{DIR}/windows-hello-nuvoton.cbor")).unwrap()
}

fn microsoft_root() -> Vec<Vec<u8>> {
    let pem = std::fs::read(format!("{DIR}/microsoft-tpm-root-2014.pem")).unwrap();
    enrollca::encoding::pem_certs(&pem).unwrap()
}

fn member<'a>(object: &'a AttestationObject, name: &str) -> &'a [u8] {
    match object.member(name) {
        Some(ciborium::Value::Bytes(b)) => b,
        other => panic!("{name}: {other:?}"),
    }
}

fn expected<'a>(identifiers: &'a [&'a str], policy: &'a TpmPolicy) -> Expected<'a> {
    Expected {
        nonce: enrollca::attest::freshness_nonce("tok"),
        key_authorization: "tok.thumbprint",
        identifiers,
        key_types: &[KeyType::P256, KeyType::P384],
        formats: &[FormatName::Tpm],
        android: Box::leak(Box::new(AndroidPolicy::default())),
        yubikey: Box::leak(Box::new(YubiKeyPolicy::default())),
        tpm: policy,
        now: datetime!(2026-06-01 0:00 UTC),
    }
}

#[test]
fn a_real_windows_hello_attestation_reads_as_the_tpm_wrote_it() {
    let object = AttestationObject::parse(&windows_hello()).unwrap();
    assert_eq!(object.fmt, "tpm");
    let certified = Certified::parse(member(&object, "certInfo")).unwrap();
    let public = PublicArea::parse(member(&object, "pubArea")).unwrap();
    // The TPM certified exactly this public area: its Name is SHA-256 (0x000B) of it.
    assert_eq!(certified.name, public.name);
    assert_eq!(&public.name[..2], [0x00, 0x0b]);
    assert!(public.fixed_tpm && public.sensitive_data_origin);
    // WebAuthn's extraData: SHA-1 (alg -65535) of authData and the client data hash.
    assert_eq!(certified.extra_data.len(), 20);
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&public.spki).unwrap();
    assert_eq!(
        spki.algorithm.algorithm.to_id_string(),
        "1.2.840.113549.1.1.1"
    );
    // The AIK certificate names a Nuvoton NPCT75x, firmware 7.2.
    let ciborium::Value::Array(x5c) = object.member("x5c").unwrap() else {
        panic!("x5c")
    };
    let ciborium::Value::Bytes(aik) = &x5c[0] else {
        panic!("x5c[0]")
    };
    let (_, aik) = X509Certificate::from_der(aik).unwrap();
    let facts = AikFacts::read(&aik).unwrap();
    assert_eq!(facts.manufacturer, "id:4E544300");
    assert_eq!(facts.model, "NPCT75x");
    assert_eq!(facts.version, "id:00070002");
    assert!(facts.permanent_identifiers.is_empty());
}

#[test]
fn a_real_windows_hello_attestation_verifies_up_to_its_freshness() {
    let verifier = Verifier::new(vec![Arc::new(Tpm::new(&microsoft_root()).unwrap())]);
    let sha1 = TpmPolicy {
        accept_sha1: true,
        ..TpmPolicy::default()
    };
    // Chain to Microsoft's TPM root, the AIK certificate's requirements, the AIK's RS1
    // signature over certInfo and the Name of pubArea all pass; then extraData is not
    // SHA-256 of an ACME key authorization.
    let err = verifier
        .verify(&windows_hello(), &expected(&["x"], &sha1))
        .unwrap_err();
    assert!(matches!(err, AttestError::Nonce(_)), "{err}");
    // SHA-1 is refused unless the profile accepts it.
    let strict = TpmPolicy::default();
    let err = verifier
        .verify(&windows_hello(), &expected(&["x"], &strict))
        .unwrap_err();
    assert!(err.to_string().contains("SHA-1"), "{err}");
    // Without Microsoft's root configured, nothing anchors it.
    let bare = Verifier::new(vec![Arc::new(Tpm::new(&[]).unwrap())]);
    let err = bare
        .verify(&windows_hello(), &expected(&["x"], &sha1))
        .unwrap_err();
    assert!(
        err.to_string().contains("x5c[1]")
            && err
                .to_string()
                .contains("is not a trusted attestation root"),
        "{err}"
    );
    // The AIK certificate expires in 2028.
    let later = Expected {
        now: datetime!(2029-01-01 0:00 UTC),
        ..expected(&["x"], &sha1)
    };
    let err = verifier.verify(&windows_hello(), &later).unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
}

#[test]
fn every_truncation_of_the_real_structures_is_refused_without_panic() {
    let object = AttestationObject::parse(&windows_hello()).unwrap();
    let (cert_info, pub_area) = (member(&object, "certInfo"), member(&object, "pubArea"));
    for len in 0..cert_info.len() {
        assert!(
            Certified::parse(&cert_info[..len]).is_err(),
            "certInfo {len}"
        );
    }
    for len in 0..pub_area.len() {
        assert!(
            PublicArea::parse(&pub_area[..len]).is_err(),
            "pubArea {len}"
        );
    }
    let mut trailing = cert_info.to_vec();
    trailing.push(0);
    assert!(Certified::parse(&trailing).is_err());
    let mut magic = cert_info.to_vec();
    magic[0] = 0;
    assert!(Certified::parse(&magic).is_err());
}

struct Fixture {
    ca: TestTpmCa,
    verifier: Verifier,
}

fn fixture() -> Fixture {
    let ca = TestTpmCa::generate("Library").unwrap();
    let roots = enrollca::encoding::pem_certs(ca.root_pem().as_bytes()).unwrap();
    Fixture {
        verifier: Verifier::new(vec![Arc::new(Tpm::new(&roots).unwrap())]),
        ca,
    }
}

fn now<'a>(identifiers: &'a [&'a str], policy: &'a TpmPolicy) -> Expected<'a> {
    Expected {
        now: OffsetDateTime::now_utc(),
        ..expected(identifiers, policy)
    }
}

#[test]
fn a_synthetic_tpm_attestation_verifies_and_its_facts_are_recorded() {
    let f = fixture();
    let device = KeyPair::generate().unwrap();
    let policy = TpmPolicy::default();
    let object =
        f.ca.attest(&device, &TpmLeaf::default(), "tok.thumbprint")
            .unwrap();
    let a = f
        .verifier
        .verify(&object, &now(&["TPM-DEVICE-1"], &policy))
        .unwrap();
    assert_eq!(
        a.spki,
        rcgen::PublicKeyData::subject_public_key_info(&device)
    );
    assert_eq!(a.facts.format, "tpm");
    assert_eq!(a.facts.serial.as_deref(), Some("TPM-DEVICE-1"));
    assert_eq!(a.facts.tpm_manufacturer.as_deref(), Some("id:54455354"));
    assert_eq!(a.facts.tpm_model.as_deref(), Some("TESTTPM"));
    assert_eq!(a.facts.firmware.as_deref(), Some("id:00010002"));

    // An RSA key, as TPMs often hold: accepted where the profile lists `rsa`, refused where
    // it does not.
    let rsa = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let object =
        f.ca.attest(&rsa, &TpmLeaf::default(), "tok.thumbprint")
            .unwrap();
    let any_key = Expected {
        key_types: &[KeyType::P256, KeyType::Rsa],
        ..now(&["TPM-DEVICE-1"], &policy)
    };
    let a = f.verifier.verify(&object, &any_key).unwrap();
    assert_eq!(a.spki, rcgen::PublicKeyData::subject_public_key_info(&rsa));
    let err = f
        .verifier
        .verify(&object, &now(&["TPM-DEVICE-1"], &policy))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Rsa keys are not accepted by this profile"),
        "{err}"
    );

    // A profile that reads the device from a HardwareModuleName.
    let hw = TpmPolicy {
        identifier: TpmIdentifier::HardwareModuleName,
        ..TpmPolicy::default()
    };
    let leaf = TpmLeaf {
        permanent_identifier: None,
        hardware_serial: Some(b"SN-0042".to_vec()),
        ..TpmLeaf::default()
    };
    let object = f.ca.attest(&device, &leaf, "tok.thumbprint").unwrap();
    let a = f.verifier.verify(&object, &now(&["SN-0042"], &hw)).unwrap();
    assert_eq!(a.facts.serial.as_deref(), Some("SN-0042"));
    // A binary serial is named in hex.
    let leaf = TpmLeaf {
        hardware_serial: Some(vec![0x00, 0xff, 0x10]),
        ..leaf
    };
    let object = f.ca.attest(&device, &leaf, "tok.thumbprint").unwrap();
    f.verifier.verify(&object, &now(&["00ff10"], &hw)).unwrap();
}

#[test]
fn every_check_refuses_with_its_reason() {
    let f = fixture();
    let stranger = TestTpmCa::generate("Stranger").unwrap();
    let device = KeyPair::generate().unwrap();
    let policy = TpmPolicy::default();
    let hw = TpmPolicy {
        identifier: TpmIdentifier::HardwareModuleName,
        ..TpmPolicy::default()
    };
    let attest = |leaf: TpmLeaf| f.ca.attest(&device, &leaf, "tok.thumbprint").unwrap();
    let genuine = attest(TpmLeaf::default());
    let object = AttestationObject::parse(&genuine).unwrap();
    let (cert_info, pub_area) = (member(&object, "certInfo"), member(&object, "pubArea"));
    let ciborium::Value::Array(x5c) = object.member("x5c").unwrap() else {
        panic!("x5c")
    };
    let ciborium::Value::Bytes(aik) = &x5c[0] else {
        panic!("x5c[0]")
    };
    let sig = member(&object, "sig");
    let t = OffsetDateTime::now_utc();
    let cases: Vec<(&str, Vec<u8>, &TpmPolicy, &str)> = vec![
        (
            "another challenge's key authorization",
            f.ca.attest(&device, &TpmLeaf::default(), "other.thumbprint")
                .unwrap(),
            &policy,
            "freshness nonce: certInfo's extraData is not SHA-256 of this challenge's key authorization",
        ),
        (
            "a chain to an unknown root",
            stranger
                .attest(&device, &TpmLeaf::default(), "tok.thumbprint")
                .unwrap(),
            &policy,
            "is not a trusted attestation root",
        ),
        (
            "an expired AIK certificate",
            attest(TpmLeaf {
                not_before: t - Duration::days(2),
                not_after: t - Duration::days(1),
                ..TpmLeaf::default()
            }),
            &policy,
            "expired at",
        ),
        (
            "an AIK certificate without tcg-kp-AIKCertificate",
            attest(TpmLeaf {
                aik_usage: false,
                ..TpmLeaf::default()
            }),
            &policy,
            "lacks tcg-kp-AIKCertificate",
        ),
        (
            "an AIK certificate with a subject",
            attest(TpmLeaf {
                subject: Some("aik".into()),
                ..TpmLeaf::default()
            }),
            &policy,
            "its subject must be empty",
        ),
        (
            "an AIK certificate that does not name the TPM",
            attest(TpmLeaf {
                tpm_details: false,
                ..TpmLeaf::default()
            }),
            &policy,
            "does not name the TPM manufacturer",
        ),
        (
            "certInfo without the TPM's magic",
            attest(TpmLeaf {
                magic: 0x1234_5678,
                ..TpmLeaf::default()
            }),
            &policy,
            "certInfo is not a TPM 2.0 structure",
        ),
        (
            "certInfo certifying another key",
            attest(TpmLeaf {
                name: Some(vec![0x00, 0x0b, 7, 7, 7]),
                ..TpmLeaf::default()
            }),
            &policy,
            "certInfo certifies another object than pubArea",
        ),
        (
            "a key that may leave the TPM",
            attest(TpmLeaf {
                attributes: 0x0004_0060,
                ..TpmLeaf::default()
            }),
            &policy,
            "fixedTPM and sensitiveDataOrigin are required",
        ),
        (
            "a key imported into the TPM",
            attest(TpmLeaf {
                attributes: 0x0004_0052,
                ..TpmLeaf::default()
            }),
            &policy,
            "fixedTPM and sensitiveDataOrigin are required",
        ),
        (
            "another device's PermanentIdentifier",
            attest(TpmLeaf {
                permanent_identifier: Some("TPM-DEVICE-2".into()),
                ..TpmLeaf::default()
            }),
            &policy,
            "identifier: the order is for `TPM-DEVICE-1`, the AIK certificate names PermanentIdentifier TPM-DEVICE-2",
        ),
        (
            "no PermanentIdentifier",
            attest(TpmLeaf {
                permanent_identifier: None,
                ..TpmLeaf::default()
            }),
            &policy,
            "the AIK certificate names no PermanentIdentifier",
        ),
        (
            "a PermanentIdentifier where the profile reads a HardwareModuleName",
            genuine.clone(),
            &hw,
            "names no HardwareModuleName",
        ),
        (
            "a signature by another key than the AIK",
            tpm_object(
                std::slice::from_ref(aik),
                -7,
                &sign_sha256(&device, cert_info),
                cert_info,
                pub_area,
            ),
            &policy,
            "proof of possession: the AIK's signature over certInfo does not verify",
        ),
        (
            "an RS256 alg over an ES256 signature",
            tpm_object(std::slice::from_ref(aik), -257, sig, cert_info, pub_area),
            &policy,
            "the AIK's signature over certInfo does not verify",
        ),
        (
            "an unknown alg",
            tpm_object(std::slice::from_ref(aik), -8, sig, cert_info, pub_area),
            &policy,
            "`alg` -8 is not RS256",
        ),
        (
            "certInfo truncated",
            tpm_object(
                std::slice::from_ref(aik),
                -7,
                sig,
                &cert_info[..cert_info.len() - 5],
                pub_area,
            ),
            &policy,
            "certInfo is not a TPM 2.0 structure",
        ),
        (
            "pubArea with trailing bytes",
            tpm_object(
                std::slice::from_ref(aik),
                -7,
                sig,
                cert_info,
                &[pub_area, &[0][..]].concat(),
            ),
            &policy,
            "pubArea has 1 bytes after its end",
        ),
    ];
    for (what, object, policy, reason) in cases {
        let err = f
            .verifier
            .verify(&object, &now(&["TPM-DEVICE-1"], policy))
            .unwrap_err();
        assert!(
            err.to_string().contains(reason),
            "{what}: `{err}` does not say `{reason}`"
        );
    }
    // A P-256 key on a P-384 profile.
    let only_p384 = Expected {
        key_types: &[KeyType::P384],
        ..now(&["TPM-DEVICE-1"], &policy)
    };
    let err = f.verifier.verify(&genuine, &only_p384).unwrap_err();
    assert!(
        err.to_string().contains("P256 keys are not accepted"),
        "{err}"
    );
    // `ver` other than 2.0.
    let mut old = genuine.clone();
    let at = old
        .windows(3)
        .position(|w| w == b"2.0")
        .expect("the ver member");
    old[at] = b'1';
    let err = f
        .verifier
        .verify(&old, &now(&["TPM-DEVICE-1"], &policy))
        .unwrap_err();
    assert!(err.to_string().contains("`ver` is not \"2.0\""), "{err}");
    // And the genuine one passes, so each refusal above is its own check's.
    f.verifier
        .verify(&genuine, &now(&["TPM-DEVICE-1"], &policy))
        .unwrap();
}

#[test]
fn the_fuzz_seeds_are_the_real_structures() {
    let object = AttestationObject::parse(&windows_hello()).unwrap();
    for (name, member_name) in [
        ("windows-hello-certinfo", "certInfo"),
        ("windows-hello-pubarea", "pubArea"),
    ] {
        let seed = std::fs::read(format!("{DIR}/structures/{name}.bin")).unwrap();
        assert_eq!(seed, member(&object, member_name), "{name}");
    }
    let seed = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/attest/tpm-windows-hello-nuvoton.cbor"
    ))
    .unwrap();
    assert_eq!(seed, windows_hello());
}
