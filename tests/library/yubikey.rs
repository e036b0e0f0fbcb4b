//! YubiKey PIV attestation (`step`): real YubiKeys' certificates (tests/vectors/yubikey, see
//! its README) read as Yubico documents them and verify to the shipped roots; synthetic
//! attestations from the test kit pass, and each check refuses what it must.

use std::sync::Arc;

use enrollca::attest::{
    AndroidPolicy, AttestError, Expected, FormatName, KeyType, PinPolicy, PivExtensions,
    TouchPolicy, TpmPolicy, Verifier, YubiKeyPiv, YubiKeyPolicy,
};
use enrollca_testkit::attestation::sign_sha256;
use enrollca_testkit::yubikey::{TestYubicoCa, YubiKeyLeaf, serial_der, step_object};
use rcgen::{KeyPair, PKCS_ECDSA_P384_SHA384};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/yubikey");

fn der(name: &str) -> Vec<u8> {
    let pem = std::fs::read(format!("{DIR}/{name}.pem")).unwrap();
    enrollca::encoding::pem_certs(&pem).unwrap().remove(0)
}

fn extensions(name: &str) -> PivExtensions {
    let der = der(name);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    PivExtensions::of(&cert).unwrap()
}

const KEY_AUTHORIZATION: &str = "tok.thumbprint";

fn expected<'a>(identifiers: &'a [&'a str], policy: &'a YubiKeyPolicy) -> Expected<'a> {
    Expected {
        nonce: enrollca::attest::freshness_nonce("tok"),
        key_authorization: KEY_AUTHORIZATION,
        identifiers,
        key_types: &[KeyType::P256, KeyType::P384],
        formats: &[FormatName::Step],
        android: Box::leak(Box::new(AndroidPolicy::default())),
        yubikey: policy,
        tpm: Box::leak(Box::new(TpmPolicy::default())),
        now: OffsetDateTime::now_utc(),
    }
}

fn verifier(extra: &[Vec<u8>]) -> Verifier {
    Verifier::new(vec![Arc::new(YubiKeyPiv::new(extra).unwrap())])
}

#[test]
fn real_yubikeys_extensions_read_as_yubico_documents_them() {
    let fw526 = extensions("yubikey5-fw526-9c");
    assert_eq!(fw526.serial, 13_078_782);
    assert_eq!(fw526.firmware, Some([5, 2, 6]));
    assert_eq!(fw526.pin, Some(PinPolicy::Always));
    assert_eq!(fw526.touch, Some(TouchPolicy::Always));
    assert_eq!(fw526.form_factor_name().as_deref(), Some("usb-c-keychain"));
    assert_eq!(extensions("yubikey5-fw526-9c-reissued"), fw526);

    let serials: Vec<u32> = ["a", "b", "c"]
        .iter()
        .map(|s| extensions(&format!("yubikey5-fw574-9c-{s}")).serial)
        .collect();
    assert_eq!(serials, [38_906_121, 38_906_327, 38_906_331]);
    assert_eq!(extensions("yubikey5-fw574-9c-a").firmware, Some([5, 7, 4]));

    let p384 = extensions("yubikey5-fw527-9e-p384");
    assert_eq!(p384.serial, 14_357_143);
    assert_eq!(p384.firmware, Some([5, 2, 7]));
    assert_eq!(p384.pin, Some(PinPolicy::Never));
    assert!(!PinPolicy::Never.protects());
    assert_eq!(p384.touch, Some(TouchPolicy::Always));
    assert_eq!(p384.form_factor_name().as_deref(), Some("usb-a-keychain"));
}

/// A real chain with a signature nobody could have made for this challenge: every check up to
/// proof of possession passes, so the refusal names that check.
fn real(x5c: &[&str]) -> Vec<u8> {
    let x5c: Vec<Vec<u8>> = x5c.iter().map(|n| der(n)).collect();
    step_object(&x5c, &[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01], -7)
}

