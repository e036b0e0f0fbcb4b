//! ACME problem documents (RFC 8555 §6.7): the one place ACME errors become HTTP responses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::{AcmeError, ProblemType, Subproblem};
use super::jws::ALGORITHMS;

/// An ACME problem document (RFC 8555 §6.7), as answered and as embedded in orders and
/// challenges.
#[derive(Debug, Serialize)]
pub struct AcmeProblem {
    #[serde(rename = "type")]
    pub kind: String,
    pub detail: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subproblems: Vec<AcmeSubproblem>,
    /// badSignatureAlgorithm lists what is accepted (§6.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<&'static [&'static str]>,
}

#[derive(Debug, Serialize)]
pub struct AcmeSubproblem {
    #[serde(rename = "type")]
    pub kind: String,
    pub detail: String,
    pub identifier: super::model::Identifier,
}

fn acme_urn(kind: ProblemType) -> String {
    format!("urn:ietf:params:acme:error:{}", kind.name())
}

impl From<&AcmeError> for AcmeProblem {
    fn from(e: &AcmeError) -> Self {
        Self {
            kind: acme_urn(e.kind),
            detail: e.detail.clone(),
            status: e.http_status(),
            subproblems: e
                .subproblems
                .iter()
                .map(|s: &Subproblem| AcmeSubproblem {
                    kind: acme_urn(s.kind),
                    detail: s.detail.clone(),
                    identifier: s.identifier.clone(),
                })
                .collect(),
            algorithms: (e.kind == ProblemType::BadSignatureAlgorithm).then_some(ALGORITHMS),
        }
    }
}

impl IntoResponse for AcmeError {
    fn into_response(self) -> Response {
        let problem = AcmeProblem::from(&self);
        match &self.cause {
            Some(cause) => {
                tracing::error!(error = %crate::error::Chain(cause.as_ref()), "ACME request failed")
            }
            None if problem.status >= 500 => {
                tracing::error!(problem = %problem.kind, detail = %self.detail, "ACME request failed")
            }
            None => {
                tracing::info!(problem = %problem.kind, detail = %self.detail, "ACME request refused")
            }
        }
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/problem+json"),
        );
        if let Some(v) = self
            .location
            .as_deref()
            .and_then(|l| axum::http::HeaderValue::from_str(l).ok())
        {
            headers.insert(axum::http::header::LOCATION, v);
        }
        if let Some(secs) = self.retry_after {
            headers.insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}
