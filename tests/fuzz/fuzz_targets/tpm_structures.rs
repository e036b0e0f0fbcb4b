//! Untrusted TPM 2.0 structures of a `tpm` attestation: `certInfo` (TPMS_ATTEST) and
//! `pubArea` (TPMT_PUBLIC), unmarshalled before any signature is checked.
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz tpm_structures CORPUS` (seed CORPUS
//! from tests/vectors/tpm/structures; see README.md, Fuzzing).
#![no_main]

use enrollca::attest::tpm::{Certified, PublicArea};
use libfuzzer_sys::fuzz_target;
use x509_parser::prelude::FromDer;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Certified::parse(data) {
        let _ = (c.extra_data.len(), c.name.len());
    }
    if let Ok(p) = PublicArea::parse(data) {
        // A parsed key is a SubjectPublicKeyInfo the policy checks can read.
        assert!(x509_parser::x509::SubjectPublicKeyInfo::from_der(&p.spki).is_ok());
    }
});
