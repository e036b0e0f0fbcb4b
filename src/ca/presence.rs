//! Which issuers each node of a cluster can sign with, so that an activation leaves no node
//! behind. With key files, a staged issuer's key reaches the other nodes by hand; a node
//! without it would go on issuing from the retiring CA. So each node says, every few
//! seconds, which issuers it has loaded, and an activation waits for every node heard from
//! lately to hold the staged issuer's key, or is refused naming those that do not.
//! A process alone (sled) says nothing: the activating process checks its own keys.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::Ca;
use crate::error::Chain;
use crate::model::IssuerId;
use crate::store::{Backing, Collection, DocKind, StoreError};

/// How often a node says what it holds.
const EVERY: Duration = Duration::from_secs(2);
/// How long a node counts as present after it last said so: a node that stopped or died
/// holds up activations for this long at most.
const TTL: Duration = Duration::from_secs(10);
/// How long an activation waits for the nodes to load a staged issuer and say so (they
/// reload at its event, within milliseconds, and say so at their next `EVERY`).
/// After this long unheard, a node's record is removed.
const GONE: Duration = Duration::from_secs(60);
pub(super) const SETTLE: Duration = Duration::from_secs(5);

const NODES: Collection<Presence> = Collection::new(DocKind::NodePresence);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Presence {
    /// For the operator: host and process.
    name: String,
    issuers: Vec<IssuerId>,
    #[serde(with = "time::serde::rfc3339")]
    until: OffsetDateTime,
}

/// This process's id among the nodes (random: a restarted node is another node).
static THIS_NODE: LazyLock<String> = LazyLock::new(|| format!("{:016x}", rand::random::<u64>()));

fn this_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    format!("{host} (pid {})", std::process::id())
}

/// Says what this node holds every `EVERY` until `shutdown`, then withdraws.
pub async fn announce(ca: Arc<Ca>, backing: Backing, shutdown: CancellationToken) {
    let name = this_name();
    let mut failing = false;
    loop {
        let presence = Presence {
            name: name.clone(),
            issuers: ca.issuers().iter().map(|i| i.id().clone()).collect(),
            until: backing.clock.now() + TTL,
        };
        let said = NODES
            .update(backing.store.as_ref(), &THIS_NODE, |_| {
                Ok::<_, StoreError>(Some(presence.clone()))
            })
            .await;
        let said = match said {
            // A restarted node is a new node: what stopped nodes left is removed.
            Ok(_) => forget_gone(&backing).await,
            Err(e) => Err(e),
        };
        match said {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %Chain(&e), "cannot record which issuers this node holds");
            }
            Err(_) => {}
        }
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = shutdown.cancelled() => break,
        }
    }
    if let Ok(Some(mine)) = NODES.get(backing.store.as_ref(), &THIS_NODE).await {
        let _ = backing
            .store
            .write_docs(vec![NODES.delete(&THIS_NODE, mine.version)])
            .await;
    }
}

/// Removes what nodes not heard from for a minute said.
async fn forget_gone(backing: &Backing) -> Result<(), StoreError> {
    let gone = backing.clock.now() - GONE;
    let mut stale = Vec::new();
    let mut pages = NODES.pages(backing.store.as_ref());
    while let Some(page) = pages.next().await? {
        for (id, presence) in page {
            match presence {
                Ok(p) if p.value.until < gone => stale.push(NODES.delete(&id, p.version)),
                _ => {}
            }
        }
    }
    if stale.is_empty() {
        return Ok(());
    }
    match backing.store.write_docs(stale).await {
        // Another node removed them first.
        Err(StoreError::Conflict { .. }) => Ok(()),
        done => done,
    }
}

/// The other nodes heard from lately that do not hold `issuer`, by name.
pub(super) async fn lacking(
    backing: &Backing,
    issuer: &IssuerId,
) -> Result<Vec<String>, StoreError> {
    let now = backing.clock.now();
    let mut names = Vec::new();
    let mut pages = NODES.pages(backing.store.as_ref());
    while let Some(page) = pages.next().await? {
        for (id, presence) in page {
            let Ok(presence) = presence else { continue };
            let p = presence.value;
            if id != *THIS_NODE && p.until > now && !p.issuers.contains(issuer) {
                names.push(p.name);
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::SledStore;

    #[tokio::test]
    async fn only_live_nodes_without_the_issuer_hold_up_an_activation() {
        let dir = tempfile::tempdir().unwrap();
        let backing = Backing::system(Arc::new(SledStore::open(dir.path()).unwrap()));
        let (now, staged) = (backing.clock.now(), IssuerId::for_spki(b"staged"));
        let say = |name: &str, issuers: Vec<IssuerId>, until| {
            let p = Presence {
                name: name.into(),
                issuers,
                until,
            };
            NODES.create(name, &p)
        };
        backing
            .store
            .write_docs(vec![
                say("lacks", vec![], now + TTL),
                say("holds", vec![staged.clone()], now + TTL),
                say("stopped", vec![], now - Duration::from_secs(5)),
                say("gone", vec![], now - GONE - Duration::from_secs(1)),
            ])
            .await
            .unwrap();
        assert_eq!(lacking(&backing, &staged).await.unwrap(), ["lacks"]);

        forget_gone(&backing).await.unwrap();
        let left: Vec<String> = NODES
            .page(backing.store.as_ref(), "", None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(left, ["holds", "lacks", "stopped"]);
    }
}
