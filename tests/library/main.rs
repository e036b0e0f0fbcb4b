//! The library against published test vectors and across store backends, without a server:
//! parsers fed real clients' bytes (ACME JWS, Apple attestations, CSRs, SCEP messages), the
//! shipped roots, issuance, and the store battery. One test binary: it links once.

mod acme_vectors;
mod android_vectors;
mod apple;
mod attest_vectors;
mod csr_vectors;
mod issuance;
mod migrate;
mod pki;
mod revocations;
mod scep_vectors;
mod store_battery;
mod tpm;
mod yubikey;
