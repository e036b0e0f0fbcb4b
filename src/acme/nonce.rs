//! Anti-replay nonces (RFC 8555 §6.5): single use, expiring, and free to hand out.
//!
//! A nonce is its issue time, random bytes, its epoch, and a MAC over them. Issuing one stores nothing,
//! so unauthenticated `new-nonce` requests, however many, cost no memory and push no
//! client's nonce out. Only nonces that were used are remembered, until they expire.
//!
//! One process alone (sled) draws its MAC key at start and remembers used nonces in memory,
//! by the minute they were issued in. That memory is bounded: past it, the oldest minute is
//! forgotten and every nonce issued before its end is refused from then on (a client retries
//! after `badNonce`, as it must), so a replay is never accepted. A restart draws a new key,
//! which costs clients one `badNonce` retry each.
//!
//! Several nodes (a shared store) share the key through the store, which uses each nonce up
//! (`Store::use_nonce`) in the same round trip as the read the request needs next: a nonce
//! issued by any node is accepted by every node, once. Their times are the wall clock's,
//! which the nodes share. A nonce carries the store's nonce epoch, which changes when the
//! store has lost its used nonces (a crash of PostgreSQL, which keeps them unlogged): what
//! was issued before is refused, at the cost of one `badNonce` retry per client, as after a
//! restart of a single process.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::clock::Clock;
use crate::store::{Backing, DocKind, DocWrite, Store, StoreError, UsedNonce};

/// How long a nonce stays usable.
const LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Used nonces remembered per shard (about 40 bytes each).
const SHARD_CAPACITY: usize = 1 << 16;
const SHARDS: usize = 16;
/// Used nonces are grouped by the minute they were issued in.
const BUCKET_MS: u64 = 60_000;

const TIME: usize = 8;
const RANDOM: usize = 8;
const EPOCH: usize = 8;
const TAG: usize = 16;
/// What the MAC covers.
const SIGNED: usize = TIME + RANDOM + EPOCH;
const LEN: usize = SIGNED + TAG;

/// The shared MAC key's document id (of kind `AcmeNonceKey`).
const SHARED_KEY: &str = "hmac-sha256";

/// What a used nonce is remembered by: its issue time and random part.
type Id = [u8; TIME + RANDOM];

#[derive(Default)]
struct Shard {
    /// Used nonces by issue minute.
    used: BTreeMap<u64, HashSet<Id>>,
    held: usize,
    /// Nonces issued before this (ms) are refused: what was used then is forgotten.
    horizon: u64,
}

/// What using a nonce up comes to.
#[derive(Debug)]
pub enum Redeem {
    /// Not one of ours, expired, or (in memory) used before.
    Refused,
    /// Used up in memory.
    Used,
    /// Shared: used up when the store says so (`Store::use_nonce`).
    Shared(UsedNonce),
}

pub struct Nonces {
    key: ring::hmac::Key,
    used: Used,
}

/// Where used nonces are remembered, and what their times count from.
enum Used {
    /// This process alone: in memory; times in ms since it started.
    Memory {
        started: Instant,
        shards: Box<[Mutex<Shard>; SHARDS]>,
        /// Used nonces remembered per shard.
        capacity: usize,
    },
    /// Every node: in the store; times in Unix ms.
    Store {
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        /// The store's nonce epoch as last heard, which new nonces carry.
        epoch: AtomicU64,
    },
}

impl Default for Nonces {
    fn default() -> Self {
        Self::in_memory(SHARD_CAPACITY)
    }
}

