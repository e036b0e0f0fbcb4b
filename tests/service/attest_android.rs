//! ACME device-attest-01 with Android Key Attestation (`android-key`) against the real
//! binary: a synthetic Android attestation CA (root, intermediate, a `CA:FALSE` attestation
//! key, as devices have) trusted through `acme.attestation_roots`, Google's status list
//! served over HTTP on loopback and re-read every second. A genuine, registered device
//! enrols; each false attestation is refused with `badAttestationStatement` naming its
//! check, and nothing is issued; a revocation in the list reaches the next attestation.

use enrollca_testkit::harness as common;

use common::device::*;
use common::*;
use enrollca_testkit::acme::Http01Responder;
use enrollca_testkit::android::{AndroidLeaf, TestAndroidCa};
use enrollca_testkit::attestation::object;
use serde_json::json;
use time::{Duration, OffsetDateTime};

const ANDROID_SERIAL: &str = "R5CT10ANDROID";
const STATUS: &str = "status";
const EMPTY_LIST: &str = r#"{"entries": {}}"#;

fn leaf(token: &str) -> AndroidLeaf {
    AndroidLeaf {
        challenge: enrollca::attest::freshness_nonce(token).to_vec(),
        serial: Some(ANDROID_SERIAL.into()),
        ..AndroidLeaf::default()
    }
}

