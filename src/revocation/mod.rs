//! Revocation: reasons, and the CRLs and OCSP responses signed from the store's revocation
//! records.

pub mod crl;
pub mod ocsp;

pub use crate::model::RevocationReason;
pub use crl::{Crl, CrlError, Crls};
pub use ocsp::{Answer, Ocsp, OcspError};
