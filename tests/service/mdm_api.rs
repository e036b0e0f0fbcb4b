//! What the MDM server asks the real binary: is this client certificate good, which
//! certificates does a device hold, revoke a device; and the refusals for bad input.

use enrollca_testkit::harness as common;

use std::path::Path;

use common::*;
use serde_json::{Value, json};

/// Issues a certificate for `device` through the admin API; returns (serial, leaf PEM).
async fn issue(server: &Server, dir: &Path, name: &str, device: &str) -> (String, String) {
    let (_, csr) = openssl_csr(dir, name, "ec:P-256", &format!("/CN={name}"), None);
    let resp = server
        .post("/api/v1/certificates")
        .json(&json!({"csr": csr, "device": device, "issuer": "ecdsa"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    let chain = body["chain_pem"].as_str().unwrap();
    let leaf = chain
        .split_inclusive("-----END CERTIFICATE-----\n")
        .next()
        .unwrap();
    (
        body["certificate"]["serial"].as_str().unwrap().to_owned(),
        leaf.to_owned(),
    )
}

async fn validate(server: &Server, certificate: &str) -> reqwest::Response {
    server
        .post("/api/v1/validate")
        .json(&json!({ "certificate": certificate }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn validate_and_device_revocation_tell_the_mdm_what_it_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let server = Server::start(&data, &[]);
    let dir = tmp.path();
    let (first, first_pem) = issue(&server, dir, "d1-old", "DEVICE-1").await;
    let (second, second_pem) = issue(&server, dir, "d1-new", "DEVICE-1").await;
    let (other, _) = issue(&server, dir, "d2", "DEVICE-2").await;

    // A good certificate, as PEM and as base64 DER: good, with its device.
    let v: Value = validate(&server, &first_pem).await.json().await.unwrap();
    assert_eq!(
        (v["status"].as_str(), v["device"].as_str()),
        (Some("good"), Some("DEVICE-1"))
    );
    assert_eq!(v["serial"], first.as_str());
    let b64: String = first_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let v: Value = validate(&server, &b64).await.json().await.unwrap();
    assert_eq!(v["status"], "good");

    // A certificate of another CA: not ours. Garbage: 400 with the reason.
    let (_, foreign) = openssl_self_signed(dir, "foreign", "/CN=elsewhere");
    let foreign_pem = std::fs::read_to_string(&foreign).unwrap();
    let v: Value = validate(&server, &foreign_pem).await.json().await.unwrap();
    assert_eq!(v["status"], "not-ours");
    for bad in [
        "",
        "not base64 !!",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    ] {
        let resp = validate(&server, bad).await;
        assert_eq!(resp.status(), 400, "{bad:?}");
        let p: Value = resp.json().await.unwrap();
        assert_eq!(p["type"], "urn:enrollca:problem:bad-request");
    }

    // Signed with our issuer's key outside enrollca (never recorded): unknown, not good.
    let good: Value = validate(&server, &first_pem).await.json().await.unwrap();
    let issuer_id = good["issuer"].as_str().unwrap().to_owned();
    let issuers = data.join("ca/issuers");
    let (_, csr) = openssl_csr(dir, "stray", "ec:P-256", "/CN=stray", None);
    std::fs::write(dir.join("stray.csr"), csr).unwrap();
    let stray = dir.join("stray.pem");
    let out = run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            dir.join("stray.csr").to_str().unwrap(),
            "-CA",
            issuers.join(format!("{issuer_id}.pem")).to_str().unwrap(),
            "-CAkey",
            issuers.join(format!("{issuer_id}.key")).to_str().unwrap(),
            "-days",
            "1",
            "-out",
            stray.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = validate(&server, &std::fs::read_to_string(&stray).unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (v["status"].as_str(), v["issuer"].as_str()),
        (Some("unknown"), Some(issuer_id.as_str()))
    );

    // The device's certificates, newest first.
    let d: Value = server.get_json("/api/v1/devices/DEVICE-1").await;
    let serials: Vec<&str> = d["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["serial"].as_str().unwrap())
        .collect();
    assert_eq!(serials.len(), 2);
    assert!(serials.contains(&first.as_str()) && serials.contains(&second.as_str()));
    let issued: Vec<&str> = d["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["issued_at"].as_str().unwrap())
        .collect();
    assert!(issued[0] >= issued[1], "newest first: {issued:?}");

    // One revoked by serial, then the whole device: only what was still good is revoked.
    let resp = server
        .post(&format!("/api/v1/certificates/{first}/revoke"))
        .json(&json!({"reason": "superseded"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = server
        .post("/api/v1/devices/DEVICE-1/revoke")
        .json(&json!({"reason": "cessationOfOperation"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r: Value = resp.json().await.unwrap();
    assert_eq!(r["revoked"], json!([second]));
    let v: Value = validate(&server, &second_pem).await.json().await.unwrap();
    assert_eq!(v["status"], "revoked");
    assert_eq!(v["revocation_reason"], "cessationOfOperation");
    let v: Value = validate(&server, &first_pem).await.json().await.unwrap();
    assert_eq!(
        v["revocation_reason"], "superseded",
        "the earlier revocation stands"
    );
    let rec = server
        .get_json(&format!("/api/v1/certificates/{other}"))
        .await;
    assert_eq!(rec["status"], "good", "other devices are untouched");
    let revoked = server
        .events()
        .await
        .iter()
        .filter(|e| e["type"] == "revoked")
        .count();
    assert_eq!(revoked, 2);

    // Unknown device, bad reason, no token.
    let resp = server.get("/api/v1/devices/NOBODY").send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = server
        .post("/api/v1/devices/DEVICE-2/revoke")
        .json(&json!({"reason": "becauseISaidSo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let rec = server
        .get_json(&format!("/api/v1/certificates/{other}"))
        .await;
    assert_eq!(rec["status"], "good", "a refused request changes nothing");
    let resp = server
        .client
        .post(server.url("/api/v1/validate"))
        .json(&json!({"certificate": first_pem}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn the_event_feed_long_polls_until_something_happens() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let server = Server::start(&data, &[]);

    // A reader waiting at the end of the feed is answered by the next event.
    let poll = server.get("/api/v1/events?after=0&wait=30s").send();
    let waiting = tokio::spawn(async move { poll.await.unwrap().json::<Value>().await.unwrap() });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "with nothing to report, the request waits"
    );
    let (serial, _) = issue(&server, tmp.path(), "late", "DEVICE-9").await;
    let page = waiting.await.unwrap();
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{page}");
    assert_eq!(
        (events[0]["seq"].as_u64(), events[0]["serial"].as_str()),
        (Some(1), Some(serial.as_str()))
    );

    // Nothing new within the wait: an empty page. Past the limit: refused.
    let page: Value = server.get_json("/api/v1/events?after=1&wait=1s").await;
    assert!(page["events"].as_array().unwrap().is_empty());
    let resp = server
        .get("/api/v1/events?after=1&wait=2m")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn scoped_tokens_allow_what_they_name_and_nothing_more() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let server = Server::start(&data, &[]);
    let (serial, _) = issue(&server, tmp.path(), "scoped", "DEVICE-S").await;

    // Minted with the CLI (read) and the API (revoke); the secret is shown once.
    let out = server.cli(&[
        "token",
        "create",
        "--name",
        "mdm-reader",
        "--scope",
        "read",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let minted: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let reader = minted["token"].as_str().unwrap().to_owned();
    let resp = server
        .post("/api/v1/tokens")
        .json(&json!({"name": "mdm-revoker", "scopes": ["revoke"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let revoker = resp.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let http = server.client.clone();
    let as_token = |token: &str, req: reqwest::RequestBuilder| req.bearer_auth(token.to_owned());
    let status = |resp: reqwest::Response| resp.status().as_u16();
    let revoke_url = server.url(&format!("/api/v1/certificates/{serial}/revoke"));

    // read: reads, and is refused (403, with the missing scope named) anything else.
    let get = as_token(&reader, http.get(server.url("/api/v1/certificates")));
    assert_eq!(status(get.send().await.unwrap()), 200);
    let resp = as_token(&reader, http.post(&revoke_url).json(&json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let p: Value = resp.json().await.unwrap();
    assert_eq!(p["type"], "urn:enrollca:problem:forbidden");
    assert!(p["detail"].as_str().unwrap().contains("revoke"), "{p}");
    let mint = as_token(&reader, http.post(server.url("/api/v1/tokens")))
        .json(&json!({"name": "x", "scopes": ["read"]}));
    assert_eq!(
        status(mint.send().await.unwrap()),
        403,
        "only the admin token mints"
    );
    let rec = server
        .get_json(&format!("/api/v1/certificates/{serial}"))
        .await;
    assert_eq!(
        rec["status"], "good",
        "the refused revocation changed nothing"
    );

    // revoke: revokes, and cannot read.
    let resp = as_token(&revoker, http.post(&revoke_url).json(&json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let get = as_token(&revoker, http.get(server.url("/api/v1/certificates")));
    assert_eq!(status(get.send().await.unwrap()), 403);

    // Unknown tokens are 401; bad scopes are 400; the list never shows secrets.
    let get = as_token("not-a-token", http.get(server.url("/api/v1/certificates")));
    assert_eq!(status(get.send().await.unwrap()), 401);
    for scopes in [json!(["manage"]), json!(["everything"]), json!([])] {
        let resp = server
            .post("/api/v1/tokens")
            .json(&json!({"name": "bad", "scopes": scopes}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{scopes}");
    }
    let out = server.cli(&["token", "list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let list: Value = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"mdm-reader") && names.contains(&"mdm-revoker"));
    assert!(
        !text.contains(&reader) && !text.contains(&revoker),
        "secrets are not listed"
    );
}

#[tokio::test]
async fn events_reach_the_webhook_in_order_after_it_was_down() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let server = Server::start(
        &data,
        &[
            ("ENROLLCA_EVENTS_WEBHOOK_URL", &url),
            ("ENROLLCA_EVENTS_WEBHOOK_SECRET", "hook-key"),
        ],
    );
    // Three events while nobody listens: deliveries fail and are retried.
    let mut serials = Vec::new();
    for i in 0..3 {
        serials.push(
            issue(&server, tmp.path(), &format!("w{i}"), "DEVICE-W")
                .await
                .0,
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let got = webhook_receiver(port, "hook-key").await;
    let wait_for = |n: usize| {
        let got = got.clone();
        async move {
            for _ in 0..600 {
                if got.lock().unwrap().len() >= n {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!(
                "the webhook got {} of {n} events",
                got.lock().unwrap().len()
            );
        }
    };
    wait_for(3).await;
    // One more once the receiver is up: pushed without waiting for a retry.
    let resp = server
        .post(&format!("/api/v1/certificates/{}/revoke", serials[0]))
        .json(&json!({"reason": "keyCompromise"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    wait_for(4).await;
    let events = got.lock().unwrap().clone();
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4], "in order, each once here");
    assert_eq!(events[3]["type"], "revoked");
    assert_eq!(events[0]["serial"], serials[0].as_str());
}

/// Issue 24, item 6: a DDM status report lists every certificate a device holds; the MDM
/// asks about them in one call and gets `/validate`'s answer for each, in order.
#[tokio::test]
async fn a_batch_is_judged_entry_by_entry_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let server = Server::start(&data, &[]);
    let dir = tmp.path();
    let (good, good_pem) = issue(&server, dir, "b-good", "DEVICE-B").await;
    let (revoked, revoked_pem) = issue(&server, dir, "b-revoked", "DEVICE-B").await;
    let resp = server
        .post(&format!("/api/v1/certificates/{revoked}/revoke"))
        .json(&json!({"reason": "keyCompromise"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (_, foreign) = openssl_self_signed(dir, "b-foreign", "/CN=elsewhere");
    let foreign_pem = std::fs::read_to_string(&foreign).unwrap();
    let revoked_b64: String = revoked_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();

    let batch = |certificates: Vec<String>| {
        let server = &server;
        async move {
            server
                .post("/api/v1/validate/batch")
                .json(&json!({ "certificates": certificates }))
                .send()
                .await
                .unwrap()
        }
    };
    let asked = vec![
        good_pem.clone(),
        revoked_b64,
        foreign_pem,
        "not a certificate".to_owned(),
        good_pem.clone(),
    ];
    let resp = batch(asked.clone()).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), asked.len());
    let statuses: Vec<&str> = results
        .iter()
        .map(|r| r["status"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(statuses, ["good", "revoked", "not-ours", "-", "good"]);
    assert_eq!(results[0]["serial"], good.as_str());
    assert_eq!(results[0]["device"], "DEVICE-B");
    assert_eq!(results[1]["revocation_reason"], "keyCompromise");
    // Each answer is what /validate says, the unreadable entry its 400's reason.
    for (i, text) in asked.iter().enumerate() {
        let single = validate(&server, text).await;
        let single: Value = single.json().await.unwrap();
        match results[i].get("error") {
            Some(error) => assert_eq!(*error, single["detail"], "entry {i}"),
            None => assert_eq!(results[i], single, "entry {i}"),
        }
    }

    // 1,000 RSA device certificates (over a megabyte of PEM): answered; 1,001: refused.
    let (_, chain) = server.issue(dir, "b-rsa", "rsa:2048", "rsa").await;
    let rsa_pem = std::fs::read_to_string(&chain[0]).unwrap();
    let full = vec![rsa_pem.clone(); 1000];
    assert!(full.concat().len() > 1 << 20);
    let resp = batch(full).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 1000);
    assert!(results.iter().all(|r| r["status"] == "good"));
    let resp = batch(vec![rsa_pem; 1001]).await;
    assert_eq!(resp.status(), 400);
    let problem: Value = resp.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("at most 1000"),
        "{problem}"
    );

    // A token is needed, as for /validate.
    let resp = server
        .client
        .post(server.url("/api/v1/validate/batch"))
        .json(&json!({ "certificates": [good_pem] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

/// Issue 24, item 7: a certificate due for renewal gets one `expiring` event
/// (`events.expiring_before` ahead of its notAfter), noted by the sweep that runs at start
/// and every 10 minutes; a revoked one gets none.
#[tokio::test]
async fn certificates_due_for_renewal_get_one_expiring_event() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let dir = tmp.path();
    // Certificates live a year: with the default 30 days, nothing is due.
    let server = Server::start(&data, &[]);
    let (due, _) = issue(&server, dir, "e-due", "DEVICE-E").await;
    let (revoked, _) = issue(&server, dir, "e-revoked", "DEVICE-E").await;
    let resp = server
        .post(&format!("/api/v1/certificates/{revoked}/revoke"))
        .json(&json!({"reason": "superseded"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    server.stop();
    let server = Server::start(&data, &[]);
    assert!(!server.event_kinds().await.contains(&"expiring".to_owned()));
    server.stop();

    // A window longer than their lifetime: the good one is due, once. The sweep runs beside
    // the listeners: its event is awaited, and a second start is watched for a while.
    let env = [("ENROLLCA_EVENTS_EXPIRING_BEFORE", "400days")];
    for start in 0..2 {
        let server = Server::start(&data, &env);
        let mut expiring = Vec::new();
        for _ in 0..30 {
            expiring = server
                .events()
                .await
                .into_iter()
                .filter(|e| e["type"] == "expiring")
                .collect::<Vec<Value>>();
            if start == 0 && !expiring.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(expiring.len(), 1, "start {start}: {expiring:?}");
        assert_eq!(expiring[0]["serial"], due.as_str());
        assert_eq!(expiring[0]["device"], "DEVICE-E");
        server.stop();
    }
}
