//! tls-alpn-01 (RFC 8737, RFC 8738 §6) against the real binary: lego proves a name with it,
//! an address is asked for by its reverse-DNS name, and a validation certificate that breaks
//! a rule of RFC 8737 §3 leaves the authorization invalid with the cause, and nothing issued.

use enrollca_testkit::harness as common;

use std::path::Path;
use std::sync::{Arc, Mutex};

use common::acme::{Client, certificates, check_issued, csr, roots_file};
use common::*;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

/// A server with a profile `tls` that offers only tls-alpn-01, validating on `port`.
async fn tls_alpn_server(tmp: &Path, port: u16) -> (Server, String) {
    let data = init_dir(tmp, &[], &[]);
    let config = std::fs::read_to_string(data.join("config.toml")).unwrap();
    std::fs::write(
        data.join("config.toml"),
        format!(
            "{config}\n[acme.profiles.tls]\ndns_names = [\"localhost\"]\n\
             ip_addresses = [\"127.0.0.1\"]\nchallenges = [\"tls-alpn-01\"]\n\
             internal_targets = [\"127.0.0.0/8\", \"::1/128\"]\n"
        ),
    )
    .unwrap();
    let server = Server::start(
        &data,
        &[("ENROLLCA_ACME_TLS_ALPN01_PORT", &port.to_string())],
    );
    let roots = roots_file(&server, tmp).await;
    (server, roots)
}

#[tokio::test]
async fn lego_proves_a_name_with_tls_alpn_01() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let (server, roots) = tls_alpn_server(tmp.path(), port).await;
    let dir = tmp.path().join("lego");
    let out = std::process::Command::new("lego")
        .env("LEGO_CA_CERTIFICATES", &roots)
        .args(["--path", dir.to_str().unwrap()])
        .args(["--server", &format!("{}/acme/tls/directory", server.https)])
        .args(["--email", "ops@example.com", "--accept-tos"])
        .args(["--domains", "alpn.localhost", "--key-type", "ec256"])
        .args(["--tls", "--tls.port", &format!("127.0.0.1:{port}")])
        .arg("run")
        .output()
        .unwrap();
    assert!(out.status.success(), "lego run: {}", stderr(&out));
    let certs = dir.join("certificates");
    let bundle = std::fs::read_to_string(certs.join("alpn.localhost.crt")).unwrap();
    let serial = check_issued(
        &dir,
        &roots,
        &bundle,
        &certs.join("alpn.localhost.key"),
        "alpn.localhost",
    );
    let rec = server
        .get_json(&format!("/api/v1/certificates/{serial}"))
        .await;
    assert_eq!(rec["protocol"], "acme");
}

/// A TLS responder on `port` serving one certificate; it records the SNI of each handshake.
struct Responder {
    task: tokio::task::JoinHandle<()>,
    sni: Arc<Mutex<Vec<Option<String>>>>,
}

impl Responder {
    async fn start(
        port: u16,
        cert: CertificateDer<'static>,
        key: PrivateKeyDer<'static>,
        alpn: bool,
    ) -> Self {
        // Built from its parts: rustls's own loading would parse the certificate with webpki,
        // which refuses the critical acmeIdentifier extension.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let signer = provider.key_provider.load_private_key(key).unwrap();
        let certified = rustls::sign::CertifiedKey::new(vec![cert], signer);
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
        if alpn {
            config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        // The previous case's responder is aborted, and drops its listener only when its
        // task is next polled: wait for the port rather than race it.
        let mut listener = None;
        for _ in 0..100 {
            match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
        let listener = listener.expect("the responder's port is free within 2 s");
        let sni = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&sni);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if let Ok(tls) = acceptor.accept(stream).await {
                    let name = tls.get_ref().1.server_name().map(str::to_owned);
                    seen.lock().unwrap().push(name);
                }
            }
        });
        Self { task, sni }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A self-signed validation certificate for `names` whose critical acmeIdentifier holds the
/// SHA-256 of `digest_of`.
fn validation_cert(
    names: &[&str],
    digest_of: &str,
) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, digest_of.as_bytes());
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest.as_ref()));
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
}

/// An order for `name` on profile `tls`: its URL and its tls-alpn-01 challenge.
async fn tls_order(c: &mut Client, name: &str) -> (String, Value) {
    let (order_url, order) = c.order(&[name]).await;
    let authz = c
        .post(order["authorizations"][0].as_str().unwrap(), None)
        .await
        .body;
    let kinds: Vec<&str> = authz["challenges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ch| ch["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["tls-alpn-01"],
        "the profile offers only tls-alpn-01"
    );
    (order_url, authz["challenges"][0].clone())
}

/// Answers the challenge; returns the challenge as settled.
async fn answer(c: &mut Client, challenge: &Value) -> Value {
    let resp = c
        .post(challenge["url"].as_str().unwrap(), Some(json!({})))
        .await;
    assert_eq!(resp.status, 200, "challenge: {}", resp.text);
    assert!(
        matches!(resp.body["status"].as_str(), Some("valid" | "invalid")),
        "a loopback validation settles while the server holds the answer: {}",
        resp.text
    );
    resp.body
}

