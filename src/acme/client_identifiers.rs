//! One-time ClientIdentifiers (Apple's `com.apple.security.acme` / `com.apple.credential.acme`
//! `ClientIdentifier`): the MDM mints one for a device and puts it in the payload; the device
//! orders with it as its permanent-identifier. It names the device without revealing its
//! serial number, works once, and expires. The store knows it only by its SHA-256.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::repo::CLIENT_IDENTIFIERS;
use crate::store::{DeviceId, DocWrite, Store, StoreError, Stored};

/// Longest a ClientIdentifier may live: a payload not acted on within a month is stale.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// What a ClientIdentifier stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientIdentifier {
    pub device: DeviceId,
    /// The ACME profile it may be ordered from.
    pub profile: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// Why a ClientIdentifier cannot be used now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("no such ClientIdentifier, or it was used already")]
    UnknownOrUsed,
    #[error("the ClientIdentifier expired at {0}")]
    Expired(OffsetDateTime),
    #[error("the ClientIdentifier was minted for profile `{0}`")]
    OtherProfile(String),
}

/// The store's key for a ClientIdentifier: hex SHA-256, so the store never holds it.
pub fn key_of(value: &str) -> String {
    hex::encode(crate::encoding::sha256(value.as_bytes()))
}

/// A fresh ClientIdentifier (192 random bits in upper-case hex: letters and digits, as a
/// permanent-identifier value is here) and the write that stores it.
pub fn mint(record: &ClientIdentifier) -> (String, DocWrite) {
    let mut bytes = [0u8; 24];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let value = hex::encode_upper(bytes);
    let write = CLIENT_IDENTIFIERS.create(&key_of(&value), record);
    (value, write)
}

/// The live ClientIdentifier `value` names for `profile`, with its version (to use it up).
pub async fn usable(
    store: &dyn Store,
    value: &str,
    profile: &str,
    now: OffsetDateTime,
) -> Result<Result<Stored<ClientIdentifier>, Unusable>, StoreError> {
    let Some(stored) = CLIENT_IDENTIFIERS.get(store, &key_of(value)).await? else {
        return Ok(Err(Unusable::UnknownOrUsed));
    };
    Ok(if stored.value.profile != profile {
        Err(Unusable::OtherProfile(stored.value.profile))
    } else if stored.value.expires_at <= now {
        Err(Unusable::Expired(stored.value.expires_at))
    } else {
        Ok(stored)
    })
}

/// The write that uses a ClientIdentifier up, if it is still at `version`.
pub fn use_up(key: &str, version: u64) -> DocWrite {
    CLIENT_IDENTIFIERS.delete(key, version)
}

/// Why a ClientIdentifier is not minted.
#[derive(Debug, thiserror::Error)]
pub enum MintRefusal {
    #[error("no such ACME profile")]
    NoProfile,
    #[error(
        "profile `{0}` names devices by serial number or UDID, not by ClientIdentifier (its permanent_identifier is not \"client-identifier\")"
    )]
    NotTaken(String),
    #[error("ttl must be between 1s and 30days")]
    Ttl,
    #[error(
        "device {0} is not registered with a serial number or UDID (PUT /api/v1/devices/{0}): the attestation could not be checked against it"
    )]
    Unregistered(DeviceId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Deletes ClientIdentifiers that expired before `now` (minted per device, they would
/// otherwise pile up); returns how many went. One changed meanwhile is left for next time.
pub async fn purge_expired(store: &dyn Store, now: OffsetDateTime) -> Result<usize, StoreError> {
    let mut pages = CLIENT_IDENTIFIERS.pages(store);
    let mut purged = 0;
    while let Some(page) = pages.next().await? {
        for (key, minted) in page {
            let Ok(Stored { value, version }) = minted else {
                continue;
            };
            if value.expires_at > now {
                continue;
            }
            match store.write_docs(vec![use_up(&key, version)]).await {
                Ok(()) => purged += 1,
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(purged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    #[tokio::test]
    async fn only_expired_client_identifiers_are_purged() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let now = OffsetDateTime::now_utc();
        let minted = |minutes: i64| ClientIdentifier {
            device: "dev-1".parse().unwrap(),
            profile: "device".into(),
            expires_at: now + time::Duration::minutes(minutes),
        };
        let (old, old_write) = mint(&minted(-1));
        let (live, live_write) = mint(&minted(10));
        store.write_docs(vec![old_write, live_write]).await.unwrap();
        assert_eq!(purge_expired(&store, now).await.unwrap(), 1);
        assert_eq!(
            usable(&store, &old, "device", now)
                .await
                .unwrap()
                .map(|s| s.value),
            Err(Unusable::UnknownOrUsed)
        );
        assert!(usable(&store, &live, "device", now).await.unwrap().is_ok());
        assert_eq!(
            usable(&store, &live, "other", now)
                .await
                .unwrap()
                .map(|s| s.value),
            Err(Unusable::OtherProfile("device".into()))
        );
    }
}
