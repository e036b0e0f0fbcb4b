//! ACME device-attest-01 against the real binary over HTTPS, with synthetic Apple-style
//! attestations: a test root and intermediate (P-384, laid out like Apple's) configured in
//! `acme.attestation_roots`, and a client that behaves like an Apple device (P-256 account
//! key, flattened ES256 JWS, short signatures included). Every false attestation is refused
//! with `badAttestationStatement` naming its check, and nothing is issued.

use enrollca_testkit::harness as common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::acme::{Client, Tweak};
use common::device::*;
use common::*;
use enrollca_testkit::attestation::{Leaf, TestAttestationCa, object};
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

#[tokio::test]
async fn an_attested_device_enrols_and_its_certificate_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestAttestationCa::generate("Test").unwrap();
    let server = device_server(tmp.path(), &ca).await;
    assert_eq!(
        register(&server, "mdm-7", json!({"serial": SERIAL, "udid": UDID})).await,
        201
    );

    let mut device = Client::new(&server, "device").await;
    device.register().await;
    // The order is for the UDID; the attestation carries both, either may be ordered.
    let pending = order_for(&mut device, UDID).await;
    let secure_enclave = rcgen::KeyPair::generate().unwrap();
    let att = ca
        .attest(&secure_enclave, &leaf_for(&pending.token))
        .unwrap();
    let resp = answer(&mut device, &pending, &att).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.body["status"], "valid");
    assert_eq!(
        device.post(&pending.authz_url, None).await.body["status"],
        "valid"
    );
    let order = device.post(&pending.order_url, None).await.body;
    assert_eq!(order["status"], "ready");

    // Finalize signed the way Apple devices sometimes sign: a short ES256 signature.
    let finalize = pending.order["finalize"].as_str().unwrap().to_owned();
    let csr = device_csr(&secure_enclave, "Device C02TESTDEV01");
    let resp = device
        .post_with(
            &finalize,
            Some(json!({"csr": B64.encode(&csr)})),
            Tweak {
                apple_short_signature: true,
                ..Tweak::default()
            },
        )
        .await;
    assert_eq!(resp.status, 200, "finalize: {}", resp.text);
    assert_eq!(resp.body["status"], "valid");
    let cert_url = resp.body["certificate"].as_str().unwrap().to_owned();
    let chain = device.post(&cert_url, None).await.text;

    let parts = split_pem(tmp.path(), "device", &chain);
    assert_eq!(parts.len(), 2, "leaf and issuing CA");
    let roots = tmp.path().join("roots.pem");
    std::fs::write(&roots, server.roots_pem().await).unwrap();
    assert_chain_verifies_for(
        "sslclient",
        roots.to_str().unwrap(),
        parts[1].to_str().unwrap(),
        parts[0].to_str().unwrap(),
    );
    let key_path = tmp.path().join("device.key");
    std::fs::write(&key_path, secure_enclave.serialize_pem()).unwrap();
    assert_certifies_key(&parts[0], &key_path);
    let text = stdout(&run(
        "openssl",
        &["x509", "-noout", "-text", "-in", parts[0].to_str().unwrap()],
    ));
    assert!(text.contains("Subject: CN = Device C02TESTDEV01"), "{text}");
    assert!(text.contains("othername: Permanent Identifier::"), "{text}");
    assert_eq!(
        permanent_identifier(&std::fs::read(&parts[0]).unwrap()),
        UDID,
        "the PermanentIdentifier carries the ordered value"
    );
    assert!(text.contains("TLS Web Client Authentication"), "{text}");

    // The MDM sees the device, its registration and the attested facts.
    let view = server.get_json("/api/v1/devices/mdm-7").await;
    assert_eq!(view["registered"]["serial"], SERIAL);
    let cert = &view["certificates"][0];
    assert_eq!(cert["device"], "mdm-7");
    assert_eq!(cert["protocol"], "acme");
    assert_eq!(cert["attested"], true);
    assert_eq!(cert["attestation"]["serial"], SERIAL);
    assert_eq!(cert["attestation"]["udid"], UDID);
    assert_eq!(cert["attestation"]["os_version"], "18.1");
    assert_eq!(cert["attestation"]["secure_boot"], "Full Security");
    let serial = cert["serial"].as_str().unwrap().to_owned();
    let shown = stdout(&server.cli(&["cert", "show", &serial]));
    assert!(
        shown.contains(&format!("attested    serial={SERIAL} udid={UDID} os=18.1")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("permanentIdentifier:{UDID}")),
        "{shown}"
    );
}