#[tokio::test]
async fn an_address_is_validated_under_its_reverse_dns_name_and_issued() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let (server, _) = tls_alpn_server(tmp.path(), port).await;
    let mut c = Client::new(&server, "tls").await;
    c.register().await;
    let (order_url, challenge) = tls_order(&mut c, "127.0.0.1").await;
    let key_authorization = c
        .key
        .key_authorization(challenge["token"].as_str().unwrap());
    let (cert, key) = validation_cert(&["127.0.0.1"], &key_authorization);
    let responder = Responder::start(port, cert, key, true).await;

    assert_eq!(answer(&mut c, &challenge).await["status"], "valid");
    assert_eq!(
        *responder.sni.lock().unwrap(),
        [Some("1.0.0.127.in-addr.arpa".to_owned())],
        "RFC 8738 §6: SNI carries the reverse-DNS name"
    );
    let order = c.poll(&order_url, "pending").await;
    assert_eq!(order["status"], "ready");
    let (der, _) = csr(&["127.0.0.1"]);
    let fin = c.finalize(&order, &der).await;
    assert_eq!(fin.status, 200, "{}", fin.text);
    assert_eq!(certificates(&server).await.len(), 1);
}

#[tokio::test]
async fn validation_certificates_that_break_rfc_8737_are_refused_and_nothing_is_issued() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let (server, _) = tls_alpn_server(tmp.path(), port).await;
    let mut c = Client::new(&server, "tls").await;
    c.register().await;

    // (name, the names served, or None when nobody listens; whether the digest is of this
    // challenge's key authorization; whether ALPN is negotiated; the problem; its detail)
    type Case<'a> = (&'a str, Option<&'a [&'a str]>, bool, bool, &'a str, &'a str);
    let cases: [Case; 5] = [
        (
            "digest.localhost",
            Some(&["digest.localhost"]),
            false,
            true,
            "incorrectResponse",
            "does not match the key authorization",
        ),
        (
            "extra.localhost",
            Some(&["extra.localhost", "other.localhost"]),
            true,
            true,
            "incorrectResponse",
            "must be exactly",
        ),
        (
            "wrongname.localhost",
            Some(&["other.localhost"]),
            true,
            true,
            "incorrectResponse",
            "must be exactly",
        ),
        (
            "noalpn.localhost",
            Some(&["noalpn.localhost"]),
            true,
            false,
            "tls",
            "acme-tls/1",
        ),
        ("absent.localhost", None, true, true, "connection", "port"),
    ];
    for (name, served, right_digest, alpn, problem, detail) in cases {
        let (order_url, challenge) = tls_order(&mut c, name).await;
        let key_authorization = c
            .key
            .key_authorization(challenge["token"].as_str().unwrap());
        let digest_of = if right_digest {
            key_authorization.as_str()
        } else {
            "another key authorization"
        };
        let mut _responder = None;
        if let Some(names) = served {
            let (cert, key) = validation_cert(names, digest_of);
            _responder = Some(Responder::start(port, cert, key, alpn).await);
        }
        let settled = answer(&mut c, &challenge).await;
        assert_eq!(settled["status"], "invalid", "{name}: {settled}");
        assert_eq!(
            settled["error"]["type"],
            format!("urn:ietf:params:acme:error:{problem}"),
            "{name}: {settled}"
        );
        let why = settled["error"]["detail"].as_str().unwrap();
        assert!(why.contains(detail), "{name}: {why}");
        let order = c.poll(&order_url, "pending").await;
        assert_eq!(order["status"], "invalid", "{name}");
        let (der, _) = csr(&[name]);
        let fin = c.finalize(&order, &der).await;
        assert_eq!(fin.problem(), "orderNotReady", "{name}");
    }
    assert!(certificates(&server).await.is_empty(), "nothing was issued");
}

#[tokio::test]
async fn a_profile_without_a_challenge_for_an_identifier_type_refuses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, _) = tls_alpn_server(tmp.path(), free_port()).await;
    // The device profile offers device-attest-01 only: no dns name can be proven there.
    let mut c = Client::new(&server, "device").await;
    c.register().await;
    let resp = c
        .post(
            &c.url("newOrder"),
            Some(json!({"identifiers": [{"type": "dns", "value": "a.localhost"}]})),
        )
        .await;
    assert_eq!(resp.problem(), "rejectedIdentifier", "{}", resp.text);
    assert_eq!(resp.subproblem(0), "unsupportedIdentifier", "{}", resp.text);
    let detail = resp.body["subproblems"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("no challenge that validates dns identifiers"),
        "{detail}"
    );
}

