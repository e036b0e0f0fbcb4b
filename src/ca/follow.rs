//! A node of a cluster follows the event feed for what the other nodes change: a revocation
//! makes this node's signed CRL of that issuer stale, and a rotation step swaps in the issuer
//! set the store now describes. The feed wakes it when any node commits (the store's
//! `newest_event`), so the delay is the database's notification, milliseconds.
//! A root rotation is not in the feed: the roots are compared with the store's every
//! `EVERY` (`shared_trust`).
//! (`/validate` and OCSP need nothing: they read each certificate's state from the store.)

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Ca;
use super::rotation::Rotation;
use crate::error::Chain;
use crate::model::EventKind;
use crate::store::{MAX_PAGE, Store};

/// How long a failed read of the feed waits before it is tried again.
const RETRY: Duration = Duration::from_millis(500);
/// How often an issuer set this node could not load is tried again (with key files, the
/// operator copies a new issuer's key to each node after staging it there, and the node
/// picks it up within this long, no restart), and the roots compared with the store's (a
/// root rotation is no event in the feed, and rare enough that a read every few seconds is
/// the cheaper way to learn it).
const EVERY: Duration = Duration::from_secs(2);

pub async fn follow(
    ca: Arc<Ca>,
    rotation: Arc<Rotation>,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) {
    let mut newest = store.newest_event();
    // What was committed before this node started, it loaded at start.
    let mut seen = *newest.borrow_and_update();
    // Issuers changed and this node has not loaded them yet.
    let mut unloaded = false;
    let (mut tick, mut trust_failing) = (tokio::time::interval(EVERY), false);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = newest.changed() => if changed.is_err() { return },
            // Then on to the reload below, when the last one failed.
            _ = tick.tick() => {
                match rotation.follow_trust().await {
                    Ok(()) => trust_failing = false,
                    // Said once, while it lasts (a database outage is reported elsewhere too).
                    Err(e) if !trust_failing => {
                        trust_failing = true;
                        tracing::warn!(error = %Chain(&e), "could not compare the roots with the store's");
                    }
                    Err(_) => {}
                }
            }
            () = shutdown.cancelled() => return,
        }
        let target = *newest.borrow_and_update();
        let mut issuers_changed = unloaded;
        while seen < target {
            let events = match store.events(seen, MAX_PAGE).await {
                Ok(events) if events.is_empty() => break,
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), "could not read the event feed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(RETRY) => continue,
                        () = shutdown.cancelled() => return,
                    }
                }
            };
            for event in events {
                match event.kind {
                    EventKind::Revoked { .. } => ca.note_revoked(&event.issuer),
                    EventKind::IssuerStaged
                    | EventKind::IssuerActivated
                    | EventKind::IssuerRetiring
                    | EventKind::IssuerRetired => issuers_changed = true,
                    _ => {}
                }
                seen = event.seq;
            }
        }
        if issuers_changed {
            match rotation.reload().await {
                Ok(()) if unloaded => {
                    unloaded = false;
                    tracing::info!("loaded the issuers another node changed");
                }
                Ok(()) => {}
                // Said once; tried again every EVERY until the keys are here.
                Err(e) if !unloaded => {
                    unloaded = true;
                    tracing::error!(
                        error = %Chain(&e),
                        "another node changed the issuers, and this node cannot load them yet (copy the new issuer's key here, or use the cluster's PKCS#11 token); trying again every 2 s"
                    );
                }
                Err(_) => {}
            }
        }
    }
}
