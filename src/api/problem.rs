//! RFC 7807 problem documents: the one place API errors become HTTP responses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::ApiError;
use crate::ca::IssueError;
use crate::error::{Chain, INTERNAL_DETAIL, Kind, RETRY_UNAVAILABLE_SECS, UNAVAILABLE_DETAIL};

#[derive(Debug, Serialize)]
pub(crate) struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
}

impl Problem {
    fn new(status: StatusCode, slug: &str, title: &'static str, detail: String) -> Self {
        Self {
            kind: format!("urn:enrollca:problem:{slug}"),
            title,
            status: status.as_u16(),
            detail,
        }
    }
}

impl From<&ApiError> for Problem {
    fn from(e: &ApiError) -> Self {
        use StatusCode as S;
        let detail = e.to_string();
        match e {
            ApiError::Unauthorized => {
                Self::new(S::UNAUTHORIZED, "unauthorized", "Unauthorized", detail)
            }
            ApiError::Forbidden(_) => Self::new(S::FORBIDDEN, "forbidden", "Forbidden", detail),
            ApiError::BadRequest(_) => {
                Self::new(S::BAD_REQUEST, "bad-request", "Bad request", detail)
            }
            ApiError::BadCsr(_) => {
                Self::new(S::BAD_REQUEST, "bad-csr", "Bad certificate request", detail)
            }
            ApiError::NotFound(_) => Self::new(S::NOT_FOUND, "not-found", "Not found", detail),
            ApiError::AlreadyRevoked(_) => {
                Self::new(S::CONFLICT, "already-revoked", "Already revoked", detail)
            }
            ApiError::Conflict(_) => Self::new(S::CONFLICT, "conflict", "Conflict", detail),
            ApiError::UnsupportedMediaType(_) => Self::new(
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                detail,
            ),
            ApiError::Issue(IssueError::Policy(_)) => {
                Self::new(S::FORBIDDEN, "policy", "Refused by policy", detail)
            }
            ApiError::Issue(IssueError::NoIssuer(_) | IssueError::IssuerExpired(_)) => Self::new(
                S::SERVICE_UNAVAILABLE,
                "no-issuer",
                "No issuer available",
                detail,
            ),
            ApiError::Issue(IssueError::Store(e)) | ApiError::Store(e) => {
                Self::of_kind(e.kind(), detail)
            }
            ApiError::Issue(e) => Self::of_kind(e.kind(), detail),
            ApiError::Failed { kind, cause } => Self::of_kind(*kind, cause.to_string()),
        }
    }
}

impl Problem {
    /// The answer for a kind of failure that has no more specific one.
    fn of_kind(kind: Kind, detail: String) -> Self {
        use StatusCode as S;
        match kind {
            Kind::BadInput => Self::new(S::BAD_REQUEST, "bad-request", "Bad request", detail),
            Kind::NotFound => Self::new(S::NOT_FOUND, "not-found", "Not found", detail),
            Kind::Conflict => Self::new(S::CONFLICT, "conflict", "Conflict", detail),
            // Our failures: the client learns whether to retry, the log learns why.
            Kind::Unavailable => Self::new(
                S::SERVICE_UNAVAILABLE,
                "unavailable",
                "Unavailable",
                UNAVAILABLE_DETAIL.into(),
            ),
            Kind::Internal => Self::new(
                S::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                INTERNAL_DETAIL.into(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem::from(&self);
        if problem.status >= 500 {
            tracing::error!(error = %Chain(&self), "request failed");
        } else {
            tracing::info!(error = %self, "request refused");
        }
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(problem)).into_response();
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                RETRY_UNAVAILABLE_SECS.into(),
            );
        }
        if matches!(self, ApiError::Unauthorized) {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"enrollca\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DocKind, StoreError};

    fn answer(e: ApiError) -> (u16, String, Option<String>) {
        let problem = Problem::from(&e);
        let response = e.into_response();
        let retry = response
            .headers()
            .get(axum::http::header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(response.status().as_u16(), problem.status);
        (problem.status, problem.detail, retry)
    }

    #[test]
    fn a_store_failure_is_ours_and_says_when_to_retry() {
        let down = StoreError::backend("sled", crate::error::cause("disk on fire"));
        let (status, detail, retry) = answer(down.into());
        assert_eq!(status, 503);
        assert!(!detail.contains("disk on fire"), "{detail}");
        assert_eq!(retry.as_deref(), Some("5"));
    }

    #[test]
    fn store_refusals_keep_their_kind() {
        let conflict = StoreError::Conflict {
            kind: DocKind::ApiToken,
            id: "t".into(),
        };
        assert_eq!(answer(conflict.into()).0, 409);
        assert_eq!(answer(StoreError::ChallengeUnavailable.into()).0, 400);
        let corrupt = StoreError::Corrupt {
            tree: "certs",
            message: "x".into(),
        };
        let (status, detail, retry) = answer(corrupt.into());
        assert_eq!((status, retry), (500, None));
        assert!(!detail.contains("certs"), "{detail}");
    }

    #[test]
    fn an_internal_failure_tells_the_client_nothing_of_its_cause() {
        let (status, detail, _) = answer(ApiError::internal("secret path /var/lib/x"));
        assert_eq!(status, 500);
        assert!(!detail.contains("/var/lib/x"), "{detail}");
    }
}
