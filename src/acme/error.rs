//! ACME errors: one type whose kind is the RFC 8555 §6.7 problem type. `http::problem` turns
//! it into a problem document; orders and challenges store it as their `error`.

use serde::{Deserialize, Serialize};

use super::jws::JwsError;
use super::model::Identifier;
use crate::ca::IssueError;
use crate::csr::CsrError;
use crate::error::{Cause, INTERNAL_DETAIL, Kind, RETRY_UNAVAILABLE_SECS, UNAVAILABLE_DETAIL};
use crate::store::StoreError;

/// `urn:ietf:params:acme:error:<name>` types enrollca uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProblemType {
    AccountDoesNotExist,
    AlreadyRevoked,
    BadAttestationStatement,
    #[serde(rename = "badCSR")]
    BadCsr,
    BadNonce,
    BadPublicKey,
    BadRevocationReason,
    BadSignatureAlgorithm,
    Connection,
    Dns,
    ExternalAccountRequired,
    IncorrectResponse,
    InvalidContact,
    Malformed,
    OrderNotReady,
    RateLimited,
    RejectedIdentifier,
    ServerInternal,
    Tls,
    Unauthorized,
    UnsupportedContact,
    UnsupportedIdentifier,
}

impl ProblemType {
    pub fn name(self) -> &'static str {
        match self {
            Self::AccountDoesNotExist => "accountDoesNotExist",
            Self::AlreadyRevoked => "alreadyRevoked",
            Self::BadAttestationStatement => "badAttestationStatement",
            Self::BadCsr => "badCSR",
            Self::BadNonce => "badNonce",
            Self::BadPublicKey => "badPublicKey",
            Self::BadRevocationReason => "badRevocationReason",
            Self::BadSignatureAlgorithm => "badSignatureAlgorithm",
            Self::Connection => "connection",
            Self::Dns => "dns",
            Self::ExternalAccountRequired => "externalAccountRequired",
            Self::IncorrectResponse => "incorrectResponse",
            Self::InvalidContact => "invalidContact",
            Self::Malformed => "malformed",
            Self::OrderNotReady => "orderNotReady",
            Self::RejectedIdentifier => "rejectedIdentifier",
            Self::ServerInternal => "serverInternal",
            Self::Tls => "tls",
            Self::Unauthorized => "unauthorized",
            Self::UnsupportedContact => "unsupportedContact",
            Self::RateLimited => "rateLimited",
            Self::UnsupportedIdentifier => "unsupportedIdentifier",
        }
    }

    /// HTTP status when the problem answers a request.
    pub fn status(self) -> u16 {
        match self {
            Self::Unauthorized | Self::OrderNotReady => 403,
            Self::RateLimited => 429,
            Self::ServerInternal => 500,
            _ => 400,
        }
    }
}

/// A per-identifier part of a problem (RFC 8555 §6.7.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subproblem {
    #[serde(rename = "type")]
    pub kind: ProblemType,
    pub detail: String,
    pub identifier: Identifier,
}

#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
#[error("{kind:?}: {detail}")]
pub struct AcmeError {
    pub kind: ProblemType,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subproblems: Vec<Subproblem>,
    /// An HTTP status other than the type's usual one (404 for unknown resources, 409 for a
    /// key another account holds). Not stored.
    #[serde(skip)]
    pub status: Option<u16>,
    /// A `Location` to send with the problem (the account that holds the key).
    #[serde(skip)]
    pub location: Option<String>,
    /// Seconds for `Retry-After` (rate limits, an unavailable store).
    #[serde(skip)]
    pub retry_after: Option<u64>,
    /// Why we failed, for the log line the answer writes; never sent, never stored.
    #[serde(skip)]
    #[source]
    pub cause: Option<Cause>,
}

/// Two problems are the same when a client would see the same; the cause is only logged.
impl PartialEq for AcmeError {
    fn eq(&self, other: &Self) -> bool {
        (
            self.kind,
            &self.detail,
            &self.subproblems,
            self.status,
            &self.location,
            self.retry_after,
        ) == (
            other.kind,
            &other.detail,
            &other.subproblems,
            other.status,
            &other.location,
            other.retry_after,
        )
    }
}

impl Eq for AcmeError {}

