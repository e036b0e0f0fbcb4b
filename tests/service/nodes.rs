//! enrollca on PostgreSQL: the real binary with `store.backend = "postgres"` on a private
//! cluster, real clients (micromdm scepclient, lego), and the database read back with psql.

use enrollca_testkit::harness as common;

use std::path::Path;

use common::acme::{Client, Responder, certificates, csr, roots_file};
use common::front::RoundRobin;
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

/// Two nodes on one database, behind a round-robin front: `data` copied from the first.
async fn two_nodes(
    tmp: &Path,
    db: &str,
    extra: &[(&'static str, String)],
) -> (Server, Server, RoundRobin) {
    let url = cluster().database(db);
    let mut env = store_env(&url);
    let first = init_dir(tmp, &[], &borrowed(&env));
    // The second node gets the first one's data directory: the same CA keys.
    let second = tmp.join("second");
    let out = run(
        "cp",
        &["-a", first.to_str().unwrap(), second.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let front = RoundRobin::bind().await;
    env.push(("ENROLLCA_LISTEN_PUBLIC_HTTPS_URL", front.https()));
    env.extend(extra.iter().cloned());
    let a = Server::start(&first, &borrowed(&env));
    let b = Server::start(&second, &borrowed(&env));
    let addr = |s: &Server| s.https.trim_start_matches("https://").parse().unwrap();
    front.route(vec![addr(&a), addr(&b)]);
    (a, b, front)
}

/// A client whose every request goes to the other node (a new connection each time through
/// a round-robin front) completes a whole order: nonces, accounts, orders, authorizations
/// and the certificate are the cluster's, not a node's.
#[tokio::test]
async fn an_acme_client_alternating_between_two_nodes_completes_its_order() {
    let tmp = tempfile::tempdir().unwrap();
    let responder = Responder::start().await;
    let (a, b, front) = two_nodes(
        tmp.path(),
        "alternating",
        &[("ENROLLCA_ACME_HTTP01_PORT", responder.port.to_string())],
    )
    .await;
    let roots = a.roots_pem().await;
    let mut c = Client::at(&front.https(), &roots, "default", false).await;
    c.register().await;
    let (order_url, order) = c.order(&["alternating.localhost"]).await;
    let order = c.authorize(&order_url, &order, &responder).await;
    assert_eq!(order["status"], "ready", "{order}");
    let (csr_der, _key) = csr(&["alternating.localhost"]);
    let resp = c.finalize(&order, &csr_der).await;
    assert_eq!(resp.status, 200, "finalize: {}", resp.text);
    let order = c.poll(&order_url, "processing").await;
    assert_eq!(order["status"], "valid", "{order}");
    let chain = c.post(order["certificate"].as_str().unwrap(), None).await;
    assert_eq!(chain.status, 200, "{}", chain.text);
    assert!(chain.text.starts_with("-----BEGIN CERTIFICATE-----"));

    // Every request took a new connection, in turn: both nodes served about half.
    let served = front.served();
    assert!(
        served.iter().all(|&n| n >= 4) && served.iter().sum::<usize>() >= 10,
        "{served:?}"
    );
    // Both nodes know the certificate; each sees the one event in the feed.
    for node in [&a, &b] {
        let certs = certificates(node).await;
        assert_eq!(certs.len(), 1, "{certs:?}");
        assert_eq!(node.event_kinds().await, ["issued"]);
    }
}

/// Whether `node`'s CRL of `issuer` lists `serial` (its hex as openssl prints it).
async fn crl_lists(node: &Server, dir: &Path, issuer: &str, serial: &str) -> bool {
    let der = node
        .get(&format!("/crl/{issuer}.crl"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let path = dir.join(format!("{issuer}.crl"));
    std::fs::write(&path, &der).unwrap();
    let text = stdout(&run(
        "openssl",
        &[
            "crl",
            "-inform",
            "DER",
            "-noout",
            "-text",
            "-in",
            path.to_str().unwrap(),
        ],
    ));
    assert!(text.contains("Certificate Revocation List"), "{text}");
    text.to_uppercase().contains(&serial.to_uppercase())
}

/// A revocation made through one node is what every node answers, through its caches: its
/// `/validate` at once, its CRL (signed and cached before the revocation) within a second.
#[tokio::test]
async fn a_revocation_on_one_node_is_seen_by_the_others_within_a_second() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, _front) = two_nodes(tmp.path(), "revocation", &[]).await;
    let (serial, chain) = a
        .issue(tmp.path(), "roaming-device", "ec:P-256", "ecdsa")
        .await;
    let pem = std::fs::read_to_string(&chain[0]).unwrap();
    let rec: Value = b.get_json(&format!("/api/v1/certificates/{serial}")).await;
    let issuer = rec["issuer"].as_str().unwrap().to_owned();
    // B signs its CRL now, and caches it.
    assert!(!crl_lists(&b, tmp.path(), &issuer, &serial).await);
    let validate = |node: &Server| {
        node.post("/api/v1/validate")
            .json(&serde_json::json!({ "certificate": pem }))
            .send()
    };
    let v: Value = validate(&b).await.unwrap().json().await.unwrap();
    assert_eq!(v["status"], "good");

    let r = a
        .post(&format!("/api/v1/certificates/{serial}/revoke"))
        .json(&serde_json::json!({"reason": "keyCompromise"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let revoked_at = std::time::Instant::now();
    let v: Value = validate(&b).await.unwrap().json().await.unwrap();
    assert_eq!(v["status"], "revoked", "{v}");
    while !crl_lists(&b, tmp.path(), &issuer, &serial).await {
        assert!(
            revoked_at.elapsed() < std::time::Duration::from_secs(1),
            "B's CRL still lacks the revocation after 1 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    eprintln!(
        "B's CRL listed it {:?} after A revoked it",
        revoked_at.elapsed()
    );
}

/// While the database is down, a node answers what needs it with 503 and `Retry-After`
/// (SCEP, ACME's `serverInternal` problem, the API) and `/healthz` says so; it writes
/// nothing half-way, and it serves again by itself once the database is back.
#[tokio::test]
async fn a_database_outage_is_answered_with_503_and_the_node_recovers_by_itself() {
    let tmp = tempfile::tempdir().unwrap();
    // A cluster of its own: this test stops it.
    let pg = Cluster::private();
    let url = pg.database("outage");
    let mut env = store_env(&url);
    let data = init_dir(tmp.path(), &[], &borrowed(&env));
    env.push(("ENROLLCA_SCEP_CHALLENGE", CHALLENGE.into()));
    let server = Server::start(&data, &borrowed(&env));
    let out = scepclient(&server, &tmp.path().join("before"), "before", CHALLENGE);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let roots = server.roots_pem().await;
    let mut acme = Client::at(&server.https, &roots, "default", true).await;
    let health = || async {
        let r = server.get("/healthz").send().await.unwrap();
        (r.status().as_u16(), r.headers().get("retry-after").cloned())
    };
    assert_eq!(health().await.0, 200);

    pg.stop();
    let (status, retry) = health().await;
    assert_eq!(status, 503);
    assert_eq!(retry.unwrap(), "5");
    // A SCEP device: HTTP 503, never a failInfo; its client gives up with an error.
    let out = scepclient(&server, &tmp.path().join("during"), "during", CHALLENGE);
    assert!(!out.status.success());
    // ACME: serverInternal, 503, Retry-After.
    let resp = acme
        .post(
            &acme.url("newAccount"),
            Some(serde_json::json!({"termsOfServiceAgreed": true})),
        )
        .await;
    assert_eq!(resp.status, 503, "{}", resp.text);
    assert_eq!(resp.problem(), "serverInternal");
    assert_eq!(resp.headers["retry-after"], "5");
    // The API.
    let r = server.get("/api/v1/certificates").send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");

    pg.start();
    // Back by itself: the pool drops its dead connections and makes new ones.
    let back = std::time::Instant::now();
    while health().await.0 != 200 {
        assert!(
            back.elapsed() < std::time::Duration::from_secs(10),
            "not back after 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let out = scepclient(&server, &tmp.path().join("after"), "after", CHALLENGE);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    acme.register().await;
    // Two certificates, two events: nothing from the outage.
    assert_eq!(count(&pg, "outage", "SELECT count(*) FROM certs"), 2);
    assert_eq!(server.event_kinds().await, ["issued", "issued"]);
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

/// A node must serve the issuers the database records with their own keys: one with other
/// keys, or without them, refuses to start and says why.
#[tokio::test]
async fn a_node_without_the_clusters_keys_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let url = cluster().database("foreign_keys");
    let env = store_env(&url);
    let first = init_dir(&tmp.path().join("first"), &[], &borrowed(&env));
    // Its own CA, made on sled, then pointed at the cluster's database: no key file of the
    // cluster's issuers.
    let stranger = init_dir(&tmp.path().join("stranger"), &[], &[]);
    let err = Server::try_start(&stranger, &borrowed(&env))
        .err()
        .expect("refused");
    assert!(err.contains("this node does not hold its key"), "{err}");
    // The cluster's key file names, with another CA's keys in them.
    let impostor = tmp.path().join("impostor");
    let out = run(
        "cp",
        &["-a", first.to_str().unwrap(), impostor.to_str().unwrap()],
    );
    assert!(out.status.success());
    let ours: Vec<_> = std::fs::read_dir(impostor.join("ca/issuers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "key"))
        .collect();
    let theirs: Vec<_> = std::fs::read_dir(stranger.join("ca/issuers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "key"))
        .collect();
    assert_eq!((ours.len(), theirs.len()), (2, 2), "{ours:?} {theirs:?}");
    // Each of ours replaced by theirs of the same kind (an EC key names its curve's OID).
    let is_ec = |p: &Path| {
        stdout(&run(
            "openssl",
            &["pkey", "-in", p.to_str().unwrap(), "-noout", "-text"],
        ))
        .contains("ASN1 OID")
    };
    for o in &ours {
        let t = theirs.iter().find(|t| is_ec(t) == is_ec(o)).unwrap();
        std::fs::copy(t, o).unwrap();
    }
    let err = Server::try_start(&impostor, &borrowed(&env))
        .err()
        .expect("refused");
    assert!(err.contains("does not match the certificate"), "{err}");
    // The real copy starts.
    let node = Server::start(&first, &borrowed(&env));
    assert_eq!(node.get("/healthz").send().await.unwrap().status(), 200);
}

/// Webhook delivery is one node's at a time (the periodic-work lease): while two nodes run,
/// each event reaches the MDM once; when the delivering node is killed, the other takes the
/// lease within seconds and goes on from the stored cursor, in order, nothing missing.
#[tokio::test]
async fn webhook_delivery_moves_to_another_node_when_its_node_dies() {
    let tmp = tempfile::tempdir().unwrap();
    let url = cluster().database("webhook_handover");
    let port = free_port();
    let mut env = store_env(&url);
    let first = init_dir(tmp.path(), &[], &borrowed(&env));
    let second = tmp.path().join("second");
    let out = run(
        "cp",
        &["-a", first.to_str().unwrap(), second.to_str().unwrap()],
    );
    assert!(out.status.success());
    env.push((
        "ENROLLCA_EVENTS_WEBHOOK_URL",
        format!("http://127.0.0.1:{port}/hook"),
    ));
    env.push(("ENROLLCA_EVENTS_WEBHOOK_SECRET", "hook-key".into()));
    let got = webhook_receiver(port, "hook-key").await;
    let wait_for = |n: usize| {
        let got = got.clone();
        async move {
            let start = std::time::Instant::now();
            while got.lock().unwrap().len() < n {
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(30),
                    "the webhook got {} of {n} events",
                    got.lock().unwrap().len()
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            start.elapsed()
        }
    };

    // A alone: it holds the lease and delivers.
    let a = Server::start(&first, &borrowed(&env));
    for i in 0..3 {
        a.issue(tmp.path(), &format!("a{i}"), "ec:P-256", "ecdsa")
            .await;
    }
    wait_for(3).await;
    // B joins; more events, wherever they are made, still come once each.
    let b = Server::start(&second, &borrowed(&env));
    b.issue(tmp.path(), "b0", "ec:P-256", "ecdsa").await;
    wait_for(4).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let seqs = |got: &[serde_json::Value]| -> Vec<u64> {
        got.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
    };
    assert_eq!(
        seqs(&got.lock().unwrap()),
        [1, 2, 3, 4],
        "once each, in order"
    );

    // The deliverer dies; B takes over and delivers what comes next.
    a.kill9();
    b.issue(tmp.path(), "b1", "ec:P-256", "ecdsa").await;
    b.issue(tmp.path(), "b2", "ec:P-256", "ecdsa").await;
    let took = wait_for(6).await;
    eprintln!("delivery resumed {took:?} after the kill");
    let all = seqs(&got.lock().unwrap());
    // At least once and in order: a batch the dead node sent but did not record may come
    // again; every event comes, first in sequence order.
    let mut first_seen = Vec::new();
    for seq in &all {
        if !first_seen.contains(seq) {
            first_seen.push(*seq);
        }
    }
    assert_eq!(first_seen, [1, 2, 3, 4, 5, 6], "{all:?}");
}

/// An installation on sled moves to PostgreSQL with `enrollca store migrate`: every record
/// (certificates and their state, the feed, challenges, tokens, documents) is copied and
/// checked; a node on the database then serves it and the feed goes on where it was. A
/// database that already holds something is refused.
#[tokio::test]
async fn store_migrate_moves_a_sled_installation_to_postgres() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let server = Server::start(&data, &[]);
    let (kept, _) = server.issue(tmp.path(), "kept", "ec:P-256", "ecdsa").await;
    let (revoked, _) = server
        .issue(tmp.path(), "revoked", "ec:P-256", "ecdsa")
        .await;
    let r = server
        .post(&format!("/api/v1/certificates/{revoked}/revoke"))
        .json(&serde_json::json!({"reason": "superseded"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let challenge = server
        .mint_challenge(serde_json::json!({"ttl": "1day"}))
        .await;
    let (status, _) = server.stop();
    assert!(status.success());

    let pg = cluster();
    let url = pg.database("migrated");
    let migrate = || {
        enrollca(
            &[
                "store",
                "migrate",
                "--from",
                data.to_str().unwrap(),
                "--to",
                &url,
            ],
            &[],
        )
    };
    let out = migrate();
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stdout(&out);
    assert!(report.contains("certificates 2"), "{report}");
    assert!(report.contains("events       3"), "{report}");
    assert!(report.contains("challenges   1"), "{report}");
    assert_eq!(count(pg, "migrated", "SELECT count(*) FROM certs"), 2);
    assert_eq!(pg.psql("migrated", "SELECT last FROM feed").trim(), "3");

    // Run again: the target is no longer empty.
    let out = migrate();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    assert_eq!(count(pg, "migrated", "SELECT count(*) FROM certs"), 2);

    // The same data directory (its keys), now on the database.
    let env = store_env(&url);
    let node = Server::start(&data, &borrowed(&env));
    for (serial, status) in [(&kept, "good"), (&revoked, "revoked")] {
        let rec: Value = node
            .get_json(&format!("/api/v1/certificates/{serial}"))
            .await;
        assert_eq!(rec["status"], status, "{rec}");
    }
    // The one-time challenge came along: a device enrols with it.
    let out = scepclient(&node, &tmp.path().join("device"), "device", &challenge);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    node.issue(tmp.path(), "after", "ec:P-256", "ecdsa").await;
    let seqs: Vec<u64> = node
        .events()
        .await
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5], "the feed goes on where it was");
}
