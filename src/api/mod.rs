//! The JSON API under `/api/v1` that MDM servers and the `enrollca` CLI use.

pub(crate) mod auth;
mod certificates;
mod challenges;
mod credentials;
mod devices;
mod eab;
mod extract;
mod inventory;
mod issuers;
pub(crate) mod openapi;
mod pending;
mod problem;
mod rotation;
mod tokens;
pub(crate) mod views;

use crate::ca::{IssueError, Serial};
use crate::csr::CsrError;
use crate::error::{Cause, Kind, cause};
use crate::scep::ScepError;
use crate::store::StoreError;

pub(crate) use auth::{Scope, TokenHash};
pub(crate) use certificates::{
    get_certificate, issue_certificate, list_certificates, revoke_certificate,
};
pub(crate) use challenges::create_challenge;
pub(crate) use credentials::device_credential;
pub(crate) use devices::{get_device, revoke_device, validate, validate_batch};
pub(crate) use eab::{
    ClientIdentifierBody, ClientIdentifierView, EabBody, EabView, create_client_identifier,
    create_eab_key,
};
pub(crate) use inventory::{import_devices, register_device, unregister_device};
pub(crate) use issuers::{list_events, list_issuers};
pub(crate) use pending::{PendingList, PendingView, approve_pending, list_pending, reject_pending};
pub(crate) use rotation::{
    ActivatedView, PrepareBody, RootBody, RootView, activate, prepare, retire, rotate_root,
};
pub(crate) use tokens::{TokenBody, TokenList, TokenView, create_token, delete_token, list_tokens};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    BadCsr(#[from] CsrError),
    #[error("{0}")]
    NotFound(String),
    #[error("certificate {0} is already revoked")]
    AlreadyRevoked(Serial),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error(transparent)]
    Issue(IssueError),
    /// A store failure that is not about what the request named: answered by its kind.
    #[error(transparent)]
    Store(StoreError),
    /// A service's failure, answered by its kind; when it is ours the cause is logged, never
    /// sent.
    #[error("request failed ({kind:?})")]
    Failed {
        kind: Kind,
        #[source]
        cause: Cause,
    },
}

impl ApiError {
    pub(crate) fn internal(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Failed {
            kind: Kind::Internal,
            cause: crate::error::cause(cause),
        }
    }
}

impl From<ScepError> for ApiError {
    fn from(e: ScepError) -> Self {
        match e {
            ScepError::Store(e) => e.into(),
            ScepError::Issue(e) => e.into(),
            e => Self::Failed {
                kind: e.kind(),
                cause: cause(e),
            },
        }
    }
}

impl From<IssueError> for ApiError {
    fn from(e: IssueError) -> Self {
        Self::Issue(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(s) => Self::NotFound(format!("no certificate with serial {s}")),
            StoreError::AlreadyRevoked(s) => Self::AlreadyRevoked(s),
            other => Self::Store(other),
        }
    }
}
