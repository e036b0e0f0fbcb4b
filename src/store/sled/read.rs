//! Reads of certificates and listings, and the indexes built on open for older databases.

use super::*;

pub(super) fn get_cert(certs: &Tree, serial: &Serial) -> Result<Option<CertRecord>, StoreError> {
    certs
        .get(serial.as_bytes())
        .map_err(backend)?
        .map(|bytes| decode("certs", &bytes))
        .transpose()
}

pub(super) fn list_certs(t: &Trees, q: &CertQuery) -> Result<Page<CertRecord>, StoreError> {
    let limit = q.limit.clamp(1, MAX_PAGE);
    // Walk the narrowest index; every candidate is then checked against the whole query.
    let revoked_only = matches!(q.status, Some(Standing::Revoked));
    let (index, prefix) = match (&q.device, &q.issuer) {
        (Some(d), _) => (&t.by_device, index_key(d.as_str(), &[])),
        (None, Some(i)) if revoked_only => (&t.by_revoked, index_key(i.as_str(), &[])),
        (None, Some(i)) => (&t.by_issuer, index_key(i.as_str(), &[])),
        (None, None) => (&t.certs, Vec::new()),
    };
    let start = match &q.after {
        Some(after) => Bound::Excluded([prefix.as_slice(), after.as_bytes()].concat()),
        None => Bound::Included(prefix.clone()),
    };
    let mut items = Vec::new();
    let mut more = false;
    for kv in index.range((start, Bound::Unbounded)) {
        let (key, value) = kv.map_err(backend)?;
        if !key.starts_with(&prefix) {
            break;
        }
        let rec: CertRecord = if prefix.is_empty() {
            decode("certs", &value)?
        } else {
            let serial =
                Serial::from_bytes(&key[prefix.len()..]).map_err(|e| StoreError::Corrupt {
                    tree: "index",
                    message: e.to_string(),
                })?;
            get_cert(&t.certs, &serial)?.ok_or_else(|| StoreError::Corrupt {
                tree: "index",
                message: format!("index names missing certificate {serial}"),
            })?
        };
        if q.matches(&rec) {
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(rec);
        }
    }
    let next = more
        .then(|| items.last().map(|r| r.serial.clone()))
        .flatten();
    Ok(Page { items, next })
}

/// Expiry index key: notAfter in seconds (sign bit flipped, so byte order is time order),
/// then the serial.
pub(super) fn expiry_key(rec: &CertRecord) -> Vec<u8> {
    let secs = rec.not_after.unix_timestamp() as u64 ^ (1 << 63);
    [&secs.to_be_bytes()[..], rec.serial.as_bytes()].concat()
}

/// Databases written before the expiry index existed get it built once, on open.
pub(super) fn backfill_expiry(t: &Trees) -> Result<(), StoreError> {
    if !t.by_expiry.is_empty() || t.certs.is_empty() {
        return Ok(());
    }
    for kv in t.certs.iter() {
        let rec: CertRecord = decode("certs", &kv.map_err(backend)?.1)?;
        if rec.status == CertStatus::Good {
            t.by_expiry.insert(expiry_key(&rec), &[]).map_err(backend)?;
        }
    }
    t.by_expiry.flush().map_err(backend)?;
    Ok(())
}

/// A `by_revoked` value (the serial is in the key).
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct RevokedValue {
    #[serde(with = "time::serde::rfc3339")]
    pub(super) at: OffsetDateTime,
    pub(super) reason: RevocationReason,
    #[serde(with = "time::serde::rfc3339")]
    pub(super) not_after: OffsetDateTime,
}

impl RevokedValue {
    pub(super) fn of(rec: &CertRecord) -> Self {
        let (at, reason) = match rec.status {
            CertStatus::Revoked { at, reason } => (at, reason),
            CertStatus::Good => (rec.issued_at, RevocationReason::Unspecified),
        };
        Self {
            at,
            reason,
            not_after: rec.not_after,
        }
    }
}

/// Builds `by_revoked` once for databases written before it existed.
pub(super) fn backfill_revoked(t: &Trees) -> Result<(), StoreError> {
    if t.by_revoked
        .contains_key(REVOKED_INDEXED)
        .map_err(backend)?
    {
        return Ok(());
    }
    for kv in t.certs.iter() {
        let rec: CertRecord = decode("certs", &kv.map_err(backend)?.1)?;
        if rec.status != CertStatus::Good {
            t.by_revoked
                .insert(
                    index_key(rec.issuer.as_str(), rec.serial.as_bytes()),
                    encode(&RevokedValue::of(&rec)),
                )
                .map_err(backend)?;
        }
    }
    t.by_revoked.insert(REVOKED_INDEXED, &[]).map_err(backend)?;
    t.by_revoked.flush().map_err(backend)?;
    Ok(())
}

/// Databases written before `by_expiring` existed get it built once, on open: every good
/// certificate that no other renews.
pub(super) fn backfill_expiring(t: &Trees) -> Result<(), StoreError> {
    if t.by_expiring
        .contains_key(EXPIRING_INDEXED)
        .map_err(backend)?
    {
        return Ok(());
    }
    let mut renewed = std::collections::HashSet::new();
    let mut good = Vec::new();
    for kv in t.certs.iter() {
        let rec: CertRecord = decode("certs", &kv.map_err(backend)?.1)?;
        if let Some(old) = &rec.replaces {
            renewed.insert(old.clone());
        }
        if rec.status == CertStatus::Good {
            good.push((rec.serial.clone(), expiry_key(&rec)));
        }
    }
    for (serial, key) in good {
        if !renewed.contains(&serial) {
            t.by_expiring.insert(key, &[]).map_err(backend)?;
        }
    }
    t.by_expiring
        .insert(EXPIRING_INDEXED, &[])
        .map_err(backend)?;
    t.by_expiring.flush().map_err(backend)?;
    Ok(())
}