impl Nonces {
    fn in_memory(capacity: usize) -> Self {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
            used: Used::Memory {
                started: Instant::now(),
                shards: Box::new(std::array::from_fn(|_| Mutex::default())),
                capacity,
            },
        }
    }

    /// Nonces every node of a cluster shares: the key is the store's (the first node to
    /// start draws it), used nonces are recorded there.
    pub async fn shared(backing: &Backing) -> Result<Self, StoreError> {
        let store = &backing.store;
        let key = loop {
            if let Some(doc) = store.doc(&key_address()).await? {
                break doc.decode::<serde_bytes::ByteBuf>()?.value.into_vec();
            }
            let mut secret = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut secret);
            let draw = DocWrite::put(
                DocKind::AcmeNonceKey,
                SHARED_KEY,
                None,
                &serde_bytes::Bytes::new(&secret),
            );
            match store.write_docs(vec![draw]).await {
                Ok(()) => break secret.to_vec(),
                // Another node drew it first: read theirs.
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        };
        let epoch = store.use_nonce(None, &[]).await?.epoch;
        Ok(Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
            used: Used::Store {
                store: store.clone(),
                clock: backing.clock.clone(),
                epoch: AtomicU64::new(epoch),
            },
        })
    }

    /// A fresh nonce for a `Replay-Nonce` header.
    pub fn issue(&self) -> String {
        self.issue_at(self.now_ms())
    }

    /// Uses `nonce` up: accepted only the first time, only if we (or, shared, any node)
    /// issued it, and only before it expires. A shared nonce is checked here (MAC, expiry)
    /// and used up by the store, which the caller asks (with the read it needs next, in one
    /// round trip), then tells `learn` what the store said.
    pub fn redeem(&self, nonce: &str) -> Redeem {
        let Used::Store { .. } = &self.used else {
            return match self.consume_at(nonce, self.now_ms()) {
                true => Redeem::Used,
                false => Redeem::Refused,
            };
        };
        match self.verify(nonce, self.now_ms()) {
            Some((id, _, epoch)) => Redeem::Shared(UsedNonce { epoch, id }),
            None => Redeem::Refused,
        }
    }

    /// The store's current nonce epoch, as `Store::use_nonce` answered: nonces issued from
    /// now on carry it.
    pub fn learn(&self, store_epoch: u64) {
        if let Used::Store { epoch, .. } = &self.used {
            epoch.store(store_epoch, Ordering::Relaxed);
        }
    }

    /// Forgets used nonces that have expired (shared nonces only; memory forgets by itself).
    pub async fn purge(&self) -> Result<usize, StoreError> {
        let Used::Store { store, .. } = &self.used else {
            return Ok(0);
        };
        let expired_before = self.now_ms().saturating_sub(LIFETIME.as_millis() as u64);
        store.purge_nonces(expired_before).await
    }

    fn now_ms(&self) -> u64 {
        match &self.used {
            Used::Memory { started, .. } => started.elapsed().as_millis() as u64,
            Used::Store { clock, .. } => {
                (clock.now().unix_timestamp_nanos() / 1_000_000).max(0) as u64
            }
        }
    }

    fn issue_at(&self, now_ms: u64) -> String {
        let epoch = match &self.used {
            Used::Memory { .. } => 0,
            Used::Store { epoch, .. } => epoch.load(Ordering::Relaxed),
        };
        let mut nonce = [0u8; LEN];
        nonce[..TIME].copy_from_slice(&now_ms.to_be_bytes());
        rand::thread_rng().fill_bytes(&mut nonce[TIME..TIME + RANDOM]);
        nonce[TIME + RANDOM..SIGNED].copy_from_slice(&epoch.to_be_bytes());
        let tag = ring::hmac::sign(&self.key, &nonce[..SIGNED]);
        nonce[SIGNED..].copy_from_slice(&tag.as_ref()[..TAG]);
        URL_SAFE_NO_PAD.encode(nonce)
    }

    /// A nonce we issued that has not expired at `now_ms`: its id, issue time and epoch.
    fn verify(&self, nonce: &str, now_ms: u64) -> Option<(Id, u64, u64)> {
        let mut raw = [0u8; LEN];
        match URL_SAFE_NO_PAD.decode(nonce) {
            Ok(bytes) if bytes.len() == LEN => raw.copy_from_slice(&bytes),
            _ => return None,
        }
        let (signed, tag) = raw.split_at(SIGNED);
        let expected = ring::hmac::sign(&self.key, signed);
        if !bool::from(expected.as_ref()[..TAG].ct_eq(tag)) {
            return None;
        }
        let (id, epoch) = signed.split_at(TIME + RANDOM);
        let issued = u64::from_be_bytes(id[..TIME].try_into().expect("TIME bytes"));
        if issued > now_ms || now_ms - issued >= LIFETIME.as_millis() as u64 {
            return None;
        }
        let epoch = u64::from_be_bytes(epoch.try_into().expect("EPOCH bytes"));
        Some((id.try_into().expect("TIME + RANDOM bytes"), issued, epoch))
    }

    /// Uses a nonce up in memory (this process alone).
    fn consume_at(&self, nonce: &str, now_ms: u64) -> bool {
        let Used::Memory {
            shards, capacity, ..
        } = &self.used
        else {
            unreachable!("shared nonces are used up in the store");
        };
        let Some((id, issued, _)) = self.verify(nonce, now_ms) else {
            return false;
        };
        let mut shard = shards[usize::from(id[TIME]) % SHARDS]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if issued < shard.horizon {
            return false;
        }
        // Minutes whose nonces have all expired need no remembering.
        let expired_before = now_ms.saturating_sub(LIFETIME.as_millis() as u64) / BUCKET_MS;
        while let Some(entry) = shard.used.first_entry() {
            if *entry.key() >= expired_before {
                break;
            }
            let gone = entry.remove().len();
            shard.held -= gone;
        }
        if !shard.used.entry(issued / BUCKET_MS).or_default().insert(id) {
            return false;
        }
        shard.held += 1;
        // Full: forget the oldest minute, and refuse from now on what was issued in it.
        while shard.held > *capacity {
            let Some((minute, ids)) = shard.used.pop_first() else {
                break;
            };
            shard.held -= ids.len();
            shard.horizon = shard.horizon.max((minute + 1) * BUCKET_MS);
        }
        true
    }
}

