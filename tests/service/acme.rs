//! ACME against the real binary over HTTPS: lego and certbot (real clients, real http-01
//! responders) enrol, renew and revoke; a hand-driven client breaks every rule on purpose and
//! each break is refused with its problem type and changes nothing.

use enrollca_testkit::harness as common;

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::acme::{Client, Key, Responder, Tweak, certificates, check_issued, csr, roots_file};
use common::*;
use enrollca::store::{DocKind, SledStore, Store};
use serde_json::{Value, json};

/// A server whose http-01 validator fetches from `port`, and its roots as a file.
async fn acme_server(tmp: &Path, port: u16) -> (Server, String) {
    let data = init_dir(tmp, &[], &[]);
    let server = Server::start(&data, &[("ENROLLCA_ACME_HTTP01_PORT", &port.to_string())]);
    let roots = roots_file(&server, tmp).await;
    (server, roots)
}

fn directory(server: &Server, profile: &str) -> String {
    format!("{}/acme/{profile}/directory", server.https)
}

fn lego(
    dir: &Path,
    roots: &str,
    server: &Server,
    port: u16,
    key_type: &str,
    args: &[&str],
) -> std::process::Output {
    let mut cmd = std::process::Command::new("lego");
    cmd.env("LEGO_CA_CERTIFICATES", roots)
        .args(["--path", dir.to_str().unwrap()])
        .args(["--server", &directory(server, "default")])
        .args(["--email", "ops@example.com", "--accept-tos"])
        .args(["--domains", "lego.localhost", "--key-type", key_type])
        .args(["--http", "--http.port", &format!("127.0.0.1:{port}")])
        .args(args);
    cmd.output().unwrap()
}

#[tokio::test]
async fn lego_enrols_renews_and_revokes_with_ec_and_rsa_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let (server, roots) = acme_server(tmp.path(), port).await;

    for key_type in ["ec256", "rsa2048"] {
        let dir = tmp.path().join(key_type);
        let out = lego(&dir, &roots, &server, port, key_type, &["run"]);
        assert!(out.status.success(), "lego run: {}", stderr(&out));
        let certs = dir.join("certificates");
        let bundle = std::fs::read_to_string(certs.join("lego.localhost.crt")).unwrap();
        let key = certs.join("lego.localhost.key");
        let first = check_issued(&dir, &roots, &bundle, &key, "lego.localhost");

        // Recorded like every issuance: protocol, the ordering account, an event.
        let rec = server
            .get_json(&format!("/api/v1/certificates/{first}"))
            .await;
        assert_eq!(rec["protocol"], "acme");
        assert_eq!(rec["status"], "good");
        assert!(rec["account"].is_string(), "{rec}");

        // Renewal (the certificate lives a year; --days 400 makes it due now).
        let out = lego(
            &dir,
            &roots,
            &server,
            port,
            key_type,
            &["renew", "--days", "400", "--no-random-sleep"],
        );
        assert!(out.status.success(), "lego renew: {}", stderr(&out));
        let bundle = std::fs::read_to_string(certs.join("lego.localhost.crt")).unwrap();
        let second = check_issued(&dir, &roots, &bundle, &key, "lego.localhost");
        assert_ne!(first, second, "renewal gives a new certificate");

        let out = lego(&dir, &roots, &server, port, key_type, &["revoke"]);
        assert!(out.status.success(), "lego revoke: {}", stderr(&out));
        let rec = server
            .get_json(&format!("/api/v1/certificates/{second}"))
            .await;
        assert_eq!(rec["status"], "revoked", "{rec}");
        let rec = server
            .get_json(&format!("/api/v1/certificates/{first}"))
            .await;
        assert_eq!(rec["status"], "good", "only the revoked one changed");
    }
    let kinds = server.event_kinds().await;
    assert_eq!(kinds.iter().filter(|k| *k == "issued").count(), 4);
    assert_eq!(kinds.iter().filter(|k| *k == "revoked").count(), 2);

    // Each issuance lists the certificate under its account, which is what keeps an account
    // that got certificates from being purged as abandoned.
    let mut listed = Vec::new();
    for rec in certificates(&server).await {
        listed.push(format!(
            "{}/{}",
            rec["account"].as_str().unwrap(),
            rec["serial"].as_str().unwrap()
        ));
    }
    let data = server.data.clone();
    server.stop();
    let store = SledStore::open(&data.join("db")).unwrap();
    let marks: Vec<String> = store
        .docs(DocKind::AcmeAccountCert, "", None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    listed.sort();
    assert_eq!(listed.len(), 4);
    assert_eq!(marks, listed);
}

