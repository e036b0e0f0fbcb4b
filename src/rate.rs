//! Token-bucket rate limits by key (a client's address, an ACME account): each key may
//! spend `burst` requests at once and `rate` a second after that. What it refuses says when
//! to come back (`Retry-After`). Memory is bounded: past `MAX_KEYS`, keys whose bucket has
//! refilled (idle clients, indistinguishable from new ones) are forgotten.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MAX_KEYS: usize = 100_000;

/// The address a request came from, as the accept loop saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub IpAddr);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests a second, sustained; 0 turns the limit off.
    pub per_second: f64,
    pub burst: u32,
}

/// What costs the CA before anyone is authenticated, bounded by client address: requests a
/// second (`limits.client_rate`), and SCEP private-key work in flight
/// (`limits.client_concurrency`).
#[derive(Clone)]
pub struct Costly {
    pub rate: std::sync::Arc<Limiter<IpAddr>>,
    pub in_flight: std::sync::Arc<Concurrency<IpAddr>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct Limiter<K> {
    rate: Rate,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq> Limiter<K> {
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::default(),
        }
    }

    /// Spends one request of `key`'s; `Err(wait)` when it has none left.
    pub fn check(&self, key: K) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: K, now: Instant) -> Result<(), Duration> {
        let Rate { per_second, burst } = self.rate;
        if per_second <= 0.0 {
            return Ok(());
        }
        let burst = f64::from(burst.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(&key) {
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.at).as_secs_f64() * per_second < burst
            });
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refilled = now.duration_since(bucket.at).as_secs_f64() * per_second;
        bucket.tokens = (bucket.tokens + refilled).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }
}

/// How many requests of each key may be in flight at once (0: no bound). Entries exist only
/// while requests do, so memory follows the requests in flight.
pub struct Concurrency<K: Hash + Eq + Clone> {
    cap: usize,
    in_flight: std::sync::Arc<Mutex<HashMap<K, usize>>>,
}

/// A request counted in flight until dropped.
pub struct Slot<K: Hash + Eq + Clone> {
    key: K,
    in_flight: std::sync::Arc<Mutex<HashMap<K, usize>>>,
}

impl<K: Hash + Eq + Clone> Concurrency<K> {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            in_flight: std::sync::Arc::default(),
        }
    }

    /// A slot for one more request of `key`'s, or `None` when it has `cap` in flight.
    pub fn enter(&self, key: K) -> Option<Slot<K>> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let n = in_flight.entry(key.clone()).or_insert(0);
        if self.cap > 0 && *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(Slot {
            key,
            in_flight: self.in_flight.clone(),
        })
    }
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = in_flight.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                in_flight.remove(&self.key);
            }
        }
    }
}

/// `Retry-After` in whole seconds, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_and_each_key_its_own() {
        let limiter = Limiter::new(Rate {
            per_second: 2.0,
            burst: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at("a", t0).is_ok());
        }
        let wait = limiter.check_at("a", t0).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        assert_eq!(retry_after_secs(wait), 1);
        assert!(
            limiter.check_at("b", t0).is_ok(),
            "another key is not held back"
        );
        // Half a second later one request's worth has come back.
        let t1 = t0 + Duration::from_millis(500);
        assert!(limiter.check_at("a", t1).is_ok());
        assert!(limiter.check_at("a", t1).is_err());
    }

    #[test]
    fn at_most_cap_in_flight_per_key_and_nothing_kept_after() {
        let limit = Concurrency::new(2);
        let a1 = limit.enter("a").unwrap();
        let _a2 = limit.enter("a").unwrap();
        assert!(limit.enter("a").is_none());
        assert!(limit.enter("b").is_some(), "another key is not held back");
        drop(a1);
        let _a3 = limit.enter("a").unwrap();
        drop(_a2);
        drop(_a3);
        assert!(limit.in_flight.lock().unwrap().is_empty());
    }

    #[test]
    fn zero_turns_it_off() {
        let limiter = Limiter::new(Rate {
            per_second: 0.0,
            burst: 0,
        });
        for _ in 0..1000 {
            assert!(limiter.check("a").is_ok());
        }
    }
}
