//! `/scep`: the HTTP binding of SCEP (RFC 8894 §4.1). Errors before a message is opened are
//! HTTP 400 with a plain-text reason; after that, answers are signed CertReps.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;

use super::service::{ScepError, ScepService};
use crate::error::{Chain, INTERNAL_DETAIL, Kind, RETRY_UNAVAILABLE_SECS, UNAVAILABLE_DETAIL};
use crate::rate::{ClientAddr, Costly, retry_after_secs};

#[derive(Debug, Deserialize)]
pub struct Params {
    operation: Option<String>,
    message: Option<String>,
}

fn plain(status: StatusCode, reason: impl Into<String>) -> Response {
    let mut reason = reason.into();
    reason.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        reason,
    )
        .into_response()
}

impl IntoResponse for ScepError {
    /// Before a message is opened, or when we fail after: a CertRep cannot say either.
    fn into_response(self) -> Response {
        match (self.kind(), &self) {
            (_, Self::Wire(e)) => {
                tracing::info!(reason = %e, "SCEP message refused");
                plain(StatusCode::BAD_REQUEST, e.to_string())
            }
            (_, Self::NoIssuer) => plain(StatusCode::SERVICE_UNAVAILABLE, self.to_string()),
            (_, Self::NoNextIssuer) => plain(StatusCode::NOT_FOUND, self.to_string()),
            (Kind::Unavailable, _) => {
                tracing::error!(error = %Chain(&self), "SCEP request failed");
                let mut answer = plain(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE_DETAIL);
                answer
                    .headers_mut()
                    .insert(header::RETRY_AFTER, RETRY_UNAVAILABLE_SECS.into());
                answer
            }
            // Whatever else reaches here was understood and failed on our side.
            _ => {
                tracing::error!(error = %Chain(&self), "SCEP request failed");
                plain(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_DETAIL)
            }
        }
    }
}

pub async fn get(
    State(scep): State<Arc<ScepService>>,
    State(costly): State<Costly>,
    client: Option<Extension<ClientAddr>>,
    Query(p): Query<Params>,
) -> Response {
    match p.operation.as_deref() {
        Some("GetCACaps") => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            scep.caps(),
        )
            .into_response(),
        Some("GetCACert") => match scep.ca_certs() {
            Ok(certs) => (
                [(header::CONTENT_TYPE, certs.content_type())],
                certs.into_body(),
            )
                .into_response(),
            Err(e) => e.into_response(),
        },
        Some("GetNextCACert") => match scep.next_ca_cert() {
            Ok(der) => (
                [(header::CONTENT_TYPE, "application/x-x509-next-ca-cert")],
                der,
            )
                .into_response(),
            Err(e) => e.into_response(),
        },
        Some("PKIOperation") => {
            let Some(message) = p.message else {
                return plain(
                    StatusCode::BAD_REQUEST,
                    "PKIOperation by GET needs a message parameter",
                );
            };
            // Form decoding turns an unescaped '+' into a space; other whitespace is line
            // wrapping. base64 has neither.
            let message: String = message
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('+'),
                    c if c.is_whitespace() => None,
                    c => Some(c),
                })
                .collect();
            match base64::engine::general_purpose::STANDARD.decode(message.as_bytes()) {
                Ok(body) => pki_operation(&scep, &costly, client.map(|c| c.0), body).await,
                Err(e) => plain(
                    StatusCode::BAD_REQUEST,
                    format!("message is not base64: {e}"),
                ),
            }
        }
        Some(other) => plain(
            StatusCode::BAD_REQUEST,
            format!("unknown SCEP operation `{other}`"),
        ),
        None => plain(StatusCode::BAD_REQUEST, "missing operation parameter"),
    }
}

pub async fn post(
    State(scep): State<Arc<ScepService>>,
    State(costly): State<Costly>,
    client: Option<Extension<ClientAddr>>,
    Query(p): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match p.operation.as_deref() {
        Some("PKIOperation") => {}
        Some(other) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("operation `{other}` is not a POST operation"),
            );
        }
        None => return plain(StatusCode::BAD_REQUEST, "missing operation parameter"),
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct
            .to_str()
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim();
        if !matches!(ct, "application/x-pki-message" | "application/octet-stream") {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("content type `{ct}` is not application/x-pki-message"),
            );
        }
    }
    if body.is_empty() {
        return plain(StatusCode::BAD_REQUEST, "empty PKIOperation body");
    }
    pki_operation(&scep, &costly, client.map(|c| c.0), body.to_vec()).await
}

/// Opening a message costs an RSA decryption before anything is authenticated: each client
/// address gets `limits.client_rate` of them. SCEP has no word for "later", so HTTP 429 with
/// `Retry-After` says it.
async fn pki_operation(
    scep: &ScepService,
    costly: &Costly,
    client: Option<ClientAddr>,
    body: Vec<u8>,
) -> Response {
    let too_many = |secs: u64| {
        let mut response = plain(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many requests from this address; retry in {secs} s"),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, secs.into());
        response
    };
    // Held until the answer is made: the address's private-key work in flight.
    let _slot = match client {
        None => None,
        Some(ClientAddr(ip)) => {
            if let Err(wait) = costly.rate.check(ip) {
                return too_many(retry_after_secs(wait));
            }
            let Some(slot) = costly.in_flight.enter(ip) else {
                return too_many(1);
            };
            Some(slot)
        }
    };
    match scep.pki_operation(body).await {
        Ok(reply) => ([(header::CONTENT_TYPE, "application/x-pki-message")], reply).into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scep::wire::WireError;
    use crate::store::StoreError;

    fn answer(e: ScepError) -> (StatusCode, Option<String>) {
        let response = e.into_response();
        let retry = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        (response.status(), retry)
    }

    #[test]
    fn a_store_failure_is_never_the_clients() {
        assert_eq!(
            answer(StoreError::Closed.into()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("5".into()))
        );
        let corrupt = StoreError::Corrupt {
            tree: "certs",
            message: "x".into(),
        };
        assert_eq!(
            answer(corrupt.into()),
            (StatusCode::INTERNAL_SERVER_ERROR, None)
        );
        assert_eq!(
            answer(ScepError::internal("broken")),
            (StatusCode::INTERNAL_SERVER_ERROR, None)
        );
    }

    #[test]
    fn an_unreadable_message_is() {
        let e = WireError::Malformed("not CMS".into());
        assert_eq!(answer(e.into()), (StatusCode::BAD_REQUEST, None));
    }
}
