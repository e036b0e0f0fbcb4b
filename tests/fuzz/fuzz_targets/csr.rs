//! Untrusted request bytes: PKCS#10 in DER and PEM, and serial numbers from URLs.
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz csr CORPUS` (seed CORPUS from
//! tests/vectors/csr; see README.md, Fuzzing).
#![no_main]

use enrollca::ca::Serial;
use enrollca::csr::Csr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(csr) = Csr::from_der(data) {
        // Whatever parses is fit for the policy layer.
        let _ = csr.common_name();
        for san in &csr.sans {
            let _ = san.to_string();
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Csr::from_pem(text);
        if let Ok(serial) = text.parse::<Serial>() {
            // Round trip: what we print parses back to the same serial.
            assert_eq!(serial.to_string().parse::<Serial>().unwrap(), serial);
        }
    }
});
