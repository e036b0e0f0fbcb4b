//! SCEP against the real binary: micromdm `scepclient` (Debian package `scep`) enrols and is
//! refused; bad input gets HTTP 400 with a reason and writes nothing.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

const CHALLENGE: &str = "pr1vate-challenge";

fn scepclient(server: &Server, dir: &Path, cn: &str, challenge: &str) -> std::process::Output {
    std::fs::create_dir_all(dir).unwrap();
    run(
        "scepclient",
        &[
            "-server-url",
            &server.url("/scep"),
            "-challenge",
            challenge,
            "-private-key",
            dir.join("key.pem").to_str().unwrap(),
            "-certificate",
            dir.join("cert.pem").to_str().unwrap(),
            "-cn",
            cn,
        ],
    )
}

async fn event_count(server: &Server) -> usize {
    let v: Value = server
        .get("/api/v1/events?limit=1000")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["events"].as_array().unwrap().len()
}

#[tokio::test]
async fn scepclient_enrols_and_a_wrong_challenge_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let server = Server::start(&data, &[("ENROLLCA_SCEP_CHALLENGE", CHALLENGE)]);

    let caps = reqwest::get(server.url("/scep?operation=GetCACaps"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for cap in [
        "POSTPKIOperation",
        "SHA-256",
        "SHA-384",
        "AES",
        "DES3",
        "SCEPStandard",
    ] {
        assert!(caps.lines().any(|l| l == cap), "{cap} missing from {caps}");
    }
    let ca = reqwest::get(server.url("/scep?operation=GetCACert"))
        .await
        .unwrap();
    assert_eq!(ca.headers()["content-type"], "application/x-x509-ca-cert");
    let ca_der = ca.bytes().await.unwrap();
    let ca_path = tmp.path().join("scep-ca.der");
    std::fs::write(&ca_path, &ca_der).unwrap();
    let ca_pem = tmp.path().join("scep-ca.pem");
    let out = run(
        "openssl",
        &[
            "x509",
            "-inform",
            "DER",
            "-in",
            ca_path.to_str().unwrap(),
            "-out",
            ca_pem.to_str().unwrap(),
        ],
    );
    assert!(out.status.success());
    let ca_text = stdout(&run(
        "openssl",
        &["x509", "-noout", "-text", "-in", ca_pem.to_str().unwrap()],
    ));
    assert!(
        ca_text.contains("Key Encipherment") && ca_text.contains("Digital Signature"),
        "{ca_text}"
    );

    let dir = tmp.path().join("device-1");
    let out = scepclient(&server, &dir, "device-1", CHALLENGE);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let cert = dir.join("cert.pem");
    let roots = data.join("ca/roots.pem");
    let verify = run(
        "openssl",
        &[
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            roots.to_str().unwrap(),
            "-untrusted",
            ca_pem.to_str().unwrap(),
            cert.to_str().unwrap(),
        ],
    );
    assert!(
        verify.status.success(),
        "{}{}",
        stdout(&verify),
        stderr(&verify)
    );
    let subject = stdout(&run(
        "openssl",
        &["x509", "-noout", "-subject", "-in", cert.to_str().unwrap()],
    ));
    assert!(
        subject.contains("CN = device-1") && subject.contains("O = scep-client"),
        "{subject}"
    );
    let cert_pub = stdout(&run(
        "openssl",
        &["x509", "-noout", "-pubkey", "-in", cert.to_str().unwrap()],
    ));
    let key_pub = stdout(&run(
        "openssl",
        &[
            "pkey",
            "-pubout",
            "-in",
            dir.join("key.pem").to_str().unwrap(),
        ],
    ));
    assert_eq!(
        cert_pub, key_pub,
        "the certificate certifies the client's key"
    );

    // Recorded like every issuance: protocol, device, an `issued` event.
    let serial = stdout(&run(
        "openssl",
        &["x509", "-noout", "-serial", "-in", cert.to_str().unwrap()],
    ));
    let serial = serial.trim().trim_start_matches("serial=").to_lowercase();
    let rec: Value = server
        .get(&format!("/api/v1/certificates/{serial}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rec["protocol"], "scep");
    assert_eq!(rec["device"], "device-1");
    let events = event_count(&server).await;
    assert_eq!(events, 1);

    // A wrong challenge: the client reports the refusal, no certificate anywhere.
    let dir = tmp.path().join("device-2");
    let out = scepclient(&server, &dir, "device-2", "not-the-challenge");
    assert!(!out.status.success());
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(said.contains("badRequest"), "{said}");
    assert!(!dir.join("cert.pem").exists());
    assert_eq!(event_count(&server).await, events);
}

#[tokio::test]
async fn scep_bad_input_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let server = Server::start(&data, &[("ENROLLCA_SCEP_CHALLENGE", CHALLENGE)]);
    let c = &server.client;
    let url = |q: &str| server.url(&format!("/scep?{q}"));
    let pki = "application/x-pki-message";

    let cases: Vec<(reqwest::RequestBuilder, &str)> = vec![
        (
            c.post(url("operation=PKIOperation"))
                .header("content-type", pki)
                .body("garbage"),
            "not a PKCS#7 pkiMessage",
        ),
        (
            c.post(url("operation=PKIOperation"))
                .header("content-type", pki)
                .body(""),
            "empty PKIOperation body",
        ),
        (
            c.post(url("operation=PKIOperation"))
                .header("content-type", "application/json")
                .body("{}"),
            "is not application/x-pki-message",
        ),
        (
            c.post(url("operation=GetCACert"))
                .header("content-type", pki)
                .body("x"),
            "not a POST operation",
        ),
        (
            c.get(url("operation=Frobnicate")),
            "unknown SCEP operation `Frobnicate`",
        ),
        (c.get(url("")), "missing operation"),
        (
            c.get(url("operation=PKIOperation")),
            "needs a message parameter",
        ),
        (
            c.get(url("operation=PKIOperation&message=%25%25%25")),
            "not base64",
        ),
        (
            c.get(url("operation=PKIOperation&message=MIIB")),
            "not a PKCS#7 pkiMessage",
        ),
    ];
    for (req, reason) in cases {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 400, "{reason}");
        let body = resp.text().await.unwrap();
        assert!(body.contains(reason), "expected {reason:?}, got {body:?}");
    }
    assert_eq!(event_count(&server).await, 0);
}
