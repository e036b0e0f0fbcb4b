//! External Account Binding keys for ACME profiles that require them (RFC 8555 §7.3.4).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::auth::{Can, EnrollAdmin};
use super::extract::Json;
use crate::app::AppState;

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
pub async fn create_eab_key(
    _: Can<EnrollAdmin>,
    State(state): State<Arc<AppState>>,
    Json(body): Json<EabBody>,
) -> Result<(StatusCode, axum::Json<EabView>), ApiError> {
    let key = state.acme.mint_eab_key(&body.profile).await.map_err(|e| {
        if e.http_status() == 404 {
            ApiError::NotFound(format!("no ACME profile `{}`", body.profile))
        } else {
            ApiError::Internal(e.to_string())
        }
    })?;
    Ok((
        StatusCode::CREATED,
        axum::Json(EabView {
            directory: state.acme.url(&body.profile, "directory"),
            profile: body.profile,
            kid: key.kid,
            hmac_key: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.hmac_key),
        }),
    ))
}
