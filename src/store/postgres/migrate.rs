//! Versioned schema migrations, embedded in the binary and applied at start.
//!
//! Nodes starting together take a session advisory lock first, so each migration is applied
//! once; each runs in its own transaction with its version row, so an interrupted start
//! leaves the schema at a version, never between two. A database migrated by a newer enrollca
//! is refused rather than written with an older idea of its schema.

use postgres_openssl::MakeTlsConnector;

use super::{PgConfig, backend};
use crate::error::cause;
use crate::store::StoreError;

/// Every migration, in order; a version is never edited once released, only followed.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "initial", include_str!("migrations/0001_initial.sql")),
    (
        2,
        "one round trip",
        include_str!("migrations/0002_one_round_trip.sql"),
    ),
];

/// The advisory lock every enrollca node takes to migrate ("enrollca" in ASCII).
const LOCK: i64 = 0x656e_726f_6c6c_6361;

/// The schema version this binary writes.
pub(super) const LATEST: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

pub(super) async fn run(config: &PgConfig, tls: MakeTlsConnector) -> Result<(), StoreError> {
    // Its own connection: the session lock goes with it, whatever happens here.
    let (mut client, connection) = config
        .connect(tls)
        .await
        .map_err(|e| backend("connecting", e))?;
    let driver = tokio::spawn(connection);
    let result = async {
        client
            .execute("SELECT pg_advisory_lock($1)", &[&LOCK])
            .await
            .map_err(|e| backend("waiting for the migration lock", e))?;
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version    integer PRIMARY KEY,
                     name       text NOT NULL,
                     applied_at timestamptz NOT NULL DEFAULT now()
                 )",
            )
            .await
            .map_err(|e| backend("creating schema_migrations", e))?;
        let applied: i32 = client
            .query_one(
                "SELECT coalesce(max(version), 0) FROM schema_migrations",
                &[],
            )
            .await
            .map_err(|e| backend("reading schema_migrations", e))?
            .get(0);
        if applied > LATEST {
            return Err(StoreError::backend(
                "PostgreSQL, checking the schema",
                cause(format!(
                    "the database is at schema version {applied}, newer than this enrollca \
                     knows ({LATEST}): run the newer enrollca"
                )),
            ));
        }
        for (version, name, sql) in MIGRATIONS.iter().filter(|(v, ..)| *v > applied) {
            let tx = client
                .transaction()
                .await
                .map_err(|e| backend("starting a migration", e))?;
            tx.batch_execute(sql)
                .await
                .map_err(|e| backend(&format!("applying migration {version} ({name})"), e))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[version, name],
            )
            .await
            .map_err(|e| backend("recording a migration", e))?;
            tx.commit()
                .await
                .map_err(|e| backend(&format!("committing migration {version}"), e))?;
            tracing::info!(version, name, "applied a schema migration");
        }
        Ok(())
    }
    .await;
    drop(client);
    let _ = driver.await;
    result
}