fn certbot(dir: &Path, roots: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new("certbot");
    cmd.env("REQUESTS_CA_BUNDLE", roots)
        .args(["--non-interactive", "--no-random-sleep-on-renew"])
        .args(["--config-dir", dir.join("config").to_str().unwrap()])
        .args(["--work-dir", dir.join("work").to_str().unwrap()])
        .args(["--logs-dir", dir.join("logs").to_str().unwrap()])
        .args(args);
    cmd.output().unwrap()
}

#[tokio::test]
async fn certbot_enrols_renews_and_revokes() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let (server, roots) = acme_server(tmp.path(), port).await;
    let dir = tmp.path().join("certbot");
    let dir_url = directory(&server, "default");
    let port_s = port.to_string();
    let standalone = [
        "--server",
        &dir_url,
        "--standalone",
        "--http-01-port",
        &port_s,
        "--http-01-address",
        "127.0.0.1",
    ];

    let mut args = vec![
        "certonly",
        "--agree-tos",
        "-m",
        "ops@example.com",
        "-d",
        "certbot.localhost",
    ];
    args.extend(standalone);
    let out = certbot(&dir, &roots, &args);
    assert!(
        out.status.success(),
        "certbot certonly: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let live = dir.join("config/live/certbot.localhost");
    let bundle = std::fs::read_to_string(live.join("fullchain.pem")).unwrap();
    let first = check_issued(
        &dir,
        &roots,
        &bundle,
        &live.join("privkey.pem"),
        "certbot.localhost",
    );

    let mut args = vec!["renew", "--force-renewal"];
    args.extend(standalone);
    let out = certbot(&dir, &roots, &args);
    assert!(
        out.status.success(),
        "certbot renew: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let bundle = std::fs::read_to_string(live.join("fullchain.pem")).unwrap();
    let second = check_issued(
        &dir,
        &roots,
        &bundle,
        &live.join("privkey.pem"),
        "certbot.localhost",
    );
    assert_ne!(first, second);

    let cert = live.join("cert.pem");
    let out = certbot(
        &dir,
        &roots,
        &[
            "revoke",
            "--server",
            &dir_url,
            "--cert-path",
            cert.to_str().unwrap(),
            "--reason",
            "superseded",
            "--no-delete-after-revoke",
        ],
    );
    assert!(
        out.status.success(),
        "certbot revoke: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let rec = server
        .get_json(&format!("/api/v1/certificates/{second}"))
        .await;
    assert_eq!(rec["status"], "revoked");
    assert_eq!(rec["revocation_reason"], "superseded");

    // Revoking again: certbot reports the server's alreadyRevoked (in its log on Python 3.11).
    let out = certbot(
        &dir,
        &roots,
        &[
            "revoke",
            "--server",
            &dir_url,
            "--cert-path",
            cert.to_str().unwrap(),
            "--no-delete-after-revoke",
        ],
    );
    assert!(!out.status.success());
    let log = std::fs::read_to_string(dir.join("logs/letsencrypt.log")).unwrap();
    assert!(
        log.contains("urn:ietf:params:acme:error:alreadyRevoked"),
        "certbot log lacks alreadyRevoked"
    );
}

#[tokio::test]
async fn an_unreachable_http01_responder_invalidates_the_order_and_nothing_is_issued() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, roots) = acme_server(tmp.path(), free_port()).await;

    // lego answers on another port than the one the server fetches from.
    let out = lego(
        &tmp.path().join("lego"),
        &roots,
        &server,
        free_port(),
        "ec256",
        &["run"],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("urn:ietf:params:acme:error:connection"),
        "{err}"
    );

    // The hand-driven client sees the authorization and the order invalid, with the cause.
    let mut c = Client::new(&server, "default").await;
    c.register().await;
    let (order_url, order) = c.order(&["nothere.localhost"]).await;
    let responder = Responder::start().await;
    let order = c.authorize(&order_url, &order, &responder).await;
    assert_eq!(order["status"], "invalid");
    let authz = c
        .post(order["authorizations"][0].as_str().unwrap(), None)
        .await
        .body;
    assert_eq!(authz["status"], "invalid");
    assert_eq!(authz["challenges"][0]["status"], "invalid");
    assert_eq!(
        authz["challenges"][0]["error"]["type"],
        "urn:ietf:params:acme:error:connection"
    );
    let (der, _) = csr(&["nothere.localhost"]);
    let fin = c.finalize(&order, &der).await;
    assert_eq!(fin.problem(), "orderNotReady");
    assert!(certificates(&server).await.is_empty(), "nothing was issued");
}

