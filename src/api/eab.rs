//! External Account Binding keys for ACME profiles that require them (RFC 8555 §7.3.4).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::auth::{Can, EnrollAdmin};
use super::extract::Json;
use crate::acme::AcmeService;

#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EabBody {
    pub profile: String,
}

/// Shown once: the MAC key is not retrievable afterwards.
#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
pub struct EabView {
    pub profile: String,
    pub directory: String,
    pub kid: String,
    /// base64url, as ACME clients take it (`--eab-hmac-key`, `--hmac`).
    pub hmac_key: String,
}

#[utoipa::path(post, path = "/api/v1/acme/eab-keys", tag = "enrolment",
    description = "Mints an ACME External Account Binding key (scope enroll-admin).",
    request_body = EabBody,
    responses((status = 201, body = EabView), (status = 404, description = "No such profile")))]
pub(crate) async fn create_eab_key(
    _: Can<EnrollAdmin>,
    State(acme): State<Arc<AcmeService>>,
    Json(body): Json<EabBody>,
) -> Result<(StatusCode, axum::Json<EabView>), ApiError> {
    let key = acme.mint_eab_key(&body.profile).await.map_err(|e| {
        if e.http_status() == 404 {
            ApiError::NotFound(format!("no ACME profile `{}`", body.profile))
        } else {
            ApiError::internal(e)
        }
    })?;
    Ok((
        StatusCode::CREATED,
        axum::Json(EabView {
            directory: acme.url(&body.profile, "directory"),
            profile: body.profile,
            kid: key.kid,
            hmac_key: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.hmac_key),
        }),
    ))
}

#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientIdentifierBody {
    /// The device (as registered with `PUT /api/v1/devices/{id}`) it is minted for.
    pub device: crate::store::DeviceId,
    /// The ACME profile it may be ordered from (default `device`); its
    /// `permanent_identifier` must be `client-identifier`.
    #[serde(default = "device_profile")]
    pub profile: String,
    /// How long it stays usable (default 7 days, at most 30 days), e.g. `1day`.
    #[serde(default, with = "humantime_serde")]
    #[schema(value_type = Option<String>)]
    pub ttl: Option<std::time::Duration>,
}

fn device_profile() -> String {
    "device".into()
}

/// Shown once: the store keeps only its hash.
#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
pub struct ClientIdentifierView {
    /// The payload's `ClientIdentifier`: what the device orders as its permanent-identifier.
    pub client_identifier: String,
    pub device: crate::store::DeviceId,
    pub profile: String,
    pub directory: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: time::OffsetDateTime,
}

#[utoipa::path(post, path = "/api/v1/acme/client-identifiers", tag = "enrolment",
    description = "Mints a one-time ClientIdentifier for a registered device, for an ACME profile that takes them (scope enroll-admin).",
    request_body = ClientIdentifierBody,
    responses((status = 201, body = ClientIdentifierView),
        (status = 400, description = "The profile does not take ClientIdentifiers, or the ttl is out of range"),
        (status = 404, description = "No such profile"),
        (status = 409, description = "The device is not registered with a serial number or UDID")))]
pub(crate) async fn create_client_identifier(
    _: Can<EnrollAdmin>,
    State(acme): State<Arc<AcmeService>>,
    Json(body): Json<ClientIdentifierBody>,
) -> Result<(StatusCode, axum::Json<ClientIdentifierView>), ApiError> {
    use crate::acme::client_identifiers::MintRefusal;
    let ttl = body.ttl.unwrap_or(DEFAULT_CLIENT_IDENTIFIER_TTL);
    let (value, minted) = acme
        .mint_client_identifier(&body.profile, &body.device, ttl)
        .await
        .map_err(|e| match e {
            MintRefusal::NoProfile => {
                ApiError::NotFound(format!("no ACME profile `{}`", body.profile))
            }
            MintRefusal::Store(e) => ApiError::from(e),
            refusal @ MintRefusal::Unregistered(_) => ApiError::Conflict(refusal.to_string()),
            refusal => ApiError::BadRequest(refusal.to_string()),
        })?;
    Ok((
        StatusCode::CREATED,
        axum::Json(ClientIdentifierView {
            client_identifier: value,
            directory: acme.url(&minted.profile, "directory"),
            device: minted.device,
            profile: minted.profile,
            expires_at: minted.expires_at,
        }),
    ))
}

/// A payload is usually acted on within minutes; a week covers a device that is off.
const DEFAULT_CLIENT_IDENTIFIER_TTL: std::time::Duration =
    std::time::Duration::from_secs(7 * 86_400);
