//! What an MDM asks about its devices: is this client certificate still good, which
//! certificates does a device hold, and revoke them all (unenrolment).

use std::sync::Arc;

use axum::extract::State;
use base64::Engine;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::ApiError;
use super::auth::{Can, Read, Revoke};
use super::extract::{Json, Path};
use super::views::{CertView, RevokeBody};
use crate::app::AppState;
use crate::ca::{IssuerId, Serial};
use crate::revocation::RevocationReason;
use crate::store::{CertQuery, CertStatus, DeviceId, StatusFilter};

#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateBody {
    /// The client certificate: PEM, or base64 DER.
    pub certificate: String,
}

/// The verdict on a presented certificate.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Good,
    Revoked,
    Expired,
    /// Signed by one of our issuers, but not a certificate we recorded.
    Unknown,
    /// Not signed by any of our issuers.
    NotOurs,
}

#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
pub struct ValidateView {
    pub status: Verdict,
    pub serial: Option<Serial>,
    pub issuer: Option<IssuerId>,
    pub device: Option<DeviceId>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub not_after: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    pub revocation_reason: Option<RevocationReason>,
}

impl ValidateView {
    fn verdict(status: Verdict) -> Self {
        Self {
            status,
            serial: None,
            issuer: None,
            device: None,
            not_after: None,
            revoked_at: None,
            revocation_reason: None,
        }
    }
}

/// `POST /api/v1/validate`: what an MDM calls when a device connects with a client
/// certificate. The certificate must be byte for byte one we issued and recorded.
#[utoipa::path(post, path = "/api/v1/validate", tag = "devices",
    description = "Is this client certificate still good? What an MDM asks when a device connects (scope read).",
    request_body = ValidateBody,
    responses((status = 200, body = ValidateView), (status = 400, description = "Not a certificate")))]
pub async fn validate(
    _: Can<Read>,
    State(app): State<Arc<AppState>>,
    Json(body): Json<ValidateBody>,
) -> Result<axum::Json<ValidateView>, ApiError> {
    let der = certificate_der(&body.certificate)?;
    let (rest, cert) = X509Certificate::from_der(&der)
        .map_err(|e| ApiError::BadRequest(format!("not an X.509 certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(ApiError::BadRequest(
            "trailing bytes after the certificate".into(),
        ));
    }
    let serial = Serial::from_bytes(cert.raw_serial()).ok();
    let known = match &serial {
        Some(serial) => app.ca.store().certificate_state(serial).await?,
        None => None,
    };
    // Byte for byte what we issued and recorded: ours, no signature to check. Otherwise the
    // signature tells a forgery under our name (unknown) from a stranger's (not-ours).
    let (Some(serial), Some(state)) = (
        serial,
        known.filter(|s| s.der_sha256 == crate::ca::hierarchy::sha256(&der)),
    ) else {
        let issuers = app.ca.issuers();
        let issuer = issuers.iter().find(|i| {
            X509Certificate::from_der(i.cert_der()).is_ok_and(|(_, ca)| {
                ca.subject() == cert.issuer()
                    && cert.verify_signature(Some(ca.public_key())).is_ok()
            })
        });
        return Ok(axum::Json(match issuer {
            Some(issuer) => ValidateView {
                issuer: Some(issuer.id().clone()),
                ..ValidateView::verdict(Verdict::Unknown)
            },
            None => ValidateView::verdict(Verdict::NotOurs),
        }));
    };
    let now = app.ca.clock().now();
    let (status, revoked_at, revocation_reason) = match state.status {
        CertStatus::Revoked { at, reason } => (Verdict::Revoked, Some(at), Some(reason)),
        CertStatus::Good if state.is_expired(now) => (Verdict::Expired, None, None),
        CertStatus::Good => (Verdict::Good, None, None),
    };
    Ok(axum::Json(ValidateView {
        status,
        serial: Some(serial),
        issuer: Some(state.issuer),
        device: state.device,
        not_after: Some(state.not_after),
        revoked_at,
        revocation_reason,
    }))
}

