//! A write-through cache of documents and certificate states in front of any store, for the
//! one process that owns the store (the embedded default). ACME touches the same few documents
//! (account, order, authorizations) several times per request flow and downloads the
//! certificate just issued, and an MDM asks about the same devices' certificates every time
//! they connect; serving them from memory saves a trip to the blocking pool each time.
//! Everything else passes straight through.
//!
//! Correctness rests on three rules: the cache learns a new state only from a write that
//! succeeded; a read fills an entry only if no write came in between (a concurrent write
//! always wins); and document deletions leave a tombstone, so a read that started before a
//! delete cannot bring the document back. A store shared by several processes must not be
//! wrapped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{
    CertQuery, CertRecord, CertState, ChallengeHash, ChallengeRecord, Doc, DocKey, DocKind,
    DocWrite, Event, Expect, IssuerChange, IssuerRecord, Linked, Page, Revoked, Seq, Store,
    StoreError, UseUp,
};
use crate::model::RevocationReason;
use crate::model::{IssuerId, Serial};

/// Entries held before the cache starts over (a few hundred bytes each).
const CAPACITY: usize = 100_000;

/// Bytes of certificate states held: about 400k devices; the least useful are evicted first.
const CERT_BYTES: u64 = 64 << 20;

/// Bytes of freshly issued certificate records held: a few thousand certificates.
const ISSUED_BYTES: u64 = 4 << 20;

pub struct DocCache<S> {
    inner: S,
    /// `None` is a known-absent document (a tombstone).
    docs: Mutex<HashMap<DocKey, Option<Doc>>>,
    /// Bumped when the cache is emptied, so reads that began before do not refill it with
    /// what may since have changed.
    generation: AtomicU64,
    /// Certificate states as last read or revoked. Only known certificates are held: an
    /// unknown serial is rare and always asks the store.
    certs: quick_cache::sync::Cache<Serial, Arc<CertState>, StateWeight>,
    /// Bumped, under `cert_fill`, by every revocation; a read fills the cache only if no
    /// revocation happened since it began.
    cert_generation: AtomicU64,
    cert_fill: Mutex<()>,
    /// Records of certificates this process issued, as written: an ACME client downloads its
    /// certificate right after finalize. Filled and dropped under the same rules as `certs`.
    issued: quick_cache::sync::Cache<Serial, Arc<CertRecord>, RecordWeight>,
}

/// An entry's weight is about its size in memory, allocations and their overhead included.
#[derive(Clone)]
struct StateWeight;

impl quick_cache::Weighter<Serial, Arc<CertState>> for StateWeight {
    fn weight(&self, serial: &Serial, state: &Arc<CertState>) -> u64 {
        let device = state.device.as_ref().map_or(0, |d| d.as_str().len() + 16);
        (std::mem::size_of::<CertState>() + serial.as_bytes().len() + device + 96) as u64
    }
}

#[derive(Clone)]
struct RecordWeight;

impl quick_cache::Weighter<Serial, Arc<CertRecord>> for RecordWeight {
    fn weight(&self, _: &Serial, record: &Arc<CertRecord>) -> u64 {
        let names: usize = record.sans.iter().map(|n| n.len() + 24).sum();
        (std::mem::size_of::<CertRecord>() + record.der.len() + record.subject.len() + names + 128)
            as u64
    }
}

