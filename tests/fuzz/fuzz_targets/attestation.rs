//! Untrusted device-attest-01 answers: the CBOR attestation object and the certificate chain
//! inside it, verified against the vector roots (Apple's test root, Google's) at a time the
//! vectors are valid. `RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz attestation
//! CORPUS` (seed CORPUS from tests/vectors/attest: an Apple-style object, a real Android one,
//! a real YubiKey chain in a `step` statement and a real Windows `tpm` one).
#![no_main]

use std::sync::{Arc, OnceLock};

use enrollca::attest::status::{Revoked, StatusList};
use enrollca::attest::{
    AndroidKey, AndroidPolicy, Apple, Expected, FormatName, KeyType, Tpm, TpmIdentifier, TpmPolicy,
    Verifier, YubiKeyPiv, YubiKeyPolicy, freshness_nonce,
};
use libfuzzer_sys::fuzz_target;

static VERIFIER: OnceLock<Verifier> = OnceLock::new();

fn verifier() -> &'static Verifier {
    VERIFIER.get_or_init(|| {
        let root = include_bytes!("../../vectors/attest/root.pem");
        let roots = enrollca::encoding::pem_certs(root).unwrap();
        let microsoft = include_bytes!("../../vectors/tpm/microsoft-tpm-root-2014.pem");
        let microsoft = enrollca::encoding::pem_certs(microsoft).unwrap();
        let android = AndroidKey::new(&[], StatusList::loaded(Revoked::default())).unwrap();
        Verifier::new(vec![
            Arc::new(Apple::new(roots).unwrap()),
            Arc::new(android),
            Arc::new(YubiKeyPiv::new(&[]).unwrap()),
            Arc::new(Tpm::new(&microsoft).unwrap()),
        ])
    })
}

fuzz_target!(|data: &[u8]| {
    let expected = Expected {
        nonce: freshness_nonce("vector-token"),
        key_authorization: "vector-token.thumbprint",
        identifiers: &["C02VECTOR01"],
        key_types: &[KeyType::P256, KeyType::P384],
        formats: &[
            FormatName::Apple,
            FormatName::AndroidKey,
            FormatName::Step,
            FormatName::Tpm,
        ],
        android: &AndroidPolicy::default(),
        yubikey: &YubiKeyPolicy::default(),
        // Windows signs with SHA-1: accepted, so the real object reaches every check.
        tpm: &TpmPolicy {
            identifier: TpmIdentifier::PermanentIdentifier,
            accept_sha1: true,
        },
        now: time::macros::datetime!(2027-06-01 0:00 UTC),
    };
    if let Ok(a) = verifier().verify(data, &expected) {
        // Only the vector's genuine chain can pass; what passes names the ordered device.
        assert_eq!(a.facts.serial.as_deref(), Some("C02VECTOR01"));
    }
    // The real Android chain is valid in 2025 and attests no serial; the real YubiKey chain
    // carries no signature by its key over this key authorization; the real TPM one carries
    // WebAuthn's freshness: nothing else passes.
    let android = Expected {
        now: time::macros::datetime!(2025-06-01 0:00 UTC),
        ..expected
    };
    assert!(verifier().verify(data, &android).is_err());
});
