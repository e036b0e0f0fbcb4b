//! RFC 7807 problem documents: the one place API errors become HTTP responses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::ApiError;
use crate::ca::IssueError;

#[derive(Debug, Serialize)]
pub struct Problem {
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
            ApiError::Issue(_) | ApiError::Internal(_) => Self::new(
                S::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                // Internal details go to the log, not to the client.
                "the server could not complete the request; see its log".into(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem::from(&self);
        if problem.status >= 500 {
            tracing::error!(error = %self, "request failed");
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
        if matches!(self, ApiError::Unauthorized) {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"enrollca\""),
            );
        }
        response
    }
}
