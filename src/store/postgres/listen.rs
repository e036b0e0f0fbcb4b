//! Each node listens for the events other nodes commit, so that a long-poll of the feed on
//! any node wakes when any node appends. After a lost connection it reconnects and catches
//! up from the feed's counter, so a wake-up missed meanwhile is not lost for good.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use postgres_openssl::MakeTlsConnector;
use tokio::sync::{mpsc, watch};
use tokio_postgres::AsyncMessage;

use super::{CHANNEL, PgConfig, raise};
use crate::model::Seq;

const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);

pub(super) async fn run(
    config: PgConfig,
    tls: MakeTlsConnector,
    announce: Arc<watch::Sender<Seq>>,
) {
    let mut wait = FIRST_RETRY;
    loop {
        match listen(&config, &tls, &announce).await {
            Ok(()) => wait = FIRST_RETRY,
            Err(e) if wait == FIRST_RETRY => {
                tracing::warn!(error = %e, "lost the PostgreSQL event listener; reconnecting")
            }
            Err(_) => {}
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(LAST_RETRY);
    }
}

/// Listens until the connection ends; `Ok` if it got as far as listening.
async fn listen(
    config: &PgConfig,
    tls: &MakeTlsConnector,
    announce: &watch::Sender<Seq>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tls.clone()).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Some(Ok(message)) = poll_fn(|cx| connection.poll_message(cx)).await {
            if let AsyncMessage::Notification(n) = message
                && tx.send(n.payload().to_owned()).is_err()
            {
                return;
            }
        }
    });
    let listening = async {
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        let last: i64 = client.query_one("SELECT last FROM feed", &[]).await?.get(0);
        raise(announce, last as Seq);
        Ok(())
    }
    .await;
    if listening.is_ok() {
        while let Some(payload) = rx.recv().await {
            if let Ok(seq) = payload.parse() {
                raise(announce, seq);
            }
        }
    }
    driver.abort();
    listening
}
