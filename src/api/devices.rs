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
use crate::ca::Ca;
use crate::ca::{IssuerId, Serial};
use crate::revocation::RevocationReason;
use crate::store::{Backing, CertQuery, CertStatus, DeviceId, Standing, Store};

#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ValidateBody {
    /// The client certificate: PEM, or base64 DER.
    pub certificate: String,
}

/// The verdict on a presented certificate.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Verdict {
    Good,
    Revoked,
    Expired,
    /// Signed by one of our issuers, but not a certificate we recorded.
    Unknown,
    /// Not signed by any of our issuers.
    NotOurs,
}

#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
pub(crate) struct ValidateView {
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
pub(crate) async fn validate(
    _: Can<Read>,
    State(ca): State<Arc<Ca>>,
    State(backing): State<Backing>,
    Json(body): Json<ValidateBody>,
) -> Result<axum::Json<ValidateView>, ApiError> {
    judge(&ca, &backing, &body.certificate)
        .await
        .map(axum::Json)
}

/// Most certificates one batch may ask about.
pub(crate) const MAX_BATCH: usize = 1000;

#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ValidateBatchBody {
    /// Client certificates, PEM or base64 DER: at most 1,000.
    pub certificates: Vec<String>,
}

/// One entry's answer: the verdict `/validate` gives, or why the entry is not a certificate.
#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum BatchAnswer {
    Verdict(ValidateView),
    Unreadable {
        /// What `/validate` would have answered with HTTP 400.
        error: String,
    },
}

#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
pub(crate) struct ValidateBatchView {
    /// One answer per certificate asked about, in the order asked.
    pub results: Vec<BatchAnswer>,
}

/// `POST /api/v1/validate/batch`: many certificates at once, as a device's DDM status report
/// (`security.certificate.list`) lists them. An entry that is not a certificate gets its reason
/// in place; the batch as a whole is refused only when it is too large.
#[utoipa::path(post, path = "/api/v1/validate/batch", tag = "devices",
    description = "Each certificate judged as /api/v1/validate does, answers in the order asked (scope read). At most 1,000 per batch.",
    request_body = ValidateBatchBody,
    responses((status = 200, body = ValidateBatchView), (status = 400, description = "More than 1,000 certificates")))]
pub(crate) async fn validate_batch(
    _: Can<Read>,
    State(ca): State<Arc<Ca>>,
    State(backing): State<Backing>,
    Json(body): Json<ValidateBatchBody>,
) -> Result<axum::Json<ValidateBatchView>, ApiError> {
    if body.certificates.len() > MAX_BATCH {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_BATCH} certificates per batch, not {}",
            body.certificates.len()
        )));
    }
    let mut results = Vec::with_capacity(body.certificates.len());
    for text in &body.certificates {
        results.push(match judge(&ca, &backing, text).await {
            Ok(verdict) => BatchAnswer::Verdict(verdict),
            Err(ApiError::BadRequest(error)) => BatchAnswer::Unreadable { error },
            Err(other) => return Err(other),
        });
    }
    Ok(axum::Json(ValidateBatchView { results }))
}

