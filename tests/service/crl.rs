//! CRLs served by the real binary at the distribution point written into certificates,
//! verified and read by openssl: signed by the issuer, revoked serials with their reasons,
//! CRL numbers that grow with each revocation and across a restart.

use enrollca_testkit::harness as common;

use std::path::Path;

use common::*;
use serde_json::json;

/// Issues a certificate for `cn` through the admin API; returns (serial, PEM path).
async fn issue(server: &Server, dir: &Path, cn: &str) -> (String, std::path::PathBuf) {
    let (serial, chain) = server.issue(dir, cn, "ec:P-256", "ecdsa").await;
    (serial, chain[0].clone())
}

/// The CRL URL the certificate carries (its CRL distribution point).
fn crl_url(cert: &Path) -> String {
    let text = stdout(&run(
        "openssl",
        &[
            "x509",
            "-noout",
            "-ext",
            "crlDistributionPoints",
            "-in",
            cert.to_str().unwrap(),
        ],
    ));
    text.lines()
        .find_map(|l| l.trim().strip_prefix("URI:"))
        .unwrap_or_else(|| panic!("no CRL DP in {text}"))
        .to_owned()
}

/// Fetches the CRL and has openssl verify it against the roots and the issuing CA; returns
/// openssl's text form.
async fn fetch_and_verify(url: &str, dir: &Path, cafile: &Path) -> String {
    let resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/pkix-crl");
    let der = dir.join("crl.der");
    std::fs::write(&der, resp.bytes().await.unwrap()).unwrap();
    openssl_verified_crl(&der, cafile)
}

fn crl_number(text: &str) -> u64 {
    let line = text
        .lines()
        .skip_while(|l| !l.contains("X509v3 CRL Number"))
        .nth(1)
        .unwrap_or_else(|| panic!("no CRL number in {text}"));
    line.trim().parse().unwrap()
}

/// openssl prints serials in upper-case hex.
fn lists(text: &str, serial: &str) -> bool {
    text.contains(&format!("Serial Number: {}", serial.to_uppercase()))
}

#[tokio::test]
async fn the_crl_lists_revocations_with_reasons_and_its_number_only_grows() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let server = Server::start(&data, &[]);
    let dir = tmp.path();
    let (keep, keep_pem) = issue(&server, dir, "kept").await;
    let (lost, _) = issue(&server, dir, "lost").await;
    let (old, _) = issue(&server, dir, "old").await;

    // Roots and the issuing CA, for openssl to verify the CRL's signature.
    let issuer_pem = std::fs::read_to_string(dir.join("kept-1.pem")).unwrap();
    let cafile = dir.join("cafile.pem");
    std::fs::write(&cafile, format!("{}{issuer_pem}", server.roots_pem().await)).unwrap();

    let url = crl_url(&keep_pem);
    assert!(
        url.starts_with(&server.http),
        "{url} is served by this server"
    );
    let empty = fetch_and_verify(&url, dir, &cafile).await;
    assert!(empty.contains("No Revoked Certificates"), "{empty}");
    let first = crl_number(&empty);
    // Served from cache while nothing changes.
    assert_eq!(
        crl_number(&fetch_and_verify(&url, dir, &cafile).await),
        first
    );

    for (serial, reason) in [(&lost, "keyCompromise"), (&old, "superseded")] {
        let resp = server
            .post(&format!("/api/v1/certificates/{serial}/revoke"))
            .json(&json!({"reason": reason}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let text = fetch_and_verify(&url, dir, &cafile).await;
    assert!(crl_number(&text) > first, "a revocation makes a new CRL");
    assert!(lists(&text, &lost) && lists(&text, &old), "{text}");
    assert!(!lists(&text, &keep), "only revoked serials are listed");
    assert!(
        text.contains("Key Compromise") && text.contains("Superseded"),
        "{text}"
    );
    let before_restart = crl_number(&text);

    // After a restart the number keeps growing (it is stored, not counted in memory).
    let (status, _) = server.stop();
    assert!(status.success());
    let server = Server::start(&data, &[]);
    // Ephemeral ports: the same path on the new listener.
    let url = server.url(&url[url.find("/crl/").unwrap()..]);
    let text = fetch_and_verify(&url, dir, &cafile).await;
    assert!(crl_number(&text) > before_restart);
    assert!(lists(&text, &lost) && lists(&text, &old));

    // An issuer that does not exist: 404.
    let resp = reqwest::get(server.url("/crl/0000000000000000.crl"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}
