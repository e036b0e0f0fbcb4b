//! Durable state: certificates, their indexes, the event feed and the issuer set.
//!
//! The trait is what the service layers need, nothing more; sled is the embedded backend and
//! a shared SQL backend can implement the same trait (the battery in `tests/library/store_battery.rs`
//! runs against every backend). Each write is atomic and durable before it returns: after a crash,
//! all of it or none of it is there. A concurrent reader may see its records appear one after
//! another, but never one that refers to a record not yet there.

mod codec;
mod collection;
mod doc_cache;
mod lease;
pub mod migrate;
mod postgres;
mod settings;
mod sled;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{Cause, Kind};
use crate::model::{IssuerId, KeyFamily, RevocationReason, Serial};

pub use self::collection::{Collection, Entry, Pages};
pub use self::doc_cache::DocCache;
pub use self::lease::Lease;
pub use self::postgres::{PgStore, PgTarget};
pub use self::settings::{BackendKind, MAX_POOL, Opened, StoreSettings, open};
pub use self::sled::SledStore;
pub use crate::model::{
    CertRecord, CertStatus, DeviceId, Event, EventKind, IssuerState, Protocol, Seq, Standing,
};

/// Longest page any listing returns.
pub const MAX_PAGE: usize = 1000;

/// What a relying party asks of a certificate (is it ours, is it still good, whose is it):
/// a few dozen bytes, so the states of a whole fleet fit in memory where the full records
/// would not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertState {
    pub issuer: IssuerId,
    pub device: Option<DeviceId>,
    pub not_after: OffsetDateTime,
    pub status: CertStatus,
    /// SHA-256 of the certificate as issued: a presented certificate is ours only if it is
    /// byte for byte the one we recorded.
    pub der_sha256: [u8; 32],
}

impl CertState {
    pub fn standing(&self, now: OffsetDateTime) -> Standing {
        self.status.standing(self.not_after, now)
    }
}

impl From<&CertRecord> for CertState {
    fn from(record: &CertRecord) -> Self {
        Self {
            issuer: record.issuer.clone(),
            device: record.device.clone(),
            not_after: record.not_after,
            status: record.status,
            der_sha256: crate::encoding::sha256(&record.der),
        }
    }
}

/// An issuing CA as stored: its certificate and where its key lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuerRecord {
    pub id: IssuerId,
    pub family: KeyFamily,
    pub state: IssuerState,
    #[serde(with = "serde_bytes")]
    pub cert_der: Vec<u8>,
    /// The CA certificates between this one and its root, nearest first (an imported issuer
    /// under an intermediate); empty when the root signed it.
    #[serde(default)]
    pub intermediates: Vec<serde_bytes::ByteBuf>,
    /// Key file, relative to the data directory.
    pub key_file: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A one-time enrolment secret, known to the store only by its SHA-256.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChallengeHash([u8; 32]);

impl ChallengeHash {
    pub fn of(secret: &[u8]) -> Self {
        Self(crate::encoding::sha256(secret))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for ChallengeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChallengeHash(..)")
    }
}

/// What a one-time challenge allows: one enrolment before it expires, optionally for one
/// device only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChallengeRecord {
    pub device: Option<DeviceId>,
    /// The subject and SANs the MDM stated when minting it (`csr::Names`).
    #[serde(default)]
    pub names: crate::csr::Names,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl ChallengeRecord {
    /// Usable at `at`: the one rule for using, checking and purging challenges.
    pub fn is_live(&self, at: OffsetDateTime) -> bool {
        self.expires_at > at
    }
}

