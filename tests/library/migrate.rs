//! `enrollca store migrate`'s copy: all or nothing. A copy that does not tally with its source
//! is rolled back (the target stays empty and the copy can be run again); one that does is
//! committed and reads back identical.

use enrollca::store::migrate::{MigrateError, Tally, sled_to_postgres};
use enrollca::store::{Linked, PgStore, PgTarget, SledStore, Store};
use enrollca_testkit::harness::postgres::cluster;

use crate::store_battery::record;

#[tokio::test]
async fn a_copy_that_does_not_tally_is_rolled_back_and_a_good_one_committed() {
    let dir = tempfile::tempdir().unwrap();
    let sled = SledStore::open(dir.path()).unwrap();
    for i in 0..3 {
        let rec = record(Some(&format!("device-{i}")), 1);
        sled.insert_certificate(rec, Linked::default())
            .await
            .unwrap();
    }
    let url = cluster().database("migrate_rollback");
    let pg = PgStore::connect(PgTarget::parse(&url).unwrap(), 2)
        .await
        .unwrap();

    // Told to expect something else than what it copies: refused, nothing kept.
    let wrong = Tally {
        certificates: 3,
        ..Tally::default()
    };
    match pg.import(sled.rows(), &wrong).await {
        Err(MigrateError::Mismatch { to, .. }) => assert_eq!(to.certificates, 3),
        other => panic!("expected a mismatch, got {other:?}"),
    }
    let mut left = 0;
    pg.rows(|_| left += 1).await.unwrap();
    assert_eq!(left, 0, "a refused copy leaves nothing behind");

    // Run again, for real.
    let tally = sled_to_postgres(&sled, &pg).await.unwrap();
    assert_eq!((tally.certificates, tally.events), (3, 3));
    assert_eq!(pg.events(0, 10).await.unwrap().len(), 3);
    // A second copy into what is now not empty is refused.
    assert!(matches!(
        sled_to_postgres(&sled, &pg).await,
        Err(MigrateError::NotEmpty(n)) if n == 6
    ));
}

/// An installation's database from before the write functions (schema 1), with a live
/// one-time challenge and an event in it, is upgraded in place when a newer node starts:
/// the challenge still works, once, the feed goes on from where it was, and the used nonces
/// of the old format are dropped.
#[tokio::test]
async fn a_database_at_schema_1_is_upgraded_in_place() {
    use enrollca::store::{ChallengeHash, ChallengeRecord, Event, EventKind, StoreError};
    use time::{Duration, OffsetDateTime};

    let url = cluster().database("schema_1_upgrade");
    let now = OffsetDateTime::now_utc();
    let challenge = ChallengeRecord {
        device: None,
        names: Default::default(),
        created_at: now,
        expires_at: now + Duration::hours(1),
    };
    let hash = ChallengeHash::of(b"minted before the upgrade");
    let old = record(Some("device-old"), 1);
    let event = Event {
        seq: 1,
        at: now,
        kind: EventKind::Issued { attested: None },
        serial: old.serial.clone(),
        issuer: old.issuer.clone(),
        device: old.device.clone(),
    };
    cluster().psql(
        "schema_1_upgrade",
        &format!(
            "{schema}
             CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO schema_migrations (version, name) VALUES (1, 'initial');
             INSERT INTO challenges (hash, expires_at, record)
                 VALUES ('\\x{hash}', {expires}, '\\x{challenge}');
             INSERT INTO events (seq, event) VALUES (1, '\\x{event}');
             INSERT INTO docs (kind, id, version, value) VALUES (16, 'used-nonce', 1, '\\x00');
             UPDATE feed SET last = 1;",
            schema = include_str!("../../src/store/postgres/migrations/0001_initial.sql"),
            hash = hex::encode(hash.as_bytes()),
            expires = challenge.expires_at.unix_timestamp(),
            challenge = cbor(&challenge),
            event = cbor(&event),
        ),
    );

    let pg = PgStore::connect(PgTarget::parse(&url).unwrap(), 2)
        .await
        .unwrap();
    let versions = cluster().psql(
        "schema_1_upgrade",
        "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations",
    );
    assert_eq!(versions.trim(), "1,2");
    let nonces = cluster().psql(
        "schema_1_upgrade",
        "SELECT count(*) FROM docs WHERE kind = 16",
    );
    assert_eq!(nonces.trim(), "0", "used nonces of the old format are gone");
    assert_eq!(pg.events(0, 10).await.unwrap(), vec![event]);

    let mut new = record(Some("device-new"), 1);
    new.issued_at = now;
    assert_eq!(
        pg.insert_certificate(new, Linked::challenge(hash))
            .await
            .unwrap(),
        2,
        "the feed goes on"
    );
    assert!(matches!(
        pg.insert_certificate(record(None, 1), Linked::challenge(hash))
            .await,
        Err(StoreError::ChallengeUnavailable)
    ));
    let seqs: Vec<_> = pg
        .events(0, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, [1, 2]);
}

/// A record as the store encodes it, for a `bytea` literal.
fn cbor<T: serde::Serialize>(value: &T) -> String {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).unwrap();
    hex::encode(out)
}
