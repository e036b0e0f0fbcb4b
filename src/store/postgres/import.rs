//! The PostgreSQL side of `enrollca store migrate`: records written in one transaction into
//! an empty database, and read back in the order the comparison needs.

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::{PgStore, backend, int, revocation};
use crate::store::StoreError;
use crate::store::codec::{decode, encode};
use crate::store::migrate::{MigrateError, Row, Tally, Tallying};

/// Rows per INSERT.
const BATCH: usize = 1000;
/// Rows per page when reading back.
const PAGE: i64 = 1000;

/// The certificates' columns (named: eight of them).
#[derive(Default)]
struct CertColumns {
    serial: Vec<Vec<u8>>,
    issuer: Vec<String>,
    device: Vec<Option<String>>,
    not_after: Vec<i64>,
    revocation: Vec<Option<Vec<u8>>>,
    expired_due: Vec<bool>,
    expiring_due: Vec<bool>,
    record: Vec<Vec<u8>>,
}

/// hash, expires_at (s), expires_ns, record.
type ChallengeColumns = (Vec<Vec<u8>>, Vec<i64>, Vec<i64>, Vec<Vec<u8>>);

/// Each table's rows waiting to be inserted, as column arrays.
#[derive(Default)]
struct Pending {
    certs: CertColumns,
    events: (Vec<i64>, Vec<Vec<u8>>),
    issuers: (Vec<String>, Vec<Vec<u8>>),
    challenges: ChallengeColumns,
    docs: (Vec<i16>, Vec<String>, Vec<i64>, Vec<Vec<u8>>),
    len: usize,
}

impl Pending {
    fn add(&mut self, row: Row) {
        self.len += 1;
        match row {
            Row::Cert {
                record,
                expired_due,
                expiring_due,
            } => {
                let c = &mut self.certs;
                c.serial.push(record.serial.as_bytes().to_vec());
                c.issuer.push(record.issuer.as_str().to_owned());
                c.device
                    .push(record.device.as_ref().map(|d| d.as_str().to_owned()));
                c.not_after.push(record.not_after.unix_timestamp());
                c.revocation.push(revocation(&record));
                c.expired_due.push(expired_due);
                c.expiring_due.push(expiring_due);
                c.record.push(encode(&*record));
            }
            Row::Event(event) => {
                self.events.0.push(int(event.seq));
                self.events.1.push(encode(&*event));
            }
            Row::Issuer(record) => {
                self.issuers.0.push(record.id.as_str().to_owned());
                self.issuers.1.push(encode(&*record));
            }
            Row::Challenge { hash, record } => {
                self.challenges.0.push(hash);
                self.challenges.1.push(record.expires_at.unix_timestamp());
                self.challenges.2.push(super::unix_ns(record.expires_at));
                self.challenges.3.push(encode(&*record));
            }
            Row::Doc {
                kind,
                id,
                version,
                value,
            } => {
                self.docs.0.push(i16::from(kind));
                self.docs.1.push(id);
                self.docs.2.push(int(version));
                self.docs.3.push(value);
            }
        }
    }

    async fn write(
        &mut self,
        tx: &tokio_postgres::Transaction<'_>,
    ) -> Result<(), tokio_postgres::Error> {
        let Self {
            certs: c,
            events: e,
            issuers: i,
            challenges: ch,
            docs: d,
            ..
        } = self;
        let statements: [(&str, Vec<&(dyn ToSql + Sync)>); 5] = [
            (
                "INSERT INTO certs (serial, issuer, device, not_after, revocation, expired_due, \
                 expiring_due, record) SELECT * FROM unnest($1::bytea[], $2::text[], \
                 $3::text[], $4::bigint[], $5::bytea[], $6::bool[], $7::bool[], $8::bytea[])",
                vec![
                    &c.serial,
                    &c.issuer,
                    &c.device,
                    &c.not_after,
                    &c.revocation,
                    &c.expired_due,
                    &c.expiring_due,
                    &c.record,
                ],
            ),
            (
                "INSERT INTO events (seq, event) SELECT * FROM unnest($1::bigint[], $2::bytea[])",
                vec![&e.0, &e.1],
            ),
            (
                "INSERT INTO issuers (id, record) SELECT * FROM unnest($1::text[], $2::bytea[])",
                vec![&i.0, &i.1],
            ),
            (
                "INSERT INTO challenges (hash, expires_at, expires_ns, record) \
                 SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bigint[], $4::bytea[])",
                vec![&ch.0, &ch.1, &ch.2, &ch.3],
            ),
            (
                "INSERT INTO docs (kind, id, version, value) \
                 SELECT * FROM unnest($1::smallint[], $2::text[], $3::bigint[], $4::bytea[])",
                vec![&d.0, &d.1, &d.2, &d.3],
            ),
        ];
        for (sql, params) in statements {
            tx.execute(sql, &params).await?;
        }
        *self = Self::default();
        Ok(())
    }
}

