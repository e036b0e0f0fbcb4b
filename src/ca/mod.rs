//! The certificate authority: issuers, their keys, and the one function that mints
//! end-entity certificates (`Ca::issue`).

pub mod csr;
pub mod hierarchy;
mod issue;
mod issuer;
mod issuer_set;
pub mod keys;
pub mod rotation;
mod serial;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use time::OffsetDateTime;
use tokio::sync::Semaphore;

pub use issue::{IssueError, IssueRequest, Issued};
pub use issuer::{Issuer, IssuerId};
pub use issuer_set::{ActiveIssuer, IssuerSet};
pub use keys::{CaKey, KeyError, KeyFamily, KeySpec, Passphrase};
pub use serial::{Serial, SerialError};

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::revocation::RevocationReason;
use crate::store::{CertRecord, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("CA certificate: {0}")]
    BadCaCert(String),
    #[error("URL cannot go into a certificate: {0}")]
    BadUrl(String),
    #[error("issuer set: {0}")]
    IssuerSet(String),
    #[error("building certificate: {0}")]
    Build(#[from] rcgen::Error),
}

/// The issuing service every protocol calls.
pub struct Ca {
    issuers: ArcSwap<IssuerSet>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    /// Bounds concurrent signing (two jobs per core: one signing, one being handed over, so
    /// no core idles between jobs; measured +25% RSA issuance over one per core). A burst
    /// of requests queues here instead of spawning hundreds of blocking threads.
    signing: Arc<Semaphore>,
    /// Revocations per issuer since start, so revocation data signed earlier (CRLs) knows
    /// when it is stale.
    revocations: Mutex<HashMap<IssuerId, u64>>,
}

impl Ca {
    pub fn new(
        issuers: IssuerSet,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            issuers: ArcSwap::from_pointee(issuers),
            store,
            clock,
            metrics,
            signing: Arc::new(Semaphore::new(2 * cores)),
            revocations: Mutex::default(),
        }
    }

    /// The issuer set in force now; hold the returned `Arc` for the length of one request.
    pub fn issuers(&self) -> Arc<IssuerSet> {
        self.issuers.load_full()
    }

    /// Swaps in a new issuer set (a rotation step); requests holding the old one finish with it.
    pub fn replace_issuers(&self, issuers: IssuerSet) {
        self.issuers.store(Arc::new(issuers));
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Revokes a certificate (durably, with its event): the one place revocations happen
    /// while the server runs.
    pub async fn revoke(
        &self,
        serial: &Serial,
        reason: RevocationReason,
        at: OffsetDateTime,
    ) -> Result<CertRecord, StoreError> {
        let rec = self.store.revoke(serial, reason, at).await?;
        *self
            .revocations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(rec.issuer.clone())
            .or_default() += 1;
        Ok(rec)
    }

    /// How many revocations of `issuer`'s certificates this process has made.
    pub fn revocation_count(&self, issuer: &IssuerId) -> u64 {
        self.revocations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(issuer)
            .copied()
            .unwrap_or(0)
    }
}
