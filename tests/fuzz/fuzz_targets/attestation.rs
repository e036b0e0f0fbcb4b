//! Untrusted device-attest-01 answers: the CBOR attestation object and the certificate chain
//! inside it, verified against the vector root at a time the vector is valid.
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz attestation CORPUS` (seed CORPUS
//! from tests/vectors/attest/apple-valid.cbor).
#![no_main]

use std::sync::{Arc, OnceLock};

use enrollca::attest::{AndroidPolicy, Apple, FormatName, Expected, KeyType, Verifier, freshness_nonce};
use libfuzzer_sys::fuzz_target;

static VERIFIER: OnceLock<Verifier> = OnceLock::new();

fn verifier() -> &'static Verifier {
    VERIFIER.get_or_init(|| {
        let root = include_bytes!("../../vectors/attest/root.pem");
        let roots = enrollca::encoding::pem_certs(root).unwrap();
        Verifier::new(vec![Arc::new(Apple::new(roots).unwrap())])
    })
}

fuzz_target!(|data: &[u8]| {
    let expected = Expected {
        nonce: freshness_nonce("vector-token"),
        identifiers: &["C02VECTOR01"],
        key_types: &[KeyType::P256, KeyType::P384],
        formats: &[FormatName::Apple],
        android: &AndroidPolicy::default(),
        now: time::macros::datetime!(2027-06-01 0:00 UTC),
    };
    if let Ok(a) = verifier().verify(data, &expected) {
        // Only the vector's genuine chain can pass; what passes names the ordered device.
        assert_eq!(a.facts.serial.as_deref(), Some("C02VECTOR01"));
    }
});