/// A server with an http-01 responder, and a client with a ready order for `name`.
async fn ready_order(
    tmp: &Path,
    name: &str,
) -> (
    Server,
    enrollca_testkit::acme::Http01Responder,
    Client,
    String,
    Value,
) {
    let responder = Responder::start().await;
    let (server, _) = acme_server(tmp, responder.port).await;
    let mut c = Client::new(&server, "default").await;
    c.register().await;
    let (order_url, order) = c.order(&[name]).await;
    let order = c.authorize(&order_url, &order, &responder).await;
    assert_eq!(order["status"], "ready", "{order}");
    (server, responder, c, order_url, order)
}

#[tokio::test]
async fn broken_requests_are_refused_with_their_problem_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, _responder, mut c, order_url, order) =
        ready_order(tmp.path(), "rules.localhost").await;
    let new_order = c.url("newOrder");
    let orders_of = |c: &Client| format!("{}/orders", c.kid.clone().unwrap());
    let order_body = json!({"identifiers": [{"type": "dns", "value": "x.localhost"}]});
    let count_orders = |body: Value| body["orders"].as_array().unwrap().len();
    let orders_url = orders_of(&c);
    let before = count_orders(c.post(&orders_url, None).await.body);
    assert_eq!(before, 1);

    // Each break of the envelope rules, on an otherwise good newOrder.
    let used = c.fresh_nonce().await;
    let ok = c
        .post_with(
            &orders_url,
            None,
            Tweak {
                nonce: Some(Some(used.clone())),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(ok.status, 200);
    let stranger = Key::generate();
    let unknown = format!("{}/acme/default/account/nobody", server.https);
    let t = Tweak::default;
    let cases = [
        (
            "no nonce",
            Tweak {
                nonce: Some(None),
                ..t()
            },
            400,
            "badNonce",
        ),
        (
            "unknown nonce",
            Tweak {
                nonce: Some(Some("AAAAAAAAAAAAAAAAAAAAAA".into())),
                ..t()
            },
            400,
            "badNonce",
        ),
        (
            "reused nonce",
            Tweak {
                nonce: Some(Some(used)),
                ..t()
            },
            400,
            "badNonce",
        ),
        (
            "url of another resource",
            Tweak {
                url: Some(c.url("revokeCert")),
                ..t()
            },
            403,
            "unauthorized",
        ),
        (
            "alg none",
            Tweak {
                alg: Some("none"),
                ..t()
            },
            400,
            "badSignatureAlgorithm",
        ),
        (
            "alg HS256",
            Tweak {
                alg: Some("HS256"),
                ..t()
            },
            400,
            "badSignatureAlgorithm",
        ),
        (
            "another key's signature",
            Tweak {
                signer: Some(&stranger),
                ..t()
            },
            400,
            "malformed",
        ),
        (
            "kid of no account",
            Tweak {
                kid: Some(unknown),
                ..t()
            },
            400,
            "accountDoesNotExist",
        ),
        (
            "jwk where kid is required",
            Tweak {
                force_jwk: true,
                ..t()
            },
            400,
            "malformed",
        ),
    ];
    for (what, tweak, status, problem) in cases {
        let r = c
            .post_with(&new_order, Some(order_body.clone()), tweak)
            .await;
        assert_eq!(
            (r.status, r.problem()),
            (status, problem),
            "{what}: {}",
            r.text
        );
        // Every answer carries a fresh nonce, so clients can retry badNonce.
        assert!(r.headers.contains_key("replay-nonce"), "{what}");
        if problem == "badSignatureAlgorithm" {
            let algs = r.body["algorithms"].as_array().unwrap();
            assert!(algs.contains(&json!("ES256")), "{what}: {}", r.text);
        }
    }

    // Not JOSE at all, and the wrong content type.
    let r = c.send(&new_order, &json!({"hello": "world"})).await;
    assert_eq!(r.problem(), "malformed");
    let resp = c
        .http
        .post(&new_order)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);

    // Identifiers outside the profile: rejected, one subproblem each.
    let bad = json!({"identifiers": [
        {"type": "dns", "value": "example.com"},
        {"type": "dns", "value": "ok.localhost"},
        {"type": "dns", "value": "*.localhost"},
    ]});
    let r = c.post(&new_order, Some(bad)).await;
    assert_eq!(r.problem(), "rejectedIdentifier");
    let subs = r.body["subproblems"].as_array().unwrap();
    assert_eq!(subs.len(), 2, "{}", r.text);
    assert_eq!(subs[0]["identifier"]["value"], "example.com");

    assert_eq!(
        count_orders(c.post(&orders_url, None).await.body),
        before,
        "no order was created"
    );

    // Finalize: CSR names that differ from the order's, and a weak key.
    let (der, _) = csr(&["rules.localhost", "extra.localhost"]);
    let r = c.finalize(&order, &der).await;
    assert_eq!(r.problem(), "badCSR");
    let weak = std::fs::read(write_weak_csr(tmp.path())).unwrap();
    let r = c.finalize(&order, &weak).await;
    assert_eq!(r.problem(), "badCSR");
    assert!(
        r.body["detail"].as_str().unwrap().contains("1024"),
        "{}",
        r.text
    );
    let finalize = order["finalize"].as_str().unwrap();
    let r = c.post(finalize, Some(json!({"csr": "%%%"}))).await;
    assert_eq!(r.problem(), "badCSR");
    assert_eq!(
        c.post(&order_url, None).await.body["status"],
        "ready",
        "the order is untouched"
    );
    assert!(certificates(&server).await.is_empty());

    // Finalize before the order is ready.
    let (pending_url, pending) = c.order(&["later.localhost"]).await;
    let (der, _) = csr(&["later.localhost"]);
    let r = c.finalize(&pending, &der).await;
    assert_eq!((r.status, r.problem()), (403, "orderNotReady"));
    assert_eq!(c.post(&pending_url, None).await.body["status"], "pending");

    // Someone else's order, and their certificate.
    let (der, _) = csr(&["rules.localhost"]);
    let done = c.finalize(&order, &der).await;
    assert_eq!(done.body["status"], "valid", "{}", done.text);
    let cert_url = done.body["certificate"].as_str().unwrap().to_owned();
    let mut other = Client::new(&server, "default").await;
    other.register().await;
    let r = other.post(&order_url, None).await;
    assert_eq!(r.problem(), "unauthorized");
    let r = other.post(&cert_url, None).await;
    assert_eq!(r.problem(), "unauthorized");
    let chain = c.post(&cert_url, None).await;
    assert_eq!(
        chain.headers["content-type"],
        "application/pem-certificate-chain"
    );
    let leaf_pem = chain
        .text
        .split_inclusive("-----END CERTIFICATE-----\n")
        .next()
        .unwrap();
    let leaf_der = pem_to_der(leaf_pem);
    let revoke = other.url("revokeCert");
    let r = other
        .post(&revoke, Some(json!({"certificate": B64.encode(&leaf_der)})))
        .await;
    assert_eq!(r.problem(), "unauthorized");
    let r = c
        .post(
            &revoke,
            Some(json!({"certificate": B64.encode(&leaf_der), "reason": 7})),
        )
        .await;
    assert_eq!(r.problem(), "badRevocationReason");
    let serial = certificates(&server).await[0]["serial"]
        .as_str()
        .unwrap()
        .to_owned();
    let rec = server
        .get_json(&format!("/api/v1/certificates/{serial}"))
        .await;
    assert_eq!(rec["status"], "good", "refused revocations changed nothing");

    // The owner revokes; a second time is alreadyRevoked.
    let r = c
        .post(
            &revoke,
            Some(json!({"certificate": B64.encode(&leaf_der), "reason": 1})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = c
        .post(&revoke, Some(json!({"certificate": B64.encode(&leaf_der)})))
        .await;
    assert_eq!(r.problem(), "alreadyRevoked");
}

fn write_weak_csr(dir: &Path) -> std::path::PathBuf {
    let key = dir.join("weak.key");
    let der = dir.join("weak.csr.der");
    let out = run(
        "openssl",
        &[
            "req",
            "-new",
            "-nodes",
            "-newkey",
            "rsa:1024",
            "-keyout",
            key.to_str().unwrap(),
            "-subj",
            "/CN=rules.localhost",
            "-addext",
            "subjectAltName=DNS:rules.localhost",
            "-outform",
            "DER",
            "-out",
            der.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    der
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

#[tokio::test]
async fn accounts_update_roll_their_key_deactivate_and_revoke_by_certificate_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, _responder, mut c, _order_url, order) =
        ready_order(tmp.path(), "acct.localhost").await;
    let kid = c.kid.clone().unwrap();

    // newAccount with the same key finds the account; onlyReturnExisting with a new key does not.
    let again = c
        .post_with(
            &c.url("newAccount"),
            Some(json!({})),
            Tweak {
                force_jwk: true,
                ..Default::default()
            },
        )
        .await;
    assert_eq!((again.status, again.location()), (200, kid.clone()));
    // Whatever else the request says (§7.3.1): a contact that would be refused for a new key
    // still finds the account, and changes nothing in it.
    let again = c
        .post_with(
            &c.url("newAccount"),
            Some(json!({"contact": ["tel:+1555"]})),
            Tweak {
                force_jwk: true,
                ..Default::default()
            },
        )
        .await;
    assert_eq!((again.status, again.location()), (200, kid.clone()));
    assert_eq!(again.body["contact"], json!([]), "{}", again.text);
    // A routine second newAccount is no error of ours: nothing at ERROR in the log.
    let log = server.log_so_far();
    assert!(!log.contains("ERROR"), "{log}");
    let mut fresh = Client::new(&server, "default").await;
    let new_account = fresh.url("newAccount");
    for (payload, problem) in [
        (json!({"onlyReturnExisting": true}), "accountDoesNotExist"),
        (json!({"contact": ["tel:+1555"]}), "unsupportedContact"),
        (
            json!({"contact": ["mailto:not-an-address"]}),
            "invalidContact",
        ),
    ] {
        let r = fresh.post(&new_account, Some(payload)).await;
        assert_eq!(r.problem(), problem);
    }

    // Contact update.
    let r = c
        .post(&kid, Some(json!({"contact": ["mailto:new@example.com"]})))
        .await;
    assert_eq!(r.body["contact"], json!(["mailto:new@example.com"]));

    // Revocation by the certificate's own key (no account).
    let (der, cert_key) = csr(&["acct.localhost"]);
    let done = c.finalize(&order, &der).await;
    let chain = c
        .post(done.body["certificate"].as_str().unwrap(), None)
        .await
        .text;
    let leaf = pem_to_der(
        chain
            .split_inclusive("-----END CERTIFICATE-----\n")
            .next()
            .unwrap(),
    );
    let ring_key = {
        let pkcs8 = cert_key.serialize_der();
        Key::from_pkcs8(&pkcs8).unwrap()
    };
    let mut holder = Client::new(&server, "default").await;
    holder.key = ring_key;
    let r = holder
        .post(
            &holder.url("revokeCert"),
            Some(json!({"certificate": B64.encode(&leaf)})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Key rollover: the inner JWS is signed by the new key and names the old one.
    let new_key = Key::generate();
    let key_change = c.url("keyChange");
    let inner = new_key.jws(
        &json!({"alg": "ES256", "jwk": new_key.jwk_json(), "url": key_change}),
        Some(&json!({"account": kid, "oldKey": c.key.jwk_json()})),
    );
    let r = c.post(&key_change, Some(inner)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let old_key = std::mem::replace(&mut c.key, new_key);
    let r = c.post(&kid, None).await;
    assert_eq!(r.status, 200, "the new key signs for the account");
    let r = c
        .post_with(
            &kid,
            None,
            Tweak {
                signer: Some(&old_key),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(r.problem(), "malformed", "the old key no longer does");

    // A key that already belongs to another account: 409 with that account's Location.
    let mut other = Client::new(&server, "default").await;
    other.register().await;
    let inner = other.key.jws(
        &json!({"alg": "ES256", "jwk": other.key.jwk_json(), "url": key_change}),
        Some(&json!({"account": kid, "oldKey": c.key.jwk_json()})),
    );
    let r = c.post(&key_change, Some(inner)).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.location(), other.kid.clone().unwrap());

    // Deactivation is final: the account can do nothing afterwards.
    let r = c.post(&kid, Some(json!({"status": "deactivated"}))).await;
    assert_eq!(r.body["status"], "deactivated");
    let r = c
        .post(
            &c.url("newOrder"),
            Some(json!({"identifiers": [{"type": "dns", "value": "a.localhost"}]})),
        )
        .await;
    assert_eq!(r.problem(), "unauthorized");
}

#[tokio::test]
async fn external_account_binding_is_required_where_configured() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let config = std::fs::read_to_string(data.join("config.toml")).unwrap();
    std::fs::write(
        data.join("config.toml"),
        format!("{config}\n[acme.profiles.partners]\ndns_names = [\"localhost\"]\nchallenges = [\"http-01\"]\nexternal_account_required = true\ninternal_targets = [\"127.0.0.0/8\", \"::1/128\"]\n"),
    )
    .unwrap();
    let port = free_port();
    let server = Server::start(&data, &[("ENROLLCA_ACME_HTTP01_PORT", &port.to_string())]);
    let roots = roots_file(&server, tmp.path()).await;

    let mut c = Client::new(&server, "partners").await;
    assert_eq!(c.dir["meta"]["externalAccountRequired"], true);
    let r = c
        .post(
            &c.url("newAccount"),
            Some(json!({"termsOfServiceAgreed": true})),
        )
        .await;
    assert_eq!(r.problem(), "externalAccountRequired");

    let mint = |profile: &str| {
        server
            .post("/api/v1/acme/eab-keys")
            .json(&json!({"profile": profile}))
            .send()
    };
    assert_eq!(mint("nope").await.unwrap().status(), 404);
    let unauth = server
        .client
        .post(server.url("/api/v1/acme/eab-keys"))
        .json(&json!({"profile": "partners"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status(), 401);
    assert_eq!(mint("partners").await.unwrap().status(), 201);
    // The operator's way: the CLI, through the running server.
    let out = server.cli(&["acme", "eab-key", "--profile", "partners", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let eab: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(eab["directory"], directory(&server, "partners"));
    let (eab_kid, hmac) = (
        eab["kid"].as_str().unwrap(),
        eab["hmac_key"].as_str().unwrap(),
    );

    // A binding with the wrong MAC key is refused and does not use the key up.
    let new_account = c.url("newAccount");
    let binding = |mac: &[u8], jwk: &Value| {
        let protected =
            B64.encode(json!({"alg": "HS256", "kid": eab_kid, "url": new_account}).to_string());
        let payload = B64.encode(jwk.to_string());
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, mac);
        let tag = ring::hmac::sign(&key, format!("{protected}.{payload}").as_bytes());
        json!({"protected": protected, "payload": payload, "signature": B64.encode(tag)})
    };
    let r = c
        .post(
            &new_account,
            Some(json!({"externalAccountBinding": binding(b"wrong", &c.key.jwk_json())})),
        )
        .await;
    assert_eq!(r.problem(), "unauthorized");

    // lego, a real client, binds with the key.
    let out = std::process::Command::new("lego")
        .env("LEGO_CA_CERTIFICATES", &roots)
        .args(["--path", tmp.path().join("lego").to_str().unwrap()])
        .args(["--server", &directory(&server, "partners")])
        .args(["--email", "ops@example.com", "--accept-tos"])
        .args(["--eab", "--kid", eab_kid, "--hmac", hmac])
        .args([
            "--domains",
            "eab.localhost",
            "--http",
            "--http.port",
            &format!("127.0.0.1:{port}"),
            "run",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "lego with EAB: {}", stderr(&out));

    // Used once: another account cannot bind with the same key.
    let mac = B64.decode(hmac).unwrap();
    let r = c
        .post(
            &new_account,
            Some(json!({"externalAccountBinding": binding(&mac, &c.key.jwk_json())})),
        )
        .await;
    assert_eq!(r.problem(), "unauthorized");
    assert!(
        r.body["detail"].as_str().unwrap().contains("already bound"),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn ip_identifiers_are_validated_at_the_address_and_issued_as_ip_sans() {
    let tmp = tempfile::tempdir().unwrap();
    let (_server, _responder, mut c, order_url, order) = ready_order(tmp.path(), "127.0.0.1").await;
    assert_eq!(
        order["identifiers"][0],
        json!({"type": "ip", "value": "127.0.0.1"})
    );
    let (der, _) = csr(&["127.0.0.1"]);
    let done = c.finalize(&order, &der).await;
    assert_eq!(done.body["status"], "valid", "{}", done.text);
    let chain = c
        .post(done.body["certificate"].as_str().unwrap(), None)
        .await
        .text;
    let leaf = tmp.path().join("ip.pem");
    std::fs::write(
        &leaf,
        chain
            .split_inclusive("-----END CERTIFICATE-----\n")
            .next()
            .unwrap(),
    )
    .unwrap();
    let text = stdout(&run(
        "openssl",
        &[
            "x509",
            "-noout",
            "-ext",
            "subjectAltName",
            "-in",
            leaf.to_str().unwrap(),
        ],
    ));
    assert!(text.contains("IP Address:127.0.0.1"), "{text}");
    assert_eq!(c.post(&order_url, None).await.body["status"], "valid");
}
