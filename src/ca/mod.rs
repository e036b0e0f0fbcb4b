//! The certificate authority: issuers, their keys, and the one function that mints
//! end-entity certificates (`Ca::issue`).

pub mod follow;
pub mod hierarchy;
mod issue;
mod issuer;
mod issuer_set;
pub mod keys;
pub mod pkcs11;
pub mod presence;
pub mod rotation;
pub mod shared_trust;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use time::OffsetDateTime;
use tokio::sync::Semaphore;

pub use crate::model::{IssuerId, KeyFamily, Serial, SerialError};
pub use issue::{IssueError, IssueRequest, Issued};
pub use issuer::Issuer;
pub use issuer_set::{ActiveIssuer, IssuerSet};
pub use keys::{CaKey, KeyAccess, KeyError, KeySpec, Passphrase, passphrase};

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::model::RevocationReason;
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

/// DER certificates, shared.
pub type Certificates = Arc<[Vec<u8>]>;

/// The roots clients are told to trust, and the cross certificates between them (root
/// rotation): what `/roots.pem` and `/ca/cross.pem` serve and alternate chains end with.
#[derive(Debug, Default)]
pub struct Trust {
    roots: Vec<Vec<u8>>,
    cross: Vec<Vec<u8>>,
    /// `cross_above`'s answers by issuer (SHA-256 of its DER): finding one parses
    /// certificates and checks a signature, and every ACME certificate download asks.
    above: Mutex<HashMap<[u8; 32], Option<usize>>>,
    /// `above`'s answers by CA (SHA-256 of its DER): SCEP asks on every GetCACert and CertRep.
    paths: Mutex<HashMap<[u8; 32], Certificates>>,
}

impl Trust {
    pub fn new(roots: Vec<Vec<u8>>, cross: Vec<Vec<u8>>) -> Self {
        Self {
            roots,
            cross,
            above: Mutex::default(),
            paths: Mutex::default(),
        }
    }

    /// This set after a root rotation: one more root and the cross certificates it brings.
    pub fn with_root(&self, root: Vec<u8>, cross: impl IntoIterator<Item = Vec<u8>>) -> Self {
        let roots = self.roots.iter().cloned().chain([root]).collect();
        Self::new(roots, self.cross.iter().cloned().chain(cross).collect())
    }

    pub fn roots(&self) -> &[Vec<u8>] {
        &self.roots
    }

    pub fn cross(&self) -> &[Vec<u8>] {
        &self.cross
    }

    pub fn roots_pem(&self) -> String {
        self.roots
            .iter()
            .map(|r| crate::encoding::to_pem("CERTIFICATE", r))
            .collect()
    }

    pub fn cross_pem(&self) -> String {
        self.cross
            .iter()
            .map(|r| crate::encoding::to_pem("CERTIFICATE", r))
            .collect()
    }

    /// The cross certificate that re-certifies the root above `issuer_der` under another
    /// root: what a client trusting only that other root needs after `issuer_der`.
    pub fn cross_above(&self, issuer_der: &[u8]) -> Option<&[u8]> {
        let key = crate::encoding::sha256(issuer_der);
        let lock = || self.above.lock().unwrap_or_else(|p| p.into_inner());
        let known = lock().get(&key).copied();
        let index = known.unwrap_or_else(|| {
            let found = self.find_cross_above(issuer_der);
            lock().insert(key, found);
            found
        });
        index.map(|i| self.cross[i].as_slice())
    }

    /// What lies above a CA certificate on the way to the roots: the root that signed it, then
    /// the cross certificate (if any) that leads from that root to the other root a client may
    /// trust after a rotation. Empty for a self-signed CA, or one no root here signed.
    pub fn above(&self, ca_der: &[u8]) -> Certificates {
        let key = crate::encoding::sha256(ca_der);
        let lock = || self.paths.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = lock().get(&key) {
            return known.clone();
        }
        let found: Certificates = self.find_above(ca_der).into();
        lock().insert(key, found.clone());
        found
    }

    fn find_above(&self, ca_der: &[u8]) -> Vec<Vec<u8>> {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let Ok((_, ca)) = X509Certificate::from_der(ca_der) else {
            return Vec::new();
        };
        if ca.subject().as_raw() == ca.issuer().as_raw() && ca.verify_signature(None).is_ok() {
            return Vec::new();
        }
        let root = self.roots.iter().find(|r| {
            X509Certificate::from_der(r).is_ok_and(|(_, r)| {
                r.subject().as_raw() == ca.issuer().as_raw()
                    && ca.verify_signature(Some(r.public_key())).is_ok()
            })
        });
        root.into_iter()
            .cloned()
            .chain(self.cross_above(ca_der).map(<[u8]>::to_vec))
            .collect()
    }

    fn find_cross_above(&self, issuer_der: &[u8]) -> Option<usize> {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, issuer) = X509Certificate::from_der(issuer_der).ok()?;
        self.cross.iter().position(|c| {
            X509Certificate::from_der(c).is_ok_and(|(_, c)| {
                c.subject().as_raw() == issuer.issuer().as_raw()
                    && issuer.verify_signature(Some(c.public_key())).is_ok()
            })
        })
    }
}

/// The issuing service every protocol calls.
pub struct Ca {
    issuers: ArcSwap<IssuerSet>,
    trust: ArcSwap<Trust>,
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
            trust: ArcSwap::from_pointee(Trust::default()),
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

    pub fn trust(&self) -> Arc<Trust> {
        self.trust.load_full()
    }

    /// Sets the roots and cross certificates (at start, and after a root rotation).
    pub fn set_trust(&self, trust: Trust) {
        self.trust.store(Arc::new(trust));
    }

    /// Swaps in a new issuer set (a rotation step); requests holding the old one finish with it.
    pub fn replace_issuers(&self, issuers: IssuerSet) {
        self.issuers.store(Arc::new(issuers));
    }

    /// For the CA's own steps (rotation); services hold their own `store::Backing`.
    fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn clock(&self) -> &Arc<dyn Clock> {
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
        self.note_revoked(&rec.issuer);
        Ok(rec)
    }

    /// Makes what was signed from `issuer`'s revocations so far stale (a revocation here, or
    /// one another node of the cluster made).
    pub fn note_revoked(&self, issuer: &IssuerId) {
        *self
            .revocations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(issuer.clone())
            .or_default() += 1;
    }

    /// How many revocations of `issuer`'s certificates this process has learnt of.
    pub fn revocation_count(&self, issuer: &IssuerId) -> u64 {
        self.revocations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(issuer)
            .copied()
            .unwrap_or(0)
    }
}
