//! PostgreSQL backend: several enrollca nodes over one database.
//!
//! Every write is one transaction under READ COMMITTED. What must not race is made safe by
//! the database, not by a node: a serial is the certificates' primary key, a one-time
//! challenge is used up by deleting its row (a second user finds none), a document is written
//! only at the version the caller read (`UPDATE … WHERE version = $v`), and an issuer's row is
//! locked while a rotation step checks its state. Events take their numbers from the one-row
//! `feed` table, locked as the last step before the commit, so numbers are handed out in
//! commit order: the feed has no gaps and no reader sees event n+1 before event n, whichever
//! node wrote them. A commit that appends events notifies `enrollca_events`; each node
//! listens, so its long-polls wake when any node commits.
//!
//! Records are the same CBOR as sled's (`store::codec`); the columns beside them exist for
//! the queries (schema in `migrations/`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts,
};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::codec::{decode, encode};
use super::{
    CertQuery, CertRecord, CertStatus, ChallengeHash, ChallengeRecord, Doc, DocKey, DocKind,
    DocWrite, Event, EventKind, Expect, IssuerChange, IssuerRecord, Linked, MAX_PAGE, Page,
    Revoked, Seq, Store, StoreError, UseUp,
};
use crate::error::cause;
use crate::model::{IssuerId, RevocationReason, Serial, Standing};

mod import;
mod listen;
mod migrate;
mod target;

use target::PgConfig;
pub use target::PgTarget;

/// The channel a commit that appends events notifies, with the newest sequence number.
const CHANNEL: &str = "enrollca_events";
/// Most certificates one sweep transaction notes (as sled's writer batches).
const SWEEP_BATCH: i64 = 512;
/// How often a transaction the database aborted to break a deadlock or a serialization
/// conflict is tried again before the caller is told the store is unavailable.
const ATTEMPTS: usize = 5;
/// How long making a connection may take before the request is answered 503: a database
/// that is down must not hold the node's requests.
const CONNECT_WAIT: Duration = Duration::from_secs(5);
/// How long a request queues for a free connection while all are busy. A burst queues here,
/// as it does at sled's writer; the HTTP request deadline (90 s) bounds it. (5 s, as for
/// connecting, answered 503 to the back of a 2,000-commit burst on 8 connections: commits
/// take their turn at the feed counter, a few ms each.)
const POOL_WAIT: Duration = Duration::from_secs(30);

pub struct PgStore {
    pool: Pool,
    newest: watch::Receiver<Seq>,
    announce: Arc<watch::Sender<Seq>>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Why a transaction did not commit: the caller's request was refused (rolled back, and
/// answered as it is), or the database failed.
enum TxError {
    Refused(StoreError),
    Db(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e)
    }
}

type TxResult<T> = Result<T, TxError>;
type Tx<'a> = deadpool_postgres::Transaction<'a>;
type TxFuture<'a, T> = Pin<Box<dyn Future<Output = TxResult<(T, Vec<Event>)>> + Send + 'a>>;

fn backend(context: &str, e: tokio_postgres::Error) -> StoreError {
    StoreError::backend(format!("PostgreSQL, {context}"), cause(e))
}

fn refused<T>(e: StoreError) -> TxResult<T> {
    Err(TxError::Refused(e))
}

