//! Anti-replay nonces (RFC 8555 §6.5): random, single use, expiring, kept in memory.
//!
//! A restart forgets them, which costs clients one `badNonce` retry each (they are built for
//! that). Several nodes would keep them in the shared store instead.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;

/// How long a nonce stays usable.
const LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Nonces held per shard; past it the oldest are dropped, so a client fetching nonces it
/// never uses cannot grow memory without bound.
const SHARD_CAPACITY: usize = 1 << 16;
const SHARDS: usize = 16;

type Nonce = [u8; 16];

#[derive(Default)]
struct Shard {
    live: HashMap<Nonce, Instant>,
    /// Issue order, for eviction; entries already used are skipped lazily.
    order: VecDeque<Nonce>,
}

pub struct Nonces {
    shards: [Mutex<Shard>; SHARDS],
}

impl Default for Nonces {
    fn default() -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }
}

impl Nonces {
    /// A fresh nonce for a `Replay-Nonce` header.
    pub fn issue(&self) -> String {
        let mut nonce = Nonce::default();
        rand::thread_rng().fill_bytes(&mut nonce);
        let now = Instant::now();
        let mut shard = self.shard(&nonce);
        while shard.live.len() >= SHARD_CAPACITY {
            match shard.order.pop_front() {
                Some(old) => {
                    shard.live.remove(&old);
                }
                None => break,
            }
        }
        shard.live.insert(nonce, now + LIFETIME);
        shard.order.push_back(nonce);
        // Keep the queue from accumulating used entries.
        if shard.order.len() > 2 * SHARD_CAPACITY {
            let Shard { live, order } = &mut *shard;
            order.retain(|n| live.contains_key(n));
        }
        URL_SAFE_NO_PAD.encode(nonce)
    }

    /// Uses `nonce` up: true only the first time, and only before it expires.
    pub fn consume(&self, nonce: &str) -> bool {
        let mut raw = Nonce::default();
        match URL_SAFE_NO_PAD.decode(nonce) {
            Ok(bytes) if bytes.len() == raw.len() => raw.copy_from_slice(&bytes),
            _ => return false,
        }
        self.shard(&raw)
            .live
            .remove(&raw)
            .is_some_and(|expires| Instant::now() < expires)
    }

    fn shard(&self, nonce: &Nonce) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[usize::from(nonce[0]) % SHARDS]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_works_once() {
        let nonces = Nonces::default();
        let n = nonces.issue();
        assert!(nonces.consume(&n));
        assert!(!nonces.consume(&n));
        assert!(!nonces.consume("not-a-nonce"));
        assert!(!nonces.consume(""));
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_go_first() {
        let nonces = Nonces::default();
        let first = nonces.issue();
        for _ in 0..2 * SHARDS * SHARD_CAPACITY {
            nonces.issue();
        }
        let held: usize = nonces
            .shards
            .iter()
            .map(|s| s.lock().unwrap().live.len())
            .sum();
        assert!(held <= SHARDS * SHARD_CAPACITY);
        assert!(!nonces.consume(&first));
        let fresh = nonces.issue();
        assert!(nonces.consume(&fresh));
    }
}
