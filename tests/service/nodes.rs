//! enrollca on PostgreSQL: the real binary with `store.backend = "postgres"` on a private
//! cluster, real clients (micromdm scepclient, lego), and the database read back with psql.

use enrollca_testkit::harness as common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::acme::{Client, Responder, certificates, csr, roots_file};
use common::device;
use common::front::RoundRobin;
use common::postgres::{Cluster, cluster};
use common::*;
use enrollca_testkit::attestation::TestAttestationCa;
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

/// Asks `done` every `every` until it says yes, and returns how long that took; fails the
/// test with `what` once `bound` has passed.
async fn eventually<F, Fut>(bound: Duration, every: Duration, what: &str, mut done: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !done().await {
        assert!(start.elapsed() < bound, "{what} (after {bound:?})");
        tokio::time::sleep(every).await;
    }
    start.elapsed()
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
    eventually(
        Duration::from_secs(1),
        Duration::from_millis(20),
        "B's CRL still lacks the revocation",
        || crl_lists(&b, tmp.path(), &issuer, &serial),
    )
    .await;
    eprintln!(
        "B's CRL listed it {:?} after A revoked it",
        revoked_at.elapsed()
    );
}

/// The id of the issuer of `family` in `state`, among those `node` serves.
async fn issuer_in(node: &Server, family: &str, state: &str) -> Option<String> {
    let issuers: Value = node.get_json("/api/v1/issuers").await;
    issuers.as_array().unwrap().iter().find_map(|i| {
        (i["family"] == family && i["state"] == state).then(|| i["id"].as_str().unwrap().to_owned())
    })
}

/// What `node` itself serves (not what the database records): does its SCEP offer a next CA?
async fn offers_next_ca(node: &Server) -> bool {
    node.get_text("/scep?operation=GetCACaps")
        .await
        .contains("GetNextCACert")
}

