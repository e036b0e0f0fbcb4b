//! ACME (RFC 8555): JWS envelopes, nonces, accounts, orders, http-01, tls-alpn-01 and dns-01
//! validation, finalization and revocation, served per named profile at `/acme/<profile>/directory`.

mod accounts;

pub mod client_identifiers;
mod dns01;
pub mod error;
pub mod handlers;
pub mod http01;
mod in_flight;
pub mod jws;
pub mod model;
pub mod nonce;
mod orders;
pub mod problem;
mod repo;
pub mod service;
pub mod settings;
mod targets;
pub mod tls_alpn01;
pub mod validation;

pub use accounts::NewEabKey;
pub use error::{AcmeError, ProblemType};
pub use nonce::Nonces;
pub use service::{AcmeService, Profile};
