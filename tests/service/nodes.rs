//! enrollca on PostgreSQL: the real binary with `store.backend = "postgres"` on a private
//! cluster, real clients (micromdm scepclient, lego), and the database read back with psql.

use enrollca_testkit::harness as common;

use std::path::Path;

use common::acme::roots_file;
use common::postgres::{Cluster, cluster};
use common::*;
use serde_json::Value;

const CHALLENGE: &str = "pg-static-challenge";

/// The environment that points a node at `url`.
fn store_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ENROLLCA_STORE_BACKEND", "postgres".into()),
        ("ENROLLCA_STORE_URL", url.into()),
    ]
}

fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn count(cluster: &Cluster, db: &str, sql: &str) -> u64 {
    cluster.psql(db, sql).trim().parse().unwrap()
}

fn lego_run(dir: &Path, roots: &str, server: &Server, port: u16) -> std::process::Output {
    std::process::Command::new("lego")
        .env("LEGO_CA_CERTIFICATES", roots)
        .args(["--path", dir.to_str().unwrap()])
        .args([
            "--server",
            &format!("{}/acme/default/directory", server.https),
        ])
        .args(["--email", "ops@example.com", "--accept-tos"])
        .args(["--domains", "lego.localhost", "--key-type", "ec256"])
        .args(["--http", "--http.port", &format!("127.0.0.1:{port}")])
        .arg("run")
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_node_on_postgres_enrols_and_keeps_every_record_in_the_database() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = cluster();
    let db = "single_node";
    let url = pg.database(db);
    let port = free_port();
    let mut env = store_env(&url);
    let data = init_dir(tmp.path(), &[], &borrowed(&env));
    // The CA's state went to the database: the data directory holds keys, no sled store.
    assert!(!data.join("db").join("conf").exists(), "no sled store");
    assert_eq!(count(pg, db, "SELECT count(*) FROM issuers"), 2);
    let config = std::fs::read_to_string(data.join("config.toml")).unwrap();
    assert!(config.contains("backend = \"postgres\""), "{config}");

    env.push(("ENROLLCA_SCEP_CHALLENGE", CHALLENGE.into()));
    env.push(("ENROLLCA_ACME_HTTP01_PORT", port.to_string()));
    let server = Server::start(&data, &borrowed(&env));

    // A SCEP device and an ACME client enrol.
    let device = tmp.path().join("device");
    let out = scepclient(&server, &device, "device-1", CHALLENGE);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let scep_serial = serial_of(&device.join("cert.pem"));
    let roots = roots_file(&server, tmp.path()).await;
    let out = lego_run(&tmp.path().join("lego"), &roots, &server, port);
    assert!(out.status.success(), "lego: {}", stderr(&out));

    // The MDM revokes the SCEP certificate.
    let r = server
        .post(&format!("/api/v1/certificates/{scep_serial}/revoke"))
        .json(&serde_json::json!({"reason": "keyCompromise"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Everything is in the database, and the feed is numbered 1, 2, 3.
    assert_eq!(count(pg, db, "SELECT count(*) FROM certs"), 2);
    assert_eq!(
        count(
            pg,
            db,
            "SELECT count(*) FROM certs WHERE revocation IS NOT NULL"
        ),
        1
    );
    assert_eq!(
        pg.psql(
            db,
            "SELECT string_agg(seq::text, ',' ORDER BY seq) FROM events"
        )
        .trim(),
        "1,2,3"
    );
    let kinds = server.event_kinds().await;
    assert_eq!(kinds, ["issued", "issued", "revoked"]);
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
    assert!(!log.contains("pg-static-challenge"), "no secret in the log");

    // Restarted, the node answers from the database.
    let server = Server::start(&data, &borrowed(&env));
    let rec: Value = server
        .get_json(&format!("/api/v1/certificates/{scep_serial}"))
        .await;
    assert_eq!(rec["status"], "revoked", "{rec}");
    assert_eq!(server.event_kinds().await.len(), 3);

    // A second `init` on the same database is refused and writes nothing.
    let out = enrollca(
        &[
            "init",
            "--data",
            tmp.path().join("second").to_str().unwrap(),
            "--root-key-type",
            "p256",
        ],
        &borrowed(&store_env(&url)),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already holds a CA"),
        "{}",
        stderr(&out)
    );
    assert_eq!(count(pg, db, "SELECT count(*) FROM issuers"), 2);
}
