//! CRLs (RFC 5280 §5), one per issuer, at the URL every certificate carries. A CRL is signed
//! on demand and then served from memory until a revocation of that issuer's certificates
//! makes it stale, or half its validity has passed; concurrent requests for a stale CRL
//! wait for one signing instead of each starting their own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use time::OffsetDateTime;

use super::RevocationReason;
use crate::ca::{Ca, IssuerId};
use crate::error::{Cause, cause};
use crate::store::{Backing, Collection, DocKind, StoreError};

/// Issuer id → the last CRL number it signed (CRL numbers only ever grow).
const CRL_NUMBERS: Collection<u64> = Collection::new(DocKind::CrlNumber);

#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    #[error("no issuer {0}")]
    UnknownIssuer(IssuerId),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signing the CRL failed")]
    Sign(#[source] Cause),
}

/// A signed CRL and what it was made from.
#[derive(Debug)]
pub struct Crl {
    pub der: Vec<u8>,
    pub number: u64,
    pub this_update: OffsetDateTime,
    pub next_update: OffsetDateTime,
    /// `Ca::revocation_count` when the revoked list was read.
    revocations: u64,
}

pub struct Crls {
    ca: Arc<Ca>,
    backing: Backing,
    lifetime: Duration,
    cache: Mutex<HashMap<IssuerId, Arc<Crl>>>,
    /// One signing at a time; whoever waited finds the fresh CRL in the cache.
    signing: tokio::sync::Mutex<()>,
}

impl Crls {
    /// `lifetime` is the span from thisUpdate to nextUpdate.
    pub fn new((ca, backing): (Arc<Ca>, Backing), lifetime: Duration) -> Self {
        Self {
            ca,
            backing,
            lifetime,
            cache: Mutex::default(),
            signing: tokio::sync::Mutex::new(()),
        }
    }

    /// The current CRL of `issuer`, signed now if the cached one is stale.
    pub async fn get(&self, issuer: &IssuerId) -> Result<Arc<Crl>, CrlError> {
        if let Some(crl) = self.fresh(issuer) {
            return Ok(crl);
        }
        let _one = self.signing.lock().await;
        if let Some(crl) = self.fresh(issuer) {
            return Ok(crl);
        }
        let crl = Arc::new(self.sign(issuer).await?);
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(issuer.clone(), crl.clone());
        Ok(crl)
    }

    fn fresh(&self, issuer: &IssuerId) -> Option<Arc<Crl>> {
        let crl = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(issuer)?
            .clone();
        let refresh_at = crl.this_update + (crl.next_update - crl.this_update) / 2;
        let current = crl.revocations == self.ca.revocation_count(issuer)
            && self.backing.clock.now() < refresh_at;
        current.then_some(crl)
    }

    async fn sign(&self, id: &IssuerId) -> Result<Crl, CrlError> {
        let issuers = self.ca.issuers();
        let issuer = issuers
            .get(id)
            .ok_or_else(|| CrlError::UnknownIssuer(id.clone()))?
            .clone();
        // Counted before reading: a revocation that lands meanwhile makes this CRL stale.
        let revocations = self.ca.revocation_count(id);
        let now = self.backing.clock.now_seconds();
        let revoked = self.revoked(id, now).await?;
        let number = self.next_number(id).await?;
        let this_update = now;
        let next_update = now + self.lifetime;
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let der = tokio::task::spawn_blocking(move || issuer.sign_crl(&params))
            .await
            .map_err(|e| CrlError::Sign(cause(e)))?
            .map_err(|e| CrlError::Sign(cause(e)))?;
        tracing::info!(issuer = %id, number, "CRL signed");
        Ok(Crl {
            der,
            number,
            this_update,
            next_update,
            revocations,
        })
    }

    /// The issuer's revoked certificates that have not expired (an expired certificate
    /// needs no CRL entry, RFC 5280 §3.3).
    async fn revoked(
        &self,
        id: &IssuerId,
        now: OffsetDateTime,
    ) -> Result<Vec<RevokedCertParams>, CrlError> {
        let revoked = self.backing.store.revoked(id).await?;
        Ok(revoked
            .iter()
            .filter(|r| r.not_after > now)
            .map(|r| RevokedCertParams {
                serial_number: SerialNumber::from_slice(r.serial.as_bytes()),
                revocation_time: r.at,
                reason_code: Some(reason_code(r.reason)),
                invalidity_date: None,
            })
            .collect())
    }

    /// The next CRL number for `id`, durably, so numbers keep growing across restarts.
    async fn next_number(&self, id: &IssuerId) -> Result<u64, StoreError> {
        let next = CRL_NUMBERS
            .update(self.backing.store.as_ref(), id.as_str(), |last| {
                Ok::<_, StoreError>(Some(last.map_or(1, |n| n + 1)))
            })
            .await?;
        Ok(next.expect("the change always writes"))
    }
}

fn reason_code(reason: RevocationReason) -> rcgen::RevocationReason {
    use RevocationReason as R;
    use rcgen::RevocationReason as C;
    match reason {
        R::Unspecified => C::Unspecified,
        R::KeyCompromise => C::KeyCompromise,
        R::CaCompromise => C::CaCompromise,
        R::AffiliationChanged => C::AffiliationChanged,
        R::Superseded => C::Superseded,
        R::CessationOfOperation => C::CessationOfOperation,
        R::CertificateHold => C::CertificateHold,
        R::PrivilegeWithdrawn => C::PrivilegeWithdrawn,
        R::AaCompromise => C::AaCompromise,
    }
}
