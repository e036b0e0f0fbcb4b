//! OCSP (RFC 6960) from the real binary at the URL certificates carry, asked and verified by
//! `openssl ocsp`: good, revoked (with time and reason) and unknown, for the RSA and the
//! ECDSA issuer, with and without a nonce, by POST and by GET; a revocation is seen at once
//! by OCSP, the CRL, the API and the event feed.

use enrollca_testkit::harness as common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::json;

struct Issued {
    serial: String,
    leaf: PathBuf,
    issuer: PathBuf,
}

async fn issue(server: &Server, dir: &Path, cn: &str, family: &str) -> Issued {
    let key = if family == "rsa" {
        "rsa:2048"
    } else {
        "ec:P-256"
    };
    let (serial, chain) = server.issue(dir, cn, key, family).await;
    Issued {
        serial,
        leaf: chain[0].clone(),
        issuer: chain[1].clone(),
    }
}

fn ocsp_url(cert: &Path) -> String {
    let out = run(
        "openssl",
        &["x509", "-noout", "-ocsp_uri", "-in", cert.to_str().unwrap()],
    );
    stdout(&out).trim().to_owned()
}

/// `openssl ocsp` for `cert`; returns its stdout after asserting the response verified.
fn ask(roots: &Path, issued: &Issued, extra: &[&str]) -> String {
    let url = ocsp_url(&issued.leaf);
    let mut args = vec![
        "-issuer",
        issued.issuer.to_str().unwrap(),
        "-cert",
        issued.leaf.to_str().unwrap(),
        "-CAfile",
        roots.to_str().unwrap(),
        "-url",
        &url,
    ];
    args.extend_from_slice(extra);
    openssl_verified_ocsp(&args)
}

