//! The real binary on 127.0.0.1: start-up, issuance checked by openssl, the admin API's
//! refusals, the CLI, graceful shutdown.

use enrollca_testkit::harness as common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use serde_json::{Value, json};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn serve_from_an_empty_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_default(tmp.path());
    let data = tmp.path().join("enrollca-data");

    let health = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok\n");

    let metrics = reqwest::get(server.url("/metrics")).await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("# TYPE enrollca_http_request_duration_seconds histogram"),
        "{text}"
    );
    assert!(text.contains("route=\"/healthz\""), "{text}");

    // The roots served over HTTP are what `ca root` prints, and the banner's fingerprint is
    // the root's as openssl computes it.
    let roots = server.roots_pem().await;
    let printed = enrollca(&["ca", "root", "--data", data.to_str().unwrap()], &[]);
    assert_eq!(stdout(&printed), roots);
    let fp = openssl_fingerprint(&data.join("ca/roots.pem"));
    assert!(
        server.banner.contains(&fp),
        "banner lacks {fp}:\n{}",
        server.banner
    );
    assert!(
        server
            .banner
            .contains(data.join("admin-token").to_str().unwrap())
            || server.banner.contains("enrollca-data/admin-token")
    );

    // HTTPS with the generated loopback certificate, trusted through the root alone.
    let curl = run(
        "curl",
        &[
            "-sS",
            "--cacert",
            data.join("ca/roots.pem").to_str().unwrap(),
            &format!("{}/healthz", server.https),
        ],
    );
    assert!(curl.status.success(), "{}", stderr(&curl));
    assert_eq!(stdout(&curl), "ok\n");
    let https_localhost = server.https.replace("127.0.0.1", "localhost");
    let curl = run(
        "curl",
        &[
            "-sS",
            "--cacert",
            data.join("ca/roots.pem").to_str().unwrap(),
            &format!("{https_localhost}/healthz"),
        ],
    );
    assert!(curl.status.success(), "{}", stderr(&curl));

    // Secrets are owner-only.
    assert_eq!(mode(&data.join("admin-token")), 0o600);
    assert_eq!(mode(&data.join("ca/root.key")), 0o600);
    let keys: Vec<_> = std::fs::read_dir(data.join("ca/issuers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "key"))
        .collect();
    assert_eq!(keys.len(), 2);
    for k in keys {
        assert_eq!(mode(&k), 0o600, "{}", k.display());
    }
    assert_eq!(mode(&data), 0o700);
}

/// Issues over the API and checks the result with openssl only.
async fn issue_and_verify(
    server: &Server,
    dir: &std::path::Path,
    key: &str,
    issuer: &str,
) -> Value {
    let name = key.replace(':', "-");
    let (key_path, csr) = openssl_csr(
        dir,
        &name,
        key,
        "/CN=device-1/O=Acme",
        Some("DNS:device-1.example,IP:10.0.0.1"),
    );
    let resp = server
        .post("/api/v1/certificates")
        .json(&json!({"csr": csr, "device": "C02XK0AAJG5H", "issuer": issuer}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = resp.json().await.unwrap();
    let serial = body["certificate"]["serial"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/api/v1/certificates/{serial}"));
    assert!(serial.len() >= 16, "serial {serial} has fewer than 64 bits");

    let chain = split_pem(dir, &name, body["chain_pem"].as_str().unwrap());
    assert_eq!(chain.len(), 2, "leaf and issuing CA");
    let roots = server.data.join("ca/roots.pem");
    assert_chain_verifies(
        roots.to_str().unwrap(),
        chain[1].to_str().unwrap(),
        chain[0].to_str().unwrap(),
    );

    let text = stdout(&run(
        "openssl",
        &["x509", "-noout", "-text", "-in", chain[0].to_str().unwrap()],
    ));
    let issuer_text = stdout(&run(
        "openssl",
        &["x509", "-noout", "-text", "-in", chain[1].to_str().unwrap()],
    ));
    let issuer_id = body["certificate"]["issuer"].as_str().unwrap();
    for needle in [
        "Subject: CN = device-1, O = Acme",
        "TLS Web Client Authentication",
        "CA:FALSE",
        "X509v3 Authority Key Identifier",
        "X509v3 Subject Key Identifier",
        "DNS:device-1.example, IP Address:10.0.0.1",
        "Digital Signature",
        &format!("URI:{}/crl/{issuer_id}.crl", server.http),
        &format!("OCSP - URI:{}/ocsp", server.http),
        &format!("CA Issuers - URI:{}/ca/{issuer_id}.crt", server.http),
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    // The leaf's AKI is the issuing CA's SKI.
    let ski = issuer_text
        .split("Subject Key Identifier:")
        .nth(1)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .to_owned();
    let aki = text
        .split("Authority Key Identifier:")
        .nth(1)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(aki.trim_start_matches("keyid:"), ski);
    assert_eq!(
        text.contains("Key Encipherment"),
        key.starts_with("rsa"),
        "keyEncipherment only for RSA keys"
    );

    // The certified key is the requested key.
    let cert_pub = stdout(&run(
        "openssl",
        &[
            "x509",
            "-noout",
            "-pubkey",
            "-in",
            chain[0].to_str().unwrap(),
        ],
    ));
    let req_pub = stdout(&run(
        "openssl",
        &["pkey", "-pubout", "-in", key_path.to_str().unwrap()],
    ));
    assert_eq!(cert_pub, req_pub);

    // The caIssuers URL serves the issuing CA.
    let der = reqwest::get(server.url(&format!("/ca/{issuer_id}.crt")))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let issuer_der = run(
        "openssl",
        &["x509", "-outform", "DER", "-in", chain[1].to_str().unwrap()],
    )
    .stdout;
    assert_eq!(der.as_ref(), issuer_der.as_slice());
    body
}

#[tokio::test]
async fn issued_certificates_verify_with_openssl() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let server = Server::start(&data, &[]);
    let ec = issue_and_verify(&server, tmp.path(), "ec:P-256", "ecdsa").await;
    let rsa = issue_and_verify(&server, tmp.path(), "rsa:2048", "rsa").await;
    assert_ne!(ec["certificate"]["issuer"], rsa["certificate"]["issuer"]);
    issue_and_verify(&server, tmp.path(), "ec:P-384", "rsa").await;

    // The record says what the certificate says.
    let serial = ec["certificate"]["serial"].as_str().unwrap();
    let shown: Value = server
        .get_json(&format!("/api/v1/certificates/{serial}"))
        .await;
    assert_eq!(shown["device"], "C02XK0AAJG5H");
    assert_eq!(shown["status"], "good");
    assert_eq!(shown["protocol"], "admin");
    assert_eq!(
        shown["sans"],
        json!(["DNS:device-1.example", "IP:10.0.0.1"])
    );
    let pem_path = tmp.path().join("shown.pem");
    std::fs::write(&pem_path, shown["pem"].as_str().unwrap()).unwrap();
    let dates = stdout(&run(
        "openssl",
        &[
            "x509",
            "-noout",
            "-serial",
            "-enddate",
            "-in",
            pem_path.to_str().unwrap(),
        ],
    ));
    assert!(
        dates.to_lowercase().contains(&format!("serial={serial}")),
        "{dates}"
    );

    let metrics = server.metrics().await;
    let issued: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("enrollca_certificates_issued_total"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(issued, 3.0, "{metrics}");
}

async fn problem(resp: reqwest::Response, status: u16, kind: &str) -> String {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], format!("urn:enrollca:problem:{kind}"), "{v}");
    assert_eq!(v["status"], status);
    v["detail"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn api_refuses_bad_input_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let server = Server::start(&data, &[]);
    let (_, csr) = openssl_csr(tmp.path(), "good", "ec:P-256", "/CN=device-1", None);
    let issued: Value = server
        .post("/api/v1/certificates")
        .json(&json!({"csr": csr}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let serial = issued["certificate"]["serial"].as_str().unwrap().to_owned();
    let events_before = server.events().await.len();

    let c = &server.client;
    // Authentication.
    let r = c
        .get(server.url("/api/v1/certificates"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"enrollca\"");
    problem(r, 401, "unauthorized").await;
    let r = c
        .get(server.url("/api/v1/certificates"))
        .bearer_auth("wrong-token")
        .send()
        .await
        .unwrap();
    problem(r, 401, "unauthorized").await;
    let r = c
        .post(server.url(&format!("/api/v1/certificates/{serial}/revoke")))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    problem(r, 401, "unauthorized").await;

    // Malformed requests.
    let r = server
        .post("/api/v1/certificates")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    problem(r, 400, "bad-request").await;
    let r = server
        .post("/api/v1/certificates")
        .json(&json!({"csr": "garbage"}))
        .send()
        .await
        .unwrap();
    let d = problem(r, 400, "bad-csr").await;
    assert!(d.contains("CERTIFICATE REQUEST"), "{d}");
    let (_, weak) = openssl_csr(tmp.path(), "weak", "rsa:1024", "/CN=weak", None);
    let r = server
        .post("/api/v1/certificates")
        .json(&json!({"csr": weak, "issuer": "rsa"}))
        .send()
        .await
        .unwrap();
    let d = problem(r, 400, "bad-csr").await;
    assert!(d.contains("1024 bits is too weak"), "{d}");
    // A request whose signature does not match its content (one byte of the subject flipped).
    let tampered = tamper_csr(&csr);
    let r = server
        .post("/api/v1/certificates")
        .json(&json!({"csr": tampered}))
        .send()
        .await
        .unwrap();
    let d = problem(r, 400, "bad-csr").await;
    assert!(d.contains("signature"), "{d}");
    let (_, nameless) = openssl_csr(tmp.path(), "nameless", "ec:P-256", "/O=NoName", None);
    let r = server
        .post("/api/v1/certificates")
        .json(&json!({"csr": nameless}))
        .send()
        .await
        .unwrap();
    problem(r, 403, "policy").await;
    let r = server
        .post("/api/v1/certificates")
        .json(&json!({"csr": csr, "device": ""}))
        .send()
        .await
        .unwrap();
    problem(r, 400, "bad-request").await;

    // Lookups and revocation.
    let r = server
        .get("/api/v1/certificates/0123456789abcdef")
        .send()
        .await
        .unwrap();
    problem(r, 404, "not-found").await;
    let r = server
        .get("/api/v1/certificates/not-hex")
        .send()
        .await
        .unwrap();
    problem(r, 400, "bad-request").await;
    let r = server
        .get("/api/v1/certificates?status=bogus")
        .send()
        .await
        .unwrap();
    problem(r, 400, "bad-request").await;
    let r = server
        .get("/api/v1/certificates?colour=blue")
        .send()
        .await
        .unwrap();
    problem(r, 400, "bad-request").await;
    let r = server
        .post(&format!("/api/v1/certificates/{serial}/revoke"))
        .json(&json!({"reason": "removeFromCRL"}))
        .send()
        .await
        .unwrap();
    problem(r, 400, "bad-request").await;
    let r = server
        .post("/api/v1/certificates/0123456789abcdef/revoke")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    problem(r, 404, "not-found").await;
    let r = server.get("/no/such/route").send().await.unwrap();
    problem(r, 404, "not-found").await;

    // None of that changed anything.
    assert_eq!(server.events().await.len(), events_before);
    let shown: Value = server
        .get_json(&format!("/api/v1/certificates/{serial}"))
        .await;
    assert_eq!(shown["status"], "good");
    let all: Value = server.get_json("/api/v1/certificates").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 1);

    // A valid revocation is recorded once; a second one is a conflict that writes nothing.
    let r = server
        .post(&format!("/api/v1/certificates/{serial}/revoke"))
        .json(&json!({"reason": "keyCompromise"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "revoked");
    assert_eq!(v["revocation_reason"], "keyCompromise");
    let r = server
        .post(&format!("/api/v1/certificates/{serial}/revoke"))
        .json(&json!({"reason": "superseded"}))
        .send()
        .await
        .unwrap();
    problem(r, 409, "already-revoked").await;
    assert_eq!(server.events().await.len(), events_before + 1);
    let events: Value = server
        .get_json(&format!("/api/v1/events?after={events_before}"))
        .await;
    assert_eq!(events["events"][0]["type"], "revoked");
    assert_eq!(events["events"][0]["reason"], "keyCompromise");
    assert_eq!(events["events"][0]["serial"], serial.as_str());
}

/// Flips one byte inside the subject of a PEM CSR, keeping the DER well-formed.
fn tamper_csr(pem: &str) -> String {
    use base64::Engine;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let pos = der.windows(8).position(|w| w == b"device-1").unwrap();
    der[pos] = b'D';
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n")
}

#[tokio::test]
async fn cli_against_the_server_and_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let server = Server::start(&data, &[]);
    openssl_csr(tmp.path(), "d1", "ec:P-256", "/CN=device-1", None);
    openssl_csr(tmp.path(), "d2", "rsa:2048", "/CN=device-2", None);

    let out = server.cli(&[
        "cert",
        "issue",
        "--csr",
        tmp.path().join("d1.csr").to_str().unwrap(),
        "--device",
        "dev-1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).matches("BEGIN CERTIFICATE").count() == 2);
    let serial1 = stderr(&out).trim().rsplit(' ').next().unwrap().to_owned();
    let out = server.cli(&[
        "cert",
        "issue",
        "--csr",
        tmp.path().join("d2.csr").to_str().unwrap(),
        "--device",
        "dev-2",
        "--issuer",
        "rsa",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let serial2 = v["certificate"]["serial"].as_str().unwrap().to_owned();

    let out = server.cli(&["cert", "list", "--json"]);
    let page: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let mut serials: Vec<_> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["serial"].as_str().unwrap().to_owned())
        .collect();
    serials.sort();
    let mut want = vec![serial1.clone(), serial2.clone()];
    want.sort();
    assert_eq!(serials, want);

    let out = server.cli(&["cert", "list", "--device", "dev-2"]);
    assert!(
        stdout(&out).contains(&serial2) && !stdout(&out).contains(&serial1),
        "{}",
        stdout(&out)
    );
    let out = server.cli(&["cert", "show", &serial1]);
    assert!(
        stdout(&out).contains("status      good") && stdout(&out).contains("BEGIN CERTIFICATE"),
        "{}",
        stdout(&out)
    );
    let out = server.cli(&["cert", "revoke", &serial1, "--reason", "keyCompromise"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("status      revoked"),
        "{}",
        stdout(&out)
    );
    let out = server.cli(&["cert", "revoke", &serial1]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already revoked"), "{}", stderr(&out));
    let out = server.cli(&["ca", "list"]);
    assert_eq!(
        stdout(&out).matches("active").count(),
        2,
        "{}",
        stdout(&out)
    );

    // Offline: the server is stopped; the same commands read the data directory.
    let url = server.http.clone();
    let (status, _) = server.stop();
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    let d = data.to_str().unwrap();
    let out = enrollca(
        &[
            "cert", "list", "--status", "revoked", "--json", "--data", d, "--url", &url,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let page: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["serial"], serial1.as_str());
    let out = enrollca(
        &[
            "cert",
            "revoke",
            &serial2,
            "--reason",
            "superseded",
            "--data",
            d,
            "--url",
            &url,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = enrollca(
        &[
            "cert",
            "issue",
            "--csr",
            tmp.path().join("d1.csr").to_str().unwrap(),
            "--data",
            d,
            "--url",
            &url,
        ],
        &[],
    );
    assert!(
        !out.status.success() && stderr(&out).contains("needs the running server"),
        "{}",
        stderr(&out)
    );

    // The offline revocation is there when the server comes back.
    let server = Server::start(&data, &[]);
    let v: Value = server
        .get_json(&format!("/api/v1/certificates/{serial2}"))
        .await;
    assert_eq!(v["status"], "revoked");
    assert_eq!(v["revocation_reason"], "superseded");
}

/// Issue 23, low items: client input cannot forge log lines, and cannot grow `/metrics`.
#[tokio::test]
async fn client_input_neither_forges_log_lines_nor_grows_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let server = Server::start(&data, &[("ENROLLCA_LOG_LEVEL", "info")]);
    let resp = server
        .post("/api/v1/tokens")
        .json(&json!({"name": "mdm\nERROR forged line\r", "scopes": ["read"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    // Invented methods: one label value for all of them.
    for i in 0..50 {
        let method = reqwest::Method::from_bytes(format!("INVENTED{i}").as_bytes()).unwrap();
        let resp = server
            .client
            .request(method, server.url("/healthz"))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_client_error(), "{}", resp.status());
    }
    let metrics = server.metrics().await;
    assert!(!metrics.contains("INVENTED"), "{metrics}");
    assert!(metrics.contains("method=\"other\""), "{metrics}");

    let (status, log) = server.stop();
    assert!(status.success());
    assert!(log.contains("API token minted"), "{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("ERROR forged")),
        "a forged line: {log}"
    );
    assert!(log.contains(r"mdm\nERROR forged line"), "{log}");
}

/// Issue 23, item 6: bearer tokens and ACME requests do not travel over plain HTTP unless
/// the operator says so; the CLI reaches the API over HTTPS by default.
#[tokio::test]
async fn the_api_and_acme_are_served_over_https_only_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let server = Server::start(&data, &[]);
    let plain = reqwest::Client::new();

    // The API over HTTP: refused, with the reason, whatever the token.
    let resp = plain
        .get(format!("{}/api/v1/certificates", server.http))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.text().await.unwrap().contains("HTTPS only"));
    // Over HTTPS it answers.
    let resp = server.get("/api/v1/certificates").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(server.url("/api/v1/certificates").starts_with("https://"));

    // ACME over HTTP: neither the directory nor a request signed for the HTTPS URL.
    let resp = plain
        .get(format!("{}/acme/default/directory", server.http))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let mut acme = common::acme::Client::new(&server, "default").await;
    let signed = acme
        .jws(
            &acme.url("newAccount"),
            Some(json!({})),
            &Default::default(),
        )
        .await;
    let over_http = acme.url("newAccount").replace(&server.https, &server.http);
    let resp = plain
        .post(over_http)
        .header("content-type", "application/jose+json")
        .json(&signed)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.text().await.unwrap().contains("HTTPS only"));
    // SCEP, CRL, OCSP and the roots stay on plain HTTP.
    for path in ["/scep?operation=GetCACaps", "/roots.pem", "/healthz"] {
        let resp = plain.get(server.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }

    // The CLI with no --url: HTTPS to the configured listener, trusting the data directory's
    // roots (a local open would fail: the server holds the store).
    let https = server.https.trim_start_matches("https://").to_owned();
    let out = enrollca(
        &["ca", "list", "--data", data.to_str().unwrap()],
        &[("ENROLLCA_LISTEN_HTTPS", &https)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("active"), "{}", stdout(&out));
    drop(acme);
    drop(server);

    // A loopback-only set-up may opt in.
    let server = Server::start(&data, &[("ENROLLCA_LISTEN_API_ON_HTTP", "true")]);
    let resp = plain
        .get(format!("{}/api/v1/certificates", server.http))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// Issue 23, item 8 (in part): what costs the CA before anyone is authenticated is limited
/// per client address, new ACME orders per account; refusals say when to come back.
#[tokio::test]
async fn costly_unauthenticated_requests_and_orders_are_rate_limited() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let server = Server::start(
        &data,
        &[
            ("ENROLLCA_LIMITS_CLIENT_RATE", "0.2"),
            ("ENROLLCA_LIMITS_CLIENT_BURST", "3"),
            ("ENROLLCA_LIMITS_ACCOUNT_ORDER_RATE", "0.2"),
            ("ENROLLCA_LIMITS_ACCOUNT_ORDER_BURST", "2"),
        ],
    );
    // SCEP PKIOperation: three (unreadable ones: the limit comes before decryption), then 429.
    let scep = |body: &'static [u8]| {
        server
            .client
            .post(server.url("/scep?operation=PKIOperation"))
            .header("content-type", "application/x-pki-message")
            .body(body)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(scep(b"not a message").await.unwrap().status(), 400);
    }
    let refused = scep(b"not a message").await.unwrap();
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry), "{retry}");
    // What costs nothing is not limited.
    let caps = server
        .get("/scep?operation=GetCACaps")
        .send()
        .await
        .unwrap();
    assert_eq!(caps.status(), 200);

    // The same address's ACME newAccount: rateLimited, with Retry-After; nothing written.
    let mut acme = common::acme::Client::new(&server, "default").await;
    let new_account = acme.url("newAccount");
    let resp = acme
        .post(&new_account, Some(json!({"termsOfServiceAgreed": true})))
        .await;
    assert_eq!(resp.status, 429, "{}", resp.text);
    assert_eq!(resp.problem(), "rateLimited");
    assert!(
        resp.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    drop(acme);
    drop(server);

    // Orders, per account: two, then rateLimited.
    let server = Server::start(
        &data,
        &[
            ("ENROLLCA_LIMITS_ACCOUNT_ORDER_RATE", "0.2"),
            ("ENROLLCA_LIMITS_ACCOUNT_ORDER_BURST", "2"),
        ],
    );
    let mut acme = common::acme::Client::new(&server, "default").await;
    assert_eq!(acme.register().await.status, 201);
    let new_order = acme.url("newOrder");
    let body = json!({"identifiers": [{"type": "dns", "value": "a.localhost"}]});
    for _ in 0..2 {
        assert_eq!(acme.post(&new_order, Some(body.clone())).await.status, 201);
    }
    let refused = acme.post(&new_order, Some(body.clone())).await;
    assert_eq!(
        (refused.status, refused.problem()),
        (429, "rateLimited"),
        "{}",
        refused.text
    );
    // Another account is not held back.
    let mut other = common::acme::Client::new(&server, "default").await;
    assert_eq!(other.register().await.status, 201);
    assert_eq!(other.post(&new_order, Some(body)).await.status, 201);
}
