//! Untrusted tls-alpn-01 validation certificates: whatever a responder presents is parsed and
//! checked against RFC 8737 §3 without panicking.
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz validation_cert CORPUS` (seed CORPUS
//! with tests/vectors/acme/tls-alpn-01.der).
#![no_main]

use enrollca::acme::model::Identifier;
use enrollca::acme::tls_alpn01::check_certificate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ip = Identifier::ip("127.0.0.1".parse().unwrap());
    for identifier in [Identifier::dns("alpn.example.test"), ip] {
        let _ = check_certificate(data, &identifier, "token.thumbprint");
    }
});
