//! Revocation: reasons, and the CRLs signed from the store's revocation records.

pub mod crl;
mod reason;

pub use crl::{Crl, CrlError, Crls};
pub use reason::RevocationReason;
