//! Revocation: reasons now; CRL and OCSP signing build on the store's revocation records.

mod reason;

pub use reason::RevocationReason;