#[tokio::test]
async fn openssl_reads_good_revoked_and_unknown_for_both_issuers() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let server = Server::start(&data, &[]);
    let dir = tmp.path();
    let roots = dir.join("roots.pem");
    std::fs::write(&roots, server.roots_pem().await).unwrap();

    for family in ["ecdsa", "rsa"] {
        let kept = issue(&server, dir, &format!("kept-{family}"), family).await;
        let gone = issue(&server, dir, &format!("gone-{family}"), family).await;
        assert_eq!(
            ocsp_url(&kept.leaf),
            server.url("/ocsp"),
            "the AIA names our responder"
        );
        for extra in [&[][..], &["-no_nonce"][..]] {
            let out = ask(&roots, &gone, extra);
            assert!(out.contains(": good"), "{family} {extra:?}: {out}");
        }
        let with_nonce = ask(&roots, &kept, &["-resp_text"]);
        assert!(with_nonce.contains("OCSP Nonce"), "{with_nonce}");
        let without = ask(&roots, &kept, &["-no_nonce", "-resp_text"]);
        assert!(!without.contains("OCSP Nonce"), "{without}");

        let resp = server
            .post(&format!("/api/v1/certificates/{}/revoke", gone.serial))
            .json(&json!({"reason": "keyCompromise"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        // Both the fresh (nonce) and the cached (no nonce) path see it at once.
        for extra in [&[][..], &["-no_nonce"][..]] {
            let out = ask(&roots, &gone, extra);
            assert!(out.contains(": revoked"), "{family} {extra:?}: {out}");
            assert!(out.contains("Reason: keyCompromise"), "{out}");
            assert!(out.contains("Revocation Time:"), "{out}");
        }
        assert!(ask(&roots, &kept, &["-no_nonce"]).contains(": good"));

        // A serial this CA never issued.
        let url = ocsp_url(&kept.leaf);
        let out = openssl_verified_ocsp(&[
            "-issuer",
            kept.issuer.to_str().unwrap(),
            "-serial",
            "0x0123456789abcdef",
            "-CAfile",
            roots.to_str().unwrap(),
            "-url",
            &url,
        ]);
        assert!(out.contains("0x0123456789abcdef: unknown"), "{out}");

        // The same revocation in the API, the CRL and the feed.
        let view = server
            .get_json(&format!("/api/v1/certificates/{}", gone.serial))
            .await;
        assert_eq!(view["status"], "revoked");
        let crl =
            reqwest::get(server.url(&format!("/crl/{}.crl", view["issuer"].as_str().unwrap())))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
        let crl_path = dir.join(format!("{family}.crl"));
        std::fs::write(&crl_path, &crl).unwrap();
        let cafile = dir.join(format!("{family}-cafile.pem"));
        std::fs::write(
            &cafile,
            format!(
                "{}{}",
                server.roots_pem().await,
                std::fs::read_to_string(&gone.issuer).unwrap()
            ),
        )
        .unwrap();
        let text = openssl_verified_crl(&crl_path, &cafile);
        assert!(
            text.contains(&format!("Serial Number: {}", gone.serial.to_uppercase())),
            "{text}"
        );
        let events = server.events().await;
        assert!(
            events.iter().any(|e| e["serial"] == gone.serial.as_str()
                && e["type"] == "revoked"
                && e["reason"] == "keyCompromise"),
            "{events:?}"
        );
    }
}

#[tokio::test]
async fn get_requests_are_cacheable_and_bad_requests_get_ocsp_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let server = Server::start(&data, &[]);
    let dir = tmp.path();
    let roots = dir.join("roots.pem");
    std::fs::write(&roots, server.roots_pem().await).unwrap();
    let cert = issue(&server, dir, "getter", "ecdsa").await;

    // GET /ocsp/<base64(request)> (RFC 5019), verified by openssl from the saved response.
    let req = dir.join("req.der");
    let out = run(
        "openssl",
        &[
            "ocsp",
            "-issuer",
            cert.issuer.to_str().unwrap(),
            "-cert",
            cert.leaf.to_str().unwrap(),
            "-no_nonce",
            "-reqout",
            req.to_str().unwrap(),
        ],
    );
    assert!(out.status.success());
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&req).unwrap());
    let encoded = b64
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let resp = server
        .get(&format!("/ocsp/{encoded}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/ocsp-response");
    let cache = resp.headers()["cache-control"].to_str().unwrap().to_owned();
    let max_age: u64 = cache
        .split(',')
        .find_map(|p| p.trim().strip_prefix("max-age="))
        .unwrap()
        .parse()
        .unwrap();
    assert!((3600..=12 * 3600).contains(&max_age), "{cache}");
    let resp_path = dir.join("resp.der");
    std::fs::write(&resp_path, resp.bytes().await.unwrap()).unwrap();
    let out = openssl_verified_ocsp(&[
        "-respin",
        resp_path.to_str().unwrap(),
        "-issuer",
        cert.issuer.to_str().unwrap(),
        "-cert",
        cert.leaf.to_str().unwrap(),
        "-CAfile",
        roots.to_str().unwrap(),
    ]);
    assert!(out.contains(": good"), "{out}");

    let status_of = |der: &[u8]| {
        let path = dir.join("status.der");
        std::fs::write(&path, der).unwrap();
        let out = run(
            "openssl",
            &[
                "ocsp",
                "-respin",
                path.to_str().unwrap(),
                "-resp_text",
                "-noverify",
            ],
        );
        format!("{}{}", stdout(&out), stderr(&out))
    };
    let post = |body: Vec<u8>, content_type: &'static str| {
        server
            .client
            .post(server.url("/ocsp"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let garbage = post(b"garbage".to_vec(), "application/ocsp-request")
        .await
        .unwrap();
    assert_eq!(garbage.status(), 200);
    let text = status_of(&garbage.bytes().await.unwrap());
    assert!(text.contains("malformedrequest"), "{text}");
    let bad_get = server.get("/ocsp/not-base64!").send().await.unwrap();
    assert!(status_of(&bad_get.bytes().await.unwrap()).contains("malformedrequest"));
    let wrong_type = post(std::fs::read(&req).unwrap(), "text/plain")
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), 415);

    // A DER OCSP request (made by openssl, no nonce) about `serial` under our issuer.
    let request_for = |name: &str, serial: &str| {
        let path = dir.join(name);
        let out = run(
            "openssl",
            &[
                "ocsp",
                "-issuer",
                cert.issuer.to_str().unwrap(),
                "-serial",
                serial,
                "-no_nonce",
                "-reqout",
                path.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        std::fs::read(&path).unwrap()
    };

    // A serial of 21 octets (RFC 5280 allows 20): malformedRequest, an OCSP answer, by POST
    // and by GET.
    let long = request_for("long-serial.der", &format!("0x01{}", "23".repeat(20)));
    let resp = post(long.clone(), "application/ocsp-request")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/ocsp-response");
    assert!(status_of(&resp.bytes().await.unwrap()).contains("malformedrequest"));
    let b64 = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&long)
    };
    let resp = server.get(&format!("/ocsp/{b64}")).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "application/ocsp-response");
    assert!(status_of(&resp.bytes().await.unwrap()).contains("malformedrequest"));

    // An unknown serial of ours, asked about twice without a nonce: the second answer is the
    // first (ECDSA signatures differ each time they are made), so repeated questions about
    // one unknown serial cost no signature each.
    let unknown = request_for("unknown.der", "0x0123456789abcdef");
    let first = post(unknown.clone(), "application/ocsp-request")
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let second = post(unknown, "application/ocsp-request")
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        status_of(&first).contains("unknown"),
        "{}",
        status_of(&first)
    );
    assert_eq!(first, second, "the unknown answer is served from the cache");

    // A certificate of another CA: not ours to answer for.
    let other = dir.join("other");
    std::fs::create_dir(&other).unwrap();
    let (_, ca) = openssl_self_signed(&other, "ca", "/CN=foreign CA");
    let foreign_req = other.join("req.der");
    let out = run(
        "openssl",
        &[
            "ocsp",
            "-issuer",
            ca.to_str().unwrap(),
            "-serial",
            "0x01",
            "-reqout",
            foreign_req.to_str().unwrap(),
        ],
    );
    assert!(out.status.success());
    let resp = post(
        std::fs::read(&foreign_req).unwrap(),
        "application/ocsp-request",
    )
    .await
    .unwrap();
    assert!(status_of(&resp.bytes().await.unwrap()).contains("unauthorized"));
}

#[test]
fn stored_openssl_requests_parse_with_their_certificates_and_nonce() {
    use enrollca::revocation::ocsp::parse;
    let vector = |name: &str| {
        std::fs::read(format!(
            "{}/tests/vectors/ocsp/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    let with = parse(&vector("req-nonce.der")).unwrap();
    assert_eq!(with.ids.len(), 1);
    assert_eq!(with.ids[0].serial_number.as_bytes(), [1, 2, 3, 4, 5]);
    assert_eq!(with.nonce.map(|n| n.len()), Some(16));
    let without = parse(&vector("req-no-nonce.der")).unwrap();
    assert!(without.nonce.is_none());
    let two = parse(&vector("req-two-sha256.der")).unwrap();
    assert_eq!(two.ids.len(), 2);
    assert_eq!(
        two.ids[0].hash_algorithm.oid.to_string(),
        "2.16.840.1.101.3.4.2.1"
    );
    let bytes = vector("req-nonce.der");
    for len in 0..bytes.len() {
        assert!(parse(&bytes[..len]).is_none(), "prefix of {len} bytes");
    }
}
