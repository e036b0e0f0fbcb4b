//! Moving an installation from sled to PostgreSQL (`enrollca store migrate`): every record
//! as it is stored (certificates with their state and whether their `expired`/`expiring`
//! events are still to come, the feed with its sequence numbers, issuers, one-time
//! challenges, and every document: ACME state, tokens, inventory, cursors), in one
//! transaction, so an interrupted copy leaves the target empty and can simply be run again.
//! The target must hold nothing; before the commit the copy is read back in the source's order
//! and compared by counts and a SHA-256 over every record, so a copy that differs is rolled
//! back.

use serde::{Deserialize, Serialize};

use super::codec::encode;
use super::{CertRecord, ChallengeRecord, Event, IssuerRecord, PgStore, SledStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("the target database is not empty ({0} records); refusing to copy into it")]
    NotEmpty(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the copy does not match its source: source {from:?}, target {to:?}")]
    Mismatch { from: Tally, to: Tally },
}

/// Copies everything `from` holds into the empty database `to`, committing only what reads
/// back exactly as the source holds it (the server must be stopped: sled's lock sees to it);
/// returns that tally.
pub async fn sled_to_postgres(from: &SledStore, to: &PgStore) -> Result<Tally, MigrateError> {
    let mut source = Tallying::default();
    for row in from.rows() {
        source.add(&row?);
    }
    let source = source.finish();
    to.import(from.rows(), &source).await?;
    // And once more as every node will read it, committed.
    let mut target = Tallying::default();
    to.rows(|row| target.add(&row)).await?;
    let target = target.finish();
    if source != target {
        return Err(MigrateError::Mismatch {
            from: source,
            to: target,
        });
    }
    Ok(source)
}

/// One stored record, the same whichever backend it is read from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Row {
    Cert {
        record: Box<CertRecord>,
        expired_due: bool,
        expiring_due: bool,
    },
    Event(Box<Event>),
    Issuer(Box<IssuerRecord>),
    Challenge {
        #[serde(with = "serde_bytes")]
        hash: Vec<u8>,
        record: Box<ChallengeRecord>,
    },
    Doc {
        /// `DocKind::tag`.
        kind: u8,
        id: String,
        version: u64,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
}

/// What a store holds, counted and digested in its canonical order.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub certificates: u64,
    pub events: u64,
    pub issuers: u64,
    pub challenges: u64,
    pub documents: u64,
    /// SHA-256 of every record's CBOR, in order (hex).
    pub sha256: String,
}

/// Counts and digests rows as they go by.
pub struct Tallying {
    tally: Tally,
    digest: ring::digest::Context,
}

impl Default for Tallying {
    fn default() -> Self {
        Self {
            tally: Tally::default(),
            digest: ring::digest::Context::new(&ring::digest::SHA256),
        }
    }
}

impl Tallying {
    pub fn add(&mut self, row: &Row) {
        let t = &mut self.tally;
        match row {
            Row::Cert { .. } => t.certificates += 1,
            Row::Event(_) => t.events += 1,
            Row::Issuer(_) => t.issuers += 1,
            Row::Challenge { .. } => t.challenges += 1,
            Row::Doc { .. } => t.documents += 1,
        }
        self.digest.update(&encode(row));
    }

    pub fn finish(self) -> Tally {
        Tally {
            sha256: hex::encode(self.digest.finish()),
            ..self.tally
        }
    }
}
