//! Certificates: issue (operator), list, show, revoke.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;

use super::ApiError;
use super::auth::{Can, EnrollAdmin, Read, Revoke};
use super::extract::{Json, Path, Query};
use super::views::{CertPage, CertView, IssueBody, IssuedView, RevokeBody};
use crate::ca::Ca;
use crate::ca::{IssueRequest, IssuerId, Serial};
use crate::csr::Csr;
use crate::encoding::to_pem;
use crate::policy::Template;
use crate::store::{Backing, CertQuery, DeviceId, Protocol, Standing};

#[utoipa::path(post, path = "/api/v1/certificates", tag = "certificates",
    description = "Operator issuance from a PKCS#10 request (scope enroll-admin).",
    request_body = IssueBody,
    responses((status = 201, body = IssuedView), (status = 400, description = "Bad CSR or request"),
        (status = 401, description = "No valid token"), (status = 403, description = "Missing scope or policy refusal")))]
pub(crate) async fn issue_certificate(
    _: Can<EnrollAdmin>,
    State(ca): State<Arc<Ca>>,
    State(backing): State<Backing>,
    State(template): State<Arc<Template>>,
    Json(body): Json<IssueBody>,
) -> Result<impl IntoResponse, ApiError> {
    let csr = Csr::from_pem(&body.csr)?;
    let issued = ca
        .issue(IssueRequest {
            device: body.device,
            ..IssueRequest::new(csr, template.clone(), body.issuer, Protocol::Admin)
        })
        .await?;
    let chain_pem = issued
        .certificates()
        .map(|der| to_pem("CERTIFICATE", der))
        .collect();
    let location = format!("/api/v1/certificates/{}", issued.record.serial);
    let view = IssuedView {
        certificate: CertView::new(&issued.record, backing.clock.now(), true),
        chain_pem,
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(view),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    device: Option<String>,
    issuer: Option<String>,
    status: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/certificates", tag = "certificates",
    description = "Certificates, paged by serial (scope read).",
    params(("device" = Option<String>, Query, description = "Only this device's"),
        ("issuer" = Option<String>, Query, description = "Only this issuer's"),
        ("status" = Option<String>, Query, description = "good, revoked or expired"),
        ("after" = Option<String>, Query, description = "Continue after this serial (the previous page's `next`)"),
        ("limit" = Option<usize>, Query, description = "Page size (default 100, at most 1000)")),
    responses((status = 200, body = CertPage), (status = 400, description = "Bad filter"), (status = 401, description = "No valid token")))]
pub(crate) async fn list_certificates(
    _: Can<Read>,
    State(backing): State<Backing>,
    Query(p): Query<ListParams>,
) -> Result<axum::Json<CertPage>, ApiError> {
    let bad = |what: &str, e: String| ApiError::BadRequest(format!("{what}: {e}"));
    let now = backing.clock.now();
    let query = CertQuery {
        device: p
            .device
            .map(|d| d.parse::<DeviceId>())
            .transpose()
            .map_err(|e| bad("device", e))?,
        issuer: p
            .issuer
            .map(|i| i.parse::<IssuerId>())
            .transpose()
            .map_err(|e| bad("issuer", e))?,
        status: p
            .status
            .map(|s| s.parse::<Standing>())
            .transpose()
            .map_err(|e| bad("status", e))?,
        after: p
            .after
            .map(|s| s.parse::<Serial>())
            .transpose()
            .map_err(|e| bad("after", e.to_string()))?,
        limit: p.limit.unwrap_or(100),
        now: Some(now),
    };
    let page = backing.store.certificates(query).await?;
    Ok(axum::Json(CertPage::new(&page, now)))
}

fn parse_serial(s: &str) -> Result<Serial, ApiError> {
    s.parse()
        .map_err(|e| ApiError::BadRequest(format!("serial `{s}`: {e}")))
}

#[utoipa::path(get, path = "/api/v1/certificates/{serial}", tag = "certificates",
    params(("serial" = String, Path, description = "Serial number, hex")),
    responses((status = 200, body = CertView), (status = 404, description = "No such certificate"), (status = 401, description = "No valid token")))]
pub(crate) async fn get_certificate(
    _: Can<Read>,
    State(backing): State<Backing>,
    Path(serial): Path<String>,
) -> Result<axum::Json<CertView>, ApiError> {
    let serial = parse_serial(&serial)?;
    let rec = backing
        .store
        .certificate(&serial)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no certificate with serial {serial}")))?;
    Ok(axum::Json(CertView::new(&rec, backing.clock.now(), true)))
}

#[utoipa::path(post, path = "/api/v1/certificates/{serial}/revoke", tag = "certificates",
    description = "Revokes a certificate (scope revoke).",
    params(("serial" = String, Path, description = "Serial number, hex")), request_body = RevokeBody,
    responses((status = 200, body = CertView), (status = 404, description = "No such certificate"),
        (status = 409, description = "Already revoked"), (status = 400, description = "Unknown reason")))]
pub(crate) async fn revoke_certificate(
    _: Can<Revoke>,
    State(ca): State<Arc<Ca>>,
    State(backing): State<Backing>,
    Path(serial): Path<String>,
    Json(body): Json<RevokeBody>,
) -> Result<axum::Json<CertView>, ApiError> {
    let serial = parse_serial(&serial)?;
    let now = backing.clock.now();
    let rec = ca.revoke(&serial, body.reason, now).await?;
    tracing::info!(serial = %serial, reason = %body.reason, "revoked");
    Ok(axum::Json(CertView::new(&rec, now, false)))
}