impl PgStore {
    /// Writes `rows` into this database, which must hold nothing yet, in one transaction;
    /// the feed goes on after the last event copied. Before committing, reads everything
    /// back in that transaction and commits only if it tallies with `expected` (the
    /// source's): a copy that does not match leaves nothing behind.
    pub async fn import<I>(&self, rows: I, expected: &Tally) -> Result<(), MigrateError>
    where
        I: IntoIterator<Item = Result<Row, StoreError>>,
    {
        let db = |e| MigrateError::Store(backend("copying", e));
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        // No node may write while the copy runs, nor between the check and the copy.
        tx.batch_execute(
            "LOCK TABLE certs, events, feed, issuers, challenges, docs IN EXCLUSIVE MODE",
        )
        .await
        .map_err(db)?;
        let held: i64 = tx
            .query_one(
                "SELECT (SELECT count(*) FROM certs) + (SELECT count(*) FROM events) \
                 + (SELECT count(*) FROM issuers) + (SELECT count(*) FROM challenges) \
                 + (SELECT count(*) FROM docs)",
                &[],
            )
            .await
            .map_err(db)?
            .get(0);
        if held > 0 {
            return Err(MigrateError::NotEmpty(held as u64));
        }
        let mut pending = Pending::default();
        for row in rows {
            pending.add(row?);
            if pending.len >= BATCH {
                pending.write(&tx).await.map_err(db)?;
            }
        }
        pending.write(&tx).await.map_err(db)?;
        tx.execute(
            "UPDATE feed SET last = (SELECT coalesce(max(seq), 0) FROM events)",
            &[],
        )
        .await
        .map_err(db)?;
        let mut copied = Tallying::default();
        read_rows(&tx, |row| copied.add(&row)).await?;
        let copied = copied.finish();
        if &copied != expected {
            // Dropping the transaction rolls it back.
            return Err(MigrateError::Mismatch {
                from: expected.clone(),
                to: copied,
            });
        }
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    /// Every record, in the order `SledStore::rows` gives them, to `visit`.
    pub async fn rows(&self, visit: impl FnMut(Row)) -> Result<(), StoreError> {
        let client = self.client().await?;
        read_rows(&client, visit).await
    }
}

/// Every record `client` sees (a connection, or a transaction with its own writes).
async fn read_rows(
    client: &impl GenericClient,
    mut visit: impl FnMut(Row),
) -> Result<(), StoreError> {
    {
        let read = |e| backend("reading back", e);
        let mut after: Vec<u8> = Vec::new();
        loop {
            let rows = client
                .query(
                    "SELECT serial, expired_due, expiring_due, record FROM certs \
                     WHERE serial > $1 ORDER BY serial LIMIT $2",
                    &[&after, &PAGE],
                )
                .await
                .map_err(read)?;
            for r in &rows {
                after = r.get(0);
                visit(Row::Cert {
                    expired_due: r.get(1),
                    expiring_due: r.get(2),
                    record: Box::new(decode("certs", r.get(3))?),
                });
            }
            if (rows.len() as i64) < PAGE {
                break;
            }
        }
        let mut after = 0i64;
        loop {
            let rows = client
                .query(
                    "SELECT seq, event FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&after, &PAGE],
                )
                .await
                .map_err(read)?;
            for r in &rows {
                after = r.get(0);
                visit(Row::Event(Box::new(super::event_row(r)?)));
            }
            if (rows.len() as i64) < PAGE {
                break;
            }
        }
        for r in client
            .query("SELECT record FROM issuers ORDER BY id", &[])
            .await
            .map_err(read)?
        {
            visit(Row::Issuer(Box::new(decode("issuers", r.get(0))?)));
        }
        let mut after: Vec<u8> = Vec::new();
        loop {
            let rows = client
                .query(
                    "SELECT hash, record FROM challenges WHERE hash > $1 ORDER BY hash LIMIT $2",
                    &[&after, &PAGE],
                )
                .await
                .map_err(read)?;
            for r in &rows {
                after = r.get(0);
                visit(Row::Challenge {
                    hash: after.clone(),
                    record: Box::new(decode("challenges", r.get(1))?),
                });
            }
            if (rows.len() as i64) < PAGE {
                break;
            }
        }
        let (mut kind, mut id) = (-1i16, String::new());
        loop {
            let rows = client
                .query(
                    "SELECT kind, id, version, value FROM docs WHERE (kind, id) > ($1, $2) \
                     ORDER BY kind, id LIMIT $3",
                    &[&kind, &id, &PAGE],
                )
                .await
                .map_err(read)?;
            for r in &rows {
                kind = r.get(0);
                id = r.get(1);
                let version: i64 = r.get(2);
                visit(Row::Doc {
                    kind: kind as u8,
                    id: id.clone(),
                    version: version as u64,
                    value: r.get(3),
                });
            }
            if (rows.len() as i64) < PAGE {
                break;
            }
        }
        Ok(())
    }
}
