//! Untrusted ACME request bodies: the flattened JWS envelope, its protected header and JWK,
//! a nested JWS (keyChange) and an External Account Binding.
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz jws CORPUS` (seed CORPUS from
//! tests/vectors/acme).
#![no_main]

use enrollca::acme::jws::{Binding, Jwk, Jws, KeyRef};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(jws) = Jws::parse(data) else {
        return;
    };
    if let KeyRef::Jwk(jwk) = &jws.header.key {
        // Verification of arbitrary bytes fails cleanly, and a JWK round-trips unchanged.
        let _ = jws.verify(jwk);
        let json = serde_json::to_vec(jwk).unwrap();
        let back: Jwk = serde_json::from_slice(&json).unwrap();
        assert_eq!(&back, jwk);
        assert_eq!(back.thumbprint(), jwk.thumbprint());
    }
    if let Ok(inner) = Jws::parse(&jws.payload) {
        let _ = inner.json::<serde_json::Value>();
    }
    if let Ok(payload) = jws.json::<serde_json::Value>() {
        if let Some(eab) = payload.get("externalAccountBinding") {
            if let Ok(binding) = Binding::parse(eab) {
                let _ = binding.verify(b"fuzz");
            }
        }
    }
});
