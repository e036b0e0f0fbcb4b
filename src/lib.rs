//! enrollca: a certificate authority for device management.
//!
//! Devices enrol over SCEP and ACME; the MDM server reads issuance and revocation state
//! through the API. See docs/architecture.md for the layers; each module's doc says its part.

// What is `pub` is the library's surface (the tests, the load generators and the fuzz targets
// use it); anything only the crate uses says `pub(crate)` (CI denies warnings).
#![warn(unreachable_pub)]

pub mod acme;
pub mod admin;
pub(crate) mod api;
pub mod app;
pub mod attest;
pub mod ca;
pub mod clock;
pub mod config;
pub mod csr;
pub mod datadir;
pub(crate) mod durable;
pub mod encoding;
pub(crate) mod error;
pub mod http;
pub mod init;
pub(crate) mod inventory;
pub(crate) mod logging;
pub mod metrics;
pub(crate) mod model;
pub(crate) mod notify;
pub(crate) mod payload;
pub mod policy;
pub(crate) mod rate;
pub mod revocation;
pub mod scep;
pub(crate) mod secret;
pub mod store;
pub(crate) mod validator;