#[tokio::test]
async fn each_false_attestation_is_refused_with_its_check_and_nothing_is_issued() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestAttestationCa::generate("Test").unwrap();
    let stranger = TestAttestationCa::generate("Stranger").unwrap();
    let server = device_server(tmp.path(), &ca).await;
    assert_eq!(
        register(&server, "mdm-1", json!({"serial": SERIAL})).await,
        201
    );
    let mut device = Client::new(&server, "device").await;
    device.register().await;
    let key = rcgen::KeyPair::generate().unwrap();
    let now = OffsetDateTime::now_utc();

    // Made for another order's challenge: a replay.
    let elsewhere = order_for(&mut device, SERIAL).await;
    let replayed = ca.attest(&key, &leaf_for(&elsewhere.token)).unwrap();

    type Make<'a> = Box<dyn Fn(&str) -> Vec<u8> + 'a>;
    let good_leaf = |token: &str| ca.leaf(&key, &leaf_for(token)).unwrap();
    let cases: Vec<(&str, Make, &str)> = vec![
        (
            "nonce missing",
            Box::new(|t| {
                ca.attest(
                    &key,
                    &Leaf {
                        nonce: None,
                        ..leaf_for(t)
                    },
                )
                .unwrap()
            }),
            "no freshness nonce",
        ),
        (
            "nonce wrong",
            Box::new(|t| {
                ca.attest(
                    &key,
                    &Leaf {
                        nonce: Some([7; 32]),
                        ..leaf_for(t)
                    },
                )
                .unwrap()
            }),
            "freshness nonce: it is not SHA-256",
        ),
        (
            "replayed",
            Box::new(move |_| replayed.clone()),
            "freshness nonce: it is not SHA-256",
        ),
        (
            "leaf expired",
            Box::new(|t| {
                ca.attest(
                    &key,
                    &Leaf {
                        not_before: now - Duration::days(3),
                        not_after: now - Duration::days(1),
                        ..leaf_for(t)
                    },
                )
                .unwrap()
            }),
            "expired at",
        ),
        (
            "leaf not yet valid",
            Box::new(|t| {
                ca.attest(
                    &key,
                    &Leaf {
                        not_before: now + Duration::days(1),
                        not_after: now + Duration::days(2),
                        ..leaf_for(t)
                    },
                )
                .unwrap()
            }),
            "not valid before",
        ),
        (
            "unknown root",
            Box::new(|t| stranger.attest(&key, &leaf_for(t)).unwrap()),
            "not a trusted attestation root",
        ),
        (
            "intermediate missing",
            Box::new(|t| object("apple", &[good_leaf(t)])),
            "not a trusted attestation root",
        ),
        (
            "identifier",
            Box::new(|t| {
                ca.attest(
                    &key,
                    &Leaf {
                        serial: Some("OTHER".into()),
                        udid: None,
                        ..leaf_for(t)
                    },
                )
                .unwrap()
            }),
            "identifier: the order is for",
        ),
        (
            "CBOR malformed",
            Box::new(|_| b"\xa2\x63fmt\x65apple\xff".to_vec()),
            "not valid CBOR",
        ),
        (
            "CBOR truncated",
            Box::new(|t| {
                let a = ca.attest(&key, &leaf_for(t)).unwrap();
                a[..a.len() / 2].to_vec()
            }),
            "not valid CBOR",
        ),
        (
            "fmt not apple",
            Box::new(|t| object("tpm", &[good_leaf(t), ca.intermediate_der()])),
            "format `tpm` is not supported",
        ),
        (
            "empty x5c",
            Box::new(|_| object("apple", &[])),
            "`x5c` is empty",
        ),
    ];
    for (name, make, why) in &cases {
        let pending = order_for(&mut device, SERIAL).await;
        let resp = answer(&mut device, &pending, &make(&pending.token)).await;
        assert_eq!(resp.status, 400, "{name}: {}", resp.text);
        assert_eq!(resp.problem(), "badAttestationStatement", "{name}");
        let detail = resp.body["detail"].as_str().unwrap();
        assert!(detail.contains(why), "{name}: {detail}");
        let authz = device.post(&pending.authz_url, None).await.body;
        assert_eq!(authz["status"], "invalid", "{name}");
        assert_eq!(
            authz["challenges"][0]["error"]["type"],
            "urn:ietf:params:acme:error:badAttestationStatement",
            "{name}"
        );
        assert_eq!(
            device.post(&pending.order_url, None).await.body["status"],
            "invalid",
            "{name}"
        );
        // A second, genuine answer cannot revive it.
        let again = answer(
            &mut device,
            &pending,
            &ca.attest(&key, &leaf_for(&pending.token)).unwrap(),
        )
        .await;
        assert_eq!(again.body["status"], "invalid", "{name}: {}", again.text);
    }

    // Answers that carry no attestation (a device that cannot attest): this profile
    // requires one, so each is refused, saying so, and the order cannot go on.
    let none = B64.encode(object("none", &[]));
    for (name, body, why) in [
        (
            "device error",
            json!({"error": "attestation unavailable"}),
            "the device reported \"attestation unavailable\"",
        ),
        ("no attObj", json!({}), "the answer has no `attObj`"),
        ("format none", json!({"attObj": none}), "format `none`"),
    ] {
        let pending = order_for(&mut device, SERIAL).await;
        let url = pending.challenge_url.clone();
        let resp = device.post(&url, Some(body)).await;
        assert_eq!(
            (resp.status, resp.problem()),
            (400, "badAttestationStatement"),
            "{name}: {}",
            resp.text
        );
        let detail = resp.body["detail"].as_str().unwrap();
        assert!(
            detail.contains("no attestation was supplied") && detail.contains(why),
            "{name}: {detail}"
        );
        assert_eq!(
            device.post(&pending.order_url, None).await.body["status"],
            "invalid",
            "{name}"
        );
    }

    // A CSR for another key than the attested one.
    let pending = order_for(&mut device, SERIAL).await;
    attest(&mut device, &pending, &ca, &key).await;
    let other_key = rcgen::KeyPair::generate().unwrap();
    let resp = finalize(&mut device, &pending, &other_key, "x").await;
    assert_eq!(resp.problem(), "badCSR", "{}", resp.text);
    assert!(
        resp.text.contains("not the key the device attested"),
        "{}",
        resp.text
    );
    assert_eq!(
        device.post(&pending.order_url, None).await.body["status"],
        "ready"
    );

    // A device the MDM never registered; a permanent identifier on a non-device profile.
    let url = device.url("newOrder");
    let resp = device
        .post(
            &url,
            Some(json!({"identifiers": [{"type": "permanent-identifier", "value": "NOTOURS1"}]})),
        )
        .await;
    assert_eq!(resp.problem(), "rejectedIdentifier", "{}", resp.text);
    let mut web = Client::new(&server, "default").await;
    web.register().await;
    let url = web.url("newOrder");
    let resp = web
        .post(
            &url,
            Some(json!({"identifiers": [{"type": "permanent-identifier", "value": SERIAL}]})),
        )
        .await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.problem(), "rejectedIdentifier", "{}", resp.text);
    assert_eq!(resp.subproblem(0), "unsupportedIdentifier", "{}", resp.text);

    assert_eq!(certificate_count(&server).await, 0, "nothing was issued");
    assert!(server.events().await.is_empty(), "no event");
}