/// A rotation step taken through one node takes effect on the other without a restart. With
/// key files the new issuer's key reaches the other node by a copy after staging: until then
/// that node goes on serving what it had (it cannot sign with a key it lacks), and it picks the
/// key up by itself within seconds of the copy. Activation through the first node then moves
/// the other node's issuance to the new CA.
#[tokio::test]
async fn a_rotation_through_one_node_takes_effect_on_the_other() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, _front) = two_nodes(tmp.path(), "rotation", &[]).await;
    let old_id = issuer_in(&a, "rsa", "active").await.unwrap();
    assert!(!offers_next_ca(&b).await);

    a.cli_ok(&["ca", "rotate", "prepare", "--family", "rsa"]);
    let next_id = issuer_in(&a, "rsa", "next").await.expect("staged");
    assert!(offers_next_ca(&a).await);
    // B has followed the event and failed to load the key it lacks: it serves what it had.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !offers_next_ca(&b).await,
        "B serves an issuer whose key it lacks"
    );
    assert!(issuer_in(&b, "rsa", "next").await.is_none());
    // Activating now would leave B issuing from the retiring CA: refused (after the nodes'
    // settling time), naming B and not A, and nothing changes.
    let refused = a.cli(&["ca", "rotate", "activate", "--family", "rsa"]);
    let why = stderr(&refused);
    assert!(!refused.status.success(), "activated while B lacks the key");
    assert!(why.contains("is not on every node yet"), "{why}");
    assert!(
        why.contains(&format!("(pid {})", b.pid())),
        "B named: {why}"
    );
    assert!(
        !why.contains(&format!("(pid {})", a.pid())),
        "A holds it: {why}"
    );
    assert_eq!(
        issuer_in(&a, "rsa", "next").await.as_deref(),
        Some(&*next_id)
    );
    assert_eq!(issuer_in(&a, "rsa", "active").await.unwrap(), old_id);

    let key = format!("ca/issuers/{next_id}.key");
    std::fs::copy(a.data.join(&key), b.data.join(&key)).unwrap();
    let loaded = eventually(
        Duration::from_secs(10),
        Duration::from_millis(100),
        "B never loaded the staged issuer after its key was copied",
        || offers_next_ca(&b),
    )
    .await;
    eprintln!("B served the staged CA {loaded:?} after the key copy");
    // B's GetNextCACert carries the staged CA's certificate.
    let next = b.get("/scep?operation=GetNextCACert").send().await.unwrap();
    assert_eq!(next.status(), 200);

    a.cli_ok(&["ca", "rotate", "activate", "--family", "rsa"]);
    let activated = std::time::Instant::now();
    loop {
        let (serial, _) = b
            .issue(tmp.path(), "after-rotation", "rsa:2048", "rsa")
            .await;
        let rec: Value = b.get_json(&format!("/api/v1/certificates/{serial}")).await;
        let issuer = rec["issuer"].as_str().unwrap().to_owned();
        if issuer == next_id {
            break;
        }
        assert!(
            // Measured: the first request after activation (~0.2-0.4 s with the RSA key
            // generation for its CSR); the bound leaves room for a loaded machine.
            activated.elapsed() < std::time::Duration::from_secs(3),
            "B still issues from the old CA 3 s after activation ({issuer})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    eprintln!(
        "B issued from the new CA {:?} after activation",
        activated.elapsed()
    );
    assert_eq!(issuer_in(&b, "rsa", "retiring").await.unwrap(), old_id);
    assert_eq!(issuer_in(&b, "rsa", "active").await.unwrap(), next_id);
    assert!(!offers_next_ca(&b).await, "nothing is staged any more");
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
    eventually(
        Duration::from_secs(10),
        Duration::from_millis(100),
        "not back",
        || async { health().await.0 == 200 },
    )
    .await;
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

/// A root rotation on one node reaches the others through the store: they serve the new
/// root and the cross certificates (`/roots.pem`, `/ca/cross.pem`) within seconds, no copy,
/// no restart.
#[tokio::test]
async fn a_root_rotation_through_one_node_reaches_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, _front) = two_nodes(tmp.path(), "root_rotation", &[]).await;
    let before = b.roots_pem().await;
    a.cli_ok(&["ca", "rotate", "root"]);
    let (roots, cross) = (a.roots_pem().await, a.get_text("/ca/cross.pem").await);
    assert_eq!(roots.matches("BEGIN CERTIFICATE").count(), 2, "{roots}");
    assert_eq!(cross.matches("BEGIN CERTIFICATE").count(), 2, "{cross}");
    assert!(roots.starts_with(&before), "the old root stays first");
    let served = eventually(
        Duration::from_secs(6),
        Duration::from_millis(100),
        "B does not serve the new root",
        || async { b.roots_pem().await == roots },
    )
    .await;
    eprintln!("B served the new root {served:?} after the rotation");
    assert_eq!(b.get_text("/ca/cross.pem").await, cross);
    // B still holds the old root's key; it must not sign a new issuer with it.
    b.cli_refused(
        &["ca", "rotate", "prepare", "--family", "ecdsa"],
        "another node rotated the root",
    );
    assert!(
        issuer_in(&a, "ecdsa", "next").await.is_none(),
        "nothing staged"
    );
}

