//! enrollca's test kit: the clients and the synthetic attestation CA that its tests, load
//! generators and benchmarks drive the product with. Nothing here ships in the product.

pub mod acme;
pub mod attestation;
pub mod scep;
