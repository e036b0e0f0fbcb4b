//! Work that runs once per cluster (the periodic sweep, webhook delivery) runs on the node
//! that holds its lease: a document naming the holder and until when, taken or renewed by
//! compare-and-swap. The holder renews it every `RENEW`; when it dies, the lease runs out
//! after `TTL` and the next node to ask takes it, so the work moves within seconds.
//! A process alone (sled) holds every lease without asking.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Backing, Collection, DocKind, StoreError};

/// How long a lease lasts unless renewed.
const TTL: Duration = Duration::from_secs(6);
/// How often the holder renews it, and the others ask for it.
const RENEW: Duration = Duration::from_secs(2);

const LEASES: Collection<Holder> = Collection::new(DocKind::Lease);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Holder {
    node: String,
    #[serde(with = "time::serde::rfc3339")]
    until: OffsetDateTime,
}

/// Whether this node holds a lease, as its keeper last learnt.
#[derive(Clone)]
pub struct Lease {
    held: watch::Receiver<bool>,
}

impl Lease {
    /// Held, always: this process is the only one.
    pub fn alone() -> Self {
        let (_, held) = watch::channel(true);
        Self { held }
    }

    /// Contends for the lease `name` with the other nodes until `shutdown`.
    pub fn contend(name: &str, backing: Backing, shutdown: CancellationToken) -> Self {
        let (tell, held) = watch::channel(false);
        let keeper = Keeper {
            name: name.to_owned(),
            node: format!("{:016x}", rand::random::<u64>()),
            backing,
        };
        tokio::spawn(keeper.run(tell, shutdown));
        Self { held }
    }

    pub fn held(&self) -> bool {
        *self.held.borrow()
    }

    /// Waits until this node holds the lease.
    pub async fn acquired(&mut self) {
        // The keeper only stops at shutdown, which every user of a lease also watches.
        let _ = self.held.wait_for(|held| *held).await;
    }

    /// Waits until this node no longer holds the lease: never, for a process alone (or once
    /// the keeper has stopped, at shutdown, which every user also watches).
    pub async fn lost(&mut self) {
        if self.held.wait_for(|held| !*held).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

struct Keeper {
    name: String,
    /// This process's name in the lease (random: a restarted node is another holder).
    node: String,
    backing: Backing,
}

impl Keeper {
    async fn run(self, tell: watch::Sender<bool>, shutdown: CancellationToken) {
        loop {
            let held = match self.take().await {
                Ok(held) => held,
                Err(e) => {
                    tracing::warn!(lease = %self.name, error = %crate::error::Chain(&e), "cannot renew a lease");
                    false
                }
            };
            if tell.send_replace(held) != held {
                tracing::info!(lease = %self.name, node = %self.node, held, "lease");
            }
            tokio::select! {
                () = tokio::time::sleep(RENEW) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Takes the lease if it is free or has run out, renews it if it is ours.
    async fn take(&self) -> Result<bool, StoreError> {
        let store = self.backing.store.as_ref();
        let now = self.backing.clock.now();
        let current = LEASES.get(store, &self.name).await?;
        let version = match &current {
            Some(c) if c.value.node != self.node && c.value.until > now => return Ok(false),
            Some(c) => Some(c.version),
            None => None,
        };
        let mine = Holder {
            node: self.node.clone(),
            until: now + TTL,
        };
        match store
            .write_docs(vec![LEASES.put(&self.name, version, &mine)])
            .await
        {
            Ok(()) => Ok(true),
            // Another node took or renewed it meanwhile.
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::SledStore;

    /// Two nodes: one holds the lease; when it stops renewing, the other takes it within
    /// `TTL` and a little.
    #[tokio::test]
    async fn one_node_holds_a_lease_and_another_takes_it_when_it_stops() {
        let dir = tempfile::tempdir().unwrap();
        let backing = Backing::system(Arc::new(SledStore::open(dir.path()).unwrap()));
        let (a_stop, b_stop) = (CancellationToken::new(), CancellationToken::new());
        let mut a = Lease::contend("work", backing.clone(), a_stop.clone());
        tokio::time::timeout(Duration::from_secs(5), a.acquired())
            .await
            .unwrap();
        let b = Lease::contend("work", backing.clone(), b_stop.clone());
        tokio::time::sleep(RENEW * 2).await;
        assert!(a.held() && !b.held(), "one holder at a time");
        // The holder is not told it lost what it still holds; a process alone never loses.
        assert!(tokio::time::timeout(RENEW, a.lost()).await.is_err());
        assert!(
            tokio::time::timeout(RENEW, Lease::alone().lost())
                .await
                .is_err()
        );
        // A dies (stops renewing); B takes over once the lease runs out.
        a_stop.cancel();
        let stopped = std::time::Instant::now();
        let mut b = b;
        tokio::time::timeout(TTL + RENEW * 2, b.acquired())
            .await
            .unwrap();
        assert!(
            stopped.elapsed() >= TTL - RENEW,
            "not before A's lease ran out"
        );
        b_stop.cancel();
    }
}