#[test]
fn real_chains_verify_to_the_shipped_roots_up_to_proof_of_possession() {
    let v = verifier(&[]);
    let policy = YubiKeyPolicy::default();
    let at = |when| Expected {
        now: when,
        ..expected(&["13078782", "38906121"], &policy)
    };
    let now = OffsetDateTime::now_utc();
    // Firmware 5.2.6 under Yubico PIV Root CA Serial 263751.
    let old = real(&["yubikey5-fw526-9c", "yubikey5-fw526-f9"]);
    // Firmware 5.7.4 under Yubico Attestation Root 1, with the intermediates step's client sends.
    let new = real(&[
        "yubikey5-fw574-9c-a",
        "yubikey5-fw574-f9",
        "yubico-piv-attestation-b-1",
        "yubico-attestation-intermediate-b-1",
    ]);
    for object in [&old, &new] {
        let err = v.verify(object, &at(now)).unwrap_err();
        assert!(matches!(err, AttestError::Proof(_)), "{err}");
    }
    // The 2016 chain expires with its root in 2052.
    let err = v
        .verify(&old, &at(datetime!(2052-05-01 0:00 UTC)))
        .unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    // A client that sends only what the key holds, [leaf, f9]: completed with Yubico's
    // shipped intermediates.
    let short = real(&["yubikey5-fw574-9c-a", "yubikey5-fw574-f9"]);
    let err = v.verify(&short, &at(now)).unwrap_err();
    assert!(matches!(err, AttestError::Proof(_)), "{err}");
    // A leaf under another key's f9 certificate: the signature does not verify.
    let crossed = real(&["yubikey5-fw574-9c-a", "yubikey5-fw526-f9"]);
    let err = v.verify(&crossed, &at(now)).unwrap_err();
    assert!(matches!(err, AttestError::Chain(_)), "{err}");
    // Without its f9 certificate, nothing anchors a slot attestation.
    let alone = real(&["yubikey5-fw527-9e-p384"]);
    let err = v.verify(&alone, &at(now)).unwrap_err();
    assert!(
        err.to_string()
            .contains("(CN=Yubico PIV Attestation) is not a trusted attestation root"),
        "{err}"
    );
}

#[test]
fn every_truncation_of_a_real_leaf_is_refused_without_panic() {
    let v = verifier(&[]);
    let policy = YubiKeyPolicy::default();
    let leaf = der("yubikey5-fw526-9c");
    let f9 = der("yubikey5-fw526-f9");
    for cut in 0..leaf.len() {
        let object = step_object(&[leaf[..cut].to_vec(), f9.clone()], &[0x30], -7);
        assert!(
            v.verify(&object, &expected(&["13078782"], &policy))
                .is_err()
        );
    }
}

/// A statement whose `sig` is the bare DER signature, not a CBOR byte string inside one.
fn unwrapped_sig(x5c: &[Vec<u8>], sig: Vec<u8>) -> Vec<u8> {
    use ciborium::Value;
    let statement = Value::Map(vec![
        (Value::Text("alg".into()), Value::Integer((-7).into())),
        (Value::Text("sig".into()), Value::Bytes(sig)),
        (
            Value::Text("x5c".into()),
            Value::Array(x5c.iter().map(|d| Value::Bytes(d.clone())).collect()),
        ),
    ]);
    let mut out = Vec::new();
    ciborium::into_writer(
        &Value::Map(vec![
            (Value::Text("fmt".into()), Value::Text("step".into())),
            (Value::Text("attStmt".into()), statement),
        ]),
        &mut out,
    )
    .unwrap();
    out
}

struct Fixture {
    ca: TestYubicoCa,
    verifier: Verifier,
}

fn fixture() -> Fixture {
    let ca = TestYubicoCa::generate("Library").unwrap();
    let roots = enrollca::encoding::pem_certs(ca.root_pem().as_bytes()).unwrap();
    Fixture {
        verifier: verifier(&roots),
        ca,
    }
}

#[test]
fn a_synthetic_yubikey_verifies_and_its_facts_are_recorded() {
    let f = fixture();
    let policy = YubiKeyPolicy {
        require_pin: true,
        require_touch: false,
    };
    for alg in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_RSA_SHA256,
    ] {
        let device = KeyPair::generate_for(alg).unwrap();
        let object =
            f.ca.attest(&device, &YubiKeyLeaf::default(), KEY_AUTHORIZATION)
                .unwrap();
        let any_key = Expected {
            key_types: &[KeyType::P256, KeyType::P384, KeyType::Rsa],
            ..expected(&["5000001"], &policy)
        };
        let a = f.verifier.verify(&object, &any_key).unwrap();
        assert_eq!(
            a.spki,
            rcgen::PublicKeyData::subject_public_key_info(&device)
        );
        assert_eq!(a.facts.format, "step");
        assert_eq!(a.facts.serial.as_deref(), Some("5000001"));
        assert_eq!(a.facts.firmware.as_deref(), Some("5.7.4"));
        assert_eq!(a.facts.pin_policy.as_deref(), Some("once"));
        assert_eq!(a.facts.touch_policy.as_deref(), Some("never"));
        assert_eq!(a.facts.form_factor.as_deref(), Some("usb-c-keychain"));
    }
}

