//! ACME errors: one type whose kind is the RFC 8555 §6.7 problem type. `http::problem` turns
//! it into a problem document; orders and challenges store it as their `error`.

use serde::{Deserialize, Serialize};

use super::jws::JwsError;
use super::model::Identifier;
use crate::csr::CsrError;
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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
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
    /// Seconds for `Retry-After` (rate limits).
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl AcmeError {
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            subproblems: Vec::new(),
            status: None,
            location: None,
            retry_after: None,
        }
    }

    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Malformed, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Unauthorized, detail)
    }

    /// A failure of ours; the detail goes to the log, the client learns only that it happened.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "ACME request failed");
        Self::new(
            ProblemType::ServerInternal,
            "the server could not complete the request; see its log",
        )
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

impl From<StoreError> for AcmeError {
    fn from(e: StoreError) -> Self {
        Self::internal(e)
    }
}

/// Every failed check of an attestation is a `badAttestationStatement` naming that check.
impl From<crate::attest::AttestError> for AcmeError {
    fn from(e: crate::attest::AttestError) -> Self {
        Self::new(ProblemType::BadAttestationStatement, e.to_string())
    }
}
