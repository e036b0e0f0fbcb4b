//! Enrolments waiting for an operator (manual approval, RFC 8894 §3.3.3 PENDING): accepted
//! with a good challenge, answered PENDING, and completed by CertPoll once an operator has
//! approved (the certificate) or rejected (FAILURE) them.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ca::Serial;
use crate::store::DeviceId;

/// Whether accepted PKCSReq enrolments are issued at once or wait for an operator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Approval {
    #[default]
    Automatic,
    Manual,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Decision {
    Waiting,
    Approved { serial: Serial },
    Rejected,
}

/// One waiting enrolment, keyed by its SCEP transaction id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRequest {
    pub transaction_id: String,
    /// The PKCS#10 request, DER.
    #[serde(with = "serde_bytes")]
    pub csr: Vec<u8>,
    /// The requester's signing certificate: only its key may collect the result, and the
    /// certificate is encrypted to it.
    #[serde(with = "serde_bytes")]
    pub signer: Vec<u8>,
    pub subject: String,
    pub device: Option<DeviceId>,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    pub decision: Decision,
}