#[test]
fn a_yubikey_4_3_f9_certificate_without_basic_constraints_chains() {
    let ca = TestYubicoCa::generate_with("YubiKey 4.3", false).unwrap();
    let f9_der = ca.f9_der();
    let (_, f9) = X509Certificate::from_der(&f9_der).unwrap();
    assert!(f9.basic_constraints().unwrap().is_none());
    let roots = enrollca::encoding::pem_certs(ca.root_pem().as_bytes()).unwrap();
    let device = KeyPair::generate().unwrap();
    let object = ca
        .attest(&device, &YubiKeyLeaf::default(), KEY_AUTHORIZATION)
        .unwrap();
    let policy = YubiKeyPolicy::default();
    verifier(&roots)
        .verify(&object, &expected(&["5000001"], &policy))
        .unwrap();
}

#[test]
fn every_check_refuses_with_its_reason() {
    let f = fixture();
    let device = KeyPair::generate().unwrap();
    let lenient = YubiKeyPolicy::default();
    let leaf_der = |leaf: &YubiKeyLeaf| f.ca.leaf(&device, leaf).unwrap();
    let signed = |leaf: &YubiKeyLeaf, key_authorization: &str| {
        step_object(
            &[leaf_der(leaf), f.ca.f9_der()],
            &sign_sha256(&device, key_authorization.as_bytes()),
            -7,
        )
    };
    let good = signed(&YubiKeyLeaf::default(), KEY_AUTHORIZATION);
    let other = KeyPair::generate().unwrap();
    let now = OffsetDateTime::now_utc();
    let cases: Vec<(&str, Vec<u8>, Expected<'_>, &str)> = vec![
        (
            "a signature over another challenge's key authorization",
            signed(&YubiKeyLeaf::default(), "other.thumbprint"),
            expected(&["5000001"], &lenient),
            "proof of possession: the signature over this challenge's key authorization",
        ),
        (
            "a signature by another key",
            step_object(
                &[leaf_der(&YubiKeyLeaf::default()), f.ca.f9_der()],
                &sign_sha256(&other, KEY_AUTHORIZATION.as_bytes()),
                -7,
            ),
            expected(&["5000001"], &lenient),
            "proof of possession",
        ),
        (
            "another YubiKey's serial",
            good.clone(),
            expected(&["5000002"], &lenient),
            "identifier: the order is for `5000002`, the YubiKey attests serial number 5000001",
        ),
        (
            "a chain to an unknown root",
            good.clone(),
            expected(&["5000001"], &lenient),
            "UNKNOWN-ROOT",
        ),
        (
            "an expired slot attestation",
            signed(
                &YubiKeyLeaf {
                    not_before: now - Duration::days(2),
                    not_after: now - Duration::days(1),
                    ..YubiKeyLeaf::default()
                },
                KEY_AUTHORIZATION,
            ),
            expected(&["5000001"], &lenient),
            "certificate chain: x5c[0] (CN=YubiKey PIV Attestation 9a) expired",
        ),
        (
            "no serial number extension",
            signed(
                &YubiKeyLeaf {
                    serial: None,
                    ..YubiKeyLeaf::default()
                },
                KEY_AUTHORIZATION,
            ),
            expected(&["5000001"], &lenient),
            "the leaf carries no YubiKey serial number extension",
        ),
        (
            "a serial number that is not a DER INTEGER",
            signed(
                &YubiKeyLeaf {
                    serial: Some(vec![0x04, 0x01, 0x07]),
                    ..YubiKeyLeaf::default()
                },
                KEY_AUTHORIZATION,
            ),
            expected(&["5000001"], &lenient),
            "the YubiKey serial number extension",
        ),
        (
            "a truncated policy extension",
            signed(
                &YubiKeyLeaf {
                    policy: Some(vec![3]),
                    ..YubiKeyLeaf::default()
                },
                KEY_AUTHORIZATION,
            ),
            expected(&["5000001"], &lenient),
            "the YubiKey PIN and touch policy extension",
        ),
        (
            "a key usable without the PIN",
            signed(
                &YubiKeyLeaf {
                    policy: Some(vec![1, 2]),
                    ..YubiKeyLeaf::default()
                },
                KEY_AUTHORIZATION,
            ),
            expected(
                &["5000001"],
                Box::leak(Box::new(YubiKeyPolicy {
                    require_pin: true,
                    require_touch: false,
                })),
            ),
            "PIN policy: the key's is never, the profile requires a PIN",
        ),
        (
            "a key usable without a touch",
            good.clone(),
            expected(
                &["5000001"],
                Box::leak(Box::new(YubiKeyPolicy {
                    require_pin: false,
                    require_touch: true,
                })),
            ),
            "touch policy: the key's is never, the profile requires a touch",
        ),
        (
            "no policy extension on a profile that requires a PIN",
            signed(
                &YubiKeyLeaf {
                    policy: None,
                    ..YubiKeyLeaf::default()
                },
                KEY_AUTHORIZATION,
            ),
            expected(
                &["5000001"],
                Box::leak(Box::new(YubiKeyPolicy {
                    require_pin: true,
                    require_touch: false,
                })),
            ),
            "PIN policy: the key's is not attested",
        ),
        (
            "a P-256 key on a P-384 profile",
            good.clone(),
            Expected {
                key_types: &[KeyType::P384],
                ..expected(&["5000001"], &lenient)
            },
            "attested key: P256 keys are not accepted by this profile",
        ),
        (
            "an alg other than ES256",
            step_object(
                &[leaf_der(&YubiKeyLeaf::default()), f.ca.f9_der()],
                &sign_sha256(&device, KEY_AUTHORIZATION.as_bytes()),
                -35,
            ),
            expected(&["5000001"], &lenient),
            "`alg` -35 does not fit the attested key",
        ),
        (
            "a bare DER signature (not wrapped in CBOR)",
            unwrapped_sig(
                &[leaf_der(&YubiKeyLeaf::default()), f.ca.f9_der()],
                sign_sha256(&device, KEY_AUTHORIZATION.as_bytes()),
            ),
            expected(&["5000001"], &lenient),
            "`sig` does not hold a CBOR byte string",
        ),
    ];
    let stranger = verifier(&[]);
    for (what, object, expect, reason) in cases {
        let v = if reason == "UNKNOWN-ROOT" {
            &stranger
        } else {
            &f.verifier
        };
        let err = v.verify(&object, &expect).unwrap_err();
        let reason = if reason == "UNKNOWN-ROOT" {
            "is not a trusted attestation root"
        } else {
            reason
        };
        assert!(
            err.to_string().contains(reason),
            "{what}: `{err}` does not say `{reason}`"
        );
    }
    // An RSA key: refused where the profile does not list `rsa`, and signed with ES256.
    let rsa = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let rsa_object =
        f.ca.attest(&rsa, &YubiKeyLeaf::default(), KEY_AUTHORIZATION)
            .unwrap();
    let err = f
        .verifier
        .verify(&rsa_object, &expected(&["5000001"], &lenient))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Rsa keys are not accepted by this profile"),
        "{err}"
    );
    let es256 = step_object(
        &[
            f.ca.leaf(&rsa, &YubiKeyLeaf::default()).unwrap(),
            f.ca.f9_der(),
        ],
        &sign_sha256(&rsa, KEY_AUTHORIZATION.as_bytes()),
        -7,
    );
    let any_key = Expected {
        key_types: &[KeyType::P256, KeyType::Rsa],
        ..expected(&["5000001"], &lenient)
    };
    let err = f.verifier.verify(&es256, &any_key).unwrap_err();
    assert!(
        err.to_string()
            .contains("`alg` -7 does not fit the attested key"),
        "{err}"
    );
    // And the good one passes, so each refusal above is its own check's.
    f.verifier
        .verify(&good, &expected(&["5000001"], &lenient))
        .unwrap();
    // A profile that does not list `step` refuses the format itself.
    let apple_only = Expected {
        formats: &[FormatName::Apple],
        ..expected(&["5000001"], &lenient)
    };
    let err = f.verifier.verify(&good, &apple_only).unwrap_err();
    assert!(matches!(err, AttestError::UnsupportedFormat(..)), "{err}");
    assert_eq!(serial_der(5_000_001), [0x02, 0x03, 0x4c, 0x4b, 0x41]);
}

#[test]
fn the_fuzz_seeds_are_the_real_certificates() {
    for entry in std::fs::read_dir(format!("{DIR}/der")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        assert_eq!(std::fs::read(&path).unwrap(), der(&name), "{name}");
    }
    // The attestation target's `step` seed: the real 5.7.4 chain with a placeholder signature.
    let seed = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/attest/yubikey5-fw574-step.cbor"
    ))
    .unwrap();
    assert_eq!(
        seed,
        real(&[
            "yubikey5-fw574-9c-a",
            "yubikey5-fw574-f9",
            "yubico-piv-attestation-b-1",
            "yubico-attestation-intermediate-b-1",
        ])
    );
}