/// Protocol state the store keeps for a service without interpreting it (ACME accounts,
/// orders, ...). Each kind is its own key space; the tag is part of the on-disk key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocKind {
    AcmeAccount,
    /// Account key thumbprint (scoped by profile) → account id; keeps keys unique.
    AcmeAccountKey,
    AcmeOrder,
    /// `account/order` → nothing: an account's orders in id order.
    AcmeAccountOrder,
    /// `account/serial` → nothing: the certificates an account was issued, so that an
    /// account that got one is never purged as abandoned.
    AcmeAccountCert,
    /// Hex SHA-256 of a one-time ClientIdentifier → the device it was minted for.
    AcmeClientIdentifier,
    /// The MAC key of the ACME nonces the nodes of a cluster share.
    AcmeNonceKey,
    /// Hex issue time ‖ random part of a used shared nonce → its issue time (Unix ms).
    AcmeUsedNonce,
    /// Work done once per cluster → the node holding it, and until when.
    Lease,
    /// A node of a cluster → the issuers it holds keys for, and until when it counts.
    NodePresence,
    /// The roots and cross certificates every node serves (after root rotations).
    Trust,
    AcmeAuthz,
    AcmeEabKey,
    /// Issuer id → the last CRL number it signed (CRL numbers only ever grow).
    CrlNumber,
    /// SCEP transaction id → an enrolment waiting for an operator's decision.
    ScepPending,
    /// Hex SHA-256 of an API token → its name and scopes.
    ApiToken,
    /// Webhook URL → the last event sequence it acknowledged.
    WebhookCursor,
    /// Device id → a device the MDM registered (its serial number and UDID).
    InventoryDevice,
    /// Uppercased serial number or UDID → the registered device id; keeps them unique.
    InventoryIdentifier,
}

impl DocKind {
    pub fn tag(self) -> u8 {
        match self {
            Self::AcmeAccount => 1,
            Self::AcmeAccountKey => 2,
            Self::AcmeOrder => 3,
            Self::AcmeAccountOrder => 4,
            Self::AcmeAuthz => 5,
            Self::AcmeEabKey => 6,
            Self::CrlNumber => 7,
            Self::ScepPending => 8,
            Self::ApiToken => 9,
            Self::WebhookCursor => 10,
            Self::InventoryDevice => 11,
            Self::InventoryIdentifier => 12,
            Self::AcmeAccountCert => 13,
            Self::AcmeClientIdentifier => 14,
            Self::AcmeNonceKey => 15,
            Self::AcmeUsedNonce => 16,
            Self::Lease => 17,
            Self::NodePresence => 18,
            Self::Trust => 19,
        }
    }
}

/// What a service reads its state and its time from. Services hold it themselves rather
/// than reaching through the CA, which signs and knows neither protocol.
#[derive(Clone)]
pub struct Backing {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn crate::clock::Clock>,
}

impl Backing {
    /// `store` on the system's clock.
    pub fn system(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            clock: Arc::new(crate::clock::SystemClock),
        }
    }
}

/// A one-time challenge to use up with a write, and when: the caller's clock decides whether
/// it has expired, never the store's.
#[derive(Debug, Clone, Copy)]
pub struct UseUp {
    pub challenge: ChallengeHash,
    pub at: OffsetDateTime,
}

/// The epoch of a store that never forgets a used nonce.
pub const DURABLE_NONCE_EPOCH: u64 = 1;

/// A shared ACME nonce being used: the epoch it was issued in, and what it is remembered by
/// (its issue time in Unix ms, big-endian, then its random part: ids sort by issue time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsedNonce {
    pub epoch: u64,
    pub id: [u8; 16],
}

impl UsedNonce {
    /// The issue time (Unix ms) of a used nonce's hex id, as the document store keys it.
    fn issued_ms_of(hex_id: &str) -> Option<u64> {
        let bytes = hex::decode(hex_id).ok()?;
        Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
    }
}

/// What `Store::use_nonce` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonceOutcome {
    /// The store's current nonce epoch: the one to issue nonces in.
    pub epoch: u64,
    /// The nonce was used up now (it was of this epoch, and unused).
    pub fresh: bool,
    /// The documents asked for, in order (`None`: there is none).
    pub docs: Vec<Option<Doc>>,
}

/// A document's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DocKey {
    pub kind: DocKind,
    pub id: String,
}

impl DocKey {
    pub fn new(kind: DocKind, id: impl Into<String>) -> Self {
        Self {
            kind,
            id: id.into(),
        }
    }
}

/// Every document of one kind, a page at a time, for sweeps that may delete what they read
/// (each page starts after the last id of the one before).
pub struct DocPages<'a> {
    store: &'a dyn Store,
    kind: DocKind,
    after: Option<String>,
}

impl<'a> DocPages<'a> {
    pub fn new(store: &'a dyn Store, kind: DocKind) -> Self {
        Self {
            store,
            kind,
            after: None,
        }
    }

    /// The next page, or `None` after the last.
    pub async fn next(&mut self) -> Result<Option<Vec<(String, Doc)>>, StoreError> {
        let page = self
            .store
            .docs(self.kind, "", self.after.as_deref(), MAX_PAGE)
            .await?;
        let Some((last, _)) = page.last() else {
            return Ok(None);
        };
        self.after = Some(last.clone());
        Ok(Some(page))
    }
}

