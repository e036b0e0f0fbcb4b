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