/// A server whose `device` profile takes Apple and Android devices, trusting `ca` and
/// reading the status list from `list` every second.
fn android_server(tmp: &std::path::Path, ca: &TestAndroidCa, list: &Http01Responder) -> Server {
    attesting_server(
        tmp,
        "android-key",
        &ca.root_pem(),
        &[
            (
                "\"https://android.googleapis.com/attestation/status\"",
                format!(
                    "\"http://127.0.0.1:{}/.well-known/acme-challenge/{STATUS}\"",
                    list.port
                ),
            ),
            (
                "android_status_refresh = \"1h\"",
                "android_status_refresh = \"1s\"".into(),
            ),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_android_device_enrols_and_each_false_attestation_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestAndroidCa::generate("Test").unwrap();
    let stranger = TestAndroidCa::generate("Stranger").unwrap();
    // The list is not there yet: the node cannot judge an Android attestation.
    let list = Http01Responder::start(0).await.unwrap();
    let server = android_server(tmp.path(), &ca, &list);
    let (mut device, key) = registered_device(&server, "android-1", ANDROID_SERIAL).await;

    let pending = order_for(&mut device, ANDROID_SERIAL).await;
    let att = ca.attest(&key, &leaf(&pending.token)).unwrap();
    let resp = answer(&mut device, &pending, &att).await;
    assert_eq!(
        (resp.status, resp.problem()),
        (503, "serverInternal"),
        "{}",
        resp.text
    );
    assert!(resp.headers.contains_key("retry-after"), "{}", resp.text);
    assert_eq!(
        device.post(&pending.authz_url, None).await.body["status"],
        "pending",
        "our failure leaves the challenge to be answered again"
    );

    // Once the list is served, the same answer is judged and accepted.
    list.serve(STATUS, EMPTY_LIST.into());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let resp = loop {
        let resp = answer(&mut device, &pending, &att).await;
        if resp.status != 503 || std::time::Instant::now() > deadline {
            break resp;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.body["status"], "valid");
    let cert = finish_enrolment(
        &server,
        &mut device,
        &pending,
        "android-1",
        ANDROID_SERIAL,
        &key,
    )
    .await;

    // The MDM sees what the hardware attested.
    let facts = &cert["attestation"];
    assert_eq!(facts["format"], "android-key");
    assert_eq!(facts["serial"], ANDROID_SERIAL);
    assert_eq!(facts["security_level"], "trusted-environment");
    assert_eq!(facts["verified_boot"], "verified");
    assert_eq!(facts["os_version"], "15.0.0");
    assert_eq!(facts["patch_level"], "2026-11");
    assert_eq!(facts["attesting_app"], "com.example.mdm.agent");
    let serial = cert["serial"].as_str().unwrap().to_owned();
    let shown = stdout(&server.cli(&["cert", "show", &serial]));
    assert!(
        shown.contains("level=trusted-environment boot=verified app=com.example.mdm.agent"),
        "{shown}"
    );

    // What `enrollca profile` tells the MDM's Android agent.
    let guide = stdout(&server.cli_listening(&[
        "profile",
        "acme",
        "--format",
        "android",
        "--client-identifier",
        ANDROID_SERIAL,
    ]));
    for needed in [
        format!("TLS of {}/acme/device/directory", server.https),
        format!("\"value\": \"{ANDROID_SERIAL}\""),
        "setAttestationChallenge(SHA-256(token".to_owned(),
        "\"fmt\": \"android-key\"".to_owned(),
        "a boot state in [\"verified\"]".to_owned(),
    ] {
        assert!(guide.contains(&needed), "`{needed}` in:\n{guide}");
    }

    let now = OffsetDateTime::now_utc();
    let with = |change: &'static dyn Fn(&mut AndroidLeaf)| -> MakeAttestation {
        let (ca, key) = (&ca, &key);
        Box::new(move |t, _| {
            let mut l = leaf(t);
            change(&mut l);
            ca.attest(key, &l).unwrap()
        })
    };
    let cases: Vec<(&str, MakeAttestation, &str)> = vec![
        (
            "challenge wrong",
            with(&|l| l.challenge = vec![7; 32]),
            "freshness nonce: the attestationChallenge is not SHA-256",
        ),
        (
            "unknown root",
            Box::new(|t, _| stranger.attest(&key, &leaf(t)).unwrap()),
            "not a trusted attestation root",
        ),
        (
            "leaf expired",
            Box::new(|t, _| {
                let l = AndroidLeaf {
                    not_before: now - Duration::days(3),
                    not_after: now - Duration::days(1),
                    ..leaf(t)
                };
                ca.attest(&key, &l).unwrap()
            }),
            "expired at",
        ),
        (
            "attestation key missing",
            Box::new(|t, _| object("android-key", &[ca.leaf(&key, &leaf(t)).unwrap()])),
            "not a trusted attestation root",
        ),
        (
            "identifier",
            with(&|l| l.serial = Some("OTHER".into())),
            "identifier: the order is for",
        ),
        (
            "no attested IDs",
            with(&|l| l.serial = None),
            "did not attest its IDs",
        ),
        (
            "software key",
            with(&|l| l.security_level = 0),
            "security level: the key is in software",
        ),
        (
            "bootloader unlocked",
            with(&|l| l.device_locked = false),
            "root of trust: the bootloader is unlocked",
        ),
        (
            "boot unverified",
            with(&|l| l.boot_state = 2),
            "verified boot state is unverified",
        ),
        (
            "self-signed OS on a strict profile",
            with(&|l| l.boot_state = 1),
            "verified boot state is self-signed",
        ),
        (
            "no root of trust",
            with(&|l| l.root_of_trust = false),
            "root of trust: the hardware-enforced list has none",
        ),
        (
            "KeyDescription truncated",
            with(&|l| {
                let full = enrollca_testkit::android::key_description(&leaf("x"));
                l.raw_extension = Some(full[..full.len() / 2].to_vec());
            }),
            "the KeyDescription:",
        ),
        (
            "fmt unknown",
            Box::new(|t, _| object("tpm", &[ca.leaf(&key, &leaf(t)).unwrap()])),
            "format `tpm` is not supported (supported: apple, android-key)",
        ),
    ];
    assert_each_refused(&mut device, ANDROID_SERIAL, &cases).await;
    let genuine: MakeAttestation = Box::new(|t, _| ca.attest(&key, &leaf(t)).unwrap());
    assert_foreign_csr_refused(&mut device, ANDROID_SERIAL, &genuine).await;

    // An Android serial the MDM never registered is not ordered at all.
    let url = device.url("newOrder");
    let resp = device
        .post(
            &url,
            Some(
                json!({"identifiers": [{"type": "permanent-identifier", "value": "R5CTSTRANGER"}]}),
            ),
        )
        .await;
    assert_eq!(resp.problem(), "rejectedIdentifier", "{}", resp.text);

    // Google revokes the device's attestation key: the next attestation is refused once
    // the list has been read again (every second here).
    let above = ca.chain();
    let (_, attestation_key) = x509_parser::parse_x509_certificate(&above[0]).unwrap();
    let revoked = hex::encode(attestation_key.raw_serial());
    list.serve(
        STATUS,
        format!(
            r#"{{"entries": {{"{revoked}": {{"status": "REVOKED", "reason": "KEY_COMPROMISE"}}}}}}"#
        ),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let detail = loop {
        let pending = order_for(&mut device, ANDROID_SERIAL).await;
        let resp = answer(
            &mut device,
            &pending,
            &ca.attest(&key, &leaf(&pending.token)).unwrap(),
        )
        .await;
        if resp.status == 400 || std::time::Instant::now() > deadline {
            assert_eq!(resp.problem(), "badAttestationStatement", "{}", resp.text);
            break resp.body["detail"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    assert!(
        detail.contains("x5c[1]") && detail.contains("revoked in Google's attestation status list"),
        "{detail}"
    );

    assert_eq!(
        certificate_count(&server).await,
        1,
        "only the genuine enrolment"
    );
}