/// PEM, or the base64 of DER.
fn certificate_der(text: &str) -> Result<Vec<u8>, ApiError> {
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        let (_, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes())
            .map_err(|e| ApiError::BadRequest(format!("unreadable PEM: {e}")))?;
        if pem.label != "CERTIFICATE" {
            return Err(ApiError::BadRequest(format!(
                "PEM holds a {}, not a CERTIFICATE",
                pem.label
            )));
        }
        return Ok(pem.contents);
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| ApiError::BadRequest("certificate is neither PEM nor base64 DER".into()))
}

#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
pub struct DeviceView {
    pub device: DeviceId,
    /// Its serial number and UDID, when the MDM registered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered: Option<crate::inventory::InventoryDevice>,
    /// Newest first.
    pub certificates: Vec<CertView>,
}

/// Every certificate of a device, newest first.
async fn device_certificates(
    state: &AppState,
    device: &DeviceId,
) -> Result<Vec<crate::store::CertRecord>, ApiError> {
    let mut out = state
        .ca
        .store()
        .all_certificates(CertQuery {
            device: Some(device.clone()),
            ..CertQuery::default()
        })
        .await?;
    out.sort_by_key(|r| std::cmp::Reverse(r.issued_at));
    Ok(out)
}

/// `GET /api/v1/devices/{id}`.
#[utoipa::path(get, path = "/api/v1/devices/{id}", tag = "devices",
    description = "A device's registration and certificates, newest first (scope read).",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = DeviceView), (status = 404, description = "Neither registered nor holding certificates")))]
pub async fn get_device(
    _: Can<Read>,
    State(state): State<Arc<AppState>>,
    Path(id): Path<DeviceId>,
) -> Result<axum::Json<DeviceView>, ApiError> {
    let records = device_certificates(&state, &id).await?;
    let registered = crate::inventory::device(&**state.ca.store(), &id).await?;
    if records.is_empty() && registered.is_none() {
        return Err(ApiError::NotFound(format!(
            "device {id} is neither registered nor holds certificates"
        )));
    }
    let now = state.ca.clock().now();
    Ok(axum::Json(DeviceView {
        registered,
        certificates: records
            .iter()
            .map(|r| CertView::new(r, now, false))
            .collect(),
        device: id,
    }))
}

#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
pub struct DeviceRevokedView {
    pub device: DeviceId,
    pub revoked: Vec<Serial>,
}

/// `POST /api/v1/devices/{id}/revoke`: every certificate of the device that is still good
/// (on unenrolment, loss, theft).
#[utoipa::path(post, path = "/api/v1/devices/{id}/revoke", tag = "devices",
    description = "Revokes every still-good certificate of a device (scope revoke).",
    params(("id" = String, Path, description = "Device id")), request_body = RevokeBody,
    responses((status = 200, body = DeviceRevokedView), (status = 404, description = "No certificates for the device")))]
pub async fn revoke_device(
    _: Can<Revoke>,
    State(state): State<Arc<AppState>>,
    Path(id): Path<DeviceId>,
    Json(body): Json<RevokeBody>,
) -> Result<axum::Json<DeviceRevokedView>, ApiError> {
    let records = device_certificates(&state, &id).await?;
    if records.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no certificates for device {id}"
        )));
    }
    let now = state.ca.clock().now();
    let query = CertQuery {
        status: Some(StatusFilter::Good),
        now: Some(now),
        ..CertQuery::default()
    };
    let mut revoked = Vec::new();
    for rec in records.iter().filter(|r| query.matches(r)) {
        match state.ca.revoke(&rec.serial, body.reason, now).await {
            Ok(r) => revoked.push(r.serial),
            // Revoked meanwhile by someone else: the goal is met.
            Err(crate::store::StoreError::AlreadyRevoked(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!(device = %id, count = revoked.len(), "device revoked");
    Ok(axum::Json(DeviceRevokedView {
        device: id,
        revoked,
    }))
}
