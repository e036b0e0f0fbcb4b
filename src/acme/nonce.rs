//! Anti-replay nonces (RFC 8555 §6.5): single use, expiring, and free to hand out.
//!
//! A nonce is its issue time, random bytes, and a MAC over both under a key this process
//! draws at start. Issuing one stores nothing, so unauthenticated `new-nonce` requests,
//! however many, cost no memory and push no client's nonce out. Only nonces that were used
//! are remembered, by the minute they were issued in, until they expire. That memory is
//! bounded too: past it, the oldest minute is forgotten and every nonce issued before its end
//! is refused from then on (a client retries after `badNonce`, as it must), so a replay is
//! never accepted.
//!
//! A restart draws a new key, which costs clients one `badNonce` retry each. Several nodes
//! would share the key and the used set through the store instead.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use subtle::ConstantTimeEq;

/// How long a nonce stays usable.
const LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Used nonces remembered per shard (about 40 bytes each).
const SHARD_CAPACITY: usize = 1 << 16;
const SHARDS: usize = 16;
/// Used nonces are grouped by the minute they were issued in.
const BUCKET_MS: u64 = 60_000;

const TIME: usize = 8;
const RANDOM: usize = 8;
const TAG: usize = 16;
const LEN: usize = TIME + RANDOM + TAG;

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

pub struct Nonces {
    key: ring::hmac::Key,
    started: Instant,
    shards: [Mutex<Shard>; SHARDS],
    /// Used nonces remembered per shard.
    capacity: usize,
}

impl Default for Nonces {
    fn default() -> Self {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
            started: Instant::now(),
            shards: std::array::from_fn(|_| Mutex::default()),
            capacity: SHARD_CAPACITY,
        }
    }
}

impl Nonces {
    /// A fresh nonce for a `Replay-Nonce` header.
    pub fn issue(&self) -> String {
        self.issue_at(self.now_ms())
    }

    /// Uses `nonce` up: true only the first time, only for one this process issued, and only
    /// before it expires.
    pub fn consume(&self, nonce: &str) -> bool {
        self.consume_at(nonce, self.now_ms())
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn issue_at(&self, now_ms: u64) -> String {
        let mut nonce = [0u8; LEN];
        nonce[..TIME].copy_from_slice(&now_ms.to_be_bytes());
        rand::thread_rng().fill_bytes(&mut nonce[TIME..TIME + RANDOM]);
        let tag = ring::hmac::sign(&self.key, &nonce[..TIME + RANDOM]);
        nonce[TIME + RANDOM..].copy_from_slice(&tag.as_ref()[..TAG]);
        URL_SAFE_NO_PAD.encode(nonce)
    }

    fn consume_at(&self, nonce: &str, now_ms: u64) -> bool {
        let mut raw = [0u8; LEN];
        match URL_SAFE_NO_PAD.decode(nonce) {
            Ok(bytes) if bytes.len() == LEN => raw.copy_from_slice(&bytes),
            _ => return false,
        }
        let (id, tag) = raw.split_at(TIME + RANDOM);
        let expected = ring::hmac::sign(&self.key, id);
        if !bool::from(expected.as_ref()[..TAG].ct_eq(tag)) {
            return false;
        }
        let issued = u64::from_be_bytes(id[..TIME].try_into().expect("TIME bytes"));
        if issued > now_ms || now_ms - issued >= LIFETIME.as_millis() as u64 {
            return false;
        }
        let id: Id = id.try_into().expect("TIME + RANDOM bytes");
        let mut shard = self.shards[usize::from(id[TIME]) % SHARDS]
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
        while shard.held > self.capacity {
            let Some((minute, ids)) = shard.used.pop_first() else {
                break;
            };
            shard.held -= ids.len();
            shard.horizon = shard.horizon.max((minute + 1) * BUCKET_MS);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_works_once_and_only_if_we_issued_it() {
        let nonces = Nonces::default();
        let n = nonces.issue();
        assert!(nonces.consume(&n));
        assert!(!nonces.consume(&n));
        assert!(!nonces.consume("not-a-nonce"));
        assert!(!nonces.consume(""));
        // Another process's (another key's) nonce, and a tampered one.
        assert!(!nonces.consume(&Nonces::default().issue()));
        let mut raw = URL_SAFE_NO_PAD.decode(nonces.issue()).unwrap();
        raw[0] ^= 1;
        assert!(!nonces.consume(&URL_SAFE_NO_PAD.encode(raw)));
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
        let held: usize = nonces.shards.iter().map(|s| s.lock().unwrap().held).sum();
        assert_eq!(held, 0);
        assert!(nonces.consume(&first));
    }

    #[test]
    fn remembering_used_nonces_is_bounded_and_never_admits_a_replay() {
        let nonces = Nonces {
            capacity: 64,
            ..Nonces::default()
        };
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
        for shard in &nonces.shards {
            assert!(shard.lock().unwrap().held <= 64);
        }
        // Minute 0 is forgotten: its nonces are refused, used or not.
        assert!(!nonces.consume_at(&replayed, t));
        assert!(!nonces.consume_at(&unused_old, t));
        // A fresh one works.
        assert!(nonces.consume_at(&nonces.issue_at(t), t));
    }
}
