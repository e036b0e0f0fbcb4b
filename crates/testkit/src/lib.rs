//! enrollca's test kit: the clients and the synthetic attestation CA that its tests, load
//! generators and benchmarks drive the product with, and the harness its integration tests
//! run the binary with. Nothing here ships in the product.

pub mod acme;
pub mod android;
pub mod attestation;
pub mod harness;
pub mod scep;
pub mod tpm;
pub mod yubikey;
