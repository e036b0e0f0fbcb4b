//! Untrusted OCSP requests (POST bodies, decoded GET paths).
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz ocsp_request CORPUS` (seed CORPUS
//! from tests/vectors/ocsp).
#![no_main]

use enrollca::revocation::ocsp::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(p) = parse(data) {
        assert!(!p.ids.is_empty() && p.ids.len() <= 8);
        assert!(p.nonce.as_ref().is_none_or(|n| (1..=32).contains(&n.len())));
    }
});
