//! PostgreSQL backend: several enrollca nodes over one database.
//!
//! Every write is one transaction under READ COMMITTED; those a request makes (documents,
//! a certificate with what commits with it) are one call of a function the migrations define,
//! so each costs one round trip and one statement. What must not race is made safe by the
//! database, not by a node: a serial is the certificates' primary key, a one-time challenge
//! is used up by deleting its row (a second user finds none), a document is written only at
//! the version the caller read (`UPDATE … WHERE version = $v`), and an issuer's row is
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
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::codec::{decode, encode};
use super::{
    CertQuery, CertRecord, CertStatus, ChallengeHash, ChallengeRecord, Doc, DocKey, DocKind,
    DocWrite, Event, EventKind, Expect, IssuerChange, IssuerRecord, Linked, MAX_PAGE, NonceOutcome,
    Page, Revoked, Seq, Store, StoreError, UseUp, UsedNonce,
};
use crate::error::cause;
use crate::model::{IssuerId, RevocationReason, Serial, Standing};

mod import;
mod listen;
mod migrate;
mod target;

use target::PgConfig;
pub use target::PgTarget;

/// The channel a commit that appends events notifies, with the newest sequence number
/// (`enrollca_append` in the migrations names it too).
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
    /// statement cache), again when the database aborted it for a deadlock or a serialization
    /// conflict; `what` names it in errors.
    async fn query(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        self.call(what, sql, params, |_| None).await
    }

    /// `query` for a function that may refuse (an error of class EC): `refusal` says what
    /// the caller is told then.
    async fn call(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        refusal: impl Fn(&tokio_postgres::Error) -> Option<StoreError>,
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(sql)
            .await
            .map_err(|e| backend(what, e))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match client.query(&statement, params).await {
                Ok(rows) => return Ok(rows),
                Err(e) => {
                    if let Some(refused) = refusal(&e) {
                        return Err(refused);
                    }
                    if retryable(&e) && attempt < ATTEMPTS {
                        tracing::debug!(what, attempt, error = %e, "statement aborted; trying again");
                        continue;
                    }
                    return Err(backend(what, e));
                }
            }
        }
    }

    /// Uses up a challenge (if asked) and applies document writes, in one statement
    /// (`enrollca_commit`).
    async fn commit(&self, writes: &[DocWrite], consume: Option<UseUp>) -> Result<(), StoreError> {
        let w = Writes::new(writes);
        let (hash, at_ns) = use_up_params(consume);
        self.call(
            "writing documents",
            "SELECT enrollca_commit($1, $2, $3, $4, $5, $6)",
            &[&hash, &at_ns, &w.kinds, &w.ids, &w.expects, &w.values],
            |e| refusal(e, writes, None),
        )
        .await
        .map(drop)
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
                let (value, events) = op(&tx).await?;
                let last = append(&tx, &events).await?;
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
async fn append(tx: &Tx<'_>, events: &[Event]) -> TxResult<Seq> {
    if events.is_empty() {
        return Ok(0);
    }
    let bodies: Vec<Vec<u8>> = events.iter().map(encode).collect();
    let last: i64 = tx
        .query_one(
            &tx.prepare_cached("SELECT enrollca_append($1)").await?,
            &[&bodies],
        )
        .await?
        .get(0);
    Ok(last as Seq)
}

/// An event as stored: its number is its row's (a body written in the same statement that
/// numbers it cannot hold it).
fn event_row(row: &tokio_postgres::Row) -> Result<Event, StoreError> {
    let seq: i64 = row.get(0);
    let mut event: Event = decode("events", row.get(1))?;
    event.seq = seq as Seq;
    Ok(event)
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

/// An instant as the functions compare it: Unix nanoseconds (enough until 2262).
fn unix_ns(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

/// Document writes as the functions take them (`enrollca_apply`): one array per column.
struct Writes<'a> {
    kinds: Vec<i16>,
    ids: Vec<&'a str>,
    /// `None` expects the document absent.
    expects: Vec<Option<i64>>,
    /// `None` deletes it.
    values: Vec<Option<&'a [u8]>>,
}

impl<'a> Writes<'a> {
    fn new(writes: &'a [DocWrite]) -> Self {
        Self {
            kinds: writes.iter().map(|w| i16::from(w.key.kind.tag())).collect(),
            ids: writes.iter().map(|w| w.key.id.as_str()).collect(),
            expects: writes
                .iter()
                .map(|w| match w.expect {
                    Expect::Absent => None,
                    Expect::Version(v) => Some(int(v)),
                })
                .collect(),
            values: writes.iter().map(|w| w.value.as_deref()).collect(),
        }
    }
}

/// The challenge a function uses up, and when: both `NULL` when none.
fn use_up_params(consume: Option<UseUp>) -> (Option<Vec<u8>>, i64) {
    consume.map_or((None, 0), |u| {
        (Some(u.challenge.as_bytes().to_vec()), unix_ns(u.at))
    })
}

/// A refusal the functions raise (class EC, see the migration), as the caller is told it.
fn refusal(
    e: &tokio_postgres::Error,
    writes: &[DocWrite],
    serial: Option<&Serial>,
) -> Option<StoreError> {
    let db = e.as_db_error()?;
    match db.code().code() {
        "EC001" => {
            let write = db
                .detail()
                .and_then(|d| d.parse::<usize>().ok())
                .and_then(|i| writes.get(i.checked_sub(1)?))?;
            Some(StoreError::Conflict {
                kind: write.key.kind,
                id: write.key.id.clone(),
            })
        }
        "EC002" => Some(StoreError::ChallengeUnavailable),
        "EC003" => serial.map(|s| StoreError::DuplicateSerial(s.clone())),
        _ => None,
    }
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
        let w = Writes::new(&linked.docs);
        let (hash, at_ns) = use_up_params(linked.consume.map(|challenge| UseUp {
            challenge,
            at: record.issued_at,
        }));
        let serial = record.serial.as_bytes();
        let issued = event(&record, record.issuance_event(), record.issued_at);
        let rows = self
            .call(
                "recording a certificate",
                "SELECT enrollca_issue($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                &[
                    &hash,
                    &at_ns,
                    &w.kinds,
                    &w.ids,
                    &w.expects,
                    &w.values,
                    &serial,
                    &record.issuer.as_str(),
                    &record.device.as_ref().map(|d| d.as_str()),
                    &record.not_after.unix_timestamp(),
                    &revocation(&record),
                    &encode(&record),
                    &record.replaces.as_ref().map(|s| s.as_bytes()),
                    &encode(&issued),
                ],
                |e| refusal(e, &linked.docs, Some(&record.serial)),
            )
            .await?;
        let seq = rows.first().map_or(0, |row| row.get::<_, i64>(0)) as Seq;
        raise(&self.announce, seq);
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
        self.commit(&writes, consume).await
    }

    async fn use_nonce(
        &self,
        nonce: Option<&UsedNonce>,
        reads: &[DocKey],
    ) -> Result<NonceOutcome, StoreError> {
        // Epochs are random: a new one must differ from every one before it, which a
        // sequence cannot promise after a crash (its advance may not have reached the disk).
        let candidate = i64::from_be_bytes(rand::random());
        let kinds: Vec<i16> = reads.iter().map(|k| i16::from(k.kind.tag())).collect();
        let ids: Vec<&str> = reads.iter().map(|k| k.id.as_str()).collect();
        let rows = self
            .query(
                "using a nonce",
                "SELECT current_epoch, fresh, doc_version, doc_value \
                 FROM enrollca_use_nonce($1, $2, $3, $4, $5)",
                &[
                    &nonce.map(|n| n.epoch as i64),
                    &nonce.map(|n| n.id.as_slice()),
                    &candidate,
                    &kinds,
                    &ids,
                ],
            )
            .await?;
        let first = rows.first().ok_or_else(|| StoreError::Corrupt {
            tree: "used_nonces",
            message: "enrollca_use_nonce returned no row".into(),
        })?;
        let epoch: i64 = first.get(0);
        let fresh = first.get(1);
        let docs = rows
            .iter()
            .take(reads.len())
            .map(|row| {
                let version: Option<i64> = row.get(2);
                version.map(|v| Doc {
                    value: row.get(3),
                    version: v as u64,
                })
            })
            .collect();
        Ok(NonceOutcome {
            epoch: epoch as u64,
            fresh,
            docs,
        })
    }

    async fn purge_nonces(&self, before_ms: u64) -> Result<usize, StoreError> {
        let rows = self
            .query(
                "purging used nonces",
                "WITH gone AS (DELETE FROM used_nonces WHERE id < $1 RETURNING 1) \
                 SELECT count(*) FROM gone",
                &[&before_ms.to_be_bytes().as_slice()],
            )
            .await?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)) as usize)
    }

    async fn put_challenge(
        &self,
        hash: ChallengeHash,
        record: ChallengeRecord,
    ) -> Result<(), StoreError> {
        self.execute(
            "storing a challenge",
            "INSERT INTO challenges (hash, expires_at, expires_ns, record) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (hash) DO UPDATE SET \
                 expires_at = EXCLUDED.expires_at, expires_ns = EXCLUDED.expires_ns, \
                 record = EXCLUDED.record",
            &[
                &hash.as_bytes().as_slice(),
                &record.expires_at.unix_timestamp(),
                &unix_ns(record.expires_at),
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
            "SELECT seq, event FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&int(after), &limit],
        )
        .await?
        .iter()
        .map(event_row)
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