/// Issue 23, item 4: http-01 reaches only public addresses and the internal ranges a profile
/// lists; every redirect is checked the same way and may go to ports 80 and 443 only; the
/// problem says that the fetch failed, not why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_reaches_only_permitted_addresses_at_every_redirect() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let tmp = tempfile::tempdir().unwrap();
    // What the client's host does with a challenge request: redirect to a URL, or answer.
    let plan: Arc<Mutex<Option<(String, String)>>> = Arc::default();
    let hits = Arc::new(AtomicUsize::new(0));
    let app = {
        let (plan, hits) = (plan.clone(), hits.clone());
        axum::Router::new().route(
            "/.well-known/acme-challenge/{token}",
            axum::routing::get(move || {
                let (plan, hits) = (plan.clone(), hits.clone());
                async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    match plan.lock().unwrap().clone() {
                        Some((kind, value)) if kind == "redirect" => {
                            axum::http::Response::builder()
                                .status(302)
                                .header("location", value)
                                .body(axum::body::Body::empty())
                                .unwrap()
                        }
                        Some((_, answer)) => axum::http::Response::new(answer.into()),
                        None => axum::http::Response::builder()
                            .status(404)
                            .body(axum::body::Body::empty())
                            .unwrap(),
                    }
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    // Anything reaching 127.0.0.2:80 would be a redirect the validator should have refused.
    let trap = tokio::net::TcpListener::bind("127.0.0.2:80").await.unwrap();
    let trapped = Arc::new(AtomicUsize::new(0));
    {
        let trapped = trapped.clone();
        tokio::spawn(async move {
            while trap.accept().await.is_ok() {
                trapped.fetch_add(1, Ordering::SeqCst);
            }
        });
    }

    let data = init_dir(tmp.path(), &[], &[]);
    let config = std::fs::read_to_string(data.join("config.toml")).unwrap();
    std::fs::write(
        data.join("config.toml"),
        format!(
            "{config}\n[acme.profiles.public]\ndns_names = [\"localhost\"]\n\
             ip_addresses = [\"127.0.0.1\"]\nchallenges = [\"http-01\"]\n\
             [acme.profiles.lab]\ndns_names = [\"localhost\"]\nchallenges = [\"http-01\"]\n\
             internal_targets = [\"127.0.0.1/32\"]\n"
        ),
    )
    .unwrap();
    let server = Server::start(&data, &[("ENROLLCA_ACME_HTTP01_PORT", &port.to_string())]);

    // Orders `name` in `profile`, answers its http-01 challenge; returns the challenge.
    let attempt = |profile: &'static str, name: &'static str| {
        let server = &server;
        async move {
            let mut c = Client::new(server, profile).await;
            assert_eq!(c.register().await.status, 201);
            let (_, order) = c.order(&[name]).await;
            let authz = c
                .post(order["authorizations"][0].as_str().unwrap(), None)
                .await
                .body;
            let ch = common::acme::challenge(&authz, "http-01");
            let token = ch["token"].as_str().unwrap().to_owned();
            let key_authorization = c.key.key_authorization(&token);
            (c, ch, key_authorization)
        }
    };
    let answer = |mut c: Client, ch: Value| async move {
        let resp = c.post(ch["url"].as_str().unwrap(), Some(json!({}))).await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        c.poll(ch["url"].as_str().unwrap(), "pending").await
    };

    // A profile without internal targets refuses loopback before connecting.
    for name in ["localhost", "127.0.0.1"] {
        let (c, ch, _) = attempt("public", name).await;
        let settled = answer(c, ch).await;
        assert_eq!(settled["status"], "invalid", "{settled}");
        let detail = settled["error"]["detail"].as_str().unwrap();
        assert!(detail.contains("internal addresses"), "{name}: {detail}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing was fetched");

    // Allowed loopback, but redirected to a refused address (plain, or IPv4-mapped IPv6), or
    // to a port other than 80 and 443: refused, and the trap never sees a connection.
    for target in [
        "http://127.0.0.2/.well-known/acme-challenge/x",
        "http://[::ffff:127.0.0.2]/.well-known/acme-challenge/x",
        "http://127.0.0.1:9/.well-known/acme-challenge/x",
    ] {
        *plan.lock().unwrap() = Some(("redirect".into(), target.into()));
        let (c, ch, _) = attempt("lab", "localhost").await;
        let settled = answer(c, ch).await;
        assert_eq!(settled["status"], "invalid", "{target}: {settled}");
        let detail = settled["error"]["detail"].as_str().unwrap();
        assert!(
            !detail.contains("refused") && !detail.contains("127.0.0.2") && !detail.contains(":9"),
            "{target}: the detail says too much: {detail}"
        );
    }
    assert_eq!(
        trapped.load(Ordering::SeqCst),
        0,
        "a refused address was reached"
    );

    // The control: the same profile proves a name served where it is allowed to look.
    let (c, ch, key_authorization) = attempt("lab", "localhost").await;
    *plan.lock().unwrap() = Some(("answer".into(), key_authorization));
    let settled = answer(c, ch).await;
    assert_eq!(settled["status"], "valid", "{settled}");
}
