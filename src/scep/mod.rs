//! SCEP (RFC 8894): wire format, message vocabulary, enrolment service and HTTP handlers.

pub mod message;
pub mod wire;
