//! CA rotation for PKI operators: stage the next issuer of a line, activate it, retire the
//! old one. Admin token only (scope `manage`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::auth::{Can, Manage};
use super::extract::{JsonOrDefault, Path};
use super::views::IssuerView;
use crate::ca::Ca;
use crate::ca::rotation::Rotation;
use crate::ca::rotation::{Import, RotationError};
use crate::ca::{IssuerId, KeyFamily, KeySpec};
use crate::store::IssuerRecord;

/// `prepare` imports a next issuer signed offline when both are given.
#[derive(utoipa::ToSchema, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareBody {
    pub cert_pem: Option<String>,
    pub key_pem: Option<String>,
    /// A key pair already in the configured PKCS#11 token: `pkcs11:token=…;object=…`.
    pub pkcs11_key: Option<String>,
}

#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
pub struct ActivatedView {
    pub activated: IssuerView,
    pub retiring: IssuerView,
}

impl From<RotationError> for ApiError {
    fn from(e: RotationError) -> Self {
        match e {
            RotationError::UnknownIssuer(_) => Self::NotFound(e.to_string()),
            RotationError::BadImport(_) => Self::BadRequest(e.to_string()),
            RotationError::AlreadyStaged { .. }
            | RotationError::NothingStaged(_)
            | RotationError::NotRetiring { .. }
            | RotationError::StillValid { .. }
            | RotationError::RootKeyOffline
            | RotationError::RootSupersededHere
            | RotationError::Concurrent
            | RotationError::NotOnEveryNode { .. } => Self::Conflict(e.to_string()),
            RotationError::Store(e) => e.into(),
            // A token that refuses (wrong PIN, no such key) is the operator's to fix.
            RotationError::Ca(crate::ca::CaError::Key(_)) => Self::BadRequest(e.to_string()),
            RotationError::Ca(_) | RotationError::Io(_) => Self::internal(e),
        }
    }
}

fn view(r: &IssuerRecord) -> Result<IssuerView, ApiError> {
    IssuerView::from_record(r).map_err(ApiError::internal)
}

fn family(s: &str) -> Result<KeyFamily, ApiError> {
    s.parse().map_err(ApiError::NotFound)
}

/// `POST /api/v1/rotation/{family}/prepare`
#[utoipa::path(post, path = "/api/v1/rotation/{family}/prepare", tag = "issuers",
    description = "Stages the next issuer of a line: generated, imported, or for a key in the PKCS#11 token (admin token).",
    params(("family" = String, Path, description = "rsa or ecdsa")), request_body(content = Option<PrepareBody>),
    responses((status = 201, body = IssuerView), (status = 400, description = "Bad import"), (status = 409, description = "A next issuer is already staged")))]
pub(crate) async fn prepare(
    _: Can<Manage>,
    State(rotation): State<Arc<Rotation>>,
    Path(line): Path<String>,
    JsonOrDefault(body): JsonOrDefault<PrepareBody>,
) -> Result<(StatusCode, axum::Json<IssuerView>), ApiError> {
    let import = match (body.cert_pem, body.key_pem, body.pkcs11_key) {
        (Some(cert), Some(key), None) => Some(Import::Files {
            cert_pem: cert.into_bytes(),
            key_pem: key.into_bytes(),
        }),
        (None, None, Some(uri)) => Some(Import::Token(uri)),
        // No body: generate under the root.
        (None, None, None) => None,
        _ => {
            return Err(ApiError::BadRequest(
                "give cert_pem and key_pem (an issuer signed offline), or pkcs11_key (a key \
                 in the token), or nothing (generate)"
                    .into(),
            ));
        }
    };
    let record = rotation.prepare(family(&line)?, import).await?;
    Ok((StatusCode::CREATED, axum::Json(view(&record)?)))
}

/// `POST /api/v1/rotation/{family}/activate`
#[utoipa::path(post, path = "/api/v1/rotation/{family}/activate", tag = "issuers",
    params(("family" = String, Path, description = "rsa or ecdsa")),
    responses((status = 200, body = ActivatedView), (status = 409, description = "Nothing staged")))]
pub(crate) async fn activate(
    _: Can<Manage>,
    State(rotation): State<Arc<Rotation>>,
    Path(line): Path<String>,
) -> Result<axum::Json<ActivatedView>, ApiError> {
    let (activated, retiring) = rotation.activate(family(&line)?).await?;
    Ok(axum::Json(ActivatedView {
        activated: view(&activated)?,
        retiring: view(&retiring)?,
    }))
}

#[derive(utoipa::ToSchema, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootBody {
    /// p256, p384, rsa2048…; default: the current root's.
    pub key_type: Option<KeySpec>,
}

#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
pub struct RootView {
    pub sha256_fingerprint: String,
    pub root_pem: String,
    /// Both cross certificates: the new root under the old, the old under the new.
    pub cross_pem: String,
}

/// `POST /api/v1/rotation/root`
#[utoipa::path(post, path = "/api/v1/rotation/root", tag = "issuers",
    description = "A new root, cross-certified both ways with the current one (admin token).",
    request_body(content = Option<RootBody>),
    responses((status = 201, body = RootView), (status = 409, description = "The root key is offline")))]
pub(crate) async fn rotate_root(
    _: Can<Manage>,
    State(rotation): State<Arc<Rotation>>,
    State(ca): State<Arc<Ca>>,
    JsonOrDefault(body): JsonOrDefault<RootBody>,
) -> Result<(StatusCode, axum::Json<RootView>), ApiError> {
    let root = rotation.rotate_root(body.key_type).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(RootView {
            sha256_fingerprint: crate::encoding::fingerprint(&root),
            root_pem: crate::encoding::to_pem("CERTIFICATE", &root),
            cross_pem: ca.trust().cross_pem(),
        }),
    ))
}

/// `POST /api/v1/issuers/{id}/retire`
#[utoipa::path(post, path = "/api/v1/issuers/{id}/retire", tag = "issuers",
    params(("id" = String, Path, description = "Issuer id")),
    responses((status = 200, body = IssuerView), (status = 404, description = "No such issuer"), (status = 409, description = "Not retiring, or certificates still valid")))]
pub(crate) async fn retire(
    _: Can<Manage>,
    State(rotation): State<Arc<Rotation>>,
    Path(id): Path<IssuerId>,
) -> Result<axum::Json<IssuerView>, ApiError> {
    let record = rotation.retire(&id).await?;
    Ok(axum::Json(view(&record)?))
}