fn key_address() -> crate::store::DocKey {
    crate::store::DocKey::new(DocKind::AcmeNonceKey, SHARED_KEY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_works_once_and_only_if_we_issued_it() {
        let nonces = Nonces::default();
        let consume = |n: &str| nonces.consume_at(n, nonces.now_ms());
        let n = nonces.issue();
        assert!(consume(&n));
        assert!(!consume(&n));
        assert!(!consume("not-a-nonce"));
        assert!(!consume(""));
        // Another process's (another key's) nonce, and a tampered one.
        assert!(!consume(&Nonces::default().issue()));
        let mut raw = URL_SAFE_NO_PAD.decode(nonces.issue()).unwrap();
        raw[0] ^= 1;
        assert!(!consume(&URL_SAFE_NO_PAD.encode(raw)));
    }

    /// Two nodes over one store: each accepts the other's nonces, and a nonce is used once
    /// wherever it is presented; used nonces are forgotten once expired, never before.
    #[tokio::test]
    async fn shared_nonces_work_on_every_node_once() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(crate::store::SledStore::open(dir.path()).unwrap());
        let clock = Arc::new(crate::clock::SystemClock);
        let backing = Backing {
            store: store.clone(),
            clock,
        };
        let (a, b) = (
            Nonces::shared(&backing).await.unwrap(),
            Nonces::shared(&backing).await.unwrap(),
        );
        // What the service does with a redeemed nonce: the store uses it up.
        let consume = async |nonces: &Nonces, nonce: &str| match nonces.redeem(nonce) {
            Redeem::Refused => false,
            Redeem::Used => unreachable!("shared nonces are used up by the store"),
            Redeem::Shared(used) => {
                let outcome = store.use_nonce(Some(&used), &[]).await.unwrap();
                nonces.learn(outcome.epoch);
                outcome.fresh
            }
        };
        let n = a.issue();
        assert!(consume(&b, &n).await, "issued by a, used on b");
        assert!(!consume(&a, &n).await, "and never again, anywhere");
        assert!(!consume(&b, &n).await);
        assert!(consume(&a, &b.issue()).await);
        // A process's own key is not the cluster's.
        assert!(!consume(&a, &Nonces::default().issue()).await);
        assert_eq!(a.purge().await.unwrap(), 0, "nothing has expired yet");
        // One used long ago is forgotten; the two recent ones are kept.
        let old = a.issue_at(a.now_ms() - LIFETIME.as_millis() as u64 - 1);
        let (id, _, epoch) = a
            .verify(&old, a.now_ms() - LIFETIME.as_millis() as u64)
            .unwrap();
        let used = UsedNonce { epoch, id };
        assert!(store.use_nonce(Some(&used), &[]).await.unwrap().fresh);
        assert_eq!(a.purge().await.unwrap(), 1);
        let left = store.all_docs(DocKind::AcmeUsedNonce, "").await.unwrap();
        assert_eq!(left.len(), 2);
    }

    /// A nonce carries its epoch under the MAC: one altered to another epoch is not ours.
    #[tokio::test]
    async fn a_nonce_carries_its_epoch_under_the_mac() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(crate::store::SledStore::open(dir.path()).unwrap());
        let nonces = Nonces::shared(&Backing::system(store)).await.unwrap();
        let n = nonces.issue();
        let Redeem::Shared(used) = nonces.redeem(&n) else {
            panic!("a shared nonce");
        };
        assert_eq!(used.epoch, crate::store::DURABLE_NONCE_EPOCH);
        nonces.learn(7);
        let Redeem::Shared(used) = nonces.redeem(&nonces.issue()) else {
            panic!("a shared nonce");
        };
        assert_eq!(used.epoch, 7, "issued in the epoch last learnt");
        let mut raw = URL_SAFE_NO_PAD.decode(&n).unwrap();
        raw[TIME + RANDOM + EPOCH - 1] ^= 1;
        assert!(matches!(
            nonces.redeem(&URL_SAFE_NO_PAD.encode(raw)),
            Redeem::Refused
        ));
    }

    #[test]
    fn nonces_expire() {
        let nonces = Nonces::default();
        let life = LIFETIME.as_millis() as u64;
        let n = nonces.issue_at(1_000);
        assert!(!nonces.consume_at(&n, 1_000 + life));
        let n = nonces.issue_at(1_000);
        assert!(nonces.consume_at(&n, 1_000 + life - 1));
    }

    #[test]
    fn issuing_costs_nothing_so_a_flood_evicts_no_one() {
        let nonces = Nonces::default();
        let first = nonces.issue();
        for _ in 0..200_000 {
            nonces.issue();
        }
        let Used::Memory { shards, .. } = &nonces.used else {
            unreachable!()
        };
        let held: usize = shards.iter().map(|s| s.lock().unwrap().held).sum();
        assert_eq!(held, 0);
        assert!(nonces.consume_at(&first, nonces.now_ms()));
    }

    #[test]
    fn remembering_used_nonces_is_bounded_and_never_admits_a_replay() {
        let nonces = Nonces::in_memory(64);
        // Minute 0: one nonce used early, one kept for later.
        let replayed = nonces.issue_at(0);
        assert!(nonces.consume_at(&replayed, 10));
        let unused_old = nonces.issue_at(0);
        // Then 100 used a minute for 15 minutes: about 94 a shard, more than it remembers.
        let mut t = BUCKET_MS;
        for i in 0..1500 {
            t = BUCKET_MS + i * (BUCKET_MS / 100);
            assert!(nonces.consume_at(&nonces.issue_at(t), t));
        }
        let Used::Memory { shards, .. } = &nonces.used else {
            unreachable!()
        };
        for shard in shards.iter() {
            assert!(shard.lock().unwrap().held <= 64);
        }
        // Minute 0 is forgotten: its nonces are refused, used or not.
        assert!(!nonces.consume_at(&replayed, t));
        assert!(!nonces.consume_at(&unused_old, t));
        // A fresh one works.
        assert!(nonces.consume_at(&nonces.issue_at(t), t));
    }
}
