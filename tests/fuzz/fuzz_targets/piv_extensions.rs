//! Untrusted YubiKey slot attestations: Yubico's extensions (serial DER INTEGER, firmware,
//! PIN/touch policy, form factor) read from a certificate a client sends, before any policy
//! check. `RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz piv_extensions CORPUS` (seed
//! CORPUS from tests/vectors/yubikey/der; see README.md, Fuzzing).
#![no_main]

use enrollca::attest::PivExtensions;
use libfuzzer_sys::fuzz_target;
use x509_parser::prelude::{FromDer, X509Certificate};

fuzz_target!(|data: &[u8]| {
    if let Ok((_, cert)) = X509Certificate::from_der(data)
        && let Ok(piv) = PivExtensions::of(&cert)
    {
        // Whatever parses is fit for the policy checks and the recorded facts.
        let _ = (
            piv.serial,
            piv.pin.map(|p| p.protects()),
            piv.form_factor_name(),
        );
    }
});