impl<S: Store> DocCache<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            docs: Mutex::default(),
            generation: AtomicU64::new(0),
            certs: quick_cache::sync::Cache::with_weighter(400_000, CERT_BYTES, StateWeight),
            cert_generation: AtomicU64::new(0),
            cert_fill: Mutex::default(),
            issued: quick_cache::sync::Cache::with_weighter(8_192, ISSUED_BYTES, RecordWeight),
        }
    }

    /// Replaces a certificate's cached state after a revocation (or forgets it when the
    /// outcome is unknown), and keeps reads already under way from filling in the old one.
    fn learn_certificate(&self, serial: &Serial, record: Option<&CertRecord>) {
        let _fill = self.cert_fill.lock().unwrap_or_else(|p| p.into_inner());
        self.cert_generation.fetch_add(1, Ordering::SeqCst);
        self.issued.remove(serial);
        match record {
            Some(record) => self
                .certs
                .insert(serial.clone(), Arc::new(CertState::from(record))),
            None => {
                self.certs.remove(serial);
            }
        }
    }

    /// Caches what a read or an insert saw, unless a revocation came in since `generation`
    /// was taken: what it saw may be older than that revocation.
    fn fill_unless_revoked_since(&self, generation: u64, fill: impl FnOnce()) {
        let _fill = self.cert_fill.lock().unwrap_or_else(|p| p.into_inner());
        if self.cert_generation.load(Ordering::SeqCst) == generation {
            fill();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DocKey, Option<Doc>>> {
        self.docs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records what successful writes left behind. Two commits on one document may report
    /// back in either order, so a write's state replaces the cached one only if it is newer
    /// by version; where versions cannot order them (a deletion and a re-creation both
    /// restart the count), the entry is forgotten and the next read asks the store.
    fn learn(&self, writes: &[DocWrite]) {
        let mut docs = self.lock();
        if docs.len() + writes.len() > CAPACITY {
            docs.clear();
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        let mut ambiguous = false;
        for w in writes {
            let written = w.value.as_ref().map(|value| Doc {
                value: value.clone(),
                version: match w.expect {
                    Expect::Absent => 1,
                    Expect::Version(v) => v + 1,
                },
            });
            let newer = match (docs.get(&w.key), &written, &w.expect) {
                (None, _, _) => Some(true),
                (Some(Some(cached)), Some(doc), _) => Some(cached.version < doc.version),
                // Deleting version v: newer than a cached v or older.
                (Some(Some(cached)), None, Expect::Version(v)) => {
                    (cached.version <= *v).then_some(true)
                }
                (Some(None), None, _) => Some(true),
                _ => None,
            };
            match newer {
                Some(true) => {
                    docs.insert(w.key.clone(), written);
                }
                Some(false) => {}
                None => {
                    docs.remove(&w.key);
                    ambiguous = true;
                }
            }
        }
        if ambiguous {
            // A read under way may have seen either state.
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// After a failed write the cache may be behind the store: forget those documents, and
    /// keep reads already under way from refilling them with what they saw before.
    fn forget(&self, writes: &[DocWrite]) {
        let mut docs = self.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        for w in writes {
            docs.remove(&w.key);
        }
    }
}

#[async_trait]
impl<S: Store> Store for DocCache<S> {
    async fn insert_certificate(
        &self,
        record: CertRecord,
        linked: Linked,
    ) -> Result<Seq, StoreError> {
        let writes = linked.docs.clone();
        let issued = Arc::new(record.clone());
        let generation = self.cert_generation.load(Ordering::SeqCst);
        let result = self.inner.insert_certificate(record, linked).await;
        match &result {
            Ok(_) => {
                self.learn(&writes);
                self.fill_unless_revoked_since(generation, || {
                    self.issued.insert(issued.serial.clone(), issued);
                });
            }
            Err(_) => self.forget(&writes),
        }
        result
    }

    async fn doc(&self, key: &DocKey) -> Result<Option<Doc>, StoreError> {
        if let Some(state) = self.lock().get(key) {
            return Ok(state.clone());
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let found = self.inner.doc(key).await?;
        let mut docs = self.lock();
        if self.generation.load(Ordering::SeqCst) == generation && docs.len() < CAPACITY {
            docs.entry(key.clone()).or_insert_with(|| found.clone());
        }
        Ok(found)
    }

    async fn docs(
        &self,
        kind: DocKind,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Doc)>, StoreError> {
        self.inner.docs(kind, prefix, after, limit).await
    }

    async fn commit_docs(
        &self,
        writes: Vec<DocWrite>,
        consume: Option<UseUp>,
    ) -> Result<(), StoreError> {
        let result = self.inner.commit_docs(writes.clone(), consume).await;
        match &result {
            Ok(()) => self.learn(&writes),
            Err(_) => self.forget(&writes),
        }
        result
    }

    async fn put_challenge(
        &self,
        hash: ChallengeHash,
        record: ChallengeRecord,
    ) -> Result<(), StoreError> {
        self.inner.put_challenge(hash, record).await
    }

    async fn purge_challenges(&self, now: OffsetDateTime) -> Result<usize, StoreError> {
        self.inner.purge_challenges(now).await
    }

    async fn challenge(&self, hash: &ChallengeHash) -> Result<Option<ChallengeRecord>, StoreError> {
        self.inner.challenge(hash).await
    }

    async fn expire(&self, now: OffsetDateTime) -> Result<usize, StoreError> {
        self.inner.expire(now).await
    }

    async fn expiring(
        &self,
        now: OffsetDateTime,
        within: time::Duration,
    ) -> Result<usize, StoreError> {
        self.inner.expiring(now, within).await
    }

    async fn revoke(
        &self,
        serial: &Serial,
        reason: RevocationReason,
        at: OffsetDateTime,
    ) -> Result<CertRecord, StoreError> {
        let result = self.inner.revoke(serial, reason, at).await;
        match &result {
            Ok(record) => self.learn_certificate(serial, Some(record)),
            // Refused (unknown, already revoked) or failed: forgetting is always safe.
            Err(_) => self.learn_certificate(serial, None),
        }
        result
    }

    async fn certificate(&self, serial: &Serial) -> Result<Option<CertRecord>, StoreError> {
        if let Some(record) = self.issued.get(serial) {
            return Ok(Some(CertRecord::clone(&record)));
        }
        self.inner.certificate(serial).await
    }

    async fn certificate_state(&self, serial: &Serial) -> Result<Option<CertState>, StoreError> {
        if let Some(state) = self.certs.get(serial) {
            return Ok(Some(CertState::clone(&state)));
        }
        let generation = self.cert_generation.load(Ordering::SeqCst);
        let found = self.inner.certificate_state(serial).await?;
        if let Some(state) = &found {
            self.fill_unless_revoked_since(generation, || {
                self.certs.insert(serial.clone(), Arc::new(state.clone()));
            });
        }
        Ok(found)
    }

    async fn certificates(&self, query: CertQuery) -> Result<Page<CertRecord>, StoreError> {
        self.inner.certificates(query).await
    }

    async fn events(&self, after: Seq, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.inner.events(after, limit).await
    }

    async fn issuers(&self) -> Result<Vec<IssuerRecord>, StoreError> {
        self.inner.issuers().await
    }

    async fn put_issuer(&self, record: IssuerRecord) -> Result<(), StoreError> {
        self.inner.put_issuer(record).await
    }

    async fn revoked(&self, issuer: &IssuerId) -> Result<Vec<Revoked>, StoreError> {
        self.inner.revoked(issuer).await
    }

    async fn change_issuers(
        &self,
        changes: Vec<IssuerChange>,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.inner.change_issuers(changes, at).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush().await
    }

    fn newest_event(&self) -> tokio::sync::watch::Receiver<Seq> {
        self.inner.newest_event()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    #[test]
    fn writes_reported_out_of_order_leave_the_newest_state() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DocCache::new(SledStore::open(dir.path()).unwrap());
        let key = DocKey::new(DocKind::AcmeOrder, "o1");
        let cached = |cache: &DocCache<SledStore>| cache.lock().get(&key).cloned();
        let first = DocWrite::put(DocKind::AcmeOrder, "o1", None, &"one");
        let second = DocWrite::put(DocKind::AcmeOrder, "o1", Some(1), &"two");
        // Committed first, then second; their callers report back the other way round.
        cache.learn(std::slice::from_ref(&second));
        cache.learn(std::slice::from_ref(&first));
        let doc = cached(&cache).unwrap().unwrap();
        assert_eq!((doc.version, doc.value), (2, second.value.clone().unwrap()));

        // A deletion of version 2 is newer than version 2.
        let deleted = DocWrite {
            key: key.clone(),
            expect: Expect::Version(2),
            value: None,
        };
        cache.learn(std::slice::from_ref(&deleted));
        assert_eq!(cached(&cache), Some(None));
        // A re-creation restarts at version 1: versions cannot order it against the
        // tombstone, so the entry is dropped and the next read asks the store.
        let generation = cache.generation.load(Ordering::SeqCst);
        cache.learn(&[DocWrite::put(DocKind::AcmeOrder, "o1", None, &"three")]);
        assert_eq!(cached(&cache), None);
        assert!(cache.generation.load(Ordering::SeqCst) > generation);
    }
}
