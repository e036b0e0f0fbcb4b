//! SCEP (RFC 8894): wire format, message vocabulary, enrolment service and HTTP handlers.

pub mod handlers;
pub mod message;
pub mod pending;
pub mod service;
pub mod wire;

pub use service::{ScepError, ScepService};
