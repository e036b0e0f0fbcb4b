//! Pushes the event feed to the MDM's webhook: every event, in order, at least once.
//!
//! The feed itself is the outbox: events are durable and sequenced before anyone hears of
//! them, so delivery only needs a durable cursor (the last sequence the receiver
//! acknowledged with a 2xx). A batch is retried with growing pauses until it is accepted;
//! nothing later is sent before it.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::secret::Secret;
use crate::store::{Collection, DocKind, Event, Lease, Seq, Store, StoreError};

/// Events per delivery.
const BATCH: usize = 100;
const FIRST_PAUSE: Duration = Duration::from_millis(500);
const LONGEST_PAUSE: Duration = Duration::from_secs(60);
const TIMEOUT: Duration = Duration::from_secs(10);
/// Webhook URL → the last event sequence it acknowledged.
const CURSORS: Collection<Seq> = Collection::new(DocKind::WebhookCursor);

/// The signature header: `sha256=` and the hex HMAC-SHA256 of the body under the secret.
pub(crate) const SIGNATURE_HEADER: &str = "x-enrollca-signature";

#[derive(Serialize)]
struct Delivery<'a> {
    events: &'a [Event],
}

pub(crate) struct Webhook {
    url: String,
    key: ring::hmac::Key,
    http: reqwest::Client,
    store: Arc<dyn Store>,
    /// Delivery is one node's at a time, so the receiver sees one ordered stream.
    lease: Lease,
}

