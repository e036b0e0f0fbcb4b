//! Enrolments waiting for an operator (manual approval, RFC 8894 §3.3.3 PENDING): accepted
//! with a good challenge, answered PENDING, and completed by CertPoll once an operator has
//! approved (the certificate) or rejected (FAILURE) them.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ca::Serial;
use crate::csr::Names;
use crate::csr::{Csr, CsrError, San, Subject};
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

/// One waiting enrolment, keyed by its SCEP transaction id. The PKCS#10 request itself is
/// not kept: its challengePassword is a secret, and what issuance needs of it (the key, whose
/// possession was checked before it was held, and the names) is kept instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRequest {
    pub transaction_id: String,
    /// The requested key: SubjectPublicKeyInfo, DER.
    #[serde(with = "serde_bytes")]
    pub public_key: Vec<u8>,
    /// The subject and SANs the request asked for.
    pub requested: Requested,
    /// What the challenge or webhook stated for it (see `csr::Names`).
    #[serde(default)]
    pub stated: Names,
    /// The requester's signing certificate: only its key may collect the result, and the
    /// certificate is encrypted to it.
    #[serde(with = "serde_bytes")]
    pub signer: Vec<u8>,
    pub device: Option<DeviceId>,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    pub decision: Decision,
}

/// The names a held request asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requested {
    pub subject: Subject,
    pub sans: Vec<San>,
}

impl PendingRequest {
    /// The request again, for issuance on approval.
    pub fn csr(&self) -> Result<Csr, CsrError> {
        Csr::from_parts(
            &self.public_key,
            self.requested.subject.clone(),
            self.requested.sans.clone(),
        )
    }

    /// RFC 4514-style rendering of the requested subject, for operators.
    pub fn subject(&self) -> String {
        crate::policy::subject_string(&self.requested.subject)
    }
}
