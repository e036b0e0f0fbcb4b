//! Untrusted attestation bytes: Android's KeyDescription extension (inside a certificate a
//! device sends; parsed before the policy checks run) and Google's status list.
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz key_description CORPUS` (seed
//! CORPUS from tests/vectors/android/key-descriptions; see README.md, Fuzzing).
#![no_main]

use enrollca::attest::android::KeyDescription;
use enrollca::attest::status::Revoked;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = KeyDescription::parse(data) {
        // Whatever parses is fit for the policy checks.
        let _ = (d.attestation_security_level, d.challenge.len());
        let _ = d.hardware_enforced.root_of_trust.map(|r| r.boot_state);
    }
    let _ = Revoked::parse(data);
});