/// Sequence numbers and versions are `bigint`; ours never reach 2^63.
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl PgStore {
    /// Connects, applies the migrations this binary carries (under an advisory lock, so that
    /// nodes starting together apply each once), checks that commits are durable, and starts
    /// listening for other nodes' events.
    pub async fn connect(target: PgTarget, pool_size: usize) -> Result<Self, StoreError> {
        if let Some(why) = target.exposure() {
            tracing::warn!("{why}");
        }
        let PgTarget {
            mut config, tls, ..
        } = target;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_WAIT);
        }
        if config.get_application_name().is_none() {
            config.application_name("enrollca");
        }
        migrate::run(&config, tls.clone()).await?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(POOL_WAIT),
                create: Some(CONNECT_WAIT),
                recycle: Some(CONNECT_WAIT),
            })
            .build()
            .map_err(|e| StoreError::backend("PostgreSQL, building the pool", cause(e)))?;
        let client = pool.get().await.map_err(pool_error)?;
        let durable = client
            .query_one("SHOW synchronous_commit", &[])
            .await
            .map_err(|e| backend("reading synchronous_commit", e))?;
        let setting: String = durable.get(0);
        if setting == "off" {
            return Err(StoreError::backend(
                "PostgreSQL, checking durability",
                cause(
                    "synchronous_commit is off: the database would acknowledge certificates it \
                     could lose; set it to on",
                ),
            ));
        }
        let last: i64 = client
            .query_one("SELECT last FROM feed", &[])
            .await
            .map_err(|e| backend("reading the feed", e))?
            .get(0);
        drop(client);
        let (announce, newest) = watch::channel(last as Seq);
        let announce = Arc::new(announce);
        let listener = tokio::spawn(listen::run(config, tls, announce.clone()));
        Ok(Self {
            pool,
            newest,
            announce,
            listener,
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Runs one statement on a pooled connection, prepared once per connection (deadpool's
    /// statement cache); `what` names it in errors.
    async fn query(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(sql)
            .await
            .map_err(|e| backend(what, e))?;
        client
            .query(&statement, params)
            .await
            .map_err(|e| backend(what, e))
    }

    /// `query` for at most one row.
    async fn query_opt(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<tokio_postgres::Row>, StoreError> {
        Ok(self.query(what, sql, params).await?.into_iter().next())
    }

    /// `query` for a statement that returns no rows.
    async fn execute(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<(), StoreError> {
        self.query(what, sql, params).await.map(drop)
    }

    /// Runs `op` in a transaction, appends the events it returns (numbered last thing
    /// before the commit) and commits; a transaction the database aborted for a deadlock or
    /// a serialization conflict is run again. Returns `op`'s value and the number of the
    /// last event appended (0 when none).
    async fn transact<T, F>(&self, what: &'static str, op: F) -> Result<(T, Seq), StoreError>
    where
        T: Send,
        F: for<'a> Fn(&'a Tx<'a>) -> TxFuture<'a, T> + Send + Sync,
    {
        let mut client = self.client().await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = async {
                let tx = client.transaction().await?;
                let (value, mut events) = op(&tx).await?;
                let last = append(&tx, &mut events).await?;
                tx.commit().await?;
                Ok((value, last))
            }
            .await;
            match result {
                Ok((value, last)) => {
                    if last > 0 {
                        raise(&self.announce, last);
                    }
                    return Ok((value, last));
                }
                Err(TxError::Refused(e)) => return Err(e),
                Err(TxError::Db(e)) if retryable(&e) && attempt < ATTEMPTS => {
                    tracing::debug!(what, attempt, error = %e, "transaction aborted; trying again");
                }
                Err(TxError::Db(e)) => return Err(backend(what, e)),
            }
        }
    }

    /// Notes the certificates whose `due` flag is set and whose notAfter is before `until`,
    /// at `now`, a batch per transaction until none is left. Rows another node is noting are
    /// skipped, and each row's flag is cleared with its note: once per certificate, cluster-wide.
    async fn note_due(
        &self,
        due: Due,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<usize, StoreError> {
        let until = until.unix_timestamp();
        let mut noted = 0;
        loop {
            let ((n, seen), _) = self
                .transact("noting due certificates", move |tx| {
                    Box::pin(async move {
                        let select = format!(
                            "SELECT serial, record FROM certs WHERE {flag} AND not_after < $1 \
                             ORDER BY not_after LIMIT $2 FOR UPDATE SKIP LOCKED",
                            flag = due.flag()
                        );
                        let rows = tx
                            .query(&tx.prepare_cached(&select).await?, &[&until, &SWEEP_BATCH])
                            .await?;
                        let serials: Vec<Vec<u8>> = rows.iter().map(|r| r.get(0)).collect();
                        let clear = format!(
                            "UPDATE certs SET {flag} = false WHERE serial = ANY($1)",
                            flag = due.flag()
                        );
                        tx.execute(&tx.prepare_cached(&clear).await?, &[&serials])
                            .await?;
                        let mut events = Vec::new();
                        for row in &rows {
                            let bytes: &[u8] = row.get(1);
                            let rec: CertRecord = match decode("certs", bytes) {
                                Ok(rec) => rec,
                                Err(e) => return refused(e),
                            };
                            if due.applies(&rec, now) {
                                events.push(event(&rec, due.event(), now));
                            }
                        }
                        Ok(((events.len(), rows.len()), events))
                    })
                })
                .await?;
            noted += n;
            if (seen as i64) < SWEEP_BATCH {
                return Ok(noted);
            }
        }
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::backend("PostgreSQL, getting a connection", cause(e))
}

fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    )
}

/// Raises the newest known sequence number (notifications may arrive out of order).
fn raise(announce: &watch::Sender<Seq>, seq: Seq) {
    announce.send_if_modified(|newest| {
        let newer = seq > *newest;
        if newer {
            *newest = seq;
        }
        newer
    });
}

/// Numbers `events` from the feed, stores them and notifies the other nodes (delivered at
/// commit). The feed row stays locked until the commit: this is what orders the feed.
async fn append(tx: &Tx<'_>, events: &mut [Event]) -> TxResult<Seq> {
    if events.is_empty() {
        return Ok(0);
    }
    let n = int(events.len() as u64);
    let last: i64 = tx
        .query_one(
            &tx.prepare_cached("UPDATE feed SET last = last + $1 RETURNING last")
                .await?,
            &[&n],
        )
        .await?
        .get(0);
    let first = last - n + 1;
    let mut seqs = Vec::with_capacity(events.len());
    let mut bodies = Vec::with_capacity(events.len());
    for (i, e) in events.iter_mut().enumerate() {
        e.seq = (first + i as i64) as Seq;
        seqs.push(first + i as i64);
        bodies.push(encode(e));
    }
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO events (seq, event) SELECT * FROM unnest($1::bigint[], $2::bytea[])",
        )
        .await?,
        &[&seqs, &bodies],
    )
    .await?;
    tx.execute(
        &tx.prepare_cached("SELECT pg_notify($1, $2)").await?,
        &[&CHANNEL, &last.to_string()],
    )
    .await?;
    Ok(last as Seq)
}

fn event(rec: &CertRecord, kind: EventKind, at: OffsetDateTime) -> Event {
    Event {
        seq: 0,
        at,
        kind,
        serial: rec.serial.clone(),
        issuer: rec.issuer.clone(),
        device: rec.device.clone(),
    }
}

/// Uses up a one-time challenge: deletes its row (so a concurrent user finds none) and
/// refuses, rolling the delete back, when it was missing or expired at `at`.
async fn use_up(tx: &Tx<'_>, consume: Option<UseUp>) -> TxResult<()> {
    let Some(UseUp { challenge, at }) = consume else {
        return Ok(());
    };
    let row = tx
        .query_opt(
            &tx.prepare_cached("DELETE FROM challenges WHERE hash = $1 RETURNING record")
                .await?,
            &[&challenge.as_bytes().as_slice()],
        )
        .await?;
    let live = row.is_some_and(|row| {
        decode::<ChallengeRecord>("challenges", row.get(0)).is_ok_and(|c| c.is_live(at))
    });
    if live {
        Ok(())
    } else {
        refused(StoreError::ChallengeUnavailable)
    }
}

/// Applies document writes in order, each only if the document is as its writer expects;
/// on a transaction, or, for one write alone, on a connection (one statement is atomic).
async fn write_docs(tx: &impl GenericClient, writes: &[DocWrite]) -> TxResult<()> {
    for w in writes {
        let kind = i16::from(w.key.kind.tag());
        let id = w.key.id.as_str();
        let met = match (w.expect, &w.value) {
            (Expect::Absent, Some(value)) => {
                tx.execute(
                    &tx.prepare_cached(
                        "INSERT INTO docs (kind, id, version, value) VALUES ($1, $2, 1, $3) \
                     ON CONFLICT DO NOTHING",
                    )
                    .await?,
                    &[&kind, &id, value],
                )
                .await?
                    == 1
            }
            (Expect::Absent, None) => tx
                .query_opt(
                    &tx.prepare_cached("SELECT 1 FROM docs WHERE kind = $1 AND id = $2")
                        .await?,
                    &[&kind, &id],
                )
                .await?
                .is_none(),
            (Expect::Version(v), Some(value)) => {
                tx.execute(
                    &tx.prepare_cached(
                        "UPDATE docs SET version = version + 1, value = $3 \
                     WHERE kind = $1 AND id = $2 AND version = $4",
                    )
                    .await?,
                    &[&kind, &id, value, &int(v)],
                )
                .await?
                    == 1
            }
            (Expect::Version(v), None) => {
                tx.execute(
                    &tx.prepare_cached(
                        "DELETE FROM docs WHERE kind = $1 AND id = $2 AND version = $3",
                    )
                    .await?,
                    &[&kind, &id, &int(v)],
                )
                .await?
                    == 1
            }
        };
        if !met {
            return refused(StoreError::Conflict {
                kind: w.key.kind,
                id: w.key.id.clone(),
            });
        }
    }
    Ok(())
}

/// What a revoked certificate's `revocation` column holds.
fn revocation(rec: &CertRecord) -> Option<Vec<u8>> {
    match rec.status {
        CertStatus::Good => None,
        CertStatus::Revoked { at, reason } => Some(encode(&Revoked {
            serial: rec.serial.clone(),
            at,
            reason,
            not_after: rec.not_after,
        })),
    }
}

async fn insert_tx(tx: &Tx<'_>, rec: &CertRecord, linked: &Linked) -> TxResult<((), Vec<Event>)> {
    use_up(
        tx,
        linked.consume.map(|challenge| UseUp {
            challenge,
            at: rec.issued_at,
        }),
    )
    .await?;
    write_docs(tx, &linked.docs).await?;
    let serial = rec.serial.as_bytes();
    let inserted = tx
        .execute(
            &tx.prepare_cached(
                "INSERT INTO certs (serial, issuer, device, not_after, revocation, expired_due, \
             expiring_due, record) VALUES ($1, $2, $3, $4, $5, true, true, $6) \
             ON CONFLICT DO NOTHING",
            )
            .await?,
            &[
                &serial,
                &rec.issuer.as_str(),
                &rec.device.as_ref().map(|d| d.as_str()),
                &rec.not_after.unix_timestamp(),
                &revocation(rec),
                &encode(rec),
            ],
        )
        .await?;
    if inserted == 0 {
        return refused(StoreError::DuplicateSerial(rec.serial.clone()));
    }
    // What a renewal replaces will not need renewing.
    if let Some(old) = &rec.replaces {
        tx.execute(
            &tx.prepare_cached("UPDATE certs SET expiring_due = false WHERE serial = $1")
                .await?,
            &[&old.as_bytes()],
        )
        .await?;
    }
    Ok(((), vec![event(rec, rec.issuance_event(), rec.issued_at)]))
}

async fn revoke_tx(
    tx: &Tx<'_>,
    serial: &Serial,
    reason: RevocationReason,
    at: OffsetDateTime,
) -> TxResult<(CertRecord, Vec<Event>)> {
    let row = tx
        .query_opt(
            &tx.prepare_cached("SELECT record FROM certs WHERE serial = $1 FOR UPDATE")
                .await?,
            &[&serial.as_bytes()],
        )
        .await?;
    let Some(row) = row else {
        return refused(StoreError::NotFound(serial.clone()));
    };
    let mut rec: CertRecord = match decode("certs", row.get(0)) {
        Ok(rec) => rec,
        Err(e) => return refused(e),
    };
    if rec.status != CertStatus::Good {
        return refused(StoreError::AlreadyRevoked(serial.clone()));
    }
    rec.status = CertStatus::Revoked { at, reason };
    tx.execute(
        &tx.prepare_cached(
            "UPDATE certs SET record = $2, revocation = $3, expiring_due = false WHERE serial = $1",
        )
        .await?,
        &[&serial.as_bytes(), &encode(&rec), &revocation(&rec)],
    )
    .await?;
    let events = vec![event(&rec, EventKind::Revoked { reason }, at)];
    Ok((rec, events))
}

async fn change_issuers_tx(
    tx: &Tx<'_>,
    changes: &[IssuerChange],
    at: OffsetDateTime,
) -> TxResult<((), Vec<Event>)> {
    let mut events = Vec::with_capacity(changes.len());
    for c in changes {
        let id = c.record.id.as_str();
        let row = tx
            .query_opt(
                &tx.prepare_cached("SELECT record FROM issuers WHERE id = $1 FOR UPDATE")
                    .await?,
                &[&id],
            )
            .await?;
        let now = match row {
            None => None,
            Some(row) => match decode::<IssuerRecord>("issuers", row.get(0)) {
                Ok(r) => Some(r.state),
                Err(e) => return refused(e),
            },
        };
        if now != c.was {
            return refused(StoreError::IssuerChanged(c.record.id.clone()));
        }
        let written = tx
            .execute(
                &tx.prepare_cached(
                    "INSERT INTO issuers (id, record) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record \
                 WHERE $3",
                )
                .await?,
                &[&id, &encode(&c.record), &now.is_some()],
            )
            .await?;
        // Expected absent, but another node created it meanwhile.
        if written == 0 {
            return refused(StoreError::IssuerChanged(c.record.id.clone()));
        }
        events.push(Event {
            seq: 0,
            at,
            kind: c.event.clone(),
            serial: c.serial.clone(),
            issuer: c.record.id.clone(),
            device: None,
        });
    }
    Ok(((), events))
}

/// An event the sweep notes once per certificate (the same rules as sled's).
#[derive(Clone, Copy)]
enum Due {
    Expired,
    Expiring,
}

impl Due {
    fn flag(self) -> &'static str {
        match self {
            Self::Expired => "expired_due",
            Self::Expiring => "expiring_due",
        }
    }

    fn event(self) -> EventKind {
        match self {
            Self::Expired => EventKind::Expired,
            Self::Expiring => EventKind::Expiring,
        }
    }

    fn applies(self, rec: &CertRecord, now: OffsetDateTime) -> bool {
        match self {
            Self::Expired => rec.status == CertStatus::Good,
            Self::Expiring => rec.standing(now) == Standing::Good,
        }
    }
}

fn doc_row(row: &tokio_postgres::Row) -> (String, Doc) {
    let version: i64 = row.get(1);
    (
        row.get(0),
        Doc {
            value: row.get(2),
            version: version as u64,
        },
    )
}

/// The end of the id range that starts with `prefix` (its last character, bumped), when
/// there is one; ids are compared byte-wise ("C" collation).
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = char::from_u32(last as u32 + 1) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[async_trait]
impl Store for PgStore {
    async fn insert_certificate(
        &self,
        record: CertRecord,
        linked: Linked,
    ) -> Result<Seq, StoreError> {
        let record = Arc::new(record);
        let linked = Arc::new(linked);
        let ((), seq) = self
            .transact("recording a certificate", move |tx| {
                let (record, linked) = (record.clone(), linked.clone());
                Box::pin(async move { insert_tx(tx, &record, &linked).await })
            })
            .await?;
        Ok(seq)
    }

    async fn doc(&self, key: &DocKey) -> Result<Option<Doc>, StoreError> {
        let row = self
            .query_opt(
                "reading a document",
                "SELECT id, version, value FROM docs WHERE kind = $1 AND id = $2",
                &[&i16::from(key.kind.tag()), &key.id.as_str()],
            )
            .await?;
        Ok(row.as_ref().map(|r| doc_row(r).1))
    }

    async fn docs(
        &self,
        kind: DocKind,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Doc)>, StoreError> {
        let limit = int(limit.clamp(1, MAX_PAGE) as u64);
        let start = after.unwrap_or(prefix);
        let end = prefix_end(prefix);
        let rows = self
            .query(
                "listing documents",
                "SELECT id, version, value FROM docs WHERE kind = $1 \
                 AND (id > $2 OR ($3 AND id = $2)) AND ($4::text IS NULL OR id < $4) \
                 AND starts_with(id, $5) ORDER BY id LIMIT $6",
                &[
                    &i16::from(kind.tag()),
                    &start,
                    &after.is_none(),
                    &end,
                    &prefix,
                    &limit,
                ],
            )
            .await?;
        Ok(rows.iter().map(doc_row).collect())
    }

    async fn commit_docs(
        &self,
        writes: Vec<DocWrite>,
        consume: Option<UseUp>,
    ) -> Result<(), StoreError> {
        // One write is one statement: no transaction around it (a used nonce, a CAS update),
        // which spares two round trips and two statements.
        if let ([write], None) = (writes.as_slice(), &consume) {
            let client = self.client().await?;
            return match write_docs(&client, std::slice::from_ref(write)).await {
                Ok(()) => Ok(()),
                Err(TxError::Refused(e)) => Err(e),
                Err(TxError::Db(e)) => Err(backend("writing a document", e)),
            };
        }
        let writes = Arc::new(writes);
        self.transact("writing documents", move |tx| {
            let writes = writes.clone();
            Box::pin(async move {
                use_up(tx, consume).await?;
                write_docs(tx, &writes).await?;
                Ok(((), Vec::new()))
            })
        })
        .await
        .map(drop)
    }

    async fn put_challenge(
        &self,
        hash: ChallengeHash,
        record: ChallengeRecord,
    ) -> Result<(), StoreError> {
        self.execute(
            "storing a challenge",
            "INSERT INTO challenges (hash, expires_at, record) VALUES ($1, $2, $3) \
                 ON CONFLICT (hash) DO UPDATE SET expires_at = EXCLUDED.expires_at, \
                 record = EXCLUDED.record",
            &[
                &hash.as_bytes().as_slice(),
                &record.expires_at.unix_timestamp(),
                &encode(&record),
            ],
        )
        .await?;
        Ok(())
    }

    async fn purge_challenges(&self, now: OffsetDateTime) -> Result<usize, StoreError> {
        let (purged, _) = self
            .transact("purging challenges", move |tx| {
                Box::pin(async move {
                    let rows = tx
                        .query(
                            &tx.prepare_cached(
                                "SELECT hash, record FROM challenges WHERE expires_at <= $1 \
                             FOR UPDATE SKIP LOCKED",
                            )
                            .await?,
                            &[&now.unix_timestamp()],
                        )
                        .await?;
                    let expired: Vec<Vec<u8>> = rows
                        .iter()
                        .filter(|row| {
                            decode::<ChallengeRecord>("challenges", row.get(1))
                                .is_ok_and(|c| !c.is_live(now))
                        })
                        .map(|row| row.get(0))
                        .collect();
                    tx.execute(
                        &tx.prepare_cached("DELETE FROM challenges WHERE hash = ANY($1)")
                            .await?,
                        &[&expired],
                    )
                    .await?;
                    Ok((expired.len(), Vec::new()))
                })
            })
            .await?;
        Ok(purged)
    }

    async fn challenge(&self, hash: &ChallengeHash) -> Result<Option<ChallengeRecord>, StoreError> {
        self.query_opt(
            "reading a challenge",
            "SELECT record FROM challenges WHERE hash = $1",
            &[&hash.as_bytes().as_slice()],
        )
        .await?
        .map(|row| decode("challenges", row.get(0)))
        .transpose()
    }

    async fn expire(&self, now: OffsetDateTime) -> Result<usize, StoreError> {
        self.note_due(Due::Expired, now, now).await
    }

    async fn expiring(
        &self,
        now: OffsetDateTime,
        within: time::Duration,
    ) -> Result<usize, StoreError> {
        self.note_due(Due::Expiring, now + within, now).await
    }

    async fn revoke(
        &self,
        serial: &Serial,
        reason: RevocationReason,
        at: OffsetDateTime,
    ) -> Result<CertRecord, StoreError> {
        let serial = serial.clone();
        let (rec, _) = self
            .transact("revoking a certificate", move |tx| {
                let serial = serial.clone();
                Box::pin(async move { revoke_tx(tx, &serial, reason, at).await })
            })
            .await?;
        Ok(rec)
    }

    async fn certificate(&self, serial: &Serial) -> Result<Option<CertRecord>, StoreError> {
        self.query_opt(
            "reading a certificate",
            "SELECT record FROM certs WHERE serial = $1",
            &[&serial.as_bytes()],
        )
        .await?
        .map(|row| decode("certs", row.get(0)))
        .transpose()
    }

    async fn certificates(&self, query: CertQuery) -> Result<Page<CertRecord>, StoreError> {
        let limit = query.limit.clamp(1, MAX_PAGE);
        let now = query.now.unwrap_or_else(OffsetDateTime::now_utc);
        let query = CertQuery {
            now: Some(now),
            ..query
        };
        // The columns narrow the candidates (whole seconds, so a little wide); each is then
        // judged by the query itself, as sled does.
        let standing = match query.status {
            None => "",
            Some(Standing::Revoked) => "AND revocation IS NOT NULL",
            Some(Standing::Good) => "AND revocation IS NULL AND not_after >= $4",
            Some(Standing::Expired) => "AND revocation IS NULL AND not_after <= $4",
        };
        let sql = format!(
            "SELECT record FROM certs WHERE serial > $1 AND ($2::text IS NULL OR device = $2) \
             AND ($3::text IS NULL OR issuer = $3) AND $4::bigint IS NOT NULL {standing} \
             ORDER BY serial LIMIT $5"
        );
        let device = query.device.as_ref().map(|d| d.as_str());
        let issuer = query.issuer.as_ref().map(|i| i.as_str());
        let now_s = now.unix_timestamp();
        let chunk = int(limit as u64 + 1);
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&sql)
            .await
            .map_err(|e| backend("listing certificates", e))?;
        let mut after = query
            .after
            .as_ref()
            .map_or_else(Vec::new, |s| s.as_bytes().to_vec());
        let mut items = Vec::new();
        loop {
            let params: [&(dyn ToSql + Sync); 5] = [&after, &device, &issuer, &now_s, &chunk];
            let rows = client
                .query(&statement, &params)
                .await
                .map_err(|e| backend("listing certificates", e))?;
            let full = rows.len() as i64 == chunk;
            for row in &rows {
                let rec: CertRecord = decode("certs", row.get(0))?;
                after = rec.serial.as_bytes().to_vec();
                if query.matches(&rec) {
                    items.push(rec);
                    if items.len() > limit {
                        items.pop();
                        let next = items.last().map(|r| r.serial.clone());
                        return Ok(Page { items, next });
                    }
                }
            }
            if !full {
                return Ok(Page { items, next: None });
            }
        }
    }

    async fn events(&self, after: Seq, limit: usize) -> Result<Vec<Event>, StoreError> {
        let limit = int(limit.clamp(1, MAX_PAGE) as u64);
        self.query(
            "reading the feed",
            "SELECT event FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&int(after), &limit],
        )
        .await?
        .iter()
        .map(|row| decode("events", row.get(0)))
        .collect()
    }

    async fn issuers(&self) -> Result<Vec<IssuerRecord>, StoreError> {
        self.query(
            "reading the issuers",
            "SELECT record FROM issuers ORDER BY id",
            &[],
        )
        .await?
        .iter()
        .map(|row| decode("issuers", row.get(0)))
        .collect()
    }

    async fn revoked(&self, issuer: &IssuerId) -> Result<Vec<Revoked>, StoreError> {
        self.query(
            "reading revocations",
            "SELECT revocation FROM certs WHERE issuer = $1 AND revocation IS NOT NULL \
                 ORDER BY serial",
            &[&issuer.as_str()],
        )
        .await?
        .iter()
        .map(|row| decode("certs", row.get(0)))
        .collect()
    }

    async fn put_issuer(&self, record: IssuerRecord) -> Result<(), StoreError> {
        self.execute(
            "storing an issuer",
            "INSERT INTO issuers (id, record) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
            &[&record.id.as_str(), &encode(&record)],
        )
        .await?;
        Ok(())
    }

    async fn change_issuers(
        &self,
        changes: Vec<IssuerChange>,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let changes = Arc::new(changes);
        self.transact("changing issuers", move |tx| {
            let changes = changes.clone();
            Box::pin(async move { change_issuers_tx(tx, &changes, at).await })
        })
        .await
        .map(drop)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Every acknowledged commit is already durable (synchronous_commit is checked at
        // connect); what is left to know is whether the database answers (`/healthz`).
        self.client()
            .await?
            .execute("SELECT 1", &[])
            .await
            .map_err(|e| backend("checking the connection", e))?;
        Ok(())
    }

    fn newest_event(&self) -> watch::Receiver<Seq> {
        self.newest.clone()
    }
}