impl Webhook {
    pub(crate) fn new(
        url: String,
        secret: &Secret,
        store: Arc<dyn Store>,
        lease: Lease,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.expose().as_bytes()),
            http: reqwest::Client::builder()
                .timeout(TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            url,
            store,
            lease,
        })
    }

    /// Delivers until `shutdown`, while this node holds the lease.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let mut cursor = None;
        let mut newest = self.store.newest_event();
        let mut pause = FIRST_PAUSE;
        loop {
            if !self.lease.held() {
                // Whoever delivered meanwhile moved the cursor: read it again once ours.
                cursor = None;
                tokio::select! {
                    () = self.lease.acquired() => {}
                    () = shutdown.cancelled() => return,
                }
            }
            let cursor = match &mut cursor {
                Some(c) => c,
                None => match self.cursor().await {
                    Ok(c) => cursor.insert(c),
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?pause, "event webhook: cannot read its cursor");
                        tokio::select! {
                            () = tokio::time::sleep(pause) => {}
                            () = shutdown.cancelled() => return,
                        }
                        pause = (pause * 2).min(LONGEST_PAUSE);
                        continue;
                    }
                },
            };
            // Every failure (reading the feed, delivering, storing the cursor) waits before
            // the next try, longer each time: a store that refuses the cursor must not turn
            // into the same batch sent again at once, forever.
            let failed = match self.store.events(cursor.0, BATCH).await {
                Err(e) => format!("cannot read the feed: {e}"),
                Ok(batch) if batch.is_empty() => {
                    let after = cursor.0;
                    tokio::select! {
                        _ = newest.wait_for(|seq| *seq > after) => continue,
                        // Gone to another node: the loop's top waits to get it back.
                        () = self.lease.lost() => continue,
                        () = shutdown.cancelled() => return,
                    }
                }
                Ok(batch) => {
                    let last = batch.last().map_or(cursor.0, |e| e.seq);
                    match self.deliver(&batch).await {
                        Err(why) => format!("delivery of {} failed: {why}", batch[0].seq),
                        Ok(()) => match self.advance(cursor, last).await {
                            Ok(()) => {
                                pause = FIRST_PAUSE;
                                continue;
                            }
                            Err(e) => {
                                // Another writer may have moved it: start from what is stored.
                                if let Ok(stored) = self.cursor().await {
                                    *cursor = stored;
                                }
                                format!("cannot store its cursor: {e}")
                            }
                        },
                    }
                }
            };
            tracing::info!(why = %failed, retry_in = ?pause, "event webhook");
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = shutdown.cancelled() => return,
            }
            pause = (pause * 2).min(LONGEST_PAUSE);
        }
    }

    async fn deliver(&self, events: &[Event]) -> Result<(), String> {
        let body = serde_json::to_vec(&Delivery { events }).map_err(|e| e.to_string())?;
        let signature = hex::encode(ring::hmac::sign(&self.key, &body).as_ref());
        let resp = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, format!("sha256={signature}"))
            .body(body)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered HTTP {}", resp.status()))
        }
    }

    /// The acknowledged sequence and the version of the document holding it.
    async fn cursor(&self) -> Result<(Seq, Option<u64>), StoreError> {
        let stored = CURSORS.get(self.store.as_ref(), &self.url).await?;
        Ok(stored.map_or((0, None), |s| (s.value, Some(s.version))))
    }

    async fn advance(&self, cursor: &mut (Seq, Option<u64>), to: Seq) -> Result<(), StoreError> {
        let write = CURSORS.put(&self.url, cursor.1, &to);
        self.store.write_docs(vec![write]).await?;
        *cursor = (to, Some(cursor.1.map_or(1, |v| v + 1)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Instant;

    use time::OffsetDateTime;

    use super::*;
    use crate::ca::Serial;
    use crate::store::{CertRecord, CertStatus, DocWrite, Linked, Protocol, SledStore};

    /// A receiver that accepts every delivery and notes when each came.
    async fn receiver() -> (String, Arc<Mutex<Vec<Instant>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let noted = seen.clone();
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move || {
                noted.lock().unwrap().push(Instant::now());
                async {}
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    /// A receiver that acknowledges a batch whose cursor then cannot be stored hears the batch
    /// again, but after growing pauses, not at once and for ever.
    #[tokio::test]
    async fn a_cursor_that_cannot_be_stored_is_retried_with_growing_pauses() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        let (url, seen) = receiver().await;
        let webhook = Webhook::new(
            url.clone(),
            &Secret::new("s"),
            store.clone(),
            Lease::alone(),
        )
        .unwrap();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(webhook.run(shutdown.clone()));
        let now = OffsetDateTime::now_utc();
        let record = || CertRecord {
            serial: Serial::random(),
            issuer: "0123456789abcdef".parse().unwrap(),
            subject: "CN=x".into(),
            sans: Vec::new(),
            device: None,
            not_before: now,
            not_after: now + time::Duration::days(1),
            issued_at: now,
            protocol: Protocol::Admin,
            profile: "p".into(),
            replaces: None,
            account: None,
            attested: None,
            status: CertStatus::Good,
            der: vec![0x30, 0],
        };
        // A first event, delivered and acknowledged: the loop is running, its cursor stored.
        store
            .insert_certificate(record(), Linked::default())
            .await
            .unwrap();
        let key = CURSORS.key(url.as_str());
        let stored = loop {
            if let Some(doc) = store.doc(&key).await.unwrap() {
                break doc.version;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // The cursor document replaced by one that does not decode: the next write of the
        // cursor conflicts with it and re-reading it fails, so it can never be stored again.
        let garbage = DocWrite::put(CURSORS.kind(), &url, Some(stored), &"not a sequence");
        store.write_docs(vec![garbage]).await.unwrap();
        seen.lock().unwrap().clear();
        let started = Instant::now();
        store
            .insert_certificate(record(), Linked::default())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2_300)).await;
        shutdown.cancel();
        running.await.unwrap();

        let seen = seen.lock().unwrap().clone();
        // At once, after 0.5 s, after a further 1 s (the next would be 2 s later): three
        // deliveries, each gap longer.
        let at: Vec<Duration> = seen.iter().take(5).map(|t| *t - started).collect();
        assert_eq!(seen.len(), 3, "deliveries, the first at {at:?}");
        let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps[0] >= FIRST_PAUSE, "{gaps:?}");
        assert!(gaps[1] >= FIRST_PAUSE * 2, "{gaps:?}");
    }
}