impl AcmeError {
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            subproblems: Vec::new(),
            status: None,
            location: None,
            retry_after: None,
            cause: None,
        }
    }

    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Malformed, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Unauthorized, detail)
    }

    /// A failure of ours: the client learns only that it happened; the cause goes to the log
    /// when the problem is answered.
    pub fn internal(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            cause: Some(crate::error::cause(cause)),
            ..Self::new(ProblemType::ServerInternal, INTERNAL_DETAIL)
        }
    }

    /// A failure of ours that may pass (the store cannot answer now): HTTP 503 and a
    /// `Retry-After`, as RFC 8555 has no problem type of its own for it.
    pub fn unavailable(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            status: Some(503),
            retry_after: Some(RETRY_UNAVAILABLE_SECS),
            cause: Some(crate::error::cause(cause)),
            ..Self::new(ProblemType::ServerInternal, UNAVAILABLE_DETAIL)
        }
    }

    /// A failure of ours answered by its kind: 503 when it may pass, else 500.
    fn ours(kind: Kind, cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        if kind == Kind::Unavailable {
            Self::unavailable(cause)
        } else {
            Self::internal(cause)
        }
    }

    /// `rateLimited` (RFC 8555 §6.6), with when to come back.
    pub fn rate_limited(what: &str, wait: std::time::Duration) -> Self {
        Self {
            retry_after: Some(crate::rate::retry_after_secs(wait)),
            ..Self::new(
                ProblemType::RateLimited,
                format!("too many {what}; retry later"),
            )
        }
    }

    pub fn not_found(what: &str) -> Self {
        // RFC 8555 has no "not found" type; boulder and pebble answer malformed with 404.
        Self {
            status: Some(404),
            ..Self::malformed(format!("no such {what}"))
        }
    }

    /// RFC 8555 §7.3.5: the new key already belongs to the account at `location`.
    pub fn key_in_use(location: String) -> Self {
        Self {
            status: Some(409),
            location: Some(location),
            ..Self::malformed("the new key already belongs to another account")
        }
    }

    pub fn http_status(&self) -> u16 {
        self.status.unwrap_or_else(|| self.kind.status())
    }
}

impl From<JwsError> for AcmeError {
    fn from(e: JwsError) -> Self {
        let kind = match e {
            JwsError::UnsupportedAlgorithm(_) => ProblemType::BadSignatureAlgorithm,
            JwsError::BadKey(_) => ProblemType::BadPublicKey,
            JwsError::Malformed(_) | JwsError::BadSignature => ProblemType::Malformed,
        };
        Self::new(kind, e.to_string())
    }
}

impl From<CsrError> for AcmeError {
    fn from(e: CsrError) -> Self {
        Self::new(ProblemType::BadCsr, e.to_string())
    }
}

impl From<IssueError> for AcmeError {
    fn from(e: IssueError) -> Self {
        match e {
            IssueError::Policy(p) => Self::new(ProblemType::BadCsr, p.to_string()),
            IssueError::Store(e) => e.into(),
            e => Self::ours(e.kind(), e),
        }
    }
}

impl From<StoreError> for AcmeError {
    fn from(e: StoreError) -> Self {
        Self::ours(e.kind(), e)
    }
}

/// Every failed check of an attestation is a `badAttestationStatement` naming that check;
/// an attestation we cannot judge yet is ours, and retryable.
impl From<crate::attest::AttestError> for AcmeError {
    fn from(e: crate::attest::AttestError) -> Self {
        match e {
            crate::attest::AttestError::Unavailable(_) => Self::unavailable(e),
            e => Self::new(ProblemType::BadAttestationStatement, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KeyFamily;
    use crate::policy::PolicyError;

    #[test]
    fn a_store_that_cannot_answer_is_a_retryable_failure_of_ours() {
        let e = AcmeError::from(StoreError::Closed);
        assert_eq!(e.kind, ProblemType::ServerInternal);
        assert_eq!((e.http_status(), e.retry_after), (503, Some(5)));
        assert!(e.cause.is_some());
        // The cause is for the log: never stored with an order, never sent.
        let stored = serde_json::to_value(&e).unwrap();
        assert!(stored.get("cause").is_none(), "{stored}");
    }

    #[test]
    fn issuance_failures_are_answered_by_whose_fault_they_are() {
        let policy = AcmeError::from(IssueError::Policy(PolicyError::SanNotAllowed(
            "x.example".into(),
        )));
        assert_eq!(
            (policy.kind, policy.http_status()),
            (ProblemType::BadCsr, 400)
        );
        let no_issuer = AcmeError::from(IssueError::NoIssuer(KeyFamily::Ecdsa));
        assert_eq!(no_issuer.http_status(), 503);
        let serials = AcmeError::from(IssueError::SerialsExhausted);
        assert_eq!(
            (serials.kind, serials.http_status(), serials.retry_after),
            (ProblemType::ServerInternal, 500, None)
        );
    }
}