/// A stored document with its version, which counts the writes it has seen (from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    pub value: Vec<u8>,
    pub version: u64,
}

/// A document decoded, with the version it was read at (for the compare-and-swap that
/// writes it back).
#[derive(Debug, Clone)]
pub struct Stored<T> {
    pub value: T,
    pub version: u64,
}

impl Doc {
    /// Documents are CBOR, like every record of the store.
    pub fn decode<T: serde::de::DeserializeOwned>(self) -> Result<Stored<T>, StoreError> {
        Ok(Stored {
            value: codec::decode("docs", &self.value)?,
            version: self.version,
        })
    }
}

/// What a write expects to find, so that concurrent read-modify-write cycles cannot both win.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Absent,
    Version(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocWrite {
    pub key: DocKey,
    pub expect: Expect,
    /// The new value; `None` deletes.
    pub value: Option<Vec<u8>>,
}

impl DocWrite {
    /// Writes `value` (CBOR), expecting the document absent (`None`) or at `version`.
    pub fn put<T: Serialize>(kind: DocKind, id: &str, version: Option<u64>, value: &T) -> Self {
        Self {
            key: DocKey::new(kind, id),
            expect: version.map_or(Expect::Absent, Expect::Version),
            value: Some(codec::encode(value)),
        }
    }

    /// Deletes the document, if it is still at `version`.
    pub fn delete(kind: DocKind, id: &str, version: u64) -> Self {
        Self {
            key: DocKey::new(kind, id),
            expect: Expect::Version(version),
            value: None,
        }
    }
}

/// What commits, or fails, together with a certificate's record.
#[derive(Debug, Clone, Default)]
pub struct Linked {
    /// A one-time challenge the issuance uses up.
    pub consume: Option<ChallengeHash>,
    /// Documents updated in the same write (e.g. the ACME order that now names the certificate).
    pub docs: Vec<DocWrite>,
}

impl Linked {
    pub fn challenge(hash: ChallengeHash) -> Self {
        Self {
            consume: Some(hash),
            docs: Vec::new(),
        }
    }

    pub fn docs(docs: Vec<DocWrite>) -> Self {
        Self {
            consume: None,
            docs,
        }
    }
}

/// A certificate listing: filters, then a page in serial order after the cursor.
#[derive(Debug, Clone, Default)]
pub struct CertQuery {
    pub device: Option<DeviceId>,
    pub issuer: Option<IssuerId>,
    pub status: Option<Standing>,
    /// `expired` and `good` are judged against this instant.
    pub now: Option<OffsetDateTime>,
    pub after: Option<Serial>,
    pub limit: usize,
}

impl CertQuery {
    pub fn matches(&self, rec: &CertRecord) -> bool {
        let now = self.now.unwrap_or_else(OffsetDateTime::now_utc);
        self.status.is_none_or(|s| rec.standing(now) == s)
            && self
                .device
                .as_ref()
                .is_none_or(|d| rec.device.as_ref() == Some(d))
            && self.issuer.as_ref().is_none_or(|i| &rec.issuer == i)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Cursor for the next page, absent on the last.
    pub next: Option<Serial>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("serial {0} already exists")]
    DuplicateSerial(Serial),
    #[error("no certificate with serial {0}")]
    NotFound(Serial),
    #[error("certificate {0} is already revoked")]
    AlreadyRevoked(Serial),
    #[error("the one-time challenge is unknown, used or expired")]
    ChallengeUnavailable,
    /// A document was not in the state the write expected (someone else changed it first).
    #[error("{kind:?} {id} changed concurrently")]
    Conflict { kind: DocKind, id: String },
    /// The backend failed; `context` says at what.
    #[error("storage backend failed: {context}")]
    Backend {
        context: String,
        #[source]
        source: Cause,
    },
    #[error("corrupt record in {tree}: {message}")]
    Corrupt { tree: &'static str, message: String },
    #[error("the store is shut down")]
    Closed,
    /// An issuer was not in the state a rotation step expected.
    #[error("issuer {0} changed concurrently")]
    IssuerChanged(IssuerId),
}

impl StoreError {
    /// A backend failure, with what was being done when it happened.
    pub fn backend(context: impl Into<String>, source: Cause) -> Self {
        Self::Backend {
            context: context.into(),
            source,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Self::NotFound(_) => Kind::NotFound,
            Self::AlreadyRevoked(_) | Self::Conflict { .. } | Self::IssuerChanged(_) => {
                Kind::Conflict
            }
            Self::ChallengeUnavailable => Kind::BadInput,
            // The backend may come back (a full disk, a lock held); a closed store will not,
            // but the process is going away and another may answer.
            Self::Backend { .. } | Self::Closed => Kind::Unavailable,
            // A serial collision is ours (the caller draws a new one); corruption is ours.
            Self::DuplicateSerial(_) | Self::Corrupt { .. } => Kind::Internal,
        }
    }
}

/// A revocation as a CRL lists it, read without the certificate itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    pub serial: Serial,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub reason: RevocationReason,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
}

/// One issuer's part in a rotation step: its new record, the state it must have now (`None`:
/// it must not exist yet), and the event that announces the change.
#[derive(Debug, Clone)]
pub struct IssuerChange {
    pub record: IssuerRecord,
    pub was: Option<IssuerState>,
    pub event: EventKind,
    /// The issuing CA certificate's serial, which the event carries.
    pub serial: Serial,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Records a certificate with its indexes and its `issued`/`renewed` event, atomically and
    /// durably, together with everything `linked` names. Writes nothing and fails with
    /// `DuplicateSerial` if the serial exists, `ChallengeUnavailable` if the challenge to use
    /// up is unknown, used, or expired at `issued_at`, or `Conflict` if a linked document
    /// changed.
    async fn insert_certificate(
        &self,
        record: CertRecord,
        linked: Linked,
    ) -> Result<Seq, StoreError>;

    async fn doc(&self, key: &DocKey) -> Result<Option<Doc>, StoreError>;

    /// Documents of `kind` whose id starts with `prefix`, in id order after `after`.
    async fn docs(
        &self,
        kind: DocKind,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Doc)>, StoreError>;

    /// Every document of `kind` whose id starts with `prefix`, in id order, read page by page.
    async fn all_docs(
        &self,
        kind: DocKind,
        prefix: &str,
    ) -> Result<Vec<(String, Doc)>, StoreError> {
        let mut out: Vec<(String, Doc)> = Vec::new();
        loop {
            let after = out.last().map(|(id, _)| id.clone());
            let page = self.docs(kind, prefix, after.as_deref(), MAX_PAGE).await?;
            if page.is_empty() {
                return Ok(out);
            }
            out.extend(page);
        }
    }

    /// Applies every write or none, durably; `Conflict` names the first unmet expectation.
    async fn write_docs(&self, writes: Vec<DocWrite>) -> Result<(), StoreError> {
        self.commit_docs(writes, None).await
    }

    /// Uses up an ACME nonce the nodes of a cluster share (if one is given) and reads
    /// documents (a signed request's account and the resource it is about), in one round
    /// trip on a shared store. The nonce counts only if it is of the
    /// store's current nonce epoch and was not used before. A store that may forget used
    /// nonces (PostgreSQL keeps them unlogged, and a crash or a failover empties that table)
    /// starts a new epoch when it finds them gone, so that no nonce issued before is accepted
    /// again; a store that never forgets them has one epoch.
    async fn use_nonce(
        &self,
        nonce: Option<&UsedNonce>,
        reads: &[DocKey],
    ) -> Result<NonceOutcome, StoreError> {
        let fresh = match nonce {
            None => false,
            Some(n) if n.epoch != DURABLE_NONCE_EPOCH => false,
            Some(n) => {
                let used = DocWrite::put(DocKind::AcmeUsedNonce, &hex::encode(n.id), None, &());
                match self.write_docs(vec![used]).await {
                    Ok(()) => true,
                    Err(StoreError::Conflict { .. }) => false,
                    Err(e) => return Err(e),
                }
            }
        };
        let mut docs = Vec::with_capacity(reads.len());
        for key in reads {
            docs.push(self.doc(key).await?);
        }
        Ok(NonceOutcome {
            epoch: DURABLE_NONCE_EPOCH,
            fresh,
            docs,
        })
    }

    /// Forgets the used nonces issued before `before_ms` (Unix ms), which have expired;
    /// returns how many.
    async fn purge_nonces(&self, before_ms: u64) -> Result<usize, StoreError> {
        let mut purged = 0;
        let mut after: Option<String> = None;
        loop {
            let page = self
                .docs(DocKind::AcmeUsedNonce, "", after.as_deref(), MAX_PAGE)
                .await?;
            let Some((last, _)) = page.last() else {
                break;
            };
            after = Some(last.clone());
            let mut gone = Vec::new();
            let mut done = false;
            for (id, doc) in page {
                if UsedNonce::issued_ms_of(&id).is_some_and(|t| t >= before_ms) {
                    done = true;
                    break;
                }
                gone.push(DocWrite::delete(DocKind::AcmeUsedNonce, &id, doc.version));
            }
            purged += gone.len();
            if !gone.is_empty() {
                self.write_docs(gone).await?;
            }
            if done {
                break;
            }
        }
        Ok(purged)
    }

    /// `write_docs` that also uses up a one-time challenge (as `insert_certificate` does), for
    /// requests that consume their challenge before any certificate exists (SCEP requests
    /// waiting for approval). `ChallengeUnavailable` if it is unknown, used, or expired at
    /// `consume.at`.
    async fn commit_docs(
        &self,
        writes: Vec<DocWrite>,
        consume: Option<UseUp>,
    ) -> Result<(), StoreError>;

    /// Stores a one-time challenge, durably.
    async fn put_challenge(
        &self,
        hash: ChallengeHash,
        record: ChallengeRecord,
    ) -> Result<(), StoreError>;

    /// Deletes challenges that expired before `now`; returns how many.
    async fn purge_challenges(&self, now: OffsetDateTime) -> Result<usize, StoreError>;

    /// Looks a challenge up without using it (to refuse early, before any signing).
    async fn challenge(&self, hash: &ChallengeHash) -> Result<Option<ChallengeRecord>, StoreError>;

    /// Appends an `expired` event for each certificate whose notAfter is before `now`, once
    /// per certificate, skipping revoked ones; returns how many.
    async fn expire(&self, now: OffsetDateTime) -> Result<usize, StoreError>;

    /// Appends an `expiring` event for each certificate whose notAfter is before
    /// `now + within` (and not yet past), once per certificate, skipping revoked ones and
    /// those a renewal has replaced; returns how many.
    async fn expiring(
        &self,
        now: OffsetDateTime,
        within: time::Duration,
    ) -> Result<usize, StoreError>;

    /// Marks a certificate revoked and appends the `revoked` event, atomically and durably.
    async fn revoke(
        &self,
        serial: &Serial,
        reason: RevocationReason,
        at: OffsetDateTime,
    ) -> Result<CertRecord, StoreError>;

    async fn certificate(&self, serial: &Serial) -> Result<Option<CertRecord>, StoreError>;

    /// The state of a certificate, for the questions asked on every device connection
    /// (`/validate`, OCSP); a store may answer from memory.
    async fn certificate_state(&self, serial: &Serial) -> Result<Option<CertState>, StoreError> {
        Ok(self
            .certificate(serial)
            .await?
            .as_ref()
            .map(CertState::from))
    }

    async fn certificates(&self, query: CertQuery) -> Result<Page<CertRecord>, StoreError>;

    /// Every certificate `query` matches, read page by page (its `after` and `limit` are
    /// replaced).
    async fn all_certificates(&self, mut query: CertQuery) -> Result<Vec<CertRecord>, StoreError> {
        query.after = None;
        query.limit = MAX_PAGE;
        let mut out = Vec::new();
        loop {
            let page = self.certificates(query.clone()).await?;
            out.extend(page.items);
            match page.next {
                Some(next) => query.after = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// Events with `seq > after`, in order, at most `limit`.
    async fn events(&self, after: Seq, limit: usize) -> Result<Vec<Event>, StoreError>;

    async fn issuers(&self) -> Result<Vec<IssuerRecord>, StoreError>;

    /// Every revoked certificate of `issuer` (what its CRL lists), from an index: no
    /// certificate record is read.
    async fn revoked(&self, issuer: &IssuerId) -> Result<Vec<Revoked>, StoreError>;

    /// Inserts or replaces an issuer record, durably.
    async fn put_issuer(&self, record: IssuerRecord) -> Result<(), StoreError>;

    /// A rotation step: every change or none, each with its event, at `at`. Fails with
    /// `IssuerChanged` when an issuer is not in the state the change expects.
    async fn change_issuers(
        &self,
        changes: Vec<IssuerChange>,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Waits until everything acknowledged so far is on disk.
    async fn flush(&self) -> Result<(), StoreError>;

    /// The sequence number of the newest durable event, updated as events are written (for
    /// long-polling readers of the feed).
    fn newest_event(&self) -> tokio::sync::watch::Receiver<Seq>;
}