/// The verdict on one presented certificate; `BadRequest` when it is not one.
async fn judge(ca: &Ca, backing: &Backing, text: &str) -> Result<ValidateView, ApiError> {
    let der = certificate_der(text)?;
    let (rest, cert) = X509Certificate::from_der(&der)
        .map_err(|e| ApiError::BadRequest(format!("not an X.509 certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(ApiError::BadRequest(
            "trailing bytes after the certificate".into(),
        ));
    }
    let serial = Serial::from_bytes(cert.raw_serial()).ok();
    let known = match &serial {
        Some(serial) => backing.store.certificate_state(serial).await?,
        None => None,
    };
    // Byte for byte what we issued and recorded: ours, no signature to check. Otherwise the
    // signature tells a forgery under our name (unknown) from a stranger's (not-ours).
    let (Some(serial), Some(state)) = (
        serial,
        known.filter(|s| s.der_sha256 == crate::encoding::sha256(&der)),
    ) else {
        let issuers = ca.issuers();
        // Signature checks are CPU work: off the reactor (a batch may hold many strangers).
        let signer = tokio::task::spawn_blocking(move || {
            let (_, cert) = X509Certificate::from_der(&der).ok()?;
            issuers
                .iter()
                .find(|i| {
                    X509Certificate::from_der(i.cert_der()).is_ok_and(|(_, ca)| {
                        ca.subject() == cert.issuer()
                            && cert.verify_signature(Some(ca.public_key())).is_ok()
                    })
                })
                .map(|i| i.id().clone())
        })
        .await
        .map_err(ApiError::internal)?;
        return Ok(match signer {
            Some(issuer) => ValidateView {
                issuer: Some(issuer),
                ..ValidateView::verdict(Verdict::Unknown)
            },
            None => ValidateView::verdict(Verdict::NotOurs),
        });
    };
    let now = backing.clock.now();
    let (revoked_at, revocation_reason) = match state.status {
        CertStatus::Revoked { at, reason } => (Some(at), Some(reason)),
        CertStatus::Good => (None, None),
    };
    let status = match state.standing(now) {
        Standing::Good => Verdict::Good,
        Standing::Expired => Verdict::Expired,
        Standing::Revoked => Verdict::Revoked,
    };
    Ok(ValidateView {
        status,
        serial: Some(serial),
        issuer: Some(state.issuer),
        device: state.device,
        not_after: Some(state.not_after),
        revoked_at,
        revocation_reason,
    })
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
pub(crate) struct DeviceView {
    pub device: DeviceId,
    /// Its serial number and UDID, when the MDM registered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered: Option<crate::inventory::InventoryDevice>,
    /// Newest first.
    pub certificates: Vec<CertView>,
}

/// Every certificate of a device, newest first.
async fn device_certificates(
    store: &dyn Store,
    device: &DeviceId,
) -> Result<Vec<crate::store::CertRecord>, ApiError> {
    let mut out = store
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
pub(crate) async fn get_device(
    _: Can<Read>,
    State(backing): State<Backing>,
    Path(id): Path<DeviceId>,
) -> Result<axum::Json<DeviceView>, ApiError> {
    let records = device_certificates(backing.store.as_ref(), &id).await?;
    let registered = crate::inventory::device(&*backing.store, &id).await?;
    if records.is_empty() && registered.is_none() {
        return Err(ApiError::NotFound(format!(
            "device {id} is neither registered nor holds certificates"
        )));
    }
    let now = backing.clock.now();
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
pub(crate) struct DeviceRevokedView {
    pub device: DeviceId,
    pub revoked: Vec<Serial>,
}

/// `POST /api/v1/devices/{id}/revoke`: every certificate of the device that is still good
/// (on unenrolment, loss, theft).
#[utoipa::path(post, path = "/api/v1/devices/{id}/revoke", tag = "devices",
    description = "Revokes every still-good certificate of a device (scope revoke).",
    params(("id" = String, Path, description = "Device id")), request_body = RevokeBody,
    responses((status = 200, body = DeviceRevokedView), (status = 404, description = "No certificates for the device")))]
pub(crate) async fn revoke_device(
    _: Can<Revoke>,
    State(ca): State<Arc<Ca>>,
    State(backing): State<Backing>,
    Path(id): Path<DeviceId>,
    Json(body): Json<RevokeBody>,
) -> Result<axum::Json<DeviceRevokedView>, ApiError> {
    let records = device_certificates(backing.store.as_ref(), &id).await?;
    if records.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no certificates for device {id}"
        )));
    }
    let now = backing.clock.now();
    let query = CertQuery {
        status: Some(Standing::Good),
        now: Some(now),
        ..CertQuery::default()
    };
    let mut revoked = Vec::new();
    for rec in records.iter().filter(|r| query.matches(r)) {
        match ca.revoke(&rec.serial, body.reason, now).await {
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