#[tokio::test]
async fn the_mdm_manages_its_inventory_through_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let server = Server::start(&data, &[]);
    assert_eq!(
        register(&server, "a", json!({"serial": "SER-A"})).await,
        201
    );
    assert_eq!(
        register(&server, "a", json!({"serial": "SER-A", "udid": "UDID-A"})).await,
        200
    );
    // One serial, one device.
    assert_eq!(
        register(&server, "b", json!({"serial": "ser-a"})).await,
        409
    );
    assert_eq!(register(&server, "b", json!({})).await, 400);
    assert_eq!(
        register(&server, "b", json!({"serial": "bad serial!"})).await,
        400
    );
    let view = server.get_json("/api/v1/devices/a").await;
    assert_eq!(view["registered"]["udid"], "UDID-A");
    assert_eq!(view["certificates"], json!([]));

    let resp = server
        .post("/api/v1/devices")
        .json(&json!({"devices": [
            {"id": "c", "serial": "SER-C"},
            {"id": "d", "udid": "UDID-A"},
            {"id": "e", "serial": "SER-E", "udid": "UDID-E"},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["registered"], 2);
    assert_eq!(body["failed"][0]["id"], "d");
    assert!(
        body["failed"][0]["error"]
            .as_str()
            .unwrap()
            .contains("already registered to device a")
    );

    let delete = |id: &str| {
        server
            .client
            .delete(server.url(&format!("/api/v1/devices/{id}")))
            .bearer_auth(&server.token)
            .send()
    };
    assert_eq!(delete("a").await.unwrap().status(), 204);
    assert_eq!(delete("a").await.unwrap().status(), 404);
    // Its serial is free again.
    assert_eq!(
        register(&server, "b", json!({"serial": "SER-A"})).await,
        201
    );
    let anonymous = server
        .client
        .put(server.url("/api/v1/devices/z"))
        .json(&json!({"serial": "SER-Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        server
            .client
            .get(server.url("/api/v1/devices/z"))
            .bearer_auth(&server.token)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_can_ask_the_mdm_webhook_about_each_device() {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/device",
            axum::routing::post(
                |axum::extract::State(seen): axum::extract::State<Arc<Mutex<Vec<Value>>>>,
                 axum::Json(body): axum::Json<Value>| async move {
                    seen.lock().unwrap().push(body.clone());
                    if body["identifier"] == SERIAL {
                        (axum::http::StatusCode::OK, r#"{"device":"mdm-hook-1"}"#)
                    } else {
                        (axum::http::StatusCode::NOT_FOUND, "unknown")
                    }
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/device", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let tmp = tempfile::tempdir().unwrap();
    let ca = TestAttestationCa::generate("Test").unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let config = std::fs::read_to_string(data.join("config.toml")).unwrap();
    std::fs::write(
        data.join("config.toml"),
        format!(
            "{config}\n[acme.profiles.hooked]\nchallenges = [\"device-attest-01\"]\n\
             dns_names = []\nip_addresses = []\ndevice_inventory = \"webhook\"\n\
             inventory_webhook_url = {url:?}\nsubject_serial = true\n"
        ),
    )
    .unwrap();
    let server = device_server_in(tmp.path(), &data, &ca);

    let mut device = Client::new(&server, "hooked").await;
    device.register().await;
    let url = device.url("newOrder");
    let resp = device
        .post(
            &url,
            Some(json!({"identifiers": [{"type": "permanent-identifier", "value": "STRANGER1"}]})),
        )
        .await;
    assert_eq!(resp.problem(), "rejectedIdentifier", "{}", resp.text);

    let pending = order_for(&mut device, SERIAL).await;
    let key = rcgen::KeyPair::generate().unwrap();
    attest(&mut device, &pending, &ca, &key).await;
    let resp = finalize(&mut device, &pending, &key, "hooked device").await;
    assert_eq!(resp.body["status"], "valid", "{}", resp.text);
    let view = server.get_json("/api/v1/devices/mdm-hook-1").await;
    let cert = &view["certificates"][0];
    assert_eq!(cert["attestation"]["serial"], SERIAL);
    assert_eq!(
        cert["subject"],
        format!("CN=hooked device,serialNumber={SERIAL}"),
        "subject_serial puts the attested serial into the subject"
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1]["profile"], "hooked");
    assert_eq!(seen[1]["identifier_type"], "permanent-identifier");
    assert!(!seen[1]["account"].as_str().unwrap().is_empty());
}

/// Parses an XML plist with Python's plistlib (an independent parser) into JSON; data
/// values become hex.
fn plist_json(xml: &str) -> Value {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, plistlib, sys; \
             d = plistlib.loads(sys.stdin.buffer.read()); \
             print(json.dumps(d, default=lambda b: b.hex()))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(xml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "plistlib refused: {xml}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn the_cli_prints_apple_payloads_that_plistlib_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let data_arg = data.to_str().unwrap();

    let out = enrollca(
        &[
            "profile",
            "acme",
            "--data",
            data_arg,
            "--client-identifier",
            SERIAL,
            "--key-size",
            "256",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let acme = plist_json(&stdout(&out));
    assert_eq!(acme["PayloadType"], "com.apple.security.acme");
    assert_eq!(
        acme["DirectoryURL"],
        "https://127.0.0.1:8443/acme/device/directory"
    );
    assert_eq!(acme["ClientIdentifier"], SERIAL);
    assert_eq!(acme["Attest"], true);
    assert_eq!(acme["HardwareBound"], true);
    assert_eq!(acme["KeyType"], "ECSECPrimeRandom");
    assert_eq!(acme["KeySize"], 256);
    assert_eq!(acme["Subject"], json!([[["CN", SERIAL]]]));
    assert_eq!(acme["ExtendedKeyUsage"], json!(["1.3.6.1.5.5.7.3.2"]));
    assert_eq!(acme["PayloadUUID"].as_str().unwrap().len(), 36);

    for (args, why) in [
        (
            vec!["--profile", "default"],
            "does not offer device-attest-01",
        ),
        (vec!["--profile", "nope"], "no ACME profile `nope`"),
        (vec!["--key-size", "521"], "521"),
    ] {
        let mut all = vec![
            "profile",
            "acme",
            "--data",
            data_arg,
            "--client-identifier",
            SERIAL,
        ];
        all.extend(args);
        let out = enrollca(&all, &[]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(why), "{}", stderr(&out));
    }

    // SCEP, with a one-time challenge minted by the running server.
    let server = Server::start(&data, &[]);
    let scep = |extra: &[&str]| {
        let mut args = vec!["profile", "scep", "--subject", "CN=laptop,O=Example"];
        args.extend_from_slice(extra);
        let out = server.cli(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        plist_json(&stdout(&out))
    };
    let first = scep(&["--one-time", "--device", "mdm-9"]);
    let second = scep(&["--one-time"]);
    assert_eq!(first["PayloadType"], "com.apple.security.scep");
    let content = &first["PayloadContent"];
    // The configured public URL (the test server itself listens on an ephemeral port).
    assert_eq!(content["URL"], "http://127.0.0.1:8080/scep");
    assert_eq!(
        content["Subject"],
        json!([[["CN", "laptop"]], [["O", "Example"]]])
    );
    assert_eq!(content["Keysize"], 2048);
    assert_eq!(content["Key Type"], "RSA");
    let challenge = content["Challenge"].as_str().unwrap();
    assert!(challenge.len() >= 20, "{challenge}");
    assert_ne!(
        Some(challenge),
        second["PayloadContent"]["Challenge"].as_str(),
        "one-time"
    );
    // The fingerprint is SHA-1 of the root GetCACert serves above the SCEP CA: what Apple
    // compares it with.
    let served = server.scep_ca_certs(&tmp.path().join("getcacert")).await;
    let served = split_pem(
        tmp.path(),
        "served",
        &std::fs::read_to_string(&served).unwrap(),
    );
    assert_eq!(served.len(), 2, "the SCEP CA, then the root");
    let sha1 = stdout(&run(
        "openssl",
        &[
            "x509",
            "-noout",
            "-fingerprint",
            "-sha1",
            "-in",
            served[1].to_str().unwrap(),
        ],
    ));
    assert_eq!(
        content["CAFingerprint"],
        sha1.trim()
            .rsplit('=')
            .next()
            .unwrap()
            .replace(':', "")
            .to_lowercase()
    );
    let fixed = scep(&["--challenge", "static-secret"]);
    assert_eq!(fixed["PayloadContent"]["Challenge"], "static-secret");
    // A payload for a device names it as its subject unless told otherwise: the challenge it
    // mints will accept no other.
    let out = server.cli(&["profile", "scep", "--one-time", "--device", "mdm-7"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        plist_json(&stdout(&out))["PayloadContent"]["Subject"],
        json!([[["CN", "mdm-7"]]])
    );
}

/// Issue 24, item 3: a profile whose devices order with a one-time ClientIdentifier the MDM
/// minted (Apple's payload `ClientIdentifier`): the attestation must show the serial number
/// or UDID registered for that device, the certificate names the device by that serial
/// number, never by the one-time value, and the value works once, until it expires, for
/// its profile only.
#[tokio::test]
async fn a_one_time_client_identifier_stands_for_its_device_once() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestAttestationCa::generate("Test").unwrap();
    // In this process, on a clock the test moves to expire a ClientIdentifier.
    let clock = TestClock::starting_now();
    let server = Server::in_process(
        &client_identifier_data(tmp.path(), &ca, true),
        clock.clone(),
    );
    assert_eq!(
        register(&server, "mdm-7", json!({"serial": SERIAL, "udid": UDID})).await,
        201
    );
    assert_eq!(
        register(&server, "mdm-8", json!({"serial": "C02OTHERDEV1"})).await,
        201
    );

    // Minted by the CLI for mdm-7.
    let out = server.cli_ok(&["acme", "client-identifier", "--device", "mdm-7"]);
    let minted = out
        .lines()
        .find_map(|l| l.strip_prefix("client identifier "))
        .unwrap_or_else(|| panic!("{out}"))
        .trim()
        .to_owned();
    assert!(
        minted.len() == 48 && minted.bytes().all(|b| b.is_ascii_hexdigit()),
        "{minted}"
    );

    let mut device = Client::new(&server, "device").await;
    device.register().await;
    let pending = order_for(&mut device, &minted).await;
    let key = rcgen::KeyPair::generate().unwrap();
    attest(&mut device, &pending, &ca, &key).await;
    let resp = finalize(&mut device, &pending, &key, "Device").await;
    assert_eq!(resp.status, 200, "finalize: {}", resp.text);
    let cert_url = resp.body["certificate"].as_str().unwrap().to_owned();
    let chain = device.post(&cert_url, None).await.text;
    let leaf = split_pem(tmp.path(), "ci", &chain).remove(0);
    assert_eq!(
        permanent_identifier(&std::fs::read(&leaf).unwrap()),
        SERIAL,
        "named by the attested serial number, not the one-time value"
    );
    let view = server.get_json("/api/v1/devices/mdm-7").await;
    assert_eq!(view["certificates"][0]["attestation"]["serial"], SERIAL);
    let record = view["certificates"][0].to_string();
    assert!(
        !record.contains(&minted),
        "the one-time value is nowhere in the record"
    );

    // Used: a second order with it is refused.
    let mut again = Client::new(&server, "device").await;
    again.register().await;
    let url = again.url("newOrder");
    let order =
        |value: &str| json!({"identifiers": [{"type": "permanent-identifier", "value": value}]});
    let resp = again.post(&url, Some(order(&minted))).await;
    assert_eq!(
        (resp.status, resp.problem()),
        (400, "rejectedIdentifier"),
        "{}",
        resp.text
    );
    assert!(resp.text.contains("used already"), "{}", resp.text);

    // Minted for mdm-8, attested as mdm-7's hardware: refused, nothing issued.
    let api = |body: Value| {
        let server = &server;
        async move {
            server
                .post("/api/v1/acme/client-identifiers")
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let resp = api(json!({"device": "mdm-8"})).await;
    assert_eq!(resp.status(), 201);
    let other: Value = resp.json().await.unwrap();
    assert_eq!(other["profile"], "device");
    let other = other["client_identifier"].as_str().unwrap().to_owned();
    let pending = order_for(&mut again, &other).await;
    let resp = answer(
        &mut again,
        &pending,
        &ca.attest(&key, &leaf_for(&pending.token)).unwrap(),
    )
    .await;
    assert_eq!(
        (resp.status, resp.problem()),
        (400, "badAttestationStatement"),
        "{}",
        resp.text
    );
    assert!(
        resp.text.contains("C02OTHERDEV1"),
        "names the mismatch: {}",
        resp.text
    );

    // Expired.
    let resp = api(json!({"device": "mdm-7", "ttl": "1s"})).await;
    let brief: Value = resp.json().await.unwrap();
    clock.advance(time::Duration::seconds(2));
    let resp = again
        .post(
            &url,
            Some(order(brief["client_identifier"].as_str().unwrap())),
        )
        .await;
    assert_eq!(
        (resp.status, resp.problem()),
        (400, "rejectedIdentifier"),
        "{}",
        resp.text
    );
    assert!(resp.text.contains("expired"), "{}", resp.text);

    // The payload, with a ClientIdentifier minted for it: live, and naming the device.
    let out = server.cli(&["profile", "acme", "--device", "mdm-7"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let payload = plist_json(&stdout(&out));
    assert_eq!(payload["Subject"], json!([[["CN", "mdm-7"]]]));
    let value = payload["ClientIdentifier"].as_str().unwrap().to_owned();
    assert_eq!(value.len(), 48);
    let resp = again.post(&url, Some(order(&value))).await;
    assert_eq!(resp.status, 201, "{}", resp.text);

    // Not minted: for an unregistered device, for a profile that names devices otherwise,
    // for longer than 30 days; and an unknown value is refused like a used one.
    for (body, status, why) in [
        (json!({"device": "nobody"}), 409, "not registered"),
        (
            json!({"device": "mdm-7", "profile": "default"}),
            400,
            "not by ClientIdentifier",
        ),
        (json!({"device": "mdm-7", "ttl": "31days"}), 400, "ttl"),
        (
            json!({"device": "mdm-7", "profile": "nope"}),
            404,
            "no ACME profile",
        ),
    ] {
        let resp = api(body.clone()).await;
        assert_eq!(resp.status(), status, "{body}");
        let text = resp.text().await.unwrap();
        assert!(text.contains(why), "{body}: {text}");
    }
    let resp = again.post(&url, Some(order("NEVER-MINTED-VALUE"))).await;
    assert_eq!(
        (resp.status, resp.problem()),
        (400, "rejectedIdentifier"),
        "{}",
        resp.text
    );
    assert_eq!(
        certificate_count(&server).await,
        1,
        "one certificate in all"
    );
}

/// Issue 24, item 4: a device that cannot attest (Apple ignores `Attest` on A10X and earlier
/// and on Intel Macs with a T2) answers device-attest-01 without an attestation. On a
/// profile with `require_attestation = false` its one-time ClientIdentifier alone vouches
/// for it, once; its certificate names the registered serial number and says `attested:
/// false` in the API, the event feed and `cert show`. An attestation that is supplied is
/// still checked: a false one is refused, never taken for a missing one.
#[tokio::test]
async fn a_device_that_cannot_attest_enrols_on_its_client_identifier_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestAttestationCa::generate("Test").unwrap();
    let server = client_identifier_server(tmp.path(), &ca, false);
    assert_eq!(
        register(&server, "mdm-7", json!({"serial": SERIAL, "udid": UDID})).await,
        201
    );
    let mint = || async {
        let resp = server
            .post("/api/v1/acme/client-identifiers")
            .json(&json!({"device": "mdm-7"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let body: Value = resp.json().await.unwrap();
        body["client_identifier"].as_str().unwrap().to_owned()
    };
    let mut device = Client::new(&server, "device").await;
    device.register().await;

    // A supplied attestation is judged as ever: one for other hardware is refused.
    let pending = order_for(&mut device, &mint().await).await;
    let key = rcgen::KeyPair::generate().unwrap();
    let foreign = Leaf {
        serial: Some("C02STRANGER1".into()),
        udid: None,
        ..leaf_for(&pending.token)
    };
    let resp = answer(&mut device, &pending, &ca.attest(&key, &foreign).unwrap()).await;
    assert_eq!(
        (resp.status, resp.problem()),
        (400, "badAttestationStatement"),
        "{}",
        resp.text
    );

    // No attestation: the ClientIdentifier vouches.
    let minted = mint().await;
    let pending = order_for(&mut device, &minted).await;
    let url = pending.challenge_url.clone();
    let resp = device
        .post(&url, Some(json!({"error": "attestation unsupported"})))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.body["status"], "valid");
    assert_eq!(
        device.post(&pending.order_url, None).await.body["status"],
        "ready"
    );
    // Its key is not vouched for by hardware, but must still be of the profile's types.
    let finalize = pending.order["finalize"].as_str().unwrap().to_owned();
    let rsa_csr = tmp.path().join("rsa.csr");
    let made = run(
        "openssl",
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "/dev/null",
            "-subj",
            "/CN=x",
            "-outform",
            "DER",
            "-out",
            rsa_csr.to_str().unwrap(),
        ],
    );
    assert!(made.status.success(), "{}", stderr(&made));
    let resp = device
        .post(
            &finalize,
            Some(json!({"csr": B64.encode(std::fs::read(&rsa_csr).unwrap())})),
        )
        .await;
    assert_eq!(resp.problem(), "badCSR", "{}", resp.text);
    assert!(resp.text.contains("key types"), "{}", resp.text);
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let resp = device
        .post(
            &finalize,
            Some(json!({"csr": B64.encode(device_csr(&p384, "Device"))})),
        )
        .await;
    assert_eq!(resp.status, 200, "finalize: {}", resp.text);
    let cert_url = resp.body["certificate"].as_str().unwrap().to_owned();
    let chain = device.post(&cert_url, None).await.text;
    let leaf = split_pem(tmp.path(), "unattested", &chain).remove(0);
    assert_eq!(
        permanent_identifier(&std::fs::read(&leaf).unwrap()),
        SERIAL,
        "named by the serial number registered for the device"
    );
    let key_path = tmp.path().join("unattested.key");
    std::fs::write(&key_path, p384.serialize_pem()).unwrap();
    assert_certifies_key(&leaf, &key_path);

    // The MDM can tell: the API, the event feed and the CLI say it was not attested.
    let view = server.get_json("/api/v1/devices/mdm-7").await;
    let cert = &view["certificates"][0];
    assert_eq!(cert["attested"], false, "{cert}");
    assert!(cert.get("attestation").is_none(), "{cert}");
    let serial = cert["serial"].as_str().unwrap().to_owned();
    let events = server.get_json("/api/v1/events?after=0").await;
    let issued: Vec<&Value> = events["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{events}"))
        .iter()
        .filter(|e| e["type"] == "issued")
        .collect();
    assert_eq!(issued.len(), 1, "{events}");
    assert_eq!(issued[0]["serial"], serial.as_str());
    assert_eq!(issued[0]["attested"], false, "{events}");
    let shown = server.cli_ok(&["cert", "show", &serial]);
    assert!(shown.contains("attested    no"), "{shown}");

    // Once: the ClientIdentifier is used up with the certificate.
    let url = device.url("newOrder");
    let resp = device
        .post(
            &url,
            Some(json!({"identifiers": [{"type": "permanent-identifier", "value": minted}]})),
        )
        .await;
    assert_eq!(
        (resp.status, resp.problem()),
        (400, "rejectedIdentifier"),
        "{}",
        resp.text
    );
    assert_eq!(certificate_count(&server).await, 1);
}
