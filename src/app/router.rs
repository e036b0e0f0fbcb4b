//! Every route enrollca serves, in one table.

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::api::{self, ApiError};
use crate::app::AppState;
use crate::http::middleware::observe;
use crate::scep;

/// Largest request body accepted anywhere (CSRs, SCEP envelopes and JSON are far smaller).
const MAX_BODY: usize = 1 << 20;
/// A validation batch: 1,000 certificates of a few KiB each, in PEM.
const MAX_BATCH_BODY: usize = 8 << 20;

/// The routers of the two listeners. Plain HTTP serves what devices and relying parties
/// fetch without credentials (SCEP, CRLs, OCSP, CA certificates, health, metrics); the API
/// (bearer tokens) only with `api_on_http`, ACME never (RFC 8555 §6.1 requires HTTPS, and a
/// request signed for the HTTPS URL must not be accepted over plain HTTP). HTTPS serves all.
pub(crate) fn routers(state: AppState, api_on_http: bool) -> (Router, Router) {
    let https = public_routes()
        .merge(api_routes())
        .merge(acme_routes(state.clone()));
    let http = if api_on_http {
        public_routes().merge(api_routes())
    } else {
        public_routes().route("/api/{*rest}", axum::routing::any(api_over_http))
    }
    .route("/acme/{*rest}", axum::routing::any(acme_over_http));
    (finish(http, state.clone()), finish(https, state))
}

fn finish(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            observe,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// What anyone may fetch, on either listener.
fn public_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/roots.pem", get(roots))
        .route("/ca/cross.pem", get(cross_certificates))
        .route("/ca/{file}", get(ca_certificate))
        .route("/crl/{file}", get(crl))
        .route("/ocsp", post(ocsp_post))
        .route("/ocsp/{*request}", get(ocsp_get))
        .route("/scep", get(scep::handlers::get).post(scep::handlers::post))
}

/// The MDM's and operators' API (bearer tokens).
fn api_routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/openapi.json", get(api::openapi::document))
        .route("/api/v1/issuers", get(api::list_issuers))
        .route("/api/v1/issuers/{id}/retire", post(api::retire))
        .route("/api/v1/rotation/root", post(api::rotate_root))
        .route("/api/v1/rotation/{family}/prepare", post(api::prepare))
        .route("/api/v1/rotation/{family}/activate", post(api::activate))
        .route(
            "/api/v1/certificates",
            get(api::list_certificates).post(api::issue_certificate),
        )
        .route("/api/v1/certificates/{serial}", get(api::get_certificate))
        .route(
            "/api/v1/certificates/{serial}/revoke",
            post(api::revoke_certificate),
        )
        .route("/api/v1/events", get(api::list_events))
        .route(
            "/api/v1/tokens",
            get(api::list_tokens).post(api::create_token),
        )
        .route(
            "/api/v1/tokens/{id}",
            axum::routing::delete(api::delete_token),
        )
        .route("/api/v1/validate", post(api::validate))
        .route(
            "/api/v1/validate/batch",
            post(api::validate_batch).layer(DefaultBodyLimit::max(MAX_BATCH_BODY)),
        )
        .route("/api/v1/devices", post(api::import_devices))
        .route(
            "/api/v1/devices/{id}",
            get(api::get_device)
                .put(api::register_device)
                .delete(api::unregister_device),
        )
        .route("/api/v1/devices/{id}/revoke", post(api::revoke_device))
        .route(
            "/api/v1/devices/{id}/credentials/{kind}",
            get(api::device_credential),
        )
        .route("/api/v1/scep/challenges", post(api::create_challenge))
        .route("/api/v1/scep/pending", get(api::list_pending))
        .route(
            "/api/v1/scep/pending/{id}/approve",
            post(api::approve_pending),
        )
        .route(
            "/api/v1/scep/pending/{id}/reject",
            post(api::reject_pending),
        )
        .route("/api/v1/acme/eab-keys", post(api::create_eab_key))
        .route(
            "/api/v1/acme/client-identifiers",
            post(api::create_client_identifier),
        )
}

async fn api_over_http() -> ApiError {
    ApiError::NotFound(
        "the API is served over HTTPS only (listen.api_on_http enables plain HTTP)".into(),
    )
}

async fn acme_over_http() -> ApiError {
    ApiError::NotFound("ACME is served over HTTPS only".into())
}