/// A CA for a database server's certificates.
struct DbPki(rcgen::CertifiedIssuer<'static, rcgen::KeyPair>);

impl DbPki {
    fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        Self(rcgen::CertifiedIssuer::self_signed(params, key).unwrap())
    }

    /// A server certificate naming `names` (IP addresses or DNS names) and its key, PEM.
    fn server(&self, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let params = rcgen::CertificateParams::new(names).unwrap();
        let cert = params.signed_by(&key, &self.0).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A client certificate for the database role `role` (its common name) and its key, PEM.
    fn client(&self, role: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, role);
        let cert = params.signed_by(&key, &self.0).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// `sslmode`/`sslrootcert` as libpq reads them: the node's connections are encrypted, and a
/// node refuses to start against a server it cannot authenticate (a root that did not sign
/// it; with verify-full, a certificate for another name) rather than hand it the fleet's
/// records.
#[tokio::test]
async fn a_node_talks_to_its_database_over_tls_and_refuses_a_server_it_cannot_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = Cluster::private();
    let pki = DbPki::new("enrollca test database CA");
    let (cert, key) = pki.server(&["127.0.0.1"]);
    pg.serve_tls(&cert, &key, None);
    let root = tmp.path().join("db-root.pem");
    std::fs::write(&root, pki.0.pem()).unwrap();
    let url = pg.database("tls");
    let with = |mode: &str, root: &Path| {
        store_env(&format!(
            "{url}?sslmode={mode}&sslrootcert={}",
            root.display()
        ))
    };

    let env = with("verify-full", &root);
    let dir = init_dir(tmp.path(), &[], &borrowed(&env));
    let node = Server::start(&dir, &borrowed(&env));
    let created = node
        .post("/api/v1/scep/challenges")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{:?}", created.text().await);
    let connections = pg.psql(
        "postgres",
        "SELECT count(*) FILTER (WHERE s.ssl) || ' of ' || count(*) \
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.application_name = 'enrollca'",
    );
    let (encrypted, all) = connections.trim().split_once(" of ").unwrap();
    assert!(
        all.parse::<u32>().unwrap() >= 2,
        "pool and listener: {connections}"
    );
    assert_eq!(encrypted, all, "every connection encrypted: {connections}");
    drop(node);

    // A root that did not sign the server's certificate.
    let stranger = tmp.path().join("stranger-root.pem");
    std::fs::write(&stranger, DbPki::new("another CA").0.pem()).unwrap();
    let err = Server::try_start(&dir, &borrowed(&with("verify-ca", &stranger)))
        .err()
        .expect("refused");
    assert!(
        err.contains("unable to get local issuer certificate"),
        "{err}"
    );
    // The right chain, but the certificate names another server; and a role that logs in
    // only with a client certificate.
    let (cert, key) = pki.server(&["db.internal"]);
    pg.psql("postgres", "CREATE ROLE by_cert LOGIN");
    pg.psql("postgres", "CREATE DATABASE tls_cert OWNER by_cert");
    pg.serve_tls(&cert, &key, Some((&pki.0.pem(), "by_cert")));
    let err = Server::try_start(&dir, &borrowed(&with("verify-full", &root)))
        .err()
        .expect("refused");
    assert!(err.contains("IP address mismatch"), "{err}");
    // verify-ca checks the chain only, and accepts it.
    let node = Server::start(&dir, &borrowed(&with("verify-ca", &root)));
    assert_eq!(node.get("/healthz").send().await.unwrap().status(), 200);
    drop(node);
    // sslcert/sslkey: the node presents its certificate, and the role needs it.
    let (client, client_key) = pki.client("by_cert");
    let (client_pem, client_key_pem) = (tmp.path().join("node.pem"), tmp.path().join("node.key"));
    std::fs::write(&client_pem, client).unwrap();
    std::fs::write(&client_key_pem, client_key).unwrap();
    let by_cert = format!(
        "postgres://by_cert@127.0.0.1:{}/tls_cert?sslmode=verify-ca&sslrootcert={}",
        pg.port,
        root.display()
    );
    let env = store_env(&format!(
        "{by_cert}&sslcert={}&sslkey={}",
        client_pem.display(),
        client_key_pem.display()
    ));
    let dir = init_dir(&tmp.path().join("by-cert"), &[], &borrowed(&env));
    let node = Server::start(&dir, &borrowed(&env));
    assert_eq!(node.get("/healthz").send().await.unwrap().status(), 200);
    drop(node);
    let err = Server::try_start(&dir, &borrowed(&store_env(&by_cert)))
        .err()
        .expect("refused");
    assert!(err.contains("requires a valid client certificate"), "{err}");
    // The cluster takes TCP connections over TLS only: a node without TLS is turned away,
    // so the connections counted above could not have been plain.
    let err = Server::try_start(
        &dir,
        &borrowed(&store_env(&format!("{url}?sslmode=disable"))),
    )
    .err()
    .expect("refused");
    assert!(err.contains("no encryption"), "{err}");
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
            let what = format!("the webhook did not get {n} events");
            eventually(
                Duration::from_secs(30),
                Duration::from_millis(50),
                &what,
                || {
                    let have = got.lock().unwrap().len();
                    async move { have >= n }
                },
            )
            .await
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

/// What goes wrong in the middle of the proof run.
#[derive(Clone, Copy, Debug)]
enum Mishap {
    /// `kill -9` of one of the three nodes.
    KillANode,
    /// `pg_ctl restart -m fast`: every node loses every connection.
    RestartTheDatabase,
}

/// A proof run's certificates received so far, and its tries that failed.
#[derive(Default)]
struct Progress {
    received: std::sync::atomic::AtomicUsize,
    failed_tries: std::sync::atomic::AtomicUsize,
}

impl Progress {
    fn received(&self) -> usize {
        self.received.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Retries `attempt` (run as its own task, so a failed assertion inside is a failed try)
/// until it succeeds, as a device or an MDM retries; gives up after 60 s.
async fn until_it_works<T, F, Fut>(progress: &Progress, what: &str, attempt: F) -> T
where
    T: Send + 'static,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let start = std::time::Instant::now();
    loop {
        match tokio::spawn(attempt()).await {
            Ok(value) => return value,
            Err(_) if start.elapsed() < std::time::Duration::from_secs(60) => {
                progress
                    .failed_tries
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{what} never worked: {e}"),
        }
    }
}

/// Three nodes on one database behind round-robin fronts; SCEP (micromdm scepclient), ACME
/// http-01 and device-attest-01 clients and MDM revocations run through them while `mishap`
/// strikes. Afterwards: every certificate a client received is in the database, every
/// revocation the MDM was told of is there, the feed runs 1..n without a gap, and every
/// client got through by retrying.
async fn three_nodes_survive(mishap: Mishap) {
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path().to_owned();
    let pg = Arc::new(Cluster::private());
    let url = pg.database("proof");
    let responder = Arc::new(Responder::start().await);
    let attestation = Arc::new(TestAttestationCa::generate("proof").unwrap());
    let attestation_root = tmp.join("attestation-root.pem");
    std::fs::write(&attestation_root, attestation.root_pem()).unwrap();

    let mut env = store_env(&url);
    let first = init_dir(&tmp, &[], &borrowed(&env));
    let https_front = RoundRobin::bind().await;
    let http_front = RoundRobin::bind().await;
    env.extend([
        ("ENROLLCA_LISTEN_PUBLIC_HTTPS_URL", https_front.https()),
        (
            "ENROLLCA_LISTEN_PUBLIC_URL",
            format!("http://{}", http_front.addr),
        ),
        ("ENROLLCA_ACME_HTTP01_PORT", responder.port.to_string()),
        (
            "ENROLLCA_ACME_ATTESTATION_ROOTS",
            attestation_root.display().to_string(),
        ),
        ("ENROLLCA_SCEP_CHALLENGE", CHALLENGE.into()),
        ("ENROLLCA_LIMITS_CLIENT_RATE", "0".into()),
    ]);
    let mut nodes = Vec::new();
    for i in 0..3 {
        let data = if i == 0 {
            first.clone()
        } else {
            let copy = tmp.join(format!("node{i}"));
            let out = run(
                "cp",
                &["-a", first.to_str().unwrap(), copy.to_str().unwrap()],
            );
            assert!(out.status.success());
            copy
        };
        nodes.push(Server::start(&data, &borrowed(&env)));
    }
    let addr = |url: &str, scheme: &str| -> std::net::SocketAddr {
        url.trim_start_matches(scheme).parse().unwrap()
    };
    https_front.route(nodes.iter().map(|n| addr(&n.https, "https://")).collect());
    http_front.route(nodes.iter().map(|n| addr(&n.http, "http://")).collect());
    let roots = Arc::new(nodes[0].roots_pem().await);
    let token = Arc::new(nodes[0].token.clone());
    let api = Arc::new(
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(roots.as_bytes()).unwrap())
            .pool_max_idle_per_host(0)
            .build()
            .unwrap(),
    );
    let https = Arc::new(https_front.https());
    let http = Arc::new(format!("http://{}", http_front.addr));
    // The MDM registers the device the attesting clients enrol.
    let status = api
        .put(format!("{https}/api/v1/devices/proof-device"))
        .bearer_auth(token.as_str())
        .json(&serde_json::json!({"serial": device::SERIAL}))
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "{status}");
    let fingerprint = Arc::new(scep_ca_fingerprint(&nodes[0]));

    const ROUNDS: usize = 8;
    let progress = Arc::new(Progress::default());
    // SCEP devices, each enrolling and then revoked by the MDM.
    let scep = {
        let progress = progress.clone();
        let (http, https, api, token, fingerprint, tmp) = (
            http.clone(),
            https.clone(),
            api.clone(),
            token.clone(),
            fingerprint.clone(),
            tmp.clone(),
        );
        tokio::spawn(async move {
            let (mut received, mut revoked) = (Vec::new(), Vec::new());
            for i in 0..ROUNDS {
                let dir = tmp.join(format!("scep-{i}"));
                let serial = until_it_works(&progress, "a SCEP enrolment", || {
                    let (http, fingerprint, dir) = (http.clone(), fingerprint.clone(), dir.clone());
                    async move {
                        let out = tokio::task::spawn_blocking(move || {
                            std::fs::create_dir_all(&dir).unwrap();
                            let out = std::process::Command::new("scepclient")
                                .args(["-server-url", &format!("{http}/scep")])
                                .args(["-ca-fingerprint", &fingerprint, "-challenge", CHALLENGE])
                                .args(["-private-key", dir.join("key.pem").to_str().unwrap()])
                                .args(["-certificate", dir.join("cert.pem").to_str().unwrap()])
                                .args(["-cn", &format!("proof-scep-{i}")])
                                .output()
                                .unwrap();
                            (out, dir)
                        })
                        .await
                        .unwrap();
                        assert!(out.0.status.success(), "{}", stderr(&out.0));
                        serial_of(&out.1.join("cert.pem"))
                    }
                })
                .await;
                progress
                    .received
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                received.push(serial.clone());
                until_it_works(&progress, "a revocation", || {
                    let (api, https, token, serial) =
                        (api.clone(), https.clone(), token.clone(), serial.clone());
                    async move {
                        let r = api
                            .post(format!("{https}/api/v1/certificates/{serial}/revoke"))
                            .bearer_auth(token.as_str())
                            .json(&serde_json::json!({"reason": "cessationOfOperation"}))
                            .send()
                            .await
                            .unwrap();
                        // A retry of a revocation that did land is told so: done either way.
                        assert!(matches!(r.status().as_u16(), 200 | 409), "{}", r.status());
                    }
                })
                .await;
                revoked.push(serial);
            }
            (received, revoked)
        })
    };
    // ACME http-01 and device-attest-01 clients, each order on a fresh client.
    let acme = |profile: &'static str| {
        let progress = progress.clone();
        let (https, roots, responder, attestation) = (
            https.clone(),
            roots.clone(),
            responder.clone(),
            attestation.clone(),
        );
        tokio::spawn(async move {
            let mut received = Vec::new();
            for i in 0..ROUNDS {
                let serial = until_it_works(&progress, "an ACME order", || {
                    let (https, roots, responder, attestation) = (
                        https.clone(),
                        roots.clone(),
                        responder.clone(),
                        attestation.clone(),
                    );
                    async move {
                        let mut c = Client::at(&https, &roots, profile, false).await;
                        c.register().await;
                        let (order_url, order) = if profile == "device" {
                            let key = rcgen::KeyPair::generate().unwrap();
                            let pending = device::order_for(&mut c, device::SERIAL).await;
                            device::attest(&mut c, &pending, &attestation, &key).await;
                            let r = device::finalize(&mut c, &pending, &key, "proof").await;
                            assert_eq!(r.status, 200, "{}", r.text);
                            (pending.order_url.clone(), pending.order)
                        } else {
                            let name = format!("proof-{i}.localhost");
                            let (order_url, order) = c.order(&[&name]).await;
                            let order = c.authorize(&order_url, &order, &responder).await;
                            assert_eq!(order["status"], "ready", "{order}");
                            let (csr_der, _) = csr(&[&name]);
                            let r = c.finalize(&order, &csr_der).await;
                            assert_eq!(r.status, 200, "{}", r.text);
                            (order_url, order)
                        };
                        let _ = order;
                        let order = c.poll(&order_url, "processing").await;
                        assert_eq!(order["status"], "valid", "{order}");
                        let cert_url = order["certificate"].as_str().unwrap().to_owned();
                        let chain = c.post(&cert_url, None).await;
                        assert_eq!(chain.status, 200, "{}", chain.text);
                        cert_url.rsplit('/').next().unwrap().to_owned()
                    }
                })
                .await;
                progress
                    .received
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                received.push(serial);
            }
            received
        })
    };
    let http01 = acme("default");
    let attested = acme("device");

    // Mid-run (a few certificates in), the mishap.
    while progress.received() < 4 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let before = progress.received();
    let mut survivors = nodes;
    match mishap {
        Mishap::KillANode => survivors.remove(1).kill9(),
        Mishap::RestartTheDatabase => {
            let pg = pg.clone();
            tokio::task::spawn_blocking(move || pg.restart())
                .await
                .unwrap();
        }
    }

    let (scep_received, revoked) = scep.await.unwrap();
    let mut received = scep_received;
    received.extend(http01.await.unwrap());
    received.extend(attested.await.unwrap());
    assert_eq!(received.len(), 3 * ROUNDS);
    assert!(
        before < 3 * ROUNDS / 2,
        "the mishap came after {before} of {}",
        3 * ROUNDS
    );

    // Every certificate a client received is in the database, and every revocation.
    let node = &survivors[0];
    for serial in &received {
        let rec: Value = node
            .get_json(&format!("/api/v1/certificates/{serial}"))
            .await;
        let expected = if revoked.contains(serial) {
            "revoked"
        } else {
            "good"
        };
        assert_eq!(rec["status"], expected, "{serial}: {rec}");
    }
    let distinct: std::collections::HashSet<_> = received.iter().collect();
    assert_eq!(distinct.len(), received.len(), "a serial handed out twice");
    assert_eq!(
        pg.psql(
            "proof",
            "SELECT count(*) = count(DISTINCT serial) FROM certs"
        )
        .trim(),
        "t"
    );
    // The feed: 1..n, no gap, and as long as what the certificates account for.
    let (n, max, min) = {
        let row = pg.psql("proof", "SELECT count(*), max(seq), min(seq) FROM events");
        let v: Vec<u64> = row.trim().split('|').map(|x| x.parse().unwrap()).collect();
        (v[0], v[1], v[2])
    };
    assert_eq!((min, max), (1, n), "the feed has a gap");
    let certs = count(&pg, "proof", "SELECT count(*) FROM certs");
    let revocations = count(
        &pg,
        "proof",
        "SELECT count(*) FROM certs WHERE revocation IS NOT NULL",
    );
    assert_eq!(
        n,
        certs + revocations,
        "one event per issuance and per revocation"
    );
    assert_eq!(revocations as usize, revoked.len());
    eprintln!(
        "{mishap:?} after {before} certificates: {} received, {certs} recorded (any more went \
         to clients that lost the answer and retried), {n} events, {} failed tries retried",
        received.len(),
        progress
            .failed_tries
            .load(std::sync::atomic::Ordering::Relaxed)
    );
}

#[tokio::test]
async fn three_nodes_lose_nothing_when_one_is_killed() {
    three_nodes_survive(Mishap::KillANode).await;
}

#[tokio::test]
async fn three_nodes_lose_nothing_when_the_database_restarts() {
    three_nodes_survive(Mishap::RestartTheDatabase).await;
}
