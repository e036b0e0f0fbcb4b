//! The MDM registers the devices it manages, so device-attest-01 profiles issue only to
//! them: `PUT /api/v1/devices/{id}`, `DELETE /api/v1/devices/{id}`, and `POST
//! /api/v1/devices` for a bulk import.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::auth::{Can, EnrollAdmin};
use super::extract::{Json, Path};
use crate::inventory::{self, InventoryDevice, InventoryError};
use crate::store::{Backing, DeviceId};

#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterBody {
    pub serial: Option<String>,
    pub udid: Option<String>,
}

#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportEntry {
    pub id: DeviceId,
    pub serial: Option<String>,
    pub udid: Option<String>,
}

/// At most this many devices per import request.
pub(crate) const MAX_IMPORT: usize = 1000;

#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportBody {
    pub devices: Vec<ImportEntry>,
}

#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
pub(crate) struct ImportFailure {
    pub id: DeviceId,
    pub error: String,
}

#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
pub(crate) struct ImportView {
    pub registered: usize,
    /// Devices not registered, each with why; the others are registered regardless.
    pub failed: Vec<ImportFailure>,
}

impl From<InventoryError> for ApiError {
    fn from(e: InventoryError) -> Self {
        match e {
            InventoryError::Invalid(m) => Self::BadRequest(m),
            e @ (InventoryError::Taken { .. } | InventoryError::Conflict) => {
                Self::Conflict(e.to_string())
            }
            InventoryError::Store(e) => e.into(),
        }
    }
}

/// `PUT /api/v1/devices/{id}`: 201 when new, 200 when its identifiers were replaced.
#[utoipa::path(put, path = "/api/v1/devices/{id}", tag = "devices",
    description = "Registers a device for attesting ACME profiles (scope enroll-admin).",
    params(("id" = String, Path, description = "Device id")), request_body = RegisterBody,
    responses((status = 201, body = InventoryDevice, description = "Registered"), (status = 200, body = InventoryDevice, description = "Replaced"),
        (status = 400, description = "No or malformed identifier"), (status = 409, description = "An identifier belongs to another device")))]
pub(crate) async fn register_device(
    _: Can<EnrollAdmin>,
    State(backing): State<Backing>,
    Path(id): Path<DeviceId>,
    Json(body): Json<RegisterBody>,
) -> Result<(StatusCode, axum::Json<InventoryDevice>), ApiError> {
    let store = &backing.store;
    let now = backing.clock.now();
    let created = inventory::register(&**store, &id, body.serial, body.udid, now).await?;
    let device = inventory::device(&**store, &id)
        .await?
        .ok_or_else(|| ApiError::Conflict("the device was removed meanwhile".into()))?;
    tracing::info!(device = %id, created, "device registered");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(device)))
}

/// `DELETE /api/v1/devices/{id}`: the device leaves the inventory (its certificates stay
/// as they are; revoke them with `POST /api/v1/devices/{id}/revoke`).
#[utoipa::path(delete, path = "/api/v1/devices/{id}", tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 204, description = "Removed from the inventory"), (status = 404, description = "Not registered")))]
pub(crate) async fn unregister_device(
    _: Can<EnrollAdmin>,
    State(backing): State<Backing>,
    Path(id): Path<DeviceId>,
) -> Result<StatusCode, ApiError> {
    if inventory::unregister(&*backing.store, &id).await? {
        tracing::info!(device = %id, "device unregistered");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("device {id} is not registered")))
    }
}

/// `POST /api/v1/devices`: registers many devices; each succeeds or fails on its own.
#[utoipa::path(post, path = "/api/v1/devices", tag = "devices",
    description = "Bulk registration; each device succeeds or fails on its own (scope enroll-admin).",
    request_body = ImportBody,
    responses((status = 200, body = ImportView), (status = 400, description = "More than 1000 devices or malformed JSON")))]
pub(crate) async fn import_devices(
    _: Can<EnrollAdmin>,
    State(backing): State<Backing>,
    Json(body): Json<ImportBody>,
) -> Result<axum::Json<ImportView>, ApiError> {
    if body.devices.len() > MAX_IMPORT {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_IMPORT} devices per import"
        )));
    }
    let store = &backing.store;
    let now = backing.clock.now();
    let mut view = ImportView {
        registered: 0,
        failed: Vec::new(),
    };
    for d in body.devices {
        match inventory::register(&**store, &d.id, d.serial, d.udid, now).await {
            Ok(_) => view.registered += 1,
            Err(InventoryError::Store(e)) => return Err(e.into()),
            Err(e) => view.failed.push(ImportFailure {
                id: d.id,
                error: e.to_string(),
            }),
        }
    }
    tracing::info!(
        registered = view.registered,
        failed = view.failed.len(),
        "devices imported"
    );
    Ok(axum::Json(view))
}
