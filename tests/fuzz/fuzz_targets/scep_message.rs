//! Untrusted SCEP bytes: a pkiMessage as a device POSTs it, opened and (with the vectors' CA
//! key) decrypted. `RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz scep_message CORPUS`
//! with CORPUS seeded from tests/vectors/scep/*.der.
#![no_main]

use std::sync::LazyLock;

use enrollca::scep::wire;
use libfuzzer_sys::fuzz_target;
use openssl::pkey::{PKey, Private};

static CA_KEY: LazyLock<PKey<Private>> = LazyLock::new(|| {
    PKey::private_key_from_pem(include_bytes!("../../vectors/scep/ca.key")).unwrap()
});

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = wire::open(data) {
        if let Ok((content, _)) = wire::decrypt(&req.envelope, &CA_KEY) {
            let _ = enrollca::csr::Csr::from_der(&content);
        }
    }
    // The envelope parser also sees raw bytes (the signed content is the client's choice).
    let _ = wire::decrypt(data, &CA_KEY);
});
