//! TPM 2.0 key attestation (`tpm`): a real Windows Hello attestation (tests/vectors/tpm, see
//! its README) parses and verifies up to its freshness, which is WebAuthn's and not an ACME
//! challenge's; synthetic attestations from the test kit pass, and each check refuses what it
//! must.

use std::sync::Arc;

use enrollca::attest::tpm::{AikFacts, Certified, PublicArea};
use enrollca::attest::{
    AndroidPolicy, AttestError, AttestationObject, Expected, FormatName, KeyType, Tpm, TpmPolicy,
    Verifier, YubiKeyPolicy,
};
use time::macros::datetime;
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