/// ACME resources (RFC 8555 §7.1), each under its profile's directory.
fn acme_routes(state: AppState) -> Router<AppState> {
    use crate::acme::handlers as h;
    Router::new()
        .route("/acme/{profile}/directory", get(h::directory))
        .route(
            "/acme/{profile}/new-nonce",
            get(h::new_nonce).head(h::new_nonce),
        )
        .route("/acme/{profile}/new-account", post(h::new_account))
        .route("/acme/{profile}/account/{id}", post(h::account))
        .route(
            "/acme/{profile}/account/{id}/orders",
            post(h::account_orders),
        )
        .route("/acme/{profile}/key-change", post(h::key_change))
        .route("/acme/{profile}/new-order", post(h::new_order))
        .route("/acme/{profile}/order/{id}", post(h::order))
        .route("/acme/{profile}/order/{id}/finalize", post(h::finalize))
        .route("/acme/{profile}/authz/{id}", post(h::authorization))
        .route("/acme/{profile}/chall/{authz}/{kind}", post(h::challenge))
        .route("/acme/{profile}/cert/{serial}", post(h::certificate))
        .route(
            "/acme/{profile}/cert/{serial}/alt",
            post(h::alternate_certificate),
        )
        .route("/acme/{profile}/revoke-cert", post(h::revoke))
        .layer(axum::middleware::from_fn_with_state(state, h::headers))
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    // Healthy means the store answers; a wedged writer shows up here.
    match state.backing.store.flush().await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(
                header::RETRY_AFTER,
                crate::error::RETRY_UNAVAILABLE_SECS.to_string(),
            )],
            "store unavailable\n",
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn roots(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        state.ca.trust().roots_pem(),
    )
}

/// Cross certificates between the roots (empty until a root rotation), PEM.
async fn cross_certificates(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        state.ca.trust().cross_pem(),
    )
}

/// Issuer certificates in DER at the caIssuers URL the certificates carry.
async fn ca_certificate(
    State(state): State<AppState>,
    axum::extract::Path(file): axum::extract::Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let not_found = || ApiError::NotFound(format!("no issuer certificate {file}"));
    let id = file
        .strip_suffix(".crt")
        .and_then(|id| id.parse::<crate::ca::IssuerId>().ok())
        .ok_or_else(not_found)?;
    let issuers = state.ca.issuers();
    let issuer = issuers.get(&id).ok_or_else(not_found)?;
    Ok((
        [(header::CONTENT_TYPE, "application/pkix-cert")],
        issuer.cert_der().to_vec(),
    ))
}

/// The issuer's current CRL in DER, at the CRL distribution point the certificates carry.
async fn crl(
    State(state): State<AppState>,
    axum::extract::Path(file): axum::extract::Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let not_found = || ApiError::NotFound(format!("no CRL {file}"));
    let id = file
        .strip_suffix(".crl")
        .and_then(|id| id.parse::<crate::ca::IssuerId>().ok())
        .ok_or_else(not_found)?;
    let crl = state.crls.get(&id).await.map_err(|e| match e {
        crate::revocation::CrlError::UnknownIssuer(_) => not_found(),
        other => ApiError::internal(other),
    })?;
    Ok((
        [(header::CONTENT_TYPE, "application/pkix-crl")],
        crl.der.clone(),
    ))
}

/// `POST /ocsp` with an `application/ocsp-request` body (RFC 6960 appendix A.1).
async fn ocsp_post(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.split(';').next().map(str::trim) != Some("application/ocsp-request") {
        return ApiError::UnsupportedMediaType("OCSP requests are application/ocsp-request".into())
            .into_response();
    }
    ocsp(&state, &body, false).await
}

/// `GET /ocsp/<base64 of the DER request>` (RFC 5019 §5): cacheable by HTTP caches.
async fn ocsp_get(
    State(state): State<AppState>,
    axum::extract::Path(request): axum::extract::Path<String>,
) -> axum::response::Response {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let der = STANDARD
        .decode(&request)
        .or_else(|_| URL_SAFE_NO_PAD.decode(request.trim_end_matches('=')))
        .unwrap_or_default();
    ocsp(&state, &der, true).await
}

async fn ocsp(state: &AppState, der: &[u8], get: bool) -> axum::response::Response {
    match state.ocsp.respond(der).await {
        Ok(answer) => {
            let mut response = (
                [(header::CONTENT_TYPE, "application/ocsp-response")],
                answer.der,
            )
                .into_response();
            if let (true, Some(age)) = (get, answer.max_age)
                && let Ok(v) = format!(
                    "max-age={}, public, no-transform, must-revalidate",
                    age.as_secs()
                )
                .parse()
            {
                response.headers_mut().insert(header::CACHE_CONTROL, v);
            }
            response
        }
        // An OCSP client gets an OCSP answer, even for our failure (RFC 6960 §2.3).
        Err(e) => {
            tracing::error!(error = %crate::error::Chain(&e), "OCSP response could not be made");
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/ocsp-response")],
                e.to_response(),
            )
                .into_response()
        }
    }
}
