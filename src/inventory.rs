//! The MDM's device inventory. An attestation proves a genuine device, not one of this
//! organisation's; the inventory says which devices are ours. The MDM registers each device
//! it manages (its serial number and UDID, under the MDM's own device id), or a validation
//! webhook answers for each device.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::store::{Collection, DeviceId, DocKind, DocWrite, Store, StoreError, Stored};
use crate::validator::{Validator, ValidatorError};

const DEVICES: Collection<InventoryDevice> = Collection::new(DocKind::InventoryDevice);
/// Upper-cased serial number or UDID → the device registered with it: keeps them unique.
/// Entries are written once, never updated (so always at version 1).
const IDENTIFIERS: Collection<DeviceId> = Collection::new(DocKind::InventoryIdentifier);

/// A registered device.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InventoryDevice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udid: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub registered_at: OffsetDateTime,
}

impl InventoryDevice {
    fn identifiers(&self) -> impl Iterator<Item = String> + '_ {
        self.serial.iter().chain(&self.udid).map(|v| index_key(v))
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum InventoryError {
    #[error("{0}")]
    Invalid(String),
    #[error("{identifier} is already registered to device {device}")]
    Taken { identifier: String, device: String },
    #[error("the device changed meanwhile; retry")]
    Conflict,
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for InventoryError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { .. } => Self::Conflict,
            e => Self::Store(e),
        }
    }
}

/// Serial numbers and UDIDs compare without regard to case.
fn index_key(identifier: &str) -> String {
    identifier.to_ascii_uppercase()
}

fn check_identifier(what: &str, v: &str) -> Result<(), InventoryError> {
    if (1..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        Ok(())
    } else {
        Err(InventoryError::Invalid(format!(
            "{what} `{v}` is not 1-64 letters, digits and dashes"
        )))
    }
}

/// Registers `id` with its serial number and/or UDID, replacing what it had; returns whether
/// it is new. An identifier registered to another device is refused.
pub(crate) async fn register(
    store: &dyn Store,
    id: &DeviceId,
    serial: Option<String>,
    udid: Option<String>,
    now: OffsetDateTime,
) -> Result<bool, InventoryError> {
    if serial.is_none() && udid.is_none() {
        return Err(InventoryError::Invalid(
            "a device needs a serial number, a UDID, or both".into(),
        ));
    }
    if let Some(s) = &serial {
        check_identifier("serial", s)?;
    }
    if let Some(u) = &udid {
        check_identifier("udid", u)?;
    }
    let device = InventoryDevice {
        serial,
        udid,
        registered_at: crate::clock::whole_seconds(now),
    };
    let current = device_doc(store, id).await?;
    let old: Vec<String> = current
        .as_ref()
        .map(|d| d.value.identifiers().collect())
        .unwrap_or_default();
    let new: Vec<String> = device.identifiers().collect();
    // Readers never find an index entry naming what the device no longer is: stale entries
    // go first, then the device, then the new entries.
    let mut writes: Vec<DocWrite> = old
        .iter()
        .filter(|k| !new.contains(k))
        .map(|k| IDENTIFIERS.delete(k, 1))
        .collect();
    writes.push(DEVICES.put(id.as_str(), current.as_ref().map(|d| d.version), &device));
    for key in &new {
        if old.contains(key) {
            continue;
        }
        if let Some(holder) = IDENTIFIERS.get(store, key).await? {
            return Err(InventoryError::Taken {
                identifier: key.clone(),
                device: holder.value.as_str().to_owned(),
            });
        }
        writes.push(IDENTIFIERS.create(key, id));
    }
    store.write_docs(writes).await?;
    Ok(current.is_none())
}

/// Removes a device from the inventory; returns whether it was there.
pub(crate) async fn unregister(store: &dyn Store, id: &DeviceId) -> Result<bool, InventoryError> {
    let Some(current) = device_doc(store, id).await? else {
        return Ok(false);
    };
    // The index entries naming the device go first.
    let mut writes: Vec<DocWrite> = current
        .value
        .identifiers()
        .map(|k| IDENTIFIERS.delete(&k, 1))
        .collect();
    writes.push(DEVICES.delete(id.as_str(), current.version));
    store.write_docs(writes).await?;
    Ok(true)
}

pub(crate) async fn device(
    store: &dyn Store,
    id: &DeviceId,
) -> Result<Option<InventoryDevice>, StoreError> {
    Ok(device_doc(store, id).await?.map(|d| d.value))
}

async fn device_doc(
    store: &dyn Store,
    id: &DeviceId,
) -> Result<Option<Stored<InventoryDevice>>, StoreError> {
    DEVICES.get(store, id.as_str()).await
}

/// Why a device was not admitted (the log says which; the client learns only that it was not).
#[derive(Debug, thiserror::Error)]
pub enum NotAdmitted {
    #[error("{0} is not a registered device")]
    NotRegistered(String),
    #[error(transparent)]
    Validator(#[from] ValidatorError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the validation webhook is told about a device.
#[derive(Serialize)]
struct DeviceQuestion<'a> {
    profile: &'a str,
    identifier_type: &'static str,
    identifier: &'a str,
    account: &'a str,
}

/// How a device profile decides that a device is ours.
pub enum Gate {
    Registered(Arc<dyn Store>),
    Webhook(Validator),
    Open,
}

impl Gate {
    /// Admits the device with this serial number or UDID; returns its device id.
    pub async fn admit(
        &self,
        profile: &str,
        account: &str,
        identifier: &str,
    ) -> Result<DeviceId, NotAdmitted> {
        let fallback = || {
            DeviceId::try_from(identifier.to_owned())
                .map_err(|_| NotAdmitted::NotRegistered(identifier.into()))
        };
        match self {
            Self::Open => fallback(),
            Self::Registered(store) => {
                let holder = IDENTIFIERS
                    .get(store.as_ref(), &index_key(identifier))
                    .await?
                    .ok_or_else(|| NotAdmitted::NotRegistered(identifier.into()))?;
                Ok(holder.value)
            }
            Self::Webhook(validator) => {
                let question = DeviceQuestion {
                    profile,
                    identifier_type: "permanent-identifier",
                    identifier,
                    account,
                };
                match validator.approve(&question).await?.device {
                    Some(id) => Ok(id),
                    None => fallback(),
                }
            }
        }
    }
}
